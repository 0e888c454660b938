/* SPDX-License-Identifier: MIT */
/*
 * Locking a context process down (SPEC §7), in this order: close every fd
 * but the broker endpoint, die with the parent, a fresh empty user namespace
 * where the kernel allows one (unless the parent made one for all its
 * children, as the fork server does), rlimits (CPU, AS, NOFILE, NPROC = 0) and a CPU-time
 * timer, all capabilities and the bounding set dropped, no_new_privs, and a
 * seccomp allow-list.
 *
 * The filter is compiled once with libseccomp, before any process is locked
 * down (libseccomp probes the kernel and may call getrandom on first use),
 * and each child loads the finished BPF program with one prctl.
 *
 * A blocked syscall traps: the SIGSYS handler writes a
 * struct sandbox_violation to the endpoint (on a /dev/ctxvm context fd:
 * CTXVM_CTX_ABORT with kind SandboxViolation, the syscall in gas_arg) and
 * exits with SANDBOX_EXIT_VIOLATION, so the broker can name the syscall.
 */
#ifndef CTXVM_SANDBOX_H
#define CTXVM_SANDBOX_H

#include <stddef.h>
#include <stdint.h>

#include <stdbool.h>
#include <sys/types.h>

#define SANDBOX_ENDPOINT_FD 3   /* where the endpoint lives in a locked-down child */
#define SANDBOX_EXIT_VIOLATION 159
#define SANDBOX_VIOLATION_MAGIC 0x5359534353595343ull  /* "CSYSCSYS" */

struct sandbox_violation {
	uint64_t magic;
	uint64_t syscall_nr;
};

struct sandbox_filter {
	void *bpf;              /* struct sock_filter[] */
	size_t len;             /* instructions */
};

struct sandbox_limits {
	uint64_t cpu_ns;        /* CPU-time budget; the process is killed past it */
	uint64_t as_bytes;      /* RLIMIT_AS; 0 leaves it */
	pid_t parent_pid;       /* exit if the parent is already gone; 0 skips */
	bool namespaces;        /* also unshare into fresh empty namespaces */
	bool kmod_endpoint;     /* the endpoint is a /dev/ctxvm context fd */
	/*
	 * The parent already ran sandbox_drop_privileges(): this process
	 * inherited no capabilities in any set, locked securebits and
	 * no_new_privs, so steps 5 and 6 have nothing left to do.
	 */
	bool privileges_dropped;
};

/*
 * Compile the allow-list; with kmod_ioctls, the /dev/ctxvm context-fd ioctls
 * on the endpoint too.  Returns 0, or -1 with a message in err.
 */
int sandbox_filter_build(struct sandbox_filter *f, bool kmod_ioctls, char *err, size_t errlen);
void sandbox_filter_free(struct sandbox_filter *f);

/*
 * Steps 5 and 6 for this process, once, in the parent of many sandboxed
 * children (the fork server): empty the bounding and ambient sets, lock the
 * securebits, drop every capability, set no_new_privs.  Children inherit all
 * of it across fork and need not pay ~40 us each for it again.
 */
int sandbox_drop_privileges(char *err, size_t errlen);

/*
 * Called in the child: lock it down, keeping only `endpoint` open.
 * Returns 0, or -1 with a message in err (the child must then exit).
 */
int sandbox_enter(const struct sandbox_filter *f, const struct sandbox_limits *lim,
		  int endpoint, char *err, size_t errlen);

/* "openat" for a syscall number (static storage), or "syscall N". */
const char *sandbox_syscall_name(uint64_t nr);

/* CPU-time budget for a gas limit; see the formula in sandbox.c. */
uint64_t sandbox_cpu_budget_ns(uint64_t gas);

#endif /* CTXVM_SANDBOX_H */
