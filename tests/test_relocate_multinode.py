"""Inside the multi-node guest: relocation moves table frames between REAL NUMA nodes.

The host suite (tests/test_relocate.py) relocates between virtual nodes, where "node 1" is only a
label on a second pool.  Here both pools are mbind-bound to real nodes, and the kernel - not the
arena's own metadata - is asked where every table frame lives before and after: move_pages(2) in
query mode over every host page of every frame (a 64 KiB arm64 frame spans 16 of them), and
get_mempolicy(MPOL_F_NODE | MPOL_F_ADDR) for the root as a second opinion.
"""

from __future__ import annotations

import errno
import os

import pytest
from test_relocate import snapshot  # the same translation snapshot as the host suite's

from ptreloc import numa
from ptreloc.core import AddressSpace, Arena, Cpu
from ptreloc.relocate import relocate

pytestmark = pytest.mark.multinode

MIB = 1 << 20


def need_two_real_nodes() -> None:
    # conftest skips multinode tests on one-node machines; this also covers a 2-node machine
    # whose node 1 has no memory (its pool would be virtual, and the test would prove nothing)
    if not {0, 1} <= numa.topology().with_memory:
        pytest.skip("needs NUMA nodes 0 and 1 with memory (run with make test-vm)")


def ranges(arena: Arena) -> list[tuple[int, int]]:
    """A few MiB in several tables at every level: 4 MiB at 1 GiB (two PTE tables with 4 KiB
    pages) and 1 MiB in a far top-level entry (its own chain of tables down to a PTE table)."""
    g = arena.geometry
    top = g.levels[-1]
    far_index = top.entries // 2 - 1 if g.canonical else top.entries - 1
    return [(1 << 30, 4 * MIB), (far_index * top.entry_span, 1 * MIB)]


def live_frames(arena: Arena) -> list[int]:
    total = sum(arena.pool(n.node)["nframes"] for n in arena.nodes)
    return [f for f in range(total) if arena.frame(f)["state"] == "live"]


def kernel_nodes(arena: Arena, frames: list[int]) -> dict[int, set[int]]:
    """frame -> set of NUMA nodes the kernel reports (move_pages query) for the host pages
    that hold the frame's table.  A table smaller than its frame (arm64-64K's 512-byte top
    level) touches only its first page; the untouched rest of the frame is checked apart:
    it may be on no node at all (the zero page or nothing: -EFAULT/-ENOENT), but never on
    another node than the table."""
    g = arena.geometry
    addrs: list[tuple[int, bool, int]] = []
    for f in frames:
        used = g.levels[arena.frame(f)["level"]].table_bytes
        for off in range(0, g.frame_bytes, numa.PAGE_SIZE):
            addrs.append((f, off < used, arena.frame_address(f) + off))
    status = numa.move_pages(0, [a for _, _, a in addrs])
    out: dict[int, set[int]] = {f: set() for f in frames}
    rest: dict[int, set[int]] = {f: set() for f in frames}
    for (f, holds_table, _), st in zip(addrs, status, strict=True):
        # a negative status (-ENOENT, -EFAULT ...) on a table page shows up as itself
        (out if holds_table else rest)[f].add(st)
    for f in frames:
        assert rest[f] <= out[f] | {-errno.EFAULT, -errno.ENOENT}, (f, out[f], rest[f])
    return out


def build(arena: Arena) -> tuple[AddressSpace, Cpu, list[int]]:
    """Map the ranges with tables on node 0 and leave A and D set on some leaves (they must
    survive the move); the CPU is left idle."""
    g = arena.geometry
    mm = AddressSpace(arena, node=0)
    cpu = Cpu(arena)
    cpu.switch_to(mm)
    vas: list[int] = []
    for start, length in ranges(arena):
        mm.map(start, length, phys=start % (1 << 31))
        vas += range(start, start + length, g.page_size)
    for i, va in enumerate(vas):
        if i % 3 == 0:
            assert cpu.access(va, write=True).ok
        elif i % 3 == 1:
            assert cpu.access(va).ok
    cpu.switch_to(None)
    return mm, cpu, vas


@pytest.mark.parametrize(
    "geometry,strategy",
    [("x86_64_4l", "rewalk"), ("x86_64_4l", "stop"), ("x86_pae", "rewalk"),
     ("arm64_64k_48", "stop")],
)
def test_tables_move_from_real_node_0_to_real_node_1(geometry, strategy):
    need_two_real_nodes()
    arena = Arena(geometry, nodes=2, frames_per_node=128)
    assert [(n.node, n.real, n.bind_node) for n in arena.nodes] == [(0, True, 0), (1, True, 1)]
    assert arena.virtual_nodes == ()
    g = arena.geometry
    mm, cpu, vas = build(arena)
    before = snapshot(mm, vas)
    assert any(t[4] for t in before.values()) and any(t[3] and not t[4] for t in before.values())
    counts = mm.table_counts()
    assert counts[g.levels[0].name] >= 2 and all(counts.values())

    old = live_frames(arena)
    assert len(old) == sum(counts.values())
    assert all(arena.frame(f)["node"] == 0 for f in old)
    # the kernel agrees: every page holding a table is on NUMA node 0
    assert kernel_nodes(arena, old) == {f: {0} for f in old}
    assert numa.page_node(arena.frame_address(mm.root_frame)) == 0

    report = relocate(mm, from_nodes=0, to_node=1, strategy=strategy, batch=4)

    assert report.complete and report.error is None and report.not_relocated == 0
    assert report.relocated == report.frames_found == sum(counts.values())
    # bytes_copied counts each table's own bytes: PAE's top is 32 B, arm64-64K's 512 B
    assert report.bytes_copied == sum(counts[lv.name] * lv.table_bytes for lv in g.levels)
    for lv in g.levels:
        assert report.levels[lv.name].relocated == counts[lv.name]
        assert report.levels[lv.name].bytes_copied == counts[lv.name] * lv.table_bytes
    if geometry != "x86_64_4l":
        top = g.levels[-1]
        assert top.table_bytes < g.frame_bytes
        assert report.levels[top.name].bytes_copied == top.table_bytes

    new = live_frames(arena)
    assert len(new) == len(old) and not set(new) & set(old)
    assert all(arena.frame(f)["node"] == 1 for f in new)
    assert all(arena.frame(f)["state"] == "free" for f in old)  # grace period over, freed
    # the kernel now reports every page holding a table on NUMA node 1
    assert kernel_nodes(arena, new) == {f: {1} for f in new}
    assert numa.page_node(arena.frame_address(mm.root_frame)) == 1
    assert mm.tables()[0] == {lv.name: 0 for lv in g.levels}
    assert mm.tables()[1] == counts

    # every translation unchanged, A/D bits included, and the tree still works for a CPU
    assert snapshot(mm, vas) == before
    cpu.switch_to(mm)
    assert cpu.access(vas[-1], write=True).phys == before[vas[-1]][0]
    assert mm.translate(vas[-1]).dirty
    assert arena.freed_frame_accesses == 0
    cpu.close()
    mm.close()
    assert arena.frames_in_use == 0
    arena.close()


def test_the_kernel_check_tells_a_virtual_node_from_a_real_one():
    """The check above must be able to fail: with unbound (virtual) pools and this thread on
    node 0's CPUs, "relocated to node 1" is only the arena's label - first touch put the new
    frames on NUMA node 0, and the kernel query says so."""
    need_two_real_nodes()
    topo = numa.topology()
    cpus0 = topo.nodes[0].cpus & os.sched_getaffinity(0)
    if not cpus0:
        pytest.skip("no CPU of node 0 is allowed to this process")
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus0)
    try:
        arena = Arena("x86_64_4l", nodes=2, frames_per_node=64, bind=False)
        assert arena.virtual_nodes == (0, 1)
        mm, cpu, vas = build(arena)
        before = snapshot(mm, vas)
        assert relocate(mm, 0, 1, strategy="rewalk").complete
        new = live_frames(arena)
        assert new and all(arena.frame(f)["node"] == 1 for f in new)
        assert kernel_nodes(arena, new) == {f: {0} for f in new}  # not on NUMA node 1
        assert snapshot(mm, vas) == before
        cpu.close()
        mm.close()
        arena.close()
    finally:
        os.sched_setaffinity(0, saved)
