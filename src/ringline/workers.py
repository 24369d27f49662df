"""Multi-core serving: one worker process per core, each with its own ring.

The GIL makes threads useless for spreading a loop's work, so ringline scales
out with processes: every worker runs :func:`ringline.connection.launch` on
its own event loop and ring, listens on the same port through SO_REUSEPORT
(the kernel spreads connections across them) and is pinned to one core with
``sched_setaffinity``.  ``SIGINT``/``SIGTERM`` to the parent, or
:meth:`WorkerPool.shutdown`, is passed on as ``SIGTERM`` to every worker,
which then shuts down gracefully (stops accepting, lets sends drain for up to
``Config.shutdown_timeout``).
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Sequence

from ringline.config import Config
from ringline.connection import Handler, launch

__all__ = ["WorkerPool", "launch_workers"]


class WorkerPool:
    """Worker processes started by :meth:`start`; ``port`` is the bound port."""

    def __init__(self, handler: Handler | type[Handler], bind: tuple[str, int],
                 config: Config | None = None, *, workers: int | None = None) -> None:
        self.handler = handler
        self.config = (config if config is not None else Config()).replace(reuse_port=True)
        self.workers = workers if workers is not None else self.config.effective_workers
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        self.host, port = bind
        self.port = port
        self.pids: list[int] = []
        self._placeholder: socket.socket | None = None

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
        cores = self._cores()
        # A worker is born with SIGTERM blocked and launch() unblocks it once
        # its handler is in: a shutdown() racing a worker's start-up (a
        # sibling is already listening, so ready() said yes) is then a
        # graceful stop, not death by the default action.
        stop_sigs = {signal.SIGINT, signal.SIGTERM}
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, stop_sigs)
        try:
            for worker_id in range(self.workers):
                pid = os.fork()
                if pid == 0:  # pragma: no cover - runs in the child
                    code = 0
                    try:
                        if self._placeholder is not None:
                            self._placeholder.close()
                        if self.config.pin_to_core:
                            os.sched_setaffinity(0, {cores[worker_id]})
                        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides
                        launch(self.handler, (self.host, self.port), self.config,
                               worker_id=worker_id, handle_signals=True)
                    except BaseException:
                        import traceback
                        traceback.print_exc()
                        code = 1
                    finally:
                        os._exit(code)
                self.pids.append(pid)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        return self

    def ready(self, timeout: float = 10.0) -> bool:
        """Wait until the port accepts connections (every worker binds it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    if self._placeholder is not None:
                        self._placeholder.close()
                        self._placeholder = None
                    return True
            except OSError:
                time.sleep(0.02)
        return False

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
        return [codes[p] for p in self.pids]


def launch_workers(handler: Handler | type[Handler], bind: tuple[str, int],
                   config: Config | None = None, *, workers: int | None = None) -> list[int]:
    """Run ``workers`` (default: Config.workers or one per core) worker
    processes until SIGINT/SIGTERM, then stop them gracefully; returns their
    exit codes."""
    pool = WorkerPool(handler, bind, config, workers=workers).start()
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
