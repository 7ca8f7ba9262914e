"""Real child processes for tests: a Python that mmaps, touches a known number of pages and waits.

The child prints ``<address> <pages> <touched>`` once its pages are resident, then blocks on stdin
until the test closes it, so the test can inspect a live process with a known memory layout.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["Workload", "spawn_workload"]

_CHILD = r"""
import mmap, sys
from ptreloc import numa
pages, every = int(sys.argv[1]), int(sys.argv[2])
# private anonymous memory (Python's default for fd -1 is MAP_SHARED, i.e. shmem)
region = mmap.mmap(-1, pages * mmap.PAGESIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
# 4 KiB pages on purpose: a THP-backed region would hide the lowest-level tables
region.madvise(mmap.MADV_NOHUGEPAGE)
touched = 0
for i in range(0, pages, every):
    region[i * mmap.PAGESIZE] = 1
    touched += 1
print(numa.buffer_address(region), pages, touched, flush=True)
sys.stdin.read()
"""


@dataclass(frozen=True)
class Workload:
    pid: int
    address: int  # start of the child's region
    pages: int  # pages in the region
    touched: int  # pages made resident (every ``every``-th page)
    every: int

    def page_addresses(self, page_size: int = 4096) -> list[int]:
        return [self.address + i * page_size for i in range(self.pages)]


@contextmanager
def spawn_workload(
    pages: int, every: int = 1, prefix: Sequence[str] = (), **popen: object
) -> Iterator[Workload]:
    """Run the child (optionally under ``prefix``, e.g. ``numactl --membind=0``) while in use."""
    proc = subprocess.Popen(
        [*prefix, sys.executable, "-c", _CHILD, str(pages), str(every)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        **popen,  # type: ignore[arg-type]
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"workload exited early with status {proc.wait()}")
        address, total, touched = (int(x) for x in line.split())
        yield Workload(proc.pid, address, total, touched, every)
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
