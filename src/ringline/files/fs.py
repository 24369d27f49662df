"""Asynchronous file I/O on the ring.

Python has no real asynchronous file I/O: aiofiles and anyio hand every call
to a thread. ``ringline.files.fs`` puts each call on the loop's io_uring instead
(IORING_OP_OPENAT, READ, WRITE, READV, WRITEV, FSYNC, STATX, CLOSE, UNLINKAT,
RENAMEAT, MKDIRAT, READ_FIXED, WRITE_FIXED). Every call prepares one SQE;
all SQEs prepared during one loop iteration reach the kernel in one
``io_uring_enter``, so 32 tasks that each ``await f.pread(...)`` have 32
reads in flight at once.

Two levels:

* descriptor functions, like :mod:`os` but awaitable: :func:`openat`,
  :func:`read`, :func:`read_into`, :func:`write`, :func:`readv`,
  :func:`writev`, :func:`fsync`, :func:`fdatasync`, :func:`close`, and path
  functions :func:`stat`, :func:`statx`, :func:`unlink`, :func:`rmdir`,
  :func:`rename`, :func:`mkdir`. ``offset=-1`` means "at the file position".
* file objects that feel like aiofiles: ``async with fs.open(path, "rb") as
  f: data = await f.read()``, ``async for line in f``, ``seek``/``tell``,
  text mode with an encoding, and positional ``pread``/``pwrite`` for
  concurrent random access. :func:`open_direct` opens with ``O_DIRECT`` and
  moves data through aligned buffers registered with the ring.

Everything must run inside a coroutine. On a ringline loop the calls go to
the ring (the compiled :mod:`ringline.files.fileops`); on any other asyncio
loop (the portable backend: uvloop or asyncio's own) the same code runs on
:mod:`ringline.portable._fileops`, which has the same functions but makes each
system call on a worker thread (see :func:`_layer`). See docs/files.md.
"""

from __future__ import annotations

import asyncio
import builtins
import codecs
import errno
import importlib
import io
import locale
import os
import stat as _stat
import warnings
from collections.abc import AsyncIterator, Iterable
from typing import Any, NamedTuple

from ringline.errors import IoUringResourceError

try:
    from ringline.files import fileops as _files
    from ringline.files.fileops import DirectBuffer
    _Loop: Any = importlib.import_module("ringline._core.loop").Loop   # compiled (no stub)
except ImportError:     # built without the extension: only the portable backend
    from ringline.portable import _fileops as _files  # type: ignore[no-redef]
    from ringline.portable._fileops import DirectBuffer  # type: ignore[assignment]
    _Loop = None

__all__ = [
    "AsyncFile",
    "AsyncTextFile",
    "DirectBuffer",
    "DirectFile",
    "Statx",
    "close",
    "direct_buffer",
    "fdatasync",
    "fsync",
    "mkdir",
    "open",
    "open_direct",
    "openat",
    "read",
    "read_into",
    "readv",
    "remove",
    "rename",
    "rmdir",
    "stat",
    "statx",
    "unlink",
    "write",
    "writev",
]

_builtin_open = builtins.open     # this module defines its own open()

AT_FDCWD = _files.AT_FDCWD
AT_EMPTY_PATH = 0x1000
AT_SYMLINK_NOFOLLOW = 0x100
AT_REMOVEDIR = 0x200
STATX_BASIC_STATS = 0x7FF
STATX_BTIME = 0x800
STATX_DIOALIGN = 0x2000
_BLKSSZGET = 0x1268

#: Read-ahead chunk for readline and line iteration.
CHUNK = 64 * 1024
#: Largest single read or write submitted (the kernel's MAX_RW_COUNT is ~2 GiB).
_MAX_ONE = 1 << 30
#: O_DIRECT buffers registered when Config.registered_buffers is 0 (auto).
AUTO_REGISTERED_BUFFERS = 32


# ---------------------------------------------------------------------------
# plumbing
# ---------------------------------------------------------------------------


_portable_ops: Any = None      # ringline.portable._fileops, imported on first use


def _layer(loop: Any) -> Any:
    """The file layer for ``loop``: the compiled ring operations on a ringline
    loop, else the portable backend's (same functions and results, each system
    call on a worker thread)."""
    global _portable_ops
    if _Loop is not None and isinstance(loop, _Loop):
        return _files
    if _portable_ops is None:
        _portable_ops = importlib.import_module("ringline.portable._fileops")
    return _portable_ops


def _running_loop(what: str = "this operation") -> Any:
    """The running ringline loop, for what only io_uring can do (NVMe
    passthrough has no portable layer); TypeError on another loop."""
    loop = asyncio.get_running_loop()
    if _Loop is None or not isinstance(loop, _Loop):
        raise TypeError(
            f"{what} needs a running ringline event loop (io_uring), but the running loop is "
            f"{type(loop).__module__}.{type(loop).__qualname__}; run the coroutine with "
            f"ringline.run(backend='uring'), on a ringline.EventLoop, or call "
            f"ringline.install() first")
    return loop


def _running() -> tuple[Any, Any]:
    """The running loop and its file layer (RuntimeError outside a coroutine)."""
    loop = asyncio.get_running_loop()
    return loop, _layer(loop)


def _path(path: Any) -> bytes:
    p = os.fsencode(path)
    if b"\0" in p:
        raise ValueError("embedded null byte in path")
    return p


def _dfd(dir_fd: int | None) -> int:
    return AT_FDCWD if dir_fd is None else dir_fd


async def _run(op: Any) -> Any:
    """Await a submitted op; a cancelled waiter cancels the kernel request."""
    try:
        return await op.fut
    except asyncio.CancelledError:
        op.cancel()
        raise


async def _run_open(op: Any) -> int:
    """_run for an OPENAT: a cancel that lands after the descriptor arrived
    but before this task resumed drops the result, so the descriptor is
    closed here (one that arrives after the cancel, the op closes itself)."""
    try:
        return await op.fut  # type: ignore[no-any-return]
    except asyncio.CancelledError:
        fut = op.fut
        if fut.done() and not fut.cancelled() and fut.exception() is None:
            os.close(fut.result())
        else:
            op.cancel()
        raise


def _closed_error(name: Any) -> ValueError:
    return ValueError(f"I/O operation on closed file {name!r}")


# ---------------------------------------------------------------------------
# descriptor-level functions
# ---------------------------------------------------------------------------


async def openat(path: Any, flags: int = os.O_RDONLY, mode: int = 0o666, *,
                 dir_fd: int | None = None) -> int:
    """openat(2) on the ring; returns the new descriptor (O_CLOEXEC added)."""
    loop, ops = _running()
    return await _run_open(ops.openat(loop, _path(path), flags | os.O_CLOEXEC, mode,
                                    _dfd(dir_fd), path))


async def read(fd: int, n: int, offset: int = -1) -> bytes:
    """Read up to ``n`` bytes at ``offset`` (-1: at and advancing the file position)."""
    loop, ops = _running()
    return await _run(ops.read(loop, fd, n, offset))


async def read_into(fd: int, buf: Any, offset: int = -1) -> int:
    """Read into a writable buffer (no copy); returns the byte count."""
    loop, ops = _running()
    return await _run(ops.read_into(loop, fd, buf, offset))


async def write(fd: int, data: Any, offset: int = -1) -> int:
    """Write a bytes-like object (no copy); returns the count (may be short)."""
    loop, ops = _running()
    return await _run(ops.write(loop, fd, data, offset))


async def readv(fd: int, buffers: Iterable[Any], offset: int = -1) -> int:
    """preadv(2): fill writable buffers in order; returns the total count."""
    loop, ops = _running()
    return await _run(ops.readv(loop, fd, buffers, offset))


async def writev(fd: int, buffers: Iterable[Any], offset: int = -1) -> int:
    """pwritev(2): write the buffers in order; returns the total count."""
    loop, ops = _running()
    return await _run(ops.writev(loop, fd, buffers, offset))


async def fsync(fd: int) -> None:
    loop, ops = _running()
    await _run(ops.fsync(loop, fd, False))


async def fdatasync(fd: int) -> None:
    loop, ops = _running()
    await _run(ops.fsync(loop, fd, True))


async def close(fd: int) -> None:
    """close(2) of a raw descriptor on the ring."""
    loop, ops = _running()
    await _run(ops.close(loop, fd))


class Statx(NamedTuple):
    """The fields of statx(2); times in nanoseconds since the epoch."""

    mask: int
    blksize: int
    attributes: int
    nlink: int
    uid: int
    gid: int
    mode: int
    ino: int
    size: int
    blocks: int
    attributes_mask: int
    atime_ns: int
    btime_ns: int
    ctime_ns: int
    mtime_ns: int
    rdev_major: int
    rdev_minor: int
    dev_major: int
    dev_minor: int
    mnt_id: int
    dio_mem_align: int
    dio_offset_align: int

    def to_stat_result(self) -> os.stat_result:
        """The same information as :func:`os.stat` returns it."""
        a, m, c = self.atime_ns, self.mtime_ns, self.ctime_ns
        s = 10**9
        return os.stat_result((
            self.mode, self.ino, os.makedev(self.dev_major, self.dev_minor), self.nlink,
            self.uid, self.gid, self.size, a // s, m // s, c // s,
            # as CPython computes them: seconds + nanoseconds * 1e-9
            a // s + (a % s) * 1e-9, m // s + (m % s) * 1e-9, c // s + (c % s) * 1e-9,
            a, m, c, self.blksize, self.blocks,
            os.makedev(self.rdev_major, self.rdev_minor)))


async def statx(path: Any, mask: int = STATX_BASIC_STATS | STATX_BTIME, *,
                dir_fd: int | None = None, follow_symlinks: bool = True) -> Statx:
    """statx(2) of a path, or of an open descriptor when ``path`` is an int."""
    loop, ops = _running()
    flags = 0 if follow_symlinks else AT_SYMLINK_NOFOLLOW
    if isinstance(path, int):
        t = await _run(ops.statx(loop, b"", flags | AT_EMPTY_PATH, mask, path, path))
    else:
        t = await _run(ops.statx(loop, _path(path), flags, mask, _dfd(dir_fd), path))
    return Statx(*t)


async def stat(path: Any, *, dir_fd: int | None = None,
               follow_symlinks: bool = True) -> os.stat_result:
    """Like :func:`os.stat` (path or descriptor), through statx on the ring."""
    t = await statx(path, STATX_BASIC_STATS, dir_fd=dir_fd, follow_symlinks=follow_symlinks)
    return t.to_stat_result()


async def unlink(path: Any, *, dir_fd: int | None = None) -> None:
    loop, ops = _running()
    await _run(ops.unlinkat(loop, _path(path), 0, _dfd(dir_fd), path))


remove = unlink


async def rmdir(path: Any, *, dir_fd: int | None = None) -> None:
    loop, ops = _running()
    await _run(ops.unlinkat(loop, _path(path), AT_REMOVEDIR, _dfd(dir_fd), path))


async def rename(src: Any, dst: Any, *, src_dir_fd: int | None = None,
                 dst_dir_fd: int | None = None) -> None:
    """renameat2(2): replaces ``dst`` if it exists (like :func:`os.replace`)."""
    loop, ops = _running()
    await _run(ops.renameat(loop, _path(src), _path(dst), 0, _dfd(src_dir_fd),
                            _dfd(dst_dir_fd), src, dst))


async def mkdir(path: Any, mode: int = 0o777, *, dir_fd: int | None = None) -> None:
    loop, ops = _running()
    await _run(ops.mkdirat(loop, _path(path), mode, _dfd(dir_fd), path))


# ---------------------------------------------------------------------------
# O_DIRECT: registered buffer pool and alignment discovery
# ---------------------------------------------------------------------------


def _pool_for(loop: Any) -> Any:
    """The loop's registered O_DIRECT pool, registered on first use (the
    caller runs on the loop's thread, the ring's single issuer).

    A ringline loop keeps it in its typed ``_dio_pool`` field; another asyncio
    loop's is kept by the portable layer (weakly keyed by the loop), sized by
    the Config the portable backend uses on that loop."""
    ops = _layer(loop)
    uring = ops is _files and _Loop is not None
    pool = loop._dio_pool if uring else ops.loop_pool(loop)
    if pool is not None:
        return pool
    from ringline.config import Config
    cfg = (getattr(loop, "config", None) or Config()) if uring else ops.loop_config(loop)
    n = cfg.registered_buffers or AUTO_REGISTERED_BUFFERS
    while True:
        pool = ops.new_pool(n, cfg.registered_buffer_size)
        try:
            ops.register_pool(loop, pool)
            break
        except IoUringResourceError:
            # Auto-sized: retry smaller under a tight RLIMIT_MEMLOCK.
            if cfg.registered_buffers or n == 1:
                raise
            n //= 2
    if uring:
        loop._dio_pool = pool
    else:
        ops.set_loop_pool(loop, pool)
    return pool


async def _acquire(loop: Any, pool: Any) -> int:
    i = pool.try_acquire()
    while i < 0:
        w = pool.wait(loop)
        try:
            await w
        except asyncio.CancelledError:
            if w.done() and not w.cancelled():
                pool.wake_next()       # pass on the wake-up we were given
            raise
        i = pool.try_acquire()
    return i


async def direct_buffer(size: int | None = None) -> DirectBuffer:
    """Borrow an aligned buffer registered with the ring (zero-copy O_DIRECT).

    ``size`` defaults to ``Config.registered_buffer_size``. Waits while every
    pool buffer is in use. Give it back with ``buf.release()`` or ``with buf:``.
    """
    loop = asyncio.get_running_loop()
    pool = _pool_for(loop)
    if size is None:
        size = pool.buffer_size
    if not 0 < size <= pool.buffer_size:
        raise ValueError(f"a DirectBuffer holds 1..{pool.buffer_size} bytes "
                         f"(Config.registered_buffer_size); got {size}")
    i = await _acquire(loop, pool)
    return pool.lend(i, size)


def _sysfs_block_size(st: os.stat_result) -> int | None:
    dev = st.st_rdev if _stat.S_ISBLK(st.st_mode) else st.st_dev
    base = f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}"
    for rel in ("queue/logical_block_size", "../queue/logical_block_size"):
        try:
            with _builtin_open(os.path.join(base, rel), encoding="ascii") as f:
                return int(f.read())
        except (OSError, ValueError):
            continue
    return None


async def _dio_alignment(fd: int, st: os.stat_result, name: Any) -> tuple[int, int]:
    """(offset/length alignment, memory alignment) for O_DIRECT on ``fd``.

    statx(STATX_DIOALIGN) on Linux 6.1+; else the device's logical block
    size (BLKSSZGET for a block device, sysfs for a file's device); else 4096.
    """
    t = await statx(fd, STATX_BASIC_STATS | STATX_DIOALIGN)
    if t.mask & STATX_DIOALIGN:
        if t.dio_offset_align == 0:
            raise OSError(errno.EINVAL, "O_DIRECT is not supported for this file "
                          "(statx reports no direct I/O alignment)", name)
        return t.dio_offset_align, max(t.dio_mem_align, 1)
    size: int | None = None
    if _stat.S_ISBLK(st.st_mode):
        import fcntl
        import struct
        try:
            size = struct.unpack("i", fcntl.ioctl(fd, _BLKSSZGET, b"\0" * 4))[0]
        except OSError:
            size = None
    size = size or _sysfs_block_size(st) or 4096
    return size, size


# ---------------------------------------------------------------------------
# file objects
# ---------------------------------------------------------------------------


def _parse_mode(mode: str) -> tuple[int, bool, bool, bool, bool]:
    """Return (flags, readable, writable, append, text) for an open() mode."""
    if not isinstance(mode, str):
        raise TypeError(f"mode must be a str, not {type(mode).__name__}")
    chars = set(mode)
    if len(chars) != len(mode) or not chars <= set("rwaxbt+") or \
            sum(c in chars for c in "rwax") != 1 or {"b", "t"} <= chars:
        raise ValueError(f"invalid mode: {mode!r}")
    plus = "+" in chars
    if "r" in chars:
        flags, readable, writable = (os.O_RDWR if plus else os.O_RDONLY), True, plus
    elif "w" in chars:
        flags, readable, writable = (os.O_RDWR if plus else os.O_WRONLY) | os.O_CREAT | os.O_TRUNC, plus, True
    elif "a" in chars:
        flags, readable, writable = (os.O_RDWR if plus else os.O_WRONLY) | os.O_CREAT | os.O_APPEND, plus, True
    else:
        flags, readable, writable = (os.O_RDWR if plus else os.O_WRONLY) | os.O_CREAT | os.O_EXCL, plus, True
    return flags, readable, writable, "a" in chars, "b" not in chars


class AsyncFile:
    """A binary file on the ring, opened by :func:`open` (:func:`open_direct`
    gives the O_DIRECT subclass, :class:`DirectFile`).

    The file position is kept here, not in the kernel: ``read``/``write``
    use it and advance it (a call reserves its byte range when it is made, so
    concurrent calls from several tasks get consecutive ranges), ``pread``/
    ``pwrite`` take an explicit offset and leave it alone. Pipes, FIFOs and
    character devices (not seekable) read and write at the kernel's position.
    Writes are not buffered: each ``write`` is one SQE, and a short write is
    resubmitted until the whole buffer is written. ``readline`` and line
    iteration read ahead in :data:`CHUNK` pieces.

    Methods are coroutines, as in aiofiles (``seek`` and ``tell`` included);
    the file must be used from the loop that opened it.
    """

    def __init__(self, loop: Any, fd: int, name: Any, mode: str, *, readable: bool,
                 writable: bool, append: bool, st: os.stat_result) -> None:
        self._loop = loop
        self._ops = _layer(loop)    # the ring's operations, or the portable ones
        self._fd = fd
        self.name = name
        self.mode = mode
        self._readable = readable
        self._writable = writable
        self._append = append
        self._regular = _stat.S_ISREG(st.st_mode)
        self._seekable = self._regular or _stat.S_ISBLK(st.st_mode)
        # O_DIRECT alignments and registered pool: set by DirectFile, passed on
        # to the ops (0 and None mean a plain file).
        self._align = 0
        self._mem_align = 0
        self._pool: Any = None
        self._closed = False
        self._rbuf = b""            # read-ahead: the bytes at [_pos, _pos + len)
        self._lock: asyncio.Lock | None = None
        self._pos = os.lseek(fd, 0, os.SEEK_END) if (append and self._seekable) else 0

    # ---- state ------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def fileno(self) -> int:
        self._check()
        return self._fd

    def readable(self) -> bool:
        self._check()
        return self._readable

    def writable(self) -> bool:
        self._check()
        return self._writable

    def seekable(self) -> bool:
        self._check()
        return self._seekable

    @property
    def direct(self) -> bool:
        """True for a file opened by :func:`open_direct` (a :class:`DirectFile`)."""
        return False

    @property
    def alignment(self) -> int:
        """O_DIRECT offset and length alignment (the logical block size); 1 otherwise."""
        return self._align or 1

    @property
    def memory_alignment(self) -> int:
        """O_DIRECT buffer address alignment; 1 otherwise."""
        return self._mem_align or 1

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"fd={self._fd}"
        return f"<ringline.files.fs.AsyncFile name={self.name!r} mode={self.mode!r} {state}>"

    def _check(self) -> None:
        if self._closed:
            raise _closed_error(self.name)
        if asyncio.get_running_loop() is not self._loop:
            raise RuntimeError(f"{self!r} belongs to another event loop "
                               f"(an io_uring is used by its own loop's thread only)")

    def _check_read(self) -> None:
        self._check()
        if not self._readable:
            raise io.UnsupportedOperation("File not open for reading")

    def _check_write(self) -> None:
        self._check()
        if not self._writable:
            raise io.UnsupportedOperation("File not open for writing")

    def _check_seekable(self) -> None:
        if not self._seekable:
            raise io.UnsupportedOperation("File or stream is not seekable.")

    def _fail(self, op: Any, exc: BaseException) -> BaseException:
        """The exception to raise for ``op`` failing with ``exc``."""
        if isinstance(exc, asyncio.CancelledError):
            op.cancel()
        elif isinstance(exc, OSError) and exc.errno == errno.ECANCELED and self._closed:
            return ValueError(f"I/O operation on closed file {self.name!r}: it was "
                              f"closed while the operation was in flight")
        return exc

    async def _io(self, op: Any) -> Any:
        try:
            return await op.fut
        except BaseException as exc:
            raise self._fail(op, exc) from None

    # ---- positional I/O (the random-access path) --------------------------

    async def pread(self, size: int, offset: int) -> bytes:
        """Read up to ``size`` bytes at ``offset``; the position is unchanged.

        Shorter only at end of file.
        """
        self._check_read()
        if offset < 0:
            raise ValueError(f"negative offset {offset}")
        if size > _MAX_ONE:
            return await self._pread_full(size, offset)
        op = self._ops.read(self._loop, self._fd, size, offset)
        try:
            return await op.fut
        except BaseException as exc:
            raise self._fail(op, exc) from None

    async def pwrite(self, data: Any, offset: int) -> int:
        """Write all of ``data`` at ``offset``; the position is unchanged."""
        self._check_write()
        if offset < 0:
            raise ValueError(f"negative offset {offset}")
        self._rbuf = b""
        return await self._write_all(data, offset)

    async def read_into(self, buf: Any, offset: int | None = None) -> int:
        """Read into a writable buffer (no copy): at ``offset``, or at and
        advancing the position when None. Returns the count (0 at EOF).

        On an O_DIRECT file the buffer must be aligned too: a
        :class:`DirectBuffer` (or a slice of one) is read with READ_FIXED.
        """
        self._check_read()
        align = self._align
        if offset is not None:
            if offset < 0:
                raise ValueError(f"negative offset {offset}")
            return await self._io(self._ops.read_into(self._loop, self._fd, buf, offset,
                                                      self._pool, align, self._mem_align))
        n = memoryview(buf).nbytes
        if self._rbuf:              # never on a DirectFile: nothing there reads ahead
            m = min(n, len(self._rbuf))
            memoryview(buf).cast("B")[:m] = self._rbuf[:m]
            self._rbuf = self._rbuf[m:]
            self._pos += m
            return m
        if not self._seekable:
            return await self._io(self._ops.read_into(self._loop, self._fd, buf, -1))
        off = self._pos
        self._pos = off + n
        try:
            got = await self._io(self._ops.read_into(self._loop, self._fd, buf, off,
                                                     self._pool, align, self._mem_align))
        except BaseException:
            if self._pos == off + n:
                self._pos = off
            raise
        if got < n and self._pos == off + n:
            self._pos = off + got
        return got

    readinto = read_into

    async def readv(self, buffers: Iterable[Any], offset: int | None = None) -> int:
        """Fill several buffers with one READV; at ``offset`` or the position."""
        self._check_read()
        buffers = list(buffers)
        if offset is not None or not self._seekable:
            return await self._io(self._ops.readv(self._loop, self._fd, buffers,
                                                  -1 if offset is None else offset))
        self._rbuf = b""
        n = sum(memoryview(b).nbytes for b in buffers)
        off = self._pos
        self._pos = off + n
        try:
            got = await self._io(self._ops.readv(self._loop, self._fd, buffers, off))
        except BaseException:
            if self._pos == off + n:
                self._pos = off
            raise
        if got < n and self._pos == off + n:
            self._pos = off + got
        return got

    async def writev(self, buffers: Iterable[Any], offset: int | None = None) -> int:
        """Write several buffers with one WRITEV; at ``offset`` or the position."""
        self._check_write()
        buffers = list(buffers)
        self._rbuf = b""
        n = sum(memoryview(b).nbytes for b in buffers)
        if offset is None and self._seekable and not self._append:
            offset = self._pos
            self._pos += n
        got = await self._io(self._ops.writev(self._loop, self._fd, buffers,
                                              -1 if offset is None else offset))
        if got < n:     # short: finish with plain writes, in order
            data = b"".join(bytes(b) for b in buffers)[got:]
            await self._write_all(data, -1 if offset is None else offset + got)
        if self._append and self._seekable:
            self._pos = os.lseek(self._fd, 0, os.SEEK_CUR)
        return n

    # ---- sequential I/O ----------------------------------------------------

    async def read(self, size: int | None = -1) -> bytes:
        """Read ``size`` bytes (fewer only at EOF), or everything left if
        ``size`` is negative or None, from the position."""
        self._check_read()
        if not self._seekable:
            return await self._stream_read(size)
        rb = self._rbuf
        if size is None or size < 0:
            self._rbuf = b""
            start = self._pos + len(rb)
            data = await self._readall(start)
            data = rb + data if rb else data
            self._pos = start - len(rb) + len(data)
            return data
        if len(rb) >= size:
            self._rbuf = rb[size:]
            self._pos += size
            return rb[:size]
        self._rbuf = b""
        need = size - len(rb)
        off = self._pos + len(rb)
        self._pos = off + need
        try:
            data = await self._pread_full(need, off)
        except BaseException:
            if self._pos == off + need:
                self._pos = off - len(rb)
            raise
        if len(data) < need and self._pos == off + need:
            self._pos = off + len(data)
        return rb + data if rb else data

    async def _pread_full(self, n: int, off: int) -> bytes:
        """n bytes at off, fewer only at EOF (a short read of a regular file
        means EOF; 1 GiB per SQE)."""
        if n <= _MAX_ONE:
            return await self._io(self._ops.read(self._loop, self._fd, n, off))
        parts = []
        while n > 0:
            chunk = await self._io(self._ops.read(self._loop, self._fd, min(n, _MAX_ONE), off))
            parts.append(chunk)
            if len(chunk) < min(n, _MAX_ONE):
                break
            n -= len(chunk)
            off += len(chunk)
        return b"".join(parts)

    async def _readall(self, start: int) -> bytes:
        size = os.fstat(self._fd).st_size
        want = max(size - start, 0) + 1       # +1: a short read proves EOF
        first = await self._pread_full(want, start)
        if len(first) < want:
            return first
        parts = [first]                        # the file grew meanwhile
        off = start + len(first)
        while True:
            chunk = await self._pread_full(max(CHUNK, off - start), off)
            if not chunk:
                break
            parts.append(chunk)
            off += len(chunk)
        return b"".join(parts)

    async def _stream_read(self, size: int | None) -> bytes:
        parts = []
        if self._rbuf:
            parts.append(self._rbuf)
            self._rbuf = b""
        have = sum(map(len, parts))
        while size is None or size < 0 or have < size:
            want = CHUNK if size is None or size < 0 else size - have
            chunk = await self._io(self._ops.read(self._loop, self._fd, want, -1))
            if not chunk:
                break
            parts.append(chunk)
            have += len(chunk)
        data = b"".join(parts)
        if size is not None and 0 <= size < len(data):
            self._rbuf = data[size:]
            data = data[:size]
        return data

    async def _read_some(self) -> bytes:
        """The read-ahead buffer, or one chunk read at the position (text layer)."""
        if self._rbuf:
            data = self._rbuf
            self._rbuf = b""
            if self._seekable:
                self._pos += len(data)
            return data
        if self._seekable:
            return await self.read(CHUNK)
        return await self._io(self._ops.read(self._loop, self._fd, CHUNK, -1))

    async def _fill(self) -> bool:
        """Append one read-ahead chunk to the buffer; False at EOF."""
        off = self._pos + len(self._rbuf) if self._seekable else -1
        chunk = await self._io(self._ops.read(self._loop, self._fd, CHUNK, off))
        if not chunk:
            return False
        self._rbuf += chunk
        return True

    async def readline(self, size: int | None = -1) -> bytes:
        """One line including its b"\\n" (b"" at EOF), at most ``size`` bytes."""
        self._check_read()
        limit = -1 if size is None else size
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            start = 0
            while True:
                i = self._rbuf.find(b"\n", start)
                if i >= 0:
                    end = i + 1
                    break
                if 0 <= limit <= len(self._rbuf):
                    end = limit
                    break
                start = len(self._rbuf)
                if not await self._fill():
                    end = len(self._rbuf)
                    break
            if 0 <= limit < end:
                end = limit
            line = self._rbuf[:end]
            self._rbuf = self._rbuf[end:]
            if self._seekable:
                self._pos += len(line)
            return line

    async def readlines(self, hint: int = -1) -> list[bytes]:
        lines = []
        total = 0
        async for line in self:
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    async def readexactly(self, n: int) -> bytes:
        """Exactly ``n`` bytes; asyncio.IncompleteReadError at EOF."""
        data = await self.read(n)
        if len(data) < n:
            raise asyncio.IncompleteReadError(data, n)
        return data

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        line = await self.readline()
        if not line:
            raise StopAsyncIteration
        return line

    async def write(self, data: Any) -> int:
        """Write all of ``data`` at the position (the end in append mode)."""
        self._check_write()
        if self._rbuf:
            self._rbuf = b""
        if self._append or not self._seekable:
            n = await self._write_all(data, -1)
            if self._seekable:
                self._pos = os.lseek(self._fd, 0, os.SEEK_CUR)
            return n
        n = memoryview(data).nbytes
        off = self._pos
        self._pos = off + n
        try:
            return await self._write_all(data, off)
        except BaseException:
            if self._pos == off + n:
                self._pos = off
            raise

    async def writelines(self, lines: Iterable[Any]) -> None:
        for line in lines:
            await self.write(line)

    async def _write_all(self, data: Any, off: int) -> int:
        op = self._ops.write(self._loop, self._fd, data, off)
        try:
            done = await op.fut
        except BaseException as exc:
            raise self._fail(op, exc) from None
        total = memoryview(data).nbytes
        while done < total:                   # short write: resubmit the rest
            op = self._ops.write(self._loop, self._fd, data, off + done if off >= 0 else -1,
                                 None, 0, 0, done)
            n = await self._io(op)
            if n == 0:
                raise OSError(errno.EIO, f"write to {self.name!r} made no progress")
            done += n
        return total

    # ---- position ----------------------------------------------------------

    async def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._check()
        self._check_seekable()
        if whence == os.SEEK_SET:
            pos = offset
        elif whence == os.SEEK_CUR:
            pos = self._pos + offset
        elif whence == os.SEEK_END:
            pos = os.fstat(self._fd).st_size + offset
        else:
            raise ValueError(f"invalid whence ({whence}, should be 0, 1 or 2)")
        if pos < 0:
            raise OSError(errno.EINVAL, f"negative seek position {pos}")
        self._rbuf = b""
        self._pos = pos
        return pos

    async def tell(self) -> int:
        self._check()
        self._check_seekable()
        return self._pos

    async def truncate(self, size: int | None = None) -> int:
        """ftruncate(2) (a synchronous call: it does not wait for the disk)."""
        self._check_write()
        size = self._pos if size is None else size
        self._rbuf = b""
        os.ftruncate(self._fd, size)
        return size

    async def flush(self) -> None:
        """Nothing to do: writes are not buffered in user space."""
        self._check()

    async def fsync(self) -> None:
        self._check()
        await self._io(self._ops.fsync(self._loop, self._fd, False))

    async def fdatasync(self) -> None:
        self._check()
        await self._io(self._ops.fsync(self._loop, self._fd, True))

    async def stat(self) -> os.stat_result:
        self._check()
        return await stat(self._fd)

    # ---- closing -----------------------------------------------------------

    async def close(self) -> None:
        """Close the file (IORING_OP_CLOSE); idempotent.

        Operations still in flight keep their buffers until their CQE. On a
        pipe, FIFO or device they are cancelled first (a read there could wait
        forever) and their awaiters get ValueError; reads and writes of regular
        files complete normally.
        """
        if self._closed:
            return
        self._closed = True
        self._rbuf = b""
        fd = self._fd
        loop = self._loop
        if loop.is_closed() or asyncio.get_running_loop() is not loop:
            os.close(fd)
            return
        if not self._regular:
            self._ops.cancel_fd(loop, fd)
        await _run(self._ops.close(loop, fd))

    async def __aenter__(self) -> AsyncFile:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            warnings.warn(f"unclosed file {self!r}", ResourceWarning, stacklevel=2, source=self)
            self._closed = True
            try:
                os.close(self._fd)
            except OSError:
                pass


class AsyncTextFile:
    """A text file on the ring: :class:`AsyncFile` plus an encoding.

    Newlines follow :func:`open`: with ``newline=None`` lines end at "\\n"
    and "\\r\\n"/"\\r" read back as "\\n"; with ``""`` nothing is translated;
    other values are written in place of "\\n". ``tell()`` returns a byte
    offset usable with ``seek()``; it is exact for stateless encodings
    (UTF-8, Latin-1, ASCII...) and raises io.UnsupportedOperation otherwise
    while decoded text is buffered.
    """

    def __init__(self, raw: AsyncFile, encoding: str | None, errors: str | None,
                 newline: str | None) -> None:
        if encoding is None:
            encoding = locale.getpreferredencoding(False)
        codecs.lookup(encoding)
        if newline not in (None, "", "\n", "\r", "\r\n"):
            raise ValueError(f"illegal newline value: {newline!r}")
        self.buffer = raw
        self.encoding = encoding
        self.errors = errors or "strict"
        self.newline = newline
        self._decoder = codecs.getincrementaldecoder(encoding)(self.errors)
        self._encoder = codecs.getincrementalencoder(encoding)(self.errors)
        self._dbuf = ""             # decoded, untranslated text not yet returned
        self._eof = False
        norm = codecs.lookup(encoding).name
        self._exact_tell = (not norm.startswith(("utf-16", "utf-32", "utf-8-sig"))
                            and self.errors in ("strict", "surrogateescape"))

    name = property(lambda self: self.buffer.name)
    mode = property(lambda self: self.buffer.mode)
    closed = property(lambda self: self.buffer.closed)

    def fileno(self) -> int:
        return self.buffer.fileno()

    def readable(self) -> bool:
        return self.buffer.readable()

    def writable(self) -> bool:
        return self.buffer.writable()

    def seekable(self) -> bool:
        return self.buffer.seekable()

    def __repr__(self) -> str:
        return (f"<ringline.files.fs.AsyncTextFile name={self.name!r} mode={self.mode!r} "
                f"encoding={self.encoding!r}>")

    def _translate(self, text: str) -> str:
        if self.newline is None and "\r" in text:
            return text.replace("\r\n", "\n").replace("\r", "\n")
        return text

    async def _more(self) -> bool:
        if self._eof:
            return False
        chunk = await self.buffer._read_some()
        if not chunk:
            self._eof = True
            self._dbuf += self._decoder.decode(b"", final=True)
            return False
        self._dbuf += self._decoder.decode(chunk)
        return True

    async def read(self, size: int | None = -1) -> str:
        self.buffer._check_read()
        if size is None or size < 0:
            rest = await self.buffer.read()
            text = self._dbuf + self._decoder.decode(rest, final=True)
            self._dbuf = ""
            self._eof = True
            return self._translate(text)
        out: list[str] = []
        have = 0
        while have < size:
            if not self._dbuf and not await self._more():
                break
            if len(self._dbuf) < size - have + 1 and not self._eof:
                await self._more()
            take = min(size - have, len(self._dbuf))
            piece = self._dbuf[:take]
            if piece.endswith("\r") and self.newline is None and take < len(self._dbuf) \
                    and self._dbuf[take] == "\n":
                take += 1
                piece += "\n"
            self._dbuf = self._dbuf[take:]
            piece = self._translate(piece)
            out.append(piece)
            have += len(piece)
        return "".join(out)

    async def readline(self, size: int | None = -1) -> str:
        self.buffer._check_read()
        limit = -1 if size is None else size
        start = 0
        while True:
            i = self._dbuf.find("\n", start)
            if self.newline not in (None, "", "\n"):
                j = self._dbuf.find(self.newline, start)
                i = j + len(self.newline) - 1 if j >= 0 else -1
            if i >= 0:
                end = i + 1
                break
            if 0 <= limit <= len(self._dbuf):
                end = limit
                break
            start = max(len(self._dbuf) - 1, 0)
            if not await self._more():
                end = len(self._dbuf)
                break
        if 0 <= limit < end:
            end = limit
        line = self._dbuf[:end]
        self._dbuf = self._dbuf[end:]
        return self._translate(line)

    async def readlines(self, hint: int = -1) -> list[str]:
        lines = []
        total = 0
        async for line in self:
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __aiter__(self) -> AsyncIterator[str]:
        return self

    async def __anext__(self) -> str:
        line = await self.readline()
        if not line:
            raise StopAsyncIteration
        return line

    async def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        self.buffer._check_write()
        if self._dbuf or self._decoder.getstate()[0]:
            await self.seek(await self.tell())     # drop read-ahead before writing
        text = s
        if self.newline not in (None, "", "\n"):
            text = text.replace("\n", self.newline)
        await self.buffer.write(self._encoder.encode(text))
        return len(s)

    async def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            await self.write(line)

    async def tell(self) -> int:
        pos = await self.buffer.tell()
        pending = self._decoder.getstate()[0]
        if not self._dbuf and not pending:
            return pos
        if not self._exact_tell:
            raise io.UnsupportedOperation(
                f"tell() with buffered text is only exact for stateless encodings "
                f"and strict errors, not {self.encoding!r}/{self.errors!r}")
        return pos - len(pending) - len(self._dbuf.encode(self.encoding, self.errors))

    async def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence != os.SEEK_SET and offset != 0:
            raise io.UnsupportedOperation("can't do nonzero cur-relative seeks")
        if whence == os.SEEK_CUR:
            return await self.tell()
        pos = await self.buffer.seek(offset, whence)
        self._dbuf = ""
        self._eof = False
        self._decoder.reset()
        self._encoder.reset()
        return pos

    async def truncate(self, size: int | None = None) -> int:
        if size is None:
            size = await self.tell()
        return await self.buffer.truncate(size)

    async def flush(self) -> None:
        await self.buffer.flush()

    async def fsync(self) -> None:
        await self.buffer.fsync()

    async def close(self) -> None:
        await self.buffer.close()

    async def __aenter__(self) -> AsyncTextFile:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


class _Opening:
    """What :func:`open` returns: await it, or use it with ``async with``."""

    __slots__ = ("_args", "_file")

    def __init__(self, *args: Any) -> None:
        self._args = args
        self._file: Any = None

    def __await__(self) -> Any:
        return _open(*self._args).__await__()

    async def __aenter__(self) -> Any:
        self._file = await _open(*self._args)
        return self._file

    async def __aexit__(self, *exc: Any) -> None:
        await self._file.close()


def open(file: Any, mode: str = "r", buffering: int = -1, encoding: str | None = None,
         errors: str | None = None, newline: str | None = None, *, flags: int = 0,
         perm: int = 0o666, dir_fd: int | None = None) -> _Opening:
    """Open a file on the ring, like the builtin :func:`open` (and aiofiles).

    ``async with fs.open(path, "rb") as f: ...`` or ``f = await
    fs.open(path, "w", encoding="utf-8")``. Binary modes give an
    :class:`AsyncFile`, text modes an :class:`AsyncTextFile`. ``flags`` are
    extra ``os.O_*`` flags; ``perm`` the mode bits of a created file
    (before the umask). ``buffering`` is accepted for compatibility: writes
    are never buffered in user space.
    """
    return _Opening(file, mode, encoding, errors, newline, flags, perm, dir_fd, False)


def open_direct(file: Any, mode: str = "rb", *, flags: int = 0, perm: int = 0o666,
                dir_fd: int | None = None) -> _Opening:
    """Open with O_DIRECT: data moves through aligned buffers registered with
    the ring (READ_FIXED/WRITE_FIXED), bypassing the page cache.

    Binary modes only. Offsets and lengths must be multiples of the file's
    :attr:`AsyncFile.alignment` (its logical block size, from statx
    STATX_DIOALIGN), else :class:`ringline.errors.DirectIOAlignmentError`
    (a ValueError) is raised before anything reaches the kernel.
    """
    return _Opening(file, mode, None, None, None, flags, perm, dir_fd, True)


async def _open(file: Any, mode: str, encoding: str | None, errors: str | None,
                newline: str | None, flags: int, perm: int, dir_fd: int | None,
                direct: bool) -> Any:
    loop, ops = _running()
    oflags, readable, writable, append, text = _parse_mode(mode)
    if direct and text:
        raise ValueError(f"O_DIRECT files are binary: use mode {mode.replace('t', '') + 'b'!r}")
    if not text and (encoding is not None or errors is not None or newline is not None):
        raise ValueError("binary mode doesn't take an encoding, errors or newline argument")
    if isinstance(file, int) or isinstance(file, bool):
        raise TypeError("ringline.files.fs.open() takes a path, not a file descriptor")
    oflags |= flags | os.O_CLOEXEC | (os.O_DIRECT if direct else 0)
    fd = await _run_open(ops.openat(loop, _path(file), oflags, perm, _dfd(dir_fd), file))
    try:
        st = os.fstat(fd)
        if _stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), file)
        if direct:
            align, mem_align = await _dio_alignment(fd, st, file)
            pool = _pool_for(loop)
            f: AsyncFile = DirectFile(loop, fd, file, mode, readable=readable, writable=writable,
                                      append=append, st=st, align=align, mem_align=mem_align,
                                      pool=pool)
        else:
            f = AsyncFile(loop, fd, file, mode, readable=readable, writable=writable,
                          append=append, st=st)
    except BaseException:
        os.close(fd)
        raise
    if text:
        return AsyncTextFile(f, encoding, errors, newline)
    return f


# DirectFile subclasses AsyncFile, so its module imports this one and is imported
# here only once AsyncFile exists (ringline/files/__init__.py imports this module
# first, so the order holds whichever module a caller imports).
from ringline.files.direct import DirectFile  # noqa: E402
