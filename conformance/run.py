"""Run third-party asyncio test suites, unchanged, on asyncio, uvloop and ringline.

Usage (from the repository root, after the in-place build)::

    PYTHONPATH=src python conformance/run.py [--suite NAME ...] [--quick] [--list]

For each suite the pinned source distribution (``conformance/pins.txt``) is downloaded
once with ``pip download --no-binary :all:`` into ``build/conformance/sdist`` and unpacked
into ``build/conformance/src``.  Its tests then run in three pytest processes, one per
loop, each inside ``unshare -n`` with only loopback up, with the ``loopswap`` plugin
(``conformance/loopswap.py``) choosing the loop.  Results are compared per test: of the
N tests that pass on both asyncio and uvloop, M pass on ringline, and the rest are listed
with the failure message.  Everything is kept under ``build/conformance/``: per run a
pytest log, a junit XML file and a JSON-lines result file; ``summary.md`` and
``summary.json`` for the whole invocation.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = ROOT / "build" / "conformance"
SDIST = OUT / "sdist"
SRC = OUT / "src"
LOOPS = ("asyncio", "uvloop", "ringline")
PASS = ("passed",)


def read_pins() -> dict[str, str]:
    """``name -> version`` from pins.txt (``name==version`` lines, ``#`` comments)."""
    pins = {}
    for line in (HERE / "pins.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.strip()] = version.strip()
    return pins


def fetch_source(name: str, version: str) -> Path:
    """Download (once) and unpack the pinned sdist; returns the unpacked directory.

    A suite whose sdist has no tests is vendored instead: ``vendor/NAME-VERSION-tests.tar.gz``
    (its repository's tests/ at the release tag, see README), unpacked the same way.
    """
    dest = SRC / f"{name}-{version}"
    if dest.is_dir():
        return dest
    SDIST.mkdir(parents=True, exist_ok=True)
    archive = next(iter(SDIST.glob(f"{name}-{version}.tar.gz")), None)
    vendored = HERE / "vendor" / f"{name}-{version}-tests.tar.gz"
    if vendored.exists():
        archive = vendored
    if archive is None:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        "--no-binary", ":all:", "-d", str(SDIST), f"{name}=={version}"],
                       check=True)
        archive = next(SDIST.glob(f"{name}-{version}.tar.gz"))
    SRC.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        tar.extractall(SRC, filter="data")
    return dest


def pinned_install(name: str, version: str) -> Path:
    """Install (once) the pinned release into its own directory, for PYTHONPATH.

    For a suite whose tests are pinned to another release than the venv's
    (``Suite.own_install``): the tests then exercise the release they were written for,
    and the venv keeps its own.
    """
    dest = OUT / "site" / f"{name}-{version}"
    if not (dest / f"{name}-{version}.dist-info").is_dir():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                        "--target", str(dest), f"{name}=={version}"], check=True)
    return dest


def installed_version(dist: str) -> str | None:
    from importlib import metadata
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@dataclasses.dataclass
class Suite:
    """How one suite is run and how its test ids line up across loops."""

    name: str
    #: pins.txt name of the sdist that carries the tests (None: the interpreter's own).
    dist: str | None
    #: pytest arguments (paths relative to ``cwd``), and the --quick subset.
    args: list[str]
    quick: list[str]
    #: working directory: relative to the unpacked sdist, or absolute.
    cwd: str = "."
    #: maps a node id to the id compared across loops (None drops the test).
    key: Callable[[str], str | None] = lambda nodeid: nodeid
    timeout: int = 60           # per test (pytest-timeout)
    budget: int = 1800          # per run (one loop), seconds
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    #: extra pytest arguments per loop (a suite's own loop option).
    loop_args: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    #: run against the pinned release installed apart (pinned_install), not the venv's.
    own_install: bool = False
    note: str = ""


def _uvloop_key(nodeid: str) -> str | None:
    # tests/test_tcp.py::Test_AIO_TCP::test_x and ::Test_UV_TCP::test_x are one test.
    parts = nodeid.split("::")
    if len(parts) >= 3:
        parts[1] = re.sub(r"AIO|UV", "*", parts[1])
    return "::".join(parts)


def _anyio_key(nodeid: str) -> str | None:
    # test_x[asyncio] (asyncio, ringline) and test_x[asyncio+uvloop] are one test.
    return re.sub(r"\basyncio\+uvloop\b", "asyncio", nodeid)


# aiohttp's pytest.ini addopts need xdist and pytest-cov; replaced by its own -m filter.
# Its benchmarks (pytest-codspeed) and the autobahn suite (docker) are not conformance.
_AIOHTTP_OPTS = ["-o", "addopts=", "-m", "not dev_mode and not autobahn and not internal",
                 "--ignore=tests/autobahn", "--ignore-glob=tests/test_benchmarks_*"]


# The modules that put real sockets, servers and the loop to work (~900 loop tests, of
# the suite's ~3,200): a subset for a shorter run, --suite aiohttp-net.
_AIOHTTP_MODULES = [f"tests/test_{m}.py" for m in (
    "client_functional", "web_functional", "web_sendfile_functional", "client_ws_functional",
    "web_websocket_functional", "run_app", "web_server", "streams", "flowcontrol_streams",
    "web_runner", "client_proto", "web_protocol", "test_utils")]


# A tree with no pytest configuration of its own (websockets runs its tests with
# unittest): without this pytest would adopt ringline's pyproject.toml up the path.
_NO_INI = ["-c", "/dev/null", "--rootdir", "."]


def _aiohttp_key(nodeid: str) -> str | None:
    # test_x[pyloop-...] (asyncio, ringline) and test_x[uvloop-...] are one test.
    return re.sub(r"(?<=[\[-])uvloop(?=[\]-])", "pyloop", nodeid)


def cpython_test_dir() -> Path:
    import test.test_asyncio as t  # the running interpreter's own suite
    return Path(t.__file__).resolve().parent


SUITES: dict[str, Suite] = {
    "uvloop": Suite(
        "uvloop", "uvloop", ["tests"], ["tests/test_base.py", "tests/test_context.py"],
        key=_uvloop_key,
        note="Test_UV_* classes run on uvloop, Test_AIO_* on asyncio and, with "
             "tb.AIOTestCase's loop factory swapped, on ringline"),
    "cpython": Suite(
        "cpython", None, ["--pyargs", "test.test_asyncio"],
        ["--pyargs", "test.test_asyncio.test_tasks", "test.test_asyncio.test_streams"],
        timeout=60, budget=2400,
        note="the interpreter's Lib/test/test_asyncio; asyncio's default policy builds "
             "the loop under test, and so do the selector-loop classes of the "
             "loop-parametrised mixins (test_events, test_sock_lowlevel, test_sendfile, "
             "test_server, test_sslproto, test_buffered_proto)"),
    "anyio": Suite(
        "anyio", "anyio", ["tests", "-m", "not network"],
        ["tests/test_taskgroups.py", "tests/test_sockets.py"],
        key=_anyio_key, timeout=30,
        note="anyio[asyncio] on asyncio and ringline (default policy patched), "
             "anyio[asyncio+uvloop] (its own loop_factory) on uvloop"),
    "aiohttp": Suite(
        "aiohttp", "aiohttp", [*_AIOHTTP_OPTS, "tests"],
        [*_AIOHTTP_OPTS, "tests/test_web_functional.py"], budget=2400, key=_aiohttp_key,
        timeout=30,
        loop_args={"asyncio": ["--aiohttp-loop=pyloop"], "uvloop": ["--aiohttp-loop=uvloop"],
                   "ringline": ["--aiohttp-loop=pyloop"]},
        note="the tests that take its loop fixture; "
             "its pytest plugin's --aiohttp-loop: pyloop (asyncio.new_event_loop, which "
             "the patched default policy makes ringline's) or uvloop"),
    "aiohttp-net": Suite(
        "aiohttp-net", "aiohttp", [*_AIOHTTP_OPTS, *_AIOHTTP_MODULES],
        [*_AIOHTTP_OPTS, "tests/test_run_app.py"], key=_aiohttp_key, timeout=30,
        loop_args={"asyncio": ["--aiohttp-loop=pyloop"], "uvloop": ["--aiohttp-loop=uvloop"],
                   "ringline": ["--aiohttp-loop=pyloop"]},
        note="aiohttp's socket-level modules only (a third of its loop tests)"),
    "uvicorn": Suite(
        "uvicorn", "uvicorn", ["-o", "addopts=-rxXs", "tests"],
        ["-o", "addopts=-rxXs", "tests/protocols"], timeout=30,
        note="anyio's asyncio backend, through the patched default policy; its "
             "pytest.ini '-n 8' (xdist) is replaced"),
    "httpx": Suite(
        "httpx", "httpx", ["-m", "not network", "tests"], ["tests/client"], timeout=30,
        note="anyio's asyncio backend, through the patched default policy"),
    "tornado": Suite(
        "tornado", "tornado",
        [*_NO_INI, "-o", "python_files=*_test.py", "--pyargs", "tornado.test"],
        [*_NO_INI, "-o", "python_files=*_test.py", "--pyargs", "tornado.test.iostream_test"],
        timeout=60,
        note="tornado.test as installed (the package carries its tests; its own runner "
             "is unittest: collected by pytest, with that runner's setup done in "
             "loopswap); tornado's IOLoop is the asyncio loop the patched default "
             "policy builds"),
    "websockets": Suite(
        "websockets", "websockets", [*_NO_INI, "tests/asyncio", "tests/legacy"],
        [*_NO_INI, "tests/asyncio/test_connection.py"], timeout=60, own_install=True,
        note="its repository's tests/ at the release tag (vendored: the sdist has none), "
             "against that release installed apart; IsolatedAsyncioTestCase and the legacy "
             "tests' asyncio.new_event_loop() build the loop through the patched default "
             "policy"),
}


def _default_signals() -> None:
    # A driver started under nohup or with SIGINT ignored must not hand that on: suites
    # check what those signals do to their children.
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_one(suite: Suite, loop: str, quick: bool) -> tuple[dict[str, dict[str, object]], dict]:
    """Run one suite on one loop; restart after a crash without the finished tests."""
    base = OUT / f"{suite.name}-{loop}{'-quick' if quick else ''}"
    results_path = base.with_suffix(".jsonl")
    skip_path = base.with_suffix(".skip")
    log_path = base.with_suffix(".log")
    for p in (results_path, skip_path, log_path):
        p.unlink(missing_ok=True)
    env_rootdir: list[str] = []
    if suite.dist is not None:
        cwd = fetch_source(suite.dist, read_pins()[suite.dist]) / suite.cwd
    else:
        # The interpreter's own suite; rooted at its directory so that node ids carry the
        # module (test_tasks.py::...) rather than an empty path.
        cwd = cpython_test_dir()
        env_rootdir = ["--rootdir", str(cwd)]
    env = dict(os.environ)
    env.update(suite.env)
    pythonpath = [str(HERE), str(ROOT / "src")]
    if suite.own_install:
        assert suite.dist is not None
        pythonpath.append(str(pinned_install(suite.dist, read_pins()[suite.dist])))
    env.update({
        "PYTHONPATH": os.pathsep.join(pythonpath),
        "CONFORMANCE_SUITE": suite.name, "CONFORMANCE_LOOP": loop,
        "CONFORMANCE_RESULTS": str(results_path), "CONFORMANCE_SKIP": str(skip_path),
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    pytest_cmd = [
        sys.executable, "-P", "-m", "pytest", "-p", "loopswap", "-p", "no:randomly",
        "-p", "no:cacheprovider", "-p", "no:xdist", "-p", "no:asyncio",
        f"--timeout={suite.timeout}",
        "-q", "-rN", "--color=no", "--continue-on-collection-errors", f"--junitxml={base}.xml",
        *env_rootdir, *suite.loop_args.get(loop, []), *(suite.quick if quick else suite.args),
    ]
    # Loopback only: nothing a third-party suite does can reach another host.  The
    # private mount namespace carries a hosts file where localhost is also ::1, as on
    # most distributions (suites test IPv6 through "localhost").
    hosts = OUT / "hosts"
    hosts.write_text("127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n")
    env["CONFORMANCE_HOSTS"] = str(hosts)
    cmd = ["unshare", "-n", "-m", "sh", "-c",
           'ip link set lo up && mount --bind "$CONFORMANCE_HOSTS" /etc/hosts && exec "$@"',
           "sh", *pytest_cmd]
    start = time.monotonic()
    deadline = start + suite.budget
    results: dict[str, dict[str, object]] = {}
    info = {"restarts": 0, "budget_exhausted": False, "rc": None}
    with open(log_path, "ab") as log:
        while True:
            log.write(f"\n### {' '.join(cmd)}\n".encode())
            log.flush()
            proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    preexec_fn=_default_signals)
            rc, hung = _wait(proc, results_path, deadline, suite.timeout * 2 + 30)
            _kill_group(proc)  # stray children of the suite
            info["rc"] = rc
            finished, running = _read_results(results_path, results)
            if finished:
                break
            if running is not None:
                if hung:
                    why, outcome = "hung past pytest-timeout; killed by the driver", "timeout"
                elif rc is None:
                    why, outcome = "suite budget exhausted", "timeout"
                else:
                    why, outcome = f"interpreter died (rc={rc})", "crashed"
                results[running] = {"id": running, "outcome": outcome, "reason": why,
                                    "duration": 0.0}
                with open(results_path, "a") as f:  # the file stays the whole record
                    f.write(json.dumps(results[running]) + "\n")
            if (rc is None and not hung) or running is None or info["restarts"] >= 40:
                info["budget_exhausted"] = rc is None and not hung
                break
            info["restarts"] += 1
            skip_path.write_text("".join(f"{i}\n" for i in results))
    info["seconds"] = round(time.monotonic() - start, 1)
    info["ringline_loops"] = _LOOPS_BUILT.get(results_path, 0)
    base.with_suffix(".info.json").write_text(json.dumps(info))
    return results, info


def _wait(proc: subprocess.Popen[bytes], results: Path, deadline: float,
          hang: float) -> tuple[int | None, bool]:
    """Wait for a pytest run; kill it at the deadline or when one test runs for ``hang`` s.

    pytest-timeout cannot interrupt every hang (a test blocked with signals masked, or
    in C); the results file's last record tells which test has been running how long.
    Returns (exit status or None if killed, whether it was killed for a hung test).
    """
    while True:
        try:
            return proc.wait(timeout=min(5.0, max(0.1, deadline - time.monotonic()))), False
        except subprocess.TimeoutExpired:
            pass
        hung = False
        try:
            with open(results, "rb") as f:
                f.seek(max(0, results.stat().st_size - 4096))
                last = f.read().splitlines()[-1:]
            hung = (bool(last) and b'"phase": "start"' in last[0]
                    and time.time() - results.stat().st_mtime > hang)
        except OSError:
            pass
        if hung or time.monotonic() >= deadline:
            _kill_group(proc)
            proc.wait()
            return None, hung


#: ringline loops each results file reports as built (the swap's sanity check).
_LOOPS_BUILT: dict[Path, int] = {}


def _read_results(path: Path, results: dict[str, dict[str, object]]) -> tuple[bool, str | None]:
    """Merge a run's JSON-lines records; returns (finished, id of a test left running)."""
    running = None
    finished = False
    if not path.exists():
        return False, None
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # the record being written when the process died
        if rec.get("phase") == "sessionfinish":
            finished = True
            _LOOPS_BUILT[path] = _LOOPS_BUILT.get(path, 0) + rec.get("ringline_loops", 0)
        elif rec.get("phase") == "start":
            running = rec["id"]
        else:
            results[rec["id"]] = rec
            if running == rec["id"]:
                running = None
    if running in results:
        running = None
    return finished, running


def compare(suite: Suite, per_loop: dict[str, dict[str, dict[str, object]]]) -> dict:
    """Line the three runs up by key and count."""
    keyed: dict[str, dict[str, dict[str, object]]] = {}
    for loop, results in per_loop.items():
        keyed[loop] = {}
        for nodeid, rec in results.items():
            k = suite.key(nodeid)
            if k is not None:
                keyed[loop][k] = rec
    both = sorted(k for k, r in keyed["asyncio"].items()
                  if r["outcome"] in PASS and keyed["uvloop"].get(k, {}).get("outcome") in PASS)
    ok = [k for k in both if keyed["ringline"].get(k, {}).get("outcome") in PASS]
    rest = []
    for k in both:
        rec = keyed["ringline"].get(k)
        if rec is None or rec["outcome"] not in PASS:
            rest.append({"key": k, "outcome": rec["outcome"] if rec else "not run",
                         "reason": rec.get("reason", "") if rec else "", "id": rec["id"] if rec
                         else ""})
    # Parity with asyncio is the goal: tests asyncio passes and uvloop does not are
    # outside N, but one that ringline fails too is worth a look.
    asyncio_only = []
    for k, r in sorted(keyed["asyncio"].items()):
        if r["outcome"] not in PASS or k in both:
            continue
        if k not in keyed["ringline"] and k not in keyed["uvloop"]:
            continue  # loop-independent: only the asyncio run carries it
        rec = keyed["ringline"].get(k)
        if rec is None or rec["outcome"] not in PASS:
            asyncio_only.append({"key": k, "outcome": rec["outcome"] if rec else "not run",
                                 "reason": rec.get("reason", "") if rec else "",
                                 "uvloop": keyed["uvloop"].get(k, {}).get("outcome", "absent")})
    # Tests ringline passes although asyncio or uvloop fails them: informative only.
    extra = sorted(k for k, r in keyed["ringline"].items()
                   if r["outcome"] in PASS and k not in both)
    counts = {loop: {"total": len(keyed[loop]),
                     "passed": sum(r["outcome"] in PASS for r in keyed[loop].values())}
              for loop in keyed}
    return {"both": len(both), "ringline_ok": len(ok), "rest": rest, "counts": counts,
            "asyncio_only_rest": asyncio_only,
            "ringline_only_pass": len(extra)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", action="append", choices=sorted(SUITES),
                    help="run only this suite (repeatable); default: all")
    ap.add_argument("--quick", action="store_true", help="a small subset of each suite")
    ap.add_argument("--loop", action="append", choices=LOOPS,
                    help="re-run only these loops; the others' last results are reused")
    ap.add_argument("--report", action="store_true",
                    help="run nothing: recompute the comparison from the last results")
    ap.add_argument("--list", action="store_true", help="list the suites and exit")
    args = ap.parse_args(argv)
    if args.list:
        for s in SUITES.values():
            print(f"{s.name:10} {s.dist or 'python ' + sys.version.split()[0]}: {s.note}")
        return 0
    if shutil.which("unshare") is None:
        print("conformance: needs unshare(1) (util-linux) and root or user namespaces",
              file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    pins = read_pins()
    summary = {}
    # aiohttp-net is a subset of aiohttp, for a shorter run by name only.
    for name in args.suite or [n for n in SUITES if n != "aiohttp-net"]:
        suite = SUITES[name]
        if suite.dist is not None and not suite.own_install:
            have = installed_version(suite.dist)
            if have != pins[suite.dist]:
                print(f"[{name}] note: installed {suite.dist} {have}, tests pinned to "
                      f"{pins[suite.dist]}")
        per_loop, infos = {}, {}
        for loop in LOOPS:
            prev = OUT / f"{name}-{loop}{'-quick' if args.quick else ''}.jsonl"
            if (args.report or (args.loop and loop not in args.loop)) and prev.exists():
                per_loop[loop] = {}
                _read_results(prev, per_loop[loop])
                info_path = prev.with_suffix(".info.json")
                infos[loop] = {"reused": True, **(json.loads(info_path.read_text())
                                                  if info_path.exists() else {})}
                continue
            print(f"[{name}] running on {loop} ...", flush=True)
            per_loop[loop], infos[loop] = run_one(suite, loop, args.quick)
            c = per_loop[loop]
            print(f"[{name}] {loop}: {sum(r['outcome'] in PASS for r in c.values())}/{len(c)} "
                  f"passed in {infos[loop]['seconds']} s"
                  + (f", {infos[loop]['restarts']} restarts" if infos[loop]["restarts"] else "")
                  + (", BUDGET EXHAUSTED" if infos[loop]["budget_exhausted"] else "")
                  + (f", {infos[loop]['ringline_loops']} ringline loops built"
                     if loop == "ringline" else ""),
                  flush=True)
        res = compare(suite, per_loop)
        res["runs"] = infos
        summary[name] = res
        print(f"[{name}] of {res['both']} tests passing on both asyncio and uvloop, "
              f"{res['ringline_ok']} pass on ringline", flush=True)
        for r in res["rest"]:
            reason = " ".join(str(r["reason"]).split())[:160]
            print(f"    {r['outcome']:8} {r['key']}  -- {reason}")
        if res["asyncio_only_rest"]:
            print(f"[{name}] also failing on ringline, passing on asyncio (not uvloop): "
                  f"{len(res['asyncio_only_rest'])}")
            for r in res["asyncio_only_rest"]:
                reason = " ".join(str(r["reason"]).split())[:140]
                print(f"    {r['outcome']:8} (uvloop {r['uvloop']}) {r['key']}  -- {reason}")
    # Suites run by earlier invocations stay in the summary (one suite at a time is fine).
    name = "summary-quick" if args.quick else "summary"
    old = OUT / f"{name}.json"
    merged = json.loads(old.read_text()) if old.exists() else {}
    merged.update(summary)
    old.write_text(json.dumps(merged, indent=1))
    (OUT / f"{name}.md").write_text(render_md(merged, args.quick))
    print(f"\nsummary of every suite run so far: {OUT / name}.md")
    print(f"\nfull outputs in {OUT}")
    return 0


def render_md(summary: dict, quick: bool) -> str:
    """The summary table and the not-passing lists, as Markdown."""
    lines = [f"Python {sys.version.split()[0]}{' (--quick)' if quick else ''}", "",
             "| suite | asyncio pass/total | uvloop pass/total | ringline pass/total "
             "| both asyncio+uvloop (N) | of N pass on ringline (M) | run seconds a/u/r |",
             "|---|---|---|---|---|---|---|"]
    for name, res in summary.items():
        c = res["counts"]
        secs = "/".join(str(res["runs"][lp].get("seconds", "-")) for lp in LOOPS)
        lines.append(
            f"| {name} | {c['asyncio']['passed']}/{c['asyncio']['total']} "
            f"| {c['uvloop']['passed']}/{c['uvloop']['total']} "
            f"| {c['ringline']['passed']}/{c['ringline']['total']} "
            f"| {res['both']} | {res['ringline_ok']} | {secs} |")
    for name, res in summary.items():
        if res["rest"]:
            lines += ["", f"## {name}: pass on asyncio and uvloop, not on ringline", ""]
            lines += [f"- `{r['key']}` {r['outcome']}: "
                      + " ".join(str(r["reason"]).split())[:200] for r in res["rest"]]
        if res.get("asyncio_only_rest"):
            lines += ["", f"## {name}: pass on asyncio, not on ringline (uvloop fails "
                      "them too; outside N)", ""]
            lines += [f"- `{r['key']}` {r['outcome']} (uvloop {r['uvloop']}): "
                      + " ".join(str(r["reason"]).split())[:200]
                      for r in res["asyncio_only_rest"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
