"""Accept cost of the native server: server CPU time per accepted connection.

A ringline server (one process, pinned) runs a handler that answers one byte
and returns; client threads in this process connect, exchange the byte and
close, as fast as they can.  Reported: connections/s and the server's CPU
(user+sys, from /proc) per connection, for direct descriptors (multishot
accept into the fixed table + FIXED_FD_INSTALL for the addresses) and for
plain fds (the fallback).

    PYTHONPATH=src python bench/accept_bench.py [--seconds 3] [--threads 4]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import threading
import time


def _server(direct: bool, port_q: mp.Queue, stop: mp.Event, cpu: int | None) -> None:
    import asyncio

    import ringline
    from ringline import _stream

    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    _stream.DIRECT_FDS = direct

    async def handler(conn: ringline.Connection) -> None:
        if await conn.recv(1):
            conn.send_nowait(b"y")

    async def main() -> None:
        server = await ringline.serve(handler, "127.0.0.1", 0)
        port_q.put((server.port, _stream.context_for(asyncio.get_running_loop()).direct))
        while not stop.is_set():
            await asyncio.sleep(0.05)
        await server.shutdown(1.0)

    ringline.run(main())


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(direct: bool, seconds: float, threads: int, server_cpu: int | None) -> dict[str, float]:
    ctx = mp.get_context("fork")
    q: mp.Queue = ctx.Queue()
    stop = ctx.Event()
    p = ctx.Process(target=_server, args=(direct, q, stop, server_cpu))
    p.start()
    port, mode = q.get(timeout=10)
    count = [0] * threads
    done = threading.Event()

    def client(i: int) -> None:
        while not done.is_set():
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"x")
                s.recv(1)
            count[i] += 1

    ts = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    time.sleep(0.5)                       # warm-up
    c0, cpu0, t0 = sum(count), _cpu_seconds(p.pid), time.monotonic()  # type: ignore[arg-type]
    time.sleep(seconds)
    c1, cpu1, t1 = sum(count), _cpu_seconds(p.pid), time.monotonic()  # type: ignore[arg-type]
    done.set()
    for t in ts:
        t.join()
    stop.set()
    p.join(10)
    n = c1 - c0
    return {"mode": mode, "conns_per_s": n / (t1 - t0), "server_us_per_conn": (cpu1 - cpu0) / n * 1e6}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--server-cpu", type=int, default=0)
    args = ap.parse_args()
    cpu = args.server_cpu if args.server_cpu >= 0 else None
    for direct in (True, False):
        best = None
        for _ in range(args.rounds):
            r = run(direct, args.seconds, args.threads, cpu)
            if best is None or r["server_us_per_conn"] < best["server_us_per_conn"]:
                best = r
        assert best is not None
        name = "direct" if best["mode"] == 1 else "plain"
        print(f"{name:7s} {best['conns_per_s']:9.0f} conn/s   "
              f"{best['server_us_per_conn']:6.1f} us server CPU per connection")


if __name__ == "__main__":
    main()
