"""The suite's own machinery: the autouse ``no_loop_errors`` fixture must fail
a test whose loop reported a failed handler, on every face, and spare one
marked ``expect_loop_errors``.  An inner pytest session runs in a fresh
interpreter on generated test files, with tests/conftest.py's fixture."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import ringline
from tests.support import paths

INNER_CONFTEST = """\
from tests.support.loop_errors import MARKER_HELP, no_loop_errors

__all__ = ["no_loop_errors"]


def pytest_configure(config):
    config.addinivalue_line("markers", MARKER_HELP)
"""

INNER_TESTS = '''\
import asyncio

import pytest

import ringline


async def _raise_in_a_completion_handler():
    loop = asyncio.get_running_loop()
    hit = []

    def boom(res, flags):
        hit.append(res)
        raise ValueError("boom in a completion handler")

    loop._nop(boom)                  # an io_uring NOP whose handler raises
    while not hit:
        await asyncio.sleep(0.001)
    await asyncio.sleep(0)


def test_completion_handler_raises():
    ringline.run(_raise_in_a_completion_handler())


@pytest.mark.expect_loop_errors
def test_completion_handler_raises_marked():
    ringline.run(_raise_in_a_completion_handler())


def test_callback_raises():
    async def main():
        asyncio.get_running_loop().call_soon(lambda: 1 / 0)
        await asyncio.sleep(0.01)
    ringline.run(main())


def test_native_handler_raises():
    async def handler(conn):
        raise LookupError("boom in a native handler")

    async def main():
        server = await ringline.serve(handler, "127.0.0.1", 0)
        client = await ringline.connect("127.0.0.1", server.port)
        assert await client.recv() == b""      # the failed handler closed it
        client.close()
        await server.shutdown(1.0)
    ringline.run(main())


def test_nothing_raises():
    async def main():
        await asyncio.sleep(0.01)
    ringline.run(main())
'''


def _inner_session(tmp_path: Path) -> dict[str, str]:
    """Run the generated tests; return {test name: PASSED/FAILED/ERROR}."""
    (tmp_path / "conftest.py").write_text(INNER_CONFTEST)
    (tmp_path / "test_inner.py").write_text(INNER_TESTS)
    pkg_parent = str(Path(ringline.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(paths.ROOT), pkg_parent]))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider", "-p", "no:randomly",
         "test_inner.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    outcomes: dict[str, str] = {}
    for m in re.finditer(r"^(PASSED|FAILED|ERROR) test_inner\.py::(\w+)", proc.stdout, re.M):
        # A test that failed at teardown shows PASSED and ERROR: ERROR wins.
        if outcomes.get(m[2]) != "ERROR":
            outcomes[m[2]] = m[1]
    assert set(outcomes) >= {"test_nothing_raises"}, proc.stdout + proc.stderr
    outcomes["_output"] = proc.stdout
    return outcomes


@pytest.mark.timeout(180)
def test_no_loop_errors_fails_a_test_whose_handler_raised(tmp_path: Path) -> None:
    got = _inner_session(tmp_path)
    out = got.pop("_output")
    assert got == {
        "test_completion_handler_raises": "ERROR",
        "test_completion_handler_raises_marked": "PASSED",
        "test_callback_raises": "ERROR",
        "test_native_handler_raises": "ERROR",
        "test_nothing_raises": "PASSED",
    }, out
    # The report names what failed.
    assert "Exception in completion handler" in out, out
    assert "boom in a completion handler" in out, out
    assert "boom in a native handler" in out, out
    assert "ZeroDivisionError" in out, out
