/*
 * geometry.c - the paging formats, table-driven, and entry encoding.
 *
 * Each format lists its levels bottom-up (level 0 = PTE level).  Bit positions are the real
 * ones (Intel SDM vol. 3 ch. 4; Arm ARM D8 "VMSAv8-64 translation table format"), so an entry
 * dumped from an arena reads like one dumped from hardware.
 */
#include <errno.h>
#include <string.h>

#include "ptreloc.h"

#define BIT(n) (1ULL << (n))

/* x86 */
#define X86_P BIT(0)
#define X86_RW BIT(1)
#define X86_US BIT(2)
#define X86_A BIT(5)
#define X86_D BIT(6)
#define X86_PS BIT(7)
#define X86_TABLE (X86_P | X86_RW | X86_US | X86_A) /* Linux's _PAGE_TABLE less D */
#define X86_ADDR64 0x000ffffffffff000ULL
#define X86_ADDR32 0xfffff000ULL

/* arm64 */
#define ARM_VALID BIT(0)
#define ARM_TABLE BIT(1)   /* table descriptor at levels > 0, page descriptor at level 0 */
#define ARM_AP1 BIT(6)     /* EL0 access */
#define ARM_AP2 BIT(7)     /* read-only */
#define ARM_AF BIT(10)
#define ARM_DBM BIT(51)
#define ARM_SWDIRTY BIT(55)
#define ARM_ADDR_4K 0x0000fffffffff000ULL
#define ARM_ADDR_64K 0x0000ffffffff0000ULL

#define LVL(nm, sh, bi, es, leaf, tf)                                                            \
	{ .name = nm, .shift = sh, .bits = bi, .entry_size = es, .leaf_ok = leaf,                  \
	  .table_bytes = (1u << (bi)) * (es), .table_flags = tf }

#define X86_BITS                                                                                   \
	.arch = PTR_ARCH_X86, .e_present = X86_P, .e_write = X86_RW, .e_user = X86_US,            \
	.e_accessed = X86_A, .e_dirty = X86_D, .e_huge = X86_PS
#define ARM_BITS                                                                                   \
	.arch = PTR_ARCH_ARM64, .e_present = ARM_VALID, .e_rdonly = ARM_AP2, .e_user = ARM_AP1,   \
	.e_accessed = ARM_AF, .e_dbm = ARM_DBM, .e_swdirty = ARM_SWDIRTY, .e_tablebit = ARM_TABLE

static const struct ptr_geometry geometries[] = {
	{
		.name = "x86_64_4l", X86_BITS, .nlevels = 4, .va_bits = 48, .canonical = true,
		.frame_bytes = 4096, .phys_limit = BIT(52), .e_addr = X86_ADDR64,
		.level = { LVL("pte", 12, 9, 8, 1, 0), LVL("pmd", 21, 9, 8, 1, X86_TABLE),
			   LVL("pud", 30, 9, 8, 1, X86_TABLE), LVL("pgd", 39, 9, 8, 0, X86_TABLE) },
	},
	{
		.name = "x86_64_5l", X86_BITS, .nlevels = 5, .va_bits = 57, .canonical = true,
		.frame_bytes = 4096, .phys_limit = BIT(52), .e_addr = X86_ADDR64,
		.level = { LVL("pte", 12, 9, 8, 1, 0), LVL("pmd", 21, 9, 8, 1, X86_TABLE),
			   LVL("pud", 30, 9, 8, 1, X86_TABLE), LVL("p4d", 39, 9, 8, 0, X86_TABLE),
			   LVL("pgd", 48, 9, 8, 0, X86_TABLE) },
	},
	{
		/* PDPTEs: only P and the address; RW/US/A are reserved there. */
		.name = "x86_pae", X86_BITS, .nlevels = 3, .va_bits = 32, .top_preloaded = true,
		.frame_bytes = 4096, .phys_limit = BIT(52), .e_addr = X86_ADDR64,
		.level = { LVL("pte", 12, 9, 8, 1, 0), LVL("pmd", 21, 9, 8, 1, X86_TABLE),
			   LVL("pgd", 30, 2, 8, 0, X86_P) },
	},
	{
		.name = "x86_32", X86_BITS, .nlevels = 2, .va_bits = 32, .frame_bytes = 4096,
		.phys_limit = BIT(32), .e_addr = X86_ADDR32,
		.level = { LVL("pte", 12, 10, 4, 1, 0), LVL("pgd", 22, 10, 4, 1, X86_TABLE) },
	},
	{
		.name = "arm64_4k_39", ARM_BITS, .nlevels = 3, .va_bits = 39, .frame_bytes = 4096,
		.phys_limit = BIT(48), .e_addr = ARM_ADDR_4K,
		.level = { LVL("L3", 12, 9, 8, 1, 0), LVL("L2", 21, 9, 8, 1, ARM_VALID | ARM_TABLE),
			   LVL("L1", 30, 9, 8, 1, ARM_VALID | ARM_TABLE) },
	},
	{
		/* 64 KiB granule, 48-bit: 13 + 13 + 6 index bits; the L1 table has 64 entries. */
		.name = "arm64_64k_48", ARM_BITS, .nlevels = 3, .va_bits = 48, .frame_bytes = 65536,
		.phys_limit = BIT(48), .e_addr = ARM_ADDR_64K,
		.level = { LVL("L3", 16, 13, 8, 1, 0), LVL("L2", 29, 13, 8, 1, ARM_VALID | ARM_TABLE),
			   LVL("L1", 42, 6, 8, 0, ARM_VALID | ARM_TABLE) },
	},
};

#define NGEOMETRIES ((int)(sizeof(geometries) / sizeof(geometries[0])))

/**
 * ptr_geometry_find() - a built-in geometry by name ("x86_64_4l", "arm64_64k_48", ...).
 * @name: the name
 *
 * Return: the geometry, NULL when unknown.
 * Locking: none; geometries are constant.
 */
const struct ptr_geometry *ptr_geometry_find(const char *name)
{
	if (!name)
		return NULL;
	for (int i = 0; i < NGEOMETRIES; i++)
		if (strcmp(geometries[i].name, name) == 0)
			return &geometries[i];
	return NULL;
}

/**
 * ptr_geometry_count() - how many built-in geometries there are (for ptr_geometry_at()).
 *
 * Return: the count.
 * Locking: none; geometries are constant.
 */
int ptr_geometry_count(void)
{
	return NGEOMETRIES;
}

/**
 * ptr_geometry_at() - built-in geometry @i.
 * @i: 0..ptr_geometry_count() - 1
 *
 * Return: the geometry, NULL when @i is out of range.
 * Locking: none; geometries are constant.
 */
const struct ptr_geometry *ptr_geometry_at(int i)
{
	return (i >= 0 && i < NGEOMETRIES) ? &geometries[i] : NULL;
}

/**
 * ptr_va_check() - is @va an address of format @g?
 * @g:  the geometry
 * @va: the address
 *
 * Return: 0; -ERANGE (at or above 2^va_bits); -EDOM (x86-64: not canonical, i.e. bits
 * 63..va_bits-1 are not all equal to bit va_bits-1).
 * Locking: none; pure.
 */
int ptr_va_check(const struct ptr_geometry *g, uint64_t va)
{
	if (!g->canonical)
		return (va >> g->va_bits) ? -ERANGE : 0;
	/* x86-64: bits 63..va_bits-1 must all equal bit va_bits-1 (sign extension). */
	int64_t hi = (int64_t)va >> (g->va_bits - 1);
	return (hi == 0 || hi == -1) ? 0 : -EDOM;
}

/**
 * ptr_entry_present() - is entry @e (read at @level) present / valid?
 * @g:     the geometry
 * @level: the level it was read at
 * @e:     the entry (ptr_entry_load())
 *
 * Return: true when the present (x86) or valid (arm64) bit is set.
 * Locking: none; pure (decoding a value the caller loaded).
 */
bool ptr_entry_present(const struct ptr_geometry *g, int level, uint64_t e)
{
	return e & g->e_present;
}

/**
 * ptr_entry_is_table() - does entry @e point to a lower-level table?
 * @g:     the geometry
 * @level: the level it was read at (level-0 entries never do)
 * @e:     the entry
 *
 * Return: true when present and not a leaf above level 0.
 * Locking: none; pure.
 */
bool ptr_entry_is_table(const struct ptr_geometry *g, int level, uint64_t e)
{
	return level > 0 && (e & g->e_present) && !ptr_entry_is_leaf(g, level, e);
}

/**
 * ptr_entry_phys() - the physical address entry @e holds: a table's, or a leaf's page base
 * (for a huge leaf with the bits below its page size dropped, where x86 keeps PAT).
 * @g:     the geometry
 * @level: the level it was read at
 * @e:     the entry
 *
 * Return: the address.
 * Locking: none; pure.
 */
uint64_t ptr_entry_phys(const struct ptr_geometry *g, int level, uint64_t e)
{
	uint64_t mask = g->e_addr;
	if (level > 0 && ptr_entry_is_leaf(g, level, e))
		mask &= ~(ptr_level_size(g, level) - 1); /* huge leaf: drop PAT/low bits */
	return e & mask;
}

/**
 * ptr_entry_writable() - may leaf @e be written?  x86: RW.  arm64: AP[2] clear, or DBM set
 * (writable-clean: the hardware clears AP[2] on the first write).
 * @g: the geometry
 * @e: the leaf entry
 *
 * Return: true when writable.
 * Locking: none; pure.
 */
bool ptr_entry_writable(const struct ptr_geometry *g, uint64_t e)
{
	if (g->arch == PTR_ARCH_X86)
		return e & g->e_write;
	return !(e & g->e_rdonly) || (e & g->e_dbm);
}

/**
 * ptr_entry_young() - is the accessed bit (x86 A, arm64 AF) of @e set?
 * @g: the geometry
 * @e: the leaf entry
 *
 * Return: true when accessed.
 * Locking: none; pure.
 */
bool ptr_entry_young(const struct ptr_geometry *g, uint64_t e)
{
	return e & g->e_accessed;
}

/**
 * ptr_entry_dirty() - is leaf @e dirty?  x86: D.  arm64: the software dirty bit, or DBM with
 * AP[2] clear (hardware dirty).
 * @g: the geometry
 * @e: the leaf entry
 *
 * Return: true when dirty.
 * Locking: none; pure.
 */
bool ptr_entry_dirty(const struct ptr_geometry *g, uint64_t e)
{
	if (g->arch == PTR_ARCH_X86)
		return e & g->e_dirty;
	return (e & g->e_swdirty) || ((e & g->e_dbm) && !(e & g->e_rdonly));
}

/**
 * ptr_entry_make_leaf() - a leaf at @level for @phys, accessed and dirty clear (arm64: a
 * writable leaf starts writable-clean, DBM=1 and AP[2]=1).
 * @g:        the geometry
 * @level:    the level it will live at (a huge/block leaf above 0)
 * @phys:     the page base, aligned to the level's page size
 * @writable: writable
 *
 * Return: the entry.
 * Locking: none; pure.
 */
uint64_t ptr_entry_make_leaf(const struct ptr_geometry *g, int level, uint64_t phys, bool writable)
{
	uint64_t e = g->e_present | g->e_user | phys;
	if (g->arch == PTR_ARCH_X86) {
		if (writable)
			e |= g->e_write;
		if (level > 0)
			e |= g->e_huge;
	} else {
		if (level == 0)
			e |= g->e_tablebit; /* page descriptor */
		/* writable-clean (DBM=1, AP[2]=1) or read-only (AP[2]=1) */
		e |= g->e_rdonly;
		if (writable)
			e |= g->e_dbm;
	}
	return e;
}

/**
 * ptr_entry_make_table() - an entry at @level pointing to the table at @phys.
 * @g:     the geometry
 * @level: the level of the entry (the table is at @level - 1)
 * @phys:  the table's physical address (frame index * frame_bytes)
 *
 * Return: the entry (the level's table flags and the address).
 * Locking: none; pure.
 */
uint64_t ptr_entry_make_table(const struct ptr_geometry *g, int level, uint64_t phys)
{
	return g->level[level].table_flags | phys;
}

/**
 * ptr_entry_ad_bits() - the entry bits that carry accessed/dirty state by being SET.
 * @g: the geometry
 *
 * arm64 hardware dirtiness is AP[2] being CLEAR, which no OR can carry: a merge must use
 * ptr_entry_merge_ad().
 * Return: the mask (x86: A|D; arm64: AF|software dirty).
 * Locking: none; pure.
 */
uint64_t ptr_entry_ad_bits(const struct ptr_geometry *g)
{
	return g->e_accessed | g->e_dirty | g->e_swdirty;
}

/**
 * ptr_entry_merge_ad() - @new_e with the accessed/dirty state of @old_e added.
 * @g:     the geometry
 * @new_e: the entry to merge into
 * @old_e: the entry whose A/D state is carried over (a stale copy's)
 *
 * Return: the merged entry (arm64: AP[2] cleared too when @old_e was hardware-dirty).
 * Locking: none; pure - the caller stores the result with a CAS (relocate.c, merge_entry()).
 */
uint64_t ptr_entry_merge_ad(const struct ptr_geometry *g, uint64_t new_e, uint64_t old_e)
{
	new_e |= old_e & ptr_entry_ad_bits(g);
	/* arm64 hardware dirty is AP[2] CLEAR on a DBM entry: carry it by clearing AP[2]. */
	if (g->e_dbm && (old_e & g->e_dbm) && !(old_e & g->e_rdonly) && (new_e & g->e_dbm))
		new_e &= ~g->e_rdonly;
	return new_e;
}

/**
 * ptr_describe_geometry() - describe built-in geometry @i in plain fields for Python (no
 * atomics, no inline functions).
 * @i:   0..ptr_geometry_count() - 1
 * @out: the description
 *
 * Return: 0; -EINVAL (no such geometry).
 * Locking: none; geometries are constant.
 */
int ptr_describe_geometry(int i, struct ptr_geometry_info *out)
{
	const struct ptr_geometry *g = ptr_geometry_at(i);
	if (!g)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	out->name = g->name;
	out->arch = g->arch;
	out->nlevels = g->nlevels;
	out->va_bits = g->va_bits;
	out->canonical = g->canonical;
	out->top_preloaded = g->top_preloaded;
	out->frame_bytes = g->frame_bytes;
	out->phys_limit = g->phys_limit;
	for (int l = 0; l < g->nlevels; l++) {
		out->level[l].name = g->level[l].name;
		out->level[l].shift = g->level[l].shift;
		out->level[l].bits = g->level[l].bits;
		out->level[l].entry_size = g->level[l].entry_size;
		out->level[l].table_bytes = g->level[l].table_bytes;
		out->level[l].leaf_ok = g->level[l].leaf_ok;
	}
	return 0;
}
