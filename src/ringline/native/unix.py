"""Unix-domain stream sockets on the native API: ``serve_unix`` and
``connect_unix``, the counterparts of ``serve`` and ``connect`` for a
filesystem path.  The connections are the same :class:`Connection` (fixed
descriptors when the loop uses them), and ``peer_addr``/``local_addr`` are
what ``socket.getpeername()``/``getsockname()`` give for AF_UNIX: the path
as a ``str`` (``""`` for an unnamed end, ``bytes`` for an abstract name).

    server = await ringline.serve_unix(echo, "/run/app.sock")
    conn = await ringline.connect_unix("/run/app.sock")

Binding removes a file already at the path only when it is a socket that
nobody listens on (a leftover of an earlier run); closing the server removes
the socket file it made, if it is still that file.  On a loop that is not a
ringline loop both hand over to the portable backend, like serve/connect.
"""

from __future__ import annotations

import os
import socket
from typing import Any, cast

from ringline import _argcheck
from ringline._listen import UnixServerMixin, listen_unix
from ringline.config import Config
from ringline.native import serve as _serve
from ringline.native.serve import Connection, OnAccept, Server

try:
    from ringline._net import sockops as _sockops
    from ringline._net import stream as _stream
    from ringline.native import connection as _connection
except ImportError:  # a pure-Python install: no ringline loop, the portable backend serves
    pass

__all__ = ["UnixServer", "connect_unix", "serve_unix"]


def path_arg(value: Any, where: str) -> str:
    """A Unix socket path: str, bytes or os.PathLike (bytes stay bytes only
    for an abstract name), else TypeError."""
    if not isinstance(value, (str, bytes, os.PathLike)):
        raise TypeError(f"{where}: path must be a str, bytes or os.PathLike, "
                        f"not {type(value).__name__}")
    path = os.fspath(value)
    if isinstance(path, bytes) and not path.startswith(b"\0"):
        path = os.fsdecode(path)
    if not path:
        raise ValueError(f"{where}: path must not be empty")
    return cast(str, path)


class UnixServer(UnixServerMixin, Server):
    """A :class:`Server` listening on a Unix-domain stream socket."""

    def __init__(self, loop: Any, sock: socket.socket, on_accept: OnAccept, config: Config,
                 path: str, ident: tuple[int, int] | None) -> None:
        super().__init__(loop, [sock], on_accept, config)
        self._set_unix(path, ident)


async def serve_unix(on_accept: OnAccept, path: str | os.PathLike[str], *,
                     config: Config | None = None) -> UnixServer:
    """Listen on the Unix stream socket ``path`` and run ``await
    on_accept(conn)`` per connection, as :func:`ringline.serve` does."""
    _argcheck.callable_arg(on_accept, "serve_unix()", "on_accept")
    spath = path_arg(path, "serve_unix()")
    _argcheck.config_arg(config, "serve_unix()")
    loop = _serve._ringline_loop()
    if loop is None:
        from ringline.portable import unix as _portable
        return cast(UnixServer, await _portable.serve_unix(
            cast(Any, on_accept), spath, config=config))
    cfg = config if config is not None else loop.config
    _stream.net_state_for(loop)
    sock, ident = listen_unix(spath, cfg)
    server = UnixServer(loop, sock, on_accept, cfg, spath, ident)
    try:
        server._start()
    except BaseException:
        server.close()
        raise
    return server


async def connect_unix(path: str | os.PathLike[str], *,
                       timeout: float | None = None) -> Connection:
    """Open a connection to the Unix stream socket ``path`` on the ring.

    A missing path raises FileNotFoundError, a socket nobody listens on
    ConnectionRefusedError, and ``timeout`` (default
    ``Config.connect_timeout``) TimeoutError.  Cancelling the caller
    cancels the connect in the kernel and closes the socket.
    """
    spath = path_arg(path, "connect_unix()")
    _argcheck.timeout_arg(timeout, "connect_unix()")
    loop = _serve._ringline_loop()
    if loop is None:
        from ringline.portable import unix as _portable
        return cast(Connection, await _portable.connect_unix(spath, timeout=timeout))
    cfg = loop.config
    if timeout is None:
        timeout = cfg.connect_timeout
    ctx = _stream.net_state_for(loop)
    if ctx.statistics()["streams"] >= cfg.max_connections:
        from ringline.errors import ConnectionLimitReached
        raise ConnectionLimitReached(cfg.max_connections)
    if ctx.use_fixed_files():
        return await _serve._connect_fixed(loop, socket.AF_UNIX, spath, timeout, False)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK
                      | socket.SOCK_CLOEXEC)
    fd = s.detach()
    try:
        await _sockops.connect_fd(loop, fd, socket.AF_UNIX, spath, timeout)
    except BaseException:
        socket.close(fd)
        raise
    return _connection.new_connection(loop, fd, socket.AF_UNIX, True, peer=spath)
