/* SPDX-License-Identifier: MIT */
/*
 * Run-time error kinds.  The names are the strings of SPEC §2-§9 and are
 * what `--json` prints as error.kind; keep them stable.
 */
#ifndef CTXVM_ERRORS_H
#define CTXVM_ERRORS_H

#define CTX_ERROR_KINDS(X)                                                   \
	X(OutOfGas)                                                          \
	X(MemoryLimitExceeded)                                               \
	X(StackDepthLimitExceeded)                                           \
	X(OutputStackOverflow)                                               \
	X(AddressOutOfBounds)                                                \
	X(UnalignedWordAccess)                                               \
	X(ProtectedMemoryAccess)                                             \
	X(DivideByZero)                                                      \
	X(NotBinaryValue)                                                    \
	X(NotU32Values)                                                      \
	X(InvalidExponent)                                                   \
	X(FailedAssertion)                                                   \
	X(InvalidStackDepthOnReturn)                                         \
	X(ProcedureNotFound)                                                 \
	X(SyscallTargetNotInKernel)                                          \
	X(SyscallInKernel)                                                   \
	X(CallDepthExceeded)                                                 \
	X(SandboxViolation)                                                  \
	X(ContextCrashed)                                                    \
	X(SystemError)

enum ctx_error_kind {
	CTX_OK = 0,
#define CTX_ERR_ENUM(name) CTX_E_##name,
	CTX_ERROR_KINDS(CTX_ERR_ENUM)
#undef CTX_ERR_ENUM
	CTX_E__COUNT
};

const char *ctx_error_name(enum ctx_error_kind kind);

#endif /* CTXVM_ERRORS_H */
