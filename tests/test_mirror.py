"""Mirroring live processes into emulated tables: placement rule, remote_table_fraction, bulk."""

from __future__ import annotations

import os
from array import array

import pytest
from live_workload import live_workload

from ptreloc import mirror as mirror_mod
from ptreloc import proc
from ptreloc.core import AddressSpace, Arena, geometries
from ptreloc.errors import NotMapped
from ptreloc.mirror import host_geometry, mirror
from ptreloc.proc import ProcessSnapshot, Vma
from ptreloc.runs import PageRuns

BLOCK = 2 << 20  # one x86-64 PTE table maps 2 MiB
BASE = 0x7F00_0000_0000  # 2 MiB aligned, below 47 bits, 512 GiB aligned too


def _snapshot(pages: list[tuple[int, int]], *, vma_end: int | None = None) -> ProcessSnapshot:
    """A snapshot of chosen pages (address, node status): the mirror's input, built by hand so
    the placement rule can be checked exactly (nodes above 0 are virtual on one node)."""
    addresses = array("Q", (a for a, _ in pages))
    end = vma_end or (max(addresses) + 4096)
    return ProcessSnapshot(
        pid=os.getpid(),
        name="made",
        owner="root",
        uid=0,
        status="sleeping",
        threads=1,
        vmas=[Vma(BASE, end, "rw-p", 0, "00:00", 0, "")],
        resident=addresses,
        nodes=array("i", (n for _, n in pages)),
        frames_visible=False,
        numa_maps={},
        mems_allowed=frozenset({0}),
        cpus_allowed=frozenset({0}),
        last_cpu=0,
        last_cpu_node=0,
    )


def test_real_workload_every_page_mirrored_on_its_node() -> None:
    with live_workload(mib=8, threads=3) as w:
        snap = proc.snapshot(w.pid)
        m = mirror(snap)
        try:
            assert m.check_translations() == 0
            for i in range(0, w.pages, 97):
                t = m.mm.translate(w.address + i * 4096)
                assert t is not None and t.phys == w.address + i * 4096
            blocks = {(w.address + i * 4096) // BLOCK for i in range(w.pages)}
            tables = m.tables()
            assert sum(levels["pte"] for levels in tables.values()) >= len(blocks)
            # everything is on node 0 here, data and tables: nothing walks remote memory
            assert m.remote_fraction().fraction == 0.0
            # the frames are real memory on node 0, per the kernel
            frames = m.frames()
            assert set(m.frame_real_nodes(frames).values()) == {0}
            # contiguous runs are mapped in one call each, not a call per page
            assert m.runs < len(snap.resident) // 8
        finally:
            m.close()


def test_placement_rule_majority_per_table_and_fraction_is_exact() -> None:
    # block 0: 512 pages on node 0; block 1: 512 pages on node 1 (virtual here)
    pages = [(BASE + i * 4096, 0) for i in range(512)]
    pages += [(BASE + BLOCK + i * 4096, 1) for i in range(512)]
    m = mirror(_snapshot(pages), bind=False)
    try:
        tables = m.tables()
        # each PTE table on its pages' node; the PMD and PUD above map 512 + 512: a tie, the
        # lowest node; the root (no [stack]): most anonymous pages, a tie too
        assert tables[0] == {"pte": 1, "pmd": 1, "pud": 1, "pgd": 1}
        assert tables[1] == {"pte": 1, "pmd": 0, "pud": 0, "pgd": 0}
        assert m.placement is not None and m.placement.root_basis == "anonymous"
        f = m.remote_fraction()
        assert (f.pages, f.remote_pages) == (1024, 512)
        assert f.fraction == 0.5
        assert f.level_fractions() == {"pte": 0.0, "pmd": 0.5, "pud": 0.5, "pgd": 0.5}
        # after "migratepages" of everything to node 1 with the tables left behind
        moved = array("i", [1] * 1024)
        assert m.remote_fraction(moved).fraction == 1.0
        assert m.remote_fraction(moved).level_fractions()["pte"] == 0.5
    finally:
        m.close()


def test_most_pages_decide_not_the_lowest_one() -> None:
    # the old rule (lowest page decides) put all four tables on node 1 for one page there
    pages = [(BASE, 1)] + [(BASE + i * 4096, 0) for i in range(1, 512)]
    pages += [(BASE + BLOCK + i * 4096, 1) for i in range(300)]
    m = mirror(_snapshot(pages), bind=False)
    try:
        tables = m.tables()
        # PTE table 0: 511 of 512 on node 0; PTE table 1: node 1; above: 511 vs 301 -> node 0
        assert tables[0] == {"pte": 1, "pmd": 1, "pud": 1, "pgd": 1}
        assert tables[1] == {"pte": 1, "pmd": 0, "pud": 0, "pgd": 0}
        assert m.remote_fraction().remote_pages == 1 + 300
    finally:
        m.close()


def test_root_follows_the_stack_and_file_pages_do_not_vote() -> None:
    # anonymous data mostly on node 1, the [stack] on node 2, a file mapping's pages on node 3:
    # the root goes with the stack (created by the same exec), the table mapping only file
    # pages goes with the root, every other table with most of its anonymous pages
    stack = BASE + 64 * BLOCK
    lib = BASE + 8 * BLOCK
    pages = [(BASE + i * 4096, 1) for i in range(400)]
    pages += [(lib + i * 4096, 3) for i in range(200)]
    pages += [(stack + i * 4096, 2) for i in range(10)]
    snap = _snapshot(pages)
    snap.vmas[:] = [
        Vma(BASE, BASE + 400 * 4096, "rw-p", 0, "00:00", 0, ""),
        Vma(lib, lib + 200 * 4096, "r-xp", 0, "08:01", 42, "/usr/lib/libmade.so"),
        Vma(stack, stack + 10 * 4096, "rw-p", 0, "00:00", 0, "[stack]"),
    ]
    m = mirror(snap, bind=False)
    try:
        assert m.placement is not None
        assert (m.placement.root, m.placement.root_basis) == (2, "stack")
        tables = m.tables()
        assert tables[2] == {"pte": 2, "pmd": 0, "pud": 0, "pgd": 1}  # stack's PTE + the lib's
        assert tables[1] == {"pte": 1, "pmd": 1, "pud": 1, "pgd": 0}  # 400 vs 10 above
        assert tables.get(3, {}).get("pte", 0) == 0
        assert m.check_translations() == 0
        # following data (watch, several targets): every page votes, the root by all pages
        follow = mirror_mod.infer_placement(snap, m.geometry, follow_data=True)
        assert follow.root == 1
        assert follow.node_of(0, lib) == 3 and follow.node_of(0, stack) == 2
        assert follow.node_of(1, BASE) == 1
    finally:
        m.close()


def test_unplaced_pages_do_not_vote_and_are_not_counted() -> None:
    pages = [(BASE, 1), (BASE + 4096, -2)]  # -ENOENT: moved away between pagemap and query
    pages += [(BASE + BLOCK, -14)]  # -EFAULT, alone in its table: no vote, goes with the root
    m = mirror(_snapshot(pages), bind=False)
    try:
        assert m.tables()[1] == {"pte": 2, "pmd": 1, "pud": 1, "pgd": 1}
        assert m.remote_fraction().pages == 1
        assert m.check_translations() == 0  # unplaced pages are still mirrored
    finally:
        m.close()


def test_progress_reports_the_total() -> None:
    seen: list[tuple[int, int]] = []
    snap = proc.snapshot(os.getpid())
    m = mirror(snap, progress=lambda done, total: seen.append((done, total)))
    m.close()
    assert seen[-1] == (len(snap.resident), len(snap.resident))


def test_host_geometry_five_level_when_a_mapping_is_above_47_bits() -> None:
    snap = proc.snapshot(os.getpid())
    assert host_geometry(snap) in ("x86_64_4l", "x86_64_5l")
    if "la57" not in mirror_mod._cpu_flags():
        assert host_geometry(snap) == "x86_64_4l"
    high = _snapshot([(1 << 48, 0)])
    high.vmas[:] = [Vma(1 << 48, (1 << 48) + 4096, "rw-p", 0, "00:00", 0, "")]
    assert host_geometry(high) == "x86_64_5l"


def test_five_level_mirror_of_a_high_address() -> None:
    va = 1 << 50
    snap = _snapshot([(va, 0)])
    snap.vmas[:] = [Vma(va, va + 4096, "rw-p", 0, "00:00", 0, "")]
    m = mirror(snap)
    try:
        assert m.geometry.name == "x86_64_5l"
        assert m.check_translations() == 0
        assert sum(m.tables()[0].values()) == 5
    finally:
        m.close()


@pytest.mark.parametrize("status", [-2, -14])
def test_all_pages_unplaced_falls_back_to_the_cpu_node(status: int) -> None:
    m = mirror(_snapshot([(BASE, status)]))
    try:
        assert m.tables()[0]["pgd"] == 1
        assert m.remote_fraction().pages == 0 and m.remote_fraction().fraction == 0.0
    finally:
        m.close()


# ---- the core's walk (AddressSpace.walk_path and the bulk queries): any paging format ----------


@pytest.mark.parametrize("name", sorted(geometries()))
def test_walk_path_agrees_with_translate_in_every_format(name: str) -> None:
    arena = Arena(name, 2, bind=False)
    mm = AddressSpace(arena, node=0)
    try:
        g = arena.geometry
        page = g.page_size
        start = 16 * g.levels[1].entry_span  # a lowest-level table span, inside every format
        mm.map(start, 4 * page)
        mm.map(start + g.levels[1].entry_span, page, table_node=1)
        for va in (start, start + 3 * page, start + g.levels[1].entry_span):
            path = mm.walk_path(va)
            assert len(path) == g.nlevels and None not in path
            assert path[0] == mm.translate(va).table_frame  # the leaf's table
            assert path[-1] == mm.root_frame
            assert [arena.frame(f)["level"] for f in path] == list(range(g.nlevels))
        vas = array("Q", [start, start + g.levels[1].entry_span])
        assert mm.walk_paths(vas) == [mm.walk_path(v) for v in vas]
        # the second span's PTE table is on node 1: its page walks one remote table
        counted = mm.remote_tables(vas, array("i", [0, 0]))
        assert (counted.pages, counted.remote_pages) == (2, 1)
        assert counted.by_level[g.levels[0].name] == 1
        with pytest.raises(NotMapped):
            mm.walk_path(start + 8 * page)
        with pytest.raises(NotMapped):
            mm.walk_paths(array("Q", [start + 8 * page]))
    finally:
        mm.close()
        arena.close()


def test_walk_path_stops_at_a_huge_leaf_and_remote_counts_only_walked_tables() -> None:
    arena = Arena("x86_64_4l", 2, bind=False)
    mm = AddressSpace(arena, node=0)
    try:
        mm.map(BASE, BLOCK, huge="pmd", table_node=1)
        path = mm.walk_path(BASE + 4096)
        assert path[0] is None and path[1] is not None  # no PTE table under a 2 MiB leaf
        counted = mm.remote_tables(array("Q", [BASE]), array("i", [1]))
        # the map made the PUD and PMD tables on node 1 with the data; the root is on node 0
        assert counted.by_level == {"pte": 0, "pmd": 0, "pud": 0, "pgd": 1}
        assert counted.remote_pages == 1
    finally:
        mm.close()
        arena.close()


def test_mirror_in_a_non_x86_format() -> None:
    # the mirror once decoded x86 entries itself and refused other formats
    pages = [(BASE + i * 4096, 0) for i in range(4)] + [(BASE + BLOCK, 1)]
    snap = _snapshot(pages)
    snap.vmas[:] = [Vma(BASE, BASE + 2 * BLOCK, "rw-p", 0, "00:00", 0, "")]
    base = 1 << 30  # arm64 4K 39-bit: below 512 GiB
    snap.resident = PageRuns.from_addresses([va - BASE + base for va in snap.resident],
                                            snap.page_size)
    snap.vmas[:] = [Vma(base, base + 2 * BLOCK, "rw-p", 0, "00:00", 0, "")]
    m = mirror(snap, geometry_name="arm64_4k_39", bind=False)
    try:
        assert m.check_translations() == 0
        assert len(m.frames()) == 4  # two PTE-level tables, one PMD-level, the root
        assert m.remote_fraction().remote_pages == 1  # node 1's page under node 0's PMD table
        assert len(m.table_path(base)) == 3
    finally:
        m.close()


def test_check_translations_sees_a_missing_and_a_wrong_translation() -> None:
    pages = [(BASE + i * 4096, 0) for i in range(8)]
    m = mirror(_snapshot(pages), bind=False)
    try:
        assert m.check_translations() == 0
        m.mm.unmap(BASE + 2 * 4096, 4096)  # one page lost
        assert m.check_translations() == 1
        m.mm.map(BASE + 2 * 4096, 4096, phys=0x1234_5000)  # back, but somewhere else
        assert m.check_translations() == 1
        bad, first = m.mm.check_translations(m.snapshot.resident.expand(), m.expected_phys())
        assert (bad, first) == (1, 2)
    finally:
        m.close()
