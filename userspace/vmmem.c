// SPDX-License-Identifier: MIT
#include <stdlib.h>
#include <string.h>

#include "interp.h"
#include "vmmem.h"

struct vm_mem *vm_mem_new(uint64_t limit_bytes)
{
	struct vm_mem *mem = calloc(1, sizeof(*mem));

	if (!mem)
		return NULL;
	mem->page_limit = limit_bytes / (VM_PAGE_ELEMS * sizeof(fe_t));
#ifdef CTXVM_TESTING
	if (ctx_test.no_mem_count)
		mem->page_limit = UINT64_MAX;   /* only the OS limit is left */
#endif
	return mem;
}

static void journal_free_from(struct vm_mem *mem, size_t from)
{
	for (size_t i = from; i < mem->njournal; i++)
		free(mem->journal[i].copy);
	mem->njournal = from;
}

void vm_mem_free(struct vm_mem *mem)
{
	if (!mem)
		return;
	journal_free_from(mem, 0);
	free(mem->journal);
	for (size_t i = 0; i < VM_L1_SIZE; i++) {
		if (!mem->l1[i])
			continue;
		for (size_t j = 0; j < VM_L2_SIZE; j++)
			free(mem->l1[i][j]);
		free(mem->l1[i]);
	}
	free(mem);
}

static enum ctx_error_kind journal_save(struct vm_mem *mem, struct vm_page *pg)
{
	struct vm_page *copy;

	if (mem->njournal == mem->journal_cap) {
		size_t cap = mem->journal_cap ? mem->journal_cap * 2 : 16;
		struct vm_journal_entry *j = realloc(mem->journal, cap * sizeof(*j));

		if (!j)
			return CTX_E_SystemError;
		mem->journal = j;
		mem->journal_cap = cap;
	}
	copy = malloc(sizeof(*copy));
	if (!copy)
		return CTX_E_SystemError;
	memcpy(copy, pg, sizeof(*copy));
	mem->journal[mem->njournal].page = pg;
	mem->journal[mem->njournal].copy = copy;
	mem->njournal++;
	pg->saved_epoch = mem->epoch;
	return CTX_OK;
}

enum ctx_error_kind vm_mem_write_slow(struct vm_mem *mem, uint32_t addr, fe_t v)
{
	struct vm_page ***l2p = &mem->l1[addr >> (VM_PAGE_SHIFT + VM_L2_SHIFT)];
	struct vm_page **slot;
	struct vm_page *pg;
	enum ctx_error_kind err;

	if (!*l2p) {
		*l2p = calloc(VM_L2_SIZE, sizeof(**l2p));
		if (!*l2p)
			return CTX_E_SystemError;
	}
	slot = &(*l2p)[(addr >> VM_PAGE_SHIFT) & (VM_L2_SIZE - 1)];
	pg = *slot;
	if (!pg) {
		if (mem->npages >= mem->page_limit)
			return CTX_E_MemoryLimitExceeded;
		pg = calloc(1, sizeof(*pg));
		if (!pg)
			return CTX_E_MemoryLimitExceeded;
		*slot = pg;
		mem->npages++;
	}
	if (mem->epoch && pg->saved_epoch != mem->epoch) {
		err = journal_save(mem, pg);
		if (err)
			return err;
	}
	pg->cell[addr & (VM_PAGE_ELEMS - 1)] = v;
	return CTX_OK;
}

struct vm_journal_mark vm_journal_begin(struct vm_mem *mem)
{
	struct vm_journal_mark mark = { mem->njournal, mem->epoch };

	mem->epoch = ++mem->last_epoch;
	return mark;
}

void vm_journal_commit(struct vm_mem *mem, struct vm_journal_mark mark)
{
	mem->epoch = mark.prev_epoch;
	/* An enclosing guard may still roll these pages back; keep its copies. */
	if (!mem->epoch)
		journal_free_from(mem, 0);
}

void vm_journal_rollback(struct vm_mem *mem, struct vm_journal_mark mark)
{
	/* Newest first, so a page saved twice ends with its oldest content. */
	for (size_t i = mem->njournal; i > mark.njournal; i--) {
		struct vm_journal_entry *e = &mem->journal[i - 1];

		memcpy(e->page->cell, e->copy->cell, sizeof(e->page->cell));
		e->page->saved_epoch = 0;
	}
	journal_free_from(mem, mark.njournal);
	mem->epoch = mark.prev_epoch;
}
