# cython: language_level=3, boundscheck=False, wraparound=False
"""The portable Connection's per-message path, compiled.

:class:`Core` is the base of :class:`ringline.portable.connection.Connection`
when the extension is built but io_uring is refused (a container's seccomp
profile, ``kernel.io_uring_disabled``, ``backend="portable"``).  It holds the
state the per-message path touches as C fields and implements
``data_received``, ``recv`` and ``send_nowait`` with exactly the logic of
the pure-Python methods of the same names in ``connection.py`` (which the
pure install runs, and which stay the reference); everything off that path
calls back into them.

``recv`` returns a one-shot awaitable (``_Recv``, as the io_uring path does)
instead of a coroutine: no frame per call, and with the ``am_send`` slot its
result reaches the awaiting coroutine without a StopIteration.  A waiting
receive parks its Task on the connection's park future exactly as the pure
path does, and ``data_received`` resumes it at once through the Task's own
wake-up callback (see ``connection._resume``).

This module imports nothing from ringline's compiled packages (``_core``,
``_net``): the portable backend must not depend on io_uring code.
"""
import asyncio

cimport cython
from cpython.bytearray cimport PyByteArray_CheckExact, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_CheckExact, PyBytes_GET_SIZE
from cpython.contextvars cimport PyContext_Enter, PyContext_Exit
from cpython.object cimport PyObject_Call
from cpython.ref cimport PyObject, Py_INCREF


cdef extern from "Python.h":
    Py_ssize_t _refcnt "Py_REFCNT"(PyObject *o)
    ctypedef struct _pl_async "PyAsyncMethods":
        void *am_send
    ctypedef struct _pl_type "PyTypeObject":
        _pl_async *tp_as_async


cdef object _get_running_loop = asyncio._get_running_loop
cdef object _Future = asyncio.Future

# connection._OPEN, _CLOSING, _CLOSED
cdef enum:
    S_OPEN = 0
    S_CLOSED = 2


cdef inline Py_ssize_t _size(object b) except -1:
    # len() without the call for what the buffers are (bytes, bytearray).
    if PyBytes_CheckExact(b):
        return PyBytes_GET_SIZE(b)
    if PyByteArray_CheckExact(b):
        return PyByteArray_GET_SIZE(b)
    return len(b)


cdef extern from "pythread.h":
    unsigned long _thread_ident "PyThread_get_thread_ident"() nogil


cdef int _check_thread(Core c, str what) except -1:
    # connection._check_thread, the message made there.  The full check
    # costs a getpid() system call on 3.11 (asyncio's running-loop lookup),
    # so it runs only when the calling thread is not the one the loop last
    # ran this connection's callbacks in (``_tid``: set from the transport's
    # callbacks, which run in the loop's thread) -- the only case it could
    # fail, unless the loop was since moved to another thread and has
    # delivered nothing to this connection there yet.
    if _thread_ident() == c._tid:
        return 0
    loop = c._loop
    if _get_running_loop() is not loop and loop.is_running():
        from ringline.portable.connection import _check_thread as check
        check(loop, what)
    return 0


cdef object _FutureType = asyncio.Future


# The C Future's ``_asyncio_future_blocking`` and ``_callbacks`` are
# get/set descriptors: called through their C functions on an exact
# asyncio.Future, without the attribute lookup (per message).
cdef extern from "Python.h":
    ctypedef PyObject *(*_gs_get)(PyObject *, void *)
    ctypedef int (*_gs_set)(PyObject *, PyObject *, void *)
    ctypedef struct _GetSetDef "PyGetSetDef":
        _gs_get get
        _gs_set set
        void *closure
    ctypedef struct _GetSetDescr "PyGetSetDescrObject":
        _GetSetDef *d_getset
    PyObject *_Py_True "Py_True"
    PyObject *_Py_None "Py_None"
    void _decref "Py_DECREF"(PyObject *o)


cdef _GetSetDef *_gs(str name):
    d = _FutureType.__dict__.get(name)
    if type(d) is not type(type.__dict__["__doc__"]):      # not a getset descriptor
        return NULL
    return (<_GetSetDescr*><PyObject*>d).d_getset


cdef _GetSetDef *_blocking_gs = _gs("_asyncio_future_blocking")
cdef _GetSetDef *_callbacks_gs = _gs("_callbacks")


cdef inline int _set_blocking(object w) except -1:
    """``w._asyncio_future_blocking = True`` (what a Future's __await__ does)."""
    if _blocking_gs is not NULL and _blocking_gs.set is not NULL and type(w) is _FutureType:
        return _blocking_gs.set(<PyObject*>w, _Py_True, _blocking_gs.closure)
    w._asyncio_future_blocking = True
    return 0


cdef inline int _no_callbacks(object w) except -1:
    """``w._callbacks is None``."""
    cdef PyObject *r
    if _callbacks_gs is not NULL and _callbacks_gs.get is not NULL and type(w) is _FutureType:
        r = _callbacks_gs.get(<PyObject*>w, _callbacks_gs.closure)
        if r is NULL:
            return -1
        _decref(r)         # (None stays alive: only the identity is compared)
        return r == _Py_None
    return w._callbacks is None
cdef object _Future_remove_done_callback = asyncio.Future.remove_done_callback


cdef bint _call_in(object ctx, object cb, object arg) except -1:
    """``ctx.run(cb, arg)``, without the method call; False when it could not
    start: the context already entered, or a Task already running (its
    step refused before it began) -- connection._resume's RuntimeError."""
    try:
        PyContext_Enter(ctx)
    except RuntimeError:
        return False
    try:
        cb(arg)
    except RuntimeError:
        return False
    finally:
        PyContext_Exit(ctx)
    return True


cdef class Core:
    """Compiled base of the portable Connection: the per-message state and
    methods (see the module docstring).  Not used on its own."""

    cdef public object _loop
    cdef object _t                      # the transport (property _transport)
    cdef object _write                  # its bound write, or None
    cdef public object _head            # bytes or None (not None only while _acc is empty)
    cdef public object _acc             # bytearray
    cdef object _w                      # the waiting receive's park (property _waiter)
    cdef object _clean                  # the park, when known pending without callbacks
    cdef object _wcb                    # the last waiting Task's wake-up callback
    cdef object _wctx                   # and its context (see data_received)
    cdef public object _done
    cdef public object _park
    cdef public object _park_aw
    cdef public object _error
    cdef unsigned long _tid             # the loop's thread, as last seen (_check_thread)
    cdef public Py_ssize_t _limit
    cdef public int _state
    cdef public bint _paused_reading
    cdef public bint _eof
    cdef public bint _send_failed
    cdef public bint _shut_requested
    cdef _Recv _spare                   # a finished receive, reused when free
    cdef dict _fut_kwargs

    @property
    def _transport(self):
        return self._t

    @_transport.setter
    def _transport(self, t):
        # The bound write is taken once per transport (connection_made) and
        # dropped with it (connection_lost).
        self._t = t
        self._write = None if t is None else t.write
        if t is not None:
            self._tid = _thread_ident()     # connection_made: the loop's thread

    @property
    def _waiter(self):
        return self._w

    @_waiter.setter
    def _waiter(self, w):
        # Set from connection.py: a park handed out there is no longer known clean.
        self._w = w
        if w is not None:
            self._clean = None

    # ---- asyncio protocol side ----

    @cython.binding(False)
    def data_received(self, data):
        cdef object w, cbs, cb, ctx
        self._tid = _thread_ident()         # the loop's thread (see _check_thread)
        if self._head is None and not _size(self._acc):
            # The common case first: nothing buffered.
            self._head = data
            if _size(data) >= self._limit and not self._paused_reading:
                self._paused_reading = True
                self._t.pause_reading()
            w = self._w
            if w is not None:
                self._w = None
                # connection._resume(w, self._done, True, self._loop).  The
                # Task's callback is found without _callbacks (a new list
                # per call) when the Task that waited last time waits again:
                # its wake-up callbacks compare equal (same task, same
                # function), so removing the one kept removes the new one,
                # and it may be called in its place (context: the Task's).
                cb = self._wcb
                if (cb is not None and type(w) is _FutureType
                        and _Future_remove_done_callback(w, cb) == 1):
                    ctx = self._wctx
                else:
                    cbs = w._callbacks
                    if not cbs:
                        if not w.done():
                            w.set_result(None)
                        return
                    cb, ctx = (<list>cbs)[0]
                    w.remove_done_callback(cb)
                    self._wcb = cb
                    self._wctx = ctx
                if _no_callbacks(w):
                    self._clean = w         # pending, and now without callbacks
                if _call_in(ctx, cb, self._done):
                    return
                self._clean = None
                w.set_result(None)
                self._loop.call_soon(cb, self._done, context=ctx)
            return
        if self._state == S_CLOSED:
            return
        if self._head is not None:
            self._acc = bytearray(self._head)   # a kept view pins the old one
            self._head = None
        self._append(data)
        if not self._paused_reading and len(self._acc) >= self._limit:
            self._paused_reading = True
            self._t.pause_reading()
        self._wake(True)

    # ---- receiving ----

    @cython.binding(False)
    def recv(self, Py_ssize_t max_bytes=65536):
        """Return up to ``max_bytes`` received bytes (waiting for at least one);
        ``b""`` at end of stream; the stream's error if it ended with one.
        Returns an awaitable (not a coroutine); nothing happens until it is
        awaited."""
        cdef _Recv r
        _check_thread(self, "Connection.recv")
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        if self._spare is not None and _refcnt(<PyObject*>self._spare) == 1:
            r = self._spare         # nothing else holds it: the await that ended dropped it
            r.finished = False
        else:
            r = _Recv.__new__(_Recv)
        r.conn = self
        r.n = max_bytes
        return r

    cdef object _recv_step(self, Py_ssize_t n, bint *done):
        """connection._recv, one pass: the result (``done`` set) or the park
        future to yield."""
        cdef Py_ssize_t avail
        h = self._head
        if h is not None:
            done[0] = True
            avail = _size(h)
            if n >= avail and not self._paused_reading:
                self._head = None       # hand over what arrived, no copy
                return h
            return self._take(n if n < avail else avail)
        avail = _size(self._acc)
        if avail:
            done[0] = True
            return self._take(n if n < avail else avail)
        if self._eof or self._state != S_OPEN:
            done[0] = True
            if self._error is not None:
                raise self._error
            return b""
        w = self._w
        if w is not None and not w.done():
            raise RuntimeError("another coroutine is already waiting for data on this "
                               "connection")
        w = self._park
        if w is self._clean:
            self._clean = None      # handed out below
        elif w.done() or w._callbacks:
            if self._fut_kwargs is None:
                self._fut_kwargs = {"loop": self._loop}
            w = self._park = PyObject_Call(_Future, (), self._fut_kwargs)
            self._park_aw = type(self._park_aw)((w,))   # connection._Await
        self._w = w
        _set_blocking(w)
        return w

    # ---- sending ----

    @cython.binding(False)
    def send_nowait(self, data):
        """Queue ``data`` behind earlier sends and return at once; raises
        ConnectionClosed after close(), abort(), shutdown_write() or a send error."""
        _check_thread(self, "Connection.send_nowait")
        if self._state or self._send_failed or self._shut_requested:
            self._check_writable()
        if not PyBytes_CheckExact(data):
            data = self._payload(data)
        if PyBytes_GET_SIZE(data):
            self._write(data)


@cython.final
cdef class _Recv:
    """What the compiled ``recv`` returns: awaited once, like the coroutine
    of the pure path (and registered as a Coroutine, so that a Task can run
    it directly); each step is one pass of ``connection._recv``.  Bytes are
    consumed only in a step, i.e. by a resumed awaiter, so a cancelled
    receive loses nothing."""
    cdef Core conn              # None once finished
    cdef Py_ssize_t n
    cdef bint finished

    def __init__(self, *a, **k):
        raise TypeError("made by Connection.recv")

    def __await__(self):
        return self

    def __iter__(self):
        return self

    cdef object step(self, bint *done):
        cdef Core c = self.conn
        if c is None:
            raise RuntimeError("cannot reuse an already awaited receive")
        try:
            r = c._recv_step(self.n, done)
        except BaseException:
            self._finish(c)
            raise
        if done[0]:
            self._finish(c)
        return r

    cdef inline void _finish(self, Core c):
        self.conn = None
        self.finished = True
        c._spare = self             # the next recv may reuse it

    def __next__(self):
        cdef bint done = False
        r = self.step(&done)
        if done:
            raise StopIteration(r)
        return r

    def send(self, value):
        return self.__next__()

    def throw(self, typ, val=None, tb=None):
        """An exception thrown in while waiting (a cancel): the receive ends
        with it, consuming nothing, as the pure path's coroutine does."""
        if self.conn is not None:
            self._finish(self.conn)
        if val is None:
            val = typ() if isinstance(typ, type) else typ
        if tb is not None:
            val = val.with_traceback(tb)
        raise val

    def close(self):
        if self.conn is not None:
            self._finish(self.conn)

    def __repr__(self):
        return "<ringline.portable receive>"


cdef int _recv_am_send(object self, object arg, PyObject **presult) except -1:
    # The am_send slot (PyIter_Send: 3.11's SEND opcode, asyncio's Task):
    # the result goes back directly, not through a StopIteration.  Returns
    # PYGEN_RETURN (0) or PYGEN_NEXT (1); PYGEN_ERROR via ``except -1``.
    cdef bint done = False
    presult[0] = NULL
    r = (<_Recv>self).step(&done)
    Py_INCREF(r)
    presult[0] = <PyObject*>r
    return 0 if done else 1


if (<_pl_type*>_Recv).tp_as_async != NULL:
    (<_pl_type*>_Recv).tp_as_async.am_send = <void*>_recv_am_send

# A coroutine to asyncio (send, throw, close): asyncio.create_task(conn.recv())
# works as with the pure path's coroutine.
__import__("collections.abc").abc.Coroutine.register(_Recv)
