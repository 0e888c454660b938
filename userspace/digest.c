/* SPDX-License-Identifier: MIT */
#include <string.h>
#include <sodium.h>
#include "digest.h"

static void put32(crypto_generichash_state *st, uint32_t v)
{
	uint8_t b[4];
	for (int i = 0; i < 4; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	crypto_generichash_update(st, b, 4);
}

static void put64(crypto_generichash_state *st, uint64_t v)
{
	uint8_t b[8];
	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	crypto_generichash_update(st, b, 8);
}

static int is_procop(uint32_t op)
{
	return op == OP_EXEC || op == OP_CALL || op == OP_SYSCALL ||
	       op == OP_DELEGATECALL || op == OP_PROCREF;
}

static int is_assert(uint32_t op)
{
	return op == OP_ASSERT || op == OP_ASSERTZ || op == OP_ASSERT_EQ ||
	       op == OP_ASSERT_EQW || op == OP_U32ASSERT || op == OP_U32ASSERT2 ||
	       op == OP_U32ASSERTW;
}

int ctx_digest_proc(const struct ctx_insn *code, uint32_t n, uint32_t nlocals,
		    char *const *strings, uint32_t nstrings,
		    const uint8_t (*callee_raw)[32], uint8_t out[32])
{
	static const char tag[] = "ctxvm-proc-v1";
	crypto_generichash_state st;

	if (sodium_init() < 0)
		return -1;
	if (crypto_generichash_init(&st, NULL, 0, 32) != 0)
		return -1;
	crypto_generichash_update(&st, (const uint8_t *)tag, sizeof(tag) - 1);
	put32(&st, nlocals);
	put32(&st, n);
	for (uint32_t i = 0; i < n; i++) {
		const struct ctx_insn *in = &code[i];

		put32(&st, in->op);
		if (is_procop(in->op)) {
			crypto_generichash_update(&st, callee_raw[in->a], 32);
		} else if (is_assert(in->op)) {
			if (in->a == 0 || in->a > nstrings) {
				put32(&st, 0);
			} else {
				const char *s = strings[in->a - 1];
				size_t len = strlen(s);
				put32(&st, (uint32_t)len + 1);
				crypto_generichash_update(&st, (const uint8_t *)s, len);
			}
		} else {
			put32(&st, in->a);
		}
		put64(&st, in->imm);
	}
	return crypto_generichash_final(&st, out, 32) == 0 ? 0 : -1;
}

void ctx_digest_to_fe(const uint8_t raw[32], fe_t out[4])
{
	for (int k = 0; k < 4; k++) {
		uint64_t v = 0;
		for (int i = 7; i >= 0; i--)
			v = (v << 8) | raw[8 * k + i];
		out[k] = fe_reduce64(v);
	}
}
