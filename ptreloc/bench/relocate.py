"""Suite ``relocate``: per-frame relocation cost against memcpy of the same frames
(``ratio_vs_memcpy``) from 1 MiB to 64 GiB mapped, with the log-log growth exponent.

``ratio_vs_memcpy`` is the largest size's figure (64 GiB in a full run); every size is also
under a stable key of its own, ``at_<size>`` - ``relocate.at_1mib.ratio_vs_memcpy``,
``relocate.at_64gib.ratio_vs_memcpy`` - which is what the per-size goals name.

The headline rounds relocate without phase clocks (``PTR_RELOC_F_UNTIMED``), timed from the
outside exactly as the memcpy beside them: a clock read costs 20-70 ns in a VM and a relocation
reads it at 8 phase boundaries, a third of a 1 MiB relocation.  Interleaved rounds with the
clocks on give the per-phase breakdown (``phase_ns``) and ``ratio_vs_memcpy_phase_timed``.

Each size's ratio is the median of its rounds' paired ratios, with a bootstrap 95 % interval of
that median (``ci95``: the goals' verdicts use it).  Small sizes get more rounds - a 1 MiB round
is a few microseconds, and seven of them (the large sizes' count) gave medians from 1.9 to 3.6
in three runs of the same build; see :func:`rounds_for`."""

from __future__ import annotations

import statistics
from typing import Any

from ptreloc import _native
from ptreloc.bench import machine
from ptreloc.bench.plan import DEFAULT_BATCH, GEOMETRY, GIB, MIB, Plan, Progress
from ptreloc.bench.stats import bootstrap_ci, loglog_slope, paired_ratios, round_finite

__all__ = ["measure", "rounds_for", "size_key"]

#: Sizes at or above this get the plan's round count; smaller ones proportionally more, up to
#: 30 times as many (1 MiB and 16 MiB: 210 and 112 rounds in a full run, 256 MiB and up: 7).
_FULL_ROUNDS_AT = 256 * MIB


def rounds_for(size: int, rounds: int) -> int:
    """Paired rounds for one mapped size: ``rounds`` at 256 MiB and above, more below (a
    round there costs microseconds and its noise is the machine's, not the code's)."""
    return max(rounds, min(30 * rounds, rounds * _FULL_ROUNDS_AT // max(size, 1)))


def size_key(mapped_bytes: int) -> str:
    """The stable key of one mapped size: ``at_1mib``, ``at_256mib``, ``at_64gib``."""
    if mapped_bytes >= GIB and mapped_bytes % GIB == 0:
        return f"at_{mapped_bytes // GIB}gib"
    return f"at_{mapped_bytes // MIB}mib"


def _ratios(rows: list[dict[str, Any]]) -> list[float]:
    return paired_ratios([x["reloc_ns"] for x in rows], [x["memcpy_ns"] for x in rows])


def _ratio(rows: list[dict[str, Any]]) -> float:
    return round_finite(statistics.median(_ratios(rows)))


def _ci95(rows: list[dict[str, Any]], seed: int) -> list[float]:
    """Bootstrap 95 % interval of the median paired ratio."""
    lo, hi = bootstrap_ci(_ratios(rows), seed=seed, stat=statistics.median)
    return [round_finite(lo), round_finite(hi)]


def _reloc_size(rows: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    frames = rows[0]["frames"]
    return {
        "ratio_vs_memcpy": _ratio(rows),
        "ci95": _ci95(rows, seed),
        "rounds": len(rows),
        "reloc_ns": statistics.median(x["reloc_ns"] for x in rows),
        "memcpy_ns": statistics.median(x["memcpy_ns"] for x in rows),
        "ns_per_frame": round_finite(statistics.median(x["reloc_ns"] for x in rows) / frames, 1),
        "memcpy_ns_per_frame": round_finite(
            statistics.median(x["memcpy_ns"] for x in rows) / frames, 1),
    }


def _phases(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The rounds whose relocations read the clock at every phase boundary: the breakdown,
    and the ratio with those clock reads in it (8 reads, 20-70 ns each in a VM)."""
    return {"phase_ns": {k: statistics.median(x["timings_ns"][k] for x in rows)
                         for k in rows[0]["timings_ns"]},
            "ratio_vs_memcpy_phase_timed": _ratio(rows)}


def measure(p: Plan, seed: int, progress: Progress) -> dict[str, Any]:
    """Relocation against memcpy, with freed-frame poisoning off (the headline: what the kernel
    does outside debug configurations) and on (ptreloc's default, what makes a freed-frame
    access detectable) - alternate rounds of the same context, each paired with its own memcpy."""
    binds, two_real = machine.binds()
    c = _native.core("relo")
    sizes: list[dict[str, Any]] = []
    for size in p.reloc_sizes:
        rounds = rounds_for(size, p.reloc_rounds)
        progress(f"relocate: {size // MIB} MiB mapped, {rounds} rounds x poison off/on")
        r = _native.BenchReloc(c, GEOMETRY, size, binds, "rewalk", DEFAULT_BATCH)
        rows: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
        timed: list[dict[str, Any]] = []
        try:
            r.round(False)  # warm-up: both pools faulted in
            r.round(True)
            for i in range(3 * rounds):
                # untimed poison off / untimed poison on / phase-timed poison off, in turn
                # (which of the two untimed goes first flips every cycle); memcpy-first
                # flips every cycle too: each setting sees the same mix of pool directions
                # and orders
                cycle, slot = divmod(i, 3)
                memcpy_first = cycle % 2 == 0
                if slot == 2:
                    r.set_poison(False)
                    r.set_timed(True)
                    timed.append(r.round(memcpy_first))
                    continue
                poison = (slot == 0) == (cycle % 2 == 0)
                r.set_poison(poison)
                r.set_timed(False)
                rows[poison].append(r.round(memcpy_first))
        finally:
            r.close()
        off, on = _reloc_size(rows[False], seed), _reloc_size(rows[True], seed)
        sizes.append({"mapped_bytes": size, "frames": rows[False][0]["frames"],
                      "table_bytes": rows[False][0]["bytes"], **off, **_phases(timed),
                      "poisoned": on})
    slope = loglog_slope([s["frames"] for s in sizes], [s["reloc_ns"] for s in sizes])
    # the same slope of the baseline: memcpy of cold tables at 64 GiB costs many times what it
    # costs in cache at 1 MiB, so relocation's own exponent is read against this one
    memcpy_slope = loglog_slope([s["frames"] for s in sizes], [s["memcpy_ns"] for s in sizes])
    largest = sizes[-1]
    by_size = {size_key(s["mapped_bytes"]): {
        "ratio_vs_memcpy": s["ratio_vs_memcpy"], "ci95": s["ci95"], "rounds": s["rounds"],
        "ratio_vs_memcpy_poisoned": s["poisoned"]["ratio_vs_memcpy"],
        "ratio_vs_memcpy_phase_timed": s["ratio_vs_memcpy_phase_timed"],
        "mapped_bytes": s["mapped_bytes"], "frames": s["frames"]} for s in sizes}
    return {
        "ratio_vs_memcpy": largest["ratio_vs_memcpy"],
        "ci95": largest["ci95"],
        "ratio_vs_memcpy_poisoned": largest["poisoned"]["ratio_vs_memcpy"],
        "ratio_at_bytes": largest["mapped_bytes"],
        "growth_exponent": round_finite(slope),
        "memcpy_growth_exponent": round_finite(memcpy_slope),
        "strategy": "rewalk",
        "batch": DEFAULT_BATCH,
        # the copy's and the re-check's vectors (csrc/relocate_vec.h): 64 AVX-512, 32 AVX2,
        # 16 the baseline - figures from machines with different widths are not comparable
        "vector_bytes": _native.vector_width(c),
        "cpu_model": machine.cpu_model(),
        "poisoning": "headline figures without freed-frame poisoning (comparable to a "
                     "production kernel, which poisons freed pages only in debug "
                     "configurations); 'poisoned' with it (ptreloc's default)",
        "phase_timing": "headline rounds relocate with PTR_RELOC_F_UNTIMED (timed only from "
                        "outside, like memcpy); phase_ns and ratio_vs_memcpy_phase_timed "
                        "come from interleaved rounds whose relocations read the clock at "
                        "each phase boundary (ptreloc's default)",
        "nodes": {"binds": list(binds), "real": two_real},
        "sizes": sizes,
        **by_size,
    }
