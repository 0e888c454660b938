/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The broker protocol from a context's side, written once and run against
 * both brokers through the client API (userspace/ctxclient.h): ctxvm.ko
 * (tests/kmod_abi_test.c, in the test VM) and the embedded broker
 * (tests/protocol_test.c, on the host).  The includer defines PROTO_KMOD
 * (1: the fds are /dev/ctxvm context fds) and, on the host, points
 * `proto_fail_line` at shared memory, where a failing context process
 * leaves the line of its check (the broker, not the test, reaps it).
 *
 * A role is what one context process does with its RUN; it reports the
 * first surprise and leaves with a non-zero status.  The digests name the
 * procedures: D_K1 and D_K2 are the kernel's exports, D_X is not one.
 */
#ifndef CTXVM_TESTS_PROTOCOL_H
#define CTXVM_TESTS_PROTOCOL_H

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "../shared/broker.h"
#include "../shared/ctxvm_uapi.h"
#include "../userspace/ctxclient.h"

static const __u64 D_ROOT[4] = { 0x100, 1, 2, 3 };
static const __u64 D_P[4] = { 0x200, 1, 2, 3 };
static const __u64 D_U[4] = { 0x300, 1, 2, 3 };
static const __u64 D_Q[4] = { 0x400, 1, 2, 3 };
static const __u64 D_K1[4] = { 0x500, 1, 2, 3 };
static const __u64 D_K2[4] = { 0x600, 1, 2, 3 };
static const __u64 D_X[4] = { 0x700, 1, 2, 3 };   /* not a kernel export */
static const __u64 ZERO[4];

/* Every procedure, in the order of the host's program (proc = index). */
static const __u64 *const proto_procs[] = { D_ROOT, D_P, D_U, D_Q, D_K1, D_K2, D_X };
#define PROTO_NPROCS 7
#define PROTO_FIRST_KERNEL 4    /* D_K1 */
#define PROTO_NKERNEL 2

#define GAS 1000000ULL
#define ROOT_FMP (CTXVM_FMP_INIT + 4)

static const bool proto_on_kmod = PROTO_KMOD;
static volatile int *proto_fail_line;

/* In a context process: report and leave on the first surprise. */
#define CHECK(c) do { \
	if (!(c)) { \
		if (proto_fail_line && !*proto_fail_line) \
			*proto_fail_line = __LINE__; \
		fprintf(stderr, "# context %d: check failed at line %d: %s (errno %d)\n", \
			getpid(), __LINE__, #c, errno); \
		_exit(1); \
	} \
} while (0)

static inline struct ctxvm_client proto_client(int fd)
{
	return (struct ctxvm_client){ .fd = fd, .kmod = proto_on_kmod };
}

static inline int dig_eq(const __u64 *a, const __u64 *b)
{
	return memcmp(a, b, 4 * sizeof(__u64)) == 0;
}

static inline __u64 proto_proc_of(const __u64 *d)
{
	for (unsigned int i = 0; i < PROTO_NPROCS; i++)
		if (dig_eq(proto_procs[i], d))
			return i;
	return PROTO_NPROCS;
}

static inline int ctx_call(int fd, __u64 kind, const __u64 *d, __u64 gas, __u64 gas_arg,
			   __u64 fmp, struct ctxvm_msg *out)
{
	struct ctxvm_client c = proto_client(fd);
	struct ctxvm_msg m = { .kind = kind, .proc = proto_proc_of(d), .gas = gas,
			       .gas_arg = gas_arg, .fmp = fmp, .budget = 16 };
	int r;

	memcpy(m.digest, d, sizeof(m.digest));
	m.window[0] = 11;
	r = ctxvm_client_call(&c, &m);
	if (!r)
		*out = m;
	return r;
}

static inline int ctx_wait(int fd, struct ctxvm_msg *out)
{
	struct ctxvm_client c = proto_client(fd);

	return ctxvm_client_wait(&c, out);
}

static inline int ctx_return(int fd, __u64 gas, __u64 w0)
{
	struct ctxvm_client c = proto_client(fd);
	struct ctxvm_msg m = { .gas = gas };

	m.window[0] = w0;
	return ctxvm_client_return(&c, &m);
}

static inline int ctx_fail(int fd, __u64 gas)
{
	struct ctxvm_client c = proto_client(fd);
	struct ctxvm_msg m = { .kind = 1, .gas = gas, .pc = 3 };

	strcpy((char *)m.text, "assertion failed");
	return ctxvm_client_fail(&c, &m);
}

static inline int ctx_finish(int fd, __u64 gas)
{
	struct ctxvm_client c = proto_client(fd);
	struct ctxvm_msg m = { .gas = gas };

	return ctxvm_client_finish(&c, &m);
}

static inline int ctx_caller(int fd, __u64 out[4])
{
	struct ctxvm_client c = proto_client(fd);

	return ctxvm_client_caller(&c, out);
}

static inline int caller_is(int fd, const __u64 *want)
{
	__u64 d[4];

	return ctx_caller(fd, d) == 0 && dig_eq(d, want);
}

typedef void (*ctx_fn)(int fd, const struct ctxvm_msg *run);

struct role {
	const __u64 *digest;
	ctx_fn fn;
};

/* ---- the seed scenario: root →call P →syscall K1 →call U →syscall K2 ---- */

static void seed_u(int fd, const struct ctxvm_msg *run)
{
	struct ctxvm_msg m;
	int r;

	CHECK(run->kind == CTXVM_FRAME_CALL && run->ctx_id == 2 && dig_eq(run->digest, D_U));
	CHECK(run->fmp == CTXVM_FMP_INIT && run->gas == 700000);
	CHECK(caller_is(fd, D_U));
	CHECK(ctx_call(fd, CTXVM_FRAME_SYSCALL, D_K2, 600000, 0, CTXVM_FMP_INIT, &m) == 0);
	CHECK(m.type == CTXVM_MSG_RESULT && m.status == CTXVM_RESULT_OK && m.gas == 10);
	CHECK(caller_is(fd, D_U));
	CHECK(ctx_return(fd, 20, 42) == 0);
	/*
	 * Its activation is over: a second return is refused (the run may have
	 * ended).  The embedded broker may end this process first.
	 */
	r = ctx_return(fd, 20, 42);
	CHECK(r == -EBUSY || r == -ESHUTDOWN);
	CHECK(ctx_wait(fd, &m) == -ESHUTDOWN);
}

static void seed_p(int fd, const struct ctxvm_msg *run)
{
	struct ctxvm_msg m;

	CHECK(run->kind == CTXVM_FRAME_CALL && run->ctx_id == 1 && run->window[0] == 11);
	CHECK(run->gas == 900000);
	CHECK(caller_is(fd, D_P));
	CHECK(ctx_call(fd, CTXVM_FRAME_SYSCALL, D_K1, 800000, 0, CTXVM_FMP_INIT, &m) == 0);
	CHECK(m.type == CTXVM_MSG_RESULT && m.status == CTXVM_RESULT_OK && m.gas == 30);
	CHECK(m.window[0] == 43);
	CHECK(caller_is(fd, D_P));
	CHECK(ctx_return(fd, 40, 44) == 0);
}

static void seed_root(int fd, const struct ctxvm_msg *run)
{
	struct ctxvm_msg m, k2;
	__u64 k1_fmp;

	CHECK(run->kind == CTXVM_FRAME_ROOT && run->ctx_id == 0 && run->window[0] == 7);
	CHECK(run->fmp == CTXVM_FMP_INIT && run->gas == GAS);
	CHECK(caller_is(fd, ZERO));
	CHECK(ctx_call(fd, CTXVM_FRAME_CALL, D_P, 900000, 0, ROOT_FMP, &m) == 0);
	/* K1, a syscall from P, runs here with P's identity, above root's locals. */
	CHECK(m.type == CTXVM_MSG_RUN && m.kind == CTXVM_FRAME_SYSCALL && m.ctx_id == 0);
	CHECK(dig_eq(m.digest, D_K1) && m.fmp == ROOT_FMP && m.gas == 800000);
	CHECK(caller_is(fd, D_P));
	k1_fmp = m.fmp + 8;
	CHECK(ctx_call(fd, CTXVM_FRAME_CALL, D_U, 700000, 0, k1_fmp, &k2) == 0);
	/* K2, a syscall from U: U's identity, K2's locals above K1's. */
	CHECK(k2.type == CTXVM_MSG_RUN && k2.kind == CTXVM_FRAME_SYSCALL);
	CHECK(dig_eq(k2.digest, D_K2) && k2.fmp == k1_fmp && k2.gas == 600000);
	CHECK(caller_is(fd, D_U));
	/* A syscall while a syscall is executing is refused. */
	CHECK(ctx_call(fd, CTXVM_FRAME_SYSCALL, D_K1, 500000, 0, k1_fmp, &m) == -EDEADLK);
	CHECK(ctx_return(fd, 10, 0) == 0);
	CHECK(ctx_wait(fd, &m) == 0);
	CHECK(m.type == CTXVM_MSG_RESULT && m.status == CTXVM_RESULT_OK && m.window[0] == 42);
	CHECK(m.gas == 20);
	CHECK(caller_is(fd, D_P));
	CHECK(ctx_return(fd, 30, 43) == 0);
	CHECK(ctx_wait(fd, &m) == 0);
	CHECK(m.type == CTXVM_MSG_RESULT && m.window[0] == 44 && m.gas == 40);
	CHECK(caller_is(fd, ZERO));
	CHECK(ctx_return(fd, 1, 0) == -EPROTO);        /* the root frame finishes */
	CHECK(ctx_finish(fd, 100) == 0);
	CHECK(ctx_wait(fd, &m) == -ESHUTDOWN);
}

static const struct role seed_roles[] = { { D_P, seed_p }, { D_U, seed_u } };

/* ---- delegatecall: identity, gas, guarded failure ---- */

static void dg_fails(int fd, const struct ctxvm_msg *run)
{
	struct ctxvm_msg m;

	CHECK(run->kind == CTXVM_FRAME_DELEGATECALL && run->gas == 64000 - 1000);
	CHECK(caller_is(fd, ZERO));        /* the delegator's identity: root's */
	CHECK(ctx_fail(fd, 500) == 0);
	CHECK(ctx_wait(fd, &m) == -ESHUTDOWN);
}

static void dg_ok(int fd, const struct ctxvm_msg *run)
{
	CHECK(run->kind == CTXVM_FRAME_DYNDELEGATECALL && run->gas == 300);
	CHECK(caller_is(fd, ZERO));
	CHECK(ctx_return(fd, 7, 5) == 0);
}

static void dg_root(int fd, const struct ctxvm_msg *run)
{
	struct ctxvm_msg m;

	CHECK(ctx_call(fd, CTXVM_FRAME_DELEGATECALL, D_P, 64000, GAS, ROOT_FMP, &m) == 0);
	CHECK(m.type == CTXVM_MSG_GUARD_BEGIN);
	CHECK(ctx_wait(fd, &m) == 0);
	CHECK(m.type == CTXVM_MSG_GUARD_END && m.status == 1 && m.fmp == ROOT_FMP);
	CHECK(ctx_wait(fd, &m) == 0);
	CHECK(m.type == CTXVM_MSG_RESULT && m.status == CTXVM_RESULT_GUARD_FAILED);
	CHECK(m.gas == 500);
	CHECK(caller_is(fd, ZERO));
	CHECK(ctx_call(fd, CTXVM_FRAME_DYNDELEGATECALL, D_U, 60000, 300, ROOT_FMP, &m) == 0);
	CHECK(m.type == CTXVM_MSG_GUARD_BEGIN);
	CHECK(ctx_wait(fd, &m) == 0);
	CHECK(m.type == CTXVM_MSG_GUARD_END && m.status == 0);
	CHECK(ctx_wait(fd, &m) == 0);
	CHECK(m.type == CTXVM_MSG_RESULT && m.status == CTXVM_RESULT_OK && m.window[0] == 5);
	CHECK(ctx_finish(fd, 1) == 0);
}

static const struct role dg_roles[] = { { D_P, dg_fails }, { D_U, dg_ok } };

/* ---- every refusal context 0 can meet alone; the run then fails ---- */

static void refusals_root(int fd, const struct ctxvm_msg *run)
{
	struct ctxvm_msg m;

	CHECK(run->kind == CTXVM_FRAME_ROOT);
	CHECK(ctx_call(fd, CTXVM_FRAME_SYSCALL, D_X, 100, 0, 0, &m) == -ENOENT);
	CHECK(ctx_call(fd, CTXVM_FRAME_ROOT, D_P, 100, 0, 0, &m) == -EINVAL);
	CHECK(ctx_call(fd, CTXVM_FRAME_KIND_MAX + 1, D_P, 100, 0, 0, &m) == -EINVAL);
	CHECK(ctx_call(fd, CTXVM_FRAME_CALL, D_P, GAS + 1, 0, 0, &m) == -ERANGE);
	CHECK(ctx_return(fd, 0, 0) == -EPROTO);
	/* A syscall from root runs right here, with root's (zero) identity. */
	CHECK(ctx_call(fd, CTXVM_FRAME_SYSCALL, D_K1, 5000, 0, ROOT_FMP, &m) == 0);
	CHECK(m.type == CTXVM_MSG_RUN && m.fmp == ROOT_FMP && dig_eq(m.digest, D_K1));
	CHECK(caller_is(fd, ZERO));
	CHECK(ctx_call(fd, CTXVM_FRAME_SYSCALL, D_K2, 100, 0, 0, &m) == -EDEADLK);
	CHECK(ctx_return(fd, 5001, 0) == -ERANGE);
	CHECK(ctx_finish(fd, 0) == -EBUSY);            /* not at the root frame */
	CHECK(ctx_return(fd, 50, 9) == 0);
	CHECK(ctx_wait(fd, &m) == 0);
	CHECK(m.type == CTXVM_MSG_RESULT && m.window[0] == 9);
	/* A failure that nothing catches fails the run. */
	CHECK(ctx_fail(fd, 1) == 0);
	CHECK(ctx_wait(fd, &m) == -ESHUTDOWN);
	CHECK(ctx_caller(fd, m.digest) == -ESHUTDOWN);
}

#endif /* CTXVM_TESTS_PROTOCOL_H */
