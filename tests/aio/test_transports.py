"""The asyncio stream-transport contract on each loop.

Everything here runs on real loopback sockets, once per loop (asyncio's
SelectorEventLoop as the reference, uvloop, ringline), and fails on any
unexpected exception-handler call.  Covered: create_server /
create_connection over IPv4 and IPv6 (``sock=``, ``reuse_port``, dual-stack
``host=None``, happy eyeballs, ``local_addr``), ``Server`` objects, the
transport methods (write/writelines/write_eof, eof_received, reading
pause/resume, write-buffer limits and pause_writing/resume_writing,
extra info, abort/close/reset, set_protocol, BufferedProtocol, protocol
errors), TLS options (handshake and shutdown timeouts, server_hostname, TLS
extra info), and loop.close() with transports and servers still open.

Where ringline deliberately differs (docs/asyncio-differences.md), the test
checks ringline's documented behaviour.  No assertion depends on timing: a
sleep only ever gives something the chance to happen that must not.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import random
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import threading
import warnings

import pytest

from tests.support import loops, run_on

pytestmark = pytest.mark.timeout(30)

LOCAL = "127.0.0.1"
IO = 5.0          # bound on any single wait; the tests take milliseconds
KIB = 1 << 10
MIB = 1 << 20


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


HAS_IPV6 = _ipv6_loopback()
needs_ipv6 = pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback (::1) here")


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------



def blob(n, seed):
    return random.Random(seed).randbytes(n)


async def settle(loop, seconds=0.05):
    """Give the loop several iterations (for things that must NOT happen)."""
    for _ in range(10):
        await asyncio.sleep(0)
    await asyncio.sleep(seconds)


class Proto(asyncio.Protocol):
    """Records every protocol call; futures for connection_made/eof/lost."""

    def __init__(self, loop, *, eof_result=None):
        self.loop = loop
        self.eof_result = eof_result
        self.transport = None
        self.calls: list[str] = []
        self.data = bytearray()
        self.made = loop.create_future()
        self.eof = loop.create_future()
        self.lost = loop.create_future()
        self.lost_count = 0
        self._waiters: list[tuple[int, asyncio.Future]] = []

    def connection_made(self, transport):
        self.calls.append("made")
        self.transport = transport
        self.made.set_result(transport)

    def data_received(self, data):
        assert isinstance(data, bytes)
        assert "lost" not in self.calls and "eof" not in self.calls
        self.calls.append("data")
        self.data += data
        for n, fut in self._waiters:
            if len(self.data) >= n and not fut.done():
                fut.set_result(None)

    def eof_received(self):
        self.calls.append("eof")
        self.eof.set_result(None)
        return self.eof_result

    def connection_lost(self, exc):
        self.calls.append("lost")
        self.lost_count += 1
        if not self.lost.done():
            self.lost.set_result(exc)

    async def received(self, n):
        """Wait until at least ``n`` bytes have arrived; return them all."""
        if len(self.data) < n:
            fut = self.loop.create_future()
            self._waiters.append((n, fut))
            await asyncio.wait_for(fut, IO)
        return bytes(self.data)

    async def wait_lost(self):
        exc = await asyncio.wait_for(asyncio.shield(self.lost), IO)
        await settle(self.loop, 0)
        assert self.lost_count == 1, self.calls
        assert self.calls[-1] == "lost", self.calls
        return exc


class Accepted:
    """Protocol factory for servers: every protocol it makes is queued."""

    def __init__(self, loop, cls=Proto, **kw):
        self.loop = loop
        self.cls = cls
        self.kw = kw
        self.made: list[Proto] = []
        self.queue: asyncio.Queue = asyncio.Queue()

    def __call__(self):
        p = self.cls(self.loop, **self.kw)
        self.made.append(p)
        self.queue.put_nowait(p)
        return p

    async def next(self):
        p = await asyncio.wait_for(self.queue.get(), IO)
        await asyncio.wait_for(asyncio.shield(p.made), IO)
        return p


def listener(family=socket.AF_INET, host=LOCAL, rcvbuf=None):
    srv = socket.socket(family, socket.SOCK_STREAM)
    if rcvbuf is not None:     # inherited by the accepted socket
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    srv.bind((host, 0))
    srv.listen(8)
    srv.setblocking(False)
    return srv


async def client_side(loop, factory=None, rcvbuf=None, **kw):
    """(transport, protocol, peer): a create_connection transport whose peer
    is a raw non-blocking socket accepted with sock_accept."""
    factory = factory or (lambda: Proto(loop))
    with listener(rcvbuf=rcvbuf) as srv:
        acc = asyncio.ensure_future(loop.sock_accept(srv))
        t, p = await asyncio.wait_for(
            loop.create_connection(factory, *srv.getsockname(), **kw), IO)
        peer, _ = await asyncio.wait_for(acc, IO)
    peer.setblocking(False)
    return t, p, peer


async def server_side(loop, cls=Proto, **kw):
    """(server, transport, protocol, peer): a transport accepted by
    create_server, its peer a raw socket connected with sock_connect."""
    acc = Accepted(loop, cls, **kw)
    server = await loop.create_server(acc, LOCAL, 0)
    peer = socket.socket()
    peer.setblocking(False)
    await asyncio.wait_for(loop.sock_connect(peer, server.sockets[0].getsockname()), IO)
    p = await acc.next()
    return server, p.transport, p, peer


@pytest.fixture(params=["client", "server"])
def side(request):
    """Which end of the connection the transport under test is."""
    return request.param


async def make_side(loop, side, cls=Proto, **kw):
    """(transport, protocol, peer, server-or-None) for ``side``."""
    if side == "client":
        t, p, peer = await client_side(loop, lambda: cls(loop, **kw))
        return t, p, peer, None
    server, t, p, peer = await server_side(loop, cls, **kw)
    return t, p, peer, server


async def recv_until_eof(loop, sock, limit=None):
    """Read from a raw peer until EOF (or ``limit`` bytes).  A reset counts as EOF."""
    buf = bytearray()
    while limit is None or len(buf) < limit:
        try:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 256 * KIB), IO)
        except ConnectionResetError:
            break
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def reset(sock):
    """Close with SO_LINGER 0: the kernel sends RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def echo_once(loop, server_sock_addr, family=socket.AF_INET, **kw):
    """create_connection to an echo server, one round trip; returns the
    client transport's sockname and peername."""
    t, p = await asyncio.wait_for(
        loop.create_connection(lambda: Proto(loop), *server_sock_addr[:2], **kw), IO)
    try:
        t.write(b"ping")
        assert await p.received(4) == b"ping"
        return t.get_extra_info("sockname"), t.get_extra_info("peername")
    finally:
        t.close()
        await p.wait_lost()


class Echo(Proto):
    def data_received(self, data):
        super().data_received(data)
        self.transport.write(data)


def refused_now(addr):
    """Whether a connection to ``addr`` is refused, without the loop running
    in between (loopback connects complete or fail within connect())."""
    with socket.socket() as s:
        s.settimeout(IO)
        try:
            s.connect(addr)
        except ConnectionRefusedError:
            return True
        return False


async def refused(loop, addr, family=socket.AF_INET):
    """Whether a connection to ``addr`` is refused."""
    with socket.socket(family) as s:
        s.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(s, addr), IO)
        except ConnectionRefusedError:
            return True
        return False


# ---------------------------------------------------------------------------
# 1. create_server / create_connection
# ---------------------------------------------------------------------------


def test_ipv4_server_and_client(loop):
    async def main():
        acc = Accepted(loop, Echo)
        async with await loop.create_server(acc, LOCAL, 0) as server:
            addr = server.sockets[0].getsockname()
            assert server.sockets[0].family == socket.AF_INET
            sockname, peername = await echo_once(loop, addr)
            assert peername == addr
            sp = await acc.next()
            assert sp.transport.get_extra_info("peername") == sockname
            assert sp.transport.get_extra_info("sockname") == addr
            assert await sp.wait_lost() is None

    run_on(loop, main())


@needs_ipv6
def test_ipv6_server_and_client(loop):
    async def main():
        acc = Accepted(loop, Echo)
        async with await loop.create_server(acc, "::1", 0) as server:
            addr = server.sockets[0].getsockname()
            assert server.sockets[0].family == socket.AF_INET6
            sockname, peername = await echo_once(loop, addr)
            assert peername[:2] == addr[:2]
            assert sockname[0] == "::1"
            sp = await acc.next()
            assert sp.transport.get_extra_info("peername")[:2] == sockname[:2]
            assert await sp.wait_lost() is None

    run_on(loop, main())


def test_create_server_from_a_bound_socket(loop):
    async def main():
        sock = socket.socket()
        sock.bind((LOCAL, 0))
        addr = sock.getsockname()
        acc = Accepted(loop, Echo)
        async with await loop.create_server(acc, sock=sock) as server:
            assert [s.getsockname() for s in server.sockets] == [addr]
            await echo_once(loop, addr)
            assert len(acc.made) == 1
        # The server owns the socket it was given: closed with it.
        assert sock.fileno() == -1

    run_on(loop, main())


def test_create_connection_from_a_connected_socket(loop):
    async def main():
        with listener() as srv:
            addr = srv.getsockname()
            sock = socket.socket()
            sock.setblocking(False)
            acc = asyncio.ensure_future(loop.sock_accept(srv))
            await loop.sock_connect(sock, addr)
            peer, _ = await asyncio.wait_for(acc, IO)
        peer.setblocking(False)
        with peer:
            t, p = await loop.create_connection(lambda: Proto(loop), sock=sock)
            assert t.get_extra_info("peername") == addr
            assert t.get_extra_info("sockname") == peer.getpeername()
            await loop.sock_sendall(peer, b"to the transport")
            assert await p.received(16) == b"to the transport"
            t.write(b"to the peer")
            t.close()
            assert await recv_until_eof(loop, peer) == b"to the peer"
            assert await p.wait_lost() is None
            assert sock.fileno() == -1      # the transport closed the socket it took

    run_on(loop, main())


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT")
def test_reuse_port_two_servers_one_port(loop):
    async def main():
        acc1, acc2 = Accepted(loop, Echo), Accepted(loop, Echo)
        s1 = await loop.create_server(acc1, LOCAL, 0, reuse_port=True)
        addr = s1.sockets[0].getsockname()
        s2 = await loop.create_server(acc2, LOCAL, addr[1], reuse_port=True)
        try:
            assert s2.sockets[0].getsockname() == addr
            # Without reuse_port the port really is taken.
            with pytest.raises(OSError):
                await loop.create_server(Accepted(loop), LOCAL, addr[1])
            for _ in range(8):
                await echo_once(loop, addr)
            assert len(acc1.made) + len(acc2.made) == 8
            # With the first server closed, the second takes every connection.
            s1.close()
            await s1.wait_closed()
            before = len(acc2.made)
            for _ in range(4):
                await echo_once(loop, addr)
            assert len(acc2.made) == before + 4
        finally:
            s1.close()
            s2.close()
            await s2.wait_closed()

    run_on(loop, main())


def test_host_none_listens_on_every_family(loop):
    async def main():
        acc = Accepted(loop, Echo)
        async with await loop.create_server(acc, None, 0) as server:
            families = {s.family for s in server.sockets}
            assert socket.AF_INET in families
            if HAS_IPV6:
                assert socket.AF_INET6 in families
            for s in server.sockets:
                port = s.getsockname()[1]
                if s.family == socket.AF_INET6:
                    # asyncio sets IPV6_V6ONLY so each family has its own socket.
                    assert s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
                    _, peer = await echo_once(loop, ("::1", port))
                    assert peer[0] == "::1"
                else:
                    _, peer = await echo_once(loop, (LOCAL, port))
                    assert peer[0] == LOCAL
            assert len(acc.made) == len(server.sockets)

    run_on(loop, main())


def test_happy_eyeballs_to_localhost_with_one_family_listening(loop, loop_name):
    if loop_name == "uvloop":
        pytest.skip("uvloop's create_connection has no happy_eyeballs_delay/interleave")
    infos = socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)
    if not any(i[4][0] == LOCAL for i in infos):
        pytest.skip("'localhost' does not resolve to 127.0.0.1 here")

    async def main():
        acc = Accepted(loop, Echo)
        # Only IPv4 listens: if 'localhost' also gives ::1, that attempt is
        # refused (or loses the race) and the IPv4 one must win.
        async with await loop.create_server(acc, LOCAL, 0) as server:
            port = server.sockets[0].getsockname()[1]
            for kw in ({"happy_eyeballs_delay": 0.05}, {"happy_eyeballs_delay": 0.05, "interleave": 2},
                       {"interleave": 1}):
                _, peer = await echo_once(loop, ("localhost", port), **kw)
                assert peer == (LOCAL, port)
            assert len(acc.made) == 3

    run_on(loop, main())


def test_local_addr(loop):
    async def main():
        acc = Accepted(loop, Echo)
        async with await loop.create_server(acc, LOCAL, 0) as server:
            addr = server.sockets[0].getsockname()
            with socket.socket() as probe:      # a port free right now
                probe.bind((LOCAL, 0))
                local = probe.getsockname()
            sockname, _ = await echo_once(loop, addr, local_addr=local)
            assert sockname == local
            sp = await acc.next()
            assert sp.transport.get_extra_info("peername") == local
            # Port 0: the kernel picks the port, the host is kept.
            sockname, _ = await echo_once(loop, addr, local_addr=(LOCAL, 0))
            assert sockname[0] == LOCAL and sockname[1] != 0

    run_on(loop, main())


# ---------------------------------------------------------------------------
# 2. Server objects
# ---------------------------------------------------------------------------


def test_server_start_serving_false_then_start_serving(loop):
    async def main():
        acc = Accepted(loop, Echo)
        server = await loop.create_server(acc, LOCAL, 0, start_serving=False)
        try:
            addr = server.sockets[0].getsockname()
            assert not server.is_serving()
            assert server.get_loop() is loop
            # Bound but not listening yet.
            assert await refused(loop, addr)
            await server.start_serving()
            assert server.is_serving()
            await echo_once(loop, addr)
            assert len(acc.made) == 1
            await server.start_serving()        # idempotent
            assert server.is_serving()
        finally:
            server.close()
            await server.wait_closed()
        assert not server.is_serving()

    run_on(loop, main())


def test_server_serve_forever_cancelled(loop):
    async def main():
        acc = Accepted(loop, Echo)
        server = await loop.create_server(acc, LOCAL, 0, start_serving=False)
        addr = server.sockets[0].getsockname()
        task = asyncio.ensure_future(server.serve_forever())
        await asyncio.sleep(0)
        assert server.is_serving()
        await echo_once(loop, addr)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # serve_forever closes the server on its way out.
        assert not server.is_serving()
        assert await refused(loop, addr)

    run_on(loop, main())


def test_server_close_and_wait_closed(loop):
    async def main():
        server = await loop.create_server(Accepted(loop), LOCAL, 0)
        addr = server.sockets[0].getsockname()
        assert server.is_serving()
        assert all(isinstance(s.fileno(), int) and s.fileno() >= 0 for s in server.sockets)
        server.close()
        # Listening stops within close(), not at some later iteration.
        assert refused_now(addr)
        assert not server.is_serving()
        assert not server.sockets
        await asyncio.wait_for(server.wait_closed(), IO)
        assert await refused(loop, addr)
        server.close()                  # twice is harmless

    run_on(loop, main())


def test_server_async_with(loop):
    async def main():
        server = await loop.create_server(Accepted(loop, Echo), LOCAL, 0)
        async with server as s:
            assert s is server
            addr = server.sockets[0].getsockname()
            await echo_once(loop, addr)
        assert not server.is_serving()
        assert await refused(loop, addr)

    run_on(loop, main())


def test_server_close_keeps_established_connections(loop, loop_name):
    async def main():
        acc = Accepted(loop, Echo)
        server = await loop.create_server(acc, LOCAL, 0)
        addr = server.sockets[0].getsockname()
        t, p = await loop.create_connection(lambda: Proto(loop), *addr)
        sp = await acc.next()
        server.close()
        closed = asyncio.ensure_future(server.wait_closed())
        if sys.version_info < (3, 12):
            # 3.11: wait_closed() does not wait for connections.
            await asyncio.wait_for(closed, IO)
        assert await refused(loop, addr)
        # The established connection still works both ways.
        t.write(b"still here")
        assert await p.received(10) == b"still here"
        assert not sp.transport.is_closing()
        if sys.version_info >= (3, 12) and loop_name != "uvloop":
            # 3.12+: waits for the connection too (uvloop's Server does not).
            await settle(loop)
            assert not closed.done()
        t.close()
        assert await p.wait_lost() is None
        assert await sp.wait_lost() is None
        await asyncio.wait_for(closed, IO)

    run_on(loop, main())


# ---------------------------------------------------------------------------
# 3. The transport contract
# ---------------------------------------------------------------------------


def test_write_writelines_close_delivers_everything_then_fin(loop, side):
    data = blob(3 * MIB + 17, 1)

    async def main():
        t, p, peer, server = await make_side(loop, side)
        with peer:
            t.write(data[:100])
            t.writelines([data[100:1000], bytearray(data[1000:5000]),
                          memoryview(data)[5000:MIB]])
            t.write(data[MIB:])
            assert not t.is_closing()
            t.close()
            assert t.is_closing()
            assert not t.is_reading()
            t.close()                   # twice is harmless
            got = await recv_until_eof(loop, peer)
            assert len(got) == len(data) and got == data
            assert await p.wait_lost() is None
            assert p.calls == ["made", "lost"]
        if server is not None:
            server.close()

    run_on(loop, main())


def test_write_rejects_non_bytes(loop, loop_name):
    async def main():
        t, p, peer = await client_side(loop)
        with peer:
            with pytest.raises(TypeError):
                t.write("text")
            if loop_name != "uvloop":   # uvloop keeps part of it and never sends
                with pytest.raises(TypeError):
                    t.writelines([b"not sent", 42])
            t.write(b"")                # empty writes are no-ops
            t.write(b"ok")
            t.close()
            # A bad item makes writelines() write nothing at all.
            assert await recv_until_eof(loop, peer) == b"ok"
            await p.wait_lost()

    run_on(loop, main())


def test_write_copies_bytearray_and_memoryview(loop):
    async def main():
        t, p, peer = await client_side(loop)
        with peer:
            ba = bytearray(b"A" * (200 * KIB))
            src = bytearray(b"B" * 5000)
            t.write(ba)
            t.write(memoryview(src)[1000:3000])
            t.write(ba)
            # The caller may reuse its buffers as soon as write() returns.
            ba[:] = b"X" * len(ba)
            src[:] = b"Y" * len(src)
            t.close()
            got = await recv_until_eof(loop, peer)
            assert got == b"A" * (200 * KIB) + b"B" * 2000 + b"A" * (200 * KIB)
            await p.wait_lost()

    run_on(loop, main())


def test_write_eof_half_close(loop, side):
    async def main():
        t, p, peer, server = await make_side(loop, side)
        with peer:
            assert t.can_write_eof()
            t.write(b"request")
            t.write_eof()
            t.write_eof()               # twice is harmless
            with pytest.raises(RuntimeError):
                t.write(b"after eof")
            # The peer sees the data, then EOF...
            assert await recv_until_eof(loop, peer) == b"request"
            assert not t.is_closing()
            # ...and can still answer: the transport still reads.
            await loop.sock_sendall(peer, b"response")
            assert await p.received(8) == b"response"
            peer.shutdown(socket.SHUT_WR)
            await asyncio.wait_for(asyncio.shield(p.eof), IO)
            assert await p.wait_lost() is None
            assert p.calls[0] == "made" and p.calls[-2:] == ["eof", "lost"]
        if server is not None:
            server.close()

    run_on(loop, main())


def test_eof_received_true_keeps_the_transport_open(loop, side):
    async def main():
        t, p, peer, server = await make_side(loop, side, eof_result=True)
        with peer:
            await loop.sock_sendall(peer, b"last words")
            peer.shutdown(socket.SHUT_WR)
            await asyncio.wait_for(asyncio.shield(p.eof), IO)
            assert p.data == b"last words"
            await settle(loop)
            assert not t.is_closing()
            assert p.calls == ["made", "data", "eof"]
            t.write(b"answer after eof")
            t.close()
            assert await recv_until_eof(loop, peer) == b"answer after eof"
            assert await p.wait_lost() is None
        if server is not None:
            server.close()

    run_on(loop, main())


@pytest.mark.parametrize("result", [None, False])
def test_eof_received_false_closes_the_transport(loop, side, result):
    async def main():
        t, p, peer, server = await make_side(loop, side, eof_result=result)
        with peer:
            peer.shutdown(socket.SHUT_WR)
            assert await p.wait_lost() is None
            assert t.is_closing()
            assert p.calls == ["made", "eof", "lost"]
            assert await recv_until_eof(loop, peer) == b""
        if server is not None:
            server.close()

    run_on(loop, main())


def test_pause_reading_holds_data_until_resume(loop, side):
    chunks = [blob(1000 + 7919 * i, i) for i in range(12)]

    async def main():
        t, p, peer, server = await make_side(loop, side)
        with peer:
            assert t.is_reading()
            t.pause_reading()
            t.pause_reading()           # twice is harmless
            assert not t.is_reading()
            for c in chunks:
                await loop.sock_sendall(peer, c)
            peer.shutdown(socket.SHUT_WR)
            await settle(loop)
            assert p.calls == ["made"], "data_received/eof_received while paused"
            t.resume_reading()
            assert t.is_reading()
            t.resume_reading()          # twice is harmless
            assert await p.wait_lost() is None      # eof_received -> None -> close
            assert bytes(p.data) == b"".join(chunks)
            assert p.calls[-2:] == ["eof", "lost"]
        if server is not None:
            server.close()

    run_on(loop, main())


def test_pause_again_before_delivery_delivers_nothing(loop):
    async def main():
        t, p, peer = await client_side(loop)
        with peer:
            t.pause_reading()
            await loop.sock_sendall(peer, b"held")
            await settle(loop)
            # Resumed and paused again in the same iteration: nothing may be
            # delivered in between.
            t.resume_reading()
            t.pause_reading()
            await settle(loop)
            assert p.calls == ["made"]
            t.resume_reading()
            assert await p.received(4) == b"held"
            await loop.sock_sendall(peer, b" and more")
            assert await p.received(13) == b"held and more"
            t.close()
            await p.wait_lost()

    run_on(loop, main())


def test_no_data_received_after_close(loop):
    async def main():
        t, p, peer = await client_side(loop)
        with peer:
            # The bytes are in the transport's socket before close(), but
            # close() comes first from the protocol's point of view.
            peer.send(b"too late")
            t.close()
            assert await p.wait_lost() is None
            assert p.calls == ["made", "lost"]

    run_on(loop, main())


def test_write_buffer_limits(loop, loop_name):
    async def main():
        t, p, peer = await client_side(loop)
        with peer:
            low, high = t.get_write_buffer_limits()
            if loop_name == "ringline":
                # Documented: Config.send_queue_low_water / send_queue_limit.
                cfg = loop.config
                assert (low, high) == (cfg.effective_send_queue_low_water, cfg.send_queue_limit)
            else:
                assert high >= low >= 0
            t.set_write_buffer_limits(high=1000)
            assert t.get_write_buffer_limits() == (250, 1000)
            t.set_write_buffer_limits(low=100)
            assert t.get_write_buffer_limits() == (100, 400)
            t.set_write_buffer_limits(high=2000, low=500)
            assert t.get_write_buffer_limits() == (500, 2000)
            t.set_write_buffer_limits()
            assert t.get_write_buffer_limits() == (16 * KIB, 64 * KIB)
            with pytest.raises(ValueError):
                t.set_write_buffer_limits(high=100, low=200)
            with pytest.raises(ValueError):
                t.set_write_buffer_limits(high=-1)
            assert t.get_write_buffer_limits() == (16 * KIB, 64 * KIB)
            t.close()
            await p.wait_lost()

    run_on(loop, main())


def test_write_buffer_size_counts_unsent_bytes(loop, loop_name):
    async def main():
        t, p, peer = await client_side(loop)
        with peer:
            assert t.get_write_buffer_size() == 0
            t.write(b"abc")
            if loop_name == "ringline":
                # Documented: write() never sends synchronously.
                assert t.get_write_buffer_size() == 3
            assert await recv_until_eof(loop, peer, 3) == b"abc"
            await settle(loop, 0)
            assert t.get_write_buffer_size() == 0
            t.close()
            await p.wait_lost()

    run_on(loop, main())


class FlowProto(Proto):
    """Records pause_writing/resume_writing with the buffer size at the time."""

    def __init__(self, loop, **kw):
        super().__init__(loop, **kw)
        self.flow: list[tuple[str, int]] = []
        self.resumed = loop.create_future()

    def pause_writing(self):
        assert not self.flow or self.flow[-1][0] == "resume", self.flow
        self.flow.append(("pause", self.transport.get_write_buffer_size()))

    def resume_writing(self):
        assert self.flow and self.flow[-1][0] == "pause", self.flow
        self.flow.append(("resume", self.transport.get_write_buffer_size()))
        if not self.resumed.done():
            self.resumed.set_result(None)


def test_pause_writing_resume_writing(loop, side):
    high, low = 64 * KIB, 16 * KIB
    chunk = 32 * KIB

    async def main():
        t, p, peer, server = await make_side(loop, side, FlowProto)
        with peer:
            # Small kernel buffers so that asyncio's synchronous send fills up
            # quickly; the peer does not read.
            t.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * KIB)
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * KIB)
            t.set_write_buffer_limits(high=high, low=low)
            sent = bytearray()
            i = 0
            while not p.flow:
                assert len(sent) < 64 * MIB, "pause_writing never called"
                data = blob(chunk, i)
                i += 1
                t.write(data)
                sent += data
                size = t.get_write_buffer_size()
                # pause_writing comes from inside write(), exactly when the
                # buffer goes over the high-water mark.
                assert bool(p.flow) == (size > high), (p.flow, size)
                await asyncio.sleep(0)
            assert p.flow[0][0] == "pause" and p.flow[0][1] > high
            # Writing on while paused is allowed.
            t.write(b"tail")
            sent += b"tail"
            # Now the peer reads: resume_writing once the buffer is <= low.
            got = await recv_until_eof(loop, peer, len(sent))
            await asyncio.wait_for(asyncio.shield(p.resumed), IO)
            assert got == bytes(sent)
            # Alternating (FlowProto checks), each at its mark; the kernel may
            # take enough meanwhile for more than one round on some loops.
            assert p.flow[-1][0] == "resume"
            assert all(size > high for what, size in p.flow if what == "pause"), p.flow
            assert all(size <= low for what, size in p.flow if what == "resume"), p.flow
            t.close()
            assert await recv_until_eof(loop, peer) == b""
            await p.wait_lost()
        if server is not None:
            server.close()

    run_on(loop, main())


def test_lowering_the_limits_pauses_the_protocol(loop):
    async def main():
        t, p, peer = await client_side(loop, lambda: FlowProto(loop), rcvbuf=32 * KIB)
        with peer:
            t.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * KIB)
            t.set_write_buffer_limits(high=1 << 30)
            sent = bytearray()
            while t.get_write_buffer_size() == 0:
                assert len(sent) < 64 * MIB
                data = blob(16 * KIB, len(sent))
                t.write(data)
                sent += data
            assert not p.flow
            t.set_write_buffer_limits(high=0)
            assert [f[0] for f in p.flow] == ["pause"]
            got = await recv_until_eof(loop, peer, len(sent))
            await asyncio.wait_for(asyncio.shield(p.resumed), IO)
            assert got == bytes(sent)
            t.close()
            await p.wait_lost()

    run_on(loop, main())


def test_extra_info(loop, side):
    async def main():
        t, p, peer, server = await make_side(loop, side)
        with peer:
            sock = t.get_extra_info("socket")
            assert sock.family == socket.AF_INET
            assert sock.type == socket.SOCK_STREAM
            assert sock.getsockname() == peer.getpeername()
            assert t.get_extra_info("sockname") == peer.getpeername()
            assert t.get_extra_info("peername") == peer.getsockname()
            assert t.get_extra_info("no such thing") is None
            assert t.get_extra_info("no such thing", "dflt") == "dflt"
            assert t.get_protocol() is p
            # TCP_NODELAY is set on stream transports, as asyncio does.
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            t.close()
            await p.wait_lost()
        if server is not None:
            server.close()

    run_on(loop, main())


def test_abort(loop, side):
    async def main():
        t, p, peer, server = await make_side(loop, side)
        with peer:
            t.write(blob(256 * KIB, 3))
            t.abort()
            assert t.is_closing()
            assert not t.is_reading()
            t.abort()                   # twice, and close() after, are harmless
            t.close()
            t.write(b"ignored")
            assert await p.wait_lost() is None
            assert t.get_write_buffer_size() == 0     # the queued data is dropped
            # The peer sees the end of the stream (FIN or RST); what was queued
            # may or may not have gone out, but nothing after the abort.
            got = await recv_until_eof(loop, peer)
            assert b"ignored" not in got
        if server is not None:
            server.close()

    run_on(loop, main())


def test_connection_lost_with_the_error_on_peer_reset(loop, side):
    async def main():
        t, p, peer, server = await make_side(loop, side)
        await loop.sock_sendall(peer, b"x")
        assert await p.received(1) == b"x"
        reset(peer)
        exc = await p.wait_lost()
        assert isinstance(exc, ConnectionResetError), repr(exc)
        assert t.is_closing()
        assert "eof" not in p.calls
        if server is not None:
            server.close()

    run_on(loop, main())


def test_write_after_close_is_ignored_then_logged(loop, loop_name, caplog):
    if loop_name == "uvloop":
        pytest.skip("uvloop raises RuntimeError on write() after close")

    async def main():
        t, p, peer = await client_side(loop)
        with peer:
            t.close()
            assert await p.wait_lost() is None
            with caplog.at_level(logging.WARNING, logger="asyncio"):
                for _ in range(4):
                    t.write(b"dropped")
                assert not caplog.records
                for _ in range(3):
                    t.write(b"dropped")
            # asyncio counts the close as the first lost write and warns
            # from the 5th write on.
            assert len(caplog.records) == 3, [r.getMessage() for r in caplog.records]
            assert await recv_until_eof(loop, peer) == b""
            assert p.lost_count == 1

    run_on(loop, main())


class Buffered(asyncio.BufferedProtocol):
    """A BufferedProtocol with a deliberately tiny buffer."""

    def __init__(self, loop, size=13):
        self.buf = bytearray(size)
        self.data = bytearray()
        self.updates: list[int] = []
        self.made = loop.create_future()
        self.eof = loop.create_future()
        self.lost = loop.create_future()
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        self.made.set_result(transport)

    def get_buffer(self, sizehint):
        return memoryview(self.buf)

    def buffer_updated(self, nbytes):
        assert 0 < nbytes <= len(self.buf)
        self.data += self.buf[:nbytes]
        self.updates.append(nbytes)

    def eof_received(self):
        self.eof.set_result(None)

    def connection_lost(self, exc):
        self.lost.set_result(exc)


def test_buffered_protocol_small_buffer(loop, side):
    data = blob(60 * KIB + 5, 4)

    async def main():
        t, p, peer, server = await make_side(loop, side, Buffered)
        with peer:
            await loop.sock_sendall(peer, data)
            peer.shutdown(socket.SHUT_WR)
            await asyncio.wait_for(asyncio.shield(p.eof), IO)
            assert bytes(p.data) == data
            assert len(p.updates) >= len(data) // 13
            assert await asyncio.wait_for(p.lost, IO) is None
        if server is not None:
            server.close()

    run_on(loop, main())


def test_buffered_protocol_paused_then_resumed(loop):
    data = blob(40 * KIB, 5)

    async def main():
        t, p, peer = await client_side(loop, lambda: Buffered(loop, 1000))
        with peer:
            t.pause_reading()
            await loop.sock_sendall(peer, data)
            peer.shutdown(socket.SHUT_WR)
            await settle(loop)
            assert not p.updates and not p.eof.done()
            t.resume_reading()
            await asyncio.wait_for(asyncio.shield(p.eof), IO)
            assert bytes(p.data) == data
            await asyncio.wait_for(p.lost, IO)

    run_on(loop, main())


def test_set_protocol_mid_stream(loop, side):
    async def main():
        second = Proto(loop)

        class First(Proto):
            def data_received(self, data):
                super().data_received(data)
                if self.data == b"switch":
                    self.transport.set_protocol(second)
                    self.transport.write(b"switched")

        t, p, peer, server = await make_side(loop, side, First)
        with peer:
            await loop.sock_sendall(peer, b"switch")
            assert await recv_until_eof(loop, peer, 8) == b"switched"
            assert t.get_protocol() is second
            await loop.sock_sendall(peer, b"for the second")
            assert await second.received(14) == b"for the second"
            peer.shutdown(socket.SHUT_WR)
            assert await second.wait_lost() is None
            # eof and connection_lost go to the protocol in place.
            assert second.calls == ["data", "eof", "lost"]
            assert p.calls == ["made", "data"] and p.data == b"switch"
        if server is not None:
            server.close()

    run_on(loop, main())


def test_set_protocol_to_a_buffered_protocol(loop):
    data = blob(20 * KIB, 8)

    async def main():
        second = Buffered(loop, 100)
        t, p, peer = await client_side(loop)
        with peer:
            await loop.sock_sendall(peer, b"first")
            assert await p.received(5) == b"first"
            # From here on the transport must use get_buffer/buffer_updated.
            t.set_protocol(second)
            await loop.sock_sendall(peer, data)
            peer.shutdown(socket.SHUT_WR)
            await asyncio.wait_for(asyncio.shield(second.eof), IO)
            assert bytes(second.data) == data
            assert await asyncio.wait_for(second.lost, IO) is None
            assert p.calls == ["made", "data"]

    run_on(loop, main())


def test_pause_reading_from_connection_made(loop, loop_name):
    if loop_name == "uvloop":
        pytest.skip("uvloop starts reading after connection_made() even if it paused")

    class PausedAtOnce(Proto):
        def connection_made(self, transport):
            super().connection_made(transport)
            transport.pause_reading()

    async def main():
        t, p, peer = await client_side(loop, lambda: PausedAtOnce(loop))
        with peer:
            assert not t.is_reading()
            await loop.sock_sendall(peer, b"early bytes")
            await settle(loop)
            assert p.calls == ["made"]
            t.resume_reading()
            assert await p.received(11) == b"early bytes"
            t.close()
            assert await p.wait_lost() is None

    run_on(loop, main())


def test_close_while_paused_drops_held_data(loop, side):
    async def main():
        t, p, peer, server = await make_side(loop, side)
        with peer:
            t.pause_reading()
            await loop.sock_sendall(peer, b"never delivered")
            peer.shutdown(socket.SHUT_WR)
            await settle(loop)
            t.close()
            t.resume_reading()          # ignored once closing
            assert await p.wait_lost() is None
            assert p.calls == ["made", "lost"]
        if server is not None:
            server.close()

    run_on(loop, main())


def test_close_with_queued_data_then_peer_reset_loses_once(loop):
    async def main():
        t, p, peer = await client_side(loop, rcvbuf=32 * KIB)
        t.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * KIB)
        t.set_write_buffer_limits(high=1 << 30)
        # More than the kernel can hold for a peer that does not read...
        t.write(blob(8 * MIB, 9))
        t.close()
        await settle(loop)
        # ...and the peer resets instead of reading it.
        reset(peer)
        exc = await p.wait_lost()
        assert isinstance(exc, (ConnectionResetError, BrokenPipeError)), repr(exc)
        assert p.calls == ["made", "lost"]
        assert t.get_write_buffer_size() == 0

    run_on(loop, main())


def test_unix_socket_transport(loop, tmp_path):
    path = str(tmp_path / "s")
    if len(path) > 100:
        pytest.skip("temporary path too long for AF_UNIX")
    data = blob(MIB, 10)

    async def main():
        acc = Accepted(loop, Echo)
        server = await loop.create_unix_server(acc, path)
        try:
            t, p = await loop.create_unix_connection(lambda: Proto(loop), path)
            assert t.get_extra_info("socket").family == socket.AF_UNIX
            assert t.get_extra_info("peername") == path
            t.write(data)
            t.write_eof()
            assert await p.received(len(data)) == data
            sp = await acc.next()
            await asyncio.wait_for(asyncio.shield(sp.eof), IO)
            # The echo side closes on EOF; the client sees EOF, then closes.
            assert await p.wait_lost() is None
            assert await sp.wait_lost() is None
        finally:
            server.close()
            await server.wait_closed()

    run_on(loop, main())


def test_data_received_raising_closes_the_transport(loop, side, loop_exceptions):
    class Boom(Proto):
        def data_received(self, data):
            super().data_received(data)
            raise ZeroDivisionError("protocol bug")

    async def main():
        t, p, peer, server = await make_side(loop, side, Boom)
        with peer:
            await loop.sock_sendall(peer, b"trigger")
            exc = await p.wait_lost()
            assert isinstance(exc, ZeroDivisionError)
            assert t.is_closing()
            got = await recv_until_eof(loop, peer)
            assert got == b""
            await loop.sock_sendall(peer, b"more")  # the peer may still write
            await settle(loop)
            assert p.calls.count("data") == 1
        if server is not None:
            server.close()
        ctxs = loop_exceptions.take()
        assert len(ctxs) == 1, ctxs
        assert isinstance(ctxs[0]["exception"], ZeroDivisionError)
        assert ctxs[0]["transport"] is t and ctxs[0]["protocol"] is p

    run_on(loop, main())


def test_connection_made_raising_is_reported_and_the_transport_carries_on(
        loop, loop_name, side, loop_exceptions):
    class Boom(Echo):
        def connection_made(self, transport):
            super().connection_made(transport)
            raise ZeroDivisionError("protocol bug")

    if loop_name == "uvloop":
        pytest.skip("uvloop does not start reading when connection_made() raises")

    async def main():
        # As asyncio: connection_made() runs as a callback, so its exception
        # goes to the exception handler; the connection is not torn down
        # (and create_connection still returns it).
        t, p, peer, server = await make_side(loop, side, Boom)
        with peer:
            await settle(loop, 0)
            ctxs = loop_exceptions.take()
            assert len(ctxs) == 1, ctxs
            assert isinstance(ctxs[0]["exception"], ZeroDivisionError)
            assert not t.is_closing() and t.is_reading()
            await loop.sock_sendall(peer, b"echo")
            assert await recv_until_eof(loop, peer, 4) == b"echo"
            peer.shutdown(socket.SHUT_WR)
            assert await p.wait_lost() is None
        if server is not None:
            server.close()

    run_on(loop, main())


# ---------------------------------------------------------------------------
# 4. TLS
# ---------------------------------------------------------------------------


class Certs:
    def __init__(self, d):
        self.key = str(d / "key.pem")
        self.cert = str(d / "cert.pem")

    def server_ctx(self):
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx

    def client_ctx(self):
        return ssl.create_default_context(cafile=self.cert)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    exe = shutil.which("openssl")
    if exe is None:
        msg = "needs the 'openssl' program"
        if loops.IN_CI:
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    c = Certs(tmp_path_factory.mktemp("certs"))
    # A throwaway self-signed certificate for localhost / 127.0.0.1.
    subprocess.run(
        [exe, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", c.key, "-out", c.cert],
        check=True, capture_output=True, timeout=60)
    return c


def test_tls_both_ends_and_extra_info(loop, certs):
    async def main():
        acc = Accepted(loop, Echo)
        sctx, cctx = certs.server_ctx(), certs.client_ctx()
        server = await loop.create_server(acc, LOCAL, 0, ssl=sctx, ssl_handshake_timeout=IO,
                                          ssl_shutdown_timeout=IO)
        addr = server.sockets[0].getsockname()
        t, p = await loop.create_connection(
            lambda: Proto(loop), *addr, ssl=cctx, server_hostname="localhost",
            ssl_handshake_timeout=IO, ssl_shutdown_timeout=IO)
        sp = await acc.next()
        payload = blob(300 * KIB, 6)
        t.write(payload)
        assert await p.received(len(payload)) == payload
        assert t.get_extra_info("sslcontext") is cctx
        obj = t.get_extra_info("ssl_object")
        assert isinstance(obj, (ssl.SSLObject, ssl.SSLSocket))
        assert obj.server_hostname == "localhost"
        cert = t.get_extra_info("peercert")
        assert ((("commonName", "localhost"),) in cert["subject"]), cert
        cipher = t.get_extra_info("cipher")
        assert isinstance(cipher, tuple) and len(cipher) == 3 and cipher[0] == obj.cipher()[0]
        assert t.get_extra_info("compression") is None
        assert t.get_extra_info("peername") == addr
        assert t.get_extra_info("socket").family == socket.AF_INET
        st = sp.transport
        assert st.get_extra_info("sslcontext") is sctx
        assert st.get_extra_info("peercert") is None        # no client certificate
        assert st.get_extra_info("sockname") == addr
        t.close()
        assert await p.wait_lost() is None
        await sp.wait_lost()
        server.close()
        await server.wait_closed()

    run_on(loop, main())


def test_tls_server_hostname(loop, certs):
    async def main():
        acc = Accepted(loop, Echo)
        server = await loop.create_server(acc, LOCAL, 0, ssl=certs.server_ctx())
        addr = server.sockets[0].getsockname()
        try:
            with pytest.raises(ssl.SSLCertVerificationError):
                await asyncio.wait_for(loop.create_connection(
                    lambda: Proto(loop), *addr, ssl=certs.client_ctx(),
                    server_hostname="not-localhost.invalid"), IO)
            with pytest.raises(ValueError):
                await loop.create_connection(lambda: Proto(loop), *addr,
                                             server_hostname="localhost")  # without ssl=
            t, p = await loop.create_connection(
                lambda: Proto(loop), "localhost", addr[1], ssl=certs.client_ctx())
            assert t.get_extra_info("ssl_object").server_hostname == "localhost"
            t.write(b"tls")
            assert await p.received(3) == b"tls"
            t.close()
            await p.wait_lost()
        finally:
            server.close()
            await server.wait_closed()

    run_on(loop, main())


def test_ssl_timeouts_need_ssl(loop):
    async def main():
        with pytest.raises(ValueError):
            await loop.create_server(Accepted(loop), LOCAL, 0, ssl_handshake_timeout=1)
        with pytest.raises(ValueError):
            await loop.create_server(Accepted(loop), LOCAL, 0, ssl_shutdown_timeout=1)
        with listener() as srv:
            with pytest.raises(ValueError):
                await loop.create_connection(lambda: Proto(loop), *srv.getsockname(),
                                             ssl_handshake_timeout=1)

    run_on(loop, main())


def test_ssl_handshake_timeout_server(loop, certs):
    async def main():
        acc = Accepted(loop)
        server = await loop.create_server(acc, LOCAL, 0, ssl=certs.server_ctx(),
                                          ssl_handshake_timeout=0.2)
        try:
            with socket.socket() as peer:
                peer.setblocking(False)
                await loop.sock_connect(peer, server.sockets[0].getsockname())
                # Say nothing: well before the 60 s default, the server gives up.
                assert await recv_until_eof(loop, peer) == b""
            assert all(p.calls == [] for p in acc.made)     # never connection_made
        finally:
            server.close()
            await server.wait_closed()

    run_on(loop, main())


def test_ssl_handshake_timeout_client(loop, certs):
    async def main():
        with listener() as srv:
            acc = asyncio.ensure_future(loop.sock_accept(srv))
            made = []
            with pytest.raises((ConnectionAbortedError, TimeoutError)):
                await asyncio.wait_for(loop.create_connection(
                    lambda: made.append(1) or Proto(loop), *srv.getsockname(),
                    ssl=certs.client_ctx(), server_hostname="localhost",
                    ssl_handshake_timeout=0.2), IO)
            peer, _ = await acc
            peer.setblocking(False)
            with peer:
                # The ClientHello arrived, then the client hung up.
                got = await recv_until_eof(loop, peer)
                assert got[:1] == b"\x16"       # TLS handshake record

    run_on(loop, main())


class SilentTLSPeer(threading.Thread):
    """Completes a TLS handshake in a thread, then neither reads nor answers
    close_notify until told to stop."""

    def __init__(self, sock, ctx, server_side, hostname=None):
        super().__init__(daemon=True)
        self.sock, self.ctx, self.server_side, self.hostname = sock, ctx, server_side, hostname
        self.handshaken = threading.Event()
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self):
        try:
            self.sock.setblocking(True)
            self.sock.settimeout(IO)
            with self.ctx.wrap_socket(self.sock, server_side=self.server_side,
                                      server_hostname=self.hostname) as tls:
                self.handshaken.set()
                self.stop.wait(IO * 2)
                tls.settimeout(0.1)
                try:
                    tls.unwrap()
                except (OSError, ValueError):
                    pass
        except BaseException as exc:  # reported by the test
            self.error = exc
            self.handshaken.set()


def test_ssl_shutdown_timeout_client(loop, certs):
    async def main():
        with listener() as srv:
            acc = asyncio.ensure_future(loop.sock_accept(srv))
            conn_task = asyncio.ensure_future(loop.create_connection(
                lambda: Proto(loop), *srv.getsockname(), ssl=certs.client_ctx(),
                server_hostname="localhost", ssl_shutdown_timeout=0.2))
            peer, _ = await asyncio.wait_for(acc, IO)
        th = SilentTLSPeer(peer, certs.server_ctx(), server_side=True)
        th.start()
        try:
            t, p = await asyncio.wait_for(conn_task, IO)
            t.close()
            # The peer never answers close_notify: well before the 30 s
            # default, the transport gives up and is lost.
            await asyncio.wait_for(asyncio.shield(p.lost), IO)
            assert p.lost_count == 1
        finally:
            th.stop.set()
            await loop.run_in_executor(None, th.join, IO)
        assert th.error is None, th.error

    run_on(loop, main())


def test_ssl_shutdown_timeout_server(loop, certs):
    async def main():
        acc = Accepted(loop)
        server = await loop.create_server(acc, LOCAL, 0, ssl=certs.server_ctx(),
                                          ssl_shutdown_timeout=0.2)
        raw = socket.socket()
        raw.connect(server.sockets[0].getsockname())
        th = SilentTLSPeer(raw, certs.client_ctx(), server_side=False, hostname="localhost")
        th.start()
        try:
            sp = await acc.next()
            sp.transport.close()
            await asyncio.wait_for(asyncio.shield(sp.lost), IO)
            assert sp.lost_count == 1
        finally:
            th.stop.set()
            await loop.run_in_executor(None, th.join, IO)
            server.close()
            await server.wait_closed()
        assert th.error is None, th.error

    run_on(loop, main())


# ---------------------------------------------------------------------------
# 5. loop.close() with transports and servers open
# ---------------------------------------------------------------------------


def _open_fds():
    return set(os.listdir("/proc/self/fd"))


def test_loop_close_with_open_transports_and_servers(loop_name, loop_factory):
    before = _open_fds()
    lp = loop_factory()
    contexts = []
    lp.set_exception_handler(lambda _lp, ctx: contexts.append(ctx))

    async def main():
        acc = Accepted(lp, Echo)
        server = await lp.create_server(acc, LOCAL, 0)
        addr = server.sockets[0].getsockname()
        t, p = await lp.create_connection(lambda: Proto(lp), *addr)
        await acc.next()
        t.write(blob(MIB, 7))       # still queued at close for some loops
        raw = socket.socket()
        raw.setblocking(False)
        await lp.sock_connect(raw, addr)
        await acc.next()
        return server, t, raw

    server, t, raw = lp.run_until_complete(asyncio.wait_for(main(), IO))
    fds = [t.get_extra_info("socket").fileno(), server.sockets[0].fileno()]
    lp.close()
    assert lp.is_closed()
    with raw:
        if loop_name == "ringline":
            # Documented: close() aborts every stream on the ring.
            raw.settimeout(IO)
            try:
                while raw.recv(MIB):
                    pass
            except ConnectionResetError:
                pass
            with pytest.raises(OSError):
                os.fstat(fds[0])
            assert t.is_closing()
    del server, t
    with warnings.catch_warnings():
        # asyncio and uvloop leave the transports to the garbage collector.
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    assert not contexts, contexts
    # Every descriptor the loop and its connections opened is closed.
    assert _open_fds() <= before


def test_bytes_written_just_before_loop_close_still_reach_the_peer():
    # The send SQE is prepared only when the loop next enters the kernel;
    # close() must still let it out (a plain socket write would have).
    import ringline

    lp = ringline.new_event_loop()
    lsock = socket.socket()
    try:
        lsock.bind((LOCAL, 0))
        lsock.listen()
        tr, _ = lp.run_until_complete(lp.create_connection(asyncio.Protocol, LOCAL, lsock.getsockname()[1]))
        peer, _ = lsock.accept()
        tr.write(b"last words")
        lp.close()
        peer.settimeout(5.0)
        assert peer.recv(100) == b"last words"
        peer.close()
    finally:
        lsock.close()
        if not lp.is_closed():
            lp.close()
