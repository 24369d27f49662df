"""Type stubs for the network layer's buffers (_net/buffers.pyx)."""

from typing import final

@final
class BufRing:
    """The loop's provided-buffer ring (IORING_REGISTER_PBUF_RING) for receives."""

    @property
    def enobufs(self) -> int:
        """Times a multishot receive found the ring empty (and re-armed later)."""
    def out_of_ring(self) -> int:
        """Buffers not in the kernel's ring now (-1: the kernel cannot say)."""

@final
class SendPool:
    """Fixed-size slots that hold copies of mutable send payloads."""

    @property
    def slots_free(self) -> int: ...
    @property
    def exhausted(self) -> int:
        """Sends refused with SendPoolExhausted (too few free slots)."""

def big_stats() -> tuple[int, int]:
    """(pooled big buffers, of them free): for tests."""
