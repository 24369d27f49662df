"""ringline's asyncio event loop: the compiled core plus asyncio's glue.

``EventLoop`` inherits its hot methods (call_soon, call_later, call_at, time,
the iteration itself) from the compiled ``_loop.Loop`` and everything asyncio
already does well in Python (executors, DNS, async-generator bookkeeping, the
exception-handler API, run_until_complete, task creation) from
``asyncio.BaseEventLoop``.  The MRO puts the compiled methods first.

Readiness (add_reader/add_writer and everything asyncio builds on it: the
sock_* methods, UDP, Unix sockets, pipes, subprocesses, signals, and TCP until
the native transports take over) comes from asyncio's own
``_UnixSelectorEventLoop`` running over ``ringline.aio.readiness.RingSelector``,
whose interest set is POLL_ADD requests on the loop's ring.  MRO:
``_loop.Loop`` (hot path), ``RingTransportsMixin`` (native TCP overrides),
``ReadinessLoop`` (glue), asyncio's selector loops, ``BaseEventLoop``.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import warnings
from asyncio import coroutines, events
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ringline import _noext

try:
    from ringline._core import loop as _loop
    from ringline.aio.readiness import ReadinessLoop
    from ringline.aio.transports import RingTransportsMixin
except ImportError as _exc:  # a pure-Python install: EventLoop() raises ExtensionNotBuilt
    from ringline import _noext as _loop  # type: ignore[no-redef]
    from ringline._noext import ReadinessLoop, RingTransportsMixin  # type: ignore[assignment]
    _noext.note_missing(_exc)
from ringline.config import Config
from ringline.errors import IoUringUnavailable

# EventLoopPolicy comes from the module __getattr__ below, on first use.
__all__ = ["EventLoop", "EventLoopPolicy", "install", "new_event_loop", "run"]  # noqa: F822

_T = TypeVar("_T")


#: What _tune_malloc did in this process: "untried" (no loop asked for it), "tuned"
#: or "left alone: <why>".
malloc_tuning = "untried"

# glibc's mallopt(3) parameters (malloc.h), and the environment settings of
# the same knobs that we never override.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 1 << 20
_MALLOC_ENV = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_",
               "MALLOC_MMAP_MAX_")
_MALLOC_TUNABLES = ("glibc.malloc.trim_threshold", "glibc.malloc.mmap_threshold",
                    "glibc.malloc.top_pad", "glibc.malloc.mmap_max")


def _tune_malloc(trim_threshold: int) -> None:
    """Keep freed memory at the top of glibc's heap: opt-in, for
    ``Config(malloc_trim_threshold=N)`` with N > 0 (the default 0 does nothing).

    Why one might: memory freed in bursts (e.g. payloads pinned until their
    send CQE, then released together) can leave more than 128 KiB free at the
    top of the heap, which glibc gives back to the kernel; the next
    allocations grow the heap again and fault every page in.  ringline's own
    received buffers do not need this (the buffer ring recycles them, see
    BufRing.steal); an application that allocates large objects in bursts
    may.  Setting the trim threshold stops glibc adjusting the mmap
    threshold, so that one is fixed at 1 MiB (roughly where glibc's own
    adjustment would take it).  Process-wide, so once per process (the first
    loop that asks decides); never overrides the same knobs set in the
    environment.  The outcome is in ``malloc_tuning``.
    """
    global malloc_tuning
    if malloc_tuning != "untried" or trim_threshold <= 0:
        return      # decided already, or not asked for: leave malloc alone
    import os
    import platform
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if any(k in os.environ for k in _MALLOC_ENV) or any(t in tunables for t in _MALLOC_TUNABLES):
        malloc_tuning = "left alone: set in the environment"
    elif platform.libc_ver()[0] != "glibc":
        malloc_tuning = "left alone: not glibc"
    else:
        import ctypes
        mallopt = ctypes.CDLL(None).mallopt
        mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        mallopt.restype = ctypes.c_int
        ok = mallopt(_M_TRIM_THRESHOLD, trim_threshold) and mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
        malloc_tuning = "tuned" if ok else "left alone: mallopt refused"


class EventLoop(_loop.Loop, RingTransportsMixin, ReadinessLoop):  # type: ignore[misc]
    """An asyncio event loop whose every wait and I/O goes through io_uring.

    The ring is created here (so a refused io_uring fails at construction with
    a typed :class:`ringline.errors.IoUringUnavailable`) but enabled on the
    first ``run_forever``: the thread that first runs the loop becomes the
    ring's single issuer (IORING_SETUP_SINGLE_ISSUER), and the loop must be
    run from that thread afterwards.
    """

    # What __init__ and the inherited Python methods set lives in slots, not
    # in the instance __dict__ (which exists, but is only created when
    # something else is set on a loop).  While the dict does not exist,
    # CPython 3.12+ specialises method look-ups on the loop (asyncio's
    # Python code and its C Futures and Tasks look up loop methods several
    # times per task) and skips a dict probe in each; slot reads are
    # specialised too.  See tests/aio/test_loop_attrs.py.
    __slots__ = (
        "_config", "_default_executor", "_internal_fds", "_exception_handler",
        "_coroutine_origin_tracking_enabled", "_coroutine_origin_tracking_saved_depth",
        "_executor_shutdown_called", "_ring_opened",
        # ReadinessLoop._init_readiness_attrs (asyncio's selector-loop attributes)
        "_selector", "_ssock", "_csock", "_transports", "_signal_handlers",
        "_unix_server_sockets", "_child_pidfds",
    )

    def __init__(self, config: Config | None = None) -> None:
        # We do not call BaseEventLoop.__init__: its ready deque and timer
        # list are replaced by the compiled core's.  These are the attributes
        # the inherited Python methods read.
        from ringline._argcheck import config_arg
        config_arg(config, "EventLoop()")
        self._config = config if config is not None else Config()
        self._default_executor = None
        self._internal_fds = 0
        self._exception_handler = None
        self._task_factory = None
        self._coroutine_origin_tracking_enabled = False
        self._coroutine_origin_tracking_saved_depth = None
        # asyncio's WeakSet, compiled (see AsyncGenSet).
        self._asyncgens = _loop.AsyncGenSet()
        self._asyncgens_shutdown_called = False
        self._executor_shutdown_called = False
        self._clock_resolution = time.get_clock_info("monotonic").resolution
        # BaseSelectorEventLoop/_UnixSelectorEventLoop.__init__ are not called
        # either; ReadinessLoop sets what their methods read.
        self._init_readiness_attrs()
        self._open_ring(self._config)
        _tune_malloc(self._config.malloc_trim_threshold)
        self._ring_opened = True     # a loop whose ring was refused has nothing to close
        self._ring_owner = None     # see _on_ring_thread
        self._init_readiness()
        self.set_debug(self._config.debug or coroutines._is_debug_mode())  # type: ignore[attr-defined]

    @property
    def config(self) -> Config:
        """The validated :class:`ringline.Config` this loop was built with."""
        return self._config

    def _on_ring_thread(self) -> bool:
        """Whether the calling thread is the ring's issuer.  Thread idents are
        reused once a thread exits: the Thread object tells a newcomer with
        the issuer's ident apart (the kernel would refuse it with EEXIST)."""
        if not self._config.single_issuer:
            return True     # any thread may submit (one at a time: run_forever's check)
        return (self._ring_thread == threading.get_ident()
                and self._ring_owner is threading.current_thread())

    def run_forever(self) -> None:
        """Run until :meth:`stop` is called."""
        self._check_closed()  # type: ignore[attr-defined]
        self._check_running()  # type: ignore[attr-defined]
        tid = threading.get_ident()
        if self._ring_thread is not None and not self._on_ring_thread():
            raise RuntimeError(
                "this ringline loop's ring belongs to the thread that first ran it "
                "(io_uring SINGLE_ISSUER); run it from that thread, create a "
                "loop per thread, or build this one with "
                "Config(single_issuer=False)")
        self._set_coroutine_origin_tracking(self._debug)  # type: ignore[attr-defined]
        old_agen_hooks = sys.get_asyncgen_hooks()
        try:
            self._thread_id = tid
            if self._ring_thread is None:
                self._ring_thread = tid
                self._ring_owner = threading.current_thread()
            sys.set_asyncgen_hooks(
                firstiter=self._asyncgen_firstiter_hook,  # type: ignore[attr-defined]
                finalizer=self._asyncgen_finalizer_hook)  # type: ignore[attr-defined]
            events._set_running_loop(self)
            self._run_forever_core()
        finally:
            self._stopping = False
            self._thread_id = None
            events._set_running_loop(None)
            self._set_coroutine_origin_tracking(False)  # type: ignore[attr-defined]
            sys.set_asyncgen_hooks(*old_agen_hooks)

    def close(self) -> None:
        """Close the loop: cancel in-flight operations, release the ring.

        Like asyncio, pending callbacks are dropped and the default executor
        is shut down without waiting.  Closing from a thread other than the
        one that ran the loop cannot cancel in-flight operations (the ring
        accepts submissions from its owner only); their buffers are then kept
        alive for the rest of the process instead of being freed under the
        kernel.
        """
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self._closed:
            return
        if self._debug:
            asyncio.log.logger.debug("Close %r", self)
        owner = self._ring_thread is None or self._on_ring_thread()
        io = self._net_state
        if owner:
            self._flush_before_close()
        try:
            try:
                # Signal handlers, child pidfds, the self-pipe and every armed
                # poll (cancelled here, reaped by the drain in _close_core).
                self._close_readiness(owner)
            finally:
                if io is not None and owner:
                    io.shutdown_streams()   # their ops are cancelled and reaped below
                if self._close_core(owner) and io is not None:
                    io.release()
                elif io is not None:
                    _loop.abandon(io)   # the kernel may still use its buffers
        finally:
            # The NetState points back at the loop: dropped, so that a closed
            # loop is freed by its last reference, not by the collector.
            self._net_state = None
            # As asyncio's: a closed loop has no selector (pipe and socket
            # transports' reprs then say "open", not "idle").  Only now, when
            # is_closed() turns late _remove_reader calls away before they
            # look at it.
            self._selector = None
            self._executor_shutdown_called = True
            executor = self._default_executor
            if executor is not None:
                self._default_executor = None
                executor.shutdown(wait=False)

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if not getattr(self, "_ring_opened", False):
            return
        if not self.is_closed():
            _warn(f"unclosed event loop {self!r}", ResourceWarning, source=self)
            if not self.is_running():
                self.close()


if _loop is not _noext:
    # Inherited Python methods called from another thread raise (misuse is loud).
    from ringline.aio import _threadcheck
    _threadcheck.install(EventLoop)


def _policy_class() -> type:
    """Build ``EventLoopPolicy`` on first use and cache it in this module.

    Lazy because merely naming ``asyncio.DefaultEventLoopPolicy`` warns from
    3.14 and the policy API goes away in 3.16: importing ringline must not
    touch it, only asking for the policy does.
    """
    cls = globals().get("EventLoopPolicy")
    if cls is None:
        class EventLoopPolicy(asyncio.DefaultEventLoopPolicy):  # type: ignore[misc,valid-type]
            """An event loop policy whose loops are ringline EventLoops."""

            _loop_factory = EventLoop

        EventLoopPolicy.__qualname__ = "EventLoopPolicy"
        cls = globals()["EventLoopPolicy"] = EventLoopPolicy
    return cls


def __getattr__(name: str) -> Any:
    if name == "EventLoopPolicy":
        return _policy_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def new_event_loop(config: Config | None = None, *,
                   backend: str | None = None) -> asyncio.AbstractEventLoop:
    """Return a new event loop for the chosen backend (:mod:`ringline.backends`).

    ``backend`` (else ``config.backend``, else ``$RINGLINE_BACKEND``, else
    ``"auto"``): ``"uring"`` gives a ringline :class:`EventLoop` or raises
    :class:`ringline.errors.IoUringUnavailable` (a subclass naming the cause)
    when the kernel refuses io_uring; ``"portable"`` gives uvloop's loop
    (asyncio's without uvloop) running the native API portably; ``"auto"``
    tries io_uring and falls back to portable with one warning.
    """
    from ringline import backends
    return backends.new_loop(backend, config)


def _fallback_factory(config: Config | None) -> Callable[[], asyncio.AbstractEventLoop]:
    def factory() -> asyncio.AbstractEventLoop:
        try:
            return EventLoop(config)
        except IoUringUnavailable as exc:
            warnings.warn(
                f"ringline: io_uring is unavailable ({exc}); using asyncio's "
                "standard event loop instead", RuntimeWarning, stacklevel=3)
            return asyncio.new_event_loop()
    return factory


def run(main: Coroutine[Any, Any, _T], *, debug: bool | None = None,
        config: Config | None = None, fallback: bool = False,
        backend: str | None = None) -> _T:
    """Run a coroutine on a fresh loop, like :func:`asyncio.run`.

    The loop is :func:`new_event_loop`'s for ``backend`` (default: auto, i.e.
    io_uring when allowed, else the portable backend with one warning).
    With ``fallback=True`` a refused io_uring falls back to asyncio's standard
    loop with one RuntimeWarning instead (the older spelling).
    """
    factory: Callable[[], asyncio.AbstractEventLoop]
    if fallback:
        factory = _fallback_factory(config)
    else:
        def factory() -> asyncio.AbstractEventLoop:
            return new_event_loop(config, backend=backend)
    with asyncio.Runner(debug=debug, loop_factory=factory) as runner:
        return runner.run(main)


def install(*, fallback: bool = False) -> None:
    """Make asyncio create ringline loops (``asyncio.set_event_loop_policy``).

    With ``fallback=True``, when io_uring is refused a warning is issued and
    asyncio's default policy is left in place.  Without the compiled
    extension (a pure-Python install) it raises ExtensionNotBuilt, or warns
    with ``fallback=True``.
    """
    if _loop is _noext and not fallback:
        raise _noext.refuse()
    if fallback:
        try:
            EventLoop().close()
        except IoUringUnavailable as exc:
            warnings.warn(
                f"ringline: io_uring is unavailable ({exc}); keeping asyncio's "
                "standard event loop", RuntimeWarning, stacklevel=2)
            return
    asyncio.set_event_loop_policy(_policy_class()())
