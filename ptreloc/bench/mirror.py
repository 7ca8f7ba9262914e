"""Suite ``mirror``: snapshot + mirror of a live process against one read of its pagemap, at
each resident size of ``--mirror-mib`` (default 1 GiB and 8 GiB), and the memory ``show``
needs per resident page.

Per size: a dense workload (``python -m ptreloc.workload``) is started once; each round reads
the region's pagemap once (the baseline: what any look at the process must at least do), then
takes ``proc.snapshot`` + ``mirror.mirror`` - the whole pipeline ``show`` and ``migrate`` run,
numa_maps included.  ``ratio_vs_pagemap_read`` is the median of the per-round ratios, with a
bootstrap 95 % interval of that median (``ci95``): the machines are shared and a round can be
hit by another job.  The top-level figures are the smallest size's; ``largest`` the largest's.

``memory``: ``ptreloc show --pid P --json`` in a fresh interpreter on the largest workload,
its peak RSS (VmHWM) against the same command on a process with almost nothing
resident (``sleep``): ``bytes_per_resident_page`` = (peak - baseline peak) / resident pages.
The interpreter and imports (~29 MB) are in both and cancel.  Each command runs
``MEMORY_RUNS`` times and the least peak counts (a peak can only be raised by noise: the
allocator's luck, a late import); ``noise_bytes_per_resident_page`` is the larger of the two
spreads over the same pages.  On the quick 32 MiB workload the figure is within that noise
(a CI run once saw -1.4 B/page from single runs); at 8 GiB it is not.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from typing import Any

from ptreloc import workload
from ptreloc.bench.plan import GIB, PAGE, Plan, Progress
from ptreloc.bench.stats import bootstrap_ci, paired_ratios, round_finite

__all__ = ["MEMORY_RUNS", "measure", "show_peak_rss_kb"]

#: runs of each ``show`` whose peak RSS is taken (the least counts)
MEMORY_RUNS = 3

#: runs ``ptreloc show --pid PID --json`` with stdout to /dev/null and prints its peak RSS in kB
#: (VmHWM: the high-water mark of this process's own memory; getrusage's ru_maxrss would also
#: count the forking parent's RSS, which Linux carries over exec)
_SHOW_PEAK = """
import os, sys
sys.stdout = open(os.devnull, "w")
from ptreloc.cli import main
try:
    main(["show", "--pid", sys.argv[1], "--json"], standalone_mode=False)
except SystemExit:
    pass
with open("/proc/self/status") as fh:
    hwm = [line.split()[1] for line in fh if line.startswith("VmHWM:")]
sys.stderr.write(hwm[0] + "\\n")
"""


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


def show_peak_rss_kb(pid: int) -> int:
    """Peak RSS (kB) of ``ptreloc show --pid PID --json`` in a fresh interpreter."""
    done = subprocess.run([sys.executable, "-c", _SHOW_PEAK, str(pid)], capture_output=True,
                          text=True, timeout=600, env=workload.environment(None), check=False)
    lines = done.stderr.strip().splitlines()
    if done.returncode != 0 or not lines or not lines[-1].isdigit():
        from ptreloc.errors import PtrelocError

        raise PtrelocError(f"bench mirror: 'ptreloc show --pid {pid}' failed (exit "
                           f"{done.returncode}): {done.stderr.strip()[-200:]}")
    return int(lines[-1])


def _one_size(mib: int, rounds: int, seed: int, progress: Progress,
              memory: bool) -> dict[str, Any]:
    from ptreloc import mirror as mirror_mod
    from ptreloc import proc as proc_mod

    progress(f"mirror: a live {mib} MiB workload, {rounds} rounds")
    child, info = workload.spawn(mib)
    try:
        totals: list[float] = []
        snaps: list[float] = []
        base: list[float] = []
        stages: dict[str, list[float]] = {}
        resident = 0
        source = ""
        for i in range(rounds + 1):  # round 0 warms caches and imports
            b = _pagemap_read_s(child.pid, info["address"], info["pages"])
            t0 = time.perf_counter()
            snap = proc_mod.snapshot(child.pid)
            t1 = time.perf_counter()
            m = mirror_mod.mirror(snap)
            t2 = time.perf_counter()
            resident = len(snap.resident)
            source = snap.node_source
            m.close()
            if i:
                totals.append(t2 - t0)
                snaps.append(t1 - t0)
                base.append(b)
                for k, v in {**snap.elapsed_s, "mirror": t2 - t1}.items():
                    stages.setdefault(k, []).append(v / b)
            del snap, m
        peak: dict[str, Any] = {}
        if memory:
            progress(f"mirror: peak RSS of 'ptreloc show' on the {mib} MiB workload")
            sleeper = subprocess.Popen(["sleep", "600"])
            try:
                lows = [show_peak_rss_kb(sleeper.pid) for _ in range(MEMORY_RUNS)]
            finally:
                sleeper.kill()
                sleeper.wait()
            highs = [show_peak_rss_kb(child.pid) for _ in range(MEMORY_RUNS)]
            low, high = min(lows), min(highs)
            spread = max(max(lows) - low, max(highs) - high)
            peak = {"show_peak_rss_mb": round_finite(high / 1024, 1),
                    "baseline_peak_rss_mb": round_finite(low / 1024, 1),
                    "bytes_per_resident_page": round_finite((high - low) * 1024 / resident, 1),
                    "noise_bytes_per_resident_page": round_finite(spread * 1024 / resident, 1),
                    "runs": MEMORY_RUNS, "resident_pages": resident, "workload_mib": mib}
    finally:
        workload.stop(child)
    gib = resident * PAGE / GIB
    total = statistics.median(totals)
    ratios = paired_ratios(totals, base)
    lo, hi = bootstrap_ci(ratios, seed=seed, stat=statistics.median)
    out = {
        "resident_gib": round_finite(gib, 4),
        "gib_per_s": round_finite(gib / total),
        "seconds": round_finite(total, 4),
        "snapshot_share": round_finite(statistics.median(snaps) / total),
        "ratio_vs_pagemap_read": round_finite(statistics.median(ratios), 2),
        "ci95": [round_finite(lo, 2), round_finite(hi, 2)],
        "pagemap_read_s": round_finite(statistics.median(base), 5),
        # each stage's time over the same round's pagemap read (median), to see where it goes
        "stages_vs_pagemap_read": {k: round_finite(statistics.median(v), 2)
                                   for k, v in stages.items()},
        "node_source": source,
        "rounds": len(totals),
        "workload_mib": mib,
    }
    if peak:
        out["_memory"] = peak
    return out


def measure(p: Plan, seed: int, progress: Progress) -> dict[str, Any]:
    sizes = list(p.mirror_mib)
    by_size = {}
    for k, mib in enumerate(sizes):
        by_size[str(mib)] = _one_size(mib, p.mirror_rounds, seed, progress,
                                      memory=k == len(sizes) - 1)
    memory = by_size[str(sizes[-1])].pop("_memory")
    first, last = by_size[str(sizes[0])], by_size[str(sizes[-1])]
    return {
        **first,
        "sizes_mib": sizes,
        "by_size": by_size,
        "largest": {"workload_mib": sizes[-1],
                    "ratio_vs_pagemap_read": last["ratio_vs_pagemap_read"],
                    "ci95": last["ci95"]},
        "memory": memory,
    }
