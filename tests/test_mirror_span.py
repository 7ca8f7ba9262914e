"""The mirror's bulk queries (csrc/mirror.c: remote_tables, check_translations) walk one
lowest-level table span at a time and reuse that walk for the span's other pages.  Checked here
against the per-address walk (walk_path, translate) on layouts that make the reuse matter: runs
of pages in a span, holes in a run, spans whose tables are on different nodes, huge leaves, a
wrong translation in the middle of a run, addresses out of order and spans revisited."""

from __future__ import annotations

import random
from array import array

import pytest

from ptreloc.core import AddressSpace, Arena, geometries
from ptreloc.errors import NotMapped, PtrelocError


def _reference(mm: AddressSpace, arena: Arena, vas: list[int], nodes: list[int]
               ) -> tuple[int, int, dict[str, int], int]:
    """(pages, remote_pages, by_level, unmapped) from one walk_path per address."""
    names = [lv.name for lv in arena.geometry.levels]
    pages = remote = unmapped = 0
    by_level = dict.fromkeys(names, 0)
    for va, home in zip(vas, nodes, strict=True):
        if home < 0:
            continue
        try:
            path = mm.walk_path(va)
        except NotMapped:
            unmapped += 1
            continue
        pages += 1
        far = [lv for lv, f in enumerate(path) if f is not None
               and arena.frame(f)["node"] != home]
        remote += bool(far)
        for lv in far:
            by_level[names[lv]] += 1
    return pages, remote, by_level, unmapped


def _layout(name: str, seed: int) -> tuple[Arena, AddressSpace, list[int], list[int]]:
    """An address space with runs of base pages in several spans (tables on node 0 or 1), a
    few holes, a huge leaf where the format has one, and a page mapped to the wrong frame;
    returns it with the addresses to ask about (in a shuffled-run order) and their phys."""
    rng = random.Random(seed)
    arena = Arena(name, 2, bind=False)
    mm = AddressSpace(arena, node=0)
    g = arena.geometry
    page, span = g.page_size, g.levels[1].entry_span
    base = 8 * span
    vas: list[int] = []
    for k in range(6):
        start = base + k * span
        count = rng.randrange(1, min(64, span // page) + 1)
        mm.map(start, count * page, table_node=rng.randrange(2))
        vas += [start + i * page for i in range(count)]
        if count > 2:
            mm.unmap(start + (count // 2) * page, page)  # a hole inside the run
        vas.append(start + count * page)  # the first unmapped page after the run
    if 1 in g.huge_levels:
        huge = base + 7 * span
        mm.map(huge, span, huge=1, table_node=1)
        vas += [huge, huge + page, huge + span - page]
    # a page that translates elsewhere, in the middle of the first run
    wrong = base + page
    if mm.translate(wrong) is not None:
        mm.unmap(wrong, page)
        mm.map(wrong, page, phys=wrong + 64 * span)
    # runs in order, then a few addresses out of order: spans are left and revisited
    tail = rng.sample(vas, min(8, len(vas)))
    vas += tail
    return arena, mm, vas, [v % g.phys_limit for v in vas]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("name", sorted(geometries()))
def test_span_walks_agree_with_a_walk_per_address(name: str, seed: int) -> None:
    arena, mm, vas, phys = _layout(name, seed)
    try:
        rng = random.Random(seed)
        nodes = [rng.choice((-1, 0, 1, 1)) for _ in vas]
        got = mm.remote_tables(array("Q", vas), array("i", nodes))
        assert (got.pages, got.remote_pages, got.by_level, got.unmapped) == _reference(
            mm, arena, vas, nodes)
        want_bad = [i for i, (va, p) in enumerate(zip(vas, phys, strict=True))
                    if (t := mm.translate(va)) is None or t.phys != p]
        bad, first = mm.check_translations(array("Q", vas), array("Q", phys))
        assert bad == len(want_bad) > 0  # the holes, the unmapped tails and the wrong page
        assert first == want_bad[0]
    finally:
        mm.close()
        arena.close()


def test_a_wrong_translation_in_a_run_is_counted_once_and_located() -> None:
    arena = Arena("x86_64_4l", 2, bind=False)
    mm = AddressSpace(arena, node=0)
    try:
        base, page = 0x7F00_0000_0000, 4096
        mm.map(base, 512 * page)  # one full PTE table
        vas = array("Q", (base + i * page for i in range(512)))
        assert mm.check_translations(vas, vas) == (0, None)
        mm.unmap(base + 300 * page, page)
        mm.map(base + 300 * page, page, phys=0x1234_5000)  # same table, another frame
        assert mm.check_translations(vas, vas) == (1, 300)
        # a remote table is seen for every page of the span, not only the span's first page
        counted = mm.remote_tables(vas, array("i", [1] * 512))
        assert (counted.pages, counted.remote_pages) == (512, 512)
        assert counted.by_level["pte"] == 512
    finally:
        mm.close()
        arena.close()


def test_an_address_outside_the_format_still_fails_the_call() -> None:
    arena = Arena("x86_64_4l", 2, bind=False)
    mm = AddressSpace(arena, node=0)
    try:
        base = 0x7F00_0000_0000
        mm.map(base, 4096)
        vas = array("Q", [base, 1 << 60])  # not canonical
        with pytest.raises(PtrelocError):
            mm.check_translations(vas, vas)
        with pytest.raises(PtrelocError):
            mm.remote_tables(vas, array("i", [0, 0]))
    finally:
        mm.close()
        arena.close()
