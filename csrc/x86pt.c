/*
 * x86pt.c - decode real x86-64 page-table pages (see x86pt.h).
 *
 * Why C: a dense PTE table has 512 present entries, and ptreloc/kernel_tables.py walks
 * thousands of tables per process; decoding them entry by entry in Python cost 258 us per
 * table on the host (about 90% of a walk, 38x a pagemap read of the same process in the
 * guest).  The Python decoder stays as the reference this one is tested against.
 */
#include <errno.h>
#include <stddef.h>

#include "x86pt.h"

#define X86_PRESENT (1ULL << 0)
#define X86_PSE (1ULL << 7)
#define X86_PROTNONE (1ULL << 8) /* _PAGE_GLOBAL; PROT_NONE only when PRESENT is clear */
#define X86_PHYS_MASK ((1ULL << 52) - 1)
#define X86_FRAME_MASK (X86_PHYS_MASK & ~((1ULL << 12) - 1))

static inline uint64_t huge_mask(int level)
{
	return X86_PHYS_MASK & ~((1ULL << (level == PTR_X86_PMD ? 21 : 30)) - 1);
}

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
			 struct ptr_x86_table *out)
{
	if (!words || !leaf_index || !leaf_pfn || !child_index || !child_pfn || !out || n > 512 ||
	    level < PTR_X86_PTE || level > PTR_X86_PGD)
		return -EINVAL;
	uint32_t nl = 0, nc = 0, np = 0, bad = 0;
	if (level == PTR_X86_PTE) {
		for (uint32_t i = 0; i < n; i++) {
			uint64_t e = words[i];
			if (!e)
				continue;
			if (e & X86_PRESENT) {
				leaf_index[nl] = (uint16_t)i;
				leaf_pfn[nl++] = (e & X86_FRAME_MASK) >> 12;
			} else if (e & X86_PROTNONE) {
				leaf_index[nl] = (uint16_t)i;
				leaf_pfn[nl++] = (~e & X86_FRAME_MASK) >> 12;
			} else {
				np++;
			}
		}
	} else {
		int huge_ok = level == PTR_X86_PMD || level == PTR_X86_PUD;
		uint64_t hm = huge_ok ? huge_mask(level) : 0;
		for (uint32_t i = 0; i < n; i++) {
			uint64_t e = words[i];
			if (!e)
				continue;
			if (e & X86_PRESENT) {
				if (!(e & X86_PSE)) {
					child_index[nc] = (uint16_t)i;
					child_pfn[nc++] = (e & X86_FRAME_MASK) >> 12;
				} else if (huge_ok) {
					leaf_index[nl] = (uint16_t)i;
					leaf_pfn[nl++] = (e & hm) >> 12;
				} else {
					bad++;
				}
			} else if (level == PTR_X86_PMD &&
				   (e & (X86_PSE | X86_PROTNONE)) == (X86_PSE | X86_PROTNONE)) {
				leaf_index[nl] = (uint16_t)i; /* a PROT_NONE THP: inverted frame */
				leaf_pfn[nl++] = (~e & hm) >> 12;
			} else {
				np++;
			}
		}
	}
	out->nleaves = nl;
	out->nchildren = nc;
	out->nonpresent = np;
	out->bad = bad;
	return 0;
}
