"""``serve`` and ``connect`` of the portable backend (any asyncio loop).

The same contract as the io_uring path in ``ringline.native.serve``: a
coroutine per accepted connection, closed gracefully when it returns
(aborted when it fails or is cancelled, with the exception reported to the
loop's exception handler), ``Config.max_connections`` enforced by refusing
(closing) surplus accepts, and a :class:`Server` shaped like
:class:`asyncio.Server` with ``port``, ``shutdown(timeout)`` and
``refused``.  Listening sockets are made here (the same binding rules as the
ring path: SO_REUSEADDR, SO_REUSEPORT per Config, IPV6_V6ONLY, one port for
every address when port 0 is asked for) and handed to
``loop.create_server(sock=...)``.
"""

from __future__ import annotations

import asyncio
import socket
import ssl as _ssl
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from ringline._listen import given_socket, listen_sockets
from ringline._shutdown import graceful_shutdown
from ringline._tls import record_sni, typed_handshake_error
from ringline.config import Config
from ringline.errors import ConnectionLimitReached, error_from_errno
from ringline.portable.connection import Connection

__all__ = ["Server", "config_of", "connect", "serve", "set_config", "statistics"]

OnAccept = Callable[[Connection], Awaitable[None]]


class _LoopState:
    """What the portable backend keeps per event loop."""

    __slots__ = ("config", "streams", "accepted", "refused", "connected", "__weakref__")

    def __init__(self, config: Config) -> None:
        self.config = config
        self.streams: set[Connection] = set()
        self.accepted = 0
        self.refused = 0
        self.connected = 0


_STATES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = \
    weakref.WeakKeyDictionary()


def _state(loop: asyncio.AbstractEventLoop) -> _LoopState:
    st = _STATES.get(loop)
    if st is None:
        st = _STATES[loop] = _LoopState(Config())
    return st


def set_config(loop: asyncio.AbstractEventLoop, config: Config) -> None:
    """Make ``config`` the default of the native API on ``loop``."""
    _state(loop).config = config


def config_of(loop: asyncio.AbstractEventLoop) -> Config:
    """The Config the native API uses on ``loop`` (``Config()`` unless set)."""
    return _state(loop).config


def statistics(loop: asyncio.AbstractEventLoop | None = None) -> dict[str, int]:
    """Counters of the portable native API on ``loop`` (default: running)."""
    st = _state(loop if loop is not None else asyncio.get_running_loop())
    return {"streams": len(st.streams), "accepted": st.accepted,
            "refused": st.refused, "connected": st.connected}


# ---------------------------------------------------------------------------
# listening sockets
# ---------------------------------------------------------------------------


# ---------------------------------------------------------------------------
# Server
# ---------------------------------------------------------------------------


class Server:
    """A listening server of the portable backend, shaped like
    :class:`asyncio.Server` (and like the io_uring path's Server)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, socks: list[socket.socket],
                 on_accept: OnAccept, config: Config,
                 ssl: _ssl.SSLContext | None = None) -> None:
        self._loop = loop
        self._ssl = ssl
        self._socks = socks
        self._ports = [s.getsockname()[1] for s in socks]
        self._on_accept = on_accept
        self._config = config
        self._servers: list[asyncio.AbstractServer] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._conns: set[Connection] = set()
        self._closed = loop.create_future()
        self._serving = False
        self._state = _state(loop)
        self.accepted = 0    # connections accepted (refused ones included)
        self.refused = 0     # connections closed at once because of max_connections
        self._draining = False      # shutdown() under way
        self._last_accept = -1e9    # loop time of the last accept (graceful_shutdown)

    async def _start(self) -> None:
        for s in self._socks:
            tls: dict[str, Any] = {}
            if self._ssl is not None:
                # The handshake runs before connection_made (so before the
                # handler); a failed one is logged at DEBUG by the loop.
                tls = {"ssl": self._ssl,
                       "ssl_handshake_timeout": self._config.tls_handshake_timeout,
                       "ssl_shutdown_timeout": self._config.tls_shutdown_timeout}
            srv = await self._loop.create_server(
                self._new_connection, sock=s, backlog=self._config.backlog, **tls)
            self._servers.append(srv)
        self._serving = True

    def _new_connection(self) -> Connection:
        # Per-connection limits are the loop's (as on the ring path); the
        # server's config decides backlog, SO_REUSEPORT, TCP_NODELAY and
        # max_connections.
        return Connection(self._loop, self._state.config, False, self._made, self._lost,
                          nodelay=self._config.tcp_nodelay)

    def _made(self, conn: Connection) -> None:
        self.accepted += 1
        self._last_accept = self._loop.time()
        if len(self._conns) >= self._config.max_connections or not self._serving:
            # Over Config.max_connections: refuse this one, keep serving.
            self.refused += 1
            self._state.refused += 1
            conn._on_lost = None
            conn.abort()
            return
        self._conns.add(conn)
        self._state.streams.add(conn)
        self._state.accepted += 1
        try:
            coro = self._on_accept(conn)
            task = asyncio.ensure_future(coro, loop=self._loop)
        except Exception as exc:
            self._handler_failed(conn, exc)
            self._handler_finished(conn)
            return
        self._tasks.add(task)
        task.add_done_callback(lambda t, conn=conn: self._handler_done(conn, t))  # type: ignore[misc]

    def _lost(self, conn: Connection) -> None:
        self._state.streams.discard(conn)

    def _handler_done(self, conn: Connection, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            conn.abort()
        else:
            exc = task.exception()
            if isinstance(exc, Exception):
                self._handler_failed(conn, exc)
        self._handler_finished(conn)

    def _handler_failed(self, conn: Connection, exc: Exception) -> None:
        conn.abort()
        if (self._draining and isinstance(exc, asyncio.IncompleteReadError)
                and not exc.partial):
            return      # an idle connection ended by shutdown(): not a failure
        self._loop.call_exception_handler({
            "message": f"ringline handler {self._on_accept!r} failed",
            "exception": exc,
            "connection": conn,
        })

    def _handler_finished(self, conn: Connection) -> None:
        conn.close()
        if conn.closed:
            self._conns.discard(conn)
        else:
            self._loop.create_task(self._forget_when_closed(conn))

    async def _forget_when_closed(self, conn: Connection) -> None:
        try:
            await conn.wait_closed()
        finally:
            self._conns.discard(conn)

    @property
    def active(self) -> int:
        """Connections open now."""
        return len(self._conns)

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self._socks)

    @property
    def port(self) -> int:
        """The bound port (the real one when port 0 was asked for)."""
        return self._ports[0]

    def is_serving(self) -> bool:
        return self._serving

    def close(self) -> None:
        """Stop accepting and close the listening sockets; connections stay."""
        if not self._serving and not self._socks:
            return
        self._serving = False
        for srv in self._servers:
            srv.close()         # closes the listening socket it was given
        self._servers.clear()
        for s in self._socks:
            s.close()
        self._socks = []
        if not self._closed.done():
            self._closed.set_result(None)

    async def shutdown(self, timeout: float | None = None) -> None:
        """Graceful stop: stop accepting, then let handlers finish what they
        are doing within ``timeout`` seconds (Config.shutdown_timeout); see
        :func:`ringline._shutdown.graceful_shutdown`."""
        self.close()
        self._draining = True
        await graceful_shutdown(self._conns, self._tasks,
                                self._config.shutdown_timeout if timeout is None else timeout,
                                last_accept=lambda: self._last_accept)

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    async def serve_forever(self) -> None:
        await self.wait_closed()

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()


async def serve(on_accept: OnAccept, host: str | None = None, port: int = 0, *,
                config: Config | None = None, sock: socket.socket | None = None,
                ssl: _ssl.SSLContext | None = None) -> Server:
    """Listen on ``host:port`` (or serve ``sock``, a listening socket the
    server then owns) and run ``await on_accept(conn)`` per connection, on
    the running (any asyncio) loop.  ``ssl``: TLS by the loop's own SSL
    transport; the handler runs after the handshake."""
    loop = asyncio.get_running_loop()
    cfg = config if config is not None else config_of(loop)
    socks = listen_sockets(host, port, cfg) if sock is None else [given_socket(sock, host, port)]
    if ssl is not None:
        record_sni(ssl)
    server = Server(loop, socks, on_accept, cfg, ssl)
    try:
        await server._start()
    except BaseException:
        server.close()
        raise
    return server


async def connect(host: str, port: int, *, timeout: float | None = None,
                  ssl: _ssl.SSLContext | None = None,
                  server_hostname: str | None = None) -> Connection:
    """Open an outbound TCP connection on the running (any asyncio) loop.

    Refusal, unreachability and timeout raise ConnectionRefusedError,
    OSError(ENETUNREACH/EHOSTUNREACH) and TimeoutError, the last address's
    error when there are several.  Cancelling closes the socket.  With
    ``ssl`` the loop's SSL transport runs the handshake; a failed one raises
    a ``TLSHandshakeError`` (an ``ssl.SSLError``).
    """
    loop = asyncio.get_running_loop()
    st = _state(loop)
    cfg = st.config
    if timeout is None:
        timeout = cfg.connect_timeout
    if len(st.streams) >= cfg.max_connections:
        raise ConnectionLimitReached(cfg.max_connections)
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError(f"getaddrinfo({host!r}) returned nothing")
    last: BaseException | None = None
    for family, type_, proto, _, addr in infos:
        sock = socket.socket(family, type_, proto)
        try:
            sock.setblocking(False)
            if cfg.tcp_nodelay and family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if timeout is None:
                await loop.sock_connect(sock, addr)
            else:
                try:
                    async with asyncio.timeout(timeout):
                        await loop.sock_connect(sock, addr)
                except TimeoutError:
                    raise TimeoutError("connect timed out") from None
        except BaseException as exc:
            sock.close()
            if not isinstance(exc, OSError):
                raise
            # The errors as the ring path words them ("connect: Connection refused").
            last = error_from_errno(exc.errno, "connect") if exc.errno else exc
            continue
        conn = Connection(loop, cfg, True, on_lost=_forget)
        tls: dict[str, Any] = {}
        if ssl is not None:
            tls = {"ssl": ssl, "server_hostname": host if server_hostname is None
                   else server_hostname,
                   "ssl_handshake_timeout": cfg.tls_handshake_timeout,
                   "ssl_shutdown_timeout": cfg.tls_shutdown_timeout}
        try:
            await loop.create_connection(lambda c=conn: c, sock=sock, **tls)  # type: ignore[misc]
        except BaseException as exc:
            sock.close()
            if ssl is not None and isinstance(exc, (OSError, ValueError)):
                raise typed_handshake_error(exc) from exc
            raise
        st.streams.add(conn)
        st.connected += 1
        if conn._peer is None:
            conn._set_addresses(addr, None)
        return conn
    assert last is not None
    raise last


def _forget(conn: Connection) -> None:
    st = _STATES.get(conn._loop)
    if st is not None:
        st.streams.discard(conn)
