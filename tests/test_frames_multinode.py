"""The node of a page from its frame (ptreloc.frames) against move_pages(2), page for page, in
the 2-node guest as root: data on node 0, on node 1, interleaved over both, and after
migratepages moved it.  What snapshot() now answers with must be what the kernel says."""

from __future__ import annotations

import os

import pytest
from live_workload import live_workload

from ptreloc import frames, numa, proc

pytestmark = [
    pytest.mark.multinode,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="frame numbers in pagemap need root"),
]


def _agree(pid: int) -> tuple[proc.ProcessSnapshot, list[int]]:
    """Snapshot ``pid``; return it and the indexes where the frames' answer differs from a
    move_pages query of the same pages made right after."""
    snap = proc.snapshot(pid)
    assert snap.node_source == "frames"
    assert snap.frames_visible
    asked = numa.move_pages(pid, snap.resident)
    return snap, [i for i, (a, b) in enumerate(zip(snap.nodes, asked, strict=True)) if a != b]


@pytest.mark.parametrize("prefix", [["numactl", "--membind=0"], ["numactl", "--membind=1"],
                                    ["numactl", "--interleave=0,1"]],
                         ids=["node0", "node1", "interleave"])
def test_frame_nodes_agree_with_move_pages_page_for_page(prefix: list[str]) -> None:
    with live_workload(pages=16384, threads=0, prefix=prefix) as w:
        snap, differ = _agree(w.pid)
        # the process runs on; a page can be faulted or moved between the two reads - none of
        # this workload's pages moves (no balancing of a bound process), so allow almost none
        assert len(differ) <= 2, [(hex(snap.resident[i]), snap.nodes[i]) for i in differ[:5]]
        counts = snap.node_pages()
        if prefix[1] == "--membind=1":
            assert counts.get(1, 0) >= w.touched
        elif prefix[1] == "--interleave=0,1":
            assert counts.get(0, 0) >= w.touched // 3 and counts.get(1, 0) >= w.touched // 3
        # move_pages was asked only about the pages the frame does not tell (vdso & co)
        assert snap.asked_move_pages < 64


def test_frame_nodes_follow_migratepages() -> None:
    # bound to node 0 so that every page starts there: under --membind=0,1 the kernel may
    # place them all on node 1 from the start (it did in the ASan guest, whose runtime fills
    # node 0), and then the migration has nothing to move and the last check cannot pass
    with live_workload(pages=8192, threads=0, prefix=["numactl", "--membind=0"]) as w:
        before = proc.snapshot(w.pid)
        assert before.node_pages().get(0, 0) >= w.touched
        numa.migrate_pages(w.pid, [0], [1])
        snap, differ = _agree(w.pid)
        assert len(differ) <= 2
        assert snap.node_pages().get(1, 0) >= w.touched
        assert snap.node_pages().get(1, 0) > before.node_pages().get(1, 0)


def test_memory_blocks_cover_every_node_with_memory() -> None:
    blocks = frames.memory_block_nodes()
    assert blocks is not None
    assert set(blocks.nodes) - {-1} == set(numa.topology().with_memory)
