/*
 * relocate_pool.h - emptying and compacting a node's pool of table frames (relocate_pool.c): the
 * RFC's hot-remove and defragmentation motives, done by the relocation engine (relocate.c)
 * with a chooser - there is no second copy path.
 *
 * Functions are documented (kernel-doc: arguments, Return:, Locking:) at their definitions in
 * relocate_pool.c.
 */
#ifndef PTRELOC_RELOCATE_POOL_H
#define PTRELOC_RELOCATE_POOL_H

#include "relocate.h"

/** How many relocation passes ptr_evacuate() makes at most (a pass after the first only moves
 * tables that concurrent faults placed on the node meanwhile). */
#define PTR_EVAC_MAX_PASSES 4

/**
 * struct ptr_evac_report - what an evacuation or a compaction of one pool did.
 * @node:      the pool
 * @to_node:   evacuation: the target (-1: spread over the other pools by free room);
 *             compaction: @node
 * @new_home:  evacuation: the node the address spaces whose new tables came from @node were
 *             pointed at (ptr_mm_set_node()); -1 when none was (compaction)
 * @passes:    relocation passes run
 * @left:      frames of the given address spaces still on @node afterwards (evacuation: 0
 *             when it succeeded; compaction: counts them all, they stay)
 * @above:     compaction: used slots at or above first + used afterwards (0 = packed low)
 * @before, @after: the pool's free runs before and after (struct ptr_pool_runs)
 * @reloc:     the relocation report, summed over the passes
 */
struct ptr_evac_report {
	int node, to_node, new_home;
	uint32_t passes, left, above;
	struct ptr_pool_runs before, after;
	struct ptr_reloc_report reloc;
};

int ptr_evacuate(struct ptr_mm *const *mms, int nmms, int node, int to_node, int strategy,
		 int batch, struct ptr_evac_report *out);
int ptr_compact(struct ptr_mm *const *mms, int nmms, int node, int strategy, int batch,
		struct ptr_evac_report *out);

#endif /* PTRELOC_RELOCATE_POOL_H */
