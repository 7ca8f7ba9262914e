"""Prepare a NUMA node for memory hot-remove: move every process's data AND page tables off it.

The RFC's hot-remove motive: "memory hotplug cannot move page tables out of the memory that is
about to be removed".  Offlining a memory block (echo offline > .../memoryM/state) migrates its
movable pages itself, but a page table is unmovable: one table left in a block keeps the whole
block online.  ``drain(node)``:

1. finds every user process with data (``/proc/PID/numa_maps``) or page tables (the kernel
   walk, ``ptreloc.kernel_tables``) on ``node``;
2. picks its target: the nearest (SLIT distance) other node with memory in its Mems_allowed;
   a process whose cpuset allows only ``node`` is skipped, its Mems_allowed reported;
3. moves its data with migrate_pages(2) and its page tables with
   ``kernel_move.move_kernel_tables`` (ptrace-injected set_mempolicy + mremap round trips);
4. verifies: the data left on the node (numa_maps) and the tables left (the walk);
5. with ``offline=True`` offlines each block of the node for real, right after the moves (the
   emptied pageblocks are still of the unmovable type and draw the next kernel allocations -
   a slab page there pins the block again - so no time is lost), the blocks the walks found
   the tables in first, most tables first, and reports the kernel's answer;
6. reports per memory block of the node what still pins it (``ptreloc.census``).

Kernel threads have no user memory or page tables: they are counted, not moved (their own
allocations show up in the census as slab/kernel memory).  ptreloc itself is not moved by
ptrace (it cannot trace itself): it first restricts its CPUs to the other nodes so that what it
allocates during the drain lands there, moves its own data with migrate_pages, and reports the
page tables it leaves.  ``dry_run=True`` reads everything and changes nothing.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ptreloc import census as census_mod
from ptreloc import kernel_move, numa
from ptreloc import kernel_tables as kt
from ptreloc.errors import AccessDenied, InvalidNode, PtrelocError, UsageError

__all__ = ["DrainTarget", "ProcessDrain", "DrainReport", "validate", "drain",
           "offline_block", "online_block", "OFFLINE_TIMEOUT_S"]

MEMORY_DIR = "/sys/devices/system/memory"
OFFLINE_TIMEOUT_S = 120.0

Progress = Callable[[str], None]


@dataclass(frozen=True)
class DrainTarget:
    node: int
    others: frozenset[int]  # online nodes with memory other than ``node``
    topology: numa.Topology


def validate(node: int) -> DrainTarget:
    """Usage errors (exit 2) first, then privilege (exit 1); nothing is read beyond sysfs."""
    if isinstance(node, bool) or not isinstance(node, int) or node < 0:
        raise UsageError(f"--node must be a node number, not {node!r}")
    topo = numa.topology()
    if node not in topo.possible and node not in topo.online:
        raise InvalidNode(f"node {node} does not exist (nodes here: "
                          f"{numa.format_nodes(topo.possible | topo.online)})")
    if node not in topo.online:
        raise InvalidNode(f"node {node} is offline (online nodes: "
                          f"{numa.format_nodes(topo.online)}): there is nothing to drain")
    if node not in topo.with_memory:
        raise UsageError(f"node {node} has no memory: there is nothing to drain")
    others = (topo.online & topo.with_memory) - {node}
    if not others:
        raise UsageError(f"node {node} is the only node with memory: its processes have "
                         "nowhere to go (drain needs a second node with memory)")
    if os.geteuid() != 0:
        raise AccessDenied("ptreloc drain needs root: it moves other users' pages "
                           "(CAP_SYS_NICE), ptraces them (CAP_SYS_PTRACE) and reads "
                           "/proc/kcore and /proc/kpageflags; run it as root")
    return DrainTarget(node, frozenset(others), topo)


@dataclass
class ProcessDrain:
    pid: int
    name: str
    mems_allowed: list[int]
    data_pages_before: int
    tables_before: dict[str, int] | None  # level -> frames on the node (None: no walk)
    target: int | None = None
    action: str = "skip"  # "move", "would_move", "skip", "failed"
    reason: str | None = None
    data_not_migrated: int | None = None
    data_pages_after: int | None = None
    tables_after: dict[str, int] | None = None
    tables_pause_ms: float | None = None
    policy_warning: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class DrainReport:
    node: int
    dry_run: bool
    walk: str | None  # why the kernel walk is unavailable (None: it is used)
    processes: list[ProcessDrain] = field(default_factory=list)
    kernel_threads: int = 0
    self_report: dict[str, Any] | None = None
    blocks: list[dict[str, Any]] = field(default_factory=list)
    offline: list[dict[str, Any]] | None = None
    census: dict[str, Any] | None = None
    seconds: float = 0.0

    @property
    def moved(self) -> list[ProcessDrain]:
        return [p for p in self.processes if p.action == "move"]

    @property
    def not_moved(self) -> list[ProcessDrain]:
        return [p for p in self.processes if p.action in ("skip", "failed")]

    def left_behind(self) -> dict[str, int]:
        """Data pages and table frames the moved processes still have on the node."""
        data = sum(p.data_pages_after or 0 for p in self.moved)
        tables = sum(sum((p.tables_after or {}).values()) for p in self.moved)
        return {"data_pages": data, "table_frames": tables}

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "dry_run": self.dry_run,
            "kernel_walk": "used" if self.walk is None else f"unavailable: {self.walk}",
            "processes": [p.to_json() for p in self.processes],
            "moved": len(self.moved),
            "not_moved": len(self.not_moved),
            "kernel_threads_skipped": self.kernel_threads,
            "kernel_threads_reason": "kernel threads have no user memory or page tables; "
                                     "their allocations are in the census as slab/kernel",
            "self": self.self_report,
            "left_behind": None if self.dry_run else self.left_behind(),
            "blocks": self.blocks,
            "offline": self.offline,
            "census": self.census,
            "seconds": round(self.seconds, 3),
        }


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _status(pid: int) -> dict[str, str]:
    out = {}
    with open(f"/proc/{pid}/status", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def _tables_on(pid: int, node: int, blocks: Counter[int] | None = None,
               block_frames: int = 0) -> dict[str, int]:
    """The process's table frames on ``node`` per level; with ``blocks`` (and the frames per
    memory block), also counts them per block - the blocks the drain then offlines first."""
    walk = kt.walk_process(pid)
    if blocks is not None and block_frames:
        blocks.update(t.pfn // block_frames for t in walk.tables if t.node == node)
    return dict(walk.tables_per_node().get(node, {}))


def _policy_warning(pid: int, node: int) -> str | None:
    """numa_maps policies that name only ``node``: migrate_pages moves the pages, but the
    process's next allocations there land on the node again."""
    bound = set()
    try:
        with open(f"/proc/{pid}/numa_maps", encoding="ascii", errors="replace") as fh:
            lines = fh.readlines()
    except OSError:
        lines = []
    for line in lines:
        fields = line.split(maxsplit=2)
        if len(fields) >= 2:
            mode, _, nodes = fields[1].partition(":")
            if mode in ("bind", "prefer", "preferred_many") and nodes:
                try:
                    named = numa.parse_list(nodes.split("=")[0])
                except PtrelocError:
                    continue
                if named == {node}:
                    bound.add(fields[1])
    if bound:
        return (f"memory policy {', '.join(sorted(bound))} names only node {node}: its pages "
                f"and tables move, but what it allocates next goes back to node {node}")
    return None


def _target(allowed: frozenset[int], t: DrainTarget) -> int | None:
    choices = sorted(allowed & t.others)
    if not choices:
        return None
    here = t.topology.nodes[t.node].distances
    return min(choices, key=lambda n: (here.get(n, 255), n))


def _protect_self(t: DrainTarget, dry_run: bool) -> dict[str, Any]:
    """ptreloc's own process: run on the other nodes' CPUs from now on and move its data."""
    me = os.getpid()
    out: dict[str, Any] = {"pid": me, "data_pages_on_node": None, "tables_on_node": None}
    with contextlib.suppress(PtrelocError):
        out["data_pages_on_node"] = numa.numa_maps_node_pages(me).get(t.node, 0)
    if not dry_run:
        cpus: set[int] = set()
        for n in t.others:
            cpus |= t.topology.nodes[n].cpus
        if cpus:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, cpus)
        target = min(t.others)
        with contextlib.suppress(PtrelocError):
            numa.migrate_pages(0, frozenset({t.node}), frozenset({target}))
        with contextlib.suppress(PtrelocError):
            out["data_pages_on_node_after"] = numa.numa_maps_node_pages(me).get(t.node, 0)
    with contextlib.suppress(PtrelocError):
        out["tables_on_node"] = _tables_on(me, t.node)
    out["note"] = ("ptreloc cannot ptrace itself: its page tables stay where they are until "
                   "it exits")
    return out


def _pids() -> list[int]:
    return sorted(int(p) for p in os.listdir("/proc") if p.isdigit())


def block_state(index: int) -> str:
    try:
        return Path(MEMORY_DIR, f"memory{index}", "state").read_text().strip()
    except OSError:
        return "unknown"


def _write_state(index: int, state: str, timeout: float) -> tuple[bool, str | None]:
    """Write ``state`` to memoryM/state in a child process, so that a kernel that keeps
    retrying a migration can be stopped: the child is SIGKILLed at ``timeout`` and
    offline_pages() gives up on the fatal signal (-EINTR)."""
    path = os.path.join(MEMORY_DIR, f"memory{index}", "state")
    try:
        r = subprocess.run(["/bin/sh", "-c", f'echo {state} > "$1"', "sh", path],
                           capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return False, f"no answer within {timeout:.0f} s (the write was killed)"
    if r.returncode == 0:
        return True, None
    msg = (r.stderr or r.stdout).strip().splitlines()
    text = msg[-1] if msg else f"exit status {r.returncode}"
    # sh says "sh: 1: echo: echo: I/O error" or "...: write error: Device or resource busy"
    return False, text.rsplit(": ", 1)[-1]


def offline_block(index: int, timeout: float = OFFLINE_TIMEOUT_S, retries: int = 1
                  ) -> dict[str, Any]:
    """Offline memory block ``index`` for real (``retries`` more tries after a refusal); the
    kernel's answer and the state after."""
    before = block_state(index)
    t0 = time.perf_counter()
    attempts = 0
    while True:
        attempts += 1
        ok, error = _write_state(index, "offline", timeout)
        if ok or attempts > retries or (error or "").startswith("no answer"):
            break
        # a failed attempt has drained the per-cpu free lists and LRU caches: pages that
        # were only in flight then no longer count against the block
        time.sleep(0.5)
    after = block_state(index)
    return {"block": index, "state_before": before, "ok": ok and after == "offline",
            "error": error, "state_after": after, "attempts": attempts,
            "seconds": round(time.perf_counter() - t0, 3)}


def online_block(index: int, timeout: float = OFFLINE_TIMEOUT_S) -> dict[str, Any]:
    ok, error = _write_state(index, "online", timeout)
    return {"block": index, "ok": ok and block_state(index) == "online", "error": error}


# --------------------------------------------------------------------------------------------
# the drain
# --------------------------------------------------------------------------------------------


def drain(
    node: int,
    *,
    offline: bool = False,
    dry_run: bool = False,
    force: bool = False,
    offline_timeout: float = OFFLINE_TIMEOUT_S,
    progress: Progress | None = None,
) -> DrainReport:
    """Move every process's data and page tables off ``node`` (see the module doc)."""
    t = validate(node)
    say = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    ok, why = kt.availability()
    report = DrainReport(node, dry_run, None if ok else why)
    report.self_report = _protect_self(t, dry_run)
    me = os.getpid()
    held_tables: Counter[int] = Counter()  # memory block -> table frames the walks found there
    try:
        block_frames = census_mod.block_size_bytes() // census_mod.PAGE_SIZE
    except census_mod.CensusUnavailable:
        block_frames = 0  # no memory-block layout: the offline order is the blocks' own
    to_move: list[ProcessDrain] = []
    for pid in _pids():
        if pid == me:
            continue
        try:
            st = _status(pid)
        except OSError:
            continue  # gone
        if "VmPTE" not in st:  # kernel threads (and zombies) have no mm
            if not st.get("State", "").startswith(("Z", "X")):
                report.kernel_threads += 1
            continue
        name = st.get("Name", "?")
        walk_error = None
        try:
            data = numa.numa_maps_node_pages(pid).get(node, 0)
            allowed = numa.process_mems_allowed(pid)
            tables: dict[str, int] | None = None
            if report.walk is None:
                try:
                    tables = _tables_on(pid, node, held_tables, block_frames)
                except kt.ProcessGone:
                    continue
                except kt.KernelTablesError as err:
                    walk_error = str(err)
        except (PtrelocError, OSError):
            continue  # exited while we looked
        if not data and not tables and walk_error is None:
            continue  # nothing on the node (or, without the walk, no data there)
        p = ProcessDrain(pid, name, sorted(allowed), data, tables)
        if walk_error:
            p.reason = f"its tables could not be walked ({walk_error}): moved blind"
        report.processes.append(p)
        p.target = _target(allowed, t)
        if p.target is None:
            p.reason = (f"bound to node {node} by its cpuset (Mems_allowed: "
                        f"{numa.format_nodes(allowed)}): it may not use another node")
            continue
        p.policy_warning = _policy_warning(pid, node)
        if dry_run:
            p.action = "would_move"
            continue
        to_move.append(p)
    # the processes with the most tables on the node last: their emptied blocks then wait the
    # least for the offline (above)
    for p in sorted(to_move, key=lambda p: sum((p.tables_before or {}).values())):
        say(f"pid {p.pid} ({p.name}): node {node} -> {p.target}")
        _move(p, node, force)
    if not dry_run:
        time.sleep(0.2)  # old tables are freed after an RCU grace period
    if offline and not dry_run:
        # at once: a drained block's now-empty pageblocks are still of the unmovable type, so
        # the next kernel allocations on the node are drawn to them - every second of census
        # in between is a chance for a slab page to pin the block again
        # and the blocks the tables left first, most tables first: those are the pageblocks
        # just emptied (a block that held none was as pinnable before the drain as after)
        report.offline = []
        blocks = sorted(census_mod.memory_blocks(node),
                        key=lambda b: (-held_tables[b.index], b.index))
        for blk in blocks:
            if blk.state != "online":
                report.offline.append({"block": blk.index, "state_before": blk.state,
                                       "ok": blk.state == "offline", "error": None,
                                       "state_after": blk.state, "seconds": 0.0})
                continue
            say(f"offlining memory{blk.index}")
            report.offline.append(offline_block(blk.index, offline_timeout))
    if not dry_run:
        for p in report.moved:
            with contextlib.suppress(PtrelocError):
                p.data_pages_after = numa.numa_maps_node_pages(p.pid).get(node, 0)
            if report.walk is None:
                with contextlib.suppress(PtrelocError):
                    p.tables_after = _tables_on(p.pid, node)
    say(f"census of node {node}")
    c = census_mod.take_census([node], by_process=report.walk is None)
    report.census = c.to_json()
    report.blocks = _block_summary(report.census, node)
    report.seconds = time.perf_counter() - t0
    return report


def _move(p: ProcessDrain, node: int, force: bool) -> None:
    assert p.target is not None
    try:
        if p.data_pages_before:
            p.data_not_migrated = numa.migrate_pages(p.pid, frozenset({node}),
                                                     frozenset({p.target}))
        if p.tables_before is None or p.tables_before:
            r = kernel_move.move_kernel_tables(p.pid, p.target, walk=False)
            p.tables_pause_ms = round(r.pause_ms, 2)
        p.action = "move"
    except kernel_move.MoveInterrupted:
        raise
    except (kernel_move.KernelMoveError, PtrelocError) as err:
        p.action = "failed"
        p.reason = str(err)


def _block_summary(census: dict[str, Any], node: int) -> list[dict[str, Any]]:
    out = []
    owners: dict[str, list[int]] = {}
    for proc in census.get("by_process") or []:
        for blk in proc["blocks"]:
            owners.setdefault(blk, []).append(proc["pid"])
    for b in census["per_node"][str(node)]["blocks"]:
        pt = b["pages"]["pagetable"] + b["pages"]["pagetable_unmarked"]
        out.append({
            "block": b["block"],
            "state": b["state"],
            "pagetable_pages": pt,
            "free_of_pagetables": pt == 0,
            "pinned_by": b["pinned_by"],
            "pinned_pageblocks": b["pageblocks"]["pinned"],
            "pagetable_only_pageblocks": b["pagetable_only_pageblocks"],
            "unmovable_pages": {k: b["pages"][k] for k in census_mod.UNMOVABLE},
            "table_owners": owners.get(str(b["block"]), []),
        })
    return out
