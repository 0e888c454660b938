// SPDX-License-Identifier: GPL-2.0
/*
 * The broker protocol of tests/protocol.h against the embedded broker: the
 * same roles the kselftest suite runs against ctxvm.ko, through the same
 * client API, here on the socket transport.  The runner is the real one
 * (ctx_run_user): its fork server forks and sandboxes every context process
 * as usual, and the test build's ctx_test.context_main hook makes each run
 * its role instead of the interpreter.  A role that meets a surprise leaves
 * the line of its check in shared memory.
 *
 * What ctxvm.ko shows as events, the runner shows as its result: the
 * outcome, the gas, how many contexts and how deep.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "kselftest_harness.h"
#define PROTO_KMOD 0
#include "protocol.h"
#include "../userspace/broker_user.h"
#include "../userspace/interp.h"
#include "../userspace/program.h"

/* One procedure per digest of protocol.h, in its order; each is a bare RET. */
static struct ctx_insn code[PROTO_NPROCS];
static struct ctx_srcloc locs[PROTO_NPROCS];
static struct ctx_proc procs[PROTO_NPROCS];
static char *files[] = { "protocol.h" };
static char *names[PROTO_NPROCS] = { "#main", "p", "u", "q", "k1", "k2", "x" };
static struct ctx_program prog = {
	.code = code, .locs = locs, .ncode = PROTO_NPROCS, .procs = procs,
	.nprocs = PROTO_NPROCS, .entry_proc = 0, .files = files, .nfiles = 1,
};

/* The roles of the current run; read by the context processes, forked after. */
static ctx_fn root_role;
static const struct role *roles;
static unsigned int nroles;

static void build_program(void)
{
	for (unsigned int i = 0; i < PROTO_NPROCS; i++) {
		code[i].op = OP_RET;
		procs[i] = (struct ctx_proc){ .name = names[i], .entry = i, .end = i + 1 };
		memcpy(procs[i].digest, proto_procs[i], sizeof(procs[i].digest));
		if (i >= PROTO_FIRST_KERNEL && i < PROTO_FIRST_KERNEL + PROTO_NKERNEL)
			procs[i].flags |= PROC_KERNEL_EXPORT;
	}
}

static void context_main(int endpoint, bool kmod_endpoint)
{
	struct ctxvm_msg run;
	ctx_fn fn = NULL;
	int r;

	CHECK(!kmod_endpoint);
	r = ctx_wait(endpoint, &run);
	if (r == -ESHUTDOWN)
		_exit(0);       /* pooled, and never used before the run ended */
	CHECK(r == 0 && run.type == CTXVM_MSG_RUN);
	if (run.ctx_id == 0)
		fn = root_role;
	for (unsigned int i = 0; !fn && i < nroles; i++)
		if (dig_eq(roles[i].digest, run.digest))
			fn = roles[i].fn;
	CHECK(fn != NULL);
	fn(endpoint, &run);
	_exit(0);
}

struct outcome {
	enum ctx_error_kind error;
	uint64_t gas_used, contexts, max_depth;
	char message[1024];
	int fail_line;          /* the first failed check of any context, or 0 */
};

/* Runs the roles on the embedded broker with this pool size. */
static void run_roles(ctx_fn root, const struct role *r, unsigned int n, unsigned int pool,
		      struct outcome *out)
{
	struct run_options opts = { .gas = GAS, .mem_limit = 1 << 24, .timeout_ms = 20000 };
	const struct ctx_user_options uopts = { .pool = pool };
	struct run_result res = { 0 };

	build_program();
	opts.inputs[0] = 7;
	opts.ninputs = 1;
	root_role = root;
	roles = r;
	nroles = n;
	*proto_fail_line = 0;
	ctx_test.context_main = context_main;
	out->error = ctx_run_user_with(&prog, &opts, &uopts, &res);
	ctx_test.context_main = NULL;
	out->gas_used = res.gas_used;
	out->contexts = res.contexts;
	out->max_depth = res.max_depth;
	memcpy(out->message, res.message, sizeof(out->message));
	out->fail_line = *proto_fail_line;
	free(res.backtrace);
}

FIXTURE(proto) {
	struct outcome out;
};

FIXTURE_VARIANT(proto) {
	unsigned int pool;
};

FIXTURE_VARIANT_ADD(proto, fresh) { .pool = 0 };
FIXTURE_VARIANT_ADD(proto, pooled) { .pool = 4 };

FIXTURE_SETUP(proto)
{
	if (!proto_fail_line) {
		proto_fail_line = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
				       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		ASSERT_NE(MAP_FAILED, (void *)proto_fail_line);
	}
}

FIXTURE_TEARDOWN(proto)
{
}

TEST_F(proto, seed_scenario_call_syscall_call_syscall)
{
	run_roles(seed_root, seed_roles, 2, variant->pool, &self->out);
	EXPECT_EQ(0, self->out.fail_line);
	EXPECT_EQ((int)CTX_OK, (int)self->out.error);
	EXPECT_EQ(100ULL, self->out.gas_used);          /* the root's FINISH */
	EXPECT_EQ(3ULL, self->out.contexts);
	EXPECT_EQ(5ULL, self->out.max_depth);
}

TEST_F(proto, delegatecall_guarded_failure_and_success)
{
	run_roles(dg_root, dg_roles, 2, variant->pool, &self->out);
	EXPECT_EQ(0, self->out.fail_line);
	EXPECT_EQ((int)CTX_OK, (int)self->out.error);
	EXPECT_EQ(1ULL, self->out.gas_used);
	EXPECT_EQ(3ULL, self->out.contexts);
}

TEST_F(proto, syscall_and_call_refusals)
{
	run_roles(refusals_root, NULL, 0, variant->pool, &self->out);
	EXPECT_EQ(0, self->out.fail_line);
	/* The root's uncaught FAIL (kind 1) is the run's outcome. */
	EXPECT_EQ(1, (int)self->out.error);
	EXPECT_NE(NULL, strstr(self->out.message, "assertion failed"));
	EXPECT_EQ(1ULL, self->out.contexts);
}

/* A role that breaks its own script must fail the test: the checks can fail. */
static void wrong_root(int fd, const struct ctxvm_msg *run)
{
	CHECK(run->kind == CTXVM_FRAME_CALL);   /* it is ROOT */
}

TEST_F(proto, a_failed_check_in_a_context_is_seen)
{
	run_roles(wrong_root, NULL, 0, variant->pool, &self->out);
	EXPECT_NE(0, self->out.fail_line);
	EXPECT_NE((int)CTX_OK, (int)self->out.error);
}

/* Several runs at once, each with its own broker and fork server. */
TEST(parallel_runs)
{
	pid_t pids[4];
	int st;

	proto_fail_line = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
			       -1, 0);
	ASSERT_NE(MAP_FAILED, (void *)proto_fail_line);
	for (int i = 0; i < 4; i++) {
		pids[i] = fork();
		ASSERT_LE(0, pids[i]);
		if (pids[i] == 0) {
			struct outcome out;
			int bad = 0;

			/* Each its own page: a check failed in one run is that run's. */
			proto_fail_line = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
					       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
			for (int k = 0; k < 5 && proto_fail_line != MAP_FAILED; k++) {
				run_roles(seed_root, seed_roles, 2, (unsigned int)k % 2, &out);
				bad |= out.fail_line || out.error != CTX_OK || out.gas_used != 100;
			}
			_exit(bad || proto_fail_line == MAP_FAILED);
		}
	}
	for (int i = 0; i < 4; i++) {
		ASSERT_EQ(pids[i], waitpid(pids[i], &st, 0));
		EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
}

TEST_HARNESS_MAIN
