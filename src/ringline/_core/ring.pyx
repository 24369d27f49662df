# cython: language_level=3, boundscheck=False, wraparound=False
"""The ring: io_uring_setup, the mmap'd queues, io_uring_enter, io_uring_register.

Facts about io_uring that this file relies on
---------------------------------------------
* The SQ and CQ are shared memory.  We own the SQ tail and the CQ head; the
  kernel owns the SQ head and the CQ tail.  Our stores of the indices we own
  are release stores, our loads of the kernel's are acquire loads, so an SQE is
  fully written before the kernel can see it and a CQE is fully read before its
  slot is handed back (io_uring(7); liburing's barrier.h does the same).
* With IORING_FEAT_NODROP (5.5, always on 6.x) the kernel never drops a CQE
  when the CQ is full: it parks them on an overflow list and raises
  IORING_SQ_CQ_OVERFLOW; an io_uring_enter(GETEVENTS) moves them back once we
  have made room.  io_uring_enter may answer EBUSY while that list is not empty
  (io_uring_enter(2)): reap, then retry.
* IORING_SETUP_SINGLE_ISSUER (6.0) promises one submitting task;
  IORING_SETUP_DEFER_TASKRUN (6.1, needs SINGLE_ISSUER) defers completion work
  until that task calls io_uring_enter(GETEVENTS), so completions arrive when
  we ask for them, in batches, without interrupting us (io_uring_setup(2)).
  COOP_TASKRUN (5.19) stops the kernel from IPI-ing us for task work.
  TASKRUN_FLAG (5.19) raises IORING_SQ_TASKRUN while such work is waiting, so an
  iteration with nothing to submit can skip the syscall when it is clear.
* IORING_SETUP_SUBMIT_ALL (5.18): keep submitting the batch when one SQE fails
  (its error arrives as its CQE), so a bad SQE cannot strand the ones after it.
* IORING_ENTER_EXT_ARG (5.11): one io_uring_enter both submits and waits with a
  timeout; an expired wait returns -ETIME.  EINTR means a signal arrived while
  we slept: Python's handlers must run, then we go on.
* io_uring_setup fails with EPERM under a seccomp filter (Docker's default
  profile since 2023) or when the sysctl kernel.io_uring_disabled forbids it
  (6.6+), with ENOSYS on kernels without CONFIG_IO_URING, with EINVAL when a
  setup flag is newer than the kernel.

What this means for ringline
----------------------------
* One Ring per event loop, used only by the loop's thread.
* ``get_sqe`` never fails silently: a full SQ is submitted, then retried; if it
  is still full the caller gets RingFull.
* ``enter`` is the only place io_uring_enter is called; it publishes the SQ tail,
  retries EINTR after running signal handlers, and reports EBUSY as "reap first".
"""
from cpython.exc cimport PyErr_CheckSignals
from cpython.mem cimport PyMem_Calloc, PyMem_Free
from libc.errno cimport EINTR, EBUSY, EAGAIN, ETIME, ENXIO
from libc.stdint cimport uint32_t, uint64_t, int64_t
from libc.string cimport memset
from posix.mman cimport mmap, munmap, PROT_READ, PROT_WRITE, MAP_SHARED, MAP_FAILED
from posix.unistd cimport close as c_close

from ringline._core.abi.uring cimport *
from ringline._core.ops cimport prep_nop


cdef extern from "sys/mman.h":
    int MAP_POPULATE


DEFAULT_FLAGS = (RL_SETUP_COOP_TASKRUN | RL_SETUP_TASKRUN_FLAG | RL_SETUP_SINGLE_ISSUER
                 | RL_SETUP_DEFER_TASKRUN | RL_SETUP_SUBMIT_ALL)

# Names of the setup flags, for messages and statistics.
SETUP_FLAG_NAMES = {
    RL_SETUP_SQPOLL: "SQPOLL", RL_SETUP_SQ_AFF: "SQ_AFF", RL_SETUP_CQSIZE: "CQSIZE",
    RL_SETUP_SUBMIT_ALL: "SUBMIT_ALL", RL_SETUP_COOP_TASKRUN: "COOP_TASKRUN",
    RL_SETUP_TASKRUN_FLAG: "TASKRUN_FLAG", RL_SETUP_SQE128: "SQE128",
    RL_SETUP_CQE32: "CQE32", RL_SETUP_SINGLE_ISSUER: "SINGLE_ISSUER",
    RL_SETUP_DEFER_TASKRUN: "DEFER_TASKRUN",
}

SETUP_SQPOLL = RL_SETUP_SQPOLL
SETUP_SQ_AFF = RL_SETUP_SQ_AFF
SETUP_COOP_TASKRUN = RL_SETUP_COOP_TASKRUN
SETUP_TASKRUN_FLAG = RL_SETUP_TASKRUN_FLAG
SETUP_SINGLE_ISSUER = RL_SETUP_SINGLE_ISSUER
SETUP_DEFER_TASKRUN = RL_SETUP_DEFER_TASKRUN
SETUP_SUBMIT_ALL = RL_SETUP_SUBMIT_ALL
SETUP_SQE128 = RL_SETUP_SQE128
SETUP_R_DISABLED = RL_SETUP_R_DISABLED
SETUP_CQE32 = RL_SETUP_CQE32
FEAT_NODROP = RL_FEAT_NODROP
FEAT_EXT_ARG = RL_FEAT_EXT_ARG
CQE_F_MORE = RL_CQE_F_MORE
CQE_F_NOTIF = RL_CQE_F_NOTIF
CQE_F_BUFFER = RL_CQE_F_BUFFER

# Opcode numbers by name (the subset ringline uses), for the start-up probe.
OPCODES = {
    "NOP": RL_OP_NOP, "READV": RL_OP_READV, "WRITEV": RL_OP_WRITEV,
    "FSYNC": RL_OP_FSYNC, "READ_FIXED": RL_OP_READ_FIXED,
    "WRITE_FIXED": RL_OP_WRITE_FIXED, "POLL_ADD": RL_OP_POLL_ADD,
    "POLL_REMOVE": RL_OP_POLL_REMOVE, "SENDMSG": RL_OP_SENDMSG,
    "RECVMSG": RL_OP_RECVMSG, "TIMEOUT": RL_OP_TIMEOUT,
    "TIMEOUT_REMOVE": RL_OP_TIMEOUT_REMOVE, "ACCEPT": RL_OP_ACCEPT,
    "ASYNC_CANCEL": RL_OP_ASYNC_CANCEL, "LINK_TIMEOUT": RL_OP_LINK_TIMEOUT,
    "CONNECT": RL_OP_CONNECT, "OPENAT": RL_OP_OPENAT, "CLOSE": RL_OP_CLOSE,
    "FILES_UPDATE": RL_OP_FILES_UPDATE, "STATX": RL_OP_STATX,
    "READ": RL_OP_READ, "WRITE": RL_OP_WRITE, "SEND": RL_OP_SEND,
    "RECV": RL_OP_RECV, "SHUTDOWN": RL_OP_SHUTDOWN, "RENAMEAT": RL_OP_RENAMEAT,
    "UNLINKAT": RL_OP_UNLINKAT, "MKDIRAT": RL_OP_MKDIRAT, "SOCKET": RL_OP_SOCKET,
    "URING_CMD": RL_OP_URING_CMD, "SEND_ZC": RL_OP_SEND_ZC,
    "SENDMSG_ZC": RL_OP_SENDMSG_ZC, "FIXED_FD_INSTALL": RL_OP_FIXED_FD_INSTALL,
}

# What the loop core cannot work without; later layers probe their own ops.
REQUIRED_OPCODES = ("NOP", "READ", "TIMEOUT", "ASYNC_CANCEL", "POLL_ADD")


def _raise_setup_error(int err):
    from ringline.errors import classify_setup_error
    raise classify_setup_error(err)


def _raise_os_error(int err, str what):
    from ringline.errors import error_from_errno
    raise error_from_errno(err, what)


def _raise_ring_full():
    from ringline.errors import RingFull
    raise RingFull("submission queue still full after submitting it; "
                   "raise Config.sq_entries")


cdef class Ring:

    def __cinit__(self):
        # Before anything can fail: __dealloc__ must never see fd 0 (a zeroed
        # struct) as ours to close.
        self.r.fd = -1
        self.closed = True

    def __init__(self, *args, **kwargs):
        raise TypeError("Ring objects are made by Ring.open() or the event loop")

    @staticmethod
    cdef Ring create(unsigned entries, unsigned cq_entries, unsigned flags,
                     int sq_thread_cpu, unsigned sq_thread_idle):
        cdef Ring self = Ring.__new__(Ring)
        cdef rl_uring_params p
        cdef int fd, i
        cdef size_t sq_len, cq_len
        cdef void *sq_map
        cdef void *cq_map
        cdef void *sqe_map
        memset(&p, 0, sizeof(p))
        memset(&self.r, 0, sizeof(RingState))
        self.r.fd = -1
        self.closed = True
        p.flags = flags
        if cq_entries:
            p.flags |= RL_SETUP_CQSIZE
            p.cq_entries = cq_entries
        if flags & RL_SETUP_SQPOLL:
            p.sq_thread_idle = sq_thread_idle
            if sq_thread_cpu >= 0:
                p.flags |= RL_SETUP_SQ_AFF
                p.sq_thread_cpu = <uint32_t>sq_thread_cpu
        fd = rl_setup(entries, &p)
        if fd < 0:
            _raise_setup_error(-fd)
        if not (p.features & RL_FEAT_EXT_ARG) or not (p.features & RL_FEAT_NODROP):
            c_close(fd)
            from ringline.errors import KernelTooOld
            raise KernelTooOld("io_uring lacks IORING_FEAT_EXT_ARG/NODROP; ringline needs Linux 6.1+")

        self.r.fd = fd
        self.r.setup_flags = p.flags
        self.r.features = p.features
        self.r.sqe_shift = 7 if (p.flags & RL_SETUP_SQE128) else 6
        self.r.cqe_shift = 5 if (p.flags & RL_SETUP_CQE32) else 4
        sq_len = p.sq_off.array + p.sq_entries * sizeof(uint32_t)
        cq_len = p.cq_off.cqes + (p.cq_entries << self.r.cqe_shift)
        if p.features & RL_FEAT_SINGLE_MMAP:
            if cq_len > sq_len:
                sq_len = cq_len
            cq_len = sq_len
        sq_map = mmap(NULL, sq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, RL_OFF_SQ_RING)
        if sq_map == MAP_FAILED:
            c_close(fd)
            self.r.fd = -1
            _raise_os_error(ENXIO, "mmap of the SQ ring failed")
        if p.features & RL_FEAT_SINGLE_MMAP:
            cq_map = sq_map
        else:
            cq_map = mmap(NULL, cq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, RL_OFF_CQ_RING)
            if cq_map == MAP_FAILED:
                munmap(sq_map, sq_len)
                c_close(fd)
                self.r.fd = -1
                _raise_os_error(ENXIO, "mmap of the CQ ring failed")
        sqe_map = mmap(NULL, p.sq_entries << self.r.sqe_shift, PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_POPULATE, fd, RL_OFF_SQES)
        if sqe_map == MAP_FAILED:
            munmap(sq_map, sq_len)
            if cq_map != sq_map:
                munmap(cq_map, cq_len)
            c_close(fd)
            self.r.fd = -1
            _raise_os_error(ENXIO, "mmap of the SQE array failed")

        self.r.sq_map = sq_map
        self.r.sq_map_len = sq_len
        self.r.cq_map = cq_map
        self.r.cq_map_len = cq_len
        self.r.sqe_map = sqe_map
        self.r.sqe_map_len = p.sq_entries << self.r.sqe_shift
        self.r.sq_khead = <uint32_t*>(<char*>sq_map + p.sq_off.head)
        self.r.sq_ktail = <uint32_t*>(<char*>sq_map + p.sq_off.tail)
        self.r.sq_kflags = <uint32_t*>(<char*>sq_map + p.sq_off.flags)
        self.r.sq_karray = <uint32_t*>(<char*>sq_map + p.sq_off.array)
        self.r.sq_mask = (<uint32_t*>(<char*>sq_map + p.sq_off.ring_mask))[0]
        self.r.sq_entries = p.sq_entries
        self.r.sqes = <char*>sqe_map
        self.r.cq_khead = <uint32_t*>(<char*>cq_map + p.cq_off.head)
        self.r.cq_ktail = <uint32_t*>(<char*>cq_map + p.cq_off.tail)
        self.r.cq_koverflow = <uint32_t*>(<char*>cq_map + p.cq_off.overflow)
        self.r.cq_mask = (<uint32_t*>(<char*>cq_map + p.cq_off.ring_mask))[0]
        self.r.cq_entries = p.cq_entries
        self.r.cqes = <char*>cq_map + p.cq_off.cqes
        # The SQ index array maps ring positions to SQE indices; an identity
        # map lets get_sqe() hand out SQEs in ring order and never touch it again.
        for i in range(<int>p.sq_entries):
            self.r.sq_karray[i] = <uint32_t>i
        self.r.sqe_tail = self.r.sq_ktail[0]
        self.closed = False
        self.sqpoll = (p.flags & RL_SETUP_SQPOLL) != 0
        self.defer_taskrun = (p.flags & RL_SETUP_DEFER_TASKRUN) != 0
        self.disabled = (p.flags & RL_SETUP_R_DISABLED) != 0
        self.probe_ops = self._probe()
        return self

    @classmethod
    def open(cls, unsigned entries=64, *, unsigned cq_entries=0, flags=None,
             bint sqpoll=False, int sqpoll_cpu=-1, unsigned sqpoll_idle_ms=1000,
             bint sqe128=False):
        """Open a ring directly (tests and tools; the loop makes its own)."""
        cdef unsigned f = DEFAULT_FLAGS if flags is None else flags
        if sqpoll:
            f = (f & ~(RL_SETUP_DEFER_TASKRUN | RL_SETUP_COOP_TASKRUN | RL_SETUP_TASKRUN_FLAG)) | RL_SETUP_SQPOLL
        if sqe128:
            f |= RL_SETUP_SQE128 | RL_SETUP_CQE32
        return Ring.create(entries, cq_entries, f, sqpoll_cpu, sqpoll_idle_ms)

    cdef object _probe(self):
        cdef rl_probe *probe = <rl_probe*>PyMem_Calloc(1, sizeof(rl_probe))
        cdef int i, ret
        if probe == NULL:
            raise MemoryError()
        try:
            ret = rl_register(self.r.fd, RL_REGISTER_PROBE, probe, 256)
            if ret < 0:
                _raise_os_error(-ret, "IORING_REGISTER_PROBE")
            ops = set()
            for i in range(probe.ops_len):
                if probe.ops[i].flags & RL_IO_URING_OP_SUPPORTED:
                    ops.add(probe.ops[i].op)
            return frozenset(ops)
        finally:
            PyMem_Free(probe)

    def require(self, names):
        """Raise MissingOpcode naming every opcode in ``names`` this kernel lacks."""
        missing = [n for n in names if OPCODES[n] not in self.probe_ops]
        if missing:
            from ringline.errors import MissingOpcode
            raise MissingOpcode(missing)

    def supports(self, str name):
        return OPCODES[name] in self.probe_ops

    cdef rl_sqe* get_sqe(self) except NULL:
        cdef RingState *r = &self.r
        cdef uint32_t head = rl_load_acquire(r.sq_khead)
        cdef rl_sqe *sqe
        if r.sqe_tail - head >= r.sq_entries:
            # SQ full: hand what we have to the kernel, then retry once.
            self.sq_full_submits += 1
            self.enter(0, 0.0)
            head = rl_load_acquire(r.sq_khead)
            if r.sqe_tail - head >= r.sq_entries:
                self.submit_failures += 1
                _raise_ring_full()
        sqe = <rl_sqe*>(r.sqes + ((r.sqe_tail & r.sq_mask) << r.sqe_shift))
        r.sqe_tail += 1
        memset(sqe, 0, 64)
        if r.sqe_shift == 7:
            memset(<char*>sqe + 64, 0, 64)
        return sqe

    cdef int reserve(self, unsigned n) except -1:
        """Make sure ``n`` SQEs fit without an intervening submit (linked SQEs
        must reach the kernel in one batch)."""
        if self.r.sq_entries - sq_pending(&self.r) < n:
            self.enter(0, 0.0)
            if self.r.sq_entries - sq_pending(&self.r) < n:
                self.submit_failures += 1
                _raise_ring_full()
        return 0

    cdef int enter(self, unsigned min_complete, double timeout) except -2:
        """Submit prepared SQEs and reap/wait; the only io_uring_enter call site.

        ``timeout`` < 0 waits without limit (only with min_complete > 0).
        Returns the number of SQEs the kernel consumed.
        """
        cdef RingState *r = &self.r
        cdef uint32_t to_submit
        cdef unsigned flags = RL_ENTER_GETEVENTS
        cdef rl_getevents_arg arg
        cdef rl_kernel_timespec ts
        cdef int ret
        cdef void *argp = NULL
        cdef size_t argsz = 0
        cdef int64_t ns
        rl_store_release(r.sq_ktail, r.sqe_tail)
        to_submit = r.sqe_tail - rl_load_acquire(r.sq_khead)
        if self.sqpoll:
            # The SQ thread consumes the SQ itself; only wake it if it sleeps.
            rl_full_barrier()
            if rl_load_relaxed(r.sq_kflags) & RL_SQ_NEED_WAKEUP:
                flags |= RL_ENTER_SQ_WAKEUP
            elif min_complete == 0 and not (rl_load_relaxed(r.sq_kflags) & RL_SQ_CQ_OVERFLOW):
                return 0
            to_submit = 0
        if min_complete and timeout >= 0:
            ns = <int64_t>(timeout * 1e9)
            ts.tv_sec = ns // 1000000000
            ts.tv_nsec = ns % 1000000000
            memset(&arg, 0, sizeof(arg))
            arg.ts = <uint64_t>&ts
            argp = &arg
            argsz = sizeof(arg)
            flags |= RL_ENTER_EXT_ARG
        while True:
            self.enters += 1
            if min_complete:
                with nogil:
                    ret = rl_enter(r.fd, to_submit, min_complete, flags, argp, argsz)
            else:
                ret = rl_enter(r.fd, to_submit, 0, flags, argp, argsz)
            if ret >= 0:
                self.sqes_submitted += <uint64_t>ret
                return ret
            if ret == -ETIME:
                return 0
            self.submit_failures += 1       # any other error, handled or raised
            if ret == -EINTR:
                # A signal interrupted the wait: run Python's handlers (they
                # may raise, e.g. KeyboardInterrupt), then let the loop go on.
                PyErr_CheckSignals()
                if min_complete:
                    return 0
                continue
            if ret == -EBUSY or ret == -EAGAIN:
                # Completions are parked on the overflow list, or the kernel is
                # short of request memory: the caller must reap before retrying.
                self.overflow_flushes += 1
                return 0
            _raise_os_error(-ret, "io_uring_enter")

    cdef int enable(self) except -1:
        """Enable a ring made with R_DISABLED; the calling thread becomes its
        single issuer (io_uring_register(2), IORING_REGISTER_ENABLE_RINGS)."""
        if self.disabled:
            self.register(RL_REGISTER_ENABLE_RINGS, NULL, 0)
            self.disabled = False
        return 0

    def enable_here(self):
        self.enable()

    cdef int flush_overflow(self) except -1:
        """Ask the kernel to move overflowed CQEs back into the (reaped) CQ."""
        cdef int ret
        self.overflow_flushes += 1
        ret = rl_enter(self.r.fd, 0, 0, RL_ENTER_GETEVENTS, NULL, 0)
        if ret < 0:
            self.submit_failures += 1
            if ret != -EINTR and ret != -EBUSY and ret != -EAGAIN:
                _raise_os_error(-ret, "io_uring_enter(GETEVENTS)")
        return 0

    cdef int register(self, unsigned opcode, void *arg, unsigned nr) except -1:
        cdef int ret
        while True:
            ret = rl_register(self.r.fd, opcode, arg, nr)
            if ret >= 0:
                return ret
            if ret != -EINTR:
                _raise_os_error(-ret, "io_uring_register(%d)" % opcode)

    cdef void close_ring(self) noexcept:
        if self.closed:
            return
        self.closed = True
        if self.r.sqe_map != NULL:
            munmap(self.r.sqe_map, self.r.sqe_map_len)
        if self.r.cq_map != NULL and self.r.cq_map != self.r.sq_map:
            munmap(self.r.cq_map, self.r.cq_map_len)
        if self.r.sq_map != NULL:
            munmap(self.r.sq_map, self.r.sq_map_len)
        self.r.sqe_map = NULL
        self.r.cq_map = NULL
        self.r.sq_map = NULL
        if self.r.fd >= 0:
            c_close(self.r.fd)
        self.r.fd = -1

    def __dealloc__(self):
        self.close_ring()

    # ---- registration helpers ----

    def register_files_sparse(self, unsigned nr):
        """Register an empty (sparse) fixed-file table of ``nr`` slots
        (IORING_REGISTER_FILES2; the kernel checks ``nr`` against
        RLIMIT_NOFILE and answers EMFILE above it, EBUSY if a table exists)."""
        cdef rl_rsrc_register reg
        memset(&reg, 0, sizeof(reg))
        reg.nr = nr
        reg.flags = RL_RSRC_REGISTER_SPARSE
        self.register(RL_REGISTER_FILES2, &reg, sizeof(reg))

    def register_file_alloc_range(self, unsigned off, unsigned length):
        """Make IORING_FILE_INDEX_ALLOC pick slots only in [off, off+length)
        (IORING_REGISTER_FILE_ALLOC_RANGE, 6.0)."""
        cdef rl_file_index_range rng
        memset(&rng, 0, sizeof(rng))
        rng.off = off
        rng.len = length
        self.register(RL_REGISTER_FILE_ALLOC_RANGE, &rng, 0)

    # ---- Python-visible surface, for tests and diagnostics ----

    def close(self):
        self.close_ring()

    @property
    def fd(self):
        return self.r.fd

    @property
    def setup_flags(self):
        return self.r.setup_flags

    @property
    def features(self):
        return self.r.features

    @property
    def sq_entries(self):
        return self.r.sq_entries

    @property
    def cq_entries(self):
        return self.r.cq_entries

    @property
    def cq_overflow(self):
        """Completions the kernel could not post (stays 0 with FEAT_NODROP)."""
        return rl_load_acquire(self.r.cq_koverflow)

    @property
    def sq_flags(self):
        return rl_load_relaxed(self.r.sq_kflags)

    def sq_space(self):
        return self.r.sq_entries - sq_pending(&self.r)

    def cq_ready(self):
        return rl_load_acquire(self.r.cq_ktail) - self.r.cq_khead[0]

    def prep_nop(self, uint64_t user_data):
        """Queue a NOP SQE (submitted by the next submit())."""
        self._check()
        cdef rl_sqe *sqe = self.get_sqe()
        prep_nop(sqe)
        sqe.user_data = user_data

    def submit(self, unsigned wait_nr=0, timeout=None):
        """Submit queued SQEs; optionally wait for ``wait_nr`` completions."""
        self._check()
        return self.enter(wait_nr, -1.0 if timeout is None else float(timeout))

    def reap(self, unsigned max_cqes=0xFFFFFFFF):
        """Return and consume up to ``max_cqes`` CQEs as (user_data, res, flags)."""
        self._check()
        cdef RingState *r = &self.r
        cdef uint32_t head = r.cq_khead[0]
        cdef uint32_t tail = rl_load_acquire(r.cq_ktail)
        cdef rl_cqe *cqe
        out = []
        while head != tail and <unsigned>len(out) < max_cqes:
            cqe = cq_at(r, head)
            out.append((cqe.user_data, cqe.res, cqe.flags))
            head += 1
        rl_store_release(r.cq_khead, head)
        return out

    def flush(self):
        """Move overflowed completions back into the CQ (after reaping)."""
        self._check()
        self.flush_overflow()

    cdef _check(self):
        if self.closed:
            raise ValueError("ring is closed")
