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

The mirror maps runs of contiguous resident pages under PTE tables with one placement node with
one call into the C core each (tables created during the call go to that node), then moves any
upper-level table whose inferred node differs to that node (a relocation with a chooser, before
anything else sees the mirror).  Physical addresses are the virtual ones (modulo the format's
physical limit): the mirror exists to say *where tables are*, and identity translations make
"translations unchanged" checkable per page.

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
import os
import platform
from array import array
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ptreloc import numa, proc
from ptreloc.core import AddressSpace, Arena, Geometry, geometry
from ptreloc.errors import NotMapped, PtrelocError, UsageError
from ptreloc.proc import ProcessSnapshot

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
    for vma in snap.vmas:
        if vma.path in SPECIAL_MAPPINGS:
            lo = bisect_left(snap.resident, vma.start)
            hi = bisect_left(snap.resident, vma.end)
            out.update(range(lo, hi))
    return frozenset(out)


#: progress(done_pages, total_pages) while mapping
ProgressCallback = Callable[[int, int], None]

_LA57_VA = 1 << 47  # user addresses at or above this need 5-level paging


def _cpu_flags() -> frozenset[str]:
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
    data_nodes: array  # 'i', per resident page: node >= 0 or -errno
    runs: int  # map calls made (runs of contiguous pages with one placement node)
    thp: ThpBlocks = field(default_factory=lambda: ThpBlocks((), 0, "none", 0))
    placement: TablePlacement | None = None  # the rule's answer for the snapshot mirrored first
    elapsed_s: dict[str, float] = field(default_factory=dict)
    _frame_nodes: dict[int, int] = field(default_factory=dict, repr=False)
    # last known data node of pages that went away (refresh): a page is briefly not present
    # while the kernel migrates it, and must come back with its old node so the move is seen
    _gone_nodes: dict[int, int] = field(default_factory=dict, repr=False)

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
            j = bisect_left(resident, ((va >> shift) + 1) << shift, i)
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

    def remote_fraction(self, data_nodes: array | None = None) -> RemoteFraction:
        """remote_table_fraction for the current tables and ``data_nodes`` (default: the
        mirror's own data nodes): every resident page's walk, in one call into the core."""
        nodes = array("i", self.data_nodes if data_nodes is None else data_nodes)
        for k in special_pages(self.snapshot):
            nodes[k] = -1
        counted = self.mm.remote_tables(self.snapshot.resident, nodes)
        if counted.unmapped:
            raise PtrelocError(f"mirror lost the translation of {counted.unmapped} pages")
        return RemoteFraction(counted.pages, counted.remote_pages, counted.by_level)

    def expected_phys(self) -> array:
        """Per resident page, the physical address its mirrored translation must give."""
        resident = self.snapshot.resident
        limit = self.geometry.phys_limit
        if not resident or resident[-1] < limit:  # ascending: identity for every page
            return resident
        return array("Q", (va % limit for va in resident))

    def check_translations(self) -> int:
        """Resident pages whose mirrored translation is missing or wrong (0 when intact); every
        page's walk in one call into the core."""
        bad, _first = self.mm.check_translations(self.snapshot.resident, self.expected_phys())
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
        resident, frames = proc.read_pagemap(snap.pid, vmas)
        if resident == snap.resident:
            self.snapshot = dataclasses.replace(snap, vmas=vmas)
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
        added = array("Q", (va for va in resident if va not in before))
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
            pfns=frames if any(frames) else None,
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
        sub = dataclasses.replace(fresh, resident=added, nodes=added_nodes, pfns=None)
        placement = infer_placement(
            sub, self.geometry, root=self.frame_node(self.mm.root_frame)
        )
        _map_pages(self.mm, added, _page_nodes(added, placement), vmas, add_thp)
        self.thp = ThpBlocks(
            tuple(sorted(still_huge | set(add_thp.starts))),
            thp.size or self.thp.size,
            thp.detected_by,
            thp.pmd_mapped_bytes,
        )
        self.snapshot = fresh
        self.data_nodes = nodes
        self._frame_nodes.clear()
        return len(added) - sum(1 for va in added if va in old_nodes), len(gone)

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
_KPF_THP = 22


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


def _kpageflags(pfns: Iterable[int]) -> dict[int, int] | None:
    """Flags of each frame from /proc/kpageflags, None when it cannot be read (unprivileged)."""
    try:
        fd = os.open("/proc/kpageflags", os.O_RDONLY)
    except OSError:
        return None
    try:
        out = {}
        for pfn in pfns:
            raw = os.pread(fd, 8, pfn * 8)
            if len(raw) != 8:
                return None
            out[pfn] = int.from_bytes(raw, "little")
        return out
    except OSError:
        return None
    finally:
        os.close(fd)


def thp_blocks(snap: ProcessSnapshot, geo: Geometry, *, detect: bool = True) -> ThpBlocks:
    """The blocks of ``snap`` that Linux maps with huge PMD entries (module doc)."""
    huge = geo.levels[1] if geo.nlevels > 1 else None
    if not detect or huge is None or not huge.leaf_ok or geo.page_size != snap.page_size:
        return ThpBlocks((), 0, "none", 0)
    size = huge.entry_span
    per_block = size // snap.page_size
    pmd = smaps_pmd_mapped(snap.pid)
    if not pmd:
        return ThpBlocks((), size, "none", 0)
    resident = snap.resident
    candidates: list[tuple[int, int, int]] = []  # (vma start, block start, resident index)
    for vma in snap.vmas:
        if vma.start not in pmd:
            continue
        b = (vma.start + size - 1) // size * size
        while b + size <= vma.end:
            lo = bisect_left(resident, b)
            last = lo + per_block - 1  # every page resident: the block's last page is there
            if last < len(resident) and resident[last] == b + size - snap.page_size:
                candidates.append((vma.start, b, lo))
            b += size
    pfns = snap.pfns
    flags = None
    if pfns is not None and candidates and any(pfns[lo] for _v, _b, lo in candidates):
        flags = _kpageflags(pfns[lo] for _v, _b, lo in candidates)
    method = "smaps"
    if flags is not None:
        method = "kpageflags"
        head_bits = 1 << _KPF_COMPOUND_HEAD | 1 << _KPF_THP
        kept = []
        for vma_start, b, lo in candidates:
            head = pfns[lo]  # type: ignore[index]
            if (
                head % per_block == 0
                and flags[head] & head_bits == head_bits
                and pfns[lo : lo + per_block] == array("Q", range(head, head + per_block))  # type: ignore[index]
            ):
                kept.append((vma_start, b, lo))
        candidates = kept
    taken: Counter[int] = Counter()
    starts = []
    for vma_start, b, _lo in candidates:
        if taken[vma_start] < pmd[vma_start] // size:
            taken[vma_start] += 1
            starts.append(b)
    return ThpBlocks(tuple(starts), size, method, sum(pmd.values()))


def _anonymous(path: str) -> bool:
    """A VMA of private anonymous memory (its pages were allocated by the process's own
    faults, under its own memory policy)."""
    return path in ("", "[heap]", "[stack]") or path.startswith("[anon:")


def _majority(votes: Counter[int]) -> int | None:
    """The node with most votes (ties: the lowest node); None with no vote."""
    return min(votes, key=lambda n: (-votes[n], n)) if votes else None


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
    nodes: array | None = None,
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

    def votes(n: int) -> bool:
        return n >= 0 and (allowed is None or n in allowed)

    anon = bytearray(len(resident))
    stack: Counter[int] = Counter()
    if follow_data:
        anon[:] = b"\x01" * len(resident)
    for vma in snap.vmas:
        if not _anonymous(vma.path) or follow_data:
            continue
        lo = bisect_left(resident, vma.start)
        hi = bisect_left(resident, vma.end)
        anon[lo:hi] = b"\x01" * (hi - lo)
        if vma.path == "[stack]":
            stack.update(n for n in nodes[lo:hi] if votes(n))
    special = special_pages(snap)
    lowest = geo.levels[0]
    shift = lowest.shift + lowest.bits
    blocks: dict[int, Counter[int]] = {}
    anon_votes: Counter[int] = Counter()
    all_votes: Counter[int] = Counter()
    for k, (va, n) in enumerate(zip(resident, nodes, strict=True)):
        if not votes(n) or k in special:
            continue
        all_votes[n] += 1
        if anon[k]:
            anon_votes[n] += 1
            key = va >> shift
            counts = blocks.get(key)
            if counts is None:
                counts = blocks[key] = Counter()
            counts[n] += 1
    basis = "given"
    if root is None:
        for name, counted in (
            ("stack", stack),
            ("anonymous", anon_votes),
            ("resident", all_votes),
        ):
            root, basis = _majority(counted), name
            if root is not None:
                break
    if root is None:
        cpu = snap.last_cpu_node
        if cpu is not None and (allowed is None or cpu in allowed):
            root, basis = cpu, "cpu"
        else:
            root, basis = (min(allowed) if allowed else 0), "default"
    levels: list[dict[int, int]] = []
    per_table = blocks
    for index in range(geo.nlevels - 1):  # every level below the root
        if index:
            bits = geo.levels[index].bits
            upper: dict[int, Counter[int]] = {}
            for key, counts in per_table.items():
                upper.setdefault(key >> bits, Counter()).update(counts)
            per_table = upper
        levels.append({key: _majority(counts) for key, counts in per_table.items()})  # type: ignore[misc]
    return TablePlacement(root, basis, tuple(levels), geo)


def _page_nodes(resident: array, placement: TablePlacement) -> array:
    """Per resident page, the node of its lowest-level table (what a map call places)."""
    geo = placement.geometry
    lowest = geo.levels[0]
    shift = lowest.shift + lowest.bits
    table = placement.levels[0] if placement.levels else {}
    root = placement.root
    return array("i", (table.get(va >> shift, root) for va in resident))


def _settle_tables(mm: AddressSpace, placement: TablePlacement) -> None:
    """Move every table of ``mm`` that is not on its inferred node there (upper-level tables
    are created by the map call that first reaches their range, on that call's node)."""
    from ptreloc.relocate import relocate

    top = mm.geometry.nlevels - 1

    def choose(frame: Any) -> int | None:
        if frame.level == top:
            return None
        want = placement.node_of(frame.level, frame.base_va)
        return None if want == frame.node else want

    report = relocate(mm, range(len(mm.arena.nodes)), choose, strategy="stop")
    if not report.complete:
        raise PtrelocError(f"placing the mirrored tables failed: {report.error}")


def _tables_needed(resident: array, geo: Geometry) -> int:
    """Upper bound of the tables a mirror of ``resident`` needs: distinct table spans per level."""
    lowest = geo.levels[0]
    spans = {va >> (lowest.shift + lowest.bits) for va in resident}
    total = len(spans)
    for lv in geo.levels[1:]:
        spans = {s >> lv.bits for s in spans}
        total += len(spans)
    return total


def _map_pages(
    mm: AddressSpace,
    resident: array,
    place: array,
    vmas: list,
    thp: ThpBlocks,
    progress: ProgressCallback | None = None,
) -> int:
    """Map ``resident`` (ascending page addresses) into ``mm``: one call per run of contiguous
    pages with one placement node inside one VMA, one huge leaf per block of ``thp``.  New
    tables go to the run's node.  Returns the number of map calls."""
    geo = mm.geometry
    vma_ends = [v.end for v in vmas]
    vma_writable = ["w" in v.perms for v in vmas]
    page = geo.page_size
    limit = geo.phys_limit
    huge_starts = thp.starts
    huge_pages = thp.size // page if thp.size else 0
    hi = 0  # next huge block
    total = len(resident)
    runs = 0
    i = 0
    vi = 0
    while i < total:
        start = resident[i]
        node = place[i]
        while vi < len(vma_ends) and vma_ends[vi] <= start:
            vi += 1
        writable = vma_writable[vi] if vi < len(vma_ends) else True
        while hi < len(huge_starts) and huge_starts[hi] < start:
            hi += 1
        next_huge = huge_starts[hi] if hi < len(huge_starts) else 1 << 64
        if start == next_huge:  # one huge leaf for the whole block
            mm.map(start, thp.size, start % limit, writable=writable, huge=1, table_node=node)
            hi += 1
            i += huge_pages
        else:
            vma_end = vma_ends[vi] if vi < len(vma_ends) else 1 << 64
            stop = min(vma_end, next_huge)
            j = i + 1
            expect = start + page
            while j < total and resident[j] == expect and place[j] == node and expect < stop:
                j += 1
                expect += page
            mm.map(start, expect - start, start % limit, writable=writable, table_node=node)
            i = j
        runs += 1
        if progress is not None and (runs & 255 == 0 or i == total):
            progress(i, total)
    return runs


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
    topo = numa.topology()
    wanted = set(topo.online) | {n for n in snap.nodes if n >= 0} | set(extra_nodes)
    count = max(wanted) + 1
    needed = _tables_needed(snap.resident, geo) if snap.resident else 8
    # every node must be able to hold the whole tree (a relocation moves all of it to one node),
    # and room to grow when a watch mirrors pages faulted in later (reserved, not committed)
    arena = Arena(name, count, frames_per_node=2 * needed + 1024, bind=bind)
    if placement is None:
        placement = infer_placement(snap, geo)
    elif placement.geometry.name != geo.name:
        raise UsageError(f"the placement is for {placement.geometry.name}, the mirror {geo.name}")
    place = _page_nodes(snap.resident, placement)
    mm = AddressSpace(arena, node=placement.root)
    thp = thp_blocks(snap, geo, detect=detect_thp)
    try:
        runs = _map_pages(mm, snap.resident, place, snap.vmas, thp, progress)
        _settle_tables(mm, placement)
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
        data_nodes=array("i", snap.nodes),
        runs=runs,
        thp=thp,
        placement=placement,
        elapsed_s={"mirror": round(clock() - t0, 6)},
    )
