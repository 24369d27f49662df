"""asyncio socket transports on the ring.

asyncio's own ``create_connection``, ``create_server``,
``connect_accepted_socket``, ``create_unix_*`` and streams all end in
``loop._make_socket_transport``; overriding that one method puts every
stream socket they make on ringline's stream machinery (``aio/tcp.pyx``).
"""

from __future__ import annotations

import contextvars
import os
import socket
import ssl
import warnings
from asyncio import base_events, constants, sslproto
from typing import Any

from ringline.aio import tcp as _transport
from ringline.aio import tls as _tls
from ringline.aio import udp as _udp


class RingTransportsMixin:
    """EventLoop methods that put stream sockets on ringline's own transports."""

    _listeners: dict[int, Any] | None     # a field of the compiled Loop (loop.pxd)

    def _make_socket_transport(self, sock: socket.socket, protocol: Any, waiter: Any = None,
                               *, extra: Any = None, server: Any = None) -> Any:
        if sock.type != socket.SOCK_STREAM:  # pragma: no cover - asyncio only passes streams
            return super()._make_socket_transport(  # type: ignore[misc]
                sock, protocol, waiter, extra=extra, server=server)
        base_events._set_nodelay(sock)  # type: ignore[attr-defined]
        return _transport.make_socket_transport(
            self, sock, protocol, waiter, extra, server)  # type: ignore[arg-type]

    def _make_ssl_transport(self, rawsock: socket.socket, protocol: Any, sslcontext: Any,
                            waiter: Any = None, *, server_side: bool = False,
                            server_hostname: str | None = None, extra: Any = None,
                            server: Any = None,
                            ssl_handshake_timeout: float | None = constants.SSL_HANDSHAKE_TIMEOUT,
                            ssl_shutdown_timeout: float | None = constants.SSL_SHUTDOWN_TIMEOUT,
                            ) -> Any:
        # asyncio's selector version builds its own readiness transport; TLS
        # records must ride the ring transport like any other stream bytes.
        # ringline's compiled SSLProtocol (aio/tls.pyx) unless Config.tls
        # (or RINGLINE_TLS) asks for asyncio's.
        _ktls_check(self._config)  # type: ignore[attr-defined]
        ssl_protocol = _ssl_protocol_class(self._config)(  # type: ignore[attr-defined]
            self, protocol, sslcontext, waiter, server_side, server_hostname,  # type: ignore[arg-type]
            ssl_handshake_timeout=ssl_handshake_timeout,  # type: ignore[arg-type]
            ssl_shutdown_timeout=ssl_shutdown_timeout)
        self._make_socket_transport(rawsock, ssl_protocol, extra=extra, server=server)
        return ssl_protocol._app_transport

    async def start_tls(self, transport: Any, protocol: Any, sslcontext: Any, *,
                        server_side: bool = False, server_hostname: str | None = None,
                        ssl_handshake_timeout: float | None = None,
                        ssl_shutdown_timeout: float | None = None) -> Any:
        """asyncio's start_tls, with the SSLProtocol Config.tls picks."""
        cls = _ssl_protocol_class(self._config)  # type: ignore[attr-defined]
        if cls is sslproto.SSLProtocol:
            return await super().start_tls(  # type: ignore[misc]
                transport, protocol, sslcontext, server_side=server_side,
                server_hostname=server_hostname, ssl_handshake_timeout=ssl_handshake_timeout,
                ssl_shutdown_timeout=ssl_shutdown_timeout)
        if not isinstance(sslcontext, ssl.SSLContext):
            raise TypeError(f"sslcontext is expected to be an instance of ssl.SSLContext, "
                            f"got {sslcontext!r}")
        if not getattr(transport, "_start_tls_compatible", False):
            raise TypeError(f"transport {transport!r} is not supported by start_tls()")
        waiter = self.create_future()  # type: ignore[attr-defined]
        ssl_protocol = cls(self, protocol, sslcontext, waiter, server_side, server_hostname,
                           ssl_handshake_timeout=ssl_handshake_timeout,
                           ssl_shutdown_timeout=ssl_shutdown_timeout,
                           call_connection_made=False)
        # Reading stays paused until the TLS protocol has the transport:
        # no ciphertext may reach it before connection_made.
        transport.pause_reading()
        transport.set_protocol(ssl_protocol)
        made = self.call_soon(ssl_protocol.connection_made, transport)  # type: ignore[attr-defined]
        resumed = self.call_soon(transport.resume_reading)  # type: ignore[attr-defined]
        try:
            await waiter
        except BaseException:
            transport.close()
            made.cancel()
            resumed.cancel()
            raise
        return ssl_protocol._app_transport

    def _make_datagram_transport(self, sock: socket.socket, protocol: Any, address: Any = None,
                                 waiter: Any = None, extra: Any = None) -> Any:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            # UDP on the ring (aio/udp.pyx); other families (AF_UNIX) keep
            # asyncio's readiness transport below.
            return _udp.make_datagram_transport(
                self, sock, protocol, address, waiter, extra)  # type: ignore[arg-type]
        transport = super()._make_datagram_transport(  # type: ignore[misc]
            sock, protocol, address, waiter, extra)
        peer = transport._extra.get("peername")
        if type(peer) is str and peer == "":
            # Connected to a peer without a name (socketpair(AF_UNIX,
            # SOCK_DGRAM)): asyncio's sendto(data) would pass None as the
            # address to sock.sendto and fail; its send() path, taken for a
            # known peer, is what is meant (as on uvloop).
            transport._extra["peername"] = _UnnamedPeer()
        return transport

    async def _sendfile_native(self, transp: Any, file: Any, offset: int,
                               count: int | None) -> int:
        # loop.sendfile() on a ring transport: once every queued byte is out,
        # the kernel's sendfile() moves the file to the socket (no copy through
        # Python); reading pauses meanwhile, as asyncio's selector loop does.
        if not isinstance(transp, _transport.TCPTransport):
            return await super()._sendfile_native(  # type: ignore[misc,no-any-return]
                transp, file, offset, count)
        transports = self._transports  # type: ignore[attr-defined]
        fd = transp.fd
        resume_reading = transp.is_reading()
        transp.pause_reading()
        await transp._make_empty_waiter()
        # sock_sendfile refuses an fd that a transport owns: step aside.
        transports.pop(fd, None)
        try:
            return await self.sock_sendfile(  # type: ignore[attr-defined,no-any-return]
                transp._sock, file, offset, count, fallback=False)
        finally:
            transp._reset_empty_waiter()
            if not transp.is_closing():
                transports[fd] = transp
                if resume_reading:
                    transp.resume_reading()

    async def _sendfile_fallback(self, transp: Any, file: Any, offset: int,
                                 count: int | None) -> int:
        # asyncio's own fallback insists on its _FlowControlMixin transports;
        # a ring transport gets the same copy loop with _SendfileWriter.
        if not isinstance(transp, _transport.TCPTransport):
            return await super()._sendfile_fallback(  # type: ignore[misc,no-any-return]
                transp, file, offset, count)
        if offset:
            file.seek(offset)
        blocksize = min(count, 16384) if count else 16384
        buf = bytearray(blocksize)
        sent = 0
        writer = _SendfileWriter(self, transp)
        try:
            while not count or sent < count:
                n = min(count - sent, blocksize) if count else blocksize
                view = memoryview(buf)[:n]
                got = await self.run_in_executor(  # type: ignore[attr-defined]
                    None, file.readinto, view)
                if not got:
                    break           # end of file
                await writer.wait_writable()
                transp.write(view[:got])
                sent += got
            return sent
        finally:
            if sent and hasattr(file, "seek"):
                file.seek(offset + sent)
            writer.restore()

    # ---- listening: multishot accept on the ring instead of readiness+accept ----

    async def create_server(self, protocol_factory: Any, host: Any = None, port: Any = None,
                            *, start_serving: bool = True, **kw: Any) -> Any:
        """asyncio's create_server, minus the loop iteration it waits after it
        started serving: a cancel landing there dropped a listening server
        that nobody could close (its socket and the ring's accept leaked).
        The ring's accept needs no such pause."""
        server = await super().create_server(  # type: ignore[misc]
            protocol_factory, host, port, start_serving=False, **kw)
        if start_serving:
            server._start_serving()
        return server

    async def create_unix_server(self, protocol_factory: Any, path: Any = None, *,
                                 start_serving: bool = True, **kw: Any) -> Any:
        """As create_server: no pause between serving and returning."""
        server = await super().create_unix_server(  # type: ignore[misc]
            protocol_factory, path, start_serving=False, **kw)
        if start_serving:
            server._start_serving()
        return server

    def _start_serving(self, protocol_factory: Any, sock: socket.socket, sslcontext: Any = None,
                       server: Any = None, backlog: int = 100,
                       ssl_handshake_timeout: float | None = None,
                       ssl_shutdown_timeout: float | None = None) -> None:
        from ringline._net import sockops as _sockops

        listeners = self._listeners
        if listeners is None:
            listeners = self._listeners = {}
        fd = sock.fileno()
        if fd in listeners:
            return
        # As asyncio (whose accept callback is a Handle made here): each
        # connection's protocol_factory and callbacks run in a copy of the
        # context that started serving.
        context = contextvars.copy_context()

        def on_fd(conn_fd: int) -> None:
            context.copy().run(
                self._ring_accepted, conn_fd, sock, protocol_factory, sslcontext, server,
                ssl_handshake_timeout, ssl_shutdown_timeout)

        listeners[fd] = _sockops.start_accepting(self, fd, on_fd)  # type: ignore[arg-type]

    def _stop_serving(self, sock: socket.socket) -> None:
        listeners = self._listeners
        op = listeners.pop(sock.fileno(), None) if listeners else None
        if op is not None:
            op.stop()  # the cancelled accept's final CQE still arrives
            # The accept in the kernel holds the socket open past close()
            # until that CQE; shutdown() stops the listening at once, so a
            # connect right after server.close() is refused (as on asyncio)
            # rather than accepted into a backlog that is then reset.
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        # asyncio's own stop closes the socket (and on 3.13 unlinks a Unix
        # socket's path when asked to).
        super()._stop_serving(sock)  # type: ignore[misc]

    def _close_readiness(self, owner: bool) -> None:
        # Loop close: the kernel's accepts are cancelled and reaped by the
        # loop, but the ops must not keep the listening sockets (and their
        # servers) alive for as long as the closed loop object lives.
        try:
            super()._close_readiness(owner)  # type: ignore[misc]
        finally:
            self._listeners = None
            _udp.release_cached_rings(self, owner)  # type: ignore[arg-type]

    def _ring_accepted(self, fd: int, lsock: socket.socket, protocol_factory: Any,
                       sslcontext: Any, server: Any, ssl_handshake_timeout: float | None,
                       ssl_shutdown_timeout: float | None) -> None:
        # The listener's proto (IPPROTO_TCP), as accept() would give: asyncio
        # sets TCP_NODELAY only on sockets that say they are TCP.
        conn = socket.socket(lsock.family, socket.SOCK_STREAM, lsock.proto, fd)
        if sslcontext is not None:
            self.create_task(self._accept_connection2(  # type: ignore[attr-defined]
                protocol_factory, conn, {}, sslcontext, server,
                ssl_handshake_timeout, ssl_shutdown_timeout))
            return
        try:
            protocol = protocol_factory()
            self._make_socket_transport(conn, protocol, None, extra=None, server=server)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            conn.close()
            self.call_exception_handler({  # type: ignore[attr-defined]
                "message": "Error on transport creation for incoming connection",
                "exception": exc,
            })


_ktls_warned = False


def _ktls_check(config: Any) -> None:
    """Config.ktls=True asks for kernel TLS: say once, with the cause, that
    it is not used (ktls_status()); None (auto) and False stay quiet."""
    global _ktls_warned
    if config.ktls is not True or _ktls_warned:
        return
    ok, reason = _tls.ktls_status()
    if not ok:
        _ktls_warned = True
        warnings.warn(f"ringline: kernel TLS (Config.ktls=True) is not used, TLS stays "
                      f"in OpenSSL in user space: {reason}", RuntimeWarning, stacklevel=3)


def _ssl_protocol_class(config: Any) -> Any:
    """The SSLProtocol class TLS transports use: Config.tls, where "auto"
    means $RINGLINE_TLS if set, else ringline's."""
    choice = config.tls
    if choice == "auto":
        choice = os.environ.get("RINGLINE_TLS", "ringline") or "ringline"
    return sslproto.SSLProtocol if choice == "asyncio" else _tls.SSLProtocol


class _UnnamedPeer(str):
    """The peer name of a datagram socket connected to an unnamed peer: equal
    to "" (what getpeername() says) but true, as the peer is known."""

    def __bool__(self) -> bool:
        return True


class _SendfileWriter:
    """The transport's protocol while loop.sendfile() copies a file through
    write() (the fallback): reading stays paused, each write waits while
    the transport is over its high-water mark, and if the connection goes
    the waiting write fails and the user's protocol still gets
    connection_lost.  restore() gives the transport back as it was."""

    def __init__(self, loop: Any, transp: Any) -> None:
        self._loop = loop
        self._transp = transp
        self._user = transp.get_protocol()
        self._was_reading = transp.is_reading()
        self._was_paused = transp._protocol_paused
        self._ready: Any = loop.create_future() if self._was_paused else None
        transp.pause_reading()
        transp.set_protocol(self)

    async def wait_writable(self) -> None:
        if self._transp.is_closing():
            raise ConnectionError("Connection closed by peer")
        if self._ready is not None:
            await self._ready

    def pause_writing(self) -> None:
        if self._ready is None:
            self._ready = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._ready is not None:
            if not self._ready.done():
                self._ready.set_result(None)
            self._ready = None

    def connection_made(self, transport: Any) -> None:  # pragma: no cover - never called
        raise RuntimeError("sendfile: the connection is already made")

    def data_received(self, data: bytes) -> None:  # pragma: no cover - reading is paused
        raise RuntimeError("sendfile: reading should be paused")

    def eof_received(self) -> None:  # pragma: no cover - reading is paused
        raise RuntimeError("sendfile: reading should be paused")

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._ready is not None and not self._ready.done():
            # The peer went away before the file was sent: always an error.
            self._ready.set_exception(
                exc if exc is not None else ConnectionError("Connection is closed by peer"))
        self._user.connection_lost(exc)

    def restore(self) -> None:
        self._transp.set_protocol(self._user)
        if self._was_reading:
            self._transp.resume_reading()
        if self._ready is not None:
            self._ready.cancel()
            self._ready = None
        if self._was_paused:
            # The user's protocol was told to pause before; it is not now.
            self._user.resume_writing()
