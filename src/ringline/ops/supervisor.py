"""The supervisor of ``python -m ringline serve``: workers, restarts, signals.

Design (why it is shaped so):

- **The supervisor owns the listening sockets**, one SO_REUSEPORT socket per
  worker slot, made before any worker starts.  Worker *i* of every
  generation inherits slot *i*'s socket.  A socket's accept queue therefore
  outlives its worker: a crashed worker's queued connections wait for its
  replacement, and in a restart the new worker accepts from the same queue
  the old one stops taking from.  Nothing is dropped, with no need for
  ``net.ipv4.tcp_migrate_req`` (which moves queued connections only between
  *different* sockets of a reuseport group, and needs a sysctl change).
- **Workers are fresh interpreters** (``ringline.ops.worker``), so SIGHUP
  loads new application code and a worker inherits no thread or lock.
- **One thread, one select loop**: signals arrive through
  ``signal.set_wakeup_fd``; worker pipes carry readiness, errors and
  metrics; the ``/metrics`` endpoint is served from the same loop.

Signals: SIGTERM/SIGINT stop gracefully (workers stop accepting and finish
in-flight work within ``graceful_timeout``; the supervisor exits 0); SIGHUP
restarts with zero downtime (a new generation starts and reports ready
before the old one is told to stop).  A worker that dies is restarted
after a backoff (0.1 s doubling to 10 s; reset after 30 s of uptime).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from ringline.ops.worker import EXIT_CANNOT_START

__all__ = ["Supervisor", "WorkerProcess"]

_BACKOFF_FIRST = 0.1
_BACKOFF_MAX = 10.0
_BACKOFF_RESET_AFTER = 30.0
_READY_TIMEOUT = 30.0


def _udp_port(udp: tuple[str, int]) -> tuple[str, int]:
    """``--udp HOST:0``: a port picked once for every worker (probed here,
    then free again: a socket kept open would take its share of datagrams
    and never read them)."""
    info = socket.getaddrinfo(udp[0], 0, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)[0]
    with socket.socket(info[0], socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(info[4])
        return (udp[0], s.getsockname()[1])


@dataclasses.dataclass(eq=False)
class WorkerProcess:
    """One running worker, as the supervisor sees it."""

    slot: int
    generation: int
    proc: subprocess.Popen[bytes]
    report_r: int
    started: float
    ready: bool = False
    stopping: bool = False
    error: str | None = None
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    histograms: dict[str, Any] = dataclasses.field(default_factory=dict)
    buf: bytes = b""

    @property
    def pid(self) -> int:
        return self.proc.pid


class Supervisor:
    """Runs ``workers`` worker processes serving ``kind``/``target`` on
    ``host:port`` until SIGTERM/SIGINT; see the module docstring."""

    def __init__(self, kind: str, target: str, host: str, port: int, *,
                 workers: int, pin: bool = False, graceful_timeout: float = 10.0,
                 metrics_bind: tuple[str, int] | None = None,
                 ssl_cert: str | None = None, ssl_key: str | None = None,
                 backend: str = "auto", metrics_interval: float = 1.0,
                 log: Callable[[str], None] | None = None,
                 udp: tuple[str, int] | None = None) -> None:
        if kind not in ("native", "asgi", "asyncio"):
            raise ValueError(f"kind must be native, asgi or asyncio, not {kind!r}")
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.kind = kind
        self.target = target
        self.host = host
        self.port = port
        self.workers = workers
        self.pin = pin
        self.graceful_timeout = graceful_timeout
        self.metrics_bind = metrics_bind
        self.ssl_cert = ssl_cert
        self.ssl_key = ssl_key
        self.backend = backend
        self.metrics_interval = metrics_interval
        self.udp = udp      # each native worker binds its own SO_REUSEPORT UDP socket here
        self._log = log or (lambda line: print(f"ringline: {line}", file=sys.stderr,
                                               flush=True))
        self._socks: list[socket.socket] = []
        self._procs: list[WorkerProcess] = []
        self._sel = selectors.DefaultSelector()
        self._generation = 0
        self._restarts: dict[int, tuple[float, float]] = {}   # slot -> (due, next delay)
        self._failures: dict[int, int] = {}                    # slot -> crashes in a row
        self._signals: list[int] = []
        self._stopping = False
        self._reload: dict[str, Any] | None = None
        self.restarts_total = 0
        self.reloads_total = 0
        self._metrics_server: Any = None
        self.metrics_port: int | None = None

    # -- sockets ---------------------------------------------------------

    def bind(self) -> None:
        """Make one listening socket per slot (all on one port)."""
        infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
        family, type_, proto, _, addr = infos[0]
        for _ in range(self.workers):
            s = socket.socket(family, type_, proto)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family in (socket.AF_INET, socket.AF_INET6):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                s.bind(addr)
            except OSError as exc:
                s.close()
                self.close_sockets()
                if exc.errno == errno.EADDRINUSE:
                    raise OSError(exc.errno, f"{self.host}:{self.port} is already in use "
                                  "(another server listens there)") from None
                raise
            s.listen(4096)
            if addr[1] == 0:                 # every slot on the kernel's pick
                addr = (addr[0], s.getsockname()[1], *addr[2:])
            self._socks.append(s)
        self.port = self._socks[0].getsockname()[1]
        if self.udp is not None and self.udp[1] == 0:
            self.udp = _udp_port(self.udp)

    def close_sockets(self) -> None:
        for s in self._socks:
            s.close()
        self._socks = []

    # -- workers ---------------------------------------------------------

    def _core(self, slot: int) -> int | None:
        if not self.pin:
            return None
        cores = sorted(os.sched_getaffinity(0))
        return cores[slot % len(cores)]

    def _spawn(self, slot: int) -> WorkerProcess:
        report_r, report_w = os.pipe()
        sock = self._socks[slot]
        spec = {
            "kind": self.kind, "target": self.target, "slot": slot,
            "fd": sock.fileno(), "report_fd": report_w, "core": self._core(slot),
            "graceful_timeout": self.graceful_timeout,
            "metrics_interval": self.metrics_interval,
            "ssl_cert": self.ssl_cert, "ssl_key": self.ssl_key, "backend": self.backend,
            "histograms": self.metrics_bind is not None,
            "udp": list(self.udp) if self.udp is not None else None,
        }
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "ringline.ops.worker", json.dumps(spec)],
                pass_fds=(sock.fileno(), report_w), stdin=subprocess.DEVNULL)
        finally:
            os.close(report_w)
        os.set_blocking(report_r, False)
        w = WorkerProcess(slot, self._generation, proc, report_r, time.monotonic())
        self._procs.append(w)
        self._sel.register(report_r, selectors.EVENT_READ, w)
        return w

    def _read_reports(self, w: WorkerProcess) -> None:
        try:
            data = os.read(w.report_r, 65536)
        except BlockingIOError:
            return
        if not data:                       # the worker closed its end: exiting
            self._sel.unregister(w.report_r)
            os.close(w.report_r)
            w.report_r = -1
            return
        w.buf += data
        *lines, w.buf = w.buf.split(b"\n")
        for line in lines:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if "metrics" in msg:
                w.metrics = msg["metrics"]
                w.histograms = msg.get("histograms") or {}
            if msg.get("ready") and not w.ready:
                w.ready = True
                core = self._core(w.slot)
                self._log(f"worker {w.slot} ready (pid {w.pid}, generation "
                          f"{w.generation}{'' if core is None else f', core {core}'})")
            if "error" in msg:
                w.error = msg["error"]
                self._log(f"worker {w.slot} (pid {w.pid}) failed: {msg['error']}")

    def _reap(self) -> None:
        for w in list(self._procs):
            code = w.proc.poll()
            if code is None:
                continue
            self._procs.remove(w)
            if w.report_r >= 0:
                with contextlib.suppress(KeyError, ValueError):
                    self._sel.unregister(w.report_r)
                with contextlib.suppress(OSError):
                    self._read_rest(w)
                os.close(w.report_r)
                w.report_r = -1
            if w.stopping or self._stopping:
                self._log(f"worker {w.slot} (pid {w.pid}) stopped, exit status {code}")
                continue
            if self._reload is not None and w in self._reload["new"]:
                continue                   # a failed reload is handled there
            self._schedule_restart(w, code)

    def _read_rest(self, w: WorkerProcess) -> None:
        os.set_blocking(w.report_r, False)
        while w.report_r >= 0:
            try:
                data = os.read(w.report_r, 65536)
            except BlockingIOError:
                return
            if not data:
                return
            w.buf += data
            *lines, w.buf = w.buf.split(b"\n")
            for line in lines:
                with contextlib.suppress(ValueError):
                    msg = json.loads(line)
                    if "error" in msg:
                        w.error = msg["error"]

    def _schedule_restart(self, w: WorkerProcess, code: int) -> None:
        uptime = time.monotonic() - w.started
        if uptime >= _BACKOFF_RESET_AFTER:
            self._failures[w.slot] = 0
        n = self._failures.get(w.slot, 0)
        self._failures[w.slot] = n + 1
        delay = min(_BACKOFF_FIRST * (2 ** n), _BACKOFF_MAX)
        self._restarts[w.slot] = (time.monotonic() + delay, delay)
        how = f"exit status {code}" if code >= 0 else f"signal {signal.Signals(-code).name}"
        self._log(f"worker {w.slot} (pid {w.pid}) died ({how}) after {uptime:.1f}s; "
                  f"restarting in {delay:.1f}s")

    def _due_restarts(self) -> None:
        now = time.monotonic()
        for slot, (due, _) in list(self._restarts.items()):
            if due <= now:
                del self._restarts[slot]
                self.restarts_total += 1
                self._spawn(slot)

    # -- signals ---------------------------------------------------------

    def _on_signal(self, signum: int, frame: object) -> None:
        self._signals.append(signum)

    def _install_signals(self) -> socket.socket:
        r, w = socket.socketpair()
        r.setblocking(False)
        w.setblocking(False)
        signal.set_wakeup_fd(w.fileno(), warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, self._on_signal)
        self._wake = (r, w)
        self._sel.register(r, selectors.EVENT_READ, None)
        return r

    def _restore_signals(self) -> None:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        r, w = self._wake
        self._sel.unregister(r)
        r.close()
        w.close()

    def _handle_signals(self) -> None:
        sigs, self._signals = self._signals, []
        for sig in sigs:
            if sig in (signal.SIGTERM, signal.SIGINT) and not self._stopping:
                self._log(f"{signal.Signals(sig).name}: stopping gracefully "
                          f"(up to {self.graceful_timeout:g}s)")
                self._begin_stop()
            elif sig == signal.SIGHUP and not self._stopping:
                self._begin_reload()

    def _begin_stop(self) -> None:
        self._stopping = True
        self._restarts.clear()
        self._stop_deadline = time.monotonic() + self.graceful_timeout + 5.0
        for w in self._procs:
            self._terminate(w)

    def _terminate(self, w: WorkerProcess) -> None:
        w.stopping = True
        with contextlib.suppress(ProcessLookupError):
            w.proc.send_signal(signal.SIGTERM)

    # -- reload (SIGHUP) -------------------------------------------------

    def _begin_reload(self) -> None:
        if self._reload is not None:
            self._log("SIGHUP: a restart is already under way")
            return
        self._generation += 1
        self.reloads_total += 1
        old = [w for w in self._procs if not w.stopping]
        self._restarts.clear()
        new = [self._spawn(slot) for slot in range(self.workers)]
        self._log(f"SIGHUP: starting generation {self._generation} "
                  f"({len(new)} workers); the old one stops once it is ready")
        self._reload = {"old": old, "new": new,
                        "deadline": time.monotonic() + _READY_TIMEOUT}

    def _advance_reload(self) -> None:
        r = self._reload
        if r is None:
            return
        new: list[WorkerProcess] = r["new"]
        failed = [w for w in new if w not in self._procs or w.error is not None]
        if failed or time.monotonic() > r["deadline"]:
            why = failed[0].error if failed and failed[0].error else "not ready in time"
            self._log(f"restart failed ({why}); generation {self._generation} stopped, "
                      "the running workers stay")
            for w in new:
                if w in self._procs:
                    self._terminate(w)
            self._reload = None
            return
        if all(w.ready for w in new):
            for w in r["old"]:
                if w in self._procs:
                    self._terminate(w)
            self._log(f"generation {self._generation} serving; the old workers drain")
            self._reload = None

    # -- metrics ---------------------------------------------------------

    def _start_metrics(self) -> None:
        if self.metrics_bind is None:
            return
        from ringline.ops.export import MetricsEndpoint

        self._metrics_server = MetricsEndpoint(self, *self.metrics_bind)
        self.metrics_port = self._metrics_server.port
        self._sel.register(self._metrics_server.fileno(), selectors.EVENT_READ, "metrics")
        self._log(f"metrics on http://{self.metrics_bind[0]}:{self.metrics_port}/metrics")

    def worker_reports(self) -> list[WorkerProcess]:
        """The worker of each slot whose report counts: during a restart the
        newest generation that has reported wins."""
        latest: dict[int, WorkerProcess] = {}
        for w in self._procs:
            if w.metrics and (w.slot not in latest or w.generation > latest[w.slot].generation):
                latest[w.slot] = w
        return [latest[slot] for slot in sorted(latest)]

    def worker_metrics(self) -> list[tuple[int, dict[str, float]]]:
        """(slot, latest counters) of every worker that reported."""
        return [(w.slot, w.metrics) for w in self.worker_reports()]

    # -- the loop --------------------------------------------------------

    def run(self, ready: Callable[[Supervisor], None] | None = None) -> int:
        """Start, serve until SIGTERM/SIGINT, stop; returns the exit status."""
        if not self._socks:
            self.bind()
        self._install_signals()
        try:
            self._start_metrics()
            for slot in range(self.workers):
                self._spawn(slot)
            status = self._first_generation()
            if status != 0:
                self._begin_stop()
                self._wait_stopped()
                return status
            host = f"[{self.host}]" if ":" in self.host else self.host
            udp = "" if self.udp is None else f", UDP on {self.udp[0]}:{self.udp[1]}"
            self._log(f"serving {self.kind} {self.target} on {host}:{self.port} "
                      f"{'over TLS ' if self.ssl_cert else ''}"
                      f"with {self.workers} worker(s) (supervisor pid {os.getpid()}){udp}")
            if ready is not None:
                ready(self)
            while not self._stopping:
                self._step(0.5)
            return self._wait_stopped()
        finally:
            if self._metrics_server is not None:
                self._metrics_server.close()
            self._restore_signals()
            self.close_sockets()

    def _step(self, timeout: float) -> None:
        if self._restarts:
            due = min(d for d, _ in self._restarts.values())
            timeout = max(0.0, min(timeout, due - time.monotonic()))
        for key, _ in self._sel.select(timeout):
            if key.data is None:
                with contextlib.suppress(BlockingIOError):
                    key.fileobj.recv(512)  # type: ignore[union-attr]
            elif key.data == "metrics":
                self._metrics_server.handle()
            else:
                self._read_reports(key.data)
        self._handle_signals()
        self._reap()
        self._due_restarts()
        self._advance_reload()

    def _first_generation(self) -> int:
        deadline = time.monotonic() + _READY_TIMEOUT
        while time.monotonic() < deadline:
            self._step(0.1)
            if self._stopping:
                return 0
            first = [w for w in self._procs if w.generation == 0]
            for w in list(self._procs):
                if w.error is not None and not w.ready:
                    self._log(f"cannot start: {w.error}")
                    return EXIT_CANNOT_START
            if self._restarts:          # a worker died before it was ready
                self._log("cannot start: a worker exited before it was ready")
                return 1
            if len(first) == self.workers and all(w.ready for w in first):
                return 0
        self._log(f"cannot start: workers not ready within {_READY_TIMEOUT:g}s")
        return 1

    def _wait_stopped(self) -> int:
        while self._procs:
            if time.monotonic() > self._stop_deadline:
                for w in self._procs:
                    self._log(f"worker {w.slot} (pid {w.pid}) did not stop in time: killed")
                    with contextlib.suppress(ProcessLookupError):
                        w.proc.kill()
                for w in self._procs:
                    w.proc.wait()
                self._reap()
                break
            self._step(0.1)
        self._log("stopped")
        return 0
