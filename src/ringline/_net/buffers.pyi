"""Type stubs for the network layer's buffers (_net/buffers.pyx)."""

from typing import final

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
