/* SPDX-License-Identifier: MIT */
/*
 * The fork server: a small process, started before any context runs, that
 * forks every context process, locks it down (sandbox.c) and reaps it when
 * the broker says so.  Contexts are never forked from the runner, so fork
 * cost does not grow with what the runner holds; each child is a fresh fork
 * that has never run other code (no reuse).
 */
#ifndef CTXVM_FORKSERVER_H
#define CTXVM_FORKSERVER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "interp.h"
#include "program.h"

struct forkserver {
	pid_t pid;
	int ctrl;
	bool kmod_endpoint;     /* set before start: endpoints are /dev/ctxvm context fds */
};

struct reaped {
	int status;             /* wait status */
	uint64_t cpu_ns;        /* user + system time the process used */
};

int forkserver_start(struct forkserver *fs, const struct ctx_program *prog,
		     const struct run_options *opts, char *err, size_t errlen);
/* A locked-down context process on `endpoint` (which stays ours to close). */
pid_t forkserver_spawn(struct forkserver *fs, int endpoint, uint64_t gas_limit);
/* SIGKILL (harmless if already dead) and wait; no zombie is left. */
int forkserver_reap(struct forkserver *fs, pid_t pid, struct reaped *out);
void forkserver_stop(struct forkserver *fs);

#endif /* CTXVM_FORKSERVER_H */
