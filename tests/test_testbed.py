"""The multi-node NUMA test bed (scripts/numa-vm) and the guest it boots.

The `multinode` tests prove the guest is a real NUMA machine: its nodes are online with memory,
and a real process's pages really move between nodes under the real migratepages(8). The host
tests prove the script's contract: the command's output and exit status come out of the VM,
the time bound kills QEMU, and bad input is refused before anything boots.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import in_ci, online_nodes
from live_workload import live_workload

REPO = Path(__file__).resolve().parents[1]
NUMA_VM = REPO / "scripts" / "numa-vm"
EXIT_UNAVAILABLE, EXIT_TIMEOUT, EXIT_FAILED = 77, 124, 125
PAGE = os.sysconf("SC_PAGE_SIZE")


def run_numa_vm(
    *args: str, env: dict[str, str] | None = None, script: Path = NUMA_VM
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(script), *args], capture_output=True, text=True, timeout=600, env=env
    )


@pytest.fixture(scope="module")
def testbed() -> None:
    """Skip (fail under CI) when the guest cannot be had here; fetches the kernel once."""
    if os.environ.get("PTRELOC_IN_VM") == "1":
        pytest.skip("already inside the test bed guest: no nested QEMU")
    r = run_numa_vm("--prepare")
    if r.returncode == EXIT_UNAVAILABLE:
        why = f"NUMA test bed unavailable: {r.stdout.strip()}"
        if in_ci():
            pytest.fail(f"{why} (CI is set)", pytrace=False)
        pytest.skip(why)
    assert r.returncode == 0, r.stderr


# --- host side: the script's contract --------------------------------------------------------


def test_output_and_failing_status_come_out_of_the_guest(testbed: None) -> None:
    # One boot checks the status, the output (both streams, a last line without newline, no
    # marker or boot noise), the working directory and the environment promised inside.
    cmd = (
        'echo "cwd=$(pwd)"; '
        'echo "vm=$PTRELOC_IN_VM home=$HOME bytecode=$PYTHONDONTWRITEBYTECODE"; '
        "echo to-stderr >&2; printf no-newline; exit 7"
    )
    r = run_numa_vm("--", "sh", "-c", cmd)
    assert r.returncode == 7, r.stderr
    assert r.stdout == (f"cwd={REPO}\nvm=1 home=/tmp bytecode=1\nto-stderr\nno-newline")
    assert "exit status 7" in r.stderr


def test_timeout_kills_qemu(testbed: None, tmp_path: Path) -> None:
    # The run directory (shared with the guest, so on QEMU's command line) lives under TMPDIR:
    # a QEMU left behind would still show tmp_path in its command line.
    r = run_numa_vm(
        "--timeout", "2", "--", "sleep", "600", env={**os.environ, "TMPDIR": str(tmp_path)}
    )
    assert r.returncode == EXIT_TIMEOUT, r.stderr
    assert "timed out after 2 s" in r.stderr
    leftovers = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if str(tmp_path).encode() in (proc / "cmdline").read_bytes():
                leftovers.append(proc.name)
        except OSError:
            pass
    assert leftovers == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--nodes", "9", "--", "true"], "--nodes 9 is out of range: use 1 to 8"),
        (["--nodes", "0", "--", "true"], "--nodes 0 is out of range"),
        (["--mem-per-node", "64", "--", "true"], "--mem-per-node 64 is out of range"),
        (["-e", "1BAD=x", "--", "true"], "is not NAME=VALUE"),
        ([], "no COMMAND given"),
    ],
)
def test_usage_errors_exit_125_before_booting(args: list[str], message: str) -> None:
    r = run_numa_vm(*args)
    assert r.returncode == EXIT_FAILED
    assert message in r.stderr
    assert r.stdout == ""


def test_project_path_with_space_is_refused(tmp_path: Path) -> None:
    # QEMU's -virtfs option and the guest's mount cannot carry such a path: refuse it clearly
    # (as "unavailable here", 77) instead of booting a guest that cannot find the project.
    scripts = tmp_path / "my clone" / "scripts"
    scripts.mkdir(parents=True)
    shutil.copy2(NUMA_VM, scripts / "numa-vm")
    shutil.copytree(NUMA_VM.parent / "numa-vm.d", scripts / "numa-vm.d")
    r = run_numa_vm("--prepare", script=scripts / "numa-vm")
    assert r.returncode == EXIT_UNAVAILABLE
    assert "my clone" in r.stdout and "contains characters" in r.stdout


def test_missing_qemu_is_reported_as_unavailable() -> None:
    r = run_numa_vm("--prepare", env={**os.environ, "PTRELOC_VM_QEMU": "/nonexistent/qemu"})
    assert r.returncode == EXIT_UNAVAILABLE
    assert r.stdout.strip() == (
        "PTRELOC_VM_QEMU=/nonexistent/qemu is not an executable QEMU; "
        "point it at qemu-system-x86_64 or unset it"
    )


@pytest.mark.parametrize("ci", ["", "true"])
def test_multinode_tests_skip_or_fail_when_the_test_bed_is_unavailable(ci: str) -> None:
    # What `make test-vm` does when numa-vm exits 77: the multi-node tests run on the host with
    # numa-vm's reason, and conftest turns them into skips - or, under CI, into failures.
    if len(online_nodes()) >= 2 or os.environ.get("PTRELOC_IN_VM") == "1":
        pytest.skip("needs a one-node host, where multi-node tests cannot run")
    env = {**os.environ, "CI": ci, "PTRELOC_VM_UNAVAILABLE": "no QEMU here"}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-rsE",
            f"{__file__}::test_nodes_are_online_with_memory",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )
    assert "NUMA test bed unavailable: no QEMU here" in r.stdout
    if ci:
        assert r.returncode == 1 and "1 error" in r.stdout, r.stdout
        assert "CI is set, so the multi-node suite must run" in r.stdout
    else:
        assert r.returncode == 0 and "1 skipped" in r.stdout, r.stdout


# --- inside the guest: is it a real multi-node NUMA machine? ---------------------------------


def node_meminfo_total_kb(node: int) -> int:
    text = Path(f"/sys/devices/system/node/node{node}/meminfo").read_text()
    m = re.search(rf"^Node {node} MemTotal:\s+(\d+) kB", text, re.M)
    assert m, text
    return int(m.group(1))


@pytest.mark.multinode
def test_nodes_are_online_with_memory() -> None:
    nodes = online_nodes()
    if os.environ.get("PTRELOC_IN_VM") == "1":
        assert len(nodes) == int(os.environ["PTRELOC_VM_NODES"])
    has_memory = Path("/sys/devices/system/node/has_memory").read_text().strip()
    assert has_memory == Path("/sys/devices/system/node/online").read_text().strip()
    for n in nodes:
        assert node_meminfo_total_kb(n) > 64 * 1024


@pytest.mark.multinode
def test_guest_environment() -> None:
    if os.environ.get("PTRELOC_IN_VM") != "1":
        pytest.skip("checks the scripts/numa-vm guest itself")
    assert Path.cwd() == REPO == Path(os.environ["PTRELOC_VM_PROJECT"])
    balancing = Path("/proc/sys/kernel/numa_balancing").read_text().strip()
    assert balancing == os.environ["PTRELOC_VM_NUMA_BALANCING"]
    # The host's files reach the guest read-only: a test cannot damage the checkout.
    with pytest.raises(OSError) as e:
        (REPO / "written-by-the-guest").write_text("x")
    assert e.value.errno == errno.EROFS
    (Path("/tmp") / "scratch").write_text("writable")


def numa_maps_pages(pid: int, addr: str) -> dict[int, int]:
    """Pages per node of the mapping starting at *addr* (hex), from /proc/PID/numa_maps."""
    for line in Path(f"/proc/{pid}/numa_maps").read_text().splitlines():
        fields = line.split()
        if fields[0] == addr:
            return {
                int(k[1:]): int(v)
                for k, v in (f.split("=", 1) for f in fields[2:] if re.fullmatch(r"N\d+=\d+", f))
            }
    raise AssertionError(f"no mapping at {addr} in /proc/{pid}/numa_maps")


@pytest.mark.multinode
def test_migratepages_moves_a_bound_workload_to_node_1() -> None:
    size = 20 << 20
    pages = size // PAGE
    # base pages (the workload's default), so that numa_maps counts exactly size/PAGE pages
    # (THP is 'always' in the guest); live_workload fails if it dies before touching them
    with live_workload(pages=pages, threads=0, prefix=["numactl", "--membind=0"]) as w:
        addr = f"{w.address:x}"
        assert numa_maps_pages(w.pid, addr) == {0: pages}
        r = subprocess.run(
            ["migratepages", str(w.pid), "0", "1"], capture_output=True, text=True, timeout=120
        )
        assert r.returncode == 0, r.stderr
        assert numa_maps_pages(w.pid, addr) == {1: pages}
