"""``ptreloc watch``: follow a process and relocate its mirrored tables when it moves."""

from __future__ import annotations

import click

from ptreloc import watch as watch_mod
from ptreloc.cli._common import emit_json, guarded, json_option, stdout_console
from ptreloc.cli.migrate import batch_option, strategy_option

__all__ = ["command"]


@click.command("watch")
@click.option("--pid", type=int, required=True, help="The process to follow.")
@click.option(
    "--interval",
    type=click.FloatRange(0.01, 3600),
    default=1.0,
    show_default=True,
    help="Seconds between looks at the process.",
)
@click.option("--count", type=click.IntRange(1), help="Stop after this many relocation events.")
@click.option(
    "--timeout",
    type=click.FloatRange(0, 10**7, min_open=True),
    help="Stop after this many seconds.",
)
@click.option(
    "--follow",
    type=click.Choice(watch_mod.FOLLOW),
    default="auto",
    show_default=True,
    help="What the tables follow: auto (whatever moved last), data, or cpu.",
)
@strategy_option
@batch_option
@json_option
@guarded
def command(
    pid: int,
    interval: float,
    count: int | None,
    timeout: float | None,
    follow: str,
    strategy: str,
    batch: int,
    as_json: bool,
) -> None:
    """Follow process PID: when its data moves node (NUMA balancing, migratepages, a cpuset
    change) or its threads move to another node's CPUs, relocate its mirrored page tables to
    follow, and print one line per event (a JSON line with --json): start, data_moved,
    cpu_moved, pages_changed (pages became resident or went away; the mirror follows them),
    then exit (the process ended) or stop (Ctrl-C, --count, --timeout).

    Exit codes: 0 when the process exits, on Ctrl-C, --count or --timeout; 1 no such process /
    zombie / permission; 2 usage error.
    """
    events = watch_mod.watch(
        pid,
        interval=interval,
        count=count,
        timeout=timeout,
        follow=follow,
        strategy=strategy,
        batch=batch,
    )
    try:
        for event in events:
            _emit(event, as_json)
    except KeyboardInterrupt:
        events.close()
        _emit(
            watch_mod.WatchEvent("stop", pid, 0.0, {}, None, {}, 0.0, reason="interrupted"),
            as_json,
        )


def _emit(event: watch_mod.WatchEvent, as_json: bool) -> None:
    if as_json:
        emit_json(event.to_json())
        return
    data = " ".join(f"N{k}={v}" for k, v in event.data.items()) or "-"
    tables = " ".join(f"N{k}={sum(v.values())}" for k, v in event.tables.items()) or "-"
    line = (
        f"{event.time_s:8.2f}s {event.event:<10} pid {event.pid}: data {data}; "
        f"tables {tables}; cpu node {event.cpu_node}; "
        f"remote_table_fraction {event.remote_table_fraction:.3f}"
    )
    if event.event in ("data_moved", "cpu_moved"):
        line += (
            f" ({event.remote_table_fraction_before or 0.0:.3f} before the tables followed; "
            f"{event.pages_moved} pages moved, {event.tables_relocated} tables relocated to "
            f"{event.target or 'nowhere: --follow leaves them'})"
        )
    if event.event == "pages_changed":
        line += (
            f" (mirror followed +{event.extra.get('pages_added', 0)} "
            f"-{event.extra.get('pages_removed', 0)} pages)"
        )
    if event.reason:
        line += f" [{event.reason}]"
    stdout_console.print(line, markup=False, soft_wrap=True)
