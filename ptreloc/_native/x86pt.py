"""Wrapper over csrc/x86pt.cdef: decoding one real x86-64 page-table page (kernel_tables)."""

from __future__ import annotations

from array import array

from ptreloc._native._base import CoreBase
from ptreloc.errors import UsageError

__all__ = ["X86Bindings"]


class X86Bindings(CoreBase):
    """csrc/x86pt.cdef."""

    def x86_decode_table(
        self, data: bytes, level: int, limit: int = 512
    ) -> tuple[array, array, array, array, int, int]:
        """ptr_x86_decode_table() over the first ``limit`` entries of one 4 KiB table page:
        (leaf entry numbers 'H', leaf frames 'Q', child entry numbers 'H', child frames 'Q',
        non-present entries, bad entries)."""
        if len(data) < 8 * limit or not 0 < limit <= 512:
            raise UsageError(f"a table page holds 512 entries; got {len(data)} bytes, {limit}")
        if not 0 <= level <= 4:
            raise UsageError(f"x86-64 table level must be 0 (pte)..4 (pgd), not {level}")
        li, lp = array("H", bytes(2 * limit)), array("Q", bytes(8 * limit))
        ci, cp = array("H", bytes(2 * limit)), array("Q", bytes(8 * limit))
        out = self.ffi.new("struct ptr_x86_table *")
        f = self.ffi.from_buffer
        self._check(self.lib.ptr_x86_decode_table(
            f("uint64_t[]", data), limit, level, f("uint16_t[]", li), f("uint64_t[]", lp),
            f("uint16_t[]", ci), f("uint64_t[]", cp), out), "decoding a page table")
        nl, nc = out.nleaves, out.nchildren
        return li[:nl], lp[:nl], ci[:nc], cp[:nc], int(out.nonpresent), int(out.bad)

