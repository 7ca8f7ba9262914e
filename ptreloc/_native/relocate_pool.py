"""Wrappers over csrc/relocate_pool.cdef: evacuating and compacting a node's pool of table frames.

Both run the one relocation engine (csrc/relocate.c) through a chooser written in C
(csrc/relocate_pool.c); this module checks their arguments, turns ``-errno`` into
``ptreloc.errors`` and builds :class:`PoolReport` once from ``struct ptr_evac_report`` - its
``relocation`` is the same :class:`RelocationReport` a relocation returns, built by the same
function.
"""

from __future__ import annotations

import errno as _errno
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ptreloc._native._base import Handle
from ptreloc._native.core import Core
from ptreloc._native.relocate import (
    MAX_MMS,
    RelocationReport,
    _report,
    check_batch,
    strategy_code,
)
from ptreloc.errors import InvalidNode, RelocationUnsupported, UsageError

__all__ = ["PoolRuns", "PoolReport", "pool_runs", "evacuate", "compact"]


@dataclass(frozen=True)
class PoolRuns:
    """How fragmented one pool is (``struct ptr_pool_runs``)."""

    nframes: int
    used: int  # slots not free (live or limbo)
    largest_free_run: int  # longest run of consecutive free slots
    free_runs: int  # free runs of ``run_frames`` slots aligned to ``run_frames`` (2 MiB)
    runs: int  # such aligned runs wholly inside the pool
    run_frames: int  # frames per 2 MiB (512 for 4 KiB frames)
    high_water: int  # one past the highest used slot, relative to the pool's first
    packed: bool  # every used slot is below first + used

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PoolReport:
    """One evacuation or compaction of a pool (``struct ptr_evac_report``)."""

    operation: str  # "evacuate" or "compact"
    node: int
    to_node: int | None  # evacuation's target; None: spread by free room; compaction: node
    new_home: int | None  # evacuation: where address spaces that allocated on the node now do
    passes: int
    left: int  # frames of the given address spaces still on the node afterwards
    above: int  # compaction: used slots still at or above first + used (0 = packed low)
    before: PoolRuns
    after: PoolRuns
    relocation: RelocationReport

    @property
    def complete(self) -> bool:
        if self.operation == "evacuate":
            return self.relocation.complete and self.left == 0
        return self.relocation.complete and self.above == 0

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["complete"] = self.complete
        return d


def _runs(r: Any) -> PoolRuns:
    return PoolRuns(nframes=int(r.nframes), used=int(r.used),
                    largest_free_run=int(r.largest_free_run), free_runs=int(r.free_runs),
                    runs=int(r.runs), run_frames=int(r.run_frames),
                    high_water=int(r.high_water), packed=bool(r.packed))


def pool_runs(c: Core, arena: Handle, node: int) -> PoolRuns:
    """The free runs of pool ``node`` now (a snapshot)."""
    out = c.ffi.new("struct ptr_pool_runs *")
    c._check(int(c.lib.ptr_arena_pool_runs(arena, node, out)), "pool runs", node=node)
    return _runs(out)


def _checked(c: Core, mms: Sequence[Handle], strategy: str, batch: int, what: str) -> int:
    if not c.relocation_supported:
        raise RelocationUnsupported(
            f"{what} relocates tables, which is compiled out of the norelo core: use an arena "
            f"with build='relo'"
        )
    code = strategy_code(c, strategy)
    check_batch(batch)
    if not 1 <= len(mms) <= MAX_MMS:
        raise UsageError(f"{what}: 1..{MAX_MMS} address spaces at a time, not {len(mms)}")
    return code


def _finish(c: Core, op: str, rc: int, rep: Any, node: int, to_node: int | None,
            strategy: str, batch: int, level_names: Sequence[str]) -> PoolReport:
    if rc == -_errno.EINVAL:
        raise UsageError(f"{op}: bad arguments (distinct address spaces of one arena, and an "
                         f"evacuation target other than the node)")
    if rc == -_errno.ENODEV:
        raise InvalidNode(f"{op}: node {node} (or target {to_node}) has no pool in this arena, "
                          f"or there is no other pool to evacuate to", node=node)
    if rc == -_errno.EOPNOTSUPP:
        raise RelocationUnsupported("relocation is compiled out of this core")
    reloc = _report(c, rep.reloc, rc, strategy, batch, [node],
                    node if op == "compact" else to_node, level_names)
    home = int(rep.new_home)
    return PoolReport(operation=op, node=node, to_node=to_node,
                      new_home=home if home >= 0 else None, passes=int(rep.passes),
                      left=int(rep.left), above=int(rep.above), before=_runs(rep.before),
                      after=_runs(rep.after), relocation=reloc)


def evacuate(c: Core, mms: Sequence[Handle], node: int, to_node: int | None, strategy: str,
             batch: int, level_names: Sequence[str]) -> PoolReport:
    """ptr_evacuate(): every table of ``mms`` off pool ``node`` (``to_node`` None: spread over
    the other pools by free room).  An allocation failure is a report with ``complete`` False."""
    code = _checked(c, mms, strategy, batch, "evacuate")
    rep = c.ffi.new("struct ptr_evac_report *")
    arr = c.ffi.new("struct ptr_mm *[]", list(mms))
    rc = int(c.lib.ptr_evacuate(arr, len(mms), node, -1 if to_node is None else to_node, code,
                                batch, rep))
    return _finish(c, "evacuate", rc, rep, node, to_node, strategy, batch, level_names)


def compact(c: Core, mms: Sequence[Handle], node: int, strategy: str, batch: int,
            level_names: Sequence[str]) -> PoolReport:
    """ptr_compact(): pack the tables of ``mms`` on pool ``node`` into its lowest slots."""
    code = _checked(c, mms, strategy, batch, "compact")
    rep = c.ffi.new("struct ptr_evac_report *")
    arr = c.ffi.new("struct ptr_mm *[]", list(mms))
    rc = int(c.lib.ptr_compact(arr, len(mms), node, code, batch, rep))
    return _finish(c, "compact", rc, rep, node, node, strategy, batch, level_names)
