"""Type stubs for the compiled completion-tag module (_core/tags.pyx).

Every SQE's ``user_data`` is a tag: ``op (8 bits) | gen (24 bits) | slot (32 bits)``.
"""

import enum

GEN_BITS: int
SLOT_BITS: int
OP_BITS: int
NO_SLOT: int
"""The slot of fire-and-forget SQEs whose completion nobody reads (2**32 - 1)."""
GEN_MASK: int

class Op(enum.IntEnum):
    """What the loop submitted: the op field of a tag."""

    NOP = 1
    WAKEUP_READ = 2
    CANCEL = 3
    TIMEOUT = 4
    ACCEPT = 5
    RECV = 6
    SEND = 7
    SEND_ZC = 8
    SENDMSG_ZC = 9
    CONNECT = 10
    LINK_TIMEOUT = 11
    CLOSE = 12
    SHUTDOWN = 13
    POLL = 14
    RECVMSG = 15
    SENDMSG = 16
    OPENAT = 17
    URING_CMD = 18
    FILES_UPDATE = 19
    SOCKET = 20
    FD_INSTALL = 21
    READ = 22
    READ_FIXED = 23
    WRITE = 24
    WRITE_FIXED = 25
    READV = 26
    WRITEV = 27
    FSYNC = 28
    STATX = 29
    UNLINKAT = 30
    RENAMEAT = 31
    MKDIRAT = 32

def encode(op: int, slot: int, gen: int) -> int:
    """Pack ``op``, ``slot`` and ``gen`` (taken modulo 2**24) into a tag."""

def decode(tag: int) -> tuple[int, int, int]:
    """Return ``(op, slot, gen)`` of a tag."""
