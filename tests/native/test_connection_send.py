"""ringline.Connection's send side: sends on closed connections, the send
pool, drain and backpressure, concurrent drainers, abort, and the socket
options taken from Config.

Peers are plain blocking sockets in a thread where the point is a real peer,
and ``ringline.connect`` on the same loop where the point is exact control
over what is buffered when.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import socket
import time

import pytest

import ringline
from ringline import Config
from ringline._net import stream as _stream
from ringline.errors import ConnectionClosed, SendPoolExhausted
from tests.support import (
    HOST,
    IO_TIMEOUT,
    conn_pair,
    echo,
    open_fd_count,
    pattern,
    run,
    serve_and_run,
    slow_reader,
)
from tests.support.backends import uring_only

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("native_backend")]

# ---------------------------------------------------------------------------
# send errors and limits
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["close", "abort", "peer_closed", "shutdown_write"])
def test_send_on_closed_connection_raises(how):
    async def main():
        async with conn_pair() as (srv, cli):
            if how == "close":
                srv.close()
                await srv.wait_closed()
            elif how == "abort":
                srv.abort()
                await srv.wait_closed()
            elif how == "peer_closed":
                cli.close()
                await cli.wait_closed()
                assert await asyncio.wait_for(srv.recv(), IO_TIMEOUT) == b""
                srv.close()
                await srv.wait_closed()
            else:
                srv.shutdown_write()
            with pytest.raises(ConnectionClosed):
                srv.send_nowait(b"late")
            with pytest.raises(ConnectionClosed):
                srv.send(b"late")
            with pytest.raises(ConnectionClosed):
                srv.send_parts([b"la", b"te"])
            assert isinstance(ConnectionClosed(), ConnectionError)
            if how != "shutdown_write":
                assert srv.closed

    run(main)


@uring_only("the send pool (the portable backend copies into bytes, no pool: documented)")
def test_send_pool_exhausted_is_typed_and_bytes_never_refused():
    cfg = Config(send_pool_slots=2, send_pool_slot_size=4096)

    async def main():
        loop = asyncio.get_running_loop()
        async with conn_pair() as (srv, cli):
            with pytest.raises(SendPoolExhausted):
                srv.send_nowait(bytearray(3 * 4096))
            with pytest.raises(SendPoolExhausted):
                srv.send(memoryview(bytes(2 * 4096 + 1)))
            assert isinstance(SendPoolExhausted(), BufferError)
            assert srv.queued == 0                     # nothing half-queued
            assert _stream.net_state_for(loop).statistics()["send_pool_free"] == 2
            # Exactly two slots' worth is fine, and the pool comes back.
            for i in range(5):
                assert await srv.send(bytearray(pattern(8192, seed=i))) == 8192
            # bytes are sent from the object itself: any size.
            big = pattern(10 << 20, seed=99)
            assert await srv.send(big) == len(big)
            want = b"".join(pattern(8192, seed=i) for i in range(5)) + big
            got = await asyncio.wait_for(cli.recv_exactly(len(want)), IO_TIMEOUT)
            assert got == want

    run(main, config=cfg)


def test_drain_applies_backpressure():
    """With a peer that does not read, the queue stays bounded by the
    high-water mark and drain() blocks; it resumes once the peer reads."""
    cfg = Config(send_queue_limit=256 << 10)
    piece = pattern(64 << 10)
    PIECES = 512                                   # 32 MiB: more than socket buffers hold
    stats = {}

    async def handler(conn):
        if not await conn.recv():
            return
        max_queued = 0
        t0 = time.monotonic()
        for _ in range(PIECES):
            conn.send_nowait(piece)
            max_queued = max(max_queued, conn.queued)
            await conn.drain()
        stats["max_queued"] = max_queued
        stats["took"] = time.monotonic() - t0

    assert serve_and_run(handler, slow_reader(0.3), config=cfg) == PIECES * len(piece)
    assert stats["max_queued"] <= (256 << 10) + len(piece), stats
    assert stats["took"] >= 0.2, stats


def test_drain_looks_at_the_queue_when_awaited_and_a_cancel_spares_other_drainers():
    """drain() returns an awaitable, not a coroutine: one made while the
    queue is empty still waits if the queue is over the high-water mark when
    it is awaited.  Cancelling one of two waiting drainers leaves the other
    waiting until the peer reads."""
    cfg = Config(send_queue_limit=64 << 10)
    piece = pattern(64 << 10)
    PIECES = 256                                   # 16 MiB: more than socket buffers hold
    out = {}

    async def handler(conn):
        if not await conn.recv():
            return
        try:
            early = conn.drain()                   # nothing queued yet
            # (The portable backend's drain is a coroutine: documented.)
            out["coroutine"] = inspect.iscoroutine(early) and ringline.backend() == "uring"
            for _ in range(PIECES):
                conn.send_nowait(piece)
            a = asyncio.ensure_future(conn.drain())
            b = asyncio.ensure_future(conn.drain())
            await asyncio.sleep(0.05)
            a.cancel()
            t0 = time.monotonic()
            await early
            out["waited"] = time.monotonic() - t0
            await b
            out["a"] = "cancelled" if a.cancelled() else "not cancelled"
            try:
                await early
            except RuntimeError:
                out["reawait"] = "refused"
            again = conn.drain()
            out["recycled_while_held"] = again is early
            await again
        except BaseException as exc:
            out["error"] = repr(exc)
            raise

    assert serve_and_run(handler, slow_reader(0.3), config=cfg) == PIECES * len(piece)
    assert out.pop("waited") >= 0.15, out
    assert out == {"coroutine": False, "a": "cancelled", "reawait": "refused",
                   "recycled_while_held": False}



# ---------------------------------------------------------------------------
# more send / close semantics
# ---------------------------------------------------------------------------


def test_concurrent_drains_all_resume():
    cfg = Config(send_queue_limit=64 << 10)
    res = {}

    async def handler(conn):
        if not await conn.recv():
            return

        async def writer(i):
            for _ in range(100):
                conn.send_nowait(b"%d" % i * 65536)
                await conn.drain()
            res[i] = "done"

        try:
            async with asyncio.timeout(5):
                await asyncio.gather(writer(1), writer(2))
        except TimeoutError:
            res["timeout"] = True

    got = serve_and_run(handler, slow_reader(0.2), config=cfg)   # both writers park in drain()
    assert res == {1: "done", 2: "done"}, res
    assert got == 200 * 65536


def test_abort_fails_awaited_send_with_connection_error():
    out = {}

    async def main():
        async with conn_pair() as (srv, cli):
            async def sender():
                try:
                    await srv.send(pattern(64 << 20))    # far more than socket buffers
                    out["r"] = "sent"
                except asyncio.CancelledError:
                    out["r"] = "CancelledError"
                except ConnectionError as exc:
                    out["r"] = exc

            # The client side is not read by anyone, but its ring keeps
            # receiving up to recv_accumulator_limit; 64 MiB is beyond that.
            t = asyncio.ensure_future(sender())
            await asyncio.sleep(0.1)
            srv.abort()
            await asyncio.wait_for(t, IO_TIMEOUT)

    run(main, config=Config(recv_accumulator_limit=64 << 20))
    assert isinstance(out["r"], ConnectionError), out


def test_empty_and_bad_sends():
    async def main():
        async with conn_pair() as (srv, cli):
            assert await srv.send(b"") == 0
            assert await srv.send(bytearray()) == 0
            srv.send_nowait(b"")
            with pytest.raises(TypeError):
                srv.send_nowait("text is not bytes")
            with pytest.raises(TypeError):
                srv.send(12345)
            import array
            arr = array.array("i", [1, 2, 3])
            assert await srv.send(arr) == arr.itemsize * 3
            assert await cli.recv_exactly(arr.itemsize * 3) == arr.tobytes()
            assert srv.queued == 0

    run(main)


def _sockopt(fd: int, level: int, opt: int) -> int | None:
    import stat
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            return None
    except OSError:
        return None                        # a direct descriptor, not a process fd
    s = socket.socket(fileno=fd)
    try:
        return s.getsockopt(level, opt)
    finally:
        s.detach()


@pytest.mark.parametrize("nodelay", [True, False])
def test_tcp_nodelay_and_reuse_port_from_config(nodelay):
    cfg = Config(tcp_nodelay=nodelay, reuse_port=nodelay)

    async def main():
        async with conn_pair() as (srv, cli):
            for c in (srv, cli):
                # A direct descriptor has no process fd: read the option
                # through one the kernel installs for the call.
                v = await c.with_real_fd(
                    lambda fd: _sockopt(fd, socket.IPPROTO_TCP, socket.TCP_NODELAY))
                assert v is not None
                assert bool(v) is nodelay
        server = await ringline.serve(echo, HOST, 0)
        try:
            s = server.sockets[0]
            assert bool(s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)) is nodelay
        finally:
            await server.shutdown(1.0)

    run(main, config=cfg)


def test_max_connections_enforced():
    cfg = Config(max_connections=4)
    started = 0

    async def handler(conn):
        nonlocal started
        started += 1
        await conn.recv()

    async def main():
        server = await ringline.serve(handler, HOST, 0)
        socks = []
        try:
            for _ in range(8):
                socks.append(socket.create_connection((HOST, server.port), timeout=IO_TIMEOUT))
            await asyncio.sleep(0.2)
            assert started <= 4, f"{started} handlers ran with max_connections=4"
        finally:
            for s in socks:
                s.close()
            await server.shutdown(2.0)

    run(main, config=cfg)


@uring_only("fixed descriptors (the portable backend's sockets are process fds)")
def test_connections_use_direct_descriptors():
    async def main():
        server = await ringline.serve(echo, HOST, 0)
        try:
            base = open_fd_count()
            conns = [await ringline.connect(HOST, server.port) for _ in range(50)]
            for c in conns:
                c.send_nowait(b"x")
            for c in conns:
                assert await c.recv_exactly(1) == b"x"
            grew = open_fd_count() - base
            for c in conns:
                c.close()
            await asyncio.gather(*(c.wait_closed() for c in conns))
            return grew
        finally:
            await server.shutdown(2.0)

    assert run(main) < 10
