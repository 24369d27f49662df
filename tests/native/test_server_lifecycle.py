"""serve(sock=...) and Server.shutdown's graceful semantics, on every backend.

A graceful stop ends receiving (shutdown(SHUT_RD)): a handler waiting for
data sees end of stream and returns; one in the middle of a request finishes
it and answers before its connection closes.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

import ringline
from ringline import Config
from tests.support import backends as nb

backend_name = nb.backend_name


def _listening() -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    return s


def test_serve_a_listening_socket(backend_name: str) -> None:
    async def echo(conn: ringline.Connection) -> None:
        while data := await conn.recv():
            conn.send_nowait(data)

    async def main() -> None:
        sock = _listening()
        port = sock.getsockname()[1]
        server = await ringline.serve(echo, sock=sock)
        assert server.port == port
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"hello")
        assert await r.readexactly(5) == b"hello"
        w.close()
        await server.shutdown(1.0)
        assert sock.fileno() == -1          # the server owned it and closed it
        assert server.accepted == 1 and server.active == 0

    nb.run_native(backend_name, main, Config())


def test_serve_sock_is_checked(backend_name: str) -> None:
    async def handler(conn: ringline.Connection) -> None:
        pass

    async def main() -> None:
        with pytest.raises(TypeError, match="socket.socket"):
            await ringline.serve(handler, sock=3)  # type: ignore[arg-type]
        s = _listening()
        try:
            with pytest.raises(ValueError, match="cannot be given together"):
                await ringline.serve(handler, "127.0.0.1", 0, sock=s)
        finally:
            s.close()
        with socket.socket() as unbound, pytest.raises(ValueError, match="listening"):
            await ringline.serve(handler, sock=unbound)
        with socket.socket(type=socket.SOCK_DGRAM) as udp, \
                pytest.raises(ValueError, match="SOCK_STREAM"):
            await ringline.serve(handler, sock=udp)

    nb.run_native(backend_name, main, Config())


def test_shutdown_lets_a_request_in_progress_answer(backend_name: str) -> None:
    """The handler has read its request and is working on it when the stop
    comes: its answer still reaches the peer; an idle handler (waiting in
    recv) sees end of stream at once."""
    started = []

    async def slow(conn: ringline.Connection) -> None:
        request = await conn.recv_exactly(4)
        started.append(request)
        await asyncio.sleep(0.3)
        conn.send_nowait(request[::-1])
        assert await conn.recv() == b""     # then end of stream, not an error

    async def main() -> None:
        server = await ringline.serve(slow, "127.0.0.1", 0)
        busy = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(5)]
        idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(5)]
        for i, (_, w) in enumerate(busy):
            w.write(b"%04d" % i)
        while len(started) < 5:
            await asyncio.sleep(0.01)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await server.shutdown(5.0)
        took = loop.time() - t0
        for i, (r, w) in enumerate(busy):
            assert await r.read() == (b"%04d" % i)[::-1]
            w.close()
        for r, w in idle:
            assert await r.read() == b""
            w.close()
        assert took < 2.0, f"shutdown waited {took:.2f}s for idle connections"

    nb.run_native(backend_name, main, Config())


def test_shutdown_aborts_a_handler_that_overstays(backend_name: str) -> None:
    async def stuck(conn: ringline.Connection) -> None:
        await conn.recv_exactly(1)
        await asyncio.sleep(60)

    async def main() -> None:
        server = await ringline.serve(stuck, "127.0.0.1", 0)
        r, w = await asyncio.open_connection("127.0.0.1", server.port)
        w.write(b"x")
        await asyncio.sleep(0.1)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await server.shutdown(0.3)
        assert loop.time() - t0 < 2.0
        with pytest.raises(ConnectionError):
            data = await r.read()
            if data == b"":
                raise ConnectionResetError("closed")    # FIN is fine too: it is gone
        w.close()

    nb.run_native(backend_name, main, Config())
