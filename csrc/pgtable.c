/*
 * pgtable.c - address spaces: the fault path, map/unmap/protect, A/D consumers, the range
 * walker, table sharing, and the low-level repoint helper.
 *
 * Shape: the kernel's.  The fault path walks locklessly, allocates a missing table outside
 * any lock, takes the lock that protects the entry (lock.h, LOCKING RULES), and - only
 * when a relocation is in progress - rewalks from the root under that lock, because the table
 * it walked may since have been copied and unlinked (reading it was safe: it is in limbo until
 * a grace period, but populating it would be lost).  Then it double-checks that the entry is
 * still empty and populates it, or frees the table it preallocated.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ptreloc.h"

#define TOP(g) ((g)->nlevels - 1)

static inline void *fdata(struct ptr_mm *mm, uint32_t f)
{
	return ptr_frame_data(mm->arena, f);
}

/* The lock protecting the entries of the level-@level table @f (rules 1 and 2). */
static inline ptr_spinlock_t *table_lock(struct ptr_mm *mm, int level, uint32_t f)
{
	return level <= 1 ? &mm->arena->frames[f].ptl : &mm->page_table_lock;
}

static inline uint32_t entry_child(struct ptr_mm *mm, int level, uint64_t e)
{
	return ptr_phys_frame(mm->arena, ptr_entry_phys(mm->geo, level, e));
}

/* ---- walks ---------------------------------------------------------------------------------- */

#if PTR_RELOCATION
/*
 * lock_table_rewalk() - lock_table()'s slow path, taken only while a relocation is in
 * progress: with @lock (the lock of *@table) held, rewalk from the root and chase the table if
 * it moved.  Out of line and cold so that the fast path stays small enough to inline: the
 * fault path then pays for relocation support with one load and one predictable branch.
 */
static int __attribute__((noinline, cold))
lock_table_rewalk(struct ptr_mm *mm, struct ptr_cpu *cpu, int level, uint64_t va,
		  uint32_t *table, ptr_spinlock_t *lock, ptr_spinlock_t **lockp)
{
	for (;;) {
		struct ptr_path path;
		int rc = ptr_path_find(mm, va, level, &path);
		if (!rc && path.frame[level] == *table) {
			*lockp = lock;
			return 0;
		}
		ptr_unlock(lock);
		if (rc)
			return rc == -ENOENT ? -EAGAIN : rc;
		*table = path.frame[level];
		lock = table_lock(mm, level, *table);
		ptr_lock(lock, cpu);
	}
}
#endif

/*
 * lock_table() - take the lock protecting the entries of the level-@level table covering @va,
 * which the caller found at *@table.  While a relocation is in progress, rewalk under the lock
 * and chase the table if it moved.  Return: 0 with *@lockp held; -EAGAIN when the path no
 * longer reaches @level (caller restarts); -ESTALE on a freed frame.
 */
static inline int lock_table(struct ptr_mm *mm, struct ptr_cpu *cpu, int level, uint64_t va,
			     uint32_t *table, ptr_spinlock_t **lockp)
{
	ptr_spinlock_t *lock = table_lock(mm, level, *table);
	ptr_lock(lock, cpu);
#if PTR_RELOCATION
	if (unlikely(atomic_load_explicit(&mm->relocating, memory_order_acquire)))
		return lock_table_rewalk(mm, cpu, level, va, table, lock, lockp);
#endif
	*lockp = lock;
	return 0;
}

static int walk_level(struct ptr_walk *w, int level, uint32_t table, uint64_t addr, uint64_t end);

/* A callback on an entry: the action is SUBTREE unless the callback says otherwise. */
#define WALK_CALL(w, call) ((w)->action = PTR_WALK_SUBTREE, (call))

static int walk_entries(struct ptr_walk *w, int level, uint32_t table, uint64_t addr,
			uint64_t end)
{
	struct ptr_mm *mm = w->mm;
	const struct ptr_geometry *g = mm->geo;
	const struct ptr_walk_ops *ops = w->ops;
	void *t = fdata(mm, table);
	int rc = 0;
	uint64_t next;
	bool lock_leaves = ops->lock == PTR_WALK_LEAF_LOCKED;
	bool locked_table = level == 0 && lock_leaves; /* walk_level() holds the PTE table lock */

	for (; addr != end; addr = next) {
		next = ptr_level_addr_end(g, level, addr, end);
		uint32_t idx = ptr_index(g, level, addr);
again:;
		uint64_t e = ptr_entry_load(g, level, t, idx);
		if (!ptr_entry_present(g, level, e)) {
			if (ops->hole && (rc = WALK_CALL(w, ops->hole(w, level, addr, next))))
				break;
			if (ops->hole && w->action == PTR_WALK_AGAIN)
				goto again;
			continue;
		}
		if (ptr_entry_is_leaf(g, level, e)) {
			if (!ops->leaf)
				continue;
			if (locked_table || !lock_leaves) {
				rc = WALK_CALL(w, ops->leaf(w, t, idx, level, addr, next));
			} else {
				/* huge leaf: lock its table, maybe chasing a relocated copy.  A leaf
				 * gone under the lock is skipped, not read AGAIN: @t may be the old
				 * copy, whose stale leaf would send us round for ever. */
				uint32_t tt = table;
				ptr_spinlock_t *lock;
				rc = lock_table(mm, w->cpu, level, addr, &tt, &lock);
				if (rc)
					break;
				void *tp = fdata(mm, tt);
				w->action = PTR_WALK_SUBTREE;
				if (ptr_entry_is_leaf(g, level, ptr_entry_load(g, level, tp, idx)))
					rc = ops->leaf(w, tp, idx, level, addr, next);
				ptr_unlock(lock);
			}
			if (rc)
				break;
			if (w->action == PTR_WALK_AGAIN)
				goto again;
			continue;
		}
		if (ops->table) {
			if ((rc = WALK_CALL(w, ops->table(w, t, idx, level, addr, next))))
				break;
			if (w->action == PTR_WALK_AGAIN)
				goto again;
			if (w->action == PTR_WALK_CONTINUE)
				continue;
		}
		uint32_t child = entry_child(mm, level, e);
		if (!ptr_frame_live(mm->arena, child)) {
			rc = ptr_arena_freed_access(mm->arena);
			break;
		}
		if ((rc = walk_level(w, level - 1, child, addr, next)))
			break;
		if (ops->post_table && (rc = ops->post_table(w, child, level - 1, addr, next)))
			break;
	}
	return rc;
}

/*
 * One level of the walk.  Level 0 takes its table's split lock under PTR_WALK_LEAF_LOCKED
 * (pte_offset_map_lock), and is not read at all when there is no callback for its entries
 * (freeing and counting need the table, not its 512 leaves).
 */
static int walk_level(struct ptr_walk *w, int level, uint32_t table, uint64_t addr, uint64_t end)
{
	if (level != 0)
		return walk_entries(w, level, table, addr, end);
	if (!w->ops->leaf && !w->ops->hole)
		return 0;
	if (w->ops->lock != PTR_WALK_LEAF_LOCKED)
		return walk_entries(w, 0, table, addr, end);
	ptr_spinlock_t *lock;
	int rc = lock_table(w->mm, w->cpu, 0, addr, &table, &lock);
	if (rc == -EAGAIN)
		return 0; /* the path vanished: nothing mapped there any more */
	if (rc)
		return rc;
	rc = walk_entries(w, 0, table, addr, end);
	ptr_unlock(lock);
	return rc;
}

/* Does any CPU run @mm?  (cpus_lock keeps the CPU set still while we look.) */
static bool mm_running(struct ptr_mm *mm)
{
	struct ptr_arena *a = mm->arena;
	bool running = false;
	ptr_lock(&a->cpus_lock, NULL);
	int i;
	ptr_for_each_cpu(a, i)
		running = running || atomic_load(&a->cpus[i]->mm) == mm;
	ptr_unlock(&a->cpus_lock);
	return running;
}

/*
 * walk_begin() - check that the walk runs under the locking its ops declare, and enter the
 * read-side section a lockless walk by a non-CPU thread needs.  *@tok is for walk_end().
 * Return: 0; -EINVAL (unknown mode, or w->cpu not inside an access of w->mm); -EBUSY
 * (PTR_WALK_EXCLUSIVE while a CPU runs the mm or a relocation is in progress).
 */
static int walk_begin(struct ptr_walk *w, int *tok)
{
	struct ptr_mm *mm = w->mm;
	*tok = 0;
	switch (w->ops->lock) {
	case PTR_WALK_EXCLUSIVE:
#if PTR_RELOCATION
		if (atomic_load(&mm->relocating))
			return -EBUSY;
#endif
		return w->cpu || mm_running(mm) ? -EBUSY : 0;
	case PTR_WALK_LOCKLESS:
	case PTR_WALK_LEAF_LOCKED:
		if (w->cpu) /* the CPU's access is the section: it must be in one, of this mm */
			return atomic_load(&w->cpu->mm) == mm &&
					       atomic_load(&w->cpu->busy.locked)
				       ? 0 : -EINVAL;
		*tok = PTR_READ_LOCK(mm->arena);
		return 0;
	}
	return -EINVAL;
}

static void walk_end(struct ptr_walk *w, int tok)
{
	if (!w->cpu && w->ops->lock != PTR_WALK_EXCLUSIVE)
		PTR_READ_UNLOCK(w->mm->arena, tok);
	(void)tok;
}

static int check_range(const struct ptr_geometry *g, uint64_t start, uint64_t end)
{
	if (end <= start)
		return -EINVAL;
	int rc = ptr_va_check(g, start);
	if (!rc)
		rc = ptr_va_check(g, end - 1);
	/* x86-64: a range may not straddle the non-canonical hole */
	if (!rc && g->canonical && ((start ^ (end - 1)) >> 63))
		rc = -EDOM;
	return rc;
}

/**
 * ptr_walk_range() - walk [@start, @end) of w->mm calling w->ops.
 * @w:     the walk: mm, ops (callbacks and lock mode), priv, cpu
 * @start: first address
 * @end:   end of the range (exclusive)
 *
 * Return: 0, the >0 value a callback stopped with, or -errno: -EINVAL/-ERANGE/-EDOM (the
 * range), -ESTALE (a FREE frame, counted), -EINVAL/-EBUSY (the lock mode does not hold, see
 * enum ptr_walk_lock).
 * Locking: what w->ops->lock declares; the walker takes the section and the leaf locks itself.
 */
int ptr_walk_range(struct ptr_walk *w, uint64_t start, uint64_t end)
{
	struct ptr_mm *mm = w->mm;
	int rc = check_range(mm->geo, start, end);
	int tok;
	if (rc || (rc = walk_begin(w, &tok)))
		return rc;
	uint32_t root = atomic_load(&mm->root);
	rc = walk_level(w, mm->geo->nlevels - 1, root, start, end);
	if (!rc && w->ops->post_table)
		rc = w->ops->post_table(w, root, mm->geo->nlevels - 1, start, end);
	walk_end(w, tok);
	return rc;
}

/**
 * ptr_walk_tree() - ptr_walk_range() over the whole address space of the format: every table
 * reachable from the root (x86-64: both canonical halves, upper half addresses sign-extended),
 * the root's @post_table once, last.
 * @w: the walk
 *
 * Return: as ptr_walk_range().
 * Locking: as ptr_walk_range().
 */
int ptr_walk_tree(struct ptr_walk *w)
{
	const struct ptr_geometry *g = w->mm->geo;
	int top = g->nlevels - 1, tok;
	int rc = walk_begin(w, &tok);
	if (rc)
		return rc;
	uint32_t root = atomic_load(&w->mm->root);
	if (g->canonical) {
		/* the upper half ends at the top of the address space: end 0 is the wrap */
		uint64_t half = 1ULL << (g->va_bits - 1);
		rc = walk_level(w, top, root, 0, half);
		if (!rc)
			rc = walk_level(w, top, root, ~0ULL << (g->va_bits - 1), 0);
	} else {
		rc = walk_level(w, top, root, 0, 1ULL << g->va_bits);
	}
	if (!rc && w->ops->post_table)
		rc = w->ops->post_table(w, root, top, 0, 0);
	walk_end(w, tok);
	return rc;
}

/* ---- address spaces ------------------------------------------------------------------------ */

#if PTR_RELOCATION
/**
 * ptr_mm_tables_add_locked() - append the linked table frame @f to @mm's table list (at its
 * level, frames[f].level).
 * @mm: the address space that links it
 * @f:  the frame, just linked (or about to be, under a lock the collection cannot pass)
 *
 * Return: nothing.
 * Locking: the caller holds @mm->tables_lock.
 */
void ptr_mm_tables_add_locked(struct ptr_mm *mm, uint32_t f)
{
	struct ptr_frame *fr = &mm->arena->frames[f];
	int l = fr->level;
	fr->mm_next = PTR_NO_FRAME;
	fr->mm_prev = mm->tables_tail[l];
	if (mm->tables_tail[l] != PTR_NO_FRAME)
		mm->arena->frames[mm->tables_tail[l]].mm_next = f;
	else
		mm->tables_head[l] = f;
	mm->tables_tail[l] = f;
	mm->ntables++;
}

/**
 * ptr_mm_tables_replace_locked() - @fresh takes @old's place in @mm's table list (a
 * relocation or ptr_repoint() moved the table; same level, same position).
 * @mm:    the address space
 * @old:   a frame on its list
 * @fresh: the frame that replaces it (on no list)
 *
 * Return: nothing.
 * Locking: the caller holds @mm->tables_lock.
 */
void ptr_mm_tables_replace_locked(struct ptr_mm *mm, uint32_t old, uint32_t fresh)
{
	struct ptr_frame *fo = &mm->arena->frames[old], *fn = &mm->arena->frames[fresh];
	int l = fo->level;
	fn->mm_next = fo->mm_next;
	fn->mm_prev = fo->mm_prev;
	if (fo->mm_prev != PTR_NO_FRAME)
		mm->arena->frames[fo->mm_prev].mm_next = fresh;
	else
		mm->tables_head[l] = fresh;
	if (fo->mm_next != PTR_NO_FRAME)
		mm->arena->frames[fo->mm_next].mm_prev = fresh;
	else
		mm->tables_tail[l] = fresh;
	fo->mm_next = fo->mm_prev = PTR_NO_FRAME;
}

static void tables_add(struct ptr_mm *mm, uint32_t f)
{
	ptr_lock(&mm->tables_lock, NULL);
	ptr_mm_tables_add_locked(mm, f);
	ptr_unlock(&mm->tables_lock);
}
#else
static inline void tables_add(struct ptr_mm *mm, uint32_t f)
{
}
#endif

/* Freeing a tree is an ops table: a shared table goes with its last sharer (so the walk does
 * not descend into one that others still link), every other table after its children. */
static int free_table_cb(struct ptr_walk *w, void *t, uint32_t i, int level, uint64_t a,
			 uint64_t n)
{
	struct ptr_mm *mm = w->mm;
	uint32_t child = entry_child(mm, level, ptr_entry_load(mm->geo, level, t, i));
	/* a frame that is not ours to free (already FREE: a protocol bug a test provoked, or
	 * poison read as an entry) is skipped, so the rest of the tree is still freed */
	if (!ptr_frame_live(mm->arena, child) ||
	    atomic_fetch_sub(&mm->arena->frames[child].sharers, 1) > 1)
		w->action = PTR_WALK_CONTINUE;
	return 0;
}

static int free_post_cb(struct ptr_walk *w, uint32_t frame, int level, uint64_t a, uint64_t e)
{
	ptr_frame_free(w->mm->arena, frame);
	return 0;
}

static const struct ptr_walk_ops free_ops = { .table = free_table_cb, .post_table = free_post_cb,
					      .lock = PTR_WALK_EXCLUSIVE };

static int free_tree(struct ptr_mm *mm)
{
	struct ptr_walk w = { .mm = mm, .ops = &free_ops };
	return ptr_walk_tree(&w);
}

/**
 * ptr_mm_create() - a new address space whose root (and, on PAE, the 4 PMD tables the PDPTEs
 * point to) come from pool @node.
 * @a:    the arena
 * @node: the pool for its tables by default
 * @out:  the address space
 *
 * Return: 0 and *@out; -ENODEV, -ENOSPC, -ENOMEM as ptr_frame_alloc() (nothing left allocated).
 * Locking: none; the mm is not shared until this returns.
 */
int ptr_mm_create(struct ptr_arena *a, int node, struct ptr_mm **out)
{
	const struct ptr_geometry *g = a->geo;
	if (node < 0 || node >= a->nnodes)
		return -ENODEV;
	struct ptr_mm *mm = calloc(1, sizeof(*mm));
	if (!mm)
		return -ENOMEM;
	mm->arena = a;
	mm->geo = g;
	mm->node = node;
	mm->id = atomic_fetch_add(&a->next_mm_id, 1);
#if PTR_RELOCATION
	for (int l = 0; l < PTR_MAX_LEVELS; l++)
		mm->tables_head[l] = mm->tables_tail[l] = PTR_NO_FRAME;
#endif
	uint32_t root;
	int rc = ptr_frame_alloc(a, node, TOP(g), &root);
	if (rc) {
		free(mm);
		return rc;
	}
	atomic_store(&mm->root, root);
	tables_add(mm, root);
	if (g->top_preloaded) {
		/* PAE: the CPU latches all PDPTEs at CR3 load, so they are populated up front
		 * (Linux's pgd_prepopulate_pmd) and never change without a root reload. */
		int top = TOP(g);
		for (uint32_t i = 0; i < (1u << g->level[top].bits); i++) {
			uint32_t f;
			rc = ptr_frame_alloc(a, node, top - 1, &f);
			if (rc) {
				free_tree(mm);
				free(mm);
				return rc;
			}
			atomic_store(&a->frames[f].base_va, (uint64_t)i << g->level[top].shift);
			ptr_entry_store(g, top, fdata(mm, root), i,
					ptr_entry_make_table(g, top, ptr_frame_phys(a, f)));
			tables_add(mm, f);
		}
	}
	*out = mm;
	return 0;
}

/**
 * ptr_mm_destroy() - free every table of @mm (a shared one when its last sharer goes) and @mm.
 * @mm: the address space
 *
 * Return: 0; -EBUSY while a CPU runs @mm or a relocation of it is in progress (nothing freed).
 * Locking: the caller owns @mm: no other thread uses it.  The tree is freed with a
 * PTR_WALK_EXCLUSIVE walk, which checks that under cpus_lock.
 */
int ptr_mm_destroy(struct ptr_mm *mm)
{
	int rc = free_tree(mm); /* -EBUSY (a CPU runs it) before anything is freed */
	if (rc)
		return rc;
	free(mm);
	return 0;
}

/**
 * ptr_mm_set_node() - the pool new tables of @mm come from by default.
 * @mm:   the address space
 * @node: the pool
 *
 * Return: 0; -ENODEV (no such pool).
 * Locking: none; an atomic store (a relocator may move the default while CPUs fault).
 */
int ptr_mm_set_node(struct ptr_mm *mm, int node)
{
	if (node < 0 || node >= mm->arena->nnodes)
		return -ENODEV;
	/* atomic: a relocator may move the default while CPUs fault (read in ptr_fault/map) */
	__atomic_store_n(&mm->node, node, __ATOMIC_RELAXED);
	return 0;
}

/*
 * check_leaf_range() - the arguments ptr_map() and ptr_add_region() share: leaves at
 * @leaf_level (a level that can hold them), [@start, @end) valid and aligned to that leaf size,
 * and @phys.. aligned and inside the format's physical range.
 * Return: 0, -EINVAL (level or alignment), -ERANGE/-EDOM (address range).
 */
static int check_leaf_range(const struct ptr_geometry *g, uint64_t start, uint64_t end,
			    uint64_t phys, int leaf_level)
{
	if (leaf_level < 0 || leaf_level >= g->nlevels || !g->level[leaf_level].leaf_ok)
		return -EINVAL;
	int rc = check_range(g, start, end);
	if (rc)
		return rc;
	uint64_t size = ptr_level_size(g, leaf_level);
	if ((start | end | phys) & (size - 1))
		return -EINVAL;
	if (phys + (end - start) > g->phys_limit || phys + (end - start) < phys)
		return -ERANGE;
	return 0;
}

/**
 * ptr_add_region() - register a demand-fault region: a fault at va in [@start, @end) maps
 * @phys + (va - @start) with leaves at @leaf_level.  No table is built.
 * @mm:         the address space
 * @start:      first address, aligned to the leaf size
 * @end:        end (exclusive), aligned
 * @phys:       physical address of @start, aligned
 * @writable:   writable leaves
 * @leaf_level: level of the leaves (0 = base pages)
 *
 * Return: 0; -EINVAL/-ERANGE/-EDOM (level, alignment, address); -EEXIST (overlaps a region);
 * -ENOSPC (PTR_MAX_REGIONS regions already).
 * Locking: takes page_table_lock; regions are append-only, lockless readers see @nregions with
 * acquire.
 */
int ptr_add_region(struct ptr_mm *mm, uint64_t start, uint64_t end, uint64_t phys,
		   bool writable, int leaf_level)
{
	const struct ptr_geometry *g = mm->geo;
	int rc = check_leaf_range(g, start, end, phys, leaf_level);
	if (rc)
		return rc;
	ptr_lock(&mm->page_table_lock, NULL);
	int n = atomic_load(&mm->nregions);
	for (int i = 0; i < n; i++) {
		if (start < mm->regions[i].end && mm->regions[i].start < end) {
			ptr_unlock(&mm->page_table_lock);
			return -EEXIST;
		}
	}
	if (n == PTR_MAX_REGIONS) {
		ptr_unlock(&mm->page_table_lock);
		return -ENOSPC;
	}
	mm->regions[n] = (struct ptr_region){ start, end, phys, writable, leaf_level };
	atomic_store_explicit(&mm->nregions, n + 1, memory_order_release);
	ptr_unlock(&mm->page_table_lock);
	return 0;
}

/*
 * populate_table() - make the level-@level entry covering @va in *@table point to a (new)
 * level-(@level-1) table, the fault path's way: allocate outside the lock, lock, (rewalk),
 * double-check, populate or free.  On return *@table is the child.
 * Return: 0; -EEXIST (a leaf sits there); -EAGAIN (restart from the root); -errno.
 */
static int populate_table(struct ptr_mm *mm, struct ptr_cpu *cpu, int level, uint64_t va,
			  uint32_t *table, int node)
{
	const struct ptr_geometry *g = mm->geo;
	struct ptr_arena *a = mm->arena;
	uint32_t idx = ptr_index(g, level, va), fresh;
	int rc = ptr_frame_alloc(a, node, level - 1, &fresh);
	if (rc)
		return rc;
	atomic_store(&a->frames[fresh].base_va, va & ~(ptr_level_size(g, level) - 1));
	ptr_spinlock_t *lock;
	rc = lock_table(mm, cpu, level, va, table, &lock);
	if (rc) {
		ptr_frame_free(a, fresh);
		return rc;
	}
	void *t = fdata(mm, *table);
	uint64_t e = ptr_entry_load(g, level, t, idx);
	if (e == 0) {
		ptr_entry_store(g, level, t, idx,
				ptr_entry_make_table(g, level, ptr_frame_phys(a, fresh)));
		tables_add(mm, fresh); /* under the table lock: linked and listed as one step */
		e = 0;
		*table = fresh;
		fresh = PTR_NO_FRAME;
	}
	ptr_unlock(lock);
	if (fresh != PTR_NO_FRAME) {
		ptr_frame_free(a, fresh); /* somebody else populated it first */
		if (!ptr_entry_is_table(g, level, e))
			return -EEXIST;
		*table = entry_child(mm, level, e);
	}
	return 0;
}

/*
 * descend() - walk (populating missing tables on @node) from the root down to the level-@leaf
 * table covering @va.  Return: 0 and *@table; -EEXIST when a leaf sits above @leaf; -errno.
 */
static int descend(struct ptr_mm *mm, struct ptr_cpu *cpu, uint64_t va, int leaf, int node,
		   uint32_t *table)
{
	struct ptr_path p;
restart:
	for (int level = TOP(mm->geo);;) {
		uint32_t t = level == TOP(mm->geo) ? atomic_load(&mm->root) : p.frame[level];
		level = ptr_path_walk_from(mm, va, level, t, leaf, &p);
		if (level < 0)
			return level;
		if (level == leaf)
			break;
		if (p.entry != 0)
			return -EEXIST; /* a leaf above @leaf */
		/* an empty entry at @level: populate it, then go on from the new child */
		t = p.frame[level];
		int rc = populate_table(mm, cpu, level, va, &t, node);
		if (rc == -EAGAIN)
			goto restart;
		if (rc)
			return rc;
		p.frame[--level] = t;
	}
	*table = p.frame[leaf];
	return 0;
}

/*
 * descend_lock() - descend() to the level-@leaf table covering @va and take its lock
 * (rewalking if relocating), starting over while the path vanishes under a relocation.
 * Return: 0 with *@table and *@lock held; -EEXIST (a leaf above @leaf); -errno.
 */
static int descend_lock(struct ptr_mm *mm, uint64_t va, int leaf, int node, uint32_t *table,
			ptr_spinlock_t **lock)
{
	int rc;
	do {
		rc = descend(mm, NULL, va, leaf, node, table);
		if (!rc)
			rc = lock_table(mm, NULL, leaf, va, table, lock);
	} while (rc == -EAGAIN);
	return rc;
}

/* Install a leaf at (@leaf, va) if the entry is empty.  Return 0, -EEXIST (present), -errno. */
static int install_leaf(struct ptr_mm *mm, struct ptr_cpu *cpu, uint32_t table, int leaf,
			uint64_t va, uint64_t e_new)
{
	const struct ptr_geometry *g = mm->geo;
	ptr_spinlock_t *lock;
	int rc = lock_table(mm, cpu, leaf, va, &table, &lock);
	if (rc)
		return rc;
	uint64_t expected = 0;
	rc = ptr_entry_cas(g, leaf, fdata(mm, table), ptr_index(g, leaf, va), &expected, e_new)
		     ? 0 : -EEXIST;
	ptr_unlock(lock);
	return rc;
}

static int translate_in_section(struct ptr_mm *mm, uint64_t va, struct ptr_translation *out);

/**
 * ptr_fault_in_section() - ptr_fault() for a caller already inside a read-side section: a CPU's
 * thread inside its access (ptr_cpu_access_fault(); @cpu its CPU) or a ptr_read_lock() holder
 * (@cpu NULL).  The CPU's fault path thus carries no section code at all.
 * @mm:    the address space
 * @cpu:   the CPU on whose behalf it runs, or NULL
 * @va:    the faulting address
 * @write: a write fault
 *
 * Not exported to Python (Python is never inside an access).
 * Return: as ptr_fault().
 * Locking: the caller is in a section; takes and drops table locks as ptr_fault().
 */
int ptr_fault_in_section(struct ptr_mm *mm, struct ptr_cpu *cpu, uint64_t va, bool write)
{
	const struct ptr_geometry *g = mm->geo;
	int rc = ptr_va_check(g, va);
	if (rc)
		return rc;
	int n = atomic_load_explicit(&mm->nregions, memory_order_acquire);
	const struct ptr_region *r = NULL;
	for (int i = 0; i < n; i++)
		if (va >= mm->regions[i].start && va < mm->regions[i].end)
			r = &mm->regions[i];
	if (!r)
		return -EFAULT;
	if (write && !r->writable)
		return -EACCES;
	uint64_t base = va & ~(ptr_level_size(g, r->leaf_level) - 1);
	uint32_t table;
	for (int tries = 0; tries < 16; tries++) {
		rc = descend(mm, cpu, va, r->leaf_level,
			     __atomic_load_n(&mm->node, __ATOMIC_RELAXED), &table);
		if (rc == -EEXIST) {
			rc = 0; /* a leaf above: mapped already (e.g. by map) */
			break;
		}
		if (rc)
			break;
		rc = install_leaf(mm, cpu, table, r->leaf_level, va,
				  ptr_entry_make_leaf(g, r->leaf_level,
						      r->phys + (base - r->start), r->writable));
		if (rc == -EAGAIN)
			continue;
		if (rc == -EEXIST)
			rc = 0; /* another CPU won the race: a spurious fault */
		break;
	}
	if (!rc) {
		/* a present leaf that forbids the write (protect() made it read-only); still in
		 * the caller's section, so no nested one (va was checked on entry) */
		struct ptr_translation tr;
		if (write && translate_in_section(mm, va, &tr) == 0 && !tr.writable)
			rc = -EACCES;
	}
	return rc;
}

/**
 * ptr_fault() - the software fault path (handle_mm_fault's shape) for @va in a region:
 * lockless walk; allocate each missing table OUTSIDE the lock; take the lock; when a relocation
 * is in progress rewalk from the root under the lock; double-check the entry is still empty;
 * populate it or free the preallocated table.  A present leaf (another CPU won) is success.
 * @mm:    the address space
 * @cpu:   the CPU on whose behalf this runs, or NULL (Python, any non-CPU thread)
 * @va:    the faulting address
 * @write: a write fault
 *
 * The read-side section the lockless walks need (rule 6): a CPU's is its busy lock, held by
 * its thread for the whole access the fault belongs to, so with @cpu this is
 * ptr_fault_in_section() and nothing more; anyone else enters one here.
 * Return: 0; -EFAULT (no region covers @va), -EACCES (write to a read-only region or leaf),
 * -ERANGE/-EDOM (address), -ENOSPC/-ENOMEM/-ENODEV (allocation).
 * Locking: takes the lock of each table it populates and of the leaf's table (rules 1-2),
 * one at a time.  @cpu non-NULL only from that CPU's own thread INSIDE an access: it services
 * the CPU's shootdowns while spinning (rule 5).  Relocation support costs this path one
 * predictable branch per lock taken (the mm->relocating check; the rewalk is out of line).
 */
int ptr_fault(struct ptr_mm *mm, struct ptr_cpu *cpu, uint64_t va, bool write)
{
	if (cpu)
		return ptr_fault_in_section(mm, cpu, va, write);
	int tok = PTR_READ_LOCK(mm->arena);
	int rc = ptr_fault_in_section(mm, NULL, va, write);
	PTR_READ_UNLOCK(mm->arena, tok);
	(void)tok;
	return rc;
}

/* ---- map / unmap / protect ------------------------------------------------------------------ */

static int leaf_present_cb(struct ptr_walk *w, void *t, uint32_t i, int level, uint64_t a,
			   uint64_t n)
{
	return 1;
}

/* a table where the new leaf would go (e.g. an emptied PTE table under a huge map) */
static int table_in_way_cb(struct ptr_walk *w, void *t, uint32_t i, int level, uint64_t a,
			   uint64_t n)
{
	return level <= *(int *)w->priv ? 1 : 0;
}

static const struct ptr_walk_ops any_leaf_ops = { .leaf = leaf_present_cb,
						  .table = table_in_way_cb,
						  .lock = PTR_WALK_LOCKLESS };

static int64_t unmap_nolock_flush(struct ptr_mm *mm, uint64_t start, uint64_t end,
				  uint64_t *dirty, bool flush);

/**
 * ptr_map() - map [@start, @end) to @phys.. with leaves at @leaf_level.
 * @mm:         the address space
 * @start:      first address, aligned to the leaf size
 * @end:        end (exclusive), aligned
 * @phys:       physical address of @start, aligned
 * @leaf_level: level of the leaves (0 = base pages)
 * @writable:   writable leaves
 * @table_node: pool for the tables this call allocates, -1 = mm->node
 *
 * Return: 0; -EINVAL (unaligned, empty range, level without leaves), -ERANGE/-EDOM (address),
 * -ENODEV (no such pool), -EEXIST (something is already mapped in the range: nothing changed),
 * -ENOSPC/-ENOMEM (allocation failed: leaves installed so far are removed again; tables
 * allocated stay linked and empty, see rule 7).
 * Locking: in its own read-side section; takes each leaf table's lock once for the leaves it
 * fills there.  Call with no table lock held.
 */
int ptr_map(struct ptr_mm *mm, uint64_t start, uint64_t end, uint64_t phys, int leaf_level,
	    bool writable, int table_node)
{
	const struct ptr_geometry *g = mm->geo;
	struct ptr_arena *a = mm->arena;
	int rc = check_leaf_range(g, start, end, phys, leaf_level);
	if (rc)
		return rc;
	uint64_t size = ptr_level_size(g, leaf_level);
	if (table_node < 0)
		table_node = __atomic_load_n(&mm->node, __ATOMIC_RELAXED);
	if (table_node >= a->nnodes)
		return -ENODEV;
	/* refuse before changing anything */
	struct ptr_walk w = { .mm = mm, .ops = &any_leaf_ops, .priv = &leaf_level };
	rc = ptr_walk_range(&w, start, end);
	if (rc)
		return rc > 0 ? -EEXIST : rc;

	int tok = PTR_READ_LOCK(a);
	uint64_t va = start;
	while (va != end) {
		uint32_t table;
		ptr_spinlock_t *lock;
		rc = descend_lock(mm, va, leaf_level, table_node, &table, &lock);
		if (rc)
			break;
		/* fill the rest of this table under one lock acquisition */
		uint64_t tend = leaf_level + 1 < g->nlevels
					? ptr_level_addr_end(g, leaf_level + 1, va, end)
					: end; /* leaves in the root (x86_32 PSE) */
		void *t = fdata(mm, table);
		for (; va != tend; va += size) {
			uint64_t expected = 0;
			uint64_t e = ptr_entry_make_leaf(g, leaf_level, phys + (va - start), writable);
			if (!ptr_entry_cas(g, leaf_level, t, ptr_index(g, leaf_level, va), &expected,
					   e)) {
				rc = -EEXIST; /* a concurrent fault filled it */
				break;
			}
		}
		ptr_unlock(lock);
		if (rc)
			break;
	}
	PTR_READ_UNLOCK(a, tok);
	(void)tok;
	if (rc && va != start)
		unmap_nolock_flush(mm, start, va, NULL, true); /* roll back our leaves */
	return rc;
}

/* Install the leaf @e at (@level, @va) in @table (its lock held) if the entry is empty. */
static inline int set_leaf_locked(struct ptr_mm *mm, uint32_t table, int level, uint64_t va,
				  uint64_t e)
{
	const struct ptr_geometry *g = mm->geo;
	void *t = fdata(mm, table);
	uint32_t idx = ptr_index(g, level, va);
	/* every writer of an empty entry holds this table's lock (faults install under it, the
	 * walker only sets A/D in present entries): a plain check-then-store is enough */
	if (ptr_entry_load(g, level, t, idx))
		return -EEXIST;
	ptr_entry_store(g, level, t, idx, e);
	return 0;
}

/*
 * fill_leaves() - the @n consecutive leaves of table data @t from entry @idx on, for the pages
 * @va, @va + @page, ...: each flags | phys (phys = va & @mask when @mask, else va % @limit),
 * read-only where [@ro[2k], @ro[2k + 1]) holds the page (@ri: the first pair that may, moved
 * on).  Refused with -EEXIST, nothing written, if any of the entries is not empty.
 *
 * Every writer of an empty entry holds the table's lock (faults install under it; the walker
 * sets A/D only in present entries), as the caller does: relaxed loads see every entry, and the
 * stores need no order among themselves - the caller's unlock publishes them, and a walker
 * that reads one early reads a complete entry (each store is one atomic store).  The pages go
 * in stretches of one writability, a check pass then a store pass over each.
 */
static int fill_leaves(void *t, bool wide, uint32_t idx, uint64_t va, uint64_t n, uint64_t page,
		       const uint64_t *ro, uint64_t nro, uint64_t *ri, uint64_t leaf_rw,
		       uint64_t leaf_ro, uint64_t mask, uint64_t limit)
{
	for (uint64_t k = 0; k < n; k++) {
		bool used = wide ? atomic_load_explicit((_Atomic uint64_t *)t + idx + k,
							memory_order_relaxed) != 0
				 : atomic_load_explicit((_Atomic uint32_t *)t + idx + k,
							memory_order_relaxed) != 0;
		if (used)
			return -EEXIST;
	}
	uint64_t k = 0;
	while (k < n) {
		uint64_t v = va + k * page;
		while (*ri < nro && ro[2 * *ri + 1] <= v)
			(*ri)++;
		/* the stretch [k, m) of one writability: to the next read-only edge */
		bool w;
		uint64_t edge;
		if (*ri < nro && ro[2 * *ri] <= v) {
			w = false;
			edge = ro[2 * *ri + 1];
		} else {
			w = true;
			edge = *ri < nro ? ro[2 * *ri] : UINT64_MAX;
		}
		uint64_t m = edge - v >= (n - k) * page ? n : k + (edge - v + page - 1) / page;
		uint64_t flags = w ? leaf_rw : leaf_ro;
		if (wide) {
			_Atomic uint64_t *slot = (_Atomic uint64_t *)t + idx;
			for (; k < m; k++, v += page)
				atomic_store_explicit(slot + k, flags | (mask ? v & mask : v % limit),
						      memory_order_relaxed);
		} else {
			_Atomic uint32_t *slot = (_Atomic uint32_t *)t + idx;
			for (; k < m; k++, v += page)
				atomic_store_explicit(slot + k,
						      (uint32_t)(flags | (mask ? v & mask : v % limit)),
						      memory_order_relaxed);
		}
	}
	return 0;
}

/* the run holding page @i of @set */
static inline uint64_t page_run(const struct ptr_page_set *set, uint64_t i)
{
	return ptr_last_at_or_below(set->run_first, set->nruns, i);
}

/* is [b, b + block) wholly among pages lo..hi-1 of @set: inside one run, within the range */
static bool block_among(const struct ptr_page_set *set, uint64_t b, uint64_t block,
			unsigned page_shift)
{
	uint64_t a = ptr_last_at_or_below(set->run_start, set->nruns, b);
	if (!set->nruns || set->run_start[a] > b)
		return false;
	uint64_t first = set->run_first[a] + ((b - set->run_start[a]) >> page_shift);
	uint64_t pages = block >> page_shift;
	return first >= set->lo && first + pages <= set->hi &&
	       first + pages <= set->run_first[a + 1];
}

/**
 * ptr_map_pages() - map a set of base pages (and huge blocks) in one call: how a live
 * process's resident pages are mirrored.
 * @mm:  the address space
 * @set: the pages (runs of consecutive pages, and which of them), the node of each
 *       lowest-level table, read-only ranges, huge blocks (struct ptr_page_set);
 *       @set->leaves is set to the leaves installed
 *
 * Per lowest-level table the path is walked once (tables missing on the way are allocated on
 * that table's node; place upper tables first with ptr_ensure_table() to put them elsewhere)
 * and its lock taken once for the pages of a run in it, which are consecutive entries (one
 * store each, no address read).  Unlike ptr_map() a failure does not roll back: the leaves
 * installed before it stay (the mirror that called it is thrown away); a run's stretch in a
 * table that meets a mapped entry is refused whole, before any of it is written.
 * Return: 0; -EINVAL (runs that overlap, do not ascend, are unaligned or do not start at
 * page 0, a page range past the runs, a huge block not wholly among the pages or at a level without leaves, a format of
 * one level); -ERANGE/-EDOM (address); -ENODEV (no such node); -EEXIST (a page or block
 * already mapped, or a table or leaf in the way); -ENOSPC/-ENOMEM.
 * Locking: in its own read-side section; takes each touched table's lock once per run in it.
 * Call with no table lock held.
 */
int ptr_map_pages(struct ptr_mm *mm, struct ptr_page_set *set)
{
	const struct ptr_geometry *g = mm->geo;
	struct ptr_arena *a = mm->arena;
	set->leaves = 0;
	if (g->nlevels < 2 || (set->nhuge && !g->level[1].leaf_ok))
		return -EINVAL;
	const uint64_t page = ptr_level_size(g, 0), block = ptr_level_size(g, 1);
	const unsigned page_shift = (unsigned)__builtin_ctzll(page);
	const unsigned span_shift = (unsigned)__builtin_ctzll(block);
	const uint64_t per_block = block / page, limit = g->phys_limit;
	int def = set->default_node < 0 ? __atomic_load_n(&mm->node, __ATOMIC_RELAXED)
					: set->default_node;
	if (def >= a->nnodes)
		return -ENODEV;
	for (uint64_t k = 0; k < set->nspans; k++)
		if (set->span_nodes[k] < 0 || set->span_nodes[k] >= a->nnodes)
			return -ENODEV;
	/* runs: aligned, each holding pages, ascending and apart, none past the top */
	const uint64_t nruns = set->nruns;
	if (set->lo > set->hi || set->hi > set->run_first[nruns] || set->run_first[0] != 0)
		return -EINVAL; /* the first run starts at page 0 (none: the count is 0) */
	for (uint64_t r = 0; r < nruns; r++) {
		uint64_t start = set->run_start[r], n = set->run_first[r + 1] - set->run_first[r];
		if ((start & (page - 1)) || set->run_first[r + 1] <= set->run_first[r] ||
		    n > (UINT64_MAX - start) >> page_shift)
			return -EINVAL;
		if (r + 1 < nruns && set->run_start[r + 1] <= start + ((n - 1) << page_shift))
			return -EINVAL;
	}
	if (set->lo < set->hi) {
		uint64_t r0 = page_run(set, set->lo), r1 = page_run(set, set->hi - 1);
		uint64_t first = set->run_start[r0] + ((set->lo - set->run_first[r0]) << page_shift);
		uint64_t last = set->run_start[r1] + ((set->hi - 1 - set->run_first[r1]) << page_shift);
		int rc = check_range(g, first, last + page);
		if (rc)
			return rc;
	}
	/* every huge block aligned, ascending, and wholly among the pages */
	for (uint64_t h = 0; h < set->nhuge; h++) {
		uint64_t b = set->huge[h];
		if ((b & (block - 1)) || (h && b <= set->huge[h - 1]) ||
		    !block_among(set, b, block, page_shift))
			return -EINVAL;
	}
	const uint64_t leaf_rw = ptr_entry_make_leaf(g, 0, 0, true);
	const uint64_t leaf_ro = ptr_entry_make_leaf(g, 0, 0, false);
	const bool pow2 = limit && !(limit & (limit - 1));
	const bool wide = g->level[0].entry_size == 8;
	const unsigned pte_shift = g->level[0].shift;
	const uint64_t pte_mask = (1ull << g->level[0].bits) - 1;
	const uint64_t *ro = set->ro, *huge = set->huge, *keys = set->span_keys;
	const uint64_t nro = set->nro, nhuge = set->nhuge, nspans = set->nspans, hi_page = set->hi;
	int rc = 0, tok = PTR_READ_LOCK(a);
	uint64_t si = 0, ri = 0, hi = 0, leaves = 0;
	uint64_t i = set->lo, r = set->lo < set->hi ? page_run(set, set->lo) : nruns;
	for (; r < nruns && i < hi_page && !rc; r++) {
		uint64_t rend = set->run_first[r + 1] < hi_page ? set->run_first[r + 1] : hi_page;
		uint64_t va = set->run_start[r] + ((i - set->run_first[r]) << page_shift);
		while (i < rend) {
			uint64_t span = va >> span_shift;
			while (si < nspans && keys[si] < span)
				si++;
			int node = si < nspans && keys[si] == span ? set->span_nodes[si] : def;
			while (hi < nhuge && huge[hi] < va)
				hi++;
			uint32_t table;
			ptr_spinlock_t *lock;
			if (hi < nhuge && huge[hi] == va) {
				/* one huge leaf: wholly among the pages (checked above) */
				while (ri < nro && ro[2 * ri + 1] <= va)
					ri++;
				bool w = !(ri < nro && ro[2 * ri] < va + block);
				rc = descend_lock(mm, va, 1, node, &table, &lock);
				if (rc)
					break;
				rc = set_leaf_locked(mm, table, 1, va,
						     ptr_entry_make_leaf(g, 1, va % limit, w));
				ptr_unlock(lock);
				leaves += !rc;
				i += per_block;
				va += block;
				if (rc)
					break;
				continue;
			}
			rc = descend_lock(mm, va, 0, node, &table, &lock);
			if (rc)
				break;
			/* the run's pages in this table: consecutive entries.  At the top of the
			 * address space ptr_level_addr_end() clamps to UINT64_MAX, one byte short
			 * of the end, so n would miss the last page - which never gets here: a run
			 * holding it is refused above (n > (UINT64_MAX - start) >> page_shift). */
			uint64_t tend = ptr_level_addr_end(g, 1, va, UINT64_MAX);
			uint64_t n = (tend - va) >> page_shift;
			if (n > rend - i)
				n = rend - i;
			void *t = fdata(mm, table);
			uint32_t idx = (uint32_t)((va >> pte_shift) & pte_mask);
			rc = fill_leaves(t, wide, idx, va, n, page, ro, nro, &ri, leaf_rw, leaf_ro,
					 pow2 ? limit - 1 : 0, limit);
			leaves += rc >= 0 ? n : 0;
			rc = rc < 0 ? rc : 0;
			va += n << page_shift;
			ptr_unlock(lock);
			i += n;
			if (rc)
				break;
		}
	}
	PTR_READ_UNLOCK(a, tok);
	(void)tok;
	set->leaves = leaves;
	return rc;
}

/**
 * ptr_ensure_table() - make sure the walk for @va has its level-@level table (the table whose
 * entries are at @level), allocating it and any missing table above it on @node.
 * @mm:    the address space
 * @va:    an address in the table's range
 * @level: 0 (a lowest-level table) .. nlevels - 2 (the root always exists)
 * @node:  the pool for the tables allocated
 *
 * Return: 0 (it exists now; an existing one stays where it is); -EINVAL (level); -ERANGE/-EDOM
 * (address); -ENODEV (node); -EEXIST (a huge leaf above covers @va); -ENOSPC/-ENOMEM.
 * Locking: in its own read-side section; takes the parent table's lock to link a new table.
 */
int ptr_ensure_table(struct ptr_mm *mm, uint64_t va, int level, int node)
{
	const struct ptr_geometry *g = mm->geo;
	if (level < 0 || level >= TOP(g))
		return -EINVAL;
	if (node < 0 || node >= mm->arena->nnodes)
		return -ENODEV;
	int rc = ptr_va_check(g, va);
	if (rc)
		return rc;
	int tok = PTR_READ_LOCK(mm->arena);
	uint32_t table;
	rc = descend(mm, NULL, va, level, node, &table);
	PTR_READ_UNLOCK(mm->arena, tok);
	(void)tok;
	return rc;
}

struct unmap_priv {
	int64_t leaves;
	uint64_t dirty;
	bool writable;
};

static int unmap_leaf_cb(struct ptr_walk *w, void *t, uint32_t i, int level, uint64_t a,
			 uint64_t n)
{
	struct unmap_priv *p = w->priv;
	uint64_t old = ptr_entry_xchg(w->mm->geo, level, t, i, 0);
	if (ptr_entry_is_leaf(w->mm->geo, level, old)) {
		p->leaves++;
		if (ptr_entry_dirty(w->mm->geo, old))
			p->dirty++;
	}
	return 0;
}

static const struct ptr_walk_ops unmap_ops = { .leaf = unmap_leaf_cb,
					       .lock = PTR_WALK_LEAF_LOCKED };

static int64_t unmap_nolock_flush(struct ptr_mm *mm, uint64_t start, uint64_t end,
				  uint64_t *dirty, bool flush)
{
	struct unmap_priv p = { 0 };
	struct ptr_walk w = { .mm = mm, .ops = &unmap_ops, .priv = &p };
	int rc = ptr_walk_range(&w, start, end);
	if (p.leaves && flush)
		ptr_shootdown(mm, false);
	if (dirty)
		*dirty = p.dirty;
	return rc < 0 ? rc : p.leaves;
}

static int straddle_cb(struct ptr_walk *w, void *t, uint32_t i, int level, uint64_t a,
		       uint64_t n)
{
	uint64_t *range = w->priv;
	uint64_t size = ptr_level_size(w->mm->geo, level);
	uint64_t lstart = a & ~(size - 1);
	return (lstart < range[0] || lstart + size > range[1]) ? 1 : 0;
}

static const struct ptr_walk_ops straddle_ops = { .leaf = straddle_cb,
						  .lock = PTR_WALK_LOCKLESS };

/* Does a huge leaf stick out of [start, end)?  Only the two ends can. */
static int check_straddle(struct ptr_mm *mm, uint64_t start, uint64_t end)
{
	uint64_t range[2] = { start, end };
	struct ptr_walk w = { .mm = mm, .ops = &straddle_ops, .priv = range };
	int rc = ptr_walk_range(&w, start, start + 1);
	if (!rc)
		rc = ptr_walk_range(&w, end - 1, end);
	return rc > 0 ? -EINVAL : rc;
}

/**
 * ptr_unmap() - clear every leaf in [@start, @end), then shoot down.
 * @mm:          the address space
 * @start:       first address
 * @end:         end (exclusive)
 * @dirty_pages: out, may be NULL: how many of the cleared leaves were dirty
 *
 * A huge leaf must be fully covered (-EINVAL otherwise, nothing changed).  Tables stay (rule 7).
 * Return: the number of leaves cleared, or -errno (-EINVAL/-ERANGE/-EDOM, -ESTALE).
 * Locking: a PTR_WALK_LEAF_LOCKED walk (each leaf cleared under its table's lock); the
 * shootdown after every lock is dropped.  Call with no table lock held.
 */
int64_t ptr_unmap(struct ptr_mm *mm, uint64_t start, uint64_t end, uint64_t *dirty_pages)
{
	int rc = check_range(mm->geo, start, end);
	if (!rc)
		rc = check_straddle(mm, start, end);
	if (rc)
		return rc;
	return unmap_nolock_flush(mm, start, end, dirty_pages, true);
}

static int protect_leaf_cb(struct ptr_walk *w, void *t, uint32_t i, int level, uint64_t a,
			   uint64_t n)
{
	const struct ptr_geometry *g = w->mm->geo;
	struct unmap_priv *p = w->priv;
	uint64_t old = ptr_entry_load(g, level, t, i), neu;
	do {
		if (!ptr_entry_is_leaf(g, level, old))
			return 0;
		if (ptr_entry_writable(g, old) == p->writable)
			return 0;
		neu = old;
		if (g->arch == PTR_ARCH_X86) {
			neu = p->writable ? neu | g->e_write : neu & ~g->e_write;
		} else if (p->writable) {
			neu |= g->e_dbm; /* writable-clean; a software-dirty page stays dirty */
		} else {
			if (ptr_entry_dirty(g, neu))
				neu |= g->e_swdirty; /* keep dirtiness once AP[2] is set */
			neu = (neu | g->e_rdonly) & ~g->e_dbm;
		}
	} while (!ptr_entry_cas(g, level, t, i, &old, neu));
	p->leaves++;
	return 0;
}

static const struct ptr_walk_ops protect_ops = { .leaf = protect_leaf_cb,
						 .lock = PTR_WALK_LEAF_LOCKED };

/**
 * ptr_protect() - set the writability of every leaf in [@start, @end); shoot down on a
 * downgrade, so CPUs stop writing through cached writable entries.
 * @mm:       the address space
 * @start:    first address
 * @end:      end (exclusive)
 * @writable: the new writability
 *
 * arm64: a dirty page made read-only keeps its dirtiness in the software dirty bit.
 * Return: the number of leaves changed, or -errno (as ptr_unmap()).
 * Locking: as ptr_unmap().
 */
int64_t ptr_protect(struct ptr_mm *mm, uint64_t start, uint64_t end, bool writable)
{
	int rc = check_range(mm->geo, start, end);
	if (!rc)
		rc = check_straddle(mm, start, end);
	if (rc)
		return rc;
	struct unmap_priv p = { .writable = writable };
	struct ptr_walk w = { .mm = mm, .ops = &protect_ops, .priv = &p };
	rc = ptr_walk_range(&w, start, end);
	if (p.leaves && !writable)
		ptr_shootdown(mm, false); /* CPUs must stop writing through cached entries */
	return rc < 0 ? rc : p.leaves;
}

/* ---- translate and the A/D consumers --------------------------------------------------------- */

/*
 * translate_in_section() - ptr_translate() for a caller that is already inside a read-side
 * section (a CPU inside an access, or a ptr_read_lock() holder): the fault path's final
 * permission check, which must not pay for a second, nested section.
 */
static int translate_in_section(struct ptr_mm *mm, uint64_t va, struct ptr_translation *out)
{
	const struct ptr_geometry *g = mm->geo;
	struct ptr_path p;
	int level = ptr_walk_leaf(mm, va, &p);
	if (level < 0)
		return level;
	uint64_t e = p.entry;
	if (!ptr_entry_is_leaf(g, level, e))
		return -ENOENT;
	uint64_t size = ptr_level_size(g, level);
	*out = (struct ptr_translation){
		.phys = ptr_entry_phys(g, level, e) + (va & (size - 1)),
		.page_size = size, .entry = e, .table = p.frame[level], .level = level,
		.writable = ptr_entry_writable(g, e), .young = ptr_entry_young(g, e),
		.dirty = ptr_entry_dirty(g, e) };
	return 0;
}

/**
 * ptr_translate() - lockless software walk of @va.
 * @mm:  the address space
 * @va:  the address
 * @out: the translation (phys, page size, raw leaf, its table and level, W/A/D)
 *
 * Return: 0 (mapped), -ENOENT (not mapped), -ERANGE/-EDOM (bad address), -ESTALE (the walk met
 * a freed frame; counted in freed_frame_accesses).  Every software walk reports a freed frame
 * with -ESTALE.
 * Locking: none taken; enters a read-side section of its own (so not for a caller inside one:
 * the fault path uses translate_in_section()).
 */
int ptr_translate(struct ptr_mm *mm, uint64_t va, struct ptr_translation *out)
{
	int rc = ptr_va_check(mm->geo, va);
	if (rc)
		return rc;
	int tok = PTR_READ_LOCK(mm->arena);
	rc = translate_in_section(mm, va, out);
	PTR_READ_UNLOCK(mm->arena, tok);
	(void)tok;
	return rc;
}

/* Find va's leaf, lock its table (rewalking if relocating) and apply @op under the lock. */
static int with_locked_leaf(struct ptr_mm *mm, uint64_t va,
			    int (*op)(struct ptr_mm *, void *, uint32_t, int))
{
	const struct ptr_geometry *g = mm->geo;
	int rc = ptr_va_check(g, va);
	if (rc)
		return rc;
	int tok = PTR_READ_LOCK(mm->arena);
	for (;;) {
		struct ptr_path p;
		int level = ptr_path_walk(mm, va, 0, &p);
		if (level < 0) {
			rc = level;
			break;
		}
		uint32_t t = p.frame[level];
		ptr_spinlock_t *lock;
		rc = lock_table(mm, NULL, level, va, &t, &lock);
		if (rc == -EAGAIN)
			continue;
		if (rc)
			break;
		uint32_t idx = ptr_index(g, level, va);
		void *tp = fdata(mm, t);
		uint64_t e = ptr_entry_load(g, level, tp, idx);
		if (ptr_entry_is_table(g, level, e)) { /* populated meanwhile: go deeper */
			ptr_unlock(lock);
			continue;
		}
		rc = ptr_entry_is_leaf(g, level, e) ? op(mm, tp, idx, level) : -ENOENT;
		ptr_unlock(lock);
		break;
	}
	PTR_READ_UNLOCK(mm->arena, tok);
	(void)tok;
	return rc;
}

static int clear_young_op(struct ptr_mm *mm, void *t, uint32_t idx, int level)
{
	const struct ptr_geometry *g = mm->geo;
	return (ptr_entry_and(g, level, t, idx, ~g->e_accessed) & g->e_accessed) ? 1 : 0;
}

static int clear_dirty_op(struct ptr_mm *mm, void *t, uint32_t idx, int level)
{
	const struct ptr_geometry *g = mm->geo;
	if (g->arch == PTR_ARCH_X86)
		return (ptr_entry_and(g, level, t, idx, ~g->e_dirty) & g->e_dirty) ? 1 : 0;
	uint64_t old = ptr_entry_load(g, level, t, idx), neu;
	do {
		if (!ptr_entry_dirty(g, old))
			return 0;
		neu = old & ~g->e_swdirty;
		if (neu & g->e_dbm)
			neu |= g->e_rdonly; /* back to writable-clean */
	} while (!ptr_entry_cas(g, level, t, idx, &old, neu));
	return 1;
}

/**
 * ptr_test_and_clear_young() - the software consumer of the accessed bit (reclaim's aging):
 * atomically clear A on @va's leaf and report whether it was set.
 * @mm: the address space
 * @va: the address
 *
 * The caller flushes when it wants the next access to walk (ptep_clear_flush_young).
 * Return: 1 was set, 0 was clear, -ENOENT not mapped, -ERANGE/-EDOM, -ESTALE.
 * Locking: takes the leaf table's lock (rule 1; page_table_lock for a leaf at level >= 2),
 * rewalking if relocating, so it never reads a new copy before the merge.  In its own section.
 */
int ptr_test_and_clear_young(struct ptr_mm *mm, uint64_t va)
{
	return with_locked_leaf(mm, va, clear_young_op);
}

/**
 * ptr_test_and_clear_dirty() - the software consumer of the dirty bit (writeback): clear D on
 * @va's leaf, report whether it was set, and then (when it was) shoot down, so CPUs holding a
 * dirty-known TLB entry set D again on their next write.
 * @mm: the address space
 * @va: the address
 *
 * A write that completed before the call returned is reported by this call or an earlier one,
 * never lost - also across a relocation (the merge runs under the lock taken here).
 * Return: 1 was set, 0 was clear, -ENOENT not mapped, -ERANGE/-EDOM, -ESTALE.
 * Locking: as ptr_test_and_clear_young(); the shootdown after the lock is dropped.
 */
int ptr_test_and_clear_dirty(struct ptr_mm *mm, uint64_t va)
{
	int rc = with_locked_leaf(mm, va, clear_dirty_op);
	if (rc == 1)
		ptr_shootdown(mm, false); /* drop dirty-known TLB entries: next write sets D */
	return rc;
}

/* ---- sharing and repointing ----------------------------------------------------------------- */

/**
 * ptr_share_table() - hugetlb-style sharing: link into @dst the level-@level table that covers
 * @va in @src (sharers++ on it).
 * @dst:   the address space that gets the link; its parent entry must be empty (the upper
 *         tables are created as needed)
 * @src:   the address space that has the table
 * @va:    an address the table covers
 * @level: 0 or 1
 *
 * Return: 0; -ENOENT (no such table in @src), -EEXIST (@dst's entry is not empty), -EINVAL
 * (other arena, same mm, bad level, PAE's fixed PDPTE level), -ERANGE/-EDOM, -EAGAIN (the
 * table kept moving under it: 16 relocations in a row), allocation errors.
 * Locking: in its own read-side section; takes @dst's parent-table lock, then the shared
 * table's own lock, for the link (a relocation checks sharers and moves under the latter).
 */
int ptr_share_table(struct ptr_mm *dst, struct ptr_mm *src, uint64_t va, int level)
{
	const struct ptr_geometry *g = src->geo;
	struct ptr_arena *a = src->arena;
	if (dst->arena != a || dst == src || level < 0 || level > 1 || level + 1 > TOP(g))
		return -EINVAL;
	if (g->top_preloaded && level + 1 == TOP(g))
		return -EINVAL; /* PAE PDPTEs are fixed at mm creation */
	int rc = ptr_va_check(g, va);
	if (rc)
		return rc;
	int tok = PTR_READ_LOCK(a);
	for (int tries = 0;; tries++) {
		struct ptr_path p;
		rc = ptr_path_find(src, va, level, &p);
		uint32_t shared = p.frame[level];
		uint32_t parent;
		if (rc >= 0)
			rc = descend(dst, NULL, va, level + 1, dst->node, &parent);
		if (rc < 0)
			break;
		ptr_spinlock_t *lock;
		rc = lock_table(dst, NULL, level + 1, va, &parent, &lock);
		if (rc)
			break;
		/*
		 * The shared table's own lock, then its path again: a relocation of @src moves the
		 * table under this lock (it holds it from its locked sharer check to the repoint), so
		 * either it saw sharers go up and leaves the table alone, or it has repointed @src
		 * and the path now leads to the copy - link that one instead.  Without it, @dst
		 * could link the old copy after the relocation's check and keep it past its free.
		 * (Frame @shared cannot be freed meanwhile: we are in a read-side section.)
		 * Order: @dst's parent-table lock, then a table one level down (rule 3).
		 */
		ptr_spinlock_t *slock = table_lock(src, level, shared);
		ptr_lock(slock, NULL);
		struct ptr_path now;
		if (ptr_path_find(src, va, level, &now) < 0 || now.frame[level] != shared) {
			ptr_unlock(slock);
			ptr_unlock(lock);
			if (tries < 16)
				continue; /* moved under us: once per relocation, and they serialize */
			rc = -EAGAIN;
			break;
		}
		uint64_t expected = 0;
#if PTR_RELOCATION
		/* before the link: a relocation that can see it scans both trees */
		atomic_store(&dst->shared_ever, true);
		atomic_store(&src->shared_ever, true);
#endif
		atomic_fetch_add(&a->frames[shared].sharers, 1);
		if (!ptr_entry_cas(g, level + 1, fdata(dst, parent), ptr_index(g, level + 1, va),
				   &expected,
				   ptr_entry_make_table(g, level + 1, ptr_frame_phys(a, shared)))) {
			atomic_fetch_sub(&a->frames[shared].sharers, 1);
			rc = -EEXIST;
		}
		ptr_unlock(slock);
		ptr_unlock(lock);
		break;
	}
	PTR_READ_UNLOCK(a, tok);
	(void)tok;
	return rc < 0 ? rc : 0;
}

/**
 * ptr_repoint() - TEST/RELOCATION HELPER: copy the level-@level table covering @va to a new
 * frame on @node and repoint its parent entry (or the root) WITHOUT any shootdown, merge or
 * free.  Lets tests build the stale-paging-structure-cache scenario by hand.
 * @mm:        the address space
 * @va:        an address the table covers
 * @level:     its level
 * @node:      the pool of the copy
 * @old_frame: out: the old frame - unlinked, LIMBO in the relocation build (LIVE otherwise)
 * @new_frame: out: the copy
 *
 * Return: 0; -EINVAL (level/node), -ERANGE/-EDOM, -ENOENT (no such table), -EBUSY (shared),
 * allocation errors.
 * Locking: takes the parent's lock, then the table's (rule 3), in its own read-side section.
 */
int ptr_repoint(struct ptr_mm *mm, uint64_t va, int level, int node, uint32_t *old_frame,
		uint32_t *new_frame)
{
	const struct ptr_geometry *g = mm->geo;
	struct ptr_arena *a = mm->arena;
	if (level < 0 || level > TOP(g) || node < 0 || node >= a->nnodes)
		return -EINVAL;
	int rc = ptr_va_check(g, va);
	if (rc)
		return rc;
	uint32_t fresh;
	rc = ptr_frame_alloc(a, node, level, &fresh);
	if (rc)
		return rc;
	int tok = PTR_READ_LOCK(a);
	struct ptr_path p;
	rc = ptr_path_find(mm, va, level, &p);
	const uint32_t *frames = p.frame;
	uint32_t old = frames[level];
	if (rc >= 0 && atomic_load(&a->frames[old].sharers) > 1)
		rc = -EBUSY;
	if (rc < 0) {
		PTR_READ_UNLOCK(a, tok);
		ptr_frame_free(a, fresh);
		return rc;
	}
	/* parent's lock, then the table's (rule 3); at levels >= 2 both are page_table_lock */
	ptr_spinlock_t *plock = level == TOP(g) ? &mm->page_table_lock
						: table_lock(mm, level + 1, frames[level + 1]);
	ptr_spinlock_t *tlock = table_lock(mm, level, old);
	ptr_lock(plock, NULL);
	if (tlock != plock)
		ptr_lock(tlock, NULL);
	void *src = fdata(mm, old), *dstp = fdata(mm, fresh);
	for (uint32_t i = 0; i < (1u << g->level[level].bits); i++)
		ptr_entry_store(g, level, dstp, i, ptr_entry_load(g, level, src, i));
	atomic_store(&a->frames[fresh].base_va, atomic_load(&a->frames[old].base_va));
	if (level == TOP(g)) {
		atomic_store(&mm->root, fresh);
	} else {
		uint64_t pe = ptr_entry_load(g, level + 1, fdata(mm, frames[level + 1]),
					     ptr_index(g, level + 1, va));
		uint64_t ne = (pe & ~g->e_addr) | ptr_frame_phys(a, fresh);
		ptr_entry_store(g, level + 1, fdata(mm, frames[level + 1]),
				ptr_index(g, level + 1, va), ne);
	}
#if PTR_RELOCATION
	ptr_frame_limbo(a, old);
	if (!atomic_load(&mm->shared_ever)) {
		ptr_lock(&mm->tables_lock, NULL);
		ptr_mm_tables_replace_locked(mm, old, fresh);
		ptr_unlock(&mm->tables_lock);
	}
#endif
	if (tlock != plock)
		ptr_unlock(tlock);
	ptr_unlock(plock);
	PTR_READ_UNLOCK(a, tok);
	(void)tok;
	*old_frame = old;
	*new_frame = fresh;
	return 0;
}

/* ---- counting ------------------------------------------------------------------------------- */

struct count_priv {
	uint32_t *counts;
	uint32_t (*per_node)[PTR_MAX_LEVELS];
};

/* Counting is an ops table: every table once per link to it (shared ones per sharer). */
static int count_post_cb(struct ptr_walk *w, uint32_t frame, int level, uint64_t a, uint64_t e)
{
	struct count_priv *c = w->priv;
	c->counts[level]++;
	if (c->per_node)
		c->per_node[w->mm->arena->frames[frame].node][level]++;
	return 0;
}

/* a FREE frame linked from the tree (a protocol bug) is not counted and not descended into */
static int count_table_cb(struct ptr_walk *w, void *t, uint32_t i, int level, uint64_t a,
			  uint64_t n)
{
	struct ptr_mm *mm = w->mm;
	uint32_t child = entry_child(mm, level, ptr_entry_load(mm->geo, level, t, i));
	if (!ptr_frame_live(mm->arena, child))
		w->action = PTR_WALK_CONTINUE;
	return 0;
}

static const struct ptr_walk_ops count_ops = { .table = count_table_cb,
					       .post_table = count_post_cb,
					       .lock = PTR_WALK_LOCKLESS };

/**
 * ptr_mm_count_tables() - per-level counts of the tables reachable from @mm's root.
 * @mm:       the address space
 * @counts:   out: tables per level (a shared table counts once per mm linking it)
 * @per_node: out, may be NULL: the same per arena node
 *
 * Return: 0 (a FREE frame linked from the tree - a protocol bug - is left out).
 * Locking: none needed; a lockless walk in its own read-side section.
 */
int ptr_mm_count_tables(struct ptr_mm *mm, uint32_t counts[PTR_MAX_LEVELS],
			uint32_t per_node[PTR_MAX_NODES][PTR_MAX_LEVELS])
{
	memset(counts, 0, sizeof(uint32_t) * PTR_MAX_LEVELS);
	if (per_node)
		memset(per_node, 0, sizeof(uint32_t) * PTR_MAX_NODES * PTR_MAX_LEVELS);
	struct count_priv c = { counts, per_node };
	struct ptr_walk w = { .mm = mm, .ops = &count_ops, .priv = &c };
	ptr_walk_tree(&w);
	return 0;
}

/**
 * ptr_mm_root() - the current root frame of @mm.
 * @mm: the address space
 *
 * Return: the frame (it changes only by a relocation, under page_table_lock).
 * Locking: none; an atomic load.
 */
uint32_t ptr_mm_root(struct ptr_mm *mm)
{
	return atomic_load(&mm->root);
}

/**
 * ptr_table_entry() - raw entry @index of the level-@level table in frame @f (tests: read a
 * stale copy).
 * @a:     the arena
 * @f:     the frame
 * @level: the level its table is read as
 * @index: the entry
 *
 * Return: the entry; 0 when out of range.
 * Locking: none; an atomic load of whatever the frame holds (poison, when FREE).
 */
uint64_t ptr_table_entry(struct ptr_arena *a, uint32_t f, int level, uint32_t index)
{
	const struct ptr_geometry *g = a->geo;
	if (f >= a->nframes || level < 0 || level >= g->nlevels ||
	    index >= (1u << g->level[level].bits))
		return 0;
	return ptr_entry_load(g, level, ptr_frame_data(a, f), index);
}
