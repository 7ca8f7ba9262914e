"""The ``ptreloc`` command line: one module per command, registered here.

Contract (README "Command line"): every command takes ``--json`` (then stdout carries only JSON);
human output goes through rich; errors are one line on stderr; exit codes come from
``ptreloc.errors``.
"""

from __future__ import annotations

import importlib

import click

from ptreloc import __version__

__all__ = ["main"]

# command name -> module defining a click command called ``command``.  Keep in help order.
COMMANDS: dict[str, str] = {
    "nodes": "ptreloc.cli.nodes",
    "doctor": "ptreloc.cli.doctor",
    "show": "ptreloc.cli.show",
    "migrate": "ptreloc.cli.migrate",
    "watch": "ptreloc.cli.watch",
    "bench": "ptreloc.cli.bench",
    "stress": "ptreloc.cli.stress",
}


class _Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        module = COMMANDS.get(name)
        if module is None:
            return None
        return importlib.import_module(module).command


@click.group(
    cls=_Group,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="ptreloc")
def main() -> None:
    """Study, validate and measure NUMA page-table relocation.

    `migratepages` moves a process's data between NUMA nodes but leaves its page tables
    behind, so every TLB miss afterwards walks remote memory.  ptreloc mirrors a process's
    address space into emulated page tables that live in real NUMA memory, moves the real
    data with migrate_pages(2), relocates the tables, and measures what that costs.

    Exit codes: 0 success, 1 operational error, 2 usage error, 3 partial result (--strict).
    """
