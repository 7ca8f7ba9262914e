"""ptreloc.runs.PageRuns (a snapshot's resident pages as runs) against a plain list of the same
addresses: every question a reader asks, answered the same; and ptr_runs_expand's refusals."""

from __future__ import annotations

import errno
from array import array
from bisect import bisect_left

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptreloc._native import core as native_core
from ptreloc.errors import UsageError
from ptreloc.runs import PageRuns, as_runs

C = native_core("relo")
PAGE = 4096


@st.composite
def page_lists(draw: st.DrawFn) -> list[int]:
    """Ascending page addresses: a few runs of random length at random gaps."""
    out: list[int] = []
    va = draw(st.integers(0, 1 << 20)) * PAGE
    for _ in range(draw(st.integers(0, 6))):
        va += draw(st.integers(0, 700)) * PAGE  # 0: the run goes on (runs that touch merge)
        n = draw(st.integers(1, 700))
        out.extend(range(va, va + n * PAGE, PAGE))
        va += n * PAGE
    return out


@settings(max_examples=150, deadline=None)
@given(pages=page_lists(), data=st.data())
def test_page_runs_answer_as_the_address_list(pages: list[int], data: st.DataObject) -> None:
    runs = PageRuns.from_addresses(pages, PAGE)
    assert len(runs) == len(pages) and list(runs) == pages and runs == pages
    # runs that touch are one run: as many runs as gaps + 1
    assert runs.runs == sum(1 for i, va in enumerate(pages) if not i or pages[i - 1] + PAGE != va)
    if pages:
        i = data.draw(st.integers(-len(pages), len(pages) - 1))
        assert runs[i] == pages[i]
        lo = data.draw(st.integers(0, len(pages)))
        hi = data.draw(st.integers(lo, len(pages)))
        assert list(runs[lo:hi]) == pages[lo:hi] and list(runs.expand(lo, hi)) == pages[lo:hi]
        assert runs[lo:hi:2].tolist() == pages[lo:hi:2]
    with pytest.raises(IndexError):
        runs[len(pages)]
    for va in data.draw(st.lists(st.integers(0, (pages[-1] if pages else PAGE) + 3 * PAGE),
                                 max_size=8)):
        assert runs.bisect(va) == bisect_left(pages, va), hex(va)
        assert (va in runs) == (va in pages)
    # chunks: every page once, in order; with a span, a chunk ends only at a span boundary
    size = data.draw(st.integers(1, 900))
    shift = data.draw(st.sampled_from([0, 13, 16, 21]))
    seen: list[int] = []
    for lo, hi, vas in runs.chunks(size, align_shift=shift):
        assert lo == len(seen) and list(vas) == pages[lo:hi] and hi > lo
        if shift and hi < len(pages):
            assert pages[hi - 1] >> shift != pages[hi] >> shift
        seen.extend(vas)
    assert seen == pages
    assert PageRuns.from_addresses(pages, PAGE) == runs and as_runs(runs, PAGE) is runs
    # many at once (a merge walk while they ascend), as a snapshot's pages per VMA
    probes = data.draw(st.lists(st.integers(0, (pages[-1] if pages else PAGE) + 3 * PAGE),
                                max_size=12))
    for order in (sorted(probes), probes):
        assert runs.bisect_many(order) == [bisect_left(pages, va) for va in order]


def test_page_runs_refuse_what_is_not_a_page_list() -> None:
    for bad in ([PAGE, PAGE], [2 * PAGE, PAGE], [PAGE + 1]):
        with pytest.raises(UsageError):
            PageRuns.from_addresses(bad, PAGE)
    with pytest.raises(UsageError):
        PageRuns(array("Q", [0]), array("Q", [0]), PAGE)  # one index short
    with pytest.raises(UsageError):
        PageRuns(array("Q", [0]), array("Q", [4, 8]), PAGE)  # the first run past page 0
    with pytest.raises(UsageError):
        PageRuns.empty(3000)
    runs = PageRuns.from_addresses([0, PAGE], PAGE)
    with pytest.raises(UsageError):
        runs.expand(1, 3)
    with pytest.raises(UsageError):
        list(runs.chunks(0))


def test_runs_expand_refusals() -> None:
    ffi, lib = C.ffi, C.lib
    starts = ffi.new("uint64_t[]", [0x1000, 0x9000])
    firsts = ffi.new("uint64_t[]", [0, 3, 5])
    out = ffi.new("uint64_t[]", 8)
    assert lib.ptr_runs_expand(starts, firsts, 2, 12, 2, 3, out) == 0
    assert list(out[0:3]) == [0x3000, 0x9000, 0xA000]
    assert lib.ptr_runs_expand(starts, firsts, 2, 12, 4, 2, out) == -errno.EINVAL  # past the end
    assert lib.ptr_runs_expand(starts, firsts, 2, 12, 6, 0, out) == -errno.EINVAL
    assert lib.ptr_runs_expand(starts, firsts, 2, 64, 0, 1, out) == -errno.EINVAL
    assert lib.ptr_runs_expand(starts, firsts, 2, 12, 5, 0, out) == 0  # nothing, at the end
    down = ffi.new("uint64_t[]", [0, 3, 2, 4])  # indexes that do not ascend
    three = ffi.new("uint64_t[]", [0x1000, 0x9000, 0x20000])
    assert lib.ptr_runs_expand(three, down, 3, 12, 1, 3, out) == -errno.EINVAL
    late = ffi.new("uint64_t[]", [2, 5, 6])  # the first run starts past page 0
    assert lib.ptr_runs_expand(starts, late, 2, 12, 0, 1, out) == -errno.EINVAL
    # indexes out of order before the run asked about (found by a review: the binary search
    # ran over them and the call listed made-up addresses)
    four = ffi.new("uint64_t[]", [0x1000, 0x20000, 0x40000])
    jumbled = ffi.new("uint64_t[]", [0, 10, 5, 20])
    assert lib.ptr_runs_expand(four, jumbled, 3, 12, 12, 8, out) == -errno.EINVAL
