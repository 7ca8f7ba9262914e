"""The node of a resident page from its frame number, where the kernel shows frame numbers.

``move_pages(2)`` in query mode answers "which node is this page on" for any page, but the
kernel looks each page up in the process's tables (~20 ns a page in the kernel, and the
status array crosses to user space): on a 1 GiB process that is 4-7x the cost of reading its
pagemap.  When pagemap shows frame numbers (CAP_SYS_ADMIN), the node is a property of the frame:
memory is onlined in blocks (``/sys/devices/system/memory/block_size_bytes``, 128 MiB on
x86-64), and every block belongs to one node (``/sys/devices/system/node/nodeN/memoryM``), so
``node = block_node[pfn >> log2(block frames)]`` - one table lookup in C, made as each
pagemap entry is read (``ptr_pagemap_scan``, called by ``proc.scan_pagemap``), so the frame
numbers themselves are never kept.  Checked against move_pages page for page on the 2-node guest
(265,708 and 2,100,726 pages agree).

Where the frame does not say, move_pages still answers, for those pages only:

* frames in no listed block, or in a block listed by two nodes (device memory, ZONE_DEVICE,
  PFNMAP mappings, a block being hot-plugged);
* pages of kernel special mappings ([vdso] ...);
* every page when frames are hidden (no privilege) or when the kernel has no memory-block
  directory (no CONFIG_MEMORY_HOTPLUG).

move_pages says -EFAULT for the shared zero page and the huge zero page (follow_page with
FOLL_DUMP); their frames are found once per run by read-faulting a page (and a huge page) of
our own and reading our own pagemap, and pages on them read -EFAULT here too.

Written here, not taken from a library: nothing on PyPI maps frames to nodes (libnuma asks the
kernel per page, as move_pages does).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import time
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from ptreloc import numa

if TYPE_CHECKING:
    from ptreloc.proc import PageScan, Vma

__all__ = ["BlockNodes", "memory_block_nodes", "recent_block_nodes", "zero_frames",
           "page_nodes", "NodeAnswer", "kpageflags", "KPF_THP"]

_MEMORY_DIR = "/sys/devices/system/memory"
_NODE_DIR = "/sys/devices/system/node"
_KPF_ZERO_PAGE = 24  # include/uapi/linux/kernel-page-flags.h
KPF_THP = 22  # a page of a transparent huge page (head or tail)
_MADV_HUGEPAGE = 14
_PM_PFN_MASK = (1 << 55) - 1
_PM_PRESENT = 1 << 63
#: kernel special mappings: their pages are asked about with move_pages (they are few)
SPECIAL_MAPPINGS = frozenset({"[vdso]", "[vvar]", "[vvar_vclock]", "[vsyscall]", "[uprobes]"})


@dataclass(frozen=True)
class BlockNodes:
    """Memory blocks and their nodes: ``nodes[b]`` is block b's node, -1 for none or several."""

    block_shift: int  # log2 of the frames per block
    nodes: array[int]  # 'h'


def memory_block_nodes(node_dir: str = _NODE_DIR, memory_dir: str = _MEMORY_DIR,
                       page_size: int = numa.PAGE_SIZE) -> BlockNodes | None:
    """The block -> node table, read now (blocks come and go with memory hot-plug); None when
    the kernel does not expose memory blocks."""
    try:
        with open(os.path.join(memory_dir, "block_size_bytes"), encoding="ascii") as fh:
            block_bytes = int(fh.read().strip(), 16)
        node_names = os.listdir(node_dir)
    except (OSError, ValueError):
        return None
    if block_bytes < page_size or block_bytes & (block_bytes - 1):
        return None
    owner: dict[int, int] = {}
    for name in node_names:
        if not (name.startswith("node") and name[4:].isdigit()):
            continue
        node = int(name[4:])
        try:
            entries = os.listdir(os.path.join(node_dir, name))
        except OSError:
            continue
        for entry in entries:
            if entry.startswith("memory") and entry[6:].isdigit():
                block = int(entry[6:])
                owner[block] = node if owner.get(block, node) == node else -1
    if not owner:
        return None
    nodes = array("h", [-1]) * (max(owner) + 1)
    for block, node in owner.items():
        nodes[block] = node
    return BlockNodes((block_bytes // page_size).bit_length() - 1, nodes)


#: how long one read of the block -> node table is reused, in seconds (``recent_block_nodes``)
BLOCK_NODES_TTL_S = 1.0
_recent: tuple[float, BlockNodes | None] | None = None


def recent_block_nodes() -> BlockNodes | None:
    """:func:`memory_block_nodes`, read again once ``BLOCK_NODES_TTL_S`` has passed since the
    last read (a snapshot reads it every time, and on a 24 GiB machine it is ~0.5 ms of sysfs
    listings: a tenth of a 1 GiB pagemap read).  Reusing it is safe for what changes: offline
    and online keep a block's node; a block hot-added since is in no entry, so its frames'
    pages are asked about with move_pages; a removed block's frames are no process's pages.
    Only a block removed and re-added under another node within the second would be misread."""
    global _recent
    now = time.monotonic()
    cached = _recent
    if cached is not None and 0 <= now - cached[0] < BLOCK_NODES_TTL_S:
        return cached[1]
    value = memory_block_nodes()
    _recent = (now, value)
    return value


def _own_pfn(address: int) -> int:
    """The frame of our own page at ``address`` (0 when hidden or not present)."""
    try:
        fd = os.open("/proc/self/pagemap", os.O_RDONLY)
    except OSError:
        return 0
    try:
        raw = os.pread(fd, 8, address // numa.PAGE_SIZE * 8)
    except OSError:
        return 0
    finally:
        os.close(fd)
    entry = int.from_bytes(raw, "little") if len(raw) == 8 else 0
    return entry & _PM_PFN_MASK if entry & _PM_PRESENT else 0


def _is_zero_frame(pfn: int) -> bool:
    flags = kpageflags([pfn])
    return bool(flags and flags[pfn] >> _KPF_ZERO_PAGE & 1)


def kpageflags(pfns: Iterable[int]) -> dict[int, int] | None:
    """Each frame's flags from /proc/kpageflags (KPF_* bits, Documentation/admin-guide/mm/
    pagemap.rst); None when it cannot be read (not root, or a frame past the last)."""
    try:
        fd = os.open("/proc/kpageflags", os.O_RDONLY)
    except OSError:
        return None
    try:
        out = {}
        for pfn in pfns:
            raw = os.pread(fd, 8, pfn * 8)
            if len(raw) != 8:
                return None
            out[pfn] = int.from_bytes(raw, "little")
        return out
    except OSError:
        return None
    finally:
        os.close(fd)


@lru_cache(maxsize=1)
def zero_frames() -> tuple[tuple[int, int], ...]:
    """[first, end) frame ranges of the zero page and the huge zero page (those found: a
    read fault of our own maps them; none when frames are hidden)."""
    out: list[tuple[int, int]] = []
    page = numa.PAGE_SIZE
    small = mmap.mmap(-1, page, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        small[0]  # a read fault maps the zero page
        addr = ctypes.addressof(ctypes.c_char.from_buffer(small))
        zero = _own_pfn(addr)
        del addr
        if zero:
            out.append((zero, zero + 1))
    finally:
        small.close()
    huge = 2 << 20
    region = mmap.mmap(-1, 2 * huge, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        base = ctypes.addressof(ctypes.c_char.from_buffer(region))
        offset = -base % huge
        try:
            region.madvise(_MADV_HUGEPAGE, offset, huge)
        except (OSError, ValueError):
            pass
        region[offset]  # with THP and use_zero_page, a read fault maps the huge zero page
        pfn = _own_pfn(base + offset)
        del base
        if pfn and not any(lo <= pfn < hi for lo, hi in out) and _is_zero_frame(pfn):
            head = pfn - pfn % (huge // page)
            out.append((head, head + huge // page))
    finally:
        region.close()
    return tuple(out)


@dataclass(frozen=True)
class NodeAnswer:
    """The node status of every resident page and who said it."""

    nodes: array[int]  # 'i': node, or -errno as move_pages says
    source: str  # "frames" (frame numbers, move_pages for the rest) or "move_pages"
    asked_move_pages: int  # pages move_pages was asked about


def page_nodes(pid: int, vmas: Sequence[Vma], scan: PageScan, *,
               backend: str | numa.NumaBackend | None = None) -> NodeAnswer:
    """The node of each of ``scan.resident`` (module doc): from frames where they told
    (``proc.scan_pagemap`` looked them up as it read them), from move_pages(2) for the rest -
    every page when frames were hidden or the kernel lists no memory blocks.  ``scan.nodes``
    becomes the answer's ``nodes`` (filled in, not copied)."""
    resident = scan.resident
    if not (resident and scan.frames_visible and scan.blocks_known):
        nodes = array("i", numa.move_pages(pid, resident, backend=backend)) if resident \
            else array("i")
        return NodeAnswer(nodes, "move_pages", len(resident))
    nodes = scan.nodes
    ask: list[int] = []
    if scan.unknown:
        sentinel = scan.unknown_status
        ask = [i for i, n in enumerate(nodes) if n == sentinel]
    for vma in vmas:
        if vma.path in SPECIAL_MAPPINGS:
            lo, hi = resident.span(vma.start, vma.end)
            ask.extend(range(lo, hi))
    if ask:
        ask = sorted(set(ask))
        answers = numa.move_pages(pid, [resident[i] for i in ask], backend=backend)
        for i, status in zip(ask, answers, strict=True):
            nodes[i] = status
    return NodeAnswer(nodes, "frames", len(ask))
