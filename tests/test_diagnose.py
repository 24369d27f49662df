"""``python -m ringline``: the machine diagnosis (ringline/diagnose.py).

The refusal cases run in a child whose seccomp filter makes
``io_uring_setup`` fail (tests/support/seccomp.py), exactly as a container runtime's
default profile does.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import ringline
from ringline import diagnose as diag
from ringline.errors import classify_setup_error
from tests.support import paths
from tests.support import seccomp as _seccomp

SRC_DIR = Path(ringline.__file__).resolve().parent.parent

CHILD_TIMEOUT = 60
FEATURES = {"multishot_accept", "multishot_recv", "provided_buffer_ring",
            "pbuf_ring_incremental", "send_zc", "recvsend_bundle", "registered_ring_fd",
            "sqpoll", "fixed_files", "nvme_char_devices", "o_direct"}
URING_FEATURES = FEATURES - {"nvme_char_devices", "o_direct"}
CAUSES = {"disabled", "permission_denied", "not_supported", "kernel_too_old",
          "missing_opcode", "resource_limit", "setup_failed"}


def _kernel() -> tuple[int, int]:
    major, minor = os.uname().release.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC_DIR), str(paths.SUPPORT_DIR)])}


def _run(args: list[str], code: str | None = None, cwd: Path | None = None,
         **kw: Any) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-c", code] if code is not None else [
        sys.executable, "-m", "ringline", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=CHILD_TIMEOUT,
                          env=_env(), cwd=cwd, **kw)


def _json(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    try:
        return json.loads(proc.stdout)  # type: ignore[no-any-return]
    except json.JSONDecodeError:
        pytest.fail(f"not JSON (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


def _denied_child(err: int, tmp_path: Path,
                  nr: int = _seccomp.NR_IO_URING_SETUP) -> tuple[int, dict[str, Any]]:
    """`python -m ringline --json` in a child whose filter denies syscall ``nr``
    (io_uring_setup unless told otherwise) with ``err``."""
    try:
        _seccomp.audit_arch()
    except _seccomp.SeccompUnavailable as exc:
        pytest.skip(str(exc))
    code = textwrap.dedent(f"""\
        import runpy, sys, seccomp as _seccomp
        try:
            _seccomp.deny_syscall({nr}, {err})
        except _seccomp.SeccompUnavailable as exc:
            sys.stderr.write("SECCOMP-UNAVAILABLE %s" % exc)
            raise SystemExit(99)
        assert _seccomp.io_uring_setup_errno() == ({err} if {nr} == 425 else 0)
        sys.argv = ["ringline", "--json"]
        runpy.run_module("ringline", run_name="__main__")
        """)
    proc = _run([], code=code, cwd=tmp_path)
    if proc.returncode == 99 and "SECCOMP-UNAVAILABLE" in proc.stderr:
        pytest.skip(proc.stderr)
    assert proc.stderr == "", proc.stderr
    return proc.returncode, _json(proc)


def _check_shape(d: dict[str, Any]) -> None:
    """The documented keys, with the documented types."""
    assert set(d) == {"kernel", "python", "io_uring", "features", "limits", "cpu",
                      "backend", "exit_status"}
    assert d["kernel"]["release"] == os.uname().release
    assert d["kernel"]["machine"] == os.uname().machine
    io = d["io_uring"]
    assert isinstance(io["usable"], bool)
    for key in ("errno", "sysctl_io_uring_disabled", "sysctl_io_uring_group",
                "seccomp_mode", "seccomp_filters", "opcodes_supported"):
        assert io[key] is None or isinstance(io[key], int), key
    for key in ("errno_name", "cause", "detail", "message", "fix"):
        assert (io[key] is None) == io["usable"], key
        assert io[key] is None or isinstance(io[key], str), key
    assert io["cause"] is None or io["cause"] in CAUSES
    for key in ("setup_flags", "ring_features", "missing_opcodes",
                "missing_optional_opcodes"):
        assert isinstance(io[key], list) and all(isinstance(x, str) for x in io[key]), key
    assert set(d["features"]) == FEATURES
    for name, feat in d["features"].items():
        assert feat["supported"] in (True, False, None), name
        assert isinstance(feat["detail"], str) and feat["detail"], name
    assert isinstance(d["features"]["nvme_char_devices"]["devices"], list)
    assert isinstance(d["features"]["o_direct"]["directory"], str)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    nofile = d["limits"]["nofile"]
    assert (nofile["soft"], nofile["hard"]) == tuple(
        None if v == resource.RLIM_INFINITY else v for v in (soft, hard))
    assert isinstance(nofile["connections_per_worker"], int)
    memlock = d["limits"]["memlock"]
    msoft, mhard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    assert (memlock["soft"], memlock["hard"]) == tuple(
        None if v == resource.RLIM_INFINITY else v for v in (msoft, mhard))
    assert isinstance(memlock["allows"], str) and isinstance(nofile["allows"], str)
    assert d["cpu"]["count"] == len(os.sched_getaffinity(0))
    assert 1 <= d["cpu"]["suggested_workers"] <= d["cpu"]["count"]
    # A pure-Python install (no extension) runs portable whatever the kernel allows.
    assert d["backend"]["auto"] == (
        "uring" if io["usable"] and d["backend"]["extension"] else "portable")
    assert d["exit_status"] == (0 if io["usable"] else 1)


def test_json_on_this_machine(tmp_path: Path) -> None:
    proc = _run(["--json"], cwd=tmp_path)
    d = _json(proc)
    assert proc.returncode == 0, proc.stdout
    assert proc.stderr == ""
    _check_shape(d)
    io = d["io_uring"]
    assert io["usable"] is True
    assert d["backend"]["auto"] == ("uring" if d["backend"]["extension"] else "portable")
    assert set(io["setup_flags"]) == {"COOP_TASKRUN", "TASKRUN_FLAG", "SINGLE_ISSUER",
                                      "DEFER_TASKRUN", "SUBMIT_ALL"}
    assert {"NODROP", "EXT_ARG"} <= set(io["ring_features"])
    assert io["missing_opcodes"] == []
    assert io["opcodes_supported"] >= len(diag.REQUIRED_OPCODES)
    feats = d["features"]
    assert feats["o_direct"]["directory"] == str(tmp_path)
    assert feats["o_direct"]["supported"] is not None
    assert list(tmp_path.iterdir()) == []         # the O_DIRECT test file is gone
    if _kernel() >= (6, 12):
        # Everything the loop can use exists on 6.12+ (INC is the newest).
        for name in URING_FEATURES:
            assert feats[name]["supported"] is True, (name, feats[name])


def test_readable_report_and_subcommand_forms(tmp_path: Path) -> None:
    proc = _run([], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "io_uring        usable" in out
    built = diag._extension_missing() is None       # False on a pure-Python install
    assert f"backend auto    {'uring' if built else 'portable'}" in out
    assert ("extension       NOT BUILT" in out) is not built
    assert os.uname().release in out
    for label in diag._LABELS.values():
        assert label in out
    assert "RLIMIT_MEMLOCK" in out and "RLIMIT_NOFILE" in out
    assert "suggested workers: " in out
    # Explicit sub-command, with --json on either side of it.
    for args in (["diagnose", "--json"], ["--json", "diagnose"]):
        proc = _run(args, cwd=tmp_path)
        assert proc.returncode == 0
        assert _json(proc)["backend"]["auto"] == ("uring" if built else "portable")
    proc = _run(["diagnose"], cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith("ringline diagnosis")
    assert _run(["nonsense"]).returncode == 2


def test_seccomp_eperm_is_reported_as_refused(tmp_path: Path) -> None:
    rc, d = _denied_child(errno.EPERM, tmp_path)
    assert rc == 1
    _check_shape(d)
    io = d["io_uring"]
    assert io["usable"] is False
    assert io["errno"] == errno.EPERM and io["errno_name"] == "EPERM"
    # The same classification as the loop's own refusal (here the sysctl is 0
    # or absent, so EPERM means seccomp or an LSM).
    expected = classify_setup_error(errno.EPERM, disabled_sysctl=0).cause
    if (io["sysctl_io_uring_disabled"] or 0) == 0:
        assert io["cause"] == expected == "permission_denied"
        assert io["seccomp_mode"] == 2 and io["seccomp_filters"] >= 1
        assert "seccomp filter" in io["detail"]
        assert "seccomp" in io["fix"] and "io_uring_setup" in io["fix"]
    assert d["backend"]["auto"] == "portable"
    for name in URING_FEATURES:
        assert d["features"][name]["supported"] is None
    # Probes that do not need io_uring still ran.
    assert d["features"]["o_direct"]["supported"] is not None
    assert list(tmp_path.iterdir()) == []


def test_seccomp_enosys_is_reported_as_not_supported(tmp_path: Path) -> None:
    rc, d = _denied_child(errno.ENOSYS, tmp_path)
    assert rc == 1
    _check_shape(d)
    io = d["io_uring"]
    assert io["usable"] is False
    assert io["errno_name"] == "ENOSYS"
    assert io["cause"] == classify_setup_error(errno.ENOSYS).cause == "not_supported"
    assert "ENOSYS" in io["detail"] and "seccomp" in io["detail"]
    assert d["backend"]["auto"] == "portable"
    assert d["exit_status"] == 1


def test_a_denied_io_uring_enter_is_a_refusal_too(tmp_path: Path) -> None:
    # Setup alone succeeding is not enough: the loop needs io_uring_enter.
    rc, d = _denied_child(errno.EPERM, tmp_path, nr=_seccomp.NR_IO_URING_ENTER)
    assert rc == 1
    _check_shape(d)
    io = d["io_uring"]
    assert io["usable"] is False and io["errno_name"] == "EPERM"
    assert io["cause"] == "permission_denied"
    assert "io_uring_enter failed with EPERM" in io["detail"]
    assert d["backend"]["auto"] == "portable"


def test_diagnose_leaves_nothing_behind(tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    diag.diagnose()   # warm-up: imports, lazily loaded libc

    def state() -> tuple[list[str], int]:
        fds = sorted(os.listdir("/proc/self/fd"))
        with open("/proc/self/maps") as f:
            return fds, len(f.readlines())

    before = state()
    for _ in range(3):
        d = diag.diagnose()
    assert state() == before
    assert list(tmp_path.iterdir()) == []
    assert d["features"]["o_direct"]["directory"] == str(tmp_path)


def test_registered_ring_fd_is_unregistered() -> None:
    # A task may register at most 16 ring fds: without the unregistration,
    # the 17th probe would be refused.
    if _kernel() < (5, 18):
        pytest.skip("IORING_REGISTER_RING_FDS needs 5.18")
    results = [diag._probe_registered_ring(diag.DEFAULT_SETUP_FLAGS)["supported"]
               for _ in range(40)]
    assert results == [True] * 40


def test_limits_say_what_they_allow(tmp_path: Path) -> None:
    code = textwrap.dedent("""\
        import json, resource
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 4096))
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (8 << 20, 8 << 20))
        from ringline import diagnose as d
        print(json.dumps([d._limits_section(0), d._limits_section(1 << 14)]))
        """)
    proc = _run([], code=code, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    plain, ipc_lock = json.loads(proc.stdout)
    nofile = plain["nofile"]
    assert (nofile["soft"], nofile["hard"]) == (1024, 4096)
    # The soft limit sizes the fixed-file table (raised only on request).
    assert nofile["connections_per_worker"] == 1024 - 64
    assert "raise_fd_limit" in nofile["allows"]
    assert "does not" in nofile["allows"] and "max_connections" in nofile["allows"]
    assert plain["memlock"]["registered_buffers"] == 8
    assert "(8 here)" in plain["memlock"]["allows"]
    assert ipc_lock["memlock"]["registered_buffers"] is None
    assert "CAP_IPC_LOCK" in ipc_lock["memlock"]["allows"]


def test_runs_without_the_compiled_extension(tmp_path: Path) -> None:
    # A stand-in package (no __init__, so none of the compiled modules load)
    # and an import hook that refuses them: what a pure-Python build sees.
    code = textwrap.dedent(f"""\
        import importlib.abc, json, sys, types
        COMPILED_PKGS = ("ringline._core", "ringline._net", "ringline.native",
                         "ringline.aio", "ringline.files")
        class NoCompiled(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.startswith(COMPILED_PKGS):
                    raise ImportError("compiled module " + name + " refused")
                return None
        sys.meta_path.insert(0, NoCompiled())
        pkg = types.ModuleType("ringline")
        pkg.__path__ = [{str(SRC_DIR / "ringline")!r}]
        sys.modules["ringline"] = pkg
        from ringline.__main__ import main
        rc = main(["--json"])
        loaded = sorted(m for m in sys.modules if m.startswith(COMPILED_PKGS))
        sys.stderr.write(json.dumps({{"rc": rc, "loaded": loaded}}))
        """)
    proc = _run([], code=code, cwd=tmp_path)
    info = json.loads(proc.stderr)
    assert info == {"rc": 0, "loaded": []}
    assert _json(proc)["io_uring"]["usable"] is True


def test_constants_match_the_compiled_ring() -> None:
    ring = pytest.importorskip("ringline._core.ring")
    assert diag.DEFAULT_SETUP_FLAGS == ring.DEFAULT_FLAGS
    assert diag.REQUIRED_OPCODES == ring.REQUIRED_OPCODES
    for name, number in ring.OPCODES.items():
        assert diag.OPCODES[name] == number, name


def test_sysctl_causes_and_fixes() -> None:
    # The sysctl cannot be flipped under a shared test machine; check that the
    # words the report uses follow errors.classify_setup_error's verdicts.
    off = classify_setup_error(errno.EPERM, disabled_sysctl=2)
    assert off.cause == "disabled"
    assert "kernel.io_uring_disabled=0" in diag._fix(off.cause, 2, None, False)
    group = classify_setup_error(errno.EPERM, disabled_sysctl=1, group_allowed=False)
    assert group.cause == "disabled"
    assert "group 1234" in diag._fix(group.cause, 1, 1234, False)
    assert "kernel.io_uring_disabled=2" in diag._cause_detail(errno.EPERM, 0, 0, 2)
    assert "LSM" in diag._cause_detail(errno.EPERM, 0, 0, 0)


def test_cpu_quota_from_cgroup_v2_and_v1(tmp_path: Path) -> None:
    # A made-up /proc/self/cgroup and cgroup tree for each version.
    v2 = tmp_path / "v2"
    (v2 / "fs" / "app").mkdir(parents=True)
    (v2 / "cgroup").write_text("0::/app\n")
    (v2 / "fs" / "app" / "cpu.max").write_text("250000 100000\n")
    assert diag._cpu_quota(str(v2 / "cgroup"), str(v2 / "fs")) == 2.5
    (v2 / "fs" / "app" / "cpu.max").write_text("max 100000\n")
    assert diag._cpu_quota(str(v2 / "cgroup"), str(v2 / "fs")) is None
    v1 = tmp_path / "v1"
    (v1 / "fs" / "cpu,cpuacct" / "app").mkdir(parents=True)
    (v1 / "cgroup").write_text("4:memory:/app\n3:cpu,cpuacct:/app\n0::/\n")
    (v1 / "fs" / "cpu,cpuacct" / "app" / "cpu.cfs_quota_us").write_text("50000\n")
    (v1 / "fs" / "cpu,cpuacct" / "app" / "cpu.cfs_period_us").write_text("100000\n")
    assert diag._cpu_quota(str(v1 / "cgroup"), str(v1 / "fs")) == 0.5
    (v1 / "fs" / "cpu,cpuacct" / "app" / "cpu.cfs_quota_us").write_text("-1\n")
    assert diag._cpu_quota(str(v1 / "cgroup"), str(v1 / "fs")) is None
