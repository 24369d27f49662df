/*
 * loadgen: closed-loop TCP echo load generator (single thread, epoll).
 *
 *   loadgen --host 127.0.0.1 --port P --conns N --size BYTES --depth D
 *           --duration SECONDS [--warmup S] [--server-cpu CPU]
 *
 * Every connection keeps D requests of SIZE bytes in flight: it sends D
 * requests, and each time a full SIZE-byte echo has come back it issues one
 * more.  Latency is measured from the moment a request is issued (handed to
 * the connection's send stream) to the moment its last echoed byte arrives.
 *
 * Payload and verification.  Each connection's byte stream is a window into
 * one shared pseudo-random pattern of prime length P, offset by a
 * per-connection seed: stream byte i is pattern[(seed + i) % P].  Because P
 * does not divide SIZE, consecutive requests carry different bytes, so lost,
 * duplicated, reordered or cross-connection data fails the check.  Sending
 * and verifying are then a plain send() from / memcmp() against the pattern
 * (no per-byte work), which keeps the generator cheap at multi-GB/s.  Any
 * mismatch aborts with exit status 3.
 *
 * The generator must never be the bottleneck, so: level-triggered epoll with
 * EPOLLOUT only armed while a send is blocked, one recv() per readiness event,
 * all requests unlocked by one recv() are sent with a single send(), and no
 * allocation in the hot path.
 *
 * --server-cpu CPU makes it sample /proc/stat for that CPU exactly at the
 * start and end of the measured window (after warmup), so the server's CPU
 * cost per request lines up with the counted requests.  --server-pid PID
 * does the same with the run time of that process's threads
 * (/proc/PID/task/<tid>/schedstat): blind to softirq work done on its behalf,
 * but immune to other processes sharing the server's CPU.  Its own CPU use
 * (getrusage) is reported too, to show whether the generator was saturated.
 *
 * --spin polls epoll without blocking.  On a VM whose idle vCPUs halt, every
 * blocking wait costs a wakeup of tens of microseconds; spinning keeps the
 * generator's own wakeups out of the measured round trips (it has a core of
 * its own).  "loadgen_busy" is then the useful indicator of saturation: the
 * share of the window spent outside epoll_wait (rusage would say 100%).
 *
 * Output: one JSON line on stdout.  Exit 0 on success, 1 if connections
 * failed during the run, 2 on usage/connect errors, 3 on corrupted echoes.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define PATTERN_PERIOD 1048573u  /* prime, so SIZE % P != 0 for any SIZE < P */
#define CHUNK_MAX (512u * 1024u) /* max bytes per send()/recv() */
#define RBUF_SIZE (256u * 1024u)
#define MAX_EVENTS 256

/* Latency histogram: log-linear over nanoseconds, 128 sub-buckets per power
 * of two (<1% relative resolution: 0.125 us around a 27 us round trip, fine
 * enough to compare loops' p50), covering the whole uint64 range. */
#define SUB_BITS 7
#define SUB (1u << SUB_BITS)
#define NBUCKETS ((64 - SUB_BITS + 1) * SUB)

struct conn {
	int fd;
	bool want_out;    /* EPOLLOUT currently armed */
	bool dead;
	uint32_t seed;    /* offset of this connection's stream in the pattern */
	uint64_t issued;  /* stream bytes belonging to issued requests */
	uint64_t written; /* stream bytes handed to send() */
	uint64_t recvd;   /* stream bytes echoed back and verified */
	uint64_t done;    /* completed requests */
	uint64_t *issue_ns; /* ring of D issue timestamps, request k at k % D */
};

static uint8_t *pattern; /* PATTERN_PERIOD + CHUNK_MAX bytes */
static uint8_t rbuf[RBUF_SIZE];
static uint64_t hist[NBUCKETS];
static struct conn *conns;
static int ep;
static uint32_t size, depth;
static bool measuring;
static uint64_t m_requests, all_requests, total_errors;

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void fatal(int code, const char *fmt, const char *arg)
{
	fprintf(stderr, "loadgen: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n");
	exit(code);
}

/* ------------------------------------------------------------ histogram */

static unsigned bucket_of(uint64_t v)
{
	if (v < SUB)
		return (unsigned)v;
	unsigned msb = 63u - (unsigned)__builtin_clzll(v);
	return (msb - SUB_BITS + 1) * SUB + (unsigned)((v >> (msb - SUB_BITS)) & (SUB - 1));
}

static double bucket_mid(unsigned b)
{
	if (b < SUB)
		return b;
	unsigned msb = b / SUB + SUB_BITS - 1, sub = b % SUB;
	double lo = (double)((uint64_t)(SUB + sub) << (msb - SUB_BITS));
	double width = (double)(1ull << (msb - SUB_BITS));
	return lo + width / 2;
}

static double percentile_us(double q)
{
	uint64_t total = 0, seen = 0;
	for (unsigned b = 0; b < NBUCKETS; b++)
		total += hist[b];
	if (!total)
		return 0;
	uint64_t rank = (uint64_t)(q * (double)total);
	if (rank < 1)
		rank = 1;
	for (unsigned b = 0; b < NBUCKETS; b++) {
		seen += hist[b];
		if (seen >= rank)
			return bucket_mid(b) / 1000.0;
	}
	return 0;
}

/* ------------------------------------------------------------ CPU usage */

/* Busy time of one CPU from /proc/stat, in microseconds:
 * user + nice + system + irq + softirq. */
static bool cpu_busy_us(int cpu, double *busy, double *total)
{
	FILE *f = fopen("/proc/stat", "r");
	if (!f)
		return false;
	char want[32], line[512];
	snprintf(want, sizeof want, "cpu%d ", cpu);
	bool ok = false;
	while (fgets(line, sizeof line, f)) {
		if (strncmp(line, want, strlen(want)))
			continue;
		unsigned long long v[8] = { 0 };
		if (sscanf(line + strlen(want), "%llu %llu %llu %llu %llu %llu %llu %llu",
			   &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) >= 7) {
			double tick_us = 1e6 / (double)sysconf(_SC_CLK_TCK);
			/* user nice system idle iowait irq softirq steal */
			*busy = (double)(v[0] + v[1] + v[2] + v[5] + v[6]) * tick_us;
			*total = (double)(v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7]) * tick_us;
			ok = true;
		}
		break;
	}
	fclose(f);
	return ok;
}

/* Run time of all threads of a process, in microseconds (-1 if gone). */
static double proc_cpu_us(int pid)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/task", pid);
	DIR *d = opendir(path);
	if (!d)
		return -1;
	double total = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char p[320];
		snprintf(p, sizeof p, "/proc/%d/task/%s/schedstat", pid, e->d_name);
		FILE *f = fopen(p, "r");
		unsigned long long ns;
		if (f && fscanf(f, "%llu", &ns) == 1)
			total += (double)ns / 1e3;
		if (f)
			fclose(f);
	}
	closedir(d);
	return total;
}

static double self_cpu_us(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

/* -------------------------------------------------------------- traffic */

static void set_out(struct conn *c, bool on)
{
	if (c->want_out == on)
		return;
	struct epoll_event ev = { .events = EPOLLIN | (on ? EPOLLOUT : 0),
				  .data.ptr = c };
	epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
	c->want_out = on;
}

static void conn_error(struct conn *c, const char *why, int err)
{
	if (c->dead)
		return;
	fprintf(stderr, "loadgen: connection %d: %s%s%s\n", (int)(c - conns), why,
		err ? ": " : "", err ? strerror(err) : "");
	c->dead = true;
	total_errors++;
	epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
}

/* Push as much of the issued-but-unsent stream as the socket accepts. */
static void conn_flush(struct conn *c)
{
	while (c->written < c->issued) {
		uint64_t len = c->issued - c->written;
		if (len > CHUNK_MAX)
			len = CHUNK_MAX;
		const uint8_t *p = pattern + (c->seed + c->written) % PATTERN_PERIOD;
		ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				set_out(c, true);
				return;
			}
			conn_error(c, "send", errno);
			return;
		}
		c->written += (uint64_t)n;
	}
	set_out(c, false);
}

static void report_mismatch(struct conn *c, ssize_t n)
{
	const uint8_t *want = pattern + (c->seed + c->recvd) % PATTERN_PERIOD;
	ssize_t i = 0;
	while (i < n && rbuf[i] == want[i])
		i++;
	uint64_t off = c->recvd + (uint64_t)i;
	fprintf(stderr,
		"loadgen: DATA MISMATCH on connection %d at stream byte %llu "
		"(request %llu, byte %llu): got 0x%02x, expected 0x%02x\n",
		(int)(c - conns), (unsigned long long)off,
		(unsigned long long)(off / size), (unsigned long long)(off % size),
		rbuf[i], want[i]);
	exit(3);
}

static void conn_read(struct conn *c)
{
	ssize_t n = recv(c->fd, rbuf, sizeof rbuf, 0);
	if (n < 0) {
		if (errno != EAGAIN && errno != EINTR)
			conn_error(c, "recv", errno);
		return;
	}
	if (n == 0) {
		conn_error(c, "server closed the connection", 0);
		return;
	}
	if (c->recvd + (uint64_t)n > c->written) {
		fprintf(stderr, "loadgen: connection %d: server echoed more bytes than were sent\n",
			(int)(c - conns));
		exit(3);
	}
	if (memcmp(rbuf, pattern + (c->seed + c->recvd) % PATTERN_PERIOD, (size_t)n))
		report_mismatch(c, n);
	c->recvd += (uint64_t)n;

	/* Complete every request whose last byte has now arrived; each one
	 * frees a slot that is immediately refilled with a new request. */
	uint64_t t = 0;
	bool more = false;
	while (c->recvd >= (c->done + 1) * size) {
		if (!t)
			t = now_ns();
		uint64_t *slot = &c->issue_ns[c->done % depth];
		if (measuring) {
			hist[bucket_of(t - *slot)]++;
			m_requests++;
		}
		all_requests++;
		/* request done + depth takes over this slot */
		*slot = t;
		c->done++;
		c->issued += size;
		more = true;
	}
	if (more)
		conn_flush(c);
}

/* ------------------------------------------------------------------ main */

static void usage(const char *argv0)
{
	fprintf(stderr,
		"usage: %s --port P [--host 127.0.0.1] [--conns 1] [--size 64] [--depth 1]\n"
		"          [--duration 3] [--warmup 0.5] [--server-cpu CPU] [--server-pid PID]\n"
		"          [--spin]\n",
		argv0);
	exit(2);
}

static double parse_num(const char *s, const char *name)
{
	char *end;
	double v = strtod(s, &end);
	if (*s == 0 || *end != 0 || v < 0)
		fatal(2, "bad value for --%s", name);
	return v;
}

int main(int argc, char **argv)
{
	const char *host = "127.0.0.1";
	int port = 0, nconns = 1, server_cpu = -1, server_pid = -1;
	bool spin = false;
	double duration = 3, warmup = 0.5;
	size = 64;
	depth = 1;

	static const struct option opts[] = {
		{ "host", required_argument, 0, 'h' },
		{ "port", required_argument, 0, 'p' },
		{ "conns", required_argument, 0, 'c' },
		{ "size", required_argument, 0, 's' },
		{ "depth", required_argument, 0, 'd' },
		{ "duration", required_argument, 0, 't' },
		{ "warmup", required_argument, 0, 'w' },
		{ "server-cpu", required_argument, 0, 'C' },
		{ "server-pid", required_argument, 0, 'P' },
		{ "spin", no_argument, 0, 'S' },
		{ 0, 0, 0, 0 },
	};
	int o;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'h': host = optarg; break;
		case 'p': port = (int)parse_num(optarg, "port"); break;
		case 'c': nconns = (int)parse_num(optarg, "conns"); break;
		case 's': size = (uint32_t)parse_num(optarg, "size"); break;
		case 'd': depth = (uint32_t)parse_num(optarg, "depth"); break;
		case 't': duration = parse_num(optarg, "duration"); break;
		case 'w': warmup = parse_num(optarg, "warmup"); break;
		case 'C': server_cpu = (int)parse_num(optarg, "server-cpu"); break;
		case 'P': server_pid = (int)parse_num(optarg, "server-pid"); break;
		case 'S': spin = true; break;
		default: usage(argv[0]);
		}
	}
	if (optind != argc || port <= 0 || port > 65535 || nconns < 1 || size < 1 ||
	    size >= PATTERN_PERIOD || depth < 1 || duration <= 0 || duration > 3600)
		usage(argv[0]);

	/* Only IPv4/IPv6 literals: this tool never resolves names, so it can
	 * only ever talk to the address it was explicitly given. */
	struct sockaddr_storage ss;
	socklen_t sslen;
	memset(&ss, 0, sizeof ss);
	struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)port);
		sslen = sizeof *s4;
	} else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		sslen = sizeof *s6;
	} else {
		fatal(2, "--host must be an IP address literal, got %s", host);
	}

	signal(SIGPIPE, SIG_IGN);

	/* Pattern: xorshift bytes, with CHUNK_MAX bytes of wrap-around so any
	 * stream window up to CHUNK_MAX is contiguous in memory. */
	pattern = malloc(PATTERN_PERIOD + CHUNK_MAX);
	if (!pattern)
		fatal(2, "%s", "out of memory");
	uint64_t x = 0x9e3779b97f4a7c15ull;
	for (uint32_t i = 0; i < PATTERN_PERIOD; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		pattern[i] = (uint8_t)(x >> 32);
	}
	/* forward byte copy: stays periodic even if CHUNK_MAX > PATTERN_PERIOD */
	for (uint32_t i = 0; i < CHUNK_MAX; i++)
		pattern[PATTERN_PERIOD + i] = pattern[i];

	ep = epoll_create1(EPOLL_CLOEXEC);
	conns = calloc((size_t)nconns, sizeof *conns);
	if (ep < 0 || !conns)
		fatal(2, "%s", "setup failed");

	for (int i = 0; i < nconns; i++) {
		struct conn *c = &conns[i];
		c->fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (c->fd < 0)
			fatal(2, "socket: %s", strerror(errno));
		int one = 1;
		setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		/* Blocking connect bounded by a send timeout, then non-blocking. */
		struct timeval tv = { .tv_sec = 5 };
		setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
		if (connect(c->fd, (struct sockaddr *)&ss, sslen) < 0)
			fatal(2, "connect: %s", strerror(errno));
		fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
		c->seed = (uint32_t)(((uint64_t)i * 7919u + 104729u) % PATTERN_PERIOD);
		c->issue_ns = calloc(depth, sizeof *c->issue_ns);
		if (!c->issue_ns)
			fatal(2, "%s", "out of memory");
		struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
		epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
	}

	uint64_t t0 = now_ns();
	uint64_t t_measure = t0 + (uint64_t)(warmup * 1e9);
	uint64_t t_end = t_measure + (uint64_t)(duration * 1e9);
	for (int i = 0; i < nconns; i++) {
		struct conn *c = &conns[i];
		for (uint32_t k = 0; k < depth; k++)
			c->issue_ns[k] = t0;
		c->issued = (uint64_t)depth * size;
		conn_flush(c);
	}

	double cpu_busy0 = 0, cpu_total0 = 0, cpu_busy1 = 0, cpu_total1 = 0;
	double self0 = 0, self1 = 0, proc0 = 0, proc1 = 0;
	uint64_t m_start = 0, m_end = 0, wait_ns = 0;
	struct epoll_event evs[MAX_EVENTS];
	for (;;) {
		uint64_t now = now_ns();
		if (!measuring && now >= t_measure) {
			measuring = true;
			m_start = now;
			self0 = self_cpu_us();
			if (server_pid > 0)
				proc0 = proc_cpu_us(server_pid);
			if (server_cpu >= 0)
				cpu_busy_us(server_cpu, &cpu_busy0, &cpu_total0);
		}
		if (now >= t_end) {
			m_end = now;
			self1 = self_cpu_us();
			if (server_pid > 0)
				proc1 = proc_cpu_us(server_pid);
			if (server_cpu >= 0)
				cpu_busy_us(server_cpu, &cpu_busy1, &cpu_total1);
			break;
		}
		bool alive = false;
		for (int i = 0; i < nconns && !alive; i++)
			alive = !conns[i].dead;
		if (!alive)
			break;
		uint64_t next = measuring ? t_end : t_measure;
		int timeout_ms = spin ? 0 : (int)((next - now + 999999) / 1000000);
		int n = epoll_wait(ep, evs, MAX_EVENTS, timeout_ms);
		if (measuring)
			wait_ns += now_ns() - now;
		for (int i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;
			if (c->dead)
				continue;
			if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
				conn_read(c);
			if (!c->dead && (evs[i].events & EPOLLOUT))
				conn_flush(c);
		}
	}
	if (!m_end) { /* every connection died */
		m_end = now_ns();
		self1 = self_cpu_us();
		if (server_pid > 0)
			proc1 = proc_cpu_us(server_pid);
		if (server_cpu >= 0)
			cpu_busy_us(server_cpu, &cpu_busy1, &cpu_total1);
		if (!measuring) { /* ...even before the window opened */
			m_start = m_end;
			self0 = self1;
			proc0 = proc1;
			cpu_busy0 = cpu_busy1;
			cpu_total0 = cpu_total1;
		}
	}

	double secs = (double)(m_end - m_start) / 1e9;
	if (secs <= 0)
		secs = 1e-9;
	unsigned max = 0;
	for (unsigned b = 0; b < NBUCKETS; b++)
		if (hist[b])
			max = b;
	printf("{\"requests\":%llu,\"total_requests\":%llu,\"seconds\":%.6f,\"req_per_s\":%.1f,\"mb_per_s\":%.3f,"
	       "\"p50_us\":%.2f,\"p90_us\":%.2f,\"p99_us\":%.2f,\"p999_us\":%.2f,\"max_us\":%.2f,"
	       "\"errors\":%llu,\"conns\":%d,\"size\":%u,\"depth\":%u,"
	       "\"loadgen_cpu_util\":%.4f,\"loadgen_busy\":%.4f,\"spin\":%s",
	       (unsigned long long)m_requests, (unsigned long long)all_requests, secs, (double)m_requests / secs,
	       (double)m_requests * size / secs / 1e6, percentile_us(0.50),
	       percentile_us(0.90), percentile_us(0.99), percentile_us(0.999),
	       m_requests ? bucket_mid(max) / 1000.0 : 0.0,
	       (unsigned long long)total_errors, nconns, size, depth,
	       (self1 - self0) / 1e6 / secs, 1.0 - (double)wait_ns / 1e9 / secs,
	       spin ? "true" : "false");
	if (server_cpu >= 0)
		printf(",\"server_cpu\":%d,\"server_cpu_busy_us\":%.0f,\"server_cpu_util\":%.4f",
		       server_cpu, cpu_busy1 - cpu_busy0,
		       cpu_total1 > cpu_total0 ?
			       (cpu_busy1 - cpu_busy0) / (cpu_total1 - cpu_total0) : 0.0);
	if (server_pid > 0 && proc0 >= 0 && proc1 >= 0)
		printf(",\"server_proc_cpu_us\":%.0f", proc1 - proc0);
	printf("}\n");
	fflush(stdout);
	return total_errors ? 1 : 0;
}
