"""The C core against tests/refmodel.py: random operation sequences, every geometry."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from refmodel import RefModel

from ptreloc.core import AddressSpace, Arena, Cpu, geometries
from ptreloc.errors import PtrelocError

GEOMETRIES = sorted(geometries())


def anchors(geo) -> list[int]:
    """VAs around which operations happen: the start, a few upper-level tables in, and the
    second top-level entry (so several tables at every level get built)."""
    top = geo.levels[-1]
    out = [0, 3 * geo.levels[1].entry_span]
    second_top = top.entry_span
    if (second_top >> geo.va_bits) == 0 and geo.nlevels > 2:
        out.append(second_top)
    return out


op = st.tuples(
    st.sampled_from(["map", "map", "unmap", "protect", "access", "access", "access", "tcy", "tcd"]),
    st.integers(0, 2),  # anchor
    st.integers(0, 1030),  # page index (crosses a 512/1024-entry PTE table)
    st.integers(1, 12),  # pages
    st.booleans(),  # writable / write
    st.integers(0, 5),  # huge when 0
)


def operations(mm, cpu, model, start, length, flag, huge, huge_level) -> dict:
    """kind -> (call on the core, call on the model)."""
    return {
        "map": (lambda: mm.map(start, length, writable=flag, huge=huge),
                lambda: model.map(start, length, start, huge_level if huge else 0, flag)),
        "unmap": (lambda: mm.unmap(start, length), lambda: model.unmap(start, length)),
        "protect": (lambda: mm.protect(start, length, writable=flag),
                    lambda: model.protect(start, length, flag)),
        "access": (lambda: cpu.access(start, write=flag, handle_faults=False).fault,
                   lambda: model.access(start, flag)),
        "tcy": (lambda: mm.test_and_clear_young(start),
                lambda: model.test_and_clear_young(start)),
        "tcd": (lambda: mm.test_and_clear_dirty(start),
                lambda: model.test_and_clear_dirty(start)),
    }


def run(name: str, ops: list) -> None:
    arena = Arena(name, nodes=1, frames_per_node=4096)
    g = arena.geometry
    mm = AddressSpace(arena)
    cpu = Cpu(arena)
    cpu.switch_to(mm)
    model = RefModel(g)
    anc = anchors(g)
    page = g.page_size
    huge_level = g.huge_levels[0] if g.huge_levels else None
    probes: set[int] = set()  # every VA an operation touched: the core maps none the model lacks
    try:
        for kind, a, i, n, flag, h in ops:
            base = anc[a % len(anc)]
            huge = kind == "map" and huge_level is not None and h == 0
            if huge:
                hs = g.levels[huge_level].entry_span
                start, length = base + (i % 8) * hs, (1 + n % 2) * hs
            else:
                start, length = base + i * page, n * page
            args = operations(mm, cpu, model, start, length, flag, huge, huge_level)[kind]
            got = want = None
            got_err = want_err = None
            try:
                got = args[0]()
            except PtrelocError as err:
                got_err = type(err)
            try:
                want = args[1]()
            except PtrelocError as err:
                want_err = type(err)
            assert (got, got_err) == (want, want_err), (kind, hex(start), length)
            probes.update((start, start + length - 1))
            check_state(arena, mm, model, probes)
    finally:
        cpu.close()
        mm.close()
        assert arena.frames_in_use == 0
        arena.close()


def check_state(arena: Arena, mm: AddressSpace, model: RefModel, probes: set[int]) -> None:
    for va in probes:
        if model.leaf_at(va) is None:
            assert mm.translate(va) is None, f"core maps {va:#x}, the model does not"
    for base, leaf in model.leaves.items():
        for va in (base, base + (1 << arena.geometry.levels[leaf.level].shift) - 1):
            t = mm.translate(va)
            assert t is not None, hex(va)
            assert (t.phys, t.level, t.writable, t.young, t.dirty) == model.translate(va), hex(va)
    assert mm.table_counts() == model.counts()
    per_level = {name: sum(arena.tables()[n][name] for n in arena.tables())
                 for name in model.counts()}
    assert per_level == model.counts()


@pytest.mark.parametrize("name", GEOMETRIES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op, min_size=1, max_size=40))
def test_core_matches_reference_model(name: str, ops: list) -> None:
    run(name, ops)


@pytest.mark.parametrize("name", GEOMETRIES)
def test_model_runner_detects_a_divergence(name: str, monkeypatch) -> None:
    """The comparison can fail: a model that forgets to set D on writes is caught."""
    import refmodel

    real_access = refmodel.RefModel.access

    def broken(self, va, write):
        return real_access(self, va, False)

    monkeypatch.setattr(refmodel.RefModel, "access", broken)
    with pytest.raises(AssertionError):
        run(name, [("map", 0, 1, 2, True, 1), ("access", 0, 1, 1, True, 1)])


@pytest.mark.parametrize("name", GEOMETRIES)
def test_model_runner_detects_an_extra_mapping(name: str, monkeypatch) -> None:
    """A leaf the core has and the model lacks is caught even when no later operation looks."""
    import refmodel

    real_map = refmodel.RefModel.map

    def forgets_leaves(self, start, length, phys, level, writable):
        real_map(self, start, length, phys, level, writable)
        for va in list(self.leaves):
            if start <= va < start + length:
                del self.leaves[va]

    monkeypatch.setattr(refmodel.RefModel, "map", forgets_leaves)
    with pytest.raises(AssertionError, match="the model does not"):
        run(name, [("map", 0, 1, 2, True, 1)])
