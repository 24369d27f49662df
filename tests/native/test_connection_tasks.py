"""The native API beyond echo (ringline 0.0.2's ``tests/echo.rs``, continued):
standalone tasks, sleep and timeouts, outbound connections (proxying,
refused connects, select over two connections), and the send family
(awaited sends, join, send_parts, gather of many sends).

Servers run on a ringline loop; clients are plain blocking sockets in a
thread, or ringline connections on the same loop.
"""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

import ringline
from ringline import Config
from tests.support import (
    HOST,
    SMALL,
    client_socket,
    dead_port,
    echo_once,
    echo_queued,
    pattern,
    recv_exactly,
    recv_until_eof,
    serve_and_run,
)

pytestmark = [pytest.mark.timeout(30), pytest.mark.usefixtures("native_backend")]

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
        await echo_queued(conn)

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
    return await ringline.serve(echo_queued, HOST, 0)


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
