"""Misuse of the native API is loud (issue 20, item 4).

* Every method of a ``Connection`` called from a thread other than the one
  running its loop raises RuntimeError naming the method and the thread-safe
  way (``call_soon_threadsafe`` / ``run_coroutine_threadsafe``), and queues
  nothing; the thread-safe way works.
* A second ``serve()`` of a port already served fails with EADDRINUSE unless
  both asked for ``Config.reuse_port``.
* Wrong argument types are TypeErrors at the call.
* No process-wide limit changes unless ``Config.raise_fd_limit`` asks.
"""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import sys
import textwrap
import threading

import pytest

import ringline
from ringline import Config, fs
from tests.support import HOST, IO_TIMEOUT, client_socket, conn_pair, echo, recv_exactly, run
from tests.support.paths import SRC

pytestmark = pytest.mark.needs_extension

# name -> a call of that Connection method (on the client side of conn_pair)
CONN_CALLS = {
    "send_nowait": lambda c: c.send_nowait(b"from another thread"),
    "send": lambda c: c.send(b"from another thread"),
    "send_parts": lambda c: c.send_parts([b"from ", b"another thread"]),
    "recv": lambda c: c.recv(),
    "recv_exactly": lambda c: c.recv_exactly(4),
    "with_data": lambda c: c.with_data(lambda view: 0),
    "drain": lambda c: c.drain(),
    "shutdown_write": lambda c: c.shutdown_write(),
    "close": lambda c: c.close(),
    "abort": lambda c: c.abort(),
}


def _assert_loud(exc: BaseException, name: str) -> None:
    assert isinstance(exc, RuntimeError), repr(exc)
    msg = str(exc)
    assert f"{name}()" in msg
    assert "call_soon_threadsafe" in msg and "run_coroutine_threadsafe" in msg


@pytest.mark.parametrize("name", list(CONN_CALLS))
def test_connection_method_from_another_thread_raises_and_queues_nothing(name):
    async def main():
        async with conn_pair() as (srv, cli):
            try:
                await asyncio.to_thread(CONN_CALLS[name], cli)
            except RuntimeError as exc:
                _assert_loud(exc, f"Connection.{name}")
            else:
                raise AssertionError(f"Connection.{name} from another thread did not raise")
            # Nothing was queued or closed: the connection carries on, and
            # the peer gets only what the loop's thread sent.
            assert cli.queued == 0 and not cli.closed
            await cli.send(b"ping")
            assert await asyncio.wait_for(srv.recv_exactly(4), IO_TIMEOUT) == b"ping"
            assert srv.buffered == 0

    run(main)


def test_wait_closed_awaited_on_another_threads_loop_raises():
    async def main():
        async with conn_pair() as (_srv, cli):
            def other():
                return asyncio.run(cli.wait_closed())
            with pytest.raises(RuntimeError) as info:
                await asyncio.to_thread(other)
            _assert_loud(info.value, "Connection.wait_closed")

    run(main)


def test_threadsafe_entry_points_reach_the_connection():
    """What the error message recommends works: run_coroutine_threadsafe
    and call_soon_threadsafe from a plain thread."""
    async def main():
        loop = asyncio.get_running_loop()
        async with conn_pair() as (srv, cli):
            async def send_abc():
                return await cli.send(b"abc")      # runs on the loop's thread

            def worker():
                fut = asyncio.run_coroutine_threadsafe(send_abc(), loop)
                assert fut.result(IO_TIMEOUT) == 3
                loop.call_soon_threadsafe(cli.send_nowait, b"def")
            await asyncio.to_thread(worker)
            assert await asyncio.wait_for(srv.recv_exactly(6), IO_TIMEOUT) == b"abcdef"

    run(main)


def test_a_loop_that_is_not_running_accepts_calls_from_any_thread():
    """As asyncio: the check applies while the loop runs (in another thread)."""
    loop = ringline.new_event_loop(backend="uring")
    try:
        ran = []
        t = threading.Thread(target=lambda: loop.call_soon(ran.append, 1))
        t.start()
        t.join()
        loop.run_until_complete(asyncio.sleep(0))
        assert ran == [1]
    finally:
        loop.close()


def test_file_of_one_loop_used_from_another_threads_loop_raises(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"hello")

    async def main():
        f = await fs.open(path, "rb")
        try:
            def other():
                return asyncio.run(f.read())
            with pytest.raises(RuntimeError, match="another event loop"):
                await asyncio.to_thread(other)
            assert await f.read() == b"hello"
        finally:
            await f.close()

    run(main)


# ---------------------------------------------------------------------------
# serving a port twice
# ---------------------------------------------------------------------------


def test_serving_a_served_port_again_is_eaddrinuse():
    async def main():
        first = await ringline.serve(echo, HOST, 0)
        try:
            with pytest.raises(OSError) as info:
                await ringline.serve(echo, HOST, first.port)
            assert info.value.errno == errno.EADDRINUSE
            # The first server still serves.
            def client():
                with client_socket(first.port) as s:
                    s.sendall(b"still here")
                    return recv_exactly(s, 10)
            assert await asyncio.to_thread(client) == b"still here"
        finally:
            await first.shutdown(1.0)

    run(main)


def test_reuse_port_asked_for_shares_the_port():
    shared = Config(reuse_port=True)

    async def main():
        first = await ringline.serve(echo, HOST, 0, config=shared)
        second = await ringline.serve(echo, HOST, first.port, config=shared)
        try:
            assert second.port == first.port
            # Only one of the two asked: refused.
            with pytest.raises(OSError) as info:
                await ringline.serve(echo, HOST, first.port, config=Config())
            assert info.value.errno == errno.EADDRINUSE
        finally:
            await second.shutdown(1.0)
            await first.shutdown(1.0)

    run(main)


def test_default_config_does_not_set_so_reuseport():
    import socket

    async def main():
        server = await ringline.serve(echo, HOST, 0)
        try:
            s = server.sockets[0]
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 0
        finally:
            await server.shutdown(1.0)

    run(main)


# ---------------------------------------------------------------------------
# wrong argument types: TypeError at the call
# ---------------------------------------------------------------------------

BAD_CONN_ARGS = {
    "send(123)": lambda c: c.send(123),
    "send_nowait(str)": lambda c: c.send_nowait("text"),
    "send_nowait(None)": lambda c: c.send_nowait(None),
    "send_parts(5)": lambda c: c.send_parts(5),
    "send_parts([1])": lambda c: c.send_parts([b"ok", 1]),
    "recv(str)": lambda c: c.recv("x"),
    "recv_exactly(None)": lambda c: c.recv_exactly(None),
    "with_data(None)": lambda c: c.with_data(None),
    "with_data(bytes)": lambda c: c.with_data(b"not callable"),
}


@pytest.mark.parametrize("label", list(BAD_CONN_ARGS))
def test_connection_wrong_types_are_typeerrors_at_the_call(label):
    async def main():
        async with conn_pair() as (srv, cli):
            with pytest.raises(TypeError):
                BAD_CONN_ARGS[label](cli)
            # Nothing half-done: no bytes queued, the stream still works.
            assert cli.queued == 0
            cli.send_nowait(b"ok")
            assert await asyncio.wait_for(srv.recv_exactly(2), IO_TIMEOUT) == b"ok"

    run(main)


BAD_SERVE = {
    "on_accept not callable": lambda: ringline.serve(5, HOST, 0),
    "port str": lambda: ringline.serve(echo, HOST, "80"),
    "port float": lambda: ringline.serve(echo, HOST, 80.0),
    "port bool": lambda: ringline.serve(echo, HOST, True),
    "host int": lambda: ringline.serve(echo, 127, 0),
    "config int": lambda: ringline.serve(echo, HOST, 0, config=5),
    "connect port str": lambda: ringline.connect(HOST, "80"),
    "connect host None": lambda: ringline.connect(None, 80),
    "connect timeout str": lambda: ringline.connect(HOST, 80, timeout="1"),
    "fs.open mode int": lambda: fs.open("/dev/null", 5),
    "fs.read fd str": lambda: fs.read("0", 1),
    "fs.write data int": lambda: fs.write(1, 5),
}


@pytest.mark.parametrize("label", list(BAD_SERVE))
def test_serve_connect_fs_wrong_types_are_typeerrors(label):
    async def main():
        with pytest.raises(TypeError):
            await BAD_SERVE[label]()

    run(main)


def test_bad_values_are_valueerrors():
    async def main():
        with pytest.raises(ValueError):
            await ringline.serve(echo, HOST, 70000)
        with pytest.raises(ValueError):
            await ringline.connect(HOST, 80, timeout=-1)
        with pytest.raises(ValueError):
            await fs.open("/dev/null", "rq")

    run(main)


def _run_closing(**kwargs):
    coro = asyncio.sleep(0)
    try:
        ringline.run(coro, **kwargs)
    finally:
        coro.close()


@pytest.mark.parametrize("call", [
    lambda: ringline.new_event_loop("x"),
    lambda: ringline.new_event_loop(Config, backend="uring"),
    lambda: ringline.new_event_loop(backend=5),
    lambda: ringline.EventLoop({"debug": True}),
    lambda: _run_closing(config="x"),
    lambda: ringline.launch(5, bind=(HOST, 0)),
    lambda: ringline.launch(ringline.Handler, bind=HOST),
    lambda: ringline.launch(ringline.Handler, bind=(HOST, "0")),
    lambda: ringline.launch(ringline.Handler, config={}),
    lambda: ringline.launch(ringline.Handler, tick="1"),
], ids=["new_event_loop(str)", "new_event_loop(class)", "backend int", "EventLoop(dict)",
        "run config str", "launch handler int", "launch bind str", "launch port str",
        "launch config dict", "launch tick str"])
def test_loop_and_launch_wrong_types_are_typeerrors(call):
    with pytest.raises(TypeError):
        call()


# ---------------------------------------------------------------------------
# RLIMIT_NOFILE: raised only when Config.raise_fd_limit asks
# ---------------------------------------------------------------------------

_NOFILE_CHILD = textwrap.dedent("""
    import asyncio, json, resource, sys
    import ringline
    from ringline._net import stream
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))
    cfg = ringline.Config(max_connections=1000, raise_fd_limit=sys.argv[1] == "1")

    async def main():
        ns = stream.net_state_for(asyncio.get_running_loop())
        fixed = ns.use_fixed_files()
        return fixed, ns.fixed_reason

    fixed, reason = ringline.run(main(), config=cfg, backend="uring")
    print(json.dumps({"soft": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
                      "fixed": fixed, "reason": reason}))
""")


@pytest.mark.parametrize("ask", [False, True])
def test_fd_limit_is_raised_only_when_config_asks(ask):
    import json
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 1064:
        pytest.skip(f"hard RLIMIT_NOFILE {hard} below the table of 1064")
    env = dict(os.environ, PYTHONPATH=str(SRC))
    out = subprocess.run([sys.executable, "-c", _NOFILE_CHILD, "1" if ask else "0"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    if ask:
        assert got["soft"] == 1064          # max_connections + file_slots
    else:
        assert got["soft"] == 512           # left alone
        assert got["fixed"] is False
        assert "raise_fd_limit" in got["reason"] or "kernel lacks" in got["reason"], got


def test_server_close_and_shutdown_from_another_thread_raise():
    async def main():
        server = await ringline.serve(echo, HOST, 0)
        try:
            with pytest.raises(RuntimeError) as info:
                await asyncio.to_thread(server.close)
            _assert_loud(info.value, "Server.close")

            def other():
                return asyncio.run(server.shutdown(0.1))
            with pytest.raises(RuntimeError) as info:
                await asyncio.to_thread(other)
            _assert_loud(info.value, "Server.shutdown")
            assert server.is_serving()
        finally:
            await server.shutdown(1.0)

    run(main)


@pytest.mark.parametrize("name", ["send_nowait", "send", "recv", "close", "abort"])
def test_portable_backend_connection_from_another_thread_raises(name):
    """The portable backend (uvloop/asyncio's loop) makes the same check."""
    async def main():
        async with conn_pair() as (srv, cli):
            assert type(cli).__module__ == "ringline.portable.connection"
            with pytest.raises(RuntimeError) as info:
                await asyncio.to_thread(CONN_CALLS[name], cli)
            _assert_loud(info.value, f"Connection.{name}")
            assert cli.queued == 0 and not cli.closed
            await cli.send(b"ping")
            assert await asyncio.wait_for(srv.recv_exactly(4), IO_TIMEOUT) == b"ping"
        with pytest.raises(TypeError):
            cli.with_data(None)

    ringline.run(main(), backend="portable")
