/*
 * pagescan.h - scans over a live process's page arrays for ptreloc.proc and ptreloc.mirror
 * (pagescan.c): pagemap entries compacted to resident pages, frame numbers to nodes, placement
 * votes per lowest-level table span, huge-page candidates, status histograms, (before, after)
 * node pairs counted and selected (ptreloc.migrate).
 *
 * Nothing here touches an address space, a file or a syscall: the caller reads /proc and
 * /sys and hands over arrays; these loops are what would cost ~100 ns a page in Python.
 * Functions are documented (kernel-doc: arguments, Return:, Locking:) at their definitions in
 * pagescan.c.
 */
#ifndef PTRELOC_PAGESCAN_H
#define PTRELOC_PAGESCAN_H

#include <stdint.h>

/* pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst) */
#define PTR_PM_PRESENT (1ull << 63)
#define PTR_PM_PFN_MASK ((1ull << 55) - 1)

/** A status ptr_pfn_nodes() gives a page whose node its frame does not tell. */
#define PTR_NODE_UNKNOWN INT32_MIN

/* Vote classes of a page for ptr_span_votes(). */
#define PTR_VOTE_NONE 0  /* does not vote (kernel special mapping) */
#define PTR_VOTE_OTHER 1 /* votes for the process as a whole only (a file page) */
#define PTR_VOTE_ANON 2  /* votes for its tables too (private anonymous memory) */

uint64_t ptr_pagemap_compact(const uint64_t *entries, uint64_t n, uint64_t first_vpn,
			     unsigned page_shift, uint64_t *vas, uint64_t *pfns);
int64_t ptr_pagemap_read(int fd, const uint64_t *ranges, uint64_t nranges, unsigned page_shift,
			 uint64_t *buf, uint64_t buf_entries, uint64_t *vas, uint64_t *pfns,
			 uint64_t cap, uint64_t pos[2]);
int64_t ptr_pfn_nodes(const uint64_t *pfns, uint64_t n, const int16_t *block_node,
		      uint64_t nblocks, unsigned block_shift, const uint64_t *zero_ranges,
		      uint64_t nzero, int32_t *nodes);
int64_t ptr_span_votes(const uint64_t *vas, const int32_t *nodes, const uint8_t *classes,
		       uint64_t n, unsigned span_shift, const uint8_t *allowed, uint32_t nnodes,
		       uint64_t *keys, uint32_t *counts, uint64_t cap, uint64_t *all_votes,
		       uint64_t *anon_votes);
int64_t ptr_huge_candidates(const uint64_t *vas, const uint64_t *pfns, uint64_t n,
			    unsigned block_shift, unsigned page_shift, uint64_t *index,
			    uint64_t cap);
int64_t ptr_span_keys(const uint64_t *vas, uint64_t n, unsigned span_shift, uint64_t *keys,
		      uint64_t cap);
int64_t ptr_status_histogram(const int32_t *status, uint64_t n, int32_t lo, int32_t hi,
			     uint64_t *hist);
int64_t ptr_pair_histogram(const int32_t *before, const int32_t *after, uint64_t n,
			   uint32_t nbins, uint64_t *hist);
int64_t ptr_select_pairs(const int32_t *before, const int32_t *after, uint64_t n,
			 const uint8_t *member, uint32_t nbins, uint64_t *index, uint64_t cap);

#endif /* PTRELOC_PAGESCAN_H */
