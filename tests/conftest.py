"""Suite-wide fixtures (every test gets them; see tests/README.md).

* ``ring_accounting_balances``: the loop core keeps process-wide counters
  (SQEs prepared, final CQEs, live slots, lent buffers; in both builds).
  After every test they must balance: every SQE a test caused got its final
  CQE and nothing is still pinned for the kernel.
* ``config_defaults(**fields)``: changes Config's defaults for one test.
* ``no_loop_errors``: a loop that reported a failed callback or completion
  handler to its exception handler fails the test (tests/support/loop_errors.py).

``RINGLINE_EXPECT_PURE=1`` (``make test-pure``): the suite runs on a
pure-Python install (RINGLINE_PURE=1, no compiled module).  The session
refuses to start if a compiled module is importable; tests marked
``needs_extension`` skip; the ring accounting has no ring to check.

``RINGLINE_ASAN=1`` (``make asan``): the suite runs on the extension built
under AddressSanitizer/UndefinedBehaviorSanitizer (RINGLINE_SANITIZE=1).  The
session refuses to start on an extension built without them; tests marked
``no_asan`` (with the reason) skip.
"""

import gc
import os
from pathlib import Path

import pytest

from tests.support.loop_errors import MARKER_HELP, no_loop_errors

PURE = os.environ.get("RINGLINE_EXPECT_PURE") == "1"
ASAN = os.environ.get("RINGLINE_ASAN") == "1"
if PURE:
    try:
        from ringline._core import loop as _loop
    except ImportError:
        _loop = None
    else:
        raise pytest.UsageError(
            f"RINGLINE_EXPECT_PURE=1 but a compiled module was imported: {_loop.__file__}")
else:
    from ringline._core import loop as _loop

__all__ = ["no_loop_errors"]

NEEDS_EXTENSION_HELP = ("needs_extension: the test needs ringline's compiled extension "
                        "(skipped on a pure-Python install, RINGLINE_EXPECT_PURE=1)")
NO_ASAN_HELP = ("no_asan(reason): the test cannot run under the sanitizer runtime "
                "(skipped when RINGLINE_ASAN=1, `make asan`); the reason says why")


def pytest_configure(config):
    config.addinivalue_line("markers", MARKER_HELP)
    config.addinivalue_line("markers", NEEDS_EXTENSION_HELP)
    config.addinivalue_line("markers", NO_ASAN_HELP)


def pytest_report_header(config):
    if _loop is None:
        import ringline
        return f"ringline build: pure Python, no extension ({ringline.__file__})"
    return f"ringline build: {'debug' if _loop.DEBUG_BUILD else 'release'} ({_loop.__file__})"


def pytest_sessionstart(session):
    if _loop is None:
        _no_compiled_module_anywhere()
    elif os.environ.get("RINGLINE_EXPECT_DEBUG") == "1" and not _loop.DEBUG_BUILD:
        raise pytest.UsageError("RINGLINE_EXPECT_DEBUG=1 but the release build was imported")
    if ASAN and (_loop is None or b"libasan.so" not in Path(_loop.__file__).read_bytes()):
        raise pytest.UsageError("RINGLINE_ASAN=1 but the imported extension was not built "
                                f"with RINGLINE_SANITIZE=1: {getattr(_loop, '__file__', None)}")


def _no_compiled_module_anywhere():
    """In pure mode, the imported package has no extension module at all."""
    import importlib.machinery
    from pathlib import Path

    import ringline
    root = Path(ringline.__file__).parent
    found = [str(p) for p in root.rglob("*")
             if p.name.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))]
    if found:
        raise pytest.UsageError(f"RINGLINE_EXPECT_PURE=1 but {root} has compiled modules: "
                                f"{found[:3]}")


#: Parameters that run a test on a loop other than ringline's (the reference
#: loops, the portable backend): ``RINGLINE_TEST_RINGLINE_ONLY=1`` deselects
#: them.  The debug build's pass uses it: its asserts are in compiled code
#: only those loops never run, and the release pass has run them already.
_REFERENCE_PARAMS = {"loop_name": {"asyncio", "uvloop"},
                     "backend_name": {"asyncio", "uvloop"},
                     "native_backend": {"portable", "portable-asyncio"}}


def _on_reference_loop(item) -> bool:
    params = getattr(getattr(item, "callspec", None), "params", {})
    return any(params.get(name) in values for name, values in _REFERENCE_PARAMS.items())


def pytest_collection_modifyitems(config, items):
    if os.environ.get("RINGLINE_TEST_RINGLINE_ONLY") == "1":
        keep = [item for item in items if not _on_reference_loop(item)]
        config.hook.pytest_deselected(items=[i for i in items if _on_reference_loop(i)])
        items[:] = keep
    if ASAN:
        for item in items:
            marker = item.get_closest_marker("no_asan")
            if marker:
                why = marker.kwargs.get("reason") or (marker.args[0] if marker.args else "")
                item.add_marker(pytest.mark.skip(reason=f"no_asan: {why}"))
    if not PURE:
        return
    skip = pytest.mark.skip(reason="needs ringline's compiled extension (pure-Python install)")
    for item in items:
        if item.get_closest_marker("needs_extension"):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def ring_accounting_balances():
    """Every test leaves no operation in flight and no buffer lent."""
    yield
    if _loop is None:
        return      # a pure-Python install has no ring
    c = _loop.debug_counters()
    if (c["slots_live"] or c["bufs_lent"]
            or c["sqes_prepared"] != c["final_cqes"] + c["abandoned"]):
        # Garbage not yet collected may still hold buffers or ops: collect,
        # then look again.  (Only then: a full collection of this process's
        # heap takes ~30 ms, over two thousand tests a minute of CPU.)
        gc.collect()
        c = _loop.debug_counters()
    assert c["slots_live"] == 0, f"in-flight slots left behind: {c}"
    # Ops abandoned by a close from a foreign thread never get a CQE here.
    assert c["sqes_prepared"] == c["final_cqes"] + c["abandoned"], \
        f"SQEs without their final CQE: {c}"
    assert c["bufs_lent"] == 0, f"buffers still lent out: {c}"


@pytest.fixture
def config_defaults(monkeypatch):
    """``config_defaults(**fields)`` changes Config's defaults for this test,
    private switches included (``_fixed_files``, ``_recv_buffers_incremental``,
    ``_zc_to_local_peers``): every Config made during the test, the loops'
    default one too, starts from them."""
    from ringline.config import Config

    def set_defaults(**fields):
        kw = dict(Config.__init__.__kwdefaults__)
        unknown = set(fields) - set(kw)
        assert not unknown, f"Config has no field(s) {unknown}"
        kw.update(fields)
        monkeypatch.setattr(Config.__init__, "__kwdefaults__", kw)

    return set_defaults



def pytest_collection_finish(session):
    """Move what collection imported into the GC's permanent generation:
    the fixtures' per-test gc.collect() then traverses only what tests made
    since (a full collection of the whole heap costs ~30 ms a test)."""
    gc.collect()
    gc.freeze()
