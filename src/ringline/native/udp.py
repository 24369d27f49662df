"""The native UDP API: ``bind_udp`` and ``connect_udp``.

    sock = await ringline.bind_udp("127.0.0.1", 9000)
    while True:
        for data, addr in await sock.recv_batch(64):
            sock.send_to(data, addr)

On a ringline loop the socket lives on the ring (``ringline._net.udp``:
multishot RECVMSG on its own provided-buffer ring, one SENDMSG per
datagram, several in flight); on any other asyncio loop the portable backend
(``ringline.portable.udp``) gives the same interface through asyncio
datagram endpoints.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from typing import Any, cast

from ringline import _argcheck
from ringline.config import Config
from ringline.portable import udp as _portable

try:
    from ringline._net import udp as _udp
except ImportError:  # a pure-Python install: the portable backend only
    _udp = None  # type: ignore[assignment]

__all__ = ["DatagramSocket", "bind_udp", "connect_udp"]


class DatagramSocket(abc.ABC):
    """A UDP socket of ringline's native API, on either backend.

    Made by :func:`bind_udp` and :func:`connect_udp`.  Received datagrams
    wait in a bounded queue (``queue_limit``); one that finds it full is
    dropped and counted (``dropped``).  Only one coroutine may wait for
    datagrams at a time.  States: open -> closing (``close()``) -> closed.
    """

    __slots__ = ()

    @abc.abstractmethod
    def recv_from(self) -> Awaitable[tuple[bytes, Any]]:
        """The next datagram and its sender: ``(bytes, address)``."""

    @abc.abstractmethod
    def recv(self) -> Awaitable[bytes]:
        """The next datagram's bytes (for a connected socket)."""

    @abc.abstractmethod
    def recv_batch(self, max_n: int = 64) -> Awaitable[list[tuple[bytes, Any]]]:
        """Whatever has arrived, at most ``max_n`` datagrams (waits for one)."""

    @abc.abstractmethod
    def with_datagram(self, fn: Callable[[memoryview, Any], Any]) -> Awaitable[Any]:
        """``fn(view, address)`` on the next datagram, in place (no copy on
        the io_uring backend); the view must not outlive the call."""

    @abc.abstractmethod
    def send_to(self, data: Any, addr: Any, *, segment_size: int = 0) -> None:
        """Queue one datagram to ``addr``; errors surface on ``drain()``."""

    @abc.abstractmethod
    def send(self, data: Any, *, segment_size: int = 0) -> None:
        """Queue one datagram to the connected peer."""

    @abc.abstractmethod
    def send_to_async(self, data: Any, addr: Any, *, segment_size: int = 0
                      ) -> Awaitable[int]:
        """Send one datagram; awaitable of the byte count."""

    @abc.abstractmethod
    def drain(self) -> Awaitable[None]:
        """Wait for queued sends; raise the first unreported send error."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop receiving, let queued sends drain, close the socket."""

    @abc.abstractmethod
    def wait_closed(self) -> Awaitable[None]:
        """Wait until the socket is closed."""

    @property
    @abc.abstractmethod
    def local_addr(self) -> Any:
        """The bound address, as ``socket.getsockname()`` gives it."""

    @property
    @abc.abstractmethod
    def peer_addr(self) -> Any:
        """A connected socket's peer (``connect_udp``), else None."""

    @property
    @abc.abstractmethod
    def closed(self) -> bool:
        """True once ``close()`` was called."""

    @property
    @abc.abstractmethod
    def queued(self) -> int:
        """Datagrams received and not yet taken."""

    @abc.abstractmethod
    def statistics(self) -> dict[str, int]:
        """This socket's counters: datagrams_in/out, dropped, truncated,
        send_errors, queued, sends in flight and pending, enobufs."""

    @abc.abstractmethod
    def fileno(self) -> int:
        """The socket's fd (-1 once closed on the io_uring backend)."""


DatagramSocket.register(_portable.DatagramSocket)
if _udp is not None:
    DatagramSocket.register(_udp.DatagramSocket)


def _ringline_loop() -> Any:
    from ringline.native.serve import _ringline_loop as rl
    return rl()


def _check_sizes(recv_buffers: int, max_datagram: int, queue_limit: int | None) -> None:
    if not isinstance(recv_buffers, int) or recv_buffers < 1 or recv_buffers & (recv_buffers - 1):
        raise ValueError(f"recv_buffers must be a power of two (got {recv_buffers!r})")
    if not isinstance(max_datagram, int) or not 1 <= max_datagram <= 65535:
        raise ValueError(f"max_datagram must be 1..65535 (got {max_datagram!r})")
    if queue_limit is not None and (not isinstance(queue_limit, int) or queue_limit < 1):
        raise ValueError(f"queue_limit must be >= 1 (got {queue_limit!r})")


async def bind_udp(host: str | None, port: int = 0, *, reuse_port: bool = False,
                   config: Config | None = None, recv_buffers: int = 256,
                   max_datagram: int = 65535, queue_limit: int | None = None,
                   gro: bool = False) -> DatagramSocket:
    """A UDP socket bound to ``host:port`` (port 0: ephemeral; see
    ``local_addr``), receiving at once.

    ``reuse_port`` sets SO_REUSEPORT (also when ``config.reuse_port``), so
    several workers can bind the same port.  Receive side (io_uring
    backend): ``recv_buffers`` provided buffers (a power of two) of room for
    ``max_datagram`` payload bytes each (longer datagrams are dropped and
    counted as ``truncated``); ``queue_limit`` datagrams may wait (default:
    7/8 of the buffers); ``gro`` turns on UDP_GRO (the kernel may coalesce
    a flow's datagrams; they are split again before you see them).
    """
    _argcheck.host_arg(host, "bind_udp()")
    _argcheck.port_arg(port, "bind_udp()")
    _argcheck.config_arg(config, "bind_udp()")
    _check_sizes(recv_buffers, max_datagram, queue_limit)
    loop = _ringline_loop()
    reuse = bool(reuse_port or (config is not None and config.reuse_port))
    if loop is None or _udp is None:
        return cast(DatagramSocket, await _portable.bind_udp(
            host, port, reuse_port=reuse, queue_limit=queue_limit or _queue_default(recv_buffers)))
    family, addr = await _portable.resolve_udp(loop, host, port, True)
    sock = _portable.make_udp_socket(family, addr, reuse_port=reuse, gro=gro)
    try:
        return cast(DatagramSocket, _udp.open_socket(
            loop, sock, recv_buffers=recv_buffers, max_datagram=max_datagram,
            queue_limit=queue_limit or 0, gro=gro))
    except BaseException:
        sock.close()
        raise


def _queue_default(recv_buffers: int) -> int:
    return recv_buffers - recv_buffers // 8 if recv_buffers > 8 else recv_buffers


async def connect_udp(host: str, port: int, *, recv_buffers: int = 64,
                      max_datagram: int = 65535, queue_limit: int | None = None
                      ) -> DatagramSocket:
    """A UDP socket connected to ``host:port``: ``send(data)`` and
    ``recv()`` talk to that peer only (the kernel filters other senders;
    an ICMP port-unreachable is raised by the next ``recv``)."""
    _argcheck.host_arg(host, "connect_udp()", optional=False)
    _argcheck.port_arg(port, "connect_udp()")
    _check_sizes(recv_buffers, max_datagram, queue_limit)
    loop = _ringline_loop()
    if loop is None or _udp is None:
        return cast(DatagramSocket, await _portable.connect_udp(
            host, port, queue_limit=queue_limit or _queue_default(recv_buffers)))
    family, addr = await _portable.resolve_udp(loop, host, port, False)
    sock = _portable.make_udp_socket(family, None, connect_addr=addr)
    try:
        return cast(DatagramSocket, _udp.open_socket(
            loop, sock, peer=sock.getpeername(), recv_buffers=recv_buffers,
            max_datagram=max_datagram, queue_limit=queue_limit or 0))
    except BaseException:
        sock.close()
        raise
