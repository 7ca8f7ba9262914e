"""Move a live process's own page tables to a NUMA node, on a stock kernel (x86-64, root).

``move_kernel_tables(pid, node)`` stops every thread of the process (the ptrace injector,
csrc/inject.c), and in one of its threads: saves its memory policy and binds it to ``node``
(page tables are allocated under the *calling* task's policy), mremaps every eligible VMA to a
free address at a shift that cannot reuse its tables and back to its exact original address
(all away, then all back, so an upper-level table whose whole range was vacated is freed and
allocated afresh on ``node``), restores the policy and resumes.  Data pages do not move: mremap
moves page-table *entries*, the frames they point to stay.  docs/PROTOCOL.md ("The kernel's own
tables: moved on a stock kernel") gives the kernel-side argument (accessed/dirty bits, TLB).

Shifts (mm/mremap.c move_page_tables()):

* base-page VMAs go to an address congruent to the original + 4 KiB modulo 2 MiB: no extent is
  ever a whole PMD, so move_normal_pmd() (which moves a PTE table by pointer) never applies and
  move_ptes() copies every entry into PTE tables allocated for the destination, then back into
  fresh ones at the original address;
* VMAs holding transparent huge pages (AnonHugePages/FilePmdMapped/ShmemPmdMapped > 0) go to a
  2 MiB-congruent address that is *not* 1 GiB-congruent: a huge PMD leaf then moves as a leaf
  (move_huge_pmd(); a 4 KiB shift would split it), into PMD tables allocated fresh when the
  destination's 1 GiB had none, while move_normal_pud() (1 GiB-congruent shifts) cannot reuse
  the PMD table.  The cost: the deposited PTE table of each THP travels with it (it is not
  reallocated), and a PTE table covering a whole 2 MiB of base pages inside such a VMA moves by
  pointer - both stay where they were;
* upper tables (PMD, PUD, P4D) are fresh only where every VMA in their range was moved: a table
  shared with a VMA that was skipped ([vdso], [vvar], ...) is never freed.  The pgd never moves
  (allocated at exec, it lives as long as the mm).

The checks after a move (``KernelMoveReport.checks``) hold the kernel to what it did, and only
to that: ``frames_unchanged`` compares every resident page's frame before and after, and puts
a changed frame down to the kernel's own page moves only as far as /proc/vmstat counted them in
the window (khugepaged collapses - the new frame in a huge page - and migrations), since a
stopped process's pages are still the kernel's to collapse and compact; ``tables_on_target``
counts apart the one table the 2 MiB shift keeps by design (above).

Every skipped VMA has a reason; io_uring/AIO in flight refuses the process unless ``force``.
The process is stopped for the whole move (``pause_ms``); SIGINT/SIGTERM to us are held while
it is, then honoured (``MoveInterrupted``).  A VMA that cannot be moved back is retried; if it
still fails the process is left SIGSTOPped and ``MoveBackFailed`` says where its memory is.

If ptreloc itself is SIGKILLed (or crashes) at any point, every thread is left correct: the
other threads of a multi-threaded process are parked in the trampoline for the whole move (the
injector's ``move_batch()`` parks them; the detach brings them back), so the kernel releasing
them while VMAs are away finds them waiting on a gate the injected thread opens once every VMA
is back (docs/PROTOCOL.md).  Left open: the three bootstrap calls at the process's own
``syscall`` instruction (microseconds), and a failed move back (the process stays stopped).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ptreloc import _native, frames
from ptreloc import kernel_tables as kt
from ptreloc.errors import AccessDenied, NoSuchProcess, PtrelocError, SyscallError, UsageError

__all__ = [
    "KernelMoveError",
    "TracedByOther",
    "PtraceForbidden",
    "SharedAddressSpace",
    "IoInFlight",
    "MapCountExhausted",
    "MoveBackFailed",
    "ProcessExited",
    "MoveInterrupted",
    "SmapsVma",
    "Check",
    "KernelMoveReport",
    "read_smaps",
    "skip_reason",
    "preflight",
    "move_kernel_tables",
]

PAGE = 4096
PMD_SPAN = 2 << 20
HUGE_PAGES = PMD_SPAN // PAGE  # base pages in one PMD-mapped huge page
PUD_SPAN = 1 << 30
P4D_SPAN = 1 << 39  # one 4-level pgd / 5-level p4d entry
MPOL_BIND = 2
MREMAP_MAYMOVE_FIXED = 3
PROT_NONE = 0
MAP_PRIVATE_ANON_NORESERVE = 0x02 | 0x20 | 0x4000
MAP_FIXED_NOREPLACE = 0x100000
USER_TOP = 1 << 47
YAMA = "/proc/sys/kernel/yama/ptrace_scope"
MAX_MAP_COUNT = "/proc/sys/vm/max_map_count"
NODE_DIR = "/sys/devices/system/node"
CAP_SYS_PTRACE = 19
SETTLE_S = 2.0
#: share of the walk's moved table bytes the target node's PageTables must show (_pagetables_check)
NODE_COUNTER_SHARE = 0.5
MOVE_BACK_RETRIES = 3

# smaps VmFlags (proc(5), fs/proc/task_mmu.c show_smap_vma_flags) that make a VMA ineligible
_FLAG_REASONS = {
    "io": "VM_IO mapping (device memory): mremap must not move it",
    "pf": "VM_PFNMAP mapping (raw frames, no struct page)",
    "mm": "VM_MIXEDMAP mapping",
    "ht": "hugetlb mapping (its tables are hugetlb's, possibly shared between processes)",
    "um": "registered with userfaultfd (missing mode): a moved range would lose its registration",
    "uw": "registered with userfaultfd (write-protect mode)",
    "ui": "registered with userfaultfd (minor mode)",
    "sl": "sealed (mseal): mremap is refused",
    "ss": "shadow stack",
}
_SPECIAL_OK = ("[heap]", "[stack]")


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------


class KernelMoveError(PtrelocError):
    """Moving the kernel's tables failed; ``pid`` and ``vma`` ((start, end) or None) say where."""

    def __init__(self, message: str, *, pid: int | None = None,
                 vma: tuple[int, int] | None = None) -> None:
        super().__init__(message)
        self.pid = pid
        self.vma = vma


class TracedByOther(KernelMoveError, AccessDenied):
    """The process already has a tracer (strace, gdb): ptrace allows one."""


class PtraceForbidden(KernelMoveError, AccessDenied):
    """Yama's ptrace_scope (or missing CAP_SYS_PTRACE) forbids attaching."""


class SharedAddressSpace(KernelMoveError):
    """Another process shares the mm (CLONE_VM without CLONE_THREAD): it would keep running."""


class IoInFlight(KernelMoveError):
    """io_uring or AIO may be using the process's buffers; refused unless force."""


class MapCountExhausted(KernelMoveError):
    """Not enough vm.max_map_count headroom to move even one VMA safely."""


class MoveBackFailed(KernelMoveError):
    """A VMA could not be put back; the process was left SIGSTOPped.  ``where`` is the address
    its memory is at now."""

    def __init__(self, message: str, *, pid: int, vma: tuple[int, int], where: int) -> None:
        super().__init__(message, pid=pid, vma=vma)
        self.where = where


class ProcessExited(KernelMoveError, NoSuchProcess):
    """The process exited before or during the move."""


class MoveInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM arrived during the move: it was finished safely first; ``report`` holds it."""

    def __init__(self, signum: int, report: KernelMoveReport) -> None:
        super().__init__(f"interrupted by signal {signum} (the process was restored first)")
        self.signum = signum
        self.report = report


# --------------------------------------------------------------------------------------------
# smaps
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SmapsVma:
    start: int
    end: int
    perms: str
    offset: int
    path: str
    rss_kb: int
    swap_kb: int
    huge_kb: int  # AnonHugePages + ShmemPmdMapped + FilePmdMapped
    anon_huge_kb: int
    flags: frozenset[str]

    @property
    def length(self) -> int:
        return self.end - self.start

    def key(self) -> tuple[int, int, str, int, str]:
        return (self.start, self.end, self.perms, self.offset, self.path)

    def describe(self) -> dict[str, Any]:
        return {"start": hex(self.start), "end": hex(self.end), "perms": self.perms,
                "path": self.path}


_HEAD = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) ([0-9a-f]+) \S+ \d+\s*(.*)$")


def read_smaps(pid: int) -> list[SmapsVma]:
    """/proc/PID/smaps, one record per VMA."""
    try:
        text = Path(f"/proc/{pid}/smaps").read_text(errors="surrogateescape")
    except FileNotFoundError as err:
        raise ProcessExited(f"process {pid} exited", pid=pid) from err
    except PermissionError as err:
        raise AccessDenied(f"cannot read /proc/{pid}/smaps: run as root") from err
    out: list[SmapsVma] = []
    cur: dict[str, Any] | None = None

    def flush() -> None:
        if cur is not None:
            out.append(SmapsVma(cur["start"], cur["end"], cur["perms"], cur["offset"],
                                cur["path"], cur.get("Rss", 0), cur.get("Swap", 0),
                                cur.get("AnonHugePages", 0) + cur.get("ShmemPmdMapped", 0)
                                + cur.get("FilePmdMapped", 0), cur.get("AnonHugePages", 0),
                                frozenset(cur.get("flags", ()))))

    for line in text.splitlines():
        m = _HEAD.match(line)
        if m:
            flush()
            cur = {"start": int(m.group(1), 16), "end": int(m.group(2), 16),
                   "perms": m.group(3), "offset": int(m.group(4), 16), "path": m.group(5)}
            continue
        if cur is None:
            continue
        if line.startswith("VmFlags:"):
            cur["flags"] = line.split()[1:]
            continue
        name, _, rest = line.partition(":")
        if rest.endswith(" kB"):
            with contextlib.suppress(ValueError):
                cur[name] = int(rest[:-3])
    flush()
    return out


def skip_reason(v: SmapsVma) -> str | None:
    """Why this VMA is not moved, or None if it is eligible."""
    if v.path.startswith("[") and v.path not in _SPECIAL_OK and not v.path.startswith("[anon:"):
        return f"special mapping {v.path}: the kernel owns its placement"
    for flag, reason in _FLAG_REASONS.items():
        if flag in v.flags:
            return reason
    if "[aio]" in v.path or "io_uring" in v.path:
        return "an AIO/io_uring ring: the kernel holds its address"
    # a VMA with nothing mapped is still moved: skipping it would pin the PTE/PMD tables it
    # shares with its neighbours (thread stacks and their guard pages share them)
    return None


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    ok: bool | None  # None: could not be checked here (the reason is in detail)
    detail: str


@dataclass
class KernelMoveReport:
    pid: int
    target_node: int
    moved: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    pause_ms: float = 0.0
    move_ms: float = 0.0  # of the pause: the policy bind, the mremaps and the restore only
    injected_tid: int = 0
    threads: int = 0
    saved_policy: dict[str, Any] | None = None
    before: dict[str, dict[str, int]] | None = None  # node -> level -> frames (kernel walk)
    after: dict[str, dict[str, int]] | None = None
    levels: dict[str, dict[str, int]] = field(default_factory=dict)
    node_pagetables_kb_before: dict[int, int] = field(default_factory=dict)
    node_pagetables_kb_after: dict[int, int] = field(default_factory=dict)
    vmpte_kb: int | None = None
    held_signals: int = 0
    checks: list[Check] = field(default_factory=list)
    walk_unavailable: str | None = None

    @property
    def ok(self) -> bool:
        return all(c.ok is not False for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d


# --------------------------------------------------------------------------------------------
# preflight
# --------------------------------------------------------------------------------------------


def _status(pid: int) -> dict[str, str]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError) as err:
        raise ProcessExited(f"no process with pid {pid}", pid=pid) from err
    return {k: v.strip() for k, _, v in (ln.partition(":") for ln in text.splitlines())}


def _yama_scope() -> int | None:
    try:
        return int(Path(YAMA).read_text())
    except (OSError, ValueError):
        return None


def _has_cap_ptrace() -> bool:
    try:
        caps = int(_status(os.getpid()).get("CapEff", "0"), 16)
    except ValueError:
        return False
    return bool(caps >> CAP_SYS_PTRACE & 1)


def _mm_sharers(pid: int) -> list[int]:
    """Processes other than ``pid`` sharing its mm: same statm, then kcmp(KCMP_VM)."""
    try:
        mine = Path(f"/proc/{pid}/statm").read_text().split()[0]
    except OSError as err:
        raise ProcessExited(f"no process with pid {pid}", pid=pid) from err
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == pid:
            continue
        other = int(entry.name)
        try:
            if Path(f"/proc/{other}/statm").read_text().split()[0] != mine:
                continue
        except (OSError, IndexError):
            continue
        try:
            if _native.kcmp_same_vm(pid, other):
                out.append(other)
        except (NoSuchProcess, AccessDenied, SyscallError):
            continue
    return out


def _io_in_flight(pid: int) -> list[str]:
    found = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(entry.path)
                if "io_uring" in link or "[aio]" in link:
                    found.append(f"fd {entry.name} -> {link}")
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/maps").read_text(errors="replace").splitlines():
            if "[aio]" in line or "io_uring" in line:
                found.append(f"mapping {line.split()[0]} {line.split(maxsplit=5)[-1]}")
    return found


def preflight(pid: int, *, force: bool = False) -> None:
    """Every refusal that can be decided before touching the process; raises or returns."""
    st = _status(pid)
    if st.get("State", "").startswith(("Z", "X")):
        raise ProcessExited(f"process {pid} is a zombie (it has exited)", pid=pid)
    if "VmPTE" not in st:
        raise KernelMoveError(f"pid {pid} is a kernel thread: it has no page tables", pid=pid)
    if int(st.get("Tgid", pid)) != pid:
        raise UsageError(f"{pid} is a thread of process {st.get('Tgid')}: give the process id")
    tracer = int(st.get("TracerPid", "0") or 0)
    if tracer:
        raise TracedByOther(f"process {pid} is already traced by process {tracer} (a debugger "
                            "or strace): detach it first", pid=pid)
    scope = _yama_scope()
    if scope == 3:
        raise PtraceForbidden(f"Yama ptrace_scope is 3 ({YAMA}): no process may be traced "
                              "until reboot", pid=pid)
    if scope == 2 and not _has_cap_ptrace():
        raise PtraceForbidden("Yama ptrace_scope is 2: tracing needs CAP_SYS_PTRACE "
                              "(run as root)", pid=pid)
    if int(st.get("Uid", "0").split()[0]) != os.getuid() and not _has_cap_ptrace():
        raise AccessDenied(f"process {pid} belongs to another user: run as root "
                           "(CAP_SYS_PTRACE)")
    sharers = _mm_sharers(pid)
    if sharers:
        raise SharedAddressSpace(f"process {pid} shares its address space with process(es) "
                                 f"{', '.join(map(str, sharers))} (CLONE_VM): they would keep "
                                 "running while its memory moves", pid=pid)
    io = _io_in_flight(pid)
    if io and not force:
        raise IoInFlight(f"process {pid} uses asynchronous I/O ({'; '.join(io[:3])}): the "
                         "kernel may access its buffers while they are away; --force to "
                         "move anyway", pid=pid)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _node_pagetables_kb() -> dict[int, int]:
    out = {}
    for d in sorted(Path(NODE_DIR).glob("node[0-9]*")):
        with contextlib.suppress(OSError):
            m = re.search(r"PageTables:\s+(\d+) kB", (d / "meminfo").read_text())
            if m:
                out[int(d.name[4:])] = int(m.group(1))
    return out


def _settle(before: dict[int, int], timeout: float = SETTLE_S) -> dict[int, int]:
    """Node PageTables once the RCU-deferred frees of the old tables have happened."""
    deadline = time.monotonic() + timeout
    last = _node_pagetables_kb()
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = _node_pagetables_kb()
        if now != last:
            last, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since >= 0.4:
            break
    return last


def _check_node(node: int) -> None:
    if isinstance(node, bool) or not isinstance(node, int) or node < 0:
        raise UsageError(f"target node must be a node number, not {node!r}")
    meminfo = Path(NODE_DIR) / f"node{node}" / "meminfo"
    if not meminfo.exists():
        raise UsageError(f"node {node} does not exist or is offline")
    m = re.search(r"MemTotal:\s+(\d+) kB", meminfo.read_text())
    if not m or int(m.group(1)) == 0:
        raise UsageError(f"node {node} has no memory: page tables cannot live there")


def _free_slot(vmas: list[SmapsVma], length: int) -> int | None:
    """A 512 GiB-aligned address range (one top-level entry of its own) no VMA touches."""
    used = set()
    for v in vmas:
        for slot in range(v.start // P4D_SPAN, (v.end - 1) // P4D_SPAN + 1):
            used.add(slot)
    need = -(-length // P4D_SPAN)
    for slot in range(USER_TOP // P4D_SPAN - 2, 0, -1):
        if all(s not in used for s in range(slot, slot + need)) and \
                (slot + need) * P4D_SPAN <= USER_TOP:
            return slot * P4D_SPAN
    return None


def _plan(vmas: list[SmapsVma], base: int) -> list[tuple[SmapsVma, int, str]]:
    """(vma, destination, kind) for each, packed from ``base`` with gaps."""
    out = []
    cursor = base + PMD_SPAN
    for v in vmas:
        if v.huge_kb:
            dest = cursor + ((v.start - cursor) % PMD_SPAN)
            if (dest - v.start) % PUD_SPAN == 0:
                dest += PMD_SPAN
            kind = "huge (2 MiB-congruent shift)"
        else:
            dest = cursor + ((v.start + PAGE - cursor) % PMD_SPAN)
            kind = "base (4 KiB shift)"
        out.append((v, dest, kind))
        cursor = dest + v.length + PMD_SPAN
    return out


@contextlib.contextmanager
def _held_signals() -> Iterator[list[int]]:
    """Hold SIGINT/SIGTERM: blocked for this thread, recorded (not raised) by Python's handlers
    in the main thread; yields the list of signals that arrived."""
    arrived: list[int] = []
    sigs = {signal.SIGINT, signal.SIGTERM}
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    old_handlers: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for s in sigs:
            old_handlers[s] = signal.signal(s, lambda signum, frame: arrived.append(signum))
    try:
        yield arrived
    finally:
        pending = signal.sigpending() & sigs
        for s in pending:
            signal.sigtimedwait({s}, 0)  # consume: it is reported, not acted on blindly
            arrived.append(s)
        for s, h in old_handlers.items():
            signal.signal(s, h)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


def _walk(pid: int) -> tuple[kt.KernelTables | None, str | None]:
    try:
        return kt.walk_process(pid), None
    except kt.KernelTablesUnavailable as err:
        return None, str(err)
    except kt.ProcessGone as err:
        raise ProcessExited(str(err), pid=pid) from err


def _per_node(t: kt.KernelTables) -> dict[str, dict[str, int]]:
    return {str(n): dict(v) for n, v in t.tables_per_node().items()}


def _is_err(v: int) -> bool:
    return -4096 < v < 0


# --------------------------------------------------------------------------------------------
# the move
# --------------------------------------------------------------------------------------------


def move_kernel_tables(
    pid: int,
    target_node: int,
    *,
    force: bool = False,
    progress: Callable[[str, dict[str, Any]], None] | None = None,
    walk: bool = True,
) -> KernelMoveReport:
    """Move process ``pid``'s own page tables to ``target_node`` (see the module doc).

    ``progress(stage, info)`` is called at "attached", "moving", "moved", "detached",
    "settled".  ``walk=False`` skips the kernel walks (and the checks that need them).
    Raises the errors of this module; on success the report's ``checks`` say what held."""
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        raise UsageError(f"pid must be a positive number, not {pid!r}")
    _check_node(target_node)

    def tell(stage: str, **info: Any) -> None:
        if progress is not None:
            progress(stage, info)

    preflight(pid, force=force)
    report = KernelMoveReport(pid=pid, target_node=target_node)
    before_walk, why = _walk(pid) if walk else (None, "not requested")
    report.walk_unavailable = why
    if before_walk is not None:
        report.before = _per_node(before_walk)
    report.node_pagetables_kb_before = _node_pagetables_kb()
    try:
        max_maps = int(Path(MAX_MAP_COUNT).read_text())
    except (OSError, ValueError):
        max_maps = 65530

    # pagemap frames before and after, read while the process runs (so they add nothing to
    # the pause).  mremap never changes a frame, but the kernel's own page moves do, stopped
    # process or not: khugepaged's collapses and compaction's migrations; /proc/vmstat counts
    # them in the same window so the check can tell them from a frame the move changed
    moves_before = _vmstat_moves()
    pagemap_before = _pagemap(pid, read_smaps(pid))
    moved: list[tuple[SmapsVma, int, str]] = []
    leave_stopped: MoveBackFailed | None = None
    with _held_signals() as arrived:
        t0 = time.perf_counter()
        try:
            inj = _native.Injector(pid)
        except NoSuchProcess as err:
            raise ProcessExited(f"process {pid} exited: {err}", pid=pid) from err
        except AccessDenied as err:
            raise PtraceForbidden(f"cannot trace process {pid}: {err}", pid=pid) from err
        try:
            info = inj.info()
            report.injected_tid, report.threads = info["tid"], info["nthreads"]
            tell("attached", **info)
            scratch = (info["scratch"], info["scratch"] + info["scratch_len"])
            vmas = [v for v in read_smaps(pid) if v.end <= scratch[0] or v.start >= scratch[1]]
            maps_before = [v.key() for v in vmas]
            eligible = []
            for v in vmas:
                reason = skip_reason(v)
                if reason:
                    report.skipped.append({**v.describe(), "reason": reason})
                else:
                    eligible.append(v)
            headroom = max_maps - len(vmas) - 8
            if eligible and headroom < 4:
                raise MapCountExhausted(
                    f"process {pid} has {len(vmas)} mappings of vm.max_map_count {max_maps}: "
                    "no headroom to move any (raise /proc/sys/vm/max_map_count)", pid=pid)
            chunk = max(1, min(info["batch_max"], (headroom - 2) // 2))
            t_move = time.perf_counter()
            inj.bind_policy(MPOL_BIND, [target_node])
            saved = inj.saved_policy()
            if saved:
                report.saved_policy = {"mode": saved[0], "nodes": saved[1]}
            tell("moving", vmas=len(eligible))
            for i in range(0, len(eligible), chunk):
                part = eligible[i:i + chunk]
                done, failed = _move_chunk(inj, pid, part, vmas, report)
                moved.extend(done)
                if failed is not None:
                    leave_stopped = failed
                    break
            if leave_stopped is None:
                inj.restore_policy()
                report.move_ms = (time.perf_counter() - t_move) * 1000
                from ptreloc import proc

                maps_after = [(m.start, m.end, m.perms, m.offset, m.path)
                              for m in proc.read_maps(pid)
                              if m.end <= scratch[0] or m.start >= scratch[1]]
                report.checks.append(_maps_check(maps_before, maps_after))
            tell("moved", moved=len(moved))
        except BaseException as err:
            with contextlib.suppress(PtrelocError):
                inj.detach(leave_stopped=leave_stopped is not None)
            report.pause_ms = (time.perf_counter() - t0) * 1000
            if isinstance(err, NoSuchProcess) and not isinstance(err, ProcessExited):
                raise ProcessExited(f"process {pid} exited during the move: {err}",
                                    pid=pid) from err
            raise
        try:
            report.held_signals = inj.info()["held_signals"]
            inj.detach(leave_stopped=leave_stopped is not None)
        except NoSuchProcess as err:
            raise ProcessExited(f"process {pid} exited during the move: {err}", pid=pid) from err
        report.pause_ms = (time.perf_counter() - t0) * 1000
    tell("detached", pause_ms=report.pause_ms)
    if leave_stopped is not None:
        raise leave_stopped
    pagemap_after = _pagemap(pid, read_smaps(pid))
    report.checks.append(_pagemap_check(pagemap_before, pagemap_after,
                                        _moves_between(moves_before, _vmstat_moves()),
                                        _new_frame_flags(pagemap_before, pagemap_after)))
    report.moved = [{**v.describe(), "dest": hex(d), "kind": k} for v, d, k in moved]

    report.node_pagetables_kb_after = _settle(report.node_pagetables_kb_before)
    tell("settled", node_pagetables_kb=report.node_pagetables_kb_after)
    with contextlib.suppress(OSError, KeyError, ValueError):
        report.vmpte_kb = int(_status(pid)["VmPTE"].split()[0])
    after_walk, _ = _walk(pid) if walk and before_walk is not None else (None, None)
    if after_walk is not None and before_walk is not None:  # (after_walk implies before_walk)
        report.after = _per_node(after_walk)
        report.levels = _levels(before_walk, after_walk, target_node)
        report.checks.append(_target_check(after_walk, [(v, k) for v, _, k in moved], pid,
                                           target_node, before_walk))
        report.checks.append(_pagetables_check(report, before_walk, after_walk))
    else:
        report.checks.append(Check("tables_on_target", None,
                                   f"kernel walk unavailable: {report.walk_unavailable}"))
    alive = Path(f"/proc/{pid}").exists() and \
        not _status(pid).get("State", "Z").startswith(("Z", "X"))
    report.checks.append(Check("alive", alive, "running" if alive else "the process is gone"))
    if arrived:
        raise MoveInterrupted(arrived[0], report)
    return report


def _move_chunk(inj: _native.Injector, pid: int, part: list[SmapsVma], all_vmas: list[SmapsVma],
                report: KernelMoveReport
                ) -> tuple[list[tuple[SmapsVma, int, str]], MoveBackFailed | None]:
    span = sum(v.length + 3 * PMD_SPAN for v in part) + PMD_SPAN
    span = -(-span // PMD_SPAN) * PMD_SPAN
    base = _free_slot(all_vmas, span)
    res = _native.INJECT_NR
    reserved = -errno.EEXIST
    if base is not None:
        reserved = inj.syscall(res["mmap"], base, span, PROT_NONE,
                               MAP_PRIVATE_ANON_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0)
    if _is_err(reserved) or (base is not None and reserved != base):
        if not _is_err(reserved):
            inj.syscall(res["munmap"], reserved, span)
        reserved = inj.syscall(res["mmap"], 0, span, PROT_NONE, MAP_PRIVATE_ANON_NORESERVE, -1, 0)
        if _is_err(reserved):
            raise SyscallError(f"reserving {span >> 20} MiB in process {pid} failed: "
                               f"{os.strerror(-reserved)}", -reserved)
    plan = _plan(part, reserved)
    results = inj.move_batch([(v.start, v.length, d) for v, d, _ in plan])
    done = []
    failed: MoveBackFailed | None = None
    for (v, dest, kind), (away, back, retry) in zip(plan, results, strict=True):
        if _is_err(away):
            report.skipped.append({**v.describe(), "reason": f"mremap away failed: "
                                   f"{os.strerror(-away)}"})
            continue
        if back == v.start or retry == v.start:
            done.append((v, dest, kind))
            continue
        # still away: the trampoline retried once with the saved policy; retry from here too
        ok = False
        for attempt in range(MOVE_BACK_RETRIES):
            time.sleep(0.01 * (attempt + 1))
            r = inj.syscall(res["mremap"], dest, v.length, v.length, MREMAP_MAYMOVE_FIXED, v.start)
            if r == v.start:
                ok = True
                break
        if ok:
            done.append((v, dest, kind))
            continue
        failed = MoveBackFailed(
            f"process {pid}: the VMA {v.start:#x}-{v.end:#x} ({v.path or 'anonymous'}) could not "
            f"be moved back (mremap: {os.strerror(-back if _is_err(back) else errno.EIO)}); its "
            f"memory is at {dest:#x}-{dest + v.length:#x}; the process was left stopped (SIGSTOP)",
            pid=pid, vma=(v.start, v.end), where=dest)
        break
    if failed is None:
        inj.syscall(res["munmap"], reserved, span)
    return done, failed


def _pagemap(pid: int, vmas: list[SmapsVma]) -> dict[int, int] | None:
    from ptreloc import proc

    try:
        # only what smaps says is resident: a sparse reservation (a JIT heap, ASan's terabytes
        # of shadow) would otherwise cost a pagemap read of 8 bytes per page of its size
        maps = [proc.Vma(v.start, v.end, v.perms, v.offset, "0:0", 0, v.path)
                for v in vmas if v.rss_kb]
        addresses, pfns = proc.read_pagemap(pid, maps)
    except PtrelocError:
        return None
    return dict(zip(addresses, pfns, strict=True))


#: one mapping as _maps_check compares it: (start, end, perms, offset, path)
_MapKey = tuple[int, int, str, int, str]


def _maps_check(before: list[_MapKey], after: list[_MapKey]) -> Check:
    if before == after:
        return Check("maps_unchanged", True, f"{len(before)} mappings: same ranges, "
                     "permissions, offsets and files")
    b, a = set(before), set(after)
    return Check("maps_unchanged", False,
                 f"{len(b - a)} mappings changed or merged, {len(a - b)} new or split: "
                 f"e.g. {sorted(b - a)[:2]} -> {sorted(a - b)[:2]}")


#: /proc/vmstat events (mm/vmstat.c) that give a mapped page a new frame without its process:
#: a khugepaged collapse copies up to a huge page's worth of pages into one new huge page;
#: a migration (compaction, NUMA balancing, another process's migrate_pages) counts pages
_VMSTAT_MOVES = ("thp_collapse_alloc", "pgmigrate_success")


def _vmstat_moves() -> dict[str, int] | None:
    try:
        text = Path("/proc/vmstat").read_text()
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in _VMSTAT_MOVES:
            out[name] = int(value)
    return out


def _moves_between(before: dict[str, int] | None, after: dict[str, int] | None
                   ) -> dict[str, int] | None:
    if before is None or after is None:
        return None
    return {k: after.get(k, 0) - before.get(k, 0) for k in _VMSTAT_MOVES}


def _new_frame_flags(before: dict[int, int] | None, after: dict[int, int] | None
                     ) -> dict[int, int] | None:
    """kpageflags of the frames that changed (None when unreadable or nothing changed)."""
    if before is None or after is None:
        return None
    changed = {after[va] for va, pfn in before.items() if va in after and after[va] != pfn}
    return frames.kpageflags(sorted(changed)) if changed else None


def _pagemap_check(before: dict[int, int] | None, after: dict[int, int] | None,
                   moves: dict[str, int] | None = None,
                   flags: dict[int, int] | None = None) -> Check:
    """Every page resident before is resident after on the same frame.

    A frame that changed is put down to the kernel, not the move, only as far as /proc/vmstat
    counted the kernel's own page moves in the window (``moves``): pages now in a huge page
    (``flags``: kpageflags of the new frames) up to ``HUGE_PAGES`` per khugepaged collapse,
    then the rest up to the migrations.  What is left over fails the check."""
    if before is None or after is None:
        return Check("frames_unchanged", None, "pagemap unreadable")
    if not any(before.values()):
        return Check("frames_unchanged", None, "pagemap frame numbers hidden (not root)")
    changed = [after[va] for va, pfn in before.items() if va in after and after[va] != pfn]
    lost = sum(1 for va in before if va not in after)
    moves = moves or {}
    flags = flags or {}
    into_huge = sum(1 for pfn in changed if flags.get(pfn, 0) >> frames.KPF_THP & 1)
    collapsed = min(into_huge, moves.get("thp_collapse_alloc", 0) * HUGE_PAGES)
    migrated = min(len(changed) - collapsed, max(0, moves.get("pgmigrate_success", 0)))
    unexplained = len(changed) - collapsed - migrated
    ok = unexplained == 0 and lost == 0
    detail = (f"{len(before)} resident pages: {len(changed)} changed frame, {lost} no longer "
              f"resident, {len(after) - len(before) + lost} new")
    if changed:
        detail += (f"; of the changed, {collapsed} now in huge pages khugepaged collapsed "
                   f"(thp_collapse_alloc +{moves.get('thp_collapse_alloc', 0)}), {migrated} "
                   f"within the kernel's own migrations in the window (pgmigrate_success "
                   f"+{moves.get('pgmigrate_success', 0)}), {unexplained} by nothing the kernel "
                   "counted")
    return Check("frames_unchanged", ok, detail)


def _levels(before: kt.KernelTables, after: kt.KernelTables, node: int
            ) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for tag, t in (("before", before), ("after", after)):
        for f in t.tables:
            lv = out.setdefault(f.level, {"before_on_target": 0, "before_total": 0,
                                          "after_on_target": 0, "after_total": 0})
            lv[f"{tag}_total"] += 1
            lv[f"{tag}_on_target"] += f.node == node
    old = {(f.level, f.pfn) for f in before.tables}
    for f in after.tables:
        out[f.level]["fresh"] = out[f.level].get("fresh", 0) + ((f.level, f.pfn) not in old)
    return out


def _target_check(after: kt.KernelTables, moved: list[tuple[SmapsVma, str]], pid: int,
                  node: int, before: kt.KernelTables | None = None) -> Check:
    """Non-root tables covering only moved VMAs must be on the target node.

    Excepted, and counted: a PTE table that the walk ``before`` found at the same frame and
    address inside a VMA moved with the 2 MiB-congruent shift - a whole PMD's worth of base
    pages there (a huge page split by a partial unmap or a migration that found no huge page
    on the target) moves by pointer, the one table such a shift cannot give a fresh frame
    (module doc)."""
    vmas = [v for v in read_smaps(pid)]
    moved_keys = {(v.start, v.end) for v, _ in moved}
    huge = sorted((v.start, v.end) for v, kind in moved if kind.startswith("huge"))
    old_pte = {(f.start, f.pfn) for f in before.tables if f.level == "pte"} if before else set()
    others = [(v.start, v.end) for v in vmas if (v.start, v.end) not in moved_keys]
    mranges = sorted(moved_keys)
    root = after.tables[0].level if after.tables else "pgd"
    expected = on = 0
    stray: list[str] = []
    shared = by_pointer = 0
    for f in after.tables:
        if f.level == root:
            continue
        if not any(s < f.end and f.start < e for s, e in mranges):
            continue
        if any(s < f.end and f.start < e for s, e in others):
            shared += 1
            continue
        if f.node != node and (f.start, f.pfn) in old_pte and \
                any(s <= f.start and f.end <= e for s, e in huge):
            by_pointer += 1
            continue
        expected += 1
        if f.node == node:
            on += 1
        elif len(stray) < 4:
            stray.append(f"{f.level}@{f.start:#x} on node {f.node}")
    ok = expected == on
    detail = (f"{on}/{expected} non-root tables covering only moved VMAs are on node {node}; "
              f"{shared} shared with VMAs that were not moved stay where they are")
    if by_pointer:
        detail += (f"; {by_pointer} PTE tables of whole 2 MiB of base pages in a huge-page VMA "
                   "moved by pointer (the 2 MiB shift keeps them)")
    if stray:
        detail += f"; not moved: {', '.join(stray)}"
    return Check("tables_on_target", ok, detail)


def _pagetables_check(report: KernelMoveReport, before: kt.KernelTables,
                      after: kt.KernelTables) -> Check:
    """The target's PageTables rose by about what the walk says moved there (accounted levels)."""
    levels = after.accounted_levels() or ("pte", "pmd")
    node = report.target_node

    def on(t: kt.KernelTables) -> int:
        return sum(4 for f in t.tables if f.level in levels and f.node == node)

    expected_kb = on(after) - on(before)
    got_kb = (report.node_pagetables_kb_after.get(node, 0)
              - report.node_pagetables_kb_before.get(node, 0))
    if expected_kb <= 0:
        return Check("node_pagetables", None,
                     f"nothing moved to node {node} by the walk's count ({levels})")
    # the counter is the node's, not the process's: any other task's tables allocated or freed
    # on that node in the window count too (a guest run came out at 0.73 for 32 of 120 kB,
    # 8 tables short, while a 16 MiB THP workload moved), so half is what is asked: a move
    # that moved nothing comes out near 0
    ok = got_kb >= NODE_COUNTER_SHARE * expected_kb
    drop = {n: report.node_pagetables_kb_before.get(n, 0) - kb
            for n, kb in report.node_pagetables_kb_after.items() if n != node}
    return Check("node_pagetables", ok,
                 f"node {node} PageTables +{got_kb} kB for {expected_kb} kB of tables the walk "
                 f"found moved there; other nodes: "
                 + ", ".join(f"node {n} {-d:+d} kB" for n, d in sorted(drop.items())))
