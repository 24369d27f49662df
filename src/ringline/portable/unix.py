"""``serve_unix`` and ``connect_unix`` of the portable backend (any asyncio
loop): the same contract as ``ringline.native.unix``, on asyncio's own Unix
socket support (``create_server(sock=...)``, ``sock_connect``)."""

from __future__ import annotations

import asyncio
import socket

from ringline._listen import UnixServerMixin, listen_unix
from ringline.config import Config
from ringline.errors import ConnectionLimitReached, error_from_errno
from ringline.portable.connection import Connection
from ringline.portable.serve import OnAccept, Server, _forget, _state, config_of

__all__ = ["UnixServer", "connect_unix", "serve_unix"]


class UnixServer(UnixServerMixin, Server):
    """A portable :class:`Server` listening on a Unix-domain stream socket."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                 on_accept: OnAccept, config: Config, path: str,
                 ident: tuple[int, int] | None) -> None:
        super().__init__(loop, [sock], on_accept, config)
        self._set_unix(path, ident)


async def serve_unix(on_accept: OnAccept, path: str, *,
                     config: Config | None = None) -> UnixServer:
    """Listen on the Unix stream socket ``path`` on the running loop."""
    loop = asyncio.get_running_loop()
    cfg = config if config is not None else config_of(loop)
    sock, ident = listen_unix(path, cfg)
    server = UnixServer(loop, sock, on_accept, cfg, path, ident)
    try:
        await server._start()
    except BaseException:
        server.close()
        raise
    return server


async def connect_unix(path: str, *, timeout: float | None = None) -> Connection:
    """Open a connection to the Unix stream socket ``path`` on the running loop."""
    loop = asyncio.get_running_loop()
    st = _state(loop)
    cfg = st.config
    if timeout is None:
        timeout = cfg.connect_timeout
    if len(st.streams) >= cfg.max_connections:
        raise ConnectionLimitReached(cfg.max_connections)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        try:
            async with asyncio.timeout(timeout):
                await loop.sock_connect(sock, path)
        except TimeoutError:
            raise TimeoutError("connect timed out") from None
        except OSError as exc:
            # The errors as the ring path words them ("connect: Connection refused").
            raise (error_from_errno(exc.errno, "connect") if exc.errno else exc) from None
        conn = Connection(loop, cfg, True, on_lost=_forget)
        await loop.create_connection(lambda: conn, sock=sock)
    except BaseException:
        sock.close()
        raise
    st.streams.add(conn)
    st.connected += 1
    if conn._peer is None:
        conn._set_addresses(path, None)
    return conn
