"""The source passes the linters the project uses: ruff, mypy and cython-lint
(``make lint``).

Both run as subprocesses from the interpreter running the suite, with the
configuration in pyproject.toml.  Without a linter installed the tests
are skipped, except under CI (``CI=true``), where that is a failure.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

from tests.support import paths

ROOT = paths.ROOT
TIMEOUT = 600


def _on_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def _tool(module: str) -> list[str]:
    """The command that runs ``module`` with this interpreter, or skip/fail."""
    if importlib.util.find_spec(module) is None:
        message = f"{module} is not installed for {sys.executable} (pip install -r requirements-dev.txt)"
        if _on_ci():
            pytest.fail(message + " — required under CI")
        pytest.skip(message)
    return [sys.executable, "-m", module]


def _run_tool(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    # The suite may run with PYTHONPATH pointing at a build tree; the tools
    # check the source tree only.
    env.pop("PYTHONPATH", None)
    env.pop("MYPYPATH", None)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT, check=False)


@pytest.mark.timeout(TIMEOUT)
def test_ruff() -> None:
    # No cache: a cached result does not notice that a module became
    # resolvable (a new stub), which changes how imports sort.
    proc = _run_tool([*_tool("ruff"), "check", "--no-cache", "src", "tests", "bench", "examples", "conformance"])
    assert proc.returncode == 0, f"ruff check failed:\n{proc.stdout}{proc.stderr}"


@pytest.mark.timeout(TIMEOUT)
def test_mypy() -> None:
    proc = _run_tool([*_tool("mypy"), "src/ringline"])
    assert proc.returncode == 0, f"mypy failed:\n{proc.stdout}{proc.stderr}"


@pytest.mark.timeout(TIMEOUT)
def test_cython_lint() -> None:
    sources = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "src" / "ringline").rglob("*")
                     if p.suffix in (".pyx", ".pxd"))
    assert sources
    # cython-lint runs pycodestyle as a program: the one beside this interpreter.
    env_path = os.pathsep.join([str(pathlib.Path(sys.executable).parent), os.environ.get("PATH", "")])
    _tool("cython_lint")       # skip/fail when missing
    cmd = [sys.executable, "-m", "cython_lint.cython_lint", *sources]
    env = dict(os.environ, PATH=env_path)
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT, check=False)
    assert proc.returncode == 0, f"cython-lint failed:\n{proc.stdout}{proc.stderr}"
