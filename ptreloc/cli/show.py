"""``ptreloc show``: where a process's data and (mirrored) page tables are, per node."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.table import Table

from ptreloc import placement as placement_mod
from ptreloc import proc
from ptreloc.cli._common import emit_json, guarded, json_option, stderr_console, stdout_console
from ptreloc.mirror import ProgressCallback

__all__ = ["command", "progress_bar", "data_table", "tables_table"]

MIB = 1 << 20


@contextmanager
def progress_bar(enabled: bool, what: str) -> Iterator[ProgressCallback | None]:
    """A rich progress bar on stderr when ``enabled`` and stderr is a terminal; else None."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import Progress

    with Progress(console=stderr_console, transient=True) as bar:
        task = bar.add_task(what, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def data_table(title: str, columns: dict[str, dict[str, int]], page_size: int) -> Table:
    """numastat-like: one row per node, pages and MB for each column (a source of counts)."""
    table = Table(title=title, title_justify="left")
    table.add_column("node", justify="right")
    nodes = sorted({int(n) for counts in columns.values() for n in counts})
    for name in columns:
        table.add_column(f"{name} pages", justify="right")
        table.add_column(f"{name} MB", justify="right")
    for node in nodes:
        row = [str(node)]
        for counts in columns.values():
            pages = counts.get(str(node), 0)
            row += [str(pages), f"{pages * page_size / MIB:.1f}"]
        table.add_row(*row)
    total = ["total"]
    for counts in columns.values():
        pages = sum(counts.values())
        total += [str(pages), f"{pages * page_size / MIB:.1f}"]
    table.add_row(*total, style="bold")
    return table


def tables_table(
    title: str, tables: dict[str, dict[str, int]], levels: list[str], virtual: set[int]
) -> Table:
    """Mirrored table frames: one row per node, one column per level (root last)."""
    table = Table(title=title, title_justify="left")
    table.add_column("node", justify="right")
    for name in levels:
        table.add_column(name, justify="right")
    table.add_column("total", justify="right")
    for node, counts in sorted(tables.items(), key=lambda kv: int(kv[0])):
        label = f"{node} (virtual)" if int(node) in virtual else str(node)
        table.add_row(label, *(str(counts.get(n, 0)) for n in levels), str(sum(counts.values())))
    return table


def _data_source(d: dict[str, Any]) -> str:
    """Where the per-page nodes came from, for the data table's title."""
    if d["node_source"] == "frames":
        asked = d["asked_move_pages"]
        return ("each page's node from its frame" +
                (f", move_pages for {_count(asked, 'page')}" if asked else ""))
    return "move_pages query of every page"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def show_data(pid: int, progress: bool) -> dict[str, Any]:
    """Snapshot and mirror ``pid``; everything ``ptreloc show`` reports, as JSON-able data."""
    snap = proc.snapshot(pid)
    with progress_bar(progress, f"mirroring pid {pid}") as update:
        m, where = placement_mod.mirror_measured(snap, progress=update)
    with m:
        fraction = m.remote_fraction()
        tables = {str(node): levels for node, levels in m.tables().items() if any(levels.values())}
        return {
            "pid": snap.pid,
            "name": snap.name,
            "owner": snap.owner,
            "threads": snap.threads,
            "geometry": m.geometry.name,
            "levels": [lv.name for lv in m.geometry.levels],
            "virtual_nodes": list(m.arena.virtual_nodes),
            "page_size": snap.page_size,
            "resident_pages": len(snap.resident),
            "data": {
                "pages": {str(k): v for k, v in snap.node_pages().items()},
                "mb": {
                    str(k): round(v * snap.page_size / MIB, 3) for k, v in snap.node_pages().items()
                },
                "numa_maps_pages": {str(k): v for k, v in sorted(snap.numa_maps.items())},
                "unplaced_pages": snap.unplaced_pages(),
                # where the per-page nodes came from: "frames" (frame number -> memory block
                # -> node, move_pages asked about the rest) or "move_pages" (every page asked)
                "node_source": snap.node_source,
                "asked_move_pages": snap.asked_move_pages,
            },
            "tables": tables,
            "placement": where.to_json(),
            "remote_table_fraction": round(fraction.fraction, 6),
            "remote_table_fraction_detail": fraction.to_json(),
            "mems_allowed": sorted(snap.mems_allowed),
            "cpus_allowed": sorted(snap.cpus_allowed),
            "last_cpu": snap.last_cpu,
            "last_cpu_node": snap.last_cpu_node,
            "mirror_map_calls": m.runs,
            "thp": m.thp.to_json(),
            "elapsed_s": {**snap.elapsed_s, **m.elapsed_s},
        }


@click.command("show")
@click.option("--pid", type=int, required=True, help="The process to look at.")
@json_option
@guarded
def command(pid: int, as_json: bool) -> None:
    """Show where a process's data pages are per node (numastat-like, pages and MB) and where
    its page tables are, mirrored into emulated tables in the host's paging format.

    Where the real tables are is measured when it can be: as root on a kernel with
    /proc/kcore, kallsyms and BTF, the process's own tables are walked and every mirrored table
    is put on the node of the real one (placement.source "kernel").  Otherwise the nodes are
    inferred (placement.source "inferred", or "cgroup" when the process's cgroup gives per-node
    totals; placement.reason says why it was not measured): the root (allocated at exec, with
    the stack) on the node of most of the process's [stack] pages, else of most of its
    anonymous pages; every other table on the node holding most of the anonymous pages it maps,
    or with the root when it maps none; ties: the lowest node.  An inference the kernel's own
    per-node PageTables counter rules out is reported in placement.contradictions.
    remote_table_fraction is the fraction of resident pages whose translation walks at least
    one table on another node than the page.  PTRELOC_PLACEMENT=inferred skips the walk.

    Exit codes: 1 no such process / a zombie / another user's process without privilege,
    2 a kernel thread or a pid that is not a positive number.
    """
    data = show_data(pid, progress=not as_json)
    if as_json:
        emit_json(data)
        return
    out = stdout_console
    out.print(
        f"pid {data['pid']} ({data['name']}, {data['owner']}, "
        f"{_count(data['threads'], 'thread')}): "
        f"{data['resident_pages']} resident pages; Mems_allowed "
        f"{','.join(map(str, data['mems_allowed']))}; last ran on CPU {data['last_cpu']} "
        f"(node {data['last_cpu_node']})",
        markup=False,
    )
    out.print(
        data_table(
            f"data ({_data_source(data['data'])}; numa_maps is the kernel's own count)",
            {"data": data["data"]["pages"], "numa_maps": data["data"]["numa_maps_pages"]},
            data["page_size"],
        )
    )
    where = data["placement"]
    source = ("measured: the kernel's own tables, walked" if where["source"] == "kernel"
              else f"{where['source']}: {where.get('reason')}")
    out.print(
        tables_table(
            f"mirrored page tables ({data['geometry']}), frames per level - {source}",
            data["tables"],
            data["levels"],
            set(data["virtual_nodes"]),
        )
    )
    detail = data["remote_table_fraction_detail"]
    levels = ", ".join(f"{k} {v:.3f}" for k, v in detail["by_level"].items())
    label = "measured" if where["source"] == "kernel" else f"inferred ({where.get('reason')})"
    out.print(
        f"remote_table_fraction: {data['remote_table_fraction']:.3f} {label} "
        f"({detail['remote_pages']} of {detail['pages']} pages walk a remote table; "
        f"by level: {levels})",
        markup=False,
    )
    for line in where["contradictions"]:
        stderr_console.print(f"ptreloc: warning: {line}", markup=False, highlight=False)
    thp = data["thp"]
    if thp["huge_leaves"]:
        out.print(
            f"transparent huge pages: {_count(thp['huge_leaves'], 'block')} of "
            f"{thp['huge_leaf_bytes'] >> 20} MiB mirrored as huge leaves (no PTE table; found "
            f"by {thp['detected_by']})",
            markup=False,
        )
    if data["virtual_nodes"]:
        out.print(
            f"nodes {','.join(map(str, data['virtual_nodes']))} are virtual (no such real node "
            "here): their tables live in ordinary memory",
            markup=False,
        )
