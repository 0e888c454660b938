/* SPDX-License-Identifier: MIT */
/*
 * The assembler: MASM source (both syntaxes) -> struct ctx_program.
 *
 * It never stops at the first error: every diagnostic of every file is
 * collected, each as "file:line:col: error: message" followed by the source
 * line and a caret under the column.  On any error no program is returned.
 */
#ifndef CTXVM_ASM_H
#define CTXVM_ASM_H

#include <stddef.h>
#include "program.h"

struct asm_options {
	const char *kernel_path;    /* --kernel FILE, or NULL */
	const char *const *lib_dirs;/* --lib DIR..., searched in order */
	size_t nlib_dirs;
};

struct asm_diags {
	char *text;      /* all diagnostics, formatted, NUL-terminated (may be NULL) */
	size_t len;
	size_t cap;
	unsigned nerrors;
};

/*
 * Assemble the program file at `path`.  Returns 0 and sets *out on success;
 * returns -1 with diags->nerrors > 0 on assembly errors (and for unreadable
 * files, also reported as diagnostics).
 */
int ctx_assemble_file(const char *path, const struct asm_options *opts,
		      struct ctx_program **out, struct asm_diags *diags);

/* The same, from a buffer (fuzzing, tests); `name` is used in locations. */
int ctx_assemble_source(const char *name, const char *src, size_t len,
			const struct asm_options *opts,
			struct ctx_program **out, struct asm_diags *diags);

void asm_diags_free(struct asm_diags *diags);

/* Print a procedure listing (the disassembler used by `ctxvm asm --dis`). */
#include <stdio.h>
void ctx_program_disassemble(const struct ctx_program *prog, FILE *out);

#endif /* CTXVM_ASM_H */
