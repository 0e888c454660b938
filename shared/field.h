/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * Arithmetic in the Goldilocks field GF(p), p = 2^64 - 2^32 + 1.
 *
 * Every function takes and returns canonical values (0 <= x < p).  The
 * reduction uses 2^64 = 2^32 - 1 (mod p) and 2^96 = -1 (mod p), so a 128-bit
 * product folds back with two subtractions/additions and no division.
 */
#ifndef CTXVM_FIELD_H
#define CTXVM_FIELD_H

#include "compat.h"

#define FE_P 0xFFFFFFFF00000001ULL
/* 2^64 mod p: what a carry out of bit 63 is worth. */
#define FE_EPSILON 0xFFFFFFFFULL

typedef ctx_u64 fe_t;

static inline int fe_is_canonical(ctx_u64 x)
{
	return x < FE_P;
}

static inline fe_t fe_reduce64(ctx_u64 x)
{
	return x >= FE_P ? x - FE_P : x;
}

static inline fe_t fe_add(fe_t a, fe_t b)
{
	ctx_u64 s = a + b;

	/* A carry out means s + 2^64 = s + EPSILON; it cannot carry twice. */
	if (s < a)
		s += FE_EPSILON;
	return fe_reduce64(s);
}

static inline fe_t fe_neg(fe_t a)
{
	return a ? FE_P - a : 0;
}

static inline fe_t fe_sub(fe_t a, fe_t b)
{
	return a >= b ? a - b : a + (FE_P - b);
}

static inline fe_t fe_reduce128(ctx_u64 lo, ctx_u64 hi)
{
	ctx_u64 hi_hi = hi >> 32;
	ctx_u64 hi_lo = hi & FE_EPSILON;
	ctx_u64 t0 = lo - hi_hi;        /* lo - hi_hi * 2^96 */
	ctx_u64 t1;
	ctx_u64 r;

	if (lo < hi_hi)                 /* borrowed 2^64 */
		t0 -= FE_EPSILON;
	t1 = hi_lo * FE_EPSILON;        /* hi_lo * 2^64, fits in 64 bits */
	r = t0 + t1;
	if (r < t0)
		r += FE_EPSILON;
	return fe_reduce64(r);
}

static inline fe_t fe_mul(fe_t a, fe_t b)
{
	unsigned __int128 prod = (unsigned __int128)a * b;

	return fe_reduce128((ctx_u64)prod, (ctx_u64)(prod >> 64));
}

static inline fe_t fe_pow(fe_t base, ctx_u64 exp)
{
	fe_t acc = 1;

	while (exp) {
		if (exp & 1)
			acc = fe_mul(acc, base);
		base = fe_mul(base, base);
		exp >>= 1;
	}
	return acc;
}

/* Inverse by Fermat; the caller rejects 0 (DivideByZero) beforehand. */
static inline fe_t fe_inv(fe_t a)
{
	return fe_pow(a, FE_P - 2);
}

#endif /* CTXVM_FIELD_H */
