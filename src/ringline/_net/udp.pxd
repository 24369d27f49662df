# Native UDP sockets on the loop's ring (see udp.pyx).
from cpython.ref cimport PyObject
from libc.stdint cimport uint16_t, uint32_t, int32_t, uint64_t
from posix.uio cimport iovec
from ringline._core.loop cimport Loop, Completion
from ringline._net.buffers cimport BufRing
from ringline._net.stream cimport NetState, msghdr_t


cdef struct _Ent:
    uint32_t bid
    uint32_t off      # payload offset in the buffer
    uint32_t len


# Address caches of one socket (direct-mapped, CACHE_WAYS entries): the
# sender tuple of an IPv4 key, and the packed sockaddr of an address tuple
# found by identity (the entry owns a reference, so the tuple, immutable,
# stays the object it was packed from).
cdef struct _InEnt:
    uint64_t key               # (ip << 16 | port) | 1 << 63 when set
    PyObject *addr


cdef struct _PoolEnt:
    PyObject *obj              # a received-payload bytes object (owned), or NULL
    uint32_t cap               # the length it was created with


cdef struct _OutEnt:
    PyObject *addr
    uint32_t len
    char raw[28]


cdef class DatagramSink:
    # Push delivery for a DatagramSocket (the asyncio face's transport,
    # aio/udp.pyx): instead of waking a waiting coroutine, the socket calls
    # these from its completions.  Each runs inside a CQE dispatch.
    cdef int on_datagrams(self, DatagramSocket s) except -1
    cdef int on_recv_error(self, DatagramSocket s, object exc, bint stopped) except -1
    cdef int on_sent(self, DatagramSocket s, Py_ssize_t nbytes, object exc) except -1
    cdef int on_closed(self, DatagramSocket s) except -1


cdef class _RecvMsgOp(Completion):
    cdef DatagramSocket sock


cdef class _SendMsgOp(Completion):
    # Kernel ownership: msg, iov, name and ctrl are read by the kernel until
    # this op's CQE; they are fields of this object, which the loop's slot
    # table pins until then, and ``data`` (the payload, a bytes object) is
    # held as long.
    cdef DatagramSocket sock
    cdef msghdr_t msg
    cdef iovec iov
    cdef char name[32]
    cdef char ctrl[24]
    cdef object data
    cdef object waiter
    cdef uint32_t nseg                # datagrams this send puts on the wire (GSO: several)


cdef class DatagramSocket:
    cdef Loop loop
    cdef NetState ctx
    cdef object sock                  # the socket.socket (owns the fd)
    cdef int fd
    cdef readonly int family
    cdef int state
    cdef readonly object local_addr
    cdef readonly object peer_addr    # connected socket's peer, or None
    cdef Py_ssize_t max_payload       # 65507 (IPv4) or 65527 (IPv6)
    # receive: a multishot RECVMSG on this socket's own provided-buffer ring
    cdef BufRing ring
    cdef _RecvMsgOp recv_op
    cdef msghdr_t rmsg                # read by the kernel while recv_op is armed
    cdef uint32_t name_room
    cdef uint32_t ctrl_room
    cdef uint32_t payload_off
    cdef uint32_t payload_room
    cdef bint gro
    cdef bint parked                  # ENOBUFS: every buffer is queued; re-arm on release
    cdef _Ent *q                      # received datagrams, FIFO ring of q_cap entries
    cdef uint16_t *seg_left           # per bid: queued datagrams still in that buffer
    cdef uint32_t held                # buffers held by queued datagrams
    cdef uint32_t q_head
    cdef uint32_t q_n
    cdef uint32_t q_cap
    cdef object waiter                # the one receiver's future, or None
    cdef object recv_error            # an error the kernel reported on receive
    cdef dict in_cache                # sender key (IPv4 int, IPv6 raw bytes) -> address tuple
    cdef dict out_cache               # address tuple -> packed sockaddr (bytes)
    cdef _InEnt *in_ents              # IPv4 senders (see _InEnt)
    cdef _OutEnt *out_ents            # packed destinations by tuple identity
    cdef list op_pool                 # finished _SendMsgOps for reuse
    # send
    cdef uint32_t in_flight
    cdef uint32_t max_in_flight
    cdef list pending                 # _SendMsgOp not yet submitted, in order
    cdef Py_ssize_t pending_head
    cdef object send_error            # first error of a send nobody awaited
    cdef list drain_waiters
    cdef object closed_fut
    cdef DatagramSink sink            # push delivery (asyncio transport), or None
    cdef object popped_addr           # _pop_data's sender
    cdef _PoolEnt *dpool              # reusable payload objects (see _payload)
    cdef uint32_t dpool_next
    cdef uint64_t dpool_reused
    # counters
    cdef readonly uint64_t datagrams_in
    cdef readonly uint64_t datagrams_out
    cdef readonly uint64_t dropped
    cdef readonly uint64_t truncated
    cdef readonly uint64_t send_errors

    cdef int _arm(self) except -1
    cdef int _recv_cqe(self, int32_t res, uint32_t flags) except -1
    cdef int _wake(self, object exc) except -1
    cdef int _release(self, uint32_t bid) except -1
    cdef object _addr_of(self, const char *p, uint32_t n)
    cdef object _pop(self)
    cdef bytes _pop_data(self)
    cdef bytes _payload(self, const char *p, Py_ssize_t n)
    cdef int _drop_queue(self) except -1
    cdef object _head_addr(self, uint32_t bid)
    cdef bytes _packed(self, object addr)
    cdef int _queue_send(self, _SendMsgOp op) except -1
    cdef int _submit(self, _SendMsgOp op) except -1
    cdef int _send_done(self, _SendMsgOp op, int32_t res) except -1
    cdef int _send_result(self, _SendMsgOp op, int32_t res) except -1
    cdef object _send_exc(self, _SendMsgOp op, int32_t res)
    cdef int _submit_pending(self) except -1
    cdef int _send_idle(self) except -1
    cdef _SendMsgOp _make_send(self, object data, object addr, Py_ssize_t segment)
    cdef int _maybe_finish_close(self) except -1
    cdef int _clear_caches(self) except -1
    cdef Py_ssize_t drop_pending(self) except -1
