"""Type stubs for linked send chains (_net/chain.pyx): the machinery of
``Connection.send_chain``.  Nothing here is constructed from Python."""

from typing import final

from ringline._net.stream import SendUnit

def _set_split(n: int) -> int:
    """Tests only: cap every chain SQE at ``n`` bytes (0 = off); returns the old value."""

@final
class ChainSend(SendUnit):
    """One queued chain: its parts, held until its last CQE."""
