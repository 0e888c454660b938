// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * The broker core state machine; see broker.h.  Built unchanged into the
 * kernel module and into userspace.
 */
#include "broker.h"

static void digest_copy(ctx_u64 dst[4], const ctx_u64 src[4])
{
	int i;

	for (i = 0; i < 4; i++)
		dst[i] = src[i];
}

static int digest_eq(const ctx_u64 a[4], const ctx_u64 b[4])
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3];
}

void ctxvm_core_init(struct ctxvm_session_core *s, struct ctxvm_frame *storage,
		     ctx_u32 capacity)
{
	memset(s, 0, sizeof(*s));
	s->frames = storage;
	s->capacity = capacity;
	s->state = CTXVM_S_IDLE;
}

int ctxvm_core_add_kernel_proc(struct ctxvm_session_core *s, const ctx_u64 digest[4])
{
	if (s->state != CTXVM_S_IDLE)
		return CTXVM_B_NO_SESSION;
	if (s->nkernel >= CTXVM_MAX_KERNEL_PROCS)
		return CTXVM_B_TOO_MANY;
	digest_copy(s->kernel[s->nkernel++], digest);
	return CTXVM_B_OK;
}

static int is_kernel_proc(const struct ctxvm_session_core *s, const ctx_u64 digest[4])
{
	ctx_u32 i;

	for (i = 0; i < s->nkernel; i++)
		if (digest_eq(s->kernel[i], digest))
			return 1;
	return 0;
}

int ctxvm_core_start(struct ctxvm_session_core *s, ctx_u64 root_owner, const ctx_u64 proc[4],
		     ctx_u64 gas)
{
	struct ctxvm_frame *root;

	if (s->state != CTXVM_S_IDLE || s->capacity == 0)
		return CTXVM_B_NO_SESSION;
	root = &s->frames[0];
	memset(root, 0, sizeof(*root));
	root->kind = CTXVM_FRAME_ROOT;
	root->owner = root_owner;
	root->gas_limit = gas;
	root->fmp0_saved = CTXVM_FMP_INIT;
	digest_copy(root->proc, proc);
	s->depth = 1;
	s->max_depth_seen = 1;
	s->ctx0_owner = root_owner;
	s->ctx0_fmp = CTXVM_FMP_INIT;
	s->next_ctx_id = 1;
	s->contexts = 1;
	s->state = CTXVM_S_RUNNING;
	return CTXVM_B_OK;
}

/*
 * The one gate every frame operation passes: a running session whose top
 * frame is the requester's.
 */
static struct ctxvm_frame *owned_top(const struct ctxvm_session_core *s, ctx_u64 requester,
				     int *status)
{
	struct ctxvm_frame *top;

	/* A running session always has its root frame. */
	if (s->state != CTXVM_S_RUNNING) {
		*status = CTXVM_B_NO_SESSION;
		return NULL;
	}
	top = &s->frames[s->depth - 1];
	if (top->owner != requester) {
		*status = CTXVM_B_NOT_OWNER;
		return NULL;
	}
	*status = CTXVM_B_OK;
	return top;
}

int ctxvm_core_call(struct ctxvm_session_core *s, ctx_u64 requester,
		    const struct ctxvm_call_request *req, struct ctxvm_call_grant *grant)
{
	struct ctxvm_frame *top, *frame;
	int guarded, status;
	ctx_u64 limit;

	top = owned_top(s, requester, &status);
	if (!top)
		return status;
	if (req->kind < CTXVM_FRAME_CALL || req->kind > CTXVM_FRAME_KIND_MAX)
		return CTXVM_B_BAD_KIND;
	if (req->gas_remaining > top->gas_limit)
		return CTXVM_B_GAS;
	if (req->kind == CTXVM_FRAME_SYSCALL) {
		if (top->in_kernel)
			return CTXVM_B_SYSCALL_IN_KERNEL;
		if (!is_kernel_proc(s, req->target))
			return CTXVM_B_NOT_KERNEL_TARGET;
	}
	if (s->depth >= s->capacity)
		return CTXVM_B_DEPTH;

	guarded = req->kind == CTXVM_FRAME_DELEGATECALL ||
		  req->kind == CTXVM_FRAME_DYNDELEGATECALL;
	limit = req->gas_remaining;
	if (guarded) {
		/* The delegator always keeps 1/64 to handle a failure. */
		limit -= limit / 64;
		if (req->gas_arg < limit)
			limit = req->gas_arg;
	}
	if (top->ctx_id == 0)
		s->ctx0_fmp = req->requester_fmp;
	top->gas_left_at_call = req->gas_remaining;

	frame = &s->frames[s->depth];
	memset(frame, 0, sizeof(*frame));
	frame->kind = req->kind;
	frame->guarded = guarded;
	frame->in_kernel = req->kind == CTXVM_FRAME_SYSCALL;
	frame->gas_limit = limit;
	frame->fmp0_saved = s->ctx0_fmp;
	digest_copy(frame->proc, req->target);
	if (req->kind == CTXVM_FRAME_CALL || req->kind == CTXVM_FRAME_DYNCALL)
		digest_copy(frame->caller, req->target);
	else    /* syscall and delegatecall act with the issuing frame's identity */
		digest_copy(frame->caller, top->caller);
	if (req->kind == CTXVM_FRAME_SYSCALL) {
		frame->ctx_id = 0;
		frame->owner = s->ctx0_owner;
	} else {
		frame->ctx_id = s->next_ctx_id++;
		frame->owner = req->new_owner;
		s->contexts++;
	}
	s->depth++;
	if (s->depth > s->max_depth_seen)
		s->max_depth_seen = s->depth;

	memset(grant, 0, sizeof(*grant));
	grant->ctx_id = frame->ctx_id;
	grant->owner = frame->owner;
	digest_copy(grant->caller, frame->caller);
	grant->gas_limit = limit;
	grant->fmp = frame->ctx_id == 0 ? s->ctx0_fmp : CTXVM_FMP_INIT;
	grant->in_kernel = frame->in_kernel;
	grant->new_context = frame->ctx_id != 0;
	return CTXVM_B_OK;
}

int ctxvm_core_return(struct ctxvm_session_core *s, ctx_u64 requester, ctx_u64 gas_used,
		      struct ctxvm_unwind *out)
{
	struct ctxvm_frame *top;
	int status;

	top = owned_top(s, requester, &status);
	if (!top)
		return status;
	if (s->depth == 1)
		return CTXVM_B_ROOT_RETURN;
	if (gas_used > top->gas_limit)
		return CTXVM_B_GAS;
	memset(out, 0, sizeof(*out));
	out->gas_used = gas_used;
	out->fmp0_restore = top->fmp0_saved;
	out->popped_guarded = top->guarded;
	out->frames_popped = 1;
	s->ctx0_fmp = top->fmp0_saved;
	s->depth--;
	out->resume_owner = s->frames[s->depth - 1].owner;
	return CTXVM_B_OK;
}

/*
 * Pops frames [from, depth) and the ones below until a guarded frame has
 * been popped; `used` is what the frame at `from` consumed.  Each frame
 * popped on the way down adds what it had spent before its call.
 */
static void unwind_from(struct ctxvm_session_core *s, ctx_u32 from, ctx_u64 used,
			struct ctxvm_unwind *out)
{
	ctx_u32 i = from;

	memset(out, 0, sizeof(*out));
	out->frames_popped = s->depth - from;
	for (;;) {
		struct ctxvm_frame *f = &s->frames[i];

		if (used > f->gas_limit)
			used = f->gas_limit;
		if (f->guarded) {
			out->guarded_failure = 1;
			out->gas_used = used;
			out->fmp0_restore = f->fmp0_saved;
			out->resume_owner = s->frames[i - 1].owner;
			s->ctx0_fmp = f->fmp0_saved;
			s->depth = i;
			return;
		}
		if (i == 0)
			break;
		i--;
		out->frames_popped++;
		used += s->frames[i].gas_limit - s->frames[i].gas_left_at_call;
	}
	out->session_failed = 1;
	out->gas_used = used;
	s->depth = 0;
	s->state = CTXVM_S_FAILED;
}

int ctxvm_core_fail(struct ctxvm_session_core *s, ctx_u64 requester, ctx_u64 gas_used,
		    struct ctxvm_unwind *out)
{
	int status;

	if (!owned_top(s, requester, &status))
		return status;
	unwind_from(s, s->depth - 1, gas_used, out);
	return CTXVM_B_OK;
}

int ctxvm_core_abort(struct ctxvm_session_core *s, ctx_u64 dead_owner, struct ctxvm_unwind *out)
{
	ctx_u32 i;

	if (s->state != CTXVM_S_RUNNING)
		return CTXVM_B_NO_SESSION;
	for (i = 0; i < s->depth; i++)
		if (s->frames[i].owner == dead_owner)
			break;
	if (i == s->depth)
		return CTXVM_B_NOT_OWNER;
	/* Its frames and everything above are gone; a killed context spent all it had. */
	unwind_from(s, i, s->frames[i].gas_limit, out);
	return CTXVM_B_OK;
}

int ctxvm_core_finish(struct ctxvm_session_core *s, ctx_u64 requester)
{
	int status;

	if (!owned_top(s, requester, &status))
		return status;
	if (s->depth != 1)
		return CTXVM_B_NOT_OWNER;
	s->depth = 0;
	s->state = CTXVM_S_DONE;
	return CTXVM_B_OK;
}

int ctxvm_core_caller(const struct ctxvm_session_core *s, ctx_u64 requester, ctx_u64 out[4])
{
	const struct ctxvm_frame *top;
	int status;

	top = owned_top(s, requester, &status);
	if (!top)
		return status;
	digest_copy(out, top->caller);
	return CTXVM_B_OK;
}

int ctxvm_core_sync_fmp(struct ctxvm_session_core *s, ctx_u64 requester, ctx_u64 fmp)
{
	struct ctxvm_frame *top;
	int status;

	top = owned_top(s, requester, &status);
	if (!top)
		return status;
	if (top->ctx_id != 0)
		return CTXVM_B_BAD_FMP;
	s->ctx0_fmp = fmp;
	return CTXVM_B_OK;
}

int ctxvm_status_errno(int status)
{
	switch (status) {
	case CTXVM_B_OK:
		return 0;
	case CTXVM_B_NOT_OWNER:
		return -EBUSY;
	case CTXVM_B_SYSCALL_IN_KERNEL:
		return -EDEADLK;
	case CTXVM_B_NOT_KERNEL_TARGET:
		return -ENOENT;
	case CTXVM_B_DEPTH:
		return -ELOOP;
	case CTXVM_B_GAS:
		return -ERANGE;
	case CTXVM_B_NO_SESSION:
		return -ESHUTDOWN;
	case CTXVM_B_ROOT_RETURN:
		return -EPROTO;
	case CTXVM_B_TOO_MANY:
		return -ENOSPC;
	default:
		return -EINVAL;
	}
}
