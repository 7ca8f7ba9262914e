"""Suite ``pool``: evacuating and compacting a node's pool of table frames, per frame, against
memcpy of the same tables in the same run (``evacuate.ratio_vs_memcpy``,
``compact.ratio_vs_memcpy``), with the pool's free runs before and after the compaction.

Each round builds a fragmented pool (two address spaces map chunk by chunk in turn, every table
on node 0, then one is destroyed: every other slot is a hole), then times memcpy of the
remaining tables' own bytes, ``compact`` of pool 0 and ``evacuate`` of pool 0 to node 1 (the
baseline first in every other round).  Poisoning of freed frames is off, as in the relocate
suite's headline.  The per-frame cost of compaction is per frame it moved (the upper half of
the live ones); of evacuation, per frame (all of them).
"""

from __future__ import annotations

import statistics
from typing import Any

from ptreloc import _native
from ptreloc.bench import machine
from ptreloc.bench.plan import DEFAULT_BATCH, GEOMETRY, MIB, Plan, Progress
from ptreloc.bench.stats import paired_ratios, round_finite

__all__ = ["measure"]


def _op(rows: list[dict[str, int]], op: str) -> dict[str, Any]:
    frames = [max(1, r[f"{op}_frames"]) for r in rows]
    per = [r[f"{op}_ns"] / f for r, f in zip(rows, frames, strict=True)]
    base = [r["memcpy_ns"] / max(1, r["frames"]) for r in rows]
    return {
        "ratio_vs_memcpy": round_finite(statistics.median(paired_ratios(per, base))),
        "ns_per_frame": round_finite(statistics.median(per), 1),
        "memcpy_ns_per_frame": round_finite(statistics.median(base), 1),
        "frames": rows[0][f"{op}_frames"],
    }


def measure(p: Plan, seed: int, progress: Progress) -> dict[str, Any]:
    binds, two_real = machine.binds()
    c = _native.core("relo")
    rows: list[dict[str, int]] = []
    mapped = p.pool_mib * MIB
    for i in range(p.pool_rounds):
        progress(f"pool: {p.pool_mib} MiB x 2 address spaces, round {i + 1}/{p.pool_rounds}")
        rows.append(_native.bench_pool_round(c, geometry=GEOMETRY, mapped=mapped,
                                             bind_nodes=binds, strategy="rewalk",
                                             batch=DEFAULT_BATCH, memcpy_first=i % 2 == 0))
    last = rows[-1]
    return {
        "evacuate": {**_op(rows, "evac"), "frames_left": last["evac_left"]},
        "compact": {
            **_op(rows, "compact"),
            "runs_2m": last["runs_2m"],
            "used": last["used_before"],
            "packed": bool(last["packed_after"]),
            "largest_free_run": {"before": last["largest_free_before"],
                                 "after": last["largest_free_after"]},
            "free_2m_runs": {"before": last["free_2m_before"], "after": last["free_2m_after"]},
        },
        "mapped_bytes": mapped,
        "tables": last["frames"],
        "strategy": "rewalk",
        "batch": DEFAULT_BATCH,
        "rounds": p.pool_rounds,
        "nodes": {"binds": list(binds), "real": two_real},
    }
