"""``ptreloc nodes``: the NUMA topology, like ``numactl --hardware``."""

from __future__ import annotations

from typing import TypedDict

import click
from rich.table import Table

from ptreloc import numa
from ptreloc.cli._common import emit_json, guarded, json_option, stdout_console
from ptreloc.errors import PtrelocError


class _ProcessNodes(TypedDict):
    """--pid: the process's allowed nodes and resident pages per node (by node, as a string)."""

    pid: int
    mems_allowed: list[int]
    pages: dict[str, int]

__all__ = ["command"]


def _page_tables_kb(node: int) -> tuple[int | None, int | None]:
    """(PageTables, SecPageTables) kB of an online node; (None, None) where the kernel has no
    per-node meminfo (CONFIG_NUMA=n: topology() then reports one node 0)."""
    try:
        return numa.node_page_tables_kb(node)
    except PtrelocError:
        return None, None


@click.command("nodes", epilog="""\b
Examples:
  ptreloc nodes
  ptreloc nodes --nodes 0-1 --json
  ptreloc nodes --pid "$(pgrep -n myapp)"   # plus that process's pages per node""")
@click.option(
    "--nodes",
    "node_list",
    metavar="LIST",
    help="Only these nodes, in numactl syntax: 0, 1,3, 0-3,5, all, !1.",
)
@click.option(
    "--pid",
    type=int,
    help="Also show this process's allowed nodes (Mems_allowed) and its resident pages per node.",
)
@json_option
@guarded
def command(node_list: str | None, pid: int | None, as_json: bool) -> None:
    """Show the NUMA nodes: online and possible, CPUs, memory and distances.

    Read from /sys/devices/system/node, the same source as `numactl --hardware`.
    Memory is in MiB (numactl's "MB").  Per node also the kernel's page-table counters from
    nodeN/meminfo, as `numastat -m` shows them: PageTables (every process's page tables in
    that node's memory) and SecPageTables (KVM/IOMMU secondary tables; "n/a", JSON null, on
    kernels before 6.0 that do not count them).  JSON per node: page_tables_kb,
    sec_page_tables_kb.  Exit codes: 0 success; 1 for a --pid that does not
    exist (or cannot be read); 2 for a bad option, a malformed or offline node in --nodes, or
    a --pid that is not a positive number.
    """
    topo = numa.topology()
    ordered = sorted(topo.nodes)
    if node_list is not None:
        ordered = sorted(numa.parse_nodes(node_list, topo))
    page_tables = {node: _page_tables_kb(node) for node in ordered}
    process: _ProcessNodes | None = None
    if pid is not None:
        # both reads before any output, so a bad pid prints nothing but the error
        process = {
            "pid": pid,
            "mems_allowed": sorted(numa.process_mems_allowed(pid)),
            "pages": {str(k): v for k, v in sorted(numa.numa_maps_node_pages(pid).items())},
        }
    if as_json:
        data = topo.to_json()
        data["nodes"] = [
            {
                **topo.nodes[n].to_json(),
                "page_tables_kb": page_tables[n][0],
                "sec_page_tables_kb": page_tables[n][1],
            }
            for n in ordered
        ]
        if process is not None:
            data["process"] = process
        emit_json(data)
        return
    stdout_console.print(
        f"available: {len(topo.online)} node{'' if len(topo.online) == 1 else 's'} "
        f"({numa.format_nodes(topo.online)}); nodes possible: "
        f"{numa.format_nodes(topo.possible)}; nodes with memory: "
        f"{numa.format_nodes(topo.with_memory) or 'none'}"
    )
    table = Table()
    table.add_column("node", justify="right")
    table.add_column("cpus")
    table.add_column("size MB", justify="right")
    table.add_column("free MB", justify="right")
    table.add_column("PageTables kB", justify="right")
    table.add_column("SecPageTables kB", justify="right")
    for node in ordered:
        info = topo.nodes[node]
        pt, sec = page_tables[node]
        table.add_row(
            str(node),
            numa.format_nodes(info.cpus) or "-",
            str(info.memory_total >> 20),
            str(info.memory_free >> 20),
            "n/a" if pt is None else str(pt),
            "n/a" if sec is None else str(sec),
        )
    stdout_console.print(table)
    stdout_console.print("node distances:")
    distances = Table()
    distances.add_column("node", justify="right")
    for node in ordered:
        distances.add_column(str(node), justify="right")
    for node in ordered:
        row = topo.nodes[node].distances
        distances.add_row(str(node), *(str(row.get(other, "-")) for other in ordered))
    stdout_console.print(distances)
    if process is not None:
        pages = process["pages"]
        stdout_console.print(
            f"pid {pid}: Mems_allowed {numa.format_nodes(process['mems_allowed'])}; "
            "resident pages per node (numa_maps): "
            + (", ".join(f"node {n}: {c}" for n, c in pages.items()) or "none"),
            markup=False,
        )
