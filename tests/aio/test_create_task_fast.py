"""The compiled Loop.create_task: asyncio's behaviour without its Python frames."""

from __future__ import annotations

import asyncio
import sys

import pytest

import ringline

pytestmark = pytest.mark.timeout(30)


async def _value(v):
    return v


def test_create_task_runs_no_python_code_of_asyncio():
    # The point of the compiled method: no BaseEventLoop.create_task or
    # _check_closed frame per task.
    lp = ringline.new_event_loop()
    try:
        calls: list[str] = []

        def profile(frame, event, arg):
            if event == "call" and "asyncio" in frame.f_code.co_filename:
                calls.append(f"{frame.f_code.co_filename}:{frame.f_code.co_name}")

        coro = _value(7)
        sys.setprofile(profile)
        try:
            task = lp.create_task(coro)
        finally:
            sys.setprofile(None)
        assert calls == []
        assert isinstance(task, asyncio.Task)
        assert lp.run_until_complete(task) == 7
    finally:
        lp.close()


def test_create_task_on_closed_loop_raises(loop):
    loop.close()
    coro = _value(1)
    with pytest.raises(RuntimeError, match="closed"):
        loop.create_task(coro)
    coro.close()


def test_create_task_name_and_context(loop):
    import contextvars

    var = contextvars.ContextVar("v", default="unset")
    ctx = contextvars.copy_context()
    ctx.run(var.set, "in-ctx")

    async def read():
        return var.get()

    named = loop.create_task(read(), name="n1")
    in_ctx = loop.create_task(read(), context=ctx)
    assert named.get_name() == "n1"
    assert in_ctx.get_name().startswith("Task-")
    assert loop.run_until_complete(asyncio.gather(named, in_ctx)) == ["unset", "in-ctx"]


def test_factory_set_then_cleared_switches_paths(loop):
    made = []

    def factory(lp, coro, **kwargs):
        made.append(kwargs)
        return asyncio.Task(coro, loop=lp, **kwargs)

    loop.set_task_factory(factory)
    assert loop.get_task_factory() is factory
    t1 = loop.create_task(_value(1), name="via-factory")
    assert t1.get_name() == "via-factory"
    loop.set_task_factory(None)
    t2 = loop.create_task(_value(2))
    assert loop.run_until_complete(asyncio.gather(t1, t2)) == [1, 2]
    assert len(made) == 1


def _created_at(lp) -> tuple[str, int]:
    lp.set_debug(True)
    task = lp.create_task(_value(0))  # the line a traceback must end at
    lp.run_until_complete(task)
    frame = task._source_traceback[-1]
    return frame[0], frame[1]


def test_debug_source_traceback_ends_at_the_caller(loop):
    # asyncio's Python method drops its own frame from the traceback; the
    # compiled one has none to drop: either way the caller's line is last.
    filename, lineno = _created_at(loop)
    assert filename == __file__
    with open(__file__) as f:
        assert "lp.create_task(_value(0))" in f.readlines()[lineno - 1]
