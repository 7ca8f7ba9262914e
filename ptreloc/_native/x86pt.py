"""Wrapper over csrc/x86pt.cdef: decoding one real x86-64 page-table page (kernel_tables)."""

from __future__ import annotations

import threading
from array import array
from typing import Any

from ptreloc._native._base import CoreBase
from ptreloc.errors import UsageError

__all__ = ["X86Bindings"]


class X86Bindings(CoreBase):
    """csrc/x86pt.cdef."""

    def x86_decode_table(
        self, data: bytes, level: int, limit: int = 512
    ) -> tuple[array[int], array[int], array[int], array[int], int, int]:
        """ptr_x86_decode_table() over the first ``limit`` entries of one 4 KiB table page:
        (leaf entry numbers 'H', leaf frames 'Q', child entry numbers 'H', child frames 'Q',
        non-present entries, bad entries)."""
        if len(data) < 8 * limit or not 0 < limit <= 512:
            raise UsageError(f"a table page holds 512 entries; got {len(data)} bytes, {limit}")
        if not 0 <= level <= 4:
            raise UsageError(f"x86-64 table level must be 0 (pte)..4 (pgd), not {level}")
        li, lp, ci, cp, cdata = self._x86_scratch()
        words = self.ffi.from_buffer("uint64_t[]", data)
        self._check(self.lib.ptr_x86_decode_table(words, limit, level, *cdata),
                    "decoding a page table")
        out = cdata[4]
        nl, nc = out.nleaves, out.nchildren
        return li[:nl], lp[:nl], ci[:nc], cp[:nc], int(out.nonpresent), int(out.bad)

    def _x86_scratch(
        self,
    ) -> tuple[array[int], array[int], array[int], array[int], tuple[Any, ...]]:
        """This thread's output buffers for one table (512 entries each) and their cdata views:
        made once, not per table - a walk decodes every table of a process, and under TCG the
        allocations cost more than the decoding.  The results are slices (copies) of them."""
        local = self.__dict__.get("_x86_local")
        if local is None:
            local = self.__dict__.setdefault("_x86_local", threading.local())
        bufs: tuple[Any, ...] | None = getattr(local, "bufs", None)
        if bufs is None:
            li, lp = array("H", bytes(2 * 512)), array("Q", bytes(8 * 512))
            ci, cp = array("H", bytes(2 * 512)), array("Q", bytes(8 * 512))
            f = self.ffi.from_buffer
            cdata = (f("uint16_t[]", li), f("uint64_t[]", lp), f("uint16_t[]", ci),
                     f("uint64_t[]", cp), self.ffi.new("struct ptr_x86_table *"))
            bufs = local.bufs = (li, lp, ci, cp, cdata)
        return bufs
