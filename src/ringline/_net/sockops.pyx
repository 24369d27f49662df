# cython: language_level=3, boundscheck=False, wraparound=False
"""Socket operations on the ring: accept, connect, socket into the fixed file
table, a temporary process fd for a fixed slot, close of a slot, and the
socket-address helpers both faces share."""

import os as _os
import socket as _socket

cimport cython
from libc.errno cimport ETIME
from libc.stdint cimport uint16_t, uint32_t, int32_t, uint64_t, int64_t
from libc.string cimport memcmp, memcpy
from posix.unistd cimport close as c_close
from ringline._core.abi.uring cimport *
from ringline._net.csocket cimport *
from ringline._net.stream cimport NetState, net_state, close_fixed_slot
from ringline._core.loop cimport Loop, Completion
from ringline._core.ops cimport (prep_connect, prep_link_timeout, prep_accept_multishot,
                                 prep_accept_multishot_direct, prep_socket_direct,
                                 prep_fixed_fd_install)
from ringline._core.tags cimport Op
from ringline.errors import error_from_errno


cdef bint peer_is_local(int fd) noexcept:
    """The peer runs on this host: loopback address, or the same address as
    our end (traffic to one's own interface address also goes over lo)."""
    cdef unsigned char mine[128]
    cdef unsigned char theirs[128]
    cdef socklen_t ml = 128, tl = 128
    cdef unsigned short fam
    if (getsockname(fd, <sockaddr_t*>mine, &ml) != 0
            or getpeername(fd, <sockaddr_t*>theirs, &tl) != 0):
        return False
    memcpy(&fam, theirs, 2)
    if fam == _socket.AF_INET and tl >= 8:
        # struct sockaddr_in: address at offset 4
        return theirs[4] == 127 or memcmp(mine + 4, theirs + 4, 4) == 0
    if fam == _socket.AF_INET6 and tl >= 24:
        # struct sockaddr_in6: address at offset 8; ::1 or ::ffff:127.x.y.z
        if memcmp(mine + 8, theirs + 8, 16) == 0:
            return True
        if memcmp(theirs + 8, b"\0\0\0\0\0\0\0\0\0\0", 10) != 0:
            return False
        if theirs[18] == 0 and theirs[19] == 0:
            return theirs[20] == 0 and theirs[21] == 0 and theirs[22] == 0 and theirs[23] == 1
        return theirs[18] == 0xff and theirs[19] == 0xff and theirs[20] == 127
    return False


cdef bint addresses_are_local(peer, local) noexcept:
    """The peer runs on this host (loopback, or our own address): its traffic
    goes over lo, where SEND_ZC costs more than a copying send (lo copies the
    pinned pages on delivery anyway, after the pinning and the extra
    notification CQE).  Takes socket address tuples."""
    if not isinstance(peer, tuple) or not peer or not isinstance(peer[0], str):
        return False
    host = <str>peer[0]
    if host.startswith("127.") or host == "::1" or host.startswith("::ffff:127."):
        return True
    return isinstance(local, tuple) and len(local) > 0 and local[0] == host


def set_nodelay(int fd):
    cdef int one = 1
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one))


@cython.final
cdef class AcceptOp(Completion):
    """Multishot accept on a listening socket; each CQE is a new fd, or with
    ``direct`` a new slot in the fixed file table (FILE_INDEX_ALLOC)."""
    cdef object on_fd          # Python callable(fd or slot) -> None
    cdef object on_error       # callable(exc) for errors that stop accepting
    cdef int listen_fd
    cdef bint stopping
    cdef readonly bint fixed_files
    cdef readonly uint64_t accepted
    cdef readonly uint64_t errors
    cdef readonly uint64_t table_full   # ENFILE: no free slot for the new socket
    cdef object loop_ref
    cdef NetState ctx

    def __init__(self, *a, **k):
        raise TypeError("use start_accepting()")

    cdef int on_cqe(self, Loop loop, int32_t res, uint32_t flags) except -1:
        if res >= 0:
            self.accepted += 1
            # Accepted in the same enter as stop()'s cancel: the peer may
            # have sent its request already, so hand it over all the same
            # (Server.shutdown waits for this op's last CQE); only a closing
            # loop drops it.
            if self.fixed_files:
                self.ctx.fixed_live += 1
                if loop._closing or loop._closed:
                    close_fixed_slot(loop, self.ctx, res, None)
                else:
                    self.on_fd(res)
            elif loop._closing or loop._closed:
                c_close(res)
            else:
                self.on_fd(res)
        elif res != -ECANCELED:
            self.errors += 1
            if res == -ENFILE and self.fixed_files:
                # Table full: the kernel accepted the socket, found no slot
                # and closed it (the peer sees the close).  Wait for a slot
                # to free up (the close CQE re-arms us): no spinning.
                self.table_full += 1
                self.ctx.table_full += 1
                if not self.in_flight and not self.stopping:
                    if self.ctx.fixed_live > 0:
                        self.ctx.accept_parked.append(self)
                    else:
                        loop.call_later(0.05, self.rearm)
                return 0
            if res == -EMFILE or res == -ENFILE:    # back off, then retry
                if not self.in_flight and not self.stopping:
                    loop.call_later(0.05, self.rearm)
                return 0
        if not self.in_flight and not self.stopping and res != -ECANCELED:
            self.rearm()
        elif self.stopping and not self.in_flight:
            self._finished()
        return 0

    cdef _finished(self):
        # Stopped and its last CQE in: the callbacks (closures over the
        # server, which holds this op) are dropped, so no cycle outlives it.
        self.on_fd = None
        self.on_error = None

    def rearm(self):
        cdef rl_sqe *sqe
        cdef Loop loop = <Loop>self.loop_ref
        if self.in_flight or self.stopping or loop._closing or loop._closed:
            return
        sqe = loop.sqe_for(self, Op.ACCEPT)
        if self.fixed_files:
            prep_accept_multishot_direct(sqe, self.listen_fd, NULL, NULL)
        else:
            prep_accept_multishot(sqe, self.listen_fd, SOCK_NONBLOCK | SOCK_CLOEXEC)

    @property
    def active(self):
        """True until the accept's last CQE (after stop(): its cancellation)."""
        return self.in_flight

    def stop(self):
        """Stop accepting; the final CQE of the cancelled accept still comes
        (and a connection accepted meanwhile is still handed to on_fd)."""
        self.stopping = True
        if self in self.ctx.accept_parked:
            self.ctx.accept_parked.remove(self)
        if self.in_flight:
            (<Loop>self.loop_ref).cancel_op(self)
        else:
            self._finished()


def start_accepting(Loop loop, int listen_fd, on_fd, bint fixed_files=False):
    """Arm a multishot accept on ``listen_fd``; ``on_fd(fd)`` per connection
    (``on_fd(slot)`` with ``direct``: the socket is in the fixed table only)."""
    cdef AcceptOp op = AcceptOp.__new__(AcceptOp)
    op.on_fd = on_fd
    op.listen_fd = listen_fd
    op.loop_ref = loop
    op.fixed_files = fixed_files
    op.ctx = net_state(loop)
    op.rearm()
    return op


# ---------------------------------------------------------------------------
# Fixed descriptors: close, socket, temporary install
# ---------------------------------------------------------------------------


def close_slot(Loop loop, int slot):
    """Close a fixed descriptor no stream owns (IORING_OP_CLOSE)."""
    close_fixed_slot(loop, net_state(loop), slot, None)


@cython.final
cdef class _SocketOp(Completion):
    """IORING_OP_SOCKET into a kernel-chosen slot.  Cancellation-safe: a
    slot that arrives after the awaiting task gave up is closed here."""
    cdef NetState ctx
    cdef object fut

    cdef int on_cqe(self, Loop loop, int32_t res, uint32_t flags) except -1:
        fut = self.fut
        self.fut = None
        if res >= 0:
            self.ctx.fixed_live += 1
            if fut.done():          # cancelled meanwhile
                close_fixed_slot(loop, self.ctx, res, None)
            else:
                fut.set_result(res)
        elif not fut.done():
            if res == -ENFILE:
                self.ctx.table_full += 1
                from ringline.errors import ConnectionLimitReached
                fut.set_exception(ConnectionLimitReached(self.ctx.config.max_connections))
            else:
                fut.set_exception(error_from_errno(-res, "socket"))
        return 0


def socket_fixed(Loop loop, int family, int type_=_socket.SOCK_STREAM, int proto=0):
    """Create a socket straight into the fixed file table; a future of its slot."""
    cdef _SocketOp op = _SocketOp.__new__(_SocketOp)
    cdef rl_sqe *sqe
    op.ctx = net_state(loop)
    op.fut = loop.create_future()
    sqe = loop.sqe_for(op, Op.SOCKET)
    prep_socket_direct(sqe, family, type_, proto)
    return op.fut


cdef object _sockaddr_to_py(const char *p, socklen_t n):
    """An AF_INET/AF_INET6/AF_UNIX sockaddr as socket.getpeername() returns it."""
    cdef char host[64]
    cdef uint16_t family
    if n < 2:
        return None
    family = (<const uint16_t*>p)[0]
    if family == AF_INET and n >= 16:
        inet_ntop(AF_INET, p + 4, host, sizeof(host))
        return (host.decode(), ntohs((<const uint16_t*>(p + 2))[0]))
    if family == AF_INET6 and n >= 28:
        inet_ntop(AF_INET6, p + 8, host, sizeof(host))
        return (host.decode(), ntohs((<const uint16_t*>(p + 2))[0]),
                ntohl((<const uint32_t*>(p + 4))[0]), (<const uint32_t*>(p + 24))[0])
    if family == _socket.AF_UNIX:
        # The path as Python gives it: str ('' when unnamed), bytes when
        # abstract (starts with NUL).
        raw = p[2:n] if n > 2 else b""
        if raw[:1] == b"\0":
            return raw
        return _os.fsdecode(raw.split(b"\0", 1)[0])
    return None


cdef object _addresses(int fd, bint nodelay):
    """(peer, local) of socket ``fd``, TCP_NODELAY first if asked; straight
    syscalls, no socket object: this runs once per direct connection."""
    cdef char buf[128]
    cdef socklen_t n
    cdef int one = 1
    if nodelay:
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one))
    n = sizeof(buf)
    peer = _sockaddr_to_py(buf, n) if getpeername(fd, <sockaddr_t*>buf, &n) == 0 else None
    n = sizeof(buf)
    local = _sockaddr_to_py(buf, n) if getsockname(fd, <sockaddr_t*>buf, &n) == 0 else None
    return (peer, local)


@cython.final
cdef class _InstallOp(Completion):
    """IORING_OP_FIXED_FD_INSTALL: a temporary process fd for a direct
    descriptor, handed to ``fn`` and closed right after, also when the
    awaiting task is gone (the fd never leaks)."""
    cdef object fn             # callable(fd), or None: (peer, local) addresses
    cdef object fut
    cdef bint nodelay

    cdef int on_cqe(self, Loop loop, int32_t res, uint32_t flags) except -1:
        fut = self.fut
        fn = self.fn
        self.fut = None
        self.fn = None
        if res < 0:
            if not fut.done():
                fut.set_exception(error_from_errno(-res, "fixed fd install"))
            return 0
        try:
            if not fut.done():
                try:
                    r = _addresses(res, self.nodelay) if fn is None else fn(res)
                except Exception as exc:
                    fut.set_exception(exc)
                else:
                    fut.set_result(r)
        finally:
            c_close(res)
        return 0


def install_call(Loop loop, int slot, fn, bint nodelay=False):
    """Future of ``fn(fd)`` called with a temporary fd for fixed descriptor
    ``slot`` (closed after ``fn`` returns; ``fn`` must not keep it).  With
    ``fn`` None: of the socket's (peer, local) addresses, after setting
    TCP_NODELAY if ``nodelay``."""
    cdef _InstallOp op = _InstallOp.__new__(_InstallOp)
    cdef rl_sqe *sqe
    op.fn = fn
    op.nodelay = nodelay
    op.fut = loop.create_future()
    sqe = loop.sqe_for(op, Op.FD_INSTALL)
    prep_fixed_fd_install(sqe, <uint32_t>slot, 0)
    return op.fut


# ---------------------------------------------------------------------------
# Connect (with an optional linked timeout)
# ---------------------------------------------------------------------------

@cython.final
cdef class ConnectOp(Completion):
    """IORING_OP_CONNECT, optionally IO_LINKed to a LINK_TIMEOUT.

    Kernel ownership: ``addr`` (the sockaddr) and ``ts`` (the timespec) live
    in this object, pinned until both CQEs (connect and timeout) are in.
    """
    cdef char addr[128]
    cdef uint32_t addrlen
    cdef rl_kernel_timespec ts
    cdef object fut
    cdef Loop loop
    cdef int pending           # CQEs still to come (1 or 2)
    cdef int32_t connect_res
    cdef bint timed_out
    cdef _LinkTimeout tmo

    cdef int on_cqe(self, Loop loop, int32_t res, uint32_t flags) except -1:
        self.connect_res = res
        self.pending -= 1
        if self.pending == 0:
            self._finish()
        return 0

    def _fut_done(self, fut):
        # The awaiting task gave up: stop the connect in the kernel (its
        # linked timeout goes with it); the CQEs still come and are ignored.
        if fut.cancelled() and self.in_flight:
            self.loop.cancel_op(self)

    cdef _finish(self):
        fut = self.fut
        self.fut = None
        self.tmo = None
        if fut is None or fut.done():
            return
        res = self.connect_res
        if res == 0:
            fut.set_result(None)
        elif res == -ECANCELED and self.timed_out:
            fut.set_exception(TimeoutError("connect timed out"))
        else:
            fut.set_exception(error_from_errno(-res, "connect"))


@cython.final
cdef class _LinkTimeout(Completion):
    cdef ConnectOp owner

    cdef int on_cqe(self, Loop loop, int32_t res, uint32_t flags) except -1:
        cdef ConnectOp c = self.owner
        if res == -ETIME:
            c.timed_out = True
        c.pending -= 1
        if c.pending == 0:
            c._finish()
        self.owner = None
        return 0


cdef uint32_t _pack_sockaddr(char *out, object family, object address) except 0:
    # struct sockaddr_in / sockaddr_in6 / sockaddr_un, in the kernel's layout.
    import struct
    if family == _socket.AF_INET:
        host, port = address[0], address[1]
        raw = struct.pack("=HH4s8x", _socket.AF_INET, _socket.htons(port),
                          _socket.inet_pton(_socket.AF_INET, host))
    elif family == _socket.AF_INET6:
        host, port = address[0], address[1]
        flowinfo = address[2] if len(address) > 2 else 0
        scope = address[3] if len(address) > 3 else 0
        if "%" in host:
            host, _, scope_name = host.partition("%")
            scope = _socket.if_nametoindex(scope_name) if not scope_name.isdigit() else int(scope_name)
        raw = struct.pack("=HHI16sI", _socket.AF_INET6, _socket.htons(port),
                          _socket.htonl(flowinfo), _socket.inet_pton(_socket.AF_INET6, host), scope)
    elif family == _socket.AF_UNIX:
        path = address.encode() if isinstance(address, str) else bytes(address)
        if len(path) > 107:
            raise ValueError("AF_UNIX path too long")
        raw = struct.pack("=H", _socket.AF_UNIX) + path + (b"\0" if path and path[0] != 0 else b"")
    else:
        raise ValueError(f"unsupported address family {family!r}")
    memcpy(out, <char*>raw, len(raw))
    return <uint32_t>len(raw)


def connect_fd(Loop loop, int fd, family, address, timeout=None, bint fixed=False):
    """Start a connect of ``fd`` (a fixed-table slot with ``fixed``) to
    ``address``; return a future (None or error).

    With ``timeout`` the connect SQE is linked to a LINK_TIMEOUT: one kernel
    timer, no extra wake-up; expiry cancels the connect and raises
    TimeoutError.  Cancelling the future cancels the connect in the kernel
    (ASYNC_CANCEL); the caller still closes the socket.
    """
    cdef ConnectOp op = ConnectOp.__new__(ConnectOp)
    cdef rl_sqe *sqe
    cdef int64_t ns
    op.addrlen = _pack_sockaddr(op.addr, family, address)
    op.fut = loop.create_future()
    op.loop = loop
    op.pending = 1
    if timeout is not None:
        # The linked pair must reach the kernel in one submission (a ring
        # of one SQ entry cannot: RingFull).
        loop.ring.reserve(2)
    sqe = loop.sqe_for(op, Op.CONNECT)
    prep_connect(sqe, fd, fixed, op.addr, op.addrlen)
    op.fut.add_done_callback(op._fut_done)
    if timeout is not None:
        if timeout <= 0:
            timeout = 1e-9
        sqe.flags |= RL_IOSQE_IO_LINK
        ns = <int64_t>(float(timeout) * 1e9)
        op.ts.tv_sec = ns // 1000000000
        op.ts.tv_nsec = ns % 1000000000
        op.tmo = _LinkTimeout.__new__(_LinkTimeout)
        op.tmo.owner = op
        op.pending = 2
        sqe = loop.sqe_for(op.tmo, Op.LINK_TIMEOUT)
        prep_link_timeout(sqe, &op.ts, 0)
    return op.fut
