# Extern-only declarations of our io_uring ABI header (_core/abi/io_uring.h).
# Nothing here has behaviour; _core/ring.pyx and _core/ops.pxd are its only users.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, uint64_t, int64_t

cdef extern from "io_uring.h" nogil:
    const bint RL_DEBUG    # the debug build: invariant checks on
    ctypedef struct rl_sqring_offsets:
        uint32_t head, tail, ring_mask, ring_entries, flags, dropped, array, resv1
        uint64_t user_addr

    ctypedef struct rl_cqring_offsets:
        uint32_t head, tail, ring_mask, ring_entries, overflow, cqes, flags, resv1
        uint64_t user_addr

    ctypedef struct rl_uring_params:
        uint32_t sq_entries
        uint32_t cq_entries
        uint32_t flags
        uint32_t sq_thread_cpu
        uint32_t sq_thread_idle
        uint32_t features
        uint32_t wq_fd
        rl_sqring_offsets sq_off
        rl_cqring_offsets cq_off

    ctypedef struct rl_sqe:
        uint8_t opcode
        uint8_t flags
        uint16_t ioprio
        int32_t fd
        uint64_t off
        uint64_t addr
        uint32_t len
        uint32_t op_flags
        uint64_t user_data
        uint16_t buf_index
        uint16_t personality
        uint32_t file_index
        uint64_t addr3
        uint64_t pad2

    ctypedef struct rl_cqe:
        uint64_t user_data
        int32_t res
        uint32_t flags

    ctypedef struct rl_kernel_timespec:
        int64_t tv_sec
        int64_t tv_nsec

    ctypedef struct rl_getevents_arg:
        uint64_t sigmask
        uint32_t sigmask_sz
        uint32_t min_wait_usec
        uint64_t ts

    ctypedef struct rl_rsrc_register:
        uint32_t nr
        uint32_t flags
        uint64_t resv2
        uint64_t data
        uint64_t tags

    ctypedef struct rl_file_index_range:
        uint32_t off
        uint32_t len
        uint64_t resv

    ctypedef struct rl_files_update:
        uint32_t offset
        uint32_t resv
        uint64_t fds

    ctypedef struct rl_buf:
        uint64_t addr
        uint32_t len
        uint16_t bid
        uint16_t resv

    ctypedef struct rl_buf_reg:
        uint64_t ring_addr
        uint32_t ring_entries
        uint16_t bgid
        uint16_t flags

    ctypedef struct rl_probe_op:
        uint8_t op
        uint8_t resv
        uint16_t flags
        uint32_t resv2

    ctypedef struct rl_probe:
        uint8_t last_op
        uint8_t ops_len
        rl_probe_op ops[256]

    enum:
        RL_OP_NOP, RL_OP_READV, RL_OP_WRITEV, RL_OP_FSYNC, RL_OP_READ_FIXED,
        RL_OP_WRITE_FIXED, RL_OP_POLL_ADD, RL_OP_POLL_REMOVE, RL_OP_SYNC_FILE_RANGE,
        RL_OP_SENDMSG, RL_OP_RECVMSG, RL_OP_TIMEOUT, RL_OP_TIMEOUT_REMOVE,
        RL_OP_ACCEPT, RL_OP_ASYNC_CANCEL, RL_OP_LINK_TIMEOUT, RL_OP_CONNECT,
        RL_OP_FALLOCATE, RL_OP_OPENAT, RL_OP_CLOSE, RL_OP_FILES_UPDATE,
        RL_OP_STATX, RL_OP_READ, RL_OP_WRITE, RL_OP_FADVISE, RL_OP_MADVISE,
        RL_OP_SEND, RL_OP_RECV, RL_OP_OPENAT2, RL_OP_EPOLL_CTL, RL_OP_SPLICE,
        RL_OP_PROVIDE_BUFFERS, RL_OP_REMOVE_BUFFERS, RL_OP_TEE, RL_OP_SHUTDOWN,
        RL_OP_RENAMEAT, RL_OP_UNLINKAT, RL_OP_MKDIRAT, RL_OP_SYMLINKAT,
        RL_OP_LINKAT, RL_OP_MSG_RING, RL_OP_FSETXATTR, RL_OP_SETXATTR,
        RL_OP_FGETXATTR, RL_OP_GETXATTR, RL_OP_SOCKET, RL_OP_URING_CMD,
        RL_OP_SEND_ZC, RL_OP_SENDMSG_ZC, RL_OP_FIXED_FD_INSTALL

    unsigned RL_SETUP_IOPOLL, RL_SETUP_SQPOLL, RL_SETUP_SQ_AFF, RL_SETUP_CQSIZE
    unsigned RL_SETUP_CLAMP, RL_SETUP_R_DISABLED, RL_REGISTER_ENABLE_RINGS, RL_SETUP_SUBMIT_ALL, RL_SETUP_COOP_TASKRUN
    unsigned RL_SETUP_TASKRUN_FLAG, RL_SETUP_SQE128, RL_SETUP_CQE32
    unsigned RL_SETUP_SINGLE_ISSUER, RL_SETUP_DEFER_TASKRUN
    unsigned RL_FEAT_SINGLE_MMAP, RL_FEAT_NODROP, RL_FEAT_SUBMIT_STABLE
    unsigned RL_FEAT_FAST_POLL, RL_FEAT_EXT_ARG, RL_FEAT_NATIVE_WORKERS
    unsigned RL_ENTER_GETEVENTS, RL_ENTER_SQ_WAKEUP, RL_ENTER_SQ_WAIT, RL_ENTER_EXT_ARG
    unsigned RL_SQ_NEED_WAKEUP, RL_SQ_CQ_OVERFLOW, RL_SQ_TASKRUN
    unsigned RL_IOSQE_FIXED_FILE, RL_IOSQE_IO_DRAIN, RL_IOSQE_IO_LINK
    unsigned RL_IOSQE_IO_HARDLINK, RL_IOSQE_ASYNC, RL_IOSQE_BUFFER_SELECT
    unsigned RL_IOSQE_CQE_SKIP_SUCCESS
    unsigned RL_CQE_F_BUFFER, RL_CQE_F_MORE, RL_CQE_F_SOCK_NONEMPTY, RL_CQE_F_NOTIF
    unsigned RL_CQE_F_BUF_MORE, RL_IOU_PBUF_RING_INC
    unsigned RL_CQE_BUFFER_SHIFT
    unsigned RL_TIMEOUT_ABS, RL_TIMEOUT_ETIME_SUCCESS, RL_POLL_ADD_MULTI
    unsigned RL_ACCEPT_MULTISHOT, RL_RECVSEND_POLL_FIRST, RL_RECV_MULTISHOT
    unsigned RL_RECVSEND_FIXED_BUF
    unsigned RL_ASYNC_CANCEL_ALL, RL_ASYNC_CANCEL_FD, RL_ASYNC_CANCEL_ANY
    unsigned RL_ASYNC_CANCEL_FD_FIXED, RL_FILE_INDEX_ALLOC, RL_FSYNC_DATASYNC
    unsigned RL_FIXED_FD_NO_CLOEXEC
    unsigned long long RL_OFF_SQ_RING, RL_OFF_CQ_RING, RL_OFF_SQES
    unsigned RL_REGISTER_BUFFERS, RL_UNREGISTER_BUFFERS, RL_REGISTER_FILES
    unsigned RL_UNREGISTER_FILES, RL_REGISTER_FILES_UPDATE, RL_REGISTER_PROBE
    unsigned RL_REGISTER_FILES2, RL_REGISTER_PBUF_RING, RL_UNREGISTER_PBUF_RING
    unsigned RL_REGISTER_FILE_ALLOC_RANGE
    unsigned RL_RSRC_REGISTER_SPARSE, RL_IO_URING_OP_SUPPORTED

    int rl_setup(unsigned entries, rl_uring_params *p)
    int rl_enter(int fd, unsigned to_submit, unsigned min_complete,
                 unsigned flags, void *arg, size_t argsz)
    int rl_register(int fd, unsigned opcode, void *arg, unsigned nr_args)
    uint32_t rl_load_acquire(const uint32_t *p)
    void rl_store_release(uint32_t *p, uint32_t v)
    uint32_t rl_load_relaxed(const uint32_t *p)
    void rl_store_release16(uint16_t *p, uint16_t v)
    void rl_full_barrier()
    double rl_monotonic()
    uint64_t rl_ticks() nogil
    int rl_ticks_is_ns() nogil
