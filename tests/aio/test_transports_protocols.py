"""Transports with other protocols on each loop: BufferedProtocol,
set_protocol mid-stream, pausing from connection_made, close while paused,
Unix sockets, and protocol callbacks that raise.

Everything here runs on real loopback sockets, once per loop (asyncio's
SelectorEventLoop as the reference, uvloop, ringline), and fails on any
unexpected exception-handler call.  Where ringline deliberately differs
(docs/asyncio-differences.md), the test checks ringline's documented
behaviour.  No assertion depends on timing: a sleep only ever gives
something the chance to happen that must not.
"""


import asyncio
import socket

import pytest

from tests.support import run_on
from tests.support.aio import (
    IO,
    KIB,
    MIB,
    Accepted,
    Echo,
    Proto,
    blob,
    client_side,
    make_side,
    recv_until_eof,
    settle,
)
from tests.support.net import rst_close

pytestmark = pytest.mark.timeout(30)


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
        rst_close(peer)
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


@pytest.mark.parametrize("form", ["method", "function", "callable"])
def test_data_received_of_any_callable_form(loop, loop_name, side, loop_exceptions, form):
    """data_received as a bound method, a plain function stored on the
    instance, or a callable object (ringline calls the bound method's
    function directly and the others generically): each gets the bytes,
    and each one's exception is reported and closes the transport."""
    class Calls:
        def __init__(self, proto):
            self.proto = proto

        def __call__(self, data):
            Proto.data_received(self.proto, data)
            if data.endswith(b"!"):
                raise ZeroDivisionError(form)

    class Forms(Proto):
        def __init__(self, loop):
            super().__init__(loop)
            if form == "function":
                calls = Calls(self)
                self.data_received = lambda data: calls(data)
            elif form == "callable":
                self.data_received = Calls(self)

        def data_received(self, data):
            Calls(self)(data)

    async def main():
        t, p, peer, server = await make_side(loop, side, Forms)
        with peer:
            await loop.sock_sendall(peer, b"hello")
            await asyncio.wait_for(p.received(5), IO)
            assert bytes(p.data) == b"hello" and not t.is_closing()
            await loop.sock_sendall(peer, b"bye!")
            exc = await p.wait_lost()
            assert isinstance(exc, ZeroDivisionError) and str(exc) == form
            assert bytes(p.data) == b"hellobye!"
        if server is not None:
            server.close()
        ctxs = loop_exceptions.take()
        assert len(ctxs) == 1, ctxs
        assert ctxs[0]["exception"] is exc
        if loop_name != "uvloop":     # uvloop: "Fatal error on transport ..."
            assert ctxs[0]["message"] == "Fatal error: protocol.data_received() call failed."
        assert ctxs[0]["transport"] is t and ctxs[0]["protocol"] is p

    run_on(loop, main())


def test_keyboard_interrupt_from_data_received_propagates(loop, loop_name):
    """KeyboardInterrupt out of data_received leaves run_until_complete
    (as on asyncio), not the exception handler; the loop still works."""
    class Interrupt(Proto):
        def data_received(self, data):
            super().data_received(data)
            raise KeyboardInterrupt

    if loop_name == "uvloop":
        pytest.skip("uvloop hands it to the exception handler as a fatal transport error")

    async def start():
        return await make_side(loop, "client", Interrupt)

    async def poke():
        await loop.sock_sendall(peer, b"x")
        await asyncio.sleep(IO)

    t, p, peer, _ = run_on(loop, start())
    with peer:
        with pytest.raises(KeyboardInterrupt):
            run_on(loop, poke())
        assert bytes(p.data) == b"x"
        t.abort()
        run_on(loop, p.wait_lost())


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
