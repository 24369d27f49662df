"""The backends the native API and ringline.fs run on, for parametrised tests.

A helper module of tests/support (like ``loops``).  A test module takes the
fixtures by assignment::

    from tests.support import backends as nb

    backend_name = nb.backend_name          # "uring", "asyncio", "uvloop"

    def test_something(backend_name):
        async def main(): ...
        nb.run_native(backend_name, main, Config(...))

"uring" is ringline's io_uring loop (skipped where the kernel refuses
io_uring); "asyncio" and "uvloop" are the portable backend on those loops
(uvloop skipped when not installed).  ``run_native`` runs a coroutine
function on a fresh loop of the backend with ``config`` as the native API's
Config, under a timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import ringline
from ringline import Config, portable
from ringline.errors import IoUringUnavailable

__all__ = ["BACKENDS", "TIMEOUT", "backend_name", "new_loop", "portable_name", "run_native"]

TIMEOUT = 30.0


def _uvloop_factory() -> asyncio.AbstractEventLoop:
    import uvloop
    return uvloop.new_event_loop()


#: name -> loop factory; "uring" is ringline's own loop.
BACKENDS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "uring": lambda: ringline.new_event_loop(backend="uring"),
    "asyncio": asyncio.SelectorEventLoop,
    "uvloop": _uvloop_factory,
}

_uring_refusal: list[str] = []


def _uring_refused() -> str | None:
    """Why io_uring cannot be used here (probed once), or None."""
    if not _uring_refusal:
        try:
            ringline.new_event_loop(backend="uring").close()
        except IoUringUnavailable as exc:
            _uring_refusal.append(f"io_uring is refused here: {exc}")
        else:
            _uring_refusal.append("")
    return _uring_refusal[0] or None


def skip_unavailable(name: str) -> None:
    """Skip the calling test when backend ``name`` cannot run here."""
    if name == "uring":
        why = _uring_refused()
        if why:
            pytest.skip(why)
    if name == "uvloop":
        pytest.importorskip("uvloop")


@pytest.fixture(params=list(BACKENDS))
def backend_name(request: pytest.FixtureRequest) -> str:
    """Each backend in turn."""
    skip_unavailable(request.param)
    return str(request.param)


@pytest.fixture(params=["asyncio", "uvloop"])
def portable_name(request: pytest.FixtureRequest) -> str:
    """The portable backend's loops only."""
    skip_unavailable(request.param)
    return str(request.param)


def new_loop(name: str, config: Config | None = None) -> asyncio.AbstractEventLoop:
    """A loop of backend ``name`` whose native API uses ``config``."""
    if name == "uring":
        return ringline.new_event_loop(config, backend="uring")
    loop = BACKENDS[name]()
    portable.set_config(loop, config if config is not None else Config())
    return loop


def run_native(name: str, main: Callable[[], Awaitable[Any]], config: Config | None = None,
               timeout: float = TIMEOUT) -> Any:
    """Run ``main()`` on a fresh loop of backend ``name`` (closed after)."""
    async def bounded() -> Any:
        return await asyncio.wait_for(main(), timeout)

    with asyncio.Runner(loop_factory=lambda: new_loop(name, config)) as runner:
        return runner.run(bounded())
