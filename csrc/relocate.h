/*
 * relocate.h - relocating live page tables between arena nodes (relocate.c).
 *
 * Functions are documented (kernel-doc: arguments, Return:, Locking:) at their definitions in
 * relocate.c; static inline ones here.
 */
#ifndef PTRELOC_RELOCATE_H
#define PTRELOC_RELOCATE_H

#include "pgtable.h"

/* ------------------------------------------------------------------------------------------ */
/* Relocation (relocate.c) - see the protocol comment at the top of relocate.c                  */
/* ------------------------------------------------------------------------------------------ */

enum ptr_reloc_strategy { PTR_RELOC_REWALK = 0, PTR_RELOC_STOP = 1, PTR_RELOC_NAIVE = 2 };

/** Why a frame on a source node was not relocated. */
enum ptr_reloc_reason {
	PTR_RELOC_R_TARGET_FULL = 0,  /* target pool at capacity (-ENOSPC) */
	PTR_RELOC_R_ALLOC_FAILED = 1, /* allocation failed (-ENOMEM, e.g. injected) */
	PTR_RELOC_R_SHARED = 2,       /* shared with an mm outside the relocated set */
	PTR_RELOC_R_ABORTED = 3,      /* not attempted: an allocation failed first */
	PTR_RELOC_R_BAD_TARGET = 4,   /* the chooser named a node the arena does not have */
	PTR_RELOC_R_KEPT = 5,         /* the chooser said: leave it where it is */
	PTR_RELOC_R_VANISHED = 6,     /* no longer linked when its batch ran */
	PTR_RELOC_NREASONS = 7
};

struct ptr_reloc_level_report {
	uint32_t found;          /* frames of this level on a source node */
	uint32_t relocated;
	uint32_t not_relocated;
	uint32_t reason[PTR_RELOC_NREASONS];
	uint64_t bytes_copied;   /* sum of ptr_table_bytes(): a table's own bytes */
};

/**
 * struct ptr_reloc_report - what a relocation did.
 * @error:       0, or the -errno of the allocation failure that stopped it
 * @ad_merged:   rewalk: leaf entries whose A/D state had to be merged from the old copy
 * @ad_lost:     naive: leaf entries whose A/D state stale CPUs wrote into the old copy and the
 *               new copy never got (what the merge would have saved)
 * @ns_*:        time per phase: collect, alloc, copy (lock+rewalk+copy+repoint), shootdown,
 *               merge, grace (synchronize), free, stopped (stop: CPUs parked), total
 */
struct ptr_reloc_report {
	int strategy, batch, error;
	uint32_t frames_found, relocated, not_relocated;
	uint32_t reason[PTR_RELOC_NREASONS];
	uint64_t bytes_copied;
	uint32_t batches, shootdowns, root_reloads, root_switches;
	uint32_t merges_skipped; /* batches with no CPU in the arena: no old copy to re-read */
	uint64_t ad_merged, ad_lost;
	uint64_t ns_collect, ns_alloc, ns_copy, ns_shootdown, ns_merge, ns_grace, ns_free;
	uint64_t ns_stopped, ns_total;
	struct ptr_reloc_level_report level[PTR_MAX_LEVELS];
};

/**
 * ptr_reloc_choose_fn - where should this frame go?  Called once per frame on a source node,
 * before anything moves, with no table lock held - but reloc_mutex held, so it must not start
 * a relocation itself.  Return: the target node, -1 to leave it, or < -1 to cancel the whole
 * relocation (nothing moves; ptr_relocate() returns -ECANCELED).
 */
typedef int (*ptr_reloc_choose_fn)(void *priv, int level, uint32_t frame, uint64_t base_va,
				   int node);

/* The relocation entry points; kernel-doc (arguments, Return:, Locking:) in relocate.c. */
int ptr_relocate(struct ptr_mm *mm, uint32_t from_mask, int to_node, ptr_reloc_choose_fn choose,
		 void *priv, int strategy, int batch, struct ptr_reloc_report *out);
int ptr_relocate_mms(struct ptr_mm *const *mms, int nmms, uint32_t from_mask, int to_node,
		     ptr_reloc_choose_fn choose, void *priv, int strategy, int batch,
		     struct ptr_reloc_report *out);
/** Flags of ptr_relocate_mms_flags() (relocate_pool.c's compaction uses both). */
#define PTR_RELOC_F_SAME_NODE 1u /* a chooser's target equal to the frame's node is a move */
#define PTR_RELOC_F_LOWER 2u     /* take the target pool's lowest free slot; keep a frame that
				  * would not end up lower than where it is */
#define PTR_RELOC_F_UNTIMED 4u   /* no phase clocks: every ns_* of the report stays 0 (a clock
				  * read costs 20-70 ns in a VM; 8 of them were a third of a
				  * 1 MiB relocation - the bench's headline rounds use it) */
int ptr_relocate_mms_flags(struct ptr_mm *const *mms, int nmms, uint32_t from_mask, int to_node,
			   ptr_reloc_choose_fn choose, void *priv, int strategy, int batch,
			   unsigned int flags, struct ptr_reloc_report *out);
/* ptr_reloc_set_test_hook(): the window between a batch's repoints and its shootdown. */
typedef void (*ptr_reloc_hook_fn)(void *priv, uint32_t batch);
void ptr_reloc_set_test_hook(ptr_reloc_hook_fn fn, void *priv);
/* ptr_reloc_set_copy_hook(): the middle of every table copy (entries below @index copied). */
typedef void (*ptr_reloc_copy_hook_fn)(void *priv, int level, uint32_t index);
void ptr_reloc_set_copy_hook(ptr_reloc_copy_hook_fn fn, void *priv);

/* the vector kernels: the width the loader picked, and (tests) one kernel of one width */
int ptr_reloc_vec_width(void);
int ptr_reloc_vec_run(int width, int op, const void *from, void *to, uint32_t i, uint32_t nw,
		      uint64_t flip, uint64_t *any, uint64_t *result);
const char *ptr_reloc_reason_name(int reason);

#endif /* PTRELOC_RELOCATE_H */
