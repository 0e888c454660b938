// SPDX-License-Identifier: GPL-2.0
/*
 * The ioctl ABI of /dev/ctxvm (shared/ctxvm_uapi.h) against ctxvm.ko.
 *
 * The test process plays the runner: it creates the session, serves its
 * events and forks one process per context, each running a small script of
 * ioctls and exiting non-zero on the first surprise.  Every test SKIPs when
 * /dev/ctxvm is absent (the host).  The last test checks the module's live
 * allocation counter is back to zero.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kselftest_harness.h"
#define PROTO_KMOD 1
#include "protocol.h"

#define DEV "/dev/ctxvm"
#define PARAMS "/sys/module/ctxvm/parameters/"

#define NEED_DEV(fd) do { \
	fd = open(DEV, O_RDWR | O_CLOEXEC); \
	if (fd < 0 && (errno == ENOENT || errno == ENODEV || errno == ENXIO)) \
		SKIP(return, DEV " is absent (ctxvm.ko not loaded)"); \
	ASSERT_LE(0, fd); \
} while (0)

static int xioctl(int fd, unsigned long cmd, void *arg)
{
	return ioctl(fd, cmd, arg) < 0 ? -errno : 0;
}

static int new_session(int dev)
{
	struct ctxvm_kernel_proc kp = { 0 };
	int s = ioctl(dev, CTXVM_CREATE_SESSION, 0);

	if (s < 0)
		return -errno;
	memcpy(kp.digest, D_K1, sizeof(kp.digest));
	if (ioctl(s, CTXVM_ADD_KERNEL_PROC, &kp) < 0)
		return -errno;
	memcpy(kp.digest, D_K2, sizeof(kp.digest));
	if (ioctl(s, CTXVM_ADD_KERNEL_PROC, &kp) < 0)
		return -errno;
	return s;
}

static int start_limited(int s, __u64 *ep, __u64 depth_limit)
{
	struct ctxvm_start st = { .gas = GAS, .budget = 16, .depth_limit = depth_limit };
	int r;

	memcpy(st.digest, D_ROOT, sizeof(st.digest));
	st.window[0] = 7;
	r = xioctl(s, CTXVM_START, &st);
	*ep = st.endpoint;
	return r;
}

static int start(int s, __u64 *ep)
{
	return start_limited(s, ep, 0);
}

static int ctx_fd(int s, __u64 ep)
{
	struct ctxvm_context_fd cf = { .endpoint = ep };
	int fd = ioctl(s, CTXVM_CONTEXT_FD, &cf);

	return fd < 0 ? -errno : fd;
}

/* A session, started, with context 0's fd bound to this process. */
static int root_here(int dev, int *sess)
{
	__u64 ep;
	int fd;

	*sess = new_session(dev);
	if (*sess < 0 || start(*sess, &ep))
		return -1;
	fd = ctx_fd(*sess, ep);
	if (fd < 0 || ioctl(fd, CTXVM_CTX_BIND, 0))
		return -1;
	return fd;
}

/* ---- the runner side ---- */

struct runner {
	int sess;
	const struct role *roles;
	int nroles;
	pid_t pids[16];
	int npids;
	__u64 root_ep;
	int caught;             /* FAIL/DIED events a delegatecall caught */
	struct ctxvm_event last;
	struct ctxvm_event log[32];     /* every event served, in order */
	int nlog;
};

/* A process for `ep`: binds, takes its RUN, runs fn, exits 0. */
static pid_t spawn(int sess, __u64 ep, ctx_fn fn)
{
	int fd = ctx_fd(sess, ep);
	pid_t pid;

	if (fd < 0)
		return -1;
	pid = fork();
	if (pid == 0) {
		struct ctxvm_msg run;

		close(sess);
		CHECK(ioctl(fd, CTXVM_CTX_BIND, 0) == 0);
		CHECK(ctx_wait(fd, &run) == 0);
		CHECK(run.type == CTXVM_MSG_RUN);
		fn(fd, &run);
		_exit(0);
	}
	close(fd);
	return pid;
}

static ctx_fn role_of(struct runner *r, const __u64 *digest)
{
	for (int i = 0; i < r->nroles; i++)
		if (dig_eq(r->roles[i].digest, digest))
			return r->roles[i].fn;
	return NULL;
}

/* Serves events until the run finishes or fails; stops early on an event of type `until`. */
static int serve(struct runner *r, __u32 until)
{
	for (;;) {
		struct ctxvm_event *ev = &r->last;
		ctx_fn fn;

		if (ioctl(r->sess, CTXVM_EVENT, ev) < 0)
			return -errno;
		if (r->nlog < 32)
			r->log[r->nlog++] = *ev;
		if (ev->type == until)
			return 0;
		switch (ev->type) {
		case CTXVM_EVENT_SPAWN:
			fn = role_of(r, ev->msg.digest);
			if (!fn || r->npids == 16)
				return -ESRCH;
			r->pids[r->npids] = spawn(r->sess, ev->endpoint, fn);
			if (r->pids[r->npids++] < 0)
				return -ECHILD;
			break;
		case CTXVM_EVENT_FINISH:
			return 0;
		case CTXVM_EVENT_ENTER:
		case CTXVM_EVENT_RETURN:
			break;          /* the frame stack moved; nothing to do */
		default:
			if (ev->flags & CTXVM_EVENT_F_SESSION_FAILED)
				return 0;
			r->caught++;
		}
	}
}

/* 0 when every context process exited 0. */
static int reap(struct runner *r)
{
	int bad = 0, st;

	for (int i = 0; i < r->npids; i++) {
		if (waitpid(r->pids[i], &st, 0) != r->pids[i] || !WIFEXITED(st) ||
		    WEXITSTATUS(st))
			bad++;
	}
	r->npids = 0;
	return bad;
}

static void runner_init(struct runner *r, int sess, const struct role *roles, int n,
			ctx_fn root)
{
	__u64 ep;

	memset(r, 0, sizeof(*r));
	r->sess = sess;
	r->roles = roles;
	r->nroles = n;
	if (start(sess, &ep) == 0) {
		r->root_ep = ep;
		r->pids[r->npids++] = spawn(sess, ep, root);
	}
}

/* ---- the seed scenario: root →call P →syscall K1 →call U →syscall K2 ---- */

/*
 * The events of the seed scenario: every push and pop, with the endpoint it
 * concerns, the caller and the depth after it.  Endpoints are numbered from
 * the session's first (root) in the order they were made: P, then U.
 */
static int seed_events_ok(const struct runner *r)
{
	const __u64 root = r->root_ep, p = root + 1, u = root + 2;
	const struct { __u32 type; __u64 ep, from, depth; } want[] = {
		{ CTXVM_EVENT_SPAWN, p, root, 2 },      /* root calls P */
		{ CTXVM_EVENT_ENTER, root, p, 3 },      /* P syscalls K1, run by root */
		{ CTXVM_EVENT_SPAWN, u, root, 4 },      /* K1 calls U */
		{ CTXVM_EVENT_ENTER, root, u, 5 },      /* U syscalls K2 */
		{ CTXVM_EVENT_RETURN, root, 0, 4 },     /* K2 returns */
		{ CTXVM_EVENT_RETURN, u, 0, 3 },
		{ CTXVM_EVENT_RETURN, root, 0, 2 },     /* K1 returns */
		{ CTXVM_EVENT_RETURN, p, 0, 1 },
		{ CTXVM_EVENT_FINISH, root, 0, 0 },
	};
	unsigned int i;

	if (r->nlog != (int)(sizeof(want) / sizeof(want[0])))
		return 0;
	for (i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		const struct ctxvm_event *e = &r->log[i];

		if (e->type != want[i].type || e->endpoint != want[i].ep ||
		    e->depth != want[i].depth || e->flags || e->reserved[0] ||
		    e->reserved[1] || e->reserved[2])
			return 0;
		if ((e->type == CTXVM_EVENT_SPAWN || e->type == CTXVM_EVENT_ENTER) &&
		    (e->from != want[i].from || e->msg.type != CTXVM_MSG_RUN))
			return 0;
		if (e->type == CTXVM_EVENT_RETURN && e->msg.type != CTXVM_MSG_RETURN)
			return 0;
	}
	/* what each event carries: the RUN given and the RETURN's gas */
	return dig_eq(r->log[1].msg.digest, D_K1) && r->log[1].msg.gas == 800000 &&
	       dig_eq(r->log[2].msg.digest, D_U) && r->log[7].msg.gas == 40 &&
	       r->log[7].msg.window[0] == 44;
}

/* 0 on success; a small number naming the first failure otherwise. */
static int run_seed(int dev)
{
	struct ctxvm_session_info info;
	struct runner r;
	int s = new_session(dev);

	if (s < 0)
		return 1;
	runner_init(&r, s, seed_roles, 2, seed_root);
	if (r.npids != 1 || r.pids[0] < 0)
		return 2;
	if (serve(&r, 0) || r.last.type != CTXVM_EVENT_FINISH || r.last.msg.gas != 100)
		return 3;
	if (reap(&r))
		return 4;
	if (!seed_events_ok(&r))
		return 6;
	if (ioctl(s, CTXVM_SESSION_INFO, &info) || info.state != CTXVM_S_DONE ||
	    info.contexts != 3 || info.max_depth_seen != 5 || info.depth != 0)
		return 5;
	close(s);
	return 0;
}

TEST(seed_scenario_call_syscall_call_syscall)
{
	int dev;

	NEED_DEV(dev);
	ASSERT_EQ(0, run_seed(dev));
	close(dev);
}

TEST(parallel_sessions)
{
	pid_t pids[6];
	int dev, st, i;

	NEED_DEV(dev);
	for (i = 0; i < 6; i++) {
		pids[i] = fork();
		ASSERT_LE(0, pids[i]);
		if (pids[i] == 0) {
			int bad = 0;

			for (int k = 0; k < 5; k++)
				bad |= run_seed(dev);
			_exit(bad);
		}
	}
	for (i = 0; i < 6; i++) {
		ASSERT_EQ(pids[i], waitpid(pids[i], &st, 0));
		EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	close(dev);
}

TEST(delegatecall_guarded_failure_and_success)
{
	struct runner r;
	int dev, s;

	NEED_DEV(dev);
	s = new_session(dev);
	ASSERT_LE(0, s);
	runner_init(&r, s, dg_roles, 2, dg_root);
	ASSERT_EQ(0, serve(&r, CTXVM_EVENT_FAIL));
	EXPECT_EQ((__u32)CTXVM_EVENT_F_CAUGHT, r.last.flags);
	EXPECT_EQ(500ULL, r.last.msg.gas);
	EXPECT_EQ(0, strcmp((char *)r.last.msg.text, "assertion failed"));
	ASSERT_EQ(0, serve(&r, 0));
	EXPECT_EQ((__u32)CTXVM_EVENT_FINISH, r.last.type);
	EXPECT_EQ(0, reap(&r));
	close(s);
	close(dev);
}

/* ---- refusals in context 0 alone ---- */

TEST(syscall_and_call_refusals)
{
	struct runner r;
	int dev, s;

	NEED_DEV(dev);
	s = new_session(dev);
	ASSERT_LE(0, s);
	runner_init(&r, s, NULL, 0, refusals_root);
	ASSERT_EQ(0, serve(&r, CTXVM_EVENT_FAIL));
	EXPECT_EQ((__u32)CTXVM_EVENT_F_SESSION_FAILED, r.last.flags);
	EXPECT_EQ(0, strcmp((char *)r.last.msg.text, "assertion failed"));
	EXPECT_EQ(0, reap(&r));
	close(s);
	close(dev);
}

/* ---- a context that is not on top ---- */

static int nt_go[2], nt_done[2];

static void nt_on_usr1(int sig)
{
	(void)sig;
}

static void nt_p(int fd, const struct ctxvm_msg *run)
{
	char c;

	(void)run;
	CHECK(read(nt_go[0], &c, 1) == 1);
	CHECK(ctx_return(fd, 3, 8) == 0);
}

static void nt_root(int fd, const struct ctxvm_msg *run)
{
	struct sigaction sa = { .sa_handler = nt_on_usr1 };    /* no SA_RESTART */
	struct ctxvm_msg m;
	__u64 d[4];

	(void)run;
	CHECK(sigaction(SIGUSR1, &sa, NULL) == 0);
	/* Interrupted after the call was made: it is not restarted. */
	CHECK(ctx_call(fd, CTXVM_FRAME_CALL, D_P, 1000, 0, 0, &m) == -EINTR);
	CHECK(ctx_return(fd, 0, 0) == -EBUSY);
	CHECK(ctx_caller(fd, d) == -EBUSY);
	CHECK(ctx_fail(fd, 0) == -EBUSY);
	CHECK(ctx_finish(fd, 0) == -EBUSY);
	CHECK(ctx_call(fd, CTXVM_FRAME_CALL, D_U, 100, 0, 0, &m) == -EBUSY);
	CHECK(write(nt_done[1], "x", 1) == 1);
	CHECK(ctx_wait(fd, &m) == 0);
	CHECK(m.type == CTXVM_MSG_RESULT && m.window[0] == 8);
	CHECK(ctx_finish(fd, 10) == 0);
}

TEST(wrong_frame_return_and_caller_refused)
{
	static const struct role roles[] = { { D_P, nt_p } };
	struct runner r;
	int dev, s;
	char c;

	NEED_DEV(dev);
	ASSERT_EQ(0, pipe(nt_go));
	ASSERT_EQ(0, pipe(nt_done));
	s = new_session(dev);
	ASSERT_LE(0, s);
	runner_init(&r, s, roles, 1, nt_root);
	ASSERT_EQ(0, serve(&r, CTXVM_EVENT_SPAWN));
	/* Root is inside its CALL now; P's process is made, then root interrupted. */
	r.pids[r.npids] = spawn(s, r.last.endpoint, nt_p);
	ASSERT_LT(0, r.pids[r.npids++]);
	ASSERT_EQ(0, kill(r.pids[0], SIGUSR1));
	ASSERT_EQ(1, read(nt_done[0], &c, 1));
	ASSERT_EQ(1, write(nt_go[1], "g", 1));
	ASSERT_EQ(0, serve(&r, 0));
	EXPECT_EQ((__u32)CTXVM_EVENT_FINISH, r.last.type);
	EXPECT_EQ(0, reap(&r));
	close(s);
	close(dev);
}

/* ---- a context killed mid-call ---- */

static int km_ready[2];

static void km_sleeper(int fd, const struct ctxvm_msg *run)
{
	struct ctxvm_msg m;
	int r;

	(void)run;
	CHECK(write(km_ready[1], "r", 1) == 1);        /* it has its RUN */
	/* Its frame is popped under it when its caller dies. */
	CHECK(ctx_wait(fd, &m) == -ESHUTDOWN);
	r = ctx_return(fd, 1, 1);
	CHECK(r == -EBUSY || r == -ESHUTDOWN);
}

static void km_middle(int fd, const struct ctxvm_msg *run)
{
	struct ctxvm_msg m;

	(void)run;
	ctx_call(fd, CTXVM_FRAME_CALL, D_Q, run->gas, 0, 0, &m);
	_exit(1);       /* it must be killed inside the call */
}

static void km_root_plain(int fd, const struct ctxvm_msg *run)
{
	struct ctxvm_msg m;

	(void)run;
	CHECK(ctx_call(fd, CTXVM_FRAME_CALL, D_P, 9000, 0, 0, &m) == -ESHUTDOWN);
}

static void km_root_guarded(int fd, const struct ctxvm_msg *run)
{
	struct ctxvm_msg m;

	(void)run;
	CHECK(ctx_call(fd, CTXVM_FRAME_DELEGATECALL, D_P, 6400, 5000, 0, &m) == 0);
	CHECK(m.type == CTXVM_MSG_GUARD_BEGIN);
	CHECK(ctx_wait(fd, &m) == 0);
	CHECK(m.type == CTXVM_MSG_GUARD_END && m.status == 1);
	CHECK(ctx_wait(fd, &m) == 0);
	/* A killed context spent all it had. */
	CHECK(m.type == CTXVM_MSG_RESULT && m.status == CTXVM_RESULT_GUARD_FAILED);
	CHECK(m.gas == 5000);
	CHECK(ctx_finish(fd, 1) == 0);
}

static void killed_mid_call(struct __test_metadata *_metadata, ctx_fn root, __u32 want_flags)
{
	static const struct role roles[] = { { D_P, km_middle }, { D_Q, km_sleeper } };
	struct runner r;
	int dev, s, st;
	char c;

	NEED_DEV(dev);
	ASSERT_EQ(0, pipe(km_ready));
	s = new_session(dev);
	ASSERT_LE(0, s);
	runner_init(&r, s, roles, 2, root);
	ASSERT_EQ(0, serve(&r, CTXVM_EVENT_SPAWN));            /* P */
	r.pids[r.npids] = spawn(s, r.last.endpoint, km_middle);
	ASSERT_LT(0, r.pids[r.npids++]);
	ASSERT_EQ(0, serve(&r, CTXVM_EVENT_SPAWN));            /* Q: P is in its call */
	r.pids[r.npids] = spawn(s, r.last.endpoint, km_sleeper);
	ASSERT_LT(0, r.pids[r.npids++]);
	/* Q must hold its RUN first: once P is gone, Q's RUN is never delivered. */
	ASSERT_EQ(1, read(km_ready[0], &c, 1));
	ASSERT_EQ(0, kill(r.pids[1], SIGKILL));
	ASSERT_EQ(0, serve(&r, CTXVM_EVENT_DIED));
	EXPECT_EQ(want_flags, r.last.flags);
	ASSERT_EQ(r.pids[1], waitpid(r.pids[1], &st, 0));
	EXPECT_TRUE(WIFSIGNALED(st));
	r.pids[1] = r.pids[--r.npids];
	if (want_flags == CTXVM_EVENT_F_CAUGHT) {
		ASSERT_EQ(0, serve(&r, 0));
		EXPECT_EQ((__u32)CTXVM_EVENT_FINISH, r.last.type);
	}
	EXPECT_EQ(0, reap(&r));
	close(km_ready[0]);
	close(km_ready[1]);
	close(s);
	close(dev);
}

TEST(killed_mid_call_fails_the_run)
{
	killed_mid_call(_metadata, km_root_plain, CTXVM_EVENT_F_SESSION_FAILED);
}

TEST(killed_mid_call_caught_by_delegatecall)
{
	killed_mid_call(_metadata, km_root_guarded, CTXVM_EVENT_F_CAUGHT);
}

/* ---- nothing is delivered once an activation is over ---- */

static void sr_root(int fd, const struct ctxvm_msg *run)
{
	struct ctxvm_msg m;

	(void)run;
	ctx_call(fd, CTXVM_FRAME_CALL, D_P, 9000, 0, 0, &m);
	_exit(1);       /* it must be killed inside the call */
}

/*
 * The runner takes the context fd of a SPAWNed endpoint but starts no
 * process for it yet; then its caller is killed.  Its RUN was queued, but
 * its activation is over: a process binding the fd late must get -ESHUTDOWN,
 * not the stale RUN.  `guarded`: root delegatecalls P, P calls Q and P is
 * killed (caught, the run goes on; Q's fd is the one held); else root calls
 * P and root is killed (the run fails; P's fd is held).
 */
static void stale_run(struct __test_metadata *_metadata, bool guarded)
{
	static const struct role roles[] = { { D_P, km_middle } };
	struct pollfd p = { .events = POLLIN };
	int dev, s, fd, st, victim;
	struct runner r;
	pid_t pid;

	NEED_DEV(dev);
	s = new_session(dev);
	ASSERT_LE(0, s);
	runner_init(&r, s, roles, 1, guarded ? km_root_guarded : sr_root);
	ASSERT_LT(0, r.pids[0]);
	ASSERT_EQ(0, serve(&r, CTXVM_EVENT_SPAWN));            /* P */
	if (guarded) {
		r.pids[r.npids] = spawn(s, r.last.endpoint, km_middle);
		ASSERT_LT(0, r.pids[r.npids++]);
		ASSERT_EQ(0, serve(&r, CTXVM_EVENT_SPAWN));    /* Q: P is in its call */
	}
	fd = ctx_fd(s, r.last.endpoint);
	ASSERT_LE(0, fd);
	victim = r.npids - 1;
	ASSERT_EQ(0, kill(r.pids[victim], SIGKILL));
	ASSERT_EQ(0, serve(&r, CTXVM_EVENT_DIED));
	EXPECT_EQ(guarded ? CTXVM_EVENT_F_CAUGHT : CTXVM_EVENT_F_SESSION_FAILED, r.last.flags);
	ASSERT_EQ(r.pids[victim], waitpid(r.pids[victim], &st, 0));
	EXPECT_TRUE(WIFSIGNALED(st));
	r.pids[victim] = r.pids[--r.npids];
	/* poll says so too: hung up, nothing to read */
	p.fd = fd;
	EXPECT_EQ(1, poll(&p, 1, 0));
	EXPECT_EQ(POLLHUP, p.revents);
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		struct ctxvm_msg m;
		int rr;

		close(s);
		CHECK(ioctl(fd, CTXVM_CTX_BIND, 0) == 0);
		rr = ctx_wait(fd, &m);
		if (rr == 0)
			fprintf(stderr, "# a stale message of type %llu\n",
				(unsigned long long)m.type);
		CHECK(rr == -ESHUTDOWN);
		CHECK(ctx_wait(fd, &m) == -ESHUTDOWN);
		rr = ctx_return(fd, 1, 1);
		CHECK(rr == -EBUSY || rr == -ESHUTDOWN);
		_exit(0);
	}
	ASSERT_EQ(pid, waitpid(pid, &st, 0));
	EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	close(fd);
	if (guarded) {
		ASSERT_EQ(0, serve(&r, 0));
		EXPECT_EQ((__u32)CTXVM_EVENT_FINISH, r.last.type);
	}
	EXPECT_EQ(0, reap(&r));
	close(s);
	close(dev);
}

TEST(no_stale_run_after_the_run_failed)
{
	stale_run(_metadata, false);
}

TEST(no_stale_run_after_the_activation_was_unwound)
{
	stale_run(_metadata, true);
}

/* ---- a message that cannot be written out is not lost ---- */

TEST(wait_and_call_efault_keep_the_message)
{
	struct ctxvm_msg m, *ro;
	struct pollfd p = { .events = POLLIN };
	int dev, s, fd;

	NEED_DEV(dev);
	fd = root_here(dev, &s);
	ASSERT_LE(0, fd);
	ro = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, ro);
	ASSERT_EQ(0, mprotect(ro, 4096, PROT_READ));
	/* WAIT into a read-only buffer: -EFAULT, and the RUN stays first in line */
	EXPECT_EQ(-EFAULT, xioctl(fd, CTXVM_CTX_WAIT, ro));
	p.fd = fd;
	ASSERT_EQ(1, poll(&p, 1, 2000));
	EXPECT_EQ(POLLIN, p.revents);
	ASSERT_EQ(0, ctx_wait(fd, &m));
	EXPECT_EQ((__u64)CTXVM_MSG_RUN, m.type);
	EXPECT_EQ((__u64)CTXVM_FRAME_ROOT, m.kind);
	EXPECT_EQ(7ULL, m.window[0]);
	/* A CALL it can read but not write is made; its message waits for WAIT. */
	memset(&m, 0, sizeof(m));
	m.type = CTXVM_MSG_CALL;
	m.kind = CTXVM_FRAME_SYSCALL;
	m.gas = 5000;
	m.fmp = ROOT_FMP;
	memcpy(m.digest, D_K1, sizeof(m.digest));
	ASSERT_EQ(0, mprotect(ro, 4096, PROT_READ | PROT_WRITE));
	*ro = m;
	ASSERT_EQ(0, mprotect(ro, 4096, PROT_READ));
	EXPECT_EQ(-EFAULT, xioctl(fd, CTXVM_CTX_CALL, ro));
	p.revents = 0;
	ASSERT_EQ(1, poll(&p, 1, 2000));
	ASSERT_EQ(0, ctx_wait(fd, &m));
	EXPECT_EQ((__u64)CTXVM_MSG_RUN, m.type);
	EXPECT_EQ((__u64)CTXVM_FRAME_SYSCALL, m.kind);
	EXPECT_TRUE(dig_eq(m.digest, D_K1));
	EXPECT_EQ(0, ctx_return(fd, 10, 3));
	ASSERT_EQ(0, ctx_wait(fd, &m));
	EXPECT_EQ((__u64)CTXVM_MSG_RESULT, m.type);
	EXPECT_EQ(3ULL, m.window[0]);
	EXPECT_EQ(0, ctx_finish(fd, 20));
	EXPECT_EQ(-ESHUTDOWN, ctx_wait(fd, &m));
	munmap(ro, 4096);
	close(fd);
	close(s);
	close(dev);
}

TEST(closing_the_context_fd_releases_its_frames)
{
	struct ctxvm_event ev;
	int dev, s, fd;

	NEED_DEV(dev);
	fd = root_here(dev, &s);
	ASSERT_LE(0, fd);
	close(fd);
	ASSERT_EQ(0, ioctl(s, CTXVM_EVENT, &ev));
	EXPECT_EQ((__u32)CTXVM_EVENT_DIED, ev.type);
	EXPECT_EQ((__u32)CTXVM_EVENT_F_SESSION_FAILED, ev.flags);
	EXPECT_EQ(-1, ioctl(s, CTXVM_EVENT, &ev));
	EXPECT_EQ(ESHUTDOWN, errno);
	close(s);
	close(dev);
}

/* A context that announces its death (the SIGSYS handler does this) */
TEST(abort_announces_death_and_ends_the_run)
{
	struct ctxvm_msg m = { 0 };
	struct ctxvm_event ev;
	int dev, s, fd;

	NEED_DEV(dev);
	fd = root_here(dev, &s);
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, ctx_wait(fd, &m));
	memset(&m, 0, sizeof(m));
	m.type = CTXVM_MSG_RETURN;
	EXPECT_EQ(-EINVAL, xioctl(fd, CTXVM_CTX_ABORT, &m));
	m.type = CTXVM_MSG_FAIL;
	m.reserved[2] = 1;
	EXPECT_EQ(-EINVAL, xioctl(fd, CTXVM_CTX_ABORT, &m));
	m.reserved[2] = 0;
	m.kind = 7;
	m.gas_arg = 41;         /* the syscall it tried */
	strcpy((char *)m.text, "sandbox violation");
	ASSERT_EQ(0, xioctl(fd, CTXVM_CTX_ABORT, &m));
	ASSERT_EQ(0, ioctl(s, CTXVM_EVENT, &ev));
	EXPECT_EQ((__u32)CTXVM_EVENT_DIED, ev.type);
	EXPECT_EQ((__u32)CTXVM_EVENT_F_SESSION_FAILED, ev.flags);
	EXPECT_EQ(41ULL, ev.msg.gas_arg);
	EXPECT_EQ(7ULL, ev.msg.kind);
	EXPECT_EQ(0, strcmp((char *)ev.msg.text, "sandbox violation"));
	EXPECT_EQ(0ULL, ev.depth);
	/* dead: nothing it sends counts any more */
	EXPECT_EQ(-ESHUTDOWN, ctx_wait(fd, &m));
	EXPECT_EQ(-ESHUTDOWN, ctx_finish(fd, 0));
	EXPECT_EQ(-ESHUTDOWN, ctx_call(fd, CTXVM_FRAME_SYSCALL, D_K1, 1, 0, 0, &m));
	EXPECT_EQ(-ESHUTDOWN, xioctl(s, CTXVM_EVENT, &ev));
	close(fd);
	close(s);
	close(dev);
}

/* ---- fds: the session fd closed, another process, O_CLOEXEC ---- */

TEST(call_after_session_fd_closed)
{
	struct ctxvm_msg m;
	int dev, s, fd;

	NEED_DEV(dev);
	fd = root_here(dev, &s);
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, ctx_wait(fd, &m));
	close(s);
	EXPECT_EQ(-ESHUTDOWN, ctx_call(fd, CTXVM_FRAME_CALL, D_P, 100, 0, 0, &m));
	EXPECT_EQ(-ESHUTDOWN, ctx_call(fd, CTXVM_FRAME_SYSCALL, D_K1, 100, 0, 0, &m));
	EXPECT_EQ(-ESHUTDOWN, ctx_wait(fd, &m));
	EXPECT_EQ(-ESHUTDOWN, ctx_caller(fd, m.digest));
	EXPECT_EQ(-ESHUTDOWN, ctx_finish(fd, 0));
	close(fd);
	close(dev);
}

TEST(context_fd_refused_in_another_process)
{
	int dev, s, fd, st, sync[2];
	struct ctxvm_msg m;
	__u64 ep;
	pid_t pid;
	char c;

	NEED_DEV(dev);
	s = new_session(dev);
	ASSERT_LE(0, s);
	ASSERT_EQ(0, start(s, &ep));
	fd = ctx_fd(s, ep);
	ASSERT_LE(0, fd);
	/* Unbound: nobody may use it yet. */
	EXPECT_EQ(-EPERM, ctx_wait(fd, &m));
	ASSERT_EQ(0, pipe(sync));
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		CHECK(ioctl(fd, CTXVM_CTX_BIND, 0) == 0);
		CHECK(write(sync[1], "b", 1) == 1);
		CHECK(ctx_wait(fd, &m) == 0 && m.type == CTXVM_MSG_RUN);
		CHECK(ctx_finish(fd, 0) == 0);
		_exit(0);
	}
	ASSERT_EQ(1, read(sync[0], &c, 1));
	EXPECT_EQ(-EBUSY, xioctl(fd, CTXVM_CTX_BIND, NULL));
	EXPECT_EQ(-EPERM, ctx_wait(fd, &m));
	EXPECT_EQ(-EPERM, ctx_caller(fd, m.digest));
	EXPECT_EQ(-EPERM, ctx_return(fd, 0, 0));
	EXPECT_EQ(-EPERM, ctx_fail(fd, 0));
	EXPECT_EQ(-EPERM, ctx_finish(fd, 0));
	EXPECT_EQ(-EPERM, ctx_call(fd, CTXVM_FRAME_CALL, D_P, 1, 0, 0, &m));
	ASSERT_EQ(pid, waitpid(pid, &st, 0));
	EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	close(fd);
	close(s);
	close(dev);
}

TEST(every_fd_is_cloexec)
{
	int dev, s, fd;

	NEED_DEV(dev);
	fd = root_here(dev, &s);
	ASSERT_LE(0, fd);
	EXPECT_EQ(FD_CLOEXEC, fcntl(s, F_GETFD) & FD_CLOEXEC);
	EXPECT_EQ(FD_CLOEXEC, fcntl(fd, F_GETFD) & FD_CLOEXEC);
	close(fd);
	close(s);
	close(dev);
}

/* ---- the system fd ---- */

TEST(api_version_and_extensions)
{
	int dev;

	NEED_DEV(dev);
	EXPECT_EQ(CTXVM_API_VERSION, ioctl(dev, CTXVM_GET_API_VERSION, 0));
	EXPECT_EQ(-1, ioctl(dev, CTXVM_GET_API_VERSION, 1));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_LT(0, ioctl(dev, CTXVM_CHECK_EXTENSION, CTXVM_CAP_MAX_SESSIONS));
	EXPECT_LT(0, ioctl(dev, CTXVM_CHECK_EXTENSION, CTXVM_CAP_MAX_CONTEXTS));
	EXPECT_LT(0, ioctl(dev, CTXVM_CHECK_EXTENSION, CTXVM_CAP_MAX_DEPTH));
	EXPECT_EQ((int)sizeof(struct ctxvm_msg),
		  ioctl(dev, CTXVM_CHECK_EXTENSION, CTXVM_CAP_MSG_SIZE));
	EXPECT_EQ(0, ioctl(dev, CTXVM_CHECK_EXTENSION, 9999));
	EXPECT_EQ(-1, ioctl(dev, CTXVM_CREATE_SESSION, 1));
	EXPECT_EQ(EINVAL, errno);
	close(dev);
}

TEST(unknown_ioctls_and_bad_sizes_are_enotty)
{
	struct ctxvm_msg m = { 0 };
	int dev, s, fd;

	NEED_DEV(dev);
	fd = root_here(dev, &s);
	ASSERT_LE(0, fd);
	/* each fd knows only its own commands */
	EXPECT_EQ(-ENOTTY, xioctl(dev, _IO(CTXVM_IO, 0x7f), NULL));
	EXPECT_EQ(-ENOTTY, xioctl(dev, CTXVM_START, &m));
	EXPECT_EQ(-ENOTTY, xioctl(s, CTXVM_GET_API_VERSION, NULL));
	EXPECT_EQ(-ENOTTY, xioctl(s, CTXVM_CTX_WAIT, &m));
	EXPECT_EQ(-ENOTTY, xioctl(fd, CTXVM_CREATE_SESSION, NULL));
	EXPECT_EQ(-ENOTTY, xioctl(fd, CTXVM_EVENT, &m));
	EXPECT_EQ(-ENOTTY, xioctl(fd, _IO('T', 1), NULL));
	/* the same number with another size is another command */
	EXPECT_EQ(-ENOTTY, xioctl(s, _IOC(_IOC_WRITE, CTXVM_IO, 0x10,
					 sizeof(struct ctxvm_kernel_proc) - 8), &m));
	EXPECT_EQ(-ENOTTY, xioctl(s, _IOC(_IOC_READ | _IOC_WRITE, CTXVM_IO, 0x11,
					 sizeof(struct ctxvm_start) + 8), &m));
	EXPECT_EQ(-ENOTTY, xioctl(fd, _IOC(_IOC_READ | _IOC_WRITE, CTXVM_IO, 0x22,
					  sizeof(struct ctxvm_msg) - 8), &m));
	EXPECT_EQ(-ENOTTY, xioctl(fd, _IOC(_IOC_READ, CTXVM_IO, 0x21, 8), &m));
	/* and a bad pointer is EFAULT, not a crash */
	EXPECT_EQ(-EFAULT, xioctl(fd, CTXVM_CTX_CALLER, (void *)8));
	EXPECT_EQ(-EFAULT, xioctl(s, CTXVM_SESSION_INFO, (void *)8));
	close(fd);
	close(s);
	close(dev);
}

/* ---- every reserved field, flag and pad of every struct ---- */

TEST(kernel_proc_reserved_and_limits)
{
	struct ctxvm_kernel_proc kp;
	__u64 ep;
	int dev, s, i;

	NEED_DEV(dev);
	s = ioctl(dev, CTXVM_CREATE_SESSION, 0);
	ASSERT_LE(0, s);
	for (i = 0; i < 4; i++) {
		memset(&kp, 0, sizeof(kp));
		if (i == 0)
			kp.flags = 1;
		else if (i == 1)
			kp.pad = 1;
		else
			kp.reserved[i - 2] = 1;
		EXPECT_EQ(-EINVAL, xioctl(s, CTXVM_ADD_KERNEL_PROC, &kp));
	}
	for (i = 0; i < CTXVM_MAX_KERNEL_PROCS; i++) {
		memset(&kp, 0, sizeof(kp));
		kp.digest[0] = i;
		ASSERT_EQ(0, xioctl(s, CTXVM_ADD_KERNEL_PROC, &kp));
	}
	EXPECT_EQ(-ENOSPC, xioctl(s, CTXVM_ADD_KERNEL_PROC, &kp));
	ASSERT_EQ(0, start(s, &ep));
	EXPECT_EQ(-EBUSY, xioctl(s, CTXVM_ADD_KERNEL_PROC, &kp));
	close(s);
	close(dev);
}

TEST(start_reserved_and_twice)
{
	struct ctxvm_start st;
	__u64 ep;
	int dev, s, i;

	NEED_DEV(dev);
	s = new_session(dev);
	ASSERT_LE(0, s);
	for (i = 0; i < 3 + (int)(sizeof(st.reserved) / sizeof(st.reserved[0])); i++) {
		memset(&st, 0, sizeof(st));
		st.gas = 10;
		if (i == 0)
			st.flags = 1;
		else if (i == 1)
			st.pad = 1;
		else if (i == 2)
			st.endpoint = 1;
		else
			st.reserved[i - 3] = 1;
		EXPECT_EQ(-EINVAL, xioctl(s, CTXVM_START, &st));
	}
	ASSERT_EQ(0, start(s, &ep));
	EXPECT_NE(0ULL, ep);
	EXPECT_EQ(-EBUSY, start(s, &ep));
	close(s);
	close(dev);
}

TEST(context_fd_reserved_unknown_and_twice)
{
	struct ctxvm_context_fd cf;
	__u64 ep;
	int dev, s, fd, i;

	NEED_DEV(dev);
	s = new_session(dev);
	ASSERT_LE(0, s);
	ASSERT_EQ(0, start(s, &ep));
	for (i = 0; i < 4; i++) {
		memset(&cf, 0, sizeof(cf));
		cf.endpoint = ep;
		if (i == 0)
			cf.flags = O_CLOEXEC;
		else if (i == 1)
			cf.pad = 1;
		else
			cf.reserved[i - 2] = 1;
		EXPECT_EQ(-EINVAL, xioctl(s, CTXVM_CONTEXT_FD, &cf));
	}
	EXPECT_EQ(-ENOENT, ctx_fd(s, ep + 1000));
	EXPECT_EQ(-ENOENT, ctx_fd(s, 0));
	fd = ctx_fd(s, ep);
	ASSERT_LE(0, fd);
	EXPECT_EQ(-EBUSY, ctx_fd(s, ep));
	close(fd);
	close(s);
	close(dev);
}

TEST(message_reserved_type_and_bind_arg)
{
	static const unsigned long cmds[] = {
		CTXVM_CTX_CALL, CTXVM_CTX_RETURN, CTXVM_CTX_FAIL, CTXVM_CTX_CALLER,
		CTXVM_CTX_FINISH,
	};
	static const __u64 types[] = {
		CTXVM_MSG_CALL, CTXVM_MSG_RETURN, CTXVM_MSG_FAIL, CTXVM_MSG_CALLER,
		CTXVM_MSG_FINISH,
	};
	struct ctxvm_msg m;
	int dev, s, fd, i, k;
	__u64 ep;

	NEED_DEV(dev);
	s = new_session(dev);
	ASSERT_LE(0, s);
	ASSERT_EQ(0, start(s, &ep));
	fd = ctx_fd(s, ep);
	ASSERT_LE(0, fd);
	EXPECT_EQ(-EINVAL, xioctl(fd, CTXVM_CTX_BIND, (void *)1));
	ASSERT_EQ(0, xioctl(fd, CTXVM_CTX_BIND, NULL));
	EXPECT_EQ(-EBUSY, xioctl(fd, CTXVM_CTX_BIND, NULL));
	ASSERT_EQ(0, ctx_wait(fd, &m));
	for (i = 0; i < 5; i++) {
		for (k = 0; k < 4; k++) {
			memset(&m, 0, sizeof(m));
			m.type = types[i];
			m.kind = CTXVM_FRAME_CALL;
			m.reserved[k] = 1;
			EXPECT_EQ(-EINVAL, xioctl(fd, cmds[i], &m));
		}
		memset(&m, 0, sizeof(m));
		m.type = types[(i + 1) % 5];
		m.kind = CTXVM_FRAME_CALL;
		EXPECT_EQ(-EINVAL, xioctl(fd, cmds[i], &m));
		m.type = 0;
		EXPECT_EQ(-EINVAL, xioctl(fd, cmds[i], &m));
	}
	/* nothing above changed the run: root can still finish */
	EXPECT_EQ(0, ctx_finish(fd, 0));
	close(fd);
	close(s);
	close(dev);
}

TEST(event_nonblocking_and_poll)
{
	struct ctxvm_event ev;
	int dev, s;

	NEED_DEV(dev);
	s = new_session(dev);
	ASSERT_LE(0, s);
	ASSERT_EQ(0, fcntl(s, F_SETFL, O_NONBLOCK));
	EXPECT_EQ(-EAGAIN, xioctl(s, CTXVM_EVENT, &ev));
	close(s);
	close(dev);
}

/* ---- module parameters bound sessions, contexts and depth ---- */

static int param_get(const char *name)
{
	char path[128], buf[32];
	int fd, n;

	snprintf(path, sizeof(path), PARAMS "%s", name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	return atoi(buf);
}

static int param_set(const char *name, int v)
{
	char path[128], buf[32];
	int fd, n, ok;

	snprintf(path, sizeof(path), PARAMS "%s", name);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = snprintf(buf, sizeof(buf), "%d", v);
	ok = write(fd, buf, n) == n;
	close(fd);
	return ok ? 0 : -1;
}

TEST(max_sessions_parameter)
{
	int dev, old, a, b;

	NEED_DEV(dev);
	old = param_get("max_sessions");
	ASSERT_LT(0, old);
	ASSERT_EQ(0, param_set("max_sessions", 1));
	a = ioctl(dev, CTXVM_CREATE_SESSION, 0);
	b = ioctl(dev, CTXVM_CREATE_SESSION, 0);
	EXPECT_LE(0, a);
	EXPECT_EQ(-1, b);
	EXPECT_EQ(EMFILE, errno);
	close(a);
	b = ioctl(dev, CTXVM_CREATE_SESSION, 0);
	EXPECT_LE(0, b);
	close(b);
	ASSERT_EQ(0, param_set("max_sessions", old));
	close(dev);
}

static void lim_q(int fd, const struct ctxvm_msg *run)
{
	struct ctxvm_msg m;

	(void)run;
	CHECK(ctx_call(fd, CTXVM_FRAME_CALL, D_U, 100, 0, 0, &m) == -ELOOP);
	CHECK(ctx_return(fd, 1, 1) == 0);
}

static void lim_p(int fd, const struct ctxvm_msg *run)
{
	struct ctxvm_msg m;

	(void)run;
	CHECK(ctx_call(fd, CTXVM_FRAME_CALL, D_Q, 1000, 0, 0, &m) == 0);
	CHECK(m.type == CTXVM_MSG_RESULT);
	CHECK(ctx_return(fd, 1, 1) == 0);
}

static void lim_p_contexts(int fd, const struct ctxvm_msg *run)
{
	struct ctxvm_msg m;

	(void)run;
	CHECK(ctx_call(fd, CTXVM_FRAME_CALL, D_Q, 1000, 0, 0, &m) == -EMFILE);
	CHECK(ctx_return(fd, 1, 1) == 0);
}

static void lim_root(int fd, const struct ctxvm_msg *run)
{
	struct ctxvm_msg m;

	(void)run;
	CHECK(ctx_call(fd, CTXVM_FRAME_CALL, D_P, 10000, 0, 0, &m) == 0);
	CHECK(m.type == CTXVM_MSG_RESULT);
	CHECK(ctx_finish(fd, 1) == 0);
}

static void limit_run(struct __test_metadata *_metadata, const char *param, int value,
		      ctx_fn p)
{
	const struct role roles[] = { { D_P, p }, { D_Q, lim_q } };
	int dev, s, old;
	struct runner r;

	NEED_DEV(dev);
	old = param_get(param);
	ASSERT_LT(0, old);
	ASSERT_EQ(0, param_set(param, value));
	s = new_session(dev);
	ASSERT_EQ(0, param_set(param, old));    /* read at session creation */
	ASSERT_LE(0, s);
	runner_init(&r, s, roles, 2, lim_root);
	ASSERT_EQ(0, serve(&r, 0));
	EXPECT_EQ((__u32)CTXVM_EVENT_FINISH, r.last.type);
	EXPECT_EQ(0, reap(&r));
	close(s);
	close(dev);
}

TEST(max_depth_parameter)
{
	limit_run(_metadata, "max_depth", 3, lim_p);
}

TEST(max_contexts_parameter)
{
	limit_run(_metadata, "max_contexts", 2, lim_p_contexts);
}

/* ---- START's depth limit (the runner's --max-depth) ---- */

TEST(start_depth_limit)
{
	static const struct role roles[] = { { D_P, lim_p }, { D_Q, lim_q } };
	struct runner r;
	int dev, s, cap;
	__u64 ep;

	NEED_DEV(dev);
	cap = ioctl(dev, CTXVM_CHECK_EXTENSION, CTXVM_CAP_MAX_DEPTH);
	ASSERT_LT(0, cap);
	s = new_session(dev);
	ASSERT_LE(0, s);
	EXPECT_EQ(-EINVAL, start_limited(s, &ep, (__u64)cap + 1));
	EXPECT_EQ(-EINVAL, start_limited(s, &ep, 1ULL << 32));
	/* root, P, Q: Q's call to U is one frame too deep */
	ASSERT_EQ(0, start_limited(s, &ep, 3));
	memset(&r, 0, sizeof(r));
	r.sess = s;
	r.roles = roles;
	r.nroles = 2;
	r.pids[r.npids++] = spawn(s, ep, lim_root);
	ASSERT_EQ(0, serve(&r, 0));
	EXPECT_EQ((__u32)CTXVM_EVENT_FINISH, r.last.type);
	EXPECT_EQ(0, reap(&r));
	close(s);
	close(dev);
}

/* ---- a runner that does not read its events holds the contexts back ---- */

#define BP_ROUNDS 40

static int bp_progress[2];

static void bp_root(int fd, const struct ctxvm_msg *run)
{
	struct ctxvm_msg m;

	(void)run;
	for (int i = 0; i < BP_ROUNDS; i++) {
		CHECK(ctx_call(fd, CTXVM_FRAME_SYSCALL, D_K1, 100, 0, ROOT_FMP, &m) == 0);
		CHECK(m.type == CTXVM_MSG_RUN);
		CHECK(ctx_return(fd, 1, 0) == 0);
		CHECK(ctx_wait(fd, &m) == 0 && m.type == CTXVM_MSG_RESULT);
		CHECK(write(bp_progress[1], "r", 1) == 1);
	}
	CHECK(ctx_finish(fd, 1) == 0);
}

TEST(event_queue_backpressure)
{
	struct runner r;
	int dev, s, old, rounds = 0, enters = 0, returns = 0;
	char buf[BP_ROUNDS];
	ssize_t n;

	NEED_DEV(dev);
	old = param_get("max_contexts");
	ASSERT_LT(0, old);
	ASSERT_EQ(0, param_set("max_contexts", 1));
	s = new_session(dev);
	ASSERT_EQ(0, param_set("max_contexts", old));
	ASSERT_LE(0, s);
	ASSERT_EQ(0, pipe2(bp_progress, O_NONBLOCK));
	runner_init(&r, s, NULL, 0, bp_root);
	ASSERT_LT(0, r.pids[0]);
	usleep(300 * 1000);
	while ((n = read(bp_progress[0], buf, sizeof(buf))) > 0)
		rounds += n;
	/* two events a round, and the queue holds far fewer than 2 * BP_ROUNDS */
	EXPECT_LT(0, rounds);
	EXPECT_GT(BP_ROUNDS, rounds);
	for (;;) {
		struct ctxvm_event ev;

		ASSERT_EQ(0, ioctl(s, CTXVM_EVENT, &ev));
		if (ev.type == CTXVM_EVENT_ENTER)
			enters++;
		else if (ev.type == CTXVM_EVENT_RETURN)
			returns++;
		else
			break;
		EXPECT_EQ(enters - returns + 1, (int)ev.depth);
	}
	EXPECT_EQ(BP_ROUNDS, enters);
	EXPECT_EQ(BP_ROUNDS, returns);
	EXPECT_EQ(0, reap(&r));
	close(bp_progress[0]);
	close(bp_progress[1]);
	close(s);
	close(dev);
}

/* Last: everything the suite made is gone. */
TEST(zz_allocation_counter_back_to_zero)
{
	int dev;

	NEED_DEV(dev);
	EXPECT_EQ(0, ioctl(dev, CTXVM_CHECK_EXTENSION, CTXVM_CAP_LIVE_SESSIONS));
	EXPECT_EQ(0, ioctl(dev, CTXVM_CHECK_EXTENSION, CTXVM_CAP_LIVE_ALLOCS));
	close(dev);
}

TEST_HARNESS_MAIN
