// SPDX-License-Identifier: MIT
/*
 * libFuzzer target: any bytes as a MASM file must assemble or be rejected
 * with diagnostics, never crash, hang or leak (make fuzz).  A program that
 * assembles is also run on the reference interpreter with a small gas and
 * memory budget, so the interpreter sees the same hostile inputs.
 */
#include <stddef.h>
#include <stdint.h>

#include "asm.h"
#include "interp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct asm_options opts = { 0 };
	struct asm_diags diags = { 0 };
	struct ctx_program *prog = NULL;

	if (ctx_assemble_source("fuzz.masm", (const char *)data, size, &opts, &prog, &diags) == 0 &&
	    prog) {
		struct run_options run = { .gas = 20000, .mem_limit = 1 << 20 };
		struct run_result res;

		ctx_run_inproc(prog, &run, &res);
		run_result_free(&res);
		ctx_program_free(prog);
	}
	asm_diags_free(&diags);
	return 0;
}
