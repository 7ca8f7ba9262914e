/*
 * x86pt.h - decoding real x86-64 page-table pages (the kernel's own tables, read through
 * /proc/kcore by ptreloc/kernel_tables.py).  Not the emulated core: these are the hardware's
 * entry bits (arch/x86/include/asm/pgtable_types.h) as Linux uses them.
 */
#ifndef PTRELOC_X86PT_H
#define PTRELOC_X86PT_H

#include <stdint.h>

/* levels, leaf first (the same numbering as the emulated geometries) */
#define PTR_X86_PTE 0
#define PTR_X86_PMD 1
#define PTR_X86_PUD 2
#define PTR_X86_P4D 3
#define PTR_X86_PGD 4

struct ptr_x86_table {
	uint32_t nleaves;    /* leaf_index/leaf_pfn entries written */
	uint32_t nchildren;  /* child_index/child_pfn entries written */
	uint32_t nonpresent; /* swap/migration entries, non-present huge entries */
	uint32_t bad;        /* PSE at pgd/p4d: reserved, the hardware would fault */
};

/* ptr_x86_decode_table() - one table page into leaves and tables (kernel-doc: x86pt.c). */
int ptr_x86_decode_table(const uint64_t *words, uint32_t n, int level, uint16_t *leaf_index,
			 uint64_t *leaf_pfn, uint16_t *child_index, uint64_t *child_pfn,
			 struct ptr_x86_table *out);

#endif /* PTRELOC_X86PT_H */
