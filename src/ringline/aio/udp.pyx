# cython: language_level=3, boundscheck=False, wraparound=False
"""The asyncio face's datagram transport on the ring.

``loop.create_datagram_endpoint`` (and ``sock=``) on a ringline loop ends in
``loop._make_datagram_transport``; for an AF_INET/AF_INET6 socket that
returns a ``UDPTransport`` here, built on the native face's
``DatagramSocket`` (``_net/udp.pyx``): one multishot RECVMSG on the
socket's own provided-buffer ring, one SENDMSG per datagram, several in
flight.  The transport is the socket's ``sink``: received datagrams are
handed to ``protocol.datagram_received`` from the receive completion,
without a readiness round trip.  Other families (AF_UNIX datagram sockets)
keep asyncio's readiness transport.

Contract, as asyncio's selector transport: connection_made soon after
creation (then the creator's waiter, then the first datagram_received);
datagram_received(data, addr) with ``addr`` as ``socket.recvfrom`` gives it;
error_received for an OSError of a send or receive (an ICMP error on a
connected socket, EMSGSIZE, an unresolvable address); connection_lost
exactly once.  ``close()`` stops receiving at once, lets the sends already
made go out, and then (socket closed) calls connection_lost(None);
``abort()`` forgets the sends not yet handed to the kernel.

Differences, all because sendto() hands the datagram to the ring instead of
calling sendto(2) at once:

* ``get_write_buffer_size()`` counts the payload bytes of sends whose
  completion has not come back yet (asyncio counts only what sendto(2)
  refused with EAGAIN), and pause_writing()/resume_writing() follow it
  around the limits (default high 64 KiB, low 16 KiB).  A burst above the
  high-water mark within one loop iteration therefore pauses the protocol
  until the kernel has taken it;
* a send error reaches error_received from the completion, an iteration
  later, not from inside sendto();
* sendto() after close() is ignored (asyncio may still send while its
  buffer drains); after five such calls each one logs a warning, as for
  asyncio's connected sockets.

Every protocol callback runs in the transport's contextvars context, a copy
of the one that created it.
"""
import socket as _socket
import sys
from asyncio import transports as _aio_transports
from asyncio import trsock as _aio_trsock
from asyncio.log import logger as _logger

cimport cython

from ringline._core.loop cimport Loop
from ringline.aio.flow cimport write_limits, call_protocol_flow
from ringline._net.udp cimport DatagramSocket, DatagramSink

from ringline._net import udp as _udp


cdef extern from "Python.h":
    int PyContext_Enter(object) except -1
    int PyContext_Exit(object) except -1
    object PyContext_CopyCurrent()


# 3.13's selector transport sends empty datagrams; earlier ones drop them.
cdef bint _SEND_EMPTY = sys.version_info >= (3, 13)
cdef int LOG_THRESHOLD_FOR_CONNLOST_WRITES = 5

#: Provided receive buffers per endpoint, each with room for the largest
#: datagram (virtual memory until the kernel writes into it).
RECV_BUFFERS = 64


@cython.final
cdef class _UDPCore(DatagramSink):
    """The compiled part of a UDPTransport: the socket's sink, sendto and
    the state machine; ``UDPTransport`` (below) is the asyncio-typed face
    that protocols see (``_owner``)."""
    cdef Loop loop
    cdef object _owner                 # the UDPTransport (strong until connection_lost)
    cdef DatagramSocket _ds
    cdef readonly object _sock
    cdef readonly int _sock_fd
    cdef object _protocol
    cdef object _datagram_received     # bound protocol.datagram_received (hot path)
    cdef object _address               # create_datagram_endpoint's remote_addr, or None
    cdef bint _peer_connected          # the socket has a peer: send without address
    cdef dict _extra
    cdef object _waiter
    cdef object _context
    cdef bint _in_ctx
    cdef bint _made                    # connection_made has run
    cdef bint _reading                 # delivering datagrams (after the waiter; not paused)
    cdef bint _paused                  # pause_reading()
    cdef bint _closing                 # close() or abort() called
    cdef bint _lost_scheduled
    cdef int _conn_lost
    cdef readonly bint _protocol_paused
    cdef Py_ssize_t _high
    cdef Py_ssize_t _low
    cdef Py_ssize_t _buffer_size       # payload bytes sent and not yet completed
    cdef object _lost_exc

    def __init__(self, *a, **k):
        raise TypeError("transports are made by the event loop")

    # ---- construction ----

    cdef _setup(self, DatagramSocket ds, sock, protocol, address, waiter):
        self._ds = ds
        self._sock = sock
        self._sock_fd = sock.fileno()
        self._extra["socket"] = _aio_trsock.TransportSocket(sock)
        try:
            self._extra["sockname"] = sock.getsockname()
        except OSError:
            self._extra["sockname"] = None
        if "peername" not in self._extra:
            self._extra["peername"] = ds.peer_addr
        self._peer_connected = bool(self._extra["peername"])
        self._address = address
        self._set_protocol(protocol)
        self._waiter = waiter
        self._high = 64 * 1024
        self._low = 16 * 1024
        self._context = PyContext_CopyCurrent()
        (<object>self.loop)._transports[self._sock_fd] = self._owner
        ds.sink = self
        self.loop.call_soon(self._connection_made, context=self._context)

    cdef _set_protocol(self, protocol):
        self._protocol = protocol
        self._datagram_received = protocol.datagram_received

    def _connection_made(self):
        # As asyncio: connection_made, then the creator's waiter, then reading.
        self._made = True
        self._in_ctx = True
        try:
            self._protocol.connection_made(self._owner)
        finally:
            self._in_ctx = False
            waiter = self._waiter
            self._waiter = None
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            self.loop.call_soon(self._start_reading, context=self._context)

    def _start_reading(self):
        if self._closing or self._paused or self._reading:
            return
        self._reading = True
        if self._ds.q_n:
            self._deliver()

    # ---- sink: calls from the socket's completions ----

    cdef int on_datagrams(self, DatagramSocket s) except -1:
        if not self._reading:
            return 0            # kept in the socket's queue until reading starts
        if self._in_ctx:
            return self._deliver()
        ctx = self._context
        PyContext_Enter(ctx)
        self._in_ctx = True
        try:
            self._deliver()
        finally:
            self._in_ctx = False
            PyContext_Exit(ctx)
        return 0

    cdef int _deliver(self) except -1:
        cdef DatagramSocket s = self._ds
        while s.q_n and self._reading:
            data = s._pop_data()
            try:
                self._datagram_received(data, s.popped_addr)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                # asyncio: the reader callback's exception goes to the
                # exception handler and the transport carries on.
                self._callback_failed("datagram_received", exc)
        return 0

    cdef _callback_failed(self, str name, exc):
        self.loop.call_exception_handler({
            "message": f"Exception in callback UDPTransport: protocol.{name}() failed",
            "exception": exc, "transport": self._owner, "protocol": self._protocol})

    cdef int on_recv_error(self, DatagramSocket s, object exc, bint stopped) except -1:
        if not self._made or self._closing:
            return 0
        self._in_protocol_ctx_error(exc)
        if stopped:
            # The ring's receive ended on an error it cannot re-arm after:
            # a transport that no longer receives is closed, with that error.
            self._force_close(exc)
        return 0

    cdef int on_sent(self, DatagramSocket s, Py_ssize_t nbytes, object exc) except -1:
        self._buffer_size -= nbytes
        if self._buffer_size < 0:
            self._buffer_size = 0
        if exc is not None and self._made and not self._lost_scheduled:
            self._in_protocol_ctx_error(exc)
        if self._protocol_paused and self._buffer_size <= self._low:
            self._protocol_paused = False
            if self._protocol is not None:
                self._in_ctx_call_resume()
        return 0

    cdef int on_closed(self, DatagramSocket s) except -1:
        # The socket is closed (its last final CQE is in): connection_lost.
        transports = (<object>self.loop)._transports
        if transports.get(self._sock_fd) is self._owner:
            del transports[self._sock_fd]
        self._reading = False
        self._schedule_lost(self._lost_exc)
        return 0

    cdef _in_protocol_ctx_error(self, exc):
        if self._in_ctx:
            self._error_received(exc)
            return
        ctx = self._context
        PyContext_Enter(ctx)
        self._in_ctx = True
        try:
            self._error_received(exc)
        finally:
            self._in_ctx = False
            PyContext_Exit(ctx)

    cdef _error_received(self, exc):
        try:
            self._protocol.error_received(exc)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as e:
            self._callback_failed("error_received", e)

    cdef _in_ctx_call_resume(self):
        if self._in_ctx:
            self._resume_protocol()
            return
        ctx = self._context
        PyContext_Enter(ctx)
        self._in_ctx = True
        try:
            self._resume_protocol()
        finally:
            self._in_ctx = False
            PyContext_Exit(ctx)

    cdef _resume_protocol(self):
        call_protocol_flow(self.loop, self._protocol, self._owner, False)

    # ---- sending ----

    def sendto(self, data, addr=None):
        """Send ``data`` to ``addr`` (or to the connected peer): queued on
        the ring, out with the loop's next submission."""
        cdef DatagramSocket ds = self._ds
        cdef Py_ssize_t n
        if type(data) is not bytes:
            if not isinstance(data, (bytearray, memoryview)):
                raise TypeError(f"data argument must be a bytes-like object, "
                                f"not {type(data).__name__!r}")
            data = bytes(data)      # the caller may reuse its buffer
        n = len(<bytes>data)
        if n == 0 and not _SEND_EMPTY:
            return
        if self._address:
            if addr is not None and addr != self._address:
                raise ValueError(f"Invalid address: must be None or {self._address}")
            addr = self._address
        if self._closing:
            if self._conn_lost >= LOG_THRESHOLD_FOR_CONNLOST_WRITES:
                _logger.warning("socket.send() raised exception.")
            self._conn_lost += 1
            return
        try:
            op = ds._make_send(data, None if self._peer_connected else addr, 0)
        except (TypeError, ValueError):
            # Not a numeric address of the socket's family (a host name,
            # '<broadcast>', a wrong type): sendto(2)'s own rules.
            self._sendto_slow(data, addr)
            return
        except OSError as exc:
            self._error_received(exc)
            return
        ds._queue_send(op)
        self._buffer_size += n
        if self._buffer_size > self._high and not self._protocol_paused:
            self._maybe_pause_protocol()

    cdef _sendto_slow(self, bytes data, addr):
        cdef DatagramSocket ds = self._ds
        try:
            sa = _resolve(self._sock.family, addr)
            op = ds._make_send(data, sa, 0)
        except OSError as exc:
            self._error_received(exc)
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal write error on datagram transport")
            return
        ds._queue_send(op)
        self._buffer_size += len(data)
        self._maybe_pause_protocol()

    def get_write_buffer_size(self):
        """Payload bytes sent and not yet taken by the kernel."""
        return self._buffer_size

    def get_write_buffer_limits(self):
        return (self._low, self._high)

    def set_write_buffer_limits(self, high=None, low=None):
        self._high, self._low = write_limits(high, low)
        self._maybe_pause_protocol()

    cdef _maybe_pause_protocol(self):
        if self._buffer_size <= self._high or self._protocol_paused:
            return
        self._protocol_paused = True
        call_protocol_flow(self.loop, self._protocol, self._owner, True)

    # ---- reading (asyncio's selector transport has these too) ----

    def is_reading(self):
        return not self._closing and not self._paused

    def pause_reading(self):
        """Stop delivering datagrams; they wait in the socket's bounded
        queue (beyond it they are dropped, as by a full socket buffer)."""
        if self._closing or self._paused:
            return
        self._paused = True
        self._reading = False

    def resume_reading(self):
        if self._closing or not self._paused:
            return
        self._paused = False
        if self._made:
            self.loop.call_soon(self._start_reading, context=self._context)

    # ---- closing ----

    def is_closing(self):
        return self._closing

    def close(self):
        """Stop receiving; connection_lost(None) once the sends already made
        are out and the socket is closed."""
        if self._closing:
            return
        self._closing = True
        self._reading = False
        self._ds.close()

    def abort(self):
        """Close without sending what the kernel has not taken yet."""
        self._force_close(None)

    cpdef _force_close(self, exc):
        if self._conn_lost:
            return
        self._conn_lost += 1
        if self._lost_exc is None:
            self._lost_exc = exc
        self._reading = False
        if self._ds.state == 0:
            self._buffer_size -= self._ds.drop_pending()
        if not self._closing:
            self._closing = True
            self._ds.close()

    cdef _fatal_error(self, exc, message):
        if isinstance(exc, OSError):
            if self.loop._debug:
                _logger.debug("%r: %s", self._owner, message, exc_info=True)
        else:
            self.loop.call_exception_handler({
                "message": message, "exception": exc,
                "transport": self._owner, "protocol": self._protocol})
        self._force_close(exc)

    cdef _schedule_lost(self, exc):
        if self._lost_scheduled:
            return
        self._lost_scheduled = True
        if self.loop._closing or self.loop._closed:
            # loop.close() closed the socket: no callbacks on a closed loop.
            self._protocol = None
            self._datagram_received = None
            self._waiter = None
            self._owner = None
            return
        self.loop.call_soon(self._call_connection_lost, exc, context=self._context)

    def _call_connection_lost(self, exc):
        self._in_ctx = True
        try:
            if self._made:
                self._protocol.connection_lost(exc)
        finally:
            self._in_ctx = False
            self._protocol = None
            self._datagram_received = None
            self._owner = None      # the transport keeps its core, not back

    # ---- the rest of the transport API ----

    def set_protocol(self, protocol):
        self._set_protocol(protocol)

    def get_protocol(self):
        return self._protocol

    def statistics(self):
        return self._ds.statistics()

    def state_name(self):
        return "closed" if self._ds.state == 2 else ("closing" if self._closing else "open")


class UDPTransport(_aio_transports.Transport, _aio_transports.DatagramTransport):
    """asyncio's datagram transport over a ring DatagramSocket (module
    docstring); an ``asyncio.Transport`` and ``asyncio.DatagramTransport``,
    as asyncio's own is.  ``sendto`` is the compiled core's method itself
    (an instance attribute), so a send costs no extra Python-level call."""

    def __init__(self, core, extra):
        # extra: the core's dict, which BaseTransport.get_extra_info reads.
        super().__init__(extra)
        self._core = core
        self.sendto = core.sendto

    @property
    def _sock(self):
        return self._core._sock

    @property
    def _sock_fd(self):
        return self._core._sock_fd

    @property
    def _protocol_paused(self):
        return self._core._protocol_paused

    def get_write_buffer_size(self):
        """Payload bytes sent and not yet taken by the kernel."""
        return self._core.get_write_buffer_size()

    def get_write_buffer_limits(self):
        return self._core.get_write_buffer_limits()

    def set_write_buffer_limits(self, high=None, low=None):
        self._core.set_write_buffer_limits(high, low)

    def is_reading(self):
        return self._core.is_reading()

    def pause_reading(self):
        """Stop delivering datagrams; they wait in the socket's bounded
        queue (beyond it they are dropped, as by a full socket buffer)."""
        self._core.pause_reading()

    def resume_reading(self):
        self._core.resume_reading()

    def is_closing(self):
        return self._core.is_closing()

    def close(self):
        """Stop receiving; connection_lost(None) once the sends already
        made are out and the socket is closed."""
        self._core.close()

    def abort(self):
        """Close without sending what the kernel has not taken yet."""
        self._core.abort()

    def _force_close(self, exc):
        self._core._force_close(exc)

    def set_protocol(self, protocol):
        self._core.set_protocol(protocol)

    def get_protocol(self):
        return self._core.get_protocol()

    def statistics(self):
        """The ring socket's counters (datagrams in/out, dropped, ...)."""
        return self._core.statistics()

    def __repr__(self):
        return f"<ringline.UDPTransport fd={self._core._sock_fd} {self._core.state_name()}>"


def _resolve(int family, addr):
    """``addr`` as a numeric address of ``family``, resolved the way
    ``socket.sendto`` would (a blocking lookup for a host name)."""
    if not isinstance(addr, tuple) or len(addr) < 2:
        raise TypeError(f"sendto(): a (host, port) tuple is required, not {addr!r}")
    host, port = addr[0], addr[1]
    if isinstance(host, (bytes, bytearray)):
        host = bytes(host).decode("idna")
    if not isinstance(host, str) or not isinstance(port, int):
        raise TypeError(f"sendto(): a (host, port) tuple is required, not {addr!r}")
    if host == "<broadcast>":
        host = "255.255.255.255" if family == _socket.AF_INET else "::ffff:255.255.255.255"
    elif host == "":
        host = "0.0.0.0" if family == _socket.AF_INET else "::"
    infos = _socket.getaddrinfo(host, port, family, _socket.SOCK_DGRAM)
    sa = infos[0][4]
    if family == _socket.AF_INET6 and len(addr) > 2:
        sa = (sa[0], sa[1], addr[2], addr[3] if len(addr) > 3 else sa[3])
    return sa


def release_cached_rings(Loop loop, bint owner=True):
    """The loop is closing: free the buffer rings closed UDP sockets left
    for reuse (``_net/udp.pyx``)."""
    _udp.release_cached_rings(loop, owner)


def make_datagram_transport(Loop loop, sock, protocol, address=None, waiter=None, extra=None):
    """A ring UDPTransport over ``sock`` (an AF_INET/AF_INET6 datagram
    socket, owned by the transport from now on)."""
    cdef _UDPCore t = _UDPCore.__new__(_UDPCore)
    cdef DatagramSocket ds
    sock.setblocking(False)
    try:
        peer = sock.getpeername()
    except OSError:
        peer = None
    ds = _udp.open_socket(loop, sock, peer=peer, recv_buffers=RECV_BUFFERS, max_datagram=65535)
    ds.recv_op.quiet = False    # its completions now call protocol code
    t.loop = loop
    t._extra = dict(extra) if extra else {}
    owner = t._owner = UDPTransport(t, t._extra)
    t._setup(ds, sock, protocol, address, waiter)
    return owner
