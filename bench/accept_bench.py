"""Accept cost of the native server, in CPU time per accepted connection.

A burst of N loopback connections is queued in the listener's backlog while
the loop is busy (connect(2) on loopback completes the handshake without the
server), then the clock starts and the loop accepts them all: multishot
accept, the Connection, its receive, the handler task up to its first
await.  The process CPU time (user+sys; client side is idle by then) over N
is the cost of one accept, measured for fixed descriptors (accept into the
fixed table + FIXED_FD_INSTALL for the addresses) and for plain fds.

    PYTHONPATH=src python bench/accept_bench.py [--conns 1000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import time

import ringline


def one_round(direct: bool, n: int) -> tuple[float, float]:
    started = 0
    addrs_ok = True

    async def handler(conn: ringline.Connection) -> None:
        nonlocal started, addrs_ok
        started += 1
        addrs_ok &= conn.peer_addr is not None
        await conn.recv()

    async def main() -> tuple[float, float]:
        server = await ringline.serve(handler, "127.0.0.1", 0,
                                      config=ringline.Config(backlog=n + 16))
        clients = []
        try:
            # No await in between: every handshake lands in the backlog.
            for _ in range(n):
                s = socket.socket()
                s.setblocking(False)
                try:
                    s.connect(("127.0.0.1", server.port))
                except BlockingIOError:
                    pass
                clients.append(s)
            time.sleep(0.05)
            t0, c0 = time.perf_counter(), time.process_time()
            while started < n:
                await asyncio.sleep(0)
            t1, c1 = time.perf_counter(), time.process_time()
            assert addrs_ok
            return (c1 - c0) / n * 1e6, (t1 - t0) / n * 1e6
        finally:
            for s in clients:
                s.close()
            await server.shutdown(2.0)

    return ringline.run(main(), config=ringline.Config(max_connections=n + 16,
                                                           _fixed_files=direct))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--conns", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    for direct in (True, False):
        cpu, wall = zip(*(one_round(direct, args.conns) for _ in range(args.rounds)), strict=True)
        print(f"{'direct' if direct else 'plain':7s} accept: best {min(cpu):5.1f} us CPU, "
              f"median {statistics.median(cpu):5.1f} us CPU, best {min(wall):5.1f} us wall "
              f"per connection ({args.conns} queued, {args.rounds} rounds)")


if __name__ == "__main__":
    main()
