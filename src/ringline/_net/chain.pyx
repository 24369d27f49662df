# cython: language_level=3, boundscheck=False, wraparound=False
"""Linked send chains: ``Connection.send_chain(parts)``.

Each part is one SEND SQE (SEND_ZC at or above ``Config.send_zc_threshold``,
unless the stream refuses zero-copy), linked to the next with
IOSQE_IO_LINK, so the kernel runs them in order without a trip through the
loop between parts.

Ordering.  A chain is one entry of its stream's send queue (``Stream.queue_unit``):
sends queued before it go out first, sends queued after it wait until its
last part is done (the one-send-in-flight rule, pitfalls #2).

Segments.  Linked SQEs must reach the kernel in one submission, so a chain
goes out in segments of at most SEG_MAX SQEs (and at most the SQ's size),
the next one submitted from the completion of the previous one.

Short sends.  Every part carries MSG_WAITALL, so the kernel itself retries
a partial stream send; when a part still ends short (or with EINTR/EAGAIN,
or EOPNOTSUPP from SEND_ZC on a socket that has no zero-copy, e.g. AF_UNIX)
the kernel breaks the link and the later parts of the segment end with
ECANCELED having sent nothing.  The chain then resumes from the first byte
not sent, in order: no byte lost or reordered (pitfalls #6).

Memory.  Every part is held, a reference and a buffer export
(PyObject_GetBuffer), from the call until the chain is finished: all op
CQEs in and, for SEND_ZC parts, their notification CQEs (IORING_CQE_F_NOTIF,
pitfalls #5).  Nothing is copied.  A bytearray in a chain cannot be resized
meanwhile (BufferError).  The awaitable resolves (with the total, or the
first error) only then, so the caller may reuse its buffers once it has.
"""
cimport cython
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.mem cimport PyMem_Calloc, PyMem_Free
from libc.errno cimport EINTR, EAGAIN, EIO
from libc.stdint cimport int32_t, uint32_t
from ringline._core.abi.uring cimport *
from ringline._net.csocket cimport MSG_NOSIGNAL, MSG_WAITALL, EOPNOTSUPP, ECANCELED
from ringline._core.loop cimport Loop, Completion
from ringline._core.ops cimport prep_send, prep_send_zc
from ringline._core.tags cimport Op
from ringline._net.stream cimport Stream, SendUnit, NetState
from ringline.errors import error_from_errno


cdef Py_ssize_t SEG_MAX = 64            # most SQEs of one linked segment
cdef Py_ssize_t SQE_MAX = 1 << 30       # most bytes one SQE sends (len is 32-bit)
# Test knob (_set_split): each SQE sends at most this many bytes and ends
# its segment, so the resume path runs on every part.  0: off.
cdef Py_ssize_t g_split = 0


def _set_split(Py_ssize_t n):
    """Tests only: cap every chain SQE at ``n`` bytes (0 = off), which makes
    each part end short and the chain resume it.  Returns the old value."""
    global g_split
    old = g_split
    g_split = n if n > 0 else 0
    return old


cdef struct Part:
    Py_buffer view           # the caller's buffer, exported until the chain is finished
    Py_ssize_t off           # bytes of it the kernel took
    int32_t res              # CQE result in the current segment
    bint zc                  # submitted as SEND_ZC in the current segment
    bint seen                # its op CQE of the current segment is in
    bint held                # view holds an export (to release)


@cython.final
cdef class _PartOp(Completion):
    """One SQE of a chain.  Kernel ownership: the bytes it sends belong to
    the chain's Part, held until the chain is finished, which waits for this
    op's final CQE (the F_NOTIF one for SEND_ZC)."""
    cdef ChainSend chain
    cdef Py_ssize_t idx

    cdef int on_cqe(self, Loop loop, int32_t res, uint32_t flags) except -1:
        cdef ChainSend c = self.chain
        if flags & RL_CQE_F_NOTIF:
            self.chain = None
            c.notifs_out -= 1
            return c._maybe_finish()
        if flags & RL_CQE_F_MORE:
            c.notifs_out += 1       # a notification follows: the slot stays live
        else:
            self.chain = None
        return c._op_done(self.idx, res)


@cython.final
cdef class ChainSend(SendUnit):
    cdef Stream stream       # until the chain is done with the socket
    cdef object waiter       # Future: the total, or the first error
    cdef Part *parts
    cdef Py_ssize_t n        # parts (empty ones are left out)
    cdef Py_ssize_t total
    cdef Py_ssize_t next     # first part not fully sent
    cdef Py_ssize_t seg_lo, seg_hi
    cdef int ops_out         # op CQEs of the segment still to come
    cdef int notifs_out      # notification CQEs still to come
    cdef list seg_ops        # the segment's _PartOps (for cancel), None between segments
    cdef bint aborting       # the stream is aborted: cancel, then fail
    cdef bint over           # done with the socket (or dropped)
    cdef bint finished       # buffers released, waiter resolved
    cdef object exc

    def __dealloc__(self):
        # Only reached finished (the parts' ops hold the chain until their
        # final CQEs) or never queued.
        self._release()

    cdef void _release(self) noexcept:
        cdef Py_ssize_t i
        if self.parts != NULL:
            for i in range(self.n):
                if self.parts[i].held:
                    self.parts[i].held = False
                    PyBuffer_Release(&self.parts[i].view)
            PyMem_Free(self.parts)
            self.parts = NULL

    # ---- SendUnit ----

    cdef int submit(self, Stream s) except -1:
        return self._submit_segment()

    cdef int cancel(self) except -1:
        cdef _PartOp op
        self.aborting = True
        if self.seg_ops is not None:
            for op in self.seg_ops:
                if op.in_flight and not self.parts[op.idx].seen:
                    self.stream.loop.cancel_op(op)
        return 0

    cdef int drop(self, object exc) except -1:
        if self.over:
            return 0
        self.over = True
        self.stream = None
        self.exc = exc if exc is not None else ConnectionAbortedError(
            "connection closed before the send")
        return self._maybe_finish()

    # ---- segments ----

    cdef int _submit_segment(self) except -1:
        cdef Stream s = self.stream
        cdef Loop loop = s.loop
        cdef NetState ctx = s.ctx
        cdef Py_ssize_t lo = self.next, hi, i, k, room, ln
        cdef Part *p
        cdef _PartOp op
        cdef rl_sqe *sqe = NULL
        cdef bint last
        hi = self.n
        if hi - lo > SEG_MAX:
            hi = lo + SEG_MAX
        room = loop.ring.r.sq_entries
        if hi - lo > room:
            hi = lo + room
        # The linked SQEs must reach the kernel in one submission.
        loop.ring.reserve(<unsigned>(hi - lo))
        self.seg_ops = []
        self.seg_lo = lo
        k = lo
        try:
            for i in range(lo, hi):
                p = &self.parts[i]
                ln = p.view.len - p.off
                last = i + 1 == hi
                if ln > SQE_MAX:
                    ln = SQE_MAX
                    last = True     # ends short by design: nothing may be linked after it
                if g_split and ln > g_split:
                    ln = g_split
                    last = True
                op = _PartOp.__new__(_PartOp)
                op.chain = self
                op.idx = i
                op.quiet = True     # resolves a future at most
                p.zc = ctx.zc_threshold > 0 and not s.no_zc and ln >= ctx.zc_threshold
                p.seen = False
                p.res = 0
                if p.zc:
                    sqe = loop.sqe_for(op, Op.SEND_ZC)
                    prep_send_zc(sqe, s.fd, s.fixed, <char*>p.view.buf + p.off, <uint32_t>ln,
                                 MSG_NOSIGNAL | MSG_WAITALL)
                else:
                    sqe = loop.sqe_for(op, Op.SEND)
                    prep_send(sqe, s.fd, s.fixed, <char*>p.view.buf + p.off, <uint32_t>ln,
                              MSG_NOSIGNAL | MSG_WAITALL)
                self.seg_ops.append(op)
                self.ops_out += 1
                k = i + 1
                if last:
                    break
                sqe.flags |= RL_IOSQE_IO_LINK
        except BaseException:
            if k == lo:
                self.seg_ops = None
                raise           # nothing submitted: the stream keeps it queued
            # Some went in: end the segment at the last one prepared.
            sqe.flags &= ~RL_IOSQE_IO_LINK
        self.seg_hi = k
        loop.send_queued = True
        return 0

    cdef int _op_done(self, Py_ssize_t idx, int32_t res) except -1:
        cdef Part *p = &self.parts[idx]
        cdef _PartOp op
        p.res = res
        p.seen = True
        self.ops_out -= 1
        if self.ops_out:
            if self.aborting:
                # A cancel may have missed the next part (not started yet):
                # ask again now that it runs.
                for op in self.seg_ops:
                    if op.in_flight and not self.parts[op.idx].seen:
                        self.stream.loop.cancel_op(op)
                        break
            return 0
        return self._segment_done()

    cdef int _segment_done(self) except -1:
        cdef Stream s = self.stream
        cdef Py_ssize_t i
        cdef Part *p
        cdef int32_t r, err = 0
        cdef bint broken = False, corrupt = False
        self.seg_ops = None
        for i in range(self.seg_lo, self.seg_hi):
            p = &self.parts[i]
            r = p.res
            if r >= 0:
                if broken and r > 0:
                    corrupt = True      # sent after a gap: never with MSG_WAITALL
                p.off += r
                s.ctx.bytes_out += r
                if p.off < p.view.len:
                    broken = True       # short: the link broke here, resume from it
            elif r == -ECANCELED:
                if not broken and not self.aborting and err == 0:
                    err = r             # cancelled from outside (loop close)
                broken = True           # else: a broken link's casualty
            elif r == -EINTR or r == -EAGAIN:
                broken = True
            elif r == -EOPNOTSUPP and p.zc and not s.no_zc:
                s.no_zc = True          # no zero-copy here (AF_UNIX): copy sends from now on
                broken = True
            else:
                if err == 0 and not broken:
                    err = r
                broken = True
        while self.next < self.n and self.parts[self.next].off == self.parts[self.next].view.len:
            self.next += 1
        exc = None
        if corrupt:
            exc = error_from_errno(EIO, "send chain: a linked send went out after a short one")
        elif self.next == self.n:
            pass                        # all of it went out (even if an abort came meanwhile)
        elif self.aborting:
            exc = s.error if s.error is not None else ConnectionAbortedError("connection aborted")
        elif err:
            exc = error_from_errno(-err, "send")
        else:
            try:
                return self._submit_segment()
            except Exception as e:     # nothing of the next segment went in
                exc = e
        return self._over(exc)

    cdef int _over(self, object exc) except -1:
        cdef Stream s = self.stream
        self.over = True
        self.stream = None
        self.exc = exc
        s._unit_done(exc)
        return self._maybe_finish()

    cdef int _maybe_finish(self) except -1:
        if self.finished or not self.over or self.ops_out or self.notifs_out:
            return 0
        self.finished = True
        self._release()
        w = self.waiter
        self.waiter = None
        if w is not None and not w.done():
            if self.exc is None:
                w.set_result(self.total)
            else:
                w.set_exception(self.exc)
        self.exc = None
        return 0


cdef int queue_chain(Stream s, object parts, object waiter) except -1:
    """Queue ``parts`` (buffers) on ``s`` as one linked chain; ``waiter``
    gets the total.  Every part is exported here, so a wrong type raises
    (TypeError, BufferError for a non-contiguous buffer) with nothing queued."""
    cdef ChainSend c
    cdef Py_ssize_t n, k = 0, total = 0
    cdef Part *p
    seq = parts if type(parts) is list else list(parts)
    n = len(seq)
    c = ChainSend.__new__(ChainSend)
    if n:
        c.parts = <Part*>PyMem_Calloc(<size_t>n, sizeof(Part))
        if c.parts == NULL:
            raise MemoryError()
    for obj in seq:
        p = &c.parts[k]
        PyObject_GetBuffer(obj, &p.view, PyBUF_SIMPLE)   # on error c releases the others
        if p.view.len == 0:
            PyBuffer_Release(&p.view)
            continue
        p.held = True
        k += 1
        c.n = k
        total += p.view.len
    c.n = k
    if total == 0:
        c._release()
        waiter.set_result(0)
        return 0
    c.total = total
    c.stream = s
    c.waiter = waiter
    return s.queue_unit(c, total)
