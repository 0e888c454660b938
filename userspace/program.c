/* SPDX-License-Identifier: MIT */
#include <stdlib.h>
#include <string.h>
#include <inttypes.h>
#include "program.h"
#include "asm.h"

const char *const ctx_op_names[OP__COUNT] = {
#define CTX_OP_NAME(name, gas) [OP_##name] = #name,
	CTX_OPCODES(CTX_OP_NAME)
#undef CTX_OP_NAME
};

const uint8_t ctx_op_gas[OP__COUNT] = {
#define CTX_OP_GAS(name, gas) [OP_##name] = gas,
	CTX_OPCODES(CTX_OP_GAS)
#undef CTX_OP_GAS
};

int64_t ctx_program_find_digest(const struct ctx_program *prog, const fe_t digest[4])
{
	if (!prog)
		return -1;
	for (uint32_t i = 0; i < prog->nprocs; i++) {
		const fe_t *d = prog->procs[i].digest;
		if (d[0] == digest[0] && d[1] == digest[1] && d[2] == digest[2] &&
		    d[3] == digest[3])
			return i;
	}
	return -1;
}

uint32_t ctx_program_proc_at(const struct ctx_program *prog, uint32_t pc)
{
	uint32_t lo = 0, hi = prog->nprocs;

	/* procs are laid out in order of their entry */
	while (hi - lo > 1) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (prog->procs[mid].entry <= pc)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

void ctx_program_free(struct ctx_program *prog)
{
	if (!prog)
		return;
	free(prog->code);
	free(prog->locs);
	for (uint32_t i = 0; i < prog->nprocs; i++)
		free(prog->procs[i].name);
	free(prog->procs);
	for (uint32_t i = 0; i < prog->nstrings; i++)
		free(prog->strings[i]);
	free(prog->strings);
	for (uint32_t i = 0; i < prog->nfiles; i++)
		free(prog->files[i]);
	free(prog->files);
	free(prog);
}

void ctx_program_disassemble(const struct ctx_program *prog, FILE *out)
{
	for (uint32_t p = 0; p < prog->nprocs; p++) {
		const struct ctx_proc *pr = &prog->procs[p];
		const char *file = pr->loc.file < prog->nfiles ? prog->files[pr->loc.file] : "?";

		fprintf(out, "proc %u %s%s%s%s%s locals=%u (N4=%u) %s:%u:%u\n", p, pr->name,
			pr->flags & PROC_ENTRY ? " [entry]" : "",
			pr->flags & PROC_EXPORTED ? " [exported]" : "",
			pr->flags & PROC_KERNEL ? " [kernel]" : "",
			pr->flags & PROC_KERNEL_EXPORT ? " [syscall-target]" : "",
			pr->nlocals, pr->nlocals4, file, pr->loc.line, pr->loc.col);
		fprintf(out, "  digest %016" PRIx64 " %016" PRIx64 " %016" PRIx64 " %016" PRIx64 "\n",
			pr->digest[0], pr->digest[1], pr->digest[2], pr->digest[3]);
		for (uint32_t i = pr->entry; i < pr->end && i < prog->ncode; i++) {
			const struct ctx_insn *in = &prog->code[i];
			const struct ctx_srcloc *l = &prog->locs[i];
			const char *name = in->op < OP__COUNT ? ctx_op_names[in->op] : "???";

			fprintf(out, "  %6u: %-18s a=%-6u imm=%-20" PRIu64, i, name, in->a, in->imm);
			if ((in->op == OP_EXEC || in->op == OP_CALL || in->op == OP_SYSCALL ||
			     in->op == OP_DELEGATECALL || in->op == OP_PROCREF) && in->a < prog->nprocs)
				fprintf(out, " ; %s", prog->procs[in->a].name);
			else if (in->a && in->a <= prog->nstrings &&
				 (in->op == OP_ASSERT || in->op == OP_ASSERTZ || in->op == OP_ASSERT_EQ ||
				  in->op == OP_ASSERT_EQW || in->op == OP_U32ASSERT ||
				  in->op == OP_U32ASSERT2 || in->op == OP_U32ASSERTW))
				fprintf(out, " ; err=\"%s\"", prog->strings[in->a - 1]);
			fprintf(out, "  @%u:%u\n", l->line, l->col);
		}
	}
}
