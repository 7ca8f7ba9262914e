/*
 * pgtable.h - address spaces: the fault path, map/unmap/protect, A/D consumers, walkers (pgtable.c).
 */
#ifndef PTRELOC_PGTABLE_H
#define PTRELOC_PGTABLE_H

#include "arena.h"

/* ------------------------------------------------------------------------------------------ */
/* Address space (pgtable.c)                                                                   */
/* ------------------------------------------------------------------------------------------ */

/** struct ptr_region - a demand-faulted range: a fault at va maps phys + (va - start). */
struct ptr_region {
	uint64_t start, end, phys;
	bool writable;
	int leaf_level;
};

/**
 * struct ptr_mm - an emulated address space.
 * @root:             frame of the root table; changed only under page_table_lock, and then
 *                    every CPU running the mm needs a root reload (ptr_shootdown(mm, true)).
 * @page_table_lock:  LOCKING RULE 2
 * @relocating:       > 0 while a relocation is in progress (incremented under page_table_lock);
 *                    makes lock holders rewalk.  Not present in the norelo build.
 * @tlb_gen:          shootdown generation; CPUs running the mm ack by copying it
 * @reload_gen:       count of root-reload requests; bumped BEFORE @tlb_gen by a reloading
 *                    shootdown, so a CPU that sees the new @tlb_gen also sees the request
 * @node:             pool new tables come from by default
 * @regions:          demand-fault regions, append-only (lockless readers use @nregions)
 */
struct ptr_mm {
	struct ptr_arena *arena;
	const struct ptr_geometry *geo;
	uint32_t id;
	int node;
	_Atomic uint32_t root;
	ptr_spinlock_t page_table_lock;
#if PTR_RELOCATION
	_Atomic int relocating;
#endif
	_Atomic uint64_t tlb_gen;
	_Atomic uint64_t reload_gen;
	_Atomic int nregions;
	struct ptr_region regions[PTR_MAX_REGIONS];
};

/**
 * ptr_mm_create() - a new address space whose root (and, PAE, the 4 PMD tables) come from
 * pool @node.
 * Return: 0; -ENODEV, -ENOSPC, -ENOMEM as ptr_frame_alloc().
 */
int ptr_mm_create(struct ptr_arena *a, int node, struct ptr_mm **out);
/** ptr_mm_destroy() - free every table (shared ones when their last sharer goes); -EBUSY
 * while a CPU runs the mm. */
int ptr_mm_destroy(struct ptr_mm *mm);
/** ptr_mm_set_node() - default pool for new tables. */
int ptr_mm_set_node(struct ptr_mm *mm, int node);

/** Flags for ptr_map(). */
#define PTR_MAP_WRITE 0x1
#define PTR_MAP_HUGE 0x2     /* use the largest leaf level that fits alignment and range */

/**
 * ptr_map() - map [@start, @end) to @phys.. with leaves at @leaf_level (0 = base pages).
 * @table_node: pool for tables this call allocates, -1 = mm->node.
 * Return: 0; -EINVAL (unaligned, empty range, level without leaves), -ERANGE/-EDOM (address),
 * -EEXIST (something is already mapped in the range: nothing changed), -ENOSPC/-ENOMEM/-ENODEV
 * (allocation failed: leaves installed so far are removed again; tables allocated stay linked
 * and empty, see rule 7).
 */
int ptr_map(struct ptr_mm *mm, uint64_t start, uint64_t end, uint64_t phys, int leaf_level,
	    bool writable, int table_node);
/** ptr_unmap() - clear every leaf in [@start, @end) (huge leaves must be fully covered:
 * -EINVAL otherwise, nothing changed), then shoot down.  *@dirty_pages counts leaves that were
 * dirty (may be NULL).  Return: number of leaves cleared, or -errno. */
int64_t ptr_unmap(struct ptr_mm *mm, uint64_t start, uint64_t end, uint64_t *dirty_pages);
/** ptr_protect() - set writability of every leaf in [@start, @end); shoots down on downgrade.
 * Return: leaves changed, or -errno. */
int64_t ptr_protect(struct ptr_mm *mm, uint64_t start, uint64_t end, bool writable);
/** ptr_add_region() - register a demand-fault region (no tables are built). */
int ptr_add_region(struct ptr_mm *mm, uint64_t start, uint64_t end, uint64_t phys,
		   bool writable, int leaf_level);

/** struct ptr_translation - what a software walk found for one VA. */
struct ptr_translation {
	uint64_t phys;        /* physical address of va itself */
	uint64_t page_size;
	uint64_t entry;       /* raw leaf entry */
	uint32_t table;       /* frame holding the leaf entry */
	int level;
	int writable, young, dirty;
};

/**
 * ptr_translate() - lockless software walk of @va.
 * Return: 0 (mapped), -ENOENT (not mapped), -ERANGE/-EDOM (bad address), -ESTALE (the walk met
 * a freed frame; counted in freed_frame_accesses).  Every software walk reports a freed frame
 * with -ESTALE.
 */
int ptr_translate(struct ptr_mm *mm, uint64_t va, struct ptr_translation *out);

/**
 * ptr_walk_path() - lockless walk recording, per level, the table frame covering @va
 * (@frames[level], PTR_NO_FRAME below where the walk stopped) and the index in it.
 * Return: the level where the walk stopped (the leaf's level, or the level of the empty entry),
 * or -errno.  For relocation: the caller must be in a read-side section.
 */
int ptr_walk_path(struct ptr_mm *mm, uint64_t va, uint32_t frames[PTR_MAX_LEVELS]);

/**
 * ptr_fault() - the software fault path (handle_mm_fault's shape) for @va in a region:
 * lockless walk; allocate each missing table OUTSIDE the lock; take the lock; when a relocation
 * is in progress rewalk from the root under the lock; double-check the entry is still empty;
 * populate it or free the preallocated table.  A present leaf (another CPU won) is success.
 * @cpu: the CPU on whose behalf this runs, or NULL.  Non-NULL only from that CPU's own thread
 *       INSIDE an access (holding cpu->busy): the access is the read-side section the
 *       lockless walks need (rule 6), and the fault path services the CPU's shootdowns while
 *       spinning for a lock (rule 5).  With NULL (Python, any non-CPU thread) ptr_fault()
 *       enters ptr_read_lock() for its whole duration.
 * Locking: relocation support costs this path one predictable branch per lock taken (the
 * mm->relocating check; the rewalk itself is out of line) and, for cpu == NULL, the section.
 * Return: 0; -EFAULT (no region covers va), -EACCES (write to a read-only region),
 * -ENOSPC/-ENOMEM/-ENODEV.
 */
int ptr_fault(struct ptr_mm *mm, struct ptr_cpu *cpu, uint64_t va, bool write);
/**
 * ptr_fault_in_section() - ptr_fault() for a caller already inside a read-side section: a CPU's
 * thread inside its access (ptr_cpu_access_fault(); @cpu its CPU) or a ptr_read_lock() holder
 * (@cpu NULL).  The CPU's fault path thus carries no section code at all.  Not exported to
 * Python (it is never inside an access).  Return: as ptr_fault().
 */
int ptr_fault_in_section(struct ptr_mm *mm, struct ptr_cpu *cpu, uint64_t va, bool write);

/**
 * ptr_test_and_clear_young() / ptr_test_and_clear_dirty() - the software consumers of A/D.
 * Take the leaf table's lock (rule 1; page_table_lock for leaves at level >= 2), rewalk if
 * relocating, atomically clear the bit and report whether it was set.  Clearing dirty then
 * shoots down the mm (when it was dirty) so CPUs holding a dirty-known TLB entry set D again on
 * their next write: a write that completed before the call returned is reported by this call
 * or an earlier one, never lost.
 * Return: 1 was set, 0 was clear, -ENOENT not mapped, -errno.
 */
int ptr_test_and_clear_young(struct ptr_mm *mm, uint64_t va);
int ptr_test_and_clear_dirty(struct ptr_mm *mm, uint64_t va);

/**
 * ptr_share_table() - hugetlb-style sharing: link into @dst the level-@level table (0 or 1)
 * that covers @va in @src; @dst's parent entry must be empty (its upper tables are created).
 * sharers++ on the shared frame.  Return: 0, -ENOENT (no such table in src), -EEXIST, -EINVAL.
 */
int ptr_share_table(struct ptr_mm *dst, struct ptr_mm *src, uint64_t va, int level);

/**
 * ptr_repoint() - TEST/RELOCATION HELPER: copy the level-@level table covering @va to a new
 * frame on @node and repoint its parent entry (or the root, with a root reload) WITHOUT any
 * shootdown, merge or free; the old frame stays LIVE-but-unlinked (state LIMBO in the relocation
 * build) and is returned in *@old_frame.  Lets tests build the stale-PWC scenario by hand.
 * Locking: takes the parent's lock and the table's lock.
 */
int ptr_repoint(struct ptr_mm *mm, uint64_t va, int level, int node, uint32_t *old_frame,
		uint32_t *new_frame);

/** Per-level counts of the tables reachable from @mm's root (shared ones counted). */
int ptr_mm_count_tables(struct ptr_mm *mm, uint32_t counts[PTR_MAX_LEVELS],
			uint32_t per_node[PTR_MAX_NODES][PTR_MAX_LEVELS]);

/* ---- pagewalk: one function per level, half-open ranges, an ops table -------------------- */

struct ptr_walk;
/**
 * struct ptr_walk_ops - optional callbacks; each returns 0 to continue, >0 to stop the walk
 * with that value, <0 to stop with -errno.
 * @leaf:       a present leaf entry at @level covering [addr, next) (called with the leaf's
 *              table lock held when walk->lock_leaves)
 * @hole:       an empty entry at @level covering [addr, next)
 * @table:      a present table entry at @level, before descending into it
 */
struct ptr_walk_ops {
	int (*leaf)(struct ptr_walk *w, void *table, uint32_t index, int level, uint64_t addr,
		    uint64_t next);
	int (*hole)(struct ptr_walk *w, int level, uint64_t addr, uint64_t next);
	int (*table)(struct ptr_walk *w, void *table, uint32_t index, int level, uint64_t addr,
		     uint64_t next);
};
struct ptr_walk {
	struct ptr_mm *mm;
	const struct ptr_walk_ops *ops;
	void *priv;
	bool lock_leaves;   /* take the leaf table's lock (rule 1/2) around leaf callbacks */
	struct ptr_cpu *cpu;
};
/**
 * ptr_walk_range() - walk [@start, @end) of w->mm calling w->ops.
 * Return: 0, the >0 value a callback stopped with, or -errno.
 * Locking: lockless table reads; the caller is in a read-side section (the function enters one
 * itself when PTR_RELOCATION).
 */
int ptr_walk_range(struct ptr_walk *w, uint64_t start, uint64_t end);

/** ptr_table_entry() - raw entry @index of the level-@level table in frame @f (tests: read a
 * stale copy).  Return: the entry, 0 when out of range. */
uint64_t ptr_table_entry(struct ptr_arena *a, uint32_t f, int level, uint32_t index);

/** ptr_mm_root() - the current root frame. */
uint32_t ptr_mm_root(struct ptr_mm *mm);

#endif /* PTRELOC_PGTABLE_H */
