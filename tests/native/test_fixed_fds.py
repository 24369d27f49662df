"""Native connections on the ring's fixed (direct) file table: slots instead
of process fds, the table-full path, the plain-fd fallback, cancellation of
connect(), and the close paths that must always finish.

Real loopback sockets throughout; the kernel is never mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import threading
import time

import pytest

import ringline
from ringline import Config
from ringline._net import stream as _stream
from ringline.errors import ConnectionLimitReached, SendPoolExhausted
from tests.support import HOST, IO_TIMEOUT, echo, open_fd_count, serve_and_run, until

pytestmark = pytest.mark.timeout(60)




def ctx_stats() -> dict[str, int]:
    return _stream.net_state_for(asyncio.get_running_loop()).statistics()


@pytest.fixture(params=["direct", "plain"])
def mode(request, config_defaults):
    """Both faces of the native API: direct descriptors and the plain-fd
    fallback (what a kernel without FIXED_FD_INSTALL gets)."""
    config_defaults(_fixed_files=request.param == "direct")
    return request.param


def _nodelay(fd: int) -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0, fd)
    try:
        return s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        s.detach()


# ---------------------------------------------------------------------------


def test_direct_mode_is_chosen_and_counts_slots():
    async def main():
        server = await ringline.serve(echo, HOST, 0)
        try:
            st = ctx_stats()
            assert st["fixed_files"] == 1, _stream.net_state_for(asyncio.get_running_loop()).fixed_reason
            c = await ringline.connect(HOST, server.port)
            assert c.fileno == -1 and "slot=" in repr(c)
            await until(lambda: ctx_stats()["fixed_live"] == 2, what="two slots")
            c.send_nowait(b"ping")
            assert await c.recv_exactly(4) == b"ping"
            c.close()
            await c.wait_closed()
            await until(lambda: ctx_stats()["fixed_live"] == 0, what="slots freed")
        finally:
            await server.shutdown(2.0)

    ringline.run(main())


def test_fallback_to_plain_fds_works_and_uses_process_fds(mode):
    async def main():
        server = await ringline.serve(echo, HOST, 0)
        try:
            base = open_fd_count()
            conns = [await ringline.connect(HOST, server.port) for _ in range(10)]
            for c in conns:
                c.send_nowait(b"x")
            for c in conns:
                assert await c.recv_exactly(1) == b"x"
            grew = open_fd_count() - base
            for c in conns:
                assert c.peer_addr == (HOST, server.port)
                assert c.local_addr[0] == HOST
                c.close()
            await asyncio.gather(*(c.wait_closed() for c in conns))
            return grew, ctx_stats()["fixed_files"]
        finally:
            await server.shutdown(2.0)

    grew, direct = ringline.run(main())
    if mode == "direct":
        assert direct == 1 and grew < 5
    else:
        assert direct == 0 and grew >= 20


def test_addresses_known_when_handler_starts(mode):
    """peer_addr/local_addr are synchronous and already right in the
    handler's first line, also for a direct descriptor."""
    seen = []

    async def handler(conn):
        seen.append((conn.peer_addr, conn.local_addr))
        await conn.recv()

    async def main():
        server = await ringline.serve(handler, HOST, 0)
        try:
            s = await asyncio.to_thread(socket.create_connection, (HOST, server.port), IO_TIMEOUT)
            try:
                await until(lambda: seen, what="handler")
                assert seen[0] == (s.getsockname(), s.getpeername())
            finally:
                s.close()
        finally:
            await server.shutdown(2.0)

    ringline.run(main())


@pytest.mark.parametrize("nodelay", [True, False])
def test_tcp_nodelay_read_back_on_direct_connections(nodelay):
    """Accepted sockets inherit TCP_NODELAY from the listener; outbound ones
    get it through their temporary fd.  Read back through a kernel-installed
    fd (the sockets have no process fd of their own)."""
    got = []

    async def handler(conn):
        got.append(await conn.with_real_fd(_nodelay))
        await conn.recv()

    async def main():
        server = await ringline.serve(handler, HOST, 0)
        try:
            c = await ringline.connect(HOST, server.port)
            assert c.fixed
            out = await c.with_real_fd(_nodelay)
            await until(lambda: got, what="handler")
            c.close()
            await c.wait_closed()
            return out
        finally:
            await server.shutdown(2.0)

    out = ringline.run(main(), config=Config(tcp_nodelay=nodelay))
    assert bool(out) is nodelay
    assert bool(got[0]) is nodelay


def test_table_full_refuses_cleanly_and_listener_keeps_working():
    """max_connections=4: the table's connection range holds 4 sockets.
    Beyond it accepts fail (counted, the peer sees a close) and connect()
    raises ConnectionLimitReached; once slots free up, accepting resumes
    without a busy loop."""
    cfg = Config(max_connections=4)
    live = []

    async def handler(conn):
        live.append(conn)
        try:
            while await conn.recv():
                pass
        finally:
            live.remove(conn)

    def peer(port: int) -> bytes:
        with socket.create_connection((HOST, port), timeout=IO_TIMEOUT) as s:
            s.sendall(b"hi")
            s.settimeout(0.5)
            try:
                return s.recv(10)
            except (ConnectionResetError, TimeoutError):
                return b"timeout-or-reset"

    async def main():
        loop = asyncio.get_running_loop()
        server = await ringline.serve(handler, HOST, 0)
        ctx = _stream.net_state_for(loop)
        try:
            held = [await ringline.connect(HOST, server.port) for _ in range(2)]
            await until(lambda: len(live) == 2, what="two handlers")
            assert ctx.fixed_live == 4
            # Table full: outbound fails typed, inbound is refused.
            with pytest.raises(ConnectionLimitReached):
                await ringline.connect(HOST, server.port)
            it0 = loop.statistics()["iterations"]
            extra = await asyncio.to_thread(peer, server.port)
            assert extra in (b"", b"timeout-or-reset")
            assert len(live) == 2
            # Parked, not spinning: few loop iterations during the wait.
            await asyncio.sleep(0.2)
            assert loop.statistics()["iterations"] - it0 < 500
            assert ctx.table_full >= 1
            # Free two slots: the parked accept re-arms and serves again.
            for c in held:
                c.close()
            await asyncio.gather(*(c.wait_closed() for c in held))
            c = await ringline.connect(HOST, server.port)
            c.send_nowait(b"still serving")
            await until(lambda: len(live) == 1, what="a new handler")
            c.close()
            await c.wait_closed()
        finally:
            await server.shutdown(2.0)
        await until(lambda: ctx.fixed_live == 0, what="every slot closed")

    ringline.run(main(), config=cfg)


# ---------------------------------------------------------------------------
# connect(): cancellation, errors
# ---------------------------------------------------------------------------


@contextlib.contextmanager
def full_backlog():
    """A listener whose accept queue is full: connects to it hang."""
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
        time.sleep(0.05)
        yield port
    finally:
        for f in fillers:
            f.close()
        ls.close()


def test_cancelled_connect_cancels_the_op_and_closes_the_socket(mode):
    async def main():
        loop = asyncio.get_running_loop()
        with full_backlog() as port:
            await asyncio.sleep(0)
            base_fds = open_fd_count()
            base_slots = loop.statistics()["slots_live"]
            for _ in range(5):
                t = asyncio.ensure_future(ringline.connect(HOST, port))
                await asyncio.sleep(0.05)
                assert not t.done()
                t.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await t
            # The connect ops are gone from the kernel (no 127 s SYN retry
            # keeps them), and so are the sockets.
            await until(lambda: loop.statistics()["slots_live"] <= base_slots,
                        what="connect ops cancelled")
            await until(lambda: ctx_stats()["fixed_live"] == 0, what="slots closed")
            assert open_fd_count() <= base_fds

    ringline.run(main())


def test_connect_refused_closes_the_slot(mode):
    async def main():
        s = socket.socket()
        s.bind((HOST, 0))
        port = s.getsockname()[1]
        s.close()
        base = open_fd_count()
        for _ in range(20):
            with pytest.raises(ConnectionRefusedError):
                await ringline.connect(HOST, port)
        await until(lambda: ctx_stats()["fixed_live"] == 0, what="slots closed")
        assert open_fd_count() <= base

    ringline.run(main())


# ---------------------------------------------------------------------------
# close paths
# ---------------------------------------------------------------------------


def test_close_gives_peer_fin_after_queued_data(mode):
    payload = os.urandom(1 << 20)

    async def handler(conn):
        conn.send_nowait(payload)
        # Returning closes: queued bytes drain, then FIN.

    def client(port: int) -> bytes:
        with socket.create_connection((HOST, port), timeout=IO_TIMEOUT) as s:
            buf = bytearray()
            while chunk := s.recv(1 << 16):
                buf += chunk
            return bytes(buf)

    assert serve_and_run(handler, client) == payload


def test_abort_resets_at_once(mode):
    async def main():
        accepted = asyncio.get_running_loop().create_future()

        async def handler(conn):
            accepted.set_result(conn)
            await conn.wait_closed()

        server = await ringline.serve(handler, HOST, 0)
        try:
            c = await ringline.connect(HOST, server.port)
            srv = await asyncio.wait_for(accepted, IO_TIMEOUT)
            c.send_nowait(b"x" * 100)
            c.abort()
            await c.wait_closed()
            assert await srv.recv() in (b"", b"x" * 100)
        finally:
            await server.shutdown(2.0)
        await until(lambda: ctx_stats()["fixed_live"] == 0, what="slots closed")

    ringline.run(main())


def test_close_finishes_when_the_recv_ends_with_enobufs():
    """A one-buffer ring makes the multishot recv end with ENOBUFS inside a
    batch; a protocol that closes its transport from data_received asks for
    the close while that recv is still armed.  Whichever CQE ends the recv
    (ECANCELED or ENOBUFS), the close must finish."""
    cfg = Config(recv_buffer_count=1, recv_buffer_size=4096)
    lost = []

    class Closer(asyncio.Protocol):
        def connection_made(self, transport):
            self.t = transport

        def data_received(self, data):
            self.t.close()

        def connection_lost(self, exc):
            lost.append(exc)

    def blast(port: int, n: int) -> None:
        for _ in range(n):
            with socket.create_connection((HOST, port), timeout=IO_TIMEOUT) as s:
                with contextlib.suppress(OSError):
                    s.sendall(b"z" * (256 << 10))

    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Closer, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        try:
            await asyncio.to_thread(blast, port, 20)
            await until(lambda: len(lost) == 20, timeout=5, what="every transport closed")
        finally:
            server.close()
            await server.wait_closed()

    ringline.run(main(), config=cfg)


# ---------------------------------------------------------------------------
# send_parts is all or nothing
# ---------------------------------------------------------------------------


def test_send_parts_pool_exhausted_queues_nothing(mode):
    cfg = Config(send_pool_slots=4, send_pool_slot_size=64)

    async def main():
        accepted = asyncio.get_running_loop().create_future()

        async def handler(conn):
            accepted.set_result(conn)
            await conn.wait_closed()

        server = await ringline.serve(handler, HOST, 0)
        try:
            c = await ringline.connect(HOST, server.port)
            srv = await asyncio.wait_for(accepted, IO_TIMEOUT)
            # 3 one-slot parts fit, the 4th (3 slots) does not: nothing goes.
            parts = [bytearray(b"a" * 64)] * 3 + [bytearray(b"b" * 192)]
            with pytest.raises(SendPoolExhausted):
                c.send_parts(parts)
            assert c.queued == 0
            assert _stream.net_state_for(asyncio.get_running_loop()).pool.slots_free == 4
            # bytes never need the pool; a fitting mix goes out whole.
            n = await c.send_parts([b"head:", bytearray(b"mid"), b"", memoryview(b"tail")])
            assert n == 12
            assert await srv.recv_exactly(12) == b"head:midtail"
            assert await c.send_parts([]) == 0
            c.close()
            await c.wait_closed()
        finally:
            await server.shutdown(2.0)

    ringline.run(main(), config=cfg)


# ---------------------------------------------------------------------------
# listening on every family with port 0
# ---------------------------------------------------------------------------


def _have_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_port_zero_on_every_family_shares_one_port():
    if not _have_ipv6():
        pytest.skip("no IPv6")

    async def main():
        server = await ringline.serve(echo, None, 0)
        try:
            ports = {s.getsockname()[1] for s in server.sockets}
            families = {s.family for s in server.sockets}
            assert len(ports) == 1
            if len(families) > 1:
                for host in ("127.0.0.1", "::1"):
                    c = await ringline.connect(host, server.port)
                    c.send_nowait(b"v")
                    assert await c.recv_exactly(1) == b"v"
                    c.close()
                    await c.wait_closed()
        finally:
            await server.shutdown(2.0)

    for _ in range(5):
        ringline.run(main())


def test_port_zero_retries_when_the_first_pick_is_taken_on_another_family():
    """Occupy IPv6 ports so that the IPv4 pick is likely to collide; the
    listener must still come up on one shared port (or fail with EADDRINUSE
    only after its retries)."""
    if not _have_ipv6():
        pytest.skip("no IPv6")
    from ringline._listen import listen_sockets

    blockers = []
    try:
        # Hold the IPv6 side of ports the kernel is about to hand out for IPv4.
        for _ in range(64):
            p4 = socket.socket()
            p4.bind((HOST, 0))
            port = p4.getsockname()[1]
            p4.close()
            b6 = socket.socket(socket.AF_INET6)
            b6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            with contextlib.suppress(OSError):
                b6.bind(("::", port))
                b6.listen(1)
                blockers.append(b6)
                continue
            b6.close()
        socks = listen_sockets(None, 0, Config(reuse_port=False))
        try:
            assert len({s.getsockname()[1] for s in socks}) == 1
        finally:
            for s in socks:
                s.close()
    except OSError as exc:
        assert exc.errno == errno.EADDRINUSE
    finally:
        for b in blockers:
            b.close()


# ---------------------------------------------------------------------------
# churn on the table
# ---------------------------------------------------------------------------


def test_many_cycles_leave_no_slot_behind(mode):
    async def main():
        server = await ringline.serve(echo, HOST, 0)
        loop = asyncio.get_running_loop()
        try:
            slots0 = loop.statistics()["slots_live"]

            async def one():
                c = await ringline.connect(HOST, server.port)
                c.send_nowait(b"1")
                assert await c.recv_exactly(1) == b"1"
                c.close()
                await c.wait_closed()

            for _ in range(50):
                await asyncio.gather(*(one() for _ in range(8)))
            await until(lambda: ctx_stats()["fixed_live"] == 0, what="slots closed")
            await until(lambda: loop.statistics()["slots_live"] <= slots0, what="ops done")
        finally:
            await server.shutdown(2.0)

    ringline.run(main())


def test_threaded_peers_against_direct_server():
    """Real peers in threads: many short exchanges, byte exact."""
    errors = []

    def client(port: int, k: int) -> None:
        try:
            for i in range(20):
                with socket.create_connection((HOST, port), timeout=IO_TIMEOUT) as s:
                    msg = f"{k}:{i}".encode() * 100
                    s.sendall(msg)
                    s.shutdown(socket.SHUT_WR)
                    buf = bytearray()
                    while chunk := s.recv(1 << 16):
                        buf += chunk
                    assert bytes(buf) == msg
        except BaseException as exc:
            errors.append(exc)

    async def main():
        server = await ringline.serve(echo, HOST, 0)
        try:
            threads = [threading.Thread(target=client, args=(server.port, k)) for k in range(8)]
            for t in threads:
                t.start()
            await asyncio.to_thread(lambda: [t.join(30) for t in threads])
        finally:
            await server.shutdown(2.0)

    ringline.run(main())
    assert not errors, errors[0]


def test_ipv6_addresses_match_the_socket_api(mode):
    if not _have_ipv6():
        pytest.skip("no IPv6")
    seen = []

    async def handler(conn):
        seen.append((conn.peer_addr, conn.local_addr))
        await conn.recv()

    async def main():
        server = await ringline.serve(handler, "::1", 0)
        try:
            s = socket.socket(socket.AF_INET6)
            s.settimeout(IO_TIMEOUT)
            await asyncio.to_thread(s.connect, ("::1", server.port))
            try:
                await until(lambda: seen, what="handler")
                assert seen[0] == (s.getsockname(), s.getpeername())
                c = await ringline.connect("::1", server.port)
                await until(lambda: len(seen) == 2, what="second handler")
                assert seen[1] == (c.local_addr, c.peer_addr)
                assert len(c.local_addr) == 4 and c.local_addr[0] == "::1"
                c.close()
                await c.wait_closed()
            finally:
                s.close()
        finally:
            await server.shutdown(2.0)

    ringline.run(main())
