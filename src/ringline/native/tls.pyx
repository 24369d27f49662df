# cython: language_level=3, boundscheck=False, wraparound=False
"""TLS on the native face: ``serve(..., ssl=)`` and ``connect(..., ssl=)``.

Shape.  A ``TLSLayer`` is a hook object a ``Connection`` holds in its
``tls`` field, not a subclass of it: ``Connection`` stays one final class
whose fields live in its own module (no .pxd to share, no virtual call added
to the plain path), and the plain path pays one ``is None`` test per receive
and per send.  ``connection.attach_tls`` ties the two together.

Data path (stdlib ``ssl``: its ``SSLObject`` over ``wrap_bio``; no other
crypto):

* ring BIOs (the default where they can work, see below): before
  ``wrap_bio`` the mem BIO inside each ``ssl.MemoryBIO`` is replaced by a
  BIO of ours (C callbacks, no Python), so the ``SSLObject`` reads and
  writes through them:
  - ciphertext in: a receive CQE's bytes are lent to the incoming BIO for
    the duration of ``feed`` (a pointer into the provided buffer), and
    OpenSSL reads its records from there; what it has not taken when
    ``feed`` is done (rare: it reads until it asks for more) is kept in a
    malloc'd buffer and read first next time;
  - plaintext: with a receive's worth of ciphertext waiting (at least
    ``DIRECT_MIN``), ``SSLObject.read`` decrypts straight into the
    connection's open ``head``, a new head for a waiting ``recv``, or the
    end of ``acc`` (``Connection.plain_room``/``plain_done``: the places
    ``on_plain`` would copy to); smaller pieces go through a scratch buffer
    and ``Connection.on_plain`` (exact-size results for small messages);
  - ciphertext out: ``send``/``send_nowait``/``send_parts`` encrypt at
    once (``send_parts`` as one write), ``CHUNK`` of plaintext at a time,
    into a ``bytes`` object sized for its 16 KiB records, lent to the
    outgoing BIO; cut to length, it goes on the stream's ordinary send
    queue as it is (pinned, not copied again).  Output with no lent buffer
    (handshake, alerts, close_notify, tickets) or beyond it goes to an
    overflow buffer, in order, and leaves with the next flush.
  Per byte this saves the MemoryBIO's clear-and-copy on both sides, the
  copy out of the outgoing BIO and the copy out of the scratch buffer.
  The callbacks run while ``_ssl`` has released the GIL, so they touch
  only memory lent to them or owned by the BIO.  OpenSSL is not linked:
  ``ringline._net.openssl`` finds the library the ``ssl`` module loaded
  and checks ``ssl.MemoryBIO``'s private layout on a probe (its
  ``OSSL_MEMBIO | OSSL_BIO_METH``); each swap also checks the BIO it
  replaces is a mem BIO.  Otherwise, or with ``RINGLINE_TLS_DIRECT=0``
  (``ring_bio(False)`` in tests), the layer keeps the MemoryBIOs:
* MemoryBIO path: each receive's ciphertext goes into the incoming BIO
  through a reusable buffer object (the one copy into OpenSSL; the
  provided buffer goes back to the kernel at once); then OpenSSL decrypts
  record after record into a scratch buffer (``SSLObject.read`` into a
  view, no ``bytes`` per record) and ``Connection.on_plain`` copies the
  plaintext into the same accumulator/``head`` that ``recv``/
  ``recv_exactly``/``with_data`` read on a plain connection; sends are
  encrypted into the outgoing BIO, whose whole content becomes one
  ``bytes`` queued on the send queue.

Both ways: the same receive semantics and receive backpressure as a plain
connection (reading pauses at ``recv_accumulator_limit``); every receive is
decrypted until OpenSSL asks for more (a CQE can end mid-record, or hold
many), so no ciphertext waits unseen.  Ciphertext keeps call order, shares
the one-send-in-flight rule with everything else, and the stream gathers
what a loop pass queued into one SEND/SENDMSG.  ``queued``/``drain()``
count ciphertext bytes (a few percent above the plaintext); a ``send``
future resolves with the plaintext byte count once the kernel took the
record.

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
from cpython.buffer cimport PyBUF_READ, PyBUF_WRITE, PyBuffer_FillInfo

from ringline._net.stream cimport Stream, Chunk, S_CLOSED
from ringline._net.openssl cimport (ossl, ossl_ready, sslobj_ssl, ossl_SSL,
                                    OSSL_MEMBIO, OSSL_BIO_METH, OSSL_SSLOBJ)
from libc.limits cimport INT_MAX
from ringline._tls import info_from, typed_handshake_error as _typed
from ringline.errors import ConnectionClosed

from ringline._net.ringbio cimport (rb_state, rb_setup, rb_swap, rb_keep, rb_pending, rb_lend,
                                    rb_collect)


cdef int _ring_bio = 0      # ring BIOs: 0 undecided, 1 in use, -1 not available/off


def ring_bio(enable=None):
    """Whether new native TLS connections use the ring BIOs (the module
    docstring); ``enable`` False turns them off (True: back on if they
    can work).  ``RINGLINE_TLS_DIRECT=0`` turns them off at start."""
    global _ring_bio
    if enable is not None:
        _ring_bio = 0 if enable else -1
    if _ring_bio == 0:
        _ring_bio = -1
        if ossl_ready(OSSL_MEMBIO | OSSL_BIO_METH) and rb_setup(&ossl) == 0:
            _ring_bio = 1
    return _ring_bio == 1


cdef object _SSLWantRead = _ssl.SSLWantReadError
cdef object _SSLSocket = getattr(__import__("_ssl"), "_SSLSocket", None)
cdef object _SSLAgain = (_ssl.SSLWantReadError, _ssl.SSLSyscallError)
cdef object _MemoryBIO = _ssl.MemoryBIO
cdef object _ZeroReturn = _ssl.SSLZeroReturnError

cdef enum:
    SCRATCH = 64 * 1024     # plaintext gathered per on_plain call
    CHUNK = 256 * 1024      # plaintext encrypted per outgoing BIO read
    DIRECT_MIN = 16 * 1024  # ciphertext waiting from which plaintext is decrypted in place

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
        if _ring_bio == 1 or (_ring_bio == 0 and ring_bio()):
            # Before wrap_bio: SSL_set_bio takes whatever BIO each holds.
            self.in_st = rb_swap(self.incoming, 0)
            self.out_st = rb_swap(self.outgoing, 1)
        self.sslobj = ctx.wrap_bio(self.incoming, self.outgoing, server_side=server_side,
                                   server_hostname=None if server_side else server_hostname)
        # The C object under ssl.SSLObject: its Python wrappers cost a frame a call.
        inner = getattr(self.sslobj, "_sslobj", self.sslobj)
        self._read = inner.read
        if (self.in_st != NULL and ossl_ready(OSSL_SSLOBJ)
                and type(inner) is _SSLSocket):
            # SSL_read_ex without the ssl module's call (a record per call,
            # 16 per 256 KiB): ring BIOs only, where OpenSSL reads from us.
            self.ssl = sslobj_ssl(inner)
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
        cdef rb_state *st = <rb_state*>self.in_st
        if st != NULL:
            # Ring BIO: OpenSSL reads the provided buffer itself; what it
            # has not taken when we are done is kept (rb_keep).
            st.lent = p
            st.lent_len = <size_t>n
            try:
                self._after_feed()
            finally:
                if rb_keep(st) < 0:
                    raise MemoryError("TLS: no memory for undecrypted ciphertext")
            return 0
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
        self._after_feed()
        return 0

    cdef _after_feed(self):
        if self.state == T_HANDSHAKE:
            self._handshake_step()
            if self.state != T_OPEN:
                return
        self._decrypt()

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
        """Plaintext out of OpenSSL for as long as it has some: with the
        ring BIO and a receive's worth of ciphertext waiting, straight into
        the connection's head/accumulator (Connection.plain_room), else
        through the scratch buffer and on_plain."""
        cdef Py_ssize_t got, count, out, room
        cdef bint eof = False, plain = False, direct
        cdef char *dst = NULL
        cdef char *base
        cdef rb_state *st = <rb_state*>self.in_st
        if self.scratch_view is None:
            self.scratch = bytearray(SCRATCH)
            self.scratch_view = memoryview(self.scratch)
        while self.state == T_OPEN:
            got = 0
            room = 0
            if st != NULL and rb_pending(st) >= DIRECT_MIN and self.conn is not None:
                room = self.room(self.conn, SCRATCH, &dst)
            direct = room > 0
            if direct:
                base = dst
            else:
                base = PyByteArray_AS_STRING(self.scratch)   # pinned by scratch_view
                room = SCRATCH
            try:
                while got < room:
                    count = self._ssl_read(base + got, room - got)
                    if count < 0:
                        break           # OpenSSL wants more ciphertext
                    if count == 0:
                        eof = True      # the peer's close_notify
                        break
                    got += count
                    # A read that did not fill its room took all the
                    # plaintext OpenSSL had (SSL_read stops at a record's
                    # end): more needs undecrypted bytes.  (Its room full,
                    # the outer loop reads on.)
                    if got < room and (rb_pending(st) if st != NULL
                                       else self.incoming.pending) == 0:
                        break
            except _SSLAgain:
                pass
            except _ZeroReturn:
                eof = True          # close_notify after ours (shutdown_write)
            except _ssl.SSLError as exc:
                # A record that does not decrypt, an alert: the stream is over.
                if direct:
                    self.done(self.conn, 0)
                self._broken(exc)
                return
            except BaseException:
                if direct:
                    self.done(self.conn, 0)
                raise
            if direct:
                self.done(self.conn, got)
                if got:
                    plain = True
            elif got:
                plain = True
                self.sink(self.conn, PyByteArray_AS_STRING(self.scratch), got)
            if eof:
                self._peer_closed()
                break
            if got < room:
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

    cdef Py_ssize_t _ssl_read(self, char *buf, Py_ssize_t n) except -2:
        """Plaintext into the ``n`` bytes at ``buf``: the count (> 0), 0 at
        the peer's close_notify, -1 when OpenSSL wants more ciphertext (the
        ssl module's read may raise SSLWantReadError instead: callers catch
        both).  SSL_read_ex directly where allowed; on any other failure the
        ssl module's read is called to return 0 or raise its own error from
        the state and error queue the failed call left (as aio/tls.pyx)."""
        cdef size_t count = 0
        cdef int ret
        if self.ssl != NULL and 0 < n <= INT_MAX:
            ret = ossl.SSL_read_ex(<ossl_SSL*>self.ssl, buf, <size_t>n, &count)
            if ret == 1:
                return <Py_ssize_t>count
            if ossl.SSL_get_error(<ossl_SSL*>self.ssl, ret) == 2:    # SSL_ERROR_WANT_READ
                return -1
        return self._read(n, PyMemoryView_FromMemory(buf, n, PyBUF_WRITE))

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
        cdef Stream c = self.conn
        # Read without asking ``pending`` first: there is output on every
        # path but the rare handshake step that had none (then b"").
        if self.out_st != NULL:
            out = rb_collect(<rb_state*>self.out_st, None) if c is not None else b""
        else:
            out = self._out_read() if c is not None else b""
        self._queue(out, waiter, total)

    cdef _queue(self, out, waiter, Py_ssize_t total):
        cdef Chunk ch
        cdef Stream c = self.conn
        if PyBytes_GET_SIZE(out) == 0 or c is None:
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
        if self.out_st != NULL:
            if n <= CHUNK:
                self._write_lent(data, n, waiter, n)
                return 0
            view = memoryview(data)
            off = 0
            while off < n:
                end = off + CHUNK if n - off > CHUNK else n
                self._write_lent(view[off:end], end - off, waiter if end == n else None, n)
                off = end
            return 0
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

    cdef _write_lent(self, piece, Py_ssize_t k, waiter, Py_ssize_t total):
        """Ring BIO: encrypt ``piece`` (``k`` bytes) straight into a bytes
        object sized for its records, which then goes on the send queue as
        it is (pinned, no copy)."""
        cdef rb_state *st = <rb_state*>self.out_st
        lent = rb_lend(st, k)
        try:
            if k:
                self._write(piece)
        except BaseException:
            # What was encrypted before the error still leaves, in order.
            self._queue(rb_collect(st, lent), None, 0)
            raise
        self._queue(rb_collect(st, lent), waiter, total)

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
