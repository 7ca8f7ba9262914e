"""Wrappers over csrc/core.cdef: geometries, the arena, address spaces, emulated CPUs.

``Core`` joins these with the mirror queries (mirror.cdef) and the x86-64 table decoder
(x86pt.cdef); ``core(build)`` is the cached instance ptreloc.core uses.  Handles are cffi
pointers whose lifetimes ptreloc.core owns.  Every wrapper validates what Python can validate,
calls C (cffi releases the GIL for the call) and turns -errno into an exception from
ptreloc.errors whose message names the problem and the fix.
"""

from __future__ import annotations

import errno as _errno
from typing import TypedDict

from ptreloc._native._base import U64, CoreBase, Handle, hex_addr
from ptreloc._native.mirror import MirrorBindings
from ptreloc._native.pagescan import PagescanBindings
from ptreloc._native.x86pt import X86Bindings
from ptreloc.errors import (
    AddressError,
    AlreadyMapped,
    CoreError,
    FreedFrameAccess,
    InvalidNode,
    NotMapped,
    ProtectionFault,
    UnknownGeometry,
    UsageError,
)

__all__ = ["Core", "core", "LevelInfo", "GeometryInfo", "PoolInfo", "FrameInfo",
           "TranslationInfo"]


class LevelInfo(TypedDict):
    """One level of ``struct ptr_geometry_info`` (the fields of ptreloc.core.Level)."""

    name: str
    shift: int
    bits: int
    entry_size: int
    table_bytes: int
    leaf_ok: bool


class GeometryInfo(TypedDict):
    """``struct ptr_geometry_info``: one paging format (ptreloc.core.Geometry is built from it)."""

    name: str
    arch: str
    nlevels: int
    va_bits: int
    canonical: bool
    top_preloaded: bool
    frame_bytes: int
    phys_limit: int
    levels: list[LevelInfo]


class PoolInfo(TypedDict):
    """``struct ptr_pool_info``: one node's table pool; ``live`` per level."""

    bind_node: int
    nframes: int
    capacity: int
    in_use: int
    limbo: int
    live: list[int]
    unlocked_writes: int  # counter writes without the pool lock (a bug: stays 0)


class FrameInfo(TypedDict):
    """ptr_frame_info(): a frame's state ("free", "live", "limbo"), level, node, sharers."""

    state: str
    level: int
    node: int
    sharers: int


class TranslationInfo(TypedDict):
    """``struct ptr_translation``: what a walk of one address found."""

    phys: int
    page_size: int
    entry: int
    table: int
    level: int
    writable: bool
    young: bool
    dirty: bool


class CoreBindings(CoreBase):
    """csrc/core.cdef."""

    def __init__(self, build: str = "relo") -> None:
        super().__init__(build)
        self._geos = self._describe()
        self._frame_states = {
            int(self.lib.PTR_FRAME_FREE): "free",
            int(self.lib.PTR_FRAME_LIVE): "live",
            int(self.lib.PTR_FRAME_LIMBO): "limbo",
        }

    # ---- geometry ----------------------------------------------------------------------------
    def _describe(self) -> dict[str, GeometryInfo]:
        out: dict[str, GeometryInfo] = {}
        info = self.ffi.new("struct ptr_geometry_info *")
        for i in range(self.lib.ptr_geometry_count()):
            self.lib.ptr_describe_geometry(i, info)
            levels: list[LevelInfo] = []
            for lv in range(info.nlevels):
                li = info.level[lv]
                levels.append(
                    {
                        "name": self.ffi.string(li.name).decode(),
                        "shift": li.shift,
                        "bits": li.bits,
                        "entry_size": li.entry_size,
                        "table_bytes": li.table_bytes,
                        "leaf_ok": bool(li.leaf_ok),
                    }
                )
            name = self.ffi.string(info.name).decode()
            out[name] = {
                "name": name,
                "arch": "x86" if info.arch == 0 else "arm64",
                "nlevels": info.nlevels,
                "va_bits": info.va_bits,
                "canonical": bool(info.canonical),
                "top_preloaded": bool(info.top_preloaded),
                "frame_bytes": info.frame_bytes,
                "phys_limit": info.phys_limit,
                "levels": levels,
            }
        return out

    def geometries(self) -> dict[str, GeometryInfo]:
        return {k: v.copy() for k, v in self._geos.items()}

    def geometry(self, name: str) -> GeometryInfo:
        if not isinstance(name, str) or name not in self._geos:
            raise UnknownGeometry(
                f"unknown geometry {name!r}: use one of {', '.join(sorted(self._geos))}"
            )
        return self._geos[name]


    # ---- arena --------------------------------------------------------------------------------
    def arena_create(self, geometry: str, bind_nodes: list[int], frames_per_node: int) -> Handle:
        self.geometry(geometry)
        if not 1 <= len(bind_nodes) <= self.max_nodes:
            raise InvalidNode(f"an arena has 1..{self.max_nodes} nodes, not {len(bind_nodes)}")
        if not isinstance(frames_per_node, int) or not 1 <= frames_per_node < 2**32:
            raise UsageError(
                f"frames per node must be a positive integer, got {frames_per_node!r}"
            )
        out = self.ffi.new("struct ptr_arena **")
        rc = self.lib.ptr_arena_create(
            geometry.encode(), len(bind_nodes), self.ffi.new("int[]", bind_nodes),
            frames_per_node, out,
        )
        self._check(rc, f"creating a {geometry} arena", {
            _errno.E2BIG: UsageError(
                f"{geometry} entries cannot address {len(bind_nodes)} x {frames_per_node} "
                f"frames: use fewer frames per node"
            ),
            _errno.EINVAL: UsageError(f"bad arena parameters for {geometry}"),
            _errno.EPERM: InvalidNode("mbind refused to bind a pool: not permitted here"),
        })
        return out[0]

    def arena_destroy(self, arena: Handle) -> None:
        self._check(self.lib.ptr_arena_destroy(arena), "destroying the arena", {
            _errno.EBUSY: CoreError("arena still has address spaces or CPUs: close them first"),
        })

    def mm_set_node(self, mm: Handle, node: int) -> None:
        self._check(self.lib.ptr_mm_set_node(mm, node), f"setting the table node to {node}",
                    node=node)

    def prefault(self, arena: Handle, node: int, frames: int) -> int:
        """ptr_arena_prefault(): 0 or the -errno of madvise (best effort: only speed)."""
        return int(self.lib.ptr_arena_prefault(arena, node, max(0, min(frames, 2**32 - 1))))

    def set_capacity(self, arena: Handle, node: int, frames: int) -> None:
        if not isinstance(frames, int) or frames < 0:
            raise UsageError(f"capacity must be a non-negative integer, got {frames!r}")
        self._check(self.lib.ptr_arena_set_capacity(arena, node, min(frames, 2**32 - 1)),
                    f"setting node {node}'s capacity", {
            _errno.E2BIG: UsageError(
                f"capacity {frames} exceeds the frames reserved for node {node}: create the "
                f"arena with more frames_per_node"
            ),
        })

    def fail_nth_alloc(self, arena: Handle, k: int) -> None:
        if not isinstance(k, int) or k < 0:
            raise UsageError(f"k must be a non-negative integer, got {k!r}")
        self.lib.ptr_arena_fail_nth_alloc(arena, k)

    def pool_info(self, arena: Handle, node: int) -> PoolInfo:
        info = self.ffi.new("struct ptr_pool_info *")
        self._check(self.lib.ptr_arena_pool_info(arena, node, info), f"node {node}", node=node)
        return {
            "bind_node": info.bind_node,
            "nframes": info.nframes,
            "capacity": info.capacity,
            "in_use": info.in_use,
            "limbo": info.limbo,
            "live": [info.live[i] for i in range(self.max_levels)],
            "unlocked_writes": info.unlocked_writes,
        }

    def freed_frame_accesses(self, arena: Handle) -> int:
        return int(self.lib.ptr_arena_freed_frame_accesses(arena))

    def frame_info(self, arena: Handle, frame: int) -> FrameInfo:
        st, lv, nd, sh = (self.ffi.new("int *") for _ in range(4))
        self._check(self.lib.ptr_frame_info(arena, frame, st, lv, nd, sh), f"frame {frame}", {
            _errno.EINVAL: UsageError(f"frame {frame} is outside the arena"),
        })
        return {"state": self._frame_states[st[0]], "level": lv[0], "node": nd[0],
                "sharers": sh[0]}

    def frame_address(self, arena: Handle, frame: int) -> int:
        return int(self.lib.ptr_frame_address(arena, frame))

    def table_entry(self, arena: Handle, frame: int, level: int, index: int) -> int:
        return int(self.lib.ptr_table_entry(arena, frame, level, index))

    def free_frame(self, arena: Handle, frame: int) -> None:
        """Test helper: free (and poison) a frame regardless of who still points to it."""
        self.lib.ptr_frame_free(arena, frame)

    # ---- address spaces ---------------------------------------------------------------------
    def mm_create(self, arena: Handle, node: int) -> Handle:
        out = self.ffi.new("struct ptr_mm **")
        self._check(
            self.lib.ptr_mm_create(arena, node, out), f"creating an address space on node {node}",
            node=node,
        )
        return out[0]

    def mm_destroy(self, mm: Handle) -> None:
        self._check(self.lib.ptr_mm_destroy(mm), "destroying the address space", {
            _errno.EBUSY: CoreError("a CPU still runs this address space: switch it away first"),
        })

    def mm_root(self, mm: Handle) -> int:
        return int(self.lib.ptr_mm_root(mm))

    def map(self, mm: Handle, start: int, end: int, phys: int, leaf_level: int, writable: bool,
            table_node: int) -> None:
        what = f"mapping [{hex_addr(start)}, {hex_addr(end)})"
        self._check(self.lib.ptr_map(mm, self._u64("start", start), self._u64("end", end),
                                     self._u64("phys", phys), leaf_level, bool(writable),
                                     table_node), what, {
            _errno.EEXIST: AlreadyMapped(
                f"{what}: part of the range is already mapped; unmap it first"
            ),
            _errno.EINVAL: AddressError(
                f"{what}: start, end and phys must be aligned to the page size of the leaf "
                f"level and end > start"
            ),
            _errno.ERANGE: AddressError(
                f"{what}: virtual or physical address outside the format's range",
                address=start,
            ),
        }, node=table_node)

    def unmap(self, mm: Handle, start: int, end: int) -> tuple[int, int]:
        dirty = self.ffi.new("uint64_t *")
        what = f"unmapping [{hex_addr(start)}, {hex_addr(end)})"
        n = self._check(self.lib.ptr_unmap(mm, self._u64("start", start), self._u64("end", end),
                                           dirty), what, {
            _errno.EINVAL: AddressError(f"{what}: the range cuts a huge page; cover it whole"),
        })
        return n, int(dirty[0])

    def protect(self, mm: Handle, start: int, end: int, writable: bool) -> int:
        what = f"protecting [{hex_addr(start)}, {hex_addr(end)})"
        return self._check(self.lib.ptr_protect(mm, self._u64("start", start),
                                                self._u64("end", end), bool(writable)), what, {
            _errno.EINVAL: AddressError(f"{what}: the range cuts a huge page; cover it whole"),
        })

    def add_region(
        self, mm: Handle, start: int, end: int, phys: int, writable: bool, leaf_level: int
    ) -> None:
        what = f"adding region [{hex_addr(start)}, {hex_addr(end)})"
        self._check(self.lib.ptr_add_region(mm, self._u64("start", start), self._u64("end", end),
                                            self._u64("phys", phys), bool(writable), leaf_level),
                    what, {
            _errno.EEXIST: AlreadyMapped(f"{what}: it overlaps an existing region"),
            _errno.EINVAL: AddressError(
                f"{what}: start, end and phys must be page-aligned, end > start"
            ),
            _errno.ENOSPC: UsageError(f"{what}: too many regions in this address space"),
        })

    def translate(self, mm: Handle, va: int) -> TranslationInfo | None:
        tr = self.ffi.new("struct ptr_translation *")
        rc = self.lib.ptr_translate(mm, self._u64("va", va), tr)
        if rc == -_errno.ENOENT:
            return None
        self._check(rc, f"translating {hex_addr(va)}")
        return {"phys": tr.phys, "page_size": tr.page_size, "entry": tr.entry, "table": tr.table,
                "level": tr.level, "writable": bool(tr.writable), "young": bool(tr.young),
                "dirty": bool(tr.dirty)}

    def fault(self, mm: Handle, va: int, write: bool) -> None:
        # never on behalf of a CPU: Python is not inside a CPU's access (its busy lock), so
        # ptr_fault() must enter its own read-side section (cpu == NULL); see ptreloc.h
        what = f"fault at {hex_addr(va)}"
        self._check(self.lib.ptr_fault(mm, self.ffi.NULL, self._u64("va", va), bool(write)),
                    what, {
            _errno.EFAULT: NotMapped(
                f"{what}: no region covers it (a segmentation fault); add_region() first",
                address=va,
            ),
            _errno.EACCES: ProtectionFault(f"{what}: write to a read-only mapping", address=va),
        })

    def test_and_clear(self, mm: Handle, va: int, dirty: bool) -> bool:
        fn = self.lib.ptr_test_and_clear_dirty if dirty else self.lib.ptr_test_and_clear_young
        what = f"test-and-clear-{'dirty' if dirty else 'young'} at {hex_addr(va)}"
        rc = self._check(fn(mm, self._u64("va", va)), what, {
            _errno.ENOENT: NotMapped(f"{what}: nothing is mapped there", address=va),
        })
        return rc == 1

    def share_table(self, dst: Handle, src: Handle, va: int, level: int) -> None:
        what = f"sharing the level-{level} table at {hex_addr(va)}"
        self._check(self.lib.ptr_share_table(dst, src, self._u64("va", va), level), what, {
            _errno.ENOENT: NotMapped(f"{what}: the source has no such table"),
            _errno.EEXIST: AlreadyMapped(
                f"{what}: the destination already has a table or leaf there"
            ),
            _errno.EINVAL: UsageError(
                f"{what}: only level-0/1 tables below the root of another address space of the "
                f"same arena can be shared (not PAE's fixed top entries)"
            ),
        })

    def repoint(self, mm: Handle, va: int, level: int, node: int) -> tuple[int, int]:
        old, new = self.ffi.new("uint32_t *"), self.ffi.new("uint32_t *")
        what = f"repointing the level-{level} table at {hex_addr(va)}"
        self._check(self.lib.ptr_repoint(mm, self._u64("va", va), level, node, old, new), what, {
            _errno.ENOENT: NotMapped(f"{what}: no such table"),
            _errno.EBUSY: UsageError(f"{what}: the table is shared"),
            _errno.EINVAL: UsageError(f"{what}: bad level or node"),
        })
        return int(old[0]), int(new[0])

    def count_tables(self, mm: Handle) -> tuple[list[int], list[list[int]]]:
        counts = self.ffi.new("uint32_t[]", self.max_levels)
        per_node = self.ffi.new(f"uint32_t[{self.max_nodes}][{self.max_levels}]")
        self.lib.ptr_mm_count_tables(mm, counts, per_node)
        return list(counts), [list(per_node[n]) for n in range(self.max_nodes)]

    # ---- CPUs ---------------------------------------------------------------------------------
    def cpu_create(self, arena: Handle) -> Handle:
        out = self.ffi.new("struct ptr_cpu **")
        self._check(self.lib.ptr_cpu_create(arena, out), "creating a CPU", {
            _errno.EMFILE: UsageError(f"an arena has at most {self.max_cpus} CPUs"),
        })
        return out[0]

    def cpu_destroy(self, cpu: Handle) -> None:
        self.lib.ptr_cpu_destroy(cpu)

    def cpu_switch_to(self, cpu: Handle, mm: Handle) -> None:
        self._check(self.lib.ptr_cpu_switch_to(cpu, mm if mm is not None else self.ffi.NULL),
                    "switching CPU", {
            _errno.EINVAL: UsageError("the address space belongs to another arena"),
        })

    def cpu_access(
        self, cpu: Handle, va: int, write: bool, handle_faults: bool
    ) -> tuple[int, int]:
        """Return (code, phys): code 0 ok, or PTR_FAULT_* (>0)."""
        phys = self.ffi.new("uint64_t *")
        fn = self.lib.ptr_cpu_access_fault if handle_faults else self.lib.ptr_cpu_access
        what = f"access at {hex_addr(va)}"
        rc = self._check(fn(cpu, self._u64("va", va), bool(write), phys), what, {
            _errno.EINVAL: UsageError(
                f"{what}: the CPU is idle; switch_to() an address space first"
            ),
            _errno.EFAULT: NotMapped(
                f"{what}: no mapping and no region covers it (a segmentation fault)", address=va
            ),
            _errno.EACCES: ProtectionFault(f"{what}: write to a read-only mapping", address=va),
        })
        return rc, int(phys[0])

    def cpu_flush(self, cpu: Handle) -> None:
        self.lib.ptr_cpu_flush(cpu)

    def _stats(self, st: Handle) -> dict[str, int]:
        return {k: int(getattr(st, k)) for k in (
            "accesses", "tlb_hits", "walks", "faults", "freed_reads", "shootdowns", "reloads",
            "pwc_hits", "fault_path_runs")}

    def cpu_stats(self, cpu: Handle) -> dict[str, int]:
        st = self.ffi.new("struct ptr_cpu_stats *")
        self.lib.ptr_cpu_get_stats(cpu, st)
        return self._stats(st)

    def shootdown(self, mm: Handle, reload_root: bool) -> None:
        self.lib.ptr_shootdown(mm, bool(reload_root))

    def run_cpus(self, mm: Handle, ncpus: int, naccesses: int, start: int, end: int,
                 write_pct: int, seed: int) -> dict[str, int]:
        if not 1 <= ncpus <= self.max_cpus:
            raise UsageError(f"ncpus must be 1..{self.max_cpus}")
        if not 0 <= write_pct <= 100:
            raise UsageError("write_pct must be 0..100")
        st = self.ffi.new("struct ptr_cpu_stats *")
        rc = self.lib.ptr_run_cpus(mm, ncpus, naccesses, self._u64("start", start),
                                   self._u64("end", end), write_pct, seed & U64, st)
        if rc == int(self.lib.PTR_FAULT_FREED):
            raise FreedFrameAccess("an emulated CPU read a freed table frame")
        if rc > 0:
            raise CoreError(f"an emulated CPU took an unhandled fault ({rc})")
        self._check(rc, "running CPUs", {
            _errno.EINVAL: UsageError("run_cpus: empty range"),
            _errno.EFAULT: NotMapped(
                "an emulated CPU accessed an address with no mapping or region"
            ),
        })
        return self._stats(st)



class Core(CoreBindings, MirrorBindings, PagescanBindings, X86Bindings):
    """One compiled core (``relo`` or ``norelo``) with typed, checked wrappers."""


_cores: dict[str, Core] = {}


def core(build: str = "relo") -> Core:
    """The (cached) Core for ``build`` ("relo" or "norelo")."""
    if build not in _cores:
        _cores[build] = Core(build)
    return _cores[build]
