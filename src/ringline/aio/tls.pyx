# cython: language_level=3, boundscheck=False, wraparound=False
"""The asyncio face's TLS: asyncio's SSL transport semantics, compiled.

``loop._make_ssl_transport`` (``aio/transports.py``) puts an ``SSLProtocol``
from this module on a ring ``TCPTransport`` (``aio/tcp.pyx``) and hands the
application its ``_SSLProtocolTransport``, exactly the shape asyncio builds
with its pure-Python ``asyncio.sslproto``: the same states, the same
callbacks in the same order, the same errors.  ``Config.tls = "asyncio"``
(or ``RINGLINE_TLS=asyncio``) takes asyncio's module instead, for comparison.

Data path, and what is cheaper than asyncio's:

* ring BIOs (where direct calls are allowed): the mem BIO inside each
  ``ssl.MemoryBIO`` is replaced by one of ours before ``wrap_bio`` (see
  "ring BIOs" below), so no byte is zero-filled and copied into a mem BIO
  and copied out again;
* ciphertext in: the TCP transport hands each receive's bytes, as a pointer
  into the ring's provided buffer, to ``SSLProtocol.feed`` (a C call),
  which lends it to the incoming ring BIO while it is processed (OpenSSL
  reads its records from there; what it left is kept), or writes it into
  the incoming ``ssl.MemoryBIO``: no ``bytes`` made for ciphertext;
* plaintext out: ``SSLObject.read`` is asked for what can be there (the
  undecrypted bytes plus what OpenSSL holds, at most 256 KiB), while it can
  be there, so the common case raises no ``SSLWantReadError`` (an exception
  per receive is most of asyncio's per-record cost); for asyncio's own
  StreamReaderProtocol and StreamReader, records are decrypted straight
  onto the reader's buffer (``_read_into_reader``);
* no Python call per record on CPython: MemoryBIO write/read/pending and
  SSL_read/SSL_write are made on the pointers under the ssl module's
  objects, through the OpenSSL it loaded (``ringline._net.openssl``: checked at
  import, ``RINGLINE_TLS_DIRECT=0`` turns it off); a failed direct call is
  redone by the ssl module's, which raises the same error;
* ciphertext out: ``write()`` encrypts at once, with ring BIOs straight
  into a ``bytes`` sized for the records that ``TCPTransport.write`` takes
  as it is (held in ``_cipher_q`` while that transport is paused), else
  into the outgoing MemoryBIO, and one ``TCPTransport.write`` per flush
  takes the whole of it (``bytes`` are pinned by the ring's send, not
  copied again); a large write goes
  CHUNK at a time, and once the raw transport is full the rest of a
  ``bytes`` waits unencrypted in the backlog until it drains, so the BIO
  stays one piece long (in cache, no growth) instead of the write's size.

States (as asyncio's ``SSLProtocolState``)::

    UNWRAPPED -> DO_HANDSHAKE -> WRAPPED -> FLUSHING -> SHUTDOWN -> UNWRAPPED
                      |                                               ^
                      +--------------- (error, abort, lost) ----------+

Kernel TLS (``Config.ktls``) is decided in ``ktls_status()``; see there.
"""
import collections
import ssl as _ssl
import warnings as _warnings
from asyncio import constants as _aio_constants
from asyncio import exceptions as _aio_exceptions
from asyncio import protocols as _aio_protocols
from asyncio import streams as _aio_streams
from asyncio import transports as _aio_transports
from asyncio.log import logger as _logger

from cpython.bytes cimport (PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize,
                            PyBytes_GET_SIZE)
from cpython.memoryview cimport PyMemoryView_Check, PyMemoryView_FromMemory
from cpython.buffer cimport (PyBUF_READ, PyBUF_WRITE, PyBUF_SIMPLE, PyBUF_WRITABLE,
                             PyObject_GetBuffer, PyBuffer_Release)
from cpython.bytearray cimport (PyByteArray_AS_STRING, PyByteArray_CheckExact,
                                PyByteArray_GET_SIZE, PyByteArray_Resize)
from cpython.ref cimport PyObject, Py_INCREF
from cpython.weakref cimport PyWeakref_CheckRef

from libc.string cimport memcpy
from libc.limits cimport INT_MAX

from ringline._core.cpy cimport bytes_resize_stolen
from ringline.aio.flow cimport reader_fed
from ringline._net.openssl cimport (ossl, ossl_ready,
                                    membio_bio, membio_eof, sslobj_ssl,
                                    OSSL_MEMBIO, OSSL_SSLOBJ, OSSL_BIO_METH)

cdef object _SSLAgainErrors = (_ssl.SSLWantReadError, _ssl.SSLSyscallError)
cdef object _SSLError = _ssl.SSLError
cdef object _SSLSocket = getattr(__import__("_ssl"), "_SSLSocket", None)
cdef object _CertificateError = _ssl.CertificateError
cdef object _BufferedProtocol = _aio_protocols.BufferedProtocol
cdef object _CancelledError = _aio_exceptions.CancelledError
# asyncio's own stream classes' methods: an application protocol that
# still uses them gets its plaintext decrypted straight into the
# StreamReader's buffer (_read_into_reader).
cdef object _SRP_data_received = _aio_streams.StreamReaderProtocol.data_received
cdef object _SR_feed_data = _aio_streams.StreamReader.feed_data
cdef object _SR_wakeup_waiter = _aio_streams.StreamReader._wakeup_waiter
# 3.11+: StreamReaderProtocol._stream_reader is a property over a weakref.
_prop = _aio_streams.StreamReaderProtocol.__dict__.get("_stream_reader")
cdef object _SRP_stream_reader = _prop if (
    isinstance(_prop, property)
    and "_stream_reader_wr" in _aio_streams.StreamReaderProtocol.__init__.__code__.co_names
) else None
del _prop

cdef enum:
    READ_MAX = 256 * 1024       # plaintext asked of one SSLObject.read
    # A large write is encrypted, and ciphertext leaves the outgoing BIO, in
    # pieces of this size: the BIO's buffer stays small and in cache instead
    # of growing to the size of the write (and being copied out cold).
    CHUNK = 256 * 1024
    # Readable ciphertext up to one full record (16 KiB + overhead): read
    # through SSLObject's own bytes-making read first (unless SSL_read is
    # called directly).
    SMALL_READ = 16 * 1024 + 512
    SSL_ERROR_WANT_READ = 2     # OpenSSL's
    # asyncio.constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES
    LOG_THRESHOLD = 5


# ---- the memory BIOs and the SSL without a Python call ----
#
# Every MemoryBIO.write / .read / .pending and SSLObject.read / .write is an
# attribute lookup and a call (several per record).  They are made here
# directly on the BIO and SSL pointers under the ssl module's objects,
# through the OpenSSL it loaded, wherever ringline._net.openssl allows it
# (library, version and CPython's private layouts checked there once;
# RINGLINE_TLS_DIRECT=0 turns it off): OSSL_MEMBIO for the three BIO calls,
# OSSL_SSLOBJ for SSL_read_ex/SSL_write_ex.  Otherwise the Python calls.

cdef bint _bio_direct = ossl_ready(OSSL_MEMBIO)


def _set_bio_direct(bint on):
    """Tests: BIO calls made directly (when this Python allows it) or
    through the ssl module, for SSLProtocols made from now on.  Returns
    whether direct calls are in use."""
    global _bio_direct
    _bio_direct = on and ossl_ready(OSSL_MEMBIO)
    return _bio_direct


# ---- ring BIOs: no MemoryBIO copies ----
#
# A mem BIO zero-fills and copies every byte written into it, and every
# read copies it out again: per byte of TLS bulk, ciphertext in was copied
# ring buffer -> BIO -> OpenSSL's record buffer, and ciphertext out record
# buffer -> BIO -> bytes, with two zero-fills (a tenth of the process's
# time; bench/JOURNAL.md 2026-12-07).  Before wrap_bio, the mem BIO inside
# each ssl.MemoryBIO is replaced by one of ours (the native face's design,
# native/tls.pyx "Ring BIOs"), so the MemoryBIO objects' own methods still
# work, through it:
# * incoming: feed() lends the receive's bytes (a pointer into the
#   provided buffer) for the duration of its processing, and OpenSSL reads
#   its records from there; what it has not taken by then (a partial
#   record; everything while the application's reading is paused) is
#   kept in a malloc'd buffer, read first next time.  Other writes
#   (feed_only, MemoryBIO.write) append to that buffer.
# * outgoing: _encrypt() lends a bytes object sized for the records of
#   one write; cut to length it goes to the raw transport as it is (or
#   waits in _cipher_q while that transport is paused).  Output with no
#   lent buffer (handshake, alerts, close_notify) or beyond it goes to the
#   owned buffer, in order, read as from a mem BIO.
# The callbacks run while _ssl has released the GIL: plain C only.

from ringline._net.ringbio cimport rb_state, rb_setup, rb_swap, rb_keep, rb_lend, rb_collect


cdef bint _ring_bio = True


def _set_ring_bio(bint on):
    """Tests: ring BIOs (above) for SSLProtocols made from now on, where
    direct BIO calls are in use and OpenSSL's BIO_meth_* were found.
    Returns whether they will be used."""
    global _ring_bio
    _ring_bio = on
    return _ring_bio and _bio_direct and ossl_ready(OSSL_BIO_METH) and rb_setup(&ossl) == 0


cdef inline bint _immutable(data):
    """data cannot change while it waits in the write backlog: a bytes,
    or a memoryview of one."""
    if PyBytes_CheckExact(data):
        return True
    return PyMemoryView_Check(data) and PyBytes_CheckExact(data.obj)


cdef tuple _flowcontrol_defaults(high, low, Py_ssize_t kb):
    """asyncio's high/low water defaults: high = kb KiB, low = high // 4;
    one given, the other follows; high >= low >= 0."""
    if high is None:
        hi = kb * 1024 if low is None else 4 * low
    else:
        hi = high
    lo = hi // 4 if low is None else low
    if not hi >= lo >= 0:
        raise ValueError(f"high ({hi!r}) must be >= low ({lo!r}) must be >= 0")
    return hi, lo


cdef inline SSLProtocol _proto(transport):
    # None once closed twice or lost, as asyncio's (an AttributeError then).
    p = transport._ssl_protocol
    if p is None:
        raise AttributeError("'NoneType' object has no attribute '_ssl_protocol'")
    return <SSLProtocol>p


class _SSLProtocolTransport(_aio_transports._FlowControlMixin, _aio_transports.Transport):
    """The transport the application sees over TLS (asyncio's class of the
    same name, same methods): every call goes to its ``SSLProtocol``."""

    _start_tls_compatible = True
    _sendfile_compatible = _aio_constants._SendfileMode.FALLBACK

    def __init__(self, loop, ssl_protocol):
        self._loop = loop
        self._ssl_protocol = ssl_protocol
        self._closed = False

    def get_extra_info(self, name, default=None):
        return _proto(self)._get_extra_info(name, default)

    def set_protocol(self, protocol):
        _proto(self)._set_app_protocol(protocol)

    def get_protocol(self):
        return _proto(self)._app_protocol

    def is_closing(self):
        return self._closed

    def close(self):
        if not self._closed:
            self._closed = True
            _proto(self)._start_shutdown()
        else:
            self._ssl_protocol = None

    def __del__(self, _warn=_warnings.warn):
        if not self._closed:
            self._closed = True
            _warn("unclosed transport <ringline._SSLProtocolTransport object>", ResourceWarning)

    def is_reading(self):
        return not _proto(self)._app_reading_paused

    def pause_reading(self):
        _proto(self)._app_reading_paused = True

    def resume_reading(self):
        _proto(self)._resume_reading()

    def set_write_buffer_limits(self, high=None, low=None):
        cdef SSLProtocol p = _proto(self)
        p._outgoing_high_water, p._outgoing_low_water = _flowcontrol_defaults(
            high, low, _aio_constants.FLOW_CONTROL_HIGH_WATER_SSL_WRITE)
        p._control_app_writing()

    def get_write_buffer_limits(self):
        cdef SSLProtocol p = _proto(self)
        return (p._outgoing_low_water, p._outgoing_high_water)

    def get_write_buffer_size(self):
        return _proto(self)._get_write_buffer_size()

    def set_read_buffer_limits(self, high=None, low=None):
        cdef SSLProtocol p = _proto(self)
        p._incoming_high_water, p._incoming_low_water = _flowcontrol_defaults(
            high, low, _aio_constants.FLOW_CONTROL_HIGH_WATER_SSL_READ)
        p._control_ssl_reading()

    def get_read_buffer_limits(self):
        cdef SSLProtocol p = _proto(self)
        return (p._incoming_low_water, p._incoming_high_water)

    def get_read_buffer_size(self):
        return _proto(self)._incoming.pending

    @property
    def _protocol_paused(self):
        # loop.sendfile()'s fallback reads it (pause_writing/resume_writing).
        return _proto(self)._app_writing_paused

    def write(self, data):
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data: expecting a bytes-like instance, "
                            f"got {type(data).__name__}")
        if not data:
            return
        _proto(self)._write_one(data)

    def writelines(self, list_of_data):
        _proto(self)._write_appdata(list_of_data)

    def write_eof(self):
        # TLS 1.2 and 1.3 have no half-close: close_notify ends both ways.
        raise NotImplementedError

    def can_write_eof(self):
        return False

    def abort(self):
        self._closed = True
        if self._ssl_protocol is not None:
            _proto(self)._abort()

    def _force_close(self, exc):
        self._closed = True
        _proto(self)._abort(exc)

    def _test__append_write_backlog(self, data):
        # asyncio's test hook (test_sslproto uses it).
        cdef SSLProtocol p = _proto(self)
        p._write_backlog.append(data)
        p._write_buffer_size += len(data)


cdef class SSLProtocol:
    """TLS over a transport through two MemoryBIOs: asyncio's SSLProtocol
    (the raw transport's protocol), compiled.  See the module docstring."""

    max_size = READ_MAX

    def __init__(self, loop, app_protocol, sslcontext, waiter,
                 server_side=False, server_hostname=None, call_connection_made=True,
                 ssl_handshake_timeout=None, ssl_shutdown_timeout=None):
        if ssl_handshake_timeout is None:
            ssl_handshake_timeout = _aio_constants.SSL_HANDSHAKE_TIMEOUT
        elif ssl_handshake_timeout <= 0:
            raise ValueError(f"ssl_handshake_timeout should be a positive number, "
                             f"got {ssl_handshake_timeout}")
        if ssl_shutdown_timeout is None:
            ssl_shutdown_timeout = _aio_constants.SSL_SHUTDOWN_TIMEOUT
        elif ssl_shutdown_timeout <= 0:
            raise ValueError(f"ssl_shutdown_timeout should be a positive number, "
                             f"got {ssl_shutdown_timeout}")
        if not sslcontext:
            if server_side:
                raise ValueError("Server side SSL needs a valid SSLContext")
            # ssl=True on a client: the default (verifying) context.
            sslcontext = _ssl.create_default_context()
            if not server_hostname:
                sslcontext.check_hostname = False
        self._server_side = server_side
        self._server_hostname = server_hostname if server_hostname and not server_side else None
        self._sslcontext = sslcontext
        self._extra = {"sslcontext": sslcontext}
        self._write_backlog = collections.deque()
        self._write_buffer_size = 0
        self._waiter = waiter
        self._loop = loop
        self._set_app_protocol(app_protocol)
        self._app_transport = None
        self._app_transport_created = False
        self._transport = None
        self._ssl_handshake_timeout = ssl_handshake_timeout
        self._ssl_shutdown_timeout = ssl_shutdown_timeout
        self._incoming = _ssl.MemoryBIO()
        self._outgoing = _ssl.MemoryBIO()
        if (_ring_bio and _bio_direct and ossl_ready(OSSL_BIO_METH)
                and rb_setup(&ossl) == 0):
            # Before wrap_bio: SSL_set_bio takes whatever BIO each holds.
            self._in_st = <void*>rb_swap(self._incoming, 0)
            self._out_st = <void*>rb_swap(self._outgoing, 1)
        self._state = UNWRAPPED
        self._conn_lost = 0
        self._app_state = STATE_INIT if call_connection_made else STATE_CON_MADE
        self._sslobj = sslcontext.wrap_bio(self._incoming, self._outgoing,
                                           server_side=server_side,
                                           server_hostname=self._server_hostname)
        # The C object under ssl.SSLObject: its read/write/pending are thin
        # Python wrappers, a frame per call on the data path.
        inner = getattr(self._sslobj, "_sslobj", self._sslobj)
        self._sslobj_read = inner.read
        self._sslobj_write = inner.write
        self._sslobj_pending = inner.pending
        self._incoming_write = self._incoming.write
        self._outgoing_read = self._outgoing.read
        if _bio_direct:
            self._in_bio = membio_bio(self._incoming)
            self._out_bio = membio_bio(self._outgoing)
            if ossl_ready(OSSL_SSLOBJ) and type(inner) is _SSLSocket:
                ssl = sslobj_ssl(inner)
                if (ssl != NULL and ossl.SSL_get_rbio(ssl) == self._in_bio
                        and ossl.SSL_get_wbio(ssl) == self._out_bio):
                    self._ssl = ssl
        self._incoming_high_water, self._incoming_low_water = _flowcontrol_defaults(
            None, None, _aio_constants.FLOW_CONTROL_HIGH_WATER_SSL_READ)
        self._outgoing_high_water, self._outgoing_low_water = _flowcontrol_defaults(
            None, None, _aio_constants.FLOW_CONTROL_HIGH_WATER_SSL_WRITE)
        self._get_app_transport()

    def _direct_calls(self):
        """Tests: (MemoryBIO calls direct, SSL_write direct) for this
        connection (see ringline._net.openssl)."""
        return self._in_bio != NULL, self._ssl != NULL

    def _ring_bios(self):
        """Tests: (incoming, outgoing) BIOs are ring BIOs."""
        return self._in_st != NULL, self._out_st != NULL

    # ---- the application side ----

    cdef _set_app_protocol(self, app_protocol):
        self._app_protocol = app_protocol
        self._app_is_buffered = (hasattr(app_protocol, "get_buffer")
                                 and isinstance(app_protocol, _BufferedProtocol))
        if self._app_is_buffered:
            self._app_get_buffer = app_protocol.get_buffer
            self._app_buffer_updated = app_protocol.buffer_updated
            self._app_data_received = None
        else:
            self._app_get_buffer = self._app_buffer_updated = None
            self._app_data_received = getattr(app_protocol, "data_received", None)
        self._app_stream = (not self._app_is_buffered
                            and getattr(type(app_protocol), "data_received", None)
                            is _SRP_data_received)
        self._app_stream_wr = (self._app_stream and _SRP_stream_reader is not None
                               and getattr(type(app_protocol), "_stream_reader", None)
                               is _SRP_stream_reader)

    cdef _wakeup_waiter(self, exc=None):
        if self._waiter is None:
            return
        if not self._waiter.cancelled():
            if exc is not None:
                self._waiter.set_exception(exc)
            else:
                self._waiter.set_result(None)
        self._waiter = None

    def _get_app_transport(self):
        if self._app_transport is None:
            if self._app_transport_created:
                raise RuntimeError("Creating _SSLProtocolTransport twice")
            self._app_transport = _SSLProtocolTransport(self._loop, self)
            self._app_transport_created = True
        return self._app_transport

    cdef _get_extra_info(self, name, default):
        if name in self._extra:
            return self._extra[name]
        if self._transport is not None:
            return self._transport.get_extra_info(name, default)
        return default

    # ---- the raw transport's protocol ----

    def connection_made(self, transport):
        self._transport = transport
        self._raw_write = transport.write
        self._start_handshake()

    def connection_lost(self, exc):
        self._write_backlog.clear()
        self._outgoing_read()
        self._cipher_q = None
        self._cipher_q_size = 0
        self._conn_lost += 1
        if self._app_transport is not None:
            # Closed for good: its __del__ must not warn.
            self._app_transport._closed = True
        if self._state != DO_HANDSHAKE:
            if self._app_state == STATE_CON_MADE or self._app_state == STATE_EOF:
                self._app_state = STATE_CON_LOST
                self._loop.call_soon(self._app_protocol.connection_lost, exc)
        self._state = UNWRAPPED
        self._transport = None
        self._raw_write = None
        self._app_transport = None
        self._app_protocol = None
        self._app_data_received = self._app_get_buffer = self._app_buffer_updated = None
        self._fast_reader = None
        self._wakeup_waiter(exc)
        if self._shutdown_timeout_handle is not None:
            self._shutdown_timeout_handle.cancel()
            self._shutdown_timeout_handle = None
        if self._handshake_timeout_handle is not None:
            self._handshake_timeout_handle.cancel()
            self._handshake_timeout_handle = None

    # A raw transport other than ringline's (asyncio's start_tls over any
    # transport) may treat us as a BufferedProtocol.
    def get_buffer(self, n):
        cdef Py_ssize_t want = n
        if want <= 0 or want > READ_MAX:
            want = READ_MAX
        if self._raw_buffer is None or len(self._raw_buffer) < want:
            self._raw_buffer = bytearray(want)
        return memoryview(self._raw_buffer)

    def buffer_updated(self, nbytes):
        self._incoming_write(memoryview(self._raw_buffer)[:nbytes])
        self._after_incoming()

    def data_received(self, data):
        self._incoming_write(data)
        self._after_incoming()

    cdef int feed(self, const char *p, Py_ssize_t n) except -1:
        """Ciphertext from the ring's receive buffer (valid for this call
        only): lent to the ring BIO while it is processed, what is left of
        it then kept; or copied into the incoming MemoryBIO first."""
        cdef rb_state *st = <rb_state*>self._in_st
        if st == NULL or n <= 0 or membio_eof(self._incoming) or st.lent_len:
            self._in_write(p, n)        # (re-entered: after what is lent, see there)
            self._after_incoming()
            return 0
        st.lent = p
        st.lent_len = <size_t>n
        try:
            self._after_incoming()
        finally:
            if rb_keep(st) < 0:
                raise MemoryError("TLS: no memory for undecrypted ciphertext")
        return 0

    cdef int feed_only(self, const char *p, Py_ssize_t n) except -1:
        """Ciphertext that was in flight when the raw transport paused:
        into the BIO now (one copy, as feed), processed at the next read."""
        self._in_write(p, n)
        return 0

    cdef int _in_write(self, const char *p, Py_ssize_t n) except -1:
        """MemoryBIO.write of n bytes at p into the incoming BIO."""
        cdef rb_state *st = <rb_state*>self._in_st
        if st != NULL and st.lent_len and rb_keep(st) < 0:
            # (Bytes lent by a feed() still running: kept first, in order.)
            raise MemoryError("TLS: no memory for undecrypted ciphertext")
        if (self._in_bio != NULL and 0 < n <= INT_MAX
                and not membio_eof(self._incoming)
                and ossl.BIO_write(self._in_bio, <void*>p, <int>n) == n):
            return 0
        # (All or nothing: a failed BIO_write took nothing.)  The ssl
        # module's call, with its errors (after write_eof, out of memory).
        self._incoming_write(PyMemoryView_FromMemory(<char*>p, n, PyBUF_READ))
        return 0

    cdef inline Py_ssize_t _in_pending(self) except -1:
        if self._in_bio != NULL:
            return <Py_ssize_t>ossl.BIO_ctrl_pending(self._in_bio)
        return self._incoming.pending

    cdef inline Py_ssize_t _out_pending(self) except -1:
        if self._out_bio != NULL:
            return <Py_ssize_t>ossl.BIO_ctrl_pending(self._out_bio)
        return self._outgoing.pending

    cdef inline Py_ssize_t _out_queued(self) except -1:
        """Ciphertext not yet given to the raw transport: the outgoing
        BIO's and _cipher_q's."""
        return self._out_pending() + self._cipher_q_size

    cdef bytes _out_read(self, Py_ssize_t n):
        """MemoryBIO.read(n) of the outgoing BIO, 0 < n <= its pending."""
        cdef int got
        if self._out_bio == NULL or n > INT_MAX:
            return self._outgoing_read(n)
        data = PyBytes_FromStringAndSize(NULL, n)
        got = ossl.BIO_read(self._out_bio, PyBytes_AS_STRING(data), <int>n)
        if got == n:
            return data
        # Not expected of a memory BIO holding n bytes: the rest through
        # the ssl module (its error if there is one).
        return data[:got] + self._outgoing_read(n - got) if got > 0 else self._outgoing_read(n)

    cdef _after_incoming(self):
        cdef State st = self._state
        if st == WRAPPED:
            self._do_read()
        elif st == DO_HANDSHAKE:
            self._do_handshake()
        elif st == FLUSHING:
            self._do_flush()
        elif st == SHUTDOWN:
            self._do_shutdown()

    def eof_received(self):
        cdef State st = self._state
        self._eof_received = True
        try:
            if self._loop.get_debug():
                _logger.debug("%r received EOF", self)
            if st == DO_HANDSHAKE:
                self._on_handshake_complete(ConnectionResetError)
            elif st == WRAPPED:
                self._state = FLUSHING
                if self._app_reading_paused:
                    return True
                self._do_flush()
            elif st == FLUSHING:
                self._do_write()
                self._state = SHUTDOWN
                self._do_shutdown()
            elif st == SHUTDOWN:
                self._do_shutdown()
        except Exception:
            self._transport.close()
            raise

    # The raw transport's write-flow control.

    def pause_writing(self):
        self._ssl_writing_paused = True

    def resume_writing(self):
        self._ssl_writing_paused = False
        try:
            if self._write_backlog and self._state == WRAPPED:
                # What waited while the transport was full (_do_write's lazy
                # stop): encrypted now, as the transport drains.
                self._flush_outgoing()
                self._do_write(True)
            self._process_outgoing()
        except Exception as ex:
            self._fatal_error(ex, "Fatal error on SSL protocol")

    # ---- handshake ----

    cdef _start_handshake(self):
        if self._loop.get_debug():
            _logger.debug("%r starts SSL handshake", self)
            self._handshake_start_time = self._loop.time()
        else:
            self._handshake_start_time = None
        if self._state != UNWRAPPED:
            raise RuntimeError(f"cannot switch state from {self._state} to DO_HANDSHAKE")
        self._state = DO_HANDSHAKE
        self._handshake_timeout_handle = self._loop.call_later(
            self._ssl_handshake_timeout, self._check_handshake_timeout)
        self._do_handshake()

    def _check_handshake_timeout(self):
        if self._state == DO_HANDSHAKE:
            self._fatal_error(ConnectionAbortedError(
                f"SSL handshake is taking longer than {self._ssl_handshake_timeout} "
                f"seconds: aborting the connection"))

    cdef _do_handshake(self):
        try:
            self._sslobj.do_handshake()
        except _SSLAgainErrors:
            self._process_outgoing()
        except _SSLError as exc:
            self._on_handshake_complete(exc)
        else:
            self._on_handshake_complete(None)

    cdef _on_handshake_complete(self, handshake_exc):
        if self._handshake_timeout_handle is not None:
            self._handshake_timeout_handle.cancel()
            self._handshake_timeout_handle = None
        sslobj = self._sslobj
        try:
            if handshake_exc is not None:
                raise handshake_exc
            self._state = WRAPPED
            peercert = sslobj.getpeercert()
        except Exception as exc:
            self._state = UNWRAPPED
            if isinstance(exc, _CertificateError):
                msg = "SSL handshake failed on verifying the certificate"
            else:
                msg = "SSL handshake failed"
            self._fatal_error(exc, msg)
            self._wakeup_waiter(exc)
            return
        if self._loop.get_debug():
            dt = self._loop.time() - self._handshake_start_time
            _logger.debug("%r: SSL handshake took %.1f ms", self, dt * 1e3)
        self._extra.update(peercert=peercert, cipher=sslobj.cipher(),
                           compression=sslobj.compression(), ssl_object=sslobj)
        if self._app_state == STATE_INIT:
            self._app_state = STATE_CON_MADE
            self._app_protocol.connection_made(self._get_app_transport())
        self._wakeup_waiter()
        self._do_read()

    # ---- shutdown ----

    cdef _start_shutdown(self):
        if self._state == FLUSHING or self._state == SHUTDOWN or self._state == UNWRAPPED:
            return
        if self._app_transport is not None:
            self._app_transport._closed = True
        if self._state == DO_HANDSHAKE:
            self._abort()
        else:
            self._state = FLUSHING
            self._shutdown_timeout_handle = self._loop.call_later(
                self._ssl_shutdown_timeout, self._check_shutdown_timeout)
            self._do_flush()

    def _check_shutdown_timeout(self):
        if self._state == FLUSHING or self._state == SHUTDOWN:
            self._transport._force_close(_aio_exceptions.TimeoutError("SSL shutdown timed out"))

    cdef _do_flush(self):
        self._do_read()
        if self._write_backlog and self._state == FLUSHING:
            # What waited unencrypted (_do_write's lazy stop) goes before the
            # close_notify even when the application's reading is paused
            # (then _do_read encrypted nothing).
            try:
                self._do_write()
                self._process_outgoing()
            except Exception as ex:
                self._fatal_error(ex, "Fatal error on SSL protocol")
        self._state = SHUTDOWN
        self._do_shutdown()

    cdef _do_shutdown(self):
        try:
            if not self._eof_received:
                self._sslobj.unwrap()
        except _SSLAgainErrors:
            self._process_outgoing()
        except _SSLError as exc:
            self._on_shutdown_complete(exc)
        else:
            self._process_outgoing()
            self._call_eof_received()
            self._on_shutdown_complete(None)

    cdef _on_shutdown_complete(self, shutdown_exc):
        if self._shutdown_timeout_handle is not None:
            self._shutdown_timeout_handle.cancel()
            self._shutdown_timeout_handle = None
        if shutdown_exc:
            self._fatal_error(shutdown_exc)
        else:
            self._loop.call_soon(self._transport.close)

    cpdef _abort(self, exc=None):
        self._state = UNWRAPPED
        if self._transport is not None:
            if exc is None:
                self._transport.abort()
            else:
                self._transport._force_close(exc)

    # ---- outgoing ----

    cdef _write_appdata(self, list_of_data):
        cdef State st = self._state
        if st == FLUSHING or st == SHUTDOWN or st == UNWRAPPED:
            if self._conn_lost >= LOG_THRESHOLD:
                _logger.warning("SSL connection is closed")
            self._conn_lost += 1
            return
        for data in list_of_data:
            if self._write_backlog and not _immutable(data):
                # Behind data that may wait unencrypted (_do_write's lazy
                # stop): a buffer the caller may change is taken now, as
                # asyncio's write (which encrypts it at once) takes it.
                data = bytes(data)
            self._write_backlog.append(data)
            self._write_buffer_size += len(data)
        try:
            if st == WRAPPED:
                self._do_write(True)
                self._process_outgoing()
        except Exception as ex:
            self._fatal_error(ex, "Fatal error on SSL protocol")

    cdef _write_one(self, data):
        """write(data): encrypted at once when nothing waits before it and
        the raw transport has room.  While it is full, data that cannot
        change (bytes) waits in the backlog and is encrypted as it drains
        (resume_writing): the ciphertext is then still in cache when the
        kernel copies it, instead of waiting (cold) in the BIO or
        _cipher_q; a buffer the caller may change is encrypted at once."""
        cdef State st = self._state
        if (st != WRAPPED or self._write_backlog
                or (self._ssl_writing_paused and _immutable(data))):
            self._write_appdata((data,))
            return
        cdef Py_ssize_t n = len(data), off = 0, end
        try:
            if n <= CHUNK:
                # OpenSSL is not in partial-write mode: a memory BIO takes
                # all of it, or the call raises.
                off = self._encrypt(data)
            else:
                # A large write: encrypted CHUNK at a time, each piece
                # flushed while it is in cache.  Once the raw transport is
                # full, the rest of a bytes (which cannot change) waits in
                # the backlog and is encrypted as the transport drains
                # (resume_writing): the outgoing BIO stays one piece long
                # instead of growing to the size of the write.
                lazy = PyBytes_CheckExact(data)
                view = memoryview(data)
                while off < n:
                    if lazy and self._ssl_writing_paused:
                        break
                    end = off + CHUNK if n - off > CHUNK else n
                    off += self._encrypt(view[off:end])
                    if not self._ssl_writing_paused:
                        self._flush_outgoing()
        except _SSLAgainErrors:
            pass            # a renegotiation wants to read first
        except Exception as ex:
            self._fatal_error(ex, "Fatal error on SSL protocol")
            return
        if off < n:
            # What OpenSSL did not take waits in the backlog.
            self._write_backlog.append(memoryview(data)[off:] if off else data)
            self._write_buffer_size += n - off
        try:
            self._process_outgoing()
        except Exception as ex:
            self._fatal_error(ex, "Fatal error on SSL protocol")

    cdef _do_write(self, bint lazy=False):
        """Encrypt the backlog into the outgoing BIO, CHUNK at a time, each
        piece flushed to the raw transport while it is not paused: all of
        it (unless a renegotiation wants to read first), or with ``lazy``
        until the raw transport is full and the next item cannot change
        (bytes): the rest is encrypted on resume_writing."""
        cdef Py_ssize_t count, n
        backlog = self._write_backlog
        try:
            while backlog:
                data = backlog[0]
                if lazy and self._ssl_writing_paused and _immutable(data):
                    break
                n = len(data)
                if n > CHUNK:
                    count = self._encrypt(memoryview(data)[:CHUNK])
                else:
                    count = self._encrypt(data)
                if not self._ssl_writing_paused:
                    self._flush_outgoing()
                if count < n:
                    backlog[0] = memoryview(data)[count:]
                    self._write_buffer_size -= count
                else:
                    backlog.popleft()
                    self._write_buffer_size -= n
        except _SSLAgainErrors:
            pass

    cdef Py_ssize_t _encrypt(self, data) except -1:
        """_ssl_write(data) (at most CHUNK bytes).  With the ring BIO the
        records go straight into a bytes object sized for them, which the
        raw transport then takes as it is (_emit); else into the outgoing
        MemoryBIO, for _flush_outgoing."""
        cdef rb_state *st = <rb_state*>self._out_st
        cdef Py_buffer view
        cdef Py_ssize_t n, count
        if st == NULL:
            return self._ssl_write(data)
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        n = view.len
        PyBuffer_Release(&view)
        lent = rb_lend(st, n)
        try:
            count = self._ssl_write(data)
        finally:
            # What was encrypted leaves, in order, even when the write failed.
            self._emit(rb_collect(st, lent))
        return count

    cdef _emit(self, bytes out):
        """Ciphertext to the raw transport, or, while it is paused, to
        _cipher_q (counted as the outgoing BIO's: _out_queued), which
        _flush_outgoing empties first."""
        if PyBytes_GET_SIZE(out) == 0:
            return
        if self._cipher_q is None and not self._ssl_writing_paused:
            self._raw_write(out)
            return
        if self._cipher_q is None:
            self._cipher_q = collections.deque()
        self._cipher_q.append(out)
        self._cipher_q_size += PyBytes_GET_SIZE(out)

    cdef Py_ssize_t _ssl_write(self, data) except -1:
        """SSLObject.write(data) (at most CHUNK bytes): the count written,
        all of it (OpenSSL is not in partial-write mode).  SSL_write_ex is
        called directly when allowed (no argument parsing, no GIL release
        around 100 bytes of AES); when it fails, the ssl module's write is
        called to raise its own error: SSL_write does not change the
        connection's state when it fails, so it fails the same way again
        (checked: SSLWantReadError when a renegotiation wants to read
        first; SSLZeroReturnError after a fatal alert came, SSLEOFError
        after one was sent)."""
        cdef Py_buffer view
        cdef size_t written = 0
        cdef int ret
        if self._ssl == NULL:
            return self._sslobj_write(data)
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            if view.len <= 0:
                return self._sslobj_write(data)
            ret = ossl.SSL_write_ex(self._ssl, view.buf, <size_t>view.len, &written)
        finally:
            PyBuffer_Release(&view)
        if ret == 1:
            return <Py_ssize_t>written
        # The ssl module's call starts from the error queue this one found.
        ossl.ERR_clear_error()
        return self._sslobj_write(data)

    cdef Py_ssize_t _ssl_read(self, char *buf, Py_ssize_t n) except -2:
        """SSLObject.read(n, buffer) into the n bytes at buf: the count read
        (> 0), 0 at the peer's close_notify, -1 when nothing can be read
        yet (where the ssl module's read raises SSLWantReadError, which it
        still may: callers catch both).  SSL_read_ex is called directly when
        allowed (no argument parsing, no memoryview, no GIL release, no
        exception per partial record).  When it fails otherwise than
        wanting more bytes, the ssl module's read is called to return its 0
        or raise its own error: the failed SSL_read left the SSL in the
        state that made it fail, and the reason on OpenSSL's error queue,
        where that call finds it (the same exception, same message: see
        tests/aio/test_tls_direct.py)."""
        cdef size_t count = 0
        cdef int ret
        if self._ssl != NULL and 0 < n <= INT_MAX:
            ret = ossl.SSL_read_ex(self._ssl, buf, <size_t>n, &count)
            if ret == 1:
                return <Py_ssize_t>count
            if ossl.SSL_get_error(self._ssl, ret) == SSL_ERROR_WANT_READ:
                return -1
        return self._sslobj_read(n, PyMemoryView_FromMemory(buf, n, PyBUF_WRITE))

    cdef _process_outgoing(self):
        """Ciphertext to the raw transport, then the application's flow control."""
        cdef Py_ssize_t left
        if not self._ssl_writing_paused:
            left = self._flush_outgoing()
        else:
            left = self._out_queued()
        # _control_app_writing with the BIO's size already known (each
        # MemoryBIO.pending is an attribute lookup and a call).
        self._control_app_writing_size(left + self._write_buffer_size)

    cdef Py_ssize_t _flush_outgoing(self) except -1:
        """The outgoing BIO to the raw transport: all of it in one write
        when it is small (the common case), else CHUNK at a time until the
        transport asks to pause (what is left then waits in the BIO and
        counts against the application's write buffer, as on asyncio).
        The ring gathers the writes of one loop pass into one sendmsg.
        Ciphertext that waited in _cipher_q goes first.  Returns what is
        left (_out_queued)."""
        cdef Py_ssize_t n
        q = self._cipher_q
        if q is not None:
            while q:
                if self._ssl_writing_paused:
                    return self._out_queued()
                out = q.popleft()
                self._cipher_q_size -= PyBytes_GET_SIZE(out)
                self._raw_write(out)
            self._cipher_q = None
            if self._ssl_writing_paused:
                return self._out_pending()
        n = self._out_pending()
        while n > 0:
            if n <= CHUNK:
                # All of it: the BIO is empty after it (only this object's
                # own calls into OpenSSL fill it).
                self._raw_write(self._out_read(n))
                return 0
            self._raw_write(self._out_read(CHUNK))
            if self._ssl_writing_paused:
                return n - CHUNK
            n = self._out_pending()
        return 0

    # ---- incoming ----

    cdef _do_read(self):
        if self._state != WRAPPED and self._state != FLUSHING:
            return
        self._in_drained = False
        try:
            if not self._app_reading_paused:
                if self._app_is_buffered:
                    self._do_read_buffered()
                else:
                    self._do_read_copied()
                if self._write_backlog:
                    self._do_write(self._state == WRAPPED)
                self._process_outgoing()
            if not self._in_drained or self._ssl_reading_paused:
                # (A read saw the incoming BIO empty: below the high water,
                # nothing to do unless reading is paused.)
                self._control_ssl_reading()
        except Exception as ex:
            self._fatal_error(ex, "Fatal error on SSL protocol")

    cdef Py_ssize_t _readable(self) except -1:
        """An upper bound of the plaintext one read can return now (0: ask
        nothing, a read would raise SSLWantReadError)."""
        cdef Py_ssize_t n = self._in_pending()
        # Undecrypted bytes: at least as many as their plaintext.  Plaintext
        # OpenSSL already holds (a record only partly read) is asked for
        # only when the BIO is empty; otherwise a short estimate just costs
        # the readers one more pass.
        return n if n > 0 else <Py_ssize_t>self._sslobj_pending()

    cdef bint _more(self, Py_ssize_t count, Py_ssize_t asked) except -1:
        """After a read that returned ``count`` of ``asked`` bytes: can the
        next read return anything?  A read that did not fill its buffer took
        a whole record (SSL_read returns at most one), so OpenSSL holds no
        plaintext: only undecrypted bytes count then (one lookup, not two)."""
        if count < asked:
            if self._in_pending() > 0:
                return True
            self._in_drained = True
            return False
        return self._readable() > 0

    cdef _do_read_buffered(self):
        cdef Py_ssize_t want, wants, ask, offset = 0, count = -1
        cdef Py_buffer pybuf
        want = self._readable()
        if want <= 0:
            return
        buf = self._app_get_buffer(want + 256 if want < READ_MAX else READ_MAX)
        PyObject_GetBuffer(buf, &pybuf, PyBUF_WRITABLE)
        wants = pybuf.len
        try:
            if wants == 0:
                raise RuntimeError("get_buffer() returned an empty buffer")
            while True:
                ask = wants - offset
                count = self._ssl_read(<char*>pybuf.buf + offset, ask)
                if count <= 0:
                    break
                offset += count
                if offset >= wants:
                    # The buffer is full: the rest on the next iteration.
                    self._loop.call_soon(self._do_read_soon)
                    break
                if not self._more(count, ask):
                    break
        except _SSLAgainErrors:
            pass
        finally:
            PyBuffer_Release(&pybuf)
        if offset > 0:
            self._app_buffer_updated(offset)
        if count == 0:
            # close_notify
            self._call_eof_received()
            self._start_shutdown()

    def _do_read_soon(self):
        self._do_read()

    cdef _do_read_copied(self):
        """Decrypt what is there straight into one bytes object per pass,
        record after record (SSL_read gives one record per call), and hand
        it to data_received: no chunk list to join."""
        cdef Py_ssize_t want, got, count
        cdef bint eof = False
        cdef PyObject *raw
        cdef bytes first
        while not eof and not self._app_reading_paused and (
                self._state == WRAPPED or self._state == FLUSHING):
            want = self._readable()
            if want <= 0:
                break
            if want > READ_MAX:
                want = READ_MAX
            got = 0
            if self._app_stream:
                got = self._read_into_reader(want, &eof)
                if got >= 0:
                    if got < want:
                        break       # nothing more was readable
                    continue
                got = 0             # not this reader: the general path
            if want <= SMALL_READ and self._ssl == NULL:
                # Likely one record (a request, a reply): OpenSSL's read
                # makes the bytes itself, the cheapest call for it.
                try:
                    first = self._sslobj_read(want)
                except _SSLAgainErrors:
                    break
                got = len(first)
                if got == 0:
                    eof = True
                    break
                if not self._more(got, want):
                    self._app_data_received(first)
                    break
                # More records behind it: gather them after it, below.
            data = PyBytes_FromStringAndSize(NULL, want)
            # Written only here, before anyone else sees the object.
            if got:
                memcpy(PyBytes_AS_STRING(data), PyBytes_AS_STRING(first), got)
                first = None
            try:
                while got < want:
                    count = self._ssl_read(PyBytes_AS_STRING(data) + got, want - got)
                    if count < 0:
                        break               # (SSLWantReadError)
                    if count == 0:
                        eof = True          # close_notify
                        break
                    got += count
                    if not self._more(count, want - got + count):
                        break
            except _SSLAgainErrors:
                pass
            if got == 0:
                break
            if got < want:
                raw = <PyObject*>data
                Py_INCREF(data)
                data = None
                data = bytes_resize_stolen(raw, got)
            self._app_data_received(data)
            if got < want:
                break               # nothing more was readable
        if eof:
            self._call_eof_received()
            self._start_shutdown()

    cdef Py_ssize_t _read_into_reader(self, Py_ssize_t want, bint *eof) except -2:
        """For asyncio's own StreamReaderProtocol and StreamReader: decrypt
        up to ``want`` bytes straight onto the end of the reader's buffer,
        where ``feed_data`` would copy them from a bytes (one copy and one
        allocation fewer), then the rest of ``feed_data``: wake the reader,
        pause the transport past twice its limit.  Returns the count read
        (``eof[0]`` set at close_notify), or -1 when this reader cannot be
        fed so (none, a subclass's feed_data, at EOF, its buffer exported):
        the caller takes the general path, through ``data_received``."""
        cdef Py_ssize_t old, got = 0, count, ask
        if self._app_stream_wr:
            # asyncio's _stream_reader property, without its Python frame.
            wr = self._app_protocol._stream_reader_wr
            if wr is None or not PyWeakref_CheckRef(wr):
                return -1
            reader = wr()
            if reader is None:
                return -1
        else:
            reader = self._app_protocol._stream_reader
        if reader is not self._fast_reader:
            if reader is None or getattr(type(reader), "feed_data", None) is not _SR_feed_data:
                return -1
            # Checked once per reader: its class's feed_data is asyncio's,
            # and whether its _wakeup_waiter is too (then inlined below).
            self._fast_reader = reader
            self._fast_wakeup = (getattr(type(reader), "_wakeup_waiter", None)
                                 is _SR_wakeup_waiter)
        try:
            buf = reader._buffer
            if reader._eof or not PyByteArray_CheckExact(buf):
                return -1
        except AttributeError:
            return -1               # another Python's StreamReader internals
        old = PyByteArray_GET_SIZE(buf)
        try:
            PyByteArray_Resize(buf, old + want)
        except BufferError:
            return -1               # a memoryview of it is alive: not resizable
        try:
            while got < want:
                ask = want - got
                # Into the bytearray's own memory (no export: nothing runs
                # that could resize it meanwhile).
                count = self._ssl_read(PyByteArray_AS_STRING(buf) + old + got, ask)
                if count < 0:
                    break           # (SSLWantReadError)
                if count == 0:
                    eof[0] = True   # close_notify
                    break
                got += count
                if not self._more(count, ask):
                    break
        except _SSLAgainErrors:
            pass
        except BaseException:
            PyByteArray_Resize(buf, old)    # as the general path: nothing delivered
            raise
        PyByteArray_Resize(buf, old + got)
        if got:
            if self._fast_wakeup:
                # StreamReader._wakeup_waiter, inlined.
                waiter = reader._waiter
                if waiter is not None:
                    reader._waiter = None
                    if not waiter.cancelled():
                        waiter.set_result(None)
            else:
                reader._wakeup_waiter()
            reader_fed(reader, old + got)
        return got

    cdef _call_eof_received(self):
        try:
            if self._app_state == STATE_CON_MADE:
                self._app_state = STATE_EOF
                keep_open = self._app_protocol.eof_received()
                if keep_open:
                    _logger.warning("returning true from eof_received() "
                                    "has no effect when using ssl")
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as ex:
            self._fatal_error(ex, "Error calling eof_received()")

    # ---- flow control ----

    cdef _control_app_writing(self):
        self._control_app_writing_size(self._get_write_buffer_size())

    cdef _control_app_writing_size(self, Py_ssize_t size):
        if size >= self._outgoing_high_water and not self._app_writing_paused:
            self._app_writing_paused = True
            self._call_app("pause_writing")
        elif size <= self._outgoing_low_water and self._app_writing_paused:
            self._app_writing_paused = False
            self._call_app("resume_writing")

    cdef _call_app(self, str name):
        try:
            getattr(self._app_protocol, name)()
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            self._loop.call_exception_handler({
                "message": f"protocol.{name}() failed",
                "exception": exc,
                "transport": self._app_transport,
                "protocol": self,
            })

    cdef Py_ssize_t _get_write_buffer_size(self) except -1:
        return self._out_queued() + self._write_buffer_size

    cdef _resume_reading(self):
        if self._app_reading_paused:
            self._app_reading_paused = False
            self._loop.call_soon(self._resume)

    def _resume(self):
        if self._state == WRAPPED:
            self._do_read()
        elif self._state == FLUSHING:
            self._do_flush()
        elif self._state == SHUTDOWN:
            self._do_shutdown()

    cdef _control_ssl_reading(self):
        cdef Py_ssize_t size = self._in_pending()
        if size >= self._incoming_high_water and not self._ssl_reading_paused:
            self._ssl_reading_paused = True
            self._transport.pause_reading()
        elif size <= self._incoming_low_water and self._ssl_reading_paused:
            self._ssl_reading_paused = False
            self._transport.resume_reading()

    # ---- errors ----

    cdef _fatal_error(self, exc, message="Fatal error on transport"):
        if self._transport:
            self._transport._force_close(exc)
        if isinstance(exc, OSError):
            if self._loop.get_debug():
                _logger.debug("%r: %s", self, message, exc_info=True)
        elif not isinstance(exc, _CancelledError):
            self._loop.call_exception_handler({
                "message": message,
                "exception": exc,
                "transport": self._transport,
                "protocol": self,
            })


def ktls_status():
    """Whether kernel TLS can be used here, and why not: ``(ok, reason)``.

    Kernel TLS needs three things: the kernel's ``tls`` upper-layer protocol
    (``/proc/sys/net/ipv4/tcp_available_ulp`` lists ``tls``; the ``tls``
    module loaded or built in), an OpenSSL 3 that hands the session keys to
    the socket (``SSL_OP_ENABLE_KTLS``; Python exposes it as
    ``ssl.OP_ENABLE_KTLS`` from 3.12), and OpenSSL driving the socket itself:
    OpenSSL enables kernel TLS only on a socket BIO, never over the
    MemoryBIO pair this transport runs on.
    """
    try:
        with open("/proc/sys/net/ipv4/tcp_available_ulp") as f:
            ulps = f.read().split()
    except OSError as exc:
        return False, f"no TCP upper-layer protocols listed ({exc.strerror})"
    if "tls" not in ulps:
        return False, ("the kernel has no 'tls' TCP upper-layer protocol "
                       f"(tcp_available_ulp: {' '.join(ulps) or 'none'}; "
                       "CONFIG_TLS off or the tls module not loaded)")
    if not hasattr(_ssl, "OP_ENABLE_KTLS"):
        return False, "this Python's ssl module has no OP_ENABLE_KTLS (3.12+)"
    return False, ("OpenSSL enables kernel TLS only on a socket BIO, not over "
                   "MemoryBIO: not implemented")
