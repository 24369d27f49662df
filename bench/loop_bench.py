"""Event-loop core micro-benchmarks: ringline vs asyncio vs uvloop, one run.

    python bench/loop_bench.py                      # 5 rounds, all loops
    python bench/loop_bench.py --quick              # smoke run: 1 round, 1/10 size
    python bench/loop_bench.py --loops asyncio,uvloop --bench call_soon_chain,sleep0
    python bench/loop_bench.py --list               # benchmark names

Method
------
* Every (round, benchmark, loop) measurement runs in a *fresh subprocess*
  (this file re-executed with a hidden ``--child`` argument): no allocator,
  GC or import state leaks between loops. Within a round the loops run
  round-robin and the starting loop rotates from round to round, so slow
  drift (thermal, noisy neighbours) is spread over all loops evenly.
* The child creates a loop, runs a 1/10-size warm-up on it, closes it, then
  times the real run on a second fresh loop (``time.perf_counter``).
  ``gc.collect(); gc.freeze()`` before timing; GC stays enabled (allocating
  GC-tracked objects is part of a loop's cost) unless ``--no-gc``.
* The score is the best of N rounds (max for rates, min for times); the JSON
  file also keeps every round, the median and the relative spread.
* The process is pinned to CPU 0 (``--cpu``) unless ``--no-pin``; children
  inherit the affinity.
* A loop that cannot be created (ringline not importable yet, uvloop not
  installed) is skipped with a note; the rest still runs.

Ratio columns are *speedups of ringline*: > 1.00 means ringline is faster,
whether the metric is a rate (ringline/other) or a time (other/ringline).

Results go to ``bench/results/loop-<timestamp>.json`` (``--json PATH`` to
override); ``bench/results/`` is git-ignored.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import gc
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ALL_LOOPS = ("asyncio", "uvloop", "ringline")
RESULT_MARK = "@@LOOP_BENCH@@"
NOISY_SPREAD = 0.15  # (max - min) / median across rounds worth a warning


# ---------------------------------------------------------------------------
# Loop factories (used in the child)
# ---------------------------------------------------------------------------


def make_loop(name: str) -> asyncio.AbstractEventLoop:
    if name == "asyncio":
        return asyncio.new_event_loop()
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    if name == "ringline":
        import ringline

        return ringline.new_event_loop()
    raise ValueError(f"unknown loop {name!r}")


def loop_version(name: str) -> str | None:
    try:
        if name == "asyncio":
            return platform.python_version()
        if name == "uvloop":
            import uvloop

            return getattr(uvloop, "__version__", None)
        if name == "ringline":
            import ringline

            return getattr(ringline, "__version__", None)
    except Exception:  # noqa: BLE001 - version is informational only
        return None
    return None


# ---------------------------------------------------------------------------
# Benchmarks. Each takes (loop, scale) and returns {metric: value}; it does
# its own timing so that setup/verification is not measured. ``scale`` is 1.0
# for the full sizes from the brief and 0.1 with --quick.
# ---------------------------------------------------------------------------

now = time.perf_counter


def _n(base: int, scale: float) -> int:
    return max(1, int(base * scale))


def bench_call_soon_chain(loop, scale):
    """1,000,000 callbacks, each call_soon-ing the next one."""
    n = _n(1_000_000, scale)
    call_soon = loop.call_soon
    left = [n]

    def cb():
        left[0] -= 1
        if left[0]:
            call_soon(cb)
        else:
            loop.stop()

    t0 = now()
    call_soon(cb)
    loop.run_forever()
    dt = now() - t0
    assert left[0] == 0, left
    return {"ops_per_s": n / dt}


def bench_call_soon_batch(loop, scale):
    """1,000 rounds; each round call_soon's 1,000 callbacks at once."""
    rounds, per_round = _n(1_000, scale), 1_000
    call_soon = loop.call_soon
    fired = [0]
    left = [rounds]

    def noop():
        fired[0] += 1

    def driver():
        if not left[0]:
            loop.stop()
            return
        left[0] -= 1
        for _ in range(per_round):
            call_soon(noop)
        call_soon(driver)  # runs after this batch, i.e. next iteration

    t0 = now()
    call_soon(driver)
    loop.run_forever()
    dt = now() - t0
    total = rounds * per_round
    assert fired[0] == total, (fired[0], total)
    return {"ops_per_s": total / dt}


def _delays(n: int) -> list[float]:
    rng = random.Random(20240611)
    return [rng.uniform(0.0, 0.1) for _ in range(n)]


def bench_call_later(loop, scale):
    """100,000 call_later (0..100 ms, fixed seed); run until all fired."""
    n = _n(100_000, scale)
    delays = _delays(n)
    call_later = loop.call_later
    left = [n]

    def cb():
        left[0] -= 1
        if not left[0]:
            loop.stop()

    t0 = now()
    for d in delays:
        call_later(d, cb)
    t1 = now()
    loop.run_forever()
    t2 = now()
    assert left[0] == 0, left
    # the longest timer must not have fired early (2 ms slack: uvloop/libuv
    # timers have millisecond resolution)
    assert t2 - t0 >= max(delays) - 0.002, (t2 - t0, max(delays))
    return {
        "total_s": t2 - t0,
        "schedule_s": t1 - t0,
        # time past the last deadline until the last callback ran
        "late_s": max(0.0, (t2 - t0) - max(delays)),
    }


def bench_call_later_cancel(loop, scale):
    """100,000 call_later scheduled then all cancelled (+1 loop iteration)."""
    n = _n(100_000, scale)
    delays = _delays(n)
    call_later = loop.call_later
    fired = [0]

    def cb():
        fired[0] += 1

    t0 = now()
    handles = [call_later(d, cb) for d in delays]
    t1 = now()
    for h in handles:
        h.cancel()
    t2 = now()
    # one iteration so the loop can drop/purge the cancelled timers
    loop.call_soon(loop.stop)
    loop.run_forever()
    t3 = now()
    # let every original deadline pass: nothing may fire
    loop.run_until_complete(asyncio.sleep(max(delays) + 0.01))
    assert fired[0] == 0, fired
    return {"total_s": t3 - t0, "cancel_s": t2 - t1}


def bench_ping_pong(loop, scale):
    """Two tasks pass a token back and forth via loop.create_future()."""
    n = _n(200_000, scale)
    create_future = loop.create_future

    async def ponger(req):
        while True:
            msg = await req
            if msg is None:
                return
            token, reply = msg
            req = create_future()
            reply.set_result((token + 1, req))

    async def pinger(req):
        token = 0
        for _ in range(n):
            reply = create_future()
            req.set_result((token, reply))
            token, req = await reply
        req.set_result(None)
        return token

    first = create_future()
    pong_coro, ping_coro = ponger(first), pinger(first)
    # Each future's result references the next future: holding on to `first`
    # would keep the whole chain of 2*n futures alive (and slow GC down).
    del first
    t0 = now()
    pong = loop.create_task(pong_coro)
    token = loop.run_until_complete(ping_coro)
    loop.run_until_complete(pong)
    dt = now() - t0
    assert token == n, (token, n)
    return {"round_trips_per_s": n / dt}


def bench_sleep0(loop, scale):
    """10 tasks, each doing 50,000 ``await asyncio.sleep(0)``."""
    tasks, per_task = 10, _n(50_000, scale)
    sleep = asyncio.sleep
    done = [0]

    async def worker():
        for _ in range(per_task):
            await sleep(0)
        done[0] += 1

    async def main():
        await asyncio.gather(*(worker() for _ in range(tasks)))

    t0 = now()
    loop.run_until_complete(main())
    dt = now() - t0
    assert done[0] == tasks
    return {"switches_per_s": tasks * per_task / dt}


@dataclass(frozen=True)
class Metric:
    key: str  # key in the bench's result dict
    label: str  # "{n}" is replaced by the (scaled) size
    higher_is_better: bool
    in_table: bool = True


@dataclass(frozen=True)
class Bench:
    name: str
    fn: Callable
    metrics: tuple[Metric, ...]
    base: int  # full size, scaled like the benchmark scales it

    def label(self, metric: Metric, scale: float) -> str:
        return metric.label.replace("{n}", _human(_n(self.base, scale)))


def _human(n: int) -> str:
    for div, suffix in ((1_000_000, "M"), (1_000, "k")):
        if n >= div and n % div == 0:
            return f"{n // div}{suffix}"
    return f"{n:,}"


BENCHES = {
    b.name: b
    for b in (
        Bench(
            "call_soon_chain",
            bench_call_soon_chain,
            (Metric("ops_per_s", "call_soon chain {n} (callbacks/s)", True),),
            1_000_000,
        ),
        Bench(
            "call_soon_batch",
            bench_call_soon_batch,
            (Metric("ops_per_s", "call_soon batch {n} rounds x 1000 (callbacks/s)", True),),
            1_000,
        ),
        Bench(
            "call_later",
            bench_call_later,
            (
                Metric("total_s", "call_later {n}: until all fired (time)", False),
                Metric("schedule_s", "call_later {n}: scheduling only (time)", False),
                Metric("late_s", "call_later: past last deadline", False, False),
            ),
            100_000,
        ),
        Bench(
            "call_later_cancel",
            bench_call_later_cancel,
            (
                Metric("total_s", "call_later {n}: schedule+cancel (time)", False),
                Metric("cancel_s", "call_later {n}: cancel only", False, False),
            ),
            100_000,
        ),
        Bench(
            "ping_pong",
            bench_ping_pong,
            (Metric("round_trips_per_s", "future ping-pong {n} (round trips/s)", True),),
            200_000,
        ),
        Bench(
            "sleep0",
            bench_sleep0,
            (Metric("switches_per_s", "sleep(0) 10 tasks x {n} (switches/s)", True),),
            50_000,
        ),
    )
}


# ---------------------------------------------------------------------------
# Child side
# ---------------------------------------------------------------------------


def _child_main(spec_json: str) -> int:
    spec = json.loads(spec_json)
    loop_name = spec["loop"]
    if spec["bench"] == "__probe__":
        loop = make_loop(loop_name)
        info = {
            "loop_type": f"{type(loop).__module__}.{type(loop).__qualname__}",
            "version": loop_version(loop_name),
        }
        loop.close()
        print(RESULT_MARK + json.dumps(info), flush=True)
        return 0

    bench = BENCHES[spec["bench"]]
    scale = float(spec["scale"])

    def fresh():
        loop = make_loop(loop_name)
        asyncio.set_event_loop(loop)
        return loop

    warm = fresh()
    try:
        bench.fn(warm, scale / 10)
    finally:
        warm.close()

    loop = fresh()
    gc.collect()
    gc.freeze()
    if spec.get("no_gc"):
        gc.disable()
    try:
        result = bench.fn(loop, scale)
    finally:
        gc.enable()
        gc.unfreeze()
        loop.close()
        asyncio.set_event_loop(None)
    print(RESULT_MARK + json.dumps(result), flush=True)
    return 0


# ---------------------------------------------------------------------------
# Parent side
# ---------------------------------------------------------------------------


def _child_env(with_src: bool = False) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONHASHSEED"] = "0"
    if with_src:  # an uninstalled checkout: put src/ after any PYTHONPATH
        parts = [env.get("PYTHONPATH", ""), str(REPO / "src")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in parts if p)
    return env


def run_child(spec: dict, timeout: float, env: dict) -> tuple[dict | None, str]:
    """Run one measurement; return (result, error-text)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            check=False,
            text=True,
            timeout=timeout,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f}s"
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK) :]), ""
    tail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
    return None, tail


def _pin(cpu: int | None) -> str:
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity)"
    allowed = sorted(os.sched_getaffinity(0))
    if cpu is None:
        cpu = 0 if 0 in allowed else allowed[0]
    if cpu not in allowed:
        return f"not pinned (CPU {cpu} not in allowed set {allowed})"
    os.sched_setaffinity(0, {cpu})
    return f"pinned to CPU {cpu}"


def _fmt(value: float | None, higher_is_better: bool) -> str:
    if value is None:
        return "-"
    if higher_is_better:  # rates
        for div, suffix in ((1e6, "M/s"), (1e3, "k/s")):
            if value >= div:
                return f"{value / div:.2f}{suffix}"
        return f"{value:.1f}/s"
    return f"{value * 1e3:.1f} ms"


def _cell(loop_name, value, metric, bench_name, requested, errors) -> str:
    if value is not None:
        return _fmt(value, metric.higher_is_better)
    if loop_name in errors.get(bench_name, {}):
        return "ERR"
    return "skip" if loop_name in requested else "-"  # skip: loop unavailable


def _speedup(ring: float | None, other: float | None, higher_is_better: bool) -> float | None:
    if not ring or not other:
        return None
    return ring / other if higher_is_better else other / ring


def _parse_list(text: str, valid, what: str) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in items if x not in valid]
    if bad:
        raise SystemExit(f"unknown {what}: {', '.join(bad)} (valid: {', '.join(valid)})")
    return list(dict.fromkeys(items))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="ringline vs asyncio vs uvloop event-loop micro-benchmarks",
    )
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default 5; 1 w/ --quick)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 round, 1/10 sizes")
    ap.add_argument("--scale", type=float, default=None, help="size factor (default 1.0)")
    ap.add_argument("--loops", default=",".join(ALL_LOOPS), help="comma list of loops")
    ap.add_argument("--bench", default=",".join(BENCHES), help="comma list of benchmarks")
    ap.add_argument("--no-pin", action="store_true", help="do not pin to one CPU")
    ap.add_argument("--no-gc", action="store_true", help="disable GC while timing")
    ap.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default 0)")
    ap.add_argument("--timeout", type=float, default=300.0, help="per-measurement timeout (s)")
    ap.add_argument("--json", type=Path, default=None, help="output JSON path")
    ap.add_argument("--list", action="store_true", help="list benchmarks and exit")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        return _child_main(args.child)
    if args.list:
        for b in BENCHES.values():
            print(f"{b.name:20s} {(b.fn.__doc__ or '').strip()}")
        return 0

    loops = _parse_list(args.loops, ALL_LOOPS, "loop")
    benches = [BENCHES[b] for b in _parse_list(args.bench, list(BENCHES), "benchmark")]
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 5)
    scale = args.scale if args.scale is not None else (0.1 if args.quick else 1.0)
    if rounds < 1 or scale <= 0:
        raise SystemExit("--rounds must be >= 1 and --scale > 0")

    pin_note = "not pinned (--no-pin)" if args.no_pin else _pin(args.cpu)
    print(f"python {platform.python_version()} on {platform.platform()}; {pin_note}")
    print(
        f"rounds={rounds} scale={scale:g} (best of {rounds}; fresh subprocess per run)"
        + ("; GC off while timing" if args.no_gc else "")
    )

    # Probe each loop once: skip the ones that cannot even be created.
    active: list[str] = []
    loop_info: dict[str, dict] = {}
    envs: dict[str, dict[str, str]] = {}
    for name in loops:
        env = _child_env()
        info, err = run_child({"loop": name, "bench": "__probe__"}, args.timeout, env)
        if info is None and name == "ringline" and (REPO / "src" / "ringline").is_dir():
            # not installed (or broken install): try the checkout's src/
            src_env = _child_env(with_src=True)
            info, src_err = run_child({"loop": name, "bench": "__probe__"}, args.timeout, src_env)
            if info is not None:
                env, info["from"] = src_env, str(REPO / "src")
            else:
                err = f"{err}; with src/ on PYTHONPATH: {src_err}"
        envs[name] = env
        if info is None:
            print(f"note: skipping {name}: cannot create its loop ({err})")
            loop_info[name] = {"skipped": err}
        else:
            active.append(name)
            loop_info[name] = info
            print(f"  {name:9s} -> {info['loop_type']} {info.get('version') or ''}".rstrip())
    if not active:
        print("no loop could be created; nothing to do")
        return 1

    # raw[bench][metric][loop] -> list of values, one per successful round
    raw: dict[str, dict[str, dict[str, list[float]]]] = {
        b.name: {m.key: {ln: [] for ln in active} for m in b.metrics} for b in benches
    }
    errors: dict[str, dict[str, str]] = {}
    t_start = time.monotonic()
    for r in range(rounds):
        order = active[r % len(active) :] + active[: r % len(active)]
        for b in benches:
            for name in order:
                spec = {"loop": name, "bench": b.name, "scale": scale, "no_gc": args.no_gc}
                res, err = run_child(spec, args.timeout, envs[name])
                if res is None:
                    errors.setdefault(b.name, {})[name] = err
                    print(f"  round {r + 1}: {b.name} on {name} FAILED: {err}")
                    continue
                for m in b.metrics:
                    raw[b.name][m.key][name].append(res[m.key])
        print(
            f"  round {r + 1}/{rounds} done ({time.monotonic() - t_start:.1f}s)",
            flush=True,
        )

    # Aggregate + table.
    rows = []
    summary = []
    for b in benches:
        for m in b.metrics:
            per_loop = raw[b.name][m.key]
            best: dict[str, float | None] = {}
            for name in ALL_LOOPS:
                vals = per_loop.get(name) or []
                best[name] = (max(vals) if m.higher_is_better else min(vals)) if vals else None
            vs_uv = _speedup(best["ringline"], best["uvloop"], m.higher_is_better)
            vs_aio = _speedup(best["ringline"], best["asyncio"], m.higher_is_better)
            summary.append(
                {
                    "bench": b.name,
                    "metric": m.key,
                    "label": b.label(m, scale),
                    "unit": "1/s" if m.higher_is_better else "s",
                    "higher_is_better": m.higher_is_better,
                    "best": best,
                    "median": {k: statistics.median(v) for k, v in per_loop.items() if v},
                    "rel_spread": {
                        k: (max(v) - min(v)) / statistics.median(v)
                        for k, v in per_loop.items()
                        if v
                    },
                    "rounds": per_loop,
                    "speedup_ringline_vs_uvloop": vs_uv,
                    "speedup_ringline_vs_asyncio": vs_aio,
                    "errors": errors.get(b.name, {}),
                }
            )
            if m.in_table:
                rows.append(
                    [
                        b.label(m, scale),
                        *(_cell(n, best[n], m, b.name, loops, errors) for n in ALL_LOOPS),
                        f"{vs_uv:.2f}x" if vs_uv else "-",
                        f"{vs_aio:.2f}x" if vs_aio else "-",
                    ]
                )

    header = ["benchmark", *ALL_LOOPS, "ringline/uvloop", "ringline/asyncio"]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    line = " | ".join
    print()
    print(line(h.ljust(widths[i]) if i == 0 else h.rjust(widths[i]) for i, h in enumerate(header)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(line(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row)))
    print("ratios are ringline speedups (>1.00x = ringline faster); times: lower is better")
    spreads = [
        (spread, f"{r['bench']}.{r['metric']}[{ln}]")
        for r in summary
        for ln, spread in r["rel_spread"].items()
        if len(r["rounds"][ln]) > 1
    ]
    noisy = sorted((x for x in spreads if x[0] > NOISY_SPREAD), reverse=True)
    if noisy:
        print(
            f"note: {len(noisy)} of {len(spreads)} measurements varied by more than "
            f"{NOISY_SPREAD:.0%} between rounds (worst: {noisy[0][1]} {noisy[0][0]:.0%}); "
            "busy machine? best-of-N absorbs some of it, more --rounds helps"
        )
    skipped = [n for n in loops if n not in active]
    if skipped:
        print(f"skipped loops: {', '.join(skipped)}")

    # JSON.
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.json
    if out is None:
        out = HERE / "results" / f"loop-{stamp}.json"  # git-ignored directory
    payload = {
        "timestamp": stamp,
        "argv": sys.argv[1:],
        "python": sys.version,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "pin": pin_note,
        "rounds": rounds,
        "scale": scale,
        "gc_disabled_while_timing": args.no_gc,
        "loops_requested": loops,
        "loops": loop_info,
        "elapsed_s": time.monotonic() - t_start,
        "results": summary,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
