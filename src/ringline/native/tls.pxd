# The native face's TLS layer (native/tls.pyx), hooked into Connection
# (native/connection.pyx) through its ``tls`` field.
from ringline._net.stream cimport Stream

# Where decrypted bytes go: Connection.on_plain, set by connection.attach_tls.
ctypedef int (*plain_sink_t)(object conn, const char *p, Py_ssize_t n) except -1
# Decrypting in place: where the next plaintext may go (Connection.plain_room),
# then how much went there (Connection.plain_done).
ctypedef Py_ssize_t (*plain_room_t)(object conn, Py_ssize_t n, char **out) except -1
ctypedef int (*plain_done_t)(object conn, Py_ssize_t k) except -1


cdef class _Span:
    # A reusable read-only buffer over (ptr, len): ciphertext from a receive
    # CQE handed to MemoryBIO.write without a memoryview per receive.
    cdef const char *ptr
    cdef Py_ssize_t length
    cdef Py_ssize_t exports


cdef class TLSLayer:
    cdef Stream conn                # None once the connection is closed
    cdef plain_sink_t sink
    cdef plain_room_t room
    cdef plain_done_t done
    cdef readonly object sslobj
    cdef object _read               # the C SSL object's read/write/pending
    cdef object _write
    cdef object _pending
    cdef object incoming            # ssl.MemoryBIO: ciphertext from the peer
    cdef object outgoing            # ssl.MemoryBIO: ciphertext to send
    cdef object _in_write
    cdef _Span span
    cdef object _out_read
    cdef readonly int state
    cdef readonly bint server_side
    cdef readonly object handshake  # Future: None when done, the error when failed
    cdef object timer               # handshake or close_notify timeout
    cdef double handshake_timeout
    cdef double close_timeout
    cdef bytearray scratch          # plaintext out of OpenSSL, before on_plain copies it
    cdef object scratch_view
    cdef object info                # TLSInfo, made on first ask
    cdef object error               # why the handshake failed
    cdef bint sent_close            # our close_notify is written
    cdef void *in_st                # ring BIO states (rl_bio_state), or NULL: MemoryBIO
    cdef void *out_st
    cdef void *ssl                  # the SSL for direct SSL_read_ex, or NULL

    cdef int begin(self) except -1
    cdef int feed(self, const char *p, Py_ssize_t n) except -1
    cdef int write(self, object data, object waiter) except -1
    cdef int close_notify(self) except -1
    cdef int write_eof(self) except -1
    cdef _send_close_notify(self)
    cdef int on_end(self, object exc) except -1
    cdef int on_closed(self) except -1
    cdef _handshake_step(self)
    cdef _fail(self, exc)
    cdef _decrypt(self)
    cdef Py_ssize_t _ssl_read(self, char *buf, Py_ssize_t n) except -2
    cdef _peer_closed(self)
    cdef _broken(self, exc)
    cdef _flush(self, waiter, Py_ssize_t total)
    cdef _queue(self, out, waiter, Py_ssize_t total)
    cdef _write_lent(self, piece, Py_ssize_t k, waiter, Py_ssize_t total)
    cdef _after_feed(self)
    cdef _cancel_timer(self)
