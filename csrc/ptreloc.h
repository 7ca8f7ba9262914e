/*
 * ptreloc.h - the one header of the ptreloc C core.
 *
 * Conventions (mm/pagewalk.c style): functions return 0 on success or -errno; the core never
 * prints and never aborts.  PTR_RELOCATION is 1 unless the build defines PTRELOC_NO_RELOCATION;
 * everything that exists only to support relocation (the rewalk after lock, read-side sections,
 * grace periods, limbo frames) is compiled out of the norelo build, so the two builds differ only
 * in relocation support.
 *
 * Vocabulary
 * ----------
 * level     0 = lowest (PTE) level .. geo->nlevels - 1 = root.  Names per geometry (pte/pmd/pud/
 *           p4d/pgd for x86, L3..L0 for arm64).
 * frame     a slot of the arena, geo->frame_bytes big (the largest table of the geometry).  A
 *           table smaller than a slot (PAE's 32-byte top table, arm64-64K's 512-byte top table)
 *           occupies a whole slot, but only its own bytes (ptr_table_bytes()) are ever zeroed,
 *           copied, poisoned or counted as copied.
 * phys      the "physical address" an entry holds for a table is  frame index * frame_bytes.
 *           Data pages get whatever physical address the caller mapped; the core never
 *           dereferences them.
 *
 * LOCKING RULES (read before writing code that modifies entries)
 * -------------------------------------------------------------
 * 1. Entries of tables at level 0 (PTE tables) and level 1 (PMD tables) are modified only under
 *    that table frame's split lock, frame->ptl (the kernel's split PTE/PMD ptlocks).  This covers
 *    populating a level-1 entry with a pointer to a new PTE table, installing/clearing leaves,
 *    huge leaves at level 1, and the A/D *consumers* (test_and_clear_young/dirty).
 * 2. Entries of tables at level >= 2, and mm->root, are modified only under mm->page_table_lock.
 * 3. Lock order: mm->page_table_lock (several mms: ascending mm->id) -> level-1 ptls -> level-0
 *    ptls; within one level ascending frame index.  A frame that was just allocated and is not
 *    yet linked anywhere may be locked at any point (nobody else can hold or wait for it).
 * 4. Emulated CPUs set A/D WITHOUT any lock, with an atomic OR (x86) or a CAS loop (arm64) on
 *    the entry they reached - possibly in a stale (limbo) copy of a table.  Software therefore
 *    only ever changes a leaf with atomic exchange / CAS, never with a blind store that could
 *    erase a concurrently set A or D bit.
 * 5. DEADLOCK AVOIDANCE: a relocator (or unmap, or a dirty-bit consumer) may wait for shootdown
 *    acknowledgements while holding page_table_lock or a ptl.  Any CPU thread that spins for one
 *    of those locks (the software fault path run on behalf of a CPU) MUST service pending
 *    shootdowns while it spins, like a CPU taking an IPI while spinning with interrupts enabled:
 *    use ptr_lock(lock, cpu) with its cpu, never a bare spin.  A CPU that is between accesses
 *    is serviced remotely by the shooter (it takes the CPU's busy lock and flushes for it), so
 *    a CPU driven by a thread that is asleep, or by the very thread that shoots down, never
 *    blocks a shootdown.
 * 6. Tables are read LOCKLESSLY (walks, rewalks).  A table unlinked by a relocation goes to
 *    LIMBO and is freed only after a grace period (ptr_synchronize()), so a lockless reader
 *    inside a read-side section (a CPU inside an access, or ptr_read_lock()) may still read it,
 *    but must not populate it: that is why the fault path rewalks under the lock when
 *    mm->relocating is non-zero.  Entering a section again while inside one is correct but
 *    costs two locked RMWs, so code already inside one (the fault path: a CPU's access, or
 *    its own ptr_read_lock()) calls in-section helpers, not public entry points that enter a
 *    section of their own (ptr_translate()).
 * 7. Unmap never frees tables (emptied tables stay linked until the mm is destroyed); so the
 *    only way a linked table goes away while the mm lives is relocation.
 */
#ifndef PTRELOC_H
#define PTRELOC_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef PTRELOC_NO_RELOCATION
#define PTR_RELOCATION 0
#else
#define PTR_RELOCATION 1
#endif

#ifndef likely
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#endif

/* ------------------------------------------------------------------------------------------ */
/* Limits                                                                                       */
/* ------------------------------------------------------------------------------------------ */

#define PTR_MAX_LEVELS 5
#define PTR_MAX_NODES 16
#define PTR_MAX_CPUS 64
#define PTR_MAX_REGIONS 64
#define PTR_NO_FRAME UINT32_MAX

/* ------------------------------------------------------------------------------------------ */
/* Geometry (csrc/geometry.c)                                                                   */
/* ------------------------------------------------------------------------------------------ */

enum ptr_arch { PTR_ARCH_X86 = 0, PTR_ARCH_ARM64 = 1 };

/**
 * struct ptr_level - one level of a paging format.
 * @name:        "pte", "pmd", ... or "L3".."L0"
 * @shift:       lowest VA bit indexed at this level (12 for a 4 KiB x86 PTE table)
 * @bits:        index bits; the table has 1 << bits entries
 * @entry_size:  4 or 8 bytes
 * @table_bytes: (1 << bits) * entry_size - the table's OWN size (may be < frame_bytes)
 * @leaf_ok:     a leaf (a page, or a huge/block leaf above level 0) may live here
 * @table_flags: bits (besides the address) of an entry at this level that points to a table
 */
struct ptr_level {
	const char *name;
	uint8_t shift;
	uint8_t bits;
	uint8_t entry_size;
	uint8_t leaf_ok;
	uint32_t table_bytes;
	uint64_t table_flags;
};

/**
 * struct ptr_geometry - a paging format, table-driven.
 *
 * Entry bit layout (real ones; a field that does not exist in a format is 0):
 * x86:   present P(0), writable RW(1), user US(2), accessed A(5), dirty D(6), huge PS(7) at
 *        levels >= 1 (PTE level: bit 7 is PAT, never used here).  PAE top entries (PDPTEs) hold
 *        only P and the address (their RW/US/A bits are reserved).
 * arm64: valid(0), bit 1 = table at non-last levels / page at level 0 (a block leaf has it
 *        clear), AP[1] user(6), AP[2] read-only(7), AF(10), DBM(51), software dirty(55).
 *        Hardware dirty state: a writable page is "writable-clean" with DBM=1, AP[2]=1; the
 *        hardware clears AP[2] atomically on the first write (CAS loop).  Dirty = DBM && !AP[2],
 *        or the software dirty bit (kept when a dirty page is made read-only, as Linux does).
 *
 * @va_bits:   virtual address width; x86-64 addresses must be canonical (bits >= va_bits equal
 *             to bit va_bits-1) when @canonical, else va < 2^va_bits.
 * @top_preloaded: x86 PAE: the CPU loads the 4 PDPTEs at CR3 load, so all top entries are
 *             populated when the mm is created and never change except by a root reload.
 */
struct ptr_geometry {
	const char *name;
	enum ptr_arch arch;
	int nlevels;
	int va_bits;
	bool canonical;
	bool top_preloaded;
	uint32_t frame_bytes;
	uint64_t phys_limit;   /* exclusive upper bound of an entry's physical address */
	struct ptr_level level[PTR_MAX_LEVELS];
	/* entry bits */
	uint64_t e_present;
	uint64_t e_write;      /* x86 RW: set = writable */
	uint64_t e_rdonly;     /* arm64 AP[2]: set = read-only */
	uint64_t e_user;
	uint64_t e_accessed;
	uint64_t e_dirty;      /* x86 D (hardware dirty) */
	uint64_t e_dbm;        /* arm64 DBM */
	uint64_t e_swdirty;    /* arm64 software dirty */
	uint64_t e_huge;       /* x86 PS at levels >= 1 */
	uint64_t e_tablebit;   /* arm64 bit 1 */
	uint64_t e_addr;       /* address bits of an entry (a table's or a 4 KiB/64 KiB leaf's) */
};

/** ptr_geometry_find() - geometry by name ("x86_64_4l", ...), NULL when unknown. */
const struct ptr_geometry *ptr_geometry_find(const char *name);
/** ptr_geometry_count()/ptr_geometry_at() - iterate the built-in geometries. */
int ptr_geometry_count(void);
const struct ptr_geometry *ptr_geometry_at(int i);

/** ptr_level_size() - bytes of VA one entry at @level maps (page size for a leaf there). */
static inline uint64_t ptr_level_size(const struct ptr_geometry *g, int level)
{
	return 1ULL << g->level[level].shift;
}

/** ptr_table_bytes() - bytes of a table at @level (what is zeroed/copied/poisoned). */
static inline uint32_t ptr_table_bytes(const struct ptr_geometry *g, int level)
{
	return g->level[level].table_bytes;
}

/** ptr_index() - index into the level-@level table for @va. */
static inline uint32_t ptr_index(const struct ptr_geometry *g, int level, uint64_t va)
{
	return (uint32_t)((va >> g->level[level].shift) & ((1ULL << g->level[level].bits) - 1));
}

/**
 * ptr_level_addr_end() - end of the level-@level entry's range that contains @addr, clamped to
 * @end (the kernel's pmd_addr_end() & co).  Handles the wrap at the top of the address space.
 */
static inline uint64_t ptr_level_addr_end(const struct ptr_geometry *g, int level, uint64_t addr,
					  uint64_t end)
{
	uint64_t size = ptr_level_size(g, level);
	uint64_t boundary = (addr + size) & ~(size - 1);
	return (boundary - 1 < end - 1) ? boundary : end;
}

/**
 * ptr_va_check() - is @va a valid address of the format?
 * Return: 0, -ERANGE (outside the format's range), -EDOM (x86-64: not canonical).
 */
int ptr_va_check(const struct ptr_geometry *g, uint64_t va);

/* Entry encoding/decoding (geometry.c).  @e is an entry value read with ptr_entry_load(). */
bool ptr_entry_present(const struct ptr_geometry *g, int level, uint64_t e);
/** ptr_entry_is_leaf() - present and maps memory (level 0, or a huge/block leaf above). */
bool ptr_entry_is_leaf(const struct ptr_geometry *g, int level, uint64_t e);
/** ptr_entry_is_table() - present and points to a lower-level table. */
bool ptr_entry_is_table(const struct ptr_geometry *g, int level, uint64_t e);
uint64_t ptr_entry_phys(const struct ptr_geometry *g, int level, uint64_t e);
bool ptr_entry_writable(const struct ptr_geometry *g, uint64_t e);
bool ptr_entry_young(const struct ptr_geometry *g, uint64_t e);
bool ptr_entry_dirty(const struct ptr_geometry *g, uint64_t e);
/** ptr_entry_make_leaf() - a leaf at @level for @phys, young/dirty clear. */
uint64_t ptr_entry_make_leaf(const struct ptr_geometry *g, int level, uint64_t phys, bool writable);
/** ptr_entry_make_table() - an entry at @level pointing to the table at @phys. */
uint64_t ptr_entry_make_table(const struct ptr_geometry *g, int level, uint64_t phys);
/** ptr_entry_ad_bits() - the entry bits that carry accessed/dirty state (what a merge ORs).
 * arm64: AF and the software dirty bit; hardware dirtiness is AP[2] being CLEAR, so a merge
 * must also clear AP[2] in the new entry when the old one is DBM && !AP[2]: use
 * ptr_entry_merge_ad(). */
uint64_t ptr_entry_ad_bits(const struct ptr_geometry *g);
/** ptr_entry_merge_ad() - @new_e with the accessed/dirty state of @old_e added (pure). */
uint64_t ptr_entry_merge_ad(const struct ptr_geometry *g, uint64_t new_e, uint64_t old_e);

/* Atomic entry access.  Tables are byte arrays; an entry is an _Atomic 4- or 8-byte word. */
static inline uint64_t ptr_entry_load(const struct ptr_geometry *g, int level, const void *table,
				      uint32_t index)
{
	if (g->level[level].entry_size == 8)
		return atomic_load_explicit((_Atomic uint64_t *)table + index, memory_order_acquire);
	return atomic_load_explicit((_Atomic uint32_t *)table + index, memory_order_acquire);
}

static inline void ptr_entry_store(const struct ptr_geometry *g, int level, void *table,
				   uint32_t index, uint64_t e)
{
	if (g->level[level].entry_size == 8)
		atomic_store_explicit((_Atomic uint64_t *)table + index, e, memory_order_release);
	else
		atomic_store_explicit((_Atomic uint32_t *)table + index, (uint32_t)e,
				      memory_order_release);
}

static inline uint64_t ptr_entry_xchg(const struct ptr_geometry *g, int level, void *table,
				      uint32_t index, uint64_t e)
{
	if (g->level[level].entry_size == 8)
		return atomic_exchange((_Atomic uint64_t *)table + index, e);
	return atomic_exchange((_Atomic uint32_t *)table + index, (uint32_t)e);
}

/** ptr_entry_cas() - compare-and-swap; on failure *@expected gets the current value. */
static inline bool ptr_entry_cas(const struct ptr_geometry *g, int level, void *table,
				 uint32_t index, uint64_t *expected, uint64_t desired)
{
	if (g->level[level].entry_size == 8)
		return atomic_compare_exchange_strong((_Atomic uint64_t *)table + index, expected,
						      desired);
	uint32_t exp32 = (uint32_t)*expected;
	bool ok = atomic_compare_exchange_strong((_Atomic uint32_t *)table + index, &exp32,
						 (uint32_t)desired);
	*expected = exp32;
	return ok;
}

static inline uint64_t ptr_entry_or(const struct ptr_geometry *g, int level, void *table,
				    uint32_t index, uint64_t bits)
{
	if (g->level[level].entry_size == 8)
		return atomic_fetch_or((_Atomic uint64_t *)table + index, bits);
	return atomic_fetch_or((_Atomic uint32_t *)table + index, (uint32_t)bits);
}

static inline uint64_t ptr_entry_and(const struct ptr_geometry *g, int level, void *table,
				     uint32_t index, uint64_t bits)
{
	if (g->level[level].entry_size == 8)
		return atomic_fetch_and((_Atomic uint64_t *)table + index, bits);
	return atomic_fetch_and((_Atomic uint32_t *)table + index, (uint32_t)bits);
}

/* ------------------------------------------------------------------------------------------ */
/* Locks (cpu.c)                                                                               */
/* ------------------------------------------------------------------------------------------ */

typedef struct { _Atomic int locked; } ptr_spinlock_t;
struct ptr_cpu;

/**
 * ptr_lock() - take a spinlock; while spinning, service @cpu's pending shootdowns.
 * @cpu: the emulated CPU on whose behalf the caller runs, or NULL for a non-CPU thread
 *       (Python, a relocator, a reclaimer).  See LOCKING RULE 5.
 */
void ptr_lock(ptr_spinlock_t *lock, struct ptr_cpu *cpu);
bool ptr_trylock(ptr_spinlock_t *lock);
void ptr_unlock(ptr_spinlock_t *lock);

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
	ptr_spinlock_t lock;    /* protects free_head, bump */
	uint32_t free_head;
	uint32_t bump;          /* slots [first, first+bump) have been handed out at least once */
};

/**
 * struct ptr_arena - one mmap'd region sliced into per-node pools of table frames.
 * @freed_frame_accesses: walks (CPU or software) that found themselves reading a FREE frame
 *                        (or an entry pointing outside the arena: poison) - counted, never a
 *                        crash.  Must stay 0 under a correct protocol.
 * @fail_alloc_at:        fault injection: when > 0, the allocation that brings @alloc_calls to
 *                        this value fails with -ENOMEM (then the knob disarms itself). * @no_poison:            ptr_arena_set_poison(a, false) was called: freed frames are not
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
	struct ptr_cpu *cpus[PTR_MAX_CPUS];
#if PTR_RELOCATION
	/* software read-side sections (SRCU-like two-phase counters) */
	_Atomic uint64_t rd_epoch;
	_Atomic int64_t rd_count[2];
#endif
};

/**
 * ptr_arena_create() - map and bind an arena.
 * @geometry:        geometry name
 * @nnodes:          number of pools (1..PTR_MAX_NODES)
 * @bind_nodes:      per pool, the real NUMA node to mbind to, or -1 for a virtual node
 * @frames_per_node: slots reserved per pool (address space is reserved with MAP_NORESERVE and
 *                   faulted in on first use)
 * Return: 0 and *@out; -EINVAL (unknown geometry, bad counts), -E2BIG (the format's entries
 * cannot address that many frames), -ENOMEM, or the -errno of mmap/mbind.
 */
int ptr_arena_create(const char *geometry, int nnodes, const int *bind_nodes,
		     uint32_t frames_per_node, struct ptr_arena **out);
/** ptr_arena_destroy() - unmap; -EBUSY while any frame is in use or any CPU exists. */
int ptr_arena_destroy(struct ptr_arena *a);
/** ptr_arena_set_capacity() - limit pool @node to @frames (< in_use is allowed: no new allocs). */
int ptr_arena_set_capacity(struct ptr_arena *a, int node, uint32_t frames);
/** ptr_arena_fail_nth_alloc() - make the @k-th allocation from now fail (0 disarms). */
void ptr_arena_fail_nth_alloc(struct ptr_arena *a, uint64_t k);

/**
 * ptr_frame_alloc() - take a frame from pool @node for a level-@level table, zeroed, LIVE,
 * sharers 1.
 * Return: 0 and *@out; -ENODEV (no such pool / mbind failed), -ENOSPC (pool at capacity),
 * -ENOMEM (injected failure).
 */
int ptr_frame_alloc(struct ptr_arena *a, int node, int level, uint32_t *out);
/** PTR_ALLOC_NOZERO - ptr_frame_alloc_flags(): do not zero the table bytes.  Only for a caller
 * that overwrites every one of them before the frame is linked anywhere (relocation's copy). */
#define PTR_ALLOC_NOZERO 1u
/** ptr_frame_alloc_flags() - ptr_frame_alloc() with PTR_ALLOC_* @flags. */
int ptr_frame_alloc_flags(struct ptr_arena *a, int node, int level, unsigned int flags,
			  uint32_t *out);
/** ptr_frame_free() - poison the table bytes and return a LIVE or LIMBO frame to its pool
 * (PTR_NO_FRAME or a FREE frame: nothing to do).
 * Locking: takes the pool lock. */
void ptr_frame_free(struct ptr_arena *a, uint32_t f);
/**
 * ptr_arena_set_poison() - poison freed frames (@on, the default) or not.  Poisoning is what
 * makes an access to a freed frame detectable (stress, tests): turn it off only to measure what
 * it costs (the kernel poisons freed pages only in debug configurations).  Call it before the
 * arena is shared with other threads.
 */
void ptr_arena_set_poison(struct ptr_arena *a, bool on);
#if PTR_RELOCATION
/** ptr_frame_limbo() - LIVE -> LIMBO (unlinked; free it after ptr_synchronize()). */
void ptr_frame_limbo(struct ptr_arena *a, uint32_t f);
#endif

static inline void *ptr_frame_data(const struct ptr_arena *a, uint32_t f)
{
	return a->base + (size_t)f * a->frame_bytes;
}
static inline uint64_t ptr_frame_phys(const struct ptr_arena *a, uint32_t f)
{
	return (uint64_t)f * a->frame_bytes;
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
};
int ptr_arena_pool_info(struct ptr_arena *a, int node, struct ptr_pool_info *out);
uint64_t ptr_arena_freed_frame_accesses(struct ptr_arena *a);
/** ptr_frame_info() - state/level/node/sharers of frame @f (tests, relocation reports). */
int ptr_frame_info(struct ptr_arena *a, uint32_t f, int *state, int *level, int *node,
		   int *sharers);
uintptr_t ptr_frame_address(struct ptr_arena *a, uint32_t f);

/* ------------------------------------------------------------------------------------------ */
/* Read-side sections and grace periods (cpu.c)                                                 */
/* ------------------------------------------------------------------------------------------ */

#if PTR_RELOCATION
/**
 * ptr_read_lock() - enter a software read-side section (lockless table reads by a non-CPU
 * thread).  Returns a token for ptr_read_unlock().  CPUs are in a section for the duration of
 * each access (they hold their busy lock), so a CPU thread does not need this.
 */
int ptr_read_lock(struct ptr_arena *a);
void ptr_read_unlock(struct ptr_arena *a, int token);
/**
 * ptr_synchronize() - wait for a grace period: every CPU has passed a quiescent point (ended the
 * access it was in) or was outside an access, and every software read-side section that began
 * before the call has ended.  Afterwards LIMBO frames unlinked before the call can be freed.
 * Locking: must not be called holding any table lock or from inside a read-side section.
 */
void ptr_synchronize(struct ptr_arena *a);
#define PTR_READ_LOCK(a) ptr_read_lock(a)
#define PTR_READ_UNLOCK(a, t) ptr_read_unlock(a, t)
#else
#define PTR_READ_LOCK(a) 0
#define PTR_READ_UNLOCK(a, t) ((void)(t))
#endif

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

/** Plain descriptions of the geometries for Python (no atomics, no inline functions). */
struct ptr_level_info {
	const char *name;
	int shift, bits, entry_size, table_bytes, leaf_ok;
};
struct ptr_geometry_info {
	const char *name;
	int arch, nlevels, va_bits, canonical, top_preloaded;
	uint32_t frame_bytes;
	uint64_t phys_limit;
	struct ptr_level_info level[PTR_MAX_LEVELS];
};
/** ptr_describe_geometry() - describe built-in geometry @i (0..ptr_geometry_count()-1). */
int ptr_describe_geometry(int i, struct ptr_geometry_info *out);

/* ------------------------------------------------------------------------------------------ */
/* Emulated CPUs (cpu.c)                                                                       */
/* ------------------------------------------------------------------------------------------ */

#define PTR_TLB_SETS 64
#define PTR_PWC_SETS 16

struct ptr_tlb_entry {
	uint64_t vpn;          /* va >> page shift, + 1 (0 = invalid) */
	uint64_t phys;         /* page base */
	bool writable;
	bool dirty_known;      /* D known set: a write may skip the walk */
};

struct ptr_pwc_entry {
	uint64_t tag;          /* va >> (shift + bits) of the cached table's level, + 1 */
	uint32_t frame;        /* the table frame - may be a stale (limbo) copy */
};

/** struct ptr_cpu_stats - plain counters (read by Python). */
struct ptr_cpu_stats {
	uint64_t accesses, tlb_hits, walks, faults, freed_reads, shootdowns, reloads, pwc_hits;
	uint64_t fault_path_runs;
};

/**
 * struct ptr_cpu - an emulated CPU, driven by ONE thread at a time.
 * @mm:        the mm it runs (NULL = idle; an idle CPU is always quiescent and acknowledged)
 * @busy:      held by the CPU for the duration of each access; a shooter that can take it
 *             services the shootdown remotely (rule 5)
 * @seen_gen:  last mm->tlb_gen acknowledged (after flushing)
 * @seq:       relocation build: accesses completed (bumped before busy is dropped); with @busy
 *             it tells a grace period that an access in progress has ended (cpu.c)
 * @root:      cached root frame (CR3); @pdpte caches PAE's 4 top entries (loaded at CR3 load)
 */
struct ptr_cpu {
	struct ptr_arena *arena;
	int slot;
	_Atomic(struct ptr_mm *) mm;
	ptr_spinlock_t busy;
	_Atomic uint64_t seen_gen;
	uint64_t seen_reload;  /* mm->reload_gen at the last root load */
	_Atomic uint64_t seq;
	uint32_t root;
	uint64_t pdpte[4];
	struct ptr_tlb_entry tlb[PTR_MAX_LEVELS][PTR_TLB_SETS];
	struct ptr_pwc_entry pwc[PTR_MAX_LEVELS][PTR_PWC_SETS];
	struct ptr_cpu_stats st;
};

/** Access results (>0): the access did not complete. */
#define PTR_FAULT_NOT_PRESENT 1
#define PTR_FAULT_PROT 2
#define PTR_FAULT_FREED 3    /* the walk read a freed frame: a protocol bug, counted */

int ptr_cpu_create(struct ptr_arena *a, struct ptr_cpu **out);
/** ptr_cpu_destroy() - switch out and unregister. */
int ptr_cpu_destroy(struct ptr_cpu *cpu);
/**
 * ptr_cpu_switch_to() - run @mm (NULL = go idle): flush TLB and PWC, load the root, ack the
 * current generation.
 */
int ptr_cpu_switch_to(struct ptr_cpu *cpu, struct ptr_mm *mm);
/**
 * ptr_cpu_access() - one memory access at @va: generation check (flush, maybe reload, ack),
 * TLB lookup, else a hardware walk from the deepest PWC hit setting A (and D on write) on the
 * entry reached.  A quiescent point precedes and follows every access.
 * Return: 0 (*@phys set, may be NULL), PTR_FAULT_* (> 0), -EINVAL (idle CPU), -ERANGE/-EDOM.
 */
int ptr_cpu_access(struct ptr_cpu *cpu, uint64_t va, bool write, uint64_t *phys);
/**
 * ptr_cpu_access_fault() - ptr_cpu_access(), running the software fault path (ptr_fault) on
 * NOT_PRESENT/PROT faults and retrying (at most a few times).
 * Return: 0, PTR_FAULT_FREED, or the fault path's -errno (-EFAULT: no region: a segfault).
 */
int ptr_cpu_access_fault(struct ptr_cpu *cpu, uint64_t va, bool write, uint64_t *phys);
/** ptr_cpu_flush() - local full TLB+PWC flush (no ack). */
void ptr_cpu_flush(struct ptr_cpu *cpu);
/** ptr_cpu_service() - if a shootdown for cpu->mm is pending: flush, reload root if asked, ack.
 * Caller: the CPU's own thread (inside an access or while spinning for a lock). */
void ptr_cpu_service(struct ptr_cpu *cpu);
void ptr_cpu_get_stats(struct ptr_cpu *cpu, struct ptr_cpu_stats *out);

/**
 * ptr_shootdown() - TLB shootdown for @mm: bump mm->tlb_gen (with @reload_root, CPUs also
 * reload their cached root - required after changing mm->root, and for PAE after changing the
 * top table), then wait until every CPU running @mm acknowledged (spinning with sched_yield;
 * CPUs between accesses are serviced remotely).  Works for any caller thread, holding table
 * locks or not (rule 5).  A CPU thread must not call it from inside its own access.
 */
void ptr_shootdown(struct ptr_mm *mm, bool reload_root);

/**
 * ptr_run_cpus() - test/bench helper: @ncpus threads, each with its own CPU running @mm, each
 * doing @naccesses ptr_cpu_access_fault() at pseudo-random pages of [@start, @end) (writes
 * with probability @write_pct %), seeded by @seed.  Sums stats into *@total.
 * Return: 0, or the first -errno / PTR_FAULT_FREED a thread hit.
 */
int ptr_run_cpus(struct ptr_mm *mm, int ncpus, uint64_t naccesses, uint64_t start, uint64_t end,
		 int write_pct, uint64_t seed, struct ptr_cpu_stats *total);

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
	uint64_t ad_merged, ad_lost;
	uint64_t ns_collect, ns_alloc, ns_copy, ns_shootdown, ns_merge, ns_grace, ns_free;
	uint64_t ns_stopped, ns_total;
	struct ptr_reloc_level_report level[PTR_MAX_LEVELS];
};

/**
 * ptr_reloc_choose_fn - where should this frame go?  Called once per frame on a source node,
 * with no lock held, before anything moves.  Return: the target node, -1 to leave it, or
 * < -1 to cancel the whole relocation (nothing moves; ptr_relocate() returns -ECANCELED).
 * Must not start a relocation itself.
 */
typedef int (*ptr_reloc_choose_fn)(void *priv, int level, uint32_t frame, uint64_t base_va,
				   int node);

/**
 * ptr_relocate() - move every table frame of @mm on a node in @from_mask (bit n = node n) to
 * @to_node, or to where @choose (non-NULL) says, with @strategy (PTR_RELOC_*), @batch frames
 * per lock/shootdown batch.  Every level moves, the root with a root reload.
 * Return: 0; -EINVAL (bad arguments), -ENODEV (no such target node), -EOPNOTSUPP (norelo
 * build), -ECANCELED (the chooser cancelled: nothing moved); -ENOSPC/-ENOMEM when an
 * allocation on the target failed: the relocation stopped
 * there, every translation is unchanged, frames of completed batches stay moved, the rest are
 * reported not relocated.  *@out is filled in every case but -EINVAL/-ENODEV.
 * Locking: takes every lock itself; call with none held.  Relocations serialize.
 */
int ptr_relocate(struct ptr_mm *mm, uint32_t from_mask, int to_node, ptr_reloc_choose_fn choose,
		 void *priv, int strategy, int batch, struct ptr_reloc_report *out);
/**
 * ptr_relocate_mms() - ptr_relocate() over a set of up to 32 mms of one arena at once: a table
 * shared between them moves once, with every sharer's parent entry repointed.  A table shared
 * with an mm outside the set is skipped (PTR_RELOC_R_SHARED).
 */
int ptr_relocate_mms(struct ptr_mm *const *mms, int nmms, uint32_t from_mask, int to_node,
		     ptr_reloc_choose_fn choose, void *priv, int strategy, int batch,
		     struct ptr_reloc_report *out);
/**
 * ptr_reloc_set_test_hook() - TEST HOOK: call @fn(@priv, batch index) in every rewalk/naive
 * batch after the copies and repoints, before the shootdown - the window in which a CPU with a
 * stale paging-structure cache writes A/D into an old copy.  Runs with the batch's table locks
 * held: @fn may drive CPU accesses that hit present entries, nothing that takes a table lock.
 * NULL removes it.
 */
typedef void (*ptr_reloc_hook_fn)(void *priv, uint32_t batch);
void ptr_reloc_set_test_hook(ptr_reloc_hook_fn fn, void *priv);
/** ptr_reloc_reason_name() - "target_full", "alloc_failed", "shared", ... */
const char *ptr_reloc_reason_name(int reason);

/* ------------------------------------------------------------------------------------------ */
/* Stress (stress.c) - `ptreloc stress`                                                         */
/* ------------------------------------------------------------------------------------------ */

/**
 * struct ptr_stress_config - one torture run: @cpus CPU threads, one relocator moving every
 * table between arena nodes 0 and 1, one reclaimer, for @seconds.
 * @bind_nodes:   2 entries, real NUMA node per arena node or -1 (virtual); NULL = both virtual
 * @chunks, @pages_per_chunk: the address space: @chunks demand-fault regions, each in its own
 *                top-level entry (own tables at every level), of @pages_per_chunk base pages
 * @unmap_pct:    % of reclaimer operations that unmap the page (the rest: half clear dirty,
 *                half clear young + flush)
 * @cancel:       optional; set non-zero to stop early
 * @ipi_delay_us: widens the window in which CPUs still walk the old copies (through the
 *                relocation test hook, so the stress owns that hook while it runs)
 */
struct ptr_stress_config {
	const char *geometry;
	int cpus;
	double seconds;
	int strategy;
	int batch;
	uint64_t seed;
	const int *bind_nodes;
	uint32_t frames_per_node;
	uint32_t chunks;
	uint32_t pages_per_chunk;
	int write_pct;
	int unmap_pct;
	uint32_t reclaim_pause_us;
	int *cancel;            /* read with __atomic_load_n (Python writes it via cffi) */
	uint32_t ipi_delay_us;  /* rewalk/naive: wait this long between a batch's repoints and its
				 * shootdown, like an IPI reaching a preempted vCPU late */
};

/** struct ptr_stress_result - counters and the verdict (lost_*, mismatches, freed, leaked). */
struct ptr_stress_result {
	double seconds;
	int error, cancelled;
	uint64_t pages, tables;
	uint64_t relocations, relocation_failures, frames_relocated, bytes_copied, batches;
	uint64_t reloc_shootdowns, ad_merged, ad_lost, relocation_ns;
	uint64_t accesses, writes, tlb_hits, walks, pwc_hits, cpu_shootdowns, fault_path_runs;
	uint64_t access_errors;
	uint64_t dirty_cleans, young_cleans, unmaps, found_dirty, found_young;
	uint64_t checked_dirty, checked_accessed;  /* final verdict: pages whose A/D must be set */
	uint64_t audits, audit_checked;            /* parked audits (one per relocation), and the
						    * pages they found whose A/D had to be set */
	uint64_t lost_dirty, lost_accessed, freed_frame_accesses, leaked_frames;
	uint64_t translation_mismatches;
};

/**
 * ptr_stress_run() - run the torture test described by @cfg.
 * Return: 0 (the verdict is in *@out), -EINVAL (bad config), -EOPNOTSUPP (norelo build), or
 * the -errno that stopped the run (arena creation, thread creation).
 */
int ptr_stress_run(const struct ptr_stress_config *cfg, struct ptr_stress_result *out);

/* ------------------------------------------------------------------------------------------ */
/* Bench (bench.c) - the timed loops of `ptreloc bench`; compiled into both builds              */
/* ------------------------------------------------------------------------------------------ */

/* Contexts live across rounds (the first round warms memory up); see bench.c. */
struct ptr_bench_fault;
struct ptr_bench_walk;
struct ptr_bench_reloc;

/** fault: fault every page of a @pages region once per round, random order, writes through the
 * emulated CPU's fault path; @with_data also zeroes a 4 KiB data page per fault. */
int ptr_bench_fault_create(const char *geometry, uint64_t pages, int with_data, int bind_node,
			   struct ptr_bench_fault **out);
int ptr_bench_fault_round(struct ptr_bench_fault *b, uint64_t seed, uint64_t *ns);
void ptr_bench_fault_destroy(struct ptr_bench_fault *b);

/** walk: TLB-miss accesses of an emulated CPU against a bare pointer chase of the same walks;
 * tables on pool @table_node of a 2-pool arena bound to @bind_nodes[0..1]. */
int ptr_bench_walk_create(const char *geometry, uint64_t pages, const int *bind_nodes,
			  int table_node, struct ptr_bench_walk **out);
int ptr_bench_walk_round(struct ptr_bench_walk *b, uint64_t n, uint64_t seed, int chase_first,
			 uint64_t *cpu_ns, uint64_t *chase_ns);
void ptr_bench_walk_stats(struct ptr_bench_walk *b, struct ptr_cpu_stats *out);
void ptr_bench_walk_destroy(struct ptr_bench_walk *b);

/** relocate: one relocation of every table of a @mapped-byte address space against memcpy of
 * the same tables in the same order. */
struct ptr_bench_reloc_result {
	uint64_t reloc_ns, memcpy_ns, frames, bytes;
	struct ptr_reloc_report report;
};
int ptr_bench_reloc_create(const char *geometry, uint64_t mapped, const int *bind_nodes,
			   int strategy, int batch, struct ptr_bench_reloc **out);
int ptr_bench_reloc_round(struct ptr_bench_reloc *b, int memcpy_first,
			  struct ptr_bench_reloc_result *out);
void ptr_bench_reloc_destroy(struct ptr_bench_reloc *b);
/* ptr_bench_reloc_set_poison() - poison freed frames in this bench's arena (default) or not. */
void ptr_bench_reloc_set_poison(struct ptr_bench_reloc *b, int on);

/** concurrent: access latency histograms of K CPUs, idle phases against relocation phases. */
#define PTR_BENCH_HIST_SUB 32
#define PTR_BENCH_HIST_BUCKETS 2048
struct ptr_bench_conc_config {
	const char *geometry;
	int cpus;
	uint64_t pages;
	int strategy, batch;
	double phase_s;
	int rounds;
	int write_pct;
	const int *bind_nodes;
	uint64_t seed;
	/* optional: rounds * 2 * PTR_BENCH_HIST_BUCKETS counts, round r's idle histogram at
	 * [2r], its relocating one at [2r + 1] (per-round pairs) */
	uint64_t *round_hists;
	/* 0: @pages consecutive base pages (their few PTE tables stay in cache); 1: one page per
	 * level-0 table, as the walk bench maps them - every access walks to a table of its own, a
	 * working set far beyond the TLB's and PWC's reach whose tables outgrow the caches */
	int sparse;
};
struct ptr_bench_conc_result {
	uint64_t idle_hist[PTR_BENCH_HIST_BUCKETS];
	uint64_t busy_hist[PTR_BENCH_HIST_BUCKETS];
	uint64_t idle_n, busy_n, idle_max, busy_max, discarded;
	uint64_t relocations, frames, shootdowns;
	uint64_t stopped_max_ns, stopped_sum_ns, reloc_ns;
	int error;
};
int ptr_bench_concurrent(const struct ptr_bench_conc_config *cfg,
			 struct ptr_bench_conc_result *out);
/** Histogram decoding: the bucket of a value, the smallest value of a bucket. */
uint32_t ptr_bench_hist_index(uint64_t v);
uint64_t ptr_bench_hist_lower(uint32_t i);

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

#include "inject.h" /* the ptrace injector (inject.c), for ptreloc.kernel_move */

#include "x86pt.h" /* decoding the kernel's real x86-64 tables (x86pt.c), for ptreloc.kernel_tables */

#endif /* PTRELOC_H */
