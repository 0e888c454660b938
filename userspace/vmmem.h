/* SPDX-License-Identifier: MIT */
/*
 * One context's memory: 2^32 field elements, element-addressed, sparse.
 *
 * Pages of CTX_MEM_PAGE_ELEMS elements are allocated on first write and are
 * the unit the memory limit counts.  Context 0's memory can also keep an undo
 * journal: while a guarded delegatecall runs, the first write into a page
 * saves a copy of the page, so a failed delegatecall can put context 0 back
 * exactly as it was (SPEC §5).  Nested guards are nested journal levels.
 */
#ifndef CTXVM_VMMEM_H
#define CTXVM_VMMEM_H

#include <stdint.h>
#include "../shared/field.h"
#include "errors.h"

#define VM_PAGE_SHIFT 10
#define VM_PAGE_ELEMS (1u << VM_PAGE_SHIFT)
#define VM_L2_SHIFT 10
#define VM_L2_SIZE (1u << VM_L2_SHIFT)
#define VM_L1_SIZE (1u << (32 - VM_PAGE_SHIFT - VM_L2_SHIFT))

struct vm_page {
	fe_t cell[VM_PAGE_ELEMS];
	uint64_t saved_epoch;   /* journal level that already holds a copy */
};

struct vm_journal_entry {
	struct vm_page *page;
	struct vm_page *copy;
};

struct vm_mem {
	struct vm_page **l1[VM_L1_SIZE];
	uint64_t npages;
	uint64_t page_limit;

	/* Undo journal; epoch 0 means no guard is active. */
	uint64_t epoch;
	uint64_t last_epoch;
	struct vm_journal_entry *journal;
	size_t njournal;
	size_t journal_cap;
};

struct vm_journal_mark {
	size_t njournal;
	uint64_t prev_epoch;
};

struct vm_mem *vm_mem_new(uint64_t limit_bytes);
void vm_mem_free(struct vm_mem *mem);

enum ctx_error_kind vm_mem_write_slow(struct vm_mem *mem, uint32_t addr, fe_t v);

static inline struct vm_page *vm_mem_page(const struct vm_mem *mem, uint32_t addr)
{
	struct vm_page **l2 = mem->l1[addr >> (VM_PAGE_SHIFT + VM_L2_SHIFT)];

	return l2 ? l2[(addr >> VM_PAGE_SHIFT) & (VM_L2_SIZE - 1)] : NULL;
}

static inline fe_t vm_mem_read(const struct vm_mem *mem, uint32_t addr)
{
	const struct vm_page *pg = vm_mem_page(mem, addr);

	return pg ? pg->cell[addr & (VM_PAGE_ELEMS - 1)] : 0;
}

static inline enum ctx_error_kind vm_mem_write(struct vm_mem *mem, uint32_t addr, fe_t v)
{
	struct vm_page *pg = vm_mem_page(mem, addr);

	if (CTX_UNLIKELY(!pg || (mem->epoch && pg->saved_epoch != mem->epoch)))
		return vm_mem_write_slow(mem, addr, v);
	pg->cell[addr & (VM_PAGE_ELEMS - 1)] = v;
	return CTX_OK;
}

struct vm_journal_mark vm_journal_begin(struct vm_mem *mem);
void vm_journal_commit(struct vm_mem *mem, struct vm_journal_mark mark);
void vm_journal_rollback(struct vm_mem *mem, struct vm_journal_mark mark);

#endif /* CTXVM_VMMEM_H */
