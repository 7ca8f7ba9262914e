"""``ptreloc bench``: what relocation support, relocation and a migration cost.

Every headline figure is a RATIO against a baseline measured in the same run, in interleaved
rounds (the machines this runs on are shared and noisy: a ratio of neighbours survives noise
that an absolute time does not).  Absolute times are reported too, but are not the figure.
The timed loops are C (csrc/bench.c); this module sets them up, interleaves the rounds, and
does the statistics.

Suites (:data:`SUITES`):

``fault``       the RFC's lmbench lat_pagefault comparison: the same fault loop against the core
                built with relocation support and without it (``overhead_pct`` with a 95% interval
                over paired rounds), ``bare`` and ``with_data`` (each fault zeroes a 4 KiB page);
``walk``        TLB-miss latency of an emulated CPU against a bare pointer chase over the same
                frames (``ratio_vs_chase``); local against remote tables on two real nodes;
``relocate``    per-frame relocation cost against memcpy of the same frames (``ratio_vs_memcpy``)
                from 1 MiB to 64 GiB mapped, with the log-log growth exponent;
``concurrent``  access latency p50/p99/max of emulated CPUs while relocation runs, against idle
                phases of the same run (``p99_ratio``), rewalk at several batch sizes and stop;
                headline layout one page per PTE table (idle accesses walk too), the consecutive
                cache-resident layout beside it (``cache_resident``);
``mirror``      snapshot + mirror throughput of a live process (resident GiB/s);
``migrate``     ``ptreloc migrate`` against numactl's ``migratepages`` on twin workloads (two real
                nodes, or inside scripts/numa-vm with ``in_vm``); skipped with the reason otherwise;
``ktables``     the kernel's own page tables of a dense live workload walked through /proc/kcore
                (``kernel_tables.walk_process``) against reading its /proc/PID/pagemap, in the
                same rounds (``ratio_vs_pagemap_read``, geometric mean with a 95% interval), at
                each resident size of ``--ktables-mib``; and the walk's memory per table and per
                resident page.  Needs root and /proc/kcore: skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ptreloc import __version__, _native, numa
from ptreloc.errors import PtrelocError, UsageError

__all__ = [
    "SUITES",
    "GOALS",
    "GOAL_INTERVALS",
    "QUICK_NOTE",
    "verdict",
    "goals",
    "stop_workload",
    "PlotUnavailable",
    "Plan",
    "plan",
    "run",
    "check_suites",
    "check_ktables_mib",
    "KTABLES_MIB",
    "PLOT_FORMATS",
    "require_matplotlib",
    "check_plot_path",
    "check_writable",
    "plot",
    "paired_ratios",
    "mean_ci",
    "bootstrap_ci",
    "t_quantile_975",
    "hist_percentile",
    "pair_ratios",
    "MIN_PHASE_ACCESSES",
    "loglog_slope",
    "overhead_pct",
]

SUITES: tuple[str, ...] = ("fault", "walk", "relocate", "concurrent", "mirror", "migrate",
                           "ktables")

#: (suite, dotted key, target, "<=") - every goal, reported with a verdict (see :func:`verdict`).
GOALS: tuple[tuple[str, str, float], ...] = (
    ("fault", "fault.bare.overhead_pct", 1.0),
    ("fault", "fault.with_data.overhead_pct", 0.3),
    ("walk", "walk.ratio_vs_chase", 1.5),
    ("relocate", "relocate.ratio_vs_memcpy", 1.5),
    ("relocate", "relocate.growth_exponent", 1.1),
    ("concurrent", "concurrent.rewalk.p99_ratio", 2.0),
    ("ktables", "ktables.ratio_vs_pagemap_read", 2.0),
)

#: The 95 % interval reported beside a goal's figure, where there is one: the verdict uses it.
GOAL_INTERVALS: dict[str, str] = {
    "fault.bare.overhead_pct": "fault.bare.ci95_pct",
    "fault.with_data.overhead_pct": "fault.with_data.ci95_pct",
    "walk.ratio_vs_chase": "walk.ci95",
    "ktables.ratio_vs_pagemap_read": "ktables.ci95",
}

#: What meta.note says of a --quick run (the table footer says it too).
QUICK_NOTE = ("QUICK run: a CI smoke test of the results' shape, not a measurement of speed - "
              "too few rounds and too small sizes to read any figure or verdict; run without "
              "--quick (make bench) to measure")

GEOMETRY = "x86_64_4l"
#: the ktables suite's resident sizes (MiB): the issue's goal is stated at 1 GiB and 8 GiB
KTABLES_MIB: tuple[int, ...] = (1024, 8192)
KTABLES_MIB_QUICK: tuple[int, ...] = (16,)
PAGE = 4096
MIB = 1 << 20
GIB = 1 << 30
PROJECT = Path(__file__).resolve().parent.parent

Progress = Callable[[str], None]


class PlotUnavailable(UsageError):
    """--plot without matplotlib."""


# ---- statistics ---------------------------------------------------------------------------------

# Student's t 0.975 quantiles for 1..30 degrees of freedom (two-sided 95%); beyond: 1.96 + a
# correction that is within 0.002 of the exact value.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError("degrees of freedom must be at least 1")
    if df <= len(_T975):
        return _T975[df - 1]
    return 1.959964 + 2.4 / df


def paired_ratios(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """a[i] / b[i] for rounds measured side by side (the noise of round i cancels)."""
    if len(a) != len(b) or not a:
        raise ValueError("paired ratios need two non-empty sequences of the same length")
    if any(x <= 0 for x in b):
        raise ValueError("baseline times must be positive")
    return [x / y for x, y in zip(a, b, strict=True)]


def mean_ci(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high): the mean with a two-sided 95% t-interval."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    m = statistics.fmean(values)
    if n == 1:
        return m, m, m
    half = t_quantile_975(n - 1) * statistics.stdev(values) / math.sqrt(n)
    return m, m - half, m + half


def bootstrap_ci(values: Sequence[float], *, seed: int = 0, resamples: int = 2000,
                 stat: Callable[[Sequence[float]], float] = statistics.fmean
                 ) -> tuple[float, float]:
    """Percentile-bootstrap 95% interval of ``stat`` (the mean by default; no normality
    assumed), seeded so a run can be reproduced."""
    if not values:
        raise ValueError("no values")
    rng = random.Random(seed)
    n = len(values)
    means = sorted(stat(rng.choices(values, k=n)) for _ in range(resamples))
    return means[int(0.025 * (resamples - 1))], means[int(math.ceil(0.975 * (resamples - 1)))]


def overhead_pct(with_support: Sequence[float], without: Sequence[float], *, seed: int = 0
                 ) -> dict[str, Any]:
    """Overhead in % of paired rounds.

    ``overhead_pct`` is the MEDIAN per-round ratio - 1 with a percentile-bootstrap 95% interval
    (``ci95_pct``): a round disturbed by another process on a shared machine is an outlier the
    median ignores.  The mean with its t-interval is reported beside it (``mean_pct``,
    ``t_ci95_pct``) - when the two disagree, the run was noisy.
    """
    r = paired_ratios(with_support, without)
    m, lo, hi = mean_ci(r)
    blo, bhi = bootstrap_ci(r, seed=seed, stat=statistics.median)
    med = statistics.median(r)
    return {
        "overhead_pct": round((med - 1) * 100, 3),
        "ci95_pct": [round((blo - 1) * 100, 3), round((bhi - 1) * 100, 3)],
        "mean_pct": round((m - 1) * 100, 3),
        "t_ci95_pct": [round((lo - 1) * 100, 3), round((hi - 1) * 100, 3)],
        "rounds": len(r),
    }


def hist_percentile(hist: Sequence[int], q: float, lower: Callable[[int], int]) -> float:
    """Percentile ``q`` (0..1) of a bucketed histogram, as the midpoint of its bucket
    (``lower(i)`` is bucket i's smallest value, ``lower(i + 1)`` the next bucket's)."""
    total = sum(hist)
    if total == 0:
        return float("nan")
    want = max(1, math.ceil(q * total))
    acc = 0
    for i, count in enumerate(hist):
        acc += count
        if acc >= want:
            return (lower(i) + lower(i + 1)) / 2
    raise AssertionError("unreachable: counts add up to total")


def loglog_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of log(y) over log(x): the growth exponent (1.0 = linear)."""
    if len(xs) != len(ys) or len(xs) < 2:
        raise ValueError("a slope needs two or more points")
    lx = [math.log(x) for x in xs]
    ly = [math.log(y) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    sxx = sum((x - mx) ** 2 for x in lx)
    if sxx == 0:
        raise ValueError("a slope needs two distinct x values")
    return sum((x - mx) * (y - my) for x, y in zip(lx, ly, strict=True)) / sxx


# ---- plan -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Sizes and round counts of one run (``quick``: a CI smoke run of a few seconds a suite)."""

    quick: bool
    fault_pages: int
    fault_rounds: int
    walk_pages: int
    walk_accesses: int
    walk_rounds: int
    reloc_sizes: tuple[int, ...]
    reloc_rounds: int
    conc_cpus: int
    conc_pages: int
    conc_sparse_pages: int
    conc_batches: tuple[int, ...]
    conc_phase_s: float
    conc_rounds: int
    mirror_mib: int
    mirror_rounds: int
    migrate_mib: int
    migrate_rounds: int
    #: resident MiB of each dense workload the ktables suite walks (``--ktables-mib``)
    ktables_mib: tuple[int, ...] = KTABLES_MIB
    ktables_rounds: int = 5


def plan(quick: bool, ktables_mib: Sequence[int] | None = None) -> Plan:
    cpus = max(1, min(4, (os.cpu_count() or 2) - 1))  # + the relocator: no oversubscription
    if ktables_mib is not None:
        ktables_mib = check_ktables_mib(ktables_mib)
    if quick:
        return Plan(True, 4096, 8, 2048, 50_000, 4, (1 * MIB, 4 * MIB, 16 * MIB), 3, cpus,
                    16384, 4096, (8, 64), 0.1, 2, 32, 1, 16, 1,
                    tuple(ktables_mib or KTABLES_MIB_QUICK), 2)
    return Plan(False, 32768, 60, 32768, 400_000, 12,
                (1 * MIB, 16 * MIB, 256 * MIB, 4 * GIB, 64 * GIB), 7, cpus, 65536, 32768,
                (1, 8, 64, 512), 0.2, 16, 1024, 5, 128, 3,
                tuple(ktables_mib or KTABLES_MIB), 5)


def check_ktables_mib(sizes: Sequence[int]) -> tuple[int, ...]:
    """The ktables suite's resident sizes in MiB, sorted, duplicates dropped; UsageError for
    an empty list or a size that is not a positive number of MiB."""
    out = sorted(set(sizes))
    if not out:
        raise UsageError("--ktables-mib needs at least one size (MiB), e.g. 1024,8192")
    bad = [x for x in out if isinstance(x, bool) or not isinstance(x, int) or x < 1]
    if bad:
        raise UsageError(f"--ktables-mib: {bad[0]!r} is not a size in MiB (a whole number >= 1)")
    return tuple(out)


FAULT_REPS = 3  # passes per build per round (the fastest counts)
FAULT_BLOCK = 4  # rounds per pair of contexts (then both are re-created)
DEFAULT_BATCH = 64  # ptreloc migrate's default: the batch the headline p99_ratio uses


def check_suites(names: Sequence[str]) -> list[str]:
    """The suites to run (all when none are named), in canonical order; UsageError otherwise."""
    bad = [n for n in names if n not in SUITES]
    if bad:
        raise UsageError(f"unknown bench suite {bad[0]!r}: use one or more of {', '.join(SUITES)}")
    chosen = set(names) if names else set(SUITES)
    return [s for s in SUITES if s in chosen]


def require_matplotlib() -> None:
    """Raise PlotUnavailable (exit 2) when matplotlib cannot be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as err:
        raise PlotUnavailable(
            "--plot needs matplotlib, which is not installed: pip install 'ptreloc[plot]' "
            "(or drop --plot)"
        ) from err


#: What --plot draws, by file name extension: formats matplotlib's Agg/SVG/PDF backends write
#: without external tools (no LaTeX, no ghostscript), so a run never fails at the last step.
PLOT_FORMATS: tuple[str, ...] = ("png", "svg", "pdf")


def check_plot_path(path: str | os.PathLike[str]) -> str:
    """Everything --plot needs, checked BEFORE measuring: matplotlib importable, a file name
    whose extension is one of :data:`PLOT_FORMATS` (matplotlib picks the format from it, and an
    unknown one is a ValueError only when the figure is saved - after the whole run), and a
    writable place.  Returns the format; raises UsageError (exit 2) otherwise."""
    require_matplotlib()
    fmt = Path(path).suffix.lower().lstrip(".")
    if fmt not in PLOT_FORMATS:
        what = f"a '.{fmt}' file" if fmt else "a file without an extension"
        raise UsageError(f"--plot {os.fspath(path)}: cannot draw {what}; name it "
                         f"{', '.join('.' + f for f in PLOT_FORMATS[:-1])} or "
                         f".{PLOT_FORMATS[-1]}")
    check_writable(path, "--plot")
    return fmt


def check_writable(path: str | os.PathLike[str], option: str) -> None:
    """Raise UsageError (exit 2) unless ``path`` can be written as a file - checked for real,
    BEFORE minutes of measuring: a missing directory, a path naming a directory, a read-only
    file system or a permission problem shows here, not after the run.  Changes nothing: an
    existing file is opened for appending and left as it was; a probe file is removed."""
    p = Path(path)
    where = f"{option} {os.fspath(path)}"
    if p.is_dir():
        raise UsageError(f"{where}: is a directory; name a file in it")
    parent = p.parent if os.fspath(p.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"{where}: directory {os.fspath(parent)} does not exist; create it "
                         "first or write somewhere else")
    try:
        if p.exists():
            with open(p, "a", encoding="utf-8"):
                pass
        else:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.close(fd)
            os.unlink(p)
    except OSError as err:
        raise UsageError(f"{where}: cannot write there ({err.strerror}); pick a writable "
                         "path") from err


# ---- machine ------------------------------------------------------------------------------------


def _real_nodes() -> list[int]:
    """Online nodes with memory (sorted): where arena pools can be really bound."""
    return sorted(numa.topology().with_memory)


def _binds() -> tuple[tuple[int, int], bool]:
    """Bindings of a 2-pool arena and whether both pools are on distinct real nodes."""
    real = _real_nodes()
    if len(real) >= 2:
        return (real[0], real[1]), True
    return (real[0] if real else -1, -1), False


def _pin_to_node(node: int) -> set[int] | None:
    """Pin this thread to ``node``'s CPUs (so local/remote means something); old mask back."""
    cpus = numa.topology().nodes.get(node)
    if cpus is None or not cpus.cpus:
        return None
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(cpus.cpus) & old or old)
    return old


def _round(x: float, nd: int = 3) -> float:
    return round(x, nd) if math.isfinite(x) else x


# ---- suites -------------------------------------------------------------------------------------


def suite_fault(p: Plan, seed: int, progress: Progress) -> dict[str, Any]:
    bind = (_real_nodes() or [-1])[0]
    relo, norelo = _native.core("relo"), _native.core("norelo")
    out: dict[str, Any] = {"pages": p.fault_pages, "geometry": GEOMETRY,
                           "method": f"paired rounds relo/norelo, alternating order, fastest of "
                                     f"{FAULT_REPS} passes per build per round"}
    for variant, with_data in (("bare", False), ("with_data", True)):
        progress(f"fault {variant}: {p.fault_rounds} rounds x 2 builds x {p.fault_pages} faults")
        ta: list[float] = []
        tb: list[float] = []
        for block in range(0, p.fault_rounds, FAULT_BLOCK):
            # fresh contexts per block: where the arena, the CPU and the data land (cache sets,
            # huge pages) biases one build against the other by several % for the life of a
            # context, in either direction; re-placing them averages that out
            a = _native.BenchFault(relo, GEOMETRY, p.fault_pages, with_data, bind)
            b = _native.BenchFault(norelo, GEOMETRY, p.fault_pages, with_data, bind)
            try:
                a.round(seed)  # warm-up: first touch of the arena and the data pages
                b.round(seed)
                for i in range(block, min(block + FAULT_BLOCK, p.fault_rounds)):
                    # a round: both builds FAULT_REPS times, alternating (ABAB.. then BABA..
                    # in the next round), same page order; each build's fastest pass is its
                    # time for the round - a pass hit by preemption is discarded that way
                    s = seed + 1 + i
                    ra: list[int] = []
                    rb: list[int] = []
                    for k in range(FAULT_REPS):
                        if (i + k) % 2 == 0:
                            ra.append(a.round(s))
                            rb.append(b.round(s))
                        else:
                            rb.append(b.round(s))
                            ra.append(a.round(s))
                    ta.append(min(ra))
                    tb.append(min(rb))
            finally:
                a.close()
                b.close()
        res = overhead_pct(ta, tb, seed=seed)
        res["ns_per_fault"] = {
            "relo": _round(statistics.median(ta) / p.fault_pages, 1),
            "norelo": _round(statistics.median(tb) / p.fault_pages, 1),
        }
        out[variant] = res
    return out


def _walk_one(p: Plan, seed: int, binds: tuple[int, int], table_node: int) -> dict[str, Any]:
    c = _native.core("relo")
    w = _native.BenchWalk(c, GEOMETRY, p.walk_pages, binds, table_node)
    try:
        w.round(p.walk_accesses // 4 or 1, seed, False)  # warm-up
        cpu_ns: list[float] = []
        chase_ns: list[float] = []
        for i in range(p.walk_rounds):
            a, b = w.round(p.walk_accesses, seed + 1 + i, i % 2 == 1)
            cpu_ns.append(a)
            chase_ns.append(b)
        st = w.stats()
    finally:
        w.close()
    r = paired_ratios(cpu_ns, chase_ns)
    m, lo, hi = mean_ci(r)
    return {
        "ratio_vs_chase": _round(m), "ci95": [_round(lo), _round(hi)], "rounds": len(r),
        "ns_per_walk": {"cpu": _round(statistics.median(cpu_ns) / p.walk_accesses, 1),
                        "chase": _round(statistics.median(chase_ns) / p.walk_accesses, 1)},
        "tlb_hit_rate": _round(st["tlb_hits"] / max(1, st["accesses"]), 4),
        "pwc_hit_rate": _round(st["pwc_hits"] / max(1, st["walks"]), 4),
        "table_node": table_node,
        "_cpu_ns": cpu_ns,
    }


def suite_walk(p: Plan, seed: int, progress: Progress) -> dict[str, Any]:
    binds, two_real = _binds()
    old = _pin_to_node(binds[0]) if binds[0] >= 0 else None
    try:
        progress(f"walk: {p.walk_rounds} rounds x {p.walk_accesses} walks, local tables")
        local = _walk_one(p, seed, binds, 0)
        remote: dict[str, Any]
        if two_real:
            progress("walk: remote tables")
            remote = _walk_one(p, seed, binds, 1)
            rr = paired_ratios(remote.pop("_cpu_ns"), local["_cpu_ns"])
            remote["remote_vs_local"] = _round(statistics.fmean(rr))
        else:
            remote = {"skipped": True,
                      "reason": "one NUMA node with memory here: no remote memory to put tables "
                                "on (run on a multi-node host)"}
    finally:
        if old is not None:
            os.sched_setaffinity(0, old)
    local.pop("_cpu_ns")
    return {
        "ratio_vs_chase": local["ratio_vs_chase"],
        "ci95": local["ci95"],
        "pages": p.walk_pages,
        "method": "one page per PTE table, random order (TLB and lowest PWC defeated); "
                  "baseline: dependent root-to-leaf chase over the same frames",
        "local": local,
        "remote": remote,
        "cpu_node": binds[0],
    }


def _reloc_size(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ratios = paired_ratios([x["reloc_ns"] for x in rows], [x["memcpy_ns"] for x in rows])
    frames = rows[0]["frames"]
    return {
        "ratio_vs_memcpy": _round(statistics.median(ratios)),
        "reloc_ns": statistics.median(x["reloc_ns"] for x in rows),
        "memcpy_ns": statistics.median(x["memcpy_ns"] for x in rows),
        "ns_per_frame": _round(statistics.median(x["reloc_ns"] for x in rows) / frames, 1),
        "memcpy_ns_per_frame": _round(
            statistics.median(x["memcpy_ns"] for x in rows) / frames, 1),
        "phase_ns": {k: statistics.median(x["timings_ns"][k] for x in rows)
                     for k in rows[0]["timings_ns"]},
    }


def suite_relocate(p: Plan, seed: int, progress: Progress) -> dict[str, Any]:
    """Relocation against memcpy, with freed-frame poisoning off (the headline: what the kernel
    does outside debug configurations) and on (ptreloc's default, what makes a freed-frame
    access detectable) - alternate rounds of the same context, each paired with its own memcpy."""
    binds, two_real = _binds()
    c = _native.core("relo")
    sizes: list[dict[str, Any]] = []
    for size in p.reloc_sizes:
        progress(f"relocate: {size // MIB} MiB mapped, {p.reloc_rounds} rounds x poison off/on")
        r = _native.BenchReloc(c, GEOMETRY, size, binds, "rewalk", DEFAULT_BATCH)
        rows: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
        try:
            r.round(False)  # warm-up: both pools faulted in
            r.round(True)
            for i in range(2 * p.reloc_rounds):
                # poison off/on alternate (and which goes first in a pair), memcpy-first flips
                # every pair: each setting sees the same mix of pool directions and orders
                poison = (i % 2 == 0) == ((i // 2) % 2 == 0)
                r.set_poison(poison)
                rows[poison].append(r.round((i // 2) % 2 == 0))
        finally:
            r.close()
        off, on = _reloc_size(rows[False]), _reloc_size(rows[True])
        sizes.append({"mapped_bytes": size, "frames": rows[False][0]["frames"],
                      "table_bytes": rows[False][0]["bytes"], **off, "poisoned": on})
    slope = loglog_slope([s["frames"] for s in sizes], [s["reloc_ns"] for s in sizes])
    largest = sizes[-1]
    return {
        "ratio_vs_memcpy": largest["ratio_vs_memcpy"],
        "ratio_vs_memcpy_poisoned": largest["poisoned"]["ratio_vs_memcpy"],
        "ratio_at_bytes": largest["mapped_bytes"],
        "growth_exponent": _round(slope),
        "strategy": "rewalk",
        "batch": DEFAULT_BATCH,
        "poisoning": "headline figures without freed-frame poisoning (comparable to a "
                     "production kernel, which poisons freed pages only in debug "
                     "configurations); 'poisoned' with it (ptreloc's default)",
        "nodes": {"binds": list(binds), "real": two_real},
        "sizes": sizes,
    }


def _hist_summary(c: _native.Core, hist: list[int], mx: int) -> dict[str, float]:
    def lower(i: int) -> int:
        return _native.bench_hist_lower(c, i)

    return {"p50_ns": hist_percentile(hist, 0.50, lower),
            "p99_ns": hist_percentile(hist, 0.99, lower),
            "p999_ns": hist_percentile(hist, 0.999, lower), "max_ns": float(mx)}


#: A phase with fewer timed accesses than this has no p99.9 of its own (its "percentile" is the
#: max of a handful of samples, e.g. one preemption of the CPU thread on a loaded host) - its
#: round is excluded from the per-round ratios and counted in ``rounds_excluded``.
MIN_PHASE_ACCESSES = 1000


def pair_ratios(rounds: Sequence[tuple[Sequence[int], Sequence[int]]], q: float,
                lower: Callable[[int], int]) -> tuple[list[float], int]:
    """Per round (one idle and one relocating phase histogram, neighbours in time): relocating
    / idle of percentile ``q`` - a drift of the machine between rounds cancels out of each
    ratio.  Returns (ratios, rounds excluded): a round where either phase timed fewer than
    :data:`MIN_PHASE_ACCESSES` accesses (an empty or starved phase) is excluded, not turned
    into a ratio of 0 or infinity."""
    out = []
    excluded = 0
    for idle, busy in rounds:
        if min(sum(idle), sum(busy)) < MIN_PHASE_ACCESSES:
            excluded += 1
            continue
        out.append(hist_percentile(busy, q, lower) / hist_percentile(idle, q, lower))
    return out, excluded


def suite_concurrent(p: Plan, seed: int, progress: Progress) -> dict[str, Any]:
    binds, two_real = _binds()
    c = _native.core("relo")

    def one(strategy: str, batch: int, sparse: bool) -> dict[str, Any]:
        pages = p.conc_sparse_pages if sparse else p.conc_pages
        progress(f"concurrent ({'table_per_page' if sparse else 'cache_resident'}, {pages} "
                 f"pages): {strategy} batch {batch}, {p.conc_cpus} CPUs, "
                 f"{p.conc_rounds} x 2 x {p.conc_phase_s:.2f} s idle/relocating")
        r = _native.bench_concurrent(
            c, geometry=GEOMETRY, cpus=p.conc_cpus, pages=pages, strategy=strategy,
            batch=batch, phase_s=p.conc_phase_s, rounds=p.conc_rounds, write_pct=20,
            bind_nodes=binds, seed=seed, sparse=sparse)
        idle = _hist_summary(c, r["idle_hist"], r["idle_max"])
        busy = _hist_summary(c, r["busy_hist"], r["busy_max"])
        def lower(i: int) -> int:
            return _native.bench_hist_lower(c, i)

        r99, excluded = pair_ratios(r["rounds"], 0.99, lower)
        r999, _ = pair_ratios(r["rounds"], 0.999, lower)
        res: dict[str, Any] = {
            "batch": batch,
            "idle": idle | {"accesses": r["idle_n"]},
            "relocating": busy | {"accesses": r["busy_n"]},
            # headline: median over rounds of the per-round ratio (pooled ratio beside it)
            "p99_ratio": _round(statistics.median(r99)) if r99 else math.nan,
            "p999_ratio": _round(statistics.median(r999)) if r999 else math.nan,
            "p99_ratio_range": [_round(min(r99)), _round(max(r99))] if r99 else [],
            "p99_ratio_pooled": _round(busy["p99_ns"] / idle["p99_ns"]),
            "p50_ratio": _round(busy["p50_ns"] / idle["p50_ns"]),
            "rounds": len(r99),
            "rounds_excluded": excluded,
            "relocations": r["relocations"],
            "frames_relocated": r["frames"],
            "relocation_ms_mean": _round(r["reloc_ns"] / max(1, r["relocations"]) / 1e6, 4),
        }
        if strategy == "stop":
            res["pause_max_ms"] = _round(r["stopped_max_ns"] / 1e6, 4)
            res["pause_mean_ms"] = _round(
                r["stopped_sum_ns"] / max(1, r["relocations"]) / 1e6, 4)
        return res

    def layout(sparse: bool) -> dict[str, Any]:
        by_batch = {str(b): one("rewalk", b, sparse) for b in p.conc_batches}
        head = by_batch.get(str(DEFAULT_BATCH)) or next(iter(by_batch.values()))
        return {
            "pages": p.conc_sparse_pages if sparse else p.conc_pages,
            "rewalk": {"p99_ratio": head["p99_ratio"], "p999_ratio": head["p999_ratio"],
                       "batch": head["batch"], "by_batch": by_batch},
            "stop": one("stop", DEFAULT_BATCH, sparse),
        }

    # Headline: one page per PTE table, so every access (idle too) walks tables that are not
    # in cache - the workloads for which table placement matters - and the ratio measures what
    # relocation adds to a walk.  With consecutive pages (cache_resident, the layout this suite
    # used before) idle accesses mostly hit the PWC and cached tables, so idle p99 sits on the
    # boundary between that fast mode and the walk mode, and the ratio compares the two modes.
    head = layout(True)
    return {
        "cpus": p.conc_cpus,
        "layout": "table_per_page",
        **head,
        "cache_resident": layout(False),
        "nodes": {"binds": list(binds), "real": two_real},
        "method": "per-access latency (CLOCK_MONOTONIC) in C histograms; rounds of one idle "
                  "and one relocating phase (alternating which comes first) in one run; "
                  "p99_ratio/p999_ratio = median over rounds of the per-round relocating/idle "
                  "ratio; the relocator moves every table back and forth without pause during "
                  f"relocating phases; a round where a phase timed fewer than "
                  f"{MIN_PHASE_ACCESSES} accesses is excluded (rounds_excluded); headline "
                  "layout table_per_page: one page per PTE table (idle accesses walk uncached "
                  "tables); cache_resident: consecutive pages, the earlier layout",
    }


def _spawn_workload(mib: int, prefix: Sequence[str] = (), extra: Sequence[str] = ()
                    ) -> tuple[subprocess.Popen[str], dict]:
    """Start scripts/workload.py (the same workload the tests' ``live_workload()`` runs: a
    real multi-threaded process with ``mib`` MiB resident) and return it with its ready line
    ({"ready": true, "pid", "address", "pages", ...}, format in the script's docstring).
    ``prefix``: e.g. numactl binding; ``extra``: more workload options (``--every 512``).  The
    child ends when :func:`stop_workload` closes its stdin."""
    proc = subprocess.Popen(
        [*prefix, sys.executable, str(PROJECT / "scripts" / "workload.py"), "--mib", str(mib),
         "--threads", "2", *extra],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    try:
        info = json.loads(line) if line else {}
    except ValueError:
        info = {}
    if not info.get("ready"):
        stop_workload(proc)
        raise PtrelocError(f"bench: scripts/workload.py did not report ready (exit status "
                           f"{proc.returncode}, said {line.strip()[:80]!r})")
    return proc, info


def stop_workload(proc: subprocess.Popen[str]) -> None:
    """End a workload from :func:`_spawn_workload`: end of file on its stdin, a kill if it
    does not exit within 30 s."""
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def _pagemap_read_s(pid: int, address: int, pages: int) -> float:
    """Baseline: one read of the workload region's pagemap entries (what a snapshot must at
    least do).  A single pread: the kernel does the loop."""
    fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
    try:
        t0 = time.perf_counter()
        os.pread(fd, pages * 8, address // PAGE * 8)
        return time.perf_counter() - t0
    finally:
        os.close(fd)


def suite_mirror(p: Plan, seed: int, progress: Progress) -> dict[str, Any]:
    from ptreloc import mirror as mirror_mod
    from ptreloc import proc as proc_mod

    progress(f"mirror: a live {p.mirror_mib} MiB workload, {p.mirror_rounds} rounds")
    child, info = _spawn_workload(p.mirror_mib)
    try:
        totals: list[float] = []
        snaps: list[float] = []
        base: list[float] = []
        resident = 0
        for i in range(p.mirror_rounds + 1):  # round 0 warms caches and imports
            b = _pagemap_read_s(child.pid, info["address"], info["pages"])
            t0 = time.perf_counter()
            snap = proc_mod.snapshot(child.pid)
            t1 = time.perf_counter()
            m = mirror_mod.mirror(snap)
            t2 = time.perf_counter()
            resident = len(snap.resident)
            m.close()
            if i:
                totals.append(t2 - t0)
                snaps.append(t1 - t0)
                base.append(b)
    finally:
        stop_workload(child)
    gib = resident * PAGE / GIB
    total = statistics.median(totals)
    return {
        "resident_gib": _round(gib, 4),
        "gib_per_s": _round(gib / total),
        "seconds": _round(total, 4),
        "snapshot_share": _round(statistics.median(snaps) / total),
        "ratio_vs_pagemap_read": _round(statistics.median(paired_ratios(totals, base)), 1),
        "rounds": len(totals),
        "workload_mib": p.mirror_mib,
    }


def _migrate_real(p: Plan, progress: Progress) -> dict[str, Any]:
    from ptreloc import migrate as migrate_mod

    nodes = _real_nodes()
    src, dst = nodes[0], nodes[1]
    tool = shutil.which("migratepages")
    if tool is None:
        return {"skipped": True,
                "reason": "numactl's migratepages is not installed (apt-get install numactl)"}
    numactl = shutil.which("numactl")
    prefix = [numactl, f"--membind={src}", f"--cpunodebind={src}"] if numactl else []
    ours: list[float] = []
    theirs: list[float] = []
    shares: list[float] = []
    pages = 0
    for i in range(p.migrate_rounds):
        progress(f"migrate: round {i + 1}/{p.migrate_rounds}, twin {p.migrate_mib} MiB workloads")
        a, _ = _spawn_workload(p.migrate_mib, prefix)
        b, _ = _spawn_workload(p.migrate_mib, prefix)
        try:
            def run_ours(a: subprocess.Popen[str] = a) -> None:
                t0 = time.perf_counter()
                rep = migrate_mod.migrate(a.pid, str(src), str(dst))
                ours.append(time.perf_counter() - t0)
                js = rep.to_json()
                tm = js.get("timings_s", {})
                tot = sum(v for v in tm.values() if isinstance(v, int | float)) or ours[-1]
                shares.append(tm.get("relocate", 0.0) / tot)

            def run_theirs(b: subprocess.Popen[str] = b) -> None:
                t0 = time.perf_counter()
                subprocess.run([tool, str(b.pid), str(src), str(dst)], check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                theirs.append(time.perf_counter() - t0)

            for fn in ((run_ours, run_theirs) if i % 2 == 0 else (run_theirs, run_ours)):
                fn()
            pages = p.migrate_mib * MIB // PAGE
        finally:
            stop_workload(a)
            stop_workload(b)
    ratios = paired_ratios(ours, theirs)
    return {
        "skipped": False,
        "wall_ratio": _round(statistics.median(ratios)),
        "table_share": _round(statistics.median(shares)),
        "ptreloc_s": _round(statistics.median(ours), 4),
        "migratepages_s": _round(statistics.median(theirs), 4),
        "pages": pages,
        "rounds": len(ratios),
        "from_node": src,
        "to_node": dst,
    }


def _migrate_in_vm(p: Plan, seed: int, progress: Progress) -> dict[str, Any]:
    progress("migrate: booting the 2-node guest (scripts/numa-vm)")
    vm = PROJECT / "scripts" / "numa-vm"
    cmd = [str(vm), "--nodes", "2", "--mem-per-node", "1024", "--timeout", "1200", "--",
           sys.executable, "-m", "ptreloc", "bench", "migrate", "--json", "--seed", str(seed)]
    if p.quick:
        cmd.append("--quick")
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode == 77:
        return {"skipped": True, "reason": "the NUMA test bed is unavailable here: "
                + (done.stdout.strip().splitlines() or ["scripts/numa-vm exit 77"])[-1]}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("{"):
            res = json.loads(line)["migrate"]
            res["in_vm"] = True
            res["note"] = "QEMU/TCG guest: absolute times ~8x a host's, the ratio is the figure"
            return res
    raise PtrelocError(f"bench migrate --in-vm: the guest run failed (exit {done.returncode})")


def suite_migrate(p: Plan, seed: int, progress: Progress, in_vm: bool) -> dict[str, Any]:
    if len(_real_nodes()) >= 2:
        return _migrate_real(p, progress)
    if in_vm and not os.environ.get("PTRELOC_IN_VM"):
        return _migrate_in_vm(p, seed, progress)
    return {"skipped": True,
            "reason": "one NUMA node with memory here: migratepages has nowhere to move data; "
                      "run on a multi-node host or add --in-vm (2-node QEMU guest)"}


# ---- ktables: the kernel's own tables through /proc/kcore ----------------------------------------


def _pagemap_all_s(pid: int) -> tuple[float, int]:
    """Baseline of the ktables suite: read the pagemap entries of EVERY mapping of the process
    (the address space the walk covers; /proc/PID/maps included), one pread per mapping - the
    kernel does the per-page loop and returns the same translations the walk finds.  Returns
    (seconds, bytes read)."""
    from ptreloc import proc as proc_mod

    t0 = time.perf_counter()
    vmas = proc_mod.read_maps(pid)
    fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
    got = 0
    try:
        for vma in vmas:
            if vma.path == "[vsyscall]":  # above TASK_SIZE: pagemap has no entries there
                continue
            got += len(os.pread(fd, vma.pages * 8, vma.start // PAGE * 8))
    finally:
        os.close(fd)
    return time.perf_counter() - t0, got


def _pagemap_decode_s(pid: int) -> tuple[float, int]:
    """Secondary baseline: ptreloc's own pagemap reader (proc.read_pagemap: every resident
    page's address and frame as arrays, found at C speed, appended in Python)."""
    from ptreloc import proc as proc_mod

    t0 = time.perf_counter()
    addresses, _pfns = proc_mod.read_pagemap(pid, proc_mod.read_maps(pid))
    return time.perf_counter() - t0, len(addresses)


_RSS_PROBE = """
import json, sys
from pathlib import Path
from ptreloc import kernel_tables as kt
def kb(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
def walk():
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = kb("VmRSS")
    r = kt.walk_process(int(sys.argv[1]))
    return r, kb("VmHWM") - before
first, first_growth = walk()  # imports done; BTF parse and kallsyms buffer are first-time
second, growth = walk()  # the first result still alive: the second needs memory of its own
print(json.dumps({"first": first_growth, "second": growth}))
"""


def _walk_memory(pid: int, rss: bool = True) -> dict[str, Any]:
    """Memory of one walk, two ways (untimed walks):

    * ``traced_peak_bytes`` / ``traced_result_bytes``: tracemalloc's peak during one
      ``walk_process`` call in this process and what its result still holds after it (every
      Python allocation, exact, whatever the allocator reuses);
    * ``peak_rss_growth_bytes``: in a fresh interpreter, VmHWM during a second walk minus VmRSS
      before it (the high-water mark reset first, ``echo 5 > /proc/self/clear_refs``), the
      first walk's result still alive, so the allocator cannot hand it back: what one more
      walk costs a process, page-granular; ``first_walk_rss_growth_bytes`` the same for the
      interpreter's first walk (BTF parse and the 4 MiB kallsyms buffer included)
      (``rss=False``: not measured, None - a fresh interpreter costs seconds under TCG)."""
    import gc
    import tracemalloc

    from ptreloc import kernel_tables as kt

    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        r = kt.walk_process(pid)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    tables = len(r.tables)
    leaves = sum(len(t.leaf_index) for t in r.tables)
    del r
    out: dict[str, Any] = {"tables": tables, "leaves": leaves,
                           "traced_peak_bytes": peak - base, "traced_result_bytes": current - base,
                           "peak_rss_growth_bytes": None, "first_walk_rss_growth_bytes": None}
    if not rss:
        return out
    done = subprocess.run([sys.executable, "-c", _RSS_PROBE, str(pid)], capture_output=True,
                          text=True, cwd=PROJECT, timeout=600)
    try:
        probe = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as err:
        raise PtrelocError(f"bench ktables: the RSS probe failed (exit {done.returncode}): "
                           f"{(done.stderr.strip().splitlines() or ['no output'])[-1]}") from err
    out["peak_rss_growth_bytes"] = max(0, probe["second"])
    out["first_walk_rss_growth_bytes"] = max(0, probe["first"])
    return out


def _ktables_size(mib: int, rounds: int, progress: Progress) -> dict[str, Any]:
    from ptreloc import kernel_tables as kt

    progress(f"ktables: a dense {mib} MiB workload (4 KiB pages, every page touched)")
    child, info = _spawn_workload(mib)
    try:
        pid = child.pid
        memory = _walk_memory(pid)  # also the warm-up: BTF parsed once for the process
        _pagemap_all_s(pid)
        _pagemap_decode_s(pid)
        walk_s: list[float] = []
        walk_only_s: list[float] = []
        pagemap_s: list[float] = []
        decode_s: list[float] = []
        result: kt.KernelTables | None = None
        pagemap_bytes = resident = 0
        for i in range(rounds):
            progress(f"ktables {mib} MiB: round {i + 1}/{rounds} (walk | pagemap read)")

            def walk() -> None:
                nonlocal result
                result = None  # the previous round's result is freed before the next walk
                t0 = time.perf_counter()
                result = kt.walk_process(pid)
                walk_s.append(time.perf_counter() - t0)
                walk_only_s.append(result.walk_seconds)

            def pagemap() -> None:
                nonlocal pagemap_bytes, resident
                t, pagemap_bytes = _pagemap_all_s(pid)
                pagemap_s.append(t)
                t, resident = _pagemap_decode_s(pid)
                decode_s.append(t)

            for step in ((walk, pagemap) if i % 2 == 0 else (pagemap, walk)):
                step()
        assert result is not None
        levels = result.frames_by_level()
        vmpte = result.check_vmpte()
        pages_checked = result.check_pagemap()
    finally:
        stop_workload(child)
    log_r = [math.log(x) for x in paired_ratios(walk_s, pagemap_s)]
    m, lo, hi = mean_ci(log_r)
    tables = len(result.tables)
    leaves = sum(len(t.leaf_index) for t in result.tables)
    out = {
        "mib": mib,
        "workload_pages": info["pages"],
        "resident_pages": resident,
        "ratio_vs_pagemap_read": _round(math.exp(m), 2),
        "ci95": [_round(math.exp(lo), 2), _round(math.exp(hi), 2)],
        "ratio_range": [_round(min(math.exp(x) for x in log_r), 2),
                        _round(max(math.exp(x) for x in log_r), 2)],
        "ratio_walk_only_vs_pagemap_read": _round(
            statistics.median(paired_ratios(walk_only_s, pagemap_s)), 2),
        "ratio_vs_pagemap_decode": _round(
            statistics.median(paired_ratios(walk_s, decode_s)), 3),
        "rounds": len(log_r),
        "seconds": {"walk_process": _round(statistics.median(walk_s), 4),
                    "walk_only": _round(statistics.median(walk_only_s), 4),
                    "pagemap_read": _round(statistics.median(pagemap_s), 5),
                    "pagemap_decode": _round(statistics.median(decode_s), 4)},
        "ns_per_resident_page": {
            "walk_process": _round(statistics.median(walk_s) / max(1, resident) * 1e9, 1),
            "pagemap_read": _round(statistics.median(pagemap_s) / max(1, resident) * 1e9, 1)},
        "pagemap_bytes": pagemap_bytes,
        "tables": tables,
        "tables_by_level": levels,
        "leaves": leaves,
        "changed_under_walk": result.changed_under_walk,
        "vmpte_ok": vmpte.ok,
        "pagemap_ok": pages_checked.ok,
        "memory": {**memory,
                   "traced_peak_bytes_per_table": _round(memory["traced_peak_bytes"]
                                                         / max(1, memory["tables"]), 1),
                   "traced_peak_bytes_per_resident_page": _round(
                       memory["traced_peak_bytes"] / max(1, memory["leaves"]), 2),
                   "peak_rss_growth_bytes_per_resident_page": _round(
                       (memory["peak_rss_growth_bytes"] or 0) / max(1, memory["leaves"]), 2)},
    }
    return out


def _ktables_model_memory(mib: int, progress: Progress) -> dict[str, dict[str, Any]]:
    """Two more workloads beside the dense ``mib`` MiB one, for the memory model: ``sparse``
    has the same PTE tables with one resident page each (one page per 2 MiB), ``tiny`` one
    page in all (the interpreter's own tables and pages, and the walk's fixed cost)."""
    out = {}
    for name, args in (("sparse", (mib, ("--every", "512"))), ("tiny", (1, ("--every", "256")))):
        progress(f"ktables: {name} workload for the memory model")
        child, _info = _spawn_workload(args[0], extra=args[1])
        try:
            out[name] = _walk_memory(child.pid, rss=False)
        finally:
            stop_workload(child)
    return out


def _solve3(rows: list[tuple[float, float, float, float]]) -> tuple[float, float, float] | None:
    """Solve b = x0 + x1*t + x2*l for three (1, t, l, b) rows (Cramer's rule)."""
    def det(m: list[list[float]]) -> float:
        return (m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
                - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
                + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]))

    a = [list(r[:3]) for r in rows]
    d = det(a)
    if abs(d) < 1e-9:
        return None
    xs = []
    for col in range(3):
        m = [row[:] for row in a]
        for i, r in enumerate(rows):
            m[i][col] = r[3]
        xs.append(det(m) / d)
    return xs[0], xs[1], xs[2]


def _memory_model(walks: Sequence[dict[str, Any]], key: str) -> dict[str, float] | None:
    """bytes = fixed + per_table * tables + per_leaf * leaves, fitted exactly through three
    walks (dense, sparse with the same tables, tiny); None when they do not determine it."""
    x = _solve3([(1.0, w["tables"], w["leaves"], w[key]) for w in walks])
    if x is None:
        return None
    return {"fixed_bytes": _round(x[0], 0), "bytes_per_table": _round(x[1], 1),
            "bytes_per_leaf": _round(x[2], 2)}


def kernel_walk_available() -> tuple[bool, str]:
    """kernel_tables.availability(): whether the ktables suite can run here, and why not."""
    from ptreloc import kernel_tables as kt

    return kt.availability()


def suite_ktables(p: Plan, seed: int, progress: Progress) -> dict[str, Any]:
    ok, reason = kernel_walk_available()
    if not ok:
        return {"skipped": True, "reason": f"the kernel walk is unavailable here: {reason}",
                "sizes_mib": list(p.ktables_mib)}
    by_size = [_ktables_size(mib, p.ktables_rounds, progress) for mib in p.ktables_mib]
    extra = _ktables_model_memory(p.ktables_mib[0], progress)
    worst = max(by_size, key=lambda r: r["ratio_vs_pagemap_read"])
    first = by_size[0]
    walks = [first["memory"], extra["sparse"], extra["tiny"]]
    model = {k: _memory_model(walks, k) for k in ("traced_peak_bytes", "traced_result_bytes")}
    for r in by_size:  # each size's own verdict beside its figure
        r["verdict"] = verdict(r["ratio_vs_pagemap_read"], 2.0, r["ci95"])
    return {
        "skipped": False,
        # headline: the worst size (the goal is <= 2 at every size measured)
        "ratio_vs_pagemap_read": worst["ratio_vs_pagemap_read"],
        "ci95": worst["ci95"],
        "ratio_at_mib": worst["mib"],
        "sizes_mib": list(p.ktables_mib),
        "by_size": {str(r["mib"]): r for r in by_size},
        "memory": {
            "bytes_per_table": first["memory"]["traced_peak_bytes_per_table"],
            "bytes_per_resident_page": first["memory"]["traced_peak_bytes_per_resident_page"],
            "peak_rss_growth_bytes": first["memory"]["peak_rss_growth_bytes"],
            "first_walk_rss_growth_bytes": first["memory"]["first_walk_rss_growth_bytes"],
            "at_mib": first["mib"],
            "sparse": extra["sparse"],
            "tiny": extra["tiny"],
            # fitted through the three walks: what grows with tables, with pages, and neither
            "model_peak": model["traced_peak_bytes"],
            "model_result": model["traced_result_bytes"],
        },
        "rounds": p.ktables_rounds,
        "in_vm": bool(os.environ.get("PTRELOC_IN_VM")),
        "method": "per size: a dense scripts/workload.py (private anonymous, MADV_NOHUGEPAGE "
                  "4 KiB pages, every page touched, 2 threads) walked with "
                  "kernel_tables.walk_process (the whole call: kcore, kallsyms, task list, "
                  "walk) and its pagemap read (every mapping, one pread each: the kernel's own "
                  "walk) in the same rounds, alternating which goes first; ratio = geometric "
                  "mean of per-round walk/pagemap ratios with a 95% t-interval in log space; "
                  "memory from tracemalloc (exact Python allocations) and the VmHWM growth of a "
                  "fresh interpreter's walk; fixed, per-table and per-leaf bytes fitted through "
                  "the dense walk, a sparse one with the same PTE tables (one page each) and a "
                  "one-page workload",
    }


# ---- run ----------------------------------------------------------------------------------------


def _get(d: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def verdict(value: Any, target: float, interval: Sequence[float] | None) -> str:
    """``met``, ``missed`` or ``undecided`` for a goal "value <= target".

    With a 95 % interval [lo, hi] the point value alone decides nothing: ``met`` only when
    hi <= target (the whole interval is within the goal), ``missed`` when lo > target, and
    ``undecided`` when the interval straddles the target (too wide to tell).  Without an
    interval, the value decides.  A missing or non-finite value is ``missed``."""
    if not (isinstance(value, int | float) and math.isfinite(value)):
        return "missed"
    if interval is not None and len(interval) == 2 and all(
            isinstance(x, int | float) and math.isfinite(x) for x in interval):
        lo, hi = min(interval), max(interval)
        if hi <= target:
            return "met"
        if lo > target:
            return "missed"
        return "undecided"
    return "met" if value <= target else "missed"


def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every goal of the suites in ``results``: key, target, value, interval (the 95 % interval
    the verdict used, or None), verdict (:func:`verdict`) and ``met`` - true, false, or None
    when undecided (kept beside ``verdict`` for scripts that read ``met``)."""
    out = []
    for suite, key, target in GOALS:
        if suite not in results or _get(results, f"{suite}.skipped") is True:
            continue  # a suite that could not run here has no verdict (its reason says why)
        value = _get(results, key)
        ikey = GOAL_INTERVALS.get(key)
        interval = _get(results, ikey) if ikey else None
        v = verdict(value, target, interval)
        out.append({"key": key, "target": target, "value": value, "interval": interval,
                    "verdict": v, "met": {"met": True, "missed": False}.get(v)})
    return out


def run(
    suites: Sequence[str] = (),
    *,
    quick: bool = False,
    seed: int = 1,
    in_vm: bool = False,
    progress: Progress | None = None,
    ktables_mib: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Run the named suites (all when none) and return the nested results with ``goals``.
    ``ktables_mib``: the ktables suite's resident sizes (default :data:`KTABLES_MIB`, quick
    :data:`KTABLES_MIB_QUICK`)."""
    names = check_suites(suites)
    say = progress or (lambda _msg: None)
    p = plan(quick, ktables_mib)
    topo = numa.topology()
    results: dict[str, Any] = {
        "meta": {
            "version": __version__,
            "quick": quick,
            "seed": seed,
            "cpus": os.cpu_count(),
            "nodes_with_memory": sorted(topo.with_memory),
            "in_vm": bool(os.environ.get("PTRELOC_IN_VM")),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            # what scripts should check before reading any figure
            "shape_only": quick,
        }
    }
    if quick:
        results["meta"]["note"] = QUICK_NOTE
    t0 = time.perf_counter()
    for name in names:
        t = time.perf_counter()
        if name == "migrate":
            res = suite_migrate(p, seed, say, in_vm)
        else:
            res = globals()[f"suite_{name}"](p, seed, say)
        res["seconds"] = _round(time.perf_counter() - t, 2)
        results[name] = res
        for g in goals({name: res}):
            # nested like the figures: fault.goals.bare.overhead_pct = {target, value, met}
            *path, leaf = g["key"].split(".")[1:]
            node = res.setdefault("goals", {})
            for part in path:
                node = node.setdefault(part, {})
            node[leaf] = {k: g[k] for k in ("target", "value", "interval", "verdict", "met")}
    results["goals"] = goals(results)
    results["meta"]["seconds"] = _round(time.perf_counter() - t0, 2)
    return results


# ---- plot ---------------------------------------------------------------------------------------


def _goal_of(results: dict[str, Any], key: str) -> dict[str, Any] | None:
    return next((g for g in results.get("goals", []) if g["key"] == key), None)


def _verdict(g: dict[str, Any] | None) -> str:
    if g is None:
        return ""
    return {"met": "goal met", "missed": "goal MISSED"}.get(
        g.get("verdict", ""), "goal undecided (interval too wide)")


def _size_label(nbytes: int) -> str:
    return f"{nbytes // GIB} GiB" if nbytes >= GIB else f"{nbytes // MIB} MiB"


def plot(results: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write a summary of ``results`` (PNG, SVG or PDF by ``path``'s extension, see
    :func:`check_plot_path`): one panel per suite that ran (fault, walk, relocate,
    concurrent), each with its goal drawn as a red dashed line, values written on the bars, the
    95 % intervals as error bars, and whether the goal was met in the panel's title."""
    fmt = check_plot_path(path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [s for s in ("fault", "walk", "relocate", "concurrent") if s in results]
    n = max(1, len(panels))
    cols = 1 if n == 1 else 2
    rows = (n + cols - 1) // cols
    fig, axes_grid = plt.subplots(rows, cols, figsize=(6.4 * cols, 4.6 * rows), squeeze=False)
    axes = [ax for row in axes_grid for ax in row]
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    if not panels:
        axes[0].text(0.5, 0.5, "no suite with a chart ran: mirror and migrate are reported in "
                     "the tables and the JSON", ha="center", va="center", wrap=True)
    goal_style = {"ls": "--", "color": "tab:red", "lw": 1.4}
    for ax, name in zip(axes, panels, strict=False):
        r = results[name]
        if name == "fault":
            variants = ("bare", "with_data")
            vs = [r[v]["overhead_pct"] for v in variants]
            lo = [v - r[k]["ci95_pct"][0] for v, k in zip(vs, variants, strict=True)]
            hi = [r[k]["ci95_pct"][1] - v for v, k in zip(vs, variants, strict=True)]
            xs = range(len(variants))
            ax.bar(xs, vs, yerr=[lo, hi], capsize=8, color=["tab:blue", "tab:orange"],
                   width=0.5, label="median of paired rounds, 95 % CI")
            goal_label = "goal: " + ", ".join(
                f"{k} <= {g['target']} %" for k in variants
                if (g := _goal_of(results, f"fault.{k}.overhead_pct")))
            for x, v, k in zip(xs, vs, variants, strict=True):
                g = _goal_of(results, f"fault.{k}.overhead_pct")
                if g:
                    ax.hlines(g["target"], x - 0.35, x + 0.35,
                              label=goal_label if x == 0 else None, **goal_style)
                ax.annotate(f"{v:+.2f} %", (x + 0.25, v), xytext=(4, 0),
                            textcoords="offset points", fontsize=9, fontweight="bold",
                            va="center")
            ax.axhline(1.6, ls=":", color="grey", label="RFC lmbench lat_pagefault: 1.6 %")
            ax.axhline(0, color="black", lw=0.8)
            ax.set_xticks(list(xs), [f"{k}\n{r[k]['ns_per_fault']['relo']} ns/fault"
                                     for k in variants])
            ax.set_ylabel("slowdown of the relocation build (%)")
            verdicts = ", ".join(f"{k} {_verdict(_goal_of(results, f'fault.{k}.overhead_pct'))}"
                                 for k in variants)
            ax.set_title(f"fault: cost of relocation support on the fault path\n{verdicts}",
                         loc="left", fontsize=10)
        elif name == "walk":
            labels = ["local tables"]
            vals = [r["local"]["ratio_vs_chase"]]
            cis = [r["local"].get("ci95") or r.get("ci95")]
            if not r["remote"].get("skipped"):
                labels.append("remote tables")
                vals.append(r["remote"]["ratio_vs_chase"])
                cis.append(r["remote"].get("ci95"))
            lo = [v - (c[0] if c else v) for v, c in zip(vals, cis, strict=True)]
            hi = [(c[1] if c else v) - v for v, c in zip(vals, cis, strict=True)]
            ax.bar(labels, vals, yerr=[lo, hi], capsize=8, color="tab:green", width=0.4,
                   label="median ratio, 95 % CI")
            for x, v in enumerate(vals):  # right of the bar: clear of the error bar
                ax.annotate(f"{v:.2f}x", (x + 0.2, v), xytext=(3, 0), textcoords="offset points",
                            fontsize=9, fontweight="bold", va="center")
            ax.axhline(1.5, label="goal (<= 1.5x)", **goal_style)
            ax.axhline(1.0, color="black", lw=0.8)
            ax.set_xlim(-0.8, len(labels) - 0.2)
            ax.set_ylabel("TLB-miss walk time / bare pointer chase (x)")
            ax.set_title("walk: emulated TLB-miss walk vs a bare dependent chase\n"
                         f"{_verdict(_goal_of(results, 'walk.ratio_vs_chase'))}",
                         loc="left", fontsize=10)
        elif name == "relocate":
            sizes = r["sizes"]
            xs = [s["mapped_bytes"] / MIB for s in sizes]
            ax.semilogx(xs, [s["ratio_vs_memcpy"] for s in sizes], "o-", color="tab:purple",
                        label="relocation (no poisoning)")
            if all(s.get("poisoned") for s in sizes):
                ax.semilogx(xs, [s["poisoned"]["ratio_vs_memcpy"] for s in sizes], "s--",
                            color="tab:purple", alpha=0.5, label="with freed-frame poisoning")
            for s, x in zip(sizes, xs, strict=True):
                ax.annotate(f"{s['ratio_vs_memcpy']:.1f}x\n{s['frames']} tables", (x, s[
                            "ratio_vs_memcpy"]), xytext=(4, 6), textcoords="offset points",
                            fontsize=8)
            ax.axhline(1.5, label="goal (<= 1.5x memcpy)", **goal_style)
            ax.axhline(1.0, color="black", lw=0.8)
            ax.set_ylim(bottom=0)
            ax.set_xticks(xs, [_size_label(s["mapped_bytes"]) for s in sizes])
            ax.set_xlim(xs[0] / 2, xs[-1] * 5)  # room for the last label
            ax.minorticks_off()
            ax.set_xlabel("address space mapped (log scale)")
            ax.set_ylabel("relocation time / memcpy of the same tables (x)")
            ax.set_title(f"relocate: per-table cost vs memcpy; "
                         f"{_verdict(_goal_of(results, 'relocate.ratio_vs_memcpy'))}\n"
                         f"growth exponent {r['growth_exponent']} (goal <= 1.1: "
                         f"{_verdict(_goal_of(results, 'relocate.growth_exponent'))})",
                         loc="left", fontsize=10)
        else:
            bars = [(f"rewalk\nbatch {b}", v) for b, v in r["rewalk"]["by_batch"].items()]
            bars.append((f"stop\nbatch {r['stop'].get('batch', '')}", r["stop"]))
            vals = [v["p99_ratio"] for _, v in bars]
            rng = [v.get("p99_ratio_range") or [v["p99_ratio"]] * 2 for _, v in bars]
            lo = [max(0.0, v - g[0]) for v, g in zip(vals, rng, strict=True)]
            hi = [max(0.0, g[1] - v) for v, g in zip(vals, rng, strict=True)]
            colors = ["tab:red" if "rewalk" in k else "tab:gray" for k, _ in bars]
            ax.bar([k for k, _ in bars], vals, yerr=[lo, hi], capsize=6, color=colors,
                   alpha=0.8, width=0.6, label="median over rounds (bars: per-round range)")
            for x, v in enumerate(vals):
                ax.annotate(f"{v:.2f}", (x + 0.3, v), xytext=(2, 0), textcoords="offset points",
                            fontsize=9, fontweight="bold", va="center")
            ax.axhline(2.0, label="goal for rewalk (<= 2.0)", **goal_style)
            ax.axhline(1.0, color="black", lw=0.8)
            ax.set_ylabel("p99 access latency: relocating / idle (x)")
            ax.set_title("concurrent: CPU access tail while tables are relocated\n"
                         f"rewalk (batch {DEFAULT_BATCH}) "
                         f"{_verdict(_goal_of(results, 'concurrent.rewalk.p99_ratio'))}",
                         loc="left", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.margins(y=0.2)
        ax.legend(fontsize=8, loc="upper right" if name == "relocate" else "best",
                  framealpha=0.9)
    meta = results.get("meta", {})
    kind = ("QUICK run (CI smoke: checks the shape, not the speed - do not read the figures)"
            if meta.get("quick") else "full run")
    fig.suptitle(f"ptreloc bench {meta.get('version', '')} - {kind}\n"
                 f"{meta.get('started', '')}, seed {meta.get('seed', '')}, "
                 f"{meta.get('cpus', '?')} CPUs, nodes with memory "
                 f"{meta.get('nodes_with_memory', '?')}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format=fmt)
    plt.close(fig)
