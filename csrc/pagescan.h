/*
 * pagescan.h - scans over a live process's page arrays for ptreloc.proc and ptreloc.mirror
 * (pagescan.c): pagemap read and compacted to resident pages (with, in the same pass, each
 * page's node from its frame and the huge-page candidates), placement votes per lowest-level
 * table span, status histograms, (before, after) node pairs counted and selected
 * (ptreloc.migrate).
 *
 * Nothing here touches an address space; the only syscall is pread(2) of a pagemap file the
 * caller opened.  The caller reads /sys and hands over arrays; these loops are what would
 * cost ~100 ns a page in Python.
 * Functions are documented (kernel-doc: arguments, Return:, Locking:) at their definitions in
 * pagescan.c.
 */
#ifndef PTRELOC_PAGESCAN_H
#define PTRELOC_PAGESCAN_H

#include <stdint.h>

/* pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst) */
#define PTR_PM_PRESENT (1ull << 63)
#define PTR_PM_PFN_MASK ((1ull << 55) - 1)

/** The status ptr_pagemap_scan() gives a page whose node its frame does not tell. */
#define PTR_NODE_UNKNOWN INT32_MIN

/**
 * ptr_last_at_or_below() - the last index r < @n with @v[r] <= @x (0 when there is none) of
 * an ascending array: which run of a page run list holds a page index (@v = run_first) or an
 * address (@v = run_start).  A binary search.
 */
static inline uint64_t ptr_last_at_or_below(const uint64_t *v, uint64_t n, uint64_t x)
{
	uint64_t a = 0, b = n;
	while (b - a > 1) {
		uint64_t mid = a + (b - a) / 2;
		if (v[mid] <= x)
			a = mid;
		else
			b = mid;
	}
	return a;
}

/* Vote classes of a page for ptr_span_votes(). */
#define PTR_VOTE_NONE 0  /* does not vote (kernel special mapping) */
#define PTR_VOTE_OTHER 1 /* votes for the process as a whole only (a file page) */
#define PTR_VOTE_ANON 2  /* votes for its tables too (private anonymous memory) */

/**
 * struct ptr_pagemap_scan - in and out of ptr_pagemap_scan() (pagescan.c).
 * @ranges:      @nranges [start, end) pairs of page-aligned addresses, ascending
 * @page_shift:  log2 of the page size
 * @buf:         scratch room for @buf_entries pagemap entries (at least one huge block)
 * @block_node:  the node of memory block b, -1 for none or several (NULL: no table, every
 *               node unknown); @nblocks entries, @block_shift log2 of the frames per block
 * @zero_ranges: @nzero [first, end) frame ranges of the shared zero pages (they read -EFAULT)
 * @huge_shift:  log2 of the huge page size for candidates (0: none)
 * @run_start:   out: the resident pages as runs of consecutive pages, ascending: run r
 *               starts at address @run_start[r] with page index @run_first[r] (and goes on
 *               to the next run's index, or @done); room for @run_cap, @runs written
 * @nodes:       out: each resident page's node status (node, -EFAULT, or
 *               PTR_NODE_UNKNOWN), by page index; room for @cap, @done written
 * @huge_index:  out: page index of each candidate block's first page; @huge_pfn: out,
 *               its head frame (0 when hidden); room for @huge_cap, @huge_done written
 * @unknown:     out (added to): pages written with PTR_NODE_UNKNOWN
 * @framed:      out (added to): present entries that showed a frame number
 * @pos:         in/out: the range and page to go on from ({0, 0} at first)
 */
struct ptr_pagemap_scan {
	const uint64_t *ranges;
	uint64_t nranges;
	unsigned page_shift;
	uint64_t *buf;
	uint64_t buf_entries;
	const int16_t *block_node;
	uint64_t nblocks;
	unsigned block_shift;
	const uint64_t *zero_ranges;
	uint64_t nzero;
	unsigned huge_shift;
	uint64_t *run_start;
	uint64_t *run_first;
	uint64_t run_cap;
	uint64_t runs;
	int32_t *nodes;
	uint64_t cap;
	uint64_t done;
	uint64_t *huge_index;
	uint64_t *huge_pfn;
	uint64_t huge_cap;
	uint64_t huge_done;
	uint64_t unknown;
	uint64_t framed;
	uint64_t pos[2];
};

int ptr_pagemap_scan(int fd, struct ptr_pagemap_scan *s);
int ptr_runs_expand(const uint64_t *run_start, const uint64_t *run_first, uint64_t nruns,
		    unsigned page_shift, uint64_t lo, uint64_t n, uint64_t *out);
uint64_t ptr_pagemap_compact(const uint64_t *entries, uint64_t n, uint64_t first_vpn,
			     unsigned page_shift, uint64_t *vas, uint64_t *pfns);
int64_t ptr_pagemap_read(int fd, const uint64_t *ranges, uint64_t nranges, unsigned page_shift,
			 uint64_t *buf, uint64_t buf_entries, uint64_t *vas, uint64_t *pfns,
			 uint64_t cap, uint64_t pos[2]);
int64_t ptr_span_votes(const uint64_t *run_start, const uint64_t *run_first, uint64_t nruns,
		       unsigned page_shift, const int32_t *nodes, const uint8_t *classes,
		       unsigned span_shift, const uint8_t *allowed, uint32_t nnodes,
		       uint64_t *keys, uint32_t *counts, uint64_t cap, uint64_t *all_votes,
		       uint64_t *anon_votes);
int ptr_span_tops(const uint32_t *counts, uint64_t n, uint32_t nnodes, int16_t *tops);
int64_t ptr_span_rollup(const uint64_t *keys, const uint32_t *counts, uint64_t n,
			uint32_t nnodes, unsigned bits, uint64_t *out_keys, uint32_t *out_counts);
int64_t ptr_span_keys(const uint64_t *vas, uint64_t n, unsigned span_shift, uint64_t *keys,
		      uint64_t cap);
int64_t ptr_status_histogram(const int32_t *status, uint64_t n, int32_t lo, int32_t hi,
			     uint64_t *hist);
int64_t ptr_pair_histogram(const int32_t *before, const int32_t *after, uint64_t n,
			   uint32_t nbins, uint64_t *hist);
int64_t ptr_nodes_carry(const int32_t *last, const int32_t *now, uint64_t n, int32_t *out);
int64_t ptr_select_pairs(const int32_t *before, const int32_t *after, uint64_t n,
			 const uint8_t *member, uint32_t nbins, uint64_t *index, uint64_t cap);

#endif /* PTRELOC_PAGESCAN_H */
