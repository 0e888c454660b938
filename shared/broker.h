/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * The broker core: the one state machine that keeps every context's system
 * data (SPEC §4, §5, §7).  No I/O, no allocation, no libc: the caller hands
 * in the frame storage, and the transport (the kernel module's ioctls, the
 * embedded broker's socketpairs, or the in-process interpreter) only turns
 * messages into these calls and their results back into messages.
 *
 * An "owner" is whatever identifies the endpoint a request came from (a
 * context fd, a socket, a context id); only the owner of the top frame may
 * call, return, fail, ask `caller` or sync fmp.  That single rule is what
 * stops a process from returning into, or speaking for, a context that is
 * not its own.
 */
#ifndef CTXVM_BROKER_H
#define CTXVM_BROKER_H

#include "compat.h"

#define CTXVM_FMP_INIT 0x80000000ULL    /* 2^31 */
#define CTXVM_MAX_KERNEL_PROCS 256

enum ctxvm_frame_kind {
	CTXVM_FRAME_ROOT = 0,
	CTXVM_FRAME_CALL = 1,
	CTXVM_FRAME_DYNCALL = 2,
	CTXVM_FRAME_SYSCALL = 3,
	CTXVM_FRAME_DELEGATECALL = 4,
	CTXVM_FRAME_DYNDELEGATECALL = 5,
	CTXVM_FRAME_KIND_MAX = 5,
};

/* Results; 0 is success.  Each refusal has its own code so tests can tell them apart. */
enum ctxvm_broker_status {
	CTXVM_B_OK = 0,
	CTXVM_B_NOT_OWNER,          /* requester does not own the top frame */
	CTXVM_B_BAD_KIND,           /* unknown frame kind, or ROOT asked for */
	CTXVM_B_SYSCALL_IN_KERNEL,  /* syscall while a syscall is executing */
	CTXVM_B_NOT_KERNEL_TARGET,  /* syscall target is not a kernel export */
	CTXVM_B_DEPTH,              /* frame stack full (CallDepthExceeded) */
	CTXVM_B_GAS,                /* gas report above the frame's limit */
	CTXVM_B_NO_SESSION,         /* session not started, finished or failed */
	CTXVM_B_ROOT_RETURN,        /* the root frame ends with finish, not return */
	CTXVM_B_BAD_FMP,            /* fmp sync from a context other than 0 */
	CTXVM_B_TOO_MANY,           /* kernel table full */
};

struct ctxvm_frame {
	ctx_u64 ctx_id;
	ctx_u64 owner;
	ctx_u64 caller[4];          /* caller digest `caller` answers with */
	ctx_u64 proc[4];            /* digest of the procedure the frame runs */
	ctx_u64 gas_limit;
	ctx_u64 gas_left_at_call;   /* what the owner had left when it called out */
	ctx_u64 fmp0_saved;         /* context 0's fmp when the frame was pushed */
	ctx_u32 kind;
	ctx_u32 in_kernel;
	ctx_u32 guarded;
	ctx_u32 reserved;
};

enum ctxvm_session_state {
	CTXVM_S_IDLE = 0,
	CTXVM_S_RUNNING,
	CTXVM_S_DONE,
	CTXVM_S_FAILED,
};

struct ctxvm_session_core {
	struct ctxvm_frame *frames;
	ctx_u32 capacity;           /* frame storage, also the depth limit */
	ctx_u32 depth;
	ctx_u32 max_depth_seen;
	ctx_u32 state;
	ctx_u64 next_ctx_id;
	ctx_u64 contexts;           /* contexts created, the root included */
	ctx_u64 ctx0_owner;
	ctx_u64 ctx0_fmp;           /* last synced fmp of context 0 */
	ctx_u64 kernel[CTXVM_MAX_KERNEL_PROCS][4];
	ctx_u32 nkernel;
	ctx_u32 reserved;
};

/* What a call needs, filled by the transport from the requester's message. */
struct ctxvm_call_request {
	ctx_u32 kind;               /* CTXVM_FRAME_CALL ... DYNDELEGATECALL */
	ctx_u32 reserved;
	ctx_u64 target[4];          /* digest of the procedure to run */
	ctx_u64 gas_remaining;      /* the requester's, after paying for the call */
	ctx_u64 gas_arg;            /* delegatecall's gas operand */
	ctx_u64 new_owner;          /* endpoint of the new context; ignored for syscall */
	ctx_u64 requester_fmp;      /* the requester's fmp; recorded if it is context 0 */
};

/* What the broker decided: the new frame's system data. */
struct ctxvm_call_grant {
	ctx_u64 ctx_id;
	ctx_u64 owner;              /* who runs it: new_owner, or context 0's for syscall */
	ctx_u64 caller[4];
	ctx_u64 gas_limit;
	ctx_u64 fmp;                /* where the callee's fmp starts */
	ctx_u32 in_kernel;
	ctx_u32 new_context;        /* 1: a fresh context (fresh memory) must be made */
};

/* The outcome of a return or a failure, for the transport to deliver. */
struct ctxvm_unwind {
	ctx_u64 resume_owner;       /* endpoint to wake with the result */
	ctx_u64 gas_used;           /* to charge to the resumed frame */
	ctx_u64 fmp0_restore;       /* context 0's fmp after the unwind */
	ctx_u32 frames_popped;
	ctx_u32 guarded_failure;    /* 1: a delegatecall failed and its delegator goes on */
	ctx_u32 session_failed;     /* 1: nothing caught it; the run has failed */
	/* 1: the popped frame was a delegatecall (its return pushes a flag) */
	ctx_u32 popped_guarded;
};

void ctxvm_core_init(struct ctxvm_session_core *s, struct ctxvm_frame *storage,
		     ctx_u32 capacity);
int ctxvm_core_add_kernel_proc(struct ctxvm_session_core *s, const ctx_u64 digest[4]);
int ctxvm_core_start(struct ctxvm_session_core *s, ctx_u64 root_owner, const ctx_u64 proc[4],
		     ctx_u64 gas);

int ctxvm_core_call(struct ctxvm_session_core *s, ctx_u64 requester,
		    const struct ctxvm_call_request *req, struct ctxvm_call_grant *grant);
int ctxvm_core_return(struct ctxvm_session_core *s, ctx_u64 requester, ctx_u64 gas_used,
		      struct ctxvm_unwind *out);
int ctxvm_core_fail(struct ctxvm_session_core *s, ctx_u64 requester, ctx_u64 gas_used,
		    struct ctxvm_unwind *out);
int ctxvm_core_abort(struct ctxvm_session_core *s, ctx_u64 dead_owner, struct ctxvm_unwind *out);
int ctxvm_core_finish(struct ctxvm_session_core *s, ctx_u64 requester);
int ctxvm_core_caller(const struct ctxvm_session_core *s, ctx_u64 requester, ctx_u64 out[4]);
/*
 * A refusal as the negative errno both transports answer with (the ioctl's
 * return value, or the embedded broker's CTXVM_MSG_STATUS); 0 for CTXVM_B_OK.
 */
int ctxvm_status_errno(int status);
int ctxvm_core_sync_fmp(struct ctxvm_session_core *s, ctx_u64 requester, ctx_u64 fmp);

static inline const struct ctxvm_frame *ctxvm_core_top(const struct ctxvm_session_core *s)
{
	return s->depth ? &s->frames[s->depth - 1] : NULL;
}

#endif /* CTXVM_BROKER_H */
