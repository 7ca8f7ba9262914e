"""The real NUMA layer (ptreloc.numa) against the real kernel: both backends, real processes."""

from __future__ import annotations

import errno
import mmap
import os
import pathlib
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest
from live_workload import as_nobody, live_workload

from ptreloc import numa
from ptreloc.errors import (
    EXIT_USAGE,
    InvalidNode,
    NoSuchProcess,
    SyscallError,
    UsageError,
)

PAGE = mmap.PAGESIZE
# private anonymous memory: Python's mmap(-1, n) defaults to MAP_SHARED (shmem)
PRIVATE = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
BACKENDS = ["libnuma", "syscall"]
HOST = numa.topology()
MULTINODE = len(HOST.online & HOST.with_memory) >= 2
needs_two_nodes = pytest.mark.skipif(
    not MULTINODE,
    reason="needs 2 NUMA nodes with memory: run inside scripts/numa-vm (make test-vm)",
)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def region() -> Iterator[mmap.mmap]:
    """16 private anonymous 4 KiB pages (THP off), none touched yet."""
    m = mmap.mmap(-1, 16 * PAGE, flags=PRIVATE)
    m.madvise(mmap.MADV_NOHUGEPAGE)
    yield m
    m.close()


def dead_pid() -> int:
    """A pid that belonged to a process which has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# ---------------------------------------------------------------------------------------------
# node strings
# ---------------------------------------------------------------------------------------------

# possible 0-7; online 0,1,2,3,5; node 3 online without memory; 4, 6, 7 offline.
FAKE = numa.Topology(
    possible=frozenset(range(8)),
    online=frozenset({0, 1, 2, 3, 5}),
    with_memory=frozenset({0, 1, 2, 5}),
    with_cpus=frozenset({0, 1, 2, 3, 5}),
    nodes={
        n: numa.NodeInfo(n, frozenset({n}), 0 if n == 3 else 1 << 30, 1 << 29)
        for n in (0, 1, 2, 3, 5)
    },
)


@pytest.mark.parametrize(
    ("text", "need_memory", "expected"),
    [
        ("0", False, {0}),
        ("1,3", False, {1, 3}),
        ("0-3,5", False, {0, 1, 2, 3, 5}),
        ("5,0-1", False, {0, 1, 5}),
        ("2-2", False, {2}),
        ("all", False, {0, 1, 2, 3, 5}),
        ("all", True, {0, 1, 2, 5}),
        ("!1", False, {0, 2, 3, 5}),
        ("!1", True, {0, 2, 5}),
        ("!0-1", False, {2, 3, 5}),
        ("!0-1,5", False, {2, 3}),
        (" 1 ", False, {1}),
    ],
)
def test_parse_nodes_good(text: str, need_memory: bool, expected: set[int]) -> None:
    assert numa.parse_nodes(text, FAKE, need_memory=need_memory) == expected


@pytest.mark.parametrize(
    ("text", "need_memory", "message"),
    [
        ("", False, "empty node list"),
        ("   ", False, "empty node list"),
        ("3-1", False, "reversed range 3-1 (write 1-3)"),
        ("x", False, "'x' is not a node list"),
        ("1,,2", False, "has an empty item"),
        ("1,", False, "has an empty item"),
        ("1-", False, "'1-' is not a node list"),
        ("-1", False, "'-1' is not a node list"),
        ("0x1", False, "'0x1' is not a node list"),
        ("1;2", False, "'1;2' is not a node list"),
        ("+1", False, "'+1' is not a node list"),
        ("all,1", False, "'all' is not a node number or a range"),
        # an Arabic-Indic digit: int() would take it, numactl does not
        ("\u0661", False, "is not a node list"),
        ("!", False, "nothing after '!'"),
        ("!all", False, "selects no node"),
        ("!0-3,5", False, "selects no node"),
        ("9", False, "node 9 does not exist"),
        ("99999999999999999999", False, "does not exist"),
        ("4", False, "node 4 is offline"),
        ("3-5", False, "node 4 is offline"),
        ("0-9", False, "node 9 does not exist"),
        ("!4", False, "node 4 is offline"),
        ("3", True, "node 3 has no memory"),
        ("0-3", True, "node 3 has no memory"),
    ],
)
def test_parse_nodes_bad(text: str, need_memory: bool, message: str) -> None:
    with pytest.raises(InvalidNode) as info:
        numa.parse_nodes(text, FAKE, need_memory=need_memory)
    text_of_error = str(info.value)
    assert message in text_of_error
    assert "\n" not in text_of_error
    assert info.value.exit_code == EXIT_USAGE
    assert isinstance(info.value, ValueError)  # library users can catch the builtin


def test_parse_nodes_reads_this_machine() -> None:
    assert numa.parse_nodes("all") == HOST.online
    assert numa.parse_nodes("0") == {0}
    missing = max(HOST.possible) + 1
    with pytest.raises(InvalidNode, match=f"node {missing} does not exist"):
        numa.parse_nodes(str(missing))


@pytest.mark.parametrize(
    ("nodes", "text"),
    [({0}, "0"), ({0, 1, 2, 3, 5}, "0-3,5"), ({1, 3}, "1,3"), (set(), ""), ({7, 6}, "6-7")],
)
def test_format_nodes_round_trips(nodes: set[int], text: str) -> None:
    assert numa.format_nodes(nodes) == text
    if nodes:
        assert numa.parse_list(text) == nodes


# ---------------------------------------------------------------------------------------------
# topology
# ---------------------------------------------------------------------------------------------


def test_topology_matches_sys() -> None:
    root = pathlib.Path("/sys/devices/system/node")
    host = numa.topology()
    assert host.online == numa.parse_list((root / "online").read_text())
    assert host.possible == numa.parse_list((root / "possible").read_text())
    assert set(host.nodes) == host.online
    for node, info in host.nodes.items():
        assert info.cpus == numa.parse_list((root / f"node{node}" / "cpulist").read_text())
        meminfo = (root / f"node{node}" / "meminfo").read_text()
        total_kb = int(re.search(r"MemTotal:\s+(\d+) kB", meminfo).group(1))  # type: ignore[union-attr]
        assert info.memory_total == total_kb * 1024
        distances = [int(x) for x in (root / f"node{node}" / "distance").read_text().split()]
        assert [info.distances[n] for n in sorted(host.online)] == distances
        assert info.distances[node] == 10  # local distance, by the ACPI SLIT definition
    # every CPU the kernel has online belongs to exactly one node
    cpus = numa.parse_list(pathlib.Path("/sys/devices/system/cpu/online").read_text())
    assert {c for info in host.nodes.values() for c in info.cpus} == cpus
    assert all(host.node_of_cpu(c) is not None for c in cpus)


@pytest.mark.skipif(shutil.which("numactl") is None, reason="numactl not installed")
def test_topology_matches_numactl_hardware() -> None:
    out = subprocess.run(
        ["numactl", "--hardware"], check=True, capture_output=True, text=True
    ).stdout
    host = numa.topology()  # right after numactl: memory can be hot-plugged on this VM host
    available = re.search(r"available: (\d+) nodes \(([^)]*)\)", out)
    assert available is not None
    assert numa.parse_list(available.group(2)) == host.online
    for node, info in host.nodes.items():
        cpus = re.search(rf"^node {node} cpus:(.*)$", out, re.M)
        assert cpus is not None
        assert {int(c) for c in cpus.group(1).split()} == info.cpus
        size = re.search(rf"^node {node} size: (\d+) MB", out, re.M)
        assert size is not None
        assert int(size.group(1)) == info.memory_total >> 20
    matrix = out.split("node distances:")[1].strip().splitlines()
    header = [int(x) for x in matrix[0].split()[1:]]
    for row in matrix[1 : 1 + len(header)]:
        node_text, *values = row.split()
        node = int(node_text.rstrip(":"))
        assert {n: int(v) for n, v in zip(header, values, strict=True)} == host.nodes[
            node
        ].distances


def test_topology_reads_a_two_node_sysfs_tree(tmp_path: pathlib.Path) -> None:
    """The parser on the shape a two-node machine has (files as the kernel writes them)."""
    for name, value in {
        "possible": "0-3",
        "online": "0-1",
        "has_memory": "0-1",
        "has_cpu": "0-1",
    }.items():
        (tmp_path / name).write_text(value + "\n")
    for node, cpus in ((0, "0-1,4"), (1, "2-3")):
        d = tmp_path / f"node{node}"
        d.mkdir()
        (d / "cpulist").write_text(cpus + "\n")
        (d / "distance").write_text("10 21\n" if node == 0 else "21 10\n")
        (d / "meminfo").write_text(
            f"Node {node} MemTotal:        {1048576 * (node + 1)} kB\n"
            f"Node {node} MemFree:          524288 kB\n"
            f"Node {node} MemUsed:          524288 kB\n"
        )
    topo = numa.topology(tmp_path)
    assert topo.possible == {0, 1, 2, 3} and topo.online == {0, 1}
    assert topo.nodes[0].cpus == {0, 1, 4} and topo.node_of_cpu(3) == 1
    assert topo.nodes[1].memory_total == 2 << 30 and topo.nodes[0].memory_free == 512 << 20
    assert topo.distance(0, 1) == 21 and topo.distance(1, 1) == 10
    with pytest.raises(InvalidNode, match="node 2 is offline"):
        numa.parse_nodes("1-2", topo)
    assert numa.parse_nodes("!0", topo) == {1}


# ---------------------------------------------------------------------------------------------
# backends
# ---------------------------------------------------------------------------------------------


def test_backend_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PTRELOC_NUMA_BACKEND", "syscall")
    assert numa.backend().name == "syscall"
    monkeypatch.setenv("PTRELOC_NUMA_BACKEND", "libnuma")
    assert numa.backend().name == "libnuma"
    assert numa.backend("syscall").name == "syscall"  # the parameter beats the environment
    monkeypatch.setenv("PTRELOC_NUMA_BACKEND", "auto")
    assert numa.backend().name == "libnuma"  # libnuma is installed here and NUMA is on
    monkeypatch.setenv("PTRELOC_NUMA_BACKEND", "bogus")
    with pytest.raises(UsageError, match="PTRELOC_NUMA_BACKEND 'bogus': use libnuma, syscall"):
        numa.backend()


def test_backends_use_the_kernels_nodemask_size(backend: str) -> None:
    status = pathlib.Path("/proc/self/status").read_text()
    words = re.search(r"^Mems_allowed:\s*(\S+)$", status, re.M).group(1).split(",")  # type: ignore[union-attr]
    assert numa.backend(backend).nodemask_bits == 32 * len(words)


def test_move_pages_query_reports_touched_and_untouched(backend: str, region: mmap.mmap) -> None:
    base = numa.buffer_address(region)
    touched = {0, 3, 4, 15}
    for i in touched:
        region[i * PAGE] = 1
    status = numa.move_pages(0, [base + i * PAGE for i in range(16)], backend=backend)
    # get_mempolicy(MPOL_F_NODE|MPOL_F_ADDR) is an independent kernel path to the same fact
    expected = [numa.page_node(base + i * PAGE) for i in sorted(touched)]
    assert [s for i, s in enumerate(status) if i in touched] == expected
    if len(HOST.online) == 1:
        assert expected == [0] * len(touched)
    # never-touched anonymous pages: -ENOENT here; older kernels (the 6.1 guest of
    # scripts/numa-vm) say -EFAULT for a range with no page table yet
    untouched = {s for i, s in enumerate(status) if i not in touched}
    assert untouched in ({-errno.ENOENT}, {-errno.EFAULT})
    # a pid of ours is the same as pid 0, and small batches give the same answer
    again = numa.move_pages(os.getpid(), [base + i * PAGE for i in range(16)], batch=3)
    assert again == status


def test_move_pages_query_of_an_unmapped_address(backend: str) -> None:
    guard = mmap.mmap(-1, 2 * PAGE, flags=PRIVATE)
    base = numa.buffer_address(guard)
    guard.close()  # the address range is unmapped now
    assert numa.move_pages(0, [base], backend=backend) == [-errno.EFAULT]


def test_page_status_names() -> None:
    assert numa.page_status_name(1) == "node 1"
    assert numa.page_status_name(-errno.ENOENT).startswith("-ENOENT: not present")
    assert numa.page_status_name(-errno.EFAULT).startswith("-EFAULT")
    assert numa.page_status_name(-errno.EBUSY).startswith("-EBUSY: busy")
    assert numa.page_status_name(-errno.EACCES).startswith("-EACCES")
    assert numa.page_status_name(-errno.ENOMEM).startswith("-ENOMEM")


def test_move_pages_move_mode_to_node_zero(backend: str, region: mmap.mmap) -> None:
    base = numa.buffer_address(region)
    region[0] = 1
    moved = numa.move_pages(0, [base, base + PAGE], 0, backend=backend)
    assert moved[0] == 0 and moved[1] in (-errno.ENOENT, -errno.EFAULT)  # see the query test


def test_mbind_then_get_mempolicy_agrees(backend: str, region: mmap.mmap) -> None:
    base = numa.buffer_address(region)
    before = numa.get_mempolicy(base, backend=backend)
    assert before.mode == numa.MPOL_DEFAULT
    numa.mbind(base, 16 * PAGE, "bind", "0", backend=backend)
    policy = numa.get_mempolicy(base, backend=backend)
    assert (policy.mode_name, policy.nodes, policy.flags) == ("bind", {0}, 0)
    region[5 * PAGE] = 1
    assert numa.page_node(base + 5 * PAGE, backend=backend) == 0
    numa.mbind(
        base, 16 * PAGE, numa.MPOL_PREFERRED | numa.MPOL_F_STATIC_NODES, [0], backend=backend
    )
    policy = numa.get_mempolicy(base, backend=backend)
    assert (policy.mode, policy.flags, policy.nodes) == (
        numa.MPOL_PREFERRED,
        numa.MPOL_F_STATIC_NODES,
        {0},
    )
    numa.mbind(base, 16 * PAGE, "default", backend=backend)
    assert numa.get_mempolicy(base, backend=backend).mode == numa.MPOL_DEFAULT


def test_mbind_rejects_bad_arguments(backend: str, region: mmap.mmap) -> None:
    base = numa.buffer_address(region)
    with pytest.raises(UsageError, match="not page aligned"):
        numa.mbind(base + 1, PAGE, "bind", "0", backend=backend)
    with pytest.raises(UsageError, match="unknown memory policy 'sticky'"):
        numa.mbind(base, PAGE, "sticky", "0", backend=backend)
    missing = max(HOST.possible) + 1
    with pytest.raises(InvalidNode, match=f"node {missing} does not exist"):
        numa.mbind(base, PAGE, "bind", [missing], backend=backend)
    # and nothing changed
    assert numa.get_mempolicy(base, backend=backend).mode == numa.MPOL_DEFAULT


def test_mbind_strict_reports_misplaced_pages_not_a_bad_node(backend: str) -> None:
    """EIO from MPOL_MF_STRICT means 'pages are elsewhere', not 'bad node'."""
    m = mmap.mmap(-1, 4 * PAGE, flags=PRIVATE)
    base = numa.buffer_address(m)
    m[0] = 1
    here = numa.page_node(base, backend=backend)
    numa.mbind(base, 4 * PAGE, "bind", [here], numa.MPOL_MF_STRICT, backend=backend)
    others = sorted((HOST.online & HOST.with_memory) - {here})
    if others:  # only where there is an "elsewhere" (the test bed guest)
        numa.mbind(base, 4 * PAGE, "default", backend=backend)
        with pytest.raises(SyscallError, match="MPOL_MF_STRICT was given") as info:
            numa.mbind(base, 4 * PAGE, "bind", [others[0]], numa.MPOL_MF_STRICT, backend=backend)
        assert info.value.errno == errno.EIO
    m.close()


def test_migrate_pages_self_and_child_zero_to_zero(backend: str) -> None:
    assert numa.migrate_pages(0, "0", "0", backend=backend) == 0
    with live_workload(pages=64, threads=0) as child:
        # "all" -> "0": on this one-node host that is 0 -> 0; in a guest it gathers on node 0
        assert numa.migrate_pages(child.pid, "all", "0", backend=backend) == 0
        status = numa.move_pages(child.pid, child.page_addresses(PAGE), backend=backend)
        assert status == [0] * 64


def test_no_such_process(backend: str) -> None:
    gone = dead_pid()
    with pytest.raises(NoSuchProcess, match=f"no process with pid {gone}"):
        numa.migrate_pages(gone, "0", "0", backend=backend)
    with pytest.raises(NoSuchProcess, match=f"no process with pid {gone}"):
        numa.move_pages(gone, [0x10000], backend=backend)
    with pytest.raises(NoSuchProcess):
        numa.migrate_pages(2**40, "0", "0", backend=backend)  # would overflow a C int
    with pytest.raises(NoSuchProcess):
        numa.process_mems_allowed(gone)
    with pytest.raises(UsageError, match="pid -5 is not a process id"):
        numa.migrate_pages(-5, "0", "0", backend=backend)


def test_bad_node_checked_by_ptreloc_and_by_the_kernel(backend: str) -> None:
    missing = max(HOST.possible) + 1
    with pytest.raises(InvalidNode, match=f"node {missing} does not exist"):
        numa.migrate_pages(0, "0", str(missing), backend=backend)
    # with ptreloc's check off, the kernel's EINVAL must still become InvalidNode
    with pytest.raises(InvalidNode, match=f"migrate_pages: node {missing} is not online") as info:
        numa.migrate_pages(0, "0", str(missing), backend=backend, check_nodes=False)
    assert isinstance(info.value.__cause__, SyscallError)
    assert info.value.__cause__.errno == errno.EINVAL
    # move_pages says ENODEV for the same thing
    m = mmap.mmap(-1, PAGE, flags=PRIVATE)
    m[0] = 1
    with pytest.raises(InvalidNode, match=f"move_pages: node {missing} is not online") as info:
        numa.move_pages(0, [numa.buffer_address(m)], missing, backend=backend, check_nodes=False)
    assert info.value.__cause__.errno == errno.ENODEV  # type: ignore[union-attr]
    # a node beyond the kernel's nodemask never reaches the kernel
    with pytest.raises(InvalidNode):
        numa.migrate_pages(0, "0", [1 << 20], backend=backend, check_nodes=False)
    m.close()


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
def test_eperm_becomes_access_denied_with_advice(backend: str) -> None:
    """An unprivileged user moving root's process: the kernel says EPERM, we say what to do.

    A forked copy of this interpreter drops to nobody (which also drops CAP_SYS_NICE) and makes
    the call; its answer comes back through a pipe.
    """
    impl = numa.backend(backend)  # loaded before the fork, as a long-running tool would have it
    with live_workload(pages=4, threads=0) as child:
        message = as_nobody(lambda: numa.migrate_pages(child.pid, "0", "0", backend=impl))
    assert message.startswith("AccessDenied: migrate_pages on pid"), message
    assert "EPERM" in message and "CAP_SYS_NICE" in message


def test_process_mems_allowed_and_numa_maps() -> None:
    status = pathlib.Path("/proc/self/status").read_text()
    listed = re.search(r"^Mems_allowed_list:\s*(\S+)$", status, re.M).group(1)  # type: ignore[union-attr]
    assert numa.process_mems_allowed(os.getpid()) == numa.parse_list(listed)
    with live_workload(pages=256, threads=0) as child:
        per_node = numa.numa_maps_node_pages(child.pid)
        # the 256 touched pages plus the interpreter's own memory, all on this host's node(s)
        assert sum(per_node.values()) >= 256
        assert set(per_node) <= HOST.with_memory


def test_backends_agree(region: mmap.mmap) -> None:
    base = numa.buffer_address(region)
    for i in range(0, 16, 3):
        region[i * PAGE] = 1
    addresses = [base + i * PAGE for i in range(16)]
    answers = {b: numa.move_pages(0, addresses, backend=b) for b in BACKENDS}
    assert answers["libnuma"] == answers["syscall"]
    numa.mbind(base, 16 * PAGE, "interleave", "all", backend="syscall")
    assert numa.get_mempolicy(base, backend="libnuma") == numa.get_mempolicy(
        base, backend="syscall"
    )
    assert numa.get_mempolicy(backend="libnuma") == numa.get_mempolicy(backend="syscall")
    pid = dead_pid()
    errors = set()
    for b in BACKENDS:
        with pytest.raises(NoSuchProcess) as info:
            numa.migrate_pages(pid, "0", "0", backend=b)
        errors.add(str(info.value))
    assert len(errors) == 1


def test_backend_needs_no_compiled_core() -> None:
    """The NUMA layer works where the C core was never built (a fresh interpreter, core absent
    from the import path)."""
    code = (
        "import sys\n"
        "sys.modules['ptreloc._core'] = None\n"  # importing it would now raise ImportError
        "sys.modules['ptreloc._core_norelo'] = None\n"
        "from ptreloc import numa\n"
        "print(numa.backend('syscall').name, numa.migrate_pages(0, '0', '0'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["syscall", "0"]


def test_libnuma_missing_gives_a_clear_error() -> None:
    """Where libnuma cannot be loaded, asking for it says how to fix that; auto falls back."""
    code = (
        "from ptreloc import numa\n"
        "from ptreloc._native import numa_abi\n"
        "real = numa_abi._dlopen\n"
        "def no_libnuma(name, *a):\n"
        "    if name == 'libnuma.so.1': raise OSError('cannot load library libnuma.so.1')\n"
        "    return real(name, *a)\n"
        "numa_abi._dlopen = no_libnuma\n"
        "print(numa.backend('auto').name)\n"
        "try:\n"
        "    numa.backend('libnuma')\n"
        "except Exception as err:\n"
        "    print(type(err).__name__, err)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "syscall"
    assert lines[1].startswith("SyscallError libnuma.so.1 cannot be loaded: install it")
    assert "PTRELOC_NUMA_BACKEND=syscall" in lines[1]


# ---------------------------------------------------------------------------------------------
# multi-node (inside scripts/numa-vm)
# ---------------------------------------------------------------------------------------------

WORKLOAD_PAGES = 4096  # 16 MiB


@pytest.mark.multinode
@needs_two_nodes
@pytest.mark.parametrize("how", BACKENDS)
def test_multinode_migrate_pages_of_a_bound_workload(how: str) -> None:
    with live_workload(pages=WORKLOAD_PAGES, threads=0, prefix=["numactl", "--membind=0"]) as child:
        addresses = child.page_addresses(PAGE)
        assert set(numa.move_pages(child.pid, addresses, backend=how)) == {0}
        before = numa.numa_maps_node_pages(child.pid)
        assert before.get(0, 0) >= WORKLOAD_PAGES
        not_moved = numa.migrate_pages(child.pid, "0", "1", backend=how)
        assert not_moved == 0
        after = numa.numa_maps_node_pages(child.pid)
        # the kernel's own account: the workload's pages are on node 1 now
        assert after.get(1, 0) >= WORKLOAD_PAGES
        assert after.get(0, 0) < WORKLOAD_PAGES // 8
        # and move_pages agrees page by page, through both backends
        for b in BACKENDS:
            assert set(numa.move_pages(child.pid, addresses, backend=b)) == {1}


@pytest.mark.multinode
@needs_two_nodes
@pytest.mark.parametrize("how", BACKENDS)
def test_multinode_mbind_to_node_one_then_query(how: str) -> None:
    pages = 256
    m = mmap.mmap(-1, pages * PAGE, flags=PRIVATE)
    m.madvise(mmap.MADV_NOHUGEPAGE)
    base = numa.buffer_address(m)
    numa.mbind(base, pages * PAGE, "bind", "1", backend=how)
    for i in range(pages):
        m[i * PAGE] = 1
    addresses = [base + i * PAGE for i in range(pages)]
    answers = {b: numa.move_pages(0, addresses, backend=b) for b in BACKENDS}
    assert answers["libnuma"] == answers["syscall"] == [1] * pages
    assert numa.page_node(base, backend=how) == 1
    # move mode: back to node 0 needs the policy to allow it
    numa.mbind(base, pages * PAGE, "default", backend=how)
    assert numa.move_pages(0, addresses[:16], 0, backend=how) == [0] * 16
    assert numa.move_pages(0, addresses[:16], backend=how) == [0] * 16
    m.close()


@pytest.mark.multinode
@needs_two_nodes
def test_multinode_node_list_forms_against_the_kernel() -> None:
    assert numa.parse_nodes("all") == HOST.online >= {0, 1}
    assert numa.parse_nodes("!0") == HOST.online - {0}
