"""A process's resident pages as runs of consecutive pages (:class:`PageRuns`).

A snapshot used to keep one 8-byte address per resident page: at 2.1M pages (an 8 GiB dense
process) that is 17 MB, a third of what ``ptreloc show`` held, for a list that is mostly
arithmetic - a dense process has a few hundred runs.  ``PageRuns`` keeps per run its first
address and the index of its first page (16 bytes a run) and answers what the readers ask: how
many pages, the address of page i, the index of the first page at or above an address, the
addresses of pages lo..hi (expanded in C, ``ptr_runs_expand``), and chunks of them for the
calls into the core that take explicit addresses (``chunks``: one buffer reused, cut at a
table span's boundary when asked, so a span - and a huge block - is never split between two
calls).  It is a ``Sequence[int]``: ``len``, indexing, slicing (an ``array('Q')``), iteration
and ``bisect`` work as they did on the array, at O(log runs) an index instead of O(1).

Written here rather than taken from a library: numpy would hold the same arrays, but it is not
a dependency and the loops that matter are in C already; no interval-set package answers
"index of page i" in O(log n) on two flat arrays.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload

from ptreloc.errors import UsageError

__all__ = ["CHUNK_PAGES", "PageRuns"]

#: pages per chunk of :meth:`PageRuns.chunks` by default: 512 KiB of addresses, reused
CHUNK_PAGES = 1 << 16


def _core() -> Any:
    from ptreloc._native import core

    return core("relo")


class PageRuns(Sequence[int]):
    """Ascending page addresses as runs: run r holds the pages ``starts[r] + k * page_size``
    for k in ``0 .. first[r + 1] - first[r] - 1``; ``first`` has one more entry than
    ``starts`` (the total).  Runs that touch are one run (``from_addresses`` and the pagemap
    scan merge them), so two equal page sets have equal arrays.  Immutable by contract: the
    arrays are shared, never changed in place."""

    __slots__ = ("starts", "first", "page_size", "_shift")

    def __init__(self, starts: array[int], first: array[int], page_size: int) -> None:
        if starts.typecode != "Q" or first.typecode != "Q" or len(first) != len(starts) + 1:
            raise UsageError("page runs are array('Q') starts and one more array('Q') index")
        if first[0] != 0:
            raise UsageError(f"the first run starts at page {first[0]}, not 0")
        if page_size <= 0 or page_size & (page_size - 1):
            raise UsageError(f"page size {page_size} is not a power of two")
        self.starts = starts
        self.first = first
        self.page_size = page_size
        self._shift = page_size.bit_length() - 1

    # ---- building ------------------------------------------------------------------------
    @classmethod
    def from_addresses(cls, addresses: Iterable[int], page_size: int) -> PageRuns:
        """The runs of ascending, page-aligned, distinct ``addresses``."""
        starts, first = array("Q"), array("Q")
        n = 0
        end = -1
        last = -1
        for va in addresses:
            if va <= last or va % page_size:
                raise UsageError(f"page address {va:#x} is not page aligned and above "
                                 f"the one before it")
            if va != end:
                starts.append(va)
                first.append(n)
            n += 1
            end = va + page_size
            last = va
        first.append(n)
        return cls(starts, first, page_size)

    @classmethod
    def empty(cls, page_size: int) -> PageRuns:
        return cls(array("Q"), array("Q", [0]), page_size)

    # ---- Sequence --------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.first[-1])

    @property
    def page_shift(self) -> int:
        return self._shift

    @property
    def runs(self) -> int:
        return len(self.starts)

    @property
    def nbytes(self) -> int:
        """What the runs hold: 16 bytes a run."""
        return (len(self.starts) + len(self.first)) * 8

    @overload
    def __getitem__(self, i: int) -> int: ...

    @overload
    def __getitem__(self, i: slice) -> array[int]: ...

    def __getitem__(self, i: int | slice) -> int | array[int]:
        n = len(self)
        if isinstance(i, slice):
            lo, hi, step = i.indices(n)
            if step != 1:
                return array("Q", (self[k] for k in range(lo, hi, step)))
            return self.expand(lo, max(lo, hi))
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"page index {i} out of range ({n} pages)")
        r = bisect_right(self.first, i) - 1
        return int(self.starts[r] + ((i - self.first[r]) << self._shift))

    def __iter__(self) -> Iterator[int]:
        page = self.page_size
        for r, start in enumerate(self.starts):
            yield from range(start, start + (self.first[r + 1] - self.first[r]) * page, page)

    def __contains__(self, va: object) -> bool:
        if not isinstance(va, int) or va % self.page_size:
            return False
        i = self.bisect(va)
        return i < len(self) and self[i] == va

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PageRuns):
            return (self.page_size == other.page_size and self.starts == other.starts
                    and self.first == other.first)
        if isinstance(other, array | list | tuple):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other,
                                                                           strict=True))
        return NotImplemented


    def __repr__(self) -> str:
        return f"PageRuns({len(self)} pages in {self.runs} runs)"

    # ---- what the readers ask ----------------------------------------------------------
    def bisect(self, va: int) -> int:
        """The index of the first page at or above ``va`` (``bisect_left`` on the addresses)."""
        r = bisect_right(self.starts, va) - 1
        if r < 0:
            return 0
        lo, hi = self.first[r], self.first[r + 1]
        inside = -(-(va - self.starts[r]) >> self._shift)  # pages of run r below va
        return int(lo + min(inside, hi - lo))

    def bisect_many(self, addresses: Iterable[int]) -> list[int]:
        """:meth:`bisect` of each of ``addresses``: one merge walk over the runs, O(addresses +
        runs), not a binary search each, while they ascend (one that does not is searched
        for on its own)."""
        out: list[int] = []
        starts, first, shift = self.starts, self.first, self._shift
        nruns = len(starts)
        r = 0
        last = -1
        for va in addresses:
            if va < last:  # not ascending after all: this one on its own
                out.append(self.bisect(va))
                continue
            last = va
            # the first run that ends above va (pages of the runs before it are all below)
            while r < nruns and starts[r] + ((first[r + 1] - first[r]) << shift) <= va:
                r += 1
            if r == nruns:
                out.append(int(first[-1]))
            elif va <= starts[r]:
                out.append(int(first[r]))
            else:
                out.append(int(first[r] + (-(-(va - starts[r]) >> shift))))
        return out

    def span(self, start: int, end: int) -> tuple[int, int]:
        """(first index, end index) of the pages in ``[start, end)``."""
        return self.bisect(start), self.bisect(end)

    def expand(self, lo: int = 0, hi: int | None = None, out: array[int] | None = None
               ) -> array[int]:
        """The addresses of pages ``lo .. hi - 1`` as an ``array('Q')`` (into ``out`` when
        given: it is resized to fit), filled in C."""
        n = len(self)
        hi = n if hi is None else hi
        if not 0 <= lo <= hi <= n:
            raise UsageError(f"pages {lo}..{hi} are not within the {n} pages")
        if out is None:
            out = array("Q", [0]) * (hi - lo)
        elif len(out) != hi - lo:
            if len(out) > hi - lo:
                del out[hi - lo:]
            else:
                out.extend(array("Q", [0]) * (hi - lo - len(out)))
        if hi > lo:
            _core().runs_expand(self.starts, self.first, self._shift, lo, out)
        return out

    def chunks(self, pages: int = CHUNK_PAGES, align_shift: int = 0
               ) -> Iterator[tuple[int, int, array[int]]]:
        """(lo, hi, addresses of pages lo..hi-1) for every page, about ``pages`` at a time.
        With ``align_shift``, a chunk ends only where the next page starts a new
        ``2**align_shift`` span (a chunk may then be up to one span longer).  One buffer is
        reused: the array yielded is overwritten by the next chunk."""
        if pages < 1:
            raise UsageError(f"chunks of {pages} pages")
        n = len(self)
        buf = array("Q")
        lo = 0
        while lo < n:
            hi = min(lo + pages, n)
            if align_shift and hi < n:
                last = self[hi - 1]
                hi = max(hi, self.bisect(((last >> align_shift) + 1) << align_shift))
            yield lo, hi, self.expand(lo, hi, buf)
            lo = hi


def as_runs(resident: PageRuns | Iterable[int], page_size: int) -> PageRuns:
    """``resident`` as page runs (an address array or list is converted)."""
    if isinstance(resident, PageRuns):
        return resident
    return PageRuns.from_addresses(resident, page_size)
