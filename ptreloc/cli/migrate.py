"""``ptreloc migrate``: move a process's data between nodes and relocate its mirrored tables."""

from __future__ import annotations

from typing import Any

import click

from ptreloc import migrate as migrate_mod
from ptreloc import migrate_retry as retry_mod
from ptreloc.cli._common import emit_json, fail, guarded, json_option, stdout_console
from ptreloc.cli.show import data_table, progress_bar, tables_table
from ptreloc.errors import EXIT_OPERATIONAL, EXIT_PARTIAL
from ptreloc.relocate import DEFAULT_BATCH, MAX_BATCH

__all__ = ["command", "strategy_option", "batch_option", "exit_status"]

# the relocation options ``watch`` takes too
strategy_option = click.option(
    "--strategy",
    type=click.Choice(migrate_mod.STRATEGIES),
    default="rewalk",
    show_default=True,
    help="Table relocation protocol: rewalk (concurrent, the RFC's) or stop (quiesce, reload).",
)
batch_option = click.option(
    "--batch",
    type=click.IntRange(1, MAX_BATCH),
    default=DEFAULT_BATCH,
    show_default=True,
    help="Table frames per relocation batch (one shootdown each).",
)


@click.command("migrate")
@click.option("--pid", type=int, required=True, help="The process to migrate.")
@click.option(
    "--from-node",
    "from_node",
    required=True,
    metavar="NODES",
    help="Source node(s), numactl syntax: 0, 1,3, 0-3, all, !1.",
)
@click.option(
    "--to-node",
    "to_node",
    required=True,
    metavar="NODES",
    help="Target node(s), numactl syntax (with several, each table follows most of its data).",
)
@click.option("--dry-run", is_flag=True, help="Validate, snapshot and predict; move nothing real.")
@click.option(
    "--strict", is_flag=True, help="Exit 3 when any page was not migrated or table not relocated."
)
@strategy_option
@batch_option
@click.option(
    "--in-place",
    is_flag=True,
    help="Allow --from-node equal to --to-node: run the whole path on that node (the kernel "
    "moves nothing; the mirrored tables are copied to fresh frames on the same node).",
)
@click.option(
    "--table-pool-frames",
    "table_pool_frames",
    type=click.IntRange(0, (1 << 32) - 1),
    metavar="N",
    help="Cap the target node's pool of mirrored table frames at N frames (frames in use "
    "count), to see what a partial relocation reports: the tables that do not fit stay behind "
    "and are listed in tables.not_relocated with reasons (no effect with --dry-run).  With "
    "--in-place N caps the fresh frames: at most N tables are copied, the rest stay put.",
)
@click.option(
    "--kernel-tables",
    "kernel_tables",
    is_flag=True,
    help="Also move the process's REAL page tables to the target (one node), on a stock "
    "kernel: every thread is ptrace-stopped, one runs set_mempolicy(MPOL_BIND, target) and "
    "mremaps each eligible VMA away and back, so the kernel copies its entries into fresh "
    "tables on the target; the kernel walk verifies it (root, /proc/kcore).  Opt-in.",
)
@click.option(
    "--tables-only",
    "tables_only",
    is_flag=True,
    help="Move only the real page tables (implies --kernel-tables): no migrate_pages, the "
    "data stays - bring home tables that migratepages or NUMA balancing left behind, or put "
    "them on a remote node on purpose to measure what that costs.",
)
@click.option(
    "--force",
    is_flag=True,
    help="With --kernel-tables: move even when the process has io_uring or AIO in flight (its "
    "buffers' addresses vanish for the move's window).",
)
@click.option(
    "--retries",
    type=click.IntRange(0, retry_mod.MAX_RETRIES),
    default=retry_mod.DEFAULT_RETRIES,
    show_default=True,
    metavar="N",
    help="Retry the pages migrate_pages could not move for now (EBUSY, EAGAIN: pinned, under "
    "I/O, locked) with move_pages, up to N rounds; permanent failures (EFAULT, ENOENT, EACCES "
    "...) are not retried.  What still failed is in data.not_migrated (pages), "
    "data.not_migrated_reasons and data.not_migrated_by_class.  0: leave them, as "
    "migratepages does.",
)
@click.option(
    "--retry-delay",
    "retry_delay",
    type=click.FloatRange(0, 60),
    default=retry_mod.DEFAULT_RETRY_DELAY_S,
    show_default=True,
    metavar="SECONDS",
    help="Wait before the first retry round; each next round waits twice as long.",
)
@json_option
@guarded
def command(
    pid: int,
    from_node: str,
    to_node: str,
    dry_run: bool,
    strict: bool,
    strategy: str,
    batch: int,
    in_place: bool,
    table_pool_frames: int | None,
    kernel_tables: bool,
    tables_only: bool,
    force: bool,
    retries: int,
    retry_delay: float,
    as_json: bool,
) -> None:
    """Move process PID's pages from --from-node to --to-node with migrate_pages(2), as
    numactl's migratepages does, and relocate its page tables - mirrored into emulated tables
    on real nodes - to follow the data; then verify with the kernel's own answers.

    Everything is validated before anything changes: the process (exists, not a zombie or
    kernel thread, yours or you are root), the nodes (well formed, online, target with memory,
    target inside the process's cpuset) and that from differs from to ("nothing to do"
    otherwise; --in-place runs it on one node, e.g. 0 -> 0 on a one-node machine).

    Like migrate_pages(2), when the lists differ in size a source node that is also a target
    keeps its pages: with which nothing would move at all (--from-node 0 --to-node 0,1) is a
    usage error; when only some stay and several targets were named, one warning line on
    stderr names them.

    The process's memory policy is not changed by migrate_pages: when the policy of some VMA
    (numa_maps: bind:0, prefer:0, interleave:0 ...; numactl --membind=0 sets it for the whole
    task) keeps new pages off every target node, the move will be undone as the process runs -
    its new pages and the page tables its faults allocate come from the old node.  One warning
    line on stderr names those VMAs and the fix (restart under a policy that allows the target,
    or a cpuset rebind); JSON: policy_warnings (vma, policy, nodes, why, fix).  default, local
    and policies that include a target get no warning.

    Exit codes: 0 done and verified, 1 no such process / zombie / permission / target outside
    the cpuset / syscall failure / the process exited mid-way / verification failed (the JSON or
    the report is printed first, then one stderr line "verification failed: CHECK (...)" naming
    each false check), 2 usage error (bad option, malformed or offline node, kernel thread, from
    equal to to or nothing would move), 3 with --strict when some page was not migrated or some
    table not relocated (also when that is why a check failed; the one-line message names what
    was not moved).
    """
    with progress_bar(not as_json, f"mirroring pid {pid}") as update:
        report = migrate_mod.migrate(
            pid,
            from_node,
            to_node,
            dry_run=dry_run,
            strategy=strategy,
            batch=batch,
            in_place=in_place,
            table_pool_frames=table_pool_frames,
            progress=update,
            kernel_tables=kernel_tables or tables_only,
            tables_only=tables_only,
            force=force,
            retries=retries,
            retry_delay_s=retry_delay,
        )
    data = report.to_json()
    warning = report.request.staying_warning()
    if warning:
        click.echo(f"ptreloc: warning: {warning}", err=True)
    undo = report.policy_warning()
    if undo:
        click.echo(f"ptreloc: warning: {undo}", err=True)
    if as_json:
        emit_json(data)
    else:
        _print(data)
    status = exit_status(report, strict)
    if status is not None:
        fail(status[1], status[0])


def exit_status(report: migrate_mod.MigrationReport, strict: bool) -> tuple[int, str] | None:
    """(exit code, the one stderr line) for a finished migration, or None for exit 0.

    A translation that changed is always 1.  Otherwise, with --strict, something not moved is
    3 (it explains a tables_on_target or data_on_target check that failed with it); any other
    failed check is 1."""
    failed = report.failed_checks()
    if "translations_unchanged" in failed:
        return EXIT_OPERATIONAL, report.verification_summary()
    if strict and report.partial:
        return EXIT_PARTIAL, f"partial result (--strict): {report.partial_summary()}"
    if failed:
        return EXIT_OPERATIONAL, report.verification_summary()
    return None


def _print(data: dict[str, Any]) -> None:
    out = stdout_console
    verb = "would migrate" if data["dry_run"] else "migrated"
    out.print(
        f"pid {data['pid']} ({data['name']}): {verb} node "
        f"{','.join(map(str, data['from_nodes']))} -> {','.join(map(str, data['to_nodes']))}"
        f"{' (in place)' if data['in_place'] else ''}, strategy {data['strategy']}",
        markup=False,
    )
    d = data["data"]
    out.print(
        data_table(
            "data pages per node (a page's node from its frame where frame numbers are "
            "visible, else a move_pages query)",
            {"before": d["before"], "after": d["after"]},
            data["page_size"],
        )
    )
    t = data["tables"]
    levels = list(next(iter(t["before"].values()), {}).keys()) or list(t["relocated"])
    virtual = set(data["virtual_nodes"])
    out.print(tables_table("mirrored tables before", t["before"], levels, virtual))
    out.print(tables_table("mirrored tables after", t["after"], levels, virtual))
    f = data["remote_table_fraction"]
    where = data["placement"] or {"source": "inferred", "reason": "?"}
    label = ("measured (the kernel's own tables, walked)" if where["source"] == "kernel"
             else f"inferred ({where.get('reason')})")
    out.print(f"table placement: {label}", markup=False)
    if data["kernel_tables"]:
        kt = data["kernel_tables"]
        if kt["before"] is not None:
            out.print(tables_table("the kernel's own tables before", kt["before"],
                                   list(next(iter(kt["before"].values()), {}).keys()), set()))
        if kt["after"] is not None:
            title = ("the kernel's own tables after the move" if "moved" in kt
                     else "the kernel's own tables after migrate_pages")
            out.print(tables_table(title, kt["after"],
                                   list(next(iter(kt["after"].values()), {}).keys()), set()))
        if "moved" in kt:
            out.print(
                f"real page tables: {len(kt['moved'])} VMAs moved, {len(kt['skipped'])} "
                f"skipped; the process was stopped {kt['pause_ms']:.1f} ms; walked remote "
                f"fraction after: {f.get('kernel_after')}",
                markup=False,
            )
            for skip in kt["skipped"]:
                out.print(f"  skipped {skip['start']}-{skip['end']} {skip['path'] or '(anon)'}: "
                          f"{skip['reason']}", markup=False)
    out.print(
        f"remote_table_fraction: before {f['before']:.3f}, after the data alone "
        f"{f['after_data_only']:.3f} (what migratepages leaves), after relocation {f['after']:.3f}",
        markup=False,
    )
    out.print(
        f"tables relocated {sum(t['relocated'].values())}, not relocated "
        f"{sum(t['not_relocated'].values())}, bytes copied {t['bytes_copied']}; pages not "
        f"migrated {d['not_migrated']}"
        + (f" ({', '.join(f'{k} {v}' for k, v in d['not_migrated_reasons'].items())})"
           if d["not_migrated_reasons"] else "")
        + (f"; retried {d['retry']['pages_retried']} in {d['retry']['rounds']} rounds, "
           f"{d['retry']['recovered']} recovered" if d["retry"] and d["retry"]["rounds"] else ""),
        markup=False,
    )
    timings = ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in data["timings_s"].items())
    out.print(f"timings: {timings}", markup=False)
    if data["verified"] is None:
        out.print("dry run: nothing was moved, nothing verified", markup=False)
    else:
        checks = ", ".join(f"{k} {'n/a' if v is None else 'ok' if v else 'FAILED'}"
                           for k, v in data["checks"].items())
        out.print(f"verified: {'yes' if data['verified'] else 'NO'} ({checks})", markup=False)
