"""Tests for ringline.errors: hierarchy, setup-refusal triage, errno mapping."""

from __future__ import annotations

import errno
import inspect
import os
import pickle

import pytest

from ringline import errors
from ringline.errors import (
    ConfigError,
    ConnectionClosed,
    ConnectionLimitReached,
    DatagramTooLarge,
    DirectIOAlignmentError,
    IoUringDisabled,
    IoUringNotSupported,
    IoUringPermissionDenied,
    IoUringResourceError,
    IoUringUnavailable,
    KernelTooOld,
    MissingOpcode,
    NvmeError,
    ReceiveLimitExceeded,
    RingFull,
    RinglineError,
    SendPoolExhausted,
    classify_setup_error,
    error_from_errno,
)

ERROR_CLASSES = [
    obj for name in errors.__all__
    if inspect.isclass(obj := getattr(errors, name))
]


# ---------------------------------------------------------------- exports

def test_all_lists_every_public_name() -> None:
    public = {
        name for name, obj in vars(errors).items()
        if not name.startswith("_") and getattr(obj, "__module__", None)
        == errors.__name__
    }
    assert public == set(errors.__all__)


def test_all_has_no_duplicates() -> None:
    assert len(errors.__all__) == len(set(errors.__all__))


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_every_error_is_a_ringline_error_with_docstring(cls: type) -> None:
    assert issubclass(cls, RinglineError)
    assert cls.__doc__ and cls.__doc__.strip()


# -------------------------------------------------------------- hierarchy

@pytest.mark.parametrize(("cls", "builtin"), [
    (IoUringUnavailable, OSError),
    (IoUringDisabled, IoUringUnavailable),
    (IoUringPermissionDenied, IoUringUnavailable),
    (IoUringNotSupported, IoUringUnavailable),
    (KernelTooOld, IoUringUnavailable),
    (MissingOpcode, IoUringUnavailable),
    (IoUringResourceError, IoUringUnavailable),
    (ConfigError, ValueError),
    (SendPoolExhausted, BufferError),
    (ConnectionClosed, ConnectionError),
    (DirectIOAlignmentError, ValueError),
    (NvmeError, OSError),
], ids=lambda x: x.__name__)
def test_builtin_bases(cls: type, builtin: type) -> None:
    assert issubclass(cls, builtin)


@pytest.mark.parametrize("cls", [
    ConnectionLimitReached, ReceiveLimitExceeded, RingFull,
], ids=lambda c: c.__name__)
def test_runtime_errors_are_not_oserrors(cls: type) -> None:
    assert not issubclass(cls, OSError)


@pytest.mark.parametrize("cls", [
    SendPoolExhausted, ConnectionClosed, RingFull,
], ids=lambda c: c.__name__)
def test_no_argument_errors_have_a_default_message(cls: type) -> None:
    assert str(cls())
    assert str(cls("custom text")) == "custom text"


def test_connection_closed_has_no_errno() -> None:
    exc = ConnectionClosed()
    assert exc.errno is None
    assert str(exc) == "connection is closed"


PICKLABLE = [
    IoUringDisabled(2),
    IoUringDisabled(1, group=1234),
    IoUringPermissionDenied("detail"),
    IoUringNotSupported(),
    KernelTooOld(release="5.15.0", feature="DEFER_TASKRUN"),
    KernelTooOld("io_uring lacks IORING_FEAT_EXT_ARG"),
    MissingOpcode(["SEND_ZC", "RECV"]),
    IoUringResourceError(),
    IoUringUnavailable(errno.EFAULT),
    ConfigError("sq_entries", "must be a power of two", 3),
    SendPoolExhausted(),
    ConnectionLimitReached(16000),
    ReceiveLimitExceeded(1024),
    ConnectionClosed(),
    DatagramTooLarge(70000),
    DirectIOAlignmentError("offset", 100, 512),
    NvmeError(0x4080, "read"),
]


@pytest.mark.parametrize("exc", PICKLABLE, ids=lambda e: type(e).__name__)
def test_pickle_round_trip(exc: BaseException) -> None:
    copy = pickle.loads(pickle.dumps(exc))
    assert type(copy) is type(exc)
    assert str(copy) == str(exc)
    assert copy.args == exc.args
    assert copy.__dict__ == exc.__dict__
    if isinstance(exc, OSError):
        assert isinstance(copy, OSError)
        assert copy.errno == exc.errno


# ---------------------------------------------------- classify_setup_error

@pytest.fixture
def no_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any attempt to read /proc fail the test."""
    def boom(*args: object) -> None:
        raise AssertionError("must not read /proc")
    monkeypatch.setattr(errors, "_read_sysctl", boom)
    monkeypatch.setattr(errors, "_passes_group_check", boom)


def test_eperm_sysctl_2_is_disabled(no_proc: None) -> None:
    exc = classify_setup_error(errno.EPERM, disabled_sysctl=2)
    assert type(exc) is IoUringDisabled
    assert exc.cause == "disabled"
    assert exc.errno == errno.EPERM
    assert exc.sysctl == 2
    assert "kernel.io_uring_disabled=2" in str(exc)
    assert "sysctl -w kernel.io_uring_disabled=0" in str(exc)


def test_eperm_sysctl_1_outside_group_is_disabled(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(errors, "_read_sysctl", lambda path: 1234)
    exc = classify_setup_error(errno.EPERM, disabled_sysctl=1,
                               group_allowed=False)
    assert type(exc) is IoUringDisabled
    assert exc.sysctl == 1 and exc.group == 1234
    msg = str(exc)
    assert "kernel.io_uring_disabled=1" in msg
    assert "kernel.io_uring_group" in msg
    assert "group 1234" in msg
    assert "sysctl -w kernel.io_uring_disabled=0" in msg


def test_eperm_sysctl_1_with_unset_group_says_so(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(errors, "_read_sysctl", lambda path: -1)
    exc = classify_setup_error(errno.EPERM, disabled_sysctl=1,
                               group_allowed=False)
    assert type(exc) is IoUringDisabled
    assert "CAP_SYS_ADMIN" in str(exc)
    assert "sysctl -w kernel.io_uring_group=<gid>" in str(exc)


def test_eperm_sysctl_1_inside_group_is_permission_denied(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(errors, "_read_sysctl", lambda path: 1234)
    exc = classify_setup_error(errno.EPERM, disabled_sysctl=1,
                               group_allowed=True)
    assert type(exc) is IoUringPermissionDenied


@pytest.mark.parametrize("allowed", [True, False])
def test_eperm_sysctl_1_checks_group_when_not_told(
        monkeypatch: pytest.MonkeyPatch, allowed: bool) -> None:
    seen: list[int | None] = []

    def fake_check(group: int | None) -> bool:
        seen.append(group)
        return allowed

    monkeypatch.setattr(errors, "_read_sysctl", lambda path: 77)
    monkeypatch.setattr(errors, "_passes_group_check", fake_check)
    exc = classify_setup_error(errno.EPERM, disabled_sysctl=1)
    assert seen == [77]
    expected = IoUringPermissionDenied if allowed else IoUringDisabled
    assert type(exc) is expected


def test_eperm_sysctl_0_is_seccomp(no_proc: None) -> None:
    exc = classify_setup_error(errno.EPERM, disabled_sysctl=0)
    assert type(exc) is IoUringPermissionDenied
    assert exc.cause == "permission_denied"
    assert exc.errno == errno.EPERM
    assert "seccomp" in str(exc)
    assert "--security-opt seccomp=" in str(exc)


@pytest.mark.parametrize(("content", "expected"), [
    ("2\n", IoUringDisabled),
    ("0\n", IoUringPermissionDenied),
    (None, IoUringPermissionDenied),     # file missing: before Linux 6.6
    ("garbage", IoUringPermissionDenied),
])
def test_eperm_reads_sysctl_file(monkeypatch: pytest.MonkeyPatch,
                                 tmp_path: os.PathLike[str],
                                 content: str | None,
                                 expected: type) -> None:
    path = os.path.join(tmp_path, "io_uring_disabled")
    if content is not None:
        with open(path, "w") as f:
            f.write(content)
    monkeypatch.setattr(errors, "_DISABLED_SYSCTL", path)
    assert type(classify_setup_error(errno.EPERM)) is expected


def test_eperm_reads_sysctl_1_and_group_file(
        monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> None:
    disabled = os.path.join(tmp_path, "io_uring_disabled")
    group = os.path.join(tmp_path, "io_uring_group")
    with open(disabled, "w") as f:
        f.write("1\n")
    with open(group, "w") as f:
        f.write("4242\n")
    monkeypatch.setattr(errors, "_DISABLED_SYSCTL", disabled)
    monkeypatch.setattr(errors, "_GROUP_SYSCTL", group)
    exc = classify_setup_error(errno.EPERM, group_allowed=False)
    assert type(exc) is IoUringDisabled
    assert exc.group == 4242


def test_enosys_is_not_supported(no_proc: None) -> None:
    exc = classify_setup_error(errno.ENOSYS)
    assert type(exc) is IoUringNotSupported
    assert exc.cause == "not_supported"
    assert exc.errno == errno.ENOSYS
    assert "CONFIG_IO_URING" in str(exc)
    assert "6.1" in str(exc)


def test_einval_is_kernel_too_old(no_proc: None) -> None:
    exc = classify_setup_error(errno.EINVAL)
    assert type(exc) is KernelTooOld
    assert exc.cause == "kernel_too_old"
    assert exc.errno == errno.EINVAL
    assert exc.release == os.uname().release
    assert "6.1" in str(exc) and "upgrade" in str(exc)


def test_enomem_is_resource_error(no_proc: None) -> None:
    exc = classify_setup_error(errno.ENOMEM)
    assert type(exc) is IoUringResourceError
    assert exc.cause == "resource_limit"
    assert exc.errno == errno.ENOMEM
    assert "RLIMIT_MEMLOCK" in str(exc)


@pytest.mark.parametrize("code", [errno.EFAULT, errno.EMFILE, errno.EBUSY])
def test_other_errno_is_plain_unavailable(no_proc: None, code: int) -> None:
    exc = classify_setup_error(code)
    assert type(exc) is IoUringUnavailable
    assert exc.cause == "setup_failed"
    assert exc.errno == code
    assert errno.errorcode[code] in str(exc)


def test_negative_errno_is_accepted(no_proc: None) -> None:
    assert type(classify_setup_error(-errno.ENOSYS)) is IoUringNotSupported


def test_classified_errors_are_oserrors(no_proc: None) -> None:
    for code in (errno.ENOSYS, errno.EINVAL, errno.ENOMEM, errno.EFAULT):
        exc = classify_setup_error(code)
        assert isinstance(exc, OSError) and isinstance(exc, RinglineError)


def test_group_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(errors, "_has_cap_sys_admin", lambda: False)
    assert errors._passes_group_check(os.getegid())
    assert not errors._passes_group_check(-1)
    assert not errors._passes_group_check(None)
    monkeypatch.setattr(errors, "_has_cap_sys_admin", lambda: True)
    assert errors._passes_group_check(-1)


def test_has_cap_sys_admin_returns_bool() -> None:
    assert isinstance(errors._has_cap_sys_admin(), bool)


def test_kernel_too_old_feature_message() -> None:
    exc = KernelTooOld(release="5.15.0", feature="IORING_SETUP_DEFER_TASKRUN")
    assert exc.feature == "IORING_SETUP_DEFER_TASKRUN"
    assert exc.release == "5.15.0"
    assert "IORING_SETUP_DEFER_TASKRUN" in str(exc)
    assert "5.15.0" in str(exc)


def test_kernel_too_old_free_text_detail() -> None:
    exc = KernelTooOld("io_uring lacks IORING_FEAT_EXT_ARG")
    assert str(exc).startswith(
        f"[Errno {errno.EINVAL}] io_uring lacks IORING_FEAT_EXT_ARG (running "
        f"kernel {os.uname().release}). Fix: upgrade to Linux 6.1+")
    assert exc.feature is None


def test_missing_opcode_accepts_a_single_name() -> None:
    assert MissingOpcode("SEND_ZC").opcodes == ["SEND_ZC"]


def test_missing_opcode_lists_names() -> None:
    exc = MissingOpcode(("SEND_ZC", "RECV"), release="5.10.0")
    assert exc.opcodes == ["SEND_ZC", "RECV"]
    assert exc.cause == "missing_opcode"
    assert "SEND_ZC, RECV" in str(exc)
    assert "5.10.0" in str(exc)


# --------------------------------------------------------- error_from_errno

@pytest.mark.parametrize(("code", "cls"), [
    (errno.ECONNREFUSED, ConnectionRefusedError),
    (errno.ECONNRESET, ConnectionResetError),
    (errno.ECONNABORTED, ConnectionAbortedError),
    (errno.EPIPE, BrokenPipeError),
    (errno.ESHUTDOWN, BrokenPipeError),
    (errno.ETIMEDOUT, TimeoutError),
    (errno.ETIME, TimeoutError),
    (errno.ENOENT, FileNotFoundError),
    (errno.EEXIST, FileExistsError),
    (errno.EISDIR, IsADirectoryError),
    (errno.ENOTDIR, NotADirectoryError),
    (errno.EPERM, PermissionError),
    (errno.EACCES, PermissionError),
    (errno.EINTR, InterruptedError),
    (errno.EAGAIN, BlockingIOError),
    (errno.EINPROGRESS, BlockingIOError),
    (errno.EALREADY, BlockingIOError),
    (errno.ECANCELED, OSError),
    (errno.ENOBUFS, OSError),
    (errno.EINVAL, OSError),
    (errno.ENOTCONN, OSError),
], ids=lambda x: errno.errorcode.get(x, getattr(x, "__name__", str(x))))
def test_error_from_errno_builtin_subclass(code: int, cls: type) -> None:
    exc = error_from_errno(code)
    assert type(exc) is cls
    assert exc.errno == code
    assert os.strerror(code) in str(exc)


def test_error_from_errno_accepts_cqe_res() -> None:
    exc = error_from_errno(-errno.ECONNREFUSED, "connect")
    assert type(exc) is ConnectionRefusedError
    assert exc.errno == errno.ECONNREFUSED


def test_error_from_errno_message_names_operation() -> None:
    exc = error_from_errno(errno.ECONNRESET, "recv")
    assert exc.strerror == f"recv: {os.strerror(errno.ECONNRESET)}"
    assert str(exc) == f"[Errno {errno.ECONNRESET}] recv: Connection reset by peer"


def test_error_from_errno_ecanceled_is_not_cancelled_error() -> None:
    import asyncio
    exc = error_from_errno(errno.ECANCELED)
    assert not isinstance(exc, asyncio.CancelledError)
    assert exc.errno == errno.ECANCELED


def test_error_from_errno_rejects_zero() -> None:
    with pytest.raises(ValueError):
        error_from_errno(0)


# ----------------------------------------------------------- other errors

def test_config_error_message_and_fields() -> None:
    exc = ConfigError("sq_entries", "must be a power of two", 3)
    assert str(exc) == "Config.sq_entries: must be a power of two (got 3)"
    assert (exc.field, exc.why, exc.value) == ("sq_entries",
                                               "must be a power of two", 3)
    assert str(ConfigError("x", "bad", "s")).endswith("(got 's')")


def test_direct_io_alignment_error() -> None:
    exc = DirectIOAlignmentError("offset", 100, 512)
    assert (exc.what, exc.value, exc.alignment) == ("offset", 100, 512)
    assert "offset" in str(exc) and "512" in str(exc) and "100" in str(exc)


def test_receive_limit_exceeded() -> None:
    exc = ReceiveLimitExceeded(4096)
    assert exc.limit == 4096
    assert "4096" in str(exc) and "recv_accumulator_limit" in str(exc)


def test_connection_limit_reached() -> None:
    assert ConnectionLimitReached().limit is None
    exc = ConnectionLimitReached(16000)
    assert exc.limit == 16000 and "max_connections=16000" in str(exc)


# ---------------------------------------------------------------- NVMe

@pytest.mark.parametrize(
    ("status", "sct", "sc", "more", "dnr", "crd", "name"), [
        (0x0000, 0, 0x00, False, False, 0, "successful completion"),
        (0x0001, 0, 0x01, False, False, 0, "invalid command opcode"),
        (0x4002, 0, 0x02, False, True, 0, "invalid field in command"),
        (0x4080, 0, 0x80, False, True, 0, "LBA out of range"),
        (0x0081, 0, 0x81, False, False, 0, "capacity exceeded"),
        (0x0082, 0, 0x82, False, False, 0, "namespace not ready"),
        (0x0182, 1, 0x82, False, False, 0,
         "attempted write to read only range"),
        (0x2281, 2, 0x81, True, False, 0, "unrecovered read error"),
        (0x0A04, 2, 0x04, False, False, 1,
         "unknown media and data integrity error code"),
        (0x7FFF, 7, 0xFF, True, True, 3, "unknown vendor specific code"),
        (0x04FF, 4, 0xFF, False, False, 0,
         "unknown reserved status code type code"),
    ])
def test_nvme_status_decoding(status: int, sct: int, sc: int, more: bool,
                              dnr: bool, crd: int, name: str) -> None:
    exc = NvmeError(status)
    assert exc.status == status
    assert (exc.sct, exc.sc, exc.more, exc.dnr, exc.crd) == (
        sct, sc, more, dnr, crd)
    assert exc.name == name
    assert exc.errno == errno.EIO
    assert name in str(exc)


def test_nvme_error_message() -> None:
    exc = NvmeError(0x4080, "nvme_read")
    assert str(exc).startswith(f"[Errno {errno.EIO}] nvme_read: NVMe command")
    assert "sct=0x0" in str(exc) and "sc=0x80" in str(exc)
    assert "do not retry" in str(exc)
    assert "do not retry" not in str(NvmeError(0x0080))


@pytest.mark.parametrize("status", [-1, 0x8000])
def test_nvme_error_rejects_bad_status(status: int) -> None:
    with pytest.raises(ValueError):
        NvmeError(status)
