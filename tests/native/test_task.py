"""Handler tasks (native/task.pyx): serve() drives each handler with a
ringline Task, which parks on its connection instead of awaiting a Future.

These check that it still is an asyncio Task as far as asyncio can tell:
current_task, timeouts, TaskGroup, cancellation, contextvars, await, gather,
and that a receive interrupted by any of them loses no byte.  Peers are real
loopback connections made with ringline.connect from an ordinary
asyncio.Task (whose receives take the Future path: both paths meet here).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import socket
import sys
import time

import pytest

import ringline
from ringline.native import task as _task
from tests.support import HOST, run

pytestmark = pytest.mark.timeout(30)



async def _serve(handler):
    server = await ringline.serve(handler, HOST, 0)
    return server, server.port


def exchange(handler, chunks, reply_len):
    """Serve ``handler``; a ringline client sends ``chunks`` 10 ms apart and
    returns the ``reply_len`` bytes it gets back."""
    async def main():
        server, port = await _serve(handler)
        c = await ringline.connect(HOST, port)
        for chunk in chunks:
            await asyncio.sleep(0.01)
            c.send_nowait(chunk)
        reply = await c.recv_exactly(reply_len)
        c.close()
        await server.shutdown(1.0)
        return reply

    return run(main())


# ---------------------------------------------------------------------------
# the Task itself, without connections
# ---------------------------------------------------------------------------


def test_task_is_a_future_to_asyncio_and_runs_a_coroutine():
    async def child(x, native=True):
        await asyncio.sleep(0)            # a bare yield
        await asyncio.sleep(0.001)        # an asyncio Future
        assert isinstance(asyncio.current_task(), _task.Task) == native
        return x * 2

    async def main():
        loop = asyncio.get_running_loop()
        t = _task.Task(child(21), loop, name="doubler")
        assert asyncio.isfuture(t)
        assert t in asyncio.all_tasks()
        assert t.get_name() == "doubler" and t.get_loop() is loop
        seen = []
        t.add_done_callback(seen.append)
        assert await t == 42
        assert t.done() and not t.cancelled() and t.result() == 42
        assert t.exception() is None
        await asyncio.sleep(0)
        assert seen == [t]
        # gather and wait accept it like any future.
        t2 = _task.Task(child(1), loop)
        assert await asyncio.gather(t2, child(2, native=False)) == [2, 4]
        return "ok"

    assert run(main()) == "ok"


def test_task_exception_cancel_and_remove_done_callback():
    async def boom():
        await asyncio.sleep(0)
        raise KeyError("x")

    async def forever():
        await asyncio.sleep(3600)

    async def main():
        loop = asyncio.get_running_loop()
        t = _task.Task(boom(), loop)
        with pytest.raises(KeyError):
            await t
        assert isinstance(t.exception(), KeyError)

        t = _task.Task(forever(), loop)
        cb = lambda _t: None        # noqa: E731
        t.add_done_callback(cb)
        assert t.remove_done_callback(cb) == 1
        await asyncio.sleep(0.01)
        assert t.cancel("stop") and t.cancelling() == 1
        with pytest.raises(asyncio.CancelledError):
            await t
        assert t.cancelled() and not t.cancel()
        with pytest.raises(asyncio.CancelledError):
            t.result()

        with pytest.raises(TypeError):
            _task.Task(forever, loop)     # not a coroutine
        return "ok"

    assert run(main()) == "ok"


def test_task_runs_in_its_own_copy_of_the_context():
    var = contextvars.ContextVar("var", default="unset")

    async def child():
        before = var.get()
        var.set("child")
        await asyncio.sleep(0)
        return before, var.get()

    async def main():
        var.set("parent")
        t = _task.Task(child(), asyncio.get_running_loop())
        res = await t
        # get_context(), as asyncio.Task's: the copy the task ran in.
        return res, var.get(), t.get_context()[var]

    assert run(main()) == (("parent", "child"), "parent", "child")


def test_bad_yield_is_reported_to_the_coroutine():
    class Bad:
        def __await__(self):
            yield 42

    async def main():
        async def child():
            await Bad()
        t = _task.Task(child(), asyncio.get_running_loop())
        with pytest.raises(RuntimeError, match="bad yield"):
            await t
        return "ok"

    assert run(main()) == "ok"


# ---------------------------------------------------------------------------
# handlers parked on connections
# ---------------------------------------------------------------------------


def test_handler_runs_as_a_ringline_task_and_echoes():
    seen = {}

    async def handler(conn):
        t = asyncio.current_task()
        seen["task"] = type(t).__name__, asyncio.isfuture(t), t in asyncio.all_tasks()
        while data := await conn.recv():
            conn.send_nowait(data)

    async def main():
        server, port = await _serve(handler)
        c = await ringline.connect(HOST, port)
        for i in range(50):
            msg = bytes([i]) * (i + 1)
            c.send_nowait(msg)
            assert await c.recv_exactly(len(msg)) == msg
        c.close()
        await server.shutdown(1.0)
        return seen["task"]

    assert run(main()) == ("Task", True, True)


def test_timeout_around_a_parked_receive_loses_no_bytes():
    out = asyncio.Queue()

    async def handler(conn):
        try:
            async with asyncio.timeout(0.05):
                await conn.recv_exactly(10)
        except TimeoutError:
            await out.put(("timeout", asyncio.current_task().cancelling()))
        # The 4 bytes that arrived before the timeout are still buffered.
        await out.put(("data", await conn.recv_exactly(10)))

    async def main():
        server, port = await _serve(handler)
        c = await ringline.connect(HOST, port)
        c.send_nowait(b"0123")
        first = await out.get()
        c.send_nowait(b"456789")
        second = await out.get()
        c.close()
        await server.shutdown(1.0)
        return first, second

    assert run(main()) == (("timeout", 0), ("data", b"0123456789"))


def test_cancel_after_data_arrived_but_before_the_step_keeps_the_bytes():
    # asyncio's rule: a cancel that lands after the wake-up was queued is
    # thrown at the await; the bytes stay for the next receive.
    out = asyncio.Queue()
    tasks = []

    async def handler(conn):
        tasks.append(asyncio.current_task())
        try:
            await conn.recv_exactly(5)
        except asyncio.CancelledError:
            asyncio.current_task().uncancel()
            await out.put(("cancelled", conn.buffered))
        await out.put(("data", await conn.recv_exactly(5)))

    async def main():
        # In debug mode a woken handler's step waits on the ready queue (not
        # run straight after the CQE that woke it), which opens the window.
        asyncio.get_running_loop().set_debug(True)
        server, port = await _serve(handler)
        c = await ringline.connect(HOST, port)
        while not tasks:
            await asyncio.sleep(0.001)
        t = tasks[0]
        while t.parked is None:
            await asyncio.sleep(0.001)
        c.send_nowait(b"hello")
        # Spin until the handler's connection has the bytes and has queued
        # the task's step (parked is cleared), then cancel before it runs.
        while t.parked is not None:
            await asyncio.sleep(0)
        assert t.cancel()
        got = [await out.get(), await out.get()]
        c.close()
        await server.shutdown(1.0)
        return got

    assert run(main()) == [("cancelled", 5), ("data", b"hello")]


def test_shutdown_cancels_handlers_parked_on_receives():
    started = asyncio.Event()
    result = {}

    async def handler(conn):
        started.set()
        try:
            await conn.with_data(lambda v: None)   # never satisfied
        except asyncio.CancelledError:
            result["cancelled"] = True
            raise
        finally:
            result["ran_finally"] = True

    async def main():
        server, port = await _serve(handler)
        c = await ringline.connect(HOST, port)
        c.send_nowait(b"partial")
        await started.wait()
        t = next(iter(server._tasks))
        assert isinstance(t, _task.Task)
        t.cancel()
        await asyncio.wait([t], timeout=5)
        c.close()
        await server.shutdown(1.0)
        return t.cancelled(), result

    cancelled, result = run(main())
    assert cancelled and result == {"cancelled": True, "ran_finally": True}


def test_taskgroup_failure_interrupts_the_handlers_receive():
    out = asyncio.Queue()

    async def failing():
        await asyncio.sleep(0.02)
        raise ValueError("child failed")

    async def handler(conn):
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(failing())
                await conn.recv_exactly(100)        # parked; never completes
        except* ValueError:
            await out.put("group failed")
        conn.send_nowait(b"after")

    async def main():
        server, port = await _serve(handler)
        c = await ringline.connect(HOST, port)
        got = await out.get()
        tail = await c.recv_exactly(5)
        c.close()
        await server.shutdown(1.0)
        return got, tail

    assert run(main()) == ("group failed", b"after")


def test_a_child_asyncio_task_receives_for_the_handler():
    # The child is an asyncio.Task: its receive takes the Future path while
    # the handler (a ringline Task) awaits the child.
    async def handler(conn):
        async def reader():
            return await conn.recv_exactly(6)
        data = await asyncio.create_task(reader())
        conn.send_nowait(data.upper())

    assert exchange(handler, [b"abc", b"def"], 6) == b"ABCDEF"


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks are 3.12+")
def test_an_eager_child_task_started_inside_a_step_gets_a_future():
    # An eager task runs its first step inside the handler's step: its
    # receive must not park the handler's Task.
    async def handler(conn):
        loop = asyncio.get_running_loop()

        async def reader():
            return await conn.recv_exactly(4)
        t = asyncio.eager_task_factory(loop, reader())
        conn.send_nowait(await t)

    assert exchange(handler, [b"ping"], 4) == b"ping"


def test_two_waiters_on_one_connection_is_an_error():
    out = asyncio.Queue()

    async def handler(conn):
        async def other():
            try:
                await conn.recv(10)
            except RuntimeError as exc:
                await out.put(str(exc))
        t = asyncio.get_running_loop().create_task(other())
        data = await conn.recv_exactly(3)
        await t
        conn.send_nowait(data)

    async def main():
        server, port = await _serve(handler)
        c = await ringline.connect(HOST, port)
        msg = await out.get()
        c.send_nowait(b"xyz")
        reply = await c.recv_exactly(3)
        c.close()
        await server.shutdown(1.0)
        return msg, reply

    msg, reply = run(main())
    assert "already waiting" in msg and reply == b"xyz"


def test_on_accept_may_return_any_awaitable_or_raise_at_once():
    # serve() starts the Task on on_accept(conn) itself: a plain function
    # returning an awaitable works, and one that raises is reported like a
    # failing handler (its connection closed, the others unaffected).
    errors = []

    class Reply:
        def __init__(self, conn):
            self.conn = conn

        def __await__(self):
            data = yield from self.conn.recv_exactly(3).__await__()
            self.conn.send_nowait(data[::-1])

    def awaitable_handler(conn):
        return Reply(conn)

    def raising_handler(conn):
        raise ValueError("refused at once")

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
        s1, p1 = await _serve(awaitable_handler)
        s2, p2 = await _serve(raising_handler)
        c = await ringline.connect(HOST, p1)
        c.send_nowait(b"abc")
        reply = await c.recv_exactly(3)
        d = await ringline.connect(HOST, p2)
        eof = await d.recv(10)
        c.close()
        d.close()
        await s1.shutdown(1.0)
        await s2.shutdown(1.0)
        return reply, eof

    reply, eof = run(main())
    assert reply == b"cba" and eof == b""
    assert len(errors) == 1 and isinstance(errors[0]["exception"], ValueError)
    assert errors[0]["connection"].closed


def test_a_task_collected_pending_or_with_an_unretrieved_exception_is_reported():
    import gc

    async def waits_forever(fut):
        await fut

    async def fails():
        raise ValueError("nobody looks")

    async def main():
        loop = asyncio.get_running_loop()
        seen = []
        loop.set_exception_handler(lambda lp, ctx: seen.append(ctx["message"]))
        t = _task.Task(waits_forever(loop.create_future()), loop)
        await asyncio.sleep(0)          # parked on the future, which is dropped
        del t
        gc.collect()
        t = _task.Task(fails(), loop)
        await asyncio.sleep(0)
        assert t.done()
        del t
        gc.collect()
        t = _task.Task(fails(), loop)
        await asyncio.sleep(0)
        assert isinstance(t.exception(), ValueError)    # retrieved: silent
        del t
        gc.collect()
        return seen

    # Either order: a finished task is freed (and reported) by refcounting at
    # ``del``; the pending one waits for a collection to break its cycle.
    assert sorted(run(main())) == ["Task exception was never retrieved",
                                   "Task was destroyed but it is pending!"]


@contextlib.contextmanager
def _parked_handlers(handler, n):
    """A stopped ringline loop serving ``handler`` to ``n`` plain-socket
    clients whose handlers are parked on a receive: yields (loop, socks).
    Bytes sent on the sockets while the loop is stopped complete as one
    batch of CQEs when it next runs (``send_all``)."""
    loop = ringline.new_event_loop()
    try:
        server = loop.run_until_complete(ringline.serve(handler, HOST, 0))
        socks = [socket.create_connection((HOST, server.port)) for _ in range(n)]
        try:
            loop.run_until_complete(asyncio.sleep(0.1))    # accepted and parked
            yield loop, socks
        finally:
            for s in socks:
                s.close()
            server.close()
            loop.run_until_complete(asyncio.sleep(0.05))
    finally:
        loop.close()


def _send_all(socks):
    for i, s in enumerate(socks):
        s.sendall(bytes([65 + i]) * 3)
    time.sleep(0.05)        # in the server's sockets before the loop runs


def test_a_protocol_callback_after_a_handler_step_sees_no_current_task():
    # A handler's step leaves itself as asyncio's current task until other
    # code runs (Loop.current_left); a Protocol's data_received dispatched
    # in a later loop pass, with no callback run in between, must still see
    # no current task (and the handler sees itself).
    seen_handler = []
    seen_protocol = []

    async def handler(conn):
        while data := await conn.recv(100):
            seen_handler.append(asyncio.current_task() is not None)
            conn.send_nowait(data)

    class Proto(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            seen_protocol.append(asyncio.current_task())
            self.transport.write(data)

    loop = ringline.new_event_loop()
    try:
        native = loop.run_until_complete(ringline.serve(handler, HOST, 0))
        proto = loop.run_until_complete(loop.create_server(Proto, HOST, 0))
        port = proto.sockets[0].getsockname()[1]
        a = socket.create_connection((HOST, native.port), timeout=5)
        b = socket.create_connection((HOST, port), timeout=5)

        def client():
            for i in range(20):
                a.sendall(b"n%d" % i)
                assert a.recv(100) == b"n%d" % i
                b.sendall(b"p%d" % i)
                assert b.recv(100) == b"p%d" % i

        try:
            loop.run_until_complete(asyncio.sleep(0.05))
            loop.run_until_complete(
                asyncio.wait_for(loop.run_in_executor(None, client), 10))
        finally:
            a.close()
            b.close()
            native.close()
            proto.close()
            loop.run_until_complete(asyncio.sleep(0.05))
        assert seen_handler == [True] * 20
        assert seen_protocol == [None] * 20
    finally:
        loop.close()


def test_no_current_task_is_left_when_the_loop_stops_after_a_handler_step():
    # A handler stops the loop from its step: run_forever returns with no
    # current task left behind for the loop.
    async def handler(conn):
        await conn.recv(100)
        asyncio.get_running_loop().stop()
        await conn.recv(100)

    with _parked_handlers(handler, 1) as (loop, socks):
        socks[0].sendall(b"x")
        time.sleep(0.05)
        loop.run_forever()
        assert asyncio.tasks._current_tasks.get(loop) is None


def test_keyboardinterrupt_in_a_step_woken_by_a_batch_loses_no_other_step():
    # Three handlers are woken by the same batch of CQEs and each raises
    # KeyboardInterrupt from its step.  Each run of the loop lets one reach
    # the caller; the steps not yet run stay queued and run on the next
    # runs, each with its bytes.
    got = []

    async def handler(conn):
        got.append(await conn.recv(100))
        raise KeyboardInterrupt

    with _parked_handlers(handler, 3) as (loop, socks):
        _send_all(socks)
        for _ in range(3):
            with pytest.raises(KeyboardInterrupt):
                loop.run_until_complete(asyncio.sleep(5))
        assert sorted(got) == [b"AAA", b"BBB", b"CCC"]


def test_handlers_woken_by_one_batch_each_see_themselves_as_current_task():
    # Steps woken by the same batch of CQEs run back to back, each taking
    # over asyncio's current task from the one before; a plain callback run
    # after them sees no current task, and every byte reaches its handler.
    seen = []
    after = []

    async def handler(conn):
        me = asyncio.current_task()
        data = await conn.recv(100)
        seen.append((data, asyncio.current_task() is me))
        asyncio.get_running_loop().call_soon(lambda: after.append(asyncio.current_task()))
        data = await conn.recv(100)      # woken by the next batch (the closes)
        seen.append((data, asyncio.current_task() is me))

    with _parked_handlers(handler, 8) as (loop, socks):
        _send_all(socks)
        loop.run_until_complete(asyncio.sleep(0.05))
        for s in socks:
            s.shutdown(socket.SHUT_WR)
        time.sleep(0.05)
        loop.run_until_complete(asyncio.sleep(0.05))
        assert sorted(seen) == sorted([(bytes([65 + i]) * 3, True) for i in range(8)]
                                      + [(b"", True)] * 8)
        assert after == [None] * 8
        assert asyncio.tasks._current_tasks.get(loop) is None
