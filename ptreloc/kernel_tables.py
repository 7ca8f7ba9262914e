"""The kernel's own page tables of a live process, read through /proc/kcore (x86-64).

``walk_process(pid)`` finds the process's ``mm->pgd`` and walks the *user half* of its page
tables as the hardware would, returning every table frame with its level, the virtual range it
covers, its physical frame, its NUMA node and the leaf translations it holds.  It answers "where
are this process's page tables, really" -- the question ``migratepages`` leaves open, since it
moves data and leaves tables behind.

Method (root, a kernel with /proc/kcore, BTF and visible kallsyms; see ``availability()``):

* **Symbols** from /proc/kallsyms: ``init_task``, ``page_offset_base`` (KASLR moves the direct
  map: its *value*, read from kcore, is where physical address 0 is mapped) and
  ``__pgtable_l5_enabled`` (the kernel's own LA57 decision; see below).
* **Layouts** from the kernel's BTF (``ptreloc.btf``): ``task_struct.tasks/tgid/pid/mm``,
  ``mm_struct.pgd``.
* **Memory** from /proc/kcore, an ELF core whose PT_LOAD program headers (two preads:
  ``_elf_load_segments``) map kernel virtual ranges to file offsets; a physical frame is read at
  ``page_offset_base + phys`` in the direct map, one ``pread`` of 4 KiB per table.
* **The process**: ``init_task.tasks`` is the circular list of thread-group leaders; it is
  walked (bounded, cycle-checked) to the task whose tgid is the pid, then ``task->mm`` (NULL:
  a kernel thread or an exited process) and ``mm->pgd`` (a direct-map address).  The pgd frame
  must be page aligned, inside a node's memory, and its kernel half must map the direct map
  (the one pgd slot every process shares with the kernel) -- a frame that is not a pgd fails.
* **Paging mode**: 5-level when the kernel's ``__pgtable_l5_enabled`` is non-zero (CR4.LA57
  cannot be read from user space; this variable is what the kernel derived from it at boot).
  Without that symbol (CONFIG_X86_5LEVEL=n; before 4.17 ``pgtable_l5_enabled``) the kernel can
  only run 4-level.  Cross-check: a 5-level direct map lies below 0xffff800000000000.
* **The walk**: top-level entries 0..255 only (user addresses below 1 << 47, or 1 << 56 with
  LA57); present bit 0; PSE (bit 7) at PUD/PMD is a 1 GiB / 2 MiB leaf; frame bits 12..51 (NX
  bit 63, the software/protection-key bits 52..62 masked off; in a huge leaf bit 12 is PAT, so
  the frame is bits 21..51 / 30..51).  Linux's ``pte_present`` also counts PROT_NONE entries
  (bit 8 with bit 0 clear: NUMA-balancing hints, mprotect(PROT_NONE)), whose frame bits are
  stored *inverted* (L1TF mitigation, ``protnone_mask``); they are leaves here too, so the
  walk agrees with pagemap.  Swap and migration entries are counted as ``nonpresent``.
  With PTI the pgd is an order-1 allocation whose second page is the user copy; it is counted
  once, and ``pti`` says whether the copy's user entries mirror the kernel ones.
* **Races**: the process keeps running.  Before descending, a child frame must be RAM and, at
  the levels whose tables the kernel marks PG_table (/proc/kpageflags KPF_PGTABLE, bit 26;
  Linux 6.1 marks PTE and PMD tables, not PUD/P4D/PGD -- they have no constructor), be so
  marked; after a table's subtree is read the table is read again and a subtree whose entry
  changed meanwhile is dropped.  Each such event is ``changed_under_walk += 1``; nothing is
  followed that failed a check, and every loop is bounded, so a racing munmap or exit ends in
  a smaller result or ``ProcessGone``, never a crash or a hang.  The result is a consistent
  picture of each table when it was read, not one atomic snapshot of the whole tree.

Cross-checks (methods of the result; each returns a structured verdict that can fail):

* ``check_vmpte()``: (PTE + PMD + PUD tables) x 4 KiB against ``VmPTE`` in /proc/PID/status.
  VmPTE is ``mm_pgtables_bytes(mm)``, which Linux 6.1 increments in ``mm_inc_nr_ptes`` (every
  PTE table; also the table deposited with each anonymous or huge-zero-page THP, which no walk
  reaches), ``mm_inc_nr_pmds`` and ``mm_inc_nr_puds`` (include/linux/mm.h); P4D tables and the
  pgd are not counted.  So the walk must give walked <= VmPTE <= walked + 4 KiB per PMD leaf.
* ``check_node_pagetables()``: per node, the tables found at the levels the kernel accounts in
  NR_PAGETABLE (the PG_table-marked ones: both are done by the same constructor) must not
  exceed that node's ``PageTables:`` (/sys/devices/system/node/nodeN/meminfo), which also
  counts every other process's tables, by more than the counter's per-cpu lag (each CPU folds
  its delta into the node's total only past the vmstat threshold, so tables made in the last
  second may not be in it yet: ``numa.vmstat_lag_pages``, reported as ``lag_bytes``).
* ``check_pagemap()``: every resident page in /proc/PID/pagemap (bit 63 present, bits 0-54
  frame) against the walk's leaf frame for that address, both ways.

Memory is O(tables): per table a few integers and two compact arrays of its leaves (entry index
'H', frame 'Q'), no per-page Python objects.  Non-empty entries are found with
``itertools.compress`` over the table's words (C speed), so an empty slot costs nothing.
Measured in the 2-node TCG guest (Debian 6.1, 5-level, no PTI): a 2 GiB region touched every
2 MiB gives 1,036 PTE + 6 PMD + 3 PUD + 1 P4D + 1 PGD tables, walked in 0.44-0.61 s (the whole
``walk_process`` call, BTF parse and kallsyms included, ~3 s the first time); VmPTE equalled
the walk, or exceeded it by 4 kB when the interpreter's heap had one THP.
Limits: x86-64 only; 4 KiB base pages; hugetlbfs and DAX leaves look like THP leaves; tables
shared between processes (hugetlb PMD sharing) are reported for each.
"""

from __future__ import annotations

import bisect
import errno
import functools
import os
import platform
import re
import struct
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import compress
from pathlib import Path

from ptreloc import btf as btf_mod
from ptreloc.errors import InvalidNode, NoSuchProcess, PtrelocError

__all__ = [
    "LEVELS_4",
    "LEVELS_5",
    "KPF_PGTABLE",
    "KernelTablesError",
    "KernelTablesUnavailable",
    "ProcessGone",
    "KernelThread",
    "WalkInconsistent",
    "Entry",
    "decode_entry",
    "decode_table",
    "NodeMap",
    "Kcore",
    "PageFlags",
    "read_kallsyms",
    "kallsyms_hidden",
    "TableFrame",
    "VmPteCheck",
    "NodeTablesCheck",
    "PagemapCheck",
    "KernelTables",
    "availability",
    "walk_process",
    "walk_tables",
]

PAGE_SIZE = 4096
PAGE_SHIFT = 12
ENTRIES = 512
USER_ENTRIES = 256  # top-level slots 0..255 map the user half

KCORE = "/proc/kcore"
KALLSYMS = "/proc/kallsyms"
KPAGEFLAGS = "/proc/kpageflags"
NODE_DIR = "/sys/devices/system/node"
MEMORY_DIR = "/sys/devices/system/memory"
LOCKDOWN = "/sys/kernel/security/lockdown"

# level names from the root down, and the address shift of one entry at each level
LEVELS_4: tuple[tuple[str, int], ...] = (("pgd", 39), ("pud", 30), ("pmd", 21), ("pte", 12))
LEVELS_5: tuple[tuple[str, int], ...] = (
    ("pgd", 48), ("p4d", 39), ("pud", 30), ("pmd", 21), ("pte", 12),
)

# entry bits (arch/x86/include/asm/pgtable_types.h)
_PRESENT = 1 << 0
_PSE = 1 << 7
_PROTNONE = 1 << 8  # = _PAGE_GLOBAL; means PROT_NONE only when _PAGE_PRESENT is clear
_FRAME_MASK = ((1 << 52) - 1) & ~(PAGE_SIZE - 1)  # bits 12..51
_HUGE_MASK = {  # a huge leaf's frame; bit 12 is _PAGE_PAT_LARGE there
    "pmd": ((1 << 52) - 1) & ~((1 << 21) - 1),
    "pud": ((1 << 52) - 1) & ~((1 << 30) - 1),
}
LEAF_SIZE = {"pte": 1 << 12, "pmd": 1 << 21, "pud": 1 << 30}

KPF_PGTABLE = 26  # include/uapi/linux/kernel-page-flags.h
KPF_NOPAGE = 20
_L4_DIRECT_MAP_DEFAULT = 0xFFFF_8880_0000_0000  # __PAGE_OFFSET_BASE_L4 (no KASLR)
_L5_DIRECT_MAP_DEFAULT = 0xFF11_0000_0000_0000  # __PAGE_OFFSET_BASE_L5
_L4_KERNEL_HALF = 0xFFFF_8000_0000_0000  # a 4-level direct map is at or above this
_MAX_TASKS = 1 << 22  # PID_MAX_LIMIT: no task list is longer
_RETRIES = 3
# Levels whose tables Linux 6.1 marks PG_table (pgtable_pte_page_ctor / pgtable_pmd_page_ctor);
# a frame at these levels without KPF_PGTABLE is not (or no longer) a page table.
_MARKED_LEVELS = frozenset({"pte", "pmd"})
# Levels counted in mm->pgtables_bytes (VmPTE) by mm_inc_nr_ptes/pmds/puds.
VMPTE_LEVELS = ("pte", "pmd", "pud")


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------


class KernelTablesError(PtrelocError):
    """Reading the kernel's tables failed; ``pid`` and ``path`` say for what and where."""

    def __init__(self, message: str, *, pid: int | None = None, path: str | None = None):
        super().__init__(message)
        self.pid = pid
        self.path = path


class KernelTablesUnavailable(KernelTablesError, OSError):
    """This machine cannot be read (not root, no /proc/kcore, lockdown, no BTF, ...)."""


class ProcessGone(KernelTablesError, NoSuchProcess):
    """The process does not exist, or exited (or exec'd) while its tables were read."""


class KernelThread(KernelTablesError, ValueError):
    """The pid is a kernel thread: it has no mm, hence no user page tables."""


class WalkInconsistent(KernelTablesError):
    """What kcore returned does not hold together (a racing exit, or a layout we misread)."""


# --------------------------------------------------------------------------------------------
# entry decoding (pure)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One decoded entry: ``kind`` is "none", "table", "leaf", "nonpresent" or "bad"."""

    kind: str
    pfn: int = 0
    size: int = 0  # leaf size in bytes


@dataclass
class TableDecode:
    """A table's entries, sorted by kind; indices are entry numbers 0..511."""

    children: list[tuple[int, int]]  # (index, frame of the next-level table)
    leaf_index: array[int]  # 'H'
    leaf_pfn: array[int]  # 'Q': first 4 KiB frame of each leaf
    nonpresent: int  # swap/migration entries (and non-present huge entries)
    bad: int  # entries the hardware would fault on as reserved (PSE at pgd/p4d)


_LEVEL_NUMBER = {"pte": 0, "pmd": 1, "pud": 2, "p4d": 3, "pgd": 4}  # csrc/x86pt.h PTR_X86_*


@functools.cache
def _c_decoder() -> (
    Callable[..., tuple[array[int], array[int], array[int], array[int], int, int]] | None
):
    """The C core's decoder (csrc/x86pt.c), or None where the core is not built."""
    try:
        from ptreloc import _native

        return _native.core().x86_decode_table
    except PtrelocError:
        return None


def decode_table(data: bytes | array[int], level: str, *, limit: int = ENTRIES) -> TableDecode:
    """Decode a 4 KiB table of ``level`` ("pgd", "p4d", "pud", "pmd", "pte"); only entries
    ``0..limit-1`` (``limit=256``: the user half of a top-level table).

    In C (csrc/x86pt.c: a dense PTE table is 512 present entries, and a walk decodes thousands
    of tables); :func:`decode_table_py` is the same decoder in Python, the reference the C one
    is tested against, and the fallback without a built core."""
    c = _c_decoder()
    raw = data.tobytes() if isinstance(data, array) else bytes(data)
    if c is None or len(raw) < 8 * limit or limit <= 0:
        return decode_table_py(data, level, limit=limit)
    li, lp, ci, cp, nonpresent, bad = c(raw, _LEVEL_NUMBER[level], limit)
    return TableDecode(list(zip(ci, cp, strict=True)), li, lp, nonpresent, bad)


def decode_table_py(data: bytes | array[int], level: str, *, limit: int = ENTRIES) -> TableDecode:
    """:func:`decode_table` in pure Python (the reference model of csrc/x86pt.c)."""
    words = data if isinstance(data, array) else array("Q", data)
    if len(words) > limit:
        words = words[:limit]
    children: list[tuple[int, int]] = []
    leaf_index = array("H")
    leaf_pfn = array("Q")
    nonpresent = bad = 0
    huge_mask = _HUGE_MASK.get(level)
    # compress() picks the non-zero words in C: empty slots cost no Python work
    for index in compress(range(len(words)), words):
        e = words[index]
        if level == "pte":
            if e & _PRESENT:
                leaf_index.append(index)
                leaf_pfn.append((e & _FRAME_MASK) >> PAGE_SHIFT)
            elif e & _PROTNONE:  # PROT_NONE: frame bits stored inverted (L1TF)
                leaf_index.append(index)
                leaf_pfn.append((~e & _FRAME_MASK) >> PAGE_SHIFT)
            else:
                nonpresent += 1
            continue
        if e & _PRESENT:
            if e & _PSE:
                if huge_mask is None:  # PSE is reserved at pgd/p4d
                    bad += 1
                else:
                    leaf_index.append(index)
                    leaf_pfn.append((e & huge_mask) >> PAGE_SHIFT)
            else:
                children.append((index, (e & _FRAME_MASK) >> PAGE_SHIFT))
        elif level == "pmd" and e & (_PSE | _PROTNONE) == (_PSE | _PROTNONE):
            # a PROT_NONE THP (pmd_present() is true for it): inverted frame bits
            assert huge_mask is not None
            leaf_index.append(index)
            leaf_pfn.append((~e & huge_mask) >> PAGE_SHIFT)
        else:
            nonpresent += 1
    return TableDecode(children, leaf_index, leaf_pfn, nonpresent, bad)


def decode_entry(entry: int, level: str) -> Entry:
    """Decode one entry as ``decode_table`` does (the same code path)."""
    d = decode_table(array("Q", [entry]), level)
    if d.children:
        return Entry("table", d.children[0][1])
    if d.leaf_index:
        return Entry("leaf", d.leaf_pfn[0], LEAF_SIZE[level])
    if d.nonpresent:
        return Entry("nonpresent")
    if d.bad:
        return Entry("bad")
    return Entry("none")


# --------------------------------------------------------------------------------------------
# frame -> node
# --------------------------------------------------------------------------------------------


class NodeMap:
    """Frame number -> NUMA node, from the memory blocks each node links in sysfs."""

    def __init__(self, ranges: list[tuple[int, int, int]], block_bytes: int) -> None:
        self.block_bytes = block_bytes
        merged: list[list[int]] = []
        for start, end, node in sorted(ranges):
            if merged and merged[-1][1] == start and merged[-1][2] == node:
                merged[-1][1] = end
            else:
                merged.append([start, end, node])
        self.ranges = [tuple(r) for r in merged]  # (start_pfn, end_pfn, node), half-open
        self._starts = [r[0] for r in merged]

    @classmethod
    def from_sysfs(cls, node_dir: str = NODE_DIR, memory_dir: str = MEMORY_DIR) -> NodeMap:
        """``memory_dir/block_size_bytes`` is hex (no 0x); block M covers frames
        ``[M*B/4096, (M+1)*B/4096)``; ``node_dir/nodeN/memoryM`` links place it."""
        path = os.path.join(memory_dir, "block_size_bytes")
        try:
            block = int(Path(path).read_text().strip(), 16)
            nodes = sorted(
                int(n[4:]) for n in os.listdir(node_dir) if re.fullmatch(r"node\d+", n)
            )
        except (OSError, ValueError) as err:
            raise KernelTablesUnavailable(
                f"cannot read the memory-block layout ({err}): frames cannot be mapped to nodes",
                path=path,
            ) from err
        per_block = block // PAGE_SIZE
        ranges = []
        for node in nodes:
            for name in os.listdir(os.path.join(node_dir, f"node{node}")):
                if re.fullmatch(r"memory\d+", name):
                    m = int(name[6:])
                    ranges.append((m * per_block, (m + 1) * per_block, node))
        return cls(ranges, block)

    def node_of(self, pfn: int) -> int | None:
        """The node holding frame ``pfn``, or None when no memory block covers it."""
        i = bisect.bisect_right(self._starts, pfn) - 1
        if i >= 0:
            start, end, node = self.ranges[i]
            if start <= pfn < end:
                return node
        return None

    @property
    def end_pfn(self) -> int:
        return self.ranges[-1][1] if self.ranges else 0


# --------------------------------------------------------------------------------------------
# kernel memory, flags and symbols
# --------------------------------------------------------------------------------------------


_PT_LOAD = 1
_PN_XNUM = 0xFFFF  # e_phnum escape: the count is in section header 0's sh_info


def _elf_load_segments(fd: int) -> list[tuple[int, int, int]]:
    """(p_vaddr, p_filesz, p_offset) of every PT_LOAD of the ELF64 little-endian core at ``fd``
    (what /proc/kcore is): the file header and the program headers, read with two preads.
    Read here rather than with pyelftools, which builds its structure parsers for every file
    it opens - ~0.2 s a time in the TCG guest, and a migration opens kcore three times.
    Raises ValueError (not such a core) or OSError."""
    head = os.pread(fd, 64, 0)
    if len(head) < 64 or head[:4] != b"\x7fELF":
        raise ValueError("no ELF magic")
    if head[4] != 2 or head[5] != 1:
        raise ValueError("not a 64-bit little-endian ELF file")
    phoff, shoff = struct.unpack_from("<QQ", head, 32)
    phentsize, phnum = struct.unpack_from("<HH", head, 54)
    if phnum == _PN_XNUM:
        section0 = os.pread(fd, 64, shoff)
        if len(section0) < 64:
            raise ValueError("truncated section header 0 (extended program header count)")
        (phnum,) = struct.unpack_from("<I", section0, 44)
    if phentsize < 56:
        raise ValueError(f"program header entries of {phentsize} bytes, not 56")
    table = os.pread(fd, phentsize * phnum, phoff)
    if len(table) < phentsize * phnum:
        raise ValueError("truncated program header table")
    out = []
    for i in range(phnum):
        p_type, _flags, offset, vaddr, _paddr, filesz = struct.unpack_from(
            "<IIQQQQ", table, i * phentsize)
        if p_type == _PT_LOAD:
            out.append((vaddr, filesz, offset))
    return out


class Kcore:
    """Kernel virtual memory through /proc/kcore (an ELF core: PT_LOAD headers map kernel
    virtual addresses to file offsets)."""

    def __init__(self, path: str = KCORE) -> None:
        self.path = path
        try:
            self._fh = open(path, "rb")  # noqa: SIM115 - lives as long as this object
        except OSError as err:
            raise KernelTablesUnavailable(_open_error(path, err), path=path) from err
        try:
            segments = _elf_load_segments(self._fh.fileno())
        except (OSError, ValueError, struct.error) as err:
            self._fh.close()
            raise KernelTablesUnavailable(f"{path} is not a readable ELF core: {err}",
                                          path=path) from err
        segments.sort()
        self._segments = segments
        self._starts = [s[0] for s in segments]
        self._fd = self._fh.fileno()

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> Kcore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def mapped(self, va: int, size: int = 1) -> bool:
        i = bisect.bisect_right(self._starts, va) - 1
        if i < 0:
            return False
        start, length, _ = self._segments[i]
        return va + size <= start + length

    def read(self, va: int, size: int) -> bytes:
        """``size`` bytes at kernel address ``va``; ``WalkInconsistent`` when kcore does not
        map all of them (a stale pointer, most likely)."""
        i = bisect.bisect_right(self._starts, va) - 1
        if i >= 0:
            start, length, offset = self._segments[i]
            if va + size <= start + length:
                try:
                    data = os.pread(self._fd, size, offset + (va - start))
                except OSError as err:
                    raise WalkInconsistent(f"reading {size} bytes at {va:#x} from {self.path} "
                                           f"failed: {err.strerror}", path=self.path) from err
                if len(data) == size:
                    return data
        raise WalkInconsistent(f"kernel address {va:#x} (+{size}) is not in {self.path}",
                               path=self.path)

    def u64(self, va: int) -> int:
        return int.from_bytes(self.read(va, 8), "little")

    def u32(self, va: int) -> int:
        return int.from_bytes(self.read(va, 4), "little")


class PageFlags:
    """/proc/kpageflags, one 8-byte pread per frame (a read past the last frame is EINVAL,
    which is why the file is never read whole)."""

    def __init__(self, path: str = KPAGEFLAGS) -> None:
        self.path = path
        try:
            self._fd: int | None = os.open(path, os.O_RDONLY)
        except OSError:
            self._fd = None  # flags unknown: the walk then checks RAM membership only

    def get(self, pfn: int) -> int | None:
        if self._fd is None:
            return None
        try:
            data = os.pread(self._fd, 8, pfn * 8)
        except OSError:
            return None
        return int.from_bytes(data, "little") if len(data) == 8 else None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def read_kallsyms(names: list[str], path: str = KALLSYMS) -> dict[str, int]:
    """Addresses of the named core-kernel symbols present in ``path`` ("ADDR T NAME" lines;
    module symbols end in "\t[module]" and are not matched).  ``bytes.find`` per name: the
    file has ~100,000 lines, and a per-line Python loop (or a multi-line regex) costs seconds
    in a TCG guest."""
    with open(path, "rb") as fh:
        text = fh.read()
    found = {}
    for name in names:
        pos = text.find(b" " + name.encode() + b"\n")
        while pos >= 0:
            line = text[text.rfind(b"\n", 0, pos) + 1 : pos].split()
            if len(line) == 2 and len(line[1]) == 1:  # address and type letter: a whole name
                found[name] = int(line[0], 16)
                break
            pos = text.find(b" " + name.encode() + b"\n", pos + 1)
    return found


def kallsyms_hidden(path: str = KALLSYMS) -> bool:
    """True when the kernel shows every address as zero (kptr_restrict, or not root)."""
    with open(path, "rb") as fh:
        head = fh.read(4096).split(b"\n")[:16]
    return all(int(line.split()[0], 16) == 0 for line in head if line.strip())


def _open_error(path: str, err: OSError) -> str:
    if isinstance(err, FileNotFoundError):
        return (f"no {path}: this kernel was built without CONFIG_PROC_KCORE "
                "(run on a kernel that has it, e.g. the scripts/numa-vm guest)")
    if err.errno in (errno.EPERM, errno.EACCES):
        if os.geteuid() != 0:
            return f"{path} needs root (CAP_SYS_RAWIO): run as root"
        lockdown = _lockdown_mode()
        why = f" (kernel lockdown is '{lockdown}')" if lockdown not in (None, "none") else ""
        return (f"the kernel refuses to open {path}{why}: kernel lockdown or a security module "
                "forbids reading kernel memory; boot with lockdown=none / without Secure Boot "
                "lockdown to use it")
    return f"cannot open {path}: {err.strerror or err}"


def _lockdown_mode() -> str | None:
    try:
        text = Path(LOCKDOWN).read_text()
    except OSError:
        return None
    m = re.search(r"\[(\w+)\]", text)
    return m.group(1) if m else None


def _cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    m = re.search(r"^flags\s*:\s*(.*)$", text, re.M)
    return frozenset(m.group(1).split()) if m else frozenset()


# --------------------------------------------------------------------------------------------
# the kernel context: symbols, layouts, paging mode
# --------------------------------------------------------------------------------------------

_LAYOUTS: dict[str, _Layout] = {}
_SYMBOLS = ["init_task", "page_offset_base", "__pgtable_l5_enabled", "pgtable_l5_enabled"]


@dataclass(frozen=True)
class _Layout:
    tasks: int
    tgid: int
    pid: int
    mm: int
    pgd: int


@dataclass
class _Kernel:
    kcore: Kcore
    symbols: dict[str, int]
    layout: _Layout
    page_offset_base: int
    levels: tuple[tuple[str, int], ...]
    la57_source: str

    def phys_to_va(self, phys: int) -> int:
        return self.page_offset_base + phys


def _layout(b: btf_mod.Btf) -> _Layout:
    tasks_size = b.member_size("task_struct", "tasks")
    if tasks_size != 16:
        raise WalkInconsistent(f"task_struct.tasks is {tasks_size} bytes, not a list_head",
                               path=b.path)
    return _Layout(
        tasks=b.member_offset("task_struct", "tasks"),
        tgid=b.member_offset("task_struct", "tgid"),
        pid=b.member_offset("task_struct", "pid"),
        mm=b.member_offset("task_struct", "mm"),
        pgd=b.member_offset("mm_struct", "pgd"),
    )


def _paging_mode(
    kcore: Kcore, symbols: dict[str, int]
) -> tuple[int, tuple[tuple[str, int], ...], str]:
    """(page_offset_base, levels, how LA57 was decided)."""
    l5_symbol = next((s for s in ("__pgtable_l5_enabled", "pgtable_l5_enabled") if s in symbols),
                     None)
    if l5_symbol is not None:
        five = kcore.u32(symbols[l5_symbol]) != 0
        source = f"kernel variable {l5_symbol} = {int(five)}"
    else:
        # CONFIG_X86_5LEVEL=n: the kernel has no 5-level code, whatever the CPU offers
        five = False
        source = "no __pgtable_l5_enabled symbol: kernel built without CONFIG_X86_5LEVEL"
    if "page_offset_base" in symbols:
        base = kcore.u64(symbols["page_offset_base"])
    else:  # CONFIG_RANDOMIZE_MEMORY=n: the direct map is at its fixed base
        base = _L5_DIRECT_MAP_DEFAULT if five else _L4_DIRECT_MAP_DEFAULT
        source += "; no page_offset_base symbol: fixed direct-map base"
    if (base < _L4_KERNEL_HALF) != five or base % PAGE_SIZE:
        raise KernelTablesUnavailable(
            f"paging mode unclear: {source} but the direct map starts at {base:#x} "
            "(a 5-level direct map lies below 0xffff800000000000); not reading tables",
            path=KCORE,
        )
    return base, (LEVELS_5 if five else LEVELS_4), source


_SYMBOL_CACHE: dict[tuple[str, str], dict[str, int]] = {}


def _symbols(kallsyms_path: str) -> dict[str, int]:
    """read_kallsyms(_SYMBOLS), kept for the boot: the core kernel's symbols do not move until
    the next boot (KASLR picks them at boot), and reading the 4 MB /proc/kallsyms is most of a
    small walk's fixed cost (~0.3 s in the TCG guest).  Only the real /proc/kallsyms is kept,
    keyed by the boot id; any other path (tests' synthetic kernels) is read every time."""
    boot = None
    if kallsyms_path == KALLSYMS:
        try:
            boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        except OSError:
            boot = None
    if boot is not None and (kallsyms_path, boot) in _SYMBOL_CACHE:
        return _SYMBOL_CACHE[(kallsyms_path, boot)]
    symbols = read_kallsyms(_SYMBOLS, kallsyms_path)
    if boot is not None and symbols.get("init_task"):
        _SYMBOL_CACHE[(kallsyms_path, boot)] = symbols
    return symbols


def _open_kernel(
    kcore_path: str = KCORE, kallsyms_path: str = KALLSYMS, btf_path: str = str(btf_mod.VMLINUX_BTF)
) -> _Kernel:
    ok, reason = _static_checks(kcore_path, kallsyms_path, btf_path)
    if not ok:
        raise KernelTablesUnavailable(reason)
    kcore = Kcore(kcore_path)
    try:
        symbols = _symbols(kallsyms_path)
        if symbols.get("init_task") == 0 or kallsyms_hidden(kallsyms_path):
            raise KernelTablesUnavailable(
                f"{kallsyms_path} shows every address as 0: set kernel.kptr_restrict=0 "
                "(sysctl) and run as root",
                path=kallsyms_path,
            )
        if "init_task" not in symbols:
            raise KernelTablesUnavailable(
                f"{kallsyms_path} has no init_task: the kernel was built without "
                "CONFIG_KALLSYMS_ALL (only function symbols are listed)",
                path=kallsyms_path,
            )
        layout = _LAYOUTS.get(btf_path)
        if layout is None:  # the running kernel's layouts do not change: parse BTF once
            layout = _LAYOUTS[btf_path] = _layout(btf_mod.load_vmlinux(btf_path))
        base, levels, source = _paging_mode(kcore, symbols)
    except BaseException:
        kcore.close()
        raise
    return _Kernel(kcore, symbols, layout, base, levels, source)


def _static_checks(kcore_path: str, kallsyms_path: str, btf_path: str) -> tuple[bool, str]:
    machine = platform.machine()
    if machine != "x86_64":
        return False, f"unsupported architecture {machine}: only x86-64 page tables are read"
    if os.geteuid() != 0:
        return False, f"not root: reading {kcore_path} needs root (CAP_SYS_RAWIO)"
    if not os.path.exists(kcore_path):
        return False, _open_error(kcore_path, FileNotFoundError(errno.ENOENT, "no such file"))
    if not os.path.exists(btf_path):
        return False, (f"no {btf_path}: kernel built without CONFIG_DEBUG_INFO_BTF, so "
                       "task_struct/mm_struct layouts are unknown")
    if not os.path.exists(kallsyms_path):
        return False, f"no {kallsyms_path}: kernel built without CONFIG_KALLSYMS"
    return True, ""


def availability(
    kcore_path: str = KCORE, kallsyms_path: str = KALLSYMS, btf_path: str = str(btf_mod.VMLINUX_BTF)
) -> tuple[bool, str]:
    """Whether ``walk_process`` can work here: ``(True, "ready: ...")`` or ``(False, reason)``
    with the precise cause and what to do about it.  Opens kcore and reads the paging mode,
    so a lockdown or a hidden kallsyms is found, not guessed."""
    try:
        kernel = _open_kernel(kcore_path, kallsyms_path, btf_path)
    except KernelTablesError as err:
        return False, str(err)
    except btf_mod.BtfError as err:
        return False, f"the kernel's BTF is unusable: {err}"
    try:
        levels = len(kernel.levels)
        return True, (f"ready: {kcore_path}, BTF and kallsyms readable; {levels}-level paging "
                      f"({kernel.la57_source}); direct map at {kernel.page_offset_base:#x}")
    finally:
        kernel.kcore.close()


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableFrame:
    """One page-table frame: ``level`` covering virtual ``[start, end)``, at physical frame
    ``pfn`` on ``node``, holding leaves ``leaf_index[i] -> leaf_pfn[i]`` of ``leaf_size``."""

    level: str
    start: int
    end: int
    pfn: int
    node: int | None
    pgtable_flag: bool | None  # KPF_PGTABLE of the frame (None: kpageflags unreadable)
    entries: int  # non-empty entries (tables + leaves + non-present)
    nonpresent: int
    leaf_index: array[int] = field(repr=False)  # 'H' entry numbers
    leaf_pfn: array[int] = field(repr=False)  # 'Q' first 4 KiB frame of each leaf

    @property
    def leaf_size(self) -> int:
        return LEAF_SIZE.get(self.level, 0)

    def leaves(self) -> Iterator[tuple[int, int, int]]:
        """(virtual address, frame, size) of each leaf."""
        shift = LEAF_SIZE.get(self.level, 0).bit_length() - 1
        for index, pfn in zip(self.leaf_index, self.leaf_pfn, strict=True):
            yield self.start + (index << shift), pfn, 1 << shift


@dataclass(frozen=True)
class VmPteCheck:
    """(PTE+PMD+PUD tables) x 4 KiB against VmPTE."""

    vmpte_bytes: int
    walked_bytes: int
    thp_deposit_max_bytes: int  # one deposited PTE table per PMD leaf, at most
    levels: tuple[str, ...]
    ok: bool
    detail: str


@dataclass(frozen=True)
class NodeTablesCheck:
    """One node: tables found there (at the kernel-accounted levels) vs its PageTables."""

    node: int
    found_bytes: int
    node_pagetables_bytes: int
    levels: tuple[str, ...]
    ok: bool
    lag_bytes: int = 0  # how far the counter may trail: per-cpu deltas not yet folded


@dataclass(frozen=True)
class PagemapCheck:
    """Walk leaves against /proc/PID/pagemap, per 4 KiB page."""

    pages_compared: int
    mismatched: int  # both have the page, different frames
    only_in_pagemap: int
    only_in_walk: int  # not counting VM_PFNMAP pages (below)
    pfnmap_pages: int  # walk leaves in VM_PFNMAP mappings ([vvar]), which pagemap never shows
    examples: tuple[tuple[int, int | None, int | None], ...]  # (va, walk pfn, pagemap pfn)
    ok: bool


@dataclass
class KernelTables:
    """The user half of a process's page tables as the kernel holds them."""

    pid: int
    tgid: int
    paging_levels: int
    la57_source: str
    page_offset_base: int
    pgd_pfn: int
    pti: bool
    tables: list[TableFrame]
    changed_under_walk: int
    bad_entries: int
    walk_seconds: float
    pgtable_marked: dict[str, tuple[int, int]]  # level -> (frames with KPF_PGTABLE, frames)
    node_map: NodeMap = field(repr=False)
    _index: dict[tuple[str, int], TableFrame] | None = field(default=None, repr=False)

    # ---- aggregates ---------------------------------------------------------------------

    def tables_per_node(self) -> dict[int | None, dict[str, int]]:
        """{node: {level: frames}} (node None: a frame outside every memory block)."""
        out: dict[int | None, dict[str, int]] = {}
        for t in self.tables:
            per = out.setdefault(t.node, {})
            per[t.level] = per.get(t.level, 0) + 1
        return out

    def frames_by_level(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.tables:
            out[t.level] = out.get(t.level, 0) + 1
        return out

    def leaves(self) -> Iterator[tuple[int, int, int]]:
        """(va, frame, size) of every leaf, table by table."""
        for t in self.tables:
            yield from t.leaves()

    def leaf_pfn(self, va: int) -> int | None:
        """The 4 KiB frame ``va`` translates to (inside a huge leaf: its part), or None."""
        if self._index is None:
            self._index = {}
            for t in self.tables:
                if t.level in LEAF_SIZE:
                    self._index[(t.level, t.start)] = t
        for level, covered in (("pte", 21), ("pmd", 30), ("pud", 39)):
            table = self._index.get((level, va >> covered << covered))
            if table is None:
                continue
            shift = LEAF_SIZE[level].bit_length() - 1
            index = (va >> shift) & (ENTRIES - 1)
            i = bisect.bisect_left(table.leaf_index, index)
            if i < len(table.leaf_index) and table.leaf_index[i] == index:
                return table.leaf_pfn[i] + ((va & (LEAF_SIZE[level] - 1)) >> PAGE_SHIFT)
        return None

    # ---- cross-checks -------------------------------------------------------------------

    def check_vmpte(self, status_path: str | None = None) -> VmPteCheck:
        """VmPTE (mm_pgtables_bytes: PTE, PMD and PUD tables in 6.1) against the walk."""
        path = status_path or f"/proc/{self.pid}/status"
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise ProcessGone(f"process {self.pid} is gone ({path}: {err.strerror})",
                              pid=self.pid, path=path) from err
        m = re.search(r"^VmPTE:\s+(\d+) kB", text, re.M)
        if m is None:
            raise ProcessGone(f"process {self.pid} has no VmPTE (a zombie or kernel thread)",
                              pid=self.pid, path=path)
        vmpte = int(m.group(1)) * 1024
        counts = self.frames_by_level()
        walked = sum(counts.get(level, 0) for level in VMPTE_LEVELS) * PAGE_SIZE
        pmd_leaves = sum(len(t.leaf_index) for t in self.tables if t.level == "pmd")
        deposit = pmd_leaves * PAGE_SIZE
        ok = walked <= vmpte <= walked + deposit
        detail = (f"VmPTE {vmpte // 1024} kB, walk {walked // 1024} kB "
                  f"({', '.join(f'{counts.get(lv, 0)} {lv}' for lv in VMPTE_LEVELS)})")
        if deposit:
            detail += f"; up to {deposit // 1024} kB of PTE tables deposited for {pmd_leaves} THPs"
        if self.changed_under_walk:
            detail += f"; {self.changed_under_walk} entries changed under the walk"
        return VmPteCheck(vmpte, walked, deposit, VMPTE_LEVELS, ok, detail)

    def accounted_levels(self) -> tuple[str, ...]:
        """Levels the kernel counts in NR_PAGETABLE: the ones it marks PG_table (the same
        constructor does both), as seen in this walk; 6.1: pte and pmd."""
        return tuple(lv for lv, (marked, _) in self.pgtable_marked.items() if marked)

    def check_node_pagetables(self, node_dir: str = NODE_DIR,
                              zoneinfo: str | None = None) -> list[NodeTablesCheck]:
        """Per node: found <= that node's PageTables (which counts every process) + the
        counter's per-cpu lag (``numa.vmstat_lag_pages``): tables made in the last second
        may not be folded into it yet (a guest run found 78 tables on a node whose counter
        said 75, right after they were made).  ``zoneinfo``: another /proc/zoneinfo to read
        the thresholds from (tests)."""
        from ptreloc import numa

        levels = self.accounted_levels()
        found: dict[int, int] = {}
        for t in self.tables:
            if t.level in levels and t.node is not None:
                found[t.node] = found.get(t.node, 0) + PAGE_SIZE
        out = []
        for node in sorted({r[2] for r in self.node_map.ranges}):
            try:
                kb = numa.node_page_tables_kb(node, node_dir)[0]
            except InvalidNode:  # no meminfo for the node: nothing counted there
                kb = None
            node_bytes = (kb or 0) * 1024
            lag = (numa.vmstat_lag_pages(node) if zoneinfo is None
                   else numa.vmstat_lag_pages(node, zoneinfo))
            margin = lag * PAGE_SIZE
            have = found.get(node, 0)
            out.append(NodeTablesCheck(node, have, node_bytes, levels,
                                       have <= node_bytes + margin, margin))
        return out

    def check_pagemap(self, max_examples: int = 8) -> PagemapCheck:
        """Every resident page of pagemap vs the walk's leaf frame, both ways."""
        from ptreloc import proc

        try:
            addresses, pfns = proc.read_pagemap(self.pid, proc.read_maps(self.pid))
        except NoSuchProcess as err:
            raise ProcessGone(str(err), pid=self.pid, path=f"/proc/{self.pid}/pagemap") from err
        pagemap = dict(zip(addresses, pfns, strict=True))
        # pagemap's page walk skips VM_PFNMAP mappings (mm/pagewalk.c walk_page_test): their
        # present entries read as holes, so the walk's leaves there are not a disagreement
        pfnmap = _pfnmap_ranges(self.pid)
        compared = mismatched = only_walk = in_pfnmap = 0
        examples: list[tuple[int, int | None, int | None]] = []
        seen = 0
        for va, pfn, size in self.leaves():
            for i in range(size // PAGE_SIZE):
                page_va = va + i * PAGE_SIZE
                theirs = pagemap.get(page_va)
                mine = pfn + i
                if theirs is None:
                    if any(lo <= page_va < hi for lo, hi in pfnmap):
                        in_pfnmap += 1
                        continue
                    only_walk += 1
                    if len(examples) < max_examples:
                        examples.append((page_va, mine, None))
                    continue
                seen += 1
                compared += 1
                if theirs != mine:
                    mismatched += 1
                    if len(examples) < max_examples:
                        examples.append((page_va, mine, theirs))
        only_pagemap = len(pagemap) - seen
        if only_pagemap and len(examples) < max_examples:
            for va in addresses:
                if self.leaf_pfn(va) is None:
                    examples.append((va, None, pagemap[va]))
                    if len(examples) >= max_examples:
                        break
        ok = mismatched == 0 and only_walk == 0 and only_pagemap == 0
        return PagemapCheck(compared, mismatched, only_pagemap, only_walk, in_pfnmap,
                            tuple(examples), ok)


def _pfnmap_ranges(pid: int) -> list[tuple[int, int]]:
    """[start, end) of the process's VM_PFNMAP mappings ("pf" in smaps VmFlags)."""
    try:
        text = Path(f"/proc/{pid}/smaps").read_text(errors="surrogateescape")
    except OSError:
        return []
    out = []
    current: tuple[int, int] | None = None
    for line in text.splitlines():
        head = re.match(r"^([0-9a-f]+)-([0-9a-f]+) ", line)
        if head:
            current = (int(head.group(1), 16), int(head.group(2), 16))
        elif line.startswith("VmFlags:") and current and "pf" in line.split()[1:]:
            out.append(current)
    return out


# --------------------------------------------------------------------------------------------
# the walk
# --------------------------------------------------------------------------------------------


def walk_tables(
    root_pfn: int,
    levels: tuple[tuple[str, int], ...],
    read_frame: Callable[[int], bytes],
    page_flags: Callable[[int], int | None],
    node_map: NodeMap,
) -> tuple[list[TableFrame], int, int]:
    """Walk the user half of the tree rooted at ``root_pfn``: (tables, changed_under_walk,
    bad_entries).  ``read_frame(pfn)`` returns the frame's 4 KiB; ``page_flags(pfn)`` its
    kpageflags word (None: unknown).  Pure of /proc, so it runs on synthetic memory too."""
    tables: list[TableFrame] = []
    changed = 0
    bad = 0
    # a child's flags as plausible() read them, for its own visit right after (one pread of
    # kpageflags per table, not two)
    checked: dict[int, int | None] = {}

    def plausible(pfn: int, level: str) -> bool:
        if node_map.node_of(pfn) is None:
            return False
        if level in _MARKED_LEVELS:
            flags = checked[pfn] = page_flags(pfn)
            if flags is not None and not (flags >> KPF_PGTABLE) & 1:
                return False
        return True

    def visit(pfn: int, depth: int, start: int, data: bytes | None = None) -> None:
        nonlocal changed, bad
        level, shift = levels[depth]
        if data is None:
            data = read_frame(pfn)
        limit = USER_ENTRIES if depth == 0 else ENTRIES
        d = decode_table(data, level, limit=limit)
        bad += d.bad
        flags = checked.pop(pfn) if pfn in checked else page_flags(pfn)
        span = (limit << shift)
        tables.append(
            TableFrame(
                level=level,
                start=start,
                end=start + span,
                pfn=pfn,
                node=node_map.node_of(pfn),
                pgtable_flag=None if flags is None else bool((flags >> KPF_PGTABLE) & 1),
                entries=len(d.children) + len(d.leaf_index) + d.nonpresent + d.bad,
                nonpresent=d.nonpresent,
                leaf_index=d.leaf_index,
                leaf_pfn=d.leaf_pfn,
            )
        )
        if not d.children:
            return
        child_level = levels[depth + 1][0]
        marks = []  # (entry index, entry bytes, its subtree's slice of ``tables``)
        for index, child in d.children:
            if not plausible(child, child_level):
                changed += 1  # freed and reused (or never a table): do not follow
                continue
            first = len(tables)
            visit(child, depth + 1, start + (index << shift))
            marks.append((index, data[index * 8 : index * 8 + 8], first, len(tables)))
        # read the table again: a subtree whose entry changed meanwhile is not trusted.
        # Last subtree first, so deleting one leaves the earlier slices where they are.
        again = read_frame(pfn)
        for index, old, first, last in reversed(marks):
            if again[index * 8 : index * 8 + 8] != old:
                del tables[first:last]
                changed += 1

    visit(root_pfn, 0, 0)
    return tables, changed, bad


def _stat_start_time(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(text.rpartition(")")[2].split()[19])  # field 22, starttime


def _status_field(pid: int, name: str) -> str | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{name}:\s*(.*)$", text, re.M)
    return m.group(1).strip() if m else None


def _find_task(kernel: _Kernel, tgid: int) -> int:
    """Address of the task_struct of thread-group leader ``tgid`` (0: not on the list)."""
    lay = kernel.layout
    kcore = kernel.kcore
    head = kernel.symbols["init_task"] + lay.tasks
    lo = min(lay.tasks, lay.tgid, lay.pid)
    hi = max(lay.tasks + 8, lay.tgid + 4, lay.pid + 4)
    node = kcore.u64(head)
    seen: set[int] = set()
    for _ in range(_MAX_TASKS):
        if node == head:
            return 0
        if node in seen:
            raise WalkInconsistent("the task list loops without returning to init_task "
                                   "(a task was freed under the walk)", path=kcore.path)
        seen.add(node)
        task = node - lay.tasks
        blob = kcore.read(task + lo, hi - lo)

        def field_at(off: int, size: int, blob: bytes = blob) -> int:
            return int.from_bytes(blob[off - lo : off - lo + size], "little", signed=size == 4)

        if field_at(lay.tgid, 4) == tgid and field_at(lay.pid, 4) == tgid:
            return task
        node = field_at(lay.tasks, 8)
    raise WalkInconsistent("the task list is longer than PID_MAX_LIMIT", path=kcore.path)


def walk_process(
    pid: int,
    *,
    kcore_path: str = KCORE,
    kallsyms_path: str = KALLSYMS,
    btf_path: str = str(btf_mod.VMLINUX_BTF),
    node_dir: str = NODE_DIR,
    memory_dir: str = MEMORY_DIR,
    kpageflags_path: str = KPAGEFLAGS,
) -> KernelTables:
    """Walk the user half of process ``pid``'s page tables (see the module doc).

    Raises ``KernelTablesUnavailable`` (see ``availability()``), ``ProcessGone``,
    ``KernelThread`` or ``WalkInconsistent`` (retried ``_RETRIES`` times first)."""
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        raise KernelTablesError(f"pid must be a positive number, not {pid!r}", pid=None)
    proc_path = f"/proc/{pid}"
    started = _stat_start_time(pid)
    if started is None:
        raise ProcessGone(f"no process with pid {pid}", pid=pid, path=proc_path)
    tgid_text = _status_field(pid, "Tgid")
    tgid = int(tgid_text) if tgid_text else pid  # a thread's tables are its leader's
    kernel = _open_kernel(kcore_path, kallsyms_path, btf_path)
    node_map = NodeMap.from_sysfs(node_dir, memory_dir)
    flags = PageFlags(kpageflags_path)
    try:
        last: WalkInconsistent | None = None
        for _ in range(_RETRIES):
            try:
                result = _walk_once(kernel, node_map, flags, pid, tgid)
            except WalkInconsistent as err:
                last = err
                if _stat_start_time(pid) != started:
                    break
                continue
            if _stat_start_time(pid) != started:
                break
            return result
        if _stat_start_time(pid) != started:
            raise ProcessGone(f"process {pid} exited while its page tables were read",
                              pid=pid, path=proc_path)
        assert last is not None
        last.pid = pid
        raise last
    finally:
        flags.close()
        kernel.kcore.close()


def _walk_once(kernel: _Kernel, node_map: NodeMap, flags: PageFlags, pid: int,
               tgid: int) -> KernelTables:
    t0 = time.perf_counter()
    kcore = kernel.kcore
    proc_path = f"/proc/{pid}"
    task = _find_task(kernel, tgid)
    if task == 0:
        if _stat_start_time(pid) is None:
            raise ProcessGone(f"process {pid} exited", pid=pid, path=proc_path)
        raise WalkInconsistent(f"thread group {tgid} is not on init_task's task list",
                               pid=pid, path=kcore.path)
    mm = kcore.u64(task + kernel.layout.mm)
    if mm == 0:
        state = _status_field(pid, "State") or ""
        if state.startswith(("Z", "X")) or _stat_start_time(pid) is None:
            raise ProcessGone(f"process {pid} has exited (state {state or 'gone'}): no mm",
                              pid=pid, path=proc_path)
        raise KernelThread(f"pid {pid} is a kernel thread: it has no user page tables",
                           pid=pid, path=proc_path)
    pgd_va = kcore.u64(mm + kernel.layout.pgd)
    base = kernel.page_offset_base
    phys = pgd_va - base
    if pgd_va % PAGE_SIZE or not 0 <= phys < node_map.end_pfn * PAGE_SIZE:
        raise WalkInconsistent(f"mm->pgd {pgd_va:#x} is not a page in the direct map",
                               pid=pid, path=kcore.path)
    pgd_pfn = phys >> PAGE_SHIFT
    if node_map.node_of(pgd_pfn) is None:
        raise WalkInconsistent(f"pgd frame {pgd_pfn:#x} is in no node's memory",
                               pid=pid, path=kcore.path)

    def read_frame(pfn: int) -> bytes:
        return kcore.read(base + pfn * PAGE_SIZE, PAGE_SIZE)

    root = read_frame(pgd_pfn)
    # plausibility: the kernel half of every pgd maps the direct map (cloned from swapper)
    top_shift = kernel.levels[0][1]
    slot = (base >> top_shift) & (ENTRIES - 1)
    if not int.from_bytes(root[slot * 8 : slot * 8 + 8], "little") & _PRESENT:
        raise WalkInconsistent(f"frame {pgd_pfn:#x} does not map the direct map in slot {slot}: "
                               "not a pgd (the mm was freed under us?)", pid=pid, path=kcore.path)
    pti = False
    if "pti" in _cpu_flags() and pgd_pfn % 2 == 0:
        user = read_frame(pgd_pfn + 1)
        nx = (1 << 63) - 1  # the kernel copy's user entries carry NX (pti_set_user_pgtbl)
        k = array("Q", root[: USER_ENTRIES * 8])
        u = array("Q", user[: USER_ENTRIES * 8])
        pti = all((a & nx) == (b & nx) for a, b in zip(k, u, strict=True))

    tables, changed, bad = walk_tables(pgd_pfn, kernel.levels, read_frame, flags.get, node_map)
    # the task still has this mm and pgd: otherwise the walk read a dead tree
    if kcore.u64(task + kernel.layout.mm) != mm or kcore.u64(mm + kernel.layout.pgd) != pgd_va:
        raise WalkInconsistent(f"process {pid} changed its mm during the walk (exec or exit)",
                               pid=pid, path=kcore.path)
    marked: dict[str, tuple[int, int]] = {name: (0, 0) for name, _ in kernel.levels}
    for t in tables:
        m, n = marked[t.level]
        marked[t.level] = (m + bool(t.pgtable_flag), n + 1)
    return KernelTables(
        pid=pid,
        tgid=tgid,
        paging_levels=len(kernel.levels),
        la57_source=kernel.la57_source,
        page_offset_base=base,
        pgd_pfn=pgd_pfn,
        pti=pti,
        tables=tables,
        changed_under_walk=changed,
        bad_entries=bad,
        walk_seconds=time.perf_counter() - t0,
        pgtable_marked=marked,
        node_map=node_map,
    )
