# cython: language_level=3, boundscheck=False, wraparound=False
"""Buffers the kernel reads and writes for the network layer.

``BufRing``: the provided-buffer ring multishot receives pick from
(IORING_REGISTER_PBUF_RING; incremental consumption on 6.12+).
``SendPool``: fixed-size slots that hold copies of mutable send payloads
until their send CQE.  Each class states its kernel-ownership rule.
"""

cimport cython
from cpython.mem cimport PyMem_Malloc, PyMem_Calloc, PyMem_Free
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize
from cpython.ref cimport PyObject, Py_INCREF
from libc.errno cimport EINVAL
from libc.stdint cimport uint16_t, uint32_t, int32_t, uint64_t
from libc.string cimport memset
from posix.mman cimport mmap, munmap, PROT_READ, PROT_WRITE, MAP_PRIVATE, MAP_ANONYMOUS, MAP_FAILED
from ringline._core.abi.uring cimport *
from ringline._core.loop cimport Loop
from ringline._core.cpy cimport bytes_forget_hash
cdef extern from "Python.h":
    void _set_size "Py_SET_SIZE"(PyObject *o, Py_ssize_t n)
    Py_ssize_t _refcnt "Py_REFCNT"(PyObject *o)      # on a borrowed pointer: no temp reference
    void _decref "Py_DECREF"(PyObject *o)

# The spare pool of a BufRing (see steal) keeps at most this many buffers and
# this many bytes (but at least SPARE_MIN buffers); a steal looks at no more
# than SPARE_SCAN of them for a free one.
cdef uint32_t SPARE_MAX = 64
cdef uint32_t SPARE_MIN = 4
cdef size_t SPARE_BYTES = 4 << 20
cdef uint32_t SPARE_SCAN = 16


# IORING_REGISTER_PBUF_STATUS (6.8): the kernel's head of a buffer ring.
cdef unsigned _REGISTER_PBUF_STATUS = 26
cdef struct _pbuf_status:
    uint32_t buf_group
    uint32_t head
    uint32_t resv[8]


cdef void bytes_set_length(bytes b, Py_ssize_t n) noexcept:
    """Shorten ``b`` to its first ``n`` bytes in place, keeping its
    allocation (no realloc): only for an object nobody else has seen yet, or
    one the spare pool may grow back (see BufRing.steal)."""
    _set_size(<PyObject*>b, n)
    PyBytes_AS_STRING(b)[n] = 0


# Big bytes (``big_bytes``): record buffers of native TLS sends and the
# heads that large receives decrypt into.  A fresh ~256 KiB object per use
# sits above glibc's mmap threshold (or its heap-trim threshold), so its
# pages were faulted in and zeroed by the kernel on every use: ~6% of a TLS
# bulk server's CPU.  The pool keeps BIG_N of them and hands one out again
# only while it holds the sole reference -- nobody (the send queue until the
# kernel took the bytes, a zero-copy send until its notification, a user
# holding a received head) can see it change.  Process-wide, guarded by the
# GIL (loops on several threads share it); at most BIG_N * BIG_CAP bytes.
cdef enum:
    BIG_N = 8
cdef PyObject *_big[BIG_N]
cdef int _big_n = 0
cdef int _big_next = 0


cdef bytes big_bytes(Py_ssize_t n):
    """A bytes object ``n`` long (BIG_MIN <= n <= BIG_CAP) for in-place
    writing: a pooled one nobody else holds, or a new one that the pool
    tracks while it has room.  Cut it with bytes_set_length, never
    _PyBytes_Resize (the pool may hold it)."""
    global _big_n, _big_next
    cdef int i, j
    cdef PyObject *o
    for i in range(_big_n):
        j = (_big_next + i) % _big_n
        o = _big[j]
        if _refcnt(o) == 1:
            _big_next = (j + 1) % _big_n
            _set_size(o, n)         # allocated BIG_CAP long, only ever cut in place
            PyBytes_AS_STRING(<bytes>o)[n] = 0
            bytes_forget_hash(o)
            return <bytes>o         # a new reference; the pool keeps its own
    b = PyBytes_FromStringAndSize(NULL, BIG_CAP)
    if _big_n < BIG_N:
        Py_INCREF(b)
        _big[_big_n] = <PyObject*>b
        _big_n += 1
    bytes_set_length(b, n)
    return b


def big_stats():
    """(pooled big buffers, of them free): for tests."""
    cdef int i, free = 0
    for i in range(_big_n):
        if _refcnt(_big[i]) == 1:
            free += 1
    return _big_n, free


cdef inline size_t _page_round(size_t n) noexcept:
    return (n + 4095) & ~(<size_t>4095)


@cython.final
cdef class BufRing:

    def __init__(self, *a, **k):
        raise TypeError("made by the loop's NetState")

    @staticmethod
    cdef BufRing create(Loop loop, uint32_t entries, uint32_t size, uint16_t bgid, bint use_inc=True):
        cdef BufRing self = BufRing.__new__(BufRing)
        cdef rl_buf_reg reg
        cdef uint32_t i
        cdef size_t n
        cdef void *p
        self.loop = loop
        self.entries = entries
        self.mask = entries - 1
        self.size = size
        self.bgid = bgid
        self.ring_len = _page_round(entries * sizeof(rl_buf))
        p = mmap(NULL, self.ring_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        if p == MAP_FAILED:
            raise MemoryError("provided buffer ring")
        self.ring = <rl_buf*>p
        self.off = <uint32_t*>PyMem_Calloc(entries, sizeof(uint32_t))
        self.addr = <char**>PyMem_Calloc(entries, sizeof(char*))
        if self.off == NULL or self.addr == NULL:
            self.close_ring()
            raise MemoryError("provided buffer offsets")
        self.bufs = [None] * entries
        for i in range(entries):
            b = PyBytes_FromStringAndSize(NULL, size)
            self.bufs[i] = b
            self.addr[i] = PyBytes_AS_STRING(b)
        b = None        # bufs holds the only reference to each (see steal)
        n = SPARE_BYTES // size
        self.spare_cap = SPARE_MIN if n < SPARE_MIN else (SPARE_MAX if n > SPARE_MAX else <uint32_t>n)
        self.spare = <PyObject**>PyMem_Calloc(self.spare_cap, sizeof(PyObject*))
        if self.spare == NULL:
            self.close_ring()
            raise MemoryError("provided buffer spares")
        memset(&reg, 0, sizeof(reg))
        reg.ring_addr = <uint64_t>self.ring
        reg.ring_entries = entries
        reg.bgid = bgid
        reg.flags = RL_IOU_PBUF_RING_INC if use_inc else 0
        try:
            loop.ring.register(RL_REGISTER_PBUF_RING, &reg, 1)
        except OSError as exc:
            if not use_inc or exc.errno != EINVAL:
                raise
            reg.flags = 0       # before 6.12: one buffer per receive
            loop.ring.register(RL_REGISTER_PBUF_RING, &reg, 1)
        self.inc = reg.flags != 0
        self.registered = True
        self.tail = 0
        for i in range(entries):
            self._add(i)
        rl_store_release16(&(<uint16_t*>self.ring)[7], self.tail)
        return self

    cdef inline char* ptr(self, uint32_t bid) noexcept:
        return self.addr[bid]

    cdef inline void _add(self, uint32_t bid) noexcept:
        # Entry 0's last 2 bytes are the ring tail: write fields, not the struct.
        cdef rl_buf *e = &self.ring[self.tail & self.mask]
        e.addr = <uint64_t>self.addr[bid]
        e.len = self.size
        e.bid = <uint16_t>bid
        self.tail += 1

    cdef void recycle(self, uint32_t bid) noexcept:
        """Give buffer ``bid`` back to the kernel (its bytes were copied out)."""
        self._add(bid)
        rl_store_release16(&(<uint16_t*>self.ring)[7], self.tail)

    cdef inline char* data(self, uint32_t bid) noexcept:
        """Where the bytes of the CQE naming ``bid`` start."""
        return self.addr[bid] + self.off[bid]

    cdef bytes steal(self, uint32_t bid, Py_ssize_t length):
        """Hand out the bytes object behind buffer ``bid``, cut to ``length``
        (its first bytes are what the kernel wrote), and back ``bid`` with a
        fresh one.  Only for a buffer the kernel has finished with (its CQE
        carried no BUF_MORE), before ``consumed`` gives ``bid`` back.

        The fresh buffer is a spare when one is free, else a new allocation.
        Spares are the objects handed out earlier: the pool keeps a reference
        to each (``_keep``) and takes one back when that reference is the
        only one left, i.e. every receiver has dropped it and no send pins it
        any more.  Recycling them ourselves keeps the process's heap still:
        new 64 KiB allocations freed in bursts after their send CQEs would
        make glibc trim the heap top and fault it in again (several page
        faults per message).  A handed-out object keeps its whole allocation
        (its length is cut in place, not by realloc), so it can be grown back:
        a receive held by the application costs up to one buffer
        (``length`` >= half of it when handed out)."""
        fresh = self._fresh()
        if fresh is None:
            fresh = PyBytes_FromStringAndSize(NULL, self.size)
        self.handed_out += 1
        old = self.bufs[bid]
        self.bufs[bid] = fresh
        self.addr[bid] = PyBytes_AS_STRING(fresh)
        fresh = None
        if length != PyBytes_GET_SIZE(old):
            bytes_set_length(old, length)
        self._keep(old)
        return old

    cdef bytes _fresh(self):
        """A free spare, made whole again, or None.

        Kernel ownership: a spare is only ever taken when the pool holds its
        sole reference (nobody else can see it, so its bytes may change); it
        then backs a ring buffer and is out of the pool until handed out
        again.  The object was created ``size`` long and never reallocated
        (its length is only cut in place), so restoring the length is safe;
        its cached hash is cleared for the new contents."""
        cdef uint32_t i, j, k
        cdef PyObject *o
        k = self.spare_n if self.spare_n < SPARE_SCAN else SPARE_SCAN
        for i in range(k):
            j = (self.spare_next + i) % self.spare_n
            o = self.spare[j]
            if _refcnt(o) == 1:
                self.spare_n -= 1
                self.spare[j] = self.spare[self.spare_n]
                self.spare[self.spare_n] = NULL
                self.spare_next = j
                b = <bytes>o        # our reference now ...
                _decref(o)          # ... instead of the pool's
                _set_size(o, self.size)
                PyBytes_AS_STRING(b)[self.size] = 0
                bytes_forget_hash(o)
                self.reused += 1
                return b
        if k:
            self.spare_next = (self.spare_next + k) % self.spare_n
        return None

    cdef int _keep(self, bytes b) except -1:
        """Track handed-out ``b`` as a future spare; when the pool is full,
        let go of the entry where the next scan starts (if it is still held,
        it simply stays with its holder)."""
        cdef uint32_t j
        cdef PyObject *o
        if self.spare == NULL:
            return 0
        Py_INCREF(b)
        if self.spare_n < self.spare_cap:
            self.spare[self.spare_n] = <PyObject*>b
            self.spare_n += 1
        else:
            j = self.spare_next % self.spare_cap
            o = self.spare[j]
            self.spare[j] = <PyObject*>b
            self.spare_next = (j + 1) % self.spare_cap
            _decref(o)
        return 0

    cdef void consumed(self, uint32_t bid, int32_t res, uint32_t flags) noexcept:
        """The bytes of a CQE naming ``bid`` were copied out."""
        if self.inc and (flags & RL_CQE_F_BUF_MORE):
            self.off[bid] += <uint32_t>res      # the kernel goes on filling it
        else:
            self.off[bid] = 0
            self.recycle(bid)

    def out_of_ring(self):
        """Buffers not in the kernel's ring right now: the ring's tail against
        the kernel's head (IORING_REGISTER_PBUF_STATUS, 6.8+; -1 when the
        kernel cannot say).  0 whenever no receive is being dispatched: a
        buffer a CQE named and nobody gave back is lost to the ring for good
        (what the cancellation tests check).  A syscall: not for hot paths."""
        cdef _pbuf_status st
        if not self.registered or self.loop.ring is None or self.loop._closed:
            return -1
        memset(&st, 0, sizeof(st))
        st.buf_group = self.bgid
        try:
            self.loop.ring.register(_REGISTER_PBUF_STATUS, &st, 1)
        except OSError:
            return -1
        return <int>self.entries - <int>(<uint16_t>(self.tail - <uint16_t>st.head))

    cdef int close_ring(self) except -1:
        # Called after the loop's ring is closed (which unregisters the group).
        if self.off != NULL:
            PyMem_Free(self.off)
            self.off = NULL
        if self.ring != NULL:
            munmap(self.ring, self.ring_len)
            self.ring = NULL
        if self.addr != NULL:
            PyMem_Free(self.addr)
            self.addr = NULL
        if self.spare != NULL:
            while self.spare_n:
                self.spare_n -= 1
                _decref(self.spare[self.spare_n])
            PyMem_Free(self.spare)
            self.spare = NULL
        self.bufs = None
        return 0

    def __dealloc__(self):
        self.close_ring()


# Bulk mode (Stream.bulk): about this many more receives of at least half a
# buffer than small ones move a stream onto the large-receive ring; this many in a row
# of under a quarter move it back.  The large-receive ring: plain buffers, one receive each.

cdef bint pbuf_inc_supported(Loop loop, uint16_t bgid) except -1:
    """Does this kernel consume provided buffers incrementally (6.12+)?
    Registers a one-entry ring with the flag under ``bgid`` and takes it
    back; older kernels refuse the unknown flag with EINVAL."""
    cdef rl_buf_reg reg
    cdef void *p
    p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    if p == MAP_FAILED:
        raise MemoryError("provided buffer ring probe")
    try:
        memset(&reg, 0, sizeof(reg))
        reg.ring_addr = <uint64_t>p
        reg.ring_entries = 1
        reg.bgid = bgid
        reg.flags = RL_IOU_PBUF_RING_INC
        try:
            loop.ring.register(RL_REGISTER_PBUF_RING, &reg, 1)
        except OSError as exc:
            if exc.errno == EINVAL:
                return False
            raise
        memset(&reg, 0, sizeof(reg))
        reg.bgid = bgid
        loop.ring.register(RL_UNREGISTER_PBUF_RING, &reg, 1)
        return True
    finally:
        munmap(p, 4096)


@cython.final
cdef class SendPool:

    def __init__(self, *a, **k):
        raise TypeError("made by the loop's NetState")

    @staticmethod
    cdef SendPool create(uint32_t count, uint32_t slot_size):
        cdef SendPool self = SendPool.__new__(SendPool)
        cdef uint32_t i
        cdef void *p
        self.count = count
        self.slot_size = slot_size
        self.area_len = _page_round(<size_t>count * slot_size)
        # Anonymous mapping: virtual until touched, so a large pool costs
        # memory only for the slots actually used.
        p = mmap(NULL, self.area_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        if p == MAP_FAILED:
            raise MemoryError("send pool")
        self.area = <char*>p
        self.free = <uint32_t*>PyMem_Malloc(count * sizeof(uint32_t))
        if self.free == NULL:
            raise MemoryError()
        for i in range(count):
            self.free[i] = count - 1 - i
        self.nfree = count
        return self

    cdef int acquire(self) noexcept:
        if self.nfree == 0:
            return -1
        self.nfree -= 1
        return <int>self.free[self.nfree]

    cdef void release(self, int slot) noexcept:
        self.free[self.nfree] = <uint32_t>slot
        self.nfree += 1

    cdef inline char* ptr(self, int slot) noexcept:
        return self.area + <size_t>slot * self.slot_size

    @property
    def slots_free(self):
        return self.nfree

    def __dealloc__(self):
        if self.area != NULL:
            munmap(self.area, self.area_len)
            self.area = NULL
        if self.free != NULL:
            PyMem_Free(self.free)
            self.free = NULL
