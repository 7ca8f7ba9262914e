"""Wrappers over csrc/pagescan.cdef (the per-page loops of looking at a live process) and the
bulk builders of core.cdef the mirror uses (``ptr_map_pages``, ``ptr_ensure_table``).

Arrays go to C by pointer, never copied: ``array('Q')`` for addresses and frame numbers,
``array('i')`` for node statuses, ``array('h')`` for block nodes, bytes for flags.
"""

from __future__ import annotations

import errno as _errno
import os
from array import array
from typing import Any

from ptreloc._native._base import Buffer, CoreBase, Handle
from ptreloc.errors import AddressError, AlreadyMapped, UsageError

__all__ = ["PagemapScan", "PagescanBindings", "SpanVotes"]

#: first guess at the distinct table spans of a page array (retried with one per page)
_FIRST_CAP = 1 << 14
#: first room for runs of resident pages in a pagemap scan (grown when short)
_FIRST_RUNS = 1 << 12


def _need(arr: Buffer, itemsize: int, what: str) -> int:
    view = memoryview(arr)
    if view.itemsize != itemsize or not view.c_contiguous:
        raise UsageError(f"{what} must be a contiguous array of {itemsize}-byte items")
    return len(view)


class SpanVotes:
    """What ptr_span_votes() counted: ``keys`` (span keys with an anonymous vote, ascending),
    ``counts`` (``nnodes`` votes per key, row after row), per-node totals of voting pages
    (``all_votes``) and of anonymous ones (``anon_votes``)."""

    __slots__ = ("keys", "counts", "nnodes", "all_votes", "anon_votes")

    def __init__(self, keys: array[int], counts: array[int], nnodes: int,
                 all_votes: list[int], anon_votes: list[int]) -> None:
        self.keys = keys
        self.counts = counts
        self.nnodes = nnodes
        self.all_votes = all_votes
        self.anon_votes = anon_votes

    def row(self, k: int) -> array[int]:
        return self.counts[k * self.nnodes:(k + 1) * self.nnodes]


class PagemapScan:
    """What ptr_pagemap_scan() found: the resident pages as runs (``run_start``: each run's
    first address, 'Q'; ``run_first``: its first page's index, 'Q', one more entry than runs:
    the page count - what ptreloc.runs.PageRuns holds), ``nodes`` (each page's node status,
    'i': node, -EFAULT for a zero page, or PTR_NODE_UNKNOWN), ``huge_index``/``huge_pfn``
    (each huge-page candidate's first page index and its head frame, 0 when hidden),
    ``unknown`` (pages with PTR_NODE_UNKNOWN) and ``framed`` (pages whose entry showed a frame
    number)."""

    __slots__ = ("run_start", "run_first", "nodes", "huge_index", "huge_pfn", "unknown",
                 "framed")

    def __init__(self, run_start: array[int], run_first: array[int], nodes: array[int],
                 huge_index: array[int], huge_pfn: array[int], unknown: int,
                 framed: int) -> None:
        self.run_start = run_start
        self.run_first = run_first
        self.nodes = nodes
        self.huge_index = huge_index
        self.huge_pfn = huge_pfn
        self.unknown = unknown
        self.framed = framed


class PagescanBindings(CoreBase):
    """csrc/pagescan.cdef and ptr_map_pages()/ptr_ensure_table() of core.cdef."""

    @property
    def node_unknown(self) -> int:
        return int(self.lib.PTR_NODE_UNKNOWN)

    def pagemap_compact(self, entries: Buffer | bytearray, n: int, first_vpn: int, page_shift: int,
                        vas: array[int], pfns: array[int]) -> int:
        """The present entries of ``entries[:n]`` (pagemap entries from virtual page
        ``first_vpn``) into ``vas``/``pfns`` (each at least ``n`` long); returns how many."""
        view = memoryview(entries)
        if not view.c_contiguous or view.nbytes < n * 8:
            raise UsageError(f"the pagemap buffer holds fewer than its {n} entries")
        if len(vas) < n or len(pfns) < n:
            raise UsageError(f"output arrays need {n} items")
        ffi = self.ffi
        return int(self.lib.ptr_pagemap_compact(
            ffi.from_buffer("uint64_t[]", entries), n, first_vpn, page_shift,
            ffi.from_buffer("uint64_t[]", vas), ffi.from_buffer("uint64_t[]", pfns)))

    def pagemap_read(self, fd: int, ranges: array[int], page_shift: int, buf: array[int],
                     vas: array[int], pfns: array[int], offset: int, pos: Any) -> int:
        """ptr_pagemap_read() into ``vas``/``pfns`` from index ``offset`` on (their length is
        the room); ``pos`` a cffi ``uint64_t[2]`` (:meth:`new_pos`) carried between calls.
        Returns the pages written; raises OSError for a failed read."""
        n = _need(vas, 8, "addresses")
        if _need(pfns, 8, "pfns") != n or offset > n or len(ranges) % 2:
            raise UsageError("vas and pfns must be as long as each other; ranges in pairs")
        ffi = self.ffi
        v = ffi.from_buffer("uint64_t[]", vas)
        f = ffi.from_buffer("uint64_t[]", pfns)
        got = self.lib.ptr_pagemap_read(fd, ffi.from_buffer("uint64_t[]", ranges),
                                        len(ranges) // 2, page_shift,
                                        ffi.from_buffer("uint64_t[]", buf), len(buf),
                                        v + offset, f + offset, n - offset, pos)
        if got < 0:
            raise OSError(-got, os.strerror(-got))
        return int(got)

    def pagemap_scan(self, fd: int, ranges: array[int], page_shift: int, *,
                     block_node: array[int] | None = None, block_shift: int = 0,
                     zero_ranges: array[int] | None = None, huge_shift: int = 0,
                     estimate: int = 0, buf_entries: int = 1 << 15) -> PagemapScan:
        """ptr_pagemap_scan() of ``ranges`` ([start, end) pairs) in ``fd`` (a pagemap file),
        to the end: the output starts with room for ``estimate`` pages (the resident set) and
        grows by half whenever it is full; the core goes on where it stopped.  Raises OSError
        for a failed read."""
        if len(ranges) % 2 or (zero_ranges is not None and len(zero_ranges) % 2):
            raise UsageError("ranges and zero ranges come in [start, end) pairs")
        per = 1 << (huge_shift - page_shift) if huge_shift > page_shift else 1
        ffi = self.ffi
        s = ffi.new("struct ptr_pagemap_scan *")
        buf = array("Q", [0]) * max(buf_entries, per)
        zero = zero_ranges if zero_ranges else array("Q", [0, 0])
        inputs = [ffi.from_buffer("uint64_t[]", ranges) if ranges else ffi.NULL,
                  ffi.from_buffer("uint64_t[]", buf), ffi.from_buffer("uint64_t[]", zero),
                  ffi.NULL if block_node is None else ffi.from_buffer("int16_t[]", block_node)]
        s.ranges, s.buf, s.zero_ranges, s.block_node = inputs
        s.nranges, s.page_shift, s.buf_entries = len(ranges) // 2, page_shift, len(buf)
        s.nzero = len(zero_ranges) // 2 if zero_ranges else 0
        s.nblocks = 0 if block_node is None else _need(block_node, 2, "block nodes")
        s.block_shift, s.huge_shift = block_shift, huge_shift
        cap = max(estimate, 0) + 1024 + per
        # array * n: one memset-like fill (array(typecode, bytes(n)) costs 4-10x more at
        # millions of items: a calloc'd source read page by page, then copied)
        nodes = array("i", [0]) * cap
        # runs: a dense process has a few hundred, the core wants room for a block's worth
        starts = array("Q", [0]) * (_FIRST_RUNS + per)
        firsts = array("Q", [0]) * len(starts)
        heads = array("Q", [0]) * (cap // per + 1)
        head_pfns = array("Q", [0]) * len(heads)
        try:
            while True:
                out = [ffi.from_buffer("uint64_t[]", starts),
                       ffi.from_buffer("uint64_t[]", firsts),
                       ffi.from_buffer("int32_t[]", nodes),
                       ffi.from_buffer("uint64_t[]", heads),
                       ffi.from_buffer("uint64_t[]", head_pfns)]
                s.run_start, s.run_first, s.nodes, s.huge_index, s.huge_pfn = out
                s.cap, s.run_cap, s.huge_cap = len(nodes), len(starts), len(heads)
                try:
                    got = self.lib.ptr_pagemap_scan(fd, s)
                finally:  # exported to the core for the call only: the arrays grow below
                    s.run_start = s.run_first = s.nodes = ffi.NULL
                    s.huge_index = s.huge_pfn = ffi.NULL
                    for view in out:
                        ffi.release(view)
                if got < 0 and got != -_errno.ENOSPC:
                    raise OSError(-got, os.strerror(-got))
                if s.pos[0] >= s.nranges:
                    break
                # full: grow what was short by half and go on (room for a block's pages
                # and as many runs is what the core checks)
                short_runs = len(starts) - s.runs < s.buf_entries + per
                if not short_runs or len(nodes) - s.done < s.buf_entries + per:
                    nodes.extend(array("i", [0]) * (len(nodes) // 2 + 1024 + per))
                if short_runs:
                    grow = len(starts) // 2 + s.buf_entries + per
                    starts.extend(array("Q", [0]) * grow)
                    firsts.extend(array("Q", [0]) * grow)
                more = len(nodes) // per + 1 - len(heads)
                if more > 0:
                    heads.extend(array("Q", [0]) * more)
                    head_pfns.extend(array("Q", [0]) * more)
        finally:
            for view in inputs:
                if view != ffi.NULL:
                    ffi.release(view)
        del starts[s.runs:]
        del firsts[s.runs:]
        firsts.append(s.done)
        del nodes[s.done:]
        del heads[s.huge_done:]
        del head_pfns[s.huge_done:]
        return PagemapScan(starts, firsts, nodes, heads, head_pfns, int(s.unknown),
                           int(s.framed))

    def runs_expand(self, run_start: array[int], run_first: array[int], page_shift: int,
                    lo: int, out: array[int]) -> None:
        """ptr_runs_expand(): the addresses of pages ``lo .. lo + len(out) - 1`` of the runs
        into ``out`` ('Q')."""
        nruns = _need(run_start, 8, "run starts")
        if _need(run_first, 8, "run indexes") != nruns + 1:
            raise UsageError("run indexes must be one more than the runs")
        n = _need(out, 8, "addresses")
        ffi = self.ffi
        self._check(self.lib.ptr_runs_expand(
            ffi.from_buffer("uint64_t[]", run_start), ffi.from_buffer("uint64_t[]", run_first),
            nruns, page_shift, lo, n, ffi.from_buffer("uint64_t[]", out)),
            f"listing pages {lo}..{lo + n}")

    def new_pos(self) -> Any:
        """A fresh resume position for :meth:`pagemap_read`: {0, 0}."""
        return self.ffi.new("uint64_t[2]")

    def span_votes(self, run_start: array[int], run_first: array[int], page_shift: int,
                   nodes: array[int], classes: bytes | bytearray, span_shift: int, nnodes: int,
                   allowed: bytes | None = None) -> SpanVotes:
        """ptr_span_votes(): the placement rule's votes per lowest-level table span, over the
        pages of runs (``run_start``/``run_first``: ptreloc.runs.PageRuns's arrays)."""
        nruns = _need(run_start, 8, "run starts")
        if _need(run_first, 8, "run indexes") != nruns + 1:
            raise UsageError("run indexes must be one more than the runs")
        n = run_first[-1]
        if _need(nodes, 4, "nodes") != n or len(classes) != n:
            raise UsageError("nodes and classes must be one per page of the runs")
        if nnodes < 1 or (allowed is not None and len(allowed) != nnodes):
            raise UsageError("nnodes must be >= 1 and allowed (when given) nnodes long")
        ffi = self.ffi
        totals = ffi.new("uint64_t[]", 2 * nnodes)
        cap = min(max(n, 1), _FIRST_CAP)
        while True:  # most processes have far fewer tables than pages: grow only if needed
            keys = array("Q", [0]) * cap
            counts = array("I", [0]) * (cap * nnodes)
            got = self.lib.ptr_span_votes(
                ffi.from_buffer("uint64_t[]", run_start), ffi.from_buffer("uint64_t[]", run_first),
                nruns, page_shift, ffi.from_buffer("int32_t[]", nodes),
                ffi.from_buffer("uint8_t[]", classes), span_shift,
                ffi.NULL if allowed is None else ffi.from_buffer("uint8_t[]", allowed), nnodes,
                ffi.from_buffer("uint64_t[]", keys), ffi.from_buffer("uint32_t[]", counts), cap,
                totals, totals + nnodes)
            if got != -_errno.ENOSPC or cap >= n:
                break
            cap = n
        self._check(got, "counting placement votes")
        del keys[got:]
        del counts[got * nnodes:]
        both = list(self.ffi.unpack(totals, 2 * nnodes))
        return SpanVotes(keys, counts, nnodes, both[:nnodes], both[nnodes:])

    def span_tops(self, counts: array[int], nnodes: int) -> array[int]:
        """ptr_span_tops(): per row of ``counts`` ('I', rows of ``nnodes``), the node with the
        most votes, ties to the lowest ('h')."""
        rows = _need(counts, 4, "vote counts") // max(nnodes, 1)
        if nnodes < 1 or rows * nnodes != len(counts):
            raise UsageError("vote counts come in rows of nnodes >= 1")
        tops = array("h", bytes(2 * rows))
        ffi = self.ffi
        self._check(self.lib.ptr_span_tops(ffi.from_buffer("uint32_t[]", counts), rows, nnodes,
                                           ffi.from_buffer("int16_t[]", tops)),
                    "choosing each table's node")
        return tops

    def span_rollup(self, keys: array[int], counts: array[int], nnodes: int,
                    bits: int) -> tuple[array[int], array[int]]:
        """ptr_span_rollup(): the rows of ``keys`` summed per ``key >> bits``: (upper keys
        'Q', their rows 'I')."""
        n = _need(keys, 8, "span keys")
        if nnodes < 1 or _need(counts, 4, "vote counts") != n * nnodes:
            raise UsageError("vote counts must be one row of nnodes >= 1 per key")
        out_keys = array("Q", bytes(8 * n))
        out_counts = array("I", bytes(4 * n * nnodes))
        ffi = self.ffi
        m = self._check(self.lib.ptr_span_rollup(
            ffi.from_buffer("uint64_t[]", keys), ffi.from_buffer("uint32_t[]", counts), n,
            nnodes, bits, ffi.from_buffer("uint64_t[]", out_keys),
            ffi.from_buffer("uint32_t[]", out_counts)), "summing votes per upper table")
        del out_keys[m:]
        del out_counts[m * nnodes:]
        return out_keys, out_counts

    def span_keys(self, vas: array[int], span_shift: int) -> array[int]:
        """The distinct ``va >> span_shift`` of ascending ``vas``."""
        n = _need(vas, 8, "addresses")
        cap = min(max(n, 1), _FIRST_CAP)
        while True:
            out = array("Q", [0]) * cap
            got = self.lib.ptr_span_keys(self.ffi.from_buffer("uint64_t[]", vas), n, span_shift,
                                         self.ffi.from_buffer("uint64_t[]", out), cap)
            if got != -_errno.ENOSPC or cap >= n:
                break
            cap = n
        self._check(got, "counting table spans")
        del out[got:]
        return out

    def status_histogram(self, status: array[int], lo: int, hi: int) -> tuple[list[int], int]:
        """(count of each value lo..hi, how many fell outside)."""
        n = _need(status, 4, "statuses")
        if hi < lo:
            raise UsageError("hi must be >= lo")
        hist = self.ffi.new("uint64_t[]", hi - lo + 1)
        outside = self._check(self.lib.ptr_status_histogram(
            self.ffi.from_buffer("int32_t[]", status), n, lo, hi, hist), "counting statuses")
        return list(self.ffi.unpack(hist, hi - lo + 1)), outside

    def pair_histogram(self, before: array[int], after: array[int],
                       nbins: int) -> tuple[array[int], int]:
        """ptr_pair_histogram(): (the (nbins + 1) ** 2 counts of (before, after) bins as one
        array('Q'), row by ``before`` - bin ``nbins`` is every negative status -, how many
        pages had a node >= ``nbins`` on either side)."""
        n = _need(before, 4, "before statuses")
        if _need(after, 4, "after statuses") != n:
            raise UsageError("before and after must be as long as each other")
        if not 1 <= nbins <= 4096:
            raise UsageError(f"nbins must be 1..4096, not {nbins}")
        hist = array("Q", bytes(8 * (nbins + 1) ** 2))
        ffi = self.ffi
        outside = self._check(self.lib.ptr_pair_histogram(
            ffi.from_buffer("int32_t[]", before), ffi.from_buffer("int32_t[]", after), n, nbins,
            ffi.from_buffer("uint64_t[]", hist)), "counting node pairs")
        return hist, int(outside)

    def nodes_carry(self, last: array[int], now: array[int]) -> tuple[array[int], int]:
        """ptr_nodes_carry(): (this look's nodes, with a page the kernel cannot place now
        keeping its last node, as a new array('i'); how many pages changed node)."""
        n = _need(last, 4, "last statuses")
        if _need(now, 4, "statuses now") != n:
            raise UsageError("the last and this look's statuses must be as long as each other")
        out = array("i", bytes(4 * n))
        ffi = self.ffi
        moved = self.lib.ptr_nodes_carry(ffi.from_buffer("int32_t[]", last),
                                         ffi.from_buffer("int32_t[]", now), n,
                                         ffi.from_buffer("int32_t[]", out))
        return out, int(moved)

    def select_pairs(self, before: array[int], after: array[int],
                     member: bytes | bytearray) -> array[int]:
        """ptr_select_pairs(): the indexes (array('Q'), ascending) of the pages whose
        ``before`` and ``after`` nodes are both flagged in ``member`` (one byte per node)."""
        n = _need(before, 4, "before statuses")
        if _need(after, 4, "after statuses") != n:
            raise UsageError("before and after must be as long as each other")
        if not member:
            return array("Q")
        ffi = self.ffi
        cap = min(max(n, 1), _FIRST_CAP)
        while True:  # few pages are left behind: room for all of them only if needed
            out = array("Q", bytes(8 * cap))
            got = self.lib.ptr_select_pairs(
                ffi.from_buffer("int32_t[]", before), ffi.from_buffer("int32_t[]", after), n,
                ffi.from_buffer("uint8_t[]", member), len(member),
                ffi.from_buffer("uint64_t[]", out), cap)
            if got != -_errno.ENOSPC or cap >= n:
                break
            cap = n
        self._check(got, "selecting node pairs")
        del out[got:]
        return out

    def map_pages(self, mm: Handle, run_start: array[int], run_first: array[int],
                  span_keys: array[int], span_nodes: array[int], default_node: int,
                  ro: array[int], huge: array[int], start: int = 0,
                  stop: int | None = None) -> int:
        """ptr_map_pages() (csrc/pgtable.c) of pages ``start .. stop - 1`` of the runs
        (``run_start``/``run_first``: ptreloc.runs.PageRuns's arrays); returns the leaves
        installed."""
        nruns = _need(run_start, 8, "run starts")
        if _need(run_first, 8, "run indexes") != nruns + 1:
            raise UsageError("run indexes must be one more than the runs")
        total = run_first[-1]
        stop = total if stop is None else stop
        if not 0 <= start <= stop <= total:
            raise UsageError(f"pages {start}..{stop} are not within the {total} given")
        n = stop - start
        nspans = _need(span_keys, 8, "span keys")
        if _need(span_nodes, 2, "span nodes") != nspans or len(ro) % 2:
            raise UsageError("span nodes must match the keys; read-only ranges come in pairs")
        ffi = self.ffi
        keep = [ffi.from_buffer("uint64_t[]", run_start), ffi.from_buffer("uint64_t[]", run_first),
                ffi.from_buffer("uint64_t[]", span_keys),
                ffi.from_buffer("int16_t[]", span_nodes), ffi.from_buffer("uint64_t[]", ro),
                ffi.from_buffer("uint64_t[]", huge)]
        s = ffi.new("struct ptr_page_set *", {
            "run_start": keep[0], "run_first": keep[1], "nruns": nruns, "lo": start,
            "hi": stop, "span_keys": keep[2], "span_nodes": keep[3], "nspans": nspans,
            "default_node": default_node, "ro": keep[4], "nro": len(ro) // 2,
            "huge": keep[5], "nhuge": _need(huge, 8, "huge starts")})
        what = f"mapping {n} pages"
        self._check(self.lib.ptr_map_pages(mm, s), what, {
            _errno.EEXIST: AlreadyMapped(f"{what}: a page or a huge block is already mapped"),
            _errno.EINVAL: AddressError(
                f"{what}: pages must be ascending and page-aligned, and each huge block "
                f"aligned and wholly among them"),
        })
        return int(s.leaves)

    def ensure_table(self, mm: Handle, va: int, level: int, node: int) -> None:
        """ptr_ensure_table(): the level-``level`` table over ``va`` exists (new ones on
        ``node``)."""
        self._check(self.lib.ptr_ensure_table(mm, self._u64("va", va), level, node),
                    f"placing the level-{level} table over {va:#x}", {
                        _errno.EEXIST: AlreadyMapped(
                            f"a huge leaf covers {va:#x}: it has no level-{level} table"),
                        _errno.EINVAL: UsageError(f"no table level {level} below the root"),
                    }, node=node)
