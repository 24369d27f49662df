"""ringline.Connection when things go wrong: peer resets, the receive
limit, connect timeouts and refusals, a handler that raises, addresses,
and the close paths of connections and servers.

Peers are plain blocking sockets in a thread where the point is a real peer,
and ``ringline.connect`` on the same loop where the point is exact control
over what is buffered when.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import threading
import time

import pytest

import ringline
from ringline import Config
from ringline._net import stream as _stream
from ringline.errors import ConnectionClosed, ReceiveLimitExceeded
from tests.support import (
    HOST,
    IO_TIMEOUT,
    client_socket,
    conn_pair,
    echo,
    pattern,
    recv_exactly,
    recv_until_eof,
    rst_close,
    run,
    until,
)

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("native_backend")]

# ---------------------------------------------------------------------------
# failures from the peer
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["await_send", "send_nowait_drain"])
def test_peer_reset_mid_send(style):
    """The client resets (SO_LINGER 0) while the server sends a lot: the
    server's send/drain raises ConnectionResetError or BrokenPipeError, the
    handler ends, and nothing leaks (checked by the suite's fixture).

    When the receive side sees the reset first (between two sends) the
    connection is already torn down and the next send() raises
    ConnectionClosed, whose message names the reset: also a ConnectionError.
    """
    outcome = {}
    chunk = pattern(256 << 10)

    async def handler(conn):
        sent = 0
        try:
            while sent < (1 << 30):
                if style == "await_send":
                    sent += await conn.send(chunk)
                else:
                    conn.send_nowait(chunk)
                    await conn.drain()
                    sent += len(chunk)
            outcome["result"] = "sent everything?!"
        except (ConnectionResetError, BrokenPipeError) as exc:
            outcome["result"] = type(exc)
            outcome["closed_soon"] = conn
        except ConnectionClosed as exc:
            outcome["result"] = ConnectionClosed if "reset" in str(exc) else exc
            outcome["closed_soon"] = conn
        except Exception as exc:     # anything else is a failure of the test
            outcome["result"] = exc
            outcome["closed_soon"] = conn

    def client(port):
        s = client_socket(port)
        recv_exactly(s, 100_000)
        rst_close(s)

    async def main():
        server = await ringline.serve(handler, HOST, 0)
        try:
            await asyncio.to_thread(client, server.port)
            await until(lambda: "result" in outcome, what="the handler to see the reset")
            await until(lambda: outcome["closed_soon"].closed, what="the connection to close")
        finally:
            await server.shutdown(2.0)

    run(main)
    assert outcome["result"] in (ConnectionResetError, BrokenPipeError, ConnectionClosed), outcome


def test_peer_reset_while_receiving():
    got = {}

    async def handler(conn):
        try:
            while await conn.recv():
                pass
            got["r"] = "eof"
        except ConnectionResetError as exc:
            got["r"] = exc

    def client(port):
        s = client_socket(port)
        s.sendall(b"x" * 1000)
        time.sleep(0.05)
        rst_close(s)

    async def main():
        server = await ringline.serve(handler, HOST, 0)
        try:
            await asyncio.to_thread(client, server.port)
            await until(lambda: "r" in got)
        finally:
            await server.shutdown(2.0)

    run(main)
    assert isinstance(got["r"], ConnectionResetError)
    assert got["r"].errno == errno.ECONNRESET


def test_send_after_failure_raises_connection_closed():
    state = {}

    async def handler(conn):
        try:
            while True:
                await conn.send(pattern(1 << 16))
        except ConnectionError:          # reset, broken pipe, or already closed
            pass
        with pytest.raises(ConnectionClosed):
            conn.send_nowait(b"more")
        state["done"] = True

    def client(port):
        s = client_socket(port)
        recv_exactly(s, 1000)
        rst_close(s)

    async def main():
        server = await ringline.serve(handler, HOST, 0)
        try:
            await asyncio.to_thread(client, server.port)
            await until(lambda: "done" in state)
        finally:
            await server.shutdown(2.0)

    run(main)


# ---------------------------------------------------------------------------
# receive limit
# ---------------------------------------------------------------------------

LIMIT = 64 << 10


def _receive_limit_scenario(parse_style: str):
    """A handler that never consumes; the peer sends 4 MiB."""
    cfg = Config(recv_accumulator_limit=LIMIT)
    seen = {}

    async def handler(conn):
        try:
            if parse_style == "with_data":
                await conn.with_data(lambda view: 0)
            else:
                while True:                      # recv_exactly never satisfied
                    await conn.recv_exactly(LIMIT * 64)
            seen["exc"] = None
        except Exception as exc:
            seen["exc"] = exc
            seen["buffered"] = conn.buffered
        await conn.wait_closed()
        seen["closed"] = conn.closed

    def client(port):
        s = client_socket(port)
        try:
            s.sendall(b"z" * (4 << 20))
        except OSError:
            pass                                 # reset by the server: expected
        try:
            while s.recv(65536):
                pass
            end = "eof"
        except ConnectionResetError:
            end = "reset"
        s.close()
        return end

    async def main():
        server = await ringline.serve(handler, HOST, 0)
        try:
            end = await asyncio.to_thread(client, server.port)
            await until(lambda: "closed" in seen)
            return end
        finally:
            await server.shutdown(2.0)

    end = run(main, config=cfg)
    return seen, end


@pytest.mark.parametrize("parse_style", ["with_data", "recv_exactly"])
def test_receive_limit_closes_connection(parse_style):
    seen, end = _receive_limit_scenario(parse_style)
    assert isinstance(seen["exc"], ReceiveLimitExceeded), seen
    assert seen["closed"]
    assert end in ("eof", "reset")


def test_receive_limit_error_carries_the_limit():
    seen, _ = _receive_limit_scenario("with_data")
    exc = seen["exc"]
    assert isinstance(exc, ReceiveLimitExceeded)
    assert exc.limit == LIMIT
    assert str(exc).startswith(f"more than {LIMIT} received bytes")


def _fast_consumer(cfg: Config) -> tuple[str, int]:
    """A handler that consumes everything as soon as it runs; the peer sends
    8 MiB as fast as it can."""
    out = {}

    async def handler(conn):
        n = 0
        try:
            while data := await conn.recv(1 << 20):
                n += len(data)
            out["r"] = ("eof", n)
        except ReceiveLimitExceeded:
            out["r"] = ("tripped", n)

    def client(port):
        with client_socket(port) as s:
            with contextlib.suppress(OSError):
                s.sendall(b"q" * (8 << 20))
                s.shutdown(socket.SHUT_WR)
                recv_until_eof(s)

    async def main():
        server = await ringline.serve(handler, HOST, 0)
        try:
            await asyncio.to_thread(client, server.port)
            await until(lambda: "r" in out)
        finally:
            await server.shutdown(2.0)

    run(main, config=cfg)
    return out["r"]


def test_receive_limit_consumer_that_keeps_up_never_trips():
    """A limit above what one completion batch can deliver (the whole
    provided ring: count x size) never trips for a consuming handler."""
    cfg = Config(recv_buffer_count=16, recv_buffer_size=4096, recv_accumulator_limit=256 << 10)
    assert _fast_consumer(cfg) == ("eof", 8 << 20)


def test_receive_limit_below_ring_capacity_spares_a_consumer_that_keeps_up():
    cfg = Config(recv_accumulator_limit=16384)        # the smallest allowed value
    assert _fast_consumer(cfg) == ("eof", 8 << 20)


def test_receive_limit_stops_accumulating_once_tripped():
    cfg = Config(recv_accumulator_limit=16384)
    seen = {}

    async def handler(conn):
        try:
            await conn.with_data(lambda view: 0)
        except ReceiveLimitExceeded:
            seen["buffered"] = conn.buffered

    def client(port):
        with client_socket(port) as s, contextlib.suppress(OSError):
            s.sendall(b"z" * (8 << 20))
            recv_until_eof(s)

    async def main():
        server = await ringline.serve(handler, HOST, 0)
        if ringline.backend() == "uring":
            st = _stream.net_state_for(asyncio.get_running_loop()).statistics()
            seen["ring"] = st["recv_buffers"] * st["recv_buffer_size"]
        else:
            seen["ring"] = 256 << 10    # one transport read (asyncio's and uvloop's size)
        try:
            await asyncio.to_thread(client, server.port)
            await until(lambda: "buffered" in seen)
        finally:
            await server.shutdown(2.0)

    run(main, config=cfg)
    # Reading stops at the limit; what the kernel had already delivered to the
    # completion queue still lands (never dropped), bounded by one provided
    # ring's worth of buffers.
    assert seen["buffered"] <= 16384 + seen["ring"], seen



# ---------------------------------------------------------------------------
# connect
# ---------------------------------------------------------------------------


def test_connect_timeout_against_full_backlog():
    """A listener with backlog 0 that never accepts: once its accept queue is
    full, loopback SYNs are dropped and connect() times out."""

    async def main():
        ls = socket.socket()
        ls.bind((HOST, 0))
        ls.listen(0)
        port = ls.getsockname()[1]
        fillers = []
        try:
            for _ in range(3):
                f = socket.socket()
                f.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    f.connect((HOST, port))
                fillers.append(f)
            await asyncio.sleep(0.05)
            t0 = time.monotonic()
            with pytest.raises(TimeoutError):
                await ringline.connect(HOST, port, timeout=0.2)
            took = time.monotonic() - t0
            assert 0.15 < took < 2.0
        finally:
            for f in fillers:
                f.close()
            ls.close()

    run(main)


def test_connect_timeout_from_config():
    async def main():
        ls = socket.socket()
        ls.bind((HOST, 0))
        ls.listen(0)
        port = ls.getsockname()[1]
        fillers = []
        try:
            for _ in range(3):
                f = socket.socket()
                f.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    f.connect((HOST, port))
                fillers.append(f)
            await asyncio.sleep(0.05)
            with pytest.raises(TimeoutError):
                await ringline.connect(HOST, port)     # Config.connect_timeout
        finally:
            for f in fillers:
                f.close()
            ls.close()

    run(main, config=Config(connect_timeout=0.2))


def test_connect_with_tiny_timeout_is_clean():
    """timeout=1e-6 against a live server: either TimeoutError or a working
    connection, quickly, and nothing left in flight either way."""

    async def main():
        server = await ringline.serve(echo, HOST, 0)
        outcomes = []
        try:
            for _ in range(20):
                t0 = time.monotonic()
                try:
                    c = await ringline.connect(HOST, server.port, timeout=1e-6)
                except TimeoutError:
                    outcomes.append("timeout")
                else:
                    c.send_nowait(b"ok")
                    assert await c.recv_exactly(2) == b"ok"
                    c.close()
                    await c.wait_closed()
                    outcomes.append("ok")
                assert time.monotonic() - t0 < 1.0
            # A generous timeout on a live server always connects.
            c = await ringline.connect(HOST, server.port, timeout=5)
            c.close()
            await c.wait_closed()
        finally:
            await server.shutdown(2.0)
        return outcomes

    assert len(run(main)) == 20


def test_connect_ipv6_loopback():
    try:
        probe = socket.socket(socket.AF_INET6)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("no IPv6 loopback")

    async def main():
        server = await ringline.serve(echo, "::1", 0)
        try:
            c = await ringline.connect("::1", server.port)
            c.send_nowait(b"v6")
            assert await c.recv_exactly(2) == b"v6"
            assert c.peer_addr[:2] == ("::1", server.port)
            c.close()
            await c.wait_closed()
        finally:
            await server.shutdown(2.0)

    run(main)


# ---------------------------------------------------------------------------
# handler errors, addresses, close
# ---------------------------------------------------------------------------


def test_handler_exception_closes_only_its_connection():
    errors = []

    async def handler(conn):
        while data := await conn.recv():
            if data == b"boom":
                raise ValueError("handler blew up")
            conn.send_nowait(data)

    def client(port):
        with client_socket(port) as good:
            good.sendall(b"before")
            assert recv_exactly(good, 6) == b"before"
            with client_socket(port) as bad:
                bad.sendall(b"boom")
                try:
                    assert bad.recv(10) == b""
                except ConnectionResetError:
                    pass
            good.sendall(b"after")
            assert recv_exactly(good, 5) == b"after"
        with client_socket(port) as fresh:
            fresh.sendall(b"new")
            assert recv_exactly(fresh, 3) == b"new"

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
        server = await ringline.serve(handler, HOST, 0)
        try:
            await asyncio.to_thread(client, server.port)
        finally:
            await server.shutdown(2.0)

    run(main)
    assert len(errors) == 1
    ctx = errors[0]
    assert isinstance(ctx["exception"], ValueError)
    assert isinstance(ctx["connection"], ringline.Connection)
    assert ctx["connection"].closed


def test_port_zero_reports_real_port():
    async def main():
        server = await ringline.serve(echo, HOST, 0)
        try:
            assert server.port != 0
            assert server.port == server.sockets[0].getsockname()[1]
            assert server.is_serving()
            c = await ringline.connect(HOST, server.port)
            c.close()
            await c.wait_closed()
        finally:
            await server.shutdown(2.0)
        assert not server.is_serving()

    run(main)

    handle = ringline.ShutdownHandle()
    class Idle(ringline.Handler):    # the base class's on_accept raises
        async def on_accept(self, conn: ringline.Connection) -> None:
            pass

    t = threading.Thread(target=ringline.launch,
                         args=(Idle,),
                         kwargs={"bind": (HOST, 0), "shutdown": handle})
    t.start()
    try:
        assert handle.wait_ready(5)
        assert handle.bound is not None
        host, port = handle.bound
        assert host == HOST and port != 0
        socket.create_connection((HOST, port), timeout=IO_TIMEOUT).close()
    finally:
        handle.shutdown()
        t.join(10)
    assert not t.is_alive()


def test_addresses_and_direction():
    async def main():
        async with conn_pair() as (srv, cli):
            assert cli.is_outbound and not srv.is_outbound
            assert srv.peer_addr == cli.local_addr
            assert cli.peer_addr == srv.local_addr
            assert srv.local_addr[0] == HOST
            assert not srv.closed and not cli.closed
            assert "open" in repr(srv)

    run(main)


def test_close_sends_queued_data_then_fin_and_abort_drops_it():
    payload = pattern(4 << 20, seed=3)

    async def main():
        async with conn_pair() as (srv, cli):
            srv.send_nowait(payload)
            srv.close()
            srv.close()                                # idempotent
            got = bytearray()
            while data := await asyncio.wait_for(cli.recv(1 << 20), IO_TIMEOUT):
                got += data
            assert bytes(got) == payload               # everything, then FIN
            await asyncio.wait_for(srv.wait_closed(), IO_TIMEOUT)
            assert srv.closed

        async with conn_pair() as (srv, cli):
            srv.send_nowait(payload)
            srv.abort()
            await asyncio.wait_for(srv.wait_closed(), IO_TIMEOUT)
            assert srv.closed and srv.queued == 0
            got = 0
            with contextlib.suppress(ConnectionResetError):
                while data := await asyncio.wait_for(cli.recv(1 << 20), IO_TIMEOUT):
                    got += len(data)
            assert got < len(payload)

    run(main)


def test_server_context_manager_and_wait_closed():
    async def main():
        async with await ringline.serve(echo, HOST, 0) as server:
            port = server.port
            c = await ringline.connect(HOST, port)
            c.send_nowait(b"cm")
            assert await c.recv_exactly(2) == b"cm"
            c.close()
            await c.wait_closed()
        await asyncio.wait_for(server.wait_closed(), IO_TIMEOUT)
        with pytest.raises(ConnectionRefusedError):
            await ringline.connect(HOST, port)
        await server.shutdown(1.0)

    run(main)


def test_native_api_on_another_loop_is_the_portable_backend():
    # (Its behaviour is tested in tests/portable/test_portable.py.)
    async def main():
        from ringline import portable
        server = await ringline.serve(echo, HOST, 0)
        assert isinstance(server, portable.Server)
        conn = await ringline.connect(HOST, server.port)
        assert isinstance(conn, portable.Connection)
        conn.close()
        await server.shutdown(1.0)

    asyncio.run(main())


def test_proxy_to_slow_backend_throttles_instead_of_failing():
    cfg = Config(recv_accumulator_limit=1 << 20, send_queue_limit=256 << 10)
    TOTAL = 32 << 20
    ports = {}
    outcome = {}

    def slow_backend(ls):
        conn, _ = ls.accept()
        with conn:
            conn.settimeout(IO_TIMEOUT)
            time.sleep(1.0)                         # a slow consumer
            n = 0
            while data := conn.recv(1 << 20):
                n += len(data)
            outcome["backend_got"] = n

    async def proxy(conn):
        up = await ringline.connect(HOST, ports["backend"])
        try:
            while data := await conn.recv(65536):
                up.send_nowait(data)
                await up.drain()
            up.shutdown_write()
            await up.recv()
        except Exception as exc:
            outcome["proxy_error"] = exc
        finally:
            up.close()

    def client(port):
        with client_socket(port) as s:
            s.settimeout(20)
            try:
                s.sendall(b"u" * TOTAL)
                s.shutdown(socket.SHUT_WR)
                recv_until_eof(s)
                outcome["client"] = "ok"
            except OSError as exc:
                outcome["client"] = exc

    async def main():
        ls = socket.socket()
        ls.bind((HOST, 0))
        ls.listen(1)
        ports["backend"] = ls.getsockname()[1]
        bt = threading.Thread(target=slow_backend, args=(ls,))
        bt.start()
        server = await ringline.serve(proxy, HOST, 0)
        try:
            await asyncio.to_thread(client, server.port)
        finally:
            await server.shutdown(2.0)
            await asyncio.to_thread(bt.join, 20)
            ls.close()

    run(main, config=cfg)
    assert outcome.get("client") == "ok", outcome
    assert outcome.get("backend_got") == TOTAL, outcome
