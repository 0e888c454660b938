// SPDX-License-Identifier: MIT
/*
 * The assembler through ctx_assemble_source: located diagnostics for every
 * error class, all errors of a file reported, both syntaxes, lowering of the
 * key instructions, content-addressed digests, hostile input.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "asm.h"
#include "program.h"
#include "field.h"
/* the harness compares with the literal's type; counts here are unsigned */
#pragma GCC diagnostic ignored "-Wsign-compare"
#include "kselftest_harness.h"

struct res {
	int rc;
	struct ctx_program *prog;
	struct asm_diags d;
};

static struct res asm_opts(const char *src, const struct asm_options *o)
{
	struct res r = { 0 };
	r.rc = ctx_assemble_source("t.masm", src, strlen(src), o, &r.prog, &r.d);
	return r;
}

static struct res asm_src(const char *src)
{
	return asm_opts(src, NULL);
}

static void res_free(struct res *r)
{
	ctx_program_free(r->prog);
	asm_diags_free(&r->d);
}

static int has(const struct res *r, const char *s)
{
	return r->d.text && strstr(r->d.text, s);
}

/* the instructions of the #main procedure */
static const struct ctx_insn *main_code(const struct res *r, uint32_t *n, uint32_t *entry)
{
	const struct ctx_proc *p = &r->prog->procs[r->prog->entry_proc];
	*n = p->end - p->entry;
	*entry = p->entry;
	return &r->prog->code[p->entry];
}

static int64_t proc_by_name(const struct ctx_program *p, const char *name)
{
	for (uint32_t i = 0; i < p->nprocs; i++)
		if (!strcmp(p->procs[i].name, name))
			return i;
	return -1;
}

#define EXPECT_ERR(src, where, msg)                                      \
	do {                                                              \
		struct res r_ = asm_src(src);                              \
		EXPECT_EQ(-1, r_.rc);                                      \
		EXPECT_EQ(NULL, r_.prog);                                  \
		EXPECT_EQ(1, r_.d.nerrors);                                \
		EXPECT_TRUE(has(&r_, where)) TH_LOG("%s", r_.d.text);      \
		EXPECT_TRUE(has(&r_, msg)) TH_LOG("%s", r_.d.text);        \
		res_free(&r_);                                             \
	} while (0)

TEST(ok_minimal)
{
	struct res r = asm_src("begin\n  push.1 add.2\nend\n");
	ASSERT_EQ(0, r.rc);
	ASSERT_NE(NULL, r.prog);
	EXPECT_EQ(0, r.d.nerrors);
	EXPECT_EQ(PROC_ENTRY, r.prog->procs[r.prog->entry_proc].flags);
	EXPECT_STREQ("#main", r.prog->procs[r.prog->entry_proc].name);
	EXPECT_EQ(OP_RET, r.prog->code[r.prog->ncode - 1].op);
	res_free(&r);
}

TEST(error_unknown_instruction)
{
	EXPECT_ERR("begin\n  push.1\n  frobnicate\nend\n", "t.masm:3:3: error:", "unknown instruction 'frobnicate'");
}

TEST(error_diag_format)
{
	struct res r = asm_src("begin\n    frob\nend\n");
	ASSERT_EQ(-1, r.rc);
	EXPECT_STREQ("t.masm:2:5: error: unknown instruction 'frob'\n      frob\n      ^\n", r.d.text);
	res_free(&r);
}

TEST(error_div0)
{
	EXPECT_ERR("begin\n  div.0\nend\n", "t.masm:2:7:", "div.0");
	EXPECT_ERR("begin\n  u32div.0\nend\n", "t.masm:2:10:", "division by zero");
	EXPECT_ERR("begin\n  u32divmod.0\nend\n", "t.masm:2:13:", "division by zero");
}

TEST(error_ranges)
{
	EXPECT_ERR("begin\n dup.16\nend\n", "t.masm:2:6:", "out of range");
	EXPECT_ERR("begin\n swap.0\nend\n", "t.masm:2:7:", "out of range");
	EXPECT_ERR("begin\n movup.1\nend\n", "t.masm:2:8:", "out of range");
	EXPECT_ERR("begin\n movup.16\nend\n", "t.masm:2:8:", "out of range");
	EXPECT_ERR("begin\n movdn.16\nend\n", "t.masm:2:8:", "out of range");
	EXPECT_ERR("begin\n movupw.4\nend\n", "t.masm:2:9:", "out of range");
	EXPECT_ERR("begin\n dupw.4\nend\n", "t.masm:2:7:", "out of range");
	EXPECT_ERR("begin\n swapw.4\nend\n", "t.masm:2:8:", "out of range");
	EXPECT_ERR("begin\n u32wrapping_add.4294967296\nend\n", "t.masm:2:18:", "out of range");
	EXPECT_ERR("begin\n u32shl.32\nend\n", "t.masm:2:9:", "out of range");
	EXPECT_ERR("begin\n mem_load.4294967296\nend\n", "t.masm:2:11:", "out of range");
	EXPECT_ERR("begin\n push.18446744069414584321\nend\n", "t.masm:2:7:", "out of range");
	EXPECT_ERR("begin\n push.0xFFFFFFFF00000001\nend\n", "t.masm:2:7:", "out of range");
	EXPECT_ERR("begin\n push.99999999999999999999\nend\n", "t.masm:2:7:", "out of range");
	EXPECT_ERR("begin\n repeat.0 add end\nend\n", "t.masm:2:9:", "out of range");
	EXPECT_ERR("begin\n repeat.4294967296 add end\nend\n", "t.masm:2:9:", "out of range");
	EXPECT_ERR("begin\n exp.u65\nend\n", "t.masm:2:7:", "out of range");
	EXPECT_ERR("begin\n push.1.2.3.4.5.6.7.8.9.10.11.12.13.14.15.16.17\nend\n", "t.masm:2:", "too many values");
	EXPECT_ERR("begin\n push.abc\nend\n", "t.masm:2:7:", "undefined constant 'abc'");
}

TEST(error_locals)
{
	EXPECT_ERR("begin\n loc_load.0\nend\n", "t.masm:2:11:", "no locals");
	EXPECT_ERR("proc.f.2\n loc_store.2\nend\nbegin exec.f end\n", "t.masm:2:12:", "out of range");
	EXPECT_ERR("proc.f.4\n loc_loadw_le.4\nend\nbegin exec.f end\n", "t.masm:2:", "out of range");
	EXPECT_ERR("proc.f.4\n locaddr.4\nend\nbegin exec.f end\n", "t.masm:2:10:", "out of range");
	EXPECT_ERR("proc.f.65533\n add\nend\nbegin exec.f end\n", "t.masm:1:", "too many locals");
	EXPECT_ERR("@locals(65533)\nproc f\n add\nend\nbegin exec.f end\n", "t.masm:1:", "too many locals");
}

TEST(error_blocks)
{
	EXPECT_ERR("begin\n push.1\n if.true\n  add.1\nend\n", "t.masm:1:1:", "unterminated 'begin' block");
	EXPECT_ERR("begin\n push.1\n if.true\n  add.1\n", "t.masm:3:2:", "unterminated block");
	EXPECT_ERR("proc.f\n add.1\n\nbegin\n exec.f\nend\n", "t.masm:1:1:", "missing 'end'");
	EXPECT_ERR("begin\n push.1\n else\nend\n", "t.masm:3:2:", "'else' without");
	EXPECT_ERR("begin\n push.1\nend\nend\n", "t.masm:4:1:", "'end' without");
	EXPECT_ERR("begin\n push.1 if.true add else mul else drop end\nend\n", "t.masm:2:30:", "'else' without");
}

TEST(error_procs)
{
	EXPECT_ERR("begin\n exec.nope\nend\n", "t.masm:2:7:", "undefined procedure 'nope'");
	EXPECT_ERR("begin\n procref.nope\nend\n", "t.masm:2:10:", "undefined procedure");
	EXPECT_ERR("begin\n exec.m::f\nend\n", "t.masm:2:7:", "undefined module");
	EXPECT_ERR("proc.f\n add\nend\nproc.f\n mul\nend\nbegin exec.f end\n", "t.masm:4:", "duplicate procedure 'f'");
	EXPECT_ERR("proc.f\n exec.f\nend\nbegin exec.f end\n", "t.masm:2:7:", "recursion");
	EXPECT_ERR("proc.a\n exec.b\nend\nproc.b\n call.a\nend\nbegin exec.a end\n", "t.masm:5:7:", "recursion");
	EXPECT_ERR("proc.a\n procref.a drop\nend\nbegin exec.a end\n", "t.masm:2:10:", "recursion");
	EXPECT_ERR("proc.f\n add\nend\n", "t.masm:", "no 'begin ... end'");
	EXPECT_ERR("begin\n syscall.f\nend\n", "t.masm:2:10:", "SyscallTargetNotInKernel");
	EXPECT_ERR("use.nomod\nbegin\n exec.nomod::f\nend\n", "t.masm:1:5:", "undefined module 'nomod'");
}

TEST(error_strings)
{
	EXPECT_ERR("begin\n assert.err=\"oops\nend\n", "t.masm:2:13:", "unterminated string");
	EXPECT_ERR("begin\n assert.err=oops\nend\n", "t.masm:2:9:", "err=");
}

TEST(error_const)
{
	EXPECT_ERR("const.A=B+1\nbegin push.A end\n", "t.masm:1:", "undefined constant 'B'");
	EXPECT_ERR("const.A=1/0\nbegin push.A end\n", "t.masm:1:", "division by zero");
}

TEST(all_errors_reported)
{
	struct res r = asm_src("begin\n  frobnicate\n  push.1\n  div.0\n  movup.99\nend\n");
	EXPECT_EQ(-1, r.rc);
	EXPECT_EQ(3, r.d.nerrors);
	EXPECT_TRUE(has(&r, "t.masm:2:3:"));
	EXPECT_TRUE(has(&r, "t.masm:4:7:"));
	EXPECT_TRUE(has(&r, "t.masm:5:9:"));
	res_free(&r);

	/* errors in several procedures and phases */
	r = asm_src("proc.a\n  bogus\nend\nproc.b\n  exec.zzz\nend\nbegin\n  dup.99\n  exec.a exec.b\nend\n");
	EXPECT_EQ(3, r.d.nerrors) TH_LOG("%s", r.d.text);
	res_free(&r);
}

TEST(error_cap)
{
	size_t n = 500 * 6 + 20;
	char *src = malloc(n);
	size_t k = (size_t)sprintf(src, "begin\n");
	for (int i = 0; i < 500; i++)
		k += (size_t)sprintf(src + k, "bad\n");
	sprintf(src + k, "end\n");
	struct res r = asm_src(src);
	EXPECT_EQ(-1, r.rc);
	EXPECT_EQ(100, r.d.nerrors);
	EXPECT_TRUE(has(&r, "too many errors"));
	res_free(&r);
	free(src);
}

TEST(both_syntaxes_same_code)
{
	const char *classic =
		"use.std::x\n"
		"const.N=3\n"
		"proc.helper.2\n  loc_store.1 loc_load.1 add.N\nend\n"
		"export.pubf\n  exec.helper\nend\n"
		"begin\n  push.1 exec.pubf\nend\n";
	const char *current =
		"use std::x\n"
		"const N = 3\n"
		"@locals(2)\nproc helper\n  loc_store.1 loc_load.1 add.N\nend\n"
		"pub proc pubf\n  exec.helper\nend\n"
		"begin\n  push.1 exec.pubf\nend\n";
	/* a temporary library dir for std::x */
	char dir[] = "/tmp/asm_test_XXXXXX";
	ASSERT_NE(NULL, mkdtemp(dir));
	char path[256];
	snprintf(path, sizeof(path), "%s/std", dir);
	ASSERT_EQ(0, mkdir(path, 0700));
	snprintf(path, sizeof(path), "%s/std/x.masm", dir);
	FILE *f = fopen(path, "w");
	ASSERT_NE(NULL, f);
	fputs("export.g\n add\nend\n", f);
	fclose(f);
	const char *libs[] = { dir };
	struct asm_options o = { .lib_dirs = libs, .nlib_dirs = 1 };

	struct res a = asm_opts(classic, &o), b = asm_opts(current, &o);
	ASSERT_EQ(0, a.rc) TH_LOG("%s", a.d.text);
	ASSERT_EQ(0, b.rc) TH_LOG("%s", b.d.text);
	ASSERT_EQ(a.prog->ncode, b.prog->ncode);
	EXPECT_EQ(0, memcmp(a.prog->code, b.prog->code, a.prog->ncode * sizeof(struct ctx_insn)));
	ASSERT_EQ(a.prog->nprocs, b.prog->nprocs);
	for (uint32_t i = 0; i < a.prog->nprocs; i++) {
		EXPECT_STREQ(a.prog->procs[i].name, b.prog->procs[i].name);
		EXPECT_EQ(a.prog->procs[i].flags, b.prog->procs[i].flags);
		EXPECT_EQ(0, memcmp(a.prog->procs[i].digest, b.prog->procs[i].digest, sizeof(ctx_digest)));
	}
	int64_t h = proc_by_name(a.prog, "helper");
	ASSERT_GE(h, 0);
	EXPECT_EQ(2, a.prog->procs[h].nlocals);
	EXPECT_EQ(4, a.prog->procs[h].nlocals4);
	EXPECT_EQ(PROC_EXPORTED, a.prog->procs[proc_by_name(a.prog, "pubf")].flags);
	EXPECT_GE(proc_by_name(a.prog, "std::x::g"), 0);
	res_free(&a);
	res_free(&b);

	/* exporting a private lib proc is an error, located at the reference */
	f = fopen(path, "w");
	fputs("proc.g\n add\nend\n", f);
	fclose(f);
	a = asm_opts("use.std::x\nbegin\n  exec.x::g\nend\n", &o);
	EXPECT_EQ(1, a.d.nerrors);
	EXPECT_TRUE(has(&a, "t.masm:3:8:"));
	EXPECT_TRUE(has(&a, "not exported"));
	res_free(&a);
	/* an error inside the library names the library file */
	f = fopen(path, "w");
	fputs("export.g\n add\n frob\nend\n", f);
	fclose(f);
	a = asm_opts("use.std::x->y\nbegin\n  exec.y::g\nend\n", &o);
	EXPECT_EQ(1, a.d.nerrors);
	EXPECT_TRUE(has(&a, "/std/x.masm:3:2: error: unknown instruction 'frob'")) TH_LOG("%s", a.d.text);
	res_free(&a);
	unlink(path);
	snprintf(path, sizeof(path), "%s/std", dir);
	rmdir(path);
	rmdir(dir);
}

TEST(lowering_push)
{
	struct res r = asm_src("begin push.1.2.3 push.[4,5,6,7] push.0x10 end");
	ASSERT_EQ(0, r.rc);
	uint32_t n, e;
	const struct ctx_insn *c = main_code(&r, &n, &e);
	ASSERT_EQ(9, n);
	uint32_t ops[] = { OP_PUSH, OP_PUSH_FREE, OP_PUSH_FREE, OP_PUSH, OP_PUSH_FREE, OP_PUSH_FREE,
			   OP_PUSH_FREE, OP_PUSH, OP_RET };
	uint64_t imm[] = { 1, 2, 3, 7, 6, 5, 4, 16, 0 };
	for (int i = 0; i < 9; i++) {
		EXPECT_EQ(ops[i], c[i].op);
		EXPECT_EQ(imm[i], c[i].imm);
	}
	res_free(&r);
}

TEST(lowering_field_imm)
{
	struct res r = asm_src("begin sub.3 div.2 add.5 mul.7 eq.9 neq.1 exp.u16 exp.3 exp incr end");
	ASSERT_EQ(0, r.rc);
	uint32_t n, e;
	const struct ctx_insn *c = main_code(&r, &n, &e);
	ASSERT_EQ(11, n);
	EXPECT_EQ(OP_ADD_IMM, c[0].op);
	EXPECT_EQ(fe_neg(3), c[0].imm);
	EXPECT_EQ(OP_MUL_IMM, c[1].op);
	EXPECT_EQ(fe_inv(2), c[1].imm);
	EXPECT_EQ(1, fe_mul(c[1].imm, 2));
	EXPECT_EQ(OP_ADD_IMM, c[2].op);
	EXPECT_EQ(5, c[2].imm);
	EXPECT_EQ(OP_MUL_IMM, c[3].op);
	EXPECT_EQ(OP_EQ_IMM, c[4].op);
	EXPECT_EQ(9, c[4].imm);
	EXPECT_EQ(OP_NEQ_IMM, c[5].op);
	EXPECT_EQ(OP_EXP_BITS, c[6].op);
	EXPECT_EQ(16, c[6].a);
	EXPECT_EQ(OP_EXP_IMM, c[7].op);
	EXPECT_EQ(3, c[7].imm);
	EXPECT_EQ(OP_EXP, c[8].op);
	EXPECT_EQ(OP_INCR, c[9].op);
	res_free(&r);
}

TEST(lowering_u32_mem_stack)
{
	struct res r = asm_src("begin u32wrapping_add.7 u32shr.31 mem_storew.8 swap dup swapw dupw movup.3 "
			       "mem_loadw u32div end");
	ASSERT_EQ(0, r.rc);
	uint32_t n, e;
	const struct ctx_insn *c = main_code(&r, &n, &e);
	ASSERT_EQ(14, n);
	EXPECT_EQ(OP_PUSH_FREE, c[0].op);
	EXPECT_EQ(7, c[0].imm);
	EXPECT_EQ(OP_U32WRAPPING_ADD, c[1].op);
	EXPECT_EQ(OP_PUSH_FREE, c[2].op);
	EXPECT_EQ(31, c[2].imm);
	EXPECT_EQ(OP_U32SHR, c[3].op);
	EXPECT_EQ(OP_PUSH_FREE, c[4].op);
	EXPECT_EQ(8, c[4].imm);
	EXPECT_EQ(OP_MEM_STOREW_BE, c[5].op);
	EXPECT_EQ(OP_SWAP, c[6].op);
	EXPECT_EQ(1, c[6].a);
	EXPECT_EQ(OP_DUP, c[7].op);
	EXPECT_EQ(0, c[7].a);
	EXPECT_EQ(OP_SWAPW, c[8].op);
	EXPECT_EQ(1, c[8].a);
	EXPECT_EQ(OP_DUPW, c[9].op);
	EXPECT_EQ(0, c[9].a);
	EXPECT_EQ(OP_MOVUP, c[10].op);
	EXPECT_EQ(3, c[10].a);
	EXPECT_EQ(OP_MEM_LOADW_BE, c[11].op);
	EXPECT_EQ(OP_U32DIV, c[12].op);
	res_free(&r);
}

TEST(lowering_locals_asserts)
{
	struct res r = asm_src("proc.f.5\n loc_store.4 loc_loadw.0 locaddr.2 assert.err=\"bad thing\" "
			       "u32assert2 assert_eq.err=\"x y\"\nend\nbegin exec.f end");
	ASSERT_EQ(0, r.rc) TH_LOG("%s", r.d.text);
	const struct ctx_proc *p = &r.prog->procs[proc_by_name(r.prog, "f")];
	const struct ctx_insn *c = &r.prog->code[p->entry];
	EXPECT_EQ(5, p->nlocals);
	EXPECT_EQ(8, p->nlocals4);
	EXPECT_EQ(OP_LOC_STORE, c[0].op);
	EXPECT_EQ(4, c[0].a);
	EXPECT_EQ(8, c[0].imm);
	EXPECT_EQ(OP_LOC_LOADW_BE, c[1].op);
	EXPECT_EQ(OP_LOCADDR, c[2].op);
	EXPECT_EQ(2, c[2].a);
	EXPECT_EQ(8, c[2].imm);
	EXPECT_EQ(OP_ASSERT, c[3].op);
	ASSERT_GE(c[3].a, 1);
	EXPECT_STREQ("bad thing", r.prog->strings[c[3].a - 1]);
	EXPECT_EQ(OP_U32ASSERT2, c[4].op);
	EXPECT_EQ(0, c[4].a);
	EXPECT_EQ(OP_ASSERT_EQ, c[5].op);
	EXPECT_STREQ("x y", r.prog->strings[c[5].a - 1]);
	EXPECT_EQ(OP_RET, c[6].op);
	res_free(&r);
}

TEST(lowering_control)
{
	/* put a procedure first so absolute targets are offset */
	struct res r = asm_src("proc.f\n add\nend\n"
			       "begin\n"
			       " if.true add else mul end\n"      /* 0..4 */
			       " if.false drop end\n"            /* 5..6 */
			       " while.true push.0 end\n"        /* 7..9 */
			       " repeat.3 drop drop end\n"       /* 10..13 */
			       " repeat.2 end\n"                 /* 14..15 */
			       "end\n");
	ASSERT_EQ(0, r.rc) TH_LOG("%s", r.d.text);
	uint32_t n, e;
	const struct ctx_insn *c = main_code(&r, &n, &e);
	ASSERT_EQ(2, e);
	ASSERT_EQ(16, n);
	EXPECT_EQ(OP_IF_TRUE, c[0].op);
	EXPECT_EQ(e + 3, c[0].a);
	EXPECT_EQ(OP_ADD, c[1].op);
	EXPECT_EQ(OP_JMP, c[2].op);
	EXPECT_EQ(e + 4, c[2].a);
	EXPECT_EQ(OP_MUL, c[3].op);
	EXPECT_EQ(OP_IF_FALSE, c[4].op);
	EXPECT_EQ(e + 6, c[4].a);
	EXPECT_EQ(OP_DROP, c[5].op);
	EXPECT_EQ(OP_WHILE, c[6].op);
	EXPECT_EQ(e + 9, c[6].a);
	EXPECT_EQ(OP_PUSH, c[7].op);
	EXPECT_EQ(OP_JMP, c[8].op);
	EXPECT_EQ(e + 6, c[8].a);
	EXPECT_EQ(OP_REPEAT, c[9].op);
	EXPECT_EQ(3, c[9].imm);
	EXPECT_EQ(e + 12, c[9].a);
	EXPECT_EQ(OP_REPEAT_END, c[12].op);
	EXPECT_EQ(e + 10, c[12].a);
	EXPECT_EQ(OP_REPEAT, c[13].op);
	EXPECT_EQ(e + 14, c[13].a);
	EXPECT_EQ(OP_REPEAT_END, c[14].op);
	EXPECT_EQ(e + 14, c[14].a);
	EXPECT_EQ(OP_RET, c[15].op);
	res_free(&r);
}

TEST(constants)
{
	struct res r = asm_src("const.A=10\nconst B = (A + 2) * 3 - 1\nconst.C=0x10\n"
			       "begin push.A push.B push.C repeat.A add end add.B end");
	ASSERT_EQ(0, r.rc) TH_LOG("%s", r.d.text);
	uint32_t n, e;
	const struct ctx_insn *c = main_code(&r, &n, &e);
	EXPECT_EQ(10, c[0].imm);
	EXPECT_EQ(35, c[1].imm);
	EXPECT_EQ(16, c[2].imm);
	EXPECT_EQ(10, c[3].imm);
	EXPECT_EQ(35, c[6].imm);
	res_free(&r);
}

TEST(digests_content_addressed)
{
	struct res r = asm_src("proc.a\n add mul\nend\n"
			       "proc.b\n add mul\nend\n"       /* same body as a */
			       "proc.c\n add add\nend\n"       /* different body */
			       "proc.d\n exec.a\nend\n"
			       "proc.e\n exec.c\nend\n"        /* different callee */
			       "proc.g\n exec.b\nend\n"        /* same callee content as d */
			       "proc.h.4\n add mul\nend\n"     /* locals differ */
			       "begin exec.a exec.b exec.c exec.d exec.e exec.g exec.h end");
	ASSERT_EQ(0, r.rc) TH_LOG("%s", r.d.text);
	const struct ctx_program *p = r.prog;
#define DG(n) (p->procs[proc_by_name(p, n)].digest)
	EXPECT_EQ(0, memcmp(DG("a"), DG("b"), sizeof(ctx_digest)));
	EXPECT_NE(0, memcmp(DG("a"), DG("c"), sizeof(ctx_digest)));
	EXPECT_NE(0, memcmp(DG("d"), DG("e"), sizeof(ctx_digest)));
	EXPECT_EQ(0, memcmp(DG("d"), DG("g"), sizeof(ctx_digest)));
	EXPECT_NE(0, memcmp(DG("a"), DG("h"), sizeof(ctx_digest)));
	for (uint32_t i = 0; i < p->nprocs; i++)
		for (int k = 0; k < 4; k++)
			EXPECT_LT(p->procs[i].digest[k], FE_P);
	EXPECT_GE(ctx_program_find_digest(p, DG("c")), 0);
	fe_t bogus[4] = { 1, 2, 3, 4 };
	EXPECT_EQ(-1, ctx_program_find_digest(p, bogus));
	/* stable: assembling again (and under another proc name) gives the same digest */
	ctx_digest da;
	memcpy(da, DG("a"), sizeof(da));
	struct res r2 = asm_src("proc.zzz\n  add\n  mul # comment\nend\nbegin exec.zzz end");
	ASSERT_EQ(0, r2.rc);
	EXPECT_EQ(0, memcmp(da, r2.prog->procs[proc_by_name(r2.prog, "zzz")].digest, sizeof(ctx_digest)));
	/* assertion messages count */
	struct res r3 = asm_src("proc.x\n assert.err=\"a\"\nend\nproc.y\n assert.err=\"b\"\nend\n"
				"begin exec.x exec.y end");
	ASSERT_EQ(0, r3.rc);
	EXPECT_NE(0, memcmp(r3.prog->procs[0].digest, r3.prog->procs[1].digest, sizeof(ctx_digest)));
	/* jump targets are relative: same body at different offsets, same digest */
	struct res r4 = asm_src("proc.x\n if.true add end\nend\nproc.pad\n drop drop\nend\n"
				"proc.y\n if.true add end\nend\nbegin exec.x exec.y exec.pad end");
	ASSERT_EQ(0, r4.rc);
	EXPECT_EQ(0, memcmp(r4.prog->procs[0].digest, r4.prog->procs[2].digest, sizeof(ctx_digest)));
	res_free(&r);
	res_free(&r2);
	res_free(&r3);
	res_free(&r4);
#undef DG
}

static char *write_tmp(const char *text)
{
	char *path = strdup("/tmp/asm_test_k_XXXXXX");
	int fd = mkstemp(path);
	if (fd < 0)
		return NULL;
	if (write(fd, text, strlen(text)) != (ssize_t)strlen(text)) {
		close(fd);
		return NULL;
	}
	close(fd);
	return path;
}

TEST(kernel)
{
	char *k = write_tmp("export.a\n exec.helper\nend\nproc.helper\n add\nend\n"
			    "pub proc b\n call.priv\nend\nproc priv\n syscall.a\nend\n");
	ASSERT_NE(NULL, k);
	struct asm_options o = { .kernel_path = k };
	struct res r = asm_opts("begin\n syscall.a syscall.b\nend\n", &o);
	ASSERT_EQ(0, r.rc) TH_LOG("%s", r.d.text);
	const struct ctx_program *p = r.prog;
	int64_t a = -1, h = -1;
	for (uint32_t i = 0; i < p->nprocs; i++) {
		if (strstr(p->procs[i].name, "::a"))
			a = i;
		if (strstr(p->procs[i].name, "::helper"))
			h = i;
	}
	ASSERT_GE(a, 0);
	ASSERT_GE(h, 0);
	EXPECT_EQ(PROC_KERNEL | PROC_KERNEL_EXPORT | PROC_EXPORTED, p->procs[a].flags);
	EXPECT_EQ(PROC_KERNEL, p->procs[h].flags);
	uint32_t n, e;
	const struct ctx_insn *c = main_code(&r, &n, &e);
	EXPECT_EQ(OP_SYSCALL, c[0].op);
	EXPECT_EQ(a, c[0].a);
	res_free(&r);

	/* private kernel procedure is not a syscall target */
	r = asm_opts("begin\n syscall.helper\nend\n", &o);
	EXPECT_EQ(1, r.d.nerrors);
	EXPECT_TRUE(has(&r, "t.masm:2:10:"));
	EXPECT_TRUE(has(&r, "SyscallTargetNotInKernel"));
	res_free(&r);
	unlink(k);
	free(k);

	/* syscall in an exported kernel proc, and reached through exec */
	k = write_tmp("export.a\n add\nend\nexport.b\n syscall.a\nend\n"
		      "proc.h\n syscall.a\nend\nexport.c\n exec.h\nend\n");
	o.kernel_path = k;
	r = asm_opts("begin\n syscall.a\nend\n", &o);
	EXPECT_EQ(2, r.d.nerrors) TH_LOG("%s", r.d.text);
	EXPECT_TRUE(has(&r, ":5:2: error: SyscallInKernel"));
	EXPECT_TRUE(has(&r, ":8:2: error: SyscallInKernel"));
	res_free(&r);
	unlink(k);
	free(k);

	/* a kernel must not have begin..end */
	k = write_tmp("export.a\n add\nend\nbegin\n add\nend\n");
	o.kernel_path = k;
	r = asm_opts("begin\n syscall.a\nend\n", &o);
	EXPECT_EQ(1, r.d.nerrors);
	EXPECT_TRUE(has(&r, ":4:1: error:"));
	res_free(&r);
	unlink(k);
	free(k);

	/* unreadable kernel file */
	o.kernel_path = "/nonexistent/kernel.masm";
	r = asm_opts("begin\n add\nend\n", &o);
	EXPECT_EQ(-1, r.rc);
	EXPECT_TRUE(has(&r, "/nonexistent/kernel.masm"));
	EXPECT_TRUE(has(&r, "No such file"));
	res_free(&r);
}

TEST(unreadable_file)
{
	struct ctx_program *p = NULL;
	struct asm_diags d = { 0 };
	EXPECT_EQ(-1, ctx_assemble_file("/nonexistent/x.masm", NULL, &p, &d));
	EXPECT_EQ(NULL, p);
	EXPECT_EQ(1, d.nerrors);
	EXPECT_NE(NULL, strstr(d.text, "/nonexistent/x.masm"));
	EXPECT_NE(NULL, strstr(d.text, "No such file"));
	asm_diags_free(&d);
}

TEST(hostile_deep_nesting)
{
	size_t depth = 100000;
	size_t n = 6 + depth * 8 + depth * 4 + 5;
	char *src = malloc(n + 1);
	size_t k = 0;
	k += (size_t)sprintf(src + k, "begin\n");
	for (size_t i = 0; i < depth; i++)
		k += (size_t)sprintf(src + k, "if.true\n");
	for (size_t i = 0; i < depth; i++)
		k += (size_t)sprintf(src + k, "end\n");
	k += (size_t)sprintf(src + k, "end\n");
	struct res r = asm_src(src);
	EXPECT_EQ(-1, r.rc);
	EXPECT_EQ(1, r.d.nerrors);
	EXPECT_TRUE(has(&r, "t.masm:258:1:"));
	EXPECT_TRUE(has(&r, "nested too deeply"));
	res_free(&r);
	/* 256 deep is fine */
	k = (size_t)sprintf(src, "begin\n");
	for (int i = 0; i < 256; i++)
		k += (size_t)sprintf(src + k, "repeat.4294967295\n");
	for (int i = 0; i < 256; i++)
		k += (size_t)sprintf(src + k, "end\n");
	sprintf(src + k, "end\n");
	r = asm_src(src);
	EXPECT_EQ(0, r.rc) TH_LOG("%s", r.d.text);
	res_free(&r);
	free(src);
}

TEST(hostile_garbage)
{
	uint64_t s = 0x12345678;
	size_t n = 1 << 20;
	char *buf = malloc(n);
	for (size_t i = 0; i < n; i++) {
		s = s * 6364136223846793005ULL + 1442695040888963407ULL;
		buf[i] = (char)(s >> 56);
	}
	struct ctx_program *p = NULL;
	struct asm_diags d = { 0 };
	EXPECT_EQ(-1, ctx_assemble_source("g.masm", buf, n, NULL, &p, &d));
	EXPECT_LE(d.nerrors, 100);
	EXPECT_GE(d.nerrors, 1);
	asm_diags_free(&d);
	/* NUL bytes and a very long token */
	memset(buf, 'a', n);
	memcpy(buf, "begin\n\0\0 push.1\n", 16);
	memcpy(buf + n - 5, "\nend\n", 5);
	EXPECT_EQ(-1, ctx_assemble_source("g.masm", buf, n, NULL, &p, &d));
	EXPECT_EQ(1, d.nerrors);
	EXPECT_NE(NULL, strstr(d.text, "g.masm:3:1: error: unknown instruction"));
	asm_diags_free(&d);
	free(buf);
}

TEST(hostile_big_file)
{
	/* ~10 MB of valid code */
	const char *line = "push.1 add.2 drop\n";
	size_t reps = 600000, ll = strlen(line);
	char *src = malloc(reps * ll + 32);
	size_t k = (size_t)sprintf(src, "begin\n");
	for (size_t i = 0; i < reps; i++) {
		memcpy(src + k, line, ll);
		k += ll;
	}
	k += (size_t)sprintf(src + k, "end\n");
	struct ctx_program *p = NULL;
	struct asm_diags d = { 0 };
	EXPECT_EQ(0, ctx_assemble_source("big.masm", src, k, NULL, &p, &d));
	ASSERT_NE(NULL, p);
	EXPECT_EQ(reps * 3 + 1, p->ncode);
	ctx_program_free(p);
	asm_diags_free(&d);
	free(src);
}

TEST(proc_at_and_disassemble)
{
	struct res r = asm_src("proc.f\n add\nend\nbegin\n exec.f assert.err=\"m\"\nend\n");
	ASSERT_EQ(0, r.rc);
	EXPECT_EQ(0, ctx_program_proc_at(r.prog, 0));
	EXPECT_EQ(0, ctx_program_proc_at(r.prog, 1));
	EXPECT_EQ(1, ctx_program_proc_at(r.prog, 2));
	EXPECT_EQ(1, ctx_program_proc_at(r.prog, 4));
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	ctx_program_disassemble(r.prog, f);
	fclose(f);
	EXPECT_NE(NULL, strstr(buf, "#main"));
	EXPECT_NE(NULL, strstr(buf, "EXEC"));
	EXPECT_NE(NULL, strstr(buf, "digest"));
	EXPECT_NE(NULL, strstr(buf, "err=\"m\""));
	free(buf);
	EXPECT_STREQ("PUSH_FREE", ctx_op_names[OP_PUSH_FREE]);
	EXPECT_EQ(0, ctx_op_gas[OP_PUSH_FREE]);
	EXPECT_EQ(1, ctx_op_gas[OP_ADD]);
	res_free(&r);
}

TEST_HARNESS_MAIN
