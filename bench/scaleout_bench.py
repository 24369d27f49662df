"""Scale-out: server CPU per request with 1 and 2 workers of `python -m ringline serve`.

    python bench/scaleout_bench.py [--duration 5] [--rounds 3] [--conns 50]

Starts the serve command with a native echo handler (bench/servers/
native_app.py) and N workers, drives it with bench/c/build/loadgen, and
reports the workers' CPU time (utime + stime from /proc, summed over the
workers) per request: on a machine where the load generator needs a core of
its own, requests per second say little about how the server scales, CPU
per request does (flat = linear scaling).  Best of ``--rounds``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
LOADGEN = os.path.join(HERE, "c", "build", "loadgen")
TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK      # utime + stime


def one_round(workers: int, duration: float, conns: int) -> tuple[float, float]:
    """(server CPU microseconds per request, requests per second)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.join(HERE, "servers"), os.path.join(ROOT, "src")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "ringline", "serve", "native_app:echo", "--bind",
         "127.0.0.1:0", "--workers", str(workers), "--pin"],
        env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    pids, port = [], None
    assert proc.stderr is not None
    for line in proc.stderr:
        m = re.search(r"worker \d+ ready \(pid (\d+)", line)
        if m:
            pids.append(int(m.group(1)))
        m = re.search(r"serving .* on .*:(\d+) with", line)
        if m:
            port = int(m.group(1))
            break
    assert port is not None and len(pids) == workers, "serve did not start"
    try:
        before = sum(_cpu_seconds(p) for p in pids)
        lg = subprocess.run([LOADGEN, "--port", str(port), "--conns", str(conns), "--size", "64",
                             "--depth", "1", "--duration", str(duration), "--warmup", "0"],
                            capture_output=True, text=True, check=True)
        after = sum(_cpu_seconds(p) for p in pids)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    result = json.loads(lg.stdout.strip().splitlines()[-1])
    requests = result["total_requests"]
    return (after - before) * 1e6 / requests, requests / duration


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--conns", type=int, default=50)
    args = ap.parse_args()
    if not os.path.exists(LOADGEN):
        subprocess.run(["make", "-s", "-C", os.path.join(HERE, "c")], check=True)
    rows = {}
    for workers in (1, 2):
        best = min(one_round(workers, args.duration, args.conns) for _ in range(args.rounds))
        rows[workers] = best
        print(f"workers={workers}: {best[0]:.2f} us CPU/request, {best[1]:,.0f} req/s "
              f"(best of {args.rounds}, {args.conns} connections, 64 B echo)", flush=True)
    ratio = rows[2][0] / rows[1][0]
    print(f"CPU per request, 2 workers / 1 worker: {ratio:.2f} (1.00 = linear scaling)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
