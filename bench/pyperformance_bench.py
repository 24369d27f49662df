"""pyperformance's asyncio benchmarks, unchanged, on asyncio, uvloop and ringline.

    python bench/pyperformance_bench.py                      # every async benchmark
    python bench/pyperformance_bench.py --bench async_tree,asyncio_tcp_ssl
    python bench/pyperformance_bench.py --quick              # pyperf --fast, 3 benchmarks
    python bench/pyperformance_bench.py --list

These are public benchmarks nobody here wrote: the ``run_benchmark.py`` files of
the pinned pyperformance source distribution (``PYPERFORMANCE``), downloaded once
with ``pip download --no-binary :all:`` into ``build/pyperformance/`` and run as
pyperformance runs them, through pyperf (worker processes, calibrated loops,
warm-ups).  Nothing of them is copied into this repository.

The variants come from the sdist's own ``bm_*.toml`` files (name, arguments,
``requires-python``): the ``async_tree`` family (gather / TaskGroup trees with
no I/O, 50 ms sleeps, memoized sleeps, mixed CPU), ``async_generators``,
``asyncio_tcp`` and ``asyncio_tcp_ssl`` (1 GB over one loopback connection,
server and client on the same loop) and ``asyncio_websockets`` (when
``websockets`` is installed).

The loop is injected the way ``uvloop.install()`` does it: a ``sitecustomize``
module on the workers' ``PYTHONPATH`` sets the event-loop policy named by
``RINGLINE_PYPERF_LOOP`` (``asyncio`` leaves the default), so pyperf's
``asyncio.new_event_loop()`` builds the loop under test.  The benchmark files
are not edited.  Workers are pinned to one CPU (pyperf ``--affinity``) and,
where ``unshare`` works, run in a network namespace with only loopback up.
Loops run round-robin per benchmark, the first rotating between rounds; the
score is the lowest pyperf mean over the rounds.  Table: ringline's speedup
over uvloop and asyncio (>1.00x = ringline faster).  JSON under
``bench/results/pyperformance-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = ROOT / "build" / "pyperformance"
PYPERFORMANCE = "1.14.0"
LOOPS = ("asyncio", "uvloop", "ringline")
FAMILIES = ("bm_async_tree", "bm_async_generators", "bm_asyncio_tcp", "bm_asyncio_websockets")
QUICK = ("async_tree", "async_generators", "asyncio_tcp_ssl")
ENV_LOOP = "RINGLINE_PYPERF_LOOP"

# Imported first by every worker (it is first on PYTHONPATH); sets the policy.
SITECUSTOMIZE = f'''\
import os
_loop = os.environ.get("{ENV_LOOP}", "asyncio")
if _loop != "asyncio":
    import asyncio
    if _loop == "ringline":
        import ringline
        asyncio.set_event_loop_policy(ringline.EventLoopPolicy())
    elif _loop == "uvloop":
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    else:
        raise SystemExit("unknown {ENV_LOOP}=" + _loop)
'''


def fetch() -> Path:
    """The unpacked benchmarks directory of the pinned sdist (downloaded once)."""
    bench_dir = OUT / f"pyperformance-{PYPERFORMANCE}" / "pyperformance" / "data-files" / "benchmarks"
    if bench_dir.is_dir():
        return bench_dir
    OUT.mkdir(parents=True, exist_ok=True)
    sdist = OUT / f"pyperformance-{PYPERFORMANCE}.tar.gz"
    if not sdist.exists():
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        "--no-binary", ":all:", "-d", str(OUT),
                        f"pyperformance=={PYPERFORMANCE}"], check=True)
    with tarfile.open(sdist) as tar:
        tar.extractall(OUT, filter="data")
    return bench_dir


def variants(bench_dir: Path) -> list[dict]:
    """One entry per bm_*.toml of the async families that this Python may run."""
    here = sys.version_info[:2]
    found = []
    for fam in FAMILIES:
        for toml in sorted((bench_dir / fam).glob("*.toml")):
            meta = tomllib.loads(toml.read_text())
            tool = meta.get("tool", {}).get("pyperformance", {})
            name = tool.get("name") or fam[3:]
            need = meta.get("project", {}).get("requires-python", "")
            if need.startswith(">="):
                major, minor = (int(x) for x in need[2:].split(".")[:2])
                if here < (major, minor):
                    continue
            found.append({"name": name, "dir": bench_dir / fam,
                          "args": list(tool.get("extra_opts", []))})
    return found


def _netns(cmd: list[str]) -> list[str]:
    """Only loopback: the websockets benchmark resolves and binds "" (all addresses)."""
    if os.geteuid() == 0 and shutil.which("unshare") and shutil.which("ip"):
        probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
        if probe.returncode == 0:
            return ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *cmd]
    return cmd


def run_one(var: dict, loop: str, inject: Path, cpu: int | None, fast: bool,
            timeout: float) -> dict:
    out = Path(tempfile.mkstemp(suffix=".json", dir=OUT)[1])
    out.unlink()
    cmd = [sys.executable, str(var["dir"] / "run_benchmark.py"), *var["args"],
           "--quiet", "-o", str(out), f"--inherit-environ={ENV_LOOP}"]
    if fast:
        cmd.append("--fast")
    if cpu is not None:
        cmd.append(f"--affinity={cpu}")
    env = dict(os.environ, **{ENV_LOOP: loop})
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(inject), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")) if p)
    try:
        proc = subprocess.run(_netns(cmd), env=env, capture_output=True, text=True,
                              timeout=timeout, cwd=var["dir"])
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s"}
    if proc.returncode != 0 or not out.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": tail[0][:200]}
    import pyperf
    bench = pyperf.Benchmark.load(str(out))
    out.unlink()
    values = bench.get_values()
    return {"mean_s": bench.mean(), "stdev_s": bench.stdev() if len(values) > 1 else 0.0,
            "values": len(values)}


def _fmt(cell: dict | None) -> str:
    if not cell:
        return "-"
    if "error" in cell:
        return "ERR"
    m = cell["mean_s"]
    return f"{m * 1e3:.1f} ms" if m >= 1e-3 else f"{m * 1e6:.1f} us"


def _ratio(ring: dict | None, other: dict | None) -> float | None:
    if not ring or not other or "error" in ring or "error" in other:
        return None
    return other["mean_s"] / ring["mean_s"]


def _x(ratio: float | None) -> str:
    return f"{ratio:.2f}x" if ratio is not None else "-"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", help="comma-separated benchmark names (see --list)")
    ap.add_argument("--loops", default=",".join(LOOPS))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="pyperf --fast, 1 round, 3 benchmarks")
    ap.add_argument("--fast", action="store_true", help="pyperf --fast (fewer processes)")
    ap.add_argument("--cpu", type=int, default=1, help="pin the workers to this CPU (-1: no)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per pyperf run")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    try:
        import pyperf  # noqa: F401  (the runner the benchmark files use)
    except ImportError:
        print("pyperformance_bench: needs pyperf (pip install pyperf)", file=sys.stderr)
        return 2
    bench_dir = fetch()
    all_vars = variants(bench_dir)
    if args.list:
        for v in all_vars:
            print(f"{v['name']:36} {v['dir'].name}/run_benchmark.py {' '.join(v['args'])}")
        return 0
    chosen = args.bench.split(",") if args.bench else list(QUICK if args.quick else [])
    if chosen:
        unknown = set(chosen) - {v["name"] for v in all_vars}
        if unknown:
            print(f"unknown or not for this Python: {sorted(unknown)}", file=sys.stderr)
            return 2
        all_vars = [v for v in all_vars if v["name"] in chosen]
    try:
        import websockets  # noqa: F401
    except ImportError:
        all_vars = [v for v in all_vars if v["name"] != "asyncio_websockets"]
    loops = args.loops.split(",")
    rounds = 1 if args.quick else args.rounds
    fast = args.fast or args.quick
    cpu = None if args.cpu < 0 or args.cpu >= (os.cpu_count() or 1) else args.cpu

    inject = OUT / "inject"
    inject.mkdir(parents=True, exist_ok=True)
    (inject / "sitecustomize.py").write_text(SITECUSTOMIZE)

    pin = f"pinned to CPU {cpu}" if cpu is not None else "not pinned"
    print(f"pyperformance {PYPERFORMANCE}, Python {sys.version.split()[0]}, "
          f"{'pyperf --fast, ' if fast else ''}{rounds} round(s), {pin}", flush=True)
    best: dict[str, dict[str, dict]] = {}
    for var in all_vars:
        row = best.setdefault(var["name"], {})
        for r in range(rounds):
            order = loops[r % len(loops):] + loops[:r % len(loops)]
            for loop in order:
                cell = run_one(var, loop, inject, cpu, fast, args.timeout)
                print(f"  round {r + 1} {var['name']:34} {loop:9} {_fmt(cell)}"
                      + (f"  ({cell['error']})" if "error" in cell else ""), flush=True)
                old = row.get(loop)
                if old is None or "error" in old or ("error" not in cell
                                                     and cell["mean_s"] < old["mean_s"]):
                    row[loop] = cell

    cols = [lp for lp in LOOPS if lp in loops]
    head = f"{'benchmark':34} | " + " | ".join(f"{c:>9}" for c in cols)
    if "ringline" in cols:
        head += " | ringline/uvloop | ringline/asyncio"
    print("\n" + head + "\n" + "-" * len(head))
    geo: dict[str, list[float]] = {"uvloop": [], "asyncio": []}
    for name, row in best.items():
        line = f"{name:34} | " + " | ".join(f"{_fmt(row.get(c)):>9}" for c in cols)
        if "ringline" in cols:
            for other, width in (("uvloop", 15), ("asyncio", 16)):
                x = _ratio(row.get("ringline"), row.get(other))
                if x is not None:
                    geo[other].append(x)
                line += f" | {_x(x):>{width}}"
        print(line)
    if "ringline" in cols:
        g = {k: (math.exp(sum(map(math.log, v)) / len(v)) if v else None) for k, v in geo.items()}
        print(f"{'geometric mean':34} | " + " | ".join(" " * 9 for _ in cols)
              + f" | {_x(g['uvloop']):>15}"
              + f" | {_x(g['asyncio']):>16}")
    print("ratios are ringline speedups (>1.00x = ringline faster); pyperf means, "
          "best of the rounds")
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = args.json or HERE / "results" / f"pyperformance-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pyperformance": PYPERFORMANCE, "python": sys.version,
                                "fast": fast, "rounds": rounds, "results": best}, indent=1))
    print(f"wrote {path}")
    return 1 if any("error" in c for row in best.values() for c in row.values()
                    if c is not None) else 0


if __name__ == "__main__":
    sys.exit(main())
