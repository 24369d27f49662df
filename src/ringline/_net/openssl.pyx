# cython: language_level=3, boundscheck=False, wraparound=False
"""OpenSSL called directly, past the ``ssl`` module's Python calls.

Why.  Both TLS layers keep the stdlib ``ssl`` module (its ``SSLContext``,
certificates, handshake, errors) but make the per-record calls themselves.
The native face puts BIOs of its own into each ``ssl.MemoryBIO``, so
ciphertext goes straight from the ring's buffers and into the send
buffers, and plaintext into the receive buffer: a bulk echo server went
from 15.2M to 10.2M instructions per MB (callgrind,
``bench/native_tls_bench.py --instr``; uvloop's TLS: 15.2M).  The asyncio
face calls ``BIO_write``/``BIO_read``/``SSL_read_ex``/``SSL_write_ex`` on
the objects the ``ssl`` module made, instead of an attribute lookup,
argument parsing and an exception per record.  This module is the one
place that decides whether that is safe, for both.

How.  Nothing is linked or compiled against OpenSSL's headers.  The
library is the one ``_ssl`` itself loaded: ``dlopen(_ssl.__file__,
RTLD_NOLOAD)`` gives the handle of the loaded ``_ssl`` extension, and
``dlsym`` on it searches ``_ssl`` and then its dependencies, so it finds
libssl's (``SSL_*``) and libcrypto's (``BIO_*``, ``ERR_*``) functions, even
when other copies of OpenSSL are mapped too (wheels bring their own).
``OpenSSL_version_num()`` must equal ``ssl.OPENSSL_VERSION_NUMBER`` (and be
1.1.1 or later, for the ``*_ex`` calls).

Risks.  The BIO under an ``ssl.MemoryBIO`` and the ``SSL`` under an
``SSLObject`` are reached through CPython's private structs (``_ssl.c``'s
``PySSLMemoryBIO``: object header, ``BIO *bio``, ``int eof_written``;
``PySSLSocket``: object header, ``PyObject *Socket``, ``SSL *ssl``),
unchanged from 3.8 to 3.14 but not promised.  So before anything is used
they are checked on probe objects: the type's size, bytes written with one
side read back through the other, the eof flag after ``write_eof()``, and
``SSL_get_rbio``/``SSL_get_wbio`` of a probe ``SSLObject`` being its two
MemoryBIOs' BIOs.  Any doubt (another interpreter or Python version, an
``_ssl`` built in or hiding OpenSSL's symbols, a probe failing)
leaves the feature off and the layers on the ``ssl`` module's calls, which
stay correct; ``info()["why"]`` says which check failed.  Direct calls
are made holding the GIL, on objects the ``ssl`` module owns (kept alive by
the layer), so never while ``_ssl`` works on the same object.

``RINGLINE_TLS_DIRECT=0`` turns all of it off, on both faces (read once,
the first time a TLS layer asks; ``info(refresh=True)`` reads it again).
"""
import os as _os
import ssl as _ssl
import sys as _sys

cdef extern from "<dlfcn.h>" nogil:
    void *dlopen(const char *filename, int flags)
    void *dlsym(void *handle, const char *symbol)
    int RTLD_NOW
    int RTLD_NOLOAD
    ctypedef struct Dl_info:
        const char *dli_fname
    int dladdr(const void *addr, Dl_info *info)

cdef extern from *:
    """
    #include <string.h>
    /* Every field of ossl_api from the handle; the OSSL_* groups whose
       functions were all found. */
    #define OSSL_SYM(f) ((*(void **)(&a->f) = dlsym(h, #f)) != NULL)
    static int ossl_resolve(void *h, ossl_api *a) {
        int g = 0;
        memset(a, 0, sizeof *a);
        if (OSSL_SYM(OpenSSL_version_num) & OSSL_SYM(ERR_clear_error))
            g |= OSSL_LIB;
        if (OSSL_SYM(BIO_write) & OSSL_SYM(BIO_read) & OSSL_SYM(BIO_ctrl_pending))
            g |= OSSL_MEMBIO;
        if (OSSL_SYM(SSL_write_ex) & OSSL_SYM(SSL_read_ex) & OSSL_SYM(SSL_get_error)
                & OSSL_SYM(SSL_get_rbio) & OSSL_SYM(SSL_get_wbio))
            g |= OSSL_SSLOBJ;
        if (OSSL_SYM(BIO_new) & OSSL_SYM(BIO_free) & OSSL_SYM(BIO_set_data)
                & OSSL_SYM(BIO_get_data) & OSSL_SYM(BIO_set_init) & OSSL_SYM(BIO_set_flags)
                & OSSL_SYM(BIO_clear_flags) & OSSL_SYM(BIO_method_type)
                & OSSL_SYM(BIO_get_new_index) & OSSL_SYM(BIO_meth_new)
                & OSSL_SYM(BIO_meth_set_write) & OSSL_SYM(BIO_meth_set_read)
                & OSSL_SYM(BIO_meth_set_ctrl) & OSSL_SYM(BIO_meth_set_create)
                & OSSL_SYM(BIO_meth_set_destroy))
            g |= OSSL_BIO_METH;
        return g;
    }
    #undef OSSL_SYM
    static Py_ssize_t ossl_membio_size(void) { return (Py_ssize_t)sizeof(ossl_membio_layout); }
    static Py_ssize_t ossl_sslsock_size(void) { return (Py_ssize_t)sizeof(ossl_sslsock_layout); }
    """
    int ossl_resolve(void *h, ossl_api *a)
    Py_ssize_t ossl_membio_size()
    Py_ssize_t ossl_sslsock_size()


cdef int _flags = -1            # OSSL_* bits usable; -1: not decided yet
cdef object _why = "not decided yet"
cdef object _libcrypto = None
cdef object _libssl = None


cdef bint ossl_ready(int need) except -1:
    if _flags < 0:
        _decide()
    return (_flags & need) == need


cdef object _lib_path(const void *fn):
    cdef Dl_info di
    if fn == NULL or dladdr(fn, &di) == 0 or di.dli_fname == NULL:
        return None
    return _os.fsdecode(di.dli_fname)


cdef int _decide() except -1:
    """Sets _flags and _why (see _find), the flags last: a thread that asks
    meanwhile decides for itself instead of reading half an answer."""
    global _flags, _why
    flags, why = _find()
    _why = why
    _flags = flags
    return 0


cdef tuple _find():
    """(OSSL_* bits usable, what is off and why), from the environment, the
    library and the probes; fills ossl once the library is the right one."""
    global ossl, _libcrypto, _libssl
    cdef ossl_api a
    cdef void *h
    cdef int groups, flags
    cdef unsigned long version
    if _os.environ.get("RINGLINE_TLS_DIRECT", "") == "0":
        return 0, "off: RINGLINE_TLS_DIRECT=0"
    if _sys.implementation.name != "cpython" or not (3, 8) <= _sys.version_info[:2] <= (3, 14):
        return 0, "off: not CPython 3.8 to 3.14 (the layouts are checked there only)"
    import _ssl as _ssl_c
    path = getattr(_ssl_c, "__file__", None)
    if not path:
        return 0, "off: _ssl is built into the interpreter"
    h = dlopen(_os.fsencode(path), RTLD_NOW | RTLD_NOLOAD)
    if h == NULL:
        return 0, f"off: {path} is not loaded under that name"
    groups = ossl_resolve(h, &a)
    if not groups & OSSL_LIB:
        return 0, "off: OpenSSL_version_num not found from _ssl"
    version = a.OpenSSL_version_num()
    if version != _ssl.OPENSSL_VERSION_NUMBER or version < 0x10101000:
        return 0, (f"off: OpenSSL found is {version:#x}, ssl's is "
                   f"{_ssl.OPENSSL_VERSION_NUMBER:#x} (1.1.1 or later needed)")
    # The same functions each time: rewriting them while in use is harmless.
    ossl = a
    _libcrypto = _lib_path(<const void *>a.OpenSSL_version_num)
    _libssl = _lib_path(<const void *>a.SSL_write_ex)
    flags = OSSL_LIB
    why = []
    try:
        if not groups & OSSL_MEMBIO:
            why.append("BIO_write/BIO_read/BIO_ctrl_pending not found")
        elif not _membio_probe(_ssl_c):
            why.append("ssl.MemoryBIO: layout check failed")
        else:
            flags |= OSSL_MEMBIO
            if not groups & OSSL_SSLOBJ:
                why.append("SSL_write_ex/SSL_read_ex/... not found")
            elif not _sslobj_probe(_ssl_c):
                why.append("ssl.SSLObject: layout check failed")
            else:
                flags |= OSSL_SSLOBJ
            if not groups & OSSL_BIO_METH:
                why.append("BIO_meth_* not found")
            elif ossl.BIO_method_type(membio_bio(_ssl.MemoryBIO())) != OSSL_BIO_TYPE_MEM:
                why.append("ssl.MemoryBIO does not hold a mem BIO")
            else:
                flags |= OSSL_BIO_METH
    except Exception as exc:        # a probe that raises failed: the rest stays off
        why.append(f"probe raised {exc!r}")
    return flags, "; ".join(why) if why else "all on"


cdef bint _membio_probe(_ssl_c) except -1:
    """ssl.MemoryBIO is _ssl.c's PySSLMemoryBIO: its size, then bytes and the
    eof flag seen the same through its BIO pointer as through its methods."""
    cdef char out[4]
    cdef ossl_BIO *bio
    probe = _ssl.MemoryBIO()
    if type(probe) is not _ssl_c.MemoryBIO or type(probe).__basicsize__ != ossl_membio_size():
        return False
    probe.write(b"ringline")
    bio = membio_bio(probe)
    if bio == NULL or ossl.BIO_ctrl_pending(bio) != 8 or membio_eof(probe) != 0:
        return False
    if ossl.BIO_write(bio, <const char *>b"tls", 3) != 3 or probe.pending != 11:
        return False
    if ossl.BIO_read(bio, out, 4) != 4 or out[:4] != b"ring" or probe.read() != b"linetls":
        return False
    probe.write_eof()
    return membio_eof(probe) == 1


cdef bint _sslobj_probe(_ssl_c) except -1:
    """The _SSLSocket under an SSLObject is _ssl.c's PySSLSocket: its SSL's
    read and write BIOs are the probe MemoryBIOs' BIOs."""
    bin_, bout = _ssl.MemoryBIO(), _ssl.MemoryBIO()
    sslobj = _ssl.SSLContext(_ssl.PROTOCOL_TLS_CLIENT).wrap_bio(bin_, bout)
    inner = getattr(sslobj, "_sslobj", None)
    if (type(inner) is not getattr(_ssl_c, "_SSLSocket", None)
            or type(inner).__basicsize__ < ossl_sslsock_size()):
        return False
    cdef ossl_SSL *ssl = sslobj_ssl(inner)
    return (ssl != NULL and ossl.SSL_get_rbio(ssl) == membio_bio(bin_)
            and ossl.SSL_get_wbio(ssl) == membio_bio(bout))


def info(refresh: bool = False) -> dict:
    """What direct OpenSSL use is possible here (see the module docstring):
    ``lib``/``membio``/``sslobj``/``bio_meth`` (the OSSL_* groups),
    ``version`` (OpenSSL_version_num), ``libcrypto``/``libssl`` (the files
    the functions were found in) and ``why`` (what is off, and why).
    ``refresh`` decides again (tests: after changing RINGLINE_TLS_DIRECT);
    layers already made keep what they were given."""
    if refresh or _flags < 0:
        _decide()
    lib = bool(_flags & OSSL_LIB)
    return {
        "lib": lib,
        "membio": bool(_flags & OSSL_MEMBIO),
        "sslobj": bool(_flags & OSSL_SSLOBJ),
        "bio_meth": bool(_flags & OSSL_BIO_METH),
        "version": ossl.OpenSSL_version_num() if lib else None,
        "libcrypto": _libcrypto if lib else None,
        "libssl": _libssl if lib else None,
        "why": _why,
    }
