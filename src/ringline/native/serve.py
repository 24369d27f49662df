"""The native TCP API: serve and connect.  (launch, Handler and
ShutdownHandle are in launcher.py.)

A coroutine per accepted connection, on the ring:

    async def echo(conn: ringline.Connection) -> None:
        while data := await conn.recv():
            conn.send_nowait(data)

    server = await ringline.serve(echo, "127.0.0.1", 0)

When the handler returns, its connection is closed gracefully (queued sends
drain first, the peer sees FIN).  An exception in a handler closes only that
connection and reaches the loop's exception handler.

Fixed descriptors.  Connections live in the ring's fixed file table, not in
the process fd table (``Connection.fileno`` is -1): multishot accept with
IORING_FILE_INDEX_ALLOC, and for ``connect`` IORING_OP_SOCKET into an
allocated slot, then CONNECT on the slot linked to a LINK_TIMEOUT.  The table
(``max_connections`` slots the kernel allocates from + ``file_slots`` for
files) is registered the first time the native API runs on a loop.  A full
table refuses cleanly: ``connect`` raises ConnectionLimitReached; an accept
that finds no slot is counted (``NetState.table_full``), the kernel closes
that socket, and accepting resumes when a slot is freed (no polling).

Addresses.  A fixed descriptor has no getpeername(2).  So that
``peer_addr``/``local_addr`` stay synchronous properties, they are fetched
before the handler starts (accepted) or before ``connect`` returns: one
IORING_OP_FIXED_FD_INSTALL gives a temporary process fd, getpeername and
getsockname run on it (for outbound sockets also setsockopt TCP_NODELAY;
accepted ones inherit it from the listener) and it is closed at once.
Measured with ``bench/accept_bench.py`` (a queued burst of 1000 loopback
connections, handler reading ``peer_addr``): about 16 us of CPU per accept
with fixed descriptors, the same as with plain fds, of which the install
and the two calls are about 5 us; the install only adds one trip through the
ring before the handler's first line.  Kernels without FIXED_FD_INSTALL
(before 6.8), or when the table cannot be registered, use plain fds for the
whole native face (``NetState.fixed_reason`` says why): plain multishot
accept, a socket(2) per connect, addresses from the fd.

Address installs are bounded: at most ADDRESS_INSTALLS (64) per server in
flight, so an accept burst holds at most that many process fds for them
(unbounded: up to 1,025 at once in a queued burst of 10,000 connections,
1,579 in one of 30,000).  Later connections wait their turn in accept
order; the wait list holds only accepted connections (at most
max_connections).  An
install refused for want of a process fd (EMFILE/ENFILE) is retried after
ADDRESS_RETRY_DELAY, or at once when another install has closed its fd;
once the shortage has lasted ADDRESS_RETRY_FOR the handler starts with
``peer_addr``/``local_addr`` None, counted (``addresses_unknown``) and
logged (at most one warning per ADDRESS_WARN_EVERY on ``ringline.serve``).
No fd-free way to the addresses covers this kernel range:
SOCKET_URING_OP_GETSOCKNAME (a socket uring_cmd, both addresses) is Linux
6.19+ (6.18 answers EOPNOTSUPP), and the uring_cmd getsockopt(SO_PEERNAME)
of 6.7+ gives the peer only.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import errno
import logging
import socket
import ssl as _ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from ringline import _argcheck
from ringline._listen import given_socket, listen_sockets
from ringline._shutdown import graceful_shutdown
from ringline._tls import logger as _tls_logger
from ringline._tls import record_sni
from ringline.config import Config

logger = logging.getLogger("ringline.serve")

try:
    from ringline._net import sockops as _sockops
    from ringline._net import stream as _stream
    from ringline.native import connection as _connection
    from ringline.native import task as _task
    from ringline.native import tls as _native_tls
    from ringline.native.connection import Connection
except ImportError as _exc:  # a pure-Python install: serve/connect run on the portable backend
    from ringline import _noext
    from ringline.portable.connection import Connection  # type: ignore[assignment]
    _noext.note_missing(_exc)

if TYPE_CHECKING:
    from ringline._core.loop import TimerHandle
    from ringline.aio.eventloop import EventLoop

__all__ = [
    "Connection",
    "Server",
    "connect",
    "serve",
]

OnAccept = Callable[[Connection], Awaitable[None]]

#: Address installs (a temporary process fd each) in flight per server.
#: Enough to keep the ring busy (an install and its two calls cost about
#: 5 us), small next to any RLIMIT_NOFILE.
ADDRESS_INSTALLS = 64
#: Back-off between installs refused with EMFILE/ENFILE (as AcceptOp's).
ADDRESS_RETRY_DELAY = 0.05
#: How long a connection waits for a process fd before its handler starts
#: without addresses; once a shortage lasts longer, each later connection
#: gets one try.
ADDRESS_RETRY_FOR = 1.0
#: At most one warning about connections without addresses per this long.
ADDRESS_WARN_EVERY = 60.0

_NO_FD = (errno.EMFILE, errno.ENFILE)


def _ringline_loop() -> EventLoop | None:
    """The running ringline loop, or None when another asyncio loop runs
    (the caller then hands over to the portable backend)."""
    from ringline.aio.eventloop import EventLoop

    loop = asyncio.get_running_loop()
    if not isinstance(loop, EventLoop):
        return None
    return loop


async def _await(aw: Awaitable[Any]) -> Any:
    """A coroutine around an awaitable that is not one (a Task needs one)."""
    return await aw


class Server:
    """A listening server on the ring, shaped like :class:`asyncio.Server`."""

    def __init__(self, loop: EventLoop, socks: list[socket.socket],
                 on_accept: OnAccept, config: Config,
                 ssl: _ssl.SSLContext | None = None) -> None:
        self._loop = loop
        self._ssl = ssl
        self._socks = socks
        self._on_accept = on_accept
        self._config = config
        self._accepts: list[Any] = []
        self._stopped_accepts: list[Any] = []
        self._draining = False      # shutdown() under way: new arrivals stop reading
        self._last_accept = -1e9    # loop time of the last accept (graceful_shutdown)
        # Running handler -> its connection (found by _on_handler_done: one
        # shared done-callback and context, not a closure per connection).
        self._tasks: dict[_task.Task, Connection] = {}
        self._done_context = contextvars.copy_context()
        # The (callback, context) record every handler task shares.  Its
        # bound method points back here: dropped once the server is closed
        # and its last handler done, so a closed server is freed by
        # refcount (made again if a late accept still starts a handler).
        self._done_pair: tuple[Any, contextvars.Context] | None = None
        # A dict used as a set (keys): fewer bytes per entry than a set.
        self._conns: dict[Connection, None] = {}
        self._closed = loop.create_future()
        self._serving = False
        self.accepted = 0    # connections accepted (refused ones included)
        self.refused = 0     # connections closed at once because of max_connections
        # Address installs (see the module docstring): in flight, waiting
        # (connection, loop time of its first EMFILE or None) in accept
        # order, the back-off timer, when the fd shortage began (None: none).
        self._addr_busy = 0
        self._addr_wait: collections.deque[tuple[Connection, float | None]] = \
            collections.deque()
        self._addr_pause: TimerHandle | None = None
        self._addr_short_since: float | None = None
        self._addr_warned = -1e9        # loop time of the last warning
        self._addr_unwarned = 0         # connections without addresses since it
        self.address_retries = 0        # installs retried after EMFILE/ENFILE

    def _start(self) -> None:
        direct = _stream.net_state_for(self._loop).use_fixed_files()
        for s in self._socks:
            self._accepts.append(_sockops.start_accepting(
                self._loop, s.fileno(),
                lambda fd, fam=s.family: self._accepted(fd, fam, direct),  # type: ignore[misc]
                direct))
        self._serving = True

    def _accepted(self, fd: int, family: int, direct: bool) -> None:
        self.accepted += 1
        self._last_accept = self._loop.time()
        if len(self._conns) >= self._config.max_connections:
            # Over Config.max_connections: refuse this one, keep serving.
            if direct:
                _sockops.close_slot(self._loop, fd)
            else:
                socket.close(fd)
            self.refused += 1
            return
        if direct:
            # TCP_NODELAY came from the listener.  The addresses need a
            # process fd: the kernel installs a temporary one (_addr_install).
            conn = _connection.new_connection(self._loop, fd, family, False, fixed=True)
        else:
            if self._config.tcp_nodelay and family in (socket.AF_INET, socket.AF_INET6):
                _sockops.set_nodelay(fd)
            conn = _connection.new_connection(self._loop, fd, family, False)
        if self._ssl is not None:
            _start_tls(conn, self._ssl, True, None, self._config)
        self._conns[conn] = None
        if self._draining:
            conn._shutdown_read()
        if not direct:
            self._start_handler(conn)
        elif (self._addr_busy < ADDRESS_INSTALLS and not self._addr_wait
              and self._addr_pause is None):
            self._addr_install(conn, None)
        else:
            # peer_addr/local_addr stay synchronous properties: the handler
            # starts once they are known, so it waits for an install too.
            self._addr_wait.append((conn, None))

    def _addr_install(self, conn: Connection, short_since: float | None) -> None:
        """Ask for ``conn``'s addresses (one of the ADDRESS_INSTALLS)."""
        try:
            addresses = _sockops.install_call(self._loop, conn.fd, None)
        except BaseException:
            conn.abort()            # no handler will own it
            self._conns.pop(conn, None)
            raise
        self._addr_busy += 1
        addresses.add_done_callback(
            lambda fut, conn=conn, since=short_since:  # type: ignore[misc]
                self._addresses_known(conn, fut, since))

    def _addresses_known(self, conn: Connection, fut: asyncio.Future[Any],
                         short_since: float | None) -> None:
        self._addr_busy -= 1
        exc = None if fut.cancelled() else fut.exception()
        if exc is None and not fut.cancelled():
            conn._set_addresses(*fut.result())
            # The install's fd is closed again: one is free for a retry.
            self._addr_short_since = None
            self._addr_pump(fd_freed=self._addr_pause is not None)
        elif isinstance(exc, OSError) and exc.errno in _NO_FD:
            if self._addr_retry(conn, short_since):
                return
        elif isinstance(exc, Exception) and not isinstance(exc, OSError):
            self._addr_pump()
            self._handler_failed(conn, exc)
            self._handler_finished(conn)
            return
        else:   # another OSError (e.g. EBADF: closed meanwhile): no addresses
            self._addr_pump()
        self._start_handler(conn)

    def _addr_retry(self, conn: Connection, short_since: float | None) -> bool:
        """EMFILE/ENFILE for ``conn``'s install: wait at the head of the
        line and back off (True), or, once the shortage has lasted
        ADDRESS_RETRY_FOR, give up on its addresses: counted, warned (False)."""
        now = self._loop.time()
        if self._addr_short_since is None:
            self._addr_short_since = now
        if short_since is None:
            short_since = now
        if conn.closed:
            self._addr_pump()
            return False
        if (now - short_since < ADDRESS_RETRY_FOR
                and now - self._addr_short_since < ADDRESS_RETRY_FOR):
            self.address_retries += 1
            self._addr_wait.appendleft((conn, short_since))
            if self._addr_pause is None:
                self._addr_pause = self._loop.call_later(ADDRESS_RETRY_DELAY, self._addr_resume)
            return True
        _stream.net_state_for(self._loop).addresses_unknown += 1
        self._addr_unwarned += 1
        if now - self._addr_warned >= ADDRESS_WARN_EVERY:
            logger.warning(
                "%d accepted connection(s) started without peer_addr/local_addr: no "
                "process fd for %.1f s to read them (EMFILE/ENFILE; RLIMIT_NOFILE soft "
                "limit %s); counted in addresses_unknown", self._addr_unwarned,
                ADDRESS_RETRY_FOR, _nofile_soft())
            self._addr_warned = now
            self._addr_unwarned = 0
        self._addr_pump()
        if not self._addr_wait and not self._addr_busy:
            # Nobody waits: the next connection's wait starts afresh.
            self._addr_short_since = None
        return False

    def _addr_resume(self) -> None:
        self._addr_pause = None
        self._addr_pump()

    def _addr_pump(self, fd_freed: bool = False) -> None:
        """Start waiting installs while the budget allows and no back-off
        runs; ``fd_freed``: one may go during a back-off (an fd was just
        closed)."""
        wait = self._addr_wait
        while wait and self._addr_busy < ADDRESS_INSTALLS and (
                self._addr_pause is None or fd_freed):
            fd_freed = False
            conn, since = wait.popleft()
            if conn.closed:
                # Closed while it waited (reset, shutdown): its slot may
                # hold another socket by now, so no install; the handler
                # runs as it would have and sees the end.
                self._start_handler(conn)
                continue
            self._addr_install(conn, since)

    def _start_handler(self, conn: Connection) -> None:
        """Run ``on_accept(conn)`` as a ringline Task (its receive waits skip
        asyncio's Future, see _task); ``_handler_done`` cleans up after it.
        Over TLS it starts once the handshake has completed."""
        if self._ssl is not None and not self._tls_ready(conn):
            return
        try:
            coro = self._on_accept(conn)
            if not asyncio.iscoroutine(coro):
                coro = _await(coro)
            task = _task.Task(coro, self._loop)
        except Exception as exc:
            self._handler_failed(conn, exc)
            self._handler_finished(conn)
            return
        self._tasks[task] = conn
        pair = self._done_pair
        if pair is None:
            pair = self._done_pair = (self._on_handler_done, self._done_context)
        task._add_shared_done_callback(pair)

    def _tls_ready(self, conn: Connection) -> bool:
        """True once ``conn``'s handshake completed.  Still running: the
        handshake calls _start_handler again when it ends.  Failed: a
        counted (NetState.tls_handshake_failures), logged close."""
        hs = conn._tls_handshake()
        if hs is None:
            return True
        if not hs.done():
            hs.add_done_callback(lambda _, conn=conn: self._start_handler(conn))  # type: ignore[misc]
            return False
        exc = None if hs.cancelled() else hs.exception()
        if exc is None:
            return True
        _tls_logger.info("TLS handshake with %s failed: %s", conn.peer_addr, exc)
        self._handler_finished(conn)
        return False

    def _on_handler_done(self, task: _task.Task) -> None:
        self._handler_done(self._tasks.pop(task), task)
        if not self._tasks and not self._serving:
            self._done_pair = None

    def _handler_done(self, conn: Connection, task: _task.Task) -> None:
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
        # Graceful: queued sends drain, then FIN.  The connection stays in
        # _conns until it is really closed, so shutdown() waits for it.
        conn.close()
        if conn.closed:
            self._conns.pop(conn, None)
        else:
            self._loop.create_task(self._forget_when_closed(conn))

    async def _forget_when_closed(self, conn: Connection) -> None:
        try:
            await conn.wait_closed()
        finally:
            self._conns.pop(conn, None)

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
        return self._socks[0].getsockname()[1]

    def is_serving(self) -> bool:
        return self._serving

    def close(self) -> None:
        """Stop accepting and close the listening sockets; connections stay."""
        self._loop._require_loop_thread("Server.close")
        if not self._serving and not self._socks:
            return
        self._serving = False
        for op in self._accepts:
            op.stop()
        self._stopped_accepts, self._accepts = self._accepts, []
        for s in self._socks:
            s.close()
        self._socks = []
        if not self._tasks:
            self._done_pair = None
        if not self._closed.done():
            self._closed.set_result(None)

    async def shutdown(self, timeout: float | None = None) -> None:
        """Graceful stop: stop accepting, then let handlers finish what they
        are doing within ``timeout`` seconds (Config.shutdown_timeout); see
        :func:`ringline._shutdown.graceful_shutdown`."""
        self._loop._require_loop_thread("Server.shutdown")
        self.close()
        self._draining = True
        await graceful_shutdown(
            self._conns, self._tasks,
            self._config.shutdown_timeout if timeout is None else timeout,
            lambda: not any(op.active for op in self._stopped_accepts),
            lambda: self._last_accept)

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    async def serve_forever(self) -> None:
        """Wait until the server is closed.  Cancelling it closes the server
        (as asyncio.Server.serve_forever does): else the listening sockets
        and their accepts would outlive the only task that knew of them."""
        try:
            await self.wait_closed()
        except asyncio.CancelledError:
            self.close()
            raise

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()


async def serve(on_accept: OnAccept, host: str | None = None, port: int = 0, *,
                config: Config | None = None, sock: socket.socket | None = None,
                ssl: _ssl.SSLContext | None = None) -> Server:
    """Listen on ``host:port`` and run ``await on_accept(conn)`` per connection.

    Uses the running ringline loop; ``config`` (default: the loop's) supplies
    backlog, SO_REUSEPORT and TCP_NODELAY.  Port 0 binds an ephemeral port;
    ``server.port`` reports it.  ``sock``, instead of host and port, serves
    a socket that already listens (as ``loop.create_server(sock=...)``; the
    server owns it from then on): a supervisor's inherited socket, say.

    ``ssl``, a server ``ssl.SSLContext``: every connection is TLS (see
    ``ringline.native.tls``); the handler runs once its handshake completed
    (within ``Config.tls_handshake_timeout``) and sees plaintext.  A failed
    handshake is counted (``tls_handshake_failures``), logged at INFO on
    ``ringline.tls`` and closed; the server keeps serving.
    """
    _argcheck.callable_arg(on_accept, "serve()", "on_accept")
    _argcheck.host_arg(host, "serve()")
    _argcheck.port_arg(port, "serve()")
    _argcheck.config_arg(config, "serve()")
    if ssl is not None:
        _check_ssl(ssl, True)
        record_sni(ssl)
    loop = _ringline_loop()
    if loop is None:
        from ringline import portable
        # Same Server and Connection interface, pure Python.
        return cast(Server, await portable.serve(cast(Any, on_accept), host, port,
                                                 config=config, sock=sock, ssl=ssl))
    cfg = config if config is not None else loop.config
    _stream.net_state_for(loop)
    server = Server(loop, _sockets(host, port, cfg, sock), on_accept, cfg, ssl)
    server._start()
    return server


def _nofile_soft() -> str:
    import resource
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return "unlimited" if soft == resource.RLIM_INFINITY else str(soft)


def _sockets(host: str | None, port: int, cfg: Config,
             sock: socket.socket | None) -> list[socket.socket]:
    if sock is None:
        return listen_sockets(host, port, cfg)
    return [given_socket(sock, host, port)]


async def _connect_fixed(loop: EventLoop, family: int, addr: Any,
                          timeout: float | None, nodelay: bool) -> Connection:
    """SOCKET into a kernel-chosen slot, CONNECT on the slot (linked to a
    LINK_TIMEOUT), then a temporary fd for TCP_NODELAY and the local address.
    Any failure or cancellation closes the slot; a cancelled connect is
    cancelled in the kernel too (connect_fd)."""
    made = _sockops.socket_fixed(loop, family)
    try:
        slot = await made
    except asyncio.CancelledError:
        # The slot may have come after all, with the cancel landing before
        # this task resumed: the task then drops the result, so close it here.
        if made.done() and not made.cancelled() and made.exception() is None:
            _sockops.close_slot(loop, made.result())
        raise
    try:
        await _sockops.connect_fd(loop, slot, family, addr, timeout, True)
        _, local = await _sockops.install_call(loop, slot, None, nodelay)
    except BaseException:
        _sockops.close_slot(loop, slot)
        raise
    return _connection.new_connection(loop, slot, family, True, peer=addr, fixed=True,
                                      local=local)


def _check_ssl(ctx: Any, server_side: bool) -> None:
    if not isinstance(ctx, _ssl.SSLContext):
        raise TypeError(f"ssl= needs an ssl.SSLContext, got {type(ctx).__name__}")
    if server_side and ctx.check_hostname:
        raise ValueError("a server's ssl.SSLContext must not check hostnames "
                         "(made with ssl.Purpose.CLIENT_AUTH?)")


def _start_tls(conn: Connection, ctx: _ssl.SSLContext, server_side: bool,
               server_hostname: str | None, cfg: Config) -> None:
    layer = _native_tls.TLSLayer(conn, ctx, server_side, server_hostname,
                                 cfg.tls_handshake_timeout, cfg.tls_shutdown_timeout)
    _connection.attach_tls(conn, layer)


async def _tls_client(conn: Connection, ctx: _ssl.SSLContext, server_hostname: str | None,
                      cfg: Config) -> Connection:
    """The client handshake over a connected ``conn``; any failure or a
    cancel closes it (a failure gracefully, so our alert reaches the peer)."""
    try:
        _start_tls(conn, ctx, False, server_hostname, cfg)
        await cast("asyncio.Future[None]", conn._tls_handshake())
    except asyncio.CancelledError:
        conn.abort()
        raise
    except BaseException:
        conn.close()
        raise
    return conn


async def connect(host: str, port: int, *, timeout: float | None = None,
                  ssl: _ssl.SSLContext | bool | None = None,
                  server_hostname: str | None = None) -> Connection:
    """Open an outbound TCP connection on the ring.

    IORING_OP_CONNECT linked to a LINK_TIMEOUT when ``timeout`` is given.
    Refusal, unreachability and timeout raise ConnectionRefusedError,
    OSError(ENETUNREACH/EHOSTUNREACH) and TimeoutError.  Cancelling the
    caller cancels the connect in the kernel and closes the socket.

    ``ssl`` (a client ``ssl.SSLContext``, or True for
    ``ssl.create_default_context()``): TLS over the connection, returned
    once the handshake completed (``Config.tls_handshake_timeout``).  The
    certificate is checked against ``server_hostname`` (default ``host``;
    "" sends no SNI and needs a context that does not check hostnames).  A
    failed handshake raises ``TLSHandshakeError`` (an ``ssl.SSLError``),
    ``TLSCertificateError`` for a certificate that does not verify,
    ``TLSHandshakeTimeout``; the connection is closed.
    """
    _argcheck.host_arg(host, "connect()", optional=False)
    _argcheck.port_arg(port, "connect()")
    _argcheck.timeout_arg(timeout, "connect()")
    if ssl is None and server_hostname is not None:
        raise ValueError("server_hostname is only meaningful with ssl")
    if ssl is True:
        ssl = _ssl.create_default_context()
    if ssl is not None and ssl is not False:
        _check_ssl(ssl, False)
    else:
        ssl = None
    loop = _ringline_loop()
    if loop is None:
        from ringline import portable
        return cast(Connection, await portable.connect(
            host, port, timeout=timeout, ssl=ssl, server_hostname=server_hostname))
    if ssl is not None:
        conn = await connect(host, port, timeout=timeout)
        return await _tls_client(conn, ssl, host if server_hostname is None
                                 else server_hostname or None, loop.config)
    cfg = loop.config
    if timeout is None:
        timeout = cfg.connect_timeout
    ctx = _stream.net_state_for(loop)
    if ctx.statistics()["streams"] >= cfg.max_connections:
        from ringline.errors import ConnectionLimitReached
        raise ConnectionLimitReached(cfg.max_connections)
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError(f"getaddrinfo({host!r}) returned nothing")
    last: BaseException | None = None
    if ctx.use_fixed_files():
        for family, _, _, _, addr in infos:
            try:
                return await _connect_fixed(loop, family, addr, timeout, cfg.tcp_nodelay)
            except OSError as exc:
                last = exc
        assert last is not None
        raise last
    for family, type_, proto, _, addr in infos:
        s = socket.socket(family, type_ | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC, proto)
        fd = s.detach()
        try:
            if cfg.tcp_nodelay:
                _sockops.set_nodelay(fd)
            await _sockops.connect_fd(loop, fd, family, addr, timeout)
        except BaseException as exc:
            socket.close(fd)
            if not isinstance(exc, OSError):
                raise
            last = exc
            continue
        return _connection.new_connection(loop, fd, family, True, peer=addr)
    assert last is not None
    raise last
