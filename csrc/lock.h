/*
 * lock.h - spinlocks, read-side sections and grace periods (cpu.c), and the lock order.
 */
#ifndef PTRELOC_LOCK_H
#define PTRELOC_LOCK_H

#include "geometry.h"

struct ptr_arena;
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

#endif /* PTRELOC_LOCK_H */
