"""``ptreloc bench``: what relocation support, relocation and a migration cost.

Every headline figure is a RATIO against a baseline measured in the same run, in interleaved
rounds (the machines this runs on are shared and noisy: a ratio of neighbours survives noise
that an absolute time does not).  Absolute times are reported too, but are not the figure.
The timed loops are C (csrc/bench.c); this package sets them up, interleaves the rounds, and
does the statistics.

Modules:

``plan``        the suites, the sizes and rounds of a full or ``--quick`` run, and the checks
                made before measuring (suite names, ``--ktables-mib``, output paths);
``stats``       paired ratios, t- and bootstrap intervals, overhead %, histogram percentiles;
``goals``       the goals and the verdict on each (met / missed / undecided);
``machine``     real nodes, the benchmark arena's two pools, CPU pinning, the test bed;
``runner``      :func:`run`: the suites in order, ``meta``, goals nested per suite;
``plot``        ``--plot`` (matplotlib, optional);
one module per suite (:data:`SUITES`), each with ``measure()``:

``fault``       the RFC's lmbench lat_pagefault comparison: relocation build against the build
                without it (``overhead_pct``), ``bare`` and ``with_data``;
``walk``        TLB-miss latency against a bare pointer chase (``ratio_vs_chase``);
``relocate``    per-frame relocation cost against memcpy (``ratio_vs_memcpy``), growth exponent;
``pool``        evacuating and compacting a fragmented pool, per frame against memcpy
                (``evacuate.ratio_vs_memcpy``, ``compact.ratio_vs_memcpy``), free runs before/after;
``concurrent``  access latency while relocation runs against idle phases (``p99_ratio``);
``mirror``      snapshot + mirror throughput of a live process (resident GiB/s);
``migrate``     ``ptreloc migrate`` against numactl's ``migratepages`` (two real nodes, or the
                scripts/numa-vm guest with ``in_vm``); skipped with the reason otherwise;
``ktables``     the kernel's own page tables walked through /proc/kcore against reading
                /proc/PID/pagemap (``ratio_vs_pagemap_read``); root and /proc/kcore, or skipped.

The live workloads the suites measure are ``python -m ptreloc.workload`` (:mod:`ptreloc.workload`).
"""

from __future__ import annotations

from ptreloc.bench.goals import GOAL_INTERVALS, GOALS, goals, verdict
from ptreloc.bench.ktables import kernel_walk_available
from ptreloc.bench.plan import (
    KTABLES_MIB,
    KTABLES_MIB_QUICK,
    MIRROR_MIB,
    MIRROR_MIB_QUICK,
    SUITES,
    Plan,
    Progress,
    check_ktables_mib,
    check_mib_list,
    check_suites,
    check_writable,
    plan,
)
from ptreloc.bench.plot import (
    PLOT_FORMATS,
    PlotUnavailable,
    check_plot_path,
    plot,
    require_matplotlib,
)
from ptreloc.bench.runner import QUICK_NOTE, run
from ptreloc.bench.stats import (
    MIN_PHASE_ACCESSES,
    bootstrap_ci,
    hist_percentile,
    loglog_slope,
    mean_ci,
    overhead_pct,
    pair_ratios,
    paired_ratios,
    t_quantile_975,
)
from ptreloc.workload import stop as stop_workload

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
    "Progress",
    "plan",
    "run",
    "check_suites",
    "check_ktables_mib",
    "check_mib_list",
    "MIRROR_MIB",
    "MIRROR_MIB_QUICK",
    "KTABLES_MIB",
    "KTABLES_MIB_QUICK",
    "PLOT_FORMATS",
    "require_matplotlib",
    "check_plot_path",
    "check_writable",
    "plot",
    "kernel_walk_available",
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
