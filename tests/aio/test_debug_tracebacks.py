"""Debug mode: Handles and Tasks record where they were created, at any depth."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.timeout(60)


def _schedule(lp):
    h1 = lp.call_soon(print, "x")  # call_soon line
    h2 = lp.call_later(10, print, "y")  # call_later line
    return h1, h2


def _line_of(lineno: int) -> str:
    with open(__file__) as f:
        return f.readlines()[lineno - 1]


def test_handle_traceback_ends_at_the_caller(loop, loop_name):
    loop.set_debug(True)
    h1, h2 = _schedule(loop)
    try:
        if loop_name == "uvloop":
            pytest.skip("uvloop's Handles do not expose _source_traceback")
        for h, text in ((h1, "# call_soon line"), (h2, "# call_later line")):
            tb = h._source_traceback
            # asyncio's loop ends with its own call_soon frame, ringline's
            # (compiled, frameless) at the caller: look for the caller's line
            # within the last two entries.
            callers = [fr for fr in tb[-2:] if fr[0] == __file__]
            assert callers, tb[-2:]
            assert text in _line_of(callers[-1][1])
            assert callers[-1][2] == "_schedule"
    finally:
        h1.cancel()
        h2.cancel()


SHALLOW = textwrap.dedent(
    """
    import asyncio, sys
    import ringline

    async def work():
        return 5

    loop = ringline.new_event_loop()
    loop.set_debug(True)
    task = loop.create_task(work())          # module level: a one-frame stack
    handle = loop.call_soon(len, "ab")
    print(loop.run_until_complete(task), handle._source_traceback[-1][1])
    loop.close()
    """
)


def test_debug_scheduling_from_a_shallow_stack():
    # A fixed frame depth raised "call stack is not deep enough" here.
    proc = subprocess.run(
        [sys.executable, "-c", SHALLOW], capture_output=True, text=True, timeout=30, check=False
    )
    assert proc.returncode == 0, proc.stderr
    result, lineno = proc.stdout.split()
    assert result == "5"
    assert lineno == "11"  # the call_soon line of SHALLOW
