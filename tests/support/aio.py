"""Helpers for the asyncio-face transport tests: a protocol that records
every call, listeners and the two ends of a connection, echo and refusal
helpers.  The ``side`` fixture ("client" / "server") is in tests/aio/conftest.py.
"""

from __future__ import annotations

import asyncio
import random
import socket

import pytest

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
