"""Inside the multi-node guest: a table frame allocated on arena node 1 lives on NUMA node 1."""

from __future__ import annotations

import pytest

from ptreloc import numa
from ptreloc.core import AddressSpace, Arena

pytestmark = pytest.mark.multinode


def test_frames_live_on_their_bound_node():
    if len(numa.topology().with_memory) < 2:
        pytest.skip("needs two NUMA nodes with memory (run with make test-vm)")
    arena = Arena("x86_64_4l", nodes=2, frames_per_node=1024)
    assert all(n.real for n in arena.nodes)
    mm = AddressSpace(arena, node=0)
    mm.map(1 << 30, 4096, table_node=1)
    t = mm.translate(1 << 30)
    assert t.table_node == 1
    # the zeroing at allocation faulted the page in under MPOL_BIND: ask the kernel where
    assert numa.page_node(arena.frame_address(t.table_frame)) == 1
    assert numa.page_node(arena.frame_address(mm.root_frame)) == 0
    mm.close()
    arena.close()
