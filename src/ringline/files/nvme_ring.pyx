# cython: language_level=3, boundscheck=False, wraparound=False
"""NVMe passthrough: IORING_OP_URING_CMD on a second ring that wakes the loop.

Why a second ring
-----------------
The NVMe driver accepts a passthrough command only from a ring created with
IORING_SETUP_SQE128 (the 72-byte ``struct nvme_uring_cmd`` lives in the SQE's
80-byte command area) and IORING_SETUP_CQE32 (the command's 64-bit result
comes back in the big CQE); ``nvme_uring_cmd_checks`` refuses anything else
with EOPNOTSUPP.  The loop's own ring uses 64-byte SQEs and 16-byte CQEs, half
the memory and cache traffic for everything else, so NVMe commands go to a
``SideRing`` of their own, one per loop, created on the loop's thread.

How its completions wake the loop
---------------------------------
1. The side ring is SINGLE_ISSUER | DEFER_TASKRUN like the loop's ring: the
   driver's completion (an interrupt) queues task work on the side ring, and
   nothing is posted until its owner enters it with GETEVENTS.
2. An eventfd is registered on the side ring (IORING_REGISTER_EVENTFD).  The
   kernel signals it when task work is queued on an empty DEFER_TASKRUN list
   and when CQEs are posted.
3. While commands are in flight, the loop's ring has a READ of that eventfd
   armed (a normal Completion, tag Op.URING_CMD).  A signal completes the
   read, so a loop asleep in io_uring_enter wakes up exactly as it would for
   any of its own completions: no polling, no timer, no extra thread.
4. The read's CQE handler enters the side ring (GETEVENTS: runs the deferred
   work, posting the CQEs), reaps every 32-byte CQE, resolves the futures,
   and re-arms the read while commands remain.  The eventfd is a counter, so
   a signal that arrives between the reap and the re-arm is not lost: the
   re-armed read completes at once.

Submission is batched: commands prepared during one loop iteration are
submitted together by one io_uring_enter on the side ring, from a callback
scheduled with call_soon.

Kernel ownership: a command's buffer, the caller's Py_buffer view of the
data it writes, and its 72-byte command are owned by its NvmeCmd, which the
side ring's table pins (``cmds[user_data]``) until its CQE.  user_data is a
64-bit sequence number that is never reused, so a late CQE can never reach
another command (pitfalls #3, #19).
"""
cimport cython
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, uint64_t, int64_t, uintptr_t
from libc.errno cimport errno
from libc.stdlib cimport free
from libc.string cimport memcpy, memset
from posix.unistd cimport close as c_close

from ringline._core.abi.uring cimport *
from ringline._core.loop cimport Loop, Completion
from ringline._core.ops cimport prep_read, prep_uring_cmd, prep_timeout, prep_cancel
from ringline._core.ring cimport Ring, RingState, cq_at
from ringline._core.tags cimport Op

import collections
import time as _time
from asyncio import Future as _Future

from ringline._core.loop import abandon as _abandon
from ringline.errors import NvmeError, error_from_errno

cdef extern from "stdlib.h" nogil:
    int posix_memalign(void **memptr, size_t alignment, size_t size)

cdef extern from "sys/eventfd.h" nogil:
    int eventfd(unsigned int initval, int flags)
    int EFD_CLOEXEC
    int EFD_NONBLOCK

cdef extern from *:
    """
    #include <stddef.h>
    #include <stdint.h>
    #include <sys/ioctl.h>

    /* struct nvme_uring_cmd of <linux/nvme_ioctl.h> (Linux 5.19+), spelled
       out so that the build does not depend on the kernel headers. */
    typedef struct {
        uint8_t  opcode;
        uint8_t  flags;
        uint16_t rsvd1;
        uint32_t nsid;
        uint32_t cdw2;
        uint32_t cdw3;
        uint64_t metadata;
        uint64_t addr;
        uint32_t metadata_len;
        uint32_t data_len;
        uint32_t cdw10;
        uint32_t cdw11;
        uint32_t cdw12;
        uint32_t cdw13;
        uint32_t cdw14;
        uint32_t cdw15;
        uint32_t timeout_ms;
        uint32_t rsvd2;
    } rl_nvme_uring_cmd;
    _Static_assert(sizeof(rl_nvme_uring_cmd) == 72, "struct nvme_uring_cmd is 72 bytes");

    /* _IOWR(type, nr, size) of <asm-generic/ioctl.h>: dir 3 (read|write) in
       bits 30-31, size in bits 16-29, type in 8-15, nr in 0-7. */
    #define RL_IOWR(type, nr, size) \
        ((3u << 30) | ((unsigned)(size) << 16) | ((unsigned)(type) << 8) | (unsigned)(nr))
    #define RL_NVME_URING_CMD_IO        RL_IOWR('N', 0x80, sizeof(rl_nvme_uring_cmd))
    #define RL_NVME_URING_CMD_IO_VEC    RL_IOWR('N', 0x81, sizeof(rl_nvme_uring_cmd))
    #define RL_NVME_URING_CMD_ADMIN     RL_IOWR('N', 0x82, sizeof(rl_nvme_uring_cmd))
    #define RL_NVME_URING_CMD_ADMIN_VEC RL_IOWR('N', 0x83, sizeof(rl_nvme_uring_cmd))
    #define RL_SQE_CMD_OFFSET 48      /* offsetof(struct io_uring_sqe, cmd) */
    #define RL_REGISTER_EVENTFD 4
    #define RL_UNREGISTER_EVENTFD 5

    /* The kernel's own definitions, when its headers are installed, so the
       tests can hold our layout against them. */
    #if defined(__has_include)
    #  if __has_include(<linux/nvme_ioctl.h>)
    #    include <linux/nvme_ioctl.h>
    #    define RL_HAVE_KERNEL_NVME 1
    #  endif
    #endif
    #ifndef RL_HAVE_KERNEL_NVME
    #  define RL_HAVE_KERNEL_NVME 0
    #endif
    static int rl_kernel_nvme_layout(long *out) {
    #if RL_HAVE_KERNEL_NVME && defined(NVME_URING_CMD_IO)
        out[0] = (long)sizeof(struct nvme_uring_cmd);
        out[1] = offsetof(struct nvme_uring_cmd, opcode);
        out[2] = offsetof(struct nvme_uring_cmd, flags);
        out[3] = offsetof(struct nvme_uring_cmd, rsvd1);
        out[4] = offsetof(struct nvme_uring_cmd, nsid);
        out[5] = offsetof(struct nvme_uring_cmd, cdw2);
        out[6] = offsetof(struct nvme_uring_cmd, cdw3);
        out[7] = offsetof(struct nvme_uring_cmd, metadata);
        out[8] = offsetof(struct nvme_uring_cmd, addr);
        out[9] = offsetof(struct nvme_uring_cmd, metadata_len);
        out[10] = offsetof(struct nvme_uring_cmd, data_len);
        out[11] = offsetof(struct nvme_uring_cmd, cdw10);
        out[12] = offsetof(struct nvme_uring_cmd, cdw11);
        out[13] = offsetof(struct nvme_uring_cmd, cdw12);
        out[14] = offsetof(struct nvme_uring_cmd, cdw13);
        out[15] = offsetof(struct nvme_uring_cmd, cdw14);
        out[16] = offsetof(struct nvme_uring_cmd, cdw15);
        out[17] = offsetof(struct nvme_uring_cmd, timeout_ms);
        out[18] = offsetof(struct nvme_uring_cmd, rsvd2);
        out[19] = (long)(unsigned long)NVME_URING_CMD_IO;
        out[20] = (long)(unsigned long)NVME_URING_CMD_ADMIN;
        return 1;
    #else
        (void)out;
        return 0;
    #endif
    }
    static long rl_our_offsets(long *out) {
        out[0] = (long)sizeof(rl_nvme_uring_cmd);
        out[1] = offsetof(rl_nvme_uring_cmd, opcode);
        out[2] = offsetof(rl_nvme_uring_cmd, flags);
        out[3] = offsetof(rl_nvme_uring_cmd, rsvd1);
        out[4] = offsetof(rl_nvme_uring_cmd, nsid);
        out[5] = offsetof(rl_nvme_uring_cmd, cdw2);
        out[6] = offsetof(rl_nvme_uring_cmd, cdw3);
        out[7] = offsetof(rl_nvme_uring_cmd, metadata);
        out[8] = offsetof(rl_nvme_uring_cmd, addr);
        out[9] = offsetof(rl_nvme_uring_cmd, metadata_len);
        out[10] = offsetof(rl_nvme_uring_cmd, data_len);
        out[11] = offsetof(rl_nvme_uring_cmd, cdw10);
        out[12] = offsetof(rl_nvme_uring_cmd, cdw11);
        out[13] = offsetof(rl_nvme_uring_cmd, cdw12);
        out[14] = offsetof(rl_nvme_uring_cmd, cdw13);
        out[15] = offsetof(rl_nvme_uring_cmd, cdw14);
        out[16] = offsetof(rl_nvme_uring_cmd, cdw15);
        out[17] = offsetof(rl_nvme_uring_cmd, timeout_ms);
        out[18] = offsetof(rl_nvme_uring_cmd, rsvd2);
        out[19] = (long)RL_NVME_URING_CMD_IO;
        out[20] = (long)RL_NVME_URING_CMD_ADMIN;
        return 1;
    }
    """
    ctypedef struct rl_nvme_uring_cmd:
        uint8_t opcode
        uint8_t flags
        uint16_t rsvd1
        uint32_t nsid
        uint32_t cdw2
        uint32_t cdw3
        uint64_t metadata
        uint64_t addr
        uint32_t metadata_len
        uint32_t data_len
        uint32_t cdw10
        uint32_t cdw11
        uint32_t cdw12
        uint32_t cdw13
        uint32_t cdw14
        uint32_t cdw15
        uint32_t timeout_ms
        uint32_t rsvd2
    unsigned RL_NVME_URING_CMD_IO, RL_NVME_URING_CMD_IO_VEC
    unsigned RL_NVME_URING_CMD_ADMIN, RL_NVME_URING_CMD_ADMIN_VEC
    unsigned RL_SQE_CMD_OFFSET, RL_REGISTER_EVENTFD, RL_UNREGISTER_EVENTFD
    int rl_kernel_nvme_layout(long *out)
    long rl_our_offsets(long *out)


NVME_URING_CMD_IO = RL_NVME_URING_CMD_IO
NVME_URING_CMD_IO_VEC = RL_NVME_URING_CMD_IO_VEC
NVME_URING_CMD_ADMIN = RL_NVME_URING_CMD_ADMIN
NVME_URING_CMD_ADMIN_VEC = RL_NVME_URING_CMD_ADMIN_VEC
CMD_SIZE = sizeof(rl_nvme_uring_cmd)
SQE_CMD_OFFSET = RL_SQE_CMD_OFFSET

_FIELDS = ("sizeof", "opcode", "flags", "rsvd1", "nsid", "cdw2", "cdw3", "metadata", "addr",
           "metadata_len", "data_len", "cdw10", "cdw11", "cdw12", "cdw13", "cdw14", "cdw15",
           "timeout_ms", "rsvd2", "NVME_URING_CMD_IO", "NVME_URING_CMD_ADMIN")


def our_layout():
    """sizeof, field offsets and cmd_op values of our struct (tests)."""
    cdef long out[21]
    rl_our_offsets(out)
    return {name: out[i] for i, name in enumerate(_FIELDS)}


def kernel_layout():
    """The same from the installed <linux/nvme_ioctl.h>, or None."""
    cdef long out[21]
    if not rl_kernel_nvme_layout(out):
        return None
    return {name: out[i] for i, name in enumerate(_FIELDS)}


cdef int _fill(rl_nvme_uring_cmd *c, dict f) except -1:
    memset(c, 0, sizeof(rl_nvme_uring_cmd))
    c.opcode = f.get("opcode", 0)
    c.flags = f.get("flags", 0)
    c.nsid = f.get("nsid", 0)
    c.cdw2 = f.get("cdw2", 0)
    c.cdw3 = f.get("cdw3", 0)
    c.metadata = f.get("metadata", 0)
    c.addr = f.get("addr", 0)
    c.metadata_len = f.get("metadata_len", 0)
    c.data_len = f.get("data_len", 0)
    c.cdw10 = f.get("cdw10", 0)
    c.cdw11 = f.get("cdw11", 0)
    c.cdw12 = f.get("cdw12", 0)
    c.cdw13 = f.get("cdw13", 0)
    c.cdw14 = f.get("cdw14", 0)
    c.cdw15 = f.get("cdw15", 0)
    c.timeout_ms = f.get("timeout_ms", 0)
    return 0


def encode_cmd(**fields):
    """The 72 bytes of a struct nvme_uring_cmd with these fields (tests)."""
    cdef rl_nvme_uring_cmd c
    unknown = set(fields) - set(_FIELDS[1:19])
    if unknown:
        raise TypeError(f"unknown nvme_uring_cmd field(s): {sorted(unknown)}")
    _fill(&c, fields)
    return PyBytes_FromStringAndSize(<char*>&c, sizeof(c))


cdef enum:
    K_DATA_IN = 0      # the device returns data (result: (dw0, bytes))
    K_DATA_OUT = 1     # the caller's data goes to the device (result: (dw0, None))
    K_NO_DATA = 2
    K_TEST = 3         # a plain SQE (tests of the side ring's wake-up)


@cython.final
cdef class NvmeCmd:
    """One passthrough command; pinned in SideRing.cmds until its CQE."""
    cdef object fut
    cdef rl_nvme_uring_cmd cmd
    cdef unsigned cmd_op
    cdef int fd
    cdef uint8_t kind
    cdef char *buf               # aligned buffer the device writes into
    cdef Py_ssize_t buflen
    cdef Py_buffer view          # the caller's data the device reads
    cdef bint has_view
    cdef object what
    cdef rl_kernel_timespec ts   # K_TEST timeouts
    cdef uint8_t test_opcode

    def __dealloc__(self):
        self.release()

    cdef void release(self) noexcept:
        if self.has_view:
            PyBuffer_Release(&self.view)
            self.has_view = False
        if self.buf != NULL:
            free(self.buf)
            self.buf = NULL

    cdef int complete(self, int32_t res, uint64_t result) except -1:
        cdef object fut = self.fut
        cdef object data = None
        try:
            if fut.done():
                return 0
            if self.kind == K_TEST:
                fut.set_result(res)
            elif res < 0:
                fut.set_exception(error_from_errno(-res, self.what))
            elif res > 0:
                # A positive res is the NVMe status (the completion's status
                # field without the phase bit): the command failed.
                fut.set_exception(NvmeError(res & 0x7FFF, self.what))
            else:
                if self.kind == K_DATA_IN:
                    data = PyBytes_FromStringAndSize(self.buf, self.buflen)
                fut.set_result((result, data))
        finally:
            self.release()
        return 0


@cython.final
cdef class _SideWake(Completion):
    """The eventfd read armed on the loop's ring for the side ring."""
    cdef uint64_t value
    cdef SideRing side

    cdef int on_cqe(self, Loop loop, int32_t res, uint32_t flags) except -1:
        cdef SideRing side = self.side
        if side is None:
            return 0
        side.armed = False
        if side.closed:
            return 0
        side.poll()
        if side.cmds and not loop._closing and not loop._closed:
            side.arm()
        return 0


@cython.final
@cython.no_gc_clear
cdef class SideRing:
    """An SQE128/CQE32 ring for URING_CMD, owned by one loop (see above)."""
    cdef Ring ring
    cdef readonly Loop loop
    cdef int efd
    cdef _SideWake wake
    cdef readonly dict cmds
    cdef uint64_t seq
    cdef bint flush_scheduled
    cdef readonly bint armed
    cdef readonly bint closed
    cdef readonly int capacity
    cdef object waiters
    cdef readonly uint64_t submitted
    cdef readonly uint64_t completed
    cdef readonly uint64_t wakeups

    def __cinit__(self, Loop loop, int capacity):
        cdef unsigned entries = 1
        cdef unsigned flags
        cdef int efd
        self.efd = -1
        self.closed = True
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        while entries < <unsigned>capacity and entries < 4096:
            entries <<= 1
        flags = (RL_SETUP_SQE128 | RL_SETUP_CQE32 | RL_SETUP_SINGLE_ISSUER |
                 RL_SETUP_DEFER_TASKRUN | RL_SETUP_COOP_TASKRUN | RL_SETUP_TASKRUN_FLAG |
                 RL_SETUP_SUBMIT_ALL)
        self.ring = Ring.create(entries, entries * 2, flags, -1, 0)
        self.capacity = <int>min(<unsigned>capacity, entries)
        efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)
        if efd < 0:
            err = errno     # before close_ring's syscalls overwrite it
            self.ring.close_ring()
            raise error_from_errno(err, "eventfd")
        self.efd = efd
        try:
            self.ring.register(RL_REGISTER_EVENTFD, &self.efd, 1)
        except BaseException:
            c_close(efd)
            self.efd = -1
            self.ring.close_ring()
            raise
        self.loop = loop
        self.cmds = {}
        self.waiters = collections.deque()
        self.wake = _SideWake.__new__(_SideWake)
        self.wake.side = self
        self.closed = False

    def __dealloc__(self):
        # Garbage collected without shutdown(): we may not be on the ring's
        # thread, so nothing is submitted; what is in flight is parked.
        if self.closed:
            return
        self.closed = True
        if self.cmds:
            # a device may still DMA into them
            _abandon(list(self.cmds.values()))
        if self.ring is not None:
            self.ring.close_ring()
        if self.efd >= 0:
            c_close(self.efd)
            self.efd = -1

    @property
    def ring_fd(self):
        return self.ring.r.fd if self.ring is not None else -1

    @property
    def sqe_size(self):
        return 1 << self.ring.r.sqe_shift

    @property
    def cqe_size(self):
        return 1 << self.ring.r.cqe_shift

    @property
    def in_flight(self):
        return len(self.cmds)

    cdef int arm(self) except -1:
        cdef rl_sqe *sqe
        if self.armed:
            return 0
        sqe = self.loop.sqe_for(self.wake, Op.URING_CMD)
        prep_read(sqe, self.efd, False, &self.wake.value, 8, <uint64_t>-1)
        self.armed = True
        return 0

    cdef int poll(self) except -1:
        """Run the side ring's deferred completions and dispatch its CQEs."""
        cdef RingState *r = &self.ring.r
        cdef uint32_t head, tail
        cdef rl_cqe *cqe
        cdef list done = []
        cdef NvmeCmd cmd
        if self.closed:
            return 0
        self.wakeups += 1
        self.ring.enter(0, 0.0)
        while True:
            head = r.cq_khead[0]
            tail = rl_load_acquire(r.cq_ktail)
            if head == tail:
                break
            while head != tail:
                cqe = cq_at(r, head)
                # CQE32: big_cqe[0] (the command's 64-bit result) follows the
                # 16-byte base CQE.
                done.append((cqe.user_data, cqe.res,
                             (<uint64_t*>(<char*>cqe + 16))[0]))
                head += 1
            rl_store_release(r.cq_khead, head)
        for ud, res, result in done:
            cmd = self.cmds.pop(ud, None)
            if cmd is None:
                continue            # a cancel request's own CQE
            self.completed += 1
            cmd.complete(res, result)
        if done:
            self._wake_waiters()
        return 0

    def _wake_waiters(self):
        while self.waiters and len(self.cmds) < self.capacity:
            w = self.waiters.popleft()
            if not w.done():
                w.set_result(None)
                return

    def room(self):
        """None if a command may be submitted now, else a future to await."""
        if len(self.cmds) < self.capacity and not self.waiters:
            return None
        fut = _Future(loop=self.loop)
        self.waiters.append(fut)
        return fut

    cdef int _push(self, NvmeCmd cmd) except -1:
        cdef rl_sqe *sqe
        if self.closed:
            raise RuntimeError("the NVMe ring of this loop is closed")
        if self.loop._closed:
            raise RuntimeError("Event loop is closed")
        sqe = self.ring.get_sqe()
        self.seq += 1
        if cmd.kind == K_TEST:
            sqe.opcode = cmd.test_opcode
            sqe.fd = -1
            if cmd.test_opcode == RL_OP_TIMEOUT:
                prep_timeout(sqe, &cmd.ts, 0, 0)
        else:
            prep_uring_cmd(sqe, cmd.fd, False, cmd.cmd_op)
            memcpy(<char*>sqe + RL_SQE_CMD_OFFSET, &cmd.cmd, sizeof(rl_nvme_uring_cmd))
        sqe.user_data = self.seq
        self.cmds[self.seq] = cmd
        self.submitted += 1
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)
        self.arm()
        return 0

    def _flush(self):
        """Submit every command prepared this iteration in one enter."""
        self.flush_scheduled = False
        if self.closed:
            return
        self.poll()             # submits (enter) and reaps inline completions
        if self.cmds and not self.armed and not self.loop._closing:
            self.arm()

    def submit(self, int fd, unsigned cmd_op, dict fields, object data=None,
               Py_ssize_t read_len=0, object what=""):
        """Queue one passthrough command; returns its future.

        ``data`` (any contiguous buffer) goes to the device, or ``read_len``
        bytes come back from it; ``fields`` are nvme_uring_cmd fields other
        than addr/data_len."""
        cdef NvmeCmd cmd = NvmeCmd.__new__(NvmeCmd)
        cdef void *p = NULL
        if data is not None and read_len:
            raise ValueError("a command either sends data or receives it, not both")
        if read_len < 0 or read_len > 0xFFFFFFFF:
            raise ValueError(f"read_len out of range: {read_len}")
        _fill(&cmd.cmd, fields)
        cmd.fd = fd
        cmd.cmd_op = cmd_op
        cmd.what = what
        if data is not None:
            PyObject_GetBuffer(data, &cmd.view, PyBUF_SIMPLE)
            cmd.has_view = True
            if cmd.view.len > 0xFFFFFFFF:
                raise ValueError("data too large for one command")
            cmd.cmd.addr = <uint64_t><uintptr_t>cmd.view.buf
            cmd.cmd.data_len = <uint32_t>cmd.view.len
            cmd.kind = K_DATA_OUT
        elif read_len:
            if posix_memalign(&p, 4096, <size_t>read_len) != 0:
                raise MemoryError()
            memset(p, 0, <size_t>read_len)
            cmd.buf = <char*>p
            cmd.buflen = read_len
            cmd.cmd.addr = <uint64_t><uintptr_t>p
            cmd.cmd.data_len = <uint32_t>read_len
            cmd.kind = K_DATA_IN
        else:
            cmd.kind = K_NO_DATA
        cmd.fut = _Future(loop=self.loop)
        self._push(cmd)
        return cmd.fut

    def _test_timeout(self, double seconds):
        """A TIMEOUT on the side ring (tests the wake-up path without a device)."""
        cdef NvmeCmd cmd = NvmeCmd.__new__(NvmeCmd)
        cdef int64_t ns = <int64_t>(seconds * 1e9)
        cmd.kind = K_TEST
        cmd.test_opcode = RL_OP_TIMEOUT
        cmd.ts.tv_sec = ns // 1000000000
        cmd.ts.tv_nsec = ns % 1000000000
        cmd.what = "timeout"
        cmd.fut = _Future(loop=self.loop)
        self._push(cmd)
        return cmd.fut

    def _test_complete(self, int32_t res, uint64_t result, bint data_in=False):
        """Feed a synthetic completion to a fresh command (status decoding tests)."""
        cdef NvmeCmd cmd = NvmeCmd.__new__(NvmeCmd)
        cdef void *p = NULL
        cmd.kind = K_DATA_IN if data_in else K_NO_DATA
        cmd.what = "nvme test"
        cmd.fut = _Future(loop=self.loop)
        if data_in:
            posix_memalign(&p, 4096, 8)
            memset(p, 0x5A, 8)
            cmd.buf = <char*>p
            cmd.buflen = 8
        cmd.complete(res, result)
        return cmd.fut

    def cancel_all(self):
        """Ask the kernel to cancel every command in flight (CQEs still come)."""
        cdef rl_sqe *sqe
        if self.closed or not self.cmds:
            return
        sqe = self.ring.get_sqe()
        prep_cancel(sqe, 0, RL_ASYNC_CANCEL_ANY)
        sqe.user_data = 0
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)

    def shutdown(self, double budget=2.0):
        """Cancel and reap what is in flight, then close the ring.

        Called when the last device closes, or when the SideRing is garbage
        collected.  Commands the kernel does not give back within ``budget``
        seconds are parked for good (their memory may still be DMA'd into)."""
        cdef rl_sqe *sqe
        cdef double deadline
        if self.closed:
            return
        deadline = _time.monotonic() + budget
        try:
            if self.cmds:
                sqe = self.ring.get_sqe()
                prep_cancel(sqe, 0, RL_ASYNC_CANCEL_ANY)
                sqe.user_data = 0
                while self.cmds and _time.monotonic() < deadline:
                    self.ring.enter(1, 0.05)
                    self.poll()
        except BaseException:
            pass
        if self.cmds:
            _abandon(list(self.cmds.values()))
            self.cmds.clear()
        self.closed = True
        if self.wake is not None:
            self.wake.side = None       # an armed read may still complete: ignore it
        self.ring.close_ring()
        if self.efd >= 0:
            c_close(self.efd)       # the armed read holds its own file reference
            self.efd = -1
        for w in self.waiters:
            if not w.done():
                w.set_exception(RuntimeError("the NVMe ring was closed"))
        self.waiters.clear()
