/*
 * pagescan.c - the per-page loops of looking at a live process (ptreloc.proc.snapshot() and
 * ptreloc.mirror.mirror()), over arrays the caller read from /proc and /sys.
 *
 * Why C: a process has up to hundreds of millions of resident pages; one pass over them in
 * Python costs ~30-100 ns a page (an 8 GiB process: 2.1M pages, a quarter of a second per
 * pass, and the pipeline made a dozen passes), here ~1 ns.  Nothing here allocates or locks,
 * and only ptr_pagemap_read() and ptr_pagemap_scan() call the kernel (pread(2) of a pagemap
 * file the caller opened): the callers own the arrays.  Every function is a function of its inputs (no Locking: section
 * applies: call from any thread; cffi releases the GIL for the call, so a pagemap read runs
 * beside Python threads).
 */
#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "ptreloc.h"

/**
 * ptr_pagemap_compact() - the resident pages of a run of /proc/PID/pagemap entries.
 * @entries:    @n consecutive pagemap entries, the first for virtual page @first_vpn
 * @n:          how many
 * @first_vpn:  virtual page number of @entries[0]
 * @page_shift: log2 of the page size
 * @vas:        out: the virtual address of each present entry, ascending (room for @n)
 * @pfns:       out: its frame number (0 where the kernel hides it), or NULL
 *
 * A swapped-out page (PM_SWAP without PM_PRESENT) is not resident and is left out.
 * Return: how many entries were present (the count written to @vas and @pfns).
 */
uint64_t ptr_pagemap_compact(const uint64_t *entries, uint64_t n, uint64_t first_vpn,
			     unsigned page_shift, uint64_t *vas, uint64_t *pfns)
{
	uint64_t k = 0;
	for (uint64_t i = 0; i < n; i++) {
		uint64_t e = entries[i];
		if (!(e & PTR_PM_PRESENT))
			continue;
		vas[k] = (first_vpn + i) << page_shift;
		if (pfns)
			pfns[k] = e & PTR_PM_PFN_MASK;
		k++;
	}
	return k;
}

/* pread(2) up to @want pagemap entries from virtual page @vpn into @buf, -EINTR retried:
 * the entries read (0 where the file ends), or -errno */
static int64_t read_entries(int fd, uint64_t *buf, uint64_t want, uint64_t vpn)
{
	for (;;) {
		ssize_t got = pread(fd, buf, want * 8, (off_t)(vpn * 8));
		if (got >= 0)
			return got / 8;
		if (errno != EINTR)
			return -errno;
	}
}

/**
 * ptr_pagemap_read() - the resident pages of address ranges, read from a pagemap file.
 * @fd:          /proc/PID/pagemap, open for reading
 * @ranges:      @nranges [start, end) pairs of page-aligned addresses, ascending
 * @nranges:     how many
 * @page_shift:  log2 of the page size
 * @buf:         scratch room for @buf_entries pagemap entries
 * @buf_entries: how many (each pread reads at most that many)
 * @vas:         out: the address of each resident page, ascending
 * @pfns:        out: its frame number (0 where the kernel hides it), or NULL
 * @cap:         room in @vas (and @pfns)
 * @pos:         in/out: where to go on from - @pos[0] the range, @pos[1] the page number in
 *               it (0: the range's start); start with {0, 0}.  On return @pos[0] == @nranges
 *               when every range was read; otherwise @vas is full and a call with more room
 *               and the same @pos goes on exactly where this one stopped.
 *
 * A range the file ends in (the process exited, the mapping went away) is read to where the
 * file ended.  Return: the pages written (>= 0); -errno of pread(2) (-EINTR is retried).
 */
int64_t ptr_pagemap_read(int fd, const uint64_t *ranges, uint64_t nranges, unsigned page_shift,
			 uint64_t *buf, uint64_t buf_entries, uint64_t *vas, uint64_t *pfns,
			 uint64_t cap, uint64_t pos[2])
{
	uint64_t k = 0;
	if (!buf_entries)
		return -EINVAL;
	while (pos[0] < nranges) {
		uint64_t first = ranges[2 * pos[0]] >> page_shift;
		uint64_t end = ranges[2 * pos[0] + 1] >> page_shift;
		uint64_t vpn = pos[1] ? pos[1] : first;
		while (vpn < end) {
			uint64_t want = end - vpn < buf_entries ? end - vpn : buf_entries;
			int64_t n = read_entries(fd, buf, want, vpn);
			if (n < 0)
				return n;
			if (!n)
				break; /* the file ended: nothing more in this range */
			for (uint64_t i = 0; i < (uint64_t)n; i++) {
				uint64_t e = buf[i];
				if (!(e & PTR_PM_PRESENT))
					continue;
				if (k == cap) { /* full: resume at this page */
					pos[1] = vpn + i;
					return (int64_t)k;
				}
				vas[k] = (vpn + i) << page_shift;
				if (pfns)
					pfns[k] = e & PTR_PM_PFN_MASK;
				k++;
			}
			vpn += n;
		}
		pos[0]++;
		pos[1] = 0;
	}
	return (int64_t)k;
}

/* the node of frame @pfn per the memory-block table (PTR_NODE_UNKNOWN where no one node
 * lists its block), -EFAULT for a shared zero page (move_pages(2) says so for them too) */
static inline int32_t frame_node(uint64_t pfn, const int16_t *block_node, uint64_t nblocks,
				 unsigned block_shift, const uint64_t *zero_ranges, uint64_t nzero)
{
	for (uint64_t z = 0; z < nzero; z++) {
		if (pfn >= zero_ranges[2 * z] && pfn < zero_ranges[2 * z + 1])
			return -EFAULT;
	}
	uint64_t b = pfn >> block_shift;
	return block_node && b < nblocks && block_node[b] >= 0 ? block_node[b] : PTR_NODE_UNKNOWN;
}

/* is the aligned block of @per present entries @e a huge-page candidate: with frames, the
 * frames contiguous from an aligned head; with frames hidden (all 0), by residency alone */
static bool huge_block(const uint64_t *e, uint64_t per)
{
	uint64_t head = e[0] & PTR_PM_PFN_MASK;
	if (head & (per - 1))
		return false;
	for (uint64_t k = 1; k < per; k++) {
		if ((e[k] & PTR_PM_PFN_MASK) != (head ? head + k : 0))
			return false;
	}
	return true;
}

/**
 * ptr_pagemap_scan() - the resident pages of address ranges with each page's node and the
 * huge-page candidates, in one read of a pagemap file.
 * @fd: /proc/PID/pagemap, open for reading
 * @s:  what to read and where to put it (struct ptr_pagemap_scan in pagescan.h): on return
 *      @s->done pages are in @s->nodes, @s->huge_done candidates in @s->huge_index/
 *      @s->huge_pfn, @s->runs runs in @s->run_start/@s->run_first, and @s->pos[0] ==
 *      @s->nranges when every range was read; otherwise the
 *      output was full and a call with more room (the same @s, its arrays grown, the counts
 *      and @s->pos as they are) goes on exactly where this one stopped.
 *
 * One pass, without keeping the frame numbers (8 bytes a page) or one address per page (8
 * more: the pages are written as runs, 16 bytes per run of consecutive pages, and a dense
 * process has a few hundred): a page's node comes from
 * its frame as it is read (@block_node[pfn >> @block_shift]), and a huge candidate is an aligned block of 2^(huge_shift -
 * page_shift) present entries (with frames, contiguous from an aligned head frame; its head
 * frame goes to @s->huge_pfn).  A present entry with frame 0 is a frame the kernel hides (no
 * CAP_SYS_ADMIN; frame 0 is never a user page): its node is PTR_NODE_UNKNOWN, and
 * @s->framed counts the entries that did show a frame.  Reads end at a huge block's boundary
 * and the output is checked for room one block at a time, so a block is never split between
 * two reads or two calls.  A block is written only with room for as many pages and as many
 * runs as it has entries.
 *
 * Return: 0; -EINVAL (no buffer, a page, huge or block shift out of range, a huge block
 * larger than the buffer, more written than there is room for, a last run that holds no
 * page); -ENOSPC (not even one block fit: give more room); -errno of pread(2) (-EINTR
 * is retried).
 */
int ptr_pagemap_scan(int fd, struct ptr_pagemap_scan *s)
{
	const unsigned shift = s->page_shift;
	if (!s->buf_entries || !shift || shift >= 64 || s->done > s->cap || s->runs > s->run_cap ||
	    s->huge_done > s->huge_cap || s->block_shift >= 64)
		return -EINVAL;
	uint64_t per = 0;
	if (s->huge_shift) {
		if (s->huge_shift <= shift || s->huge_shift >= 64 ||
		    s->huge_shift - shift >= 32)
			return -EINVAL;
		per = 1ull << (s->huge_shift - shift);
		if (per > s->buf_entries)
			return -EINVAL;
	}
	bool progressed = false;
	/* the address right after the last run's last page (it grows while pages touch) */
	uint64_t next_va = 0;
	if (s->runs) {
		if (s->runs > s->run_cap || s->run_first[s->runs - 1] >= s->done)
			return -EINVAL;
		next_va = s->run_start[s->runs - 1] +
			  ((s->done - s->run_first[s->runs - 1]) << shift);
	}
	while (s->pos[0] < s->nranges) {
		uint64_t first = s->ranges[2 * s->pos[0]] >> shift;
		uint64_t end = s->ranges[2 * s->pos[0] + 1] >> shift;
		uint64_t vpn = s->pos[1] ? s->pos[1] : first;
		while (vpn < end) {
			uint64_t want = end - vpn < s->buf_entries ? end - vpn : s->buf_entries;
			if (per && vpn + want < end && (vpn + want) & (per - 1)) {
				uint64_t cut = (vpn + want) & ~(per - 1);
				if (cut > vpn)
					want = cut - vpn; /* end at a huge block's boundary */
			}
			int64_t got = read_entries(fd, s->buf, want, vpn);
			if (got < 0)
				return (int)got;
			uint64_t n = (uint64_t)got;
			if (!n)
				break; /* the file ended: nothing more in this range */
			for (uint64_t i = 0; i < n;) {
				uint64_t v = vpn + i, j = n;
				if (per && j - i > per - (v & (per - 1)))
					j = i + per - (v & (per - 1)); /* to the next block boundary */
				bool whole = per && !(v & (per - 1)) && j - i == per;
				if (s->cap - s->done < j - i || s->run_cap - s->runs < j - i ||
				    (whole && s->huge_done == s->huge_cap)) {
					s->pos[1] = v; /* full: resume at this block */
					return progressed ? 0 : -ENOSPC;
				}
				uint64_t k0 = s->done;
				for (uint64_t x = i; x < j; x++) {
					uint64_t e = s->buf[x];
					if (!(e & PTR_PM_PRESENT))
						continue;
					uint64_t pfn = e & PTR_PM_PFN_MASK;
					int32_t node = pfn ? frame_node(pfn, s->block_node, s->nblocks,
									 s->block_shift, s->zero_ranges,
									 s->nzero)
							   : PTR_NODE_UNKNOWN;
					s->framed += pfn != 0;
					s->unknown += node == PTR_NODE_UNKNOWN;
					uint64_t va = (vpn + x) << shift;
					if (!s->runs || next_va != va) { /* a new run */
						s->run_start[s->runs] = va;
						s->run_first[s->runs] = s->done;
						s->runs++;
					}
					next_va = va + (1ull << shift);
					s->nodes[s->done] = node;
					s->done++;
				}
				if (whole && s->done - k0 == per && huge_block(s->buf + i, per)) {
					s->huge_index[s->huge_done] = k0;
					s->huge_pfn[s->huge_done] = s->buf[i] & PTR_PM_PFN_MASK;
					s->huge_done++;
				}
				progressed = true;
				i = j;
			}
			vpn += n;
		}
		s->pos[0]++;
		s->pos[1] = 0;
	}
	return 0;
}

/**
 * ptr_runs_expand() - the addresses of some pages of a run list.
 * @run_start:  @nruns run start addresses, ascending (struct ptr_pagemap_scan's @run_start)
 * @run_first:  @nruns + 1 page indexes: run r holds pages @run_first[r] .. @run_first[r + 1]
 *              - 1, the last entry the page count
 * @nruns:      how many runs
 * @page_shift: log2 of the page size
 * @lo:         the first page wanted (an index)
 * @n:          how many
 * @out:        out: the @n addresses of pages @lo .. @lo + @n - 1
 *
 * What ptreloc.runs.PageRuns hands to the loops that take one address per page, a chunk at
 * a time.
 *
 * Return: 0; -EINVAL (a page shift out of range, pages past the last, indexes that do not
 * ascend or do not start at 0).
 */
int ptr_runs_expand(const uint64_t *run_start, const uint64_t *run_first, uint64_t nruns,
		    unsigned page_shift, uint64_t lo, uint64_t n, uint64_t *out)
{
	if (page_shift >= 64 || lo > run_first[nruns] || n > run_first[nruns] - lo ||
	    run_first[0] != 0)
		return -EINVAL;
	for (uint64_t r = 0; r < nruns; r++) /* the search below needs them ascending */
		if (run_first[r + 1] < run_first[r])
			return -EINVAL;
	if (!n)
		return 0;
	uint64_t a = ptr_last_at_or_below(run_first, nruns, lo); /* the run holding page lo */
	uint64_t k = 0, i = lo;
	for (uint64_t r = a; r < nruns && k < n; r++) {
		uint64_t end = run_first[r + 1];
		uint64_t va = run_start[r] + ((i - run_first[r]) << page_shift);
		for (; i < end && k < n; i++, k++) {
			out[k] = va;
			va += 1ull << page_shift;
		}
	}
	return k == n ? 0 : -EINVAL;
}

/**
 * ptr_span_votes() - placement votes: per lowest-level table span, the voting pages per node.
 * @run_start:  @nruns runs of consecutive pages, ascending (ptr_pagemap_scan()'s runs): run r
 *              starts at address @run_start[r] ...
 * @run_first:  ... with page index @run_first[r]; @nruns + 1 entries, the last the page count
 * @nruns:      how many runs
 * @page_shift: log2 of the page size
 * @nodes:      the data node of each page, by index (negative: not known, does not vote)
 * @classes:    the vote class of each page (PTR_VOTE_*)
 * @span_shift: log2 of the VA span one lowest-level table maps (21 on x86-64), >= @page_shift
 * @allowed:    @nnodes flags: a page on node x votes only when @allowed[x] (NULL: all do)
 * @nnodes:     nodes 0..@nnodes-1 can vote; a page on a higher node does not
 * @keys:       out: span keys (va >> @span_shift) that got at least one ANON vote, ascending
 * @counts:     out: @nnodes ANON votes per key, row after row
 * @cap:        room in @keys (rows of @counts)
 * @all_votes:  out: @nnodes voting pages per node (classes OTHER and ANON)
 * @anon_votes: out: @nnodes ANON pages per node
 *
 * The pages are taken a stretch at a time: the pages of one run in one span with the same
 * node and class are one addition, not one per page (a dense process's pages come in stretches
 * of hundreds), and no page's address is ever made.
 *
 * Return: the number of keys; -EINVAL (@nnodes 0, a shift out of range, run indexes that do
 * not ascend); -ENOSPC (more spans than @cap: size it by the pages' distinct spans, at most
 * the page count).
 */
int64_t ptr_span_votes(const uint64_t *run_start, const uint64_t *run_first, uint64_t nruns,
		       unsigned page_shift, const int32_t *nodes, const uint8_t *classes,
		       unsigned span_shift, const uint8_t *allowed, uint32_t nnodes,
		       uint64_t *keys, uint32_t *counts, uint64_t cap, uint64_t *all_votes,
		       uint64_t *anon_votes)
{
	if (!nnodes || page_shift >= 64 || span_shift >= 64 || span_shift < page_shift)
		return -EINVAL;
	memset(all_votes, 0, nnodes * sizeof(*all_votes));
	memset(anon_votes, 0, nnodes * sizeof(*anon_votes));
	const uint64_t per_span = 1ull << (span_shift - page_shift);
	int64_t nkeys = 0;
	for (uint64_t r = 0; r < nruns; r++) {
		uint64_t i = run_first[r], end = run_first[r + 1];
		if (end < i)
			return -EINVAL;
		uint64_t vpn = run_start[r] >> page_shift;
		while (i < end) {
			uint64_t key = vpn >> (span_shift - page_shift);
			uint64_t left = per_span - (vpn & (per_span - 1)); /* pages to the span's end */
			uint64_t seg_end = end - i < left ? end : i + left;
			vpn += seg_end - i;
			while (i < seg_end) {
				int32_t node = nodes[i];
				uint8_t cls = classes[i];
				uint64_t j = i + 1;
				while (j < seg_end && nodes[j] == node && classes[j] == cls)
					j++;
				uint64_t n = j - i;
				i = j;
				if (node < 0 || (uint32_t)node >= nnodes || cls == PTR_VOTE_NONE ||
				    (allowed && !allowed[node]))
					continue;
				all_votes[node] += n;
				if (cls != PTR_VOTE_ANON)
					continue;
				anon_votes[node] += n;
				if (!nkeys || keys[nkeys - 1] != key) {
					if ((uint64_t)nkeys == cap)
						return -ENOSPC;
					keys[nkeys] = key;
					memset(counts + (uint64_t)nkeys * nnodes, 0,
					       nnodes * sizeof(*counts));
					nkeys++;
				}
				counts[(uint64_t)(nkeys - 1) * nnodes + node] += (uint32_t)n;
			}
		}
	}
	return nkeys;
}

/**
 * ptr_span_tops() - the node with most votes in each row of per-node vote counts.
 * @counts: @n rows of @nnodes counts (ptr_span_votes()'s @counts)
 * @n:      how many rows
 * @nnodes: counts per row (1..32767)
 * @tops:   out: per row, the node with the most votes; ties go to the lowest node
 *
 * Return: 0; -EINVAL (@nnodes 0 or above what @tops can name).
 */
int ptr_span_tops(const uint32_t *counts, uint64_t n, uint32_t nnodes, int16_t *tops)
{
	if (!nnodes || nnodes > INT16_MAX)
		return -EINVAL;
	for (uint64_t k = 0; k < n; k++) {
		const uint32_t *row = counts + k * nnodes;
		uint32_t best = 0;
		for (uint32_t x = 1; x < nnodes; x++) {
			if (row[x] > row[best])
				best = x;
		}
		tops[k] = (int16_t)best;
	}
	return 0;
}

/**
 * ptr_span_rollup() - vote rows of one table level summed into the rows of the level above.
 * @keys:       @n span keys, ascending (a table's VA span index at this level)
 * @counts:     @n rows of @nnodes counts
 * @n:          how many
 * @nnodes:     counts per row
 * @bits:       index bits of the level above (its key is @keys[k] >> @bits)
 * @out_keys:   out: the distinct upper keys, ascending (room for @n; may not alias @keys)
 * @out_counts: out: their rows, each the sum of the rows below it (room for @n rows)
 *
 * Return: the number of upper keys (>= 0); -EINVAL (@bits 64 or more, @nnodes 0).
 */
int64_t ptr_span_rollup(const uint64_t *keys, const uint32_t *counts, uint64_t n,
			uint32_t nnodes, unsigned bits, uint64_t *out_keys, uint32_t *out_counts)
{
	if (bits >= 64 || !nnodes)
		return -EINVAL;
	int64_t m = 0;
	for (uint64_t k = 0; k < n; k++) {
		uint64_t up = keys[k] >> bits;
		uint32_t *row;
		if (!m || out_keys[m - 1] != up) {
			out_keys[m] = up;
			row = out_counts + (uint64_t)m * nnodes;
			memset(row, 0, nnodes * sizeof(*row));
			m++;
		} else {
			row = out_counts + (uint64_t)(m - 1) * nnodes;
		}
		const uint32_t *add = counts + k * nnodes;
		for (uint32_t x = 0; x < nnodes; x++)
			row[x] += add[x];
	}
	return m;
}

/**
 * ptr_status_histogram() - how many of @status are each value of [@lo, @hi].
 * @status: @n values
 * @n:      how many
 * @lo:     the lowest value counted
 * @hi:     the highest (>= @lo)
 * @hist:   out: @hi - @lo + 1 counts, @hist[0] for @lo
 *
 * Return: how many values fell outside [@lo, @hi]; -EINVAL (@hi < @lo).
 */
int64_t ptr_status_histogram(const int32_t *status, uint64_t n, int32_t lo, int32_t hi,
			     uint64_t *hist)
{
	if (hi < lo)
		return -EINVAL;
	uint64_t width = (uint64_t)((int64_t)hi - lo) + 1;
	memset(hist, 0, width * sizeof(*hist));
	int64_t outside = 0;
	for (uint64_t i = 0; i < n; i++) {
		int64_t v = status[i];
		if (v < lo || v > hi)
			outside++;
		else
			hist[v - lo]++;
	}
	return outside;
}

/**
 * ptr_span_keys() - the distinct spans (va >> @span_shift) of ascending addresses.
 * @vas:        @n addresses, ascending
 * @n:          how many
 * @span_shift: log2 of the span (a lowest-level table's VA span: how many tables they need)
 * @keys:       out: the distinct keys, ascending
 * @cap:        room in @keys
 *
 * Return: the number of keys; -ENOSPC (more than @cap; @n is always enough).
 */
int64_t ptr_span_keys(const uint64_t *vas, uint64_t n, unsigned span_shift, uint64_t *keys,
		      uint64_t cap)
{
	int64_t k = 0;
	for (uint64_t i = 0; i < n; i++) {
		uint64_t key = span_shift < 64 ? vas[i] >> span_shift : 0;
		if (k && keys[k - 1] == key)
			continue;
		if ((uint64_t)k == cap)
			return -ENOSPC;
		keys[k++] = key;
	}
	return k;
}

/* the bin of a status for the pair scans: a node below @nbins is its own bin, any negative
 * status (-errno: not on a node) bin @nbins, a node at or past @nbins -1 (counted apart) */
static inline int64_t pair_bin(int32_t v, uint32_t nbins)
{
	if (v < 0)
		return nbins;
	return (uint32_t)v < nbins ? v : -1;
}

/**
 * ptr_pair_histogram() - how many pages have each (before, after) pair of node statuses.
 * @before: @n node statuses (node >= 0, or -errno), e.g. where each page was
 * @after:  @n node statuses parallel to @before, e.g. where each page is now
 * @n:      how many
 * @nbins:  nodes 0..@nbins-1 are counted each in its own bin; bin @nbins gathers every
 *          negative status (a page on no node)
 * @hist:   out: (@nbins + 1) * (@nbins + 1) counts, row by @before's bin, column by @after's:
 *          @hist[b * (@nbins + 1) + a]
 *
 * One pass gives what the migration reports: pages per node before (row sums) and after
 * (column sums) and the pages that stayed on a source node (a sum over the source rows and
 * columns).
 *
 * Return: how many pages have a node at or past @nbins on either side (counted in no bin);
 * -EINVAL (@nbins is 0 or above 4096).
 */
int64_t ptr_pair_histogram(const int32_t *before, const int32_t *after, uint64_t n,
			   uint32_t nbins, uint64_t *hist)
{
	if (!nbins || nbins > 4096)
		return -EINVAL;
	uint64_t width = (uint64_t)nbins + 1;
	memset(hist, 0, width * width * sizeof(*hist));
	int64_t outside = 0;
	for (uint64_t i = 0; i < n; i++) {
		int64_t b = pair_bin(before[i], nbins), a = pair_bin(after[i], nbins);
		if (b < 0 || a < 0)
			outside++;
		else
			hist[(uint64_t)b * width + (uint64_t)a]++;
	}
	return outside;
}

/**
 * ptr_nodes_carry() - one look of a watch against the last: each page's node now, where a page
 * the kernel cannot place now keeps the node it had, and how many pages changed node.
 * @last: @n node statuses (node >= 0, or -errno) of the last look
 * @now:  @n node statuses of this look, parallel to @last
 * @n:    how many
 * @out:  out: @n statuses: @now[i], or @last[i] where @now[i] < 0 and @last[i] >= 0 (a page
 *        mid-migration, -EBUSY/-ENOENT for a moment, is not taken as gone: when it lands on
 *        its new node at a later look, that is a move); may be @now itself
 *
 * Return: how many pages have a node in both and the nodes differ (a page that vanished or
 * appeared is not a move).
 */
int64_t ptr_nodes_carry(const int32_t *last, const int32_t *now, uint64_t n, int32_t *out)
{
	int64_t moved = 0;
	for (uint64_t i = 0; i < n; i++) {
		int32_t a = last[i], b = now[i];
		int32_t v = (b >= 0 || a < 0) ? b : a;
		moved += (a >= 0) & (v >= 0) & (a != v);
		out[i] = v;
	}
	return moved;
}

/**
 * ptr_select_pairs() - the indexes of the pages whose before and after nodes are both in a set.
 * @before: @n node statuses (node >= 0, or -errno)
 * @after:  @n node statuses parallel to @before
 * @n:      how many
 * @member: @nbins flags: node v is in the set when @member[v] is nonzero (a negative status
 *          or a node at or past @nbins is never in it)
 * @nbins:  length of @member
 * @index:  out: the indexes i with both @before[i] and @after[i] in the set, ascending
 * @cap:    room in @index
 *
 * The pages migrate_pages left behind: on a source node before and on a source node still.
 *
 * Return: how many indexes were written; -ENOSPC (more than @cap; call again with room for
 * @n).
 */
int64_t ptr_select_pairs(const int32_t *before, const int32_t *after, uint64_t n,
			 const uint8_t *member, uint32_t nbins, uint64_t *index, uint64_t cap)
{
	int64_t found = 0;
	for (uint64_t i = 0; i < n; i++) {
		int32_t b = before[i], a = after[i];
		if (b < 0 || a < 0 || (uint32_t)b >= nbins || (uint32_t)a >= nbins ||
		    !member[b] || !member[a])
			continue;
		if ((uint64_t)found == cap)
			return -ENOSPC;
		index[found++] = i;
	}
	return found;
}
