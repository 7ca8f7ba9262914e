"""Relocate the live page tables of emulated address spaces between nodes.

::

    from ptreloc.core import Arena, AddressSpace
    from ptreloc.relocate import relocate

    arena = Arena("x86_64_4l", nodes=2)
    mm = AddressSpace(arena, node=0)
    mm.map(0x4000_0000, 64 << 20)
    report = relocate(mm, from_nodes=0, to_node=1)          # every level, the root included
    print(report.relocated, report.bytes_copied, report.levels["pte"].relocated)

``to_node`` may instead be a *chooser*: a callable that gets a :class:`TableFrame` (level,
frame, base VA, current node) and returns the node that frame should go to, or ``None`` to
leave it - so a caller can move tables "to where the data is".  The chooser runs before anything
moves; if it raises, nothing moves and the exception propagates.

Strategies (docs/PROTOCOL.md explains each step): ``rewalk`` (the 2008 RFC's concurrent scheme
with the A/D merge; the default), ``stop`` (quiesce every CPU, relocate, reload) and ``naive``
(copy + repoint with no merge - it loses dirty bits under concurrency and exists only to show it).

An allocation failure on a target node (pool at capacity, or injected with
``Arena.fail_nth_allocation``) does not raise: it stops the relocation with every translation
unchanged and returns a report with ``complete == False``, the ``error`` and the frames not
relocated with their reasons (``strict=True`` raises :class:`~ptreloc.errors.PartialResult`).
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ptreloc import _native
from ptreloc.core import AddressSpace, Arena
from ptreloc.errors import InvalidNode, PartialResult, UsageError

__all__ = [
    "STRATEGIES",
    "REASONS",
    "TableFrame",
    "LevelReport",
    "RelocationReport",
    "relocate",
    "stale_window_hook",
]

#: Relocation strategies, in the order docs/PROTOCOL.md discusses them.
STRATEGIES: tuple[str, ...] = tuple(_native.RELOC_STRATEGIES)

#: Why a frame on a source node was not relocated.
REASONS: dict[str, str] = {
    "target_full": "the target node's pool is at capacity",
    "alloc_failed": "allocating on the target failed (injected or out of memory)",
    "shared": "shared with an address space outside the relocated set",
    "aborted": "not attempted: an earlier allocation failed (or the chooser cancelled)",
    "bad_target": "the chooser named a node the arena does not have",
    "kept": "the chooser left it where it is",
    "vanished": "no longer linked when its batch ran",
}


@dataclass(frozen=True)
class TableFrame:
    """What a chooser is asked about: one table frame on a source node."""

    level: int
    level_name: str
    frame: int
    base_va: int  # first virtual address the table maps
    node: int  # where it is now


@dataclass
class LevelReport:
    name: str
    found: int  # frames of this level on a source node
    relocated: int
    not_relocated: int
    reasons: dict[str, int]
    bytes_copied: int  # the tables' own bytes (PAE top: 32 per table, not a page)


@dataclass
class RelocationReport:
    strategy: str
    batch: int
    complete: bool
    error: str | None
    from_nodes: list[int]
    to_node: int | None  # None when a chooser decided
    frames_found: int
    relocated: int
    not_relocated: int
    reasons: dict[str, int]
    bytes_copied: int
    batches: int
    shootdowns: int
    root_reloads: int
    root_switches: int
    ad_merged: int  # rewalk: leaf entries whose A/D bits had to come from the old copy
    ad_lost: int  # naive: leaf entries whose A/D bits stale CPUs wrote into a dropped copy
    timings_s: dict[str, float]
    levels: dict[str, LevelReport] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _node_list(arena_nodes: int, nodes: int | Iterable[int], what: str) -> list[int]:
    if isinstance(nodes, bool):
        raise InvalidNode(f"{what}: expected a node id or a list of node ids, got {nodes!r}")
    ids = [nodes] if isinstance(nodes, int) else list(nodes)
    if not ids:
        raise InvalidNode(f"{what}: no nodes given")
    for n in ids:
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n < arena_nodes:
            raise InvalidNode(
                f"{what}: node {n!r} has no pool in this arena: use 0..{arena_nodes - 1}"
            )
    return sorted(set(ids))


def relocate(
    mm: AddressSpace | Sequence[AddressSpace],
    from_nodes: int | Iterable[int],
    to_node: int | Callable[[TableFrame], int | None],
    *,
    strategy: str = "rewalk",
    batch: int = 64,
    strict: bool = False,
) -> RelocationReport:
    """Move every table of ``mm`` that sits on a node of ``from_nodes`` to ``to_node`` (or to
    where the chooser says), every level including the root.

    ``mm`` may be a list of address spaces of one arena: a table shared between them moves once
    with every sharer repointed; a table shared with an address space outside the list is
    skipped with reason ``shared``.
    """
    mms = [mm] if isinstance(mm, AddressSpace) else list(mm)
    if not mms or not all(isinstance(m, AddressSpace) for m in mms):
        raise UsageError("relocate: pass an AddressSpace or a list of them")
    arena = mms[0].arena
    if any(m.arena is not arena for m in mms):
        raise UsageError("relocate: every address space must belong to the same arena")
    if len({id(m) for m in mms}) != len(mms):
        raise UsageError("relocate: an address space is listed twice")
    arena.require_relocation()
    if strategy not in STRATEGIES:
        raise UsageError(
            f"unknown relocation strategy {strategy!r}: use one of {', '.join(STRATEGIES)}"
        )
    if isinstance(batch, bool) or not isinstance(batch, int) or batch <= 0:
        raise UsageError(f"batch must be a positive number of frames, got {batch!r}")
    nnodes = len(arena.nodes)
    sources = _node_list(nnodes, from_nodes, "from_nodes")
    mask = sum(1 << n for n in sources)
    geo = arena.geometry
    chooser = None
    target: int | None = None
    if callable(to_node):
        user = to_node

        def chooser(level: int, frame: int, base_va: int, node: int) -> int | None:
            t = user(TableFrame(level, geo.levels[level].name, frame, base_va, node))
            if t is not None and (isinstance(t, bool) or not isinstance(t, int)):
                raise UsageError(f"the chooser must return a node id or None, not {t!r}")
            return t
    else:
        if isinstance(to_node, bool) or not isinstance(to_node, int):
            raise InvalidNode(f"to_node: one node id or a chooser callable, not {to_node!r}")
        target = _node_list(nnodes, to_node, "to_node")[0]

    d = _native.relocate(arena._core, [m._h for m in mms], mask,
                         -1 if target is None else target, chooser, strategy, batch)
    rc = d["rc"]
    error = None
    if rc == -errno.ENOSPC:
        error = "target_full: a target node's table pool is at capacity (raise its capacity)"
    elif rc == -errno.ENOMEM:
        error = "alloc_failed: a table allocation on the target failed"
    elif rc == -errno.ECANCELED:
        error = "cancelled by the chooser"
    elif rc:
        error = f"relocation stopped: {errno.errorcode.get(-rc, rc)}"
    levels = {
        lv.name: LevelReport(lv.name, **d["levels"][lv.index]) for lv in geo.levels
    }
    report = RelocationReport(
        strategy=strategy, batch=batch, complete=rc == 0, error=error, from_nodes=sources,
        to_node=target, frames_found=d["frames_found"], relocated=d["relocated"],
        not_relocated=d["not_relocated"], reasons=d["reasons"], bytes_copied=d["bytes_copied"],
        batches=d["batches"], shootdowns=d["shootdowns"], root_reloads=d["root_reloads"],
        root_switches=d["root_switches"], ad_merged=d["ad_merged"], ad_lost=d["ad_lost"],
        timings_s=d["timings_s"], levels=levels,
    )
    if strict and (not report.complete or report.not_relocated):
        raise PartialResult(
            f"relocated {report.relocated} of {report.frames_found} table frames "
            f"({report.error or 'some were skipped: ' + ', '.join(report.reasons)})"
        )
    return report


@contextlib.contextmanager
def stale_window_hook(arena: Arena, fn: Callable[[int], None]) -> Iterator[None]:
    """TEST HOOK: while active, ``fn(batch_index)`` runs inside every rewalk/naive batch after
    the copies and repoints and before the shootdown - the window in which a CPU whose
    paging-structure cache still points at an old copy writes A/D bits there.  ``fn`` runs
    with the batch's table locks held: it may drive ``Cpu.access`` on present pages, nothing
    that takes a table lock (faults, unmap, test-and-clear).  One hook per process.  An
    exception raised by ``fn`` is re-raised when the block exits."""
    arena.require_relocation()
    core = arena._core
    _native.set_relocation_test_hook(core, fn)
    try:
        yield
    finally:
        _native.set_relocation_test_hook(core, None)
    _native.take_hook_error(core)
