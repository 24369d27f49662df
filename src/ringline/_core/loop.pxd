# The loop core: ready queue, timer heap, in-flight slot table, CQE dispatch.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, int64_t, uint64_t
from ringline._core.abi.uring cimport rl_sqe
from ringline._core.ring cimport Ring, RingState
from cpython.ref cimport PyObject
from cpython.pythread cimport PyThread_get_thread_ident


cdef extern from "Python.h":
    ctypedef struct PyListObject:
        PyObject **ob_item
    Py_ssize_t Py_SIZE(object o)
    void Py_SET_SIZE(object o, Py_ssize_t n)
    void _decref_ptr "Py_DECREF"(PyObject *o)
    int _list_set_slice "PyList_SetSlice"(object l, Py_ssize_t lo, Py_ssize_t hi,
                                          PyObject *v) except -1


# Latency histograms (Loop.enable_histograms), off unless asked for: the
# cost when on is one tick-counter read per iteration (two if it blocked)
# and two per native task step, plus an integer bucket update each.
# Bucket i < HIST_INF holds durations below 2**i microseconds (and at least
# 2**(i-1) for i > 0); bucket HIST_INF the rest.
cdef enum:
    HIST_INF = 23

cdef struct Hist:
    uint64_t counts[24]
    uint64_t sum_ticks
    double us_per_tick       # calibrated by Loop.enable_histograms
    uint64_t us_per_tick_fx  # the same in 32.32 fixed point (hist_add)

cdef extern from *:
    """
    /* (a * b) >> 32 without overflow: microseconds from ticks in fixed point,
       a few instructions where the double conversions cost about twenty. */
    static inline uint64_t rl_mul_shr32(uint64_t a, uint64_t b) {
        return (uint64_t)(((unsigned __int128)a * b) >> 32);
    }
    """
    int _clzll "__builtin_clzll"(unsigned long long x) nogil
    uint64_t rl_mul_shr32(uint64_t a, uint64_t b) nogil

cdef inline void hist_add(Hist *h, uint64_t ticks) noexcept nogil:
    cdef unsigned long long us = rl_mul_shr32(ticks, h.us_per_tick_fx)
    cdef int i = 0
    if us:
        i = 64 - _clzll(us)
        if i > HIST_INF:
            i = HIST_INF
    h.counts[i] += 1
    h.sum_ticks += ticks


cdef inline int list_drop_all(list l) except -1:
    """Empty ``l`` but keep its item array for the next appends (clear()
    frees it; the hot lists here are refilled every loop iteration).

    Items are dropped from the back, each one removed before it is released,
    so a destructor that appends to ``l`` meanwhile finds a consistent list;
    whatever it appended is kept."""
    cdef Py_ssize_t n = Py_SIZE(l)
    cdef PyObject *item
    while n > 0 and Py_SIZE(l) == n:
        n -= 1
        item = (<PyListObject*>l).ob_item[n]
        Py_SET_SIZE(l, n)
        _decref_ptr(item)
    if n > 0:
        # A destructor appended: our remaining items are still the first n.
        _list_set_slice(l, 0, n, NULL)
    return 0


cdef void bufs_lent_add(int64_t n) noexcept


cdef class Loop


cdef class Completion:
    """An operation the kernel is working on.

    Kernel ownership: from ``Loop.sqe_for`` until the CQE that carries no
    IORING_CQE_F_MORE, the loop's slot table holds a strong reference to the
    Completion (pin: ``_slots[slot] = c`` in ``_slot_alloc``; unpin:
    ``_slots[slot] = None`` in ``_dispatch``).  Every buffer, iovec, msghdr,
    sockaddr or timespec an SQE points at must be owned by its Completion, so
    it lives at least that long.
    """
    cdef uint32_t slot
    cdef uint32_t gen
    cdef uint8_t op          # the Op it was submitted as (part of its tag)
    cdef bint in_flight      # Invariant: in_flight <=> _slots[slot] is self
    cdef bint quiet          # on_cqe runs no user code: it only wakes tasks
                             # and resolves futures (see Loop.current_left)
    cdef int on_cqe(self, Loop loop, int32_t res, uint32_t flags) except -1


cdef class PreEnterHook:
    """Work an object defers to the moment before the loop enters the
    kernel (Loop.before_enter): e.g. a stream's sends, so writes made
    while one batch of completions is dispatched leave as one SQE."""
    cdef bint before_enter_pending    # Invariant: before_enter_pending <=> in loop._before_enter
    cdef int on_before_enter(self) except -1


cdef class Handle:
    cdef readonly object _callback
    cdef readonly object _args
    cdef readonly object _context
    cdef Loop _loop
    cdef readonly bint _cancelled
    cdef public object _source_traceback
    cdef object _repr
    cdef object __weakref__          # handles can be weakly referenced, as asyncio's
    cdef int _run(self) except -1


cdef class TimerHandle(Handle):
    cdef readonly double _when
    cdef uint64_t _seq
    cdef readonly bint _scheduled    # Invariant: _scheduled <=> in loop._scheduled


cdef class Loop:
    cdef Ring ring
    cdef bint send_queued           # a SEND* SQE was prepared since the last wait (see _poll)
    # Steps of handler tasks resumed by the CQEs being dispatched: _reap runs
    # them once the batch of CQEs it copied is dispatched, instead of from
    # _ready.  inline_ok is set only while _reap dispatches for a loop
    # iteration (not in debug mode, not while those steps run).  The first
    # one waits in inline_first (the usual case, no list append), later ones in
    # inline_rest, in the order they were resumed.
    cdef Handle inline_first
    cdef list inline_rest
    cdef bint inline_ok
    # An inline step (keep_current) leaves itself as asyncio's current task
    # (current_left) and the next inline step replaces it: one dict store
    # per step instead of an insert and a delete.  The entry is removed
    # (_leave_current) before any other code of the loop's could see it:
    # callbacks (_run_ready), a completion handler that is not quiet
    # (_dispatch), the exception handler, the end of run_forever.
    # Invariant: when current_left is not None, asyncio's
    # _current_tasks[loop] is it, and only the loop's own code and inline
    # steps have run since it stepped.
    cdef bint keep_current
    cdef object current_left
    cdef int _leave_current(self) except -1

    # The inline-step and current-task fields above are written only by the
    # loop (loop.pyx) and through these three methods (by native.task).
    cdef inline int queue_inline_step(self, Handle step) except -1:
        """Run ``step`` once the batch of CQEs being dispatched is done:
        1 when queued so, 0 when not in such a reap (queue it on _ready)."""
        if not self.inline_ok:
            return 0
        if self.inline_first is None:
            self.inline_first = step
        else:
            self.inline_rest.append(step)
        return 1

    cdef inline object take_left_current(self):
        """A step starts: the task an earlier inline step left as asyncio's
        current one (None if none), which the caller's entry now replaces."""
        left = self.current_left
        self.current_left = None
        return left

    cdef inline bint keep_as_current(self, object task) noexcept:
        """A step ended: True when the loop keeps ``task`` as asyncio's
        current task (an inline step; the next one replaces it), False when
        the caller must remove its entry."""
        if self.keep_current:
            self.current_left = task
            return True
        return False
    cdef list _ready                # Handles to run, FIFO
    cdef list _before_enter            # PreEnterHooks to run before the next enter
    # Emptied lists swapped back in for _ready/_before_enter (never the same
    # object as the live one; None while a run has them out).
    cdef list _ready_spare
    cdef list _before_enter_spare
    cdef readonly list _scheduled   # binary heap of TimerHandle by (_when, _seq)
    cdef readonly bint _closed
    cdef public bint _stopping
    cdef public bint _debug
    # asyncio's attribute (set_task_factory writes it), a C field so that
    # create_task reads it without an instance-dict lookup.
    cdef public object _task_factory
    # asyncio's async-generator bookkeeping (BaseEventLoop's attributes), C
    # fields read by the compiled _asyncgen_firstiter_hook once per generator.
    cdef public object _asyncgens
    cdef public bint _asyncgens_shutdown_called
    cdef public object _thread_id
    # PyThread_get_thread_ident() of the thread running the loop, 0 while it
    # does not run (set by _run_forever_core): check_thread compares it in C.
    cdef readonly unsigned long _run_ident
    cdef readonly object _current_handle
    cdef public double slow_callback_duration
    cdef public double _clock_resolution
    cdef readonly int _timer_cancelled_count
    cdef uint64_t _timer_seq
    cdef readonly bint _closing      # close() is cancelling what is in flight

    # In-flight slot table.  Invariant: len(live slots) == _slots_live and
    # every live slot's Completion has in_flight set.  A slot's gen only grows.
    cdef list _slots
    cdef uint32_t *_gens
    cdef uint32_t *_free
    cdef uint32_t _nfree
    cdef uint32_t _cap
    cdef readonly uint32_t _slots_live
    cdef readonly uint32_t _orphans_live   # fire-and-forget SQEs awaiting their CQE

    # call_soon_threadsafe wake-up: an eventfd whose read is armed on the ring.
    cdef int _wake_fd
    cdef bint _in_wait
    cdef bint _wake_pending
    cdef Completion _wake_op

    # Per-loop state of the layers above the core, each made on first use
    # and written only by the module named.  The core cannot cimport those
    # layers, so the fields are typed object here (their owner casts).
    cdef public object _net_state    # _net.stream.NetState: buffer rings, send pool, streams
    cdef public object _dio_pool     # files.fs: registered buffers for O_DIRECT
    cdef public object _nvme_ring    # files.nvme: the NVMe side ring ...
    cdef public int _nvme_users      # ... and how many open devices use it
    cdef public dict _listeners      # aio.transports: listening fd -> its AcceptOp
    cdef public object _ring_thread  # aio.eventloop: the thread that first ran the loop
    cdef public object _ring_owner   # aio.eventloop: that thread's Thread object (idents are reused)

    # statistics
    cdef readonly uint64_t stat_iterations
    cdef readonly uint64_t stat_cqes
    cdef readonly uint64_t stat_stale_cqes
    cdef readonly uint64_t stat_sqes
    cdef readonly uint64_t stat_waits
    cdef readonly uint64_t stat_file_ops      # file ops completed (files/fileops.pyx)
    cdef readonly uint64_t stat_file_errors   # ... of which failed
    cdef Hist *hist_busy     # per iteration: time not spent blocked in the wait
    cdef Hist *hist_step     # per native task step (native/task.pyx)
    cdef uint64_t hist_t0    # rl_ticks() when this iteration's work began
                             # (the previous one's end, or a blocking wait's)

    cdef rl_sqe* sqe_for(self, Completion c, unsigned op) except NULL
    cdef rl_sqe* sqe_orphan(self, unsigned op) except NULL
    cdef int cancel_op(self, Completion c) except -1
    cdef int before_enter(self, PreEnterHook h) except -1
    cdef int _run_before_enter(self) except -1
    cdef _internal_failed(self, str what, object owner, object exc)
    cdef uint64_t tag_of(self, Completion c) noexcept
    cdef int _slot_grow(self) except -1
    cdef int _reap(self, bint inline_steps) except -1
    cdef int _reap_and_send(self) except -1
    cdef int _run_inline_steps(self) except -1
    cdef int _run_inline_rest(self, list todo) except -1
    cdef int _dispatch(self, uint64_t ud, int32_t res, uint32_t flags) except -1
    cdef int _poll(self, double timeout) except -1
    cdef int _run_once(self) except -1
    cdef int _run_ready(self) except -1
    cdef int _arm_wakeup(self) except -1
    cdef int _wakeup(self) except -1
    cdef int _drain_ring(self, double budget) except -1
    cdef Handle _call_soon(self, object callback, object args, object context)
    cdef TimerHandle _call_at(self, double when, object callback, object args, object context)
    cdef int _timer_push(self, TimerHandle h) except -1
    cdef TimerHandle _timer_pop(self)
    cdef int _timer_heapify(self) except -1
    cdef _check_closed_c(self)
    cdef int _wrong_thread(self, str what) except -1

    cdef inline int check_thread(self, str what) except -1:
        """Raise RuntimeError naming ``what`` when the loop runs in another
        thread (not thread-safe: misuse must be loud, not silently queued)."""
        if self._run_ident != 0 and self._run_ident != PyThread_get_thread_ident():
            self._wrong_thread(what)
        return 0
    cdef _abandon_in_flight(self)
