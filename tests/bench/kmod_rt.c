// SPDX-License-Identifier: GPL-2.0
/*
 * make vm-bench, inside the test VM: side by side in one boot, as ratios
 * (absolute times under TCG mean nothing).
 *
 *   kmod_rt CTXVM CALL.masm EMPTY.masm
 *
 * 1. An empty call + return on --backend kmod vs --backend user: each run of
 *    CALL.masm (1000 calls) minus EMPTY.masm, best of 3.
 * 2. A /dev/ctxvm round trip vs a trivial syscall (getppid): the CALLER
 *    ioctl, and a syscall into context 0 (CALL, RETURN, WAIT).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../../shared/broker.h"
#include "../../shared/ctxvm_uapi.h"

extern char **environ;

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* Wall time of one `ctxvm run FILE --backend B`, or -1 if it failed. */
static double run_once(const char *ctxvm, const char *file, const char *backend)
{
	char *argv[] = { (char *)ctxvm, "run", (char *)file, "--backend", (char *)backend, NULL };
	posix_spawn_file_actions_t fa;
	double t0 = now_us();
	int st;
	pid_t pid;

	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
	if (posix_spawn(&pid, ctxvm, &fa, NULL, argv, environ)) {
		posix_spawn_file_actions_destroy(&fa);
		return -1;
	}
	posix_spawn_file_actions_destroy(&fa);
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st))
		return -1;
	return now_us() - t0;
}

static double best_of_3(const char *ctxvm, const char *file, const char *backend)
{
	double best = -1;

	for (int i = 0; i < 3; i++) {
		double t = run_once(ctxvm, file, backend);

		if (t < 0)
			return -1;
		if (best < 0 || t < best)
			best = t;
	}
	return best;
}

/* Microseconds per call + return: 1000 calls, start-up subtracted. */
static double per_call(const char *ctxvm, const char *call, const char *empty, const char *b)
{
	double full = best_of_3(ctxvm, call, b), base = best_of_3(ctxvm, empty, b);

	return full < 0 || base < 0 ? -1 : (full - base) / 1000;
}

static int ioctl_round_trips(void)
{
	struct ctxvm_start st = { .gas = 1ULL << 40, .budget = 16 };
	struct ctxvm_context_fd cf = { 0 };
	struct ctxvm_kernel_proc kp = { 0 };
	struct ctxvm_msg m;
	const int n = 20000;
	double t0, sys_ns, caller_ns, trip_ns;
	int dev, s, fd, i;

	dev = open("/dev/ctxvm", O_RDWR | O_CLOEXEC);
	if (dev < 0)
		return -1;
	s = ioctl(dev, CTXVM_CREATE_SESSION, 0);
	kp.digest[0] = 1;
	if (s < 0 || ioctl(s, CTXVM_ADD_KERNEL_PROC, &kp) || ioctl(s, CTXVM_START, &st))
		return -1;
	cf.endpoint = st.endpoint;
	fd = ioctl(s, CTXVM_CONTEXT_FD, &cf);
	if (fd < 0 || ioctl(fd, CTXVM_CTX_BIND, 0) || ioctl(fd, CTXVM_CTX_WAIT, &m))
		return -1;
	t0 = now_us();
	for (i = 0; i < n; i++)
		getppid();
	sys_ns = (now_us() - t0) * 1000 / n;
	t0 = now_us();
	for (i = 0; i < n; i++) {
		memset(&m, 0, sizeof(m));
		m.type = CTXVM_MSG_CALLER;
		if (ioctl(fd, CTXVM_CTX_CALLER, &m))
			return -1;
	}
	caller_ns = (now_us() - t0) * 1000 / n;
	t0 = now_us();
	for (i = 0; i < n; i++) {
		struct ctxvm_event ev;

		memset(&m, 0, sizeof(m));
		m.type = CTXVM_MSG_CALL;
		m.kind = CTXVM_FRAME_SYSCALL;
		m.digest[0] = 1;
		m.gas = 100;
		if (ioctl(fd, CTXVM_CTX_CALL, &m))
			return -1;
		memset(&m, 0, sizeof(m));
		m.type = CTXVM_MSG_RETURN;
		if (ioctl(fd, CTXVM_CTX_RETURN, &m) || ioctl(fd, CTXVM_CTX_WAIT, &m))
			return -1;
		/* the runner's side: the ENTER and RETURN events */
		if (ioctl(s, CTXVM_EVENT, &ev) || ioctl(s, CTXVM_EVENT, &ev))
			return -1;
	}
	trip_ns = (now_us() - t0) * 1000 / n;
	printf("CTXVM-BENCH: getppid %.0f ns; CALLER ioctl %.0f ns = %.1fx getppid\n",
	       sys_ns, caller_ns, caller_ns / sys_ns);
	printf("CTXVM-BENCH: syscall into context 0 (3 ioctls + 2 events read) %.0f ns = %.1fx getppid\n",
	       trip_ns, trip_ns / sys_ns);
	close(fd);
	close(s);
	close(dev);
	return 0;
}

int main(int argc, char **argv)
{
	double kmod, user;

	if (argc != 4) {
		fprintf(stderr, "usage: %s CTXVM CALL.masm EMPTY.masm\n", argv[0]);
		return 2;
	}
	kmod = per_call(argv[1], argv[2], argv[3], "kmod");
	user = per_call(argv[1], argv[2], argv[3], "user");
	if (kmod < 0 || user < 0) {
		printf("CTXVM-BENCH: a ctxvm run failed (kmod %.1f, user %.1f)\n", kmod, user);
		return 1;
	}
	printf("CTXVM-BENCH: empty call + return: kmod %.1f us, user %.1f us; kmod/user = %.2fx\n",
	       kmod, user, kmod / user);
	if (ioctl_round_trips()) {
		printf("CTXVM-BENCH: /dev/ctxvm round trips failed: %s\n", strerror(errno));
		return 1;
	}
	return 0;
}
