"""The kernel move's verdicts from their inputs alone (no process, no root): what
``frames_unchanged`` puts down to the kernel's own page moves and what it does not.

The same checks on real moves, with khugepaged really collapsing the process's pages in the
window, are in tests/test_kernel_move_multinode.py."""

from __future__ import annotations

from ptreloc import frames
from ptreloc import kernel_move as km

THP = 1 << frames.KPF_THP
BEFORE = {0x1000 * i: 100 + i for i in range(1, 1025)}  # 1024 pages on frames 101-1124


def _moved(vas: range, base: int) -> dict[int, int]:
    after = dict(BEFORE)
    for k, va in enumerate(vas):
        after[va] = base + k
    return after


def test_unchanged_frames_pass() -> None:
    c = km._pagemap_check(BEFORE, dict(BEFORE), {"thp_collapse_alloc": 0,
                                                 "pgmigrate_success": 0}, None)
    assert c.ok is True and "0 changed frame" in c.detail


def test_a_changed_frame_the_kernel_did_not_count_fails() -> None:
    after = _moved(range(0x1000, 0x4000, 0x1000), 5000)
    c = km._pagemap_check(BEFORE, after, {"thp_collapse_alloc": 0, "pgmigrate_success": 0},
                          {pfn: 0 for pfn in after.values()})
    assert c.ok is False and "3 by nothing the kernel counted" in c.detail
    # and with no counters at all (vmstat unreadable) nothing is excused
    assert km._pagemap_check(BEFORE, after).ok is False


def _collapsed(pages: int) -> tuple[dict[int, int], dict[int, int]]:
    """The first ``pages`` pages on new frames in huge pages: (after, kpageflags of those)."""
    after = _moved(range(0x1000, 0x1000 + pages * 0x1000, 0x1000), 1 << 20)
    return after, {pfn: THP for pfn in after.values() if pfn >= 1 << 20}


def test_pages_collapsed_into_huge_pages_are_the_kernels() -> None:
    after, flags = _collapsed(512)
    c = km._pagemap_check(BEFORE, after, {"thp_collapse_alloc": 1, "pgmigrate_success": 0},
                          flags)
    assert c.ok is True, c.detail
    assert "512 now in huge pages" in c.detail
    # the same pages, no collapse counted in the window: not the kernel's
    c = km._pagemap_check(BEFORE, after, {"thp_collapse_alloc": 0, "pgmigrate_success": 0},
                          flags)
    assert c.ok is False
    # new frames that are not in huge pages are not excused by a collapse
    c = km._pagemap_check(BEFORE, after, {"thp_collapse_alloc": 1, "pgmigrate_success": 0},
                          {pfn: 0 for pfn in flags})
    assert c.ok is False


def test_one_collapse_excuses_at_most_one_huge_page_of_pages() -> None:
    after, flags = _collapsed(513)
    c = km._pagemap_check(BEFORE, after, {"thp_collapse_alloc": 1, "pgmigrate_success": 0},
                          flags)
    assert c.ok is False and "1 by nothing the kernel counted" in c.detail


def test_migrations_excuse_as_many_pages_as_they_counted() -> None:
    after = _moved(range(0x1000, 0x6000, 0x1000), 5000)  # 5 pages
    moves = {"thp_collapse_alloc": 0, "pgmigrate_success": 5}
    assert km._pagemap_check(BEFORE, after, moves, None).ok is True
    moves["pgmigrate_success"] = 4
    assert km._pagemap_check(BEFORE, after, moves, None).ok is False


def test_a_page_no_longer_resident_fails_whatever_the_kernel_counted() -> None:
    after = dict(BEFORE)
    del after[0x1000]
    c = km._pagemap_check(BEFORE, after, {"thp_collapse_alloc": 9, "pgmigrate_success": 9999},
                          None)
    assert c.ok is False and "1 no longer resident" in c.detail


def test_hidden_frames_and_unreadable_pagemap_decide_nothing() -> None:
    assert km._pagemap_check(None, BEFORE).ok is None
    assert km._pagemap_check(dict.fromkeys(BEFORE, 0), dict.fromkeys(BEFORE, 0)).ok is None


class _Walk:
    """A stand-in for a kernel walk (kernel_tables.KernelTables): only what
    ``_pagetables_check`` reads - the tables' levels and nodes, and the accounted levels."""

    def __init__(self, nodes: list[int]) -> None:
        self.tables = [type("T", (), {"level": "pte", "node": n})() for n in nodes]

    def accounted_levels(self) -> tuple[str, ...]:
        return ("pte", "pmd")


def _counters(before1: int, after1: int) -> km.KernelMoveReport:
    r = km.KernelMoveReport(pid=1, target_node=1)
    r.node_pagetables_kb_before = {0: 400, 1: before1}
    r.node_pagetables_kb_after = {0: 0, 1: after1}
    return r


def test_node_counter_must_show_the_tables_the_walk_saw_arrive() -> None:
    before, after = _Walk([0] * 100), _Walk([1] * 100)  # 400 kB of tables to node 1
    assert km._pagetables_check(_counters(50, 450), before, after).ok is True
    assert km._pagetables_check(_counters(50, 260), before, after).ok is True  # other tasks
    # the walk says they arrived, the node's own counter did not move: not believed
    assert km._pagetables_check(_counters(50, 60), before, after).ok is False
    # nothing moved by the walk's count: nothing to hold the counter to
    assert km._pagetables_check(_counters(50, 50), before, before).ok is None
