/*
 * bench.c - the timed loops of `ptreloc bench`.  Python only sets up, interleaves rounds and
 * does the statistics; everything that is timed runs here, timed with CLOCK_MONOTONIC.
 *
 * This file is compiled into BOTH builds of the core, so the `fault` suite runs the very same
 * loop against the relocation build and the norelo build and the ratio of the two is the cost
 * of relocation support (the RFC's lmbench lat_pagefault comparison).
 *
 * Every suite keeps a context (arena, address space, CPU, buffers) alive across rounds: the
 * first round of each context is a warm-up that faults the arena's and the buffers' memory in,
 * so later rounds time the page-table work, not the kernel's first-touch page faults.
 *
 * Suites:
 *   fault       fault every page of a region, in a random order, through the emulated CPU's
 *               software fault path (ptr_cpu_access_fault); optionally zero a 4 KiB data frame
 *               per fault as an anonymous fault does;
 *   walk        TLB-miss latency of the emulated CPU (one page per PTE table, random order, so
 *               the TLB and the lowest paging-structure cache are defeated) against a bare
 *               dependent pointer chase through the same table frames for the same addresses;
 *   relocate    one ptr_relocate() of every table against memcpy of the same tables' bytes in
 *               the same order (top level first, ascending frame - relocate.c's order);
 *   concurrent  K CPU threads timing every access into log-linear histograms, alternating idle
 *               phases and phases in which a relocator moves the tables back and forth.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "ptreloc.h"

#define TOP(g) ((g)->nlevels - 1)

static inline uint64_t bench_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static inline uint64_t bench_rng(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x * 0x2545f4914f6cdd1dULL;
}

/*
 * An anonymous buffer of 4 KiB pages, prefaulted: the timed loops never take a kernel fault, and
 * no transparent huge page makes one build's buffer faster than the other's (whether THP backs
 * a mapping depends on where it landed - a bias between the two builds that is not theirs).
 */
static void *bench_buffer(size_t bytes)
{
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	madvise(p, bytes, MADV_NOHUGEPAGE);
	memset(p, 0, bytes);
	return p;
}

/* ---- fault ---------------------------------------------------------------------------------- */

struct ptr_bench_fault {
	struct ptr_arena *a;
	struct ptr_cpu *cpu;
	uint64_t pages, page, base;
	uint32_t *order;
	uint8_t *data;       /* pages * page bytes when with_data, else NULL */
};

/**
 * ptr_bench_fault_create() - the fault suite's context: a 1-pool arena (bound to @bind_node),
 * a CPU, and a random fault order, kept across rounds so the first round warms memory up.
 * @geometry:  geometry name
 * @pages:     pages faulted per round
 * @with_data: also zero a 4 KiB data page per fault (what a real fault costs around it)
 * @bind_node: real NUMA node of the pool, -1 virtual
 * @out:       the context
 *
 * Return: 0 and *@out; -EINVAL (arguments), -ENOMEM, or the arena's -errno.
 * Locking: none; a context is used by one thread at a time.
 */
int ptr_bench_fault_create(const char *geometry, uint64_t pages, int with_data, int bind_node,
			   struct ptr_bench_fault **out)
{
	const struct ptr_geometry *g = ptr_geometry_find(geometry);
	if (!g || pages < 1 || pages > (1u << 24) || !out)
		return -EINVAL;
	struct ptr_bench_fault *b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->pages = pages;
	b->page = ptr_level_size(g, 0);
	b->base = 1ULL << (g->level[TOP(g)].shift); /* second top-level entry: away from 0 */
	if (g->va_bits <= 32)
		b->base = 0x400000;
	/* tables: one per level-0 span, their parents, generous slack */
	uint64_t tables = pages / (1ULL << g->level[0].bits) + 2 * g->nlevels + 64;
	int binds[1] = { bind_node };
	int rc = ptr_arena_create(geometry, 1, binds, (uint32_t)tables, &b->a);
	if (rc)
		goto fail;
	/* the table frames too: 4 KiB pages in both builds (see bench_buffer()) */
	madvise(b->a->base, b->a->map_bytes, MADV_NOHUGEPAGE);
	rc = ptr_cpu_create(b->a, &b->cpu);
	if (rc)
		goto fail;
	b->order = malloc(pages * sizeof(*b->order));
	if (!b->order) {
		rc = -ENOMEM;
		goto fail;
	}
	if (with_data) {
		b->data = bench_buffer(pages * b->page);
		if (!b->data) {
			rc = -ENOMEM;
			goto fail;
		}
	}
	*out = b;
	return 0;
fail:
	ptr_bench_fault_destroy(b);
	return rc;
}

/**
 * ptr_bench_fault_destroy() - free a fault context (NULL: nothing).
 * @b: the context
 *
 * Return: nothing.
 * Locking: the caller owns @b.
 */
void ptr_bench_fault_destroy(struct ptr_bench_fault *b)
{
	if (!b)
		return;
	if (b->cpu)
		ptr_cpu_destroy(b->cpu);
	if (b->a)
		ptr_arena_destroy(b->a);
	if (b->data)
		munmap(b->data, b->pages * b->page);
	free(b->order);
	free(b);
}

/**
 * ptr_bench_fault_round() - a fresh address space with one demand-fault region; fault in every
 * page once, in the random order @seed gives (a Fisher-Yates shuffle), as writes through the
 * emulated CPU; tear down.
 * @b:    the context
 * @seed: the order
 * @ns:   out: the time of the fault loop only
 *
 * Return: 0, or the -errno / PTR_FAULT_* an access failed with.
 * Locking: none; one thread per context (the CPU's accesses take what they take).
 */
int ptr_bench_fault_round(struct ptr_bench_fault *b, uint64_t seed, uint64_t *ns)
{
	struct ptr_mm *mm;
	uint64_t x = seed * 0x9e3779b97f4a7c15ULL + 1;
	for (uint64_t i = 0; i < b->pages; i++)
		b->order[i] = (uint32_t)i;
	for (uint64_t i = b->pages - 1; i > 0; i--) {
		uint64_t j = bench_rng(&x) % (i + 1);
		uint32_t t = b->order[i];
		b->order[i] = b->order[j];
		b->order[j] = t;
	}
	int rc = ptr_mm_create(b->a, 0, &mm);
	if (rc)
		return rc;
	rc = ptr_add_region(mm, b->base, b->base + b->pages * b->page, 0, true, 0);
	if (!rc)
		rc = ptr_cpu_switch_to(b->cpu, mm);
	if (rc) {
		ptr_mm_destroy(mm);
		return rc;
	}
	uint64_t t0 = bench_now_ns();
	for (uint64_t i = 0; i < b->pages && !rc; i++) {
		uint64_t p = b->order[i];
		if (b->data) /* clear_page() of the new anonymous page, before it is mapped */
			memset(b->data + p * b->page, 0, b->page);
		rc = ptr_cpu_access_fault(b->cpu, b->base + p * b->page, true, NULL);
	}
	*ns = bench_now_ns() - t0;
	ptr_cpu_switch_to(b->cpu, NULL);
	ptr_mm_destroy(mm);
	return rc;
}

/* ---- walk ----------------------------------------------------------------------------------- */

struct ptr_bench_walk {
	struct ptr_arena *a;
	struct ptr_mm *mm;
	struct ptr_cpu *cpu;
	uint64_t pages, base, stride;
	struct ptr_cpu_stats st;
};

/**
 * ptr_bench_walk_create() - 2-pool arena (@bind_nodes[0..1]), an address space whose tables
 * all live on pool @table_node, one base page mapped per level-0 table (so every page has its
 * own PTE table and the walk's last two reads are cache misses once the tables outgrow the
 * caches), and a CPU running it.
 * @geometry:   geometry name
 * @pages:      pages (= level-0 tables), 1..2^20
 * @bind_nodes: real NUMA node per pool, -1 virtual
 * @table_node: the pool the tables live on
 * @out:        the context
 *
 * Return: 0 and *@out; -EINVAL, -ENOMEM, or the arena's/map's -errno.
 * Locking: none; one thread per context.
 */
int ptr_bench_walk_create(const char *geometry, uint64_t pages, const int *bind_nodes,
			  int table_node, struct ptr_bench_walk **out)
{
	const struct ptr_geometry *g = ptr_geometry_find(geometry);
	if (!g || pages < 1 || pages > (1u << 20) || !bind_nodes || table_node < 0 ||
	    table_node > 1 || !out || g->nlevels < 2)
		return -EINVAL;
	struct ptr_bench_walk *b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->pages = pages;
	b->stride = ptr_level_size(g, 1);
	b->base = 1ULL << (g->level[TOP(g)].shift);
	if (g->va_bits <= 32 || b->base + pages * b->stride > (1ULL << (g->va_bits - 1)))
		b->base = 0;
	if (b->base + pages * b->stride > (1ULL << (g->va_bits - 1))) {
		free(b);
		return -ERANGE;
	}
	uint64_t tables = pages + pages / (1ULL << g->level[1].bits) + 2 * g->nlevels + 64;
	int rc = ptr_arena_create(geometry, 2, bind_nodes, (uint32_t)tables, &b->a);
	if (rc)
		goto fail;
	rc = ptr_mm_create(b->a, table_node, &b->mm);
	if (rc)
		goto fail;
	uint64_t page = ptr_level_size(g, 0);
	for (uint64_t i = 0; i < pages && !rc; i++)
		rc = ptr_map(b->mm, b->base + i * b->stride, b->base + i * b->stride + page,
			     i * page, 0, true, table_node);
	if (rc)
		goto fail;
	rc = ptr_cpu_create(b->a, &b->cpu);
	if (!rc)
		rc = ptr_cpu_switch_to(b->cpu, b->mm);
	if (rc)
		goto fail;
	*out = b;
	return 0;
fail:
	ptr_bench_walk_destroy(b);
	return rc;
}

/**
 * ptr_bench_walk_destroy() - free a walk context (NULL: nothing).
 * @b: the context
 *
 * Return: nothing.
 * Locking: the caller owns @b.
 */
void ptr_bench_walk_destroy(struct ptr_bench_walk *b)
{
	if (!b)
		return;
	if (b->cpu)
		ptr_cpu_destroy(b->cpu);
	if (b->mm)
		ptr_mm_destroy(b->mm);
	if (b->a)
		ptr_arena_destroy(b->a);
	free(b);
}

/* The emulated CPU: @n reads at random mapped pages (the addresses continue the sequence in
 * *@x); each address depends on the previous result (phys >> 63 is always 0, but the compiler
 * cannot know), so accesses do not overlap. */
static int walk_cpu(struct ptr_bench_walk *b, uint64_t n, uint64_t *x, uint64_t *sink)
{
	uint64_t dep = 0;
	for (uint64_t i = 0; i < n; i++) {
		uint64_t p = (bench_rng(x) >> 16) % b->pages;
		uint64_t phys;
		int rc = ptr_cpu_access(b->cpu, b->base + (p + dep) * b->stride, false, &phys);
		if (rc)
			return rc;
		dep = phys >> 63;
	}
	*sink += dep;
	return 0;
}

/* The baseline: addresses drawn the same way, a bare dependent chase root -> ... -> leaf
 * through the same frames (what a hardware walker with no caches does: one load per level, no
 * checks). */
static void walk_chase(struct ptr_bench_walk *b, uint64_t n, uint64_t *x, uint64_t *sink)
{
	const struct ptr_geometry *g = b->mm->geo;
	uint8_t *base = b->a->base;
	uint64_t amask = g->e_addr;
	int top = TOP(g);
	uint64_t dep = 0;
	for (uint64_t i = 0; i < n; i++) {
		uint64_t p = (bench_rng(x) >> 16) % b->pages;
		uint64_t va = b->base + (p + dep) * b->stride;
		const uint8_t *t = base + (uint64_t)atomic_load_explicit(&b->mm->root,
									 memory_order_relaxed) *
						  b->a->frame_bytes;
		uint64_t e = 0;
		for (int l = top; l >= 0; l--) {
			e = ptr_entry_load(g, l, t, ptr_index(g, l, va));
			t = base + (e & amask);
		}
		dep = e >> 63;
	}
	*sink += dep;
}

/*
 * Walks per slice of a round.  The two loops alternate slice by slice (a few ms each), so what
 * the shared machine does meanwhile - another process's memory traffic, a frequency change -
 * falls on both sides of a round alike: timing one 400k-walk loop after the other let the chase
 * alone vary 230-880 ns per walk between consecutive rounds on this 2-core box.  Each slice
 * draws fresh addresses from the round's sequence (the two sides of a slice do not share
 * addresses: the second would find the first one's lines and host TLB entries warm).
 */
#define WALK_SLICE 4096

/**
 * ptr_bench_walk_round() - @n emulated accesses and @n chased walks at random addresses of the
 * round's sequence, interleaved in slices of WALK_SLICE walks; in each slice pair the loop that
 * runs first alternates, starting with the chase when @chase_first.  The CPU's TLB and caches
 * are flushed first (not between slices: the CPU keeps its caches as a running one does).
 * @b:           the context
 * @n:           walks per loop
 * @seed:        the address sequence
 * @chase_first: the first slice pair runs the pointer chase first
 * @cpu_ns:      out: the CPU loop's time, summed over its slices
 * @chase_ns:    out: the chase's time, summed over its slices
 *
 * Return: 0, or the -errno / PTR_FAULT_* an access failed with.
 * Locking: none; one thread per context.
 */
int ptr_bench_walk_round(struct ptr_bench_walk *b, uint64_t n, uint64_t seed, int chase_first,
			 uint64_t *cpu_ns, uint64_t *chase_ns)
{
	uint64_t sink = 0, x = seed | 1, tc = 0, tw = 0;
	int rc = 0;
	ptr_cpu_flush(b->cpu);
	for (uint64_t done = 0, k = 0; done < n && !rc; done += WALK_SLICE, k++) {
		uint64_t m = n - done < WALK_SLICE ? n - done : WALK_SLICE;
		for (int side = 0; side < 2 && !rc; side++) {
			bool chase = (side == 0) == ((k & 1) == (uint64_t)!chase_first);
			uint64_t t0 = bench_now_ns();
			if (chase)
				walk_chase(b, m, &x, &sink);
			else
				rc = walk_cpu(b, m, &x, &sink);
			uint64_t dt = bench_now_ns() - t0;
			if (chase)
				tw += dt;
			else
				tc += dt;
		}
	}
	*cpu_ns = tc;
	*chase_ns = tw;
	ptr_cpu_get_stats(b->cpu, &b->st);
	return rc ? rc : (int)(sink & 0); /* keep sink alive */
}

/**
 * ptr_bench_walk_stats() - the CPU's cumulative counters (TLB hits, walks, PWC hits).
 * @b:   the context
 * @out: the counters as of the last round
 *
 * Return: nothing.
 * Locking: none; one thread per context.
 */
void ptr_bench_walk_stats(struct ptr_bench_walk *b, struct ptr_cpu_stats *out)
{
	*out = b->st;
}

/* ---- relocate ------------------------------------------------------------------------------- */

struct ptr_bench_reloc {
	struct ptr_arena *a;
	struct ptr_mm *mm;
	uint64_t mapped;
	int cur;              /* pool the tables are on now */
	int strategy, batch;
	unsigned int flags;   /* PTR_RELOC_F_UNTIMED or 0 (ptr_bench_reloc_set_timed()) */
	uint32_t *frames;     /* the tables in relocation order */
	uint32_t *levels;
	size_t nframes, cap;
	uint8_t *dst;         /* memcpy baseline target: one frame slot per table */
};

static int note(struct ptr_bench_reloc *b, int level, uint32_t f)
{
	if (b->nframes == b->cap)
		return -E2BIG;
	b->frames[b->nframes] = f;
	b->levels[b->nframes++] = (uint32_t)level;
	return 0;
}

/* The bench's collection is an ops table over the core's whole-tree walk, as relocation's. */
static int collect_cb(struct ptr_walk *w, void *t, uint32_t i, int level, uint64_t addr,
		      uint64_t next)
{
	struct ptr_bench_reloc *b = w->priv;
	const struct ptr_geometry *g = b->mm->geo;
	return note(b, level - 1, ptr_phys_frame(b->a, ptr_entry_phys(g, level,
								      ptr_entry_load(g, level, t, i))));
}

static const struct ptr_walk_ops collect_ops = { .table = collect_cb, .lock = PTR_WALK_LOCKLESS };

static int collect(struct ptr_bench_reloc *b)
{
	int rc = note(b, TOP(b->mm->geo), atomic_load(&b->mm->root));
	struct ptr_walk w = { .mm = b->mm, .ops = &collect_ops, .priv = b };
	return rc ? rc : ptr_walk_tree(&w);
}

static int by_level_then_frame(const void *pa, const void *pb, void *arg)
{
	const struct ptr_bench_reloc *b = arg;
	uint32_t ia = *(const uint32_t *)pa, ib = *(const uint32_t *)pb;
	if (b->levels[ia] != b->levels[ib])
		return b->levels[ia] > b->levels[ib] ? -1 : 1;
	return b->frames[ia] < b->frames[ib] ? -1 : b->frames[ia] > b->frames[ib];
}

/* The current tables, top level first then ascending frame (relocate.c's rec_order). */
static int collect_sorted(struct ptr_bench_reloc *b)
{
	b->nframes = 0;
	int rc = collect(b);
	if (rc)
		return rc;
	uint32_t *idx = malloc(b->nframes * sizeof(*idx));
	uint32_t *f2 = malloc(b->nframes * sizeof(*f2));
	uint32_t *l2 = malloc(b->nframes * sizeof(*l2));
	if (!idx || !f2 || !l2) {
		free(idx);
		free(f2);
		free(l2);
		return -ENOMEM;
	}
	for (size_t i = 0; i < b->nframes; i++)
		idx[i] = (uint32_t)i;
	qsort_r(idx, b->nframes, sizeof(*idx), by_level_then_frame, b);
	for (size_t i = 0; i < b->nframes; i++) {
		f2[i] = b->frames[idx[i]];
		l2[i] = b->levels[idx[i]];
	}
	memcpy(b->frames, f2, b->nframes * sizeof(*f2));
	memcpy(b->levels, l2, b->nframes * sizeof(*l2));
	free(idx);
	free(f2);
	free(l2);
	return 0;
}

/**
 * ptr_bench_reloc_create() - 2-pool arena, an address space with [base, base + @mapped) mapped
 * with base pages, every table on pool 0.
 * @geometry:   geometry name
 * @mapped:     bytes mapped, a multiple of the base page, at most half the address space
 * @bind_nodes: real NUMA node per pool, -1 virtual
 * @strategy:   PTR_RELOC_*
 * @batch:      frames per batch
 * @out:        the context
 *
 * Return: 0 and *@out; -EINVAL, -ENOMEM, or the arena's/map's -errno.
 * Locking: none; one thread per context.
 */
int ptr_bench_reloc_create(const char *geometry, uint64_t mapped, const int *bind_nodes,
			   int strategy, int batch, struct ptr_bench_reloc **out)
{
	const struct ptr_geometry *g = ptr_geometry_find(geometry);
	if (!g || !bind_nodes || !out || batch < 1)
		return -EINVAL;
	uint64_t page = ptr_level_size(g, 0);
	if (mapped < page || mapped % page || mapped > (1ULL << (g->va_bits - 1)))
		return -EINVAL;
	struct ptr_bench_reloc *b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->mapped = mapped;
	b->strategy = strategy;
	b->batch = batch;
	/* tables per level: ceil(mapped / span of a level-l table) */
	uint64_t tables = 0;
	for (int l = 0; l < g->nlevels; l++) {
		uint64_t span = ptr_level_size(g, l) << g->level[l].bits;
		tables += (l == TOP(g)) ? 1 : (mapped + span - 1) / span + 1;
	}
	if (g->top_preloaded)
		tables += 4;
	b->cap = tables + 64;
	int rc = ptr_arena_create(geometry, 2, bind_nodes, (uint32_t)b->cap, &b->a);
	if (rc)
		goto fail;
	rc = ptr_mm_create(b->a, 0, &b->mm);
	if (rc)
		goto fail;
	uint64_t start = 0;
	if (g->va_bits > 32 && mapped <= (1ULL << g->level[TOP(g)].shift))
		start = 1ULL << g->level[TOP(g)].shift;
	rc = ptr_map(b->mm, start, start + mapped, 0, 0, true, 0);
	if (rc)
		goto fail;
	b->frames = malloc(b->cap * sizeof(*b->frames));
	b->levels = malloc(b->cap * sizeof(*b->levels));
	b->dst = bench_buffer(b->cap * b->a->frame_bytes);
	if (!b->frames || !b->levels || !b->dst) {
		rc = -ENOMEM;
		goto fail;
	}
	*out = b;
	return 0;
fail:
	ptr_bench_reloc_destroy(b);
	return rc;
}

/**
 * ptr_bench_reloc_destroy() - free a relocate context (NULL: nothing).
 * @b: the context
 *
 * Return: nothing.
 * Locking: the caller owns @b.
 */
void ptr_bench_reloc_destroy(struct ptr_bench_reloc *b)
{
	if (!b)
		return;
	if (b->mm)
		ptr_mm_destroy(b->mm);
	if (b->a)
		ptr_arena_destroy(b->a);
	if (b->dst)
		munmap(b->dst, b->cap * b->a->frame_bytes);
	free(b->frames);
	free(b->levels);
	free(b);
}

/**
 * ptr_bench_reloc_set_poison() - poison freed frames in this bench's arena (the default) or
 * not, to measure what poisoning costs a relocation.
 * @b:  the context
 * @on: poison
 *
 * Return: nothing.
 * Locking: none; between rounds only (ptr_arena_set_poison()).
 */
void ptr_bench_reloc_set_poison(struct ptr_bench_reloc *b, int on)
{
	ptr_arena_set_poison(b->a, on != 0);
}

/**
 * ptr_bench_reloc_set_timed() - let the relocations of this bench read the clock at every
 * phase boundary (the report's ns_* figures, the default) or not (PTR_RELOC_F_UNTIMED: the
 * headline rounds, timed only from outside).
 * @b:  the context
 * @on: time the phases
 *
 * Return: nothing.
 * Locking: none; between rounds only.
 */
void ptr_bench_reloc_set_timed(struct ptr_bench_reloc *b, int on)
{
	b->flags = on ? 0 : PTR_RELOC_F_UNTIMED;
}

static uint64_t memcpy_tables(struct ptr_bench_reloc *b)
{
	const struct ptr_geometry *g = b->mm->geo;
	uint64_t t0 = bench_now_ns();
	for (size_t i = 0; i < b->nframes; i++)
		memcpy(b->dst + i * b->a->frame_bytes, ptr_frame_data(b->a, b->frames[i]),
		       ptr_table_bytes(g, (int)b->levels[i]));
	return bench_now_ns() - t0;
}

/**
 * ptr_bench_reloc_round() - move every table to the other pool (timed), and memcpy the same
 * tables' bytes in the same order (timed), in the order @memcpy_first says.
 * @b:            the context
 * @memcpy_first: run the memcpy baseline first
 * @out:          the two times, frames and bytes, and the relocation's report
 *
 * Return: 0, ptr_relocate()'s -errno (-EOPNOTSUPP in the norelo build), -EIO when not every
 * table moved, -E2BIG/-ENOMEM (collecting the tables).
 * Locking: none; one thread per context (the relocation takes its own locks).
 */
int ptr_bench_reloc_round(struct ptr_bench_reloc *b, int memcpy_first,
			  struct ptr_bench_reloc_result *out)
{
	memset(out, 0, sizeof(*out));
	int rc = collect_sorted(b);
	if (rc)
		return rc;
	out->frames = b->nframes;
	for (size_t i = 0; i < b->nframes; i++)
		out->bytes += ptr_table_bytes(b->mm->geo, (int)b->levels[i]);
	if (memcpy_first)
		out->memcpy_ns = memcpy_tables(b);
	int to = 1 - b->cur;
	ptr_mm_set_node(b->mm, to);
	uint64_t t0 = bench_now_ns();
	rc = ptr_relocate_mms_flags(&b->mm, 1, 1u << b->cur, to, NULL, NULL, b->strategy, b->batch,
				    b->flags, &out->report);
	out->reloc_ns = bench_now_ns() - t0;
	if (rc)
		return rc;
	if (out->report.relocated != b->nframes)
		return -EIO;
	b->cur = to;
	if (!memcpy_first)
		out->memcpy_ns = memcpy_tables(b);
	return 0;
}

/* ---- concurrent ----------------------------------------------------------------------------- */

/*
 * Latency histogram: log-linear, PTR_BENCH_HIST_SUB sub-buckets per power of two (a relative
 * resolution of 1/32, about 3%).  Values below 64 ns have a bucket each; bucket i >= 64 covers
 * [(32 + i % 32) << s, (33 + i % 32) << s) with s = i / 32 - 1.  ptreloc/bench.py decodes them.
 */
static inline uint32_t hist_bucket(uint64_t v)
{
	if (v < 2 * PTR_BENCH_HIST_SUB)
		return (uint32_t)v;
	int msb = 63 - __builtin_clzll(v);
	int shift = msb - 5;
	return (uint32_t)((shift + 1) * PTR_BENCH_HIST_SUB + (v >> shift) - PTR_BENCH_HIST_SUB);
}

/**
 * ptr_bench_hist_lower() - the smallest value bucket @i holds (for decoding and tests).
 * @i: the bucket, < PTR_BENCH_HIST_BUCKETS
 *
 * Return: the value.
 * Locking: none; pure.
 */
uint64_t ptr_bench_hist_lower(uint32_t i)
{
	if (i < 2 * PTR_BENCH_HIST_SUB)
		return i;
	uint32_t shift = i / PTR_BENCH_HIST_SUB - 1;
	return (uint64_t)(PTR_BENCH_HIST_SUB + i % PTR_BENCH_HIST_SUB) << shift;
}

/**
 * ptr_bench_hist_index() - the bucket of value @v (exported for tests).
 * @v: the value (nanoseconds)
 *
 * Return: the bucket, < PTR_BENCH_HIST_BUCKETS (the last one holds everything above).
 * Locking: none; pure.
 */
uint32_t ptr_bench_hist_index(uint64_t v)
{
	return hist_bucket(v);
}

enum { PH_IDLE = 0, PH_BUSY = 1, PH_SWITCH = 2, PH_DONE = 3 };

struct conc {
	const struct ptr_bench_conc_config *cfg;
	struct ptr_arena *a;
	struct ptr_mm *mm;
	uint64_t base, page, stride;  /* stride: VA between the accessed pages */
	_Atomic int phase;
	_Atomic int relocating;   /* the relocator is inside ptr_relocate() */
	_Atomic int ready;
	_Atomic int round;        /* the round the current phase belongs to */
	pthread_mutex_t lock;
	struct ptr_bench_conc_result *out;
};

struct conc_cpu {
	struct conc *s;
	int idx, rc;
	uint64_t *hists;          /* rounds x {idle, busy} histograms of this CPU */
	uint64_t idle_n, busy_n, idle_max, busy_max, discarded;
};

static void *conc_cpu_thread(void *p)
{
	struct conc_cpu *cc = p;
	struct conc *s = cc->s;
	struct ptr_cpu *cpu;
	cc->rc = ptr_cpu_create(s->a, &cpu);
	if (!cc->rc)
		ptr_cpu_switch_to(cpu, s->mm);
	atomic_fetch_add(&s->ready, 1);
	if (cc->rc)
		return NULL;
	uint64_t x = s->cfg->seed * 0x9e3779b97f4a7c15ULL + (uint64_t)cc->idx * 7919 + 3;
	for (;;) {
		int ph = atomic_load_explicit(&s->phase, memory_order_acquire);
		if (ph == PH_DONE)
			break;
		int rnd = atomic_load_explicit(&s->round, memory_order_relaxed);
		uint64_t r = bench_rng(&x);
		uint64_t va = s->base + ((r >> 16) % s->cfg->pages) * s->stride;
		bool write = (int)(r % 100) < s->cfg->write_pct;
		uint64_t t0 = bench_now_ns();
		int rc = ptr_cpu_access_fault(cpu, va, write, NULL);
		uint64_t d = bench_now_ns() - t0;
		if (rc) {
			cc->rc = rc;
			break;
		}
		if (ph == PH_SWITCH || atomic_load_explicit(&s->phase, memory_order_acquire) != ph) {
			cc->discarded++;
			continue;
		}
		uint64_t *h = cc->hists + (size_t)(2 * rnd + (ph == PH_BUSY)) * PTR_BENCH_HIST_BUCKETS;
		h[hist_bucket(d)]++;
		if (ph == PH_IDLE) {
			cc->idle_n++;
			if (d > cc->idle_max)
				cc->idle_max = d;
		} else {
			cc->busy_n++;
			if (d > cc->busy_max)
				cc->busy_max = d;
		}
	}
	ptr_cpu_destroy(cpu);
	return NULL;
}

static void *conc_reloc_thread(void *p)
{
	struct conc *s = p;
	struct ptr_bench_conc_result *o = s->out;
	int cur = 0;
	for (;;) {
		int ph = atomic_load(&s->phase);
		if (ph == PH_DONE)
			break;
		if (ph != PH_BUSY) {
			struct timespec ts = { 0, 100000 };
			nanosleep(&ts, NULL);
			continue;
		}
		atomic_store(&s->relocating, 1);
		/* re-check: the controller may have left the busy phase meanwhile */
		if (atomic_load(&s->phase) != PH_BUSY) {
			atomic_store(&s->relocating, 0);
			continue;
		}
		struct ptr_reloc_report rep;
		int to = 1 - cur;
		ptr_mm_set_node(s->mm, to);
		int rc = ptr_relocate(s->mm, 1u << cur, to, NULL, NULL, s->cfg->strategy,
				      s->cfg->batch, &rep);
		atomic_store(&s->relocating, 0);
		if (rc) {
			o->error = rc;
			break;
		}
		cur = to;
		o->relocations++;
		o->frames += rep.relocated;
		o->shootdowns += rep.shootdowns;
		o->reloc_ns += rep.ns_total;
		o->stopped_sum_ns += rep.ns_stopped;
		if (rep.ns_stopped > o->stopped_max_ns)
			o->stopped_max_ns = rep.ns_stopped;
	}
	return NULL;
}

static void conc_sleep(double s)
{
	struct timespec ts = { (time_t)s, (long)((s - (double)(time_t)s) * 1e9) };
	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

/**
 * ptr_bench_concurrent() - @cfg->cpus CPU threads access random pages of a fully mapped region
 * (@cfg->sparse: one page per level-0 table, so idle accesses walk too), timing each access;
 * @cfg->rounds (<= 1024) rounds of an idle phase and a busy phase (in alternating order)
 * during which one relocator moves every table to the other pool and back, continuously.
 * @cfg: the run (struct ptr_bench_conc_config)
 * @out: histograms and counters of both phases
 *
 * Accesses that straddle a phase change are discarded.  Per-round histograms go to
 * @cfg->round_hists when it is set.
 * Return: 0 (an access or relocation error is in @out->error), -EINVAL, -ERANGE (a sparse
 * region beyond the lower half of the address space), -EOPNOTSUPP (norelo build), or the
 * -errno of the set-up.
 * Locking: owns its arena; its threads take what accesses and relocations take.
 */
int ptr_bench_concurrent(const struct ptr_bench_conc_config *cfg,
			 struct ptr_bench_conc_result *out)
{
	const struct ptr_geometry *g = cfg ? ptr_geometry_find(cfg->geometry) : NULL;
	if (!g || !out || cfg->cpus < 1 || cfg->cpus > PTR_MAX_CPUS - 2 || cfg->pages < 1 ||
	    cfg->pages > (1u << 24) || cfg->rounds < 1 || cfg->rounds > 1024 || cfg->phase_s <= 0 || cfg->batch < 1 ||
	    !cfg->bind_nodes || (cfg->sparse != 0 && cfg->sparse != 1) ||
	    (cfg->sparse && g->nlevels < 2))
		return -EINVAL;
	if (!PTR_RELOCATION)
		return -EOPNOTSUPP;
	memset(out, 0, sizeof(*out));
	struct conc s = { .cfg = cfg, .out = out };
	s.page = ptr_level_size(g, 0);
	s.base = g->va_bits > 32 ? 1ULL << g->level[TOP(g)].shift : 0x400000;
	s.stride = cfg->sparse ? ptr_level_size(g, 1) : s.page;
	if (s.base + cfg->pages * s.stride > (1ULL << (g->va_bits - 1)))
		return -ERANGE;
	uint64_t tables = cfg->pages / (1ULL << g->level[0].bits) + 4 * g->nlevels + 64;
	if (cfg->sparse)
		tables += cfg->pages + cfg->pages / (1ULL << g->level[1].bits);
	if (tables > UINT32_MAX)
		return -EINVAL;
	int rc = ptr_arena_create(cfg->geometry, 2, cfg->bind_nodes, (uint32_t)tables, &s.a);
	if (rc)
		return rc;
	rc = ptr_mm_create(s.a, 0, &s.mm);
	if (!rc && !cfg->sparse)
		rc = ptr_map(s.mm, s.base, s.base + cfg->pages * s.page, 0, 0, true, 0);
	for (uint64_t i = 0; !rc && cfg->sparse && i < cfg->pages; i++)
		rc = ptr_map(s.mm, s.base + i * s.stride, s.base + i * s.stride + s.page,
			     i * s.page, 0, true, 0);
	struct conc_cpu *cc = calloc((size_t)cfg->cpus, sizeof(*cc));
	size_t per_cpu = (size_t)cfg->rounds * 2 * PTR_BENCH_HIST_BUCKETS;
	uint64_t *hists = calloc((size_t)cfg->cpus * per_cpu, sizeof(uint64_t));
	pthread_t *th = calloc((size_t)cfg->cpus + 1, sizeof(*th));
	if (!rc && (!cc || !hists || !th))
		rc = -ENOMEM;
	if (rc)
		goto out;
	/* warm-up: fault the second pool in with one round trip, untimed */
	struct ptr_reloc_report rep;
	if ((rc = ptr_relocate(s.mm, 1u, 1, NULL, NULL, cfg->strategy, cfg->batch, &rep)) ||
	    (rc = ptr_relocate(s.mm, 2u, 0, NULL, NULL, cfg->strategy, cfg->batch, &rep)))
		goto out;
	atomic_store(&s.phase, PH_SWITCH);
	int started = 0;
	for (int i = 0; i < cfg->cpus; i++) {
		cc[i] = (struct conc_cpu){ .s = &s, .idx = i, .hists = hists + i * per_cpu };
		if (pthread_create(&th[i], NULL, conc_cpu_thread, &cc[i])) {
			rc = -EAGAIN;
			break;
		}
		started++;
	}
	bool reloc_started = false;
	if (!rc) {
		if (pthread_create(&th[cfg->cpus], NULL, conc_reloc_thread, &s))
			rc = -EAGAIN;
		else
			reloc_started = true;
	}
	while (!rc && atomic_load(&s.ready) < started)
		sched_yield();
	/* a round is one idle and one relocating phase, in alternating order (idle first in even
	 * rounds): what the previous phase left in the caches and TLBs biases neither side */
	for (int r = 0; r < cfg->rounds && !rc; r++) {
		for (int k = 0; k < 2; k++) {
			int ph = (k == 0) == (r % 2 == 0) ? PH_IDLE : PH_BUSY;
			atomic_store(&s.phase, PH_SWITCH);
			while (ph == PH_IDLE && atomic_load(&s.relocating))
				sched_yield();
			atomic_store(&s.round, r);
			atomic_store(&s.phase, ph);
			conc_sleep(cfg->phase_s);
		}
		if (out->error)
			break;
	}
	atomic_store(&s.phase, PH_DONE);
	for (int i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	if (reloc_started)
		pthread_join(th[cfg->cpus], NULL);
	for (int i = 0; i < started; i++) {
		for (int r = 0; r < cfg->rounds; r++) {
			const uint64_t *h = cc[i].hists + (size_t)2 * r * PTR_BENCH_HIST_BUCKETS;
			uint64_t *rh = cfg->round_hists
				? cfg->round_hists + (size_t)2 * r * PTR_BENCH_HIST_BUCKETS : NULL;
			for (int k = 0; k < PTR_BENCH_HIST_BUCKETS; k++) {
				out->idle_hist[k] += h[k];
				out->busy_hist[k] += h[PTR_BENCH_HIST_BUCKETS + k];
				if (rh) {
					rh[k] += h[k];
					rh[PTR_BENCH_HIST_BUCKETS + k] += h[PTR_BENCH_HIST_BUCKETS + k];
				}
			}
		}
		out->idle_n += cc[i].idle_n;
		out->busy_n += cc[i].busy_n;
		out->discarded += cc[i].discarded;
		if (cc[i].idle_max > out->idle_max)
			out->idle_max = cc[i].idle_max;
		if (cc[i].busy_max > out->busy_max)
			out->busy_max = cc[i].busy_max;
		if (cc[i].rc && !out->error)
			out->error = cc[i].rc;
	}
out:
	free(cc);
	free(hists);
	free(th);
	if (s.mm)
		ptr_mm_destroy(s.mm);
	ptr_arena_destroy(s.a);
	return rc;
}

/* ---- pool: evacuation and compaction against memcpy ---------------------------------------- */

/**
 * ptr_bench_pool_round() - one round of the ``pool`` suite: two address spaces map @mapped
 * bytes each, 2 MiB chunk by chunk in turn, with every table on node 0, so their tables
 * interleave in pool 0; the second is destroyed (every other table slot becomes a hole).  Then,
 * timed: memcpy of every remaining table's own bytes (the baseline), ptr_compact() of pool 0,
 * ptr_evacuate() of pool 0 to node 1 - the order of the baseline and the two operations given
 * by @memcpy_first.  Freed-frame poisoning is off (the relocate suite's headline setting).
 * @geometry:     paging format
 * @mapped:       bytes each address space maps (>= 2 MiB)
 * @bind_nodes:   2 entries: real NUMA node per arena node, or -1 (virtual)
 * @strategy:     PTR_RELOC_*
 * @batch:        frames per batch
 * @memcpy_first: run the memcpy baseline before (1) or after (0) the two operations
 * @out:          the figures
 *
 * Return: 0; -EINVAL; -EOPNOTSUPP (norelo build); the -errno of the arena, the mappings or
 * the operations.
 * Locking: none; a private arena, one thread.
 */
int ptr_bench_pool_round(const char *geometry, uint64_t mapped, const int *bind_nodes,
			 int strategy, int batch, int memcpy_first,
			 struct ptr_bench_pool_result *out)
{
	const struct ptr_geometry *g = ptr_geometry_find(geometry);
	if (!g || !out || mapped < (2u << 20) || g->nlevels < 2)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	if (!PTR_RELOCATION)
		return -EOPNOTSUPP;
	uint64_t chunk = ptr_level_size(g, 1); /* one level-0 table's span */
	uint64_t nchunks = (mapped + chunk - 1) / chunk;
	uint64_t fpn = 2 * (nchunks + 64) + 1024;
	fpn = (fpn + 511) & ~511ULL;
	if (fpn > UINT32_MAX / 2)
		return -EINVAL;
	struct ptr_arena *a = NULL;
	struct ptr_mm *mm[2] = { NULL, NULL };
	uint32_t *frames = NULL;
	uint8_t *dst = NULL;
	int rc = ptr_arena_create(geometry, 2, bind_nodes, (uint32_t)fpn, &a);
	if (rc)
		return rc;
	ptr_arena_set_poison(a, false);
	for (int i = 0; i < 2 && !rc; i++)
		rc = ptr_mm_create(a, 0, &mm[i]);
	for (uint64_t c = 0; c < nchunks && !rc; c++)
		for (int i = 0; i < 2 && !rc; i++)
			rc = ptr_map(mm[i], c * chunk, (c + 1) * chunk, c * chunk, 0, true, 0);
	if (!rc) {
		rc = ptr_mm_destroy(mm[1]);
		mm[1] = NULL;
	}
	const struct ptr_pool *p = &a->pool[0];
	frames = malloc(sizeof(*frames) * p->nframes);
	dst = malloc((size_t)p->nframes * a->frame_bytes);
	if (!rc && (!frames || !dst))
		rc = -ENOMEM;
	uint32_t n = 0;
	for (uint32_t i = 0; !rc && i < p->nframes; i++)
		if (atomic_load(&a->frames[p->first + i].state) == PTR_FRAME_LIVE)
			frames[n++] = p->first + i;
	if (!rc)
		memset(dst, 0, (size_t)n * a->frame_bytes); /* fault the baseline's target in */
	/* and the evacuation's: the slots of pool 1 it will take (zeroed by the allocation, then
	 * given back), as the relocate suite's warm-up round faults both pools in */
	uint32_t *warm = rc ? NULL : malloc(sizeof(*warm) * (n ? n : 1));
	if (!rc && !warm)
		rc = -ENOMEM;
	uint32_t nwarm = 0;
	while (!rc && nwarm < n && ptr_frame_alloc(a, 1, 0, &warm[nwarm]) == 0)
		nwarm++;
	for (uint32_t i = 0; i < nwarm; i++)
		ptr_frame_free(a, warm[i]);
	free(warm);
	struct ptr_evac_report er;
	for (int step = 0; step < 2 && !rc; step++) {
		if ((step == 0) == (memcpy_first != 0)) {
			uint64_t t0 = bench_now_ns();
			for (uint32_t i = 0; i < n; i++)
				memcpy(dst + (size_t)i * a->frame_bytes, ptr_frame_data(a, frames[i]),
				       ptr_table_bytes(g, a->frames[frames[i]].level));
			out->memcpy_ns = bench_now_ns() - t0;
			continue;
		}
		rc = ptr_compact(&mm[0], 1, 0, strategy, batch, &er);
		if (rc)
			break;
		out->compact_ns = er.reloc.ns_total;
		out->compact_frames = er.reloc.relocated;
		out->runs_2m = er.before.runs;
		out->largest_free_before = er.before.largest_free_run;
		out->largest_free_after = er.after.largest_free_run;
		out->free_2m_before = er.before.free_runs;
		out->free_2m_after = er.after.free_runs;
		out->used_before = er.before.used;
		out->packed_after = (uint64_t)er.after.packed;
		rc = ptr_evacuate(&mm[0], 1, 0, 1, strategy, batch, &er);
		if (rc)
			break;
		out->evac_ns = er.reloc.ns_total;
		out->evac_frames = er.reloc.relocated;
		out->evac_left = er.left;
	}
	out->frames = n;
	for (uint32_t i = 0; i < n; i++)
		out->bytes += ptr_table_bytes(g, a->frames[frames[i]].level);
	free(frames);
	free(dst);
	for (int i = 0; i < 2; i++)
		if (mm[i])
			ptr_mm_destroy(mm[i]);
	if (ptr_arena_destroy(a) && !rc)
		rc = -EBUSY;
	return rc;
}
