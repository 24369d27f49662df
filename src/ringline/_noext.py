"""Stand-ins for the compiled modules in a pure-Python install.

A pure install (``RINGLINE_PURE=1``, or any platform but Linux: see setup.py)
has none of the Cython modules.  ``import ringline`` still works there: the
modules that import compiled code at the top (``aio/eventloop.py``,
``native/serve.py``) fall back to these names when that import fails, so
that

* :class:`ringline.EventLoop` exists (``isinstance`` checks answer False)
  but constructing one raises :class:`ringline.errors.ExtensionNotBuilt`,
  an ``IoUringUnavailable``: ``backend="auto"`` then picks the portable
  backend with its one warning, and ``backend="uring"`` raises it;
* ``ringline.Connection`` is the portable backend's connection class.

Only import-time: the release build never touches this module.
"""

from __future__ import annotations

from typing import Any
from weakref import WeakSet as AsyncGenSet  # in place of ringline._core.loop.AsyncGenSet

from ringline.errors import ExtensionNotBuilt

__all__ = ["AsyncGenSet", "Loop", "ReadinessLoop", "RingTransportsMixin", "abandon", "missing", "note_missing",
           "refuse"]

#: Why the compiled modules are unavailable (the ImportError's message),
#: set by the first module that fell back; None while nothing did.
missing: str | None = None


def note_missing(exc: BaseException) -> None:
    """Record the first failed compiled import (what ExtensionNotBuilt names)."""
    global missing
    if missing is None:
        missing = f"{type(exc).__name__}: {exc}"


def refuse() -> ExtensionNotBuilt:
    """The error every use of the io_uring loop raises in a pure install."""
    return ExtensionNotBuilt(missing or "no compiled module was built")


class Loop:
    """In place of the compiled ``ringline._core.loop.Loop``: cannot be built."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Loop:
        raise refuse()


class ReadinessLoop:
    """In place of ``ringline.aio.readiness.ReadinessLoop`` (which needs the ring)."""


class RingTransportsMixin:
    """In place of ``ringline.aio.transports.RingTransportsMixin``."""


def abandon(io: Any) -> None:  # pragma: no cover - no loop is ever built
    """In place of ``ringline._core.loop.abandon``."""
