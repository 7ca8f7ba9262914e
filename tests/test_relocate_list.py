"""Relocation's collection from the per-mm table list, against the reference model.

The relocation engine no longer scans an address space's tree to find its tables: each mm
keeps a list of the table frames linked in it (csrc/pgtable.c: the populate path appends,
relocation and ``repoint_table`` replace in place; an mm that ever shared a table is collected
by scanning instead).  A list that missed a table would leave it behind on the source node; one
that kept a replaced frame would make the next relocation skip it as vanished, or read a freed
frame.  So random sequences of maps (new tables on random nodes), demand faults, hand repoints,
hugetlb-style sharing and relocations - one address space alone (the path that repoints from
the batch's first rewalk) or both together, with batch sizes from 1 up - are checked after every
relocation:

* every table reachable in the relocated address spaces is on the target node, and the report
  found and moved exactly the tables that were on the sources (nothing skipped);
* every translation is what the reference model says (phys, size, permission, accessed, dirty);
* no walk read a freed frame, and closing everything returns every frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from refmodel import RefModel
from test_relocate_property import anchor_va, page_vas, state

from ptreloc.core import AddressSpace, Arena, Cpu, geometries
from ptreloc.errors import AlreadyMapped, PtrelocError
from ptreloc.relocate import relocate

GEOMETRIES = sorted(geometries())
NODES = 3


@dataclass(frozen=True)
class Map:
    anchor: int
    page: int
    pages: int
    node: int


@dataclass(frozen=True)
class Fault:
    page: int  # in the demand-fault region, whose tables come from the mm's node


@dataclass(frozen=True)
class Repoint:
    which: int  # a mapped page, by index
    level: int  # 0 or 1 (clamped to the geometry)
    node: int


@dataclass(frozen=True)
class Share:
    which: int  # a mapped page of the first mm whose PTE table the second links


@dataclass(frozen=True)
class Relocate:
    to: int
    both: bool  # the two address spaces together, else the first alone
    batch: int


ops = st.lists(st.one_of(
    st.builds(Map, st.integers(0, 3), st.integers(0, 3000), st.integers(1, 5),
              st.integers(0, NODES - 1)),
    st.builds(Fault, st.integers(0, 2047)),
    st.builds(Repoint, st.integers(0, 99), st.integers(0, 1), st.integers(0, NODES - 1)),
    st.builds(Share, st.integers(0, 99)),
    st.builds(Relocate, st.integers(0, NODES - 1), st.booleans(),
              st.sampled_from([1, 2, 3, 7, 64])),
), min_size=1, max_size=24)


def _on_other_nodes(mm: AddressSpace, node: int) -> int:
    return sum(sum(levels.values()) for n, levels in mm.tables().items() if n != node)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(GEOMETRIES), script=ops)
def test_relocation_finds_every_table_through_the_lists(name, script):
    arena = Arena(name, nodes=NODES)
    geo = arena.geometry
    mm, other = AddressSpace(arena, node=0), AddressSpace(arena, node=1)
    model = RefModel(geo)
    faulted: set[int] = set()  # demand-faulted pages (not in the model: compared before/after)
    shared_vas: set[int] = set()  # pages of the first mm's tables the second links
    # a demand-fault region far from the anchors: its tables come from the mm's own node
    region = anchor_va(geo, 3) + 4096 * geo.page_size
    region_pages = 2048
    if (region + region_pages * geo.page_size - 1) >> geo.va_bits:
        region, region_pages = anchor_va(geo, 2) + 4096 * geo.page_size, 2048
    regioned = not (region + region_pages * geo.page_size - 1) >> geo.va_bits
    if regioned:
        mm.add_region(region, region_pages * geo.page_size, region)
    cpu = Cpu(arena)
    limbo: list[int] = []
    shared = False
    try:
        for op in script:
            if isinstance(op, Map):
                start = anchor_va(geo, op.anchor) + op.page * geo.page_size
                length = op.pages * geo.page_size
                if (start + length - 1) >> geo.va_bits:
                    continue
                try:
                    model.map(start, length, start, 0, True)
                except (AlreadyMapped, PtrelocError):
                    continue
                mm.map(start, length, table_node=op.node)
            elif isinstance(op, Fault):
                if regioned:
                    va = region + op.page * geo.page_size
                    mm.fault(va)
                    faulted.add(va)
            elif isinstance(op, Repoint):
                vas = page_vas(geo, model)
                if not vas:
                    continue
                level = min(op.level, geo.nlevels - 2)
                try:
                    old, _new = mm.repoint_table(vas[op.which % len(vas)], level, op.node)
                except PtrelocError:
                    continue  # shared (-EBUSY) or PAE's fixed top level
                # no CPU runs mm yet: the old copy is unreachable once no walker holds it
                mm.shootdown(reload_root=True)
                limbo.append(old)
            elif isinstance(op, Share):
                vas = page_vas(geo, model)
                if not vas or geo.nlevels < 3 or geo.top_preloaded:
                    continue
                va = vas[op.which % len(vas)]
                try:
                    other.share_table_from(mm, va, 0)
                except PtrelocError:
                    continue  # already linked there, or the first mm's entry is a huge leaf
                span = geo.levels[1].entry_span
                shared_vas.update(v for v in vas if v - v % span == va - va % span)
                shared = True
            else:
                limbo_seen = bool(limbo)
                for f in limbo:
                    arena.free_frame_unsafely(f)
                limbo.clear()
                both = op.both or shared
                spaces = [mm, other] if both else [mm]
                mine = page_vas(geo, model) + sorted(faulted)
                theirs = sorted(shared_vas)
                before = (state(mm, mine), state(other, theirs))
                on_sources = sum(_on_other_nodes(s, op.to) for s in spaces)
                r = relocate(spaces if both else mm, range(NODES), op.to, batch=op.batch)
                event("relocated: " + ("scan (shared)" if shared else
                                       "lists, two mms" if both else "lists, one mm"))
                if limbo_seen:
                    event("relocated after a hand repoint")
                assert r.not_relocated == 0, r.reasons
                assert r.relocated == r.frames_found
                if not shared:  # a shared table is counted once, reached twice
                    assert r.relocated == on_sources
                for s in spaces:
                    assert _on_other_nodes(s, op.to) == 0
                assert (state(mm, mine), state(other, theirs)) == before
                assert arena.freed_frame_accesses == 0
                # a CPU touches the moved tree: walks through the new copies set A/D
                vas = page_vas(geo, model)
                cpu.switch_to(mm)
                for i, va in enumerate(vas[:40]):
                    cpu.access(va, write=i % 2 == 0)
                    model.access(va, i % 2 == 0)
                cpu.switch_to(None)
        assert arena.freed_frame_accesses == 0
        vas = page_vas(geo, model)
        assert state(mm, vas) == {va: _model_state(model, va) for va in vas}
    finally:
        for f in limbo:
            arena.free_frame_unsafely(f)
        cpu.close()
        other.close()
        mm.close()
    assert arena.frames_in_use == 0
    arena.close()


def _model_state(model: RefModel, va: int) -> tuple | None:
    """The model's translation in state()'s terms (the model names the leaf's level)."""
    t = model.translate(va)
    if t is None:
        return None
    phys, level, writable, young, dirty = t
    return phys, model.span(level), writable, young, dirty


@pytest.mark.parametrize("name", GEOMETRIES)
def test_tables_faulted_in_between_relocations_move_too(name):
    """A table the populate path links after a relocation (on the mm's new node) is on the
    list for the next one: back and forth, with new tables each time, nothing stays behind."""
    arena = Arena(name, nodes=2)
    geo = arena.geometry
    mm = AddressSpace(arena, node=0)
    try:
        span = geo.levels[1].entry_span  # one PTE table each
        base = anchor_va(geo, 1)
        for i in range(6):
            va = base + i * span
            if (va + geo.page_size - 1) >> geo.va_bits:
                break
            mm.map(va, geo.page_size, table_node=i % 2)
            to = (i + 1) % 2
            mm.set_node(to)
            r = relocate(mm, range(2), to, batch=1 + i)
            assert r.not_relocated == 0 and _on_other_nodes(mm, to) == 0
            assert r.relocated == sum(mm.table_counts().values())
    finally:
        mm.close()
    assert arena.frames_in_use == 0
    arena.close()
