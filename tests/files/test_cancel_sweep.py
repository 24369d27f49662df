"""Cancellation sweep of ``ringline.fs`` (tests/support/cancel_sweep.py):
every file awaitable cancelled after 0, 1, 2, ... loop iterations leaves no
descriptor, in-flight op or O_DIRECT pool buffer behind.

Run with ``-s`` to see one ``SWEEP`` line per sweep.
"""

from __future__ import annotations

import asyncio
import os
import tempfile

import pytest

import ringline
from ringline import fs
from tests.support import run
from tests.support.cancel_sweep import sweep
from tests.support.net import pattern

DATA = pattern(64 * 1024)


@pytest.fixture
def data_file(tmp_path):
    p = tmp_path / "data.bin"
    p.write_bytes(DATA)
    return p


# ---------------------------------------------------------------------------
# opening and closing
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["rb", "r", "r+b", "wb"])
def test_open_sweep(data_file, mode):
    """fs.open cancelled anywhere: the descriptor it made is closed.  (The
    cancel that lands after the OPENAT completed but before the task
    resumed used to leak it.)"""
    async def after(outcome, f):
        if f is not None:
            await f.close()

    async def main():
        return await sweep(f"fs.open {mode!r}", lambda: _open(data_file, mode), after=after)

    run(main)


async def _open(path, mode):
    return await fs.open(path, mode)


def test_openat_sweep(data_file):
    def after(outcome, fd):
        if fd is not None:
            os.close(fd)

    async def main():
        return await sweep("fs.openat", lambda: fs.openat(data_file), after=after)

    run(main)


def test_open_then_close_sweep(data_file):
    """open, then close: a cancel during the close still closes (the file
    counts as closed from the call on, so it must really be)."""
    async def op():
        f = await fs.open(data_file, "rb")
        await f.close()

    async def main():
        return await sweep("fs.open+close", op)

    run(main)


def test_async_with_open_sweep(data_file):
    async def op():
        async with fs.open(data_file, "rb") as f:
            return await f.read(100)

    async def main():
        return await sweep("async with fs.open: read", op)

    run(main)


@pytest.mark.parametrize("what", ["fs.stat", "fs.statx", "f.stat", "mkdir+rmdir",
                                  "rename", "unlink"])
def test_path_ops_sweep(tmp_path, data_file, what):
    """The path operations (statx, mkdirat, renameat, unlinkat): nothing of
    theirs outlives a cancel."""
    async def main():
        f = await fs.open(data_file, "rb")
        n = [0]

        async def op():
            n[0] += 1
            if what == "fs.stat":
                return (await fs.stat(data_file)).st_size
            if what == "fs.statx":
                return (await fs.statx(data_file)).size
            if what == "f.stat":
                return (await f.stat()).st_size
            if what == "mkdir+rmdir":
                d = tmp_path / f"d{n[0]}"
                await fs.mkdir(d)
                await fs.rmdir(d)
                return None
            src = tmp_path / f"s{n[0]}"
            src.write_bytes(b"x")
            if what == "rename":
                await fs.rename(src, tmp_path / f"t{n[0]}")
            else:
                await fs.unlink(src)
            return None

        async def after(outcome, size):
            assert size in (None, len(DATA))

        try:
            return await sweep(f"path {what}", op, after=after)
        finally:
            await f.close()

    run(main)


def test_text_file_sweep(tmp_path):
    """A text file: open, write, seek, read, close, in one coroutine."""
    p = tmp_path / "t.txt"

    async def op():
        async with fs.open(p, "w+", encoding="utf-8") as f:
            await f.write("héllo\nwörld\n")
            await f.seek(0)
            return await f.read()

    async def main():
        return await sweep("text open+write+read+close", op)

    run(main)


# ---------------------------------------------------------------------------
# reading and writing an open file
# ---------------------------------------------------------------------------

READS = ["read", "read-all", "pread", "read_into", "readline", "readv", "fs.read", "fs.pread"]


@pytest.mark.parametrize("what", READS)
def test_read_sweep(data_file, what):
    async def main():
        f = await fs.open(data_file, "rb")
        fd = f.fileno()

        async def op():
            await f.seek(0)
            if what == "read":
                return await f.read(4096)
            if what == "read-all":
                return await f.read()
            if what == "pread":
                return await f.pread(4096, 1000)
            if what == "read_into":
                buf = bytearray(4096)
                n = await f.read_into(buf, 0)
                return bytes(buf[:n])
            if what == "readline":
                return await f.readline()
            if what == "readv":
                a, b = bytearray(100), bytearray(200)
                await f.readv([a, b], 0)
                return bytes(a + b)
            if what == "fs.read":
                return await fs.read(fd, 4096, 0)
            return await fs.read(fd, 4096, 1000)

        async def after(outcome, data):
            if data is not None:
                assert data and DATA.find(data) >= 0

        try:
            return await sweep(f"file {what}", op, after=after)
        finally:
            await f.close()

    run(main)


WRITES = ["write", "pwrite", "writev", "write-bytearray", "fsync", "fdatasync", "truncate",
          "fs.write"]


@pytest.mark.parametrize("what", WRITES)
def test_write_sweep(tmp_path, what):
    async def main():
        f = await fs.open(tmp_path / "out.bin", "w+b")
        fd = f.fileno()

        async def op():
            if what == "write":
                return await f.write(DATA)
            if what == "pwrite":
                return await f.pwrite(DATA, 4096)
            if what == "writev":
                return await f.writev([DATA[:100], DATA[100:]], 0)
            if what == "write-bytearray":
                return await f.write(bytearray(DATA))
            if what == "fsync":
                await f.write(b"x")
                return await f.fsync()
            if what == "fdatasync":
                await f.write(b"x")
                return await f.fdatasync()
            if what == "truncate":
                return await f.truncate(1234)
            return await fs.write(fd, DATA, 0)

        try:
            return await sweep(f"file {what}", op)
        finally:
            await f.close()

    run(main)


def test_blocked_fifo_read_sweep(tmp_path):
    """A read that waits in the kernel (an empty FIFO; a writer appears at
    iteration 3): cancelled anywhere, the op is reaped and nothing stays
    open."""
    q = tmp_path / "fifo"
    os.mkfifo(q)

    async def main():
        w = os.open(q, os.O_RDWR | os.O_NONBLOCK)     # keeps the FIFO open, feeds it
        f = await fs.open(q, "r+b")
        wrote = [0]

        def tick(i):
            if i == 3:
                os.write(w, b"0123456789")
                wrote[0] += 10

        def drain():
            # Leave the FIFO empty for the next round (a cancelled read
            # does not take the bytes; a finished one did).
            try:
                while os.read(f.fileno(), 4096):
                    pass
            except BlockingIOError:
                pass

        async def after(outcome, data):
            os.set_blocking(f.fileno(), False)
            drain()

        try:
            return await sweep("fifo read", lambda: f.read(10), after=after, tick=tick)
        finally:
            await f.close()
            os.close(w)

    run(main)


# ---------------------------------------------------------------------------
# O_DIRECT
# ---------------------------------------------------------------------------


def _direct_dir():
    for d in (tempfile.gettempdir(), os.path.dirname(os.path.abspath(__file__))):
        try:
            fd, path = tempfile.mkstemp(dir=d)
        except OSError:
            continue
        os.close(fd)
        try:
            os.close(os.open(path, os.O_RDWR | os.O_DIRECT))
            return d
        except OSError:
            continue
        finally:
            os.unlink(path)
    return None


DIRECT_DIR = _direct_dir()
needs_direct = pytest.mark.skipif(DIRECT_DIR is None,
                                  reason="no directory here accepts O_DIRECT")
DIRECT_CFG = ringline.Config(registered_buffers=2, registered_buffer_size=8192)


@pytest.fixture
def dpath():
    d = tempfile.mkdtemp(dir=DIRECT_DIR, prefix="ringline-cancel-")
    p = os.path.join(d, "direct.bin")
    with open(p, "wb") as g:
        g.write(DATA)
    yield p
    os.unlink(p)
    os.rmdir(d)


@needs_direct
def test_open_direct_sweep(dpath):
    async def after(outcome, f):
        if f is not None:
            await f.close()

    async def op():
        return await fs.open_direct(dpath, "r+b")

    async def main():
        await (await op()).close()      # the loop's O_DIRECT pool exists from here on
        return await sweep("fs.open_direct", op, after=after)

    run(main, config=DIRECT_CFG)


DIRECT_OPS = ["pread", "pread-split", "read", "pwrite", "write", "pwrite-buffer",
              "read_into-buffer", "direct_buffer"]


@needs_direct
@pytest.mark.parametrize("what", DIRECT_OPS)
def test_direct_io_sweep(dpath, what):
    """O_DIRECT reads and writes through the registered pool: a cancel at
    any point gives every pool buffer back (dio_pool_free, bufs_lent)."""
    async def main():
        f = await fs.open_direct(dpath, "r+b")
        buf = await fs.direct_buffer(4096) if what.endswith("-buffer") else None
        if buf is not None:
            memoryview(buf)[:] = DATA[:4096]

        async def op():
            if what == "pread":
                return await f.pread(4096, 8192)
            if what == "pread-split":
                return await f.pread(4 * 8192, 0)     # four pool-sized reads, 2 buffers
            if what == "read":
                await f.seek(0)
                return await f.read(8192)
            if what == "pwrite":
                return await f.pwrite(DATA[:8192], 8192)
            if what == "write":
                await f.seek(0)
                return await f.write(DATA[:3 * 8192])
            if what == "pwrite-buffer":
                return await f.pwrite(buf, 4096)
            if what == "read_into-buffer":
                return await f.read_into(buf, 4096)
            b = await fs.direct_buffer()
            b.release()
            return None

        async def after(outcome, data):
            if isinstance(data, bytes):
                assert DATA.find(data) >= 0

        try:
            return await sweep(f"O_DIRECT {what}", op, after=after)
        finally:
            if buf is not None:
                buf.release()
            await f.close()

    run(main, config=DIRECT_CFG)


@needs_direct
def test_direct_read_waiting_for_a_pool_buffer_sweep(dpath):
    """Both pool buffers are lent; a pread waits for one, which is given back
    at iteration 2: cancelled anywhere (also right after its wake-up), the
    buffer reaches the pool or the next waiter, never nobody."""
    async def main():
        f = await fs.open_direct(dpath, "rb")
        held = [await fs.direct_buffer(), await fs.direct_buffer()]

        def tick(i):
            if i == 2:
                held.pop().release()

        async def after(outcome, data):
            if data is not None:
                assert data == DATA[:8192]
            while len(held) < 2:
                held.append(await asyncio.wait_for(fs.direct_buffer(), 5))

        try:
            return await sweep("O_DIRECT pread waiting for a buffer", lambda: f.pread(8192, 0),
                               after=after, tick=tick)
        finally:
            for b in held:
                b.release()
            await f.close()

    run(main, config=DIRECT_CFG)
