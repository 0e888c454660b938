// SPDX-License-Identifier: MIT
/*
 * Fork server; see forkserver.h.  Requests are fixed-size packets on a
 * SOCK_SEQPACKET pair; a spawn carries the endpoint with SCM_RIGHTS.
 */
#include <errno.h>
#include <malloc.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ctxproc.h"
#include "forkserver.h"
#include "sandbox.h"

#define AS_MARGIN (64ull << 20)         /* interpreter, stacks, libc */
#define SETUP_FAILED_EXIT 120

enum { FS_SPAWN = 1, FS_REAP = 2 };

struct fs_request {
	uint64_t op;
	uint64_t pid;
	uint64_t gas;
};

struct fs_reply {
	int64_t value;          /* pid (-errno if fork failed), or wait status */
	uint64_t cpu_ns;
};

static uint64_t vm_size_bytes(void)
{
	unsigned long pages = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	if (f) {
		if (fscanf(f, "%lu", &pages) != 1)
			pages = 0;
		fclose(f);
	}
	return (uint64_t)pages * (uint64_t)sysconf(_SC_PAGESIZE);
}

static int recv_request(int ctrl, struct fs_request *req, int *fd)
{
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { req, sizeof(*req) };
	struct msghdr mh = {
		.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf),
	};
	struct cmsghdr *c;
	ssize_t n;

	*fd = -1;
	n = recvmsg(ctrl, &mh, MSG_CMSG_CLOEXEC);
	if (n != (ssize_t)sizeof(*req))
		return -1;
	for (c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
			memcpy(fd, CMSG_DATA(c), sizeof(int));
	return 0;
}

static void serve(int ctrl, const struct ctx_program *prog, const struct run_options *opts,
		  bool kmod_endpoint)
{
	struct run_options child_opts = *opts;
	struct sandbox_filter filter;
	uint64_t as_base;
	char err[256];
	pid_t self = getpid();

	child_opts.trace = false;       /* the broker traces */
	child_opts.kmod_endpoint = kmod_endpoint;
	/* The root's inputs are its own: no other context may find them in its copy. */
	memset(child_opts.inputs, 0, sizeof(child_opts.inputs));
	memset((void *)opts->inputs, 0, sizeof(opts->inputs));
	if (sandbox_filter_build(&filter, err, sizeof(err)) < 0) {
		fprintf(stderr, "ctxvm: fork server: %s\n", err);
		_exit(SETUP_FAILED_EXIT);
	}
	/*
	 * A fresh, unmapped user namespace for this run, entered here once
	 * rather than per context: entering one refills the bounding set, and
	 * emptying it costs ~70 us (41 credential swaps).  Every context
	 * inherits both the namespace and the empty bounding set.
	 */
	(void)unshare(CLONE_NEWUSER);
	if (sandbox_drop_bounding_set(err, sizeof(err)) < 0) {
		fprintf(stderr, "ctxvm: fork server: %s\n", err);
		_exit(SETUP_FAILED_EXIT);
	}
	/*
	 * Merge the free chunks now, once: otherwise every child's first
	 * malloc consolidates them itself, writing (and copying) heap pages.
	 */
	malloc_trim(0);
	as_base = vm_size_bytes();
	for (;;) {
		struct fs_request req = { 0 };
		struct fs_reply rep = { -1, 0 };
		int fd;

		if (recv_request(ctrl, &req, &fd) < 0)
			_exit(0);       /* the runner is gone or done */
		if (req.op == FS_SPAWN && fd >= 0) {
			pid_t pid = fork();

			if (pid == 0) {
				struct sandbox_limits lim = {
					.cpu_ns = sandbox_cpu_budget_ns(req.gas),
					.as_bytes = as_base + opts->mem_limit + opts->mem_limit / 4 + AS_MARGIN,
					.parent_pid = self,
					.namespaces = false,    /* the fork server's, above */
					.kmod_endpoint = kmod_endpoint,
				};

#ifdef CTXVM_TESTING
				if (ctx_test.scan_secret_masked)
					ctxproc_scan_prepare();
#endif
				if (sandbox_enter(&filter, &lim, fd, err, sizeof(err)) < 0) {
					fprintf(stderr, "ctxvm: sandbox: %s\n", err);
					_exit(SETUP_FAILED_EXIT);
				}
				ctxproc_main(prog, &child_opts, SANDBOX_ENDPOINT_FD);
			}
			rep.value = pid < 0 ? -errno : pid;   /* the cause, for the runner */
		} else if (req.op == FS_REAP) {
			struct rusage ru;
			int status = 0;

			kill((pid_t)req.pid, SIGKILL);
			if (wait4((pid_t)req.pid, &status, 0, &ru) == (pid_t)req.pid) {
				rep.value = status;
				rep.cpu_ns = (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000ull +
					     (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000ull;
			}
		}
		if (fd >= 0)
			close(fd);
		if (write(ctrl, &rep, sizeof(rep)) != (ssize_t)sizeof(rep))
			_exit(0);
	}
}

int forkserver_start(struct forkserver *fs, const struct ctx_program *prog,
		     const struct run_options *opts, char *err, size_t errlen)
{
	int sv[2];
	pid_t parent = getpid();

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		snprintf(err, errlen, "socketpair: %s", strerror(errno));
		return -1;
	}
	fs->pid = fork();
	if (fs->pid < 0) {
		snprintf(err, errlen, "fork: %s", strerror(errno));
		close(sv[0]);
		close(sv[1]);
		return -1;
	}
	if (fs->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(0);
		close(sv[0]);
		/* Keep only the control socket and stderr (for set-up failures). */
		for (int fd = 3; fd < 1024; fd++)
			if (fd != sv[1])
				close(fd);
		serve(sv[1], prog, opts, fs->kmod_endpoint);
	}
	close(sv[1]);
	fs->ctrl = sv[0];
	return 0;
}

static int transact(struct forkserver *fs, const struct fs_request *req, int fd,
		    struct fs_reply *rep)
{
	char cbuf[CMSG_SPACE(sizeof(int))] = { 0 };
	struct iovec iov = { (void *)req, sizeof(*req) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (fd >= 0) {
		struct cmsghdr *c;

		mh.msg_control = cbuf;
		mh.msg_controllen = sizeof(cbuf);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	if (sendmsg(fs->ctrl, &mh, MSG_NOSIGNAL) != (ssize_t)sizeof(*req))
		return -1;
	return read(fs->ctrl, rep, sizeof(*rep)) == (ssize_t)sizeof(*rep) ? 0 : -1;
}

pid_t forkserver_spawn(struct forkserver *fs, int endpoint, uint64_t gas_limit)
{
	struct fs_request req = { FS_SPAWN, 0, gas_limit };
	struct fs_reply rep;

	if (transact(fs, &req, endpoint, &rep) < 0)
		return -1;
	if (rep.value < 0) {
		errno = (int)-rep.value;
		return -1;
	}
	return (pid_t)rep.value;
}

int forkserver_reap(struct forkserver *fs, pid_t pid, struct reaped *out)
{
	struct fs_request req = { FS_REAP, (uint64_t)pid, 0 };
	struct fs_reply rep;

	if (transact(fs, &req, -1, &rep) < 0 || rep.value < 0)
		return -1;
	out->status = (int)rep.value;
	out->cpu_ns = rep.cpu_ns;
	return 0;
}

void forkserver_stop(struct forkserver *fs)
{
	if (fs->ctrl >= 0)
		close(fs->ctrl);
	fs->ctrl = -1;
	if (fs->pid > 0) {
		kill(fs->pid, SIGKILL);
		waitpid(fs->pid, NULL, 0);
	}
	fs->pid = 0;
}
