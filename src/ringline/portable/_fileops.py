"""The file operations of ``ringline.fs`` without io_uring, in pure Python.

The same functions and objects as the compiled ``ringline.files.fileops`` (see
``files/fileops.pyi``), which :mod:`ringline.files.fs` picks per loop (its
``_layer``) so that one code path serves both backends: each submit function checks its arguments at once (the same
exceptions: ValueError, DirectIOAlignmentError) and returns a
:class:`FileOp` whose ``fut`` resolves with the same result, but the
system call runs on a worker thread (``os.pread``, ``os.preadv``,
``os.pwrite``, ...; ``statx(2)`` through ctypes).  This is what aiofiles
does for every call, minus its wrappers.

O_DIRECT buffers are anonymous ``mmap`` mappings (page-aligned):
:class:`Pool` keeps one per slot for internal reads and writes, and a
:class:`DirectBuffer` lent to the application is its own mapping (an
``mmap`` subclass, so it has the buffer protocol without C code).  A thread
cannot be cancelled: ``FileOp.cancel`` only stops waiting, and a pool slot
or an opened descriptor is given back when the thread finishes.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import ctypes
import errno
import mmap
import os
import threading
import warnings
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from ringline.config import Config
from ringline.errors import DirectIOAlignmentError, error_from_errno

MAX_IO = 0x7FFFF000          # the kernel's MAX_RW_COUNT on 4 KiB pages
AT_FDCWD = -100
STATX_SIZE = 256

_IOV_MAX = 1024

# ---------------------------------------------------------------------------
# threads
# ---------------------------------------------------------------------------

_executor: concurrent.futures.ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()
_executor_pid = 0


def _pool_executor() -> concurrent.futures.ThreadPoolExecutor:
    """One process-wide thread pool for file calls (made again after fork)."""
    global _executor, _executor_pid
    ex = _executor
    if ex is not None and _executor_pid == os.getpid():
        return ex
    with _executor_lock:
        if _executor is None or _executor_pid != os.getpid():
            # Blocking file calls: more threads than cores pay off (the
            # kernel overlaps the waits), as aiofiles' default executor does.
            _executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=min(32, (os.cpu_count() or 1) + 4),
                thread_name_prefix="ringline-fs")
            _executor_pid = os.getpid()
        return _executor


# Operations in flight per descriptor, so that a close waits for them (as
# the kernel does for IORING_OP_CLOSE on a regular file: the fd number must
# not be reused under a thread still about to use it), and cancel_fd can
# abandon them (pipes).
_fd_lock = threading.Lock()
_fd_ops: dict[int, set[FileOp]] = {}
_fd_closes: dict[int, list[Callable[[], None]]] = {}


# Per loop: [operations completed, of which failed] (ringline.metrics).
_counts: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[int]] = \
    weakref.WeakKeyDictionary()


def file_statistics(loop: asyncio.AbstractEventLoop) -> dict[str, int]:
    """``{"file_ops": n, "file_errors": m}``: operations finished on ``loop``."""
    c = _counts.get(loop, (0, 0))
    return {"file_ops": c[0], "file_errors": c[1]}


class FileOp:
    """One file operation on a worker thread; ``await op.fut`` for its result."""

    __slots__ = ("fut", "_loop", "_cleanup", "_running", "views", "what", "filename",
                 "filename2", "fd", "_abandoned")

    def __init__(self, loop: asyncio.AbstractEventLoop, what: str, filename: Any = None,
                 filename2: Any = None) -> None:
        self.fut: asyncio.Future[Any] = loop.create_future()
        self._loop = loop
        self._cleanup: Callable[[Any], None] | None = None    # on a dropped result
        self._running = True
        self.views: list[memoryview] = []     # released when the thread is done
        self.what = what
        self.filename = filename
        self.filename2 = filename2
        self.fd = -1
        self._abandoned = False

    def _track(self, fd: int) -> None:
        self.fd = fd
        with _fd_lock:
            _fd_ops.setdefault(fd, set()).add(self)

    def _untrack(self) -> None:
        fd = self.fd
        if fd < 0:
            return
        self.fd = -1
        with _fd_lock:
            ops = _fd_ops.get(fd)
            if ops is not None:
                ops.discard(self)
                if ops:
                    return
                del _fd_ops[fd]
            closes = _fd_closes.pop(fd, [])
        for c in closes:
            c()

    def _guarded(self, fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            if self._abandoned:     # cancel_fd came first: the fd may be gone
                raise OSError(errno.ECANCELED, os.strerror(errno.ECANCELED))
            return fn()
        return run

    def _start(self, fn: Callable[[], Any], fd: int = -1) -> FileOp:
        if fd >= 0:
            self._track(fd)
        cf = _pool_executor().submit(self._guarded(fn))
        cf.add_done_callback(self._thread_done)
        return self

    def _thread_done(self, cf: concurrent.futures.Future[Any]) -> None:
        try:
            self._loop.call_soon_threadsafe(self._deliver, cf)
        except RuntimeError:
            # The loop is closed: nobody waits; give back what the op holds.
            self._running = False
            self._release_views()
            self._untrack()
            if self._cleanup is not None and cf.exception() is None:
                self._cleanup(cf.result())

    def _release_views(self) -> None:
        # Explicitly: the executor may still hold the call (and its closure)
        # for a moment, and a DirectBuffer cannot be released while viewed.
        for v in self.views:
            v.release()
        self.views = []

    def _deliver(self, cf: concurrent.futures.Future[Any]) -> None:
        self._running = False
        self._release_views()
        self._untrack()
        exc = cf.exception()
        c = _counts.get(self._loop)
        if c is None:
            c = _counts[self._loop] = [0, 0]
        c[0] += 1
        if exc is not None:
            c[1] += 1
        fut = self.fut
        if fut.done():          # the waiter was cancelled
            if self._cleanup is not None and exc is None:
                self._cleanup(cf.result())
            return
        if exc is None:
            fut.set_result(cf.result())
        elif isinstance(exc, OSError) and exc.errno:
            err = error_from_errno(exc.errno, self.what)
            if self.filename is not None:
                err.filename = self.filename
                if self.filename2 is not None:
                    err.filename2 = self.filename2
            fut.set_exception(err)
        else:
            fut.set_exception(exc)

    def cancel(self) -> None:
        """Stop waiting (a thread cannot be interrupted; its result is dropped)."""
        if not self.fut.done():
            self.fut.cancel()

    @property
    def pending(self) -> bool:
        """True until the worker thread finished."""
        return self._running


def _op(loop: Any, what: str, fn: Callable[[], Any], filename: Any = None,
        filename2: Any = None, cleanup: Callable[[Any], None] | None = None,
        views: list[memoryview] | None = None, fd: int = -1) -> FileOp:
    op = FileOp(loop, what, filename, filename2)
    op._cleanup = cleanup
    if views is not None:
        op.views = views
    return op._start(fn, fd)


# ---------------------------------------------------------------------------
# checks and addresses
# ---------------------------------------------------------------------------


class _PyBuffer(ctypes.Structure):
    _fields_ = [("buf", ctypes.c_void_p), ("obj", ctypes.py_object), ("len", ctypes.c_ssize_t),
                ("itemsize", ctypes.c_ssize_t), ("readonly", ctypes.c_int),
                ("ndim", ctypes.c_int), ("format", ctypes.c_char_p),
                ("shape", ctypes.c_void_p), ("strides", ctypes.c_void_p),
                ("suboffsets", ctypes.c_void_p), ("internal", ctypes.c_void_p)]


_get_buffer = ctypes.pythonapi.PyObject_GetBuffer
_get_buffer.argtypes = (ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int)
_get_buffer.restype = ctypes.c_int
_release_buffer = ctypes.pythonapi.PyBuffer_Release
_release_buffer.argtypes = (ctypes.POINTER(_PyBuffer),)
_release_buffer.restype = None


def buffer_address(obj: Any) -> tuple[int, int]:
    """(address, length) of a contiguous buffer."""
    view = _PyBuffer()
    if _get_buffer(obj, ctypes.byref(view), 0) != 0:      # PyBUF_SIMPLE; raises on error
        raise BufferError("cannot get a buffer")
    try:
        return view.buf or 0, view.len
    finally:
        _release_buffer(ctypes.byref(view))


def _check_count(n: int) -> None:
    if n < 0:
        raise ValueError(f"negative length {n}")
    if n > MAX_IO:
        raise ValueError(f"one operation transfers at most {MAX_IO} bytes (got {n})")


def _check_direct(addr: int, length: int, off: int, align: int, mem_align: int) -> None:
    """O_DIRECT alignment rules, checked before anything reaches the kernel."""
    if off >= 0 and off % align:
        raise DirectIOAlignmentError("offset", off, align)
    if length % align:
        raise DirectIOAlignmentError("length", length, align)
    if mem_align > 0 and addr % mem_align:
        raise DirectIOAlignmentError("buffer address", addr, mem_align)


def _writable_view(buf: Any) -> memoryview:
    v = memoryview(buf)
    if v.readonly:
        raise TypeError(f"a writable buffer is required, not {type(buf).__name__}")
    return v.cast("B") if v.format != "B" or v.ndim != 1 else v


def _view(buf: Any) -> memoryview:
    v = memoryview(buf)
    return v.cast("B") if v.format != "B" or v.ndim != 1 else v


def _zero(fn: Callable[..., None], *args: Any, **kwargs: Any) -> int:
    """Call ``fn``; 0 (a CQE's result for calls that return nothing)."""
    fn(*args, **kwargs)
    return 0


# ---------------------------------------------------------------------------
# submit functions (the _files interface); ``off`` -1: at the file position
# ---------------------------------------------------------------------------


def openat(loop: Any, path: bytes, flags: int, mode: int, dfd: int = AT_FDCWD,
           filename: Any = None) -> FileOp:
    def call() -> int:
        return os.open(path, flags, mode, dir_fd=None if dfd == AT_FDCWD else dfd)
    return _op(loop, "open", call, filename, cleanup=os.close)


def close(loop: Any, fd: int) -> FileOp:
    """close(2), inline when nothing is in flight on ``fd`` (it does not wait
    for the disk: no thread hop, unlike aiofiles), else once the operations
    in flight finished (they complete normally, as with the ring)."""
    op = FileOp(loop, "close")

    def do_close() -> None:
        op._running = False
        if op.fut.done():
            os.close(fd)        # the waiter is gone; close all the same
            return
        try:
            os.close(fd)
        except OSError as exc:
            op.fut.set_exception(error_from_errno(exc.errno, "close") if exc.errno else exc)
        else:
            op.fut.set_result(0)

    def later() -> None:
        try:
            loop.call_soon_threadsafe(do_close)
        except RuntimeError:        # that loop is closed: nobody waits
            os.close(fd)

    with _fd_lock:
        busy = bool(_fd_ops.get(fd))
        if busy:
            _fd_closes.setdefault(fd, []).append(later)
    if not busy:
        do_close()
    return op


def cancel_fd(loop: Any, fd: int) -> None:
    """Abandon the operations in flight on ``fd``: their awaiters get
    ECANCELED at once, and those not started yet never touch the fd.  (A
    thread already blocked in a read cannot be interrupted; it finishes when
    the pipe or device has data or is closed by its other end.)"""
    with _fd_lock:
        ops = _fd_ops.pop(fd, set())
    for op in ops:
        op._abandoned = True
        op.fd = -1
        if not op.fut.done():
            op.fut.set_exception(error_from_errno(errno.ECANCELED, op.what))


def read(loop: Any, fd: int, n: int, off: int) -> FileOp:
    _check_count(n)
    if off < 0:
        return _op(loop, "read", lambda: os.read(fd, n), fd=fd)
    return _op(loop, "read", lambda: os.pread(fd, n, off), fd=fd)


def read_into(loop: Any, fd: int, buf: Any, off: int, pool: Pool | None = None,
              align: int = 0, mem_align: int = 0) -> FileOp:
    v = _writable_view(buf)
    _check_count(v.nbytes)
    if align > 0:
        index = pool.index_of_buffer(v) if pool is not None else -1
        _check_direct(buffer_address(v)[0], v.nbytes, off, align,
                      0 if index >= 0 else mem_align)
    if off < 0:
        return _op(loop, "read", lambda: os.readv(fd, [v]), views=[v], fd=fd)
    return _op(loop, "read", lambda: os.preadv(fd, [v], off), views=[v], fd=fd)


def write(loop: Any, fd: int, data: Any, off: int, pool: Pool | None = None,
          align: int = 0, mem_align: int = 0, start: int = 0, stop: int = -1) -> FileOp:
    v = _view(data)
    total = v.nbytes
    if stop < 0 or stop > total:
        stop = total
    if start < 0 or start > stop:
        raise ValueError(f"bad slice {start}:{stop} of a {total}-byte buffer")
    v = v[start:stop]
    _check_count(v.nbytes)
    if align > 0:
        index = pool.index_of_buffer(v) if pool is not None else -1
        _check_direct(buffer_address(v)[0], v.nbytes, off, align,
                      0 if index >= 0 else mem_align)
    if off < 0:
        return _op(loop, "write", lambda: os.write(fd, v), views=[v], fd=fd)
    return _op(loop, "write", lambda: os.pwrite(fd, v, off), views=[v], fd=fd)


def _vector(loop: Any, fd: int, buffers: Iterable[Any], off: int, writing: bool) -> FileOp:
    bufs = list(buffers)
    if not bufs:
        raise ValueError("readv/writev need at least one buffer")
    if len(bufs) > _IOV_MAX:
        raise ValueError(f"at most {_IOV_MAX} buffers per call (got {len(bufs)})")
    views = [_view(b) if writing else _writable_view(b) for b in bufs]
    _check_count(sum(v.nbytes for v in views))
    if writing:
        if off < 0:
            return _op(loop, "writev", lambda: os.writev(fd, views), views=views, fd=fd)
        return _op(loop, "writev", lambda: os.pwritev(fd, views, off), views=views, fd=fd)
    if off < 0:
        return _op(loop, "readv", lambda: os.readv(fd, views), views=views, fd=fd)
    return _op(loop, "readv", lambda: os.preadv(fd, views, off), views=views, fd=fd)


def readv(loop: Any, fd: int, buffers: Iterable[Any], off: int) -> FileOp:
    return _vector(loop, fd, buffers, off, False)


def writev(loop: Any, fd: int, buffers: Iterable[Any], off: int) -> FileOp:
    return _vector(loop, fd, buffers, off, True)


def fsync(loop: Any, fd: int, datasync: bool = False) -> FileOp:
    fn = os.fdatasync if datasync else os.fsync
    return _op(loop, "fdatasync" if datasync else "fsync", lambda: _zero(fn, fd), fd=fd)


# statx(2) through libc (glibc 2.28+), else stat(2) with what it has.

class _StatxTimestamp(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_int64), ("tv_nsec", ctypes.c_uint32),
                ("_reserved", ctypes.c_int32)]


class _Statx(ctypes.Structure):
    _fields_ = [("mask", ctypes.c_uint32), ("blksize", ctypes.c_uint32),
                ("attributes", ctypes.c_uint64), ("nlink", ctypes.c_uint32),
                ("uid", ctypes.c_uint32), ("gid", ctypes.c_uint32), ("mode", ctypes.c_uint16),
                ("_spare0", ctypes.c_uint16), ("ino", ctypes.c_uint64),
                ("size", ctypes.c_uint64), ("blocks", ctypes.c_uint64),
                ("attributes_mask", ctypes.c_uint64), ("atime", _StatxTimestamp),
                ("btime", _StatxTimestamp), ("ctime", _StatxTimestamp),
                ("mtime", _StatxTimestamp), ("rdev_major", ctypes.c_uint32),
                ("rdev_minor", ctypes.c_uint32), ("dev_major", ctypes.c_uint32),
                ("dev_minor", ctypes.c_uint32), ("mnt_id", ctypes.c_uint64),
                ("dio_mem_align", ctypes.c_uint32), ("dio_offset_align", ctypes.c_uint32),
                ("_spare3", ctypes.c_uint64 * 12)]


def _libc_statx() -> Any:
    try:
        fn = ctypes.CDLL(None, use_errno=True).statx
    except (AttributeError, OSError):
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint,
                   ctypes.POINTER(_Statx))
    fn.restype = ctypes.c_int
    return fn


_statx_fn = _libc_statx()

_AT_EMPTY_PATH = 0x1000
_AT_SYMLINK_NOFOLLOW = 0x100


def _ns(ts: _StatxTimestamp) -> int:
    return int(ts.tv_sec) * 1_000_000_000 + int(ts.tv_nsec)


def _statx_call(path: bytes, flags: int, mask: int, dfd: int) -> tuple[int, ...]:
    if _statx_fn is not None:
        st = _Statx()
        if _statx_fn(dfd, path, flags, mask, ctypes.byref(st)) != 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
        return (st.mask, st.blksize, st.attributes, st.nlink, st.uid, st.gid, st.mode,
                st.ino, st.size, st.blocks, st.attributes_mask, _ns(st.atime), _ns(st.btime),
                _ns(st.ctime), _ns(st.mtime), st.rdev_major, st.rdev_minor, st.dev_major,
                st.dev_minor, st.mnt_id, st.dio_mem_align, st.dio_offset_align)
    follow = not flags & _AT_SYMLINK_NOFOLLOW
    if flags & _AT_EMPTY_PATH and not path:
        s = os.fstat(dfd)
    else:
        s = os.stat(path, dir_fd=None if dfd == AT_FDCWD else dfd, follow_symlinks=follow)
    basic = 0x7FF
    return (basic, s.st_blksize, 0, s.st_nlink, s.st_uid, s.st_gid, s.st_mode, s.st_ino,
            s.st_size, s.st_blocks, 0, s.st_atime_ns, 0, s.st_ctime_ns, s.st_mtime_ns,
            os.major(s.st_rdev), os.minor(s.st_rdev), os.major(s.st_dev),
            os.minor(s.st_dev), 0, 0, 0)


def statx(loop: Any, path: bytes, flags: int, mask: int, dfd: int = AT_FDCWD,
          filename: Any = None) -> FileOp:
    """statx(2); the result is the tuple documented in fs.Statx."""
    return _op(loop, "stat", lambda: _statx_call(path, flags, mask, dfd), filename)


def unlinkat(loop: Any, path: bytes, flags: int, dfd: int = AT_FDCWD,
             filename: Any = None) -> FileOp:
    d = None if dfd == AT_FDCWD else dfd
    fn = os.rmdir if flags else os.unlink
    return _op(loop, "rmdir" if flags else "unlink", lambda: _zero(fn, path, dir_fd=d),
               filename)


def renameat(loop: Any, old: bytes, new: bytes, flags: int = 0, olddfd: int = AT_FDCWD,
             newdfd: int = AT_FDCWD, filename: Any = None, filename2: Any = None) -> FileOp:
    if flags:
        raise ValueError("renameat2 flags are not supported by the portable backend")
    a = None if olddfd == AT_FDCWD else olddfd
    b = None if newdfd == AT_FDCWD else newdfd
    return _op(loop, "rename", lambda: _zero(os.replace, old, new, src_dir_fd=a, dst_dir_fd=b),
               filename, filename2)


def mkdirat(loop: Any, path: bytes, mode: int, dfd: int = AT_FDCWD,
            filename: Any = None) -> FileOp:
    d = None if dfd == AT_FDCWD else dfd
    return _op(loop, "mkdir", lambda: _zero(os.mkdir, path, mode, dir_fd=d), filename)


# ---------------------------------------------------------------------------
# O_DIRECT buffers
# ---------------------------------------------------------------------------


def read_fixed(loop: Any, fd: int, pool: Pool, index: int, n: int, off: int) -> FileOp:
    """Read n bytes into pool slot ``index`` (owned by the op until the thread
    is done); the result is a copy, as bytes."""
    if n < 0 or n > pool.buffer_size:
        raise ValueError(f"length {n} does not fit a {pool.buffer_size}-byte pool buffer")
    slot = pool._slot(index)

    def call() -> bytes:
        with memoryview(slot) as whole, whole[:n] as v:
            got = os.preadv(fd, [v], off)
            return bytes(v[:got])
    return _pool_op(loop, "read", call, pool, index, fd)


def _pool_op(loop: Any, what: str, fn: Callable[[], Any], pool: Pool, index: int,
             fd: int) -> FileOp:
    """An op that owns pool slot ``index`` until its thread is done (whether
    or not anyone still waits for it)."""
    op = FileOp(loop, what)

    def finish(cf: concurrent.futures.Future[Any]) -> None:
        try:
            op._deliver(cf)
        finally:
            pool.release_index(index)

    def thread_done(cf: concurrent.futures.Future[Any]) -> None:
        try:
            loop.call_soon_threadsafe(finish, cf)
        except RuntimeError:
            op._untrack()     # the loop is closed: the pool goes with it

    op._track(fd)
    _pool_executor().submit(op._guarded(fn)).add_done_callback(thread_done)
    return op


def direct_read(loop: Any, fd: int, pool: Pool, n: int, off: int, align: int) -> FileOp | None:
    """The O_DIRECT pread fast path; None when no pool buffer is free or
    ``n`` needs several."""
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


def write_fixed(loop: Any, fd: int, pool: Pool, index: int, data: Any, start: int,
                n: int, off: int) -> FileOp:
    """Copy data[start:start+n] into pool slot ``index`` and write it."""
    if n < 0 or n > pool.buffer_size:
        raise ValueError(f"length {n} does not fit a {pool.buffer_size}-byte pool buffer")
    v = _view(data)
    if start < 0 or start + n > v.nbytes:
        raise ValueError("slice out of range")
    slot = pool._slot(index)
    slot[:n] = v[start:start + n]

    def call() -> int:
        with memoryview(slot) as whole, whole[:n] as s:
            return os.pwrite(fd, s, off)
    return _pool_op(loop, "write", call, pool, index, fd)


class DirectBuffer(mmap.mmap):
    """An aligned (page-aligned, anonymous mmap) buffer lent by ringline.fs.

    Supports the buffer protocol; give it back with ``release()`` or a
    ``with`` block; releasing while a memoryview of it (or an operation in
    flight on it) is alive raises BufferError.
    """

    index: int
    released: bool
    _pool: Pool | None

    def __init__(self, *a: Any, **k: Any) -> None:
        raise TypeError("DirectBuffers are lent by ringline.files.fs.direct_buffer()")

    @property
    def address(self) -> int:
        return buffer_address(self)[0]

    def release(self) -> None:
        """Give the buffer back to the pool (idempotent)."""
        if self.released:
            return
        try:
            mmap.mmap.close(self)
        except BufferError:
            raise BufferError("cannot release a DirectBuffer while view(s) of it "
                              "(memoryviews or operations in flight) are alive") from None
        self.released = True
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.lent -= 1
            pool.release_index(self.index)

    def close(self) -> None:
        self.release()

    def __enter__(self) -> DirectBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        if not getattr(self, "released", True) and getattr(self, "_pool", None) is not None:
            warnings.warn("DirectBuffer was never released", ResourceWarning, stacklevel=2,
                          source=self)
            try:
                self.release()
            except BufferError:
                pass

    def __repr__(self) -> str:
        state = "released" if self.released else f"{len(self)} bytes"
        return f"<DirectBuffer #{self.index} {state}>"


class Pool:
    """Page-aligned O_DIRECT buffers, one anonymous mapping per slot."""

    def __init__(self, nbufs: int, buffer_size: int) -> None:
        if nbufs < 1 or nbufs > 16384:
            raise ValueError(f"nbufs must be in 1..16384 (got {nbufs})")
        if buffer_size < 4096 or buffer_size % 4096 or buffer_size > (1 << 30):
            raise ValueError(f"buffer_size must be a multiple of 4096 up to 1 GiB "
                             f"(got {buffer_size})")
        self.nbufs = nbufs
        self.buffer_size = buffer_size
        self.registered = True          # nothing to register: usable at once
        self.lent = 0
        self.free = list(range(nbufs - 1, -1, -1))
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._slots: dict[int, mmap.mmap] = {}

    def _slot(self, index: int) -> mmap.mmap:
        m = self._slots.get(index)
        if m is None:
            m = self._slots[index] = mmap.mmap(-1, self.buffer_size)
        return m

    def register(self, loop: Any) -> None:
        self.registered = True

    def index_of_buffer(self, obj: Any) -> int:
        """The lent DirectBuffer holding all of ``obj``'s memory, or -1."""
        with memoryview(obj) as v:
            owner = v.obj
        if isinstance(owner, DirectBuffer) and owner._pool is self and not owner.released:
            return owner.index
        return -1

    def try_acquire(self) -> int:
        if self.free:
            return self.free.pop()
        return -1

    def release_index(self, index: int) -> None:
        self.free.append(index)
        self.wake_next()

    def wake_next(self) -> None:
        while self.waiters:
            w = self.waiters.popleft()
            if not w.done():
                w.set_result(None)
                return

    def wait(self, loop: Any) -> asyncio.Future[None]:
        """A future resolved when a buffer may be free (then try again)."""
        fut: asyncio.Future[None] = loop.create_future()
        self.waiters.append(fut)
        return fut

    @property
    def available(self) -> int:
        return len(self.free)

    @property
    def address(self) -> int:
        return 0

    def lend(self, index: int, length: int) -> DirectBuffer:
        """Hand slot ``index`` to the application as a DirectBuffer."""
        if length <= 0 or length > self.buffer_size:
            raise ValueError(f"a DirectBuffer holds 1..{self.buffer_size} bytes (got {length})")
        b = mmap.mmap.__new__(DirectBuffer, -1, length)
        b.index = index
        b.released = False
        b._pool = self
        self.lent += 1
        return b


def new_pool(nbufs: int, buffer_size: int) -> Pool:
    return Pool(nbufs, buffer_size)


def register_pool(loop: Any, pool: Pool) -> None:
    pool.register(loop)


# Each loop's O_DIRECT pool.  A ringline loop keeps its own in a typed field;
# a foreign loop (uvloop's, asyncio's) gets no attributes set on it: the pool
# is kept here, and goes when the loop does.
_POOLS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Pool] = \
    weakref.WeakKeyDictionary()


def loop_pool(loop: asyncio.AbstractEventLoop) -> Pool | None:
    """``loop``'s O_DIRECT pool, or None before its first use."""
    return _POOLS.get(loop)


def set_loop_pool(loop: asyncio.AbstractEventLoop, pool: Pool) -> None:
    _POOLS[loop] = pool


def loop_config(loop: asyncio.AbstractEventLoop) -> Config:
    """The Config of the portable backend on ``loop`` (sizes the pool)."""
    from ringline.portable.serve import config_of
    return config_of(loop)

