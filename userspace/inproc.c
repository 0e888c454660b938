// SPDX-License-Identifier: MIT
/*
 * The `inproc` backend: every context in this one process, no isolation.
 * The reference oracle the isolated backends are diffed against.  Context
 * switches recurse into the interpreter; the system data is kept by the same
 * broker core (shared/broker.c) the isolated backends use.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../shared/broker.h"
#include "interp_core.h"

struct inproc {
	struct vm_ctx ctx0;
	struct ctxvm_session_core core;
	struct ctxvm_frame frames[CTX_CALL_DEPTH_LIMIT];
};

/*
 * A context switch: call, dyncall, syscall, delegatecall, dyndelegatecall.
 * `window` is the caller's top 16 elements, replaced by the callee's on
 * success.  `*gas` is the caller's remaining gas, already charged for the
 * instruction.  Returns CTX_OK, or the error that must end the caller; a
 * failure caught by this delegatecall returns CTX_OK with *guard_failed set.
 *
 * The broker core decides everything about the new frame (identity, gas,
 * fmp, in_kernel) and, on failure, how far to unwind; this function only
 * makes the context and runs it.  Errors unwind the C stack one activation
 * at a time, so only the invoke whose child frame is still on top reports
 * the failure to the core; the delegatecall whose frame the core unwound to
 * is the one that catches it.
 */
static enum ctx_error_kind inproc_invoke(struct vm *vm, struct vm_ctx *caller_ctx,
				     enum ctx_frame_kind kind, uint32_t proc, fe_t *window,
				     uint64_t *gas, uint64_t gas_arg, uint32_t budget, uint32_t pc,
				     bool *guard_failed)
{
	const struct ctx_program *prog = vm->prog;
	struct inproc *st = vm->backend;
	bool guarded = kind == FRAME_DELEGATECALL || kind == FRAME_DYNDELEGATECALL;
	struct ctxvm_call_request req = {
		.kind = (ctx_u32)kind,
		.gas_remaining = *gas,
		.gas_arg = gas_arg,
		.new_owner = st->core.next_ctx_id,
		.requester_fmp = caller_ctx->fmp,
	};
	struct ctxvm_call_grant grant;
	struct ctxvm_unwind unwind;
	struct vm_ctx child = { 0 };
	struct vm_ctx *ctx = &st->ctx0;
	struct vm_journal_mark mark;
	uint32_t my_depth = st->core.depth;     /* index our frame gets */
	uint64_t used = 0;
	enum ctx_error_kind err;
	int status;

	memcpy(req.target, prog->procs[proc].digest, sizeof(req.target));
	status = ctxvm_core_call(&st->core, caller_ctx->id, &req, &grant);
	if (status != CTXVM_B_OK) {
		err = vm_broker_refusal(vm, status, proc, pc);
		if (!guarded || err == CTX_E_SystemError)
			return err;
		/* A delegatecall that could not start failed like any other. */
		goto caught;
	}
	if (grant.new_context) {
		child.id = grant.ctx_id;
		child.fmp = grant.fmp;
		child.mem = vm_mem_new(vm->opts->mem_limit);
		if (!child.mem) {
			vm_fail(vm, CTX_E_SystemError, pc, "out of memory creating a context");
			return CTX_E_SystemError;
		}
		ctx = &child;
	}
	if (st->core.max_depth_seen > vm->res->max_depth)
		vm->res->max_depth = st->core.max_depth_seen;
	vm->res->contexts = st->core.contexts;
	if (guarded)
		mark = vm_journal_begin(st->ctx0.mem);

	vm->trace_depth = my_depth;
	err = vm_activate(vm, ctx, proc, window, grant.gas_limit, &used, budget, kind);
	vm_mem_free(child.mem);
	*gas -= used;

	if (err == CTX_OK) {
		status = ctxvm_core_return(&st->core, grant.owner, used, &unwind);
		if (status != CTXVM_B_OK) {
			vm_fail(vm, CTX_E_SystemError, pc, "broker refused a return (status %d)", status);
			return CTX_E_SystemError;
		}
		st->ctx0.fmp = unwind.fmp0_restore;
		if (guarded) {
			vm_journal_commit(st->ctx0.mem, mark);
			*guard_failed = false;
		}
		return CTX_OK;
	}
	if (st->core.state == CTXVM_S_RUNNING && st->core.depth == my_depth + 1)
		ctxvm_core_fail(&st->core, grant.owner, used, &unwind);
	if (guarded)
		vm_journal_rollback(st->ctx0.mem, mark);
	if (!guarded || err == CTX_E_SystemError || st->core.state != CTXVM_S_RUNNING ||
	    st->core.depth != my_depth)
		return err;
	st->ctx0.fmp = st->core.ctx0_fmp;
caught:
	/* The delegator goes on with its inputs; what the callee used stays spent. */
	vm->res->error = CTX_OK;
	vm->res->message[0] = '\0';
	vm->res->nbacktrace = 0;
	*guard_failed = true;
	return CTX_OK;
}

static enum ctx_error_kind inproc_caller(struct vm *vm, struct vm_ctx *ctx, fe_t *out)
{
	struct inproc *ip = vm->backend;

	if (ctxvm_core_caller(&ip->core, ctx->id, out) != CTXVM_B_OK) {
		vm_fail(vm, CTX_E_SystemError, 0, "broker refused caller");
		return CTX_E_SystemError;
	}
	return CTX_OK;
}

static const struct vm_hooks inproc_hooks = {
	.invoke = inproc_invoke,
	.caller = inproc_caller,
};

enum ctx_error_kind ctx_run_inproc(const struct ctx_program *prog, const struct run_options *opts,
				   struct run_result *res)
{
	struct vm vm = { .prog = prog, .opts = opts, .res = res, .hooks = &inproc_hooks };
	struct inproc *st = calloc(1, sizeof(*st));
	fe_t window[CTX_STACK_MIN] = { 0 };
	uint64_t used = 0;
	enum ctx_error_kind err = CTX_E_SystemError;

	memset(res, 0, sizeof(*res));
	if (st)
		st->ctx0.mem = vm_mem_new(opts->mem_limit);
	if (!st || !st->ctx0.mem) {
		free(st);
		res->error = CTX_E_SystemError;
		snprintf(res->message, sizeof(res->message), "out of memory");
		return res->error;
	}
	vm.backend = st;
	st->ctx0.fmp = CTX_FMP_INIT;
	ctxvm_core_init(&st->core, st->frames, CTX_CALL_DEPTH_LIMIT);
	for (uint32_t i = 0; i < prog->nprocs; i++)
		if ((prog->procs[i].flags & PROC_KERNEL_EXPORT) &&
		    ctxvm_core_add_kernel_proc(&st->core, prog->procs[i].digest) != CTXVM_B_OK) {
			res->error = CTX_E_SystemError;
			snprintf(res->message, sizeof(res->message),
				 "the kernel exports more than %d procedures", CTXVM_MAX_KERNEL_PROCS);
			goto out;
		}
	ctxvm_core_start(&st->core, 0, prog->procs[prog->entry_proc].digest, opts->gas);
	res->contexts = 1;
	res->max_depth = 1;
	for (unsigned i = 0; i < opts->ninputs && i < CTX_STACK_MIN; i++)
		window[i] = opts->inputs[i];

	err = vm_activate(&vm, &st->ctx0, prog->entry_proc, window, opts->gas, &used,
			  CTX_STACK_DEPTH_LIMIT, FRAME_ROOT);
	res->gas_used = used;
	if (err == CTX_OK)
		memcpy(res->stack, window, sizeof(res->stack));
out:
	vm_mem_free(st->ctx0.mem);
	free(st);
	return err;
}
