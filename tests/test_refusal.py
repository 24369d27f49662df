"""io_uring refusal must surface as a *typed* error from ``new_event_loop()``.

The real thing: a child process installs a seccomp filter that makes
``io_uring_setup`` fail (see ``tests/support/seccomp.py``), then asks ringline for a
loop. The filter itself is validated without ringline, so these tests are
useful before the loop exists.

ringline-dependent tests skip while ``ringline`` cannot be imported, except
under ``CI=true``, where a missing module fails the test instead.
"""

from __future__ import annotations

import errno
import importlib
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import pytest

from tests.support import paths
from tests.support import seccomp as _seccomp

CHILD_TIMEOUT = 60


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _require(modname: str) -> ModuleType:
    """``pytest.importorskip`` that fails instead of skipping under CI=true."""
    if _in_ci():
        try:
            return importlib.import_module(modname)
        except ImportError as exc:
            pytest.fail(f"CI=true but {modname!r} cannot be imported: {exc!r}")
    return pytest.importorskip(modname)


def _require_arch() -> None:
    try:
        _seccomp.audit_arch()
    except _seccomp.SeccompUnavailable as exc:
        pytest.skip(str(exc))


def _run_child(body: str, extra_path: Sequence[str] = ()) -> dict:
    """Run ``body`` in a fresh interpreter; it must ``emit(dict)`` once.

    ``_seccomp`` (tests/support/seccomp.py, stdlib only: importing it
    imports nothing of ringline) and the directories in ``extra_path`` are importable in the
    child. A ``{"seccomp_unavailable": ...}`` answer turns into a skip.
    """
    prelude = textwrap.dedent(
        """\
        import json, sys
        sys.path[:0] = {paths!r}
        import seccomp as _seccomp

        def emit(obj):
            sys.stdout.write("\\n@@RESULT@@" + json.dumps(obj) + "\\n")
            sys.stdout.flush()

        def deny(nr, err):
            try:
                _seccomp.deny_syscall(nr, err)
            except _seccomp.SeccompUnavailable as exc:
                emit({{"seccomp_unavailable": str(exc)}})
                raise SystemExit(0)
        """
    ).format(paths=[str(paths.SUPPORT_DIR), *extra_path])
    code = prelude + textwrap.dedent(body)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        check=False,
        text=True,
        timeout=CHILD_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    marker = "@@RESULT@@"
    results = [ln for ln in proc.stdout.splitlines() if ln.startswith(marker)]
    diag = (
        f"child exit status {proc.returncode}\n"
        f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    )
    assert proc.returncode == 0, diag
    assert len(results) == 1, diag
    result = json.loads(results[0][len(marker) :])
    if "seccomp_unavailable" in result:
        pytest.skip(f"cannot install a seccomp filter here: {result['seccomp_unavailable']}")
    result["_diag"] = diag
    return result


# --------------------------------------------------------------------------
# The filter itself (no ringline needed).
# --------------------------------------------------------------------------


def test_seccomp_filter_encoding() -> None:
    prog = _seccomp.build_deny_filter(425, errno.EPERM, _seccomp.AUDIT_ARCH_AARCH64)
    assert len(prog) % 8 == 0
    insns = [prog[i : i + 8] for i in range(0, len(prog), 8)]
    ins = _seccomp._SOCK_FILTER.pack
    ld_abs, jeq_k, ret_k = 0x20, 0x15, 0x06
    assert insns == [
        ins(ld_abs, 0, 0, 4),  # A = seccomp_data.arch
        ins(jeq_k, 0, 3, _seccomp.AUDIT_ARCH_AARCH64),
        ins(ld_abs, 0, 0, 0),  # A = seccomp_data.nr
        ins(jeq_k, 0, 1, 425),
        ins(ret_k, 0, 0, 0x00050000 | errno.EPERM),  # SECCOMP_RET_ERRNO | EPERM
        ins(ret_k, 0, 0, 0x7FFF0000),  # SECCOMP_RET_ALLOW
    ]
    x86 = _seccomp.build_deny_filter(425, errno.EPERM, _seccomp.AUDIT_ARCH_X86_64)
    assert x86[-16:] == prog[-16:]
    with pytest.raises(ValueError):
        _seccomp.build_deny_filter(425, 0)
    with pytest.raises(ValueError):
        _seccomp.build_deny_filter(425, 0x10000)


@pytest.mark.parametrize(
    "err",
    [errno.EPERM, errno.ENOSYS, errno.EHOSTDOWN],
    ids=["EPERM", "ENOSYS", "EHOSTDOWN"],
)
def test_seccomp_filter_blocks_io_uring_setup(err: int) -> None:
    """``syscall(425, 8, params)`` returns -1/err once the filter is in place.

    EHOSTDOWN can only come from our filter, which proves the filter (not the
    kernel's own io_uring policy) produced the error. Other syscalls,
    including the neighbouring io_uring_enter (426), are left alone.
    """
    _require_arch()
    result = _run_child(
        f"""
        import ctypes, os
        before = _seccomp.io_uring_setup_errno()
        deny({_seccomp.NR_IO_URING_SETUP}, {err})

        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        params = ctypes.create_string_buffer(120)
        ctypes.set_errno(0)
        ret = libc.syscall(ctypes.c_long(425), ctypes.c_uint(8), params)
        setup_errno = ctypes.get_errno()

        # io_uring_enter(fd=-1, ...) must reach the kernel: EBADF, not err.
        ctypes.set_errno(0)
        enter = libc.syscall(ctypes.c_long(426), ctypes.c_int(-1), 0, 0, 0, None, 0)
        enter_errno = ctypes.get_errno()

        status = open("/proc/self/status").read()
        mode = [ln.split()[1] for ln in status.splitlines() if ln.startswith("Seccomp:")]
        emit({{
            "before": before, "ret": ret, "errno": setup_errno,
            "enter": enter, "enter_errno": enter_errno,
            "pid_ok": os.getpid() > 0, "mode": mode,
        }})
        """
    )
    diag = result["_diag"]
    assert result["ret"] == -1, diag
    assert result["errno"] == err, diag
    assert result["enter"] == -1 and result["enter_errno"] == errno.EBADF, diag
    assert result["pid_ok"], diag
    assert result["mode"] in ([], ["2"]), diag  # 2 == SECCOMP_MODE_FILTER


def test_seccomp_filter_is_inherited_by_threads() -> None:
    """A thread started after the filter sees it too (ringline may use threads)."""
    _require_arch()
    result = _run_child(
        f"""
        import threading
        deny({_seccomp.NR_IO_URING_SETUP}, {errno.EPERM})
        out = []
        t = threading.Thread(target=lambda: out.append(_seccomp.io_uring_setup_errno()))
        t.start(); t.join()
        emit({{"thread_errno": out[0]}})
        """
    )
    assert result["thread_errno"] == errno.EPERM, result["_diag"]


# --------------------------------------------------------------------------
# ringline: the typed errors.
# --------------------------------------------------------------------------


@pytest.fixture
def errors_mod() -> ModuleType:
    return _require("ringline.errors")


def _as_class(obj: object) -> type:
    return obj if isinstance(obj, type) else type(obj)


def test_refusal_errors_share_a_base(errors_mod: ModuleType) -> None:
    base = errors_mod.IoUringUnavailable
    for name in ("IoUringPermissionDenied", "IoUringNotSupported", "IoUringDisabled"):
        cls = getattr(errors_mod, name)
        assert issubclass(cls, base), f"{name} must subclass IoUringUnavailable"


def test_classify_sysctl_disabled(errors_mod: ModuleType) -> None:
    """EPERM while kernel.io_uring_disabled=2 is the sysctl, not seccomp."""
    got = errors_mod.classify_setup_error(errno.EPERM, disabled_sysctl=2)
    assert issubclass(_as_class(got), errors_mod.IoUringDisabled), got


def test_classify_eperm_without_sysctl_is_permission_denied(
    errors_mod: ModuleType,
) -> None:
    got = errors_mod.classify_setup_error(errno.EPERM, disabled_sysctl=0)
    assert issubclass(_as_class(got), errors_mod.IoUringPermissionDenied), got
    assert not issubclass(_as_class(got), errors_mod.IoUringDisabled), got


def _io_uring_sysctl() -> int | None:
    try:
        return int(Path("/proc/sys/kernel/io_uring_disabled").read_text().strip())
    except (OSError, ValueError):
        return None


def _new_loop_under_filter(err: int) -> dict:
    ringline = _require("ringline")
    if not hasattr(ringline, "new_event_loop"):
        msg = "ringline.new_event_loop() does not exist yet"
        if _in_ci():
            pytest.fail(f"CI=true but {msg}")
        pytest.skip(msg)
    _require("ringline.errors")
    _require_arch()
    sysctl = _io_uring_sysctl()
    if sysctl:
        pytest.skip(f"kernel.io_uring_disabled={sysctl}: EPERM would be ambiguous")
    # Make the child import the very ringline this process imported.
    pkg_root = str(Path(next(iter(ringline.__path__))).resolve().parent)
    return _run_child(
        f"""
        deny({_seccomp.NR_IO_URING_SETUP}, {err})
        # Import only after the filter: a sandboxed process starts that way.
        import ringline
        import ringline.errors as E

        def isa(exc, name):
            cls = getattr(E, name, None)
            return isinstance(exc, cls) if isinstance(cls, type) else None

        try:
            # backend="uring": the typed error (auto would fall back to portable).
            loop = ringline.new_event_loop(backend="uring")
        except BaseException as exc:
            emit({{
                "raised": True,
                "type": f"{{type(exc).__module__}}.{{type(exc).__qualname__}}",
                "message": str(exc),
                "is_unavailable": isa(exc, "IoUringUnavailable"),
                "is_permission_denied": isa(exc, "IoUringPermissionDenied"),
                "is_not_supported": isa(exc, "IoUringNotSupported"),
                "is_disabled": isa(exc, "IoUringDisabled"),
                "is_oserror": isinstance(exc, OSError),
                "errno": getattr(exc, "errno", None),
            }})
        else:
            loop.close()
            emit({{"raised": False, "loop": type(loop).__qualname__}})
        """,
        extra_path=[pkg_root],
    )


def test_seccomp_eperm_raises_permission_denied() -> None:
    r = _new_loop_under_filter(errno.EPERM)
    diag = r["_diag"]
    assert r["raised"], f"new_event_loop() succeeded under the filter\n{diag}"
    assert r["is_permission_denied"], f"got {r['type']}: {r['message']}\n{diag}"
    assert r["is_unavailable"], diag
    assert not r["is_not_supported"] and not r["is_disabled"], r["type"]
    assert "seccomp" in r["message"].lower(), f"message should mention seccomp: {r['message']!r}"


def test_seccomp_enosys_raises_not_supported() -> None:
    r = _new_loop_under_filter(errno.ENOSYS)
    diag = r["_diag"]
    assert r["raised"], f"new_event_loop() succeeded under the filter\n{diag}"
    assert r["is_not_supported"], f"got {r['type']}: {r['message']}\n{diag}"
    assert r["is_unavailable"], diag
    assert not r["is_permission_denied"] and not r["is_disabled"], r["type"]


def _fallback_under_filter(body: str) -> dict:
    """Run ``body`` (which sets ``result``) under the EPERM filter, recording warnings."""
    ringline = _require("ringline")
    _require_arch()
    if _io_uring_sysctl():
        pytest.skip("kernel.io_uring_disabled is set")
    pkg_root = str(Path(next(iter(ringline.__path__))).resolve().parent)
    code = (
        f"deny({_seccomp.NR_IO_URING_SETUP}, {errno.EPERM})\n"
        "import asyncio, gc, warnings\n"
        "import ringline, ringline.errors\n"
        "async def main():\n"
        "    await asyncio.sleep(0)\n"
        "    return type(asyncio.get_running_loop()).__module__\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        + textwrap.indent(body, "    ") + "\n"
        "    gc.collect()\n"
        "emit({'result': result,\n"
        "      'warnings': [(w.category.__name__, str(w.message)) for w in caught]})\n"
    )
    return _run_child(code, extra_path=[pkg_root])


def test_run_with_fallback_uses_asyncio_with_one_warning() -> None:
    r = _fallback_under_filter("result = ringline.run(main(), fallback=True)")
    diag = r["_diag"]
    assert r["result"].startswith("asyncio"), diag
    assert len(r["warnings"]) == 1, diag
    category, message = r["warnings"][0]
    assert category == "RuntimeWarning", diag
    assert "io_uring" in message and "seccomp" in message.lower(), diag


def test_install_with_fallback_keeps_asyncio_with_one_warning() -> None:
    r = _fallback_under_filter(
        "ringline.install(fallback=True)\nresult = asyncio.run(main())")
    diag = r["_diag"]
    assert r["result"].startswith("asyncio"), diag
    assert [c for c, _ in r["warnings"]] == ["RuntimeWarning"], diag


def test_run_with_backend_uring_raises_the_typed_error() -> None:
    r = _fallback_under_filter(
        "coro = main()\n"
        "try:\n    ringline.run(coro, backend='uring')\n    result = 'ran'\n"
        "except ringline.errors.IoUringUnavailable as exc:\n    result = type(exc).__name__\n"
        "    coro.close()")
    assert r["result"] == "IoUringPermissionDenied", r["_diag"]
    assert r["warnings"] == [], r["_diag"]
