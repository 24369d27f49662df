"""Closed connections are freed by reference counting alone (issue 20).

Each test runs with the cycle collector disabled: a connection, its stream,
ops, task and buffers must be gone as soon as the close completes, and the
traced memory back at its baseline.  Native Connections take no weak
references, so they are counted among the objects the GC tracks (counting
does not collect); transports are watched through weakrefs.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
import weakref

import pytest

import ringline
from ringline.native.connection import Connection

N = 200
SLACK = 96 * 1024       # baseline noise: free lists, dict resizes (a leak here is >= 200 KiB)


@pytest.fixture
def no_gc():
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _live(kind: type) -> int:
    return sum(1 for o in gc.get_objects() if type(o) is kind)


async def _until(pred, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("how", ["close", "abort"])
def test_native_connections_freed_without_gc(no_gc, how):
    async def main():
        handlers = 0

        async def handler(conn):
            nonlocal handlers
            handlers += 1
            try:
                while await conn.recv():
                    pass
            except ConnectionError:
                pass        # the client's abort: a reset

        server = await ringline.serve(handler, "127.0.0.1", 0)

        async def churn(n: int) -> None:
            nonlocal handlers
            handlers = 0
            conns = [await ringline.connect("127.0.0.1", server.port) for _ in range(n)]
            await _until(lambda: handlers == n)
            for c in conns:
                c.send_nowait(b"x" * 100)      # a send: the SendOp exists too
                getattr(c, how)()
            for c in conns:
                await c.wait_closed()
            del c, conns
            await _until(lambda: not server._conns and not server._tasks)
            await asyncio.sleep(0.05)       # the server tasks' last callbacks

        await churn(N)          # first-use and high-water allocations (slot table, dicts)
        tracemalloc.start()
        try:
            base_objs = _live(Connection)
            base_mem = tracemalloc.get_traced_memory()[0]
            await churn(N)
            assert _live(Connection) == base_objs
            grown = tracemalloc.get_traced_memory()[0] - base_mem
            assert grown < SLACK, f"{grown} bytes left after {N} connections"
        finally:
            tracemalloc.stop()
        server.close()

    ringline.run(main())


@pytest.mark.parametrize("how", ["close", "abort"])
def test_transports_freed_without_gc(no_gc, how):
    async def main():
        loop = asyncio.get_running_loop()
        server_side: list[weakref.ref] = []

        class Server(asyncio.Protocol):
            def connection_made(self, transport):
                server_side.append(weakref.ref(transport))
                self.transport = transport

            def eof_received(self):
                return False

        class Client(asyncio.Protocol):
            def __init__(self):
                self.lost = loop.create_future()

            def connection_lost(self, exc):
                self.lost.set_result(None)

        server = await loop.create_server(Server, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]

        async def churn(n: int) -> list[weakref.ref]:
            server_side.clear()
            pairs = [await loop.create_connection(Client, "127.0.0.1", port) for _ in range(n)]
            await _until(lambda: len(server_side) == n)
            refs = [weakref.ref(t) for t, _ in pairs]
            for t, _ in pairs:
                t.write(b"y" * 100)
                getattr(t, how)()
            for _, p in pairs:
                await p.lost
            del pairs, t, p
            refs += server_side
            await _until(lambda: all(r() is None for r in server_side))
            await asyncio.sleep(0.05)
            return refs

        await churn(N)
        tracemalloc.start()
        try:
            base_mem = tracemalloc.get_traced_memory()[0]
            refs = await churn(N)
            left = [r() for r in refs if r() is not None]
            assert not left, f"{len(left)} transports still alive, e.g. {left[0]!r}"
            grown = tracemalloc.get_traced_memory()[0] - base_mem
            assert grown < SLACK, f"{grown} bytes left after {N} connections"
        finally:
            tracemalloc.stop()
        server.close()

    ringline.run(main())


def test_abort_drops_unread_buffer_at_once(no_gc):
    size = 16 * 1024 * 1024

    async def main():
        loop = asyncio.get_running_loop()
        got = loop.create_future()
        hold = asyncio.Event()

        async def handler(conn):
            got.set_result(conn)
            await hold.wait()           # never reads

        server = await ringline.serve(handler, "127.0.0.1", 0)
        client = await ringline.connect("127.0.0.1", server.port)
        conn = await got
        tracemalloc.start()
        try:
            sending = client.send(b"z" * size)
            await _until(lambda: conn.buffered >= size, 30)
            before = tracemalloc.get_traced_memory()[0]
            conn.abort()
            after = tracemalloc.get_traced_memory()[0]
            assert conn.buffered == 0
            assert before - after >= size, f"abort freed only {before - after} bytes"
        finally:
            tracemalloc.stop()
        hold.set()
        await sending
        client.close()
        await client.wait_closed()
        server.close()

    ringline.run(main(), config=ringline.Config(recv_accumulator_limit=32 * 1024 * 1024))
