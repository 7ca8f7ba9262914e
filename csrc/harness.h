/*
 * harness.h - the test and measurement harnesses: the torture test (stress.c) and the timed
 * loops of `ptreloc bench` (bench.c).  Not part of the core proper: they only use the core's
 * interfaces, and no core function calls them (ptreloc.h includes this for the cffi module).
 *
 * Functions are documented (kernel-doc: arguments, Return:, Locking:) at their definitions in
 * stress.c and bench.c; static inline ones here.
 */
#ifndef PTRELOC_HARNESS_H
#define PTRELOC_HARNESS_H

#include "cpu.h"
#include "relocate.h"

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
	int scenario;           /* PTR_STRESS_RELOCATE (0), _EVACUATE (1), _COMPACT (2), _SHARE (3) */
	int share_flush_one;    /* _SHARE, wrong on purpose: the reclaimer flushes only the mm it
				 * called the consumer on - shows what that loses, whatever the
				 * protocol (the test that the sharer shootdown is needed) */
};

/** Stress scenarios: what the relocator thread does with the tables (stress.c). */
enum ptr_stress_scenario {
	PTR_STRESS_RELOCATE = 0, /* relocate every table node 0 <-> 1 */
	PTR_STRESS_EVACUATE = 1, /* evacuate pool 0, then pool 1, ... (ptr_evacuate()) */
	PTR_STRESS_COMPACT = 2,  /* fragment pool 0 (tables spread over it), then ptr_compact() */
	PTR_STRESS_SHARE = 3,    /* a second mm shares each chunk's level-1 table (hugetlb-style);
				  * half the CPUs run it; both mms relocated together */
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
	/* access_errors split: a fault code after the retries / a -errno of the fault path, and
	 * the last such errno (positive; 0 when none) - what a failed run needs to say */
	uint64_t access_errors_fault, access_errors_errno, access_error_last_errno;
	uint64_t dirty_cleans, young_cleans, unmaps, found_dirty, found_young;
	uint64_t checked_dirty, checked_accessed;  /* final verdict: pages whose A/D must be set */
	uint64_t audits, audit_checked;            /* parked audits (one per relocation), and the
						    * pages they found whose A/D had to be set */
	uint64_t lost_dirty, lost_accessed, freed_frame_accesses, leaked_frames;
	uint64_t translation_mismatches;
	/* evacuate/compact scenarios: pool operations done, frames they moved, their time;
	 * evacuate: frames of the mm left on the evacuated pool, summed (must be 0);
	 * compact: used slots left above the packed boundary, summed (faults may put some there),
	 * rounds whose pool ended packed, and the pool figures before/after of the most fragmented
	 * round (fewest free 2 MiB runs before) */
	uint64_t pool_ops, pool_op_failures, pool_frames_moved, pool_op_ns;
	uint64_t evac_left, compact_above, compact_packed;
	uint64_t pool_runs_2m, pool_largest_free_before, pool_largest_free_after;
	uint64_t pool_free_2m_before, pool_free_2m_after;
};

int ptr_stress_run(const struct ptr_stress_config *cfg, struct ptr_stress_result *out);

/* ------------------------------------------------------------------------------------------ */
/* Bench (bench.c) - the timed loops of `ptreloc bench`; compiled into both builds              */
/* ------------------------------------------------------------------------------------------ */

/* Contexts live across rounds (the first round warms memory up); see bench.c. */
struct ptr_bench_fault;
struct ptr_bench_walk;
struct ptr_bench_reloc;

int ptr_bench_fault_create(const char *geometry, uint64_t pages, int with_data, int bind_node,
			   struct ptr_bench_fault **out);
int ptr_bench_fault_round(struct ptr_bench_fault *b, uint64_t seed, uint64_t *ns);
void ptr_bench_fault_destroy(struct ptr_bench_fault *b);

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
/** pool: one round of evacuation and compaction of a fragmented pool against memcpy of the
 * same tables (ptr_bench_pool_round()). */
struct ptr_bench_pool_result {
	uint64_t memcpy_ns, compact_ns, evac_ns, frames, bytes;
	uint64_t compact_frames, evac_frames, evac_left;
	uint64_t runs_2m, largest_free_before, largest_free_after;
	uint64_t free_2m_before, free_2m_after, used_before, packed_after;
};
int ptr_bench_pool_round(const char *geometry, uint64_t mapped, const int *bind_nodes,
			 int strategy, int batch, int memcpy_first,
			 struct ptr_bench_pool_result *out);

int ptr_bench_reloc_create(const char *geometry, uint64_t mapped, const int *bind_nodes,
			   int strategy, int batch, struct ptr_bench_reloc **out);
int ptr_bench_reloc_round(struct ptr_bench_reloc *b, int memcpy_first,
			  struct ptr_bench_reloc_result *out);
void ptr_bench_reloc_destroy(struct ptr_bench_reloc *b);
/* ptr_bench_reloc_set_poison() - poison freed frames in this bench's arena (default) or not. */
void ptr_bench_reloc_set_poison(struct ptr_bench_reloc *b, int on);
void ptr_bench_reloc_set_timed(struct ptr_bench_reloc *b, int on);

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
uint32_t ptr_bench_hist_index(uint64_t v);
uint64_t ptr_bench_hist_lower(uint32_t i);

#endif /* PTRELOC_HARNESS_H */
