"""``ptreloc census`` on this machine (root, any number of nodes) and its command line.

The count is checked against the kernel's own counter: every frame with KPF_PGTABLE is a page
table at a level the kernel marks, and the constructor that marks it is the one that counts it
in the node's NR_PAGETABLE (``PageTables:`` of /sys/devices/system/node/nodeN/meminfo).  The scan
is not atomic, so the comparison allows a race margin, documented in ``ptreloc.census``: the
per-cpu vmstat lag (the node's vmstat threshold times the CPUs) plus the counter's own variation
during the scan.  On a shared machine that is busy forking, one attempt may still fall outside
it; three attempts all failing means the count is wrong.
"""

from __future__ import annotations

import json
import mmap
import os
import random
import re
from pathlib import Path

import pytest
from live_workload import ptreloc, ptreloc_as_nobody

from ptreloc import census

root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (/proc/kpageflags is 0400)")
STAT_REFRESH = Path("/proc/sys/vm/stat_refresh")


def refresh_vmstat() -> None:
    """Fold the per-cpu vmstat deltas into the node counters (root; a write of anything)."""
    try:
        STAT_REFRESH.write_text("1")
    except OSError:
        pass


# ---- classification ---------------------------------------------------------------------------


def test_classify_matches_the_frame_by_frame_reference_on_random_words() -> None:
    rng = random.Random(14)
    words = bytearray()
    for _ in range(5000):
        # few bits set, so every rule (and every precedence between two rules) is reached
        w = 0
        for _ in range(rng.randrange(0, 4)):
            w |= 1 << rng.choice((5, 7, 10, 12, 13, 17, 20, 21, 22, 23, 26, 32, 0, 2, 15, 16))
        words += w.to_bytes(8, "little")
    assert census.classify(bytes(words)) == census.classify_py(bytes(words))


def test_classify_rules() -> None:
    def kind(*bits: int) -> str:
        w = sum(1 << b for b in bits).to_bytes(8, "little")
        return census.KINDS[census.classify(w)[0]]

    assert kind() == "kernel_other"
    assert kind(26) == "pagetable"
    assert kind(7) == "slab" and kind(7, 16) == "slab"  # a slab tail
    assert kind(10) == "free"
    assert kind(5) == "movable" and kind(12) == "movable" and kind(22, 16) == "movable"
    assert kind(32) == "reserved"
    assert kind(20) == "hole" and kind(20, 26) == "hole"
    assert kind(23) == "offline"
    assert kind(26, 32) == "pagetable"  # a marked table wins over the reserved bit


@root
def test_classify_matches_the_reference_on_real_kpageflags() -> None:
    blocks = [b for b in census.memory_blocks() if b.state == "online"]
    fd = os.open(census.KPAGEFLAGS, os.O_RDONLY)
    try:
        for b in blocks[:: max(1, len(blocks) // 4)]:
            data = os.pread(fd, 8 * 8192, b.start_pfn * 8)
            assert census.classify(data) == census.classify_py(data)
    finally:
        os.close(fd)


# ---- the census on this machine ---------------------------------------------------------------


@root
def test_every_frame_of_every_block_gets_one_kind() -> None:
    c = census.take_census()
    pb = 1 << c.pageblock_order
    for node, n in c.per_node.items():
        frames = sum(b["end_pfn"] - b["start_pfn"] for b in n["blocks"])
        assert sum(n["pages"].values()) == frames, node
        for b in n["blocks"]:
            assert sum(b["pages"].values()) == b["end_pfn"] - b["start_pfn"]
            p = b["pageblocks"]
            assert p["total"] <= (b["end_pfn"] - b["start_pfn"]) // pb
            assert p["free"] + p["pinned"] <= p["total"]
            assert p["only_unmovable_kind"]["pagetable"] <= p["with"]["pagetable"] <= p["pinned"]
            assert (b["pages"]["pagetable"] == 0) == (p["with"]["pagetable"] == 0)
        # the node total is the sum of its blocks
        for k in census.KINDS:
            assert n["pages"][k] == sum(b["pages"][k] for b in n["blocks"])
        assert n["pages"]["free"] > 0 and n["pages"]["movable"] > 0
    assert {r["kind"] for r in c.ranking} == {"pagetable", "slab", "reserved", "kernel_other"}
    assert [r["pages"] for r in c.ranking] == sorted((r["pages"] for r in c.ranking),
                                                     reverse=True)


@root
def test_page_table_pages_counted_equal_the_nodes_page_tables() -> None:
    results = []
    for _ in range(3):
        refresh_vmstat()
        c = census.take_census()
        checks = {n: d["pagetables_check"] for n, d in c.per_node.items()}
        results.append(checks)
        if all(ch["agrees"] for ch in checks.values()):
            break
    else:
        pytest.fail(f"the page-table count disagreed with PageTables three times: {results}")
    for ch in results[-1].values():
        assert ch["counted_pages"] > 0


@root
def test_a_process_with_many_page_tables_raises_the_count_by_them() -> None:
    """512 PTE tables (one page every 2 MiB over 1 GiB): the census must see them arrive
    and leave (a count that ignored KPF_PGTABLE, or read the wrong bit, fails here)."""
    span = 1 << 30

    def count() -> int:
        return sum(d["pages"]["pagetable"] for d in census.take_census().per_node.values())

    for _ in range(3):
        before = count()
        region = mmap.mmap(-1, span, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | 0x4000)
        try:
            region.madvise(mmap.MADV_NOHUGEPAGE)
            for off in range(0, span, 2 << 20):
                region[off] = 1
            during = count()
        finally:
            region.close()
        after = count()
        grew, shrank = during - before, during - after
        # 512 tables, plus up to one PMD table; others fork and exit meanwhile
        if 480 <= grew <= 600 and 480 <= shrank <= 600:
            return
    pytest.fail(f"expected ~513 more page-table pages while the region lived: before {before}, "
                f"during {during}, after {after} (the last of three attempts)")


@root
def test_pageblock_order_and_block_layout_come_from_the_kernel() -> None:
    text = Path("/proc/pagetypeinfo").read_text()
    assert census.pageblock_order() == int(re.search(r"Page block order:\s*(\d+)", text)[1])
    size = int(Path("/sys/devices/system/memory/block_size_bytes").read_text(), 16)
    blocks = census.memory_blocks()
    assert blocks and all(b.end_pfn - b.start_pfn == size // 4096 for b in blocks)
    linked = {int(p.name[6:]) for p in Path("/sys/devices/system/node").glob("node*/memory*")}
    assert {b.index for b in blocks} == linked


# ---- command line ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["census", "drain"])
def test_help(name: str) -> None:
    r = ptreloc(name, "--help", check=0)
    assert "Examples:" in r.stdout and "Exit codes" in r.stdout


@root
def test_census_json_and_table() -> None:
    r = ptreloc("census", "--json", check=0)
    data = json.loads(r.stdout)
    assert set(data["per_node"]) == {str(n) for n in data["nodes"]}
    assert data["pageblock_pages"] == 1 << data["pageblock_order"]
    assert data["ranking"] and data["pagetable_rank"]["by_pages"] in range(1, 5)
    assert "marked" in data["marked_levels"]
    r = ptreloc("census", check=0)
    assert "unmovable kinds, ranked by pages" in r.stdout
    assert "page-table pages counted" in r.stdout


@root
def test_census_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "pinned.png"
    r = ptreloc("census", "--plot", str(out), check=0)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "plot written" in r.stdout
    r = ptreloc("census", "--plot", str(tmp_path / "pinned.txt"), check=2)
    assert r.stderr.count("\n") == 1 and "cannot draw" in r.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("census", "--node", "9"), "node 9 does not exist"),
        (("census", "--node", "x"), "not a node list"),
        (("drain", "--node", "9"), "node 9 does not exist"),
        (("drain", "--node", "x"), "not a valid integer"),
        (("drain",), "missing option '--node'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: tuple[str, ...], needle: str) -> None:
    r = ptreloc(*args, check=2)
    assert r.stderr.count("\n") == 1 and needle in r.stderr.lower(), r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_drain_refuses_the_only_node_with_memory() -> None:
    from ptreloc import numa

    topo = numa.topology()
    with_memory = sorted(topo.online & topo.with_memory)
    if len(with_memory) != 1:
        pytest.skip("this machine has more than one node with memory")
    r = ptreloc("drain", "--node", str(with_memory[0]), check=2)
    assert "only node with memory" in r.stderr and r.stderr.count("\n") == 1


@root
def test_census_as_nobody_is_exit_1() -> None:
    r = ptreloc_as_nobody("census")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "not root" in r.stderr and r.stderr.count("\n") == 1


@root
def test_by_process_without_the_kernel_walk_is_one_line() -> None:
    from ptreloc import kernel_tables as kt

    ok, why = kt.availability()
    if ok:
        pytest.skip("the kernel walk works here (tests/test_census_multinode.py uses it)")
    r = ptreloc("census", "--by-process", check=1)
    assert "--by-process needs the kernel walk" in r.stderr and r.stderr.count("\n") == 1
