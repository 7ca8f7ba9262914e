"""Mirror a live process's address space into emulated page tables that live on real nodes.

``mirror(snapshot)`` builds an :class:`~ptreloc.core.AddressSpace` in the host's paging format
that maps exactly the process's resident pages, with every table frame placed on the node where
Linux would most likely have allocated the process's own table.

Placement rule (documented in the README, "How a process is mirrored")
----------------------------------------------------------------------
Where Linux put a process's page tables is not visible from user space, so it is inferred.
What Linux does: the root (pgd; with 4-level paging the p4d is folded into it) is allocated at
exec (``mm_alloc`` -> ``pgd_alloc``) by the exec'ing task, under its memory policy, at the same
time as the new stack; every other table is allocated at the first fault in its range
(``__pte_alloc`` and friends), by default on the faulting CPU's node, under
``numactl --membind`` on the bound node - the same policy and node that place the private
anonymous pages the process faults in.  File pages tell nothing about the process: the page
cache may have been filled by another process on another node.  So:

* the **root** goes on the node holding most of the process's resident ``[stack]`` pages
  (created by the same exec); with none known, most of its resident anonymous pages; then most
  of all its resident pages; then the node of the CPU it last ran on; then node 0;
* **every other table** goes on the node holding most of the resident *anonymous* pages it
  maps (anonymous VMAs: no file, ``[heap]``, ``[stack]``, ``[anon:...]``); a table that maps
  none whose node is known (only file pages, say) goes with the root.  Ties: the lowest node.

Pages whose node the kernel could not report (they moved or went away between pagemap and the
move_pages query) and kernel special mappings ([vdso] ...) do not vote.

Building is top down once the placement is known: every upper-level table the rule places is
created first, on its node (``ptr_ensure_table``), then every resident page goes in with one call
into the C core (``ptr_map_pages``: per lowest-level table one walk - creating it on its node -
one lock and plain stores), so no table is ever created in the wrong place and moved.  The votes
are counted in C too (``ptr_span_votes``: per lowest-level table span, the voting pages per
node); only the few thousand spans are looked at in Python.  Physical addresses are the virtual
ones (modulo the format's physical limit): the mirror exists to say *where tables are*, and
identity translations make "translations unchanged" checkable per page.

Transparent huge pages
----------------------
A 2 MiB block that Linux maps with one PMD entry (a THP) has no PTE table; mirroring it as 512
base pages would invent one.  :func:`thp_blocks` finds such blocks for real: /proc/PID/smaps
gives, per VMA, how much is PMD-mapped (``AnonHugePages``, ``ShmemPmdMapped``,
``FilePmdMapped``); a candidate is a huge-page-aligned block inside one such VMA with every
page resident.  When we are privileged (pagemap shows frame numbers and /proc/kpageflags is
readable) a candidate must also be one compound page: its frames contiguous from a head frame
aligned to the huge size whose flags have KPF_COMPOUND_HEAD (bit 15) and KPF_THP (bit 22).
Per VMA at most as many blocks as smaps counts are taken (in address order: unprivileged, which
fully resident blocks are the PMD-mapped ones is a guess).  Each is mirrored as one huge leaf
at the level above the PTEs.

remote_table_fraction
---------------------
Of the resident pages whose data node is known (kernel special mappings such as [vdso] left
out: they are not the process's data and cannot be migrated), the fraction whose translation
walks at least one table frame on a node other than the page's data node (the walk from the
root to the leaf: ``nlevels`` tables for a 4 KiB page, fewer under a huge leaf).  Per level:
the fraction whose table *at that level* is on another node.  0.0 means every translation walks
only node-local tables; with no placed page it is 0.0 with ``pages`` 0.
"""

from __future__ import annotations

import dataclasses
import functools
import platform
from array import array
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ptreloc import frames, numa, proc
from ptreloc.core import AddressSpace, Arena, Geometry, RemoteTables, geometry
from ptreloc.errors import NotMapped, PtrelocError, UsageError
from ptreloc.proc import ProcessSnapshot, Vma
from ptreloc.runs import PageRuns

__all__ = [
    "Mirror",
    "ThpBlocks",
    "TablePlacement",
    "infer_placement",
    "smaps_pmd_mapped",
    "thp_blocks",
    "RemoteFraction",
    "host_geometry",
    "mirror",
    "ProgressCallback",
    "SPECIAL_MAPPINGS",
    "special_pages",
]

#: mappings of kernel pages into every process ([vdso] text, ...): resident, walked, but not the
#: process's data - they sit wherever the kernel put them and migrate_pages cannot move them, so
#: remote_table_fraction leaves them out
SPECIAL_MAPPINGS = frozenset({"[vdso]", "[vvar]", "[vvar_vclock]", "[vsyscall]", "[uprobes]"})


def special_pages(snap: ProcessSnapshot) -> frozenset[int]:
    """Indexes (into ``snap.resident``) of the pages in kernel special mappings."""
    out: set[int] = set()
    for vma, (lo, hi) in zip(snap.vmas, snap.vma_pages(), strict=True):
        if vma.path in SPECIAL_MAPPINGS:
            out.update(range(lo, hi))
    return frozenset(out)


def _frame_nodes(pid: int, vmas: list[Vma], scan: proc.PageScan) -> array[int] | None:
    """The node of every page of ``scan`` from its frame (``frames.page_nodes``), or None when
    the scan saw no frames (then only move_pages can tell)."""
    if not (scan.frames_visible and scan.blocks_known):
        return None
    return frames.page_nodes(pid, vmas, scan).nodes


def _add_remote(a: RemoteTables, b: RemoteTables, sign: int = 1) -> RemoteTables:
    """``a`` + ``b`` (or - with ``sign`` -1), field by field."""
    return RemoteTables(a.pages + sign * b.pages, a.remote_pages + sign * b.remote_pages,
                        {k: v + sign * b.by_level.get(k, 0) for k, v in a.by_level.items()},
                        a.unmapped + sign * b.unmapped)


#: progress(done_pages, total_pages) while mapping
ProgressCallback = Callable[[int, int], None]

_LA57_VA = 1 << 47  # user addresses at or above this need 5-level paging


@functools.cache
def _cpu_flags() -> frozenset[str]:
    """/proc/cpuinfo's flags (read once: they do not change while we run)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def host_geometry(snapshot: ProcessSnapshot | None = None) -> str:
    """The paging format the kernel uses for processes on this machine.

    x86-64: 5-level when /proc/cpuinfo lists ``la57`` (the kernel clears that flag when it runs
    with 4-level paging, so the flag means 5-level tables for every process) or when the process
    has a mapping above 47 bits (which only 5-level paging can give); 4-level otherwise.
    arm64 hosts are mirrored in the 4 KiB-granule 39-bit format when every mapping fits.
    """
    machine = platform.machine()
    high = snapshot is not None and any(
        v.end > _LA57_VA for v in snapshot.vmas if v.path != "[vsyscall]"
    )
    if machine in ("x86_64", "amd64"):
        return "x86_64_5l" if high or "la57" in _cpu_flags() else "x86_64_4l"
    if machine in ("aarch64", "arm64"):
        if snapshot is not None and any(v.end > 1 << 39 for v in snapshot.vmas):
            raise UsageError(
                "this arm64 process maps addresses above 39 bits; pass geometry= explicitly"
            )
        return "arm64_4k_39"
    raise UsageError(f"no paging format for {machine}: pass geometry= explicitly")


@dataclass(frozen=True)
class RemoteFraction:
    """How many translations walk a table on another node than their data."""

    pages: int  # resident pages with a known data node
    remote_pages: int  # of which walk at least one remote table
    by_level: dict[str, int]  # level name -> pages whose table at that level is remote

    @property
    def fraction(self) -> float:
        return self.remote_pages / self.pages if self.pages else 0.0

    def level_fractions(self) -> dict[str, float]:
        return {k: (v / self.pages if self.pages else 0.0) for k, v in self.by_level.items()}

    def to_json(self) -> dict[str, Any]:
        return {
            "fraction": round(self.fraction, 6),
            "pages": self.pages,
            "remote_pages": self.remote_pages,
            "by_level": {k: round(v, 6) for k, v in self.level_fractions().items()},
        }


@dataclass
class Mirror:
    """A process's resident pages mapped in an emulated address space.

    ``data_nodes`` is parallel to ``snapshot.resident``: the data node of each page (the move_pages
    status, updated by :meth:`update_data_nodes` after the real data moved).
    """

    snapshot: ProcessSnapshot
    arena: Arena
    mm: AddressSpace
    geometry: Geometry
    data_nodes: array[int]  # 'i', per resident page: node >= 0 or -errno
    runs: int  # map calls made (runs of contiguous pages with one placement node)
    thp: ThpBlocks = field(default_factory=lambda: ThpBlocks((), 0, "none", 0))
    placement: TablePlacement | None = None  # the rule's answer for the snapshot mirrored first
    elapsed_s: dict[str, float] = field(default_factory=dict)
    _frame_nodes: dict[int, int] = field(default_factory=dict, repr=False)
    # last known data node of pages that went away (refresh): a page is briefly not present
    # while the kernel migrates it, and must come back with its old node so the move is seen
    _gone_nodes: dict[int, int] = field(default_factory=dict, repr=False)
    # where every page of ``snapshot.resident`` is now, from the frames the last refresh's
    # pagemap scan read (None: frames hidden, or no refresh yet) - what a watch compares with
    _current_nodes: array[int] | None = field(default=None, repr=False)

    # ---- paging arithmetic -------------------------------------------------------------
    @property
    def block_shift(self) -> int:
        """log2 of the VA span of one lowest-level table (2 MiB on x86-64)."""
        lv = self.geometry.levels[0]
        return lv.shift + lv.bits

    def phys_of(self, va: int) -> int:
        return va % self.geometry.phys_limit

    # ---- walking the mirrored tree (the core's own walk: any paging format) ----------------
    def table_path(self, va: int) -> list[int]:
        """Table frames the walk for ``va`` reads, indexed by level (root last); levels below
        a huge leaf are absent (the list is shorter by those levels at its start: see
        :meth:`walk_levels`)."""
        return [frame for _level, frame in self.walk_levels(va)]

    def walk_levels(self, va: int) -> list[tuple[int, int]]:
        """(level, frame) pairs of the walk for ``va`` from the leaf's table up to the root."""
        try:
            path = self.mm.walk_path(va)
        except NotMapped as err:
            raise PtrelocError(f"mirror has no translation for {va:#x}") from err
        return [(level, frame) for level, frame in enumerate(path) if frame is not None]

    def frame_node(self, frame: int) -> int:
        node = self._frame_nodes.get(frame)
        if node is None:
            node = self.arena.frame(frame)["node"]
            self._frame_nodes[frame] = node
        return node

    def _blocks(self) -> Iterable[tuple[int, int, int]]:
        """(first index, end index, first va) of the resident pages per lowest-level table."""
        resident = self.snapshot.resident
        shift = self.block_shift
        i, n = 0, len(resident)
        while i < n:
            va = resident[i]
            j = resident.bisect(((va >> shift) + 1) << shift)
            yield i, j, va
            i = j

    # ---- what the mirror says ----------------------------------------------------------
    def tables(self) -> dict[int, dict[str, int]]:
        """Table frames reachable from the mirror, per node per level name."""
        return self.mm.tables()

    def frames(self) -> dict[int, int]:
        """Every table frame of the mirror -> its level (a fresh walk of the tree: one walk per
        lowest-level table span, all in one call into the core)."""
        self._frame_nodes.clear()
        firsts = array("Q", (va for _i, _j, va in self._blocks()))
        out: dict[int, int] = {}
        for path in self.mm.walk_paths(firsts):
            for level, frame in enumerate(path):
                if frame is not None:
                    out[frame] = level
        return out

    def remote_fraction(self, data_nodes: array[int] | None = None) -> RemoteFraction:
        """remote_table_fraction for the current tables and ``data_nodes`` (default: the
        mirror's own data nodes): every resident page's walk, in calls into the core of a
        chunk of pages each."""
        nodes = self.data_nodes if data_nodes is None else data_nodes
        if not (isinstance(nodes, array) and nodes.typecode == "i"):
            nodes = array("i", nodes)
        resident = self.snapshot.resident
        counted = RemoteTables(0, 0, {lv.name: 0 for lv in self.geometry.levels}, 0)
        view = memoryview(nodes)
        for lo, hi, vas in resident.chunks():
            counted = _add_remote(counted, self.mm.remote_tables(vas, view[lo:hi]))
        # the special mappings' pages are left out: counted alone and taken off (no copy of
        # the per-page arrays - they are the largest things a mirror holds)
        special = sorted(special_pages(self.snapshot))
        if special:
            out = self.mm.remote_tables(array("Q", (resident[k] for k in special)),
                                        array("i", (nodes[k] for k in special)))
            counted = _add_remote(counted, out, -1)
        if counted.unmapped:
            raise PtrelocError(f"mirror lost the translation of {counted.unmapped} pages")
        return RemoteFraction(counted.pages, counted.remote_pages, counted.by_level)

    def expected_phys(self, vas: array[int] | None = None) -> array[int]:
        """Per page of ``vas`` (default: every resident page, one array of them), the physical
        address its mirrored translation must give."""
        if vas is None:
            vas = self.snapshot.resident.expand()
        limit = self.geometry.phys_limit
        if not vas or vas[-1] < limit:  # ascending: identity for every page
            return vas
        return array("Q", (va % limit for va in vas))

    def check_translations(self) -> int:
        """Resident pages whose mirrored translation is missing or wrong (0 when intact): every
        page's walk, in calls into the core of a chunk of pages each."""
        bad = 0
        for _lo, _hi, vas in self.snapshot.resident.chunks():
            bad += self.mm.check_translations(vas, self.expected_phys(vas))[0]
        return bad

    def frame_real_nodes(self, frames: Iterable[int]) -> dict[int, int]:
        """The real node each frame's memory is on now, per the kernel (move_pages query of
        the frames' addresses in this process); negative statuses are -errno."""
        frames = list(frames)
        if not frames:
            return {}
        statuses = numa.move_pages(0, [self.arena.frame_address(f) for f in frames])
        return dict(zip(frames, statuses, strict=True))

    def refresh(self) -> tuple[int, int]:
        """Follow the process's resident set: re-read /proc/PID/maps and pagemap and, when they
        changed, mirror the pages that became resident (new tables placed by the same rule
        applied to the new pages, with the root's node where it gives none - tables that exist
        stay put; new fully-THP blocks as huge leaves) and unmap the pages that are gone (a huge
        leaf with a page gone is remapped as base pages).  A page that comes back keeps the
        data node it had when it went (so a move is still seen).  The unchanged case costs a
        pagemap read and one array comparison.  Returns (pages added, pages removed);
        ``snapshot`` and ``data_nodes`` then describe the new resident set."""
        snap = self.snapshot
        vmas = proc.read_maps(snap.pid)
        scan = proc.scan_pagemap(snap.pid, vmas)
        resident = scan.resident
        self._current_nodes = None
        if resident == snap.resident:
            self.snapshot = dataclasses.replace(snap, vmas=vmas)
            self._current_nodes = _frame_nodes(snap.pid, vmas, scan)
            return 0, 0
        now = set(resident)
        before = set(snap.resident)
        page = snap.page_size
        gone = [va for va in snap.resident if va not in now]
        # a huge leaf can only be unmapped whole: its block's remaining pages are re-added
        huge = set(self.thp.starts)
        size = self.thp.size
        broken = {va - va % size for va in gone if size and va - va % size in huge}
        for va in gone:
            if not (size and va - va % size in broken):
                self.mm.unmap(va, page)
        for block in broken:
            self.mm.unmap(block, size)
            before.difference_update(range(block, block + size, page))
        added = PageRuns.from_addresses((va for va in resident if va not in before), page)
        added_nodes = array("i", numa.move_pages(snap.pid, added)) if added else array("i")
        old_nodes = dict(zip(snap.resident, self.data_nodes, strict=True))
        for va in gone:
            self._gone_nodes[va] = old_nodes[va]
        new_node = dict(zip(added, added_nodes, strict=True))
        remembered = self._gone_nodes
        nodes = array(
            "i",
            (
                old_nodes[va] if va not in new_node else remembered.pop(va, new_node[va])
                for va in resident
            ),
        )
        fresh = dataclasses.replace(
            snap,
            vmas=vmas,
            resident=resident,
            nodes=nodes,
            frames_visible=scan.frames_visible,
            huge_index=scan.huge_index,
            huge_pfn=scan.huge_pfn,
            huge_shift=scan.huge_shift,
        )
        # blocks that are THP now and whose pages are all unmapped in the mirror: huge leaves
        thp = thp_blocks(fresh, self.geometry)
        still_huge = huge - broken
        add_thp = ThpBlocks(
            tuple(
                blk
                for blk in thp.starts
                if blk not in still_huge
                and all(va in new_node for va in range(blk, blk + thp.size, page))
            ),
            thp.size,
            thp.detected_by,
            thp.pmd_mapped_bytes,
        )
        # new pages' tables by the same rule applied to the new pages (their new tables only:
        # tables that exist stay where they are, as Linux leaves them)
        sub = dataclasses.replace(fresh, resident=added, nodes=added_nodes,
                                  huge_index=array("Q"), huge_pfn=array("Q"))
        placement = infer_placement(
            sub, self.geometry, root=self.frame_node(self.mm.root_frame)
        )
        _build(self.mm, sub.resident, placement, vmas, add_thp)
        self.thp = ThpBlocks(
            tuple(sorted(still_huge | set(add_thp.starts))),
            thp.size or self.thp.size,
            thp.detected_by,
            thp.pmd_mapped_bytes,
        )
        self.snapshot = fresh
        self.data_nodes = nodes
        self._frame_nodes.clear()
        self._current_nodes = _frame_nodes(snap.pid, vmas, scan)
        return len(added) - sum(1 for va in added if va in old_nodes), len(gone)

    def current_nodes(self) -> array[int]:
        """Where each page of ``snapshot.resident`` is now ('i': node or -errno): from the
        frames the last :meth:`refresh` read when it saw the same pages and could see frames
        (``frames.page_nodes``: move_pages only for what a frame does not tell), else a
        move_pages(2) query of every page."""
        resident = self.snapshot.resident
        if self._current_nodes is not None and len(self._current_nodes) == len(resident):
            return self._current_nodes
        return array("i", numa.move_pages(self.snapshot.pid, resident)) if resident \
            else array("i")

    def update_data_nodes(self, nodes: Iterable[int]) -> None:
        self.data_nodes = array("i", nodes)

    def close(self) -> None:
        self.mm.close()
        self.arena.close()

    # ``with mirror(snap) as m:`` closes the emulated tables however the block ends
    def __enter__(self) -> Mirror:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: /proc/PID/smaps fields that count memory mapped by PMD (huge) entries, in kB
_SMAPS_PMD_FIELDS = ("AnonHugePages:", "ShmemPmdMapped:", "FilePmdMapped:")
_KPF_COMPOUND_HEAD = 15  # include/uapi/linux/kernel-page-flags.h


@dataclass(frozen=True)
class ThpBlocks:
    """Huge-page blocks of a snapshot to mirror as huge leaves (see the module doc)."""

    starts: tuple[int, ...]  # block start addresses, ascending
    size: int  # bytes per block (2 MiB on x86-64)
    detected_by: str  # "kpageflags" (frames checked), "smaps" (counts only), or "none"
    pmd_mapped_bytes: int  # what smaps says is PMD-mapped, over all VMAs

    def to_json(self) -> dict[str, Any]:
        return {
            "huge_leaves": len(self.starts),
            "huge_leaf_bytes": self.size,
            "detected_by": self.detected_by,
            "smaps_pmd_mapped_bytes": self.pmd_mapped_bytes,
        }


def smaps_pmd_mapped(pid: int) -> dict[int, int]:
    """VMA start -> bytes PMD-mapped in it (only VMAs with some), from /proc/PID/smaps."""
    out: dict[int, int] = {}
    start = None
    try:
        with open(f"/proc/{pid}/smaps", encoding="utf-8", errors="surrogateescape") as fh:
            for line in fh:
                head = line.split(None, 1)[0]
                if "-" in head and not head.endswith(":"):  # a VMA header: "start-end perms ..."
                    start = int(head.partition("-")[0], 16)
                elif head in _SMAPS_PMD_FIELDS and start is not None:
                    kb = int(line.split()[1])
                    if kb:
                        out[start] = out.get(start, 0) + kb * 1024
    except OSError:
        return {}  # gone or hidden: nothing is known to be huge
    return out


def thp_blocks(snap: ProcessSnapshot, geo: Geometry, *, detect: bool = True) -> ThpBlocks:
    """The blocks of ``snap`` that Linux maps with huge PMD entries (module doc)."""
    huge = geo.levels[1] if geo.nlevels > 1 else None
    if not detect or huge is None or not huge.leaf_ok or geo.page_size != snap.page_size:
        return ThpBlocks((), 0, "none", 0)
    size = huge.entry_span
    if size != 1 << snap.huge_shift:  # the snapshot's scan looked for blocks of another size
        return ThpBlocks((), size, "none", 0)
    resident = snap.resident
    # fully resident aligned blocks (with frames: contiguous from an aligned head), found by
    # the snapshot's pagemap scan
    firsts, heads = snap.huge_index, snap.huge_pfn
    if not firsts:
        return ThpBlocks((), size, "none", 0)
    method = "smaps"
    starts = [resident[lo] for lo in firsts]
    if snap.frames_visible and any(heads):
        flags = frames.kpageflags(heads)
        if flags is not None:  # the head must be a THP's compound head
            method = "kpageflags"
            head_bits = 1 << _KPF_COMPOUND_HEAD | 1 << frames.KPF_THP
            starts = [resident[lo] for lo, pfn in zip(firsts, heads, strict=True)
                      if flags[pfn] & head_bits == head_bits]
            if not starts:
                return ThpBlocks((), size, "none", 0)
    # smaps (a walk of every page by the kernel) only now that there are candidates: a
    # compound page can be PTE-mapped, smaps says how much of each VMA is PMD-mapped
    pmd = smaps_pmd_mapped(snap.pid)
    if not pmd:
        return ThpBlocks((), size, "none", 0)
    taken: Counter[int] = Counter()
    kept = []
    vi = 0
    vmas = snap.vmas
    for b in starts:
        while vi < len(vmas) and vmas[vi].end <= b:
            vi += 1
        if vi == len(vmas):
            break
        vma = vmas[vi]
        room = pmd.get(vma.start, 0) // size - taken[vma.start]
        if vma.start <= b and b + size <= vma.end and room > 0:
            taken[vma.start] += 1
            kept.append(b)
    return ThpBlocks(tuple(kept), size, method, sum(pmd.values()))


def _anonymous(path: str) -> bool:
    """A VMA of private anonymous memory (its pages were allocated by the process's own
    faults, under its own memory policy)."""
    return path in ("", "[heap]", "[stack]") or path.startswith("[anon:")


def _majority(votes: Counter[int]) -> int | None:
    """The node with most votes (ties: the lowest node); None with no vote."""
    return _top(votes) if votes else None


def _core() -> Any:
    from ptreloc._native import core as native_core

    return native_core("relo")


def _top(votes: Counter[int]) -> int:
    """The node with most votes (ties: the lowest node) of a count with at least one vote."""
    return min(votes, key=lambda n: (-votes[n], n))


@dataclass(frozen=True)
class TablePlacement:
    """Where the placement rule (module doc) puts each table of a snapshot."""

    root: int
    root_basis: str  # what decided the root: "stack", "anonymous", "resident", "cpu", "default"
    # per level below the root (index = level): table span index -> node, for the tables that
    # map at least one voting page; any other table goes with the root
    levels: tuple[dict[int, int], ...]
    geometry: Geometry

    def node_of(self, level: int, va: int) -> int:
        """The node of the table at ``level`` (0 = lowest) whose range holds ``va``."""
        if level >= len(self.levels):
            return self.root
        lv = self.geometry.levels[level]
        return self.levels[level].get(va >> (lv.shift + lv.bits), self.root)

    def to_json(self) -> dict[str, Any]:
        return {"root_node": self.root, "root_basis": self.root_basis}


def infer_placement(
    snap: ProcessSnapshot,
    geo: Geometry,
    nodes: array[int] | None = None,
    *,
    allowed: frozenset[int] | None = None,
    root: int | None = None,
    follow_data: bool = False,
) -> TablePlacement:
    """Apply the placement rule (module doc) to ``snap`` with the data nodes ``nodes`` (default:
    the snapshot's).  With ``allowed``, only pages on those nodes vote and a table with no vote
    (the root at the end of its chain) goes to the lowest allowed node - how ``migrate`` spreads
    tables over several targets.  ``root`` fixes the root's node instead of inferring it (a
    mirror that grows keeps the root it has).

    ``follow_data`` answers another question - where should the tables go so that the most
    walks stay local, now that the data moved - for ``watch`` and ``migrate``'s several
    targets: every page of known node votes, file pages too (a table mapping only shared
    library pages left on node 0 by migratepages is best left on node 0), the root included."""
    nodes = snap.nodes if nodes is None else nodes
    resident = snap.resident
    n = len(resident)
    c = _core()

    def votes(x: int) -> bool:
        return x >= 0 and (allowed is None or x in allowed)

    # per page: does it vote, and for its tables too (PTR_VOTE_*), set per VMA by slices
    anon_class, other_class = int(c.lib.PTR_VOTE_ANON), int(c.lib.PTR_VOTE_OTHER)
    classes = bytearray([anon_class if follow_data else other_class]) * n
    stack: Counter[int] = Counter()
    for vma, (lo, hi) in zip(snap.vmas, snap.vma_pages(), strict=True):
        if lo == hi:
            continue
        if vma.path in SPECIAL_MAPPINGS:
            classes[lo:hi] = bytes(hi - lo)
        elif not follow_data and _anonymous(vma.path):
            classes[lo:hi] = bytes([anon_class]) * (hi - lo)
            if vma.path == "[stack]":
                stack.update(x for x in nodes[lo:hi] if votes(x))
    if not (isinstance(nodes, array) and nodes.typecode == "i"):
        nodes = array("i", nodes)
    tally = snap.status_counts() if nodes is snap.nodes else proc.status_counts(nodes)
    top_node = max((k for k in tally if k >= 0), default=0)
    nnodes = top_node + 1
    allow = None if allowed is None else bytes(1 if x in allowed else 0 for x in range(nnodes))
    lowest = geo.levels[0]
    shift = lowest.shift + lowest.bits
    counted = c.span_votes(resident.starts, resident.first, resident.page_shift, nodes, classes,
                           shift, nnodes, allow)
    anon_votes = Counter({x: v for x, v in enumerate(counted.anon_votes) if v})
    all_votes = Counter({x: v for x, v in enumerate(counted.all_votes) if v})
    basis = "given"
    if root is None:
        for name, tally in (
            ("stack", stack),
            ("anonymous", anon_votes),
            ("resident", all_votes),
        ):
            root, basis = _majority(tally), name
            if root is not None:
                break
    if root is None:
        cpu = snap.last_cpu_node
        if cpu is not None and (allowed is None or cpu in allowed):
            root, basis = cpu, "cpu"
        else:
            root, basis = (min(allowed) if allowed else 0), "default"
    # per table: its votes per node (every table listed maps at least one voting page), the
    # node with most (ties: the lowest) chosen in C; a level's rows summed into the level
    # above's in C too (a dense 8 GiB process has ~4,100 PTE tables: ~60 ms of Python)
    keys, counts = counted.keys, counted.counts
    levels: list[dict[int, int]] = []
    for index in range(geo.nlevels - 1):  # every level below the root
        if index:
            keys, counts = c.span_rollup(keys, counts, nnodes, geo.levels[index].bits)
        levels.append(dict(zip(keys, c.span_tops(counts, nnodes), strict=True)))
    return TablePlacement(root, basis, tuple(levels), geo)


def _span_shift(geo: Geometry) -> int:
    lowest = geo.levels[0]
    return lowest.shift + lowest.bits


#: pages per ptr_map_pages() call (progress is reported between calls)
_BUILD_CHUNK = 1 << 20


def _tables_needed(snap: ProcessSnapshot, geo: Geometry) -> int:
    """An upper bound on the tables a mirror of ``snap`` needs (it sizes the arena): per VMA
    and level, the table spans the VMA touches, but never more than its resident pages - no
    pass over the pages (a dense VMA's count is exact; VMAs that share a span count it
    twice)."""
    total = 1
    for vma, (lo, hi) in zip(snap.vmas, snap.vma_pages(), strict=True):
        pages = hi - lo
        if not pages:
            continue
        for lv in geo.levels[:-1]:  # below the root
            span = lv.shift + lv.bits
            total += min(pages, ((vma.end - 1) >> span) - (vma.start >> span) + 1)
    return total


def _prefault(arena: Arena, placement: TablePlacement, thp: ThpBlocks) -> None:
    """Fault in, per node, the frames of the tables the placement puts there (csrc/arena.c
    ptr_arena_prefault(): one call instead of a page fault at each table's first store; a
    block mapped by a huge leaf has no lowest-level table).  Tables the placement does not
    list (no voting page) fault in as they are made."""
    per_node: Counter[int] = Counter()
    for level in placement.levels[1:]:
        per_node.update(level.values())
    lowest = placement.levels[0] if placement.levels else {}
    per_node.update(lowest.values())
    if thp.starts:
        shift = thp.size.bit_length() - 1
        per_node.subtract(lowest[b >> shift] for b in thp.starts if b >> shift in lowest)
    per_node[placement.root] += 1  # the root, allocated with the address space, comes first
    for node, count in per_node.items():
        if count > 0:
            arena.prefault(node, count)


def _build(
    mm: AddressSpace,
    resident: PageRuns,
    placement: TablePlacement,
    vmas: list[Vma],
    thp: ThpBlocks,
    progress: ProgressCallback | None = None,
) -> int:
    """Map ``resident`` (the pages) into ``mm`` with every table where
    ``placement`` puts it: the upper tables first (top down, each on its node), then every
    page in one call into the core (``ptr_map_pages``: per lowest-level table one walk, one
    lock and plain stores; a table it creates goes to the table's node, a table mapping no
    voting page with the root).  The blocks of ``thp`` become huge leaves.  Millions of pages
    go in calls of about ``_BUILD_CHUNK`` pages, split at a table's boundary, with
    ``progress`` after each.  Returns the calls into the core made."""
    geo = mm.geometry
    calls = 0
    levels = placement.levels
    for index in range(len(levels) - 1, 0, -1):  # upper tables, top down (not the root's)
        lv = geo.levels[index]
        span = lv.shift + lv.bits
        for key, node in sorted(levels[index].items()):
            mm.ensure_table(key << span, index, node)
            calls += 1
    lowest = levels[0] if levels else {}
    keys = array("Q", sorted(lowest))
    nodes = array("h", (lowest[k] for k in keys))
    ro = array("Q")
    for vma in vmas:
        if "w" not in vma.perms:
            ro.extend((vma.start, vma.end))
    huge = array("Q", thp.starts)
    total = len(resident)
    # chunks end at a lowest-level table's boundary (a huge block is one), so each huge block
    # lies wholly in one chunk: each call gets that chunk's blocks only
    shift = _span_shift(geo)
    i = 0
    while i < total:
        j = min(i + _BUILD_CHUNK, total)
        if j < total:  # end the chunk at a lowest-level table's boundary
            j = max(j, resident.bisect(((resident[j - 1] >> shift) + 1) << shift))
        h0 = bisect_left(huge, resident[i])
        h1 = bisect_left(huge, resident[j - 1] + 1)
        mm.map_pages(resident, keys, nodes, placement.root, ro, huge[h0:h1], i, j)
        calls += 1
        i = j
        if progress is not None:
            progress(i, total)
    return calls


def mirror(
    snap: ProcessSnapshot,
    *,
    geometry_name: str | None = None,
    extra_nodes: Iterable[int] = (),
    progress: ProgressCallback | None = None,
    bind: bool = True,
    detect_thp: bool = True,
    placement: TablePlacement | None = None,
) -> Mirror:
    """Mirror ``snap`` (see the module doc for the placement rule and huge pages).

    ``placement`` puts the tables where it says instead of where the rule would (a measured
    placement: :func:`ptreloc.placement.mirror_measured`).

    The arena has a pool for every node 0..max(online nodes, data nodes, ``extra_nodes``);
    nodes online with memory are real (mbind-bound), the others virtual.  ``detect_thp=False``
    maps every page as a base page.
    """
    import time

    clock = time.perf_counter
    t0 = clock()
    name = geometry_name or host_geometry(snap)
    geo = geometry(name)
    online, _with_memory = numa.node_states()
    wanted = set(online) | set(snap.node_pages()) | set(extra_nodes)
    count = max(wanted) + 1
    needed = _tables_needed(snap, geo) if snap.resident else 8
    # every node must be able to hold the whole tree (a relocation moves all of it to one node),
    # and room to grow when a watch mirrors pages faulted in later (reserved, not committed)
    arena = Arena(name, count, frames_per_node=2 * needed + 1024, bind=bind)
    if placement is None:
        placement = infer_placement(snap, geo)
    elif placement.geometry.name != geo.name:
        raise UsageError(f"the placement is for {placement.geometry.name}, the mirror {geo.name}")
    mm = AddressSpace(arena, node=placement.root)
    thp = thp_blocks(snap, geo, detect=detect_thp)
    try:
        _prefault(arena, placement, thp)
        runs = _build(mm, snap.resident, placement, snap.vmas, thp, progress)
    except BaseException:
        mm.close()
        arena.close()
        raise
    total = len(snap.resident)
    if progress is not None:
        progress(total, total)
    return Mirror(
        snapshot=snap,
        arena=arena,
        mm=mm,
        geometry=geo,
        data_nodes=snap.nodes,  # shared: never changed in place (update_data_nodes replaces it)
        runs=runs,
        thp=thp,
        placement=placement,
        elapsed_s={"mirror": round(clock() - t0, 6)},
    )
