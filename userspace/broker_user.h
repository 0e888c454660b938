/* SPDX-License-Identifier: MIT */
/*
 * The `user` backend: every context in its own locked-down process, with the
 * embedded broker in the runner keeping the system data.
 */
#ifndef CTXVM_BROKER_USER_H
#define CTXVM_BROKER_USER_H

#include "interp.h"

enum ctx_error_kind ctx_run_user(const struct ctx_program *prog, const struct run_options *opts,
				 struct run_result *res);

#endif /* CTXVM_BROKER_USER_H */
