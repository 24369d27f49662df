"""Type stubs for the compiled byte-stream machinery (_net/stream.pyx).

One machinery under both faces of ringline: the native ``Connection``
(native/connection.pyx) and the asyncio ``TCPTransport``
(aio/tcp.pyx).  None of these classes can be constructed from
Python (calling them raises TypeError); the loop and the functions below make
them.
"""

import asyncio
from collections.abc import Callable
from typing import Any, final

from ringline._core.loop import Completion, Loop, PreEnterHook
from ringline.config import Config

@final
class BufRing:
    """The loop's provided-buffer ring (IORING_REGISTER_PBUF_RING) for receives."""

    @property
    def enobufs(self) -> int:
        """Times a multishot receive found the ring empty (and re-armed later)."""

@final
class SendPool:
    """Fixed-size slots that hold copies of mutable send payloads."""

    @property
    def slots_free(self) -> int: ...

@final
class NetState:
    """Per-loop state shared by every stream: buffer ring, send pool, config."""

    @property
    def bufring(self) -> BufRing: ...
    @property
    def pool(self) -> SendPool: ...
    @property
    def config(self) -> Config: ...
    @property
    def streams(self) -> set[Stream]: ...
    def shutdown_streams(self) -> None:
        """Abort every open stream (loop close)."""
    def release(self) -> None:
        """Unmap the buffers once the loop's ring is closed."""
    def statistics(self) -> dict[str, int]:
        """streams, enobufs, send_pool_free, direct, fixed_live, table_full."""
    def use_fixed_files(self) -> bool:
        """Whether native connections use the fixed file table (decided and
        registered on first call)."""
    @property
    def fixed_files(self) -> int:
        """-1 undecided, 0 plain fds, 1 the fixed file table."""
    @property
    def fixed_reason(self) -> str | None:
        """Why the native face uses plain fds, or None."""
    @property
    def fixed_live(self) -> int:
        """Fixed-table slots holding a socket (close CQE not yet in)."""
    @property
    def table_full(self) -> int:
        """Accepts/sockets refused because the table was full (ENFILE)."""
    @property
    def file_slot_base(self) -> int:
        """First fixed-table slot reserved for files."""

@final
class Chunk:
    """One queued send (internal)."""

class RecvOp(Completion):
    """A stream's multishot receive (internal)."""

class SendOp(Completion):
    """A stream's SEND/SENDMSG in flight (internal)."""

@final
class ZcSendOp(Completion):
    """One SEND_ZC, pinned until its notification CQE (internal)."""

@final
class ConnectOp(Completion):
    """IORING_OP_CONNECT, optionally linked to a LINK_TIMEOUT (internal)."""

@final
class _LinkTimeout(Completion): ...

class Stream(PreEnterHook):
    """A connected socket on the ring; the base of Connection and TCPTransport."""

    @property
    def fd(self) -> int:
        """The socket's file descriptor (fixed-table slot when ``fixed``); -1 once closed."""
    @property
    def fixed(self) -> bool:
        """``fd`` is a direct descriptor (a slot in the ring's file table)."""
    def with_real_fd(self, fn: Callable[[int], Any]) -> asyncio.Future[Any]:
        """Future of ``fn(fd)`` with a process fd for this socket (a
        temporary one for a direct descriptor, closed after ``fn``)."""
    @property
    def queued_bytes(self) -> int:
        """Bytes queued for sending and not yet taken by the kernel."""
    @property
    def closing(self) -> bool:
        """Closing or closed (close(), abort() or a fatal error)."""
    @property
    def closed(self) -> bool:
        """The socket is closed and nothing is in flight on it."""
    def _rearm_after_enobufs(self) -> None: ...

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

def net_state_for(loop: Loop) -> NetState:
    """The loop's NetState (created on first use; the loop must be running)."""

def start_accepting(
    loop: Loop, listen_fd: int, on_fd: Callable[[int], object], fixed_files: bool = False
) -> AcceptOp:
    """Arm a multishot accept on ``listen_fd``; ``on_fd(fd)`` per connection
    (``on_fd(slot)`` with ``fixed_files``)."""

def close_slot(loop: Loop, slot: int) -> None:
    """Close a direct descriptor no stream owns (IORING_OP_CLOSE)."""

def socket_fixed(loop: Loop, family: int, type_: int = ..., proto: int = 0) -> asyncio.Future[int]:
    """Create a socket straight into the fixed file table; a future of its slot."""

def install_call(
    loop: Loop, slot: int, fn: Callable[[int], Any] | None, nodelay: bool = False
) -> asyncio.Future[Any]:
    """Future of ``fn(fd)`` with a temporary fd for direct descriptor
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
