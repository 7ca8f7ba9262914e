"""``ptreloc bench``: measure the cost of relocation support, of relocation, and of a migration."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.table import Table

from ptreloc import bench
from ptreloc.bench.relocate import size_key
from ptreloc.cli._common import emit_json, guarded, json_option, stderr_console, stdout_console
from ptreloc.errors import UsageError

__all__ = ["command", "render"]


@contextmanager
def _progress(enabled: bool) -> Iterator[bench.Progress | None]:
    """A rich status line on stderr, only when stderr is a terminal."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    with stderr_console.status("bench") as status:

        def say(msg: str) -> None:
            status.update(msg)

        yield say


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


def _goal(res: dict[str, Any], key: str) -> str:
    g: Any = res.get("goals", {})
    for part in key.split("."):
        g = g.get(part, {}) if isinstance(g, dict) else {}
    if not g:
        return ""
    word = {"met": "met", "missed": "MISSED"}.get(g["verdict"], "undecided")
    why = ": interval too wide" if g["verdict"] == "undecided" else ""
    return f"{word} (<= {g['target']:g}){why}"


def render(results: dict[str, Any]) -> list[Table]:
    """One rich table per suite: figure, value, goal."""
    tables = []
    for name in bench.SUITES:
        res = results.get(name)
        if res is None:
            continue
        t = Table(title=f"{name}  ({res.get('seconds', 0):.1f} s)", title_justify="left")
        t.add_column("figure")
        t.add_column("value", justify="right")
        t.add_column("goal")
        rows: list[tuple[str, Any, str]] = []
        if res.get("skipped"):
            rows.append(("skipped", res["reason"], ""))
        elif name == "fault":
            for v in ("bare", "with_data"):
                r = res[v]
                rows += [(f"{v} overhead %", r["overhead_pct"], _goal(res, f"{v}.overhead_pct")),
                         (f"{v} 95% interval %", r["ci95_pct"], ""),
                         (f"{v} ns/fault relo | norelo",
                          f"{r['ns_per_fault']['relo']} | {r['ns_per_fault']['norelo']}", "")]
            rows.append(("RFC lmbench lat_pagefault", "1.6 %", ""))
        elif name == "walk":
            loc = res["local"]
            rows += [("ratio_vs_chase (local)", res["ratio_vs_chase"],
                      _goal(res, "ratio_vs_chase")),
                     ("95% interval", res["ci95"], ""),
                     ("ns/walk cpu | chase",
                      f"{loc['ns_per_walk']['cpu']} | {loc['ns_per_walk']['chase']}", "")]
            rem = res["remote"]
            if rem.get("skipped"):
                rows.append(("remote tables", "skipped: " + rem["reason"], ""))
            else:
                rows += [("ratio_vs_chase (remote)", rem["ratio_vs_chase"], ""),
                         ("remote / local walk", rem["remote_vs_local"], "")]
        elif name == "relocate":
            rows += [("ratio_vs_memcpy (largest)", res["ratio_vs_memcpy"],
                      _goal(res, "ratio_vs_memcpy")),
                     ("  with freed-frame poisoning", res["ratio_vs_memcpy_poisoned"], ""),
                     ("growth exponent", res["growth_exponent"], _goal(res, "growth_exponent"))]
            for s in res["sizes"]:
                mib = s["mapped_bytes"] >> 20
                key = size_key(s["mapped_bytes"])
                rows.append((f"{mib} MiB: {s['frames']} frames",
                             f"x{s['ratio_vs_memcpy']}  {s['ns_per_frame']} ns/frame",
                             _goal(res, f"{key}.ratio_vs_memcpy")))
        elif name == "pool":
            for op in ("evacuate", "compact"):
                r = res[op]
                rows.append((f"{op}: x memcpy ({r['frames']} frames)",
                             f"x{r['ratio_vs_memcpy']}  {r['ns_per_frame']} ns/frame "
                             f"(memcpy {r['memcpy_ns_per_frame']})", ""))
            cp = res["compact"]
            rows += [("compact: largest free run", f"{cp['largest_free_run']['before']} -> "
                      f"{cp['largest_free_run']['after']} frames", ""),
                     ("compact: free 2 MiB runs", f"{cp['free_2m_runs']['before']} -> "
                      f"{cp['free_2m_runs']['after']} of {cp['runs_2m']}", "")]
        elif name == "concurrent":
            rows += [("rewalk p99_ratio", res["rewalk"]["p99_ratio"],
                      _goal(res, "rewalk.p99_ratio")),
                     ("rewalk p99.9 ratio", res["rewalk"]["p999_ratio"], "")]
            for b, r in res["rewalk"]["by_batch"].items():
                rows.append((f"rewalk batch {b}: p50/p99/max ns",
                             f"{_fmt(r['relocating']['p50_ns'])}/"
                             f"{_fmt(r['relocating']['p99_ns'])}/"
                             f"{_fmt(r['relocating']['max_ns'])}  x{r['p99_ratio']}", ""))
            st = res["stop"]
            rows += [("idle p50/p99/max ns",
                      f"{_fmt(st['idle']['p50_ns'])}/{_fmt(st['idle']['p99_ns'])}/"
                      f"{_fmt(st['idle']['max_ns'])}", ""),
                     ("stop p99_ratio", st["p99_ratio"], ""),
                     ("stop pause max | mean ms", f"{st['pause_max_ms']} | {st['pause_mean_ms']}",
                      "")]
        elif name == "mirror":
            for mib, r in res["by_size"].items():
                rows += [(f"{mib} MiB: x pagemap read", r["ratio_vs_pagemap_read"],
                          _goal(res, "ratio_vs_pagemap_read") if mib == str(res["sizes_mib"][0])
                          else _goal(res, "largest.ratio_vs_pagemap_read")),
                         ("95% interval", r["ci95"], ""),
                         ("resident GiB | GiB/s", f"{r['resident_gib']} | {r['gib_per_s']}", ""),
                         ("node source", r["node_source"], "")]
            mem = res["memory"]
            rows += [("show: bytes per resident page", mem["bytes_per_resident_page"],
                      _goal(res, "memory.bytes_per_resident_page")),
                     ("show peak | baseline MB",
                      f"{mem['show_peak_rss_mb']} | {mem['baseline_peak_rss_mb']}", "")]
        elif name == "ktables":
            rows += [("walk / pagemap read (worst size)", res["ratio_vs_pagemap_read"],
                      _goal(res, "ratio_vs_pagemap_read")),
                     ("95% interval", res["ci95"], ""),
                     ("at MiB resident", res["ratio_at_mib"], "")]
            for mib, r in res["by_size"].items():
                sec = r["seconds"]
                rows += [(f"{mib} MiB: walk / pagemap read", f"x{_fmt(r['ratio_vs_pagemap_read'])}"
                          f" {_fmt(r['ci95'])}", r["verdict"]),
                         (f"{mib} MiB: walk | pagemap s",
                          f"{_fmt(sec['walk_process'])} | {_fmt(sec['pagemap_read'])}", ""),
                         (f"{mib} MiB: tables | resident pages",
                          f"{r['tables']} | {r['resident_pages']}", "")]
            mem = res["memory"]
            rows += [(f"memory at {mem['at_mib']} MiB: bytes/table", mem["bytes_per_table"], ""),
                     ("  bytes/resident page", mem["bytes_per_resident_page"], "")]
            if mem.get("model_peak"):
                rows.append(("  fit: bytes per table | per leaf",
                             f"{_fmt(mem['model_peak']['bytes_per_table'])} | "
                             f"{_fmt(mem['model_peak']['bytes_per_leaf'])}", ""))
        elif name == "migrate":
            rows += [("own time / migrate_pages call", res.get("own_ratio"),
                      _goal(res, "own_ratio")),
                     ("95% interval", res.get("own_ci95"), ""),
                     ("wall ratio vs migratepages", res["wall_ratio"], ""),
                     ("share spent on tables", res["table_share"], ""),
                     ("ptreloc | migratepages s",
                      f"{res['ptreloc_s']} | {res['migratepages_s']}", "")]
        for fig, val, goal in rows:
            t.add_row(fig, _fmt(val), goal)
        tables.append(t)
    return tables


def _parse_mib_list(text: str, option: str = "--ktables-mib") -> tuple[int, ...]:
    """--ktables-mib "1024,8192" -> (1024, 8192); UsageError (exit 2) for anything else."""
    parts = [x.strip() for x in text.split(",")]
    if not all(x.isdigit() for x in parts):
        bad = next(x for x in parts if not x.isdigit())
        raise UsageError(f"{option} {text!r}: {bad!r} is not a size in MiB; write e.g. "
                         "1024,8192")
    return bench.check_mib_list([int(x) for x in parts], option)


@click.command("bench", epilog="""\b
Examples:
  ptreloc bench fault                    # the RFC's headline: fault-path overhead, ~15 s
  ptreloc bench --quick --json           # CI smoke run: every key, not the speed (~2 s)
  ptreloc bench walk relocate --seed 7
  ptreloc bench ktables --ktables-mib 1024 --json   # root, a kernel with /proc/kcore
  ptreloc bench mirror --mirror-mib 1024       # skip the 8 GiB workload
  ptreloc bench --json -o results.json --plot results.png   # what 'make bench' keeps
\b
Exit codes: 0 measured (a missed goal is reported, not failed), 1 operational error (a
suite could not run), 2 usage error: unknown suite, bad option, an -o/--plot path that cannot
be written, a --plot file that is not .png/.svg/.pdf, or --plot without matplotlib - all
refused before anything is measured.""")
@click.argument("suites", nargs=-1, metavar="[SUITE]...")
@click.option("--quick", is_flag=True, help="CI smoke run, ~2 s in all: checks the shape of the "
              "results, not the speed (its figures and verdicts are not measurements; the JSON "
              "says so in meta.shape_only).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, writable=True),
              help="Also draw a summary to FILE.png, .svg or .pdf (needs the 'plot' extra: "
              "matplotlib).", metavar="FILE")
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of every random order.")
@click.option("--in-vm", is_flag=True, help="migrate: on a one-node host, run it inside a 2-node "
              "QEMU guest (scripts/numa-vm, from a source checkout).")
@click.option("--ktables-mib", "ktables_mib", metavar="LIST",
              help="ktables: resident sizes of the dense workloads, MiB, comma-separated "
              "(default 1024,8192; with --quick 16).")
@click.option("--mirror-mib", "mirror_mib", metavar="LIST",
              help="mirror: resident sizes of the dense workloads, MiB, comma-separated "
              "(default 1024,8192; with --quick 32). The largest also gets the peak-RSS "
              "measurement of 'ptreloc show'.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True),
              help="Also write the JSON results to this file (what 'make bench' keeps).")
@json_option
@guarded
def command(suites: tuple[str, ...], quick: bool, plot_path: str | None, seed: int, in_vm: bool,
            ktables_mib: str | None, mirror_mib: str | None, output: str | None,
            as_json: bool) -> None:
    """Measure relocation: SUITE is fault, walk, relocate, pool, concurrent, mirror, migrate or
    ktables (default: all).  Every figure is a ratio against a baseline measured in the same
    run.  ktables walks the kernel's own page tables (root and /proc/kcore; skipped with the
    reason otherwise)."""
    names = bench.check_suites(suites)
    sizes = _parse_mib_list(ktables_mib) if ktables_mib is not None else None
    msizes = _parse_mib_list(mirror_mib, "--mirror-mib") if mirror_mib is not None else None
    # refuse before spending minutes measuring, not when the results are ready to be written
    if plot_path:
        bench.check_plot_path(plot_path)
    if output:
        bench.check_writable(output, "-o/--output")
    with _progress(True) as say:
        results = bench.run(names, quick=quick, seed=seed, in_vm=in_vm, progress=say,
                            ktables_mib=sizes, mirror_mib=msizes)
    if plot_path:
        bench.plot(results, plot_path)
    if output:
        with open(output, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=1)
            fh.write("\n")
    if as_json:
        emit_json(results)
        return
    for t in render(results):
        stdout_console.print(t)
    for word, why in (("missed", ""), ("undecided", " (the 95% interval straddles the goal: "
                                                   "more rounds or a quieter machine)")):
        keys = [g["key"] for g in results["goals"] if g["verdict"] == word]
        if keys:
            stdout_console.print(f"goals {word}{why}: {', '.join(keys)} "
                                 "(see docs/BENCHMARKS.md)", highlight=False)
    if results["meta"].get("shape_only"):
        stdout_console.print(results["meta"]["note"], style="bold", highlight=False)
    if plot_path:
        stdout_console.print(f"plot written to {plot_path}")
