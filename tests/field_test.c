// SPDX-License-Identifier: MIT
/*
 * shared/field.h against a slow reference (unsigned __int128 % p): edge
 * values near p and 2^32, and a seeded random cross-check.
 */
#include <stdint.h>

#include "field.h"
#include "kselftest_harness.h"

typedef unsigned __int128 u128;

static const uint64_t P = FE_P;

static uint64_t ref_add(uint64_t a, uint64_t b) { return (uint64_t)(((u128)a + b) % P); }
static uint64_t ref_sub(uint64_t a, uint64_t b) { return (uint64_t)(((u128)a + P - b) % P); }
static uint64_t ref_mul(uint64_t a, uint64_t b) { return (uint64_t)(((u128)a * b) % P); }

static const uint64_t edges[] = {
	0, 1, 2, 3, 0xFFFFFFFFull, 0x100000000ull, 0x100000001ull, 1ull << 63,
	(1ull << 63) + 1, FE_P - 1, FE_P - 2, FE_P - 0xFFFFFFFFull, FE_P - 0x100000000ull,
	0xFFFFFFFEFFFFFFFFull, 0x7FFFFFFF80000000ull, 12345678901234567ull,
};
#define NEDGES (sizeof(edges) / sizeof(edges[0]))

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t rng(void)
{
	/* splitmix64: fixed seed, so a failure reproduces. */
	uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

TEST(constants)
{
	EXPECT_EQ(0xFFFFFFFF00000001ull, FE_P);
	EXPECT_EQ(((u128)1 << 64) % P, (u128)FE_EPSILON);
}

TEST(edge_values_all_pairs)
{
	for (size_t i = 0; i < NEDGES; i++)
		for (size_t j = 0; j < NEDGES; j++) {
			uint64_t a = edges[i], b = edges[j];

			ASSERT_EQ(ref_add(a, b), fe_add(a, b));
			ASSERT_EQ(ref_sub(a, b), fe_sub(a, b));
			ASSERT_EQ(ref_mul(a, b), fe_mul(a, b));
		}
}

TEST(known_values)
{
	EXPECT_EQ(FE_P - 1, fe_sub(0, 1));
	EXPECT_EQ(0ull, fe_add(FE_P - 1, 1));
	EXPECT_EQ(1ull, fe_mul(FE_P - 1, FE_P - 1));      /* (-1)^2 */
	EXPECT_EQ(FE_P - 1, fe_neg(1));
	EXPECT_EQ(0ull, fe_neg(0));
	EXPECT_EQ(0xFFFFFFFFull, fe_mul(0x100000000ull, 0x100000000ull) + 0);  /* 2^64 = 2^32 - 1 */
	EXPECT_EQ(FE_P - 1, fe_mul(1ull << 48, 1ull << 48));    /* 2^96 = -1 */
}

TEST(reduce64_of_non_canonical)
{
	EXPECT_EQ(0ull, fe_reduce64(FE_P));
	EXPECT_EQ(1ull, fe_reduce64(FE_P + 1));
	EXPECT_EQ(0xFFFFFFFEull, fe_reduce64(UINT64_MAX));
	EXPECT_EQ(FE_P - 1, fe_reduce64(FE_P - 1));
}

TEST(reduce128_against_reference)
{
	for (int i = 0; i < 100000; i++) {
		uint64_t lo = rng(), hi = rng();
		u128 x = ((u128)hi << 64) | lo;

		ASSERT_EQ((uint64_t)(x % P), fe_reduce128(lo, hi));
	}
}

TEST(random_cross_check)
{
	for (int i = 0; i < 100000; i++) {
		uint64_t a = rng() % P, b = rng() % P;

		ASSERT_EQ(ref_add(a, b), fe_add(a, b));
		ASSERT_EQ(ref_sub(a, b), fe_sub(a, b));
		ASSERT_EQ(ref_mul(a, b), fe_mul(a, b));
		ASSERT_EQ(ref_sub(0, a), fe_neg(a));
	}
}

TEST(inverse_and_pow)
{
	for (size_t i = 0; i < NEDGES; i++) {
		uint64_t a = edges[i] % P;

		if (!a)
			continue;
		ASSERT_EQ(1ull, fe_mul(a, fe_inv(a)));
	}
	for (int i = 0; i < 2000; i++) {
		uint64_t a = rng() % P, e = rng() % 100;
		uint64_t r = 1;

		for (uint64_t k = 0; k < e; k++)
			r = ref_mul(r, a);
		ASSERT_EQ(r, fe_pow(a, e));
		if (a)
			ASSERT_EQ(1ull, fe_mul(a, fe_inv(a)));
	}
	EXPECT_EQ(1ull, fe_pow(0, 0));
	EXPECT_EQ(1ull, fe_pow(7, FE_P - 1));                   /* Fermat */
	EXPECT_EQ(1ull << 63, fe_pow(2, 63));
}

TEST_HARNESS_MAIN
