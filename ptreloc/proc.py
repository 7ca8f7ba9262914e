"""Snapshot of a live process's memory placement: what the kernel says, from psutil and /proc.

``snapshot(pid)`` gathers, in this order: the process itself (psutil: name, owner, state,
threads), its VMAs (/proc/PID/maps), its resident pages (/proc/PID/pagemap present bit, plus frame
numbers when we are privileged) with the node of every resident page (from its frame where
frame numbers are visible, in the same pass, see ptreloc.frames; move_pages(2) in query mode
for the rest) and the blocks that may be huge pages,
per-node counts from /proc/PID/numa_maps, Mems_allowed / Cpus_allowed (/proc/PID/status) and the
CPU it last ran on (/proc/PID/stat field 39) with that CPU's node.

The process keeps running while we look, so the parts are each exact but not one atomic picture:
a page can be faulted in or moved between reading pagemap and asking move_pages.  Such a page
shows up with a move_pages status of -ENOENT/-EFAULT rather than a node.
"""

from __future__ import annotations

import os
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import psutil

from ptreloc import frames as frames_mod
from ptreloc import numa
from ptreloc.errors import AccessDenied, NoSuchProcess, PtrelocError, UsageError
from ptreloc.runs import PageRuns, as_runs

__all__ = [
    "Vma",
    "ProcessSnapshot",
    "snapshot",
    "check_pid",
    "inspect_process",
    "read_maps",
    "read_pagemap",
    "scan_pagemap",
    "status_counts",
    "proc_error",
    "last_cpu",
    "cap_effective",
    "PAGEMAP_READ_BYTES",
]

PAGE_SIZE = numa.PAGE_SIZE
#: pagemap is read this many bytes at a time (8 bytes per page: 256 KiB covers 128 MiB of
#: addresses; small enough for the buffers to stay in cache)
PAGEMAP_READ_BYTES = 256 << 10

_PF_KTHREAD = 0x00200000  # include/linux/sched.h
# Maps whose pagemap we do not read: the vsyscall page is outside the user address range.
_SKIP_PATHS = frozenset({"[vsyscall]"})


@dataclass(frozen=True)
class Vma:
    """One line of /proc/PID/maps: ``[start, end)`` with its permissions and backing."""

    start: int
    end: int
    perms: str  # e.g. "rw-p"
    offset: int
    device: str  # "major:minor"
    inode: int
    path: str  # file, "[heap]", "[stack]", ... or "" for anonymous memory

    @property
    def pages(self) -> int:
        return (self.end - self.start) // PAGE_SIZE

    def to_json(self) -> dict[str, Any]:
        return {
            "start": hex(self.start),
            "end": hex(self.end),
            "perms": self.perms,
            "offset": self.offset,
            "device": self.device,
            "inode": self.inode,
            "path": self.path,
        }


@dataclass
class ProcessSnapshot:
    """Where a process's memory is.  ``resident`` and ``nodes`` are parallel: page address
    (runs of consecutive pages, ``ptreloc.runs.PageRuns``: a sequence of addresses that keeps
    16 bytes a run, not 8 a page; an ascending address array given is converted) and
    move_pages status (node >= 0, or -errno, an ``array('i')``).  Frame numbers are not kept
    (8 bytes a page): the scan turns each into its node as it reads it; only the huge-page
    candidates' head frames stay (``huge_index`` into ``resident``, ``huge_pfn``)."""

    pid: int
    name: str
    owner: str  # user name (or the uid as text when it has no name)
    uid: int
    status: str  # psutil status: "running", "sleeping", "stopped" ...
    threads: int
    vmas: list[Vma]
    resident: PageRuns  # addresses of resident pages, ascending
    nodes: array[int]  # 'i': move_pages query status per resident page
    frames_visible: bool  # pagemap showed frame numbers (CAP_SYS_ADMIN)
    numa_maps: dict[int, int]  # node -> resident pages, the kernel's own count
    mems_allowed: frozenset[int]
    cpus_allowed: frozenset[int]
    last_cpu: int
    last_cpu_node: int | None
    page_size: int = PAGE_SIZE
    #: the aligned blocks of 2**huge_shift bytes that may be one huge page (every page
    #: resident; with frames, contiguous from an aligned head): their first page's index into
    #: ``resident`` ('Q') and head frame (0 when hidden)
    huge_index: array[int] = field(default_factory=lambda: array("Q"))
    huge_pfn: array[int] = field(default_factory=lambda: array("Q"))
    huge_shift: int = 0
    #: who gave ``nodes``: "frames" (frame -> memory block -> node, move_pages for the pages
    #: the frame does not tell; ptreloc.frames) or "move_pages" (every page asked)
    node_source: str = "move_pages"
    asked_move_pages: int = 0  # pages move_pages was asked about
    elapsed_s: dict[str, float] = field(default_factory=dict)
    _status_counts: tuple[array[int], dict[int, int]] | None = field(
        default=None, init=False, repr=False, compare=False)
    _vma_pages: tuple[list[Vma], PageRuns, list[tuple[int, int]]] | None = field(
        default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        given: object = self.resident
        if not isinstance(given, PageRuns):  # an ascending address array or list
            self.resident = as_runs(cast("Iterable[int]", given), self.page_size)

    def vma_pages(self) -> list[tuple[int, int]]:
        """Per VMA of ``vmas``, (first index, end index) of its pages in ``resident``: one
        merge walk over the VMAs and the runs, kept while ``vmas`` and ``resident`` are the
        same objects (the placement rule, the arena's sizing and the special pages each ask)."""
        cached = self._vma_pages
        if cached is None or cached[0] is not self.vmas or cached[1] is not self.resident:
            bounds = self.resident.bisect_many(x for v in self.vmas for x in (v.start, v.end))
            cached = (self.vmas, self.resident, list(zip(bounds[::2], bounds[1::2],
                                                         strict=True)))
            self._vma_pages = cached
        return cached[2]

    def status_counts(self) -> dict[int, int]:
        """How many resident pages have each status of ``nodes`` (node >= 0 or -errno): one
        pass in C, kept (``nodes`` is not changed in place; a new snapshot counts again)."""
        cached = self._status_counts
        if cached is None or cached[0] is not self.nodes:
            cached = (self.nodes, status_counts(self.nodes))
            self._status_counts = cached
        return cached[1]

    def node_pages(self) -> dict[int, int]:
        """Resident pages per node according to move_pages (pages it could not place are left
        out; see ``unplaced_pages``)."""
        return {k: v for k, v in sorted(self.status_counts().items()) if k >= 0}

    def unplaced_pages(self) -> dict[str, int]:
        """move_pages statuses that are not nodes, by name (e.g. {"ENOENT": 3})."""
        out: dict[str, int] = {}
        for status, count in sorted(self.status_counts().items(), reverse=True):
            if status < 0:
                key = numa.page_status_name(status).split(":")[0].lstrip("-")
                out[key] = out.get(key, 0) + count
        return out

    def pages_in(self, start: int, end: int) -> Iterator[tuple[int, int]]:
        """(address, node status) of the resident pages in ``[start, end)``."""
        lo, hi = self.resident.span(start, end)
        yield from zip(self.resident.expand(lo, hi), self.nodes[lo:hi], strict=True)

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "name": self.name,
            "owner": self.owner,
            "uid": self.uid,
            "status": self.status,
            "threads": self.threads,
            "vmas": len(self.vmas),
            "resident_pages": len(self.resident),
            "page_size": self.page_size,
            "pfns_visible": self.frames_visible,
            "node_source": self.node_source,
            "asked_move_pages": self.asked_move_pages,
            "node_pages": {str(k): v for k, v in self.node_pages().items()},
            "unplaced_pages": self.unplaced_pages(),
            "numa_maps_pages": {str(k): v for k, v in sorted(self.numa_maps.items())},
            "mems_allowed": sorted(self.mems_allowed),
            "cpus_allowed": sorted(self.cpus_allowed),
            "last_cpu": self.last_cpu,
            "last_cpu_node": self.last_cpu_node,
            "elapsed_s": self.elapsed_s,
        }


#: statuses counted one by one by :func:`status_counts` (errno values are below 256; nodes
#: below the core's PTR_MAX_NODES); anything else is counted in Python
_STATUS_LO = -256


def status_counts(nodes: array[int]) -> dict[int, int]:
    """How many of ``nodes`` (an array('i') of node statuses) have each value (a C pass)."""
    if not nodes:
        return {}
    from ptreloc._native import core

    c = core("relo")
    hi = c.max_nodes - 1
    hist, outside = c.status_histogram(nodes, _STATUS_LO, hi)
    out = {_STATUS_LO + i: n for i, n in enumerate(hist) if n}
    if outside:
        for v in nodes:
            if not _STATUS_LO <= v <= hi:
                out[v] = out.get(v, 0) + 1
    return out


# --------------------------------------------------------------------------------------------
# /proc readers
# --------------------------------------------------------------------------------------------


def proc_error(pid: int, what: str, err: OSError) -> PtrelocError:
    """The library's error for a failed read of /proc/PID/<what>: the process exited
    (NoSuchProcess), no ptrace read access (AccessDenied), or anything else (PtrelocError)."""
    if isinstance(err, FileNotFoundError | ProcessLookupError):
        return NoSuchProcess(f"no process with pid {pid} (it exited while being read)", pid=pid)
    path = f"/proc/{pid}/{what}"
    if isinstance(err, PermissionError):
        return AccessDenied(
            f"cannot read {path}: needs the same user or root (ptrace read access)",
            pid=pid, path=path,
        )
    return PtrelocError(f"reading {path} failed: {err.strerror or err}", pid=pid, path=path)


def read_maps(pid: int) -> list[Vma]:
    """The process's VMAs, in address order."""
    try:
        with open(f"/proc/{pid}/maps", encoding="utf-8", errors="surrogateescape") as fh:
            text = fh.read()
    except OSError as err:
        raise proc_error(pid, "maps", err) from err
    vmas = []
    for line in text.splitlines():
        # path may contain spaces; it is everything after the fifth field
        fields = line.split(maxsplit=5)
        low, _, high = fields[0].partition("-")
        vmas.append(
            Vma(
                start=int(low, 16),
                end=int(high, 16),
                perms=fields[1],
                offset=int(fields[2], 16),
                device=fields[3],
                inode=int(fields[4]),
                path=fields[5] if len(fields) > 5 else "",
            )
        )
    return vmas


def read_pagemap(
    pid: int, vmas: list[Vma], *, chunk_bytes: int = PAGEMAP_READ_BYTES
) -> tuple[array[int], array[int]]:
    """Resident pages of ``vmas`` from /proc/PID/pagemap: (addresses 'Q', frame numbers 'Q').

    Frame numbers read as 0 without CAP_SYS_ADMIN (the kernel hides them since 4.0).  The whole
    read is one call into C (``ptr_pagemap_read``: pread ``chunk_bytes`` at a time into one
    reused buffer, the present entries compacted on the way), with the GIL released: the cost
    is the kernel's read plus ~1 ns an entry.  The output is sized by the process's resident
    set (/proc/PID/statm) and grown if the kernel's lagging counter was short.
    """
    from ptreloc._native import core

    c = core("relo")
    ranges = _ranges(vmas)
    buf = array("Q", [0]) * max(chunk_bytes // 8, 1)
    cap = _resident_estimate(pid) + 1024
    addresses = array("Q", [0]) * cap
    pfns = array("Q", [0]) * cap
    pos = c.new_pos()
    shift = PAGE_SIZE.bit_length() - 1
    done = 0
    try:
        fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
    except OSError as err:
        raise proc_error(pid, "pagemap", err) from err
    try:
        while True:
            try:
                done += c.pagemap_read(fd, ranges, shift, buf, addresses, pfns, done, pos)
            except OSError as err:
                raise proc_error(pid, "pagemap", err) from err
            if pos[0] >= len(ranges) // 2:
                break
            more = array("Q", [0]) * (len(addresses) // 2 + 1024)  # full: grow by half, go on
            addresses.extend(more)
            pfns.extend(more)
    finally:
        os.close(fd)
    del addresses[done:]
    del pfns[done:]
    return addresses, pfns


def _resident_estimate(pid: int) -> int:
    """Resident pages per /proc/PID/statm (the kernel's counters: may lag a little)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0


#: log2 of the huge page a PMD entry maps: a table of page_size / 8 entries under the page
HUGE_SHIFT = 2 * (PAGE_SIZE.bit_length() - 1) - 3


@dataclass(frozen=True)
class PageScan:
    """One pass over a process's pagemap (:func:`scan_pagemap`): ``resident`` addresses, the
    node status of each as its frame tells (node, -EFAULT for a zero page, or
    ``unknown_status`` where the frame does not tell or is hidden: ``frames.page_nodes``
    asks move_pages about those), the huge-page candidates, and whether frames were shown."""

    resident: PageRuns
    nodes: array[int]
    unknown: int  # pages with unknown_status
    unknown_status: int
    frames_visible: bool
    blocks_known: bool  # the kernel lists memory blocks: frames can name nodes
    huge_index: array[int]
    huge_pfn: array[int]
    huge_shift: int


def scan_pagemap(pid: int, vmas: list[Vma], *, chunk_bytes: int = PAGEMAP_READ_BYTES
                 ) -> PageScan:
    """The resident pages of ``vmas`` from /proc/PID/pagemap with each page's node from its
    frame and the huge-page candidates: one call into C (``ptr_pagemap_scan``: pread
    ``chunk_bytes`` at a time, GIL released) that keeps 4 bytes a page (the node), not
    the frame numbers, and the addresses as runs (``ptreloc.runs.PageRuns``).  The output is
    sized by /proc/PID/statm and grown if short."""
    from ptreloc._native import core

    c = core("relo")
    ranges = _ranges(vmas)
    blocks = frames_mod.recent_block_nodes()
    zero = array("Q", [x for rng in frames_mod.zero_frames() for x in rng])
    shift = PAGE_SIZE.bit_length() - 1
    try:
        fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
    except OSError as err:
        raise proc_error(pid, "pagemap", err) from err
    try:
        got = c.pagemap_scan(fd, ranges, shift,
                             block_node=None if blocks is None else blocks.nodes,
                             block_shift=0 if blocks is None else blocks.block_shift,
                             zero_ranges=zero, huge_shift=HUGE_SHIFT,
                             estimate=_resident_estimate(pid),
                             buf_entries=max(chunk_bytes // 8, 1))
    except OSError as err:
        raise proc_error(pid, "pagemap", err) from err
    finally:
        os.close(fd)
    return PageScan(PageRuns(got.run_start, got.run_first, PAGE_SIZE), got.nodes, got.unknown,
                    c.node_unknown, got.framed > 0, blocks is not None, got.huge_index,
                    got.huge_pfn, HUGE_SHIFT)


def _ranges(vmas: list[Vma]) -> array[int]:
    ranges = array("Q")
    for vma in vmas:
        if vma.path not in _SKIP_PATHS and vma.end > vma.start:
            ranges.extend((vma.start, vma.end))
    return ranges


def _status_lists(pid: int) -> tuple[frozenset[int], frozenset[int]]:
    mems: frozenset[int] | None = None
    cpus: frozenset[int] | None = None
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Mems_allowed_list:"):
                    mems = numa.parse_list(line.split(":", 1)[1])
                elif line.startswith("Cpus_allowed_list:"):
                    cpus = numa.parse_list(line.split(":", 1)[1])
    except OSError as err:
        raise proc_error(pid, "status", err) from err
    return mems or frozenset(), cpus or frozenset()


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat fields from field 3 (state) on: the command name (field 2) may hold
    spaces and parentheses, so split after its last ')'."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError as err:
        raise proc_error(pid, "stat", err) from err
    return text[text.rindex(")") + 2 :].split()


def last_cpu(pid: int) -> int:
    """The CPU the process last ran on (field 39, ``processor``, of /proc/PID/stat)."""
    return int(_stat_fields(pid)[39 - 3])


def cap_effective(pid: int | str = "self") -> int:
    """The effective capability mask (``CapEff:`` of /proc/PID/status); 0 when unreadable."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def _is_kernel_thread(pid: int) -> bool:
    return bool(int(_stat_fields(pid)[9 - 3]) & _PF_KTHREAD)


# --------------------------------------------------------------------------------------------
# snapshot
# --------------------------------------------------------------------------------------------


#: the one pid check (pid 0 is not a process: a UsageError here), see ptreloc.numa.check_pid
check_pid = numa.check_pid


T = TypeVar("T")


def inspect_process(
    pid: int, read: Callable[[psutil.Process], T], *, zombie: str, kernel_thread: str
) -> tuple[str, str, T]:
    """psutil's look at live user process ``pid``: (name, status, ``read(process)``), read in
    one ``oneshot``.  ``zombie`` and ``kernel_thread`` end the refusals' messages, saying what
    the caller cannot do with such a pid.

    Raises NoSuchProcess (no such pid, a zombie), AccessDenied (another user's process psutil
    may not inspect), UsageError (a kernel thread: it has no user memory).
    """
    try:
        process = psutil.Process(pid)
        with process.oneshot():
            name = process.name()
            status = process.status()
            more = read(process)
    except psutil.ZombieProcess as err:
        raise NoSuchProcess(f"pid {pid} is a zombie {zombie}", pid=pid) from err
    except psutil.NoSuchProcess as err:
        raise NoSuchProcess(f"no process with pid {pid}", pid=pid) from err
    except psutil.AccessDenied as err:
        raise AccessDenied(
            f"cannot inspect pid {pid}: it belongs to another user; run as root"
        ) from err
    # a zombie's name and status still read fine: psutil raises ZombieProcess only from a read
    # that fails, so the status is checked too
    if status == psutil.STATUS_ZOMBIE:
        raise NoSuchProcess(f"pid {pid} is a zombie {zombie}", pid=pid)
    if _is_kernel_thread(pid):
        raise UsageError(
            f"pid {pid} ({name}) is a kernel thread: {kernel_thread}; "
            f"give the pid of a user process"
        )
    return name, status, more


def _owner_uid_threads(process: psutil.Process) -> tuple[str, int, int]:
    uid = process.uids().real
    try:
        owner = process.username()
    except KeyError:  # a uid without a passwd entry
        owner = str(uid)
    return owner, uid, process.num_threads()


class _Background:
    """``fn()`` on a thread of its own; ``result()`` joins it and returns its value or raises
    its exception (so a process that exits meanwhile is reported as from the caller)."""

    def __init__(self, fn: Callable[[], T]) -> None:
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True,
                                        name="ptreloc-snapshot")
        self._thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self._value = fn()
        except BaseException as err:  # noqa: BLE001 - handed to the caller by result()
            self._error = err

    def join(self) -> None:
        self._thread.join()

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


def _kernel_side(pid: int, clock: Callable[[], float], numa_maps_text: str | None = None
                 ) -> tuple[dict[int, int], frozenset[int], frozenset[int], int, float]:
    """numa_maps (counted from ``numa_maps_text`` when the caller read it), Mems/Cpus_allowed,
    the last CPU, and how long they took to read."""
    t0 = clock()
    numa_maps = (numa.numa_maps_node_pages(pid) if numa_maps_text is None
                 else numa.numa_maps_node_pages(pid, numa_maps_text))
    mems, cpus = _status_lists(pid)
    cpu = last_cpu(pid)
    return numa_maps, mems, cpus, cpu, clock() - t0


def snapshot(pid: int, *, backend: str | numa.NumaBackend | None = None,
             numa_maps_text: str | None = None) -> ProcessSnapshot:
    """Take a snapshot of process ``pid``.  ``numa_maps_text``: /proc/PID/numa_maps as the
    caller just read it (``ptreloc.numa.read_numa_maps``; migrate reads it for the policies
    too, and the kernel walks every page to print it), read here when None.

    Raises NoSuchProcess (no such pid, a zombie, or it exited meanwhile), AccessDenied
    (another user's process without privilege), UsageError (a kernel thread: it has no memory
    map; a pid that is not a positive number).
    """
    check_pid(pid)
    clock = time.perf_counter
    t0 = clock()
    name, status, (owner, uid, threads) = inspect_process(
        pid,
        _owner_uid_threads,
        zombie="(it exited; its parent has not reaped it): it has no memory to snapshot",
        kernel_thread="it has no user memory map",
    )
    t1 = clock()
    # the kernel's own count (numa_maps: a second walk of every page, in the kernel) is read
    # on a thread of its own while the pagemap scan runs in C with the GIL released: two
    # walks on two CPUs instead of one after the other
    side = _Background(lambda: _kernel_side(pid, clock, numa_maps_text))
    try:
        vmas = read_maps(pid)
        scan = scan_pagemap(pid, vmas)
        t2 = clock()
        answer = frames_mod.page_nodes(pid, vmas, scan, backend=backend)
        t3 = clock()
    except BaseException:
        side.join()  # the first error is the one reported
        raise
    numa_maps, mems, cpus, cpu, side_s = side.result()
    node = numa.cpu_node(cpu)
    return ProcessSnapshot(
        pid=pid,
        name=name,
        owner=owner,
        uid=uid,
        status=status,
        threads=threads,
        vmas=vmas,
        resident=scan.resident,
        nodes=answer.nodes,
        frames_visible=scan.frames_visible,
        numa_maps=numa_maps,
        mems_allowed=mems,
        cpus_allowed=cpus,
        last_cpu=cpu,
        last_cpu_node=node,
        node_source=answer.source,
        asked_move_pages=answer.asked_move_pages,
        huge_index=scan.huge_index,
        huge_pfn=scan.huge_pfn,
        huge_shift=scan.huge_shift,
        elapsed_s={
            "process": round(t1 - t0, 6),
            "maps_pagemap": round(t2 - t1, 6),
            "page_nodes": round(t3 - t2, 6),
            # on its own thread, beside maps_pagemap and page_nodes (not after them)
            "numa_maps_status": round(side_s, 6),
        },
    )
