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
#include <linux/ioctl.h>

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
	/*
	 * Embedded broker only: a request's return value, as the ioctl would
	 * return it (status = 0 or a positive errno).  Every request is
	 * answered before anything it causes is sent: CALL by its first
	 * message or a refusal, CALLER by CALLER_REPLY or a refusal, RETURN,
	 * FAIL and FINISH by STATUS.
	 */
	CTXVM_MSG_STATUS = 21,
	CTXVM_MSG_TYPE_MAX = 21,
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

/*
 * ---- The kernel module's ioctl API (/dev/ctxvm), shaped like KVM's ----
 *
 * /dev/ctxvm (system fd):
 *   CTXVM_GET_API_VERSION    arg 0; returns CTXVM_API_VERSION.
 *   CTXVM_CHECK_EXTENSION    arg = CTXVM_CAP_*; returns its value, 0 if unknown.
 *   CTXVM_CREATE_SESSION     arg 0 (flags, none defined); returns a session fd
 *                            (anon inode, O_CLOEXEC).  -EMFILE past max_sessions.
 *
 * Session fd (the runner; any process holding it may use it):
 *   CTXVM_ADD_KERNEL_PROC    a kernel export's digest (before START only).
 *   CTXVM_START              creates context 0's endpoint, queues its RUN
 *                            (kind ROOT) and returns the endpoint id.
 *   CTXVM_CONTEXT_FD         returns a context fd (anon inode, O_CLOEXEC) for an
 *                            endpoint named by START or by a SPAWN event; once
 *                            per endpoint (-EBUSY after).
 *   CTXVM_EVENT              blocks (interruptibly) for the next event; -EAGAIN
 *                            with O_NONBLOCK; poll() says EPOLLIN when one waits.
 *                            Every frame push (SPAWN, ENTER) and pop (RETURN,
 *                            FAIL, DIED, FINISH) is an event, so the runner can
 *                            mirror the stack for traces and backtraces; a
 *                            context whose call or return would overfill the
 *                            queue sleeps until the runner reads.
 *   CTXVM_SESSION_INFO       state, depth, contexts made, deepest stack.
 *   Closing the session fd ends the session: unattached endpoints, queued
 *   messages and events are freed; every context fd answers -ESHUTDOWN.
 *
 * Context fd (one context process):
 *   CTXVM_CTX_BIND           binds the fd to the calling thread group.  Every
 *                            other ioctl from any other process (and before the
 *                            bind) is -EPERM; a second BIND is -EBUSY.  The
 *                            runner creates the fd, forks, closes its copy, and
 *                            the child binds first thing.
 *   CTXVM_CTX_WAIT           blocks for the next message to this context (RUN,
 *                            RESULT, GUARD_BEGIN, GUARD_END); -ESHUTDOWN when
 *                            none can come any more (its activation is over,
 *                            the run ended or failed, the session fd closed);
 *                            what is still queued then is dropped, never
 *                            delivered.  A message it cannot write out
 *                            (-EFAULT) stays first in line for the next WAIT.
 *   CTXVM_CTX_CALL           a CALL message (kind = frame kind): pushes the
 *                            frame, then waits as CTXVM_CTX_WAIT and returns
 *                            the first message (context 0 receives nested RUNs
 *                            here).  Interrupted by a signal after the call was
 *                            made, it returns -EINTR: fetch the rest with WAIT.
 *                            Likewise -EFAULT when the call was made but the
 *                            message cannot be written out.
 *   CTXVM_CTX_RETURN         a RETURN message (gas used, result window).
 *   CTXVM_CTX_FAIL           a FAIL message (error kind, pc, gas used, text).
 *   CTXVM_CTX_CALLER         a CALLER message in, the CALLER_REPLY out.
 *   CTXVM_CTX_FINISH         a FINISH message (root frame only).
 *   CTXVM_CTX_ABORT          a FAIL message saying why this process is about to
 *                            die (the sandbox's SIGSYS handler): the endpoint is
 *                            released at once, as by its death, and the DIED
 *                            event carries the message.
 *   Each takes a struct ctxvm_msg whose type must match the ioctl and whose
 *   reserved words must be zero (-EINVAL).  A context process that dies, or
 *   closes its context fd, releases its frames (unwind to the nearest
 *   delegatecall, else the run fails).
 *
 * Broker refusals (shared/broker.h) as errnos: not the top frame's owner
 * -EBUSY, bad frame kind -EINVAL, syscall while in a syscall -EDEADLK, syscall
 * target not a kernel export -ENOENT, frame stack full -ELOOP, gas above the
 * frame's limit -ERANGE, no running session -ESHUTDOWN, return from the root
 * frame -EPROTO, kernel table full -ENOSPC.  Out of endpoints
 * (max_contexts) -EMFILE.
 *
 * Module parameters (/sys/module/ctxvm/parameters): max_sessions,
 * max_contexts (live endpoints per session), max_depth (frames per session);
 * read when a session is created.
 */
#define CTXVM_IO 0xC7

/* CTXVM_CHECK_EXTENSION */
enum ctxvm_cap {
	CTXVM_CAP_MAX_SESSIONS = 1,
	CTXVM_CAP_MAX_CONTEXTS = 2,
	CTXVM_CAP_MAX_DEPTH = 3,
	CTXVM_CAP_LIVE_SESSIONS = 4,
	CTXVM_CAP_LIVE_ALLOCS = 5,      /* module-wide live allocations */
	CTXVM_CAP_MSG_SIZE = 6,         /* sizeof(struct ctxvm_msg) */
};

struct ctxvm_kernel_proc {
	__u64 digest[4];
	__u32 flags;                    /* must be 0 */
	__u32 pad;                      /* must be 0 */
	__u64 reserved[2];              /* must be 0 */
};

struct ctxvm_start {
	__u64 digest[4];                /* in: the root procedure */
	__u64 gas;                      /* in: the run's gas */
	__u64 proc;                     /* in: copied into the RUN */
	__u64 budget;                   /* in: copied into the RUN */
	__u64 window[CTXVM_WINDOW];     /* in: the inputs, copied into the RUN */
	__u64 endpoint;                 /* out: context 0's endpoint id */
	__u64 depth_limit;              /* in: frames allowed; 0: the module's max_depth */
	__u32 flags;                    /* must be 0 */
	__u32 pad;                      /* must be 0 */
	__u64 reserved[3];              /* must be 0 */
};

struct ctxvm_context_fd {
	__u64 endpoint;
	__u32 flags;                    /* must be 0 (the fd is always O_CLOEXEC) */
	__u32 pad;                      /* must be 0 */
	__u64 reserved[2];              /* must be 0 */
};

enum ctxvm_event_type {
	CTXVM_EVENT_SPAWN = 1,          /* start a process for `endpoint`; msg = its RUN */
	CTXVM_EVENT_FINISH = 2,         /* the run ended; msg = the FINISH */
	CTXVM_EVENT_FAIL = 3,           /* a frame failed; msg = the FAIL */
	/* `endpoint` died or closed holding frames; msg = its CTXVM_CTX_ABORT, if any */
	CTXVM_EVENT_DIED = 4,
	CTXVM_EVENT_ENTER = 5,          /* a syscall frame began in context 0; msg = its RUN */
	CTXVM_EVENT_RETURN = 6,         /* `endpoint`'s top frame returned; msg = the RETURN */
};

#define CTXVM_EVENT_F_CAUGHT 0x1U             /* a delegatecall caught it */
#define CTXVM_EVENT_F_SESSION_FAILED 0x2U     /* nothing caught it */

struct ctxvm_event {
	__u32 type;                     /* enum ctxvm_event_type */
	__u32 flags;                    /* CTXVM_EVENT_F_* */
	__u64 endpoint;
	__u64 depth;                    /* frame stack depth after the event */
	__u64 from;                     /* SPAWN, ENTER: the endpoint that called */
	/*
	 * FAIL, DIED: gas the unwound frames spent, as charged to the frame
	 * resumed (or the run's total)
	 */
	__u64 gas_used;
	__u64 reserved[3];              /* zero */
	struct ctxvm_msg msg;
};

struct ctxvm_session_info {
	__u32 state;                    /* enum ctxvm_session_state (broker.h) */
	__u32 depth;
	__u32 max_depth_seen;
	__u32 pad;
	__u64 contexts;
	__u64 endpoints;                /* live endpoints */
	__u64 reserved[4];
};

/* /dev/ctxvm */
#define CTXVM_GET_API_VERSION   _IO(CTXVM_IO, 0x00)
#define CTXVM_CREATE_SESSION    _IO(CTXVM_IO, 0x01)
#define CTXVM_CHECK_EXTENSION   _IO(CTXVM_IO, 0x02)
/* session fd */
#define CTXVM_ADD_KERNEL_PROC   _IOW(CTXVM_IO, 0x10, struct ctxvm_kernel_proc)
#define CTXVM_START             _IOWR(CTXVM_IO, 0x11, struct ctxvm_start)
#define CTXVM_CONTEXT_FD        _IOW(CTXVM_IO, 0x12, struct ctxvm_context_fd)
#define CTXVM_EVENT             _IOR(CTXVM_IO, 0x13, struct ctxvm_event)
#define CTXVM_SESSION_INFO      _IOR(CTXVM_IO, 0x14, struct ctxvm_session_info)
/* context fd */
#define CTXVM_CTX_BIND          _IO(CTXVM_IO, 0x20)
#define CTXVM_CTX_WAIT          _IOR(CTXVM_IO, 0x21, struct ctxvm_msg)
#define CTXVM_CTX_CALL          _IOWR(CTXVM_IO, 0x22, struct ctxvm_msg)
#define CTXVM_CTX_RETURN        _IOW(CTXVM_IO, 0x23, struct ctxvm_msg)
#define CTXVM_CTX_FAIL          _IOW(CTXVM_IO, 0x24, struct ctxvm_msg)
#define CTXVM_CTX_CALLER        _IOWR(CTXVM_IO, 0x25, struct ctxvm_msg)
#define CTXVM_CTX_FINISH        _IOW(CTXVM_IO, 0x26, struct ctxvm_msg)
#define CTXVM_CTX_ABORT         _IOW(CTXVM_IO, 0x27, struct ctxvm_msg)

#endif /* CTXVM_UAPI_H */
