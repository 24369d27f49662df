"""A closed loop that ran native connections is freed by its last
reference: no reference cycle through the loop's network state (buffer
rings, streams, the UDP socket's ring) is left for the collector."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

import ringline

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
    udp = await ringline.bind_udp("127.0.0.1", 0)
    udp.send_to(b"x", udp.local_addr)
    assert (await udp.recv_from())[0] == b"x"
    udp.close()
    await asyncio.sleep(0.01)


def _run_one() -> weakref.ref[asyncio.AbstractEventLoop]:
    loop = ringline.new_event_loop()
    loop.run_until_complete(_exchange())
    loop.close()
    return weakref.ref(loop)


def test_closed_loop_with_native_connections_is_freed_without_the_collector() -> None:
    _run_one()
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        ref = _run_one()
        alive = ref() is not None
        gc.collect()
        # Only ringline's kinds: the collection also finds whatever earlier
        # tests left that became unreachable meanwhile.
        garbage = sorted({type(o).__name__ for o in gc.garbage
                          if type(o).__module__.startswith("ringline")})
    finally:
        gc.garbage.clear()
        gc.set_debug(0)
        gc.enable()
    assert not alive, f"closed loop kept alive by a cycle of {garbage}"
    assert garbage == []

