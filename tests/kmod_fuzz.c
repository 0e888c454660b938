// SPDX-License-Identifier: GPL-2.0
/*
 * kmod_fuzz: random ioctl sequences against /dev/ctxvm (ctxvm.ko).
 *
 *   kmod_fuzz [--seed N] [--seconds S] [--procs P] [--trace]
 *
 * P worker processes, each with its own PRNG (seed + index), loop until the
 * time is up.  A worker plays the runner of one to three sessions at a time:
 * it creates them (sometimes with bad arguments), adds kernel procs, starts
 * them, serves their events and forks a process per context from the SPAWN
 * events.  The context processes bind and then mostly follow the protocol
 * (call, return, fail, finish, caller, abort, wait) with a share of wrong
 * moves: calls with bad kinds or too much gas, returns from frames they do
 * not own, messages with a wrong type or reserved words set, unknown ioctl
 * numbers, known numbers with another size or direction, bad pointers.
 * Meanwhile the worker kills contexts with SIGKILL, interrupts them with
 * signals, leaves endpoints without a process, holds context fds itself,
 * passes fds to other processes through fork, stops reading events for a
 * while, closes sessions while contexts sleep in CALL and closes everything
 * in random order at the end.  A context process may also start a second
 * thread that returns, fails, aborts or closes the fd while the first one
 * sleeps in CALL or WAIT.  About 40% of the scenarios are calm (no kills, all
 * kernel procs, orderly contexts) so that runs also go deep and finish.
 * Every blocking call runs under an interval timer, so nothing in a worker
 * waits for ever.
 *
 * Every ioctl result is checked: 0 (or the documented positive value), or -1
 * with an errno from the documented set of that ioctl on that kind of fd;
 * EFAULT only when a bad pointer was passed on purpose.  Events, session
 * info and received messages are checked for shape.  A context process dying
 * of anything but SIGKILL, or exiting non-zero, counts as a failure.  The
 * parent is a watchdog: a worker still running seconds+30 s after the start
 * is reported with its last operation and killed.  At the end the module's
 * live-session and live-allocation counters must be back to zero.
 *
 * Output is TAP; exit status 0 iff every line is ok, 4 (kselftest skip)
 * when /dev/ctxvm cannot be opened.  --trace prints every operation to
 * stderr (worker, pid, sequence number) to replay a failure by seed.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../shared/broker.h"
#include "../shared/ctxvm_uapi.h"

#define DEV "/dev/ctxvm"
#define PARAMS "/sys/module/ctxvm/parameters/"

#define MAXPROCS 64
#define NERR 134                /* errno slots; the last one counts the rest */
#define NMSG 6                  /* failure messages kept per worker */
#define MSGLEN 640
#define NHIST 10               /* ioctls remembered per process, for reports */
#define MAXRUN 3                /* sessions a worker runs at once */
#define MAXCH 20                /* processes per session */
#define MAXHELD 6               /* context fds the worker holds per session */
#define MAXPEND 16              /* SPAWNed endpoints left without a process */
#define GAS 1000000ULL

/* ---- shared statistics (one page-aligned block for all processes) ---- */

struct wstat {
	long ops;               /* every operation: ioctl, poll, fork, kill, close */
	long ioctls;
	long forks, kills, sessions, started, finished, failed, events;
	long ev_type[8];        /* events by type: how far the runs went */
	long max_depth;
	long err[NERR + 1];     /* err[0]: successes */
	long viol;
	pid_t pid;
	int last_op;
	unsigned int last_cmd;
	long last_seq;
	int nmsg;
	char msg[NMSG][MSGLEN];
};

struct shared {
	struct wstat w[MAXPROCS];
	long orphans, orphan_bad;
	char orphan_msg[MSGLEN];
};

static struct shared *SH;
static struct wstat *W;
static int WID;
static bool TRACE;
static bool IS_RUNNER;          /* this process is the worker itself */
static _Thread_local long SEQ;  /* operations made by this thread */
static char ROLE[48] = "worker"; /* what this process is, for reports */
static _Thread_local struct { unsigned int cmd; long ret; } HIST[NHIST];
static _Thread_local int NH;
static int FD_GONE;             /* a second thread closed the context fd */
static int THREADS;             /* second threads started in this process */
static int P_ORIG[3] = { -1, -1, -1 };
static bool CALM;               /* this scenario: no kills, orderly contexts */
static const char *const P_NAME[3] = { "max_sessions", "max_contexts", "max_depth" };

#define ADD(field, n) __atomic_fetch_add(&W->field, (n), __ATOMIC_RELAXED)

/* ---- PRNG (splitmix64), one state per process ---- */

static _Thread_local uint64_t RS;

static uint64_t rnd(void)
{
	uint64_t z = (RS += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static uint64_t below(uint64_t n)
{
	return n ? rnd() % n : 0;
}

static bool chance(unsigned int pct)
{
	return below(100) < pct;
}

static int wpick(const int *w, int n)
{
	int i, sum = 0, x;

	for (i = 0; i < n; i++)
		sum += w[i];
	x = (int)below((uint64_t)sum);
	for (i = 0; i < n; i++) {
		if (x < w[i])
			return i;
		x -= w[i];
	}
	return n - 1;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void nap_us(uint64_t us)
{
	struct timespec ts = { (time_t)(us / 1000000), (long)(us % 1000000) * 1000 };

	nanosleep(&ts, NULL);   /* a signal may cut it short: fine */
}

/* ---- signals and timers ---- */

static void on_sig(int sig)
{
	(void)sig;
}

static void handlers(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_sig;         /* no SA_RESTART: blocking ioctls see EINTR */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGALRM, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);
}

/*
 * A blocking call made under arm() is interrupted after `ms` and then every
 * 10 ms, so a signal landing just before the call went to sleep cannot
 * leave it sleeping.
 */
static void arm(uint64_t ms)
{
	struct itimerval it;

	memset(&it, 0, sizeof(it));
	it.it_value.tv_sec = (time_t)(ms / 1000);
	it.it_value.tv_usec = (suseconds_t)((ms % 1000) * 1000 + 1);
	it.it_interval.tv_usec = 10000;
	setitimer(ITIMER_REAL, &it, NULL);
}

static void disarm(void)
{
	struct itimerval it;

	memset(&it, 0, sizeof(it));
	setitimer(ITIMER_REAL, &it, NULL);
}

/* ---- operations, trace and failures ---- */

enum op {
	OP_IDLE, OP_OPEN, OP_IOCTL, OP_CLOSE, OP_POLL, OP_EPOLL, OP_FORK, OP_KILL,
	OP_WAITPID, OP_SLEEP, OP_PARAM, OP_TEARDOWN, OP_DONE,
};

static const char *const OP_NAME[] = {
	"idle", "open", "ioctl", "close", "poll", "epoll_wait", "fork", "kill",
	"waitpid", "sleep", "param write", "teardown", "done",
};

static const char *cmd_name(unsigned int c)
{
	switch (c) {
	case CTXVM_GET_API_VERSION: return "GET_API_VERSION";
	case CTXVM_CREATE_SESSION: return "CREATE_SESSION";
	case CTXVM_CHECK_EXTENSION: return "CHECK_EXTENSION";
	case CTXVM_ADD_KERNEL_PROC: return "ADD_KERNEL_PROC";
	case CTXVM_START: return "START";
	case CTXVM_CONTEXT_FD: return "CONTEXT_FD";
	case CTXVM_EVENT: return "EVENT";
	case CTXVM_SESSION_INFO: return "SESSION_INFO";
	case CTXVM_CTX_BIND: return "CTX_BIND";
	case CTXVM_CTX_WAIT: return "CTX_WAIT";
	case CTXVM_CTX_CALL: return "CTX_CALL";
	case CTXVM_CTX_RETURN: return "CTX_RETURN";
	case CTXVM_CTX_FAIL: return "CTX_FAIL";
	case CTXVM_CTX_CALLER: return "CTX_CALLER";
	case CTXVM_CTX_FINISH: return "CTX_FINISH";
	case CTXVM_CTX_ABORT: return "CTX_ABORT";
	default: return "unknown";
	}
}

static const char *ename(int e)
{
	const char *n = e ? strerrorname_np(e) : "ok";

	return n ? n : "E?";
}

static void mark(int op, unsigned int cmd)
{
	SEQ++;
	__atomic_fetch_add(&W->ops, 1, __ATOMIC_RELAXED);
	if (IS_RUNNER) {
		W->last_op = op;
		W->last_cmd = cmd;
		W->last_seq = SEQ;
	}
}

static void trace(const char *fmt, ...)
{
	char buf[300];
	va_list ap;
	int n;

	if (!TRACE)
		return;
	n = snprintf(buf, sizeof(buf), "w%d p%d #%ld ", WID, (int)getpid(), SEQ);
	va_start(ap, fmt);
	n += vsnprintf(buf + n, sizeof(buf) - (size_t)n, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(buf) - 2)
		n = (int)sizeof(buf) - 2;
	buf[n++] = '\n';
	if (write(2, buf, (size_t)n) < 0)
		return;
}

static void viol(const char *fmt, ...)
{
	int i = __atomic_fetch_add(&W->nmsg, 1, __ATOMIC_RELAXED);
	char buf[MSGLEN];
	va_list ap;
	int n;

	__atomic_fetch_add(&W->viol, 1, __ATOMIC_RELAXED);
	n = snprintf(buf, sizeof(buf), "pid %d (%s) op #%ld: ", (int)getpid(), ROLE, SEQ);
	va_start(ap, fmt);
	n += vsnprintf(buf + n, sizeof(buf) - (size_t)n, fmt, ap);
	va_end(ap);
	if (n < (int)sizeof(buf))
		n += snprintf(buf + n, sizeof(buf) - (size_t)n, "; its last ioctls:");
	for (int k = NH > NHIST ? NH - NHIST : 0; k < NH && n < (int)sizeof(buf); k++)
		n += snprintf(buf + n, sizeof(buf) - (size_t)n, " %s=%s",
			      cmd_name(HIST[k % NHIST].cmd),
			      HIST[k % NHIST].ret >= 0 ? "0" : ename((int)-HIST[k % NHIST].ret));
	if (i < NMSG)
		memcpy(W->msg[i], buf, sizeof(buf));
	if (TRACE)
		trace("VIOLATION %s", buf);
}

/* ---- the ioctl wrapper and the documented results ---- */

enum fdkind { K_DEV, K_SESS, K_CTX };
static const char *const KIND_NAME[] = { "/dev/ctxvm", "session", "context" };

#define F_BADPTR 1              /* a bad pointer on purpose: EFAULT allowed */
#define F_UNMAPPED 2            /* nothing readable there: success impossible */
#define F_NB 4                  /* the session fd may be O_NONBLOCK: EAGAIN allowed */

static const int E_NONE[] = { 0 };
static const int E_API[] = { EINVAL, 0 };
static const int E_CREATE[] = { EINVAL, EMFILE, ENFILE, ENOMEM, 0 };
static const int E_ADDKP[] = { EINVAL, EBUSY, ENOSPC, 0 };
static const int E_START[] = { EINVAL, EBUSY, ENOMEM, 0 };
static const int E_CTXFD[] = { EINVAL, ENOENT, EBUSY, ESHUTDOWN, EMFILE, ENFILE, ENOMEM, 0 };
static const int E_EVENT[] = { EINTR, ESHUTDOWN, 0 };
static const int E_BIND[] = { EINVAL, EBUSY, 0 };
static const int E_WAIT[] = { EPERM, ESHUTDOWN, EINTR, 0 };
static const int E_CALL[] = { EPERM, EINVAL, EBUSY, EDEADLK, ENOENT, ELOOP, ERANGE, ESHUTDOWN,
			      EMFILE, ENOMEM, EINTR, 0 };
static const int E_RETURN[] = { EPERM, EINVAL, EBUSY, ERANGE, ESHUTDOWN, EPROTO, ENOMEM, 0 };
static const int E_FAIL[] = { EPERM, EINVAL, EBUSY, ESHUTDOWN, ENOMEM, 0 };
static const int E_CALLER[] = { EPERM, EINVAL, EBUSY, ESHUTDOWN, 0 };
static const int E_FINISH[] = { EPERM, EINVAL, EBUSY, ESHUTDOWN, ENOMEM, 0 };
static const int E_ABORT[] = { EPERM, EINVAL, 0 };
static const int E_UNKNOWN[] = { ENOTTY, 0 };

static bool in_set(int e, const int *set)
{
	for (; *set; set++)
		if (*set == e)
			return true;
	return false;
}

/* pos: 0 success is 0; 1 success is any value >= 0; 2 success is 1 */
static const int *documented(int kind, unsigned int c, int *pos, bool *known)
{
	*pos = 0;
	*known = true;
	switch (kind) {
	case K_DEV:
		if (c == CTXVM_GET_API_VERSION) {
			*pos = 2;
			return E_API;
		}
		if (c == CTXVM_CHECK_EXTENSION) {
			*pos = 1;
			return E_NONE;
		}
		if (c == CTXVM_CREATE_SESSION) {
			*pos = 1;
			return E_CREATE;
		}
		break;
	case K_SESS:
		switch (c) {
		case CTXVM_ADD_KERNEL_PROC: return E_ADDKP;
		case CTXVM_START: return E_START;
		case CTXVM_CONTEXT_FD:
			*pos = 1;
			return E_CTXFD;
		case CTXVM_EVENT: return E_EVENT;
		case CTXVM_SESSION_INFO: return E_NONE;
		}
		break;
	default:
		switch (c) {
		case CTXVM_CTX_BIND: return E_BIND;
		case CTXVM_CTX_WAIT: return E_WAIT;
		case CTXVM_CTX_CALL: return E_CALL;
		case CTXVM_CTX_RETURN: return E_RETURN;
		case CTXVM_CTX_FAIL: return E_FAIL;
		case CTXVM_CTX_CALLER: return E_CALLER;
		case CTXVM_CTX_FINISH: return E_FINISH;
		case CTXVM_CTX_ABORT: return E_ABORT;
		}
		break;
	}
	*known = false;
	return E_UNKNOWN;
}

static void judge(int kind, unsigned int c, unsigned long arg, long r, int e, int flags)
{
	const char *k = KIND_NAME[kind];
	bool known;
	int pos;
	const int *set = documented(kind, c, &pos, &known);

	if (r == -1) {
		if (e == EFAULT && (flags & F_BADPTR))
			return;
		if (e == EBADF && kind == K_CTX && __atomic_load_n(&FD_GONE, __ATOMIC_ACQUIRE))
			return;
		if (e == EAGAIN && (flags & F_NB) && kind == K_SESS && c == CTXVM_EVENT)
			return;
		if (!in_set(e, set))
			viol("%s (0x%x) on %s fd: errno %s not documented", cmd_name(c), c, k,
			     ename(e));
		return;
	}
	if (r < -1) {
		viol("%s (0x%x) on %s fd returned %ld", cmd_name(c), c, k, r);
		return;
	}
	if ((pos == 0 && r != 0) || (pos == 2 && r != 1))
		viol("%s (0x%x) on %s fd returned %ld", cmd_name(c), c, k, r);
	if ((flags & F_UNMAPPED) && known && _IOC_SIZE(c))
		viol("%s on %s fd succeeded with an unmapped buffer", cmd_name(c), k);
	if (arg && (c == CTXVM_GET_API_VERSION || c == CTXVM_CREATE_SESSION) && kind == K_DEV)
		viol("%s with arg 0x%lx succeeded", cmd_name(c), arg);
	if (arg && c == CTXVM_CTX_BIND && kind == K_CTX)
		viol("CTX_BIND with arg 0x%lx succeeded", arg);
}

static long xio(int kind, int fd, unsigned long cmd, unsigned long arg, int flags)
{
	unsigned int c = (unsigned int)cmd;     /* the kernel takes 32 bits */
	long r;
	int e;

	mark(OP_IOCTL, c);
	r = ioctl(fd, cmd, arg);
	e = r < 0 ? errno : 0;
	__atomic_fetch_add(&W->ioctls, 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&W->err[e < NERR ? e : NERR], 1, __ATOMIC_RELAXED);
	trace("ioctl %s fd %d %s (0x%lx) arg 0x%lx flags %d -> %ld %s", KIND_NAME[kind], fd,
	      cmd_name(c), cmd, arg, flags, r, ename(e));
	HIST[NH % NHIST].cmd = c;
	HIST[NH % NHIST].ret = r < 0 ? -e : r;
	NH++;
	judge(kind, c, arg, r, e, flags);
	return r < 0 ? -e : r;
}

static long xiop(int kind, int fd, unsigned long cmd, void *p, int flags)
{
	return xio(kind, fd, cmd, (unsigned long)p, flags);
}

static void xclose(int fd)
{
	mark(OP_CLOSE, 0);
	trace("close %d", fd);
	close(fd);
}

/* ---- random commands, buffers and bad pointers ---- */

static const unsigned long VALID[] = {
	CTXVM_GET_API_VERSION, CTXVM_CREATE_SESSION, CTXVM_CHECK_EXTENSION,
	CTXVM_ADD_KERNEL_PROC, CTXVM_START, CTXVM_CONTEXT_FD, CTXVM_EVENT,
	CTXVM_SESSION_INFO, CTXVM_CTX_BIND, CTXVM_CTX_WAIT, CTXVM_CTX_CALL,
	CTXVM_CTX_RETURN, CTXVM_CTX_FAIL, CTXVM_CTX_CALLER, CTXVM_CTX_FINISH,
	CTXVM_CTX_ABORT,
};
#define NVALID (sizeof(VALID) / sizeof(VALID[0]))

static const unsigned long CTX_CMDS[] = {
	CTXVM_CTX_WAIT, CTXVM_CTX_CALL, CTXVM_CTX_RETURN, CTXVM_CTX_FAIL,
	CTXVM_CTX_CALLER, CTXVM_CTX_FINISH, CTXVM_CTX_ABORT,
};
static const uint64_t CTX_TYPES[] = {
	0, CTXVM_MSG_CALL, CTXVM_MSG_RETURN, CTXVM_MSG_FAIL, CTXVM_MSG_CALLER,
	CTXVM_MSG_FINISH, CTXVM_MSG_FAIL,
};

/* Only type CTXVM_IO and two neighbours: nothing the VFS handles itself. */
static unsigned long random_cmd(void)
{
	unsigned long c = VALID[below(NVALID)];
	unsigned int dir = (unsigned int)below(4), size;

	switch (below(5)) {
	case 0:
		break;                          /* a valid number, maybe on the wrong fd */
	case 1:                                 /* the same number, another size */
		size = _IOC_SIZE(c);
		size = chance(50) ? (size + 8 * (1 + (unsigned int)below(4))) & 0x3fff
				  : (unsigned int)below(0x4000);
		if (size == _IOC_SIZE(c))
			size = (size + 8) & 0x3fff;
		c = _IOC(_IOC_DIR(c), CTXVM_IO, _IOC_NR(c), size);
		break;
	case 2:                                 /* another direction */
		if (dir == _IOC_DIR(c))
			dir = (dir + 1) & 3;
		c = _IOC(dir, CTXVM_IO, _IOC_NR(c), _IOC_SIZE(c));
		break;
	case 3:
		c = _IOC(dir, CTXVM_IO, (unsigned int)below(256), (unsigned int)below(0x4000));
		break;
	default:
		c = _IOC(dir, CTXVM_IO + (chance(50) ? 1 : -1), (unsigned int)below(256),
			 (unsigned int)below(0x400));
		break;
	}
	if (chance(10))
		c |= (unsigned long)rnd() << 32;        /* high bits: cut by the kernel */
	return c;
}

static uint64_t JB[2048];               /* 16 KiB: the largest _IOC_SIZE */

static void *junk_buffer(unsigned long cmd)
{
	size_t i;

	switch (below(3)) {
	case 0:
		for (i = 0; i < 64; i++)
			JB[i] = rnd();
		break;
	case 1:
		memset(JB, 0, 64 * sizeof(JB[0]));
		for (i = below(4); i; i--)
			JB[below(64)] = rnd() & 0xff;
		break;
	default:                /* a message of the right type, random words */
		for (i = 0; i < 64; i++)
			JB[i] = chance(70) ? 0 : rnd();
		JB[0] = 1 + below(CTXVM_MSG_TYPE_MAX);
		if (_IOC_NR(cmd) >= 0x21 && _IOC_NR(cmd) <= 0x27 && chance(50))
			JB[0] = CTX_TYPES[_IOC_NR(cmd) - 0x21];  /* that command's own type */
		break;
	}
	return JB;
}

static unsigned char *PG;       /* three pages: read-write, none, read-only */
static size_t PGSZ;

static void pages_init(void)
{
	PGSZ = (size_t)sysconf(_SC_PAGESIZE);
	PG = mmap(NULL, 3 * PGSZ, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (PG == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	mprotect(PG + PGSZ, PGSZ, PROT_NONE);
	mprotect(PG + 2 * PGSZ, PGSZ, PROT_READ);
}

/* A pointer the kernel cannot use whole; `content` is what readable bytes hold. */
static unsigned long bad_ptr(const void *content, size_t len, int *flags)
{
	unsigned char *p;

	switch (below(6)) {
	case 0:
		*flags |= F_BADPTR | F_UNMAPPED;
		return 0;
	case 1:
		*flags |= F_BADPTR | F_UNMAPPED;
		return 1 + below(4095);
	case 2:
		*flags |= F_BADPTR | F_UNMAPPED;
		return (unsigned long)(PG + PGSZ + below(PGSZ / 2));
	case 3:
		*flags |= F_BADPTR | F_UNMAPPED;
		return 0xffff888000000000UL + below(1 << 20) * 8;
	case 4:                 /* readable head, unmapped tail */
		*flags |= F_BADPTR;
		p = PG + PGSZ - 64;
		memcpy(p, content, len < 64 ? len : 64);
		return (unsigned long)p;
	default:                /* readable, not writable */
		*flags |= F_BADPTR;
		p = PG + 2 * PGSZ;
		mprotect(p, PGSZ, PROT_READ | PROT_WRITE);
		memcpy(p, content, len < PGSZ ? len : PGSZ);
		mprotect(p, PGSZ, PROT_READ);
		return (unsigned long)p;
	}
}

static void dig(__u64 d[4], uint64_t base)
{
	d[0] = base;
	d[1] = 1;
	d[2] = 2;
	d[3] = 3;
}

static void msg_init(struct ctxvm_msg *m, uint64_t type)
{
	memset(m, 0, sizeof(*m));
	m->type = type;
}

/* ---- module parameters ---- */

static int param_get(int i)
{
	char path[128], buf[32];
	int fd, n;

	snprintf(path, sizeof(path), PARAMS "%s", P_NAME[i]);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = (int)read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	return atoi(buf);
}

static int param_set(int i, int v)
{
	char path[128], buf[32];
	int fd, n, ok;

	snprintf(path, sizeof(path), PARAMS "%s", P_NAME[i]);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = snprintf(buf, sizeof(buf), "%d", v);
	ok = write(fd, buf, (size_t)n) == n;
	close(fd);
	return ok ? 0 : -1;
}

/* ---- a context process (or a context fd the worker itself holds) ---- */

struct cst {
	int fd;
	int extra, ekind;       /* another fd this process was given, and its kind */
	bool root, bound, top, over, runner, chaotic;
	int act;                /* activations it runs (root: its frame + syscall frames) */
	uint64_t gas;
	double deadline;
};

enum {
	A_WAIT, A_POLLWAIT, A_CALL, A_RETURN, A_FAIL, A_CALLER, A_FINISH, A_ABORT,
	A_BIND, A_JUNK, A_BADPTR, A_BADMSG, A_FORK, A_SLEEP, A_EXTRA, A_CLOSE, A_EXIT,
	A_THREAD, A_N,
};

static void check_msg(struct cst *c, const struct ctxvm_msg *m, const char *what)
{
	char how[96];

	snprintf(how, sizeof(how), "%s (act %d top %d over %d)", what, c->act, c->top, c->over);
	if (m->reserved[0] || m->reserved[1] || m->reserved[2] || m->reserved[3])
		viol("%s: message with reserved words set", how);
	switch (m->type) {
	case CTXVM_MSG_RUN:
		if (!c->root && c->act > 0)
			viol("%s: a second RUN for a non-root context", how);
		if (m->kind > CTXVM_FRAME_KIND_MAX || (m->kind == CTXVM_FRAME_ROOT && c->act > 0))
			viol("%s: RUN of kind %llu", how, (unsigned long long)m->kind);
		if (!c->root && m->kind == CTXVM_FRAME_SYSCALL)
			viol("%s: a syscall RUN for a non-root context", how);
		c->act++;
		c->top = true;
		c->gas = m->gas;
		break;
	case CTXVM_MSG_RESULT:
		if (m->status > CTXVM_RESULT_ABORT)
			viol("%s: RESULT status %llu", how, (unsigned long long)m->status);
		if (m->status == CTXVM_RESULT_ABORT) {
			if (!c->root)
				viol("%s: RESULT ABORT for a non-root context", how);
			c->act -= (int)(m->gas_arg < (uint64_t)c->act ? m->gas_arg : 0);
			if (c->act < 1)
				c->act = 1;
		}
		c->top = true;
		break;
	case CTXVM_MSG_GUARD_BEGIN:
	case CTXVM_MSG_GUARD_END:
		if (!c->root)
			viol("%s: guard message for a non-root context", how);
		break;
	default:
		viol("%s: message of type %llu", how, (unsigned long long)m->type);
	}
}

static void c_after_recv(struct cst *c, long r, const struct ctxvm_msg *m, const char *how)
{
	if (r == 0)
		check_msg(c, m, how);
	else if (r == -ESHUTDOWN)
		c->over = true;
}

static void c_wait(struct cst *c)
{
	struct ctxvm_msg m;
	long r;

	msg_init(&m, 0);
	arm(2 + below(200));
	r = xiop(K_CTX, c->fd, CTXVM_CTX_WAIT, &m, 0);
	disarm();
	c_after_recv(c, r, &m, "WAIT");
}

static void c_pollwait(struct cst *c)
{
	struct pollfd p = { .fd = c->fd, .events = POLLIN };
	struct ctxvm_msg m;
	long r;
	int n;

	mark(OP_POLL, 0);
	n = poll(&p, 1, (int)below(60));
	trace("poll ctx %d -> %d revents 0x%x", c->fd, n, n > 0 ? p.revents : 0);
	if (n <= 0)
		return;
	if ((p.revents & (POLLNVAL | POLLERR)) && !__atomic_load_n(&FD_GONE, __ATOMIC_ACQUIRE))
		viol("poll on a context fd: revents 0x%x", p.revents);
	if (!(p.revents & (POLLIN | POLLHUP)) || !c->bound)
		return;
	/* Ready: WAIT must not sleep now. */
	msg_init(&m, 0);
	arm(1000);
	r = xiop(K_CTX, c->fd, CTXVM_CTX_WAIT, &m, 0);
	disarm();
	if (r == -EINTR)
		viol("WAIT slept although poll said 0x%x", p.revents);
	c_after_recv(c, r, &m, "WAIT after poll");
}

static void c_call(struct cst *c)
{
	static const int kw[] = { 2, 30, 10, 30, 15, 10, 3 };  /* ROOT .. DYNDELEGATE, bad */
	struct ctxvm_msg m;
	uint64_t kind;
	long r;
	int i;

	msg_init(&m, CTXVM_MSG_CALL);
	kind = (uint64_t)wpick(kw, 7);
	if (kind == 6)
		kind = chance(50) ? 6 + below(100) : rnd();
	m.kind = kind;
	if (kind == CTXVM_FRAME_SYSCALL)
		dig(m.digest, chance(85) ? 0x500 + below(4) : 0x700);
	else
		dig(m.digest, 0x200 + below(8));
	m.gas = chance(92) ? below(c->gas + 1) : c->gas + 1 + below(1000);
	m.gas_arg = chance(50) ? rnd() : below(m.gas + 1);
	m.fmp = CTXVM_FMP_INIT + below(64) * 8;
	m.pc = below(1000);
	m.proc = below(16);
	m.budget = below(32);
	for (i = 0; i < CTXVM_WINDOW; i++)
		m.window[i] = chance(50) ? 0 : rnd();
	arm(5 + below(150));
	r = xiop(K_CTX, c->fd, CTXVM_CTX_CALL, &m, 0);
	disarm();
	if (r == 0) {
		c->top = false;
		check_msg(c, &m, "CALL");
	} else if (r == -EINTR) {
		c->top = false;         /* the call was made: the answer comes by WAIT */
	} else if (r == -ESHUTDOWN) {
		c->top = false;
		c->over = true;
	}
}

static void c_end(struct cst *c, bool fail, uint64_t gas)
{
	struct ctxvm_msg m;
	long r;
	int i;

	msg_init(&m, fail ? CTXVM_MSG_FAIL : CTXVM_MSG_RETURN);
	m.gas = gas;
	if (fail) {
		m.kind = 1 + below(8);
		m.pc = below(1000);
		snprintf((char *)m.text, sizeof(m.text), "fuzz failure %llu",
			 (unsigned long long)below(1000));
	}
	for (i = 0; i < CTXVM_WINDOW; i++)
		m.window[i] = chance(50) ? 0 : rnd();
	r = xiop(K_CTX, c->fd, fail ? CTXVM_CTX_FAIL : CTXVM_CTX_RETURN, &m, 0);
	if (r == 0) {
		c->top = false;
		/* (a root may fail before it read its RUN: act is still 0 then) */
		if (c->act > 0)
			c->act--;
		if (!c->root || c->act <= 0)
			c->over = true;
	} else if (r == -ESHUTDOWN) {
		c->over = true;
	}
}

static void c_finish(struct cst *c)
{
	struct ctxvm_msg m;

	msg_init(&m, CTXVM_MSG_FINISH);
	m.gas = below(c->gas + 1);
	if (xiop(K_CTX, c->fd, CTXVM_CTX_FINISH, &m, 0) == 0) {
		if (!c->root)
			viol("FINISH from a non-root context succeeded");
		c->top = false;
		c->over = true;
	}
}

static void c_caller(struct cst *c)
{
	struct ctxvm_msg m;

	msg_init(&m, CTXVM_MSG_CALLER);
	if (xiop(K_CTX, c->fd, CTXVM_CTX_CALLER, &m, 0) == 0 &&
	    m.type != CTXVM_MSG_CALLER_REPLY)
		viol("CALLER answered with type %llu", (unsigned long long)m.type);
}

static void c_abort(struct cst *c)
{
	struct ctxvm_msg m;

	msg_init(&m, CTXVM_MSG_FAIL);
	m.kind = below(10);
	m.gas_arg = below(400);
	strcpy((char *)m.text, "fuzz: about to die");
	if (xiop(K_CTX, c->fd, CTXVM_CTX_ABORT, &m, 0) == 0) {
		c->over = true;
		c->top = false;
		if (!c->runner && chance(80))
			_exit(0);
	}
}

static void c_bind(struct cst *c)
{
	unsigned long arg = chance(93) ? 0 : (unsigned long)(rnd() | 1);
	long r = xio(K_CTX, c->fd, CTXVM_CTX_BIND, arg, 0);

	if (r == 0) {
		if (c->bound)
			viol("a second BIND succeeded");
		c->bound = true;
	} else if (r == -EBUSY && !c->bound && !c->chaotic) {
		c->over = true;         /* another process has it */
	}
}

static void c_junk(struct cst *c)
{
	unsigned long cmd = random_cmd();
	long r;

	arm(5 + below(50));
	r = xiop(K_CTX, c->fd, cmd, junk_buffer(cmd), 0);
	disarm();
	if (r == 0 && (unsigned int)cmd != CTXVM_CTX_CALLER)
		c->top = false;         /* something happened: refind the state */
	if (r == -ESHUTDOWN)
		c->over = true;
}

static void c_plausible(struct ctxvm_msg *m, unsigned int i)
{
	msg_init(m, CTX_TYPES[i]);
	m->kind = 1 + below(5);
	m->gas = below(100);
	dig(m->digest, 0x200 + below(8));
}

static void c_badptr(struct cst *c)
{
	unsigned int i = (unsigned int)below(sizeof(CTX_CMDS) / sizeof(CTX_CMDS[0]));
	struct ctxvm_msg m;
	int flags = 0;
	unsigned long p;
	long r;

	c_plausible(&m, i);
	p = bad_ptr(&m, sizeof(m), &flags);
	arm(5 + below(50));
	r = xio(K_CTX, c->fd, CTX_CMDS[i], p, flags);
	disarm();
	if (r == 0 || r == -EFAULT)
		c->top = false;
	if (r == 0 && CTX_CMDS[i] == CTXVM_CTX_ABORT)
		c->over = true;
}

static void c_badmsg(struct cst *c)
{
	unsigned int i = 1 + (unsigned int)below(sizeof(CTX_CMDS) / sizeof(CTX_CMDS[0]) - 1);
	struct ctxvm_msg m;
	long r;

	c_plausible(&m, i);
	if (chance(50)) {
		m.reserved[below(4)] = rnd() | 1;
	} else {
		do
			m.type = chance(80) ? below(CTXVM_MSG_TYPE_MAX + 2) : rnd();
		while (m.type == CTX_TYPES[i]);
	}
	arm(50);
	r = xiop(K_CTX, c->fd, CTX_CMDS[i], &m, 0);
	disarm();
	if (r >= 0)
		viol("%s accepted a message with type %llu and a reserved word set",
		     cmd_name((unsigned int)CTX_CMDS[i]), (unsigned long long)m.type);
}

static void c_extra(struct cst *c)
{
	struct ctxvm_session_info info;
	struct ctxvm_context_fd cf;
	struct ctxvm_event ev;
	struct pollfd p;
	long r;

	if (c->extra < 0)
		return;
	if (c->ekind == K_DEV) {
		xio(K_DEV, c->extra, CTXVM_CHECK_EXTENSION, below(8), 0);
		return;
	}
	if (c->ekind == K_CTX) {
		struct cst o = *c;

		o.fd = c->extra;
		o.bound = false;
		o.chaotic = true;
		if (chance(50))
			c_caller(&o);
		else
			c_junk(&o);
		return;
	}
	switch (below(3)) {
	case 0:
		xiop(K_SESS, c->extra, CTXVM_SESSION_INFO, &info, 0);
		break;
	case 1:
		p.fd = c->extra;
		p.events = POLLIN;
		mark(OP_POLL, 0);
		if (poll(&p, 1, 0) == 1) {
			arm(20);
			xiop(K_SESS, c->extra, CTXVM_EVENT, &ev, F_NB);
			disarm();
		}
		break;
	default:
		memset(&cf, 0, sizeof(cf));
		cf.endpoint = 1 + below(8);
		r = xiop(K_SESS, c->extra, CTXVM_CONTEXT_FD, &cf, 0);
		if (r >= 0)
			xclose((int)r);         /* an endpoint's fd taken and dropped */
		break;
	}
}

static void grandchild(struct cst *c, uint64_t seed)
{
	int i, n = 1 + (int)below(6);

	RS = seed;
	IS_RUNNER = false;
	SEQ = 0;
	NH = 0;
	snprintf(ROLE, sizeof(ROLE), "grandchild of %d", (int)getppid());
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	c->runner = false;
	c->chaotic = true;
	c->bound = false;       /* bound or not, this process is not its owner */
	for (i = 0; i < n; i++) {
		switch (below(6)) {
		case 0:
			c_bind(c);
			break;
		case 1:
			c_wait(c);
			break;
		case 2:
			c_caller(c);
			break;
		case 3:
			c_end(c, chance(50), 0);
			break;
		case 4:
			c_junk(c);
			break;
		default:
			xclose(c->fd);
			_exit(0);
		}
	}
	_exit(0);
}

static void c_fork(struct cst *c)
{
	uint64_t seed = rnd();
	pid_t pid;

	if (c->runner)
		return;
	mark(OP_FORK, 0);
	pid = fork();
	if (pid == 0)
		grandchild(c, seed);
	if (pid > 0)
		__atomic_fetch_add(&W->forks, 1, __ATOMIC_RELAXED);
	trace("fork grandchild -> %d", (int)pid);
}

struct tjob {
	struct cst c;
	uint64_t seed;
};

/*
 * A second thread of the bound process: it answers, fails, asks or closes
 * on the same fd while the first thread may sleep in CALL or WAIT.
 */
static void *thread_main(void *arg)
{
	struct tjob *j = arg;
	struct cst *c = &j->c;
	sigset_t ss;
	int i, n;

	sigemptyset(&ss);
	sigaddset(&ss, SIGALRM);        /* the timers are the first thread's */
	sigaddset(&ss, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &ss, NULL);
	RS = j->seed;
	n = 1 + (int)below(5);
	for (i = 0; i < n; i++) {
		nap_us(below(3000));
		switch (below(7)) {
		case 0:
			c_caller(c);
			break;
		case 1:
			c_end(c, false, 0);
			break;
		case 2:
			c_end(c, true, 0);
			break;
		case 3:
			c_bind(c);
			break;
		case 4:
			c_badmsg(c);
			break;
		case 5:
			if (chance(30)) {
				c->runner = true;       /* announce, do not exit from here */
				c_abort(c);
			} else {
				c_caller(c);
			}
			break;
		default:
			__atomic_store_n(&FD_GONE, 1, __ATOMIC_RELEASE);
			xclose(c->fd);
			return NULL;
		}
	}
	return NULL;
}

static void c_thread(struct cst *c)
{
	static struct tjob job;         /* one second thread per process */
	pthread_t t;

	if (c->runner || THREADS++)
		return;
	job.c = *c;
	job.c.chaotic = true;
	job.seed = rnd();
	mark(OP_FORK, 1);
	if (pthread_create(&t, NULL, thread_main, &job) == 0)
		pthread_detach(t);
	trace("thread started");
}

static int c_pick(struct cst *c)
{
	static const int misc_w[] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 6, 4, 4, 2, 3, 3, 1, 1, 3 };
	static const int wait_w[] = { 70, 15, 2, 0, 0, 2, 0, 0, 0 };
	static const int root_w[] = { 2, 0, 40, 0, 4, 8, 0, 1, 0 };
	static const int ctx_w[] = { 2, 0, 26, 40, 12, 8, 1, 2, 0 };
	int w[9], a;

	if (c->chaotic && chance(40))
		a = (int)below(A_N);
	else if (!c->bound)
		a = chance(85) ? A_BIND : wpick(misc_w, A_N);
	else if (chance(CALM ? 2 : 10))
		a = wpick(misc_w, A_N);
	else if (!c->top)
		a = wpick(wait_w, 9);
	else if (c->root) {
		memcpy(w, root_w, sizeof(w));
		w[A_FINISH] = c->act <= 1 ? 14 : 2;
		w[A_RETURN] = c->act > 1 ? 25 : 2;
		a = wpick(w, 9);
	} else {
		a = wpick(ctx_w, 9);
	}
	if (c->runner && (a == A_CALL || a == A_RETURN || a == A_FAIL || a == A_FORK ||
			  a == A_EXIT || a == A_THREAD))
		a = A_CALLER;   /* the worker must not wait for room in its own queue */
	return a;
}

static void c_step(struct cst *c)
{
	switch (c_pick(c)) {
	case A_WAIT:
		c_wait(c);
		break;
	case A_POLLWAIT:
		c_pollwait(c);
		break;
	case A_CALL:
		c_call(c);
		break;
	case A_RETURN:
	case A_FAIL: {
		bool fail = chance(c->top ? 25 : 50);
		uint64_t gas = chance(92) ? below(c->gas + 1) : c->gas + 1 + below(100);

		c_end(c, fail, gas);
		break;
	}
	case A_CALLER:
		c_caller(c);
		break;
	case A_FINISH:
		c_finish(c);
		break;
	case A_ABORT:
		c_abort(c);
		break;
	case A_BIND:
		c_bind(c);
		break;
	case A_JUNK:
		c_junk(c);
		break;
	case A_BADPTR:
		c_badptr(c);
		break;
	case A_BADMSG:
		c_badmsg(c);
		break;
	case A_FORK:
		c_fork(c);
		break;
	case A_SLEEP:
		mark(OP_SLEEP, 0);
		nap_us(below(15000));
		break;
	case A_EXTRA:
		c_extra(c);
		break;
	case A_THREAD:
		c_thread(c);
		break;
	case A_CLOSE:
		if (!c->runner)         /* a second thread may still use it */
			__atomic_store_n(&FD_GONE, 1, __ATOMIC_RELEASE);
		xclose(c->fd);
		c->fd = -1;
		if (!c->runner) {
			if (chance(50))
				nap_us(below(20000));
			_exit(0);
		}
		break;
	default:                /* A_EXIT */
		if (!c->runner)
			_exit(0);
		break;
	}
}

/* A context process: some steps, then (mostly) a proper ending. */
static void ctx_run(struct cst *c)
{
	int i, steps = 4 + (int)below(c->root ? 80 : 40);

	for (i = 0; i < steps && now() < c->deadline; i++) {
		if (c->over && chance(c->chaotic ? 30 : 80))
			break;
		if (__atomic_load_n(&FD_GONE, __ATOMIC_ACQUIRE))
			break;
		c_step(c);
	}
	if (c->bound && chance(CALM ? 95 : 60)) {
		for (i = 0; i < 200 && !c->over && now() < c->deadline &&
			    !__atomic_load_n(&FD_GONE, __ATOMIC_ACQUIRE); i++) {
			if (!c->top)
				c_wait(c);
			else if (c->root && c->act <= 1)
				c_finish(c);
			else
				c_end(c, false, 0);
		}
	}
	_exit(0);
}

/* ---- the worker: sessions, events, processes ---- */

struct held {
	int fd;
	uint64_t ep;
	struct cst c;
};

struct run {
	int sess;               /* -1 once closed */
	bool nonblock, started, eof, finished;
	uint64_t root_ep;
	uint64_t pend[MAXPEND];
	int npend;
	struct held held[MAXHELD];
	int nheld;
	pid_t ch[MAXCH];
	int nch;
};

static struct run RUNS[MAXRUN];
static int NRUNS;
static int DEVFD = -1, EPFD = -1;
static uint64_t CAP_DEPTH = 1024;

static int tracked(int *out)
{
	int n = 0, i, k;

	if (DEVFD >= 0)
		out[n++] = DEVFD;
	if (EPFD >= 0)
		out[n++] = EPFD;
	for (i = 0; i < NRUNS; i++) {
		if (RUNS[i].sess >= 0)
			out[n++] = RUNS[i].sess;
		for (k = 0; k < RUNS[i].nheld; k++)
			out[n++] = RUNS[i].held[k].fd;
	}
	return n;
}

static int kind_of(int fd)
{
	int i, k;

	for (i = 0; i < NRUNS; i++) {
		if (RUNS[i].sess == fd)
			return K_SESS;
		for (k = 0; k < RUNS[i].nheld; k++)
			if (RUNS[i].held[k].fd == fd)
				return K_CTX;
	}
	return K_DEV;   /* DEVFD; EPFD is never given away */
}

static void close_tracked_except(int keep1, int keep2)
{
	int fds[2 + MAXRUN * (1 + MAXHELD)], n = tracked(fds), i;

	for (i = 0; i < n; i++)
		if (fds[i] != keep1 && fds[i] != keep2)
			close(fds[i]);
}

static void judge_exit(pid_t pid, int st, const char *what)
{
	if (WIFSIGNALED(st)) {
		if (WTERMSIG(st) == SIGKILL)
			__atomic_fetch_add(&W->kills, 1, __ATOMIC_RELAXED);
		else
			viol("%s %d died of signal %d", what, (int)pid, WTERMSIG(st));
	} else if (WIFEXITED(st) && WEXITSTATUS(st)) {
		viol("%s %d exited %d", what, (int)pid, WEXITSTATUS(st));
	}
}

static void reap(struct run *r, bool block)
{
	int i, st;
	pid_t p;

	for (i = 0; i < r->nch;) {
		mark(OP_WAITPID, 0);
		do
			p = waitpid(r->ch[i], &st, block ? 0 : WNOHANG);
		while (p < 0 && errno == EINTR);
		if (p == r->ch[i] || (p < 0 && errno == ECHILD)) {
			if (p > 0)
				judge_exit(p, st, "context process");
			r->ch[i] = r->ch[--r->nch];
		} else {
			i++;
		}
	}
}

static int children(void)
{
	int i, n = 0;

	for (i = 0; i < NRUNS; i++)
		n += RUNS[i].nch;
	return n;
}

/* fork for run r: 0 in the child (seeded, dies with the worker), pid or -1 here */
static pid_t fork_for(struct run *r)
{
	uint64_t seed = rnd();
	pid_t me = getpid(), pid;

	if (r->nch >= MAXCH)
		return -1;
	mark(OP_FORK, 0);
	pid = fork();
	if (pid == 0) {
		RS = seed;
		IS_RUNNER = false;
		SEQ = 0;
		NH = 0;
		strcpy(ROLE, "helper");
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != me)
			_exit(0);
		return 0;
	}
	trace("fork -> %d", (int)pid);
	if (pid > 0) {
		__atomic_fetch_add(&W->forks, 1, __ATOMIC_RELAXED);
		r->ch[r->nch++] = pid;
	}
	return pid;
}

static long ctx_fd(struct run *r, uint64_t ep, bool corrupt)
{
	struct ctxvm_context_fd cf;

	memset(&cf, 0, sizeof(cf));
	cf.endpoint = ep;
	if (corrupt) {
		switch (below(4)) {
		case 0:
			cf.flags = (__u32)(rnd() | 1);
			break;
		case 1:
			cf.pad = (__u32)(rnd() | 1);
			break;
		default:
			cf.reserved[below(2)] = rnd() | 1;
		}
	}
	return xiop(K_SESS, r->sess, CTXVM_CONTEXT_FD, &cf, 0);
}

static void hold(struct run *r, int fd, uint64_t ep, double end, bool bound_elsewhere)
{
	struct held *h;

	if (r->nheld >= MAXHELD) {
		xclose(fd);
		return;
	}
	h = &r->held[r->nheld++];
	memset(h, 0, sizeof(*h));
	h->fd = fd;
	h->ep = ep;
	h->c.fd = fd;
	h->c.extra = -1;
	h->c.root = ep == r->root_ep;
	h->c.runner = true;
	h->c.chaotic = bound_elsewhere;
	h->c.gas = GAS;
	h->c.deadline = end;
}

static void spawn_ctx(struct run *r, int fd, uint64_t ep, double end)
{
	int fds[2 + MAXRUN * (1 + MAXHELD)], n, extra = -1;
	struct cst c;
	pid_t pid;

	if (chance(6)) {
		n = tracked(fds);
		extra = fds[below((uint64_t)n)];
		if (extra == EPFD)
			extra = -1;
	}
	memset(&c, 0, sizeof(c));
	c.extra = extra;
	c.ekind = extra >= 0 ? kind_of(extra) : K_DEV;
	pid = fork_for(r);
	if (pid == 0) {
		close_tracked_except(fd, extra);
		c.fd = fd;
		c.root = ep == r->root_ep;
		c.chaotic = !CALM && chance(25);
		snprintf(ROLE, sizeof(ROLE), "context ep %llu%s%s", (unsigned long long)ep,
			 c.root ? " root" : "", c.chaotic ? " chaotic" : "");
		c.gas = GAS;
		c.deadline = end + 0.5;
		if (chance(95))
			c_bind(&c);
		ctx_run(&c);
	}
	if (pid > 0 && !CALM && chance(12))
		hold(r, fd, ep, end, true);     /* a copy stays here */
	else
		xclose(fd);
}

static void take_ep(struct run *r, uint64_t ep, double end, bool from_pending)
{
	unsigned int d = (unsigned int)below(100);
	long fd, fd2;

	if (!from_pending && ((!CALM && d < 8) || r->nch >= MAXCH)) {
		if (r->npend < MAXPEND)
			r->pend[r->npend++] = ep;
		return;                 /* its caller sleeps until the session ends */
	}
	if (chance(3) && ctx_fd(r, ep, true) >= 0)
		viol("CONTEXT_FD with a reserved field set succeeded");
	fd = ctx_fd(r, ep, false);
	if (fd < 0)
		return;
	if (chance(4)) {
		fd2 = ctx_fd(r, ep, false);
		if (fd2 >= 0) {
			viol("a second CONTEXT_FD for endpoint %llu succeeded",
			     (unsigned long long)ep);
			xclose((int)fd2);
		} else if (fd2 != -EBUSY) {
			viol("a second CONTEXT_FD for endpoint %llu: %s", (unsigned long long)ep,
			     ename((int)-fd2));
		}
	}
	if (!CALM && d < 14 && r->nheld < MAXHELD)
		hold(r, (int)fd, ep, end, false);
	else
		spawn_ctx(r, (int)fd, ep, end);
}

static void check_event(const struct ctxvm_event *ev)
{
	const __u64 t = ev->msg.type;
	bool ok = true;

	if (ev->reserved[0] || ev->reserved[1] || ev->reserved[2] || !ev->endpoint)
		ok = false;
	switch (ev->type) {
	case CTXVM_EVENT_SPAWN:
	case CTXVM_EVENT_ENTER:
		ok = ok && !ev->flags && t == CTXVM_MSG_RUN && ev->depth >= 2 && ev->from;
		break;
	case CTXVM_EVENT_FINISH:
		ok = ok && !ev->flags && t == CTXVM_MSG_FINISH && ev->depth == 0;
		break;
	case CTXVM_EVENT_RETURN:
		ok = ok && !ev->flags && t == CTXVM_MSG_RETURN && ev->depth >= 1;
		break;
	case CTXVM_EVENT_FAIL:
	case CTXVM_EVENT_DIED:
		ok = ok && (ev->flags == CTXVM_EVENT_F_CAUGHT ||
			    ev->flags == CTXVM_EVENT_F_SESSION_FAILED);
		ok = ok && (ev->flags == CTXVM_EVENT_F_CAUGHT) == (ev->depth > 0);
		if (ev->type == CTXVM_EVENT_FAIL)
			ok = ok && t == CTXVM_MSG_FAIL;
		else
			ok = ok && (t == 0 || t == CTXVM_MSG_FAIL);
		break;
	default:
		ok = false;
	}
	if (!ok)
		viol("bad event: type %u flags %u endpoint %llu depth %llu from %llu msg %llu",
		     ev->type, ev->flags, (unsigned long long)ev->endpoint,
		     (unsigned long long)ev->depth, (unsigned long long)ev->from,
		     (unsigned long long)t);
}

static void on_event(struct run *r, const struct ctxvm_event *ev, double end)
{
	check_event(ev);
	__atomic_fetch_add(&W->events, 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&W->ev_type[ev->type < 8 ? ev->type : 0], 1, __ATOMIC_RELAXED);
	if ((long)ev->depth > W->max_depth && ev->depth < 1000000)
		W->max_depth = (long)ev->depth;
	switch (ev->type) {
	case CTXVM_EVENT_SPAWN:
		take_ep(r, ev->endpoint, end, false);
		break;
	case CTXVM_EVENT_FINISH:
		r->finished = true;
		__atomic_fetch_add(&W->finished, 1, __ATOMIC_RELAXED);
		break;
	case CTXVM_EVENT_FAIL:
	case CTXVM_EVENT_DIED:
		if (ev->flags & CTXVM_EVENT_F_SESSION_FAILED)
			__atomic_fetch_add(&W->failed, 1, __ATOMIC_RELAXED);
		break;
	}
}

/* One EVENT ioctl, blocking under a timer; false when nothing came. */
static bool event_once(struct run *r, double end, unsigned int ms)
{
	struct ctxvm_event ev;
	long rr;

	memset(&ev, 0xa5, sizeof(ev));
	arm(ms);
	rr = xiop(K_SESS, r->sess, CTXVM_EVENT, &ev, r->nonblock ? F_NB : 0);
	disarm();
	if (rr == 0) {
		on_event(r, &ev, end);
		return true;
	}
	if (rr == -ESHUTDOWN)
		r->eof = true;
	return false;
}

static void read_events(struct run *r, double end)
{
	int i, n = 1 + (int)below(8), fl;
	struct epoll_event ee[4];
	struct pollfd p;

	if (r->sess < 0 || r->eof)
		return;
	switch (below(4)) {
	case 0:
		p.fd = r->sess;
		p.events = POLLIN;
		mark(OP_POLL, 0);
		if (poll(&p, 1, (int)below(40)) == 1) {
			if (p.revents & (POLLNVAL | POLLERR))
				viol("poll on a session fd: revents 0x%x", p.revents);
			for (i = 0; i < n && event_once(r, end, 100); i++)
				;
		}
		break;
	case 1:
		for (i = 0; i < n && event_once(r, end, 1 + below(80)); i++)
			;
		break;
	case 2:
		fl = fcntl(r->sess, F_GETFL);
		if (fl >= 0 && !r->nonblock) {
			fcntl(r->sess, F_SETFL, fl | O_NONBLOCK);
			r->nonblock = true;
		} else if (fl >= 0 && chance(30)) {
			fcntl(r->sess, F_SETFL, fl & ~O_NONBLOCK);
			r->nonblock = false;
		}
		for (i = 0; i < n && event_once(r, end, 200); i++)
			;
		break;
	default:
		if (EPFD < 0)
			return;
		mark(OP_EPOLL, 0);
		n = epoll_wait(EPFD, ee, 4, (int)below(30));
		for (i = 0; i < n; i++) {
			int k;

			for (k = 0; k < NRUNS; k++)
				if (RUNS[k].sess >= 0 && (int)ee[i].data.u32 == k && !RUNS[k].eof)
					event_once(&RUNS[k], end, 100);
		}
		break;
	}
}

static void check_info(struct run *r)
{
	struct ctxvm_session_info info;

	memset(&info, 0x5a, sizeof(info));
	if (xiop(K_SESS, r->sess, CTXVM_SESSION_INFO, &info, 0))
		return;
	if (info.state > CTXVM_S_FAILED || info.pad || info.reserved[0] || info.reserved[1] ||
	    info.reserved[2] || info.reserved[3] || info.depth > info.max_depth_seen ||
	    info.max_depth_seen > CAP_DEPTH || info.endpoints > info.contexts + 1 ||
	    (info.state != CTXVM_S_RUNNING && info.depth) ||
	    (info.state == CTXVM_S_IDLE && (info.contexts || info.endpoints)))
		viol("session info: state %u depth %u max %u contexts %llu endpoints %llu",
		     info.state, info.depth, info.max_depth_seen,
		     (unsigned long long)info.contexts, (unsigned long long)info.endpoints);
}

static void sess_junk(struct run *r)
{
	unsigned long cmd;
	int flags = 0;
	unsigned long p;
	long rr;

	if (chance(70)) {
		cmd = random_cmd();
		p = (unsigned long)junk_buffer(cmd);
	} else {
		static const unsigned long sc[] = {
			CTXVM_ADD_KERNEL_PROC, CTXVM_START, CTXVM_CONTEXT_FD, CTXVM_EVENT,
			CTXVM_SESSION_INFO,
		};
		struct ctxvm_start st;

		memset(&st, 0, sizeof(st));
		st.gas = 10;
		cmd = sc[below(5)];
		p = bad_ptr(&st, sizeof(st), &flags);
	}
	arm(5 + below(50));
	rr = xio(K_SESS, r->sess, cmd, p, flags | (r->nonblock ? F_NB : 0));
	disarm();
	if (rr >= 0 && (unsigned int)cmd == CTXVM_CONTEXT_FD)
		xclose((int)rr);
}

static void add_kernel_procs(struct run *r)
{
	struct ctxvm_kernel_proc kp;
	int i, n = CALM ? 4 : (int)below(5);
	bool bad;

	if (!CALM && chance(1))
		n = CTXVM_MAX_KERNEL_PROCS + 2;         /* past the table: ENOSPC */
	for (i = 0; i < n; i++) {
		memset(&kp, 0, sizeof(kp));
		dig(kp.digest, i < 4 ? 0x500 + (CALM ? (uint64_t)i : below(4)) : 0x1000 + (uint64_t)i);
		bad = !CALM && chance(8);
		if (bad) {
			switch (below(3)) {
			case 0:
				kp.flags = (__u32)(rnd() | 1);
				break;
			case 1:
				kp.pad = (__u32)(rnd() | 1);
				break;
			default:
				kp.reserved[below(2)] = rnd() | 1;
			}
		}
		if (xiop(K_SESS, r->sess, CTXVM_ADD_KERNEL_PROC, &kp, 0) == 0 && bad)
			viol("ADD_KERNEL_PROC with a reserved field set succeeded");
	}
}

static long start(struct run *r, bool corrupt)
{
	struct ctxvm_start st;
	unsigned int i;
	long rr;

	memset(&st, 0, sizeof(st));
	dig(st.digest, 0x100);
	st.gas = chance(80) ? GAS : rnd() >> below(64);
	st.proc = below(8);
	st.budget = below(64);
	for (i = 0; i < CTXVM_WINDOW; i++)
		st.window[i] = chance(50) ? 0 : rnd();
	switch (below(6)) {
	case 0:
	case 1:
	case 2:
		break;
	case 3:
	case 4:
		st.depth_limit = 1 + below(10);
		break;
	default:
		st.depth_limit = chance(50) ? CAP_DEPTH + 1 + below(3) : rnd();
	}
	if (corrupt) {
		switch (below(4)) {
		case 0:
			st.flags = (__u32)(rnd() | 1);
			break;
		case 1:
			st.pad = (__u32)(rnd() | 1);
			break;
		case 2:
			st.endpoint = rnd() | 1;
			break;
		default:
			st.reserved[below(3)] = rnd() | 1;
		}
	}
	rr = xiop(K_SESS, r->sess, CTXVM_START, &st, 0);
	if (rr == 0) {
		if (corrupt)
			viol("START with a reserved field set succeeded");
		if (r->started)
			viol("a second START succeeded");
		if (!st.endpoint)
			viol("START returned endpoint 0");
		r->started = true;
		r->root_ep = st.endpoint;
		__atomic_fetch_add(&W->started, 1, __ATOMIC_RELAXED);
	}
	return rr;
}

static void new_run(double end)
{
	struct run *r;
	struct epoll_event ee;
	unsigned long arg = 0;
	int pi = -1;
	long s;

	if (NRUNS >= MAXRUN || DEVFD < 0)
		return;
	r = &RUNS[NRUNS];
	memset(r, 0, sizeof(*r));
	r->sess = -1;
	if (P_ORIG[0] > 0 && !CALM && chance(5)) {
		static const int pw[] = { 1, 4, 4 };
		int v;

		pi = wpick(pw, 3);
		v = pi == 0 ? 1 + (int)below(8) : 1 + (int)below(4);
		mark(OP_PARAM, 0);
		trace("param %s = %d", P_NAME[pi], v);
		param_set(pi, v);
	}
	if (chance(4))
		arg = (unsigned long)(rnd() | 1);
	s = xio(K_DEV, DEVFD, CTXVM_CREATE_SESSION, arg, 0);
	if (arg) {
		if (s >= 0)
			xclose((int)s);
		s = xio(K_DEV, DEVFD, CTXVM_CREATE_SESSION, 0, 0);
	}
	if (pi >= 0) {
		mark(OP_PARAM, 0);
		param_set(pi, P_ORIG[pi]);      /* read at creation: put it back now */
	}
	if (s < 0)
		return;
	r->sess = (int)s;
	NRUNS++;
	__atomic_fetch_add(&W->sessions, 1, __ATOMIC_RELAXED);
	if (EPFD >= 0) {
		memset(&ee, 0, sizeof(ee));
		ee.events = EPOLLIN;
		ee.data.u32 = (uint32_t)(r - RUNS);
		epoll_ctl(EPFD, EPOLL_CTL_ADD, r->sess, &ee);
	}
	add_kernel_procs(r);
	while (chance(30))
		sess_junk(r);
	if (chance(4))
		return;                         /* never started */
	if (chance(10))
		start(r, true);
	if (start(r, false) != 0)
		return;
	if (chance(3))
		start(r, false);                /* EBUSY */
	if (CALM || chance(88)) {
		take_ep(r, r->root_ep, end, true);
	} else if (chance(50)) {
		s = ctx_fd(r, r->root_ep, false);
		if (s >= 0)
			hold(r, (int)s, r->root_ep, end, false);
	} else if (r->npend < MAXPEND) {
		r->pend[r->npend++] = r->root_ep;       /* nobody runs context 0 */
	}
}

static void close_sess(struct run *r)
{
	if (r->sess < 0)
		return;
	xclose(r->sess);
	r->sess = -1;
	r->eof = true;
}

static void held_op(struct run *r)
{
	int i;
	struct held *h;

	if (!r->nheld)
		return;
	i = (int)below((uint64_t)r->nheld);
	h = &r->held[i];
	if (!h->c.bound && chance(30))
		c_bind(&h->c);
	else
		c_step(&h->c);
	if (h->c.fd < 0 || chance(5)) {
		if (h->c.fd >= 0)
			xclose(h->fd);
		r->held[i] = r->held[--r->nheld];
	}
}

/* A process that holds a copy of the session fd: it may steal events and endpoints. */
static void helper(struct run *r, double end)
{
	struct rlimit rl;
	long fd;
	pid_t pid;
	int i;

	if (r->sess < 0)
		return;
	pid = fork_for(r);
	if (pid != 0)
		return;
	close_tracked_except(r->sess, DEVFD);
	r->nonblock = true;     /* the worker may set O_NONBLOCK on the shared file */
	if (chance(40)) {
		/* No fd number left: CONTEXT_FD and CREATE_SESSION fail with EMFILE. */
		rl.rlim_cur = 3;
		rl.rlim_max = 3;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	for (i = 0; i < 1 + (int)below(5); i++) {
		switch (below(4)) {
		case 0:
			check_info(r);
			break;
		case 1:
			if (DEVFD >= 0) {
				fd = xio(K_DEV, DEVFD, CTXVM_CREATE_SESSION, 0, 0);
				if (fd >= 0)
					xclose((int)fd);
			}
			break;
		case 2:
			if (r->npend) {
				uint64_t ep = r->pend[below((uint64_t)r->npend)];

				fd = ctx_fd(r, ep, false);
				if (fd >= 0) {
					struct cst c;

					memset(&c, 0, sizeof(c));
					c.fd = (int)fd;
					c.extra = -1;
					c.root = ep == r->root_ep;
					c.gas = GAS;
					c.deadline = end + 0.5;
					snprintf(ROLE, sizeof(ROLE), "helper as ep %llu%s",
						 (unsigned long long)ep, c.root ? " root" : "");
					c_bind(&c);
					ctx_run(&c);
				}
			}
			break;
		default:
			event_once(r, end, 1 + below(30));
			break;
		}
	}
	_exit(0);
}

static void kill_one(struct run *r, int sig)
{
	pid_t p;

	if (!r->nch)
		return;
	p = r->ch[below((uint64_t)r->nch)];
	mark(OP_KILL, (unsigned int)sig);
	trace("kill %d %d", (int)p, sig);
	kill(p, sig);
}

static void teardown(void)
{
	int fds[2 + MAXRUN * (1 + MAXHELD)], n, i, k;
	double until;

	W->last_op = OP_TEARDOWN;
	n = tracked(fds);
	for (i = n - 1; i > 0; i--) {           /* shuffle */
		k = (int)below((uint64_t)i + 1);
		int t = fds[i];

		fds[i] = fds[k];
		fds[k] = t;
	}
	for (i = 0; i < n; i++) {
		if (chance(20))
			nap_us(below(5000));
		xclose(fds[i]);
	}
	DEVFD = EPFD = -1;
	for (i = 0; i < NRUNS; i++) {
		RUNS[i].sess = -1;
		RUNS[i].nheld = 0;
	}
	until = now() + 0.3;
	while (children() && now() < until) {
		for (i = 0; i < NRUNS; i++)
			reap(&RUNS[i], false);
		if (children())
			nap_us(5000);
	}
	for (i = 0; i < NRUNS; i++) {
		for (k = 0; k < RUNS[i].nch; k++) {
			mark(OP_KILL, SIGKILL);
			kill(RUNS[i].ch[k], SIGKILL);
		}
		reap(&RUNS[i], true);
	}
	NRUNS = 0;
}

static bool all_quiet(void)
{
	int i;

	for (i = 0; i < NRUNS; i++)
		if (RUNS[i].sess >= 0 && RUNS[i].started && !RUNS[i].eof)
			return false;
	return !children();
}

static void scenario(double wend)
{
	static const int aw[] = { 45, 8, 6, 3, 5, 5, 6, 3, 3, 4, 3, 2, 5 };
	double end = now() + 0.05 + (double)below(1500) / 1000.0;
	struct run *r;
	int i, a;

	CALM = chance(40);
	if (CALM)
		end += (double)below(1500) / 1000.0;
	if (end > wend)
		end = wend;
	mark(OP_OPEN, 0);
	DEVFD = open(DEV, O_RDWR | O_CLOEXEC);
	if (DEVFD < 0) {
		viol("open %s: %s", DEV, strerror(errno));
		nap_us(100000);
		return;
	}
	EPFD = chance(50) ? epoll_create1(EPOLL_CLOEXEC) : -1;
	NRUNS = 0;
	new_run(end);
	if (chance(30)) {
		xclose(DEVFD);  /* sessions live on without the system fd */
		DEVFD = -1;
	}
	while (NRUNS && now() < end) {
		r = &RUNS[below((uint64_t)NRUNS)];
		a = wpick(aw, 13);
		if (CALM && (a == 1 || a == 2 || a == 3 || a == 5 || a == 6 || a == 8 || a == 9))
			a = 0;
		switch (a) {
		case 0:
			read_events(r, end);
			break;
		case 1:
			kill_one(r, SIGKILL);
			break;
		case 2:
			kill_one(r, SIGUSR1);
			break;
		case 3:
			if (chance(30))
				close_sess(r);  /* contexts may be asleep in CALL */
			break;
		case 4:
			if (r->sess >= 0)
				check_info(r);
			break;
		case 5:
			if (r->sess >= 0)
				sess_junk(r);
			break;
		case 6:
			held_op(r);
			break;
		case 7:
			if (r->npend && r->sess >= 0) {
				i = (int)below((uint64_t)r->npend);
				uint64_t ep = r->pend[i];

				r->pend[i] = r->pend[--r->npend];
				take_ep(r, ep, end, true);
			}
			break;
		case 8:
			helper(r, end);
			break;
		case 9:
			mark(OP_SLEEP, 0);
			nap_us(5000 + below(50000));    /* the event queue fills meanwhile */
			break;
		case 10:
			new_run(end);
			break;
		case 11:
			if (r->sess >= 0) {
				if (chance(50))
					add_kernel_procs(r);
				else
					start(r, false);
			}
			break;
		default:
			reap(r, false);
			if (all_quiet() && chance(50))
				goto out;
			break;
		}
	}
out:
	teardown();
}

static void dev_ops(void)
{
	int dev, i, n = 1 + (int)below(8), flags;
	unsigned long cmd, arg;
	long r;

	mark(OP_OPEN, 0);
	dev = open(DEV, chance(90) ? O_RDWR | O_CLOEXEC : O_RDONLY);
	if (dev < 0) {
		viol("open %s: %s", DEV, strerror(errno));
		return;
	}
	for (i = 0; i < n; i++) {
		flags = 0;
		switch (below(6)) {
		case 0:
			xio(K_DEV, dev, CTXVM_GET_API_VERSION, chance(70) ? 0 : rnd(), 0);
			break;
		case 1:
			arg = chance(80) ? below(9) : rnd();
			r = xio(K_DEV, dev, CTXVM_CHECK_EXTENSION, arg, 0);
			if (arg == CTXVM_CAP_MSG_SIZE && r != (long)sizeof(struct ctxvm_msg))
				viol("CAP_MSG_SIZE is %ld", r);
			if ((arg == 0 || arg > CTXVM_CAP_MSG_SIZE) && r != 0)
				viol("unknown capability %lu is %ld", arg, r);
			if (arg >= CTXVM_CAP_MAX_SESSIONS && arg <= CTXVM_CAP_MAX_DEPTH && r < 1)
				viol("capability %lu is %ld", arg, r);
			break;
		case 2:
			r = xio(K_DEV, dev, CTXVM_CREATE_SESSION, chance(80) ? 0 : rnd(), 0);
			if (r >= 0)
				xclose((int)r);
			break;
		case 3:
			cmd = random_cmd();
			arm(50);
			r = xiop(K_DEV, dev, cmd, junk_buffer(cmd), 0);
			disarm();
			if (r >= 0 && (unsigned int)cmd == CTXVM_CREATE_SESSION)
				xclose((int)r);
			break;
		case 4:
			cmd = VALID[below(NVALID)];
			arg = bad_ptr(JB, 64, &flags);
			arm(50);
			r = xio(K_DEV, dev, cmd, arg, flags);
			disarm();
			if (r >= 0 && (unsigned int)cmd == CTXVM_CREATE_SESSION)
				xclose((int)r);
			break;
		default:        /* a session outliving the system fd */
			r = xio(K_DEV, dev, CTXVM_CREATE_SESSION, 0, 0);
			if (r >= 0) {
				xclose(dev);
				dev = -1;
				xclose((int)r);
			}
			break;
		}
		if (dev < 0)
			return;
	}
	xclose(dev);
}

static void worker(int wid, uint64_t seed, double wend)
{
	int dev;
	long cap;

	WID = wid;
	W = &SH->w[wid];
	W->pid = getpid();
	RS = seed;
	IS_RUNNER = true;
	setpgid(0, 0);
	handlers();
	pages_init();
	dev = open(DEV, O_RDWR | O_CLOEXEC);
	if (dev >= 0) {
		cap = ioctl(dev, CTXVM_CHECK_EXTENSION, CTXVM_CAP_MAX_DEPTH);
		if (cap > 0)
			CAP_DEPTH = (uint64_t)cap;
		close(dev);
	}
	while (now() < wend) {
		if (chance(10))
			dev_ops();
		else
			scenario(wend);
	}
	W->last_op = OP_DONE;
	_exit(0);
}

/* ---- the parent: watchdog, reaper, verdicts ---- */

static int T;                   /* TAP tests printed */
static int FAILS;

static void tap(bool ok, const char *fmt, ...)
{
	va_list ap;

	printf("%sok %d - ", ok ? "" : "not ", ++T);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	if (!ok)
		FAILS++;
}

static void usage(const char *me)
{
	fprintf(stderr, "usage: %s [--seed N] [--seconds S] [--procs P] [--trace]\n", me);
	exit(2);
}

struct wk {
	pid_t pid;
	bool alive, hung, unkillable;
	int status;
	char last[160];
};

static void describe_last(int i, char *out, size_t len)
{
	struct wstat *w = &SH->w[i];
	int op = w->last_op;

	if (op < 0 || op > OP_DONE)
		op = OP_IDLE;
	snprintf(out, len, "%s%s%s (0x%x), op #%ld", OP_NAME[op], op == OP_IOCTL ? " " : "",
		 op == OP_IOCTL ? cmd_name(w->last_cmd) : "", w->last_cmd, w->last_seq);
}

static void orphan(pid_t pid, int st)
{
	SH->orphans++;
	if ((WIFSIGNALED(st) && WTERMSIG(st) != SIGKILL) || (WIFEXITED(st) && WEXITSTATUS(st))) {
		if (!SH->orphan_bad++)
			snprintf(SH->orphan_msg, MSGLEN, "process %d: %s %d", (int)pid,
				 WIFSIGNALED(st) ? "signal" : "exit status",
				 WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
	}
}

int main(int argc, char **argv)
{
	uint64_t seed = 1;
	int seconds = 60, procs = 4, i, dev, alive, api, msz;
	long sess0, allocs0, sess1 = -1, allocs1 = -1;
	struct wk wk[MAXPROCS];
	double t0, kill_at, give_up = 0;
	long err[NERR + 1], ops = 0, ioctls = 0, forks = 0, kills = 0, sessions = 0;
	long started = 0, finished = 0, failed = 0, events = 0, evt[8] = { 0 }, maxd = 0;
	bool have_params = true, params_ok = true;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--seed") && i + 1 < argc)
			seed = strtoull(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
			seconds = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--procs") && i + 1 < argc)
			procs = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--trace"))
			TRACE = true;
		else
			usage(argv[0]);
	}
	if (seconds < 1 || procs < 1 || procs > MAXPROCS)
		usage(argv[0]);
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("TAP version 13\n");
	dev = open(DEV, O_RDWR | O_CLOEXEC);
	if (dev < 0) {
		printf("# open %s: %s\n1..1\nok 1 # SKIP no %s\n", DEV, strerror(errno), DEV);
		return 4;
	}
	printf("1..%d\n", procs + 5);
	for (i = 0; i < 3; i++) {
		P_ORIG[i] = param_get(i);
		if (P_ORIG[i] <= 0)
			have_params = false;
	}
	if (!have_params)
		P_ORIG[0] = -1;         /* workers leave the parameters alone */
	api = ioctl(dev, CTXVM_GET_API_VERSION, 0);
	msz = ioctl(dev, CTXVM_CHECK_EXTENSION, CTXVM_CAP_MSG_SIZE);
	sess0 = ioctl(dev, CTXVM_CHECK_EXTENSION, CTXVM_CAP_LIVE_SESSIONS);
	allocs0 = ioctl(dev, CTXVM_CHECK_EXTENSION, CTXVM_CAP_LIVE_ALLOCS);
	close(dev);
	printf("# seed %llu, %d s, %d workers; max_sessions %d max_contexts %d max_depth %d; "
	       "live sessions %ld, live allocations %ld at the start\n",
	       (unsigned long long)seed, seconds, procs, P_ORIG[0], P_ORIG[1], P_ORIG[2], sess0,
	       allocs0);
	tap(api == CTXVM_API_VERSION && msz == (int)sizeof(struct ctxvm_msg),
	    "API version %d, message size %d", api, msz);

	SH = mmap(NULL, sizeof(*SH), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (SH == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	memset(SH, 0, sizeof(*SH));
	W = &SH->w[0];          /* the parent's own bookkeeping lands in worker 0's */
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	t0 = now();
	kill_at = t0 + seconds + 30;
	fflush(NULL);
	for (i = 0; i < procs; i++) {
		memset(&wk[i], 0, sizeof(wk[i]));
		wk[i].pid = fork();
		if (wk[i].pid == 0)
			worker(i, seed + (uint64_t)i, t0 + seconds);
		if (wk[i].pid < 0) {
			perror("fork");
			return 1;
		}
		setpgid(wk[i].pid, wk[i].pid);
		wk[i].alive = true;
	}
	alive = procs;
	while (alive) {
		int st;
		pid_t p = waitpid(-1, &st, WNOHANG);

		if (p > 0) {
			for (i = 0; i < procs && wk[i].pid != p; i++)
				;
			if (i < procs) {
				wk[i].alive = false;
				wk[i].status = st;
				alive--;
			} else {
				orphan(p, st);
			}
			continue;
		}
		if (p < 0 && errno == ECHILD)
			break;
		nap_us(20000);
		if (!give_up && now() > kill_at) {
			for (i = 0; i < procs; i++) {
				if (!wk[i].alive)
					continue;
				wk[i].hung = true;
				describe_last(i, wk[i].last, sizeof(wk[i].last));
				printf("# watchdog: worker %d (pid %d) still running after %d s; "
				       "last op: %s; killing it\n", i, (int)wk[i].pid,
				       seconds + 30, wk[i].last);
				kill(-wk[i].pid, SIGKILL);
				kill(wk[i].pid, SIGKILL);
			}
			give_up = now() + 20;
		}
		if (give_up && now() > give_up) {
			for (i = 0; i < procs; i++)
				if (wk[i].alive)
					wk[i].unkillable = true;
			break;
		}
	}
	/* Stragglers: everything left in the workers' process groups. */
	for (i = 0; i < procs; i++)
		kill(-wk[i].pid, SIGKILL);
	give_up = now() + 10;
	for (;;) {
		int st;
		pid_t p = waitpid(-1, &st, WNOHANG);

		if (p > 0) {
			orphan(p, st);
			continue;
		}
		if ((p < 0 && errno == ECHILD) || now() > give_up)
			break;
		nap_us(20000);
	}
	if (have_params)
		for (i = 0; i < 3; i++)
			if (param_get(i) != P_ORIG[i] && param_set(i, P_ORIG[i]))
				params_ok = false;

	memset(err, 0, sizeof(err));
	for (i = 0; i < procs; i++) {
		struct wstat *w = &SH->w[i];
		bool crashed = !wk[i].hung && !wk[i].unkillable &&
			       !(WIFEXITED(wk[i].status) && WEXITSTATUS(wk[i].status) == 0);
		int k;

		for (k = 0; k <= NERR; k++)
			err[k] += w->err[k];
		ops += w->ops;
		ioctls += w->ioctls;
		forks += w->forks;
		kills += w->kills;
		sessions += w->sessions;
		started += w->started;
		finished += w->finished;
		failed += w->failed;
		events += w->events;
		for (k = 0; k < 8; k++)
			evt[k] += w->ev_type[k];
		if (w->max_depth > maxd)
			maxd = w->max_depth;
		if (wk[i].hung || wk[i].unkillable) {
			tap(false, "worker %d (seed %llu): %s within %d s, last op: %s", i,
			    (unsigned long long)(seed + (uint64_t)i),
			    wk[i].unkillable ? "hung and could not be killed" : "did not finish",
			    seconds + 30, wk[i].last);
		} else if (crashed) {
			tap(false, "worker %d (seed %llu): died (status 0x%x)", i,
			    (unsigned long long)(seed + (uint64_t)i), wk[i].status);
		} else {
			tap(w->viol == 0, "worker %d (seed %llu): %ld ioctls, %ld sessions, "
			    "%ld unexpected results", i, (unsigned long long)(seed + (uint64_t)i),
			    w->ioctls, w->sessions, w->viol);
		}
		for (k = 0; k < w->nmsg && k < NMSG; k++)
			printf("#   %s\n", w->msg[k]);
		if (w->nmsg > NMSG)
			printf("#   ... and %d more\n", w->nmsg - NMSG);
	}
	tap(SH->orphan_bad == 0, "%ld leftover processes reaped, none crashed%s%s", SH->orphans,
	    SH->orphan_bad ? ": " : "", SH->orphan_msg);

	/* Every fd is closed now; releases may still be on their way. */
	dev = open(DEV, O_RDWR | O_CLOEXEC);
	give_up = now() + 10;
	while (dev >= 0) {
		sess1 = ioctl(dev, CTXVM_CHECK_EXTENSION, CTXVM_CAP_LIVE_SESSIONS);
		allocs1 = ioctl(dev, CTXVM_CHECK_EXTENSION, CTXVM_CAP_LIVE_ALLOCS);
		if ((sess1 == 0 && allocs1 == 0) || now() > give_up)
			break;
		nap_us(50000);
	}
	if (dev >= 0)
		close(dev);
	tap(sess1 == 0, "live sessions back to 0 (%ld)", sess1);
	tap(allocs1 == 0, "live allocations back to 0 (%ld)", allocs1);
	if (have_params)
		tap(params_ok, "module parameters restored");
	else
		printf("ok %d - module parameters untouched # SKIP no %s\n", ++T, PARAMS);

	printf("# ops=%ld ioctls=%ld (%.0f/s) sessions=%ld started=%ld finished=%ld failed=%ld "
	       "events=%ld forks=%ld sigkilled=%ld\n", ops, ioctls, ioctls / (now() - t0), sessions,
	       started, finished, failed, events, forks, kills);
	printf("# events: spawn=%ld enter=%ld return=%ld fail=%ld died=%ld finish=%ld; "
	       "deepest stack %ld\n", evt[CTXVM_EVENT_SPAWN], evt[CTXVM_EVENT_ENTER],
	       evt[CTXVM_EVENT_RETURN], evt[CTXVM_EVENT_FAIL], evt[CTXVM_EVENT_DIED],
	       evt[CTXVM_EVENT_FINISH], maxd);
	printf("# errors-by-errno: ok=%ld", err[0]);
	for (;;) {
		int best = 0, k;

		for (k = 1; k <= NERR; k++)
			if (err[k] > (best ? err[best] : 0))
				best = k;
		if (!best)
			break;
		printf(" %s=%ld", best == NERR ? "other" : ename(best), err[best]);
		err[best] = 0;
	}
	printf("\n");
	return FAILS ? 1 : 0;
}
