"""pytest plugin that runs a third-party suite, unchanged, on one chosen event loop.

Loaded by ``conformance/run.py`` as ``-p loopswap`` (the ``conformance`` directory is on
``PYTHONPATH``).  Configured through the environment, because the driver starts one pytest
process per (suite, loop):

``CONFORMANCE_SUITE``
    which suite is being run; selects how the loop is injected (see ``_INJECT``).
``CONFORMANCE_LOOP``
    ``asyncio``, ``uvloop`` or ``ringline``.
``CONFORMANCE_RESULTS``
    a JSON-lines file that gets one record per finished test, written as it finishes, so a
    hang or a crash of the interpreter loses only the test that was running.
``CONFORMANCE_SKIP``
    optional file of node ids (one a line) to deselect: the driver restarts a run that
    crashed without the tests that already have a result.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from typing import Any

import pytest

LOOP = os.environ.get("CONFORMANCE_LOOP", "asyncio")
SUITE = os.environ.get("CONFORMANCE_SUITE", "")


def loop_class() -> type[asyncio.AbstractEventLoop]:
    """The event loop class under test (a class, so it can sit in a class attribute)."""
    if LOOP == "ringline":
        import ringline
        return ringline.EventLoop
    if LOOP == "uvloop":
        import uvloop
        return uvloop.Loop
    return asyncio.SelectorEventLoop


def new_loop() -> asyncio.AbstractEventLoop:
    """A fresh loop of the kind under test."""
    return loop_class()()


def _patch_default_policy() -> None:
    """Make asyncio's own default policy build loops of the kind under test.

    Covers ``asyncio.new_event_loop()``, ``asyncio.run()``, ``asyncio.Runner`` and
    ``IsolatedAsyncioTestCase`` without a custom policy, and survives the
    ``set_event_loop_policy(None)`` that many suites call in their teardown: the default
    policy class itself reads ``_loop_factory``.
    """
    if LOOP == "asyncio":
        return
    from asyncio import unix_events
    unix_events._UnixDefaultEventLoopPolicy._loop_factory = loop_class()  # type: ignore[attr-defined]


def _inject_uvloop_suite() -> None:
    """uvloop's tests/: the AIO classes (``tb.AIOTestCase``) get ringline's loop.

    Each test module defines a ``Test_UV_*`` and a ``Test_AIO_*`` class from one mixin.
    The asyncio run keeps the AIO classes, the uvloop run the UV classes; the ringline
    run keeps the AIO classes and swaps their loop factory and policy, so ringline is
    checked against what the suite expects of asyncio (``implementation == 'asyncio'``).
    """
    if LOOP != "ringline":
        return
    from uvloop import _testbase as tb

    import ringline

    tb.AIOTestCase.new_loop = lambda self: ringline.new_event_loop()
    tb.AIOTestCase.new_policy = lambda self: ringline.EventLoopPolicy()
    # is_asyncio_loop() looks at the loop's module name; ringline stands in for asyncio.
    original = tb.BaseTestCase.is_asyncio_loop
    tb.BaseTestCase.is_asyncio_loop = (
        lambda self: isinstance(self.loop, ringline.EventLoop) or original(self))


def _keep_uvloop_suite(item: pytest.Item) -> bool:
    """Which uvloop-suite tests belong to this run (see _inject_uvloop_suite)."""
    from uvloop import _testbase as tb
    cls = getattr(item, "cls", None)
    if cls is None:
        return LOOP != "ringline"
    is_uv = issubclass(cls, tb.UVTestCase)
    is_aio = issubclass(cls, tb.AIOTestCase)
    if LOOP == "uvloop":
        return is_uv
    if LOOP == "ringline":
        return is_aio
    # The asyncio run also carries the loop-independent tests (TestPolicy, TestBaseTest...).
    return not is_uv


def _inject_policy() -> None:
    _patch_default_policy()


def _inject_tornado() -> None:
    """Tornado's own runner (tornado/test/runtests.py) sets these before its tests:
    the access log silenced (its tests fail on any unexpected log line) and the
    HTTP client kept to IPv4."""
    import logging

    from tornado.httpclient import AsyncHTTPClient
    _patch_default_policy()
    logging.getLogger("tornado.access").setLevel(logging.CRITICAL)
    AsyncHTTPClient.configure(None, defaults={"allow_ipv6": False})


# CPython's test_asyncio builds the selector loop explicitly in these classes (one class
# per selector, from one loop-parametrised mixin); the EPoll/Selector class is the one
# whose loop constructor is swapped, its Poll/Select siblings are left out of all runs.
_CPYTHON_SWAPS = (
    ("test_events", "EPollEventLoopTests", "create_event_loop"),
    ("test_sock_lowlevel", "EPollEventLoopTests", "create_event_loop"),
    ("test_sendfile", "EPollEventLoopTests", "create_event_loop"),
    ("test_server", "SelectorStartServerTests", "new_loop"),
    ("test_sslproto", "SelectorStartTLSTests", "new_loop"),
    ("test_buffered_proto", "BufferedProtocolSelectorTests", "new_loop"),
)
_CPYTHON_DUPLICATES = {("test_events", "PollEventLoopTests"),
                       ("test_events", "SelectEventLoopTests"),
                       ("test_sock_lowlevel", "PollEventLoopTests"),
                       ("test_sock_lowlevel", "SelectEventLoopTests"),
                       ("test_sendfile", "PollEventLoopTests"),
                       ("test_sendfile", "SelectEventLoopTests")}


def _inject_cpython() -> None:
    """test_asyncio: the default policy builds our loop, and so do the classes above."""
    _patch_default_policy()
    if LOOP == "asyncio":
        return
    import importlib
    for module, cls, method in _CPYTHON_SWAPS:
        mod = importlib.import_module(f"test.test_asyncio.{module}")
        setattr(getattr(mod, cls), method, lambda self: new_loop())


def _keep_cpython(item: pytest.Item) -> bool:
    cls = getattr(item, "cls", None)
    module = item.nodeid.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")
    return cls is None or (module, cls.__name__) not in _CPYTHON_DUPLICATES


def _inject_anyio() -> None:
    """anyio: its plain ``asyncio`` backend builds loops through asyncio's default policy.

    anyio's own conftest parametrises ``anyio_backend`` as ``asyncio`` (no loop factory)
    and ``asyncio+uvloop`` (``backend_options={"loop_factory": uvloop.new_event_loop}``).
    The asyncio and ringline runs keep the ``asyncio`` cases (ringline through the
    patched default policy), the uvloop run the ``asyncio+uvloop`` cases.
    """
    _patch_default_policy()


def _anyio_param(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    if callspec is None or "anyio_backend" not in callspec.params:
        return None
    return callspec.id


def _keep_anyio(item: pytest.Item) -> bool:
    cid = _anyio_param(item)
    if cid is None:
        return LOOP == "asyncio"
    ids = cid.split("-")
    if LOOP == "uvloop":
        return "asyncio+uvloop" in ids
    return "asyncio" in ids


_INJECT: dict[str, Callable[[], None]] = {
    "uvloop": _inject_uvloop_suite,
    "cpython": _inject_cpython,
    "anyio": _inject_anyio,
    "aiohttp": _inject_policy,
    "aiohttp-net": _inject_policy,
    "uvicorn": _inject_policy,
    "httpx": _inject_policy,
    "websockets": _inject_policy,
    "tornado": _inject_tornado,
}

def _keep_not_trio(item: pytest.Item) -> bool:
    """Suites on anyio's pytest plugin: a trio-backend case has no event loop to swap."""
    cid = _anyio_param(item)
    return cid is None or "trio" not in cid.split("-")


def _keep_aiohttp(item: pytest.Item) -> bool:
    """aiohttp: the tests on its ``loop`` fixture (parametrised by ``loop_factory``).

    Its other tests (parsers, helpers) never touch an event loop.
    """
    callspec = getattr(item, "callspec", None)
    return callspec is not None and "loop_factory" in callspec.params


_KEEP: dict[str, Callable[[pytest.Item], bool]] = {
    "aiohttp": _keep_aiohttp,
    "aiohttp-net": _keep_aiohttp,
    "uvloop": _keep_uvloop_suite,
    "cpython": _keep_cpython,
    "anyio": _keep_anyio,
    "uvicorn": _keep_not_trio,
    "httpx": _keep_not_trio,
}


_CREATED = [0]


def _count_ringline_loops() -> None:
    """Count the ringline loops built, so the driver can show the swap took effect."""
    import ringline
    init = ringline.EventLoop.__init__

    def counting_init(self: Any, *args: Any, **kwargs: Any) -> None:
        _CREATED[0] += 1
        init(self, *args, **kwargs)

    ringline.EventLoop.__init__ = counting_init  # type: ignore[method-assign]


def pytest_configure(config: pytest.Config) -> None:
    if LOOP == "ringline":
        _count_ringline_loops()
    inject = _INJECT.get(SUITE)
    if inject is not None:
        inject()
    path = os.environ.get("CONFORMANCE_RESULTS")
    config._conformance_out = open(path, "a", buffering=1) if path else None  # type: ignore[attr-defined]
    config._conformance_state = {}  # type: ignore[attr-defined]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep = _KEEP.get(SUITE)
    skip_file = os.environ.get("CONFORMANCE_SKIP")
    skip: set[str] = set()
    if skip_file and os.path.exists(skip_file):
        with open(skip_file) as f:
            skip = {line.rstrip("\n") for line in f if line.strip()}
    selected, deselected = [], []
    for item in items:
        if item.nodeid in skip or (keep is not None and not keep(item)):
            deselected.append(item)
        else:
            selected.append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected


def _emit(config: pytest.Config, record: dict[str, Any]) -> None:
    out = config._conformance_out  # type: ignore[attr-defined]
    if out is not None:
        out.write(json.dumps(record) + "\n")
        out.flush()
        os.fsync(out.fileno())


def pytest_runtest_logstart(nodeid: str, location: Any) -> None:
    # A "start" record lets the driver name the test that was running when a crash hit.
    _emit(_CONFIG, {"id": nodeid, "phase": "start"})


_CONFIG: Any = None


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    global _CONFIG
    _CONFIG = session.config


def _reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return str(crash.message)[:400]
    if isinstance(report.longrepr, tuple):  # skip: (file, line, reason)
        return str(report.longrepr[2])[:400]
    text = str(report.longrepr or "").strip().splitlines()
    return text[-1][:400] if text else ""


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    config = _CONFIG
    state = config._conformance_state
    rec = state.setdefault(report.nodeid, {"id": report.nodeid, "outcome": "passed",
                                           "reason": "", "duration": 0.0})
    rec["duration"] += report.duration
    if report.when == "call" and hasattr(report, "wasxfail"):
        rec["outcome"] = "xfail" if report.skipped else "passed"
    elif report.failed and rec["outcome"] in ("passed", "skipped"):
        rec["outcome"] = "failed" if report.when == "call" else "error"
        rec["reason"] = _reason(report)
        if "Timeout (>" in rec["reason"]:  # pytest-timeout's own failure
            rec["outcome"] = "timeout"
    elif report.skipped and rec["outcome"] == "passed":
        rec["outcome"] = "skipped"
        rec["reason"] = _reason(report)
    if report.when == "teardown":
        _emit(config, state.pop(report.nodeid))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _emit(session.config, {"id": "", "phase": "sessionfinish", "exitstatus": int(exitstatus),
                           "ringline_loops": _CREATED[0]})
    out = session.config._conformance_out  # type: ignore[attr-defined]
    if out is not None:
        out.close()
        session.config._conformance_out = None  # type: ignore[attr-defined]


def pytest_collectreport(report: pytest.CollectReport) -> None:
    # A module that does not import is a result too (listed, never counted as passing).
    if report.failed and _CONFIG is not None:
        _emit(_CONFIG, {"id": report.nodeid, "outcome": "collect-error",
                        "reason": _reason(report), "duration": 0.0})
