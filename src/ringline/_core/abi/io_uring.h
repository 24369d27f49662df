/*
 * ringline's own view of the io_uring ABI (include/uapi/linux/io_uring.h).
 *
 * Why our own header: the package must build against any installed kernel
 * headers (a Debian 6.1 userland on a 6.18 kernel, or the reverse) and must
 * not depend on liburing.  Only what ringline uses is declared; every value
 * is the kernel's stable UAPI value.  Field names follow the kernel so the
 * man pages (io_uring_setup(2), io_uring_enter(2), io_uring_register(2))
 * read directly onto this code.
 *
 * Memory ordering: the SQ tail and the CQ head are published with release
 * stores; the SQ head and CQ tail written by the kernel are read with
 * acquire loads (io_uring(7), "Submission queue polling" and liburing's
 * barrier.h say the same).  We use the GCC/Clang __atomic builtins, which
 * compile to plain loads/stores plus the right fences on x86_64 and arm64.
 */
#ifndef RINGLINE_IO_URING_H
#define RINGLINE_IO_URING_H

#include <stdint.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/socket.h>
#include <time.h>

/* ---- syscall numbers (identical on x86_64 and arm64 since 5.1) ---- */
/* The debug build (RINGLINE_DEBUG=1 -> RL_DEBUG_BUILD) compiles the
 * invariant checks of every module; `if RL_DEBUG:` folds away otherwise. */
#if RL_DEBUG_BUILD
#define RL_DEBUG 1
#else
#define RL_DEBUG 0
#endif

#ifndef __NR_io_uring_setup
#define __NR_io_uring_setup 425
#endif
#ifndef __NR_io_uring_enter
#define __NR_io_uring_enter 426
#endif
#ifndef __NR_io_uring_register
#define __NR_io_uring_register 427
#endif

typedef struct rl_sqring_offsets {
    uint32_t head, tail, ring_mask, ring_entries, flags, dropped, array, resv1;
    uint64_t user_addr;
} rl_sqring_offsets;

typedef struct rl_cqring_offsets {
    uint32_t head, tail, ring_mask, ring_entries, overflow, cqes, flags, resv1;
    uint64_t user_addr;
} rl_cqring_offsets;

typedef struct rl_uring_params {
    uint32_t sq_entries;
    uint32_t cq_entries;
    uint32_t flags;
    uint32_t sq_thread_cpu;
    uint32_t sq_thread_idle;
    uint32_t features;
    uint32_t wq_fd;
    uint32_t resv[3];
    rl_sqring_offsets sq_off;
    rl_cqring_offsets cq_off;
} rl_uring_params;

/* The 64-byte SQE.  The kernel's unions are flattened into the one name per
 * slot that ringline uses; the prep_* builders in _core/ops.pxd are the only code
 * that writes these fields. */
typedef struct rl_sqe {
    uint8_t  opcode;
    uint8_t  flags;        /* IOSQE_* */
    uint16_t ioprio;       /* also: accept/recv/send op-specific flags */
    int32_t  fd;           /* raw fd, or fixed-file slot with IOSQE_FIXED_FILE */
    uint64_t off;          /* also: addr2, cmd_op (low 32 bits) */
    uint64_t addr;         /* also: splice_off_in, level/optname */
    uint32_t len;
    uint32_t op_flags;     /* rw_flags, msg_flags, timeout_flags, ... */
    uint64_t user_data;    /* the completion tag, see _core/tags.pxd */
    uint16_t buf_index;    /* also: buf_group (with IOSQE_BUFFER_SELECT) */
    uint16_t personality;
    uint32_t file_index;   /* also: splice_fd_in, optlen, addr_len */
    uint64_t addr3;        /* also: optval, start of the 80-byte cmd area */
    uint64_t pad2;
} rl_sqe;

typedef struct rl_cqe {
    uint64_t user_data;
    int32_t  res;
    uint32_t flags;        /* IORING_CQE_F_*, buffer id in the upper 16 bits */
} rl_cqe;

typedef struct rl_kernel_timespec {
    int64_t tv_sec;
    int64_t tv_nsec;
} rl_kernel_timespec;

typedef struct rl_getevents_arg {
    uint64_t sigmask;
    uint32_t sigmask_sz;
    uint32_t min_wait_usec;
    uint64_t ts;
} rl_getevents_arg;

typedef struct rl_rsrc_register {
    uint32_t nr;
    uint32_t flags;
    uint64_t resv2;
    uint64_t data;
    uint64_t tags;
} rl_rsrc_register;

/* IORING_REGISTER_FILE_ALLOC_RANGE: FILE_INDEX_ALLOC picks slots in [off, off+len) */
typedef struct rl_file_index_range {
    uint32_t off;
    uint32_t len;
    uint64_t resv;
} rl_file_index_range;

typedef struct rl_files_update {
    uint32_t offset;
    uint32_t resv;
    uint64_t fds;
} rl_files_update;

typedef struct rl_buf {
    uint64_t addr;
    uint32_t len;
    uint16_t bid;
    uint16_t resv;         /* in entry 0 this is the ring's tail */
} rl_buf;

typedef struct rl_buf_reg {
    uint64_t ring_addr;
    uint32_t ring_entries;
    uint16_t bgid;
    uint16_t flags;
    uint64_t resv[3];
} rl_buf_reg;

typedef struct rl_probe_op {
    uint8_t  op;
    uint8_t  resv;
    uint16_t flags;
    uint32_t resv2;
} rl_probe_op;

typedef struct rl_probe {
    uint8_t  last_op;
    uint8_t  ops_len;
    uint16_t resv;
    uint32_t resv2[3];
    rl_probe_op ops[256];
} rl_probe;

/* ---- opcodes (enum io_uring_op) ---- */
enum {
    RL_OP_NOP = 0, RL_OP_READV = 1, RL_OP_WRITEV = 2, RL_OP_FSYNC = 3,
    RL_OP_READ_FIXED = 4, RL_OP_WRITE_FIXED = 5, RL_OP_POLL_ADD = 6,
    RL_OP_POLL_REMOVE = 7, RL_OP_SYNC_FILE_RANGE = 8, RL_OP_SENDMSG = 9,
    RL_OP_RECVMSG = 10, RL_OP_TIMEOUT = 11, RL_OP_TIMEOUT_REMOVE = 12,
    RL_OP_ACCEPT = 13, RL_OP_ASYNC_CANCEL = 14, RL_OP_LINK_TIMEOUT = 15,
    RL_OP_CONNECT = 16, RL_OP_FALLOCATE = 17, RL_OP_OPENAT = 18,
    RL_OP_CLOSE = 19, RL_OP_FILES_UPDATE = 20, RL_OP_STATX = 21,
    RL_OP_READ = 22, RL_OP_WRITE = 23, RL_OP_FADVISE = 24, RL_OP_MADVISE = 25,
    RL_OP_SEND = 26, RL_OP_RECV = 27, RL_OP_OPENAT2 = 28, RL_OP_EPOLL_CTL = 29,
    RL_OP_SPLICE = 30, RL_OP_PROVIDE_BUFFERS = 31, RL_OP_REMOVE_BUFFERS = 32,
    RL_OP_TEE = 33, RL_OP_SHUTDOWN = 34, RL_OP_RENAMEAT = 35,
    RL_OP_UNLINKAT = 36, RL_OP_MKDIRAT = 37, RL_OP_SYMLINKAT = 38,
    RL_OP_LINKAT = 39, RL_OP_MSG_RING = 40, RL_OP_FSETXATTR = 41,
    RL_OP_SETXATTR = 42, RL_OP_FGETXATTR = 43, RL_OP_GETXATTR = 44,
    RL_OP_SOCKET = 45, RL_OP_URING_CMD = 46, RL_OP_SEND_ZC = 47,
    RL_OP_SENDMSG_ZC = 48, RL_OP_READ_MULTISHOT = 49, RL_OP_WAITID = 50,
    RL_OP_FUTEX_WAIT = 51, RL_OP_FUTEX_WAKE = 52, RL_OP_FUTEX_WAITV = 53,
    RL_OP_FIXED_FD_INSTALL = 54     /* 6.8 */
};

/* ---- io_uring_setup flags ---- */
#define RL_SETUP_IOPOLL          (1U << 0)
#define RL_SETUP_SQPOLL          (1U << 1)
#define RL_SETUP_SQ_AFF          (1U << 2)
#define RL_SETUP_CQSIZE          (1U << 3)
#define RL_SETUP_CLAMP           (1U << 4)
#define RL_SETUP_R_DISABLED      (1U << 6)
#define RL_SETUP_SUBMIT_ALL      (1U << 7)
#define RL_SETUP_COOP_TASKRUN    (1U << 8)
#define RL_SETUP_TASKRUN_FLAG    (1U << 9)
#define RL_SETUP_SQE128          (1U << 10)
#define RL_SETUP_CQE32           (1U << 11)
#define RL_SETUP_SINGLE_ISSUER   (1U << 12)
#define RL_SETUP_DEFER_TASKRUN   (1U << 13)

/* ---- features reported by setup ---- */
#define RL_FEAT_SINGLE_MMAP      (1U << 0)
#define RL_FEAT_NODROP           (1U << 1)
#define RL_FEAT_SUBMIT_STABLE    (1U << 2)
#define RL_FEAT_FAST_POLL        (1U << 5)
#define RL_FEAT_EXT_ARG          (1U << 8)
#define RL_FEAT_NATIVE_WORKERS   (1U << 9)

/* ---- io_uring_enter flags ---- */
#define RL_ENTER_GETEVENTS       (1U << 0)
#define RL_ENTER_SQ_WAKEUP       (1U << 1)
#define RL_ENTER_SQ_WAIT         (1U << 2)
#define RL_ENTER_EXT_ARG         (1U << 3)

/* ---- SQ ring flags (written by the kernel) ---- */
#define RL_SQ_NEED_WAKEUP        (1U << 0)
#define RL_SQ_CQ_OVERFLOW        (1U << 1)
#define RL_SQ_TASKRUN            (1U << 2)

/* ---- SQE flags ---- */
#define RL_IOSQE_FIXED_FILE       (1U << 0)
#define RL_IOSQE_IO_DRAIN         (1U << 1)
#define RL_IOSQE_IO_LINK          (1U << 2)
#define RL_IOSQE_IO_HARDLINK      (1U << 3)
#define RL_IOSQE_ASYNC            (1U << 4)
#define RL_IOSQE_BUFFER_SELECT    (1U << 5)
#define RL_IOSQE_CQE_SKIP_SUCCESS (1U << 6)

/* ---- CQE flags ---- */
#define RL_CQE_F_BUFFER          (1U << 0)
#define RL_CQE_F_MORE            (1U << 1)
#define RL_CQE_F_SOCK_NONEMPTY   (1U << 2)
#define RL_CQE_F_NOTIF           (1U << 3)
#define RL_CQE_F_BUF_MORE        (1U << 4)   /* 6.12: incremental buffer still in use */
#define RL_CQE_BUFFER_SHIFT      16

/* ---- op-specific flags ---- */
#define RL_TIMEOUT_ABS           (1U << 0)
#define RL_TIMEOUT_ETIME_SUCCESS (1U << 5)
#define RL_POLL_ADD_MULTI        (1U << 0)
#define RL_ACCEPT_MULTISHOT      (1U << 0)
#define RL_RECVSEND_POLL_FIRST   (1U << 0)
#define RL_RECV_MULTISHOT        (1U << 1)
#define RL_RECVSEND_FIXED_BUF    (1U << 2)
#define RL_ASYNC_CANCEL_ALL      (1U << 0)
#define RL_ASYNC_CANCEL_FD       (1U << 1)
#define RL_ASYNC_CANCEL_ANY      (1U << 2)
#define RL_ASYNC_CANCEL_FD_FIXED (1U << 3)
#define RL_FILE_INDEX_ALLOC      (~0U)
#define RL_FSYNC_DATASYNC        (1U << 0)
#define RL_FIXED_FD_NO_CLOEXEC   (1U << 0)   /* sqe->install_fd_flags */

/* ---- mmap offsets ---- */
#define RL_OFF_SQ_RING           0ULL
#define RL_OFF_CQ_RING           0x8000000ULL
#define RL_OFF_SQES              0x10000000ULL

/* ---- io_uring_register opcodes ---- */
#define RL_REGISTER_BUFFERS         0
#define RL_UNREGISTER_BUFFERS       1
#define RL_REGISTER_FILES           2
#define RL_UNREGISTER_FILES         3
#define RL_REGISTER_FILES_UPDATE    6
#define RL_REGISTER_PROBE           8
#define RL_REGISTER_ENABLE_RINGS    12
#define RL_REGISTER_FILES2          13
#define RL_REGISTER_PBUF_RING       22
#define RL_IOU_PBUF_RING_INC        2    /* rl_buf_reg.flags, 6.12: incremental consumption */
#define RL_UNREGISTER_PBUF_RING     23
#define RL_REGISTER_FILE_ALLOC_RANGE 25
#define RL_RSRC_REGISTER_SPARSE     (1U << 0)
#define RL_IO_URING_OP_SUPPORTED    (1U << 0)

/* ---- raw syscalls: return -errno on failure (never touch errno's caller) ---- */
static inline int rl_setup(unsigned entries, rl_uring_params *p) {
    long r = syscall(__NR_io_uring_setup, entries, p);
    return r < 0 ? -errno : (int)r;
}

static inline int rl_enter(int fd, unsigned to_submit, unsigned min_complete,
                           unsigned flags, void *arg, size_t argsz) {
    long r = syscall(__NR_io_uring_enter, fd, to_submit, min_complete, flags, arg, argsz);
    return r < 0 ? -errno : (int)r;
}

static inline int rl_register(int fd, unsigned opcode, void *arg, unsigned nr_args) {
    long r = syscall(__NR_io_uring_register, fd, opcode, arg, nr_args);
    return r < 0 ? -errno : (int)r;
}

/* ---- ordered access to the shared ring indices ---- */
static inline uint32_t rl_load_acquire(const uint32_t *p) {
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}
static inline void rl_store_release(uint32_t *p, uint32_t v) {
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}
static inline uint32_t rl_load_relaxed(const uint32_t *p) {
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}
/* Provided-buffer ring tail is a u16 at offset 14 of entry 0. */
static inline void rl_store_release16(uint16_t *p, uint16_t v) {
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}
/* SQPOLL: the need-wakeup flag must be read after the tail store is visible. */
static inline void rl_full_barrier(void) {
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

static inline double rl_monotonic(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A cheap tick counter for the opt-in latency histograms: the CPU's
 * invariant counter where there is one (a few instructions, against ~60 for
 * clock_gettime through the vDSO), else nanoseconds of CLOCK_MONOTONIC.
 * rl_ticks_is_ns() says which; Loop.enable_histograms calibrates ticks. */
static inline uint64_t rl_ticks(void) {
#if defined(__x86_64__)
    uint32_t lo, hi;
    __asm__ __volatile__("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
#elif defined(__aarch64__)
    uint64_t v;
    __asm__ __volatile__("mrs %0, cntvct_el0" : "=r"(v));
    return v;
#else
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
#endif
}
static inline int rl_ticks_is_ns(void) {
#if defined(__x86_64__) || defined(__aarch64__)
    return 0;
#else
    return 1;
#endif
}

#endif /* RINGLINE_IO_URING_H */
