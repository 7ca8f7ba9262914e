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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from ptreloc import _native
from ptreloc._native.relocate import LevelReport, RelocationReport
from ptreloc.core import AddressSpace, Arena
from ptreloc.errors import InvalidNode, PartialResult, UsageError

__all__ = [
    "STRATEGIES",
    "MAX_BATCH",
    "DEFAULT_BATCH",
    "check_batch",
    "REASONS",
    "TableFrame",
    "LevelReport",
    "RelocationReport",
    "relocate",
    "stale_window_hook",
]

#: Relocation strategies, in the order docs/PROTOCOL.md discusses them.
STRATEGIES: tuple[str, ...] = _native.RELOC_STRATEGIES
#: Table frames per batch: 1..MAX_BATCH everywhere (library, migrate, watch, stress, the CLI).
MAX_BATCH = _native.MAX_BATCH
DEFAULT_BATCH = _native.DEFAULT_BATCH
check_batch = _native.check_batch

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


# LevelReport and RelocationReport are built once, from the C report, by
# ptreloc._native.relocate.relocate(); they are re-exported here as this module's API.


def _node_list(arena_nodes: int, nodes: int | Iterable[int], what: str) -> list[int]:
    if isinstance(nodes, bool):
        raise InvalidNode(f"{what}: expected a node id or a list of node ids, got {nodes!r}")
    ids = [nodes] if isinstance(nodes, int) else list(nodes)
    if not ids:
        raise InvalidNode(f"{what}: no nodes given")
    for n in ids:
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n < arena_nodes:
            raise InvalidNode(
                f"{what}: node {n!r} has no pool in this arena: use 0..{arena_nodes - 1}",
                node=n if isinstance(n, int) else None,
            )
    return sorted(set(ids))


def relocate(
    mm: AddressSpace | Sequence[AddressSpace],
    from_nodes: int | Iterable[int],
    to_node: int | Callable[[TableFrame], int | None],
    *,
    strategy: str = "rewalk",
    batch: int = DEFAULT_BATCH,
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
    nnodes = len(arena.nodes)
    sources = _node_list(nnodes, from_nodes, "from_nodes")
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

    report = _native.relocate(arena._core, [m._h for m in mms], sources, target, chooser,
                              strategy, batch, [lv.name for lv in geo.levels])
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
