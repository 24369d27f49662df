"""``ringline.Connection``: the native API's connection, on either backend.

An abstract base class (pure Python, so it exists on a pure-Python install
too) with the two concrete classes registered as virtual subclasses: the
io_uring one (``ringline.native.connection.Connection``, a compiled class,
which cannot take a Python base) and the portable backend's
(``ringline.portable.Connection``).  So ``isinstance(conn,
ringline.Connection)`` holds for every connection ``serve`` or ``connect``
makes, and type checkers see the API both implement.  Nothing inherits from
it: the methods below only declare that API (the full text is in each
class and in docs/guide.md).
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

__all__ = ["Connection"]


class Connection(abc.ABC):
    """A TCP (or Unix stream) connection of ringline's native API.

    Made by :func:`ringline.serve` (one per accepted socket) and
    :func:`ringline.connect`, on the io_uring backend or the portable one.
    States: open -> closing (``close()``: queued sends drain, then FIN) ->
    closed.  Only one coroutine may wait for received data at a time.
    """

    __slots__ = ()
    # Abstract only to say that nothing implements them here: the concrete
    # classes are registered, not derived.

    @abc.abstractmethod
    def recv(self, max_bytes: int = 65536) -> Awaitable[bytes]:
        """Up to ``max_bytes`` received bytes (at least one); ``b""`` at end of stream."""
        raise NotImplementedError

    @abc.abstractmethod
    def recv_exactly(self, n: int) -> Awaitable[bytes]:
        """Exactly ``n`` bytes (IncompleteReadError if the stream ends first)."""
        raise NotImplementedError

    @abc.abstractmethod
    def with_data(self, parse: Callable[[memoryview], int | None]) -> Awaitable[int]:
        """``parse(view)`` on everything buffered until it consumes bytes; their count."""
        raise NotImplementedError

    @abc.abstractmethod
    def send_nowait(self, data: Any) -> None:
        """Queue ``data`` behind earlier sends and return at once."""
        raise NotImplementedError

    @abc.abstractmethod
    def send(self, data: Any) -> asyncio.Future[int]:
        """Queue ``data``; resolves with its byte count once the kernel took it all."""
        raise NotImplementedError

    @abc.abstractmethod
    def send_parts(self, parts: Iterable[Any]) -> asyncio.Future[int]:
        """Several buffers back to back as one send; resolves with the total."""
        raise NotImplementedError

    @abc.abstractmethod
    def send_chain(self, parts: Iterable[Any]) -> asyncio.Future[int]:
        """Parts as one IO_LINKed chain in the send order; the total or the first error."""
        raise NotImplementedError

    @abc.abstractmethod
    def drain(self) -> Awaitable[None]:
        """Wait while more than ``Config.send_queue_limit`` bytes are queued."""
        raise NotImplementedError

    @abc.abstractmethod
    def shutdown_write(self) -> None:
        """FIN after everything queued so far; receiving goes on."""
        raise NotImplementedError

    @abc.abstractmethod
    def close(self) -> None:
        """Close gracefully: queued sends drain, then FIN."""
        raise NotImplementedError

    @abc.abstractmethod
    def abort(self) -> None:
        """Close at once, dropping queued sends."""
        raise NotImplementedError

    @abc.abstractmethod
    async def wait_closed(self) -> None:
        """Wait until the connection is fully closed."""
        raise NotImplementedError

    @property
    @abc.abstractmethod
    def peer_addr(self) -> Any:
        """The peer's address, as ``socket.getpeername()`` gives it."""
        raise NotImplementedError

    @property
    @abc.abstractmethod
    def local_addr(self) -> Any:
        """The local address, as ``socket.getsockname()`` gives it."""
        raise NotImplementedError

    @property
    @abc.abstractmethod
    def is_outbound(self) -> bool:
        """Made by ``connect`` (not accepted)."""
        raise NotImplementedError

    @property
    @abc.abstractmethod
    def closing(self) -> bool:
        """Closing or closed."""
        raise NotImplementedError

    @property
    @abc.abstractmethod
    def closed(self) -> bool:
        """Fully closed."""
        raise NotImplementedError

    @property
    @abc.abstractmethod
    def buffered(self) -> int:
        """Bytes received and not yet consumed."""
        raise NotImplementedError

    @property
    @abc.abstractmethod
    def queued(self) -> int:
        """Bytes queued for sending that the kernel has not taken yet."""
        raise NotImplementedError

    @property
    @abc.abstractmethod
    def fileno(self) -> int:
        """The socket's fd (-1 for a fixed descriptor or once closed)."""
        raise NotImplementedError


Connection.__module__ = "ringline"


def _register() -> None:
    from ringline.portable.connection import Connection as Portable

    Connection.register(Portable)
    try:
        from ringline.native.connection import Connection as Ring
    except ImportError:     # a pure-Python install: no compiled class
        return
    Connection.register(Ring)


_register()
