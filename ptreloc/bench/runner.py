"""One run of the named suites: the plan, the ``meta`` block, each suite's results with its own
goals nested in it, and every goal's verdict at the end."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from ptreloc import __version__, numa
from ptreloc.bench import concurrent, fault, ktables, migrate, mirror, pool, relocate, walk
from ptreloc.bench.goals import goals
from ptreloc.bench.plan import SUITES, Plan, Progress, check_suites, plan
from ptreloc.bench.stats import round_finite

__all__ = ["QUICK_NOTE", "run"]

#: What meta.note says of a --quick run (the table footer says it too).
QUICK_NOTE = ("QUICK run: a CI smoke test of the results' shape, not a measurement of speed - "
              "too few rounds and too small sizes to read any figure or verdict; run without "
              "--quick (make bench) to measure")

#: each suite's entry point: (plan, seed, progress, in_vm) -> its results
_MEASURE: dict[str, Callable[[Plan, int, Progress, bool], dict[str, Any]]] = {
    "fault": lambda p, seed, say, _in_vm: fault.measure(p, seed, say),
    "walk": lambda p, seed, say, _in_vm: walk.measure(p, seed, say),
    "relocate": lambda p, seed, say, _in_vm: relocate.measure(p, seed, say),
    "pool": lambda p, seed, say, _in_vm: pool.measure(p, seed, say),
    "concurrent": lambda p, seed, say, _in_vm: concurrent.measure(p, seed, say),
    "mirror": lambda p, seed, say, _in_vm: mirror.measure(p, seed, say),
    "migrate": migrate.measure,
    "ktables": lambda p, seed, say, _in_vm: ktables.measure(p, seed, say),
}
assert tuple(_MEASURE) == SUITES, "every suite has an entry point, in the order of SUITES"


def run(
    suites: Sequence[str] = (),
    *,
    quick: bool = False,
    seed: int = 1,
    in_vm: bool = False,
    progress: Progress | None = None,
    ktables_mib: Sequence[int] | None = None,
    mirror_mib: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Run the named suites (all when none) and return the nested results with ``goals``.
    ``ktables_mib``: the ktables suite's resident sizes (default :data:`KTABLES_MIB`, quick
    :data:`KTABLES_MIB_QUICK`); ``mirror_mib`` the mirror suite's (:data:`MIRROR_MIB`)."""
    names = check_suites(suites)
    say = progress or (lambda _msg: None)
    p = plan(quick, ktables_mib, mirror_mib)
    topo = numa.topology()
    results: dict[str, Any] = {
        "meta": {
            "version": __version__,
            "quick": quick,
            "seed": seed,
            "cpus": os.cpu_count(),
            "nodes_with_memory": sorted(topo.with_memory),
            "in_vm": bool(os.environ.get("PTRELOC_IN_VM")),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            # what scripts should check before reading any figure
            "shape_only": quick,
        }
    }
    if quick:
        results["meta"]["note"] = QUICK_NOTE
    t0 = time.perf_counter()
    for name in names:
        t = time.perf_counter()
        res = _MEASURE[name](p, seed, say, in_vm)
        res["seconds"] = round_finite(time.perf_counter() - t, 2)
        results[name] = res
        for g in goals({name: res}):
            # nested like the figures: fault.goals.bare.overhead_pct = {target, value, met}
            *path, leaf = g["key"].split(".")[1:]
            node = res.setdefault("goals", {})
            for part in path:
                node = node.setdefault(part, {})
            node[leaf] = {k: g[k] for k in ("target", "value", "interval", "verdict", "met")}
    results["goals"] = goals(results)
    results["meta"]["seconds"] = round_finite(time.perf_counter() - t0, 2)
    return results
