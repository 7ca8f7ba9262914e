/*
 * arena.h - the arena: one mmap'd region of table frames in per-node pools (arena.c).
 *
 * Functions are documented (kernel-doc: arguments, Return:, Locking:) at their definitions in
 * arena.c; static inline ones here.
 */
#ifndef PTRELOC_ARENA_H
#define PTRELOC_ARENA_H

#include <errno.h>

#include "geometry.h"
#include "lock.h"

struct ptr_cpu;

/* ------------------------------------------------------------------------------------------ */
/* Arena (arena.c)                                                                             */
/* ------------------------------------------------------------------------------------------ */

enum ptr_frame_state { PTR_FRAME_FREE = 0, PTR_FRAME_LIVE = 1, PTR_FRAME_LIMBO = 2 };

/** Byte pattern freed table bytes are filled with (the kernel's POISON_FREE). */
#define PTR_POISON_BYTE 0x6b

/**
 * struct ptr_frame - metadata of one arena slot.
 * @state:     FREE / LIVE / LIMBO (unlinked by a relocation, freed after a grace period)
 * @level:     level of the table it holds (valid when not FREE)
 * @node:      arena node (pool) the slot belongs to; fixed
 * @sharers:   number of (mm, parent entry) links to this table; 1 normally, >1 when shared
 * @ptl:       split lock for level-0 and level-1 tables (LOCKING RULE 1)
 * @base_va:   first VA the table maps (for rewalks; set when linked)
 * @next_free: free-list link (pool-private)
 * @mm_next, @mm_prev: links of the owning mm's table list (struct ptr_mm, @tables_head: under
 *             its tables_lock); PTR_NO_FRAME at the ends
 *
 * Locking: @state changes by the arena's alloc/free/limbo functions only; @level, @base_va are
 * written before the frame is published by an entry store (release) and read after an acquire
 * load of that entry.
 */
struct ptr_frame {
	_Atomic uint8_t state;
	uint8_t level;
	uint16_t node;
	_Atomic int32_t sharers;
	ptr_spinlock_t ptl;
	uint32_t next_free;
	uint32_t mm_next, mm_prev;
	_Atomic uint64_t base_va;
};

/**
 * struct ptr_pool - the frames of one arena node.
 * @bind_node:  real NUMA node the pool's memory is mbind(MPOL_BIND)-bound to, -1 = virtual
 * @first, @nframes: slots [first, first + nframes) belong to this pool
 * @capacity:   allocation limit (<= nframes), settable to provoke exhaustion
 * @in_use:     LIVE + LIMBO frames
 * @live:       LIVE frames per level
 * @limbo:      LIMBO frames
 */
struct ptr_pool {
	int bind_node;
	int mbind_errno;        /* 0 or the errno mbind failed with (pool then unusable) */
	uint32_t first;
	uint32_t nframes;
	_Atomic uint32_t capacity;
	_Atomic uint32_t in_use;
	_Atomic uint32_t live[PTR_MAX_LEVELS];
	_Atomic uint32_t limbo;
	ptr_spinlock_t lock;    /* protects free_head, bump; and every WRITE of in_use, live[],
				 * limbo (pool_add(): no locked RMW), which readers load unlocked */
	_Atomic uint32_t unlocked_writes; /* pool_add() without the lock held: a bug, stays 0 */
	uint32_t free_head;
	uint32_t bump;          /* slots [first, first+bump) have been handed out at least once */
};

/**
 * struct ptr_arena - one mmap'd region sliced into per-node pools of table frames.
 * @freed_frame_accesses: walks (CPU or software) that found themselves reading a FREE frame
 *                        (or an entry pointing outside the arena: poison) - counted, never a
 *                        crash.  Must stay 0 under a correct protocol.
 * @fail_alloc_at:        fault injection: when > 0, the allocation that brings @alloc_calls to
 *                        this value fails with -ENOMEM (then the knob disarms itself).
 * @alloc_calls:          allocations since the knob was armed (counted only while it is)
 * @no_poison:            ptr_arena_set_poison(a, false) was called: freed frames are not
 *                        filled with PTR_POISON_BYTE (benchmarks only; OFF by default).
 */
struct ptr_arena {
	const struct ptr_geometry *geo;
	uint8_t *base;
	size_t map_bytes;
	uint32_t frame_bytes;
	uint32_t nframes;
	int nnodes;
	struct ptr_pool pool[PTR_MAX_NODES];
	struct ptr_frame *frames;
	_Atomic uint64_t freed_frame_accesses;
	_Atomic uint64_t alloc_calls;
	_Atomic uint64_t fail_alloc_at;
	_Atomic uint32_t next_mm_id;
	bool no_poison;
	/* emulated CPUs (cpu.c) */
	ptr_spinlock_t cpus_lock;
	/* bit i = cpus[i] is set (both written under cpus_lock): the shootdown and the grace
	 * period visit the CPUs that exist, not 64 slots - 8 cache lines and ~600 instructions
	 * each, most of the two at 1 MiB mapped with none or a few CPUs (callgrind) */
	_Atomic uint64_t cpus_mask;
	/* bumped (under cpus_lock, after the mask) at every CPU create and destroy: a relocation
	 * reads it and the mask without the lock to learn that no CPU existed while a batch ran
	 * (relocate.c, no_cpu_since()) */
	_Atomic uint64_t cpus_gen;
	struct ptr_cpu *cpus[PTR_MAX_CPUS];
#if PTR_RELOCATION
	/* software read-side sections (SRCU-like two-phase counters) */
	_Atomic uint64_t rd_epoch;
	_Atomic int64_t rd_count[2];
#endif
};

_Static_assert(PTR_MAX_CPUS <= 64, "cpus_mask holds a bit per CPU slot");

/* Every CPU of arena @a, ascending slot, @i its slot (an int lvalue); under cpus_lock. */
#define ptr_for_each_cpu(a, i)                                                              \
	for (uint64_t cpus_left_ = atomic_load_explicit(&(a)->cpus_mask,                    \
							memory_order_relaxed);              \
	     cpus_left_ && ((i) = __builtin_ctzll(cpus_left_), 1); cpus_left_ &= cpus_left_ - 1)

int ptr_arena_create(const char *geometry, int nnodes, const int *bind_nodes,
		     uint32_t frames_per_node, struct ptr_arena **out);
int ptr_arena_destroy(struct ptr_arena *a);
int ptr_arena_set_capacity(struct ptr_arena *a, int node, uint32_t frames);
int ptr_arena_prefault(struct ptr_arena *a, int node, uint32_t frames);
void ptr_arena_fail_nth_alloc(struct ptr_arena *a, uint64_t k);

int ptr_frame_alloc(struct ptr_arena *a, int node, int level, uint32_t *out);
/** PTR_ALLOC_NOZERO - ptr_frame_alloc_flags(): do not zero the table bytes.  Only for a caller
 * that overwrites every one of them before the frame is linked anywhere (relocation's copy). */
#define PTR_ALLOC_NOZERO 1u
/** PTR_ALLOC_LOWEST - ptr_frame_alloc_flags(): take the lowest-indexed free frame of the pool
 * (compaction's target), not the free list's head; costs a walk of the pool's free list. */
#define PTR_ALLOC_LOWEST 2u
int ptr_frame_alloc_flags(struct ptr_arena *a, int node, int level, unsigned int flags,
			  uint32_t *out);
int ptr_frame_alloc_batch(struct ptr_arena *a, int node, const uint8_t *levels, uint32_t n,
			  unsigned int flags, uint32_t *out, uint32_t *got);
void ptr_frame_free(struct ptr_arena *a, uint32_t f);
void ptr_frame_free_batch(struct ptr_arena *a, uint32_t *f, uint32_t n);
void ptr_arena_set_poison(struct ptr_arena *a, bool on);
#if PTR_RELOCATION
void ptr_frame_limbo(struct ptr_arena *a, uint32_t f);
void ptr_frame_limbo_batch(struct ptr_arena *a, const uint32_t *f, uint32_t n);
#endif

static inline void *ptr_frame_data(const struct ptr_arena *a, uint32_t f)
{
	return a->base + (size_t)f * a->frame_bytes;
}
static inline uint64_t ptr_frame_phys(const struct ptr_arena *a, uint32_t f)
{
	return (uint64_t)f * a->frame_bytes;
}
/**
 * ptr_frame_live() - may a lockless walker read frame @f?  (inside the arena, not FREE: a
 * LIMBO copy is still readable until its grace period ends)
 */
static inline bool ptr_frame_live(const struct ptr_arena *a, uint32_t f)
{
	return f < a->nframes &&
	       atomic_load_explicit(&a->frames[f].state, memory_order_acquire) != PTR_FRAME_FREE;
}

/**
 * ptr_arena_freed_access() - count a software walk that met a FREE frame (a protocol bug, so
 * it is counted, never a crash).  Return: -ESTALE, what every software walker reports then.
 */
static inline int ptr_arena_freed_access(struct ptr_arena *a)
{
	atomic_fetch_add(&a->freed_frame_accesses, 1);
	return -ESTALE;
}

/** ptr_phys_frame() - frame index of a table's phys, PTR_NO_FRAME when outside the arena. */
static inline uint32_t ptr_phys_frame(const struct ptr_arena *a, uint64_t phys)
{
	uint64_t f = phys / a->frame_bytes;
	return (phys % a->frame_bytes == 0 && f < a->nframes) ? (uint32_t)f : PTR_NO_FRAME;
}

/** struct ptr_pool_info - plain snapshot of a pool for Python. */
struct ptr_pool_info {
	int bind_node;
	int mbind_errno;
	uint32_t nframes;
	uint32_t capacity;
	uint32_t in_use;
	uint32_t limbo;
	uint32_t live[PTR_MAX_LEVELS];
	uint32_t unlocked_writes;
};
int ptr_arena_pool_info(struct ptr_arena *a, int node, struct ptr_pool_info *out);
uint64_t ptr_arena_freed_frame_accesses(struct ptr_arena *a);

/**
 * struct ptr_pool_runs - how fragmented a pool is (ptr_arena_pool_runs(); evacuation and
 * compaction report it before and after).
 * @nframes:          slots of the pool
 * @used:             slots not FREE (LIVE or LIMBO)
 * @largest_free_run: longest run of consecutive FREE slots
 * @free_runs:        free runs of @run_frames slots aligned to @run_frames (2 MiB of frames:
 *                    512 4-KiB frames aligned to 512 - what a huge page or a hot-remove of
 *                    that much memory needs)
 * @runs:             such aligned runs lying wholly inside the pool (the most @free_runs can be)
 * @run_frames:       frames per aligned run (2 MiB / frame size)
 * @high_water:       one past the highest used slot, relative to the pool's first slot
 * @packed:           every used slot lies below first + @used (compaction's goal)
 */
struct ptr_pool_runs {
	uint32_t nframes, used, largest_free_run, free_runs, runs, run_frames, high_water;
	int packed;
};
int ptr_arena_pool_runs(struct ptr_arena *a, int node, struct ptr_pool_runs *out);
int ptr_frame_info(struct ptr_arena *a, uint32_t f, int *state, int *level, int *node,
		   int *sharers);
uintptr_t ptr_frame_address(struct ptr_arena *a, uint32_t f);

#endif /* PTRELOC_ARENA_H */
