"""Where a process's page tables are: measured where the machine allows it, inferred where not.

Every placement that ``show``, ``migrate`` and ``watch`` report names its source:

* ``kernel`` - the process's own tables were walked through /proc/kcore
  (:mod:`ptreloc.kernel_tables`).  The mirror then puts each of its tables on the node of the
  real table at the same level covering the same range, and the root on the pgd's node, so the
  mirror's ``tables`` and ``remote_table_fraction`` are measured figures.
* ``cgroup`` - the walk is not possible, but the process is alone in its cgroup v2 group and the
  group's ``memory.numa_stat`` has a ``pagetables`` line: per-node table *bytes* are measured
  (totals, not per table), and the per-table placement the mirror shows is still the rule's.
* ``inferred`` - neither: the mirror's rule (:func:`ptreloc.mirror.infer_placement`) decides,
  and ``reason`` says why nothing was measured.

Where the placement is inferred, the rule is checked against what the kernel does count: a node
whose ``PageTables`` (all processes' tables there, /sys/devices/system/node/nodeN/meminfo) is
smaller than what the rule puts on that node for this process alone cannot be right, and each
such node gives one line in ``contradictions``.  That is how the classic case shows itself
without kcore: data moved by migratepages, tables left behind, and the rule (which assumes that
tables follow data) claiming megabytes of tables on a node that holds almost none.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ptreloc import kernel_tables as kt
from ptreloc import numa
from ptreloc.core import Geometry
from ptreloc.errors import NoSuchProcess, PtrelocError

__all__ = [
    "PlacementInfo",
    "measure",
    "kernel_table_placement",
    "cgroup_pagetables",
    "node_pagetables_bytes",
    "contradictions",
    "tables_json",
    "mirror_measured",
]

CGROUP_ROOT = Path("/sys/fs/cgroup")
MIB = 1 << 20


@dataclass
class PlacementInfo:
    """Where the reported table placement came from (JSON ``placement``)."""

    source: str  # "kernel", "cgroup" or "inferred"
    reason: str | None = None  # why not "kernel"
    walk: kt.KernelTables | None = field(default=None, repr=False)
    cgroup_bytes: dict[int, int] | None = None  # node -> page-table bytes (source "cgroup")
    contradictions: list[str] = field(default_factory=list)

    @property
    def measured(self) -> bool:
        return self.source == "kernel"

    def label(self) -> str:
        """For the human output, next to the fraction: "measured" or "inferred (why)"."""
        if self.source == "kernel":
            return "measured (kernel walk)"
        if self.source == "cgroup":
            return ("per-table placement inferred; node totals measured by the cgroup "
                    f"({self.reason})")
        return f"inferred ({self.reason})"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source}
        if self.reason is not None:
            out["reason"] = self.reason
        if self.walk is not None:
            w = self.walk
            out["kernel"] = {
                "tables": tables_json(w.tables_per_node()),
                "paging_levels": w.paging_levels,
                "pgd_pfn": w.pgd_pfn,
                "pti": w.pti,
                "changed_under_walk": w.changed_under_walk,
                "walk_s": round(w.walk_seconds, 6),
            }
        if self.cgroup_bytes is not None:
            out["cgroup_pagetables_bytes"] = {
                str(n): b for n, b in sorted(self.cgroup_bytes.items())}
        out["contradictions"] = list(self.contradictions)
        return out


def tables_json(per_node: dict[int | None, dict[str, int]]) -> dict[str, dict[str, int]]:
    """{node: {level: frames}} with string keys (JSON); frames of unknown node under "?"."""
    return {("?" if n is None else str(n)): dict(levels)
            for n, levels in sorted(per_node.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))}


# ---- the kernel walk -> the mirror's placement -----------------------------------------------


def kernel_table_placement(walk: kt.KernelTables, geo: Geometry) -> Any:
    """A :class:`ptreloc.mirror.TablePlacement` that puts every mirrored table where the walk
    found the real table at the same level and range (the root: the pgd's node).

    Raises PtrelocError when the walk's paging mode is not the mirror geometry's (a 4-level
    mirror of a 5-level kernel would pair tables that cover different ranges)."""
    from ptreloc.mirror import TablePlacement

    if walk.paging_levels != geo.nlevels:
        raise PtrelocError(
            f"the kernel runs {walk.paging_levels}-level paging and the mirror uses "
            f"{geo.name} ({geo.nlevels} levels)"
        )
    top = geo.levels[-1].name
    root = next((t.node for t in walk.tables if t.level == top), None)
    if root is None:
        raise PtrelocError("the kernel walk found no root table (pgd) on a known node")
    levels: list[dict[int, int]] = [{} for _ in range(geo.nlevels - 1)]
    for t in walk.tables:
        if t.level == top or t.node is None:
            continue
        index = geo.level_index(t.level)
        lv = geo.levels[index]
        levels[index][t.start >> (lv.shift + lv.bits)] = t.node
    return TablePlacement(root, "kernel", tuple(levels), geo)


# ---- the cgroup's per-node totals ------------------------------------------------------------


def cgroup_pagetables(pid: int, root: Path = CGROUP_ROOT) -> tuple[dict[int, int] | None, str]:
    """Per-node page-table bytes of ``pid``'s cgroup v2 group when the process is alone in it
    (memory.numa_stat ``pagetables N0=... N1=...``), with why not otherwise."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError as err:
        raise NoSuchProcess(f"no process with pid {pid}") from err
    path = next((ln[3:] for ln in lines if ln.startswith("0::")), None)
    if path is None:
        return None, "the process is in no cgroup v2 group"
    group = root / path.lstrip("/")
    stat = group / "memory.numa_stat"
    if not stat.exists():
        return None, f"no {stat} (cgroup v2 with the memory controller is not mounted there)"
    try:
        procs = [int(x) for x in (group / "cgroup.procs").read_text().split()]
        text = stat.read_text()
    except OSError as err:
        return None, f"{group}: {err.strerror}"
    if procs != [pid]:
        return None, f"its cgroup {path} holds {len(procs)} processes, not only this one"
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if name == "pagetables":
            out = {}
            for item in rest.split():
                node, _, value = item.partition("=")
                out[int(node[1:])] = int(value)
            return out, f"the process is alone in cgroup {path}"
    return None, f"{stat} has no pagetables line"


# ---- contradictions ----------------------------------------------------------------------------


def node_pagetables_bytes() -> dict[int, int]:
    """Each online node's ``PageTables`` (bytes): every process's tables there, as the kernel
    counts (numa.node_page_tables_kb: /sys/devices/system/node/nodeN/meminfo)."""
    out = {}
    for node in sorted(numa.topology().online):
        try:
            kb, _ = numa.node_page_tables_kb(node)
        except PtrelocError:
            continue
        if kb is not None:
            out[node] = kb * 1024
    return out


def contradictions(
    tables: dict[int, dict[str, int]],
    geo: Geometry,
    node_bytes: dict[int, int] | None = None,
    *,
    virtual: frozenset[int] = frozenset(),
) -> list[str]:
    """Lines naming each node where the rule's tables for this process alone exceed what the
    kernel counts there for every process (``tables``: node -> level name -> frames).  Only the
    levels the kernel counts in PageTables are compared (PTE and PMD tables on Linux 6.1: the
    ones with a page-table constructor, ptreloc.kernel_tables), so the check never fires on a
    correct rule."""
    node_bytes = node_pagetables_bytes() if node_bytes is None else node_bytes
    counted = ("pte", "pmd")
    out = []
    for node, levels in sorted(tables.items()):
        if node in virtual or node not in node_bytes:
            continue
        claimed = sum(levels.get(name, 0) for name in counted) * geo.frame_bytes
        have = node_bytes[node]
        if claimed > have:
            out.append(
                f"the rule puts {claimed / MIB:.2f} MiB of tables on node {node}; the kernel "
                f"counts {have / MIB:.2f} MiB of page tables there in all"
            )
    return out


# ---- the decision ----------------------------------------------------------------------------


def measure(pid: int, geo: Geometry) -> tuple[Any, PlacementInfo]:
    """(TablePlacement for the mirror or None to infer it, where the placement comes from).

    ``PTRELOC_PLACEMENT=inferred`` in the environment skips the kernel walk (to compare the
    rule with the measurement, or where reading kcore is unwanted)."""
    if os.environ.get("PTRELOC_PLACEMENT", "").strip() == "inferred":
        reason = "PTRELOC_PLACEMENT=inferred is set"
    else:
        ok, reason = kt.availability()
        if ok:
            try:
                walk = kt.walk_process(pid)
                return kernel_table_placement(walk, geo), PlacementInfo("kernel", walk=walk)
            except kt.ProcessGone as err:
                raise NoSuchProcess(str(err)) from err
            except kt.KernelThread:
                raise
            except PtrelocError as err:
                reason = f"the kernel walk failed: {err}"
    try:
        totals, why = cgroup_pagetables(pid)
    except NoSuchProcess:
        raise
    if totals is not None:
        return None, PlacementInfo("cgroup", reason=f"{reason}; {why}", cgroup_bytes=totals)
    return None, PlacementInfo("inferred", reason=reason)


def mirror_measured(snap: Any, **kwargs: Any) -> tuple[Any, PlacementInfo]:
    """Mirror ``snap`` (:func:`ptreloc.mirror.mirror`, same keyword arguments) with its tables
    where the kernel has them when that can be measured, by the rule otherwise; with the
    contradictions of an inferred placement filled in.  Returns (Mirror, PlacementInfo)."""
    from ptreloc.core import geometry
    from ptreloc.mirror import host_geometry, mirror

    name = kwargs.pop("geometry_name", None) or host_geometry(snap)
    placement, info = measure(snap.pid, geometry(name))
    m = mirror(snap, geometry_name=name, placement=placement, **kwargs)
    if not info.measured:
        try:
            info.contradictions = contradictions(
                m.tables(), m.geometry, info.cgroup_bytes,
                virtual=frozenset(m.arena.virtual_nodes))
        except BaseException:
            m.close()
            raise
    return m, info  # the caller owns m: ``with m:``
