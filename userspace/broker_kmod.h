/* SPDX-License-Identifier: MIT */
/*
 * The `kmod` backend: every context in its own locked-down process, with
 * the frames kept by ctxvm.ko behind /dev/ctxvm.
 */
#ifndef CTXVM_BROKER_KMOD_H
#define CTXVM_BROKER_KMOD_H

#include "interp.h"

/* /dev/ctxvm opened and checked (API version, sizes, limits), or -1 with errno. */
int ctx_kmod_open(void);
/* One run on an open /dev/ctxvm (which stays the caller's to close). */
enum ctx_error_kind ctx_run_kmod(int dev, const struct ctx_program *prog,
				 const struct run_options *opts, struct run_result *res);

#endif /* CTXVM_BROKER_KMOD_H */
