/* SPDX-License-Identifier: MIT */
/*
 * The `user` backend: every context in its own locked-down process, with the
 * embedded broker in the runner keeping the system data.
 */
#ifndef CTXVM_BROKER_USER_H
#define CTXVM_BROKER_USER_H

#include <stdbool.h>
#include <sys/types.h>

#include "interp.h"

/*
 * Processes forked and locked down ahead of calls (--pool).  Each serves
 * exactly one context and dies; 0 forks every context's process when it is
 * called.
 */
#define CTX_USER_POOL_DEFAULT 4
#define CTX_USER_POOL_MAX 64

struct ctx_user_options {
	unsigned pool;          /* pre-forked processes to keep ready, up to CTX_USER_POOL_MAX */
};

/* With CTX_USER_POOL_DEFAULT. */
enum ctx_error_kind ctx_run_user(const struct ctx_program *prog, const struct run_options *opts,
				 struct run_result *res);
enum ctx_error_kind ctx_run_user_with(const struct ctx_program *prog, const struct run_options *opts,
				      const struct ctx_user_options *uopts, struct run_result *res);

#ifdef CTXVM_TESTING
/* Test build: the process behind every context of the last run, in the order they ended. */
struct ctx_user_served {
	pid_t pid;
	bool pooled;
};
#define CTX_USER_TEST_SERVED_MAX 4096
extern struct ctx_user_served ctx_user_test_served[CTX_USER_TEST_SERVED_MAX];
extern unsigned ctx_user_test_nserved;
/* The process of the latest context started after the root (0 before one), for killing. */
extern volatile pid_t ctx_user_test_callee;
#endif

#endif /* CTXVM_BROKER_USER_H */
