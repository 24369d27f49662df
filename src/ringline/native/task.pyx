# cython: language_level=3, boundscheck=False, wraparound=False
"""Handler tasks: the coroutine driver behind ``serve()``'s connections.

A ``Task`` runs one coroutine the way ``asyncio.Task`` does, and is a
Future in asyncio's sense (``asyncio.isfuture`` holds; ``current_task()``,
``asyncio.timeout``, ``TaskGroup``, ``wait`` and ``gather`` work with it), with
one addition: a ringline wait (``Connection.recv``/``recv_exactly``/
``with_data``) does not go through a Future.  The connection *parks* the
task on itself and, when bytes, end of stream or an error arrive, resumes
the task's one reusable step.  That skips, per wait, a Future's creation,
its done-callback, ``call_soon`` and a Handle (about half the Python-level
work of a request/response handler).  A step resumed while the loop
dispatches CQEs runs as soon as that batch of CQEs is dispatched
(``Loop._reap``), much as a Protocol's ``data_received`` runs inside its
CQE; any other resume (a cancel, a close from another task) queues it on the
ready queue.  Either way the loop runs it, never the code that resumed it.

Everything else a coroutine may await (asyncio futures, tasks, sleep,
locks, ``conn.send``) takes asyncio's ordinary path: ``add_done_callback``
and a wake-up.

Why not ``asyncio.Task`` with a cheaper waiter: on CPython 3.11-3.13 the C
Task handles only exact ``asyncio.Future`` fast; any other waiter goes
through method lookups by name, which cost more than the Future they save.
"""
import asyncio
import contextvars
import itertools
from asyncio import base_tasks as _base_tasks
from asyncio import coroutines as _coroutines
from asyncio import tasks as _aio_tasks

cimport cython
from cpython.dict cimport PyDict_GetItem, PyDict_DelItem, PyDict_SetItem
from cpython.ref cimport PyObject, Py_DECREF
from libc.stdint cimport uint64_t

from ringline._core.abi.uring cimport RL_DEBUG, rl_ticks
from ringline._core.loop cimport Loop, Handle, Hist, hist_add


cdef extern from "Python.h":
    int PyContext_Enter(object) except -1
    int PyContext_Exit(object) except -1
    int PyIter_Send(object iter, object arg, PyObject **presult) except -1
    PyObject *PyDict_SetDefault(object d, object key, object default) except NULL   # borrowed
    PyObject *PyDict_GetItemWithError(object d, object key) except? NULL             # borrowed
    long PY_VERSION_HEX


cdef enum:
    T_PENDING = 0
    T_CANCELLED = 1
    T_FINISHED = 2

cdef object _CancelledError = asyncio.CancelledError
cdef object _InvalidStateError = asyncio.InvalidStateError
cdef object _get_loop = asyncio.futures._get_loop
cdef object _register_task = _aio_tasks._register_task
cdef object _enter_task_fn = _aio_tasks._enter_task
cdef object _leave_task_fn = _aio_tasks._leave_task
# asyncio's loop -> running task map.  A dict on CPython 3.11-3.13: read and
# written in place (what _enter_task/_leave_task do, minus two calls).
# Elsewhere the functions are called.
cdef object _current_tasks = getattr(_aio_tasks, "_current_tasks", None)
cdef bint _tasks_is_dict = type(_current_tasks) is dict
_counter = itertools.count(1)

#: What a ringline wait yields to the Task it parked (Connection._wait).
PARK = object()
cdef object _PARK = PARK


# The ringline Task inside _step right now (steps never nest: entering a
# second task while one runs raises), else None.  Only then can a ringline
# Task be asyncio's current task.
cdef Task _stepping = None


cdef Task current_native(object loop):
    """The ringline Task running on ``loop`` right now, or None (no task,
    or an asyncio.Task such as an eager one started inside a step)."""
    cdef PyObject *t
    cdef Task s = _stepping
    if s is None or s._loop is not loop:
        return None
    if PY_VERSION_HEX < 0x030C0000:
        # Before 3.12 no task runs inside another's step (no eager tasks):
        # the stepping task is the current one.
        return s
    if _tasks_is_dict:
        # An eager task (3.12+) started inside the step is current instead.
        t = PyDict_GetItemWithError(_current_tasks, loop)
        return s if t is <PyObject*>s else None
    return s if _aio_tasks.current_task(loop) is s else None


@cython.final
cdef class Task(Handle):
    """A coroutine driven on a ringline loop (see the module docstring).

    Implements the asyncio Future/Task interface: ``done``, ``result``,
    ``exception``, ``cancel(msg)``, ``cancelled``, ``cancelling``,
    ``uncancel``, ``add_done_callback``, ``remove_done_callback``,
    ``get_loop``, ``get_coro``, ``get_name``, ``set_name``,
    ``get_context``, ``get_stack``, ``print_stack`` and ``await``.  It is not
    an ``asyncio.Task`` subclass.
    """

    def __init__(self, coro, Loop loop not None, *, name=None, context=None):
        if not _coroutines.iscoroutine(coro):
            raise TypeError(f"a coroutine was expected, got {coro!r}")
        self._loop = loop
        self.coro = coro
        self._context = contextvars.copy_context() if context is None else context
        # The number alone until a name is asked for (get_name): the string
        # would be most of a parked handler's per-connection bytes.
        if name is None:
            self._num = next(_counter)
        else:
            self._name = str(name)
        # _callbacks: None until the first add_done_callback (and once done).
        # _wakeup_cb: made the first time an asyncio future is awaited.
        self._log_destroy_pending = True
        _register_task(self)
        if loop._closed:
            raise RuntimeError("Event loop is closed")
        self._schedule(None)

    # ---- driving the coroutine ----

    cdef int _run(self) except -1:
        # The queued step (Handle._run: from _ready or an inline step).
        exc = self._step_exc
        self._step_exc = None
        self._queued = False
        if self._state != T_PENDING:
            return 0        # finished since the step was queued
        try:
            # The task's context, as asyncio runs a Task's steps in it (a
            # Future's wake-up callback is registered with it, too).
            PyContext_Enter(self._context)
            try:
                self._step(exc)
            finally:
                PyContext_Exit(self._context)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as e:
            # Only a bug of ours gets here: the coroutine's own exceptions
            # end the task.
            self._loop.call_exception_handler({
                "message": f"ringline task step failed: {self!r}",
                "exception": e,
            })
        return 0

    cdef int resume(self, object exc) except -1:
        """Called by the object this task is parked on: step again, with
        ``exc`` thrown at the wait (None: the wait is over).

        Called while the loop dispatches CQEs (bytes arrived for the wait),
        the step is handed to the loop to run once that batch is dispatched
        (Loop._reap); else it is queued on _ready."""
        cdef Loop loop = self._loop
        self.parked = None
        if loop.inline_ok and _stepping is None:
            if self._queued:
                raise RuntimeError(f"{self!r}: a step is already queued")
            self._step_exc = exc
            self._queued = True
            loop.queue_inline_step(self)
            return 0
        return self._schedule(exc)

    cdef int _schedule(self, object exc) except -1:
        if self._queued:
            raise RuntimeError(f"{self!r}: a step is already queued")
        self._step_exc = exc
        self._queued = True
        self._loop._ready.append(self)
        return 0

    def _wakeup(self, fut):
        # An awaited asyncio future is done (its done-callback).
        try:
            fut.result()
        except BaseException as exc:
            self._step(exc)
        else:
            self._step(None)

    cdef int _step(self, object exc) except -1:
        cdef PyObject *res = NULL
        cdef int status
        cdef object loop = self._loop
        cdef Hist *hist = self._loop.hist_step
        cdef uint64_t t0 = 0
        if self._state != T_PENDING:
            raise _InvalidStateError(f"_step(): already done: {self!r}")
        if self._must_cancel:
            if not isinstance(exc, _CancelledError):
                exc = self._make_cancelled_error()
            self._must_cancel = False
        self._fut_waiter = None
        self.parked = None
        if _tasks_is_dict:
            if self._loop.current_left is not None:
                # An inline step before this one left itself current
                # (Loop.keep_as_current): take its place (already ours when
                # this task took that step too).
                left = self._loop.take_left_current()
                if RL_DEBUG and _current_tasks.get(loop) is not left:
                    raise AssertionError("current_left is not asyncio's current task")
                if left is not self:
                    PyDict_SetItem(_current_tasks, loop, self)
            elif PyDict_SetDefault(_current_tasks, loop, self) is not <PyObject*>self:
                raise RuntimeError(f"Cannot enter into task {self!r} while another "
                                   f"task {<object>PyDict_GetItem(_current_tasks, loop)!r} "
                                   f"is being executed.")
        else:
            _enter_task_fn(loop, self)
        global _stepping
        # (_stepping is process-wide: a task of another loop, i.e. of another
        # thread, may be mid-step when the GIL switches; that is no nesting.)
        if RL_DEBUG and _stepping is not None and _stepping._loop is loop:
            raise AssertionError(f"{self!r} steps inside {_stepping!r}'s step")
        _stepping = self
        if hist != NULL:
            t0 = rl_ticks()
        try:
            try:
                if exc is None:
                    status = PyIter_Send(self.coro, None, &res)
                    result = <object>res
                    Py_DECREF(result)       # <object> took its own reference
                    if status == 0:         # PYGEN_RETURN
                        self._returned(result)
                        return 0
                else:
                    result = self.coro.throw(exc)
            except StopIteration as e:
                self._returned(e.value)
                return 0
            except _CancelledError as e:
                self._cancelled_exc = e
                self._finish(T_CANCELLED, None, None)
                return 0
            except (KeyboardInterrupt, SystemExit) as e:
                self._finish(T_FINISHED, None, e)
                raise
            except BaseException as e:
                self._finish(T_FINISHED, None, e)
                return 0
            self._on_yield(result)
        finally:
            _stepping = None
            if hist != NULL:
                hist_add(hist, rl_ticks() - t0)
            if _tasks_is_dict:
                # An inline step stays current until the next inline step
                # replaces it or other code runs (Loop.current_left).
                if not self._loop.keep_as_current(self):
                    PyDict_DelItem(_current_tasks, loop)
            else:
                _leave_task_fn(loop, self)
        return 0

    cdef _returned(self, value):
        if self._must_cancel:
            # cancel() came while the coroutine ran to its end.
            self._must_cancel = False
            self._finish(T_CANCELLED, None, None)
        else:
            self._finish(T_FINISHED, value, None)

    cdef int _on_yield(self, object result) except -1:
        if result is _PARK:
            # A ringline wait parked us (parked is set); it resumes us.
            if self._must_cancel:
                self.parked = None
                self._schedule(None)
            return 0
        if result is None:
            # A bare yield (asyncio.sleep(0)): run again next round.
            return self._schedule(None)
        blocking = getattr(result, "_asyncio_future_blocking", None)
        if blocking is None:
            return self._schedule(RuntimeError(f"Task got bad yield: {result!r}"))
        if not blocking:
            return self._schedule(RuntimeError(
                f"yield was used instead of yield from in task {self!r} with {result!r}"))
        if result is self:
            return self._schedule(RuntimeError(f"Task cannot await on itself: {self!r}"))
        if _get_loop(result) is not self._loop:
            return self._schedule(RuntimeError(
                f"Task {self!r} got Future {result!r} attached to a different loop"))
        result._asyncio_future_blocking = False
        if self._wakeup_cb is None:
            self._wakeup_cb = self._wakeup      # a bound method: a cycle until _finish
        result.add_done_callback(self._wakeup_cb, context=self._context)
        self._fut_waiter = result
        if self._must_cancel:
            if result.cancel(msg=self._cancel_message):
                self._must_cancel = False
        return 0

    cdef int _finish(self, int state, object result, object exc) except -1:
        self._state = state
        self._result = result
        if exc is not None:
            self._exception = exc
            self._log_traceback = True
        # Let go of what points back at this task (the bound wake-up, an
        # exception for a step still queued): a finished task is freed by
        # reference counting alone.
        self._step_exc = None
        self._wakeup_cb = None
        cbs = self._callbacks
        self._callbacks = None
        if type(cbs) is tuple:
            self._loop.call_soon(cbs[0], self, context=cbs[1])
        elif cbs:
            for fn, ctx in cbs:
                self._loop.call_soon(fn, self, context=ctx)
        return 0

    # ---- the Future interface ----

    def _make_cancelled_error(self):
        if self._cancelled_exc is not None:
            exc = self._cancelled_exc
            self._cancelled_exc = None
            return exc
        if self._cancel_message is None:
            return _CancelledError()
        return _CancelledError(self._cancel_message)

    def cancel(self, msg=None):
        """Request cancellation, as asyncio.Task.cancel does."""
        if self._state != T_PENDING:
            return False
        self._num_cancels_requested += 1
        if self._fut_waiter is not None:
            if self._fut_waiter.cancel(msg=msg):
                return True
        self._must_cancel = True
        self._cancel_message = msg
        if self.parked is not None:
            # Parked on a connection: leave it (it drops its stale reference)
            # and step now, where CancelledError is thrown at the wait.
            self.resume(None)
        return True

    def cancelling(self):
        return self._num_cancels_requested

    def uncancel(self):
        if self._num_cancels_requested > 0:
            self._num_cancels_requested -= 1
            if self._num_cancels_requested == 0:
                self._must_cancel = False
        return self._num_cancels_requested

    def done(self):
        return self._state != T_PENDING

    def cancelled(self):
        return self._state == T_CANCELLED

    cdef int _retrieve(self, str not_ready) except -1:
        # What result() and exception() check first, as asyncio's do.
        if self._state == T_CANCELLED:
            raise self._make_cancelled_error()
        if self._state != T_FINISHED:
            raise _InvalidStateError(not_ready)
        self._log_traceback = False
        return 0

    def result(self):
        self._retrieve("Result is not ready.")
        if self._exception is not None:
            raise self._exception
        return self._result

    def exception(self):
        self._retrieve("Exception is not set.")
        return self._exception

    def add_done_callback(self, fn, *, context=None):
        if context is None:
            context = contextvars.copy_context()
        if self._state != T_PENDING:
            self._loop.call_soon(fn, self, context=context)
        elif self._callbacks is None:
            self._callbacks = (fn, context)     # the common single one: no list
        elif type(self._callbacks) is tuple:
            self._callbacks = [self._callbacks, (fn, context)]
        else:
            self._callbacks.append((fn, context))

    def _add_shared_done_callback(self, tuple pair not None):
        """``add_done_callback(pair[0], context=pair[1])``, keeping ``pair``
        itself as the record: a caller that adds one callback to many tasks
        (serve(), one task per connection) shares one tuple among them."""
        fn, context = pair
        if self._state == T_PENDING and self._callbacks is None:
            self._callbacks = pair
        else:
            self.add_done_callback(fn, context=context)

    def remove_done_callback(self, fn):
        if self._callbacks is None:
            return 0
        if type(self._callbacks) is tuple:
            self._callbacks = [self._callbacks]
        keep = [(f, c) for f, c in self._callbacks if f != fn]
        n = len(self._callbacks) - len(keep)
        self._callbacks[:] = keep
        return n

    def get_loop(self):
        return self._loop

    def get_coro(self):
        return self.coro

    @property
    def _coro(self):
        # asyncio.base_tasks (get_stack, print_stack) reads it.
        return self.coro

    def get_context(self):
        return self._context

    def get_name(self):
        if self._name is None:
            self._name = f"ringline-Task-{self._num}"
        return self._name

    def set_name(self, value):
        self._name = str(value)

    def get_stack(self, *, limit=None):
        return _base_tasks._task_get_stack(self, limit)

    def print_stack(self, *, limit=None, file=None):
        return _base_tasks._task_print_stack(self, limit, file)

    def __await__(self):
        if self._state == T_PENDING:
            self._asyncio_future_blocking = True
            yield self
        if self._state == T_PENDING:
            raise RuntimeError("await wasn't used with future")
        return self.result()

    def __iter__(self):
        return self.__await__()

    def __del__(self):
        # What asyncio's Task and Future report when collected.
        if self._loop is None:
            return
        if self._state == T_PENDING and self._log_destroy_pending:
            self._loop.call_exception_handler({
                "task": self,
                "message": "Task was destroyed but it is pending!",
            })
        elif self._state == T_FINISHED and self._log_traceback:
            self._loop.call_exception_handler({
                "message": "Task exception was never retrieved",
                "exception": self._exception,
                "future": self,
            })

    def __repr__(self):
        state = ("pending", "cancelled", "finished")[self._state]
        extra = ""
        if self._state == T_FINISHED:
            extra = (f" exception={self._exception!r}" if self._exception is not None
                     else f" result={self._result!r}")
        elif self.parked is not None:
            extra = " parked"
        return f"<ringline.Task {state} name={self.get_name()!r} coro={self.coro!r}{extra}>"
