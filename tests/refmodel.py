"""A small pure-Python reference model of the page-table core, for differential tests.

It keeps the *meaning* of a page-table tree, not its bytes: which tables exist (per level, by
the VA prefix they cover), which leaves exist (base VA -> level, phys, writable, young, dirty),
and one emulated CPU's TLB (direct-mapped per leaf level, caching writable and dirty-known,
flushed by the shootdowns the core issues).  The C core must agree with it on every
translation, every A/D bit, every fault and every per-level table count.
"""

from __future__ import annotations

from dataclasses import dataclass

from ptreloc.core import Geometry
from ptreloc.errors import AddressError, AlreadyMapped, NotMapped

TLB_SETS = 64  # PTR_TLB_SETS


@dataclass
class Leaf:
    level: int
    phys: int
    writable: bool
    young: bool = False
    dirty: bool = False


class RefModel:
    def __init__(self, geo: Geometry) -> None:
        self.g = geo
        self.top = geo.nlevels - 1
        self.tables: list[set[int]] = [set() for _ in range(geo.nlevels)]
        self.tables[self.top].add(0)
        if geo.top_preloaded:  # PAE: all PDPTEs populated at creation
            for i in range(geo.levels[self.top].entries):
                self.tables[self.top - 1].add(i)
        self.leaves: dict[int, Leaf] = {}
        self.tlb: dict[tuple[int, int], tuple[int, bool, bool]] = {}  # (level, set) -> entry

    # -- geometry helpers --
    def span(self, level: int) -> int:
        return 1 << self.g.levels[level].shift

    def table_prefix(self, level: int, va: int) -> int:
        lv = self.g.levels[level]
        return (va & ((1 << 64) - 1)) >> (lv.shift + lv.bits) if level < self.top else 0

    def check_va(self, va: int) -> None:
        g = self.g
        if g.canonical:
            hi = va >> (g.va_bits - 1)
            if hi not in (0, (1 << (65 - g.va_bits)) - 1):
                raise AddressError("not canonical")
        elif va >> g.va_bits:
            raise AddressError("out of range")

    def leaf_at(self, va: int) -> tuple[int, Leaf] | None:
        for level in range(self.g.nlevels):
            base = va & ~(self.span(level) - 1)
            leaf = self.leaves.get(base)
            if leaf is not None and leaf.level == level:
                return base, leaf
        return None

    def counts(self) -> dict[str, int]:
        return {lv.name: len(self.tables[lv.index]) for lv in self.g.levels}

    # -- operations (mirror ptreloc.core.AddressSpace) --
    def map(self, start: int, length: int, phys: int, level: int, writable: bool) -> None:
        end = start + length
        size = self.span(level)
        if length <= 0 or (start | end | phys) % size:
            raise AddressError("unaligned")
        self.check_va(start)
        self.check_va(end - 1)
        for va in range(start, end, size):
            # an existing leaf anywhere in [va, va+size), or a table where this leaf would go
            if any(va <= b < va + size or b <= va < b + self.span(lf.level)
                   for b, lf in self.leaves.items()):
                raise AlreadyMapped("mapped")
            if level > 0 and self.table_prefix(level - 1, va) in self.tables[level - 1]:
                raise AlreadyMapped("table in the way")
        for va in range(start, end, size):
            for lv in range(level, self.top):
                self.tables[lv].add(self.table_prefix(lv, va))
            self.leaves[va] = Leaf(level, phys + (va - start), writable)

    def _covered(self, start: int, end: int) -> list[int]:
        out = []
        for b, lf in self.leaves.items():
            s = self.span(lf.level)
            if b < end and start < b + s:
                if b < start or b + s > end:
                    raise AddressError("cuts a huge page")
                out.append(b)
        return out

    def unmap(self, start: int, length: int) -> tuple[int, int]:
        bases = self._covered(start, start + length)
        dirty = sum(self.leaves[b].dirty for b in bases)
        for b in bases:
            del self.leaves[b]
        if bases:
            self.tlb.clear()
        return len(bases), dirty

    def protect(self, start: int, length: int, writable: bool) -> int:
        bases = self._covered(start, start + length)
        changed = 0
        for b in bases:
            if self.leaves[b].writable != writable:
                self.leaves[b].writable = writable
                changed += 1
        if changed and not writable:
            self.tlb.clear()
        return changed

    def translate(self, va: int) -> tuple[int, int, bool, bool, bool] | None:
        found = self.leaf_at(va)
        if found is None:
            return None
        base, lf = found
        return lf.phys + (va - base), lf.level, lf.writable, lf.young, lf.dirty

    def test_and_clear_young(self, va: int) -> bool:
        found = self.leaf_at(va)
        if found is None:
            raise NotMapped("not mapped")
        was, found[1].young = found[1].young, False
        return was

    def test_and_clear_dirty(self, va: int) -> bool:
        found = self.leaf_at(va)
        if found is None:
            raise NotMapped("not mapped")
        was, found[1].dirty = found[1].dirty, False
        if was:
            self.tlb.clear()
        return was

    def access(self, va: int, write: bool) -> str | None:
        """One CPU access without fault handling: None, "not_present" or "protection"."""
        for level in range(self.g.nlevels):
            if not self.g.levels[level].leaf_ok:
                continue
            vpn = (va >> self.g.levels[level].shift) + 1
            ent = self.tlb.get((level, vpn % TLB_SETS))
            if ent is None or ent[0] != vpn:
                continue
            _, writable, dirty_known = ent
            if write and not writable:
                return "protection"
            if not write or dirty_known:
                return None
            break
        found = self.leaf_at(va)
        if found is None:
            return "not_present"
        _, lf = found
        if write and not lf.writable:
            return "protection"
        lf.young = True
        if write:
            lf.dirty = True
        vpn = (va >> self.g.levels[lf.level].shift) + 1
        self.tlb[(lf.level, vpn % TLB_SETS)] = (vpn, lf.writable, lf.dirty)
        return None
