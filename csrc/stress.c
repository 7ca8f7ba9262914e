/*
 * stress.c - the relocation torture test (`ptreloc stress`), all in C threads.
 *
 * K emulated CPUs read and write random pages of a demand-faulted address space; a relocator
 * moves all of its tables back and forth between two nodes (scenario "evacuate": empties one
 * pool after the other with ptr_evacuate(); "compact": spreads the tables over pool 0 and packs
 * them low with ptr_compact() - the same engine, locks and merge; "share": a second address space
 * links each chunk's level-1 table (the lowest-level one in 2- and 3-level formats),
 * hugetlb-style, half the CPUs run in it, and every relocation moves both together, so a shared
 * table moves once with both parents repointed); a reclaimer
 * consumes A/D bits like writeback (test_and_clear_dirty), aging (test_and_clear_young + flush)
 * and eviction (unmap).  With sharing the reclaimer shoots down the second mm too after each
 * consumer, as page_mkclean() reaches every mm that maps the page: a consumer that flushed only
 * the mm it was called on would leave the other mm's CPUs writing through dirty-known TLB
 * entries, and lose D bits that no relocation is to blame for.
 *
 * The shadow record decides at the end, soundly, whether an A/D bit was lost:
 *   - the reclaimer bumps the page's clean generation AFTER its consumer returned (which
 *     includes the consumer's shootdown, so no CPU still holds a dirty-known/young TLB entry);
 *   - a CPU reads the generation BEFORE it starts an access and, once the access completed,
 *     raises the page's write (or access) generation to gen + 1 (atomic max);
 *   - so "write_gen == clean_gen + 1" at the end means: a write started after the last clean
 *     completed, and its D bit must still be in the final tree (software walk) - else lost.
 * The same check runs at three points: by the reclaimer just before each consumer (writeback
 * that reads "clean" there skips a dirty page), by an audit after every relocation with the
 * CPUs and the reclaimer parked (see audit()), and once over the final tree (verdict()).
 * Every access result is also compared with the physical address the VA must map to, the
 * arena counts walks that read freed (poisoned) frames, and after the address space is
 * destroyed every frame must be back in its pool.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ptreloc.h"

struct stress {
	const struct ptr_stress_config *cfg;
	struct ptr_arena *a;
	struct ptr_mm *mm;
	struct ptr_mm *mm2; /* PTR_STRESS_SHARE: shares each chunk's level-1 table with @mm */
	const struct ptr_geometry *g;
	uint64_t page;
	uint64_t npages;
	uint64_t chunk_va[PTR_MAX_REGIONS];
	uint64_t chunk_phys[PTR_MAX_REGIONS];
	_Atomic uint64_t *clean_gen, *write_gen, *young_gen, *access_gen;
	_Atomic int stop;
	_Atomic int started;
	/* audit handshake: threads that take part, the request, and how many are parked */
	_Atomic int participants, park, parked;
	struct ptr_stress_result *out;
	pthread_mutex_t out_lock;
};

static inline uint64_t rng(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x * 0x2545f4914f6cdd1dULL;
}

static inline uint64_t page_va(const struct stress *s, uint64_t p)
{
	uint64_t per = s->cfg->pages_per_chunk;
	return s->chunk_va[p / per] + (p % per) * s->page;
}

static inline uint64_t page_phys(const struct stress *s, uint64_t p)
{
	uint64_t per = s->cfg->pages_per_chunk;
	return s->chunk_phys[p / per] + (p % per) * s->page;
}

static inline void atomic_max(_Atomic uint64_t *v, uint64_t x)
{
	uint64_t cur = atomic_load_explicit(v, memory_order_relaxed);
	while (cur < x && !atomic_compare_exchange_weak(v, &cur, x))
		;
}

static bool stopping(struct stress *s)
{
	return atomic_load_explicit(&s->stop, memory_order_relaxed) ||
	       (s->cfg->cancel && __atomic_load_n(s->cfg->cancel, __ATOMIC_RELAXED));
}

/*
 * park_point() - called by a CPU thread between accesses and by the reclaimer between
 * operations: while an audit is requested, stay parked (outside any access, so a shootdown
 * services this CPU remotely and nothing can block on it).
 */
static void park_point(struct stress *s)
{
	if (likely(!atomic_load(&s->park)))
		return;
	atomic_fetch_add(&s->parked, 1);
	while (atomic_load(&s->park) && !stopping(s))
		sched_yield();
	atomic_fetch_sub(&s->parked, 1);
}

/* ---- CPUs ---------------------------------------------------------------------------------- */

struct cpu_arg {
	struct stress *s;
	int idx;
	uint64_t writes, mismatches, errors, errors_fault, errors_errno, last_errno;
	struct ptr_cpu_stats st;
	int rc;
};

static void *cpu_thread(void *p)
{
	struct cpu_arg *ca = p;
	struct stress *s = ca->s;
	struct ptr_cpu *cpu;
	ca->rc = ptr_cpu_create(s->a, &cpu);
	atomic_fetch_add(&s->started, 1);
	if (ca->rc)
		return NULL;
	/* sharing: the odd CPUs run the second address space, through the shared tables */
	ptr_cpu_switch_to(cpu, s->mm2 && (ca->idx & 1) ? s->mm2 : s->mm);
	atomic_fetch_add(&s->participants, 1);
	uint64_t x = s->cfg->seed * 0x9e3779b97f4a7c15ULL + (uint64_t)ca->idx * 7919 + 17;
	while (!stopping(s)) {
		park_point(s);
		for (int i = 0; i < 64; i++) {
			uint64_t r = rng(&x);
			uint64_t p = (r >> 16) % s->npages;
			bool write = (int)(r % 100) < s->cfg->write_pct;
			/* generations BEFORE the access starts */
			uint64_t cg = atomic_load(&s->clean_gen[p]);
			uint64_t yg = atomic_load(&s->young_gen[p]);
			uint64_t phys = 0;
			int rc = ptr_cpu_access_fault(cpu, page_va(s, p), write, &phys);
			if (rc == PTR_FAULT_FREED)
				continue; /* counted by the arena */
			if (rc) {
				/* > 0: it still faulted after the retries; < 0: the fault path failed */
				ca->errors++;
				if (rc > 0) {
					ca->errors_fault++;
				} else {
					ca->errors_errno++;
					ca->last_errno = (uint64_t)-rc;
				}
				continue;
			}
			if (phys != page_phys(s, p))
				ca->mismatches++;
			/* the access completed: record it */
			atomic_max(&s->access_gen[p], yg + 1);
			if (write) {
				atomic_max(&s->write_gen[p], cg + 1);
				ca->writes++;
			}
		}
		/* like a timer tick: give the core away BETWEEN accesses, so that on an
		 * oversubscribed machine a shootdown or grace period rarely waits a whole time
		 * slice for a CPU preempted inside an access */
		sched_yield();
	}
	ptr_cpu_get_stats(cpu, &ca->st);
	ptr_cpu_destroy(cpu);
	return NULL;
}

/* ---- relocator ---------------------------------------------------------------------------- */

struct reloc_arg {
	struct stress *s;
	uint64_t relocations, failures, frames, bytes, batches, shootdowns, merged, lost;
	uint64_t audits, audit_checked, audit_lost_dirty, audit_lost_accessed, next_audit_ns;
	uint64_t ns;
	/* evacuate / compact scenarios */
	uint64_t pool_ops, pool_failures, pool_frames, pool_ns, evac_left, compact_above;
	uint64_t compact_packed;
	struct ptr_pool_runs before, after; /* the most fragmented compaction's */
	int rc;
};

/*
 * audit() - the shadow check over the whole tree at a moment when no relocation is in flight
 * (the relocator calls it between relocations) and no CPU or consumer runs (all parked).
 *
 * Why: once a relocation that dropped a D bit returns, the next write to that page re-sets D in
 * the live copy (the batch's shootdown flushed the dirty-known TLB entry), so a loss is visible
 * only until then - in a busy run the reclaimer rarely looks at the page in that window, and
 * the final verdict sees only the last relocation's losses.  Parked threads are between
 * accesses and operations, so the shadow generations and the tree are stable; a loss found is
 * counted once and then folded into the shadow (clean_gen := write_gen, as if written back) so
 * later checks do not count it again.  It depends only on the tree and the shadow, never on
 * the protocol under test: a check that a sound protocol could fail is a real loss.
 */
static uint64_t mono_ns(void);

static void audit(struct stress *s, struct reloc_arg *ra)
{
	/* duty cycle: parked CPUs make no accesses, so audits take at most ~1/5 of the run */
	uint64_t t0 = mono_ns();
	if (t0 < ra->next_audit_ns)
		return;
	atomic_store(&s->park, 1);
	while (atomic_load(&s->parked) < atomic_load(&s->participants) && !stopping(s))
		sched_yield();
	if (!stopping(s)) {
		for (uint64_t p = 0; p < s->npages; p++) {
			uint64_t cg = atomic_load(&s->clean_gen[p]), wg = atomic_load(&s->write_gen[p]);
			uint64_t yg = atomic_load(&s->young_gen[p]), ag = atomic_load(&s->access_gen[p]);
			bool must_dirty = wg == cg + 1, must_young = ag == yg + 1;
			if (!must_dirty && !must_young)
				continue;
			struct ptr_translation tr;
			bool mapped = ptr_translate(s->mm, page_va(s, p), &tr) == 0;
			ra->audit_checked++;
			if (must_dirty && (!mapped || !tr.dirty)) {
				ra->audit_lost_dirty++;
				atomic_store(&s->clean_gen[p], wg);
			}
			if (must_young && (!mapped || !tr.young)) {
				ra->audit_lost_accessed++;
				atomic_store(&s->young_gen[p], ag);
			}
		}
		ra->audits++;
	}
	atomic_store(&s->park, 0);
	uint64_t t1 = mono_ns();
	ra->next_audit_ns = t1 + 4 * (t1 - t0);
}

/*
 * late_ipi() - the relocation hook (between a batch's repoints and its shootdown): stay away
 * for ipi_delay_us, yielding, so CPUs that cache pointers to the old copies keep running on
 * them - on a VM a flush IPI to a preempted vCPU can take that long or much longer.  Every
 * protocol sees the same widened window; only the merge makes it harmless.
 */
static void late_ipi(void *priv, uint32_t batch)
{
	const struct stress *s = priv;
	uint64_t until = mono_ns() + (uint64_t)s->cfg->ipi_delay_us * 1000;
	while (mono_ns() < until && !stopping((struct stress *)s))
		sched_yield();
}

/* add one engine run to the relocator's counters; Return: true when the run is unusable */
static bool account(struct reloc_arg *ra, int rc, const struct ptr_reloc_report *rep)
{
	if (rc == -EINVAL || rc == -EOPNOTSUPP || rc == -ENODEV) {
		ra->rc = rc;
		return true;
	}
	if (rc)
		ra->failures++;
	else
		ra->relocations++;
	ra->frames += rep->relocated;
	ra->bytes += rep->bytes_copied;
	ra->batches += rep->batches;
	ra->shootdowns += rep->shootdowns;
	ra->merged += rep->ad_merged;
	ra->lost += rep->ad_lost;
	ra->ns += rep->ns_total;
	return false;
}

static void account_pool(struct reloc_arg *ra, int rc, const struct ptr_evac_report *er)
{
	if (rc)
		ra->pool_failures++;
	else
		ra->pool_ops++;
	ra->pool_frames += er->reloc.relocated;
	ra->pool_ns += er->reloc.ns_total;
}

/*
 * compact_round() - the compact scenario's round: every table to node 1; pool 0 filled with
 * unlinked "ballast" frames of which every stride-th is given back, so the tables that come
 * back land spread over the whole pool (one per 2 MiB run and more); the ballast freed; then
 * ptr_compact() packs them low while the CPUs run.  Return: true when the stress must stop.
 */
static bool compact_round(struct stress *s, struct reloc_arg *ra, uint32_t *ballast)
{
	const struct ptr_stress_config *cfg = s->cfg;
	struct ptr_reloc_report rep;
	ptr_mm_set_node(s->mm, 1);
	int rc = ptr_relocate(s->mm, 1u << 0, 1, NULL, NULL, cfg->strategy, cfg->batch, &rep);
	if (account(ra, rc, &rep))
		return true;
	uint32_t nb = 0;
	while (nb < cfg->frames_per_node &&
	       ptr_frame_alloc_flags(s->a, 0, 0, PTR_ALLOC_NOZERO, &ballast[nb]) == 0)
		nb++;
	uint32_t counts[PTR_MAX_LEVELS], tables = 0;
	ptr_mm_count_tables(s->mm, counts, NULL);
	for (int l = 0; l < s->g->nlevels; l++)
		tables += counts[l];
	/* P holes, evenly spaced, given back in bit-reversed order: the free list is LIFO, and
	 * the last frames of a bit-reversed sequence are as evenly spread as the whole, so the
	 * tables land all over the pool however many holes the faults take first */
	uint32_t bits = 0;
	while ((1u << bits) < 2 * (tables + 8))
		bits++;
	uint32_t holes = 1u << bits, stride = nb / holes ? nb / holes : 1;
	for (uint32_t k = 0; k < holes; k++) {
		uint32_t h = 0;
		for (uint32_t b = 0; b < bits; b++)
			h |= ((k >> b) & 1u) << (bits - 1 - b);
		uint32_t i = h * stride;
		if (i >= nb || ballast[i] == PTR_NO_FRAME)
			continue;
		ptr_frame_free(s->a, ballast[i]); /* never linked: no grace period needed */
		ballast[i] = PTR_NO_FRAME;
	}
	ptr_mm_set_node(s->mm, 0);
	rc = ptr_relocate(s->mm, 1u << 1, 0, NULL, NULL, cfg->strategy, cfg->batch, &rep);
	for (uint32_t i = 0; i < nb; i++)
		ptr_frame_free(s->a, ballast[i]);
	if (account(ra, rc, &rep))
		return true;
	struct ptr_evac_report er;
	rc = ptr_compact(&s->mm, 1, 0, cfg->strategy, cfg->batch, &er);
	if (account(ra, rc, &er.reloc))
		return true;
	account_pool(ra, rc, &er);
	ra->compact_above += er.above;
	ra->compact_packed += er.after.packed ? 1 : 0;
	/* report the most fragmented round (fewest free 2 MiB runs before): how many holes the
	 * CPUs' own faults took first varies from round to round */
	if (ra->pool_ops == 1 || er.before.free_runs <= ra->before.free_runs) {
		ra->before = er.before;
		ra->after = er.after;
	}
	return false;
}

static void *relocator_thread(void *p)
{
	struct reloc_arg *ra = p;
	struct stress *s = ra->s;
	const struct ptr_stress_config *cfg = s->cfg;
	uint32_t *ballast = NULL;
	if (cfg->scenario == PTR_STRESS_COMPACT) {
		ballast = malloc(sizeof(*ballast) * cfg->frames_per_node);
		if (!ballast) {
			ra->rc = -ENOMEM;
			return NULL;
		}
	}
	int cur = 0;
	while (!stopping(s)) {
		int to = 1 - cur;
		if (cfg->scenario == PTR_STRESS_COMPACT) {
			if (compact_round(s, ra, ballast))
				break;
		} else if (cfg->scenario == PTR_STRESS_EVACUATE) {
			/* empty pool cur: ptr_evacuate() points the mm's new tables elsewhere first
			 * and sweeps up what faults put there meanwhile */
			struct ptr_evac_report er;
			int rc = ptr_evacuate(&s->mm, 1, cur, to, cfg->strategy, cfg->batch, &er);
			if (account(ra, rc, &er.reloc))
				break;
			account_pool(ra, rc, &er);
			ra->evac_left += er.left;
		} else {
			struct ptr_reloc_report rep;
			struct ptr_mm *mms[2] = { s->mm, s->mm2 };
			int nmms = s->mm2 ? 2 : 1;
			/* new tables go to the target from now on, like a process whose memory moved */
			for (int i = 0; i < nmms; i++)
				ptr_mm_set_node(mms[i], to);
			/* with sharing both mms at once: a shared table moves once, every sharer's
			 * parent entry repointed (one of them alone would skip it as shared) */
			int rc = ptr_relocate_mms(mms, nmms, 1u << cur, to, NULL, NULL, cfg->strategy,
						  cfg->batch, &rep);
			if (account(ra, rc, &rep))
				break;
		}
		cur = to;
		audit(s, ra);
	}
	free(ballast);
	return NULL;
}

/* ---- reclaimer ---------------------------------------------------------------------------- */

struct reclaim_arg {
	struct stress *s;
	uint64_t dirty_cleans, young_cleans, unmaps, found_dirty, found_young;
	uint64_t lost_dirty, lost_accessed;
};

/*
 * The reclaimer is the only thread that clears A/D, so it can check every consumption too:
 * when, just before a consumer runs, the page shows a completed write that started after the
 * last clean (write_gen == clean_gen + 1), that write's D bit must be seen by the consumer -
 * writeback that reads "clean" there skips a dirty page: the data is lost.  Same for young.
 */
static void *reclaimer_thread(void *p)
{
	struct reclaim_arg *ra = p;
	struct stress *s = ra->s;
	uint64_t x = s->cfg->seed * 0xbf58476d1ce4e5b9ULL + 99;
	/* sharing: every consumer is followed by a shootdown of the other mm too */
	const bool flush2 = s->mm2 && !s->cfg->share_flush_one;
	atomic_fetch_add(&s->participants, 1);
	while (!stopping(s)) {
		park_point(s);
		uint64_t r = rng(&x);
		uint64_t pg = (r >> 16) % s->npages;
		uint64_t va = page_va(s, pg);
		int op = (int)(r % 100);
		bool must_dirty = atomic_load(&s->write_gen[pg]) == atomic_load(&s->clean_gen[pg]) + 1;
		bool must_young = atomic_load(&s->access_gen[pg]) == atomic_load(&s->young_gen[pg]) + 1;
		if (op < s->cfg->unmap_pct) {
			/* eviction: both bits go with the mapping; the dirty state is reported */
			uint64_t dirty = 0;
			int64_t n = ptr_unmap(s->mm, va, va + s->page, &dirty);
			if (must_dirty && (n <= 0 || !dirty))
				ra->lost_dirty++;
			if (n > 0 && flush2)
				ptr_shootdown(s->mm2, false); /* its CPUs may cache the page too */
			if (n > 0) {
				atomic_fetch_add(&s->clean_gen[pg], 1);
				atomic_fetch_add(&s->young_gen[pg], 1);
				ra->unmaps++;
				ra->found_dirty += dirty;
			}
		} else if (op < s->cfg->unmap_pct + (100 - s->cfg->unmap_pct) / 2) {
			/* writeback: clear D (the consumer shoots down when it was set) */
			int rc = ptr_test_and_clear_dirty(s->mm, va);
			if (must_dirty && rc != 1)
				ra->lost_dirty++;
			if (rc == 1 && flush2)
				ptr_shootdown(s->mm2, false); /* before the clean counts as done */
			if (rc >= 0) {
				atomic_fetch_add(&s->clean_gen[pg], 1);
				ra->dirty_cleans++;
				ra->found_dirty += (uint64_t)rc;
			}
		} else {
			/* aging: clear A and flush (ptep_clear_flush_young), so the next access walks */
			int rc = ptr_test_and_clear_young(s->mm, va);
			if (must_young && rc != 1)
				ra->lost_accessed++;
			if (rc == 1) {
				ptr_shootdown(s->mm, false);
				if (flush2)
					ptr_shootdown(s->mm2, false);
			}
			if (rc >= 0) {
				atomic_fetch_add(&s->young_gen[pg], 1);
				ra->young_cleans++;
				ra->found_young += (uint64_t)rc;
			}
		}
		if (s->cfg->reclaim_pause_us)
			usleep(s->cfg->reclaim_pause_us);
	}
	return NULL;
}

/* ---- setup and verdict --------------------------------------------------------------------- */

static int setup(struct stress *s)
{
	const struct ptr_stress_config *cfg = s->cfg;
	const struct ptr_geometry *g = ptr_geometry_find(cfg->geometry);
	if (!g)
		return -EINVAL;
	s->g = g;
	s->page = ptr_level_size(g, 0);
	int top = g->nlevels - 1;
	uint64_t top_entries = 1ULL << g->level[top].bits;
	/* one chunk per top-level entry (so each chunk has its own table at every level below
	 * the root), upper half of x86-64 left alone; chunk i sits in the middle of its entry */
	uint64_t usable = g->canonical ? top_entries / 2 : top_entries;
	if (cfg->chunks < 1 || cfg->chunks > PTR_MAX_REGIONS || cfg->chunks > usable ||
	    cfg->pages_per_chunk < 1 ||
	    cfg->pages_per_chunk > (1ULL << g->level[0].bits))
		return -EINVAL;
	uint64_t span = ptr_level_size(g, top);
	uint64_t chunk_bytes = (uint64_t)cfg->pages_per_chunk * s->page;
	for (uint32_t i = 0; i < cfg->chunks; i++) {
		/* spread chunks over the top table; align to a level-0 table's span */
		uint64_t slot = (uint64_t)i * (usable / cfg->chunks);
		uint64_t l1span = ptr_level_size(g, 1);
		s->chunk_va[i] = slot * span + (span / 2 & ~(l1span - 1));
		s->chunk_phys[i] = (uint64_t)i * chunk_bytes;
	}
	s->npages = (uint64_t)cfg->chunks * cfg->pages_per_chunk;
	s->clean_gen = calloc(s->npages, sizeof(*s->clean_gen));
	s->write_gen = calloc(s->npages, sizeof(*s->write_gen));
	s->young_gen = calloc(s->npages, sizeof(*s->young_gen));
	s->access_gen = calloc(s->npages, sizeof(*s->access_gen));
	if (!s->clean_gen || !s->write_gen || !s->young_gen || !s->access_gen)
		return -ENOMEM;
	int binds[2] = { -1, -1 };
	if (cfg->bind_nodes)
		memcpy(binds, cfg->bind_nodes, sizeof(binds));
	int rc = ptr_arena_create(cfg->geometry, 2, binds, cfg->frames_per_node, &s->a);
	if (rc)
		return rc;
	rc = ptr_mm_create(s->a, 0, &s->mm);
	if (rc)
		return rc;
	for (uint32_t i = 0; i < cfg->chunks && !rc; i++)
		rc = ptr_add_region(s->mm, s->chunk_va[i], s->chunk_va[i] + chunk_bytes,
				    s->chunk_phys[i], true, 0);
	if (rc || cfg->scenario != PTR_STRESS_SHARE)
		return rc;
	/* the second address space: the same regions (a fault in it maps the same frames),
	 * each chunk's shared table made in @mm and linked into it; the tables below are
	 * demand-faulted through the shared one by the CPUs of either.  The shared level is 1
	 * (a PMD table, as hugetlb shares) where that is neither the root nor PAE's fixed PDPT
	 * level - 4 and 5 levels -, else the lowest-level table. */
	int level = g->nlevels >= 4 ? 1 : 0;
	rc = ptr_mm_create(s->a, 0, &s->mm2);
	for (uint32_t i = 0; i < cfg->chunks && !rc; i++) {
		uint64_t va = s->chunk_va[i];
		rc = ptr_add_region(s->mm2, va, va + chunk_bytes, s->chunk_phys[i], true, 0);
		if (!rc)
			rc = ptr_ensure_table(s->mm, va, level, 0);
		if (!rc)
			rc = ptr_share_table(s->mm2, s->mm, va, level);
	}
	return rc;
}

static void verdict(struct stress *s)
{
	struct ptr_stress_result *out = s->out;
	for (uint64_t p = 0; p < s->npages; p++) {
		struct ptr_translation tr;
		int rc = ptr_translate(s->mm, page_va(s, p), &tr);
		bool mapped = rc == 0;
		if (rc != 0 && rc != -ENOENT)
			out->translation_mismatches++; /* a walk that met a freed frame, or worse */
		if (mapped && tr.phys != page_phys(s, p))
			out->translation_mismatches++;
		if (s->mm2) {
			/* the shared tables hold the one leaf both mms reach: the same answer */
			struct ptr_translation t2;
			int rc2 = ptr_translate(s->mm2, page_va(s, p), &t2);
			if (rc2 != rc || (mapped && (t2.phys != tr.phys || t2.dirty != tr.dirty ||
						      t2.young != tr.young)))
				out->translation_mismatches++;
		}
		uint64_t cg = atomic_load(&s->clean_gen[p]), wg = atomic_load(&s->write_gen[p]);
		uint64_t yg = atomic_load(&s->young_gen[p]), ag = atomic_load(&s->access_gen[p]);
		if (wg == cg + 1) {
			out->checked_dirty++;
			if (!mapped || !tr.dirty)
				out->lost_dirty++;
		}
		if (ag == yg + 1) {
			out->checked_accessed++;
			if (!mapped || !tr.young)
				out->lost_accessed++;
		}
	}
}

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/**
 * ptr_stress_run() - the torture test described by @cfg: CPU threads faulting and writing, one
 * relocator moving every table between arena nodes 0 and 1 with @cfg->strategy (or, per
 * @cfg->scenario, evacuating pools 0 and 1 in turn, or fragmenting and compacting pool 0), one
 * reclaimer
 * consuming A/D bits and unmapping, for @cfg->seconds; then the verdict.
 * @cfg: the run (struct ptr_stress_config)
 * @out: counters and the verdict: lost_dirty, lost_accessed, freed_frame_accesses,
 *       leaked_frames, translation_mismatches (all 0 under a correct protocol)
 *
 * Return: 0 (the verdict is in *@out, whatever it says); -EINVAL (bad config); -EOPNOTSUPP
 * (norelo build); or the -errno that stopped the run (arena creation, thread creation).
 * Locking: owns its own arena and the relocation test hook while it runs (@cfg->ipi_delay_us);
 * @cfg->cancel is read atomically, so another thread may stop the run early.
 */
int ptr_stress_run(const struct ptr_stress_config *cfg, struct ptr_stress_result *out)
{
	if (!cfg || !out || cfg->cpus < 1 || cfg->cpus > PTR_MAX_CPUS - 2 || cfg->seconds <= 0 ||
	    cfg->batch < 1 || cfg->strategy < 0 || cfg->strategy > 2 || cfg->write_pct < 0 ||
	    cfg->write_pct > 100 || cfg->unmap_pct < 0 || cfg->unmap_pct > 100 ||
	    cfg->frames_per_node < 16 || cfg->scenario < PTR_STRESS_RELOCATE ||
	    cfg->scenario > PTR_STRESS_SHARE)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	if (!PTR_RELOCATION)
		return out->error = -EOPNOTSUPP;
	struct stress s = { .cfg = cfg, .out = out };
	int rc = setup(&s);
	struct cpu_arg *cpus = NULL;
	pthread_t *th = NULL;
	if (rc)
		goto cleanup;
	out->pages = s.npages;
	cpus = calloc((size_t)cfg->cpus, sizeof(*cpus));
	th = calloc((size_t)cfg->cpus + 2, sizeof(*th));
	if (!cpus || !th) {
		rc = -ENOMEM;
		goto cleanup;
	}
	struct reloc_arg rel = { .s = &s };
	struct reclaim_arg rec = { .s = &s };
	int started = 0;
	uint64_t t0 = mono_ns();
	for (int i = 0; i < cfg->cpus; i++) {
		cpus[i] = (struct cpu_arg){ .s = &s, .idx = i };
		if (pthread_create(&th[started], NULL, cpu_thread, &cpus[i])) {
			rc = -EAGAIN;
			break;
		}
		started++;
	}
	bool have_rel = false, have_rec = false;
	if (cfg->ipi_delay_us)
		ptr_reloc_set_test_hook(late_ipi, &s);
	if (!rc && !pthread_create(&th[started], NULL, relocator_thread, &rel)) {
		started++;
		have_rel = true;
	}
	if (!rc && have_rel && !pthread_create(&th[started], NULL, reclaimer_thread, &rec)) {
		started++;
		have_rec = true;
	}
	if (!rc && (!have_rel || !have_rec))
		rc = -EAGAIN;
	uint64_t deadline = t0 + (uint64_t)(cfg->seconds * 1e9);
	while (!rc && !stopping(&s) && mono_ns() < deadline)
		usleep(2000);
	atomic_store(&s.stop, 1);
	for (int i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	if (cfg->ipi_delay_us)
		ptr_reloc_set_test_hook(NULL, NULL);
	out->seconds = (double)(mono_ns() - t0) / 1e9;
	out->cancelled = cfg->cancel && __atomic_load_n(cfg->cancel, __ATOMIC_RELAXED);

	for (int i = 0; i < cfg->cpus; i++) {
		if (!rc && cpus[i].rc)
			rc = cpus[i].rc;
		out->accesses += cpus[i].st.accesses;
		out->writes += cpus[i].writes;
		out->translation_mismatches += cpus[i].mismatches;
		out->access_errors += cpus[i].errors;
		out->access_errors_fault += cpus[i].errors_fault;
		out->access_errors_errno += cpus[i].errors_errno;
		if (cpus[i].last_errno)
			out->access_error_last_errno = cpus[i].last_errno;
		out->tlb_hits += cpus[i].st.tlb_hits;
		out->walks += cpus[i].st.walks;
		out->pwc_hits += cpus[i].st.pwc_hits;
		out->cpu_shootdowns += cpus[i].st.shootdowns;
		out->fault_path_runs += cpus[i].st.fault_path_runs;
	}
	if (!rc && rel.rc)
		rc = rel.rc;
	out->relocations = rel.relocations;
	out->relocation_failures = rel.failures;
	out->frames_relocated = rel.frames;
	out->bytes_copied = rel.bytes;
	out->batches = rel.batches;
	out->reloc_shootdowns = rel.shootdowns;
	out->ad_merged = rel.merged;
	out->ad_lost = rel.lost;
	out->relocation_ns = rel.ns;
	out->dirty_cleans = rec.dirty_cleans;
	out->young_cleans = rec.young_cleans;
	out->unmaps = rec.unmaps;
	out->found_dirty = rec.found_dirty;
	out->found_young = rec.found_young;
	out->lost_dirty = rec.lost_dirty + rel.audit_lost_dirty;
	out->lost_accessed = rec.lost_accessed + rel.audit_lost_accessed;
	out->audits = rel.audits;
	out->pool_ops = rel.pool_ops;
	out->pool_op_failures = rel.pool_failures;
	out->pool_frames_moved = rel.pool_frames;
	out->pool_op_ns = rel.pool_ns;
	out->evac_left = rel.evac_left;
	out->compact_above = rel.compact_above;
	out->compact_packed = rel.compact_packed;
	out->pool_runs_2m = rel.before.runs;
	out->pool_largest_free_before = rel.before.largest_free_run;
	out->pool_largest_free_after = rel.after.largest_free_run;
	out->pool_free_2m_before = rel.before.free_runs;
	out->pool_free_2m_after = rel.after.free_runs;
	out->audit_checked = rel.audit_checked;
	verdict(&s);
	struct ptr_pool_info pi;
	uint32_t counts[PTR_MAX_LEVELS];
	ptr_mm_count_tables(s.mm, counts, NULL);
	for (int l = 0; l < s.g->nlevels; l++)
		out->tables += counts[l];

cleanup:
	if (s.mm2) {
		/* first: the shared tables stay with @mm until their last sharer goes */
		if (ptr_mm_destroy(s.mm2) == 0)
			s.mm2 = NULL;
	}
	if (s.mm && !s.mm2) {
		if (ptr_mm_destroy(s.mm) == 0)
			s.mm = NULL;
	}
	if (s.a) {
		out->freed_frame_accesses = ptr_arena_freed_frame_accesses(s.a);
		for (int n = 0; n < s.a->nnodes; n++)
			if (ptr_arena_pool_info(s.a, n, &pi) == 0)
				out->leaked_frames += pi.in_use;
		if (!s.mm && !s.mm2 && out->leaked_frames == 0)
			ptr_arena_destroy(s.a); /* a leaking arena stays mapped: no use-after-free */
	}
	free(cpus);
	free(th);
	free(s.clean_gen);
	free(s.write_gen);
	free(s.young_gen);
	free(s.access_gen);
	out->error = rc;
	return rc;
}
