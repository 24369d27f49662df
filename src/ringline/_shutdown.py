"""The graceful stop of a native-API server, shared by both backends'
``Server.shutdown`` (native/serve.py, portable/serve.py).  Pure Python."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from typing import Any, cast

__all__ = ["graceful_shutdown"]


#: How long a just-accepted connection may take to send its first bytes
#: before a graceful stop treats it as idle (see graceful_shutdown).
FRESH_GRACE = 0.25


async def graceful_shutdown(conns: Collection[Any], tasks: Collection[Any], timeout: float,
                            accepts_done: Callable[[], bool] | None = None,
                            last_accept: Callable[[], float] | None = None) -> None:
    """Stop serving ``conns`` (the server's open connections) and ``tasks``
    (their handlers) within ``timeout`` seconds; the caller has stopped
    accepting.

    First every connection's receiving ends (shutdown(SHUT_RD)): a handler
    waiting for data sees end of stream and returns, one in the middle of a
    request finishes it and answers.  The handlers get ``timeout`` seconds;
    then their connections are closed (queued sends drain, then FIN) within
    what is left of it, what is still open is aborted and handlers still
    running are cancelled.  ``accepts_done`` (the ring path) says whether the
    accept's last CQE has come: a connection accepted in the same instant as
    the stop is still on its way, and must be drained too.  ``last_accept``
    gives the loop time of the last accept: a connection accepted just
    before the stop may not have sent its request yet (its client is a
    moment behind), so receiving ends no sooner than FRESH_GRACE after it.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    if accepts_done is not None:
        while not accepts_done() and loop.time() < deadline:
            await asyncio.sleep(0)
    if last_accept is not None:
        fresh = min(last_accept() + FRESH_GRACE, deadline) - loop.time()
        if fresh > 0:
            await asyncio.sleep(fresh)
    for conn in list(conns):
        if not conn.closed:
            conn._shutdown_read()
    running = _running(tasks)
    if running:
        await asyncio.wait(running, timeout=timeout)
    open_conns = [c for c in conns if not c.closed]
    for conn in open_conns:
        conn.close()
    if open_conns:
        waits = [asyncio.ensure_future(cast(Awaitable[None], c.wait_closed()))
                 for c in open_conns]
        _, pending = await asyncio.wait(waits, timeout=max(deadline - loop.time(), 0.01))
        for w in pending:
            w.cancel()
        for conn in open_conns:
            if not conn.closed:
                conn.abort()
    # Handlers see the abort and return; cancel stragglers.
    running = _running(tasks)
    if running:
        _, stuck = await asyncio.wait(running, timeout=0.1)
        for t in stuck:
            t.cancel()
        if stuck:
            await asyncio.wait(stuck, timeout=1.0)


def _running(tasks: Collection[Any]) -> list[asyncio.Task[Any]]:
    # ringline's handler Tasks are futures in asyncio's (duck) sense.
    return [cast("asyncio.Task[Any]", t) for t in tasks if not t.done()]
