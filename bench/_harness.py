"""Shared driver for the ratio benchmarks (tasks_bench.py, streams_bench.py).

Same method as loop_bench.py: every (round, workload, loop) measurement runs in
a fresh subprocess (the benchmark file re-executed with ``--child``); loops
run round-robin and the starting loop rotates between rounds; the process is
pinned to one CPU unless ``--no-pin``; the score is the best of N rounds. The
table adds a geometric mean of the ringline ratios over all rows.

A workload function takes ``(loop, scale, extra)`` and returns
``{metric: value}``; it times itself so that set-up is not measured.
``extra`` is the dict a benchmark file's ``prepare`` hook returned in the
parent (e.g. paths of a certificate made once per run).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import gc
import json
import math
import os
import platform
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
RESULT_MARK = "@@RATIO_BENCH@@"
SKIP_MARK = "@@RATIO_SKIP@@"
NOISY_SPREAD = 0.15  # (max - min) / median across rounds worth a warning


class Skip(Exception):
    """Raised by a workload that cannot run here (e.g. needs Python 3.12)."""


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


def n_of(base: int, scale: float) -> int:
    return max(1, int(base * scale))


@dataclass(frozen=True)
class Work:
    """One row of the table."""

    name: str
    label: str  # "{n}" is replaced by the scaled size
    fn: Callable
    base: int  # full size (scaled by --scale / --quick)
    metric: str = "time_s"  # key of fn's result shown in the table
    higher_is_better: bool = False
    unit: str = "s"  # for rates: "/s" or "MB/s"
    warmup: bool = True  # run a 1/10-size warm-up on a throwaway loop first

    def title(self, scale: float) -> str:
        return self.label.replace("{n}", _human(n_of(self.base, scale)))


def _human(n: int) -> str:
    for div, suffix in ((1_000_000, "M"), (1_000, "k")):
        if n >= div and n % div == 0:
            return f"{n // div}{suffix}"
    return f"{n:,}"


# ---------------------------------------------------------------------------
# Child side
# ---------------------------------------------------------------------------


def child_main(spec_json: str, works: dict[str, Work]) -> int:
    spec = json.loads(spec_json)
    loop_name = spec["loop"]
    if spec["work"] == "__probe__":
        loop = make_loop(loop_name)
        info = {"loop_type": f"{type(loop).__module__}.{type(loop).__qualname__}"}
        loop.close()
        print(RESULT_MARK + json.dumps(info), flush=True)
        return 0
    work = works[spec["work"]]
    scale = float(spec["scale"])
    extra = spec.get("extra") or {}

    def fresh() -> asyncio.AbstractEventLoop:
        loop = make_loop(loop_name)
        asyncio.set_event_loop(loop)
        return loop

    try:
        if work.warmup:
            warm = fresh()
            try:
                work.fn(warm, scale / 10, extra)
            finally:
                warm.close()
        loop = fresh()
        gc.collect()
        gc.freeze()
        try:
            result = work.fn(loop, scale, extra)
        finally:
            gc.unfreeze()
            loop.close()
            asyncio.set_event_loop(None)
    except Skip as exc:
        print(SKIP_MARK + str(exc), flush=True)
        return 0
    print(RESULT_MARK + json.dumps(result), flush=True)
    return 0


# ---------------------------------------------------------------------------
# Parent side
# ---------------------------------------------------------------------------


def _child_env(with_src: bool) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONHASHSEED"] = "0"
    if with_src:  # an uninstalled checkout: put src/ after any PYTHONPATH
        parts = [env.get("PYTHONPATH", ""), str(REPO / "src")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in parts if p)
    return env


def run_child(script: Path, spec: dict, timeout: float, env: dict) -> tuple[str, object]:
    """Run one measurement: ("ok", result) | ("skip", why) | ("err", why)."""
    cmd = [sys.executable, str(script), "--child", json.dumps(spec)]
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
        return "err", f"timed out after {timeout:.0f}s"
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            return "ok", json.loads(line[len(RESULT_MARK) :])
        if line.startswith(SKIP_MARK):
            return "skip", line[len(SKIP_MARK) :]
    tail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
    return "err", tail


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


def _fmt(value: float | None, work: Work) -> str:
    if value is None:
        return "-"
    if not work.higher_is_better:
        return f"{value * 1e3:.1f} ms" if value < 10 else f"{value:.2f} s"
    for div, suffix in ((1e6, "M"), (1e3, "k")):
        if value >= div and work.unit == "/s":
            return f"{value / div:.2f}{suffix}/s"
    return f"{value:.1f} {work.unit.lstrip('/') if work.unit != '/s' else '/s'}"


def _speedup(ring: float | None, other: float | None, higher_is_better: bool) -> float | None:
    if not ring or not other:
        return None
    return ring / other if higher_is_better else other / ring


def _geomean(xs: list[float]) -> float | None:
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def _parse_list(text: str, valid, what: str) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in items if x not in valid]
    if bad:
        raise SystemExit(f"unknown {what}: {', '.join(bad)} (valid: {', '.join(valid)})")
    return list(dict.fromkeys(items))


def main(
    *,
    script: Path,
    tag: str,
    description: str,
    works: dict[str, Work],
    argv: list[str] | None = None,
    default_rounds: int = 3,
    add_args: Callable[[argparse.ArgumentParser], None] | None = None,
    prepare: Callable[[argparse.Namespace, Path], dict] | None = None,
) -> int:
    """Parse the command line and run (or, with --child, be one measurement)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--rounds", type=int, default=None, help=f"rounds (default {default_rounds})")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 round, 1/10 sizes")
    ap.add_argument("--scale", type=float, default=None, help="size factor (default 1.0)")
    ap.add_argument("--loops", default=",".join(ALL_LOOPS), help="comma list of loops")
    ap.add_argument("--bench", default=",".join(works), help="comma list of workloads")
    ap.add_argument("--no-pin", action="store_true", help="do not pin to one CPU")
    ap.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default 0)")
    ap.add_argument("--timeout", type=float, default=120.0, help="per-measurement timeout (s)")
    ap.add_argument("--json", type=Path, default=None, help="output JSON path")
    ap.add_argument("--list", action="store_true", help="list workloads and exit")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    if add_args is not None:
        add_args(ap)
    args = ap.parse_args(argv)

    if args.child:
        return child_main(args.child, works)
    if args.list:
        for w in works.values():
            print(f"{w.name:22s} {(w.fn.__doc__ or '').strip().splitlines()[0]}")
        return 0

    loops = _parse_list(args.loops, ALL_LOOPS, "loop")
    chosen = [works[w] for w in _parse_list(args.bench, list(works), "workload")]
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else default_rounds)
    scale = args.scale if args.scale is not None else (0.1 if args.quick else 1.0)
    if rounds < 1 or scale <= 0:
        raise SystemExit("--rounds must be >= 1 and --scale > 0")

    pin_note = "not pinned (--no-pin)" if args.no_pin else _pin(args.cpu)
    print(f"python {platform.python_version()} on {platform.platform()}; {pin_note}")
    print(f"rounds={rounds} scale={scale:g} (best of {rounds}; fresh subprocess per run)")

    import tempfile

    with tempfile.TemporaryDirectory(prefix=f"ringline-{tag}-") as tmp:
        extra = prepare(args, Path(tmp)) if prepare is not None else {}
        return _run(args, script, tag, chosen, loops, rounds, scale, pin_note, extra)


def _run(args, script, tag, chosen, loops, rounds, scale, pin_note, extra) -> int:
    active: list[str] = []
    loop_info: dict[str, dict] = {}
    envs: dict[str, dict[str, str]] = {}
    for name in loops:
        env = _child_env(False)
        status, info = run_child(script, {"loop": name, "work": "__probe__"}, args.timeout, env)
        if status != "ok" and name == "ringline" and (REPO / "src" / "ringline").is_dir():
            src_env = _child_env(True)
            status, info = run_child(
                script, {"loop": name, "work": "__probe__"}, args.timeout, src_env
            )
            if status == "ok":
                env = src_env
        envs[name] = env
        if status != "ok":
            print(f"note: skipping {name}: cannot create its loop ({info})")
            loop_info[name] = {"skipped": info}
        else:
            active.append(name)
            loop_info[name] = info
            print(f"  {name:9s} -> {info['loop_type']}")
    if not active:
        print("no loop could be created; nothing to do")
        return 1

    raw: dict[str, dict[str, list[float]]] = {w.name: {ln: [] for ln in active} for w in chosen}
    extras: dict[str, dict[str, list[dict]]] = {w.name: {ln: [] for ln in active} for w in chosen}
    errors: dict[str, dict[str, str]] = {}
    skipped: dict[str, str] = {}
    t_start = time.monotonic()
    for r in range(rounds):
        order = active[r % len(active) :] + active[: r % len(active)]
        for w in chosen:
            if w.name in skipped:
                continue
            for name in order:
                spec = {"loop": name, "work": w.name, "scale": scale, "extra": extra}
                status, res = run_child(script, spec, args.timeout, envs[name])
                if status == "skip":
                    skipped[w.name] = str(res)
                    print(f"note: {w.name} skipped: {res}")
                    break
                if status == "err":
                    errors.setdefault(w.name, {})[name] = str(res)
                    print(f"  round {r + 1}: {w.name} on {name} FAILED: {res}")
                    continue
                assert isinstance(res, dict)
                raw[w.name][name].append(res[w.metric])
                extras[w.name][name].append(res)
        print(f"  round {r + 1}/{rounds} done ({time.monotonic() - t_start:.1f}s)", flush=True)

    rows, summary = [], []
    vs_uv_all, vs_aio_all = [], []
    for w in chosen:
        if w.name in skipped:
            rows.append([w.title(scale), "skip", "skip", "skip", "-", "-"])
            summary.append({"work": w.name, "skipped": skipped[w.name]})
            continue
        per_loop = raw[w.name]
        best: dict[str, float | None] = {}
        for name in ALL_LOOPS:
            vals = per_loop.get(name) or []
            best[name] = (max(vals) if w.higher_is_better else min(vals)) if vals else None
        vs_uv = _speedup(best["ringline"], best["uvloop"], w.higher_is_better)
        vs_aio = _speedup(best["ringline"], best["asyncio"], w.higher_is_better)
        if vs_uv:
            vs_uv_all.append(vs_uv)
        if vs_aio:
            vs_aio_all.append(vs_aio)
        summary.append(
            {
                "work": w.name,
                "label": w.title(scale),
                "metric": w.metric,
                "higher_is_better": w.higher_is_better,
                "best": best,
                "median": {k: statistics.median(v) for k, v in per_loop.items() if v},
                "rel_spread": {
                    k: (max(v) - min(v)) / statistics.median(v) for k, v in per_loop.items() if v
                },
                "rounds": per_loop,
                "round_details": extras[w.name],
                "speedup_ringline_vs_uvloop": vs_uv,
                "speedup_ringline_vs_asyncio": vs_aio,
                "errors": errors.get(w.name, {}),
            }
        )

        def cell(ln: str, w: Work = w, best: dict = best) -> str:
            if best[ln] is not None:
                return _fmt(best[ln], w)
            if ln in errors.get(w.name, {}):
                return "ERR"
            return "skip" if ln in loops else "-"

        rows.append(
            [
                w.title(scale),
                *(cell(ln) for ln in ALL_LOOPS),
                f"{vs_uv:.2f}x" if vs_uv else "-",
                f"{vs_aio:.2f}x" if vs_aio else "-",
            ]
        )
    gm_uv, gm_aio = _geomean(vs_uv_all), _geomean(vs_aio_all)
    rows.append(
        [
            "geometric mean",
            "",
            "",
            "",
            f"{gm_uv:.2f}x" if gm_uv else "-",
            f"{gm_aio:.2f}x" if gm_aio else "-",
        ]
    )

    header = ["workload", *ALL_LOOPS, "ringline/uvloop", "ringline/asyncio"]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    line = " | ".join
    print()
    print(line(h.ljust(widths[i]) if i == 0 else h.rjust(widths[i]) for i, h in enumerate(header)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(line(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row)))
    print("ratios are ringline speedups (>1.00x = ringline faster); times: lower is better")
    for name, why in skipped.items():
        print(f"note: {name}: {why}")
    spreads = [
        (spread, f"{s['work']}[{ln}]")
        for s in summary
        for ln, spread in s.get("rel_spread", {}).items()
        if len(s["rounds"][ln]) > 1
    ]
    noisy = sorted((x for x in spreads if x[0] > NOISY_SPREAD), reverse=True)
    if noisy:
        print(
            f"note: {len(noisy)} of {len(spreads)} measurements varied by more than "
            f"{NOISY_SPREAD:.0%} between rounds (worst: {noisy[0][1]} {noisy[0][0]:.0%}); "
            "busy machine? best-of-N absorbs some of it, more --rounds helps"
        )

    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.json or HERE / "results" / f"{tag}-{stamp}.json"  # git-ignored directory
    payload = {
        "timestamp": stamp,
        "argv": sys.argv[1:],
        "python": sys.version,
        "platform": platform.platform(),
        "pin": pin_note,
        "rounds": rounds,
        "scale": scale,
        "loops_requested": loops,
        "loops": loop_info,
        "elapsed_s": time.monotonic() - t_start,
        "geomean_ringline_vs_uvloop": gm_uv,
        "geomean_ringline_vs_asyncio": gm_aio,
        "results": summary,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out}")
    return 1 if errors else 0
