"""ptreloc.proc.snapshot on real spawned processes."""

from __future__ import annotations

import errno
import mmap
import os
import pathlib
import re
import subprocess
import sys

import pytest
from live_workload import as_nobody, live_workload

from ptreloc import numa, proc
from ptreloc.errors import NoSuchProcess, UsageError

PAGE = mmap.PAGESIZE


def status_list(pid: int, key: str) -> frozenset[int]:
    text = pathlib.Path(f"/proc/{pid}/status").read_text()
    return numa.parse_list(re.search(rf"^{key}:\s*(\S+)$", text, re.M).group(1))  # type: ignore[union-attr]


@pytest.mark.parametrize("every", [1, 3])
def test_snapshot_of_a_workload_counts_its_pages_exactly(every: int) -> None:
    pages = 300
    with live_workload(pages=pages, threads=0, every=every) as child:
        snap = proc.snapshot(child.pid)
        mems = status_list(child.pid, "Mems_allowed_list")
        cpus = status_list(child.pid, "Cpus_allowed_list")
    # the VMA the child made, exactly
    (vma,) = [v for v in snap.vmas if v.start <= child.address < v.end]
    assert vma.start == child.address and vma.pages >= pages and vma.perms == "rw-p"
    # its resident pages are exactly the touched ones, each on a node the kernel allows
    inside = list(snap.pages_in(child.address, child.address + pages * PAGE))
    assert [a for a, _ in inside] == [child.address + i * PAGE for i in range(0, pages, every)]
    assert len(inside) == child.touched
    assert {node for _, node in inside} <= mems
    # the process as psutil and /proc see it
    assert snap.pid == child.pid and snap.name.startswith("python")
    assert snap.status in ("sleeping", "running") and snap.threads == 1
    assert snap.owner and snap.uid == os.getuid()
    assert snap.mems_allowed == mems and snap.cpus_allowed == cpus
    assert snap.last_cpu in cpus
    assert snap.last_cpu_node == numa.topology().node_of_cpu(snap.last_cpu)
    # numa_maps counts everything resident (and shared file pages pagemap also shows)
    assert sum(snap.numa_maps.values()) >= child.touched
    assert sum(snap.node_pages().values()) >= child.touched
    assert list(snap.resident) == sorted(snap.resident)
    assert len(snap.resident) == len(snap.nodes)


def test_frame_numbers_visible_when_privileged() -> None:
    if os.geteuid() != 0:
        pytest.skip("frame numbers need CAP_SYS_ADMIN")
    with live_workload(pages=16, threads=0) as child:
        snap = proc.snapshot(child.pid)
        vas, pfns = proc.read_pagemap(child.pid, snap.vmas)
    assert snap.frames_visible and snap.to_json()["pfns_visible"]
    inside = [pfn for a, pfn in zip(vas, pfns, strict=True)
              if child.address <= a < child.address + 16 * PAGE]
    assert len(inside) == 16 and all(inside) and len(set(inside)) == 16


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
def test_unprivileged_snapshot_of_itself_has_no_frame_numbers() -> None:
    def own_snapshot() -> tuple[bool, bool, str]:
        s = proc.snapshot(os.getpid())
        return (not s.frames_visible, len(s.resident) > 0, s.owner)

    answer = as_nobody(own_snapshot)
    assert answer == "(True, True, 'nobody')"


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
def test_another_users_process_is_access_denied() -> None:
    with live_workload(pages=4, threads=0) as child:
        answer = as_nobody(lambda: proc.snapshot(child.pid))
    assert answer.startswith("AccessDenied: "), answer
    assert "run as root" in answer or "same user or root" in answer


def test_no_such_process() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    with pytest.raises(NoSuchProcess, match=f"no process with pid {child.pid}"):
        proc.snapshot(child.pid)
    with pytest.raises(NoSuchProcess):
        proc.snapshot(2**40)


def _snapshot_threads() -> list[str]:
    import threading

    return [t.name for t in threading.enumerate() if t.name == "ptreloc-snapshot"]


def test_a_process_gone_while_numa_maps_is_read_on_its_thread_is_reported(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """numa_maps is read on a thread beside the pagemap scan: a process that exits under it
    (here: the read is made to find it gone, as it would a process killed mid-read) is
    reported from snapshot() as NoSuchProcess, and the thread is joined, not left behind."""
    def gone(pid: int) -> dict[int, int]:
        raise NoSuchProcess(f"no process with pid {pid}", pid=pid)

    monkeypatch.setattr(numa, "numa_maps_node_pages", gone)
    with live_workload(pages=4, threads=0) as child, \
            pytest.raises(NoSuchProcess, match=f"pid {child.pid}"):
        proc.snapshot(child.pid)
    assert _snapshot_threads() == []


def test_the_scans_error_is_the_one_reported_and_the_numa_maps_thread_is_joined(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """When the pagemap scan fails while numa_maps is still being read, that failure is what
    snapshot() raises, after the thread has ended."""
    import threading

    release = threading.Event()
    real = numa.numa_maps_node_pages

    def slow(pid: int) -> dict[int, int]:
        release.wait(10)
        return real(pid)

    def broken(pid: int, vmas: list[proc.Vma], **kw: object) -> proc.PageScan:
        assert _snapshot_threads()  # the numa_maps thread is running beside the scan
        release.set()
        raise NoSuchProcess("the scan found it gone", pid=pid)

    monkeypatch.setattr(numa, "numa_maps_node_pages", slow)
    monkeypatch.setattr(proc, "scan_pagemap", broken)
    with live_workload(pages=4, threads=0) as child, \
            pytest.raises(NoSuchProcess, match="the scan found it gone"):
        proc.snapshot(child.pid)
    assert _snapshot_threads() == []


@pytest.mark.parametrize("pid", [0, -1, -(2**40)])
def test_not_a_pid(pid: int) -> None:
    with pytest.raises(UsageError, match=f"pid {pid} is not a process id"):
        proc.snapshot(pid)


def test_zombie_is_a_clear_error() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        # wait for it to exit without reaping it: waitid with WNOWAIT leaves the zombie
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
        with pytest.raises(NoSuchProcess, match="is a zombie"):
            proc.snapshot(child.pid)
    finally:
        child.wait()


def test_kernel_thread_is_a_clear_error() -> None:
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if proc._is_kernel_thread(int(entry.name)):
                    kthread = int(entry.name)
                    break
            except NoSuchProcess:
                continue
    else:
        pytest.skip("no kernel thread visible in this pid namespace")
    with pytest.raises(UsageError, match=f"pid {kthread} .* is a kernel thread"):
        proc.snapshot(kthread)


def test_pagemap_chunking_gives_the_same_answer() -> None:
    """Small read chunks cross page-run boundaries inside VMAs: same pages, same frames."""
    with live_workload(pages=200, threads=0, every=7) as child:
        vmas = proc.read_maps(child.pid)
        whole = proc.read_pagemap(child.pid, vmas)
        chunked = proc.read_pagemap(child.pid, vmas, chunk_bytes=8 * 5)
    assert whole == chunked
    assert len(whole[0]) > 0


def test_snapshot_of_a_sparse_huge_mapping() -> None:
    """A 64 GiB reservation with three touched pages: only those three are resident."""
    size = 64 << 30
    m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | 0x4000)  # NORESERVE
    m.madvise(mmap.MADV_NOHUGEPAGE)
    base = numa.buffer_address(m)
    offsets = [0, 1 << 30, size - PAGE]
    for off in offsets:
        m[off] = 1
    snap = proc.snapshot(os.getpid())
    inside = list(snap.pages_in(base, base + size))
    assert [a for a, _ in inside] == [base + off for off in offsets]
    assert all(node >= 0 for _, node in inside)
    m.close()


def test_json_shape() -> None:
    with live_workload(pages=8, threads=0) as child:
        data = proc.snapshot(child.pid).to_json()
    for key in (
        "pid",
        "name",
        "owner",
        "status",
        "threads",
        "resident_pages",
        "node_pages",
        "numa_maps_pages",
        "mems_allowed",
        "cpus_allowed",
        "last_cpu",
        "last_cpu_node",
        "pfns_visible",
    ):
        assert key in data
    assert data["pid"] == child.pid


def test_unplaced_pages_are_named() -> None:
    snap = proc.snapshot(os.getpid())
    for name in snap.unplaced_pages():
        assert name in errno.errorcode.values()


@pytest.mark.multinode
@pytest.mark.skipif(
    len(numa.topology().with_memory) < 2,
    reason="needs 2 NUMA nodes with memory: run inside scripts/numa-vm (make test-vm)",
)
def test_multinode_snapshot_follows_migration() -> None:
    with live_workload(pages=1024, threads=0, prefix=["numactl", "--membind=0"]) as child:
        before = proc.snapshot(child.pid)
        region = (child.address, child.address + 1024 * PAGE)
        assert {n for _, n in before.pages_in(*region)} == {0}
        numa.migrate_pages(child.pid, "0", "1")
        after = proc.snapshot(child.pid)
    assert {n for _, n in after.pages_in(*region)} == {1}
    assert after.numa_maps.get(1, 0) >= 1024
