/*
 * relocate_pool.c - evacuate a node's pool (every table frame moved off it) and compact a pool
 * (live table frames packed to its low end) while CPUs keep faulting and writing.
 *
 * Both are choosers over the one relocation engine, ptr_relocate_mms_flags() (relocate.c):
 * same protocol (rewalk / stop / naive), same locks, same A/D merge, same grace period, same
 * report - there is no second copy path.
 *   evacuation  from_mask = the pool's node; the chooser sends every frame to the target, or
 *               spreads them over the other pools by free room.  The address spaces whose new
 *               tables came from the node are pointed elsewhere first (the kernel isolates
 *               memory it is about to offline), and a frame a fault placed there during the
 *               pass is picked up by another pass (at most PTR_EVAC_MAX_PASSES).
 *   compaction  from_mask = the pool's node; the chooser names the same node for every frame
 *               at or above first + used (PTR_RELOC_F_SAME_NODE), and the engine takes the
 *               pool's lowest free slot for each (PTR_RELOC_F_LOWER), giving back a slot that
 *               would not be lower.
 * Frames the given address spaces do not link (another mm's) are not moved; an evacuation
 * reports what of theirs is left (@left), the pool's figures say what is left at all.
 */
#include <errno.h>
#include <string.h>

#include "ptreloc.h"

static uint32_t linked_on(struct ptr_mm *const *mms, int nmms, int node)
{
	uint32_t counts[PTR_MAX_LEVELS], per_node[PTR_MAX_NODES][PTR_MAX_LEVELS];
	uint32_t n = 0;
	for (int i = 0; i < nmms; i++) {
		ptr_mm_count_tables(mms[i], counts, per_node);
		for (int l = 0; l < PTR_MAX_LEVELS; l++)
			n += per_node[node][l];
	}
	return n;
}

static void add_report(struct ptr_reloc_report *d, const struct ptr_reloc_report *s)
{
	d->frames_found += s->frames_found;
	d->relocated += s->relocated;
	d->not_relocated += s->not_relocated;
	for (int i = 0; i < PTR_RELOC_NREASONS; i++)
		d->reason[i] += s->reason[i];
	d->bytes_copied += s->bytes_copied;
	d->batches += s->batches;
	d->shootdowns += s->shootdowns;
	d->root_reloads += s->root_reloads;
	d->root_switches += s->root_switches;
	d->ad_merged += s->ad_merged;
	d->ad_lost += s->ad_lost;
	d->ns_collect += s->ns_collect;
	d->ns_alloc += s->ns_alloc;
	d->ns_copy += s->ns_copy;
	d->ns_shootdown += s->ns_shootdown;
	d->ns_merge += s->ns_merge;
	d->ns_grace += s->ns_grace;
	d->ns_free += s->ns_free;
	d->ns_stopped += s->ns_stopped;
	d->ns_total += s->ns_total;
	for (int l = 0; l < PTR_MAX_LEVELS; l++) {
		struct ptr_reloc_level_report *dl = &d->level[l];
		const struct ptr_reloc_level_report *sl = &s->level[l];
		dl->found += sl->found;
		dl->relocated += sl->relocated;
		dl->not_relocated += sl->not_relocated;
		for (int i = 0; i < PTR_RELOC_NREASONS; i++)
			dl->reason[i] += sl->reason[i];
		dl->bytes_copied += sl->bytes_copied;
	}
}

static int check_args(struct ptr_mm *const *mms, int nmms, int node, int strategy, int batch,
		      const struct ptr_evac_report *out)
{
	if (!mms || nmms < 1 || nmms > 32 || !out || batch < 1 || strategy < PTR_RELOC_REWALK ||
	    strategy > PTR_RELOC_NAIVE)
		return -EINVAL;
	for (int i = 0; i < nmms; i++)
		if (!mms[i] || mms[i]->arena != mms[0]->arena)
			return -EINVAL;
	if (node < 0 || node >= mms[0]->arena->nnodes)
		return -ENODEV;
	return 0;
}

/* ---- evacuation ------------------------------------------------------------------------- */

struct evac_priv {
	struct ptr_arena *a;
	int node, to_node;
	int64_t room[PTR_MAX_NODES];
};

static void evac_room(struct evac_priv *ep)
{
	for (int n = 0; n < ep->a->nnodes; n++) {
		const struct ptr_pool *p = &ep->a->pool[n];
		ep->room[n] = (int64_t)atomic_load(&p->capacity) - (int64_t)atomic_load(&p->in_use);
	}
}

/* the other pool with the most free room (ties: the lowest node) */
static int roomiest(const struct evac_priv *ep)
{
	int best = -1;
	for (int n = 0; n < ep->a->nnodes; n++)
		if (n != ep->node && (best < 0 || ep->room[n] > ep->room[best]))
			best = n;
	return best;
}

static int evac_choose(void *priv, int level, uint32_t frame, uint64_t base_va, int node)
{
	struct evac_priv *ep = priv;
	int t = ep->to_node >= 0 ? ep->to_node : roomiest(ep);
	if (t >= 0)
		ep->room[t]--;
	return t;
}

/**
 * ptr_evacuate() - move every table frame the address spaces @mms link on pool @node to other
 * pools, with the relocation protocol @strategy, while their CPUs keep running.
 * @mms:      1..32 address spaces of one arena (every sharer of a shared table, or it stays:
 *            reason "shared")
 * @nmms:     how many
 * @node:     the pool to empty
 * @to_node:  the target pool, or -1: each frame to the other pool with the most free room
 * @strategy: PTR_RELOC_REWALK, PTR_RELOC_STOP or PTR_RELOC_NAIVE
 * @batch:    frames per lock/shootdown batch
 * @out:      the report: @out->left is 0 when nothing of @mms is left on @node
 *
 * First every mm whose new tables come from @node is pointed at the target (ptr_mm_set_node()),
 * then up to PTR_EVAC_MAX_PASSES relocation passes run until no frame of @mms is left there.
 * Return: 0; -EINVAL (bad arguments, @to_node == @node), -ENODEV (no such pool), -ENOSPC /
 * -ENOMEM (a target allocation failed: what moved stays moved, every translation is unchanged,
 * @out says what is left), -EOPNOTSUPP (norelo build).  *@out is filled unless -EINVAL/-ENODEV.
 * Locking: as ptr_relocate_mms() (takes reloc_mutex and the LOCK ORDER itself): call with no
 * lock held, outside a read-side section.
 */
int ptr_evacuate(struct ptr_mm *const *mms, int nmms, int node, int to_node, int strategy,
		 int batch, struct ptr_evac_report *out)
{
	int rc = check_args(mms, nmms, node, strategy, batch, out);
	if (rc)
		return rc;
	struct ptr_arena *a = mms[0]->arena;
	if (to_node == node || to_node < -1)
		return -EINVAL;
	if (to_node >= a->nnodes || a->nnodes < 2)
		return -ENODEV;
	memset(out, 0, sizeof(*out));
	out->node = node;
	out->to_node = to_node;
	out->new_home = -1;
	out->reloc.strategy = strategy;
	out->reloc.batch = batch;
	ptr_arena_pool_runs(a, node, &out->before);
	if (!PTR_RELOCATION)
		return -EOPNOTSUPP;

	struct evac_priv ep = { .a = a, .node = node, .to_node = to_node };
	evac_room(&ep);
	out->new_home = to_node >= 0 ? to_node : roomiest(&ep);
	for (int i = 0; i < nmms; i++)
		if (__atomic_load_n(&mms[i]->node, __ATOMIC_RELAXED) == node)
			ptr_mm_set_node(mms[i], out->new_home);

	for (int pass = 0; pass < PTR_EVAC_MAX_PASSES; pass++) {
		struct ptr_reloc_report rep;
		evac_room(&ep);
		rc = ptr_relocate_mms_flags(mms, nmms, 1u << node, -1, evac_choose, &ep, strategy,
					    batch, 0, &rep);
		out->passes++;
		add_report(&out->reloc, &rep);
		if (rc)
			break;
		out->left = linked_on(mms, nmms, node);
		if (!out->left || !rep.relocated)
			break;
	}
	out->left = linked_on(mms, nmms, node);
	out->reloc.error = rc;
	ptr_arena_pool_runs(a, node, &out->after);
	return rc;
}

/* ---- compaction ------------------------------------------------------------------------- */

struct compact_priv {
	uint32_t boundary;
};

static int compact_choose(void *priv, int level, uint32_t frame, uint64_t base_va, int node)
{
	const struct compact_priv *cp = priv;
	return frame >= cp->boundary ? node : -1;
}

static uint32_t used_above(struct ptr_arena *a, int node, uint32_t used)
{
	const struct ptr_pool *p = &a->pool[node];
	uint32_t n = 0;
	for (uint32_t i = used; i < p->nframes; i++)
		n += atomic_load_explicit(&a->frames[p->first + i].state, memory_order_relaxed) !=
		     PTR_FRAME_FREE;
	return n;
}

/**
 * ptr_compact() - pack the table frames the address spaces @mms link on pool @node into the
 * pool's low end (lowest free slots first), with the relocation protocol @strategy, while their
 * CPUs keep running; report the pool's free runs before and after.
 * @mms:      1..32 address spaces of one arena
 * @nmms:     how many
 * @node:     the pool
 * @strategy: PTR_RELOC_REWALK, PTR_RELOC_STOP or PTR_RELOC_NAIVE
 * @batch:    frames per lock/shootdown batch
 * @out:      the report: @out->above is the used slots still at or above first + used (0 =
 *            packed; frames of other mms and tables faulted in meanwhile may remain there)
 *
 * Candidates are the frames at or above first + (used slots at the start); each goes to the
 * lowest free slot, or stays when that is not lower.
 * Return: 0; -EINVAL (bad arguments), -ENODEV (no such pool), -ENOSPC / -ENOMEM (an allocation
 * failed: what moved stays moved, every translation is unchanged), -EOPNOTSUPP (norelo
 * build).  *@out is filled unless -EINVAL/-ENODEV.
 * Locking: as ptr_relocate_mms(); the lowest-slot allocation walks the pool's free list under
 * pool->lock (innermost).  Call with no lock held, outside a read-side section.
 */
int ptr_compact(struct ptr_mm *const *mms, int nmms, int node, int strategy, int batch,
		struct ptr_evac_report *out)
{
	int rc = check_args(mms, nmms, node, strategy, batch, out);
	if (rc)
		return rc;
	struct ptr_arena *a = mms[0]->arena;
	memset(out, 0, sizeof(*out));
	out->node = out->to_node = node;
	out->new_home = -1;
	out->reloc.strategy = strategy;
	out->reloc.batch = batch;
	ptr_arena_pool_runs(a, node, &out->before);
	if (!PTR_RELOCATION)
		return -EOPNOTSUPP;
	struct compact_priv cp = { .boundary = a->pool[node].first + out->before.used };
	rc = ptr_relocate_mms_flags(mms, nmms, 1u << node, -1, compact_choose, &cp, strategy, batch,
				    PTR_RELOC_F_SAME_NODE | PTR_RELOC_F_LOWER, &out->reloc);
	out->passes = 1;
	out->reloc.error = rc;
	out->left = linked_on(mms, nmms, node);
	ptr_arena_pool_runs(a, node, &out->after);
	out->above = used_above(a, node, out->after.used);
	return rc;
}
