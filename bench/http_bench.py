"""HTTP/1.1 keep-alive "hello world" under wrk: ringline vs asyncio vs uvloop.

    python bench/http_bench.py                 # every loop, both scenarios (~1.5 min)
    python bench/http_bench.py --quick         # smoke run (~20 s)
    python bench/http_bench.py --loops uvloop,ringline --scenarios 50c --rounds 5

Method
------
* The server is ``bench/servers/http_hello.py --loop L`` (an asyncio Protocol
  with a minimal HTTP/1.1 parser and a constant 13-byte body), pinned to CPU 0;
  ``wrk`` (one thread, ``--latency``) and this harness are pinned to CPU 1.
  Each loop x scenario cell starts a fresh server, runs ``--rounds`` wrk
  rounds of ``--duration`` seconds (after one unmeasured ``--warmup`` round)
  and keeps the best round by req/s.
* Scenarios: ``1c`` -- one connection, one request in flight (latency);
  ``50c`` -- 50 keep-alive connections (throughput).
* ``cpu us/req``: busy time of the server's CPU (user+nice+system+irq+softirq
  from ``/proc/stat``) over the wrk run, per completed request.  It includes
  the kernel's TCP work on that core; ``proc us/req`` is the server process's
  own run time (``/proc/PID/task/*/schedstat``), immune to other processes on
  CPU 0 (prefer it for cells flagged "!": background load on the pinned CPUs
  above 5% before the cell).  ``/proc/stat`` is tick-sampled (USER_HZ): with
  one connection the core is mostly idle between short bursts and the
  sampled figure is coarse -- ``proc us/req`` (nanosecond schedstat) is the
  one to quote there.
* With one connection wrk blocks in epoll between replies, so req/s and p50
  include a VM wake-up on each side (see bench/README.md on scenario (a) of
  the echo benchmark); compare loops, not absolute figures.
* ``sysc/req``: one extra, shorter wrk run with
  ``perf stat -e raw_syscalls:sys_enter -p <server pid>`` attached (or
  ``strace -c -f``), syscalls / requests of that run.  Helpers are shared
  with ``echo_bench.py``.
* ``srv%``: utilisation of the server core in the kept round.  wrk's core is
  not measured; with one connection both sides mostly wait for each other.
* Ratios are req/s and cpu us/req relative to uvloop.

Results go to ``bench/results/http-<timestamp>.json`` (``--json PATH`` to
override).  Needs ``wrk`` (Debian package wrk); perf for syscall counts.
Exit status 1 if a cell failed (skips -- a loop that is not available --
do not count), 2 if wrk is missing.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import echo_bench as eb  # noqa: E402  (shared process/measurement helpers)

SERVER = HERE / "servers" / "http_hello.py"
RESULTS = HERE / "results"
LOOPS = ("asyncio", "uvloop", "ringline")
REFERENCE = "uvloop"
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Scenario:
    key: str
    conns: int
    description: str


SCENARIOS = (
    Scenario("1c", 1, "1 keep-alive connection, 1 request in flight (latency)"),
    Scenario("50c", 50, "50 keep-alive connections (throughput)"),
)


@dataclass
class Options:
    rounds: int
    duration: int
    warmup: int
    syscall_duration: int
    server_cpu: int | None
    wrk_cpu: int | None


# ---------------------------------------------------------------------------
# wrk
# ---------------------------------------------------------------------------

_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6}


def _to_us(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(f"unparsable wrk time {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> dict:
    res: dict = {}
    m = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m)", out, re.M)
    if not m:
        raise eb.Failure(f"wrk printed no request count: {eb._tail(out)}")
    res["requests"] = int(m.group(1))
    res["wrk_seconds"] = _to_us(m.group(2) + m.group(3)) / 1e6
    m = re.search(r"^Requests/sec:\s*([\d.]+)", out, re.M)
    res["req_per_s"] = float(m.group(1)) if m else res["requests"] / res["wrk_seconds"]
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s*{pct}(?:\.0+)?%\s+(\S+)", out, re.M)
        if m:
            res[f"p{pct}_us"] = _to_us(m.group(1))
    m = re.search(r"^\s*Latency\s+(\S+)\s+(\S+)\s+(\S+)", out, re.M)
    if m:
        res["mean_us"] = _to_us(m.group(1))
        res["max_us"] = _to_us(m.group(3))
    errors = {}
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups()),
                          strict=True))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors["non_2xx"] = int(m.group(1))
    if any(errors.values()):
        res["errors"] = errors
    return res


def _proc_cpu_ns(pid: int) -> int:
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    except OSError:
        pass
    return total


def run_wrk(wrk: str, port: int, conns: int, duration: int, cpu: int | None,
            server_cpu: int | None = None, server_pid: int | None = None,
            scheme: str = "http") -> dict:
    cmd = [wrk, "-t1", f"-c{conns}", f"-d{duration}s", "--latency", "--timeout", "5s",
           f"{scheme}://127.0.0.1:{port}/"]
    cpus = [server_cpu] if server_cpu is not None else []
    before = eb.cpu_busy(cpus) if cpus else {}
    proc_before = _proc_cpu_ns(server_pid) if server_pid else 0
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30,
                              preexec_fn=eb._pinned(cpu), stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise eb.Failure("wrk timed out") from exc
    wall = time.monotonic() - t0
    after = eb.cpu_busy(cpus) if cpus else {}
    proc_after = _proc_cpu_ns(server_pid) if server_pid else 0
    if proc.returncode != 0:
        raise eb.Failure(f"wrk failed (status {proc.returncode}): "
                         f"{eb._tail(proc.stderr + proc.stdout)}")
    res = parse_wrk(proc.stdout)
    if res["requests"] == 0:
        raise eb.Failure("wrk completed no request")
    res["window_s"] = wall
    if cpus and server_cpu in before and server_cpu in after:
        busy = after[server_cpu][0] - before[server_cpu][0]
        total = after[server_cpu][1] - before[server_cpu][1]
        res["server_cpu_busy_us"] = busy * 1e6 / CLK_TCK
        res["server_cpu_util"] = busy / total if total else 0.0
    if server_pid:
        res["server_proc_cpu_us"] = (proc_after - proc_before) / 1e3
    return res


# ---------------------------------------------------------------------------
# one cell
# ---------------------------------------------------------------------------


def spec_for(loop: str) -> eb.ServerSpec:
    return eb.ServerSpec(
        loop,
        (sys.executable, str(SERVER), "--port", "0", "--loop", loop),
        SERVER,
        f"{loop} loop, asyncio Protocol HTTP/1.1 hello",
    )


def measure_cell(wrk: str, loop: str, sc: Scenario, opt: Options,
                 counter: eb.SyscallCounter | None, spec: eb.ServerSpec | None = None,
                 scheme: str = "http") -> dict:
    """One loop x scenario: a fresh server (``spec``, default the Protocol
    hello server), wrk rounds against ``scheme``://127.0.0.1:port/."""
    cell: dict = {"loop": loop, "scenario": sc.key, "status": "ok"}
    server = eb.Server(spec or spec_for(loop), opt.server_cpu)
    try:
        server.start()
        cpus = [c for c in (opt.server_cpu, opt.wrk_cpu) if c is not None]
        if cpus:
            cell["background_util"] = {
                str(c): round(u, 4) for c, u in eb.background_util(cpus).items()}
        if opt.warmup:
            run_wrk(wrk, server.port, sc.conns, opt.warmup, opt.wrk_cpu, scheme=scheme)
            server.check_alive()
        rounds = []
        for _ in range(opt.rounds):
            rounds.append(run_wrk(wrk, server.port, sc.conns, opt.duration, opt.wrk_cpu,
                                  opt.server_cpu, server.pid, scheme))
            server.check_alive()
        best = max(rounds, key=lambda r: r["req_per_s"])
        rates = sorted(r["req_per_s"] for r in rounds)
        cell["rounds"] = rounds
        cell["best"] = best
        cell["median_req_per_s"] = rates[len(rates) // 2]
        cell["req_per_s_spread"] = (rates[-1] - rates[0]) / rates[-1]
        if "server_cpu_busy_us" in best:
            cell["cpu_us_per_req"] = best["server_cpu_busy_us"] / best["requests"]
        if "server_proc_cpu_us" in best:
            cell["proc_cpu_us_per_req"] = best["server_proc_cpu_us"] / best["requests"]
        if best.get("errors"):
            cell["errors"] = best["errors"]
        if counter is not None:
            try:
                n, res = counter.count_during(
                    server.pid,
                    lambda: run_wrk(wrk, server.port, sc.conns, opt.syscall_duration,
                                    opt.wrk_cpu, scheme=scheme),
                    opt.wrk_cpu,
                )
                server.check_alive()
                cell["syscalls"] = {"tool": counter.tool, "count": n,
                                    "requests": res["requests"]}
                cell["syscalls_per_req"] = n / res["requests"]
            except eb.Failure as exc:
                cell["syscalls"] = {"error": str(exc)}
    except eb.Skip as exc:
        cell.update(status="skipped", reason=str(exc))
    except eb.Failure as exc:
        cell.update(status="failed", reason=str(exc))
    finally:
        rc = server.stop()
        if cell["status"] == "ok":
            cell["exit_status"] = rc
            if rc not in (0, -signal.SIGTERM):
                cell["stop_note"] = f"unclean exit on SIGTERM: status {rc}"
    return cell


# ---------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def add_ratios(cells: list[dict]) -> None:
    ok = {(c["loop"], c["scenario"]): c for c in cells if c["status"] == "ok"}
    for c in ok.values():
        ref = ok.get((REFERENCE, c["scenario"]))
        if ref is None:
            continue
        c["req_per_s_vs_uvloop"] = c["best"]["req_per_s"] / ref["best"]["req_per_s"]
        if c.get("cpu_us_per_req") and ref.get("cpu_us_per_req"):
            c["cpu_per_req_vs_uvloop"] = c["cpu_us_per_req"] / ref["cpu_us_per_req"]
        for p in ("p50_us", "p99_us"):
            if c["best"].get(p) and ref["best"].get(p):
                c[f"{p}_vs_uvloop"] = c["best"][p] / ref["best"][p]


def print_table(cells: list[dict], scenarios: list[Scenario], loops: list[str]) -> None:
    by = {(c["loop"], c["scenario"]): c for c in cells}
    head = (f"{'loop':<10} {'req/s':>10} {'p50 us':>8} {'p99 us':>9} {'cpu us/req':>10} "
            f"{'proc us/req':>11} {'sysc/req':>8} {'srv%':>5} {'x uvloop':>8} "
            f"{'cpu x uv':>8}")
    for sc in scenarios:
        if not any(k[1] == sc.key for k in by):
            continue
        print(f"\n({sc.key}) {sc.description}")
        print(head)
        print("-" * len(head))
        for loop in loops:
            c = by.get((loop, sc.key))
            if c is None:
                continue
            if c["status"] != "ok":
                print(f"{loop:<10} {c['status']}: {c['reason'][:90]}")
                continue
            b = c["best"]
            noisy = any(u > eb.NOISE_LIMIT for u in c.get("background_util", {}).values())
            util = b.get("server_cpu_util")
            print(
                f"{loop:<10} {b['req_per_s']:>10,.0f} {_fmt(b.get('p50_us'), '.1f'):>8} "
                f"{_fmt(b.get('p99_us'), '.1f'):>9} {_fmt(c.get('cpu_us_per_req'), '.2f'):>10} "
                f"{_fmt(c.get('proc_cpu_us_per_req'), '.2f'):>11} "
                f"{_fmt(c.get('syscalls_per_req'), '.2f'):>8} "
                f"{_fmt(None if util is None else util * 100, '.0f'):>5} "
                f"{_fmt(c.get('req_per_s_vs_uvloop'), '.2f'):>8} "
                f"{_fmt(c.get('cpu_per_req_vs_uvloop'), '.2f'):>8}"
                + (" !" if noisy else "") + (" ERR" if c.get("errors") else ""))
    if any(u > eb.NOISE_LIMIT for c in cells for u in c.get("background_util", {}).values()):
        print(f"\n! = over {eb.NOISE_LIMIT:.0%} background load on the pinned CPUs before the cell")
    if any(c.get("errors") for c in cells):
        print("ERR = wrk reported socket errors or non-2xx responses (see the JSON)")


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------


def _select(arg: str | None, known: list[str], what: str) -> list[str]:
    if not arg:
        return known
    wanted = [x.strip() for x in arg.split(",") if x.strip()]
    bad = [x for x in wanted if x not in known]
    if bad:
        raise SystemExit(f"unknown {what}: {', '.join(bad)} (known: {', '.join(known)})")
    return list(dict.fromkeys(wanted))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--loops", help=f"comma list (default: {','.join(LOOPS)})")
    p.add_argument("--scenarios", help="comma list (default: 1c,50c)")
    p.add_argument("--rounds", type=int, help="measured rounds per cell, best kept (3; quick 1)")
    p.add_argument("--duration", type=int, help="seconds per round (4; quick 1)")
    p.add_argument("--warmup", type=int, help="seconds of unmeasured warm-up (1; quick 0)")
    p.add_argument("--syscall-duration", type=int, help="seconds of the traced run (2; quick 1)")
    p.add_argument("--no-syscalls", action="store_true", help="skip the perf/strace run")
    p.add_argument("--quick", action="store_true", help="smoke run (explicit options win)")
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--wrk-cpu", type=int, default=1)
    p.add_argument("--no-pin", action="store_true", help="do not pin anything to CPUs")
    p.add_argument("--json", type=Path, help="result file (default bench/results/http-*.json)")
    p.add_argument("--list", action="store_true", help="list loops and scenarios")
    args = p.parse_args(argv)

    if args.list:
        for loop in LOOPS:
            print(f"loop     {loop}")
        for sc in SCENARIOS:
            print(f"scenario {sc.key:<4} {sc.description}")
        return 0
    defaults = (1, 1, 0, 1) if args.quick else (3, 4, 1, 2)
    for name, default in zip(("rounds", "duration", "warmup", "syscall_duration"), defaults,
                             strict=True):
        if getattr(args, name) is None:
            setattr(args, name, default)
    if args.rounds < 1 or args.duration < 1 or args.warmup < 0 or args.syscall_duration < 1:
        p.error("--rounds and the durations must be >= 1 (--warmup >= 0); wrk takes whole seconds")

    wrk = shutil.which("wrk")
    if wrk is None:
        print("http_bench: needs wrk (Debian package wrk; `make deps` installs it)",
              file=sys.stderr)
        return 2

    loops = _select(args.loops, list(LOOPS), "loop")
    by_key = {s.key: s for s in SCENARIOS}
    scenarios = [by_key[k] for k in _select(args.scenarios, list(by_key), "scenario")]
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
    opt = Options(args.rounds, args.duration, args.warmup, args.syscall_duration,
                  server_cpu, wrk_cpu)
    if wrk_cpu is not None:
        os.sched_setaffinity(0, {wrk_cpu})
    signal.signal(signal.SIGTERM, eb._interrupt)

    counter, counter_note = (None, "disabled (--no-syscalls)")
    if not args.no_syscalls:
        counter, counter_note = eb.SyscallCounter.detect()
    wrk_version = subprocess.run([wrk, "-v"], capture_output=True, text=True).stdout
    wrk_version = (wrk_version.strip().splitlines() or ["wrk"])[0]

    print(f"python {platform.python_version()} on {platform.platform()}; {pin_note}")
    print(f"{wrk_version}; rounds={opt.rounds} x {opt.duration}s (best kept), "
          f"warmup {opt.warmup}s; syscalls: {counter_note}")

    cells: list[dict] = []
    skipped: dict[str, str] = {}
    started = time.monotonic()
    try:
        for loop in loops:
            for sc in scenarios:
                if loop in skipped:
                    cells.append({"loop": loop, "scenario": sc.key, "status": "skipped",
                                  "reason": skipped[loop]})
                    continue
                cell = measure_cell(wrk, loop, sc, opt, counter)
                cells.append(cell)
                if cell["status"] == "ok":
                    b = cell["best"]
                    print(f"  {loop:<9} {sc.key:>3}: {b['req_per_s']:>10,.0f} req/s  "
                          f"p50 {_fmt(b.get('p50_us'), '.1f')} us  "
                          f"p99 {_fmt(b.get('p99_us'), '.1f')} us  "
                          f"cpu {_fmt(cell.get('cpu_us_per_req'), '.2f')} us/req  "
                          f"sysc {_fmt(cell.get('syscalls_per_req'), '.2f')}/req", flush=True)
                else:
                    print(f"  {loop:<9} {sc.key:>3}: {cell['status']}: {cell['reason']}",
                          flush=True)
                    if cell["status"] == "skipped" or "before READY" in cell["reason"]:
                        skipped[loop] = cell["reason"]
    except KeyboardInterrupt:
        print("\ninterrupted: reporting what was measured", file=sys.stderr)
    finally:
        eb.kill_all()

    add_ratios(cells)
    print_table(cells, scenarios, loops)

    result = {
        "benchmark": "http",
        "timestamp": _dt.datetime.now().isoformat(timespec="seconds"),
        "elapsed_s": round(time.monotonic() - started, 1),
        "machine": eb._machine_info(),
        "wrk": wrk_version,
        "options": asdict(opt),
        "pinning": pin_note,
        "syscall_counter": counter_note,
        "scenarios": {s.key: asdict(s) for s in scenarios},
        "server": str(SERVER.relative_to(eb.REPO)),
        "cells": cells,
    }
    out = args.json
    if out is None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        out = RESULTS / f"http-{_dt.datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nresults: {out}  ({result['elapsed_s']:.0f} s)")
    return 1 if any(c["status"] == "failed" for c in cells) else 0


if __name__ == "__main__":
    raise SystemExit(main())
