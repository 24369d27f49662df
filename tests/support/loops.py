"""Event-loop factories and fixtures for tests that run on every loop.

``tests/aio/conftest.py`` makes the fixtures (``loop_name``, ``loop_factory``,
``loop_exceptions``, ``loop``) available to every test under ``tests/aio/``;
a test elsewhere that wants them imports them into its module.

Every test that uses ``loop_name``, ``loop_factory`` or ``loop`` is run once
per entry of :data:`LOOP_FACTORIES`, plus once for "ringline" even when
ringline cannot be imported: that parameter is then *skipped* with the import
error as the reason -- or *failed* when the environment variable ``CI=true``
is set, so that a broken ringline build cannot hide behind skips in CI.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import os
import shutil
import sys
from collections.abc import Callable
from typing import Any

import pytest

__all__ = [
    "IN_CI",
    "LOOP_FACTORIES",
    "LOOP_FACTORY_SPECS",
    "LOOP_PARAMS",
    "RINGLINE_IMPORT_ERROR",
    "LoopExceptionRecorder",
    "loop",
    "loop_exceptions",
    "loop_factory",
    "loop_name",
    "require_program",
    "require_ringline",
    "ringline_unavailable",
]

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

#: True when running under CI (``CI=true``): missing pieces fail, not skip.
IN_CI = os.environ.get("CI", "").strip().lower() == "true"

#: name -> "module:attribute" of a zero-argument loop factory.  The string
#: form lets a subprocess build the same loop without importing this module.
LOOP_FACTORY_SPECS: dict[str, str] = {
    "asyncio": "asyncio:SelectorEventLoop",
    "uvloop": "uvloop:new_event_loop",
    "ringline": "ringline:new_event_loop",
}

#: name -> loop factory, for every loop that can be imported right now.
LOOP_FACTORIES: dict[str, LoopFactory] = {}

#: "ExcType: message" if ``import ringline`` failed, else None.
RINGLINE_IMPORT_ERROR: str | None = None

#: The ringline module, or None if it cannot be imported.
ringline: Any = None


def _resolve(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module_name), attr)


LOOP_FACTORIES["asyncio"] = _resolve(LOOP_FACTORY_SPECS["asyncio"])

try:
    LOOP_FACTORIES["uvloop"] = _resolve(LOOP_FACTORY_SPECS["uvloop"])
except ImportError:  # uvloop is optional: simply not tested against.
    pass

try:
    LOOP_FACTORIES["ringline"] = _resolve(LOOP_FACTORY_SPECS["ringline"])
    ringline = importlib.import_module("ringline")
except Exception as exc:  # any failure (ImportError, SyntaxError, missing attr...)
    RINGLINE_IMPORT_ERROR = f"{type(exc).__name__}: {exc}"


def ringline_unavailable() -> None:
    """Skip the current test because ringline is missing (fail under CI)."""
    msg = f"ringline is not importable: {RINGLINE_IMPORT_ERROR}"
    if IN_CI:
        pytest.fail(f"{msg} (CI=true, so this is a failure)", pytrace=False)
    pytest.skip(msg)


def require_ringline() -> Any:
    """Return the ringline module, or skip/fail like :func:`ringline_unavailable`."""
    if ringline is None:
        ringline_unavailable()
    return ringline


def _make_params() -> list[Any]:
    params = [pytest.param(name, id=name) for name in LOOP_FACTORIES]
    if "ringline" not in LOOP_FACTORIES:
        if IN_CI:
            # No skip mark: the ``loop_name`` fixture fails the test instead.
            params.append(pytest.param("ringline", id="ringline"))
        else:
            reason = f"ringline is not importable: {RINGLINE_IMPORT_ERROR}"
            params.append(
                pytest.param("ringline", id="ringline", marks=pytest.mark.skip(reason=reason))
            )
    return params


#: Parameters (loop names) for ``pytest.mark.parametrize`` / fixtures.
LOOP_PARAMS = _make_params()


@pytest.fixture(params=LOOP_PARAMS)
def loop_name(request: pytest.FixtureRequest) -> str:
    """Name of the loop implementation under test ("asyncio", "uvloop", "ringline")."""
    name = request.param
    if name not in LOOP_FACTORIES:
        ringline_unavailable()
    return name


@pytest.fixture
def loop_factory(loop_name: str) -> LoopFactory:
    """A zero-argument callable returning a new, not-yet-running event loop."""
    return LOOP_FACTORIES[loop_name]


class LoopExceptionRecorder:
    """Exception handler that records every context instead of logging it.

    The ``loop`` fixture installs one of these.  A test that *expects* the
    handler to be called consumes the recorded contexts with :meth:`take`;
    anything left over when the test ends is an error.
    """

    def __init__(self) -> None:
        self.contexts: list[dict[str, Any]] = []

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if _cpython_3121_stream_callback_bug(context):
            return
        self.contexts.append(context)

    def take(self) -> list[dict[str, Any]]:
        """Return and forget the contexts recorded so far."""
        taken, self.contexts = self.contexts, []
        return taken

    def assert_none(self) -> None:
        if self.contexts:
            lines = [
                f"  - {ctx.get('message')!r} exception={ctx.get('exception')!r}"
                for ctx in self.contexts
            ]
            pytest.fail(
                "unexpected call(s) of the loop exception handler:\n" + "\n".join(lines),
                pytrace=False,
            )


def _cpython_3121_stream_callback_bug(context: dict[str, Any]) -> bool:
    """CPython 3.12.0/3.12.1: StreamReaderProtocol's done-callback on a
    start_server handler task calls task.exception() without checking for
    cancellation, so cancelling a leftover handler at teardown reports a
    CancelledError to the exception handler (fixed in 3.12.2; seen here on
    uvloop, which is not under test)."""
    return (
        sys.version_info[:3] in ((3, 12, 0), (3, 12, 1))
        and isinstance(context.get("exception"), asyncio.CancelledError)
        and "StreamReaderProtocol.connection_made" in str(context.get("message", ""))
    )


@pytest.fixture
def loop_exceptions() -> LoopExceptionRecorder:
    """The recorder installed as exception handler on the ``loop`` fixture."""
    return LoopExceptionRecorder()


@pytest.fixture
def loop(loop_factory: LoopFactory, loop_exceptions: LoopExceptionRecorder):
    """A fresh event loop with a recording exception handler.

    At teardown the loop's async generators are shut down, the loop is closed
    (unless the test did so), garbage is collected (so that e.g. "Task was
    destroyed but it is pending" reaches the handler) and the test fails if
    the exception handler was called without the test consuming the call.
    """
    lp = loop_factory()
    lp.set_exception_handler(loop_exceptions)
    try:
        yield lp
    finally:
        try:
            if not lp.is_closed() and not lp.is_running():
                lp.run_until_complete(lp.shutdown_asyncgens())
        finally:
            if not lp.is_closed() and not lp.is_running():
                lp.close()
            gc.collect()
    loop_exceptions.assert_none()


def require_program(name: str, package: str) -> str:
    """Path of the program ``name``; skip without it (fail under CI=true,
    where the Makefile installs every peer program the tests use)."""
    path = shutil.which(name)
    if path is None:
        msg = f"needs the {name!r} program (Debian package {package})"
        if IN_CI:
            pytest.fail(f"{msg}; CI=true, so this is a failure", pytrace=False)
        pytest.skip(msg)
    return path
