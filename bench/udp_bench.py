"""UDP echo benchmark: ringline's native UDP vs uvloop and asyncio
DatagramProtocols vs a C io_uring UDP echo server.

    python bench/udp_bench.py                 # every server, 64 B and 1,400 B, 50 peers
    python bench/udp_bench.py --quick         # smoke run (1 round of 1 s)
    python bench/udp_bench.py --servers c,ringline,uvloop --sizes 64
    python bench/udp_bench.py --instr         # + callgrind instructions per datagram

Method
------
* ``bench/c/build/udp_loadgen`` (C, epoll, one thread, spinning) keeps one
  datagram in flight on each of ``--peers`` connected sockets and checks
  every echo; it is pinned to CPU 1, the server to CPU 0.
* Each server x size cell starts a fresh server (which binds port 0 and
  prints ``READY <port>``) and runs ``--rounds`` rounds of ``--warmup`` +
  ``--duration`` seconds; the best round by datagrams/s is kept, and the
  servers take turns round by round (round-robin) so that a burst of
  background load hits them all alike.
* ``cpu us/dgram``: the server's own CPU time (all its threads,
  ``/proc/PID/task/*/schedstat``) over the measured window, divided by the
  datagrams echoed in it.  On a shared machine it is steadier than the rate.
* ``--instr``: instructions per datagram under callgrind, start-up
  cancelled: (total of a long run - total of a short run) / (datagrams of
  the long run - datagrams of the short run).  Independent of other load.
* Ratios are to ``uvloop`` (DatagramProtocol) and to ``c``.

Servers: ``c`` (bench/c/udp_echo_uring.c), ``ringline`` (``ringline.bind_udp``:
``recv_batch`` + queued ``send_to``), ``uvloop`` and ``asyncio`` (a
DatagramProtocol whose ``datagram_received`` calls ``transport.sendto``),
``ringline-aio`` (the same DatagramProtocol on ringline's loop).

Results go to ``bench/results/udp-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import glob
import json
import os
import platform
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BUILD = HERE / "c" / "build"
RESULTS = HERE / "results"
SERVERS = ("c", "ringline", "uvloop", "asyncio", "ringline-aio")
REFERENCE = "uvloop"
HOST = "127.0.0.1"


# ---------------------------------------------------------------------------
# the Python servers (this file run with --serve KIND)
# ---------------------------------------------------------------------------


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport):  # type: ignore[no-untyped-def]
        self.transport = transport

    def datagram_received(self, data, addr):  # type: ignore[no-untyped-def]
        self.transport.sendto(data, addr)


async def _serve_protocol(port: int) -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(_Echo, local_addr=(HOST, port))
    print(f"READY {transport.get_extra_info('sockname')[1]}", flush=True)
    await asyncio.Event().wait()


async def _serve_ringline(port: int) -> None:
    import ringline

    sock = await ringline.bind_udp(HOST, port)
    print(f"READY {sock.local_addr[1]}", flush=True)
    while True:
        for data, addr in await sock.recv_batch(64):
            sock.send_to(data, addr)


def serve(kind: str, port: int) -> None:
    if kind == "ringline":
        import ringline
        ringline.run(_serve_ringline(port), backend="uring")
    elif kind == "ringline-aio":
        import ringline
        ringline.run(_serve_protocol(port), backend="uring")
    elif kind == "uvloop":
        import uvloop
        loop = uvloop.new_event_loop()
        loop.run_until_complete(_serve_protocol(port))
    elif kind == "asyncio":
        asyncio.run(_serve_protocol(port))
    else:
        raise SystemExit(f"unknown server {kind!r}")


# ---------------------------------------------------------------------------
# the harness
# ---------------------------------------------------------------------------


def _server_cmd(kind: str, port: int = 0) -> list[str]:
    if kind == "c":
        return [str(BUILD / "udp_echo_uring"), str(port), HOST]
    return [sys.executable, str(Path(__file__).resolve()), "--serve", kind, "--port", str(port)]


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p))


def _start(kind: str, cpu: int | None) -> tuple[subprocess.Popen[str], int]:
    cmd = _server_cmd(kind)
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                         env=_env(), cwd=REPO)
    assert p.stdout is not None
    line = p.stdout.readline()
    if not line.startswith("READY"):
        p.kill()
        p.wait()
        raise RuntimeError(f"{kind}: no READY line ({line!r})")
    return p, int(line.split()[1])


def _load(port: int, pid: int, peers: int, size: int, warmup: float, duration: float,
          cpu: int | None) -> dict[str, float]:
    cmd = [str(BUILD / "udp_loadgen"), "--port", str(port), "--peers", str(peers),
           "--size", str(size), "--warmup", str(warmup), "--duration", str(duration),
           "--server-pid", str(pid)]
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=warmup + duration + 30)
    if out.returncode != 0:
        raise RuntimeError(f"udp_loadgen failed: {out.stderr.strip()}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(servers: list[str], sizes: list[int], peers: int, rounds: int, warmup: float,
            duration: float, pin: bool) -> dict[str, dict[int, dict[str, float]]]:
    best: dict[str, dict[int, dict[str, float]]] = {s: {} for s in servers}
    srv_cpu, lg_cpu = (0, 1) if pin else (None, None)
    for size in sizes:
        for r in range(rounds):
            order = servers[r % len(servers):] + servers[:r % len(servers)]
            for kind in order:
                p, port = _start(kind, srv_cpu)
                try:
                    res = _load(port, p.pid, peers, size, warmup, duration, lg_cpu)
                finally:
                    p.kill()
                    p.wait()
                res["cpu_us"] = (res["server_cpu_s"] * 1e6 / res["total_requests"]
                                 if res["total_requests"] else float("nan"))
                cur = best[kind].get(size)
                if cur is None or res["rps"] > cur["rps"]:
                    res["best_cpu_us"] = min(res["cpu_us"], cur["best_cpu_us"]) if cur else res["cpu_us"]
                    best[kind][size] = res
                else:
                    cur["best_cpu_us"] = min(cur["best_cpu_us"], res["cpu_us"])
                print(f"  round {r + 1}: {kind:13s} {size:5d} B  {res['rps']:10.0f} dgram/s  "
                      f"{res['cpu_us']:6.2f} cpu us/dgram  lost {res['lost']:.0f}", flush=True)
    return best


def instructions(kind: str, size: int, peers: int) -> float | None:
    """Callgrind instructions per datagram (long run minus short run)."""
    def one(duration: float) -> tuple[int, int]:
        out = f"/tmp/cg-udp.{os.getpid()}.{random.randint(0, 1 << 30)}"
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
               *_server_cmd(kind)]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             env=_env(), cwd=REPO)
        assert p.stdout is not None
        line = p.stdout.readline()
        if not line.startswith("READY"):
            p.kill()
            p.wait()
            raise RuntimeError(f"{kind} under callgrind: {line!r}")
        port = int(line.split()[1])
        lg = subprocess.run([str(BUILD / "udp_loadgen"), "--port", str(port), "--peers",
                             str(peers), "--size", str(size), "--warmup", "0",
                             "--duration", str(duration), "--no-spin"],
                            capture_output=True, text=True, timeout=duration + 60)
        # callgrind_control is served when the program runs: a server blocked
        # in io_uring_enter/epoll_wait is woken by a few datagrams.
        ctl = subprocess.Popen(["callgrind_control", "-d", str(p.pid)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as poke:
            while ctl.poll() is None:
                poke.sendto(b"x", (HOST, port))
                time.sleep(0.2)
        p.kill()
        p.wait()
        dumps = sorted(glob.glob(out + "*"), key=os.path.getmtime)
        ann = subprocess.run(["callgrind_annotate", dumps[-1]], capture_output=True,
                             text=True).stdout
        total = next(int(row.split()[0].replace(",", "")) for row in ann.splitlines()
                     if "PROGRAM TOTALS" in row)
        for f in dumps:
            os.unlink(f)
        return total, int(json.loads(lg.stdout.strip().splitlines()[-1])["total_requests"])

    try:
        t1, r1 = one(2)
        t2, r2 = one(6)
    except (OSError, RuntimeError, StopIteration, IndexError, ValueError,
            subprocess.SubprocessError) as exc:
        print(f"  {kind}: no instruction count ({exc})", flush=True)
        return None
    return (t2 - t1) / (r2 - r1) if r2 > r1 else None


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:5.2f}x" if a and b else "   - "


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--servers", default=",".join(SERVERS))
    ap.add_argument("--sizes", default="64,1400")
    ap.add_argument("--peers", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--duration", type=float, default=2.0)
    ap.add_argument("--quick", action="store_true", help="1 round of 1 s")
    ap.add_argument("--no-pin", action="store_true", help="do not pin server and load")
    ap.add_argument("--instr", action="store_true", help="also callgrind instructions/datagram")
    ap.add_argument("--json", default=None, help="result file (default bench/results/udp-*.json)")
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return 0
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 1.0, 0.3
    if not (BUILD / "udp_loadgen").exists() or not (BUILD / "udp_echo_uring").exists():
        subprocess.run(["make", "-C", str(HERE / "c")], check=True)
    servers = [s for s in args.servers.split(",") if s]
    if "uvloop" in servers:
        try:
            import uvloop  # noqa: F401
        except ImportError:
            print("uvloop not installed: skipped", flush=True)
            servers.remove("uvloop")
    sizes = [int(x) for x in args.sizes.split(",")]
    print(f"UDP echo, {args.peers} peers, best of {args.rounds} x {args.duration:g} s; "
          f"server on CPU 0, load on CPU 1" if not args.no_pin else "", flush=True)
    best = measure(servers, sizes, args.peers, args.rounds, args.warmup, args.duration,
                   not args.no_pin)
    instr: dict[str, dict[int, float | None]] = {}
    if args.instr:
        for kind in servers:
            instr[kind] = {size: instructions(kind, size, args.peers) for size in sizes}
    print()
    head = (f"{'server':13s} {'size':>6s} {'dgram/s':>10s} {'x uvloop':>8s} {'x C':>7s} "
            f"{'cpu us/dg':>9s} {'cpu x uv':>8s}")
    if instr:
        head += f" {'instr/dg':>9s} {'instr x uv':>10s}"
    print(head)
    for size in sizes:
        for kind in servers:
            res = best[kind].get(size)
            if res is None:
                continue
            ref = best.get(REFERENCE, {}).get(size)
            c = best.get("c", {}).get(size)
            row = (f"{kind:13s} {size:6d} {res['rps']:10.0f} "
                   f"{_ratio(res['rps'], ref and ref['rps']):>8s} "
                   f"{_ratio(res['rps'], c and c['rps']):>7s} "
                   f"{res['best_cpu_us']:9.2f} "
                   f"{_ratio(ref and ref['best_cpu_us'], res['best_cpu_us']):>8s}")
            if instr:
                mine = instr.get(kind, {}).get(size)
                refi = instr.get(REFERENCE, {}).get(size)
                row += f" {mine or 0:9.0f} {_ratio(refi, mine):>10s}"
            print(row)
    print("\n(cpu x uv and instr x uv: uvloop's cost / this server's; > 1 is cheaper)")
    RESULTS.mkdir(exist_ok=True)
    path = Path(args.json) if args.json else RESULTS / (
        f"udp-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json")
    path.write_text(json.dumps({
        "when": time.time(), "host": platform.node(), "kernel": platform.release(),
        "peers": args.peers, "rounds": args.rounds, "duration": args.duration,
        "best": {k: {str(s): v for s, v in d.items()} for k, d in best.items()},
        "instr": {k: {str(s): v for s, v in d.items()} for k, d in instr.items()},
    }, indent=2))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
