"""Instructions per request of the HTTP hello server (bench/servers/http_hello.py)
under callgrind, start-up cancelled: (total_long - total_short) /
(requests_long - requests_short).  The HTTP twin of instr_count.py.

    python bench/http_instr.py TREE [LOOP] [conns] [--zeroed] [--keep DIR]

LOOP: ringline (default), uvloop or asyncio.  TREE is a checkout with its
build in place (its src/ is imported; its bench/servers/http_hello.py runs).
The server runs pinned to CPU 0 under valgrind, wrk (one thread, ``conns``
keep-alive connections, default 50) pinned to CPU 1 drives it for 3 s and
12 s; wrk's request count is what the server answered, to within the
requests in flight when wrk stops (at most ``conns``, on both runs alike).

--zeroed: one 6 s run instead, the server's counters zeroed once it is READY
(callgrind_control -z): total / requests (includes the 50 accepts and
closes).  --keep DIR: keep the callgrind dumps there (for callgrind_annotate
diffs between trees).
"""

import glob
import os
import random
import re
import shutil
import subprocess
import sys

args = sys.argv[1:]
ZEROED = "--zeroed" in args
args = [a for a in args if a != "--zeroed"]
KEEP = None
if "--keep" in args:
    i = args.index("--keep")
    KEEP = args[i + 1]
    del args[i:i + 2]
    os.makedirs(KEEP, exist_ok=True)
tree = args[0]
loop = args[1] if len(args) > 1 else "ringline"
conns = int(args[2]) if len(args) > 2 else 50
PY = sys.executable
WRK = shutil.which("wrk")


def one(duration: int, tag: str) -> tuple[int, int]:
    port = random.randint(20000, 40000)
    out = f"/tmp/cg.http.{os.getpid()}.{port}"
    env = dict(os.environ, PYTHONPATH=f"{tree}/src")
    p = subprocess.Popen(["taskset", "-c", "0", "valgrind", "--tool=callgrind",
                          f"--callgrind-out-file={out}", PY,
                          f"{tree}/bench/servers/http_hello.py", "--loop", loop,
                          "--port", str(port)], env=env, cwd=tree,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    if not line.startswith("READY"):
        p.kill()
        raise SystemExit(f"server did not start: {line!r}\n{p.stderr.read()[-3000:]}")
    if ZEROED:
        subprocess.run(["callgrind_control", "-z", str(p.pid)], capture_output=True, timeout=300)
    wrk = subprocess.run(["taskset", "-c", "1", WRK, "-t1", f"-c{conns}", f"-d{duration}s",
                          "--timeout", "30s", f"http://127.0.0.1:{port}/"],
                         capture_output=True, text=True)
    m = re.search(r"^\s*(\d+) requests in", wrk.stdout, re.M)
    assert m, wrk.stdout + wrk.stderr
    assert "Socket errors" not in wrk.stdout and "Non-2xx" not in wrk.stdout, wrk.stdout
    req = int(m.group(1))
    # SIGINT does not reach a server blocked in io_uring_enter under
    # valgrind: dump the counters on request, then kill it.
    subprocess.run(["callgrind_control", "-d", str(p.pid)], capture_output=True, timeout=300)
    p.kill()
    p.wait()
    dumps = sorted(glob.glob(out + "*"), key=os.path.getmtime)
    last = dumps[-1]
    ann = subprocess.run(["callgrind_annotate", last], capture_output=True, text=True).stdout
    tot = next(int(row.split()[0].replace(",", "")) for row in ann.splitlines()
               if "PROGRAM TOTALS" in row)
    if KEEP:
        shutil.copy(last, os.path.join(KEEP, f"{loop}-{tag}.cg"))
    for f in dumps:
        os.unlink(f)
    return tot, req


if ZEROED:
    t, r = one(6, "zeroed")
    print(f"{tree} http {loop} conns={conns}: {t / r:.0f} instr/req "
          f"({r} requests, counters zeroed at READY)")
    sys.exit(0)
t1, r1 = one(3, "short")
t2, r2 = one(12, "long")
print(f"{tree} http {loop} conns={conns}: {(t2 - t1) / (r2 - r1):.0f} instr/req "
      f"({r1}, {r2} requests)")
