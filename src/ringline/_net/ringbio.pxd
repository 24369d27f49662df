# Ring BIOs: OpenSSL BIOs of ours put inside ssl.MemoryBIO objects, so that
# ciphertext goes between the ring's buffers and OpenSSL without a mem BIO's
# zero-fill and copies.  One implementation for both TLS faces
# (native/tls.pyx, aio/tls.pyx; their docstrings say how each lends memory):
# * incoming: ``lent`` points into a receive's provided buffer for the
#   duration of one feed; OpenSSL reads its records from there; what it has
#   not taken by then is kept (rb_keep) in ``buf``, read first next time;
# * outgoing: ``dst`` is a bytes object's storage lent for one encryption;
#   output with nothing lent, or beyond it, goes to ``buf`` in order;
# * ``buf`` is circular (cap a power of two): neither appends nor reads move
#   unread bytes.
# The callbacks run while _ssl has released the GIL: plain C, no Python API.
# Each cimporting module compiles its own copy (static state: its own BIO
# method), set up once by rb_setup over the functions _net/openssl resolved.
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from ringline._net.buffers cimport bytes_set_length, big_bytes, BIG_MIN, BIG_CAP
from ringline._net.openssl cimport ossl_api

cdef extern from *:
    """
    #ifndef RINGLINE_RINGBIO
    #define RINGLINE_RINGBIO
    #include <stdlib.h>
    #include <string.h>

    typedef struct {
        int out;                            /* the outgoing BIO */
        const char *lent; size_t lent_len;  /* incoming: lent for one feed */
        char *buf; size_t off, len, cap;    /* owned bytes, read as a mem BIO's (circular) */
        char *dst; size_t dst_len, dst_cap; /* outgoing: storage lent for one write */
        int eof_return;
        int oom;
    } rb_state;

    static ossl_api rb_api;
    static ossl_BIO_METHOD *rb_method;
    static int rb_ready;

    #define RB_FLAGS_READ 0x01
    #define RB_FLAGS_RWS 0x07
    #define RB_FLAGS_SHOULD_RETRY 0x08

    /* buf is a circular buffer: len unread bytes from off (cap a power of
       two), so neither appends nor reads ever move what is unread (it can
       be a quarter megabyte while the application's reading is paused). */

    /* The len unread bytes, in order, to out; buf left empty. */
    static void rb_drain(rb_state *st, char *out) {
        size_t k = st->cap - st->off;
        if (k > st->len) k = st->len;
        if (k) memcpy(out, st->buf + st->off, k);
        if (st->len > k) memcpy(out + k, st->buf, st->len - k);
        st->off = st->len = 0;
    }

    /* Room for n more bytes.  0, or -1 out of memory. */
    static int rb_room(rb_state *st, size_t n) {
        size_t c;
        char *p;
        if (st->len + n <= st->cap) return 0;
        c = st->cap ? st->cap : 4096;
        while (c < st->len + n) c *= 2;
        p = (char *)malloc(c);
        if (p == NULL) return -1;
        n = st->len;
        rb_drain(st, p);
        free(st->buf);
        st->buf = p;
        st->cap = c;
        st->len = n;
        return 0;
    }

    static int rb_append(rb_state *st, const char *src, size_t n) {
        size_t w, k;
        if (rb_room(st, n) < 0) {
            st->oom = 1;
            return -1;
        }
        w = (st->off + st->len) & (st->cap - 1);
        k = st->cap - w;
        if (k > n) k = n;
        memcpy(st->buf + w, src, k);
        if (n > k) memcpy(st->buf, src + k, n - k);
        st->len += n;
        return 0;
    }

    static int rb_read(ossl_BIO *b, char *dst, int n) {
        rb_state *st = (rb_state *)rb_api.BIO_get_data(b);
        size_t k, room = n > 0 ? (size_t)n : 0;
        rb_api.BIO_clear_flags(b, RB_FLAGS_RWS | RB_FLAGS_SHOULD_RETRY);
        if (st->len) {                      /* older bytes first */
            k = st->cap - st->off;          /* (up to the wrap: OpenSSL asks again) */
            if (k > st->len) k = st->len;
            if (k > room) k = room;
            memcpy(dst, st->buf + st->off, k);
            st->off = (st->off + k) & (st->cap - 1);
            st->len -= k;
            if (st->len == 0) st->off = 0;
            return (int)k;
        }
        if (st->lent_len) {
            k = st->lent_len < room ? st->lent_len : room;
            memcpy(dst, st->lent, k);
            st->lent += k;
            st->lent_len -= k;
            return (int)k;
        }
        if (st->eof_return == 0) return 0;
        rb_api.BIO_set_flags(b, RB_FLAGS_READ | RB_FLAGS_SHOULD_RETRY);
        return -1;
    }

    static int rb_write(ossl_BIO *b, const char *src, int n) {
        rb_state *st = (rb_state *)rb_api.BIO_get_data(b);
        size_t k = n > 0 ? (size_t)n : 0;
        rb_api.BIO_clear_flags(b, RB_FLAGS_RWS | RB_FLAGS_SHOULD_RETRY);
        if (st->dst != NULL && st->len == 0 && st->dst_len + k <= st->dst_cap) {
            memcpy(st->dst + st->dst_len, src, k);
            st->dst_len += k;
            return (int)k;
        }
        /* Nothing lent, or it is full: in order, after it. */
        return rb_append(st, src, k) < 0 ? -1 : (int)k;
    }

    static long rb_ctrl(ossl_BIO *b, int cmd, long num, void *ptr) {
        rb_state *st = (rb_state *)rb_api.BIO_get_data(b);
        (void)ptr;
        switch (cmd) {
        case 10:    /* BIO_CTRL_PENDING */
            return (long)(st->len + st->lent_len + st->dst_len);
        case 13:    /* BIO_CTRL_WPENDING */
            return 0;
        case 11:    /* BIO_CTRL_FLUSH */
            return 1;
        case 2:     /* BIO_CTRL_EOF */
            return st->len == 0 && st->lent_len == 0 && st->eof_return == 0;
        case 130:   /* BIO_C_SET_BUF_MEM_EOF_RETURN (MemoryBIO.write_eof) */
            st->eof_return = (int)num;
            return 1;
        default:
            return 0;
        }
    }

    static int rb_create(ossl_BIO *b) {
        rb_state *st = (rb_state *)calloc(1, sizeof(rb_state));
        if (st == NULL) return 0;
        st->eof_return = -1;
        rb_api.BIO_set_data(b, st);
        rb_api.BIO_set_init(b, 1);
        return 1;
    }

    static int rb_destroy(ossl_BIO *b) {
        rb_state *st;
        if (b == NULL) return 0;
        st = (rb_state *)rb_api.BIO_get_data(b);
        if (st != NULL) {
            free(st->buf);
            free(st);
        }
        rb_api.BIO_set_data(b, NULL);
        rb_api.BIO_set_init(b, 0);
        return 1;
    }

    /* The BIO method, over the functions api holds (checked by
       ringline._net.openssl: OSSL_MEMBIO | OSSL_BIO_METH).  0: ready. */
    static int rb_setup(const ossl_api *api) {
        ossl_BIO_METHOD *m;
        if (rb_ready) return rb_ready > 0 ? 0 : -1;
        rb_ready = -1;
        rb_api = *api;
        m = rb_api.BIO_meth_new(rb_api.BIO_get_new_index() | 0x0400, "ringline ring");
        if (m == NULL) return -1;
        if (!rb_api.BIO_meth_set_write(m, rb_write) || !rb_api.BIO_meth_set_read(m, rb_read)
                || !rb_api.BIO_meth_set_ctrl(m, rb_ctrl)
                || !rb_api.BIO_meth_set_create(m, rb_create)
                || !rb_api.BIO_meth_set_destroy(m, rb_destroy))
            return -1;
        rb_method = m;
        rb_ready = 1;
        return 0;
    }

    /* A BIO of ours in place of the mem BIO an ssl.MemoryBIO made (before
       wrap_bio hands it to SSL_set_bio).  Its state, or NULL (unchanged). */
    static rb_state *rb_swap(PyObject *membio, int out) {
        ossl_BIO *nb, *old = ossl_membio_bio(membio);
        rb_state *st;
        if (rb_ready <= 0 || old == NULL || rb_api.BIO_method_type(old) != OSSL_BIO_TYPE_MEM
                || rb_api.BIO_ctrl_pending(old) != 0)
            return NULL;
        nb = rb_api.BIO_new(rb_method);
        if (nb == NULL) return NULL;
        ossl_membio_bio(membio) = nb;
        rb_api.BIO_free(old);
        st = (rb_state *)rb_api.BIO_get_data(nb);
        st->out = out;
        return st;
    }

    /* After a feed: what OpenSSL has not read of the lent bytes, kept. */
    static int rb_keep(rb_state *st) {
        size_t n = st->lent_len;
        const char *p = st->lent;
        st->lent = NULL;
        st->lent_len = 0;
        return n ? rb_append(st, p, n) : 0;
    }

    /* Incoming bytes OpenSSL has not read yet (kept and lent). */
    static Py_ssize_t rb_pending(rb_state *st) {
        return (Py_ssize_t)(st->len + st->lent_len);
    }
    #endif
    """
    ctypedef struct rb_state:
        const char *lent
        size_t lent_len
        char *buf
        size_t off
        size_t len
        char *dst
        size_t dst_len
        size_t dst_cap
        int oom
    void rb_drain(rb_state *st, char *out)
    int rb_setup(const ossl_api *api)
    rb_state *rb_swap(object membio, int out)
    int rb_keep(rb_state *st)
    Py_ssize_t rb_pending(rb_state *st)


cdef inline bytes rb_lend(rb_state *st, Py_ssize_t n):
    """A bytes object with room for the records of ``n`` bytes of
    plaintext, lent to the outgoing BIO ``st`` for one encryption (then
    rb_collect): a reused big one for bulk (buffers.pyx), else new."""
    # Each record's overhead: TLS 1.3 22 bytes, 1.2 GCM 29, CBC suites
    # more; anything beyond the room goes to the BIO's own buffer, in order.
    cdef Py_ssize_t cap = n + (n // 16384 + 1) * 96 + 256
    if BIG_MIN <= cap <= BIG_CAP:
        lent = big_bytes(cap)
    else:
        lent = PyBytes_FromStringAndSize(NULL, cap)
    st.dst = PyBytes_AS_STRING(lent)
    st.dst_cap = <size_t>cap
    st.dst_len = 0
    return lent


cdef inline bytes rb_collect(rb_state *st, bytes lent):
    """The ciphertext written since rb_lend, as one bytes: ``lent`` cut to
    length (no copy), then whatever went to the BIO's own buffer (handshake
    output, alerts, overflow).  ``lent`` None: only the latter."""
    cdef Py_ssize_t k = <Py_ssize_t>st.dst_len
    st.dst = NULL
    st.dst_len = st.dst_cap = 0
    if st.oom:
        st.oom = 0
        raise MemoryError("TLS: no memory for outgoing ciphertext")
    if lent is None or k == 0:
        lent = b""
    else:
        bytes_set_length(lent, k)       # nobody else has seen it yet
    if st.len:
        rest = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>st.len)
        rb_drain(st, PyBytes_AS_STRING(rest))
        lent = lent + rest
    return lent
