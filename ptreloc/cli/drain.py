"""``ptreloc drain``: move every process's data and page tables off a node (hot-remove prep)."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from ptreloc import drain as drain_mod
from ptreloc.cli._common import (
    emit_json,
    fail,
    guarded,
    json_option,
    stderr_console,
    stdout_console,
)
from ptreloc.errors import EXIT_PARTIAL

__all__ = ["command"]


@click.command("drain", epilog="""\b
Examples:
  ptreloc drain --node 1 --dry-run
  ptreloc drain --node 1
  ptreloc drain --node 1 --offline --json | jq '.offline'
  echo online > /sys/devices/system/memory/memory6/state   # bring a block back
\b
Exit codes: 0 done (what could not move is reported), 1 not root / operational error,
2 usage error (a node that does not exist, is offline or has no memory, or the only node with
memory), 3 with --strict when a process was not moved, a moved one left data or tables on the
node, or (with --offline) a block stayed online.""")
@click.option("--node", type=click.IntRange(min=0), required=True, metavar="N",
              help="The node to empty.")
@click.option("--offline", "do_offline", is_flag=True,
              help="Then offline the node's memory blocks for real (echo offline > "
              "/sys/devices/system/memory/memoryM/state) and report each block's result.")
@click.option("--dry-run", is_flag=True, help="Say what would move; change nothing.")
@click.option("--force", is_flag=True,
              help="Move the tables of processes with io_uring/AIO in flight too (see "
              "'ptreloc migrate --help').")
@click.option("--offline-timeout", type=click.FloatRange(min=1), default=120,
              show_default=True, metavar="S",
              help="Give up on a block that has not gone offline after S seconds.")
@click.option("--strict", is_flag=True, help="Exit 3 when anything was left behind.")
@json_option
@guarded
def command(node: int, do_offline: bool, dry_run: bool, force: bool, offline_timeout: float,
            strict: bool, as_json: bool) -> None:
    """Empty node N for memory hot-remove: for every process with data or page tables on it,
    move its data (migrate_pages) and its kernel page tables (ptrace-injected set_mempolicy +
    mremap, as 'migrate --kernel-tables') to the nearest other node its cpuset allows; skip
    with a reason what cannot move (kernel threads; processes whose Mems_allowed is only N).
    Then report per memory block of N whether it is free of page tables and what else pins it
    (the census), and with --offline offline the blocks for real (root)."""
    drain_mod.validate(node)
    say = (lambda msg: stderr_console.print(msg, markup=False)) if not as_json else None
    report = drain_mod.drain(node, offline=do_offline, dry_run=dry_run, force=force,
                             offline_timeout=offline_timeout, progress=say)
    data = report.to_json()
    if as_json:
        emit_json(data)
    else:
        _print(data)
    if strict:
        problems = _problems(data)
        if problems:
            fail(f"partial result (--strict): {'; '.join(problems)}", EXIT_PARTIAL)


def _problems(data: dict[str, Any]) -> list[str]:
    out = []
    if data["not_moved"]:
        out.append(f"{data['not_moved']} process(es) not moved")
    left = data["left_behind"] or {}
    if left.get("data_pages") or left.get("table_frames"):
        out.append(f"{left['data_pages']} data pages and {left['table_frames']} table frames "
                   "left on the node")
    if data["offline"] is not None:
        stayed = [str(b["block"]) for b in data["offline"] if not b["ok"]]
        if stayed:
            out.append(f"memory block(s) {', '.join(stayed)} stayed online")
    return out


def _print(data: dict[str, Any]) -> None:
    out = stdout_console
    verb = "would drain" if data["dry_run"] else "drained"
    out.print(f"{verb} node {data['node']} (kernel walk: {data['kernel_walk']})", markup=False)
    t = Table(title="processes with data or page tables on the node")
    for col in ("pid", "name", "Mems_allowed", "data pages", "table frames", "target",
                "action", "left after", "note"):
        t.add_column(col)
    for p in data["processes"]:
        tables = "?" if p["tables_before"] is None else str(sum(p["tables_before"].values()))
        left = ""
        if p["action"] == "move":
            ta = "?" if p["tables_after"] is None else str(sum(p["tables_after"].values()))
            left = f"{p['data_pages_after']} pages, {ta} tables"
        note = p["reason"] or p["policy_warning"] or ""
        t.add_row(str(p["pid"]), p["name"], ",".join(map(str, p["mems_allowed"])),
                  str(p["data_pages_before"]), tables,
                  "" if p["target"] is None else str(p["target"]), p["action"], left, note)
    out.print(t)
    out.print(f"kernel threads skipped: {data['kernel_threads_skipped']} "
              f"({data['kernel_threads_reason']})", markup=False)
    me = data["self"] or {}
    if me.get("tables_on_node"):
        out.print(f"ptreloc itself (pid {me['pid']}) keeps {sum(me['tables_on_node'].values())}"
                  f" table frames on the node until it exits", markup=False)
    t = Table(title=f"memory blocks of node {data['node']}")
    for col in ("block", "state", "page-table pages", "free of page tables", "pinned by",
                "pinned pageblocks", "page-table-only pageblocks", "tables of pids"):
        t.add_column(col)
    for b in data["blocks"]:
        t.add_row(f"memory{b['block']}", b["state"], str(b["pagetable_pages"]),
                  "yes" if b["free_of_pagetables"] else "no", ", ".join(b["pinned_by"]) or "-",
                  str(b["pinned_pageblocks"]), str(b["pagetable_only_pageblocks"]),
                  ", ".join(map(str, b["table_owners"])))
    out.print(t)
    if data["offline"] is not None:
        t = Table(title="offlining")
        for col in ("block", "before", "result", "after", "seconds"):
            t.add_column(col)
        for b in data["offline"]:
            t.add_row(f"memory{b['block']}", b["state_before"],
                      "offline" if b["ok"] else f"failed: {b['error']}", b["state_after"],
                      f"{b['seconds']:.2f}")
        out.print(t)
