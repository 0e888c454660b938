/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note OR MIT */
/*
 * ctxvm wire protocol: the fixed-size messages a context process exchanges
 * with its broker.  The embedded broker carries them over SOCK_SEQPACKET
 * socketpairs (one message per packet); the kernel module will carry the
 * same structs through ioctls on a context fd.  Only __u64 fields, no
 * implicit padding, reserved fields must be zero.
 */
#ifndef CTXVM_UAPI_H
#define CTXVM_UAPI_H

#ifdef __KERNEL__
#include <linux/types.h>
#else
#include <linux/types.h>
#endif

#define CTXVM_API_VERSION 1
#define CTXVM_WINDOW 16
#define CTXVM_MSG_TEXT_WORDS 32        /* 256 bytes of NUL-padded text */

enum ctxvm_msg_type {
	/* context -> broker */
	CTXVM_MSG_CALL = 1,             /* start a call/syscall/delegatecall */
	CTXVM_MSG_RETURN = 2,           /* the running frame returned */
	CTXVM_MSG_FAIL = 3,             /* the running frame failed */
	CTXVM_MSG_CALLER = 4,           /* ask the running frame's caller digest */
	CTXVM_MSG_FINISH = 5,           /* the root frame ended (context 0 only) */
	/* broker -> context */
	CTXVM_MSG_RUN = 16,             /* run a procedure as a new frame */
	CTXVM_MSG_RESULT = 17,          /* outcome of this context's CALL */
	CTXVM_MSG_CALLER_REPLY = 18,
	CTXVM_MSG_GUARD_BEGIN = 19,     /* context 0: start journaling memory */
	CTXVM_MSG_GUARD_END = 20,       /* context 0: commit (arg 0) or roll back (1) */
	CTXVM_MSG_TYPE_MAX = 20,
};

/* CTXVM_MSG_RESULT.status */
enum ctxvm_result_status {
	CTXVM_RESULT_OK = 0,            /* window holds the callee's results */
	CTXVM_RESULT_GUARD_FAILED = 1,  /* a delegatecall failed; inputs stand */
	CTXVM_RESULT_ABORT = 2,         /* the run failed elsewhere: stop now */
};

struct ctxvm_msg {
	__u64 type;             /* enum ctxvm_msg_type */
	__u64 kind;             /* CALL/RUN: frame kind (broker.h); FAIL: error kind */
	__u64 proc;             /* CALL/RUN: procedure index */
	__u64 pc;               /* CALL/FAIL: instruction index (backtraces) */
	__u64 gas;              /* CALL: gas left; RETURN/FAIL/RESULT: gas used; RUN: limit */
	__u64 gas_arg;          /* CALL: delegatecall's gas operand */
	__u64 fmp;              /* CALL: requester's fmp; RUN: where fmp starts */
	__u64 ctx_id;           /* RUN: the frame's context id */
	__u64 status;           /* RESULT: enum ctxvm_result_status; GUARD_END: 0/1 */
	__u64 budget;           /* CALL/RUN: stack-depth budget */
	__u64 digest[4];        /* CALL: target; CALLER_REPLY: caller digest */
	__u64 window[CTXVM_WINDOW];
	__u64 text[CTXVM_MSG_TEXT_WORDS];       /* FAIL: message */
	__u64 reserved[4];
};

#endif /* CTXVM_UAPI_H */
