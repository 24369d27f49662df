"""Misuse of ringline's asyncio loop is loud (issue 20, item 4): its methods
called from a thread other than the one running it raise RuntimeError
naming the method; the thread-safe entry points (call_soon_threadsafe,
run_coroutine_threadsafe, and stop) work from any thread.  The exception
is asyncio's own rule for call_soon/call_later/call_at: they raise only in
debug mode (uvloop's suite calls them from another thread and expects no
error); outside it ringline makes them safe (they wake the loop).

ringline only: asyncio checks a few of these in debug mode alone, and uvloop
not at all, so the every-loop fixture does not apply.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

import ringline
from ringline.aio import _threadcheck
from tests.support import HOST, IO_TIMEOUT

pytestmark = pytest.mark.needs_extension


@pytest.fixture
def rloop():
    loop = ringline.new_event_loop(backend="uring")
    try:
        yield loop
    finally:
        loop.close()


def _noop(*_args):
    pass


async def _nothing():
    return None


def _scheduling_calls(loop, cb=_noop, delay=60):
    when = loop.time() + delay
    return {
        "call_soon": lambda: loop.call_soon(cb),
        "call_later": lambda: loop.call_later(delay, cb),
        "call_at": lambda: loop.call_at(when, cb),
    }


def _sync_calls(loop, sock, coro):
    fd = sock.fileno()
    return {
        "create_task": lambda: loop.create_task(coro),
        "add_reader": lambda: loop.add_reader(fd, _noop),
        "remove_reader": lambda: loop.remove_reader(fd),
        "add_writer": lambda: loop.add_writer(fd, _noop),
        "remove_writer": lambda: loop.remove_writer(fd),
    }


def _coro_calls(loop, sock, port):
    return {
        "sock_recv": lambda: loop.sock_recv(sock, 1),
        "sock_sendall": lambda: loop.sock_sendall(sock, b"x"),
        "create_connection": lambda: loop.create_connection(asyncio.Protocol, HOST, port),
        "create_server": lambda: loop.create_server(asyncio.Protocol, HOST, 0),
        "getaddrinfo": lambda: loop.getaddrinfo(HOST, port),
    }


def _assert_loud(exc, name):
    assert isinstance(exc, RuntimeError), repr(exc)
    assert f"{name}()" in str(exc)
    assert "call_soon_threadsafe" in str(exc)


@pytest.fixture
def socks():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    lst = socket.create_server((HOST, 0))
    yield a, b, lst.getsockname()[1]
    for s in (a, b, lst):
        s.close()


def test_every_sync_method_from_another_thread_raises(rloop, socks):
    a, _b, _port = socks
    coro = _nothing()
    calls = _sync_calls(rloop, a, coro)
    horizon = rloop.time() + 50     # call_later(60)/call_at(+60) would land beyond

    async def main():
        failures = {}
        for name, call in calls.items():
            try:
                result = await asyncio.to_thread(call)
            except RuntimeError as exc:
                _assert_loud(exc, name)
            else:
                failures[name] = result
        assert not failures, f"no error from another thread: {failures}"
        # Nothing was registered or scheduled by the refused calls.
        assert all(h.when() < horizon for h in rloop._scheduled)
        assert not rloop._selector.get_map()
        assert not [t for t in asyncio.all_tasks() if t.get_coro() is coro]

    try:
        rloop.run_until_complete(asyncio.wait_for(main(), 30))
    finally:
        coro.close()


def test_every_coroutine_method_on_another_threads_loop_raises(rloop, socks):
    """Run on a second loop in another thread, the body of a coroutine method
    of this loop refuses (it would touch this loop from the wrong thread)."""
    a, _b, port = socks
    calls = _coro_calls(rloop, a, port)

    async def main():
        for name, make in calls.items():
            def other(make=make):
                return asyncio.run(make())
            with pytest.raises(RuntimeError) as info:
                await asyncio.to_thread(other)
            _assert_loud(info.value, name)

    rloop.run_until_complete(asyncio.wait_for(main(), 30))


def test_coroutine_made_in_another_thread_runs_through_run_coroutine_threadsafe(rloop, socks):
    """Creating the coroutine elsewhere is fine: its body runs on the loop."""
    _a, _b, port = socks

    async def main():
        loop = asyncio.get_running_loop()

        def other():
            fut = asyncio.run_coroutine_threadsafe(
                loop.create_connection(asyncio.Protocol, HOST, port), loop)
            transport, _ = fut.result(IO_TIMEOUT)
            loop.call_soon_threadsafe(transport.close)
            return transport.get_extra_info("peername")[1]

        assert await asyncio.to_thread(other) == port

    rloop.run_until_complete(asyncio.wait_for(main(), 30))


def test_call_soon_threadsafe_runs_the_callback(rloop):
    async def main():
        got = asyncio.get_running_loop().create_future()
        threading.Thread(target=rloop.call_soon_threadsafe,
                         args=(got.set_result, 42)).start()
        assert await asyncio.wait_for(got, IO_TIMEOUT) == 42

    rloop.run_until_complete(main())


def test_stop_from_another_thread_wakes_a_waiting_loop(rloop):
    """stop() is thread-safe on ringline: the loop leaves its wait at once
    (nothing else is scheduled to wake it)."""
    started = threading.Event()
    rloop.call_soon(started.set)
    t = threading.Thread(target=lambda: (started.wait(IO_TIMEOUT), time.sleep(0.1),
                                         rloop.stop()))
    t.start()
    t0 = time.monotonic()
    rloop.run_forever()
    t.join()
    assert time.monotonic() - t0 < 5


def test_checked_names_exist_and_are_wrapped():
    """The list in aio/_threadcheck.py names real methods (a typo would
    silently leave one unchecked)."""
    for name in _threadcheck.CHECKED:
        fn = getattr(ringline.EventLoop, name)
        assert fn.__name__ == name
        assert fn.__code__.co_name in ("checked", "checked_coro"), name


def test_scheduling_from_another_thread_raises_in_debug_mode(rloop):
    """call_soon/call_later/call_at: loud in debug mode, as in asyncio."""
    rloop.set_debug(True)

    async def main():
        for name, call in _scheduling_calls(rloop).items():
            with pytest.raises(RuntimeError) as info:
                await asyncio.to_thread(call)
            _assert_loud(info.value, name)

    horizon = rloop.time() + 50
    rloop.run_until_complete(asyncio.wait_for(main(), 30))
    assert all(h.when() < horizon for h in rloop._scheduled)


def test_scheduling_from_another_thread_is_safe_outside_debug_mode(rloop):
    """Outside debug mode (asyncio and uvloop do not check there) the call is
    not refused but made safe: the callback runs promptly because the call
    wakes the loop from its wait, as call_soon_threadsafe would (nothing else
    arrives: without the wake-up the loop would sleep until wait_for's 5 s)."""
    assert not rloop.get_debug()

    async def main():
        for name in ("call_soon", "call_later", "call_at"):
            fired = asyncio.Event()
            handles = []
            call = _scheduling_calls(rloop, cb=fired.set, delay=0.01)[name]

            def later(call=call, handles=handles):
                time.sleep(0.1)         # the loop is blocked in its wait by now
                handles.append(call())
            t = threading.Thread(target=later)
            t.start()
            t0 = time.monotonic()
            await asyncio.wait_for(fired.wait(), 5)
            assert time.monotonic() - t0 < 2, name
            t.join()
            assert callable(handles[0].cancel), name

    rloop.run_until_complete(asyncio.wait_for(main(), 30))
