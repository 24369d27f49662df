"""The house rules of the package layout and a few slips fixed with it.

* ``_core`` and ``_net`` import nothing from the faces (native, aio, files):
  data flows one way, user call -> SQE -> kernel -> CQE -> dispatch.
* ``portable`` (the backend without io_uring) imports only itself and the
  shared policy modules: nothing compiled of the other layers, so it runs
  where the extension cannot load (its own ``_fastconn.pyx`` is checked
  too, and is optional: ``connection.py`` falls back without it).
* No layer hangs state on the loop by attribute name: per-loop state is a
  field declared in ``_core/loop.pxd``.
* A failed eventfd reports C's errno, not ctypes' private copy.
"""

from __future__ import annotations

import errno
import pathlib
import platform
import re
import subprocess
import sys
import textwrap

import pytest

import ringline
from ringline.config import Config
from tests.support import paths

SRC = pathlib.Path(ringline.__file__).resolve().parent
_IMPORT = re.compile(r"^\s*(?:from\s+ringline\.([\w.]+)\s+c?import|c?import\s+ringline\.([\w.]+))", re.M)

# What each lower layer may import from ringline (the policy modules at the
# top are shared by every layer).
ALLOWED = {
    "_core": {"_core", "errors", "config"},
    "_net": {"_core", "_net", "errors", "config"},
    "portable": {"portable", "_listen", "_shutdown", "_tls", "errors", "config"},
}


def _imports(path: pathlib.Path) -> set[str]:
    text = path.read_text()
    return {(a or b).split(".")[0] for a, b in _IMPORT.findall(text)}


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_lower_layers_import_no_face(layer: str) -> None:
    files = [p for p in (SRC / layer).rglob("*") if p.suffix in (".py", ".pyx", ".pxd", ".pyi")]
    assert files
    bad = {str(p.relative_to(SRC)): sorted(_imports(p) - ALLOWED[layer]) for p in files}
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, f"{layer} imports from layers above it: {bad}"


def test_the_import_rule_catches_a_face_import(tmp_path: pathlib.Path) -> None:
    # The check above can fail: a cimport of the native face is seen.
    p = tmp_path / "x.pyx"
    p.write_text("from ringline.native.task cimport Task\nimport ringline.aio.tcp\n")
    assert _imports(p) == {"native", "aio"}


def test_no_state_hung_on_the_loop_by_name() -> None:
    # getattr/setattr/__dict__ with a string on a loop, or the old names.
    pattern = re.compile(r"getattr\((?:self\.)?loop, \"_|_ringline_(?:io|dio_pool|nvme)|__dict__\.(?:get|setdefault|pop)\(\"_ring_(?:listeners|thread)")
    hits = [f"{p.relative_to(SRC)}:{n}" for p in SRC.rglob("*")
            if p.suffix in (".py", ".pyx", ".pxd")
            for n, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits, hits


def test_private_switches_are_config_fields() -> None:
    # The paths tests force (plain fds, plain buffer rings, zero-copy to a
    # local peer) are validated Config fields, not module globals.
    cfg = Config(_fixed_files=False, _recv_buffers_incremental=False, _zc_to_local_peers=True)
    assert (cfg._fixed_files, cfg._recv_buffers_incremental, cfg._zc_to_local_peers) == (False, False, True)
    with pytest.raises(ringline.errors.ConfigError):
        Config(_fixed_files=1)  # type: ignore[arg-type]


_NR_EVENTFD2 = {"x86_64": 290, "aarch64": 19}.get(platform.machine())


@pytest.mark.skipif(_NR_EVENTFD2 is None, reason="eventfd2's number unknown on this arch")
def test_a_failed_eventfd_reports_the_real_errno() -> None:
    # Before the fix the loop read ctypes' own errno (never set here) and
    # reported EMFILE whatever happened.
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(paths.SUPPORT_DIR)!r})
        import seccomp as _seccomp, ringline
        _seccomp.deny_syscall({_NR_EVENTFD2}, {errno.ENODEV})
        try:
            ringline.new_event_loop()
        except OSError as exc:
            print("errno", exc.errno, type(exc).__name__)
        else:
            print("no error")
        """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert f"errno {errno.ENODEV}" in proc.stdout, proc.stdout + proc.stderr
