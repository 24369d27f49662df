"""One worker process of ``python -m ringline serve``.

The supervisor starts each worker as a fresh interpreter
(``python -m ringline.ops.worker SPEC``), not a fork of itself: a worker
then imports the application anew, so a SIGHUP restart picks up new code,
and it inherits no thread, lock or signal handler of the supervisor.  The
listening socket and a report pipe are passed as inherited descriptors
(their numbers are in SPEC, a JSON object).

The worker writes JSON lines to the pipe: ``{"ready": ...}`` once it
accepts, ``{"error": ...}`` when it cannot start, and ``{"metrics": ...}``
every ``metrics_interval`` seconds.  SIGTERM (or SIGINT) stops it gracefully:
stop accepting, finish in-flight work within the graceful timeout, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import json
import os
import signal
import socket
import ssl
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

__all__ = ["WorkerSpec", "load_target", "main"]

#: Exit status of a worker that could not start (bad target, import error):
#: the supervisor does not restart such a worker in a loop.
EXIT_CANNOT_START = 3


class WorkerSpec(dict[str, Any]):
    """What a worker needs, as JSON: ``kind`` (native, asgi or asyncio),
    ``target`` (MODULE:NAME), ``slot``, ``fd`` (listening socket), ``report_fd``,
    ``core`` (or None), ``graceful_timeout``, ``metrics_interval``,
    ``ssl_cert``/``ssl_key`` (or None), ``backend``, ``udp`` ([host, port]
    or None: native handlers only, served by ``on_udp``)."""


def load_target(target: str) -> Any:
    """Import ``MODULE:NAME`` (NAME may be dotted) and return the object."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{target!r} is not MODULE:NAME")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{module_name!r} has no attribute {attr!r}") from None
    return obj


class _Reporter:
    """Writes the worker's JSON lines to the supervisor's pipe (never blocks
    the loop: a full pipe drops the line; the next report replaces it)."""

    def __init__(self, fd: int, slot: int) -> None:
        self.fd = fd
        self.slot = slot
        os.set_blocking(fd, False)

    def send(self, **msg: Any) -> None:
        msg["slot"] = self.slot
        msg["pid"] = os.getpid()
        with contextlib.suppress(BlockingIOError, BrokenPipeError):
            os.write(self.fd, json.dumps(msg).encode() + b"\n")


def _loop_metrics(loop: asyncio.AbstractEventLoop, server: Any) -> dict[str, float]:
    """The counters one worker exports (named in ringline.ops.export)."""
    from ringline import metrics

    out: dict[str, float] = {}
    with contextlib.suppress(TypeError):     # a loop ringline cannot count
        out.update(dataclasses.asdict(metrics.snapshot(loop)))
    if server is not None:
        out["conn_accepted"] = getattr(server, "accepted", 0)
        out["conn_refused"] = getattr(server, "refused", 0)
        out["conn_active"] = getattr(server, "active", 0)
        # Every accepted connection (refused ones included) is open or closed.
        out["conn_closed"] = out["conn_accepted"] - out["conn_active"]
    return out


def _ssl_context(spec: WorkerSpec) -> ssl.SSLContext | None:
    if not spec.get("ssl_cert"):
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(spec["ssl_cert"], spec.get("ssl_key"))
    return ctx


def _histograms(loop: asyncio.AbstractEventLoop) -> dict[str, Any] | None:
    get = getattr(loop, "histograms", None)
    return get() if get is not None else None


def _enable_histograms(loop: asyncio.AbstractEventLoop, spec: WorkerSpec) -> None:
    # Only when metrics are scraped: it costs two clock reads per step.
    if spec.get("histograms") and hasattr(loop, "enable_histograms"):
        loop.enable_histograms()


def _report(reporter: _Reporter, loop: asyncio.AbstractEventLoop, server: Any) -> None:
    reporter.send(metrics=_loop_metrics(loop, server), histograms=_histograms(loop))


async def _report_metrics(reporter: _Reporter, interval: float,
                          server: Callable[[], Any]) -> None:
    loop = asyncio.get_running_loop()
    while True:
        _report(reporter, loop, server())
        await asyncio.sleep(interval)


def _module_on_udp(spec: WorkerSpec) -> Any:
    """``--udp``'s handler: ``async def on_udp(sock)`` in the handler's module."""
    module = spec["target"].partition(":")[0]
    fn = getattr(importlib.import_module(module), "on_udp", None)
    if not callable(fn):
        raise ValueError(f"--udp: {module} defines no on_udp(sock) (an async function that "
                         "serves the worker's ringline.DatagramSocket)")
    return fn


def _with_module_on_udp(spec: WorkerSpec, handler: Any) -> Any:
    fn = _module_on_udp(spec)

    class _UdpHandler(handler):  # type: ignore[misc,valid-type]
        async def on_udp(self, sock: Any) -> None:
            await fn(sock)
    return _UdpHandler


def _run_native(spec: WorkerSpec, target: Any, sock: socket.socket,
                reporter: _Reporter) -> None:
    from ringline.config import Config
    from ringline.native.launcher import Handler, ShutdownHandle, launch

    udp = tuple(spec["udp"]) if spec.get("udp") else None
    if isinstance(target, type) and issubclass(target, Handler):
        handler: Any = target
        if udp is not None and target.on_udp is Handler.on_udp:
            handler = _with_module_on_udp(spec, target)
    elif callable(target):
        on_accept = target
        udp_fn = _module_on_udp(spec) if udp is not None else None

        class _FunctionHandler(Handler):
            async def on_accept(self, conn: Any) -> None:
                await on_accept(conn)

            if udp_fn is not None:
                async def on_udp(self, sock: Any) -> None:
                    await udp_fn(sock)
        handler = _FunctionHandler
    else:
        raise TypeError(f"{spec['target']} is neither a ringline.Handler subclass nor a "
                        "function on_accept(conn)")
    cfg = Config(backend=spec.get("backend", "auto"),
                 shutdown_timeout=spec["graceful_timeout"], reuse_port=True)
    handle = ShutdownHandle()

    class _Reporting(handler):  # type: ignore[misc,valid-type]
        async def on_start(self) -> None:
            _enable_histograms(asyncio.get_running_loop(), spec)
            await super().on_start()

        def on_tick(self, ctx: Any) -> None:
            # Every metrics_interval, on the loop's thread.
            super().on_tick(ctx)
            _report(reporter, ctx.loop, handle.server)

    def announce() -> None:
        # launch() sets the handle ready once it listens (or gives up).
        handle.wait_ready()
        if handle.server is not None:
            reporter.send(ready=True, addr=list(handle.bound or ()),
                          udp=list(handle.udp_bound) if handle.udp_bound else None)

    threading.Thread(target=announce, daemon=True).start()
    launch(_Reporting, None, cfg, worker_id=spec["slot"], shutdown=handle,
           handle_signals=True, sock=sock, tick=spec["metrics_interval"],
           ssl=_ssl_context(spec), udp=udp)


def _run_asgi(spec: WorkerSpec, app: Any, sock: socket.socket, reporter: _Reporter) -> None:
    # uvicorn: the most used ASGI server that takes a loop factory and
    # pre-bound sockets, and handles SIGTERM with a graceful timeout itself.
    import uvicorn

    import ringline

    loop = ringline.new_event_loop(ringline.Config(backend=spec.get("backend", "auto")))
    asyncio.set_event_loop(loop)
    _enable_histograms(loop, spec)
    config = uvicorn.Config(
        app, loop="none", lifespan="auto", log_level="warning",
        timeout_graceful_shutdown=spec["graceful_timeout"],
        ssl_certfile=spec.get("ssl_cert"), ssl_keyfile=spec.get("ssl_key"))
    server = uvicorn.Server(config)

    async def main() -> None:
        serving = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not server.started and not serving.done():
            await asyncio.sleep(0.005)
        if server.started:
            reporter.send(ready=True, addr=list(sock.getsockname()[:2]))
            metrics = asyncio.ensure_future(
                _report_metrics(reporter, spec["metrics_interval"], lambda: None))
            try:
                await serving
            finally:
                metrics.cancel()
        else:
            await serving

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


def _run_asyncio(spec: WorkerSpec, factory: Any, sock: socket.socket,
                 reporter: _Reporter) -> None:
    import ringline

    if not callable(factory):
        raise TypeError(f"{spec['target']} is not callable (a protocol factory)")
    loop = ringline.new_event_loop(ringline.Config(backend=spec.get("backend", "auto")))
    asyncio.set_event_loop(loop)
    _enable_histograms(loop, spec)

    async def main() -> None:
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
        server = await loop.create_server(factory, sock=sock, ssl=_ssl_context(spec))
        reporter.send(ready=True, addr=list(sock.getsockname()[:2]))
        metrics = asyncio.ensure_future(
            _report_metrics(reporter, spec["metrics_interval"], lambda: None))
        await stop.wait()
        metrics.cancel()
        server.close()
        # 3.12+: wait_closed waits for the connections to finish.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), spec["graceful_timeout"])
        if hasattr(server, "close_clients"):
            server.close_clients()

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


_RUNNERS = {"native": _run_native, "asgi": _run_asgi, "asyncio": _run_asyncio}


def run_worker(spec: WorkerSpec) -> int:
    """Run one worker until it is told to stop; returns the exit status."""
    reporter = _Reporter(spec["report_fd"], spec["slot"])
    # The supervisor decides about SIGHUP; a worker must not die of it.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        if spec.get("core") is not None:
            os.sched_setaffinity(0, {spec["core"]})
        sock = socket.socket(fileno=spec["fd"])
        target = load_target(spec["target"])
        runner = _RUNNERS[spec["kind"]]
    except Exception as exc:
        reporter.send(error=f"{type(exc).__name__}: {exc}")
        traceback.print_exc()
        return EXIT_CANNOT_START
    started = time.monotonic()
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    if spec["kind"] == "asgi":
        # uvicorn installs its handlers in serve() and re-raises the signal
        # after its graceful stop: ignored then, so the worker exits 0.
        for sig in stop_signals:
            signal.signal(sig, signal.SIG_IGN)
    else:
        # Held (pending) until the runner's handlers are in place; launch()
        # and _run_asyncio unblock them.
        signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    try:
        runner(spec, target, sock, reporter)
    except Exception as exc:
        reporter.send(error=f"{type(exc).__name__}: {exc}",
                      uptime=time.monotonic() - started)
        traceback.print_exc()
        return 1
    finally:
        # Stopped: a second SIGTERM (say, to the whole process group as well
        # as from the supervisor) must not turn a clean exit into a kill.
        for sig in stop_signals:
            signal.signal(sig, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stop_signals)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m ringline.ops.worker SPEC-JSON "
                         "(started by python -m ringline serve)\n")
        return 2
    return run_worker(WorkerSpec(json.loads(args[0])))


if __name__ == "__main__":
    sys.exit(main())
