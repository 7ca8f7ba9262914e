"""`ptreloc migrate --kernel-tables` / `--tables-only` across two real nodes (the guest, root).

The process's REAL tables move (ptreloc.kernel_move), verified by the kernel walk and by the
nodes' own PageTables counters; the pgd never moves (allocated at exec), so the figures that
tell are the levels below it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from live_workload import live_workload, numa_maps_pages, ptreloc

from ptreloc import kernel_tables as kt

pytestmark = [
    pytest.mark.multinode,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="ptrace and /proc/kcore need root"),
]

BOUND0 = ("numactl", "--membind=0", "--cpunodebind=0")
PAGES = (512 << 20) // 4096  # 512 MiB, one page every 2 MiB: 256 PTE tables


@pytest.fixture(scope="module", autouse=True)
def guest_knobs() -> Iterator[None]:
    ok, reason = kt.availability()
    if not ok:
        pytest.fail(f"kernel walk unavailable in the guest: {reason}", pytrace=False)
    knob = Path("/proc/sys/kernel/numa_balancing")
    saved = knob.read_text()
    knob.write_text("0")
    yield
    knob.write_text(saved)


def _migrate(pid: int, *args: str) -> dict:
    r = ptreloc("migrate", "--pid", str(pid), *args, "--json")
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    return json.loads(r.stdout)


def _only_skipped_left(pid: int, skipped: list[dict], target: int) -> None:
    """Walk again: every table below the root is on ``target`` unless its range also holds a
    VMA the move skipped (with its reason)."""
    ranges = [(int(s["start"], 16), int(s["end"], 16)) for s in skipped]
    walk = kt.walk_process(pid)
    stray = [t for t in walk.tables
             if t.level != "pgd" and t.node != target
             and not any(lo < t.end and t.start < hi for lo, hi in ranges)]
    assert not stray, [(t.level, hex(t.start), hex(t.end), t.node) for t in stray]
    left = [t for t in walk.tables if t.level != "pgd" and t.node != target]
    assert len(left) <= 8, left  # a few upper tables around [vdso]/[vvar], no more


def test_kernel_tables_follow_the_data_then_tables_only_brings_them_back() -> None:
    with live_workload(pages=PAGES, every=512, threads=3, prefix=BOUND0) as w:
        doc = _migrate(w.pid, "--from-node", "0", "--to-node", "1", "--kernel-tables")
        k = doc["kernel_tables"]
        assert doc["verified"] is True, doc["checks"]
        assert all(v is not False for k_, v in doc["checks"].items()), doc["checks"]
        assert k["before"]["0"]["pte"] >= 256
        # every table below the root now on node 1, but those that also map a VMA that is
        # never moved ([vdso], [vvar]: the kernel owns them) - those cannot be freed
        _only_skipped_left(w.pid, k["skipped"], 1)
        assert k["after"]["1"]["pte"] >= 256
        # the kernel's own counters moved by about the process's table bytes
        vmpte = k["vmpte_kb"]
        before0, after0 = k["node_pagetables_kb_before"], k["node_pagetables_kb_after"]
        assert before0["0"] - after0["0"] >= 0.9 * vmpte, (before0, after0, vmpte)
        assert after0["1"] > before0["1"]
        assert k["pause_ms"] > 0
        # walked: below the root, nothing is remote for the region's pages
        frac = doc["remote_table_fraction"]["detail"]["kernel_after"]
        share = w.touched / frac["pages"]
        assert frac["by_level"]["pte"] <= 1 - share + 1e-6, frac
        assert numa_maps_pages(w.pid).get(0, 0) <= 64  # the data moved too

        # now only the tables, back to node 0; the data stays on node 1
        data_before = numa_maps_pages(w.pid)
        back = _migrate(w.pid, "--from-node", "1", "--to-node", "0", "--tables-only")
        kb = back["kernel_tables"]
        assert back["verified"] is True, back["checks"]
        _only_skipped_left(w.pid, kb["skipped"], 0)
        assert kb["after"]["0"]["pte"] >= 256
        assert numa_maps_pages(w.pid).get(1, 0) >= data_before.get(1, 0) - 64
        assert back["data"]["before"] == back["data"]["after"]
        assert w.proc.poll() is None  # alive


def test_kernel_tables_need_one_target() -> None:
    with live_workload(mib=1, threads=0, prefix=BOUND0) as w:
        r = ptreloc("migrate", "--pid", str(w.pid), "--from-node", "0", "--to-node", "0,1",
                    "--tables-only", "--json")
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "one --to-node" in r.stderr and r.stderr.count("\n") == 1
