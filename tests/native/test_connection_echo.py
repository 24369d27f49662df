"""The reference crate's echo scenarios (ringline 0.0.2 ``tests/echo.rs``),
ported to ringline's native Python API.

Servers run on a ringline loop (``ringline.serve`` under ``ringline.run``, or
the blocking ``ringline.launch`` in a thread); clients are plain blocking
``socket`` code in a thread -- a real peer that shares nothing with the ring.
Like the reference's ``wait_for_server``-tolerant handlers, every handler
here copes with an immediate EOF.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import struct
import threading
import time

import pytest

import ringline
from ringline import Config
from tests.support import (
    HOST,
    IO_TIMEOUT,
    SMALL,
    client_socket,
    echo_once,
    echo_queued,
    pattern,
    recv_exactly,
    recv_until_eof,
    serve_and_run,
)

pytestmark = [pytest.mark.timeout(30), pytest.mark.usefixtures("native_backend")]

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

class EchoHandler(ringline.Handler):
    async def on_accept(self, conn: ringline.Connection) -> None:
        await echo_queued(conn)


class Launched:
    """``ringline.launch`` in a thread, stopped through its ShutdownHandle."""

    def __init__(self, handler, bind=(HOST, 0), config: Config | None = None, **kw):
        self.handle = kw.pop("shutdown", None) or ringline.ShutdownHandle()
        self.error: BaseException | None = None
        self.returned = False

        def run() -> None:
            try:
                ringline.launch(handler, bind=bind, config=config, shutdown=self.handle, **kw)
                self.returned = True
            except BaseException as exc:   # reported by join()
                self.error = exc

        self.thread = threading.Thread(target=run, name="ringline-launch", daemon=True)

    @property
    def port(self) -> int:
        assert self.handle.bound is not None
        return self.handle.bound[1]

    def __enter__(self) -> Launched:
        self.thread.start()
        assert self.handle.wait_ready(5), "launch never became ready"
        if self.error is not None:
            raise self.error
        return self

    def join(self, timeout: float = 10.0) -> float:
        t0 = time.monotonic()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "launch did not return"
        if self.error is not None:
            raise self.error
        assert self.returned
        return time.monotonic() - t0

    def __exit__(self, *exc: object) -> None:
        self.handle.shutdown()
        self.join()


# ---------------------------------------------------------------------------
# echo
# ---------------------------------------------------------------------------


def test_echo_small_message_launch():
    msg = b"hello, ringline!\n"
    with Launched(EchoHandler, config=SMALL) as srv:
        assert echo_once(srv.port, msg) == msg
    # __exit__: shutdown() from this thread, launch() returned without error.


def test_async_echo_small_message():
    msg = b"hello from async echo!"
    assert serve_and_run(echo_queued, lambda port: echo_once(port, msg), config=SMALL) == msg


@pytest.mark.parametrize("size", [4096, 8192, 100_000])
def test_echo_large_message(size):
    # Spans several 4 KiB provided buffers; order across buffers must hold.
    msg = pattern(size)
    with Launched(EchoHandler, config=SMALL) as srv:
        assert echo_once(srv.port, msg) == msg


def test_async_echo_large_message():
    msg = pattern(8192, seed=3)
    assert serve_and_run(echo_queued, lambda port: echo_once(port, msg), config=SMALL) == msg


def test_echo_multiple_connections():
    def client(port):
        def one(i):
            msg = f"client-{i}:".encode() + pattern(3000 + i, seed=i)
            with client_socket(port) as s:
                # In two pieces, so the connections interleave on the server.
                s.sendall(msg[:1000])
                time.sleep(0.01)
                s.sendall(msg[1000:])
                return recv_exactly(s, len(msg)) == msg
        with concurrent.futures.ThreadPoolExecutor(4) as ex:
            return list(ex.map(one, range(4)))

    assert serve_and_run(echo_queued, client, config=SMALL) == [True] * 4


def test_echo_multiple_connections_launch():
    with Launched(EchoHandler, config=SMALL) as srv:
        with concurrent.futures.ThreadPoolExecutor(4) as ex:
            msgs = [f"thread {i} says hi".encode() * (i + 1) for i in range(4)]
            assert list(ex.map(lambda m: echo_once(srv.port, m), msgs)) == msgs


def test_echo_sequential_sends():
    def client(port):
        with client_socket(port) as s:
            for i in range(10):
                msg = f"round {i}: ".encode() + pattern(i * 100 + 1, seed=i)
                s.sendall(msg)
                assert recv_exactly(s, len(msg)) == msg
        return True

    assert serve_and_run(echo_queued, client, config=SMALL)


# A reset peer fails its handler's recv: reported, and that is the point.
@pytest.mark.expect_loop_errors
def test_connection_close_on_client_disconnect():
    active = 0
    finished = 0

    async def handler(conn):
        nonlocal active, finished
        active += 1
        try:
            await echo_queued(conn)
        finally:
            active -= 1
            finished += 1

    def client(port):
        for i in range(10):
            s = client_socket(port)
            if i % 3 == 1:
                s.sendall(b"half a message")            # dropped with data unread
            elif i % 3 == 2:                            # dropped with a reset
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        msg = b"still echoing after 10 drops"
        return echo_once(port, msg) == msg

    assert serve_and_run(handler, client, config=SMALL)
    # Every dropped connection's handler saw EOF (or an error) and ended.
    assert finished == 11 and active == 0


def test_dropped_clients_handlers_end_while_serving():
    """The handlers of dropped clients finish while the server still runs."""

    async def main():
        ended = asyncio.Event()
        count = 0

        async def handler(conn):
            nonlocal count
            try:
                await echo_queued(conn)
            except OSError:
                pass
            finally:
                count += 1
                if count == 10:
                    ended.set()

        server = await ringline.serve(handler, HOST, 0)

        def drop_all(port):
            for i in range(10):
                s = client_socket(port)
                if i % 2:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()

        await asyncio.to_thread(drop_all, server.port)
        async with asyncio.timeout(5):
            await ended.wait()
        await server.shutdown(1.0)
        return count

    assert ringline.run(main(), config=SMALL) == 10


# ---------------------------------------------------------------------------
# shutdown
# ---------------------------------------------------------------------------


def test_graceful_shutdown_after_traffic():
    srv = Launched(EchoHandler, config=SMALL)
    with srv:
        for i in range(5):
            msg = f"message {i}".encode()
            assert echo_once(srv.port, msg) == msg
        port = srv.port
    # launch() returned; the listener is gone.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((HOST, port), timeout=IO_TIMEOUT).close()


def test_graceful_shutdown_with_idle_client():
    """A client that stays connected does not keep launch() from returning:
    it is closed within Config.shutdown_timeout and sees EOF (or a reset)."""
    cfg = SMALL.replace(shutdown_timeout=0.5)
    srv = Launched(EchoHandler, config=cfg)
    with srv:
        idle = client_socket(srv.port)
        assert echo_once(srv.port, b"x") == b"x"
        idle.sendall(b"ping")
        assert recv_exactly(idle, 4) == b"ping"
        srv.handle.shutdown()
        took = srv.join()
        assert took < 0.5 + 2.0
        try:
            assert idle.recv(10) == b""
        except ConnectionResetError:
            pass
        idle.close()


def test_graceful_shutdown_with_idle_client_is_prompt():
    srv = Launched(EchoHandler, config=SMALL)       # shutdown_timeout=2.0
    with srv:
        idle = client_socket(srv.port)
        idle.sendall(b"ping")
        assert recv_exactly(idle, 4) == b"ping"
        srv.handle.shutdown()
        took = srv.join()
        idle.close()
        assert took < 1.0, f"shutdown took {took:.2f}s with nothing to drain"


def test_shutdown_lets_queued_sends_drain():
    """Sends queued by a handler that already returned still reach the peer
    when shutdown is requested (bounded by Config.shutdown_timeout)."""
    started = threading.Event()
    payload = pattern(16 << 20, seed=9)

    class Sender(ringline.Handler):
        async def on_accept(self, conn):
            if not await conn.recv():
                return
            conn.send_nowait(payload)
            started.set()

    with Launched(Sender, config=SMALL) as srv:
        s = client_socket(srv.port)
        s.sendall(b"go")
        assert started.wait(5)
        srv.handle.shutdown()
        got = recv_until_eof(s)
        s.close()
    assert len(got) == len(payload), f"peer got {len(got)} of {len(payload)} bytes"
    assert got == payload


def test_launch_class_uses_create_for_worker():
    made = []

    class H(EchoHandler):
        @classmethod
        def create_for_worker(cls, worker_id):
            made.append(worker_id)
            return cls()

    with Launched(H, config=SMALL, worker_id=7) as srv:
        assert echo_once(srv.port, b"w7") == b"w7"
    assert made == [7]


def test_shutdown_write_triggers_eof():
    got_after = []

    async def handler(conn):
        data = await conn.recv()
        if not data:
            return
        conn.send_nowait(data)
        conn.shutdown_write()
        # Half-close: we can still receive.
        while more := await conn.recv():
            got_after.append(more)

    def client(port):
        with client_socket(port) as s:
            s.sendall(b"echo then EOF")
            got = recv_until_eof(s)
            s.sendall(b"after")          # the server's read side is still open
            s.shutdown(socket.SHUT_WR)
            assert recv_until_eof(s) == b""
            return got

    assert serve_and_run(handler, client, config=SMALL) == b"echo then EOF"
    assert b"".join(got_after) == b"after"


def test_shutdown_write_ordered_after_queued_sends():
    """FIN goes out after everything queued before shutdown_write()
    (pitfall 8: v0.0.2 sent the SHUTDOWN SQE at once)."""
    payload = pattern(3 << 20, seed=1)

    async def handler(conn):
        if not await conn.recv():
            return
        conn.send_nowait(payload[:1000])
        conn.send_nowait(bytearray(payload[1000:200_000]))    # pool-copied
        conn.send_nowait(payload[200_000:])
        conn.shutdown_write()
        await conn.recv()

    def client(port):
        with client_socket(port) as s:
            s.sendall(b"go")
            return recv_until_eof(s)

    assert serve_and_run(handler, client, config=SMALL) == payload


def test_request_shutdown_from_handler():
    handle = ringline.ShutdownHandle()

    class H(ringline.Handler):
        async def on_accept(self, conn):
            data = await conn.recv()
            if data == b"shutdown":
                conn.send_nowait(b"bye")
                handle.shutdown()          # from the worker's own thread
            await conn.recv()

    srv = Launched(H, config=SMALL, shutdown=handle)
    srv.thread.start()
    assert handle.wait_ready(5)
    with client_socket(srv.port) as s:
        s.sendall(b"shutdown")
        assert recv_exactly(s, 3) == b"bye"
    # Nobody calls shutdown() from outside: the worker exits by itself.
    srv.join(5)
    assert handle.requested


def test_request_shutdown_from_on_tick():
    ticks = []

    class H(EchoHandler):
        def on_tick(self, ctx):
            ticks.append((ctx.worker_id, ctx.loop is asyncio.get_running_loop()))
            if len(ticks) == 3:
                ctx.request_shutdown()

    srv = Launched(H, config=SMALL, worker_id=2, tick=0.01)
    srv.thread.start()
    srv.join(5)
    assert ticks[:3] == [(2, True)] * 3


def test_on_start_client_only():
    """No bind: on_start connects out (to a ringline echo_queued), echoes, and asks
    the worker to stop; launch() then returns by itself."""
    result = []

    with Launched(EchoHandler, config=SMALL) as backend:
        handle = ringline.ShutdownHandle()

        class Client(ringline.Handler):
            async def on_start(self):
                conn = await ringline.connect(HOST, backend.port)
                try:
                    await conn.send(b"ON_START")
                    result.append(await conn.recv_exactly(8))
                finally:
                    conn.close()
                    await conn.wait_closed()
                handle.shutdown()

        client = Launched(Client, bind=None, config=SMALL, shutdown=handle)
        client.thread.start()
        client.join(5)
        assert handle.bound is None
    assert result == [b"ON_START"]


def test_signal_handlers_restored_after_launch_in_main_thread():
    import signal

    before = signal.getsignal(signal.SIGTERM)
    handle = ringline.ShutdownHandle()
    threading.Timer(0.05, handle.shutdown).start()
    ringline.launch(EchoHandler, bind=(HOST, 0), config=SMALL, shutdown=handle)
    assert signal.getsignal(signal.SIGTERM) is before


def test_sigterm_stops_launch_in_main_thread():
    import os
    import signal

    handle = ringline.ShutdownHandle()

    def kill():
        if handle.wait_ready(5):
            os.kill(os.getpid(), signal.SIGTERM)

    t = threading.Thread(target=kill)
    t.start()
    t0 = time.monotonic()
    ringline.launch(EchoHandler, bind=(HOST, 0), config=SMALL, shutdown=handle)
    t.join()
    assert handle.requested
    assert time.monotonic() - t0 < 5



# ---------------------------------------------------------------------------
# several workers
# ---------------------------------------------------------------------------


def test_multi_worker_echo_and_shutdown():
    """Two launch() workers share a port through SO_REUSEPORT; clients are
    served by either; both return after shutdown."""
    shared = SMALL.replace(reuse_port=True)     # both must ask to share the port
    with Launched(EchoHandler, config=shared, worker_id=0) as w0:
        with Launched(EchoHandler, bind=(HOST, w0.port), config=shared, worker_id=1) as w1:
            assert w1.port == w0.port
            for i in range(4):
                msg = b"multi worker %d" % i
                assert echo_once(w0.port, msg) == msg


# ---------------------------------------------------------------------------
# launch edge cases
# ---------------------------------------------------------------------------


def test_shutdown_requested_before_launch_returns_at_once():
    handle = ringline.ShutdownHandle()
    handle.shutdown()
    t0 = time.monotonic()
    ringline.launch(EchoHandler, bind=(HOST, 0), config=SMALL, shutdown=handle,
                    handle_signals=False)
    assert time.monotonic() - t0 < 2
    assert handle.wait_ready(0)


def test_launch_bind_error_raises_cleanly():
    import errno

    taken = socket.socket()
    taken.bind((HOST, 0))
    taken.listen(1)
    try:
        handle = ringline.ShutdownHandle()
        with pytest.raises(OSError) as ei:
            ringline.launch(EchoHandler, bind=(HOST, taken.getsockname()[1]),
                            config=SMALL.replace(reuse_port=False), shutdown=handle,
                            handle_signals=False)
        assert ei.value.errno == errno.EADDRINUSE
        assert handle.wait_ready(0)          # waiters are released, bound stays None
        assert handle.bound is None
    finally:
        taken.close()


def test_launch_on_start_error_propagates():
    class Broken(EchoHandler):
        async def on_start(self):
            raise LookupError("on_start failed")

    with pytest.raises(LookupError):
        ringline.launch(Broken, bind=(HOST, 0), config=SMALL, handle_signals=False)
