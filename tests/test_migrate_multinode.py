"""Live-process migration across two real nodes (run in the 2-node guest by ``make test-vm``).

Kept few and small: the guest runs under TCG, about 8x slower than the host.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from live_workload import ROOT, live_workload, numa_maps_pages, ptreloc, workload_env

from ptreloc.workload import stop as stop_workload

pytestmark = pytest.mark.multinode

BOUND = ("numactl", "--membind=0", "--cpunodebind=0")


def _workload_region_nodes(pid: int, address: int, pages: int) -> set[int]:
    from ptreloc import numa

    return set(numa.move_pages(pid, [address + i * 4096 for i in range(0, pages, 16)]))


def test_migrate_moves_data_and_tables_like_migratepages() -> None:
    with (
        live_workload(mib=8, threads=3, prefix=BOUND) as w,
        live_workload(mib=8, threads=3, prefix=BOUND) as twin,
    ):
        assert _workload_region_nodes(w.pid, w.address, w.pages) == {0}
        result = ptreloc(
            "migrate",
            "--pid",
            str(w.pid),
            "--from-node",
            "0",
            "--to-node",
            "1",
            "--json",
            "--strict",
            check=0,
        )
        report = json.loads(result.stdout)
        subprocess.run(["migratepages", str(twin.pid), "0", "1"], check=True)
        ours, theirs = numa_maps_pages(w.pid), numa_maps_pages(twin.pid)
        # the kernel's own count agrees the data moved, as migratepages moves it
        assert ours.get(0, 0) == 0 and ours[1] > w.pages
        assert theirs.get(0, 0) == 0
        assert _workload_region_nodes(w.pid, w.address, w.pages) == {1}
        assert _workload_region_nodes(twin.pid, twin.address, twin.pages) == {1}
    assert report["verified"] is True, report["checks"]
    # bound to node 0, the process's tables were inferred on node 0, every one of them (file
    # pages cached on node 1 do not pull a table there): the problem migratepages leaves
    assert set(report["tables"]["before"]) == {"0"}
    assert report["remote_table_fraction"]["before"] < 0.5
    assert report["data"]["not_migrated"] == 0
    assert report["remote_table_fraction"]["after_data_only"] > 0.9
    assert report["remote_table_fraction"]["after"] == 0.0
    assert set(report["tables"]["after"]) == {"1"}
    assert report["virtual_nodes"] == [] or 1 not in report["virtual_nodes"]


def test_a_workload_bound_to_node_1_has_every_table_on_node_1() -> None:
    # the guest booted on node 0: its page cache (python, libc) is mostly there; the lowest
    # resident page is such a file page, which decided the root under the old rule
    bound = ("numactl", "--membind=1", "--cpunodebind=1")
    with live_workload(mib=2, threads=0, prefix=bound) as w:
        shown = json.loads(ptreloc("show", "--pid", str(w.pid), "--json", check=0).stdout)
    assert set(shown["tables"]) == {"1"}, shown["tables"]
    assert shown["data"]["pages"].get("1", 0) > w.pages


def test_a_capped_target_pool_fails_verification_with_exit_1() -> None:
    # the tables that do not fit stay on node 0: tables_on_target is false, so exit 1 with
    # one line naming the check (with --strict: 3, the partial result explains it)
    with live_workload(mib=2, threads=0, prefix=BOUND) as w:
        args = ["--pid", str(w.pid), "--from-node", "0", "--to-node", "1", "--json"]
        capped = ptreloc("migrate", *args, "--batch", "4", "--table-pool-frames", "4")
    assert capped.returncode == 1, capped.stderr
    report = json.loads(capped.stdout)
    assert report["verified"] is False and report["checks"]["tables_on_target"] is False
    assert "0" in report["tables"]["after"] and "1" in report["tables"]["after"]
    # one error line; the workload's bind:0 policy also gets its one warning line (issue 13)
    lines = capped.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("ptreloc: error: ")]
    assert len(errors) == 1 and "verification failed: tables_on_target" in errors[0], lines
    assert len(lines) == 2 and "bind:0" in lines[0], lines


def test_a_target_list_that_includes_the_source_and_moves_nothing_is_refused() -> None:
    # migrate_pages with 0 -> 0,1 moves nothing (node 0 is a target); it said "verified: yes"
    with live_workload(mib=1, threads=0, prefix=BOUND) as w:
        r = ptreloc("migrate", "--pid", str(w.pid), "--from-node", "0", "--to-node", "1,0")
        # the workload's own pages (numa_maps also counts the interpreter still settling)
        assert _workload_region_nodes(w.pid, w.address, w.pages) == {0}
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "nothing would move" in lines[0] and "--to-node 1" in lines[0]


def test_target_outside_the_cpuset_is_refused_and_nothing_moves() -> None:
    # numactl --membind does not change Mems_allowed; a cpuset does.  cgroup v2 in the guest.
    root = "/sys/fs/cgroup"
    try:
        with open("/proc/mounts") as mounts:
            mounted = " cgroup2 " in mounts.read()
        if not mounted:
            subprocess.run(["mount", "-t", "cgroup2", "none", root], check=True)
        with open(f"{root}/cgroup.subtree_control", "w") as fh:
            fh.write("+cpuset")
        subprocess.run(["mkdir", "-p", f"{root}/ptreloc-test"], check=True)
        with open(f"{root}/ptreloc-test/cpuset.mems", "w") as fh:
            fh.write("0")
    except (OSError, subprocess.CalledProcessError) as err:
        pytest.skip(f"no cpuset cgroup here: {err}")
    with live_workload(mib=2, threads=2, prefix=BOUND) as w:
        with open(f"{root}/ptreloc-test/cgroup.procs", "w") as fh:
            fh.write(str(w.pid))
        time.sleep(0.2)
        before = numa_maps_pages(w.pid)
        r = ptreloc("migrate", "--pid", str(w.pid), "--from-node", "0", "--to-node", "1")
        assert r.returncode == 1, r.stderr
        assert "outside" in r.stderr and "cpuset" in r.stderr and "Traceback" not in r.stderr
        assert numa_maps_pages(w.pid).get(1, 0) == before.get(1, 0)


def test_watch_follows_a_process_moved_by_migratepages() -> None:
    with live_workload(mib=4, threads=2, prefix=BOUND) as w:
        watcher = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ptreloc",
                "watch",
                "--pid",
                str(w.pid),
                "--interval",
                "0.5",
                "--follow",
                "data",
                "--timeout",
                "40",
                "--json",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert watcher.stdout is not None
        line = watcher.stdout.readline()
        assert line, watcher.communicate()[1]
        start = json.loads(line)
        assert start["event"] == "start" and start["data"].get("0", 0) >= w.pages
        # migratepages does not retry pages it could not move, and the watch's own look at the
        # process (pagemap, move_pages) briefly pins pages, so one call can leave most of them
        # on node 0 (seen: 3,740 of 4,458) - then following the data correctly keeps the tables
        # there.  An administrator would run it again: so does the test, until numa_maps agrees
        # (the watch runs 40 s: under TCG the retries and its looks each take seconds).
        for _ in range(10):
            subprocess.run(["migratepages", str(w.pid), "0", "1"], check=True)
            if not numa_maps_pages(w.pid).get(0, 0):
                break
            time.sleep(0.5)
        out, err = watcher.communicate(timeout=300)
    events = [start] + [json.loads(line) for line in out.splitlines()]
    assert watcher.returncode == 0, err
    moved = [e for e in events if e["event"] == "data_moved"]
    assert moved, events
    # the watch may look while migratepages is half done (a table follows once most of its
    # anonymous pages moved, so the first look may move none): the last event sees it finished
    assert sum(e["tables_relocated"] for e in moved) > 0
    # Each event's "before" is what the data's move alone left behind (pages walking node-0
    # tables); following must bring it down to exactly what the pages the kernel has not
    # moved force (issue 13: the test used to allow 0.2 whatever was left).  Following the
    # data, each table below the root goes to the node holding most of the pages it maps
    # (ties: the lower node); the root to the node of most of the stack.  With n pages not on
    # the root's node, each of them may be remote, and a page on the root's node is remote
    # only under a table whose majority is on the other node - the topmost such tables are
    # disjoint and each maps at least as many other-node pages as root-node ones: at most n
    # more.  So remote <= 2n, and n = 0 (every page moved with the root) gives exactly 0.0.
    # The fraction leaves out kernel special mappings ([vdso], [vvar]: a few pages) that
    # "data" may count: the denominator allows 8.
    worst = max(e["remote_table_fraction_before"] for e in moved)
    last = moved[-1]
    final = last["remote_table_fraction"]
    root = next(node for node, levels in last["tables"].items() if levels.get("pgd"))
    total = sum(last["data"].values())
    off_root = total - last["data"].get(root, 0)
    assert final < worst, events[-3:]
    if off_root == 0:
        assert final == 0.0, events[-3:]
    else:
        assert final <= 2 * off_root / max(total - 8, 1), events[-3:]
    tables = {node: sum(levels.values()) for node, levels in moved[-1]["tables"].items()}
    assert tables.get("1", 0) > tables.get("0", 0), events[-3:]
    assert events[-1]["event"] == "stop"


# ---- issue 13: retry what the kernel could not move for now; policies that undo the move ----


@contextmanager
def _pinned_workload(pages: int, pin: int, release: float | None) -> Iterator[dict[str, Any]]:
    """tests/pinned_workload.py under numactl --membind=0: ``pin`` of its pages held by a pipe
    (vmsplice), so migration fails for them with -EAGAIN for real; ``release``: the pipe is
    drained that many seconds after the process's other pages moved."""
    extra = [] if release is None else ["--release-when-moved", str(release)]
    proc = subprocess.Popen(
        [*BOUND, sys.executable, str(ROOT / "tests" / "pinned_workload.py"), "--pages",
         str(pages), "--pin", str(pin), *extra],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=workload_env(),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, f"pinned workload exited: {proc.wait()}"
        yield json.loads(line)
    finally:
        stop_workload(proc)


def test_pages_pinned_for_a_moment_are_retried_until_they_move() -> None:
    # the pins go away 1 s after the other pages moved: migrate_pages leaves the pinned pages
    # on node 0 (its count says so), the move_pages retries pick them up once they are free
    with _pinned_workload(256, 4, release=1.0) as w:
        r = ptreloc("migrate", "--pid", str(w["pid"]), "--from-node", "0", "--to-node", "1",
                    "--json", "--retries", "7", "--retry-delay", "0.2", "--strict")
        assert r.returncode == 0, (r.stdout[-2000:], r.stderr)
        where = _workload_region_nodes(w["pid"], w["address"], w["pages"])
        from ptreloc import numa

        pinned_now = set(numa.move_pages(w["pid"], w["pinned"]))
    report = json.loads(r.stdout)
    data = report["data"]
    assert data["kernel_not_migrated"] >= 4, data  # migrate_pages(2) could not move them
    assert data["retry"]["pages_retried"] >= 4 and data["retry"]["recovered"] >= 4, data["retry"]
    assert data["not_migrated"] == 0 and data["not_migrated_reasons"] == {}, data
    assert where == {1} and pinned_now == {1}
    assert report["verified"] is True, report["checks"]


def test_pages_that_stay_pinned_are_reported_busy_after_the_bounded_retries() -> None:
    with _pinned_workload(256, 4, release=None) as w:
        r = ptreloc("migrate", "--pid", str(w["pid"]), "--from-node", "0", "--to-node", "1",
                    "--json", "--retries", "2", "--retry-delay", "0.05", "--strict")
        from ptreloc import numa

        pinned_now = set(numa.move_pages(w["pid"], w["pinned"]))
    assert r.returncode == 3, (r.stdout[-2000:], r.stderr)
    data = json.loads(r.stdout)["data"]
    assert pinned_now == {0}
    assert data["retry"]["rounds"] == 2, data["retry"]  # the bound, and no more
    assert data["not_migrated"] >= 4
    assert data["not_migrated_reasons"].get("EAGAIN", 0) >= 4, data
    assert data["not_migrated_by_class"]["anon"].get("EAGAIN", 0) >= 4, data
    err = [line for line in r.stderr.splitlines() if "error" in line]
    assert len(err) == 1 and "pages not migrated (reasons: EAGAIN" in err[0], r.stderr


def test_a_membind_policy_that_excludes_the_target_is_named_with_its_vmas() -> None:
    with live_workload(mib=1, threads=0, prefix=BOUND) as w:
        r = ptreloc("migrate", "--pid", str(w.pid), "--from-node", "0", "--to-node", "1",
                    "--json", check=0)
    report = json.loads(r.stdout)
    warnings = report["policy_warnings"]
    # numactl --membind sets the task's policy: numa_maps shows bind:0 on every VMA, the
    # workload's region among them
    assert warnings and {w_["policy"] for w_ in warnings} == {"bind:0"}, warnings
    assert any(int(x["start"], 16) <= w.address < int(x["end"], 16) for x in warnings)
    assert all(x["nodes"] == [0] and "numactl --membind=1" in x["fix"] for x in warnings)
    lines = [line for line in r.stderr.splitlines() if "bind:0" in line]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("ptreloc: warning: ") and "VMA" in lines[0], lines
    assert "numactl --membind=1" in lines[0], lines


def test_a_default_policy_workload_gets_no_policy_warning() -> None:
    with live_workload(mib=1, threads=0, prefix=("numactl", "--cpunodebind=0")) as w:
        r = ptreloc("migrate", "--pid", str(w.pid), "--from-node", "0", "--to-node", "1",
                    "--json", check=0)
    report = json.loads(r.stdout)
    assert report["policy_warnings"] == [], report["policy_warnings"]
    assert "policy" not in r.stderr, r.stderr
