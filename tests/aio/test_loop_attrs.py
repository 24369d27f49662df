"""The loop's attribute layout and the task-factory path (issue 18, item 2).

ringline's EventLoop keeps what asyncio's inherited methods set in slots, so
that its instance ``__dict__`` is not created on the way (CPython 3.12+
specialises method look-ups on such an object); its compiled create_task hands
a task factory only the arguments it was given, and ``_check_closed`` is
compiled.  None of it may be visible to asyncio code: the behaviour tests run
on every loop (asyncio, uvloop, ringline) and compare.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import gc
import re
import sys
import warnings
import weakref

import pytest

from tests.support import run_on

pytestmark = pytest.mark.timeout(30)


def _tree_and_group(loop):
    async def leaf(i):
        await asyncio.sleep(0)
        return i

    async def main():
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(leaf(i)) for i in range(5)]
        fut = loop.create_future()
        loop.call_soon(fut.set_result, 1)
        await fut
        return sum(t.result() for t in tasks) + sum(await asyncio.gather(leaf(1), leaf(2)))

    return main()


def test_running_tasks_sets_nothing_in_the_instance_dict(loop_name, loop):
    # Everything the loop and asyncio's inherited code set while tasks run
    # lands in slots or C fields.  (On 3.11 the core keeps a bound call_soon
    # in the dict on purpose: asyncio's C Future looks it up per callback.)
    if loop_name != "ringline":
        pytest.skip("ringline's layout")
    assert run_on(loop, _tree_and_group(loop)) == 13
    expected = {"call_soon"} if sys.version_info < (3, 12) else set()
    assert set(vars(loop)) == expected


def test_loop_still_takes_new_attributes_and_weak_references(loop):
    # Slots did not take the instance dict or weak references away.
    loop.some_app_state = {"k": 1}
    assert loop.some_app_state == {"k": 1}
    assert vars(loop)["some_app_state"] == {"k": 1}
    ref = weakref.ref(loop)
    assert ref() is loop
    assert run_on(loop, _tree_and_group(loop)) == 13


def test_unclosed_loop_still_warns_when_collected(loop_factory):
    loop = loop_factory()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del loop
        gc.collect()
    unclosed = [w for w in caught if issubclass(w.category, ResourceWarning)
                and "unclosed event loop" in str(w.message)]
    if not unclosed and "uvloop" in loop_factory.__module__:
        pytest.skip("uvloop does not warn about an unclosed loop")
    assert len(unclosed) == 1


def test_check_closed_and_create_task_on_a_closed_loop(loop_factory):
    loop = loop_factory()
    loop.close()

    async def nothing():
        return None

    if hasattr(loop, "_check_closed"):     # asyncio's and ringline's, not uvloop's
        with pytest.raises(RuntimeError, match="Event loop is closed"):
            loop._check_closed()
    loop.set_task_factory(lambda lp, coro: asyncio.Task(coro, loop=lp))
    coro = nothing()
    try:
        with pytest.raises(RuntimeError, match="Event loop is closed"):
            loop.create_task(coro)
    finally:
        coro.close()


def _factory_record(loop):
    """create_task through a task factory, in the ways asyncio code calls it:
    what the factory received and what the task ended up as."""
    seen = []
    var = contextvars.ContextVar("var", default="outer")

    def factory(lp, coro, **kwargs):
        seen.append(sorted(kwargs))
        return asyncio.Task(coro, loop=lp, **kwargs)

    async def body():
        return var.get()

    async def main():
        loop.set_task_factory(factory)
        try:
            ctx = contextvars.copy_context()
            ctx.run(var.set, "inner")
            tasks = [loop.create_task(body()),
                     loop.create_task(body(), name="named"),
                     loop.create_task(body(), context=ctx),
                     loop.create_task(body(), name="both", context=ctx)]
            results = [await t for t in tasks]
            # default names count tasks process-wide: compare their form
            return results, [re.sub(r"^Task-\d+$", "Task-N", t.get_name()) for t in tasks]
        finally:
            loop.set_task_factory(None)

    return run_on(loop, main()), seen


def test_task_factory_gets_what_asyncio_passes(loop_name, loop):
    got = _factory_record(loop)
    reference = asyncio.SelectorEventLoop()
    try:
        want = _factory_record(reference)
    finally:
        reference.close()
    if loop_name == "uvloop" and got != want:
        pytest.skip(f"uvloop's factory protocol differs: {got} vs {want}")
    assert got == want
    (results, names), _ = got
    assert results == ["outer", "outer", "inner", "inner"]
    assert (names[1], names[3]) == ("named", "both")


def _nameless_factory_outcome(loop):
    """A factory whose result has no set_name, asked for a named task: what
    asyncio does differs by version (a DeprecationWarning up to 3.12, an
    AttributeError on 3.13); each loop must do the same as asyncio's."""
    class Nameless:
        pass

    async def main():
        loop.set_task_factory(lambda lp, coro: (coro.close(), Nameless())[1])
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    made = loop.create_task(asyncio.sleep(0), name="n")
                except AttributeError:
                    return "AttributeError"
            kinds = sorted({w.category.__name__ for w in caught})
            return type(made).__name__, kinds
        finally:
            loop.set_task_factory(None)

    return run_on(loop, main())


def test_factory_result_without_set_name(loop_name, loop):
    if loop_name == "uvloop":
        pytest.skip("uvloop passes context= to every factory")
    reference = asyncio.SelectorEventLoop()
    try:
        want = _nameless_factory_outcome(reference)
    finally:
        reference.close()
    assert _nameless_factory_outcome(loop) == want


def test_legacy_two_argument_factory_works(loop_name, loop):
    # A factory written for the documented (loop, coro) signature.
    if loop_name == "uvloop":
        pytest.skip("uvloop passes context= to every factory")
    made = []

    def factory(lp, coro):
        t = asyncio.Task(coro, loop=lp)
        made.append(t)
        return t

    async def main():
        loop.set_task_factory(factory)
        try:
            t = loop.create_task(asyncio.sleep(0, "x"))
            return await t
        finally:
            loop.set_task_factory(None)

    assert run_on(loop, main()) == "x"
    assert len(made) == 1


# -- call_soon: arguments, contexts and refusals as asyncio ---------------------


def test_call_soon_arguments_and_context(loop):
    var = contextvars.ContextVar("var", default="outer")
    ctx = contextvars.copy_context()
    ctx.run(var.set, "inner")
    seen = []

    def record(*args):
        seen.append((args, var.get()))

    loop.call_soon(record)
    loop.call_soon(record, 1)
    loop.call_soon(record, 1, "two", None)
    loop.call_soon(record, 2, context=ctx)
    # keyword names in a new tuple per call (partial passes a dict on)
    for i in range(3):
        functools.partial(loop.call_soon, record, i, context=ctx)()
    loop.call_soon(record, **{"context": None})
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == [((), "outer"), ((1,), "outer"), ((1, "two", None), "outer"),
                    ((2,), "inner"), ((0,), "inner"), ((1,), "inner"), ((2,), "inner"),
                    ((), "outer")]


def test_call_soon_refuses_what_asyncio_refuses(loop):
    with pytest.raises(TypeError, match="unexpected keyword argument 'ctx'"):
        loop.call_soon(print, ctx=None)
    with pytest.raises(TypeError, match="unexpected keyword argument 'other'"):
        loop.call_soon(print, context=None, other=1)
    with pytest.raises(TypeError):
        loop.call_soon()
    with pytest.raises(TypeError):
        loop.call_soon(context=None)
    loop.close()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.call_soon(print)


def test_future_callbacks_run_in_their_contexts(loop):
    # asyncio's C Future schedules each done callback with call_soon(cb,
    # fut, context=ctx): one keyword-name tuple for every call.
    var = contextvars.ContextVar("var", default="outer")
    seen = []

    async def main():
        futs = [loop.create_future() for _ in range(20)]
        for i, fut in enumerate(futs):
            ctx = contextvars.copy_context()
            ctx.run(var.set, i)
            fut.add_done_callback(lambda f: seen.append((f.result(), var.get())), context=ctx)
            fut.add_done_callback(lambda f: seen.append(("plain", var.get())))
        for i, fut in enumerate(futs):
            fut.set_result(i)
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    run_on(loop, main())
    assert [s for s in seen if s[0] != "plain"] == [(i, i) for i in range(20)]
    assert [s for s in seen if s[0] == "plain"] == [("plain", "outer")] * 20
