"""Connections closed with unread bytes are freed by reference counting (issue 20).

test_memory.py churns connections that read everything; these close or abort
connections while received bytes sit unread (the handler never reads, or the
protocol paused reading), with the cycle collector disabled.  The buffers
must go at the close/abort call, and the connection objects, their ops and
tasks once the close completes, with no gc.collect() anywhere.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
import weakref

import pytest

import ringline
from ringline._net.stream import RecvOp, SendOp
from ringline.native.connection import Connection
from ringline.native.task import Task

N = 20
UNREAD = 256 * 1024            # bytes left unread on each connection
SLACK = 96 * 1024              # baseline noise (free lists, dict resizes)


@pytest.fixture
def no_gc():
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _counts() -> dict[str, int]:
    kinds = {Connection: 0, RecvOp: 0, SendOp: 0, Task: 0}
    for o in gc.get_objects():
        t = type(o)
        if t in kinds:
            kinds[t] += 1
    return {k.__name__: v for k, v in kinds.items()}


async def _until(pred, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("side", ["server", "client"])
@pytest.mark.parametrize("how", ["close", "abort"])
def test_native_unread_bytes_released_without_gc(no_gc, how, side):
    """N native connections each hold UNREAD received bytes; ``how`` on the
    side that holds them frees the bytes at the call and everything else
    once closed: object counts and traced memory back to the baseline."""

    async def main():
        server_conns: list[Connection] = []
        release = asyncio.Event()

        async def handler(conn):
            server_conns.append(conn)
            if side == "server":
                await release.wait()        # never reads: the bytes stay buffered
                return
            await conn.send(b"s" * UNREAD)
            await release.wait()

        server = await ringline.serve(handler, "127.0.0.1", 0)

        async def churn() -> int:
            server_conns.clear()
            release.clear()
            clients = [await ringline.connect("127.0.0.1", server.port) for _ in range(N)]
            await _until(lambda: len(server_conns) == N)
            if side == "server":
                sends = [c.send(b"c" * UNREAD) for c in clients]     # futures
                holders = list(server_conns)
            else:
                sends = []
                holders = clients
            await _until(lambda: all(h.buffered >= UNREAD for h in holders))  # noqa: B023
            before = tracemalloc.get_traced_memory()[0]
            for h in holders:
                getattr(h, how)()
            freed = before - tracemalloc.get_traced_memory()[0]
            assert all(h.buffered == 0 for h in holders)
            release.set()
            for c in clients:
                c.abort() if how == "abort" else c.close()
            for c in clients + server_conns:
                await c.wait_closed()
            await asyncio.gather(*sends, return_exceptions=True)
            del c, clients, sends
            holders.clear()
            server_conns.clear()
            await _until(lambda: not server._conns and not server._tasks)
            await asyncio.sleep(0.05)       # the handler tasks' last callbacks
            return freed

        tracemalloc.start()
        try:
            await churn()       # first-use and high-water allocations
            base = _counts()
            base_mem = tracemalloc.get_traced_memory()[0]
            freed = await churn()
            # The unread bytes went at the close()/abort() call itself.
            assert freed >= N * UNREAD * 0.9, f"{how}() freed only {freed} bytes at once"
            assert _counts() == base
            grown = tracemalloc.get_traced_memory()[0] - base_mem
            assert grown < SLACK, f"{grown} bytes left after {N} connections"
        finally:
            tracemalloc.stop()
        server.close()

    ringline.run(main(), config=ringline.Config(recv_accumulator_limit=4 * UNREAD))


@pytest.mark.parametrize("how", ["close", "abort"])
def test_transport_paused_with_unread_freed_without_gc(no_gc, how):
    """asyncio face: server transports whose protocol paused reading while
    the peer kept sending (bytes in flight land in the transport's pending
    queue) are freed by refcount after close()/abort()."""

    async def main():
        loop = asyncio.get_running_loop()
        transports: list[weakref.ref] = []
        got: list[int] = []

        class Server(asyncio.Protocol):
            def connection_made(self, transport):
                transports.append(weakref.ref(transport))
                self.transport = transport
                got.append(0)
                self.i = len(got) - 1

            def data_received(self, data):
                got[self.i] += len(data)
                self.transport.pause_reading()      # reads no more

        class Client(asyncio.Protocol):
            def __init__(self):
                self.lost = loop.create_future()

            def connection_lost(self, exc):
                if not self.lost.done():
                    self.lost.set_result(None)

        server = await loop.create_server(Server, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]

        async def churn() -> list[weakref.ref]:
            transports.clear()
            got.clear()
            pairs = [await loop.create_connection(Client, "127.0.0.1", port) for _ in range(N)]
            for t, _ in pairs:
                t.write(b"u" * UNREAD)
            await _until(lambda: len(got) == N and all(got))
            await asyncio.sleep(0.05)       # more lands in the kernel / pending queue
            for r in transports:
                t = r()
                assert t is not None
                getattr(t, how)()
            del t
            for c, p in pairs:
                c.abort()
                await p.lost
            del pairs, c, p
            refs = list(transports)
            transports.clear()
            await _until(lambda: all(r() is None for r in refs))
            await asyncio.sleep(0.05)
            return refs

        await churn()
        tracemalloc.start()
        try:
            base_mem = tracemalloc.get_traced_memory()[0]
            refs = await churn()
            assert all(r() is None for r in refs)
            grown = tracemalloc.get_traced_memory()[0] - base_mem
            assert grown < SLACK, f"{grown} bytes left after {N} connections"
        finally:
            tracemalloc.stop()
        server.close()

    ringline.run(main())
