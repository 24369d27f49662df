# Files on the ring: one Completion type for every file operation, and the
# registered, aligned buffer pool behind O_DIRECT.  See files/fileops.pyx.
from cpython.object cimport PyObject
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, int64_t, uint64_t
from ringline._core.loop cimport Loop, Completion


cdef extern from *:
    """
    #include <stdint.h>
    /* struct statx of <linux/stat.h>, under our own name so that it never
       clashes with glibc's copy; the layout is the kernel ABI (256 bytes). */
    typedef struct { int64_t tv_sec; uint32_t tv_nsec; int32_t reserved; } rl_statx_ts;
    typedef struct {
        uint32_t mask; uint32_t blksize; uint64_t attributes;
        uint32_t nlink; uint32_t uid; uint32_t gid; uint16_t mode; uint16_t spare0;
        uint64_t ino; uint64_t size; uint64_t blocks; uint64_t attributes_mask;
        rl_statx_ts atime; rl_statx_ts btime; rl_statx_ts ctime; rl_statx_ts mtime;
        uint32_t rdev_major; uint32_t rdev_minor; uint32_t dev_major; uint32_t dev_minor;
        uint64_t mnt_id;
        uint32_t dio_mem_align; uint32_t dio_offset_align;
        uint64_t spare3[12];
    } rl_statx;
    _Static_assert(sizeof(rl_statx) == 256, "struct statx is 256 bytes");
    _Static_assert(__builtin_offsetof(rl_statx, dio_mem_align) == 0x98, "statx layout");
    """
    ctypedef struct rl_statx_ts:
        int64_t tv_sec
        uint32_t tv_nsec
    ctypedef struct rl_statx:
        uint32_t mask
        uint32_t blksize
        uint64_t attributes
        uint32_t nlink
        uint32_t uid
        uint32_t gid
        uint16_t mode
        uint64_t ino
        uint64_t size
        uint64_t blocks
        uint64_t attributes_mask
        rl_statx_ts atime
        rl_statx_ts btime
        rl_statx_ts ctime
        rl_statx_ts mtime
        uint32_t rdev_major
        uint32_t rdev_minor
        uint32_t dev_major
        uint32_t dev_minor
        uint64_t mnt_id
        uint32_t dio_mem_align
        uint32_t dio_offset_align


cdef class Pool:
    """Page-aligned buffers of one size for O_DIRECT, registered with one
    loop's ring (IORING_REGISTER_BUFFERS) so READ_FIXED/WRITE_FIXED can use
    them by index.  Invariant: an index is either in ``free`` or owned by
    exactly one FileOp in flight or one DirectBuffer lent to the user."""
    cdef char *base
    cdef size_t maplen
    cdef readonly int nbufs
    cdef readonly Py_ssize_t buffer_size
    cdef list free
    cdef object waiters            # deque of futures waiting for a free buffer
    cdef readonly bint registered
    cdef readonly int lent         # DirectBuffers currently lent to the user
    cdef inline char *addr(self, int index) noexcept:
        return self.base + <size_t>index * <size_t>self.buffer_size
    cdef int index_of(self, const char *p, Py_ssize_t n) noexcept
    cpdef int try_acquire(self)
    cpdef release_index(self, int index)


cdef class DirectBuffer:
    cdef Pool pool
    cdef readonly int index
    cdef Py_ssize_t length
    cdef Py_ssize_t one
    cdef int exports
    cdef readonly bint released


cdef class FileOp(Completion):
    cdef readonly object fut
    cdef Loop loop
    cdef object keep               # objects the SQE points into (path bytes)
    cdef object what
    cdef object filename
    cdef object filename2
    cdef PyObject *rbuf            # owned bytes being read into (K_BYTES)
    cdef Py_buffer *views          # caller's buffers held until the CQE
    cdef int nviews
    cdef void *iov                 # iovec array (readv/writev)
    cdef rl_statx *stx
    cdef Pool pool                 # fixed-buffer ops: the buffer to give back
    cdef int fixed_index
    cdef uint8_t kind
    cdef int finish(self) except -1
    cdef object _error(self, int err)
