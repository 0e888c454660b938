/* SPDX-License-Identifier: MIT */
/*
 * The interpreter: runs an assembled program with the context semantics of
 * SPEC §2-§6.  This file's backend is `inproc`: every context lives in this
 * one process with no isolation; it is the oracle the isolated backends are
 * diffed against.
 */
#ifndef CTXVM_INTERP_H
#define CTXVM_INTERP_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "errors.h"
#include "program.h"

#define CTX_STACK_MIN 16
#define CTX_STACK_DEPTH_LIMIT 6615      /* elements, over all nested contexts */
#define CTX_CALL_DEPTH_LIMIT 1024       /* context frames, the root included */
#define CTX_EXEC_DEPTH_LIMIT 1024       /* exec nesting inside one context */
#define CTX_FMP_INIT (1ull << 31)
#define CTX_PROTECTED_BASE ((1ull << 32) - 8)
#define CTX_ADDR_LIMIT (1ull << 32)
#define CTX_GAS_DEFAULT (1ull << 29)
#define CTX_MEM_LIMIT_DEFAULT (256ull << 20)
#define CTX_GAS_CALL 1000               /* on top of the instruction's 1 */
#define CTX_GAS_SYSCALL 100
#define CTX_MEM_PAGE_ELEMS 1024         /* accounting unit: 8 KiB */

enum ctx_frame_kind {
	FRAME_ROOT,
	FRAME_CALL,
	FRAME_DYNCALL,
	FRAME_SYSCALL,
	FRAME_DELEGATECALL,
	FRAME_DYNDELEGATECALL,
	FRAME_EXEC,     /* only in backtraces: an exec inside a context */
};

const char *ctx_frame_kind_name(enum ctx_frame_kind kind);

struct run_options {
	uint64_t gas;
	uint64_t mem_limit;
	fe_t inputs[16];
	unsigned ninputs;
	bool trace;             /* collect the context tree */
	uint64_t timeout_ms;    /* wall-clock limit of an isolated run; 0: the default */
	bool kmod_endpoint;     /* contexts reach the broker through a /dev/ctxvm
				 * context fd, not a socket (set by the kmod backend) */
};

struct backtrace_entry {
	uint64_t ctx_id;
	enum ctx_frame_kind kind;
	uint32_t proc;
	uint32_t pc;
};

struct trace_node {
	unsigned depth;
	enum ctx_frame_kind kind;
	uint32_t proc;
	uint64_t ctx_id;
	uint64_t gas_limit;
	uint64_t gas_used;
	uint64_t wall_ns;
	enum ctx_error_kind outcome;
};

struct run_result {
	enum ctx_error_kind error;
	char message[1024];
	struct backtrace_entry *backtrace;      /* innermost first */
	unsigned nbacktrace;

	fe_t stack[16];
	uint64_t gas_used;
	uint64_t contexts;      /* contexts created, the root included */
	unsigned max_depth;     /* deepest frame stack, the root = 1 */

	struct trace_node *trace;
	unsigned ntrace;
	uint64_t trace_dropped;
};

#ifdef CTXVM_TESTING
/*
 * Test build only (build/test/ctxvm): switches that make contexts misbehave
 * or turn the interpreter's own limits off, to show the OS and the broker
 * still hold.  They act in every context but the root.
 */
enum ctx_test_endpoint {
	TEST_ENDPOINT_NONE,
	TEST_ENDPOINT_GARBAGE,  /* write a short garbage packet */
	TEST_ENDPOINT_CLOSE,    /* close the endpoint and spin */
	TEST_ENDPOINT_LIE_GAS,  /* return claiming more gas than it had */
	TEST_ENDPOINT_RETURN_TWICE,
	TEST_ENDPOINT_HANG,     /* never answer */
};

struct ctx_test_switches {
	bool no_gas_count;      /* the interpreter never runs out of gas */
	bool no_mem_count;      /* the interpreter never counts pages */
	long attack_syscall;    /* >= 0: attempt this syscall first */
	enum ctx_test_endpoint endpoint;
	int crash_signal;       /* SIGSEGV or SIGILL: fault that way first */
	/* Non-zero: search all of this context's memory for the 8-byte value
	 * scan_secret_masked ^ CTX_TEST_SECRET_MASK (kept masked so the searcher
	 * holds no copy of it) and fail if it is found. */
	uint64_t scan_secret_masked;
	uint64_t plant;         /* a value every process has: the scan's control */
	/*
	 * Set: every context process runs this, sandboxed, on its endpoint
	 * instead of the interpreter (tests/protocol_test.c scripts contexts).
	 */
	void (*context_main)(int endpoint, bool kmod_endpoint);
};

#define CTX_TEST_SECRET_MASK 0x5A5A5A5A5A5A5A5Aull

extern struct ctx_test_switches ctx_test;
#endif

/* Returns the error kind (CTX_OK on success); *res is always filled. */
enum ctx_error_kind ctx_run_inproc(const struct ctx_program *prog,
				   const struct run_options *opts,
				   struct run_result *res);
void run_result_free(struct run_result *res);

/* "file:line:col" of instruction pc, for messages and backtraces. */
void ctx_format_location(const struct ctx_program *prog, uint32_t pc,
			 char *buf, size_t len);

#endif /* CTXVM_INTERP_H */
