/* SPDX-License-Identifier: MIT */
/*
 * A context process: what runs inside the sandbox.  It owns one context's
 * memory and runs the activations the broker sends it (CTXVM_MSG_RUN); every
 * context switch and `caller` is a message to the broker.  Context 0 (root
 * and kernel) stays for the whole run and also runs nested syscalls while it
 * waits; every other context runs one activation and exits.
 */
#ifndef CTXVM_CTXPROC_H
#define CTXVM_CTXPROC_H

#include "program.h"
#include "interp.h"

#define CTXPROC_WARM_UP 1u    /* pooled: do the RUN's page faults while waiting for it */
#define CTXPROC_LINGER 2u     /* after the activation, wait for the broker to end it */

/* Never returns: exits 0 when done, non-zero on a protocol error. */
void ctxproc_main(const struct ctx_program *prog, const struct run_options *opts, int endpoint,
		  unsigned flags) __attribute__((noreturn));

#ifdef CTXVM_TESTING
/* Test build: note this process's mappings while it may still read /proc. */
void ctxproc_scan_prepare(void);
#endif

#endif /* CTXVM_CTXPROC_H */
