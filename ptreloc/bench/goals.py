"""The goals a run is judged by, and the verdict on each: ``met`` only when the whole 95 %
interval is within the goal, ``missed`` when all of it is beyond, ``undecided`` otherwise."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["GOALS", "GOAL_INTERVALS", "get", "goals", "verdict"]

#: (suite, dotted key, target, "<=") - every goal, reported with a verdict (see :func:`verdict`).
GOALS: tuple[tuple[str, str, float], ...] = (
    ("fault", "fault.bare.overhead_pct", 1.0),
    ("fault", "fault.with_data.overhead_pct", 0.3),
    ("walk", "walk.ratio_vs_chase", 1.5),
    # the largest size's (64 GiB in a full run), kept for scripts that read it; then per size
    # (issue 13): memcpy speed at 64 GiB, fixed costs paid once at 1 MiB (4 tables)
    ("relocate", "relocate.ratio_vs_memcpy", 1.5),
    ("relocate", "relocate.at_64gib.ratio_vs_memcpy", 1.5),
    ("relocate", "relocate.at_1mib.ratio_vs_memcpy", 3.0),
    ("relocate", "relocate.growth_exponent", 1.1),
    ("concurrent", "concurrent.rewalk.p99_ratio", 2.0),
    ("ktables", "ktables.ratio_vs_pagemap_read", 2.0),
    ("migrate", "migrate.own_ratio", 0.5),
    ("mirror", "mirror.ratio_vs_pagemap_read", 3.0),
    ("mirror", "mirror.largest.ratio_vs_pagemap_read", 3.0),
    ("mirror", "mirror.memory.bytes_per_resident_page", 16.0),
)

#: The 95 % interval reported beside a goal's figure, where there is one: the verdict uses it.
GOAL_INTERVALS: dict[str, str] = {
    "fault.bare.overhead_pct": "fault.bare.ci95_pct",
    "fault.with_data.overhead_pct": "fault.with_data.ci95_pct",
    "walk.ratio_vs_chase": "walk.ci95",
    "relocate.ratio_vs_memcpy": "relocate.ci95",
    "relocate.at_64gib.ratio_vs_memcpy": "relocate.at_64gib.ci95",
    "relocate.at_1mib.ratio_vs_memcpy": "relocate.at_1mib.ci95",
    "ktables.ratio_vs_pagemap_read": "ktables.ci95",
    "migrate.own_ratio": "migrate.own_ci95",
    "mirror.ratio_vs_pagemap_read": "mirror.ci95",
    "mirror.largest.ratio_vs_pagemap_read": "mirror.largest.ci95",
}


def get(d: dict[str, Any], dotted: str) -> Any:
    """``d["a"]["b"]`` for ``"a.b"``; None where a part is missing."""
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
        if suite not in results or get(results, f"{suite}.skipped") is True:
            continue  # a suite that could not run here has no verdict (its reason says why)
        value = get(results, key)
        ikey = GOAL_INTERVALS.get(key)
        interval = get(results, ikey) if ikey else None
        v = verdict(value, target, interval)
        out.append({"key": key, "target": target, "value": value, "interval": interval,
                    "verdict": v, "met": {"met": True, "missed": False}.get(v)})
    return out
