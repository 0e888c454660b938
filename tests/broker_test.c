// SPDX-License-Identifier: MIT
/*
 * The broker core (shared/broker.c) on its own: every operation, every
 * refusal, and the unwinding rules of SPEC §4, §5 and §7.
 */
#include <errno.h>
#include <string.h>

#include "../shared/broker.h"
#include "kselftest_harness.h"

#define ROOT_OWNER 100
#define DEPTH 8

static const ctx_u64 ROOT_PROC[4] = { 1, 2, 3, 4 };
static const ctx_u64 P[4] = { 11, 12, 13, 14 };
static const ctx_u64 U[4] = { 21, 22, 23, 24 };
static const ctx_u64 K1[4] = { 31, 32, 33, 34 };
static const ctx_u64 K2[4] = { 41, 42, 43, 44 };
static const ctx_u64 ZERO[4];

FIXTURE(core) {
	struct ctxvm_session_core s;
	struct ctxvm_frame frames[DEPTH];
	struct ctxvm_call_grant g;
	struct ctxvm_unwind u;
};

FIXTURE_SETUP(core)
{
	ctxvm_core_init(&self->s, self->frames, DEPTH);
	ASSERT_EQ(CTXVM_B_OK, ctxvm_core_add_kernel_proc(&self->s, K1));
	ASSERT_EQ(CTXVM_B_OK, ctxvm_core_add_kernel_proc(&self->s, K2));
	ASSERT_EQ(CTXVM_B_OK, ctxvm_core_start(&self->s, ROOT_OWNER, ROOT_PROC, 1000000));
}

#ifdef CTXVM_COVERAGE
/* The harness ends each test with _exit(): write the coverage data first. */
void __gcov_dump(void);
#define COVERAGE_DUMP() __gcov_dump()
#else
#define COVERAGE_DUMP() do { } while (0)
#endif

FIXTURE_TEARDOWN(core)
{
	COVERAGE_DUMP();
}

static int call(struct ctxvm_session_core *s, ctx_u64 requester, ctx_u32 kind,
		const ctx_u64 target[4], ctx_u64 gas, ctx_u64 gas_arg, ctx_u64 new_owner,
		ctx_u64 fmp, struct ctxvm_call_grant *g)
{
	struct ctxvm_call_request req = {
		.kind = kind,
		.gas_remaining = gas,
		.gas_arg = gas_arg,
		.new_owner = new_owner,
		.requester_fmp = fmp,
	};

	memcpy(req.target, target, sizeof(req.target));
	return ctxvm_core_call(s, requester, &req, g);
}

TEST_F(core, root_caller_is_zero)
{
	ctx_u64 c[4] = { 9, 9, 9, 9 };

	ASSERT_EQ(CTXVM_B_OK, ctxvm_core_caller(&self->s, ROOT_OWNER, c));
	EXPECT_EQ(0, memcmp(c, ZERO, sizeof(c)));
	EXPECT_EQ(1u, self->s.depth);
	EXPECT_EQ(1u, self->s.contexts);
}

TEST_F(core, call_makes_a_new_context_whose_caller_is_the_callee)
{
	ctx_u64 c[4];

	ASSERT_EQ(CTXVM_B_OK, call(&self->s, ROOT_OWNER, CTXVM_FRAME_CALL, P, 5000, 0, 1,
				   CTXVM_FMP_INIT, &self->g));
	EXPECT_EQ(1u, self->g.ctx_id);
	EXPECT_EQ(1u, self->g.owner);
	EXPECT_EQ(1u, self->g.new_context);
	EXPECT_EQ(5000u, self->g.gas_limit);
	EXPECT_EQ(CTXVM_FMP_INIT, self->g.fmp);
	EXPECT_EQ(0u, self->g.in_kernel);
	EXPECT_EQ(0, memcmp(self->g.caller, P, sizeof(P)));
	ASSERT_EQ(CTXVM_B_OK, ctxvm_core_caller(&self->s, 1, c));
	EXPECT_EQ(0, memcmp(c, P, sizeof(P)));
	EXPECT_EQ(2u, self->s.contexts);
}

TEST_F(core, only_the_top_owner_may_act)
{
	ctx_u64 c[4];

	ASSERT_EQ(CTXVM_B_OK, call(&self->s, ROOT_OWNER, CTXVM_FRAME_CALL, P, 5000, 0, 1, 0, &self->g));
	/* The root is blocked in its call: it may not call, return, ask caller or sync. */
	EXPECT_EQ(CTXVM_B_NOT_OWNER, call(&self->s, ROOT_OWNER, CTXVM_FRAME_CALL, P, 10, 0, 2, 0, &self->g));
	EXPECT_EQ(CTXVM_B_NOT_OWNER, ctxvm_core_return(&self->s, ROOT_OWNER, 0, &self->u));
	EXPECT_EQ(CTXVM_B_NOT_OWNER, ctxvm_core_caller(&self->s, ROOT_OWNER, c));
	EXPECT_EQ(CTXVM_B_NOT_OWNER, ctxvm_core_sync_fmp(&self->s, ROOT_OWNER, 7));
	EXPECT_EQ(CTXVM_B_NOT_OWNER, ctxvm_core_fail(&self->s, ROOT_OWNER, 0, &self->u));
	EXPECT_EQ(CTXVM_B_NOT_OWNER, ctxvm_core_finish(&self->s, ROOT_OWNER));
	/* A stranger neither. */
	EXPECT_EQ(CTXVM_B_NOT_OWNER, ctxvm_core_return(&self->s, 999, 0, &self->u));
	EXPECT_EQ(2u, self->s.depth);
}

TEST_F(core, return_resumes_the_caller_and_refuses_a_second_time)
{
	ASSERT_EQ(CTXVM_B_OK, call(&self->s, ROOT_OWNER, CTXVM_FRAME_CALL, P, 5000, 0, 1, 0, &self->g));
	ASSERT_EQ(CTXVM_B_OK, ctxvm_core_return(&self->s, 1, 1234, &self->u));
	EXPECT_EQ((ctx_u64)ROOT_OWNER, self->u.resume_owner);
	EXPECT_EQ(1234u, self->u.gas_used);
	EXPECT_EQ(1u, self->u.frames_popped);
	EXPECT_EQ(0u, self->u.popped_guarded);
	EXPECT_EQ(CTXVM_B_NOT_OWNER, ctxvm_core_return(&self->s, 1, 0, &self->u));
	EXPECT_EQ(CTXVM_B_ROOT_RETURN, ctxvm_core_return(&self->s, ROOT_OWNER, 0, &self->u));
}

TEST_F(core, gas_reports_above_the_limit_are_refused)
{
	EXPECT_EQ(CTXVM_B_GAS, call(&self->s, ROOT_OWNER, CTXVM_FRAME_CALL, P, 2000000, 0, 1, 0, &self->g));
	ASSERT_EQ(CTXVM_B_OK, call(&self->s, ROOT_OWNER, CTXVM_FRAME_CALL, P, 5000, 0, 1, 0, &self->g));
	EXPECT_EQ(CTXVM_B_GAS, ctxvm_core_return(&self->s, 1, 5001, &self->u));
	EXPECT_EQ(CTXVM_B_OK, ctxvm_core_return(&self->s, 1, 5000, &self->u));
}

TEST_F(core, unknown_kinds_are_refused)
{
	EXPECT_EQ(CTXVM_B_BAD_KIND, call(&self->s, ROOT_OWNER, CTXVM_FRAME_ROOT, P, 10, 0, 1, 0, &self->g));
	EXPECT_EQ(CTXVM_B_BAD_KIND, call(&self->s, ROOT_OWNER, 6, P, 10, 0, 1, 0, &self->g));
	EXPECT_EQ(CTXVM_B_BAD_KIND, call(&self->s, ROOT_OWNER, 0xffffffffu, P, 10, 0, 1, 0, &self->g));
}

TEST_F(core, syscall_runs_in_context_0_with_the_issuers_identity)
{
	ctx_u64 c[4];

	ASSERT_EQ(CTXVM_B_OK, call(&self->s, ROOT_OWNER, CTXVM_FRAME_CALL, P, 50000, 0, 1,
				   CTXVM_FMP_INIT + 8, &self->g));
	ASSERT_EQ(CTXVM_B_OK, call(&self->s, 1, CTXVM_FRAME_SYSCALL, K1, 40000, 0, 77, 0, &self->g));
	EXPECT_EQ(0u, self->g.ctx_id);
	EXPECT_EQ((ctx_u64)ROOT_OWNER, self->g.owner);
	EXPECT_EQ(0u, self->g.new_context);
	EXPECT_EQ(1u, self->g.in_kernel);
	/* Continues above the root's frame, whose fmp the call recorded. */
	EXPECT_EQ(CTXVM_FMP_INIT + 8, self->g.fmp);
	ASSERT_EQ(CTXVM_B_OK, ctxvm_core_caller(&self->s, ROOT_OWNER, c));
	EXPECT_EQ(0, memcmp(c, P, sizeof(P)));
	EXPECT_EQ(2u, self->s.contexts);
}

TEST_F(core, syscall_target_must_be_a_kernel_export)
{
	EXPECT_EQ(CTXVM_B_NOT_KERNEL_TARGET,
		  call(&self->s, ROOT_OWNER, CTXVM_FRAME_SYSCALL, P, 100, 0, 0, 0, &self->g));
}

TEST_F(core, kernel_digests_must_match_in_all_four_elements)
{
	for (int k = 0; k < 4; k++) {
		ctx_u64 near[4] = { K1[0], K1[1], K1[2], K1[3] };

		near[k] ^= 1;
		EXPECT_EQ(CTXVM_B_NOT_KERNEL_TARGET,
			  call(&self->s, ROOT_OWNER, CTXVM_FRAME_SYSCALL, near, 100, 0, 0, 0, &self->g));
	}
}

TEST_F(core, dyncall_identity_is_the_callee)
{
	ASSERT_EQ(CTXVM_B_OK, call(&self->s, ROOT_OWNER, CTXVM_FRAME_DYNCALL, U, 500, 0, 1, 0, &self->g));
	EXPECT_EQ(0, memcmp(self->g.caller, U, sizeof(U)));
	EXPECT_EQ(1u, self->g.new_context);
}

TEST_F(core, failure_gas_is_capped_at_the_frame_limit)
{
	ASSERT_EQ(CTXVM_B_OK, call(&self->s, ROOT_OWNER, CTXVM_FRAME_DELEGATECALL, U, 6400, 100, 1, 0, &self->g));
	/* A lying report cannot charge the delegator more than it gave. */
	ASSERT_EQ(CTXVM_B_OK, ctxvm_core_fail(&self->s, 1, 999999, &self->u));
	EXPECT_EQ(100u, self->u.gas_used);
}

TEST_F(core, the_seed_scenario)
{
	ctx_u64 c[4];

	/* root -call P -syscall K1 -call U -syscall K2 */
	ASSERT_EQ(CTXVM_B_OK, call(&self->s, ROOT_OWNER, CTXVM_FRAME_CALL, P, 900000, 0, 1,
				   CTXVM_FMP_INIT, &self->g));
	ASSERT_EQ(CTXVM_B_OK, call(&self->s, 1, CTXVM_FRAME_SYSCALL, K1, 800000, 0, 0, 0, &self->g));
	EXPECT_EQ(CTXVM_FMP_INIT, self->g.fmp);
	/* K1 allocated 4 locals: its fmp is 2^31+4 when it calls U. */
	ASSERT_EQ(CTXVM_B_OK, call(&self->s, ROOT_OWNER, CTXVM_FRAME_CALL, U, 700000, 0, 2,
				   CTXVM_FMP_INIT + 4, &self->g));
	EXPECT_EQ(CTXVM_FMP_INIT, self->g.fmp);         /* U: a new context */
	ASSERT_EQ(CTXVM_B_OK, ctxvm_core_caller(&self->s, 2, c));
	EXPECT_EQ(0, memcmp(c, U, sizeof(U)));
	ASSERT_EQ(CTXVM_B_OK, call(&self->s, 2, CTXVM_FRAME_SYSCALL, K2, 600000, 0, 0, 0, &self->g));
	EXPECT_EQ(CTXVM_FMP_INIT + 4, self->g.fmp);     /* K2 above K1's locals */
	ASSERT_EQ(CTXVM_B_OK, ctxvm_core_caller(&self->s, ROOT_OWNER, c));
	EXPECT_EQ(0, memcmp(c, U, sizeof(U)));
	/* Nested syscall while K2 runs is refused. */
	EXPECT_EQ(CTXVM_B_SYSCALL_IN_KERNEL,
		  call(&self->s, ROOT_OWNER, CTXVM_FRAME_SYSCALL, K1, 500000, 0, 0, 0, &self->g));
	ASSERT_EQ(CTXVM_B_OK, ctxvm_core_return(&self->s, ROOT_OWNER, 10, &self->u));
	EXPECT_EQ(2u, self->u.resume_owner);
	EXPECT_EQ(CTXVM_FMP_INIT + 4, self->u.fmp0_restore);
	ASSERT_EQ(CTXVM_B_OK, ctxvm_core_return(&self->s, 2, 100, &self->u));
	EXPECT_EQ((ctx_u64)ROOT_OWNER, self->u.resume_owner);
	/* Back in K1: caller is P again. */
	ASSERT_EQ(CTXVM_B_OK, ctxvm_core_caller(&self->s, ROOT_OWNER, c));
	EXPECT_EQ(0, memcmp(c, P, sizeof(P)));
	ASSERT_EQ(CTXVM_B_OK, ctxvm_core_return(&self->s, ROOT_OWNER, 200, &self->u));
	EXPECT_EQ(CTXVM_FMP_INIT, self->u.fmp0_restore);
	ASSERT_EQ(CTXVM_B_OK, ctxvm_core_return(&self->s, 1, 300, &self->u));
	ASSERT_EQ(CTXVM_B_OK, ctxvm_core_finish(&self->s, ROOT_OWNER));
	EXPECT_EQ((ctx_u32)CTXVM_S_DONE, self->s.state);
	EXPECT_EQ(5u, self->s.max_depth_seen);
	EXPECT_EQ(CTXVM_B_NO_SESSION, ctxvm_core_caller(&self->s, ROOT_OWNER, c));
}

TEST_F(core, delegatecall_keeps_the_delegators_identity_and_gas_rule)
{
	ctx_u64 c[4];

	ASSERT_EQ(CTXVM_B_OK, call(&self->s, ROOT_OWNER, CTXVM_FRAME_CALL, P, 64000, 0, 1, 0, &self->g));
	/* Asks for more than it may: gets R - R/64. */
	ASSERT_EQ(CTXVM_B_OK, call(&self->s, 1, CTXVM_FRAME_DELEGATECALL, U, 6400, 99999, 2, 0, &self->g));
	EXPECT_EQ(6300u, self->g.gas_limit);
	ASSERT_EQ(CTXVM_B_OK, ctxvm_core_caller(&self->s, 2, c));
	EXPECT_EQ(0, memcmp(c, P, sizeof(P)));
	ASSERT_EQ(CTXVM_B_OK, ctxvm_core_return(&self->s, 2, 10, &self->u));
	EXPECT_EQ(1u, self->u.popped_guarded);
	/* Asks for less: gets what it asked. */
	ASSERT_EQ(CTXVM_B_OK, call(&self->s, 1, CTXVM_FRAME_DYNDELEGATECALL, U, 6400, 50, 3, 0, &self->g));
	EXPECT_EQ(50u, self->g.gas_limit);
}

TEST_F(core, failure_unwinds_to_the_nearest_delegatecall)
{
	/* root -call P -delegatecall U (guarded) -call P -syscall K1, which fails */
	ASSERT_EQ(CTXVM_B_OK, call(&self->s, ROOT_OWNER, CTXVM_FRAME_CALL, P, 100000, 0, 1, 40, &self->g));
	ASSERT_EQ(CTXVM_B_OK, call(&self->s, 1, CTXVM_FRAME_DELEGATECALL, U, 90000, 1000, 2, 0, &self->g));
	ASSERT_EQ(CTXVM_B_OK, call(&self->s, 2, CTXVM_FRAME_CALL, P, 900, 0, 3, 0, &self->g));
	ASSERT_EQ(CTXVM_B_OK, call(&self->s, 3, CTXVM_FRAME_SYSCALL, K1, 800, 0, 0, 0, &self->g));
	ASSERT_EQ(CTXVM_B_OK, ctxvm_core_fail(&self->s, ROOT_OWNER, 5, &self->u));
	EXPECT_EQ(1u, self->u.guarded_failure);
	EXPECT_EQ(0u, self->u.session_failed);
	EXPECT_EQ(3u, self->u.frames_popped);
	EXPECT_EQ(1u, self->u.resume_owner);
	/* 5 in K1, 100 by P before its syscall, 100 by U before its call. */
	EXPECT_EQ(205u, self->u.gas_used);
	EXPECT_EQ(40u, self->u.fmp0_restore);
	EXPECT_EQ(2u, self->s.depth);
	EXPECT_EQ((ctx_u32)CTXVM_S_RUNNING, self->s.state);
}

TEST_F(core, unguarded_failure_fails_the_session)
{
	ctx_u64 c[4];

	ASSERT_EQ(CTXVM_B_OK, call(&self->s, ROOT_OWNER, CTXVM_FRAME_CALL, P, 1000, 0, 1, 0, &self->g));
	ASSERT_EQ(CTXVM_B_OK, ctxvm_core_fail(&self->s, 1, 5, &self->u));
	EXPECT_EQ(1u, self->u.session_failed);
	EXPECT_EQ(0u, self->u.guarded_failure);
	EXPECT_EQ((ctx_u32)CTXVM_S_FAILED, self->s.state);
	EXPECT_EQ(CTXVM_B_NO_SESSION, ctxvm_core_caller(&self->s, ROOT_OWNER, c));
	EXPECT_EQ(CTXVM_B_NO_SESSION, ctxvm_core_abort(&self->s, ROOT_OWNER, &self->u));
}

TEST_F(core, a_dead_callee_fails_guarded_with_all_its_gas)
{
	ASSERT_EQ(CTXVM_B_OK, call(&self->s, ROOT_OWNER, CTXVM_FRAME_DELEGATECALL, U, 64000, 640, 1, 0, &self->g));
	ASSERT_EQ(CTXVM_B_OK, call(&self->s, 1, CTXVM_FRAME_CALL, P, 600, 0, 2, 0, &self->g));
	/* The delegated context dies while its callee runs: both frames go. */
	ASSERT_EQ(CTXVM_B_OK, ctxvm_core_abort(&self->s, 1, &self->u));
	EXPECT_EQ(1u, self->u.guarded_failure);
	EXPECT_EQ(2u, self->u.frames_popped);
	EXPECT_EQ(640u, self->u.gas_used);
	EXPECT_EQ((ctx_u64)ROOT_OWNER, self->u.resume_owner);
	EXPECT_EQ(1u, self->s.depth);
	EXPECT_EQ(CTXVM_B_NOT_OWNER, ctxvm_core_abort(&self->s, 2, &self->u));
}

TEST_F(core, context_0_dying_fails_the_session)
{
	ASSERT_EQ(CTXVM_B_OK, call(&self->s, ROOT_OWNER, CTXVM_FRAME_DELEGATECALL, U, 64000, 640, 1, 0, &self->g));
	ASSERT_EQ(CTXVM_B_OK, ctxvm_core_abort(&self->s, ROOT_OWNER, &self->u));
	EXPECT_EQ(1u, self->u.session_failed);
}

TEST_F(core, depth_is_bounded_by_the_frame_storage)
{
	ctx_u64 owner = ROOT_OWNER;

	for (ctx_u64 i = 1; i < DEPTH; i++) {
		ASSERT_EQ(CTXVM_B_OK, call(&self->s, owner, CTXVM_FRAME_CALL, P, 1000, 0, i, 0, &self->g));
		owner = i;
	}
	EXPECT_EQ(CTXVM_B_DEPTH, call(&self->s, owner, CTXVM_FRAME_CALL, P, 1000, 0, 99, 0, &self->g));
	EXPECT_EQ((ctx_u32)DEPTH, self->s.depth);
}

TEST_F(core, fmp_sync_only_from_context_0)
{
	ASSERT_EQ(CTXVM_B_OK, ctxvm_core_sync_fmp(&self->s, ROOT_OWNER, CTXVM_FMP_INIT + 12));
	EXPECT_EQ(CTXVM_FMP_INIT + 12, self->s.ctx0_fmp);
	ASSERT_EQ(CTXVM_B_OK, call(&self->s, ROOT_OWNER, CTXVM_FRAME_CALL, P, 1000, 0, 1,
				   CTXVM_FMP_INIT + 12, &self->g));
	EXPECT_EQ(CTXVM_B_BAD_FMP, ctxvm_core_sync_fmp(&self->s, 1, 5));
}

TEST_F(core, finish_only_at_the_root)
{
	ASSERT_EQ(CTXVM_B_OK, call(&self->s, ROOT_OWNER, CTXVM_FRAME_SYSCALL, K1, 1000, 0, 0, 0, &self->g));
	/* The syscall frame is context 0's too, but the run is not over. */
	EXPECT_EQ(CTXVM_B_NOT_OWNER, ctxvm_core_finish(&self->s, ROOT_OWNER));
}

TEST(core_lifecycle)
{
	struct ctxvm_session_core s;
	struct ctxvm_frame frames[2];
	struct ctxvm_call_grant g;
	struct ctxvm_unwind u;
	ctx_u64 c[4];

	ctxvm_core_init(&s, frames, 2);
	/* Nothing works before start. */
	EXPECT_EQ(CTXVM_B_NO_SESSION, call(&s, 0, CTXVM_FRAME_CALL, P, 1, 0, 1, 0, &g));
	EXPECT_EQ(CTXVM_B_NO_SESSION, ctxvm_core_return(&s, 0, 0, &u));
	EXPECT_EQ(CTXVM_B_NO_SESSION, ctxvm_core_caller(&s, 0, c));
	EXPECT_EQ(CTXVM_B_NO_SESSION, ctxvm_core_abort(&s, 0, &u));
	ASSERT_EQ(CTXVM_B_OK, ctxvm_core_start(&s, 5, ROOT_PROC, 10));
	/* Started once only; the kernel table is sealed by start. */
	EXPECT_EQ(CTXVM_B_NO_SESSION, ctxvm_core_start(&s, 5, ROOT_PROC, 10));
	EXPECT_EQ(CTXVM_B_NO_SESSION, ctxvm_core_add_kernel_proc(&s, K1));
	ASSERT_EQ(CTXVM_B_OK, ctxvm_core_finish(&s, 5));
	EXPECT_EQ(CTXVM_B_NO_SESSION, ctxvm_core_finish(&s, 5));

	ctxvm_core_init(&s, frames, 0);
	EXPECT_EQ(CTXVM_B_NO_SESSION, ctxvm_core_start(&s, 5, ROOT_PROC, 10));
	COVERAGE_DUMP();
}

TEST(kernel_table_is_bounded)
{
	static struct ctxvm_session_core s;
	struct ctxvm_frame frames[1];
	ctx_u64 d[4] = { 0 };

	ctxvm_core_init(&s, frames, 1);
	for (int i = 0; i < CTXVM_MAX_KERNEL_PROCS; i++) {
		d[0] = (ctx_u64)i;
		ASSERT_EQ(CTXVM_B_OK, ctxvm_core_add_kernel_proc(&s, d));
	}
	EXPECT_EQ(CTXVM_B_TOO_MANY, ctxvm_core_add_kernel_proc(&s, d));
	COVERAGE_DUMP();
}

/* Each refusal has its own errno, the same on both transports. */
TEST(refusals_map_to_distinct_errnos)
{
	static const int want[] = {
		[CTXVM_B_OK] = 0, [CTXVM_B_NOT_OWNER] = -EBUSY, [CTXVM_B_BAD_KIND] = -EINVAL,
		[CTXVM_B_SYSCALL_IN_KERNEL] = -EDEADLK, [CTXVM_B_NOT_KERNEL_TARGET] = -ENOENT,
		[CTXVM_B_DEPTH] = -ELOOP, [CTXVM_B_GAS] = -ERANGE, [CTXVM_B_NO_SESSION] = -ESHUTDOWN,
		[CTXVM_B_ROOT_RETURN] = -EPROTO, [CTXVM_B_BAD_FMP] = -EINVAL,
		[CTXVM_B_TOO_MANY] = -ENOSPC,
	};

	for (unsigned i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		EXPECT_EQ(want[i], ctxvm_status_errno((int)i));
	EXPECT_EQ(-EINVAL, ctxvm_status_errno(9999));
}

TEST_HARNESS_MAIN
