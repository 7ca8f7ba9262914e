"""Follow a live process: when its data or its CPU moves node, relocate its mirrored tables.

``watch(pid, ...)`` mirrors the process once (:mod:`ptreloc.mirror`), then every ``interval``
seconds asks the kernel where the mirrored pages are now (move_pages query) and which node its
threads last ran on (/proc/PID/task/*/stat, the node most threads are on).  Whatever moved them -
automatic NUMA balancing, an administrator's ``migratepages``, a cpuset change - an event is
produced and the tables follow:

* ``data_moved``: some pages changed node.  Each table goes to the node that now holds most of
  the pages under it, file pages included (:func:`ptreloc.mirror.infer_placement` with
  ``follow_data``; ``follow="data"`` or ``"auto"``).
* ``pages_changed``: pages became resident or went away (the heap grew, a region was unmapped):
  the mirror follows them (:meth:`~ptreloc.mirror.Mirror.refresh`, a pagemap read per look;
  new tables are placed by the mirror's rule).  Not counted by ``count``.
* ``cpu_moved``: the threads' node changed and the data did not.  With ``follow="cpu"`` or
  ``"auto"`` every table goes to the CPU's node (a page walk is done by the CPU; this is the
  placement Mitosis argues for when data is spread).  ``follow="data"`` only reports it.

The watch ends when the process exits, on
Ctrl-C, after ``count`` relocation events or after ``timeout`` seconds.
"""

from __future__ import annotations

import time
from array import array
from collections import Counter
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import psutil

from ptreloc import numa, proc
from ptreloc.errors import NoSuchProcess, UsageError
from ptreloc.migrate import (  # the same JSON shapes as migrate's report
    STRATEGIES,
    mirror_tables_json,
    pages_per_node,
    relocate_mirror,
)
from ptreloc.mirror import Mirror, infer_placement
from ptreloc.placement import mirror_measured
from ptreloc.relocate import DEFAULT_BATCH, check_batch

__all__ = ["FOLLOW", "WatchEvent", "Watcher", "watch", "threads_node"]

FOLLOW = ("auto", "data", "cpu")


@dataclass
class WatchEvent:
    event: str  # start, pages_changed, data_moved, cpu_moved, exit, stop
    pid: int
    time_s: float  # seconds since the watch started
    data: dict[str, int]  # node -> pages (of the mirrored pages)
    cpu_node: int | None
    tables: dict[str, dict[str, int]]  # node -> level -> frames, after any relocation
    remote_table_fraction: float
    pages_moved: int = 0
    tables_relocated: int = 0
    bytes_copied: int = 0
    target: str | None = None  # where tables were sent: a node, or "per table: ..."
    remote_table_fraction_before: float | None = None
    reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = {
            "event": self.event,
            "pid": self.pid,
            "time_s": round(self.time_s, 3),
            "data": self.data,
            "cpu_node": self.cpu_node,
            "tables": self.tables,
            "remote_table_fraction": round(self.remote_table_fraction, 6),
        }
        if self.event in ("data_moved", "cpu_moved"):
            out.update(
                pages_moved=self.pages_moved,
                tables_relocated=self.tables_relocated,
                bytes_copied=self.bytes_copied,
                target=self.target,
                remote_table_fraction_before=round(self.remote_table_fraction_before or 0.0, 6),
            )
        if self.reason:
            out["reason"] = self.reason
        out.update(self.extra)
        return out


def threads_node(pid: int) -> int | None:
    """The node most of the process's threads last ran on (ties: the lowest node)."""
    topo = numa.topology()
    nodes: Counter[int] = Counter()
    try:
        tids = psutil.Process(pid).threads()
    except psutil.Error:
        tids = []
    for t in tids:
        try:
            with open(f"/proc/{pid}/task/{t.id}/stat", encoding="utf-8", errors="replace") as fh:
                text = fh.read()
        except OSError:
            continue  # the thread exited meanwhile
        cpu = int(text[text.rindex(")") + 2 :].split()[39 - 3])
        node = topo.node_of_cpu(cpu)
        if node is not None:
            nodes[node] += 1
    if not nodes:
        return None
    return min(nodes, key=lambda n: (-nodes[n], n))


def _follow_data(m: Mirror, nodes: array[int]) -> tuple[Callable[..., int], str]:
    """A chooser sending each table to the node holding most of the pages it maps now (the
    root: most of all pages; ptreloc.mirror.infer_placement with follow_data), and a label:
    the node when that is one node for every table, else "per table: most of its data"."""
    placement = infer_placement(m.snapshot, m.geometry, nodes, follow_data=True)

    def choose(frame: Any) -> int:
        # the engine's chooser hook gets a ptreloc.relocate.TableFrame
        return placement.node_of(frame.level, frame.base_va)

    used = {placement.root}
    for per_table in placement.levels:
        used.update(per_table.values())
    label = str(used.pop()) if len(used) == 1 else "per table: most of its data"
    return choose, label


def _relocate_to(
    m: Mirror, target: int | Callable[..., int], strategy: str, batch: int
) -> tuple[int, int]:
    """Relocate every table not already where ``target`` wants it; (tables moved, bytes)."""
    sources = frozenset(n.node for n in m.arena.nodes)
    if isinstance(target, int):
        sources = sources - {target}
    if not sources:
        return 0, 0
    report = relocate_mirror(m, sources, target, strategy=strategy, batch=batch)
    return report.relocated, report.bytes_copied


def _check_watch_args(interval: object, count: object, timeout: object, follow: object,
                      strategy: object, batch: object) -> None:
    if (
        not isinstance(interval, int | float)
        or isinstance(interval, bool)
        or not 0 < interval <= 3600
    ):
        raise UsageError(f"interval must be more than 0 and at most 3600 seconds, not {interval!r}")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise UsageError(f"count must be a positive number of events, not {count!r}")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)
                                or not 0 < timeout <= 10**7):
        raise UsageError(f"timeout must be a positive number of seconds, not {timeout!r}")
    if follow not in FOLLOW:
        raise UsageError(f"unknown follow mode {follow!r}: use {', '.join(FOLLOW)}")
    if strategy not in STRATEGIES:
        raise UsageError(f"unknown strategy {strategy!r}: use {' or '.join(STRATEGIES)}")
    check_batch(batch)


class Watcher:
    """One watch of a process: :meth:`start` mirrors it and gives the ``start`` event; every
    :meth:`step` looks once (where the pages are, where the threads run) and gives that look's
    events - none when nothing changed, ``pages_changed`` and/or one relocation event
    (``data_moved`` / ``cpu_moved``, the tables following as ``follow`` says), or ``exit``
    (then :attr:`exited`).  Pacing (interval, count, timeout) is the caller's: :func:`watch`.
    A context manager: the mirror is freed on exit."""

    def __init__(self, pid: int, *, follow: str = "auto", strategy: str = "rewalk",
                 batch: int = DEFAULT_BATCH, clock: Callable[[], float] = time.monotonic) -> None:
        self.pid = proc.check_pid(pid)
        self.follow, self.strategy, self.batch = follow, strategy, batch
        self.clock = clock
        self.t0 = clock()
        self.exited = False
        self.m: Mirror | None = None
        self.nodes = array("i")
        self.cpu_node: int | None = None

    # ---- lifetime ---------------------------------------------------------------------------
    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.m is not None:
            self.m.close()
            self.m = None

    @property
    def mirror(self) -> Mirror:
        if self.m is None:
            raise UsageError("the watch has not started (or was closed): call start() first")
        return self.m

    # ---- events -----------------------------------------------------------------------------
    def event(self, kind: str, data_nodes: array[int], at: float | None = None,
              **detail: Any) -> WatchEvent:
        """An event reporting ``data_nodes`` (node per mirrored page), the threads' node as it
        stands and the mirror's tables as they are now; ``at`` defaults to the time elapsed."""
        m = self.mirror
        return WatchEvent(
            kind,
            self.pid,
            self.clock() - self.t0 if at is None else at,
            pages_per_node(data_nodes),
            self.cpu_node,
            mirror_tables_json(m.tables()),
            m.remote_fraction(data_nodes).fraction,
            **detail,
        )

    def start(self) -> WatchEvent:
        snap = proc.snapshot(self.pid)
        self.m, where = mirror_measured(snap)
        self.nodes = array("i", snap.nodes)
        self.cpu_node = threads_node(self.pid)
        return self.event(
            "start",
            self.nodes,
            at=0.0,
            extra={
                "resident_pages": len(snap.resident),
                "placement": where.to_json(),
                "geometry": self.m.geometry.name,
                "virtual_nodes": list(self.m.arena.virtual_nodes),
            },
        )

    def stop(self, reason: str) -> WatchEvent:
        return self.event("stop", self.nodes, reason=reason)

    def step(self) -> list[WatchEvent]:
        """Look once; the events of this look (see the class doc)."""
        m, pid = self.mirror, self.pid
        try:
            if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                raise NoSuchProcess(f"pid {pid} exited", pid=pid)
            added, removed = m.refresh()
            snap = m.snapshot
            now = m.current_nodes()
            new_cpu = threads_node(pid)
        except (NoSuchProcess, psutil.NoSuchProcess):
            self.exited = True
            return [self.event("exit", self.nodes, reason="the process exited")]
        out = []
        if added or removed:
            # the pages just mirrored were placed by their current node: not moves
            self.nodes = array("i", m.data_nodes)
            out.append(self.event(
                "pages_changed",
                self.nodes,
                extra={
                    "pages_added": added,
                    "pages_removed": removed,
                    "resident_pages": len(snap.resident),
                    "huge_leaves": len(m.thp.starts),
                },
            ))
        moved_event = self._moved(now, new_cpu)
        if moved_event is not None:
            out.append(moved_event)
        return out

    def _moved(self, now: array[int], new_cpu: int | None) -> WatchEvent | None:
        """Compare this look with the last; relocate as ``follow`` says; the event or None."""
        m, nodes = self.mirror, self.nodes
        # a page the kernel cannot place this look (mid-migration, -ENOENT/-EBUSY) keeps
        # its last known node: when it lands on its new node at a later look, that is a
        # move (counted from unknown to known it was silently taken, and its tables never
        # followed - the watch ended with remote_table_fraction 0.2 after migratepages); a
        # page that vanished (-ENOENT/-EFAULT now) is not a move.  One pass in C
        # (ptr_nodes_carry): two Python passes were ~50 ms each per look at 1 GiB
        from ptreloc._native import core

        now, moved = core("relo").nodes_carry(nodes, now)
        kind = None
        if moved:
            kind = "data_moved"
        elif new_cpu is not None and new_cpu != self.cpu_node:
            kind = "cpu_moved"
        if kind is None:
            self.nodes = now
            m.update_data_nodes(now)
            return None
        before = m.remote_fraction(now).fraction
        target: int | Callable[..., int] | None
        label: str | None
        if kind == "data_moved" and self.follow in ("auto", "data"):
            target, label = _follow_data(m, now)
        elif kind == "cpu_moved" and self.follow in ("auto", "cpu") and new_cpu is not None:
            target, label = new_cpu, str(new_cpu)
        else:
            target, label = None, None
        relocated = copied = 0
        if target is not None:
            relocated, copied = _relocate_to(m, target, self.strategy, self.batch)
        self.nodes = now
        m.update_data_nodes(now)
        self.cpu_node = new_cpu
        return self.event(
            kind,
            now,
            pages_moved=moved,
            tables_relocated=relocated,
            bytes_copied=copied,
            target=label,
            remote_table_fraction_before=before,
        )


def watch(
    pid: int,
    *,
    interval: float = 1.0,
    count: int | None = None,
    timeout: float | None = None,
    follow: str = "auto",
    strategy: str = "rewalk",
    batch: int = DEFAULT_BATCH,
) -> Generator[WatchEvent, None, None]:
    """Yield events while following ``pid`` (see the module doc).  The first event is
    ``start``; the last is ``exit`` (the process ended), or ``stop`` (count/timeout reached, or
    the consumer closed the generator, e.g. on Ctrl-C)."""
    _check_watch_args(interval, count, timeout, follow, strategy, batch)
    clock = time.monotonic
    with Watcher(pid, follow=follow, strategy=strategy, batch=batch, clock=clock) as w:
        yield w.start()
        t0 = w.t0
        relocations = 0
        while True:
            if timeout is not None and clock() - t0 >= timeout:
                yield w.stop("timeout")
                return
            time.sleep(
                interval if timeout is None else max(0.0, min(interval, t0 + timeout - clock()))
            )
            for ev in w.step():
                yield ev
                if ev.event in ("data_moved", "cpu_moved"):
                    relocations += 1
            if w.exited:
                return
            if count is not None and relocations >= count:
                yield w.stop("count")
                return
