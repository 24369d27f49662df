"""The portable backend: the native API and ringline.fs on any asyncio loop.

Every behaviour test runs on each backend of ``tests/support/backends.py``:
the io_uring loop ("uring", skipped where io_uring is refused), and the
portable backend on asyncio's own loop and on uvloop.  So each promise is
checked against the ring path as well, which is what keeps the two the
same.  The same helpers (``backend_name``, ``run_native``) parametrise the
other native-API and fs test files.

The last tests run in a child process whose seccomp filter denies
``io_uring_setup``: an unchanged native echo server started with
``ringline.run(main())`` (backend "auto") must serve byte-exact, warning
once.
"""

from __future__ import annotations

import asyncio
import errno
import importlib
import json
import os
import random
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

import ringline
from ringline import Config, fs, portable
from ringline.errors import (
    ConfigError,
    ConnectionClosed,
    ConnectionLimitReached,
    DirectIOAlignmentError,
    ReceiveLimitExceeded,
)
from tests.support import backends as nb
from tests.support import paths
from tests.support import seccomp as _seccomp

HOST = "127.0.0.1"
TESTS_DIR = paths.SUPPORT_DIR      # children import seccomp from here

# ---------------------------------------------------------------------------
# backends (tests/support/backends.py)
# ---------------------------------------------------------------------------

backend_name = nb.backend_name
portable_name = nb.portable_name
run_native = nb.run_native


async def echo(conn: Any) -> None:
    """The native echo handler of examples/echo_server.py."""
    try:
        while data := await conn.recv():
            conn.send_nowait(data)
            await conn.drain()
    except ConnectionError:
        pass


def _payload(rng: random.Random, n: int) -> bytes:
    return rng.randbytes(n)


# ---------------------------------------------------------------------------
# echo and ordering
# ---------------------------------------------------------------------------


def test_echo_many_connections_byte_exact(backend_name: str) -> None:
    n_conns = 120

    async def client(port: int, seed: int) -> bool:
        rng = random.Random(seed)
        data = _payload(rng, rng.randint(1, 200_000))
        conn = await ringline.connect(HOST, port)
        pos = 0
        while pos < len(data):
            step = rng.choice((1, 7, 100, 1460, 16384, 65536))
            conn.send_nowait(data[pos:pos + step])
            pos += step
        back = await conn.recv_exactly(len(data))
        conn.shutdown_write()
        assert await conn.recv() == b""
        conn.close()
        await conn.wait_closed()
        return back == data

    async def main() -> list[bool]:
        server = await ringline.serve(echo, HOST, 0)
        try:
            return await asyncio.gather(*(client(server.port, i) for i in range(n_conns)))
        finally:
            await server.shutdown(2.0)

    assert run_native(backend_name, main) == [True] * n_conns


def test_sends_keep_call_order_across_kinds(backend_name: str) -> None:
    import array
    rng = random.Random(5)
    pieces = [_payload(rng, rng.randint(0, 5000)) for _ in range(600)]
    expect = b"".join(pieces)
    results: dict[str, Any] = {}

    async def handler(conn: Any) -> None:
        futs = []
        i = 0
        while i < len(pieces):
            kind = i % 5
            p = pieces[i]
            if kind == 0:
                conn.send_nowait(p)
            elif kind == 1:
                buf = bytearray(p)
                futs.append((conn.send(buf), len(p)))
                buf[:] = b"\0" * len(buf)     # the caller may reuse it at once
            elif kind == 2:
                conn.send_nowait(memoryview(bytearray(p)))
            elif kind == 3 and i + 2 < len(pieces):
                parts = [pieces[i], bytearray(pieces[i + 1]), memoryview(pieces[i + 2])]
                futs.append((conn.send_parts(parts), sum(map(len, pieces[i:i + 3]))))
                i += 2
            else:
                futs.append((conn.send(array.array("B", p)), len(p)))
            i += 1
            if i % 50 == 0:
                await conn.drain()
        results["counts"] = [await f == n for f, n in futs]

    async def main() -> bytes:
        server = await ringline.serve(handler, HOST, 0)
        conn = await ringline.connect(HOST, server.port)
        got = bytearray()
        while chunk := await conn.recv():
            got += chunk
        conn.close()
        await server.shutdown(2.0)
        return bytes(got)

    assert run_native(backend_name, main) == expect
    assert results["counts"] and all(results["counts"])


def test_send_of_bad_objects_raises_at_once(backend_name: str) -> None:
    async def main() -> None:
        server = await ringline.serve(echo, HOST, 0)
        conn = await ringline.connect(HOST, server.port)
        with pytest.raises(TypeError):
            conn.send_nowait("text is not bytes")
        with pytest.raises(TypeError):
            conn.send(12345)
        assert await conn.send(b"") == 0
        with pytest.raises(ValueError):
            conn.recv(0)
        with pytest.raises(ValueError):
            conn.recv_exactly(-1)
        conn.close()
        await server.shutdown(1.0)

    run_native(backend_name, main)


# ---------------------------------------------------------------------------
# receiving
# ---------------------------------------------------------------------------


def _frames(rng: random.Random, count: int) -> list[bytes]:
    return [_payload(rng, rng.choice((0, 1, 3, 50, 1000, 70000))) for _ in range(count)]


def test_with_data_parses_frames_across_chunkings(backend_name: str) -> None:
    rng = random.Random(11)
    frames = _frames(rng, 200)
    wire = b"".join(struct.pack(">I", len(f)) + f for f in frames)
    got: list[bytes] = []
    kept: list[tuple[memoryview, bytes]] = []

    def parse(view: memoryview) -> int:
        if len(view) < 4:
            return 0
        (n,) = struct.unpack_from(">I", view)
        if len(view) < 4 + n:
            return 0
        got.append(bytes(view[4:4 + n]))
        if len(kept) < 20 and n:
            kept.append((view[4:4 + n], bytes(view[4:4 + n])))   # a slice kept past parse
        return 4 + n

    async def handler(conn: Any) -> None:
        while await conn.with_data(parse):
            pass
        conn.send_nowait(b"done")

    async def main() -> bytes:
        server = await ringline.serve(handler, HOST, 0)
        conn = await ringline.connect(HOST, server.port)
        pos = 0
        while pos < len(wire):
            step = rng.choice((1, 2, 3, 5, 4096, 65536, 200_000))
            conn.send_nowait(wire[pos:pos + step])
            pos += step
            if rng.random() < 0.2:
                await asyncio.sleep(0.001)      # let the receiver see this chunking
        conn.shutdown_write()
        reply = await conn.recv_exactly(4)
        conn.close()
        await server.shutdown(2.0)
        return reply

    assert run_native(backend_name, main) == b"done"
    assert got == frames
    assert kept and all(bytes(v) == copy for v, copy in kept)


def test_with_data_at_eof_and_bad_counts(backend_name: str) -> None:
    out: dict[str, Any] = {}

    async def handler(conn: Any) -> None:
        seen: list[int] = []
        n = await conn.with_data(lambda v: seen.append(len(v)) or 0 if len(v) < 5 else 2)
        out["first"] = n
        with pytest.raises(ValueError):
            await conn.with_data(lambda v: len(v) + 1)
        # At end of stream parse sees what is left; 0 unless it consumes.
        out["eof"] = await conn.with_data(lambda v: out.setdefault("left", bytes(v)) and 0)
        out["eof2"] = await conn.with_data(lambda v: 0)

    async def main() -> None:
        server = await ringline.serve(handler, HOST, 0)
        conn = await ringline.connect(HOST, server.port)
        await conn.send(b"abcdefg")
        conn.shutdown_write()
        assert await conn.recv() == b""
        conn.close()
        await server.shutdown(2.0)

    run_native(backend_name, main)
    assert out["first"] == 2
    assert out["left"] == b"cdefg"
    assert out["eof"] == 0 and out["eof2"] == 0


def test_recv_exactly_and_incomplete_read(backend_name: str) -> None:
    out: dict[str, Any] = {}

    async def handler(conn: Any) -> None:
        out["zero"] = await conn.recv_exactly(0)
        out["four"] = await conn.recv_exactly(4)
        out["small"] = await conn.recv(2)
        try:
            await conn.recv_exactly(10)
        except asyncio.IncompleteReadError as exc:
            out["partial"] = (exc.partial, exc.expected)
        out["after"] = await conn.recv()

    async def main() -> None:
        server = await ringline.serve(handler, HOST, 0)
        conn = await ringline.connect(HOST, server.port)
        await conn.send(b"0123456789")
        await asyncio.sleep(0.05)
        conn.shutdown_write()
        assert await conn.recv() == b""
        conn.close()
        await server.shutdown(2.0)

    run_native(backend_name, main)
    assert out == {"zero": b"", "four": b"0123", "small": b"45",
                   "partial": (b"6789", 10), "after": b""}


def test_a_cancelled_receive_loses_nothing(backend_name: str) -> None:
    async def main() -> bytes:
        server = await ringline.serve(echo, HOST, 0)
        conn = await ringline.connect(HOST, server.port)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(conn.recv_exactly(3), 0.05)
        await conn.send(b"xyz")
        got = await conn.recv_exactly(3)
        conn.close()
        await server.shutdown(1.0)
        return bytes(got)

    assert run_native(backend_name, main) == b"xyz"


def test_only_one_receiver_at_a_time(backend_name: str) -> None:
    async def main() -> None:
        server = await ringline.serve(echo, HOST, 0)
        conn = await ringline.connect(HOST, server.port)
        first = asyncio.ensure_future(conn.recv())
        await asyncio.sleep(0.01)
        with pytest.raises(RuntimeError, match="already waiting"):
            await conn.recv()
        await conn.send(b"a")
        assert await first == b"a"
        conn.close()
        await server.shutdown(1.0)

    run_native(backend_name, main)


def test_receive_backpressure_and_limit(backend_name: str) -> None:
    limit = 256 * 1024
    total = 32 * 1024 * 1024       # beyond what the socket buffers take while paused
    cfg = Config(recv_accumulator_limit=limit, recv_buffer_size=16384)
    out: dict[str, Any] = {}
    ready = asyncio.Event

    async def main() -> None:
        go: asyncio.Event = ready()
        conns: list[Any] = []

        async def handler(conn: Any) -> None:
            conns.append(conn)
            await go.wait()
            out["buffered_while_idle"] = conn.buffered
            got = 0
            while data := await conn.recv():
                got += len(data)
            out["got"] = got

        server = await ringline.serve(handler, HOST, 0, config=cfg)
        conn = await ringline.connect(HOST, server.port)
        fut = conn.send(b"z" * total)
        await asyncio.sleep(0.3)
        out["sent_while_idle"] = fut.done()
        go.set()
        assert await fut == total
        conn.shutdown_write()
        while not out.get("got"):
            await asyncio.sleep(0.01)
        conn.close()
        await server.shutdown(2.0)

    run_native(backend_name, main, cfg)
    assert out["got"] == total
    assert not out["sent_while_idle"]           # TCP flow control reached the sender
    assert out["buffered_while_idle"] <= 2 * limit, out


def test_receive_limit_exceeded(backend_name: str) -> None:
    limit = 64 * 1024
    cfg = Config(recv_accumulator_limit=limit, recv_buffer_size=16384)
    out: dict[str, Any] = {}

    async def handler(conn: Any) -> None:
        try:
            await conn.recv_exactly(1000 * limit)   # more than could ever be buffered
        except ReceiveLimitExceeded as exc:
            out["limit"] = exc.limit
        out["closing"] = conn.closing

    async def main() -> None:
        server = await ringline.serve(handler, HOST, 0, config=cfg)
        conn = await ringline.connect(HOST, server.port)
        conn.send_nowait(b"q" * (16 * limit))
        while "closing" not in out:
            await asyncio.sleep(0.01)
        conn.abort()
        await server.shutdown(1.0)

    run_native(backend_name, main, cfg)
    assert out == {"limit": limit, "closing": True}


# ---------------------------------------------------------------------------
# sending and backpressure
# ---------------------------------------------------------------------------


def test_drain_blocks_above_the_limit_until_the_peer_reads(backend_name: str) -> None:
    limit = 64 * 1024
    total = 96 * 1024 * 1024          # well beyond what loopback socket buffers hold
    cfg = Config(send_queue_limit=limit)
    out: dict[str, Any] = {"max_queued": 0}

    async def handler(conn: Any) -> None:
        sent = 0
        chunk = b"d" * 65536
        while sent < total:
            conn.send_nowait(chunk)
            sent += len(chunk)
            out["max_queued"] = max(out["max_queued"], conn.queued)
            t0 = time.monotonic()
            await conn.drain()
            out["max_wait"] = max(out.get("max_wait", 0.0), time.monotonic() - t0)
            assert conn.queued <= limit or sent >= total
        out["done_at"] = time.monotonic()

    async def main() -> None:
        server = await ringline.serve(handler, HOST, 0, config=cfg)
        conn = await ringline.connect(HOST, server.port)
        await asyncio.sleep(1.0)            # not reading: the server must block
        out["reading_at"] = time.monotonic()
        got = 0
        while got < total:
            got += len(await conn.recv())
        out["got"] = got
        conn.close()
        await server.shutdown(2.0)

    run_native(backend_name, main, cfg)
    assert out["got"] == total
    assert out["max_queued"] > limit
    assert out["max_wait"] >= 0.4           # drain waited for the reader
    assert out["done_at"] > out["reading_at"]


def test_send_future_resolves_when_the_kernel_took_it(backend_name: str) -> None:
    async def main() -> None:
        server = await ringline.serve(echo, HOST, 0)
        conn = await ringline.connect(HOST, server.port)
        big = b"s" * (96 * 1024 * 1024)     # beyond the socket buffers both ways
        fut = conn.send(big)
        await asyncio.sleep(0.05)
        assert not fut.done()               # the echo is not read back yet

        async def read_all() -> int:
            got = 0
            while got < len(big):
                got += len(await conn.recv())
            return got

        reader = asyncio.ensure_future(read_all())
        assert await fut == len(big)
        assert await reader == len(big)
        conn.close()
        await server.shutdown(2.0)

    run_native(backend_name, main)


# ---------------------------------------------------------------------------
# ending a connection
# ---------------------------------------------------------------------------


def test_shutdown_write_is_a_half_close(backend_name: str) -> None:
    async def handler(conn: Any) -> None:
        got = b""
        while data := await conn.recv():
            got += data
        conn.send_nowait(b"pong:" + got)      # EOF seen, sending goes on

    async def main() -> tuple[bytes, bytes]:
        server = await ringline.serve(handler, HOST, 0)
        conn = await ringline.connect(HOST, server.port)
        conn.send_nowait(b"ping")
        conn.shutdown_write()
        with pytest.raises(ConnectionClosed):
            conn.send_nowait(b"late")
        reply = await conn.recv_exactly(9)
        end = await conn.recv()
        conn.close()
        await conn.wait_closed()
        assert conn.closed
        await server.shutdown(1.0)
        return reply, end

    assert run_native(backend_name, main) == (b"pong:ping", b"")


def test_close_sends_what_is_queued_then_fin(backend_name: str) -> None:
    size = 6 * 1024 * 1024

    async def handler(conn: Any) -> None:
        conn.send_nowait(b"c" * size)
        conn.close()
        with pytest.raises(ConnectionClosed):
            conn.send_nowait(b"after close")
        assert await conn.recv() == b""      # closing: receiving is over

    async def main() -> int:
        server = await ringline.serve(handler, HOST, 0)
        conn = await ringline.connect(HOST, server.port)
        await asyncio.sleep(0.2)             # the sender is blocked on us
        got = 0
        while data := await conn.recv():
            got += len(data)
        conn.close()
        await server.shutdown(2.0)
        return got

    assert run_native(backend_name, main) == size


def test_abort_drops_queued_sends(backend_name: str) -> None:
    out: dict[str, Any] = {}

    async def handler(conn: Any) -> None:
        fut = conn.send(b"a" * (64 * 1024 * 1024))
        conn.abort()
        try:
            await fut
        except ConnectionAbortedError:
            out["future"] = "aborted"
        with pytest.raises(ConnectionClosed):
            conn.send_nowait(b"x")
        with pytest.raises(ConnectionAbortedError):
            await conn.recv()
        await conn.wait_closed()
        out["closed"] = conn.closed

    async def main() -> int:
        server = await ringline.serve(handler, HOST, 0)
        conn = await ringline.connect(HOST, server.port)
        await asyncio.sleep(0.1)
        got = 0
        try:
            while data := await conn.recv():
                got += len(data)
        except ConnectionResetError:
            pass
        conn.close()
        await server.shutdown(1.0)
        return got

    got = run_native(backend_name, main)
    assert got < 64 * 1024 * 1024
    assert out == {"future": "aborted", "closed": True}


def test_peer_reset_is_a_typed_error(backend_name: str) -> None:
    out: dict[str, Any] = {}

    async def handler(conn: Any) -> None:
        try:
            while await conn.recv():
                await asyncio.sleep(0.05)
        except ConnectionResetError as exc:
            out["errno"] = exc.errno
        out["drain"] = "no error"
        try:
            await conn.drain()
        except ConnectionError as exc:
            out["drain"] = type(exc).__name__

    async def main() -> None:
        server = await ringline.serve(handler, HOST, 0)
        loop = asyncio.get_running_loop()

        def rst() -> None:
            s = socket.create_connection((HOST, server.port))
            s.sendall(b"x")
            time.sleep(0.02)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()                         # RST

        await loop.run_in_executor(None, rst)
        while "drain" not in out:
            await asyncio.sleep(0.01)
        await server.shutdown(1.0)

    run_native(backend_name, main)
    assert out["errno"] == errno.ECONNRESET


def test_connect_refused_and_timeout(backend_name: str) -> None:
    async def main() -> None:
        s = socket.socket()
        s.bind((HOST, 0))
        port = s.getsockname()[1]
        s.close()
        with pytest.raises(ConnectionRefusedError, match="connect: Connection refused"):
            await ringline.connect(HOST, port)
        # A listener whose accept queue is full drops SYNs: connect hangs.
        lst = socket.socket()
        lst.bind((HOST, 0))
        lst.listen(0)
        fillers = []
        for _ in range(4):
            c = socket.socket()
            c.setblocking(False)
            try:
                c.connect(lst.getsockname())
            except BlockingIOError:
                pass
            fillers.append(c)
        await asyncio.sleep(0.1)
        t0 = time.monotonic()
        with pytest.raises(TimeoutError, match="connect timed out"):
            await ringline.connect(HOST, lst.getsockname()[1], timeout=0.3)
        assert 0.25 < time.monotonic() - t0 < 3.0
        for c in fillers:
            c.close()
        lst.close()

    run_native(backend_name, main)


def test_handler_failure_reaches_the_exception_handler(backend_name: str) -> None:
    seen: list[dict[str, Any]] = []

    async def bad(conn: Any) -> None:
        await conn.recv()
        raise KeyError("boom")

    async def main() -> bytes:
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: seen.append(ctx))
        server = await ringline.serve(bad, HOST, 0)
        conn = await ringline.connect(HOST, server.port)
        await conn.send(b"x")
        try:
            end = await conn.recv()
        except ConnectionResetError:
            end = b""
        conn.close()
        await server.shutdown(1.0)
        return bytes(end)

    assert run_native(backend_name, main) == b""
    assert len(seen) == 1 and isinstance(seen[0]["exception"], KeyError)
    assert "handler" in seen[0]["message"]


def test_connection_limits(backend_name: str) -> None:
    cfg = Config(max_connections=3)

    async def main() -> bytes:
        server = await ringline.serve(echo, HOST, 0)
        a = await ringline.connect(HOST, server.port)
        await asyncio.sleep(0.05)           # accepted: two streams on this loop
        b = await ringline.connect(HOST, server.port)
        await asyncio.sleep(0.05)
        with pytest.raises(ConnectionLimitReached):
            await ringline.connect(HOST, server.port)
        await a.send(b"still")
        got = await a.recv_exactly(5)
        a.close()
        b.close()
        await server.shutdown(1.0)
        return bytes(got)

    assert run_native(backend_name, main, cfg) == b"still"


def test_server_refuses_over_max_connections(backend_name: str) -> None:
    async def main() -> tuple[int, bytes, bytes]:
        server = await ringline.serve(echo, HOST, 0, config=Config(max_connections=1))
        loop = asyncio.get_running_loop()

        def clients() -> tuple[bytes, bytes]:
            with socket.create_connection((HOST, server.port), timeout=10) as s1:
                s1.sendall(b"one")
                first = s1.recv(10)
                with socket.create_connection((HOST, server.port), timeout=10) as s2:
                    try:
                        second = s2.recv(10)          # closed at once
                    except ConnectionResetError:
                        second = b""
                s1.sendall(b"again")
                return first, s1.recv(10) if second == b"" else second

        first, again = await loop.run_in_executor(None, clients)
        refused = server.refused
        await server.shutdown(1.0)
        return refused, first, again

    assert run_native(backend_name, main) == (1, b"one", b"again")


def test_addresses_and_fileno(backend_name: str) -> None:
    out: dict[str, Any] = {}

    async def handler(conn: Any) -> None:
        out["server"] = (conn.peer_addr, conn.local_addr, conn.is_outbound)

    async def main() -> None:
        server = await ringline.serve(handler, HOST, 0)
        conn = await ringline.connect(HOST, server.port)
        out["client"] = (conn.peer_addr, conn.local_addr, conn.is_outbound)
        out["fileno_type"] = type(conn.fileno)
        assert await conn.recv() == b""
        conn.close()
        await conn.wait_closed()
        out["fileno_closed"] = conn.fileno
        await server.shutdown(1.0)

    run_native(backend_name, main)
    (speer, slocal, sout), (cpeer, clocal, cout) = out["server"], out["client"]
    assert speer == clocal and slocal == cpeer
    assert (sout, cout) == (False, True)
    assert out["fileno_type"] is int and out["fileno_closed"] == -1


# ---------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------


def test_fs_round_trip_and_positional_io(backend_name: str, tmp_path: Path) -> None:
    p = tmp_path / "data.bin"
    blob = random.Random(3).randbytes(300_000)

    async def main() -> None:
        async with fs.open(p, "wb") as f:
            assert await f.write(blob) == len(blob)
            await f.fsync()
        async with fs.open(p, "rb") as f:
            assert await f.read() == blob
            # 32 concurrent random reads.
            offs = [random.Random(i).randrange(0, len(blob)) for i in range(32)]
            parts = await asyncio.gather(*(f.pread(4096, o) for o in offs))
            assert parts == [blob[o:o + 4096] for o in offs]
            assert await f.tell() == len(blob)
        async with fs.open(p, "r+b") as f:
            assert await f.pwrite(b"HELLO", 10) == 5
            assert await f.pread(7, 9) == blob[9:10] + b"HELLO" + blob[15:16]
            buf = bytearray(5)
            assert await f.read_into(buf, 10) == 5 and buf == b"HELLO"
        async with fs.open(tmp_path / "t.txt", "w", encoding="utf-8") as t:
            await t.write("héllo\nwörld\n")
        async with fs.open(tmp_path / "t.txt", encoding="utf-8") as t:
            assert [line async for line in t] == ["héllo\n", "wörld\n"]
        st = await fs.stat(p)
        assert st.st_size == len(blob) == os.stat(p).st_size
        await fs.rename(p, tmp_path / "moved")
        with pytest.raises(FileNotFoundError) as ei:
            await fs.open(p, "rb")
        assert ei.value.filename == p
        await fs.mkdir(tmp_path / "d")
        await fs.rmdir(tmp_path / "d")
        await fs.unlink(tmp_path / "moved")
        fd = await fs.openat(tmp_path / "raw", os.O_CREAT | os.O_RDWR)
        assert await fs.write(fd, b"abc", 0) == 3
        assert await fs.read(fd, 10, 0) == b"abc"
        await fs.close(fd)

    run_native(backend_name, main)


def _direct_supported(path: Path) -> bool:
    try:
        fd = os.open(path / "probe", os.O_CREAT | os.O_RDWR | os.O_DIRECT)
    except OSError:
        return False
    os.close(fd)
    os.unlink(path / "probe")
    return True


def test_open_direct_alignment_and_buffers(backend_name: str, tmp_path: Path) -> None:
    if not _direct_supported(tmp_path):
        pytest.skip("O_DIRECT is not supported on this filesystem")
    p = tmp_path / "direct.bin"
    blob = random.Random(9).randbytes(64 * 1024)

    async def main() -> None:
        async with fs.open_direct(p, "wb+") as f:
            a = f.alignment
            assert await f.pwrite(blob, 0) == len(blob)
            with pytest.raises(DirectIOAlignmentError) as ei:
                await f.pwrite(b"x" * 100, 0)
            assert ei.value.what == "length" and ei.value.alignment == a
            with pytest.raises(DirectIOAlignmentError) as ei:
                await f.pread(a, 1)
            assert ei.value.what == "offset"
            assert await f.pread(8192, 4096) == blob[4096:4096 + 8192]
            if f.memory_alignment > 1:
                raw = bytearray(a * 3)
                view = memoryview(raw)
                start = next(i for i in range(1, a)
                             if _address(view[i:]) % f.memory_alignment)
                with pytest.raises(DirectIOAlignmentError) as ei:
                    await f.read_into(view[start:start + a], 0)
                assert ei.value.what == "buffer address"
            buf = await f.buffer(8192)
            try:
                assert await f.read_into(buf, 8192) == 8192
                assert bytes(buf) == blob[8192:16384]
            finally:
                buf.release()
        assert p.read_bytes() == blob

    run_native(backend_name, main)


def _address(view: memoryview) -> int:
    from ringline.portable._fileops import buffer_address
    return buffer_address(view)[0]


def test_one_file_code_path_with_a_layer_per_loop(backend_name: str, tmp_path: Path) -> None:
    # ringline.fs's own classes on every backend; only the file layer differs
    # (the compiled ring operations, or the portable ones on worker threads).
    from ringline.files import direct as direct_mod
    from ringline.portable import _fileops

    direct = _direct_supported(tmp_path)
    seen: dict[str, Any] = {}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with fs.open(tmp_path / "a", "wb") as f:
            assert type(f) is fs.AsyncFile
            seen["layer"] = f._ops
        if direct:
            async with fs.open_direct(tmp_path / "d", "wb+") as d:
                assert type(d) is direct_mod.DirectFile and isinstance(d, fs.AsyncFile)
                assert d._ops is seen["layer"]
                assert d._pool is _fileops.loop_pool(loop) or backend_name == "uring"
                assert await d.pwrite(b"z" * d.alignment, 0) == d.alignment
                assert await d.pread(d.alignment, 0) == b"z" * d.alignment

    run_native(backend_name, main)
    if backend_name == "uring":
        assert seen["layer"] is importlib.import_module("ringline.files.fileops")
    else:
        assert seen["layer"] is _fileops


def test_foreign_loop_pool_is_kept_aside_and_sized_by_its_config(portable_name: str,
                                                                tmp_path: Path) -> None:
    # No attribute is set on uvloop's or asyncio's loop: the O_DIRECT pool is
    # kept by the portable layer, weakly keyed by the loop, and sized by the
    # Config the portable backend uses on that loop.
    import gc

    from ringline.portable import _fileops

    cfg = Config(registered_buffers=3, registered_buffer_size=8192)
    loop = nb.new_loop(portable_name, cfg)
    attrs = set(vars(loop)) if hasattr(loop, "__dict__") else set()

    async def main() -> Any:
        buf = await fs.direct_buffer()
        try:
            assert len(buf) == 8192
        finally:
            buf.release()
        return _fileops.loop_pool(asyncio.get_running_loop())

    try:
        pool = loop.run_until_complete(main())
    finally:
        loop.close()
    assert pool is not None and (pool.nbufs, pool.buffer_size) == (3, 8192)
    assert pool.available == 3
    assert (set(vars(loop)) if hasattr(loop, "__dict__") else set()) == attrs
    n = len(_fileops._POOLS)
    del loop
    gc.collect()
    assert len(_fileops._POOLS) == n - 1


_CHILD_NO_EXTENSION = """
import asyncio, glob, importlib.abc, os, sys, types
pkg = types.ModuleType("ringline")
pkg.__path__ = [{src!r}]        # the package's __init__ imports the loop: bypassed
sys.modules["ringline"] = pkg


class NoExtension(importlib.abc.MetaPathFinder):
    # Every compiled module (a .pyx in a source tree; a .pyi stub and a
    # .so in a build tree) fails to import.
    def find_spec(self, name, path, target=None):
        rel = os.path.join({src!r}, *name.split(".")[1:])
        if name.startswith("ringline.") and (
                os.path.exists(rel + ".pyx") or os.path.exists(rel + ".pyi")
                or glob.glob(glob.escape(rel) + ".*.so")):
            raise ImportError("no extension: " + name)


sys.meta_path.insert(0, NoExtension())
from ringline import fs


async def main():
    async with fs.open({path!r}, "w", encoding="utf-8") as f:
        await f.write("sans extension")
    async with fs.open({path!r}, encoding="utf-8") as f:
        assert await f.read() == "sans extension"
    with await fs.direct_buffer(4096) as b:
        assert len(b) == 4096

asyncio.run(main())
print(fs.DirectBuffer.__module__, sorted(m for m in sys.modules if m.startswith("ringline")))
"""


def test_files_import_and_run_without_the_extension(tmp_path: Path) -> None:
    # files/fs.py and direct.py guard their compiled imports: with every
    # compiled module unimportable they run on the portable file layer.
    src = str(Path(ringline.__file__).resolve().parent)
    code = _CHILD_NO_EXTENSION.format(src=src, path=str(tmp_path / "t"))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    layer, mods = proc.stdout.split(" ", 1)
    assert layer == "ringline.portable._fileops"
    assert "ringline.files.fileops" not in mods and "ringline._core.loop" not in mods
    assert (tmp_path / "t").read_text() == "sans extension"


@pytest.mark.needs_extension     # a pure install has no ringline.nvme (test_pure.py)
def test_nvme_needs_the_ring_and_says_so(portable_name: str) -> None:
    # NVMe passthrough is io_uring's alone: no portable layer, a clear error.
    from ringline import nvme

    async def main() -> None:
        with pytest.raises(TypeError, match="ringline.nvme needs a running ringline event "
                                            "loop") as ei:
            await nvme.open("/dev/ng0n1")
        assert type(asyncio.get_running_loop()).__module__ in str(ei.value)

    run_native(portable_name, main)


# ---------------------------------------------------------------------------
# selection
# ---------------------------------------------------------------------------


def test_backend_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    from ringline import backends

    loop = ringline.new_event_loop(backend="portable")
    try:
        assert ringline.backend(loop) == "portable"
        assert portable.loop_kind(loop) in ("uvloop", "asyncio")
    finally:
        loop.close()
    loop = ringline.new_event_loop(Config(backend="portable"))
    try:
        assert ringline.backend(loop) == "portable"
    finally:
        loop.close()
    monkeypatch.setenv("RINGLINE_BACKEND", "portable")
    assert ringline.backend() == "portable"

    async def which() -> str:
        return ringline.backend()

    assert ringline.run(which()) == "portable"
    # A non-auto Config wins over the environment, the argument over both.
    assert backends.requested(None, Config(backend="uring")) == "uring"
    assert backends.requested("auto", Config(backend="uring")) == "auto"
    monkeypatch.setenv("RINGLINE_BACKEND", "io_uring")
    with pytest.raises(ConfigError, match="RINGLINE_BACKEND"):
        ringline.new_event_loop()
    monkeypatch.delenv("RINGLINE_BACKEND")
    with pytest.raises(ConfigError):
        ringline.new_event_loop(backend="fast")
    with pytest.raises(ConfigError):
        Config(backend="io_uring")


def test_launch_runs_on_the_portable_backend() -> None:
    class Echo(ringline.Handler):
        async def on_accept(self, conn: Any) -> None:
            await echo(conn)

    handle = ringline.ShutdownHandle()
    worker = threading.Thread(target=ringline.launch, args=(Echo,),
                              kwargs={"bind": (HOST, 0), "shutdown": handle,
                                      "config": Config(backend="portable",
                                                       shutdown_timeout=1.0),
                                      "handle_signals": False})
    worker.start()
    try:
        assert handle.wait_ready(10) and handle.bound is not None
        with socket.create_connection(handle.bound, timeout=10) as s:
            s.sendall(b"launched")
            assert s.recv(100) == b"launched"
    finally:
        handle.shutdown()
        worker.join(10)
    assert not worker.is_alive()


# ---------------------------------------------------------------------------
# io_uring refused: a child under a seccomp filter
# ---------------------------------------------------------------------------

_CHILD_SERVER = '''
import asyncio, json, sys, warnings
warnings.simplefilter("always")
caught = []
warnings.showwarning = lambda m, c, *a, **k: caught.append((c.__name__, str(m)))
sys.path[:0] = {paths!r}
import seccomp as _seccomp
_seccomp.deny_syscall(_seccomp.NR_IO_URING_SETUP, {eperm})
import ringline

# An unchanged native-API echo server (as in examples/echo_server.py).
async def handle(conn: ringline.Connection) -> None:
    while data := await conn.recv():
        conn.send_nowait(data)
        await conn.drain()

async def main() -> None:
    server = await ringline.serve(handle, "127.0.0.1", 0)
    print(json.dumps({{"port": server.port, "backend": ringline.backend(),
                      "loop": type(asyncio.get_running_loop()).__module__}}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await server.shutdown(2.0)
    from ringline import fs
    async with fs.open({fpath!r}, "wb") as f:
        await f.write(b"file round trip")
    async with fs.open({fpath!r}, "rb") as f:
        assert await f.read() == b"file round trip"

ringline.run(main())
print(json.dumps({{"warnings": caught}}), flush=True)
'''


def _clients(port: int, n: int) -> list[bool]:
    """n concurrent blocking clients, each echoing random bytes."""
    results = [False] * n

    def one(i: int) -> None:
        rng = random.Random(i)
        data = rng.randbytes(rng.randint(1, 50_000))
        with socket.create_connection((HOST, port), timeout=20) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            got = bytearray()
            while chunk := s.recv(65536):
                got += chunk
        results[i] = bytes(got) == data

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


@pytest.mark.needs_extension     # the cause it checks is the kernel's refusal
def test_unchanged_echo_server_runs_where_io_uring_is_refused(tmp_path: Path) -> None:
    sc = _seccomp
    try:
        sc.audit_arch()
    except sc.SeccompUnavailable as exc:
        pytest.skip(str(exc))
    pkg_root = str(Path(ringline.__file__).resolve().parents[1])
    code = textwrap.dedent(_CHILD_SERVER).format(
        paths=[str(TESTS_DIR), pkg_root], eperm=errno.EPERM, fpath=str(tmp_path / "f"))
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        first = proc.stdout.readline()
        if not first:
            pytest.fail(f"child died: {proc.stderr.read() if proc.stderr else ''}")
        info = json.loads(first)
        assert info["backend"] == "portable"
        n = 250
        results = _clients(info["port"], n)
        proc.stdin.write("\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert results == [True] * n
    caught = json.loads(out.strip().splitlines()[-1])["warnings"]
    assert len(caught) == 1, caught
    category, message = caught[0]
    assert category == "RuntimeWarning"
    assert "seccomp" in message and "RINGLINE_BACKEND" in message
    assert (tmp_path / "f").read_bytes() == b"file round trip"


def test_no_warning_when_portable_is_asked_for() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loop = ringline.new_event_loop(backend="portable")
        loop.close()


_CHILD_WORKERS = '''
import json, socket, sys, warnings
warnings.simplefilter("ignore")
sys.path[:0] = {paths!r}
import seccomp as _seccomp
_seccomp.deny_syscall(_seccomp.NR_IO_URING_SETUP, {eperm})
import ringline
from ringline.workers import WorkerPool

class Echo(ringline.Handler):
    def __init__(self, worker_id=0):
        self.worker_id = worker_id

    @classmethod
    def create_for_worker(cls, worker_id):
        return cls(worker_id)

    async def on_accept(self, conn):
        conn.send_nowait(b"%d:" % self.worker_id)
        while data := await conn.recv():
            conn.send_nowait(data)
            await conn.drain()

pool = WorkerPool(Echo, ("127.0.0.1", 0), ringline.Config(workers=2, shutdown_timeout=1.0))
pool.start()
assert pool.ready(20), "workers not ready"
workers, ok = set(), 0
for i in range(200):
    with socket.create_connection(("127.0.0.1", pool.port), timeout=10) as s:
        msg = b"hello %d" % i
        s.sendall(msg)
        s.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := s.recv(100):
            got += chunk
        wid, _, body = got.partition(b":")
        workers.add(int(wid))
        ok += body == msg
pool.shutdown()
print(json.dumps({{"ok": ok, "workers": sorted(workers), "codes": pool.wait(20)}}), flush=True)
'''


def test_two_workers_run_where_io_uring_is_refused() -> None:
    sc = _seccomp
    try:
        sc.audit_arch()
    except sc.SeccompUnavailable as exc:
        pytest.skip(str(exc))
    pkg_root = str(Path(ringline.__file__).resolve().parents[1])
    code = textwrap.dedent(_CHILD_WORKERS).format(paths=[str(TESTS_DIR), pkg_root],
                                                  eperm=errno.EPERM)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=90, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"ok": 200, "workers": [0, 1], "codes": [0, 0]}, out


def test_handlers_are_ordinary_tasks(backend_name: str) -> None:
    """A receive resumes its handler inside the transport callback on the
    portable backend; the handler still is an asyncio Task with its context,
    timeouts and cancellation."""
    import contextvars
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    out: dict[str, Any] = {}

    async def handler(conn: Any) -> None:
        task = asyncio.current_task()
        var.set("mine")
        try:
            async with asyncio.timeout(0.05):
                await conn.recv()
        except TimeoutError:
            out["timeout"] = True
        out["first"] = await conn.recv_exactly(5)
        out["same_task"] = asyncio.current_task() is task
        out["var"] = var.get()
        conn.send_nowait(b"bye")

    async def main() -> bytes:
        server = await ringline.serve(handler, HOST, 0)
        conn = await ringline.connect(HOST, server.port)
        await asyncio.sleep(0.2)
        conn.send_nowait(b"hello")
        got = await conn.recv_exactly(3)
        conn.close()
        await server.shutdown(1.0)
        return bytes(got)

    assert run_native(backend_name, main) == b"bye"
    assert out == {"timeout": True, "first": b"hello", "same_task": True, "var": "mine"}


def test_closing_a_file_while_operations_are_in_flight(backend_name: str,
                                                      tmp_path: Path) -> None:
    """A regular file's reads in flight complete normally; a pipe's blocked
    read is given up, its awaiter gets ValueError (the file is closed)."""
    p = tmp_path / "f"
    p.write_bytes(b"x" * 100_000)

    async def main() -> None:
        f = await fs.open(p, "rb")
        reads = [asyncio.ensure_future(f.pread(1000, i * 1000)) for i in range(32)]
        await asyncio.sleep(0)
        await f.close()
        assert [len(r) for r in await asyncio.gather(*reads)] == [1000] * 32
        r, w = os.pipe()
        try:
            pipe = await fs.open(f"/proc/self/fd/{r}", "rb")
            blocked = asyncio.ensure_future(pipe.read(10))
            await asyncio.sleep(0.05)
            await pipe.close()
            with pytest.raises(ValueError, match="closed"):
                await asyncio.wait_for(blocked, 5)
        finally:
            os.write(w, b"z")        # frees a worker thread still blocked in read
            os.close(w)
            os.close(r)

    run_native(backend_name, main)
