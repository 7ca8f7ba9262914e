/*
 * mirror.h - bulk read-only queries over an address space for ptreloc.mirror (mirror.c).
 *
 * Functions are documented (kernel-doc: arguments, Return:, Locking:) at their definitions in
 * mirror.c; static inline ones here.
 */
#ifndef PTRELOC_MIRROR_H
#define PTRELOC_MIRROR_H

#include "pgtable.h"

/* ------------------------------------------------------------------------------------------ */
/* Mirror queries (mirror.c) - bulk read-only walks for ptreloc.mirror; kernel-doc in mirror.c   */
/* ------------------------------------------------------------------------------------------ */

/** struct ptr_mirror_remote - what ptr_mirror_remote() counted. */
struct ptr_mirror_remote {
	uint64_t pages;                     /* addresses with a data node and a leaf */
	uint64_t remote_pages;              /* of which walk at least one remote table */
	uint64_t by_level[PTR_MAX_LEVELS];  /* of which that level's table is remote */
	uint64_t unmapped;                  /* addresses with a data node and no leaf */
};
int ptr_mirror_walk(struct ptr_mm *mm, uint64_t va, uint32_t frames[PTR_MAX_LEVELS]);
int64_t ptr_mirror_walk_many(struct ptr_mm *mm, const uint64_t *vas, uint64_t n, uint32_t *frames,
			     int16_t *nodes);
int ptr_mirror_remote(struct ptr_mm *mm, const uint64_t *vas, const int32_t *data_nodes,
		      uint64_t n, struct ptr_mirror_remote *out);
int64_t ptr_mirror_check(struct ptr_mm *mm, const uint64_t *vas, const uint64_t *phys,
			 uint64_t n, uint64_t *first_bad);

#endif /* PTRELOC_MIRROR_H */
