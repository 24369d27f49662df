# Handler tasks: the coroutine driver behind serve()'s connections.
from ringline._core.loop cimport Loop, Handle


cdef class Task


cdef class _Step(Handle):
    cdef Task task
    cdef object exc            # thrown into the coroutine at the step, or None
    # Invariant: queued <=> self waits to run: in task._loop._ready, or in
    # the loop's inline_first/inline_rest while a reap runs inline steps.
    cdef bint queued


cdef class Task:
    cdef Loop _loop
    cdef object coro
    cdef object _context
    cdef object _name               # None: the default name, from _num (get_name)
    cdef long long _num
    cdef int _state
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
    cdef bint _must_cancel
    cdef public object _cancel_message       # asyncio.gather reads it
    cdef object _cancelled_exc
    cdef int _num_cancels_requested
    cdef _Step _stepper
    cdef object _wakeup_cb
    cdef public bint _asyncio_future_blocking
    cdef public bint _log_traceback
    cdef public bint _log_destroy_pending
    cdef public object _source_traceback
    cdef object __weakref__

    cdef int resume(self, object exc) except -1
    cdef int _schedule(self, object exc) except -1
    cdef int _step(self, object exc) except -1
    cdef int _on_yield(self, object result) except -1
    cdef int _finish(self, int state, object result, object exc) except -1
    cdef _returned(self, object value)
    cdef int _retrieve(self, str not_ready) except -1


cdef Task current_native(object loop)
