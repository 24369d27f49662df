"""The compiled loop core: dispatch, stale tags, overflow, idle waiting."""

import pytest

import ringline
from ringline._core import tags as _tags
from ringline._core.tags import Op


@pytest.fixture
def loop():
    lp = ringline.new_event_loop()
    yield lp
    lp.close()


def test_nop_completion_reaches_its_callback(loop):
    got = []
    loop._nop(lambda res, flags: got.append(res))
    loop.call_later(0.5, loop.stop)
    loop.call_soon(lambda: None)
    loop.run_until_complete(_until(loop, lambda: got))
    assert got == [0]


async def _until(loop, cond, timeout=5.0):
    import asyncio
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.001)


def test_thousand_nops_through_a_small_cq_all_complete():
    # 1,000 completions into a 16-entry CQ: the overflow list must be drained.
    lp = ringline.new_event_loop(ringline.Config(sq_entries=8, cq_entries=16))
    try:
        got = []
        async def main():
            for i in range(1000):
                lp._nop(lambda res, flags, i=i: got.append(i))
            await _until(lp, lambda: len(got) == 1000)
        lp.run_until_complete(main())
        assert sorted(got) == list(range(1000))
        assert lp.statistics()["slots_live"] == 1  # only the wake-up read remains
    finally:
        lp.close()


def test_stale_completion_is_recognised_and_dropped(loop):
    got = []
    async def main():
        tag = loop._nop(lambda res, flags: got.append(res))
        await _until(loop, lambda: got)
        op, slot, gen = _tags.decode(tag)
        before = loop.statistics()["stale_cqes"]
        # A late CQE carrying the finished op's tag (its slot may be reused).
        loop._dispatch_py(tag, -125, 0)
        # And one for a slot generation that never existed yet.
        loop._dispatch_py(_tags.encode(Op.NOP, slot, gen + 7), 0, 0)
        assert loop.statistics()["stale_cqes"] == before + 2
    loop.run_until_complete(main())
    assert got == [0]


def test_exception_in_completion_reaches_handler(loop):
    seen = []
    loop.set_exception_handler(lambda lp, ctx: seen.append(ctx))
    def boom(res, flags):
        raise ValueError("boom")
    async def main():
        loop._nop(boom)
        await _until(loop, lambda: seen)
    loop.run_until_complete(main())
    assert isinstance(seen[0]["exception"], ValueError)


def test_keyboardinterrupt_in_a_completion_loses_none_of_the_batch(loop):
    # Ten NOPs complete in one batch; the third's handler raises
    # KeyboardInterrupt.  It reaches the caller, and the seven CQEs behind it
    # stay in the ring for the next run instead of being dropped.
    got = []

    def cb(i):
        def on(res, flags):
            got.append(i)
            if i == 2:
                raise KeyboardInterrupt
        return on

    async def submit_and_wait():
        for i in range(10):
            loop._nop(cb(i))
        await _until(loop, lambda: len(got) == 10)

    with pytest.raises(KeyboardInterrupt):
        loop.run_until_complete(submit_and_wait())
    assert got == [0, 1, 2]
    loop.run_until_complete(_until(loop, lambda: len(got) == 10))
    assert got == list(range(10))


def test_close_cancels_in_flight_ops_and_reaps_them():
    lp = ringline.new_event_loop()
    lp.run_until_complete(_noop())
    assert lp.statistics()["slots_live"] == 1  # the armed eventfd read
    lp.close()
    assert lp.is_closed()
    assert lp.statistics()["slots_live"] == 0


async def _noop():
    return None


def test_loop_bound_to_first_running_thread(loop):
    import threading
    loop.run_until_complete(_noop())
    errs = []
    def other():
        coro = _noop()
        try:
            loop.run_until_complete(coro)
        except RuntimeError as e:
            errs.append(e)
            coro.close()
    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert errs and "SINGLE_ISSUER" in str(errs[0])


def test_without_single_issuer_the_loop_moves_between_threads():
    # asyncio's rule (any thread, one at a time), as aiosmtpd's unthreaded
    # controller uses it: a server made on the main thread, served by
    # run_forever on another, then the main thread runs the loop again.
    import asyncio
    import socket
    import threading

    async def echo(r, w):
        w.write(await r.readline())
        await w.drain()
        w.close()

    def exchange(port):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"hi\n")
            return s.recv(10)

    lp = ringline.new_event_loop(ringline.Config(single_issuer=False))
    try:
        server = lp.run_until_complete(asyncio.start_server(echo, "127.0.0.1", 0))
        port = server.sockets[0].getsockname()[1]
        errors = []

        def runner():
            try:
                lp.run_forever()
            except BaseException as exc:
                errors.append(exc)

        t = threading.Thread(target=runner)
        t.start()
        try:
            assert exchange(port) == b"hi\n"
        finally:
            lp.call_soon_threadsafe(lp.stop)
            t.join(5)
        assert not errors, errors

        async def client():
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"back\n")
            line = await r.readline()
            w.close()
            return line

        assert lp.run_until_complete(client()) == b"back\n"
        server.close()
        lp.run_until_complete(server.wait_closed())
    finally:
        lp.close()
    assert lp.statistics()["slots_live"] == 0     # closed by the main thread: all reaped


def test_loop_created_in_one_thread_runs_in_another():
    import threading
    lp = ringline.new_event_loop()
    out = []
    def runner():
        out.append(lp.run_until_complete(_value()))
    t = threading.Thread(target=runner)
    t.start()
    t.join()
    assert out == [42]
    coro = _noop()
    with pytest.raises(RuntimeError):
        lp.run_until_complete(coro)  # the ring now belongs to that thread
    coro.close()
    lp.close()


def _in_thread_reusing_ident(owner_ident, fn, tries=50):
    """Run ``fn`` in a new thread that got ``owner_ident`` (pthread idents
    are reused once a thread exits; usually the very next thread gets it).
    Returns fn's result, or skips when no thread reused the ident."""
    import threading
    out = []

    def attempt():
        if threading.get_ident() == owner_ident:
            try:
                out.append(("ok", fn()))
            except BaseException as exc:
                out.append(("raised", exc))

    for _ in range(tries):
        t = threading.Thread(target=attempt)
        t.start()
        t.join()
        if out:
            return out[0]
    pytest.skip("no new thread reused the exited owner's ident")


def _loop_left_by_an_exited_thread():
    """A loop run (with an accept in flight) by a thread that then exited
    without closing it (aiosmtpd's Controller on a failed bind), that
    thread's ident, and the listening socket (closed by the caller)."""
    import asyncio
    import socket
    import threading
    lp = ringline.new_event_loop()
    ident = []
    listener = socket.create_server(("127.0.0.1", 0))

    def owner():
        ident.append(threading.get_ident())
        lp.run_until_complete(asyncio.start_server(lambda r, w: None, sock=listener))

    t = threading.Thread(target=owner)
    t.start()
    t.join()
    return lp, ident[0], listener


def test_close_from_a_thread_that_reused_the_owners_ident_parks_in_flight_ops():
    # The kernel knows the issuer by task, CPython by a reusable ident: a new
    # thread with the dead owner's ident is a foreign thread (io_uring_enter
    # would fail with EEXIST), so close() parks the accept as for any other.
    lp, ident, listener = _loop_left_by_an_exited_thread()
    kind, value = _in_thread_reusing_ident(ident, lp.close)
    listener.close()
    assert kind == "ok", value
    assert lp.is_closed()


def test_run_from_a_thread_that_reused_the_owners_ident_is_refused_clearly():
    lp, ident, listener = _loop_left_by_an_exited_thread()
    coro = _noop()
    kind, value = _in_thread_reusing_ident(ident, lambda: lp.run_until_complete(coro))
    coro.close()
    lp.close()
    listener.close()
    assert kind == "raised" and isinstance(value, RuntimeError), value
    assert "SINGLE_ISSUER" in str(value)


async def _value():
    import asyncio
    await asyncio.sleep(0.001)
    return 42


def test_list_drop_all_releases_items_and_keeps_what_a_destructor_appends():
    # The ready queue and send queues are emptied in place (their item array
    # is kept for the next iteration): every item must be released, and a
    # destructor that appends to the same list while it is emptied must
    # neither be lost nor released.
    import gc
    import weakref

    from ringline._core.loop import _list_drop_all

    class Item:
        pass

    items = [Item() for _ in range(5)]
    refs = [weakref.ref(i) for i in items]
    lst = list(items)
    del items
    _list_drop_all(lst)
    assert lst == []
    assert all(r() is None for r in refs)
    lst.append(1)           # still a usable list
    assert lst == [1]

    target: list = []

    class Appender:
        def __init__(self, tag):
            self.tag = tag

        def __del__(self):
            target.append(("late", self.tag))

    gc.disable()            # the destructors must run inside the drop
    try:
        target.extend([Appender(0), Appender(1), Appender(2)])
        _list_drop_all(target)
    finally:
        gc.enable()
    # Appender 2 is dropped first; its destructor appends ("late", 2) while
    # Appender 0 and 1 are still in the list; those are dropped afterwards and
    # their own appends stay too.
    assert sorted(target) == [("late", 0), ("late", 1), ("late", 2)]
    assert all(type(x) is tuple for x in target)


def test_histograms_are_off_until_enabled_then_count():
    import asyncio as _asyncio

    import ringline as _ringline

    loop = _ringline.new_event_loop()
    try:
        assert loop.histograms() is None

        async def steps() -> None:
            for _ in range(10):
                await _asyncio.sleep(0.02)

        loop.enable_histograms()
        loop.run_until_complete(steps())
        h = loop.histograms()
        bounds, counts, total = h["loop_busy"]
        assert bounds[0] == 1e-6 and bounds[-1] == float("inf") and len(bounds) == len(counts)
        assert sum(counts) >= 10 and total > 0
        # The sleeps are waits, not busy time: far below the 200 ms slept.
        assert total < 0.1
    finally:
        loop.close()
