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
from live_workload import live_workload

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
