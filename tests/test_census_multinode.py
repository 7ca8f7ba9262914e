"""``ptreloc census`` in the 2-node guest (scripts/numa-vm, Debian 6.1, root, /proc/kcore).

Numbers add up per node: the page-table pages counted from /proc/kpageflags equal each node's
PageTables at the levels the kernel marks (measured here: PTE and PMD on 6.1) within the race
margin of ``ptreloc.census``; a workload whose tables are on node 1 raises node 1's count by
them, and ``--by-process`` gives them to its pid.
"""

from __future__ import annotations

import json
import os

import pytest
from census_workload import table_workload
from live_workload import ptreloc

from ptreloc import census
from ptreloc import kernel_tables as kt

pytestmark = [
    pytest.mark.multinode,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.usefixtures("guest_kernel_walk"),
]



def census_json(*args: str) -> dict:
    return json.loads(ptreloc("census", "--json", *args, check=0).stdout)


def test_the_kernel_marks_pte_and_pmd_tables_and_counts_them_per_node(
        capsys: pytest.CaptureFixture[str]) -> None:
    data = census_json()
    levels = data["marked_levels"]
    # what the kernel walk relies on (kernel_tables._MARKED_LEVELS), measured again here
    assert sorted(levels["marked"]) == sorted(kt._MARKED_LEVELS)
    assert {"pgd", "pud"} <= set(levels["unmarked"])
    assert set(data["per_node"]) == {"0", "1"}
    for node, n in data["per_node"].items():
        chk = n["pagetables_check"]
        assert chk["agrees"], (node, chk)
        assert chk["counted_pages"] > 0
        frames = sum(b["end_pfn"] - b["start_pfn"] for b in n["blocks"])
        assert sum(n["pages"].values()) == frames
    with capsys.disabled():
        print()
        for node, n in data["per_node"].items():
            pages = {k: v for k, v in n["pages"].items() if v}
            print(f"  node {node}: {pages}; pageblocks {n['pageblocks']}")
            for b in n["blocks"]:
                print(f"    memory{b['block']} {b['state']}: pinned by {b['pinned_by'] or '-'}")
        print(f"  ranking: {data['ranking']}; page tables rank {data['pagetable_rank']}")


def test_a_workloads_tables_on_node_1_are_counted_there_and_attributed_to_it() -> None:
    before = census_json("--node", "1")["per_node"]["1"]["pages"]["pagetable"]
    with table_workload(node=1, gib=2) as w:
        walk = kt.walk_process(w.pid)
        on1 = walk.tables_per_node().get(1, {})
        assert on1.get("pte", 0) >= 0.95 * w.pte_tables, on1
        data = census_json("--node", "1", "--by-process")
        n1 = data["per_node"]["1"]
        assert n1["pagetables_check"]["agrees"], n1["pagetables_check"]
        grew = n1["pages"]["pagetable"] - before
        marked_on1 = on1.get("pte", 0) + on1.get("pmd", 0)
        assert 0.9 * marked_on1 <= grew <= marked_on1 + 64, (before, grew, on1)
        mine = [p for p in data["by_process"] if p["pid"] == w.pid]
        assert len(mine) == 1, [p["pid"] for p in data["by_process"]]
        got = mine[0]["tables"]["1"]
        assert got.get("pte", 0) >= 0.95 * on1["pte"], (got, on1)
        assert sum(mine[0]["blocks"].values()) == sum(got.values())
        # every walked table at a marked level is a KPF_PGTABLE frame the census counted
        assert n1["pages"]["pagetable"] >= sum(got.get(lv, 0) for lv in ("pte", "pmd"))


def test_census_take_census_by_process_marks_unmarked_levels() -> None:
    """With --by-process the walk's PGD/P4D/PUD frames (no KPF_PGTABLE on 6.1) are counted as
    pagetable_unmarked instead of kernel_other."""
    c = census.take_census([0, 1], by_process=True)
    unmarked = sum(n["pages"]["pagetable_unmarked"] for n in c.per_node.values())
    walked = sum(k for p in c.by_process or [] for node in p["tables"].values()
                 for lv, k in node.items() if lv in ("pgd", "p4d", "pud"))
    assert unmarked > 0
    assert unmarked <= walked
