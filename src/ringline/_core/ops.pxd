# One SQE builder per opcode.  Every builder fills a zeroed SQE obtained from
# Loop.sqe_for / Loop.sqe_orphan (which already set user_data, the tag).
#
# Shared argument order: (sqe, target, buf, len, flags...).  A target is a raw
# fd (int) or a fixed-file slot: only the *_fixed variants and builders taking
# ``fixed`` set IOSQE_FIXED_FILE, so a slot never travels as an fd by mistake.
#
# First docstring line: syscall equivalent, minimum kernel, CQEs produced.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, uint64_t
from ringline._core.abi.uring cimport *


cdef inline void _target(rl_sqe *sqe, int target, bint fixed) noexcept nogil:
    sqe.fd = target
    if fixed:
        sqe.flags |= RL_IOSQE_FIXED_FILE

# === 5.1 ===

cdef inline void prep_nop(rl_sqe *sqe) noexcept nogil:
    """nop; 5.1; one CQE."""
    sqe.opcode = RL_OP_NOP

cdef inline void prep_readv(rl_sqe *sqe, int target, bint fixed, void *iov, uint32_t nr, uint64_t off) noexcept nogil:
    """preadv(2); 5.1; one CQE."""
    sqe.opcode = RL_OP_READV
    _target(sqe, target, fixed)
    sqe.addr = <uint64_t>iov
    sqe.len = nr
    sqe.off = off

cdef inline void prep_writev(rl_sqe *sqe, int target, bint fixed, void *iov, uint32_t nr, uint64_t off) noexcept nogil:
    """pwritev(2); 5.1; one CQE."""
    sqe.opcode = RL_OP_WRITEV
    _target(sqe, target, fixed)
    sqe.addr = <uint64_t>iov
    sqe.len = nr
    sqe.off = off

cdef inline void prep_fsync(rl_sqe *sqe, int target, bint fixed, bint datasync) noexcept nogil:
    """fsync(2)/fdatasync(2); 5.1; one CQE."""
    sqe.opcode = RL_OP_FSYNC
    _target(sqe, target, fixed)
    if datasync:
        sqe.op_flags = RL_FSYNC_DATASYNC

cdef inline void prep_read_fixed(rl_sqe *sqe, int target, bint fixed, void *buf, uint32_t n, uint64_t off, uint16_t buf_index) noexcept nogil:
    """pread(2) into a registered buffer; 5.1; one CQE."""
    sqe.opcode = RL_OP_READ_FIXED
    _target(sqe, target, fixed)
    sqe.addr = <uint64_t>buf
    sqe.len = n
    sqe.off = off
    sqe.buf_index = buf_index

cdef inline void prep_write_fixed(rl_sqe *sqe, int target, bint fixed, const void *buf, uint32_t n, uint64_t off, uint16_t buf_index) noexcept nogil:
    """pwrite(2) from a registered buffer; 5.1; one CQE."""
    sqe.opcode = RL_OP_WRITE_FIXED
    _target(sqe, target, fixed)
    sqe.addr = <uint64_t>buf
    sqe.len = n
    sqe.off = off
    sqe.buf_index = buf_index

cdef inline void prep_poll_add(rl_sqe *sqe, int target, bint fixed, uint32_t events, bint multishot) noexcept nogil:
    """poll(2) on one fd; 5.1 (multishot 5.13); one CQE per event (F_MORE while armed)."""
    sqe.opcode = RL_OP_POLL_ADD
    _target(sqe, target, fixed)
    sqe.op_flags = events
    if multishot:
        sqe.len = RL_POLL_ADD_MULTI

# === 5.3 - 5.6 ===

cdef inline void prep_sendmsg(rl_sqe *sqe, int target, bint fixed, void *msg, uint32_t msg_flags) noexcept nogil:
    """sendmsg(2); 5.3; one CQE."""
    sqe.opcode = RL_OP_SENDMSG
    _target(sqe, target, fixed)
    sqe.addr = <uint64_t>msg
    sqe.len = 1
    sqe.op_flags = msg_flags

cdef inline void prep_recvmsg(rl_sqe *sqe, int target, bint fixed, void *msg, uint32_t msg_flags) noexcept nogil:
    """recvmsg(2); 5.3; one CQE."""
    sqe.opcode = RL_OP_RECVMSG
    _target(sqe, target, fixed)
    sqe.addr = <uint64_t>msg
    sqe.len = 1
    sqe.op_flags = msg_flags

cdef inline void prep_timeout(rl_sqe *sqe, void *ts, uint32_t count, uint32_t flags) noexcept nogil:
    """a kernel timer; 5.4; one CQE (-ETIME when it fires)."""
    sqe.opcode = RL_OP_TIMEOUT
    sqe.fd = -1
    sqe.addr = <uint64_t>ts
    sqe.len = 1
    sqe.off = count
    sqe.op_flags = flags

cdef inline void prep_cancel(rl_sqe *sqe, uint64_t user_data, uint32_t flags) noexcept nogil:
    """cancel the request tagged ``user_data``; 5.5; one CQE (its own)."""
    sqe.opcode = RL_OP_ASYNC_CANCEL
    sqe.fd = -1
    sqe.addr = user_data
    sqe.op_flags = flags

cdef inline void prep_link_timeout(rl_sqe *sqe, void *ts, uint32_t flags) noexcept nogil:
    """a timeout on the previous linked SQE; 5.5; one CQE."""
    sqe.opcode = RL_OP_LINK_TIMEOUT
    sqe.fd = -1
    sqe.addr = <uint64_t>ts
    sqe.len = 1
    sqe.op_flags = flags

cdef inline void prep_connect(rl_sqe *sqe, int target, bint fixed, void *addr, uint32_t addrlen) noexcept nogil:
    """connect(2); 5.5; one CQE."""
    sqe.opcode = RL_OP_CONNECT
    _target(sqe, target, fixed)
    sqe.addr = <uint64_t>addr
    sqe.off = addrlen

cdef inline void prep_openat(rl_sqe *sqe, int dfd, const char *path, int flags, uint32_t mode) noexcept nogil:
    """openat(2); 5.6; one CQE (the new fd)."""
    sqe.opcode = RL_OP_OPENAT
    sqe.fd = dfd
    sqe.addr = <uint64_t>path
    sqe.len = mode
    sqe.op_flags = <uint32_t>flags

cdef inline void prep_close(rl_sqe *sqe, int fd) noexcept nogil:
    """close(2) of a raw fd; 5.6; one CQE."""
    sqe.opcode = RL_OP_CLOSE
    sqe.fd = fd

cdef inline void prep_close_fixed(rl_sqe *sqe, uint32_t slot) noexcept nogil:
    """release a fixed-file slot (5.15); one CQE."""
    sqe.opcode = RL_OP_CLOSE
    sqe.file_index = slot + 1

cdef inline void prep_statx(rl_sqe *sqe, int dfd, const char *path, int flags, uint32_t mask, void *statxbuf) noexcept nogil:
    """statx(2); 5.6; one CQE."""
    sqe.opcode = RL_OP_STATX
    sqe.fd = dfd
    sqe.addr = <uint64_t>path
    sqe.len = mask
    sqe.off = <uint64_t>statxbuf
    sqe.op_flags = <uint32_t>flags

cdef inline void prep_read(rl_sqe *sqe, int target, bint fixed, void *buf, uint32_t n, uint64_t off) noexcept nogil:
    """pread(2) (off = -1: at the file position); 5.6; one CQE."""
    sqe.opcode = RL_OP_READ
    _target(sqe, target, fixed)
    sqe.addr = <uint64_t>buf
    sqe.len = n
    sqe.off = off

cdef inline void prep_write(rl_sqe *sqe, int target, bint fixed, const void *buf, uint32_t n, uint64_t off) noexcept nogil:
    """pwrite(2) (off = -1: at the file position); 5.6; one CQE."""
    sqe.opcode = RL_OP_WRITE
    _target(sqe, target, fixed)
    sqe.addr = <uint64_t>buf
    sqe.len = n
    sqe.off = off

cdef inline void prep_send(rl_sqe *sqe, int target, bint fixed, const void *buf, uint32_t n, uint32_t msg_flags) noexcept nogil:
    """send(2); 5.6; one CQE."""
    sqe.opcode = RL_OP_SEND
    _target(sqe, target, fixed)
    sqe.addr = <uint64_t>buf
    sqe.len = n
    sqe.op_flags = msg_flags

cdef inline void prep_recv(rl_sqe *sqe, int target, bint fixed, void *buf, uint32_t n, uint32_t msg_flags) noexcept nogil:
    """recv(2) into a given buffer; 5.6; one CQE."""
    sqe.opcode = RL_OP_RECV
    _target(sqe, target, fixed)
    sqe.addr = <uint64_t>buf
    sqe.len = n
    sqe.op_flags = msg_flags

# === 5.11 - 5.19 ===

cdef inline void prep_shutdown(rl_sqe *sqe, int target, bint fixed, int how) noexcept nogil:
    """shutdown(2); 5.11; one CQE."""
    sqe.opcode = RL_OP_SHUTDOWN
    _target(sqe, target, fixed)
    sqe.len = <uint32_t>how

cdef inline void prep_renameat(rl_sqe *sqe, int olddfd, const char *oldpath, int newdfd, const char *newpath, uint32_t flags) noexcept nogil:
    """renameat2(2); 5.11; one CQE."""
    sqe.opcode = RL_OP_RENAMEAT
    sqe.fd = olddfd
    sqe.addr = <uint64_t>oldpath
    sqe.len = <uint32_t>newdfd
    sqe.off = <uint64_t>newpath
    sqe.op_flags = flags

cdef inline void prep_unlinkat(rl_sqe *sqe, int dfd, const char *path, int flags) noexcept nogil:
    """unlinkat(2); 5.11; one CQE."""
    sqe.opcode = RL_OP_UNLINKAT
    sqe.fd = dfd
    sqe.addr = <uint64_t>path
    sqe.op_flags = <uint32_t>flags

cdef inline void prep_mkdirat(rl_sqe *sqe, int dfd, const char *path, uint32_t mode) noexcept nogil:
    """mkdirat(2); 5.15; one CQE."""
    sqe.opcode = RL_OP_MKDIRAT
    sqe.fd = dfd
    sqe.addr = <uint64_t>path
    sqe.len = mode

cdef inline void prep_accept_multishot_direct(rl_sqe *sqe, int listen_fd, void *addr, void *addrlen) noexcept nogil:
    """accept4(2) repeatedly, each new socket into a free fixed-file slot;
    5.19; one CQE per connection (res = the slot) with F_MORE while armed."""
    sqe.opcode = RL_OP_ACCEPT
    sqe.fd = listen_fd
    sqe.addr = <uint64_t>addr
    sqe.off = <uint64_t>addrlen
    sqe.ioprio = RL_ACCEPT_MULTISHOT
    sqe.file_index = RL_FILE_INDEX_ALLOC

cdef inline void prep_accept_multishot(rl_sqe *sqe, int listen_fd, uint32_t flags) noexcept nogil:
    """accept4(2) repeatedly into raw fds; 5.19; one CQE per connection (F_MORE)."""
    sqe.opcode = RL_OP_ACCEPT
    sqe.fd = listen_fd
    sqe.op_flags = flags
    sqe.ioprio = RL_ACCEPT_MULTISHOT

cdef inline void prep_socket_direct(rl_sqe *sqe, int domain, int type_, int protocol) noexcept nogil:
    """socket(2) straight into a free fixed-file slot (FILE_INDEX_ALLOC);
    5.19; one CQE (res = the slot)."""
    sqe.opcode = RL_OP_SOCKET
    sqe.fd = domain
    sqe.off = <uint64_t><uint32_t>type_
    sqe.len = <uint32_t>protocol
    sqe.file_index = RL_FILE_INDEX_ALLOC

cdef inline void prep_uring_cmd(rl_sqe *sqe, int target, bint fixed, uint32_t cmd_op) noexcept nogil:
    """a driver command (NVMe passthrough); 5.19; needs SQE128 for NVMe; one CQE."""
    sqe.opcode = RL_OP_URING_CMD
    _target(sqe, target, fixed)
    sqe.off = cmd_op        # cmd_op is the low 32 bits of the off union

cdef inline void prep_cancel_fd(rl_sqe *sqe, int target, bint fixed) noexcept nogil:
    """cancel every request on one file (ASYNC_CANCEL_FD|ALL); 5.19; one CQE
    (its own: how many were found, or -ENOENT)."""
    sqe.opcode = RL_OP_ASYNC_CANCEL
    sqe.fd = target
    sqe.op_flags = RL_ASYNC_CANCEL_FD | RL_ASYNC_CANCEL_ALL
    if fixed:
        sqe.op_flags |= RL_ASYNC_CANCEL_FD_FIXED

cdef inline void prep_cancel_any(rl_sqe *sqe) noexcept nogil:
    """cancel every request of the ring (ASYNC_CANCEL_ANY); 5.19; one CQE
    (its own: how many were found, or -ENOENT)."""
    sqe.opcode = RL_OP_ASYNC_CANCEL
    sqe.fd = -1
    sqe.op_flags = RL_ASYNC_CANCEL_ANY

# === 6.0 ===

cdef inline void prep_recv_multishot(rl_sqe *sqe, int target, bint fixed, uint16_t bgid) noexcept nogil:
    """recv(2) repeatedly into buffers picked from provided-buffer group
    ``bgid``; 6.0; one CQE per chunk (bid in flags >> 16, F_MORE while armed)."""
    sqe.opcode = RL_OP_RECV
    _target(sqe, target, fixed)
    sqe.flags |= RL_IOSQE_BUFFER_SELECT
    sqe.buf_index = bgid
    sqe.ioprio = RL_RECV_MULTISHOT

cdef inline void prep_recvmsg_multishot(rl_sqe *sqe, int target, bint fixed, void *msg, uint16_t bgid) noexcept nogil:
    """recvmsg(2) repeatedly, each message into a buffer picked from group
    ``bgid`` laid out as io_uring_recvmsg_out + name + control + payload
    (room for name and control from ``msg``'s msg_namelen/msg_controllen;
    ``msg`` must stay put while the op is armed); 6.0; one CQE
    per message (bid in flags >> 16, F_MORE while armed)."""
    prep_recvmsg(sqe, target, fixed, msg, 0)
    sqe.flags |= RL_IOSQE_BUFFER_SELECT
    sqe.buf_index = bgid
    sqe.ioprio = RL_RECV_MULTISHOT

cdef inline void prep_send_zc(rl_sqe *sqe, int target, bint fixed, const void *buf, uint32_t n, uint32_t msg_flags) noexcept nogil:
    """send(2) without copying; 6.0; op CQE (+F_MORE) then an F_NOTIF CQE when
    the kernel no longer reads ``buf``."""
    sqe.opcode = RL_OP_SEND_ZC
    _target(sqe, target, fixed)
    sqe.addr = <uint64_t>buf
    sqe.len = n
    sqe.op_flags = msg_flags

# === 6.1 ===

cdef inline void prep_sendmsg_zc(rl_sqe *sqe, int target, bint fixed, void *msg, uint32_t msg_flags) noexcept nogil:
    """sendmsg(2) without copying; 6.1; op CQE (+F_MORE) then an F_NOTIF CQE."""
    sqe.opcode = RL_OP_SENDMSG_ZC
    _target(sqe, target, fixed)
    sqe.addr = <uint64_t>msg
    sqe.len = 1
    sqe.op_flags = msg_flags

# === 6.8 ===

cdef inline void prep_fixed_fd_install(rl_sqe *sqe, uint32_t slot, uint32_t flags) noexcept nogil:
    """install a fixed descriptor into the process fd table (O_CLOEXEC
    unless RL_FIXED_FD_NO_CLOEXEC); 6.8; one CQE (res = the new fd)."""
    sqe.opcode = RL_OP_FIXED_FD_INSTALL
    _target(sqe, <int>slot, True)
    sqe.op_flags = flags
