"""Multi-core serving: one worker process per core, each with its own ring.

The GIL makes threads useless for spreading a loop's work, so ringline scales
out with processes: every worker runs :func:`ringline.native.launcher.launch` on
its own event loop and ring, listens on the same port through SO_REUSEPORT
(the kernel spreads connections across them) and is pinned to one core with
``sched_setaffinity``.  ``SIGINT``/``SIGTERM`` to the parent, or
:meth:`WorkerPool.shutdown`, is passed on as ``SIGTERM`` to every worker,
which then shuts down gracefully (stops accepting, lets sends drain for up to
``Config.shutdown_timeout``).
"""

from __future__ import annotations

import os
import select
import signal
import socket
import threading
import time
import warnings
from collections.abc import Sequence

from ringline.config import Config
from ringline.native.launcher import Handler, ShutdownHandle, launch

__all__ = ["WorkerPool", "launch_workers"]


def _only_io_uring_threads() -> bool:
    """True when every other thread of this process is one of io_uring's
    kernel workers (``iou-wrk-*`` for punted requests, ``iou-sqp-*`` for
    SQPOLL).  They outlive a closed ring for a moment, run no user-space code
    and hold no lock a forked child could inherit."""
    me = threading.get_native_id()
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return False
    for tid in tids:
        if int(tid) == me:
            continue
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                name = f.read()
        except OSError:
            continue                    # it exited meanwhile
        if not name.startswith("iou-"):
            return False
    return True


def _fork() -> int:
    """``os.fork()`` without CPython's (3.12+) multi-threaded-fork
    DeprecationWarning when the only other threads are io_uring workers
    (see _only_io_uring_threads); with any other thread it warns as usual."""
    if _only_io_uring_threads():
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", r"This process .* is multi-threaded",
                                    DeprecationWarning)
            return os.fork()
    return os.fork()


class WorkerPool:
    """Worker processes started by :meth:`start`; ``port`` is the bound port."""

    def __init__(self, handler: Handler | type[Handler], bind: tuple[str, int],
                 config: Config | None = None, *, workers: int | None = None,
                 udp: tuple[str, int] | None = None) -> None:
        self.handler = handler
        # launch(udp=...) in every worker: each binds its own SO_REUSEPORT socket.
        self.udp = udp
        self.config = (config if config is not None else Config()).replace(reuse_port=True)
        self.workers = workers if workers is not None else self.config.effective_workers
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        self.host, port = bind
        self.port = port
        self.pids: list[int] = []
        self._placeholder: socket.socket | None = None
        self._ready_r = -1          # each worker writes one byte once it listens
        self._ready_count = 0

    def _reserve_port(self) -> None:
        # Port 0: bind once here (without listening) to learn a port every
        # worker can then share through SO_REUSEPORT.
        if self.port != 0:
            return
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind((self.host, 0))
        self.port = s.getsockname()[1]
        self._placeholder = s

    def _cores(self) -> Sequence[int]:
        allowed = sorted(os.sched_getaffinity(0))
        return [allowed[(self.config.core_offset + i) % len(allowed)] for i in range(self.workers)]

    def start(self) -> WorkerPool:
        self._reserve_port()
        if self.udp is not None and self.udp[1] == 0:
            # One port for every worker, probed and let go at once: a bound
            # socket kept here would take a share of the datagrams.
            family = socket.AF_INET6 if ":" in self.udp[0] else socket.AF_INET
            with socket.socket(family, socket.SOCK_DGRAM) as u:
                u.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                u.bind((self.udp[0], 0))
                self.udp = (self.udp[0], u.getsockname()[1])
        cores = self._cores()
        self._ready_r, ready_w = os.pipe()
        # Block SIGINT/SIGTERM across fork(): a worker inherits the mask, so a
        # shutdown sent before it installed its handlers waits (pending)
        # instead of killing it; launch() unblocks them once handled.
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            for worker_id in range(self.workers):
                pid = _fork()
                if pid == 0:  # pragma: no cover - runs in the child
                    os.close(self._ready_r)
                    self._run_worker(worker_id, cores[worker_id], ready_w)
                self.pids.append(pid)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            os.close(ready_w)
        return self

    def _run_worker(self, worker_id: int, core: int, ready_w: int) -> None:  # pragma: no cover
        code = 0
        try:
            if self._placeholder is not None:
                self._placeholder.close()
            if self.config.pin_to_core:
                os.sched_setaffinity(0, {core})
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides
            handle = ShutdownHandle()

            def report_ready() -> None:
                handle.wait_ready()
                os.write(ready_w, b"1" if handle.bound is not None else b"0")
                os.close(ready_w)

            threading.Thread(target=report_ready, daemon=True).start()
            launch(self.handler, (self.host, self.port), self.config,
                   worker_id=worker_id, shutdown=handle, handle_signals=True, udp=self.udp)
        except BaseException:
            import traceback
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)

    def ready(self, timeout: float = 10.0) -> bool:
        """Wait until every worker listens; False on timeout or if one failed."""
        deadline = time.monotonic() + timeout
        while self._ready_count < self.workers:
            left = deadline - time.monotonic()
            if left <= 0 or self._ready_r < 0:
                return False
            r, _, _ = select.select([self._ready_r], [], [], left)
            if not r:
                return False
            got = os.read(self._ready_r, 64)
            if not got or b"0" in got:       # a worker exited or failed to bind
                return False
            self._ready_count += len(got)
        if self._placeholder is not None:
            self._placeholder.close()
            self._placeholder = None
        return True

    def shutdown(self) -> None:
        """Ask every worker to stop gracefully."""
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def wait(self, timeout: float | None = None) -> list[int]:
        """Reap the workers; returns their exit codes (kills stragglers on timeout)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        codes: dict[int, int] = {}
        while len(codes) < len(self.pids):
            for pid in self.pids:
                if pid in codes:
                    continue
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    codes[pid] = os.waitstatus_to_exitcode(status)
            if len(codes) < len(self.pids):
                if deadline is not None and time.monotonic() > deadline:
                    for pid in self.pids:
                        if pid not in codes:
                            os.kill(pid, signal.SIGKILL)
                            _, status = os.waitpid(pid, 0)
                            codes[pid] = os.waitstatus_to_exitcode(status)
                    break
                time.sleep(0.01)
        if self._placeholder is not None:
            self._placeholder.close()
            self._placeholder = None
        if self._ready_r >= 0:
            os.close(self._ready_r)
            self._ready_r = -1
        return [codes[p] for p in self.pids]


def launch_workers(handler: Handler | type[Handler], bind: tuple[str, int],
                   config: Config | None = None, *, workers: int | None = None,
                   udp: tuple[str, int] | None = None) -> list[int]:
    """Run ``workers`` (default: Config.workers or one per core) worker
    processes until SIGINT/SIGTERM, then stop them gracefully; returns their
    exit codes.  ``udp``: every worker also binds its own SO_REUSEPORT UDP
    socket there and runs the handler's ``on_udp`` (see ``launch``)."""
    pool = WorkerPool(handler, bind, config, workers=workers, udp=udp).start()
    old = {}

    def forward(signum: int, frame: object) -> None:
        pool.shutdown()

    for sig in (signal.SIGINT, signal.SIGTERM):
        old[sig] = signal.signal(sig, forward)
    try:
        return pool.wait()
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
