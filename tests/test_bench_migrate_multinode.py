"""The ``migrate`` bench suite: its interval (host, pure numbers) and a quick run for real in
the 2-node guest (scripts/numa-vm), which checks the shape of the result, not the speed: no
figure is compared with the goal here."""

from __future__ import annotations

import math
import shutil

import pytest

from ptreloc import bench
from ptreloc.bench import migrate as bench_migrate
from ptreloc.bench.goals import GOAL_INTERVALS, verdict


def test_the_interval_is_of_the_median_and_needs_three_rounds() -> None:
    assert bench_migrate._interval([0.4, 0.45], seed=1) is None
    lo, hi = bench_migrate._interval([0.40, 0.42, 0.44, 0.46, 0.48, 0.9, 0.41], seed=1) or (0, 0)
    # a bootstrap of the median: the one slow round (0.9) cannot drag the interval to it
    assert 0.40 <= lo <= 0.44 <= hi < 0.9
    assert GOAL_INTERVALS["migrate.own_ratio"] == "migrate.own_ci95"
    assert verdict(0.44, 0.5, [lo, hi]) == "met"
    assert verdict(0.44, 0.5, [0.3, 0.6]) == "undecided"


@pytest.mark.multinode
@pytest.mark.skipif(shutil.which("migratepages") is None, reason="needs numactl's migratepages")
def test_quick_migrate_suite_runs_for_real_on_two_nodes() -> None:
    res = bench_migrate.measure(bench.plan(True), 1, lambda _msg: None, False)
    assert res["skipped"] is False, res.get("reason")
    p = bench.plan(True)
    assert res["rounds"] == p.migrate_rounds == len(res["own_ratios"])
    assert res["pages"] == p.migrate_mib * 256
    assert res["warmup_s"] > 0
    assert res["own_ratio"] is not None and math.isfinite(res["own_ratio"])
    assert res["own_ci95"] is None  # one quick round: no interval
    # the per-step laps are the migration's timings_s: migrate_pages and the own steps
    for step in ("snapshot", "mirror", "migrate_pages", "requery", "relocate", "verify"):
        assert res["steps_s"][step] >= 0
    assert res["steps_s"]["migrate_pages"] > 0
