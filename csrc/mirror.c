/*
 * mirror.c - bulk queries over an address space for ptreloc.mirror (a live process mirrored into
 * emulated tables): the walk path of one VA, the table nodes of many VAs, the remote-table
 * count, and the "every translation unchanged" check.  A process has up to millions of resident
 * pages; looping over them in Python costs seconds, here it costs milliseconds.
 *
 * Every function is a lockless software walk inside a read-side section (as ptr_translate()),
 * so it may run while a relocation is in progress: it sees each table either before or after
 * its repoint, never a freed one.  Nothing here changes the tree.  Geometry-generic: the walk
 * and the entry decoding are the core's own (the path walker of pgtable.h, ptr_entry_*()).
 */
#include <errno.h>
#include <string.h>

#include "ptreloc.h"

/* Walk @va (the path walker to the bottom); fill @frames (PTR_NO_FRAME below where it
 * stopped).  Return the leaf's level, -ENOENT (no leaf: an empty entry stopped the walk), or
 * -errno of the address or the walk. */
static int walk_one(struct ptr_mm *mm, uint64_t va, uint32_t frames[PTR_MAX_LEVELS])
{
	struct ptr_path p;
	int rc = ptr_va_check(mm->geo, va);
	p.entry = 0;
	for (int l = 0; l < PTR_MAX_LEVELS; l++)
		p.frame[l] = PTR_NO_FRAME;
	if (!rc)
		rc = ptr_walk_leaf(mm, va, &p);
	memcpy(frames, p.frame, sizeof(p.frame));
	if (rc < 0)
		return rc;
	return ptr_entry_is_leaf(mm->geo, rc, p.entry) ? rc : -ENOENT;
}

/**
 * ptr_mirror_walk() - the table frame at each level of the walk for @va.
 * @mm:     the address space
 * @va:     the address
 * @frames: out: @frames[level] is the table the walk read at that level (root at nlevels-1),
 *          PTR_NO_FRAME for the levels below where it stopped (below a huge leaf, or below an
 *          empty entry)
 *
 * Return: the level of the leaf that maps @va (0 for a base page, higher for a huge leaf);
 * -ENOENT when nothing maps @va (@frames then holds the tables walked down to the empty
 * entry); -ERANGE/-EDOM for an address outside the format; -ESTALE when the walk met a freed
 * frame (a protocol bug; counted in freed_frame_accesses).
 *
 * Locking: none needed; takes a read-side section itself.
 */
int ptr_mirror_walk(struct ptr_mm *mm, uint64_t va, uint32_t frames[PTR_MAX_LEVELS])
{
	int tok = PTR_READ_LOCK(mm->arena);
	int rc = walk_one(mm, va, frames);
	PTR_READ_UNLOCK(mm->arena, tok);
	(void)tok;
	return rc;
}

/**
 * ptr_mirror_walk_many() - ptr_mirror_walk() for @n addresses in one call.
 * @mm:     the address space
 * @vas:    @n addresses
 * @n:      how many
 * @frames: out, may be NULL: @n * PTR_MAX_LEVELS frames, VA i's at [i * PTR_MAX_LEVELS + level]
 * @nodes:  out, may be NULL: the same layout, the arena node of each of those frames (-1 where
 *          the frame is PTR_NO_FRAME)
 *
 * Return: the number of addresses nothing maps (0 when every one has a leaf; their entries
 * hold what the walk read), or -errno: -ERANGE/-EDOM (an address outside the format, nothing
 * meaningful written for it and the call stops there), -ESTALE (a walk met a freed frame).
 *
 * Locking: none needed; one read-side section per address, so a long call does not hold up a
 * concurrent relocation's grace period.
 */
int64_t ptr_mirror_walk_many(struct ptr_mm *mm, const uint64_t *vas, uint64_t n, uint32_t *frames,
			     int16_t *nodes)
{
	struct ptr_arena *a = mm->arena;
	int64_t unmapped = 0;
	for (uint64_t i = 0; i < n; i++) {
		uint32_t path[PTR_MAX_LEVELS];
		int rc = ptr_mirror_walk(mm, vas[i], path);
		if (rc == -ENOENT)
			unmapped++;
		else if (rc < 0)
			return rc;
		for (int l = 0; l < PTR_MAX_LEVELS; l++) {
			if (frames)
				frames[i * PTR_MAX_LEVELS + l] = path[l];
			if (nodes)
				nodes[i * PTR_MAX_LEVELS + l] =
					path[l] == PTR_NO_FRAME ? -1 : (int16_t)a->frames[path[l]].node;
		}
	}
	return unmapped;
}

/*
 * struct span_walk - a run of addresses walked one lowest-level table span at a time.
 *
 * Consecutive resident pages share their tables: a process's pages come in runs inside the
 * range one level-1 entry maps (a lowest-level table's span, 2 MiB on x86-64).  The first
 * address of a span is walked from the root; the next ones in the same span reuse that walk
 * and load only their own level-0 entry (or, under a huge leaf or an empty entry above level
 * 0, share the entry the walk stopped at: it covers the whole span).  So a dense process costs
 * one walk per table plus one load per page instead of a walk per page.
 *
 * The reused walk is only valid inside the read-side section it was made in, so each span
 * gets a section of its own (opened at its first address, closed at the next span's): a table
 * a relocation replaced meanwhile is still readable until then, and its old copy maps the same
 * pages - the same answer a walk per address that started a moment earlier gives.  A section
 * never outlives one span, so a long call does not hold up a relocation's grace period.
 */
struct span_walk {
	struct ptr_mm *mm;
	struct ptr_path p;  /* the span's walk: frames to the stop level, the entry above level 0 */
	uint64_t key;       /* va >> level[1].shift of the span walked */
	int level;          /* where that walk stopped */
	int tok;            /* the open section's token */
	bool valid;         /* p/key/level hold a walk made in the open section */
	bool in_section;
};

static void span_init(struct span_walk *s, struct ptr_mm *mm)
{
	memset(s, 0, sizeof(*s));
	s->mm = mm;
}

static void span_close(struct span_walk *s)
{
	if (s->in_section) {
		PTR_READ_UNLOCK(s->mm->arena, s->tok);
		(void)s->tok;
		s->in_section = false;
	}
	s->valid = false;
}

/*
 * Walk @va to its leaf through @s (a fresh walk at a new span, the span's walk reused
 * otherwise): @s->p.frame holds the tables the walk of @va reads (PTR_NO_FRAME below where it
 * stopped), *@entry the entry that maps @va.  Return: the leaf's level, -ENOENT (no leaf),
 * -ERANGE/-EDOM (an address outside the format), -ESTALE (a walk met a freed frame).
 */
static int span_leaf(struct span_walk *s, uint64_t va, uint64_t *entry)
{
	struct ptr_mm *mm = s->mm;
	const struct ptr_geometry *g = mm->geo;
	int rc = ptr_va_check(g, va);
	if (rc)
		return rc;
	uint64_t key = va >> g->level[1].shift;
	if (!s->valid || key != s->key) {
		span_close(s);
		s->tok = PTR_READ_LOCK(mm->arena);
		s->in_section = true;
		s->p.entry = 0;
		int level = ptr_path_walk(mm, va, 0, &s->p);
		if (level < 0)
			return level;
		s->level = level;
		s->key = key;
		s->valid = true;
	}
	uint64_t e = s->level == 0
		? ptr_entry_load(g, 0, ptr_frame_data(mm->arena, s->p.frame[0]), ptr_index(g, 0, va))
		: s->p.entry;
	*entry = e;
	return ptr_entry_is_leaf(g, s->level, e) ? s->level : -ENOENT;
}

/**
 * ptr_mirror_remote() - count the translations that walk a table on another node than their
 * data (remote_table_fraction's numerator and denominator).
 * @mm:         the address space
 * @vas:        @n addresses (the resident pages)
 * @data_nodes: per address, the node of its data; negative (unknown, or left out on purpose)
 *              addresses are not counted
 * @n:          how many
 * @out:        out: pages counted, of which remote (some table of the walk is on another
 *              node), per level how many had that level's table remote, and how many counted
 *              addresses nothing maps (these count as neither local nor remote)
 *
 * Only the tables the walk reads count: a huge leaf's walk has no tables below its level.
 *
 * Return: 0, or -errno as ptr_mirror_walk_many() (-ERANGE/-EDOM, -ESTALE).
 * Locking: none needed; one read-side section per lowest-level table span (struct
 * span_walk: one walk per span, one entry load per further address in it).
 */
int ptr_mirror_remote(struct ptr_mm *mm, const uint64_t *vas, const int32_t *data_nodes,
		      uint64_t n, struct ptr_mirror_remote *out)
{
	struct ptr_arena *a = mm->arena;
	struct span_walk s;
	int rc = 0;
	memset(out, 0, sizeof(*out));
	span_init(&s, mm);
	for (uint64_t i = 0; i < n; i++) {
		int32_t home = data_nodes[i];
		if (home < 0)
			continue;
		uint64_t e;
		rc = span_leaf(&s, vas[i], &e);
		if (rc == -ENOENT) {
			out->unmapped++;
			rc = 0;
			continue;
		}
		if (rc < 0)
			break;
		rc = 0;
		out->pages++;
		bool remote = false;
		for (int l = 0; l < PTR_MAX_LEVELS; l++) {
			if (s.p.frame[l] != PTR_NO_FRAME && a->frames[s.p.frame[l]].node != home) {
				out->by_level[l]++;
				remote = true;
			}
		}
		out->remote_pages += remote;
	}
	span_close(&s);
	return rc;
}

/**
 * ptr_mirror_check() - compare the translation of @n addresses with the expected physical
 * addresses.
 * @mm:        the address space
 * @vas:       @n addresses
 * @phys:      per address, the physical address its translation must give
 * @n:         how many
 * @first_bad: out, may be NULL: index of the first address that is unmapped or translates
 *             elsewhere (@n when none)
 *
 * Return: the number of addresses that are unmapped or translate to another address (0 when
 * every translation is as expected), or -errno: -ERANGE/-EDOM (an address outside the format),
 * -ESTALE (a walk met a freed frame).
 * Locking: as ptr_mirror_remote().
 */
int64_t ptr_mirror_check(struct ptr_mm *mm, const uint64_t *vas, const uint64_t *phys,
			 uint64_t n, uint64_t *first_bad)
{
	const struct ptr_geometry *g = mm->geo;
	struct span_walk s;
	int64_t bad = 0;
	if (first_bad)
		*first_bad = n;
	span_init(&s, mm);
	for (uint64_t i = 0; i < n; i++) {
		uint64_t e;
		int level = span_leaf(&s, vas[i], &e);
		if (level < 0 && level != -ENOENT) {
			span_close(&s);
			return level;
		}
		bool ok = false;
		if (level >= 0) {
			uint64_t size = ptr_level_size(g, level);
			ok = ptr_entry_phys(g, level, e) + (vas[i] & (size - 1)) == phys[i];
		}
		if (!ok) {
			if (first_bad && bad == 0)
				*first_bad = i;
			bad++;
		}
	}
	span_close(&s);
	return bad;
}
