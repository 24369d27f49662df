"""Type stubs for socket operations on the ring (_net/sockops.pyx)."""

import asyncio
from collections.abc import Callable
from typing import Any, final

from ringline._core.loop import Completion, Loop

@final
class ConnectOp(Completion):
    """IORING_OP_CONNECT, optionally linked to a LINK_TIMEOUT (internal)."""

@final
class _LinkTimeout(Completion): ...

@final
class AcceptOp(Completion):
    """A multishot accept on a listening socket (made by :func:`start_accepting`)."""

    @property
    def accepted(self) -> int:
        """Connections accepted so far."""
    @property
    def errors(self) -> int:
        """Accept completions that carried an error."""
    @property
    def fixed_files(self) -> bool:
        """New sockets go to the fixed file table (``on_fd`` gets slots)."""
    @property
    def table_full(self) -> int:
        """Accepts that found the fixed file table full."""
    def rearm(self) -> None:
        """Arm the accept again (after its multishot ended)."""
    def stop(self) -> None:
        """Stop accepting; the final CQE of the cancelled accept still comes."""

def set_nodelay(fd: int) -> None:
    """Set TCP_NODELAY on ``fd``."""

def start_accepting(
    loop: Loop, listen_fd: int, on_fd: Callable[[int], object], fixed_files: bool = False
) -> AcceptOp:
    """Arm a multishot accept on ``listen_fd``; ``on_fd(fd)`` per connection
    (``on_fd(slot)`` with ``fixed_files``)."""

def close_slot(loop: Loop, slot: int) -> None:
    """Close a fixed descriptor no stream owns (IORING_OP_CLOSE)."""

def socket_fixed(loop: Loop, family: int, type_: int = ..., proto: int = 0) -> asyncio.Future[int]:
    """Create a socket straight into the fixed file table; a future of its slot."""

def install_call(
    loop: Loop, slot: int, fn: Callable[[int], Any] | None, nodelay: bool = False
) -> asyncio.Future[Any]:
    """Future of ``fn(fd)`` with a temporary fd for fixed descriptor
    ``slot``; with ``fn`` None, of its (peer, local) addresses (TCP_NODELAY
    set first if ``nodelay``)."""

def connect_fd(
    loop: Loop,
    fd: int,
    family: int,
    address: tuple[Any, ...] | str | bytes,
    timeout: float | None = None,
    fixed: bool = False,
) -> asyncio.Future[None]:
    """Start a connect of ``fd`` to ``address``; return a future (None or error).

    With ``timeout`` the connect SQE is linked to a LINK_TIMEOUT; expiry
    cancels the connect and the future raises TimeoutError.
    """
