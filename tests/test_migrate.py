"""``ptreloc migrate`` on real processes on this host: the in-place path, and every bad input
(one clear line, documented exit code, no traceback, nothing changed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest
from live_workload import live_workload, numa_maps_pages, ptreloc, ptreloc_as_nobody

from ptreloc import migrate as migrate_mod
from ptreloc import numa
from ptreloc.cli import migrate as migrate_cli
from ptreloc.errors import NoSuchProcess

CONTRACT_KEYS = {
    "pid",
    "from_nodes",
    "to_nodes",
    "dry_run",
    "data",
    "tables",
    "remote_table_fraction",
    "timings_s",
    "verified",
}


def _settled_pages(pid: int) -> dict[int, int]:
    """numa_maps once the workload has stopped allocating (its start-up can still be adding a
    few pages just after it reported ready)."""
    import time

    last = numa_maps_pages(pid)
    for _ in range(50):
        time.sleep(0.05)
        now = numa_maps_pages(pid)
        if now == last:
            return now
        last = now
    return last


def _migrate_in_place(
    pid: int, *options: str, check: int | None = None
) -> subprocess.CompletedProcess[str]:
    """``ptreloc migrate`` of ``pid`` from node 0 to node 0 (--in-place), with ``options``."""
    args = ["--pid", str(pid), "--from-node", "0", "--to-node", "0", "--in-place", *options]
    return ptreloc("migrate", *args, check=check)


def _one_error_line(result: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert result.stdout == ""
    for word in words:
        assert word.lower() in lines[0].lower(), lines[0]
    return lines[0]


def test_dry_run_in_place_reports_every_contract_key_and_moves_nothing() -> None:
    with live_workload(mib=4) as w:
        before = _settled_pages(w.pid)
        result = _migrate_in_place(w.pid, "--dry-run", "--json", check=0)
        data = json.loads(result.stdout)
        assert set(data) >= CONTRACT_KEYS
        assert data["dry_run"] is True and data["verified"] is None
        assert data["from_nodes"] == [0] and data["to_nodes"] == [0]
        assert {"before", "after", "not_migrated"} <= set(data["data"])
        assert {"before", "after", "relocated", "not_relocated", "bytes_copied"} <= set(
            data["tables"]
        )
        assert {"before", "after_data_only", "after"} <= set(data["remote_table_fraction"])
        assert data["data"]["before"]["0"] >= w.pages
        assert data["tables"]["before"]["0"]["pte"] >= w.pages * 4096 // (2 << 20)
        assert numa_maps_pages(w.pid) == before


@pytest.mark.parametrize("strategy", migrate_mod.STRATEGIES)
def test_in_place_migration_runs_the_whole_path_and_verifies(strategy: str) -> None:
    with live_workload(mib=4) as w:
        result = _migrate_in_place(w.pid, "--strategy", strategy, "--json", check=0)
        data = json.loads(result.stdout)
        assert data["verified"] is True, data["checks"]
        assert data["data"]["not_migrated"] == 0
        assert data["remote_table_fraction"]["after"] == 0.0
        # the tree is the same shape, still all on node 0, every table in a fresh frame
        assert data["tables"]["after"] == data["tables"]["before"]
        assert data["tables"]["relocated"] == data["tables"]["before"]["0"]
        assert data["tables"]["bytes_copied"] > 0


def test_human_output_of_a_dry_run() -> None:
    with live_workload(mib=2) as w:
        result = _migrate_in_place(w.pid, "--dry-run", check=0)
        assert "would migrate node 0 -> 0" in result.stdout
        assert "remote_table_fraction" in result.stdout
        assert "dry run: nothing was moved" in result.stdout


# ---- bad input -----------------------------------------------------------------------------


def test_no_such_pid() -> None:
    # a pid that just exited and was reaped: certainly free for a moment
    child = subprocess.Popen(["true"])
    child.wait()
    r = _migrate_in_place(child.pid)
    _one_error_line(r, 1, f"no process with pid {child.pid}")


def test_kernel_thread() -> None:
    r = _migrate_in_place(2)
    _one_error_line(r, 2, "kernel thread", "user process")


def test_zombie() -> None:
    child = subprocess.Popen(["true"])
    try:
        # wait until it has exited without reaping it (os.waitid with WNOWAIT)
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
        r = _migrate_in_place(child.pid)
        _one_error_line(r, 1, "zombie")
    finally:
        child.wait()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run ptreloc as another user")
def test_another_users_process_without_privilege() -> None:
    with live_workload(mib=2) as w:  # owned by root
        before = _settled_pages(w.pid)
        r = ptreloc_as_nobody(
            "migrate", "--pid", str(w.pid), "--from-node", "0", "--to-node", "0", "--in-place"
        )
        _one_error_line(r, 1, "root")
        assert numa_maps_pages(w.pid) == before


@pytest.mark.parametrize(
    ("from_node", "to_node", "code", "words"),
    [
        ("x", "0", 2, ("'x'", "node lists look like")),
        ("0", "", 2, ("empty node list",)),
        ("0", "7", 2, ("node 7",)),  # no such node on this machine
        ("0", "99999999999999999999", 2, ("does not exist",)),
        ("-1", "0", 2, ("'-1'",)),
        ("0", "1-0", 2, ("reversed range",)),
        ("0", "0", 2, ("nothing to do", "--in-place")),
    ],
)
def test_bad_nodes(from_node: str, to_node: str, code: int, words: tuple[str, ...]) -> None:
    if to_node == "7" and len(numa.topology().possible) == 1:
        # one node: the line names both fixes, once (was "... in node list '7' (this machine's
        # nodes: 0)", no fix)
        words = (*words, "does not exist here (nodes: 0)", "scripts/numa-vm", "--in-place")
    with live_workload(mib=2) as w:
        before = _settled_pages(w.pid)
        r = ptreloc("migrate", "--pid", str(w.pid), "--from-node", from_node, "--to-node", to_node)
        _one_error_line(r, code, *words)
        assert numa_maps_pages(w.pid) == before


def test_offline_node() -> None:
    topo = numa.topology()
    offline = sorted(topo.possible - topo.online)
    node = str(offline[0]) if offline else str(max(topo.possible) + 1)
    r = ptreloc("migrate", "--pid", str(os.getpid()), "--from-node", "0", "--to-node", node)
    _one_error_line(r, 2, f"node {node}")


@pytest.mark.parametrize("cap", [0, 6])
def test_a_capped_in_place_round_trip_copies_only_what_fits_and_strict_exits_3(cap: int) -> None:
    with live_workload(mib=8) as w:
        args = ["--json", "--batch", "4", "--table-pool-frames", str(cap)]
        lenient = _migrate_in_place(w.pid, *args)
        strict = _migrate_in_place(w.pid, *args, "--strict")
    assert lenient.returncode == 0, lenient.stderr
    data = json.loads(lenient.stdout)
    assert data["table_pool_frames"] == cap
    tables = data["tables"]
    relocated = sum(tables["relocated"].values())
    total = sum(sum(levels.values()) for levels in tables["before"].values())
    assert relocated <= cap and relocated % 4 == 0  # what fitted, in whole batches
    assert relocated + sum(tables["not_relocated"].values()) == total
    assert tables["not_relocated_reasons"].get("target_full", 0) == 1
    # each relocated table copied out and back, nothing else copied (was: 0 relocated, 51
    # tables' bytes copied, the rest stranded on the round trip's virtual scratch node)
    assert tables["bytes_copied"] == 2 * 4096 * relocated
    assert tables["after"] == tables["before"] == {"0": tables["before"]["0"]}
    assert data["checks"] == dict.fromkeys(data["checks"], True) and data["verified"] is True
    assert data["remote_table_fraction"]["after"] == 0.0
    # --strict: exit 3, the JSON still printed, one line naming what was not moved and why
    assert strict.returncode == 3, strict.stderr
    assert json.loads(strict.stdout)["tables"]["not_relocated"] == tables["not_relocated"]
    line = strict.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert "tables not relocated" in line and "target_full" in line and "pte" in line


def test_a_failed_check_exits_1_with_one_line_naming_it() -> None:
    # a real in-place run's report with a check turned false: the CLI's exit decision (on two
    # nodes the guest's test_a_capped_target_pool_fails_verification runs the real failure)
    with live_workload(mib=2) as w:
        report = migrate_mod.migrate(w.pid, "0", "0", in_place=True)
    assert migrate_cli.exit_status(report, strict=False) is None
    assert migrate_cli.exit_status(report, strict=True) is None
    report.checks["tables_on_target"] = False
    code, line = migrate_cli.exit_status(report, strict=False)
    assert code == 1 and line.startswith("verification failed: tables_on_target")
    report.checks["translations_unchanged"] = False
    report.data.not_migrated = 3  # partial, yet a changed translation is always exit 1
    code, line = migrate_cli.exit_status(report, strict=True)
    assert code == 1 and "translations_unchanged" in line and "tables_on_target" in line
    assert "\n" not in line


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["--pid", "-5"], 2, ("not a process id",)),
        (["--pid", "0"], 2, ("not a process id",)),
        (["--pid", "99999999999999999999"], 1, ("no process",)),
        (["--pid", "abc"], 2, ("abc",)),
        (["--pid", "1", "--batch", "0"], 2, ("batch",)),
        (["--pid", "1", "--strategy", "naive"], 2, ("naive",)),
        (["--pid", "1", "--table-pool-frames", "-1"], 2, ("table-pool-frames",)),
        (["--pid", "1", "--table-pool-frames", str(1 << 32)], 2, ("table-pool-frames",)),
    ],
)
def test_bad_numbers_and_options(args: list[str], code: int, words: tuple[str, ...]) -> None:
    r = ptreloc("migrate", *args, "--from-node", "0", "--to-node", "0", "--in-place")
    assert r.returncode == code, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    for word in words:
        assert word in r.stderr


@pytest.mark.parametrize(
    ("src", "dst", "expected"),
    [
        ({0}, {1}, {0: 1}),
        ({0}, {0, 1}, {0: 0}),  # uneven, 0 is a target: stays (moves nothing at all)
        ({0, 1}, {1}, {0: 1, 1: 1}),
        ({1, 2}, {0, 1, 3}, {1: 1, 2: 1}),  # uneven: 1 stays; 2 is the 2nd source -> 2nd target
        ({2, 3, 4}, {3, 4, 5}, {2: 3, 3: 4, 4: 5}),  # even: everything moves
        ({0, 1, 2, 3}, {4, 5}, {0: 4, 1: 5, 2: 4, 3: 5}),
    ],
)
def test_remap_nodes_follows_do_migrate_pages(
    src: set[int], dst: set[int], expected: dict[int, int]
) -> None:
    assert migrate_mod.remap_nodes(frozenset(src), frozenset(dst)) == expected


def test_a_staying_source_node_is_warned_about_only_with_several_targets() -> None:
    def request(src: set[int], dst: set[int], staying: set[int]) -> migrate_mod.MigrationRequest:
        return migrate_mod.MigrationRequest(
            1, "x", frozenset(src), frozenset(dst), frozenset(src | dst), False, frozenset(staying)
        )

    line = request({0, 1}, {0, 2}, {0}).staying_warning()
    assert line is not None and "node 0 stay" in line and "\n" not in line
    assert request({0, 1}, {1}, {1}).staying_warning() is None  # what "all to node 1" means
    assert request({0}, {1}, set()).staying_warning() is None


@pytest.mark.multinode
def test_in_place_needs_the_same_nodes() -> None:
    # two different node sets need two nodes with memory; `multinode` runs it in the guest
    # (make test-vm, which runs only that mark: unmarked, it was skipped everywhere)
    r = ptreloc(
        "migrate", "--pid", str(os.getpid()), "--from-node", "0", "--to-node", "1", "--in-place"
    )
    _one_error_line(r, 2, "--in-place")


# ---- the process exits mid-way -------------------------------------------------------------


@pytest.mark.parametrize("reap", [True, False], ids=["gone", "zombie"])
def test_process_that_exits_mid_way_is_a_clean_error(reap: bool) -> None:
    with live_workload(mib=2) as w:

        def kill_it(done: int, total: int) -> None:
            if done == total and w.proc.poll() is None:
                w.proc.send_signal(signal.SIGKILL)
                if reap:
                    w.proc.wait()
                else:
                    os.waitid(os.P_PID, w.pid, os.WEXITED | os.WNOWAIT)

        with pytest.raises(NoSuchProcess, match="exited during the migration") as info:
            migrate_mod.migrate(w.pid, "0", "0", in_place=True, progress=kill_it)
    assert info.value.pid == w.pid


def test_validate_changes_nothing_and_checks_the_cpuset() -> None:
    request = migrate_mod.validate(os.getpid(), "0", "all", in_place=True)
    assert request.to_nodes <= request.mems_allowed
