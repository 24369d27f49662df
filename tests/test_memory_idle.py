"""What an idle native connection holds (issue 20: at most 1.5 KiB each).

``bench/idle_bench.py`` measures the server process's RSS per idle
connection (10,000 of them, clients in other processes).  This is the
suite's guard against a regression: the Python objects one idle native
connection keeps (traced by tracemalloc, in one process), and which ones.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import socket
import tracemalloc

import ringline

N = 1000
LIMIT = 1536        # bytes per idle native connection (issue 20)

# The GC-tracked objects one idle native connection may own, one each: its
# Connection and receive op, the handler's Task (its own ready-queue step),
# coroutine, Context, pending receive, and asyncio's weak reference to the
# task (all_tasks()).  A tuple, dict, list, Future or step object per
# connection here is a regression.
EXPECTED = {"Connection", "RecvOp", "Task", "coroutine", "Context", "_Receive",
            "ReferenceType"}


def _census() -> collections.Counter[str]:
    return collections.Counter(type(o).__name__ for o in gc.get_objects())


def test_idle_native_connection_bytes_and_objects():
    async def main():
        loop = asyncio.get_running_loop()
        parked = 0

        async def handler(conn):
            nonlocal parked
            parked += 1
            try:
                while await conn.recv():
                    pass
            finally:
                parked -= 1

        server = await ringline.serve(handler, "127.0.0.1", 0)
        addr = ("127.0.0.1", server.port)

        async def until(pred) -> None:
            end = loop.time() + 30
            while not pred():
                assert loop.time() < end, f"{parked} of {N} handlers parked"
                await asyncio.sleep(0.01)

        async def open_all(socks: list[socket.socket]) -> None:
            for s in socks:
                await loop.sock_connect(s, addr)

        # Warm-up: first-use allocations (slot table, dict tables, free lists).
        warm = [socket.socket() for _ in range(N)]
        for s in warm:
            s.setblocking(False)
        await open_all(warm)
        await until(lambda: parked == N)
        for s in warm:
            s.close()
        del warm
        await until(lambda: parked == 0 and not server._conns)
        await asyncio.sleep(0.05)

        socks = [socket.socket() for _ in range(N)]     # made before the baseline
        for s in socks:
            s.setblocking(False)
        gc.collect()
        tracemalloc.start()
        try:
            before = _census()
            base = tracemalloc.get_traced_memory()[0]
            await open_all(socks)
            await until(lambda: parked == N)
            await asyncio.sleep(0.1)
            per_conn = (tracemalloc.get_traced_memory()[0] - base) / N
            grown = _census() - before
        finally:
            tracemalloc.stop()
        for s in socks:
            s.close()
        await until(lambda: parked == 0)
        server.close()
        return per_conn, grown

    per_conn, grown = ringline.run(main())
    many = {k: v / N for k, v in grown.items() if v >= N // 2}
    assert set(many) == EXPECTED, f"objects per idle connection: {many}"
    assert all(0.9 <= v <= 1.1 for v in many.values()), many
    assert per_conn <= LIMIT, f"{per_conn:.0f} traced bytes per idle native connection"
