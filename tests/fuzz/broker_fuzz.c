// SPDX-License-Identifier: MIT
/*
 * libFuzzer target for the broker core (shared/broker.c): the input is a
 * sequence of operations from arbitrary requesters with arbitrary arguments,
 * as hostile context processes could send them.  After every step the
 * session's invariants must hold; a violation aborts (a finding).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../shared/broker.h"

#define DEPTH 12
#define OWNERS 6

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct cursor {
	const uint8_t *p;
	size_t left;
};

static uint64_t take(struct cursor *c, unsigned bytes)
{
	uint64_t v = 0;

	for (unsigned i = 0; i < bytes && c->left; i++, c->left--)
		v = (v << 8) | *c->p++;
	return v;
}

static const ctx_u64 KERNEL[4] = { 7, 7, 7, 7 };

static void digest_of(uint64_t pick, ctx_u64 d[4])
{
	/* Mostly a kernel target or one of three user procedures. */
	for (int i = 0; i < 4; i++)
		d[i] = pick % 4 == 0 ? KERNEL[i] : pick % 4;
}

static void check_invariants(const struct ctxvm_session_core *s)
{
	if (s->depth > s->capacity || s->max_depth_seen > s->capacity)
		abort();
	if (s->state == CTXVM_S_RUNNING) {
		if (s->depth == 0 || s->frames[0].kind != CTXVM_FRAME_ROOT)
			abort();
		if (s->depth > s->max_depth_seen)
			abort();
	} else if (s->depth != 0 && s->state != CTXVM_S_IDLE) {
		abort();
	}
	for (ctx_u32 i = 1; i < s->depth; i++) {
		const struct ctxvm_frame *f = &s->frames[i];
		const struct ctxvm_frame *below = &s->frames[i - 1];

		if (f->kind < CTXVM_FRAME_CALL || f->kind > CTXVM_FRAME_KIND_MAX)
			abort();
		/* Nobody gets more gas than its caller had left. */
		if (f->gas_limit > below->gas_left_at_call || below->gas_left_at_call > below->gas_limit)
			abort();
		/* Syscalls run in context 0 with the issuer's identity, never nested. */
		if (f->kind == CTXVM_FRAME_SYSCALL) {
			if (f->ctx_id != 0 || f->owner != s->ctx0_owner || !f->in_kernel ||
			    below->in_kernel || memcmp(f->caller, below->caller, sizeof(f->caller)))
				abort();
		} else if (f->ctx_id == 0 || f->in_kernel) {
			abort();
		}
		/* call/dyncall: the callee's identity; delegatecall: the delegator's. */
		if ((f->kind == CTXVM_FRAME_CALL || f->kind == CTXVM_FRAME_DYNCALL) &&
		    memcmp(f->caller, f->proc, sizeof(f->caller)))
			abort();
		if ((f->kind == CTXVM_FRAME_DELEGATECALL || f->kind == CTXVM_FRAME_DYNDELEGATECALL) !=
		    (f->guarded != 0))
			abort();
		if (f->guarded && memcmp(f->caller, below->caller, sizeof(f->caller)))
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ctxvm_session_core s;
	struct ctxvm_frame frames[DEPTH];
	struct cursor c = { data, size };
	ctx_u64 root_proc[4] = { 9, 9, 9, 9 };

	ctxvm_core_init(&s, frames, (ctx_u32)(take(&c, 1) % (DEPTH + 1)));
	if (take(&c, 1) & 1)
		ctxvm_core_add_kernel_proc(&s, KERNEL);
	ctxvm_core_start(&s, 0, root_proc, take(&c, 3));
	check_invariants(&s);

	while (c.left) {
		uint64_t op = take(&c, 1);
		ctx_u64 who = take(&c, 1) % OWNERS;
		struct ctxvm_call_request req;
		struct ctxvm_call_grant grant;
		struct ctxvm_unwind u;
		ctx_u64 out[4];

		switch (op % 8) {
		case 0:
		case 1: /* calls are the common case */
			memset(&req, 0, sizeof(req));
			req.kind = (ctx_u32)(take(&c, 1) % 8);
			digest_of(take(&c, 1), req.target);
			req.gas_remaining = take(&c, 3);
			req.gas_arg = take(&c, 3);
			req.new_owner = take(&c, 1) % OWNERS;
			req.requester_fmp = take(&c, 4);
			ctxvm_core_call(&s, who, &req, &grant);
			break;
		case 2:
			ctxvm_core_return(&s, who, take(&c, 3), &u);
			break;
		case 3:
			ctxvm_core_fail(&s, who, take(&c, 3), &u);
			break;
		case 4:
			ctxvm_core_abort(&s, who, &u);
			break;
		case 5:
			ctxvm_core_caller(&s, who, out);
			break;
		case 6:
			ctxvm_core_sync_fmp(&s, who, take(&c, 4));
			break;
		default:
			ctxvm_core_finish(&s, who);
			break;
		}
		check_invariants(&s);
	}
	return 0;
}
