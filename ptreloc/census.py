"""What pins memory, per NUMA node: page tables counted frame by frame from /proc/kpageflags.

The 2008 RFC ("MM: Make Page Tables Relocatable") claimed page tables are "the largest chunk of
non-moveable memory (needs verification)".  ``take_census()`` verifies it on the running
machine: every frame of every memory block of the chosen nodes gets one *kind* from its
kpageflags word, and pageblocks and memory blocks are judged by the unmovable kinds they hold.

Kinds (include/uapi/linux/kernel-page-flags.h bits; the first rule that matches wins):

* ``hole``: KPF_NOPAGE (20) - no struct page, or the frame's memory block is offline;
* ``pagetable``: KPF_PGTABLE (26) - a page table *at a level the kernel marks PG_table*; the
  constructor that marks it also counts it in the node's NR_PAGETABLE (``PageTables:``), so
  this count is checked against that counter (``marked_levels()`` says which levels the
  running kernel marks: measured by walking this process's own tables; Linux 6.1 marks PTE
  and PMD tables only - its PUD/P4D/PGD tables are allocated without a constructor);
* ``slab``: KPF_SLAB (7, set on the tails of a slab folio too);
* ``free``: KPF_BUDDY (10) - in the buddy allocator (every page of a free block is flagged:
  fs/proc/page.c tests ``is_free_buddy_page()`` for the tails);
* ``offline``: KPF_OFFLINE (23) - logically offline (balloon, virtio-mem);
* ``movable``: KPF_LRU (5), KPF_ANON (12), KPF_SWAPCACHE (13), KPF_HUGE (17, hugetlbfs,
  migratable on x86-64), KPF_KSM (21) or KPF_THP (22, tails included) - what compaction and
  memory offlining can migrate;
* ``reserved``: KPF_RESERVED (32) - memblock reservations: the kernel image, the node's own
  memmap (struct pages), firmware tables, early boot allocations;
* ``kernel_other``: everything else - a page in use with none of the flags above: vmalloc and
  kernel-stack pages, per-cpu areas, page_ext, driver and network buffers, pages isolated for
  migration at that instant, and (the one imprecision) free pages on the per-cpu page lists,
  which kpageflags cannot tell from allocated ones (at most a few hundred pages per CPU);
* ``pagetable_unmarked`` (only with ``by_process``): a frame the kernel walk of some process
  found to be one of its page tables at a level the kernel does not mark (PGD/P4D/PUD on 6.1),
  which kpageflags alone would have called ``kernel_other``.

Unmovable kinds: pagetable (with pagetable_unmarked), slab, reserved, kernel_other.  A pageblock
(``1 << pageblock_order`` frames, /proc/pagetypeinfo) holding any of them is *pinned*: it
cannot become a free huge page and its memory block cannot go offline (has_unmovable_pages()).
"Page tables are the only unmovable content" of a pageblock when it holds page tables and no
other unmovable kind - moving those tables alone would free it.

Speed: /proc/kpageflags is read one memory block at a time (at most 32,768 frames per read;
reading the whole file at once fails with EINVAL), and each chunk is classified without a
per-frame Python loop: the chunk becomes one big integer, each flag is extracted for every
frame at once with a shift and a mask of one bit per 64-bit lane, the kinds are combined into
one code per lane, and ``bytes.count`` counts codes per pageblock.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ptreloc import numa
from ptreloc.errors import AccessDenied, InvalidNode, PtrelocError, UsageError

__all__ = [
    "KINDS",
    "UNMOVABLE",
    "KIND_HELP",
    "CensusUnavailable",
    "MemoryBlock",
    "memory_blocks",
    "pageblock_order",
    "classify",
    "marked_levels",
    "pagetables_margin_pages",
    "Census",
    "take_census",
]

PAGE_SIZE = 4096
KPAGEFLAGS = "/proc/kpageflags"
PAGETYPEINFO = "/proc/pagetypeinfo"
ZONEINFO = "/proc/zoneinfo"
NODE_DIR = "/sys/devices/system/node"
MEMORY_DIR = "/sys/devices/system/memory"
MAX_READ_FRAMES = 32768  # 256 KiB of kpageflags per read

# include/uapi/linux/kernel-page-flags.h
KPF_LRU = 5
KPF_SLAB = 7
KPF_BUDDY = 10
KPF_ANON = 12
KPF_SWAPCACHE = 13
KPF_HUGE = 17
KPF_NOPAGE = 20
KPF_KSM = 21
KPF_THP = 22
KPF_OFFLINE = 23
KPF_PGTABLE = 26
KPF_RESERVED = 32

# one code per frame (the low byte of its lane); kernel_other is 0 so it needs no arithmetic
_OTHER, _PGT, _SLAB, _FREE, _MOVABLE, _RESERVED, _OFFLINE, _HOLE, _PGT_UNMARKED = range(9)
KINDS: tuple[str, ...] = (
    "kernel_other", "pagetable", "slab", "free", "movable", "reserved", "offline", "hole",
    "pagetable_unmarked",
)
UNMOVABLE: tuple[str, ...] = ("pagetable", "pagetable_unmarked", "slab", "reserved",
                              "kernel_other")
# what pins a pageblock, with both kinds of page table as one
_PIN_FAMILIES: dict[str, tuple[int, ...]] = {
    "pagetable": (_PGT, _PGT_UNMARKED),
    "slab": (_SLAB,),
    "reserved": (_RESERVED,),
    "kernel_other": (_OTHER,),
}
KIND_HELP: dict[str, str] = {
    "pagetable": "KPF_PGTABLE: page tables at the levels the kernel marks (= PageTables)",
    "pagetable_unmarked": "page tables at unmarked levels, found by the kernel walk",
    "slab": "KPF_SLAB",
    "reserved": "KPF_RESERVED: kernel image, memmap, firmware, boot allocations",
    "kernel_other": "in use, none of LRU/anon/buddy/slab/pgtable/reserved (vmalloc, stacks, "
                    "per-cpu, drivers; also per-cpu free lists)",
    "free": "KPF_BUDDY",
    "movable": "LRU, anon, swapcache, THP, hugetlb, KSM",
    "offline": "KPF_OFFLINE (balloon, virtio-mem)",
    "hole": "no page (KPF_NOPAGE) or an offline block",
}


class CensusUnavailable(AccessDenied):
    """/proc/kpageflags (or the memory-block layout) cannot be read here."""


# --------------------------------------------------------------------------------------------
# layout
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryBlock:
    """One memory block: frames ``[start_pfn, end_pfn)`` of ``node``."""

    index: int
    node: int
    start_pfn: int
    end_pfn: int
    state: str  # "online", "offline", "going-offline", ... as sysfs says
    zones: str  # valid_zones: the zone an online block is in ("Normal", "Movable", ...)


def _read(path: str) -> str:
    return Path(path).read_text().strip()


def block_size_bytes(memory_dir: str = MEMORY_DIR) -> int:
    path = os.path.join(memory_dir, "block_size_bytes")
    try:
        return int(_read(path), 16)  # hex without 0x
    except (OSError, ValueError) as err:
        raise CensusUnavailable(f"cannot read {path} ({err}): the kernel has no memory-block "
                                "sysfs (CONFIG_MEMORY_HOTPLUG), frames cannot be placed on "
                                "nodes") from err


def memory_blocks(node: int | None = None, node_dir: str = NODE_DIR,
                  memory_dir: str = MEMORY_DIR) -> list[MemoryBlock]:
    """The memory blocks of ``node`` (every node's when None), in frame order."""
    frames = block_size_bytes(memory_dir) // PAGE_SIZE
    nodes = ([node] if node is not None else
             sorted(int(n[4:]) for n in os.listdir(node_dir) if re.fullmatch(r"node\d+", n)))
    out = []
    for n in nodes:
        try:
            names = os.listdir(os.path.join(node_dir, f"node{n}"))
        except OSError as err:
            raise InvalidNode(f"node {n} does not exist ({err.strerror})") from err
        for name in names:
            if not re.fullmatch(r"memory\d+", name):
                continue
            m = int(name[6:])
            base = os.path.join(memory_dir, name)
            try:
                state = _read(os.path.join(base, "state"))
            except OSError:
                state = "unknown"
            try:
                zones = _read(os.path.join(base, "valid_zones"))
            except OSError:
                zones = ""
            out.append(MemoryBlock(m, n, m * frames, (m + 1) * frames, state, zones))
    return sorted(out, key=lambda b: b.start_pfn)


def pageblock_order(path: str = PAGETYPEINFO) -> int:
    """"Page block order: 9" from /proc/pagetypeinfo (root only)."""
    try:
        text = Path(path).read_text()
    except PermissionError as err:
        raise CensusUnavailable(f"cannot read {path}: needs root") from err
    except OSError as err:
        raise CensusUnavailable(f"cannot read {path}: {err.strerror}") from err
    m = re.search(r"^Page block order:\s*(\d+)", text, re.M)
    if m is None:
        raise CensusUnavailable(f"{path} has no 'Page block order' line")
    return int(m.group(1))


def pagetables_margin_pages(node: int, zoneinfo: str = ZONEINFO) -> int:
    """How far the node's ``PageTables:`` may lag the truth (``numa.vmstat_lag_pages``)."""
    return numa.vmstat_lag_pages(node, zoneinfo)


# --------------------------------------------------------------------------------------------
# classification (pure)
# --------------------------------------------------------------------------------------------

_LANE_CACHE: dict[int, int] = {}


def _lanes(n: int) -> int:
    """An integer with bit 0 of each of ``n`` 64-bit lanes set."""
    ones = _LANE_CACHE.get(n)
    if ones is None:
        ones = _LANE_CACHE[n] = int.from_bytes((b"\x01" + bytes(7)) * n, "little")
    return ones


def classify(flags: bytes) -> bytes:
    """One kind code per frame (``KINDS[code]``) for a buffer of kpageflags words."""
    n = len(flags) // 8
    if n == 0:
        return b""
    ones = _lanes(n)
    x = int.from_bytes(flags[: n * 8], "little")
    rest = ones

    def take(mask: int) -> int:
        nonlocal rest
        got = mask & rest
        rest ^= got
        return got

    hole = take(x >> KPF_NOPAGE)
    pgt = take(x >> KPF_PGTABLE)
    slab = take(x >> KPF_SLAB)
    free = take(x >> KPF_BUDDY)
    offline = take(x >> KPF_OFFLINE)
    movable = take((x >> KPF_LRU) | (x >> KPF_ANON) | (x >> KPF_SWAPCACHE) | (x >> KPF_HUGE)
                   | (x >> KPF_KSM) | (x >> KPF_THP))
    reserved = take(x >> KPF_RESERVED)
    code = (pgt * _PGT + slab * _SLAB + free * _FREE + movable * _MOVABLE
            + reserved * _RESERVED + offline * _OFFLINE + hole * _HOLE)
    return code.to_bytes(n * 8, "little")[::8]


def classify_py(flags: bytes) -> bytes:
    """The reference: the same rules, one frame at a time (tests compare the two)."""
    out = bytearray()
    for i in range(len(flags) // 8):
        f = int.from_bytes(flags[i * 8 : i * 8 + 8], "little")

        def has(bit: int, f: int = f) -> bool:
            return bool((f >> bit) & 1)

        if has(KPF_NOPAGE):
            code = _HOLE
        elif has(KPF_PGTABLE):
            code = _PGT
        elif has(KPF_SLAB):
            code = _SLAB
        elif has(KPF_BUDDY):
            code = _FREE
        elif has(KPF_OFFLINE):
            code = _OFFLINE
        elif any(has(b) for b in (KPF_LRU, KPF_ANON, KPF_SWAPCACHE, KPF_HUGE, KPF_KSM,
                                  KPF_THP)):
            code = _MOVABLE
        elif has(KPF_RESERVED):
            code = _RESERVED
        else:
            code = _OTHER
        out.append(code)
    return bytes(out)


# --------------------------------------------------------------------------------------------
# which levels the kernel marks
# --------------------------------------------------------------------------------------------


def marked_levels() -> dict[str, Any]:
    """Which page-table levels the running kernel marks PG_table (and so counts in
    PageTables): measured by walking this process's own tables through /proc/kcore."""
    from ptreloc import kernel_tables as kt

    ok, why = kt.availability()
    if not ok:
        return {"marked": None, "unmarked": None, "source": None,
                "reason": f"not measured: the kernel walk is unavailable ({why})"}
    try:
        walk = kt.walk_process(os.getpid())
    except PtrelocError as err:
        return {"marked": None, "unmarked": None, "source": None,
                "reason": f"not measured: walking this process failed ({err})"}
    marked = [lv for lv, (m, n) in walk.pgtable_marked.items() if n and m == n]
    unmarked = [lv for lv, (m, n) in walk.pgtable_marked.items() if n and m == 0]
    mixed = [lv for lv, (m, n) in walk.pgtable_marked.items() if n and 0 < m < n]
    out: dict[str, Any] = {"marked": marked, "unmarked": unmarked,
                           "source": f"kernel walk of this process (pid {os.getpid()})",
                           "reason": None}
    if mixed:
        out["mixed"] = mixed  # some frames of a level marked, some not: tables raced the walk
    return out


# --------------------------------------------------------------------------------------------
# the census
# --------------------------------------------------------------------------------------------


@dataclass
class _Tally:
    pages: list[int] = field(default_factory=lambda: [0] * len(KINDS))
    pageblocks: int = 0  # pageblocks with at least one frame that is not a hole
    free_pageblocks: int = 0  # entirely free
    with_family: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_PIN_FAMILIES, 0))
    sole_family: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_PIN_FAMILIES, 0))
    pinned: int = 0

    def add(self, other: _Tally) -> None:
        self.pages = [a + b for a, b in zip(self.pages, other.pages, strict=True)]
        self.pageblocks += other.pageblocks
        self.free_pageblocks += other.free_pageblocks
        self.pinned += other.pinned
        for k in _PIN_FAMILIES:
            self.with_family[k] += other.with_family[k]
            self.sole_family[k] += other.sole_family[k]

    def to_json(self) -> dict[str, Any]:
        return {
            "pages": dict(zip(KINDS, self.pages, strict=True)),
            "pageblocks": {
                "total": self.pageblocks,
                "free": self.free_pageblocks,
                "pinned": self.pinned,
                "with": dict(self.with_family),
                "only_unmovable_kind": dict(self.sole_family),
            },
            "pagetable_only_pageblocks": self.sole_family["pagetable"],
        }


def _tally_codes(codes: bytes, pb_pages: int, tally: _Tally,
                 pagetable_only: list[int] | None = None, first_pb: int = 0) -> None:
    """Count ``codes`` (one memory block or part of one, pageblock aligned) into ``tally``;
    the indexes of pageblocks whose only unmovable content is page tables go to
    ``pagetable_only``."""
    count = codes.count
    for k in range(len(KINDS)):
        tally.pages[k] += count(k)
    families = list(_PIN_FAMILIES.items())
    for s in range(0, len(codes), pb_pages):
        e = s + pb_pages
        holes = count(_HOLE, s, e)
        if holes == e - s:
            continue
        tally.pageblocks += 1
        if count(_FREE, s, e) == e - s - holes:
            tally.free_pageblocks += 1
            continue
        present = [name for name, ks in families if any(count(k, s, e) for k in ks)]
        if not present:
            continue
        tally.pinned += 1
        for name in present:
            tally.with_family[name] += 1
        if len(present) == 1:
            tally.sole_family[present[0]] += 1
            if present[0] == "pagetable" and pagetable_only is not None:
                pagetable_only.append(first_pb + s // pb_pages)


@dataclass
class Census:
    nodes: list[int]
    page_size: int
    pageblock_order: int
    block_bytes: int
    levels: dict[str, Any]
    per_node: dict[int, dict[str, Any]]
    ranking: list[dict[str, Any]]
    by_process: list[dict[str, Any]] | None
    scan_seconds: float
    # pageblock index -> True for the pageblocks page tables alone pin (for attribution)
    pagetable_only: set[int] = field(default_factory=set, repr=False)

    def block(self, index: int) -> dict[str, Any] | None:
        for n in self.per_node.values():
            for b in n["blocks"]:
                if b["block"] == index:
                    found: dict[str, Any] = b
                    return found
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "nodes": self.nodes,
            "page_size": self.page_size,
            "pageblock_order": self.pageblock_order,
            "pageblock_pages": 1 << self.pageblock_order,
            "memory_block_bytes": self.block_bytes,
            "marked_levels": self.levels,
            "kinds": KIND_HELP,
            "unmovable_kinds": list(_PIN_FAMILIES),
            "per_node": {str(k): v for k, v in self.per_node.items()},
            "ranking": self.ranking,
            "pagetable_rank": _rank_of_pagetables(self.ranking),
            "by_process": self.by_process,
            "scan_seconds": round(self.scan_seconds, 3),
        }


def _rank_of_pagetables(ranking: list[dict[str, Any]]) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for key in ("pages", "pageblocks"):
        order = sorted(ranking, key=lambda r: (-r[key], r["kind"]))
        out[f"by_{key}"] = next((i + 1 for i, r in enumerate(order)
                                 if r["kind"] == "pagetable"), None)
    return out


def _node_pagetables_pages(node: int) -> int | None:
    try:
        kb = numa.node_meminfo_kb(node).get("PageTables")
    except PtrelocError:
        return None
    return None if kb is None else kb * 1024 // PAGE_SIZE


def _check_nodes(nodes: str | Iterable[int] | None) -> list[int]:
    topo = numa.topology()
    if nodes is None:
        return sorted(topo.online & topo.with_memory)
    wanted = numa.parse_nodes(nodes, topology=topo) if isinstance(nodes, str) else \
        frozenset(nodes)
    for n in wanted:
        if n not in topo.nodes:
            raise InvalidNode(f"node {n} does not exist (nodes here: "
                              f"{numa.format_nodes(topo.nodes)})")
        if n not in topo.online:
            raise InvalidNode(f"node {n} is offline (online: {numa.format_nodes(topo.online)})")
    return sorted(wanted)


def _walk_all(progress: Callable[[str], None] | None) -> tuple[list[dict[str, Any]],
                                                               dict[int, tuple[int, str]]]:
    """Walk every user process: per process (pid, name, its table frames); and every table
    frame -> (pid, level)."""
    from ptreloc import kernel_tables as kt

    ok, why = kt.availability()
    if not ok:
        raise kt.KernelTablesUnavailable(f"--by-process needs the kernel walk: {why}")
    processes = []
    owner: dict[int, tuple[int, str]] = {}
    pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    for pid in pids:
        if pid == os.getpid():
            continue
        try:
            walk = kt.walk_process(pid)
        except (kt.KernelThread, kt.ProcessGone):
            continue
        except kt.KernelTablesError as err:
            processes.append({"pid": pid, "name": _comm(pid), "error": str(err), "tables": []})
            continue
        if progress:
            progress(f"walked pid {pid}")
        frames = [(t.pfn, t.level, t.node) for t in walk.tables]
        processes.append({"pid": pid, "name": _comm(pid), "error": None, "tables": frames})
        for pfn, level, _ in frames:
            owner.setdefault(pfn, (pid, level))
    return processes, owner


def _comm(pid: int) -> str:
    try:
        return _read(f"/proc/{pid}/comm")
    except OSError:
        return "?"


def take_census(
    nodes: str | Iterable[int] | None = None,
    *,
    by_process: bool = False,
    progress: Callable[[str], None] | None = None,
    kpageflags: str = KPAGEFLAGS,
) -> Census:
    """Classify every frame of the memory blocks of ``nodes`` (default: every online node
    with memory); see the module doc.  Root only (kpageflags and pagetypeinfo are 0400)."""
    wanted = _check_nodes(nodes)
    if os.geteuid() != 0:
        raise CensusUnavailable(f"not root: {kpageflags} and {PAGETYPEINFO} are readable by "
                                "root only; run ptreloc census as root")
    order = pageblock_order()
    pb_pages = 1 << order
    block_bytes = block_size_bytes()
    levels = marked_levels()
    processes: list[dict[str, Any]] | None = None
    owner: dict[int, tuple[int, str]] = {}
    if by_process:
        processes, owner = _walk_all(progress)
    unmarked_levels = set(levels["unmarked"] or ())
    unmarked_pfns = sorted(p for p, (_, lv) in owner.items() if lv in unmarked_levels)
    try:
        fd = os.open(kpageflags, os.O_RDONLY)
    except OSError as err:
        raise CensusUnavailable(f"cannot open {kpageflags}: {err.strerror} (needs root and "
                                "CONFIG_PROC_PAGE_MONITOR)") from err
    t0 = time.perf_counter()
    per_node: dict[int, dict[str, Any]] = {}
    pagetable_only: list[int] = []
    totals = _Tally()
    try:
        for node in wanted:
            before = _node_pagetables_pages(node)
            samples = [] if before is None else [before]
            node_tally = _Tally()
            blocks_json = []
            for blk in memory_blocks(node):
                tally = _Tally()
                if blk.state != "online":
                    tally.pages[_HOLE] += blk.end_pfn - blk.start_pfn
                else:
                    for start in range(blk.start_pfn, blk.end_pfn, MAX_READ_FRAMES):
                        end = min(blk.end_pfn, start + MAX_READ_FRAMES)
                        codes = _read_codes(fd, start, end, kpageflags)
                        if unmarked_pfns:
                            codes = _patch_unmarked(codes, start, end, unmarked_pfns)
                        _tally_codes(codes, pb_pages, tally, pagetable_only, start // pb_pages)
                node_tally.add(tally)
                entry = {"block": blk.index, "state": blk.state, "zones": blk.zones,
                         "start_pfn": blk.start_pfn, "end_pfn": blk.end_pfn}
                entry.update(tally.to_json())
                entry["pinned_by"] = [k for k, v in tally.with_family.items() if v]
                blocks_json.append(entry)
                if progress:
                    progress(f"node {node}: block {blk.index}")
                if samples and blk.state == "online":
                    now = _node_pagetables_pages(node)
                    if now is not None:
                        samples.append(now)
            after = _node_pagetables_pages(node)
            totals.add(node_tally)
            data = node_tally.to_json()
            counted = data["pages"]["pagetable"]
            margin = pagetables_margin_pages(node)
            if after is not None:
                samples.append(after)
            # the scan is not atomic: tables allocated and freed while it runs move the count;
            # the counter's own variation across the scan (sampled after every block) is
            # added to the per-cpu vmstat lag as the race margin
            churn = sum(abs(b - a) for a, b in zip(samples, samples[1:], strict=False))
            if samples:
                lo = min(samples) - margin - churn
                hi = max(samples) + margin + churn
                agrees: bool | None = lo <= counted <= hi
            else:
                agrees = None
            data["pagetables_check"] = {
                "counted_pages": counted,
                "node_pagetables_pages_before": before,
                "node_pagetables_pages_after": after,
                "node_pagetables_range": [min(samples), max(samples)] if samples else None,
                "churn_pages": churn,
                "vmstat_margin_pages": margin,
                "agrees": agrees,
            }
            memfree = None
            with contextlib.suppress(PtrelocError):
                kb = numa.node_meminfo_kb(node).get("MemFree")
                memfree = None if kb is None else kb * 1024 // PAGE_SIZE
            # per-cpu free lists are free in neither; a large gap means the kernel keeps free
            # frames without the buddy flag (they are then counted as kernel_other)
            data["free_check"] = {"counted_free_pages": data["pages"]["free"],
                                  "node_memfree_pages": memfree}
            data["blocks"] = blocks_json
            per_node[node] = data
    finally:
        os.close(fd)
    scan = time.perf_counter() - t0
    ranking: list[dict[str, Any]] = []
    for name in _PIN_FAMILIES:
        pages = sum(totals.pages[KINDS.index(k)] for k in
                    ((name, "pagetable_unmarked") if name == "pagetable" else (name,)))
        ranking.append({"kind": name, "pages": pages,
                        "pageblocks": totals.with_family[name],
                        "only_unmovable_kind_pageblocks": totals.sole_family[name]})
    ranking.sort(key=lambda r: (-r["pages"], r["kind"]))
    pt_only = set(pagetable_only)
    by_proc = None
    if processes is not None:
        by_proc = _attribute(processes, wanted, pb_pages, pt_only)
    return Census(wanted, PAGE_SIZE, order, block_bytes, levels, per_node, ranking, by_proc,
                  scan, pt_only)


def _read_codes(fd: int, start: int, end: int, path: str) -> bytes:
    want = (end - start) * 8
    try:
        data = os.pread(fd, want, start * 8)
    except OSError as err:
        raise CensusUnavailable(f"reading {path} at frame {start:#x} failed: "
                                f"{err.strerror}") from err
    codes = classify(data)
    if len(data) < want:  # past the last frame the kernel knows: holes
        codes += bytes([_HOLE]) * (end - start - len(data) // 8)
    return codes


def _patch_unmarked(codes: bytes, start: int, end: int, pfns: list[int]) -> bytes:
    """Frames the walk found to be page tables at unmarked levels: kernel_other ->
    pagetable_unmarked (any other code means the frame changed hands after the walk)."""
    import bisect

    i = bisect.bisect_left(pfns, start)
    j = bisect.bisect_left(pfns, end)
    if i == j:
        return codes
    out = bytearray(codes)
    for pfn in pfns[i:j]:
        if out[pfn - start] == _OTHER:
            out[pfn - start] = _PGT_UNMARKED
    return bytes(out)


def _attribute(processes: list[dict[str, Any]], nodes: list[int], pb_pages: int,
               pt_only: set[int]) -> list[dict[str, Any]]:
    """Per process: its table frames per node and level, the memory blocks holding them and
    how many sit in pageblocks that page tables alone pin."""
    block_frames = block_size_bytes() // PAGE_SIZE
    out = []
    for p in processes:
        per_node: dict[str, dict[str, int]] = {}
        blocks: dict[int, int] = {}
        pinning = 0
        for pfn, level, node in p["tables"]:
            if node not in nodes:
                continue
            lv = per_node.setdefault(str(node), {})
            lv[level] = lv.get(level, 0) + 1
            blocks[pfn // block_frames] = blocks.get(pfn // block_frames, 0) + 1
            if pfn // pb_pages in pt_only:
                pinning += 1
        if not per_node and p["error"] is None:
            continue
        out.append({"pid": p["pid"], "name": p["name"], "error": p["error"],
                    "tables": per_node, "blocks": {str(k): v for k, v in sorted(blocks.items())},
                    "tables_in_pagetable_only_pageblocks": pinning})
    out.sort(key=lambda r: -sum(sum(v.values()) for v in r["tables"].values()))
    return out


def check_usage(nodes: str | None) -> None:
    """Usage errors first (exit 2), before anything is read."""
    if nodes is not None and not nodes.strip():
        raise UsageError("--node is empty: give a node list such as 0 or 0-1")
    _check_nodes(nodes)
