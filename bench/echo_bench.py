"""TCP echo benchmark: ringline vs asyncio vs uvloop vs a C io_uring server.

    python bench/echo_bench.py                     # every server, every scenario
    python bench/echo_bench.py --quick             # smoke run (1 round of 1 s)
    python bench/echo_bench.py --servers c,uvloop-protocol,ringline-protocol --scenarios a,c
    python bench/echo_bench.py --list              # server and scenario names

Method
------
* ``bench/c/build/loadgen`` (C, epoll, one thread) drives a closed loop: each
  connection keeps ``depth`` requests of ``size`` bytes in flight and checks
  every echoed byte.  It is pinned to CPU 1, the server to CPU 0 (and this
  harness to CPU 1, so it never disturbs the server core).
* Each server x scenario cell starts a fresh server (which binds port 0 and
  prints ``READY <port>``), runs ``--rounds`` load rounds of ``--warmup`` +
  ``--duration`` seconds and keeps the best round by req/s.
* Server CPU per request: the load generator samples ``/proc/stat`` for the
  server CPU exactly at the start and end of its measured window
  (user+nice+system+irq+softirq); busy microseconds / requests.  It includes
  the kernel TCP work done on that core, which is the same for every server,
  and anything else that ran on CPU 0 -- the harness samples CPU 0 while the
  server is idle before each cell and flags the cell ("!") when the
  background load was over 5%.
* Syscalls per request: one extra, shorter load run per cell with
  ``perf stat -e raw_syscalls:sys_enter -p <server pid>`` attached (or
  ``strace -c -f -p`` where perf cannot trace), divided by all requests
  completed while it was attached.  It is a separate run because tracing
  slows the server down; the count includes the few per-connection
  accept/close syscalls, negligible against >= 10^4 requests.
* ``proc us/req``: the same window measured on the server process itself
  (run time of its threads from ``/proc/PID/task/*/schedstat``).  It misses
  softirq work charged to the core rather than the task, but it is immune to
  other processes on CPU 0: prefer it when a cell is flagged "!".
* The load generator spins (``epoll_wait`` with a zero timeout; ``--no-spin``
  to block instead).  Idle vCPUs on this VM halt, and a blocked generator
  would add its own wake-up (tens of microseconds) to every round trip and
  make the server pay an IPI per reply to wake it.
* ``srv%`` is the server core's utilisation in the kept round, ``lg%`` the
  share of it the load generator spent outside ``epoll_wait``: a server that
  is the bottleneck sits near 100%; the load generator must stay below it.
* Ratios are req/s relative to uvloop-protocol and to the C server.
* Read CPU per request first.  Scenario (a)'s req/s mostly measures how often
  the server's vCPU halts between requests (a server still busy when the next
  request lands skips a ~15-20 us VM wake-up), so a slower server can show
  more req/s there.  See bench/README.md.

Servers (``--servers``): ``c`` (bench/c/echo_uring.c), ``{asyncio,uvloop,
ringline}-{protocol,streams}`` (bench/servers/asyncio_{protocol,streams}.py
with ``--loop``), ``ringline-native`` (bench/servers/ringline_native.py) and
``portable-native`` (the same script on the portable backend,
``--backend portable``: the native API on uvloop's loop; its ``x uvloop-p``
ratio is the one issue 19 asks to be at least 0.9).
A server that exits with status 3 ("loop not available"), or whose script
does not exist, is skipped with a note; one that fails otherwise is reported
as failed; the rest of the run goes on either way.

Results go to ``bench/results/echo-<timestamp>.json`` (``--json PATH`` to
override); ``bench/results/`` is git-ignored.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
C_DIR = HERE / "c"
BUILD = C_DIR / "build"
SERVERS_DIR = HERE / "servers"
RESULTS = HERE / "results"

EXIT_UNAVAILABLE = 3  # a server's way of saying "this loop does not exist here"
READY_TIMEOUT = 20.0
NOISE_LIMIT = 0.05  # background utilisation of the server core worth flagging
REFERENCE = "uvloop-protocol"
C_SERVER = "c"


# ---------------------------------------------------------------------------
# Scenarios and servers
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    key: str
    name: str
    conns: int
    size: int
    depth: int

    def describe(self) -> str:
        size = f"{self.size // 1024} KiB" if self.size >= 1024 else f"{self.size} B"
        plural = "s" if self.conns > 1 else ""
        return f"({self.key}) {self.conns} conn{plural} x {size}, depth {self.depth}"


SCENARIOS = (
    Scenario("a", "1c-64B-d1", 1, 64, 1),  # pure round-trip latency
    Scenario("b", "50c-64B-d1", 50, 64, 1),  # many clients, small messages
    Scenario("c", "50c-64B-d16", 50, 64, 16),  # pipelined: batching pays off
    Scenario("d", "10c-64KiB-d1", 10, 65536, 1),  # bulk: copies and buffers
)


@dataclass(frozen=True)
class ServerSpec:
    name: str
    argv: tuple[str, ...]
    script: Path | None  # None for the C server
    description: str


def server_specs() -> dict[str, ServerSpec]:
    py = sys.executable
    specs = [
        ServerSpec(
            C_SERVER,
            (str(BUILD / "echo_uring"), "0"),
            None,
            "C, io_uring multishot accept/recv + provided buffers",
        )
    ]
    for api in ("protocol", "streams"):
        script = SERVERS_DIR / f"asyncio_{api}.py"
        for loop in ("uvloop", "asyncio", "ringline"):
            specs.append(
                ServerSpec(
                    f"{loop}-{api}",
                    (py, str(script), "--port", "0", "--loop", loop),
                    script,
                    f"{loop} loop, asyncio {api} API",
                )
            )
    native = SERVERS_DIR / "ringline_native.py"
    specs.append(
        ServerSpec(
            "ringline-native",
            (py, str(native), "--port", "0"),
            native,
            "ringline's native (non-asyncio) API",
        )
    )
    specs.append(
        ServerSpec(
            "portable-native",
            (py, str(native), "--port", "0", "--backend", "portable"),
            native,
            "the native API on the portable backend (uvloop's loop when installed)",
        )
    )
    return {s.name: s for s in specs}


# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------


class Skip(Exception):
    """The server is not available here (exit status 3, or no script)."""


class Failure(Exception):
    """Something went wrong that the report should show."""


_live: set[subprocess.Popen] = set()  # every child still running, for cleanup


def _pinned(cpu: int | None) -> Callable[[], None] | None:
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def _tail(text: str, lines: int = 3) -> str:
    rows = [r for r in text.strip().splitlines() if r.strip()]
    return " | ".join(rows[-lines:]) if rows else ""


class Server:
    """One echo server process: started pinned, announced by ``READY <port>``."""

    def __init__(self, spec: ServerSpec, cpu: int | None) -> None:
        self.spec = spec
        self.cpu = cpu
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self._stderr = tempfile.TemporaryFile()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stderr_tail(self) -> str:
        self._stderr.seek(0)
        return _tail(self._stderr.read().decode(errors="replace"))

    def start(self) -> None:
        if self.spec.script is not None and not self.spec.script.exists():
            raise Skip(f"{self.spec.script.relative_to(REPO)} does not exist (yet)")
        self.proc = subprocess.Popen(
            self.spec.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            preexec_fn=_pinned(self.cpu),
            start_new_session=True,  # its own process group: killable as a whole
            cwd=REPO,
        )
        _live.add(self.proc)
        self.port = self._wait_ready()

    def _wait_ready(self) -> int:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + READY_TIMEOUT
        buf = b""
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while True:
                m = re.search(rb"^READY (\d+)\s*$", buf, re.M)
                if m:
                    return int(m.group(1))
                left = deadline - time.monotonic()
                if left <= 0:
                    self.stop()
                    raise Failure(f"no READY line within {READY_TIMEOUT:.0f}s")
                if sel.select(left):
                    chunk = os.read(fd, 4096)
                    if chunk:
                        buf += chunk
                        continue
                # EOF: the server exited before it was ready
                rc = self.proc.wait(5)
                _live.discard(self.proc)
                why = self.stderr_tail() or f"exit status {rc}"
                if rc == EXIT_UNAVAILABLE:
                    raise Skip(why)
                raise Failure(f"exited with status {rc} before READY: {why}")

    def check_alive(self) -> None:
        assert self.proc is not None
        rc = self.proc.poll()
        if rc is not None:
            _live.discard(self.proc)
            raise Failure(f"server died (status {rc}): {self.stderr_tail()}")

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL for the whole group; return the exit status."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
        _kill_group(proc)  # leftovers of a server that spawned children
        _live.discard(proc)
        if proc.stdout:
            proc.stdout.close()
        self._stderr.close()
        return proc.returncode


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def kill_all() -> None:
    for proc in list(_live):
        _kill_group(proc)
        _live.discard(proc)


# ---------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------


def run_loadgen(
    port: int,
    sc: Scenario,
    duration: float,
    warmup: float,
    server_cpu: int | None,
    loadgen_cpu: int | None,
    server_pid: int | None = None,
    spin: bool = True,
) -> dict:
    cmd = [
        str(BUILD / "loadgen"),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--conns", str(sc.conns),
        "--size", str(sc.size),
        "--depth", str(sc.depth),
        "--duration", f"{duration:g}",
        "--warmup", f"{warmup:g}",
    ]  # fmt: skip
    if server_cpu is not None:
        cmd += ["--server-cpu", str(server_cpu)]
    if server_pid is not None:
        cmd += ["--server-pid", str(server_pid)]
    if spin:
        cmd.append("--spin")
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=duration + warmup + 60,
            preexec_fn=_pinned(loadgen_cpu),
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise Failure("load generator timed out") from exc
    lines = proc.stdout.strip().splitlines()
    result = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else None
    if proc.returncode != 0 or result is None:
        why = _tail(proc.stderr) or f"exit status {proc.returncode}"
        raise Failure(f"load generator failed (status {proc.returncode}): {why}")
    if result["requests"] == 0:
        raise Failure("no request completed")
    return result


def cpu_busy(cpus: list[int]) -> dict[int, tuple[int, int]]:
    """(busy, total) jiffies per CPU from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            m = re.match(r"cpu(\d+) (.*)", line)
            if m and int(m.group(1)) in cpus:
                v = [int(x) for x in m.group(2).split()]
                busy = v[0] + v[1] + v[2] + v[5] + v[6]
                out[int(m.group(1))] = (busy, sum(v[:8]))
    return out


def background_util(cpus: list[int], seconds: float = 0.3) -> dict[int, float]:
    """Utilisation of each CPU while nothing of ours is busy on it."""
    a = cpu_busy(cpus)
    time.sleep(seconds)
    b = cpu_busy(cpus)
    return {c: (b[c][0] - a[c][0]) / max(1, b[c][1] - a[c][1]) for c in cpus if c in a and c in b}


class SyscallCounter:
    """Counts the syscalls a running process makes, with perf or strace."""

    def __init__(self, tool: str, path: str) -> None:
        self.tool = tool
        self.path = path

    @classmethod
    def detect(cls) -> tuple[SyscallCounter | None, str]:
        notes = []
        perf = shutil.which("perf")
        if perf:
            counter = cls("perf", perf)
            try:
                n = counter._count_command(["true"])
                if n and n > 0:
                    return counter, f"perf ({perf}) raw_syscalls:sys_enter"
                notes.append("perf counted nothing")
            except (OSError, subprocess.SubprocessError, ValueError) as exc:
                notes.append(f"perf unusable: {exc}")
        strace = shutil.which("strace")
        if strace:
            counter = cls("strace", strace)
            try:
                n = counter._count_command(["true"])
                if n and n > 0:
                    return counter, f"strace -c ({'; '.join(notes) or 'no perf'})"
                notes.append("strace counted nothing")
            except (OSError, subprocess.SubprocessError, ValueError) as exc:
                notes.append(f"strace unusable: {exc}")
        return None, "; ".join(notes) or "neither perf nor strace found"

    def _argv(self, out: str) -> list[str]:
        if self.tool == "perf":
            return [self.path, "stat", "-x", ",", "-e", "raw_syscalls:sys_enter", "-o", out]
        return [self.path, "-c", "-f", "-q", "-o", out]

    def _count_command(self, cmd: list[str]) -> int | None:
        with tempfile.NamedTemporaryFile("r", suffix=".txt") as out:
            subprocess.run(
                [*self._argv(out.name), "--", *cmd],
                capture_output=True,
                timeout=30,
                check=True,
            )
            return self._parse(Path(out.name).read_text())

    def _parse(self, text: str) -> int | None:
        for line in text.splitlines():
            if self.tool == "perf" and "raw_syscalls:sys_enter" in line:
                field = line.split(",")[0].strip()
                # "<not counted>": the event never fired, i.e. zero syscalls
                return 0 if field.startswith("<not") else int(field)
            if self.tool == "strace" and line.split()[-1:] == ["total"]:
                return int(line.split()[3])
        return None

    def count_during(self, pid: int, work: Callable[[], dict], cpu: int | None) -> tuple[int, dict]:
        """Attach to ``pid``, run ``work()``, detach; return (syscalls, work's result)."""
        with tempfile.NamedTemporaryFile("r", suffix=".txt") as out:
            argv = [*self._argv(out.name), "-p", str(pid)]
            tracer = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                preexec_fn=_pinned(cpu),
            )
            _live.add(tracer)
            try:
                time.sleep(0.3)  # let it attach; the idle server makes ~no syscalls meanwhile
                if tracer.poll() is not None:
                    err = tracer.stderr.read().decode(errors="replace") if tracer.stderr else ""
                    raise Failure(f"{self.tool} exited early: {_tail(err)}")
                result = work()
            finally:
                if tracer.poll() is None:
                    tracer.send_signal(signal.SIGINT)  # both tools report on SIGINT
                try:
                    tracer.wait(15)
                except subprocess.TimeoutExpired:
                    tracer.kill()
                    tracer.wait()
                _live.discard(tracer)
            count = self._parse(Path(out.name).read_text())
        if count is None:
            raise Failure(f"could not parse {self.tool} output")
        return count, result


# ---------------------------------------------------------------------------
# One cell
# ---------------------------------------------------------------------------


@dataclass
class Options:
    rounds: int
    duration: float
    warmup: float
    syscall_duration: float
    server_cpu: int | None
    loadgen_cpu: int | None
    spin: bool


def measure_cell(
    spec: ServerSpec, sc: Scenario, opt: Options, counter: SyscallCounter | None
) -> dict:
    cell: dict = {"server": spec.name, "scenario": sc.key, "status": "ok"}
    server = Server(spec, opt.server_cpu)
    try:
        server.start()
        cpus = [c for c in (opt.server_cpu, opt.loadgen_cpu) if c is not None]
        if cpus:
            cell["background_util"] = {
                str(c): round(u, 4) for c, u in background_util(cpus).items()
            }
        rounds = []
        for _ in range(opt.rounds):
            rounds.append(
                run_loadgen(
                    server.port,
                    sc,
                    opt.duration,
                    opt.warmup,
                    opt.server_cpu,
                    opt.loadgen_cpu,
                    server.pid,
                    opt.spin,
                )
            )
            server.check_alive()
        best = max(rounds, key=lambda r: r["req_per_s"])
        rates = sorted(r["req_per_s"] for r in rounds)
        cell["rounds"] = rounds
        cell["best"] = best
        # Some loops are bimodal under load (they batch better once behind),
        # so keep the spread next to the best-of-N figure.
        cell["median_req_per_s"] = rates[len(rates) // 2]
        cell["req_per_s_spread"] = (rates[-1] - rates[0]) / rates[-1]
        if "server_cpu_busy_us" in best:
            cell["cpu_us_per_req"] = best["server_cpu_busy_us"] / best["requests"]
        if "server_proc_cpu_us" in best:
            cell["proc_cpu_us_per_req"] = best["server_proc_cpu_us"] / best["requests"]
        if counter is not None:
            try:
                n, res = counter.count_during(
                    server.pid,
                    lambda: run_loadgen(
                        server.port,
                        sc,
                        opt.syscall_duration,
                        0,
                        None,
                        opt.loadgen_cpu,
                        spin=opt.spin,
                    ),
                    opt.loadgen_cpu,
                )
                server.check_alive()
                total = res.get("total_requests", res["requests"])
                cell["syscalls"] = {"tool": counter.tool, "count": n, "requests": total}
                cell["syscalls_per_req"] = n / total
            except Failure as exc:
                cell["syscalls"] = {"error": str(exc)}
    except Skip as exc:
        cell.update(status="skipped", reason=str(exc))
    except Failure as exc:
        cell.update(status="failed", reason=str(exc))
    finally:
        rc = server.stop()
        if cell["status"] == "ok":
            # A clean SIGTERM exit is 0 (handled) or -15 (default action).
            cell["exit_status"] = rc
            if rc not in (0, -signal.SIGTERM):
                cell["stop_note"] = f"unclean exit on SIGTERM: status {rc}"
    return cell


# ---------------------------------------------------------------------------
# Interleaved latency rounds
# ---------------------------------------------------------------------------

LATENCY_SERVERS = ("uvloop-protocol", "ringline-protocol", "ringline-native", "c")


def measure_latency_ab(
    specs: dict[str, ServerSpec], names: list[str], opt: Options, rounds: int, duration: float
) -> dict:
    """Scenario (a) again, with the servers' rounds interleaved.

    A 1-connection round trip is ~27 us here and drifts by ~1 us over
    minutes (the host), more than the loops differ; a cell's rounds, run
    back to back, compare servers measured at different times.  Here all
    servers run at once (idle ones block) and each round visits each of
    them in turn, so every server sees the same drift; medians are kept.
    """
    sc = next(s for s in SCENARIOS if s.key == "a")
    servers: dict[str, Server] = {}
    per: dict[str, list[dict]] = {}
    try:
        for name in names:
            srv = Server(specs[name], opt.server_cpu)
            try:
                srv.start()
            except (Skip, Failure):
                srv.stop()
                continue
            servers[name] = srv
            per[name] = []
        for _ in range(rounds):
            for name, srv in servers.items():
                per[name].append(
                    run_loadgen(srv.port, sc, duration, opt.warmup, opt.server_cpu,
                                opt.loadgen_cpu, srv.pid, opt.spin)
                )  # fmt: skip
    finally:
        for srv in servers.values():
            srv.stop()

    def median(xs: list[float]) -> float:
        xs = sorted(xs)
        return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2

    out: dict = {"rounds": rounds, "duration": duration, "servers": {}}
    for name, rs in per.items():
        out["servers"][name] = {
            "p50_us": [r["p50_us"] for r in rs],
            "median_p50_us": median([r["p50_us"] for r in rs]),
            "median_p99_us": median([r["p99_us"] for r in rs]),
            "median_cpu_us_per_req": median(
                [r["server_cpu_busy_us"] / r["requests"] for r in rs if "server_cpu_busy_us" in r]
                or [float("nan")]
            ),
        }
    ref = per.get("uvloop-protocol")
    if ref:
        for name, rs in per.items():
            if name != "uvloop-protocol":
                out["servers"][name]["rounds_at_or_below_uvloop"] = sum(
                    a["p50_us"] <= b["p50_us"] for a, b in zip(rs, ref, strict=True)
                )
    return out


def print_latency_ab(ab: dict) -> None:
    print(
        f"\n(a) 1 conn 64 B, {ab['rounds']} interleaved rounds of {ab['duration']:g} s "
        "(medians; every server sees the same drift):"
    )
    n = ab["rounds"]
    for name, r in ab["servers"].items():
        vs = r.get("rounds_at_or_below_uvloop")
        vs_s = "" if vs is None else f"  p50 <= uvloop-p in {vs}/{n} rounds"
        print(
            f"  {name:<18} p50 {r['median_p50_us']:5.1f} us  p99 {r['median_p99_us']:5.1f} us  "
            f"cpu {r['median_cpu_us_per_req']:.2f} us/req{vs_s}"
        )


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def add_ratios(cells: list[dict]) -> None:
    by_key = {(c["server"], c["scenario"]): c for c in cells if c["status"] == "ok"}
    for c in cells:
        if c["status"] != "ok":
            continue
        for ref, label in ((REFERENCE, "vs_uvloop_protocol"), (C_SERVER, "vs_c")):
            r = by_key.get((ref, c["scenario"]))
            if r is None:
                continue
            c[f"req_per_s_{label}"] = c["best"]["req_per_s"] / r["best"]["req_per_s"]
            if c.get("cpu_us_per_req") and r.get("cpu_us_per_req"):
                c[f"cpu_per_req_{label}"] = c["cpu_us_per_req"] / r["cpu_us_per_req"]


PORTABLE = "portable-native"
PORTABLE_REFS = ("uvloop-protocol", "asyncio-protocol")
PORTABLE_TARGET = 0.9       # issue 19: >= 0.9x uvloop-protocol, 50 connections of 64 B


def portable_ratios(cells: list[dict]) -> dict[str, dict[str, float]]:
    """The portable backend's native echo against the Protocol echo servers
    on uvloop and asyncio, per scenario: req/s and server CPU per request
    (``ref cpu / portable cpu``: above 1 means cheaper than the reference)."""
    by_key = {(c["server"], c["scenario"]): c for c in cells if c["status"] == "ok"}
    out: dict[str, dict[str, float]] = {}
    for (name, sc), c in by_key.items():
        if name != PORTABLE:
            continue
        row: dict[str, float] = {}
        for ref in PORTABLE_REFS:
            r = by_key.get((ref, sc))
            if r is None:
                continue
            short = ref.split("-")[0]
            row[f"req_per_s_vs_{short}"] = c["best"]["req_per_s"] / r["best"]["req_per_s"]
            for key in ("cpu_us_per_req", "proc_cpu_us_per_req"):
                if c.get(key) and r.get(key):
                    row[f"{key}_vs_{short}"] = r[key] / c[key]
        if row:
            out[sc] = row
    return out


def print_portable(ratios: dict[str, dict[str, float]]) -> None:
    if not ratios:
        return
    print(f"\n{PORTABLE} (the native API on the portable backend) against the Protocol "
          f"echo servers; issue 19's target: >= {PORTABLE_TARGET}x uvloop-protocol in (b):")
    for sc, row in sorted(ratios.items()):
        parts = []
        for short in ("uvloop", "asyncio"):
            v = row.get(f"req_per_s_vs_{short}")
            if v is None:
                continue
            cpu = row.get(f"proc_cpu_us_per_req_vs_{short}")
            parts.append(f"x {short}-p {v:.2f} req/s" + ("" if cpu is None else
                                                          f", {cpu:.2f}x by process CPU per request"))
        print(f"  ({sc}) " + "; ".join(parts))


def print_table(cells: list[dict], scenarios: list[Scenario], servers: list[str]) -> None:
    by_key = {(c["server"], c["scenario"]): c for c in cells}
    head = (
        f"{'server':<18} {'req/s':>10} {'MB/s':>8} {'p50 us':>8} {'p99 us':>9} "
        f"{'cpu us/req':>10} {'proc us/req':>11} {'sysc/req':>8} {'srv%':>5} {'lg%':>4} "
        f"{'x uvloop-p':>10} {'x C':>6}"
    )
    for sc in scenarios:
        if not any(name_sc[1] == sc.key for name_sc in by_key):
            continue  # interrupted before this scenario
        print()
        print(sc.describe())
        print(head)
        print("-" * len(head))
        for name in servers:
            c = by_key.get((name, sc.key))
            if c is None:
                continue
            if c["status"] != "ok":
                print(f"{name:<18} {c['status']}: {c['reason'][:90]}")
                continue
            b = c["best"]
            noisy = any(u > NOISE_LIMIT for u in c.get("background_util", {}).values())
            print(
                f"{name:<18} {b['req_per_s']:>10,.0f} {b['mb_per_s']:>8.1f} "
                f"{b['p50_us']:>8.1f} {b['p99_us']:>9.1f} "
                f"{_fmt(c.get('cpu_us_per_req'), '.2f'):>10} "
                f"{_fmt(c.get('proc_cpu_us_per_req'), '.2f'):>11} "
                f"{_fmt(c.get('syscalls_per_req'), '.2f'):>8} "
                f"{_fmt(b.get('server_cpu_util', 0) * 100, '.0f'):>5} "
                f"{b['loadgen_busy'] * 100:>4.0f} "
                f"{_fmt(c.get('req_per_s_vs_uvloop_protocol'), '.2f'):>10} "
                f"{_fmt(c.get('req_per_s_vs_c'), '.2f'):>6}" + (" !" if noisy else "")
            )
    if any(u > NOISE_LIMIT for c in cells for u in c.get("background_util", {}).values()):
        print(f"\n! = over {NOISE_LIMIT:.0%} background load on the pinned CPUs before the cell")


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def _select(arg: str | None, known: list[str], what: str) -> list[str]:
    if not arg:
        return known
    wanted = [x.strip() for x in arg.split(",") if x.strip()]
    bad = [x for x in wanted if x not in known]
    if bad:
        raise SystemExit(f"unknown {what}: {', '.join(bad)} (known: {', '.join(known)})")
    return wanted


def _select_scenarios(arg: str | None) -> list[Scenario]:
    if not arg:
        return list(SCENARIOS)
    by = {s.key: s for s in SCENARIOS} | {s.name: s for s in SCENARIOS}
    names = _select(arg, list(by), "scenario")
    return [by[n] for n in dict.fromkeys(names)]


def _pick_cpus(args: argparse.Namespace) -> tuple[int | None, int | None, str]:
    if args.no_pin:
        return None, None, "not pinned (--no-pin)"
    allowed = os.sched_getaffinity(0)
    if args.server_cpu == args.loadgen_cpu or not {args.server_cpu, args.loadgen_cpu} <= allowed:
        return None, None, f"not pinned: need two distinct CPUs out of {sorted(allowed)}"
    return (
        args.server_cpu,
        args.loadgen_cpu,
        (f"server on CPU {args.server_cpu}, load generator and harness on CPU {args.loadgen_cpu}"),
    )


def _machine_info() -> dict:
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"model name\s*:\s*(.*)", f.read())
        if m:
            info["cpu_model"] = m.group(1).strip()
    except OSError:
        pass
    return info


def build() -> None:
    proc = subprocess.run(["make", "-s", "-C", str(C_DIR)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"building bench/c failed:\n{proc.stdout}{proc.stderr}")


def main(argv: list[str] | None = None) -> int:
    specs = server_specs()
    p = argparse.ArgumentParser(
        description="TCP echo benchmark (see the module docstring for the method)"
    )
    p.add_argument("--servers", help=f"comma list (default: all): {','.join(specs)}")
    p.add_argument("--scenarios", help="comma list of keys or names (default: a,b,c,d)")
    p.add_argument("--rounds", type=int, help="rounds per cell; best kept (3; quick 1)")
    p.add_argument("--duration", type=float, help="seconds measured per round (3; quick 1)")
    p.add_argument("--warmup", type=float, help="unmeasured seconds first (0.5; quick 0.2)")
    p.add_argument(
        "--syscall-duration", type=float, help="seconds of the traced run (1; quick 0.5)"
    )
    p.add_argument("--no-syscalls", action="store_true", help="skip the perf/strace run")
    p.add_argument(
        "--latency-rounds",
        type=int,
        help="interleaved 1-connection rounds after the table (9; quick 0; 0 = none)",
    )
    p.add_argument(
        "--quick", action="store_true", help="smoke run: 1 round of 1 s (explicit options win)"
    )
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--loadgen-cpu", type=int, default=1)
    p.add_argument("--no-pin", action="store_true", help="do not pin anything to CPUs")
    p.add_argument(
        "--no-spin", action="store_true", help="load generator blocks in epoll_wait instead"
    )
    p.add_argument("--no-build", action="store_true", help="do not run make -C bench/c")
    p.add_argument("--json", type=Path, help="result file (default bench/results/echo-*.json)")
    p.add_argument("--list", action="store_true", help="list servers and scenarios")
    args = p.parse_args(argv)

    if args.list:
        for s in specs.values():
            print(f"server   {s.name:<18} {s.description}")
        for sc in SCENARIOS:
            print(f"scenario {sc.key} {sc.name:<14} {sc.describe()}")
        return 0
    defaults = (1, 1.0, 0.2, 0.5, 0) if args.quick else (3, 3.0, 0.5, 1.0, 9)
    for name, default in zip(
        ("rounds", "duration", "warmup", "syscall_duration", "latency_rounds"),
        defaults,
        strict=True,
    ):
        if getattr(args, name) is None:
            setattr(args, name, default)
    if args.rounds < 1 or args.duration <= 0 or args.warmup < 0 or args.syscall_duration <= 0:
        p.error("--rounds must be >= 1 and the durations positive")
    if args.latency_rounds < 0:
        p.error("--latency-rounds must be >= 0")

    servers = _select(args.servers, list(specs), "server")
    scenarios = _select_scenarios(args.scenarios)
    server_cpu, loadgen_cpu, pin_note = _pick_cpus(args)
    opt = Options(
        args.rounds,
        args.duration,
        args.warmup,
        args.syscall_duration,
        server_cpu,
        loadgen_cpu,
        not args.no_spin,
    )

    if not args.no_build:
        build()
    for binary in ("echo_uring", "loadgen"):
        if not (BUILD / binary).exists():
            raise SystemExit(f"{BUILD / binary} missing: run make -C bench/c")

    # The harness itself lives on the load generator's core, off the server's.
    if loadgen_cpu is not None:
        os.sched_setaffinity(0, {loadgen_cpu})
    # SIGTERM to the harness must still run the cleanup below.
    signal.signal(signal.SIGTERM, _interrupt)

    counter, counter_note = (None, "disabled (--no-syscalls)")
    if not args.no_syscalls:
        counter, counter_note = SyscallCounter.detect()

    print(f"python {platform.python_version()} on {platform.platform()}; {pin_note}")
    print(
        f"rounds={opt.rounds} duration={opt.duration:g}s warmup={opt.warmup:g}s "
        f"(best of {opt.rounds}); syscalls: {counter_note}"
    )

    cells: list[dict] = []
    skipped: dict[str, str] = {}
    started = time.monotonic()
    try:
        for name in servers:
            spec = specs[name]
            for sc in scenarios:
                if name in skipped:
                    cells.append(
                        {"server": name, "scenario": sc.key, "status": "skipped",
                         "reason": skipped[name]}
                    )  # fmt: skip
                    continue
                cell = measure_cell(spec, sc, opt, counter)
                cells.append(cell)
                if cell["status"] == "ok":
                    b = cell["best"]
                    print(
                        f"  {name:<18} {sc.key}: {b['req_per_s']:>11,.0f} req/s  "
                        f"p50 {b['p50_us']:.1f} us  "
                        f"cpu {_fmt(cell.get('cpu_us_per_req'), '.2f')} us/req  "
                        f"sysc {_fmt(cell.get('syscalls_per_req'), '.2f')}/req",
                        flush=True,
                    )
                else:
                    print(f"  {name:<18} {sc.key}: {cell['status']}: {cell['reason']}", flush=True)
                    # not available, or cannot even start: no point retrying
                    if cell["status"] == "skipped" or "before READY" in cell["reason"]:
                        skipped[name] = cell["reason"]
                        if cell["status"] == "skipped":
                            print(f"note: skipping {name}: {cell['reason']}")
    except KeyboardInterrupt:
        print("\ninterrupted: reporting what was measured", file=sys.stderr)
    finally:
        kill_all()

    add_ratios(cells)
    print_table(cells, scenarios, servers)
    portable = portable_ratios(cells)
    print_portable(portable)

    latency_ab = None
    ab_names = [n for n in LATENCY_SERVERS if n in servers and n not in skipped]
    if args.latency_rounds > 0 and "a" in [s.key for s in scenarios] and len(ab_names) > 1:
        try:
            latency_ab = measure_latency_ab(specs, ab_names, opt, args.latency_rounds, 1.5)
            print_latency_ab(latency_ab)
        except (Failure, KeyboardInterrupt) as exc:
            print(f"interleaved latency rounds: {exc or 'interrupted'}", file=sys.stderr)
        finally:
            kill_all()

    result = {
        "benchmark": "echo",
        "timestamp": _dt.datetime.now().isoformat(timespec="seconds"),
        "elapsed_s": round(time.monotonic() - started, 1),
        "machine": _machine_info(),
        "options": asdict(opt),
        "pinning": pin_note,
        "syscall_counter": counter_note,
        "scenarios": {s.key: asdict(s) for s in scenarios},
        "servers": {
            n: {"argv": list(specs[n].argv), "description": specs[n].description} for n in servers
        },
        "cells": cells,
        "portable_ratios": portable,
        "latency_ab": latency_ab,
    }
    out = args.json
    if out is None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        out = RESULTS / f"echo-{_dt.datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nresults: {out}")
    failed = [c for c in cells if c["status"] == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
