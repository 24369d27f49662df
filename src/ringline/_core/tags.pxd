# The completion-tag scheme of the loop's ring (every SQE of it).  The NVMe
# side ring (files/nvme_ring.pyx) is a ring of its own, with 128-byte SQEs
# and 32-byte CQEs, and numbers its commands by a sequence instead.
#
# Every SQE's user_data is a tag:   op (8 bits) | gen (24 bits) | slot (32 bits)
#
#   op    what the loop submitted (an Op value, one per opcode); checked
#         against the slot's owner in debug builds.
#   gen   the slot's generation when the SQE was prepared.  A slot's generation
#         only grows (mod 2**24); a CQE whose gen differs from the slot's current
#         one is stale: its operation already finished and the slot was reused
#         (pitfalls.md #3).  Stale CQEs are normal and are dropped (and counted).
#   slot  index into the loop's table of in-flight operations, or NO_SLOT for
#         fire-and-forget SQEs (cancel requests) whose result nobody reads.
from libc.stdint cimport uint64_t, uint32_t

cpdef enum Op:
    # one value per kind of operation the loop submits
    NOP = 1
    WAKEUP_READ = 2      # eventfd read for call_soon_threadsafe
    CANCEL = 3           # ASYNC_CANCEL (fire-and-forget)
    TIMEOUT = 4
    ACCEPT = 5           # multishot accept
    RECV = 6             # multishot recv, provided buffers
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
    OPENAT = 17          # files: one Op per opcode from here on
    URING_CMD = 18       # NVMe passthrough
    FILES_UPDATE = 19
    SOCKET = 20          # socket into the fixed file table
    FD_INSTALL = 21      # temporary process fd for a fixed descriptor
    READ = 22
    READ_FIXED = 23      # into a registered buffer
    WRITE = 24
    WRITE_FIXED = 25     # from a registered buffer
    READV = 26
    WRITEV = 27
    FSYNC = 28
    STATX = 29
    UNLINKAT = 30
    RENAMEAT = 31
    MKDIRAT = 32

cdef enum:
    TAG_OP_SHIFT = 56
    TAG_GEN_SHIFT = 32
    TAG_GEN_MASK = 0xFFFFFF
    TAG_SLOT_MASK = 0xFFFFFFFF
    NO_SLOT = 0xFFFFFFFF

cdef inline uint64_t tag_encode(unsigned op, uint32_t slot, uint32_t gen) noexcept nogil:
    return ((<uint64_t>op) << TAG_OP_SHIFT) | ((<uint64_t>(gen & TAG_GEN_MASK)) << TAG_GEN_SHIFT) | <uint64_t>slot

cdef inline unsigned tag_op(uint64_t tag) noexcept nogil:
    return <unsigned>(tag >> TAG_OP_SHIFT)

cdef inline uint32_t tag_gen(uint64_t tag) noexcept nogil:
    return <uint32_t>((tag >> TAG_GEN_SHIFT) & TAG_GEN_MASK)

cdef inline uint32_t tag_slot(uint64_t tag) noexcept nogil:
    return <uint32_t>(tag & TAG_SLOT_MASK)
