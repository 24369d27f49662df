# cython: language_level=3, boundscheck=False, wraparound=False
"""The loop core: ready queue, timer heap, in-flight slots, CQE dispatch.

Data flows one way:  user call -> SQE (``sqe_for``) -> kernel -> CQE ->
``_reap`` -> ``_dispatch`` -> ``Completion.on_cqe`` -> future/callback ->
ready queue -> ``_run_ready``.

One iteration (``_run_once``), in asyncio's order:
  1. drop cancelled timers from the top of the heap;
  2. pick the wait: 0 if callbacks are ready, else until the nearest timer,
     else forever (an idle loop makes no periodic wake-ups);
  3. ``_poll``: ONE io_uring_enter submits every prepared SQE and waits with
     that timeout (EXT_ARG); then every CQE is dispatched;
  4. move due timers to the ready queue;
  5. run the callbacks that were ready when the iteration started.

Why completions dispatch through ``Completion.on_cqe`` (a cdef virtual call)
instead of one if/elif over ``Op``: each subsystem (TCP, UDP, files) owns its
completion state next to its data, and adding one never edits this file.  The
op still travels in the tag and is checked in debug builds.  This
file remains the only place a CQE is read.
"""
import sys
from asyncio import base_events as _aio_base
from asyncio import format_helpers as _aio_fmt
from asyncio.log import logger as _aio_logger
from asyncio import Future as _Future
from asyncio import tasks as _aio_tasks

# asyncio's loop -> running task map (a dict on CPython 3.11-3.13; see
# native/task.pyx, which keeps it and uses Loop.current_left only then).
_current_tasks = getattr(_aio_tasks, "_current_tasks", None)

cimport cython
from cpython.tuple cimport PyTuple_GET_SIZE, PyTuple_GET_ITEM
from cpython.ref cimport Py_INCREF
from cpython.weakref cimport PyWeakref_NewRef
from cpython.mem cimport PyMem_Calloc, PyMem_Realloc, PyMem_Free
from libc.errno cimport errno
from libc.stdint cimport uint32_t, int32_t, uint64_t, int64_t
from posix.unistd cimport close as c_close, write as c_write

from ringline._core.abi.uring cimport *
from ringline._core.ops cimport prep_cancel, prep_cancel_any, prep_nop, prep_read
from ringline._core.ring cimport Ring, RingState, sq_pending, cq_has_events, cq_at, needs_enter_for_events
from ringline._core.tags cimport (Op, tag_encode, tag_op, tag_gen, tag_slot, NO_SLOT,
                             TAG_GEN_MASK)
cdef extern from "sys/eventfd.h" nogil:
    int eventfd(unsigned int initval, int flags)
    int EFD_CLOEXEC
    int EFD_NONBLOCK

cdef extern from "Python.h":
    int PyContext_Enter(object) except -1
    int PyContext_Exit(object) except -1
    object PyContext_CopyCurrent()

DEF_MAX_WAIT = 86400.0     # asyncio's MAXIMUM_SELECT_TIMEOUT
cdef int MIN_SCHEDULED_TIMERS = 100
cdef double MIN_CANCELLED_FRACTION = 0.5
# Process-wide counters: the debug build's test oracle.  A conftest fixture
# checks after each test that every SQE got its final CQE, no slot is live and
# no buffer is lent out.
cdef uint64_t g_sqes_prepared = 0
cdef uint64_t g_final_cqes = 0
cdef uint64_t g_cqes_reaped = 0
cdef int64_t g_slots_live = 0
cdef int64_t g_bufs_lent = 0
cdef uint64_t g_abandoned = 0

# Memory the kernel may still use when its owner had to let go without a
# final CQE: completions in flight when a loop was closed from a thread that
# may not submit to its ring (SINGLE_ISSUER), a closed loop's buffer rings,
# NVMe commands of a torn-down side ring.  Parked here for the life of the
# process rather than freed under the kernel (tokio-uring's choice as well).
_ABANDONED = []


def abandon(obj):
    """Keep ``obj`` (kernel-visible memory with no final CQE to wait for)
    alive for the rest of the process; see _ABANDONED."""
    _ABANDONED.append(obj)


DEBUG_BUILD = bool(RL_DEBUG)


def debug_counters():
    """Counters summed over every loop of this process (see tests/conftest.py)."""
    return {
        "sqes_prepared": g_sqes_prepared,
        "final_cqes": g_final_cqes,
        "cqes_reaped": g_cqes_reaped,
        "slots_live": g_slots_live,
        "bufs_lent": g_bufs_lent,
        "abandoned": g_abandoned,
    }


cdef void bufs_lent_add(int64_t n) noexcept:
    """Buffer layers (send pool, registered buffers) report lends (+) and
    returns (-) here: the debug build's counter of buffers lent out."""
    global g_bufs_lent
    g_bufs_lent += n


def _list_drop_all(list l):
    """list_drop_all for the tests (the loop's ready queue and streams'
    send queues are emptied this way)."""
    list_drop_all(l)


cdef tuple _hist_values(Hist *h):
    return [h.counts[i] for i in range(HIST_INF + 1)], h.sum_ticks * h.us_per_tick / 1e6


cdef double _calibrate_ticks():
    """Microseconds per rl_ticks() tick, measured against CLOCK_MONOTONIC
    over 2 ms (once per loop that enables histograms)."""
    cdef double t0, t1
    cdef uint64_t k0, k1
    if rl_ticks_is_ns():
        return 1e-3
    t0 = _now()
    k0 = rl_ticks()
    t1 = t0
    while t1 - t0 < 0.002:
        t1 = _now()
    k1 = rl_ticks()
    return (t1 - t0) * 1e6 / <double>(k1 - k0) if k1 > k0 else 1e-3


cdef inline double _now() noexcept nogil:
    return rl_monotonic()


# asyncio's create_task, for loops with a task factory (Loop.create_task).
cdef object _base_create_task = _aio_base.BaseEventLoop.create_task
cdef dict _aio_tasks_dict = _aio_tasks.__dict__


def _factory_protocol():
    """How this Python's BaseEventLoop.create_task calls a task factory:
    1: ``factory(loop, coro[, context=])`` then ``tasks._set_task_name(task,
    name)`` (3.11, 3.12); 2: the same but ``task.set_name(name)`` whatever
    the name (3.13.0-3.13.2); 0: anything else (3.13.3+ passes its keywords
    on), left to asyncio's own method."""
    code = _base_create_task.__code__
    if (code.co_flags & 0x08 or code.co_argcount != 2 or code.co_kwonlyargcount != 2
            or code.co_varnames[:4] != ("self", "coro", "name", "context")):
        return 0
    if hasattr(_aio_tasks, "_set_task_name"):
        return 1
    if sys.version_info[:2] == (3, 13):
        return 2
    return 0


# Loop.create_task runs the factory protocol itself when it knows it: asyncio's
# Python method costs a frame and unspecialised attribute reads per task (the
# eager task factory's whole point is cheap tasks).
cdef int _FACTORY_PROTO = _factory_protocol()
cdef object _set_task_name = getattr(_aio_tasks, "_set_task_name", None)
# Up to 3.11 asyncio's C Future looks ``loop.call_soon`` up as an attribute
# (a bound method made per call); from 3.12 it calls the method without
# binding it (PyObject_VectorcallMethod), and a loop whose instance dict was
# never created then has its methods looked up faster (see EventLoop's
# __slots__).  So the bound call_soon is kept in the instance dict (Loop's
# __cinit__) on 3.11 only.
cdef bint _KEEP_BOUND_CALL_SOON = sys.version_info < (3, 12)
# ... and its async-generator first-iteration hook (Loop._asyncgen_firstiter_hook).
cdef object _base_firstiter_hook = _aio_base.BaseEventLoop._asyncgen_firstiter_hook


cdef object _caller_frame():
    """The innermost Python frame outside this package's compiled code: the
    code that called call_soon/call_later (debug mode's source traceback).
    Compiled functions have no frame of their own unless a tracer makes them
    one (linetrace builds), so a fixed depth would skip the caller's frames,
    or, near the bottom of the stack, raise ValueError."""
    f = sys._getframe(0)
    while f is not None and f.f_code.co_filename.endswith(".pyx"):
        f = f.f_back
    return f


cdef object _format_cb(object cb, object args):
    return _aio_fmt._format_callback_source(cb, args if args is not None else ())


@cython.no_gc_clear
@cython.freelist(250)
@cython.final
cdef class AsyncGenSet:
    """The loop's live async generators (``BaseEventLoop._asyncgens``, a
    ``weakref.WeakSet`` in asyncio), for ``shutdown_asyncgens``.

    The first-iteration hook adds every async generator a task starts, and
    WeakSet's ``add`` and its removal callback are Python frames: a quarter
    of a short generator's life (20k generators of 10 items: 8 of 32 ms).
    Same idea, compiled: a set of weak references whose callback (a C
    method) discards each when its generator is freed.  Offers what asyncio
    and its callers use of a WeakSet: add, discard, len, iteration (over a
    snapshot of the live ones), clear, ``in``."""

    cdef set refs
    cdef object _gone       # the weakrefs' callback: refs.discard, bound once

    def __cinit__(self):
        self.refs = set()
        # Bound to the set, not to self: a bound method of self would be a
        # cycle (self -> _gone -> self) that no_gc_clear keeps the collector
        # from breaking, leaking one set per closed loop.
        self._gone = self.refs.discard

    def add(self, item):
        self.refs.add(PyWeakref_NewRef(item, self._gone))

    def discard(self, item):
        self.refs.discard(PyWeakref_NewRef(item, None))

    def clear(self):
        self.refs.clear()

    def __len__(self):
        return len(self.refs)

    def __iter__(self):
        live = []
        for r in list(self.refs):
            o = r()
            if o is not None:
                live.append(o)
        return iter(live)

    def __contains__(self, item):
        try:
            return PyWeakref_NewRef(item, None) in self.refs
        except TypeError:
            return False

    def __repr__(self):
        return f"<AsyncGenSet of {len(self.refs)}>"


cdef class Handle:
    """A scheduled callback, as returned by ``call_soon`` (asyncio.Handle API)."""

    def __init__(self, *args, **kwargs):
        raise TypeError("Handle objects are created by the loop")

    cdef int _run(self) except -1:
        cdef object cb = self._callback
        cdef object args = self._args
        cdef object ctx = self._context
        try:
            PyContext_Enter(ctx)
            try:
                if args is None:
                    cb()
                elif PyTuple_GET_SIZE(args) == 1:
                    # The common case (a Future waking its Task): a
                    # vectorcall, no argument tuple to unpack.
                    cb(<object>PyTuple_GET_ITEM(args, 0))
                else:
                    cb(*args)
            finally:
                PyContext_Exit(ctx)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            context = {
                "message": f"Exception in callback {_format_cb(cb, args)}",
                "exception": exc,
                "handle": self,
            }
            if self._source_traceback is not None:
                context["source_traceback"] = self._source_traceback
            self._loop.call_exception_handler(context)
        return 0

    def cancel(self):
        if not self._cancelled:
            self._cancelled = True
            if self._loop is not None and self._loop._debug:
                self._repr = repr(self)
            # Drop references early, as asyncio does, so cancelled callbacks
            # do not keep large objects alive until the queue moves past them.
            self._callback = None
            self._args = None

    def cancelled(self):
        return self._cancelled

    def get_context(self):
        return self._context

    def get_loop(self):
        return self._loop

    def _repr_info(self):
        info = [type(self).__name__]
        if self._cancelled:
            info.append("cancelled")
        if self._callback is not None:
            info.append(_format_cb(self._callback, self._args))
        if self._source_traceback:
            frame = self._source_traceback[len(self._source_traceback) - 1]
            info.append(f"created at {frame[0]}:{frame[1]}")
        return info

    def __repr__(self):
        if self._repr is not None:
            return self._repr
        return "<{}>".format(" ".join(self._repr_info()))


@cython.no_gc_clear
cdef class TimerHandle(Handle):
    """A callback scheduled for a time (asyncio.TimerHandle API)."""

    def when(self):
        return self._when

    def cancel(self):
        if not self._cancelled and self._scheduled and self._loop is not None:
            self._loop._timer_cancelled_count += 1
        Handle.cancel(self)

    def _repr_info(self):
        info = Handle._repr_info(self)
        info.insert(2 if self._cancelled else 1, f"when={self._when}")
        return info

    def __hash__(self):
        return hash(self._when)

    def __richcmp__(self, other, int op):
        if not isinstance(other, TimerHandle):
            return NotImplemented
        cdef double a = self._when
        cdef double b = (<TimerHandle>other)._when
        if op == 0:
            return a < b
        if op == 1:
            return a <= b
        if op == 4:
            return a > b
        if op == 5:
            return a >= b
        same = (a == b and self._callback == (<TimerHandle>other)._callback
                and self._args == (<TimerHandle>other)._args
                and self._cancelled == (<TimerHandle>other)._cancelled)
        return same if op == 2 else not same


cdef inline bint _timer_lt(TimerHandle a, TimerHandle b) noexcept:
    # Ties keep scheduling order: (when, seq) is a total order.
    return a._when < b._when or (a._when == b._when and a._seq < b._seq)


cdef class PreEnterHook:

    cdef int on_before_enter(self) except -1:
        return 0


cdef class Completion:

    def __init__(self, *args, **kwargs):
        raise TypeError("Completion objects are created by ringline internals")

    cdef int on_cqe(self, Loop loop, int32_t res, uint32_t flags) except -1:
        return 0


@cython.final
cdef class _WakeupRead(Completion):
    """The eventfd read behind call_soon_threadsafe.

    Kernel ownership: ``value`` is the 8-byte read target; it lives in this
    object, which the slot table pins until the read's CQE.
    """
    cdef uint64_t value

    cdef int on_cqe(self, Loop loop, int32_t res, uint32_t flags) except -1:
        loop._wake_pending = False
        if not loop._closing:
            loop._arm_wakeup()
        return 0


@cython.final
cdef class _Nop(Completion):
    """A NOP with a callback, for tests of the dispatch path."""
    cdef object callback

    cdef int on_cqe(self, Loop loop, int32_t res, uint32_t flags) except -1:
        if self.callback is not None:
            self.callback(res, flags)
        return 0


cdef class Loop:
    """The compiled half of ringline.EventLoop (see aio/eventloop.py for the rest)."""

    def __cinit__(self, *args, **kwargs):
        self._ready = []
        self.inline_rest = []
        self._before_enter = []
        self._scheduled = []
        self._slots = []
        self._gens = NULL
        self._free = NULL
        self._cap = 0
        self._nfree = 0
        self._wake_fd = -1
        self.slow_callback_duration = 0.1
        self._clock_resolution = 1e-9
        # Every Future completion looks up ``loop.call_soon``; on 3.11, on a
        # subclass instance (EventLoop), that builds a bound method each time.
        # One kept in the instance dict is found first and costs a dict hit.
        if _KEEP_BOUND_CALL_SOON:
            try:
                object.__setattr__(self, "call_soon", getattr(self, "call_soon"))
            except AttributeError:
                pass        # no instance dict (a bare Loop)

    def __dealloc__(self):
        if self.hist_busy != NULL:
            PyMem_Free(self.hist_busy)
        if self.hist_step != NULL:
            PyMem_Free(self.hist_step)
        if self._gens != NULL:
            PyMem_Free(self._gens)
        if self._free != NULL:
            PyMem_Free(self._free)
        if self._wake_fd >= 0:
            c_close(self._wake_fd)

    def _open_ring(self, config):
        """Create the ring (disabled until the first run) and the wake-up eventfd."""
        cdef unsigned flags = RL_SETUP_SUBMIT_ALL | RL_SETUP_R_DISABLED
        if config.sqpoll:
            flags |= RL_SETUP_SQPOLL
        if config.effective_coop_taskrun:
            flags |= RL_SETUP_COOP_TASKRUN | RL_SETUP_TASKRUN_FLAG
        if config.single_issuer:
            flags |= RL_SETUP_SINGLE_ISSUER
        if config.effective_defer_taskrun:
            flags |= RL_SETUP_DEFER_TASKRUN
        self.ring = Ring.create(
            config.sq_entries, config.effective_cq_entries, flags,
            -1 if config.sqpoll_cpu is None else config.sqpoll_cpu,
            config.sqpoll_idle_ms)
        from ringline._core.ring import REQUIRED_OPCODES
        self.ring.require(REQUIRED_OPCODES)
        self._slot_grow()
        self._wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)
        if self._wake_fd < 0:
            # C's errno, read at once (ctypes' get_errno() is its own private
            # copy, set only by calls made through ctypes).
            err = errno
            from ringline.errors import error_from_errno
            raise error_from_errno(err, "eventfd")
        self._wake_op = _WakeupRead.__new__(_WakeupRead)

    @property
    def ring(self):
        return self.ring

    # ------------------------------------------------------------------
    # In-flight slot table
    # ------------------------------------------------------------------

    cdef int _slot_grow(self) except -1:
        cdef uint32_t newcap = 64 if self._cap == 0 else self._cap * 2
        cdef uint32_t i
        cdef uint32_t *gens = <uint32_t*>PyMem_Realloc(self._gens, newcap * sizeof(uint32_t))
        if gens == NULL:
            raise MemoryError()
        self._gens = gens
        cdef uint32_t *free_ = <uint32_t*>PyMem_Realloc(self._free, newcap * sizeof(uint32_t))
        if free_ == NULL:
            raise MemoryError()
        self._free = free_
        # Push the new slots so the lowest index is handed out first.
        i = newcap
        while i > self._cap:
            i -= 1
            self._gens[i] = 0
            self._free[self._nfree] = i
            self._nfree += 1
        self._slots.extend([None] * (newcap - self._cap))
        self._cap = newcap
        return 0

    cdef rl_sqe* sqe_for(self, Completion c, unsigned op) except NULL:
        """Reserve a slot for ``c`` and return a zeroed SQE tagged for it.

        The caller fills the SQE with one ``prep_*`` builder before doing
        anything else that could submit.
        """
        global g_sqes_prepared, g_slots_live
        cdef uint32_t slot
        cdef rl_sqe *sqe
        cdef PyObject *item
        if RL_DEBUG and c.in_flight:
            raise AssertionError(f"{c!r} is already in flight")
        if self._closed:
            raise RuntimeError("Event loop is closed")
        sqe = self.ring.get_sqe()        # may raise RingFull: nothing reserved yet
        if self._nfree == 0:
            self._slot_grow()
        self._nfree -= 1
        slot = self._free[self._nfree]
        # Pin (unpinned in _dispatch): _slots[slot] = c without the generic
        # item assignment (slot < _cap == len(_slots); a free slot holds None).
        item = (<PyListObject*>self._slots).ob_item[slot]
        Py_INCREF(c)
        (<PyListObject*>self._slots).ob_item[slot] = <PyObject*>c
        _decref_ptr(item)
        c.slot = slot
        c.gen = self._gens[slot]
        c.in_flight = True
        c.op = op
        self._slots_live += 1
        g_slots_live += 1
        g_sqes_prepared += 1
        self.stat_sqes += 1
        sqe.user_data = tag_encode(op, slot, c.gen)
        return sqe

    cdef rl_sqe* sqe_orphan(self, unsigned op) except NULL:
        """An SQE whose CQE nobody needs (cancel requests): counted, not slotted."""
        global g_sqes_prepared
        cdef rl_sqe *sqe = self.ring.get_sqe()
        self._orphans_live += 1
        g_sqes_prepared += 1
        self.stat_sqes += 1
        sqe.user_data = tag_encode(op, NO_SLOT, 0)
        return sqe

    cdef uint64_t tag_of(self, Completion c) noexcept:
        """The exact user_data of c's in-flight SQE (ASYNC_CANCEL matches on it)."""
        return tag_encode(c.op, c.slot, c.gen)

    cdef int before_enter(self, PreEnterHook h) except -1:
        """Call ``h.on_before_enter()`` once, just before the loop next enters
        the kernel (SQEs are submitted only then, so this adds no latency)."""
        if not h.before_enter_pending:
            h.before_enter_pending = True
            self._before_enter.append(h)
        return 0

    cdef int _run_before_enter(self) except -1:
        cdef list todo = self._before_enter
        cdef Py_ssize_t i = 0, n = len(todo)
        cdef PreEnterHook h
        self._before_enter = self._before_enter_spare if self._before_enter_spare is not None else []
        self._before_enter_spare = None
        try:
            while i < n:
                h = <PreEnterHook>todo[i]
                i += 1
                h.before_enter_pending = False
                try:
                    h.on_before_enter()
                except (SystemExit, KeyboardInterrupt):
                    raise
                except BaseException as exc:
                    self._internal_failed("submit hook", h, exc)
        except BaseException:
            self._before_enter[0:0] = todo[i:]     # still pending: not lost
            raise
        list_drop_all(todo)
        self._before_enter_spare = todo
        return 0

    cdef int cancel_op(self, Completion c) except -1:
        """Ask the kernel to cancel ``c``; its final CQE still arrives (usually
        -ECANCELED) and only then is its memory released."""
        cdef rl_sqe *sqe
        if not c.in_flight:
            return 0
        sqe = self.sqe_orphan(Op.CANCEL)
        prep_cancel(sqe, self.tag_of(c), 0)
        return 0

    # ------------------------------------------------------------------
    # Completion side
    # ------------------------------------------------------------------

    cdef int _reap(self, bint inline_steps) except -1:
        """Dispatch every CQE the kernel has posted (and any it overflowed).

        With ``inline_steps``, the handler tasks those CQEs resume (Task.resume)
        take their steps as soon as the batch of CQEs copied in one go is
        dispatched, as a Protocol's data_received runs inside its CQE, rather
        than from _ready: a reply is queued in time to leave in this loop
        pass (_reap_and_send), and the ready-queue round trip is skipped.  A
        task woken by several CQEs of the batch steps once, for all of them."""
        global g_cqes_reaped
        cdef RingState *r = &self.ring.r
        cdef uint32_t head, tail, n
        cdef rl_cqe *cqe
        cdef uint64_t ud
        cdef int32_t res
        cdef uint32_t fl
        cdef int spins = 0
        self.inline_ok = inline_steps and not self._debug
        try:
            while True:
                head = r.cq_khead[0]
                tail = rl_load_acquire(r.cq_ktail)
                if head == tail:
                    if (rl_load_relaxed(r.sq_kflags) & RL_SQ_CQ_OVERFLOW) and spins < 64:
                        # The CQ filled up: completions wait on the kernel's
                        # overflow list; now that we made room, pull them in.
                        spins += 1
                        self.ring.flush_overflow()
                        continue
                    return 0
                n = tail - head
                if RL_DEBUG and n > r.cq_entries:
                    raise AssertionError(f"CQ claims {n} entries in a ring of {r.cq_entries}")
                # Hand each CQ slot back before dispatching its CQE: the kernel can
                # post into it while handlers run, and a KeyboardInterrupt out of
                # a handler leaves the CQEs after it in the ring for the next reap
                # (none is lost).
                while n:
                    cqe = cq_at(r, head)
                    ud = cqe.user_data
                    res = cqe.res
                    fl = cqe.flags
                    head += 1
                    n -= 1
                    rl_store_release(r.cq_khead, head)
                    g_cqes_reaped += 1
                    self.stat_cqes += 1
                    self._dispatch(ud, res, fl)
                if self.inline_first is not None:
                    self._run_inline_steps()
        finally:
            self.inline_ok = False
            self.keep_current = False
            if self.inline_first is not None:
                # A dispatch or step raised (KeyboardInterrupt) after tasks
                # were resumed: their steps still run, first, from _ready.
                self.inline_rest.insert(0, self.inline_first)
                self.inline_first = None
            if self.inline_rest:
                self._ready[0:0] = self.inline_rest
                list_drop_all(self.inline_rest)

    cdef int _run_inline_steps(self) except -1:
        cdef list more = self.inline_rest
        cdef Handle h = self.inline_first
        # A task resumed from inside these steps goes to _ready: steps never
        # nest, and inline_first/inline_rest do not change while they run.
        self.inline_ok = False
        self.inline_first = None
        self.keep_current = True
        h._run()
        if more:
            self._run_inline_rest(more)
        self.inline_ok = True
        return 0

    cdef int _run_inline_rest(self, list todo) except -1:
        cdef Py_ssize_t i = 0, n = len(todo)
        cdef Handle h
        try:
            while i < n:
                h = <Handle>todo[i]
                i += 1
                h._run()
        finally:
            # Only the steps not yet run stay for _reap to requeue.
            del todo[:i]
        return 0

    cdef int _leave_current(self) except -1:
        """Remove the task an inline step left as asyncio's current one."""
        if RL_DEBUG and _current_tasks.get(self) is not self.current_left:
            raise AssertionError("current_left is not asyncio's current task")
        self.current_left = None
        if _current_tasks.get(self) is not None:
            del _current_tasks[self]
        return 0

    cdef int _reap_and_send(self) except -1:
        """Reap, then hand the kernel at once the sends those CQEs' handlers
        queued (a reply to the request just received) when the loop has
        nothing else to do: no callbacks ready (they may add to the sends)
        and no completions pending in the kernel.  The reply need not wait
        for another loop pass, and the enter is one the next pass would make
        anyway before it blocks.  Under load (completions pending) the next
        pass's enter submits the sends and collects those completions in
        one.  The sends' CQEs, usually posted by that same enter, are reaped
        before returning."""
        cdef RingState *r = &self.ring.r
        self._reap(True)
        if (self._before_enter and not self._ready and not cq_has_events(r)
                and not needs_enter_for_events(r)):
            self._run_before_enter()
            if self.send_queued and (sq_pending(r) or self.ring.sqpoll):
                self.send_queued = False
                self.ring.enter(0, 0.0)
                if cq_has_events(r):
                    self._reap(True)
        return 0

    cdef int _dispatch(self, uint64_t ud, int32_t res, uint32_t flags) except -1:
        global g_final_cqes, g_slots_live
        cdef uint32_t slot = tag_slot(ud)
        cdef Completion c
        cdef PyObject *item
        if slot == NO_SLOT:
            self._orphans_live -= 1
            g_final_cqes += 1
            return 0
        if slot >= self._cap or (self._gens[slot] & TAG_GEN_MASK) != tag_gen(ud):
            # Stale: the op that owned this slot already finished (pitfalls #3).
            self.stat_stale_cqes += 1
            return 0
        c = <Completion>self._slots[slot]
        if c is None:
            self.stat_stale_cqes += 1
            return 0
        if RL_DEBUG:
            # Invariant: a live slot's generation matches its Completion, and
            # the CQE carries the op the SQE was submitted as.
            if not c.in_flight or c.slot != slot or c.gen != self._gens[slot]:
                raise AssertionError(f"slot {slot} table/completion mismatch: {c!r}")
            if tag_op(ud) != c.op:
                raise AssertionError(f"CQE op {tag_op(ud)} != submitted op {c.op} for {c!r}")
        if not (flags & RL_CQE_F_MORE):
            # Final CQE for this SQE: unpin (pinned in sqe_for) and retire the
            # generation so any later CQE carrying it is recognised as stale.
            # _slots[slot] = None in place (as in sqe_for); c keeps the op
            # alive through its handler.
            item = (<PyListObject*>self._slots).ob_item[slot]
            Py_INCREF(None)
            (<PyListObject*>self._slots).ob_item[slot] = <PyObject*>None
            _decref_ptr(item)
            self._gens[slot] += 1
            self._free[self._nfree] = slot
            self._nfree += 1
            self._slots_live -= 1
            g_slots_live -= 1
            g_final_cqes += 1
            c.in_flight = False
            if RL_DEBUG and self._nfree > self._cap:
                raise AssertionError("more free slots than slots")
        if self.current_left is not None and not c.quiet:
            self._leave_current()       # its handler may run user code
        try:
            c.on_cqe(self, res, flags)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._internal_failed("completion handler", c, exc)
        return 0

    cdef _internal_failed(self, str what, object owner, object exc):
        if self.current_left is not None:
            self._leave_current()
        # An internal handler raised: report it like a failed callback; the
        # loop goes on (one connection's problem must not stop the others).
        self.call_exception_handler({
            "message": f"Exception in {what} of {owner!r}",
            "exception": exc,
        })

    cdef int _poll(self, double timeout) except -1:
        """Submit, wait at most ``timeout`` seconds (<0: no limit), dispatch."""
        cdef RingState *r = &self.ring.r
        if timeout == 0.0 or cq_has_events(r):
            if sq_pending(r) or needs_enter_for_events(r) or self.ring.sqpoll:
                self.ring.enter(0, 0.0)
        else:
            if self.send_queued:
                # A send is among the SQEs: submit it first, holding the GIL.
                # Sends usually finish inline, and that CQE makes the blocking
                # wait (with its GIL hand-off, ~800 instructions) unnecessary
                # this round.  Other ops (recv arming, file I/O) rarely
                # complete inline, so they go straight to the wait below
                # rather than cost a second enter.
                self.send_queued = False
                if sq_pending(r) and not self.ring.sqpoll:
                    self.ring.enter(0, 0.0)
                    if cq_has_events(r):
                        self._reap_and_send()
                        return 0
            self._in_wait = True
            try:
                # A thread may have queued a callback between the caller's
                # check and now; it saw _in_wait and wrote the eventfd, or we
                # see its callback here.
                if self._ready:
                    self.ring.enter(0, 0.0)
                else:
                    self.stat_waits += 1
                    self.ring.enter(1, timeout)
                    if self.hist_busy != NULL:
                        self.hist_t0 = rl_ticks()   # the work starts now
            finally:
                self._in_wait = False
        self._reap_and_send()
        return 0

    # ------------------------------------------------------------------
    # Wake-up for call_soon_threadsafe
    # ------------------------------------------------------------------

    cdef int _arm_wakeup(self) except -1:
        cdef rl_sqe *sqe = self.sqe_for(self._wake_op, Op.WAKEUP_READ)
        # off -1: read at the file position (an eventfd has none)
        prep_read(sqe, self._wake_fd, False, &(<_WakeupRead>self._wake_op).value, 8, <uint64_t>-1)
        return 0

    cdef int _wakeup(self) except -1:
        cdef uint64_t one = 1
        if self._in_wait and not self._wake_pending and self._wake_fd >= 0:
            self._wake_pending = True
            c_write(self._wake_fd, &one, 8)
        return 0

    # ------------------------------------------------------------------
    # Callbacks and timers
    # ------------------------------------------------------------------

    cdef _check_closed_c(self):
        if self._closed:
            raise RuntimeError("Event loop is closed")

    cdef int _wrong_thread(self, str what) except -1:
        raise RuntimeError(
            # asyncio's debug-mode wording first, for code that matches on it.
            f"Non-thread-safe operation invoked on an event loop other than the current "
            f"one: {what}() was called from a thread other than the one running the loop; "
            "ringline's loop, connections and files are not thread-safe: from another "
            "thread use loop.call_soon_threadsafe() or asyncio.run_coroutine_threadsafe()")

    def _require_loop_thread(self, str what):
        """check_thread for the Python layers (serve, files, asyncio methods)."""
        self.check_thread(what)

    cdef Handle _call_soon(self, object callback, object args, object context):
        cdef Handle h = Handle.__new__(Handle)
        h._callback = callback
        h._args = args if args else None
        h._context = PyContext_CopyCurrent() if context is None else context
        h._loop = self
        if self._debug:
            h._source_traceback = _aio_fmt.extract_stack(_caller_frame())
        self._ready.append(h)
        return h

    cdef TimerHandle _call_at(self, double when, object callback, object args, object context):
        cdef TimerHandle h = TimerHandle.__new__(TimerHandle)
        h._callback = callback
        h._args = args if args else None
        h._context = PyContext_CopyCurrent() if context is None else context
        h._loop = self
        h._when = when
        self._timer_seq += 1
        h._seq = self._timer_seq
        if self._debug:
            h._source_traceback = _aio_fmt.extract_stack(_caller_frame())
        self._timer_push(h)
        return h

    cdef int _timer_push(self, TimerHandle h) except -1:
        cdef list heap = self._scheduled
        cdef Py_ssize_t pos = len(heap)
        cdef Py_ssize_t parent
        cdef TimerHandle p
        heap.append(h)
        h._scheduled = True
        while pos > 0:
            parent = (pos - 1) >> 1
            p = <TimerHandle>heap[parent]
            if not _timer_lt(h, p):
                break
            heap[pos] = p
            pos = parent
        heap[pos] = h
        return 0

    cdef TimerHandle _timer_pop(self):
        cdef list heap = self._scheduled
        cdef Py_ssize_t n = len(heap)
        cdef TimerHandle top = <TimerHandle>heap[0]
        cdef TimerHandle last = <TimerHandle>heap.pop()
        cdef Py_ssize_t pos = 0
        cdef Py_ssize_t child
        n -= 1
        if n > 0:
            while True:
                child = 2 * pos + 1
                if child >= n:
                    break
                if child + 1 < n and _timer_lt(<TimerHandle>heap[child + 1], <TimerHandle>heap[child]):
                    child += 1
                if not _timer_lt(<TimerHandle>heap[child], last):
                    break
                heap[pos] = heap[child]
                pos = child
            heap[pos] = last
        top._scheduled = False
        return top

    cdef int _timer_heapify(self) except -1:
        # Rebuild from scratch after dropping cancelled timers (rare, O(n log n)).
        cdef list old = self._scheduled
        cdef TimerHandle h
        self._scheduled = []
        for h in old:
            if h._cancelled:
                h._scheduled = False
            else:
                self._timer_push(h)
        self._timer_cancelled_count = 0
        return 0

    cdef int _run_once(self) except -1:
        # The order is asyncio's and uvloop's: the callbacks that are ready
        # when the iteration starts run before the completions it reaps are
        # dispatched (a task scheduled before data arrives has set up its
        # waiter by then).  Completions are dispatched inline, so the
        # callbacks they schedule run at the start of the next iteration.
        cdef double timeout, end_time = 0.0
        cdef TimerHandle th
        cdef list sched = self._scheduled
        cdef Py_ssize_t nsched = len(sched)
        cdef uint64_t t
        cdef bint stop_before = self._stopping

        self.stat_iterations += 1
        if (nsched > MIN_SCHEDULED_TIMERS and
                self._timer_cancelled_count > nsched * MIN_CANCELLED_FRACTION):
            self._timer_heapify()
            sched = self._scheduled

        if sched:
            end_time = _now() + self._clock_resolution
        while sched:
            th = <TimerHandle>sched[0]
            if th._cancelled:
                self._timer_cancelled_count -= 1
                self._timer_pop()
                continue
            if th._when >= end_time:
                break
            self._timer_pop()
            self._ready.append(th)

        if self._ready:
            self._run_ready()
            if self._stopping and not stop_before:
                # stop() from this batch: asyncio's iteration ends with it.
                # (Called before run_forever, stop still polls once below.)
                return 0

        if self._before_enter:
            self._run_before_enter()
        while sched and (<TimerHandle>sched[0])._cancelled:
            self._timer_cancelled_count -= 1
            self._timer_pop()
        if self._ready or self._stopping:
            timeout = 0.0
        elif sched:
            timeout = (<TimerHandle>sched[0])._when - _now()
            if timeout < 0.0:
                timeout = 0.0
            elif timeout > DEF_MAX_WAIT:
                timeout = DEF_MAX_WAIT
        else:
            timeout = -1.0

        if self.hist_busy != NULL:
            # Busy time: from the moment the last wait returned (or the
            # iteration before began) to this wait.
            t = rl_ticks()
            hist_add(self.hist_busy, t - self.hist_t0)
            self.hist_t0 = t
        self._poll(timeout)
        return 0

    cdef int _run_ready(self) except -1:
        cdef list todo = self._ready
        cdef Py_ssize_t i, n = len(todo)
        cdef Handle h
        cdef PyObject *item
        cdef double t0, dt
        if n == 0:
            return 0
        if self.current_left is not None:
            self._leave_current()       # callbacks run outside any task
        self._ready = self._ready_spare if self._ready_spare is not None else []
        self._ready_spare = None
        i = 0
        try:
            while i < n:
                h = <Handle>todo[i]
                # Let go of each Handle as it runs, as asyncio's popleft does:
                # kept until the batch ends, a batch of N task steps holds N
                # dead Handles (and their wrappers) while the steps allocate
                # N new ones; the freelist cannot recycle them and the cyclic
                # GC runs more often and walks them all (~1,000 instructions
                # per create_task + sleep(0) on 3.11, callgrind).
                # (todo[i] = None without the generic item-assignment helper:
                # todo is this batch's own list, i < n = its length.)
                item = (<PyListObject*>todo).ob_item[i]
                Py_INCREF(None)
                (<PyListObject*>todo).ob_item[i] = <PyObject*>None
                _decref_ptr(item)       # h holds its own reference
                i += 1
                if h._cancelled:
                    continue
                if self._debug:
                    self._current_handle = h
                    try:
                        t0 = _now()
                        h._run()
                        dt = _now() - t0
                        if dt >= self.slow_callback_duration:
                            _aio_logger.warning("Executing %s took %.3f seconds",
                                                _aio_base._format_handle(h), dt)
                    finally:
                        self._current_handle = None
                else:
                    h._run()
        except BaseException:
            # KeyboardInterrupt/SystemExit escape a callback: the callbacks
            # not yet run stay queued, ahead of anything queued meanwhile.
            self._ready[0:0] = todo[i:]
            raise
        list_drop_all(todo)
        self._ready_spare = todo
        return 0

    cdef int _drain_ring(self, double budget) except -1:
        """Cancel everything in flight and reap until the kernel has let go of
        every buffer (closing the ring fd alone would leave io-wq workers free
        to write into memory we are about to free)."""
        cdef rl_sqe *sqe
        cdef double deadline = _now() + budget
        if self.ring is None or self.ring.closed:
            return 0
        self._closing = True
        if self.ring.disabled:
            return 0
        if self._slots_live:
            sqe = self.sqe_orphan(Op.CANCEL)
            prep_cancel_any(sqe)
        while (self._slots_live or self._orphans_live) and _now() < deadline:
            self.ring.enter(1, 0.05)
            self._reap(False)
        return 0

    # ------------------------------------------------------------------
    # Python-visible asyncio methods implemented here for speed
    # ------------------------------------------------------------------

    @cython.binding(False)
    def time(self):
        """Return the loop's monotonic clock (CLOCK_MONOTONIC, like asyncio)."""
        return _now()

    @cython.binding(False)      # a plain C method: the bound form Futures call is one layer thinner
    def call_soon(self, callback, *args, context=None):
        if self._closed:
            raise RuntimeError("Event loop is closed")
        if self._debug:
            self.check_thread("call_soon")
            self._check_callback(callback, "call_soon")
        elif self._run_ident != 0 and self._run_ident != PyThread_get_thread_ident():
            # asyncio and uvloop check the thread only in debug mode, and
            # uvloop's own suite calls call_soon from another thread expecting
            # no error: outside debug mode the call is made safe instead (it
            # wakes the loop as call_soon_threadsafe does) rather than loud.
            h = self._call_soon(callback, args, context)
            self._wakeup()
            return h
        return self._call_soon(callback, args, context)

    @cython.binding(False)
    def call_soon_threadsafe(self, callback, *args, context=None):
        if self._closed:
            raise RuntimeError("Event loop is closed")
        if self._debug:
            self._check_callback(callback, "call_soon_threadsafe")
        h = self._call_soon(callback, args, context)
        self._wakeup()
        return h

    @cython.binding(False)
    def call_later(self, delay, callback, *args, context=None):
        if delay is None:
            raise TypeError("delay must not be None")
        if self._closed:
            raise RuntimeError("Event loop is closed")
        if self._debug:
            self.check_thread("call_later")
            self._check_callback(callback, "call_later")
        elif self._run_ident != 0 and self._run_ident != PyThread_get_thread_ident():
            # as in call_soon: safe, not loud, outside debug mode (the heap
            # push runs in C under the GIL; the wake-up makes the loop
            # recompute its timeout)
            h = self._call_at(_now() + <double>delay, callback, args, context)
            self._wakeup()
            return h
        return self._call_at(_now() + <double>delay, callback, args, context)

    @cython.binding(False)
    def call_at(self, when, callback, *args, context=None):
        if when is None:
            raise TypeError("when cannot be None")
        if self._closed:
            raise RuntimeError("Event loop is closed")
        if self._debug:
            self.check_thread("call_at")
            self._check_callback(callback, "call_at")
        elif self._run_ident != 0 and self._run_ident != PyThread_get_thread_ident():
            # as in call_soon: safe, not loud, outside debug mode (the heap
            # push runs in C under the GIL; the wake-up makes the loop
            # recompute its timeout)
            h = self._call_at(<double>when, callback, args, context)
            self._wakeup()
            return h
        return self._call_at(<double>when, callback, args, context)

    @cython.binding(False)
    def create_future(self):
        """Create a Future attached to the loop (the C-accelerated asyncio.Future)."""
        # Not ``_Future()`` (the running loop): on 3.11 finding the running
        # loop costs a getpid() system call.
        return _Future(loop=self)

    @cython.binding(False)
    def create_task(self, coro, *, name=None, context=None):
        """Schedule a coroutine object; return its Task (BaseEventLoop.create_task)."""
        # BaseEventLoop's method, compiled: in Python it costs two frames
        # (itself and _check_closed) per task, about 1,400 instructions of
        # the ~14,400 a create_task + step + completion takes (callgrind,
        # CPython 3.11; uvloop's compiled one: ~12,800 in all).  With a task
        # factory set, the factory protocol differs between CPython versions:
        # the known ones run here (_FACTORY_PROTO), others in asyncio's code.
        if self._closed:
            raise RuntimeError("Event loop is closed")
        self.check_thread("create_task")
        factory = self._task_factory
        if factory is not None and _FACTORY_PROTO != 0:
            # BaseEventLoop.create_task's factory branch, as this Python has it
            if context is None:
                task = factory(self, coro)    # the legacy call, as asyncio's
            else:
                task = factory(self, coro, context=context)
            if _FACTORY_PROTO == 2:
                task.set_name(name)
            elif name is not None:
                _set_task_name(task, name)
            return task
        if factory is not None:
            # Only the arguments given: asyncio's method passes on what it
            # received (name/context, on 3.13.3+ any keyword) to the factory.
            if context is None:
                if name is None:
                    return _base_create_task(self, coro)
                return _base_create_task(self, coro, name=name)
            if name is None:
                return _base_create_task(self, coro, context=context)
            return _base_create_task(self, coro, name=name, context=context)
        # No frame of ours to drop from a debug-mode _source_traceback (the
        # Python method deletes its own): it ends at the caller, as asyncio's.
        # Task takes keywords only, so each one costs a dict entry and a
        # keyword match: pass name only when given (None is its default).
        # asyncio.tasks.Task is read from the module's dict on every call
        # (asyncio reads it each time too, so a patched Task is honoured),
        # but not through getattr on the module, which costs ~300 instructions.
        task_type = _aio_tasks_dict.get("Task")
        if task_type is None:
            task_type = _aio_tasks.Task
        if name is None:
            return task_type(coro, loop=self, context=context)
        return task_type(coro, loop=self, name=name, context=context)

    @cython.binding(False)
    def _asyncgen_firstiter_hook(self, agen):
        # BaseEventLoop's hook, compiled: it runs once per async generator
        # (sys.set_asyncgen_hooks), and its Python frame was ~4% of a short
        # generator's cost.  The warning case is left to asyncio's own code.
        if self._asyncgens_shutdown_called:
            _base_firstiter_hook(self, agen)
        elif type(self._asyncgens) is AsyncGenSet:
            (<AsyncGenSet>self._asyncgens).refs.add(
                PyWeakref_NewRef(agen, (<AsyncGenSet>self._asyncgens)._gone))
        else:
            self._asyncgens.add(agen)

    @cython.binding(False)
    def _check_closed(self):
        # BaseEventLoop's, compiled: asyncio's create_task (the task-factory
        # path) and many other inherited methods call it.
        if self._closed:
            raise RuntimeError("Event loop is closed")

    @cython.binding(False)
    def get_debug(self):
        # Here rather than inherited from BaseEventLoop: every Future's
        # constructor calls it, and a Python-level method costs a frame.
        return self._debug

    def _timer_handle_cancelled(self, handle):
        # asyncio.TimerHandle calls this; our own TimerHandle counts itself.
        pass

    @cython.binding(False)
    def is_running(self):
        return self._thread_id is not None

    @cython.binding(False)
    def is_closed(self):
        return self._closed

    def stop(self):
        self._stopping = True
        if self._run_ident != 0 and self._run_ident != PyThread_get_thread_ident():
            # From another thread (thread-safe here, unlike asyncio's): wake
            # the loop from its wait so that it sees the flag now.
            self._wakeup()

    def _run_forever_core(self):
        """Iterate until stop(); the Python wrapper does asyncio's set-up."""
        cdef bint first = self.ring.disabled
        if self.ring.disabled:
            self.ring.enable()
        if first or not self._wake_op.in_flight:
            self._arm_wakeup()
        self._run_ident = PyThread_get_thread_ident()
        if self.hist_busy != NULL:
            self.hist_t0 = rl_ticks()       # not the time since the last run
        try:
            while True:
                self._run_once()
                if self._stopping:
                    break
        finally:
            self._run_ident = 0
            if self.current_left is not None:
                self._leave_current()

    def _flush_before_close(self):
        """Prepare what waits for the next submit (e.g. sends written just
        before close()) so that the close's drain submits it ahead of its
        cancels, as a plain socket's write would have sent it at once."""
        if self._before_enter and self.ring is not None and not self.ring.closed:
            self._run_before_enter()

    def _close_core(self, bint owner=True):
        """Cancel and reap what is in flight, then release the ring.

        ``owner`` is False when the calling thread is not the ring's single
        issuer: then nothing can be submitted or reaped, and the in-flight
        completions are parked for good (see _ABANDONED), as they are when
        the drain runs out of time.  Returns True when nothing was left in
        flight (buffers may then be freed)."""
        self._ready = []
        for h in self._before_enter:
            (<PreEnterHook>h).before_enter_pending = False
        self._before_enter = []
        if _KEEP_BOUND_CALL_SOON:
            try:
                # The bound call_soon kept in __cinit__ makes a cycle through
                # the instance dict; a closed loop lets plain refcounting free it.
                del self.__dict__["call_soon"]
            except (AttributeError, KeyError):
                pass
        for h in self._scheduled:
            (<TimerHandle>h)._scheduled = False
        self._scheduled = []
        self._timer_cancelled_count = 0
        clean = False
        try:
            if owner:
                try:
                    self._drain_ring(2.0)
                except FileExistsError:
                    # EEXIST: the kernel says this task is not the ring's
                    # issuer after all (a thread that took over a dead
                    # owner's ident): parked below as for any foreign thread.
                    pass
            if self._slots_live or self._orphans_live:
                # Not ours to reap (foreign thread), or the kernel did not
                # let go within the budget: keep every buffer those ops may
                # still touch alive for the life of the process.
                self._abandon_in_flight()
            else:
                clean = True
        finally:
            self._closed = True
            # Completions reaped by the drain may have scheduled callbacks
            # (futures resolved on close): a closed loop runs none of them.
            self._ready = []
            if self.ring is not None:
                self.ring.close_ring()
            if self._wake_fd >= 0:
                c_close(self._wake_fd)
                self._wake_fd = -1
        return clean

    cdef _abandon_in_flight(self):
        global g_slots_live, g_abandoned
        cdef uint32_t i
        self._closing = True
        for i in range(self._cap):
            c = self._slots[i]
            if c is not None:
                _ABANDONED.append(c)
                self._slots[i] = None
                (<Completion>c).in_flight = False
                self._slots_live -= 1
                g_slots_live -= 1
                g_abandoned += 1
        g_abandoned += self._orphans_live
        self._orphans_live = 0

    def _dispatch_py(self, uint64_t user_data, int32_t res, uint32_t flags):
        """Feed one completion to the dispatcher (tests of stale-tag handling)."""
        self._dispatch(user_data, res, flags)

    def _nop(self, callback=None):
        """Submit a NOP whose completion calls ``callback(res, flags)`` (tests)."""
        cdef _Nop op = _Nop.__new__(_Nop)
        op.callback = callback
        cdef rl_sqe *sqe = self.sqe_for(op, Op.NOP)
        prep_nop(sqe)
        return self.tag_of(op)

    def enable_histograms(self):
        """Start recording latency histograms (see :meth:`histograms`).
        Off by default: it costs a tick-counter read or two per loop
        iteration and two per native task step (``python -m ringline serve
        --metrics`` turns it on)."""
        cdef double us_per_tick
        if self.hist_busy == NULL:
            us_per_tick = _calibrate_ticks()
            self.hist_busy = <Hist*>PyMem_Calloc(1, sizeof(Hist))
            self.hist_step = <Hist*>PyMem_Calloc(1, sizeof(Hist))
            if self.hist_busy == NULL or self.hist_step == NULL:
                raise MemoryError()
            self.hist_busy.us_per_tick = self.hist_step.us_per_tick = us_per_tick
            self.hist_busy.us_per_tick_fx = self.hist_step.us_per_tick_fx = \
                <uint64_t>(us_per_tick * 4294967296.0 + 0.5)
            self.hist_t0 = rl_ticks()

    def histograms(self):
        """``{"loop_busy": ..., "task_step": ...}`` or None when not enabled.
        Each is ``(upper_bounds, counts, sum_seconds)``: ``counts[i]``
        durations below ``upper_bounds[i]`` seconds and at least the bound
        before (the last bound is ``inf``).  loop_busy: per iteration, the
        time not blocked waiting for the kernel; task_step: per step of a
        native handler's task."""
        if self.hist_busy == NULL:
            return None
        bounds = [2.0 ** i / 1e6 for i in range(HIST_INF)] + [float("inf")]
        return {"loop_busy": (bounds, *_hist_values(self.hist_busy)),
                "task_step": (bounds, *_hist_values(self.hist_step))}

    def statistics(self):
        """Counters of this loop's ring activity (plain dict, cheap)."""
        return {
            "iterations": self.stat_iterations,
            "waits": self.stat_waits,
            "sqes": self.stat_sqes,
            "cqes": self.stat_cqes,
            "stale_cqes": self.stat_stale_cqes,
            "enters": self.ring.enters if self.ring is not None else 0,
            "slots_live": self._slots_live,
            "orphans_live": self._orphans_live,
            "overflow_flushes": self.ring.overflow_flushes if self.ring is not None else 0,
            "sq_full_submits": self.ring.sq_full_submits if self.ring is not None else 0,
            "submit_failures": self.ring.submit_failures if self.ring is not None else 0,
            "file_ops": self.stat_file_ops,
            "file_errors": self.stat_file_errors,
        }
