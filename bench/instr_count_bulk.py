"""Instructions per MB of a streams bulk run under callgrind, startup cancelled:
(total_long - total_short) / (MB_long - MB_short).  User-space instructions
only: the kernel's copies and page faults are not counted, so minor page
faults per MB are printed alongside, from two runs without valgrind (whose
own heap handling hides glibc's).

    python bench/instr_count_bulk.py TREE [loop] [work] [short_mb] [long_mb]

TREE is a checkout with the release build in place (its src/ is imported);
loop is ringline (default), uvloop or asyncio; work is a row of
bench/streams_bench.py (bulk_1c, default, or bulk_10c).
"""

import glob
import os
import subprocess
import sys

tree = sys.argv[1]
loop = sys.argv[2] if len(sys.argv) > 2 else "ringline"
work = sys.argv[3] if len(sys.argv) > 3 else "bulk_1c"
short_mb = float(sys.argv[4]) if len(sys.argv) > 4 else 50
long_mb = float(sys.argv[5]) if len(sys.argv) > 5 else 200
HERE = os.path.dirname(os.path.abspath(__file__))

CHILD = """
import asyncio, resource, sys
sys.path.insert(0, {here!r})
import streams_bench as sb
from _harness import make_loop
loop = make_loop({loop!r})
asyncio.set_event_loop(loop)
getattr(sb, "bench_" + {work!r})(loop, 1.0, {{"total_mb": {mb!r}}})
ru = resource.getrusage(resource.RUSAGE_SELF)
print("RUSAGE", ru.ru_minflt, ru.ru_stime)
"""


def native(mb):
    env = dict(os.environ, PYTHONPATH=f"{tree}/src")
    code = CHILD.format(here=HERE, loop=loop, work=work, mb=mb)
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=600, check=True)
    row = next(x.split() for x in p.stdout.splitlines() if x.startswith("RUSAGE"))
    return int(row[1]), float(row[2])


def one(mb):
    out = f"/tmp/cgb.{os.getpid()}.{int(mb)}"
    env = dict(os.environ, PYTHONPATH=f"{tree}/src")
    code = CHILD.format(here=HERE, loop=loop, work=work, mb=mb)
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                    sys.executable, "-c", code], env=env, capture_output=True, text=True,
                   timeout=1800, check=True)
    ann = subprocess.run(["callgrind_annotate", out], capture_output=True, text=True).stdout
    tot = next(int(row.split()[0].replace(",", "")) for row in ann.splitlines()
               if "PROGRAM TOTALS" in row)
    for f in glob.glob(out + "*"):
        os.unlink(f)
    return tot


t1, t2 = one(short_mb), one(long_mb)
(f1, s1), (f2, s2) = native(short_mb), native(long_mb)
mb = long_mb - short_mb
print(f"{tree} {loop} {work}: {(t2 - t1) / mb:,.0f} instr/MB; without valgrind "
      f"{(f2 - f1) / mb:.1f} minflt/MB, {(s2 - s1) / mb * 1e3:.2f} ms sys/MB "
      f"({short_mb:g} and {long_mb:g} MB)")
