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
from ringline._net.buffers import BufRing, SendPool
from ringline.config import Config

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
    def recv_buffers_out(self) -> int:
        """Provided receive buffers not in the kernel's rings (-1: unknown)."""
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
    #: Accepted connections whose handler started without addresses (no
    #: process fd for their install: EMFILE/ENFILE; native/serve.py).
    addresses_unknown: int
    @property
    def file_slot_base(self) -> int:
        """First fixed-table slot reserved for files."""

@final
class Chunk:
    """One queued send (internal)."""

class SendUnit(Completion):
    """A queued send that sends itself (a linked send chain, _net/chain.pyx)."""

class RecvOp(Completion):
    """A stream's multishot receive (internal)."""

class SendOp(Completion):
    """A stream's SEND/SENDMSG in flight (internal)."""

@final
class ZcSendOp(Completion):
    """One SEND_ZC, pinned until its notification CQE (internal)."""

class Stream(PreEnterHook):
    """A connected socket on the ring; the base of Connection and TCPTransport."""

    @property
    def fd(self) -> int:
        """The socket's file descriptor (fixed-table slot when ``fixed``); -1 once closed."""
    @property
    def fixed(self) -> bool:
        """``fd`` is a fixed descriptor (a slot in the ring's file table)."""
    def with_real_fd(self, fn: Callable[[int], Any]) -> asyncio.Future[Any]:
        """Future of ``fn(fd)`` with a process fd for this socket (a
        temporary one for a fixed descriptor, closed after ``fn``)."""
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

def net_state_for(loop: Loop) -> NetState:
    """The loop's NetState (created on first use; the loop must be running)."""
