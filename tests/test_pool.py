"""Evacuating and compacting a node's pool (Arena.evacuate / Arena.compact) against the
reference model: random trees in every geometry, a pool fragmented by a closed address space,
every strategy and batch size.  Afterwards every translation (phys, size, permission, accessed,
dirty) is what it was and what the model says; an evacuated pool holds no frame; a compacted
pool is packed low; no frame is in limbo; closing everything returns every frame."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from refmodel import RefModel
from test_relocate_property import build_tree, map_ops, page_vas, state, touch_pattern

from ptreloc.core import AddressSpace, Arena, Cpu, geometries
from ptreloc.errors import InvalidNode, RelocationUnsupported, UsageError
from ptreloc.relocate import STRATEGIES

GEOMETRIES = sorted(geometries())


def _fragment(arena: Arena, geo, ops) -> AddressSpace:
    """An address space whose tables interleave with the real one's; closed by the caller."""
    scratch = AddressSpace(arena, node=0)
    build_tree(geo, scratch, RefModel(geo), ops, 1)
    return scratch


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(GEOMETRIES),
    nnodes=st.integers(2, 3),
    ops=map_ops,
    scratch_ops=map_ops,
    strategy=st.sampled_from(STRATEGIES),
    batch=st.sampled_from([1, 3, 64, 10_000]),
    operation=st.sampled_from(["evacuate", "evacuate_to", "compact"]),
    two_spaces=st.booleans(),
)
def test_pool_operations_match_the_model(name, nnodes, ops, scratch_ops, strategy, batch,
                                         operation, two_spaces):
    arena = Arena(name, nodes=nnodes, frames_per_node=1024)
    geo = arena.geometry
    model = RefModel(geo)
    # the scratch space's tables come first, the real one's after and between them (ops
    # interleave by anchor), then the scratch space is closed: holes all over pool 0
    scratch = _fragment(arena, geo, scratch_ops)
    mm = AddressSpace(arena, node=0)
    cpu = Cpu(arena)
    second = AddressSpace(arena, node=0) if two_spaces else None
    try:
        build_tree(geo, mm, model, ops, 1)  # every table on node 0
        if second is not None:
            second.map(0, 8 * geo.page_size)
        scratch.close()
        vas = page_vas(geo, model)
        touch_pattern(cpu, mm, model, vas)
        cpu.switch_to(None)
        before = state(mm, vas)
        runs_before = arena.pool_runs(0)
        if operation == "compact":
            rep = arena.compact(0, strategy=strategy, batch=batch)
        else:
            to = 1 if operation == "evacuate_to" else None
            rep = arena.evacuate(0, to_node=to, strategy=strategy, batch=batch)
        assert rep.relocation.complete, rep.to_json()
        assert state(mm, vas) == before
        for va in vas:
            want = model.translate(va)
            got = mm.translate(va)
            assert got is not None and (got.phys, got.young, got.dirty) == (
                want[0], want[3], want[4]), hex(va)
        assert arena.limbo_frames == 0 and arena.freed_frame_accesses == 0
        assert rep.before == runs_before
        if operation == "compact":
            # only our spaces have tables in pool 0: all of them end packed low
            assert rep.after.packed and rep.above == 0, rep.to_json()
            assert rep.after.used == runs_before.used
            assert rep.after.high_water == rep.after.used
            assert rep.after.largest_free_run >= runs_before.largest_free_run
            assert rep.after.free_runs >= runs_before.free_runs
            assert rep.complete
        else:
            assert rep.left == 0 and rep.complete, rep.to_json()
            assert arena.pool(0)["in_use"] == 0
            assert sum(arena.tables()[0].values()) == 0
            assert rep.after.used == 0 and rep.after.largest_free_run == rep.after.nframes
            assert mm.node != 0 and rep.new_home == mm.node
            if operation == "evacuate_to":
                assert sum(arena.tables()[1].values()) > 0
    finally:
        cpu.close()
        mm.close()
        if second is not None:
            second.close()
    assert arena.frames_in_use == 0


def test_compaction_packs_a_fragmented_pool_and_frees_aligned_runs():
    """Two spaces interleave 2 MiB chunk by chunk over three 2 MiB runs of frames; one closes;
    compaction packs the other into the lowest slots and frees an aligned run."""
    arena = Arena("x86_64_4l", nodes=2, frames_per_node=2048, bind=False)
    a, b = AddressSpace(arena, 0), AddressSpace(arena, 0)
    chunk = 2 << 20
    for i in range(700):
        a.map(i * chunk, 4096)
        b.map(i * chunk, 4096)
    b.close()
    before = arena.pool_runs(0)
    assert before.run_frames == 512 and before.runs == 4
    assert not before.packed and before.free_runs == 1  # only the last run is untouched
    rep = arena.compact(0, strategy="rewalk")
    assert rep.after.packed and rep.above == 0
    assert rep.after.free_runs == 2 and rep.after.largest_free_run > before.largest_free_run
    assert rep.relocation.relocated > 300 and rep.relocation.reasons.get("kept", 0) >= 0
    for i in range(0, 700, 37):
        assert a.translate(i * chunk).phys == i * chunk
    a.close()


def test_evacuation_spreads_by_free_room_and_says_what_is_left():
    arena = Arena("x86_64_4l", nodes=3, frames_per_node=256, bind=False)
    arena.set_capacity(1, 8)
    mm = AddressSpace(arena, 0)
    mm.map(0, 40 << 21)  # 40 PTE tables
    rep = arena.evacuate(0)
    assert rep.complete and rep.left == 0 and rep.new_home == 2 and mm.node == 2
    t = arena.tables()
    assert sum(t[0].values()) == 0 and sum(t[1].values()) <= 8 and sum(t[2].values()) > 30
    # a target that cannot take everything: a partial evacuation, every translation unchanged
    arena.set_capacity(0, 256)
    mm.set_node(1)
    back = arena.evacuate(2, to_node=1)
    assert not back.complete and back.left > 0 and back.relocation.error
    assert mm.translate(39 << 21).phys == 39 << 21
    mm.close()
    assert arena.frames_in_use == 0


def test_pool_operation_bad_input():
    arena = Arena("x86_64_4l", nodes=2, bind=False)
    with pytest.raises(UsageError, match="no open address space"):
        arena.compact(0)
    mm = AddressSpace(arena, 0)
    with pytest.raises(InvalidNode):
        arena.evacuate(2)
    with pytest.raises(InvalidNode):
        arena.evacuate(0, to_node=0)
    with pytest.raises(UsageError, match="strategy"):
        arena.compact(0, strategy="fast")
    with pytest.raises(UsageError, match="batch"):
        arena.evacuate(0, batch=0)
    other = Arena("x86_64_4l", nodes=2, bind=False)
    stranger = AddressSpace(other, 0)
    with pytest.raises(UsageError, match="open address spaces of this arena"):
        arena.compact(0, spaces=[stranger])
    with pytest.raises(UsageError, match="twice"):
        arena.compact(0, spaces=[mm, mm])
    with pytest.raises(InvalidNode, match="one node"):
        Arena("x86_64_4l", nodes=1).evacuate(0)
    norelo = Arena("x86_64_4l", nodes=2, build="norelo", bind=False)
    AddressSpace(norelo, 0)
    with pytest.raises(RelocationUnsupported):
        norelo.compact(0)
    stranger.close()
    mm.close()


def test_pool_counters_add_up_after_concurrent_allocation_and_relocation():
    """A pool's counters (in_use, live per level, limbo) are written only under the pool lock,
    with a plain load and store (arena.c, pool_add()): CPUs faulting tables in on C threads while
    relocations move them between the pools and address spaces come and go, then no counter
    was written without the lock (a lost update is too rare to provoke by racing; pool_add()
    counts the writes that would risk one) and every count is what the frames say - in_use =
    the slots not free (a scan of the frame states), live per level = the tables the address
    spaces link, nothing left in limbo."""
    import threading

    from ptreloc.core import run_cpus
    from ptreloc.relocate import relocate

    arena = Arena("x86_64_4l", nodes=2, frames_per_node=8192)
    span = 1 << 30  # 1 GiB each: ~512 PTE tables faulted in per address space
    spaces = [AddressSpace(arena, node=0) for _ in range(3)]
    for i, mm in enumerate(spaces):
        mm.add_region(i * span, span)
    errors: list[BaseException] = []
    moved = [0]
    stop = threading.Event()

    def relocator() -> None:
        try:
            k = 0
            while not stop.is_set():
                moved[0] += relocate(spaces[0], k % 2, 1 - k % 2, batch=7).relocated
                k += 1
        except BaseException as e:  # reported below
            errors.append(e)

    t = threading.Thread(target=relocator, daemon=True)
    t.start()
    try:
        for i, mm in enumerate(spaces):
            run_cpus(mm, 3, 3000, i * span, span, write_pct=30, seed=i + 1)
        churn = AddressSpace(arena, node=1)  # tables allocated and freed meanwhile
        churn.add_region(3 * span, span)
        run_cpus(churn, 2, 2000, 3 * span, span, seed=9)
        churn.close()
    finally:
        stop.set()
        t.join(60)
    assert not t.is_alive() and not errors, errors
    assert moved[0] > 1000, moved  # the relocations ran beside the faults
    levels = arena.geometry.levels
    linked = {n: {lv.name: 0 for lv in levels} for n in (0, 1)}
    for mm in spaces:
        for n, per_level in mm.tables().items():
            for name, count in per_level.items():
                linked[n][name] += count
    for n in (0, 1):
        info = arena.pool(n)
        assert info["limbo"] == 0 and info["unlocked_writes"] == 0, info
        assert info["in_use"] == arena.pool_runs(n).used == sum(info["live"]), info
        assert {lv.name: info["live"][lv.index] for lv in levels} == linked[n], (n, info)
    for mm in spaces:
        mm.close()
    assert arena.frames_in_use == 0
    arena.close()
