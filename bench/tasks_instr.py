"""Instructions per operation of tasks_bench.py's workloads under callgrind.

    python bench/tasks_instr.py [--loops asyncio,uvloop,ringline] [--bench gather,tree]
    python bench/tasks_instr.py --annotate gather          # keep the .out files

Each (workload, loop) runs twice under ``valgrind --tool=callgrind``, at two
sizes; (instructions_big - instructions_small) / (ops_big - ops_small) cancels
start-up and imports, so the figure is the per-operation cost and repeats on a
busy machine (unlike wall time).  One "op" is what the workload counts: a
task for gather/create_task/trees, an item for asyncgen, a round trip or an
acquire for the primitives.  The trees change size by a level, so their ops
are the tasks of the bigger tree minus the smaller's.

``--keep DIR`` leaves the callgrind output files there, for
``callgrind_annotate --inclusive=yes DIR/<work>-<loop>-big.out``.
PYTHONHASHSEED is fixed so that runs repeat.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

# workload -> (small size, big size, ops(size)); sizes are tasks_bench "scale"s
# except for the trees, whose size is a number of levels.
BR = 6


def _tree_tasks(levels: int) -> int:
    return sum(BR**i for i in range(levels + 1))


SIZES = {
    "gather": (2_000, 6_000, lambda n: n),
    "create_task": (2_000, 6_000, lambda n: n),
    # 4 -> 5 levels (7,776 tasks apart), not 3 -> 4: with only 1,296 tasks
    # between the runs, which of them a cyclic-GC pass happens to fall in
    # moved the per-task figure by up to 10% (3.13 TaskGroup tree).
    "tree": (4, 5, _tree_tasks),
    "taskgroup_tree": (4, 5, _tree_tasks),
    "eager_tree": (4, 5, _tree_tasks),
    "tree_io": (4, 5, lambda n: _tree_tasks(n - 1)),  # its tree has levels - 1
    "tree_memo": (3, 4, _tree_tasks),
    "asyncgen": (500, 1_500, lambda n: n * 10),
    "queue": (2_000, 6_000, lambda n: n),
    "event": (2_000, 6_000, lambda n: n),
    "lock": (2_000, 6_000, lambda n: n),
    "semaphore": (2_000, 6_000, lambda n: n),
    "wait_for": (1_000, 3_000, lambda n: n),
    "timeout": (2_000, 6_000, lambda n: n),
}
DEFAULT = ("gather", "create_task", "tree", "taskgroup_tree", "eager_tree", "asyncgen")

CHILD = r"""
import sys, asyncio
sys.path.insert(0, {bench!r})
import tasks_bench as tb
from _harness import make_loop, Skip
work, loopname, size = {work!r}, {loop!r}, {size!r}
w = tb.WORKS[work]
if "tree" in work:
    tb._levels = lambda scale: size
    scale = 1.0
else:
    scale = size / w.base
loop = make_loop(loopname)
try:
    w.fn(loop, scale, {{}})
except Skip as e:
    print("SKIP", e)
loop.close()
"""


def run_one(py: str, work: str, loop: str, size: int, out: Path, src: Path) -> int | None:
    code = CHILD.format(bench=str(HERE), work=work, loop=loop, size=size)
    # RINGLINE_BACKEND=uring: a tree whose extension does not import must
    # fail here, not fall back to the portable backend (uvloop) unnoticed.
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=str(src), RINGLINE_BACKEND="uring")
    p = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                        py, "-c", code], env=env, capture_output=True, text=True)
    if "SKIP" in p.stdout:
        return None
    if p.returncode != 0:
        # e.g. uvloop 0.23 under 3.13.0's eager_task_factory: report, go on
        last = (p.stderr.strip().splitlines() or ["?"])[-1]
        print(f"note: {work} on {loop} failed: {last[:200]}", file=sys.stderr)
        return None
    for line in out.read_text().splitlines():
        if line.startswith("summary:") or line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {out}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loops", default="asyncio,uvloop,ringline")
    ap.add_argument("--bench", default=",".join(DEFAULT))
    ap.add_argument("--keep", type=Path, help="directory for the callgrind files")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--src", type=Path, default=REPO / "src",
                    help="the ringline tree to import (another checkout's src/, built in place)")
    args = ap.parse_args()
    loops = args.loops.split(",")
    works = args.bench.split(",")
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="tasks-instr-"))
    tmp.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, float | None]] = {}
    print(f"{'workload':16}" + "".join(f"{ln:>12}" for ln in loops) + "  (instructions per op)")
    for work in works:
        small, big, ops = SIZES[work]
        row: dict[str, float | None] = {}
        for loop in loops:
            a = run_one(args.python, work, loop, small, tmp / f"{work}-{loop}-small.out", args.src)
            b = run_one(args.python, work, loop, big, tmp / f"{work}-{loop}-big.out", args.src)
            row[loop] = None if a is None or b is None else (b - a) / (ops(big) - ops(small))
        results[work] = row
        print(f"{work:16}" + "".join(
            f"{row[ln]:>12,.0f}" if row[ln] is not None else f"{'skip':>12}" for ln in loops),
            flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if not args.keep:
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
