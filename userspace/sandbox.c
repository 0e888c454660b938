// SPDX-License-Identifier: MIT
/*
 * Context-process lockdown; see sandbox.h for the order and why.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/securebits.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/capability.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "../shared/ctxvm_uapi.h"
#include "errors.h"
#include "sandbox.h"

/*
 * The ASan+UBSan test build cannot be locked down: the sanitizer runtime maps
 * terabytes of shadow memory and makes syscalls of its own.  There the filter
 * and RLIMIT_AS are left out; that build checks memory safety, the normal
 * build (tests/sandbox_test.c, tests/isolation_test.c) checks enforcement.
 */
#if defined(__SANITIZE_ADDRESS__)
#define SANDBOX_FULL 0
#else
#define SANDBOX_FULL 1
#endif

/*
 * CPU-time budget: 100 ms for start-up plus 20 ns per unit of gas.  The
 * interpreter runs about 2 ns per instruction here (make bench), so an honest
 * run stays an order of magnitude inside it, while an interpreter whose own
 * count failed is still stopped.
 */
#define CPU_BASE_NS 100000000ull
#define CPU_NS_PER_GAS 20ull

uint64_t sandbox_cpu_budget_ns(uint64_t gas)
{
	if (gas > (UINT64_MAX - CPU_BASE_NS) / CPU_NS_PER_GAS)
		return UINT64_MAX;
	return CPU_BASE_NS + gas * CPU_NS_PER_GAS;
}

/* What the interpreter needs once it runs; everything else traps. */
static const int allowed_syscalls[] = {
	SCMP_SYS(read), SCMP_SYS(write), SCMP_SYS(readv), SCMP_SYS(writev),
	SCMP_SYS(brk), SCMP_SYS(mmap), SCMP_SYS(munmap), SCMP_SYS(mremap),
	SCMP_SYS(mprotect), SCMP_SYS(madvise),
	SCMP_SYS(close), SCMP_SYS(exit), SCMP_SYS(exit_group), SCMP_SYS(rt_sigreturn),
	SCMP_SYS(clock_gettime), SCMP_SYS(getrandom),
	SCMP_SYS(newfstatat), SCMP_SYS(fstat),
};

static const unsigned long context_ioctls[] = {
	CTXVM_CTX_BIND, CTXVM_CTX_WAIT, CTXVM_CTX_CALL, CTXVM_CTX_RETURN, CTXVM_CTX_FAIL,
	CTXVM_CTX_CALLER, CTXVM_CTX_FINISH, CTXVM_CTX_ABORT,
};

int sandbox_filter_build(struct sandbox_filter *f, bool kmod_ioctls, char *err, size_t errlen)
{
	scmp_filter_ctx ctx;
	int memfd = -1;
	off_t size;
	int rc = -1;

	memset(f, 0, sizeof(*f));
	ctx = seccomp_init(SCMP_ACT_TRAP);
	if (!ctx) {
		snprintf(err, errlen, "seccomp_init failed");
		return -1;
	}
	for (size_t i = 0; i < sizeof(allowed_syscalls) / sizeof(allowed_syscalls[0]); i++)
		if (seccomp_rule_add(ctx, SCMP_ACT_ALLOW, allowed_syscalls[i], 0) < 0)
			goto fail_rule;
	/* glibc falls back to clone when clone3 says ENOSYS; rseq is optional. */
	if (seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0) < 0 ||
	    seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(rseq), 0) < 0)
		goto fail_rule;
	/*
	 * The kmod backend's context-fd ioctls, on the endpoint only.  Left out
	 * for a socket endpoint: they are a third of the filter, and its
	 * length is most of what loading it costs each process.
	 */
	for (size_t i = 0; kmod_ioctls && i < sizeof(context_ioctls) / sizeof(context_ioctls[0]); i++)
		if (seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 2,
				     SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)SANDBOX_ENDPOINT_FD),
				     SCMP_A1(SCMP_CMP_EQ, (scmp_datum_t)context_ioctls[i])) < 0)
			goto fail_rule;
	seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);

	memfd = memfd_create("ctxvm-seccomp", MFD_CLOEXEC);
	if (memfd < 0 || seccomp_export_bpf(ctx, memfd) < 0) {
		snprintf(err, errlen, "exporting the seccomp filter failed");
		goto out;
	}
	size = lseek(memfd, 0, SEEK_END);
	if (size <= 0 || size % (off_t)sizeof(struct sock_filter)) {
		snprintf(err, errlen, "seccomp filter has a bad size %lld", (long long)size);
		goto out;
	}
	f->bpf = malloc((size_t)size);
	if (!f->bpf || pread(memfd, f->bpf, (size_t)size, 0) != size) {
		snprintf(err, errlen, "reading back the seccomp filter failed");
		sandbox_filter_free(f);
		goto out;
	}
	f->len = (size_t)size / sizeof(struct sock_filter);
	rc = 0;
	goto out;
fail_rule:
	snprintf(err, errlen, "seccomp_rule_add failed");
out:
	if (memfd >= 0)
		close(memfd);
	seccomp_release(ctx);
	return rc;
}

void sandbox_filter_free(struct sandbox_filter *f)
{
	free(f->bpf);
	f->bpf = NULL;
	f->len = 0;
}

const char *sandbox_syscall_name(uint64_t nr)
{
	static char buf[64];
	char *name = nr < 4096 ? seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, (int)nr) : NULL;

	if (name) {
		snprintf(buf, sizeof(buf), "%s", name);
		free(name);
	} else {
		snprintf(buf, sizeof(buf), "syscall %llu", (unsigned long long)nr);
	}
	return buf;
}

static bool endpoint_is_kmod;

static void on_sigsys(int sig, siginfo_t *info, void *uctx)
{
	struct sandbox_violation v = { SANDBOX_VIOLATION_MAGIC, (uint64_t)info->si_syscall };
	struct ctxvm_msg m = {
		.type = CTXVM_MSG_FAIL, .kind = CTX_E_SandboxViolation,
		.gas_arg = (uint64_t)info->si_syscall,
	};
	ssize_t r;

	(void)sig;
	(void)uctx;
	if (endpoint_is_kmod)
		r = ioctl(SANDBOX_ENDPOINT_FD, CTXVM_CTX_ABORT, &m);
	else
		r = write(SANDBOX_ENDPOINT_FD, &v, sizeof(v));
	(void)r;
	_exit(SANDBOX_EXIT_VIOLATION);
}

static int fail(char *err, size_t errlen, const char *what)
{
	snprintf(err, errlen, "%s: %s", what, strerror(errno));
	return -1;
}

/* Empty the bounding set; each drop replaces the credentials (~2 us): skip what is gone. */
static int drop_bounding_set(char *err, size_t errlen)
{
	cap_value_t last = cap_max_bits();

	for (cap_value_t cap = 0; cap < last; cap++)
		if (cap_get_bound(cap) > 0 && cap_drop_bound(cap) < 0 && errno != EINVAL &&
		    errno != EPERM)
			return fail(err, errlen, "cap_drop_bound");
	return 0;
}

/* Steps 5 and 6; see sandbox_drop_privileges. */
static int drop_privileges(char *err, size_t errlen)
{
	struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct none[_LINUX_CAPABILITY_U32S_3] = { { 0 } };

	/* Lock root out of regaining capabilities, where we are allowed to. */
	prctl(PR_SET_SECUREBITS, SECBIT_NOROOT | SECBIT_NOROOT_LOCKED |
	      SECBIT_NO_SETUID_FIXUP | SECBIT_NO_SETUID_FIXUP_LOCKED |
	      SECBIT_KEEP_CAPS_LOCKED | SECBIT_NO_CAP_AMBIENT_RAISE |
	      SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED);
	if (drop_bounding_set(err, errlen) < 0)
		return -1;
	/*
	 * One prctl for the whole ambient set (libcap's cap_reset_ambient asks
	 * about each of the 41 first), and capset(2) with the empty sets on the
	 * stack: cap_set_proc allocates, and a fresh child's first malloc
	 * copies heap pages.
	 */
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		return fail(err, errlen, "PR_CAP_AMBIENT_CLEAR_ALL");
	if (capset(&hdr, none) < 0)
		return fail(err, errlen, "capset");
	/* 6. */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return fail(err, errlen, "PR_SET_NO_NEW_PRIVS");
	return 0;
}

static int set_limit(int resource, rlim_t value)
{
	struct rlimit rl = { value, value };

	return setrlimit(resource, &rl);
}

int sandbox_drop_privileges(char *err, size_t errlen)
{
	return drop_privileges(err, errlen);
}

int sandbox_enter(const struct sandbox_filter *f, const struct sandbox_limits *lim,
		  int endpoint, char *err, size_t errlen)
{
	struct sigevent sev = { .sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGKILL };
	struct itimerspec its = { 0 };
	struct sigaction sa = { 0 };
	struct sock_fprog prog;
	uint64_t cpu_s;
	timer_t timer;

	/*
	 * 1. Only the endpoint stays, at a fixed number the filter can name.
	 * (Its close-on-exec flag does not matter: execve is never allowed.)
	 */
	if (endpoint != SANDBOX_ENDPOINT_FD && dup2(endpoint, SANDBOX_ENDPOINT_FD) < 0)
		return fail(err, errlen, "dup2 endpoint");
	if (close_range(0, SANDBOX_ENDPOINT_FD - 1, 0) < 0 ||
	    close_range(SANDBOX_ENDPOINT_FD + 1, ~0u, 0) < 0)
		return fail(err, errlen, "close_range");

	/* 2. Die with the parent, even if it died already. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
		return fail(err, errlen, "PR_SET_PDEATHSIG");
	if (lim->parent_pid && getppid() != lim->parent_pid) {
		errno = ESRCH;
		return fail(err, errlen, "parent gone");
	}

	/*
	 * 3. A fresh, unmapped user namespace where the kernel allows one: the
	 * process is nobody there.  Network, IPC and mount namespaces would
	 * cost 60-800 us per context (measured here) and guard what the
	 * seccomp filter already forbids (sockets, SysV IPC, mounts).
	 */
	if (lim->namespaces)
		(void)unshare(CLONE_NEWUSER);

	/* 4. Resource limits and the CPU-time budget (RLIMIT_CPU only counts seconds). */
	cpu_s = lim->cpu_ns / 1000000000ull + 1;
	if (set_limit(RLIMIT_NOFILE, SANDBOX_ENDPOINT_FD + 1) < 0 ||
	    set_limit(RLIMIT_NPROC, 0) < 0 || set_limit(RLIMIT_FSIZE, 0) < 0 ||
	    set_limit(RLIMIT_CORE, 0) < 0 ||
	    setrlimit(RLIMIT_CPU, &(struct rlimit){ cpu_s, cpu_s + 1 }) < 0 ||
	    (SANDBOX_FULL && lim->as_bytes && set_limit(RLIMIT_AS, lim->as_bytes) < 0))
		return fail(err, errlen, "setrlimit");
	if (timer_create(CLOCK_PROCESS_CPUTIME_ID, &sev, &timer) < 0)
		return fail(err, errlen, "timer_create");
	its.it_value.tv_sec = (time_t)(lim->cpu_ns / 1000000000ull);
	its.it_value.tv_nsec = (long)(lim->cpu_ns % 1000000000ull);
	if (timer_settime(timer, 0, &its, NULL) < 0)
		return fail(err, errlen, "timer_settime");

	/* 5, 6. No capabilities, in any set, ever again; no_new_privs. */
	if (!lim->privileges_dropped && drop_privileges(err, errlen) < 0)
		return -1;

	/* 7. The allow-list; a blocked syscall reports itself and exits. */
	if (endpoint_is_kmod != lim->kmod_endpoint)     /* no write, no page copied */
		endpoint_is_kmod = lim->kmod_endpoint;
	sa.sa_sigaction = on_sigsys;
	sa.sa_flags = SA_SIGINFO;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGSYS, &sa, NULL) < 0)
		return fail(err, errlen, "sigaction SIGSYS");
	prog.len = (unsigned short)f->len;
	prog.filter = f->bpf;
	if (SANDBOX_FULL && prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0)
		return fail(err, errlen, "PR_SET_SECCOMP");
	return 0;
}
