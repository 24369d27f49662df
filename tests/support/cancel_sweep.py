"""The cancellation sweep: cancel an awaitable after 0, 1, 2, ... loop
iterations and check that nothing it took is left behind.

One *round* of :func:`sweep` starts the operation in a fresh task, lets the
loop run ``k`` iterations (``await asyncio.sleep(0)`` ``k`` times), cancels
the task and awaits it.  The sweep goes on with ``k + 1`` until the
operation finishes before the cancel arrives.  After every round it waits
(bounded) for the loop's resources to return to what they were before the
sweep began and fails with the difference if they do not:

* ``fds``            descriptors open in the process (``/proc/self/fd``)
* ``slots_live``     operations in flight on the ring (the loop's slot table)
* ``orphans_live``   cancel requests in flight
* ``bufs_lent``      send-pool slots and O_DIRECT buffers lent out (process-wide)
* ``streams``        open streams of the loop's network layer
* ``fixed_live``     fixed-file-table slots holding a socket
* ``send_pool_free`` free send-pool slots
* ``recv_bufs_out``  provided receive buffers not in the kernel's ring
  (``NetState.recv_buffers_out``: the ring's tail against the kernel's head;
  -1 throughout where the kernel cannot say, before Linux 6.8)
* ``dio_pool_free``  free buffers of the loop's registered O_DIRECT pool

A cancel that lands after the operation's result was ready but before the
task resumed ("late") is the interesting case: the result is then dropped
by the task, and whatever it owned must still be released.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from ringline._core import loop as _core_loop
from ringline._net import stream as _stream
from ringline.native import task as _task

#: Rounds a sweep runs at most; an operation still unfinished after as many
#: loop iterations (e.g. waiting for an io-wq thread on a busy machine) then
#: runs once more uncancelled.
MAX_ROUNDS = 300


def resources(loop: Any) -> dict[str, int]:
    """What the loop holds right now (see the module docstring)."""
    st = loop.statistics()
    r = {
        "fds": len(os.listdir("/proc/self/fd")),
        "slots_live": st["slots_live"],
        "orphans_live": st["orphans_live"],
        "bufs_lent": _core_loop.debug_counters()["bufs_lent"],
    }
    ns = loop._net_state
    if ns is not None:
        s = ns.statistics()
        r["streams"] = s["streams"]
        r["fixed_live"] = s["fixed_live"]
        r["send_pool_free"] = s["send_pool_free"]
        r["recv_bufs_out"] = ns.recv_buffers_out()
    pool = loop._dio_pool
    if pool is not None:
        r["dio_pool_free"] = pool.available
    return r


def diff(base: dict[str, int], now: dict[str, int]) -> dict[str, tuple[int, int]]:
    return {k: (base.get(k, 0), now.get(k, 0)) for k in base.keys() | now.keys()
            if base.get(k, 0) != now.get(k, 0)}


async def settle(loop: Any, base: dict[str, int], timeout: float = 3.0,
                 poll: Callable[[], object] | None = None) -> dict[str, int]:
    """Run the loop until its resources equal ``base`` (or ``timeout``);
    ``poll`` runs on every pass (e.g. accepting and closing peer sockets)."""
    deadline = time.monotonic() + timeout
    n = 0
    while True:
        if poll is not None:
            poll()
        now = resources(loop)
        if now == base or time.monotonic() > deadline:
            return now
        n += 1
        # A few bare passes first (the cancel's CQE is usually one pass
        # away), then real sleeps so that the kernel and threads can move.
        await asyncio.sleep(0 if n < 20 else 0.001)


@dataclasses.dataclass
class SweepResult:
    """What one sweep saw."""

    name: str
    rounds: int = 0          # rounds run (k = 0 .. rounds - 1)
    cancelled: int = 0       # the task ended in CancelledError
    late: int = 0            # cancelled, but the operation had finished: result kept
    done_at: int = -1        # the k at which it finished before the cancel

    def line(self) -> str:
        done = f"done at k={self.done_at}" if self.done_at >= 0 else "not done before a cancel"
        return (f"SWEEP {self.name}: k=0..{self.rounds - 1}, {self.cancelled} cancelled, "
                f"{self.late} completed despite the cancel, {done}")


def new_task(kind: str, coro: Coroutine[Any, Any, Any]) -> Any:
    """``coro`` as an asyncio Task (``"asyncio"``) or as a ringline handler
    Task (``"ringline"``, what ``serve()`` runs handlers in)."""
    loop = asyncio.get_running_loop()
    if kind == "asyncio":
        return loop.create_task(coro)
    if kind == "ringline":
        return _task.Task(coro, loop)
    raise ValueError(kind)


async def sweep(name: str, make: Callable[[], Coroutine[Any, Any, Any]], *,
                after: Callable[[str, Any], Awaitable[None] | None] | None = None,
                tick: Callable[[int], object] | None = None,
                poll: Callable[[], object] | None = None,
                task: str = "asyncio", max_rounds: int = MAX_ROUNDS,
                min_rounds: int = 0, never_done: bool = False) -> SweepResult:
    """Cancel ``make()`` after k = 0, 1, 2, ... loop iterations (see the
    module docstring) and return what was seen.

    ``tick(i)`` runs before the i-th iteration of a round (e.g. the peer
    sends at i == 2).  ``after(outcome, result)`` ends each round: outcome
    is "done" (finished before the cancel), "late" (finished despite it) or
    "cancelled" (result None); it releases what the operation returned and
    checks what it must (e.g. that no byte was lost).  The sweep stops at
    the first "done" round once ``min_rounds`` rounds were run.  With
    ``never_done`` (an operation that waits until cancelled, such as
    ``serve_forever``) exactly ``max_rounds`` rounds run and none may finish.
    """
    loop = asyncio.get_running_loop()
    _stream.net_state_for(loop)       # counted from the start
    # The base: what the loop holds once what the test set up has settled
    # (e.g. a new transport arms its receive in a later iteration).
    base = resources(loop)
    for _ in range(100):
        for _ in range(3):
            await asyncio.sleep(0)
        if poll is not None:
            poll()
        now = resources(loop)
        if now == base:
            break
        base = now
    # -1: the kernel cannot report its buffer ring (before Linux 6.8); the
    # sweep then checks everything else, and stays -1 throughout.
    assert base.get("recv_bufs_out", 0) in (0, -1), f"buffers lost before the sweep: {base}"
    res = SweepResult(name)
    for k in range(max_rounds):
        t = new_task(task, make())
        for i in range(k):
            if tick is not None:
                tick(i)
            await asyncio.sleep(0)
        outcome, result = "done", None
        if t.done():
            result = t.result()
        else:
            t.cancel()
            try:
                result = await t
            except asyncio.CancelledError:
                outcome = "cancelled"
                res.cancelled += 1
            else:
                outcome = "late"
                res.late += 1
        if after is not None:
            r = after(outcome, result)
            if r is not None:
                await r
        del t, result
        now = await settle(loop, base, poll=poll)
        res.rounds = k + 1
        assert now == base, f"{name}: cancelled after {k} iterations ({outcome}): " \
                            f"left behind (before, after) {diff(base, now)}"
        if never_done:
            assert outcome == "cancelled", f"{name}: finished ({outcome}) after {k} iterations"
        elif outcome == "done" and k + 1 >= min_rounds:
            res.done_at = k
            break
    else:
        if not never_done:
            # A slow machine (an io-wq thread that takes its time): every
            # round so far was cancelled while the op was still on its way.
            # One more, not cancelled, must finish and leave nothing either.
            result = await asyncio.wait_for(new_task(task, make()), 30)
            if after is not None:
                r = after("done", result)
                if r is not None:
                    await r
            del result
            now = await settle(loop, base, poll=poll)
            assert now == base, f"{name}: uncancelled: left behind {diff(base, now)}"
    print(res.line())
    return res
