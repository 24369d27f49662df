"""`make bench`: the headline benchmark, ringline next to asyncio and uvloop.

    python bench/run.py            # everything: TCP echo, tasks, streams, HTTP (and aiohttp
                                   # over TLS) under wrk, files,
                                   # loop core, bytes per idle connection
    python bench/run.py --echo     # only the headline TCP echo table (bench/echo_bench.py)
    python bench/run.py --udp      # only the UDP echo table (bench/udp_bench.py)
    python bench/run.py --tasks    # only task-heavy asyncio code (bench/tasks_bench.py)
    python bench/run.py --streams  # only streams bulk / TLS (bench/streams_bench.py)
    python bench/run.py --quick    # a smoke run of the same
    python bench/targets.py        # the issue targets against the newest results
    python bench/run.py --tls-instr  # only TLS instruction counts under callgrind (slow)
    python bench/run.py --pyperformance  # pyperformance's asyncio benchmarks, unchanged
                                         # (bench/pyperformance_bench.py --fast)
    python bench/run.py --native-tls # only native TLS vs uvloop/asyncio TLS
                                     # (bench/native_tls_bench.py; --tls-instr adds its
                                     # callgrind counts)

Each benchmark prints its own table of ratios and writes JSON under
bench/results/.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(script: str, *args: str) -> int:
    cmd = [sys.executable, str(HERE / script), *args]
    print(f"\n=== {' '.join(cmd[1:])} ===", flush=True)
    return subprocess.call(cmd)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--echo", action="store_true", help="only the TCP echo benchmark")
    parser.add_argument("--udp", action="store_true", help="only the UDP echo benchmark")
    parser.add_argument("--tasks", action="store_true", help="only the task benchmark")
    parser.add_argument("--streams", action="store_true", help="only the streams benchmark")
    parser.add_argument("--all", action="store_true", help=argparse.SUPPRESS)  # the default now
    parser.add_argument("--quick", action="store_true", help="smoke run")
    parser.add_argument("--tls-instr", action="store_true",
                        help="only TLS instructions per request / MB under callgrind")
    parser.add_argument("--native-tls", action="store_true",
                        help="only the native TLS benchmark (bench/native_tls_bench.py)")
    parser.add_argument("--pyperformance", action="store_true",
                        help="only pyperformance's asyncio benchmarks (pyperformance_bench.py)")
    args = parser.parse_args()
    quick = ["--quick"] if args.quick else []
    if args.pyperformance:
        return run("pyperformance_bench.py", *(quick or ["--fast", "--rounds", "1"]))
    if args.native_tls:
        return run("native_tls_bench.py", *quick)
    if args.tls_instr:
        return run("tls_instr.py") | run("native_tls_bench.py", "--instr")
    if args.udp:
        return run("udp_bench.py", *quick)
    if args.tasks or args.streams:
        rc = run("tasks_bench.py", *quick) if args.tasks else 0
        return rc | (run("streams_bench.py", *quick) if args.streams else 0)
    rc = run("echo_bench.py", *quick)
    if not args.echo:
        rc |= run("udp_bench.py", *quick)
        rc |= run("tasks_bench.py", *quick)
        rc |= run("streams_bench.py", *quick)
        rc |= run("http_bench.py", *quick)
        rc |= run("aiohttp_tls_bench.py", *quick)
        rc |= run("native_tls_bench.py", *quick)
        rc |= run("file_bench.py", *quick)
        rc |= run("loop_bench.py", *quick)
        rc |= run("idle_bench.py", *quick)
        run("targets.py")   # the issue targets against what just ran; reports, never fails
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
