/*
 * ptreloc.h - the umbrella header of the ptreloc C core: one header per subsystem, all of
 * them included here (the .c files and the cffi module include just this one).
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
 * Locking: the LOCKING RULES and the whole LOCK ORDER are in lock.h - read them before
 * writing code that modifies entries.
 */
#ifndef PTRELOC_H
#define PTRELOC_H

#include "geometry.h" /* paging formats, entry encoding (geometry.c) */
#include "lock.h"     /* spinlocks, read-side sections, THE LOCK ORDER (cpu.c) */
#include "arena.h"    /* frames and per-node pools (arena.c) */
#include "pgtable.h"  /* address spaces, fault path, walkers (pgtable.c) */
#include "cpu.h"      /* emulated CPUs, shootdown (cpu.c) */
#include "relocate.h" /* relocation protocols (relocate.c) */
#include "relocate_pool.h" /* evacuating and compacting a pool with them (relocate_pool.c) */
#include "mirror.h"   /* bulk queries for ptreloc.mirror (mirror.c) */
#include "pagescan.h" /* per-page loops over a live process's arrays (pagescan.c) */
#include "harness.h"  /* stress and bench harnesses (stress.c, bench.c) */

#include "inject.h" /* the ptrace injector (inject.c), for ptreloc.kernel_move */

#include "x86pt.h" /* decoding the kernel's real x86-64 tables (x86pt.c), for ptreloc.kernel_tables */

#endif /* PTRELOC_H */
