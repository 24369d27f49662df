# Readiness on the ring: one POLL_ADD per watched fd, level-triggered.
from libc.stdint cimport uint32_t, int32_t
from ringline._core.loop cimport Loop, Completion


cdef class Poller


cdef class FdPoll(Completion):
    """The readiness watch of one fd (asyncio's reader and writer for it).

    Invariants:
      * at most one POLL_ADD of this fd is in the kernel (``in_flight``);
        ``armed`` is its event mask, 0 when nothing is armed;
      * ``cancel_sent`` => in_flight, and the result of that poll is stale
        (its mask or its file changed): the final CQE only re-arms;
      * ``queued`` => a dispatch of this fd's callbacks is in the ready queue
        or running; the dispatch re-arms when it ends (level-triggered);
      * ``deferred`` => the ring is not enabled yet; the Poller arms it from
        its first callback;
      * registered in ``poller.fds`` while watched or while any of the above
        holds.
    """
    cdef readonly int fd
    cdef Poller poller
    cdef readonly uint32_t want       # POLLIN/POLLOUT asked for by the selector
    cdef readonly uint32_t armed      # mask of the POLL_ADD in flight (0: none)
    cdef readonly bint cancel_sent
    cdef readonly bint queued
    cdef readonly bint deferred
    cdef readonly bint dead           # the kernel refused the fd (EBADF)
    cdef object reader                # asyncio Handle or None
    cdef object writer
    cdef readonly uint32_t fires      # CQEs that carried events (tests)

    cdef int update(self) except -1
    cdef int arm(self) except -1
    cdef int forget(self) except -1


cdef class Poller:
    cdef readonly Loop loop
    cdef readonly dict fds            # fd -> FdPoll
    cdef list deferred                # FdPolls waiting for the ring to be enabled
    cdef bint arm_scheduled
    cdef readonly bint closed
    cdef readonly bint multishot      # measurement mode: edge-ish, see aio/poll.pyx

    cdef int flush_cancels(self) except -1
    cdef int defer(self, FdPoll fp) except -1
