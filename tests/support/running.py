"""The two ways a test runs a coroutine: on a fresh ringline loop, or on a
loop it already has (the ``loop`` fixture of the asyncio-face tests)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import ringline


def run(main: Coroutine[Any, Any, Any] | Callable[..., Coroutine[Any, Any, Any]],
        *args: Any, config: ringline.Config | None = None) -> Any:
    """Run ``main`` on a fresh ringline loop (``ringline.run``) and return its result.

    ``main`` is a coroutine, or an async function called as ``main(*args)``
    once the loop runs.  ``config`` is the loop's :class:`ringline.Config`.
    """
    if asyncio.iscoroutine(main):
        if args:
            raise TypeError("arguments given with a coroutine object")
        return ringline.run(main, config=config)

    async def start() -> Any:
        return await main(*args)

    return ringline.run(start(), config=config)


def run_on(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any],
           timeout: float = 30.0) -> Any:
    """Run ``coro`` on ``loop`` like :func:`asyncio.run` would: bounded by
    ``timeout`` seconds, then every task it left behind cancelled and awaited
    (so that nothing is destroyed pending when the loop closes), and the
    default executor shut down."""
    try:
        return loop.run_until_complete(asyncio.wait_for(coro, timeout))
    finally:
        leftovers = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for t in leftovers:
            t.cancel()
        if leftovers:
            loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_default_executor())
