"""The portable backend: ringline's native API and files on any asyncio loop.

Used when io_uring is refused (container seccomp profiles, gVisor,
``kernel.io_uring_disabled``) or when asked for with ``backend="portable"``
or ``RINGLINE_BACKEND=portable``.  ``ringline.serve`` and ``ringline.connect``
hand over to this package whenever the running loop is not a ringline loop,
and ``ringline.fs`` runs its own code on this package's file layer
(:mod:`ringline.portable._fileops`) there, so the same application code runs
on asyncio's own loop or on uvloop (preferred when installed; see
:func:`new_event_loop`).

Pure Python: nothing here imports ringline's compiled modules.  One
module of its own is compiled when the extension is built,
``_fastconn`` (the Connection's per-message path); without it
``connection.py`` runs its own methods.
"""

from __future__ import annotations

import asyncio

from ringline.config import Config
from ringline.portable.connection import Connection
from ringline.portable.serve import Server, config_of, connect, serve, set_config, statistics

__all__ = [
    "Connection",
    "Server",
    "config_of",
    "connect",
    "loop_kind",
    "new_event_loop",
    "serve",
    "set_config",
    "statistics",
]


def new_event_loop(config: Config | None = None, *, use_uvloop: bool | None = None
                   ) -> asyncio.AbstractEventLoop:
    """A loop for the portable backend: uvloop's when it is installed (or
    ``use_uvloop=True``, which then requires it), else asyncio's own.
    ``config`` becomes the native API's default on that loop."""
    loop: asyncio.AbstractEventLoop
    if use_uvloop is not False:
        try:
            import uvloop
        except ImportError:
            if use_uvloop:
                raise
            loop = asyncio.new_event_loop()
        else:
            loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    set_config(loop, config if config is not None else Config())
    if config is not None and config.debug:
        loop.set_debug(True)        # as the ringline loop does (else asyncio's default)
    return loop


def loop_kind(loop: asyncio.AbstractEventLoop) -> str:
    """``"uvloop"`` or ``"asyncio"`` (or the loop's module) for messages."""
    return type(loop).__module__.split(".")[0]
