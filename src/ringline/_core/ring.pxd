# The ring: one io_uring instance, its mmap'd SQ/CQ, enter and register.
# Hot accessors are cdef inline here so the loop compiles them in place.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, uint64_t
from libc.string cimport memset
from ringline._core.abi.uring cimport *


cdef struct RingState:
    int fd
    unsigned setup_flags
    unsigned features
    # SQ (shared with the kernel)
    uint32_t *sq_khead        # kernel-written consumer index
    uint32_t *sq_ktail        # our producer index, published with release
    uint32_t *sq_kflags       # NEED_WAKEUP / CQ_OVERFLOW / TASKRUN
    uint32_t *sq_karray
    uint32_t sq_mask
    uint32_t sq_entries
    uint32_t sqe_tail         # Invariant: sqe_tail - *sq_khead <= sq_entries
    char *sqes                # array of 64- or 128-byte SQEs
    unsigned sqe_shift        # 6 (64 B) or 7 (128 B)
    # CQ (shared with the kernel)
    uint32_t *cq_khead        # our consumer index, published with release
    uint32_t *cq_ktail        # kernel-written producer index
    uint32_t *cq_koverflow
    uint32_t cq_mask
    uint32_t cq_entries
    char *cqes
    unsigned cqe_shift        # 4 (16 B) or 5 (32 B)
    # mappings
    void *sq_map
    size_t sq_map_len
    void *cq_map
    size_t cq_map_len
    void *sqe_map
    size_t sqe_map_len


cdef class Ring:
    """One io_uring: setup, mmap'd queues, submission and registration.

    Invariant: only the thread that created the ring submits to it
    (IORING_SETUP_SINGLE_ISSUER); the loop that owns it is that thread.
    """
    cdef RingState r
    cdef readonly bint closed
    cdef readonly bint sqpoll
    cdef readonly bint defer_taskrun
    cdef readonly bint disabled       # created with R_DISABLED, not yet enabled
    cdef readonly object probe_ops      # frozenset of supported opcode numbers
    cdef public uint64_t sqes_submitted  # counted at enter (kernel consumed)
    cdef public uint64_t enters         # io_uring_enter calls made
    cdef public uint64_t overflow_flushes
    cdef public uint64_t sq_full_submits
    cdef public uint64_t submit_failures  # io_uring_enter errors (retried or raised), RingFull

    @staticmethod
    cdef Ring create(unsigned entries, unsigned cq_entries, unsigned flags,
                     int sq_thread_cpu, unsigned sq_thread_idle)
    cdef rl_sqe* get_sqe(self) except NULL
    cdef int enter(self, unsigned min_complete, double timeout) except -2
    cdef int reserve(self, unsigned n) except -1
    cdef int flush_overflow(self) except -1
    cdef int register(self, unsigned opcode, void *arg, unsigned nr) except -1
    cdef void close_ring(self) noexcept
    cdef int enable(self) except -1
    cdef object _probe(self)
    cdef _check(self)


cdef inline uint32_t sq_pending(RingState *r) noexcept nogil:
    """SQEs prepared but not yet consumed by the kernel."""
    return r.sqe_tail - rl_load_acquire(r.sq_khead)


cdef inline bint cq_has_events(RingState *r) noexcept nogil:
    return r.cq_khead[0] != rl_load_acquire(r.cq_ktail)


cdef inline rl_cqe* cq_at(RingState *r, uint32_t idx) noexcept nogil:
    return <rl_cqe*>(r.cqes + ((idx & r.cq_mask) << r.cqe_shift))


cdef inline bint needs_enter_for_events(RingState *r) noexcept nogil:
    """True when completions may be waiting inside the kernel.

    With DEFER_TASKRUN, finished work is only posted to the CQ during an
    io_uring_enter(GETEVENTS); TASKRUN_FLAG makes the kernel raise
    IORING_SQ_TASKRUN in the SQ flags while such work is queued, so an
    iteration with nothing to submit can skip the syscall when it is clear.
    CQ_OVERFLOW means completions are parked in the kernel's overflow list.
    """
    return (rl_load_relaxed(r.sq_kflags) & (RL_SQ_TASKRUN | RL_SQ_CQ_OVERFLOW)) != 0
