"""NVMe passthrough on io_uring: ``ringline.files.nvme``.

``await ringline.files.nvme.open("/dev/ng0n1")`` opens an NVMe generic character
device (one per namespace, Linux 5.13+) and sends NVMe commands to it with
IORING_OP_URING_CMD, bypassing the block layer's request merging and the page
cache::

    async with ringline.files.nvme.open("/dev/ng0n1") as dev:
        await dev.write(lba=0, data=block)          # len(block) % dev.block_size == 0
        await dev.flush()
        data = await dev.read(lba=0, blocks=1)
        res = await dev.io_command(IoOpcode.READ, cdw10=0, cdw12=0, read_len=dev.block_size)

A controller device (``/dev/nvme0``) takes admin commands:
``await ctrl.admin_command(AdminOpcode.IDENTIFY, cdw10=1, read_len=4096)``.

Commands travel on a second ring with 128-byte SQEs and 32-byte CQEs (the
driver requires both), whose completions wake the event loop through an
eventfd read armed on the loop's own ring; see ``files/nvme_ring.pyx`` and
docs/files.md. A non-zero NVMe status raises
:class:`ringline.errors.NvmeError` with the status decoded; a negative result
is an errno (``OSError``).
"""

from __future__ import annotations

import ctypes
import enum
import errno
import fcntl
import os
import stat as _stat
import struct
from typing import Any, NamedTuple

from ringline.errors import NvmeError
from ringline.files import fs as fs

try:
    from ringline.files import nvme_ring as _nvme
except ImportError as _exc:  # a pure-Python install: passthrough is io_uring's alone
    raise ImportError("ringline.nvme needs ringline's compiled io_uring extension, which "
                      f"this install does not have ({_exc})") from _exc

__all__ = [
    "NVME_URING_CMD_ADMIN",
    "NVME_URING_CMD_IO",
    "AdminOpcode",
    "IoOpcode",
    "NvmeDevice",
    "NvmeError",
    "NvmeResult",
    "open",
    "parse_identify_namespace",
    "rw_fields",
]

#: ``_IOWR('N', 0x80, struct nvme_uring_cmd)`` = 0xC0484E80: the cmd_op of an
#: NVMe I/O command (the reference crate sent 0 here, so every command failed
#: with ENOTTY).
NVME_URING_CMD_IO: int = _nvme.NVME_URING_CMD_IO
#: ``_IOWR('N', 0x82, struct nvme_uring_cmd)`` = 0xC0484E82: admin commands
#: (controller character devices /dev/nvmeX only).
NVME_URING_CMD_ADMIN: int = _nvme.NVME_URING_CMD_ADMIN

NVME_IOCTL_ID = 0x4E40                    # _IO('N', 0x40)
NVME_IOCTL_ADMIN_CMD = 0xC0484E41         # _IOWR('N', 0x41, struct nvme_passthru_cmd)


class IoOpcode(enum.IntEnum):
    """NVM command set I/O opcodes."""

    FLUSH = 0x00
    WRITE = 0x01
    READ = 0x02
    WRITE_UNCORRECTABLE = 0x04
    COMPARE = 0x05
    WRITE_ZEROES = 0x08
    DATASET_MANAGEMENT = 0x09


class AdminOpcode(enum.IntEnum):
    """A few admin opcodes."""

    GET_LOG_PAGE = 0x02
    IDENTIFY = 0x06
    SET_FEATURES = 0x09
    GET_FEATURES = 0x0A


class NvmeResult(NamedTuple):
    """A passthrough command's outcome: completion dword 0 and any data read."""

    result: int
    data: bytes | None


def rw_fields(lba: int, blocks: int, nsid: int) -> dict[str, int]:
    """The command dwords of a Read/Write of ``blocks`` blocks at ``lba``.

    CDW10/11 hold the starting LBA (low/high 32 bits), CDW12 bits 0-15 the
    number of logical blocks minus one (so 1..65536 blocks; 0 would wrap).
    """
    if not isinstance(blocks, int) or not 1 <= blocks <= 65536:
        raise ValueError(f"blocks must be in 1..65536 (got {blocks!r})")
    if not isinstance(lba, int) or not 0 <= lba < 1 << 64:
        raise ValueError(f"lba must be in 0..2**64-1 (got {lba!r})")
    return {"nsid": nsid, "cdw10": lba & 0xFFFFFFFF, "cdw11": lba >> 32, "cdw12": blocks - 1}


def parse_identify_namespace(page: bytes) -> dict[str, int]:
    """Size, capacity and block size from an Identify Namespace page (CNS 0)."""
    if len(page) < 4096:
        raise ValueError("an Identify Namespace page is 4096 bytes")
    nsze, ncap, nuse = struct.unpack_from("<QQQ", page, 0)
    nlbaf = page[25]
    flbas = page[26]
    index = (flbas & 0xF) | (((flbas >> 5) & 0x3) << 4 if nlbaf >= 16 else 0)
    ms, lbads, rp = struct.unpack_from("<HBB", page, 128 + 4 * index)
    if lbads < 9:
        raise ValueError(f"LBA format {index} reports block size 2**{lbads}")
    return {"nsze": nsze, "ncap": ncap, "nuse": nuse, "lba_format": index,
            "block_size": 1 << lbads, "metadata_size": ms}


def _device_kind(st: os.stat_result) -> str | None:
    sub = f"/sys/dev/char/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}/subsystem"
    try:
        name = os.path.basename(os.readlink(sub))
    except OSError:
        return None
    return {"nvme-generic": "namespace", "nvme": "controller"}.get(name)


def _identify_block_size(fd: int, nsid: int) -> tuple[int, int]:
    """(block size, namespace size in blocks) via Identify Namespace (ioctl)."""
    page = ctypes.create_string_buffer(4096)
    cmd = bytearray(_nvme.encode_cmd(opcode=AdminOpcode.IDENTIFY, nsid=nsid,
                                     addr=ctypes.addressof(page), data_len=4096, cdw10=0))
    status = fcntl.ioctl(fd, NVME_IOCTL_ADMIN_CMD, cmd)
    if status > 0:
        raise NvmeError(status & 0x7FFF, "identify namespace")
    info = parse_identify_namespace(page.raw)
    return info["block_size"], info["nsze"]


def _side_for(loop: Any) -> Any:
    side = loop._nvme_ring
    if side is None or side.closed:
        from ringline.config import Config
        cfg = getattr(loop, "config", None) or Config()
        side = _nvme.SideRing(loop, cfg.nvme_cmds_in_flight)
        loop._nvme_ring = side
        loop._nvme_users = 0
    return side


class NvmeDevice:
    """An open NVMe character device; see :func:`open`."""

    def __init__(self, loop: Any, fd: int, path: str, kind: str, nsid: int,
                 block_size: int, nblocks: int, side: Any) -> None:
        self._loop = loop
        self._fd = fd
        self.path = path
        self.kind = kind
        self.nsid = nsid
        self.block_size = block_size
        self.nblocks = nblocks
        self._side = side
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def fileno(self) -> int:
        return self._fd

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"fd={self._fd}"
        return (f"<ringline.files.nvme.NvmeDevice {self.path} {self.kind} nsid={self.nsid} "
                f"block_size={self.block_size} {state}>")

    def _check(self, kind: str) -> None:
        if self._closed:
            raise ValueError(f"NVMe device {self.path} is closed")
        if kind != self.kind:
            if kind == "controller":
                raise ValueError(
                    f"{self.path} is a namespace device: admin commands go to the "
                    f"controller's character device (/dev/nvmeX), which the kernel "
                    f"only accepts NVME_URING_CMD_ADMIN on")
            raise ValueError(f"{self.path} is a controller device: I/O commands need a "
                             f"namespace's generic device (/dev/ngXnY)")

    async def _submit(self, cmd_op: int, fields: dict[str, int], data: Any,
                      read_len: int, what: str) -> NvmeResult:
        side = self._side
        room = side.room()
        if room is not None:                     # Config.nvme_cmds_in_flight reached
            await room
        fut = side.submit(self._fd, cmd_op, fields, data, read_len, what)
        # A passthrough command cannot be cancelled once the device has it:
        # a cancelled waiter just stops listening; the buffers stay pinned
        # by the side ring until the CQE.
        result, got = await fut
        return NvmeResult(result, got)

    async def read(self, lba: int, blocks: int = 1) -> bytes:
        """Read ``blocks`` logical blocks starting at ``lba`` (NVMe Read)."""
        self._check("namespace")
        fields = rw_fields(lba, blocks, self.nsid)
        fields["opcode"] = IoOpcode.READ
        res = await self._submit(NVME_URING_CMD_IO, fields, None, blocks * self.block_size,
                                 f"NVMe read of {blocks} block(s) at LBA {lba} on {self.path}")
        assert res.data is not None
        return res.data

    async def write(self, lba: int, data: Any) -> None:
        """Write ``data`` (a whole number of logical blocks) at ``lba``."""
        self._check("namespace")
        n = memoryview(data).nbytes
        if n == 0 or n % self.block_size:
            raise ValueError(f"NVMe writes are whole logical blocks: {n} bytes is not a "
                             f"positive multiple of {self.block_size}")
        blocks = n // self.block_size
        fields = rw_fields(lba, blocks, self.nsid)
        fields["opcode"] = IoOpcode.WRITE
        await self._submit(NVME_URING_CMD_IO, fields, data, 0,
                           f"NVMe write of {blocks} block(s) at LBA {lba} on {self.path}")

    async def flush(self) -> None:
        """Commit the volatile write cache to media (NVMe Flush)."""
        self._check("namespace")
        await self._submit(NVME_URING_CMD_IO, {"opcode": IoOpcode.FLUSH, "nsid": self.nsid},
                           None, 0, f"NVMe flush on {self.path}")

    async def io_command(self, opcode: int, *, nsid: int | None = None, data: Any = None,
                         read_len: int = 0, cdw2: int = 0, cdw3: int = 0, cdw10: int = 0,
                         cdw11: int = 0, cdw12: int = 0, cdw13: int = 0, cdw14: int = 0,
                         cdw15: int = 0, flags: int = 0, timeout_ms: int = 0) -> NvmeResult:
        """A raw NVMe I/O command: ``data`` goes to the device, or
        ``read_len`` bytes come back in the result."""
        self._check("namespace")
        fields = dict(opcode=opcode, nsid=self.nsid if nsid is None else nsid, flags=flags,
                      cdw2=cdw2, cdw3=cdw3, cdw10=cdw10, cdw11=cdw11, cdw12=cdw12,
                      cdw13=cdw13, cdw14=cdw14, cdw15=cdw15, timeout_ms=timeout_ms)
        return await self._submit(NVME_URING_CMD_IO, fields, data, read_len,
                                  f"NVMe I/O command {opcode:#04x} on {self.path}")

    async def admin_command(self, opcode: int, *, nsid: int = 0, data: Any = None,
                            read_len: int = 0, cdw2: int = 0, cdw3: int = 0, cdw10: int = 0,
                            cdw11: int = 0, cdw12: int = 0, cdw13: int = 0, cdw14: int = 0,
                            cdw15: int = 0, flags: int = 0, timeout_ms: int = 0) -> NvmeResult:
        """A raw admin command (controller devices, NVME_URING_CMD_ADMIN)."""
        self._check("controller")
        fields = dict(opcode=opcode, nsid=nsid, flags=flags, cdw2=cdw2, cdw3=cdw3,
                      cdw10=cdw10, cdw11=cdw11, cdw12=cdw12, cdw13=cdw13, cdw14=cdw14,
                      cdw15=cdw15, timeout_ms=timeout_ms)
        return await self._submit(NVME_URING_CMD_ADMIN, fields, data, read_len,
                                  f"NVMe admin command {opcode:#04x} on {self.path}")

    async def close(self) -> None:
        """Close the device; the loop's NVMe ring closes with its last device."""
        if self._closed:
            return
        self._closed = True
        loop = self._loop
        side: Any = self._side
        if loop._nvme_ring is side:
            loop._nvme_users -= 1
            if loop._nvme_users <= 0:
                side.shutdown()
                loop._nvme_ring = None
        if loop.is_closed():
            os.close(self._fd)
        else:
            await fs.close(self._fd)

    async def __aenter__(self) -> NvmeDevice:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


class _Opening:
    __slots__ = ("_args", "_dev")

    def __init__(self, *args: Any) -> None:
        self._args = args
        self._dev: NvmeDevice | None = None

    def __await__(self) -> Any:
        return _open(*self._args).__await__()

    async def __aenter__(self) -> NvmeDevice:
        self._dev = await _open(*self._args)
        return self._dev

    async def __aexit__(self, *exc: Any) -> None:
        assert self._dev is not None
        await self._dev.close()


def open(device: Any = "/dev/ng0n1", nsid: int | None = None, *,
         block_size: int | None = None) -> _Opening:
    """Open an NVMe character device for passthrough (await it or ``async with``).

    ``device`` is a namespace's generic device ``/dev/ngXnY`` (I/O commands)
    or a controller ``/dev/nvmeX`` (admin commands). ``nsid`` defaults to the
    namespace's own id (NVME_IOCTL_ID); ``block_size`` to the formatted LBA
    size from Identify Namespace. Raises FileNotFoundError or
    PermissionError with the fix, or ValueError for a device that is not an
    NVMe character device.
    """
    return _Opening(device, nsid, block_size)


async def _open(device: Any, nsid: int | None, block_size: int | None) -> NvmeDevice:
    loop = fs._running_loop("ringline.nvme")
    path = os.fsdecode(device)
    try:
        fd = await fs.openat(path, os.O_RDWR)
    except FileNotFoundError:
        raise FileNotFoundError(
            errno.ENOENT, f"NVMe device {path} does not exist: passthrough needs an NVMe "
            f"generic character device /dev/ngXnY (Linux 5.13+, one per namespace) or a "
            f"controller device /dev/nvmeX; list them with `ls /dev/ng* /dev/nvme*`",
            path) from None
    except PermissionError:
        raise PermissionError(
            errno.EACCES, f"not permitted to open NVMe device {path} read-write: "
            f"passthrough needs rw access to the character device (run as root, or "
            f"grant it with a udev rule or group; unprivileged passthrough of I/O "
            f"commands needs Linux 6.2+)", path) from None
    try:
        st = os.fstat(fd)
        if not _stat.S_ISCHR(st.st_mode):
            hint = (" (that is the block device: use the generic character device "
                    "/dev/ngXnY)" if _stat.S_ISBLK(st.st_mode) else "")
            raise ValueError(f"{path} is not a character device{hint}; NVMe passthrough "
                             f"needs /dev/ngXnY or /dev/nvmeX")
        kind = _device_kind(st)
        if kind is None:
            raise ValueError(f"{path} is not an NVMe character device (its sysfs subsystem "
                             f"is neither nvme-generic nor nvme)")
        nblocks = 0
        if kind == "namespace":
            dev_nsid = fcntl.ioctl(fd, NVME_IOCTL_ID)
            if nsid is None:
                nsid = dev_nsid
            elif nsid != dev_nsid:
                raise ValueError(f"{path} is namespace {dev_nsid}, not nsid={nsid} "
                                 f"(the kernel rejects commands for another namespace)")
            if block_size is None:
                block_size, nblocks = _identify_block_size(fd, nsid)
        else:
            nsid = 0 if nsid is None else nsid
        side = _side_for(loop)
        loop._nvme_users += 1
        return NvmeDevice(loop, fd, path, kind, nsid, block_size or 0, nblocks, side)
    except BaseException:
        os.close(fd)
        raise
