"""``ptreloc stress``: the relocation torture test, with a verdict CI can gate on."""

from __future__ import annotations

import sys

import click
from rich.table import Table

from ptreloc import _native
from ptreloc.cli._common import emit_json, guarded, json_option, stderr_console, stdout_console
from ptreloc.errors import EXIT_OPERATIONAL
from ptreloc.stress import (
    DEFAULTS,
    MAX_SECONDS,
    NODE_MODES,
    PROTOCOLS,
    SCENARIOS,
    StressResult,
    run_stress,
)

__all__ = ["command"]

_VERDICT = ("lost_dirty", "lost_accessed", "freed_frame_accesses", "leaked_frames",
            "translation_mismatches", "access_errors")


def describe_nodes(result: StressResult, mode: str) -> str:
    """One line naming each arena node as real (and where) or virtual, and why."""
    parts = [f"{n['node']} on NUMA node {n['bind_node']}" if not n["virtual"]
             else f"{n['node']} virtual" for n in result.nodes]
    line = "arena nodes: " + ", ".join(parts)
    if result.virtual_nodes:
        line += (" (--nodes virtual)" if mode == "virtual"
                 else " (the machine has fewer NUMA nodes with memory)")
    return line


def _geometry_names() -> list[str]:
    try:
        return sorted(_native.core().geometries())
    except Exception:  # core not built: let the run itself report that (exit 1)
        return ["x86_64_4l", "x86_64_5l", "x86_pae", "x86_32", "arm64_4k_39", "arm64_64k_48"]


# Upper bounds are the contract's "bad number -> exit 2": without them --seconds inf (or 1e300)
# overflowed the core's nanosecond deadline and "ran" 0 s reporting clean, and --batch 2**32
# overflowed a C int with a traceback.
MAX_BATCH = _native.MAX_BATCH  # the one cap (ptreloc._native.relocate)


def _pool_rows(result: StressResult) -> list[tuple[str, str]]:
    """Table rows for the evacuate/compact scenarios' figures (``result.pool``)."""
    rows: list[tuple[str, str]] = []
    for key, v in (result.pool or {}).items():
        if isinstance(v, dict):
            rows.append((key, f"{v['before']:,} -> {v['after']:,}"))
        else:
            rows.append((key, "-" if v is None else f"{v:,}"))
    return rows


@click.command("stress", epilog="""\b
Examples:
  ptreloc stress --seconds 10 --cpus 2
  ptreloc stress --seconds 2 --protocol naive --json   # exits 1: naive loses dirty bits
  ptreloc stress --geometry x86_pae --batch 1 --seed 7
  ptreloc stress --scenario evacuate --seconds 3 --json
  ptreloc stress --scenario compact --protocol stop
  ptreloc stress --scenario share --cpus 4""")
@click.option("--seconds", type=click.FloatRange(0, MAX_SECONDS, min_open=True), default=5.0,
              show_default=True, help="How long to run (at most a week).")
@click.option("--cpus", type=click.IntRange(1, 62), default=DEFAULTS["cpus"], show_default=True,
              help="Emulated CPU threads (a relocator and a reclaimer thread run besides).")
@click.option("--protocol", type=click.Choice(PROTOCOLS), default=DEFAULTS["protocol"],
              show_default=True,
              help="rewalk (concurrent, with the A/D merge), stop (quiesce the CPUs) or naive "
                   "(no merge: loses dirty bits, a demonstration).")
@click.option("--geometry", type=click.Choice(_geometry_names()), default=DEFAULTS["geometry"],
              show_default=True, help="Paging format.")
@click.option("--batch", type=click.IntRange(1, MAX_BATCH), default=DEFAULTS["batch"],
              show_default=True, help="Table frames per lock/shootdown batch.")
@click.option("--seed", type=click.IntRange(0, (1 << 64) - 1), default=DEFAULTS["seed"],
              show_default=True,
              help="Seed of the CPUs' and the reclaimer's random choices.")
@click.option("--nodes", "node_mode", type=click.Choice(NODE_MODES), default=DEFAULTS["nodes"],
              show_default=True,
              help="Where the two table pools live: auto (real NUMA nodes 0 and 1 where they "
                   "exist, virtual otherwise), real (fail unless both exist), virtual (both "
                   "unbound).")
@click.option("--ipi-delay-us", type=click.IntRange(0, 1_000_000),
              default=DEFAULTS["ipi_delay_us"], show_default=True,
              help="Microseconds between a batch's repoints and its shootdown (a flush IPI "
                   "reaching a preempted vCPU late): CPUs keep writing A/D into the old "
                   "copies meanwhile.  0 = shoot down at once.")
@click.option("--scenario", type=click.Choice(SCENARIOS), default=DEFAULTS["scenario"],
              show_default=True,
              help="relocate (every table node 0 <-> 1), evacuate (empty pool 0, then pool 1, "
                   "...: every table frame off the node), compact (spread the tables over "
                   "pool 0, then pack them low; JSON `pool` has the largest free run and the "
                   "free 2 MiB-aligned runs of frames before/after) or share (a second address "
                   "space shares each chunk's level-1 table, hugetlb-style, and runs the odd "
                   "CPUs; both are relocated together).  Same protocol and checks.")
@json_option
@guarded
def command(seconds: float, cpus: int, protocol: str, geometry: str, batch: int, seed: int,
            node_mode: str, ipi_delay_us: int, scenario: str, as_json: bool) -> None:
    """Torture-test a relocation protocol: CPUs write, tables move, A/D bits get consumed.

    CPUS emulated CPUs read and write random pages of a demand-faulted address space (faults
    included) while a relocator moves every one of its tables back and forth between two
    nodes (real NUMA nodes 0 and 1 when the machine has them, virtual otherwise - see --nodes;
    the output always says which are virtual) and a reclaimer
    consumes dirty and accessed bits like writeback, aging and eviction.  A shadow record of
    every access decides whether a dirty or accessed bit was lost; every access is checked
    against the address it must translate to; walks that read a freed table and frames still
    in use after the address space is destroyed are counted.

    Exit status: 0 when the run is clean; 1 when any bit was lost, any translation was wrong,
    a freed table was read or a frame leaked (also 1 for an operational error, with one line
    on stderr); 2 for a bad option; 130 on Ctrl-C (the run stops within a tenth of a second,
    no result is printed).  `--protocol naive` is expected to exit 1.  A progress bar is shown
    on stderr when it is a terminal and --json is not given.
    """
    progress = None
    if not as_json and sys.stderr.isatty():
        from rich.progress import Progress

        bar = Progress(console=stderr_console, transient=True)
        task = bar.add_task(f"stress {protocol} {geometry}", total=seconds)
        bar.start()

        def progress(elapsed: float) -> None:
            bar.update(task, completed=elapsed)
    try:
        result = run_stress(seconds, cpus, protocol, geometry, batch, seed, nodes=node_mode,
                            ipi_delay_us=ipi_delay_us, scenario=scenario, progress=progress)
    finally:
        if progress is not None:
            bar.stop()
    if as_json:
        emit_json(result.to_json())
    else:
        table = Table(title=f"ptreloc stress: {scenario} with {protocol} on {geometry}, "
                            f"{cpus} CPUs, {result.seconds:.1f} s")
        table.add_column("counter")
        table.add_column("value", justify="right")
        for key in ("relocations", "accesses"):
            table.add_row(key, f"{getattr(result, key):,}")
        for key in ("frames_relocated", "ad_merged", "ad_lost", "dirty_cleans", "unmaps",
                    "fault_path_runs"):
            table.add_row(key, f"{result.counters.get(key, 0):,}")
        for key, v in _pool_rows(result):
            table.add_row(key, v)
        for key in _VERDICT:
            v = getattr(result, key)
            table.add_row(key, f"[red]{v:,}[/red]" if v else "0")
        stdout_console.print(table)
        stdout_console.print(describe_nodes(result, node_mode))
        stdout_console.print("verdict: " + ("clean" if result.clean else "[red]LOSS FOUND[/red]"))
    if not result.clean:
        # a verdict, not a failure to run: stdout (JSON or table) has the details; stderr gets
        # the one line every exit 1 carries, so a human reading a CI log sees why it failed
        found = ", ".join(f"{k}={getattr(result, k)}" for k in _VERDICT if getattr(result, k))
        what = "" if scenario == "relocate" else f" ({scenario})"
        click.echo(f"ptreloc: stress: protocol {protocol}{what} is not clean: {found}", err=True)
        sys.exit(EXIT_OPERATIONAL)
