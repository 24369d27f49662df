"""Type stubs for the native connection (native/connection.pyx).

Received bytes are copied once, from the kernel's provided buffer into the
connection's accumulator (or, for a ``recv`` already waiting on an empty
buffer, straight into the ``bytes`` it returns); ``with_data`` hands a parser a view of it, ``recv``
and ``recv_exactly`` return ``bytes``.  Sends keep call order on the wire.
"""

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, final

from typing_extensions import Buffer

from ringline._core.loop import Loop
from ringline._net.stream import Stream
from ringline._tls import TLSInfo
from ringline.native.tls import TLSLayer

@final
class Connection(Stream):
    """A TCP (or Unix stream) connection on the ring.

    Made by :func:`ringline.serve` (one per accepted socket, handed to the
    handler) and :func:`ringline.connect`; ``Connection()`` raises TypeError.

    States: open -> closing (``close()`` called: queued sends drain, then the
    receive is cancelled) -> closed (the fd is closed).  ``abort()`` skips the
    drain.  Only one coroutine may wait for received data at a time.

    ``recv``, ``recv_exactly`` and ``with_data`` return a single-use
    awaitable, not a coroutine: nothing is read until it is awaited, and a
    receive cancelled while waiting consumes nothing.  Await it directly or
    hand it to ``asyncio.ensure_future``/``wait_for`` (``create_task`` wants
    a coroutine).
    """

    def with_data(self, parse: Callable[[memoryview], int | None]) -> Awaitable[int]:
        """Call ``parse(view)`` on everything buffered until it consumes bytes.

        ``parse`` gets a memoryview of all bytes received and not yet consumed
        and returns how many it consumed (0 or None: it needs more; the call
        then waits for more data and calls ``parse`` again).  Resolves with
        that count once it is positive.  At end of stream ``parse`` sees what
        is left (possibly an empty view) and 0 is returned unless it consumes
        something.  A slice of the view kept after ``parse`` returns stays
        valid and unchanged.

        Raises ValueError if ``parse`` claims more bytes than were buffered,
        ReceiveLimitExceeded if ``parse`` still needs more while
        ``Config.recv_accumulator_limit`` bytes are buffered (receiving pauses
        at that limit until the handler consumes), and the stream's error
        (e.g. ConnectionResetError) at end of stream when one occurred.
        """
    def recv(self, max_bytes: int = 65536) -> Awaitable[bytes]:
        """Return up to ``max_bytes`` received bytes (waiting for at least one).

        Returns ``b""`` at end of stream; raises the stream's error (e.g.
        ConnectionResetError) if it ended with one.  ValueError (from the
        call itself) if ``max_bytes`` is not positive.
        """
    def recv_exactly(self, n: int) -> Awaitable[bytes]:
        """Return exactly ``n`` bytes, waiting until that many arrived.

        Raises asyncio.IncompleteReadError (carrying the partial bytes) if the
        stream ends first, the stream's error if it ended with one, and
        ReceiveLimitExceeded if ``n`` is beyond ``Config.recv_accumulator_limit``.
        """
    def send_nowait(self, data: Buffer) -> None:
        """Queue ``data`` behind earlier sends and return at once.

        ``bytes`` are sent from the object itself (immutable, pinned until the
        kernel is done); other buffers (bytearray, memoryview, ...) are copied
        into the send pool, so the caller may reuse them at once
        (SendPoolExhausted if the pool has no room).  Order on the wire is the
        order of calls.  Raises ConnectionClosed after close(), abort(),
        shutdown_write() or a send error.  Use :meth:`drain` for back-pressure.
        """
    def send(self, data: Buffer) -> asyncio.Future[int]:
        """Queue ``data`` like :meth:`send_nowait`; the returned future resolves
        with its byte count once the kernel has taken all of it, or fails
        with the send's error (ConnectionAbortedError after abort())."""
    def send_parts(self, parts: Iterable[Buffer]) -> asyncio.Future[int]:
        """Send several buffers back to back as one logical send (gathered
        into one SENDMSG where they fit); the future resolves with the total
        byte count."""
    def send_chain(self, parts: Iterable[Buffer]) -> asyncio.Future[int]:
        """Send ``parts`` as one IO_LINKed chain (one SQE each), in its turn
        in the connection's send order; the total, or the first error.  The
        parts are held (not copied) until the future resolves."""
    def drain(self) -> Awaitable[None]:
        """Wait until queued bytes fall to the send queue's low-water mark.

        Returns at once while at most ``Config.send_queue_limit`` bytes are
        queued; raises the send error if sending failed.  Several coroutines
        may drain at once.  Returns an awaitable (not a coroutine) that looks
        at the queue when it is awaited.
        """
    def _shutdown_read(self) -> None: ...
    def shutdown_write(self) -> None:
        """Send FIN after everything queued so far (half-close); receiving
        goes on.  Later sends raise ConnectionClosed."""
    def close(self) -> None:
        """Close gracefully: queued sends drain, then FIN (not RST).
        Returns at once; see :meth:`wait_closed`."""
    def abort(self) -> None:
        """Close at once, dropping queued sends: their futures fail with
        ConnectionAbortedError."""
    async def wait_closed(self) -> None:
        """Wait until the connection is fully closed (its fd closed)."""
    @property
    def peer_addr(self) -> Any:
        """The peer's address as ``socket.getpeername()`` gives it (a
        ``(host, port)`` tuple for TCP), or None if unavailable."""
    @property
    def local_addr(self) -> Any:
        """The local address as ``socket.getsockname()`` gives it, or None."""
    @property
    def is_outbound(self) -> bool:
        """True for connections made by :func:`ringline.connect`, False for
        accepted ones."""
    @property
    def closed(self) -> bool:
        """The connection is fully closed: fd closed, nothing in flight."""
    @property
    def buffered(self) -> int:
        """Bytes received and not yet consumed."""
    @property
    def queued(self) -> int:
        """Bytes queued for sending and not yet taken by the kernel."""
    @property
    def fileno(self) -> int:
        """The socket's fd (a property, not a method); -1 once closed and
        for a fixed descriptor (it has no process fd)."""
    def tls_info(self) -> TLSInfo | None:
        """The negotiated TLS parameters (version, cipher, ALPN, SNI, the
        peer's certificate) of a connection made with ``ssl=``; None for a
        plain connection and before the handshake completed."""
    def _tls_handshake(self) -> asyncio.Future[None] | None: ...
    def _set_addresses(self, peer: Any, local: Any) -> None: ...

def attach_tls(c: Connection, layer: TLSLayer) -> None:
    """Put ``layer`` over ``c`` and start its handshake (right after
    new_connection)."""

def new_connection(
    loop: Loop, fd: int, family: int, outbound: bool, peer: Any = None,
    fixed: bool = False, local: Any = None,
) -> Connection:
    """Wrap a connected non-blocking socket fd, or a fixed-table slot with
    ``fixed`` (ownership passes to the connection), and start receiving."""
