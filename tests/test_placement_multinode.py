"""Measured placement in show and migrate (issue 10), in the 2-node guest as root.

The case the inference gets backwards: a workload bound to node 0, then `migratepages 0 1`
moves its data and leaves its tables on node 0.  `show` must now say so (source "kernel",
nearly every translation walks a remote table) and, with the walk switched off, the inference
must be contradicted by the kernel's own per-node PageTables counter.
"""

from __future__ import annotations

import json
import os

import pytest
from live_workload import live_workload, ptreloc
from test_kernel_tables_multinode import (  # noqa: F401  (kernel_ready: the guest's knobs)
    SPARSE_PAGES,
    bind,
    kernel_ready,
    migrate_all,
)

pytestmark = [
    pytest.mark.multinode,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="reading /proc/kcore needs root"),
]


def _show(pid: int, monkeypatch: pytest.MonkeyPatch | None = None) -> dict:
    r = ptreloc("show", "--pid", str(pid), "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_show_measures_the_tables_migratepages_left_behind(monkeypatch) -> None:
    # 2 GiB, every 8th page: 1,024 PTE tables, 65,536 resident region pages.  The bounds are
    # exact for the region; the interpreter's own pages (its file pages may sit in page cache
    # a process on node 1 filled) are what keeps the whole process's fraction off 0 and 1.
    with live_workload(pages=SPARSE_PAGES, every=8, threads=0, prefix=bind(0)) as w:
        before = _show(w.pid)
        assert before["placement"]["source"] == "kernel", before["placement"]
        assert before["tables"]["0"]["pte"] >= 1000
        assert "1" not in before["tables"] or before["tables"]["1"].get("pte", 0) == 0
        share = w.touched / before["resident_pages"]  # of the pages, the region's
        assert share > 0.9
        assert before["remote_table_fraction"] <= 1 - share + 1e-6

        migrate_all(w.pid, 0, 1)
        after = _show(w.pid)
        assert after["placement"]["source"] == "kernel"
        # the tables stayed: every PTE table still on node 0, the data on node 1
        assert after["tables"]["0"]["pte"] >= 1000, after["tables"]
        assert after["data"]["pages"].get("1", 0) >= w.touched
        # every region page now walks node-0 tables to node-1 data
        assert after["remote_table_fraction"] >= share - 1e-6, after["remote_table_fraction_detail"]
        assert after["remote_table_fraction"] >= 0.9

        # the rule, asked the same question, claims the opposite - and the kernel's counter
        # says it cannot be
        monkeypatch.setenv("PTRELOC_PLACEMENT", "inferred")
        rule = _show(w.pid)
        assert rule["placement"]["source"] == "inferred"
        assert rule["remote_table_fraction"] <= 1 - share + 1e-6
        assert any("on node 1" in c for c in rule["placement"]["contradictions"]), rule


def test_migrate_reports_the_kernel_tables_before_and_after() -> None:
    with live_workload(pages=SPARSE_PAGES // 4, every=8, threads=0, prefix=bind(0)) as w:
        r = ptreloc("migrate", "--pid", str(w.pid), "--from-node", "0", "--to-node", "1",
                    "--json")
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert doc["placement"]["source"] == "kernel"
        kt_json = doc["kernel_tables"]
        assert kt_json["before"]["0"]["pte"] >= 250
        # migrate_pages moved the data and not one table: measured, not modelled
        assert kt_json["after"]["0"]["pte"] == kt_json["before"]["0"]["pte"]
        share = w.touched / sum(doc["data"]["before"].values())
        assert doc["remote_table_fraction"]["after_data_only"] >= share - 1e-6
        assert doc["verified"] is True, doc["checks"]
