# The one byte-stream machinery under both faces of ringline: the native
# Connection (native/connection.pyx) and the asyncio transports (aio/tcp.pyx).
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, uint64_t, int64_t
from posix.uio cimport iovec
from ringline._core.loop cimport Loop, Completion, PreEnterHook
from ringline._core.abi.uring cimport rl_kernel_timespec
from ringline._net.buffers cimport BufRing, SendPool


cdef extern from "sys/socket.h":
    ctypedef struct msghdr_t "struct msghdr":
        void *msg_name
        unsigned msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags
    ctypedef struct sockaddr_storage_t "struct sockaddr_storage":
        pass


cdef enum:
    IOV_BATCH = 64      # chunks gathered into one SENDMSG

cdef enum:
    S_OPEN = 0
    S_CLOSING = 1
    S_CLOSED = 2


cdef class NetState:
    """Per-loop shared state for streams: buffer ring, send pool, config."""
    cdef Loop loop
    cdef readonly BufRing bufring
    # Plain (one receive per buffer) ring for streams in large-receive mode (see
    # Stream.bulk), made on first need when ``bufring`` is incremental.
    cdef readonly BufRing large_ring
    cdef readonly uint64_t large_switches    # streams moved to/from large_ring (or big_ring)
    cdef bint large_ring_off                      # large_ring could not be made
    # A second large-receive ring, LARGE_BIG_SIZE buffers, for asyncio
    # transports whose receives keep filling large_ring's (Stream.big_mode): a
    # Protocol copies each chunk out at once (StreamReader's buffer), so
    # fewer, bigger data_received calls cost less (uvloop reads 256 KiB at a
    # time too).  Made on first need.
    cdef readonly BufRing big_ring
    cdef bint big_ring_off                        # big_ring could not be made
    cdef readonly SendPool pool
    cdef readonly object config
    cdef readonly dict streams      # open streams (keys; values None)
    cdef Py_ssize_t high_water
    cdef Py_ssize_t low_water
    cdef Py_ssize_t recv_limit
    cdef bint nodelay
    cdef Py_ssize_t zc_threshold   # pinned sends at least this long use SEND_ZC (0: never)
    cdef bint zc_to_local          # ... even to a peer on this host (Config._zc_to_local_peers)
    # Fixed (direct) file table of the native face, registered lazily:
    # slots [0, max_connections) are the kernel's to allocate for
    # connections, [max_connections, +file_slots) stay for files.
    cdef readonly int fixed_files         # -1 undecided, 0 plain fds, 1 fixed descriptors
    cdef readonly object fixed_reason   # why plain fds (str), or None
    cdef readonly int64_t fixed_live    # slots holding a socket (close CQE not yet in)
    cdef readonly uint64_t table_full    # ENFILE from accept/socket: table full
    cdef readonly uint64_t bytes_in      # received on streams (all CQEs' res)
    cdef readonly uint64_t bytes_out     # taken by the kernel from stream sends
    # Counters of the native UDP sockets and TLS connections on this loop
    # (public: those layers live in other modules and bump them directly).
    cdef public uint64_t udp_datagrams_in    # datagrams delivered to a DatagramSocket
    cdef public uint64_t udp_datagrams_out   # datagrams the kernel took
    cdef public uint64_t udp_dropped         # datagrams dropped (receive queue full)
    cdef public uint64_t tls_handshakes      # TLS handshakes completed
    cdef public uint64_t tls_handshake_failures  # TLS handshakes failed or timed out
    cdef public uint64_t addresses_unknown   # accepted, handler started without addresses (EMFILE)
    cdef list accept_parked              # AcceptOps waiting for a slot to free up
    cdef list enobufs_wait               # Streams to re-arm after ENOBUFS (one pass)
    cdef readonly dict future_kwargs     # {"loop": loop}: Connection._wait's futures
    cdef int _slot_freed(self) except -1
    cdef BufRing get_large_ring(self)
    cdef BufRing get_big_ring(self)


cdef class Stream


cdef class SendUnit(Completion):
    """A queued send that is not a run of bytes: a linked send chain
    (_net/chain.pyx).  It takes one place in the stream's send order as a
    Chunk (``Chunk.unit``); at the front of the queue with nothing in flight
    it is submitted and is ``Stream.sending`` until it calls
    ``Stream._unit_done``.  Never in the slot table itself (its SQEs have
    Completions of their own)."""
    cdef int submit(self, Stream s) except -1    # prepare its SQEs
    cdef int cancel(self) except -1              # abort while in flight
    cdef int drop(self, object exc) except -1    # dropped from the queue, never submitted


cdef class Chunk:
    """One queued send: bytes at ``ptr`` kept valid by ``owner`` (a pinned
    immutable object) or by pool ``slot``; ``waiter`` resolves when done.
    Or a SendUnit (``unit``) of ``length`` bytes, which sends itself."""
    cdef object owner
    cdef const char *ptr
    cdef Py_ssize_t length
    cdef Py_ssize_t off
    cdef int slot
    cdef object waiter
    cdef Py_ssize_t total     # value the waiter resolves with
    cdef bint last            # last chunk of one logical send
    cdef SendUnit unit        # not None: this entry is that unit (ptr unused)


cdef class RecvOp(Completion):
    cdef Stream stream


cdef class SendOp(Completion):
    cdef Stream stream           # None once the stream is closed (no cycle left)
    # Kernel ownership: a SENDMSG's msghdr and its iovecs (one block, sized
    # for that send) are read by the kernel until its CQE, freed there;
    # NULL while no SENDMSG is in flight, so an idle stream holds none.
    cdef msghdr_t *msg


cdef class Stream(PreEnterHook):
    # Observable states:
    #   OPEN       reading and writing
    #   CLOSING    close() called: queued sends drain, then recv is cancelled
    #   CLOSED     fd closed, nothing in flight
    # Invariant: at most one SendOp in flight (byte order on the wire).
    cdef Loop loop
    cdef NetState ctx
    cdef readonly int fd             # process fd, or fixed-table slot when ``fixed``
    cdef readonly bint fixed         # fd is a fixed descriptor (native face only)
    cdef int state
    cdef RecvOp recv_op          # op.stream is cleared at S_CLOSED (freed by refcount)
    cdef SendOp send_op          # made at the first send (idle streams have none)
    cdef Completion sending      # the one send in flight (SendOp or ZcSendOp) or None
    cdef Py_ssize_t sending_n    # the first sending_n Chunks of sendq are what it reads (pinned there until its op CQE)
    cdef list sendq              # Chunks in send order (the front ones may be in flight)
    cdef readonly Py_ssize_t queued_bytes
    cdef bint want_read          # the face wants data delivered
    cdef bint eof                # peer's FIN seen
    cdef bint recv_fed           # the armed receive got a buffer (fairness after ENOBUFS)
    cdef bint shut_requested     # shutdown_write queued behind sends
    cdef bint shut_done
    cdef bint send_failed
    cdef bint no_zc              # this socket refused SEND_ZC: copy sends only
    cdef bint closed_cb_done
    cdef object error            # first fatal error (OSError) or None
    # While on_data runs for a CQE that filled provided buffer steal_bid
    # (>= 0) of recv_ring from its start (steal_n bytes) and finished it: its
    # bytes may be taken as they are (take_bytes), else -1.
    cdef int steal_bid
    cdef Py_ssize_t steal_n
    # Receive-side large-receive mode: with an incremental ring a small message packed
    # before a large one shifts it across buffer boundaries, so it can never
    # be handed out whole.  A stream whose receives keep filling at least half
    # a buffer is re-armed on ctx.large_ring (each receive starts a buffer of
    # its own) and back on bufring once they turn small.  recv_ring: the ring
    # the receive in flight was armed on (its CQEs' bids are of that ring).
    cdef bint large_mode
    cdef int large_score
    # A face that allows it (large_big: the asyncio transports) moves on from
    # large_ring to ctx.big_ring (big_mode) while its receives keep filling
    # whole large-ring buffers, and back once they stop filling half a big one.
    cdef uint8_t large_big
    cdef uint8_t big_mode
    cdef uint8_t big_score
    cdef BufRing recv_ring

    cdef int start_reading(self) except -1
    cdef int stop_reading(self) except -1
    cdef int _arm_recv(self) except -1
    cdef int queue_bytes(self, object data, object waiter, bint copy) except -1
    cdef int queue_shutdown(self) except -1
    cdef int shutdown_read(self) except -1
    cdef int _submit_send(self) except -1
    cdef int _send_before_enter(self) except -1
    cdef _do_shutdown(self)
    cdef int _send_done(self, int32_t res) except -1
    cdef int begin_close(self) except -1
    cdef int abort_stream(self, object exc) except -1
    cdef int _maybe_finish_close(self) except -1
    cdef int _fail_queue(self, object exc) except -1
    cdef int _close_done(self) except -1
    cdef int queue_parts(self, list parts, object waiter) except -1
    cdef int queue_unit(self, SendUnit u, Py_ssize_t n) except -1
    cdef int _unit_done(self, object exc) except -1
    cdef int _recv_cqe(self, int32_t res, uint32_t flags) except -1
    cdef bytes take_bytes(self, const char *p, Py_ssize_t n, Py_ssize_t room)
    cdef int _large_vote(self, BufRing br, int32_t res) except -1
    cdef int _big_vote(self, BufRing br, int32_t res) except -1

    # face hooks (overridden by Connection / transports)
    cdef int close_fd(self) except -1     # 1: closing asynchronously, _close_done follows
    cdef int on_data(self, const char *p, Py_ssize_t n) except -1
    cdef int on_eof(self) except -1
    cdef int on_error(self, object exc) except -1
    cdef int on_closed(self) except -1
    cdef int on_writable(self) except -1


cdef NetState net_state(Loop loop)
cdef Stream stream_init(Stream s, Loop loop, int fd, bint fixed=*)

cdef int close_fixed_slot(Loop loop, NetState ctx, int slot, Stream stream) except -1
