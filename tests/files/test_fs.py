"""ringline.fs: file I/O on the ring, against the real kernel and filesystem."""

import asyncio
import errno
import io
import os
import subprocess
import sys
import tempfile
import textwrap

import pytest

import ringline
from ringline import fs
from ringline.files import fileops as _files
from ringline.native.workers import _fork
from tests.support import paths, run
from tests.support.backends import ring_count, uring_only

SRC = str(paths.SRC)
pytestmark = pytest.mark.usefixtures("native_backend")



def open_fds():
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture
def data_file(tmp_path):
    p = tmp_path / "data.bin"
    payload = os.urandom(256 * 1024 + 123)
    p.write_bytes(payload)
    return p, payload


# ---------------------------------------------------------------------------
# the file object
# ---------------------------------------------------------------------------

def test_binary_round_trip_read_seek_tell(tmp_path):
    p = tmp_path / "f.bin"

    async def main():
        async with fs.open(p, "wb") as f:
            assert await f.write(b"0123456789") == 10
            assert await f.write(memoryview(b"abcdef")[2:]) == 4
            assert await f.tell() == 14
        async with fs.open(p, "rb") as f:
            assert await f.read(3) == b"012"
            assert await f.tell() == 3
            assert await f.read() == b"3456789cdef"
            assert await f.read() == b""            # EOF: empty, not an error
            assert await f.read(5) == b""
            assert await f.seek(-4, os.SEEK_END) == 10
            assert await f.read(2) == b"cd"
            assert await f.seek(1) == 1
            assert await f.seek(2, os.SEEK_CUR) == 3
            assert await f.read(1) == b"3"
            assert f.readable() and not f.writable() and f.seekable()
        return True

    assert run(main)
    assert p.read_bytes() == b"0123456789cdef"


def test_read_all_of_a_large_file_is_exact(data_file):
    p, payload = data_file

    async def main():
        async with fs.open(p, "rb") as f:
            return await f.read()

    assert run(main) == payload


def test_pread_pwrite_leave_the_position_alone(data_file):
    p, payload = data_file

    async def main():
        async with fs.open(p, "r+b") as f:
            assert await f.pread(10, 1000) == payload[1000:1010]
            assert await f.pwrite(b"XYZ", 5) == 3
            assert await f.tell() == 0
            assert await f.pread(8, 3) == payload[3:5] + b"XYZ" + payload[8:11]
            assert await f.pread(100, len(payload) - 10) == payload[-10:]   # short at EOF
            assert await f.pread(100, len(payload) + 10) == b""
            with pytest.raises(ValueError):
                await f.pread(1, -1)
        return True

    assert run(main)


def test_read_into_and_vectored_io(data_file):
    p, payload = data_file

    async def main():
        async with fs.open(p, "r+b") as f:
            buf = bytearray(100)
            assert await f.read_into(buf, 50) == 100
            assert buf == payload[50:150]
            assert await f.read_into(buf) == 100           # at the position
            assert buf == payload[:100]
            assert await f.tell() == 100
            a, b = bytearray(7), bytearray(9)
            assert await f.readv([a, b]) == 16
            assert bytes(a + b) == payload[100:116]
            assert await f.tell() == 116
            assert await f.writev([b"ab", memoryview(b"cde")], 0) == 5
            assert await f.pread(5, 0) == b"abcde"
        return True

    assert run(main)


def test_lines_iteration_readlines_readexactly(tmp_path):
    p = tmp_path / "lines.txt"
    lines = [b"line %d\n" % i for i in range(20000)] + [b"no newline at end"]
    p.write_bytes(b"".join(lines))

    async def main():
        async with fs.open(p, "rb") as f:
            got = [line async for line in f]
            assert got == lines
            await f.seek(0)
            assert await f.readline() == lines[0]
            assert await f.readline(3) == b"lin"
            assert await f.readline() == b"e 1\n"
            assert await f.read(4) == lines[2][:4]       # read after readline: buffered bytes first
            assert await f.tell() == len(lines[0]) + len(lines[1]) + 4
            rest = await f.readlines()
            assert rest[0] == lines[2][4:] and rest[-1] == lines[-1]
            await f.seek(-5, os.SEEK_END)
            with pytest.raises(asyncio.IncompleteReadError) as ei:
                await f.readexactly(10)
            assert ei.value.partial == b"t end"
            assert await f.readline() == b""
        return True

    assert run(main)


def test_text_mode_encoding_and_newlines(tmp_path):
    p = tmp_path / "t.txt"
    p.write_bytes("héllo\r\nwörld\nlast".encode())

    async def main():
        async with fs.open(p, "r", encoding="utf-8") as f:
            assert [line async for line in f] == ["héllo\n", "wörld\n", "last"]
        async with fs.open(p, encoding="utf-8", newline="") as f:
            assert await f.readline() == "héllo\r\n"
            pos = await f.tell()
            assert pos == len("héllo\r\n".encode())
            assert await f.read(3) == "wör"
            await f.seek(pos)
            assert await f.read() == "wörld\nlast"
        async with fs.open(p, "w", encoding="latin-1", newline="\r\n") as f:
            assert await f.write("ça\nva\n") == 6
        assert p.read_bytes() == "ça\r\nva\r\n".encode("latin-1")
        async with fs.open(p, "w", encoding="utf-16") as f:
            await f.write("x\ny\n")
            await f.write("z")
        async with fs.open(p, encoding="utf-16") as f:
            assert await f.readlines() == ["x\n", "y\n", "z"]
        async with fs.open(p, "rt", encoding="utf-16") as f:
            assert await f.read() == "x\ny\nz"
        with pytest.raises(ValueError):
            await fs.open(p, "rb", encoding="utf-8")
        with pytest.raises(ValueError):
            await fs.open(p, "rw")
        async with fs.open(p, "w") as f:
            with pytest.raises(TypeError):
                await f.write(b"bytes in text mode")
        return True

    assert run(main)
    assert p.read_text() == ""


def test_append_and_exclusive_modes(tmp_path):
    p = tmp_path / "a.txt"
    p.write_bytes(b"start:")

    async def main():
        async with fs.open(p, "ab") as f:
            assert await f.tell() == 6
            await f.write(b"one,")
            await f.write(b"two")
            assert await f.tell() == 13
        async with fs.open(p, "a+b") as f:
            await f.seek(0)
            assert await f.read() == b"start:one,two"
            await f.write(b"!")                          # appends despite the seek
        with pytest.raises(FileExistsError):
            await fs.open(p, "xb")
        async with fs.open(tmp_path / "new", "x") as f:
            await f.write("fresh")
        return True

    assert run(main)
    assert p.read_bytes() == b"start:one,two!"
    assert (tmp_path / "new").read_text() == "fresh"


def test_concurrent_writes_at_the_position_get_consecutive_ranges(tmp_path):
    p = tmp_path / "w.bin"

    async def main():
        async with fs.open(p, "wb") as f:
            await asyncio.gather(*(f.write(bytes([65 + i]) * 1000) for i in range(10)))
            assert await f.tell() == 10000
        return True

    run(main)
    data = p.read_bytes()
    assert data == b"".join(bytes([65 + i]) * 1000 for i in range(10))


# ---------------------------------------------------------------------------
# in flight at once
# ---------------------------------------------------------------------------

@uring_only("counts SQEs and io_uring_enter calls")
def test_32_preads_go_to_the_kernel_in_one_submit(data_file):
    """Serialised reads would need one io_uring_enter each."""
    p, payload = data_file

    async def main():
        loop = asyncio.get_running_loop()
        async with fs.open(p, "rb") as f:
            await f.pread(1, 0)
            before = loop.statistics()
            got = await asyncio.gather(*(f.pread(4096, i * 4096) for i in range(32)))
            after = loop.statistics()
        assert got == [payload[i * 4096:(i + 1) * 4096] for i in range(32)]
        assert after["sqes"] - before["sqes"] == 32
        assert after["enters"] - before["enters"] <= 2, (before, after)
        return True

    assert run(main)


def test_32_blocking_reads_are_all_in_flight_before_any_completes(tmp_path):
    """Reads of empty FIFOs cannot complete until data is written: all 32
    must sit in the kernel at the same time, then all complete."""
    async def main():
        loop = asyncio.get_running_loop()
        writers, files = [], []
        try:
            for i in range(32):
                q = tmp_path / f"fifo{i}"
                os.mkfifo(q)
                writers.append(os.open(q, os.O_RDWR))   # so opening the reader never blocks
                files.append(await fs.open(q, "rb"))
            base = ring_count(loop, "slots_live")
            tasks = [asyncio.ensure_future(f.read(3)) for f in files]
            await asyncio.sleep(0.05)
            assert not any(t.done() for t in tasks)
            # (On the portable backend as many as the thread pool has threads.)
            assert base is None or ring_count(loop, "slots_live") - base == 32
            for i, w in enumerate(writers):
                os.write(w, b"%03d" % i)
            assert await asyncio.gather(*tasks) == [b"%03d" % i for i in range(32)]
        finally:
            for f in files:
                await f.close()
            for w in writers:
                os.close(w)
        return True

    assert run(main)


# ---------------------------------------------------------------------------
# descriptor-level and path functions
# ---------------------------------------------------------------------------

def test_descriptor_functions(tmp_path):
    p = tmp_path / "fd.bin"

    async def main():
        fd = await fs.openat(p, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            assert os.get_inheritable(fd) is False           # O_CLOEXEC
            assert await fs.write(fd, b"hello ") == 6        # at the file position
            assert await fs.write(fd, b"world") == 5
            assert os.lseek(fd, 0, os.SEEK_CUR) == 11
            assert await fs.write(fd, b"W", 6) == 1          # at an offset
            assert await fs.read(fd, 5, 0) == b"hello"
            os.lseek(fd, 0, os.SEEK_SET)
            assert await fs.read(fd, 3) == b"hel"            # advances the position
            assert await fs.read(fd, 3) == b"lo "
            buf = bytearray(5)
            assert await fs.read_into(fd, buf, 6) == 5 and buf == b"World"
            a, b = bytearray(2), bytearray(3)
            assert await fs.readv(fd, [a, b], 0) == 5 and a + b == b"hello"
            assert await fs.writev(fd, [b"1", b"23"], 11) == 3
            await fs.fsync(fd)
            await fs.fdatasync(fd)
        finally:
            await fs.close(fd)
        with pytest.raises(OSError) as ei:
            os.fstat(fd)
        assert ei.value.errno == errno.EBADF
        with pytest.raises(OSError) as ei:
            await fs.close(fd)
        assert ei.value.errno == errno.EBADF
        return True

    assert run(main)
    assert p.read_bytes() == b"hello World123"
    assert p.stat().st_mode & 0o777 == 0o600


def test_stat_matches_os_stat(tmp_path):
    p = tmp_path / "s"
    p.write_bytes(b"x" * 5000)
    link = tmp_path / "link"
    os.symlink(p, link)

    async def main():
        st = await fs.stat(p)
        ref = os.stat(p)
        for field in ("st_mode", "st_ino", "st_dev", "st_nlink", "st_uid", "st_gid", "st_size",
                      "st_mtime_ns", "st_ctime_ns", "st_blksize", "st_blocks", "st_rdev"):
            assert getattr(st, field) == getattr(ref, field), field
        assert st.st_mtime == ref.st_mtime
        lst = await fs.stat(link, follow_symlinks=False)
        assert lst.st_ino == os.lstat(link).st_ino and lst.st_ino != ref.st_ino
        fd = os.open(p, os.O_RDONLY)
        try:
            assert (await fs.stat(fd)).st_ino == ref.st_ino
        finally:
            os.close(fd)
        t = await fs.statx(p)
        assert t.size == 5000 and t.btime_ns > 0
        return True

    assert run(main)


def test_unlink_rename_mkdir_rmdir(tmp_path):
    async def main():
        d = tmp_path / "dir"
        await fs.mkdir(d, 0o750)
        assert d.is_dir() and d.stat().st_mode & 0o777 == 0o750
        with pytest.raises(FileExistsError) as ei:
            await fs.mkdir(d)
        assert ei.value.filename == d
        (d / "a").write_text("A")
        await fs.rename(d / "a", d / "b")
        assert (d / "b").read_text() == "A" and not (d / "a").exists()
        (d / "c").write_text("C")
        await fs.rename(d / "c", d / "b")                    # replaces, like os.replace
        assert (d / "b").read_text() == "C"
        with pytest.raises(FileNotFoundError) as ei:
            await fs.rename(d / "missing", d / "x")
        assert ei.value.filename == d / "missing" and ei.value.filename2 == d / "x"
        with pytest.raises(OSError) as ei:
            await fs.rmdir(d)
        assert ei.value.errno == errno.ENOTEMPTY
        await fs.unlink(d / "b")
        with pytest.raises(FileNotFoundError):
            await fs.remove(d / "b")
        await fs.rmdir(d)
        assert not d.exists()
        return True

    assert run(main)


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------

def test_missing_file_is_file_not_found_naming_the_path(tmp_path):
    missing = tmp_path / "nope" / "missing.txt"

    async def main():
        with pytest.raises(FileNotFoundError) as ei:
            await fs.open(missing)
        assert ei.value.errno == errno.ENOENT and ei.value.filename == missing
        assert str(missing) in str(ei.value) and "open" in str(ei.value)
        with pytest.raises(FileNotFoundError):
            await fs.stat(missing)
        with pytest.raises(ValueError, match="null byte"):
            await fs.open("bad\0name")
        return True

    assert run(main)


def test_directories_cannot_be_opened_as_files(tmp_path):
    async def main():
        with pytest.raises(IsADirectoryError) as ei:
            await fs.open(tmp_path, "wb")               # the kernel's EISDIR
        assert ei.value.filename == tmp_path
        with pytest.raises(IsADirectoryError):
            await fs.open(tmp_path, "rb")               # like builtins.open
        return True

    before = open_fds()
    assert run(main)
    assert open_fds() == before


def _child(code, **kwargs):
    env = dict(os.environ, PYTHONPATH=SRC)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=60, **kwargs)


def test_permission_denied_for_an_unprivileged_user():
    """Root bypasses file permissions, so the check runs in a child that
    drops to nobody (a fork, so it needs no interpreter of its own)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user")
    d = tempfile.mkdtemp(prefix="ringline-perm-")
    secret = os.path.join(d, "secret")
    try:
        os.chmod(d, 0o755)
        with open(secret, "w") as f:
            f.write("root only")
        os.chmod(secret, 0o600)

        async def attempts():
            out = []
            for path, mode in ((secret, "rb"), (secret, "ab"), (d + "/new", "wb")):
                try:
                    await fs.open(path, mode)
                    out.append("opened")
                except PermissionError as e:
                    out.append(f"{e.errno} {e.filename}")
            return out

        rfd, wfd = os.pipe()
        pid = _fork()       # io_uring workers may linger: no warning for them
        if pid == 0:                                   # child
            status = 1
            try:
                os.close(rfd)
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                result = ringline.run(attempts())
                os.write(wfd, "\n".join(result).encode())
                status = 0
            finally:
                os._exit(status)
        os.close(wfd)
        with os.fdopen(rfd) as r:
            out = r.read().splitlines()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert out == [f"{errno.EACCES} {secret}", f"{errno.EACCES} {secret}",
                       f"{errno.EACCES} {d}/new"]
    finally:
        os.unlink(secret)
        os.rmdir(d)


def test_too_many_open_files_is_emfile_and_leaks_nothing():
    code = """
        import errno, os, resource, tempfile
        import ringline
        from ringline import fs
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        d = tempfile.mkdtemp()
        async def main():
            baseline = len(os.listdir("/proc/self/fd"))
            files = []
            try:
                for i in range(200):
                    files.append(await fs.open(os.path.join(d, str(i)), "wb"))
            except OSError as e:
                print("EMFILE" if e.errno == errno.EMFILE else e.errno, len(files) < 64)
                print(str(e))
            for f in files:
                await f.close()
            print("closed", len(os.listdir("/proc/self/fd")) == baseline)
            async with fs.open(os.path.join(d, "again"), "wb") as f:
                await f.write(b"ok")
            print("reopen ok")
        ringline.run(main())
        for n in os.listdir(d):
            os.unlink(os.path.join(d, n))
        os.rmdir(d)
    """
    r = _child(code)
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out[0] == "EMFILE True"
    assert "Too many open files" in out[1]
    assert out[2:] == ["closed True", "reopen ok"]


def test_closed_file_raises_value_error(tmp_path):
    p = tmp_path / "c"
    p.write_bytes(b"abc")

    async def main():
        f = await fs.open(p, "r+b")
        await f.close()
        await f.close()                                  # idempotent
        assert f.closed
        for call in (f.read(), f.pread(1, 0), f.write(b"x"), f.seek(0), f.tell(),
                     f.readline(), f.fsync()):
            with pytest.raises(ValueError, match="closed file"):
                await call
        with pytest.raises(ValueError):
            f.fileno()
        return True

    assert run(main)


def test_wrong_mode_operations(tmp_path):
    p = tmp_path / "m"
    p.write_bytes(b"abc")

    async def main():
        async with fs.open(p, "rb") as f:
            with pytest.raises(io.UnsupportedOperation):
                await f.write(b"x")
        async with fs.open(p, "wb") as f:
            with pytest.raises(io.UnsupportedOperation):
                await f.read()
        return True

    assert run(main)


def test_closing_a_pipe_while_a_read_is_in_flight(tmp_path):
    """The read is cancelled in the kernel, its awaiter hears ValueError,
    and its buffer stays owned by the op until the CQE (the debug counters
    of conftest check every slot was released)."""
    q = tmp_path / "fifo"
    os.mkfifo(q)

    async def main():
        loop = asyncio.get_running_loop()
        w = os.open(q, os.O_RDWR)
        try:
            f = await fs.open(q, "rb")
            base = ring_count(loop, "slots_live")
            reader = asyncio.ensure_future(f.read(10))
            await asyncio.sleep(0.02)
            assert not reader.done()
            assert base is None or ring_count(loop, "slots_live") == base + 1
            await f.close()
            with pytest.raises(ValueError, match="closed while the operation was in flight"):
                await reader
            await asyncio.sleep(0.01)
            assert ring_count(loop, "slots_live") == base
        finally:
            os.close(w)
        return True

    assert run(main)


def test_closing_a_regular_file_while_a_read_is_in_flight_completes_it(data_file):
    p, payload = data_file

    async def main():
        f = await fs.open(p, "rb")
        reader = asyncio.ensure_future(f.pread(65536, 4096))
        await asyncio.sleep(0)                 # the read's SQE is prepared...
        await f.close()                        # ...and the close goes in the same submit
        return await reader

    assert run(main) == payload[4096:4096 + 65536]


@uring_only("a read(2) blocked on a worker thread cannot be cancelled (documented)")
def test_cancelling_a_blocked_read_cancels_the_kernel_request(tmp_path):
    q = tmp_path / "fifo"
    os.mkfifo(q)

    async def main():
        loop = asyncio.get_running_loop()
        w = os.open(q, os.O_RDWR)
        try:
            async with fs.open(q, "rb") as f:
                base = loop.statistics()["slots_live"]
                reader = asyncio.ensure_future(f.read(1))
                await asyncio.sleep(0.02)
                reader.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await reader
                await asyncio.sleep(0.02)
                assert loop.statistics()["slots_live"] == base
                os.write(w, b"k")              # nothing stole the byte
                assert await f.read(1) == b"k"
        finally:
            os.close(w)
        return True

    assert run(main)


def test_cancelled_open_does_not_leak_the_descriptor(tmp_path):
    """Opening a FIFO for writing with O_CREAT blocks (in the kernel's io-wq)
    until a reader appears; cancelling the waiter and then letting the open
    finish must not leave the new descriptor behind."""
    q = tmp_path / "fifo"
    os.mkfifo(q)

    async def main():
        loop = asyncio.get_running_loop()
        before = open_fds()
        base = ring_count(loop, "slots_live")
        opener = asyncio.ensure_future(fs.open(q, "wb"))
        await asyncio.sleep(0.05)
        assert not opener.done()
        assert base is None or ring_count(loop, "slots_live") == base + 1
        opener.cancel()
        with pytest.raises(asyncio.CancelledError):
            await opener
        # Whether or not the kernel could interrupt the blocked open, a
        # reader now lets it finish; the op closes an fd nobody waits for.
        r = os.open(q, os.O_RDONLY | os.O_NONBLOCK)
        try:
            for _ in range(100):
                await asyncio.sleep(0.01)
                if ring_count(loop, "slots_live") == base and (base is not None or
                                                               open_fds() == before):
                    break
            assert ring_count(loop, "slots_live") == base
        finally:
            os.close(r)
        assert open_fds() == before
        return True

    assert run(main)


def test_fs_on_another_loop_is_the_portable_backend(tmp_path):
    # (Its behaviour is tested in test_portable.py.)
    async def main():
        from ringline.portable import _fileops
        async with fs.open(tmp_path / "x", "wb") as f:
            # The same file object, on the portable file layer.
            assert type(f) is fs.AsyncFile and f._ops is _fileops
            await f.write(b"ok")

    asyncio.run(main())
    assert (tmp_path / "x").read_bytes() == b"ok"


def test_read_is_a_single_sqe_into_the_returned_bytes(data_file):
    """The kernel writes into the bytes object that read() returns."""
    p, payload = data_file

    async def main():
        loop = asyncio.get_running_loop()
        fd = os.open(p, os.O_RDONLY)
        try:
            before = ring_count(loop, "sqes")
            data = await fs.read(fd, 1000, 10)
            assert before is None or ring_count(loop, "sqes") - before == 1
            assert data == payload[10:1010] and type(data) is bytes
            assert await fs.read(fd, 0, 0) == b""
            with pytest.raises(ValueError):
                await fs.read(fd, -1, 0)
            from ringline.portable import _fileops
            with pytest.raises(ValueError):
                (_files if before is not None else _fileops).read(loop, fd, 1 << 40, 0)
        finally:
            os.close(fd)
        return True

    assert run(main)


# ---------------------------------------------------------------------------
# AsyncFile and its O_DIRECT subclass
# ---------------------------------------------------------------------------


def test_async_file_has_no_o_direct_branch():
    """O_DIRECT lives in DirectFile's overrides, not in branches of AsyncFile."""
    import inspect

    from ringline.files import direct
    from ringline.files import fs as fs_impl

    source = inspect.getsource(fs.AsyncFile)
    assert "self._direct" not in source and "_direct_" not in source
    assert fs.DirectFile is direct.DirectFile is fs_impl.DirectFile
    assert issubclass(fs.DirectFile, fs.AsyncFile)
    assert "DirectFile" in fs.__all__ and "DirectFile" in fs_impl.__all__
    # ``direct`` stays a property on both classes
    assert isinstance(inspect.getattr_static(fs.AsyncFile, "direct"), property)
    assert isinstance(inspect.getattr_static(fs.DirectFile, "direct"), property)
    assert fs.DirectFile.direct is not fs.AsyncFile.direct


def test_plain_open_gives_an_async_file_that_is_not_direct(tmp_path):
    p = tmp_path / "plain.bin"

    async def main():
        async with fs.open(p, "w+b") as f:
            assert type(f) is fs.AsyncFile and not f.direct
            assert f.alignment == 1 and f.memory_alignment == 1
            assert repr(f).startswith("<ringline.files.fs.AsyncFile name=")
            assert not hasattr(f, "buffer")          # DirectBuffers are for DirectFile
        return True

    assert run(main)


@pytest.mark.parametrize("first", ["ringline.files.direct", "ringline.files.fs", "ringline.fs"])
def test_direct_and_fs_import_in_either_order(first):
    """direct.py subclasses fs.AsyncFile and fs.py imports DirectFile back:
    a fresh interpreter importing either module first gets both whole."""
    import ringline as _pkg

    code = f"""
        import importlib
        importlib.import_module({first!r})
        from ringline import fs
        from ringline.files import direct
        assert fs.DirectFile is direct.DirectFile
        assert issubclass(direct.DirectFile, fs.AsyncFile)
        print("ok")
    """
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(_pkg.__file__)))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == "ok\n", proc.stderr
