"""Fail a test whose loop reported a failed handler, on every face.

A loop reports a callback, completion handler or task that raised by calling
its exception handler (``_internal_failed`` in ``ringline/_core/loop.pyx``,
``Handle._run``, the handler tasks of the native face, the transports).
Without a handler of the test's own, that is asyncio's
``default_exception_handler``, which logs the context at ERROR on the
``asyncio`` logger -- and then the loop goes on, so a test of the native face,
of ``fs`` or of NVMe would pass with a broken completion handler.  The autouse
fixture :func:`no_loop_errors` (installed by ``tests/conftest.py``) captures
those records and fails the test at teardown.

A test that provokes such a report on purpose says so with
``@pytest.mark.expect_loop_errors``; it should still check what was reported
(``caplog``, or an exception handler of its own, which logs nothing).
The asyncio-face tests' ``loop`` fixture installs a recording handler that
fails the test the same way (``tests/support/loops.py``).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator

import pytest

MARKER = "expect_loop_errors"
MARKER_HELP = (f"{MARKER}: the test provokes loop exception-handler reports on purpose "
               "(records of the 'asyncio' logger at ERROR); they do not fail it")


class LoopErrorCapture(logging.Handler):
    """Keeps every ERROR (and worse) record of the ``asyncio`` logger."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def report(self) -> str:
        lines = []
        for r in self.records:
            first = r.getMessage().splitlines()[0] if r.getMessage() else ""
            exc = f" -- {r.exc_info[1]!r}" if r.exc_info and r.exc_info[1] is not None else ""
            lines.append(f"  - [{r.threadName}] {first}{exc}")
        return "\n".join(lines)


@pytest.fixture(autouse=True)
def no_loop_errors(request: pytest.FixtureRequest) -> Iterator[LoopErrorCapture]:
    """Fail the test if any loop reported a failed handler during it."""
    logger = logging.getLogger("asyncio")
    capture = LoopErrorCapture()
    logger.addHandler(capture)
    try:
        yield capture
        # Objects the test dropped report here ("Task was destroyed but it is
        # pending", "Task exception was never retrieved"): they are its own.
        gc.collect()
    finally:
        logger.removeHandler(capture)
    if capture.records and request.node.get_closest_marker(MARKER) is None:
        pytest.fail("a loop reported failed handler(s) during the test (mark it "
                    f"@pytest.mark.{MARKER} if that is the point):\n{capture.report()}",
                    pytrace=False)
