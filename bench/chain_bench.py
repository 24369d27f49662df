"""send_chain against send_parts against separate sends (native API).

    python bench/chain_bench.py [--seconds S] [--rounds R] [--unix] [--quick]

One ringline connection sends messages of several parts to a sink in a
child process (a plain blocking socket that reads and discards, so its CPU
is not ours).  Per shape and mode it reports the sender's CPU time per
message (user + system, getrusage of this process), messages per second,
and SQEs and io_uring_enter calls per message (the loop's counters), the
median of ``--rounds`` runs of ``--seconds`` each.  Not part of
``make bench``'s headline; run by hand.

Modes (the same bytes on the wire):
  separate  ``send_nowait`` for every part but the last, ``await send(last)``
  parts     ``await send_parts(parts)`` (one SENDMSG where they fit)
  chain     ``await send_chain(parts)`` (one linked SQE per part, no copy)

Each message is awaited before the next is sent (request style: the
caller may reuse its buffers after the await).  Shapes: header + body +
trailer with a 64 KiB bytearray body; 8 parts of 4 KiB bytes; 16 small
parts of 64 B bytes; 2 parts of 1 MiB bytearray.  Zero-copy is off to the
loopback peer (the default), so the chain's large parts are copying SENDs
too; ``--zc`` turns it on (``_zc_to_local_peers``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import ringline
from ringline import Config

SINK = r"""
import socket, sys
fam = socket.AF_UNIX if sys.argv[1] == "unix" else socket.AF_INET
ls = socket.socket(fam, socket.SOCK_STREAM)
ls.bind(sys.argv[2] if fam == socket.AF_UNIX else ("127.0.0.1", 0))
ls.listen(1)
print(ls.getsockname() if fam == socket.AF_UNIX else ls.getsockname()[1], flush=True)
c, _ = ls.accept()
buf = bytearray(1 << 20)
while c.recv_into(buf):
    pass
"""

SHAPES = {
    "hdr+64K+trl": lambda: [b"H" * 16, bytearray(os.urandom(65536)), b"T" * 16],
    "8x4K": lambda: [os.urandom(4096) for _ in range(8)],
    "16x64B": lambda: [os.urandom(64) for _ in range(16)],
    "2x1M": lambda: [bytearray(os.urandom(1 << 20)) for _ in range(2)],
}


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def one_run(conn: ringline.Connection, mode: str, parts: list, seconds: float) -> dict:
    loop = asyncio.get_running_loop()
    st0 = loop.statistics()
    c0, t0 = cpu(), time.perf_counter()
    n = 0
    head, last = parts[:-1], parts[-1]
    while True:
        for _ in range(16):
            if mode == "separate":
                for p in head:
                    conn.send_nowait(p)
                await conn.send(last)
            elif mode == "parts":
                await conn.send_parts(parts)
            else:
                await conn.send_chain(parts)
        n += 16
        if time.perf_counter() - t0 >= seconds:
            break
    c1, t1 = cpu(), time.perf_counter()
    st1 = loop.statistics()
    return {"us_cpu_per_msg": (c1 - c0) / n * 1e6, "msgs_per_s": n / (t1 - t0),
            "sqes_per_msg": (st1["sqes"] - st0["sqes"]) / n,
            "enters_per_msg": (st1["enters"] - st0["enters"]) / n}


async def bench(args: argparse.Namespace) -> dict:
    tmp = tempfile.mkdtemp()
    results: dict = {}
    for shape, make in SHAPES.items():
        parts = make()
        results[shape] = {}
        for mode in ("separate", "parts", "chain"):
            path = os.path.join(tmp, f"sink-{shape}-{mode}.sock")
            sink = subprocess.Popen([sys.executable, "-c", SINK, "unix" if args.unix else "tcp",
                                     path], stdout=subprocess.PIPE, text=True)
            where = sink.stdout.readline().strip()
            try:
                conn = await (ringline.connect_unix(path) if args.unix
                              else ringline.connect("127.0.0.1", int(where)))
                await one_run(conn, mode, parts, min(args.seconds, 0.3))     # warm-up
                runs = [await one_run(conn, mode, parts, args.seconds) for _ in range(args.rounds)]
                conn.close()
                await conn.wait_closed()
            finally:
                sink.wait(10)
            results[shape][mode] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--unix", action="store_true", help="a Unix socket instead of loopback TCP")
    ap.add_argument("--zc", action="store_true", help="allow SEND_ZC to the local peer")
    ap.add_argument("--quick", action="store_true", help="1 round of 0.3 s")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.rounds = 0.3, 1
    res = ringline.run(bench(args), config=Config(_zc_to_local_peers=args.zc))
    print(f"{'shape':<12} {'mode':<9} {'us CPU/msg':>10} {'msgs/s':>9} {'SQEs/msg':>8} "
          f"{'enters/msg':>10} {'CPU vs separate':>15}")
    for shape, modes in res.items():
        base = modes["separate"]["us_cpu_per_msg"]
        for mode, r in modes.items():
            print(f"{shape:<12} {mode:<9} {r['us_cpu_per_msg']:>10.1f} {r['msgs_per_s']:>9.0f} "
                  f"{r['sqes_per_msg']:>8.2f} {r['enters_per_msg']:>10.2f} "
                  f"{r['us_cpu_per_msg'] / base:>14.2f}x")
    os.makedirs(os.path.join(os.path.dirname(__file__), "results"), exist_ok=True)
    out = os.path.join(os.path.dirname(__file__), "results", "chain_bench.json")
    with open(out, "w") as f:
        json.dump({"args": vars(args), "results": res}, f, indent=1)


if __name__ == "__main__":
    main()
