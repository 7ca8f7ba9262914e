"""A process whose page tables live on a chosen node, for the census and drain guest tests.

It is exec'd on node 0 (``numactl --cpunodebind=0 --membind=0``), so what exec allocates - the
pgd, which never moves, and the upper tables shared with [stack]/[vdso] - is on node 0; then it
binds its memory to ``node`` (set_mempolicy(MPOL_BIND); it keeps running on node 0's CPU, so
kernel objects it needs come from that CPU's slabs, on node 0) and touches one byte every 2 MiB
of a sparse MAP_NORESERVE region: one PTE table per touched page, each allocated under its
policy on ``node``, and one data page beside each.  So everything ptreloc drain must move
is on ``node`` and everything on ``node`` is movable by it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from live_workload import workload_env

from ptreloc.bench import stop_workload

__all__ = ["TableWorkload", "fill_floor_mib", "high_watermark_kb", "node_filler", "table_workload"]

_SCRIPT = r"""
import ctypes, json, mmap, os, sys
node, span, hold = int(sys.argv[1]), int(sys.argv[2]) << 30, sys.argv[3] == "hold"
libc = ctypes.CDLL(None, use_errno=True)
region = mmap.mmap(-1, span, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | 0x4000)
region.madvise(mmap.MADV_NOHUGEPAGE)
if hold:  # started; the tables come when the test says so
    print(json.dumps({"pid": os.getpid(), "tables": span >> 21}), flush=True)
    sys.stdin.readline()
mask = ctypes.c_ulong(1 << node)
if libc.syscall(238, 2, ctypes.byref(mask), 64) != 0:  # set_mempolicy(MPOL_BIND, {node})
    sys.exit(f"set_mempolicy: errno {ctypes.get_errno()}")
for off in range(0, span, 2 << 20):
    region[off] = 1
if hold:  # the tables are made: what the kernel allocates for it next comes from its CPU's node
    if libc.syscall(238, 0, None, 0) != 0:  # set_mempolicy(MPOL_DEFAULT)
        sys.exit(f"set_mempolicy: errno {ctypes.get_errno()}")
print(json.dumps({"pid": os.getpid(), "tables": span >> 21}), flush=True)
sys.stdin.read()
"""


def _settle(pid: int, timeout: float = 10.0) -> None:
    """Return once the workload is asleep in its final read and its pages stopped changing
    (numa_maps the same twice, 0.2 s apart): after its ready line it still enters that read
    and may fault a page or two under its node-1 policy, which a test that counts the pages
    'before' would take for a change (seen once: 512 -> 513 across a --dry-run)."""
    from ptreloc import numa

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
        now = numa.numa_maps_node_pages(pid)
        if state == "S" and now == last:
            return
        last = now
        time.sleep(0.2)
    raise RuntimeError(f"table workload {pid} did not settle in {timeout} s")


@dataclass
class TableWorkload:
    pid: int
    pte_tables: int  # PTE tables its region needs (one per 2 MiB touched)
    proc: subprocess.Popen[str]

    def go(self) -> None:
        """With ``hold``: allocate the tables now (returns when they are)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        if not self.proc.stdout.readline():
            raise RuntimeError(f"table workload exited with status {self.proc.wait()}")
        _settle(self.pid)


@contextmanager
def table_workload(node: int = 1, gib: int = 8, *, hold: bool = False
                   ) -> Iterator[TableWorkload]:
    """Run the workload until the block ends: ``gib`` GiB sparse -> ``gib * 512`` PTE tables
    (and as many data pages) on ``node``.  With ``hold`` it is started (its interpreter's own
    memory on node 0) and waits for ``go()`` to allocate them, and then drops its node binding
    (MPOL_DEFAULT): a process still bound to ``node`` allocates there again after any drain -
    its slab pages (under the task's policy) land in the emptied block's unmovable pageblocks
    and pin it again, which the drain can only warn about (``policy_warning``); the block test
    wants the process the drain can clear the block of."""
    proc = subprocess.Popen(
        ["numactl", "--cpunodebind=0", "--membind=0", sys.executable, "-c", _SCRIPT,
         str(node), str(gib), "hold" if hold else "run"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=workload_env(),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"table workload exited early with status {proc.wait()}")
        info = json.loads(line)
        if not hold:
            _settle(info["pid"])
        yield TableWorkload(info["pid"], info["tables"], proc)
    finally:
        stop_workload(proc)


_FILLER = r"""
import mmap, re, sys
node, floor_kb = int(sys.argv[1]), int(sys.argv[2])
path = f"/sys/devices/system/node/node{node}/meminfo"
def free_kb():
    return int(re.search(r"MemFree:\s+(\d+) kB", open(path).read()).group(1))
chunks = []
while free_kb() > floor_kb + 4096:
    m = mmap.mmap(-1, 4 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    m.madvise(mmap.MADV_NOHUGEPAGE)
    for off in range(0, 4 << 20, 4096):
        m[off] = 1
    chunks.append(m)
print(len(chunks) * 4, flush=True)
sys.stdin.read()
"""


def high_watermark_kb(node: int) -> int:
    """The sum of ``node``'s zone high watermarks (/proc/zoneinfo), in kB."""
    pages, mine = 0, False
    with open("/proc/zoneinfo", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("Node "):
                mine = line.split(",")[0] == f"Node {node}"
            elif mine and line.split()[:1] == ["high"]:
                pages += int(line.split()[1])
    return pages * 4


def fill_floor_mib(node: int, leave_mib: int) -> int:
    """Where :func:`node_filler` stops: ``leave_mib`` free, or the node's high watermark when
    that is more.  Below the min watermark a user allocation waits for reclaim, and with
    nothing left to reclaim the OOM killer ends the filler (a CI run: status -9).  The
    watermarks scale with the node's online memory (THP raises min_free_kbytes to ~48 MB in
    the guest: min ~25 MiB of a whole 512 MiB node), so after the arrangement's offlines they
    are mostly below 16 MiB, and above it when few blocks were clean."""
    return max(leave_mib, -(-high_watermark_kb(node) // 1024))


@contextmanager
def node_filler(node: int = 1, leave_mib: int = 16) -> Iterator[int]:
    """Anonymous (movable) memory bound to ``node`` until its MemFree is about
    :func:`fill_floor_mib` MiB: the node's free pages used up, so what is allocated next there
    comes from memory onlined afterwards.  Yields the MiB it holds."""
    proc = subprocess.Popen(
        ["numactl", f"--membind={node}", sys.executable, "-c", _FILLER, str(node),
         str(fill_floor_mib(node, leave_mib) << 10)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=workload_env(),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"filler exited early with status {proc.wait()}")
        yield int(line)
    finally:
        stop_workload(proc)
