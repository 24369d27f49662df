"""``python -m ringline``: what this machine allows ringline to do, and why.

Pure Python on purpose: the probes talk to the kernel with raw syscalls
through ctypes (``io_uring_setup`` = 425, ``io_uring_enter`` = 426,
``io_uring_register`` = 427 on x86_64 and aarch64 alike), so the diagnosis
works where the compiled extension is missing or cannot load. Values follow
the kernel UAPI (our copy: ``src/ringline/_core/abi/io_uring.h``).

Every probe is bounded (each wait has a one-second timeout) and leaves
nothing behind: each uses its own short-lived ring, and every fd, mapping and
temporary file it makes is closed, unmapped or removed before it returns.

:func:`diagnose` returns a JSON-ready dict:

``kernel``
    ``release`` (``uname -r``) and ``machine``.
``python``
    The interpreter's version.
``io_uring``
    ``usable`` (bool: a ring with the loop's setup flags opens, has the
    opcodes the loop needs and completes a NOP); when not, ``errno``/``errno_name``, ``cause`` (the
    :class:`ringline.errors.IoUringUnavailable` cause word: ``disabled``,
    ``permission_denied``, ``not_supported``, ``kernel_too_old``,
    ``missing_opcode``, ``resource_limit``, ``setup_failed``), ``detail``
    (what points at the cause), ``message`` (ringline's error text) and
    ``fix`` (one sentence). Always: ``sysctl_io_uring_disabled`` and
    ``sysctl_io_uring_group`` (None where the sysctl does not exist),
    ``seccomp_mode`` and ``seccomp_filters`` (``/proc/self/status``),
    ``setup_flags`` and ``ring_features`` of the ring that opened,
    ``opcodes_supported`` (a count), ``missing_opcodes`` (needed by the loop)
    and ``missing_optional_opcodes`` (used by the native API and files).
``features``
    Name -> ``{"supported": bool | None, "detail": str}`` (None: could not be
    probed) for ``multishot_accept``, ``multishot_recv``,
    ``provided_buffer_ring``, ``pbuf_ring_incremental``, ``send_zc``,
    ``recvsend_bundle``, ``registered_ring_fd``, ``sqpoll``, ``fixed_files``,
    ``nvme_char_devices`` (plus ``devices``, a list) and ``o_direct`` (plus
    ``directory``).
``limits``
    ``memlock`` and ``nofile``: ``soft`` and ``hard`` (None = unlimited) and
    ``allows`` (a sentence); ``memlock.registered_buffers`` (1 MiB O_DIRECT
    buffers that fit, None = unlimited) and ``nofile.connections_per_worker``.
``cpu``
    ``count`` (``os.sched_getaffinity``), ``quota`` (the cgroup CPU quota in
    CPUs, v2 or v1; None = none) and ``suggested_workers``.
``backend``
    ``auto``: what ``backend="auto"`` would choose (``"uring"`` or
    ``"portable"``); ``env``: ``RINGLINE_BACKEND`` if set; ``extension``:
    whether ringline's compiled core is installed (False in a pure-Python
    install, which always runs portable) and ``extension_missing``: why not.
``exit_status``
    0 when io_uring is usable, else 1 (what ``python -m ringline`` exits with).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno as _errno
import functools
import glob
import math
import mmap
import os
import platform
import secrets
import socket
import struct
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from typing import Any

from ringline.errors import (
    IoUringUnavailable,
    KernelTooOld,
    MissingOpcode,
    classify_setup_error,
)

__all__ = ["diagnose", "format_report"]

# ---- the UAPI values these probes use (include/uapi/linux/io_uring.h) ----

NR_IO_URING_SETUP = 425
NR_IO_URING_ENTER = 426
NR_IO_URING_REGISTER = 427

SETUP_SQPOLL = 1 << 1
SETUP_SUBMIT_ALL = 1 << 7
SETUP_COOP_TASKRUN = 1 << 8
SETUP_TASKRUN_FLAG = 1 << 9
SETUP_SINGLE_ISSUER = 1 << 12
SETUP_DEFER_TASKRUN = 1 << 13
#: What the loop asks for (ringline._core.ring.DEFAULT_FLAGS).
DEFAULT_SETUP_FLAGS = (SETUP_COOP_TASKRUN | SETUP_TASKRUN_FLAG | SETUP_SINGLE_ISSUER
                       | SETUP_DEFER_TASKRUN | SETUP_SUBMIT_ALL)
_SETUP_FLAG_NAMES = {
    SETUP_SQPOLL: "SQPOLL", SETUP_SUBMIT_ALL: "SUBMIT_ALL",
    SETUP_COOP_TASKRUN: "COOP_TASKRUN", SETUP_TASKRUN_FLAG: "TASKRUN_FLAG",
    SETUP_SINGLE_ISSUER: "SINGLE_ISSUER", SETUP_DEFER_TASKRUN: "DEFER_TASKRUN",
}

FEAT_SINGLE_MMAP = 1 << 0
FEAT_NODROP = 1 << 1
FEAT_EXT_ARG = 1 << 8
FEAT_REG_REG_RING = 1 << 13
FEAT_RECVSEND_BUNDLE = 1 << 14
_FEATURE_NAMES = [
    "SINGLE_MMAP", "NODROP", "SUBMIT_STABLE", "RW_CUR_POS", "CUR_PERSONALITY",
    "FAST_POLL", "POLL_32BITS", "SQPOLL_NONFIXED", "EXT_ARG", "NATIVE_WORKERS",
    "RSRC_TAGS", "CQE_SKIP", "LINKED_FILE", "REG_REG_RING", "RECVSEND_BUNDLE",
    "MIN_TIMEOUT", "RW_ATTR", "NO_IOWAIT",
]

ENTER_GETEVENTS = 1 << 0
ENTER_EXT_ARG = 1 << 3
ENTER_REGISTERED_RING = 1 << 4

REGISTER_PROBE = 8
UNREGISTER_FILES = 3
REGISTER_FILES2 = 13
REGISTER_RING_FDS = 20
UNREGISTER_RING_FDS = 21
REGISTER_PBUF_RING = 22
UNREGISTER_PBUF_RING = 23
RSRC_REGISTER_SPARSE = 1 << 0
IOU_PBUF_RING_INC = 2
IO_URING_OP_SUPPORTED = 1 << 0

OFF_SQ_RING = 0
OFF_CQ_RING = 0x8000000
OFF_SQES = 0x10000000

IOSQE_BUFFER_SELECT = 1 << 5
ACCEPT_MULTISHOT = 1 << 0
RECV_MULTISHOT = 1 << 1
CQE_F_BUFFER = 1 << 0
CQE_F_MORE = 1 << 1
CQE_F_NOTIF = 1 << 3
CQE_F_BUF_MORE = 1 << 4

#: enum io_uring_op, by name (as in _core/abi/io_uring.h).
OPCODES = {name: i for i, name in enumerate([
    "NOP", "READV", "WRITEV", "FSYNC", "READ_FIXED", "WRITE_FIXED", "POLL_ADD",
    "POLL_REMOVE", "SYNC_FILE_RANGE", "SENDMSG", "RECVMSG", "TIMEOUT",
    "TIMEOUT_REMOVE", "ACCEPT", "ASYNC_CANCEL", "LINK_TIMEOUT", "CONNECT",
    "FALLOCATE", "OPENAT", "CLOSE", "FILES_UPDATE", "STATX", "READ", "WRITE",
    "FADVISE", "MADVISE", "SEND", "RECV", "OPENAT2", "EPOLL_CTL", "SPLICE",
    "PROVIDE_BUFFERS", "REMOVE_BUFFERS", "TEE", "SHUTDOWN", "RENAMEAT",
    "UNLINKAT", "MKDIRAT", "SYMLINKAT", "LINKAT", "MSG_RING", "FSETXATTR",
    "SETXATTR", "FGETXATTR", "GETXATTR", "SOCKET", "URING_CMD", "SEND_ZC",
    "SENDMSG_ZC", "READ_MULTISHOT", "WAITID", "FUTEX_WAIT", "FUTEX_WAKE",
    "FUTEX_WAITV", "FIXED_FD_INSTALL",
])}
#: The loop cannot start without these (ringline._core.ring.REQUIRED_OPCODES).
REQUIRED_OPCODES = ("NOP", "READ", "TIMEOUT", "ASYNC_CANCEL", "POLL_ADD")
#: Used by the native connection API and ringline.files.fs; each has a fallback or
#: only disables the feature that needs it.
OPTIONAL_OPCODES = ("ACCEPT", "CONNECT", "RECV", "SEND", "SEND_ZC", "SHUTDOWN",
                    "CLOSE", "SOCKET", "FIXED_FD_INSTALL", "WRITE", "FSYNC",
                    "READ_FIXED", "WRITE_FIXED", "OPENAT", "STATX", "URING_CMD")

# Config defaults that decide what the limits allow (ringline.config.Config).
_DEFAULT_MAX_CONNECTIONS = 16000
_DEFAULT_FILE_SLOTS = 64
_REGISTERED_BUFFER_SIZE = 1 << 20
_AUTO_REGISTERED_BUFFERS = 32      # ringline.files.fs.AUTO_REGISTERED_BUFFERS
_MAX_FIXED_FILES = 1 << 20
_CAP_IPC_LOCK = 14
_MIN_KERNEL = "6.1"
_WAIT = 1.0                        # seconds any single probe may wait

_PARAMS = struct.Struct("=10I8IQ8IQ")   # struct io_uring_params, 120 bytes
_SQE = struct.Struct("=BBHiQQIIQHHIQQ")  # struct io_uring_sqe, 64 bytes
_CQE = struct.Struct("=QiI")             # struct io_uring_cqe, 16 bytes
_BUF_REG = struct.Struct("=QIHH3Q")      # struct io_uring_buf_reg, 40 bytes
_BUF = struct.Struct("=QIHH")            # struct io_uring_buf, 16 bytes
_RSRC_REGISTER = struct.Struct("=IIQQQ")  # struct io_uring_rsrc_register, 32
_RSRC_UPDATE = struct.Struct("=IIQ")     # struct io_uring_rsrc_update, 16
_GETEVENTS_ARG = struct.Struct("=QIIQ")  # struct io_uring_getevents_arg, 24
_TIMESPEC = struct.Struct("=qq")         # struct __kernel_timespec

# ---- raw syscalls through ctypes ----

_LINUX = sys.platform.startswith("linux")
_MAP_FAILED = ctypes.c_void_p(-1).value


@functools.cache
def _libc() -> ctypes.CDLL:
    # Loaded on first use, so that the module imports on any platform.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.munmap.restype = ctypes.c_int
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    return libc


def _syscall(nr: int, *args: int) -> int:
    """Call syscall ``nr``; return its result, or ``-errno`` on failure."""
    ctypes.set_errno(0)
    ret = int(_libc().syscall(ctypes.c_long(nr), *(ctypes.c_long(a) for a in args)))
    return -ctypes.get_errno() if ret < 0 else ret


def _mmap(length: int, prot: int, flags: int, fd: int = -1, offset: int = 0) -> int:
    addr = _libc().mmap(None, length, prot, flags, fd, offset)
    if addr is None or addr == _MAP_FAILED:
        err = ctypes.get_errno()
        raise OSError(err, f"mmap: {os.strerror(err)}")
    return int(addr)


def _anon(length: int) -> int:
    """Page-aligned private memory (buffer rings need page alignment)."""
    return _mmap(length, mmap.PROT_READ | mmap.PROT_WRITE,
                 mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)


def _u32(addr: int) -> ctypes.c_uint32:
    return ctypes.c_uint32.from_address(addr)


def _errname(err: int) -> str:
    return _errno.errorcode.get(abs(err), str(abs(err)))


class _Ring:
    """A minimal io_uring: setup, the three mappings, one SQE at a time.

    Python cannot issue memory barriers, and with ringline's flags it need
    not: nothing polls the SQ (no SQPOLL ring submits here), so the kernel
    reads our SQEs and SQ tail inside our own ``io_uring_enter``; and with
    DEFER_TASKRUN completions are posted by our own task inside
    ``io_uring_enter`` too. Only the flags-0 ring of a pre-6.1 kernel may
    post CQEs from another CPU; that is x86-safe (TSO) and, elsewhere, a
    theoretical stale read in an informational probe.
    """

    def __init__(self, entries: int = 8, flags: int = 0, sq_thread_idle: int = 0) -> None:
        params = ctypes.create_string_buffer(_PARAMS.size)
        fields = [0] * 28
        fields[2], fields[4] = flags, sq_thread_idle
        _PARAMS.pack_into(params, 0, *fields)
        fd = _syscall(NR_IO_URING_SETUP, entries, ctypes.addressof(params))
        if fd < 0:
            raise OSError(-fd, f"io_uring_setup: {os.strerror(-fd)}")
        self.fd = fd
        self._maps: list[tuple[int, int]] = []
        p = _PARAMS.unpack_from(params)
        self.sq_entries, self.cq_entries, self.flags = p[0], p[1], p[2]
        self.features = p[5]
        sq_head, sq_tail, sq_mask, _, _, _, sq_array = p[10:17]
        cq_head, cq_tail, cq_mask, _, _, cq_cqes = p[19:25]
        try:
            rw, shared = mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED
            sq_len = sq_array + self.sq_entries * 4
            cq_len = cq_cqes + self.cq_entries * _CQE.size
            if self.features & FEAT_SINGLE_MMAP:
                sq_len = cq_len = max(sq_len, cq_len)
            sq = self._map(sq_len, rw, shared, OFF_SQ_RING)
            cq = (sq if self.features & FEAT_SINGLE_MMAP
                  else self._map(cq_len, rw, shared, OFF_CQ_RING))
            self._sqes = self._map(self.sq_entries * _SQE.size, rw, shared, OFF_SQES)
        except BaseException:
            self.close()
            raise
        self._sq_tail = _u32(sq + sq_tail)
        self._sq_mask = _u32(sq + sq_mask).value
        self._sq_array = sq + sq_array
        self._cq_head = _u32(cq + cq_head)
        self._cq_tail = _u32(cq + cq_tail)
        self._cq_mask = _u32(cq + cq_mask).value
        self._cqes = cq + cq_cqes
        self._seen: list[tuple[int, int, int]] = []

    def _map(self, length: int, prot: int, flags: int, offset: int) -> int:
        addr = _mmap(length, prot, flags, self.fd, offset)
        self._maps.append((addr, length))
        return addr

    def close(self) -> None:
        for addr, length in self._maps:
            _libc().munmap(addr, length)
        self._maps = []
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> _Ring:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def register(self, opcode: int, arg: int, nr_args: int) -> int:
        """io_uring_register; the result or ``-errno``."""
        return _syscall(NR_IO_URING_REGISTER, self.fd, opcode, arg, nr_args)

    def submit(self, opcode: int, *, fd: int = -1, flags: int = 0, ioprio: int = 0,
               off: int = 0, addr: int = 0, length: int = 0, op_flags: int = 0,
               user_data: int = 0, buf_group: int = 0, enter_fd: int | None = None,
               enter_flags: int = 0) -> int:
        """Queue one SQE and submit it; the io_uring_enter result."""
        tail = self._sq_tail.value
        index = tail & self._sq_mask
        sqe = (ctypes.c_char * _SQE.size).from_address(self._sqes + index * _SQE.size)
        _SQE.pack_into(sqe, 0, opcode, flags, ioprio, fd, off, addr, length, op_flags,
                       user_data, buf_group, 0, 0, 0, 0)
        _u32(self._sq_array + index * 4).value = index
        self._sq_tail.value = (tail + 1) & 0xFFFFFFFF
        ring = self.fd if enter_fd is None else enter_fd
        return _syscall(NR_IO_URING_ENTER, ring, 1, 0, enter_flags)

    def wait(self, user_data: int, timeout: float = _WAIT) -> tuple[int, int] | None:
        """The next CQE for ``user_data`` as ``(res, flags)``; None on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            head, tail = self._cq_head.value, self._cq_tail.value
            while head != tail:
                addr = self._cqes + (head & self._cq_mask) * _CQE.size
                self._seen.append(_CQE.unpack(ctypes.string_at(addr, _CQE.size)))
                head = (head + 1) & 0xFFFFFFFF
            self._cq_head.value = head
            for i, (ud, res, cflags) in enumerate(self._seen):
                if ud == user_data:
                    del self._seen[i]
                    return res, cflags
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ts = ctypes.create_string_buffer(
                _TIMESPEC.pack(int(left), int(left % 1 * 1e9)), _TIMESPEC.size)
            arg = ctypes.create_string_buffer(
                _GETEVENTS_ARG.pack(0, 0, 0, ctypes.addressof(ts)), _GETEVENTS_ARG.size)
            ret = _syscall(NR_IO_URING_ENTER, self.fd, 0, 1,
                           ENTER_GETEVENTS | ENTER_EXT_ARG, ctypes.addressof(arg),
                           _GETEVENTS_ARG.size)
            if ret < 0 and -ret not in (_errno.ETIME, _errno.EINTR, _errno.EAGAIN,
                                         _errno.EBUSY):
                raise OSError(-ret, f"io_uring_enter: {os.strerror(-ret)}")

    def probe(self) -> frozenset[int]:
        """The opcodes IORING_REGISTER_PROBE reports as supported."""
        buf = ctypes.create_string_buffer(16 + 256 * 8)
        ret = self.register(REGISTER_PROBE, ctypes.addressof(buf), 256)
        if ret < 0:
            raise OSError(-ret, f"IORING_REGISTER_PROBE: {os.strerror(-ret)}")
        ops_len = buf.raw[1]
        ops = set()
        for i in range(ops_len):
            op, _, op_flags = struct.unpack_from("=BBH", buf, 16 + i * 8)
            if op_flags & IO_URING_OP_SUPPORTED:
                ops.add(op)
        return frozenset(ops)


# ---- helpers ----


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _status_fields() -> dict[str, str]:
    fields: dict[str, str] = {}
    with contextlib.suppress(OSError):
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
    return fields


def _int_or_none(text: str | None, base: int = 10) -> int | None:
    try:
        return int(text, base) if text is not None else None
    except ValueError:
        return None


def _rlimit(name: str) -> tuple[int | None, int | None] | None:
    """(soft, hard) of ``resource.<name>``, None meaning unlimited; None
    altogether where the platform has no such limit (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    soft, hard = resource.getrlimit(getattr(resource, name))
    return tuple(None if v == resource.RLIM_INFINITY else v  # type: ignore[return-value]
                 for v in (soft, hard))


def _feature(supported: bool | None, detail: str, **extra: Any) -> dict[str, Any]:
    return {"supported": supported, "detail": detail, **extra}


def _loopback_pair() -> tuple[socket.socket, socket.socket, socket.socket]:
    """(listener, client, server): a connected TCP pair over 127.0.0.1."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        client = socket.create_connection(listener.getsockname(), timeout=_WAIT)
        listener.settimeout(_WAIT)
        server, _ = listener.accept()
    except BaseException:
        listener.close()
        raise
    return listener, client, server


@contextlib.contextmanager
def _buffer_ring(ring: _Ring, bgid: int, entries: int, size: int,
                 flags: int = 0) -> Iterator[int]:
    """Register a provided-buffer ring filled with ``entries`` buffers; yields
    0 or ``-errno`` of the registration. Unregistered and unmapped after."""
    ring_len = max(entries * _BUF.size, mmap.PAGESIZE)
    ring_mem = _anon(ring_len)
    try:
        data = _anon(entries * size)
    except BaseException:
        _libc().munmap(ring_mem, ring_len)
        raise
    registered = False
    try:
        for bid in range(entries):
            _BUF.pack_into((ctypes.c_char * _BUF.size).from_address(ring_mem + bid * _BUF.size),
                           0, data + bid * size, size, bid, 0)
        # The tail is the u16 at offset 14 of entry 0 (the 'resv' slot).
        ctypes.c_uint16.from_address(ring_mem + 14).value = entries
        reg = ctypes.create_string_buffer(
            _BUF_REG.pack(ring_mem, entries, bgid, flags, 0, 0, 0), _BUF_REG.size)
        ret = ring.register(REGISTER_PBUF_RING, ctypes.addressof(reg), 1)
        registered = ret >= 0
        yield ret
    finally:
        if registered:
            reg = ctypes.create_string_buffer(_BUF_REG.pack(0, 0, bgid, 0, 0, 0, 0),
                                              _BUF_REG.size)
            ring.register(UNREGISTER_PBUF_RING, ctypes.addressof(reg), 1)
        # Unregistered first: a receive still armed can no longer pick a
        # buffer from the memory unmapped here (it would get ENOBUFS).
        _libc().munmap(data, entries * size)
        _libc().munmap(ring_mem, ring_len)


# ---- probes ----


def _probe_multishot_accept(flags: int) -> dict[str, Any]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        client.settimeout(_WAIT)
        client.connect(listener.getsockname())   # sits in the backlog
        with _Ring(8, flags) as ring:
            ring.submit(OPCODES["ACCEPT"], fd=listener.fileno(), ioprio=ACCEPT_MULTISHOT,
                        op_flags=os.O_CLOEXEC, user_data=1)
            cqe = ring.wait(1)
            if cqe is None:
                return _feature(None, "no completion within 1 s")
            res, cflags = cqe
            if res >= 0:
                os.close(res)
                if cflags & CQE_F_MORE:
                    return _feature(True, "IORING_ACCEPT_MULTISHOT")
                return _feature(False, "accepted, but the request did not stay armed")
            return _feature(False, f"refused ({_errname(res)}); needs Linux 5.19")
    finally:
        client.close()
        listener.close()


def _probe_recv(flags: int) -> dict[str, dict[str, Any]]:
    """Provided buffer rings, multishot recv, incremental consumption."""
    out: dict[str, dict[str, Any]] = {}
    a, b = socket.socketpair()
    try:
        with _Ring(8, flags) as ring:
            with _buffer_ring(ring, 0, 8, 256) as ret:
                if ret < 0:
                    out["provided_buffer_ring"] = _feature(
                        False, f"IORING_REGISTER_PBUF_RING refused ({_errname(ret)}); "
                               f"needs Linux 5.19")
                    out["multishot_recv"] = _feature(
                        None, "not probed: needs a provided buffer ring")
                else:
                    out["provided_buffer_ring"] = _feature(True, "IORING_REGISTER_PBUF_RING")
                    b.sendall(b"ringline")
                    ring.submit(OPCODES["RECV"], fd=a.fileno(), flags=IOSQE_BUFFER_SELECT,
                                ioprio=RECV_MULTISHOT, user_data=2, buf_group=0)
                    cqe = ring.wait(2)
                    if cqe is None:
                        out["multishot_recv"] = _feature(None, "no completion within 1 s")
                    elif cqe[0] == 8 and cqe[1] & CQE_F_BUFFER and cqe[1] & CQE_F_MORE:
                        out["multishot_recv"] = _feature(True, "IORING_RECV_MULTISHOT")
                    elif cqe[0] < 0:
                        out["multishot_recv"] = _feature(
                            False, f"refused ({_errname(cqe[0])}); needs Linux 6.0")
                    else:
                        out["multishot_recv"] = _feature(
                            False, "received, but the request did not stay armed")
        # A fresh ring and socket pair: the multishot recv above stays armed
        # on ``a`` until its ring closes.
        with _Ring(8, flags) as ring:
            with _buffer_ring(ring, 1, 1, 4096, IOU_PBUF_RING_INC) as ret:
                if ret < 0:
                    out["pbuf_ring_incremental"] = _feature(
                        False, f"IOU_PBUF_RING_INC refused ({_errname(ret)}); "
                               f"needs Linux 6.12")
                else:
                    c, d = socket.socketpair()
                    try:
                        d.sendall(b"ringline")
                        ring.submit(OPCODES["RECV"], fd=c.fileno(), flags=IOSQE_BUFFER_SELECT,
                                    user_data=3, buf_group=1)
                        cqe = ring.wait(3)
                    finally:
                        c.close()
                        d.close()
                    if cqe is not None and cqe[0] == 8 and cqe[1] & CQE_F_BUF_MORE:
                        out["pbuf_ring_incremental"] = _feature(
                            True, "IOU_PBUF_RING_INC: a 4 KiB buffer stays in use "
                                  "after an 8-byte receive")
                    else:
                        out["pbuf_ring_incremental"] = _feature(
                            False, f"registered, but a receive did not keep its buffer "
                                   f"(completion {cqe})")
    finally:
        a.close()
        b.close()
    return out


def _probe_send_zc(flags: int, ops: frozenset[int]) -> dict[str, Any]:
    if OPCODES["SEND_ZC"] not in ops:
        return _feature(False, "the opcode probe lacks SEND_ZC; needs Linux 6.0")
    listener, client, server = _loopback_pair()
    payload = ctypes.create_string_buffer(b"x" * 64, 64)
    try:
        with _Ring(8, flags) as ring:
            ring.submit(OPCODES["SEND_ZC"], fd=client.fileno(),
                        addr=ctypes.addressof(payload), length=64, user_data=4)
            cqe = ring.wait(4)
            if cqe is None:
                return _feature(None, "no completion within 1 s")
            if cqe[0] != 64:
                return _feature(False, f"a zero-copy send failed ({_errname(cqe[0])})")
            # The buffer is the kernel's until the notification arrives.
            notif = ring.wait(4) if cqe[1] & CQE_F_MORE else None
            if notif is not None and notif[1] & CQE_F_NOTIF:
                return _feature(True, "IORING_OP_SEND_ZC over TCP, with its notification")
            return _feature(True, "IORING_OP_SEND_ZC over TCP (no notification seen)")
    finally:
        server.close()
        client.close()
        listener.close()


def _probe_registered_ring(flags: int) -> dict[str, Any]:
    with _Ring(8, flags) as ring:
        upd = ctypes.create_string_buffer(_RSRC_UPDATE.pack(0xFFFFFFFF, 0, ring.fd),
                                          _RSRC_UPDATE.size)
        ret = ring.register(REGISTER_RING_FDS, ctypes.addressof(upd), 1)
        if ret != 1:
            return _feature(False, f"IORING_REGISTER_RING_FDS refused ({_errname(ret)}); "
                                   f"needs Linux 5.18")
        index = _RSRC_UPDATE.unpack(upd.raw)[0]
        try:
            ret = ring.submit(OPCODES["NOP"], user_data=5, enter_fd=index,
                              enter_flags=ENTER_REGISTERED_RING)
            cqe = ring.wait(5)
        finally:
            # Registered ring fds live in the task, not the ring: undo it.
            upd = ctypes.create_string_buffer(_RSRC_UPDATE.pack(index, 0, 0),
                                              _RSRC_UPDATE.size)
            ring.register(UNREGISTER_RING_FDS, ctypes.addressof(upd), 1)
        if ret == 1 and cqe is not None and cqe[0] == 0:
            return _feature(True, "IORING_REGISTER_RING_FDS; a NOP entered by index")
        return _feature(False, f"registered, but entering by index failed ({ret}, {cqe})")


def _probe_sqpoll() -> dict[str, Any]:
    try:
        with _Ring(8, SETUP_SQPOLL, sq_thread_idle=10):
            pass
    except OSError as exc:
        if exc.errno == _errno.EPERM:
            return _feature(False, "IORING_SETUP_SQPOLL refused (EPERM): before Linux "
                                   "5.11 it needs CAP_SYS_ADMIN, or a policy forbids it")
        return _feature(False, f"IORING_SETUP_SQPOLL refused ({_errname(exc.errno or 0)})")
    return _feature(True, "IORING_SETUP_SQPOLL allowed: Config.sqpoll=True can be used")


def _probe_fixed_files(flags: int, ops: frozenset[int]) -> dict[str, Any]:
    with _Ring(8, flags) as ring:
        reg = ctypes.create_string_buffer(_RSRC_REGISTER.pack(64, RSRC_REGISTER_SPARSE, 0, 0, 0),
                                          _RSRC_REGISTER.size)
        ret = ring.register(REGISTER_FILES2, ctypes.addressof(reg), _RSRC_REGISTER.size)
        if ret < 0:
            return _feature(False, f"a sparse fixed-file table was refused ({_errname(ret)}); "
                                   f"needs Linux 5.19")
        ring.register(UNREGISTER_FILES, 0, 0)
    direct = [op for op in ("SOCKET", "FIXED_FD_INSTALL") if OPCODES[op] not in ops]
    if direct:
        return _feature(True, f"sparse tables work; connections use plain fds because "
                              f"the kernel lacks {', '.join(direct)}")
    return _feature(True, "sparse tables work; connections use fixed descriptors")


def _probe_nvme(ops: frozenset[int] | None) -> dict[str, Any]:
    # /dev/ngXnY: the generic char device of an NVMe namespace (Linux 5.13+).
    devices = sorted(p for p in glob.glob("/dev/ng*") if not os.path.isdir(p))
    if not devices:
        return _feature(False, "no /dev/ng* (NVMe generic character devices)",
                        devices=[])
    usable = [p for p in devices if os.access(p, os.R_OK | os.W_OK)]
    cmd = ops is not None and OPCODES["URING_CMD"] in ops
    detail = (f"{len(devices)} found, {len(usable)} readable and writable by this user; "
              f"URING_CMD {'supported' if cmd else 'not supported'}")
    return _feature(bool(usable) and cmd, detail, devices=devices)


def _mount_of(path: str) -> tuple[str, str] | None:
    """(mount point, filesystem type) holding ``path``, from mountinfo."""
    best: tuple[str, str] | None = None
    with contextlib.suppress(OSError):
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) < 5 or not right:
                    continue
                point = fields[4].replace("\\040", " ")
                inside = path == point or path.startswith(point.rstrip("/") + "/")
                if inside and (best is None or len(point) >= len(best[0])):
                    best = (point, right.split()[0])
    return best


def _probe_o_direct() -> dict[str, Any]:
    cwd = os.getcwd()
    o_direct = getattr(os, "O_DIRECT", 0)
    if not o_direct:
        return _feature(False, f"no O_DIRECT on {sys.platform}", directory=cwd)
    mount = _mount_of(os.path.realpath(cwd))
    where = f" ({mount[1]} on {mount[0]})" if mount else ""
    path = os.path.join(cwd, f".ringline-diagnose-{os.getpid()}-{secrets.token_hex(4)}")
    buf = mmap.mmap(-1, 4096)     # page-aligned, as O_DIRECT wants
    try:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | o_direct, 0o600)
        except OSError as exc:
            if exc.errno == _errno.EINVAL:
                return _feature(False, f"the filesystem refuses O_DIRECT{where}",
                                directory=cwd)
            return _feature(None, f"could not create a test file here: "
                                  f"{_errname(exc.errno or 0)}{where}", directory=cwd)
        try:
            os.write(fd, buf)
        except OSError as exc:
            return _feature(False, f"an aligned 4 KiB O_DIRECT write failed: "
                                   f"{_errname(exc.errno or 0)}{where}", directory=cwd)
        finally:
            os.close(fd)
        return _feature(True, f"an aligned 4 KiB O_DIRECT write worked{where}",
                        directory=cwd)
    finally:
        buf.close()
        # Also after EINVAL: the kernel creates the file before it checks
        # O_DIRECT. The random name makes the file ours.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _guard(probe: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one probe; a probe that breaks reports itself, not the whole run."""
    try:
        return probe()
    except Exception as exc:
        return _feature(None, f"probe failed: {type(exc).__name__}: {exc}")


# ---- the refusal, its cause and the fix ----


def _fix(cause: str, sysctl: int | None, group: int | None, under_filter: bool) -> str:
    if cause == "disabled":
        if sysctl == 1 and group is not None and group >= 0:
            return (f"Add this user to group {group} (kernel.io_uring_group), or as root run "
                    f"`sysctl -w kernel.io_uring_disabled=0`.")
        if sysctl == 1:
            return ("As root set `kernel.io_uring_group=<gid>` and add this user to that "
                    "group, or run `sysctl -w kernel.io_uring_disabled=0`.")
        return "As root run `sysctl -w kernel.io_uring_disabled=0` (persist it in sysctl.d)."
    if cause == "permission_denied":
        return ("Allow io_uring_setup, io_uring_enter and io_uring_register in the seccomp "
                "profile or LSM policy (Docker/Podman: `--security-opt seccomp=<profile>`; "
                "Kubernetes: securityContext.seccompProfile).")
    if cause == "not_supported" and under_filter and _LINUX:
        return ("If the seccomp filter answers ENOSYS, allow io_uring_setup, io_uring_enter "
                "and io_uring_register in it; otherwise run on Linux 6.1+ built with "
                "CONFIG_IO_URING.")
    if cause == "not_supported":
        return (f"Run on Linux {_MIN_KERNEL}+ built with CONFIG_IO_URING, outside sandboxes "
                f"that hide io_uring (gVisor); meanwhile ringline uses the portable backend.")
    if cause == "resource_limit":
        return ("Raise RLIMIT_MEMLOCK (`ulimit -l unlimited`, systemd LimitMEMLOCK=infinity, "
                "Docker `--ulimit memlock=-1`) or free memory.")
    if cause in ("kernel_too_old", "missing_opcode"):
        return f"Upgrade to Linux {_MIN_KERNEL} or newer."
    return "See the message above; ringline uses the portable backend meanwhile."


def _cause_detail(err: int, seccomp_mode: int | None, filters: int | None,
                  sysctl: int | None) -> str:
    under_filter = seccomp_mode == 2
    count = "a seccomp filter" if filters in (None, 1) else f"{filters} seccomp filters"
    filt = f"this process runs under {count} (/proc/self/status Seccomp: 2)"
    if err == _errno.EPERM:
        if sysctl and sysctl >= 1:
            return f"kernel.io_uring_disabled={sysctl}"
        if under_filter:
            return f"kernel.io_uring_disabled allows io_uring and {filt}: the likely cause"
        return ("kernel.io_uring_disabled allows io_uring and no seccomp filter is "
                "installed: an LSM policy (SELinux, AppArmor) denies it")
    if err == _errno.ENOSYS:
        if not _LINUX:
            return f"io_uring is Linux-only (this is {sys.platform})"
        if under_filter:
            return f"{filt}, which may answer ENOSYS for io_uring_setup"
        return ("the kernel has no io_uring_setup: built without CONFIG_IO_URING, older "
                "than 5.1, or a sandbox such as gVisor")
    if err == _errno.EINVAL:
        return f"the kernel refused the setup flags ringline uses ({_flag_names(DEFAULT_SETUP_FLAGS)})"
    if err == _errno.ENOMEM:
        return "no memory for the rings"
    return f"io_uring_setup failed with {_errname(err)}"


def _flag_names(flags: int) -> str:
    return "|".join(n for bit, n in sorted(_SETUP_FLAG_NAMES.items()) if flags & bit) or "none"


def _open_probe_ring() -> tuple[int | None, str, int, int, frozenset[int] | None]:
    """Open a ring with ringline's setup flags (then with none, to tell an old
    kernel from a refusal), read its opcodes and complete a NOP through it.

    Returns (errno of the first failure or None, the syscall that failed,
    the flags that worked or -1, the ring's features, its opcodes).
    """
    if not _LINUX:
        return _errno.ENOSYS, "io_uring_setup", -1, 0, None
    first: tuple[int, str] | None = None
    for flags in (DEFAULT_SETUP_FLAGS, 0):
        call = "io_uring_setup"
        try:
            with _Ring(8, flags) as ring:
                call = "io_uring_register"
                ops = ring.probe()
                # A filter may deny io_uring_enter alone: the loop needs it too.
                call = "io_uring_enter"
                ret = ring.submit(OPCODES["NOP"], user_data=1)
                if ret < 0:
                    raise OSError(-ret, os.strerror(-ret))
                if ring.wait(1) is None:
                    raise OSError(_errno.ETIME, "no completion for a NOP within 1 s")
                err, failed = first if first is not None else (None, "")
                return err, failed, flags, ring.features, ops
        except OSError as exc:
            if first is None:
                first = (exc.errno or _errno.EIO, call)
            if exc.errno != _errno.EINVAL or call != "io_uring_setup":
                break     # only a refused setup flag is worth a second try
    assert first is not None
    return first[0], first[1], -1, 0, None


def _io_uring_section() -> tuple[dict[str, Any], int, frozenset[int] | None]:
    sysctl = _read_int("/proc/sys/kernel/io_uring_disabled")
    group = _read_int("/proc/sys/kernel/io_uring_group")
    status = _status_fields()
    seccomp_mode = _int_or_none(status.get("Seccomp"))
    seccomp_filters = _int_or_none(status.get("Seccomp_filters"))
    err, call, flags, features, ops = _open_probe_ring()
    refusal: IoUringUnavailable | None = None
    detail: str | None = None
    missing: list[str] = []
    if err is not None:
        refusal = classify_setup_error(err, disabled_sysctl=sysctl or 0)
        detail = _cause_detail(err, seccomp_mode, seccomp_filters, sysctl)
        if call != "io_uring_setup":
            detail = f"io_uring_setup works but {call} failed with {_errname(err)}; {detail}"
    elif not (features & FEAT_NODROP and features & FEAT_EXT_ARG):
        refusal = KernelTooOld("io_uring lacks IORING_FEAT_EXT_ARG/NODROP",
                               feature="EXT_ARG/NODROP")
        detail = "the ring opened without IORING_FEAT_EXT_ARG or NODROP"
    if ops is not None:
        missing = [n for n in REQUIRED_OPCODES if OPCODES[n] not in ops]
        if missing and refusal is None:
            refusal = MissingOpcode(missing, release=os.uname().release)
            detail = "IORING_REGISTER_PROBE lacks opcodes the loop needs"
    section: dict[str, Any] = {
        "usable": refusal is None,
        "errno": refusal.errno if refusal is not None else None,
        "errno_name": _errname(refusal.errno) if refusal is not None and refusal.errno else None,
        "cause": refusal.cause if refusal is not None else None,
        "detail": detail,
        "message": refusal.strerror if refusal is not None else None,
        "fix": (_fix(refusal.cause, sysctl, group, seccomp_mode == 2)
                if refusal is not None else None),
        "sysctl_io_uring_disabled": sysctl,
        "sysctl_io_uring_group": group,
        "seccomp_mode": seccomp_mode,
        "seccomp_filters": seccomp_filters,
        "setup_flags": [n for bit, n in sorted(_SETUP_FLAG_NAMES.items())
                        if flags >= 0 and flags & bit],
        "ring_features": [n for i, n in enumerate(_FEATURE_NAMES) if features >> i & 1],
        "opcodes_supported": len(ops) if ops is not None else None,
        "missing_opcodes": missing,
        "missing_optional_opcodes": ([n for n in OPTIONAL_OPCODES if OPCODES[n] not in ops]
                                     if ops is not None else []),
    }
    return section, flags, ops


def _features_section(flags: int, features: int,
                      ops: frozenset[int] | None) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    names = ("multishot_accept", "multishot_recv", "provided_buffer_ring",
             "pbuf_ring_incremental", "send_zc", "recvsend_bundle", "registered_ring_fd",
             "sqpoll", "fixed_files")
    if ops is None:
        for name in names:
            out[name] = _feature(None, "not probed: io_uring is refused")
    else:
        out["multishot_accept"] = _guard(lambda: _probe_multishot_accept(flags))
        try:
            out.update(_probe_recv(flags))
        except Exception as exc:
            for name in ("multishot_recv", "provided_buffer_ring", "pbuf_ring_incremental"):
                out.setdefault(name, _feature(None, f"probe failed: {type(exc).__name__}: "
                                                    f"{exc}"))
        out["send_zc"] = _guard(lambda: _probe_send_zc(flags, ops))
        out["recvsend_bundle"] = (
            _feature(True, "IORING_FEAT_RECVSEND_BUNDLE") if features & FEAT_RECVSEND_BUNDLE
            else _feature(False, "no IORING_FEAT_RECVSEND_BUNDLE; needs Linux 6.10"))
        out["registered_ring_fd"] = _guard(lambda: _probe_registered_ring(flags))
        out["sqpoll"] = _guard(_probe_sqpoll)
        out["fixed_files"] = _guard(lambda: _probe_fixed_files(flags, ops))
        out = {name: out[name] for name in names}
    out["nvme_char_devices"] = _probe_nvme(ops)
    out["o_direct"] = _guard(_probe_o_direct)
    return out


def _mib(n: int) -> str:
    if n >= 1 << 20:
        return f"{n / (1 << 20):g} MiB"
    return f"{n / 1024:g} KiB" if n >= 1024 else f"{n} B"


def _limits_section(caps: int) -> dict[str, Any]:
    memlock, nofile = _rlimit("RLIMIT_MEMLOCK"), _rlimit("RLIMIT_NOFILE")
    if memlock is None or nofile is None:
        none = {"soft": None, "hard": None, "allows": "no such limit on this platform"}
        return {"memlock": {**none, "registered_buffers": None},
                "nofile": {**none, "connections_per_worker": None}}
    msoft, mhard = memlock
    if caps >> _CAP_IPC_LOCK & 1:
        bufs: int | None = None
        mem_allows = ("any number of registered O_DIRECT buffers: this process has "
                      "CAP_IPC_LOCK, so they are not charged to the limit")
    elif msoft is None:
        bufs = None
        mem_allows = "unlimited: any number of registered O_DIRECT buffers"
    else:
        # io_uring charges registered buffers to the user (all its
        # processes together), checked against the caller's RLIMIT_MEMLOCK.
        bufs = msoft // _REGISTERED_BUFFER_SIZE
        if bufs == 0:
            mem_allows = ("not even one 1 MiB registered O_DIRECT buffer: ringline.files.fs's "
                          "direct I/O raises IoUringResourceError; raise it (`ulimit -l`, "
                          "systemd LimitMEMLOCK=, Docker --ulimit memlock=)")
        else:
            got = _AUTO_REGISTERED_BUFFERS
            while got > bufs:
                got //= 2
            mem_allows = (f"{bufs} registered 1 MiB O_DIRECT buffers for this user in "
                          f"total; a loop doing direct I/O registers "
                          f"{_AUTO_REGISTERED_BUFFERS}, or halves that until they fit "
                          f"({got} here)")
    nsoft, nhard = nofile
    # The kernel sizes a fixed-file table (max_connections + file_slots, at
    # most 2**20) against the soft limit; ringline raises that limit (up to
    # the hard one) only with Config.raise_fd_limit=True.
    table = _MAX_FIXED_FILES if nsoft is None else min(nsoft, _MAX_FIXED_FILES)
    conns = max(0, table - _DEFAULT_FILE_SLOTS)
    default_fits = conns >= _DEFAULT_MAX_CONNECTIONS
    nofile_allows = (f"up to {conns} connections per worker (fixed-file table of "
                     f"{table} minus {_DEFAULT_FILE_SLOTS} file slots); the default "
                     f"max_connections={_DEFAULT_MAX_CONNECTIONS} "
                     + ("fits" if default_fits else
                        "does not (native connections then use plain fds): lower "
                        "Config.max_connections, raise the soft limit (`ulimit -n`, "
                        "systemd LimitNOFILE=, Docker --ulimit nofile=) or let ringline "
                        "raise it up to the hard limit with Config.raise_fd_limit=True"))
    return {
        "memlock": {"soft": msoft, "hard": mhard, "registered_buffers": bufs,
                    "allows": mem_allows},
        "nofile": {"soft": nsoft, "hard": nhard, "connections_per_worker": conns,
                   "allows": nofile_allows},
    }


def _cpu_quota(proc_cgroup: str = "/proc/self/cgroup",
               root: str = "/sys/fs/cgroup") -> float | None:
    """CPUs this process's CPU quota pays for (cgroup v2 ``cpu.max`` or v1
    ``cpu.cfs_quota_us``/``cpu.cfs_period_us``), or None without a quota."""
    try:
        with open(proc_cgroup, encoding="utf-8") as f:
            entries = [ln.rstrip("\n").split(":", 2) for ln in f]
    except OSError:
        return None

    def read(directory: str, rel: str, name: str) -> str | None:
        # Inside a cgroup namespace the listed path may not exist under the
        # mount: then the mount's root is this process's cgroup.
        for d in (os.path.join(directory, rel.lstrip("/")), directory):
            with contextlib.suppress(OSError):
                with open(os.path.join(d, name), encoding="ascii") as f:
                    return f.read().strip()
        return None

    for entry in entries:
        if len(entry) != 3:
            continue
        hid, controllers, rel = entry
        if hid == "0" and controllers == "":
            text = read(root, rel, "cpu.max")
            if text is None:
                text = read(os.path.join(root, "unified"), rel, "cpu.max")
            parts = text.split() if text else []
            if len(parts) == 2 and parts[0] != "max":
                with contextlib.suppress(ValueError, ZeroDivisionError):
                    return int(parts[0]) / int(parts[1])
        elif "cpu" in controllers.split(","):
            directory = os.path.join(root, controllers)
            if not os.path.isdir(directory):
                directory = os.path.join(root, "cpu")
            quota = read(directory, rel, "cpu.cfs_quota_us")
            period = read(directory, rel, "cpu.cfs_period_us")
            with contextlib.suppress(TypeError, ValueError, ZeroDivisionError):
                if int(quota) > 0:  # type: ignore[arg-type]
                    return int(quota) / int(period)  # type: ignore[arg-type]
    return None


def _cpu_section() -> dict[str, Any]:
    try:
        count = len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = _cpu_quota()
    workers = count if quota is None else max(1, min(count, math.ceil(quota)))
    return {"count": count, "quota": quota, "suggested_workers": workers}


def diagnose() -> dict[str, Any]:
    """Probe this machine and process; see the module docstring for the keys.

    Nothing is raised for a refused io_uring: the refusal is the answer. The
    probes take well under a second when the kernel answers (each wait is
    bounded by one second).
    """
    uname = os.uname()
    io, flags, ops = _io_uring_section()
    features = 0
    for i, name in enumerate(_FEATURE_NAMES):
        if name in io["ring_features"]:
            features |= 1 << i
    caps = _int_or_none(_status_fields().get("CapEff"), 16) or 0
    missing = _extension_missing()
    return {
        "kernel": {"release": uname.release, "machine": uname.machine},
        "python": platform.python_version(),
        "io_uring": io,
        "features": _features_section(flags, features, ops),
        "limits": _limits_section(caps),
        "cpu": _cpu_section(),
        "backend": {"auto": "uring" if io["usable"] and missing is None else "portable",
                    "env": os.environ.get("RINGLINE_BACKEND"),
                    "extension": missing is None, "extension_missing": missing},
        "exit_status": 0 if io["usable"] else 1,
    }


def _extension_missing() -> str | None:
    """None when ringline's compiled core is installed, else why not (a
    pure-Python install: RINGLINE_PURE=1, or built where it cannot be)."""
    import importlib.util
    try:
        spec = importlib.util.find_spec("ringline._core.loop")
    except ImportError as exc:
        return f"ringline._core.loop cannot be imported ({exc})"
    if spec is None:
        return "a pure-Python install: ringline._core.loop was not built"
    return None


_LABELS = {
    "multishot_accept": "multishot accept",
    "multishot_recv": "multishot recv",
    "provided_buffer_ring": "provided buffer rings",
    "pbuf_ring_incremental": "incremental buffer consumption",
    "send_zc": "zero-copy send (SEND_ZC)",
    "recvsend_bundle": "recv/send bundles",
    "registered_ring_fd": "registered ring fd",
    "sqpoll": "SQPOLL",
    "fixed_files": "fixed files",
    "nvme_char_devices": "NVMe char devices",
    "o_direct": "O_DIRECT in the cwd",
}


def _add(lines: list[str], row: str, width: int = 100) -> None:
    """Append ``row``, wrapped under its text column ("  label   text...")."""
    head = len(row) - len(row[2:].lstrip()) if row.startswith("  ") else 0
    col = row.find("  ", head) if head else -1
    while col >= 0 and col < len(row) and row[col] == " ":
        col += 1
    indent = " " * (col if 0 < col < width // 2 else 4)
    lines.extend(textwrap.wrap(row, width, subsequent_indent=indent,
                               break_on_hyphens=False) or [row])


def _limit_text(v: int | None) -> str:
    return "unlimited" if v is None else str(v)


def _bytes_text(v: int | None) -> str:
    return "unlimited" if v is None else _mib(v)


def format_report(d: dict[str, Any]) -> str:
    """The human-readable form of a :func:`diagnose` result."""
    io = d["io_uring"]
    lines = ["ringline diagnosis", ""]
    _add(lines, f"  kernel          {d['kernel']['release']} ({d['kernel']['machine']}), "
                f"Python {d['python']}")
    sysctl = io["sysctl_io_uring_disabled"]
    _add(lines, "  sysctl          " + (
        "kernel.io_uring_disabled absent (before Linux 6.6: allowed)" if sysctl is None else
        f"kernel.io_uring_disabled={sysctl}, "
        f"kernel.io_uring_group={_limit_text(io['sysctl_io_uring_group'])}"))
    if io["usable"]:
        _add(lines, f"  io_uring        usable: {io['opcodes_supported']} opcodes; setup flags "
                    f"{', '.join(io['setup_flags'])}")
    else:
        _add(lines, f"  io_uring        REFUSED: {io['errno_name']}, cause {io['cause']}")
        _add(lines, f"  why             {io['detail']}")
        _add(lines, f"  fix             {io['fix']}")
    if io["missing_optional_opcodes"]:
        _add(lines, f"  missing ops     {', '.join(io['missing_optional_opcodes'])}")
    env = d["backend"]["env"]
    _add(lines, f"  backend auto    {d['backend']['auto']}"
                + (f" (RINGLINE_BACKEND={env} overrides it)" if env else ""))
    if not d["backend"].get("extension", True):
        _add(lines, f"  extension       NOT BUILT: {d['backend']['extension_missing']}")
    lines += ["", "features"]
    marks = {True: "yes", False: "no ", None: " ? "}
    for name, feat in d["features"].items():
        label = _LABELS.get(name, name)
        _add(lines, f"  [{marks[feat['supported']]}] {label:<31} {feat['detail']}")
    lim = d["limits"]
    lines += ["", "limits"]
    mem, nofile = lim["memlock"], lim["nofile"]
    _add(lines, f"  RLIMIT_MEMLOCK  soft {_bytes_text(mem['soft'])}, hard "
                f"{_bytes_text(mem['hard'])}: {mem['allows']}")
    _add(lines, f"  RLIMIT_NOFILE   soft {_limit_text(nofile['soft'])}, hard "
                f"{_limit_text(nofile['hard'])}: {nofile['allows']}")
    cpu = d["cpu"]
    quota = f", cgroup quota {cpu['quota']:g} CPUs" if cpu["quota"] is not None else ""
    _add(lines, f"  CPUs            {cpu['count']} usable (sched_getaffinity){quota}; "
                f"suggested workers: {cpu['suggested_workers']}")
    return "\n".join(lines) + "\n"
