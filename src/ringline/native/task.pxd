# Handler tasks: the coroutine driver behind serve()'s connections.
from ringline._core.loop cimport Loop, Handle


cdef class Task(Handle):
    # The task is its own step on the ready queue (a Handle whose _run is one
    # step; no step object of its own: fewer bytes per parked handler).  Of
    # Handle's fields it uses _loop, _context (the task's context),
    # _source_traceback and __weakref__; _callback and _args stay None.
    cdef object coro
    cdef object _name               # None: the default name, from _num (get_name)
    cdef long long _num
    cdef int _state
    cdef bint _must_cancel          # (next to _state: no padding after either)
    cdef object _result
    cdef object _exception
    # None (none yet, or done), one (fn, context) tuple, or a list of them.
    cdef object _callbacks
    cdef object _fut_waiter         # the asyncio future awaited, or None
    # What a ringline wait parked this task on (a Connection), or None.
    # Invariant: parked is not None => no step is queued and _fut_waiter is
    # None; the parking object resumes the task with resume().  A parking
    # object that finds ``task.parked is not self`` holds a stale reference
    # (the task was cancelled meanwhile) and drops it.
    cdef public object parked
    cdef public object _cancel_message       # asyncio.gather reads it
    cdef object _cancelled_exc
    cdef object _wakeup_cb
    cdef public bint _asyncio_future_blocking
    cdef public bint _log_traceback
    cdef public bint _log_destroy_pending
    cdef int _num_cancels_requested  # (after the bints: fills their padding)
    cdef object _step_exc           # thrown into the coroutine at the queued step, or None
    # Invariant: _queued <=> the task's step waits to run: in _loop._ready, or
    # in the loop's inline_first/inline_rest while a reap runs inline steps.
    cdef bint _queued

    cdef int resume(self, object exc) except -1
    cdef int _schedule(self, object exc) except -1
    cdef int _step(self, object exc) except -1
    cdef int _on_yield(self, object result) except -1
    cdef int _finish(self, int state, object result, object exc) except -1
    cdef _returned(self, object value)
    cdef int _retrieve(self, str not_ready) except -1


cdef Task current_native(object loop)
