/*
 * geometry.h - paging formats (geometry.c): limits, levels, entry encoding and atomic entry access.
 *
 * The base header: every other header of the core includes it.
 *
 * Functions are documented (kernel-doc: arguments, Return:, Locking:) at their definitions in
 * geometry.c; static inline ones here.
 */
#ifndef PTRELOC_GEOMETRY_H
#define PTRELOC_GEOMETRY_H

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

int ptr_va_check(const struct ptr_geometry *g, uint64_t va);

/* Entry encoding/decoding (geometry.c).  @e is an entry value read with ptr_entry_load(). */
bool ptr_entry_present(const struct ptr_geometry *g, int level, uint64_t e);
bool ptr_entry_is_table(const struct ptr_geometry *g, int level, uint64_t e);
uint64_t ptr_entry_phys(const struct ptr_geometry *g, int level, uint64_t e);
bool ptr_entry_writable(const struct ptr_geometry *g, uint64_t e);
bool ptr_entry_young(const struct ptr_geometry *g, uint64_t e);
bool ptr_entry_dirty(const struct ptr_geometry *g, uint64_t e);
uint64_t ptr_entry_make_leaf(const struct ptr_geometry *g, int level, uint64_t phys, bool writable);
uint64_t ptr_entry_make_table(const struct ptr_geometry *g, int level, uint64_t phys);
uint64_t ptr_entry_ad_bits(const struct ptr_geometry *g);
uint64_t ptr_entry_merge_ad(const struct ptr_geometry *g, uint64_t new_e, uint64_t old_e);

/* ptr_entry_is_leaf() is inline: the emulated hardware walk (cpu.c) tests every entry with
 * it, between one table load and the next. */
/**
 * ptr_entry_is_leaf() - does entry @e map memory: present at level 0, or a huge (x86 PS) /
 * block (arm64, table bit clear) leaf at a level that allows leaves?
 * @g:     the geometry
 * @level: the level it was read at
 * @e:     the entry
 *
 * Return: true for a leaf.
 * Locking: none; pure.
 */
static inline bool ptr_entry_is_leaf(const struct ptr_geometry *g, int level, uint64_t e)
{
	if (!(e & g->e_present))
		return false;
	if (level == 0)
		return true;
	if (!g->level[level].leaf_ok)
		return false;
	if (g->arch == PTR_ARCH_X86)
		return e & g->e_huge;
	return !(e & g->e_tablebit);
}

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
int ptr_describe_geometry(int i, struct ptr_geometry_info *out);

#endif /* PTRELOC_GEOMETRY_H */
