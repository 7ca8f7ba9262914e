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

/**
 * ptr_x86_decode_table() - sort the first @n entries of one table page of @level into leaves,
 * next-level tables and the rest, as the hardware and Linux's pte_present() see them.
 * @words: the table's entries (a 4 KiB page: n <= 512); @level: PTR_X86_*;
 * @leaf_index, @leaf_pfn: room for @n leaves (entry number, first 4 KiB frame);
 * @child_index, @child_pfn: room for @n next-level tables (entry number, frame).
 *
 * Present (bit 0) entries: at PMD/PUD with PSE (bit 7) a huge leaf (frame bits 21/30..51,
 * bit 12 is PAT there), at PGD/P4D PSE is reserved ("bad"), otherwise a table; at PTE a leaf.
 * Not present but PROT_NONE (bit 8) at PTE, or PROT_NONE|PSE at PMD: a leaf whose frame bits
 * are stored inverted (the L1TF mitigation, protnone_mask()).  Any other non-zero entry is a
 * swap or migration entry ("nonpresent").  Frame bits above 51 (NX, protection keys,
 * software bits) are masked off.
 *
 * Return: 0; -EINVAL for a bad @level or @n > 512 or a NULL buffer.
 * Locking: none (pure function of its arguments).
 */
int ptr_x86_decode_table(const uint64_t *words, uint32_t n, int level, uint16_t *leaf_index,
			 uint64_t *leaf_pfn, uint16_t *child_index, uint64_t *child_pfn,
			 struct ptr_x86_table *out);

#endif /* PTRELOC_X86PT_H */
