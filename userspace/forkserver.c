// SPDX-License-Identifier: MIT
/*
 * Fork server; see forkserver.h.  Requests are fixed-size packets on a
 * SOCK_SEQPACKET pair; a spawn carries the endpoint with SCM_RIGHTS.  The
 * server handles one request at a time, in order; each request first reaps
 * the processes the runner released (and SIGKILLed) since the last one.
 */
#include <errno.h>
#include <malloc.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ctxproc.h"
#include "forkserver.h"
#include "sandbox.h"

#define AS_MARGIN (64ull << 20)         /* interpreter, stacks, libc */
#define SETUP_FAILED_EXIT 120

enum {
	FS_SPAWN = 1, FS_REAP = 2, FS_SPAWN_ASYNC = 3, FS_REAP_DEAD = 4,
	FS_SPAWN_POOLED = 5,    /* the server makes the endpoint; ours comes on the note */
	FS_RELEASE = 6,         /* end this process, close its endpoint (ours, passed back) */
};

/* One packet, with `fd` (if >= 0) passed along as SCM_RIGHTS. */
static ssize_t send_with_fd(int sock, const void *buf, size_t len, int fd)
{
	char cbuf[CMSG_SPACE(sizeof(int))] = { 0 };
	struct iovec iov = { (void *)buf, len };
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
	return sendmsg(sock, &mh, MSG_NOSIGNAL);
}

/* One packet of exactly `len` bytes, and the fd passed with it (else -1): 0, or -1. */
static int recv_with_fd(int sock, void *buf, size_t len, int flags, int *fd)
{
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { buf, len };
	struct msghdr mh = {
		.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf),
	};
	struct cmsghdr *c;
	ssize_t n;

	*fd = -1;
	do
		n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | flags);
	while (n < 0 && errno == EINTR);
	for (c = CMSG_FIRSTHDR(&mh); n > 0 && c; c = CMSG_NXTHDR(&mh, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
			memcpy(fd, CMSG_DATA(c), sizeof(int));
	if (n == (ssize_t)len)
		return 0;
	if (n >= 0)
		errno = n ? EPROTO : ECONNRESET;        /* not a stale EAGAIN */
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
	return -1;
}

struct fs_request {
	uint64_t op;
	uint64_t pid;
	uint64_t gas;
	uint64_t tag;
	uint64_t ndead;                 /* released processes to reap first */
	uint64_t dead[FS_DEAD_BATCH];
};

struct fs_reply {
	int64_t value;          /* pid (-errno if fork failed), or wait status */
	uint64_t cpu_ns;
};

/* The server's unreaped children: what it must kill and reap when it stops. */
struct children {
	pid_t *pid;
	size_t n, cap;
};

static bool children_add(struct children *c, pid_t pid)
{
	if (c->n == c->cap) {
		size_t cap = c->cap ? 2 * c->cap : 1024;
		pid_t *p = mmap(NULL, cap * sizeof(*p), PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (p == MAP_FAILED)
			return false;
		/*
		 * No child needs the list: written after every fork, a page
		 * shared with the child would be copied each time (~5 us).
		 */
		(void)madvise(p, cap * sizeof(*p), MADV_DONTFORK);
		if (c->n)
			memcpy(p, c->pid, c->n * sizeof(*p));
		if (c->pid)
			munmap(c->pid, c->cap * sizeof(*p));
		c->pid = p;
		c->cap = cap;
	}
	c->pid[c->n++] = pid;
	return true;
}

static bool children_has(const struct children *c, pid_t pid)
{
	for (size_t i = c->n; i-- > 0;)
		if (c->pid[i] == pid)
			return true;
	return false;
}

/* Only a pid the server forked and has not reaped may be signalled: no other process. */
static bool children_remove(struct children *c, pid_t pid)
{
	for (size_t i = c->n; i-- > 0;)
		if (c->pid[i] == pid) {
			c->pid[i] = c->pid[--c->n];
			return true;
		}
	return false;
}

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
	return recv_with_fd(ctrl, req, sizeof(*req), 0, fd);
}

static int64_t kill_and_wait(struct children *c, pid_t pid, uint64_t *cpu_ns)
{
	struct rusage ru;
	int status = 0;

	if (!children_remove(c, pid))
		return -1;
	kill(pid, SIGKILL);
	while (wait4(pid, &status, 0, &ru) < 0)
		if (errno != EINTR)
			return -1;
	*cpu_ns = (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000ull +
		  (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000ull;
	return status;
}

/* The runner is done or gone: nothing of ours may outlive it. */
static void __attribute__((noreturn)) stop_all(struct children *c)
{
	for (size_t i = 0; i < c->n; i++)
		kill(c->pid[i], SIGKILL);
	for (size_t i = 0; i < c->n; i++)
		while (waitpid(c->pid[i], NULL, 0) < 0 && errno == EINTR)
			;
	_exit(0);
}

static void set_cpu(pid_t pid, int cpu)
{
	cpu_set_t one;

	CPU_ZERO(&one);
	CPU_SET(cpu, &one);
	(void)sched_setaffinity(pid, sizeof(one), &one);       /* only speed depends on it */
}

/* What the server forks every context with. */
struct server {
	int ctrl, note;
	const struct ctx_program *prog;
	struct run_options child_opts;
	struct sandbox_filter filter;
	struct children kids;
	uint64_t as_base;
	uint64_t mem_limit;
	pid_t self;
	bool kmod_endpoint;
	int session_cpu;        /* -1: the server shares the session's CPU */
	int server_cpu;
};

/* A locked-down context process on `endpoint`: its pid, or -errno. */
static int64_t spawn(struct server *sv, int endpoint, uint64_t gas, bool pooled)
{
	pid_t pid = fork();
	char err[256];

	if (pid == 0) {
		struct sandbox_limits lim = {
			.cpu_ns = sandbox_cpu_budget_ns(gas),
			.as_bytes = sv->as_base + sv->mem_limit + sv->mem_limit / 4 + AS_MARGIN,
			.parent_pid = sv->self,
			.namespaces = false,    /* the fork server's, above */
			.kmod_endpoint = sv->kmod_endpoint,
			.privileges_dropped = true,
		};

#ifdef CTXVM_TESTING
		if (ctx_test.scan_secret_masked)
			ctxproc_scan_prepare();
#endif
		if (sandbox_enter(&sv->filter, &lim, endpoint, err, sizeof(err)) < 0) {
			fprintf(stderr, "ctxvm: sandbox: %s\n", err);
			_exit(SETUP_FAILED_EXIT);
		}
#ifdef CTXVM_TESTING
		if (ctx_test.context_main) {
			ctx_test.context_main(SANDBOX_ENDPOINT_FD, sv->kmod_endpoint);
			_exit(0);
		}
#endif
		ctxproc_main(sv->prog, &sv->child_opts, SANDBOX_ENDPOINT_FD,
			     (pooled ? CTXPROC_WARM_UP : 0) |
			     (sv->session_cpu >= 0 ? CTXPROC_LINGER : 0));
	}
	if (pid < 0)
		return -errno;  /* the cause, for the runner */
	if (!pooled && sv->session_cpu >= 0)
		set_cpu(pid, sv->session_cpu);
	if (!children_add(&sv->kids, pid)) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		return -ENOMEM;
	}
	return pid;
}

/* A pid (or -errno) for the runner's `tag`, with the runner's end of a new endpoint. */
static void send_note(struct server *sv, uint64_t tag, int64_t value, int fd)
{
	struct fs_spawned sp = { tag, value };

	if (send_with_fd(sv->note, &sp, sizeof(sp), fd) != (ssize_t)sizeof(sp))
		stop_all(&sv->kids);
}

/*
 * A pooled process on an endpoint made here, so the runner's CPU spends
 * nothing on it: the runner's end goes back with the pid on the note.
 */
static void spawn_pooled(struct server *sv, uint64_t tag, uint64_t gas)
{
	int pair[2];
	int64_t pid;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0) {
		send_note(sv, tag, -errno, -1);
		return;
	}
	pid = spawn(sv, pair[1], gas, true);
	close(pair[1]);
	send_note(sv, tag, pid, pid > 0 ? pair[0] : -1);
	close(pair[0]);
}

static void serve(int ctrl, int note, const struct ctx_program *prog,
		  const struct run_options *opts, bool kmod_endpoint, int session_cpu, int server_cpu)
{
	char err[256];
	struct server sv = {
		.ctrl = ctrl, .note = note, .prog = prog, .child_opts = *opts,
		.mem_limit = opts->mem_limit, .self = getpid(), .kmod_endpoint = kmod_endpoint,
		.session_cpu = session_cpu, .server_cpu = server_cpu,
	};
	sv.child_opts.trace = false;    /* the broker traces */
	sv.child_opts.kmod_endpoint = kmod_endpoint;
	/* The root's inputs are its own: no other context may find them in its copy. */
	memset(sv.child_opts.inputs, 0, sizeof(sv.child_opts.inputs));
	memset((void *)opts->inputs, 0, sizeof(opts->inputs));
	if (sandbox_filter_build(&sv.filter, kmod_endpoint, err, sizeof(err)) < 0) {
		fprintf(stderr, "ctxvm: fork server: %s\n", err);
		_exit(SETUP_FAILED_EXIT);
	}
	/*
	 * A fresh, unmapped user namespace for this run, entered here once
	 * rather than per context: entering one refills the bounding set, and
	 * emptying it costs ~70 us (41 credential swaps).  Every context
	 * inherits the namespace, and with it everything dropped next.
	 */
	(void)unshare(CLONE_NEWUSER);
	if (sandbox_drop_privileges(err, sizeof(err)) < 0) {
		fprintf(stderr, "ctxvm: fork server: %s\n", err);
		_exit(SETUP_FAILED_EXIT);
	}
	/*
	 * Merge the free chunks now, once: otherwise every child's first
	 * malloc consolidates them itself, writing (and copying) heap pages.
	 */
	malloc_trim(0);
	/*
	 * Then sort what is left into bins here (a request that no bin fits
	 * walks the unsorted list once, writing every free chunk: ~10 copied
	 * pages in every child otherwise), and grow the heap by exactly what
	 * is asked from now on: calloc clears fresh brk memory only as far as
	 * the old top reached, so a child's first big callocs (its memory map,
	 * its stack) touch only the pages it uses, not ~15 more.
	 */
	{
		void *volatile sort = malloc(1 << 20);  /* volatile: gcc drops free(malloc()) */

		free(sort);
	}
	mallopt(M_TOP_PAD, 0);
	/*
	 * Inherited by every context: one whose broker is gone gets EPIPE from
	 * its next write, which the client API reports as -ESHUTDOWN, rather
	 * than dying of a signal it cannot handle.
	 */
	signal(SIGPIPE, SIG_IGN);
	sv.as_base = vm_size_bytes();
	for (;;) {
		struct fs_request req = { 0 };
		struct fs_reply rep = { -1, 0 };
		uint64_t ignored;
		int fd;

		if (recv_request(ctrl, &req, &fd) < 0)
			stop_all(&sv.kids);     /* the runner is gone or done */
		/* Already SIGKILLed by the runner; here they stop being zombies. */
		for (uint64_t i = 0; i < req.ndead && i < FS_DEAD_BATCH; i++)
			kill_and_wait(&sv.kids, (pid_t)req.dead[i], &ignored);
		switch (req.op) {
		case FS_SPAWN:
		case FS_SPAWN_ASYNC:
			rep.value = fd >= 0 ? spawn(&sv, fd, req.gas, false) : -EBADF;
			break;
		case FS_SPAWN_POOLED:
			spawn_pooled(&sv, req.tag, req.gas);
			break;
		case FS_REAP:
			rep.value = kill_and_wait(&sv.kids, (pid_t)req.pid, &rep.cpu_ns);
			break;
		case FS_RELEASE:
			/* Its exit, here on the server's CPU; then the endpoint, whose peer is gone. */
			if (sv.session_cpu >= 0 && children_has(&sv.kids, (pid_t)req.pid))
				set_cpu((pid_t)req.pid, sv.server_cpu);
			kill_and_wait(&sv.kids, (pid_t)req.pid, &ignored);
			if (req.tag)    /* and a pooled replacement */
				spawn_pooled(&sv, req.tag, req.gas);
			break;
		}
		if (fd >= 0)
			close(fd);
		if (req.op == FS_SPAWN_ASYNC)
			send_note(&sv, req.tag, rep.value, -1);
		else if ((req.op == FS_SPAWN || req.op == FS_REAP) &&
			 send(ctrl, &rep, sizeof(rep), MSG_NOSIGNAL) != (ssize_t)sizeof(rep))
			stop_all(&sv.kids);
	}
}

/* Every fd from 3 on is closed but `keep` and `keep2`. */
static void close_all_but(int keep, int keep2)
{
	int lo = keep < keep2 ? keep : keep2, hi = keep < keep2 ? keep2 : keep;

	if (lo > 3)
		close_range(3, (unsigned)lo - 1, 0);
	if (hi > lo + 1)
		close_range((unsigned)lo + 1, (unsigned)hi - 1, 0);
	close_range((unsigned)hi + 1, ~0u, 0);
}

int forkserver_start(struct forkserver *fs, const struct ctx_program *prog,
		     const struct run_options *opts, char *err, size_t errlen)
{
	int sv[2], nv[2];
	pid_t parent = getpid();

	fs->ctrl = fs->note = -1;
	fs->ndead = 0;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		snprintf(err, errlen, "socketpair: %s", strerror(errno));
		return -1;
	}
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, nv) < 0) {
		snprintf(err, errlen, "socketpair: %s", strerror(errno));
		close(sv[0]);
		close(sv[1]);
		return -1;
	}
	fs->pinned = false;
	fs->cpu = fs->server_cpu = -1;
	if (fs->pin && sched_getaffinity(0, sizeof(fs->saved_affinity), &fs->saved_affinity) == 0) {
		int cpu = sched_getcpu();

		if (cpu >= 0 && CPU_ISSET(cpu, &fs->saved_affinity)) {
			fs->cpu = fs->server_cpu = cpu;
			for (int c = 0; fs->spare && c < CPU_SETSIZE; c++)
				if (c != cpu && CPU_ISSET(c, &fs->saved_affinity)) {
					fs->server_cpu = c;
					break;
				}
			/* The server inherits this while it forks; it moves itself below. */
			set_cpu(0, cpu);
			fs->pinned = true;
		}
	}
	fs->pid = fork();
	if (fs->pid < 0) {
		snprintf(err, errlen, "fork: %s", strerror(errno));
		close(sv[0]);
		close(sv[1]);
		close(nv[0]);
		close(nv[1]);
		forkserver_stop(fs);
		return -1;
	}
	if (fs->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(0);
		/* Keep only the two sockets and stderr (for set-up failures). */
		close_all_but(sv[1], nv[1]);
		if (fs->server_cpu != fs->cpu)
			set_cpu(0, fs->server_cpu);
		serve(sv[1], nv[1], prog, opts, fs->kmod_endpoint,
		      fs->server_cpu != fs->cpu ? fs->cpu : -1, fs->server_cpu);
	}
	close(sv[1]);
	close(nv[1]);
	fs->ctrl = sv[0];
	fs->note = nv[0];
	return 0;
}

/* Every request carries the released processes not yet reaped. */
static int send_request(struct forkserver *fs, struct fs_request *req, int fd)
{
	req->ndead = fs->ndead;
	for (unsigned i = 0; i < fs->ndead; i++)
		req->dead[i] = (uint64_t)fs->dead[i];
	if (send_with_fd(fs->ctrl, req, sizeof(*req), fd) != (ssize_t)sizeof(*req))
		return -1;
	fs->ndead = 0;
	return 0;
}

static int transact(struct forkserver *fs, struct fs_request *req, int fd,
		    struct fs_reply *rep)
{
	ssize_t n;

	if (send_request(fs, req, fd) < 0)
		return -1;
	do
		n = read(fs->ctrl, rep, sizeof(*rep));
	while (n < 0 && errno == EINTR);
	if (n >= 0 && n != (ssize_t)sizeof(*rep))
		errno = ECONNRESET;     /* the server died: say so, not a stale errno */
	return n == (ssize_t)sizeof(*rep) ? 0 : -1;
}

pid_t forkserver_spawn(struct forkserver *fs, int endpoint, uint64_t gas_limit)
{
	struct fs_request req = { .op = FS_SPAWN, .gas = gas_limit };
	struct fs_reply rep;

	if (transact(fs, &req, endpoint, &rep) < 0)
		return -1;
	if (rep.value < 0) {
		errno = (int)-rep.value;
		return -1;
	}
	return (pid_t)rep.value;
}

int forkserver_spawn_async(struct forkserver *fs, int endpoint, uint64_t gas_limit, uint64_t tag)
{
	struct fs_request req = { .op = FS_SPAWN_ASYNC, .gas = gas_limit, .tag = tag };

	return send_request(fs, &req, endpoint);
}

void forkserver_place(struct forkserver *fs, pid_t pid, bool session)
{
	if (fs->server_cpu != fs->cpu)
		set_cpu(pid, session ? fs->cpu : fs->server_cpu);
}

int forkserver_next_spawned(struct forkserver *fs, struct fs_spawned *out, int *fd, bool wait)
{
	if (recv_with_fd(fs->note, out, sizeof(*out), wait ? 0 : MSG_DONTWAIT, fd) == 0)
		return 1;
	return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
}

int forkserver_spawn_pooled(struct forkserver *fs, uint64_t gas_limit, uint64_t tag)
{
	struct fs_request req = { .op = FS_SPAWN_POOLED, .gas = gas_limit, .tag = tag };

	return send_request(fs, &req, -1);
}

int forkserver_end(struct forkserver *fs, pid_t pid, int endpoint, uint64_t respawn_tag,
		   uint64_t gas_limit)
{
	struct fs_request req = {
		.op = FS_RELEASE, .pid = (uint64_t)pid, .tag = respawn_tag,
		.gas = gas_limit,
	};
	int r = send_request(fs, &req, endpoint);

	close(endpoint);        /* ours; the request holds the endpoint until the server has it */
	return r;
}

int forkserver_reap(struct forkserver *fs, pid_t pid, struct reaped *out)
{
	struct fs_request req = { .op = FS_REAP, .pid = (uint64_t)pid };
	struct fs_reply rep;

	if (transact(fs, &req, -1, &rep) < 0 || rep.value < 0)
		return -1;
	out->status = (int)rep.value;
	out->cpu_ns = rep.cpu_ns;
	return 0;
}

int forkserver_release(struct forkserver *fs, pid_t pid)
{
	/*
	 * Only the fork server reaps, and only when told: until then this pid
	 * cannot name another process, so the runner may signal it itself.
	 */
	kill(pid, SIGKILL);
	fs->dead[fs->ndead++] = pid;
	if (fs->ndead < FS_DEAD_BATCH)
		return 0;
	{
		struct fs_request req = { .op = FS_REAP_DEAD };

		if (send_request(fs, &req, -1) == 0)
			return 0;
		fs->ndead = 0;  /* the server is gone, and its children by PDEATHSIG */
		return -1;
	}
}

void forkserver_stop(struct forkserver *fs)
{
	if (fs->ctrl >= 0)
		close(fs->ctrl);
	if (fs->note >= 0)
		close(fs->note);
	fs->ctrl = fs->note = -1;
	if (fs->pid > 0) {
		/*
		 * EOF on its socket: the server kills and reaps what it still
		 * has, then exits, so no context outlives the run.  It is ours
		 * and small; if it does not go within 5 s it is killed (and
		 * its children follow it by PDEATHSIG).
		 */
		int pfd = (int)syscall(SYS_pidfd_open, fs->pid, 0);
		struct pollfd p = { .fd = pfd, .events = POLLIN };

		if (pfd < 0 || poll(&p, 1, 5000) != 1)
			kill(fs->pid, SIGKILL);
		if (pfd >= 0)
			close(pfd);
		while (waitpid(fs->pid, NULL, 0) < 0 && errno == EINTR)
			;
	}
	fs->pid = 0;
	if (fs->pinned)
		sched_setaffinity(0, sizeof(fs->saved_affinity), &fs->saved_affinity);
	fs->pinned = false;
}
