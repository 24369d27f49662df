"""create_server / create_connection and Server objects on each loop:
IPv4 and IPv6 (``sock=``, ``reuse_port``, dual-stack ``host=None``, happy
eyeballs, ``local_addr``), start_serving / serve_forever / close /
wait_closed, and loop.close() with transports and servers still open.

Everything here runs on real loopback sockets, once per loop (asyncio's
SelectorEventLoop as the reference, uvloop, ringline), and fails on any
unexpected exception-handler call.  Where ringline deliberately differs
(docs/asyncio-differences.md), the test checks ringline's documented
behaviour.  No assertion depends on timing: a sleep only ever gives
something the chance to happen that must not.
"""


import asyncio
import gc
import os
import socket
import sys
import warnings

import pytest

from tests.support import run_on
from tests.support.aio import (
    HAS_IPV6,
    IO,
    LOCAL,
    MIB,
    Accepted,
    Echo,
    Proto,
    blob,
    echo_once,
    listener,
    needs_ipv6,
    recv_until_eof,
    refused,
    refused_now,
    settle,
)

pytestmark = pytest.mark.timeout(30)


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
