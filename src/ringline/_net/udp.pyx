# cython: language_level=3, boundscheck=False, wraparound=False
"""Native UDP sockets on the loop's ring.

Receive: one multishot IORING_OP_RECVMSG per socket picks buffers from the
socket's own provided-buffer ring (plain, one datagram per buffer).  Each
buffer is laid out by the kernel as ``struct io_uring_recvmsg_out`` + the
sender's address (``name_room`` bytes) + control data (``ctrl_room``) +
payload; the msghdr that gives those sizes is a field of the socket and
stays put while the op is armed.  A datagram stays in its buffer until the
application takes it: the bounded receive queue holds buffer ids, not copies
(``with_datagram`` reads it in place).  A datagram that finds the queue full
is dropped and counted (``dropped``, ``NetState.udp_dropped``), as is one
larger than a buffer (``truncated``).  The queue is smaller than the ring,
so the kernel keeps buffers; if it still runs dry (ENOBUFS ends the
multishot) the receive is re-armed at once when buffers are free, else when
the application releases one (event-driven, pitfalls #13).

Send: one IORING_OP_SENDMSG per datagram, its msghdr, iovec, address and
control block stored in its own ``_SendMsgOp`` (pinned by the slot table
until the CQE) and the payload a pinned ``bytes``.  Up to ``max_in_flight``
per socket are in flight; later ones wait in order and go out as CQEs come
back.  SQEs reach the kernel in send order and UDP takes a datagram whole
(no short sends), so each socket's datagrams leave in order while its send
buffer has room.  An error of a send nobody awaits is kept and raised by the
next ``drain()`` (and counted in ``send_errors``): never dropped silently.

Close: the multishot receive is cancelled, queued sends drain, and only once
every op's final CQE is in is the buffer group unregistered and the socket
closed.  A loop that closes with the socket open cancels its ops (their
final CQEs finish the close the same way).
"""
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.mem cimport PyMem_Calloc, PyMem_Free
from cpython.ref cimport PyObject, Py_INCREF, Py_XDECREF
from libc.errno cimport ENOBUFS, EINTR, ECONNREFUSED, EHOSTUNREACH, ENETUNREACH, EMSGSIZE
from libc.stdint cimport uint16_t, uint32_t, int32_t, uint64_t
from libc.string cimport memcpy, memset
from ringline._core.abi.uring cimport *
from ringline._net.csocket cimport *
from ringline._core.cpy cimport bytes_forget_hash
from ringline._core.loop cimport Loop, Completion, bufs_lent_add
from ringline._core.ops cimport prep_recvmsg_multishot, prep_sendmsg
from ringline._core.tags cimport Op
from ringline._net.buffers cimport BufRing, bytes_set_length
from ringline._net.stream cimport NetState, net_state

import socket as _socket
import struct as _struct
from ringline.errors import ConnectionClosed, DatagramTooLarge, error_from_errno

cdef extern from "Python.h":
    Py_ssize_t _refcnt "Py_REFCNT"(PyObject *o)
    void _set_size "Py_SET_SIZE"(PyObject *o, Py_ssize_t n)

cdef extern from "sys/socket.h" nogil:
    int MSG_TRUNC

cdef extern from *:
    """
    struct rl_recvmsg_out { uint32_t namelen, controllen, payloadlen, flags; };
    struct rl_cmsghdr { size_t cmsg_len; int cmsg_level; int cmsg_type; };
    """
    struct rl_recvmsg_out:
        uint32_t namelen
        uint32_t controllen
        uint32_t payloadlen
        uint32_t flags
    struct rl_cmsghdr:
        size_t cmsg_len
        int cmsg_level
        int cmsg_type

cdef enum:
    SOL_UDP = 17
    UDP_SEGMENT = 103
    UDP_GRO = 104
    OUT_LEN = 16            # sizeof(struct io_uring_recvmsg_out)
    CMSG_HDR = 16           # sizeof(struct cmsghdr) on 64-bit Linux
    NAME_ROOM = 32          # >= sizeof(struct sockaddr_in6), keeps the payload aligned
    CACHE_MAX = 4096        # address cache entries before it is cleared
    CACHE_WAYS = 1024       # direct-mapped address cache entries (power of two)
    OP_POOL = 64            # finished send ops kept for reuse
    DPOOL = 64              # received-payload objects kept for reuse (power of two)
    DPOOL_MIN = 480         # smaller payloads: pymalloc makes them cheaply
    DPOOL_MAX = 4096        # larger ones are rare and would pin too much

cdef enum:
    S_OPEN = 0
    S_CLOSING = 1
    S_CLOSED = 2

#: The largest UDP payload per address family (65,535 - IP header - UDP header).
MAX_PAYLOAD_V4 = 65507
MAX_PAYLOAD_V6 = 65527


cdef class DatagramSink:
    """Push delivery: set as a socket's ``sink``, it is called from the
    socket's completions instead of a waiting coroutine being woken (the
    asyncio face's DatagramTransport, aio/udp.pyx, is one).  A sink takes
    queued datagrams itself (``_pop``), is told every send's outcome
    (``on_sent``: the error, if any, goes nowhere else) and the close's end."""

    cdef int on_datagrams(self, DatagramSocket s) except -1:
        return 0

    cdef int on_recv_error(self, DatagramSocket s, object exc, bint stopped) except -1:
        return 0

    cdef int on_sent(self, DatagramSocket s, Py_ssize_t nbytes, object exc) except -1:
        return 0

    cdef int on_closed(self, DatagramSocket s) except -1:
        return 0


@cython.final
cdef class _RecvMsgOp(Completion):
    cdef int on_cqe(self, Loop loop, int32_t res, uint32_t flags) except -1:
        cdef DatagramSocket s = self.sock
        return s._recv_cqe(res, flags)


@cython.final
cdef class _SendMsgOp(Completion):
    cdef int on_cqe(self, Loop loop, int32_t res, uint32_t flags) except -1:
        cdef DatagramSocket s = self.sock
        return s._send_done(self, res)


# Buffer group ids in use by this process's UDP sockets, per loop (keyed by
# id of the loop's NetState; an entry goes when its last socket closes,
# which a loop's close forces).  A stale id only makes a socket skip a
# group; registration itself refuses a group that is taken (EEXIST).
cdef dict _bgids = {}


cdef int _alloc_bgid(NetState ctx, int base) except -1:
    """A buffer group id not used by another UDP socket of this loop (the
    loop's own rings use base-16 .. base-14)."""
    used = _bgids.get(id(ctx))
    if used is None:
        used = _bgids[id(ctx)] = set()
    cdef int g = base
    while g in used:
        g += 1
    if g > 0xFFFF:
        raise OSError("no free provided-buffer group id for another UDP socket")
    used.add(g)
    return g


# Buffer rings of closed sockets, kept (registered, every buffer back with
# the kernel) for the next socket of the same loop with the same geometry,
# per NetState id, at most RING_CACHE each: allocating 64 buffers of 64 KiB
# and registering them costs ~1 ms, several times the rest of opening and
# closing an endpoint (a DNS client may open one per query).  A kept ring
# holds its loop, so that id is not reused while it is here; the loop's
# close hands them back (release_cached_rings).
cdef dict _ring_cache = {}
cdef int RING_CACHE = 4


cdef BufRing _cached_ring(Loop loop, NetState ctx, uint32_t entries, uint32_t size):
    cdef BufRing ring
    rings = _ring_cache.get(id(ctx))
    if not rings:
        return None
    for i in range(len(rings)):
        ring = <BufRing>rings[i]
        if ring.loop is loop and ring.entries == entries and ring.size == size:
            del rings[i]
            if not rings:
                del _ring_cache[id(ctx)]
            ring.enobufs = 0
            return ring
    return None


cdef bint _keep_ring(Loop loop, NetState ctx, BufRing ring) except -1:
    if loop._closing or loop._closed or loop.ring is None or not ring.registered:
        return False
    rings = _ring_cache.get(id(ctx))
    if rings is None:
        rings = _ring_cache[id(ctx)] = []
    if len(rings) >= RING_CACHE:
        return False
    rings.append(ring)
    return True


cdef int _drop_ring(Loop loop, NetState ctx, BufRing ring, bint unregister) except -1:
    cdef rl_buf_reg reg
    if unregister and not loop._closed and loop.ring is not None:
        memset(&reg, 0, sizeof(reg))
        reg.bgid = ring.bgid
        try:
            loop.ring.register(RL_UNREGISTER_PBUF_RING, &reg, 1)
        except OSError:
            pass
        ring.registered = False
    _free_bgid(ctx, ring.bgid)
    if not ring.registered:
        ring.close_ring()
    # else (another thread closes the loop): no op can select from the
    # group any more; the ring's memory goes with the object.
    return 0


def cached_rings(Loop loop):
    """How many closed sockets' buffer rings this loop keeps for reuse."""
    ctx = loop._net_state
    return len(_ring_cache.get(id(ctx), ())) if ctx is not None else 0


def release_cached_rings(Loop loop, bint owner=True):
    """The loop is closing: give back the buffer rings kept for reuse
    (unregistered when ``owner``, the ring's own thread, closes it)."""
    ctx = loop._net_state
    if ctx is None:
        return
    rings = _ring_cache.pop(id(ctx), None)
    for r in rings or ():
        _drop_ring(loop, <NetState>ctx, <BufRing>r, owner)


cdef int _free_bgid(NetState ctx, int g) except -1:
    used = _bgids.get(id(ctx))
    if used is not None:
        used.discard(g)
        if not used:
            del _bgids[id(ctx)]
    return 0


@cython.final
cdef class DatagramSocket:
    """A UDP socket on the loop's ring (``ringline.bind_udp`` /
    ``ringline.connect_udp`` make them).

    Only one coroutine may wait for datagrams at a time.  States: open ->
    closing (``close()``: receive cancelled, queued sends drain) -> closed.
    """

    def __init__(self, *a, **k):
        raise TypeError("use ringline.bind_udp() or ringline.connect_udp()")

    # ------------------------------------------------------------------
    # receive
    # ------------------------------------------------------------------

    cdef int _arm(self) except -1:
        cdef rl_sqe *sqe
        if self.recv_op.in_flight or self.state != S_OPEN:
            return 0
        sqe = self.loop.sqe_for(self.recv_op, Op.RECVMSG)
        prep_recvmsg_multishot(sqe, self.fd, False, &self.rmsg, self.ring.bgid)
        return 0

    cdef int _recv_cqe(self, int32_t res, uint32_t flags) except -1:
        cdef uint32_t bid, plen, seg, nseg, i, ln, queued
        cdef rl_recvmsg_out *out
        cdef rl_cmsghdr *cm
        cdef _Ent *ent
        cdef char *p
        cdef bint rearm = True
        if flags & RL_CQE_F_BUFFER:
            bid = flags >> RL_CQE_BUFFER_SHIFT
            p = self.ring.ptr(bid)
            out = <rl_recvmsg_out*>p
            if self.state != S_OPEN or self.loop._closing:
                self.ring.recycle(bid)
            elif out.flags & MSG_TRUNC:
                # Larger than a buffer's payload room: never deliver a cut datagram.
                self.truncated += 1
                self.dropped += 1
                self.ctx.udp_dropped += 1
                self.ring.recycle(bid)
            else:
                plen = out.payloadlen
                seg = plen
                if self.gro and out.controllen >= CMSG_HDR + 4:
                    cm = <rl_cmsghdr*>(p + OUT_LEN + self.name_room)
                    if cm.cmsg_level == SOL_UDP and cm.cmsg_type == UDP_GRO:
                        seg = (<int*>(<char*>cm + CMSG_HDR))[0]
                        if seg == 0:
                            seg = plen
                nseg = 1 if (seg == 0 or plen <= seg) else (plen + seg - 1) // seg
                queued = 0
                for i in range(nseg):
                    ln = plen - i * seg if plen - i * seg < seg else seg
                    if self.q_n >= self.q_cap:
                        self.dropped += 1
                        self.ctx.udp_dropped += 1
                        continue
                    ent = &self.q[(self.q_head + self.q_n) % self.q_cap]
                    ent.bid = bid
                    ent.off = self.payload_off + i * seg
                    ent.len = ln
                    self.q_n += 1
                    queued += 1
                if queued:
                    self.seg_left[bid] = <uint16_t>queued
                    self.held += 1
                    bufs_lent_add(1)
                    self.datagrams_in += queued
                    self.ctx.udp_datagrams_in += queued
                    if self.waiter is not None:
                        self._wake(None)
                    elif self.sink is not None:
                        self.sink.on_datagrams(self)
                else:
                    self.ring.recycle(bid)
        elif res == -ENOBUFS:
            self.ring.enobufs += 1
            if self.held >= self.ring.entries:
                self.parked = True      # _release re-arms
                rearm = False
        elif res < 0 and res != -ECANCELED and res != -EINTR:
            exc = error_from_errno(-res, "recvmsg")
            # ICMP errors on a connected socket: report, keep receiving.
            # Anything else stops the receive (re-arming would repeat it).
            rearm = res == -ECONNREFUSED or res == -EHOSTUNREACH or res == -ENETUNREACH
            if self.waiter is not None and not self.waiter.done():
                self._wake(exc)
            elif self.sink is not None and self.state == S_OPEN:
                self.sink.on_recv_error(self, exc, not rearm)
            else:
                self.recv_error = exc
        if not self.recv_op.in_flight:
            if self.loop._closing or self.loop._closed:
                if self.state == S_OPEN:
                    self._drop_queue()
                    self.state = S_CLOSING
                self._maybe_finish_close()
            elif self.state == S_OPEN:
                if rearm:
                    self._arm()         # (also after a cancel that was not ours)
            else:
                self._maybe_finish_close()
        return 0

    cdef int _wake(self, object exc) except -1:
        w = self.waiter
        if w is not None:
            self.waiter = None
            if not w.done():
                if exc is None:
                    w.set_result(None)
                else:
                    w.set_exception(exc)
        return 0

    cdef int _release(self, uint32_t bid) except -1:
        """A queued datagram of buffer ``bid`` was taken: when it was the
        buffer's last, give the buffer back to the kernel (a fresh one in
        its place if the application still holds a view of it)."""
        cdef PyObject *b
        self.seg_left[bid] -= 1
        if self.seg_left[bid]:
            return 0
        self.held -= 1
        bufs_lent_add(-1)
        if self.ring is None:
            return 0
        b = PyList_GET_ITEM(self.ring.bufs, bid)
        if _refcnt(b) > 1:
            # with_datagram's callback kept a view: the kernel must not write
            # into it again, so the buffer leaves the ring (steal).
            self.ring.steal(bid, self.ring.size)
        self.ring.recycle(bid)
        if self.parked and self.state == S_OPEN and not self.loop._closing:
            self.parked = False
            self._arm()
        return 0

    cdef int _drop_queue(self) except -1:
        cdef _Ent *ent
        while self.q_n:
            ent = &self.q[self.q_head]
            self.q_head = (self.q_head + 1) % self.q_cap
            self.q_n -= 1
            self._release(ent.bid)
        return 0

    cdef object _addr_of(self, const char *p, uint32_t n):
        """The sender's address (as socket.recvfrom gives it) from the
        sockaddr at ``p``; IPv4 ones come from a small cache."""
        cdef char host[64]
        cdef uint16_t family = (<const uint16_t*>p)[0]
        cdef uint64_t k
        cdef _InEnt *ie
        if family == AF_INET and n >= 8:
            k = (((<uint64_t>ntohl((<const uint32_t*>(p + 4))[0])) << 16)
                 | ntohs((<const uint16_t*>(p + 2))[0]) | (<uint64_t>1 << 63))
            ie = &self.in_ents[((k * <uint64_t>0x9E3779B97F4A7C15) >> 56) & (CACHE_WAYS - 1)]
            if ie.key == k:
                return <object>ie.addr
            # Evicted or new: the dict keeps one tuple per sender (so that
            # out_ents, keyed by identity, keeps hitting for replies).
            key = <object>k
            a = self.in_cache.get(key)
            if a is None:
                inet_ntop(AF_INET, p + 4, host, sizeof(host))
                a = (host.decode(), <int>ntohs((<const uint16_t*>(p + 2))[0]))
                if len(self.in_cache) >= CACHE_MAX:
                    self.in_cache.clear()
                self.in_cache[key] = a
            Py_INCREF(a)
            Py_XDECREF(ie.addr)
            ie.addr = <PyObject*>a
            ie.key = k
            return a
        if family == AF_INET6 and n >= 28:
            key = PyBytes_FromStringAndSize(p + 2, 26)
            a = self.in_cache.get(key)
            if a is None:
                inet_ntop(AF_INET6, p + 8, host, sizeof(host))
                a = (host.decode(), <int>ntohs((<const uint16_t*>(p + 2))[0]),
                     <int>ntohl((<const uint32_t*>(p + 4))[0]), <int>(<const uint32_t*>(p + 24))[0])
                if len(self.in_cache) >= CACHE_MAX:
                    self.in_cache.clear()
                self.in_cache[key] = a
            return a
        return None

    cdef object _head_addr(self, uint32_t bid):
        cdef char *p = self.ring.ptr(bid)
        cdef uint32_t n = (<rl_recvmsg_out*>p).namelen
        if n > self.name_room:
            n = self.name_room
        return self._addr_of(p + OUT_LEN, n)

    cdef object _pop(self):
        """Take the oldest queued datagram: (bytes, address)."""
        cdef _Ent e = self.q[self.q_head]
        self.q_head = (self.q_head + 1) % self.q_cap
        self.q_n -= 1
        data = self._payload(self.ring.ptr(e.bid) + e.off, e.len)
        addr = self._head_addr(e.bid)
        self._release(e.bid)
        return (data, addr)

    cdef bytes _pop_data(self):
        """Take the oldest queued datagram's bytes; its sender is left in
        ``popped_addr`` (no tuple for the pair: the asyncio face's path)."""
        cdef _Ent e = self.q[self.q_head]
        self.q_head = (self.q_head + 1) % self.q_cap
        self.q_n -= 1
        data = self._payload(self.ring.ptr(e.bid) + e.off, e.len)
        self.popped_addr = self._head_addr(e.bid)
        self._release(e.bid)
        return data

    cdef bytes _payload(self, const char *p, Py_ssize_t n):
        """A bytes object with the ``n`` bytes at ``p``.

        Payloads of DPOOL_MIN..DPOOL_MAX bytes come from a ring of DPOOL
        objects this socket keeps: one is reused only when the ring holds
        its sole reference (nobody else can see it, so its bytes may
        change), and only for contents no longer than it was created for
        (its length is cut in place, never grown past that).  glibc's
        malloc and free of a 1.4 KB object cost ~550 instructions, more
        than the rest of a datagram's receive."""
        cdef uint32_t i
        cdef PyObject *o
        cdef bytes b
        if n < DPOOL_MIN or n > DPOOL_MAX or self.dpool == NULL:
            return PyBytes_FromStringAndSize(p, n)
        i = self.dpool_next
        self.dpool_next = (i + 1) & (DPOOL - 1)
        o = self.dpool[i].obj
        if o != NULL and _refcnt(o) == 1 and self.dpool[i].cap >= n:
            b = <bytes>o
            _set_size(o, n)
            bytes_forget_hash(o)
            memcpy(PyBytes_AS_STRING(b), p, n)
            PyBytes_AS_STRING(b)[n] = 0
            self.dpool_reused += 1
            return b
        # Room rounded up, so that sizes that vary a little still fit.
        b = PyBytes_FromStringAndSize(NULL, (n + 255) & ~(<Py_ssize_t>255))
        self.dpool[i].cap = <uint32_t>len(b)
        bytes_set_length(b, n)
        memcpy(PyBytes_AS_STRING(b), p, n)
        Py_INCREF(b)
        self.dpool[i].obj = <PyObject*>b
        Py_XDECREF(o)       # still held elsewhere: it stays with its holder
        return b

    def _wait(self):
        """A future that resolves when a datagram is queued."""
        self.loop.check_thread("DatagramSocket receive")
        if self.state != S_OPEN:
            raise ConnectionClosed("datagram socket is closed")
        if self.recv_error is not None:
            exc = self.recv_error
            self.recv_error = None
            raise exc
        w = self.waiter
        if w is not None and not w.done():
            raise RuntimeError("another coroutine is already waiting for a datagram "
                               "on this socket")
        w = self.loop.create_future()
        self.waiter = w
        return w

    async def recv_from(self):
        """The next datagram and its sender: ``(bytes, address)``."""
        while self.q_n == 0:
            await self._wait()
        return self._pop()

    async def recv(self):
        """The next datagram's bytes (for a connected socket)."""
        while self.q_n == 0:
            await self._wait()
        return self._pop()[0]

    async def recv_batch(self, int max_n=64):
        """Whatever has arrived, at most ``max_n`` datagrams (waits for one):
        a list of ``(bytes, address)``."""
        if max_n < 1:
            raise ValueError(f"recv_batch: max_n must be >= 1 (got {max_n})")
        while self.q_n == 0:
            await self._wait()
        out = []
        while self.q_n and max_n:
            out.append(self._pop())
            max_n -= 1
        return out

    async def with_datagram(self, fn):
        """``fn(view, address)`` on the next datagram while it is still in
        its receive buffer (no copy); returns what ``fn`` returns.  The
        memoryview is released when ``fn`` returns: copy what you keep
        (``bytes(view)``)."""
        cdef _Ent e
        cdef uint32_t bid
        while self.q_n == 0:
            await self._wait()
        e = self.q[self.q_head]
        self.q_head = (self.q_head + 1) % self.q_cap
        self.q_n -= 1
        bid = e.bid
        addr = self._head_addr(bid)
        buf = <object>PyList_GET_ITEM(self.ring.bufs, bid)
        view = memoryview(buf)[e.off:e.off + e.len]
        buf = None
        try:
            return fn(view, addr)
        finally:
            try:
                view.release()
            except BufferError:
                pass        # exported further: _release swaps the buffer out
            view = None
            self._release(bid)

    # ------------------------------------------------------------------
    # send
    # ------------------------------------------------------------------

    cdef bytes _packed(self, object addr):
        """``addr`` as a sockaddr for this socket's family (cached)."""
        p = self.out_cache.get(addr)
        if p is not None:
            return <bytes>p
        if not isinstance(addr, tuple) or len(addr) < 2:
            raise TypeError(f"address must be a (host, port) tuple, not {addr!r}")
        host, port = addr[0], addr[1]
        if not isinstance(host, str) or not isinstance(port, int):
            raise TypeError(f"address must be a (host, port) tuple, not {addr!r}")
        try:
            if self.family == AF_INET:
                raw = _struct.pack("=HH4s8x", AF_INET, _socket.htons(port),
                                   _socket.inet_pton(AF_INET, host))
            else:
                flow = addr[2] if len(addr) > 2 else 0
                scope = addr[3] if len(addr) > 3 else 0
                if "%" in host:
                    host, _, name = host.partition("%")
                    scope = int(name) if name.isdigit() else _socket.if_nametoindex(name)
                if ":" not in host:
                    host = "::ffff:" + host      # IPv4 peer of a dual-stack socket
                raw = _struct.pack("=HHI16sI", AF_INET6, _socket.htons(port),
                                   _socket.htonl(flow), _socket.inet_pton(AF_INET6, host), scope)
        except OSError:
            raise ValueError(f"send_to needs a numeric IP address (resolve names with "
                             f"loop.getaddrinfo first), got {host!r}") from None
        except OverflowError:
            raise ValueError(f"port out of range: {port!r}") from None
        if len(self.out_cache) >= CACHE_MAX:
            self.out_cache.clear()
        self.out_cache[addr] = raw
        return raw

    cdef _SendMsgOp _make_send(self, object data, object addr, Py_ssize_t segment):
        cdef _SendMsgOp op
        cdef Py_ssize_t n
        cdef rl_cmsghdr *cm
        cdef _OutEnt *oe
        self.loop.check_thread("DatagramSocket.send_to")
        if self.state != S_OPEN:
            raise ConnectionClosed("datagram socket is closed")
        b = data if type(data) is bytes else bytes(data)   # mutable payloads are copied
        n = len(<bytes>b)
        if n > self.max_payload:
            raise DatagramTooLarge(n, self.max_payload)
        if self.op_pool:
            op = <_SendMsgOp>self.op_pool.pop()
            memset(&op.msg, 0, sizeof(msghdr_t))
        else:
            op = _SendMsgOp.__new__(_SendMsgOp)
            op.quiet = True
        op.quiet = self.sink is None    # a sink's on_sent may run protocol code
        op.data = b
        op.iov.iov_base = PyBytes_AS_STRING(b)
        op.iov.iov_len = n
        op.msg.msg_iov = &op.iov
        op.msg.msg_iovlen = 1
        op.nseg = 1
        if addr is None:
            if self.peer_addr is None:
                raise ValueError("this socket is not connected: give send_to an address")
        else:
            oe = &self.out_ents[((<size_t><PyObject*>addr) >> 4) & (CACHE_WAYS - 1)]
            if oe.addr != <PyObject*>addr:
                raw = self._packed(addr)
                Py_INCREF(addr)
                Py_XDECREF(oe.addr)
                oe.addr = <PyObject*>addr
                oe.len = <uint32_t>len(<bytes>raw)
                memcpy(oe.raw, PyBytes_AS_STRING(raw), oe.len)
            memcpy(op.name, oe.raw, oe.len)
            op.msg.msg_name = op.name
            op.msg.msg_namelen = oe.len
        if segment:
            if segment < 1 or segment > 65535:
                raise ValueError(f"segment_size must be 1..65535 (got {segment})")
            cm = <rl_cmsghdr*>op.ctrl
            cm.cmsg_len = CMSG_HDR + 2
            cm.cmsg_level = SOL_UDP
            cm.cmsg_type = UDP_SEGMENT
            (<uint16_t*>(op.ctrl + CMSG_HDR))[0] = <uint16_t>segment
            op.msg.msg_control = op.ctrl
            op.msg.msg_controllen = 24      # CMSG_SPACE(sizeof(uint16_t))
            op.nseg = <uint32_t>((n + segment - 1) // segment) if n else 1
        op.sock = self
        return op

    cdef int _queue_send(self, _SendMsgOp op) except -1:
        if self.in_flight < self.max_in_flight and self.pending_head == PyList_GET_SIZE(self.pending):
            self._submit(op)
        else:
            self.pending.append(op)
        return 0

    cdef int _submit(self, _SendMsgOp op) except -1:
        cdef rl_sqe *sqe = self.loop.sqe_for(op, Op.SENDMSG)
        prep_sendmsg(sqe, self.fd, False, &op.msg, 0)
        self.in_flight += 1
        self.loop.send_queued = True
        return 0

    cdef int _send_done(self, _SendMsgOp op, int32_t res) except -1:
        cdef Py_ssize_t n = <Py_ssize_t>op.iov.iov_len
        self.in_flight -= 1
        op.data = None
        op.sock = None
        if op.waiter is None and res >= 0:
            self.datagrams_out += op.nseg
            self.ctx.udp_datagrams_out += op.nseg
            if self.sink is not None:
                self.sink.on_sent(self, n, None)
        elif op.waiter is None and self.sink is not None:
            # Push mode: the sink reports the error (error_received).
            self.send_errors += 1
            self.sink.on_sent(self, n, self._send_exc(op, res))
        else:
            self._send_result(op, res)
        if PyList_GET_SIZE(self.op_pool) < OP_POOL:
            self.op_pool.append(op)
        if self.pending_head < PyList_GET_SIZE(self.pending):
            self._submit_pending()
        elif self.in_flight == 0:
            self._send_idle()
        return 0

    cdef int _send_result(self, _SendMsgOp op, int32_t res) except -1:
        """An awaited send's result, or a failed send's error."""
        w = op.waiter
        op.waiter = None
        if res >= 0:
            self.datagrams_out += op.nseg
            self.ctx.udp_datagrams_out += op.nseg
            if w is not None and not w.done():
                w.set_result(res)
            return 0
        exc = self._send_exc(op, res)
        if w is not None and not w.done():
            w.set_exception(exc)
        else:
            # Nobody awaits this send: drain() raises it.
            self.send_errors += 1
            if self.send_error is None:
                self.send_error = exc
        return 0

    cdef object _send_exc(self, _SendMsgOp op, int32_t res):
        if res == -EMSGSIZE:
            return DatagramTooLarge(op.iov.iov_len, self.max_payload)
        return error_from_errno(-res, "sendmsg")

    cdef Py_ssize_t drop_pending(self) except -1:
        """Forget the sends not yet submitted (an abort); returns their
        payload bytes.  What is in flight stays with the kernel."""
        cdef _SendMsgOp op
        cdef Py_ssize_t n = 0
        while self.pending_head < PyList_GET_SIZE(self.pending):
            op = <_SendMsgOp>self.pending[self.pending_head]
            self.pending[self.pending_head] = None
            self.pending_head += 1
            n += <Py_ssize_t>op.iov.iov_len
            op.data = None
            op.sock = None
            w = op.waiter
            op.waiter = None
            if w is not None and not w.done():
                w.set_exception(ConnectionClosed("datagram socket was aborted"))
        del self.pending[:]
        self.pending_head = 0
        if self.in_flight == 0:
            self._send_idle()
        return n

    cdef int _submit_pending(self) except -1:
        """Submit waiting sends, in order, while there is room in flight."""
        cdef _SendMsgOp nxt
        while self.pending_head < PyList_GET_SIZE(self.pending) and self.in_flight < self.max_in_flight:
            nxt = <_SendMsgOp>self.pending[self.pending_head]
            self.pending[self.pending_head] = None
            self.pending_head += 1
            if self.loop._closing or self.loop._closed:
                w = nxt.waiter
                nxt.waiter = None
                nxt.sock = None
                if w is not None and not w.done():
                    w.set_exception(ConnectionClosed("event loop closed"))
                continue
            self._submit(nxt)
        if self.pending_head == PyList_GET_SIZE(self.pending):
            del self.pending[:]
            self.pending_head = 0
            if self.in_flight == 0:
                self._send_idle()
        return 0

    cdef int _send_idle(self) except -1:
        """Nothing in flight or waiting: wake drain(), finish a close."""
        waiters = self.drain_waiters
        if waiters:
            self.drain_waiters = []
            for d in waiters:
                if not d.done():
                    d.set_result(None)
        if self.state == S_CLOSING:
            self._maybe_finish_close()
        return 0

    def send_to(self, data, addr, *, int segment_size=0):
        """Queue one datagram to ``addr`` (an IP address tuple); returns at
        once.  With ``segment_size`` (GSO, UDP_SEGMENT) the kernel cuts
        ``data`` into datagrams of that size.  A failure is raised by the
        next ``drain()``."""
        self._queue_send(self._make_send(data, addr, segment_size))

    def send(self, data, *, int segment_size=0):
        """Queue one datagram to the connected peer."""
        self._queue_send(self._make_send(data, None, segment_size))

    def send_to_async(self, data, addr, *, int segment_size=0):
        """Send one datagram; awaitable of the byte count the kernel took."""
        cdef _SendMsgOp op = self._make_send(data, addr, segment_size)
        fut = self.loop.create_future()
        op.waiter = fut
        self._queue_send(op)
        return fut

    async def drain(self):
        """Wait until every queued datagram is with the kernel; raise the
        first error of a ``send_to`` since the last ``drain()``."""
        while self.in_flight or self.pending_head < len(self.pending):
            fut = self.loop.create_future()
            self.drain_waiters.append(fut)
            await fut
        if self.send_error is not None:
            exc = self.send_error
            self.send_error = None
            raise exc

    # ------------------------------------------------------------------
    # close
    # ------------------------------------------------------------------

    def close(self):
        """Stop receiving (queued datagrams are dropped), let queued sends
        drain, then close the socket.  Idempotent."""
        self.loop.check_thread("DatagramSocket.close")
        if self.state != S_OPEN:
            return
        self.state = S_CLOSING
        self._drop_queue()
        self._wake(ConnectionClosed("datagram socket is closed"))
        if self.recv_op.in_flight:
            self.loop.cancel_op(self.recv_op)
        self._maybe_finish_close()

    cdef int _maybe_finish_close(self) except -1:
        if (self.state != S_CLOSING or self.recv_op.in_flight or self.in_flight
                or self.pending_head < len(self.pending)):
            return 0
        self.state = S_CLOSED
        self._drop_queue()
        ring = self.ring
        if ring is not None:
            self.ring = None
            # Every buffer is back with the kernel (the queue was dropped,
            # the receive's final CQE is in): the next socket may take it.
            if not _keep_ring(self.loop, self.ctx, ring):
                _drop_ring(self.loop, self.ctx, ring, True)
        self.recv_op.sock = None
        self.op_pool = []
        self._clear_caches()
        self.sock.close()
        self.fd = -1
        sink = self.sink
        if sink is not None:
            self.sink = None
            self.waiter = None
            sink.on_closed(self)
        if self.send_error is not None:
            # Closed before a drain() could raise it: report it, never drop it.
            exc = self.send_error
            self.send_error = None
            self.loop.call_exception_handler({
                "message": f"UDP send failed and no drain() reported it before close ({self!r})",
                "exception": exc,
            })
        if not self.closed_fut.done():
            self.closed_fut.set_result(None)
        waiters = self.drain_waiters
        self.drain_waiters = []
        for d in waiters:
            if not d.done():
                d.set_result(None)
        return 0

    async def wait_closed(self):
        """Wait until the socket is closed (after ``close()``)."""
        import asyncio
        await asyncio.shield(self.closed_fut)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        self.close()
        await self.wait_closed()

    cdef int _clear_caches(self) except -1:
        cdef uint32_t i
        cdef PyObject *o
        if self.dpool != NULL:
            for i in range(DPOOL):
                o = self.dpool[i].obj
                self.dpool[i].obj = NULL
                Py_XDECREF(o)
        if self.in_ents != NULL:
            for i in range(CACHE_WAYS):
                o = self.in_ents[i].addr
                self.in_ents[i].addr = NULL
                self.in_ents[i].key = 0
                Py_XDECREF(o)
        if self.out_ents != NULL:
            for i in range(CACHE_WAYS):
                o = self.out_ents[i].addr
                self.out_ents[i].addr = NULL
                Py_XDECREF(o)
        return 0

    def __dealloc__(self):
        self._clear_caches()
        if self.in_ents != NULL:
            PyMem_Free(self.in_ents)
            self.in_ents = NULL
        if self.out_ents != NULL:
            PyMem_Free(self.out_ents)
            self.out_ents = NULL
        if self.q != NULL:
            PyMem_Free(self.q)
            self.q = NULL
        if self.seg_left != NULL:
            PyMem_Free(self.seg_left)
            self.seg_left = NULL
        if self.dpool != NULL:
            PyMem_Free(self.dpool)
            self.dpool = NULL

    # ------------------------------------------------------------------
    # introspection
    # ------------------------------------------------------------------

    @property
    def closed(self):
        """True once ``close()`` was called (or the loop closed it)."""
        return self.state != S_OPEN

    def fileno(self):
        """The socket's fd (-1 once closed)."""
        return self.fd

    @property
    def queued(self):
        """Datagrams received and not yet taken."""
        return self.q_n

    def statistics(self):
        """This socket's counters."""
        return {
            "datagrams_in": self.datagrams_in,
            "datagrams_out": self.datagrams_out,
            "dropped": self.dropped,
            "truncated": self.truncated,
            "send_errors": self.send_errors,
            "queued": self.q_n,
            "sends_in_flight": self.in_flight,
            "sends_pending": len(self.pending) - self.pending_head,
            "enobufs": self.ring.enobufs if self.ring is not None else 0,
            "payloads_reused": self.dpool_reused,
        }

    def __repr__(self):
        st = ("open", "closing", "closed")[self.state]
        return f"<ringline DatagramSocket {st} local={self.local_addr!r} peer={self.peer_addr!r}>"


def open_socket(Loop loop, sock, *, peer=None, int recv_buffers=256, int max_datagram=65535,
                int queue_limit=0, bint gro=False, int max_in_flight=256):
    """A DatagramSocket over ``sock`` (a bound, non-blocking UDP
    socket.socket, which it owns from now on); receiving starts at once."""
    cdef DatagramSocket s = DatagramSocket.__new__(DatagramSocket)
    cdef NetState ctx = net_state(loop)
    cdef int bgid
    if recv_buffers < 1 or recv_buffers > 32768 or (recv_buffers & (recv_buffers - 1)):
        raise ValueError(f"recv_buffers must be a power of two, 1..32768 (got {recv_buffers})")
    if max_datagram < 1 or max_datagram > 65535:
        raise ValueError(f"max_datagram must be 1..65535 (got {max_datagram})")
    if max_in_flight < 1:
        raise ValueError(f"max_in_flight must be >= 1 (got {max_in_flight})")
    s.loop = loop
    s.ctx = ctx
    s.sock = sock
    s.fd = sock.fileno()
    s.family = sock.family
    s.max_payload = MAX_PAYLOAD_V4 if s.family == AF_INET else MAX_PAYLOAD_V6
    s.local_addr = sock.getsockname()
    s.peer_addr = peer
    s.gro = gro
    s.name_room = NAME_ROOM
    s.ctrl_room = 24 if gro else 0     # CMSG_SPACE(sizeof(int))
    s.payload_off = OUT_LEN + s.name_room + s.ctrl_room
    s.payload_room = max_datagram
    s.rmsg.msg_namelen = s.name_room
    s.rmsg.msg_controllen = s.ctrl_room
    # The queue is smaller than the ring so that the kernel keeps buffers to
    # receive into while the application is busy (datagrams beyond it drop).
    if queue_limit <= 0:
        queue_limit = recv_buffers - recv_buffers // 8 if recv_buffers > 8 else recv_buffers
    s.q_cap = <uint32_t>queue_limit
    s.q = <_Ent*>PyMem_Calloc(s.q_cap, sizeof(_Ent))
    s.seg_left = <uint16_t*>PyMem_Calloc(recv_buffers, sizeof(uint16_t))
    if s.q == NULL or s.seg_left == NULL:
        raise MemoryError()
    s.in_cache = {}
    s.out_cache = {}
    s.op_pool = []
    s.in_ents = <_InEnt*>PyMem_Calloc(CACHE_WAYS, sizeof(_InEnt))
    s.out_ents = <_OutEnt*>PyMem_Calloc(CACHE_WAYS, sizeof(_OutEnt))
    s.dpool = <_PoolEnt*>PyMem_Calloc(DPOOL, sizeof(_PoolEnt))
    if s.in_ents == NULL or s.out_ents == NULL or s.dpool == NULL:
        raise MemoryError()
    s.pending = []
    s.drain_waiters = []
    s.max_in_flight = <uint32_t>max_in_flight
    s.closed_fut = loop.create_future()
    base = (loop.config.recv_buffer_group + 16) & 0xFFFF
    s.ring = _cached_ring(loop, ctx, <uint32_t>recv_buffers, s.payload_off + s.payload_room)
    while s.ring is None:
        bgid = _alloc_bgid(ctx, base)
        try:
            s.ring = BufRing.create(loop, <uint32_t>recv_buffers, s.payload_off + s.payload_room,
                                    <uint16_t>bgid, False)
        except FileExistsError:
            base = bgid + 1         # taken by someone else: keep it marked, try the next
            continue
        except BaseException:
            _free_bgid(ctx, bgid)
            raise
        break
    s.recv_op = _RecvMsgOp.__new__(_RecvMsgOp)
    s.recv_op.sock = s
    s.recv_op.quiet = True
    s.state = S_OPEN
    s._arm()
    return s
