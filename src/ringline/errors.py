"""The one error hierarchy of ringline.

Every exception ringline raises on purpose is defined here, and every errno a
syscall or a CQE hands back becomes a Python exception through exactly one
function, :func:`error_from_errno` (uvloop's ``convert_error``).

Why io_uring can be refused
---------------------------
``io_uring_setup(2)`` fails for a handful of unrelated reasons, and the errno
alone does not say which one; :func:`classify_setup_error` looks at the errno
and at ``/proc`` to name the cause and the fix:

* ``EPERM`` with ``kernel.io_uring_disabled=2`` (Linux 6.6+): io_uring is off
  for everybody.
* ``EPERM`` with ``kernel.io_uring_disabled=1``: only ``CAP_SYS_ADMIN`` and
  members of the group in ``kernel.io_uring_group`` may create rings.
* ``EPERM`` otherwise: a seccomp filter (Docker's and containerd's default
  profiles deny the io_uring syscalls) or an LSM policy said no.
* ``ENOSYS``: the kernel has no io_uring (``CONFIG_IO_URING=n``, older than
  5.1, or a sandbox such as gVisor that does not implement it).
* ``EINVAL``: the kernel does not know a setup flag ringline asks for
  (``DEFER_TASKRUN`` and ``SINGLE_ISSUER`` need 6.1 and 6.0).
* ``ENOMEM``: the rings could not be allocated or charged to the user's
  locked-memory allowance (``RLIMIT_MEMLOCK``).

All of these are :class:`IoUringUnavailable`, which is both a
:class:`RinglineError` and an :class:`OSError`, with a machine-readable
``.cause``.
"""

from __future__ import annotations

import errno as _errno
import os
import ssl as _ssl
from collections.abc import Iterable
from typing import Any

__all__ = [
    "ConfigError",
    "ConnectionClosed",
    "ConnectionLimitReached",
    "DatagramTooLarge",
    "DirectIOAlignmentError",
    "ExtensionNotBuilt",
    "IoUringDisabled",
    "IoUringNotSupported",
    "IoUringPermissionDenied",
    "IoUringResourceError",
    "IoUringUnavailable",
    "KernelTooOld",
    "MissingOpcode",
    "NvmeError",
    "ReceiveLimitExceeded",
    "RingFull",
    "RinglineError",
    "SendPoolExhausted",
    "TLSCertificateError",
    "TLSHandshakeError",
    "TLSHandshakeTimeout",
    "classify_setup_error",
    "error_from_errno",
]

#: The oldest kernel ringline supports (DEFER_TASKRUN and SEND_ZC are 6.1).
_MIN_KERNEL = "6.1"

_DISABLED_SYSCTL = "/proc/sys/kernel/io_uring_disabled"
_GROUP_SYSCTL = "/proc/sys/kernel/io_uring_group"
_CAP_SYS_ADMIN = 21  # bit number in /proc/self/status CapEff


def _rebuild(cls: type[BaseException], args: tuple[Any, ...],
             state: dict[str, Any]) -> BaseException:
    """Unpickle a ringline error without calling its own ``__init__``.

    Our constructors take domain arguments (a field name, an NVMe status),
    while ``self.args`` holds what the builtin base was given; so rebuild
    through the builtin base's ``__init__`` and restore the attributes.
    """
    obj = cls.__new__(cls, *args)
    builtin = next(k for k in cls.__mro__ if k.__module__ == "builtins")
    builtin.__init__(obj, *args)  # type: ignore[misc]
    obj.__dict__.update(state)
    return obj


class RinglineError(Exception):
    """Base class of every error ringline raises on purpose.

    Subclasses that have a natural builtin counterpart also inherit from it
    (``ConfigError`` is a ``ValueError``, ``ConnectionClosed`` a
    ``ConnectionError``...), so callers may catch either. Instances pickle,
    so they can cross a process boundary between workers.
    """

    #: Message used when the error is raised without arguments.
    default_message = ""

    def __init__(self, *args: Any) -> None:
        if not args and self.default_message:
            args = (self.default_message,)
        super().__init__(*args)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


# --------------------------------------------------------------------------
# io_uring refused
# --------------------------------------------------------------------------


class IoUringUnavailable(RinglineError, OSError):
    """io_uring cannot be used on this host or in this process.

    ``.errno`` is the errno ``io_uring_setup(2)`` (or the probe) produced,
    ``.cause`` a short machine-readable word (``"disabled"``,
    ``"permission_denied"``, ``"not_supported"``, ``"kernel_too_old"``,
    ``"missing_opcode"``, ``"resource_limit"``, ``"extension_not_built"`` or
    ``"setup_failed"``), and the
    message names the cause and what to do about it. Raised directly only for
    an errno :func:`classify_setup_error` has no better subclass for.
    """

    cause: str

    def __init__(self, errno: int, message: str | None = None, *,
                 cause: str = "setup_failed") -> None:
        self.cause = cause
        if message is None:
            name = _errno.errorcode.get(errno, str(errno))
            message = (f"io_uring_setup() failed with {name} "
                       f"({os.strerror(errno)}); ringline needs a working "
                       f"io_uring on Linux {_MIN_KERNEL}+")
        super().__init__(errno, message)


class IoUringDisabled(IoUringUnavailable):
    """The ``kernel.io_uring_disabled`` sysctl (Linux 6.6+) forbids io_uring.

    ``.sysctl`` is the sysctl value (1 or 2) and ``.group`` the value of
    ``kernel.io_uring_group`` when it could be read. With 2 nobody may create
    a ring; with 1 only ``CAP_SYS_ADMIN`` and members of that group may.
    """

    def __init__(self, sysctl: int, *, group: int | None = None) -> None:
        self.sysctl = sysctl
        self.group = group
        if sysctl == 1:
            if group is None or group < 0:
                who = ("kernel.io_uring_group is unset (-1), so only "
                       "processes with CAP_SYS_ADMIN may use it")
                fix = ("set `sysctl -w kernel.io_uring_group=<gid>` and add "
                       "this user to that group")
            else:
                who = (f"only CAP_SYS_ADMIN and members of group {group} "
                       f"(kernel.io_uring_group) may use it, and this "
                       f"process is neither")
                fix = f"add this user to group {group}"
            message = (f"io_uring is restricted by sysctl "
                       f"kernel.io_uring_disabled=1: {who}. Fix: {fix}, run "
                       f"with CAP_SYS_ADMIN, or allow it for everyone with "
                       f"`sysctl -w kernel.io_uring_disabled=0`")
        else:
            message = (f"io_uring is disabled system-wide by sysctl "
                       f"kernel.io_uring_disabled={sysctl}. Fix: as root run "
                       f"`sysctl -w kernel.io_uring_disabled=0` (or =1 "
                       f"together with kernel.io_uring_group=<gid>)")
        super().__init__(_errno.EPERM, message, cause="disabled")


class IoUringPermissionDenied(IoUringUnavailable):
    """``io_uring_setup(2)`` returned ``EPERM`` although the sysctl allows it.

    That leaves a seccomp filter (Docker's default profile, since Docker 25,
    and containerd's deny the io_uring syscalls) or an LSM policy (SELinux,
    AppArmor). Resource limits do not produce ``EPERM``; they surface as
    :class:`IoUringResourceError`.
    """

    def __init__(self, detail: str = "") -> None:
        message = (
            "io_uring_setup() was denied with EPERM although "
            "kernel.io_uring_disabled allows io_uring: a seccomp filter or an "
            "LSM policy (SELinux, AppArmor) blocks the io_uring syscalls. "
            "Container runtimes do this by default; fix: run with "
            "`--security-opt seccomp=<profile that allows io_uring_setup, "
            "io_uring_enter and io_uring_register>` (or "
            "`--security-opt seccomp=unconfined` to test), or set a "
            "Kubernetes securityContext.seccompProfile that allows them")
        if detail:
            message = f"{message} ({detail})"
        super().__init__(_errno.EPERM, message, cause="permission_denied")


class IoUringNotSupported(IoUringUnavailable):
    """``io_uring_setup(2)`` does not exist (``ENOSYS``).

    The kernel was built without ``CONFIG_IO_URING``, is older than 5.1, or
    runs under a sandbox (gVisor, a seccomp profile answering ``ENOSYS``) that
    hides it. ringline needs Linux 6.1 or newer.
    """

    def __init__(self, detail: str = "") -> None:
        message = (f"io_uring is not supported by this kernel (ENOSYS): it "
                   f"was built without CONFIG_IO_URING, is too old, or a "
                   f"sandbox hides the syscall. Fix: run on Linux "
                   f"{_MIN_KERNEL}+ with io_uring enabled, or use the "
                   f"standard asyncio event loop")
        if detail:
            message = f"{message} ({detail})"
        super().__init__(_errno.ENOSYS, message, cause="not_supported")


class KernelTooOld(IoUringUnavailable):
    """The kernel is older than 6.1 or refused a setup flag ringline needs.

    ``detail`` says what was refused (free text); ``.feature`` names the
    refused setup flag or feature when known; ``.release`` is the running
    kernel's release string (``uname -r``), looked up when not given.
    ``EINVAL`` from ``io_uring_setup(2)`` with ringline's flags means this.
    """

    def __init__(self, detail: str | None = None, *,
                 release: str | None = None,
                 feature: str | None = None) -> None:
        self.release = release if release is not None else os.uname().release
        self.feature = feature
        if detail is None:
            if feature is not None:
                detail = f"the kernel refused io_uring setup feature {feature}"
            else:
                detail = ("the kernel refused ringline's io_uring setup "
                          "flags (EINVAL)")
        message = (f"{detail} (running kernel {self.release}). Fix: upgrade "
                   f"to Linux {_MIN_KERNEL}+; ringline needs COOP_TASKRUN, "
                   f"SINGLE_ISSUER, DEFER_TASKRUN and SEND_ZC")
        super().__init__(_errno.EINVAL, message, cause="kernel_too_old")


class MissingOpcode(IoUringUnavailable):
    """The io_uring probe reports opcodes ringline needs as unsupported.

    ``.opcodes`` lists their names (for example ``["SEND_ZC"]``).
    """

    def __init__(self, opcodes: Iterable[str], *,
                 release: str | None = None) -> None:
        if isinstance(opcodes, str):
            opcodes = [opcodes]
        self.opcodes = list(opcodes)
        self.release = release
        kernel = f" (kernel {release})" if release is not None else ""
        message = (f"the io_uring probe reports unsupported opcode(s) "
                   f"{', '.join(self.opcodes)}{kernel}. Fix: run on Linux "
                   f"{_MIN_KERNEL}+, and check that no io_uring restriction "
                   f"(IORING_REGISTER_RESTRICTIONS) filters them")
        super().__init__(_errno.EOPNOTSUPP, message, cause="missing_opcode")


class ExtensionNotBuilt(IoUringUnavailable):
    """This install of ringline has no compiled extension (the io_uring core).

    A pure-Python install: built where the extension cannot be (not Linux),
    or on purpose with ``RINGLINE_PURE=1``, or its compiled modules failed to
    import (``.reason`` says which).  The native API and ``ringline.fs`` run
    on the portable backend; only the io_uring loop (``backend="uring"``,
    :class:`ringline.EventLoop`, :func:`ringline.install`) needs the extension.
    """

    def __init__(self, reason: str = "no compiled module was built") -> None:
        self.reason = reason
        message = (f"ringline's compiled io_uring extension is not available in this "
                   f"install ({reason}). Fix: reinstall on Linux with a C compiler and "
                   f"without RINGLINE_PURE (`pip install --force-reinstall --no-binary "
                   f"ringline ringline`), or use backend=\"portable\"")
        super().__init__(_errno.ENOSYS, message, cause="extension_not_built")


class IoUringResourceError(IoUringUnavailable):
    """``io_uring_setup(2)`` or a registration failed with ``ENOMEM``.

    The rings (or registered buffers) could not be allocated or charged to
    the user's locked-memory allowance (``RLIMIT_MEMLOCK``).
    """

    def __init__(self, detail: str = "") -> None:
        message = ("io_uring could not allocate or lock memory for the ring "
                   "(ENOMEM). Fix: raise RLIMIT_MEMLOCK (`ulimit -l "
                   "unlimited`, systemd LimitMEMLOCK=infinity, Docker "
                   "`--ulimit memlock=-1`), free memory, or lower "
                   "Config.sq_entries, cq_entries, recv_buffer_count or "
                   "registered_buffers")
        if detail:
            message = f"{message} ({detail})"
        super().__init__(_errno.ENOMEM, message, cause="resource_limit")


def _read_sysctl(path: str) -> int | None:
    """Return the integer in a ``/proc/sys`` file, or None if unreadable."""
    try:
        with open(path, encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _has_cap_sys_admin() -> bool:
    """True if this process's effective capabilities include CAP_SYS_ADMIN."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    caps = int(line.split()[1], 16)
                    return bool(caps >> _CAP_SYS_ADMIN & 1)
    except (OSError, ValueError, IndexError):
        pass
    return os.geteuid() == 0


def _passes_group_check(group: int | None) -> bool:
    """Mirror the kernel's test for ``kernel.io_uring_disabled=1``."""
    if _has_cap_sys_admin():
        return True
    if group is None or group < 0:
        return False
    return group == os.getegid() or group in os.getgroups()


def classify_setup_error(errno: int, *, disabled_sysctl: int | None = None,
                         group_allowed: bool | None = None
                         ) -> IoUringUnavailable:
    """Turn an ``io_uring_setup(2)`` errno into the right refusal exception.

    ``errno`` may be given positive or as the raw negative return value.
    ``disabled_sysctl`` is ``kernel.io_uring_disabled``; None reads
    ``/proc/sys/kernel/io_uring_disabled`` (a missing file, as before Linux
    6.6, counts as 0). ``group_allowed`` says whether this process passes the
    kernel's ``io_uring_group`` test (member of the group, or
    ``CAP_SYS_ADMIN``); None works it out from ``/proc``.

    ``EPERM``: sysctl 2, or 1 without the group test →
    :class:`IoUringDisabled`, else :class:`IoUringPermissionDenied`.
    ``ENOSYS`` → :class:`IoUringNotSupported`; ``EINVAL`` →
    :class:`KernelTooOld`; ``ENOMEM`` → :class:`IoUringResourceError`;
    anything else → a plain :class:`IoUringUnavailable` carrying the errno.
    The exception is returned, not raised.
    """
    errno = abs(errno)
    if errno == _errno.EPERM:
        if disabled_sysctl is None:
            disabled_sysctl = _read_sysctl(_DISABLED_SYSCTL) or 0
        group = _read_sysctl(_GROUP_SYSCTL) if disabled_sysctl == 1 else None
        if disabled_sysctl >= 2:
            return IoUringDisabled(disabled_sysctl)
        if disabled_sysctl == 1:
            if group_allowed is None:
                group_allowed = _passes_group_check(group)
            if not group_allowed:
                return IoUringDisabled(1, group=group)
        return IoUringPermissionDenied()
    if errno == _errno.ENOSYS:
        return IoUringNotSupported()
    if errno == _errno.EINVAL:
        return KernelTooOld()
    if errno == _errno.ENOMEM:
        return IoUringResourceError()
    return IoUringUnavailable(errno)


# --------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------


class ConfigError(RinglineError, ValueError):
    """A :class:`ringline.config.Config` field has a bad value.

    ``.field`` names the field, ``.why`` the rule it broke and ``.value`` the
    rejected value; the message reads ``Config.<field>: <why> (got <value>)``.
    """

    def __init__(self, field: str, why: str, value: Any) -> None:
        self.field = field
        self.why = why
        self.value = value
        super().__init__(f"Config.{field}: {why} (got {value!r})")


# --------------------------------------------------------------------------
# runtime
# --------------------------------------------------------------------------


class SendPoolExhausted(RinglineError, BufferError):
    """Every slot of the send copy pool holds data the kernel has not sent.

    Wait for ``drain()`` or enlarge ``Config.send_pool_slots``.
    """

    default_message = ("send copy pool exhausted: every slot is in flight "
                       "(await drain() or raise Config.send_pool_slots)")


class ConnectionLimitReached(RinglineError):
    """All ``Config.max_connections`` connection slots are in use.

    ``.limit`` is the configured limit when known.
    """

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        where = f" (Config.max_connections={limit})" if limit is not None else ""
        super().__init__(f"connection limit reached{where}")


class ReceiveLimitExceeded(RinglineError):
    """A peer sent more unconsumed data than ``Config.recv_accumulator_limit``.

    The connection is closed; ``.limit`` is the limit in bytes.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"more than {limit} received bytes were buffered but "
                         f"not consumed (Config.recv_accumulator_limit); "
                         f"connection closed")


class ConnectionClosed(RinglineError, ConnectionError):
    """The operation needs an open connection, and this one is closed.

    ``.errno`` is None; errors reported by the kernel for a connection
    (``ECONNRESET``, ``EPIPE``...) come from :func:`error_from_errno` instead.
    """

    default_message = "connection is closed"


class TLSHandshakeError(RinglineError, _ssl.SSLError):
    """A TLS handshake of the native API failed (``ringline.connect(ssl=)``).

    An ``ssl.SSLError``: the OpenSSL error that ended the handshake is its
    ``__cause__``, and its ``reason``/``library`` are copied.  A plaintext or
    garbled peer, an alert from the peer, a peer that closed mid-handshake.
    """

    default_message = "TLS handshake failed"


class TLSCertificateError(TLSHandshakeError, _ssl.SSLCertVerificationError):
    """The peer's certificate did not verify (untrusted, expired, or not for
    the ``server_hostname`` asked for); ``verify_code`` and
    ``verify_message`` are OpenSSL's, as on ``ssl.SSLCertVerificationError``."""

    default_message = "TLS certificate verification failed"


class TLSHandshakeTimeout(TLSHandshakeError, TimeoutError):
    """The TLS handshake did not finish within ``Config.tls_handshake_timeout``."""

    default_message = "TLS handshake timed out"

class DatagramTooLarge(RinglineError, OSError):
    """A datagram longer than one UDP datagram can carry (65,507 bytes over
    IPv4, 65,527 over IPv6); ``.errno`` is ``EMSGSIZE``, as the kernel's own
    refusal, and ``.limit`` the limit in bytes."""

    def __init__(self, size: int = 0, limit: int = 65507) -> None:
        import errno as _errno
        self.limit = limit
        super().__init__(_errno.EMSGSIZE,
                         f"datagram of {size} bytes is larger than the {limit}-byte UDP limit")


class RingFull(RinglineError):
    """The submission queue is still full after submitting it to the kernel."""

    default_message = "io_uring submission queue still full after submit"


class DirectIOAlignmentError(RinglineError, ValueError):
    """An ``O_DIRECT`` buffer address, length or offset is misaligned.

    ``.what`` names the quantity (``"buffer address"``, ``"length"``,
    ``"offset"``), ``.value`` its value and ``.alignment`` the required
    multiple in bytes (the device's logical block size).
    """

    def __init__(self, what: str, value: int, alignment: int) -> None:
        self.what = what
        self.value = value
        self.alignment = alignment
        super().__init__(f"O_DIRECT requires the {what} to be a multiple of "
                         f"{alignment} bytes (got {value})")


_NVME_SCT_NAMES = {
    0: "generic command status",
    1: "command specific status",
    2: "media and data integrity error",
    3: "path related status",
    7: "vendor specific",
}

# (sct, sc) -> name, as written in the NVMe base and NVM command set specs.
_NVME_STATUS_NAMES = {
    (0, 0x00): "successful completion",
    (0, 0x01): "invalid command opcode",
    (0, 0x02): "invalid field in command",
    (0, 0x03): "command ID conflict",
    (0, 0x04): "data transfer error",
    (0, 0x05): "commands aborted due to power loss notification",
    (0, 0x06): "internal error",
    (0, 0x07): "command abort requested",
    (0, 0x08): "command aborted due to SQ deletion",
    (0, 0x0B): "invalid namespace or format",
    (0, 0x0C): "command sequence error",
    (0, 0x0F): "data SGL length invalid",
    (0, 0x13): "PRP offset invalid",
    (0, 0x15): "operation denied",
    (0, 0x1D): "sanitize in progress",
    (0, 0x20): "namespace is write protected",
    (0, 0x21): "command interrupted",
    (0, 0x22): "transient transport error",
    (0, 0x80): "LBA out of range",
    (0, 0x81): "capacity exceeded",
    (0, 0x82): "namespace not ready",
    (0, 0x83): "reservation conflict",
    (0, 0x84): "format in progress",
    (1, 0x80): "conflicting attributes",
    (1, 0x81): "invalid protection information",
    (1, 0x82): "attempted write to read only range",
    (2, 0x80): "write fault",
    (2, 0x81): "unrecovered read error",
    (2, 0x82): "end-to-end guard check error",
    (2, 0x83): "end-to-end application tag check error",
    (2, 0x84): "end-to-end reference tag check error",
    (2, 0x85): "compare failure",
    (2, 0x86): "access denied",
    (2, 0x87): "deallocated or unwritten logical block",
}


class NvmeError(RinglineError, OSError):
    """An NVMe passthrough command completed with a non-zero NVMe status.

    ``.status`` is the status the kernel returns as a positive CQE ``res``
    for ``URING_CMD``: the 15-bit completion status field without the phase
    bit. It decodes as ``.sc`` (status code, bits 0-7), ``.sct`` (status code
    type, bits 8-10), ``.crd`` (command retry delay, bits 11-12), ``.more``
    (bit 13) and ``.dnr`` (do not retry, bit 14); ``.name`` describes the
    code. ``.errno`` is ``EIO``. Negative CQE results are errnos, not NVMe
    statuses: use :func:`error_from_errno` for those.
    """

    def __init__(self, status: int, what: str = "") -> None:
        if not 0 <= status <= 0x7FFF:
            raise ValueError(f"NVMe status must be in 0..0x7fff, got {status}")
        self.status = status
        self.sc = status & 0xFF
        self.sct = status >> 8 & 0x7
        self.crd = status >> 11 & 0x3
        self.more = bool(status & 0x2000)
        self.dnr = bool(status & 0x4000)
        self.what = what
        known = _NVME_STATUS_NAMES.get((self.sct, self.sc))
        if known is None:
            kind = _NVME_SCT_NAMES.get(self.sct, "reserved status code type")
            known = f"unknown {kind} code"
        self.name = known
        prefix = f"{what}: " if what else ""
        retry = ", do not retry" if self.dnr else ""
        super().__init__(_errno.EIO,
                         f"{prefix}NVMe command failed: {self.name} "
                         f"(status={status:#06x}, sct={self.sct:#x}, "
                         f"sc={self.sc:#04x}{retry})")


# --------------------------------------------------------------------------
# errno -> exception
# --------------------------------------------------------------------------


def error_from_errno(errno: int, what: str = "") -> OSError:
    """Return the exception for an errno from a syscall or a CQE.

    This is ringline's only errno-to-exception function. ``errno`` may be
    positive or a raw negative CQE ``res``; ``what`` names the operation
    (``"connect"``, ``"send"``) and prefixes the strerror text. The result is
    the builtin ``OSError`` subclass CPython itself would pick
    (``ConnectionRefusedError``, ``ConnectionResetError``,
    ``BrokenPipeError``, ``FileNotFoundError``, ``PermissionError``,
    ``BlockingIOError``, ``InterruptedError``...), which ``OSError(errno,
    msg)`` constructs; io_uring's ``ETIME`` (a fired timeout) additionally
    becomes ``TimeoutError`` like ``ETIMEDOUT``.

    ``ECANCELED`` stays a plain ``OSError(ECANCELED)``: an op cancelled
    because its awaiting task was cancelled never reaches this function (the
    task sees ``asyncio.CancelledError``), so an ``ECANCELED`` that does is an
    I/O failure, not a cancellation of the caller.
    """
    errno = abs(errno)
    if errno == 0:
        raise ValueError("error_from_errno() needs a non-zero errno")
    text = os.strerror(errno)
    message = f"{what}: {text}" if what else text
    if errno == _errno.ETIME:
        return TimeoutError(errno, message)
    return OSError(errno, message)
