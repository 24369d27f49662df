# cython: language_level=3, boundscheck=False, wraparound=False
"""The native face: ``Connection``, one per accepted or outbound socket.

Received bytes are copied once, from the provided buffer into the
connection's accumulator (a bytearray), and the buffer goes straight back to
the kernel.  ``with_data(parse)`` hands ``parse`` a memoryview of everything
buffered.  A view kept past the call never sees reused memory: the view is
released after ``parse`` returns, and if the caller still holds a slice of it
the accumulator is replaced by a copy, leaving the old bytes untouched.
"""
import asyncio
import socket as _socket

cimport cython
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_CheckExact, PyBytes_FromStringAndSize
from libc.string cimport memcpy

from ringline._loop cimport Loop
from ringline._stream cimport Stream, IOContext, stream_init, get_context, S_OPEN, S_CLOSED
from ringline.errors import ConnectionClosed, ReceiveLimitExceeded


cdef object _IncompleteReadError = asyncio.IncompleteReadError
cdef object _Future = asyncio.Future


@cython.final
cdef class Connection(Stream):
    """A TCP connection on the ring (see the module docstring).

    Observable states: open -> closing (close() called: queued sends drain,
    then the receive is cancelled) -> closed (fd closed).  ``abort()`` skips
    the drain.
    """
    cdef bytearray acc
    cdef object waiter          # future woken by data, EOF, error or close
    cdef object drain_waiter
    cdef object closed_fut
    cdef readonly bint is_outbound
    cdef object _peer
    cdef object _local
    cdef int family
    cdef bint throttled         # receive paused by backpressure

    def __init__(self, *a, **k):
        raise TypeError("connections come from ringline.serve() or ringline.connect()")

    # ---- hooks from Stream ----

    cdef int on_data(self, const char *p, Py_ssize_t n) except -1:
        cdef Py_ssize_t old = PyByteArray_GET_SIZE(self.acc)
        try:
            PyByteArray_Resize(self.acc, old + n)
        except BufferError:
            # A view from an earlier parse is still held: leave its bytes be.
            self.acc = bytearray(self.acc)
            PyByteArray_Resize(self.acc, old + n)
        memcpy(PyByteArray_AS_STRING(self.acc) + old, p, n)
        if old + n >= self.ctx.recv_limit and self.want_read:
            # Receive backpressure: stop taking bytes off the socket so TCP
            # flow control reaches the peer; reading resumes once the handler
            # consumes (see _consumed).  Bytes already in flight still land.
            self.throttled = True
            self.stop_reading()
        self._wake(None)
        return 0

    cdef _consumed(self):
        """After the handler consumed bytes: lift receive backpressure."""
        if self.throttled and PyByteArray_GET_SIZE(self.acc) < self.ctx.recv_limit // 2:
            self.throttled = False
            self.start_reading()

    cdef _limit_exceeded(self):
        """The handler needs more bytes than the limit lets it buffer."""
        exc = ReceiveLimitExceeded(self.ctx.recv_limit)
        self.error = exc
        self.abort_stream(exc)
        raise exc

    cdef _consume(self, Py_ssize_t n):
        try:
            del self.acc[:n]
        except BufferError:
            # A slice of an earlier view still pins the old buffer: leave it
            # untouched and carry on with a copy of the rest.
            self.acc = self.acc[n:]
        self._consumed()

    cdef int on_eof(self) except -1:
        self._wake(None)
        return 0

    cdef int on_error(self, object exc) except -1:
        self._wake(exc)
        self.abort_stream(exc)
        return 0

    cdef int on_closed(self) except -1:
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
        w = self.waiter
        if w is not None:
            self.waiter = None
            if not w.done():
                if exc is None:
                    w.set_result(None)
                else:
                    w.set_exception(exc)

    cdef object _wait(self):
        if self.waiter is not None and not self.waiter.done():
            raise RuntimeError("another coroutine is already waiting for data on this connection")
        self.waiter = _Future(loop=self.loop)
        return self.waiter

    cdef bint _finished_reading(self):
        return self.eof or self.state != S_OPEN

    # ---- receiving ----

    async def with_data(self, parse):
        """Call ``parse(view)`` on everything buffered until it consumes bytes.

        ``parse`` returns how many bytes it consumed (0 or None: needs more).
        Resolves with that count; at end of stream ``parse`` gets an empty
        view and 0 is returned unless it consumes something.
        """
        cdef Py_ssize_t n
        while True:
            if PyByteArray_GET_SIZE(self.acc) or self._finished_reading():
                acc = self.acc
                view = memoryview(acc)
                try:
                    r = parse(view)
                finally:
                    try:
                        view.release()
                    except BufferError:
                        # The caller kept a slice: never mutate those bytes.
                        self.acc = bytearray(acc)
                n = 0 if r is None else r
                if n < 0 or n > PyByteArray_GET_SIZE(self.acc):
                    raise ValueError(f"parse consumed {n} of {PyByteArray_GET_SIZE(self.acc)} bytes")
                if n:
                    self._consume(n)
                    return n
                if self._finished_reading():
                    if self.error is not None and not PyByteArray_GET_SIZE(self.acc):
                        raise self.error
                    return 0
                if PyByteArray_GET_SIZE(self.acc) >= self.ctx.recv_limit:
                    self._limit_exceeded()
            await self._wait()

    async def recv(self, Py_ssize_t max_bytes=65536):
        """Return up to ``max_bytes`` bytes; ``b""`` at end of stream."""
        cdef Py_ssize_t n
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        while True:
            n = PyByteArray_GET_SIZE(self.acc)
            if n:
                if n > max_bytes:
                    n = max_bytes
                out = PyBytes_FromStringAndSize(PyByteArray_AS_STRING(self.acc), n)
                self._consume(n)
                return out
            if self._finished_reading():
                if self.error is not None:
                    raise self.error
                return b""
            await self._wait()

    async def recv_exactly(self, Py_ssize_t n):
        """Return exactly ``n`` bytes; IncompleteReadError if the stream ends first."""
        if n < 0:
            raise ValueError("n must be >= 0")
        while PyByteArray_GET_SIZE(self.acc) < n:
            if PyByteArray_GET_SIZE(self.acc) >= self.ctx.recv_limit:
                self._limit_exceeded()
            if self._finished_reading():
                if self.error is not None:
                    raise self.error
                partial = bytes(self.acc)
                self._consume(len(partial))
                raise _IncompleteReadError(partial, n)
            await self._wait()
        out = PyBytes_FromStringAndSize(PyByteArray_AS_STRING(self.acc), n)
        self._consume(n)
        return out

    @property
    def buffered(self):
        """Bytes received and not yet consumed."""
        return PyByteArray_GET_SIZE(self.acc)

    # ---- sending ----

    cdef _check_writable(self):
        if self.state != S_OPEN or self.send_failed:
            raise ConnectionClosed(f"connection is closed{'' if self.error is None else f' ({self.error})'}")
        if self.shut_requested:
            raise ConnectionClosed("shutdown_write() was called on this connection")

    def send_nowait(self, data):
        """Queue ``data`` behind earlier sends and return at once.

        ``bytes`` are sent from the object itself (immutable, pinned until the
        kernel is done); other buffers are copied into the send pool, chunked
        across slots when larger than one (SendPoolExhausted if the pool has
        no room).  Order on the wire is the order of calls.
        """
        self._check_writable()
        self.queue_bytes(data, None, not PyBytes_CheckExact(data))

    def send(self, data):
        """Queue ``data``; the returned future resolves with its byte count
        once the kernel has taken all of it (a result per send)."""
        self._check_writable()
        fut = self.loop.create_future()
        self.queue_bytes(data, fut, not PyBytes_CheckExact(data))
        return fut

    def send_parts(self, parts):
        """Send several buffers back to back as one logical send (gathered
        into one SENDMSG where they fit); resolves with the total."""
        self._check_writable()
        fut = self.loop.create_future()
        self.queue_parts(list(parts), fut)     # all queued, or none (SendPoolExhausted)
        return fut

    async def drain(self):
        """Wait until queued bytes fall to the low-water mark."""
        if self.error is not None and self.send_failed:
            raise self.error
        if self.queued_bytes <= self.ctx.high_water or self.state == S_CLOSED:
            return
        if self.drain_waiter is None or self.drain_waiter.done():
            self.drain_waiter = self.loop.create_future()
        # Several coroutines may drain at once: they share one future, and
        # cancelling one of them must not cancel it for the others.
        await asyncio.shield(self.drain_waiter)
        if self.error is not None and self.send_failed:
            raise self.error

    @property
    def queued(self):
        """Bytes queued for sending and not yet taken by the kernel."""
        return self.queued_bytes

    # ---- lifecycle ----

    def shutdown_write(self):
        """Send FIN after everything queued so far (half-close)."""
        if self.state == S_OPEN and not self.shut_requested:
            self.queue_shutdown()

    def close(self):
        """Close gracefully: queued sends drain, then FIN (not RST)."""
        self.begin_close()

    def abort(self):
        """Close at once, dropping queued sends (their awaiters get
        ConnectionAbortedError)."""
        self.abort_stream(ConnectionAbortedError("connection aborted"))

    async def wait_closed(self):
        if self.state == S_CLOSED:
            return
        if self.closed_fut is None:
            self.closed_fut = self.loop.create_future()
        await asyncio.shield(self.closed_fut)

    @property
    def peer_addr(self):
        # A direct descriptor has no getpeername: its addresses are fetched
        # before the handler starts / connect() returns (_set_addresses).
        if self._peer is None and self.fd >= 0 and not self.fixed:
            self._peer = self._sockcall("getpeername")
        return self._peer

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

    @property
    def fileno(self):
        """The socket's process fd; -1 for a direct descriptor (it has none)."""
        return -1 if self.fixed else self.fd

    def _set_addresses(self, peer, local):
        if peer is not None:
            self._peer = peer
        if local is not None:
            self._local = local

    def __repr__(self):
        st = ("open", "closing", "closed")[self.state]
        where = f"slot={self.fd}" if self.fixed else f"fd={self.fd}"
        return f"<ringline.Connection {where} {st}{' outbound' if self.is_outbound else ''}>"


def new_connection(Loop loop, int fd, int family, bint outbound, peer=None,
                   bint fixed=False, local=None):
    """Wrap a connected non-blocking socket fd, or a fixed-table slot with
    ``fixed`` (ownership passes to it), and start receiving."""
    cdef Connection c = Connection.__new__(Connection)
    stream_init(c, loop, fd, fixed)
    c._local = local
    c.acc = bytearray()
    c.is_outbound = outbound
    c.family = family
    c._peer = peer
    c.start_reading()
    return c
