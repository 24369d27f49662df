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

pytestmark = pytest.mark.timeout(30)

HOST = "127.0.0.1"
IO_TIMEOUT = 5.0

# The reference's test_config(): small ring, 4 KiB provided buffers, so any
# message above 4 KiB spans several buffers.
SMALL = Config(sq_entries=64, recv_buffer_count=64, recv_buffer_size=4096,
               max_connections=64, send_pool_slots=64, shutdown_timeout=2.0)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def pattern(n: int, seed: int = 0) -> bytes:
    """``n`` bytes that differ at every offset of a 251-byte period."""
    period = bytes((i * 7 + seed) % 251 for i in range(251))
    return (period * (n // 251 + 1))[:n]


def client_socket(port: int) -> socket.socket:
    s = socket.create_connection((HOST, port), timeout=IO_TIMEOUT)
    s.settimeout(IO_TIMEOUT)
    return s


def recv_exactly(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"EOF after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def recv_until_eof(s: socket.socket, limit: int = 1 << 26) -> bytes:
    buf = bytearray()
    while len(buf) <= limit:
        chunk = s.recv(65536)
        if not chunk:
            return bytes(buf)
        buf += chunk
    raise AssertionError("peer never closed")


def echo_once(port: int, message: bytes) -> bytes:
    with client_socket(port) as s:
        s.sendall(message)
        return recv_exactly(s, len(message))


async def echo(conn: ringline.Connection) -> None:
    while data := await conn.recv():
        conn.send_nowait(data)


class EchoHandler(ringline.Handler):
    async def on_accept(self, conn: ringline.Connection) -> None:
        await echo(conn)


def serve_and_run(on_accept, client, *, config: Config | None = None,
                  setup=None, timeout: float = 15.0):
    """Serve ``on_accept`` on a fresh ringline loop, run the blocking
    ``client(port)`` in a thread and return its result.  ``setup`` (an async
    callable) runs first on the loop and its result is passed as
    ``client(port, extra)``."""

    async def main():
        extra = await setup() if setup is not None else None
        server = await ringline.serve(on_accept, HOST, 0)
        try:
            async with asyncio.timeout(timeout):
                if setup is None:
                    return await asyncio.to_thread(client, server.port)
                return await asyncio.to_thread(client, server.port, extra)
        finally:
            await server.shutdown(1.0)

    return ringline.run(main(), config=config)


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


def dead_port() -> int:
    """A loopback port nobody listens on (connecting is refused)."""
    s = socket.socket()
    s.bind((HOST, 0))
    port = s.getsockname()[1]
    s.close()
    return port


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
    assert serve_and_run(echo, lambda port: echo_once(port, msg), config=SMALL) == msg


@pytest.mark.parametrize("size", [4096, 8192, 100_000])
def test_echo_large_message(size):
    # Spans several 4 KiB provided buffers; order across buffers must hold.
    msg = pattern(size)
    with Launched(EchoHandler, config=SMALL) as srv:
        assert echo_once(srv.port, msg) == msg


def test_async_echo_large_message():
    msg = pattern(8192, seed=3)
    assert serve_and_run(echo, lambda port: echo_once(port, msg), config=SMALL) == msg


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

    assert serve_and_run(echo, client, config=SMALL) == [True] * 4


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

    assert serve_and_run(echo, client, config=SMALL)


def test_connection_close_on_client_disconnect():
    active = 0
    finished = 0

    async def handler(conn):
        nonlocal active, finished
        active += 1
        try:
            await echo(conn)
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
                await echo(conn)
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
    """No bind: on_start connects out (to a ringline echo), echoes, and asks
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
# tasks, sleep, timeout
# ---------------------------------------------------------------------------


def test_spawn_standalone_task():
    counter = 0
    tasks = set()

    async def bump():
        nonlocal counter
        await asyncio.sleep(0)
        counter += 1

    async def handler(conn):
        t = asyncio.get_running_loop().create_task(bump())
        tasks.add(t)
        t.add_done_callback(tasks.discard)
        await echo(conn)

    def client(port):
        for i in range(3):
            assert echo_once(port, b"spawn %d" % i) == b"spawn %d" % i
        return True

    assert serve_and_run(handler, client, config=SMALL)
    assert counter >= 3


def test_sleep_completes():
    async def handler(conn):
        data = await conn.recv()
        if not data:
            return

        async def later():
            await asyncio.sleep(0.05)
            conn.send_nowait(data)

        await asyncio.create_task(later())

    def client(port):
        with client_socket(port) as s:
            t0 = time.monotonic()
            s.sendall(b"delayed")
            assert recv_exactly(s, 7) == b"delayed"
            return time.monotonic() - t0

    assert serve_and_run(handler, client, config=SMALL) >= 0.03


def test_timeout_ok_and_expires():
    async def ready():
        return 42

    async def handler(conn):
        if not await conn.recv():
            return
        async with asyncio.timeout(10):
            v = await ready()
        conn.send_nowait(b"OK:%d;" % v)
        try:
            async with asyncio.timeout(0.02):
                await asyncio.sleep(10)
            conn.send_nowait(b"NOT ELAPSED")
        except TimeoutError:
            conn.send_nowait(b"ELAPSED")

    def client(port):
        with client_socket(port) as s:
            t0 = time.monotonic()
            s.sendall(b"go")
            out = recv_until_eof(s)
            return out, time.monotonic() - t0

    out, took = serve_and_run(handler, client, config=SMALL)
    assert out == b"OK:42;ELAPSED"
    assert took < 5


def test_recv_timeout_with_wait_for():
    """A receive that times out (asyncio.wait_for) raises TimeoutError and
    the connection stays usable."""

    async def handler(conn):
        try:
            await asyncio.wait_for(conn.recv(), 0.05)
            conn.send_nowait(b"unexpected data")
        except TimeoutError:
            conn.send_nowait(b"TIMEOUT")

    def client(port):
        with client_socket(port) as s:
            return recv_until_eof(s)

    assert serve_and_run(handler, client, config=SMALL) == b"TIMEOUT"


# ---------------------------------------------------------------------------
# outbound connections
# ---------------------------------------------------------------------------


async def start_echo_backend():
    return await ringline.serve(echo, HOST, 0)


def test_outbound_connect_and_proxy():
    """A handler connects to a backend ringline echo server and forwards both
    ways (wake-ups cross connections within one loop)."""
    backend_port = None

    async def pump(src, dst):
        while data := await src.recv():
            dst.send_nowait(data)
            await dst.drain()
        dst.shutdown_write()

    async def proxy(conn):
        up = await ringline.connect(HOST, backend_port)
        try:
            assert up.is_outbound and not conn.is_outbound
            assert up.peer_addr == (HOST, backend_port)
            await asyncio.gather(pump(conn, up), pump(up, conn))
        finally:
            up.close()

    async def setup():
        nonlocal backend_port
        backend = await start_echo_backend()
        backend_port = backend.port
        return backend

    def client(port, backend):
        small = b"twenty-seven bytes message!"
        assert len(small) == 27
        big = pattern(4096, seed=5)
        with client_socket(port) as s:
            s.sendall(small)
            assert recv_exactly(s, 27) == small
            s.sendall(big)
            assert recv_exactly(s, 4096) == big
            s.shutdown(socket.SHUT_WR)
            assert recv_until_eof(s) == b""
        return True

    assert serve_and_run(proxy, client, config=SMALL, setup=setup)


def test_outbound_connect_refused():
    port = dead_port()

    async def handler(conn):
        if not await conn.recv():
            return
        try:
            up = await ringline.connect(HOST, port)
        except ConnectionRefusedError as exc:
            conn.send_nowait(f"ERR:{type(exc).__name__}:{exc.errno}".encode())
        else:
            up.close()
            conn.send_nowait(b"connected?!")

    def client(p):
        with client_socket(p) as s:
            s.sendall(b"go")
            return recv_until_eof(s)

    import errno
    assert serve_and_run(handler, client, config=SMALL) == \
        f"ERR:ConnectionRefusedError:{errno.ECONNREFUSED}".encode()


def test_standalone_connect_refused():
    port = dead_port()

    async def main():
        with pytest.raises(ConnectionRefusedError):
            await ringline.connect(HOST, port)
        with pytest.raises(ConnectionRefusedError):
            await ringline.connect(HOST, port, timeout=5)

    ringline.run(main(), config=SMALL)


def test_multiple_outbound_from_one_task():
    ports = {}

    async def fixed(reply):
        async def h(conn):
            if await conn.recv():
                conn.send_nowait(reply)
        return await ringline.serve(h, HOST, 0)

    async def setup():
        ports["a"] = (await fixed(b"AA")).port
        ports["b"] = (await fixed(b"BB")).port

    async def handler(conn):
        if not await conn.recv():
            return
        a = await ringline.connect(HOST, ports["a"])
        b = await ringline.connect(HOST, ports["b"])
        try:
            a.send_nowait(b"?")
            b.send_nowait(b"?")
            conn.send_nowait(await a.recv_exactly(2) + await b.recv_exactly(2))
        finally:
            a.close()
            b.close()

    def client(port, _):
        with client_socket(port) as s:
            s.sendall(b"go")
            return recv_until_eof(s)

    assert serve_and_run(handler, client, config=SMALL, setup=setup) == b"AABB"


@pytest.mark.parametrize("winner", ["first", "second"])
def test_select_two_connections(winner):
    """asyncio.wait(FIRST_COMPLETED) over two with_data/recv returns the
    connection that actually got data."""
    ports = {}

    async def replier(delay, reply):
        async def h(conn):
            if await conn.recv():
                await asyncio.sleep(delay)
                conn.send_nowait(reply)
                await conn.recv()
        return await ringline.serve(h, HOST, 0)

    async def setup():
        slow, fast = (5.0, 0.0) if winner == "second" else (0.0, 5.0)
        ports["a"] = (await replier(slow, b"LEFT")).port
        ports["b"] = (await replier(fast, b"RIGHT")).port

    async def handler(conn):
        if not await conn.recv():
            return
        a = await ringline.connect(HOST, ports["a"])
        b = await ringline.connect(HOST, ports["b"])
        try:
            a.send_nowait(b"?")
            b.send_nowait(b"?")
            got = {}

            def grab(name):
                def parse(view):
                    got[name] = bytes(view)
                    return len(view)
                return parse

            ta = asyncio.ensure_future(a.with_data(grab("Left")))
            tb = asyncio.ensure_future(b.recv())
            done, pending = await asyncio.wait({ta, tb}, return_when=asyncio.FIRST_COMPLETED)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if ta in done:
                conn.send_nowait(b"Left:" + got["Left"])
            else:
                conn.send_nowait(b"Right:" + tb.result())
        finally:
            a.close()
            b.close()

    def client(port, _):
        with client_socket(port) as s:
            s.sendall(b"go")
            return recv_until_eof(s)

    expected = b"Right:RIGHT" if winner == "second" else b"Left:LEFT"
    assert serve_and_run(handler, client, config=SMALL, setup=setup) == expected


def test_select_with_sleep_many_rounds():
    """300 rounds of wait(with_data, sleep(60)): the losing sleeps are
    cancelled and leave nothing behind."""

    async def handler(conn):
        rounds = 0
        while True:
            rd = asyncio.ensure_future(conn.with_data(lambda v: len(v)))
            sl = asyncio.ensure_future(asyncio.sleep(60))
            done, _ = await asyncio.wait({rd, sl}, return_when=asyncio.FIRST_COMPLETED)
            sl.cancel()
            assert rd in done
            if rd.result() == 0:
                break
            rounds += 1
            conn.send_nowait(b"%d;" % rounds)

    def client(port):
        with client_socket(port) as s:
            for i in range(300):
                s.sendall(b"x")
                want = b"%d;" % (i + 1)
                assert recv_exactly(s, len(want)) == want
        return True

    async def main():
        server = await ringline.serve(handler, HOST, 0)
        try:
            await asyncio.to_thread(client, server.port)
        finally:
            await server.shutdown(1.0)
        loop = asyncio.get_running_loop()
        # No cancelled 60 s timers pile up in the loop.
        return sum(1 for h in getattr(loop, "_scheduled", []) if not h.cancelled())

    assert ringline.run(main(), config=SMALL) <= 1


def test_standalone_task_connects_and_replies_on_client_conn():
    backend = {}
    tasks = set()

    async def setup():
        backend["port"] = (await start_echo_backend()).port

    async def via_backend(conn):
        up = await ringline.connect(HOST, backend["port"])
        try:
            up.send_nowait(b"STANDALONE")
            conn.send_nowait(b"got:" + await up.recv_exactly(10))
        finally:
            up.close()

    async def handler(conn):
        if not await conn.recv():
            return
        t = asyncio.get_running_loop().create_task(via_backend(conn))
        tasks.add(t)
        await t

    def client(port, _):
        with client_socket(port) as s:
            s.sendall(b"go")
            return recv_until_eof(s)

    assert serve_and_run(handler, client, config=SMALL, setup=setup) == b"got:STANDALONE"


# ---------------------------------------------------------------------------
# sends
# ---------------------------------------------------------------------------


def test_send_await_basic():
    async def handler(conn):
        if not await conn.recv():
            return
        n = await conn.send(b"SEND_AWAIT_OK")
        conn.send_nowait(b"OK:%d" % n)

    def client(port):
        with client_socket(port) as s:
            s.sendall(b"go")
            return recv_until_eof(s)

    assert serve_and_run(handler, client, config=SMALL) == b"SEND_AWAIT_OKOK:13"


def test_send_await_result_is_per_send():
    """An awaited send queued behind a send_nowait resolves with its own
    count (pitfall 9: v0.0.2 had one result slot per connection)."""
    big = pattern(2 << 20, seed=2)

    async def handler(conn):
        if not await conn.recv():
            return
        conn.send_nowait(big)
        f1 = conn.send(bytearray(b"abc"))
        f2 = conn.send(memoryview(b"0123456789"))
        r = await asyncio.gather(f1, f2)
        conn.send_nowait(b"|%d,%d" % tuple(r))

    def client(port):
        with client_socket(port) as s:
            s.sendall(b"go")
            return recv_until_eof(s)

    assert serve_and_run(handler, client, config=SMALL) == big + b"abc0123456789|3,10"


def test_join_basic():
    async def handler(conn):
        if not await conn.recv():
            return
        a, b = await asyncio.gather(conn.send(b"HELLO"), conn.send(b"WORLD"))
        conn.send_nowait(b":%d,%d" % (a, b))

    def client(port):
        with client_socket(port) as s:
            s.sendall(b"go")
            return recv_until_eof(s)

    assert serve_and_run(handler, client, config=SMALL) == b"HELLOWORLD:5,5"


def test_gather_of_many_sends_keeps_order():
    """Sends of mixed kinds and sizes (bytes pinned, bytearray/memoryview
    copied and chunked across pool slots) hit the wire in call order and each
    future resolves with its own count."""
    parts = []
    for i in range(60):
        size = (i * 7919) % 50_000 + 1
        raw = pattern(size, seed=i)
        kind = i % 3
        parts.append(raw if kind == 0 else bytearray(raw) if kind == 1 else memoryview(raw))
    expected = b"".join(bytes(p) for p in parts)

    async def handler(conn):
        if not await conn.recv():
            return
        futs = [conn.send(p) for p in parts]
        counts = await asyncio.gather(*futs)
        assert counts == [len(p) for p in parts]
        conn.send_nowait(b"#DONE")

    def client(port):
        with client_socket(port) as s:
            s.sendall(b"go")
            return recv_until_eof(s)

    # The default pool (1024 x 16 KiB) holds every copied part at once.
    assert serve_and_run(handler, client, config=Config()) == expected + b"#DONE"


def test_send_parts():
    async def handler(conn):
        if not await conn.recv():
            return
        n = await conn.send_parts([b"HEAD", bytearray(b"-body-"), memoryview(b"TAIL")])
        conn.send_nowait(b"=%d" % n)
        assert await conn.send_parts([]) == 0

    def client(port):
        with client_socket(port) as s:
            s.sendall(b"go")
            return recv_until_eof(s)

    assert serve_and_run(handler, client, config=SMALL) == b"HEAD-body-TAIL=14"


def test_join3_mixed():
    async def value_after_sleep():
        await asyncio.sleep(0.01)
        return 42

    async def handler(conn):
        def parse(view):
            return 7 if len(view) >= 7 else 0

        sent, v, consumed = await asyncio.gather(
            conn.send(b"ABC"), value_after_sleep(), conn.with_data(parse))
        conn.send_nowait(b"JOIN3:%d:%d:%d" % (sent, v, consumed))

    def client(port):
        with client_socket(port) as s:
            s.sendall(b"1234")
            time.sleep(0.02)
            s.sendall(b"567")
            return recv_until_eof(s)

    assert serve_and_run(handler, client, config=SMALL) == b"ABCJOIN3:3:42:7"


def test_mutable_buffer_may_be_reused_after_send_nowait():
    async def handler(conn):
        if not await conn.recv():
            return
        buf = bytearray(b"first")
        conn.send_nowait(buf)
        buf[:] = b"XXXXX"          # the queued copy is unaffected
        conn.send_nowait(buf)

    def client(port):
        with client_socket(port) as s:
            s.sendall(b"go")
            return recv_until_eof(s)

    assert serve_and_run(handler, client, config=SMALL) == b"firstXXXXX"


def test_handler_return_closes_gracefully_after_queued_sends():
    """A handler that returns right after send_nowait loses nothing: close
    drains the queue, then FIN (pitfall 8)."""
    payload = pattern(5 << 20, seed=4)

    async def handler(conn):
        if await conn.recv():
            conn.send_nowait(payload)

    def client(port):
        with client_socket(port) as s:
            s.sendall(b"go")
            return recv_until_eof(s)

    assert serve_and_run(handler, client, config=SMALL) == payload


# ---------------------------------------------------------------------------
# several workers
# ---------------------------------------------------------------------------


def test_multi_worker_echo_and_shutdown():
    """Two launch() workers share a port through SO_REUSEPORT; clients are
    served by either; both return after shutdown."""
    with Launched(EchoHandler, config=SMALL, worker_id=0) as w0:
        with Launched(EchoHandler, bind=(HOST, w0.port), config=SMALL, worker_id=1) as w1:
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
