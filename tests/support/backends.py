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

The native-API and fs suites (``tests/native/test_connection_*.py``,
``test_workers.py``, ``tests/files/test_fs.py``, ``test_odirect.py``) run
every test once per backend through :func:`native_backend`, a parametrised
fixture their ``conftest.py`` provides and each module requests with
``pytestmark = pytest.mark.usefixtures("native_backend")``.  It sets
``RINGLINE_BACKEND`` for the test, so the unchanged ``ringline.run`` /
``run(main)`` / ``serve_and_run`` of the test get that backend's loop.
Inside a running loop ``ringline.backend()`` says which one it is; a test
that checks io_uring-only behaviour is marked ``@uring_only("why")`` and
skips on the portable backend with that reason.  The backends are
``SUITE_BACKENDS``: "uring" and "portable" (uvloop when installed, as
``backend="portable"`` chooses); ``RINGLINE_TEST_BACKENDS`` (comma-separated,
"portable-asyncio" = the portable backend on asyncio's own loop) widens or
narrows the set.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import ringline
from ringline import Config, portable
from ringline.errors import IoUringUnavailable

__all__ = ["BACKENDS", "SUITE_BACKENDS", "TIMEOUT", "URING_ONLY_HELP", "backend_name",
           "direct_pool", "lent_buffers", "native_backend", "new_loop", "portable_name",
           "ring_count", "run_native", "uring_only"]

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


# ---------------------------------------------------------------------------
# the native-API and fs suites, once per backend
# ---------------------------------------------------------------------------

#: What ``native_backend`` runs each test on (``RINGLINE_TEST_BACKENDS``).
SUITE_BACKENDS: tuple[str, ...] = tuple(
    b.strip() for b in os.environ.get("RINGLINE_TEST_BACKENDS", "uring,portable").split(",")
    if b.strip())
_SUITE_CHOICES = ("uring", "portable", "portable-asyncio", "portable-uvloop")
if set(SUITE_BACKENDS) - set(_SUITE_CHOICES):
    raise pytest.UsageError(f"RINGLINE_TEST_BACKENDS: each of {_SUITE_CHOICES}, "
                            f"not {SUITE_BACKENDS}")

URING_ONLY = "uring_only"
URING_ONLY_HELP = (f"{URING_ONLY}(reason): the test checks io_uring-only behaviour (the ring's "
                   "internals or counters); it skips on the portable backend, naming the reason")


def uring_only(reason: str) -> pytest.MarkDecorator:
    """Mark a test (or, as ``pytestmark``, a module) as io_uring-only."""
    return pytest.mark.uring_only(reason=reason)


@pytest.fixture(params=SUITE_BACKENDS)
def native_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test on each of SUITE_BACKENDS: ``RINGLINE_BACKEND`` is set
    for its duration (every new loop is that backend's)."""
    name = str(request.param)
    if name == "uring":
        why = _uring_refused() if os.environ.get("RINGLINE_EXPECT_PURE") != "1" else \
            "a pure-Python install has no io_uring backend"
        if why:
            pytest.skip(why)
        monkeypatch.setenv("RINGLINE_BACKEND", "uring")
        return name
    marker = request.node.get_closest_marker(URING_ONLY)
    if marker is not None:
        pytest.skip("io_uring only: " + str(marker.kwargs.get("reason") or
                                            (marker.args[0] if marker.args else "")))
    if name != "portable":
        use_uvloop = name == "portable-uvloop"
        if use_uvloop:
            pytest.importorskip("uvloop")
        from ringline import backends as _backends
        monkeypatch.setattr(_backends, "_portable_loop",
                            lambda config: portable.new_event_loop(config,
                                                                   use_uvloop=use_uvloop))
    monkeypatch.setenv("RINGLINE_BACKEND", "portable")
    return name


def ring_count(loop: asyncio.AbstractEventLoop, key: str) -> int | None:
    """``loop.statistics()[key]`` (SQEs, enters, live slots ...) on the io_uring
    backend; None on the portable backend, which has no ring to count."""
    if ringline.backend(loop) != "uring":
        return None
    return int(loop.statistics()[key])     # type: ignore[attr-defined]


def direct_pool(loop: asyncio.AbstractEventLoop) -> Any:
    """The loop's O_DIRECT buffer pool on either backend (None before its
    first use): ``nbufs``, ``buffer_size``, ``available``, ``registered``."""
    if ringline.backend(loop) == "uring":
        return loop._dio_pool      # type: ignore[attr-defined]
    from ringline.portable import _fileops
    return _fileops.loop_pool(loop)


def lent_buffers(loop: asyncio.AbstractEventLoop) -> int:
    """Buffers lent to the application now (DirectBuffers on the portable
    backend; every lent ring buffer, process-wide, on io_uring)."""
    if ringline.backend(loop) == "uring":
        from ringline._core import loop as _loop
        return int(_loop.debug_counters()["bufs_lent"])
    pool = direct_pool(loop)
    return 0 if pool is None else int(pool.lent)
