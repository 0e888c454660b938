// SPDX-License-Identifier: MIT
/* The same arithmetic as fib.masm in native C, with shared/field.h. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "field.h"

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 10000000;
	fe_t a = 0, b = 1;
	struct timespec t0, t1;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (long i = 0; i < n; i++) {
		fe_t t = fe_add(a, b);

		a = b;
		b = t;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("%llu %.6f\n", (unsigned long long)b,
	       (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	return 0;
}
