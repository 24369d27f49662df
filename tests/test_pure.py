"""The pure-Python install: ringline without its compiled extension.

Where the extension cannot be built (not Linux) or with ``RINGLINE_PURE=1``,
setup.py builds no extension and the build asks for no Cython; ``import
ringline`` still works, ``backend="auto"`` runs the portable backend (one
warning naming the missing extension) and ``backend="uring"`` raises
ExtensionNotBuilt.

The same child script checks that in a fresh interpreter two ways: in the
normal suite, under an import hook that refuses every compiled module; and
under ``make test-pure`` (``RINGLINE_EXPECT_PURE=1``) on the real pure
install, with no hook.  The build itself (a wheel made with Cython
unimportable) is checked from a copy of the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import ringline
from tests.support import paths

PURE = os.environ.get("RINGLINE_EXPECT_PURE") == "1"

#: Every compiled module, by its .pyx in the checkout.
COMPILED = sorted(
    "ringline." + ".".join(p.relative_to(paths.SRC / "ringline").with_suffix("").parts)
    for p in (paths.SRC / "ringline").rglob("*.pyx")
)

_HOOK = """
import importlib.abc, sys
class NoExtension(importlib.abc.MetaPathFinder):
    # What a pure install looks like: no compiled module can be found.
    def find_spec(self, name, path=None, target=None):
        if name in COMPILED:
            raise ModuleNotFoundError("no module named " + repr(name), name=name)
        return None
sys.meta_path.insert(0, NoExtension())
"""

_CHILD = """
import asyncio, importlib.machinery, json, os, sys, tempfile, threading, socket, warnings
warnings.simplefilter("always")
caught = []
warnings.showwarning = lambda m, c, *a, **k: caught.append((c.__name__, str(m)))
out = {}

import ringline
from ringline import backends, errors, fs, metrics, portable

out["backend_before"] = ringline.backend()
out["cause"] = backends.cause()


async def echo(conn: ringline.Connection) -> None:
    while data := await conn.recv():
        conn.send_nowait(data)


async def main():
    server = await ringline.serve(echo, "127.0.0.1", 0)
    conn = await ringline.connect("127.0.0.1", server.port)
    payload = os.urandom(300_000)
    conn.send_nowait(payload)
    back = await conn.recv_exactly(len(payload))
    conn.close()
    await server.shutdown(2.0)
    out["echo"] = back == payload
    out["conn_is_public_class"] = isinstance(conn, ringline.Connection)
    out["running_backend"] = ringline.backend()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "f")
        async with fs.open(path, "wb") as f:
            await f.write(payload[:70_000])
        async with fs.open(path, "rb") as f:
            out["fs"] = await f.read() == payload[:70_000]
    out["metrics"] = sorted(vars(type(metrics.snapshot()))["__dataclass_fields__"])
    return portable.statistics()["accepted"]

out["accepted"] = ringline.run(main())
ringline.run(asyncio.sleep(0))            # a second loop: no second warning

for what, call in [("uring", lambda: ringline.new_event_loop(backend="uring")),
                   ("EventLoop", ringline.EventLoop),
                   ("install", ringline.install)]:
    try:
        call()
    except errors.ExtensionNotBuilt as exc:
        out[what] = [type(exc).__name__, exc.cause, isinstance(exc, errors.IoUringUnavailable)]
ringline.install(fallback=True)          # warns, keeps asyncio's policy
out["policy"] = type(asyncio.get_event_loop_policy()).__module__

class Echo(ringline.Handler):
    async def on_accept(self, conn):
        await echo(conn)

handle = ringline.ShutdownHandle()
worker = threading.Thread(target=ringline.launch, args=(Echo,),
                          kwargs={"bind": ("127.0.0.1", 0), "shutdown": handle,
                                  "config": ringline.Config(shutdown_timeout=1.0),
                                  "handle_signals": False})
worker.start()
try:
    assert handle.wait_ready(10)
    with socket.create_connection(handle.bound, timeout=10) as s:
        s.sendall(b"launched")
        out["launch"] = s.recv(100) == b"launched"
finally:
    handle.shutdown()
    worker.join(10)

import ringline.workers
out["loaded_compiled"] = sorted(
    name for name, m in sys.modules.items() if name.startswith("ringline")
    and str(getattr(m, "__file__", "")).endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)))
out["warnings"] = [w for w in caught if "not available in this install" in w[1]]
print(json.dumps(out))
"""


def _env() -> dict[str, str]:
    """The children import the ringline this session imported (from any cwd)."""
    env = dict(os.environ)
    env.pop("RINGLINE_BACKEND", None)
    env["PYTHONPATH"] = str(Path(ringline.__file__).resolve().parents[1])
    return env


def _child(hook: bool, tmp_path: Path) -> dict:
    code = (f"COMPILED = {COMPILED!r}\n" + _HOOK if hook else "") + _CHILD
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path, env=_env())
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("hook", [True, False], ids=["compiled-refused", "pure-install"])
def test_import_and_run_without_the_extension(hook: bool, tmp_path: Path) -> None:
    if not hook and not PURE:
        pytest.skip("the real pure install is tested by `make test-pure`")
    out = _child(hook, tmp_path)
    assert out["backend_before"] == out["running_backend"] == "portable"
    assert "ExtensionNotBuilt" in out["cause"] and "RINGLINE_PURE" in out["cause"]
    assert out["echo"] and out["fs"] and out["launch"]
    assert out["conn_is_public_class"]
    assert out["accepted"] == 1
    assert "streams" in out["metrics"] and "sqes" in out["metrics"]
    for what in ("uring", "EventLoop", "install"):
        assert out[what] == ["ExtensionNotBuilt", "extension_not_built", True], what
    assert out["policy"] == "asyncio.unix_events"
    # One warning from the two runs (auto falls back once per process, naming
    # the cause), one from install(fallback=True).
    assert [c for c, _ in out["warnings"]] == ["RuntimeWarning", "RuntimeWarning"]
    assert "portable backend" in out["warnings"][0][1]
    assert out["loaded_compiled"] == []


def test_diagnosis_reports_the_missing_extension(tmp_path: Path) -> None:
    # python -m ringline: the kernel may allow io_uring, but auto runs
    # portable in a pure install, and says why.
    code = ((f"COMPILED = {COMPILED!r}\n" + _HOOK) if not PURE else "") + (
        "import json, sys\nfrom ringline.__main__ import main\n"
        "rc = main(['--json'])\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path, env=_env())
    assert proc.returncode in (0, 1), proc.stderr
    info = json.loads(proc.stdout)["backend"]
    assert info["auto"] == "portable" and info["extension"] is False
    assert "ringline._core.loop" in info["extension_missing"]


@pytest.mark.skipif(PURE, reason="the normal build's diagnosis")
def test_diagnosis_sees_the_extension_when_built() -> None:
    from ringline import diagnose
    info = diagnose.diagnose()["backend"]
    assert info["extension"] is True and info["extension_missing"] is None


# ---------------------------------------------------------------------------
# the build
# ---------------------------------------------------------------------------

def _backend_call(hook: str, env_pure: bool, cwd: Path, block_cython: bool = False,
                  arg: str = "") -> subprocess.CompletedProcess[str]:
    code = ("import sys\n"
            + ("sys.modules['Cython'] = None      # `import Cython` fails\n" if block_cython
               else "")
            + "sys.path.insert(0, 'buildsys')\nimport ringline_build\n"
            + f"print(repr(ringline_build.{hook}({arg})))\n")
    env = dict(os.environ)
    env.pop("RINGLINE_PURE", None)
    if env_pure:
        env["RINGLINE_PURE"] = "1"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=cwd, env=env)


def test_build_requires_cython_only_for_the_extension() -> None:
    for hook in ("get_requires_for_build_wheel", "get_requires_for_build_editable"):
        # pip asks before it installs Cython: the hooks run setup.py without it.
        pure = _backend_call(hook, True, paths.ROOT, block_cython=True)
        full = _backend_call(hook, False, paths.ROOT, block_cython=True)
        assert pure.returncode == full.returncode == 0, pure.stderr + full.stderr
        assert "Cython" not in pure.stdout, hook
        assert ("Cython>=3.0.10" in full.stdout) == sys.platform.startswith("linux"), hook
    # An sdist ships the .pyx sources and cythonizes nothing.
    sdist = _backend_call("get_requires_for_build_sdist", False, paths.ROOT, block_cython=True)
    assert sdist.returncode == 0 and "Cython" not in sdist.stdout, sdist.stderr
    static = (paths.ROOT / "pyproject.toml").read_text()
    assert 'requires = ["setuptools>=68", "wheel"]' in static


def test_pure_wheel_builds_without_cython(tmp_path: Path) -> None:
    # A copy of the checkout's build inputs (no built modules, no build dir).
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("setup.py", "pyproject.toml", "MANIFEST.in", "README.md"):
        shutil.copy(paths.ROOT / name, tree / name)
    shutil.copytree(paths.ROOT / "buildsys", tree / "buildsys",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(paths.SRC, tree / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.c", "*.egg-info"))
    out = tmp_path / "dist"
    # Building the extension needs Cython: with it unimportable that fails...
    full = _backend_call("build_wheel", False, tree, block_cython=True, arg=repr(str(out)))
    if sys.platform.startswith("linux"):
        assert full.returncode != 0 and "Cython" in full.stderr
    # ...while the pure build does not import it.
    pure = _backend_call("build_wheel", True, tree, block_cython=True, arg=repr(str(out)))
    assert pure.returncode == 0, pure.stderr
    wheel = out / eval(pure.stdout.strip().splitlines()[-1])
    assert wheel.name.endswith("-py3-none-any.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "ringline/portable/serve.py" in names and "ringline/_noext.py" in names
    assert "ringline/py.typed" in names
    assert not [n for n in names if n.endswith((".so", ".pyd", ".pyx", ".c"))]
