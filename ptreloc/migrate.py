"""Move a live process's data with migrate_pages(2) and its mirrored page tables with it.

``migrate(pid, from_nodes, to_nodes)`` is what ``ptreloc migrate`` runs:

1. **validate** everything before touching anything (:func:`validate`): the pid, that it is a
   live user process with a memory map (not a zombie, not a kernel thread), that we may read its
   pagemap and move its pages, that both node lists are well formed and online (the target with
   memory), that the target is inside the process's cpuset (Mems_allowed) and that the request
   is not "from equal to to" nor one with which migrate_pages would move nothing;
2. snapshot the process and mirror it (:mod:`ptreloc.mirror`);
3. move the real data: migrate_pages(2);
4. re-query where each snapshot page is now (move_pages(2) query);
5. relocate the mirrored tables that sit on a source node to the target (:mod:`ptreloc.relocate`);
6. verify: every mirrored translation unchanged, every table frame physically on the target node
   when that node is real (move_pages query of the frames' own addresses), and the kernel's
   placement of the data;
7. report (:class:`MigrationReport`, JSON keys per the command-line contract).

Same node on both sides is "nothing to do" (a usage error) unless ``in_place`` is given: then the
whole path runs for real on one node - migrate_pages from a node to itself (which the kernel
accepts and does nothing for) and the mirrored tables copied to fresh frames on that same node -
which is how the tool is exercised on a one-node machine.
"""

from __future__ import annotations

import os
import time
from array import array
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Any

import psutil

from ptreloc import frames as frames_mod
from ptreloc import kernel_tables, numa, policy, proc
from ptreloc import migrate_retry as retry_mod
from ptreloc.errors import (
    AccessDenied,
    InvalidNode,
    NoSuchProcess,
    PtrelocError,
    UsageError,
)
from ptreloc.mirror import (
    Mirror,
    ProgressCallback,
    RemoteFraction,
    infer_placement,
    special_pages,
)
from ptreloc.placement import PlacementInfo, mirror_measured
from ptreloc.placement import tables_json as placement_tables_json
from ptreloc.relocate import DEFAULT_BATCH, RelocationReport, check_batch

__all__ = [
    "STRATEGIES",
    "MigrationRequest",
    "MigrationReport",
    "validate",
    "migrate",
    "remap_nodes",
    "relocate_mirror",
    "pages_per_node",
    "count_pairs",
    "select_stuck",
    "requery_nodes",
    "mirror_tables_json",
    "DataReport",
    "TablesReport",
    "RemoteFractions",
    "KernelTablesReport",
]

#: table relocation strategies ``ptreloc migrate`` offers (``naive`` exists for ``stress`` only)
STRATEGIES = ("rewalk", "stop")
_CAP_SYS_NICE = 23  # include/uapi/linux/capability.h


@dataclass(frozen=True)
class MigrationRequest:
    """A validated request: nothing has been changed yet."""

    pid: int
    name: str
    from_nodes: frozenset[int]
    to_nodes: frozenset[int]
    mems_allowed: frozenset[int]
    in_place: bool
    # source nodes whose pages migrate_pages leaves where they are (a target too): the CLI warns
    staying: frozenset[int] = frozenset()

    def staying_warning(self) -> str | None:
        """One line when some source node keeps its pages and several targets were named (with
        one target, a source that is the target staying put is what was asked)."""
        if not self.staying or len(self.to_nodes) < 2:
            return None
        nodes = numa.format_nodes(self.staying)
        return (
            f"pages on node {nodes} stay there: it is also a target, and migrate_pages keeps "
            f"such a node's pages (leave it out of --to-node to move them)"
        )


def _nodes(spec: numa.NodeSpec, topo: numa.Topology, *, memory: bool) -> frozenset[int]:
    """A numactl node string or node numbers -> checked node set (InvalidNode otherwise)."""
    if not isinstance(spec, str):
        items = list(spec)
        if any(isinstance(n, bool) or not isinstance(n, int) for n in items):
            raise InvalidNode(f"nodes must be numbers, not {items!r}")
        if any(n < 0 for n in items):
            raise InvalidNode(f"node numbers cannot be negative: {items!r}")
        spec = ",".join(str(n) for n in sorted(set(items)))
    try:
        return numa.parse_nodes(spec, topo, need_memory=memory)
    except InvalidNode as err:
        if len(topo.possible) == 1 and "does not exist" in str(err):
            # the one fix that works without a guest: the whole path on the one node
            only = numa.format_nodes(topo.possible)
            raise InvalidNode(
                f"{err}, or --from-node {only} --to-node {only} --in-place to run it on this node",
                node=err.node,
            ) from err
        raise


def validate(
    pid: int, from_spec: numa.NodeSpec, to_spec: numa.NodeSpec, *, in_place: bool = False
) -> MigrationRequest:
    """Check the whole request; raise the first problem found.  Changes nothing.

    Raises UsageError/InvalidNode (exit 2): a pid that is not a positive number, a kernel
    thread, malformed/unknown/offline nodes, a target without memory, the same nodes on both
    sides without ``in_place`` (or ``in_place`` with different nodes), lists with which
    migrate_pages would move nothing (every source node is also a target: ``0`` -> ``1,0``).
    NoSuchProcess (exit 1): no such pid, a zombie.  AccessDenied (exit 1): another user's
    process without CAP_SYS_NICE, no ptrace read access to its pagemap, a target outside its
    cpuset.
    """
    proc.check_pid(pid)
    # nodes first: a malformed node list is a usage error whatever the pid
    topo = numa.topology()
    from_nodes = _nodes(from_spec, topo, memory=False)
    to_nodes = _nodes(to_spec, topo, memory=True)
    if from_nodes == to_nodes and not in_place:
        raise UsageError(
            f"nothing to do: --from-node and --to-node are both node "
            f"{numa.format_nodes(from_nodes)}; give a different --to-node, or --in-place to "
            f"relocate the tables on that node"
        )
    if in_place and from_nodes != to_nodes:
        raise UsageError(
            "--in-place needs the same nodes on both sides "
            f"(got {numa.format_nodes(from_nodes)} -> {numa.format_nodes(to_nodes)})"
        )
    staying = frozenset(s for s, d in remap_nodes(from_nodes, to_nodes).items() if s == d)
    if staying == from_nodes and not in_place:
        raise UsageError(
            f"nothing would move: migrate_pages leaves the pages of node "
            f"{numa.format_nodes(staying)} where they are with --to-node "
            f"{numa.format_nodes(to_nodes)} (a source node that is also a target stays put); "
            f"give target nodes that are not sources, e.g. --to-node "
            f"{numa.format_nodes(to_nodes - from_nodes) or 'N'}"
        )
    # the process: exists, alive, a user process, ours to move
    name, _, uids = proc.inspect_process(
        pid,
        lambda process: process.uids(),
        zombie="(it has exited): nothing to migrate",
        kernel_thread="it has no user memory to migrate",
    )
    me_uid, me_euid = os.getuid(), os.geteuid()
    if not proc.cap_effective() >> _CAP_SYS_NICE & 1 and not (
        {me_uid, me_euid} & {uids.real, uids.saved}
    ):
        raise AccessDenied(
            f"pid {pid} ({name}) belongs to uid {uids.real}: moving another user's pages needs "
            f"CAP_SYS_NICE; run as root", pid=pid
        )
    try:  # reading pagemap needs ptrace read access: try it for real (opening changes nothing)
        os.close(os.open(f"/proc/{pid}/pagemap", os.O_RDONLY))
    except (FileNotFoundError, ProcessLookupError) as err:
        raise NoSuchProcess(f"no process with pid {pid} (it exited)", pid=pid) from err
    except PermissionError as err:
        raise AccessDenied(
            f"cannot read /proc/{pid}/pagemap of {name}: needs the same user or root",
            pid=pid, path=f"/proc/{pid}/pagemap",
        ) from err
    mems = numa.process_mems_allowed(pid)
    outside = to_nodes - mems
    if outside:
        raise AccessDenied(
            f"node {numa.format_nodes(outside)} is outside pid {pid}'s cpuset (Mems_allowed: "
            f"{numa.format_nodes(mems) or 'none'}); choose a target from Mems_allowed or widen "
            f"the cpuset", pid=pid, node=min(outside)
        )
    return MigrationRequest(
        pid, name, from_nodes, to_nodes, mems, in_place, staying if not in_place else frozenset()
    )


def remap_nodes(from_nodes: frozenset[int], to_nodes: frozenset[int]) -> dict[int, int]:
    """Where migrate_pages(2) sends the pages of each source node, as the kernel's
    do_migrate_pages decides: when the two lists differ in size, a source node that is also a
    target keeps its pages; otherwise the n-th source node (in order) goes to the
    (n mod |to|)-th target node (node_remap)."""
    targets = sorted(to_nodes)
    uneven = len(from_nodes) != len(to_nodes)
    return {
        node: node if uneven and node in to_nodes else targets[i % len(targets)]
        for i, node in enumerate(sorted(from_nodes))
    }


# ---- report ------------------------------------------------------------------------------


def pages_per_node(nodes: Iterable[int]) -> dict[str, int]:
    """Node (as a JSON key) -> pages, for a node-per-page array (negative: not placed); an
    array('i') is counted in one C pass."""
    if isinstance(nodes, array) and nodes.typecode == "i":
        counts: dict[int, int] = proc.status_counts(nodes)
    else:
        counts = Counter(nodes)
    return {str(k): v for k, v in sorted(counts.items()) if k >= 0}


def _pair_bins(nodes: frozenset[int]) -> int:
    """Bins for the pair scans: every node the core knows, and ``nodes``."""
    from ptreloc._native import core

    return max(core("relo").max_nodes, max(nodes, default=0) + 1)


def count_pairs(
    before: array[int], after: array[int], stuck_nodes: frozenset[int], special: Iterable[int]
) -> tuple[dict[str, int], dict[str, int], int]:
    """(pages per node before, pages per node after - as :func:`pages_per_node` - and the
    pages on a node of ``stuck_nodes`` on both sides, the indexes ``special`` excepted) of two
    parallel arrays('i') of node statuses, in one C pass (a histogram of (before, after)
    pairs)."""
    from ptreloc._native import core

    nbins = _pair_bins(stuck_nodes)
    hist, outside = core("relo").pair_histogram(before, after, nbins)
    width = nbins + 1
    per_before: Counter[int] = Counter()
    per_after: Counter[int] = Counter()
    stuck = 0
    for b in range(nbins):
        row = hist[b * width:(b + 1) * width]
        per_before[b] += sum(row)
        for a in range(nbins):
            if row[a]:
                per_after[a] += row[a]
                if b in stuck_nodes and a in stuck_nodes:
                    stuck += row[a]
    for a in range(nbins):  # the row of pages that were on no node
        per_after[a] += hist[nbins * width + a]
    if outside:  # pairs with a node past the bins (beyond the core's nodes): here, rare
        for b, a in zip(before, after, strict=True):
            if b >= nbins or a >= nbins:
                per_before[b] += b >= 0
                per_after[a] += a >= 0
                stuck += b in stuck_nodes and a in stuck_nodes
    for k in special:
        if before[k] in stuck_nodes and after[k] in stuck_nodes:
            stuck -= 1

    def as_json(counts: Counter[int]) -> dict[str, int]:
        return {str(k): v for k, v in sorted(counts.items()) if v}

    return as_json(per_before), as_json(per_after), stuck


def select_stuck(before: array[int], after: array[int], stuck_nodes: frozenset[int],
                 special: frozenset[int]) -> list[int]:
    """Indexes of the pages on a node of ``stuck_nodes`` in ``before`` and in ``after`` (two
    parallel arrays('i') of node statuses), the indexes ``special`` excepted: one C pass."""
    if not stuck_nodes:
        return []
    from ptreloc._native import core

    member = bytearray(max(stuck_nodes) + 1)
    for node in stuck_nodes:
        member[node] = 1
    found = core("relo").select_pairs(before, after, member)
    return [k for k in found if k not in special]


def mirror_tables_json(tables: dict[int, dict[str, int]]) -> dict[str, dict[str, int]]:
    """A mirror's node -> level -> frames, nodes without a table left out (JSON keys)."""
    return {
        str(node): dict(levels) for node, levels in sorted(tables.items()) if any(levels.values())
    }


@dataclass
class DataReport:
    """``data``: where the process's pages were and are (node -> pages)."""

    before: dict[str, int]
    after: dict[str, int]
    not_migrated: int  # on a source node before and still (kernel pages excepted)
    kernel_not_migrated: int | None  # migrate_pages' own count (None: not called)
    unmovable: int  # kernel pages mapped into the process ([vdso], [vvar])
    numa_maps_before: dict[int, int]
    numa_maps_after: dict[int, int]
    # why the ``not_migrated`` pages did not move (reason -> pages; ptreloc.migrate_retry),
    # the same per page class (anon, file, shmem, other -> reason -> pages), and what the
    # move_pages retries did (None: dry run or --tables-only)
    not_migrated_reasons: dict[str, int] = field(default_factory=dict)
    not_migrated_by_class: dict[str, dict[str, int]] = field(default_factory=dict)
    retry: retry_mod.RetryReport | None = None

    def to_json(self) -> dict[str, Any]:
        # the JSON keys are the field names, in order; numa_maps keyed by node string
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in ("numa_maps_before", "numa_maps_after"):
            out[key] = {str(k): v for k, v in sorted(out[key].items())}
        out["retry"] = self.retry.to_json() if self.retry is not None else None
        return out


@dataclass
class TablesReport:
    """``tables``: the mirrored tables before and after, and the engine's report(s) as they
    came from the core (:class:`ptreloc.relocate.RelocationReport`) - nothing re-counted.

    ``legs`` is empty for a dry run or --tables-only, one report for a move, two for the
    in-place round trip (out to the scratch node, back to the target)."""

    before: dict[str, dict[str, int]]
    after: dict[str, dict[str, int]]
    level_names: list[str]
    legs: list[RelocationReport] = field(default_factory=list)

    @property
    def relocated(self) -> dict[str, int]:
        """Per level, frames that ended on a target (the last leg's count)."""
        if not self.legs:
            return dict.fromkeys(self.level_names, 0)
        return self.legs[-1].relocated_by_level()

    @property
    def not_relocated(self) -> dict[str, int]:
        """Per level, frames left behind over every leg (those a chooser kept excepted)."""
        out = dict.fromkeys(self.level_names, 0)
        for leg in self.legs:
            for name, n in leg.left_by_level().items():
                out[name] += n
        return out

    @property
    def reasons(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for leg in self.legs:
            total += Counter(leg.failure_reasons())
        return dict(total)

    @property
    def bytes_copied(self) -> int:
        return sum(leg.bytes_copied for leg in self.legs)

    def to_json(self) -> dict[str, Any]:
        return {"before": self.before, "after": self.after, "relocated": self.relocated,
                "not_relocated": self.not_relocated, "not_relocated_reasons": self.reasons,
                "bytes_copied": self.bytes_copied}


@dataclass
class RemoteFractions:
    """``remote_table_fraction``: the mirror's, before, after the data alone and after, and
    the kernel's own tables walked after a --kernel-tables move."""

    before: RemoteFraction
    after_data_only: RemoteFraction
    after: RemoteFraction
    kernel_after: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "before": round(self.before.fraction, 6),
            "after_data_only": round(self.after_data_only.fraction, 6),
            "after": round(self.after.fraction, 6),
            "kernel_after": None if self.kernel_after is None else self.kernel_after["fraction"],
            "detail": {
                "before": self.before.to_json(),
                "after_data_only": self.after_data_only.to_json(),
                "after": self.after.to_json(),
                "kernel_after": self.kernel_after,
            },
        }


#: what ``kernel_tables`` carries over from ptreloc.kernel_move's report
_KERNEL_MOVE_KEYS = ("moved", "skipped", "pause_ms", "move_ms", "levels", "threads",
                     "node_pagetables_kb_before", "node_pagetables_kb_after", "vmpte_kb",
                     "checks")


@dataclass
class KernelTablesReport:
    """``kernel_tables``: the process's real tables walked before and after (node -> level
    -> frames; None where the walk is not possible) and, with --kernel-tables, what
    ptreloc.kernel_move did."""

    before: dict[str, dict[str, int]] | None = None
    after: dict[str, dict[str, int]] | None = None
    move: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any] | None:
        if self.before is None and self.move is None:
            return None
        out: dict[str, Any] = {"before": self.before, "after": self.after}
        if self.move is not None:
            out.update({k: self.move[k] for k in _KERNEL_MOVE_KEYS})
        return out


@dataclass
class MigrationReport:
    request: MigrationRequest
    dry_run: bool
    strategy: str
    batch: int
    table_pool_frames: int | None
    geometry: str
    virtual_nodes: tuple[int, ...]
    data: DataReport
    tables: TablesReport
    remote_table_fraction: RemoteFractions
    checks: dict[str, bool | None]
    placement: PlacementInfo | None = None
    kernel_tables: KernelTablesReport = field(default_factory=KernelTablesReport)
    thp: dict[str, Any] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    page_size: int = numa.PAGE_SIZE
    policy_warnings: list[policy.PolicyWarning] = field(default_factory=list)

    def policy_warning(self) -> str | None:
        """One stderr line when the process's memory policy will undo the move."""
        return policy.warning_line(self.policy_warnings)

    @property
    def verified(self) -> bool | None:
        if self.dry_run:
            return None
        return all(v is not False for v in self.checks.values())

    @property
    def partial(self) -> bool:
        return self.data.not_migrated > 0 or sum(self.tables.not_relocated.values()) > 0

    def partial_summary(self) -> str:
        """What was not moved, in one line (for --strict's exit 3)."""
        left = self.tables.not_relocated
        tables = sum(left.values())
        parts = [f"{self.data.not_migrated} pages not migrated", f"{tables} tables not relocated"]
        if self.data.not_migrated and self.data.not_migrated_reasons:
            why = ", ".join(f"{k} {v}" for k, v in sorted(self.data.not_migrated_reasons.items()))
            parts[0] += f" (reasons: {why})"
        if tables:
            levels = ", ".join(f"{k} {v}" for k, v in left.items() if v)
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.tables.reasons.items()))
            parts[-1] += f" ({levels}; reasons: {reasons or 'unknown'})"
        return ", ".join(parts)

    def failed_checks(self) -> list[str]:
        """The verification checks that came out false (empty when verified or a dry run)."""
        return [name for name, ok in self.checks.items() if ok is False]

    def verification_summary(self) -> str:
        """What failed verification, in one line (for the CLI's exit 1)."""
        parts = []
        for name in self.failed_checks():
            if name == "translations_unchanged":
                parts.append("translations_unchanged (a mirrored translation changed)")
            elif name == "tables_on_target":
                left = sum(self.tables.not_relocated.values())
                why = ", ".join(f"{k} {v}" for k, v in sorted(self.tables.reasons.items()))
                parts.append(
                    f"tables_on_target ({left} table frames not on a target node"
                    + (f"; reasons: {why})" if why else ")")
                )
            elif name == "data_on_target":
                parts.append(
                    f"data_on_target ({self.data.not_migrated} pages still on a source node)"
                )
            elif name.startswith("kernel_") and self.kernel_tables.move is not None:
                detail = next((c["detail"] for c in self.kernel_tables.move["checks"]
                               if f"kernel_{c['name']}" == name), None)
                parts.append(f"{name} ({detail})" if detail else name)
            else:
                parts.append(name)
        return "verification failed: " + "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        r = self.request
        return {
            "pid": r.pid,
            "name": r.name,
            "from_nodes": sorted(r.from_nodes),
            "to_nodes": sorted(r.to_nodes),
            "in_place": r.in_place,
            "dry_run": self.dry_run,
            "strategy": self.strategy,
            "batch": self.batch,
            "table_pool_frames": self.table_pool_frames,
            "geometry": self.geometry,
            "virtual_nodes": list(self.virtual_nodes),
            "page_size": self.page_size,
            "data": self.data.to_json(),
            "tables": self.tables.to_json(),
            "remote_table_fraction": self.remote_table_fraction.to_json(),
            "placement": self.placement.to_json() if self.placement else None,
            "kernel_tables": self.kernel_tables.to_json(),
            "thp": self.thp,
            "checks": self.checks,
            "verified": self.verified,
            "timings_s": self.timings_s,
            "policy_warnings": [w.to_json() for w in self.policy_warnings],
        }


# ---- relocation adapter ------------------------------------------------------------------


def relocate_mirror(
    m: Mirror,
    from_nodes: frozenset[int],
    target: int | Callable[..., int | None],
    *,
    strategy: str = "rewalk",
    batch: int = DEFAULT_BATCH,
) -> RelocationReport:
    """Relocate the mirror's tables on ``from_nodes`` to ``target`` (a node, or a chooser
    ``TableFrame -> node | None``) with :func:`ptreloc.relocate.relocate`.  An allocation
    failure on the target does not raise: it shows up in the report's ``not_relocated`` and
    ``reasons``."""
    from ptreloc.relocate import relocate

    return relocate(m.mm, sorted(from_nodes), target, strategy=strategy, batch=batch)


# ---- the migration -----------------------------------------------------------------------


def _predicted(nodes: array[int], mapping: dict[int, int]) -> array[int]:
    return array("i", (mapping.get(n, n) if n >= 0 else n for n in nodes))


def migrate(
    pid: int,
    from_spec: numa.NodeSpec,
    to_spec: numa.NodeSpec,
    *,
    dry_run: bool = False,
    strategy: str = "rewalk",
    batch: int = DEFAULT_BATCH,
    in_place: bool = False,
    table_pool_frames: int | None = None,
    progress: ProgressCallback | None = None,
    kernel_tables: bool = False,
    tables_only: bool = False,
    force: bool = False,
    retries: int = retry_mod.DEFAULT_RETRIES,
    retry_delay_s: float = retry_mod.DEFAULT_RETRY_DELAY_S,
) -> MigrationReport:
    """Validate, snapshot, mirror, migrate the data, relocate the tables, verify (module doc).

    With ``dry_run`` nothing real moves: ``data.after`` and ``remote_table_fraction`` give what
    migrate_pages would do (the kernel's remap of source to target nodes), the tables are not
    relocated and ``verified`` is None.

    ``table_pool_frames`` caps each target node's pool of mirrored table frames at that many
    frames (frames in use count against it) for the relocation, so allocation failure on the
    target can be provoked on a real run: the tables that do not fit stay where they were and
    are reported in ``not_relocated`` with their reasons (``target_full``, then ``aborted``).
    With ``in_place`` the tables already fill the target's pool, so the cap bounds the fresh
    frames the round trip may take (its scratch node's pool): that many tables (in whole
    batches) are copied out and back, the rest are not copied and stay on their node.
    ``bytes_copied`` counts both legs of the round trip.

    ``kernel_tables`` moves the process's real page tables to the (single) target too, after
    the data (:func:`ptreloc.kernel_move.move_kernel_tables`); ``tables_only`` moves only them
    (no migrate_pages; the mirror's tables are not relocated either).  ``force``: even with
    io_uring/AIO in flight.

    ``retries``: after migrate_pages, the pages it left on a source node are moved with
    move_pages up to that many rounds (waiting ``retry_delay_s``, doubled each round) while
    they fail transiently (EBUSY, EAGAIN); permanent failures are not retried.  What still
    failed: ``data.not_migrated`` (pages), ``data.not_migrated_reasons`` (reason -> pages),
    ``data.not_migrated_by_class`` (anon/file/shmem/other -> reason -> pages), ``data.retry``.

    ``policy_warnings``: the VMAs whose memory policy keeps new pages (and, for the task's
    policy, new page tables) off every target node - the move will be undone
    (:mod:`ptreloc.policy`).
    """
    kernel_tables = kernel_tables or tables_only
    retry_mod.check_retries(retries, retry_delay_s)
    if strategy not in STRATEGIES:
        raise UsageError(f"unknown strategy {strategy!r}: use {' or '.join(STRATEGIES)}")
    check_batch(batch)  # here, before anything moves (the one check: ptreloc.relocate)
    if table_pool_frames is not None and (
        isinstance(table_pool_frames, bool)
        or not isinstance(table_pool_frames, int)
        or not 0 <= table_pool_frames < 1 << 32
    ):
        raise UsageError(
            f"table pool capacity must be 0..{(1 << 32) - 1} frames, not {table_pool_frames!r}"
        )
    clock = _Clock()
    lap = clock.lap

    if kernel_tables and in_place:
        raise UsageError("--kernel-tables cannot be combined with --in-place (the mirror's "
                         "round trip); --tables-only with from equal to to re-homes the tables")
    if kernel_tables and isinstance(to_spec, str):
        try:
            targets: frozenset[int] | None = numa.parse_nodes(to_spec)
        except PtrelocError:
            targets = None  # validate() says what is wrong with it
        if targets is not None and len(targets) != 1:
            raise UsageError(
                "--kernel-tables moves the real tables to one node: give one --to-node")
    # --tables-only from a node to itself is meaningful: fresh tables on that node
    request = validate(pid, from_spec, to_spec,
                       in_place=in_place or (tables_only and _same(from_spec, to_spec)))
    if kernel_tables:
        if len(request.to_nodes) != 1:
            raise UsageError(
                "--kernel-tables moves the real tables to one node: give one --to-node")
        if not dry_run:
            from ptreloc import kernel_move

            kernel_move.preflight(pid, force=force)  # refuse before anything moved
    lap("validate")
    try:
        return _run(
            request, dry_run, strategy, batch, table_pool_frames, progress, clock,
            move_tables=kernel_tables, tables_only=tables_only, force=force,
            retries=retries, retry_delay_s=retry_delay_s,
        )
    except (psutil.NoSuchProcess, ProcessLookupError, FileNotFoundError) as err:
        raise _exited(pid) from err
    except PtrelocError as err:
        # a process that exits under us makes the kernel answer ESRCH, or EINVAL once it is a
        # zombie (no mm left): say what happened rather than what the syscall saw
        if isinstance(err, NoSuchProcess) or not _alive(pid):
            raise _exited(pid) from err
        raise


def _same(a: numa.NodeSpec, b: numa.NodeSpec) -> bool:
    """Whether two node specs name the same nodes (False when either is malformed)."""
    try:
        return (numa.parse_nodes(a) if isinstance(a, str) else frozenset(a)) == (
            numa.parse_nodes(b) if isinstance(b, str) else frozenset(b))
    except (PtrelocError, TypeError):
        return False


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _exited(pid: int) -> NoSuchProcess:
    return NoSuchProcess(
        f"pid {pid} exited during the migration; its memory is gone, nothing more was done",
        pid=pid,
    )


@dataclass
class _Before:
    """What the migration measured before anything moved (both paths start from it)."""

    snap: proc.ProcessSnapshot
    where: PlacementInfo
    nodes: array[int]  # node per snapshot page
    fraction: RemoteFraction
    tables: dict[str, dict[str, int]]
    kernel_tables: dict[str, dict[str, int]] | None
    scratch: int | None  # --in-place: the scratch virtual node of the round trip


class _Clock:
    """The ``timings_s`` of one migration: a lap per step, then the total."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.t_start = self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = round(now - self._t, 6)
        self._t = now

    def total(self) -> dict[str, float]:
        self.timings["total"] = round(time.perf_counter() - self.t_start, 6)
        return self.timings


def _run(
    request: MigrationRequest,
    dry_run: bool,
    strategy: str,
    batch: int,
    table_pool_frames: int | None,
    progress: ProgressCallback | None,
    clock: _Clock,
    *,
    move_tables: bool = False,
    tables_only: bool = False,
    force: bool = False,
    retries: int = retry_mod.DEFAULT_RETRIES,
    retry_delay_s: float = retry_mod.DEFAULT_RETRY_DELAY_S,
) -> MigrationReport:
    """Snapshot and mirror the process, measure, then either predict (:func:`_stat`, the dry
    run) or move (:func:`_move`) - as the kernel's kernel_move_pages separates do_pages_stat
    from do_pages_move."""
    lap = clock.lap
    # numa_maps read once for the snapshot's per-node counts and the policies (the kernel walks
    # every page to print it); the policies are taken before anything moves (migrate_pages
    # changes none of them), their VMA ends from the snapshot's maps
    numa_text = numa.read_numa_maps(request.pid)
    snap = proc.snapshot(request.pid, numa_maps_text=numa_text)
    warnings = ([] if tables_only else policy.policy_warnings(
        policy.read_policies(request.pid, numa_text, {v.start: v.end for v in snap.vmas}),
        request.to_nodes))
    lap("snapshot")
    # --in-place: the tables make a round trip through a scratch virtual node (one past the
    # machine's nodes), so each ends in a fresh frame on its own node - the engine leaves a
    # table that is already on its target where it is
    scratch = max(numa.topology().online | request.to_nodes) + 1 if request.in_place else None
    extra = request.to_nodes | ({scratch} if scratch is not None else set())
    m, where = mirror_measured(snap, extra_nodes=extra, progress=progress)
    with m:
        lap("mirror")
        before = _Before(
            snap=snap,
            where=where,
            nodes=array("i", snap.nodes),
            fraction=m.remote_fraction(),
            tables=mirror_tables_json(m.tables()),
            kernel_tables=(placement_tables_json(where.walk.tables_per_node())
                           if where.walk else None),
            scratch=scratch,
        )
        lap("measure_before")
        settings = (strategy, batch, table_pool_frames)
        if dry_run:
            report = _stat(request, m, before, settings, clock, tables_only=tables_only)
        else:
            report = _move(request, m, before, settings, clock, move_tables=move_tables,
                           tables_only=tables_only, force=force,
                           retry=(retries, retry_delay_s))
        report.policy_warnings = warnings
        return report


def _report(
    request: MigrationRequest,
    m: Mirror,
    before: _Before,
    settings: tuple[str, int, int | None],
    clock: _Clock,
    *,
    dry_run: bool,
    data: DataReport,
    legs: list[RelocationReport],
    fractions: RemoteFractions,
    checks: dict[str, bool | None],
    kernel: KernelTablesReport,
) -> MigrationReport:
    """The one place a MigrationReport is put together (both paths end here)."""
    strategy, batch, table_pool_frames = settings
    return MigrationReport(
        request=request,
        dry_run=dry_run,
        strategy=strategy,
        batch=batch,
        table_pool_frames=table_pool_frames,
        geometry=m.geometry.name,
        virtual_nodes=m.arena.virtual_nodes,
        data=data,
        tables=TablesReport(before.tables, mirror_tables_json(m.tables()),
                            [lv.name for lv in m.geometry.levels], legs),
        remote_table_fraction=fractions,
        checks=checks,
        placement=before.where,
        kernel_tables=kernel,
        thp=m.thp.to_json(),
        timings_s=clock.total(),
        page_size=before.snap.page_size,
    )


def _stat(
    request: MigrationRequest,
    m: Mirror,
    before: _Before,
    settings: tuple[str, int, int | None],
    clock: _Clock,
    *,
    tables_only: bool,
) -> MigrationReport:
    """The dry run: predict where migrate_pages would put each page (the kernel's remap of
    source to target nodes; with --tables-only the data stays) and what the tables' remote
    fraction would be; move nothing, verify nothing."""
    after = (before.nodes if tables_only
             else _predicted(before.nodes, remap_nodes(request.from_nodes, request.to_nodes)))
    predicted = m.remote_fraction(after)
    data = DataReport(
        before=pages_per_node(before.nodes), after=pages_per_node(after), not_migrated=0,
        kernel_not_migrated=None, unmovable=len(special_pages(before.snap)),
        numa_maps_before=dict(before.snap.numa_maps),
        numa_maps_after=dict(before.snap.numa_maps),
    )
    return _report(
        request, m, before, settings, clock, dry_run=True, data=data, legs=[],
        fractions=RemoteFractions(before.fraction, predicted, predicted),
        checks={} if tables_only else dict.fromkeys(_CHECKS),
        kernel=KernelTablesReport(before.kernel_tables, before.kernel_tables),
    )


#: the mirror's verification checks (None in a dry run: not run)
_CHECKS = ("translations_unchanged", "tables_on_target", "data_on_target")


def _move(
    request: MigrationRequest,
    m: Mirror,
    before: _Before,
    settings: tuple[str, int, int | None],
    clock: _Clock,
    *,
    move_tables: bool,
    tables_only: bool,
    force: bool,
    retry: tuple[int, float] = (retry_mod.DEFAULT_RETRIES, retry_mod.DEFAULT_RETRY_DELAY_S),
) -> MigrationReport:
    """The real run: migrate_pages, retry what it left on a source node
    (:func:`ptreloc.migrate_retry.retry_pages`), re-query, relocate the mirror, move the
    kernel's own tables (--kernel-tables), verify."""
    strategy, batch, table_pool_frames = settings
    pid, snap, where, lap = request.pid, before.snap, before.where, clock.lap
    kernel = KernelTablesReport(before.kernel_tables)
    kernel_left: int | None = None
    legs: list[RelocationReport] = []
    special = special_pages(snap)
    retried: _Retried | None = None
    if tables_only:
        after_nodes = before.nodes
        numa_after = dict(snap.numa_maps)
    else:
        kernel_left = numa.migrate_pages(pid, request.from_nodes, request.to_nodes)
        lap("migrate_pages")
        after_nodes = requery_nodes(snap)
        lap("requery")
        retried = _retry_stuck(request, snap, before.nodes, after_nodes, special, *retry)
        lap("retry")
        numa_after = numa.numa_maps_node_pages(pid)
        if where.walk is not None:
            # what migrate_pages did to the real tables (nothing: it moves data only)
            try:
                kernel.after = placement_tables_json(
                    kernel_tables.walk_process(pid).tables_per_node())
            except kernel_tables.ProcessGone:
                raise
            except PtrelocError as err:
                where.contradictions.append(f"the kernel walk after migrate_pages failed: {err}")
            lap("kernel_walk")
        m.update_data_nodes(after_nodes)
    fraction_data_only = m.remote_fraction(after_nodes)
    if not tables_only:
        legs = _relocate_tables(m, request, after_nodes, before.scratch, strategy, batch,
                                table_pool_frames)
        lap("relocate")
    moved: Any = None
    if move_tables:
        from ptreloc import kernel_move

        moved = kernel_move.move_kernel_tables(pid, next(iter(request.to_nodes)), force=force)
        lap("kernel_tables")
    fraction_after = m.remote_fraction(after_nodes) if not tables_only else fraction_data_only
    # pages that were on a source node and are on a source node still (and not on a target);
    # kernel pages mapped into the process ([vdso], [vvar]) cannot move and are counted apart
    # as "unmovable"
    per_before, per_after, stuck = count_pairs(
        before.nodes, after_nodes, request.from_nodes - request.to_nodes, special)
    checks: dict[str, bool | None] = {}
    if not tables_only:
        # (with --tables-only nothing of the mirror or the data was meant to move: only the
        # real tables' checks)
        checks["translations_unchanged"] = m.check_translations() == 0
        checks["tables_on_target"] = _tables_on_target(m, request, before.scratch)
        checks["data_on_target"] = stuck == 0
        lap("verify")
    kernel_fraction = None
    if moved is not None:
        for c in moved.checks:
            checks[f"kernel_{c.name}"] = c.ok
        kernel.move = moved.to_dict()
        if moved.after is not None:
            kernel.after = moved.after
        kernel_fraction = _kernel_fraction(pid)
    data = DataReport(
        before=per_before, after=per_after,
        not_migrated=stuck, kernel_not_migrated=kernel_left, unmovable=len(special),
        numa_maps_before=dict(snap.numa_maps), numa_maps_after=numa_after,
    )
    if retried is not None:
        data.retry = retried.report
        data.not_migrated_reasons = dict(sorted(retried.reasons.items()))
        data.not_migrated_by_class = {
            c: dict(sorted(r.items())) for c, r in sorted(retried.by_class.items())}
    return _report(
        request, m, before, settings, clock, dry_run=False, data=data, legs=legs,
        fractions=RemoteFractions(before.fraction, fraction_data_only, fraction_after,
                                  kernel_fraction),
        checks=checks, kernel=kernel,
    )


@dataclass
class _Retried:
    """What :func:`_retry_stuck` found: the report, reason -> pages, class -> reason -> pages
    (of the pages still on a source node at the end)."""

    report: retry_mod.RetryReport
    reasons: Counter[str]
    by_class: dict[str, Counter[str]]


def requery_nodes(snap: proc.ProcessSnapshot) -> array[int]:
    """Where each of ``snap.resident`` is now, as a move_pages(2) query says (node, or -errno:
    -ENOENT for a page no longer present ...).  Where frame numbers are visible and the same
    pages are still resident, from a fresh pagemap read and each frame's node
    (:func:`ptreloc.frames.page_nodes`: move_pages only for the pages the frame does not
    tell) - a fraction of the query's cost; move_pages for every page otherwise."""
    if not snap.resident:
        return array("i")
    if snap.frames_visible:
        scan = proc.scan_pagemap(snap.pid, snap.vmas)
        # the same pages (one compare in C): the frames answer for exactly these; a page gone
        # or new would need its -ENOENT or its alignment, which move_pages gives
        if scan.resident == snap.resident and scan.frames_visible:
            return frames_mod.page_nodes(snap.pid, snap.vmas, scan).nodes
    return array("i", numa.move_pages(snap.pid, snap.resident))


def _retry_stuck(
    request: MigrationRequest,
    snap: proc.ProcessSnapshot,
    before: array[int],
    after: array[int],
    special: frozenset[int],
    retries: int,
    delay_s: float,
) -> _Retried:
    """Retry the pages migrate_pages left on a source node (on a source before, on a source
    still, not a kernel special page), each to where migrate_pages would have sent it; update
    ``after`` with where they are at the end."""
    src, dst = request.from_nodes, request.to_nodes
    remap = remap_nodes(src, dst)
    # from a node to itself (in place) nothing was meant to move
    stuck = [] if request.in_place else select_stuck(before, after, src - dst, special)
    where, reasons, report = retry_mod.retry_pages(
        request.pid, [snap.resident[k] for k in stuck], [remap[before[k]] for k in stuck],
        src - dst, retries=retries, delay_s=delay_s)
    total: Counter[str] = Counter()
    by_class: dict[str, Counter[str]] = {}
    vmas = sorted(snap.vmas, key=lambda v: v.start)
    starts = [v.start for v in vmas]
    for j, k in enumerate(stuck):
        after[k] = where[j]
        if not (where[j] in src and where[j] not in dst):
            continue
        addr = snap.resident[k]
        i = bisect_right(starts, addr) - 1
        vma = vmas[i] if i >= 0 and addr < vmas[i].end else None
        total[reasons[j]] += 1
        by_class.setdefault(retry_mod.page_class(vma), Counter())[reasons[j]] += 1
    return _Retried(report, total, by_class)


def _relocate_tables(
    m: Mirror,
    request: MigrationRequest,
    after_nodes: array[int],
    scratch: int | None,
    strategy: str,
    batch: int,
    table_pool_frames: int | None,
) -> list[RelocationReport]:
    """Relocate the mirror's tables after the data: to the one target, or each to the target
    holding most of its data; in place, out to the scratch node and back.  The engine's
    report of each leg, as it came."""
    if len(request.to_nodes) == 1:
        target: int | Callable[..., int] = next(iter(request.to_nodes))
    else:
        target = _majority_chooser(m, after_nodes, request.to_nodes)
    sources = request.from_nodes
    if scratch is not None:
        # in place the tables already fill the target's pool, so the cap bounds the fresh
        # frames instead: the scratch node's pool, which every relocated table passes
        # through.  What does not fit there is never copied and stays where it is, on its
        # own node; what went out all comes back.
        if table_pool_frames is not None:
            size = m.arena.pool(scratch)["nframes"]
            m.arena.set_capacity(scratch, min(table_pool_frames, size))
        out = relocate_mirror(m, sources, scratch, strategy=strategy, batch=batch)
        if table_pool_frames is not None:
            m.arena.set_capacity(scratch, m.arena.pool(scratch)["nframes"])
        back = relocate_mirror(m, frozenset({scratch}), target, strategy=strategy, batch=batch)
        return [out, back]
    if table_pool_frames is not None:
        for node in request.to_nodes:  # a pool cannot be capped above its size
            size = m.arena.pool(node)["nframes"]
            m.arena.set_capacity(node, min(table_pool_frames, size))
    if isinstance(target, int):
        sources = sources - {target}  # tables already on the target stay
    return [relocate_mirror(m, sources, target, strategy=strategy, batch=batch)]


def _majority_chooser(m: Mirror, nodes: array[int], targets: frozenset[int]) -> Callable[..., int]:
    """For several target nodes: each table goes to the target holding most of the pages it
    maps (the root: most of all pages; ties: the lowest node) - ptreloc.mirror.infer_placement
    with only the pages on a target voting, file pages included."""
    placement = infer_placement(m.snapshot, m.geometry, nodes, allowed=targets, follow_data=True)

    def choose(frame: Any) -> int:
        # the engine's chooser hook gets a ptreloc.relocate.TableFrame
        return placement.node_of(frame.level, frame.base_va)

    return choose


def _tables_on_target(m: Mirror, request: MigrationRequest, scratch: int | None) -> bool | None:
    """Every mirrored table frame that was on a source node is on a target node now (and none
    was left on the in-place round trip's scratch node) - by the arena's metadata and, for real
    nodes, by the kernel (move_pages query of the frame)."""
    frames = m.frames()
    real = {n.node for n in m.arena.nodes if n.real}
    sources = request.from_nodes - request.to_nodes
    if scratch is not None:
        sources |= {scratch}
    meta_ok = all(m.frame_node(f) not in sources for f in frames)
    to_check = [f for f in frames if m.frame_node(f) in real]
    kernel = m.frame_real_nodes(to_check)
    kernel_ok = all(kernel[f] == m.frame_node(f) for f in to_check)
    return meta_ok and kernel_ok


def _kernel_fraction(pid: int) -> dict[str, Any] | None:
    """remote_table_fraction.kernel_after: walked, of the process's resident pages, the
    fraction whose translation reads a table on another node than the page's frame (any
    level; the pgd never moves, so after a move it is the per-level figures that tell)."""
    try:
        walk = kernel_tables.walk_process(pid)
    except PtrelocError:
        return None
    return kernel_remote_fraction(walk)


def kernel_remote_fraction(walk: kernel_tables.KernelTables) -> dict[str, Any]:
    """Of the leaves of ``walk`` (4 KiB pages: a huge leaf counts its pages) whose frame's node
    is known, the fraction whose walk from the root reads a table frame on another node than
    the leaf's frame ("fraction"), and per level the fraction whose table at that level is
    remote ("by_level")."""
    levels = kernel_tables.LEVELS_5 if walk.paging_levels == 5 else kernel_tables.LEVELS_4
    names = [name for name, _ in levels]
    spans = {name: 1 << (shift + 9) for name, shift in levels}
    by_key = {(t.level, t.start): t for t in walk.tables}
    node_of = walk.node_map.node_of
    total = remote = 0
    per_level = dict.fromkeys(names, 0)
    for t in walk.tables:
        if not len(t.leaf_pfn):
            continue
        path: dict[str, int | None] = {}
        for name in names[: names.index(t.level) + 1]:
            start = t.start & ~(spans[name] - 1) if name != names[0] else None
            anc = (by_key.get((name, start)) if start is not None
                   else next((x for x in walk.tables if x.level == name), None))
            path[name] = anc.node if anc is not None else None
        pages = t.leaf_size >> 12
        for pfn in t.leaf_pfn:
            node = node_of(pfn)
            if node is None:
                continue
            total += pages
            far = [name for name, n in path.items() if n is not None and n != node]
            if far:
                remote += pages
            for name in far:
                per_level[name] += pages
    return {
        "fraction": round(remote / total, 6) if total else 0.0,
        "by_level": {name: round(v / total, 6) if total else 0.0 for name, v in per_level.items()},
        "pages": total,
    }
