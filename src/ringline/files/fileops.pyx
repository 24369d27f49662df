# cython: language_level=3, boundscheck=False, wraparound=False
"""Files on the ring: the completions and buffers behind ``ringline.files.fs``.

One ``FileOp`` (a loop Completion) per file operation.  Each submit function
below builds the op, takes everything the SQE will point at, and only then
asks the loop for the SQE, so a failure never leaves a half-filled SQE behind.
The op is returned; Python awaits ``op.fut``.

Kernel ownership (pitfalls.md #1): every pointer an SQE carries points into
memory owned by its FileOp, which the loop's slot table pins from
``sqe_for`` until the final CQE:

* the ``bytes`` object a read fills (``rbuf``, an owned reference that is
  resized to the result and handed out at the CQE, never before);
* Py_buffer views of the caller's objects (``views``): holding a view pins the
  exporter, so a bytearray cannot be resized, an mmap cannot be closed and a
  DirectBuffer cannot be released while the kernel may write into it;
* the iovec array of readv/writev, the encoded path, the statx struct;
* a registered pool buffer (``pool``/``fixed_index``), given back to the pool
  at the final CQE, even when nobody waits for the result any more.

These are released in ``finish`` (called at the final CQE) or in
``__dealloc__`` (an op that was never submitted).  An op whose awaiting task
was cancelled still runs to its CQE; an ``openat`` that completes for nobody
closes the descriptor it produced, so cancellation never leaks an fd.
"""
cimport cython
from cpython.buffer cimport (PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE,
                             PyBUF_WRITABLE, PyBUF_FORMAT)
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from cpython.mem cimport PyMem_Malloc, PyMem_Calloc, PyMem_Free
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, int64_t, uint64_t, uintptr_t
from libc.string cimport memcpy
from posix.uio cimport iovec
from posix.unistd cimport close as c_close

from ringline._core.abi.uring cimport rl_sqe, RL_REGISTER_BUFFERS
from ringline._core.loop cimport Loop, Completion, bufs_lent_add
from ringline._core.ops cimport (prep_read, prep_write, prep_readv, prep_writev, prep_read_fixed,
                            prep_write_fixed, prep_fsync, prep_openat, prep_close, prep_statx,
                            prep_unlinkat, prep_renameat, prep_mkdirat, prep_cancel_fd)
from ringline._core.tags cimport Op

import collections
from asyncio import Future as _Future

from ringline.errors import DirectIOAlignmentError, IoUringResourceError, error_from_errno


from ringline._core.cpy cimport _PyBytes_Resize   # rbuf is an owned PyObject*: resized in place

cdef extern from "sys/mman.h" nogil:
    void *mmap(void *addr, size_t length, int prot, int flags, int fd, long offset)
    int munmap(void *addr, size_t length)
    void *MAP_FAILED
    int PROT_READ, PROT_WRITE, MAP_PRIVATE, MAP_ANONYMOUS, MAP_POPULATE

cdef extern from *:
    """
    #define PyBytes_GET_SIZE_(o) PyBytes_GET_SIZE((PyObject *)(o))
    """
    Py_ssize_t PyBytes_GET_SIZE_(PyObject *o)

cdef extern from "fcntl.h":
    int AT_FDCWD_ "AT_FDCWD"


cdef enum:
    K_RES = 0        # the result is res (a count, an fd, 0)
    K_BYTES = 1      # res bytes were read into rbuf
    K_OPEN = 2       # res is a new fd: closed if nobody is waiting for it
    K_STATX = 3      # the statx struct, as a tuple
    K_FIXED_READ = 4  # res bytes were read into a pool buffer: copy them out

# Largest count one read/write SQE may carry (the kernel caps a single
# read/write at MAX_RW_COUNT = INT_MAX & PAGE_MASK anyway).
MAX_IO = 0x7ffff000
AT_FDCWD = AT_FDCWD_
STATX_SIZE = sizeof(rl_statx)

cdef object _fut_new = _Future


cdef inline FileOp _new_op(Loop loop, object what, uint8_t kind):
    cdef FileOp op = FileOp.__new__(FileOp)
    op.loop = loop
    op.fut = _fut_new(loop=loop)
    op.what = what
    op.kind = kind
    op.fixed_index = -1
    return op


@cython.final
cdef class FileOp(Completion):
    """One file operation the kernel works on; await ``op.fut``."""

    def __dealloc__(self):
        # Reached only when the slot table no longer pins us: never submitted,
        # or finished (finish() already released everything).
        cdef int i
        if self.views != NULL:
            for i in range(self.nviews):
                PyBuffer_Release(&self.views[i])
            PyMem_Free(self.views)
            self.views = NULL
        Py_XDECREF(self.rbuf)
        self.rbuf = NULL
        PyMem_Free(self.iov)
        self.iov = NULL
        PyMem_Free(self.stx)
        self.stx = NULL

    cdef int finish(self) except -1:
        """The kernel is done with every pointer: release what we hold."""
        cdef int i
        if self.views != NULL:
            for i in range(self.nviews):
                PyBuffer_Release(&self.views[i])
            PyMem_Free(self.views)
            self.views = NULL
            self.nviews = 0
        PyMem_Free(self.iov)
        self.iov = NULL
        self.keep = None
        return 0

    cdef int on_cqe(self, Loop loop, int32_t res, uint32_t flags) except -1:
        cdef object fut = self.fut
        cdef object result
        cdef Pool pool = self.pool
        cdef int index = self.fixed_index
        self.finish()
        loop.stat_file_ops += 1
        if res < 0:
            loop.stat_file_errors += 1
        try:
            if fut.done():
                # Nobody waits (the awaiting task was cancelled).
                if self.kind == K_OPEN and res >= 0:
                    c_close(res)
                return 0
            try:
                if res < 0:
                    result = self._error(-res)
                    fut.set_exception(result)
                    return 0
                if self.kind == K_RES or self.kind == K_OPEN:
                    result = res
                elif self.kind == K_BYTES:
                    if res != PyBytes_GET_SIZE_(self.rbuf):
                        _PyBytes_Resize(&self.rbuf, res)
                    result = <object>self.rbuf
                    Py_XDECREF(self.rbuf)
                    self.rbuf = NULL
                elif self.kind == K_FIXED_READ:
                    result = PyBytes_FromStringAndSize(pool.addr(index), res)
                else:
                    result = _statx_tuple(self.stx)
            except BaseException as exc:     # MemoryError: the waiter must hear of it
                fut.set_exception(exc)
                return 0
            fut.set_result(result)
        finally:
            if pool is not None and index >= 0:
                self.pool = None
                self.fixed_index = -1
                pool.release_index(index)
        return 0

    cdef object _error(self, int err):
        exc = error_from_errno(err, self.what)
        if self.filename is not None:
            exc.filename = self.filename
            if self.filename2 is not None:
                exc.filename2 = self.filename2
        return exc

    def cancel(self):
        """Ask the kernel to cancel this op (its CQE still arrives)."""
        if self.in_flight and not self.loop._closed:
            self.loop.cancel_op(self)

    @property
    def pending(self):
        """True until the final CQE arrived."""
        return self.in_flight


cdef object _statx_tuple(rl_statx *s):
    return (s.mask, s.blksize, s.attributes, s.nlink, s.uid, s.gid, s.mode, s.ino,
            s.size, s.blocks, s.attributes_mask,
            s.atime.tv_sec * 1000000000 + s.atime.tv_nsec,
            s.btime.tv_sec * 1000000000 + s.btime.tv_nsec,
            s.ctime.tv_sec * 1000000000 + s.ctime.tv_nsec,
            s.mtime.tv_sec * 1000000000 + s.mtime.tv_nsec,
            s.rdev_major, s.rdev_minor, s.dev_major, s.dev_minor, s.mnt_id,
            s.dio_mem_align, s.dio_offset_align)


cdef inline int _views(FileOp op, int n) except -1:
    op.views = <Py_buffer*>PyMem_Calloc(n, sizeof(Py_buffer))
    if op.views == NULL:
        raise MemoryError()
    return 0


cdef inline int _check_count(Py_ssize_t n) except -1:
    if n < 0:
        raise ValueError(f"negative length {n}")
    if n > MAX_IO:
        raise ValueError(f"one operation transfers at most {MAX_IO} bytes (got {n})")
    return 0


cdef inline int _check_direct(Py_ssize_t addr, Py_ssize_t length, int64_t off,
                              int align, int mem_align) except -1:
    """O_DIRECT alignment rules, checked before anything reaches the kernel."""
    if off >= 0 and off % align:
        raise DirectIOAlignmentError("offset", off, align)
    if length % align:
        raise DirectIOAlignmentError("length", length, align)
    if mem_align > 0 and addr % mem_align:
        raise DirectIOAlignmentError("buffer address", addr, mem_align)
    return 0


# ---------------------------------------------------------------------------
# Submit functions: each returns the FileOp; ``await op.fut`` for the result.
# ``off`` = -1 means "at the file position" (and is required for pipes).
# ---------------------------------------------------------------------------

def openat(Loop loop, bytes path, int flags, unsigned mode, int dfd=AT_FDCWD_, filename=None):
    cdef FileOp op = _new_op(loop, "open", K_OPEN)
    op.keep = path
    op.filename = filename
    cdef rl_sqe *sqe = loop.sqe_for(op, Op.OPENAT)
    prep_openat(sqe, dfd, PyBytes_AS_STRING(path), flags, mode)
    return op


def close(Loop loop, int fd):
    cdef FileOp op = _new_op(loop, "close", K_RES)
    cdef rl_sqe *sqe = loop.sqe_for(op, Op.CLOSE)
    prep_close(sqe, fd)
    return op


def cancel_fd(Loop loop, int fd):
    """Cancel every request in flight on ``fd`` (fire and forget)."""
    cdef rl_sqe *sqe = loop.sqe_orphan(Op.CANCEL)
    prep_cancel_fd(sqe, fd, False)


def read(Loop loop, int fd, Py_ssize_t n, int64_t off):
    """Read up to n bytes into a new bytes object (no copy: the kernel writes
    into the bytes, which is shrunk to the result at the CQE)."""
    _check_count(n)
    cdef FileOp op = _new_op(loop, "read", K_BYTES)
    cdef object buf = PyBytes_FromStringAndSize(NULL, n)
    Py_INCREF(buf)
    op.rbuf = <PyObject*>buf
    cdef rl_sqe *sqe = loop.sqe_for(op, Op.READ)
    prep_read(sqe, fd, False, PyBytes_AS_STRING(buf), <uint32_t>n, <uint64_t>off)
    return op


def read_into(Loop loop, int fd, object buf, int64_t off, Pool pool=None,
              int align=0, int mem_align=0):
    """Read into the caller's writable buffer; the result is the count.

    If the buffer lies inside ``pool`` (a DirectBuffer or a slice of one)
    the read is a READ_FIXED on that registered buffer.  With ``align`` > 0
    (an O_DIRECT file) offset, length and address are checked first."""
    cdef FileOp op = _new_op(loop, "read", K_RES)
    cdef Py_buffer *v
    cdef int index = -1
    _views(op, 1)
    PyObject_GetBuffer(buf, &op.views[0], PyBUF_WRITABLE)
    op.nviews = 1
    v = &op.views[0]
    _check_count(v.len)
    if pool is not None:
        index = pool.index_of(<const char*>v.buf, v.len)
    if align > 0:
        _check_direct(<Py_ssize_t><uintptr_t>v.buf, v.len, off, align,
                      0 if index >= 0 else mem_align)
    cdef rl_sqe *sqe = loop.sqe_for(op, Op.READ_FIXED if index >= 0 else Op.READ)
    if index >= 0:
        prep_read_fixed(sqe, fd, False, v.buf, <uint32_t>v.len, <uint64_t>off, <uint16_t>index)
    else:
        prep_read(sqe, fd, False, v.buf, <uint32_t>v.len, <uint64_t>off)
    return op


def write(Loop loop, int fd, object data, int64_t off, Pool pool=None,
          int align=0, int mem_align=0, Py_ssize_t start=0, Py_ssize_t stop=-1):
    """Write data[start:stop] (any contiguous buffer) without copying it; the
    result is the count written.  Pool buffers go out as WRITE_FIXED."""
    cdef FileOp op = _new_op(loop, "write", K_RES)
    cdef Py_buffer *v
    cdef int index = -1
    cdef char *p
    cdef Py_ssize_t n
    _views(op, 1)
    PyObject_GetBuffer(data, &op.views[0], PyBUF_SIMPLE)
    op.nviews = 1
    v = &op.views[0]
    if stop < 0 or stop > v.len:
        stop = v.len
    if start < 0 or start > stop:
        raise ValueError(f"bad slice {start}:{stop} of a {v.len}-byte buffer")
    p = <char*>v.buf + start
    n = stop - start
    _check_count(n)
    if pool is not None:
        index = pool.index_of(p, n)
    if align > 0:
        _check_direct(<Py_ssize_t><uintptr_t>p, n, off, align, 0 if index >= 0 else mem_align)
    cdef rl_sqe *sqe = loop.sqe_for(op, Op.WRITE_FIXED if index >= 0 else Op.WRITE)
    if index >= 0:
        prep_write_fixed(sqe, fd, False, p, <uint32_t>n, <uint64_t>off, <uint16_t>index)
    else:
        prep_write(sqe, fd, False, p, <uint32_t>n, <uint64_t>off)
    return op


cdef FileOp _vector(Loop loop, int fd, object buffers, int64_t off, bint writing):
    cdef list bufs = list(buffers)
    cdef Py_ssize_t nb = len(bufs)
    cdef Py_ssize_t i, total = 0
    cdef iovec *iov
    if nb == 0:
        raise ValueError("readv/writev need at least one buffer")
    if nb > 1024:   # IOV_MAX
        raise ValueError(f"at most 1024 buffers per call (got {nb})")
    cdef FileOp op = _new_op(loop, "writev" if writing else "readv", K_RES)
    _views(op, <int>nb)
    op.iov = PyMem_Malloc(nb * sizeof(iovec))
    if op.iov == NULL:
        raise MemoryError()
    iov = <iovec*>op.iov
    for i in range(nb):
        PyObject_GetBuffer(bufs[i], &op.views[i], PyBUF_SIMPLE if writing else PyBUF_WRITABLE)
        op.nviews = <int>(i + 1)
        iov[i].iov_base = op.views[i].buf
        iov[i].iov_len = <size_t>op.views[i].len
        total += op.views[i].len
    _check_count(total)
    cdef rl_sqe *sqe = loop.sqe_for(op, Op.WRITEV if writing else Op.READV)
    if writing:
        prep_writev(sqe, fd, False, iov, <uint32_t>nb, <uint64_t>off)
    else:
        prep_readv(sqe, fd, False, iov, <uint32_t>nb, <uint64_t>off)
    return op


def readv(Loop loop, int fd, object buffers, int64_t off):
    return _vector(loop, fd, buffers, off, False)


def writev(Loop loop, int fd, object buffers, int64_t off):
    return _vector(loop, fd, buffers, off, True)


def fsync(Loop loop, int fd, bint datasync=False):
    cdef FileOp op = _new_op(loop, "fdatasync" if datasync else "fsync", K_RES)
    cdef rl_sqe *sqe = loop.sqe_for(op, Op.FSYNC)
    prep_fsync(sqe, fd, False, datasync)
    return op


def statx(Loop loop, bytes path, int flags, unsigned mask, int dfd=AT_FDCWD_, filename=None):
    """statx(2); the result is the tuple documented in fs.Statx."""
    cdef FileOp op = _new_op(loop, "stat", K_STATX)
    op.stx = <rl_statx*>PyMem_Calloc(1, sizeof(rl_statx))
    if op.stx == NULL:
        raise MemoryError()
    op.keep = path
    op.filename = filename
    cdef rl_sqe *sqe = loop.sqe_for(op, Op.STATX)
    prep_statx(sqe, dfd, PyBytes_AS_STRING(path), flags, mask, op.stx)
    return op


def unlinkat(Loop loop, bytes path, int flags, int dfd=AT_FDCWD_, filename=None):
    cdef FileOp op = _new_op(loop, "rmdir" if flags else "unlink", K_RES)
    op.keep = path
    op.filename = filename
    cdef rl_sqe *sqe = loop.sqe_for(op, Op.UNLINKAT)
    prep_unlinkat(sqe, dfd, PyBytes_AS_STRING(path), flags)
    return op


def renameat(Loop loop, bytes old, bytes new, unsigned flags=0, int olddfd=AT_FDCWD_,
             int newdfd=AT_FDCWD_, filename=None, filename2=None):
    cdef FileOp op = _new_op(loop, "rename", K_RES)
    op.keep = (old, new)
    op.filename = filename
    op.filename2 = filename2
    cdef rl_sqe *sqe = loop.sqe_for(op, Op.RENAMEAT)
    prep_renameat(sqe, olddfd, PyBytes_AS_STRING(old), newdfd, PyBytes_AS_STRING(new), flags)
    return op


def mkdirat(Loop loop, bytes path, unsigned mode, int dfd=AT_FDCWD_, filename=None):
    cdef FileOp op = _new_op(loop, "mkdir", K_RES)
    op.keep = path
    op.filename = filename
    cdef rl_sqe *sqe = loop.sqe_for(op, Op.MKDIRAT)
    prep_mkdirat(sqe, dfd, PyBytes_AS_STRING(path), mode)
    return op


# ---------------------------------------------------------------------------
# Fixed (registered) buffers for O_DIRECT
# ---------------------------------------------------------------------------

def read_fixed(Loop loop, int fd, Pool pool, int index, Py_ssize_t n, int64_t off):
    """READ_FIXED of n bytes into pool buffer ``index`` (which the op now
    owns and gives back at its CQE); the result is a copy, as bytes."""
    if n < 0 or n > pool.buffer_size:
        raise ValueError(f"length {n} does not fit a {pool.buffer_size}-byte pool buffer")
    cdef FileOp op = _new_op(loop, "read", K_FIXED_READ)
    cdef rl_sqe *sqe = loop.sqe_for(op, Op.READ_FIXED)
    op.pool = pool
    op.fixed_index = index
    prep_read_fixed(sqe, fd, False, pool.addr(index), <uint32_t>n, <uint64_t>off, <uint16_t>index)
    return op


def direct_read(Loop loop, int fd, Pool pool, Py_ssize_t n, int64_t off, int align):
    """The O_DIRECT pread fast path: alignment checks, a free pool buffer and
    a READ_FIXED in one call.  None when no pool buffer is free or ``n``
    needs several (the caller then waits or splits)."""
    cdef int index
    if off % align:
        raise DirectIOAlignmentError("offset", off, align)
    if n % align or n < 0:
        raise DirectIOAlignmentError("length", n, align)
    if n > pool.buffer_size:
        return None
    index = pool.try_acquire()
    if index < 0:
        return None
    try:
        return read_fixed(loop, fd, pool, index, n, off)
    except BaseException:
        pool.release_index(index)
        raise


def write_fixed(Loop loop, int fd, Pool pool, int index, object data, Py_ssize_t start,
                Py_ssize_t n, int64_t off):
    """Copy data[start:start+n] into pool buffer ``index`` and WRITE_FIXED
    it; the op owns the buffer until its CQE.  The result is the count."""
    cdef Py_buffer v
    if n < 0 or n > pool.buffer_size:
        raise ValueError(f"length {n} does not fit a {pool.buffer_size}-byte pool buffer")
    PyObject_GetBuffer(data, &v, PyBUF_SIMPLE)
    try:
        if start < 0 or start + n > v.len:
            raise ValueError("slice out of range")
        memcpy(pool.addr(index), <char*>v.buf + start, n)
    finally:
        PyBuffer_Release(&v)
    cdef FileOp op = _new_op(loop, "write", K_RES)
    cdef rl_sqe *sqe = loop.sqe_for(op, Op.WRITE_FIXED)
    op.pool = pool
    op.fixed_index = index
    prep_write_fixed(sqe, fd, False, pool.addr(index), <uint32_t>n, <uint64_t>off, <uint16_t>index)
    return op


def buffer_address(object obj):
    """(address, length) of a contiguous buffer (alignment checks, tests)."""
    cdef Py_buffer v
    PyObject_GetBuffer(obj, &v, PyBUF_SIMPLE)
    try:
        return <Py_ssize_t><uintptr_t>v.buf, v.len
    finally:
        PyBuffer_Release(&v)


@cython.final
cdef class Pool:

    def __cinit__(self, int nbufs, Py_ssize_t buffer_size):
        if nbufs < 1 or nbufs > 16384:
            raise ValueError(f"nbufs must be in 1..16384 (got {nbufs})")
        if buffer_size < 4096 or buffer_size % 4096 or buffer_size > (1 << 30):
            raise ValueError(f"buffer_size must be a multiple of 4096 up to 1 GiB (got {buffer_size})")
        self.base = NULL
        self.maplen = <size_t>nbufs * <size_t>buffer_size
        cdef void *p = mmap(NULL, self.maplen, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0)
        if p == MAP_FAILED:
            raise MemoryError(f"cannot map {self.maplen} bytes for O_DIRECT buffers")
        self.base = <char*>p
        self.nbufs = nbufs
        self.buffer_size = buffer_size
        self.free = list(range(nbufs - 1, -1, -1))
        self.waiters = collections.deque()

    def __dealloc__(self):
        # Only reached when no op and no DirectBuffer references us any more.
        if self.base != NULL:
            munmap(self.base, self.maplen)
            self.base = NULL

    def register(self, Loop loop):
        """IORING_REGISTER_BUFFERS on the loop's ring (owner thread only)."""
        cdef iovec *iov = <iovec*>PyMem_Malloc(self.nbufs * sizeof(iovec))
        cdef int i
        if iov == NULL:
            raise MemoryError()
        try:
            for i in range(self.nbufs):
                iov[i].iov_base = self.addr(i)
                iov[i].iov_len = <size_t>self.buffer_size
            loop.ring.register(RL_REGISTER_BUFFERS, iov, <unsigned>self.nbufs)
        finally:
            PyMem_Free(iov)
        self.registered = True

    cdef int index_of(self, const char *p, Py_ssize_t n) noexcept:
        """The pool buffer [p, p+n) lies in, or -1."""
        cdef size_t rel
        cdef int index
        if not self.registered or p < self.base or p >= self.base + self.maplen:
            return -1
        rel = <size_t>(p - self.base)
        index = <int>(rel // <size_t>self.buffer_size)
        if rel - <size_t>index * <size_t>self.buffer_size + <size_t>n > <size_t>self.buffer_size:
            return -1
        return index

    def index_of_buffer(self, object obj):
        """The registered buffer holding all of ``obj``'s memory, or -1."""
        cdef Py_buffer v
        PyObject_GetBuffer(obj, &v, PyBUF_SIMPLE)
        try:
            return self.index_of(<const char*>v.buf, v.len)
        finally:
            PyBuffer_Release(&v)

    cpdef int try_acquire(self):
        if self.free:
            return <int>self.free.pop()
        return -1

    cpdef release_index(self, int index):
        self.free.append(index)
        self.wake_next()

    def wake_next(self):
        cdef object w
        while self.waiters:
            w = self.waiters.popleft()
            if not w.done():
                w.set_result(None)
                return

    def wait(self, loop):
        """A future resolved when a buffer may be free (then try again)."""
        fut = _fut_new(loop=loop)
        self.waiters.append(fut)
        return fut

    @property
    def available(self):
        return len(self.free)

    @property
    def address(self):
        return <Py_ssize_t><uintptr_t>self.base

    def lend(self, int index, Py_ssize_t length):
        """Hand pool buffer ``index`` to the user as a DirectBuffer."""
        if length <= 0 or length > self.buffer_size:
            raise ValueError(f"a DirectBuffer holds 1..{self.buffer_size} bytes (got {length})")
        cdef DirectBuffer b = DirectBuffer.__new__(DirectBuffer)
        b.pool = self
        b.index = index
        b.length = length
        b.one = 1
        self.lent += 1
        bufs_lent_add(1)
        return b


@cython.final
cdef class DirectBuffer:
    """An aligned buffer registered with the ring, lent by ringline.

    Supports the buffer protocol (``memoryview(buf)``) and zero-copy
    ``read_into``/``pwrite`` on O_DIRECT files (READ_FIXED/WRITE_FIXED).
    Give it back with ``release()`` or a ``with`` block; releasing while a
    memoryview of it (or an operation in flight on it) is alive raises
    BufferError, so the memory is never reused under a live view.
    """

    def __init__(self, *a, **k):
        raise TypeError("DirectBuffers are lent by ringline.files.fs.direct_buffer()")

    def __getbuffer__(self, Py_buffer *view, int flags):
        if self.released:
            raise ValueError("this DirectBuffer was released")
        view.buf = self.pool.addr(self.index)
        view.obj = self
        view.len = self.length
        view.readonly = 0
        view.itemsize = 1
        if flags & PyBUF_FORMAT:
            view.format = b"B"
        else:
            view.format = NULL
        view.ndim = 1
        view.shape = &self.length
        view.strides = &self.one
        view.suboffsets = NULL
        view.internal = NULL
        self.exports += 1

    def __releasebuffer__(self, Py_buffer *view):
        self.exports -= 1

    def __len__(self):
        return self.length

    @property
    def address(self):
        return <Py_ssize_t><uintptr_t>self.pool.addr(self.index)

    def release(self):
        """Give the buffer back to the pool (idempotent)."""
        if self.released:
            return
        if self.exports:
            raise BufferError(f"cannot release a DirectBuffer while {self.exports} "
                              f"view(s) of it (memoryviews or operations in flight) are alive")
        self.released = True
        self.pool.lent -= 1
        bufs_lent_add(-1)
        self.pool.release_index(self.index)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()

    def __del__(self):
        if not self.released and self.pool is not None:
            import warnings
            warnings.warn("DirectBuffer was never released", ResourceWarning, source=self)
            self.exports = 0
            self.release()

    def __repr__(self):
        state = "released" if self.released else f"{self.length} bytes"
        return f"<DirectBuffer #{self.index} {state}>"


def new_pool(int nbufs, Py_ssize_t buffer_size):
    return Pool(nbufs, buffer_size)


def register_pool(Loop loop, Pool pool):
    """Register ``pool`` with the loop's ring; ENOMEM becomes a resource error."""
    import errno as _errno
    try:
        pool.register(loop)
    except OSError as exc:
        if exc.errno == _errno.ENOMEM:
            raise IoUringResourceError(
                f"registering {pool.nbufs} O_DIRECT buffers of {pool.buffer_size} bytes") from None
        if exc.errno == _errno.EBUSY:
            raise RuntimeError("this loop's ring already has registered buffers "
                               "(another layer registered them); ringline.files.fs cannot "
                               "register its O_DIRECT pool") from None
        raise
