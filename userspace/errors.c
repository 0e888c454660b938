// SPDX-License-Identifier: MIT
#include "errors.h"

const char *ctx_error_name(enum ctx_error_kind kind)
{
	static const char *const names[CTX_E__COUNT] = {
		[CTX_OK] = "Ok",
#define CTX_ERR_NAME(name) [CTX_E_##name] = #name,
		CTX_ERROR_KINDS(CTX_ERR_NAME)
#undef CTX_ERR_NAME
	};
	return (unsigned)kind < CTX_E__COUNT ? names[kind] : "Unknown";
}
