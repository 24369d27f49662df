"""Shared plumbing for the Python echo servers of ``bench/echo_bench.py``.

Every server script is standalone (``python bench/servers/X.py --port 0``);
this module, found next to them on ``sys.path``, holds what they all need:
the command line, loop selection, the ``READY <port>`` handshake and a clean
stop on SIGTERM/SIGINT.

Exit status 3 means "this loop is not available here" (ringline not built
yet, uvloop not installed): the harness reports the cell as skipped, not
failed.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

EXIT_UNAVAILABLE = 3
REPO = Path(__file__).resolve().parents[2]

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def parse_args(description: str, with_loop: bool = True,
               with_backend: bool = False) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, default=0, help="0 = any free port (default)")
    parser.add_argument("--host", default="127.0.0.1")
    if with_loop:
        parser.add_argument("--loop", choices=("asyncio", "uvloop", "ringline"), default="asyncio")
    if with_backend:
        parser.add_argument("--backend", choices=("auto", "uring", "portable"), default=None,
                            help="ringline's backend (default: RINGLINE_BACKEND, else auto)")
    return parser.parse_args()


def unavailable(message: str) -> None:
    print(f"unavailable: {message}", file=sys.stderr, flush=True)
    sys.exit(EXIT_UNAVAILABLE)


def loop_factory(name: str, backend: str | None = None) -> LoopFactory:
    """Return a zero-argument loop constructor; exit 3 if it is unusable.
    ``backend`` is ringline's (``"portable"``: uvloop's loop when installed).

    Third-party loops are imported lazily so a missing one only affects the
    servers that asked for it.
    """
    if name == "asyncio":
        return asyncio.SelectorEventLoop
    if name == "uvloop":
        try:
            import uvloop
        except Exception as exc:  # any import failure means "skip"
            unavailable(f"cannot import uvloop: {exc!r}")
        return uvloop.new_event_loop
    if name == "ringline":
        # An installed ringline wins; an uninstalled checkout's src/ is the
        # fallback (appended, so it never shadows the installed package).
        src = REPO / "src"
        if src.is_dir() and str(src) not in sys.path:
            sys.path.append(str(src))
        try:
            import ringline

            if backend is not None:
                return lambda: ringline.new_event_loop(backend=backend)
            return ringline.new_event_loop
        except Exception as exc:
            unavailable(f"cannot import ringline.new_event_loop: {exc!r}")
    raise ValueError(f"unknown loop {name!r}")


def _install_stop_handlers(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError, AttributeError):
            # A loop without signal support: plain handler + thread-safe wakeup.
            signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))


def run_server(
    factory: LoopFactory,
    start: Callable[[], Awaitable[asyncio.AbstractServer]],
) -> int:
    """Run ``start()`` on a fresh loop, announce the port, serve until signalled."""
    try:
        loop = factory()
    except Exception as exc:  # an unusable loop is a skip, not a crash
        unavailable(f"cannot create the event loop: {exc!r}")

    async def main() -> None:
        stop = asyncio.Event()
        _install_stop_handlers(loop, stop)
        server = await start()
        port = server.sockets[0].getsockname()[1]
        print(f"READY {port}", flush=True)
        await stop.wait()
        server.close()

    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(main())
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    return 0
