# cython: language_level=3
"""The compiled TLS protocol (aio/tls.pyx): fields, for tcp.pyx's feed call."""
from ringline._net.openssl cimport ossl_BIO, ossl_SSL
cimport cython

cdef enum State:
    UNWRAPPED
    DO_HANDSHAKE
    WRAPPED
    FLUSHING
    SHUTDOWN

cdef enum AppState:
    # INIT -connection_made-> CON_MADE [-eof_received-> EOF] -connection_lost-> CON_LOST
    STATE_INIT
    STATE_CON_MADE
    STATE_EOF
    STATE_CON_LOST


@cython.final
cdef class SSLProtocol:
    cdef bint _server_side
    cdef object _server_hostname
    cdef readonly object _sslcontext
    cdef dict _extra
    cdef readonly object _write_backlog       # deque of app data not yet encrypted
    cdef public Py_ssize_t _write_buffer_size
    cdef object _waiter
    cdef readonly object _loop
    cdef readonly object _app_protocol
    cdef bint _app_is_buffered
    cdef object _app_get_buffer
    cdef object _app_buffer_updated
    cdef object _app_data_received
    cdef bint _app_stream                     # asyncio's StreamReaderProtocol
    cdef object _fast_reader                  # its StreamReader, checked (_read_into_reader)
    cdef bint _fast_wakeup                    # that reader's _wakeup_waiter is asyncio's
    cdef bint _in_drained                     # a read saw the incoming BIO empty
    cdef readonly object _app_transport
    cdef bint _app_transport_created
    cdef readonly object _transport           # the raw (ring) transport
    cdef object _raw_write
    cdef object _ssl_handshake_timeout
    cdef object _ssl_shutdown_timeout
    cdef readonly object _incoming            # ssl.MemoryBIO: ciphertext in
    cdef readonly object _outgoing            # ssl.MemoryBIO: ciphertext out
    cdef State _state
    cdef int _conn_lost
    cdef AppState _app_state
    cdef readonly object _sslobj
    cdef object _sslobj_read
    cdef object _sslobj_write
    cdef object _sslobj_pending
    cdef object _incoming_write
    cdef object _outgoing_read
    cdef ossl_BIO *_in_bio                      # the BIOs under them, when direct calls are
    cdef ossl_BIO *_out_bio                     # allowed (tls.pyx: _bio_direct); else NULL
    cdef ossl_SSL *_ssl                         # the SSL under _sslobj, likewise (_ssl_write)
    cdef bint _app_stream_wr                  # its _stream_reader is asyncio's property
    cdef readonly Py_ssize_t _incoming_high_water
    cdef readonly Py_ssize_t _incoming_low_water
    cdef readonly Py_ssize_t _outgoing_high_water
    cdef readonly Py_ssize_t _outgoing_low_water
    cdef readonly bint _ssl_writing_paused
    cdef public bint _app_reading_paused
    cdef readonly bint _ssl_reading_paused
    cdef readonly bint _eof_received
    cdef readonly bint _app_writing_paused
    cdef object _handshake_start_time
    cdef object _handshake_timeout_handle
    cdef object _shutdown_timeout_handle
    cdef object _raw_buffer                   # get_buffer()'s, for other transports
    cdef void *_in_st                         # ring BIOs' states (tls.pyx), or NULL
    cdef void *_out_st
    cdef object _cipher_q                     # ciphertext held while the raw transport is paused
    cdef Py_ssize_t _cipher_q_size

    cdef _set_app_protocol(self, app_protocol)
    cdef _wakeup_waiter(self, exc=*)
    cdef _get_extra_info(self, name, default)
    cdef int feed(self, const char *p, Py_ssize_t n) except -1
    cdef int feed_only(self, const char *p, Py_ssize_t n) except -1
    cdef int _in_write(self, const char *p, Py_ssize_t n) except -1
    cdef Py_ssize_t _in_pending(self) except -1
    cdef Py_ssize_t _out_pending(self) except -1
    cdef Py_ssize_t _out_queued(self) except -1
    cdef bytes _out_read(self, Py_ssize_t n)
    cdef Py_ssize_t _encrypt(self, data) except -1
    cdef _emit(self, bytes out)
    cdef _after_incoming(self)
    cdef _start_handshake(self)
    cdef _do_handshake(self)
    cdef _on_handshake_complete(self, handshake_exc)
    cdef _start_shutdown(self)
    cdef _do_flush(self)
    cdef _do_shutdown(self)
    cdef _on_shutdown_complete(self, shutdown_exc)
    cpdef _abort(self, exc=*)
    cdef _write_appdata(self, list_of_data)
    cdef _write_one(self, data)
    cdef _do_write(self, bint lazy=*)
    cdef Py_ssize_t _ssl_write(self, data) except -1
    cdef Py_ssize_t _ssl_read(self, char *buf, Py_ssize_t n) except -2
    cdef _process_outgoing(self)
    cdef Py_ssize_t _flush_outgoing(self) except -1
    cdef _do_read(self)
    cdef Py_ssize_t _readable(self) except -1
    cdef bint _more(self, Py_ssize_t count, Py_ssize_t asked) except -1
    cdef _do_read_buffered(self)
    cdef _do_read_copied(self)
    cdef Py_ssize_t _read_into_reader(self, Py_ssize_t want, bint *eof) except -2
    cdef _call_eof_received(self)
    cdef _control_app_writing(self)
    cdef _control_app_writing_size(self, Py_ssize_t size)
    cdef _call_app(self, str name)
    cdef Py_ssize_t _get_write_buffer_size(self) except -1
    cdef _resume_reading(self)
    cdef _control_ssl_reading(self)
    cdef _fatal_error(self, exc, message=*)
