"""Suite ``mirror``: snapshot + mirror throughput of a live process (resident GiB/s), against
one read of its pagemap."""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

from ptreloc import workload
from ptreloc.bench.plan import GIB, PAGE, Plan, Progress
from ptreloc.bench.stats import paired_ratios, round_finite

__all__ = ["measure"]


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


def measure(p: Plan, seed: int, progress: Progress) -> dict[str, Any]:
    from ptreloc import mirror as mirror_mod
    from ptreloc import proc as proc_mod

    progress(f"mirror: a live {p.mirror_mib} MiB workload, {p.mirror_rounds} rounds")
    child, info = workload.spawn(p.mirror_mib)
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
        workload.stop(child)
    gib = resident * PAGE / GIB
    total = statistics.median(totals)
    return {
        "resident_gib": round_finite(gib, 4),
        "gib_per_s": round_finite(gib / total),
        "seconds": round_finite(total, 4),
        "snapshot_share": round_finite(statistics.median(snaps) / total),
        "ratio_vs_pagemap_read": round_finite(statistics.median(paired_ratios(totals, base)), 1),
        "rounds": len(totals),
        "workload_mib": p.mirror_mib,
    }
