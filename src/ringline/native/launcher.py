"""Running native handlers: ``launch`` one worker (its loop, signals and
graceful shutdown), the ``Handler`` base class, and ``ShutdownHandle``.
``ringline.workers`` forks one such worker per core."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
from collections.abc import Iterable
from typing import Any

from ringline.config import Config
from ringline.native.serve import Connection, serve

__all__ = ["Handler", "ShutdownHandle", "WorkerContext", "launch", "request_shutdown"]


class Handler:
    """Base class of a handler run by :func:`launch` (one instance per worker)."""

    async def on_accept(self, conn: Connection) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    async def on_start(self) -> None:
        """Runs once on the worker's loop before accepting (client-only apps too)."""

    async def on_udp(self, sock: Any) -> None:  # pragma: no cover - abstract
        """With ``launch(udp=...)``: runs as a task on the worker's own UDP
        socket (a :class:`ringline.DatagramSocket`, bound with SO_REUSEPORT
        so every worker shares the port); cancelled at shutdown, after which
        the socket is closed."""
        raise NotImplementedError

    def on_tick(self, ctx: WorkerContext) -> None:
        """Runs every ``tick`` seconds of :func:`launch` (default 1 s)."""

    @classmethod
    def create_for_worker(cls, worker_id: int) -> Handler:
        return cls()


class WorkerContext:
    """What ``on_tick`` gets: the worker id, its loop and its shutdown handle."""

    def __init__(self, worker_id: int, loop: asyncio.AbstractEventLoop,
                 handle: ShutdownHandle) -> None:
        self.worker_id = worker_id
        self.loop = loop
        self.shutdown = handle

    def request_shutdown(self) -> None:
        self.shutdown.shutdown()


class ShutdownHandle:
    """Stops a :func:`launch`: thread-safe, also bound to SIGINT/SIGTERM."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requested = False
        self._targets: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self.bound: tuple[str, int] | None = None
        self.server: Any = None     # the worker's Server once it listens
        self.udp_bound: tuple[str, int] | None = None   # launch(udp=...)'s address
        self._ready = threading.Event()

    def shutdown(self) -> None:
        with self._lock:
            self._requested = True
            targets = list(self._targets)
        for loop, event in targets:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)

    @property
    def requested(self) -> bool:
        return self._requested

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the server is listening (``bound`` is then set)."""
        return self._ready.wait(timeout)

    def _attach(self, loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
        with self._lock:
            self._targets.append((loop, event))
            if self._requested:
                loop.call_soon(event.set)


def _check_launch_args(handler: Any, bind: Any, config: Any, tick: Any) -> None:
    """TypeError at the call for arguments launch() would trip over later."""
    from ringline import _argcheck
    needs = ("create_for_worker",) if isinstance(handler, type) else ("on_start", "on_accept")
    missing = [n for n in needs if not callable(getattr(handler, n, None))]
    if missing:
        raise TypeError(f"launch(): handler must be a Handler subclass or instance, not "
                        f"{handler!r} (no {', '.join(missing)})")
    if bind is not None:
        if not isinstance(bind, (tuple, list)) or len(bind) != 2:
            raise TypeError(f"launch(): bind must be a (host, port) tuple or None, not {bind!r}")
        _argcheck.host_arg(bind[0], "launch()")
        _argcheck.port_arg(bind[1], "launch()")
    _argcheck.config_arg(config, "launch()")
    if isinstance(tick, bool) or not isinstance(tick, (int, float)):
        raise TypeError(f"launch(): tick must be a number of seconds, not {type(tick).__name__}")
    if not tick > 0:
        raise ValueError(f"launch(): tick must be > 0, got {tick}")


def _check_udp_arg(handler: Any, udp: Any) -> None:
    from ringline import _argcheck
    if not isinstance(udp, (tuple, list)) or len(udp) != 2:
        raise TypeError(f"launch(): udp must be a (host, port) tuple or None, not {udp!r}")
    _argcheck.host_arg(udp[0], "launch()")
    _argcheck.port_arg(udp[1], "launch()")
    cls = handler if isinstance(handler, type) else type(handler)
    if getattr(cls, "on_udp", Handler.on_udp) is Handler.on_udp:
        raise TypeError(f"launch(udp=...): {cls.__name__} does not define on_udp(sock)")


def launch(handler: Handler | type[Handler], bind: tuple[str, int] | None = None,
           config: Config | None = None, *, worker_id: int = 0,
           shutdown: ShutdownHandle | None = None, tick: float = 1.0,
           handle_signals: bool | None = None, sock: socket.socket | None = None,
           ssl: Any = None, udp: tuple[str, int] | None = None) -> None:
    """Run one worker in this process until shutdown, then return.

    Creates a loop (:func:`ringline.new_event_loop` with ``config``: the
    io_uring loop, or the portable backend's), calls ``on_start``, serves ``bind`` (if given)
    with the handler's ``on_accept``, calls ``on_tick`` every ``tick``
    seconds, and on ``shutdown.shutdown()`` (or SIGINT/SIGTERM when run in the
    main thread) stops accepting, lets handlers and sends drain for up to
    ``Config.shutdown_timeout``, closes every connection and returns.
    ``sock`` (instead of ``bind``) serves a listening socket made elsewhere,
    as a supervisor's workers do.  ``ssl`` (a server ``ssl.SSLContext``)
    serves TLS: see :func:`ringline.serve`.  ``udp`` (host, port): the worker binds
    its own UDP socket there with SO_REUSEPORT (the kernel spreads datagrams
    over the workers) and runs the handler's ``on_udp(sock)`` on it.
    """
    from ringline.aio.eventloop import new_event_loop

    _check_launch_args(handler, bind, config, tick)
    if udp is not None:
        _check_udp_arg(handler, udp)
    cfg = config if config is not None else Config()
    h = handler.create_for_worker(worker_id) if isinstance(handler, type) else handler
    handle = shutdown if shutdown is not None else ShutdownHandle()
    if handle_signals is None:
        handle_signals = threading.current_thread() is threading.main_thread()
    old_handlers: dict[int, Any] = {}
    made: list[asyncio.AbstractEventLoop] = []

    def on_signal(*_: object) -> None:
        if made:
            made[0].call_soon_threadsafe(handle.shutdown)
        else:
            # Before the loop exists (a freshly forked worker): remember it,
            # main() sees it on attaching.  No lock taken in a signal handler.
            handle._requested = True

    if handle_signals:
        # First thing, so that a SIGTERM sent as soon as a sibling worker is
        # listening stops this one gracefully instead of killing it (a
        # WorkerPool child starts with them blocked: unblock once handled).
        for sig in (signal.SIGINT, signal.SIGTERM):
            old_handlers[sig] = signal.signal(sig, on_signal)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        loop = new_event_loop(cfg)      # the backend cfg/RINGLINE_BACKEND choose
    except BaseException:
        for signum, old in old_handlers.items():
            signal.signal(signum, old)
        raise
    made.append(loop)

    async def main() -> None:
        stop = asyncio.Event()
        handle._attach(loop, stop)
        await h.on_start()
        server = None
        if sock is not None:
            server = await serve(h.on_accept, config=cfg, sock=sock, ssl=ssl)
            handle.bound = server.sockets[0].getsockname()[:2]
        elif bind is not None:
            server = await serve(h.on_accept, bind[0], bind[1], config=cfg, ssl=ssl)
            handle.bound = (bind[0], server.port)
        handle.server = server
        udp_sock = udp_task = None
        if udp is not None:
            from ringline.native.udp import bind_udp
            udp_sock = await bind_udp(udp[0], udp[1], reuse_port=True)
            handle.udp_bound = udp_sock.local_addr[:2]
            udp_task = loop.create_task(h.on_udp(udp_sock))
        handle._ready.set()
        ctx = WorkerContext(worker_id, loop, handle)

        async def ticker() -> None:
            while True:
                await asyncio.sleep(tick)
                h.on_tick(ctx)

        tick_task = loop.create_task(ticker())
        try:
            await stop.wait()
        finally:
            tick_task.cancel()
            if udp_task is not None:
                udp_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await udp_task          # its own failure reaches the caller
            if server is not None:
                await server.shutdown(cfg.shutdown_timeout)
            if udp_sock is not None:
                udp_sock.close()
                await udp_sock.wait_closed()

    try:
        loop.run_until_complete(main())
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        for signum, old in old_handlers.items():
            signal.signal(signum, old)
        handle._ready.set()
        loop.close()


def request_shutdown(handles: Iterable[ShutdownHandle]) -> None:
    for handle in handles:
        handle.shutdown()
