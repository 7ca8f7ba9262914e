"""migrate's per-page passes in C against the Python they replaced:

* ptr_pair_histogram() and ptr_select_pairs() (csrc/pagescan.c) against a few lines of Python
  over random arrays of node statuses (hypothesis), and their edge returns (-EINVAL, -ENOSPC)
  through ``lib`` directly;
* migrate.count_pairs() / select_stuck() / pages_per_node() against the generator expressions
  they replaced (copied below from 1df8c7f), including nodes past the core's bins;
* migrate.requery_nodes() against a move_pages(2) query page for page, on a live process (the
  frames path where frame numbers are visible, move_pages where the resident set changed).
"""

from __future__ import annotations

import errno
from array import array
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from live_workload import live_workload

from ptreloc import migrate, numa, proc
from ptreloc._native import core as native_core
from ptreloc.errors import UsageError

C = native_core("relo")

# node statuses as move_pages gives them: nodes, -errno, and a few nodes past the core's bins
_STATUS = st.one_of(st.integers(0, 3), st.sampled_from([-errno.ENOENT, -errno.EFAULT, -1]),
                    st.integers(0, 40))
_PAIRS = st.lists(st.tuples(_STATUS, _STATUS), max_size=300)


def _split(pairs: list[tuple[int, int]]) -> tuple[array[int], array[int]]:
    return array("i", (b for b, _ in pairs)), array("i", (a for _, a in pairs))


def _bin(v: int, nbins: int) -> int | None:
    return nbins if v < 0 else (v if v < nbins else None)


@given(_PAIRS, st.integers(1, 20))
@settings(max_examples=200, deadline=None)
def test_pair_histogram_matches_python(pairs: list[tuple[int, int]], nbins: int) -> None:
    before, after = _split(pairs)
    hist, outside = C.pair_histogram(before, after, nbins)
    want = [0] * (nbins + 1) ** 2
    want_outside = 0
    for b, a in pairs:
        bb, ab = _bin(b, nbins), _bin(a, nbins)
        if bb is None or ab is None:
            want_outside += 1
        else:
            want[bb * (nbins + 1) + ab] += 1
    assert list(hist) == want
    assert outside == want_outside


@given(_PAIRS, st.sets(st.integers(0, 12), max_size=5))
@settings(max_examples=200, deadline=None)
def test_select_pairs_matches_python(pairs: list[tuple[int, int]], nodes: set[int]) -> None:
    before, after = _split(pairs)
    member = bytearray(max(nodes, default=-1) + 1)
    for n in nodes:
        member[n] = 1
    got = C.select_pairs(before, after, member)
    assert list(got) == [k for k, (b, a) in enumerate(pairs) if b in nodes and a in nodes]


def test_pair_scans_refuse_and_run_out_of_room() -> None:
    lib, ffi = C.lib, C.ffi
    one = ffi.new("int32_t[]", [1, 1, 1])
    hist = ffi.new("uint64_t[]", 4)
    assert lib.ptr_pair_histogram(one, one, 3, 0, hist) == -errno.EINVAL
    assert lib.ptr_pair_histogram(one, one, 3, 4097, hist) == -errno.EINVAL
    member = ffi.new("uint8_t[]", [0, 1])
    index = ffi.new("uint64_t[]", 3)
    assert lib.ptr_select_pairs(one, one, 3, member, 2, index, 2) == -errno.ENOSPC
    assert lib.ptr_select_pairs(one, one, 3, member, 2, index, 3) == 3
    assert list(index) == [0, 1, 2]
    with pytest.raises(UsageError):
        C.pair_histogram(array("i", [1]), array("i", [1, 2]), 4)
    with pytest.raises(UsageError):
        C.pair_histogram(array("i", [1]), array("i", [1]), 0)
    with pytest.raises(UsageError):
        C.select_pairs(array("i", [1]), array("i", []), b"\x01")
    # more than the first guess of room: the binding retries with room for every page
    many = array("i", [1]) * 20000
    assert len(C.select_pairs(many, many, b"\x00\x01")) == 20000


# ---- the Python the C passes replaced (migrate.py at 1df8c7f) ---------------------------------


def _pages_per_node_py(nodes: list[int]) -> dict[str, int]:
    counts = Counter(n for n in nodes if n >= 0)
    return {str(k): v for k, v in sorted(counts.items())}


def _stuck_py(before: list[int], after: list[int], src: frozenset[int], dst: frozenset[int],
              special: frozenset[int]) -> list[int]:
    return [k for k, (b, a) in enumerate(zip(before, after, strict=True))
            if k not in special and b in src and b not in dst and a in src and a not in dst]


_NODESET = st.frozensets(st.integers(0, 40), min_size=1, max_size=3)


@given(_PAIRS, _NODESET, _NODESET, st.frozensets(st.integers(0, 299), max_size=6))
@settings(max_examples=300, deadline=None)
def test_count_pairs_and_select_stuck_match_the_python_they_replaced(
    pairs: list[tuple[int, int]], src: frozenset[int], dst: frozenset[int],
    special: frozenset[int],
) -> None:
    before, after = _split(pairs)
    special = frozenset(k for k in special if k < len(pairs))
    per_before, per_after, stuck = migrate.count_pairs(before, after, src - dst, special)
    want = _stuck_py(list(before), list(after), src, dst, special)
    assert per_before == _pages_per_node_py(list(before))
    assert per_after == _pages_per_node_py(list(after))
    assert stuck == len(want)
    assert migrate.select_stuck(before, after, src - dst, special) == want
    assert migrate.pages_per_node(before) == _pages_per_node_py(list(before))
    assert migrate.pages_per_node(list(after)) == _pages_per_node_py(list(after))


def test_requery_nodes_is_what_move_pages_says() -> None:
    with live_workload(mib=8, threads=1) as w:
        snap = proc.snapshot(w.pid)
        got = migrate.requery_nodes(snap)
        assert list(got) == numa.move_pages(w.pid, snap.resident)
        # a resident set that changed (here: a page that never was resident stands in for one
        # gone): every page asked of move_pages, -ENOENT for the one not present
        gone = w.address + w.pages * w.page_size + (1 << 30)
        resident = array("Q", sorted([*snap.resident, gone]))
        changed = proc.ProcessSnapshot(**{**{f: getattr(snap, f) for f in (
            "pid", "name", "owner", "uid", "status", "threads", "vmas", "nodes", "frames_visible",
            "numa_maps", "mems_allowed", "cpus_allowed", "last_cpu", "last_cpu_node")},
            "resident": resident})
        got = migrate.requery_nodes(changed)
        assert list(got) == numa.move_pages(w.pid, resident)
        assert got[resident.index(gone)] < 0
