/*
 * arena.c - per-node pools of table frames in one mmap'd region.
 *
 * One anonymous MAP_NORESERVE mapping is sliced into nnodes pools; each pool whose node is real
 * is bound with mbind(MPOL_BIND) before any of its pages is touched, so the first write (the
 * zeroing at allocation) faults the page in on that node - move_pages(2) in query mode confirms
 * it.  A virtual node's pool is left unbound (it lives wherever the kernel puts it).
 *
 * Frame contents are written with relaxed atomic stores (zeroing and poisoning), because under
 * a broken protocol a stale walker may read a table concurrently; the walker then detects the
 * FREE state or the poison and counts it, and ThreadSanitizer sees no plain data race.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ptreloc.h"

#define MPOL_BIND_MODE 2
#define NODEMASK_LONGS 16 /* 1024 nodes */

static int bind_range(void *addr, size_t len, int node)
{
	unsigned long mask[NODEMASK_LONGS] = { 0 };
	if (node < 0 || node >= NODEMASK_LONGS * 64)
		return -EINVAL;
	mask[node / 64] = 1UL << (node % 64);
	/* maxnode is the number of bits plus one: the kernel decrements it before use. */
	long rc = syscall(SYS_mbind, addr, len, MPOL_BIND_MODE, mask,
			  (unsigned long)NODEMASK_LONGS * 64 + 1, 0UL);
	return rc == 0 ? 0 : -errno;
}

/**
 * ptr_arena_create() - map and bind an arena.
 * @geometry:        geometry name
 * @nnodes:          number of pools (1..PTR_MAX_NODES)
 * @bind_nodes:      per pool, the real NUMA node to mbind to, or -1 for a virtual node; NULL:
 *                   every pool virtual
 * @frames_per_node: slots reserved per pool (address space is reserved with MAP_NORESERVE and
 *                   faulted in on first use)
 * @out:             the arena
 *
 * Return: 0 and *@out; -EINVAL (unknown geometry, bad counts), -E2BIG (the format's entries
 * cannot address that many frames), -ENOMEM, or the -errno of mmap/mbind (nothing is left
 * mapped then).
 * Locking: none; the arena is not shared until this returns.
 */
int ptr_arena_create(const char *geometry, int nnodes, const int *bind_nodes,
		     uint32_t frames_per_node, struct ptr_arena **out)
{
	const struct ptr_geometry *g = ptr_geometry_find(geometry);
	if (!g || nnodes < 1 || nnodes > PTR_MAX_NODES || frames_per_node < 1 || !out)
		return -EINVAL;
	uint64_t nframes = (uint64_t)nnodes * frames_per_node;
	/* every frame's phys must be encodable in an entry of this format */
	if (nframes >= UINT32_MAX || nframes * g->frame_bytes > g->phys_limit)
		return -E2BIG;

	struct ptr_arena *a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->geo = g;
	a->frame_bytes = g->frame_bytes;
	a->nframes = (uint32_t)nframes;
	a->nnodes = nnodes;
	a->map_bytes = (size_t)nframes * g->frame_bytes;
	a->frames = calloc(nframes, sizeof(*a->frames));
	if (!a->frames) {
		free(a);
		return -ENOMEM;
	}
	void *base = mmap(NULL, a->map_bytes, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (base == MAP_FAILED) {
		int err = -errno;
		free(a->frames);
		free(a);
		return err;
	}
	a->base = base;
	for (int n = 0; n < nnodes; n++) {
		struct ptr_pool *p = &a->pool[n];
		p->bind_node = bind_nodes ? bind_nodes[n] : -1;
		p->first = (uint32_t)n * frames_per_node;
		p->nframes = frames_per_node;
		atomic_store(&p->capacity, frames_per_node);
		p->free_head = PTR_NO_FRAME;
		for (uint32_t i = 0; i < frames_per_node; i++)
			a->frames[p->first + i].node = (uint16_t)n;
		if (p->bind_node >= 0) {
			int rc = bind_range(a->base + (size_t)p->first * a->frame_bytes,
					    (size_t)frames_per_node * a->frame_bytes, p->bind_node);
			if (rc) {
				munmap(a->base, a->map_bytes);
				free(a->frames);
				free(a);
				return rc;
			}
		}
	}
	*out = a;
	return 0;
}

/**
 * ptr_arena_destroy() - unmap the arena and free it.
 * @a: the arena
 *
 * Return: 0; -EBUSY while any frame is in use or any CPU exists (nothing is freed then).
 * Locking: the caller owns @a: no other thread may use it any more.
 */
int ptr_arena_destroy(struct ptr_arena *a)
{
	if (atomic_load(&a->cpus_mask))
		return -EBUSY;
	for (int n = 0; n < a->nnodes; n++)
		if (atomic_load(&a->pool[n].in_use))
			return -EBUSY;
	munmap(a->base, a->map_bytes);
	free(a->frames);
	free(a);
	return 0;
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

/**
 * ptr_arena_prefault() - fault in the first @frames frames of pool @node now, in one call.
 * @a:      the arena
 * @node:   the pool
 * @frames: how many (more than the pool has: all of them)
 *
 * A pool hands out its never-used frames in order, so these are the next @frames frames a
 * build allocates there: madvise(MADV_POPULATE_WRITE) allocates their pages (under the pool's
 * mbind policy) in one pass through the kernel instead of one page fault at each table's first
 * store - ~half the cost per page (measured: 600 pages, 0.66 ms against 1.13 ms).  Only speed:
 * nothing depends on it having happened.
 *
 * Return: 0; -ENODEV (no such pool); the -errno of madvise(2) (-EINVAL before Linux 5.14).
 * Locking: none; it only touches the pool's memory, as a first store would.
 */
int ptr_arena_prefault(struct ptr_arena *a, int node, uint32_t frames)
{
	if (node < 0 || node >= a->nnodes)
		return -ENODEV;
	struct ptr_pool *p = &a->pool[node];
	uint32_t n = frames < p->nframes ? frames : p->nframes;
	if (!n)
		return 0;
	if (madvise(a->base + (size_t)p->first * a->frame_bytes, (size_t)n * a->frame_bytes,
		    MADV_POPULATE_WRITE))
		return -errno;
	return 0;
}

/**
 * ptr_arena_set_capacity() - limit pool @node to @frames frames, to provoke exhaustion.
 * @a:      the arena
 * @node:   the pool
 * @frames: the new limit; below the frames in use is allowed (no allocation succeeds then)
 *
 * Return: 0; -ENODEV (no such pool); -E2BIG (more than the pool has).
 * Locking: none; an atomic store, read by allocations under the pool lock.
 */
int ptr_arena_set_capacity(struct ptr_arena *a, int node, uint32_t frames)
{
	if (node < 0 || node >= a->nnodes)
		return -ENODEV;
	if (frames > a->pool[node].nframes)
		return -E2BIG;
	atomic_store(&a->pool[node].capacity, frames);
	return 0;
}

/**
 * ptr_arena_set_poison() - poison freed frames (@on, the default) or not.
 * @a:  the arena
 * @on: poison
 *
 * Poisoning is what makes an access to a freed frame detectable (stress, tests): turn it off
 * only to measure what it costs (the kernel poisons freed pages only in debug configurations).
 * Return: nothing.
 * Locking: a plain store: call it before the arena is shared with other threads.
 */
void ptr_arena_set_poison(struct ptr_arena *a, bool on)
{
	a->no_poison = !on;
}

/**
 * ptr_arena_fail_nth_alloc() - fault injection: the @k-th allocation from now fails with
 * -ENOMEM (then the knob disarms itself).
 * @a: the arena
 * @k: 1 = the next allocation; 0 disarms
 *
 * Allocations are counted only while the knob is armed (from 0 at arming): unarmed, an
 * allocation pays one relaxed load for it, not a locked add on a line every allocating thread
 * shares (the fault path's and each relocation batch's).
 * Return: nothing.
 * Locking: none; atomics (allocations claim the failure with a CAS, so exactly one fails).  An
 * allocation racing with the arming may count or not.
 */
void ptr_arena_fail_nth_alloc(struct ptr_arena *a, uint64_t k)
{
	atomic_store(&a->alloc_calls, 0);
	atomic_store(&a->fail_alloc_at, k);
}

static void fill_table(struct ptr_arena *a, uint32_t f, uint32_t bytes, uint64_t pattern)
{
	_Atomic uint64_t *w = (_Atomic uint64_t *)ptr_frame_data(a, f);
	for (uint32_t i = 0; i < bytes / 8; i++)
		atomic_store_explicit(&w[i], pattern, memory_order_relaxed);
}

/**
 * ptr_frame_alloc() - take a frame from pool @node for a level-@level table: zeroed, LIVE,
 * sharers 1.
 * @a:     the arena
 * @node:  the pool
 * @level: the level of the table the frame will hold
 * @out:   the frame index
 *
 * Return: 0 and *@out; -ENODEV (no such pool or level), -ENOSPC (pool at capacity), -ENOMEM
 * (injected failure).
 * Locking: takes the pool lock (innermost in the lock order, so any table lock may be held).
 */
int ptr_frame_alloc(struct ptr_arena *a, int node, int level, uint32_t *out)
{
	return ptr_frame_alloc_flags(a, node, level, 0, out);
}

/*
 * pool_add() - @v += @d (mod 2^32: a negated @d subtracts) for a counter of pool @p, with @p's
 * lock held.  Every writer of in_use, live[] and limbo holds that lock, so a plain load and
 * store do it; each counter stays _Atomic for the readers that load it without the lock
 * (ptr_arena_pool_info(), capacity checks).  A relocation of four tables made fifteen locked
 * read-modify-writes on these counters, each a full barrier on x86 that waits for the copy's
 * stores to drain; now only the pool lock's own.  A call without the lock (a lost update
 * waiting to happen, too rare to catch by racing) is counted in unlocked_writes - one relaxed
 * load of a line the lock holder owns - for the tests to find.
 */
static inline void pool_add(struct ptr_pool *p, _Atomic uint32_t *v, uint32_t d)
{
	if (unlikely(!atomic_load_explicit(&p->lock.locked, memory_order_relaxed)))
		atomic_fetch_add_explicit(&p->unlocked_writes, 1, memory_order_relaxed);
	atomic_store_explicit(v, atomic_load_explicit(v, memory_order_relaxed) + d,
			      memory_order_relaxed);
}

/* A free slot of pool @p taken off its free list (the lowest one with PTR_ALLOC_LOWEST in
 * @flags) or, with none free, the next never-used one; PTR_NO_FRAME when the pool has none.
 * The caller holds @p->lock and has checked the capacity. */
static uint32_t pool_take(struct ptr_arena *a, struct ptr_pool *p, unsigned int flags)
{
	uint32_t f;
	if ((flags & PTR_ALLOC_LOWEST) && p->free_head != PTR_NO_FRAME) {
		/* every free-list slot lies below first + bump, so the list's minimum is the lowest */
		uint32_t *link = &p->free_head, *best = link;
		while (*link != PTR_NO_FRAME) {
			if (*link < *best)
				best = link;
			link = &a->frames[*link].next_free;
		}
		f = *best;
		*best = a->frames[f].next_free;
	} else if (p->free_head != PTR_NO_FRAME) {
		f = p->free_head;
		p->free_head = a->frames[f].next_free;
	} else if (p->bump < p->nframes) {
		f = p->first + p->bump++;
	} else {
		f = PTR_NO_FRAME;
	}
	return f;
}

/**
 * ptr_frame_alloc_flags() - ptr_frame_alloc() with PTR_ALLOC_* @flags.
 * @a:     the arena
 * @node:  the pool
 * @level: the level of the table the frame will hold
 * @flags: PTR_ALLOC_NOZERO: leave the table bytes as they are - only for a caller that
 *         overwrites every one of them before the frame is linked anywhere (relocation's copy);
 *         PTR_ALLOC_LOWEST: the lowest-indexed free slot of the pool (compaction), found by a
 *         walk of the free list under the pool lock
 * @out:   the frame index
 *
 * Return: as ptr_frame_alloc().
 * Locking: as ptr_frame_alloc().
 */
int ptr_frame_alloc_flags(struct ptr_arena *a, int node, int level, unsigned int flags,
			  uint32_t *out)
{
	if (node < 0 || node >= a->nnodes || level < 0 || level >= a->geo->nlevels)
		return -ENODEV;
	struct ptr_pool *p = &a->pool[node];
	uint64_t at = atomic_load_explicit(&a->fail_alloc_at, memory_order_relaxed);
	if (unlikely(at) && atomic_fetch_add(&a->alloc_calls, 1) + 1 == at &&
	    atomic_compare_exchange_strong(&a->fail_alloc_at, &at, 0))
		return -ENOMEM;

	uint32_t f;
	ptr_lock(&p->lock, NULL);
	if (atomic_load(&p->in_use) >= atomic_load(&p->capacity)) {
		ptr_unlock(&p->lock);
		return -ENOSPC;
	}
	f = pool_take(a, p, flags);
	if (f == PTR_NO_FRAME) {
		ptr_unlock(&p->lock);
		return -ENOSPC;
	}
	pool_add(p, &p->in_use, 1);
	pool_add(p, &p->live[level], 1);
	ptr_unlock(&p->lock);

	struct ptr_frame *fr = &a->frames[f];
	if (!(flags & PTR_ALLOC_NOZERO))
		fill_table(a, f, ptr_table_bytes(a->geo, level), 0);
	fr->level = (uint8_t)level;
	/* relaxed: published with the release store of the state (and, for a reader of the
	 * table, by the entry store that links it) */
	atomic_store_explicit(&fr->sharers, 1, memory_order_relaxed);
	atomic_store_explicit(&fr->base_va, 0, memory_order_relaxed);
	atomic_store_explicit(&fr->state, PTR_FRAME_LIVE, memory_order_release);
	*out = f;
	return 0;
}

/**
 * ptr_frame_alloc_batch() - take @n frames from pool @node under ONE pool-lock hold: what @n
 * calls of ptr_frame_alloc_flags() would take, for tables of the levels @levels[0..@n).
 * @a:      the arena
 * @node:   the pool
 * @levels: the level of each table, @n of them
 * @n:      how many frames (0: nothing to do)
 * @flags:  PTR_ALLOC_* as ptr_frame_alloc_flags()
 * @out:    the frames, @n of them; on a failure the first *@got are allocated (in order)
 * @got:    out: how many frames were allocated
 *
 * Exactly as @n calls in a row: the fault-injection counter advances by the frames asked up
 * to the one that fails (the k-th allocation from ptr_arena_fail_nth_alloc() fails even when
 * it falls inside a batch), the capacity is checked frame by frame, and a failure leaves the
 * frames before it allocated (the caller gives them back).  One lock round trip, one in_use
 * update and one live[] update per level instead of one of each per frame: a relocation takes a
 * whole batch of targets at once (at 64 GiB mapped the per-frame calls were 6 % of it).
 * Return: 0; -ENODEV (no such pool or level), -ENOSPC (pool at capacity), -ENOMEM (injected),
 * with *@got frames taken before the failure.
 * Locking: takes the pool lock once (innermost, as ptr_frame_alloc()).
 */
int ptr_frame_alloc_batch(struct ptr_arena *a, int node, const uint8_t *levels, uint32_t n,
			  unsigned int flags, uint32_t *out, uint32_t *got)
{
	*got = 0;
	if (!n)
		return 0;
	if (node < 0 || node >= a->nnodes)
		return -ENODEV;
	for (uint32_t i = 0; i < n; i++)
		if (levels[i] >= a->geo->nlevels)
			return -ENODEV;
	struct ptr_pool *p = &a->pool[node];
	/* the injected failure: the k-th call of the n this batch stands for */
	uint32_t want = n;
	int fail = 0;
	uint64_t at = atomic_load_explicit(&a->fail_alloc_at, memory_order_relaxed);
	uint64_t n0 = unlikely(at) ? atomic_fetch_add(&a->alloc_calls, n) : 0;
	if (unlikely(at) && at > n0 && at <= n0 + n &&
	    atomic_compare_exchange_strong(&a->fail_alloc_at, &at, 0)) {
		want = (uint32_t)(at - n0 - 1);
		fail = -ENOMEM;
		/* the calls after the failed one were never made */
		atomic_fetch_sub(&a->alloc_calls, n - want - 1);
	}

	uint32_t k = 0;
	ptr_lock(&p->lock, NULL);
	uint32_t room = atomic_load(&p->capacity), used = atomic_load(&p->in_use);
	for (; k < want; k++) {
		uint32_t f;
		if (used + k >= room) {
			fail = -ENOSPC;
			break;
		}
		f = pool_take(a, p, flags);
		if (f == PTR_NO_FRAME) {
			fail = -ENOSPC;
			break;
		}
		out[k] = f;
	}
	pool_add(p, &p->in_use, k);
	uint32_t per_level[PTR_MAX_LEVELS] = { 0 };
	for (uint32_t i = 0; i < k; i++)
		per_level[levels[i]]++;
	for (int l = 0; l < a->geo->nlevels; l++)
		if (per_level[l])
			pool_add(p, &p->live[l], per_level[l]);
	ptr_unlock(&p->lock);

	for (uint32_t i = 0; i < k; i++) {
		struct ptr_frame *fr = &a->frames[out[i]];
		if (!(flags & PTR_ALLOC_NOZERO))
			fill_table(a, out[i], ptr_table_bytes(a->geo, levels[i]), 0);
		fr->level = levels[i];
		/* relaxed: published with the release store of the state (and, for a reader
		 * of the table, by the entry store that links it) */
		atomic_store_explicit(&fr->sharers, 1, memory_order_relaxed);
		atomic_store_explicit(&fr->base_va, 0, memory_order_relaxed);
		atomic_store_explicit(&fr->state, PTR_FRAME_LIVE, memory_order_release);
	}
	*got = k;
	return k == n ? 0 : fail;
}

/**
 * ptr_frame_free_batch() - ptr_frame_free() of the @n frames @f[0..@n), with one pool-lock
 * hold per run of frames of the same pool.
 * @a: the arena
 * @f: the frames; entries that are PTR_NO_FRAME or FREE are skipped, as ptr_frame_free() does
 * @n: how many
 *
 * Every frame goes FREE (poisoned unless poisoning is off) before any of them reaches a free
 * list, as ptr_frame_free() orders it.  A run of one pool is pushed in reverse, so the pool's
 * next allocations hand the frames out in the order they were given here.
 * Return: nothing.
 * Locking: takes each pool's lock (innermost).  The frames must be unreachable, as for
 * ptr_frame_free().
 */
void ptr_frame_free_batch(struct ptr_arena *a, uint32_t *f, uint32_t n)
{
	uint32_t live[PTR_MAX_NODES][PTR_MAX_LEVELS] = { { 0 } }, limbo[PTR_MAX_NODES] = { 0 };
	uint32_t kept = 0;
	for (uint32_t i = 0; i < n; i++) {
		if (f[i] >= a->nframes)
			continue;
		struct ptr_frame *fr = &a->frames[f[i]];
		int state = atomic_load_explicit(&fr->state, memory_order_acquire);
		if (state == PTR_FRAME_FREE)
			continue;
		if (!a->no_poison)
			fill_table(a, f[i], ptr_table_bytes(a->geo, fr->level),
				   0x0101010101010101ULL * PTR_POISON_BYTE);
		atomic_store_explicit(&fr->state, PTR_FRAME_FREE, memory_order_release);
		if (state == PTR_FRAME_LIVE)
			live[fr->node][fr->level]++;
		else
			limbo[fr->node]++;
		f[kept++] = f[i]; /* compacted in place: the frames this call really frees */
	}
	for (uint32_t end = kept; end > 0;) {
		/* the run [start, end) of one pool, pushed last frame first */
		int nd = a->frames[f[end - 1]].node;
		uint32_t start = end - 1;
		while (start > 0 && a->frames[f[start - 1]].node == nd)
			start--;
		struct ptr_pool *p = &a->pool[nd];
		ptr_lock(&p->lock, NULL);
		for (uint32_t i = end; i-- > start;) {
			a->frames[f[i]].next_free = p->free_head;
			p->free_head = f[i];
		}
		pool_add(p, &p->in_use, -(end - start));
		/* the pool's level and limbo counts, at its first run */
		for (int l = 0; l < a->geo->nlevels; l++) {
			pool_add(p, &p->live[l], -live[nd][l]);
			live[nd][l] = 0;
		}
		pool_add(p, &p->limbo, -limbo[nd]);
		limbo[nd] = 0;
		ptr_unlock(&p->lock);
		end = start;
	}
}

/**
 * ptr_frame_free() - poison the table bytes and return a LIVE or LIMBO frame to its pool.
 * @a: the arena
 * @f: the frame; PTR_NO_FRAME or a FREE frame: nothing to do (error paths free blindly)
 *
 * The state goes FREE before the frame reaches the free list, so a lockless walker that still
 * reads it counts a freed-frame access instead of reading a reused table unnoticed.
 * Return: nothing.
 * Locking: takes the pool lock.  The frame must be unreachable: unlinked, and - if it was ever
 * linked - a grace period (ptr_synchronize()) after the unlink.
 */
void ptr_frame_free(struct ptr_arena *a, uint32_t f)
{
	if (f >= a->nframes)
		return; /* PTR_NO_FRAME: an error path with nothing allocated yet */
	struct ptr_frame *fr = &a->frames[f];
	struct ptr_pool *p = &a->pool[fr->node];
	int state = atomic_load(&fr->state);
	if (state == PTR_FRAME_FREE)
		return;
	if (!a->no_poison)
		fill_table(a, f, ptr_table_bytes(a->geo, fr->level),
			   0x0101010101010101ULL * PTR_POISON_BYTE);
	atomic_store_explicit(&fr->state, PTR_FRAME_FREE, memory_order_release);
	ptr_lock(&p->lock, NULL);
	pool_add(p, state == PTR_FRAME_LIVE ? &p->live[fr->level] : &p->limbo, -1u);
	fr->next_free = p->free_head;
	p->free_head = f;
	pool_add(p, &p->in_use, -1u);
	ptr_unlock(&p->lock);
}

#if PTR_RELOCATION
/**
 * ptr_frame_limbo() - LIVE -> LIMBO: the frame was unlinked by a relocation and is freed after
 * a grace period (ptr_synchronize()); lockless readers may read it until then.
 * @a: the arena
 * @f: the frame
 *
 * Return: nothing (a frame that is not LIVE is left alone).
 * Locking: a CAS on the state, then the pool lock for the counters (innermost).  The caller
 * holds the lock that covered the unlink.
 */
void ptr_frame_limbo(struct ptr_arena *a, uint32_t f)
{
	struct ptr_frame *fr = &a->frames[f];
	uint8_t live = PTR_FRAME_LIVE;
	if (atomic_compare_exchange_strong(&fr->state, &live, PTR_FRAME_LIMBO)) {
		struct ptr_pool *p = &a->pool[fr->node];
		ptr_lock(&p->lock, NULL);
		pool_add(p, &p->live[fr->level], -1u);
		pool_add(p, &p->limbo, 1);
		ptr_unlock(&p->lock);
	}
}

/**
 * ptr_frame_limbo_batch() - ptr_frame_limbo() of the @n frames @f[0..@n), with the pool
 * counters updated once per pool and level rather than per frame.
 * @a: the arena
 * @f: the frames
 * @n: how many
 *
 * Return: nothing (a frame that is not LIVE is left alone).
 * Locking: the pool lock of each pool with a frame here, once (innermost).  The caller holds
 * the locks that covered the unlinks.
 */
void ptr_frame_limbo_batch(struct ptr_arena *a, const uint32_t *f, uint32_t n)
{
	uint32_t live[PTR_MAX_NODES][PTR_MAX_LEVELS] = { { 0 } }, limbo[PTR_MAX_NODES] = { 0 };
	for (uint32_t i = 0; i < n; i++) {
		struct ptr_frame *fr = &a->frames[f[i]];
		/* no CAS: only the relocation that unlinked a LIVE frame, holding the lock that
		 * covered the unlink, changes its state now (a FREE frame is never linked and a
		 * LIMBO one is freed only after its grace period, by the same relocation) */
		if (atomic_load_explicit(&fr->state, memory_order_relaxed) != PTR_FRAME_LIVE)
			continue;
		atomic_store_explicit(&fr->state, PTR_FRAME_LIMBO, memory_order_release);
		live[fr->node][fr->level]++;
		limbo[fr->node]++;
	}
	for (int nd = 0; nd < a->nnodes; nd++) {
		if (!limbo[nd])
			continue;
		struct ptr_pool *p = &a->pool[nd];
		ptr_lock(&p->lock, NULL); /* the counters' writers hold it (pool_add()) */
		for (int l = 0; l < a->geo->nlevels; l++)
			pool_add(p, &p->live[l], -live[nd][l]);
		pool_add(p, &p->limbo, limbo[nd]);
		ptr_unlock(&p->lock);
	}
}
#endif

/**
 * ptr_arena_pool_info() - a plain snapshot of pool @node for Python.
 * @a:    the arena
 * @node: the pool
 * @out:  the snapshot
 *
 * Return: 0; -ENODEV (no such pool).
 * Locking: none; counters are read one by one, so under concurrent allocation the snapshot
 * need not add up.
 */
int ptr_arena_pool_info(struct ptr_arena *a, int node, struct ptr_pool_info *out)
{
	if (node < 0 || node >= a->nnodes)
		return -ENODEV;
	struct ptr_pool *p = &a->pool[node];
	out->bind_node = p->bind_node;
	out->mbind_errno = p->mbind_errno;
	out->nframes = p->nframes;
	out->capacity = atomic_load(&p->capacity);
	out->in_use = atomic_load(&p->in_use);
	out->limbo = atomic_load(&p->limbo);
	for (int l = 0; l < PTR_MAX_LEVELS; l++)
		out->live[l] = atomic_load(&p->live[l]);
	out->unlocked_writes = atomic_load(&p->unlocked_writes);
	return 0;
}

/**
 * ptr_arena_freed_frame_accesses() - walks (CPU or software) that met a FREE frame so far.
 * @a: the arena
 *
 * Return: the count (0 under a correct protocol).
 * Locking: none; an atomic load.
 */
uint64_t ptr_arena_freed_frame_accesses(struct ptr_arena *a)
{
	return atomic_load(&a->freed_frame_accesses);
}

/**
 * ptr_frame_info() - state, level, node and sharers of frame @f (tests, relocation reports).
 * @a:       the arena
 * @f:       the frame
 * @state:   out: PTR_FRAME_*
 * @level:   out: level of the table it holds (meaningless when FREE)
 * @node:    out: the pool it belongs to
 * @sharers: out: links to it
 *
 * Return: 0; -EINVAL (no such frame).
 * Locking: none; a racy snapshot.
 */
int ptr_frame_info(struct ptr_arena *a, uint32_t f, int *state, int *level, int *node,
		   int *sharers)
{
	if (f >= a->nframes)
		return -EINVAL;
	struct ptr_frame *fr = &a->frames[f];
	*state = atomic_load(&fr->state);
	*level = fr->level;
	*node = fr->node;
	*sharers = atomic_load(&fr->sharers);
	return 0;
}

/**
 * ptr_frame_address() - the address of frame @f's bytes in this process (move_pages(2)
 * queries of where a pool really lives).
 * @a: the arena
 * @f: the frame
 *
 * Return: the address; 0 for no such frame.
 * Locking: none.
 */
uintptr_t ptr_frame_address(struct ptr_arena *a, uint32_t f)
{
	return f < a->nframes ? (uintptr_t)ptr_frame_data(a, f) : 0;
}

/**
 * ptr_arena_pool_runs() - how fragmented pool @node is: used slots, the largest free run, the
 * free 2 MiB-aligned runs of frames (struct ptr_pool_runs).
 * @a:    the arena
 * @node: the pool
 * @out:  the figures
 *
 * Alignment is by the frame's phys (frame index * frame size), the address an entry holds.
 * Return: 0; -ENODEV (no such pool).
 * Locking: none; a scan of the frames' states with atomic loads, so under concurrent
 * allocation it is a snapshot that need not be consistent.
 */
int ptr_arena_pool_runs(struct ptr_arena *a, int node, struct ptr_pool_runs *out)
{
	if (!a || !out || node < 0 || node >= a->nnodes)
		return -ENODEV;
	const struct ptr_pool *p = &a->pool[node];
	uint32_t rf = (uint32_t)((2u << 20) / a->frame_bytes);
	memset(out, 0, sizeof(*out));
	out->nframes = p->nframes;
	out->run_frames = rf ? rf : 1;
	uint32_t run = 0, aligned_used = 0;
	for (uint32_t i = 0; i < p->nframes; i++) {
		uint32_t f = p->first + i;
		bool used = atomic_load_explicit(&a->frames[f].state, memory_order_relaxed) !=
			    PTR_FRAME_FREE;
		if (f % out->run_frames == 0)
			aligned_used = 0;
		if (used) {
			out->used++;
			out->high_water = i + 1;
			run = 0;
			aligned_used++;
		} else if (++run > out->largest_free_run) {
			out->largest_free_run = run;
		}
		/* the last slot of an aligned run that began inside the pool */
		if ((f + 1) % out->run_frames == 0 && f + 1 >= p->first + out->run_frames) {
			out->runs++;
			if (!aligned_used)
				out->free_runs++;
		}
	}
	out->packed = out->high_water == out->used;
	return 0;
}
