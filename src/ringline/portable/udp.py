"""UDP for the portable backend: ``bind_udp``/``connect_udp`` on any asyncio
loop (uvloop's or asyncio's), through asyncio datagram endpoints.

Same interface as the io_uring ``DatagramSocket`` (``ringline._net.udp``):
a bounded receive queue with a dropped counter, ``recv_from``,
``with_datagram``, ``recv_batch``, queued ``send_to`` whose errors
``drain()`` raises, ``send_to_async``, ``close``.  The differences: a
datagram is a ``bytes`` before ``with_datagram`` sees it (asyncio copied it),
and sends are the loop's ``sendto`` calls.  Counters are per socket
(``statistics()``); ``ringline.metrics.snapshot`` has the io_uring
backend's per-loop ones only.  Pure Python.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import socket
from collections.abc import Callable
from typing import Any

from ringline.errors import ConnectionClosed, DatagramTooLarge

__all__ = ["DatagramSocket", "MAX_PAYLOAD_V4", "MAX_PAYLOAD_V6", "bind_udp", "connect_udp",
           "make_udp_socket", "resolve_udp"]

MAX_PAYLOAD_V4 = 65507
MAX_PAYLOAD_V6 = 65527

async def resolve_udp(loop: asyncio.AbstractEventLoop, host: str | None, port: int,
                      passive: bool) -> tuple[int, Any]:
    """(family, address) of ``host:port`` for a UDP socket (the first
    getaddrinfo answer; ``host`` None binds every IPv4 address)."""
    if host is None or host == "":
        host = "0.0.0.0"
    flags = socket.AI_PASSIVE if passive else 0
    try:
        # A numeric address needs no lookup: no trip through the executor.
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM,
                                   flags=flags | socket.AI_NUMERICHOST)
    except socket.gaierror:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=flags)
    if not infos:
        raise OSError(f"getaddrinfo({host!r}) returned nothing")
    family, _, _, _, addr = infos[0]
    return family, addr


def make_udp_socket(family: int, bind_addr: Any, *, reuse_port: bool = False,
                    connect_addr: Any = None, gro: bool = False) -> socket.socket:
    """A non-blocking UDP socket bound to ``bind_addr`` (None: the kernel
    picks at connect) and connected to ``connect_addr`` if given."""
    s = socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    try:
        if reuse_port:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if gro:
            s.setsockopt(socket.SOL_UDP, 104, 1)        # UDP_GRO (Linux 5.0)
        if bind_addr is not None:
            s.bind(bind_addr)
        if connect_addr is not None:
            s.connect(connect_addr)
    except BaseException:
        s.close()
        raise
    return s


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, owner: DatagramSocket) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: Any) -> None:
        o = self.owner
        if len(o._queue) >= o._queue_limit:
            o.dropped += 1
            return
        o._queue.append((data, addr))
        o.datagrams_in += 1
        o._wake(None)

    def error_received(self, exc: Exception) -> None:
        o = self.owner
        if o._sending:
            o._send_exc = exc        # raised by the send_to in progress's caller path
            return
        # A receive-side error (ICMP on a connected socket): the next
        # receive raises it.
        if o._waiter is not None and not o._waiter.done():
            o._wake(exc)
        else:
            o._recv_error = exc

    def connection_lost(self, exc: Exception | None) -> None:
        o = self.owner
        if not o._closed_fut.done():
            o._closed_fut.set_result(None)


class DatagramSocket:
    """A UDP socket of the portable backend (see the io_uring one for the
    full description)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, *,
                 peer: Any = None, queue_limit: int = 224) -> None:
        self._loop = loop
        self._sock = sock
        self.family = sock.family
        self.local_addr = sock.getsockname()
        self.peer_addr = peer
        self._max = MAX_PAYLOAD_V4 if sock.family == socket.AF_INET else MAX_PAYLOAD_V6
        self._queue: collections.deque[tuple[bytes, Any]] = collections.deque()
        self._queue_limit = queue_limit
        self._waiter: asyncio.Future[None] | None = None
        self._recv_error: Exception | None = None
        self._send_error: Exception | None = None
        self._send_exc: Exception | None = None
        self._sending = False
        self._closing = False
        self._closed_fut: asyncio.Future[None] = loop.create_future()
        self._transport: asyncio.DatagramTransport | None = None
        self._good_addrs: dict[Any, Any] = {}
        self.datagrams_in = 0
        self.datagrams_out = 0
        self.dropped = 0
        self.truncated = 0
        self.send_errors = 0

    async def _start(self) -> None:
        transport, _ = await self._loop.create_datagram_endpoint(
            lambda: _Proto(self), sock=self._sock)
        self._transport = transport

    # receive
    def _wake(self, exc: BaseException | None) -> None:
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                if exc is None:
                    w.set_result(None)
                else:
                    w.set_exception(exc)

    def _wait(self) -> asyncio.Future[None]:
        if self._closing:
            raise ConnectionClosed("datagram socket is closed")
        if self._recv_error is not None:
            exc, self._recv_error = self._recv_error, None
            raise exc
        if self._waiter is not None and not self._waiter.done():
            raise RuntimeError("another coroutine is already waiting for a datagram "
                               "on this socket")
        self._waiter = self._loop.create_future()
        return self._waiter

    async def recv_from(self) -> tuple[bytes, Any]:
        """The next datagram and its sender: ``(bytes, address)``."""
        while not self._queue:
            await self._wait()
        return self._queue.popleft()

    async def recv(self) -> bytes:
        """The next datagram's bytes (for a connected socket)."""
        return (await self.recv_from())[0]

    async def recv_batch(self, max_n: int = 64) -> list[tuple[bytes, Any]]:
        """Whatever has arrived, at most ``max_n`` datagrams (waits for one)."""
        if max_n < 1:
            raise ValueError(f"recv_batch: max_n must be >= 1 (got {max_n})")
        while not self._queue:
            await self._wait()
        q = self._queue
        return [q.popleft() for _ in range(min(max_n, len(q)))]

    async def with_datagram(self, fn: Callable[[memoryview, Any], Any]) -> Any:
        """``fn(view, address)`` on the next datagram; the view is released
        when ``fn`` returns."""
        data, addr = await self.recv_from()
        view = memoryview(data)
        try:
            return fn(view, addr)
        finally:
            try:
                view.release()
            except BufferError:
                pass

    # send
    def _send(self, data: Any, addr: Any, segment_size: int) -> int:
        if self._closing or self._transport is None:
            raise ConnectionClosed("datagram socket is closed")
        b = data if type(data) is bytes else bytes(data)
        if len(b) > self._max:
            raise DatagramTooLarge(len(b), self._max)
        if addr is None:
            if self.peer_addr is None:
                raise ValueError("this socket is not connected: give send_to an address")
        else:
            addr = self._good_addrs.get(addr) or self._check_addr(addr)
        if segment_size:
            if not 1 <= segment_size <= 65535:
                raise ValueError(f"segment_size must be 1..65535 (got {segment_size})")
            # No GSO through asyncio's transport: the same datagrams, one by one.
            n = 0
            for i in range(0, max(len(b), 1), segment_size):
                n += self._send(b[i:i + segment_size], addr, 0)
            return n
        self._sending = True
        self._send_exc = None
        try:
            if addr is None:
                self._transport.sendto(b)
            else:
                self._transport.sendto(b, addr)
        finally:
            self._sending = False
        exc = self._send_exc
        if exc is not None:
            self._send_exc = None
            if isinstance(exc, OSError) and exc.errno == errno.EMSGSIZE:
                exc = DatagramTooLarge(len(b), self._max)
            raise exc
        self.datagrams_out += 1
        return len(b)

    def _check_addr(self, addr: Any) -> Any:
        """``addr`` as the transport takes it, by the io_uring backend's
        rules: a (numeric host, port) tuple (a bad one would be a fatal
        error of asyncio's transport); an IPv4 one v4-mapped for an IPv6
        socket."""
        if (not isinstance(addr, tuple) or len(addr) < 2 or not isinstance(addr[0], str)
                or not isinstance(addr[1], int) or isinstance(addr[1], bool)):
            raise TypeError(f"address must be a (host, port) tuple, not {addr!r}")
        host = addr[0].partition("%")[0]
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            socket.inet_pton(fam, host)
        except OSError:
            raise ValueError(f"send_to needs a numeric IP address (resolve names with "
                             f"loop.getaddrinfo first), got {addr[0]!r}") from None
        if not 0 <= addr[1] <= 65535:
            raise ValueError(f"port out of range: {addr[1]!r}")
        good = addr
        if self.family == socket.AF_INET6 and fam == socket.AF_INET:
            good = ("::ffff:" + host, addr[1], 0, 0)
        if len(self._good_addrs) >= 4096:
            self._good_addrs.clear()
        self._good_addrs[addr] = good
        return good

    def _send_queued(self, data: Any, addr: Any, segment_size: int) -> None:
        try:
            self._send(data, addr, segment_size)
        except (ConnectionClosed, DatagramTooLarge, ValueError, TypeError):
            raise
        except OSError as exc:
            self.send_errors += 1
            if self._send_error is None:
                self._send_error = exc

    def send_to(self, data: Any, addr: Any, *, segment_size: int = 0) -> None:
        """Queue one datagram to ``addr``; a failure is raised by ``drain()``."""
        if addr is None:
            raise TypeError("send_to needs an address (use send() on a connected socket)")
        self._send_queued(data, addr, segment_size)

    def send(self, data: Any, *, segment_size: int = 0) -> None:
        """Queue one datagram to the connected peer."""
        self._send_queued(data, None, segment_size)

    def send_to_async(self, data: Any, addr: Any, *, segment_size: int = 0
                      ) -> asyncio.Future[int]:
        """Send one datagram; awaitable of the byte count."""
        n = self._send(data, addr, segment_size)
        fut: asyncio.Future[int] = self._loop.create_future()
        fut.set_result(n)
        return fut

    async def drain(self) -> None:
        """Wait until the transport's buffer is empty; raise the first error
        of a ``send_to`` since the last ``drain()``."""
        # (Both loops' datagram transports have get_write_buffer_size.)
        while self._transport is not None and self._transport.get_write_buffer_size():  # type: ignore[attr-defined]
            await asyncio.sleep(0.001)
        if self._send_error is not None:
            exc, self._send_error = self._send_error, None
            raise exc

    # close
    def close(self) -> None:
        """Stop receiving (queued datagrams are dropped) and close."""
        if self._closing:
            return
        self._closing = True
        self._queue.clear()
        self._wake(ConnectionClosed("datagram socket is closed"))
        if self._send_error is not None:
            # Closed before a drain() could raise it: report it, never drop it.
            exc, self._send_error = self._send_error, None
            self._loop.call_exception_handler({
                "message": f"UDP send failed and no drain() reported it before close ({self!r})",
                "exception": exc,
            })
        if self._transport is not None:
            self._transport.close()
        elif not self._closed_fut.done():
            self._sock.close()
            self._closed_fut.set_result(None)

    async def wait_closed(self) -> None:
        """Wait until the socket is closed (after ``close()``)."""
        await asyncio.shield(self._closed_fut)

    async def __aenter__(self) -> DatagramSocket:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
        return self._closing

    def fileno(self) -> int:
        """The socket's fd (-1 once closed)."""
        return self._sock.fileno()

    @property
    def queued(self) -> int:
        """Datagrams received and not yet taken."""
        return len(self._queue)

    def statistics(self) -> dict[str, int]:
        """This socket's counters."""
        return {"datagrams_in": self.datagrams_in, "datagrams_out": self.datagrams_out,
                "dropped": self.dropped, "truncated": 0, "send_errors": self.send_errors,
                "queued": len(self._queue), "sends_in_flight": 0, "sends_pending": 0,
                "enobufs": 0}

    def __repr__(self) -> str:
        st = "closed" if self._closing else "open"
        return (f"<ringline portable DatagramSocket {st} local={self.local_addr!r} "
                f"peer={self.peer_addr!r}>")


async def bind_udp(host: str | None, port: int, *, reuse_port: bool = False,
                   queue_limit: int = 224) -> DatagramSocket:
    """The portable ``ringline.bind_udp``."""
    loop = asyncio.get_running_loop()
    family, addr = await resolve_udp(loop, host, port, True)
    s = DatagramSocket(loop, make_udp_socket(family, addr, reuse_port=reuse_port),
                       queue_limit=queue_limit)
    await s._start()
    return s


async def connect_udp(host: str, port: int, *, queue_limit: int = 224) -> DatagramSocket:
    """The portable ``ringline.connect_udp``."""
    loop = asyncio.get_running_loop()
    family, addr = await resolve_udp(loop, host, port, False)
    sock = make_udp_socket(family, None, connect_addr=addr)
    s = DatagramSocket(loop, sock, peer=sock.getpeername(), queue_limit=queue_limit)
    await s._start()
    return s
