"""``ptreloc nodes``: the NUMA topology, like ``numactl --hardware``."""

from __future__ import annotations

import click
from rich.table import Table

from ptreloc import numa
from ptreloc.cli._common import emit_json, guarded, json_option, stdout_console

__all__ = ["command"]


@click.command("nodes")
@json_option
@guarded
def command(as_json: bool) -> None:
    """Show the NUMA nodes: online and possible, CPUs, memory and distances.

    Read from /sys/devices/system/node, the same source as `numactl --hardware`.
    Memory is in MiB (numactl's "MB").
    """
    topo = numa.topology()
    if as_json:
        emit_json(topo.to_json())
        return
    ordered = sorted(topo.nodes)
    stdout_console.print(
        f"available: {len(topo.online)} nodes ({numa.format_nodes(topo.online)}), "
        f"possible: {numa.format_nodes(topo.possible)}, "
        f"with memory: {numa.format_nodes(topo.with_memory) or 'none'}"
    )
    table = Table()
    table.add_column("node", justify="right")
    table.add_column("cpus")
    table.add_column("size MB", justify="right")
    table.add_column("free MB", justify="right")
    for node in ordered:
        info = topo.nodes[node]
        table.add_row(
            str(node),
            numa.format_nodes(info.cpus) or "-",
            str(info.memory_total >> 20),
            str(info.memory_free >> 20),
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
