"""Minimal seccomp-BPF helpers for tests (no libseccomp, just ctypes + struct).

The main entry point is :func:`deny_syscall`, which installs a classic BPF
filter in the *calling process* that makes one syscall fail with a chosen
errno while allowing everything else::

    import errno, _seccomp
    _seccomp.deny_syscall(_seccomp.NR_IO_URING_SETUP, errno.EPERM)

A seccomp filter can never be removed and is inherited by every thread and
child created afterwards, so only call this in a throw-away child process
(``subprocess.run([sys.executable, "-c", ...])`` or a multiprocessing
'spawn' child), never in the pytest process itself.

The filter is installed with ``prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER)``,
which applies to the calling thread only (plus threads it starts later):
install it before the code under test starts any threads.

Filter program (``A`` is the BPF accumulator, offsets are into
``struct seccomp_data { int nr; __u32 arch; __u64 ip; __u64 args[6]; }``)::

    0: A = seccomp_data.arch
    1: if A == NATIVE_AUDIT_ARCH goto 2 else goto 5
    2: A = seccomp_data.nr
    3: if A == nr goto 4 else goto 5
    4: return SECCOMP_RET_ERRNO | errno
    5: return SECCOMP_RET_ALLOW

Syscalls made through a foreign ABI (e.g. i386 ``int 0x80`` on x86_64) have a
different ``arch`` value and are allowed untouched; on x86_64 the x32 ABI
variant of the syscall (``nr | 0x40000000``) is denied as well.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno as _errno
import os
import platform
import struct

__all__ = [
    "NR_IO_URING_ENTER",
    "NR_IO_URING_SETUP",
    "SeccompUnavailable",
    "audit_arch",
    "build_deny_filter",
    "deny_syscall",
    "io_uring_setup_errno",
]

# io_uring_setup / io_uring_enter come from the unified syscall table
# (Linux 5.1+): the same numbers on x86_64 (arch/x86/entry/syscalls/
# syscall_64.tbl) and aarch64 (include/uapi/asm-generic/unistd.h).
NR_IO_URING_SETUP = 425
NR_IO_URING_ENTER = 426

# <linux/prctl.h>
PR_SET_SECCOMP = 22
PR_SET_NO_NEW_PRIVS = 38
# <linux/seccomp.h>
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_DATA = 0x0000FFFF
# <linux/audit.h>: EM_* | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
AUDIT_ARCH_X86_64 = 0xC000003E  # EM_X86_64 = 62
AUDIT_ARCH_AARCH64 = 0xC00000B7  # EM_AARCH64 = 183
X32_SYSCALL_BIT = 0x40000000

# <linux/bpf_common.h>
BPF_LD = 0x00
BPF_JMP = 0x05
BPF_RET = 0x06
BPF_W = 0x00
BPF_ABS = 0x20
BPF_JEQ = 0x10
BPF_K = 0x00

# offsets into struct seccomp_data
_OFF_NR = 0
_OFF_ARCH = 4

_SOCK_FILTER = struct.Struct("=HBBI")  # struct sock_filter: u16 code, u8 jt, u8 jf, u32 k


class SeccompUnavailable(OSError):
    """The kernel (or an outer sandbox) refused to install the filter."""


def audit_arch() -> int:
    """AUDIT_ARCH_* value of the running (64-bit) Python, or raise."""
    machine = platform.machine().lower()
    if struct.calcsize("P") != 8:
        raise SeccompUnavailable(
            _errno.ENOTSUP, f"only 64-bit processes are supported, not {machine}"
        )
    if machine in ("x86_64", "amd64"):
        return AUDIT_ARCH_X86_64
    if machine in ("aarch64", "arm64"):
        return AUDIT_ARCH_AARCH64
    raise SeccompUnavailable(
        _errno.ENOTSUP, f"unsupported architecture for the test filter: {machine}"
    )


def _stmt(code: int, k: int) -> bytes:
    return _SOCK_FILTER.pack(code, 0, 0, k)


def _jump(code: int, k: int, jt: int, jf: int) -> bytes:
    return _SOCK_FILTER.pack(code, jt, jf, k)


def build_deny_filter(nr: int, err: int, arch: int | None = None) -> bytes:
    """Return the raw ``struct sock_filter[]`` bytes denying ``nr`` with ``err``."""
    if not 0 < err <= SECCOMP_RET_DATA:
        raise ValueError(f"errno must be in 1..{SECCOMP_RET_DATA}, got {err}")
    if not 0 <= nr < X32_SYSCALL_BIT:
        raise ValueError(f"bad syscall number {nr}")
    if arch is None:
        arch = audit_arch()
    deny = SECCOMP_RET_ERRNO | (err & SECCOMP_RET_DATA)
    prog = [
        _stmt(BPF_LD | BPF_W | BPF_ABS, _OFF_ARCH),
    ]
    if arch == AUDIT_ARCH_X86_64:
        # 5 more instructions follow the arch check; on mismatch jump to ALLOW.
        prog += [
            _jump(BPF_JMP | BPF_JEQ | BPF_K, arch, 0, 4),
            _stmt(BPF_LD | BPF_W | BPF_ABS, _OFF_NR),
            _jump(BPF_JMP | BPF_JEQ | BPF_K, nr, 1, 0),  # native ABI -> DENY
            _jump(BPF_JMP | BPF_JEQ | BPF_K, nr | X32_SYSCALL_BIT, 0, 1),  # x32 ABI
            _stmt(BPF_RET | BPF_K, deny),
            _stmt(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        ]
    else:
        prog += [
            _jump(BPF_JMP | BPF_JEQ | BPF_K, arch, 0, 3),
            _stmt(BPF_LD | BPF_W | BPF_ABS, _OFF_NR),
            _jump(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1),
            _stmt(BPF_RET | BPF_K, deny),
            _stmt(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        ]
    return b"".join(prog)


class _SockFprog(ctypes.Structure):
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def _prctl(libc: ctypes.CDLL, option: int, arg2: int, arg3: int = 0) -> None:
    prctl = libc.prctl
    prctl.restype = ctypes.c_int
    prctl.argtypes = [
        ctypes.c_int,
        ctypes.c_ulong,
        ctypes.c_ulong,
        ctypes.c_ulong,
        ctypes.c_ulong,
    ]
    if prctl(option, arg2, arg3, 0, 0) != 0:
        err = ctypes.get_errno()
        raise SeccompUnavailable(err, f"prctl({option}, ...) failed: {os.strerror(err)}")


def deny_syscall(nr: int, errno: int) -> None:
    """Make syscall ``nr`` fail with ``-1``/``errno`` in this process from now on.

    Irreversible; inherited by threads started later and by child processes.
    Raises :class:`SeccompUnavailable` if the filter cannot be installed.
    """
    code = build_deny_filter(nr, errno)
    insns = ctypes.create_string_buffer(code, len(code))
    prog = _SockFprog(len(code) // _SOCK_FILTER.size, ctypes.addressof(insns))
    libc = _libc()
    # Required to install a filter without CAP_SYS_ADMIN; harmless as root.
    _prctl(libc, PR_SET_NO_NEW_PRIVS, 1)
    # The kernel copies the program during the call, so the buffers only need
    # to stay alive until it returns (they are locals, so they do).
    _prctl(libc, PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog))


# struct io_uring_params is 120 bytes on every architecture.
_IO_URING_PARAMS_SIZE = 120


def io_uring_setup_errno(entries: int = 8) -> int:
    """Call the raw ``io_uring_setup(entries, &params)`` syscall.

    Returns 0 on success (the ring fd is closed again immediately) or the
    errno of the failure. Useful to check a filter without ringline.
    """
    libc = _libc()
    syscall = libc.syscall
    syscall.restype = ctypes.c_long
    syscall.argtypes = [ctypes.c_long, ctypes.c_uint, ctypes.c_void_p]
    params = ctypes.create_string_buffer(_IO_URING_PARAMS_SIZE)
    ctypes.set_errno(0)
    fd = syscall(NR_IO_URING_SETUP, entries, params)
    if fd < 0:
        return ctypes.get_errno()
    os.close(fd)
    return 0
