/*
 * udp_loadgen: closed-loop UDP echo load (bench/udp_bench.py).
 *
 * --peers sockets, each connected to the server, keep one datagram of
 * --size bytes in flight: send, wait for the echo, check it, send the next.
 * One thread, epoll; it spins (epoll_wait with a zero timeout) unless
 * --no-spin, so the generator never adds a wake-up of its own to a round
 * trip.  A datagram not answered within 200 ms counts as lost and is sent
 * again (the kernel may drop datagrams under load; a benchmark must not
 * stall on one).
 *
 * --server-pid PID: the server's CPU time (the run time of all its threads,
 * /proc/PID/task/N/schedstat) is sampled at the start and end of the
 * measured window, so CPU per datagram comes from the same window.
 *
 * Prints one JSON line: total_requests (echoes in the window), rps, lost,
 * bad (wrong payload), server_cpu_s.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct peer {
	int fd;
	uint64_t seq;
	double sent_at;
};

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double server_cpu(int pid)
{
	if (pid <= 0)
		return 0.0;
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/task", pid);
	DIR *d = opendir(path);
	if (!d)
		return 0.0;
	double total = 0.0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char p2[320];
		snprintf(p2, sizeof p2, "/proc/%d/task/%s/schedstat", pid, e->d_name);
		FILE *f = fopen(p2, "r");
		if (!f)
			continue;
		unsigned long long ns = 0;
		if (fscanf(f, "%llu", &ns) == 1)
			total += (double)ns * 1e-9;
		fclose(f);
	}
	closedir(d);
	return total;
}

static char *payload_for(char *buf, size_t size, uint64_t seq, int id)
{
	memset(buf, 'a' + (int)(seq % 26), size);
	if (size >= 12) {
		memcpy(buf, &seq, 8);
		memcpy(buf + 8, &id, 4);
	}
	return buf;
}

int main(int argc, char **argv)
{
	const char *host = "127.0.0.1";
	int port = 0, peers = 50, server_pid = 0;
	size_t size = 64;
	double duration = 2.0, warmup = 0.5;
	bool spin = true;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--host") && v) host = v, i++;
		else if (!strcmp(a, "--port") && v) port = atoi(v), i++;
		else if (!strcmp(a, "--peers") && v) peers = atoi(v), i++;
		else if (!strcmp(a, "--size") && v) size = (size_t)atol(v), i++;
		else if (!strcmp(a, "--duration") && v) duration = atof(v), i++;
		else if (!strcmp(a, "--warmup") && v) warmup = atof(v), i++;
		else if (!strcmp(a, "--server-pid") && v) server_pid = atoi(v), i++;
		else if (!strcmp(a, "--no-spin")) spin = false;
		else {
			fprintf(stderr, "usage: udp_loadgen --port P [--host H] [--peers N] [--size B] "
					"[--duration S] [--warmup S] [--server-pid PID] [--no-spin]\n");
			return 2;
		}
	}
	if (!port || peers < 1 || size < 1 || size > 65507)
		return fprintf(stderr, "udp_loadgen: bad arguments\n"), 2;

	struct sockaddr_storage ss;
	socklen_t sl;
	memset(&ss, 0, sizeof ss);
	if (strchr(host, ':')) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
		a->sin6_family = AF_INET6;
		a->sin6_port = htons((uint16_t)port);
		inet_pton(AF_INET6, host, &a->sin6_addr);
		sl = sizeof *a;
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;
		a->sin_family = AF_INET;
		a->sin_port = htons((uint16_t)port);
		inet_pton(AF_INET, host, &a->sin_addr);
		sl = sizeof *a;
	}
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct peer *ps = calloc((size_t)peers, sizeof *ps);
	char *out = malloc(size), *in = malloc(65536);
	if (ep < 0 || !ps || !out || !in)
		return perror("setup"), 1;
	double t0 = now();
	for (int i = 0; i < peers; i++) {
		int fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0 || connect(fd, (struct sockaddr *)&ss, sl) < 0)
			return perror("socket/connect"), 1;
		ps[i].fd = fd;
		struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)i };
		epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
		send(fd, payload_for(out, size, 0, i), size, 0);
		ps[i].sent_at = t0;
	}
	double start = t0 + warmup, end = start + duration;
	bool measuring = false;
	uint64_t count = 0, lost = 0, bad = 0;
	double cpu0 = 0.0, cpu1 = 0.0, t_start = 0.0, t_end = 0.0;
	struct epoll_event evs[64];
	double last_check = t0;
	for (;;) {
		double t = now();
		if (!measuring && t >= start) {
			measuring = true;
			count = 0;
			lost = 0;
			cpu0 = server_cpu(server_pid);
			t_start = now();
		}
		if (t >= end) {
			cpu1 = server_cpu(server_pid);
			t_end = now();
			break;
		}
		if (t - last_check > 0.05) {
			last_check = t;
			for (int i = 0; i < peers; i++) {
				if (t - ps[i].sent_at > 0.2) {   /* lost: send it again */
					lost++;
					send(ps[i].fd, payload_for(out, size, ps[i].seq, i), size, 0);
					ps[i].sent_at = t;
				}
			}
		}
		int n = epoll_wait(ep, evs, 64, spin ? 0 : 50);
		for (int k = 0; k < n; k++) {
			struct peer *p = &ps[evs[k].data.u32];
			ssize_t r;
			while ((r = recv(p->fd, in, 65536, 0)) >= 0) {
				uint64_t seq = 0;
				if (size >= 12)
					memcpy(&seq, in, 8);
				if ((size_t)r != size || seq != p->seq) {
					bad++;
					continue;     /* a stale duplicate after a resend */
				}
				count++;
				p->seq++;
				send(p->fd, payload_for(out, size, p->seq, (int)evs[k].data.u32), size, 0);
				p->sent_at = t;
			}
		}
	}
	double secs = t_end - t_start;
	printf("{\"total_requests\": %llu, \"rps\": %.1f, \"lost\": %llu, \"bad\": %llu, "
	       "\"seconds\": %.3f, \"server_cpu_s\": %.6f}\n",
	       (unsigned long long)count, (double)count / secs, (unsigned long long)lost,
	       (unsigned long long)bad, secs, cpu1 - cpu0);
	return 0;
}
