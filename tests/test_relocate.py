"""The relocation engine: every geometry and level, the root, non-page-sized tables, shared
tables, allocation failure at every point, the stale-CPU window by hand, bad input."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from ptreloc import _native
from ptreloc.core import AddressSpace, Arena, Cpu, geometries
from ptreloc.errors import InvalidNode, PartialResult, RelocationUnsupported, UsageError
from ptreloc.relocate import STRATEGIES, TableFrame, relocate, stale_window_hook

GEOMETRIES = sorted(geometries())
VA = 0x40_0000 * 16  # 64 MiB


def layout(arena: Arena) -> list[tuple[int, int, bool]]:
    """(start, length, huge) ranges that give several tables at every level: three PTE tables
    near VA, a range in a far top-level entry, a huge leaf where the format has them and, on
    x86-64, a range in the upper (sign-extended) half."""
    g = arena.geometry
    top = g.levels[-1]
    pte_span = g.levels[0].entry_span * g.levels[0].entries
    far_index = top.entries // 2 - 1 if g.canonical else top.entries - 1
    ranges = [(VA, 2 * pte_span + 3 * g.page_size, False),
              (far_index * top.entry_span, 4 * g.page_size, False)]
    if g.huge_levels:
        h = g.levels[g.huge_levels[0]].entry_span
        ranges.append((((VA + (1 << 30)) // h + 1) * h, h, True))
    if g.canonical:
        ranges.append(((1 << 64) - (1 << (g.va_bits - 1)), 2 * g.page_size, False))
    return ranges


def populate(arena: Arena, mm: AddressSpace, cpu: Cpu) -> list[int]:
    """Map the layout, dirty/age some pages; return every page VA (huge: first/last page)."""
    g = arena.geometry
    vas = []
    for start, length, huge in layout(arena):
        phys = start % g.phys_limit & ~(length - 1) if huge else start % (1 << 31)
        mm.map(start, length, phys=phys, huge=huge)
        if huge:
            vas += [start, start + length - g.page_size]
        else:
            vas += range(start, start + length, g.page_size)
    for i, va in enumerate(vas):
        if i % 3 == 0:
            cpu.access(va, write=True)
        elif i % 3 == 1:
            cpu.access(va)
    return vas


def populated(name: str, frames_per_node: int) -> tuple[Arena, AddressSpace, Cpu, list[int]]:
    """A two-node (unbound) arena with the layout mapped, tables on node 0, and a CPU running
    the mm; the page VAs ``populate`` returns."""
    arena = Arena(name, nodes=2, frames_per_node=frames_per_node, bind=False)
    mm = AddressSpace(arena, node=0)
    cpu = Cpu(arena)
    cpu.switch_to(mm)
    return arena, mm, cpu, populate(arena, mm, cpu)


def snapshot(mm: AddressSpace, vas: list[int]) -> dict[int, tuple]:
    out = {}
    for va in vas:
        t = mm.translate(va)
        out[va] = None if t is None else (t.phys, t.page_size, t.writable, t.young, t.dirty)
    return out


@pytest.fixture(params=GEOMETRIES)
def world(request):
    arena, mm, cpu, vas = populated(request.param, frames_per_node=512)
    yield arena, mm, cpu, vas
    cpu.close()
    mm.close()
    assert arena.frames_in_use == 0, "table frames leaked"
    arena.close()


# ---- every level moves, every translation stays -------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_frame_moves_and_every_translation_stays(world, strategy):
    arena, mm, cpu, vas = world
    g = arena.geometry
    before = snapshot(mm, vas)
    counts = mm.table_counts()
    in_use = arena.frames_in_use
    old_root = mm.root_frame
    reloads = cpu.stats["reloads"]
    assert all(v == 0 for v in mm.tables()[1].values())

    report = relocate(mm, from_nodes=0, to_node=1, strategy=strategy, batch=4)

    assert report.complete and report.error is None
    assert snapshot(mm, vas) == before
    assert mm.tables()[1] == counts and all(v == 0 for v in mm.tables()[0].values())
    assert arena.tables()[0] == {lv.name: 0 for lv in g.levels}
    assert report.relocated == report.frames_found == sum(counts.values())
    assert report.not_relocated == 0
    for lv in g.levels:
        lr = report.levels[lv.name]
        assert lr.relocated == lr.found == counts[lv.name]
        assert lr.bytes_copied == counts[lv.name] * lv.table_bytes
    assert report.bytes_copied == sum(counts[lv.name] * lv.table_bytes for lv in g.levels)
    # the root moved too, with a root reload
    assert mm.root_frame != old_root and arena.frame(mm.root_frame)["node"] == 1
    assert report.root_switches == 1 and report.root_reloads >= 1
    assert report.batches == -(-report.relocated // 4)
    # old copies freed after the grace period: nothing in limbo, nothing extra in use
    assert arena.limbo_frames == 0 and arena.frames_in_use == in_use
    assert arena.frame(old_root)["state"] == "free"
    # the CPU (idle, so serviced remotely by the shootdown) reloaded its root and keeps
    # working on the new tables
    for va in vas[:8]:
        assert cpu.access(va, write=True).phys == before[va][0]
        assert mm.translate(va).dirty
    assert cpu.stats["reloads"] > reloads
    assert arena.freed_frame_accesses == 0
    json.dumps(report.to_json())


def test_relocation_back_and_forth(world):
    arena, mm, cpu, vas = world
    before = snapshot(mm, vas)
    for i in range(6):
        r = relocate(mm, i % 2, (i + 1) % 2, strategy=STRATEGIES[i % 3], batch=1 + i)
        assert r.complete and r.relocated == r.frames_found > 0
    assert snapshot(mm, vas) == before
    assert all(v == 0 for v in mm.tables()[1].values())


def test_nothing_on_the_source_is_a_complete_no_op(world):
    arena, mm, cpu, vas = world
    r = relocate(mm, 1, 0)
    assert r.complete and r.frames_found == r.relocated == 0 and r.batches == 0


# ---- non-page-sized tables and PAE's preloaded top --------------------------------------------


@pytest.mark.parametrize("name,top_bytes", [("x86_pae", 32), ("arm64_64k_48", 512)])
def test_small_top_tables_copy_their_own_bytes(name, top_bytes):
    arena, mm, cpu, vas = populated(name, frames_per_node=64)
    before = snapshot(mm, vas)
    top = arena.geometry.levels[-1]
    assert top.table_bytes == top_bytes < arena.geometry.frame_bytes
    r = relocate(mm, 0, 1)
    assert r.levels[top.name].bytes_copied == top_bytes
    assert snapshot(mm, vas) == before
    assert cpu.access(vas[-1], write=True).ok and mm.translate(vas[-1]).dirty
    cpu.close()
    mm.close()
    assert arena.frames_in_use == 0


def test_pae_pmd_move_needs_the_root_reload():
    """PAE CPUs latch the four PDPTEs at CR3 load: moving a PMD table (whose parent is the top
    table) must reload the root even though the root itself stays put."""
    arena = Arena("x86_pae", nodes=2, frames_per_node=64, bind=False)
    mm = AddressSpace(arena)
    cpu = Cpu(arena)
    cpu.switch_to(mm)
    mm.map(VA, 4096)
    cpu.access(VA)
    root = mm.root_frame
    r = relocate(mm, 0, lambda t: 1 if t.level_name == "pmd" else None)
    assert mm.root_frame == root and r.root_switches == 0 and r.root_reloads >= 1
    assert r.levels["pmd"].relocated == 4  # all four preallocated PMD tables
    cpu.flush()  # drop TLB/PWC: the next walk must come from the reloaded PDPTEs
    assert cpu.access(VA, write=True).ok
    assert mm.translate(VA).dirty and arena.freed_frame_accesses == 0
    cpu.close()
    mm.close()
    arena.close()


# ---- the stale-CPU window, by hand -------------------------------------------------------------


@pytest.mark.tsan
@pytest.mark.parametrize("name", GEOMETRIES)
def test_merge_keeps_the_dirty_bit_a_stale_cpu_wrote_into_the_old_copy(name):
    """A CPU's paging-structure cache points at the PTE table; the relocation copies and
    repoints it; BEFORE the shootdown the CPU writes, walking from the stale pointer, so D lands
    in the old copy.  rewalk merges it into the new entry; naive loses it - proving that the
    merge is what protects the bit."""
    results = {}
    for strategy in ("rewalk", "naive"):
        arena = Arena(name, nodes=2, frames_per_node=64, bind=False)
        mm = AddressSpace(arena)
        cpu = Cpu(arena)
        cpu.switch_to(mm)
        page = arena.geometry.page_size
        mm.map(VA, 2 * page)
        cpu.access(VA)  # caches the PTE table pointer and a clean TLB entry
        seen = []

        def stale_write(batch, cpu=cpu, seen=seen, page=page):
            if batch == 0:
                r = cpu.access(VA, write=True)  # walks from the stale PWC pointer
                seen.append(r.ok)
                cpu.access(VA + page)  # first touch: A lands in the old copy too

        with stale_window_hook(arena, stale_write):
            report = relocate(mm, 0, 1, strategy=strategy, batch=64)
        assert seen == [True]
        t, t2 = mm.translate(VA), mm.translate(VA + page)
        assert t.table_node == 1
        results[strategy] = (t.dirty, t2.young, report.ad_merged, report.ad_lost)
        assert arena.freed_frame_accesses == 0
        cpu.close()
        mm.close()
        assert arena.frames_in_use == 0
        arena.close()
    assert results["rewalk"] == (True, True, 2, 0)
    assert results["naive"] == (False, False, 0, 2), "naive must lose them (else: proves nothing)"


@contextmanager
def mid_copy_hook(arena: Arena, fn: Callable[[int, int], None]) -> Iterator[None]:
    """``fn(level, index)`` runs in the middle of every rewalk/naive table copy: entries below
    ``index`` copied, the rest not (table locks held: CPU accesses to present pages only)."""
    arena.require_relocation()
    _native.set_relocation_copy_hook(arena._core, fn)
    try:
        yield
    finally:
        _native.set_relocation_copy_hook(arena._core, None)
    _native.take_hook_error(arena._core)


@pytest.mark.tsan
@pytest.mark.parametrize("name", GEOMETRIES)
def test_merge_keeps_the_dirty_bit_a_cpu_wrote_during_the_copy(name):
    """The copy reads the PTE table with plain vector loads and the merge re-checks only a
    digest of the old copy.  A CPU writes two pages WHILE their table is being copied: one
    whose entry the copy already read (D lands in the old copy only; the digest must change
    and the merge must carry D over) and one it has not read yet (D is copied).  rewalk keeps
    both; naive loses exactly the first - so this fails if the re-check misses a change."""
    results = {}
    for strategy in ("rewalk", "naive"):
        arena = Arena(name, nodes=2, frames_per_node=64, bind=False)
        mm = AddressSpace(arena)
        cpu = Cpu(arena)
        cpu.switch_to(mm)
        g = arena.geometry
        page, entries = g.page_size, g.levels[0].entries
        early, late = VA, VA + (entries - 2) * page  # below / above the middle of the table
        mm.map(early, page)
        mm.map(late, page)
        cpu.access(early)  # clean TLB entries and the PTE table in the paging-structure cache
        cpu.access(late)
        seen = []

        def write_mid_copy(level, index, cpu=cpu, seen=seen, early=early, late=late,
                           entries=entries):
            if level == 0 and not seen:
                assert 0 < index < entries - 2
                seen.append((cpu.access(early, write=True).ok,
                             cpu.access(late, write=True).ok))

        with mid_copy_hook(arena, write_mid_copy):
            report = relocate(mm, 0, 1, strategy=strategy, batch=64)
        assert seen == [(True, True)]
        t_early, t_late = mm.translate(early), mm.translate(late)
        assert t_early.table_node == t_late.table_node == 1
        results[strategy] = (t_early.dirty, t_late.dirty, report.ad_merged, report.ad_lost)
        assert arena.freed_frame_accesses == 0
        cpu.close()
        mm.close()
        assert arena.frames_in_use == 0
        arena.close()
    assert results["rewalk"] == (True, True, 1, 0)
    assert results["naive"] == (False, True, 0, 1), "naive must lose it (else: proves nothing)"


def test_stop_parks_cpus_so_nothing_can_write_the_old_copy():
    """stop holds every CPU's busy lock for the whole relocation: the hook (which runs only in
    rewalk/naive batches) is never called and a CPU thread cannot access until it resumes."""
    arena = Arena("x86_64_4l", nodes=2, frames_per_node=64, bind=False)
    mm = AddressSpace(arena)
    mm.map(VA, 4096)
    calls = []
    with stale_window_hook(arena, calls.append):
        r = relocate(mm, 0, 1, strategy="stop")
    assert calls == [] and r.complete and r.shootdowns == 1
    assert r.timings_s["stopped"] > 0
    mm.close()
    arena.close()


@pytest.mark.parametrize("strategy", ["rewalk", "naive"])
def test_the_merge_is_skipped_only_while_no_cpu_exists(strategy):
    """NO CPU, NO MERGE (relocate.c): only a CPU's walk writes A/D bits without the table's
    lock, so a batch during which the arena had no CPU skips re-reading its old copies; one
    CPU anywhere in the arena - even idle, running another address space - brings it back, and
    so does a test hook playing the stale CPU by hand.  (That the merge then keeps what CPUs
    write is the stress tests' and the stale-window tests' job.)"""
    arena = Arena("x86_64_4l", nodes=2, frames_per_node=256, bind=False)
    mm = AddressSpace(arena)
    mm.map(VA, 64 << 21)  # 64 PTE tables: batches of 8
    r = relocate(mm, 0, 1, strategy=strategy, batch=8)
    assert r.complete and r.batches > 1 and r.merges_skipped == r.batches
    other = AddressSpace(arena)
    cpu = Cpu(arena)
    cpu.switch_to(other)
    r = relocate(mm, 1, 0, strategy=strategy, batch=8)
    assert r.complete and r.merges_skipped == 0
    cpu.close()
    r = relocate(mm, 0, 1, strategy=strategy, batch=8)
    assert r.merges_skipped == r.batches
    with stale_window_hook(arena, lambda batch: None):
        r = relocate(mm, 1, 0, strategy=strategy, batch=8)
    assert r.complete and r.merges_skipped == 0
    other.close()
    mm.close()
    arena.close()


# ---- shared tables ------------------------------------------------------------------------------


def _check_links_live(arena: Arena, mm: AddressSpace, va: int) -> None:
    """Every table on ``mm``'s path to ``va`` is live: none it links was freed or is waiting
    to be (a relocation that moved it under a sharer it did not see leaves it LIMBO/FREE)."""
    for level, frame in enumerate(mm.walk_path(va)):
        if frame is not None:
            assert arena.frame(frame)["state"] == "live", (level, frame, arena.frame(frame))


@pytest.mark.parametrize("level", [0, 1])
def test_a_table_shared_after_the_sharer_check_is_not_moved(level):
    """The relocation checks sharers before its batches, unlocked; a table shared after that
    check (here from the chooser, which runs between one record's check and the next) must
    still not move for its first mm alone - before the locked re-check it moved, and the
    second mm kept linking the old copy (LIMBO, then freed)."""
    arena = Arena("x86_64_4l", nodes=2, frames_per_node=64, bind=False)
    a, b = AddressSpace(arena), AddressSpace(arena)
    span = arena.geometry.levels[level + 1].entry_span
    a.map(VA, 4096)
    a.map(VA + span, 4096)  # a second table of the level: its check comes after the first's
    seen: list[int] = []

    def share_after_check(t: TableFrame) -> int:
        if t.level == level:
            if seen and len(seen) == 1:
                b.share_table_from(a, seen[0], level)  # the first one, already checked
            # the page this table maps (it covers one entry of the level above: ``span``)
            seen.append(VA if t.base_va <= VA < t.base_va + span else VA + span)
        return 1

    r = relocate(a, 0, share_after_check)
    assert len(seen) == 2
    # (level 1: the PTE table under the shared PMD table stays as well - b reaches it)
    assert r.reasons == {"shared": 1 + level}, r.reasons
    assert a.translate(seen[0]).phys == b.translate(seen[0]).phys
    _check_links_live(arena, a, seen[0])
    _check_links_live(arena, b, seen[0])
    # and it is still one table for both: a write through b is a's dirty bit
    cpu = Cpu(arena)
    cpu.switch_to(b)
    cpu.access(seen[0], write=True)
    assert a.translate(seen[0]).dirty
    cpu.close()
    assert arena.freed_frame_accesses == 0
    b.close()
    a.close()
    arena.close()


@pytest.mark.tsan
@pytest.mark.parametrize("level", [0, 1])
def test_a_table_shared_during_its_copy_links_the_new_copy(level):
    """A share that finds the table while the relocation is copying it must wait for the
    repoint and link the copy: before, it linked the old frame between the copy and the
    repoint, and kept it past its free."""
    import threading

    arena = Arena("x86_64_4l", nodes=2, frames_per_node=64, bind=False)
    a, b = AddressSpace(arena), AddressSpace(arena)
    a.map(VA, 4096)
    done = threading.Event()
    errors: list[BaseException] = []

    def share() -> None:
        try:
            b.share_table_from(a, VA, level)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)
        done.set()

    sharer = threading.Thread(target=share)

    def mid_copy(lvl: int, _index: int) -> None:
        if lvl == level and not sharer.is_alive() and not done.is_set():
            sharer.start()
            done.wait(0.3)  # with the fix it cannot finish: the table's lock is ours

    with mid_copy_hook(arena, mid_copy):
        r = relocate(a, 0, 1)
    sharer.join(10)
    assert not sharer.is_alive() and not errors, errors
    assert r.complete, r.reasons
    new = a.walk_path(VA)[level]
    assert arena.frame(new)["node"] == 1
    assert b.walk_path(VA)[level] == new  # the copy, not the old frame
    _check_links_live(arena, b, VA)
    assert arena.frame(new)["sharers"] == 2
    assert arena.freed_frame_accesses == 0
    b.close()
    a.close()
    arena.close()


def _b_writes_a_sees_it(arena: Arena, a: AddressSpace, b: AddressSpace, cpu: Cpu) -> None:
    """``cpu`` (on b) writes VA: the dirty bit is a's (one table for both), no freed frame
    was read; then everything is closed."""
    assert cpu.access(VA, write=True).ok
    assert a.translate(VA).dirty and arena.freed_frame_accesses == 0
    cpu.close()
    b.close()
    a.close()
    arena.close()


def test_a_table_under_a_table_shared_outside_the_set_is_not_moved():
    """b links a's PMD table, so it reaches a's PTE table through it - and b's CPU caches that
    path.  Relocating a alone must leave the PTE table too (its own sharer count is 1): before,
    it moved, b was never shot down, and b's next write went to the freed old copy."""
    arena = Arena("x86_64_4l", nodes=2, frames_per_node=64, bind=False)
    a, b = AddressSpace(arena), AddressSpace(arena)
    a.map(VA, 4096)
    b.share_table_from(a, VA, 1)
    cpu = Cpu(arena)
    cpu.switch_to(b)
    assert cpu.access(VA).ok  # the path through the shared PMD table, cached
    r = relocate(a, 0, 1)
    assert r.reasons == {"shared": 2}, r.reasons  # the PMD table and the PTE table under it
    pte = a.walk_path(VA)[0]
    assert b.walk_path(VA)[0] == pte and arena.frame(pte)["node"] == 0
    _b_writes_a_sees_it(arena, a, b, cpu)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_an_mm_that_reaches_a_moved_table_only_through_a_shared_one_is_shot_down(strategy):
    """Both mms relocated together; b has nothing of its own to move (its tables and the
    shared PMD table are on node 1 already), but it reaches a's PTE table, which moves,
    through the shared PMD table: b must be shot down too (stop: flushed at the resume), or
    its CPU keeps the old copy.  (The model test found the stop case.)"""
    arena = Arena("x86_64_4l", nodes=2, frames_per_node=64, bind=False)
    a, b = AddressSpace(arena), AddressSpace(arena, node=1)
    a.map(VA, 4096)
    relocate(a, 0, lambda t: 1 if t.level == 1 else None)  # only the PMD table to node 1
    b.share_table_from(a, VA, 1)
    assert [arena.frame(f)["node"] for f in b.walk_path(VA)] == [0, 1, 1, 1]
    cpu = Cpu(arena)
    cpu.switch_to(b)
    assert cpu.access(VA).ok
    r = relocate([a, b], [0], 1, strategy=strategy)
    assert r.complete, r.reasons
    if strategy != "stop":  # (stop parks the CPUs instead: no shootdown is sent)
        assert r.shootdowns == 2, r.shootdowns
    assert [arena.frame(f)["node"] for f in b.walk_path(VA)] == [1, 1, 1, 1]
    _b_writes_a_sees_it(arena, a, b, cpu)


@pytest.mark.parametrize("level", [0, 1])
def test_shared_tables_skip_or_move_with_every_sharer(level):
    arena = Arena("x86_64_4l", nodes=2, frames_per_node=64, bind=False)
    a, b = AddressSpace(arena), AddressSpace(arena)
    a.map(VA, 2 * 4096)
    b.share_table_from(a, VA, level)
    name = arena.geometry.levels[level].name

    alone = relocate(a, 0, 1)  # b links the shared table too: it cannot move for a alone
    assert not alone.complete or alone.not_relocated
    # (level 1: the PTE table under it too - b reaches it through the shared one)
    assert alone.reasons == {"shared": 1 + level} and alone.levels[name].reasons == {"shared": 1}
    assert a.translate(VA).phys == b.translate(VA).phys == VA

    both = relocate([a, b], [0, 1], 1)  # b's own tables on 0, the shared one still on 0
    assert both.complete and both.not_relocated == 0
    shared = a.translate(VA).table_frame if level == 0 else None
    if shared is not None:
        assert b.translate(VA).table_frame == shared
        assert arena.frame(shared) == {"state": "live", "level": 0, "node": 1, "sharers": 2}
    assert a.tables()[0] == b.tables()[0] == {n: 0 for n in ("pte", "pmd", "pud", "pgd")}
    cpu = Cpu(arena)
    cpu.switch_to(b)
    cpu.access(VA, write=True)
    assert a.translate(VA).dirty  # still one table for both
    cpu.close()
    a.close()
    assert b.translate(VA).phys == VA
    b.close()
    assert arena.frames_in_use == 0
    arena.close()


# ---- allocation failure ------------------------------------------------------------------------


@pytest.mark.parametrize("name", GEOMETRIES)
def test_fault_injection_at_every_allocation_point(name):
    """Fail the k-th target allocation for k = 1..N (N = frames to move), batch 3: the
    relocation stops with every translation unchanged, the failing batch's frames freed, the
    completed batches moved, a report that adds up, and nothing leaked."""
    probe, pmm, pcpu, _ = populated(name, frames_per_node=128)
    n = sum(pmm.table_counts().values())
    pcpu.close()
    pmm.close()
    probe.close()
    batch = 3
    for k in range(1, n + 2):
        arena, mm, cpu, vas = populated(name, frames_per_node=128)
        before = snapshot(mm, vas)
        in_use = arena.frames_in_use
        arena.fail_nth_allocation(k)
        r = relocate(mm, 0, 1, batch=batch)
        arena.fail_nth_allocation(0)
        assert snapshot(mm, vas) == before, f"k={k}"
        assert arena.frames_in_use == in_use and arena.limbo_frames == 0, f"k={k}"
        assert r.relocated + r.not_relocated == r.frames_found == n
        if k <= n:
            moved = (k - 1) // batch * batch
            assert not r.complete and r.error.startswith("alloc_failed"), f"k={k}"
            assert r.relocated == moved and r.reasons.get("alloc_failed") == 1
            assert r.reasons.get("aborted", 0) == n - moved - 1
            assert sum(mm.tables()[1].values()) == moved
            assert sum(lr.not_relocated for lr in r.levels.values()) == n - moved
            with pytest.raises(PartialResult):
                arena.fail_nth_allocation(1)
                relocate(mm, 0, 1, batch=batch, strict=True)
        else:
            assert r.complete and r.relocated == n
        # a second, clean relocation finishes the move
        rest = relocate(mm, 0, 1)
        assert rest.complete and sum(mm.tables()[0].values()) == 0
        assert snapshot(mm, vas) == before
        cpu.close()
        mm.close()
        assert arena.frames_in_use == 0, f"k={k}: leaked"
        arena.close()


def test_target_pool_full(world):
    arena, mm, cpu, vas = world
    before = snapshot(mm, vas)
    n = sum(mm.table_counts().values())
    cap = n - 2  # the (n-1)-th allocation fails; its batch of 2 is given back
    moved = cap // 2 * 2
    arena.set_capacity(1, cap)
    r = relocate(mm, 0, 1, batch=2)
    assert not r.complete and r.error.startswith("target_full")
    assert r.relocated == moved and r.reasons["target_full"] == 1
    assert r.reasons.get("aborted", 0) == n - moved - 1
    assert snapshot(mm, vas) == before
    assert arena.pool(1)["in_use"] == moved
    arena.set_capacity(1, 512)
    assert relocate(mm, 0, 1).complete
    assert snapshot(mm, vas) == before


# ---- the node-choosing hook --------------------------------------------------------------------


def test_chooser_decides_per_frame(world):
    arena, mm, cpu, vas = world
    g = arena.geometry
    seen: list[TableFrame] = []

    def only_ptes(t: TableFrame) -> int | None:
        seen.append(t)
        return 1 if t.level == 0 else None

    before = snapshot(mm, vas)
    counts = mm.table_counts()
    r = relocate(mm, 0, only_ptes)
    assert r.to_node is None and r.complete
    assert r.relocated == counts[g.levels[0].name]
    assert r.reasons == {"kept": sum(counts.values()) - counts[g.levels[0].name]}
    assert mm.tables()[1][g.levels[0].name] == counts[g.levels[0].name]
    assert snapshot(mm, vas) == before
    assert {t.level_name for t in seen} == {lv.name for lv in g.levels}
    for t in seen:  # base_va is the first address the table maps
        span = g.levels[t.level].entry_span * g.levels[t.level].entries
        assert t.base_va % min(span, 1 << 64) == 0 and t.node == 0


def test_chooser_errors_change_nothing(world):
    arena, mm, cpu, vas = world
    tables = mm.tables()

    def boom(t: TableFrame) -> int:
        if t.level == 0:
            raise RuntimeError("chooser failed")
        return 1

    with pytest.raises(RuntimeError, match="chooser failed"):
        relocate(mm, 0, boom)
    with pytest.raises(UsageError, match="node id or None"):
        relocate(mm, 0, lambda t: "1")
    assert mm.tables() == tables
    r = relocate(mm, 0, lambda t: 7)  # a node the arena does not have
    assert r.relocated == 0 and r.reasons == {"bad_target": r.frames_found}


# ---- bad input -----------------------------------------------------------------------------------


def test_bad_input():
    arena = Arena("x86_64_4l", nodes=2, frames_per_node=64, bind=False)
    mm = AddressSpace(arena)
    mm.map(VA, 4096)
    tables = mm.tables()
    with pytest.raises(UsageError, match="unknown relocation strategy 'fast'"):
        relocate(mm, 0, 1, strategy="fast")
    with pytest.raises(UsageError, match="batch"):
        relocate(mm, 0, 1, batch=0)
    with pytest.raises(InvalidNode, match="node 5 has no pool"):
        relocate(mm, 0, 5)
    with pytest.raises(InvalidNode, match="from_nodes"):
        relocate(mm, [0, 3], 1)
    with pytest.raises(InvalidNode, match="one node id"):
        relocate(mm, 0, [1])
    with pytest.raises(UsageError, match="AddressSpace"):
        relocate("mm", 0, 1)
    other = Arena("x86_64_4l", nodes=2, frames_per_node=16, bind=False)
    omm = AddressSpace(other)
    with pytest.raises(UsageError, match="same arena"):
        relocate([mm, omm], 0, 1)
    with pytest.raises(UsageError, match="twice"):
        relocate([mm, mm], 0, 1)
    assert mm.tables() == tables
    omm.close()
    other.close()
    mm.close()
    arena.close()


def test_norelo_build_refuses():
    arena = Arena("x86_64_4l", nodes=2, frames_per_node=16, build="norelo", bind=False)
    mm = AddressSpace(arena)
    with pytest.raises(RelocationUnsupported, match="build='relo'"):
        relocate(mm, 0, 1)
    mm.close()
    arena.close()
