"""The fault matrix, native face (``ringline.serve`` / ``ringline.connect``).

Each test injects one fault -- resets, a drained buffer ring, a tiny SQ or
CQ, no descriptors left, no locked memory, a failing or deaf handler,
cancellation, a loop closed mid-flight -- while healthy echo connections run
on the same server (blocking sockets in threads and ``ringline.connect``
clients on the loop, tests/support/healthy.py) and must get back exactly the
bytes they sent, in order.

The server is one ``dispatch`` handler: a connection whose first 4 bytes
name a fault role runs that role, any other is echoed (those 4 bytes too).
The suite's fixtures add, after every test: every SQE got its final CQE, no
slot is live, no buffer is lent, and no loop error was reported unless the
test expects it.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import json
import socket
import threading
import time

import pytest

import ringline
from ringline import Config
from ringline._net import stream as _stream
from ringline.errors import ConnectionClosed, IoUringResourceError, RingFull
from tests.support import (
    HOST,
    IO_TIMEOUT,
    client_socket,
    open_fd_count,
    pattern,
    recv_exactly,
    rst_close,
    run,
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
    assert_exact,
    native_opener,
)

pytestmark = [pytest.mark.timeout(60), pytest.mark.needs_extension]

#: Bytes each healthy connection moves at least.
MIN_BYTES = 256 << 10


async def echo_rest(conn: ringline.Connection) -> None:
    while data := await conn.recv(1 << 20):
        conn.send_nowait(data)
        await conn.drain()


def dispatch(**roles):
    """A handler: the first 4 bytes pick a role (``roles[tag]``); any other
    start is echoed back and the rest of the stream with it."""
    table = {k.encode(): v for k, v in roles.items()}

    async def handler(conn: ringline.Connection) -> None:
        try:
            head = bytes(await conn.recv_exactly(4))
        except asyncio.IncompleteReadError:
            return          # a peer that left before saying anything
        role = table.get(head)
        if role is None:
            conn.send_nowait(head)
            try:
                await echo_rest(conn)
            except ConnectionError:
                pass    # a peer that left early; healthy peers check their bytes
        else:
            await role(conn)

    return handler


async def with_healthy(port: int, fault, *, threads: int = 3, natives: int = 2,
                       min_bytes: int = MIN_BYTES) -> list[Result]:
    """Run ``fault`` (a coroutine) while healthy echo streams flow to
    ``port``; return their results once every echo ended (not yet checked)."""
    tc = ThreadClients(port, threads, min_bytes=min_bytes).start()
    lc = LoopClients(native_opener(port), natives, min_bytes=min_bytes).start()
    try:
        # The fault lands on traffic in flight.
        await until(lambda: all(r.received or r.error for r in tc.results + lc.results),
                    timeout=IO_TIMEOUT, what="healthy traffic to flow")
        await fault
    finally:
        results = await asyncio.to_thread(tc.finish)
        results += await lc.finish()
    return results


def serve_matrix(handler, fault_factory, *, config: Config | None = None,
                 min_bytes: int = MIN_BYTES, **kw):
    """Serve ``handler`` on a fresh loop, run ``fault_factory(server)`` next
    to healthy traffic, check the healthy echo byte-exact; the loop's
    statistics at the end."""
    async def main():
        loop = asyncio.get_running_loop()
        server = await ringline.serve(handler, HOST, 0)
        try:
            results = await with_healthy(server.port, fault_factory(server),
                                         min_bytes=min_bytes, **kw)
        finally:
            await server.shutdown(2.0)
        stats = dict(loop.statistics(), **_stream.net_state_for(loop).statistics())
        return results, stats

    results, stats = run(main, config=config)
    assert_exact(results, min_bytes)
    return stats


# ---------------------------------------------------------------------------
# resets
# ---------------------------------------------------------------------------

RESET_ERRORS = (ConnectionResetError, BrokenPipeError, ConnectionClosed)


@pytest.mark.parametrize("zc", [False, True], ids=["copy", "zerocopy"])
def test_peer_reset_mid_send(zc):
    """Peers reset while the server (6 handlers) and a ringline client (4
    connections) are sending: each sender sees a ConnectionError, the
    healthy streams are untouched.  With ``zerocopy`` the sends are
    SEND_ZC (to local peers too): their notifications still arrive and
    are reaped (the suite's accounting fixture)."""
    server_side, client_side = [], []

    async def blast(conn):
        chunk = pattern(256 << 10)
        try:
            while True:
                conn.send_nowait(chunk)
                await conn.drain()
        except ConnectionError as exc:
            server_side.append(exc)

    def resetter(port, i):
        s = client_socket(port)
        s.sendall(b"SEND")
        recv_exactly(s, 100_000 + i * 7_000)
        rst_close(s)

    async def native_sender(port):
        conn = await ringline.connect(HOST, port)
        chunk = pattern(128 << 10, seed=3)
        try:
            async with asyncio.timeout(IO_TIMEOUT):
                while True:
                    conn.send_nowait(chunk)
                    await conn.drain()
        except ConnectionError as exc:
            client_side.append(exc)
        finally:
            conn.close()

    async def fault(server):
        await threads(resetter, 6, server.port)
        await until(lambda: len(server_side) == 6, timeout=IO_TIMEOUT,
                    what="the server's senders to fail")
        ls, serve_one = rst_listener(read=200_000)
        with ls:
            port = ls.getsockname()[1]
            await asyncio.gather(*(asyncio.to_thread(serve_one) for _ in range(4)),
                                 *(native_sender(port) for _ in range(4)))

    serve_matrix(dispatch(SEND=blast), fault, config=Config(_zc_to_local_peers=zc))
    assert len(server_side) == 6 and len(client_side) == 4
    assert all(isinstance(e, RESET_ERRORS) for e in server_side + client_side), \
        server_side + client_side


def test_peer_reset_mid_receive():
    """Peers send part of a message and reset while the server waits in
    ``recv_exactly`` for the rest, and a ringline client waits the same way
    on a peer that resets: every waiter gets ConnectionResetError."""
    server_side, client_side = [], []

    async def wait_whole(conn):
        try:
            await conn.recv_exactly(1 << 20)
            server_side.append("completed?!")
        except ConnectionError as exc:
            server_side.append(exc)

    def resetter(port, i):
        s = client_socket(port)
        s.sendall(b"RECV" + pattern(50_000 + 3_000 * i))
        time.sleep(0.05)
        rst_close(s)

    async def native_waiter(port):
        conn = await ringline.connect(HOST, port)
        try:
            await conn.recv_exactly(1 << 20)
            client_side.append("completed?!")
        except ConnectionError as exc:
            client_side.append(exc)
        finally:
            conn.close()

    async def fault(server):
        await threads(resetter, 6, server.port)
        await until(lambda: len(server_side) == 6, timeout=IO_TIMEOUT,
                    what="the server's receivers to fail")
        ls, serve_one = rst_listener(read=0, then_send=pattern(70_000))
        with ls:
            port = ls.getsockname()[1]
            await asyncio.gather(*(asyncio.to_thread(serve_one) for _ in range(4)),
                                 *(native_waiter(port) for _ in range(4)))

    serve_matrix(dispatch(RECV=wait_whole), fault)
    for exc in server_side + client_side:
        assert isinstance(exc, ConnectionResetError), exc
        assert exc.errno == errno.ECONNRESET


def test_rst_storm():
    """200 peers, each mid-echo, reset at the same moment (SO_LINGER 0):
    every one of their handlers ends, descriptors return to the baseline,
    and the healthy streams are untouched."""
    N = 200
    live = set()
    ended = []

    async def echo_tracked(conn):
        live.add(conn)
        try:
            conn.send_nowait(b"RSTS")
            await echo_rest(conn)
            ended.append("eof")
        except ConnectionError as exc:
            ended.append(type(exc).__name__)
        finally:
            live.discard(conn)

    async def fault(server):
        base = open_fd_count()
        socks = []

        def open_all():
            for _ in range(N):
                s = client_socket(server.port)
                s.sendall(b"RSTS" + pattern(1000))
                socks.append(s)
            for s in socks:
                recv_exactly(s, 1004)       # every handler is mid-echo
            for s in socks:
                s.sendall(pattern(3000, seed=9))    # more in flight, then the storm
            for s in socks:
                rst_close(s)

        await asyncio.to_thread(open_all)
        await until(lambda: len(ended) == N, timeout=IO_TIMEOUT, what="every reset handler to end")
        assert not live
        await until(lambda: open_fd_count() <= base, timeout=IO_TIMEOUT,
                    what="descriptors back to the baseline")

    serve_matrix(dispatch(RSTS=echo_tracked), fault)
    assert len(ended) == N
    assert set(ended) <= {"eof", "ConnectionResetError", "BrokenPipeError", "ConnectionClosed"}
    assert ended.count("eof") < N       # the resets were seen as resets


# ---------------------------------------------------------------------------
# exhausted kernel resources: buffer ring, SQ, CQ
# ---------------------------------------------------------------------------


async def sink_digest(conn):
    """Read to EOF, reply with the SHA-256 of everything read."""
    import hashlib
    h = hashlib.sha256()
    while data := await conn.recv(1 << 20):
        h.update(data)
    await conn.send(h.digest())


@pytest.mark.parametrize("incremental", [True, False], ids=["inc-ring", "plain-ring"])
def test_enobufs_storm(incremental):
    """A provided-buffer ring of 4 x 4 KiB shared by 24 senders of 1 MiB
    each and the healthy echo: the ring runs dry again and again (ENOBUFS),
    receives resume, and every byte of every connection arrives in order."""
    cfg = Config(recv_buffer_count=4, recv_buffer_size=4096,
                 _recv_buffers_incremental=incremental)
    oks = []

    async def fault(server):
        oks.extend(await threads(lambda port, i: digest_sender(port, 1 << 20, i), 24,
                                 server.port))

    stats = serve_matrix(dispatch(SINK=sink_digest), fault, config=cfg)
    assert oks == [True] * 24
    assert stats["enobufs"] > 0, stats


@pytest.mark.parametrize("sq", [1, 2])
def test_full_sq(sq):
    """An SQ of 1 or 2 entries: 48 connects at once (with 2 entries each a
    linked CONNECT + LINK_TIMEOUT pair), each then sending and echoing,
    next to the healthy streams.  The SQ fills up over and over; nothing is
    lost.  With 1 entry a timed connect, whose linked pair can never fit,
    raises RingFull and leaves nothing behind (an untimed one works: it
    used to reserve 2 entries too and failed the same way)."""
    cfg = Config(sq_entries=sq)
    timeout = IO_TIMEOUT if sq > 1 else None
    got = []
    refused = []

    async def fault(server):
        async def one(i):
            conn = await ringline.connect(HOST, server.port, timeout=timeout)
            try:
                msg = b"ECHO" + pattern(20_000 + i, seed=i)
                conn.send_nowait(msg)
                got.append(bytes(await conn.recv_exactly(len(msg))) == msg)
            finally:
                conn.close()
        await asyncio.gather(*(one(i) for i in range(48)))
        if sq == 1:
            try:
                await ringline.connect(HOST, server.port, timeout=IO_TIMEOUT)
            except RingFull as exc:
                refused.append(exc)

    stats = serve_matrix(dispatch(), fault, config=cfg)
    assert got == [True] * 48
    assert stats["sqes"] > 48 * 4
    assert len(refused) == (sq == 1)


def test_cq_overflow():
    """A CQ of 4 entries and 32 connections whose peers write 200 tiny
    segments each (TCP_NODELAY, so many multishot receive CQEs): the kernel
    overflows the CQ, the loop flushes it back, and every byte of every
    connection -- faulty load and healthy echo -- arrives in order."""
    cfg = Config(sq_entries=4, cq_entries=4)

    def chatty(port, i):
        with client_socket(port) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            msg = b"ECHO" + pattern(200 * 37, seed=i)
            for off in range(0, len(msg), 37):
                s.sendall(msg[off:off + 37])
            return recv_exactly(s, len(msg)) == msg

    oks = []

    async def fault(server):
        oks.extend(await threads(chatty, 32, server.port))

    stats = serve_matrix(dispatch(), fault, config=cfg)
    assert oks == [True] * 32
    assert stats["overflow_flushes"] > 0, stats


# ---------------------------------------------------------------------------
# rlimits, in a child process
# ---------------------------------------------------------------------------

EMFILE_CHILD = """
import asyncio, json, sys
import ringline

async def echo(conn):
    while data := await conn.recv(1 << 20):
        conn.send_nowait(data)
        await conn.drain()

async def main():
    server = await ringline.serve(echo, "127.0.0.1", 0)
    from ringline._net import stream
    st = stream.net_state_for(asyncio.get_running_loop())
    print(json.dumps({"port": server.port, "fixed": st.use_fixed_files(),
                      "reason": st.fixed_reason}), flush=True)
    # "stats": how often accept failed so far; anything else: stop.
    while (await asyncio.to_thread(sys.stdin.readline)).strip() == "stats":
        print(json.dumps({"errors": sum(op.errors for op in server._accepts),
                          "accepted": sum(op.accepted for op in server._accepts)}), flush=True)
    await server.shutdown(1.0)

ringline.run(main())
print("bye", flush=True)
"""


def hog(port: int, n: int) -> list[socket.socket]:
    """``n`` idle connections; past the child's descriptor limit they wait
    in its backlog, accepted by the kernel but not by the server."""
    return [client_socket(port) for _ in range(n)]


def test_emfile_accept_backs_off_and_recovers():
    """The server runs in a child with RLIMIT_NOFILE 40 (soft and hard, so
    the fixed-file table cannot be sized and plain descriptors are used).
    Once peers take every descriptor, accept fails with EMFILE: the child
    stays nearly idle (no accept spin) and the healthy connections keep
    echoing; when some peers leave, the waiting ones are served."""
    LIMIT = 40
    child = spawn_child(EMFILE_CHILD, limits={"RLIMIT_NOFILE": (LIMIT, LIMIT)})
    try:
        info = json.loads(child.stdout.readline() or "null")
        assert info is not None, child.stderr.read()
        assert info["fixed"] is False, info       # the table did not fit under the limit
        port = info["port"]
        tc = ThreadClients(port, 3, min_bytes=MIN_BYTES).start()
        deadline = time.monotonic() + IO_TIMEOUT
        while not all(r.received for r in tc.results) and time.monotonic() < deadline:
            time.sleep(0.01)
        hogs = hog(port, LIMIT + 8)
        # The newest peers sit in the backlog: no descriptor for them.
        assert not echo_works(hogs[-1], b"late", 0.3)
        cpu0, t0, st0 = cpu_seconds(child.pid), time.monotonic(), child_stats(child)
        time.sleep(0.6)
        cpu, st1 = cpu_seconds(child.pid) - cpu0, child_stats(child)
        wall = time.monotonic() - t0
        # Accept fails with EMFILE and retries every 50 ms: about 12 times in
        # 0.6 s, not thousands (a spin).  The healthy echo keeps the child
        # busy; a spin would add a core on top.
        retries = st1["errors"] - st0["errors"]
        assert 1 <= retries <= 40, (st0, st1)
        assert cpu < 0.8 * wall, f"child used {cpu:.2f} s CPU in {wall:.2f} s"
        for s in hogs[:20]:
            s.close()
        # ("late" is still in the socket: it comes back first.)
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


def test_enfile_fixed_table_full_refuses_and_recovers():
    """A fixed-file table of 8 slots (Config.max_connections) held by the
    healthy connections (3 from threads, 2 ringline.connect pairs: 7
    slots) while 12 more peers arrive: the kernel finds no slot (ENFILE,
    counted as table_full), those peers are closed, nothing spins, the
    healthy streams stay byte-exact, and once they are gone new peers are
    served."""
    cfg = Config(max_connections=8)
    outcome = {}

    def extra(port, i):
        with client_socket(port) as s:
            return echo_works(s, b"ECHOextra", 2.0)

    def crowd(port):
        """12 peers that all stay connected and ask for an echo: which got
        it within 0.3 s (the others were closed or wait in the backlog)."""
        socks = [client_socket(port) for _ in range(12)]
        try:
            for s in socks:
                s.sendall(b"ECHOcrowd")
            time.sleep(0.3)
            return [echo_works(s, b"", 0.01, before=b"ECHOcrowd") for s in socks]
        finally:
            for s in socks:
                s.close()

    async def fault(server):
        outcome["extra"] = await asyncio.to_thread(crowd, server.port)

    async def main():
        loop = asyncio.get_running_loop()
        server = await ringline.serve(dispatch(), HOST, 0)
        try:
            results = await with_healthy(server.port, fault(server))
            await until(lambda: _stream.net_state_for(loop).fixed_live == 0,
                        timeout=IO_TIMEOUT, what="every slot closed")
            outcome["after"] = await threads(extra, 4, server.port)
        finally:
            await server.shutdown(2.0)
        return results, _stream.net_state_for(loop).statistics()

    results, stats = run(main, config=cfg)
    assert_exact(results, MIN_BYTES)
    assert stats["fixed_files"] == 1 and stats["table_full"] > 0, stats
    assert outcome["extra"].count(True) <= 1, outcome   # at most the one free slot
    assert outcome["after"] == [True] * 4, outcome


EMFILE_FIXED_CHILD = """
import asyncio, json, os, sys
import ringline
from ringline import Config

peers = []

async def echo(conn):
    peers.append(conn.peer_addr)
    while data := await conn.recv(1 << 20):
        conn.send_nowait(data)
        await conn.drain()

async def main():
    server = await ringline.serve(echo, "127.0.0.1", 0)
    from ringline._net import stream
    fixed = stream.net_state_for(asyncio.get_running_loop()).use_fixed_files()
    # The helper thread of to_thread needs no descriptor: start it first.
    line = asyncio.ensure_future(asyncio.to_thread(sys.stdin.readline))
    await asyncio.sleep(0.05)
    hold = []
    try:
        while True:
            hold.append(os.open("/dev/null", os.O_RDONLY))
    except OSError:
        pass
    print(json.dumps({"port": server.port, "fixed": fixed, "held": len(hold)}), flush=True)
    await line
    for fd in hold:
        os.close(fd)
    print(json.dumps({"peers": [p for p in peers if p is not None]}), flush=True)
    await server.shutdown(1.0)

ringline.run(main(), config=Config(max_connections=48, file_slots=0))
"""


def test_emfile_with_fixed_descriptors_still_serves():
    """In a child whose every process descriptor is taken (RLIMIT_NOFILE
    64, a fixed-file table of 48 that fits under it): accepted sockets live
    in the fixed table, so new connections are still served and echo
    byte-exact; only their addresses, which need a temporary descriptor,
    stay unknown."""
    child = spawn_child(EMFILE_FIXED_CHILD, limits={"RLIMIT_NOFILE": (64, 64)})
    try:
        info = json.loads(child.stdout.readline() or "null")
        assert info is not None, child.stderr.read()
        assert info["fixed"] is True and info["held"] > 0, info
        results = ThreadClients(info["port"], 4, min_bytes=MIN_BYTES).start().finish()
        child.stdin.write("\n")
        child.stdin.flush()
        out, err = child.communicate(timeout=IO_TIMEOUT)
        assert child.returncode == 0, err
        assert json.loads(out)["peers"] == [], out
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert_exact(results, MIN_BYTES)


MEMLOCK_CHILD = """
import asyncio, json, os, resource
import ringline
from ringline import Config, fs

def err(exc):
    return [type(exc).__name__, getattr(exc, "errno", None), str(exc)]

async def echo_once():
    async def h(conn):
        conn.send_nowait(bytes(await conn.recv_exactly(5)))
    server = await ringline.serve(h, "127.0.0.1", 0)
    c = await ringline.connect("127.0.0.1", server.port)
    c.send_nowait(b"hello")
    got = bytes(await c.recv_exactly(5))
    c.close()
    await server.shutdown(1.0)
    return got.decode()

async def main():
    out = {"echo": await echo_once()}
    path = f"/var/tmp/ringline-memlock-{os.getpid()}"
    with open(path, "wb") as f:
        f.write(b"x" * 8192)
    try:
        # The O_DIRECT pool is registered (pinned) at the first O_DIRECT read.
        try:
            f = await fs.open_direct(path, "rb")
            try:
                await f.read(4096)
            finally:
                await f.close()
            out["direct"] = "registered?!"
        except Exception as exc:
            out["direct"] = err(exc)
        # The loop carries on: plain file I/O and sockets still work.
        async with await fs.open(path, "rb") as f2:
            out["after"] = len(await f2.read())
        out["echo_after"] = await echo_once()
    finally:
        os.unlink(path)
    return out

cfg = Config(backend="uring", registered_buffers=8, registered_buffer_size=1 << 20)
out = ringline.run(main(), config=cfg)
# A ring of its own is charged to the limit too: below its size, setup fails.
resource.setrlimit(resource.RLIMIT_MEMLOCK, (4096, resource.getrlimit(resource.RLIMIT_MEMLOCK)[1]))
try:
    ringline.new_event_loop(Config(backend="uring")).close()
    out["ring"] = "created?!"
except Exception as exc:
    out["ring"] = err(exc)
print(json.dumps(out), flush=True)
"""


def test_enomem_from_registration_is_a_typed_error():
    """In a child without CAP_IPC_LOCK and with RLIMIT_MEMLOCK 256 KiB (the
    kernel charges pinned and ring memory of such a user to the limit):
    a ring with its buffer rings fits and serves, registering 8 MiB of
    O_DIRECT buffers fails with ENOMEM raised as IoUringResourceError, and
    the loop carries on (file reads, sockets).  Below the ring's own size
    (4 KiB), creating a loop raises the same typed error."""
    child = spawn_child(MEMLOCK_CHILD, limits={"RLIMIT_MEMLOCK": (256 << 10, 256 << 10)},
                        drop_ipc_lock=True)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    res = json.loads(out)
    assert res["echo"] == "hello" and res["echo_after"] == "hello", res
    assert res["after"] == 8192, res
    for what in ("direct", "ring"):
        assert isinstance(res[what], list), res
        name, code, msg = res[what]
        assert name == IoUringResourceError.__name__, res
        assert code == errno.ENOMEM and "RLIMIT_MEMLOCK" in msg, res


# ---------------------------------------------------------------------------
# handlers that fail or stall
# ---------------------------------------------------------------------------


@pytest.mark.expect_loop_errors
def test_handler_that_raises_closes_only_its_connection():
    """10 handlers raise (5 right away, 5 with replies queued): each is
    reported to the loop's exception handler with its connection, only
    those connections close, and the server keeps serving new ones."""
    reports = []

    async def boom(conn):
        raise ValueError("boom")

    async def boom_later(conn):
        conn.send_nowait(pattern(200_000))
        await conn.recv_exactly(3)
        raise ValueError("boom later")

    def victim(port, i):
        with client_socket(port) as s:
            if i % 2:
                s.sendall(b"BOOM")
            else:
                s.sendall(b"LATEabc")
            try:
                data = s.recv(1 << 20)
                while data:
                    data = s.recv(1 << 20)
            except ConnectionResetError:
                pass
        return True

    async def fault(server):
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda lp, ctx: reports.append(ctx))
        await threads(victim, 10, server.port)
        await until(lambda: len(reports) == 10, timeout=IO_TIMEOUT, what="10 reports")
        assert await asyncio.to_thread(
            lambda: echo_works(client_socket(server.port), b"fresh one", IO_TIMEOUT))

    serve_matrix(dispatch(BOOM=boom, LATE=boom_later), fault)
    assert sorted(str(r["exception"]) for r in reports) == ["boom"] * 5 + ["boom later"] * 5
    assert all(r["connection"].closed for r in reports)


@pytest.mark.no_asan(reason="bounds the server's RSS: ASan's quarantine keeps freed memory "
                     "(up to 256 MiB), so the 200 MB pushed through shows up as growth")
def test_handler_that_never_reads_holds_memory_flat():
    """A handler that does not read for a while, then drains: its peer
    pushes 200 MB.  Reading pauses at the receive limit (TCP backpressure),
    so the server's RSS stays within a bound throughout, and then all
    200 MB arrive in order."""
    TOTAL = 200 << 20
    cfg = Config(recv_accumulator_limit=4 << 20)
    state = {"peak": 0, "stalled_at": None}
    go = asyncio.Event()

    async def deaf(conn):
        import hashlib
        await go.wait()
        h = hashlib.sha256()
        n = 0
        while data := await conn.recv(1 << 20):
            h.update(data)
            n += len(data)
        await conn.send(h.digest() + n.to_bytes(8, "little"))

    def pusher(port):
        import hashlib
        chunk = pattern(1 << 20, seed=5)
        with client_socket(port) as s:
            s.sendall(b"DEAF")
            sent = 0
            while sent < TOTAL:
                s.sendall(chunk)
                sent += len(chunk)
                if state["stalled_at"] is None and not go.is_set():
                    state["progress"] = sent
            s.shutdown(socket.SHUT_WR)
            reply = recv_exactly(s, 40)
        h = hashlib.sha256()
        for _ in range(TOTAL >> 20):
            h.update(chunk)
        return reply == h.digest() + TOTAL.to_bytes(8, "little")

    async def fault(server):
        loop = asyncio.get_running_loop()
        gc.collect()
        base = rss_bytes()
        push = asyncio.ensure_future(asyncio.to_thread(pusher, server.port))

        async def sample():
            while True:
                state["peak"] = max(state["peak"], rss_bytes() - base)
                await asyncio.sleep(0.02)

        sampler = asyncio.ensure_future(sample())
        # Let the peer push until it is stuck (the progress stops moving).
        last = -1
        while state.get("progress", 0) != last:
            last = state.get("progress", 0)
            await asyncio.sleep(0.25)
        state["stalled_at"] = last
        loop.call_soon(go.set)
        ok = await push
        sampler.cancel()
        assert ok

    serve_matrix(dispatch(DEAF=deaf), fault, config=cfg)
    # Stuck well before 200 MB: the receive limit (4 MiB) plus socket buffers.
    assert state["stalled_at"] < 64 << 20, state
    assert state["peak"] < 48 << 20, state


# ---------------------------------------------------------------------------
# cancellation
# ---------------------------------------------------------------------------


def test_cancelled_receives_lose_no_bytes():
    """Handlers wrap every ``recv_exactly`` in a timeout so short that most
    are cancelled mid-message (peers send each frame in slow pieces), and
    retry: every frame still arrives whole and in order."""
    cancelled = [0]

    async def impatient(conn):
        while True:
            while True:
                try:
                    async with asyncio.timeout(0.0005):
                        frame = await conn.recv_exactly(1000)
                    break
                except TimeoutError:
                    cancelled[0] += 1
            conn.send_nowait(bytes(frame))
            if frame[:3] == b"END":
                return

    def framer(port, i):
        frames = [pattern(1000, seed=i * 50 + k) for k in range(29)] + [b"END" + bytes(997)]
        with client_socket(port) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(b"IMPA")
            for f in frames:
                for off in range(0, 1000, 250):
                    s.sendall(f[off:off + 250])
                    time.sleep(0.0005)
            return recv_exactly(s, 30_000) == b"".join(frames)

    oks = []

    async def fault(server):
        oks.extend(await threads(framer, 4, server.port))

    serve_matrix(dispatch(IMPA=impatient), fault)
    assert oks == [True] * 4
    assert cancelled[0] > 20, cancelled


def test_cancelled_sends_still_go_out_in_order():
    """Handlers await ``send`` and ``send_parts`` (pinned bytes and pooled
    copies) under a timeout so short that many awaits are cancelled while
    the kernel is still sending: a cancelled await does not unqueue its
    bytes, so the peer receives every message whole and in order."""
    N = 300             # 15 MB per connection: more than the socket buffers hold
    cancelled = [0]

    async def impatient_sender(conn):
        await conn.recv_exactly(2)
        for k in range(N):
            data = pattern(50_000 + k, seed=k)
            try:
                async with asyncio.timeout(0.0001):
                    if k % 2:
                        await conn.send(data)
                    else:
                        await conn.send_parts([data[:100], bytearray(data[100:])])
            except TimeoutError:
                cancelled[0] += 1
        await conn.drain()

    def reader(port, i):
        with client_socket(port) as s:
            s.sendall(b"SNDCgo")
            want = b"".join(pattern(50_000 + k, seed=k) for k in range(N))
            # Read nothing at first: the socket buffers fill and sends wait
            # for this reader, even where the sender is slower than it (an
            # ASan build under load), so the timeouts do land mid-send.
            time.sleep(0.2)
            got = bytearray()
            while len(got) < len(want):     # a slow reader: sends take a while
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                got += chunk
                time.sleep(0.0005)
            return got == want

    oks = []

    async def fault(server):
        oks.extend(await threads(reader, 2, server.port))

    serve_matrix(dispatch(SNDC=impatient_sender), fault)
    assert oks == [True] * 2
    assert cancelled[0] > 10, cancelled


def test_cancelled_connects_and_handlers_leak_nothing():
    """100 connects cancelled after 0, 1, 2, ... loop iterations, and 20
    handlers cancelled from outside while parked on a receive: no slot,
    descriptor or connection is left (the suite's fixture checks the
    slots), and the healthy streams are untouched."""
    parked = {}

    async def park(conn):
        parked[conn] = asyncio.current_task()
        await conn.recv_exactly(1 << 20)

    async def fault(server):
        base = open_fd_count()
        for i in range(100):
            t = asyncio.ensure_future(ringline.connect(HOST, server.port))
            for _ in range(i % 8):
                await asyncio.sleep(0)
            t.cancel()
            try:
                conn = await t
            except asyncio.CancelledError:
                pass
            else:
                conn.close()
        socks = await asyncio.to_thread(
            lambda: [client_socket(server.port) for _ in range(20)])
        for s in socks:
            s.sendall(b"PARK" + b"x" * 100)
        await until(lambda: len(parked) == 20, timeout=IO_TIMEOUT, what="20 parked handlers")
        for t in parked.values():
            t.cancel()
        await until(lambda: all(c.closed for c in parked), timeout=IO_TIMEOUT,
                    what="cancelled handlers' close")
        for s in socks:
            s.settimeout(IO_TIMEOUT)
            try:
                assert s.recv(10) == b""
            except ConnectionResetError:
                pass
            s.close()
        await until(lambda: len(server._conns) <= 5, timeout=IO_TIMEOUT,
                    what="only healthy connections left")
        await until(lambda: open_fd_count() <= base, timeout=IO_TIMEOUT,
                    what="descriptors back to the baseline")

    serve_matrix(dispatch(PARK=park), fault)


# ---------------------------------------------------------------------------
# loop.close() with work in flight
# ---------------------------------------------------------------------------


@pytest.mark.expect_loop_errors
@pytest.mark.parametrize("zc", [False, True], ids=["copy", "zerocopy"])
def test_loop_close_with_work_in_flight(no_loop_errors, zc):
    """A loop closed (no shutdown) while its server streams to 8 peers,
    receives from 8 others and has 4 outbound connections mid-send: close()
    returns promptly, every peer sees the end (EOF or reset, no hang), the
    descriptors are back to the baseline and every slot is reaped; healthy
    streams on another ringline loop, in another thread, are untouched.
    The only reports are asyncio's for the handler tasks left pending by
    a close without shutdown ("Task was destroyed but it is pending!").
    With ``zerocopy`` the sends are SEND_ZC (to local peers too), so
    notifications are pending in the kernel when the loop closes."""
    healthy: dict = {}
    ready = threading.Event()
    stop = threading.Event()

    def other_loop():
        async def main():
            server = await ringline.serve(echo_rest, HOST, 0)
            healthy["port"] = server.port
            ready.set()
            await asyncio.to_thread(stop.wait)
            await server.shutdown(2.0)
        ringline.run(main())

    other = threading.Thread(target=other_loop)
    other.start()
    assert ready.wait(IO_TIMEOUT)
    tc = ThreadClients(healthy["port"], 3, min_bytes=MIN_BYTES).start()
    base = open_fd_count()

    async def blast(conn):
        chunk = pattern(256 << 10)
        while True:
            conn.send_nowait(chunk)
            await conn.drain()

    async def slurp(conn):
        while await conn.recv(1 << 20):
            pass

    outcomes = []

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

    loop = ringline.new_event_loop(Config(_zc_to_local_peers=zc))
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

    async def start():
        server = await ringline.serve(dispatch(SEND=blast, SLRP=slurp), HOST, 0)
        peers = [threading.Thread(target=peer, args=(server.port, role))
                 for role in [b"SEND", b"SLRP"] * 8]
        for t in peers:
            t.start()
        sinks = [threading.Thread(target=sink) for _ in range(4)]
        for t in sinks:
            t.start()
        outs = [await ringline.connect(HOST, ls.getsockname()[1]) for _ in range(4)]
        for c in outs:
            for _ in range(20):
                c.send_nowait(pattern(256 << 10))
        await asyncio.sleep(0.3)            # everything is in flight now
        return server, peers, sinks

    try:
        server, peers, sinks = loop.run_until_complete(start())
        t0 = time.monotonic()
        loop.close()
        closing = time.monotonic() - t0
        for t in peers:
            t.join(IO_TIMEOUT)
        ls.close()
        for t in sinks:
            t.join(IO_TIMEOUT)
    finally:
        if not loop.is_closed():
            loop.close()
        results = tc.finish()
        stop.set()
        other.join(IO_TIMEOUT)
    assert closing < 2.5, closing
    assert sorted(outcomes) and set(outcomes) <= {"eof", "reset"}, outcomes
    assert len(outcomes) == 16
    gc.collect()
    assert open_fd_count() <= base
    assert_exact(results, MIN_BYTES)
    reports = {r.getMessage().splitlines()[0] for r in no_loop_errors.records}
    assert reports <= {"Task was destroyed but it is pending!"}, reports
