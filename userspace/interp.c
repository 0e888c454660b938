// SPDX-License-Identifier: MIT
/*
 * The reference interpreter (`--backend inproc`).
 *
 * Layout, after Lua's lvm.c: one function (vm_activate) runs one activation
 * of a context — the root, a call, a syscall, a delegatecall — over its own
 * operand stack, with the hot state (ip, sp, gas) in locals.  Context
 * switches recurse into vm_activate through vm_invoke, which owns the frame
 * stack (the broker's data: caller digest, in_kernel, context id), the gas
 * hand-over and the delegatecall guard.
 *
 * Operand stack: grows down; sp[0] is the top, and `base` is one past the
 * deepest element, so depth = base - sp >= 16.  Every cell at or beyond
 * `base` is zero, which is what a drop at depth 16 must pull in.  When the
 * zero zone runs out the 16-element window is moved back (recentre).
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../shared/broker.h"
#include "interp_core.h"

#define STACK_DRIFT 512         /* zero cells kept beyond the window */
#define TRACE_MAX_NODES 100000
#define U32_MASK 0xFFFFFFFFull

struct exec_return {
	uint32_t ret_pc;
	uint32_t nlocals4;
};

#ifdef CTXVM_TESTING
struct ctx_test_switches ctx_test = { .attack_syscall = -1 };
#endif

const char *ctx_frame_kind_name(enum ctx_frame_kind kind)
{
	static const char *const names[] = {
		[FRAME_ROOT] = "root",
		[FRAME_CALL] = "call",
		[FRAME_DYNCALL] = "dyncall",
		[FRAME_SYSCALL] = "syscall",
		[FRAME_DELEGATECALL] = "delegatecall",
		[FRAME_DYNDELEGATECALL] = "dyndelegatecall",
		[FRAME_EXEC] = "exec",
	};
	return (unsigned)kind < sizeof(names) / sizeof(names[0]) ? names[kind] : "?";
}

void ctx_format_location(const struct ctx_program *prog, uint32_t pc, char *buf, size_t len)
{
	const struct ctx_srcloc *loc;

	if (!prog->locs || pc >= prog->ncode) {
		snprintf(buf, len, "?");
		return;
	}
	loc = &prog->locs[pc];
	snprintf(buf, len, "%s:%" PRIu32 ":%" PRIu32,
		 loc->file < prog->nfiles ? prog->files[loc->file] : "?", loc->line, loc->col);
}

/* Records the error at its origin; the first one wins. */
void vm_fail(struct vm *vm, enum ctx_error_kind kind, uint32_t pc, const char *fmt, ...)
{
	struct run_result *res = vm->res;
	char where[256];
	char what[512];
	va_list ap;

	if (res->error != CTX_OK)
		return;
	res->error = kind;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	ctx_format_location(vm->prog, pc, where, sizeof(where));
	snprintf(res->message, sizeof(res->message), "%s: %s", where, what);
}

/* A call the broker core refused, as the requester's error (any backend). */
enum ctx_error_kind vm_broker_refusal(struct vm *vm, int status, uint32_t proc, uint32_t pc)
{
	const char *name = vm->prog->procs[proc].name;

	switch (status) {
	case CTXVM_B_SYSCALL_IN_KERNEL:
		vm_fail(vm, CTX_E_SyscallInKernel, pc, "syscall to %s while a syscall is executing", name);
		return CTX_E_SyscallInKernel;
	case CTXVM_B_NOT_KERNEL_TARGET:
		vm_fail(vm, CTX_E_SyscallTargetNotInKernel, pc, "%s is not exported by the kernel", name);
		return CTX_E_SyscallTargetNotInKernel;
	case CTXVM_B_DEPTH:
		vm_fail(vm, CTX_E_CallDepthExceeded, pc, "more than %d nested contexts",
			CTX_CALL_DEPTH_LIMIT);
		return CTX_E_CallDepthExceeded;
	default:
		vm_fail(vm, CTX_E_SystemError, pc, "broker refused a request (status %d)", status);
		return CTX_E_SystemError;
	}
}

static void vm_backtrace_add(struct vm *vm, uint64_t ctx_id, enum ctx_frame_kind kind, uint32_t pc)
{
	struct run_result *res = vm->res;

	if (res->nbacktrace == vm->bt_cap) {
		unsigned cap = vm->bt_cap ? vm->bt_cap * 2 : 16;
		struct backtrace_entry *bt = realloc(res->backtrace, cap * sizeof(*bt));

		if (!bt)
			return;
		res->backtrace = bt;
		vm->bt_cap = cap;
	}
	res->backtrace[res->nbacktrace++] = (struct backtrace_entry){
		.ctx_id = ctx_id,
		.kind = kind,
		.proc = ctx_program_proc_at(vm->prog, pc),
		.pc = pc,
	};
}

uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Returns the node's index, or -1 when not tracing; the array may move later. */
static long trace_open(struct vm *vm, enum ctx_frame_kind kind, uint32_t proc,
		       uint64_t ctx_id, uint64_t gas_limit)
{
	struct run_result *res = vm->res;

	if (!vm->opts->trace)
		return -1;
	if (res->ntrace >= TRACE_MAX_NODES) {
		res->trace_dropped++;
		return -1;
	}
	if ((res->ntrace & (res->ntrace - 1)) == 0) {
		unsigned cap = res->ntrace ? res->ntrace * 2 : 16;
		struct trace_node *t = realloc(res->trace, cap * sizeof(*t));

		if (!t) {
			res->trace_dropped++;
			return -1;
		}
		res->trace = t;
	}
	res->trace[res->ntrace] = (struct trace_node){
		.depth = vm->trace_depth,
		.kind = kind,
		.proc = proc,
		.ctx_id = ctx_id,
		.gas_limit = gas_limit,
		.wall_ns = now_ns(),
	};
	return (long)res->ntrace++;
}

/* Reads the digest stored at addr the way `procref.p mem_storew_le.addr` stores it. */
static enum ctx_error_kind read_digest_target(struct vm *vm, struct vm_ctx *ctx, fe_t addr,
					      uint32_t pc, uint32_t *proc)
{
	fe_t digest[4];
	int64_t idx;

	if (addr >= CTX_ADDR_LIMIT) {
		vm_fail(vm, CTX_E_AddressOutOfBounds, pc, "address %" PRIu64 " is not below 2^32", addr);
		return CTX_E_AddressOutOfBounds;
	}
	if (addr & 3) {
		vm_fail(vm, CTX_E_UnalignedWordAccess, pc, "digest address %" PRIu64 " is not word-aligned", addr);
		return CTX_E_UnalignedWordAccess;
	}
	if (addr >= CTX_PROTECTED_BASE) {
		vm_fail(vm, CTX_E_ProtectedMemoryAccess, pc, "address %" PRIu64 " is in the protected system region", addr);
		return CTX_E_ProtectedMemoryAccess;
	}
	for (unsigned i = 0; i < 4; i++)
		digest[i] = vm_mem_read(ctx->mem, (uint32_t)addr + i);
	idx = ctx_program_find_digest(vm->prog, digest);
	if (idx < 0) {
		vm_fail(vm, CTX_E_ProcedureNotFound, pc,
			"no procedure has digest [%" PRIu64 ", %" PRIu64 ", %" PRIu64 ", %" PRIu64 "]",
			digest[0], digest[1], digest[2], digest[3]);
		return CTX_E_ProcedureNotFound;
	}
	*proc = (uint32_t)idx;
	return CTX_OK;
}


/*
 * Drops at depth 16 walked the window to the end of the zero zone: move the
 * live elements (those before old_base; the rest of the window is zeros)
 * back to just below `home` and clear the zone again.  Returns the new sp.
 */
static fe_t *recentre(fe_t *sp, fe_t *old_base, fe_t *home, fe_t *end)
{
	fe_t *nsp = home - CTX_STACK_MIN;
	ptrdiff_t live = old_base - sp;

	if (live < 0)
		live = 0;
	memmove(nsp, sp, (size_t)live * sizeof(fe_t));
	memset(nsp + live, 0, (size_t)(end - (nsp + live)) * sizeof(fe_t));
	return nsp;
}

enum ctx_error_kind vm_activate(struct vm *vm, struct vm_ctx *ctx, uint32_t proc,
				fe_t *window, uint64_t gas_limit, uint64_t *gas_used,
				uint32_t budget, enum ctx_frame_kind kind)
{
	const struct ctx_program *prog = vm->prog;
	const struct ctx_insn *const code = prog->code;
	const struct ctx_insn *ip;
	size_t cap = (size_t)budget + STACK_DRIFT;
	fe_t *buf = calloc(cap, sizeof(fe_t));

	if (!buf) {
		vm_fail(vm, CTX_E_SystemError, prog->procs[proc].entry, "out of memory for a stack");
		*gas_used = 0;
		return CTX_E_SystemError;
	}
	long node = trace_open(vm, kind, proc, ctx->id, gas_limit);
	uint64_t t0 = node >= 0 ? vm->res->trace[node].wall_ns : 0;
	fe_t *const end = buf + cap;
	fe_t *const home = buf + budget;        /* where base starts and returns to */
	fe_t *base = home;
	fe_t *limit = buf;                      /* sp may not go below: depth <= budget */
	fe_t *sp = base - CTX_STACK_MIN;
	uint64_t gas = gas_limit;
	struct exec_return *rs = NULL;
	unsigned nrs = 0, rs_cap = 0;
	uint64_t *rep = NULL;
	unsigned nrep = 0, rep_cap = 0;
	uint32_t nlocals4 = prog->procs[proc].nlocals4;
	enum ctx_error_kind err = CTX_OK;
	uint32_t fail_pc;

	memcpy(sp, window, CTX_STACK_MIN * sizeof(fe_t));
	ctx->fmp += nlocals4;
	ip = code + prog->procs[proc].entry;

#define PC() ((uint32_t)(ip - code))
#define FAIL(kind_, ...)                                              \
	do {                                                          \
		vm_fail(vm, CTX_E_##kind_, PC(), __VA_ARGS__);        \
		err = CTX_E_##kind_;                                  \
		goto fail;                                            \
	} while (0)
#ifdef CTXVM_TESTING
#define GAS_COUNTED() (!ctx_test.no_gas_count)
#else
#define GAS_COUNTED() 1
#endif
#define CHARGE(n)                                                     \
	do {                                                          \
		if (!GAS_COUNTED())                                   \
			break;                                        \
		if (CTX_UNLIKELY(gas < (uint64_t)(n)))                \
			FAIL(OutOfGas, "%s needs %" PRIu64 " gas, %" PRIu64 " left", \
			     ctx_op_names[ip->op], (uint64_t)(n), gas); \
		gas -= (n);                                           \
	} while (0)
#define PUSH(k)                                                       \
	do {                                                          \
		if (CTX_UNLIKELY(sp - (k) < limit))                   \
			FAIL(StackDepthLimitExceeded,                 \
			     "stack deeper than %d elements over all contexts", \
			     CTX_STACK_DEPTH_LIMIT);                  \
		sp -= (k);                                            \
	} while (0)
#define POP(k)                                                        \
	do {                                                          \
		sp += (k);                                            \
		if (CTX_UNLIKELY(sp + CTX_STACK_MIN > base)) {        \
			if (CTX_UNLIKELY(sp + CTX_STACK_MIN > end))   \
				sp = recentre(sp, base, home, end);   \
			base = sp + CTX_STACK_MIN;                    \
			limit = base - budget;                        \
		}                                                     \
	} while (0)
#define REQUIRE_BINARY(v)                                             \
	do {                                                          \
		if (CTX_UNLIKELY((v) > 1))                            \
			FAIL(NotBinaryValue, "%s expects 0 or 1, got %" PRIu64, \
			     ctx_op_names[ip->op], (uint64_t)(v));    \
	} while (0)
#define REQUIRE_U32(v)                                                \
	do {                                                          \
		if (CTX_UNLIKELY((v) > U32_MASK))                     \
			FAIL(NotU32Values, "%s expects u32 operands, got %" PRIu64, \
			     ctx_op_names[ip->op], (uint64_t)(v));    \
	} while (0)
#define CHECK_ADDR(addr, words)                                                     \
	do {                                                                        \
		if (CTX_UNLIKELY((addr) >= CTX_ADDR_LIMIT))                         \
			FAIL(AddressOutOfBounds, "address %" PRIu64 " is not below 2^32", \
			     (uint64_t)(addr));                                     \
		if ((words) && CTX_UNLIKELY((addr) & 3))                            \
			FAIL(UnalignedWordAccess, "word address %" PRIu64          \
			     " is not a multiple of 4", (uint64_t)(addr));          \
		if (CTX_UNLIKELY((addr) >= CTX_PROTECTED_BASE))                     \
			FAIL(ProtectedMemoryAccess, "address %" PRIu64             \
			     " is in the protected system region", (uint64_t)(addr)); \
	} while (0)
#define STORE(addr, v)                                                \
	do {                                                          \
		enum ctx_error_kind werr_ = vm_mem_write(ctx->mem, (uint32_t)(addr), (v)); \
		if (CTX_UNLIKELY(werr_ != CTX_OK)) {                  \
			if (werr_ == CTX_E_MemoryLimitExceeded)       \
				FAIL(MemoryLimitExceeded, "context memory passed %" PRIu64 " bytes", \
				     vm->opts->mem_limit);            \
			FAIL(SystemError, "out of memory");           \
		}                                                     \
	} while (0)
#define LOAD(addr) vm_mem_read(ctx->mem, (uint32_t)(addr))
#define LOCAL_ADDR() (ctx->fmp - ip->imm + ip->a)

#if defined(__GNUC__)
	/* Not const: relocated data, not text relocations in a PIE. */
	static const void *labels[OP__COUNT] = {
#define CTX_OP_LABEL(name, gas_) [OP_##name] = &&op_##name,
		/* cppcheck-suppress assignBoolToPointer ; labels as values */
		CTX_OPCODES(CTX_OP_LABEL)
#undef CTX_OP_LABEL
	};
#define DISPATCH() goto *labels[ip->op]
#define CASE(name) op_##name:
#else
#define DISPATCH() goto dispatch
#define CASE(name) case OP_##name:
#endif
	/* Step to the next instruction, charging the one just begun. */
#define NEXT() do { ip++; DISPATCH(); } while (0)
#define OP1(name) CASE(name) CHARGE(1);

#if defined(__GNUC__)
	DISPATCH();
#else
dispatch:
	switch (ip->op) {
#endif

	OP1(DROP) POP(1); NEXT();
	OP1(DROPW) POP(4); NEXT();
	OP1(PADW) PUSH(4); sp[0] = sp[1] = sp[2] = sp[3] = 0; NEXT();
	OP1(DUP) { fe_t v = sp[ip->a]; PUSH(1); sp[0] = v; } NEXT();
	OP1(DUPW) {
		fe_t w[4];
		memcpy(w, sp + 4 * ip->a, sizeof(w));
		PUSH(4);
		memcpy(sp, w, sizeof(w));
	} NEXT();
	OP1(SWAP) { fe_t t = sp[0]; sp[0] = sp[ip->a]; sp[ip->a] = t; } NEXT();
	OP1(SWAPW) {
		fe_t w[4];
		memcpy(w, sp, sizeof(w));
		memcpy(sp, sp + 4 * ip->a, sizeof(w));
		memcpy(sp + 4 * ip->a, w, sizeof(w));
	} NEXT();
	OP1(SWAPDW) {
		fe_t w[8];
		memcpy(w, sp, sizeof(w));
		memmove(sp, sp + 8, sizeof(w));
		memcpy(sp + 8, w, sizeof(w));
	} NEXT();
	OP1(MOVUP) {
		fe_t v = sp[ip->a];
		memmove(sp + 1, sp, ip->a * sizeof(fe_t));
		sp[0] = v;
	} NEXT();
	OP1(MOVDN) {
		fe_t v = sp[0];
		memmove(sp, sp + 1, ip->a * sizeof(fe_t));
		sp[ip->a] = v;
	} NEXT();
	OP1(MOVUPW) {
		fe_t w[4];
		memcpy(w, sp + 4 * ip->a, sizeof(w));
		memmove(sp + 4, sp, 4 * ip->a * sizeof(fe_t));
		memcpy(sp, w, sizeof(w));
	} NEXT();
	OP1(MOVDNW) {
		fe_t w[4];
		memcpy(w, sp, sizeof(w));
		memmove(sp, sp + 4, 4 * ip->a * sizeof(fe_t));
		memcpy(sp + 4 * ip->a, w, sizeof(w));
	} NEXT();
	OP1(CSWAP) {
		fe_t c = sp[0];
		REQUIRE_BINARY(c);
		POP(1);
		if (c) {
			fe_t t = sp[0];
			sp[0] = sp[1];
			sp[1] = t;
		}
	} NEXT();
	OP1(CSWAPW) {
		fe_t c = sp[0];
		REQUIRE_BINARY(c);
		POP(1);
		if (c) {
			fe_t w[4];
			memcpy(w, sp, sizeof(w));
			memmove(sp, sp + 4, sizeof(w));
			memcpy(sp + 4, w, sizeof(w));
		}
	} NEXT();
	OP1(CDROP) {
		fe_t c = sp[0], b = sp[1], a = sp[2];
		REQUIRE_BINARY(c);
		POP(2);
		sp[0] = c ? b : a;
	} NEXT();
	OP1(CDROPW) {
		fe_t c = sp[0], w[4];
		REQUIRE_BINARY(c);
		memcpy(w, c ? sp + 1 : sp + 5, sizeof(w));
		POP(5);
		memcpy(sp, w, sizeof(w));
	} NEXT();
	OP1(PUSH) PUSH(1); sp[0] = ip->imm; NEXT();
	CASE(PUSH_FREE) PUSH(1); sp[0] = ip->imm; NEXT();
	OP1(SDEPTH) { fe_t d = (fe_t)(base - sp); PUSH(1); sp[0] = d; } NEXT();

	OP1(ADD) { fe_t b = sp[0]; POP(1); sp[0] = fe_add(sp[0], b); } NEXT();
	OP1(SUB) { fe_t b = sp[0]; POP(1); sp[0] = fe_sub(sp[0], b); } NEXT();
	OP1(MUL) { fe_t b = sp[0]; POP(1); sp[0] = fe_mul(sp[0], b); } NEXT();
	OP1(DIV) {
		fe_t b = sp[0];
		if (CTX_UNLIKELY(b == 0))
			FAIL(DivideByZero, "div by 0");
		POP(1);
		sp[0] = fe_mul(sp[0], fe_inv(b));
	} NEXT();
	OP1(NEG) sp[0] = fe_neg(sp[0]); NEXT();
	OP1(INV) {
		if (CTX_UNLIKELY(sp[0] == 0))
			FAIL(DivideByZero, "inv of 0");
		sp[0] = fe_inv(sp[0]);
	} NEXT();
	OP1(POW2) {
		if (CTX_UNLIKELY(sp[0] > 63))
			FAIL(InvalidExponent, "pow2 exponent %" PRIu64 " is above 63", sp[0]);
		sp[0] = 1ull << sp[0];
	} NEXT();
	OP1(EXP) { fe_t b = sp[0]; POP(1); sp[0] = fe_pow(sp[0], b); } NEXT();
	OP1(EXP_BITS) {
		fe_t b = sp[0];
		if (CTX_UNLIKELY(ip->a < 64 && (b >> ip->a) != 0))
			FAIL(InvalidExponent, "exponent %" PRIu64 " does not fit in %" PRIu32 " bits",
			     b, ip->a);
		POP(1);
		sp[0] = fe_pow(sp[0], b);
	} NEXT();
	OP1(INCR) sp[0] = fe_add(sp[0], 1); NEXT();
	OP1(ADD_IMM) sp[0] = fe_add(sp[0], ip->imm); NEXT();
	OP1(MUL_IMM) sp[0] = fe_mul(sp[0], ip->imm); NEXT();
	OP1(EXP_IMM) sp[0] = fe_pow(sp[0], ip->imm); NEXT();
	OP1(EQ) { fe_t b = sp[0]; POP(1); sp[0] = sp[0] == b; } NEXT();
	OP1(NEQ) { fe_t b = sp[0]; POP(1); sp[0] = sp[0] != b; } NEXT();
	OP1(LT) { fe_t b = sp[0]; POP(1); sp[0] = sp[0] < b; } NEXT();
	OP1(LTE) { fe_t b = sp[0]; POP(1); sp[0] = sp[0] <= b; } NEXT();
	OP1(GT) { fe_t b = sp[0]; POP(1); sp[0] = sp[0] > b; } NEXT();
	OP1(GTE) { fe_t b = sp[0]; POP(1); sp[0] = sp[0] >= b; } NEXT();
	OP1(EQW) {
		fe_t r = memcmp(sp, sp + 4, 4 * sizeof(fe_t)) == 0;
		PUSH(1);
		sp[0] = r;
	} NEXT();
	OP1(EQ_IMM) sp[0] = sp[0] == ip->imm; NEXT();
	OP1(NEQ_IMM) sp[0] = sp[0] != ip->imm; NEXT();
	OP1(IS_ODD) sp[0] &= 1; NEXT();
	OP1(NOT) REQUIRE_BINARY(sp[0]); sp[0] ^= 1; NEXT();
	OP1(AND) {
		fe_t b = sp[0], a = sp[1];
		REQUIRE_BINARY(b);
		REQUIRE_BINARY(a);
		POP(1);
		sp[0] = a & b;
	} NEXT();
	OP1(OR) {
		fe_t b = sp[0], a = sp[1];
		REQUIRE_BINARY(b);
		REQUIRE_BINARY(a);
		POP(1);
		sp[0] = a | b;
	} NEXT();
	OP1(XOR) {
		fe_t b = sp[0], a = sp[1];
		REQUIRE_BINARY(b);
		REQUIRE_BINARY(a);
		POP(1);
		sp[0] = a ^ b;
	} NEXT();

#define U32_ASSERT_FAIL(v)                                                          \
	FAIL(NotU32Values, "%s%s%" PRIu64 " is not a u32 value",                    \
	     ip->a ? prog->strings[ip->a - 1] : "", ip->a ? ": " : "", (uint64_t)(v))
	OP1(U32ASSERT) if (sp[0] > U32_MASK) U32_ASSERT_FAIL(sp[0]); NEXT();
	OP1(U32ASSERT2)
		for (unsigned i = 0; i < 2; i++)
			if (sp[i] > U32_MASK)
				U32_ASSERT_FAIL(sp[i]);
		NEXT();
	OP1(U32ASSERTW)
		for (unsigned i = 0; i < 4; i++)
			if (sp[i] > U32_MASK)
				U32_ASSERT_FAIL(sp[i]);
		NEXT();
	OP1(U32TEST) { fe_t r = sp[0] <= U32_MASK; PUSH(1); sp[0] = r; } NEXT();
	OP1(U32TESTW) {
		fe_t r = (sp[0] | sp[1] | sp[2] | sp[3]) <= U32_MASK;
		PUSH(1);
		sp[0] = r;
	} NEXT();
	OP1(U32CAST) sp[0] &= U32_MASK; NEXT();
	OP1(U32SPLIT) {
		fe_t v = sp[0];
		PUSH(1);
		sp[0] = v & U32_MASK;
		sp[1] = v >> 32;
	} NEXT();
#define U32_BINARY(expr)                                              \
	do {                                                          \
		fe_t b = sp[0], a = sp[1];                            \
		REQUIRE_U32(b);                                       \
		REQUIRE_U32(a);                                       \
		POP(1);                                               \
		sp[0] = (expr);                                       \
	} while (0)
	/* Two results: sp[0] = first, sp[1] = second. */
#define U32_PAIR(lo_expr, hi_expr)                                    \
	do {                                                          \
		fe_t b = sp[0], a = sp[1];                            \
		REQUIRE_U32(b);                                       \
		REQUIRE_U32(a);                                       \
		sp[0] = (lo_expr);                                    \
		sp[1] = (hi_expr);                                    \
	} while (0)
	OP1(U32WRAPPING_ADD) U32_BINARY((a + b) & U32_MASK); NEXT();
	OP1(U32WRAPPING_SUB) U32_BINARY((a - b) & U32_MASK); NEXT();
	OP1(U32WRAPPING_MUL) U32_BINARY((a * b) & U32_MASK); NEXT();
	/* overflowing_*: the flag on top; widening_*: the low half on top. */
	OP1(U32OVERFLOWING_ADD) U32_PAIR((a + b) >> 32, (a + b) & U32_MASK); NEXT();
	OP1(U32OVERFLOWING_SUB) U32_PAIR(a < b, (a - b) & U32_MASK); NEXT();
	OP1(U32WIDENING_ADD) U32_PAIR((a + b) & U32_MASK, (a + b) >> 32); NEXT();
	OP1(U32WIDENING_MUL) U32_PAIR((a * b) & U32_MASK, (a * b) >> 32); NEXT();
	OP1(U32DIV) {
		if (CTX_UNLIKELY(sp[0] == 0 && sp[1] <= U32_MASK))
			FAIL(DivideByZero, "u32div by 0");
		U32_BINARY(a / b);
	} NEXT();
	OP1(U32MOD) {
		if (CTX_UNLIKELY(sp[0] == 0 && sp[1] <= U32_MASK))
			FAIL(DivideByZero, "u32mod by 0");
		U32_BINARY(a % b);
	} NEXT();
	OP1(U32DIVMOD) {
		if (CTX_UNLIKELY(sp[0] == 0 && sp[1] <= U32_MASK))
			FAIL(DivideByZero, "u32divmod by 0");
		U32_PAIR(a % b, a / b);
	} NEXT();
	OP1(U32AND) U32_BINARY(a & b); NEXT();
	OP1(U32OR) U32_BINARY(a | b); NEXT();
	OP1(U32XOR) U32_BINARY(a ^ b); NEXT();
	OP1(U32NOT) REQUIRE_U32(sp[0]); sp[0] = ~sp[0] & U32_MASK; NEXT();
#define REQUIRE_SHIFT()                                                               \
	do {                                                                          \
		if (CTX_UNLIKELY(sp[0] > 31 && sp[0] <= U32_MASK))                    \
			FAIL(NotU32Values, "%s: shift amount %" PRIu64 " is above 31", \
			     ctx_op_names[ip->op], sp[0]);                            \
	} while (0)
	OP1(U32SHL) REQUIRE_SHIFT(); U32_BINARY((a << b) & U32_MASK); NEXT();
	OP1(U32SHR) REQUIRE_SHIFT(); U32_BINARY(a >> b); NEXT();
	OP1(U32ROTL) REQUIRE_SHIFT(); U32_BINARY(((a << b) | (a >> ((32 - b) & 31))) & U32_MASK); NEXT();
	OP1(U32ROTR) REQUIRE_SHIFT(); U32_BINARY(((a >> b) | (a << ((32 - b) & 31))) & U32_MASK); NEXT();
	OP1(U32POPCNT) REQUIRE_U32(sp[0]); sp[0] = (fe_t)__builtin_popcountll(sp[0]); NEXT();
	OP1(U32CLZ) REQUIRE_U32(sp[0]); sp[0] = sp[0] ? (fe_t)__builtin_clzll(sp[0]) - 32 : 32; NEXT();
	OP1(U32CTZ) REQUIRE_U32(sp[0]); sp[0] = sp[0] ? (fe_t)__builtin_ctzll(sp[0]) : 32; NEXT();
	OP1(U32CLO) {
		fe_t inv;
		REQUIRE_U32(sp[0]);
		inv = ~sp[0] & U32_MASK;
		sp[0] = inv ? (fe_t)__builtin_clzll(inv) - 32 : 32;
	} NEXT();
	OP1(U32CTO) {
		fe_t inv;
		REQUIRE_U32(sp[0]);
		inv = ~sp[0] & U32_MASK;
		sp[0] = inv ? (fe_t)__builtin_ctzll(inv) : 32;
	} NEXT();
	OP1(U32LT) U32_BINARY(a < b); NEXT();
	OP1(U32LTE) U32_BINARY(a <= b); NEXT();
	OP1(U32GT) U32_BINARY(a > b); NEXT();
	OP1(U32GTE) U32_BINARY(a >= b); NEXT();
	OP1(U32MIN) U32_BINARY(a < b ? a : b); NEXT();
	OP1(U32MAX) U32_BINARY(a > b ? a : b); NEXT();

#define ASSERT_FAIL(fmt, ...)                                                       \
	FAIL(FailedAssertion, "%s" fmt, ip->a ? prog->strings[ip->a - 1] : "assertion failed", \
	     __VA_ARGS__)
	OP1(ASSERT) if (sp[0] != 1) ASSERT_FAIL(" (top is %" PRIu64 ", expected 1)", sp[0]); POP(1); NEXT();
	OP1(ASSERTZ) if (sp[0] != 0) ASSERT_FAIL(" (top is %" PRIu64 ", expected 0)", sp[0]); POP(1); NEXT();
	OP1(ASSERT_EQ)
		if (sp[0] != sp[1])
			ASSERT_FAIL(" (%" PRIu64 " != %" PRIu64 ")", sp[1], sp[0]);
		POP(2);
		NEXT();
	OP1(ASSERT_EQW)
		if (memcmp(sp, sp + 4, 4 * sizeof(fe_t)) != 0)
			ASSERT_FAIL(" (words differ%s)", "");
		POP(8);
		NEXT();

	OP1(MEM_LOAD) CHECK_ADDR(sp[0], 0); sp[0] = LOAD(sp[0]); NEXT();
	OP1(MEM_STORE) {
		fe_t addr = sp[0];
		CHECK_ADDR(addr, 0);
		STORE(addr, sp[1]);
		POP(2);
	} NEXT();
	OP1(MEM_LOADW_BE) {
		fe_t addr = sp[0];
		CHECK_ADDR(addr, 1);
		POP(1);
		for (unsigned i = 0; i < 4; i++)
			sp[i] = LOAD(addr + 3 - i);
	} NEXT();
	OP1(MEM_LOADW_LE) {
		fe_t addr = sp[0];
		CHECK_ADDR(addr, 1);
		POP(1);
		for (unsigned i = 0; i < 4; i++)
			sp[i] = LOAD(addr + i);
	} NEXT();
	OP1(MEM_STOREW_BE) {
		fe_t addr = sp[0];
		CHECK_ADDR(addr, 1);
		for (unsigned i = 0; i < 4; i++)
			STORE(addr + i, sp[4 - i]);
		POP(1);
	} NEXT();
	OP1(MEM_STOREW_LE) {
		fe_t addr = sp[0];
		CHECK_ADDR(addr, 1);
		for (unsigned i = 0; i < 4; i++)
			STORE(addr + i, sp[1 + i]);
		POP(1);
	} NEXT();
	OP1(LOC_LOAD) { fe_t v = LOAD(LOCAL_ADDR()); PUSH(1); sp[0] = v; } NEXT();
	OP1(LOC_STORE) STORE(LOCAL_ADDR(), sp[0]); POP(1); NEXT();
	OP1(LOC_LOADW_BE) {
		uint64_t addr = LOCAL_ADDR();
		CHECK_ADDR(addr, 1);
		for (unsigned i = 0; i < 4; i++)
			sp[i] = LOAD(addr + 3 - i);
	} NEXT();
	OP1(LOC_LOADW_LE) {
		uint64_t addr = LOCAL_ADDR();
		CHECK_ADDR(addr, 1);
		for (unsigned i = 0; i < 4; i++)
			sp[i] = LOAD(addr + i);
	} NEXT();
	OP1(LOC_STOREW_BE) {
		uint64_t addr = LOCAL_ADDR();
		CHECK_ADDR(addr, 1);
		for (unsigned i = 0; i < 4; i++)
			STORE(addr + i, sp[3 - i]);
	} NEXT();
	OP1(LOC_STOREW_LE) {
		uint64_t addr = LOCAL_ADDR();
		CHECK_ADDR(addr, 1);
		for (unsigned i = 0; i < 4; i++)
			STORE(addr + i, sp[i]);
	} NEXT();
	OP1(LOCADDR) { fe_t addr = LOCAL_ADDR(); PUSH(1); sp[0] = addr; } NEXT();

	OP1(IF_TRUE) {
		fe_t c = sp[0];
		REQUIRE_BINARY(c);
		POP(1);
		ip = c ? ip + 1 : code + ip->a;
	} DISPATCH();
	OP1(IF_FALSE) {
		fe_t c = sp[0];
		REQUIRE_BINARY(c);
		POP(1);
		ip = c ? code + ip->a : ip + 1;
	} DISPATCH();
	CASE(JMP) ip = code + ip->a; DISPATCH();
	OP1(WHILE) {
		fe_t c = sp[0];
		REQUIRE_BINARY(c);
		POP(1);
		ip = c ? ip + 1 : code + ip->a;
	} DISPATCH();
	CASE(REPEAT)
		if (CTX_UNLIKELY(nrep == rep_cap)) {
			unsigned ncap = rep_cap ? rep_cap * 2 : 8;
			uint64_t *r = realloc(rep, ncap * sizeof(*r));

			if (!r)
				FAIL(SystemError, "out of memory");
			rep = r;
			rep_cap = ncap;
		}
		rep[nrep++] = ip->imm;
		NEXT();
	CASE(REPEAT_END)
		if (--rep[nrep - 1]) {
			ip = code + ip->a;
			DISPATCH();
		}
		nrep--;
		NEXT();

	OP1(DYNEXEC) {
		uint32_t target;

		if (read_digest_target(vm, ctx, sp[0], PC(), &target) != CTX_OK) {
			err = vm->res->error;
			goto fail;
		}
		POP(1);
		goto exec_target;
	OP1(EXEC)
		target = ip->a;
exec_target:
		if (CTX_UNLIKELY(nrs == rs_cap)) {
			unsigned ncap = rs_cap ? rs_cap * 2 : 16;
			struct exec_return *r;

			if (nrs >= CTX_EXEC_DEPTH_LIMIT)
				FAIL(CallDepthExceeded, "exec nesting deeper than %d",
				     CTX_EXEC_DEPTH_LIMIT);
			r = realloc(rs, ncap * sizeof(*r));
			if (!r)
				FAIL(SystemError, "out of memory");
			rs = r;
			rs_cap = ncap;
		}
		rs[nrs].ret_pc = PC() + 1;
		rs[nrs].nlocals4 = prog->procs[target].nlocals4;
		nrs++;
		ctx->fmp += prog->procs[target].nlocals4;
		ip = code + prog->procs[target].entry;
		DISPATCH();
	}
	CASE(RET)
		if (nrs) {
			nrs--;
			ctx->fmp -= rs[nrs].nlocals4;
			ip = code + rs[nrs].ret_pc;
			DISPATCH();
		}
		goto finish;

	OP1(PROCREF) {
		const fe_t *d = prog->procs[ip->a].digest;
		PUSH(4);
		for (unsigned i = 0; i < 4; i++)
			sp[i] = d[i];
	} NEXT();
	OP1(CALLER)
		if (vm->hooks->caller(vm, ctx, sp) != CTX_OK) {
			err = vm->res->error ? vm->res->error : CTX_E_SystemError;
			goto fail;
		}
		NEXT();

	{
		enum ctx_frame_kind ckind;
		uint32_t target;
		uint64_t gas_arg;
		bool guard_failed;

	CASE(CALL)
		CHARGE(1 + CTX_GAS_CALL);
		ckind = FRAME_CALL;
		target = ip->a;
		gas_arg = 0;
		goto invoke;
	CASE(SYSCALL)
		CHARGE(1 + CTX_GAS_SYSCALL);
		ckind = FRAME_SYSCALL;
		target = ip->a;
		gas_arg = 0;
		goto invoke;
	CASE(DYNCALL)
		CHARGE(1 + CTX_GAS_CALL);
		if (read_digest_target(vm, ctx, sp[0], PC(), &target) != CTX_OK) {
			err = vm->res->error;
			goto fail;
		}
		POP(1);
		ckind = FRAME_DYNCALL;
		gas_arg = 0;
		goto invoke;
	CASE(DELEGATECALL)
		CHARGE(1 + CTX_GAS_CALL);
		ckind = FRAME_DELEGATECALL;
		target = ip->a;
		gas_arg = sp[0];
		POP(1);
		goto invoke;
	CASE(DYNDELEGATECALL)
		CHARGE(1 + CTX_GAS_CALL);
		if (read_digest_target(vm, ctx, sp[1], PC(), &target) != CTX_OK) {
			err = vm->res->error;
			goto fail;
		}
		ckind = FRAME_DYNDELEGATECALL;
		gas_arg = sp[0];
		POP(2);
invoke:
		guard_failed = false;
		err = vm->hooks->invoke(vm, ctx, ckind, target, sp, &gas, gas_arg,
				budget - (uint32_t)(base - sp - CTX_STACK_MIN), PC(), &guard_failed);
		if (err != CTX_OK)
			goto fail;
		if (ckind == FRAME_DELEGATECALL || ckind == FRAME_DYNDELEGATECALL) {
			PUSH(1);
			sp[0] = !guard_failed;
		}
		NEXT();
	}

	CASE(DEBUG_STACK) {
		char where[256];

		ctx_format_location(prog, PC(), where, sizeof(where));
		fprintf(stderr, "debug.stack %s [context %" PRIu64 ", depth %td]:", where, ctx->id,
			base - sp);
		for (unsigned i = 0; i < CTX_STACK_MIN; i++)
			fprintf(stderr, " %" PRIu64, sp[i]);
		fputc('\n', stderr);
	} NEXT();

#if !defined(__GNUC__)
	default:
		FAIL(SystemError, "bad opcode %" PRIu32, ip->op);
	}
#endif

finish:
	ctx->fmp -= nlocals4;
	if (kind == FRAME_ROOT) {
		if (base - sp > CTX_STACK_MIN)
			FAIL(OutputStackOverflow, "program ended with %td elements on the stack (at most 16)",
			     base - sp);
	} else if (base - sp != CTX_STACK_MIN) {
		FAIL(InvalidStackDepthOnReturn, "%s returned with %td elements on the stack (must be 16)",
		     prog->procs[proc].name, base - sp);
	}
	memcpy(window, sp, CTX_STACK_MIN * sizeof(fe_t));
	goto out;

fail:
	fail_pc = PC();
	vm_backtrace_add(vm, ctx->id, kind, fail_pc);
	for (unsigned i = nrs; i > 0; i--)
		vm_backtrace_add(vm, ctx->id, FRAME_EXEC, rs[i - 1].ret_pc - 1);
	if (err == CTX_E_OutOfGas)
		gas = 0;
out:
	*gas_used = gas_limit - gas;
	if (node >= 0) {
		struct trace_node *tn = &vm->res->trace[node];

		tn->gas_used = *gas_used;
		tn->wall_ns = now_ns() - t0;
		tn->outcome = err;
	}
	free(rs);
	free(rep);
	free(buf);
	return err;
#undef PC
#undef FAIL
#undef CHARGE
#undef PUSH
#undef POP
}


void run_result_free(struct run_result *res)
{
	free(res->backtrace);
	free(res->trace);
	res->backtrace = NULL;
	res->trace = NULL;
}
