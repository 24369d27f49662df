"""A closed loop that ran native connections is freed by its last
reference: no reference cycle through the loop's network state (buffer
rings, streams, the UDP socket's ring) or a closed server (its accept,
its handlers' shared done-callback) is left for the collector."""

from __future__ import annotations

import asyncio

import pytest

import ringline
from tests.support.lifetime import freed_without_the_collector

pytestmark = pytest.mark.timeout(30)


async def _exchange() -> None:
    async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(await r.read(100))
        await w.drain()
        w.close()

    srv = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    conn = await ringline.connect("127.0.0.1", port)
    await conn.send(b"hello")
    assert await conn.recv() == b"hello"
    conn.close()
    srv.close()
    await srv.wait_closed()

    async def native_echo(c: ringline.Connection) -> None:
        await c.send(await c.recv())

    server = await ringline.serve(native_echo, "127.0.0.1", 0)
    r, w = await asyncio.open_connection("127.0.0.1", server.port)
    w.write(b"again")
    assert await r.read(100) == b"again"
    w.close()
    server.close()
    await server.wait_closed()
    udp = await ringline.bind_udp("127.0.0.1", 0)
    udp.send_to(b"x", udp.local_addr)
    assert (await udp.recv_from())[0] == b"x"
    udp.close()
    await asyncio.sleep(0.01)


def test_closed_loop_with_native_connections_is_freed_without_the_collector() -> None:
    def make_and_close() -> asyncio.AbstractEventLoop:
        loop = ringline.new_event_loop()
        loop.run_until_complete(_exchange())
        loop.close()
        return loop

    alive, garbage = freed_without_the_collector(make_and_close)
    assert not alive, f"closed loop kept alive by a cycle of {garbage}"
    assert garbage == []
