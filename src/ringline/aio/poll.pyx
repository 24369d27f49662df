# cython: language_level=3, boundscheck=False, wraparound=False
"""Readiness on the ring: asyncio's add_reader/add_writer as IORING_OP_POLL_ADD.

Data flow:  selector.register/modify/unregister -> ``Poller.set`` ->
``FdPoll.update`` -> POLL_ADD / ASYNC_CANCEL SQE -> (one io_uring_enter per
iteration) -> CQE -> ``FdPoll.on_cqe`` -> one dispatch Handle in the ready
queue -> the asyncio reader/writer Handles run -> ``update`` re-arms.

Level-triggered, like epoll as asyncio uses it
----------------------------------------------
asyncio's contract is level-triggered: while an fd stays readable its reader
runs again on every loop iteration, whether or not the previous run consumed
everything.  A multishot POLL_ADD is not that: the kernel posts a CQE when the
file's wait queue is woken with a matching event (new data, a state change),
and nothing when the reader simply left data behind -- a reader that consumes
part of the data would stall (tests/aio/test_readiness.py measures it with the
``multishot=True`` mode kept here for that purpose).

So each watch is a one-shot POLL_ADD, re-armed after the callbacks ran.  The
kernel checks readiness when it arms a poll (vfs_poll), so an fd still
readable completes at once, inside the next iteration's io_uring_enter, and
its reader runs again in that iteration: exactly one run per iteration while
the condition holds, as with epoll.  The re-arm costs one SQE, batched into
the single enter; a multishot poll plus a poll(2) re-check would cost a
syscall per callback instead.  One-shot also makes removal cheap: after the
poll fired (the usual case for sock_recv and friends) nothing is in the
kernel and remove_reader submits nothing.

Other decisions
---------------
* One watch per fd with the union mask, as epoll has.  A mask change while a
  poll is armed cancels it; its final CQE (-ECANCELED, or events that are now
  stale) re-arms with the current mask.
* The kernel holds a reference to the file while a poll is armed, so an fd
  closed while watched stays open underneath until the poll is cancelled
  (selectors require unregistering before closing anyway).  To give
  remove_reader + close the meaning they have with epoll -- the peer sees the
  close at once -- a cancel that drops the last interest in an fd is
  submitted right away (an extra io_uring_enter on that cold path only).
* Like epoll, registering a closed fd raises EBADF and a regular file or a
  directory raises EPERM, synchronously.  A poll that later fails with
  -EBADF (the fd was closed while still registered) silences the watch.
* Polls asked for before the ring is enabled (the loop has not run yet) are
  armed by a callback that the loop runs on its first iteration.
* Callbacks are asyncio Handles (the selector shim stores asyncio's
  ``(reader, writer)`` pair); events map to them as EpollSelector maps them:
  POLLERR/POLLHUP wake both.
"""
import os

from cpython.pythread cimport PyThread_get_thread_ident
from libc.errno cimport errno, EBADF, EPERM
from libc.stdint cimport uint32_t, int32_t
from posix.stat cimport struct_stat, fstat, S_ISREG, S_ISDIR

from ringline._core.abi.uring cimport rl_sqe, RL_CQE_F_MORE
from ringline._core.loop cimport Loop, Completion
from ringline._core.ops cimport prep_poll_add
from ringline._core.ring cimport Ring
from ringline._core.tags cimport Op


cdef extern from "errno.h":
    int ECANCELED

cdef extern from "poll.h":
    int POLLIN
    int POLLOUT

cdef enum:
    EV_READ = 1      # selectors.EVENT_READ
    EV_WRITE = 2     # selectors.EVENT_WRITE


cdef class FdPoll(Completion):

    def __repr__(self):
        return (f"<FdPoll fd={self.fd} want={self.want:#x} armed={self.armed:#x}"
                f"{' cancelling' if self.cancel_sent else ''}"
                f"{' queued' if self.queued else ''}{' deferred' if self.deferred else ''}"
                f"{' dead' if self.dead else ''}>")

    cdef int arm(self) except -1:
        cdef Poller p = self.poller
        cdef Loop loop = p.loop
        cdef rl_sqe *sqe
        if loop.ring.disabled:
            return p.defer(self)
        sqe = loop.sqe_for(self, Op.POLL)
        prep_poll_add(sqe, self.fd, False, self.want, p.multishot)
        self.armed = self.want
        return 0

    cdef int forget(self) except -1:
        cdef Poller p = self.poller
        if p.fds.get(self.fd) is self:
            del p.fds[self.fd]
        return 0

    cdef int update(self) except -1:
        """Bring the kernel in line with ``want``: arm, cancel, or nothing."""
        cdef Poller p = self.poller
        if p.closed:
            return 0
        if self.in_flight:
            if self.cancel_sent or self.armed == self.want:
                return 0
            # The mask changed (or nobody wants the fd): the final CQE of the
            # cancelled poll re-arms with whatever is wanted by then.
            p.loop.cancel_op(self)
            self.cancel_sent = True
            if self.want == 0:
                p.flush_cancels()
            return 0
        if self.queued or self.deferred:
            return 0              # the pending dispatch / first iteration arms
        if self.want == 0:
            self.forget()
            return 0
        if self.dead:
            return 0
        return self.arm()

    cdef int on_cqe(self, Loop loop, int32_t res, uint32_t flags) except -1:
        cdef Poller p = self.poller
        cdef bint final = not (flags & RL_CQE_F_MORE)
        cdef bint stale = self.cancel_sent
        cdef object r = None
        cdef object w = None
        if final:
            self.armed = 0
            self.cancel_sent = False
        if p.closed or loop._closing:
            return 0
        if res > 0:
            if not stale:
                self.fires += 1
                # EpollSelector's mapping: anything but POLLIN (ERR, HUP...)
                # wakes the writer, anything but POLLOUT wakes the reader.
                if (self.want & POLLIN) and (res & ~POLLOUT):
                    r = self.reader
                if (self.want & POLLOUT) and (res & ~POLLIN):
                    w = self.writer
                if r is not None or w is not None:
                    if not self.queued:
                        self.queued = True
                        loop._call_soon(self._dispatch, (r, w), None)
                    return 0          # the dispatch re-arms
        elif res == -EBADF:
            # The fd was closed while registered: epoll would drop it
            # silently; so do we until it is registered again.
            self.dead = True
        elif res < 0 and res != -ECANCELED:
            self.dead = True
            loop.call_exception_handler({
                "message": f"ringline: POLL_ADD on fd {self.fd} failed",
                "exception": OSError(-res, os.strerror(-res)),
            })
        if final:
            self.update()
        return 0

    def _dispatch(self, r, w):
        """Run the reader and writer that the CQE found (unless removed since),
        then re-arm: if the fd is still ready the poll completes at once."""
        cdef Poller p = self.poller
        try:
            if r is not None:
                if not r._cancelled:
                    r._run()
                elif self.reader is r and not p.closed:
                    # Cancelled but still registered: drop it, as asyncio does.
                    p.loop._remove_reader(self.fd)
            if w is not None:
                if not w._cancelled:
                    w._run()
                elif self.writer is w and not p.closed:
                    p.loop._remove_writer(self.fd)
        finally:
            self.queued = False
            self.update()


cdef class Poller:
    """fd -> FdPoll for one loop; the engine behind ringline.aio.readiness.RingSelector."""

    def __cinit__(self, Loop loop, bint multishot=False):
        self.loop = loop
        self.fds = {}
        self.deferred = []
        self.multishot = multishot

    def set(self, int fd, int events, object data):
        """Watch ``fd`` for ``events`` (selectors.EVENT_READ|EVENT_WRITE; 0 =
        stop) and run ``data = (reader, writer)`` (asyncio Handles) on them."""
        cdef FdPoll fp = self.fds.get(fd)
        cdef uint32_t want = 0
        cdef struct_stat st
        if self.closed:
            raise RuntimeError("the selector is closed")
        if events & EV_READ:
            want |= POLLIN
        if events & EV_WRITE:
            want |= POLLOUT
        if want and (fp is None or fp.want == 0):
            # A new registration: refuse what epoll refuses, synchronously.
            if fstat(fd, &st) != 0:
                raise OSError(errno, os.strerror(errno))
            if S_ISREG(st.st_mode) or S_ISDIR(st.st_mode):
                raise PermissionError(EPERM, os.strerror(EPERM))
        if fp is None:
            if not want:
                return
            fp = FdPoll.__new__(FdPoll)
            fp.fd = fd
            fp.poller = self
            self.fds[fd] = fp
        if want and fp.want == 0:
            fp.dead = False
        if want:
            fp.reader, fp.writer = data
        else:
            fp.reader = fp.writer = None
        fp.want = want
        try:
            fp.update()
        except BaseException:
            # Not armed (the SQ stayed full): the registration did not happen.
            if not fp.in_flight:
                fp.want = 0
                fp.reader = fp.writer = None
                if not (fp.queued or fp.deferred):
                    fp.forget()
            raise

    cdef int defer(self, FdPoll fp) except -1:
        fp.deferred = True
        self.deferred.append(fp)
        if not self.arm_scheduled:
            self.arm_scheduled = True
            self.loop._call_soon(self._arm_deferred, None, None)
        return 0

    def _arm_deferred(self):
        """First iteration of the loop: the ring is enabled now."""
        cdef FdPoll fp
        cdef list todo = self.deferred
        self.deferred = []
        self.arm_scheduled = False
        for fp in todo:
            fp.deferred = False
            fp.update()

    cdef int flush_cancels(self) except -1:
        """Submit now (on the ring's thread only) so that the kernel lets go of
        the file before the caller closes the fd."""
        cdef Loop loop = self.loop
        cdef Ring ring = loop.ring
        if ring is None or ring.closed or ring.disabled or loop._closing:
            return 0
        tid = loop._thread_id
        if tid is None:
            tid = loop._ring_thread
        if tid is not None and tid == PyThread_get_thread_ident():
            try:
                ring.enter(0, 0.0)
            except FileExistsError:
                pass    # not the issuer after all (a reused thread ident): the loop's close abandons
        return 0

    def close(self, bint cancel=True):
        """Stop watching everything.  ``cancel``: ask the kernel to drop the
        armed polls (False when the caller is not the ring's thread); the loop
        reaps them when it drains the ring."""
        cdef FdPoll fp
        if self.closed:
            return
        self.closed = True
        if cancel and self.loop.ring is not None and not self.loop.ring.closed:
            for fp in self.fds.values():
                if fp.in_flight and not fp.cancel_sent:
                    self.loop.cancel_op(fp)
                    fp.cancel_sent = True
        for fp in self.fds.values():
            fp.reader = fp.writer = None
            fp.want = 0
        self.fds.clear()
        self.deferred = []

    def watch(self, int fd):
        """The FdPoll of ``fd`` or None (tests, diagnostics)."""
        return self.fds.get(fd)

    def __len__(self):
        return len(self.fds)


def call_handle_soon(Loop loop, handle):
    """Queue an asyncio Handle (signal handlers) on the compiled ready queue."""
    loop._call_soon(_run_handle, (handle,), None)


def _run_handle(handle):
    if not handle._cancelled:
        handle._run()


def wakeup(Loop loop):
    """Wake the loop if it is blocked in io_uring_enter (eventfd write)."""
    loop._wakeup()
