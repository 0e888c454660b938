/* SPDX-License-Identifier: MIT */
/*
 * What the runner of a sandboxed run writes into its struct run_result,
 * whichever broker keeps the frames (the embedded one or /dev/ctxvm): the
 * first error, backtraces, the --trace tree and why a context process died.
 */
#ifndef CTXVM_RUNLOG_H
#define CTXVM_RUNLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "forkserver.h"
#include "interp.h"

#define RUNLOG_MEMORY_EXIT 6    /* ctxproc: could not make its memory */

/* The first error of a run sticks; later ones are its consequences. */
void runlog_error(struct run_result *res, enum ctx_error_kind kind, const char *msg);
/* Forget a failure a delegatecall caught. */
void runlog_clear_error(struct run_result *res);
void runlog_backtrace_push(struct run_result *res, const struct ctx_program *prog,
			   uint64_t ctx_id, uint32_t kind, uint32_t pc);

/* A trace node for a frame just pushed; -1 when not tracing. */
long runlog_trace_open(struct run_result *res, const struct run_options *opts, uint32_t depth,
		       uint32_t kind, uint32_t proc, uint64_t ctx_id, uint64_t gas_limit);
void runlog_trace_close(struct run_result *res, long node, uint64_t used,
			enum ctx_error_kind outcome);

/*
 * Why a context process died, from how it was reaped: a reported sandbox
 * violation, its CPU budget (for `gas_limit`), a signal, its memory, or
 * `why` (what the broker saw).  Writes the message, returns the error kind.
 */
enum ctx_error_kind runlog_death(const struct reaped *how, bool violation, uint64_t syscall_nr,
				 uint64_t gas_limit, const char *why, char *msg, size_t len);

#endif /* CTXVM_RUNLOG_H */
