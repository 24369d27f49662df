"""add_reader/add_writer: readiness on the ring, with asyncio's semantics.

Every behavioural test runs on asyncio's SelectorEventLoop, uvloop and
ringline (``tests.support.loops``): asyncio's epoll loop is the reference for
level-triggered readiness.  The ``loop`` fixture fails a test on any
unexpected call of the loop's exception handler; conftest.py checks after
each test that every SQE ringline submitted got its final CQE.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import os
import socket
import tempfile

import pytest

from tests.support import loops, run_on, until

pytestmark = pytest.mark.timeout(30)



async def iterations(n):
    """Let the loop go round ``n`` times."""
    for _ in range(n):
        await asyncio.sleep(0)


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


def removed(loop, result, expected=True):
    """remove_reader/remove_writer return whether something was removed
    (uvloop returns None)."""
    if type(loop).__module__.startswith("uvloop"):
        return True
    return result is expected


def fill_send_buffer(sock):
    """Write until the kernel says EAGAIN; return the byte count."""
    n = 0
    chunk = b"x" * 65536
    while True:
        try:
            n += sock.send(chunk)
        except BlockingIOError:
            return n


# ---------------------------------------------------------------------------
# level-triggered semantics
# ---------------------------------------------------------------------------


def test_reader_runs_again_while_data_remains(loop, pair):
    # The reader consumes one byte per call: a level-triggered loop must call
    # it again every iteration until all ten bytes are gone, then stop.
    a, b = pair
    got = []

    def on_readable():
        got.append(a.recv(1))

    async def main():
        loop.add_reader(a, on_readable)
        b.send(b"0123456789")
        await until(lambda: len(got) == 10)
        await iterations(20)
        await asyncio.sleep(0.02)
        assert removed(loop, loop.remove_reader(a))

    run_on(loop, main())
    assert b"".join(got) == b"0123456789"


def test_reader_on_pipe_partial_consumption(loop):
    r, w = os.pipe()
    os.set_blocking(r, False)
    got = []

    def on_readable():
        got.append(os.read(r, 3))

    async def main():
        loop.add_reader(r, on_readable)
        os.write(w, b"abcdefghijklmnopq")
        await until(lambda: b"".join(got) == b"abcdefghijklmnopq")
        await iterations(10)
        loop.remove_reader(r)

    try:
        run_on(loop, main())
    finally:
        os.close(r)
        os.close(w)
    assert len(got) == 6


def test_reader_runs_at_most_once_per_iteration(loop, pair):
    # A ticker re-scheduling itself with call_soon counts iterations; a
    # still-readable fd's reader must run once per iteration, not more.
    a, b = pair
    ticks = 0
    seen = []

    def tick():
        nonlocal ticks
        ticks += 1
        if len(seen) < 20:
            loop.call_soon(tick)

    def on_readable():
        seen.append(ticks)
        a.recv(1)
        if len(seen) == 20:
            loop.remove_reader(a)

    async def main():
        b.send(b"y" * 100)
        loop.add_reader(a, on_readable)
        loop.call_soon(tick)
        await until(lambda: len(seen) >= 20)

    run_on(loop, main())
    assert len(set(seen)) == len(seen), f"two runs in one iteration: {seen}"


def test_writer_level_triggered_then_removed(loop, pair):
    a, _ = pair
    calls = 0

    def on_writable():
        nonlocal calls
        calls += 1

    async def main():
        loop.add_writer(a, on_writable)
        await until(lambda: calls >= 5)
        assert removed(loop, loop.remove_writer(a))
        before = calls
        await iterations(10)
        assert calls == before
        assert removed(loop, loop.remove_writer(a), False)

    run_on(loop, main())


def test_writer_fires_when_peer_drains(loop, pair):
    a, b = pair
    fired = []

    async def main():
        sent = fill_send_buffer(a)
        loop.add_writer(a, fired.append, "w")
        await asyncio.sleep(0.05)
        assert fired == []          # full: not writable
        received = 0
        while received < sent:
            try:
                received += len(b.recv(1 << 20))
            except BlockingIOError:
                await asyncio.sleep(0.001)
        await until(lambda: fired)
        loop.remove_writer(a)

    run_on(loop, main())


def test_reader_and_writer_on_one_fd(loop, pair):
    a, b = pair
    reads, writes = [], []

    def on_readable():
        reads.append(a.recv(100))

    def on_writable():
        writes.append(1)
        if len(writes) == 3:
            loop.remove_writer(a)

    async def main():
        loop.add_reader(a, on_readable)
        loop.add_writer(a, on_writable)
        await until(lambda: len(writes) == 3)
        b.send(b"ping")
        await until(lambda: reads)
        await iterations(5)
        assert len(writes) == 3     # the writer's removal left the reader alone
        b.send(b"pong")
        await until(lambda: len(reads) == 2)
        assert removed(loop, loop.remove_reader(a))

    run_on(loop, main())
    assert reads == [b"ping", b"pong"]


def test_add_reader_replaces_previous_callback(loop, pair):
    a, b = pair
    got = []

    async def main():
        loop.add_reader(a, lambda: got.append(("first", a.recv(10))))
        loop.add_reader(a, lambda: got.append(("second", a.recv(10))))
        b.send(b"data")
        await until(lambda: got)
        await iterations(5)
        loop.remove_reader(a)

    run_on(loop, main())
    assert got == [("second", b"data")]


def test_reader_exception_goes_to_handler_and_watch_survives(loop, loop_exceptions, pair):
    a, b = pair
    calls = []

    def on_readable():
        data = a.recv(1)
        calls.append(data)
        if data == b"!":
            raise ValueError("boom")

    async def main():
        loop.add_reader(a, on_readable)
        b.send(b"!")
        await until(lambda: len(calls) == 1)
        b.send(b"k")
        await until(lambda: len(calls) == 2)
        loop.remove_reader(a)

    run_on(loop, main())
    ctxs = loop_exceptions.take()
    assert len(ctxs) == 1 and isinstance(ctxs[0]["exception"], ValueError)


def test_removing_another_fds_reader_in_the_same_iteration(loop):
    # Two fds become readable together; whichever callback runs first removes
    # the other's reader, which must then not run (asyncio cancels its handle).
    p1, p2 = socket.socketpair(), socket.socketpair()
    socks = [p1[0], p2[0]]
    for s in (*p1, *p2):
        s.setblocking(False)
    ran = []

    def cb(i):
        ran.append(i)
        loop.remove_reader(socks[1 - i])
        loop.remove_reader(socks[i])

    async def main():
        loop.add_reader(socks[0], cb, 0)
        loop.add_reader(socks[1], cb, 1)
        p1[1].send(b"x")
        p2[1].send(b"x")
        await asyncio.sleep(0.05)

    try:
        run_on(loop, main())
    finally:
        for s in (*p1, *p2):
            s.close()
    assert len(ran) == 1


# ---------------------------------------------------------------------------
# removal, closed fds, errors
# ---------------------------------------------------------------------------


def test_remove_reader_while_poll_pending(loop, pair):
    a, b = pair
    got = []

    async def main():
        loop.add_reader(a, lambda: got.append((1, a.recv(10))))
        await iterations(3)                 # the poll is armed in the kernel
        assert removed(loop, loop.remove_reader(a), True)
        assert removed(loop, loop.remove_reader(a), False)
        b.send(b"late")
        await asyncio.sleep(0.03)
        assert got == []
        # Registering again after the cancelled poll works.
        loop.add_reader(a, lambda: got.append((2, a.recv(10))))
        await until(lambda: got)
        loop.remove_reader(a)

    run_on(loop, main())
    assert got == [(2, b"late")]


def test_add_and_remove_before_the_poll_reaches_the_kernel(loop, pair):
    a, b = pair
    got = []

    async def main():
        for _ in range(50):
            loop.add_reader(a, got.append, "x")
            loop.remove_reader(a)
            loop.add_writer(a, got.append, "w")
            loop.remove_writer(a)
        b.send(b"z")
        await asyncio.sleep(0.02)

    run_on(loop, main())
    assert got == []


def test_remove_then_close_is_a_close(loop, pair):
    # With epoll, remove_reader + close() closes the socket at once; the ring
    # holds a reference to the file while a poll is armed, so the cancel must
    # reach the kernel before the fd is closed for the peer to see EOF.
    a, b = pair

    async def main():
        loop.add_reader(a, lambda: None)
        await iterations(3)
        loop.remove_reader(a)
        a.close()
        assert b.recv(10) == b""            # EOF, right away
        with pytest.raises(OSError):
            b.send(b"x" * 100000)

    run_on(loop, main())


def test_add_reader_on_closed_fd_raises_ebadf(loop):
    a, b = socket.socketpair()
    fd = a.fileno()
    a.close()
    b.close()
    with pytest.raises(OSError) as info:
        loop.add_reader(fd, lambda: None)
    assert info.value.errno == errno.EBADF
    with pytest.raises(OSError) as info:
        loop.add_writer(fd, lambda: None)
    assert info.value.errno == errno.EBADF


def test_add_reader_on_regular_file_refused_like_epoll(loop):
    with tempfile.TemporaryFile() as f:
        with pytest.raises(PermissionError):
            loop.add_reader(f.fileno(), lambda: None)


def test_fd_closed_while_registered_then_removed(loop, pair):
    # Misuse (selectors want unregister before close), but it must not hurt
    # the loop: no callback on the dead fd, remove_reader works, and after
    # the removal the socket is really closed.
    a, b = pair
    got = []
    fd = a.fileno()

    async def main():
        loop.add_reader(fd, got.append, 1)
        await iterations(3)
        a.close()
        await iterations(3)
        loop.remove_reader(fd)
        await iterations(3)
        assert b.recv(10) == b""

    run_on(loop, main())
    assert got == []


def test_callback_closes_its_fd(loop, pair):
    a, b = pair
    calls = []

    def on_readable():
        calls.append(a.recv(10))
        loop.remove_reader(a)
        a.close()

    async def main():
        loop.add_reader(a, on_readable)
        b.send(b"bye")
        await until(lambda: calls)
        await iterations(5)
        assert b.recv(10) == b""

    run_on(loop, main())
    assert calls == [b"bye"]


# ---------------------------------------------------------------------------
# life cycle
# ---------------------------------------------------------------------------


def test_reader_added_before_the_loop_first_runs(loop_factory):
    lp = loop_factory()
    a, b = socket.socketpair()
    a.setblocking(False)
    got = []
    try:
        b.send(b"early")
        lp.add_reader(a, lambda: got.append(a.recv(10)))

        async def main():
            await until(lambda: got)
            lp.remove_reader(a)

        run_on(lp, main())
        assert got == [b"early"]
    finally:
        lp.close()
        a.close()
        b.close()


def test_close_before_run_with_registered_fds(loop_factory):
    lp = loop_factory()
    a, b = socket.socketpair()
    try:
        lp.add_reader(a, lambda: None)
        lp.add_writer(b, lambda: None)
        lp.close()
    finally:
        a.close()
        b.close()


def test_close_cancels_and_reaps_armed_polls(loop_factory):
    lp = loop_factory()
    socks = [socket.socketpair() for _ in range(20)]
    try:
        for s, _ in socks:
            s.setblocking(False)
            lp.add_reader(s, lambda: None)
        lp.run_until_complete(iterations(3))
        lp.close()
        if hasattr(lp, "statistics"):
            assert lp.statistics()["slots_live"] == 0
    finally:
        for s, t in socks:
            s.close()
            t.close()


def test_reader_survives_stop_and_restart(loop, pair):
    a, b = pair
    got = []
    loop.add_reader(a, lambda: got.append(a.recv(10)))
    run_on(loop, iterations(3))
    b.send(b"one")
    run_on(loop, until(lambda: got))
    b.send(b"two")
    run_on(loop, until(lambda: len(got) == 2))
    loop.remove_reader(a)
    assert got == [b"one", b"two"]


def test_cancelled_handle_still_registered_is_dropped(loop, loop_name, pair):
    if loop_name == "uvloop":
        pytest.skip("uvloop has no Handle-returning _add_reader")
    a, b = pair
    calls = []

    async def main():
        h = loop._add_reader(a.fileno(), calls.append, 1)
        h.cancel()
        b.send(b"x")
        await asyncio.sleep(0.02)
        with pytest.raises(KeyError):
            loop._selector.get_key(a.fileno())

    run_on(loop, main())
    assert calls == []


# ---------------------------------------------------------------------------
# ringline specifics
# ---------------------------------------------------------------------------


@pytest.fixture
def rl():
    ringline = loops.require_ringline()
    lp = ringline.new_event_loop()
    recorder = loops.LoopExceptionRecorder()
    lp.set_exception_handler(recorder)
    yield lp
    if not lp.is_closed():
        lp.close()
    gc.collect()
    recorder.assert_none()


def _partial_reader_calls(lp, n=10):
    a, b = socket.socketpair()
    a.setblocking(False)
    calls = []

    def on_readable():
        calls.append(a.recv(1))

    async def main():
        lp.add_reader(a, on_readable)
        b.send(b"x" * n)
        await asyncio.sleep(0.05)
        await iterations(3 * n)
        lp.remove_reader(a)

    try:
        run_on(lp, main())
    finally:
        a.close()
        b.close()
    return len(calls)


def test_one_shot_polls_are_level_triggered(rl):
    assert not rl._selector._poller.multishot
    assert _partial_reader_calls(rl) == 10


def test_multishot_poll_alone_is_not_level_triggered(rl):
    # The measurement behind the design (see aio/poll.pyx): a multishot POLL_ADD
    # reports wake-ups, not state, so a reader that leaves data behind is not
    # called again until new data arrives.  ringline therefore re-arms a
    # one-shot poll after each run of the callbacks.
    from ringline.aio.readiness import RingSelector
    rl._selector.close()
    rl._selector = RingSelector(rl, multishot=True)
    assert _partial_reader_calls(rl) < 10


def test_no_select_and_one_watch_per_fd(rl, pair):
    a, b = pair
    sel = rl._selector
    with pytest.raises(RuntimeError):
        sel.select(0)

    async def main():
        rl.add_reader(a, lambda: None)
        rl.add_writer(a, lambda: None)
        await iterations(3)
        w = sel.watch(a.fileno())
        assert w is not None and w.want == (0x1 | 0x4)
        rl.remove_writer(a)
        await iterations(3)
        assert sel.watch(a.fileno()).want == 0x1
        rl.remove_reader(a)
        await iterations(3)
        assert sel.watch(a.fileno()) is None

    run_on(rl, main())


def test_removal_after_fire_submits_nothing(rl, pair):
    # sock_recv's pattern: add_reader, fire, remove_reader in the callback.
    # The one-shot poll already completed, so no cancel is needed.
    a, b = pair
    out = []

    def on_readable():
        out.append(a.recv(10))
        rl.remove_reader(a)

    async def main():
        b.send(b"x")
        rl.add_reader(a, on_readable)
        await until(lambda: out)
        before = rl.statistics()["sqes"]
        await iterations(5)
        assert rl.statistics()["sqes"] == before

    run_on(rl, main())


def test_idle_watch_costs_no_wakeups(rl, pair):
    a, _ = pair

    async def main():
        rl.add_reader(a, lambda: None)
        await iterations(2)
        s0 = rl.statistics()
        await asyncio.sleep(0.05)
        s1 = rl.statistics()
        assert s1["cqes"] - s0["cqes"] <= 2     # the sleep's timer only
        rl.remove_reader(a)

    run_on(rl, main())


def test_self_pipe_only_with_signal_handlers(rl):
    assert rl._ssock is None and rl._csock is None
    assert rl.statistics()["slots_live"] == 0


def test_close_from_a_foreign_thread_abandons_armed_polls(rl):
    # The ring belongs to the thread that ran the loop; closing from another
    # thread must not submit (the polls are parked, as the core does).
    import threading
    a, b = socket.socketpair()
    a.setblocking(False)
    try:
        def runner():
            rl.add_reader(a, lambda: None)
            rl.run_until_complete(iterations(3))

        t = threading.Thread(target=runner)
        t.start()
        t.join()
        assert rl._selector.watch(a.fileno()).armed          # in the kernel
        rl.close()
        assert rl.is_closed()
    finally:
        a.close()
        b.close()


def test_signal_handler_from_a_non_main_thread_is_refused(rl):
    import signal
    import threading
    errors = []

    def other():
        try:
            rl.add_signal_handler(signal.SIGUSR1, lambda: None)
        except RuntimeError as exc:
            errors.append(exc)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert errors and rl._ssock is None
