/*
 * echo_uring: a minimal, single-threaded io_uring TCP echo server.
 *
 * It is the "speed of light" reference for the echo benchmark: whatever a
 * Python event loop achieves is compared against what the kernel can do when
 * user space gets out of the way.  It therefore uses the cheapest io_uring
 * idioms available on a modern kernel:
 *
 *   - one multishot ACCEPT for the listener (no re-submission per client);
 *   - one multishot RECV per connection, drawing from a provided buffer ring
 *     (IORING_REGISTER_PBUF_RING), so no receive buffer is pinned per
 *     connection and no SQE is needed per receive;
 *   - the received buffers are echoed back as-is (zero copies in user space);
 *     at most one send is in flight per connection so the byte order is kept,
 *     later buffers are queued and flushed together with SENDMSG, and short
 *     sends are resumed from where they stopped;
 *   - all SQEs produced while handling one batch of completions are submitted
 *     by the single io_uring_enter() that also waits for the next batch;
 *   - COOP_TASKRUN | SINGLE_ISSUER | DEFER_TASKRUN so completions are only
 *     processed when we ask for them (no IPIs / task-work interruptions);
 *   - a registered ring fd so io_uring_enter() skips the fd table lookup.
 *
 * When the buffer ring runs dry the kernel ends a multishot recv with
 * -ENOBUFS; such connections are parked and re-armed as soon as buffers are
 * given back (i.e. when a send completes).
 *
 * Raw syscalls are used instead of liburing so that only the kernel UAPI
 * headers (linux-libc-dev >= 6.1, pulled in by gcc/libc6-dev) are needed.
 *
 * Usage: echo_uring [--bufs N] [--buf-size BYTES] PORT [HOST]
 *        (PORT 0 picks a free port; HOST defaults to 127.0.0.1)
 * Prints "READY <port>" once listening; exits 0 on SIGTERM/SIGINT.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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

/* Ring sizes.  The CQ is larger than the SQ because multishot requests post
 * many CQEs for one SQE. */
#define SQ_ENTRIES 1024
#define CQ_ENTRIES 8192

/* Provided buffers (--bufs / --buf-size).  The count bounds how much
 * received-but-not-yet-echoed data may exist at once; beyond that recvs end
 * with ENOBUFS and wait.  The kernel hands buffers out in ring (FIFO) order,
 * so every buffer is cycled through: keeping the whole pool small keeps the
 * memory the data is copied through warm in cache. */
#define BUF_GROUP 0
static unsigned buf_count = 256; /* power of two, required by the buffer ring */
static unsigned buf_size = 64 * 1024;

/* Queued buffers sent by one SENDMSG when a connection has a backlog. */
#define MAX_IOV 16

enum op { OP_ACCEPT = 1, OP_RECV, OP_SEND, OP_SIGNAL };

/* user_data = fd << 8 | op.  Indexing connections by fd is safe because an fd
 * is only closed once no request referencing it is still in flight. */
#define UD(op, fd) (((uint64_t)(uint32_t)(fd) << 8) | (uint64_t)(op))
#define UD_OP(ud) ((enum op)((ud) & 0xff))
#define UD_FD(ud) ((int)((ud) >> 8))

struct qbuf {      /* a received buffer waiting to be echoed */
	uint16_t bid;
	uint32_t off;  /* bytes of it already sent */
	uint32_t len;  /* bytes received into it */
};

struct conn {
	int fd;
	bool recv_armed;    /* a multishot recv is outstanding */
	bool send_inflight; /* a send/sendmsg is outstanding */
	bool eof;           /* peer closed: flush the queue, then close */
	bool dead;          /* error: drop the queue and close asap */
	bool starved;       /* recv ended with ENOBUFS; re-arm when buffers return */
	struct qbuf *q;     /* FIFO ring of queued buffers, capacity power of 2 */
	uint32_t q_head, q_tail, q_cap;
	struct msghdr msg;  /* must stay valid while a SENDMSG is in flight */
	struct iovec iov[MAX_IOV];
};

static struct {
	int fd;
	int enter_fd; /* registered ring index, or fd if registration failed */
	unsigned enter_flags;
	unsigned *sq_head, *sq_tail, sq_mask, sq_entries;
	struct io_uring_sqe *sqes;
	unsigned sq_local_tail;
	unsigned *cq_head, *cq_tail, cq_mask;
	struct io_uring_cqe *cqes;
} R;

static struct io_uring_buf_ring *br;
static uint16_t br_tail; /* local copy, published once per loop iteration */
static char *buf_base;
static unsigned bufs_held; /* buffers owned by user space (queued for send) */

static struct conn **conns; /* indexed by fd */
static size_t conns_cap;
static unsigned n_starved;
static int listen_fd, sig_fd;
static struct signalfd_siginfo sig_info;
static bool stopping;

static void die(const char *what, int err)
{
	fprintf(stderr, "echo_uring: %s: %s\n", what, strerror(err));
	exit(1);
}

/* ------------------------------------------------------------------ ring */

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

	/* SQ index array: identity mapping, set once, never touched again. */
	unsigned *array = (unsigned *)(ptr + p.sq_off.array);
	for (unsigned i = 0; i < p.sq_entries; i++)
		array[i] = i;

	/* Register the ring fd itself: saves an fdget/fdput per enter. */
	struct io_uring_rsrc_update up = { .offset = -1U, .data = (uint64_t)fd };
	R.enter_fd = fd;
	R.enter_flags = 0;
	if (syscall(__NR_io_uring_register, fd, IORING_REGISTER_RING_FDS, &up, 1) == 1) {
		R.enter_fd = (int)up.offset;
		R.enter_flags = IORING_ENTER_REGISTERED_RING;
	}
}

/* Hand everything queued in the SQ to the kernel and optionally wait for at
 * least one completion.  With DEFER_TASKRUN the kernel only runs completion
 * work here, so this is the single syscall of each loop iteration. */
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
		if (ret >= 0 || errno == EINTR)
			return;
		/* EAGAIN/EBUSY: CQ overflow backlog; returning lets the caller
		 * reap CQEs, the SQEs stay queued for the next enter. */
		if (errno == EAGAIN || errno == EBUSY)
			return;
		die("io_uring_enter", errno);
	}
}

static struct io_uring_sqe *get_sqe(void)
{
	unsigned head = __atomic_load_n(R.sq_head, __ATOMIC_ACQUIRE);
	if (R.sq_local_tail - head >= R.sq_entries) {
		/* SQ full (only with a burst of >1024 new requests in one
		 * iteration): submit what we have without waiting. */
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

/* ------------------------------------------------------ provided buffers */

static void bufring_setup(void)
{
	size_t ring_sz = buf_count * sizeof(struct io_uring_buf);
	br = mmap(NULL, ring_sz, PROT_READ | PROT_WRITE,
		  MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (br == MAP_FAILED)
		die("mmap buffer ring", errno);
	buf_base = mmap(NULL, (size_t)buf_count * buf_size, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf_base == MAP_FAILED)
		die("mmap buffers", errno);

	struct io_uring_buf_reg reg;
	memset(&reg, 0, sizeof reg);
	reg.ring_addr = (uint64_t)(uintptr_t)br;
	reg.ring_entries = buf_count;
	reg.bgid = BUF_GROUP;
	if (syscall(__NR_io_uring_register, R.fd, IORING_REGISTER_PBUF_RING, &reg, 1) < 0)
		die("IORING_REGISTER_PBUF_RING", errno);

	for (unsigned i = 0; i < buf_count; i++) {
		struct io_uring_buf *b = &br->bufs[i];
		b->addr = (uint64_t)(uintptr_t)(buf_base + (size_t)i * buf_size);
		b->len = buf_size;
		b->bid = (uint16_t)i;
	}
	br_tail = buf_count;
	__atomic_store_n(&br->tail, br_tail, __ATOMIC_RELEASE);
}

static inline char *buf_addr(uint16_t bid)
{
	return buf_base + (size_t)bid * buf_size;
}

/* Give a buffer back to the kernel.  The tail is published in bulk by
 * bufring_publish() before the next io_uring_enter(). */
static void buf_recycle(uint16_t bid)
{
	struct io_uring_buf *b = &br->bufs[br_tail & (buf_count - 1)];
	b->addr = (uint64_t)(uintptr_t)buf_addr(bid);
	b->len = buf_size;
	b->bid = bid;
	br_tail++;
	bufs_held--;
}

static void bufring_publish(void)
{
	__atomic_store_n(&br->tail, br_tail, __ATOMIC_RELEASE);
}

/* ---------------------------------------------------------- submissions */

static void arm_accept(void)
{
	struct io_uring_sqe *sqe = get_sqe();
	sqe->opcode = IORING_OP_ACCEPT;
	sqe->fd = listen_fd;
	sqe->ioprio = IORING_ACCEPT_MULTISHOT;
	sqe->accept_flags = SOCK_CLOEXEC;
	sqe->user_data = UD(OP_ACCEPT, listen_fd);
}

static void arm_recv(struct conn *c)
{
	struct io_uring_sqe *sqe = get_sqe();
	sqe->opcode = IORING_OP_RECV;
	sqe->fd = c->fd;
	sqe->ioprio = IORING_RECV_MULTISHOT;
	sqe->flags = IOSQE_BUFFER_SELECT;
	sqe->buf_group = BUF_GROUP;
	sqe->user_data = UD(OP_RECV, c->fd);
	c->recv_armed = true;
}

static void arm_signal(void)
{
	struct io_uring_sqe *sqe = get_sqe();
	sqe->opcode = IORING_OP_READ;
	sqe->fd = sig_fd;
	sqe->addr = (uint64_t)(uintptr_t)&sig_info;
	sqe->len = sizeof sig_info;
	sqe->user_data = UD(OP_SIGNAL, sig_fd);
}

static inline uint32_t q_len(const struct conn *c)
{
	return c->q_tail - c->q_head;
}

static void q_push(struct conn *c, uint16_t bid, uint32_t len)
{
	if (q_len(c) == c->q_cap) {
		/* grow: unwrap the ring into a twice-as-large array */
		uint32_t ncap = c->q_cap * 2;
		struct qbuf *nq = malloc(ncap * sizeof *nq);
		if (!nq)
			die("malloc", ENOMEM);
		for (uint32_t i = 0; i < c->q_cap; i++)
			nq[i] = c->q[(c->q_head + i) & (c->q_cap - 1)];
		free(c->q);
		c->q = nq;
		c->q_head = 0;
		c->q_tail = c->q_cap;
		c->q_cap = ncap;
	}
	struct qbuf *e = &c->q[c->q_tail++ & (c->q_cap - 1)];
	e->bid = bid;
	e->off = 0;
	e->len = len;
}

/* Start sending the head of the queue unless a send is already in flight
 * (one in flight at a time keeps the echoed bytes in order). */
static void start_send(struct conn *c)
{
	uint32_t n = q_len(c);
	if (c->send_inflight || !n || c->dead)
		return;
	struct io_uring_sqe *sqe = get_sqe();
	if (n == 1) {
		struct qbuf *e = &c->q[c->q_head & (c->q_cap - 1)];
		sqe->opcode = IORING_OP_SEND;
		sqe->addr = (uint64_t)(uintptr_t)(buf_addr(e->bid) + e->off);
		sqe->len = e->len - e->off;
	} else {
		/* Backlog: flush up to MAX_IOV buffers with one SENDMSG. */
		if (n > MAX_IOV)
			n = MAX_IOV;
		for (uint32_t i = 0; i < n; i++) {
			struct qbuf *e = &c->q[(c->q_head + i) & (c->q_cap - 1)];
			c->iov[i].iov_base = buf_addr(e->bid) + e->off;
			c->iov[i].iov_len = e->len - e->off;
		}
		memset(&c->msg, 0, sizeof c->msg);
		c->msg.msg_iov = c->iov;
		c->msg.msg_iovlen = n;
		sqe->opcode = IORING_OP_SENDMSG;
		sqe->addr = (uint64_t)(uintptr_t)&c->msg;
		sqe->len = 1;
	}
	sqe->fd = c->fd;
	sqe->msg_flags = MSG_NOSIGNAL;
	sqe->user_data = UD(OP_SEND, c->fd);
	c->send_inflight = true;
}

/* ---------------------------------------------------------- connections */

static struct conn *conn_new(int fd)
{
	if ((size_t)fd >= conns_cap) {
		size_t ncap = conns_cap ? conns_cap : 1024;
		while (ncap <= (size_t)fd)
			ncap *= 2;
		conns = realloc(conns, ncap * sizeof *conns);
		if (!conns)
			die("realloc", ENOMEM);
		memset(conns + conns_cap, 0, (ncap - conns_cap) * sizeof *conns);
		conns_cap = ncap;
	}
	struct conn *c = calloc(1, sizeof *c);
	if (!c)
		die("calloc", ENOMEM);
	c->fd = fd;
	c->q_cap = 16;
	c->q = malloc(c->q_cap * sizeof *c->q);
	if (!c->q)
		die("malloc", ENOMEM);
	conns[fd] = c;
	return c;
}

/* Close the connection once nothing references it any more.  Returns true if
 * it was freed. */
static bool conn_maybe_close(struct conn *c)
{
	if (c->recv_armed || c->send_inflight)
		return false;
	if (!c->dead && !c->eof)
		return false;
	if (!c->dead && q_len(c))
		return false; /* EOF: still echoing what we already got */
	while (q_len(c))
		buf_recycle(c->q[c->q_head++ & (c->q_cap - 1)].bid);
	if (c->starved)
		n_starved--;
	close(c->fd);
	conns[c->fd] = NULL;
	free(c->q);
	free(c);
	return true;
}

static void conn_fail(struct conn *c)
{
	if (c->dead)
		return;
	c->dead = true;
	/* A still-armed multishot recv must be terminated before the fd can
	 * be closed; shutting the socket down makes it complete. */
	if (c->recv_armed)
		shutdown(c->fd, SHUT_RDWR);
	conn_maybe_close(c);
}

/* -------------------------------------------------------- completions */

static void on_accept(const struct io_uring_cqe *cqe)
{
	if (!(cqe->flags & IORING_CQE_F_MORE) && !stopping)
		arm_accept(); /* multishot ended (e.g. error): re-arm */
	if (cqe->res < 0) {
		if (cqe->res != -ECONNABORTED && cqe->res != -EINTR)
			fprintf(stderr, "echo_uring: accept: %s\n", strerror(-cqe->res));
		return;
	}
	int fd = cqe->res;
	int one = 1;
	/* Echo replies are small and latency-bound: never wait for Nagle. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	arm_recv(conn_new(fd));
}

static void on_recv(struct conn *c, const struct io_uring_cqe *cqe)
{
	bool more = cqe->flags & IORING_CQE_F_MORE;
	if (!more)
		c->recv_armed = false;
	if (cqe->flags & IORING_CQE_F_BUFFER) {
		uint16_t bid = (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
		bufs_held++;
		if (cqe->res > 0 && !c->dead) {
			q_push(c, bid, (uint32_t)cqe->res);
			start_send(c);
		} else {
			buf_recycle(bid);
		}
	}
	if (cqe->res == 0) {
		c->eof = true;
	} else if (cqe->res == -ENOBUFS) {
		/* Buffer ring empty: data waits in the socket until buffers
		 * come back from completed sends, then we re-arm. */
		if (!c->starved) {
			c->starved = true;
			n_starved++;
		}
	} else if (cqe->res < 0) {
		conn_fail(c);
		return;
	} else if (!more && !c->dead && !c->eof) {
		arm_recv(c); /* multishot terminated early (e.g. CQ overflow) */
	}
	conn_maybe_close(c);
}

static void on_send(struct conn *c, const struct io_uring_cqe *cqe)
{
	c->send_inflight = false;
	if (cqe->res <= 0) {
		conn_fail(c);
		return;
	}
	/* Retire fully sent buffers; a partially sent one stays at the head
	 * with its offset advanced, so the next send resumes there. */
	uint32_t left = (uint32_t)cqe->res;
	while (left) {
		struct qbuf *e = &c->q[c->q_head & (c->q_cap - 1)];
		uint32_t take = e->len - e->off;
		if (take > left)
			take = left;
		e->off += take;
		left -= take;
		if (e->off == e->len) {
			buf_recycle(e->bid);
			c->q_head++;
		}
	}
	if (!conn_maybe_close(c))
		start_send(c);
}

static void rearm_starved(void)
{
	/* Only when a useful number of buffers is back, so a starved
	 * connection is not re-armed just to fail again immediately. */
	if (buf_count - bufs_held < buf_count / 8)
		return;
	for (size_t fd = 0; fd < conns_cap && n_starved; fd++) {
		struct conn *c = conns[fd];
		if (c && c->starved) {
			c->starved = false;
			n_starved--;
			if (!c->recv_armed && !c->dead && !c->eof)
				arm_recv(c);
		}
	}
}

/* ------------------------------------------------------------------ main */

static int listen_on(const char *host, int port)
{
	struct sockaddr_in sa;
	memset(&sa, 0, sizeof sa);
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
		fprintf(stderr, "echo_uring: bad IPv4 address %s\n", host);
		exit(2);
	}
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		die("socket", errno);
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
		die("bind", errno);
	if (listen(fd, 1024) < 0)
		die("listen", errno);
	socklen_t len = sizeof sa;
	getsockname(fd, (struct sockaddr *)&sa, &len);
	printf("READY %d\n", ntohs(sa.sin_port));
	fflush(stdout);
	return fd;
}

static void usage(const char *argv0)
{
	fprintf(stderr, "usage: %s [--bufs N] [--buf-size BYTES] PORT [HOST]\n", argv0);
	exit(2);
}

int main(int argc, char **argv)
{
	int i = 1;
	for (; i + 1 < argc && !strncmp(argv[i], "--", 2); i += 2) {
		long v = strtol(argv[i + 1], NULL, 10);
		if (!strcmp(argv[i], "--bufs") && v >= 1 && v <= 32768 && !(v & (v - 1)))
			buf_count = (unsigned)v;
		else if (!strcmp(argv[i], "--buf-size") && v >= 64 && v <= (1 << 24))
			buf_size = (unsigned)v;
		else
			usage(argv[0]);
	}
	if (argc - i < 1 || argc - i > 2)
		usage(argv[0]);
	int port = atoi(argv[i]);
	const char *host = argc - i == 2 ? argv[i + 1] : "127.0.0.1";

	/* Signals are consumed through a signalfd read on the ring, so a
	 * SIGTERM can never be lost between a flag check and the wait. */
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	sig_fd = signalfd(-1, &mask, SFD_CLOEXEC);
	if (sig_fd < 0)
		die("signalfd", errno);

	ring_setup();
	bufring_setup();
	listen_fd = listen_on(host, port);
	arm_signal();
	arm_accept();

	while (!stopping) {
		ring_enter(true);
		unsigned head = *R.cq_head;
		unsigned tail = __atomic_load_n(R.cq_tail, __ATOMIC_ACQUIRE);
		for (; head != tail; head++) {
			const struct io_uring_cqe *cqe = &R.cqes[head & R.cq_mask];
			enum op op = UD_OP(cqe->user_data);
			int fd = UD_FD(cqe->user_data);
			if (op == OP_ACCEPT) {
				on_accept(cqe);
			} else if (op == OP_SIGNAL) {
				stopping = true;
			} else if ((size_t)fd < conns_cap && conns[fd]) {
				if (op == OP_RECV)
					on_recv(conns[fd], cqe);
				else
					on_send(conns[fd], cqe);
			} else if (cqe->flags & IORING_CQE_F_BUFFER) {
				bufs_held++; /* cannot happen; keep the count right */
				buf_recycle((uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT));
			}
		}
		__atomic_store_n(R.cq_head, head, __ATOMIC_RELEASE);
		if (n_starved)
			rearm_starved();
		bufring_publish();
	}
	/* Closing the ring cancels every outstanding request. */
	close(R.fd);
	close(listen_fd);
	return 0;
}
