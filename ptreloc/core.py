"""The emulated page-table core, scriptable from Python.

An :class:`Arena` holds per-node pools of table frames (bound to real NUMA nodes where the
machine has them, *virtual* otherwise); an :class:`AddressSpace` is a tree of tables in one
paging format (:func:`geometries`); a :class:`Cpu` is an emulated processor with a TLB and
paging-structure caches that walks those tables and sets accessed/dirty bits like hardware::

    from ptreloc.core import Arena, AddressSpace, Cpu

    arena = Arena("x86_64_4l", nodes=2)
    mm = AddressSpace(arena, node=0)
    mm.map(0x4000_0000, 64 << 20)            # 64 MiB of 4 KiB pages, tables on node 0
    cpu = Cpu(arena)
    cpu.switch_to(mm)
    cpu.access(0x4000_1000, write=True)
    print(arena.tables())                    # {node: {level name: frames}}

Every operation loops in C (a 64 GiB map is one call).  Bad input raises a specific
``ptreloc.errors`` exception; nothing is changed when an operation is refused.
"""

from __future__ import annotations

import weakref
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ptreloc import _native
from ptreloc.errors import (
    AddressError,
    InvalidNode,
    NotMapped,
    PtrelocError,
    RelocationUnsupported,
    UsageError,
)
from ptreloc.runs import PageRuns

__all__ = [
    "DEFAULT_FRAMES_PER_NODE",
    "Level",
    "Geometry",
    "NodeInfo",
    "Translation",
    "AccessResult",
    "RemoteTables",
    "Arena",
    "AddressSpace",
    "Cpu",
    "geometries",
    "geometry",
    "run_cpus",
]

#: Frames reserved per node when not given (address space only: MAP_NORESERVE, faulted lazily).
DEFAULT_FRAMES_PER_NODE = 65536


@dataclass(frozen=True)
class Level:
    index: int  # 0 = lowest (PTE) level
    name: str
    shift: int
    bits: int
    entry_size: int
    table_bytes: int
    leaf_ok: bool

    @property
    def entries(self) -> int:
        return 1 << self.bits

    @property
    def entry_span(self) -> int:
        """Bytes of virtual address space one entry at this level maps."""
        return 1 << self.shift


@dataclass(frozen=True)
class Geometry:
    name: str
    arch: str
    va_bits: int
    canonical: bool
    top_preloaded: bool
    frame_bytes: int
    phys_limit: int
    levels: tuple[Level, ...]

    @property
    def nlevels(self) -> int:
        return len(self.levels)

    @property
    def page_size(self) -> int:
        return self.levels[0].entry_span

    @property
    def huge_levels(self) -> tuple[int, ...]:
        return tuple(lv.index for lv in self.levels[1:] if lv.leaf_ok)

    def level_index(self, level: int | str) -> int:
        if isinstance(level, str):
            for lv in self.levels:
                if lv.name == level:
                    return lv.index
            raise UsageError(
                f"{self.name} has no level {level!r}: use one of "
                f"{', '.join(lv.name for lv in self.levels)}"
            )
        if not isinstance(level, int) or not 0 <= level < self.nlevels:
            raise UsageError(f"{self.name} levels are 0..{self.nlevels - 1}, not {level!r}")
        return level


def _to_geometry(d: _native.GeometryInfo) -> Geometry:
    levels = tuple(Level(index=i, **lv) for i, lv in enumerate(d["levels"]))
    return Geometry(d["name"], d["arch"], d["va_bits"], d["canonical"], d["top_preloaded"],
                    d["frame_bytes"], d["phys_limit"], levels)


def geometries(build: str = "relo") -> dict[str, Geometry]:
    """Every built-in paging format by name."""
    return {k: _to_geometry(v) for k, v in _native.core(build).geometries().items()}


def geometry(name: str, build: str = "relo") -> Geometry:
    return _to_geometry(_native.core(build).geometry(name))


@dataclass(frozen=True)
class NodeInfo:
    node: int  # arena node id
    real: bool  # pool bound (mbind MPOL_BIND) to the real NUMA node of the same id
    bind_node: int | None  # the real node, None for a virtual node


@dataclass(frozen=True)
class Translation:
    va: int
    phys: int
    page_size: int
    level: int
    level_name: str
    writable: bool
    young: bool
    dirty: bool
    entry: int  # raw leaf entry, real bit layout
    table_frame: int  # arena frame holding the leaf entry
    table_node: int


@dataclass(frozen=True)
class RemoteTables:
    """What :meth:`AddressSpace.remote_tables` counted."""

    pages: int  # addresses with a known data node and a leaf
    remote_pages: int  # of which walk at least one table on another node
    by_level: dict[str, int]  # level name -> of which that level's table is on another node
    unmapped: int  # addresses with a known data node and nothing mapped


@dataclass(frozen=True)
class AccessResult:
    phys: int | None
    fault: str | None  # None, "not_present", "protection", "freed_frame"

    @property
    def ok(self) -> bool:
        return self.fault is None


_FAULTS = {1: "not_present", 2: "protection", 3: "freed_frame"}


def _online_memory_nodes() -> frozenset[int]:
    try:
        from ptreloc import numa

        return numa.node_states()[1]
    except Exception:  # no sysfs (containers): everything virtual
        return frozenset()


class Arena:
    """Per-node pools of table frames for one paging format.

    ``nodes``: a count (nodes 0..n-1) or explicit node ids.  A node that is online with memory
    is *real*: its pool is mbind-bound there.  Any other node is *virtual* (unbound) and
    reported as such in :attr:`nodes`.  ``bind=False`` makes every node virtual.
    ``build``: ``"relo"`` (relocation support) or ``"norelo"`` (compiled out, for measuring its
    cost); both expose the same API.
    """

    def __init__(self, geometry: str = "x86_64_4l", nodes: int | list[int] = 1, *,
                 capacity: int | None = None, frames_per_node: int | None = None,
                 build: str = "relo", bind: bool = True) -> None:
        self._core = _native.core(build)
        self.geometry: Geometry = _to_geometry(self._core.geometry(geometry))
        if isinstance(nodes, bool) or not isinstance(nodes, int | list | tuple):
            raise InvalidNode(f"nodes must be a count or a list of node ids, not {nodes!r}")
        ids = list(range(nodes)) if isinstance(nodes, int) else list(nodes)
        if not ids or any(not isinstance(n, int) or n < 0 for n in ids) or len(set(ids)) != len(
            ids
        ):
            raise InvalidNode(
                f"nodes must be distinct non-negative ids (or a positive count), not {nodes!r}"
            )
        if max(ids) >= self._core.max_nodes or len(ids) > self._core.max_nodes:
            raise InvalidNode(f"arena node ids must be below {self._core.max_nodes}")
        if ids != list(range(len(ids))):
            raise InvalidNode(f"arena nodes must be 0..n-1 (got {ids}); pass a count")
        real = _online_memory_nodes() if bind else frozenset()
        binds = [n if n in real else -1 for n in ids]
        fpn = frames_per_node or DEFAULT_FRAMES_PER_NODE
        if self.geometry.phys_limit < fpn * len(ids) * self.geometry.frame_bytes:
            fpn = self.geometry.phys_limit // (len(ids) * self.geometry.frame_bytes) - 1
        self._h = self._core.arena_create(geometry, binds, fpn)
        self._fin = weakref.finalize(self, _destroy_arena, self._core, self._h)
        self.nodes: tuple[NodeInfo, ...] = tuple(
            NodeInfo(n, b >= 0, b if b >= 0 else None) for n, b in zip(ids, binds, strict=True)
        )
        self.frames_per_node = fpn
        # the open address spaces, in creation order (evacuate/compact default to all of them)
        self._spaces: weakref.WeakValueDictionary[int, AddressSpace] = (
            weakref.WeakValueDictionary()
        )
        self._space_seq = 0
        if capacity is not None:
            for n in ids:
                self.set_capacity(n, capacity)

    # -- properties --
    @property
    def build(self) -> str:
        return self._core.build

    @property
    def relocation_supported(self) -> bool:
        return self._core.relocation_supported

    def require_relocation(self) -> None:
        if not self.relocation_supported:
            raise RelocationUnsupported(
                "this arena uses the norelo core (relocation compiled out): create it with "
                "build='relo'"
            )

    @property
    def virtual_nodes(self) -> tuple[int, ...]:
        return tuple(n.node for n in self.nodes if not n.real)

    def _node(self, node: int) -> int:
        if not isinstance(node, int) or not 0 <= node < len(self.nodes):
            raise InvalidNode(
                f"node {node!r} has no pool in this arena: use 0..{len(self.nodes) - 1}"
            )
        return node

    def prefault(self, node: int, frames: int) -> bool:
        """Fault in the next ``frames`` frames node's pool will hand out, in one call (a build
        about to create that many tables there: csrc/arena.c ptr_arena_prefault()).  Only
        speed: False (nothing done) where the kernel cannot (before Linux 5.14)."""
        return self._core.prefault(self._h, self._node(node), frames) == 0

    def set_capacity(self, node: int, frames: int) -> None:
        """Limit node's pool to ``frames`` table frames (to provoke exhaustion)."""
        self._core.set_capacity(self._h, self._node(node), frames)

    def fail_nth_allocation(self, k: int) -> None:
        """Make the k-th table allocation from now fail (0 disarms)."""
        self._core.fail_nth_alloc(self._h, k)

    def pool(self, node: int) -> _native.PoolInfo:
        return self._core.pool_info(self._h, self._node(node))

    def pool_runs(self, node: int) -> _native.PoolRuns:
        """How fragmented pool ``node`` is now: used slots, the largest free run and the free
        2 MiB-aligned runs of frames (a snapshot)."""
        return _native.pool_runs(self._core, self._h, self._node(node))

    def _space_handles(self, spaces: Iterable[AddressSpace] | None, what: str) -> list[Any]:
        mms = list(self._spaces.values()) if spaces is None else list(spaces)
        if not mms:
            raise UsageError(f"{what}: the arena has no open address space")
        for m in mms:
            if not isinstance(m, AddressSpace) or m.arena is not self or not m._fin.alive:
                raise UsageError(f"{what}: pass open address spaces of this arena, not {m!r}")
        if len({id(m) for m in mms}) != len(mms):
            raise UsageError(f"{what}: an address space is listed twice")
        return [m._h for m in mms]

    def evacuate(self, node: int, *, to_node: int | None = None, strategy: str = "rewalk",
                 batch: int = _native.DEFAULT_BATCH,
                 spaces: Iterable[AddressSpace] | None = None) -> _native.PoolReport:
        """Move every table frame of ``spaces`` (default: every open address space of this
        arena) off pool ``node`` - to ``to_node``, or (None) each to the other pool with the most
        free room - with the relocation protocol ``strategy`` while CPUs keep running.  Address
        spaces whose new tables came from ``node`` get the target as their node.  The report's
        ``left`` is what of theirs is still there (0 when ``complete``)."""
        self.require_relocation()
        self._node(node)
        if to_node is not None:
            self._node(to_node)
            if to_node == node:
                raise InvalidNode(f"evacuate: the target must be another node than {node}",
                                  node=to_node)
        if len(self.nodes) < 2:
            raise InvalidNode("evacuate: the arena has one node: there is nowhere to go",
                              node=node)
        mms = list(self._spaces.values()) if spaces is None else list(spaces)
        rep = _native.evacuate(self._core, self._space_handles(mms, "evacuate"), node,
                               to_node, strategy, batch, [lv.name for lv in self.geometry.levels])
        if rep.new_home is not None:
            for m in mms:
                if m.node == node:
                    m.node = rep.new_home  # what the core pointed them at
        return rep

    def compact(self, node: int, *, strategy: str = "rewalk", batch: int = _native.DEFAULT_BATCH,
                spaces: Iterable[AddressSpace] | None = None) -> _native.PoolReport:
        """Pack the table frames of ``spaces`` (default: every open address space of this arena)
        on pool ``node`` into the pool's lowest free slots, with the relocation protocol
        ``strategy`` while CPUs keep running.  The report has the pool's free runs (largest, and
        free 2 MiB-aligned runs of frames) ``before`` and ``after``."""
        self.require_relocation()
        self._node(node)
        return _native.compact(self._core, self._space_handles(spaces, "compact"), node,
                               strategy, batch, [lv.name for lv in self.geometry.levels])

    def tables(self) -> dict[int, dict[str, int]]:
        """Live table frames per node per level name (exact accounting of the pools)."""
        out = {}
        for n in self.nodes:
            live = self.pool(n.node)["live"]
            out[n.node] = {lv.name: live[lv.index] for lv in self.geometry.levels}
        return out

    @property
    def frames_in_use(self) -> int:
        """Live + limbo frames over all nodes."""
        return sum(self.pool(n.node)["in_use"] for n in self.nodes)

    @property
    def limbo_frames(self) -> int:
        return sum(self.pool(n.node)["limbo"] for n in self.nodes)

    @property
    def freed_frame_accesses(self) -> int:
        return self._core.freed_frame_accesses(self._h)

    def frame(self, frame: int) -> _native.FrameInfo:
        """Metadata of one frame: state, level, node, sharers."""
        return self._core.frame_info(self._h, frame)

    def frame_address(self, frame: int) -> int:
        """Address of the frame's bytes in this process (for move_pages queries)."""
        return self._core.frame_address(self._h, frame)

    def table_entry(self, frame: int, level: int | str, index: int) -> int:
        """Raw entry ``index`` of the table in ``frame`` (read a stale copy in tests)."""
        return self._core.table_entry(self._h, frame, self.geometry.level_index(level), index)

    def free_frame_unsafely(self, frame: int) -> None:
        """Test helper: free and poison ``frame`` now, whoever still points to it."""
        self._core.free_frame(self._h, frame)

    def close(self) -> None:
        """Unmap the arena; every address space and CPU must be closed first."""
        if self._fin.alive:
            self._core.arena_destroy(self._h)
            self._fin.detach()

    def __repr__(self) -> str:
        kinds = ",".join(f"{n.node}{'' if n.real else '(virtual)'}" for n in self.nodes)
        return f"<Arena {self.geometry.name} nodes={kinds} build={self.build}>"


def _destroy_arena(core: _native.Core, h: Any) -> None:
    try:
        core.arena_destroy(h)
    except PtrelocError:
        pass  # the core said no (EBUSY: still in use at exit): leave it mapped


def _destroy_mm(core: _native.Core, h: Any) -> None:
    try:
        core.mm_destroy(h)
    except PtrelocError:
        pass  # the core said no (EBUSY: a CPU still runs it at exit): leave it; a bug still shows


def _destroy_cpu(core: _native.Core, h: Any) -> None:
    core.cpu_destroy(h)


class AddressSpace:
    """An emulated address space (mm): a table tree whose new tables come from ``node``."""

    def __init__(self, arena: Arena, node: int = 0) -> None:
        self.arena = arena
        self._core = arena._core
        self.geometry = arena.geometry
        self._h = self._core.mm_create(arena._h, arena._node(node))
        self._fin = weakref.finalize(self, _destroy_mm, self._core, self._h)
        self.node = node
        arena._space_seq += 1
        self._seq = arena._space_seq
        arena._spaces[self._seq] = self

    def _leaf_level(self, huge: bool | int | str) -> int:
        g = self.geometry
        if huge is False or huge == 0:
            return 0
        if huge is True:
            if not g.huge_levels:
                raise UsageError(f"{g.name} has no huge leaves")
            return g.huge_levels[0]
        level = g.level_index(huge)
        if not g.levels[level].leaf_ok:
            raise UsageError(f"{g.name} level {g.levels[level].name} cannot hold a leaf")
        return level

    def set_node(self, node: int) -> None:
        """Pool that new tables come from."""
        self._core.mm_set_node(self._h, self.arena._node(node))
        self.node = node

    def map(self, start: int, length: int, phys: int | None = None, *, writable: bool = True,
            huge: bool | int | str = False, table_node: int | None = None) -> None:
        """Map [start, start+length) to phys.. (default: identity) with base pages or, with
        ``huge``, leaves at the first huge level (or the level given by index or name)."""
        level = self._leaf_level(huge)
        node = -1 if table_node is None else self.arena._node(table_node)
        self._core.map(self._h, start, start + length, start if phys is None else phys, level,
                       writable, node)

    def map_pages(self, pages: PageRuns | array[int], span_keys: array[int],
                  span_nodes: array[int], default_node: int, read_only: array[int],
                  huge: array[int], start: int = 0, stop: int | None = None) -> int:
        """Map every page of ``pages`` (``ptreloc.runs.PageRuns``, or ascending addresses in an
        array('Q'); identity translations modulo the physical limit) in one call: the
        lowest-level table over span key k (``va >> log2(level-1 entry size)``) is created on
        ``span_nodes`` at k's index in ``span_keys`` (ascending), else on ``default_node``;
        pages inside the [start, end) pairs of ``read_only`` map read-only; each block
        starting at an address of ``huge`` is one leaf at level 1.  Only pages
        ``start .. stop - 1`` when given.  Returns the leaves installed.  Unlike :meth:`map`,
        a failure does not roll back (csrc/pgtable.c ptr_map_pages())."""
        if not isinstance(pages, PageRuns):
            try:
                pages = PageRuns.from_addresses(pages, self.geometry.page_size)
            except UsageError as err:
                raise AddressError(f"mapping {len(pages)} pages: {err}") from err
        return self._core.map_pages(self._h, pages.starts, pages.first, span_keys, span_nodes,
                                    self.arena._node(default_node), read_only, huge,
                                    start, stop)

    def ensure_table(self, va: int, level: int, node: int) -> None:
        """Make sure the level-``level`` table over ``va`` exists; a new one (and any missing
        table above it) goes on ``node``, an existing one stays where it is."""
        self._core.ensure_table(self._h, va, level, self.arena._node(node))

    def unmap(self, start: int, length: int) -> tuple[int, int]:
        """Clear the leaves in the range; returns (leaves cleared, of which dirty).  Tables
        stay allocated until the address space is closed."""
        return self._core.unmap(self._h, start, start + length)

    def protect(self, start: int, length: int, *, writable: bool) -> int:
        return self._core.protect(self._h, start, start + length, writable)

    def add_region(self, start: int, length: int, phys: int | None = None, *,
                   writable: bool = True, huge: bool | int | str = False) -> None:
        """Register a demand-fault region: tables and leaves appear on first fault/access."""
        self._core.add_region(self._h, start, start + length, start if phys is None else phys,
                              writable, self._leaf_level(huge))

    def fault(self, va: int, write: bool = False) -> None:
        """Run the software fault path for va (as a CPU fault would)."""
        self._core.fault(self._h, va, write)

    def translate(self, va: int) -> Translation | None:
        t = self._core.translate(self._h, va)
        if t is None:
            return None
        return Translation(va, t["phys"], t["page_size"], t["level"],
                           self.geometry.levels[t["level"]].name, t["writable"], t["young"],
                           t["dirty"], t["entry"], t["table"], self.arena.frame(t["table"])["node"])

    def test_and_clear_young(self, va: int) -> bool:
        return self._core.test_and_clear(self._h, va, dirty=False)

    def test_and_clear_dirty(self, va: int) -> bool:
        return self._core.test_and_clear(self._h, va, dirty=True)

    def share_table_from(self, src: AddressSpace, va: int, level: int | str = 0) -> None:
        """Link src's level-0/1 table covering va into this address space (hugetlb-style)."""
        self._core.share_table(self._h, src._h, va, self.geometry.level_index(level))

    def repoint_table(self, va: int, level: int | str, node: int) -> tuple[int, int]:
        """Low-level test helper: copy the table covering va to ``node`` and repoint its parent
        with no shootdown, merge or free (the old copy is left in limbo).  (old, new) frames."""
        return self._core.repoint(self._h, va, self.geometry.level_index(level),
                                  self.arena._node(node))

    def shootdown(self, reload_root: bool = False) -> None:
        self._core.shootdown(self._h, reload_root)

    @property
    def root_frame(self) -> int:
        return self._core.mm_root(self._h)

    # -- read-only walks (csrc/mirror.c); geometry-generic, the bulk ones loop in C --
    def walk_path(self, va: int) -> list[int | None]:
        """The table frame the walk for ``va`` reads at each level (index = level, the root
        last); None for the levels below a huge leaf.  NotMapped when nothing maps ``va``."""
        rc, frames = self._core.walk_path(self._h, va)
        if rc < 0:
            raise NotMapped(f"nothing is mapped at {va:#x}; map it first")
        return self._path(frames, 0)

    def _path(self, frames: Any, at: int) -> list[int | None]:
        no = self._core.no_frame  # PTR_NO_FRAME: no table at that level of a walk
        return [None if f == no else f for f in frames[at:at + self.geometry.nlevels]]

    def walk_paths(self, vas: array[int]) -> list[list[int | None]]:
        """:meth:`walk_path` for every address of ``vas`` (an ``array('Q')``) in one C call."""
        stride = self._core.max_levels
        frames = array("I", bytes(4 * stride * len(vas)))
        if self._core.walk_many(self._h, vas, frames, None):
            raise NotMapped("some of the addresses are not mapped")
        return [self._path(frames, i * stride) for i in range(len(vas))]

    def remote_tables(self, vas: array[int], data_nodes: array[int] | memoryview
                      ) -> RemoteTables:
        """Of the addresses ``vas`` (``array('Q')``) whose data node (``array('i')``, parallel;
        negative = leave out) is known, how many walk a table on another node - in one C call."""
        d = self._core.remote_count(self._h, vas, data_nodes)
        names = [lv.name for lv in self.geometry.levels]
        return RemoteTables(d["pages"], d["remote_pages"],
                            dict(zip(names, d["by_level"], strict=False)), d["unmapped"])

    def check_translations(self, vas: array[int], phys: array[int]) -> tuple[int, int | None]:
        """(how many of ``vas`` are unmapped or do not translate to ``phys`` (both
        ``array('Q')``, parallel), index of the first such or None) - in one C call."""
        bad, first = self._core.check_translations(self._h, vas, phys)
        return bad, (first if bad else None)

    def table_counts(self) -> dict[str, int]:
        """Tables reachable from this address space per level name (shared ones included)."""
        counts, _ = self._core.count_tables(self._h)
        return {lv.name: counts[lv.index] for lv in self.geometry.levels}

    def tables(self) -> dict[int, dict[str, int]]:
        """Reachable tables per node per level name."""
        _, per_node = self._core.count_tables(self._h)
        return {n.node: {lv.name: per_node[n.node][lv.index] for lv in self.geometry.levels}
                for n in self.arena.nodes}

    def close(self) -> None:
        if self._fin.alive:
            self._core.mm_destroy(self._h)
            self._fin.detach()
            self.arena._spaces.pop(self._seq, None)


class Cpu:
    """An emulated CPU.  Drive each Cpu from one thread at a time; many may run at once."""

    def __init__(self, arena: Arena) -> None:
        self.arena = arena
        self._core = arena._core
        self._h = self._core.cpu_create(arena._h)
        self._fin = weakref.finalize(self, _destroy_cpu, self._core, self._h)
        self.mm: AddressSpace | None = None

    def switch_to(self, mm: AddressSpace | None) -> None:
        """Run mm (None: go idle).  Flushes TLB and caches and loads the root."""
        if mm is not None and mm.arena is not self.arena:
            raise UsageError("the address space belongs to another arena")
        self._core.cpu_switch_to(self._h, None if mm is None else mm._h)
        self.mm = mm

    def access(self, va: int, write: bool = False, *, handle_faults: bool = True) -> AccessResult:
        """One memory access.  With handle_faults, a not-present/protection fault runs the
        software fault path (demand regions) and retries; without, the fault is returned."""
        code, phys = self._core.cpu_access(self._h, va, write, handle_faults)
        if code:
            return AccessResult(None, _FAULTS.get(code, str(code)))
        return AccessResult(phys, None)

    def flush(self) -> None:
        self._core.cpu_flush(self._h)

    @property
    def stats(self) -> dict[str, int]:
        return self._core.cpu_stats(self._h)

    def close(self) -> None:
        if self._fin.alive:
            self._fin()
            self.mm = None


def run_cpus(mm: AddressSpace, ncpus: int, accesses: int, start: int, length: int, *,
             write_pct: int = 30, seed: int = 1) -> dict[str, int]:
    """Run ``ncpus`` emulated CPUs on C threads, each doing ``accesses`` random page accesses in
    [start, start+length) (faults handled); returns the summed CPU statistics."""
    return mm._core.run_cpus(mm._h, ncpus, accesses, start, start + length, write_pct, seed)
