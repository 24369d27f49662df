/*
 * udp_echo_uring: a minimal, single-threaded io_uring UDP echo server.
 *
 * The "speed of light" reference of the UDP echo benchmark
 * (bench/udp_bench.py): what the kernel does when user space gets out of
 * the way, with the cheapest io_uring idioms of a modern kernel:
 *
 *   - one multishot RECVMSG on the socket, drawing from a provided buffer
 *     ring; the kernel writes struct io_uring_recvmsg_out, the sender's
 *     address and the payload into each buffer;
 *   - each datagram is echoed from that buffer by one SENDMSG whose msghdr
 *     names the address and payload in place (no copy in user space); the
 *     buffer goes back to the ring when the send completes;
 *   - all SQEs of one batch of completions go to the kernel with the
 *     io_uring_enter() that also waits for the next batch;
 *   - COOP_TASKRUN | SINGLE_ISSUER | DEFER_TASKRUN and a registered ring fd.
 *
 * Raw syscalls, no liburing (kernel UAPI headers only), like echo_uring.c.
 *
 * Usage: udp_echo_uring [--bufs N] [--buf-size BYTES] PORT [HOST]
 *        (PORT 0 picks a free port; HOST defaults to 127.0.0.1, IPv4 or IPv6)
 * Prints "READY <port>" once receiving; exits 0 on SIGTERM/SIGINT.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#define SQ_ENTRIES 1024
#define CQ_ENTRIES 8192
#define BUF_GROUP 0
#define NAME_ROOM 32 /* >= sizeof(struct sockaddr_in6) */

static unsigned buf_count = 256; /* power of two */
static unsigned buf_size = 2048;

enum op { OP_RECV = 1, OP_SEND, OP_SIGNAL };
#define UD(op, n) (((uint64_t)(uint32_t)(n) << 8) | (uint64_t)(op))
#define UD_OP(ud) ((enum op)((ud) & 0xff))
#define UD_N(ud) ((uint32_t)((ud) >> 8))

/* One echo in flight per buffer: its msghdr and iovec live here until the
 * send's CQE, and point into the buffer itself. */
struct echo {
	struct msghdr msg;
	struct iovec iov;
};

static struct {
	int fd;
	int enter_fd;
	unsigned enter_flags;
	unsigned *sq_head, *sq_tail, sq_mask, sq_entries;
	struct io_uring_sqe *sqes;
	unsigned sq_local_tail;
	unsigned *cq_head, *cq_tail, cq_mask;
	struct io_uring_cqe *cqes;
} R;

static struct io_uring_buf_ring *br;
static uint16_t br_tail;
static char *buf_base;
static struct echo *echoes;
static struct msghdr recv_msg; /* read by the kernel while the recv is armed */
static int sock_fd, sig_fd;
static struct signalfd_siginfo sig_info;
static bool recv_armed, starved, stopping;
static unsigned bufs_held;
static uint64_t echoed, dropped;

static void die(const char *what, int err)
{
	fprintf(stderr, "udp_echo_uring: %s: %s\n", what, strerror(err));
	exit(1);
}

static void ring_setup(void)
{
	struct io_uring_params p;
	memset(&p, 0, sizeof p);
	p.flags = IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SINGLE_ISSUER |
		  IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE |
		  IORING_SETUP_SUBMIT_ALL;
	p.cq_entries = CQ_ENTRIES;
	int fd = (int)syscall(__NR_io_uring_setup, SQ_ENTRIES, &p);
	if (fd < 0)
		die("io_uring_setup (needs Linux >= 6.1)", errno);
	if (!(p.features & IORING_FEAT_SINGLE_MMAP) || !(p.features & IORING_FEAT_NODROP))
		die("io_uring features", ENOSYS);
	size_t sq_sz = p.sq_off.array + p.sq_entries * sizeof(unsigned);
	size_t cq_sz = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
	size_t sz = sq_sz > cq_sz ? sq_sz : cq_sz;
	char *ptr = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
			 fd, IORING_OFF_SQ_RING);
	if (ptr == MAP_FAILED)
		die("mmap rings", errno);
	R.sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe),
		      PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
		      IORING_OFF_SQES);
	if (R.sqes == MAP_FAILED)
		die("mmap sqes", errno);
	R.fd = fd;
	R.sq_head = (unsigned *)(ptr + p.sq_off.head);
	R.sq_tail = (unsigned *)(ptr + p.sq_off.tail);
	R.sq_mask = *(unsigned *)(ptr + p.sq_off.ring_mask);
	R.sq_entries = p.sq_entries;
	R.cq_head = (unsigned *)(ptr + p.cq_off.head);
	R.cq_tail = (unsigned *)(ptr + p.cq_off.tail);
	R.cq_mask = *(unsigned *)(ptr + p.cq_off.ring_mask);
	R.cqes = (struct io_uring_cqe *)(ptr + p.cq_off.cqes);
	R.sq_local_tail = *R.sq_tail;
	unsigned *array = (unsigned *)(ptr + p.sq_off.array);
	for (unsigned i = 0; i < p.sq_entries; i++)
		array[i] = i;
	struct io_uring_rsrc_update up = { .offset = -1U, .data = (uint64_t)fd };
	R.enter_fd = fd;
	R.enter_flags = 0;
	if (syscall(__NR_io_uring_register, fd, IORING_REGISTER_RING_FDS, &up, 1) == 1) {
		R.enter_fd = (int)up.offset;
		R.enter_flags = IORING_ENTER_REGISTERED_RING;
	}
}

static void ring_enter(bool wait)
{
	__atomic_store_n(R.sq_tail, R.sq_local_tail, __ATOMIC_RELEASE);
	unsigned to_submit = R.sq_local_tail - *R.sq_head;
	if (!to_submit && !wait)
		return;
	unsigned flags = R.enter_flags | (wait ? IORING_ENTER_GETEVENTS : 0);
	for (;;) {
		long ret = syscall(__NR_io_uring_enter, R.enter_fd, to_submit,
				   wait ? 1 : 0, flags, NULL, 0);
		if (ret >= 0 || errno == EINTR || errno == EAGAIN || errno == EBUSY)
			return;
		die("io_uring_enter", errno);
	}
}

static struct io_uring_sqe *get_sqe(void)
{
	unsigned head = __atomic_load_n(R.sq_head, __ATOMIC_ACQUIRE);
	if (R.sq_local_tail - head >= R.sq_entries) {
		ring_enter(false);
		head = __atomic_load_n(R.sq_head, __ATOMIC_ACQUIRE);
		if (R.sq_local_tail - head >= R.sq_entries)
			die("submission queue stuck", EBUSY);
	}
	struct io_uring_sqe *sqe = &R.sqes[R.sq_local_tail & R.sq_mask];
	R.sq_local_tail++;
	memset(sqe, 0, sizeof *sqe);
	return sqe;
}

static inline char *buf_addr(uint16_t bid)
{
	return buf_base + (size_t)bid * buf_size;
}

static void bufring_setup(void)
{
	br = mmap(NULL, buf_count * sizeof(struct io_uring_buf), PROT_READ | PROT_WRITE,
		  MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	buf_base = mmap(NULL, (size_t)buf_count * buf_size, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	echoes = calloc(buf_count, sizeof *echoes);
	if (br == MAP_FAILED || buf_base == MAP_FAILED || !echoes)
		die("buffers", ENOMEM);
	struct io_uring_buf_reg reg;
	memset(&reg, 0, sizeof reg);
	reg.ring_addr = (uint64_t)(uintptr_t)br;
	reg.ring_entries = buf_count;
	reg.bgid = BUF_GROUP;
	if (syscall(__NR_io_uring_register, R.fd, IORING_REGISTER_PBUF_RING, &reg, 1) < 0)
		die("IORING_REGISTER_PBUF_RING", errno);
	for (unsigned i = 0; i < buf_count; i++) {
		struct io_uring_buf *b = &br->bufs[i];
		b->addr = (uint64_t)(uintptr_t)buf_addr((uint16_t)i);
		b->len = buf_size;
		b->bid = (uint16_t)i;
	}
	br_tail = buf_count;
	__atomic_store_n(&br->tail, br_tail, __ATOMIC_RELEASE);
}

static void buf_recycle(uint16_t bid)
{
	struct io_uring_buf *b = &br->bufs[br_tail & (buf_count - 1)];
	b->addr = (uint64_t)(uintptr_t)buf_addr(bid);
	b->len = buf_size;
	b->bid = bid;
	br_tail++;
	bufs_held--;
}

static void arm_recv(void)
{
	struct io_uring_sqe *sqe = get_sqe();
	sqe->opcode = IORING_OP_RECVMSG;
	sqe->fd = sock_fd;
	sqe->addr = (uint64_t)(uintptr_t)&recv_msg;
	sqe->len = 1;
	sqe->ioprio = IORING_RECV_MULTISHOT;
	sqe->flags = IOSQE_BUFFER_SELECT;
	sqe->buf_group = BUF_GROUP;
	sqe->user_data = UD(OP_RECV, 0);
	recv_armed = true;
}

static void arm_signal(void)
{
	struct io_uring_sqe *sqe = get_sqe();
	sqe->opcode = IORING_OP_READ;
	sqe->fd = sig_fd;
	sqe->addr = (uint64_t)(uintptr_t)&sig_info;
	sqe->len = sizeof sig_info;
	sqe->user_data = UD(OP_SIGNAL, 0);
}

/* A datagram arrived in buffer bid: send it back from where it lies. */
static void echo_datagram(uint16_t bid)
{
	char *p = buf_addr(bid);
	struct io_uring_recvmsg_out *out = (struct io_uring_recvmsg_out *)p;
	if (out->flags & MSG_TRUNC || out->namelen > NAME_ROOM) {
		dropped++;
		buf_recycle(bid);
		return;
	}
	struct echo *e = &echoes[bid];
	memset(&e->msg, 0, sizeof e->msg);
	e->msg.msg_name = p + sizeof *out;
	e->msg.msg_namelen = out->namelen;
	e->iov.iov_base = p + sizeof *out + NAME_ROOM;
	e->iov.iov_len = out->payloadlen;
	e->msg.msg_iov = &e->iov;
	e->msg.msg_iovlen = 1;
	struct io_uring_sqe *sqe = get_sqe();
	sqe->opcode = IORING_OP_SENDMSG;
	sqe->fd = sock_fd;
	sqe->addr = (uint64_t)(uintptr_t)&e->msg;
	sqe->len = 1;
	sqe->user_data = UD(OP_SEND, bid);
}

static void handle_cqe(const struct io_uring_cqe *cqe)
{
	switch (UD_OP(cqe->user_data)) {
	case OP_RECV:
		if (!(cqe->flags & IORING_CQE_F_MORE))
			recv_armed = false;
		if (cqe->flags & IORING_CQE_F_BUFFER) {
			bufs_held++;
			echo_datagram((uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT));
		} else if (cqe->res == -ENOBUFS) {
			starved = true;
		} else if (cqe->res < 0 && cqe->res != -ECANCELED) {
			die("recvmsg", -cqe->res);
		}
		break;
	case OP_SEND:
		if (cqe->res >= 0)
			echoed++;
		buf_recycle((uint16_t)UD_N(cqe->user_data));
		starved = false;
		break;
	case OP_SIGNAL:
		stopping = true;
		break;
	}
}

int main(int argc, char **argv)
{
	int argi = 1;
	while (argi < argc && strncmp(argv[argi], "--", 2) == 0) {
		if (!strcmp(argv[argi], "--bufs") && argi + 1 < argc)
			buf_count = (unsigned)atoi(argv[++argi]);
		else if (!strcmp(argv[argi], "--buf-size") && argi + 1 < argc)
			buf_size = (unsigned)atoi(argv[++argi]);
		else
			break;
		argi++;
	}
	if (argi >= argc || (buf_count & (buf_count - 1)) || buf_count > 32768 ||
	    buf_size < sizeof(struct io_uring_recvmsg_out) + NAME_ROOM + 1) {
		fprintf(stderr, "usage: udp_echo_uring [--bufs POW2] [--buf-size BYTES] PORT [HOST]\n");
		return 2;
	}
	int port = atoi(argv[argi]);
	const char *host = argi + 1 < argc ? argv[argi + 1] : "127.0.0.1";

	struct sockaddr_storage ss;
	socklen_t sl;
	memset(&ss, 0, sizeof ss);
	if (strchr(host, ':')) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
		a->sin6_family = AF_INET6;
		a->sin6_port = htons((uint16_t)port);
		if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1)
			die("bad host", EINVAL);
		sl = sizeof *a;
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;
		a->sin_family = AF_INET;
		a->sin_port = htons((uint16_t)port);
		if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
			die("bad host", EINVAL);
		sl = sizeof *a;
	}
	sock_fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (sock_fd < 0)
		die("socket", errno);
	int big = 4 << 20;
	setsockopt(sock_fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
	if (bind(sock_fd, (struct sockaddr *)&ss, sl) < 0)
		die("bind", errno);
	sl = sizeof ss;
	getsockname(sock_fd, (struct sockaddr *)&ss, &sl);
	port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
					      : ((struct sockaddr_in *)&ss)->sin_port);

	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	sig_fd = signalfd(-1, &mask, SFD_CLOEXEC);
	if (sig_fd < 0)
		die("signalfd", errno);

	ring_setup();
	bufring_setup();
	recv_msg.msg_namelen = NAME_ROOM;
	recv_msg.msg_controllen = 0;
	arm_recv();
	arm_signal();
	printf("READY %d\n", port);
	fflush(stdout);

	while (!stopping) {
		if (!recv_armed && !starved)
			arm_recv();
		__atomic_store_n(&br->tail, br_tail, __ATOMIC_RELEASE);
		ring_enter(true);
		unsigned head = *R.cq_head;
		unsigned tail = __atomic_load_n(R.cq_tail, __ATOMIC_ACQUIRE);
		for (; head != tail; head++)
			handle_cqe(&R.cqes[head & R.cq_mask]);
		__atomic_store_n(R.cq_head, head, __ATOMIC_RELEASE);
	}
	fprintf(stderr, "udp_echo_uring: echoed %llu datagrams, dropped %llu\n",
		(unsigned long long)echoed, (unsigned long long)dropped);
	return 0;
}
