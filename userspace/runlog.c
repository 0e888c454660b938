// SPDX-License-Identifier: MIT
/*
 * The run record of a sandboxed run (see runlog.h).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "interp_core.h"
#include "runlog.h"
#include "sandbox.h"

void runlog_error(struct run_result *res, enum ctx_error_kind kind, const char *msg)
{
	if (res->error != CTX_OK)
		return;
	res->error = kind;
	snprintf(res->message, sizeof(res->message), "%s", msg);
}

void runlog_clear_error(struct run_result *res)
{
	res->error = CTX_OK;
	res->message[0] = '\0';
	res->nbacktrace = 0;
}

void runlog_backtrace_push(struct run_result *res, const struct ctx_program *prog,
			   uint64_t ctx_id, uint32_t kind, uint32_t pc)
{
	struct backtrace_entry *bt = realloc(res->backtrace, (res->nbacktrace + 1) * sizeof(*bt));

	if (!bt)
		return;
	res->backtrace = bt;
	bt[res->nbacktrace++] = (struct backtrace_entry){
		.ctx_id = ctx_id,
		.kind = (enum ctx_frame_kind)kind,
		.proc = ctx_program_proc_at(prog, pc),
		.pc = pc,
	};
}

long runlog_trace_open(struct run_result *res, const struct run_options *opts, uint32_t depth,
		       uint32_t kind, uint32_t proc, uint64_t ctx_id, uint64_t gas_limit)
{
	struct trace_node *t;

	if (!opts->trace)
		return -1;
	t = realloc(res->trace, (res->ntrace + 1) * sizeof(*t));
	if (!t)
		return -1;
	res->trace = t;
	t[res->ntrace] = (struct trace_node){
		.depth = depth, .kind = (enum ctx_frame_kind)kind, .proc = proc, .ctx_id = ctx_id,
		.gas_limit = gas_limit, .wall_ns = now_ns(),
	};
	return (long)res->ntrace++;
}

void runlog_trace_close(struct run_result *res, long node, uint64_t used,
			enum ctx_error_kind outcome)
{
	if (node < 0)
		return;
	res->trace[node].gas_used = used;
	res->trace[node].wall_ns = now_ns() - res->trace[node].wall_ns;
	res->trace[node].outcome = outcome;
}

static const char *signal_name(int sig, char *buf, size_t len)
{
	const char *name = sigabbrev_np(sig);

	snprintf(buf, len, "SIG%s", name ? name : "?");
	return buf;
}

enum ctx_error_kind runlog_death(const struct reaped *how, bool violation, uint64_t syscall_nr,
				 uint64_t gas_limit, const char *why, char *msg, size_t len)
{
	bool signaled = how->status >= 0 && WIFSIGNALED(how->status);
	int sig = signaled ? WTERMSIG(how->status) : 0;
	char name[32];

	if (violation) {
		snprintf(msg, len, "context blocked by the sandbox: syscall %s",
			 sandbox_syscall_name(syscall_nr));
		return CTX_E_SandboxViolation;
	}
	/* The budget timer kills with SIGKILL; RLIMIT_CPU's soft limit is SIGXCPU. */
	if (sig == SIGXCPU ||
	    (sig == SIGKILL && how->cpu_ns >= sandbox_cpu_budget_ns(gas_limit))) {
		snprintf(msg, len, "context killed after %.3f s of CPU time (its gas budget)",
			 (double)how->cpu_ns / 1e9);
		return CTX_E_OutOfGas;
	}
	if (signaled) {
		snprintf(msg, len, "context killed by %s", signal_name(sig, name, sizeof(name)));
		return CTX_E_ContextCrashed;
	}
	if (how->status >= 0 && WIFEXITED(how->status) &&
	    WEXITSTATUS(how->status) == RUNLOG_MEMORY_EXIT) {
		snprintf(msg, len, "context ran out of memory");
		return CTX_E_MemoryLimitExceeded;
	}
	snprintf(msg, len, "context %s", why);
	return CTX_E_ContextCrashed;
}
