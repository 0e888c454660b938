/* SPDX-License-Identifier: MIT */
/*
 * Inside the interpreter: what a backend (inproc.c, ctxproc.c) needs to run
 * activations and to carry context switches.  Not for the CLI.
 *
 * The loop (interp.c) runs one activation — a context's frame — and leaves
 * every context switch and the `caller` question to the backend's hooks:
 * in-process the hooks ask the broker core directly and recurse; in a
 * sandboxed context process they are messages to the broker.
 */
#ifndef CTXVM_INTERP_CORE_H
#define CTXVM_INTERP_CORE_H

#include "interp.h"
#include "vmmem.h"

struct vm;

struct vm_ctx {
	struct vm_mem *mem;
	uint64_t fmp;
	uint64_t id;
};

struct vm_hooks {
	/*
	 * A context switch.  `window` is the caller's top 16 elements, replaced
	 * by the callee's on success; `*gas` is the caller's remaining gas,
	 * already charged for the instruction, and is reduced by what the
	 * callee used.  Returns CTX_OK, or the error that ends the caller; a
	 * delegatecall failure it caught returns CTX_OK with *guard_failed.
	 */
	enum ctx_error_kind (*invoke)(struct vm *vm, struct vm_ctx *caller_ctx,
				      enum ctx_frame_kind kind, uint32_t proc, fe_t *window,
				      uint64_t *gas, uint64_t gas_arg, uint32_t budget,
				      uint32_t pc, bool *guard_failed);
	/* The running frame's caller digest into out[0..3]. */
	enum ctx_error_kind (*caller)(struct vm *vm, struct vm_ctx *ctx, fe_t *out);
};

struct vm {
	const struct ctx_program *prog;
	const struct run_options *opts;
	struct run_result *res;
	const struct vm_hooks *hooks;
	void *backend;          /* the backend's own state */
	unsigned trace_depth;   /* depth of the next traced node */
	unsigned bt_cap;
};

enum ctx_error_kind vm_activate(struct vm *vm, struct vm_ctx *ctx, uint32_t proc,
				fe_t *window, uint64_t gas_limit, uint64_t *gas_used,
				uint32_t budget, enum ctx_frame_kind kind);
void vm_fail(struct vm *vm, enum ctx_error_kind kind, uint32_t pc, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* A CTXVM_B_* refusal of a call, reported as the requester's run-time error. */
enum ctx_error_kind vm_broker_refusal(struct vm *vm, int status, uint32_t proc, uint32_t pc);
uint64_t now_ns(void);

#endif /* CTXVM_INTERP_CORE_H */
