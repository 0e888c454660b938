// SPDX-License-Identifier: MIT
/*
 * The physical floor a context switch is measured against, in this run, on
 * this machine: a bare fork + _exit + waitpid, and a 1-byte round trip to a
 * pre-forked process over a pipe pair.  Pinned to one CPU, as a ctxvm
 * session is (only one of its contexts runs at a time).
 * Prints "fork_exit_wait_us <median>" and "pipe_roundtrip_us <median>".
 */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define N 2000

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp);
	return v[n / 2];
}

int main(void)
{
	static double t[N];
	cpu_set_t one;
	int ab[2], ba[2];
	char c = 0;
	pid_t pid;

	CPU_ZERO(&one);
	CPU_SET(0, &one);
	sched_setaffinity(0, sizeof(one), &one);
	for (int i = 0; i < N; i++) {
		double t0 = now_us();

		pid = fork();
		if (pid == 0)
			_exit(0);
		waitpid(pid, NULL, 0);
		t[i] = now_us() - t0;
	}
	printf("fork_exit_wait_us %.1f\n", median(t, N));

	if (pipe(ab) || pipe(ba))
		return 1;
	pid = fork();
	if (pid == 0) {
		close(ab[1]);
		close(ba[0]);
		while (read(ab[0], &c, 1) == 1)
			if (write(ba[1], &c, 1) != 1)
				break;
		_exit(0);
	}
	close(ab[0]);
	close(ba[1]);
	for (int i = 0; i < N; i++) {
		double t0 = now_us();

		if (write(ab[1], &c, 1) != 1 || read(ba[0], &c, 1) != 1)
			return 1;
		t[i] = now_us() - t0;
	}
	close(ab[1]);
	waitpid(pid, NULL, 0);
	printf("pipe_roundtrip_us %.1f\n", median(t, N));
	return 0;
}
