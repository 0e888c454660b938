/* SPDX-License-Identifier: MIT */
/* Procedure digests (content addressing), used by the assembler. */
#ifndef CTXVM_DIGEST_H
#define CTXVM_DIGEST_H

#include <stdint.h>
#include "program.h"

/*
 * BLAKE2b-256 over the canonical encoding of one procedure: code[0..n) is
 * its body with jump targets relative to its entry; callee_raw(i) gives the
 * 32-byte raw digest of procedure index i (for EXEC/CALL/SYSCALL/
 * DELEGATECALL/PROCREF operands).  Returns 0, or -1 if libsodium fails.
 */
int ctx_digest_proc(const struct ctx_insn *code, uint32_t n, uint32_t nlocals,
		    char *const *strings, uint32_t nstrings,
		    const uint8_t (*callee_raw)[32], uint8_t out[32]);
/* The 4 field elements of a raw digest. */
void ctx_digest_to_fe(const uint8_t raw[32], fe_t out[4]);

#endif
