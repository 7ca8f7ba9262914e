"""The kernel's own page tables of live processes, read through /proc/kcore in the 2-node guest
(scripts/numa-vm; Debian 6.1, 5-level paging under TCG).

Every check here compares the walk with an independent kernel answer: VmPTE, the nodes'
PageTables counters, pagemap, numactl bindings and migratepages.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from live_workload import live_workload

from ptreloc import kernel_tables as kt

pytestmark = [
    pytest.mark.multinode,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="reading /proc/kcore needs root"),
]

MiB = 1 << 20
SPARSE_PAGES = (2 << 30) // 4096  # a 2 GiB region ...
EVERY = 512  # ... touched once every 2 MiB: one PTE table per touched page (1,024 of them)


@pytest.fixture(scope="module", autouse=True)
def kernel_ready() -> Iterator[None]:
    ok, reason = kt.availability()
    if not ok:
        pytest.fail(f"kernel tables unavailable in the guest: {reason}", pytrace=False)
    # a 2 GiB mapping in a 1 GiB guest needs overcommit (heuristic mode refuses it); NUMA
    # balancing would move pages behind the checks' backs
    saved = {}
    for knob, value in (("/proc/sys/vm/overcommit_memory", "1"),
                        ("/proc/sys/kernel/numa_balancing", "0")):
        saved[knob] = Path(knob).read_text()
        Path(knob).write_text(value)
    yield
    for knob, value in saved.items():
        Path(knob).write_text(value)


def bind(node: int) -> list[str]:
    return ["numactl", f"--membind={node}", f"--cpunodebind={node}"]


def region_leaves(r: kt.KernelTables, start: int, pages: int, every: int) -> list[int | None]:
    return [r.leaf_pfn(start + i * 4096) for i in range(0, pages, every)]


def non_root_nodes(r: kt.KernelTables) -> dict[int | None, dict[str, int]]:
    out: dict[int | None, dict[str, int]] = {}
    for t in r.tables:
        if t.level != "pgd":
            per = out.setdefault(t.node, {})
            per[t.level] = per.get(t.level, 0) + 1
    return out


def assert_cross_checks(r: kt.KernelTables) -> None:
    vm = r.check_vmpte()
    assert vm.ok, vm.detail
    for node in r.check_node_pagetables():
        assert node.ok, node
    pm = r.check_pagemap()
    assert pm.ok, pm


def thp_collapses() -> int:
    """khugepaged's collapses since boot (/proc/vmstat thp_collapse_alloc)."""
    m = re.search(r"^thp_collapse_alloc (\d+)$", Path("/proc/vmstat").read_text(), re.M)
    return int(m.group(1)) if m else 0


def migrate_all(pid: int, frm: int, to: int, tries: int = 4) -> None:
    """migratepages until numa_maps shows no page of ``pid`` on ``frm`` (one call can leave
    pages that were briefly pinned)."""
    for _ in range(tries):
        subprocess.run(["migratepages", str(pid), str(frm), str(to)], check=True)
        maps = Path(f"/proc/{pid}/numa_maps").read_text()
        if f" N{frm}=" not in maps:
            return
        time.sleep(0.2)


def test_sparse_workload_on_node0_then_migrated() -> None:
    with live_workload(pages=SPARSE_PAGES, every=EVERY, threads=0, prefix=bind(0)) as live:
        collapses = thp_collapses()
        r = kt.walk_process(live.pid)
        collapses = thp_collapses() - collapses
        levels = r.frames_by_level()
        print(f"\nbound to node 0: {levels}, walk {r.walk_seconds:.2f} s, "
              f"pgd on node {r.tables[0].node}, {r.paging_levels}-level, pti={r.pti}, "
              f"marked {r.pgtable_marked}")
        assert levels["pte"] >= 1000
        # the process is idle, but khugepaged is not (THP "always" in the guest): an entry
        # that changed under the walk must have a collapse in the window to blame
        assert r.bad_entries == 0
        assert r.changed_under_walk == 0 or collapses > 0, (r.changed_under_walk, collapses)
        # every non-root table was allocated under the numactl binding
        assert set(non_root_nodes(r)) == {0}, non_root_nodes(r)
        # what Linux 6.1 marks PG_table: PTE and PMD tables, not PUD/P4D/PGD
        if os.uname().release.startswith("6.1."):
            for level, (marked, total) in r.pgtable_marked.items():
                expected = total if level in ("pte", "pmd") else 0
                assert marked == expected, (level, marked, total)
        vm = r.check_vmpte()
        print(vm.detail)
        # the region is MADV_NOHUGEPAGE, the interpreter's heap may get THPs: VmPTE may then
        # exceed the walk by their deposited tables, never fall short of it
        assert vm.ok, vm.detail
        nodes = r.check_node_pagetables()
        print(nodes)
        assert all(n.ok for n in nodes), nodes
        pm = r.check_pagemap()
        print(pm)
        assert pm.ok and pm.pages_compared >= live.touched, pm
        data = region_leaves(r, live.address, live.pages, EVERY)
        assert None not in data
        assert {r.node_map.node_of(p) for p in data} == {0}  # type: ignore[arg-type]

        migrate_all(live.pid, 0, 1)
        after = kt.walk_process(live.pid)
        # the data moved, the tables did not: that is what migratepages leaves behind
        data = region_leaves(after, live.address, live.pages, EVERY)
        assert None not in data
        assert {after.node_map.node_of(p) for p in data} == {1}  # type: ignore[arg-type]
        assert set(non_root_nodes(after)) == {0}, non_root_nodes(after)
        assert after.frames_by_level()["pte"] == levels["pte"]
        assert_cross_checks(after)


def test_workload_bound_to_node1() -> None:
    with live_workload(pages=64 * MiB // 4096, every=EVERY, threads=0, prefix=bind(1)) as live:
        r = kt.walk_process(live.pid)
        assert set(non_root_nodes(r)) == {1}, non_root_nodes(r)
        region = [t for t in r.tables if t.level == "pte"
                  and t.start < live.address + live.pages * 4096 and t.end > live.address]
        assert len(region) >= 32
        assert {t.node for t in region} == {1}
        assert_cross_checks(r)


MIXED = r"""
import ctypes, json, mmap, sys
libc = ctypes.CDLL(None, use_errno=True)
MPOL_BIND, SYS_set_mempolicy, STEP = 2, 238, 2 << 20
def bind(node):
    mask = ctypes.c_ulong(1 << node)
    if libc.syscall(SYS_set_mempolicy, MPOL_BIND, ctypes.byref(mask), 64) != 0:
        raise OSError(ctypes.get_errno(), "set_mempolicy")
regions = []
for node in (0, 1):
    bind(node)
    m = mmap.mmap(-1, 64 * STEP + STEP, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    m.madvise(mmap.MADV_NOHUGEPAGE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(m))
    first = -base % STEP  # 2 MiB aligned: each touched window belongs to one region only
    for i in range(64):
        m[first + i * STEP] = 1
    regions.append({"node": node, "start": base + first, "end": base + first + 64 * STEP, "m": m})
print(json.dumps([{k: v for k, v in r.items() if k != "m"} for r in regions]), flush=True)
sys.stdin.read()
"""


def test_regions_first_touched_under_different_bindings() -> None:
    proc = subprocess.Popen([sys.executable, "-c", MIXED], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        regions = json.loads(proc.stdout.readline())
        r = kt.walk_process(proc.pid)
        for region in regions:
            ptes = [t for t in r.tables if t.level == "pte"
                    and region["start"] <= t.start < region["end"]]
            assert len(ptes) == 64, (region, len(ptes))
            assert {t.node for t in ptes} == {region["node"]}, region
            data = [r.leaf_pfn(region["start"] + i * (2 * MiB)) for i in range(64)]
            assert {r.node_map.node_of(p) for p in data} == {region["node"]}  # type: ignore
        per_node = r.tables_per_node()
        print(f"\nmixed: {per_node}")
        assert per_node[0]["pte"] >= 64 and per_node[1]["pte"] >= 64
        assert_cross_checks(r)
    finally:
        proc.stdin.close()  # type: ignore[union-attr]
        proc.wait(timeout=60)


def test_thread_id_walks_its_leader() -> None:
    with live_workload(pages=256, threads=2) as live:
        tids = [int(t) for t in os.listdir(f"/proc/{live.pid}/task") if int(t) != live.pid]
        assert tids
        by_thread = kt.walk_process(tids[0])
        by_leader = kt.walk_process(live.pid)
        assert by_thread.tgid == live.pid
        assert by_thread.pgd_pfn == by_leader.pgd_pfn


def test_kernel_thread_and_missing_pid() -> None:
    with pytest.raises(kt.KernelThread) as info:
        kt.walk_process(2)  # kthreadd
    assert info.value.pid == 2
    with pytest.raises(kt.ProcessGone):
        kt.walk_process(4_000_000)


def test_process_exiting_during_walks() -> None:
    """A process killed while it is being walked: every walk ends, with a result or a clean
    error, never a hang or another exception."""
    outcomes: dict[str, int] = {}
    with live_workload(pages=SPARSE_PAGES // 4, every=EVERY, threads=0) as live:
        kt.walk_process(live.pid)  # a walk of the live process works ...
        outcomes["result"] = 1
        killer = threading.Timer(0.2, live.proc.kill)  # ... and then it dies under the next
        killer.start()
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline:
                try:
                    kt.walk_process(live.pid)
                    outcomes["result"] = outcomes.get("result", 0) + 1
                except (kt.ProcessGone, kt.WalkInconsistent, kt.KernelThread) as err:
                    outcomes[type(err).__name__] = outcomes.get(type(err).__name__, 0) + 1
                    if live.proc.poll() is not None:
                        live.proc.wait()
                        break
        finally:
            killer.cancel()
    print(f"\noutcomes: {outcomes}")
    assert "ProcessGone" in outcomes or "WalkInconsistent" in outcomes, outcomes
