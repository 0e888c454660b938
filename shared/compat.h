/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * The one place where shared/ code learns what it is built into.  Everything
 * else in shared/ includes only this header, so the same source compiles in
 * the kernel module and in userspace without #ifdefs of its own.
 */
#ifndef CTXVM_COMPAT_H
#define CTXVM_COMPAT_H

#ifdef __KERNEL__
#include <linux/errno.h>
#include <linux/types.h>
#include <linux/string.h>
typedef u8 ctx_u8;
typedef u32 ctx_u32;
typedef u64 ctx_u64;
typedef s64 ctx_s64;
#else
#include <errno.h>
#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include <stdbool.h>
typedef uint8_t ctx_u8;
typedef uint32_t ctx_u32;
typedef uint64_t ctx_u64;
typedef int64_t ctx_s64;
#endif

#if defined(__GNUC__)
#define CTX_LIKELY(x) __builtin_expect(!!(x), 1)
#define CTX_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define CTX_LIKELY(x) (x)
#define CTX_UNLIKELY(x) (x)
#endif

#endif /* CTXVM_COMPAT_H */
