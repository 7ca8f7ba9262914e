/*
 * lock.h - spinlocks, read-side sections and grace periods (cpu.c), and the lock order.
 *
 * LOCKING RULES (read before writing code that modifies entries)
 * -------------------------------------------------------------
 * 1. Entries of tables at level 0 (PTE tables) and level 1 (PMD tables) are modified only under
 *    that table frame's split lock, frame->ptl (the kernel's split PTE/PMD ptlocks).  This covers
 *    populating a level-1 entry with a pointer to a new PTE table, installing/clearing leaves,
 *    huge leaves at level 1, and the A/D *consumers* (test_and_clear_young/dirty).
 * 2. Entries of tables at level >= 2, and mm->root, are modified only under mm->page_table_lock.
 * 3. Table locks nest mm->page_table_lock (several mms: ascending mm->id) -> level-1 ptls ->
 *    level-0 ptls; within one level ascending frame index.  A frame that was just allocated and
 *    is not yet linked anywhere may be locked at any point (nobody else can hold or wait for
 *    it).  The order of every lock of the core is LOCK ORDER below.
 * 4. Emulated CPUs set A/D WITHOUT any lock, with an atomic OR (x86) or a CAS loop (arm64) on
 *    the entry they reached - possibly in a stale (limbo) copy of a table.  Software therefore
 *    only ever changes a leaf with atomic exchange / CAS, never with a blind store that could
 *    erase a concurrently set A or D bit.
 * 5. DEADLOCK AVOIDANCE: a relocator waits for shootdown acknowledgements while holding
 *    page_table_lock and ptls (unmap, protect and the dirty-bit consumer shoot down after
 *    dropping theirs, see LOCK ORDER; a relocation's test hook may too).  Any CPU thread that
 *    spins for one of those locks (the software fault path run on behalf of a CPU) MUST service
 *    pending shootdowns while it spins, like a CPU taking an IPI while spinning with interrupts
 *    enabled: use ptr_lock(lock, cpu) with its cpu, never a bare spin.  A CPU that is between
 *    accesses is serviced remotely by the shooter (it takes the CPU's busy lock and flushes for
 *    it), so a CPU driven by a thread that is asleep, or by the very thread that shoots down,
 *    never blocks a shootdown.
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
 *
 * LOCK ORDER (every lock and wait of the core; outermost first, "->" = "is taken before")
 * ---------------------------------------------------------------------------------------
 *
 *   reloc_mutex                         (relocate.c: one relocation at a time, process-wide;
 *                                        evacuation and compaction, relocate_pool.c, are
 *                                        relocations and add no lock of their own)
 *     -> cpus_lock                      (arena: the CPU set; stop strategy: held from parking
 *                                        the CPUs until they resume)
 *       -> cpu->busy, ascending slot    (stop strategy parks every CPU; shootdown and grace
 *                                        periods only ever TRY it, never wait for it)
 *         -> mm->page_table_lock, ascending mm->id
 *           -> level-1 ptls, ascending frame index
 *             -> level-0 ptls, ascending frame index
 *               -> fresh (unlinked) frames' ptls, any order
 *                 -> mm->tables_lock    (pgtable.h: the mm's table list; populate appends under
 *                                        the table lock it links with, a relocation replaces
 *                                        under its batch's locks, the collection reads it with
 *                                        no table lock; nothing is taken under it and no holder
 *                                        waits for anything - no shootdown - so a CPU thread may
 *                                        spin for it without servicing, rule 5 notwithstanding)
 *                 -> pool->lock         (arena.c: frame alloc/free; innermost, held briefly -
 *                                        PTR_ALLOC_LOWEST, compaction's allocation, walks the
 *                                        pool's free list under it, taking nothing else)
 *
 *   reloc_mutex -> sync_mutex -> cpus_lock    (ptr_synchronize(): grace periods serialize;
 *                                              called with no table lock held)
 *
 * and the nestings outside that chain:
 *
 *   cpu->busy -> page_table_lock -> ptls     a CPU's own access runs the fault path inside it
 *                                            (ptr_cpu_access_fault()); it never takes cpus_lock
 *   page_table_lock / ptls -> cpus_lock      the rewalk and naive strategies shoot down (and run
 *                                            the test hook) with the batch's table locks held
 *   page_table_lock / ptls -> cpu->busy      the test hook may drive a CPU's access with the
 *                                            batch's locks held - only one that hits present
 *                                            entries (never the fault path), on a CPU that
 *                                            thread alone drives
 *   read-side section -> any table lock      not a lock: ptr_synchronize() waits for sections,
 *                                            so it is never called holding a table lock
 *
 * Why the stop strategy (cpus_lock -> busy -> page_table_lock) and the rewalk strategy's
 * shootdown (page_table_lock -> cpus_lock) cannot deadlock although they nest cpus_lock and
 * page_table_lock in opposite orders: both orders occur ONLY inside a relocation, and
 * relocations hold reloc_mutex, so the two nestings never run at the same time (reloc_mutex
 * is what orders them, as mmap_lock orders the kernel's page-table locks against each other).
 * Every other ptr_shootdown() caller - unmap, protect, test_and_clear_dirty, the stress's
 * aging - shoots down after dropping its table lock, and the remaining cpus_lock users
 * (CPU create/destroy, ptr_mm_destroy()'s check, ptr_synchronize()) hold no table lock. So a
 * stop relocation, once it holds cpus_lock and every busy lock, waits for a table lock only
 * behind a holder that does not wait for anything it holds: no CPU is inside an access (it
 * holds their busy locks), and a non-CPU holder (Python, the reclaimer) only does atomic work
 * under a table lock.  Keep it so: a new call of ptr_shootdown() under a table lock outside
 * relocate.c, or cpus_lock taken under a table lock, breaks this argument.
 *
 * Waits that are not locks, and why they terminate: ptr_shootdown() waits for every CPU running
 * the mm to acknowledge - a CPU inside an access acknowledges while it spins for any lock (rule
 * 5), one between accesses is serviced by the shooter through a successful trylock of its busy
 * lock; ptr_synchronize() waits for accesses in progress to end and for older read-side
 * sections to drain, and is never called under a table lock or inside a section.
 *
 * Functions are documented (kernel-doc: arguments, Return:, Locking:) at their definitions in
 * cpu.c; static inline ones here.
 */
#ifndef PTRELOC_LOCK_H
#define PTRELOC_LOCK_H

#include "geometry.h"

struct ptr_arena;
typedef struct { _Atomic int locked; } ptr_spinlock_t;
struct ptr_cpu;

void ptr_lock(ptr_spinlock_t *lock, struct ptr_cpu *cpu);
bool ptr_trylock(ptr_spinlock_t *lock);
void ptr_unlock(ptr_spinlock_t *lock);

/* ------------------------------------------------------------------------------------------ */
/* Read-side sections and grace periods (cpu.c)                                                 */
/* ------------------------------------------------------------------------------------------ */

#if PTR_RELOCATION
int ptr_read_lock(struct ptr_arena *a);
void ptr_read_unlock(struct ptr_arena *a, int token);
void ptr_synchronize(struct ptr_arena *a);
#define PTR_READ_LOCK(a) ptr_read_lock(a)
#define PTR_READ_UNLOCK(a, t) ptr_read_unlock(a, t)
#else
#define PTR_READ_LOCK(a) 0
#define PTR_READ_UNLOCK(a, t) ((void)(t))
#endif

#endif /* PTRELOC_LOCK_H */
