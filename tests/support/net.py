"""Sockets and data for the native-face tests: loopback peers, byte
patterns, an echo handler, a server run around a blocking client, and a
pair of ringline Connections on one loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

import ringline
from ringline import Config

#: Loopback address every test serves on.
HOST = "127.0.0.1"
#: Bound on one blocking socket operation (a failure bound, not a sleep).
IO_TIMEOUT = 10.0

#: The reference crate's test_config(): small ring, 4 KiB provided buffers,
#: so any message above 4 KiB spans several buffers.
SMALL = Config(sq_entries=64, recv_buffer_count=64, recv_buffer_size=4096,
               max_connections=64, send_pool_slots=64, shutdown_timeout=2.0)


def pattern(n: int, seed: int = 0) -> bytes:
    """``n`` bytes that differ at every offset of a 251-byte period."""
    period = bytes((i * 7 + seed) % 251 for i in range(251))
    return (period * (n // 251 + 1))[:n]


def client_socket(port: int, host: str = HOST) -> socket.socket:
    """A blocking client connected to ``host:port``, with IO_TIMEOUT set."""
    s = socket.create_connection((host, port), timeout=IO_TIMEOUT)
    s.settimeout(IO_TIMEOUT)
    return s


def recv_exactly(s: socket.socket, n: int) -> bytes:
    """Exactly ``n`` bytes from a blocking socket (EOFError if it ends first)."""
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"EOF after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def recv_until_eof(s: socket.socket, limit: int | None = None) -> bytes:
    """Everything until the peer's FIN; more than ``limit`` bytes is an error."""
    buf = bytearray()
    while chunk := s.recv(1 << 16):
        buf += chunk
        if limit is not None and len(buf) > limit:
            raise AssertionError(f"peer never closed (over {limit} bytes)")
    return bytes(buf)


def slow_reader(pause: float) -> Callable[[int], int]:
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


def dead_port() -> int:
    """A loopback port nobody listens on (connecting is refused)."""
    s = socket.socket()
    s.bind((HOST, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def open_fd_count() -> int:
    """How many descriptors this process has open."""
    return len(os.listdir("/proc/self/fd"))


def need_fds(n: int) -> None:
    """Raise the soft RLIMIT_NOFILE to ``n`` if it is lower, or skip."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < n:
        if hard != resource.RLIM_INFINITY and hard < n:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {n}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))


def echo_once(port: int, message: bytes) -> bytes:
    """Send ``message`` on a new blocking connection; return as many bytes back."""
    with client_socket(port) as s:
        s.sendall(message)
        return recv_exactly(s, len(message))


async def echo(conn: ringline.Connection) -> None:
    """Handler: send back every byte received, waiting out backpressure."""
    while data := await conn.recv(1 << 20):
        conn.send_nowait(data)
        await conn.drain()


async def echo_queued(conn: ringline.Connection) -> None:
    """Handler: the reference crate's echo -- every reply queued with
    ``send_nowait``, never a wait for drain."""
    while data := await conn.recv():
        conn.send_nowait(data)


async def until(pred: Callable[[], object], timeout: float = 5.0,
                what: str = "condition") -> None:
    """Poll ``pred`` every millisecond on the running loop until it is true."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


@contextlib.asynccontextmanager
async def conn_pair() -> AsyncIterator[tuple[ringline.Connection, ringline.Connection]]:
    """(server_side, client_side): two ringline Connections on this loop.

    The server side's handler holds it open until the block ends."""
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[ringline.Connection] = loop.create_future()
    release = asyncio.Event()

    async def hold(conn: ringline.Connection) -> None:
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


def serve_and_run(on_accept: Any, client: Callable[..., Any], *, config: Config | None = None,
                  setup: Callable[[], Awaitable[Any]] | None = None,
                  timeout: float = 15.0) -> Any:
    """Serve ``on_accept`` on a fresh ringline loop, run the blocking
    ``client(port)`` in a thread and return its result.  ``setup`` (an async
    callable) runs first on the loop and its result is passed as
    ``client(port, extra)``."""

    async def main() -> Any:
        extra = await setup() if setup is not None else None
        server = await ringline.serve(on_accept, HOST, 0)
        try:
            async with asyncio.timeout(timeout):
                if setup is None:
                    return await asyncio.to_thread(client, server.port)
                return await asyncio.to_thread(client, server.port, extra)
        finally:
            await server.shutdown(1.0)

    return ringline.run(main(), config=config)
