"""The task machinery's speed-ups keep asyncio's behaviour (issue 18, item 2).

Each test guards one optimisation of the loop core (``_core/loop.pyx``) and
runs on every loop (asyncio, uvloop, ringline), so that the behaviour checked
is asyncio's, not ours.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import threading
import weakref

import pytest

from tests.support import run_on

pytestmark = pytest.mark.timeout(30)


class _Payload:
    """A weakly referenceable object a callback's arguments keep alive."""


def test_a_run_callback_is_released_before_the_next_one_runs(loop):
    # _run_ready lets go of each Handle as it runs (asyncio pops it): what
    # only a finished callback's Handle referred to is freed before the next
    # callback of the same batch starts.
    seen = []

    def first(payload):
        seen.append("first")

    def second(ref):
        seen.append(ref() is None)

    payload = _Payload()
    ref = weakref.ref(payload)
    loop.call_soon(first, payload)
    loop.call_soon(second, ref)
    del payload
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == ["first", True]


def test_batch_order_and_cancellation_survive_the_release(loop):
    # Handles scheduled during a batch run in the next one, in order; a
    # Handle cancelled by an earlier callback of its batch does not run.
    order = []
    handles = {}

    def cb(name):
        order.append(name)
        if name == "a":
            handles["c"].cancel()
            loop.call_soon(cb, "later")
        elif name == "later":
            loop.stop()

    for name in "abcd":
        handles[name] = loop.call_soon(cb, name)
    loop.run_forever()
    assert order == ["a", "b", "d", "later"]


def test_keyboard_interrupt_keeps_the_rest_of_the_batch(loop):
    order = []

    def cb(name):
        order.append(name)
        if name == "boom":
            raise KeyboardInterrupt

    for name in ("a", "boom", "b", "c"):
        loop.call_soon(cb, name)
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert order == ["a", "boom", "b", "c"]


def test_many_tasks_each_sleeping_once_all_finish(loop):
    # create_task + sleep(0) in bulk: every step is a Handle of a large batch.
    async def one(i):
        await asyncio.sleep(0)
        return i

    async def main():
        tasks = [loop.create_task(one(i)) for i in range(2000)]
        return [await t for t in tasks]

    assert run_on(loop, main()) == list(range(2000))


def test_create_task_default_name_and_explicit_name(loop):
    async def body():
        return asyncio.current_task().get_name()

    async def main():
        plain = loop.create_task(body())
        named = loop.create_task(body(), name="given")
        none = loop.create_task(body(), name=None)
        return await plain, await named, await none

    plain, named, none = run_on(loop, main())
    assert plain.startswith("Task-")
    assert named == "given"
    assert none.startswith("Task-")


def test_create_task_context_is_honoured(loop):
    var = contextvars.ContextVar("var", default="default")
    ctx = contextvars.copy_context()
    ctx.run(var.set, "inside")

    async def body():
        return var.get()

    async def main():
        return (await loop.create_task(body(), context=ctx),
                await loop.create_task(body()))

    assert run_on(loop, main()) == ("inside", "default")


def test_asyncgen_first_iteration_registers_with_the_loop(loop):
    # Registered by the first-iteration hook: shutdown_asyncgens closes it.
    closed = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            closed.append(True)

    async def main():
        gen = agen()
        first = await gen.__anext__()
        await loop.shutdown_asyncgens()
        return first, gen

    first, gen = run_on(loop, main())
    assert (first, closed) == (1, [True])


def test_asyncgen_after_shutdown_asyncgens_warns(loop):
    async def agen():
        yield 1

    async def main():
        await loop.shutdown_asyncgens()
        gen = agen()
        with pytest.warns(ResourceWarning, match="shutdown_asyncgens"):
            await gen.__anext__()
        await gen.aclose()

    run_on(loop, main())


def test_unfinished_asyncgen_is_finalised_by_the_loop(loop):
    closed = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            closed.append(True)

    async def main():
        gen = agen()
        await gen.__anext__()
        del gen         # the finalizer hook schedules aclose() on the loop
        for _ in range(5):
            await asyncio.sleep(0)
        return closed

    assert run_on(loop, main()) == [True]


def _run_eager(loop, coro):
    """run_on, skipping where the loop's create_task and this Python's
    eager_task_factory disagree on the factory protocol (uvloop 0.23 passes
    eager_start=, which 3.13.0-3.13.2's factory does not take)."""
    try:
        return run_on(loop, coro)
    except TypeError as exc:
        if "eager_start" not in str(exc):
            raise
        pytest.skip(f"this loop cannot use this Python's eager_task_factory: {exc}")


@pytest.mark.skipif(not hasattr(asyncio, "eager_task_factory"), reason="Python 3.12+")
def test_eager_task_factory_runs_the_first_step_at_once(loop):
    order = []

    async def body(i):
        order.append(f"start {i}")
        await asyncio.sleep(0)
        order.append(f"end {i}")
        return i

    async def main():
        loop.set_task_factory(asyncio.eager_task_factory)
        try:
            t = loop.create_task(body(1))
            order.append("created")
            done_at_once = loop.create_task(asyncio.sleep(0, "v"))
            return await t, await done_at_once
        finally:
            loop.set_task_factory(None)

    assert _run_eager(loop, main()) == (1, "v")
    assert order[:2] == ["start 1", "created"]


@pytest.mark.parametrize("what", ["call_soon", "create_task"])
def test_wrong_thread_still_raises_on_ringline(loop_name, loop, what):
    # The thread check was made cheap, not removed (ringline only: asyncio
    # checks in debug mode alone, uvloop not at all).  call_soon keeps
    # asyncio's rule, loud in debug mode only (tests/aio/test_misuse.py).
    if loop_name != "ringline":
        pytest.skip("ringline's check")
    if what == "call_soon":
        loop.set_debug(True)
    errors = []

    async def nothing():
        return None

    def other():
        coro = nothing()
        try:
            if what == "call_soon":
                loop.call_soon(lambda: None)
            else:
                loop.create_task(coro)
        except RuntimeError as exc:
            errors.append(str(exc))
        finally:
            coro.close()

    async def main():
        t = threading.Thread(target=other)
        t.start()
        while t.is_alive():
            await asyncio.sleep(0.001)
        t.join()

    run_on(loop, main())
    assert len(errors) == 1 and f"{what}()" in errors[0], errors


if sys.version_info >= (3, 12):
    def test_eager_gather_tree_gives_the_same_result(loop):
        async def tree(depth):
            if depth == 0:
                return 1
            return sum(await asyncio.gather(*[tree(depth - 1) for _ in range(4)]))

        async def main():
            loop.set_task_factory(asyncio.eager_task_factory)
            try:
                return await tree(4)
            finally:
                loop.set_task_factory(None)

        assert _run_eager(loop, main()) == 4**4
