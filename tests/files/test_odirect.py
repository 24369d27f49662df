"""O_DIRECT files on the ring: registered aligned buffers, alignment checks,
and byte-exact write -> fsync -> read-back round trips on a real filesystem."""

import asyncio
import errno
import io
import mmap
import os
import tempfile

import pytest

import ringline
from ringline import fs
from ringline.errors import DirectIOAlignmentError
from ringline.files import fs as fs_impl
from tests.support import run
from tests.support.backends import direct_pool, lent_buffers, ring_count

HERE = os.path.dirname(os.path.abspath(__file__))


def _supports_o_direct(directory):
    try:
        fd, path = tempfile.mkstemp(dir=directory)
    except OSError:
        return False
    os.close(fd)
    try:
        fd = os.open(path, os.O_RDWR | os.O_DIRECT)
    except OSError:
        return False
    finally:
        os.unlink(path)
    os.close(fd)
    return True


def _direct_dir():
    for d in (tempfile.gettempdir(), HERE):
        if _supports_o_direct(d):
            return d
    return None


DIRECT_DIR = _direct_dir()
pytestmark = [pytest.mark.skipif(
    DIRECT_DIR is None,
    reason="neither the temp directory nor the work tree's filesystem accepts O_DIRECT "
           "(tmpfs before Linux 6.6, overlayfs on some hosts)"),
    pytest.mark.usefixtures("native_backend")]


@pytest.fixture
def dpath():
    d = tempfile.mkdtemp(dir=DIRECT_DIR, prefix="ringline-direct-")
    p = os.path.join(d, "direct.bin")
    yield p
    if os.path.exists(p):
        os.unlink(p)
    os.rmdir(d)



def test_round_trip_write_fsync_read_back(dpath):
    payload = os.urandom(3 * 1024 * 1024 + 64 * 1024)   # several pool buffers

    async def main():
        async with fs.open_direct(dpath, "w+b") as f:
            a = f.alignment
            assert a >= 512 and a & (a - 1) == 0
            assert f.direct and f.memory_alignment >= 1
            n = len(payload) // a * a
            assert await f.pwrite(payload[:n], 0) == n
            await f.fsync()
            await f.fdatasync()
            back = await f.pread(n, 0)
            assert back == payload[:n]
            # sequential write/read at the position
            await f.seek(0)
            assert await f.write(payload[a:3 * a]) == 2 * a
            assert await f.tell() == 2 * a
            await f.seek(0)
            assert await f.read(2 * a) == payload[a:3 * a]
            assert await f.read() == payload[2 * a:n]     # to EOF, in pool-sized steps
        # and what reached the disk, read back without O_DIRECT
        with open(dpath, "rb") as g:
            assert g.read() == payload[a:3 * a] + payload[2 * a:n]
        return True

    assert run(main)


def test_reads_and_writes_use_registered_buffers(dpath):
    with open(dpath, "wb") as g:
        g.write(os.urandom(64 * 1024))

    async def main():
        loop = asyncio.get_running_loop()
        async with fs.open_direct(dpath, "r+b") as f:
            pool = direct_pool(loop)
            assert pool.registered and pool.nbufs == fs_impl.AUTO_REGISTERED_BUFFERS
            assert pool.address % 4096 == 0 and pool.buffer_size % 4096 == 0
            free = pool.available
            data = await f.pread(4096, 0)
            assert pool.available == free                 # given back at the CQE
            with open(dpath, "rb") as g:
                assert data == g.read(4096)
        return True

    assert run(main)


def test_direct_buffer_zero_copy(dpath):
    block = os.urandom(8192)

    async def main():
        loop = asyncio.get_running_loop()
        async with fs.open_direct(dpath, "w+b") as f:
            with await f.buffer(8192) as buf:
                assert len(buf) == 8192 and buf.address % 4096 == 0
                assert lent_buffers(loop) == 1
                with memoryview(buf) as m:
                    m[:] = block
                assert await f.pwrite(buf, 0) == 8192          # WRITE_FIXED from it
                await f.fsync()
                with memoryview(buf) as m:
                    m[:] = b"\0" * 8192
                    assert await f.read_into(m[4096:], 4096) == 4096   # READ_FIXED into a slice
                    assert bytes(m[4096:]) == block[4096:]
                assert await f.read_into(buf, 0) == 8192
                assert bytes(buf) == block
                view = memoryview(buf)
                with pytest.raises(BufferError):
                    buf.release()                          # a view is alive
                view.release()
            assert buf.released
            with pytest.raises(ValueError):
                memoryview(buf)
            assert lent_buffers(loop) == 0
        return True

    assert run(main)


def test_misalignment_is_refused_before_the_kernel(dpath):
    with open(dpath, "wb") as g:
        g.write(b"\0" * 65536)

    async def main():
        loop = asyncio.get_running_loop()
        async with fs.open_direct(dpath, "r+b") as f:
            a = f.alignment
            sqes = ring_count(loop, "sqes")
            for call, what in ((f.pread(a, 1), "offset"), (f.pread(a + 1, 0), "length"),
                               (f.pwrite(b"x" * 100, 0), "length"),
                               (f.pwrite(b"x" * a, a // 2), "offset"),
                               (f.read_into(bytearray(a), 3), "offset")):
                with pytest.raises(DirectIOAlignmentError) as ei:
                    await call
                assert ei.value.what == what and ei.value.alignment == a
                assert isinstance(ei.value, ValueError)
            # a caller's buffer must be aligned in memory too
            m = mmap.mmap(-1, 2 * 4096)
            mv = memoryview(m)
            if f.memory_alignment > 1:
                with mv[1:1 + a] as bad:
                    try:
                        await f.read_into(bad, 0)
                    except DirectIOAlignmentError as e:
                        assert e.what == "buffer address"
                    else:
                        raise AssertionError("misaligned buffer accepted")
            with mv[:a] as good:
                assert await f.read_into(good, 0) == a          # page-aligned: fine
            mv.release()
            m.close()
            await f.seek(1)
            with pytest.raises(DirectIOAlignmentError):
                await f.read(a)
            # only the one good read_into reached the kernel
            assert sqes is None or ring_count(loop, "sqes") - sqes == 1
        return True

    assert run(main)


def test_pool_exhaustion_waits_for_a_free_buffer(dpath):
    cfg = ringline.Config(registered_buffers=2, registered_buffer_size=8192)
    with open(dpath, "wb") as g:
        g.write(os.urandom(16 * 8192))

    async def main():
        loop = asyncio.get_running_loop()
        async with fs.open_direct(dpath, "rb") as f:
            pool = direct_pool(loop)
            assert pool.nbufs == 2 and pool.buffer_size == 8192
            held = await f.buffer()
            reads = [asyncio.ensure_future(f.pread(8192, i * 8192)) for i in range(6)]
            await asyncio.sleep(0.01)
            held.release()
            got = await asyncio.gather(*reads)
            # larger than one pool buffer: split into buffer-sized reads
            big = await f.pread(5 * 8192, 8192)
        with open(dpath, "rb") as g:
            whole = g.read()
        assert got == [whole[i * 8192:(i + 1) * 8192] for i in range(6)]
        assert big == whole[8192:6 * 8192]
        return True

    assert run(main, config=cfg)


def test_cancelled_direct_read_returns_its_buffer(dpath):
    cfg = ringline.Config(registered_buffers=1, registered_buffer_size=4096)
    with open(dpath, "wb") as g:
        g.write(os.urandom(4096 * 4))

    async def main():
        loop = asyncio.get_running_loop()
        async with fs.open_direct(dpath, "rb") as f:
            pool = direct_pool(loop)
            t = asyncio.ensure_future(f.pread(4096, 0))
            waiter = asyncio.ensure_future(f.pread(4096, 4096))   # waits for the buffer
            await asyncio.sleep(0)
            t.cancel()
            waiter.cancel()
            await asyncio.gather(t, waiter, return_exceptions=True)
            await asyncio.sleep(0.02)
            assert pool.available == 1
            assert len(await f.pread(4096, 8192)) == 4096
        return True

    assert run(main, config=cfg)


def test_direct_files_are_binary_and_unbuffered(dpath):
    async def main():
        with pytest.raises(ValueError, match="binary"):
            await fs.open_direct(dpath, "w")
        async with fs.open_direct(dpath, "w+b") as f:
            with pytest.raises(io.UnsupportedOperation):
                await f.readline()
        with pytest.raises(FileNotFoundError):
            await fs.open_direct(dpath + ".missing", "rb")
        return True

    assert run(main)


def test_short_read_at_end_of_file(dpath):
    with open(dpath, "wb") as g:
        g.write(b"a" * 5000)                          # not a multiple of the block size

    async def main():
        async with fs.open_direct(dpath, "rb") as f:
            a = f.alignment
            data = await f.pread(8192, 0)
            assert data == b"a" * 5000
            assert await f.pread(a, 8192) == b""
            assert await f.read() == b"a" * 5000
        return True

    assert run(main)


def test_o_direct_really_bypasses_nothing_silently(dpath):
    """The fd really carries O_DIRECT."""
    async def main():
        async with fs.open_direct(dpath, "w+b") as f:
            import fcntl
            assert fcntl.fcntl(f.fileno(), fcntl.F_GETFL) & os.O_DIRECT
        return True

    assert run(main)


def test_unsupported_filesystem_is_a_clear_error(tmp_path):
    """/dev/shm is tmpfs: O_DIRECT is refused before Linux 6.6 (EINVAL)."""
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm")
    p = tempfile.mktemp(dir="/dev/shm")

    async def main():
        try:
            f = await fs.open_direct(p, "w+b")
        except OSError as e:
            assert e.errno == errno.EINVAL
            return "refused"
        await f.close()
        return "supported"

    try:
        assert run(main) in ("refused", "supported")
    finally:
        if os.path.exists(p):
            os.unlink(p)


def test_open_direct_gives_a_direct_file(dpath):
    """open_direct returns the DirectFile subclass; it is still an AsyncFile,
    and the operations O_DIRECT cannot do are refused before any SQE."""
    async def main():
        loop = asyncio.get_running_loop()
        async with fs.open_direct(dpath, "w+b") as f:
            assert type(f) is fs.DirectFile
            assert isinstance(f, fs.AsyncFile) and f.direct
            assert repr(f).startswith("<ringline.files.fs.AsyncFile O_DIRECT name=")
            a = f.alignment
            assert await f.write(b"d" * a) == a
            sqes = ring_count(loop, "sqes")
            with pytest.raises(io.UnsupportedOperation, match="readv"):
                await f.readv([bytearray(a)])
            with pytest.raises(io.UnsupportedOperation, match="writev"):
                await f.writev([b"d" * a])
            with pytest.raises(io.UnsupportedOperation, match="line reading"):
                async for _ in f:
                    pass
            assert ring_count(loop, "sqes") == sqes
            # read_into is inherited: READ_FIXED straight into a pool buffer
            with await f.buffer(a) as buf:
                assert await f.read_into(buf, 0) == a and bytes(buf) == b"d" * a
        assert repr(f).endswith(" closed>")
        return True

    assert run(main)
