/*
 * cpu.h - emulated CPUs: TLB, paging-structure caches, hardware walk, shootdown (cpu.c).
 *
 * Functions are documented (kernel-doc: arguments, Return:, Locking:) at their definitions in
 * cpu.c; static inline ones here.
 */
#ifndef PTRELOC_CPU_H
#define PTRELOC_CPU_H

#include "pgtable.h"

/* ------------------------------------------------------------------------------------------ */
/* Emulated CPUs (cpu.c)                                                                       */
/* ------------------------------------------------------------------------------------------ */

#define PTR_TLB_SETS 64
#define PTR_PWC_SETS 16

struct ptr_tlb_entry {
	uint64_t vpn;          /* va >> page shift, + 1 (0 = invalid) */
	uint64_t phys;         /* page base */
	bool writable;
	bool dirty_known;      /* D known set: a write may skip the walk */
};

struct ptr_pwc_entry {
	uint64_t tag;          /* va >> (shift + bits) of the cached table's level, + 1 */
	uint32_t frame;        /* the table frame - may be a stale (limbo) copy */
};

/** struct ptr_cpu_stats - plain counters (read by Python). */
struct ptr_cpu_stats {
	uint64_t accesses, tlb_hits, walks, faults, freed_reads, shootdowns, reloads, pwc_hits;
	uint64_t fault_path_runs;
};

/**
 * struct ptr_cpu - an emulated CPU, driven by ONE thread at a time.
 * @mm:        the mm it runs (NULL = idle; an idle CPU is always quiescent and acknowledged)
 * @busy:      held by the CPU for the duration of each access; a shooter that can take it
 *             services the shootdown remotely (rule 5)
 * @seen_gen:  last mm->tlb_gen acknowledged (after flushing)
 * @seq:       relocation build: accesses completed (bumped before busy is dropped); with @busy
 *             it tells a grace period that an access in progress has ended (cpu.c)
 * @root:      cached root frame (CR3); @pdpte caches PAE's 4 top entries (loaded at CR3 load)
 * @frame_shift, @frame_mask: log2 and size - 1 of the arena's frames (a power of two), so the
 *             walk turns an entry's address into a frame index without a divide
 */
struct ptr_cpu {
	struct ptr_arena *arena;
	int slot;
	unsigned int frame_shift;
	uint64_t frame_mask;
	_Atomic(struct ptr_mm *) mm;
	ptr_spinlock_t busy;
	_Atomic uint64_t seen_gen;
	uint64_t seen_reload;  /* mm->reload_gen at the last root load */
	_Atomic uint64_t seq;
	uint32_t root;
	uint64_t pdpte[4];
	struct ptr_tlb_entry tlb[PTR_MAX_LEVELS][PTR_TLB_SETS];
	struct ptr_pwc_entry pwc[PTR_MAX_LEVELS][PTR_PWC_SETS];
	struct ptr_cpu_stats st;
};

/** Access results (>0): the access did not complete. */
#define PTR_FAULT_NOT_PRESENT 1
#define PTR_FAULT_PROT 2
#define PTR_FAULT_FREED 3    /* the walk read a freed frame: a protocol bug, counted */

int ptr_cpu_create(struct ptr_arena *a, struct ptr_cpu **out);
int ptr_cpu_destroy(struct ptr_cpu *cpu);
int ptr_cpu_switch_to(struct ptr_cpu *cpu, struct ptr_mm *mm);
int ptr_cpu_access(struct ptr_cpu *cpu, uint64_t va, bool write, uint64_t *phys);
int ptr_cpu_access_fault(struct ptr_cpu *cpu, uint64_t va, bool write, uint64_t *phys);
void ptr_cpu_flush(struct ptr_cpu *cpu);
void ptr_cpu_service(struct ptr_cpu *cpu);
void ptr_cpu_get_stats(struct ptr_cpu *cpu, struct ptr_cpu_stats *out);

void ptr_shootdown(struct ptr_mm *mm, bool reload_root);

int ptr_run_cpus(struct ptr_mm *mm, int ncpus, uint64_t naccesses, uint64_t start, uint64_t end,
		 int write_pct, uint64_t seed, struct ptr_cpu_stats *total);

#endif /* PTRELOC_CPU_H */
