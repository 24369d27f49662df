"""The fault matrix, asyncio face (a Protocol server on ``ringline.EventLoop``).

The same faults as ``tests/native/test_fault_matrix.py``, where they apply
to transports: resets, a drained buffer ring, a tiny SQ or CQ, no
descriptors left, a protocol that raises, a reader that never reads,
cancellation, a loop closed mid-flight.  Healthy echo connections run on
the same server next to the fault (blocking sockets in threads and asyncio
streams on the loop, tests/support/healthy.py) and must get back exactly the
bytes they sent, in order.

The server is one :class:`Dispatch` protocol: a connection whose first 4
bytes name a fault role runs that role, any other is echoed with flow
control (those 4 bytes too).  These tests run on ringline only: the every-
loop ``loop`` fixture is not used, each test makes its ``EventLoop`` with
the Config its fault needs.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import hashlib
import json
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import ringline
from ringline import Config
from ringline._net import stream as _stream
from tests.support import (
    HOST,
    IO_TIMEOUT,
    client_socket,
    open_fd_count,
    pattern,
    recv_exactly,
    rst_close,
    until,
)
from tests.support.faults import (
    child_stats,
    cpu_seconds,
    digest_sender,
    echo_works,
    rss_bytes,
    rst_listener,
    spawn_child,
    threads,
)
from tests.support.healthy import (
    LoopClients,
    Result,
    ThreadClients,
    aio_opener,
    assert_exact,
)

pytestmark = [pytest.mark.timeout(60), pytest.mark.needs_extension]

MIN_BYTES = 256 << 10
RESET_ERRORS = (ConnectionResetError, BrokenPipeError)


class Role:
    """One connection's behaviour after its 4-byte tag (base: echo with
    flow control: reading pauses while the transport's writes are paused)."""

    def __init__(self, tr: asyncio.Transport) -> None:
        self.tr = tr

    def start(self, rest: bytes) -> None:
        self.data(rest)

    def data(self, data: bytes) -> None:
        if data:
            self.tr.write(data)

    def eof(self) -> bool | None:
        return None         # close once the writes are out

    def lost(self, exc: BaseException | None) -> None:
        pass

    def pause_writing(self) -> None:
        self.tr.pause_reading()

    def resume_writing(self) -> None:
        self.tr.resume_reading()


class Dispatch(asyncio.Protocol):
    """The server's protocol: the first 4 bytes pick ``roles[tag]``, any
    other start is echoed (Role), tag included."""

    def __init__(self, roles: dict[bytes, Callable[[asyncio.Transport], Role]]) -> None:
        self.roles = roles
        self.head = b""
        self.role: Role | None = None

    def connection_made(self, transport: Any) -> None:
        self.tr = transport

    def data_received(self, data: bytes) -> None:
        if self.role is not None:
            self.role.data(data)
            return
        self.head += data
        if len(self.head) < 4:
            return
        tag, rest = self.head[:4], self.head[4:]
        factory = self.roles.get(tag)
        if factory is None:
            self.role = Role(self.tr)
            self.role.start(self.head)
        else:
            self.role = factory(self.tr)
            self.role.start(rest)

    def eof_received(self) -> bool | None:
        return self.role.eof() if self.role is not None else None

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.role is not None:
            self.role.lost(exc)

    def pause_writing(self) -> None:
        if self.role is not None:
            self.role.pause_writing()

    def resume_writing(self) -> None:
        if self.role is not None:
            self.role.resume_writing()


def run_loop(main: Callable[[], Any], config: Config | None = None,
             on_error: Callable[[dict], None] | None = None) -> Any:
    """``main()`` on a fresh ringline EventLoop made with ``config``; the
    loop is shut down like asyncio.run does, then closed."""
    loop = ringline.EventLoop(config)
    if on_error is not None:
        loop.set_exception_handler(lambda lp, ctx: on_error(ctx))
    try:
        return loop.run_until_complete(asyncio.wait_for(main(), 45))
    finally:
        leftovers = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for t in leftovers:
            t.cancel()
        if leftovers:
            loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


async def with_healthy(port: int, fault, *, threads: int = 3, streams: int = 2,
                       min_bytes: int = MIN_BYTES) -> list[Result]:
    """Run ``fault`` while healthy echo streams flow to ``port``; their
    results once every echo ended."""
    tc = ThreadClients(port, threads, min_bytes=min_bytes).start()
    lc = LoopClients(aio_opener(port), streams, min_bytes=min_bytes).start()
    try:
        await until(lambda: all(r.received or r.error for r in tc.results + lc.results),
                    timeout=IO_TIMEOUT, what="healthy traffic to flow")
        await fault
    finally:
        results = await asyncio.to_thread(tc.finish)
        results += await lc.finish()
    return results


def serve_matrix(roles: dict[bytes, Callable[[asyncio.Transport], Role]], fault_factory, *,
                 config: Config | None = None, on_error=None, **kw) -> dict:
    """Serve ``Dispatch(roles)`` on a fresh EventLoop, run
    ``fault_factory(server, port)`` next to healthy traffic, check the
    healthy echo byte-exact; the loop's statistics at the end."""
    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: Dispatch(roles), HOST, 0)
        port = server.sockets[0].getsockname()[1]
        try:
            results = await with_healthy(port, fault_factory(server, port), **kw)
        finally:
            server.close()
            await server.wait_closed()
        return results, dict(loop.statistics(), **_stream.net_state_for(loop).statistics())

    results, stats = run_loop(main, config, on_error)
    assert_exact(results, kw.get("min_bytes", MIN_BYTES))
    return stats


# ---------------------------------------------------------------------------
# resets
# ---------------------------------------------------------------------------


def test_peer_reset_mid_send():
    """Peers reset while 6 server transports write (flow-controlled) and 4
    asyncio stream clients write: every writer's connection is lost with a
    reset error, the healthy streams are untouched."""
    lost: list = []
    client_side: list = []

    class Blast(Role):
        def start(self, rest):
            self.paused = False
            self.chunk = pattern(256 << 10)
            self.fill()

        def fill(self):
            while not self.paused and not self.tr.is_closing():
                self.tr.write(self.chunk)

        def pause_writing(self):
            self.paused = True

        def resume_writing(self):
            self.paused = False
            self.fill()

        def lost(self, exc):
            lost.append(exc)

    def resetter(port, i):
        s = client_socket(port)
        s.sendall(b"SEND")
        recv_exactly(s, 100_000 + i * 7_000)
        rst_close(s)

    async def stream_sender(port):
        reader, writer = await asyncio.open_connection(HOST, port)
        chunk = pattern(128 << 10, seed=3)
        try:
            async with asyncio.timeout(IO_TIMEOUT):
                while True:
                    writer.write(chunk)
                    await writer.drain()
        except ConnectionError as exc:
            client_side.append(exc)
        finally:
            writer.close()

    async def fault(server, port):
        await threads(resetter, 6, port)
        await until(lambda: len(lost) == 6, timeout=IO_TIMEOUT,
                    what="the writers' connections to be lost")
        ls, serve_one = rst_listener(read=200_000)
        with ls:
            lport = ls.getsockname()[1]
            await asyncio.gather(*(asyncio.to_thread(serve_one) for _ in range(4)),
                                 *(stream_sender(lport) for _ in range(4)))

    serve_matrix({b"SEND": Blast}, fault)
    assert len(lost) == 6 and len(client_side) == 4
    assert all(isinstance(e, RESET_ERRORS) for e in lost + client_side), lost + client_side


def test_peer_reset_mid_receive():
    """Peers send part of a message and reset: the server protocols lose
    their connection with ECONNRESET, and asyncio stream clients waiting in
    ``readexactly`` on a resetting peer get ConnectionResetError."""
    lost: list = []
    client_side: list = []

    class Partial(Role):
        def data(self, data):
            pass                        # waits for a whole message that never comes

        def lost(self, exc):
            lost.append(exc)

    def resetter(port, i):
        s = client_socket(port)
        s.sendall(b"RECV" + pattern(50_000 + 3_000 * i))
        time.sleep(0.05)
        rst_close(s)

    async def stream_waiter(port):
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            await reader.readexactly(1 << 20)
            client_side.append("completed?!")
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            client_side.append(exc)
        finally:
            writer.close()

    async def fault(server, port):
        await threads(resetter, 6, port)
        await until(lambda: len(lost) == 6, timeout=IO_TIMEOUT,
                    what="the receivers' connections to be lost")
        ls, serve_one = rst_listener(read=0, then_send=pattern(70_000))
        with ls:
            lport = ls.getsockname()[1]
            await asyncio.gather(*(asyncio.to_thread(serve_one) for _ in range(4)),
                                 *(stream_waiter(lport) for _ in range(4)))

    serve_matrix({b"RECV": Partial}, fault)
    for exc in lost + client_side:
        assert isinstance(exc, ConnectionResetError), exc
        assert exc.errno == errno.ECONNRESET


def test_rst_storm():
    """200 transports, each mid-echo, reset at the same moment: every one
    loses its connection (with ECONNRESET or, if the reset raced a write,
    a reset error of the write), descriptors return to the baseline, and
    the healthy streams are untouched."""
    N = 200
    lost: list = []

    class Tracked(Role):
        def lost(self, exc):
            lost.append(exc)

    async def fault(server, port):
        base = open_fd_count()
        socks = []

        def open_all():
            for _ in range(N):
                s = client_socket(port)
                s.sendall(b"RSTS" + pattern(1000))
                socks.append(s)
            for s in socks:
                recv_exactly(s, 1000)
            for s in socks:
                s.sendall(pattern(3000, seed=9))
            for s in socks:
                rst_close(s)

        await asyncio.to_thread(open_all)
        await until(lambda: len(lost) == N, timeout=IO_TIMEOUT,
                    what="every reset transport to be lost")
        await until(lambda: open_fd_count() <= base, timeout=IO_TIMEOUT,
                    what="descriptors back to the baseline")

    serve_matrix({b"RSTS": Tracked}, fault)
    assert all(e is None or isinstance(e, RESET_ERRORS) for e in lost), lost
    assert sum(isinstance(e, ConnectionResetError) for e in lost) > 0


# ---------------------------------------------------------------------------
# exhausted kernel resources
# ---------------------------------------------------------------------------


class SinkDigest(Role):
    """Read to EOF, reply with the SHA-256 of everything read, close."""

    def start(self, rest):
        self.h = hashlib.sha256()
        self.data(rest)

    def data(self, data):
        self.h.update(data)

    def eof(self):
        self.tr.write(self.h.digest())
        return None


@pytest.mark.parametrize("incremental", [True, False], ids=["inc-ring", "plain-ring"])
def test_enobufs_storm(incremental):
    """4 provided buffers of 4 KiB for 24 senders of 1 MiB and the healthy
    echo (transports and asyncio streams): ENOBUFS again and again, and
    every byte of every connection arrives in order."""
    cfg = Config(recv_buffer_count=4, recv_buffer_size=4096,
                 _recv_buffers_incremental=incremental)
    oks: list = []

    async def fault(server, port):
        oks.extend(await threads(lambda p, i: digest_sender(p, 1 << 20, i), 24, port))

    stats = serve_matrix({b"SINK": SinkDigest}, fault, config=cfg)
    assert oks == [True] * 24
    assert stats["enobufs"] > 0, stats


@pytest.mark.parametrize("sq", [1, 2])
def test_full_sq(sq):
    """An SQ of 1 or 2 entries: 48 asyncio connections opened at once, each
    echoing a message, next to the healthy streams: nothing lost."""
    cfg = Config(sq_entries=sq)
    got: list = []

    async def fault(server, port):
        async def one(i):
            reader, writer = await asyncio.open_connection(HOST, port)
            try:
                msg = b"ECHO" + pattern(20_000 + i, seed=i)
                writer.write(msg)
                got.append(await reader.readexactly(len(msg)) == msg)
            finally:
                writer.close()
        await asyncio.gather(*(one(i) for i in range(48)))

    stats = serve_matrix({}, fault, config=cfg)
    assert got == [True] * 48
    assert stats["sqes"] > 48 * 4


def test_cq_overflow():
    """A CQ of 4 entries, 32 peers writing 200 tiny segments each: the CQ
    overflows, the loop flushes it back, every byte arrives in order."""
    cfg = Config(sq_entries=4, cq_entries=4)

    def chatty(port, i):
        with client_socket(port) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            msg = b"ECHO" + pattern(200 * 37, seed=i)
            for off in range(0, len(msg), 37):
                s.sendall(msg[off:off + 37])
            return recv_exactly(s, len(msg)) == msg

    oks: list = []

    async def fault(server, port):
        oks.extend(await threads(chatty, 32, port))

    stats = serve_matrix({}, fault, config=cfg)
    assert oks == [True] * 32
    assert stats["overflow_flushes"] > 0, stats


# ---------------------------------------------------------------------------
# EMFILE, in a child process
# ---------------------------------------------------------------------------

EMFILE_CHILD = """
import asyncio, json, sys
import ringline

class Echo(asyncio.Protocol):
    def connection_made(self, tr):
        self.tr = tr
    def data_received(self, data):
        self.tr.write(data)
    def pause_writing(self):
        self.tr.pause_reading()
    def resume_writing(self):
        self.tr.resume_reading()

async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", 0)
    print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
    # "stats": how often accept failed so far; anything else: stop.
    while (await asyncio.to_thread(sys.stdin.readline)).strip() == "stats":
        ops = list(loop._listeners.values())
        print(json.dumps({"errors": sum(op.errors for op in ops)}), flush=True)
    server.close()

loop = ringline.EventLoop()
loop.run_until_complete(main())
loop.close()
print("bye", flush=True)
"""


def test_emfile_accept_backs_off_and_recovers():
    """A Protocol server in a child with RLIMIT_NOFILE 40: once peers hold
    every descriptor, accept fails with EMFILE and retries every 50 ms (no
    spin), the healthy connections keep echoing, and when peers leave the
    waiting ones are served."""
    LIMIT = 40
    child = spawn_child(EMFILE_CHILD, limits={"RLIMIT_NOFILE": (LIMIT, LIMIT)})
    try:
        info = json.loads(child.stdout.readline() or "null")
        assert info is not None, child.stderr.read()
        port = info["port"]
        tc = ThreadClients(port, 3, min_bytes=MIN_BYTES).start()
        deadline = time.monotonic() + IO_TIMEOUT
        while not all(r.received for r in tc.results) and time.monotonic() < deadline:
            time.sleep(0.01)
        hogs = [client_socket(port) for _ in range(LIMIT + 8)]
        assert not echo_works(hogs[-1], b"late", 0.3)
        cpu0, t0, st0 = cpu_seconds(child.pid), time.monotonic(), child_stats(child)
        time.sleep(0.6)
        cpu, st1 = cpu_seconds(child.pid) - cpu0, child_stats(child)
        wall = time.monotonic() - t0
        retries = st1["errors"] - st0["errors"]
        assert 1 <= retries <= 40, (st0, st1)
        assert cpu < 0.8 * wall, f"child used {cpu:.2f} s CPU in {wall:.2f} s"
        for s in hogs[:20]:
            s.close()
        assert echo_works(hogs[-1], b"served at last", IO_TIMEOUT, before=b"late")
        assert echo_works(hogs[-2], b"me too", IO_TIMEOUT)
        for s in hogs[20:]:
            s.close()
        results = tc.finish()
        child.stdin.write("\n")
        child.stdin.flush()
        out, err = child.communicate(timeout=IO_TIMEOUT)
        assert child.returncode == 0 and "bye" in out, err
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert_exact(results, MIN_BYTES)


MEMLOCK_CHILD = """
import asyncio, json, warnings
import ringline
from ringline.errors import IoUringResourceError

out = {}
try:
    ringline.EventLoop().close()
    out["ring"] = "created?!"
except IoUringResourceError as exc:
    out["ring"] = [type(exc).__name__, exc.errno]

class Echo(asyncio.Protocol):
    def connection_made(self, tr):
        self.tr = tr
    def data_received(self, data):
        self.tr.write(data)

async def echo_once():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", 0)
    r, w = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
    w.write(b"hello")
    got = await r.readexactly(5)
    w.close()
    server.close()
    return got.decode()

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    loop = ringline.new_event_loop()
out["fallback"] = type(loop).__module__
out["warned"] = any("RLIMIT_MEMLOCK" in str(w.message) for w in caught)
try:
    out["echo"] = loop.run_until_complete(echo_once())
finally:
    loop.close()
print(json.dumps(out), flush=True)
"""


def test_enomem_at_ring_setup_is_typed_and_auto_falls_back():
    """In a child without CAP_IPC_LOCK and with RLIMIT_MEMLOCK 4 KiB (the
    kernel charges the ring's memory of such a user to the limit):
    ``ringline.EventLoop()`` raises IoUringResourceError (ENOMEM), and
    ``new_event_loop()`` (backend auto) warns with the fix and returns the
    portable loop, on which a Protocol server serves."""
    child = spawn_child(MEMLOCK_CHILD, limits={"RLIMIT_MEMLOCK": (4096, 4096)},
                        drop_ipc_lock=True)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    res = json.loads(out)
    assert res["ring"] == ["IoUringResourceError", errno.ENOMEM], res
    assert res["warned"] and res["echo"] == "hello", res
    assert not res["fallback"].startswith("ringline.aio"), res


# ---------------------------------------------------------------------------
# protocols that fail or stall
# ---------------------------------------------------------------------------


def test_protocol_that_raises_closes_only_its_connection():
    """10 protocols raise in data_received (5 at once, 5 with writes
    queued): each is reported to the loop's exception handler, only those
    connections close, and the server keeps serving new ones."""
    reports: list = []

    class Boom(Role):
        def start(self, rest):
            raise ValueError("boom")

    class BoomLater(Role):
        def start(self, rest):
            self.tr.write(pattern(200_000))
            self.data(rest)

        def data(self, data):
            if data:
                raise ValueError("boom later")

    def victim(port, i):
        with client_socket(port) as s:
            s.sendall(b"BOOM" if i % 2 else b"LATE")
            if not i % 2:
                time.sleep(0.01)
                s.sendall(b"abc")
            try:
                while s.recv(1 << 20):
                    pass
            except ConnectionResetError:
                pass
        return True

    async def fault(server, port):
        await threads(victim, 10, port)
        await until(lambda: len(reports) == 10, timeout=IO_TIMEOUT, what="10 reports")
        assert await asyncio.to_thread(
            lambda: echo_works(client_socket(port), b"fresh one", IO_TIMEOUT))

    serve_matrix({b"BOOM": Boom, b"LATE": BoomLater}, fault, on_error=reports.append)
    assert sorted(str(r["exception"]) for r in reports) == ["boom"] * 5 + ["boom later"] * 5
    assert all(r["transport"].is_closing() for r in reports)


@pytest.mark.no_asan(reason="bounds the server's RSS: ASan's quarantine keeps freed memory "
                     "(up to 256 MiB), so the 200 MB pushed through shows up as growth")
def test_reader_that_never_reads_holds_memory_flat():
    """An asyncio streams handler that does not read for a while (its
    StreamReader pauses the ringline transport), then drains: its peer
    pushes 200 MB.  The server's RSS stays within a bound throughout, the
    peer is stuck well before 200 MB, and then all 200 MB arrive in
    order."""
    TOTAL = 200 << 20
    state: dict = {"peak": 0, "stalled_at": None}

    async def main():
        loop = asyncio.get_running_loop()
        go = asyncio.Event()

        async def deaf(reader, writer):
            await go.wait()
            h = hashlib.sha256()
            n = 0
            while data := await reader.read(1 << 20):
                h.update(data)
                n += len(data)
            writer.write(h.digest() + n.to_bytes(8, "little"))
            await writer.drain()
            writer.close()

        def pusher(port):
            chunk = pattern(1 << 20, seed=5)
            with client_socket(port) as s:
                sent = 0
                while sent < TOTAL:
                    s.sendall(chunk)
                    sent += len(chunk)
                    if not go.is_set():
                        state["progress"] = sent
                s.shutdown(socket.SHUT_WR)
                reply = recv_exactly(s, 40)
            h = hashlib.sha256()
            for _ in range(TOTAL >> 20):
                h.update(chunk)
            return reply == h.digest() + TOTAL.to_bytes(8, "little")

        echo_server = await loop.create_server(lambda: Dispatch({}), HOST, 0)
        deaf_server = await asyncio.start_server(deaf, HOST, 0)
        try:
            async def fault():
                gc.collect()
                base = rss_bytes()
                push = asyncio.ensure_future(
                    asyncio.to_thread(pusher, deaf_server.sockets[0].getsockname()[1]))

                async def sample():
                    while True:
                        state["peak"] = max(state["peak"], rss_bytes() - base)
                        await asyncio.sleep(0.02)

                sampler = asyncio.ensure_future(sample())
                last = -1
                while state.get("progress", 0) != last:
                    last = state.get("progress", 0)
                    await asyncio.sleep(0.25)
                state["stalled_at"] = last
                go.set()
                ok = await push
                sampler.cancel()
                assert ok

            return await with_healthy(echo_server.sockets[0].getsockname()[1], fault())
        finally:
            for s in (echo_server, deaf_server):
                s.close()
                await s.wait_closed()

    results = run_loop(main)
    assert_exact(results, MIN_BYTES)
    assert state["stalled_at"] < 64 << 20, state
    assert state["peak"] < 48 << 20, state


# ---------------------------------------------------------------------------
# cancellation
# ---------------------------------------------------------------------------


def test_cancelled_reads_lose_no_bytes():
    """Stream handlers (StreamReader limit 512, so the reader pauses and
    resumes the ringline transport all the time) wrap every
    ``readexactly`` in a timeout so short that most are cancelled
    mid-frame, and retry, while peers send frames in slow pieces: every
    frame comes back whole and in order."""
    cancelled = [0]

    async def impatient(reader, writer):
        while True:
            while True:
                try:
                    async with asyncio.timeout(0.0005):
                        frame = await reader.readexactly(1000)
                    break
                except TimeoutError:
                    cancelled[0] += 1
            writer.write(frame)
            if frame[:3] == b"END":
                await writer.drain()
                writer.close()
                return

    def framer(port, i):
        frames = [pattern(1000, seed=i * 50 + k) for k in range(29)] + [b"END" + bytes(997)]
        with client_socket(port) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for f in frames:
                for off in range(0, 1000, 250):
                    s.sendall(f[off:off + 250])
                    time.sleep(0.0005)
            return recv_exactly(s, 30_000) == b"".join(frames)

    oks: list = []

    async def fault(server, port):
        impatient_server = await asyncio.start_server(impatient, HOST, 0, limit=512)
        try:
            oks.extend(await threads(framer, 4, impatient_server.sockets[0].getsockname()[1]))
        finally:
            impatient_server.close()
            await impatient_server.wait_closed()

    serve_matrix({}, fault)
    assert oks == [True] * 4
    assert cancelled[0] > 20, cancelled


def test_cancelled_connects_and_handlers_leak_nothing():
    """100 ``open_connection`` calls cancelled after 0, 1, 2, ... loop
    iterations, and 20 streams handlers cancelled while waiting to read:
    no slot, descriptor or transport is left, the healthy streams are
    untouched."""
    waiting: dict = {}

    async def fault(server, port):
        base = open_fd_count()
        for i in range(100):
            t = asyncio.ensure_future(asyncio.open_connection(HOST, port))
            for _ in range(i % 8):
                await asyncio.sleep(0)
            t.cancel()
            try:
                _, w = await t
            except asyncio.CancelledError:
                pass
            else:
                w.close()

        async def park(reader, writer):
            # The read is cancelled, not the handler task itself (asyncio
            # 3.11 logs a cancelled client_connected_cb as an error).
            read = asyncio.ensure_future(reader.readexactly(1 << 20))
            waiting[writer] = read
            try:
                await read
            except asyncio.CancelledError:
                pass
            finally:
                writer.close()

        park_server = await asyncio.start_server(park, HOST, 0)
        pport = park_server.sockets[0].getsockname()[1]
        socks = await asyncio.to_thread(lambda: [client_socket(pport) for _ in range(20)])
        for s in socks:
            s.sendall(b"x" * 100)
        await until(lambda: len(waiting) == 20, timeout=IO_TIMEOUT, what="20 waiting handlers")
        for t in waiting.values():
            t.cancel()
        for s in socks:
            s.settimeout(IO_TIMEOUT)
            try:
                assert await asyncio.to_thread(s.recv, 10) == b""
            except ConnectionResetError:
                pass
            s.close()
        park_server.close()
        await park_server.wait_closed()
        await until(lambda: open_fd_count() <= base, timeout=IO_TIMEOUT,
                    what="descriptors back to the baseline")

    serve_matrix({}, fault)


# ---------------------------------------------------------------------------
# loop.close() with work in flight
# ---------------------------------------------------------------------------


def test_loop_close_with_work_in_flight():
    """An EventLoop closed (no server close, no transport close) while 8
    transports write to peers, 8 read from peers and 4 client transports
    write: close() returns promptly, every peer sees the end (EOF or reset),
    descriptors are back to the baseline and every slot is reaped; healthy
    streams on another ringline loop in another thread are untouched."""
    healthy: dict = {}
    ready = threading.Event()
    stop = threading.Event()

    def other_loop():
        async def main():
            loop = asyncio.get_running_loop()
            server = await loop.create_server(lambda: Dispatch({}), HOST, 0)
            healthy["port"] = server.sockets[0].getsockname()[1]
            ready.set()
            await asyncio.to_thread(stop.wait)
            server.close()
            await server.wait_closed()
        run_loop(main)

    other = threading.Thread(target=other_loop)
    other.start()
    assert ready.wait(IO_TIMEOUT)
    tc = ThreadClients(healthy["port"], 3, min_bytes=MIN_BYTES).start()
    base = open_fd_count()

    class Blast(Role):
        def start(self, rest):
            self.tr.write(pattern(8 << 20))

    class Slurp(Role):
        def data(self, data):
            pass

    outcomes: list = []

    def peer(port, role):
        try:
            with client_socket(port) as s:
                s.sendall(role)
                if role == b"SEND":
                    while s.recv(1 << 20):
                        pass
                else:
                    chunk = pattern(1 << 16)
                    while True:
                        s.sendall(chunk)
            outcomes.append("eof")
        except (ConnectionResetError, BrokenPipeError):
            outcomes.append("reset")
        except Exception as exc:
            outcomes.append(repr(exc))

    ls = socket.create_server((HOST, 0))
    ls.settimeout(IO_TIMEOUT)

    def sink():
        s, _ = ls.accept()
        with s:
            s.settimeout(IO_TIMEOUT)
            try:
                while s.recv(1 << 20):
                    pass
            except ConnectionResetError:
                pass

    loop = ringline.EventLoop()

    async def start():
        server = await loop.create_server(
            lambda: Dispatch({b"SEND": Blast, b"SLRP": Slurp}), HOST, 0)
        port = server.sockets[0].getsockname()[1]
        peers = [threading.Thread(target=peer, args=(port, role))
                 for role in [b"SEND", b"SLRP"] * 8]
        sinks = [threading.Thread(target=sink) for _ in range(4)]
        for t in peers + sinks:
            t.start()
        for _ in range(4):
            tr, _ = await loop.create_connection(asyncio.Protocol, HOST, ls.getsockname()[1])
            tr.write(pattern(16 << 20))
        await asyncio.sleep(0.3)
        return server, peers, sinks

    try:
        server, peers, sinks = loop.run_until_complete(start())
        t0 = time.monotonic()
        loop.close()
        closing = time.monotonic() - t0
        for t in peers + sinks:
            t.join(IO_TIMEOUT)
        ls.close()
    finally:
        if not loop.is_closed():
            loop.close()
        results = tc.finish()
        stop.set()
        other.join(IO_TIMEOUT)
    assert closing < 2.5, closing
    assert len(outcomes) == 16 and set(outcomes) <= {"eof", "reset"}, outcomes
    del server
    gc.collect()
    assert open_fd_count() <= base
    assert_exact(results, MIN_BYTES)
