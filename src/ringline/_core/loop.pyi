"""Type stubs for the compiled loop core (_core/loop.pyx).

The ready queue, the timer heap, the in-flight slot table and CQE dispatch.
``ringline.aio.eventloop.EventLoop`` is ``Loop`` plus asyncio's Python machinery; use
that (or ``ringline.new_event_loop()``) rather than ``Loop`` itself.
"""

import asyncio
from collections.abc import Callable, Coroutine, Generator, Iterator
from contextvars import Context
from typing import Any, TypeVar, TypeVarTuple

from ringline._core.ring import Ring
from ringline.config import Config

_Ts = TypeVarTuple("_Ts")
_T = TypeVar("_T")

DEBUG_BUILD: bool
"""True in the debug build (RINGLINE_DEBUG=1): invariant checks and counters."""
DEF_MAX_WAIT: float
_ABANDONED: list[Completion]

def debug_counters() -> dict[str, int]:
    """Counters summed over every loop of this process (see tests/conftest.py):
    sqes_prepared, final_cqes, cqes_reaped, slots_live, bufs_lent, abandoned."""


class PreEnterHook:
    """Base of objects with work deferred to just before the loop enters the
    kernel (internal; a stream's pending send)."""

class Completion:
    """An operation the kernel is working on (created by ringline internals only;
    ``Completion()`` raises TypeError)."""

class AsyncGenSet:
    """The loop's live async generators: a compiled WeakSet (add, discard,
    len, iteration over the live ones, clear, ``in``)."""
    def add(self, item: Any) -> None: ...
    def discard(self, item: Any) -> None: ...
    def clear(self) -> None: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Any]: ...
    def __contains__(self, item: object) -> bool: ...

class Handle:
    """A scheduled callback, as returned by ``call_soon`` (the asyncio.Handle API).

    Created by the loop only (``Handle()`` raises TypeError).
    """

    @property
    def _callback(self) -> Callable[..., object] | None: ...
    @property
    def _args(self) -> tuple[Any, ...] | None: ...
    @property
    def _context(self) -> Context: ...
    @property
    def _cancelled(self) -> bool: ...
    _source_traceback: Any
    def cancel(self) -> None:
        """Cancel the callback; a no-op if it already ran or was cancelled."""
    def cancelled(self) -> bool: ...
    def get_context(self) -> Context: ...
    def get_loop(self) -> Loop: ...
    def _repr_info(self) -> list[str]: ...

class TimerHandle(Handle):
    """A callback scheduled for a time (the asyncio.TimerHandle API)."""

    @property
    def _when(self) -> float: ...
    @property
    def _scheduled(self) -> bool: ...
    def when(self) -> float:
        """The absolute time (``loop.time()`` clock) the callback is due."""
    def __hash__(self) -> int: ...
    def __lt__(self, other: TimerHandle, /) -> bool: ...
    def __le__(self, other: TimerHandle, /) -> bool: ...
    def __gt__(self, other: TimerHandle, /) -> bool: ...
    def __ge__(self, other: TimerHandle, /) -> bool: ...
    def __eq__(self, other: object, /) -> bool: ...

def abandon(obj: object) -> None: ...

class Loop:
    """The compiled half of ringline.EventLoop (see ringline/aio/eventloop.py for the rest)."""

    @property
    def ring(self) -> Ring:
        """This loop's io_uring."""
    @property
    def _scheduled(self) -> list[TimerHandle]: ...
    @property
    def _closed(self) -> bool: ...
    _stopping: bool
    _debug: bool
    _task_factory: Any
    _thread_id: int | None
    _run_ident: int      # the running thread's ident; 0 when not running
    @property
    def _current_handle(self) -> Handle | None: ...
    slow_callback_duration: float
    _clock_resolution: float
    @property
    def _timer_cancelled_count(self) -> int: ...
    @property
    def _closing(self) -> bool: ...
    @property
    def _slots_live(self) -> int: ...
    @property
    def _orphans_live(self) -> int: ...
    # Per-loop state of the layers above the core (see loop.pxd).
    _net_state: Any
    _dio_pool: Any
    _nvme_ring: Any
    _nvme_users: int
    _listeners: dict[int, Any] | None
    _ring_thread: int | None
    _ring_owner: Any
    @property
    def stat_iterations(self) -> int: ...
    @property
    def stat_cqes(self) -> int: ...
    @property
    def stat_stale_cqes(self) -> int: ...
    @property
    def stat_sqes(self) -> int: ...
    @property
    def stat_waits(self) -> int: ...
    @property
    def stat_file_ops(self) -> int: ...
    @property
    def stat_file_errors(self) -> int: ...
    def _open_ring(self, config: Config) -> None: ...
    def time(self) -> float:
        """Return the loop's monotonic clock (CLOCK_MONOTONIC, like asyncio)."""
    def call_soon(
        self,
        callback: Callable[[*_Ts], object],
        *args: *_Ts,
        context: Context | None = None,
    ) -> Handle:
        """Arrange for ``callback(*args)`` to run on the next iteration."""
    def call_soon_threadsafe(
        self,
        callback: Callable[[*_Ts], object],
        *args: *_Ts,
        context: Context | None = None,
    ) -> Handle:
        """Like call_soon, from any thread: wakes a loop blocked in io_uring_enter."""
    def call_later(
        self,
        delay: float,
        callback: Callable[[*_Ts], object],
        *args: *_Ts,
        context: Context | None = None,
    ) -> TimerHandle:
        """Arrange for ``callback(*args)`` to run ``delay`` seconds from now."""
    def call_at(
        self,
        when: float,
        callback: Callable[[*_Ts], object],
        *args: *_Ts,
        context: Context | None = None,
    ) -> TimerHandle:
        """Arrange for ``callback(*args)`` to run at loop time ``when``."""
    def create_future(self) -> asyncio.Future[Any]:
        """A new asyncio.Future attached to this loop."""
    def create_task(
        self,
        coro: Coroutine[Any, Any, _T] | Generator[Any, None, _T],
        *,
        name: str | None = None,
        context: Context | None = None,
    ) -> asyncio.Task[_T]:
        """Schedule a coroutine object; return its Task (BaseEventLoop.create_task)."""
    def _check_closed(self) -> None:
        """RuntimeError when the loop is closed (BaseEventLoop's, compiled)."""
    def get_debug(self) -> bool:
        """Whether the loop runs in debug mode (see ``set_debug``)."""
    def _timer_handle_cancelled(self, handle: object) -> None: ...
    def is_running(self) -> bool: ...
    def _require_loop_thread(self, what: str) -> None:
        """RuntimeError naming ``what`` when called from another thread than
        the one running the loop."""
    def is_closed(self) -> bool: ...
    def stop(self) -> None:
        """Stop after the current iteration."""
    def _run_forever_core(self) -> None: ...
    def _flush_before_close(self) -> None: ...
    def _close_core(self, owner: bool = True) -> bool: ...
    def _dispatch_py(self, user_data: int, res: int, flags: int) -> None: ...
    def _nop(self, callback: Callable[[int, int], object] | None = None) -> int: ...
    def enable_histograms(self) -> None:
        """Start recording latency histograms (off by default)."""
    def histograms(self) -> dict[str, tuple[list[float], list[int], float]] | None:
        """(upper bounds, counts, sum of seconds) per histogram, or None."""
    def statistics(self) -> dict[str, int]:
        """Counters of this loop's ring activity (plain dict, cheap)."""
