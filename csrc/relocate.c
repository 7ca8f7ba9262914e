/*
 * relocate.c - move the live page tables of address spaces between arena nodes.
 *
 * THE PROTOCOL (strategy "rewalk", the 2008 RFC's scheme with the review's holes closed)
 * ---------------------------------------------------------------------------------------
 * 0. Collect: record every table frame of each mm on a source node as a typed record (level,
 *    frame, base VA, the set of mms that link it) - from the mm's table list (collect_list():
 *    no walk), or, when an mm of the set ever shared a table, by walking its tree in a
 *    read-side section (collect_mm()).  Ask the chooser where each one goes.  Records are processed top level first, so the root switch (and its
 *    root reload) happens in the first batch and every later rewalk starts from the new root.
 *    The order is not what makes it correct: bottom-up would be correct too, because every
 *    step below REWALKS to the current parent under the lock instead of trusting the parent it
 *    saw at collection time (a parent relocated in an earlier batch is in limbo by then, and a
 *    repoint written there would vanish with it).
 * 1. Enter relocation mode: mm->relocating++ under page_table_lock.  Without it, a fault path
 *    that walked locklessly to table T before T was copied, and got T's lock after we released
 *    it, would populate T - now an unlinked limbo copy - and its new entry would be lost.  With
 *    it, every lock holder rewalks after taking the lock and chases the new copy.
 * 2. Per batch:
 *    a. allocate every target frame first, with no lock held.  A failure (pool full, injected)
 *       frees what this batch took and stops: nothing of this batch was touched, earlier
 *       batches are complete, so every translation is unchanged (a consistent tree);
 *    b. lock in the fixed order (lock.h, LOCK ORDER): page_table_lock of every mm (ascending
 *       id), then the level-1 split locks, then the level-0 ones, ascending frame index; the
 *       new frames' split locks last (unlinked frames may be locked at any point).  The new
 *       frame's lock must be held BEFORE it is published: once the parent points at it, the
 *       fault path and the A/D consumers lock it and would otherwise modify or read it before
 *       the merge (step 4);
 *    c. per record: rewalk from the root to the parent entry (the parent may have moved in
 *       this very batch: with one mm the batch's first rewalk plus the batch's own moves say
 *       where it is now, see run_batch()); copy the table's OWN bytes (ptr_table_bytes(): 32 bytes for the PAE
 *       top, 512 for the arm64-64K top - never "a page"); repoint every link with one atomic
 *       store (CAS on the parent entry; mm->root for the top level); old frame -> LIMBO;
 * 3. one shootdown per mm per batch, with a root reload when the root moved or, on PAE, when
 *    a top (PDPTE) entry changed - the CPU latches PDPTEs at CR3 load, so nothing else makes it
 *    see the new PMD table.  When ptr_shootdown() returns, every CPU has finished any access
 *    that could have started from a stale root/paging-structure-cache entry, so the old copies
 *    receive no more A/D writes from now on;
 * 4. MERGE, still holding every lock: OR into each new leaf entry the accessed/dirty state that
 *    stale CPUs wrote into the old copy between the copy (2c) and the shootdown (3).  With a CAS
 *    loop, because CPUs set A/D on the new copy concurrently - for the tables whose old copy
 *    changed since the copy read it, which a digest of each copy tells without comparing the
 *    two (THE COPY AND ITS DIGEST, below).  Not before the shootdown (a stale
 *    CPU could still write the old copy afterwards: lost), not after unlocking (writeback's
 *    test_and_clear_dirty could read the new entry clean and skip a dirty page; unmap could
 *    clear it and the merge would then resurrect a dead mapping or drop the dirty state);
 * 5. unlock.  After the last batch: ptr_synchronize() - a grace period in which every CPU and
 *    every software read-side section passed a quiescent point, because lockless walkers (the
 *    fault path's first walk, translate, rewalks) may still be reading the old copies - then
 *    free the old frames (per-level free: the poison covers the table's own bytes), then leave
 *    relocation mode (only after the grace period: a walker that saw an old table must still
 *    rewalk when it takes the lock).
 *
 * Strategy "stop" (the reviewer's alternative): take cpus_lock and every CPU's busy lock, so no
 * emulated CPU is inside an access; relocate all batches without shootdowns or merges (no CPU
 * can write A/D meanwhile); then one flush + root reload of every CPU, done by us while we hold
 * their busy locks; resume; grace period (software readers still exist); free.
 *
 * Strategy "naive" (the RFC as posted): rewalk's steps without the merge.  It keeps relocation
 * mode and the grace period, so it does not touch freed memory - it "only" loses the A/D bits
 * stale CPUs write into old copies.  It counts them (ad_lost) so a test can show the loss.
 *
 * Relocations serialize on one process-wide mutex (the kernel would hold mmap_lock for write
 * around a relocation of an mm); that also keeps two relocators from waiting on each other's
 * stopped CPUs or grace periods.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ptreloc.h"

#define TOP(g) ((g)->nlevels - 1)

typedef uint64_t u64_word __attribute__((may_alias));

/*
 * The copy, the re-check's digest and the collection's line scan are built for AVX-512, AVX2
 * and the baseline (SSE2), each with vectors of its own width (relocate_vec.h, included once
 * per width below), and a constructor picks one when the core is loaded: vectors as wide
 * as the machine's are what makes the copy memcpy's equal on a table
 * in cache (measured on an AVX-512 machine: 30 ns a 4 KiB table with 64-byte vectors, 60 with
 * 32-byte, 116 with 16-byte; glibc's memcpy 32).
 */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define VEC_SFX avx512
#define VEC_BYTES 64
#define VEC_TARGET __attribute__((target("avx512f")))
#include "relocate_vec.h"
#define VEC_SFX avx2
#define VEC_BYTES 32
#define VEC_TARGET __attribute__((target("avx2")))
#include "relocate_vec.h"
#define VEC_SFX base
#define VEC_BYTES 16
#define VEC_TARGET
#include "relocate_vec.h"

/*
 * The widest vectors this CPU runs, bytes: set once by a constructor (dlopen runs it before
 * any call into the core) and read by a switch at each kernel call.  Not an ifunc: a resolver
 * runs while the core's relocations are processed, before they are complete, and the
 * sanitizer builds instrument it with calls that need them (the ASan build segfaulted at load
 * in the TCG guest).  The branch costs nothing beside a 4 KiB copy.
 */
static int vec_width = 16;

static __attribute__((constructor)) void vec_init(void)
{
	__builtin_cpu_init();
	vec_width = __builtin_cpu_supports("avx512f") ? 64 : __builtin_cpu_supports("avx2") ? 32 : 16;
}

static inline int vec_supported_width(void)
{
	return vec_width;
}

static inline uint64_t copy_words(const void *from, void *to, uint32_t i, uint32_t nw,
				  uint64_t flip, uint64_t *any)
{
	switch (vec_width) {
	case 64: return copy_words_avx512(from, to, i, nw, flip, any);
	case 32: return copy_words_avx2(from, to, i, nw, flip, any);
	default: return copy_words_base(from, to, i, nw, flip, any);
	}
}

static inline uint64_t table_digest(const void *t, uint32_t nw, uint64_t flip)
{
	switch (vec_width) {
	case 64: return table_digest_avx512(t, nw, flip);
	case 32: return table_digest_avx2(t, nw, flip);
	default: return table_digest_base(t, nw, flip);
	}
}

static inline uint32_t next_used_line(const void *t, uint32_t line, uint32_t nlines)
{
	switch (vec_width) {
	case 64: return next_used_line_avx512(t, line, nlines);
	case 32: return next_used_line_avx2(t, line, nlines);
	default: return next_used_line_base(t, line, nlines);
	}
}
#else
#define VEC_SFX base
#define VEC_BYTES 16
#define VEC_TARGET
#include "relocate_vec.h"
#define copy_words copy_words_base
#define table_digest table_digest_base
#define next_used_line next_used_line_base
static inline int vec_supported_width(void)
{
	return 16;
}
#endif

/**
 * ptr_reloc_vec_width() - the width of the vectors of the kernels the loader picked for the
 * relocation's copy, re-check and line scan: 64 (AVX-512), 32 (AVX2) or 16 (the baseline).
 *
 * Return: the width in bytes.
 * Locking: none.
 */
int ptr_reloc_vec_width(void)
{
	return vec_supported_width();
}

/**
 * ptr_reloc_vec_run() - TEST ENTRY: run one of the vector kernels, of one width, on the
 * caller's buffers - so that every width this CPU can run is checked against the model, not
 * only the one the loader picked.
 * @width:  16, 32, 64, or 0 for the loader's pick (what relocations run)
 * @op:     0 copy_words(@from, @to, @i, @nw, @flip, @any), *@result its digest;
 *          1 table_digest(@from, @nw, @flip), *@result the digest (@i must be 0);
 *          2 next_used_line(@from, @i, @nw) over lines of 64 bytes, *@result the line
 * @from:   the table (8-byte aligned)
 * @to:     op 0: where to copy, @nw words; otherwise unused
 * @i:      op 0: the first word (a multiple of 16); op 2: the first line
 * @nw:     words (ops 0, 1) or lines (op 2)
 * @flip:   the digest's flip word
 * @any:    op 0: OR-ed with every word copied
 * @result: the kernel's return value
 *
 * Return: 0; -EOPNOTSUPP when this CPU (or this build) has no kernels of @width; -EINVAL
 * for another @width or @op, a NULL buffer, or @i past @nw (op 0: not a multiple of 16).
 * Locking: none; the kernels touch only the buffers.
 */
int ptr_reloc_vec_run(int width, int op, const void *from, void *to, uint32_t i, uint32_t nw,
		      uint64_t flip, uint64_t *any, uint64_t *result)
{
	if (width != 0 && width != 16 && width != 32 && width != 64)
		return -EINVAL;
	if (op < 0 || op > 2 || !from || !result || i > nw || (op == 0 && (!to || !any || i % 16))
	    || (op == 1 && i))
		return -EINVAL;
	if (width > vec_supported_width())
		return -EOPNOTSUPP;
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
	if (width == 64) {
		*result = op == 0 ? copy_words_avx512(from, to, i, nw, flip, any)
			: op == 1 ? table_digest_avx512(from, nw, flip)
			: next_used_line_avx512(from, i, nw);
		return 0;
	}
	if (width == 32) {
		*result = op == 0 ? copy_words_avx2(from, to, i, nw, flip, any)
			: op == 1 ? table_digest_avx2(from, nw, flip)
			: next_used_line_avx2(from, i, nw);
		return 0;
	}
#endif
	if (width == 16) {
		*result = op == 0 ? copy_words_base(from, to, i, nw, flip, any)
			: op == 1 ? table_digest_base(from, nw, flip)
			: next_used_line_base(from, i, nw);
		return 0;
	}
	*result = op == 0 ? copy_words(from, to, i, nw, flip, any)
		: op == 1 ? table_digest(from, nw, flip)
		: next_used_line(from, i, nw);
	return 0;
}

static const char *const reason_names[PTR_RELOC_NREASONS] = {
	[PTR_RELOC_R_TARGET_FULL] = "target_full", [PTR_RELOC_R_ALLOC_FAILED] = "alloc_failed",
	[PTR_RELOC_R_SHARED] = "shared",           [PTR_RELOC_R_ABORTED] = "aborted",
	[PTR_RELOC_R_BAD_TARGET] = "bad_target",   [PTR_RELOC_R_KEPT] = "kept",
	[PTR_RELOC_R_VANISHED] = "vanished",
};

/**
 * ptr_reloc_reason_name() - the name of a PTR_RELOC_R_* reason ("target_full", "shared", ...).
 * @reason: the reason
 *
 * Return: the name; "?" for an unknown reason.
 * Locking: none; constant strings.
 */
const char *ptr_reloc_reason_name(int reason)
{
	return (reason >= 0 && reason < PTR_RELOC_NREASONS) ? reason_names[reason] : "?";
}

#if !PTR_RELOCATION

/**
 * ptr_reloc_set_test_hook() - norelo build: there are no batches to hook; does nothing.
 * @fn:   ignored
 * @priv: ignored
 *
 * Return: nothing.
 * Locking: none.
 */
void ptr_reloc_set_test_hook(ptr_reloc_hook_fn fn, void *priv)
{
}

/**
 * ptr_reloc_set_copy_hook() - norelo build: there are no copies to hook; does nothing.
 * @fn:   ignored
 * @priv: ignored
 *
 * Return: nothing.
 * Locking: none.
 */
void ptr_reloc_set_copy_hook(ptr_reloc_copy_hook_fn fn, void *priv)
{
}

/**
 * ptr_relocate_mms() - norelo build: relocation is compiled out.
 * @mms:       ignored
 * @nmms:      ignored
 * @from_mask: ignored
 * @to_node:   ignored
 * @choose:    ignored
 * @priv:      ignored
 * @strategy:  ignored
 * @batch:     ignored
 * @out:       zeroed when not NULL
 *
 * Return: -EOPNOTSUPP.
 * Locking: none.
 */
int ptr_relocate_mms(struct ptr_mm *const *mms, int nmms, uint32_t from_mask, int to_node,
		     ptr_reloc_choose_fn choose, void *priv, int strategy, int batch,
		     struct ptr_reloc_report *out)
{
	return ptr_relocate_mms_flags(mms, nmms, from_mask, to_node, choose, priv, strategy, batch,
				      0, out);
}

/**
 * ptr_relocate_mms_flags() - norelo build: relocation is compiled out.
 * @mms:       ignored
 * @nmms:      ignored
 * @from_mask: ignored
 * @to_node:   ignored
 * @choose:    ignored
 * @priv:      ignored
 * @strategy:  ignored
 * @batch:     ignored
 * @flags:     ignored
 * @out:       zeroed when not NULL
 *
 * Return: -EOPNOTSUPP.
 * Locking: none.
 */
int ptr_relocate_mms_flags(struct ptr_mm *const *mms, int nmms, uint32_t from_mask, int to_node,
			   ptr_reloc_choose_fn choose, void *priv, int strategy, int batch,
			   unsigned int flags, struct ptr_reloc_report *out)
{
	if (out)
		memset(out, 0, sizeof(*out));
	return -EOPNOTSUPP;
}

#else

enum rec_state { REC_PENDING = 0, REC_MOVED, REC_SKIPPED };

struct reloc_rec {
	uint64_t base_va;
	uint64_t digest;    /* of the entries copied (copy_table()); the merge's re-check */
	uint32_t old, fresh;
	uint32_t parent;    /* one mm: the parent frame the batch's first rewalk found */
	uint32_t mm_mask;   /* bit i: mms[i] links this table */
	uint32_t shoot_mask; /* bit i: mms[i] reaches it through a shared parent (run_batch()) */
	uint8_t level;
	uint8_t state;
	bool leaves;        /* the copy saw a leaf (copy_table()): the merge re-checks it */
	uint8_t reason;
	int16_t target;
	int16_t nlinks;
};

struct reloc_ctx {
	struct ptr_mm *const *mms;
	int nmms;
	struct ptr_arena *a;
	const struct ptr_geometry *g;
	uint32_t from_mask;
	struct reloc_rec *recs;
	size_t nrecs, cap;
	uint64_t t_lap;     /* the clock at the end of the last timed phase (lap()) */
	bool timed;         /* read the clock at all (not PTR_RELOC_F_UNTIMED) */
	struct reloc_rec *inline_recs; /* the caller's 16 records on the stack (not zeroed):
					* recs until there are more, no malloc when small */
};

static pthread_mutex_t reloc_mutex = PTHREAD_MUTEX_INITIALIZER;

/* test hook: runs after a batch's repoints, before its shootdown (see relocate.h) */
static ptr_reloc_hook_fn test_hook;
static void *test_hook_priv;

/**
 * ptr_reloc_set_test_hook() - TEST HOOK: call @fn(@priv, batch index) in every rewalk/naive
 * batch after the copies and repoints, before the shootdown - the window in which a CPU with a
 * stale paging-structure cache writes A/D into an old copy.
 * @fn:   the hook; NULL removes it
 * @priv: its argument
 *
 * @fn runs with the batch's table locks held: it may drive CPU accesses that hit present
 * entries, nothing that takes a table lock (lock.h, LOCK ORDER).
 * Return: nothing.
 * Locking: takes reloc_mutex, so the hook never changes under a running relocation.
 */
void ptr_reloc_set_test_hook(ptr_reloc_hook_fn fn, void *priv)
{
	pthread_mutex_lock(&reloc_mutex);
	test_hook = fn;
	test_hook_priv = priv;
	pthread_mutex_unlock(&reloc_mutex);
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/*
 * lap() - add the time since the last lap to *@phase and start the next one.  The phases of
 * the report share their boundaries, so a relocation of one batch reads the clock 8 times
 * (each read is 20-70 ns in this VM: 13 reads were a tenth of a 1 MiB relocation).
 */
static inline uint64_t lap(struct reloc_ctx *c, uint64_t *phase)
{
	if (!c->timed)
		return 0;
	uint64_t t = now_ns();
	*phase += t - c->t_lap;
	c->t_lap = t;
	return t;
}

static inline void *fdata(struct reloc_ctx *c, uint32_t f)
{
	return ptr_frame_data(c->a, f);
}

static inline uint32_t entry_child(struct reloc_ctx *c, int level, uint64_t e)
{
	return ptr_phys_frame(c->a, ptr_entry_phys(c->g, level, e));
}

/* ---- 0. collection ----------------------------------------------------------------------- */

static struct reloc_rec *find_rec(struct reloc_ctx *c, uint32_t f)
{
	for (size_t i = 0; i < c->nrecs; i++)
		if (c->recs[i].old == f)
			return &c->recs[i];
	return NULL;
}

/* Make room for @more records.  Return: 0, -ENOMEM. */
static int reserve_recs(struct reloc_ctx *c, size_t more)
{
	if (c->nrecs + more <= c->cap)
		return 0;
	size_t cap = c->cap * 4 > c->nrecs + more ? c->cap * 4 : c->nrecs + more;
	bool inl = c->recs == c->inline_recs;
	struct reloc_rec *n = realloc(inl ? NULL : c->recs, cap * sizeof(*n));
	if (!n)
		return -ENOMEM;
	if (inl)
		memcpy(n, c->inline_recs, c->nrecs * sizeof(*n));
	c->recs = n;
	c->cap = cap;
	return 0;
}

/*
 * note_table() - record the level-@level table @f (first VA @base), reached through mms[@mi],
 * when it sits on a source node.
 * Return: 0; 1 when it was already seen through this mm (its subtree too: do not walk it
 * again); -ENOMEM.
 */
static int note_table(struct reloc_ctx *c, int mi, int level, uint32_t f, uint64_t base,
		      bool under_shared)
{
	struct ptr_frame *fr = &c->a->frames[f];
	if (!(c->from_mask & (1u << fr->node)))
		return 0;
	/* a shared table is reached from several mms: one record, several links - and so is
	 * every table below one (linked once, from the shared table, but reached through each
	 * mm that links it) */
	struct reloc_rec *r = under_shared || atomic_load(&fr->sharers) > 1 ? find_rec(c, f) : NULL;
	if (!r) {
		if (reserve_recs(c, 1))
			return -ENOMEM;
		r = &c->recs[c->nrecs++];
		*r = (struct reloc_rec){ .base_va = base, .old = f, .fresh = PTR_NO_FRAME,
					 .level = (uint8_t)level, .target = -1 };
	} else if (r->mm_mask & (1u << mi)) {
		return 1;
	}
	r->mm_mask |= 1u << mi;
	r->nlinks++;
	return 0;
}

/*
 * collect_level() - record every table the level-@level table @table (first VA @base) of
 * mms[@mi] links, and below.  Not an ops table over ptr_walk_tree(): collection reads every
 * entry of every upper-level table, nearly all of them empty in a small address space (a
 * 1 MiB mm has three tables of 512 entries and four tables in all), and the range walker's
 * per-entry work (range step, out-of-line decoders, callback dispatch: ~7 ns an entry) was
 * most of a small relocation's time.  Here an empty entry costs one relaxed load and an OR
 * (next_used_line(): vector loads, 256 bytes a test), and only a non-zero line is decoded, with an acquire reload of each
 * non-zero entry (the walkers' ordering: the child's metadata and contents were written before
 * the entry was published).
 * A zero entry is never present in any format (ptr_entry_present() tests a set bit).  What a
 * table entry leads to is exactly what the range walker's collection did: note_table(), a
 * subtree already seen through this mm skipped, a FREE child counted and -ESTALE.
 * Return: 0, -ENOMEM, -ESTALE.
 * Locking: inside the caller's read-side section.
 */
static int collect_level(struct reloc_ctx *c, int mi, int level, uint32_t table, uint64_t base,
			 bool under_shared)
{
	const struct ptr_geometry *g = c->g;
	under_shared = under_shared || atomic_load(&c->a->frames[table].sharers) > 1;
	const void *t = fdata(c, table);
	uint32_t n = 1u << g->level[level].bits;
	int shift = g->level[level].shift;
	bool sign = level == TOP(g) && g->canonical;
	uint32_t bytes = ptr_table_bytes(g, level), per_line = 64 / g->level[level].entry_size;
	uint32_t nlines = bytes / 64; /* 0 for PAE's 32-byte top: its 4 entries are decoded */
	uint32_t nl = nlines ? nlines : 1;
	for (uint32_t line = nlines ? next_used_line(t, 0, nlines) : 0; line < nl;
	     line = nlines ? next_used_line(t, line + 1, nlines) : nl) {
		uint32_t i0 = line * per_line, end = i0 + per_line < n ? i0 + per_line : n;
		for (uint32_t i = i0; i < end; i++) {
			uint64_t e = ptr_entry_load(g, level, t, i);
			if (!e || !ptr_entry_is_table(g, level, e))
				continue;
			uint32_t child = entry_child(c, level, e);
			if (child == PTR_NO_FRAME)
				continue;
			uint64_t va = base | ((uint64_t)i << shift);
			if (sign && (va >> (g->va_bits - 1)) & 1)
				va |= ~0ULL << g->va_bits; /* the upper canonical half */
			int rc = note_table(c, mi, level - 1, child, va, under_shared);
			if (rc < 0)
				return rc;
			if (rc > 0)
				continue; /* seen through this mm already: so is its subtree */
			if (!ptr_frame_live(c->a, child))
				return ptr_arena_freed_access(c->a);
			if (level - 1 > 0 &&
			    (rc = collect_level(c, mi, level - 1, child, va, under_shared)))
				return rc;
		}
	}
	return 0;
}

/* Record every table of mms[@mi] on a source node.  Return: 0, -ENOMEM, -ESTALE. */
static int collect_mm(struct reloc_ctx *c, int mi)
{
	struct ptr_mm *mm = c->mms[mi];
	int tok = ptr_read_lock(c->a);
	uint32_t root = atomic_load(&mm->root);
	int rc = note_table(c, mi, TOP(c->g), root, 0, false);
	if (!rc)
		rc = collect_level(c, mi, TOP(c->g), root, 0, false);
	ptr_read_unlock(c->a, tok);
	return rc < 0 ? rc : 0;
}

/*
 * collect_list() - record every table of mms[@mi] on a source node from the mm's TABLE LIST
 * (struct ptr_mm): what collect_mm() finds by walking the tree, without reading a single
 * entry.  The list holds exactly the tables linked in the tree: populate adds a table under
 * the lock that links it, relocation and ptr_repoint() replace one in place, nothing unlinks
 * one while the mm lives (LOCKING RULE 7).  Only for an mm that never shared a table
 * (!shared_ever): then every table it links is its own, linked once, so the record's one link
 * is this mm (mm_mask, nlinks) - what the walk would have found.  A table linked while we read
 * is either on the list or not yet, as the walk would have passed it or not (tables linked
 * after the collection are not moved: they are created on mm->node), and every record is
 * rewalked under the batch's locks before it is touched.  Levels come top first, each in link
 * order (ascending frames as a tree is faulted in, and after a relocation as well:
 * ptr_frame_free_batch() hands the freed frames out again in order), so sort_records() is
 * usually a check.
 * Return: 0, -ENOMEM, -ESTALE (a FREE frame on the list: counted as the walk would count it),
 * -EOVERFLOW (more frames on the list than it counts: a bug, reported, not a heap overflow).
 * Locking: takes mm->tables_lock; no table lock.
 */
static int collect_list(struct reloc_ctx *c, int mi)
{
	struct ptr_mm *mm = c->mms[mi];
	struct ptr_arena *a = c->a;
	int rc = 0;
	ptr_lock(&mm->tables_lock, NULL);
	if ((rc = reserve_recs(c, mm->ntables)) == 0) {
		for (int l = TOP(c->g); l >= 0 && !rc; l--) {
			for (uint32_t f = mm->tables_head[l]; f != PTR_NO_FRAME;
			     f = a->frames[f].mm_next) {
				struct ptr_frame *fr = &a->frames[f];
				if (!(c->from_mask & (1u << fr->node)))
					continue;
				if (!ptr_frame_live(a, f)) {
					rc = ptr_arena_freed_access(a);
					break;
				}
				if (unlikely(c->nrecs == c->cap)) {
					/* more frames than ntables says: a broken list is an error
					 * return, never a heap overflow */
					rc = -EOVERFLOW;
					break;
				}
				c->recs[c->nrecs++] = (struct reloc_rec){
					.base_va = atomic_load_explicit(&fr->base_va,
									memory_order_relaxed),
					.old = f, .fresh = PTR_NO_FRAME, .mm_mask = 1u << mi,
					.level = (uint8_t)l, .target = -1, .nlinks = 1 };
			}
		}
	}
	ptr_unlock(&mm->tables_lock);
	return rc;
}

/* Whether mms[@mi]'s table list stands for its tree (collect_list()). */
static bool list_usable(const struct reloc_ctx *c, int mi)
{
	return !atomic_load(&c->mms[mi]->shared_ever);
}

static int rec_order(const void *pa, const void *pb)
{
	const struct reloc_rec *a = pa, *b = pb;
	if (a->level != b->level)
		return a->level > b->level ? -1 : 1; /* top level first */
	return a->old < b->old ? -1 : a->old > b->old;
}

/*
 * sort_records() - c->recs in rec_order() (top level first, ascending frame).  Collection
 * emits them depth first, i.e. in VA order, and within a level VA order is usually frame order
 * ascending (tables allocated as the address space was faulted in) or descending (a previous
 * relocation took its targets from a LIFO free list): so when a level's records are monotonic
 * they are moved into place (reversed if need be), and only an unordered mix pays a qsort -
 * which at 64 GiB mapped (32834 records) was a tenth of the relocation's collection time.
 */
static void sort_records(struct reloc_ctx *c)
{
	size_t n = c->nrecs, count[PTR_MAX_LEVELS] = { 0 }, at[PTR_MAX_LEVELS];
	int top = TOP(c->g);
	size_t sorted = 1;
	while (sorted < n && rec_order(&c->recs[sorted - 1], &c->recs[sorted]) < 0)
		sorted++;
	if (sorted >= n)
		return; /* in order already (the table list's usual case) */
	for (size_t i = 0; i < n; i++)
		count[c->recs[i].level]++;
	struct reloc_rec *tmp = n > 1 ? malloc(n * sizeof(*tmp)) : NULL;
	if (!tmp) {
		qsort(c->recs, n, sizeof(*c->recs), rec_order);
		return;
	}
	size_t pos = 0;
	for (int l = top; l >= 0; l--) { /* bucket by level, top first, keeping the order */
		at[l] = pos;
		pos += count[l];
	}
	for (size_t i = 0; i < n; i++)
		tmp[at[c->recs[i].level]++] = c->recs[i];
	pos = 0;
	for (int l = top; l >= 0; l--) {
		struct reloc_rec *v = tmp + pos;
		size_t m = count[l];
		bool up = true, down = true;
		for (size_t i = 1; i < m && (up || down); i++) {
			up = up && v[i - 1].old < v[i].old;
			down = down && v[i - 1].old > v[i].old;
		}
		if (up)
			memcpy(c->recs + pos, v, m * sizeof(*v));
		else if (down)
			for (size_t i = 0; i < m; i++)
				c->recs[pos + i] = v[m - 1 - i];
		else {
			memcpy(c->recs + pos, v, m * sizeof(*v));
			qsort(c->recs + pos, m, sizeof(*v), rec_order);
		}
		pos += m;
	}
	free(tmp);
}

static int u32_order(const void *pa, const void *pb)
{
	uint32_t a = *(const uint32_t *)pa, b = *(const uint32_t *)pb;
	return a < b ? -1 : a > b;
}

static int mm_order(const void *pa, const void *pb)
{
	const struct ptr_mm *a = *(struct ptr_mm *const *)pa, *b = *(struct ptr_mm *const *)pb;
	return a->id < b->id ? -1 : a->id > b->id;
}

/* ---- locking ------------------------------------------------------------------------------ */

/*
 * The split locks one batch takes.  Sized once per relocation for the largest batch: a record
 * pushes at most one level-1 lock per linking mm (its parents, level 0) or itself (level 1),
 * plus one level-0 lock and one fresh-frame lock.  push() refuses to write past a capacity, so
 * a sizing bug is an error return, never a heap overflow (issue 9: the batch once carried
 * skipped records the capacity did not count).
 */
struct lockset {
	uint32_t *l1, *l0, *fresh, *limbo;
	size_t n1, n0, nfresh, nlimbo;
	size_t cap1, cap0, capfresh;
	bool overflow;
};

static inline void push(uint32_t *v, size_t *n, size_t cap, bool *overflow, uint32_t f)
{
	if (*n < cap)
		v[(*n)++] = f;
	else
		*overflow = true;
}

/*
 * The per-relocation work arrays - the lock set, the batch's picks, its allocation run - carved
 * out of one block: the caller's @stack when they fit (a small relocation calls malloc
 * not at all: seven malloc/free pairs were 4 % of a 1 MiB relocation, perf), else one malloc.
 */
struct work {
	struct reloc_rec **pick;
	uint8_t *alevels;   /* a run's levels and frames for ptr_frame_alloc_batch() */
	uint32_t *aframes;
	void *heap;         /* the malloc'd block, NULL when on the stack */
};

static int work_init(struct work *w, struct lockset *ls, size_t maxb, int nmms, void *stack,
		     size_t stack_bytes)
{
	ls->cap1 = maxb * (size_t)(nmms + 1);
	ls->cap0 = ls->capfresh = maxb;
	/* pointers first (alignment), then the u32 arrays, then the bytes */
	size_t bytes = maxb * sizeof(*w->pick) + sizeof(uint32_t) * (ls->cap1 + 4 * maxb) + maxb;
	uint8_t *p = bytes <= stack_bytes ? stack : malloc(bytes);
	w->heap = bytes <= stack_bytes ? NULL : p;
	if (!p)
		return -ENOMEM;
	w->pick = (struct reloc_rec **)(void *)p;
	p += maxb * sizeof(*w->pick);
	ls->l1 = (uint32_t *)(void *)p;
	ls->l0 = ls->l1 + ls->cap1;
	ls->fresh = ls->l0 + maxb;
	ls->limbo = ls->fresh + maxb; /* the batch's old copies: one per record */
	w->aframes = ls->limbo + maxb;
	w->alevels = (uint8_t *)(w->aframes + maxb);
	return 0;
}

static size_t sort_unique(uint32_t *v, size_t n)
{
	if (n < 2)
		return n;
	/* records come in ascending frame order per level, so the lists are mostly sorted:
	 * insertion sort is linear then, and no qsort call per batch */
	if (n <= 256) {
		for (size_t i = 1; i < n; i++) {
			uint32_t x = v[i];
			size_t j = i;
			for (; j > 0 && v[j - 1] > x; j--)
				v[j] = v[j - 1];
			v[j] = x;
		}
	} else {
		qsort(v, n, sizeof(*v), u32_order);
	}
	size_t k = 1;
	for (size_t i = 1; i < n; i++)
		if (v[i] != v[k - 1])
			v[k++] = v[i];
	return k;
}

/*
 * rewalk() - the current path of @r's table in mms[@mi]: the frame at r->level covering
 * r->base_va and its parent (PTR_NO_FRAME for the root, whose "parent entry" is mm->root).
 * The path walker stops at r->level without reading the table's own entries (a cache miss on
 * a frame the copy reads anyway).  A FREE frame on the way is counted like any walker's
 * freed-frame access (it cannot happen: under our locks, and only relocations - serialized,
 * this one running - free linked tables).
 * Return: 0; -ENOENT when the table is no longer reachable there (it "vanished").
 */
static int rewalk(struct reloc_ctx *c, int mi, const struct reloc_rec *r, uint32_t *self,
		  uint32_t *parent)
{
	struct ptr_path p;
	if (ptr_path_find(c->mms[mi], r->base_va, r->level, &p))
		return -ENOENT;
	*self = p.frame[r->level];
	*parent = r->level == TOP(c->g) ? PTR_NO_FRAME : p.frame[r->level + 1];
	return 0;
}

/* ---- 2c. copy and repoint ------------------------------------------------------------------ */

/*
 * THE COPY AND ITS DIGEST (why the copy may use plain vector loads, and the merge re-reads
 * only the old copy, once, with vector loads)
 * ------------------------------------------------------------------------------------------
 * While a table is copied, CPUs may set A/D in the source (the old copy), before or after the
 * copy reads that entry; what they write after the read must reach the new copy (the merge,
 * step 4).  Until now the copy read every entry with an 8-byte atomic load and stored it with
 * an 8-byte store (7x memcpy's time on a table in cache: one store per entry against glibc's
 * one per 64 bytes), and the merge found the entries to carry by comparing both copies entry
 * by entry after the shootdown, again with atomic loads (over half of a relocation's time at
 * 64 GiB after the copy itself).  Now the copy moves 16-byte vectors and computes a DIGEST of
 * what it stored; the merge re-reads only the OLD copy, with vector loads, computes the same
 * digest, and compares the table entry by entry only when the digest changed.
 *
 * Why an unchanged digest proves that no entry of the old copy changed after the copy read
 * it.  From the copy's read of an entry to the end of the shootdown the old copy is written by
 * nobody but CPUs (we hold every lock that covers it: the fault path, unmap, protect and the
 * A/D consumers all wait), and a CPU writes an entry only through hw_update_leaf()'s CAS on a
 * leaf, which sets A (x86 A, arm64 AF), sets D (x86) or clears AP[2] (arm64 DBM: writable-
 * clean -> dirty).  With d(w) = w ^ flip, flip = e_rdonly in every entry of the 64-bit word w
 * (4-byte entries are taken two to a word, by both sides alike, so byte order is irrelevant),
 * every change only SETS bits of d(w) - so d(w) grows, as an unsigned number, by at least 1 and
 * by less than 2^12 * (2^32 + 1) per word.  The digest is the sum of d(w) over the table's own
 * bytes: any change makes it grow, by less than 8192 words x 2^45 in all - no wrap modulo
 * 2^64.  Equal digests therefore mean no word changed.  (An XOR digest would not do: two
 * entries gaining the same bit cancel.)  The same holds if a vector load were ever torn, even
 * byte-wise: each part comes from a version of the entry, and versions only gain bits, so the
 * torn value is a bit-subset of the final entry and equal to it only if it is it.  The
 * argument needs exactly the invariant the entry-by-entry compare needed (under our locks
 * only CPUs' A/D writes change either copy); where the digest differs, the merge is that
 * compare, unchanged.
 *
 * Why the re-check may use plain loads.  It runs after ptr_shootdown() returned, so every A/D
 * write any CPU made to the old copy happens-before it (each CPU's writes precede its
 * acknowledgement, which the shooter loads; a CPU that left the mm published the switch with
 * the store the shooter loads) and no CPU can write the old copy any more.  Readers remain
 * (lockless walkers, CPUs still walking it): reads do not race with reads.  The copy's own
 * reads do race, by design, with the CAS of CPUs (copy_words() says how that is contained).
 * Cost: the re-check reads 4 KiB per leaf-level table that the batch's copy just touched (L2
 * at batch 64); a table with no leaf level (x86 PGD) is not re-read at all.
 */

/* test hook: runs in the middle of every table copy (see ptr_reloc_set_copy_hook()) */
static ptr_reloc_copy_hook_fn copy_hook;
static void *copy_hook_priv;

/**
 * ptr_reloc_set_copy_hook() - TEST HOOK: call @fn(@priv, level, entry index) in every rewalk/
 * naive table copy after the entries below that index were copied and before the rest are -
 * the window in which an A/D bit a CPU sets in an already-copied entry of the old copy reaches
 * the new copy only through the merge's re-check.
 * @fn:   the hook; NULL removes it
 * @priv: its argument
 *
 * @fn runs with the batch's table locks held (as ptr_reloc_set_test_hook()'s).
 * Return: nothing.
 * Locking: takes reloc_mutex, so the hook never changes under a running relocation.
 */
void ptr_reloc_set_copy_hook(ptr_reloc_copy_hook_fn fn, void *priv)
{
	pthread_mutex_lock(&reloc_mutex);
	copy_hook = fn;
	copy_hook_priv = priv;
	pthread_mutex_unlock(&reloc_mutex);
}

/*
 * The digest views every table as 64-bit words (4-byte entries two to a word): a change sets
 * bits of a word's d() just the same, and both sides of the compare use the same view, so the
 * byte order does not matter.  d(w) = w ^ flip, flip = e_rdonly in every entry of the word.
 */
static inline uint64_t digest_flip(const struct ptr_geometry *g, int level)
{
	if (g->level[level].entry_size == 8)
		return g->e_rdonly;
	return (uint64_t)(uint32_t)g->e_rdonly * 0x100000001ULL;
}

/*
 * Copy the level-@level table @from into @to.  Return: the digest of the new copy; *@leaves:
 * whether the table may hold a leaf.  When it holds none, nothing can change in the old copy
 * (CPUs write leaves only, and no leaf can appear under our locks: a leaf at level >= 2 needs
 * page_table_lock, at level 1 the table's own split lock), so the merge skips it.  x86 tells
 * by the OR of every word (a leaf above level 0 has PS set; PS is no A/D bit, so the racing
 * loads read it exactly); arm64 (leaf = table bit clear) is always re-checked.
 */
static uint64_t copy_table(struct reloc_ctx *c, int level, uint32_t from, uint32_t to,
			   bool *leaves)
{
	const struct ptr_geometry *g = c->g;
	uint32_t nw = ptr_table_bytes(g, level) / 8; /* >= 4: the smallest table is PAE's 32 bytes */
	uint64_t flip = digest_flip(g, level), any = 0, sum;
	const void *s = fdata(c, from);
	void *d = fdata(c, to);
	if (likely(!copy_hook)) {
		sum = copy_words(s, d, 0, nw, flip, &any);
	} else {
		uint32_t half = nw / 2 & ~15u; /* a whole number of 128-byte steps before the hook */
		sum = copy_words(s, d, 0, half, flip, &any);
		copy_hook(copy_hook_priv, level, half * 8 / g->level[level].entry_size);
		sum += copy_words(s, d, half, nw, flip, &any);
	}
	uint64_t huge = g->level[level].entry_size == 8 ? g->e_huge
						     : (uint64_t)(uint32_t)g->e_huge * 0x100000001ULL;
	if (level == 0)
		*leaves = true;
	else if (!g->level[level].leaf_ok)
		*leaves = false;
	else
		*leaves = g->arch != PTR_ARCH_X86 || (any & huge);
	return sum;
}

/* Point mms[mi]'s link to @r's table at r->fresh.  Return: true when CPUs need a root reload. */
static bool repoint_link(struct reloc_ctx *c, int mi, struct reloc_rec *r, uint32_t parent)
{
	const struct ptr_geometry *g = c->g;
	struct ptr_mm *mm = c->mms[mi];
	if (parent == PTR_NO_FRAME) {
		/* the root: CPUs cache it (CR3), so only a reload makes them see the new one */
		atomic_store(&mm->root, r->fresh);
		return true;
	}
	int pl = r->level + 1;
	void *pt = fdata(c, parent);
	uint32_t idx = ptr_index(g, pl, r->base_va);
	uint64_t e = ptr_entry_load(g, pl, pt, idx), neu;
	do /* CAS: keep whatever else is in the entry (rule 4) */
		neu = (e & ~g->e_addr) | ptr_frame_phys(c->a, r->fresh);
	while (!ptr_entry_cas(g, pl, pt, idx, &e, neu));
	/* PAE: PDPTEs are latched at CR3 load, a changed one needs the reload as well */
	return g->top_preloaded && pl == TOP(g);
}

/* ---- 4. merge ------------------------------------------------------------------------------ */

/*
 * merge_entry() - the slow path of merge_table() for entry @i, whose old copy @oe differs from
 * its new copy: decode, and OR the old A/D state into the new leaf.  Return: 1 when the new
 * entry gained (or, @apply false, would have gained) A/D state, else 0.
 */
static __attribute__((noinline)) uint64_t merge_entry(struct reloc_ctx *c, int level, void *n,
						      uint32_t i, uint64_t oe, bool apply)
{
	const struct ptr_geometry *g = c->g;
	if (!ptr_entry_is_leaf(g, level, oe))
		return 0;
	uint64_t ne = ptr_entry_load(g, level, n, i);
	for (;;) {
		/* under our locks nobody can have replaced the leaf; be defensive anyway */
		if (!ptr_entry_is_leaf(g, level, ne) ||
		    ptr_entry_phys(g, level, ne) != ptr_entry_phys(g, level, oe))
			return 0;
		uint64_t want = ptr_entry_merge_ad(g, ne, oe);
		if (want == ne)
			return 0;
		if (!apply)
			return 1;
		if (ptr_entry_cas(g, level, n, i, &ne, want))
			return 1;
	}
}

/*
 * merge_table() - OR the A/D state the stale CPUs left in the old copy into the new one.
 * @apply false (naive): only count the entries whose A/D state would be lost.
 * Locking: the caller holds the new table's lock (rule 1/2), so no software consumer of A/D can
 * run on it; CPUs may set A/D concurrently, hence the CAS.
 *
 * Fastest path: the old copy's digest is what the copy computed - no entry changed (THE COPY
 * AND ITS DIGEST).  Otherwise the entry-by-entry compare:
 * the new copy was copied from the old one, and since then the old copy changed
 * only by stale CPUs' A/D writes and the new one only by current CPUs' A/D writes (under our
 * locks nothing else writes either).  An entry whose two copies are still bit-for-bit equal
 * therefore has nothing to merge (merging an entry's A/D state into itself changes nothing),
 * so one raw compare per entry - relaxed loads, plain moves, the entry size hoisted out of the
 * loop - skips almost every entry, and only the few that differ are decoded.  Relaxed loads
 * of the old copy see every stale write: ptr_shootdown() returned after each CPU acknowledged,
 * and a CPU's A/D writes precede its acknowledgement (its seq_cst store of seen_gen, which the
 * shooter loads, or the release of its busy lock, which a shooter servicing it acquires).
 */
static uint64_t merge_table(struct reloc_ctx *c, const struct reloc_rec *r, bool apply)
{
	const struct ptr_geometry *g = c->g;
	int level = r->level;
	if (!r->leaves)
		return 0; /* no leaves in this table, no A/D to carry (copy_table()) */
	void *o = fdata(c, r->old), *n = fdata(c, r->fresh);
	/* re-check: the old copy unchanged since the copy, nothing to merge (THE COPY AND ITS
	 * DIGEST, above) - one vectorised read of the old copy, the new one not read at all */
	if (likely(table_digest(o, ptr_table_bytes(g, level) / 8, digest_flip(g, level)) ==
		   r->digest))
		return 0;
	uint32_t cnt = 1u << g->level[level].bits;
	uint64_t changed = 0;
	if (g->level[level].entry_size == 8) {
		const _Atomic uint64_t *ow = o, *nw = n;
		for (uint32_t i = 0; i < cnt; i++) {
			uint64_t oe = atomic_load_explicit(&ow[i], memory_order_relaxed);
			if (likely(oe == atomic_load_explicit(&nw[i], memory_order_relaxed)))
				continue;
			changed += merge_entry(c, level, n, i, oe, apply);
		}
	} else {
		const _Atomic uint32_t *ow = o, *nw = n;
		for (uint32_t i = 0; i < cnt; i++) {
			uint32_t oe = atomic_load_explicit(&ow[i], memory_order_relaxed);
			if (likely(oe == atomic_load_explicit(&nw[i], memory_order_relaxed)))
				continue;
			changed += merge_entry(c, level, n, i, oe, apply);
		}
	}
	return changed;
}

/* ---- stop strategy: park every CPU ------------------------------------------------------------ */

static void stop_cpus(struct ptr_arena *a)
{
	/* cpus_lock keeps the CPU set fixed; a busy lock is held by its CPU only inside an access,
	 * and a CPU never waits for another CPU inside one, so this terminates. */
	ptr_lock(&a->cpus_lock, NULL);
	int i;
	ptr_for_each_cpu(a, i)
		ptr_lock(&a->cpus[i]->busy, NULL);
}

static void resume_cpus(struct reloc_ctx *c, uint32_t moved_any)
{
	struct ptr_arena *a = c->a;
	for (int mi = 0; mi < c->nmms; mi++) {
		if (!(moved_any & (1u << mi)))
			continue;
		atomic_fetch_add(&c->mms[mi]->reload_gen, 1); /* before tlb_gen, as ptr_shootdown */
		atomic_fetch_add(&c->mms[mi]->tlb_gen, 1);
	}
	int i;
	ptr_for_each_cpu(a, i) {
		struct ptr_cpu *cpu = a->cpus[i];
		ptr_cpu_service(cpu); /* we hold its busy lock: flush, reload, ack on its behalf */
		ptr_unlock(&cpu->busy);
	}
	ptr_unlock(&a->cpus_lock);
}

/* ---- the batch ----------------------------------------------------------------------------- */

/*
 * NO CPU, NO MERGE.  Only a CPU's hardware walk writes A/D bits without the table's lock, so
 * only a CPU can have written a batch's old copies after they were copied - the software paths
 * (faults, test_and_clear_*, unmap) take the lock the batch holds from before its copy to after
 * its merge.  A batch during which no CPU of the arena existed has nothing to merge, and skips
 * the re-read of its old copies (at 1 MiB mapped 6 % of a relocation, at 64 GiB 8 %): the
 * kernel's analogue is a flush that skips an mm whose cpumask is empty.
 * cpus_snapshot() is taken before the batch's first lock, no_cpu_since() after its shootdowns:
 * - a CPU that existed at the snapshot is in the mask it read (the creator sets its bit, then
 *   bumps cpus_gen with a release RMW; our acquire load of the gen orders the mask load);
 * - a CPU created or destroyed between the two changes cpus_gen: if its cpus_lock section came
 *   before a shootdown's (each takes cpus_lock after the batch's repoints), our later load sees
 *   the bump; if after, it was created after every repoint - its walks start from the new
 *   tables and never reach an old copy.
 * With a test hook installed (a test playing the stale CPU by hand) the merge always runs.
 */
struct cpus_snap {
	uint64_t gen;
	bool any;
};

static inline struct cpus_snap cpus_snapshot(const struct ptr_arena *a)
{
	struct cpus_snap s;
	s.gen = atomic_load_explicit(&a->cpus_gen, memory_order_acquire);
	s.any = atomic_load_explicit(&a->cpus_mask, memory_order_relaxed) != 0;
	return s;
}

static inline bool no_cpu_since(const struct ptr_arena *a, struct cpus_snap s)
{
	return !s.any && !test_hook && !copy_hook &&
	       atomic_load_explicit(&a->cpus_gen, memory_order_acquire) == s.gen;
}

static void skip(struct reloc_rec *r, int reason)
{
	r->state = REC_SKIPPED;
	r->reason = (uint8_t)reason;
}

/*
 * run_batch() - steps 2b..5 for the @n records @recs: every one PENDING with its fresh frame
 * allocated, n <= the batch size @ls was sized for.  The caller gathers them; skipped records
 * never enter a batch (they would be rewalked and push locks the lock set has no room for).
 * Return: 0 (records end MOVED, or SKIPPED "vanished"); -EOVERFLOW when the lock set is too
 * small (a bug; nothing was copied or repointed, the batch's fresh frames are freed and its
 * records left PENDING, so the caller aborts them).
 * Locking: takes and releases everything itself (page_table_locks, split locks; no read side).
 */
static int run_batch(struct reloc_ctx *c, struct reloc_rec *const *recs, size_t n, int strategy,
		     struct lockset *ls, struct ptr_reloc_report *out, uint32_t *moved_any)
{
	const struct ptr_geometry *g = c->g;
	struct ptr_arena *a = c->a;
	uint32_t reload = 0, touched = 0; /* bit mi: mms[mi] (nmms <= 32) */
	struct cpus_snap cpus = cpus_snapshot(a); /* NO CPU, NO MERGE (above) */

	/*
	 * No read-side section around the batch's lockless reads (rewalks, copies, re-checks):
	 * a section keeps a table from being freed under its reader, and the only code that
	 * frees a linked table is a relocation's free_old_copies() - relocations serialize on
	 * reloc_mutex, and this is the one running (unmap never frees a table, LOCKING RULE 7).
	 * It cost three locked RMWs a batch.
	 */
	struct ptr_mm *sorted[32];
	memcpy(sorted, c->mms, sizeof(*sorted) * (size_t)c->nmms);
	if (c->nmms > 1)
		qsort(sorted, (size_t)c->nmms, sizeof(*sorted), mm_order);
	for (int i = 0; i < c->nmms; i++)
		ptr_lock(&sorted[i]->page_table_lock, NULL);

	/* With every page_table_lock held, no upper-level table can move or appear, so the split
	 * locks we need are known now: each record's own (level <= 1) and its parents' (level 1). */
	ls->n1 = ls->n0 = ls->nfresh = ls->nlimbo = 0;
	ls->overflow = false;
	for (size_t k = 0; k < n; k++) {
		struct reloc_rec *r = recs[k];
		if (r->state != REC_PENDING)
			continue; /* cannot happen (see above); never rewalk or free for one */
		for (int mi = 0; mi < c->nmms; mi++) {
			if (!(r->mm_mask & (1u << mi)))
				continue;
			uint32_t self, parent;
			if (rewalk(c, mi, r, &self, &parent) || self != r->old) {
				ptr_frame_free(a, r->fresh);
				r->fresh = PTR_NO_FRAME;
				skip(r, PTR_RELOC_R_VANISHED);
				break;
			}
			r->parent = parent;
			if (r->level == 0 && parent != PTR_NO_FRAME)
				push(ls->l1, &ls->n1, ls->cap1, &ls->overflow, parent);
		}
		if (r->state == REC_SKIPPED)
			continue;
		if (r->level == 1)
			push(ls->l1, &ls->n1, ls->cap1, &ls->overflow, r->old);
		else if (r->level == 0)
			push(ls->l0, &ls->n0, ls->cap0, &ls->overflow, r->old);
		if (r->level <= 1)
			push(ls->fresh, &ls->nfresh, ls->capfresh, &ls->overflow, r->fresh);
	}
	if (unlikely(ls->overflow)) {
		for (size_t k = 0; k < n; k++) {
			if (recs[k]->state == REC_PENDING) {
				ptr_frame_free(a, recs[k]->fresh);
				recs[k]->fresh = PTR_NO_FRAME;
			}
		}
		for (int i = c->nmms; i-- > 0;)
			ptr_unlock(&sorted[i]->page_table_lock);
		return -EOVERFLOW;
	}
	ls->n1 = sort_unique(ls->l1, ls->n1);
	ls->n0 = sort_unique(ls->l0, ls->n0);
	for (size_t i = 0; i < ls->n1; i++)
		ptr_lock(&a->frames[ls->l1[i]].ptl, NULL);
	for (size_t i = 0; i < ls->n0; i++)
		ptr_lock(&a->frames[ls->l0[i]].ptl, NULL);
	/*
	 * The sharer check again, now under each table's own lock: the one before the batch ran
	 * unlocked, and ptr_share_table() may have linked the table into an mm outside the set
	 * since.  It links under this same lock after checking that @src's path still leads to
	 * the table, so from here to the repoint no new sharer can appear.  A record skipped here
	 * gives back its fresh frame (not yet locked, so not in the lock set's fresh list).
	 */
	size_t nfresh = 0;
	for (size_t k = 0; k < n; k++) {
		struct reloc_rec *r = recs[k];
		if (r->state != REC_PENDING || r->level > 1)
			continue;
		bool shared = atomic_load(&a->frames[r->old].sharers) > r->nlinks;
		r->shoot_mask = 0;
		if (!shared && r->level == 0 && r->parent != PTR_NO_FRAME &&
		    atomic_load(&a->frames[r->parent].sharers) > 1) {
			/*
			 * Under a shared table (its level-1 lock is ours: no new sharer): every mm
			 * that links the parent reaches this table through it, its CPUs may cache
			 * the path - it moves only if all of them are in the set, and each is
			 * shot down (the repoint is one entry, the parent's, whoever links it).
			 */
			int reach = 0;
			for (int mi = 0; mi < c->nmms; mi++) {
				uint32_t self, parent;
				if (!rewalk(c, mi, r, &self, &parent) && self == r->old &&
				    parent == r->parent) {
					reach++;
					r->shoot_mask |= 1u << mi;
				}
			}
			shared = reach < atomic_load(&a->frames[r->parent].sharers);
		}
		if (shared) {
			ptr_frame_free(a, r->fresh);
			r->fresh = PTR_NO_FRAME;
			skip(r, PTR_RELOC_R_SHARED);
			continue;
		}
		ls->fresh[nfresh++] = r->fresh;
	}
	ls->nfresh = nfresh;
	for (size_t i = 0; i < ls->nfresh; i++)
		ptr_lock(&a->frames[ls->fresh[i]].ptl, NULL); /* unlinked: any order is fine */

	/*
	 * 2c: copy every table of the batch, then repoint them, parents first (recs are sorted
	 * top level first).  Two passes, not copy-and-repoint per table: the repoint is a locked
	 * CAS, which waits for every store before it to complete - right after a copy, for the
	 * table's 4 KiB of stores to cold memory (at 64 GiB mapped the CAS was 64 % of the batch
	 * code's own time).  After a pass of copies the stores have drained meanwhile, as they do
	 * for memcpy.  Correctness does not depend on the interleaving: a child's repoint goes to
	 * its parent's current copy (the rewalk), which after the parent's repoint is the new one,
	 * and a longer copy-to-repoint window only means more stale A/D bits for the merge.
	 */
	for (size_t k = 0; k < n; k++) {
		struct reloc_rec *r = recs[k];
		if (r->state != REC_PENDING)
			continue;
		bool leaves;
		r->digest = copy_table(c, r->level, r->old, r->fresh, &leaves);
		r->leaves = leaves;
		struct ptr_frame *nf = &a->frames[r->fresh];
		/* relaxed: the frame is unlinked, repoint_link()'s seq_cst CAS publishes these with
		 * its contents (struct ptr_frame: read after an acquire load of the entry) */
		atomic_store_explicit(&nf->base_va, r->base_va, memory_order_relaxed);
		atomic_store_explicit(&nf->sharers, atomic_load(&a->frames[r->old].sharers),
				      memory_order_relaxed);
	}
	/*
	 * The repoint's parent.  REWALK: the parent may itself have moved earlier in this batch.
	 * Under our locks the path cannot vanish (checked above), so the rewalk cannot fail; and
	 * it cannot change either except by this batch's own repoints: a linked table's parent
	 * entry changes only when a relocation moves the table (populate fills empty entries
	 * only, a leaf is never installed over a table, unmap never unlinks one: LOCKING RULE 7),
	 * and relocations serialize.  So with one mm the rewalk's answer is known without walking:
	 * the parent the first rewalk found (r->parent), or - if that parent moved earlier in
	 * this batch - its new copy, which the records before this one say (the batch is in
	 * rec_order(): the parent's record, one level up, comes before its children's).  Several
	 * mms, or a batch not in that order, take the rewalk.
	 */
	bool known_parents = c->nmms == 1;
	for (size_t k = 1; k < n && known_parents; k++)
		known_parents = recs[k - 1]->level >= recs[k]->level;
	/* each level's records in the batch: [lvl_lo[l], lvl_hi[l]) (only a parent's level is
	 * searched - a batch of 64 PTE tables searches nothing) */
	size_t lvl_lo[PTR_MAX_LEVELS + 1] = { 0 }, lvl_hi[PTR_MAX_LEVELS + 1] = { 0 };
	for (size_t k = n; known_parents && k-- > 0;) {
		lvl_lo[recs[k]->level] = k;
		if (!lvl_hi[recs[k]->level])
			lvl_hi[recs[k]->level] = k + 1;
	}
	for (size_t k = 0; k < n; k++) {
		struct reloc_rec *r = recs[k];
		if (r->state != REC_PENDING)
			continue;
		for (int mi = 0; mi < c->nmms; mi++) {
			if (!(r->mm_mask & (1u << mi)))
				continue;
			uint32_t self = PTR_NO_FRAME, parent = PTR_NO_FRAME;
			if (known_parents) {
				parent = r->parent;
				for (size_t j = lvl_lo[r->level + 1]; j < lvl_hi[r->level + 1]; j++) {
					if (recs[j]->old == parent && recs[j]->state == REC_MOVED) {
						parent = recs[j]->fresh;
						break;
					}
				}
			} else if (rewalk(c, mi, r, &self, &parent) || self != r->old) {
				continue;
			}
			if (repoint_link(c, mi, r, parent))
				reload |= 1u << mi;
			touched |= 1u << mi;
		}
		for (int mi = 0; mi < c->nmms; mi++)
			if (r->shoot_mask & (1u << mi))
				/* reached through the shared parent: shot down (stop: flushed) */
				touched |= 1u << mi;
		ls->limbo[ls->nlimbo++] = r->old;
		r->state = REC_MOVED;
		uint32_t bytes = ptr_table_bytes(g, r->level);
		out->level[r->level].relocated++;
		out->level[r->level].bytes_copied += bytes;
		out->bytes_copied += bytes;
		if (r->level == TOP(g))
			out->root_switches++;
	}
	*moved_any |= touched;
	ptr_frame_limbo_batch(a, ls->limbo, (uint32_t)ls->nlimbo);
	/* the copies take the old frames' places in the table lists (collect_list()): an mm
	 * that never shared a table links each of its tables alone, so a record linked by one
	 * such mm is on that mm's list (a shared_ever mm's list is never read again) */
	for (int mi = 0; mi < c->nmms; mi++) {
		struct ptr_mm *mm = c->mms[mi];
		if (!(touched & (1u << mi)) || !list_usable(c, mi))
			continue;
		ptr_lock(&mm->tables_lock, NULL);
		for (size_t k = 0; k < n; k++)
			if (recs[k]->state == REC_MOVED && recs[k]->mm_mask == 1u << mi)
				ptr_mm_tables_replace_locked(mm, recs[k]->old, recs[k]->fresh);
		ptr_unlock(&mm->tables_lock);
	}
	lap(c, &out->ns_copy);

	/* 3: one shootdown per mm per batch (stop: the CPUs are parked, flushed at resume) */
	if (strategy != PTR_RELOC_STOP) {
		if (test_hook)
			test_hook(test_hook_priv, out->batches);
		for (int mi = 0; mi < c->nmms; mi++) {
			if (!(touched & (1u << mi)))
				continue;
			ptr_shootdown(c->mms[mi], reload & (1u << mi));
			out->shootdowns++;
			if (reload & (1u << mi))
				out->root_reloads++;
		}
	}
	lap(c, &out->ns_shootdown);

	/* 4: merge, still under every lock (naive: only count what is lost) - unless no CPU
	 * existed during the batch: then nobody wrote the old copies (NO CPU, NO MERGE) */
	if (strategy != PTR_RELOC_STOP && touched && no_cpu_since(a, cpus)) {
		out->merges_skipped++;
	} else if (strategy != PTR_RELOC_STOP) {
		for (size_t k = 0; k < n; k++) {
			if (recs[k]->state != REC_MOVED)
				continue;
			uint64_t m = merge_table(c, recs[k], strategy == PTR_RELOC_REWALK);
			if (strategy == PTR_RELOC_REWALK)
				out->ad_merged += m;
			else
				out->ad_lost += m;
		}
	}
	lap(c, &out->ns_merge);

	/* 5: unlock (reverse order) */
	for (size_t i = ls->nfresh; i-- > 0;)
		ptr_unlock(&a->frames[ls->fresh[i]].ptl);
	for (size_t i = ls->n0; i-- > 0;)
		ptr_unlock(&a->frames[ls->l0[i]].ptl);
	for (size_t i = ls->n1; i-- > 0;)
		ptr_unlock(&a->frames[ls->l1[i]].ptl);
	for (int i = c->nmms; i-- > 0;)
		ptr_unlock(&sorted[i]->page_table_lock);
	out->batches++;
	return 0;
}

/*
 * Free the old copy of every moved record (after the grace period), a pool lock per run.  In
 * chunks from the last record back, so that the pool's free list ends up in record order and
 * the next relocation back takes its targets ascending again (collect_list()'s order).
 */
static void free_old_copies(struct reloc_ctx *c)
{
	uint32_t buf[256];
	const uint32_t cap = sizeof(buf) / sizeof(buf[0]);
	uint32_t pos = cap;
	for (size_t i = c->nrecs; i-- > 0;) {
		if (c->recs[i].state != REC_MOVED)
			continue;
		buf[--pos] = c->recs[i].old;
		if (pos == 0) {
			ptr_frame_free_batch(c->a, buf, cap);
			pos = cap;
		}
	}
	ptr_frame_free_batch(c->a, buf + pos, cap - pos);
}

/*
 * zero_report() - memset(out, 0, sizeof(*out)) with vector stores: GCC inlines the memset of
 * this fixed-size struct as `rep stos`, whose start-up cost made it 6 % of a 1 MiB relocation
 * (perf, in this VM).  The empty asm keeps GCC's loop-idiom pass from turning the loop back
 * into that memset (it did: 3 % of the engine's own samples, 2026-12-03).
 */
static void zero_report(struct ptr_reloc_report *out)
{
	typedef uint64_t v2u64 __attribute__((vector_size(16), may_alias, aligned(8)));
	v2u64 *w = (v2u64 *)(void *)out;
	size_t i = 0;
	for (; i < sizeof(*out) / sizeof(*w); i++) {
		w[i] = (v2u64){ 0, 0 };
		__asm__ volatile("" : : "r"(w + i));
	}
	memset((char *)out + i * sizeof(*w), 0, sizeof(*out) % sizeof(*w));
}

/*
 * set_mode() - relocation mode in or out (step 1 and the end of step 5), under each mm's
 * page_table_lock.  A plain load and store, not a locked add: set_mode() is the only writer of
 * mm->relocating and relocations serialize on reloc_mutex; the fault path's acquire load after
 * taking a table lock is ordered by that lock, as before.
 */
static void set_mode(struct reloc_ctx *c, int delta)
{
	for (int mi = 0; mi < c->nmms; mi++) {
		struct ptr_mm *mm = c->mms[mi];
		ptr_lock(&mm->page_table_lock, NULL);
		atomic_store_explicit(&mm->relocating,
				      atomic_load_explicit(&mm->relocating, memory_order_relaxed) +
					      delta,
				      memory_order_release);
		ptr_unlock(&mm->page_table_lock);
	}
}

/**
 * ptr_relocate_mms() - move every table frame of the @nmms address spaces @mms (one arena) that
 * sits on a node in @from_mask to @to_node, or to where @choose says.
 * @mms:       up to 32 address spaces of one arena, each once
 * @nmms:      how many
 * @from_mask: bit n = node n is a source
 * @to_node:   the target node (when @choose is NULL; frames already there are not candidates)
 * @choose:    NULL, or asked once per candidate frame where it goes (ptr_reloc_choose_fn)
 * @priv:      @choose's argument
 * @strategy:  PTR_RELOC_REWALK, PTR_RELOC_STOP or PTR_RELOC_NAIVE (the protocol comment above)
 * @batch:     frames per lock/shootdown batch (>= 1)
 * @out:       the report
 *
 * A table shared between the mms moves once with every sharer's parent entry repointed; one
 * shared with an mm outside the set is skipped (PTR_RELOC_R_SHARED).  Every level moves, the
 * root with a root reload.
 * Return: 0; -EINVAL (bad arguments), -ENODEV (no such target node), -ECANCELED (the chooser
 * cancelled: nothing moved), -ENOMEM (the collection), -ENOSPC/-ENOMEM/-ENODEV when an
 * allocation on the target failed: the relocation stopped there, every translation is
 * unchanged, frames of completed batches stay moved, the rest are reported not relocated.
 * *@out is filled in every case but -EINVAL/-ENODEV.
 * Locking: takes everything itself - reloc_mutex for the whole call (relocations serialize;
 * @choose runs under it, with no table lock held, and must not relocate), then per lock.h's
 * LOCK ORDER; call with no lock held and outside a read-side section (it waits for a grace
 * period).
 */
int ptr_relocate_mms(struct ptr_mm *const *mms, int nmms, uint32_t from_mask, int to_node,
		     ptr_reloc_choose_fn choose, void *priv, int strategy, int batch,
		     struct ptr_reloc_report *out)
{
	return ptr_relocate_mms_flags(mms, nmms, from_mask, to_node, choose, priv, strategy, batch,
				      0, out);
}

/**
 * ptr_relocate_mms_flags() - ptr_relocate_mms() with PTR_RELOC_F_* @flags: the one engine
 * under relocation, evacuation and compaction (evacuate.c).
 * @mms:       as ptr_relocate_mms()
 * @nmms:      as ptr_relocate_mms()
 * @from_mask: as ptr_relocate_mms()
 * @to_node:   as ptr_relocate_mms()
 * @choose:    as ptr_relocate_mms(); required with PTR_RELOC_F_SAME_NODE
 * @priv:      @choose's argument
 * @strategy:  as ptr_relocate_mms()
 * @batch:     as ptr_relocate_mms()
 * @flags:     PTR_RELOC_F_SAME_NODE: a target equal to the frame's own node is a move within
 *             the pool (compaction), not "kept"; PTR_RELOC_F_LOWER: every new frame is the
 *             target pool's lowest free slot (PTR_ALLOC_LOWEST), and a frame whose new slot
 *             would not be lower than its old one is given back and the frame kept ("kept");
 *             PTR_RELOC_F_UNTIMED: no phase clocks - every ns_* of @out stays 0 (the bench's
 *             headline rounds, timed from outside)
 * @out:       the report
 *
 * Return: as ptr_relocate_mms(); -EINVAL also for unknown @flags or F_SAME_NODE without
 * @choose.
 * Locking: as ptr_relocate_mms().
 */
int ptr_relocate_mms_flags(struct ptr_mm *const *mms, int nmms, uint32_t from_mask, int to_node,
			   ptr_reloc_choose_fn choose, void *priv, int strategy, int batch,
			   unsigned int flags, struct ptr_reloc_report *out)
{
	if ((flags & ~(PTR_RELOC_F_SAME_NODE | PTR_RELOC_F_LOWER | PTR_RELOC_F_UNTIMED)) ||
	    ((flags & PTR_RELOC_F_SAME_NODE) && !choose))
		return -EINVAL;
	if (!mms || nmms < 1 || nmms > 32 || !out || batch < 1 ||
	    strategy < PTR_RELOC_REWALK || strategy > PTR_RELOC_NAIVE)
		return -EINVAL;
	struct ptr_arena *a = mms[0]->arena;
	for (int i = 0; i < nmms; i++) {
		if (!mms[i] || mms[i]->arena != a)
			return -EINVAL;
		for (int j = 0; j < i; j++)
			if (mms[j] == mms[i])
				return -EINVAL;
	}
	if (!choose && (to_node < 0 || to_node >= a->nnodes))
		return -ENODEV;
	from_mask &= (a->nnodes >= 32) ? UINT32_MAX : ((1u << a->nnodes) - 1);
	if (!choose)
		from_mask &= ~(1u << to_node); /* frames already on the target are not candidates */
	zero_report(out);
	out->strategy = strategy;
	out->batch = batch;

	struct reloc_ctx c = { .mms = mms, .nmms = nmms, .a = a, .g = a->geo,
			       .from_mask = from_mask };
	struct reloc_rec inline_recs[16];
	c.recs = c.inline_recs = inline_recs;
	c.cap = sizeof(inline_recs) / sizeof(inline_recs[0]);
	c.timed = !(flags & PTR_RELOC_F_UNTIMED);
	uint64_t t_start = c.timed ? now_ns() : 0;
	c.t_lap = t_start;
	pthread_mutex_lock(&reloc_mutex);

	/* 1: relocation mode (before the first repoint; tables populated after the collection are
	 * simply not moved - they are created on mm->node) */
	set_mode(&c, +1);

	/* 0: collect */
	int rc = 0;
	bool lists = true; /* every mm's table list stands for its tree: no scan */
	for (int mi = 0; mi < nmms; mi++)
		lists = lists && list_usable(&c, mi);
	for (int mi = 0; mi < nmms && !rc; mi++)
		rc = lists ? collect_list(&c, mi) : collect_mm(&c, mi);
	if (!rc && c.nrecs)
		sort_records(&c);

	/* targets (the chooser runs with no lock held and no read-side section) */
	for (size_t i = 0; i < c.nrecs && !rc; i++) {
		struct reloc_rec *r = &c.recs[i];
		int cur = a->frames[r->old].node;
		int t = choose ? choose(priv, r->level, r->old, r->base_va, cur) : to_node;
		out->level[r->level].found++;
		out->frames_found++;
		if (t < -1) {
			rc = -ECANCELED; /* the chooser gave up: nothing has moved yet */
			break;
		}
		if (t < 0 || (t == cur && !(flags & PTR_RELOC_F_SAME_NODE)))
			skip(r, PTR_RELOC_R_KEPT);
		else if (t >= a->nnodes)
			skip(r, PTR_RELOC_R_BAD_TARGET);
		else if (atomic_load(&a->frames[r->old].sharers) > r->nlinks)
			skip(r, PTR_RELOC_R_SHARED); /* a sharer outside this set would keep the old */
		else
			r->target = (int16_t)t;
	}
	lap(&c, &out->ns_collect);

	/* a batch is up to @batch PENDING records, gathered from the (sorted) record list: the
	 * records the chooser kept may lie between them in any number */
	struct lockset ls = { 0 };
	struct work w = { 0 };
	uint64_t stack_work[512]; /* 4 KiB: batch 64 of one mm needs 2.1 */
	size_t maxb = (size_t)batch < c.nrecs ? (size_t)batch : c.nrecs;
	if (!rc && maxb)
		rc = work_init(&w, &ls, maxb, nmms, stack_work, sizeof(stack_work));
	struct reloc_rec **pick = w.pick;
	uint8_t *alevels = w.alevels;
	uint32_t *aframes = w.aframes;
	uint32_t moved_any = 0; /* bit mi: something of mms[mi] moved (resume_cpus()) */
	bool stopped = false;
	uint64_t t_stop = 0, untimed = 0;
	if (!rc && strategy == PTR_RELOC_STOP && c.nrecs) {
		stop_cpus(a);
		stopped = true;
		t_stop = lap(&c, &untimed); /* parking the CPUs: in ns_stopped only, as before */
	}

	/* 2..4 per batch */
	size_t k = 0;
	while (!rc && k < c.nrecs) {
		/* the next batch: up to @batch pending records */
		size_t cnt = 0;
		for (; k < c.nrecs && cnt < maxb; k++)
			if (c.recs[k].state == REC_PENDING)
				pick[cnt++] = &c.recs[k];
		if (!cnt)
			break;
		/* 2a: allocate outside any table lock, one pool-lock hold per run of records with
		 * the same target (ptr_frame_alloc_batch(): as many single allocations in a row,
		 * fault injection and capacity included) */
		for (size_t i = 0; i < cnt && !rc;) {
			size_t j = i;
			for (; j < cnt && pick[j]->target == pick[i]->target; j++)
				alevels[j - i] = pick[j]->level;
			/* no zeroing: copy_table() overwrites every byte of the table before the
			 * repoint publishes it, and an aborted frame goes back unpublished */
			unsigned int af = PTR_ALLOC_NOZERO;
			if (flags & PTR_RELOC_F_LOWER)
				af |= PTR_ALLOC_LOWEST;
			uint32_t got = 0;
			int arc = ptr_frame_alloc_batch(a, pick[i]->target, alevels, (uint32_t)(j - i),
							af, aframes, &got);
			for (uint32_t x = 0; x < got; x++)
				pick[i + x]->fresh = aframes[x];
			if (arc) {
				struct reloc_rec *r = pick[i + got];
				for (size_t x = 0; x < i + got; x++) {
					ptr_frame_free(a, pick[x]->fresh);
					pick[x]->fresh = PTR_NO_FRAME;
				}
				r->fresh = PTR_NO_FRAME;
				skip(r, arc == -ENOSPC ? PTR_RELOC_R_TARGET_FULL
					: arc == -ENODEV ? PTR_RELOC_R_BAD_TARGET
							 : PTR_RELOC_R_ALLOC_FAILED);
				rc = arc;
			}
			i = j;
		}
		lap(&c, &out->ns_alloc);
		if (rc)
			break;
		if (flags & PTR_RELOC_F_LOWER) {
			/* compaction: a move that does not go lower gains nothing - give the slot
			 * back (never linked: no grace period needed) and keep the frame */
			size_t kept = 0;
			for (size_t i = 0; i < cnt; i++) {
				struct reloc_rec *r = pick[i];
				if (a->frames[r->fresh].node == a->frames[r->old].node &&
				    r->fresh > r->old) {
					ptr_frame_free(a, r->fresh);
					r->fresh = PTR_NO_FRAME;
					skip(r, PTR_RELOC_R_KEPT);
					continue;
				}
				pick[kept++] = r;
			}
			cnt = kept;
			if (!cnt)
				continue;
		}
		rc = run_batch(&c, pick, cnt, strategy, &ls, out, &moved_any);
	}
	for (size_t i = 0; i < c.nrecs; i++)
		if (c.recs[i].state == REC_PENDING)
			skip(&c.recs[i], PTR_RELOC_R_ABORTED); /* after an allocation failure */

	if (stopped) {
		lap(&c, &untimed); /* the abort loop after the last batch */
		resume_cpus(&c, moved_any);
		out->shootdowns++; /* the one flush + reload at resume */
		out->root_reloads++;
		out->ns_stopped = lap(&c, &out->ns_shootdown) - t_stop;
	}

	/* 5: grace period, then free the old copies; then leave relocation mode */
	ptr_synchronize(a);
	lap(&c, &out->ns_grace);
	free_old_copies(&c);
	set_mode(&c, -1);
	pthread_mutex_unlock(&reloc_mutex);
	/* free: the frees and leaving the mode */
	out->ns_total = c.timed ? lap(&c, &out->ns_free) - t_start : 0;

	for (size_t i = 0; i < c.nrecs; i++) {
		struct reloc_rec *r = &c.recs[i];
		if (r->state == REC_MOVED) {
			out->relocated++;
			continue;
		}
		out->not_relocated++;
		out->level[r->level].not_relocated++;
		out->level[r->level].reason[r->reason]++;
		out->reason[r->reason]++;
	}
	out->error = rc;
	free(w.heap);
	if (c.recs != c.inline_recs)
		free(c.recs);
	return rc;
}

#endif /* PTR_RELOCATION */

/**
 * ptr_relocate() - ptr_relocate_mms() for one address space.
 * @mm:        the address space
 * @from_mask: bit n = node n is a source
 * @to_node:   the target node (when @choose is NULL)
 * @choose:    NULL, or where each frame goes
 * @priv:      @choose's argument
 * @strategy:  PTR_RELOC_*
 * @batch:     frames per batch
 * @out:       the report
 *
 * Return: as ptr_relocate_mms() (-EOPNOTSUPP in the norelo build).
 * Locking: as ptr_relocate_mms().
 */
int ptr_relocate(struct ptr_mm *mm, uint32_t from_mask, int to_node, ptr_reloc_choose_fn choose,
		 void *priv, int strategy, int batch, struct ptr_reloc_report *out)
{
	return ptr_relocate_mms(&mm, 1, from_mask, to_node, choose, priv, strategy, batch, out);
}
