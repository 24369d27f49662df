# cython: language_level=3, boundscheck=False, wraparound=False
"""TLS on the native face: ``serve(..., ssl=)`` and ``connect(..., ssl=)``.

Shape.  A ``TLSLayer`` is a hook object a ``Connection`` holds in its
``tls`` field, not a subclass of it: ``Connection`` stays one final class
whose fields live in its own module (no .pxd to share, no virtual call added
to the plain path), and the plain path pays one ``is None`` test per receive
and per send.  ``connection.attach_tls`` ties the two together.

Data path (stdlib ``ssl`` over two ``ssl.MemoryBIO``; no other crypto):

* ciphertext in: each receive CQE's bytes, as a pointer into the ring's
  provided buffer, go into the incoming BIO (the one copy into OpenSSL; the
  buffer goes back to the kernel at once); then OpenSSL decrypts record
  after record into a scratch buffer (``SSLObject.read`` into a view, no
  ``bytes`` per record) and ``Connection.on_plain`` copies the plaintext
  into the same accumulator/``head`` that ``recv``/``recv_exactly``/
  ``with_data`` read on a plain connection: the same receive semantics and
  receive backpressure (reading pauses at ``recv_accumulator_limit``).
  Every receive is decrypted until OpenSSL asks for more (a CQE can end
  mid-record, or hold many), so no ciphertext waits in the BIO unseen;
* plaintext out: ``send``/``send_nowait``/``send_parts`` encrypt at once
  (``send_parts`` as one write) into the outgoing BIO, whose whole content
  becomes one ``bytes`` queued on the stream's ordinary send queue (pinned,
  not copied again).  So ciphertext keeps call order, shares the one-send-
  in-flight rule with everything else, and the stream gathers what a loop
  pass queued into one SEND/SENDMSG.  ``queued``/``drain()`` count
  ciphertext bytes (a few percent above the plaintext); a ``send`` future
  resolves with the plaintext byte count once the kernel took the record.
  Large writes are encrypted ``CHUNK`` at a time so the BIO stays small.

States::

    HANDSHAKE -> OPEN -> CLOSING (close(): close_notify queued) -> DONE
        |                                                           ^
        +--> FAILED (bad peer, alert, timeout, EOF, closed) --------+

The handshake starts when the layer is attached (a client writes its
ClientHello) and is bounded by ``Config.tls_handshake_timeout``;
``handshake`` is the Future the serving side and ``connect`` wait on.  A
failure becomes ``TLSHandshakeError`` (``TLSCertificateError`` for a
certificate that did not verify, ``TLSHandshakeTimeout``), counted in
``NetState.tls_handshake_failures``; a success in ``tls_handshakes``.
``close()`` queues close_notify behind the queued sends and arms
``Config.tls_shutdown_timeout``: if the stream has not closed by then (a
peer that does not read), it is aborted.  The peer's close_notify, and a
bare FIN after the handshake, are end of stream for ``recv``.

Kernel TLS.  ``Config.ktls`` is honoured as on the asyncio face: OpenSSL
hands keys to the kernel only for a socket BIO, never over MemoryBIO, and
this kernel has no ``tls`` upper-layer protocol
(``ringline.aio.tls.ktls_status()`` says why), so native TLS runs in
userspace here; ``ktls=True`` is not an error, it falls back the same way.
"""
import ssl as _ssl

from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.bytes cimport PyBytes_CheckExact, PyBytes_GET_SIZE
from cpython.memoryview cimport PyMemoryView_FromMemory
from cpython.buffer cimport PyBUF_READ, PyBuffer_FillInfo

from ringline._net.stream cimport Stream, Chunk, S_CLOSED
from ringline._tls import info_from, typed_handshake_error as _typed
from ringline.errors import ConnectionClosed

cdef object _SSLWantRead = _ssl.SSLWantReadError
cdef object _SSLAgain = (_ssl.SSLWantReadError, _ssl.SSLSyscallError)
cdef object _MemoryBIO = _ssl.MemoryBIO
cdef object _ZeroReturn = _ssl.SSLZeroReturnError
cdef object _SCRATCH_LEN = 64 * 1024      # SCRATCH as a Python int, made once

cdef enum:
    SCRATCH = 64 * 1024     # plaintext gathered per on_plain call
    CHUNK = 256 * 1024      # plaintext encrypted per outgoing BIO read

# TLSLayer.state
cdef enum:
    T_HANDSHAKE = 0
    T_OPEN = 1
    T_CLOSING = 2
    T_FAILED = 3
    T_DONE = 4


cdef class _Span:
    """A read-only buffer over memory we own for the duration of one call
    (see tls.pxd); refuses to be re-pointed while exported."""

    def __getbuffer__(self, Py_buffer *view, int flags):
        PyBuffer_FillInfo(view, self, <void*>self.ptr, self.length, 1, flags)
        self.exports += 1

    def __releasebuffer__(self, Py_buffer *view):
        self.exports -= 1


cdef class TLSLayer:
    """The TLS state of one native connection (see the module docstring)."""

    def __init__(self, Stream conn, ctx, bint server_side, server_hostname,
                 double handshake_timeout, double close_timeout):
        if not isinstance(ctx, _ssl.SSLContext):
            raise TypeError(f"ssl= needs an ssl.SSLContext, got {type(ctx).__name__}")
        self.conn = conn
        self.server_side = server_side
        self.incoming = _MemoryBIO()
        self.outgoing = _MemoryBIO()
        self.sslobj = ctx.wrap_bio(self.incoming, self.outgoing, server_side=server_side,
                                   server_hostname=None if server_side else server_hostname)
        # The C object under ssl.SSLObject: its Python wrappers cost a frame a call.
        inner = getattr(self.sslobj, "_sslobj", self.sslobj)
        self._read = inner.read
        self._write = inner.write
        self._pending = inner.pending
        self._in_write = self.incoming.write
        self.span = _Span.__new__(_Span)
        self._out_read = self.outgoing.read
        self.handshake = conn.loop.create_future()
        self.handshake_timeout = handshake_timeout
        self.close_timeout = close_timeout
        self.state = T_HANDSHAKE

    cdef int begin(self) except -1:
        """Start the handshake (attach_tls calls it): arm its timeout; a
        client sends its ClientHello now."""
        self.timer = self.conn.loop.call_later(self.handshake_timeout, self._handshake_expired)
        if not self.server_side:
            self._handshake_step()
        return 0

    def _handshake_expired(self):
        self.timer = None
        if self.state == T_HANDSHAKE:
            self._fail(TimeoutError(
                f"TLS handshake did not finish within {self.handshake_timeout:g} s "
                f"(Config.tls_handshake_timeout)"))

    # ---- incoming ----

    cdef int feed(self, const char *p, Py_ssize_t n) except -1:
        """Ciphertext from a receive CQE (Connection.on_data)."""
        if self.state != T_OPEN and self.state != T_HANDSHAKE:
            return 0        # closing or failed: nothing more is read
        cdef _Span span = self.span
        if span.exports:
            # Still held from an earlier call (cannot happen with MemoryBIO,
            # which copies): never re-point memory someone views.
            self._in_write(PyMemoryView_FromMemory(<char*>p, n, PyBUF_READ))
        else:
            span.ptr = p
            span.length = n
            try:
                self._in_write(span)
            finally:
                span.ptr = NULL
                span.length = 0
        if self.state == T_HANDSHAKE:
            self._handshake_step()
            if self.state != T_OPEN:
                return 0
        self._decrypt()
        return 0

    cdef _handshake_step(self):
        try:
            self.sslobj.do_handshake()
        except _SSLWantRead:
            self._flush(None, 0)
            return
        except Exception as exc:        # SSLError, CertificateError, OSError
            try:
                self._flush(None, 0)    # the alert, if OpenSSL wrote one
            finally:
                self._fail(exc)
            return
        self.state = T_OPEN
        self._cancel_timer()
        self.conn.ctx.tls_handshakes += 1
        self._flush(None, 0)
        if not self.handshake.done():
            self.handshake.set_result(None)

    cdef _fail(self, exc):
        if self.state != T_HANDSHAKE:
            return
        self.state = T_FAILED
        self._cancel_timer()
        if self.conn is not None:
            self.conn.ctx.tls_handshake_failures += 1
        self.error = _typed(exc)
        if not self.handshake.done():
            self.handshake.set_exception(self.error)
            self.handshake.exception()     # retrieved: connect() raises it, serve() logs it

    cdef _decrypt(self):
        """Plaintext out of OpenSSL for as long as it has some."""
        cdef Py_ssize_t got, count, out
        cdef bint eof = False, plain = False
        view = self.scratch_view
        if view is None:
            self.scratch = bytearray(SCRATCH)
            view = self.scratch_view = memoryview(self.scratch)
        while self.state == T_OPEN:
            got = 0
            try:
                while got < SCRATCH:
                    if got:
                        count = self._read(SCRATCH - got, view[got:])
                    else:
                        count = self._read(_SCRATCH_LEN, view)
                    if count <= 0:
                        eof = True      # the peer's close_notify
                        break
                    got += count
                    # A read that did not fill its room took all the
                    # plaintext OpenSSL had (SSL_read stops at a record's
                    # end): more needs undecrypted bytes.  (Its room full,
                    # the outer loop reads on.)
                    if got < SCRATCH and self.incoming.pending == 0:
                        break
            except _SSLAgain:
                pass
            except _ZeroReturn:
                eof = True          # close_notify after ours (shutdown_write)
            except _ssl.SSLError as exc:
                # A record that does not decrypt, an alert: the stream is over.
                self._broken(exc)
                return
            if got:
                plain = True
                self.sink(self.conn, PyByteArray_AS_STRING(self.scratch), got)
            if eof:
                self._peer_closed()
                break
            if got < SCRATCH:
                break
        if not plain and self.conn is not None:
            # Records without plaintext (a renegotiation attempt, session
            # tickets...) may have made OpenSSL write an answer: send it.
            # (Application data only makes output in odd mixes; that then
            # leaves with the next send, and a KeyUpdate answer is sent by
            # OpenSSL at the next write anyway.)
            out = self.outgoing.pending
            if out:
                self._flush(None, 0)

    cdef _peer_closed(self):
        # End of stream for the receivers; our close_notify goes at close().
        cdef Stream c = self.conn
        if c is not None and not c.eof:
            c.eof = True
            c.on_eof()

    cdef _broken(self, exc):
        cdef Stream c = self.conn
        self.state = T_DONE
        if c is not None and c.state != S_CLOSED:
            if c.error is None:
                c.error = exc
            c.on_error(exc)

    # ---- outgoing ----

    cdef _flush(self, waiter, Py_ssize_t total):
        """The outgoing BIO's ciphertext onto the stream's send queue;
        ``waiter`` (a send's future) resolves with ``total`` once it left."""
        cdef Chunk ch
        cdef Stream c = self.conn
        # Read without asking ``pending`` first: there is output on every
        # path but the rare handshake step that had none (then b"").
        out = self._out_read() if c is not None else b""
        if PyBytes_GET_SIZE(out) == 0:
            if waiter is not None:
                waiter.set_result(total)
            return
        c.queue_bytes(out, waiter, False)
        if waiter is not None:
            ch = <Chunk>c.sendq[len(c.sendq) - 1]
            ch.total = total

    cdef int write(self, object data, object waiter) except -1:
        """Encrypt ``data`` and queue its records (Connection.send*)."""
        cdef Py_ssize_t n, off, end
        if self.state != T_OPEN:
            raise ConnectionClosed("TLS connection is closing")
        if PyBytes_CheckExact(data):
            n = PyBytes_GET_SIZE(data)
        else:
            data = memoryview(data).cast("B")
            n = len(data)
        if n <= CHUNK:
            if n:
                self._write(data)
            self._flush(waiter, n)
            return 0
        view = memoryview(data)
        off = 0
        while off < n:
            end = off + CHUNK if n - off > CHUNK else n
            self._write(view[off:end])
            off = end
            self._flush(waiter if off == n else None, n)
        return 0

    cdef int close_notify(self) except -1:
        """close(): queue close_notify (behind the queued sends) and bound
        the rest of the close by Config.tls_shutdown_timeout."""
        if self.state == T_HANDSHAKE:
            self._fail(ConnectionAbortedError("connection closed during the TLS handshake"))
        elif self.state == T_OPEN:
            self.state = T_CLOSING
            self._send_close_notify()
        if self.conn is not None and self.timer is None and self.conn.state != S_CLOSED:
            self.timer = self.conn.loop.call_later(self.close_timeout, self._close_expired)
        return 0

    cdef int write_eof(self) except -1:
        """shutdown_write(): close_notify ends our direction (TLS 1.3 lets
        the peer go on sending, and we go on reading); the FIN follows."""
        if self.state == T_OPEN:
            self._send_close_notify()
        return 0

    cdef _send_close_notify(self):
        if self.sent_close:
            return
        self.sent_close = True
        try:
            self.sslobj.unwrap()
        except _SSLAgain:
            pass            # ours is written; we do not wait for theirs
        except _ssl.SSLError:
            pass
        self._flush(None, 0)

    def _close_expired(self):
        self.timer = None
        if self.conn is not None and self.conn.state != S_CLOSED:
            self.conn.abort_stream(TimeoutError(
                f"TLS close did not finish within {self.close_timeout:g} s "
                f"(Config.tls_shutdown_timeout)"))

    # ---- the raw stream's end ----

    cdef int on_end(self, object exc) except -1:
        """The peer's FIN (``exc`` None) or a receive error."""
        if self.state == T_HANDSHAKE:
            self._fail(exc if exc is not None else ConnectionResetError(
                "the peer closed the connection during the TLS handshake"))
        return 0

    cdef int on_closed(self) except -1:
        self._fail(ConnectionAbortedError("connection closed during the TLS handshake"))
        self._cancel_timer()
        if self.state != T_FAILED:
            self.state = T_DONE
        self.conn = None        # no cycle left: connection -> layer only
        return 0

    cdef _cancel_timer(self):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    # ---- Python-visible ----

    def tls_info(self):
        """TLSInfo of the finished handshake, or None before it finished."""
        if self.info is None and (self.state == T_OPEN or self.state == T_CLOSING
                                  or (self.state == T_DONE and self.error is None)):
            self.info = info_from(self.sslobj)
        return self.info

    def __repr__(self):
        st = ("handshake", "open", "closing", "failed", "done")[self.state]
        return f"<ringline TLS {'server' if self.server_side else 'client'} {st}>"
