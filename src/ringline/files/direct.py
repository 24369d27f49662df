"""O_DIRECT files on the ring: :class:`DirectFile`, what :func:`ringline.fs.open_direct` returns.

A :class:`DirectFile` is an :class:`~ringline.files.fs.AsyncFile` whose data
bypasses the page cache: reads and writes go through the loop's pool of aligned
buffers registered with the ring (READ_FIXED/WRITE_FIXED), and every offset and
length must be a multiple of :attr:`~ringline.files.fs.AsyncFile.alignment`,
checked before anything reaches the kernel. It overrides only what O_DIRECT
changes: the reads and writes, and the operations it cannot do (``readv``,
``writev``, line reading). ``read_into`` is inherited: the base class passes
the pool and alignments set here on to the op.
"""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Iterable
from typing import Any

from ringline.errors import DirectIOAlignmentError
from ringline.files.fs import AsyncFile, DirectBuffer, _acquire, direct_buffer

__all__ = ["DirectFile"]


class DirectFile(AsyncFile):
    """A binary file opened with ``O_DIRECT`` by :func:`ringline.fs.open_direct`.

    Reads and writes move through registered, aligned buffers; offsets and
    lengths must be multiples of :attr:`alignment`, else
    :class:`ringline.errors.DirectIOAlignmentError`. There is no read-ahead:
    ``readline``, line iteration, ``readv`` and ``writev`` raise
    io.UnsupportedOperation. ``isinstance(f, AsyncFile)`` holds.
    """

    def __init__(self, loop: Any, fd: int, name: Any, mode: str, *, readable: bool,
                 writable: bool, append: bool, st: os.stat_result, align: int,
                 mem_align: int, pool: Any) -> None:
        super().__init__(loop, fd, name, mode, readable=readable, writable=writable,
                         append=append, st=st)
        self._align = align
        self._mem_align = mem_align
        self._pool = pool

    @property
    def direct(self) -> bool:
        """True: the file was opened with O_DIRECT."""
        return True

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"fd={self._fd}"
        # The name it had as a mode of AsyncFile; kept so that logs read the same.
        return (f"<ringline.files.fs.AsyncFile O_DIRECT name={self.name!r} mode={self.mode!r} "
                f"{state}>")

    # ---- positional I/O ----------------------------------------------------

    async def pread(self, size: int, offset: int) -> bytes:
        """Read up to ``size`` bytes at ``offset``; the position is unchanged.

        Shorter only at end of file. ``size`` and ``offset`` must be multiples
        of :attr:`alignment`.
        """
        self._check_read()
        if offset < 0:
            raise ValueError(f"negative offset {offset}")
        op = self._ops.direct_read(self._loop, self._fd, self._pool, size, offset, self._align)
        if op is None:                       # no free pool buffer, or several needed
            return await self._pread_fixed(size, offset)
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
        return await self._pwrite_fixed(data, offset)

    async def readv(self, buffers: Iterable[Any], offset: int | None = None) -> int:
        """Not supported with O_DIRECT: io.UnsupportedOperation."""
        self._check_read()
        raise io.UnsupportedOperation("readv is not supported on O_DIRECT files; "
                                      "use read_into with a DirectBuffer")

    async def writev(self, buffers: Iterable[Any], offset: int | None = None) -> int:
        """Not supported with O_DIRECT: io.UnsupportedOperation."""
        self._check_write()
        raise io.UnsupportedOperation("writev is not supported on O_DIRECT files")

    # ---- sequential I/O ----------------------------------------------------

    async def read(self, size: int | None = -1) -> bytes:
        """Read ``size`` bytes (fewer only at EOF), or everything left if
        ``size`` is negative or None, from the position (which stays aligned)."""
        self._check_read()
        off = self._pos
        if size is not None and size >= 0:
            self._pos = off + size
            try:
                data = await self._pread_fixed(size, off)
            except BaseException:
                if self._pos == off + size:
                    self._pos = off
                raise
            if len(data) < size and self._pos == off + size:
                self._pos = off + len(data)
            return data
        parts = []
        step = self._pool.buffer_size
        while True:
            chunk = await self._pread_fixed(step, off)
            parts.append(chunk)
            off += len(chunk)
            if len(chunk) < step:
                break
        self._pos = off
        return b"".join(parts)

    async def readline(self, size: int | None = -1) -> bytes:
        """Not supported with O_DIRECT (reads must be block-aligned)."""
        self._check_read()
        raise io.UnsupportedOperation("line reading is not supported on O_DIRECT files "
                                      "(reads must be block-aligned); open without direct")

    async def write(self, data: Any) -> int:
        """Write all of ``data`` at the position (aligned, like its length)."""
        self._check_write()
        n = memoryview(data).nbytes
        off = self._pos
        self._pos = off + n
        try:
            return await self._pwrite_fixed(data, off)
        except BaseException:
            if self._pos == off + n:
                self._pos = off
            raise

    async def buffer(self, size: int | None = None) -> DirectBuffer:
        """Borrow a registered, aligned buffer (see :func:`ringline.fs.direct_buffer`)."""
        self._check()
        return await direct_buffer(size)

    # ---- through the registered pool ----------------------------------------

    def _check_aligned(self, what: str, value: int) -> None:
        if value % self._align:
            raise DirectIOAlignmentError(what, value, self._align)

    async def _pread_fixed(self, size: int, offset: int) -> bytes:
        """READ_FIXED into pool buffers, one buffer's worth per SQE."""
        self._check_aligned("offset", offset)
        self._check_aligned("length", size)
        pool, loop = self._pool, self._loop
        if size <= pool.buffer_size:
            i = await _acquire(loop, pool)
            try:
                op = self._ops.read_fixed(loop, self._fd, pool, i, size, offset)
            except BaseException:
                pool.release_index(i)
                raise
            return await self._io(op)
        parts = []
        while size > 0:
            want = min(size, pool.buffer_size)
            chunk = await self._pread_fixed(want, offset)
            parts.append(chunk)
            if len(chunk) < want:
                break
            size -= want
            offset += want
        return b"".join(parts)

    async def _pwrite_fixed(self, data: Any, offset: int) -> int:
        """WRITE_FIXED from pool buffers (straight from one if ``data`` is in it)."""
        view = memoryview(data).cast("B") if not isinstance(data, DirectBuffer) else memoryview(data)
        total = view.nbytes
        self._check_aligned("offset", offset)
        self._check_aligned("length", total)
        pool, loop = self._pool, self._loop
        if pool.index_of_buffer(view) >= 0:
            # Already in a registered buffer: WRITE_FIXED straight from it.
            n = await self._io(self._ops.write(loop, self._fd, view, offset, pool,
                                               self._align, self._mem_align))
            if n != total:
                raise OSError(errno.EIO, f"short O_DIRECT write to {self.name!r} ({n} of {total})")
            return total
        done = 0
        while done < total:
            want = min(total - done, pool.buffer_size)
            i = await _acquire(loop, pool)
            try:
                op = self._ops.write_fixed(loop, self._fd, pool, i, view, done, want, offset + done)
            except BaseException:
                pool.release_index(i)
                raise
            n = await self._io(op)
            if n != want:
                raise OSError(errno.EIO, f"short O_DIRECT write to {self.name!r} "
                                         f"({n} of {want} bytes at {offset + done})")
            done += n
        return total
