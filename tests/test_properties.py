"""Property tests (hypothesis) of the native face, Config and fs.

Each test function makes one ringline loop (and server, where it needs
one) and runs every example on it, so an example costs a connection, not a
ring.  Examples are bounded (``SETTINGS``) to keep the module at a few
seconds; the example database is off (nothing is written to the checkout).

* ``with_data``: a parser over a stream the peer sends in
  hypothesis-chosen chunks (TCP_NODELAY, a pause after each) sees the same
  frames as the parser run over the whole stream at once, and the slices
  of the view it kept stay unchanged;
* ``send_parts``: parts of arbitrary sizes and kinds (bytes, bytearray,
  memoryview, slices of a larger buffer, empty) mixed with ``send_nowait``
  arrive byte-exact and in call order; each future resolves with its total;
* ``Config``: arbitrary values for arbitrary fields construct, or raise
  ConfigError/TypeError (nothing else); a Config that constructs has
  every derived value;
* ``fs``: reads and writes at arbitrary offsets (and at the file position)
  return what ``os.pread``/``os.pwrite``/``os.read``/``os.write`` return on
  a twin file, and both files end up identical.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import socket
import struct
import threading
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import ringline
from ringline import Config, fs
from ringline.errors import ConfigError
from tests.support import HOST, IO_TIMEOUT, SMALL, recv_until_eof

pytestmark = pytest.mark.needs_extension

SETTINGS = settings(max_examples=60, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])


class LoopRunner:
    """One ringline loop for all of a test's examples."""

    def __init__(self, config: Config | None = None) -> None:
        self.loop = ringline.new_event_loop(config)

    def run(self, coro: Any, timeout: float = 30.0) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))

    def close(self) -> None:
        try:
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
        finally:
            self.loop.close()


@pytest.fixture
def runner():
    r = LoopRunner(SMALL)       # 4 KiB receive buffers: frames span buffers
    yield r
    r.close()


# ---------------------------------------------------------------------------
# with_data over arbitrary chunkings
# ---------------------------------------------------------------------------

def _frames(view: memoryview | bytes) -> tuple[list[tuple[int, int]], int]:
    """Parse 2-byte big-endian length-prefixed frames: the (start, end) of
    each complete frame's payload, and how many bytes they take."""
    spans, at = [], 0
    while at + 2 <= len(view):
        (n,) = struct.unpack_from(">H", view, at)
        if at + 2 + n > len(view):
            break
        spans.append((at + 2, at + 2 + n))
        at += 2 + n
    return spans, at


def _lines(view: memoryview | bytes) -> tuple[list[tuple[int, int]], int]:
    """Parse b"\\n"-terminated lines: the (start, end) of each complete
    line without its terminator, and how many bytes they take."""
    data = bytes(view)
    spans, at = [], 0
    while (end := data.find(b"\n", at)) >= 0:
        spans.append((at, end))
        at = end + 1
    return spans, at


PARSERS = {"frames": _frames, "lines": _lines}


def _parse_whole(kind: str, data: bytes) -> tuple[list[bytes], int]:
    spans, used = PARSERS[kind](data)
    return [data[a:b] for a, b in spans], used


def _send_chunks(port: int, data: bytes, sizes: list[int]) -> bytes:
    """Blocking peer: ``data`` in chunks of ``sizes`` (the rest in one), each
    its own segment (TCP_NODELAY, a pause after each); then FIN, and
    everything the server answers until its FIN."""
    with socket.create_connection((HOST, port), timeout=IO_TIMEOUT) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        at = 0
        for n in sizes:
            if at >= len(data):
                break
            s.sendall(data[at:at + n])
            at += n
            time.sleep(0.001)
        s.sendall(data[at:])
        s.shutdown(socket.SHUT_WR)
        return recv_until_eof(s)


@st.composite
def framed_streams(draw: Any) -> bytes:
    frames = draw(st.lists(st.binary(max_size=600), max_size=12))
    out = b"".join(struct.pack(">H", len(f)) + f for f in frames)
    if draw(st.booleans()):                       # a partial frame at the end
        out += draw(st.binary(min_size=1, max_size=40))
    return out


line_streams = st.lists(st.binary(max_size=200).map(lambda b: b.replace(b"\n", b"")),
                        max_size=12).flatmap(
    lambda lines: st.binary(max_size=30).map(
        lambda tail: b"".join(x + b"\n" for x in lines) + tail.replace(b"\n", b"")))


@pytest.mark.parametrize("kind", sorted(PARSERS))
def test_with_data_any_chunking_parses_like_the_whole_stream(runner, kind):
    reference = PARSERS[kind]

    async def handler(conn: ringline.Connection) -> None:
        kept: list[tuple[memoryview, bytes]] = []

        def parse(view: memoryview) -> int:
            spans, used = reference(view)
            # Slices of the view kept past the call must stay valid and
            # unchanged: kept uncopied, compared with a copy at the end.
            kept.extend((view[a:b], bytes(view[a:b])) for a, b in spans)
            return used

        while n := await conn.with_data(parse):
            assert n > 0
        intact = all(bytes(v) == copy for v, copy in kept)
        report = struct.pack(">IIB", len(kept), conn.buffered, intact) + b"".join(
            struct.pack(">H", len(copy)) + copy for _, copy in kept)
        conn.send_nowait(report)
        await conn.drain()

    server = runner.run(ringline.serve(handler, HOST, 0))
    try:
        strategy = framed_streams() if kind == "frames" else line_streams

        @SETTINGS
        @given(data=strategy, sizes=st.lists(st.integers(1, 700), max_size=40))
        def check(data: bytes, sizes: list[int]) -> None:
            reply = runner.run(asyncio.to_thread(_send_chunks, server.port, data, sizes))
            count, rest, intact = struct.unpack_from(">IIB", reply)
            got, _ = _parse_whole("frames", reply[9:])
            want, used = _parse_whole(kind, data)
            assert got == want and count == len(want)
            assert rest == len(data) - used
            assert intact

        check()
    finally:
        runner.run(server.shutdown(2.0))


# ---------------------------------------------------------------------------
# send_parts / send_nowait over arbitrary parts
# ---------------------------------------------------------------------------

@st.composite
def buffers(draw: Any) -> Any:
    """A buffer of a drawn kind; large sizes are pseudo-random bytes from a seed."""
    size = draw(st.one_of(st.integers(0, 64), st.integers(0, 5000), st.integers(0, 70000)))
    body = random.Random(draw(st.integers(0, 1 << 30))).randbytes(size)
    kind = draw(st.sampled_from(["bytes", "bytearray", "memoryview", "slice", "empty"]))
    if kind == "bytearray":
        return bytearray(body)
    if kind == "memoryview":
        return memoryview(body)
    if kind == "slice":                            # a view into the middle of a larger buffer
        return memoryview(bytearray(b"<" + body + b">"))[1:-1]
    if kind == "empty":
        return draw(st.sampled_from([b"", bytearray(), memoryview(b"")]))
    return body


ops_strategy = st.lists(
    st.one_of(st.tuples(st.just("parts"), st.lists(buffers(), max_size=70)),
              st.tuples(st.just("nowait"), buffers())),
    min_size=1, max_size=6)


def test_send_parts_any_parts_arrive_in_order(runner):
    listener = socket.create_server((HOST, 0))
    listener.settimeout(IO_TIMEOUT)
    port = listener.getsockname()[1]

    def peer(out: list[bytes]) -> None:
        s, _ = listener.accept()
        with s:
            s.settimeout(IO_TIMEOUT)
            out.append(recv_until_eof(s))

    async def sender(ops: list[tuple[str, Any]]) -> list[tuple[int, int]]:
        conn = await ringline.connect(HOST, port)
        totals = []
        try:
            for what, arg in ops:
                if what == "parts":
                    fut = conn.send_parts(arg)
                    totals.append((await fut, sum(memoryview(p).nbytes for p in arg)))
                else:
                    conn.send_nowait(arg)
                await conn.drain()
        finally:
            conn.close()
            await conn.wait_closed()
        return totals

    try:
        @SETTINGS
        @given(ops=ops_strategy)
        def check(ops: list[tuple[str, Any]]) -> None:
            out: list[bytes] = []
            t = threading.Thread(target=peer, args=(out,))
            t.start()
            try:
                totals = runner.run(sender(ops))
            finally:
                t.join(IO_TIMEOUT)
            want = b"".join(bytes(p) for what, arg in ops
                            for p in (arg if what == "parts" else [arg]))
            assert out == [want]
            assert all(got == expected for got, expected in totals)

        check()
    finally:
        listener.close()


# ---------------------------------------------------------------------------
# Config over arbitrary values
# ---------------------------------------------------------------------------

FIELDS = [f.name for f in dataclasses.fields(Config)]

any_value = st.one_of(
    st.none(), st.booleans(),
    st.integers(-5, 70000), st.integers(), st.sampled_from([0, 1, 2, 64, 256, 4096, 1 << 20]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
    st.sampled_from(["auto", "uring", "portable"]), st.lists(st.integers(), max_size=2),
    st.just(object()))


def _in_domain(field: dataclasses.Field[Any]) -> st.SearchStrategy[Any]:
    """Values the field's own rule admits (its relations to other fields may
    still refuse them), so that many drawn Configs construct."""
    rule = field.metadata["rule"]
    extra = [st.none()] if getattr(rule, "optional", False) else []
    if hasattr(rule, "choices"):
        return st.sampled_from(rule.choices)
    if hasattr(rule, "lo"):
        hi = rule.hi if rule.hi is not None else 1 << 40
        if rule.pow2:
            ints = st.integers(rule.lo.bit_length() - 1, hi.bit_length() - 1).map(
                lambda k: 1 << k).filter(lambda v: rule.lo <= v <= hi)
        else:
            ints = st.integers(rule.lo, hi).map(lambda v: v - v % rule.multiple).filter(
                lambda v: v >= rule.lo)
        zero = [st.just(0)] if rule.zero_is_auto else []
        return st.one_of(ints, *zero, *extra)
    if isinstance(field.default, bool) or field.type in ("bool", "bool | None"):
        return st.one_of(st.booleans(), *extra)
    return st.one_of(st.floats(1e-3, 1e6), st.integers(1, 1000), *extra)   # seconds


DOMAIN = {f.name: _in_domain(f) for f in dataclasses.fields(Config)}


@st.composite
def config_fields(draw: Any) -> dict[str, Any]:
    """A few fields, each mostly from its domain, sometimes any value at
    all, rarely a name Config does not have."""
    names = draw(st.lists(st.sampled_from(FIELDS), max_size=5, unique=True))
    out = {name: draw(any_value if draw(st.integers(0, 7)) == 0 else DOMAIN[name])
           for name in names}
    if draw(st.integers(0, 9)) == 0:
        out[draw(st.text(min_size=1, max_size=6).filter(lambda s: s not in FIELDS))] = 1
    return out


@SETTINGS
@given(fields=config_fields())
def test_config_any_values_construct_or_raise_value_or_type_error(fields):
    try:
        cfg = Config(**fields)
    except ConfigError as exc:
        assert exc.field in FIELDS, exc         # names a real field
        event("ConfigError")
        return
    except TypeError as exc:
        assert set(fields) - set(FIELDS), exc   # only an unknown field name is a TypeError
        event("TypeError")
        return
    event("constructed")
    # Every value is what was given, and every derived value exists.
    for name, value in fields.items():
        assert getattr(cfg, name) is value
    for prop in [p for p in dir(Config) if isinstance(getattr(Config, p), property)]:
        getattr(cfg, prop)
    assert cfg.replace(**fields) == cfg


@SETTINGS
@given(name=st.sampled_from(FIELDS),
       value=st.one_of(st.text(min_size=1, max_size=4).filter(
           lambda s: s not in ("auto", "uring", "portable")),
           st.lists(st.integers(), max_size=2), st.just(object())))
def test_config_wrong_type_is_always_a_config_error(name, value):
    with pytest.raises(ConfigError) as info:
        Config(**{name: value})
    assert info.value.field == name


# ---------------------------------------------------------------------------
# fs at arbitrary offsets against os.pread / os.pwrite
# ---------------------------------------------------------------------------

file_ops = st.lists(st.one_of(
    st.tuples(st.just("write"), st.integers(-1, 300000), st.integers(0, 70000),
              st.integers(0, 1 << 30)),
    st.tuples(st.just("read"), st.integers(-1, 300000), st.integers(0, 70000), st.just(0)),
), min_size=1, max_size=12)


def test_fs_reads_and_writes_match_pread_pwrite(runner, tmp_path):
    model_path, ring_path = tmp_path / "model", tmp_path / "ring"

    @SETTINGS
    @given(ops=file_ops, initial=st.integers(0, 100000))
    def check(ops: list[tuple[str, int, int, int]], initial: int) -> None:
        start = random.Random(initial).randbytes(initial)
        model_path.write_bytes(start)
        ring_path.write_bytes(start)
        mfd = os.open(model_path, os.O_RDWR)
        rfd = os.open(ring_path, os.O_RDWR)
        try:
            for what, offset, n, seed in ops:
                if what == "write":
                    data = random.Random(seed).randbytes(n)
                    want = os.write(mfd, data) if offset < 0 else os.pwrite(mfd, data, offset)
                    got = runner.run(fs.write(rfd, data, offset))
                else:
                    want = os.read(mfd, n) if offset < 0 else os.pread(mfd, n, offset)
                    got = runner.run(fs.read(rfd, n, offset))
                assert got == want, (what, offset, n)
                assert os.lseek(rfd, 0, os.SEEK_CUR) == os.lseek(mfd, 0, os.SEEK_CUR)
        finally:
            os.close(mfd)
            os.close(rfd)
        assert ring_path.read_bytes() == model_path.read_bytes()

    check()
