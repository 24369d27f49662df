"""Instructions per request of an echo server under callgrind, startup cancelled:
(total_long - total_short) / (requests_long - requests_short).  Counts repeat
whatever else the machine does, so two trees compare even on a busy host.

    python bench/instr_count.py TREE KIND [conns] [size] [--zeroed] [--keep DIR]

--keep DIR: keep the callgrind dumps there (named KIND-short/long/zeroed.cg)
for function-level diffs between trees.

--zeroed: one run instead, the server's counters zeroed once it is READY
(callgrind_control -z) and dumped after the load: total / requests.  Steadier
when the machine's load changes between the two runs of the default method.

KIND: native (ringline's native API echo), protocol (an asyncio Protocol echo
on ringline's loop), portable (the native API echo on the portable backend:
RINGLINE_BACKEND=portable, uvloop when installed) or uvloop (the Protocol echo
on uvloop, the portable backend's yardstick).

TREE is a checkout with the release build in place (its src/ is imported);
the load generator is bench/c/build/loadgen of this checkout (make -C bench/c).
"""

import glob
import json
import os
import random
import shutil
import subprocess
import sys

ZEROED = "--zeroed" in sys.argv
argv = [a for a in sys.argv if a != "--zeroed"]
KEEP = None
if "--keep" in argv:
    KEEP = argv[argv.index("--keep") + 1]
    del argv[argv.index("--keep"):argv.index("--keep") + 2]
    os.makedirs(KEEP, exist_ok=True)
tree, kind = argv[1], argv[2]
conns = int(argv[3]) if len(argv) > 3 else 1
size = int(argv[4]) if len(argv) > 4 else 64
HERE = os.path.dirname(os.path.abspath(__file__))
PY = sys.executable
LG = os.path.join(HERE, "c", "build", "loadgen")

def one(duration, tag):
    port = random.randint(20000, 40000)
    out = f"/tmp/cg.{os.getpid()}.{port}"
    srv = {"native": [f"{tree}/bench/servers/ringline_native.py"],
           "portable": [f"{tree}/bench/servers/ringline_native.py"],
           "protocol": [f"{tree}/bench/servers/asyncio_protocol.py", "--loop", "ringline"],
           "uvloop": [f"{tree}/bench/servers/asyncio_protocol.py", "--loop", "uvloop"]}[kind]
    env = dict(os.environ, PYTHONPATH=f"{tree}/src")
    if kind == "portable":
        env["RINGLINE_BACKEND"] = "portable"
    p = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", PY, *srv,
                          "--port", str(port)], env=env, cwd=tree,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline()
    assert line.startswith("READY"), line
    if ZEROED:
        subprocess.run(["callgrind_control", "-z", str(p.pid)], capture_output=True, timeout=300)
    lg = subprocess.run([LG, "--port", str(port), "--conns", str(conns), "--size", str(size),
                         "--depth", "1", "--duration", str(duration), "--warmup", "0"],
                        capture_output=True, text=True)
    # SIGINT does not reach a server blocked in io_uring_enter under
    # valgrind: dump the counters on request, then kill it.
    subprocess.run(["callgrind_control", "-d", str(p.pid)], capture_output=True, timeout=300)
    p.kill()
    p.wait()
    dumps = sorted(glob.glob(out + "*"), key=os.path.getmtime)
    out = dumps[-1]
    req = json.loads(lg.stdout.strip().splitlines()[-1])["total_requests"]
    ann = subprocess.run(["callgrind_annotate", out], capture_output=True, text=True).stdout
    tot = next(int(row.split()[0].replace(",", "")) for row in ann.splitlines()
               if "PROGRAM TOTALS" in row)
    if KEEP:
        shutil.copy(out, os.path.join(KEEP, f"{kind}-{tag}.cg"))
    for f in dumps:
        os.unlink(f)
    return tot, req

if ZEROED:
    t, r = one(4, "zeroed")
    print(f"{tree} {kind} conns={conns} size={size}: {t / r:.0f} instr/req "
          f"({r} requests, counters zeroed at READY)")
    sys.exit(0)
t1, r1 = one(2, "short")
t2, r2 = one(8, "long")
print(f"{tree} {kind} conns={conns} size={size}: {(t2 - t1) / (r2 - r1):.0f} instr/req "
      f"({r1}, {r2} requests)")
