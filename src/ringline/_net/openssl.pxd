# OpenSSL called directly, past the ssl module's Python calls: the one place
# that finds the library, checks its version and CPython's private layouts
# (see openssl.pyx).  Use: ``if ossl_ready(OSSL_MEMBIO): ossl.BIO_write(...)``.

cdef extern from *:
    """
    #ifndef RINGLINE_OPENSSL_ABI
    #define RINGLINE_OPENSSL_ABI
    /* OpenSSL's types stay opaque: nothing here is compiled against its
       headers; every call goes through a pointer resolved at run time. */
    typedef struct ossl_bio_st ossl_BIO;
    typedef struct ossl_bio_method_st ossl_BIO_METHOD;
    typedef struct ossl_ssl_st ossl_SSL;
    typedef int (*ossl_bio_write_cb)(ossl_BIO *, const char *, int);
    typedef int (*ossl_bio_read_cb)(ossl_BIO *, char *, int);
    typedef long (*ossl_bio_ctrl_cb)(ossl_BIO *, int, long, void *);
    typedef int (*ossl_bio_life_cb)(ossl_BIO *);

    typedef struct {
        unsigned long (*OpenSSL_version_num)(void);
        void (*ERR_clear_error)(void);
        /* libcrypto: BIOs */
        int (*BIO_write)(ossl_BIO *, const void *, int);
        int (*BIO_read)(ossl_BIO *, void *, int);
        size_t (*BIO_ctrl_pending)(ossl_BIO *);
        ossl_BIO *(*BIO_new)(const ossl_BIO_METHOD *);
        int (*BIO_free)(ossl_BIO *);
        void (*BIO_set_data)(ossl_BIO *, void *);
        void *(*BIO_get_data)(ossl_BIO *);
        void (*BIO_set_init)(ossl_BIO *, int);
        void (*BIO_set_flags)(ossl_BIO *, int);
        void (*BIO_clear_flags)(ossl_BIO *, int);
        int (*BIO_method_type)(const ossl_BIO *);
        int (*BIO_get_new_index)(void);
        ossl_BIO_METHOD *(*BIO_meth_new)(int, const char *);
        int (*BIO_meth_set_write)(ossl_BIO_METHOD *, ossl_bio_write_cb);
        int (*BIO_meth_set_read)(ossl_BIO_METHOD *, ossl_bio_read_cb);
        int (*BIO_meth_set_ctrl)(ossl_BIO_METHOD *, ossl_bio_ctrl_cb);
        int (*BIO_meth_set_create)(ossl_BIO_METHOD *, ossl_bio_life_cb);
        int (*BIO_meth_set_destroy)(ossl_BIO_METHOD *, ossl_bio_life_cb);
        /* libssl */
        int (*SSL_write_ex)(ossl_SSL *, const void *, size_t, size_t *);
        int (*SSL_read_ex)(ossl_SSL *, void *, size_t, size_t *);
        int (*SSL_get_error)(const ossl_SSL *, int);
        ossl_BIO *(*SSL_get_rbio)(const ossl_SSL *);
        ossl_BIO *(*SSL_get_wbio)(const ossl_SSL *);
    } ossl_api;

    /* _ssl.c's PySSLMemoryBIO (ssl.MemoryBIO) and the first fields of its
       PySSLSocket (the _SSLSocket under ssl.SSLObject), CPython 3.8 to
       3.14: private, so openssl.pyx checks them on probe objects before
       ossl_ready() says yes. */
    typedef struct { PyObject_HEAD ossl_BIO *bio; int eof_written; } ossl_membio_layout;
    typedef struct { PyObject_HEAD PyObject *Socket; ossl_SSL *ssl; } ossl_sslsock_layout;
    #define ossl_membio_bio(o) (((ossl_membio_layout *)(o))->bio)
    #define ossl_membio_eof(o) (((ossl_membio_layout *)(o))->eof_written)
    #define ossl_sslobj_ssl(o) (((ossl_sslsock_layout *)(o))->ssl)
    #define OSSL_BIO_TYPE_MEM (1 | 0x0400)
    /* What ossl_ready() can be asked for: each bit names the fields of
       ``ossl`` it makes usable, on the objects it names. */
    enum {
        OSSL_LIB = 1,       /* OpenSSL_version_num, ERR_clear_error: the ssl module's OpenSSL */
        OSSL_MEMBIO = 2,    /* BIO_write/read/ctrl_pending on membio_bio(ssl.MemoryBIO) */
        OSSL_SSLOBJ = 4,    /* SSL_*_ex, SSL_get_error/rbio/wbio on sslobj_ssl(obj._sslobj) */
        OSSL_BIO_METH = 8   /* BIO_new ... BIO_meth_*: BIOs of ours put into a MemoryBIO */
    };
    #endif
    """
    ctypedef struct ossl_BIO
    ctypedef struct ossl_BIO_METHOD
    ctypedef struct ossl_SSL
    ctypedef int (*ossl_bio_write_cb)(ossl_BIO *, const char *, int) noexcept nogil
    ctypedef int (*ossl_bio_read_cb)(ossl_BIO *, char *, int) noexcept nogil
    ctypedef long (*ossl_bio_ctrl_cb)(ossl_BIO *, int, long, void *) noexcept nogil
    ctypedef int (*ossl_bio_life_cb)(ossl_BIO *) noexcept nogil

    ctypedef struct ossl_api:
        unsigned long (*OpenSSL_version_num)() noexcept nogil
        void (*ERR_clear_error)() noexcept nogil
        int (*BIO_write)(ossl_BIO *, const void *, int) noexcept nogil
        int (*BIO_read)(ossl_BIO *, void *, int) noexcept nogil
        size_t (*BIO_ctrl_pending)(ossl_BIO *) noexcept nogil
        ossl_BIO *(*BIO_new)(const ossl_BIO_METHOD *) noexcept nogil
        int (*BIO_free)(ossl_BIO *) noexcept nogil
        void (*BIO_set_data)(ossl_BIO *, void *) noexcept nogil
        void *(*BIO_get_data)(ossl_BIO *) noexcept nogil
        void (*BIO_set_init)(ossl_BIO *, int) noexcept nogil
        void (*BIO_set_flags)(ossl_BIO *, int) noexcept nogil
        void (*BIO_clear_flags)(ossl_BIO *, int) noexcept nogil
        int (*BIO_method_type)(const ossl_BIO *) noexcept nogil
        int (*BIO_get_new_index)() noexcept nogil
        ossl_BIO_METHOD *(*BIO_meth_new)(int, const char *) noexcept nogil
        int (*BIO_meth_set_write)(ossl_BIO_METHOD *, ossl_bio_write_cb) noexcept nogil
        int (*BIO_meth_set_read)(ossl_BIO_METHOD *, ossl_bio_read_cb) noexcept nogil
        int (*BIO_meth_set_ctrl)(ossl_BIO_METHOD *, ossl_bio_ctrl_cb) noexcept nogil
        int (*BIO_meth_set_create)(ossl_BIO_METHOD *, ossl_bio_life_cb) noexcept nogil
        int (*BIO_meth_set_destroy)(ossl_BIO_METHOD *, ossl_bio_life_cb) noexcept nogil
        int (*SSL_write_ex)(ossl_SSL *, const void *, size_t, size_t *) noexcept nogil
        int (*SSL_read_ex)(ossl_SSL *, void *, size_t, size_t *) noexcept nogil
        int (*SSL_get_error)(const ossl_SSL *, int) noexcept nogil
        ossl_BIO *(*SSL_get_rbio)(const ossl_SSL *) noexcept nogil
        ossl_BIO *(*SSL_get_wbio)(const ossl_SSL *) noexcept nogil

    # The BIO under an ssl.MemoryBIO, its write_eof flag, and the SSL under
    # the _SSLSocket of an ssl.SSLObject (ssl_obj._sslobj); valid only once
    # ossl_ready(OSSL_MEMBIO) / ossl_ready(OSSL_SSLOBJ) said yes.
    ossl_BIO *membio_bio "ossl_membio_bio"(object o)
    int membio_eof "ossl_membio_eof"(object o)
    ossl_SSL *sslobj_ssl "ossl_sslobj_ssl"(object o)
    int OSSL_BIO_TYPE_MEM
    enum:
        OSSL_LIB
        OSSL_MEMBIO
        OSSL_SSLOBJ
        OSSL_BIO_METH

# The resolved functions: read only after ossl_ready() said yes.
cdef ossl_api ossl

# Whether everything in ``need`` (OSSL_* bits) is usable: the first call
# decides (RINGLINE_TLS_DIRECT, library, version, probes), later calls read
# the flags.
cdef bint ossl_ready(int need) except -1
