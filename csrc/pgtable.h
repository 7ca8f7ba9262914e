/*
 * pgtable.h - address spaces: the fault path, map/unmap/protect, A/D consumers and the two
 * software walkers (pgtable.c).
 *
 * Functions are documented (kernel-doc: arguments, Return:, Locking:) at their definitions in
 * pgtable.c; static inline ones here.
 */
#ifndef PTRELOC_PGTABLE_H
#define PTRELOC_PGTABLE_H

#include <errno.h>

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
 * @tables_lock:      protects @tables_head, @tables_tail, @ntables and the frames' mm_next/
 *                    mm_prev links (innermost but for pool->lock: nothing is taken under it)
 * @tables_head, @tables_tail: per level, the mm's TABLE LIST - every table frame linked in
 *                    this mm's tree, in the order they were linked (relocation's collection
 *                    reads it instead of scanning every entry of every upper-level table).
 *                    Kept by whatever links or replaces a table: mm creation, the fault/map
 *                    path's populate, relocation, ptr_repoint(); unmap never unlinks a table
 *                    (LOCKING RULE 7) and the whole list goes with the mm.  Not present in the
 *                    norelo build.
 * @ntables:          frames on the list
 * @shared_ever:      a table was ever shared with or from this mm (ptr_share_table()): the
 *                    list then no longer says who links what, and relocation collects this mm
 *                    by scanning its tree (sticky)
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
	ptr_spinlock_t tables_lock;
	uint32_t tables_head[PTR_MAX_LEVELS], tables_tail[PTR_MAX_LEVELS];
	uint32_t ntables;
	_Atomic bool shared_ever;
#endif
	_Atomic uint64_t tlb_gen;
	_Atomic uint64_t reload_gen;
	_Atomic int nregions;
	struct ptr_region regions[PTR_MAX_REGIONS];
};

int ptr_mm_create(struct ptr_arena *a, int node, struct ptr_mm **out);
int ptr_mm_destroy(struct ptr_mm *mm);
int ptr_mm_set_node(struct ptr_mm *mm, int node);

/** Flags for ptr_map(). */
#define PTR_MAP_WRITE 0x1
#define PTR_MAP_HUGE 0x2     /* use the largest leaf level that fits alignment and range */

int ptr_map(struct ptr_mm *mm, uint64_t start, uint64_t end, uint64_t phys, int leaf_level,
	    bool writable, int table_node);
int64_t ptr_unmap(struct ptr_mm *mm, uint64_t start, uint64_t end, uint64_t *dirty_pages);

/**
 * struct ptr_page_set - the pages ptr_map_pages() maps, and where their tables go.
 * @run_start:    base pages as runs of consecutive pages, ascending and apart: run r starts
 *                at address @run_start[r] ...
 * @run_first:    ... with page index @run_first[r]; @nruns + 1 entries, the last the count
 * @nruns:        how many runs
 * @lo, @hi:      the pages mapped: indexes @lo .. @hi - 1; each is mapped to phys = va % the
 *                format's phys_limit
 * @span_keys:    lowest-level table spans (va >> log2(level-1 entry size)), ascending ...
 * @span_nodes:   ... and the node of the table created for each
 * @nspans:       how many
 * @default_node: the node of a table whose span is not listed (-1: the mm's node)
 * @ro:           [start, end) pairs, ascending and disjoint: pages in them map read-only
 * @nro:          how many pairs
 * @huge:         starts of blocks mapped by one leaf at level 1 instead, ascending; every
 *                page of such a block is among the pages mapped
 * @nhuge:        how many
 * @leaves:       out: leaves installed (a huge leaf counts one)
 */
struct ptr_page_set {
	const uint64_t *run_start;
	const uint64_t *run_first;
	uint64_t nruns;
	uint64_t lo;
	uint64_t hi;
	const uint64_t *span_keys;
	const int16_t *span_nodes;
	uint64_t nspans;
	int default_node;
	const uint64_t *ro;
	uint64_t nro;
	const uint64_t *huge;
	uint64_t nhuge;
	uint64_t leaves;
};
int ptr_map_pages(struct ptr_mm *mm, struct ptr_page_set *set);
int ptr_ensure_table(struct ptr_mm *mm, uint64_t va, int level, int node);
int64_t ptr_protect(struct ptr_mm *mm, uint64_t start, uint64_t end, bool writable);
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

int ptr_translate(struct ptr_mm *mm, uint64_t va, struct ptr_translation *out);

int ptr_fault(struct ptr_mm *mm, struct ptr_cpu *cpu, uint64_t va, bool write);
int ptr_fault_in_section(struct ptr_mm *mm, struct ptr_cpu *cpu, uint64_t va, bool write);

int ptr_test_and_clear_young(struct ptr_mm *mm, uint64_t va);
int ptr_test_and_clear_dirty(struct ptr_mm *mm, uint64_t va);

int ptr_share_table(struct ptr_mm *dst, struct ptr_mm *src, uint64_t va, int level);

int ptr_repoint(struct ptr_mm *mm, uint64_t va, int level, int node, uint32_t *old_frame,
		uint32_t *new_frame);

#if PTR_RELOCATION
void ptr_mm_tables_add_locked(struct ptr_mm *mm, uint32_t f);
void ptr_mm_tables_replace_locked(struct ptr_mm *mm, uint32_t old, uint32_t fresh);
#endif

int ptr_mm_count_tables(struct ptr_mm *mm, uint32_t counts[PTR_MAX_LEVELS],
			uint32_t per_node[PTR_MAX_NODES][PTR_MAX_LEVELS]);

/* ---- pagewalk -------------------------------------------------------------------------------
 *
 * Two walkers, and every walk of the core that reads the tree in software is one of them:
 *
 * - the RANGE walker (ptr_walk_range(), ptr_walk_tree()): one function per level over a
 *   half-open [addr, end) with ptr_level_addr_end() steps, an ops table of optional callbacks,
 *   and the locking the walk needs declared in the ops (not chosen by the caller) and checked
 *   on entry.  map/unmap/protect, freeing and counting a tree, relocation's collection and the
 *   relocation bench's collection are ops tables over it.
 * - the PATH walker (ptr_path_walk(), ptr_path_walk_from(), ptr_path_find(), ptr_walk_leaf()):
 *   one address, root (or a given table) down to a stop level.  The fault path's descent, the
 *   rewalk under a lock, translation, the A/D consumers, relocation's rewalk, sharing,
 *   repointing and the mirror's queries use it.  It is static inline so that the fault path
 *   (a hot path `ptreloc bench fault` measures) is compiled with it specialised in place.
 *
 * The emulated HARDWARE walk (cpu.c, access_inner()) is deliberately neither: it starts from
 * the CPU's paging-structure cache or PAE's PDPTE registers (possibly a stale copy), fills the
 * caches level by level, sets A/D with an atomic RMW and reports a freed frame as a fault code
 * - hardware semantics no software walker has, on the path `ptreloc bench walk` measures.
 */

struct ptr_walk;

/**
 * enum ptr_walk_action - what the range walker does after a callback on an entry; a callback
 * sets w->action (the walker resets it to PTR_WALK_SUBTREE before every callback).
 * @PTR_WALK_SUBTREE:  descend into the table the entry points to (the default)
 * @PTR_WALK_CONTINUE: do not descend; go on with the next entry (e.g. a shared table that is
 *                     not this walk's to free)
 * @PTR_WALK_AGAIN:    read the same entry again and dispatch it anew (the callback changed it)
 */
enum ptr_walk_action { PTR_WALK_SUBTREE = 0, PTR_WALK_CONTINUE = 1, PTR_WALK_AGAIN = 2 };

/**
 * enum ptr_walk_lock - what the range walker holds while it walks (ops->lock), checked by
 * ptr_walk_range()/ptr_walk_tree() before anything is read.
 * @PTR_WALK_LOCKLESS:    lockless reads inside a read-side section (LOCKING RULE 6): the walker
 *                        enters one itself, or, with w->cpu set, runs inside that CPU's access
 *                        (w->cpu must be running w->mm with its busy lock held: -EINVAL else).
 *                        Callbacks may only read entries or change leaves atomically.
 * @PTR_WALK_LEAF_LOCKED: as LOCKLESS, and each leaf callback runs under the lock of the leaf's
 *                        table (rules 1 and 2; rewalking to a relocated copy).  The caller must
 *                        hold no table lock.
 * @PTR_WALK_EXCLUSIVE:   the caller owns the tree: no CPU runs w->mm and no relocation is in
 *                        progress (-EBUSY else), so tables may be freed from the callbacks; no
 *                        section, no table lock.
 */
enum ptr_walk_lock { PTR_WALK_LOCKLESS = 0, PTR_WALK_LEAF_LOCKED = 1, PTR_WALK_EXCLUSIVE = 2 };

/**
 * struct ptr_walk_ops - optional callbacks; each returns 0 to go on, >0 to stop the walk with
 * that value, <0 to stop with -errno.
 * @leaf:       a present leaf entry @index of @table at @level covering [addr, next)
 * @hole:       an empty entry at @level covering [addr, next)
 * @table:      a present table entry @index of @table at @level, before the walk descends
 *              into the table it points to (pre-order; may set w->action)
 * @post_table: the level-@level table @frame, after the walk went through its entries that
 *              [addr, end) covers - post-order, so a callback may free it.  Called for the root
 *              too, last (from ptr_walk_tree() with addr = end = 0: the whole address space).  The entries of a level-0 table are not even read when @leaf and
 *              @hole are both NULL: nothing there could be called.
 * @lock:       the locking the walk runs under (enum ptr_walk_lock)
 */
struct ptr_walk_ops {
	int (*leaf)(struct ptr_walk *w, void *table, uint32_t index, int level, uint64_t addr,
		    uint64_t next);
	int (*hole)(struct ptr_walk *w, int level, uint64_t addr, uint64_t next);
	int (*table)(struct ptr_walk *w, void *table, uint32_t index, int level, uint64_t addr,
		     uint64_t next);
	int (*post_table)(struct ptr_walk *w, uint32_t frame, int level, uint64_t addr,
			  uint64_t end);
	enum ptr_walk_lock lock;
};

/**
 * struct ptr_walk - one range walk.
 * @mm:     the address space
 * @ops:    the callbacks and the lock mode
 * @priv:   the callbacks' data
 * @cpu:    NULL, or (PTR_WALK_LOCKLESS/LEAF_LOCKED) the CPU inside whose access the walk runs
 * @action: set by a callback (enum ptr_walk_action)
 */
struct ptr_walk {
	struct ptr_mm *mm;
	const struct ptr_walk_ops *ops;
	void *priv;
	struct ptr_cpu *cpu;
	enum ptr_walk_action action;
};

int ptr_walk_range(struct ptr_walk *w, uint64_t start, uint64_t end);
int ptr_walk_tree(struct ptr_walk *w);

/**
 * struct ptr_path - what a path walk read for one address.
 * @frame: the table the walk reached at each level; PTR_NO_FRAME below the last one (and, for
 *         ptr_path_walk_from(), above the level it started at unless set before)
 * @entry: the entry of @frame[@level] at the address - read when the walk stopped above its
 *         stop level (then it is not a table entry: a leaf or empty), and by ptr_walk_leaf()
 * @level: the level of the last table reached
 */
struct ptr_path {
	uint32_t frame[PTR_MAX_LEVELS];
	uint64_t entry;
	int level;
};

/**
 * ptr_path_walk_from() - walk @va down from the level-@level table @table to the table at
 * level @stop, or to the first entry above @stop that is not a table entry.  The entry at the
 * stop level itself is not read (a rewalk to a parent does not touch the table's own bytes).
 * Return: the level of the last table reached (@stop, or higher when an entry stopped the
 * walk, which is then in @p->entry); -ESTALE when a frame on the way is FREE (counted in
 * freed_frame_accesses).
 * Locking: lockless reads; the caller is in a read-side section (rule 6) or holds the locks
 * that keep the path fixed.
 */
static inline int ptr_path_walk_from(struct ptr_mm *mm, uint64_t va, int level, uint32_t table,
				     int stop, struct ptr_path *p)
{
	const struct ptr_geometry *g = mm->geo;
	struct ptr_arena *a = mm->arena;
	for (;; level--) {
		if (unlikely(!ptr_frame_live(a, table)))
			return ptr_arena_freed_access(a);
		p->frame[level] = table;
		p->level = level;
		if (level <= stop)
			return level;
		uint64_t e = ptr_entry_load(g, level, ptr_frame_data(a, table),
					    ptr_index(g, level, va));
		if (!ptr_entry_is_table(g, level, e)) {
			p->entry = e;
			return level;
		}
		table = ptr_phys_frame(a, ptr_entry_phys(g, level, e));
	}
}

/** ptr_path_walk() - ptr_path_walk_from() the current root, @p->frame reset first. */
static inline int ptr_path_walk(struct ptr_mm *mm, uint64_t va, int stop, struct ptr_path *p)
{
	for (int l = 0; l < PTR_MAX_LEVELS; l++)
		p->frame[l] = PTR_NO_FRAME;
	return ptr_path_walk_from(mm, va, mm->geo->nlevels - 1, atomic_load(&mm->root), stop, p);
}

/**
 * ptr_path_find() - the level-@level table covering @va: @p->frame[@level], its parent at
 * @p->frame[@level + 1] (PTR_NO_FRAME for the root, whose parent "entry" is mm->root).
 * Return: 0; -ENOENT (no table there: the walk stopped above @level); -ESTALE.
 * Locking: as ptr_path_walk_from().
 */
static inline int ptr_path_find(struct ptr_mm *mm, uint64_t va, int level, struct ptr_path *p)
{
	int rc = ptr_path_walk(mm, va, level, p);
	return rc < 0 ? rc : rc == level ? 0 : -ENOENT;
}

/**
 * ptr_walk_leaf() - walk @va to the bottom and read the entry where the walk stopped
 * (@p->entry: a leaf, or the empty entry).
 * Return: the level of that entry, or -ESTALE.  Locking: as ptr_path_walk_from().
 */
static inline int ptr_walk_leaf(struct ptr_mm *mm, uint64_t va, struct ptr_path *p)
{
	int level = ptr_path_walk(mm, va, 0, p);
	if (level == 0)
		p->entry = ptr_entry_load(mm->geo, 0, ptr_frame_data(mm->arena, p->frame[0]),
					  ptr_index(mm->geo, 0, va));
	return level;
}

uint64_t ptr_table_entry(struct ptr_arena *a, uint32_t f, int level, uint32_t index);

uint32_t ptr_mm_root(struct ptr_mm *mm);

#endif /* PTRELOC_PGTABLE_H */
