"""Suite ``concurrent``: access latency p50/p99/max of emulated CPUs while relocation runs,
against idle phases of the same run (``p99_ratio``), rewalk at several batch sizes and stop;
headline layout one page per PTE table (idle accesses walk too), the consecutive cache-resident
layout beside it (``cache_resident``)."""

from __future__ import annotations

import math
import statistics
from typing import Any

from ptreloc import _native
from ptreloc.bench import machine
from ptreloc.bench.plan import DEFAULT_BATCH, GEOMETRY, Plan, Progress
from ptreloc.bench.stats import MIN_PHASE_ACCESSES, hist_percentile, pair_ratios, round_finite

__all__ = ["measure"]


def _hist_summary(c: _native.Core, hist: list[int], mx: int) -> dict[str, float]:
    def lower(i: int) -> int:
        return _native.bench_hist_lower(c, i)

    return {"p50_ns": hist_percentile(hist, 0.50, lower),
            "p99_ns": hist_percentile(hist, 0.99, lower),
            "p999_ns": hist_percentile(hist, 0.999, lower), "max_ns": float(mx)}

def measure(p: Plan, seed: int, progress: Progress) -> dict[str, Any]:
    binds, two_real = machine.binds()
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
            "p99_ratio": round_finite(statistics.median(r99)) if r99 else math.nan,
            "p999_ratio": round_finite(statistics.median(r999)) if r999 else math.nan,
            "p99_ratio_range": [round_finite(min(r99)), round_finite(max(r99))] if r99 else [],
            "p99_ratio_pooled": round_finite(busy["p99_ns"] / idle["p99_ns"]),
            "p50_ratio": round_finite(busy["p50_ns"] / idle["p50_ns"]),
            "rounds": len(r99),
            "rounds_excluded": excluded,
            "relocations": r["relocations"],
            "frames_relocated": r["frames"],
            "relocation_ms_mean": round_finite(r["reloc_ns"] / max(1, r["relocations"]) / 1e6, 4),
        }
        if strategy == "stop":
            res["pause_max_ms"] = round_finite(r["stopped_max_ns"] / 1e6, 4)
            res["pause_mean_ms"] = round_finite(
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
