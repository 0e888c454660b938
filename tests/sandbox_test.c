// SPDX-License-Identifier: MIT
/*
 * Attacks on a locked-down context process (userspace/sandbox.c): every
 * forbidden syscall is stopped and named, limits fire, nothing but the
 * endpoint is left open, and the child dies with its parent.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sched.h>
#include <sys/capability.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ctxvm_uapi.h"
#include "sandbox.h"
#include "kselftest_harness.h"

struct child_result {
	int status;             /* raw wait status */
	char syscall[64];       /* named by a violation report, else "" */
	char said[64];          /* anything else the child wrote */
	double wall_s;
};

typedef void (*child_fn)(void);

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void say(const char *s)
{
	ssize_t r = write(SANDBOX_ENDPOINT_FD, s, strlen(s));

	(void)r;
}

/* The filter run_locked loads: with the /dev/ctxvm context-fd ioctls, or for a socket. */
static bool kmod_filter;

/* Forks, locks the child down, runs fn in it, collects what happened. */
static int run_locked(child_fn fn, uint64_t cpu_ns, uint64_t as_bytes, struct child_result *res)
{
	struct sandbox_filter filter;
	char err[256];
	int sv[2];
	double t0 = now_s();
	pid_t pid;
	ssize_t n;
	char buf[256];

	memset(res, 0, sizeof(*res));
	if (sandbox_filter_build(&filter, kmod_filter, err, sizeof(err)) < 0)
		return -1;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return -1;
	pid = fork();
	if (pid == 0) {
		struct sandbox_limits lim = {
			.cpu_ns = cpu_ns, .as_bytes = as_bytes, .parent_pid = getppid(),
		};

		if (sandbox_enter(&filter, &lim, sv[1], err, sizeof(err)) < 0)
			_exit(100);
		fn();
		_exit(0);
	}
	close(sv[1]);
	sandbox_filter_free(&filter);
	while ((n = read(sv[0], buf, sizeof(buf))) > 0) {
		struct sandbox_violation v;

		if ((size_t)n == sizeof(v) && (memcpy(&v, buf, sizeof(v)), v.magic == SANDBOX_VIOLATION_MAGIC))
			snprintf(res->syscall, sizeof(res->syscall), "%s", sandbox_syscall_name(v.syscall_nr));
		else
			snprintf(res->said, sizeof(res->said), "%.*s", (int)n, buf);
	}
	close(sv[0]);
	waitpid(pid, &res->status, 0);
	res->wall_s = now_s() - t0;
	return 0;
}

#define EXPECT_VIOLATION(fn, name)                                            \
	do {                                                                  \
		struct child_result r;                                        \
		ASSERT_EQ(0, run_locked(fn, 1000000000ull, 0, &r));           \
		ASSERT_TRUE(WIFEXITED(r.status));                             \
		EXPECT_EQ(SANDBOX_EXIT_VIOLATION, WEXITSTATUS(r.status));     \
		EXPECT_STREQ(name, r.syscall);                                \
	} while (0)

static void do_openat(void) { syscall(SYS_openat, AT_FDCWD, "/etc/passwd", 0); say("opened"); }
static void do_socket(void) { syscall(SYS_socket, AF_INET, SOCK_STREAM, 0); say("socket"); }
static void do_fork(void) { syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0); say("forked"); }
static void do_vfork(void) { syscall(SYS_vfork); say("forked"); }
static void do_ptrace(void) { syscall(SYS_ptrace, 0, 0, 0, 0); say("traced"); }
static void do_kill(void) { syscall(SYS_kill, 1, 0); say("killed"); }
static void do_execve(void) { syscall(SYS_execve, "/bin/true", NULL, NULL); say("exec"); }
static void do_unknown(void) { syscall(999); say("999"); }
static void do_prctl(void) { syscall(SYS_prctl, PR_SET_SECCOMP, 0, 0, 0, 0); say("prctl"); }
static void do_setuid(void) { syscall(SYS_setuid, 0); say("setuid"); }

TEST(openat_is_a_named_violation) { EXPECT_VIOLATION(do_openat, "openat"); }
TEST(socket_is_a_named_violation) { EXPECT_VIOLATION(do_socket, "socket"); }
TEST(fork_is_a_named_violation) { EXPECT_VIOLATION(do_fork, "clone"); }
TEST(vfork_is_a_named_violation) { EXPECT_VIOLATION(do_vfork, "vfork"); }
TEST(ptrace_is_a_named_violation) { EXPECT_VIOLATION(do_ptrace, "ptrace"); }
TEST(kill_is_a_named_violation) { EXPECT_VIOLATION(do_kill, "kill"); }
TEST(execve_is_a_named_violation) { EXPECT_VIOLATION(do_execve, "execve"); }
TEST(prctl_is_a_named_violation) { EXPECT_VIOLATION(do_prctl, "prctl"); }
TEST(setuid_is_a_named_violation) { EXPECT_VIOLATION(do_setuid, "setuid"); }
TEST(unknown_syscall_is_a_violation) { EXPECT_VIOLATION(do_unknown, "syscall 999"); }

static void do_context_ioctl(void)
{
	struct ctxvm_msg m = { 0 };
	long r = syscall(SYS_ioctl, SANDBOX_ENDPOINT_FD, CTXVM_CTX_WAIT, &m);

	say(r < 0 && errno == ENOTTY ? "enotty" : "other");
}

/* A socket endpoint needs no ioctl: the user backend's filter has none. */
TEST(context_ioctl_on_a_socket_endpoint_is_a_violation)
{
	kmod_filter = false;
	EXPECT_VIOLATION(do_context_ioctl, "ioctl");
}

/* The kmod backend's filter lets it through (the socket here answers ENOTTY). */
TEST(context_ioctl_passes_the_kmod_filter)
{
	struct child_result r;

	kmod_filter = true;
	ASSERT_EQ(0, run_locked(do_context_ioctl, 1000000000ull, 0, &r));
	kmod_filter = false;
	EXPECT_TRUE(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0);
	EXPECT_STREQ("", r.syscall);
	EXPECT_STREQ("enotty", r.said);
}

/*
 * The fork server drops everything once; its children inherit it instead of
 * dropping it again (privileges_dropped).  Checked in such a child, as the
 * sandbox then leaves it.
 */
TEST(dropped_privileges_are_inherited)
{
	int p[2];
	char said[64] = "";
	pid_t mid;
	ssize_t n;

	ASSERT_EQ(0, pipe(p));
	mid = fork();
	if (mid == 0) {
		char err[256];
		pid_t child;

		close(p[0]);
		if (unshare(CLONE_NEWUSER) < 0 && errno != EPERM && errno != EINVAL)
			_exit(100);
		if (sandbox_drop_privileges(err, sizeof(err)) < 0)
			_exit(101);
		child = fork();
		if (child == 0) {
			struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
			struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3];
			const char *verdict = "none left";
			bool any = false;

			if (capget(&hdr, d) < 0)
				verdict = "capget failed";
			for (int i = 0; i < _LINUX_CAPABILITY_U32S_3; i++)
				any |= d[i].effective || d[i].permitted || d[i].inheritable;
			for (int cap = 0; cap <= CAP_LAST_CAP; cap++)
				any |= prctl(PR_CAPBSET_READ, cap, 0, 0, 0) > 0 ||
				       prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, cap, 0, 0) > 0;
			if (any)
				verdict = "capabilities left";
			else if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1)
				verdict = "no no_new_privs";
			(void)write(p[1], verdict, strlen(verdict));
			_exit(0);
		}
		waitpid(child, NULL, 0);
		_exit(0);
	}
	close(p[1]);
	n = read(p[0], said, sizeof(said) - 1);
	close(p[0]);
	waitpid(mid, NULL, 0);
	said[n > 0 ? n : 0] = '\0';
	EXPECT_STREQ("none left", said);
}

static void do_clone3(void)
{
	long r = syscall(SYS_clone3, NULL, 0);

	say(r < 0 && errno == ENOSYS ? "enosys" : "other");
}

TEST(clone3_answers_enosys_for_glibc)
{
	struct child_result r;

	ASSERT_EQ(0, run_locked(do_clone3, 1000000000ull, 0, &r));
	EXPECT_TRUE(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0);
	EXPECT_STREQ("enosys", r.said);
}

static void do_honest_work(void)
{
	char *p = malloc(8 << 20);

	if (!p) {
		say("no memory");
		return;
	}
	memset(p, 1, 8 << 20);
	free(p);
	say("worked");
}

TEST(honest_work_is_allowed)
{
	struct child_result r;

	ASSERT_EQ(0, run_locked(do_honest_work, 1000000000ull, 256ull << 20, &r));
	ASSERT_TRUE(WIFEXITED(r.status));
	EXPECT_EQ(0, WEXITSTATUS(r.status));
	EXPECT_STREQ("worked", r.said);
	EXPECT_STREQ("", r.syscall);
}

static void do_hog_memory(void)
{
	size_t total = 0;

	for (;;) {
		char *p = malloc(1 << 20);

		if (!p)
			break;
		memset(p, 1, 1 << 20);
		total += 1 << 20;
	}
	say(total < (96u << 20) ? "capped" : "uncapped");
}

TEST(address_space_limit_fires)
{
	struct child_result r;

	ASSERT_EQ(0, run_locked(do_hog_memory, 5000000000ull, 64ull << 20, &r));
	ASSERT_TRUE(WIFEXITED(r.status));
	EXPECT_STREQ("capped", r.said);
}

static void do_spin(void)
{
	for (volatile unsigned long i = 0;; i++)
		;
}

TEST(cpu_budget_kills_an_endless_loop)
{
	struct child_result r;

	ASSERT_EQ(0, run_locked(do_spin, 50000000ull, 0, &r));
	ASSERT_TRUE(WIFSIGNALED(r.status));
	EXPECT_EQ(SIGKILL, WTERMSIG(r.status));
	EXPECT_LT(r.wall_s, 2.0);
}

static void do_probe_fds(void)
{
	char b;
	int open_fds = 0;

	for (int fd = 0; fd < 64; fd++)
		if (fd != SANDBOX_ENDPOINT_FD && (read(fd, &b, 0) >= 0 || errno != EBADF))
			open_fds++;
	say(open_fds ? "leaked" : "closed");
}

TEST(only_the_endpoint_stays_open)
{
	struct child_result r;
	int extra = dup(2);     /* an fd the parent has that the child must not */

	ASSERT_GE(extra, 0);
	ASSERT_EQ(0, run_locked(do_probe_fds, 1000000000ull, 0, &r));
	close(extra);
	EXPECT_STREQ("closed", r.said);
}

TEST(child_dies_with_its_parent)
{
	struct sandbox_filter filter;
	char err[256], b;
	int sv[2], hold[2];
	pid_t mid, grandchild;
	bool alive;
	struct pollfd pfd;

	ASSERT_EQ(0, sandbox_filter_build(&filter, false, err, sizeof(err)));
	ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv));
	ASSERT_EQ(0, pipe(hold));
	mid = fork();
	if (mid == 0) {
		pid_t me = getpid();

		if (fork() == 0) {
			struct sandbox_limits lim = { .cpu_ns = 10000000000ull, .parent_pid = me };
			pid_t self_pid = getpid();      /* getpid is not allowed once locked */

			close(sv[0]);
			if (sandbox_enter(&filter, &lim, sv[1], err, sizeof(err)) < 0)
				_exit(100);
			/* Its pid, so the test can clean up if it outlives its parent. */
			(void)write(SANDBOX_ENDPOINT_FD, &self_pid, sizeof(self_pid));
			while (read(SANDBOX_ENDPOINT_FD, &b, 1) != 0)
				;
			_exit(0);
		}
		close(hold[1]);
		(void)read(hold[0], &b, 1);     /* until the test lets go */
		_exit(0);                       /* orphan the locked-down grandchild */
	}
	close(sv[1]);
	close(hold[0]);
	pfd = (struct pollfd){ .fd = sv[0], .events = POLLIN };
	ASSERT_EQ(1, poll(&pfd, 1, 2000));
	ASSERT_EQ((ssize_t)sizeof(pid_t), read(sv[0], &grandchild, sizeof(grandchild)));
	/* The parent goes; the grandchild must follow: EOF on its endpoint. */
	close(hold[1]);
	waitpid(mid, NULL, 0);
	alive = !(poll(&pfd, 1, 2000) == 1 && read(sv[0], err, sizeof(err)) == 0);
	if (alive)
		kill(grandchild, SIGKILL);
	EXPECT_FALSE(alive);
	close(sv[0]);
	sandbox_filter_free(&filter);
}

TEST(cpu_budget_formula_is_monotonic_and_saturates)
{
	EXPECT_EQ(100000000ull, sandbox_cpu_budget_ns(0));
	EXPECT_LT(sandbox_cpu_budget_ns(1000), sandbox_cpu_budget_ns(2000));
	EXPECT_EQ(UINT64_MAX, sandbox_cpu_budget_ns(UINT64_MAX));
}

TEST_HARNESS_MAIN
