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
from ringline._core.cpy cimport bytes_resize_stolen
from ringline._core.loop cimport Loop
cdef extern from "sys/socket.h" nogil:
    int MSG_NOSIGNAL
    int MSG_WAITALL
    int SOCK_NONBLOCK
    int SOCK_CLOEXEC
    int setsockopt(int fd, int level, int name, const void *val, unsigned len)
    int shutdown(int fd, int how)
    int SHUT_WR

cdef extern from "errno.h":
    int ECANCELED
    int EOPNOTSUPP
    int ENFILE
    int EMFILE

cdef extern from "netinet/in.h" nogil:
    int IPPROTO_TCP

cdef extern from "sys/socket.h" nogil:
    ctypedef unsigned int socklen_t
    ctypedef struct sockaddr_t "struct sockaddr":
        pass
    int getpeername(int fd, sockaddr_t *addr, socklen_t *len)
    int getsockname(int fd, sockaddr_t *addr, socklen_t *len)
    int AF_INET
    int AF_INET6

cdef extern from "arpa/inet.h" nogil:
    const char *inet_ntop(int af, const void *src, char *dst, socklen_t size)
    uint16_t ntohs(uint16_t v)
    uint32_t ntohl(uint32_t v)

cdef extern from "netinet/tcp.h" nogil:
    int TCP_NODELAY


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
        carried no BUF_MORE), before ``consumed`` gives ``bid`` back."""
        cdef PyObject *raw
        fresh = PyBytes_FromStringAndSize(NULL, self.size)
        self.handed_out += 1
        old = self.bufs[bid]
        self.bufs[bid] = fresh
        self.addr[bid] = PyBytes_AS_STRING(fresh)
        fresh = None
        if length != PyBytes_GET_SIZE(old):
            raw = <PyObject*>old
            Py_INCREF(old)
            old = None
            old = bytes_resize_stolen(raw, length)
        return old

    cdef void consumed(self, uint32_t bid, int32_t res, uint32_t flags) noexcept:
        """The bytes of a CQE naming ``bid`` were copied out."""
        if self.inc and (flags & RL_CQE_F_BUF_MORE):
            self.off[bid] += <uint32_t>res      # the kernel goes on filling it
        else:
            self.off[bid] = 0
            self.recycle(bid)

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
