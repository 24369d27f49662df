"""Choosing the backend: io_uring ("uring") or any asyncio loop ("portable").

``backend="auto" | "uring" | "portable"`` on :func:`ringline.run`,
:func:`ringline.new_event_loop`, :func:`ringline.launch` (through its
Config) and :class:`ringline.Config`, or the environment variable
``RINGLINE_BACKEND``.  Precedence: the ``backend`` argument, then a Config
whose ``backend`` is not ``"auto"``, then ``RINGLINE_BACKEND``, then
``"auto"``.

* ``"uring"``: a ringline :class:`~ringline.EventLoop`; a refused io_uring
  raises the typed :class:`~ringline.errors.IoUringUnavailable`.
* ``"portable"``: uvloop's loop when installed, else asyncio's; the native
  API and ``ringline.fs`` run on it through :mod:`ringline.portable`.
* ``"auto"`` (default): io_uring when the kernel allows it, else portable,
  with one RuntimeWarning per process naming the cause and the fix
  (:func:`cause` returns it).  A pure-Python install (no compiled
  extension: see setup.py) always falls back, the cause being
  :class:`~ringline.errors.ExtensionNotBuilt`; ``"uring"`` raises that.
"""

from __future__ import annotations

import asyncio
import os
import threading
import warnings
from typing import Any

from ringline.config import Config
from ringline.errors import ConfigError, IoUringUnavailable

__all__ = ["BACKENDS", "ENV", "backend", "cause", "new_loop", "requested"]

BACKENDS = ("auto", "uring", "portable")
ENV = "RINGLINE_BACKEND"

_lock = threading.Lock()
_warned = False
_probe: str | None = None       # "uring" or "portable", once probed
_cause: str | None = None       # why "auto" chose "portable" (the refusal's message)


def requested(backend: str | None = None, config: Config | None = None) -> str:
    """The backend asked for: ``backend``, else a non-auto ``config.backend``,
    else ``$RINGLINE_BACKEND``, else ``"auto"``."""
    if backend is None:
        if config is not None and config.backend != "auto":
            backend = config.backend
        else:
            env = os.environ.get(ENV, "").strip().lower()
            if env and env not in BACKENDS:
                raise ConfigError("backend", f"{ENV} must be one of {', '.join(BACKENDS)}", env)
            backend = env or "auto"
    if backend not in BACKENDS:
        raise ConfigError("backend", f"must be one of {', '.join(BACKENDS)}", backend)
    return backend


def _uring_loop(config: Config | None) -> asyncio.AbstractEventLoop:
    from ringline.aio.eventloop import EventLoop  # compiled: imported only when wanted
    return EventLoop(config)


def _portable_loop(config: Config | None) -> asyncio.AbstractEventLoop:
    from ringline import portable
    return portable.new_event_loop(config)


def _warn_once(cause: BaseException, loop: asyncio.AbstractEventLoop) -> None:
    global _warned
    with _lock:
        if _warned:
            return
        _warned = True
    from ringline.portable import loop_kind
    warnings.warn(
        f"ringline: io_uring is unavailable, so the portable backend runs on "
        f"{loop_kind(loop)}'s event loop (same API, without io_uring's speed). "
        f"Cause and fix: {cause}. Set {ENV}=portable to choose the portable backend "
        f"without this warning, or {ENV}=uring to fail instead",
        RuntimeWarning, stacklevel=_caller_level())


def _caller_level() -> int:
    """The warnings stacklevel of the first frame outside ringline and
    asyncio (the application's run()/launch() call)."""
    import sys
    skip = (os.path.dirname(os.path.abspath(__file__)), os.path.dirname(asyncio.__file__))
    frame: Any = sys._getframe(2)     # _warn_once's caller: stacklevel 2 in warn()
    level = 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(skip):
        frame = frame.f_back
        level += 1
    return level


def new_loop(backend: str | None = None, config: Config | None = None
             ) -> asyncio.AbstractEventLoop:
    """A new event loop for the requested backend (see the module docstring)."""
    global _probe
    from ringline._argcheck import config_arg
    config_arg(config, "new_event_loop()")
    if backend is not None and not isinstance(backend, str):
        raise TypeError(f"new_event_loop(): backend must be a str or None, "
                        f"not {type(backend).__name__}")
    choice = requested(backend, config)
    if choice == "portable":
        return _portable_loop(config)
    if choice == "uring":
        return _uring_loop(config)
    try:
        loop = _uring_loop(config)
    except (IoUringUnavailable, ImportError) as exc:
        # ImportError: installed without the compiled extension.
        _probe = "portable"
        _note_cause(exc)
        ploop = _portable_loop(config)
        _warn_once(exc, ploop)
        return ploop
    _probe = "uring"
    return loop


def backend(loop: asyncio.AbstractEventLoop | None = None) -> str:
    """Which backend is in use: ``"uring"`` or ``"portable"``.

    For ``loop`` (default: the running loop), whether it is a ringline loop.
    With no loop running, what a new loop would use: the requested backend,
    or for ``"auto"`` whether this process may create an io_uring (probed
    once by creating and closing a ring).  :func:`cause` says why ``"auto"``
    chose ``"portable"``.
    """
    global _probe
    if loop is None:
        loop = asyncio._get_running_loop()
    if loop is not None:
        return "uring" if is_uring_loop(loop) else "portable"
    choice = requested()
    if choice != "auto":
        return choice
    if _probe is None:
        try:
            _uring_loop(None).close()
        except (IoUringUnavailable, ImportError) as exc:
            _probe = "portable"
            _note_cause(exc)
        else:
            _probe = "uring"
    return _probe


def cause() -> str | None:
    """Why ``"auto"`` chose the portable backend in this process: the
    refusal's message (io_uring refused by the kernel, or no compiled
    extension in a pure-Python install, :class:`~ringline.errors.ExtensionNotBuilt`);
    None while ``"auto"`` has not fallen back (or has not been tried)."""
    return _cause


def _note_cause(exc: BaseException) -> None:
    global _cause
    _cause = f"{type(exc).__name__}: {exc}"


def is_uring_loop(loop: asyncio.AbstractEventLoop) -> bool:
    """True for a ringline (io_uring) event loop."""
    try:
        from ringline.aio.eventloop import EventLoop
    except ImportError:
        return False
    return isinstance(loop, EventLoop)
