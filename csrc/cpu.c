/*
 * cpu.c - locks, emulated CPUs (TLB, paging-structure caches, cached root, hardware walk),
 * TLB shootdown, and grace periods.
 *
 * The hardware walk is modelled on the x86 and Arm rules that matter for relocation:
 * - paging-structure caches hold POINTERS to table frames, keyed by VA prefix; after a
 *   relocation they point at the old copy until a flush, and a walk that starts there sets A/D
 *   in the old copy - exactly the window the relocation protocol's merge step closes;
 * - A/D updates are atomic read-modify-writes of the entry the walk read (a CAS that retries
 *   when the entry changed, so a cleared entry is never resurrected with stray A/D bits);
 * - x86 PAE loads the four PDPTEs into registers at CR3 load: the walk reads those copies,
 *   never the top table, so changing the top table needs a root reload.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "ptreloc.h"

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#else
	atomic_signal_fence(memory_order_seq_cst);
#endif
}

/* ---- locks ---------------------------------------------------------------------------------- */

/**
 * ptr_trylock() - take @lock if it is free, without waiting.
 * @lock: the lock
 *
 * Return: true when taken (acquire ordering), false when held by someone.
 * Locking: any context; never waits, so it may be used against the lock order (shootdowns and
 * grace periods try CPUs' busy locks while holding cpus_lock).
 */
bool ptr_trylock(ptr_spinlock_t *lock)
{
	int zero = 0;
	return atomic_load_explicit(&lock->locked, memory_order_relaxed) == 0 &&
	       atomic_compare_exchange_strong_explicit(&lock->locked, &zero, 1,
						       memory_order_acquire, memory_order_relaxed);
}

/**
 * ptr_lock() - take a spinlock; while spinning, service @cpu's pending shootdowns.
 * @lock: the lock
 * @cpu:  the emulated CPU on whose behalf the caller runs (its thread, inside an access), or
 *        NULL for a non-CPU thread (Python, a relocator, a reclaimer)
 *
 * The holder may be waiting for @cpu's shootdown acknowledgement (LOCKING RULE 5): servicing
 * while spinning is what keeps that from deadlocking, like a CPU taking an IPI while it spins
 * with interrupts enabled.  Yields after a short spin (2 cores are shared by many threads).
 * Return: nothing; returns with @lock held.
 * Locking: in the order of lock.h (LOCK ORDER).
 */
void ptr_lock(ptr_spinlock_t *lock, struct ptr_cpu *cpu)
{
	unsigned spins = 0;
	while (!ptr_trylock(lock)) {
		/* Rule 5: the holder may be waiting for this CPU's shootdown ack. */
		if (cpu)
			ptr_cpu_service(cpu);
		if (++spins > 64)
			sched_yield();
		else
			cpu_relax();
	}
}

/**
 * ptr_unlock() - release @lock (release ordering).
 * @lock: a lock the caller holds
 *
 * Return: nothing.
 * Locking: the caller holds @lock.
 */
void ptr_unlock(ptr_spinlock_t *lock)
{
	atomic_store_explicit(&lock->locked, 0, memory_order_release);
}

/* ---- read-side sections and grace periods ---------------------------------------------------- */

#if PTR_RELOCATION
/**
 * ptr_read_lock() - enter a software read-side section: lockless table reads by a non-CPU
 * thread (CPUs are in one for the duration of each access: their busy lock).
 * @a: the arena
 *
 * Return: a token for ptr_read_unlock().
 * Locking: any; nests (at the price of two more locked RMWs), and the section may hold table
 * locks - but ptr_synchronize() must not be called inside it.
 */
int ptr_read_lock(struct ptr_arena *a)
{
	for (;;) {
		int idx = (int)(atomic_load(&a->rd_epoch) & 1);
		atomic_fetch_add(&a->rd_count[idx], 1);
		/* If the epoch flipped meanwhile, a synchronize may already have checked this
		 * counter; retry on the new one (our table reads all follow the flip). */
		if ((int)(atomic_load(&a->rd_epoch) & 1) == idx)
			return idx;
		atomic_fetch_sub(&a->rd_count[idx], 1);
	}
}

/**
 * ptr_read_unlock() - leave the read-side section ptr_read_lock() returned @token for.
 * @a:     the arena
 * @token: ptr_read_lock()'s return value
 *
 * Return: nothing.
 * Locking: the caller is in that section.
 */
void ptr_read_unlock(struct ptr_arena *a, int token)
{
	atomic_fetch_sub(&a->rd_count[token], 1);
}

/*
 * wait_quiescent() - return once CPU @c is, or has been since this call began, outside an
 * access.  A CPU's read-side section IS its busy lock (held for the whole access, fault path
 * included), so the hot path pays nothing for relocation beyond one plain store of @seq:
 * - we take and drop busy: the CPU is between accesses, and its next access takes busy after
 *   our release, so it happens after everything the caller unlinked - done;
 * - busy is held (acquire load): read @seq AFTER seeing it held.  The holder's busy CAS
 *   continues the release sequence of the previous access's unlock, so the value read counts
 *   at least every access that ended before the one in progress; a change means that one
 *   ended too (leave_access() bumps @seq before dropping busy).  A shooter or a stopped-CPU
 *   relocator may be the holder instead: then the trylock succeeds as soon as it lets go.
 */
static void wait_quiescent(struct ptr_cpu *c)
{
	for (;;) {
		if (ptr_trylock(&c->busy)) {
			ptr_unlock(&c->busy);
			return;
		}
		if (atomic_load_explicit(&c->busy.locked, memory_order_acquire))
			break;
	}
	uint64_t s = atomic_load_explicit(&c->seq, memory_order_acquire);
	while (atomic_load_explicit(&c->seq, memory_order_acquire) == s) {
		if (ptr_trylock(&c->busy)) {
			ptr_unlock(&c->busy);
			return;
		}
		sched_yield();
	}
}

/*
 * Grace periods serialize: with two at once, the second could flip the epoch back and wait
 * on the counter the first one flipped away from, returning while a reader that began before
 * it still runs on the other side (SRCU holds a mutex for the same reason).
 */
static pthread_mutex_t sync_mutex = PTHREAD_MUTEX_INITIALIZER;

/**
 * ptr_synchronize() - wait for a grace period: every CPU has passed a quiescent point (ended
 * the access it was in) or was outside an access, and every software read-side section that
 * began before the call has ended.  Afterwards LIMBO frames unlinked before the call can be
 * freed.
 * @a: the arena
 *
 * Return: nothing.
 * Locking: takes sync_mutex, then cpus_lock (CPUs' busy locks only tried).  Must not be called
 * holding any table lock or from inside a read-side section: both may be what it waits for.
 */
void ptr_synchronize(struct ptr_arena *a)
{
	pthread_mutex_lock(&sync_mutex);
	atomic_thread_fence(memory_order_seq_cst); /* the caller's unlinks before our checks */
	ptr_lock(&a->cpus_lock, NULL);
	int i;
	ptr_for_each_cpu(a, i)
		wait_quiescent(a->cpus[i]);
	ptr_unlock(&a->cpus_lock);
	/* Software readers: flip the epoch, wait for the old side to drain. */
	int old = (int)(atomic_fetch_add(&a->rd_epoch, 1) & 1);
	while (atomic_load(&a->rd_count[old]) != 0)
		sched_yield();
	pthread_mutex_unlock(&sync_mutex);
}
#endif

/* ---- CPUs ----------------------------------------------------------------------------------- */

/**
 * ptr_cpu_create() - a new, idle emulated CPU of arena @a.
 * @a:   the arena
 * @out: the CPU
 *
 * Return: 0 and *@out; -ENOMEM; -EMFILE (PTR_MAX_CPUS exist); -EINVAL (the arena's frame size
 * is not a power of two - no shipped format has one).
 * Locking: takes cpus_lock; call with no table lock held.
 */
int ptr_cpu_create(struct ptr_arena *a, struct ptr_cpu **out)
{
	if (a->frame_bytes == 0 || (a->frame_bytes & (a->frame_bytes - 1)))
		return -EINVAL;
	struct ptr_cpu *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->arena = a;
	c->frame_shift = (unsigned int)__builtin_ctz(a->frame_bytes);
	c->frame_mask = a->frame_bytes - 1;
	c->root = PTR_NO_FRAME;
	ptr_lock(&a->cpus_lock, NULL);
	for (int i = 0; i < PTR_MAX_CPUS; i++) {
		if (!a->cpus[i]) {
			c->slot = i;
			a->cpus[i] = c;
			atomic_fetch_or_explicit(&a->cpus_mask, 1ULL << i, memory_order_relaxed);
			atomic_fetch_add(&a->cpus_gen, 1);
			ptr_unlock(&a->cpus_lock);
			*out = c;
			return 0;
		}
	}
	ptr_unlock(&a->cpus_lock);
	free(c);
	return -EMFILE;
}

/**
 * ptr_cpu_destroy() - switch @c out (idle), unregister and free it.
 * @c: the CPU
 *
 * Return: 0.
 * Locking: takes @c's busy lock, then (after dropping it) cpus_lock; call from the thread that
 * drives @c, with no table lock held.
 */
int ptr_cpu_destroy(struct ptr_cpu *c)
{
	struct ptr_arena *a = c->arena;
	ptr_cpu_switch_to(c, NULL);
	ptr_lock(&a->cpus_lock, NULL);
	a->cpus[c->slot] = NULL;
	atomic_fetch_and_explicit(&a->cpus_mask, ~(1ULL << c->slot), memory_order_relaxed);
	atomic_fetch_add(&a->cpus_gen, 1);
	ptr_unlock(&a->cpus_lock);
	free(c);
	return 0;
}

static void flush_locked(struct ptr_cpu *c)
{
	memset(c->tlb, 0, sizeof(c->tlb));
	memset(c->pwc, 0, sizeof(c->pwc));
}

/**
 * ptr_cpu_flush() - local full TLB and paging-structure-cache flush of @c (no acknowledgement:
 * it is not a shootdown).
 * @c: the CPU
 *
 * Return: nothing.
 * Locking: takes @c's busy lock, because a shooter may be servicing @c remotely (flushing it)
 * at the same time; not from inside @c's own access.
 */
void ptr_cpu_flush(struct ptr_cpu *c)
{
	ptr_lock(&c->busy, NULL);
	flush_locked(c);
	ptr_unlock(&c->busy);
}

/* CR3 load.  Gens were read before this, so a root change after the read is re-serviced. */
static void load_root(struct ptr_cpu *c, struct ptr_mm *mm)
{
	const struct ptr_geometry *g = mm->geo;
	c->root = atomic_load(&mm->root);
	if (g->top_preloaded) {
		int top = g->nlevels - 1;
		void *t = ptr_frame_data(c->arena, c->root);
		for (uint32_t i = 0; i < (1u << g->level[top].bits) && i < 4; i++)
			c->pdpte[i] = ptr_entry_load(g, top, t, i);
	}
	c->st.reloads++;
}

/* service_locked()'s slow path: a shootdown of generation @gen is pending. */
static void __attribute__((noinline)) service_pending(struct ptr_cpu *c, struct ptr_mm *mm,
						      uint64_t gen)
{
	uint64_t reload = atomic_load(&mm->reload_gen);
	flush_locked(c);
	if (reload != c->seen_reload) {
		c->seen_reload = reload;
		load_root(c, mm);
	}
	c->st.shootdowns++;
	atomic_store(&c->seen_gen, gen);
}

/* Caller holds c->busy.  Inline: every access checks, almost none finds a shootdown. */
static inline void service_locked(struct ptr_cpu *c)
{
	struct ptr_mm *mm = atomic_load_explicit(&c->mm, memory_order_relaxed);
	if (!mm)
		return;
	uint64_t gen = atomic_load(&mm->tlb_gen);
	if (likely(gen == atomic_load_explicit(&c->seen_gen, memory_order_relaxed)))
		return;
	service_pending(c, mm, gen);
}

/**
 * ptr_cpu_service() - if a shootdown for @c's mm is pending: flush, reload the root if asked,
 * acknowledge.
 * @c: the CPU
 *
 * Return: nothing.
 * Locking: the caller holds @c's busy lock - @c's own thread inside an access (or spinning for
 * a lock in one, ptr_lock()), or a shooter/stopper that took it for @c.
 */
void ptr_cpu_service(struct ptr_cpu *c)
{
	service_locked(c);
}

/**
 * ptr_cpu_switch_to() - run @mm on @c (NULL: go idle): flush TLB and PWC, load the root,
 * acknowledge the current generation.
 * @c:  the CPU
 * @mm: the address space, of @c's arena, or NULL
 *
 * Return: 0; -EINVAL (@mm of another arena).
 * Locking: takes @c's busy lock; from the thread driving @c, outside an access.
 */
int ptr_cpu_switch_to(struct ptr_cpu *c, struct ptr_mm *mm)
{
	if (mm && mm->arena != c->arena)
		return -EINVAL;
	ptr_lock(&c->busy, NULL);
	atomic_store(&c->mm, mm);
	flush_locked(c);
	if (mm) {
		/* gens first, then the root: see load_root() */
		uint64_t gen = atomic_load(&mm->tlb_gen);
		c->seen_reload = atomic_load(&mm->reload_gen);
		load_root(c, mm);
		atomic_store(&c->seen_gen, gen);
	} else {
		c->root = PTR_NO_FRAME;
	}
	ptr_unlock(&c->busy);
	return 0;
}

/**
 * ptr_cpu_get_stats() - copy @c's counters.
 * @c:   the CPU
 * @out: the counters
 *
 * Return: nothing.
 * Locking: takes @c's busy lock (the counters are written inside accesses).
 */
void ptr_cpu_get_stats(struct ptr_cpu *c, struct ptr_cpu_stats *out)
{
	ptr_lock(&c->busy, NULL);
	*out = c->st;
	ptr_unlock(&c->busy);
}

/*
 * An access is a read-side section from taking busy to dropping it (see wait_quiescent()).
 * The busy CAS is paid by both builds; relocation support adds one plain store of @seq (only
 * this thread writes it), no atomic read-modify-write.
 */
static inline void enter_access(struct ptr_cpu *c)
{
	/* ptr_trylock()'s CAS inline (it and ptr_lock() are calls through the PLT); a busy lock
	 * held by a shooter servicing this CPU remotely is the rare case */
	int zero = 0;
	if (likely(atomic_compare_exchange_strong_explicit(&c->busy.locked, &zero, 1,
							   memory_order_acquire,
							   memory_order_relaxed)))
		return;
	ptr_lock(&c->busy, NULL);
}

static inline void leave_access(struct ptr_cpu *c)
{
#if PTR_RELOCATION
	atomic_store_explicit(&c->seq, atomic_load_explicit(&c->seq, memory_order_relaxed) + 1,
			      memory_order_release);
#endif
	atomic_store_explicit(&c->busy.locked, 0, memory_order_release); /* ptr_unlock(), inline */
}

static inline uint32_t tlb_set(uint64_t vpn)
{
	return (uint32_t)(vpn % PTR_TLB_SETS);
}

/*
 * fault_invalidate() - what delivering a fault does to the translation caches (Intel SDM vol. 3A
 * 4.10.4.1: a page fault invalidates the TLB entries and the paging-structure-cache entries
 * that would be used for the faulting linear address; arm64 caches no faulting translation):
 * drop @va's TLB entries at every leaf level and its PWC entries at every level, so the access
 * the fault path is retried for walks from the root.  Keeping the PWC entries made a retry start
 * again from the table the faulting walk used: when that was an unlinked copy (repointed, its
 * shootdown not yet delivered) and the fault path had fixed the entry in the live table, every
 * retry faulted on the copy and the access failed after its retries with a fault code.
 */
static void fault_invalidate(struct ptr_cpu *c, const struct ptr_geometry *g, uint64_t va)
{
	for (int l = 0; l < g->nlevels; l++) {
		if (g->level[l].leaf_ok) {
			uint64_t vpn = (va >> g->level[l].shift) + 1;
			struct ptr_tlb_entry *t = &c->tlb[l][tlb_set(vpn)];
			if (t->vpn == vpn)
				t->vpn = 0;
		}
		if (l < g->nlevels - 1) {
			uint64_t tag = (va >> (g->level[l].shift + g->level[l].bits)) + 1;
			struct ptr_pwc_entry *p = &c->pwc[l][tag % PTR_PWC_SETS];
			if (p->tag == tag)
				p->tag = 0;
		}
	}
}

/*
 * The walk's entry decoding, inline.  The same rules as geometry.c's ptr_entry_*() (which stay
 * the one definition every software path uses): those are out of line in another translation
 * unit, so each is a call through the PLT, three of them per level on the dependent chain from
 * one table load to the next - which is what `ptreloc bench walk` times against a bare chase.
 * tests/test_core_model.py holds the CPU's accesses (faults, protection, huge leaves, the D
 * bits the consumers then read) to a reference model on every format.
 */
static inline bool hw_present(const struct ptr_geometry *g, uint64_t e)
{
	return e & g->e_present;
}

/* a table entry's address (not a leaf's: leaves go through hw_leaf_phys()) */
static inline uint64_t hw_table_phys(const struct ptr_geometry *g, uint64_t e)
{
	return e & g->e_addr;
}

static inline uint64_t hw_leaf_phys(const struct ptr_geometry *g, int level, uint64_t e)
{
	uint64_t mask = g->e_addr;
	if (level > 0)
		mask &= ~(ptr_level_size(g, level) - 1); /* huge leaf: drop PAT/low bits */
	return e & mask;
}

static inline bool hw_writable(const struct ptr_geometry *g, uint64_t e)
{
	if (g->arch == PTR_ARCH_X86)
		return e & g->e_write;
	return !(e & g->e_rdonly) || (e & g->e_dbm);
}

static inline bool hw_dirty(const struct ptr_geometry *g, uint64_t e)
{
	if (g->arch == PTR_ARCH_X86)
		return e & g->e_dirty;
	return (e & g->e_swdirty) || ((e & g->e_dbm) && !(e & g->e_rdonly));
}

/*
 * ptr_phys_frame() without its division: frame sizes are powers of two (ptr_cpu_create()
 * checks), and a 64-bit divide sat on the walk's dependent chain at every level.
 */
static inline uint32_t hw_phys_frame(const struct ptr_cpu *c, uint64_t phys)
{
	uint64_t f = phys >> c->frame_shift;
	return (phys & c->frame_mask) == 0 && f < c->arena->nframes ? (uint32_t)f : PTR_NO_FRAME;
}

static int count_freed(struct ptr_cpu *c)
{
	atomic_fetch_add(&c->arena->freed_frame_accesses, 1);
	c->st.freed_reads++;
	return PTR_FAULT_FREED;
}

/*
 * Set A (and D on write) on the leaf at (table, idx) the way the hardware does: an atomic
 * read-modify-write that re-checks the entry.  Returns 0 and the updated entry in *e, or a
 * fault code.
 */
static int hw_update_leaf(const struct ptr_geometry *g, int level, void *table, uint32_t idx,
			  bool write, uint64_t *e)
{
	uint64_t old = *e;
	for (;;) {
		if (!ptr_entry_is_leaf(g, level, old))
			return PTR_FAULT_NOT_PRESENT;
		uint64_t neu = old | g->e_accessed;
		if (write) {
			if (!hw_writable(g, old))
				return PTR_FAULT_PROT;
			if (g->arch == PTR_ARCH_X86)
				neu |= g->e_dirty;
			else
				neu &= ~g->e_rdonly; /* DBM: writable-clean -> dirty */
		}
		if (neu == old || ptr_entry_cas(g, level, table, idx, &old, neu)) {
			*e = neu;
			return 0;
		}
	}
}

static int access_inner(struct ptr_cpu *c, struct ptr_mm *mm, uint64_t va, bool write,
			uint64_t *phys)
{
	const struct ptr_geometry *g = mm->geo;
	struct ptr_arena *a = c->arena;
	int top = g->nlevels - 1;

	service_locked(c);
	c->st.accesses++;

	/* TLB */
	for (int l = 0; l < g->nlevels; l++) {
		if (!g->level[l].leaf_ok)
			continue;
		uint64_t vpn = (va >> g->level[l].shift) + 1;
		struct ptr_tlb_entry *t = &c->tlb[l][tlb_set(vpn)];
		if (t->vpn != vpn)
			continue;
		if (write && !t->writable) {
			c->st.faults++;
			return PTR_FAULT_PROT;
		}
		if (!write || t->dirty_known) {
			c->st.tlb_hits++;
			if (phys)
				*phys = t->phys + (va & (ptr_level_size(g, l) - 1));
			return 0;
		}
		break; /* write through a clean entry: walk to set D */
	}

	/* Walk from the deepest paging-structure-cache hit. */
	c->st.walks++;
	int level = top;
	uint32_t table = c->root;
	for (int l = 0; l < top; l++) {
		uint64_t tag = (va >> (g->level[l].shift + g->level[l].bits)) + 1;
		struct ptr_pwc_entry *p = &c->pwc[l][tag % PTR_PWC_SETS];
		if (p->tag == tag) {
			level = l;
			table = p->frame;
			c->st.pwc_hits++;
			break;
		}
	}
	if (level == top && g->top_preloaded) {
		/* PAE: the PDPTE registers, not memory */
		uint64_t e = c->pdpte[ptr_index(g, top, va) & 3];
		if (!hw_present(g, e)) {
			c->st.faults++;
			return PTR_FAULT_NOT_PRESENT;
		}
		table = hw_phys_frame(c, hw_table_phys(g, e)); /* PDPTEs are never leaves */
		level = top - 1;
		c->pwc[level][((va >> (g->level[level].shift + g->level[level].bits)) + 1) %
			      PTR_PWC_SETS] = (struct ptr_pwc_entry){
			(va >> (g->level[level].shift + g->level[level].bits)) + 1, table };
	}
	for (;;) {
		if (!ptr_frame_live(a, table))
			return count_freed(c);
		void *t = ptr_frame_data(a, table);
		uint32_t idx = ptr_index(g, level, va);
		uint64_t e = ptr_entry_load(g, level, t, idx);
		if (!ptr_frame_live(a, table)) /* freed under us: what we read may be poison */
			return count_freed(c);
		if (!hw_present(g, e)) {
			c->st.faults++;
			return PTR_FAULT_NOT_PRESENT;
		}
		if (ptr_entry_is_leaf(g, level, e)) {
			int rc = hw_update_leaf(g, level, t, idx, write, &e);
			if (rc) {
				c->st.faults++;
				return rc;
			}
			uint64_t base = hw_leaf_phys(g, level, e);
			uint64_t vpn = (va >> g->level[level].shift) + 1;
			struct ptr_tlb_entry *te = &c->tlb[level][tlb_set(vpn)];
			te->vpn = vpn;
			te->phys = base;
			te->writable = hw_writable(g, e);
			te->dirty_known = hw_dirty(g, e);
			if (phys)
				*phys = base + (va & (ptr_level_size(g, level) - 1));
			return 0;
		}
		uint32_t child = hw_phys_frame(c, hw_table_phys(g, e));
		if (child == PTR_NO_FRAME)
			return count_freed(c); /* poison decoded as a pointer */
		level--;
		uint64_t tag = (va >> (g->level[level].shift + g->level[level].bits)) + 1;
		c->pwc[level][tag % PTR_PWC_SETS] = (struct ptr_pwc_entry){ tag, child };
		table = child;
	}
}

/* The mm an access of @va on @c runs in: NULL with *@rc = -EINVAL (idle CPU) or the address
 * check's -errno. */
static inline struct ptr_mm *access_mm(struct ptr_cpu *c, uint64_t va, int *rc)
{
	struct ptr_mm *mm = atomic_load_explicit(&c->mm, memory_order_relaxed);
	*rc = mm ? ptr_va_check(mm->geo, va) : -EINVAL;
	return *rc ? NULL : mm;
}

/**
 * ptr_cpu_access() - one memory access of @c at @va: generation check (flush, maybe reload,
 * acknowledge), TLB lookup, else a hardware walk from the deepest paging-structure-cache hit
 * that sets A (and D on @write) on the entry it reaches.
 * @c:     the CPU
 * @va:    the address
 * @write: a write access
 * @phys:  out, may be NULL: the physical address
 *
 * A quiescent point precedes and follows every access (grace periods wait for it to end).
 * Return: 0 (*@phys set); PTR_FAULT_NOT_PRESENT/PTR_FAULT_PROT/PTR_FAULT_FREED (> 0); -EINVAL
 * (idle CPU); -ERANGE/-EDOM (address).
 * Locking: holds @c's busy lock for the access (its read-side section); takes no table lock.
 * From the one thread driving @c.
 */
int ptr_cpu_access(struct ptr_cpu *c, uint64_t va, bool write, uint64_t *phys)
{
	int rc;
	struct ptr_mm *mm = access_mm(c, va, &rc);
	if (!mm)
		return rc;
	enter_access(c);
	rc = access_inner(c, mm, va, write, phys);
	leave_access(c);
	return rc;
}

/**
 * ptr_cpu_access_fault() - ptr_cpu_access(), running the software fault path
 * (ptr_fault_in_section()) on not-present and protection faults and retrying, a few times.
 * @c:     the CPU
 * @va:    the address
 * @write: a write access
 * @phys:  out, may be NULL: the physical address
 *
 * Why a fixed number of retries is not a timing tolerance: when the fault path returns 0 the
 * live tree holds a usable leaf for @va (installed, or found), and fault_invalidate() made the
 * retry walk from the root.  A sound protocol keeps every table whose entries could change
 * locked from its copy until the shootdown has been acknowledged, and this CPU acknowledges
 * while it spins in the fault path, so the retry sees what the fault path saw; it faults again
 * only when another thread removed that very leaf in between (an unmap), and each such removal
 * ends with a shootdown this CPU must acknowledge first.  No delay of this thread uses up a
 * retry; 8 consecutive removals of one leaf are what it takes (the stress, under ASan on one
 * oversubscribed core, never needed a third run: csrc/stress.c's access_errors count the rest).
 * Return: 0; PTR_FAULT_FREED; a fault code after the retries; or the fault path's -errno
 * (-EFAULT: no region, a segfault; -EACCES).
 * Locking: as ptr_cpu_access(); the fault path takes table locks inside the access (busy ->
 * page_table_lock -> ptls) and services shootdowns while it spins for them.
 */
int ptr_cpu_access_fault(struct ptr_cpu *c, uint64_t va, bool write, uint64_t *phys)
{
	int rc;
	struct ptr_mm *mm = access_mm(c, va, &rc);
	if (!mm)
		return rc;
	enter_access(c);
	for (int tries = 0; tries < 8; tries++) {
		rc = access_inner(c, mm, va, write, phys);
		if (rc <= 0 || rc == PTR_FAULT_FREED)
			break;
		c->st.fault_path_runs++;
		/* still inside the access (busy held): it is the fault path's read-side section */
		int frc = ptr_fault_in_section(mm, c, va, write);
		if (frc < 0) {
			rc = frc;
			break;
		}
		/* the fault path fixed the entry in the live tree: drop what could send the retry
		 * elsewhere (a stale TLB entry - a spurious fault - or a cached stale table) */
		fault_invalidate(c, mm->geo, va);
	}
	leave_access(c);
	return rc;
}

/* ---- shootdown ------------------------------------------------------------------------------ */

/**
 * ptr_shootdown() - TLB shootdown for @mm: bump mm->tlb_gen, then wait until every CPU running
 * @mm has acknowledged.
 * @mm:          the address space
 * @reload_root: CPUs also reload their cached root - required after changing mm->root, and
 *               on PAE after changing a top (PDPTE) entry
 *
 * A CPU between accesses is serviced remotely (the shooter takes its busy lock with a trylock
 * and flushes for it); one inside an access acknowledges at its next generation check or while
 * it spins for a lock.
 * Return: nothing.
 * Locking: takes cpus_lock.  May be called holding table locks only by a relocation (under
 * reloc_mutex; lock.h explains why that and the stop strategy cannot deadlock); every other
 * caller drops its table lock first.  Not from inside the caller's own CPU's access.
 */
void ptr_shootdown(struct ptr_mm *mm, bool reload_root)
{
	struct ptr_arena *a = mm->arena;
	if (reload_root)
		atomic_fetch_add(&mm->reload_gen, 1);
	uint64_t gen = atomic_fetch_add(&mm->tlb_gen, 1) + 1;
	ptr_lock(&a->cpus_lock, NULL);
	int i;
	ptr_for_each_cpu(a, i) {
		struct ptr_cpu *c = a->cpus[i];
		while (atomic_load(&c->mm) == mm && atomic_load(&c->seen_gen) < gen) {
			/* Between accesses: service it ourselves, like an IPI to an idle core. */
			if (ptr_trylock(&c->busy)) {
				service_locked(c);
				ptr_unlock(&c->busy);
				continue;
			}
			sched_yield();
		}
	}
	ptr_unlock(&a->cpus_lock);
}

/* ---- many CPUs at once (tests, benchmarks) --------------------------------------------------- */

struct run_arg {
	struct ptr_mm *mm;
	uint64_t n, start, npages, seed;
	int page_shift, write_pct, rc;
	struct ptr_cpu_stats st;
};

static void *run_thread(void *p)
{
	struct run_arg *r = p;
	struct ptr_cpu *c;
	r->rc = ptr_cpu_create(r->mm->arena, &c);
	if (r->rc)
		return NULL;
	ptr_cpu_switch_to(c, r->mm);
	uint64_t x = r->seed | 1;
	for (uint64_t i = 0; i < r->n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		uint64_t va = r->start + ((x >> 8) % r->npages << r->page_shift);
		int rc = ptr_cpu_access_fault(c, va, (int)(x % 100) < r->write_pct, NULL);
		if (rc) {
			r->rc = rc;
			break;
		}
	}
	ptr_cpu_get_stats(c, &r->st);
	ptr_cpu_destroy(c);
	return NULL;
}

/**
 * ptr_run_cpus() - test/bench helper: @ncpus threads, each with its own CPU running @mm, each
 * doing @naccesses ptr_cpu_access_fault() at pseudo-random pages of [@start, @end).
 * @mm:        the address space
 * @ncpus:     1..PTR_MAX_CPUS threads
 * @naccesses: accesses per thread
 * @start:     first address of the range
 * @end:       end of the range (exclusive)
 * @write_pct: percentage of writes
 * @seed:      seed of the threads' address sequences
 * @total:     out: the CPUs' counters, summed
 *
 * Return: 0; -EINVAL (arguments); -ENOMEM; -EAGAIN (thread creation); or the first -errno /
 * PTR_FAULT_FREED a thread's access returned.
 * Locking: takes cpus_lock (CPU create/destroy) and whatever the accesses take; call with no
 * table lock held.
 */
int ptr_run_cpus(struct ptr_mm *mm, int ncpus, uint64_t naccesses, uint64_t start, uint64_t end,
		 int write_pct, uint64_t seed, struct ptr_cpu_stats *total)
{
	const struct ptr_geometry *g = mm->geo;
	int shift = g->level[0].shift;
	if (ncpus < 1 || ncpus > PTR_MAX_CPUS || end <= start || ((end - start) >> shift) == 0)
		return -EINVAL;
	struct run_arg *args = calloc((size_t)ncpus, sizeof(*args));
	pthread_t *th = calloc((size_t)ncpus, sizeof(*th));
	if (!args || !th) {
		free(args);
		free(th);
		return -ENOMEM;
	}
	int rc = 0, started = 0;
	for (int i = 0; i < ncpus; i++) {
		args[i] = (struct run_arg){ .mm = mm, .n = naccesses, .start = start,
					    .npages = (end - start) >> shift,
					    .seed = seed * 0x9e3779b97f4a7c15ULL + (uint64_t)i * 7919 + 1,
					    .page_shift = shift, .write_pct = write_pct };
		if (pthread_create(&th[i], NULL, run_thread, &args[i])) {
			rc = -EAGAIN;
			break;
		}
		started++;
	}
	memset(total, 0, sizeof(*total));
	for (int i = 0; i < started; i++) {
		pthread_join(th[i], NULL);
		if (!rc && args[i].rc)
			rc = args[i].rc;
		uint64_t *dst = (uint64_t *)total, *src = (uint64_t *)&args[i].st;
		for (size_t k = 0; k < sizeof(*total) / sizeof(uint64_t); k++)
			dst[k] += src[k];
	}
	free(args);
	free(th);
	return rc;
}
