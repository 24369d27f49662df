"""ringline.Connection beyond the reference scenarios: scale, volume, a
starved provided-buffer ring, resets, the receive limit, connect/close
churn, and the precise semantics of with_data / recv / send / close.

Peers are plain blocking sockets in a thread where the point is a real peer,
and ``ringline.connect`` on the same loop where the point is exact control
over what is buffered when.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import inspect
import os
import selectors
import socket
import struct
import threading
import time

import pytest
from test_connection_echo import serve_and_run

import ringline
from ringline import Config
from ringline._net import stream as _stream
from ringline.errors import ConnectionClosed, ReceiveLimitExceeded, SendPoolExhausted

pytestmark = pytest.mark.timeout(60)

HOST = "127.0.0.1"
IO_TIMEOUT = 10.0


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def pattern(n: int, seed: int = 0) -> bytes:
    period = bytes((i * 7 + seed) % 251 for i in range(251))
    return (period * (n // 251 + 1))[:n]


def client_socket(port: int, host: str = HOST) -> socket.socket:
    s = socket.create_connection((host, port), timeout=IO_TIMEOUT)
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


def recv_until_eof(s: socket.socket) -> bytes:
    buf = bytearray()
    while chunk := s.recv(1 << 16):
        buf += chunk
    return bytes(buf)


def slow_reader(pause: float):
    """A blocking client for serve_and_run: sends b"go", reads nothing for
    ``pause`` seconds (the server's sends pile up), then reads to the end
    of the stream and returns the byte count."""
    def client(port: int) -> int:
        with client_socket(port) as s:
            s.sendall(b"go")
            time.sleep(pause)
            return len(recv_until_eof(s))
    return client


def rst_close(s: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer gets a RST, not a FIN."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


async def echo(conn: ringline.Connection) -> None:
    while data := await conn.recv(1 << 20):
        conn.send_nowait(data)
        await conn.drain()


async def until(pred, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


@contextlib.asynccontextmanager
async def conn_pair():
    """(server_side, client_side): two ringline Connections on this loop.

    The server side's handler holds it open until the block ends."""
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future = loop.create_future()
    release = asyncio.Event()

    async def hold(conn):
        if not accepted.done():
            accepted.set_result(conn)
        await release.wait()

    server = await ringline.serve(hold, HOST, 0)
    client = await ringline.connect(HOST, server.port)
    try:
        srv = await asyncio.wait_for(accepted, IO_TIMEOUT)
        yield srv, client
    finally:
        release.set()
        client.close()
        await asyncio.wait_for(client.wait_closed(), IO_TIMEOUT)
        await server.shutdown(2.0)


def run(coro_fn, config: Config | None = None):
    return ringline.run(coro_fn(), config=config)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def need_fds(n: int) -> None:
    """Raise the soft RLIMIT_NOFILE to ``n`` if it is lower, or skip."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < n:
        if hard != resource.RLIM_INFINITY and hard < n:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {n}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))


class StreamChecker:
    """Checks a byte stream against ``Block(k)`` on the fly: block ``k`` is
    its index (8 bytes) followed by a slice of a random base chosen by ``k``,
    so a dropped, duplicated or reordered byte anywhere is caught without
    keeping the stream."""

    BLOCK = 1 << 20

    def __init__(self) -> None:
        self.base = os.urandom(self.BLOCK + 4096)
        self.offset = 0
        self._cached = (-1, b"")

    def block(self, k: int) -> bytes:
        if self._cached[0] != k:
            shift = (k * 131) % 4096
            self._cached = (k, struct.pack("<Q", k) + self.base[shift:shift + self.BLOCK - 8])
        return self._cached[1]

    def check(self, data) -> None:
        mv = memoryview(data)
        while mv:
            k, off = divmod(self.offset, self.BLOCK)
            n = min(len(mv), self.BLOCK - off)
            if mv[:n] != memoryview(self.block(k))[off:off + n]:
                raise AssertionError(f"stream differs in block {k} near offset {self.offset}")
            self.offset += n
            mv = mv[n:]


# ---------------------------------------------------------------------------
# scale and volume
# ---------------------------------------------------------------------------


def test_1000_concurrent_connections_ringline_clients():
    """1,000 connections open at once (ringline.connect on the same loop),
    each echoing its own payload byte-exactly."""
    N = 1000
    need_fds(2 * N + 256)

    async def main():
        server = await ringline.serve(echo, HOST, 0)
        conns = await asyncio.gather(*(ringline.connect(HOST, server.port) for _ in range(N)))
        try:
            payloads = [struct.pack("<I", i) * (256 + i % 97) for i in range(N)]
            for c, p in zip(conns, payloads, strict=True):
                c.send_nowait(p)
            got = await asyncio.gather(*(c.recv_exactly(len(p))
                                         for c, p in zip(conns, payloads, strict=True)))
            assert got == payloads
        finally:
            for c in conns:
                c.close()
            await asyncio.gather(*(c.wait_closed() for c in conns))
            await server.shutdown(5.0)

    t0 = time.monotonic()
    run(main)
    assert time.monotonic() - t0 < 10


def test_1000_concurrent_connections_real_peers():
    """1,000 plain sockets, all connected before any reply is read, driven by
    a selector in a thread."""
    N = 1000
    need_fds(2 * N + 256)

    def client(port):
        sel = selectors.DefaultSelector()
        socks = []
        expect = {}
        try:
            for i in range(N):
                s = socket.create_connection((HOST, port), timeout=IO_TIMEOUT)
                socks.append(s)
                msg = b"%05d|" % i + pattern(200 + i % 300, seed=i % 200)
                s.sendall(msg)
                expect[s] = (msg, bytearray())
            for s in socks:
                s.setblocking(False)
                sel.register(s, selectors.EVENT_READ)
            left = N
            deadline = time.monotonic() + 8
            while left and time.monotonic() < deadline:
                for key, _ in sel.select(0.5):
                    s = key.fileobj
                    msg, buf = expect[s]
                    buf += s.recv(65536)
                    if len(buf) >= len(msg):
                        assert bytes(buf) == msg
                        sel.unregister(s)
                        left -= 1
            return left
        finally:
            sel.close()
            for s in socks:
                s.close()

    t0 = time.monotonic()
    assert serve_and_run(echo, client) == 0
    assert time.monotonic() - t0 < 10


def test_256_mib_through_one_connection():
    """256 MiB echoed through one connection, checked on the fly.

    The client keeps at most WINDOW bytes unanswered: ringline receives
    without TCP backpressure (the multishot recv always drains the socket),
    so a sender that outruns the echo would trip Config.recv_accumulator_limit.
    """
    TOTAL = 256 << 20
    WINDOW = 8 << 20
    src = StreamChecker()
    dst = StreamChecker()
    dst.base = src.base

    def client(port):
        s = socket.create_connection((HOST, port), timeout=IO_TIMEOUT)
        s.settimeout(30)
        err = []
        cond = threading.Condition()

        def sender():
            try:
                for k in range(TOTAL // StreamChecker.BLOCK):
                    with cond:
                        ok = cond.wait_for(
                            lambda k=k: k * StreamChecker.BLOCK - dst.offset <= WINDOW or err,
                            timeout=30)
                    if not ok or err:
                        raise TimeoutError("echo stalled")
                    s.sendall(src.block(k))
                s.shutdown(socket.SHUT_WR)
            except BaseException as exc:
                err.append(exc)

        t = threading.Thread(target=sender)
        t.start()
        buf = bytearray(1 << 20)
        try:
            while n := s.recv_into(buf):
                dst.check(memoryview(buf)[:n])
                with cond:
                    cond.notify()
        except BaseException as exc:
            err.append(exc)
            with cond:
                cond.notify()
            raise
        finally:
            t.join(30)
            s.close()
        assert not err, err
        return dst.offset

    t0 = time.monotonic()
    assert serve_and_run(echo, client, timeout=60) == TOTAL
    assert time.monotonic() - t0 < 30


def test_256_mib_one_way_each_direction():
    """256 MiB the server generates (send_nowait + drain, checked by the
    client) and 256 MiB the server consumes with with_data (checked there)."""
    TOTAL = 256 << 20
    gen = StreamChecker()
    server_check = StreamChecker()
    server_check.base = gen.base
    client_check = StreamChecker()
    client_check.base = gen.base

    async def handler(conn):
        what = await conn.recv_exactly(4)
        if what == b"PULL":
            for k in range(TOTAL // StreamChecker.BLOCK):
                conn.send_nowait(gen.block(k))
                await conn.drain()
        elif what == b"PUSH":
            def parse(view):
                server_check.check(view)
                return len(view)
            while await conn.with_data(parse):
                pass
            conn.send_nowait(struct.pack("<Q", server_check.offset))

    def client(port):
        with client_socket(port) as s:
            s.sendall(b"PULL")
            buf = bytearray(1 << 20)
            while n := s.recv_into(buf):
                client_check.check(memoryview(buf)[:n])
        with client_socket(port) as s:
            s.settimeout(30)
            s.sendall(b"PUSH")
            for k in range(TOTAL // StreamChecker.BLOCK):
                s.sendall(gen.block(k))
            s.shutdown(socket.SHUT_WR)
            return struct.unpack("<Q", recv_exactly(s, 8))[0]

    assert serve_and_run(handler, client, timeout=60) == TOTAL
    assert client_check.offset == TOTAL


def test_tiny_buffer_ring_enobufs_still_byte_exact():
    """4 provided buffers of 4 KiB for everything: the ring runs dry
    (ENOBUFS, counted), receives resume when buffers return, and every byte
    still arrives, in order."""
    cfg = Config(recv_buffer_count=4, recv_buffer_size=4096)
    N, SIZE = 4, 4 << 20

    def client(port):
        def one(i):
            payload = pattern(SIZE, seed=i)
            with socket.create_connection((HOST, port), timeout=IO_TIMEOUT) as s:
                s.settimeout(IO_TIMEOUT)
                t = threading.Thread(target=lambda: (s.sendall(payload),
                                                     s.shutdown(socket.SHUT_WR)))
                t.start()
                got = recv_until_eof(s)
                t.join()
            return got == payload

        import concurrent.futures
        with concurrent.futures.ThreadPoolExecutor(N) as ex:
            return list(ex.map(one, range(N)))

    async def main():
        loop = asyncio.get_running_loop()
        server = await ringline.serve(echo, HOST, 0)
        try:
            ok = await asyncio.to_thread(client, server.port)
        finally:
            await server.shutdown(5.0)
        return ok, _stream.net_state_for(loop).statistics()

    ok, stats = run(main, cfg)
    assert ok == [True] * N
    assert stats["enobufs"] > 0, stats


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

    end = run(main, cfg)
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

    run(main, cfg)
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
        st = _stream.net_state_for(asyncio.get_running_loop()).statistics()
        seen["ring"] = st["recv_buffers"] * st["recv_buffer_size"]
        try:
            await asyncio.to_thread(client, server.port)
            await until(lambda: "buffered" in seen)
        finally:
            await server.shutdown(2.0)

    run(main, cfg)
    # Reading stops at the limit; what the kernel had already delivered to the
    # completion queue still lands (never dropped), bounded by one provided
    # ring's worth of buffers.
    assert seen["buffered"] <= 16384 + seen["ring"], seen


# ---------------------------------------------------------------------------
# churn: no growth in fds or memory
# ---------------------------------------------------------------------------


def test_10000_connect_close_cycles_no_fd_or_memory_growth():
    CYCLES, WARMUP, PARALLEL = 10_000, 500, 8

    async def main():
        live = 0

        async def handler(conn):
            nonlocal live
            live += 1
            try:
                while await conn.recv():
                    pass
            finally:
                live -= 1

        server = await ringline.serve(handler, HOST, 0)

        async def cycles(n):
            for _ in range(n):
                c = await ringline.connect(HOST, server.port)
                c.close()
                await c.wait_closed()

        async def batch(total):
            per = total // PARALLEL
            await asyncio.gather(*(cycles(per) for _ in range(PARALLEL)))
            await until(lambda: live == 0, what="server-side handlers to end")

        ctx = _stream.net_state_for(asyncio.get_running_loop())
        loop = asyncio.get_running_loop()
        await batch(WARMUP)
        gc.collect()
        fds0, rss0 = open_fds(), rss_bytes()
        ops0 = loop.statistics()["slots_live"]
        await batch(CYCLES)
        # Every fixed-table slot comes back (close CQEs in), no op lingers.
        await until(lambda: ctx.fixed_live == 0, what="fixed-table slots to close")
        assert loop.statistics()["slots_live"] <= ops0
        gc.collect()
        fds1, rss1 = open_fds(), rss_bytes()
        await server.shutdown(2.0)
        return fds0, fds1, rss0, rss1

    t0 = time.monotonic()
    fds0, fds1, rss0, rss1 = run(main)
    took = time.monotonic() - t0
    assert fds1 <= fds0, f"fds grew from {fds0} to {fds1}"
    assert rss1 - rss0 < 20 << 20, f"RSS grew by {(rss1 - rss0) >> 20} MiB"
    assert took < 30


# ---------------------------------------------------------------------------
# with_data
# ---------------------------------------------------------------------------


def test_with_data_sees_all_buffered_bytes_and_consumes_count():
    async def main():
        async with conn_pair() as (srv, cli):
            cli.send_nowait(b"abc")
            await until(lambda: srv.buffered == 3)
            cli.send_nowait(b"def")
            await until(lambda: srv.buffered == 6)
            calls = []

            def parse(view):
                calls.append(bytes(view))
                return 4

            assert await srv.with_data(parse) == 4
            assert calls == [b"abcdef"]
            assert srv.buffered == 2
            assert await srv.with_data(lambda v: (calls.append(bytes(v)), len(v))[1]) == 2
            assert calls[-1] == b"ef"
            assert srv.buffered == 0

    run(main)


@pytest.mark.parametrize("need_more", [None, 0])
def test_with_data_need_more_waits_for_more(need_more):
    async def main():
        async with conn_pair() as (srv, cli):
            calls = []

            def parse(view):
                calls.append(bytes(view))
                return 10 if len(view) >= 10 else need_more

            task = asyncio.ensure_future(srv.with_data(parse))
            cli.send_nowait(b"0123")
            await until(lambda: len(calls) >= 1)
            assert not task.done()
            cli.send_nowait(b"456789XY")
            assert await asyncio.wait_for(task, IO_TIMEOUT) == 10
            # Each call saw everything buffered so far: a growing prefix.
            assert calls[-1] == b"0123456789XY"
            for a, b in zip(calls, calls[1:], strict=False):
                assert b.startswith(a) and len(b) > len(a)
            assert srv.buffered == 2
            assert await srv.recv() == b"XY"

    run(main)


def test_with_data_at_eof():
    async def main():
        async with conn_pair() as (srv, cli):
            cli.send_nowait(b"partial")
            cli.shutdown_write()
            await until(lambda: srv.buffered == 7)
            calls = []

            def need_more(view):
                calls.append(bytes(view))
                return None

            # An unfinished message at end of stream: parse sees it, returns
            # "need more", and with_data resolves 0 (end of stream).
            assert await asyncio.wait_for(srv.with_data(need_more), IO_TIMEOUT) == 0
            assert calls[-1] == b"partial"
            # Consuming at EOF still reports the count.
            assert await srv.with_data(lambda v: len(v)) == 7
            # Nothing left: parse gets an empty view, 0 means closed.
            calls.clear()
            assert await srv.with_data(need_more) == 0
            assert calls == [b""]
            assert await srv.recv() == b""

    run(main)


def test_with_data_kept_view_is_released_or_unchanged():
    async def main():
        async with conn_pair() as (srv, cli):
            cli.send_nowait(b"hello world")
            await until(lambda: srv.buffered == 11)
            kept = []

            def parse(view):
                kept.append(view)
                return 6

            assert await srv.with_data(parse) == 6
            cli.send_nowait(b"!" * 100_000)
            await until(lambda: srv.buffered == 5 + 100_000)
            try:
                content = bytes(kept[0])
            except ValueError:
                content = None              # released: fine
            assert content in (None, b"hello world")
            assert await srv.recv_exactly(5) == b"world"

    run(main)


def test_with_data_kept_slice_survives_need_more():
    """parse keeps a slice and asks for more: new data must not move or
    overwrite the bytes under that slice."""

    async def main():
        async with conn_pair() as (srv, cli):
            cli.send_nowait(b"HEADER")
            await until(lambda: srv.buffered == 6)
            kept = []

            def parse(view):
                if not kept:
                    kept.append(view[:6])
                return len(view) if len(view) >= 50_000 else None

            task = asyncio.ensure_future(srv.with_data(parse))
            await asyncio.sleep(0.01)
            cli.send_nowait(b"." * 60_000)
            assert await asyncio.wait_for(task, IO_TIMEOUT) == 60_006
            assert bytes(kept[0]) == b"HEADER"

    run(main)


def test_with_data_kept_slice_survives_consumption():
    async def main():
        async with conn_pair() as (srv, cli):
            cli.send_nowait(b"KEEP-rest")
            await until(lambda: srv.buffered == 9)
            kept = []

            def parse(view):
                kept.append(view[:4])
                return 5

            assert await srv.with_data(parse) == 5
            assert bytes(kept[0]) == b"KEEP"
            cli.send_nowait(b"x" * 50_000)
            assert await srv.recv_exactly(4) == b"rest"
            assert bytes(kept[0]) == b"KEEP"

    run(main)


def test_with_data_bad_counts_and_parse_errors():
    async def main():
        async with conn_pair() as (srv, cli):
            cli.send_nowait(b"12345")
            await until(lambda: srv.buffered == 5)
            with pytest.raises(ValueError):
                await srv.with_data(lambda v: 6)
            with pytest.raises(ValueError):
                await srv.with_data(lambda v: -1)

            def boom(view):
                raise KeyError("parse failed")

            with pytest.raises(KeyError):
                await srv.with_data(boom)
            # Nothing was consumed by the failed calls.
            assert srv.buffered == 5
            assert await srv.recv() == b"12345"

    run(main)


def test_only_one_waiter_at_a_time():
    async def main():
        async with conn_pair() as (srv, cli):
            first = asyncio.ensure_future(srv.recv())
            await asyncio.sleep(0)
            with pytest.raises(RuntimeError):
                await srv.recv()
            cli.send_nowait(b"one")
            assert await asyncio.wait_for(first, IO_TIMEOUT) == b"one"

    run(main)


# ---------------------------------------------------------------------------
# recv / recv_exactly
# ---------------------------------------------------------------------------


def test_recv_max_bytes_and_eof():
    async def main():
        async with conn_pair() as (srv, cli):
            cli.send_nowait(b"abcdefghij")
            await until(lambda: srv.buffered == 10)
            assert await srv.recv(4) == b"abcd"
            assert await srv.recv(100) == b"efghij"
            with pytest.raises(ValueError):
                await srv.recv(0)
            cli.shutdown_write()
            assert await asyncio.wait_for(srv.recv(), IO_TIMEOUT) == b""
            assert await srv.recv() == b""        # stays at EOF

    run(main)


def test_recv_exactly_and_incomplete_read():
    async def main():
        async with conn_pair() as (srv, cli):
            assert await srv.recv_exactly(0) == b""
            task = asyncio.ensure_future(srv.recv_exactly(8))
            cli.send_nowait(b"1234")
            await asyncio.sleep(0.01)
            assert not task.done()
            cli.send_nowait(b"5678abc")
            assert await asyncio.wait_for(task, IO_TIMEOUT) == b"12345678"
            cli.shutdown_write()
            with pytest.raises(asyncio.IncompleteReadError) as ei:
                await asyncio.wait_for(srv.recv_exactly(10), IO_TIMEOUT)
            assert ei.value.partial == b"abc"
            assert ei.value.expected == 10
            with pytest.raises(ValueError):
                await srv.recv_exactly(-1)

    run(main)


def test_recv_after_cancelled_recv():
    async def main():
        async with conn_pair() as (srv, cli):
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(srv.recv(), 0.02)
            t = asyncio.ensure_future(srv.recv())
            await asyncio.sleep(0.01)
            cli.send_nowait(b"after timeout")
            assert await asyncio.wait_for(t, IO_TIMEOUT) == b"after timeout"

    run(main)


# ---------------------------------------------------------------------------
# send errors and limits
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["close", "abort", "peer_closed", "shutdown_write"])
def test_send_on_closed_connection_raises(how):
    async def main():
        async with conn_pair() as (srv, cli):
            if how == "close":
                srv.close()
                await srv.wait_closed()
            elif how == "abort":
                srv.abort()
                await srv.wait_closed()
            elif how == "peer_closed":
                cli.close()
                await cli.wait_closed()
                assert await asyncio.wait_for(srv.recv(), IO_TIMEOUT) == b""
                srv.close()
                await srv.wait_closed()
            else:
                srv.shutdown_write()
            with pytest.raises(ConnectionClosed):
                srv.send_nowait(b"late")
            with pytest.raises(ConnectionClosed):
                srv.send(b"late")
            with pytest.raises(ConnectionClosed):
                srv.send_parts([b"la", b"te"])
            assert isinstance(ConnectionClosed(), ConnectionError)
            if how != "shutdown_write":
                assert srv.closed

    run(main)


def test_send_pool_exhausted_is_typed_and_bytes_never_refused():
    cfg = Config(send_pool_slots=2, send_pool_slot_size=4096)

    async def main():
        loop = asyncio.get_running_loop()
        async with conn_pair() as (srv, cli):
            with pytest.raises(SendPoolExhausted):
                srv.send_nowait(bytearray(3 * 4096))
            with pytest.raises(SendPoolExhausted):
                srv.send(memoryview(bytes(2 * 4096 + 1)))
            assert isinstance(SendPoolExhausted(), BufferError)
            assert srv.queued == 0                     # nothing half-queued
            assert _stream.net_state_for(loop).statistics()["send_pool_free"] == 2
            # Exactly two slots' worth is fine, and the pool comes back.
            for i in range(5):
                assert await srv.send(bytearray(pattern(8192, seed=i))) == 8192
            # bytes are sent from the object itself: any size.
            big = pattern(10 << 20, seed=99)
            assert await srv.send(big) == len(big)
            want = b"".join(pattern(8192, seed=i) for i in range(5)) + big
            got = await asyncio.wait_for(cli.recv_exactly(len(want)), IO_TIMEOUT)
            assert got == want

    run(main, cfg)


def test_drain_applies_backpressure():
    """With a peer that does not read, the queue stays bounded by the
    high-water mark and drain() blocks; it resumes once the peer reads."""
    cfg = Config(send_queue_limit=256 << 10)
    piece = pattern(64 << 10)
    PIECES = 512                                   # 32 MiB: more than socket buffers hold
    stats = {}

    async def handler(conn):
        if not await conn.recv():
            return
        max_queued = 0
        t0 = time.monotonic()
        for _ in range(PIECES):
            conn.send_nowait(piece)
            max_queued = max(max_queued, conn.queued)
            await conn.drain()
        stats["max_queued"] = max_queued
        stats["took"] = time.monotonic() - t0

    assert serve_and_run(handler, slow_reader(0.3), config=cfg) == PIECES * len(piece)
    assert stats["max_queued"] <= (256 << 10) + len(piece), stats
    assert stats["took"] >= 0.2, stats


def test_drain_looks_at_the_queue_when_awaited_and_a_cancel_spares_other_drainers():
    """drain() returns an awaitable, not a coroutine: one made while the
    queue is empty still waits if the queue is over the high-water mark when
    it is awaited.  Cancelling one of two waiting drainers leaves the other
    waiting until the peer reads."""
    cfg = Config(send_queue_limit=64 << 10)
    piece = pattern(64 << 10)
    PIECES = 256                                   # 16 MiB: more than socket buffers hold
    out = {}

    async def handler(conn):
        if not await conn.recv():
            return
        try:
            early = conn.drain()                   # nothing queued yet
            out["coroutine"] = inspect.iscoroutine(early)
            for _ in range(PIECES):
                conn.send_nowait(piece)
            a = asyncio.ensure_future(conn.drain())
            b = asyncio.ensure_future(conn.drain())
            await asyncio.sleep(0.05)
            a.cancel()
            t0 = time.monotonic()
            await early
            out["waited"] = time.monotonic() - t0
            await b
            out["a"] = "cancelled" if a.cancelled() else "not cancelled"
            try:
                await early
            except RuntimeError:
                out["reawait"] = "refused"
            again = conn.drain()
            out["recycled_while_held"] = again is early
            await again
        except BaseException as exc:
            out["error"] = repr(exc)
            raise

    assert serve_and_run(handler, slow_reader(0.3), config=cfg) == PIECES * len(piece)
    assert out.pop("waited") >= 0.15, out
    assert out == {"coroutine": False, "a": "cancelled", "reawait": "refused",
                   "recycled_while_held": False}


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

    run(main, Config(connect_timeout=0.2))


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
    t = threading.Thread(target=ringline.launch,
                         args=(ringline.Handler,),
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
    # (Its behaviour is tested in test_portable.py.)
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

    run(main, cfg)
    assert outcome.get("client") == "ok", outcome
    assert outcome.get("backend_got") == TOTAL, outcome


# ---------------------------------------------------------------------------
# more send / close semantics
# ---------------------------------------------------------------------------


def test_concurrent_drains_all_resume():
    cfg = Config(send_queue_limit=64 << 10)
    res = {}

    async def handler(conn):
        if not await conn.recv():
            return

        async def writer(i):
            for _ in range(100):
                conn.send_nowait(b"%d" % i * 65536)
                await conn.drain()
            res[i] = "done"

        try:
            async with asyncio.timeout(5):
                await asyncio.gather(writer(1), writer(2))
        except TimeoutError:
            res["timeout"] = True

    got = serve_and_run(handler, slow_reader(0.2), config=cfg)   # both writers park in drain()
    assert res == {1: "done", 2: "done"}, res
    assert got == 200 * 65536


def test_abort_fails_awaited_send_with_connection_error():
    out = {}

    async def main():
        async with conn_pair() as (srv, cli):
            async def sender():
                try:
                    await srv.send(pattern(64 << 20))    # far more than socket buffers
                    out["r"] = "sent"
                except asyncio.CancelledError:
                    out["r"] = "CancelledError"
                except ConnectionError as exc:
                    out["r"] = exc

            # The client side is not read by anyone, but its ring keeps
            # receiving up to recv_accumulator_limit; 64 MiB is beyond that.
            t = asyncio.ensure_future(sender())
            await asyncio.sleep(0.1)
            srv.abort()
            await asyncio.wait_for(t, IO_TIMEOUT)

    run(main, Config(recv_accumulator_limit=64 << 20))
    assert isinstance(out["r"], ConnectionError), out


def test_empty_and_bad_sends():
    async def main():
        async with conn_pair() as (srv, cli):
            assert await srv.send(b"") == 0
            assert await srv.send(bytearray()) == 0
            srv.send_nowait(b"")
            with pytest.raises(TypeError):
                srv.send_nowait("text is not bytes")
            with pytest.raises(TypeError):
                srv.send(12345)
            import array
            arr = array.array("i", [1, 2, 3])
            assert await srv.send(arr) == arr.itemsize * 3
            assert await cli.recv_exactly(arr.itemsize * 3) == arr.tobytes()
            assert srv.queued == 0

    run(main)


def _sockopt(fd: int, level: int, opt: int) -> int | None:
    import stat
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            return None
    except OSError:
        return None                        # a fixed descriptor, not a process fd
    s = socket.socket(fileno=fd)
    try:
        return s.getsockopt(level, opt)
    finally:
        s.detach()


@pytest.mark.parametrize("nodelay", [True, False])
def test_tcp_nodelay_and_reuse_port_from_config(nodelay):
    cfg = Config(tcp_nodelay=nodelay, reuse_port=nodelay)

    async def main():
        async with conn_pair() as (srv, cli):
            for c in (srv, cli):
                # A fixed descriptor has no process fd: read the option
                # through one the kernel installs for the call.
                v = await c.with_real_fd(
                    lambda fd: _sockopt(fd, socket.IPPROTO_TCP, socket.TCP_NODELAY))
                assert v is not None
                assert bool(v) is nodelay
        server = await ringline.serve(echo, HOST, 0)
        try:
            s = server.sockets[0]
            assert bool(s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)) is nodelay
        finally:
            await server.shutdown(1.0)

    run(main, cfg)


def test_max_connections_enforced():
    cfg = Config(max_connections=4)
    started = 0

    async def handler(conn):
        nonlocal started
        started += 1
        await conn.recv()

    async def main():
        server = await ringline.serve(handler, HOST, 0)
        socks = []
        try:
            for _ in range(8):
                socks.append(socket.create_connection((HOST, server.port), timeout=IO_TIMEOUT))
            await asyncio.sleep(0.2)
            assert started <= 4, f"{started} handlers ran with max_connections=4"
        finally:
            for s in socks:
                s.close()
            await server.shutdown(2.0)

    run(main, cfg)


def test_connections_use_direct_descriptors():
    async def main():
        server = await ringline.serve(echo, HOST, 0)
        try:
            base = open_fds()
            conns = [await ringline.connect(HOST, server.port) for _ in range(50)]
            for c in conns:
                c.send_nowait(b"x")
            for c in conns:
                assert await c.recv_exactly(1) == b"x"
            grew = open_fds() - base
            for c in conns:
                c.close()
            await asyncio.gather(*(c.wait_closed() for c in conns))
            return grew
        finally:
            await server.shutdown(2.0)

    assert run(main) < 10


# ---------------------------------------------------------------------------
# provided-buffer ring geometry and incremental consumption
# ---------------------------------------------------------------------------


def _kernel_at_least(major: int, minor: int) -> bool:
    release = os.uname().release.split("-")[0].split(".")
    return (int(release[0]), int(release[1])) >= (major, minor)


@pytest.mark.parametrize("inc_allowed", [True, False], ids=["incremental", "plain"])
def test_auto_ring_geometry_and_many_small_receives_byte_exact(config_defaults, inc_allowed):
    """Left to ringline, the ring is 16 x 64 KiB where the kernel packs
    receives into buffers (6.12+), else 256 x 16 KiB.  With packing, 300
    connections' small messages share a 2-buffer ring without ever finding
    it empty; without, the same traffic runs it dry (ENOBUFS, re-armed).
    Both stay byte-exact."""
    config_defaults(_recv_buffers_incremental=inc_allowed)
    got = {}

    async def main():
        st = _stream.net_state_for(asyncio.get_running_loop()).statistics()
        inc = st["recv_incremental"]
        assert inc == (inc_allowed and _kernel_at_least(6, 12))
        assert (st["recv_buffers"], st["recv_buffer_size"]) == ((16, 65536) if inc else (256, 16384))
        got["inc"] = inc
        return inc

    ringline.run(main())

    cfg = Config(recv_buffer_count=2, recv_buffer_size=4096)
    n = 300

    async def small(conn):
        data = await conn.recv_exactly(10)
        conn.send_nowait(data)

    async def main_small():
        server = await ringline.serve(small, HOST, 0)
        try:
            conns = [await ringline.connect(HOST, server.port) for _ in range(n)]
            for i, c in enumerate(conns):
                c.send_nowait(b"%010d" % i)
            replies = await asyncio.wait_for(asyncio.gather(*(c.recv_exactly(10) for c in conns)), 30)
            assert replies == [b"%010d" % i for i in range(n)]
            for c in conns:
                c.close()
            return _stream.net_state_for(asyncio.get_running_loop()).statistics()
        finally:
            await server.shutdown(2.0)

    st = run(main_small, cfg)
    assert st["recv_incremental"] == got["inc"]
    assert (st["recv_buffers"], st["recv_buffer_size"]) == (2, 4096)
    if got["inc"]:
        assert st["enobufs"] == 0, st
    else:
        assert st["enobufs"] > 0, st
