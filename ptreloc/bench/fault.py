"""Suite ``fault``: the RFC's lmbench lat_pagefault comparison - the same fault loop against the
core built with relocation support and without it (``overhead_pct`` with a 95 % interval over
paired rounds), ``bare`` and ``with_data`` (each fault zeroes a 4 KiB page)."""

from __future__ import annotations

import statistics
from typing import Any

from ptreloc import _native
from ptreloc.bench import machine
from ptreloc.bench.plan import GEOMETRY, Plan, Progress
from ptreloc.bench.stats import overhead_pct, round_finite

__all__ = ["FAULT_BLOCK", "FAULT_REPS", "measure"]

FAULT_REPS = 3  # passes per build per round (the fastest counts)
FAULT_BLOCK = 4  # rounds per pair of contexts (then both are re-created)


def measure(p: Plan, seed: int, progress: Progress) -> dict[str, Any]:
    bind = (machine.real_nodes() or [-1])[0]
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
            "relo": round_finite(statistics.median(ta) / p.fault_pages, 1),
            "norelo": round_finite(statistics.median(tb) / p.fault_pages, 1),
        }
        out[variant] = res
    return out
