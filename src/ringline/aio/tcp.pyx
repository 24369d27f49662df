# cython: language_level=3, boundscheck=False, wraparound=False
"""The asyncio face: a socket transport on ringline's stream machinery.

``TCPTransport`` is what ``loop._make_socket_transport`` returns, so every
asyncio path that makes a socket transport (create_connection,
create_server, connect_accepted_socket, create_unix_*, streams, start_tls
on top) runs on the ring: multishot recv into provided buffers and the one
ordered send path of ``Stream``.

Contract kept as asyncio's selector transports do: connection_made is
called soon after creation, connection_lost exactly once, when asyncio would
call it (the iteration after close() with nothing left to send, or abort(),
or after the flush; with the exception that closed it, or None) while the
kernel side (recv cancel, then the socket's close) finishes on its own,
data_received never after close() or while reading is paused, pause_writing/resume_writing
around the write-buffer limits, eof_received's return value decides between
half-close and close.  Differences: write() does not send synchronously (the
bytes go out with the loop's next io_uring_enter, together with every other
SQE of that iteration); close(), abort() and a write() past the high-water
mark hand what is still queued to the kernel at once (one non-blocking
sendmsg), as asyncio's write() would already have done, so the same bytes
reach the peer, connection_lost comes on the same iteration, and only what
the kernel refused pauses the protocol, as on asyncio.

Every protocol callback runs in the transport's own contextvars context, a
copy of the one that created it (create_connection's caller; for a server,
the one that started serving), as on asyncio and uvloop.  A receive
completion enters it once around everything its handler calls (_recv_cqe);
a send completion only where it calls protocol code (resume_writing, a
fatal error); the callbacks scheduled with call_soon carry it as their
Handle's context.
"""
import collections
from asyncio import constants as _aio_constants
from asyncio import protocols as _aio_protocols
from asyncio import streams as _aio_streams
from asyncio import trsock as _aio_trsock
from asyncio.log import logger as _logger

cimport cython
from cpython.bytes cimport PyBytes_CheckExact
from cpython.ref cimport PyObject
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_WRITABLE
from cpython.bytearray cimport (PyByteArray_AS_STRING, PyByteArray_CheckExact,
                                PyByteArray_GET_SIZE, PyByteArray_Resize)
from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t
from libc.string cimport memcpy, memset
from posix.uio cimport iovec

from ringline.aio.flow cimport write_limits, call_protocol_flow, reader_fed
from ringline._core.loop cimport Loop
from ringline._net.csocket cimport (socklen_t, sockaddr_t, getpeername, getsockname, AF_INET,
                                    AF_INET6, inet_ntop, ntohs, ntohl)
from ringline._net.sockops cimport peer_is_local
from ringline.aio.tls cimport SSLProtocol
from ringline._net.stream cimport (Stream, Chunk, stream_init, S_CLOSED,
                                   msghdr_t, IOV_BATCH)


cdef extern from "sys/socket.h" nogil:
    ssize_t c_sendmsg "sendmsg"(int fd, const msghdr_t *msg, int flags)
    int MSG_NOSIGNAL
    int MSG_DONTWAIT

cdef extern from "Python.h":
    int PyContext_Enter(object) except -1
    int PyContext_Exit(object) except -1
    object PyContext_CopyCurrent()
    # Borrowed-pointer forms for the per-receive path: the context outlives
    # the call (the transport keeps it, the thread state holds it while
    # entered).
    int _ctx_enter "PyContext_Enter"(PyObject *ctx) except -1
    int _ctx_exit "PyContext_Exit"(PyObject *ctx) except -1
    void _decref_ptr "Py_DECREF"(PyObject *o)

cdef extern from *:
    """
    /* f(arg) for the per-receive data_received call, NULL with the
       exception set if it raised.  A bound method's function is
       vectorcalled with its self put in front of arg (the method object's
       own call layer skipped).  The caller holds f, and f holds both. */
    static inline PyObject *rl_call1(PyObject *f, PyObject *arg) {
        PyObject *args[3];
        PyObject *r;
        if (Py_IS_TYPE(f, &PyMethod_Type)) {
            PyObject *fn = PyMethod_GET_FUNCTION(f);
            vectorcallfunc vf = PyVectorcall_Function(fn);
            if (vf != NULL) {
                args[1] = PyMethod_GET_SELF(f);
                args[2] = arg;
                r = vf(fn, args + 1, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
                if (r == NULL && !PyErr_Occurred())
                    PyErr_SetString(PyExc_SystemError, "data_received returned NULL without an exception");
                return r;
            }
        }
        return PyObject_CallOneArg(f, arg);
    }
    """
    PyObject *rl_call1(object f, object arg)


cdef object _BufferedProtocol = _aio_protocols.BufferedProtocol
cdef object _SRP_data_received = _aio_streams.StreamReaderProtocol.data_received
cdef object _SR_feed_data = _aio_streams.StreamReader.feed_data
cdef int LOG_THRESHOLD_FOR_CONNLOST_WRITES = 5

cdef enum:
    ADDR_RAW = 28       # sizeof(struct sockaddr_in6)
    TLS_RAW_HIGH = 128 * 1024


cdef int _reraise_pending() except -1:
    # Raises the exception already set (by a C-API call that returned NULL).
    return -1


cdef class TCPTransport(Stream):
    """asyncio.Transport over a ring stream (see the module docstring)."""
    cdef readonly object _sock
    cdef object _protocol
    cdef object _data_received      # bound protocol.data_received (hot path)
    cdef bint _buffered             # BufferedProtocol
    cdef bint _srp                  # asyncio's own StreamReaderProtocol: fed in place
    cdef SSLProtocol _tls           # the protocol is ringline's TLS: fed ciphertext in place
    cdef object _server
    cdef dict _extra
    cdef bint _closing              # close() or abort() called
    cdef bint _paused
    cdef readonly bint _protocol_paused     # pause_writing() sent to the protocol
    cdef bint _connected            # connection_made has been called
    cdef bint _lost_scheduled
    cdef int _conn_lost
    cdef bint _eof_written
    cdef Py_ssize_t _high
    cdef Py_ssize_t _low
    cdef object _pending            # bytes received while paused/not yet connected
    cdef object _waiter
    cdef object _empty_waiter       # loop.sendfile(): resolves when nothing is queued
    # The contextvars context every protocol callback runs in; _in_ctx is
    # set while it is entered (a Context cannot be entered twice).
    cdef object _context
    cdef bint _in_ctx
    cdef bint _flushing             # _flush_now is running: no protocol calls
    # An INET/INET6 socket's addresses as the kernel gave them at creation
    # (peer at 0, ours at ADDR_RAW), made into tuples when asked for: an idle
    # transport holds no address objects, and they outlive a reset or close
    # as asyncio's cached ones do.  Length 0: not known (see _extra).
    cdef unsigned char _addr_raw[2 * ADDR_RAW]
    cdef uint8_t _peer_len
    cdef uint8_t _sock_len
    cdef object __weakref__

    # BaseEventLoop.start_tls() and sendfile() look these up on the class.
    _start_tls_compatible = True
    _sendfile_compatible = _aio_constants._SendfileMode.TRY_NATIVE

    def __init__(self, *a, **k):
        raise TypeError("transports are made by the event loop")

    # ---- construction ----

    cdef _setup(self, sock, protocol, waiter, extra, server):
        self._sock = sock
        # Extra info is looked up when asked for (get_extra_info), as uvloop
        # does: an idle connection holds no address objects.
        self._extra = dict(extra) if extra else None
        self._keep_addresses(sock)
        if self._extra is not None and self._peer_len:
            # asyncio's accept path passes the peer's address: we keep it raw.
            self._extra.pop("peername", None)
            if not self._extra:
                self._extra = None
        if self.ctx.zc_threshold > 0 and not self.ctx.zc_to_local and peer_is_local(self.fd):
            self.no_zc = True       # see addresses_are_local
        # Bulk receives in 256 KiB pieces (NetState.big_ring): a protocol
        # copies each one out at once, so fewer calls and fewer, larger
        # allocations in its buffer (StreamReader) cost less.  TLS with
        # ring BIOs too: each receive is lent to OpenSSL, which reads its
        # records from there, and fewer, larger receives mean fewer
        # window-update ACKs and loop passes (TLS bulk 10c: -7% CPU per
        # MB).  TLS on MemoryBIOs copies each receive into the BIO: there
        # the 64 KiB ring's smaller rotation (1 MiB) keeps the kernel's copy
        # destination in cache (-5%, bench/JOURNAL.md 2026-12-07).
        self.large_big = (type(protocol) is not SSLProtocol
                          or (<SSLProtocol>protocol)._in_st != NULL)
        self._set_protocol(protocol)
        self._server = server
        # _pending: a deque made when bytes first arrive while paused.
        self._waiter = waiter
        self._high = self.ctx.high_water
        self._low = self.ctx.low_water
        if self._tls is not None and self._high > TLS_RAW_HIGH:
            # Under TLS the application's flow control is the SSL
            # transport's; this queue only holds ciphertext on its way to
            # the kernel.  Kept short (asyncio's raw transport pauses at
            # 64 KiB), the SSL layer encrypts a piece as the previous one
            # leaves, and the kernel copies ciphertext that is still in
            # cache instead of megabytes of it (-4% CPU per MB of TLS bulk).
            # With bytes encrypted only as this queue drains (tls.pyx
            # _write_one), 128 KiB beat 256 KiB by 8% CPU per MB on ten
            # connections (64 KiB: no better than 256; one connection:
            # the same at all three; bench/JOURNAL.md 2026-12-07).
            self._high = TLS_RAW_HIGH
            self._low = TLS_RAW_HIGH // 4
        self._context = PyContext_CopyCurrent()
        if server is not None:
            _server_attach(server, self)
        # asyncio's sock_*/add_reader refuse an fd that a transport owns by
        # looking it up in loop._transports (selector_events'
        # _ensure_fd_no_transport); registering there makes them refuse ours.
        (<object>self.loop)._transports[self.fd] = self
        self.loop.call_soon(self._connection_made, context=self._context)

    cdef _keep_addresses(self, sock):
        cdef socklen_t n
        if sock.family == AF_INET or sock.family == AF_INET6:
            n = ADDR_RAW
            if getpeername(self.fd, <sockaddr_t*>self._addr_raw, &n) == 0 and n <= ADDR_RAW:
                self._peer_len = <uint8_t>n
            n = ADDR_RAW
            if getsockname(self.fd, <sockaddr_t*>(self._addr_raw + ADDR_RAW), &n) == 0 and n <= ADDR_RAW:
                self._sock_len = <uint8_t>n
            return
        # Other families (AF_UNIX paths can be long): the objects, as asyncio.
        if self._extra is None:
            self._extra = {}
        try:
            self._extra["sockname"] = sock.getsockname()
        except OSError:
            self._extra["sockname"] = None
        if "peername" not in self._extra:
            try:
                self._extra["peername"] = sock.getpeername()
            except OSError:
                self._extra["peername"] = None

    def _connection_made(self):
        # Runs in self._context (its Handle's), like every call_soon here.
        if self._closing:
            return
        self._connected = True
        self._in_ctx = True
        try:
            self._protocol.connection_made(self)
        finally:
            self._in_ctx = False
            # As asyncio, where connection_made, the reader and the waiter
            # are three callbacks: an exception from connection_made goes to
            # the exception handler (from this callback) and the connection
            # carries on.
            waiter = self._waiter
            self._waiter = None
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
                # The creator (create_connection's task) resumes before the
                # first data_received, as on asyncio, where its wake-up is
                # queued before the reader can fire: the receive is armed
                # from the ready queue after that wake-up, since its data
                # could otherwise be dispatched ahead of it.
                self.loop.call_soon(self._start_reading_soon, context=self._context)
            elif not self._closing and not self._paused:
                self.start_reading()

    def _start_reading_soon(self):
        if not self._closing and not self._paused:
            self.start_reading()

    cdef _set_protocol(self, protocol):
        self._protocol = protocol
        self._buffered = isinstance(protocol, _BufferedProtocol)
        self._tls = protocol if type(protocol) is SSLProtocol else None
        self._data_received = None if self._buffered else protocol.data_received
        # asyncio's own StreamReaderProtocol (data_received not overridden):
        # on_data feeds its StreamReader in place (_feed_reader).
        self._srp = (not self._buffered and self._tls is None
                     and getattr(type(protocol), "data_received", None) is _SRP_data_received
                     and "data_received" not in getattr(protocol, "__dict__", ()))

    # ---- completions: entered once into the protocol's context ----

    cdef int _recv_cqe(self, int32_t res, uint32_t flags) except -1:
        cdef PyObject *ctx
        if self._in_ctx:
            return Stream._recv_cqe(self, res, flags)
        ctx = <PyObject*>self._context
        _ctx_enter(ctx)
        self._in_ctx = True
        try:
            Stream._recv_cqe(self, res, flags)
        finally:
            self._in_ctx = False
            _ctx_exit(ctx)
        return 0

    cdef int _flush_now(self) except -1:
        """Hand the kernel now, with non-blocking sendmsg(2), what write()
        queued and no send SQE has taken yet: what asyncio's write() would
        already have sent.  Used by close() and abort() only.  Only when no
        send is in flight (byte order: one send at a time); what the socket
        has no room for stays queued for the ring's send, and errors are
        left to it too.  The bytes sent are retired exactly as a send CQE
        retires them (_send_done)."""
        cdef iovec iov[IOV_BATCH]
        cdef msghdr_t msg
        cdef Chunk ch
        cdef int n
        cdef Py_ssize_t total, res
        self._flushing = True
        try:
            while (self.sending is None and self.sendq and self.fd >= 0 and not self.fixed
                   and not self.send_failed):
                n = 0
                total = 0
                for ch in self.sendq:
                    iov[n].iov_base = <void*>(ch.ptr + ch.off)
                    iov[n].iov_len = <size_t>(ch.length - ch.off)
                    total += ch.length - ch.off
                    n += 1
                    if n == IOV_BATCH:
                        break
                memset(&msg, 0, sizeof(msg))
                msg.msg_iov = iov
                msg.msg_iovlen = n
                res = c_sendmsg(self.fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT)
                if res <= 0:
                    break           # no room (EAGAIN), or an error the ring's send reports
                self.sending_n = n  # what _send_done retires from the front
                self._send_done(<int32_t>res)
                if res < total:
                    break
        finally:
            self._flushing = False
        return 0

    cdef _schedule_lost(self, exc):
        """connection_lost(exc) from the ready queue, once: as asyncio,
        on the iteration after close() (nothing left to send) or abort(),
        or after the send that emptied the queue of a closing transport.
        The kernel side (the recv's cancel, then the socket's close) goes on
        by itself."""
        if self._lost_scheduled:
            return
        self._lost_scheduled = True
        if self.loop._closing or self.loop._closed:
            # Closed by loop.close() (no connection_lost then: the ready
            # queue is discarded).  The final CQEs reaped by close() come after
            # that discard, so nothing may be queued here: a callback left on
            # the closed loop would keep this transport, its protocol and its
            # server (with the listening sockets) alive as long as the loop.
            self._protocol = None
            self._data_received = None
            self._server = None
            self._waiter = None
            self._empty_waiter = None
            return
        self.loop.call_soon(self._call_connection_lost, exc, context=self._context)

    # ---- receive hooks ----

    cdef int on_data(self, const char *p, Py_ssize_t n) except -1:
        cdef PyObject *r
        if self._closing:
            return 0
        if self._paused or self._pending:
            if self._tls is not None and self._tls._ssl_reading_paused and not self._pending:
                # Paused by the TLS layer itself (its BIO is full enough):
                # straight into that BIO (no bytes made); the read that
                # resumes this transport consumes it first.
                self._tls.feed_only(p, n)
                return 0
            # Bytes that were already in flight when reading was paused.
            if self._pending is None:
                self._pending = collections.deque()
            self._pending.append(self.take_bytes(p, n, n))
            return 0
        if self._tls is not None:
            # Ciphertext straight from the ring's buffer into OpenSSL's BIO.
            try:
                self._tls.feed(p, n)
            except BaseException as exc:
                if isinstance(exc, (SystemExit, KeyboardInterrupt)):
                    raise
                self._fatal_error(exc, "Fatal error: protocol.data_received() call failed.")
        elif self._buffered:
            self._feed_buffered(p, n)
        else:
            if self._srp:
                try:
                    if self._feed_reader(p, n):
                        return 0
                except BaseException as exc:
                    if isinstance(exc, (SystemExit, KeyboardInterrupt)):
                        raise
                    self._fatal_error(exc, "Fatal error: protocol.data_received() call failed.")
                    return 0
            # The call without a try block (whose exception-state save costs
            # ~20 instructions per receive); a failure goes to the same
            # handler through _data_received_failed.
            cb = self._data_received
            r = rl_call1(cb, self.take_bytes(p, n, n))
            if r == NULL:
                self._data_received_failed()
            else:
                _decref_ptr(r)
        return 0

    cdef _data_received_failed(self):
        # data_received raised: its exception is still set.
        try:
            _reraise_pending()
        except BaseException as exc:
            if isinstance(exc, (SystemExit, KeyboardInterrupt)):
                raise
            self._fatal_error(exc, "Fatal error: protocol.data_received() call failed.")

    cdef bint _feed_reader(self, const char *p, Py_ssize_t n) except -1:
        """What asyncio's StreamReaderProtocol.data_received and
        StreamReader.feed_data do with ``n`` bytes, for those two classes:
        copied straight from the ring's buffer onto the end of the reader's
        bytearray (where ``extend`` would copy them from a bytes), then the
        waiter woken and the transport paused past twice the limit.  No
        bytes object per receive, so the receive buffer is never handed out
        and the kernel writes the next receive into the same, still cached,
        memory.  False: this reader cannot be fed so (a subclass's
        feed_data, at EOF, its buffer exported): the caller takes the
        general path, through ``data_received``."""
        cdef Py_ssize_t old
        reader = self._protocol._stream_reader
        if reader is None:
            return True         # as data_received: dropped
        if (getattr(type(reader), "feed_data", None) is not _SR_feed_data
                or "feed_data" in getattr(reader, "__dict__", ())):
            return False
        try:
            buf = reader._buffer
            if reader._eof or not PyByteArray_CheckExact(buf):
                return False
        except AttributeError:
            return False
        old = PyByteArray_GET_SIZE(buf)
        try:
            PyByteArray_Resize(buf, old + n)
        except BufferError:
            return False
        memcpy(PyByteArray_AS_STRING(buf) + old, p, n)
        reader._wakeup_waiter()
        reader_fed(reader, old + n)
        return True

    cdef _feed_buffered(self, const char *p, Py_ssize_t n):
        cdef Py_buffer view
        cdef Py_ssize_t take
        while n > 0 and not self._closing:
            try:
                buf = self._protocol.get_buffer(n)
                PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE)
                try:
                    if view.len == 0:
                        raise RuntimeError("get_buffer() returned an empty buffer")
                    take = n if n < view.len else view.len
                    memcpy(view.buf, p, take)
                finally:
                    PyBuffer_Release(&view)
                self._protocol.buffer_updated(take)
            except BaseException as exc:
                if isinstance(exc, (SystemExit, KeyboardInterrupt)):
                    raise
                self._fatal_error(exc, "Fatal error: protocol.buffer_updated() call failed.")
                return
            p += take
            n -= take

    cdef int on_eof(self) except -1:
        if self._closing:
            return 0
        if self._paused or self._pending:
            if self._pending is None:
                self._pending = collections.deque()
            self._pending.append(None)   # deliver EOF after the pending bytes
            return 0
        self._deliver_eof()
        return 0

    cdef _deliver_eof(self):
        try:
            keep_open = self._protocol.eof_received()
        except BaseException as exc:
            if isinstance(exc, (SystemExit, KeyboardInterrupt)):
                raise
            self._fatal_error(exc, "Fatal error: protocol.eof_received() call failed.")
            return
        if not keep_open:
            self.close()

    cdef int on_error(self, object exc) except -1:
        # From a receive (context entered) or a send completion (not: the
        # usual send CQE calls no protocol code, so it skips the enter).
        if self._in_ctx:
            self._fatal_error(exc, "Fatal read/write error on socket transport")
            return 0
        ctx = self._context
        PyContext_Enter(ctx)
        self._in_ctx = True
        try:
            self._fatal_error(exc, "Fatal read/write error on socket transport")
        finally:
            self._in_ctx = False
            PyContext_Exit(ctx)
        return 0

    cdef int on_closed(self) except -1:
        self._schedule_lost(self.error)
        return 0

    cdef int close_fd(self) except -1:
        transports = (<object>self.loop)._transports
        if transports.get(self.fd) is self:
            del transports[self.fd]
        self._sock.close()
        return 0

    cdef int on_writable(self) except -1:
        if (self._empty_waiter is not None and self.queued_bytes == 0
                and not self._empty_waiter.done()):
            self._empty_waiter.set_result(None)
        if (self._protocol_paused and self.queued_bytes <= self._low and not self._flushing
                and self._protocol is not None):
            self._protocol_paused = False
            if self._in_ctx:
                self._resume_protocol()
            else:
                # From a send completion, which enters the context only here.
                ctx = self._context
                PyContext_Enter(ctx)
                self._in_ctx = True
                try:
                    self._resume_protocol()
                finally:
                    self._in_ctx = False
                    PyContext_Exit(ctx)
        if self._closing and self.queued_bytes == 0 and not self._flushing:
            # close() waited for this send (asyncio: "the buffer is flushed").
            self._schedule_lost(None)
        return 0

    cdef _resume_protocol(self):
        call_protocol_flow(self.loop, self._protocol, self, False)

    def _call_connection_lost(self, exc):
        if self._empty_waiter is not None and not self._empty_waiter.done():
            self._empty_waiter.set_exception(
                ConnectionError("Connection is closed by peer"))
        self._empty_waiter = None
        self._in_ctx = True
        try:
            if self._connected:
                self._protocol.connection_lost(exc)
        finally:
            self._in_ctx = False
            self._protocol = None
            self._data_received = None
            self._pending = None
            server = self._server
            if server is not None:
                self._server = None
                _server_detach(server, self)

    cdef _fatal_error(self, exc, message):
        if isinstance(exc, OSError):
            if self.loop._debug:
                _logger.debug("%r: %s", self, message, exc_info=True)
        else:
            self.loop.call_exception_handler({
                "message": message, "exception": exc,
                "transport": self, "protocol": self._protocol})
        self._force_close(exc)

    cpdef _force_close(self, exc):
        # cpdef: asyncio's sslproto calls it on handshake failure/timeout.
        if self.error is None and exc is not None:
            self.error = exc
        self.abort_stream(exc)

    cdef int abort_stream(self, object exc) except -1:
        # Every abort, the loop's own at close() included, leaves the
        # transport closing (is_closing() True, writes ignored).
        self._mark_closing()
        Stream.abort_stream(self, exc)
        # asyncio's _force_close: connection_lost on the next iteration, not
        # when the kernel has let go of the socket.
        self._schedule_lost(self.error)
        return 0

    cdef _mark_closing(self):
        self._closing = True
        # asyncio counts the close itself as the first lost write: the
        # "socket.send() raised exception." warning starts at the 5th write.
        if self._conn_lost == 0:
            self._conn_lost = 1

    # ---- asyncio.BaseTransport ----

    def get_extra_info(self, name, default=None):
        if self._extra is not None and name in self._extra:
            return self._extra[name]
        if name == "socket":
            if self._extra is None:
                self._extra = {}
            ts = self._extra["socket"] = _aio_trsock.TransportSocket(self._sock)
            return ts
        if name == "peername":
            return _raw_to_py(self._addr_raw, self._peer_len)
        if name == "sockname":
            return _raw_to_py(self._addr_raw + ADDR_RAW, self._sock_len)
        return default

    def is_closing(self):
        return self._closing

    def close(self):
        if self._closing:
            return
        self._mark_closing()
        self._pending = None
        if not self._protocol_paused:
            # (A paused protocol has more to write once resumed, after the
            # queue drains: the sends' completions take care of it.)
            self._flush_now()
        self.begin_close()
        if self.queued_bytes == 0 and self.sending is None:
            self._schedule_lost(None)

    def set_protocol(self, protocol):
        self._set_protocol(protocol)

    def get_protocol(self):
        return self._protocol

    # ---- asyncio.ReadTransport ----

    def is_reading(self):
        return not self._paused and not self._closing

    def pause_reading(self):
        if self._closing or self._paused:
            return
        self._paused = True
        self.stop_reading()
        if self.loop._debug:
            _logger.debug("%r pauses reading", self)

    def resume_reading(self):
        if self._closing or not self._paused:
            return
        self._paused = False
        if self._pending:
            # Deliver what arrived while paused from the ready queue, never
            # from inside resume_reading(): callers (StreamReader) resume and
            # only then start waiting for the data.
            self.loop.call_soon(self._deliver_pending, context=self._context)
        elif not self._closing:
            self.start_reading()
        if self.loop._debug:
            _logger.debug("%r resumes reading", self)

    def _deliver_pending(self):
        self._in_ctx = True
        try:
            self._deliver_pending_in_ctx()
        finally:
            self._in_ctx = False

    cdef _deliver_pending_in_ctx(self):
        while self._pending and not self._paused and not self._closing:
            item = self._pending.popleft()
            if item is None:
                self._deliver_eof()
            elif self._buffered:
                self._feed_buffered(<char*>item, len(item))
            else:
                try:
                    self._data_received(item)
                except BaseException as exc:
                    if isinstance(exc, (SystemExit, KeyboardInterrupt)):
                        raise
                    self._fatal_error(exc, "Fatal error: protocol.data_received() call failed.")
        if not self._pending:
            self._pending = None
        if not self._paused and not self._closing:
            self.start_reading()

    # ---- asyncio.WriteTransport ----

    @cython.binding(False)
    def write(self, data):
        if not PyBytes_CheckExact(data):
            data = _to_bytes(data)
        if self._eof_written:
            raise RuntimeError("Cannot call write() after write_eof()")
        if self._empty_waiter is not None:
            # As asyncio: loop.sendfile() owns the socket meanwhile.
            raise RuntimeError("unable to write; sendfile is in progress")
        if not data:
            return
        if self._lost_scheduled or self.state == S_CLOSED or self.send_failed:
            # As asyncio, a closing transport still takes writes until its
            # buffer is flushed (SSLProtocol, resumed, flushes its last
            # records then); once connection_lost is scheduled they are lost.
            if self._conn_lost >= LOG_THRESHOLD_FOR_CONNLOST_WRITES:
                _logger.warning("socket.send() raised exception.")
            self._conn_lost += 1
            return
        self.queue_bytes(data, None, False)
        self._maybe_pause_protocol()

    def writelines(self, list_of_data):
        # All or nothing, as asyncio: a bad item raises before anything is queued.
        items = [data if PyBytes_CheckExact(data) else _to_bytes(data)
                 for data in list_of_data]
        for data in items:
            self.write(data)

    def write_eof(self):
        if self._closing or self._eof_written:
            return
        self._eof_written = True
        self.queue_shutdown()

    def can_write_eof(self):
        return True

    def abort(self):
        # What asyncio's write() would already have handed to the kernel
        # reaches the peer; only the rest is dropped.
        if not self._closing:
            self._flush_now()
        self._force_close(None)

    def _make_empty_waiter(self):
        """For BaseSelectorEventLoop._sendfile_native: a future that resolves
        once every queued byte has been taken by the kernel."""
        if self._empty_waiter is not None:
            raise RuntimeError("Empty waiter is already set")
        self._empty_waiter = self.loop.create_future()
        if self.queued_bytes == 0:
            self._empty_waiter.set_result(None)
        return self._empty_waiter

    def _reset_empty_waiter(self):
        self._empty_waiter = None

    def get_write_buffer_size(self):
        return self.queued_bytes

    def get_write_buffer_limits(self):
        return (self._low, self._high)

    def set_write_buffer_limits(self, high=None, low=None):
        self._high, self._low = write_limits(high, low)
        self._maybe_pause_protocol()

    cdef _maybe_pause_protocol(self):
        if self.queued_bytes <= self._high or self._protocol_paused:
            return
        # asyncio's write() hands the kernel what it takes before it counts
        # the buffer; ours waits for the next enter.  Only here, at the pause
        # threshold, does that show: a pause asyncio would not make, which
        # code written for one drainer at a time trips over (websockets'
        # legacy protocol asserts it, under pyperformance's websockets
        # benchmark).  So before pausing, the queue goes to the kernel now,
        # as close() does it (one non-blocking sendmsg, only with no send in
        # flight: byte order), and only what it refused counts.  Not under
        # TLS: the protocol here is ours, its pause is what drives
        # encrypt-on-drain, and the application's limits are the SSL
        # transport's.
        if self.sending is None and self._tls is None:
            self._flush_now()
            if self.queued_bytes <= self._high:
                return
        self._protocol_paused = True
        call_protocol_flow(self.loop, self._protocol, self, True)

    def __repr__(self):
        st = "closed" if self.state == S_CLOSED else ("closing" if self._closing else "open")
        return f"<ringline.TCPTransport fd={self.fd} {st}>"


cdef object _raw_to_py(const unsigned char *p, socklen_t n):
    """An AF_INET/AF_INET6 sockaddr as socket.getpeername() returns it."""
    cdef char host[64]
    cdef uint16_t family
    if n < 2:
        return None
    family = (<const uint16_t*>p)[0]
    if family == AF_INET and n >= 16:
        inet_ntop(AF_INET, p + 4, host, sizeof(host))
        return (host.decode(), ntohs((<const uint16_t*>(p + 2))[0]))
    if family == AF_INET6 and n >= 28:
        inet_ntop(AF_INET6, p + 8, host, sizeof(host))
        return (host.decode(), ntohs((<const uint16_t*>(p + 2))[0]),
                ntohl((<const uint32_t*>(p + 4))[0]), (<const uint32_t*>(p + 24))[0])
    return None


cdef object _to_bytes(data):
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data argument must be a bytes-like object, "
                        f"not {type(data).__name__!r}")
    return bytes(data)      # asyncio copies: the caller may reuse its buffer


cdef _server_attach(server, transport):
    try:
        server._attach(transport)          # 3.12+
    except TypeError:
        server._attach()


cdef _server_detach(server, transport):
    try:
        server._detach(transport)
    except TypeError:
        server._detach()


def make_socket_transport(Loop loop, sock, protocol, waiter=None, extra=None, server=None):
    """Wrap a connected socket (it stays owned by the transport) in a ring transport."""
    cdef TCPTransport t = TCPTransport.__new__(TCPTransport)
    sock.setblocking(False)
    stream_init(t, loop, sock.fileno())
    t._setup(sock, protocol, waiter, extra, server)
    return t
