"""aiohttp over TLS under wrk: ringline vs asyncio vs uvloop.

    python bench/aiohttp_tls_bench.py              # every loop, 50 connections (~1 min)
    python bench/aiohttp_tls_bench.py --quick      # smoke run
    python bench/aiohttp_tls_bench.py --loops uvloop,ringline --rounds 5 --duration 5

The server is ``bench/servers/aiohttp_tls.py --loop L``: an ``aiohttp.web``
app with one "hello" route behind an SSL context (a throw-away self-signed
EC certificate made with ``openssl req`` at start-up, as streams_bench.py
does), pinned to CPU 0; ``wrk -t1 -c50`` (keep-alive, HTTPS; wrk does not
verify the certificate) and this harness are pinned to CPU 1.  Each loop
starts a fresh server, runs ``--rounds`` wrk rounds of ``--duration``
seconds after one unmeasured ``--warmup`` round (it also covers the 50 TLS
handshakes), and keeps the best round by req/s.  Measurement and table as in
http_bench.py (whose helpers this reuses): req/s, latency percentiles, CPU
per request of the server core and of the server process, ratios against
uvloop, and the ratio against asyncio printed below the table.

Results go to ``bench/results/aiohttp-tls-<timestamp>.json``.  Needs wrk
(Debian package wrk), openssl and aiohttp.  Exit status 1 if a cell failed,
2 if wrk or openssl is missing.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import echo_bench as eb  # noqa: E402
import http_bench as hb  # noqa: E402
import streams_bench as sb  # noqa: E402

SERVER = HERE / "servers" / "aiohttp_tls.py"
RESULTS = HERE / "results"
LOOPS = ("asyncio", "uvloop", "ringline")
SCENARIO = hb.Scenario("50c", 50, "aiohttp hello over TLS, 50 keep-alive connections")


def spec_for(loop: str, cert: str, key: str) -> eb.ServerSpec:
    return eb.ServerSpec(
        loop,
        (sys.executable, str(SERVER), "--port", "0", "--loop", loop,
         "--cert", cert, "--key", key),
        SERVER,
        f"{loop} loop, aiohttp.web hello over TLS",
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--loops", help=f"comma list (default: {','.join(LOOPS)})")
    p.add_argument("--conns", type=int, default=50, help="wrk connections (default 50)")
    p.add_argument("--rounds", type=int, help="measured rounds per loop, best kept (3; quick 1)")
    p.add_argument("--duration", type=int, help="seconds per round (4; quick 1)")
    p.add_argument("--warmup", type=int, help="seconds of unmeasured warm-up (1; quick 1)")
    p.add_argument("--quick", action="store_true", help="smoke run (explicit options win)")
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--wrk-cpu", type=int, default=1)
    p.add_argument("--no-pin", action="store_true", help="do not pin anything to CPUs")
    p.add_argument("--json", type=Path, help="result file (default bench/results/aiohttp-tls-*.json)")
    args = p.parse_args(argv)
    defaults = (1, 1, 1) if args.quick else (3, 4, 1)
    for name, default in zip(("rounds", "duration", "warmup"), defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, default)
    if args.rounds < 1 or args.duration < 1 or args.warmup < 0:
        p.error("--rounds and --duration must be >= 1 (--warmup >= 0); wrk takes whole seconds")
    wrk = shutil.which("wrk")
    if wrk is None:
        print("aiohttp_tls_bench: needs wrk (`make deps` installs it)", file=sys.stderr)
        return 2
    loops = hb._select(args.loops, list(LOOPS), "loop")
    scenario = hb.Scenario(SCENARIO.key if args.conns == 50 else f"{args.conns}c", args.conns,
                           SCENARIO.description.replace("50", str(args.conns)))
    if args.no_pin:
        server_cpu = wrk_cpu = None
        pin_note = "not pinned (--no-pin)"
    else:
        allowed = os.sched_getaffinity(0)
        if args.server_cpu == args.wrk_cpu or not {args.server_cpu, args.wrk_cpu} <= allowed:
            server_cpu = wrk_cpu = None
            pin_note = f"not pinned: need two distinct CPUs out of {sorted(allowed)}"
        else:
            server_cpu, wrk_cpu = args.server_cpu, args.wrk_cpu
            pin_note = f"server on CPU {server_cpu}, wrk and harness on CPU {wrk_cpu}"
    opt = hb.Options(args.rounds, args.duration, args.warmup, 1, server_cpu, wrk_cpu)
    if wrk_cpu is not None:
        os.sched_setaffinity(0, {wrk_cpu})
    signal.signal(signal.SIGTERM, eb._interrupt)
    wrk_version = subprocess.run([wrk, "-v"], capture_output=True, text=True).stdout
    wrk_version = (wrk_version.strip().splitlines() or ["wrk"])[0]
    print(f"python {platform.python_version()} on {platform.platform()}; {pin_note}")
    print(f"{wrk_version}; rounds={opt.rounds} x {opt.duration}s (best kept), "
          f"warmup {opt.warmup}s")

    cells: list[dict] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rl-aiohttp-tls-") as tmp:
        extra = sb._prepare(SimpleNamespace(total_mb=0), Path(tmp))
        if not extra.get("cert"):
            print(f"aiohttp_tls_bench: {extra.get('cert_error')}", file=sys.stderr)
            return 2
        try:
            for loop in loops:
                cell = hb.measure_cell(wrk, loop, scenario, opt, None,
                                       spec=spec_for(loop, extra["cert"], extra["key"]),
                                       scheme="https")
                cells.append(cell)
                if cell["status"] == "ok":
                    b = cell["best"]
                    print(f"  {loop:<9}: {b['req_per_s']:>10,.0f} req/s  "
                          f"p50 {hb._fmt(b.get('p50_us'), '.1f')} us  "
                          f"proc cpu {hb._fmt(cell.get('proc_cpu_us_per_req'), '.2f')} us/req",
                          flush=True)
                else:
                    print(f"  {loop:<9}: {cell['status']}: {cell['reason']}", flush=True)
        except KeyboardInterrupt:
            print("\ninterrupted: reporting what was measured", file=sys.stderr)
        finally:
            eb.kill_all()

    hb.add_ratios(cells)
    hb.print_table(cells, [scenario], loops)
    ok = {c["loop"]: c for c in cells if c["status"] == "ok"}
    if "ringline" in ok and "asyncio" in ok:
        r = ok["ringline"]["best"]["req_per_s"] / ok["asyncio"]["best"]["req_per_s"]
        ok["ringline"]["req_per_s_vs_asyncio"] = r
        print(f"\nringline / asyncio (req/s): {r:.2f}x")
    if "ringline" in ok and "uvloop" in ok:
        print(f"ringline / uvloop  (req/s): {ok['ringline']['req_per_s_vs_uvloop']:.2f}x")

    result = {
        "benchmark": "aiohttp-tls",
        "timestamp": _dt.datetime.now().isoformat(timespec="seconds"),
        "elapsed_s": round(time.monotonic() - started, 1),
        "machine": eb._machine_info(),
        "wrk": wrk_version,
        "options": asdict(opt),
        "pinning": pin_note,
        "scenario": asdict(scenario),
        "server": str(SERVER.relative_to(eb.REPO)),
        "cells": cells,
    }
    out = args.json
    if out is None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        out = RESULTS / f"aiohttp-tls-{_dt.datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nresults: {out}  ({result['elapsed_s']:.0f} s)")
    return 1 if any(c["status"] == "failed" for c in cells) else 0


if __name__ == "__main__":
    raise SystemExit(main())
