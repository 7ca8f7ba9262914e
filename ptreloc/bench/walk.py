"""Suite ``walk``: TLB-miss latency of an emulated CPU against a bare pointer chase over the
same frames (``ratio_vs_chase``); local against remote tables on two real nodes.

Each round times both loops in alternating slices of a few thousand walks (csrc/bench.c,
``WALK_SLICE``), so the shared machine's drift during a round falls on both of its sides; the
headline is the mean of the per-round ratios with a Student-t 95 % interval."""

from __future__ import annotations

import os
import statistics
from typing import Any

from ptreloc import _native
from ptreloc.bench import machine
from ptreloc.bench.plan import GEOMETRY, Plan, Progress
from ptreloc.bench.stats import mean_ci, paired_ratios, round_finite

__all__ = ["measure"]


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
        "ratio_vs_chase": round_finite(m), "ci95": [round_finite(lo), round_finite(hi)],
        "rounds": len(r),
        "ns_per_walk": {"cpu": round_finite(statistics.median(cpu_ns) / p.walk_accesses, 1),
                        "chase": round_finite(statistics.median(chase_ns) / p.walk_accesses, 1)},
        "tlb_hit_rate": round_finite(st["tlb_hits"] / max(1, st["accesses"]), 4),
        "pwc_hit_rate": round_finite(st["pwc_hits"] / max(1, st["walks"]), 4),
        "table_node": table_node,
        "_cpu_ns": cpu_ns,
    }


def measure(p: Plan, seed: int, progress: Progress) -> dict[str, Any]:
    binds, two_real = machine.binds()
    old = machine.pin_to_node(binds[0]) if binds[0] >= 0 else None
    try:
        progress(f"walk: {p.walk_rounds} rounds x {p.walk_accesses} walks, local tables")
        local = _walk_one(p, seed, binds, 0)
        remote: dict[str, Any]
        if two_real:
            progress("walk: remote tables")
            remote = _walk_one(p, seed, binds, 1)
            rr = paired_ratios(remote.pop("_cpu_ns"), local["_cpu_ns"])
            remote["remote_vs_local"] = round_finite(statistics.fmean(rr))
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
                  "baseline: dependent root-to-leaf chase over the same frames; the two loops "
                  "alternate in slices of 4096 walks within each round",
        "local": local,
        "remote": remote,
        "cpu_node": binds[0],
    }
