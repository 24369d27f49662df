# Buffers the kernel reads and writes for the network layer (see buffers.pyx).
from cpython.ref cimport PyObject
from libc.stdint cimport uint16_t, uint32_t, int32_t, uint64_t
from ringline._core.loop cimport Loop
from ringline._core.abi.uring cimport rl_buf


cdef class BufRing:
    """The loop's provided-buffer ring (IORING_REGISTER_PBUF_RING) for recv.

    Kernel ownership: a buffer belongs to the kernel from ``recycle`` (or the
    initial fill) until a CQE names its bid; the receiving stream copies the
    bytes out (or takes the whole buffer: ``steal`` swaps in a fresh one)
    during that CQE's dispatch and calls ``consumed`` right away, so no
    provided buffer is ever held across a loop iteration.

    Incremental consumption (``inc``, IOU_PBUF_RING_INC, kernel 6.12+): the
    kernel packs successive receives into one buffer, each CQE's bytes
    starting where the previous one's ended (``off[bid]``); a CQE flagged
    IORING_CQE_F_BUF_MORE leaves the buffer with the kernel, one without it
    hands it back.  Small messages then share a buffer instead of taking one
    each, so a few large buffers serve many connections; the ring stays small
    enough to stay in cache.
    """
    cdef Loop loop
    cdef rl_buf *ring            # mmap'd array of ``entries`` io_uring_buf
    # Buffer bid is the storage of the bytes object bufs[bid] (addr[bid] is
    # its data), so a receive that filled one whole buffer can be handed out
    # as that object, without a copy (steal).  Kernel ownership: bufs keeps
    # every buffer alive until close_ring, which runs after the ring is gone.
    cdef list bufs
    cdef char **addr
    cdef uint32_t entries
    cdef uint32_t mask
    cdef uint32_t size
    cdef uint16_t bgid
    cdef uint16_t tail
    cdef size_t ring_len
    cdef readonly uint64_t enobufs     # times a multishot recv found it empty
    cdef readonly uint64_t handed_out  # buffers handed out whole as bytes (steal)
    cdef bint registered
    cdef readonly bint inc             # incremental consumption is on
    cdef uint32_t *off                 # inc: bytes of buffer bid already delivered
    # Spare pool (see steal): owned references to buffers handed out whole,
    # each reused as a fresh buffer once the pool's is its only reference.
    cdef PyObject **spare
    cdef uint32_t spare_n
    cdef uint32_t spare_cap
    cdef uint32_t spare_next           # where the next scan / eviction starts
    cdef readonly uint64_t reused      # fresh buffers taken from the spare pool

    @staticmethod
    cdef BufRing create(Loop loop, uint32_t entries, uint32_t size, uint16_t bgid, bint use_inc=*)
    cdef inline char* ptr(self, uint32_t bid) noexcept
    cdef inline char* data(self, uint32_t bid) noexcept
    cdef void consumed(self, uint32_t bid, int32_t res, uint32_t flags) noexcept
    cdef bytes steal(self, uint32_t bid, Py_ssize_t length)
    cdef bytes _fresh(self)
    cdef int _keep(self, bytes b) except -1
    cdef inline void _add(self, uint32_t bid) noexcept
    cdef void recycle(self, uint32_t bid) noexcept
    cdef int close_ring(self) except -1


cdef class SendPool:
    """Fixed-size slots for copies of mutable send payloads.

    Kernel ownership: a slot is reserved in ``acquire`` and released by the
    send completion that finished its bytes (``release``).
    """
    cdef char *area
    cdef size_t area_len
    cdef uint32_t slot_size
    cdef uint32_t count
    cdef uint32_t *free
    cdef uint32_t nfree
    cdef readonly uint64_t exhausted   # sends refused: too few free slots (SendPoolExhausted)

    @staticmethod
    cdef SendPool create(uint32_t count, uint32_t slot_size)
    cdef int acquire(self) noexcept
    cdef void release(self, int slot) noexcept
    cdef inline char* ptr(self, int slot) noexcept


cdef bint pbuf_inc_supported(Loop loop, uint16_t bgid) except -1


cdef void bytes_set_length(bytes b, Py_ssize_t n) noexcept

# Reusable big bytes (see buffers.pyx, "Big bytes"): for n in [BIG_MIN, BIG_CAP].
cdef enum:
    BIG_MIN = 64 * 1024
    BIG_CAP = 264 * 1024        # a 256 KiB TLS CHUNK's records, or a 256 KiB head
cdef bytes big_bytes(Py_ssize_t n)
