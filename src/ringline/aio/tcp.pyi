"""Type stubs for the asyncio face (aio/tcp.pyx).

``TCPTransport`` is what ringline's ``loop._make_socket_transport`` returns:
asyncio's create_connection, create_server, connect_accepted_socket,
create_unix_* and streams all run on it.  It implements the
``asyncio.Transport`` methods but is not a subclass of it.
"""

import asyncio
import socket
from collections.abc import Iterable
from typing import Any

from typing_extensions import Buffer

from ringline._core.loop import Loop
from ringline._net.stream import Stream

class TCPTransport(Stream):
    """asyncio.Transport over a ring stream; made by the event loop only."""

    _start_tls_compatible: bool
    _sendfile_compatible: Any
    @property
    def _sock(self) -> socket.socket: ...
    def _force_close(self, exc: BaseException | None) -> None: ...
    def _make_empty_waiter(self) -> asyncio.Future[None]: ...
    def _reset_empty_waiter(self) -> None: ...

    def _connection_made(self) -> None: ...
    def _call_connection_lost(self, exc: BaseException | None) -> None: ...
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """'socket', 'sockname', 'peername' and whatever the loop passed in."""
    def is_closing(self) -> bool: ...
    def close(self) -> None:
        """Close after the queued data is sent; connection_lost(None) follows."""
    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None: ...
    def get_protocol(self) -> asyncio.BaseProtocol: ...
    def is_reading(self) -> bool: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None:
        """Resume reading; bytes that arrived while paused are delivered from
        the ready queue, never from inside this call."""
    def _deliver_pending(self) -> None: ...
    def write(self, data: Buffer) -> None:
        """Queue ``data`` (copied unless it is ``bytes``); sent with the loop's
        next io_uring_enter, never synchronously."""
    def writelines(self, list_of_data: Iterable[Buffer]) -> None: ...
    def write_eof(self) -> None:
        """Send FIN after the queued data."""
    def can_write_eof(self) -> bool: ...
    def abort(self) -> None:
        """Close at once, dropping queued data."""
    def get_write_buffer_size(self) -> int: ...
    def get_write_buffer_limits(self) -> tuple[int, int]:
        """``(low, high)``."""
    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None: ...

def make_socket_transport(
    loop: Loop,
    sock: socket.socket,
    protocol: asyncio.BaseProtocol,
    waiter: asyncio.Future[None] | None = None,
    extra: dict[str, Any] | None = None,
    server: Any = None,
) -> TCPTransport:
    """Wrap a connected socket (it stays owned by the transport) in a ring transport."""
