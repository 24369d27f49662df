"""ringline.metrics: counters move with real work."""

import asyncio

import ringline
from ringline import metrics


def test_snapshot_counts_stream_work():
    async def main():
        before = metrics.snapshot()

        async def echo(conn):
            while data := await conn.recv():
                conn.send_nowait(data)

        srv = await ringline.serve(echo, "127.0.0.1", 0)
        c = await ringline.connect("127.0.0.1", srv.port)
        # A whole 64 KiB buffer's worth echoed back while the receiver waits
        # (on a fresh ring, so it starts a buffer): handed over without a
        # copy (before 6.12, 16 KiB buffers: pieces of at least half one are).
        big = bytes(range(256)) * 256
        r = asyncio.ensure_future(c.recv_exactly(len(big)))
        await asyncio.sleep(0)
        await c.send(big)
        assert await r == big
        handed = metrics.snapshot().recv_buffers_handed_out
        for _ in range(10):
            await c.send(b"x" * 100)
            assert await c.recv_exactly(100) == b"x" * 100
        during = metrics.snapshot()
        c.close()
        await c.wait_closed()
        await srv.shutdown(1)
        return before, handed, during

    before, handed, during = ringline.run(main())
    assert during.sqes > before.sqes + 20      # 10 sends each way at least
    assert during.cqes > before.cqes + 20
    assert during.enters > before.enters
    assert during.streams == 2                 # the client and the accepted one
    assert during.syscalls_per(before, 20) > 0
    assert handed > before.recv_buffers_handed_out == 0
    assert during.recv_buffers_handed_out == handed     # small ones are copied
    # Both ends are on this loop: each byte counted once sent, once received.
    echoed = 2 * (256 * 256 + 10 * 100)
    assert during.bytes_out == during.bytes_in == echoed


def test_snapshot_on_the_portable_backend_has_the_same_fields():
    """Another asyncio loop is the portable backend: the same fields, the
    ring's counters 0, ``streams`` the native API's open connections."""
    import asyncio

    import ringline

    async def main():
        empty = metrics.snapshot()
        server = await ringline.serve(lambda conn: conn.recv(), "127.0.0.1", 0)
        conn = await ringline.connect("127.0.0.1", server.port)
        await asyncio.sleep(0.05)
        during = metrics.snapshot(asyncio.get_running_loop())
        conn.close()
        await server.shutdown(1.0)
        return empty, during

    empty, during = asyncio.run(main())
    assert isinstance(during, metrics.LoopStatistics)
    assert empty.streams == 0 and during.streams == 2
    assert during.sqes == during.enters == during.iterations == during.send_pool_free == 0
