// SPDX-License-Identifier: GPL-2.0
/*
 * Random ioctl sequences against /dev/ctxvm from several processes at once.
 *
 *   kmod_fuzz [--seed N] [--seconds S] [--procs P]      (1, 60, 4)
 *
 * Each worker plays runs ("episodes") over and over: a runner process makes
 * a session, serves its events and forks a process per SPAWN; every context
 * process follows a random script of well-formed and malformed calls,
 * returns, failures, aborts, waits and raw ioctls with random numbers, sizes
 * and contents; processes are SIGKILLed and fds closed at random points,
 * sometimes the runner itself.  Every ioctl must answer 0 (or its value) or
 * -1 with an errno the ABI documents; a blocking one is cut short by a timer
 * (EINTR), and a process that does not end in time is a hang.  At the end
 * the module's live sessions and allocations must be back to zero.
 *
 * Deterministic per seed and worker; what the kernel's scheduling does with
 * it is not.  Output is TAP; exit status 0 when every line is ok.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "broker.h"
#include "ctxvm_uapi.h"

#define DEV "/dev/ctxvm"
#define MAX_KIDS 24
#define VIOLATION_EXIT 3
#define BAD_PTR ((void *)8)

/* What every process adds to, in memory shared by all of them. */
struct tally {
	long ops;
	long episodes;
	long by_errno[160];     /* [0]: success */
	long violations;
	long crashes;           /* a context died of a signal we did not send */
	long kills;
	long events[8];         /* by enum ctxvm_event_type: how deep the runs went */
};

static struct tally *tally;
static uint64_t rng;

static uint64_t next(void)
{
	/* xorshift64*: small, deterministic, good enough to pick operations */
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return rng * 0x2545F4914F6CDD1DULL;
}

static unsigned int pick(unsigned int n)
{
	return (unsigned int)(next() % n);
}

static void on_alarm(int sig)
{
	(void)sig;
}

/* A blocking ioctl is cut short after `ms` (EINTR), never restarted. */
static void arm(int ms)
{
	struct itimerval it = { .it_value = { .tv_sec = 0, .tv_usec = ms * 1000 } };

	setitimer(ITIMER_REAL, &it, NULL);
}

static void disarm(void)
{
	struct itimerval it = { 0 };

	setitimer(ITIMER_REAL, &it, NULL);
}

/* The errnos an ioctl of this ABI may answer. */
static int expected_errno(int e, const void *arg)
{
	switch (e) {
	case EINVAL: case ENOTTY: case EPERM: case EBUSY: case ENOENT:
	case ESHUTDOWN: case EAGAIN: case EPROTO: case ERANGE: case EDEADLK:
	case ELOOP: case EMFILE: case ENOSPC: case EINTR: case EBADF:
		return 1;
	case EFAULT:
		return (unsigned long)arg < 4096;      /* we passed no buffer */
	default:
		return 0;
	}
}

/* ioctl, counted and checked; returns what ioctl returned, errno kept. */
static long op(int fd, unsigned long cmd, void *arg, int block_ms)
{
	long r;
	int e;

	if (block_ms)
		arm(block_ms);
	r = ioctl(fd, cmd, arg);
	e = errno;
	if (block_ms)
		disarm();
	__atomic_add_fetch(&tally->ops, 1, __ATOMIC_RELAXED);
	if (r >= 0) {
		__atomic_add_fetch(&tally->by_errno[0], 1, __ATOMIC_RELAXED);
		errno = 0;
		return r;
	}
	if (e > 0 && e < 160)
		__atomic_add_fetch(&tally->by_errno[e], 1, __ATOMIC_RELAXED);
	if (r != -1 || !expected_errno(e, arg)) {
		fprintf(stderr, "# pid %d: ioctl(%d, %#lx, %p) = %ld, errno %d (%s)\n",
			getpid(), fd, cmd, arg, r, e, strerror(e));
		__atomic_add_fetch(&tally->violations, 1, __ATOMIC_RELAXED);
	}
	errno = e;
	return r;
}

static void fill_random(void *p, size_t n)
{
	uint64_t *w = p;

	for (size_t i = 0; i < n / 8; i++)
		w[i] = next();
}

/* Small sets, so random digests and endpoints often mean something. */
static void some_digest(__u64 d[4])
{
	d[0] = 0x100 + pick(6);
	d[1] = d[2] = d[3] = pick(8) ? 0 : next();
}

/* Any command number of ours or near it, any size and direction. */
static unsigned long random_cmd(void)
{
	static const unsigned long known[] = {
		CTXVM_GET_API_VERSION, CTXVM_CREATE_SESSION, CTXVM_CHECK_EXTENSION,
		CTXVM_ADD_KERNEL_PROC, CTXVM_START, CTXVM_CONTEXT_FD, CTXVM_EVENT,
		CTXVM_SESSION_INFO, CTXVM_CTX_BIND, CTXVM_CTX_WAIT, CTXVM_CTX_CALL,
		CTXVM_CTX_RETURN, CTXVM_CTX_FAIL, CTXVM_CTX_CALLER, CTXVM_CTX_FINISH,
		CTXVM_CTX_ABORT,
	};
	static const unsigned int sizes[] = {
		0, 8, sizeof(struct ctxvm_msg), sizeof(struct ctxvm_event),
		sizeof(struct ctxvm_start), sizeof(struct ctxvm_kernel_proc),
		sizeof(struct ctxvm_msg) - 8, sizeof(struct ctxvm_msg) + 8,
	};

	if (pick(3))
		return known[pick(sizeof(known) / sizeof(known[0]))];
	return _IOC(pick(4), pick(8) ? CTXVM_IO : pick(256), pick(0x30),
		    sizes[pick(sizeof(sizes) / sizeof(sizes[0]))]);
}

/* A raw ioctl with a random command and random contents. */
static void garbage(int fd)
{
	static __u64 buf[1024];
	unsigned long cmd = random_cmd();
	void *arg;
	long r;

	fill_random(buf, sizeof(buf));
	switch (pick(8)) {
	case 0:
		arg = NULL;
		break;
	case 1:
		arg = BAD_PTR;
		break;
	case 2:
		arg = (void *)(unsigned long)pick(4);   /* an integer argument */
		break;
	default:
		/* a valid message type with junk elsewhere is more interesting */
		buf[0] = pick(2) ? 1 + pick(CTXVM_MSG_TYPE_MAX) : buf[0];
		arg = buf;
	}
	r = op(fd, cmd, arg, 30);
	/* CREATE_SESSION and CONTEXT_FD answer new fds */
	if (r > 2 && (cmd == CTXVM_CREATE_SESSION || cmd == CTXVM_CONTEXT_FD))
		close((int)r);
}

/* ---- a context process ---- */

static void ctx_msg(struct ctxvm_msg *m, __u64 type)
{
	memset(m, 0, sizeof(*m));
	m->type = type;
	if (!pick(16))
		m->reserved[pick(4)] = 1 + pick(3);
}

/*
 * The script of one context process: `steps` random operations on its
 * context fd `fd` (and, sometimes, on inherited fds it must not own).
 */
static void context_script(int fd, int sess, const int *others, int nothers)
{
	int steps = 1 + pick(24);
	struct ctxvm_msg m;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (pick(10))
		op(fd, CTXVM_CTX_BIND, NULL, 0);
	for (int i = 0; i < steps; i++) {
		switch (pick(14)) {
		case 0: case 1: case 2:
			ctx_msg(&m, CTXVM_MSG_CALL);
			m.kind = pick(9) ? 1 + pick(5) : pick(8);
			some_digest(m.digest);
			m.gas = pick(4) ? pick(100000) : next();
			m.gas_arg = pick(100000);
			m.fmp = pick(4) ? CTXVM_FMP_INIT + pick(64) : next();
			m.budget = pick(64);
			op(fd, CTXVM_CTX_CALL, &m, 200);
			break;
		case 3: case 4:
			ctx_msg(&m, CTXVM_MSG_RETURN);
			m.gas = pick(4) ? pick(1000) : next();
			op(fd, CTXVM_CTX_RETURN, &m, 200);
			break;
		case 5:
			ctx_msg(&m, CTXVM_MSG_FAIL);
			m.kind = pick(20);
			m.gas = pick(1000);
			strcpy((char *)m.text, "fuzz");
			op(fd, CTXVM_CTX_FAIL, &m, 200);
			break;
		case 6:
			ctx_msg(&m, CTXVM_MSG_FINISH);
			m.gas = pick(1000);
			op(fd, CTXVM_CTX_FINISH, &m, 0);
			break;
		case 7:
			ctx_msg(&m, CTXVM_MSG_CALLER);
			op(fd, CTXVM_CTX_CALLER, &m, 0);
			break;
		case 8: case 9:
			op(fd, CTXVM_CTX_WAIT, &m, 1 + pick(100));
			break;
		case 10:
			if (!pick(4)) {
				ctx_msg(&m, CTXVM_MSG_FAIL);
				m.gas_arg = pick(400);
				op(fd, CTXVM_CTX_ABORT, &m, 0);
			}
			break;
		case 11:
			/* someone else's fd, or the session's */
			if (nothers && pick(2))
				garbage(others[pick(nothers)]);
			else if (sess >= 0)
				garbage(sess);
			break;
		case 12:
			garbage(fd);
			break;
		default:
			if (!pick(8))
				_exit(0);               /* leave holding whatever we hold */
			if (!pick(8))
				close(fd);              /* then every op says EBADF */
			usleep(pick(2000));
		}
	}
	_exit(0);
}

/* ---- the runner of one episode ---- */

struct episode {
	int sess;
	pid_t kids[MAX_KIDS];
	int nkids;
	int ctxfds[MAX_KIDS];   /* kept open a while: later children inherit them */
	int nctxfds;
};

static void spawn_context(struct episode *ep, __u64 endpoint)
{
	struct ctxvm_context_fd cf = { .endpoint = endpoint };
	int fd;
	pid_t pid;

	if (!pick(8))
		cf.reserved[pick(2)] = 1;
	if (!pick(16))
		cf.endpoint = pick(40);
	fd = (int)op(ep->sess, CTXVM_CONTEXT_FD, &cf, 0);
	if (fd < 0 || ep->nkids == MAX_KIDS) {
		if (fd >= 0)
			close(fd);
		return;
	}
	pid = fork();
	if (pid == 0) {
		rng ^= (uint64_t)(ep->nkids + 1) << 17;
		context_script(fd, pick(3) ? -1 : ep->sess, ep->ctxfds, ep->nctxfds);
	}
	if (pid > 0)
		ep->kids[ep->nkids++] = pid;
	if (ep->nctxfds < MAX_KIDS && pick(2))
		ep->ctxfds[ep->nctxfds++] = fd;
	else
		close(fd);
}

static void reap_kids(struct episode *ep)
{
	for (int i = 0; i < ep->nkids; i++) {
		int st;

		kill(ep->kids[i], SIGKILL);
		if (waitpid(ep->kids[i], &st, 0) != ep->kids[i])
			continue;
		if (WIFEXITED(st) && WEXITSTATUS(st) == VIOLATION_EXIT)
			__atomic_add_fetch(&tally->violations, 1, __ATOMIC_RELAXED);
		else if (WIFSIGNALED(st) && WTERMSIG(st) != SIGKILL)
			__atomic_add_fetch(&tally->crashes, 1, __ATOMIC_RELAXED);
	}
	ep->nkids = 0;
}

/* One run: session, kernel procs, start, events served for up to ~0.5 s. */
static void episode(int dev)
{
	struct ctxvm_kernel_proc kp;
	struct ctxvm_start st;
	struct episode ep = { .sess = -1 };
	int rounds = 20 + pick(100);

	ep.sess = (int)op(dev, CTXVM_CREATE_SESSION, NULL, 0);
	if (ep.sess < 0)
		return;
	for (int i = pick(4); i > 0; i--) {
		memset(&kp, 0, sizeof(kp));
		some_digest(kp.digest);
		if (!pick(10))
			kp.flags = 1;
		op(ep.sess, CTXVM_ADD_KERNEL_PROC, &kp, 0);
	}
	memset(&st, 0, sizeof(st));
	some_digest(st.digest);
	st.gas = pick(4) ? 1000000 : next();
	st.budget = 16;
	st.depth_limit = pick(3) ? 0 : pick(8);
	if (!pick(10))
		st.reserved[pick(3)] = 1;
	if (op(ep.sess, CTXVM_START, &st, 0) == 0)
		spawn_context(&ep, st.endpoint);
	if (!pick(4))
		fcntl(ep.sess, F_SETFL, O_NONBLOCK);
	while (rounds-- > 0) {
		struct pollfd p = { .fd = ep.sess, .events = POLLIN };
		struct ctxvm_event ev;

		if (!pick(50))
			break;                          /* walk away mid-run */
		if (!pick(30) && ep.nkids)
			kill(ep.kids[pick(ep.nkids)], SIGKILL);
		if (!pick(20))
			garbage(pick(2) ? ep.sess : dev);
		if (poll(&p, 1, 5) <= 0)
			continue;
		if (op(ep.sess, CTXVM_EVENT, &ev, 50) < 0) {
			if (errno == ESHUTDOWN)
				break;
			continue;
		}
		if (ev.type < 8)
			__atomic_add_fetch(&tally->events[ev.type], 1, __ATOMIC_RELAXED);
		if (ev.type == CTXVM_EVENT_SPAWN && pick(12))
			spawn_context(&ep, ev.endpoint);
		else if (ev.type == CTXVM_EVENT_FINISH)
			break;
	}
	if (pick(2)) {
		struct ctxvm_session_info info;

		op(ep.sess, CTXVM_SESSION_INFO, &info, 0);
	}
	/* close before or after the kill: both orders must unwind */
	if (pick(2)) {
		close(ep.sess);
		ep.sess = -1;
	}
	reap_kids(&ep);
	for (int i = 0; i < ep.nctxfds; i++)
		close(ep.ctxfds[i]);
	if (ep.sess >= 0)
		close(ep.sess);
}

static void worker(int index, uint64_t seed, double deadline)
{
	struct sigaction sa = { .sa_handler = on_alarm };      /* no SA_RESTART */

	sigaction(SIGALRM, &sa, NULL);
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	rng = seed * 0x9E3779B97F4A7C15ULL + (uint64_t)index * 0xBF58476D1CE4E5B9ULL + 1;
	for (;;) {
		struct timespec ts;
		pid_t runner;
		int st;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		if (ts.tv_sec + ts.tv_nsec / 1e9 >= deadline)
			break;
		next();
		/* each episode in its own runner process, which may be killed */
		runner = fork();
		if (runner == 0) {
			int dev = open(DEV, O_RDWR | O_CLOEXEC);

			prctl(PR_SET_PDEATHSIG, SIGKILL);
			if (dev < 0)
				_exit(VIOLATION_EXIT);
			episode(dev);
			if (pick(2))
				garbage(dev);
			close(dev);
			_exit(0);
		}
		if (runner < 0)
			_exit(VIOLATION_EXIT);
		if (!pick(10)) {
			usleep(pick(300000));
			kill(runner, SIGKILL);
			__atomic_add_fetch(&tally->kills, 1, __ATOMIC_RELAXED);
		}
		if (waitpid(runner, &st, 0) == runner) {
			if (WIFEXITED(st) && WEXITSTATUS(st) == VIOLATION_EXIT)
				__atomic_add_fetch(&tally->violations, 1, __ATOMIC_RELAXED);
			else if (WIFSIGNALED(st) && WTERMSIG(st) != SIGKILL)
				__atomic_add_fetch(&tally->crashes, 1, __ATOMIC_RELAXED);
		}
		__atomic_add_fetch(&tally->episodes, 1, __ATOMIC_RELAXED);
	}
	_exit(0);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Live sessions and allocations, after the last release has run. */
static int counters_back_to_zero(long *sessions, long *allocs)
{
	for (int tries = 0; tries < 50; tries++) {
		int dev = open(DEV, O_RDWR | O_CLOEXEC);

		if (dev < 0)
			return 0;
		*sessions = ioctl(dev, CTXVM_CHECK_EXTENSION, CTXVM_CAP_LIVE_SESSIONS);
		*allocs = ioctl(dev, CTXVM_CHECK_EXTENSION, CTXVM_CAP_LIVE_ALLOCS);
		close(dev);
		if (*sessions == 0 && *allocs == 0)
			return 1;
		usleep(100000);
	}
	return 0;
}

int main(int argc, char **argv)
{
	unsigned long seed = 1, seconds = 60, procs = 4;
	pid_t pids[64];
	int hung = 0, dev, test = 0, bad = 0;
	long sessions = -1, allocs = -1;
	double start, deadline;

	for (int i = 1; i + 1 < argc; i += 2) {
		unsigned long v = strtoul(argv[i + 1], NULL, 0);

		if (!strcmp(argv[i], "--seed"))
			seed = v;
		else if (!strcmp(argv[i], "--seconds"))
			seconds = v;
		else if (!strcmp(argv[i], "--procs"))
			procs = v < 1 ? 1 : v > 64 ? 64 : v;
		else
			break;
	}
	printf("TAP version 13\n");
	dev = open(DEV, O_RDWR | O_CLOEXEC);
	if (dev < 0) {
		printf("1..1\nok 1 # SKIP %s: %s\n", DEV, strerror(errno));
		return 4;
	}
	close(dev);
	printf("1..4\n# seed %lu, %lu s, %lu processes\n", seed, seconds, procs);
	fflush(stdout);
	tally = mmap(NULL, sizeof(*tally), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
		     -1, 0);
	if (tally == MAP_FAILED)
		return 1;
	start = now_s();
	deadline = start + (double)seconds;
	for (unsigned long i = 0; i < procs; i++) {
		pids[i] = fork();
		if (pids[i] == 0)
			worker((int)i, seed, deadline);
	}
	/* the watchdog: a worker still there 30 s past the deadline is hung */
	for (unsigned long i = 0; i < procs; i++) {
		int st;

		while (waitpid(pids[i], &st, WNOHANG) == 0) {
			if (now_s() > deadline + 30) {
				printf("# worker %lu (pid %d) did not finish: hung\n", i, pids[i]);
				kill(pids[i], SIGKILL);
				waitpid(pids[i], &st, 0);
				hung++;
				break;
			}
			usleep(100000);
		}
	}
	printf("%sok %d - %lu workers ended within the time limit\n", hung ? "not " : "",
	       ++test, procs);
	bad |= hung;
	printf("%sok %d - every ioctl answered 0 or an errno of the ABI (%ld ioctls, %ld runs, %ld runners killed)\n",
	       tally->violations ? "not " : "", ++test, tally->ops, tally->episodes, tally->kills);
	bad |= tally->violations != 0;
	printf("%sok %d - no process died of a signal it was not sent (%ld did)\n",
	       tally->crashes ? "not " : "", ++test, tally->crashes);
	bad |= tally->crashes != 0;
	if (counters_back_to_zero(&sessions, &allocs)) {
		printf("ok %d - live sessions and allocations back to zero\n", ++test);
	} else {
		printf("not ok %d - live sessions %ld, allocations %ld after the run\n", ++test,
		       sessions, allocs);
		bad = 1;
	}
	printf("# %.0f ioctls/s; answers:", tally->ops / (now_s() - start));
	for (int e = 0; e < 160; e++)
		if (tally->by_errno[e])
			printf(" %s=%ld", e ? strerrorname_np(e) : "ok", tally->by_errno[e]);
	printf("\n# events: spawn=%ld enter=%ld return=%ld fail=%ld died=%ld finish=%ld\n",
	       tally->events[CTXVM_EVENT_SPAWN], tally->events[CTXVM_EVENT_ENTER],
	       tally->events[CTXVM_EVENT_RETURN], tally->events[CTXVM_EVENT_FAIL],
	       tally->events[CTXVM_EVENT_DIED], tally->events[CTXVM_EVENT_FINISH]);
	return bad ? 1 : 0;
}
