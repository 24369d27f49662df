"""NVMe passthrough: command encoding against the kernel's layout, status
decoding, the side ring's wake-up of the loop, open errors, and (when an
NVMe generic character device exists) real commands."""

import asyncio
import errno
import glob
import os
import struct
import tempfile
import time

import pytest

import ringline
from ringline.errors import NvmeError
from ringline.files import nvme  # the implementation (private helpers)
from ringline.files import nvme_ring as _nvme
from ringline.native.workers import _fork
from tests.support import run

NG_DEVICES = sorted(glob.glob("/dev/ng*n*"))



def _iowr(type_, nr, size):
    return (3 << 30) | (size << 16) | (ord(type_) << 8) | nr


# ---------------------------------------------------------------------------
# encoding
# ---------------------------------------------------------------------------

# struct nvme_uring_cmd, <linux/nvme_ioctl.h>
KERNEL_OFFSETS = {
    "sizeof": 72, "opcode": 0, "flags": 1, "rsvd1": 2, "nsid": 4, "cdw2": 8, "cdw3": 12,
    "metadata": 16, "addr": 24, "metadata_len": 32, "data_len": 36, "cdw10": 40,
    "cdw11": 44, "cdw12": 48, "cdw13": 52, "cdw14": 56, "cdw15": 60, "timeout_ms": 64,
    "rsvd2": 68,
}


def test_cmd_op_is_iowr_N_0x80_of_the_72_byte_command():
    assert _iowr("N", 0x80, 72) == 0xC0484E80 == nvme.NVME_URING_CMD_IO
    assert _iowr("N", 0x82, 72) == 0xC0484E82 == nvme.NVME_URING_CMD_ADMIN
    assert _nvme.NVME_URING_CMD_IO_VEC == 0xC0484E81
    assert nvme.NVME_IOCTL_ADMIN_CMD == _iowr("N", 0x41, 72)
    assert nvme.NVME_IOCTL_ID == (ord("N") << 8) | 0x40


def test_command_layout_matches_the_kernel_struct():
    ours = _nvme.our_layout()
    for field, off in KERNEL_OFFSETS.items():
        assert ours[field] == off, field
    assert _nvme.CMD_SIZE == 72 and _nvme.SQE_CMD_OFFSET == 48
    kernel = _nvme.kernel_layout()
    if kernel is None:
        pytest.skip("<linux/nvme_ioctl.h> was not installed at build time")
    assert kernel == ours


def test_encoded_command_bytes():
    raw = _nvme.encode_cmd(opcode=0x02, flags=0, nsid=1, cdw2=2, cdw3=3, metadata=0x1122,
                           addr=0xDEADBEEF000, metadata_len=8, data_len=4096, cdw10=10,
                           cdw11=11, cdw12=12, cdw13=13, cdw14=14, cdw15=15, timeout_ms=500)
    assert len(raw) == 72
    fields = struct.unpack("<BBHIIIQQIIIIIIIIII", raw)
    assert fields == (0x02, 0, 0, 1, 2, 3, 0x1122, 0xDEADBEEF000, 8, 4096, 10, 11, 12, 13,
                      14, 15, 500, 0)
    with pytest.raises(TypeError):
        _nvme.encode_cmd(bogus=1)


def test_read_write_dwords():
    f = nvme.rw_fields(lba=(2 << 32) + 5, blocks=8, nsid=3)
    assert f == {"nsid": 3, "cdw10": 5, "cdw11": 2, "cdw12": 7}
    assert nvme.rw_fields(0, 65536, 1)["cdw12"] == 0xFFFF
    for bad in (0, 65537, -1, 1.5):
        with pytest.raises(ValueError):
            nvme.rw_fields(0, bad, 1)            # 0 blocks would wrap to 65536
    for bad in (-1, 1 << 64):
        with pytest.raises(ValueError):
            nvme.rw_fields(bad, 1, 1)


def test_identify_namespace_parsing():
    page = bytearray(4096)
    struct.pack_into("<QQQ", page, 0, 1000, 900, 10)
    page[25] = 1          # nlbaf: two formats (0-based)
    page[26] = 1          # flbas: format 1 in use
    struct.pack_into("<HBB", page, 128, 0, 9, 0)       # format 0: 512 B
    struct.pack_into("<HBB", page, 132, 8, 12, 0)      # format 1: 4 KiB + 8 B metadata
    info = nvme.parse_identify_namespace(bytes(page))
    assert info == {"nsze": 1000, "ncap": 900, "nuse": 10, "lba_format": 1,
                    "block_size": 4096, "metadata_size": 8}


# ---------------------------------------------------------------------------
# status decoding (synthetic completions through the real completion path)
# ---------------------------------------------------------------------------

def test_nvme_status_and_errno_decoding():
    async def main():
        loop = asyncio.get_running_loop()
        side = nvme._side_for(loop)
        try:
            fut = side._test_complete(0x4281, 0)     # DNR | media error / unrecovered read
            with pytest.raises(NvmeError) as ei:
                await fut
            e = ei.value
            assert (e.status, e.sct, e.sc, e.dnr, e.errno) == (0x4281, 2, 0x81, True, errno.EIO)
            assert "unrecovered read error" in str(e)
            with pytest.raises(NvmeError) as ei:
                await side._test_complete(0x0080, 0)
            assert ei.value.name == "LBA out of range" and not ei.value.dnr
            with pytest.raises(OSError) as ei:
                await side._test_complete(-errno.EACCES, 0)
            assert ei.value.errno == errno.EACCES and not isinstance(ei.value, NvmeError)
            assert await side._test_complete(0, 0xABCDEF) == (0xABCDEF, None)
            assert await side._test_complete(0, 7, True) == (7, b"\x5a" * 8)
        finally:
            side.shutdown()
        return True

    assert run(main)


# ---------------------------------------------------------------------------
# the side ring: 128-byte SQEs, 32-byte CQEs, completions wake the loop
# ---------------------------------------------------------------------------

def test_side_ring_geometry():
    async def main():
        loop = asyncio.get_running_loop()
        side = nvme._side_for(loop)
        try:
            assert (side.sqe_size, side.cqe_size) == (128, 32)
            assert side.capacity == loop.config.nvme_cmds_in_flight
        finally:
            side.shutdown()
        return True

    assert run(main, config=ringline.Config(nvme_cmds_in_flight=100))


def test_side_ring_completion_wakes_a_sleeping_loop():
    """Nothing else is scheduled: the loop sleeps in io_uring_enter on its
    own ring, and only the side ring's eventfd can wake it."""
    async def main():
        loop = asyncio.get_running_loop()
        side = nvme._side_for(loop)
        try:
            before = loop.statistics()
            t0 = time.monotonic()
            res = await side._test_timeout(0.2)
            elapsed = time.monotonic() - t0
            after = loop.statistics()
            assert res == -errno.ETIME
            assert 0.19 <= elapsed < 1.0, elapsed
            assert after["iterations"] - before["iterations"] < 20   # it slept, it did not spin
            assert after["waits"] > before["waits"]
            # several at once, completing in their own order
            order = []

            async def one(d):
                await side._test_timeout(d)
                order.append(d)

            await asyncio.gather(*(one(d) for d in (0.09, 0.03, 0.06)))
            assert order == [0.03, 0.06, 0.09]
            assert side.in_flight == 0
            await asyncio.sleep(0.01)
            assert not side.armed                  # no read left armed when idle
        finally:
            side.shutdown()
        return True

    assert run(main)


def test_uring_cmd_really_reaches_the_kernel(tmp_path):
    """/dev/null has a no-op uring_cmd handler: a full round trip through a
    128-byte SQE and a 32-byte CQE. A directory has none: EOPNOTSUPP."""
    async def main():
        loop = asyncio.get_running_loop()
        side = nvme._side_for(loop)
        null = os.open("/dev/null", os.O_RDWR)
        dfd = os.open(tmp_path, os.O_RDONLY)
        try:
            futs = [side.submit(null, nvme.NVME_URING_CMD_IO,
                                {"opcode": nvme.IoOpcode.READ, "nsid": 1}, None, 4096, "probe")
                    for _ in range(64)]
            assert side.submitted == 64 and side.in_flight == 64
            for fut in futs:
                assert await fut == (0, b"\0" * 4096)
            res = await side.submit(null, nvme.NVME_URING_CMD_IO, {"opcode": 1},
                                    b"x" * 512, 0, "probe")
            assert res == (0, None)
            with pytest.raises(OSError) as ei:
                await side.submit(dfd, nvme.NVME_URING_CMD_IO, {"opcode": 2}, None, 0, "probe")
            assert ei.value.errno == errno.EOPNOTSUPP
            assert side.submitted == side.completed == 66
        finally:
            os.close(null)
            os.close(dfd)
            side.shutdown()
        return True

    assert run(main)


def test_device_api_end_to_end_on_dev_null():
    """The whole NvmeDevice path (fields, buffers, in-flight cap) against
    /dev/null's no-op uring_cmd: every command completes with status 0."""
    async def main():
        loop = asyncio.get_running_loop()
        side = nvme._side_for(loop)
        loop._nvme_users += 1
        fd = os.open("/dev/null", os.O_RDWR)
        dev = nvme.NvmeDevice(loop, fd, "/dev/null", "namespace", 1, 512, 1000, side)
        assert side.capacity == 4
        results = await asyncio.gather(*(dev.read(i, 2) for i in range(32)))
        assert results == [b"\0" * 1024] * 32
        assert side.submitted == 32 and side.in_flight == 0
        await dev.write(7, b"y" * 1024)
        await dev.flush()
        res = await dev.io_command(nvme.IoOpcode.COMPARE, cdw10=1, data=b"z" * 512)
        assert res == nvme.NvmeResult(0, None)
        with pytest.raises(ValueError, match="whole logical blocks"):
            await dev.write(0, b"short")
        with pytest.raises(ValueError, match="controller"):
            await dev.admin_command(nvme.AdminOpcode.IDENTIFY, read_len=4096)
        with pytest.raises(ValueError):
            await dev.read(0, 0)
        await dev.close()                     # last device: the side ring closes
        assert side.closed and loop._nvme_ring is None
        with pytest.raises(ValueError, match="closed"):
            await dev.read(0, 1)
        return True

    assert run(main, config=ringline.Config(nvme_cmds_in_flight=4))


def test_shutdown_with_commands_in_flight_cancels_them():
    async def main():
        loop = asyncio.get_running_loop()
        side = nvme._side_for(loop)
        fut = side._test_timeout(30)
        await asyncio.sleep(0.01)
        assert side.in_flight == 1
        t0 = time.monotonic()
        side.shutdown()
        assert time.monotonic() - t0 < 1.0
        assert side.closed and side.in_flight == 0
        assert await fut == -errno.ECANCELED
        return True

    assert run(main)


# ---------------------------------------------------------------------------
# opening devices
# ---------------------------------------------------------------------------

def test_missing_device_is_a_clear_error():
    async def main():
        with pytest.raises(FileNotFoundError) as ei:
            await nvme.open("/dev/ng-does-not-exist")
        assert "does not exist" in str(ei.value) and "/dev/ngXnY" in str(ei.value)
        assert ei.value.filename == "/dev/ng-does-not-exist"
        return True

    assert run(main)


def test_non_nvme_devices_are_refused(tmp_path):
    regular = tmp_path / "plain"
    regular.write_bytes(b"")

    async def main():
        with pytest.raises(ValueError, match="not an NVMe character device"):
            await nvme.open("/dev/null")
        with pytest.raises(ValueError, match="not a character device"):
            await nvme.open(regular)
        return True

    before = set(os.listdir("/proc/self/fd"))
    assert run(main)
    assert set(os.listdir("/proc/self/fd")) == before


def test_device_not_permitted_is_a_clear_error():
    if os.geteuid() != 0:
        pytest.skip("needs root to create a device node and switch users")
    d = tempfile.mkdtemp(prefix="ringline-nvme-")
    node = os.path.join(d, "ng9n1")
    try:
        os.chmod(d, 0o755)
        try:
            os.mknod(node, 0o600 | 0o020000, os.makedev(1, 3))   # a root-only char device
        except OSError as e:
            pytest.skip(f"cannot create a device node here: {e}")

        async def attempt():
            try:
                await nvme.open(node)
            except PermissionError as e:
                return f"{e.errno}|{e}"
            return "opened"

        rfd, wfd = os.pipe()
        pid = _fork()       # io_uring workers may linger: no warning for them
        if pid == 0:
            status = 1
            try:
                os.close(rfd)
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                os.write(wfd, ringline.run(attempt()).encode())
                status = 0
            finally:
                os._exit(status)
        os.close(wfd)
        with os.fdopen(rfd) as r:
            out = r.read()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        code, msg = out.split("|", 1)
        assert int(code) == errno.EACCES and "not permitted" in msg and node in msg
    finally:
        if os.path.exists(node):
            os.unlink(node)
        os.rmdir(d)


# ---------------------------------------------------------------------------
# a real device
# ---------------------------------------------------------------------------

needs_device = pytest.mark.skipif(
    not NG_DEVICES, reason="no NVMe generic character device (/dev/ngXnY) on this machine")


@needs_device
def test_real_device_read_and_flush():
    async def main():
        async with nvme.open(NG_DEVICES[0]) as dev:
            assert dev.block_size >= 512 and dev.nsid >= 1
            block = await dev.read(0, 1)
            assert len(block) == dev.block_size
            two = await dev.read(0, 2)
            assert two[:dev.block_size] == block
            await dev.flush()
            with pytest.raises(NvmeError) as ei:
                await dev.read(dev.nblocks + 10, 1)
            assert ei.value.sc == 0x80                  # LBA out of range
            with pytest.raises(ValueError):
                await dev.admin_command(nvme.AdminOpcode.IDENTIFY, cdw10=1, read_len=4096)
        return True

    assert run(main)


@needs_device
@pytest.mark.skipif(not os.environ.get("RINGLINE_NVME_SCRATCH_LBA"),
                    reason="writes need RINGLINE_NVME_SCRATCH_LBA=<an LBA you can overwrite>")
def test_real_device_write_flush_read_back():
    lba = int(os.environ["RINGLINE_NVME_SCRATCH_LBA"])

    async def main():
        async with nvme.open(NG_DEVICES[0]) as dev:
            old = await dev.read(lba, 1)
            data = os.urandom(dev.block_size)
            try:
                await dev.write(lba, data)
                await dev.flush()
                assert await dev.read(lba, 1) == data
            finally:
                await dev.write(lba, old)
                await dev.flush()
        return True

    assert run(main)
