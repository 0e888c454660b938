/* SPDX-License-Identifier: MIT */
/*
 * The assembled program: the one contract between the assembler (asm.c and
 * friends), the interpreter (interp.c), the disassembler and the digest code.
 *
 * Code is one flat array of fixed-size instructions; control flow is lowered
 * to jumps by the assembler, so the interpreter never walks a tree.  Every
 * procedure (including the `begin ... end` entry and every kernel procedure)
 * is a contiguous range of that array ending in OP_RET.
 *
 * Stack notation in the comments: [top, next, ...] before -> after.
 */
#ifndef CTXVM_PROGRAM_H
#define CTXVM_PROGRAM_H

#include <stdint.h>
#include <stddef.h>

#include "../shared/field.h"

/*
 * X(name, gas) — gas is what the instruction costs when it executes; the
 * extra context costs of §6 (call +1000, syscall +100) are added by the
 * interpreter, not listed here.  Fields: `a` (u32) and `imm` (u64).
 */
#define CTX_OPCODES(X)                                                        \
	/* --- stack --- */                                                   \
	X(DROP, 1)          /* [a, ...] -> [...] */                           \
	X(DROPW, 1)                                                           \
	X(PADW, 1)                                                            \
	X(DUP, 1)           /* a = n (0..15): copy element n to the top */    \
	X(DUPW, 1)          /* a = n (0..3): copy word n to the top */        \
	X(SWAP, 1)          /* a = n (1..15): swap element 0 and element n */ \
	X(SWAPW, 1)         /* a = n (1..3): swap word 0 and word n */        \
	X(SWAPDW, 1)        /* swap words 0,1 with words 2,3 */               \
	X(MOVUP, 1)         /* a = n (2..15) */                               \
	X(MOVDN, 1)         /* a = n (2..15) */                               \
	X(MOVUPW, 1)        /* a = n (2..3) */                                \
	X(MOVDNW, 1)        /* a = n (2..3) */                                \
	X(CSWAP, 1)                                                           \
	X(CSWAPW, 1)                                                          \
	X(CDROP, 1)                                                           \
	X(CDROPW, 1)                                                          \
	X(PUSH, 1)          /* imm = canonical value */                       \
	X(PUSH_FREE, 0)     /* imm; the 2nd.. value of push.a.b.c / push.[..] \
	                       and the immediate of a lowered `op.imm` */      \
	X(SDEPTH, 1)                                                          \
	/* --- field --- */                                                   \
	X(ADD, 1) X(SUB, 1) X(MUL, 1) X(DIV, 1) X(NEG, 1) X(INV, 1)           \
	X(POW2, 1)          /* [a] -> [2^a], a < 64 else error */             \
	X(EXP, 1)           /* [b, a] -> [a^b]; a = 0 means b is u64 */        \
	X(EXP_BITS, 1)      /* a = bit length u: exp.uN, b must be < 2^u */   \
	X(INCR, 1)                                                            \
	X(ADD_IMM, 1) X(MUL_IMM, 1) /* imm = b (sub.b: add of -b, div.b: mul  \
	                               of 1/b, lowered by the assembler) */   \
	X(EXP_IMM, 1)       /* imm = exponent */                              \
	X(EQ, 1) X(NEQ, 1) X(LT, 1) X(LTE, 1) X(GT, 1) X(GTE, 1) X(EQW, 1)    \
	X(EQ_IMM, 1) X(NEQ_IMM, 1)                                            \
	X(IS_ODD, 1) X(NOT, 1) X(AND, 1) X(OR, 1) X(XOR, 1)                   \
	/* --- u32 (immediate forms lowered to PUSH_FREE imm; op) --- */       \
	X(U32ASSERT, 1) X(U32ASSERT2, 1) X(U32ASSERTW, 1) /* a = msg id */    \
	X(U32TEST, 1) X(U32TESTW, 1) X(U32CAST, 1) X(U32SPLIT, 1)             \
	X(U32WRAPPING_ADD, 1) X(U32WRAPPING_SUB, 1) X(U32WRAPPING_MUL, 1)     \
	X(U32OVERFLOWING_ADD, 1) X(U32OVERFLOWING_SUB, 1)                     \
	X(U32WIDENING_ADD, 1) X(U32WIDENING_MUL, 1)                           \
	X(U32DIV, 1) X(U32MOD, 1) X(U32DIVMOD, 1)                             \
	X(U32AND, 1) X(U32OR, 1) X(U32XOR, 1) X(U32NOT, 1)                    \
	X(U32SHL, 1) X(U32SHR, 1) X(U32ROTL, 1) X(U32ROTR, 1)                 \
	X(U32POPCNT, 1) X(U32CLZ, 1) X(U32CTZ, 1) X(U32CLO, 1) X(U32CTO, 1)   \
	X(U32LT, 1) X(U32LTE, 1) X(U32GT, 1) X(U32GTE, 1)                     \
	X(U32MIN, 1) X(U32MAX, 1)                                             \
	/* --- assertions: a = message id (0 = none, else strings[a-1]) --- */ \
	X(ASSERT, 1) X(ASSERTZ, 1) X(ASSERT_EQ, 1) X(ASSERT_EQW, 1)           \
	/* --- memory (the `.addr` forms lowered to PUSH_FREE addr; op) --- */ \
	X(MEM_LOAD, 1) X(MEM_STORE, 1)                                        \
	X(MEM_LOADW_BE, 1) X(MEM_LOADW_LE, 1)                                 \
	X(MEM_STOREW_BE, 1) X(MEM_STOREW_LE, 1)                               \
	/* locals: a = index i, imm = N4 of the enclosing procedure;          \
	   the address is fmp - N4 + i */                                     \
	X(LOC_LOAD, 1) X(LOC_STORE, 1)                                        \
	X(LOC_LOADW_BE, 1) X(LOC_LOADW_LE, 1)                                 \
	X(LOC_STOREW_BE, 1) X(LOC_STOREW_LE, 1)                               \
	X(LOCADDR, 1)                                                         \
	/* --- control flow: a = jump target (absolute index into code) --- */ \
	X(IF_TRUE, 1)       /* pop c: 1 -> fall through, 0 -> jump a */       \
	X(IF_FALSE, 1)      /* pop c: 0 -> fall through, 1 -> jump a */       \
	X(JMP, 0)                                                             \
	X(WHILE, 1)         /* pop c: 1 -> fall through, 0 -> jump a (after   \
	                       the loop); the body ends in JMP back here */   \
	X(REPEAT, 0)        /* imm = N >= 1: start a counted loop; a = index  \
	                       of its REPEAT_END */                           \
	X(REPEAT_END, 0)    /* a = first body instruction; loops N times */   \
	/* --- procedures: a = procedure index --- */                         \
	X(EXEC, 1) X(CALL, 1) X(SYSCALL, 1) X(DELEGATECALL, 1)                \
	X(PROCREF, 1)       /* push the digest word of procedure a */         \
	X(DYNEXEC, 1) X(DYNCALL, 1) X(DYNDELEGATECALL, 1)                     \
	X(CALLER, 1)                                                          \
	X(RET, 0)           /* last instruction of every procedure */         \
	/* --- debugging --- */                                               \
	X(DEBUG_STACK, 0)

enum ctx_opcode {
#define CTX_OP_ENUM(name, gas) OP_##name,
	CTX_OPCODES(CTX_OP_ENUM)
#undef CTX_OP_ENUM
	OP__COUNT
};

extern const char *const ctx_op_names[OP__COUNT];
extern const uint8_t ctx_op_gas[OP__COUNT];

/* 16 bytes, so four instructions share a cache line. */
struct ctx_insn {
	uint32_t op;
	uint32_t a;
	uint64_t imm;
};

struct ctx_srcloc {
	uint32_t file;  /* index into ctx_program.files */
	uint32_t line;  /* 1-based */
	uint32_t col;   /* 1-based */
};

typedef fe_t ctx_digest[4];

enum ctx_proc_flags {
	PROC_ENTRY = 1u << 0,          /* the program's begin ... end */
	PROC_KERNEL = 1u << 1,         /* defined in the --kernel file */
	PROC_KERNEL_EXPORT = 1u << 2,  /* exported by the kernel: a syscall target */
	PROC_EXPORTED = 1u << 3,       /* pub / export in its module */
};

struct ctx_proc {
	char *name;         /* fully qualified: "module::proc"; "#main" for begin..end */
	uint32_t entry;     /* index of the first instruction in code */
	uint32_t end;       /* index one past its OP_RET */
	uint32_t nlocals;   /* as declared */
	uint32_t nlocals4;  /* rounded up to a multiple of 4 (N4) */
	uint32_t flags;
	ctx_digest digest;
	struct ctx_srcloc loc;
};

struct ctx_program {
	struct ctx_insn *code;
	struct ctx_srcloc *locs;    /* parallel to code */
	uint32_t ncode;

	struct ctx_proc *procs;
	uint32_t nprocs;
	uint32_t entry_proc;        /* index of the #main procedure */

	char **strings;             /* assertion messages */
	uint32_t nstrings;

	char **files;               /* source file names, for locations */
	uint32_t nfiles;
};

/* Index of the procedure with this digest, or -1 (ProcedureNotFound). */
int64_t ctx_program_find_digest(const struct ctx_program *prog, const fe_t digest[4]);
/* Index of the procedure whose code range holds instruction pc. */
uint32_t ctx_program_proc_at(const struct ctx_program *prog, uint32_t pc);
void ctx_program_free(struct ctx_program *prog);

#endif /* CTXVM_PROGRAM_H */
