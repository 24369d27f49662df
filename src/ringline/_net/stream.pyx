# cython: language_level=3, boundscheck=False, wraparound=False
"""Byte streams on the ring: receive, ordered send, close.  (Accept and
connect are in sockops.pyx; the buffers in buffers.pyx.)

One machinery under both faces (native ``Connection`` and asyncio
transports); a face subclasses ``Stream`` and overrides its ``on_*`` hooks.

Receive: one multishot IORING_OP_RECV per stream picks buffers from the
loop's provided-buffer ring; each CQE's bytes are handed to ``on_data`` and
the buffer is recycled before the next CQE is looked at.  ENOBUFS (the ring
ran dry inside one batch) re-arms from the ready queue, i.e. after the batch
that returns the buffers: event-driven, never a spin (pitfalls #13).

Send: the one-send-in-flight rule.  Chunks queue in order; one SEND (one
chunk) or SENDMSG (up to IOV_BATCH chunks gathered) is in flight at a time,
with MSG_WAITALL so the kernel itself retries short stream sends, and a
resume path for the short send that still gets through (pitfalls #2, #6).
Sends never use IOSQE_CQE_SKIP_SUCCESS: the CQE releases the memory (#4).

Close: queued sends drain first, then the multishot recv is cancelled, and
only when its final CQE is in is the fd closed, so the peer sees FIN, not a
socket kept open by a pending recv (pitfalls #8, #10).

Fixed descriptors (native face only; ``Stream.fixed``): the socket lives in
the ring's fixed file table, not the process fd table.  Every SQE on it
carries IOSQE_FIXED_FILE; shutdown is IORING_OP_SHUTDOWN and close is
IORING_OP_CLOSE on the slot, after which the face is told it is closed
(``_close_done``) at that CQE.  Slots are allocated by the kernel
(FILE_INDEX_ALLOC within the range registered in ``NetState.use_fixed_files``)
and a slot counts as held until its close CQE; since nothing else is in
flight on a stream when it closes, no op of ours can see a slot's next
occupant, and CQEs of finished ops are recognised as stale by their tag.
The asyncio transports keep plain fds: asyncio hands out real sockets.
"""
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_CheckExact, PyBytes_FromStringAndSize
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from libc.errno cimport ENOBUFS, EAGAIN, EINTR
from libc.stdint cimport uint16_t, uint32_t, int32_t
from libc.string cimport memcpy, memset
from posix.unistd cimport close as c_close
from ringline._core.abi.uring cimport *
from ringline._net.csocket cimport *
from ringline._net.buffers cimport BufRing, SendPool, pbuf_inc_supported
from ringline._core.loop cimport Loop, Completion, list_drop_all, bufs_lent_add
from ringline._core.ops cimport (prep_recv_multishot, prep_send, prep_send_zc, prep_sendmsg,
                                 prep_shutdown, prep_close_fixed)
from ringline._core.tags cimport Op
from ringline.config import AUTO_RECV_BUFFERS_INC, AUTO_RECV_BUFFERS_PLAIN
from ringline.errors import SendPoolExhausted, error_from_errno


cdef int LARGE_ENTER = 4
cdef int LARGE_LEAVE = 8
cdef uint32_t LARGE_RING_ENTRIES = 16
cdef uint32_t LARGE_RING_SIZE = 65536
cdef uint32_t LARGE_BIG_SIZE = 262144
# 2: the kernel fills at most a ring's worth per io_uring_enter before the
# receives end with ENOBUFS (re-armed after the batch), so the ring's size is
# how much memory the receive copies rotate through.  512 KiB stays in the
# L2 cache where 8 buffers (2 MiB) did not: -21% CPU per MB with 10 bulk
# streams, no loss with 1 or 50, in spite of the extra ENOBUFS re-arms
# (bench/JOURNAL.md, bulk streams, second entry).  It also bounds what a
# paused transport keeps (TCPTransport._pending) to a ring's worth.
cdef uint32_t BIG_RING_ENTRIES = 2
cdef int BIG_ENTER = 8
cdef int BIG_LEAVE = 8


@cython.final
cdef class NetState:

    def __init__(self, *a, **k):
        raise TypeError("use net_state(loop)")

    def shutdown_streams(self):
        """Abort every open stream (loop close): their ops get cancelled and
        reaped by the loop's drain before the ring goes away."""
        for s in list(self.streams):
            (<Stream>s).abort_stream(None)

    cdef BufRing get_large_ring(self):
        """The large-receive ring, made on first use; the main ring if it cannot be
        (e.g. its buffer group id is taken), and large-receive mode is then off."""
        if self.large_ring is None and not self.large_ring_off:
            try:
                self.large_ring = BufRing.create(
                    self.loop, LARGE_RING_ENTRIES, LARGE_RING_SIZE,
                    <uint16_t>((self.config.recv_buffer_group + 1) & 0xFFFF), False)
            except (OSError, MemoryError):
                self.large_ring_off = True
        return self.large_ring if self.large_ring is not None else self.bufring

    cdef BufRing get_big_ring(self):
        """The transports' large-receive ring (LARGE_BIG_SIZE buffers), made on
        first use; the native one (get_large_ring) if it cannot be."""
        if self.big_ring is None and not self.big_ring_off:
            try:
                self.big_ring = BufRing.create(
                    self.loop, BIG_RING_ENTRIES, LARGE_BIG_SIZE,
                    <uint16_t>((self.config.recv_buffer_group + 2) & 0xFFFF), False)
            except (OSError, MemoryError):
                self.big_ring_off = True
        return self.big_ring if self.big_ring is not None else self.get_large_ring()

    def release(self):
        """Unmap buffers once the loop's ring is closed."""
        if self.bufring is not None:
            self.bufring.close_ring()
        if self.large_ring is not None:
            self.large_ring.close_ring()
        if self.big_ring is not None:
            self.big_ring.close_ring()

    def statistics(self):
        return {
            "streams": len(self.streams),
            "enobufs": (self.bufring.enobufs if self.bufring is not None else 0)
                       + (self.large_ring.enobufs if self.large_ring is not None else 0)
                       + (self.big_ring.enobufs if self.big_ring is not None else 0),
            "recv_incremental": bool(self.bufring.inc) if self.bufring is not None else False,
            "recv_buffers": self.bufring.entries if self.bufring is not None else 0,
            "recv_buffer_size": self.bufring.size if self.bufring is not None else 0,
            "recv_buffers_handed_out": (self.bufring.handed_out if self.bufring is not None else 0)
                                       + (self.large_ring.handed_out if self.large_ring is not None else 0)
                                       + (self.big_ring.handed_out if self.big_ring is not None else 0),
            "recv_buffers_reused": (self.bufring.reused if self.bufring is not None else 0)
                                   + (self.large_ring.reused if self.large_ring is not None else 0)
                                   + (self.big_ring.reused if self.big_ring is not None else 0),
            "recv_large_switches": self.large_switches,
            "send_pool_free": self.pool.nfree,
            "send_pool_exhausted": self.pool.exhausted,
            "fixed_files": self.fixed_files,
            "fixed_live": self.fixed_live,
            "table_full": self.table_full,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "udp_datagrams_in": self.udp_datagrams_in,
            "udp_datagrams_out": self.udp_datagrams_out,
            "udp_dropped": self.udp_dropped,
            "tls_handshakes": self.tls_handshakes,
            "tls_handshake_failures": self.tls_handshake_failures,
            "addresses_unknown": self.addresses_unknown,
        }

    def recv_buffers_out(self):
        """Provided receive buffers not in the kernel's rings now (both
        rings; see BufRing.out_of_ring): 0 unless one was lost."""
        n = 0
        for br in (self.bufring, self.large_ring):
            if br is not None:
                k = br.out_of_ring()
                if k < 0:
                    return -1
                n += k
        return n

    def use_fixed_files(self):
        """Whether native connections live in the ring's fixed file table.

        Decided (and the table registered) on first call: a sparse table of
        ``max_connections + file_slots`` entries whose first
        ``max_connections`` slots are the kernel's to allocate
        (FILE_INDEX_ALLOC) for sockets, the rest left to files.  Plain fds
        when the kernel lacks FIXED_FD_INSTALL (6.8; needed for the
        addresses of accepted connections), when ``Config._fixed_files`` is off, or
        when the table cannot be registered (``fixed_reason`` says why).
        """
        if self.fixed_files >= 0:
            return self.fixed_files == 1
        self.fixed_files = 0
        cfg = self.config
        ring = self.loop.ring
        if not cfg._fixed_files:
            self.fixed_reason = "disabled (Config._fixed_files)"
            return False
        missing = [op for op in ("SOCKET", "FIXED_FD_INSTALL") if not ring.supports(op)]
        if missing:
            self.fixed_reason = f"kernel lacks {', '.join(missing)}"
            return False
        n = cfg.max_connections + cfg.file_slots
        try:
            try:
                ring.register_files_sparse(n)
            except OSError as exc:
                # Raising a process-wide limit is the application's call:
                # only behind Config.raise_fd_limit.
                if exc.errno != EMFILE or not cfg.raise_fd_limit or not _raise_nofile(n):
                    raise
                ring.register_files_sparse(n)
            ring.register_file_alloc_range(0, cfg.max_connections)
        except OSError as exc:
            # e.g. a table registered by someone else (EBUSY) or RLIMIT_NOFILE
            # below the table size with no room to raise it (EMFILE).
            self.fixed_reason = f"fixed file table: {exc}"
            if exc.errno == EMFILE and not cfg.raise_fd_limit:
                self.fixed_reason += (
                    f" (RLIMIT_NOFILE soft limit below the table's {n} entries: raise it, "
                    f"or set Config.raise_fd_limit=True)")
            return False
        self.fixed_files = 1
        return True

    def _rearm_enobufs(self):
        """Re-arm the receives that found the buffer ring empty, those that
        got no buffer at all first.  A re-armed receive with data waiting
        takes every free buffer at once, so in arrival order the same busy
        stream would win every round and starve the others."""
        cdef Stream s
        waiting = self.enobufs_wait
        self.enobufs_wait = []
        fed = [s for s in waiting if s.recv_fed]
        for s in waiting:
            if not s.recv_fed:
                s._rearm_after_enobufs()
        for s in fed:
            s._rearm_after_enobufs()

    @property
    def file_slot_base(self):
        """First fixed-table slot reserved for files (after the connections')."""
        return self.config.max_connections

    cdef int _slot_freed(self) except -1:
        self.fixed_live -= 1
        if self.accept_parked:
            # A slot is free again: accepts parked on a full table re-arm.
            parked = self.accept_parked
            self.accept_parked = []
            for op in parked:
                op.rearm()
        return 0


def _raise_nofile(n):
    """Raise the RLIMIT_NOFILE soft limit to ``n`` if the hard limit allows:
    the kernel sizes a fixed file table against it (pitfalls #22)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < n and (hard == resource.RLIM_INFINITY or n <= hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))
        return True
    return False


cdef NetState net_state(Loop loop):
    if loop._net_state is not None:
        return <NetState>loop._net_state
    if loop._closed:
        raise RuntimeError("Event loop is closed")
    cdef NetState ctx
    cfg = loop.config
    ctx = NetState.__new__(NetState)
    ctx.loop = loop
    ctx.config = cfg
    ctx.streams = {}      # a dict used as a set: about half the bytes per entry
    ctx.high_water = cfg.send_queue_limit
    ctx.low_water = cfg.effective_send_queue_low_water
    ctx.recv_limit = cfg.recv_accumulator_limit
    ctx.nodelay = cfg.tcp_nodelay
    ctx.zc_threshold = cfg.send_zc_threshold
    ctx.zc_to_local = cfg._zc_to_local_peers
    ctx.fixed_files = -1
    ctx.accept_parked = []
    ctx.enobufs_wait = []
    ctx.future_kwargs = {"loop": loop}
    ctx.pool = SendPool.create(cfg.send_pool_slots, cfg.send_pool_slot_size)
    inc = cfg._recv_buffers_incremental and pbuf_inc_supported(loop, cfg.recv_buffer_group)
    count, size = AUTO_RECV_BUFFERS_INC if inc else AUTO_RECV_BUFFERS_PLAIN
    ctx.bufring = BufRing.create(loop, cfg.recv_buffer_count or count,
                                 cfg.recv_buffer_size or max(64, min(size, cfg.recv_accumulator_limit)),
                                 cfg.recv_buffer_group, inc)
    loop._net_state = ctx
    return ctx


def net_state_for(loop):
    """The loop's NetState (created on first use; the loop must be running)."""
    return net_state(loop)


cdef inline int _release_slot(SendPool pool, Chunk ch) except -1:
    """Give a sent (or dropped) chunk's pool slot back; pinned at acquire in
    Stream.write."""
    if ch.slot >= 0:
        pool.release(ch.slot)
        bufs_lent_add(-1)
        ch.slot = -1
    return 0


@cython.final
@cython.freelist(64)
cdef class Chunk:
    pass


cdef class SendUnit(Completion):
    # The interface only; _net/chain.pyx's ChainSend implements it.
    cdef int submit(self, Stream s) except -1:
        raise NotImplementedError

    cdef int cancel(self) except -1:
        raise NotImplementedError

    cdef int drop(self, object exc) except -1:
        raise NotImplementedError


cdef class RecvOp(Completion):
    cdef int on_cqe(self, Loop loop, int32_t res, uint32_t flags) except -1:
        # A local reference: the stream may drop its last other one in there.
        cdef Stream s = self.stream
        return s._recv_cqe(res, flags)


cdef class SendOp(Completion):
    cdef int on_cqe(self, Loop loop, int32_t res, uint32_t flags) except -1:
        cdef Stream s = self.stream
        if self.msg != NULL:
            # The SENDMSG's CQE: the kernel is done with msghdr and iovecs.
            PyMem_Free(self.msg)
            self.msg = NULL
        if RL_DEBUG and s.sending is not self:
            # Invariant: one send in flight per stream, and this is it.
            raise AssertionError(f"send CQE of {self!r}, in flight: {s.sending!r}")
        return s._send_done(res)

    def __dealloc__(self):
        # Only reached with nothing in flight (the slot table pins an op
        # until its CQE) or after the ring is gone.
        if self.msg != NULL:
            PyMem_Free(self.msg)
            self.msg = NULL


@cython.final
cdef class ZcSendOp(Completion):
    """One SEND_ZC.  Kernel ownership: ``owner`` (the pinned bytes) is held
    until the F_NOTIF CQE, or the op CQE when it carries no F_MORE (no
    notification follows, e.g. on error); the slot table pins this op for
    exactly that long."""
    cdef Stream stream
    cdef object owner

    cdef int on_cqe(self, Loop loop, int32_t res, uint32_t flags) except -1:
        if flags & RL_CQE_F_NOTIF:
            self.owner = None
            self.stream = None
            return 0
        if not (flags & RL_CQE_F_MORE):
            self.owner = None
        s = self.stream
        if not (flags & RL_CQE_F_MORE):
            self.stream = None
        if RL_DEBUG and s.sending is not self:
            raise AssertionError(f"send CQE of {self!r}, in flight: {s.sending!r}")
        return s._send_done(res)


# The send queue of every stream that has never sent: shared and always
# empty (queue_bytes swaps in a list of its own before the first append).
cdef list _NO_SENDS = []


cdef Stream stream_init(Stream s, Loop loop, int fd, bint fixed=False):
    cdef NetState ctx = net_state(loop)
    s.loop = loop
    s.ctx = ctx
    s.fd = fd
    s.fixed = fixed
    s.state = S_OPEN
    s.steal_bid = -1
    s.recv_ring = ctx.bufring
    s.sendq = _NO_SENDS
    s.recv_op = RecvOp.__new__(RecvOp)
    s.recv_op.stream = s
    ctx.streams[s] = None
    return s


cdef class Stream:
    """A connected socket on the ring (see the module docstring)."""

    def __init__(self, *a, **k):
        raise TypeError("streams are made by ringline's accept/connect paths")

    # ---- receive ----

    cdef int start_reading(self) except -1:
        self.want_read = True
        if self.state == S_OPEN and not self.eof:
            self._arm_recv()
        return 0

    cdef int stop_reading(self) except -1:
        self.want_read = False
        if self.recv_op.in_flight:
            self.loop.cancel_op(self.recv_op)
        return 0

    cdef int _arm_recv(self) except -1:
        cdef rl_sqe *sqe
        cdef BufRing ring
        if self.recv_op.in_flight or self.fd < 0:
            return 0
        ring = self.ctx.bufring
        if self.large_mode:
            ring = self.ctx.get_big_ring() if self.big_mode else self.ctx.get_large_ring()
        sqe = self.loop.sqe_for(self.recv_op, Op.RECV)
        prep_recv_multishot(sqe, self.fd, self.fixed, ring.bgid)
        self.recv_ring = ring
        self.recv_fed = False
        return 0

    cdef int _large_vote(self, BufRing br, int32_t res) except -1:
        """Move the stream to/from large-receive mode after a run of large/small
        receives: cancel the receive, whose final CQE re-arms it on the other
        ring (_recv_cqe); CQEs still in flight arrive first, in order."""
        if not self.large_mode:
            # A large message that straddles two buffers arrives as a large
            # and a small piece: a small receive only takes back half a vote.
            if res >= <int32_t>(br.size >> 1) and not self.ctx.large_ring_off:
                self.large_score += 2
                if self.large_score >= 2 * LARGE_ENTER:
                    self.large_mode = True
                    self.large_score = 0
                    self.ctx.large_switches += 1
                    self.loop.cancel_op(self.recv_op)
            elif self.large_score > 0:
                self.large_score -= 1
        elif res < <int32_t>((LARGE_RING_SIZE if br is self.ctx.big_ring else br.size) >> 2):
            # (The big ring's buffers are 4x larger: leave at the same size.)
            self.large_score += 1
            if self.large_score >= LARGE_LEAVE:
                self.large_mode = False
                self.large_score = 0
                self.big_mode = False
                self.big_score = 0
                self.ctx.large_switches += 1
                self.loop.cancel_op(self.recv_op)
        else:
            self.large_score = 0
            if self.large_big:
                self._big_vote(br, res)
        return 0

    cdef int _big_vote(self, BufRing br, int32_t res) except -1:
        """In large-receive mode, move between large_ring and big_ring: on after
        a run of receives that filled a whole large-ring buffer (the socket had
        more), off after a run that did not fill half a big one.  Only the
        receives of the ring the stream is meant to be on count (CQEs of the
        previous one can still arrive after a switch)."""
        cdef NetState ctx = self.ctx
        if not self.big_mode:
            if br is ctx.large_ring and res == <int32_t>br.size and not ctx.big_ring_off:
                self.big_score += 1
                if self.big_score >= BIG_ENTER:
                    self.big_mode = True
                    self.big_score = 0
                    ctx.large_switches += 1
                    self.loop.cancel_op(self.recv_op)
            else:
                self.big_score = 0
        elif br is ctx.big_ring:
            if res < <int32_t>(br.size >> 1):
                self.big_score += 1
                if self.big_score >= BIG_LEAVE:
                    self.big_mode = False
                    self.big_score = 0
                    ctx.large_switches += 1
                    self.loop.cancel_op(self.recv_op)
            else:
                self.big_score = 0
        return 0

    def _rearm_after_enobufs(self):
        if self.want_read and self.state == S_OPEN and not self.eof:
            self._arm_recv()
        else:
            # Closed meanwhile: nothing will re-arm, so finish the close here.
            self._maybe_finish_close()

    cdef int _recv_cqe(self, int32_t res, uint32_t flags) except -1:
        cdef uint32_t bid
        cdef BufRing br
        if res > 0:
            self.ctx.bytes_in += res
            if flags & RL_CQE_F_BUFFER:
                self.recv_fed = True
                br = self.recv_ring
                bid = flags >> RL_CQE_BUFFER_SHIFT
                if (br.inc or self.large_mode) and self.recv_op.in_flight:
                    self._large_vote(br, res)
                try:
                    if self.state != S_CLOSED:
                        if (res >= <int32_t>(br.size >> 1) and br.off[bid] == 0
                                and not (br.inc and (flags & RL_CQE_F_BUF_MORE))):
                            # At least half a buffer, and the kernel is done
                            # with it: the face may take it whole (take_bytes).
                            self.steal_bid = <int>bid
                            self.steal_n = res
                        self.on_data(br.data(bid), res)
                finally:
                    self.steal_bid = -1
                    br.consumed(bid, res, flags)
        elif res == 0:
            if not self.eof:
                self.eof = True
                if self.state != S_CLOSED:
                    self.on_eof()
        elif res == -ENOBUFS or res == -EINTR:
            if res == -ENOBUFS:
                self.recv_ring.enobufs += 1
            if self.recv_op.in_flight:
                return 0
            if self.want_read and self.state == S_OPEN and not self.eof:
                if res == -ENOBUFS:
                    # Re-arm after this batch of CQEs has recycled its buffers
                    # (NetState._rearm_enobufs: one callback for all of them).
                    if not self.ctx.enobufs_wait:
                        self.loop.call_soon(self.ctx._rearm_enobufs)
                    self.ctx.enobufs_wait.append(self)
                else:
                    self._arm_recv()
            else:
                # This may be the final CQE a requested close waits for
                # (e.g. the cancel lost the race to ENOBUFS).
                self._maybe_finish_close()
            return 0
        elif res == -ECANCELED:
            pass
        else:
            exc = error_from_errno(-res, "recv")
            if self.error is None:
                self.error = exc
            if self.state != S_CLOSED:
                self.on_error(exc)
        if not self.recv_op.in_flight:
            # The multishot recv ended (buffer ring empty is handled above,
            # cancel or kernel decision here): re-arm if the face still
            # wants data, e.g. reading was resumed while the cancel was in
            # flight.
            if (self.want_read and self.state == S_OPEN and not self.eof
                    and self.error is None and res != 0):
                self._arm_recv()
            else:
                self._maybe_finish_close()
        return 0

    cdef bytes take_bytes(self, const char *p, Py_ssize_t n, Py_ssize_t room):
        """The ``n`` bytes at ``p`` (from on_data) as a new bytes object of
        size ``room`` >= n (its tail is for the caller to fill): the provided
        buffer itself when they fill it (no copy), else a copy."""
        cdef int bid = self.steal_bid
        cdef BufRing ring = self.recv_ring
        # p must be that buffer's start in the ring the CQE came from.
        if (bid >= 0 and n == self.steal_n and room <= ring.size
                and p == ring.data(<uint32_t>bid)):
            self.steal_bid = -1
            return ring.steal(<uint32_t>bid, room)
        out = PyBytes_FromStringAndSize(NULL, room)
        memcpy(PyBytes_AS_STRING(out), p, n)
        return out

    # ---- send ----

    cdef int queue_bytes(self, object data, object waiter, bint copy) except -1:
        """Queue ``data`` behind earlier sends.  Immutable bytes are pinned
        (CPython never moves them); anything else is copied into pool slots
        (``copy``) so the caller may reuse its buffer at once."""
        cdef Chunk ch
        cdef Py_buffer view
        cdef Py_ssize_t n, off, piece
        cdef int slot, need
        cdef SendPool pool
        if not copy and PyBytes_CheckExact(data):
            n = PyBytes_GET_SIZE(data)
            if n == 0:
                if waiter is not None:
                    waiter.set_result(0)
                return 0
            ch = Chunk.__new__(Chunk)
            ch.owner = data
            ch.ptr = PyBytes_AS_STRING(data)
            ch.length = n
            ch.slot = -1
            ch.waiter = waiter
            ch.total = n
            ch.last = True
            if self.sendq is _NO_SENDS:
                self.sendq = []
            self.sendq.append(ch)
            self.queued_bytes += n
            return self._send_before_enter()
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            n = view.len
            if n == 0:
                if waiter is not None:
                    waiter.set_result(0)
                return 0
            pool = self.ctx.pool
            need = <int>((n + pool.slot_size - 1) // pool.slot_size)
            if <uint32_t>need > pool.nfree:
                pool.exhausted += 1
                raise SendPoolExhausted(
                    f"send pool has {pool.nfree} free slots of {pool.slot_size} bytes; "
                    f"{n} bytes need {need} (raise Config.send_pool_slots)")
            off = 0
            while off < n:
                piece = n - off
                if piece > pool.slot_size:
                    piece = pool.slot_size
                slot = pool.acquire()       # released in _send_done / _fail_queue
                bufs_lent_add(1)
                memcpy(pool.ptr(slot), <char*>view.buf + off, piece)
                ch = Chunk.__new__(Chunk)
                ch.ptr = pool.ptr(slot)
                ch.length = piece
                ch.slot = slot
                off += piece
                ch.last = off == n
                if ch.last:
                    ch.waiter = waiter
                    ch.total = n
                if self.sendq is _NO_SENDS:
                    self.sendq = []
                self.sendq.append(ch)
            self.queued_bytes += n
        finally:
            PyBuffer_Release(&view)
        return self._send_before_enter()

    cdef int queue_parts(self, list parts, object waiter) except -1:
        """Queue ``parts`` as one logical send; ``waiter`` resolves with the
        total.  All or nothing: if the copies would not fit the send pool,
        SendPoolExhausted is raised with nothing queued (a partial logical
        send on the wire would corrupt the peer's framing)."""
        cdef SendPool pool = self.ctx.pool
        cdef Py_ssize_t total = 0, n = 0, need = 0
        cdef Py_ssize_t i, last = -1
        cdef Chunk ch
        sizes = []
        for p in parts:
            if PyBytes_CheckExact(p):
                n = PyBytes_GET_SIZE(p)
            else:
                with memoryview(p) as v:
                    if not v.c_contiguous:
                        raise BufferError("send_parts needs contiguous buffers")
                    n = v.nbytes
                need += (n + pool.slot_size - 1) // pool.slot_size
            sizes.append(n)
            total += n
        if need > <Py_ssize_t>pool.nfree:
            pool.exhausted += 1
            raise SendPoolExhausted(
                f"send pool has {pool.nfree} free slots of {pool.slot_size} bytes; "
                f"these parts need {need} (raise Config.send_pool_slots)")
        for i in range(len(parts)):
            if sizes[i]:
                last = i
        if last < 0:
            waiter.set_result(0)
            return 0
        for i in range(last + 1):
            if sizes[i]:
                self.queue_bytes(parts[i], waiter if i == last else None,
                                 not PyBytes_CheckExact(parts[i]))
        # The waiter sits on the last chunk queued: resolve with the total.
        ch = <Chunk>self.sendq[len(self.sendq) - 1]
        ch.total = total
        return 0

    cdef int queue_unit(self, SendUnit u, Py_ssize_t n) except -1:
        """Queue ``u`` (``n`` > 0 bytes) behind earlier sends as one entry of
        the send order: sends queued later wait until it calls _unit_done."""
        cdef Chunk ch = Chunk.__new__(Chunk)
        ch.unit = u
        ch.length = n
        ch.slot = -1
        ch.last = True
        if self.sendq is _NO_SENDS:
            self.sendq = []
        self.sendq.append(ch)
        self.queued_bytes += n
        return self._send_before_enter()

    cdef int _unit_done(self, object exc) except -1:
        """The SendUnit in flight is done with the socket: all its bytes
        went out (``exc`` None) or it failed with ``exc``.  As _send_done:
        the queue moves on, or the stream fails."""
        cdef Chunk ch = <Chunk>self.sendq[0]
        if RL_DEBUG and (ch.unit is None or self.sending is not ch.unit):
            raise AssertionError(f"unit done, in flight: {self.sending!r}")
        self.sending = None
        self.sending_n = 0
        del self.sendq[0]
        self.queued_bytes -= ch.length - ch.off
        ch.unit = None
        if exc is not None:
            self.send_failed = True
            if self.error is None:
                self.error = exc
            self._fail_queue(exc)
            if self.state != S_CLOSED:
                self.on_error(exc)
            self._maybe_finish_close()
            return 0
        if self.sendq:
            self._send_before_enter()
        elif self.shut_requested:
            self._do_shutdown()
        self.on_writable()
        self._maybe_finish_close()
        return 0

    cdef int queue_shutdown(self) except -1:
        self.shut_requested = True
        if not self.sendq and self.sending is None:
            self._do_shutdown()
        return 0

    cdef _do_shutdown(self):
        cdef rl_sqe *sqe
        if not self.shut_done and self.fd >= 0:
            self.shut_done = True
            if self.fixed:
                # A fixed descriptor has no process fd for shutdown(2).  No
                # send is in flight (we come here after the last send CQE) and
                # SQEs are issued in order, so a later CLOSE cannot overtake it.
                sqe = self.loop.sqe_orphan(Op.SHUTDOWN)
                prep_shutdown(sqe, self.fd, True, SHUT_WR)
            else:
                shutdown(self.fd, SHUT_WR)

    cdef int shutdown_read(self) except -1:
        """shutdown(SHUT_RD): a receive waiting on this stream ends with end
        of stream (the kernel wakes it), later ones too once what already
        arrived is consumed; sending goes on.  A graceful server stop uses
        it to let handlers finish their request and return."""
        cdef rl_sqe *sqe
        if self.fd < 0:
            return 0
        if self.fixed:
            sqe = self.loop.sqe_orphan(Op.SHUTDOWN)
            prep_shutdown(sqe, self.fd, True, SHUT_RD)
        else:
            shutdown(self.fd, SHUT_RD)
        return 0

    cdef int _send_before_enter(self) except -1:
        """Send what is queued once the loop is about to enter the kernel:
        everything written meanwhile (e.g. while one batch of completions is
        dispatched) leaves as one SEND/SENDMSG instead of a SEND for the
        first write and a SENDMSG for the rest after its CQE."""
        if self.sending is None:
            self.loop.before_enter(self)
        return 0

    cdef int on_before_enter(self) except -1:
        return self._submit_send()

    cdef int _submit_send(self) except -1:
        cdef SendOp op = self.send_op
        cdef Chunk ch
        cdef rl_sqe *sqe
        cdef int n = 0
        cdef Py_ssize_t nq
        cdef msghdr_t *msg
        cdef iovec *iov
        cdef ZcSendOp zc
        if self.sending is not None or not self.sendq or self.fd < 0 or self.send_failed:
            return 0
        if op is None:
            # Made at the first send: an idle stream carries no SendOp.
            op = SendOp.__new__(SendOp)
            op.stream = self
            op.quiet = self.recv_op.quiet       # the face's choice (new_connection)
            self.send_op = op
        ch = <Chunk>self.sendq[0]
        if ch.unit is not None:
            # A send chain's turn in the send order: it is the send in
            # flight until it calls _unit_done.
            self.sending = ch.unit
            self.sending_n = 1
            try:
                return ch.unit.submit(self)
            except BaseException:
                self.sending = None     # it raises only with nothing submitted
                self.sending_n = 0
                raise
        self.loop.send_queued = True     # every branch below prepares a send
        if (ch.slot < 0 and self.ctx.zc_threshold > 0 and not self.no_zc
                and ch.length - ch.off >= self.ctx.zc_threshold):
            # Large pinned payload: the kernel reads it in place (SEND_ZC);
            # the object stays pinned until the F_NOTIF CQE (pitfalls #5).
            zc = ZcSendOp.__new__(ZcSendOp)
            zc.stream = self
            zc.owner = ch.owner
            sqe = self.loop.sqe_for(zc, Op.SEND_ZC)
            prep_send_zc(sqe, self.fd, self.fixed, ch.ptr + ch.off, <uint32_t>(ch.length - ch.off),
                         MSG_NOSIGNAL | MSG_WAITALL)
            self.sending = zc
            self.sending_n = 1
            return 0
        if len(self.sendq) == 1 or (<Chunk>self.sendq[1]).unit is not None:
            sqe = self.loop.sqe_for(op, Op.SEND)
            prep_send(sqe, self.fd, self.fixed, ch.ptr + ch.off, <uint32_t>(ch.length - ch.off),
                      MSG_NOSIGNAL | MSG_WAITALL)
            self.sending = op
            self.sending_n = 1
            return 0
        nq = len(self.sendq)
        if nq > IOV_BATCH:
            nq = IOV_BATCH
        # msghdr and iovecs for this SENDMSG only: freed at its CQE
        # (SendOp.on_cqe), so they stay put while the kernel may read them.
        msg = <msghdr_t*>PyMem_Malloc(sizeof(msghdr_t) + <size_t>nq * sizeof(iovec))
        if msg == NULL:
            raise MemoryError()
        iov = <iovec*>(msg + 1)
        for ch in self.sendq:
            if ch.unit is not None:
                break               # a send chain goes on its own, in its turn
            iov[n].iov_base = <void*>(ch.ptr + ch.off)
            iov[n].iov_len = <size_t>(ch.length - ch.off)
            n += 1
            if n == nq:
                break
        memset(msg, 0, sizeof(msghdr_t))
        msg.msg_iov = iov
        msg.msg_iovlen = n
        try:
            sqe = self.loop.sqe_for(op, Op.SENDMSG)
        except BaseException:
            PyMem_Free(msg)
            raise
        op.msg = msg
        prep_sendmsg(sqe, self.fd, self.fixed, msg, MSG_NOSIGNAL | MSG_WAITALL)
        self.sending = op
        self.sending_n = n
        return 0

    cdef int _send_done(self, int32_t res) except -1:
        cdef list q = self.sendq
        cdef Py_ssize_t i, inflight = self.sending_n
        cdef Chunk ch
        cdef Py_ssize_t remaining, avail, done
        cdef SendPool pool = self.ctx.pool
        if RL_DEBUG and not 0 < inflight <= len(q):
            # Invariant: what is retired is the first sending_n queued chunks.
            raise AssertionError(f"send done with sending_n={inflight}, {len(q)} queued")
        self.sending = None
        self.sending_n = 0               # unpin (see _submit_send)
        if res > 0:
            self.ctx.bytes_out += res
        if res < 0:
            if res == -EINTR or res == -EAGAIN:
                self._submit_send()
                return 0
            if res == -EOPNOTSUPP and not self.no_zc:
                # SEND_ZC is TCP/UDP only (an AF_UNIX stream answers
                # EOPNOTSUPP having sent nothing): resend by copy from now on.
                self.no_zc = True
                self._submit_send()
                return 0
            exc = error_from_errno(-res, "send")
            self.send_failed = True
            if self.error is None:
                self.error = exc
            self._fail_queue(exc)
            if self.state != S_CLOSED:
                self.on_error(exc)
            self._maybe_finish_close()
            return 0
        remaining = res
        done = 0
        for i in range(inflight):
            ch = <Chunk>q[i]
            avail = ch.length - ch.off
            if remaining >= avail:
                remaining -= avail
                ch.off = ch.length
                done += 1               # the front of sendq is what was sent
                self.queued_bytes -= avail
                _release_slot(pool, ch)
                ch.owner = None
                if ch.waiter is not None:
                    if not ch.waiter.done():
                        ch.waiter.set_result(ch.total)
                    ch.waiter = None
            else:
                # Short send: resume from where the kernel stopped.
                ch.off += remaining
                self.queued_bytes -= remaining
                break
        if done == len(self.sendq):
            list_drop_all(self.sendq)
        elif done:
            del self.sendq[:done]
        if self.sendq:
            self._send_before_enter()
        elif self.shut_requested:
            self._do_shutdown()
        self.on_writable()
        self._maybe_finish_close()
        return 0

    cdef int _fail_queue(self, object exc) except -1:
        """Drop queued chunks that are not in flight; fail their waiters."""
        cdef Chunk ch
        cdef SendPool pool = self.ctx.pool
        cdef Py_ssize_t i = 0
        cdef list keep = []
        for ch in self.sendq:
            i += 1
            if i <= self.sending_n:       # in flight: the kernel still reads it
                keep.append(ch)
                continue
            self.queued_bytes -= ch.length - ch.off
            _release_slot(pool, ch)
            ch.owner = None
            if ch.unit is not None:
                ch.unit.drop(exc)       # never submitted: it fails its own waiter
                ch.unit = None
            if ch.waiter is not None and not ch.waiter.done():
                ch.waiter.set_exception(
                    exc if exc is not None else ConnectionAbortedError("connection closed before the send"))
            ch.waiter = None
        self.sendq = keep if keep else _NO_SENDS
        return 0

    # ---- close ----

    cdef int begin_close(self) except -1:
        if self.state != S_OPEN:
            return 0
        self.state = S_CLOSING
        self.want_read = False
        self._maybe_finish_close()
        return 0

    cdef int abort_stream(self, object exc) except -1:
        if self.state == S_CLOSED:
            return 0
        self.state = S_CLOSING
        self.want_read = False
        if exc is not None and self.error is None:
            self.error = exc
        self.send_failed = True
        self._fail_queue(exc)
        if isinstance(self.sending, SendUnit):
            (<SendUnit>self.sending).cancel()      # its SQEs, not itself
        elif self.sending is not None:
            self.loop.cancel_op(self.sending)
        self._maybe_finish_close()
        return 0

    cdef int _maybe_finish_close(self) except -1:
        if self.state != S_CLOSING:
            return 0
        if self.sending is not None:
            return 0
        if self.sendq and not self.send_failed:
            return 0
        if self.recv_op.in_flight:
            self.loop.cancel_op(self.recv_op)   # its final CQE brings us back
            return 0
        self.state = S_CLOSED
        self.ctx.streams.pop(self, None)
        self._fail_queue(self.error)
        # Nothing of ours is in flight on the ops now (a ZcSendOp waiting
        # for its notification lets go by itself): drop their references
        # back to the stream, so a closed stream is freed by refcounting.
        self.recv_op.stream = None
        if self.send_op is not None:
            self.send_op.stream = None
        if self.fd >= 0:
            if self.close_fd():
                # IORING_OP_CLOSE on the slot: closed for the face once its
                # CQE is in (the peer has its FIN, the slot is free again).
                self.fd = -1
                return 0
            self.fd = -1
        return self._close_done()

    cdef int _close_done(self) except -1:
        if not self.closed_cb_done:
            self.closed_cb_done = True
            self.on_closed()
        return 0

    # ---- hooks for the faces ----

    cdef int close_fd(self) except -1:
        """Close the socket once nothing is in flight on it (a face that
        keeps a Python socket object closes through that instead).  Returns
        1 when the close completes asynchronously (a fixed descriptor)."""
        if self.fixed:
            close_fixed_slot(self.loop, self.ctx, self.fd, self)
            return 1
        c_close(self.fd)
        return 0

    cdef int on_data(self, const char *p, Py_ssize_t n) except -1:
        return 0

    cdef int on_eof(self) except -1:
        return 0

    cdef int on_error(self, object exc) except -1:
        self.abort_stream(exc)
        return 0

    cdef int on_closed(self) except -1:
        return 0

    cdef int on_writable(self) except -1:
        return 0

    # ---- Python-visible ----

    def with_real_fd(self, fn):
        """Future of ``fn(fd)`` with a process fd for this socket: the fd
        itself, or for a fixed descriptor a temporary one installed by the
        kernel (FIXED_FD_INSTALL) and closed when ``fn`` returns."""
        if self.fd < 0:
            raise OSError("stream is closed")
        if self.fixed:
            # sockops cimports this module: import it here, not at the top
            from ringline._net.sockops import install_call
            return install_call(self.loop, self.fd, fn)
        fut = self.loop.create_future()
        try:
            fut.set_result(fn(self.fd))
        except Exception as exc:
            fut.set_exception(exc)
        return fut

    @property
    def closing(self):
        return self.state != S_OPEN

    @property
    def closed(self):
        return self.state == S_CLOSED


# ---------------------------------------------------------------------------
# Accept
# ---------------------------------------------------------------------------

@cython.final
cdef class _CloseSlot(Completion):
    """IORING_OP_CLOSE of one fixed-table slot.  The slot counts as held
    until this CQE (the kernel may hand it out again from then on)."""
    cdef NetState ctx
    cdef Stream stream         # told when the close is done, or None

    cdef int on_cqe(self, Loop loop, int32_t res, uint32_t flags) except -1:
        cdef Stream s = self.stream
        self.stream = None
        self.ctx._slot_freed()
        if s is not None:
            s._close_done()
        return 0


cdef int close_fixed_slot(Loop loop, NetState ctx, int slot, Stream stream) except -1:
    cdef _CloseSlot op = _CloseSlot.__new__(_CloseSlot)
    cdef rl_sqe *sqe
    op.ctx = ctx
    op.stream = stream
    sqe = loop.sqe_for(op, Op.CLOSE)
    prep_close_fixed(sqe, <uint32_t>slot)
    return 0
