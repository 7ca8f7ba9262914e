"""``ptreloc nodes`` and ``ptreloc doctor``: CliRunner in-process, and the installed script."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner
from live_workload import live_workload, ptreloc_as_nobody

from ptreloc import numa
from ptreloc.cli import main

SCRIPT = pathlib.Path(sys.executable).parent / "ptreloc"
SYS_NODE = pathlib.Path("/sys/devices/system/node")


def run_script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.parametrize("command", ["nodes", "doctor"])
def test_help(command: str) -> None:
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0
    assert "--json" in result.output
    assert result.output.startswith(f"Usage: main {command}") or "Usage:" in result.output


def test_commands_are_listed() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert re.search(r"^\s+nodes\s", result.output, re.M)
    assert re.search(r"^\s+doctor\s", result.output, re.M)


def _check_against_sys(data: dict) -> None:
    """The JSON of ``ptreloc nodes --json`` against the kernel's own files."""
    assert data["online"] == sorted(numa.parse_list((SYS_NODE / "online").read_text()))
    assert data["possible"] == sorted(numa.parse_list((SYS_NODE / "possible").read_text()))
    assert [n["node"] for n in data["nodes"]] == data["online"]
    for entry in data["nodes"]:
        node_dir = SYS_NODE / f"node{entry['node']}"
        assert entry["cpus"] == sorted(numa.parse_list((node_dir / "cpulist").read_text()))
        distances = [int(x) for x in (node_dir / "distance").read_text().split()]
        assert [entry["distances"][str(n)] for n in data["online"]] == distances
        meminfo = (node_dir / "meminfo").read_text()
        total_kb = int(re.search(r"MemTotal:\s+(\d+) kB", meminfo).group(1))  # type: ignore[union-attr]
        # this host's memory can be hot-plugged between two reads: allow 1 GiB of drift
        assert abs(entry["memory_total_bytes"] - total_kb * 1024) <= 1 << 30
        assert entry["memory_total_mb"] == entry["memory_total_bytes"] >> 20
        assert 0 < entry["memory_free_bytes"] <= entry["memory_total_bytes"]
        # the kernel's page-table counters, as numastat -m shows them; they move as processes
        # come and go (other engineers' guests run here): allow 64 MiB of drift
        page_tables = re.search(r"PageTables:\s+(\d+) kB", meminfo)
        assert page_tables is not None  # every kernel with per-node meminfo has it
        assert isinstance(entry["page_tables_kb"], int) and entry["page_tables_kb"] > 0
        assert abs(entry["page_tables_kb"] - int(page_tables.group(1))) <= 64 << 10
        sec = re.search(r"SecPageTables:\s+(\d+) kB", meminfo)
        if sec is None:  # before Linux 6.0: not counted, and said so (null), never 0
            assert entry["sec_page_tables_kb"] is None
        else:
            assert isinstance(entry["sec_page_tables_kb"], int)
            assert abs(entry["sec_page_tables_kb"] - int(sec.group(1))) <= 64 << 10


def test_nodes_json_in_process() -> None:
    result = CliRunner().invoke(main, ["nodes", "--json"])
    assert result.exit_code == 0, result.output
    _check_against_sys(json.loads(result.output))


def test_nodes_json_real_script_prints_only_json() -> None:
    done = run_script("nodes", "--json")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.count("\n") == 1  # one JSON document, nothing else
    _check_against_sys(json.loads(done.stdout))


def test_nodes_human_output_looks_like_numactl() -> None:
    done = run_script("nodes")
    assert done.returncode == 0, done.stderr
    topo = numa.topology()
    plural = "" if len(topo.online) == 1 else "s"
    assert done.stdout.startswith(
        f"available: {len(topo.online)} node{plural} ({numa.format_nodes(topo.online)}); "
        f"nodes possible: {numa.format_nodes(topo.possible)}; nodes with memory: "
    )
    assert "node distances:" in done.stdout
    for node, info in topo.nodes.items():
        assert re.search(rf"│\s+{node} │ {re.escape(numa.format_nodes(info.cpus))}\s", done.stdout)


def _node_page_tables_kb(node: int) -> int:
    text = (SYS_NODE / f"node{node}" / "meminfo").read_text()
    return int(re.search(r"PageTables:\s+(\d+) kB", text).group(1))  # type: ignore[union-attr]


def test_nodes_page_tables_follow_a_process_that_makes_tables() -> None:
    """A real workload with 1,024 PTE tables (one page per 2 MiB of 2 GiB: 4 MiB of tables)
    raises the page-table count that `ptreloc nodes` reports for the nodes it lives on (the
    counter counts every process, so other processes' churn is allowed for: half the tables)."""
    def total(data: dict) -> int:
        return sum(n["page_tables_kb"] for n in data["nodes"])

    before = CliRunner().invoke(main, ["nodes", "--json"])
    assert before.exit_code == 0, before.output
    with live_workload(pages=(2 << 30) // 4096, every=512, threads=0) as child:
        status = pathlib.Path(f"/proc/{child.pid}/status").read_text()
        vmpte_kb = int(re.search(r"VmPTE:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]
        during = CliRunner().invoke(main, ["nodes", "--json"])
        assert during.exit_code == 0, during.output
    assert vmpte_kb >= 1024 * 4  # 1,024 PTE tables at least
    grown = total(json.loads(during.output)) - total(json.loads(before.output))
    assert grown >= vmpte_kb // 2, (grown, vmpte_kb)


def test_nodes_page_tables_in_the_human_table() -> None:
    done = run_script("nodes", env={"COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    assert "PageTables kB" in done.stdout and "SecPageTables kB" in done.stdout
    for node in numa.topology().nodes:
        row = re.search(rf"│\s+{node} │[^\n]*│\s+(\d+) │\s+(\d+|n/a) │\n", done.stdout)
        assert row is not None, done.stdout
        assert abs(int(row.group(1)) - _node_page_tables_kb(node)) <= 64 << 10


def test_node_page_tables_of_a_kernel_without_sec_page_tables(tmp_path: pathlib.Path) -> None:
    """An older kernel's meminfo (no SecPageTables line): None, shown as n/a / null."""
    node = tmp_path / "node3"
    node.mkdir()
    (node / "meminfo").write_text(
        "Node 3 MemTotal:        1048576 kB\nNode 3 KernelStack:        1524 kB\n"
        "Node 3 PageTables:        4204 kB\nNode 3 NFS_Unstable:          0 kB\n"
        "Node 3 HugePages_Total:     0\n"
    )
    assert numa.node_page_tables_kb(3, tmp_path) == (4204, None)
    assert numa.node_meminfo_kb(3, tmp_path)["HugePages_Total"] == 0
    (node / "meminfo").write_text("Node 3 PageTables:  52 kB\nNode 3 SecPageTables:  8 kB\n")
    assert numa.node_page_tables_kb(3, tmp_path) == (52, 8)
    with pytest.raises(numa.InvalidNode, match="node4/meminfo"):
        numa.node_page_tables_kb(4, tmp_path)


def test_nodes_says_n_a_for_an_uncounted_secondary_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(numa, "node_page_tables_kb", lambda node: (4204, None))
    data = json.loads(CliRunner().invoke(main, ["nodes", "--json"]).output)
    assert all(n["page_tables_kb"] == 4204 and n["sec_page_tables_kb"] is None
               for n in data["nodes"])
    human = CliRunner().invoke(main, ["nodes"], env={"COLUMNS": "200"})
    assert human.exit_code == 0
    assert re.search(r"│\s+4204 │\s+n/a │", human.output), human.output


def test_nodes_filter_and_pid() -> None:
    with live_workload(pages=512, threads=0) as child:
        result = CliRunner().invoke(
            main, ["nodes", "--json", "--nodes", "all", "--pid", str(child.pid)]
        )
        assert result.exit_code == 0, result.output
        data = json.loads(result.output)
    assert data["process"]["pid"] == child.pid
    assert data["process"]["mems_allowed"] == sorted(numa.topology().online)
    assert sum(data["process"]["pages"].values()) >= 512
    result = CliRunner().invoke(main, ["nodes", "--json", "--nodes", "0"])
    assert [n["node"] for n in json.loads(result.output)["nodes"]] == [0]


@pytest.mark.parametrize(
    ("args", "exit_code", "message"),
    [
        (["--nodes", "1-0"], 2, "reversed range 1-0"),
        (["--nodes", ""], 2, "empty node list"),
        (["--nodes", "zero"], 2, "'zero' is not a node list"),
        (["--nodes", "4096"], 2, "node 4096 does not exist"),
        (["--nodes", "!all"], 2, "selects no node"),
        (["--pid", "-3"], 2, "pid -3 is not a process id"),
        (["--pid", "abc"], 2, "is not a valid integer"),
        (["--pid", "99999999999"], 1, "no process with pid 99999999999"),
        (["--json", "--pid", "DEAD"], 1, "no process with pid"),
    ],
)
def test_nodes_bad_input_real_script(args: list[str], exit_code: int, message: str) -> None:
    args = [str(dead_pid()) if a == "DEAD" else a for a in args]
    done = run_script("nodes", *args)
    assert done.returncode == exit_code
    assert done.stdout == ""  # nothing but the error, and that on stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    if exit_code == 1:  # our own errors are one line
        assert done.stderr.startswith("ptreloc: error: ") and done.stderr.count("\n") == 1


def test_doctor_json_real_script() -> None:
    done = run_script("doctor", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True
    assert report["backend"]["selected"] == "libnuma"  # installed here, NUMA on
    for name in ("libnuma", "syscall"):
        assert report["backend"][name]["works"] is True, report["backend"][name]
    assert report["nodes"]["online"] == len(numa.topology().online)
    assert report["privileges"]["root"] == (os.geteuid() == 0)
    balancing = pathlib.Path("/proc/sys/kernel/numa_balancing")
    if balancing.exists():
        assert report["kernel"]["numa_balancing"] == int(balancing.read_text())
    thp = pathlib.Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    assert f"[{report['kernel']['transparent_hugepage']}]" in thp
    assert (
        report["test_bed"]["numa_vm_script"]
        == (pathlib.Path(__file__).resolve().parents[1] / "scripts" / "numa-vm").is_file()
    )
    assert report["verdict"].startswith("ready: libnuma backend works")
    _check_kernel_walk(report)


def _expected_kernel_walk_failure() -> str | None:
    """What this machine lacks for the kernel walk, found independently of ptreloc (None: it
    has what the walk needs, so doctor must say available)."""
    if os.uname().machine != "x86_64":
        return "unsupported architecture"
    if os.geteuid() != 0:
        return "not root"
    if not pathlib.Path("/proc/kcore").exists():
        return "no /proc/kcore"
    if not pathlib.Path("/sys/kernel/btf/vmlinux").exists():
        return "no /sys/kernel/btf/vmlinux"
    return None


def _check_kernel_walk(report: dict) -> None:
    kw = report["kernel_walk"]
    assert set(kw) == {"available", "reason"}
    assert isinstance(kw["available"], bool) and kw["reason"]
    missing = _expected_kernel_walk_failure()
    if missing is None:  # root on a kernel with kcore and BTF: ready, or a precise reason
        assert kw["available"] or "lockdown" in kw["reason"] or "kallsyms" in kw["reason"], kw
        if kw["available"]:
            assert kw["reason"].startswith("ready:") and "-level paging" in kw["reason"]
    else:
        assert kw["available"] is False and missing in kw["reason"], (missing, kw)
        assert f"kernel page-table walk unavailable: {kw['reason']}" in report["verdict"]


@pytest.mark.skipif(pathlib.Path("/proc/kcore").exists(),
                    reason="the host test is for a kernel without /proc/kcore (this one has it)")
def test_doctor_says_why_the_kernel_walk_is_unavailable_here() -> None:
    """The host kernel (6.18, CONFIG_PROC_KCORE=n): unavailable, and the reason names
    /proc/kcore and where to go instead; the human table has the row; still exit 0 (a
    warning: placement falls back to inferred)."""
    done = run_script("doctor", "--json")
    assert done.returncode == 0, done.stderr
    kw = json.loads(done.stdout)["kernel_walk"]
    assert kw["available"] is False
    if os.geteuid() == 0:
        assert "no /proc/kcore" in kw["reason"] and "CONFIG_PROC_KCORE" in kw["reason"]
        assert "numa-vm" in kw["reason"]
    human = run_script("doctor", env={"COLUMNS": "250"})
    assert human.returncode == 0, human.stderr
    row = next(line for line in human.stdout.splitlines() if "kernel page-table walk" in line)
    assert "warn" in row and "unavailable: " in row and "/proc/kcore" in row


@pytest.mark.skipif(os.geteuid() != 0, reason="drops from root to nobody")
def test_doctor_kernel_walk_as_nobody_says_not_root() -> None:
    done = ptreloc_as_nobody("doctor", "--json")
    report = json.loads(done.stdout)
    assert report["kernel_walk"]["available"] is False
    assert report["kernel_walk"]["reason"].startswith("not root"), report["kernel_walk"]


def test_doctor_follows_the_backend_environment() -> None:
    done = run_script("doctor", "--json", env={"PTRELOC_NUMA_BACKEND": "syscall"})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["backend"]["selected"] == "syscall"
    bad = run_script("doctor", "--json", env={"PTRELOC_NUMA_BACKEND": "bogus"})
    assert bad.returncode == 1
    report = json.loads(bad.stdout)
    assert report["ok"] is False and report["backend"]["selected"] is None
    assert "PTRELOC_NUMA_BACKEND 'bogus'" in report["verdict"]


def test_doctor_human_output() -> None:
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 0, result.output
    for check in ("backend libnuma", "backend syscall", "privileges", "multi-node test bed"):
        assert check in result.output
    assert "verdict: ready" in result.output


@pytest.mark.multinode
@pytest.mark.skipif(os.geteuid() != 0, reason="the kernel walk needs root")
def test_doctor_kernel_walk_available_in_the_guest() -> None:
    """In the 2-node guest (Debian 6.1: /proc/kcore, BTF, kallsyms, root) doctor says the
    kernel walk works, with the paging mode it found, and says so in the verdict."""
    done = run_script("doctor", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    kw = report["kernel_walk"]
    assert kw["available"] is True, kw
    assert kw["reason"].startswith("ready: /proc/kcore, BTF and kallsyms readable; ")
    assert "5-level paging" in kw["reason"] or "4-level paging" in kw["reason"]
    assert report["verdict"].endswith("kernel page-table walk works (placement measured)")
    _check_kernel_walk(report)
    # nodes: both nodes' page-table counters, as the guest's kernel counts them
    data = json.loads(run_script("nodes", "--json").stdout)
    assert len(data["nodes"]) >= 2
    _check_against_sys(data)
