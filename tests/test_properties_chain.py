"""Property tests (hypothesis) of the send side: ``send_chain`` and
``send_parts`` over arbitrary part sizes, kinds and counts, mixed with
``send_nowait``, all queued before anything is awaited.  The peer (a plain
socket in a thread) receives exactly the concatenation, in call order, and
every future resolves with its own total.

Variants: TCP on the default ring; an 8-entry SQ (chains split into many
linked segments); every chain SQE capped at a drawn size (each part ends
short and is resumed: ``chain._set_split``); a Unix socket (SEND_ZC is
refused there and the chain resumes by copy); zero-copy to the local peer.
One loop per test function, one connection per example (see
tests/test_properties.py for the settings).
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import threading
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ringline
from ringline import Config
from tests.support import HOST, IO_TIMEOUT, recv_until_eof

pytestmark = pytest.mark.needs_extension

SETTINGS = settings(max_examples=40, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])


@st.composite
def buffers(draw: Any) -> Any:
    """A buffer of a drawn kind and size (up to 70 KiB, above the zero-copy
    threshold and the send-pool slot)."""
    size = draw(st.one_of(st.integers(0, 16), st.integers(0, 5000), st.integers(0, 70000)))
    body = random.Random(draw(st.integers(0, 1 << 30))).randbytes(size)
    kind = draw(st.sampled_from(["bytes", "bytearray", "memoryview", "slice", "empty"]))
    if kind == "bytearray":
        return bytearray(body)
    if kind == "memoryview":
        return memoryview(body)
    if kind == "slice":
        return memoryview(bytearray(b"<" + body + b">"))[1:-1]
    if kind == "empty":
        return draw(st.sampled_from([b"", bytearray(), memoryview(b"")]))
    return body


ops_strategy = st.lists(
    st.one_of(st.tuples(st.just("chain"), st.lists(buffers(), max_size=150)),
              st.tuples(st.just("parts"), st.lists(buffers(), max_size=20)),
              st.tuples(st.just("nowait"), buffers())),
    min_size=1, max_size=6)


def _listener(unix_dir: str | None) -> tuple[socket.socket, Any]:
    if unix_dir is None:
        ls = socket.create_server((HOST, 0))
        return ls, ls.getsockname()[1]
    path = os.path.join(unix_dir, f"p{random.getrandbits(32)}.sock")
    ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ls.bind(path)
    ls.listen(1)
    return ls, path


def _check(config: Config | None, unix_dir: str | None = None, split: bool = False) -> None:
    from ringline._net import chain

    loop = ringline.new_event_loop(config)
    listener, where = _listener(unix_dir)
    listener.settimeout(IO_TIMEOUT)

    def peer(out: list[bytes]) -> None:
        s, _ = listener.accept()
        with s:
            s.settimeout(IO_TIMEOUT)
            out.append(recv_until_eof(s))

    async def sender(ops: list[tuple[str, Any]]) -> list[tuple[int, int]]:
        conn = await (ringline.connect(HOST, where) if unix_dir is None
                      else ringline.connect_unix(where))
        futs = []
        try:
            for what, arg in ops:       # all queued before anything is awaited
                if what == "chain":
                    futs.append((conn.send_chain(arg), arg))
                elif what == "parts":
                    futs.append((conn.send_parts(arg), arg))
                else:
                    conn.send_nowait(arg)
            return [(await f, sum(memoryview(p).nbytes for p in arg)) for f, arg in futs]
        finally:
            conn.close()
            await conn.wait_closed()

    @SETTINGS
    @given(ops=ops_strategy, cap=st.integers(1, 9000))
    def check(ops: list[tuple[str, Any]], cap: int) -> None:
        out: list[bytes] = []
        t = threading.Thread(target=peer, args=(out,))
        t.start()
        old = chain._set_split(cap if split else 0)
        try:
            totals = loop.run_until_complete(asyncio.wait_for(sender(ops), 30))
        finally:
            chain._set_split(old)
            t.join(IO_TIMEOUT)
        want = b"".join(bytes(p) for what, arg in ops
                        for p in (arg if what != "nowait" else [arg]))
        assert out == [want]
        assert all(got == expected for got, expected in totals)
        runs.append(len(want))

    runs: list[int] = []
    try:
        check()
        assert len(runs) >= 10, runs        # the examples really ran
        print(f"{len(runs)} examples, {sum(runs)} bytes")
    finally:
        listener.close()
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


def test_chains_and_parts_arrive_in_order():
    _check(None)


def test_chains_with_a_tiny_sq_arrive_in_order():
    _check(Config(sq_entries=8))


def test_chains_with_every_part_short_arrive_in_order():
    _check(None, split=True)


def test_chains_zero_copy_to_a_local_peer_arrive_in_order():
    _check(Config(_zc_to_local_peers=True))


def test_chains_over_a_unix_socket_arrive_in_order(tmp_path):
    _check(None, unix_dir=str(tmp_path))
