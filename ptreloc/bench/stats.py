"""The statistics every suite reports with: paired ratios of rounds measured side by side,
t- and bootstrap intervals, the median overhead in %, percentiles of the C histograms and the
log-log growth exponent.  Pure Python on numbers: no measuring here."""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "MIN_PHASE_ACCESSES",
    "bootstrap_ci",
    "hist_percentile",
    "loglog_slope",
    "mean_ci",
    "overhead_pct",
    "pair_ratios",
    "paired_ratios",
    "round_finite",
    "t_quantile_975",
]

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



def round_finite(x: float, nd: int = 3) -> float:
    """``round(x, nd)``; NaN and infinities as they are."""
    return round(x, nd) if math.isfinite(x) else x
