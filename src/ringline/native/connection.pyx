# cython: language_level=3, boundscheck=False, wraparound=False
"""The native face: ``Connection``, one per accepted or outbound socket.

Received bytes are copied once, from the provided buffer into the
connection's accumulator (a bytearray), and the buffer goes straight back to
the kernel.  When a ``recv`` is already waiting and nothing is buffered, that
one copy builds the ``bytes`` it will return instead (``head``), so the
common request/response path never touches the accumulator.  When that
first buffer came full (more is likely on its way) ``head`` is allocated at
the size the recv asked for and later buffers are appended to it in place
until it is taken or full; it is shrunk to its length before anyone sees it.
``with_data(parse)`` hands ``parse`` a memoryview of everything buffered.  A view kept past the call never sees reused memory: the view is
released after ``parse`` returns, and if the caller still holds a slice of it
the accumulator is replaced by a copy, leaving the old bytes untouched.
"""
import asyncio
import socket as _socket

cimport cython
from cpython.bytearray cimport (PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize,
                                PyByteArray_FromStringAndSize)
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.object cimport PyObject_Call
from cpython.ref cimport PyObject, Py_INCREF
from libc.string cimport memcpy

from ringline._core.abi.uring cimport RL_DEBUG
from ringline._core.cpy cimport bytes_resize_stolen
from ringline._core.loop cimport Loop
from ringline.native.task cimport Task, current_native
from ringline.native.tls cimport TLSLayer
from ringline.native.task import PARK
from ringline._net.sockops cimport addresses_are_local, peer_is_local
from ringline._net.stream cimport Stream, stream_init, S_OPEN, S_CLOSED
from ringline._net.buffers cimport bytes_set_length, big_bytes, BIG_MIN, BIG_CAP
from ringline._net.chain cimport queue_chain
from ringline.errors import ConnectionClosed, ReceiveLimitExceeded


cdef extern from "Python.h":
    Py_ssize_t _refcnt "Py_REFCNT"(PyObject *o)      # on a borrowed pointer: no temp reference
    ctypedef struct _rl_async "PyAsyncMethods":
        void *am_send
    ctypedef struct _rl_type "PyTypeObject":
        _rl_async *tp_as_async


cdef object _IncompleteReadError = asyncio.IncompleteReadError
cdef object _InvalidStateError = asyncio.InvalidStateError
cdef object _Future = asyncio.Future
cdef object _shield = asyncio.shield


cdef enum:
    K_RECV = 0      # recv(max_bytes)
    K_EXACT = 1     # recv_exactly(n)
    K_PARSE = 2     # with_data(parse)

# Most a recv's head is over-allocated by (it is shrunk when taken).
cdef Py_ssize_t HEAD_ROOM_MAX = 256 * 1024
# A received piece at least this big suggests more of the message follows
# (with incremental buffers a piece can end early at a buffer's end).
cdef Py_ssize_t LARGE_PIECE = 16384

# The accumulator of every connection with nothing buffered: shared, never
# resized (on_data swaps in a fresh one first), so an idle connection holds
# no bytearray of its own.
cdef bytearray _NO_BYTES = bytearray()

# _Receive.step's "not yet": the caller waits (see Connection._wait).
cdef object _PENDING = object()
cdef object _PARK = PARK


cdef class _OneShot:
    """Base of what ``recv``, ``recv_exactly``, ``with_data`` and ``drain``
    return: an awaitable that behaves like the coroutine it replaces, at a
    fraction of the cost.  Nothing happens until it is awaited; each
    ``step`` either finishes (StopIteration carrying the result, or the
    result straight from ``am_send``) or yields what its Task waits on.  No
    ``throw`` method: a cancel is raised right at the ``await``.  Awaited
    once; a finished one is recycled by its connection when nothing else
    holds it (see ``_receive``, ``Connection.drain``)."""
    cdef object conn            # Connection (defined below); None once finished
    cdef bint finished

    def __init__(self, *a, **k):
        raise TypeError("made by Connection.recv/recv_exactly/with_data/drain")

    def __await__(self):
        return self

    def __iter__(self):
        return self

    cdef object try_complete(self, bint *done):
        """Advance: the result (``done`` set), or what to wait on."""
        raise NotImplementedError

    def __next__(self):
        cdef bint done = False
        r = self.try_complete(&done)
        if done:
            raise StopIteration(r)
        return r

    def send(self, value):
        return self.__next__()


cdef int _one_shot_am_send(object self, object arg, PyObject **presult) except -1:
    # The am_send slot (PyIter_Send): hands the result back directly instead
    # of through a StopIteration, for awaiters that use it (3.11's SEND
    # opcode, asyncio's Task).  Returns PYGEN_RETURN (0), PYGEN_NEXT (1) or,
    # via ``except -1``, PYGEN_ERROR.
    cdef bint done = False
    presult[0] = NULL
    r = (<_OneShot>self).try_complete(&done)
    Py_INCREF(r)
    presult[0] = <PyObject*>r
    return 0 if done else 1


@cython.final
cdef class _Receive(_OneShot):
    """What ``recv``, ``recv_exactly`` and ``with_data`` return.  Each step
    looks at the buffered bytes (see Connection._wait for the waiting).
    Bytes are consumed only in a step, i.e. by a resumed awaiter, so a
    cancelled receive loses nothing."""
    cdef object parse
    cdef Py_ssize_t n
    cdef int kind

    cdef object try_complete(self, bint *done):
        cdef Connection c
        if self.finished:
            raise RuntimeError("cannot reuse an already awaited receive")
        c = <Connection>self.conn
        self.finished = True        # also when _step raises, like a coroutine
        r = c._step(self.kind, self.n, self.parse)
        if r is _PENDING:
            self.finished = False
            return c._wait(self.kind, self.n)
        self.conn = None
        self.parse = None
        done[0] = True
        if c.spare is not self:
            c.spare = self          # the next receive may reuse it (_receive)
        return r

    def __repr__(self):
        return f"<ringline receive {('recv', 'recv_exactly', 'with_data')[self.kind]}>"


@cython.final
cdef class _Drain(_OneShot):
    """What ``Connection.drain`` returns: looks at the send queue when
    awaited (not when made).  With room in the queue it finishes in its
    first step, without a coroutine frame (the common case: about a third
    of the cost).  Else it waits on the connection's shared drain future
    through ``asyncio.shield``, so one cancelled drainer does not cancel the
    others."""
    cdef object fut             # the shielded wait, while waiting

    cdef object try_complete(self, bint *done):
        cdef Connection c
        if self.finished:
            raise RuntimeError("cannot reuse an already awaited drain")
        c = <Connection>self.conn
        if self.fut is None:
            if not c.send_failed_error_pending() and c.must_drain():
                if c.drain_waiter is None or c.drain_waiter.done():
                    c.drain_waiter = c.loop.create_future()
                fut = _shield(c.drain_waiter)
                fut._asyncio_future_blocking = True      # as a Future's __await__ does
                self.fut = fut
                return fut
        elif not self.fut.done():
            raise RuntimeError("await wasn't used with future")
        # Nothing to wait for, an error to raise, or the wait is over.
        self.finished = True
        self.conn = None
        self.fut = None
        if c.spare_drain is not self:
            c.spare_drain = self    # the next drain() may reuse it
        if c.send_failed_error_pending():
            raise _fresh(c.error)
        done[0] = True
        return None

    def __repr__(self):
        return "<ringline drain>"


for _t in (_OneShot, _Receive, _Drain):
    if (<_rl_type*>_t).tp_as_async != NULL:
        (<_rl_type*>_t).tp_as_async.am_send = <void*>_one_shot_am_send
del _t


cdef _Receive _receive(Connection c, int kind, Py_ssize_t n, object parse):
    """A receive for ``c``: its last finished one when nothing else holds
    it (the awaiting frame dropped it when the await ended), else a new one.
    Saves an allocation and a GC track/untrack per wait."""
    cdef _Receive r
    if c.spare is not None and _refcnt(<PyObject*>c.spare) == 1:
        r = c.spare
    else:
        r = _Receive.__new__(_Receive)
    r.conn = c
    r.kind = kind
    r.n = n
    r.parse = parse
    r.finished = False
    return r


@cython.final
cdef class Connection(Stream):
    """A TCP connection on the ring (see the module docstring).

    Observable states: open -> closing (close() called: queued sends drain,
    then the receive is cancelled) -> closed (fd closed).  ``abort()`` skips
    the drain.

    Received bytes not yet consumed are ``head[:head_len]`` followed by
    ``acc``.  Invariants: ``head`` is None (then head_len == head_cap == 0)
    or holds 0 < head_len <= head_cap bytes, head_cap being its allocated
    size; bytes are appended to ``head`` only while ``acc`` is empty.
    ``head`` is private: no reference to it leaves this object before
    ``_seal`` has shrunk it to head_len (a bytes object is then immutable).
    """
    cdef bytes head             # bytes copied out for a waiting recv, before acc
    cdef Py_ssize_t head_len
    cdef Py_ssize_t head_cap
    cdef bytearray acc
    cdef object waiter          # future woken by data, EOF, error or close
    cdef Task waiter_task       # a ringline Task parked here (see _wait), or stale
    cdef Py_ssize_t want        # >0: a waiting recv takes up to this many bytes
                                # straight from the next CQE (into head)
    cdef bint want_exact        # ... and only if the CQE holds all of them
    cdef object drain_waiter
    cdef object closed_fut
    cdef readonly bint is_outbound
    cdef int peer_port          # >0: _peer is an IPv4 peer's host, this its port (_store_peer)
    cdef object _peer
    cdef object _local
    cdef int family
    cdef bint throttled         # receive paused by backpressure
    cdef Py_ssize_t large_piece  # see LARGE_PIECE
    cdef _Receive spare         # a finished receive, reused when free (_receive)
    cdef _Drain spare_drain     # likewise for drain()
    cdef TLSLayer tls           # TLS over this stream (native/tls.pyx), or None
    cdef bytes plain_fresh      # plain_room's new head, until plain_done
    cdef Py_ssize_t plain_acc_old   # plain_room grew acc from this size (-1: did not)

    def __init__(self, *a, **k):
        raise TypeError("connections come from ringline.serve() or ringline.connect()")

    cdef inline Py_ssize_t _avail(self) noexcept:
        return PyByteArray_GET_SIZE(self.acc) + self.head_len

    cdef _seal(self):
        """Shrink an over-allocated head to its length (before it is shared)."""
        cdef PyObject *raw
        if RL_DEBUG and not 0 <= self.head_len <= self.head_cap:
            # Invariant: head holds head_len received bytes in head_cap room.
            raise AssertionError(f"head_len {self.head_len} > head_cap {self.head_cap}")
        if self.head_cap != self.head_len and _refcnt(<PyObject*>self.head) != 1:
            # A provided buffer handed out whole, which its ring's spare pool
            # also holds (BufRing.steal), or a pooled big_bytes head: cut in
            # place, the pool regrows it.
            bytes_set_length(self.head, self.head_len)
            self.head_cap = self.head_len
        elif self.head_cap != self.head_len:
            raw = <PyObject*>self.head
            Py_INCREF(self.head)
            self.head = None
            try:
                self.head = bytes_resize_stolen(raw, self.head_len)
            except BaseException:
                self.head_len = self.head_cap = 0
                raise
            self.head_cap = self.head_len

    cdef _set_head(self, bytes h):
        self.head = h
        self.head_len = self.head_cap = 0 if h is None else PyBytes_GET_SIZE(h)

    # ---- hooks from Stream ----

    cdef int on_data(self, const char *p, Py_ssize_t n) except -1:
        if self.tls is not None:
            return self.tls.feed(p, n)      # ciphertext: plaintext comes to on_plain
        return self.on_plain(p, n)

    cdef int on_plain(self, const char *p, Py_ssize_t n) except -1:
        cdef Py_ssize_t old, k, cap
        if self.state != S_OPEN:
            return 0        # close()/abort() dropped what was buffered: drop this too
        if PyByteArray_GET_SIZE(self.acc) == 0:
            if self.head is not None:
                # An open head (its recv has not taken it yet): fill it in place.
                k = self.head_cap - self.head_len
                if k > n:
                    k = n
                memcpy(PyBytes_AS_STRING(self.head) + self.head_len, p, k)
                self.head_len += k
                p += k
                n -= k
            elif self.want > 0:
                # A receive is waiting on an empty buffer: build its result
                # from the provided buffer (one copy) rather than copying into
                # acc and out again.  Room for all it asked for when more is
                # likely to follow (a bulk piece: a full buffer or, with
                # incremental buffers, at least LARGE_PIECE; recv_exactly).
                cap = self.want
                if not self.want_exact:
                    if n >= cap or n < self.large_piece:
                        cap = n if n < cap else cap
                    elif cap > HEAD_ROOM_MAX:
                        # recv(huge) on a busy stream: room for a bounded
                        # burst, the rest goes to acc.
                        cap = HEAD_ROOM_MAX if HEAD_ROOM_MAX > n else n
                if cap <= self.ctx.recv_limit:
                    k = cap if cap < n else n
                    if k == n:
                        # All of it: possibly the provided buffer itself.
                        self.head = self.take_bytes(p, n, cap)
                    else:
                        if BIG_MIN <= cap <= BIG_CAP:
                            self.head = big_bytes(cap)      # see _seal
                        else:
                            self.head = PyBytes_FromStringAndSize(NULL, cap)
                        memcpy(PyBytes_AS_STRING(self.head), p, k)
                    self.head_len = k
                    self.head_cap = cap
                    self.want = 0
                    p += k
                    n -= k
        if n:
            old = self._acc_grow(n)
            memcpy(PyByteArray_AS_STRING(self.acc) + old, p, n)
        if self.want_read and self._avail() >= self.ctx.recv_limit:
            # Receive backpressure: stop taking bytes off the socket so TCP
            # flow control reaches the peer; reading resumes once the handler
            # consumes (see _consumed).  Bytes already in flight still land.
            self.throttled = True
            self.stop_reading()
        self._wake(None)
        return 0

    cdef Py_ssize_t _acc_grow(self, Py_ssize_t n) except -1:
        """Make ``n`` more bytes at the end of acc; returns where they start."""
        cdef Py_ssize_t old
        if self.acc is _NO_BYTES:
            self.acc = bytearray()      # never grow the shared empty one
        old = PyByteArray_GET_SIZE(self.acc)
        try:
            PyByteArray_Resize(self.acc, old + n)
        except BufferError:
            # A view from an earlier parse is still held: leave its bytes be.
            self.acc = bytearray(self.acc)
            PyByteArray_Resize(self.acc, old + n)
        return old

    cdef Py_ssize_t plain_room(self, Py_ssize_t n, char **out) except -1:
        """TLS: where the next plaintext (about ``n`` bytes, at least a
        record's worth) can be decrypted straight to, as on_plain would
        place it: the open head's free room, a new head for a waiting
        receive, or the end of acc.  Returns the room (0: use on_plain);
        plain_done follows with the count written."""
        cdef Py_ssize_t old, cap
        if self.state != S_OPEN:
            return 0
        if PyByteArray_GET_SIZE(self.acc) == 0:
            if self.head is not None:
                if self.head_cap > self.head_len:
                    out[0] = PyBytes_AS_STRING(self.head) + self.head_len
                    return self.head_cap - self.head_len
            elif self.want > 0:
                cap = self.want
                if not self.want_exact and cap > HEAD_ROOM_MAX:
                    cap = HEAD_ROOM_MAX if HEAD_ROOM_MAX > n else n
                if cap < n or cap > self.ctx.recv_limit:
                    return 0        # on_plain sizes it from what arrived
                if BIG_MIN <= cap <= BIG_CAP:
                    self.plain_fresh = big_bytes(cap)   # see _seal
                else:
                    self.plain_fresh = PyBytes_FromStringAndSize(NULL, cap)
                out[0] = PyBytes_AS_STRING(self.plain_fresh)
                return cap
        old = self._acc_grow(n)
        self.plain_acc_old = old
        out[0] = PyByteArray_AS_STRING(self.acc) + old
        return n

    cdef int plain_done(self, Py_ssize_t k) except -1:
        """``k`` bytes were decrypted where plain_room said (0: none)."""
        cdef bytes fresh = self.plain_fresh
        cdef Py_ssize_t old = self.plain_acc_old
        self.plain_fresh = None
        self.plain_acc_old = -1
        if old >= 0:
            PyByteArray_Resize(self.acc, old + k)
        elif fresh is not None:
            if k == 0:
                return 0
            self.head = fresh
            self.head_len = k
            self.head_cap = PyBytes_GET_SIZE(fresh)
            self.want = 0
        elif k == 0:
            return 0
        else:
            self.head_len += k
        if k == 0:
            return 0
        if self.want_read and self._avail() >= self.ctx.recv_limit:
            self.throttled = True       # as on_plain: receive backpressure
            self.stop_reading()
        self._wake(None)
        return 0

    cdef _consumed(self):
        """After the handler consumed bytes: lift receive backpressure."""
        if self.throttled and self._avail() < self.ctx.recv_limit // 2:
            self.throttled = False
            self.start_reading()

    cdef _limit_exceeded(self):
        """The handler needs more bytes than the limit lets it buffer."""
        exc = ReceiveLimitExceeded(self.ctx.recv_limit)
        self.error = exc
        self.abort_stream(exc)
        raise _fresh(exc)

    cdef _consume(self, Py_ssize_t n):
        """Drop ``n`` bytes from the front of acc (head must be None)."""
        if n == PyByteArray_GET_SIZE(self.acc):
            # Everything: a fresh empty accumulator costs less than a slice
            # deletion, and a view an earlier parse kept keeps the old one.
            self.acc = _NO_BYTES
        else:
            try:
                del self.acc[:n]
            except BufferError:
                # A slice of an earlier view still pins the old buffer: leave
                # it untouched and carry on with a copy of the rest.
                self.acc = self.acc[n:]
        self._consumed()

    cdef bytes _take(self, Py_ssize_t n):
        """Remove and return the first ``n`` buffered bytes (n <= _avail())."""
        cdef bytes h
        cdef bytes out
        cdef Py_ssize_t hl
        if self.head is None:
            out = PyBytes_FromStringAndSize(PyByteArray_AS_STRING(self.acc), n)
            self._consume(n)
            return out
        self._seal()            # before any other reference to head exists
        h = self.head
        hl = self.head_len
        if n == hl:
            self._set_head(None)
            self._consumed()
            return h
        if n < hl:
            self._set_head(h[n:])
            self._consumed()
            return h[:n]
        # More arrived after head was made: one result from both.
        out = PyBytes_FromStringAndSize(NULL, n)
        memcpy(PyBytes_AS_STRING(out), PyBytes_AS_STRING(h), hl)
        memcpy(PyBytes_AS_STRING(out) + hl, PyByteArray_AS_STRING(self.acc), n - hl)
        self._set_head(None)
        self._consume(n - hl)
        return out

    cdef _fold(self):
        """Put head back in front of acc, for with_data's single view."""
        cdef bytes h = self.head       # read in place: no seal needed
        cdef Py_ssize_t hl = self.head_len
        cdef Py_ssize_t al = PyByteArray_GET_SIZE(self.acc)
        cdef bytearray merged = PyByteArray_FromStringAndSize(NULL, hl + al)
        memcpy(PyByteArray_AS_STRING(merged), PyBytes_AS_STRING(h), hl)
        memcpy(PyByteArray_AS_STRING(merged) + hl, PyByteArray_AS_STRING(self.acc), al)
        self.acc = merged       # the old one may still be viewed: never mutated
        self._set_head(None)

    cdef int on_eof(self) except -1:
        if self.tls is not None:
            self.tls.on_end(None)
        self._wake(None)
        return 0

    cdef int on_error(self, object exc) except -1:
        if self.tls is not None:
            self.tls.on_end(exc)
        self._wake(exc)
        self.abort_stream(exc)
        return 0

    cdef int on_closed(self) except -1:
        if self.tls is not None:
            self.tls.on_closed()
        self._wake(None)
        if self.drain_waiter is not None and not self.drain_waiter.done():
            self.drain_waiter.set_result(None)
        if self.closed_fut is not None and not self.closed_fut.done():
            self.closed_fut.set_result(None)
        return 0

    cdef int on_writable(self) except -1:
        if (self.drain_waiter is not None and not self.drain_waiter.done()
                and self.queued_bytes <= self.ctx.low_water):
            self.drain_waiter.set_result(None)
        return 0

    cdef _wake(self, exc):
        cdef Task t = self.waiter_task
        if exc is not None:
            exc = _fresh(exc)
        if t is not None:
            self.waiter_task = None
            self.want = 0
            if t.parked is self:    # else: cancelled meanwhile, a stale reference
                t.resume(exc)
        w = self.waiter
        if w is not None:
            self.waiter = None
            self.want = 0
            # Only we resolve it, so "done" here means cancelled: let the
            # rare InvalidStateError say so instead of asking every time.
            try:
                if exc is None:
                    w.set_result(None)
                else:
                    w.set_exception(exc)
            except _InvalidStateError:
                pass

    cdef object _wait(self, int kind, Py_ssize_t n):
        """Park a receive until _wake: what the awaiting task waits on.

        A ringline Task (a serve() handler) is parked here directly and PARK
        is yielded to it: no Future, no done-callback, no Handle.  Any other
        awaiter (an asyncio.Task) gets a Future."""
        cdef Task t
        if ((self.waiter is not None and not self.waiter.done())
                or (self.waiter_task is not None and self.waiter_task.parked is self)):
            raise RuntimeError("another coroutine is already waiting for data on this connection")
        if kind == K_PARSE:
            self.want = 0
        else:
            self.want = n
            self.want_exact = kind == K_EXACT
        t = current_native(self.loop)
        if t is not None:
            t.parked = self
            self.waiter_task = t
            return _PARK
        # ``loop=`` from a dict kept for the purpose: no kwargs dict built per
        # call.  (Not ``_Future()``: on 3.11 finding the running loop costs a
        # getpid() system call.)
        fut = PyObject_Call(_Future, (), self.ctx.future_kwargs)
        # What a Future's own __await__ sets before yielding it to the Task.
        fut._asyncio_future_blocking = True
        self.waiter = fut
        return fut

    cdef bint _finished_reading(self):
        return self.eof or self.state != S_OPEN

    # ---- receiving ----

    cdef object _step(self, int kind, Py_ssize_t n, object parse):
        """One attempt of a receive: its result, or _PENDING to wait."""
        cdef Py_ssize_t avail
        if kind == K_RECV:
            avail = self._avail()
            if avail:
                return self._take(avail if avail < n else n)
            if self._finished_reading():
                if self.error is not None:
                    raise _fresh(self.error)
                return b""
            return _PENDING
        if kind == K_EXACT:
            avail = self._avail()
            if avail >= n:
                return self._take(n)
            if avail >= self.ctx.recv_limit:
                self._limit_exceeded()
            if self._finished_reading():
                if self.error is not None:
                    raise _fresh(self.error)
                partial = self._take(avail)
                raise _IncompleteReadError(partial, n)
            return _PENDING
        return self._step_parse(parse)

    cdef object _step_parse(self, parse):
        cdef Py_ssize_t n
        if self.head is not None:
            self._fold()
        if not PyByteArray_GET_SIZE(self.acc) and not self._finished_reading():
            return _PENDING
        acc = self.acc
        view = memoryview(acc)
        try:
            res = parse(view)
        finally:
            try:
                view.release()
            except BufferError:
                # The caller kept a slice: never mutate those bytes.
                self.acc = bytearray(acc)
        n = 0 if res is None else res
        if n < 0 or n > PyByteArray_GET_SIZE(self.acc):
            raise ValueError(f"parse consumed {n} of {PyByteArray_GET_SIZE(self.acc)} bytes")
        if n:
            self._consume(n)
            return n
        if self._finished_reading():
            if self.error is not None and not PyByteArray_GET_SIZE(self.acc):
                raise _fresh(self.error)
            return 0
        if PyByteArray_GET_SIZE(self.acc) >= self.ctx.recv_limit:
            self._limit_exceeded()
        return _PENDING

    @cython.binding(False)
    def with_data(self, parse):
        """Call ``parse(view)`` on everything buffered until it consumes bytes.

        ``parse`` returns how many bytes it consumed (0 or None: needs more).
        Resolves with that count; at end of stream ``parse`` gets an empty
        view and 0 is returned unless it consumes something.  Returns an
        awaitable (not a coroutine); the work happens when it is awaited.
        """
        self.loop.check_thread("Connection.with_data")
        if not callable(parse):
            raise TypeError(f"with_data() needs a callable parse(view), got {type(parse).__name__}")
        return _receive(self, K_PARSE, 0, parse)

    @cython.binding(False)
    def recv(self, Py_ssize_t max_bytes=65536):
        """Return up to ``max_bytes`` bytes; ``b""`` at end of stream.
        Returns an awaitable (not a coroutine)."""
        self.loop.check_thread("Connection.recv")
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        return _receive(self, K_RECV, max_bytes, None)

    @cython.binding(False)
    def recv_exactly(self, Py_ssize_t n):
        """Return exactly ``n`` bytes; IncompleteReadError if the stream ends
        first.  Returns an awaitable (not a coroutine)."""
        self.loop.check_thread("Connection.recv_exactly")
        if n < 0:
            raise ValueError("n must be >= 0")
        return _receive(self, K_EXACT, n, None)

    @property
    def buffered(self):
        """Bytes received and not yet consumed."""
        return self._avail()

    # ---- sending ----

    cdef _check_writable(self):
        if self.state != S_OPEN or self.send_failed:
            raise ConnectionClosed(f"connection is closed{'' if self.error is None else f' ({self.error})'}")
        if self.shut_requested:
            raise ConnectionClosed("shutdown_write() was called on this connection")

    @cython.binding(False)
    def send_nowait(self, data):
        """Queue ``data`` behind earlier sends and return at once.

        ``bytes`` are sent from the object itself (immutable, pinned until the
        kernel is done); other buffers are copied into the send pool, chunked
        across slots when larger than one (SendPoolExhausted if the pool has
        no room).  Order on the wire is the order of calls.
        """
        self.loop.check_thread("Connection.send_nowait")
        self._check_writable()
        if self.tls is not None:
            self.tls.write(data, None)
            return
        self.queue_bytes(data, None, not PyBytes_CheckExact(data))

    @cython.binding(False)
    def send(self, data):
        """Queue ``data``; the returned future resolves with its byte count
        once the kernel has taken all of it (a result per send)."""
        self.loop.check_thread("Connection.send")
        self._check_writable()
        fut = self.loop.create_future()
        if self.tls is not None:
            self.tls.write(data, fut)
            return fut
        self.queue_bytes(data, fut, not PyBytes_CheckExact(data))
        return fut

    def send_parts(self, parts):
        """Send several buffers back to back as one logical send (gathered
        into one SENDMSG where they fit); resolves with the total."""
        self.loop.check_thread("Connection.send_parts")
        self._check_writable()
        fut = self.loop.create_future()
        if self.tls is not None:
            self.tls.write(b"".join(parts), fut)    # one write: records back to back
            return fut
        self.queue_parts(list(parts), fut)     # all queued, or none (SendPoolExhausted)
        return fut

    def send_chain(self, parts):
        """Send ``parts`` (buffers) back to back as one linked chain: each
        part is one SQE, IO_LINKed to the next, so the kernel sends them in
        order without a trip through the loop in between.  Returns a future
        of the total byte count, or of the first error.

        Ordering (the one rule for every send of a connection): sends leave
        in the order of the calls.  A chain is one entry in that order:
        whatever was queued before it (``send_nowait``, ``send``,
        ``send_parts``, an earlier chain) goes out first, and whatever is
        queued after it waits until its last part is sent.  A part that
        ends short is resumed where it stopped before anything after it.

        Nothing is copied: every part (``bytes`` or any contiguous buffer)
        is held, a reference and a buffer export, until the kernel is done
        with it, zero-copy parts (at least ``Config.send_zc_threshold``
        bytes) until their notification.  The future resolves only then,
        so the buffers may be reused once it has; do not change them
        before (a bytearray cannot be resized meanwhile: BufferError).
        Cancelling the future does not withdraw the chain (a half-sent
        chain would break the peer's framing).  A wrong part type raises
        TypeError (BufferError if not contiguous) with nothing queued.

        On a TLS connection the parts are encrypted as one write, in the
        same order (records need the plaintext, so there is no link and no
        zero copy); the future resolves with the plaintext total.
        """
        self.loop.check_thread("Connection.send_chain")
        self._check_writable()
        fut = self.loop.create_future()
        if self.tls is not None:
            self.tls.write(b"".join([memoryview(p).cast("B") for p in parts]), fut)
            return fut
        queue_chain(self, parts, fut)
        return fut

    cdef inline bint send_failed_error_pending(self) noexcept:
        return self.error is not None and self.send_failed

    cdef inline bint must_drain(self) noexcept:
        return self.queued_bytes > self.ctx.high_water and self.state != S_CLOSED

    @cython.binding(False)
    def drain(self):
        """Wait until queued bytes fall to the low-water mark (once more than
        the high-water mark are queued); raises the send error if sending
        failed.  Returns an awaitable (not a coroutine) that checks when it
        is awaited; several may wait at once."""
        cdef _Drain d
        self.loop.check_thread("Connection.drain")
        if self.spare_drain is not None and _refcnt(<PyObject*>self.spare_drain) == 1:
            d = self.spare_drain            # finished, and only we hold it
            d.finished = False
        else:
            d = _Drain.__new__(_Drain)
        d.conn = self
        return d

    @property
    def queued(self):
        """Bytes queued for sending and not yet taken by the kernel."""
        return self.queued_bytes

    # ---- lifecycle ----

    def shutdown_write(self):
        """Send FIN after everything queued so far (half-close)."""
        self.loop.check_thread("Connection.shutdown_write")
        if self.state == S_OPEN and not self.shut_requested:
            if self.tls is not None:
                self.tls.write_eof()    # close_notify before the FIN
            self.queue_shutdown()

    def _shutdown_read(self):
        """End receiving (see Stream.shutdown_read); for Server.shutdown."""
        if self.state == S_OPEN:
            self.shutdown_read()

    def close(self):
        """Close gracefully: queued sends drain, then FIN (not RST).  Bytes
        received and not yet consumed are dropped at once."""
        self.loop.check_thread("Connection.close")
        if self.tls is not None:
            self.tls.close_notify()     # queued before the close (bounded wait)
        self.begin_close()
        self._drop_received()

    def abort(self):
        """Close at once, dropping queued sends (their awaiters get
        ConnectionAbortedError) and unconsumed received bytes."""
        self.loop.check_thread("Connection.abort")
        self.abort_stream(ConnectionAbortedError("connection aborted"))
        self._drop_received()

    cdef _drop_received(self):
        # The receive buffers go now, not when the connection object does.
        # (A view an earlier parse kept holds the old accumulator, untouched.)
        if PyByteArray_GET_SIZE(self.acc) or self.head is not None:
            self.acc = _NO_BYTES
            self._set_head(None)

    async def wait_closed(self):
        self.loop.check_thread("Connection.wait_closed")
        if self.state == S_CLOSED:
            return
        if self.closed_fut is None:
            self.closed_fut = self.loop.create_future()
        await asyncio.shield(self.closed_fut)

    @property
    def peer_addr(self):
        # A fixed descriptor has no getpeername: its addresses are fetched
        # before the handler starts / connect() returns (_set_addresses).
        if self._peer is None and self.fd >= 0 and not self.fixed:
            _store_peer(self, self._sockcall("getpeername"))
        return _peer_of(self)

    @property
    def local_addr(self):
        if self._local is None and self.fd >= 0 and not self.fixed:
            self._local = self._sockcall("getsockname")
        return self._local

    cdef _sockcall(self, name):
        s = _socket.socket(self.family, _socket.SOCK_STREAM, 0, self.fd)
        try:
            return getattr(s, name)()
        except OSError:
            return None
        finally:
            s.detach()

    def tls_info(self):
        """The negotiated TLS parameters (``ringline._tls.TLSInfo``: version,
        cipher, ALPN, SNI...), or None for a plain connection."""
        return None if self.tls is None else self.tls.tls_info()

    def _tls_handshake(self):
        """The TLS handshake's Future (serve() waits on it), or None."""
        return None if self.tls is None else self.tls.handshake

    @property
    def fileno(self):
        """The socket's process fd; -1 for a fixed descriptor (it has none)."""
        return -1 if self.fixed else self.fd

    def _set_addresses(self, peer, local):
        if peer is not None:
            _store_peer(self, peer)
        if local is not None:
            self._local = _shared(local)
        _decide_zc(self)

    def __repr__(self):
        st = ("open", "closing", "closed")[self.state]
        where = f"slot={self.fd}" if self.fixed else f"fd={self.fd}"
        return f"<ringline.Connection {where} {st}{' outbound' if self.is_outbound else ''}>"


# Address objects repeat across connections (the listener's address, a few
# client hosts): one shared object each instead of one per connection.
cdef dict _addr_cache = {}


cdef object _shared(object addr):
    """An equal address object already held, else ``addr`` (now held)."""
    if len(_addr_cache) >= 4096:
        _addr_cache.clear()
    return _addr_cache.setdefault(addr, addr)


cdef object _shared_host(object addr):
    """``addr`` (a tuple starting with a host string) with a shared host."""
    if type(addr) is not tuple or not addr or type(addr[0]) is not str:
        return addr
    host = _shared(addr[0])
    if host is addr[0]:
        return addr
    return (host,) + addr[1:]


cdef _store_peer(Connection c, object peer):
    # An IPv4 (host, port) is kept as its shared host string and the port in
    # peer_port, the tuple made when asked for (_peer_of): an idle connection
    # then holds no tuple and no int of its own (about 96 bytes).
    if (type(peer) is tuple and len(peer) == 2 and type(peer[0]) is str
            and type(peer[1]) is int and 0 < peer[1] < 65536):
        c._peer = _shared(peer[0])
        c.peer_port = peer[1]
    else:
        c.peer_port = 0
        c._peer = _shared_host(peer)


cdef object _peer_of(Connection c):
    """The peer's address as peer_addr returns it (see _store_peer)."""
    if c.peer_port:
        return (c._peer, c.peer_port)
    return c._peer


cdef object _fresh(object exc):
    """A copy of the connection's stored error to raise: raising the stored
    object itself would hang the handler's frames on it (its traceback), a
    reference cycle connection -> error -> frame -> connection."""
    cls = type(exc)
    try:
        # As the stored one, without running a custom __init__ again.
        new = cls.__new__(cls, *exc.args)
        if isinstance(exc, OSError) and new.errno != exc.errno:
            # A subclass with its own __init__: OSError left them to it.
            new.errno = exc.errno
            new.strerror = exc.strerror
        d = getattr(exc, "__dict__", None)
        if d:
            new.__dict__.update(d)
    except Exception:
        return exc
    new.__cause__ = exc.__cause__
    new.__suppress_context__ = exc.__suppress_context__
    return new


cdef _decide_zc(Connection c):
    # SEND_ZC to a local peer costs more than a copying send: delivery on lo
    # copies the pinned pages anyway (skb_copy_ubufs), after the page pinning
    # and before the extra notification CQE.
    if c.ctx.zc_threshold <= 0 or c.ctx.zc_to_local:
        return
    if c.family != _socket.AF_INET and c.family != _socket.AF_INET6:
        return
    if (addresses_are_local(_peer_of(c), c._local) if c.fixed else peer_is_local(c.fd)):
        c.no_zc = True


cdef int _plain_sink(object c, const char *p, Py_ssize_t n) except -1:
    return (<Connection>c).on_plain(p, n)


cdef Py_ssize_t _plain_room(object c, Py_ssize_t n, char **out) except -1:
    return (<Connection>c).plain_room(n, out)


cdef int _plain_done(object c, Py_ssize_t k) except -1:
    return (<Connection>c).plain_done(k)


def attach_tls(Connection c, TLSLayer layer):
    """Put ``layer`` (made for ``c``) over ``c`` and start its handshake.
    Called right after new_connection, before any receive completes."""
    c.tls = layer
    c.plain_acc_old = -1
    layer.sink = _plain_sink
    layer.room = _plain_room
    layer.done = _plain_done
    layer.begin()


def new_connection(Loop loop, int fd, int family, bint outbound, peer=None,
                   bint fixed=False, local=None):
    """Wrap a connected non-blocking socket fd, or a fixed-table slot with
    ``fixed`` (ownership passes to it), and start receiving."""
    cdef Connection c = Connection.__new__(Connection)
    stream_init(c, loop, fd, fixed)
    # A native connection's receive and send completions only wake its
    # task or resolve futures (on_data, _send_done): no user code runs.
    c.recv_op.quiet = True      # the SendOp, made at the first send, copies it
    c._local = local
    c.acc = _NO_BYTES
    c.large_piece = c.ctx.bufring.size
    if c.ctx.bufring.inc and c.large_piece > LARGE_PIECE:
        c.large_piece = LARGE_PIECE
    c.is_outbound = outbound
    c.family = family
    if peer is not None:
        _store_peer(c, peer)
    _decide_zc(c)
    c.start_reading()
    return c
