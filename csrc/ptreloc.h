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

#include "geometry.h" /* paging formats, entry encoding (geometry.c) */
#include "lock.h"     /* spinlocks, read-side sections, THE LOCK ORDER (cpu.c) */
#include "arena.h"    /* frames and per-node pools (arena.c) */
#include "pgtable.h"  /* address spaces, fault path, walkers (pgtable.c) */
#include "cpu.h"      /* emulated CPUs, shootdown (cpu.c) */
#include "relocate.h" /* relocation protocols (relocate.c) */
#include "mirror.h"   /* bulk queries for ptreloc.mirror (mirror.c) */
#include "harness.h"  /* stress and bench harnesses (stress.c, bench.c) */

#include "inject.h" /* the ptrace injector (inject.c), for ptreloc.kernel_move */

#include "x86pt.h" /* decoding the kernel's real x86-64 tables (x86pt.c), for ptreloc.kernel_tables */

#endif /* PTRELOC_H */
