"""Host tests of ptreloc.btf and ptreloc.kernel_tables.

The host kernel has no /proc/kcore, so the walk itself is tested on a *synthetic* kernel: an
ELF core file laid out like /proc/kcore (a kernel-image segment with init_task,
page_offset_base and __pgtable_l5_enabled, and a direct-map segment of a few physical frames
holding task_structs, an mm_struct and page tables), a kallsyms file, a kpageflags file and a
sysfs node/memory-block tree -- with the *host's real BTF* for the structure layouts.  The live
walk is tested in the guest (test_kernel_tables_multinode.py).
"""

from __future__ import annotations

import os
import platform
import struct
import time
from array import array
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptreloc import btf
from ptreloc import kernel_tables as kt
from ptreloc.errors import NoSuchProcess, PtrelocError

HOST_BTF = Path("/sys/kernel/btf/vmlinux")
needs_btf = pytest.mark.skipif(not HOST_BTF.exists(), reason="this kernel has no BTF")
needs_root_x86 = pytest.mark.skipif(
    os.geteuid() != 0 or platform.machine() != "x86_64",
    reason="walk_process insists on root and x86-64 (even on synthetic files)",
)


# --------------------------------------------------------------------------------------------
# BTF: the host's real one
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def host_btf() -> btf.Btf:
    if not HOST_BTF.exists():
        pytest.skip("this kernel has no /sys/kernel/btf/vmlinux")
    return btf.load_vmlinux()


@needs_btf
def test_btf_parses_fast() -> None:
    t0 = time.perf_counter()
    b = btf.load_vmlinux()
    b.member_offset("task_struct", "mm")
    elapsed = time.perf_counter() - t0
    assert len(b) > 10_000  # a vmlinux has tens of thousands of types
    assert elapsed < 1.0, f"parsing the host BTF took {elapsed:.2f} s"


def test_btf_task_and_mm_layout_is_plausible(host_btf: btf.Btf) -> None:
    task_size = host_btf.struct_size("task_struct")
    mm_size = host_btf.struct_size("mm_struct")
    assert 1024 < task_size < 65536
    assert 256 < mm_size < 16384
    offsets = {m: host_btf.member_offset("task_struct", m) for m in ("mm", "tasks", "tgid", "pid")}
    for name, off in offsets.items():
        assert 0 < off < task_size, (name, off)
    # pid_t pid; pid_t tgid; are adjacent in task_struct, 4 bytes each
    assert host_btf.member_size("task_struct", "pid") == 4
    assert host_btf.member_size("task_struct", "tgid") == 4
    assert offsets["tgid"] == offsets["pid"] + 4
    assert host_btf.member_size("task_struct", "tasks") == 16  # a list_head
    assert host_btf.struct_size("list_head") == 16
    assert host_btf.member_offset("list_head", "next") == 0
    assert host_btf.member_offset("list_head", "prev") == 8
    assert host_btf.member_size("task_struct", "mm") == 8  # a pointer
    assert offsets["mm"] % 8 == 0 and offsets["tasks"] % 8 == 0
    pgd = host_btf.member_offset("mm_struct", "pgd")
    assert 0 < pgd < mm_size and pgd % 8 == 0
    assert host_btf.member_size("mm_struct", "pgd") == 8
    # a nested path agrees with the sum of its parts
    assert host_btf.member_offset("task_struct", "tasks.prev") == offsets["tasks"] + 8


def test_btf_bitfield_and_missing_member(host_btf: btf.Btf) -> None:
    # task_struct has single-bit flags (sched_reset_on_fork and friends) in a kind_flag struct
    m = host_btf.member("task_struct", "sched_reset_on_fork")
    assert m.bitfield_size == 1
    with pytest.raises(btf.BtfError, match="bitfield"):
        host_btf.member_offset("task_struct", "sched_reset_on_fork")
    with pytest.raises(btf.BtfError, match="no member"):
        host_btf.member_offset("task_struct", "no_such_member_xyz")
    with pytest.raises(btf.BtfError, match="no struct"):
        host_btf.struct_size("no_such_struct_xyz")


# --------------------------------------------------------------------------------------------
# BTF: a synthetic blob exercising every rule
# --------------------------------------------------------------------------------------------


def _btf_blob() -> bytes:
    names = ["int", "myint", "inner", "a", "b", "x", "y", "outer", "first", "arr", "tail", "in"]
    strings = b"\0"
    off = {}
    for n in names:
        off[n] = len(strings)
        strings += n.encode() + b"\0"

    def info(kind: int, vlen: int = 0, kflag: int = 0) -> int:
        return (kflag << 31) | (kind << 24) | vlen

    w: list[int] = []
    w += [off["int"], info(1), 4, 32]  # 1: int, 32 bits
    w += [off["myint"], info(8), 1]  # 2: typedef myint -> int
    w += [0, info(10), 2]  # 3: const myint
    # 4: struct inner (kind_flag: offsets carry bitfield sizes): a:3 at bit 0, b at bit 32
    w += [off["inner"], info(4, 2, 1), 8, off["a"], 1, (3 << 24) | 0, off["b"], 3, 32]
    w += [0, info(5, 2), 8, off["x"], 1, 0, off["y"], 6, 0]  # 5: anonymous union {int x; *y}
    w += [0, info(2), 4]  # 6: struct inner *
    w += [0, info(3), 0, 1, 1, 10]  # 7: int[10]
    # 8: struct outer { int first; union {x, y}; int arr[10]; const myint tail; inner in; }
    w += [off["outer"], info(4, 5), 72,
          off["first"], 1, 0, 0, 5, 64, off["arr"], 7, 128, off["tail"], 3, 448,
          off["in"], 4, 512]
    types = array("I", w).tobytes()
    header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return header + types + strings


def test_btf_synthetic_rules() -> None:
    b = btf.Btf(_btf_blob(), "synthetic")
    assert len(b) == 8
    assert b.struct_size("outer") == 72
    assert b.member_offset("outer", "first") == 0
    assert b.member_offset("outer", "x") == 8  # found inside the anonymous union
    assert b.member_offset("outer", "y") == 8
    assert b.member_size("outer", "y") == 8  # pointer
    assert b.member_offset("outer", "arr") == 16
    assert b.member_size("outer", "arr") == 40  # 10 x int
    assert b.member_offset("outer", "tail") == 56
    assert b.member_size("outer", "tail") == 4  # const -> typedef -> int
    assert b.member_offset("outer", "in.b") == 68
    a = b.member("inner", "a")
    assert (a.bit_offset, a.bitfield_size) == (0, 3)  # kind_flag decoding
    with pytest.raises(btf.BtfError, match="bitfield"):
        b.member_offset("inner", "a")
    assert b.member_offset("inner", "b") == 4  # kind_flag: bits 0-23 are the offset
    with pytest.raises(btf.BtfError):
        b.member_offset("outer", "y.b")  # through a pointer is not a member path


def test_btf_rejects_garbage() -> None:
    with pytest.raises(btf.BtfError, match="not BTF"):
        btf.Btf(b"\x00" * 64, "junk")
    blob = bytearray(_btf_blob())
    blob[24 + 7] = 31  # kind 31 in type 1's info: unknown
    with pytest.raises(btf.BtfError, match="unknown kind"):
        btf.Btf(bytes(blob), "junk")
    with pytest.raises(btf.BtfError, match="does not exist"):
        btf.load_vmlinux("/nonexistent/btf")
    assert issubclass(btf.BtfError, PtrelocError)


# --------------------------------------------------------------------------------------------
# entry decoding
# --------------------------------------------------------------------------------------------

NX = 1 << 63
PKEY = 0xF << 59  # protection-key bits 59..62
SW = 1 << 52 | 1 << 58  # software bits


def test_decode_pte_masks_nx_and_high_bits() -> None:
    e = NX | PKEY | SW | (0x12345 << 12) | 0x67
    assert kt.decode_entry(e, "pte") == kt.Entry("leaf", 0x12345, 4096)
    assert kt.decode_entry(0, "pte").kind == "none"
    # a swap entry: non-zero, present and PROT_NONE bits clear
    assert kt.decode_entry(0x3E00, "pte").kind == "nonpresent"


def test_decode_protnone_frame_is_inverted() -> None:
    # NUMA-hinting / PROT_NONE pte: present clear, bit 8 set, frame stored inverted (L1TF)
    inverted = ~(0x4242 << 12) & ((1 << 52) - 1) & ~0xFFF
    e = inverted | 0x100 | 0x60
    assert kt.decode_entry(e, "pte") == kt.Entry("leaf", 0x4242, 4096)


def test_decode_pse_is_a_huge_leaf_at_pmd_and_pud() -> None:
    # PSE (bit 7) at PMD: 2 MiB leaf; bit 12 is PAT there, not an address bit
    pmd = NX | (0x200 << 12) | (1 << 12) | 0xE7
    assert kt.decode_entry(pmd, "pmd") == kt.Entry("leaf", 0x200, 2 << 20)
    # the same bits without PSE: a pointer to a PTE table (bit 12 *is* an address bit)
    assert kt.decode_entry(pmd & ~0x80, "pmd") == kt.Entry("table", 0x201)
    pud = (0x40000 << 12) | (1 << 12) | 0xE7
    assert kt.decode_entry(pud, "pud") == kt.Entry("leaf", 0x40000, 1 << 30)
    # PSE is reserved at pgd/p4d: flagged, never followed
    assert kt.decode_entry(pud, "pgd").kind == "bad"
    assert kt.decode_entry(pud, "p4d").kind == "bad"
    # a non-present entry is never a table, whatever else is set
    assert kt.decode_entry((0x99 << 12) | 0x66, "pud").kind == "nonpresent"


def test_decode_table_limits_to_user_half() -> None:
    words = array("Q", [0] * 512)
    words[3] = (7 << 12) | 0x67
    words[300] = (8 << 12) | 0x63  # a kernel-half slot
    d = kt.decode_table(words.tobytes(), "pgd", limit=256)
    assert d.children == [(3, 7)]
    d = kt.decode_table(words.tobytes(), "pgd")
    assert d.children == [(3, 7), (300, 8)]


# --------------------------------------------------------------------------------------------
# frame -> node, on real and synthetic sysfs
# --------------------------------------------------------------------------------------------


def test_node_map_real_sysfs() -> None:
    node_dir = Path("/sys/devices/system/node")
    block = int(Path("/sys/devices/system/memory/block_size_bytes").read_text(), 16)
    nm = kt.NodeMap.from_sysfs()
    assert nm.block_bytes == block and nm.ranges
    checked = 0
    for nd in node_dir.glob("node[0-9]*"):
        node = int(nd.name[4:])
        for mem in nd.glob("memory[0-9]*"):
            first = int(mem.name[6:]) * block // 4096
            assert nm.node_of(first) == node
            assert nm.node_of(first + block // 4096 - 1) == node
            checked += 1
    assert checked > 0
    assert nm.node_of(nm.end_pfn) is None


def _fake_sysfs(tmp: Path, blocks: dict[int, list[int]], block_bytes: int) -> tuple[str, str]:
    node_dir, mem_dir = tmp / "node", tmp / "memory"
    mem_dir.mkdir(parents=True)
    (mem_dir / "block_size_bytes").write_text(f"{block_bytes:x}\n")
    for node, ms in blocks.items():
        (node_dir / f"node{node}").mkdir(parents=True)
        for m in ms:
            (node_dir / f"node{node}" / f"memory{m}").mkdir()
    (node_dir / "online").write_text(",".join(map(str, blocks)) + "\n")
    return str(node_dir), str(mem_dir)


def test_node_map_synthetic_holes_and_merge(tmp_path: Path) -> None:
    node_dir, mem_dir = _fake_sysfs(tmp_path, {0: [0, 1, 3], 1: [4, 5]}, 0x8000000)
    nm = kt.NodeMap.from_sysfs(node_dir, mem_dir)
    per = 0x8000000 // 4096
    assert nm.ranges == [(0, 2 * per, 0), (3 * per, 4 * per, 0), (4 * per, 6 * per, 1)]
    assert nm.node_of(per * 2) is None  # block 2 is a hole
    assert nm.node_of(per * 3) == 0
    assert nm.node_of(per * 6 - 1) == 1
    assert nm.node_of(per * 6) is None


# --------------------------------------------------------------------------------------------
# availability on this host
# --------------------------------------------------------------------------------------------


def test_availability_reason_here() -> None:
    ok, reason = kt.availability()
    assert isinstance(ok, bool) and reason
    if not os.path.exists("/proc/kcore"):
        assert not ok
        assert "/proc/kcore" in reason and "CONFIG_PROC_KCORE" in reason
    elif os.geteuid() != 0:
        assert not ok and "root" in reason


def test_walk_process_unavailable_raises_clean_error() -> None:
    if os.path.exists("/proc/kcore") and os.geteuid() == 0:
        pytest.skip("kcore is readable here")
    with pytest.raises(kt.KernelTablesUnavailable) as info:
        kt.walk_process(os.getpid())
    assert isinstance(info.value, PtrelocError)
    assert "/proc/kcore" in str(info.value) or "root" in str(info.value)


def test_walk_process_no_such_pid() -> None:
    with pytest.raises(kt.ProcessGone) as info:
        kt.walk_process(4_000_000)  # above any pid in use here
    assert isinstance(info.value, NoSuchProcess)
    assert info.value.pid == 4_000_000 and info.value.path == "/proc/4000000"


# --------------------------------------------------------------------------------------------
# a synthetic kernel: kcore, kallsyms, kpageflags, sysfs
# --------------------------------------------------------------------------------------------

IMAGE = 0xFFFF_FFFF_8200_0000
BASES = {4: 0xFFFF_8880_0000_0000, 5: 0xFF11_0000_0000_0000}
FIRST_PFN, NPAGES = 256, 64  # the fake RAM: frames 256..319
PGTABLE = 1 << kt.KPF_PGTABLE


def _elf_core(path: Path, segments: list[tuple[int, bytes]]) -> None:
    """An ELF64 ET_CORE file with one PT_LOAD per (vaddr, data), like /proc/kcore."""
    phoff, phsize = 64, 56
    data_off = phoff + phsize * len(segments)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    header = ident + struct.pack("<HHIQQQIHHHHHH", 4, 62, 1, 0, phoff, 0, 0, 64, phsize,
                                 len(segments), 64, 0, 0)
    phdrs = b""
    blobs = b""
    for vaddr, blob in segments:
        phdrs += struct.pack("<IIQQQQQQ", 1, 7, data_off + len(blobs), vaddr, 0, len(blob),
                             len(blob), 4096)
        blobs += blob
    path.write_bytes(header + phdrs + blobs)


class FakeKernel:
    """Physical frames 256..319 (blocks of 32 frames: 256..287 node 0, 288..319 node 1)."""

    def __init__(self, tmp: Path, b: btf.Btf, levels: int, *, mm_null: bool = False,
                 l5_value: int | None = None) -> None:
        self.tmp, self.levels = tmp, levels
        self.base = BASES[levels]
        self.ram = bytearray(NPAGES * 4096)
        self.flags = array("Q", [0] * (FIRST_PFN + NPAGES))
        image = bytearray(0x10000)
        tasks, tgid_off, pid_off, mm_off = (b.member_offset("task_struct", m)
                                            for m in ("tasks", "tgid", "pid", "mm"))
        pgd_off = b.member_offset("mm_struct", "pgd")
        init_task = IMAGE + 0x1000
        self.va = lambda pfn: self.base + pfn * 4096  # noqa: E731 - a direct-map address
        task_a, task_b, mm = self.va(300), self.va(302), self.va(304)

        def put(buf: bytearray, at: int, value: int, size: int = 8) -> None:
            buf[at : at + size] = value.to_bytes(size, "little")

        def put_va(va: int, value: int, size: int = 8) -> None:
            if va >= IMAGE:
                put(image, va - IMAGE, value, size)
            else:
                put(self.ram, va - self.va(FIRST_PFN), value, size)

        # init_task -> task A (tgid 1) -> task B (us) -> back to init_task
        put_va(init_task + tasks, task_a + tasks)
        put_va(task_a + tasks, task_b + tasks)
        put_va(task_a + tgid_off, 1, 4)
        put_va(task_a + pid_off, 1, 4)
        put_va(task_b + tasks, init_task + tasks)
        put_va(task_b + tgid_off, os.getpid(), 4)
        put_va(task_b + pid_off, os.getpid(), 4)
        put_va(task_b + mm_off, 0 if mm_null else mm)
        put_va(mm + pgd_off, self.va(256))
        put(image, 0x8000, self.base)  # page_offset_base
        put(image, 0x8010, (1 if levels == 5 else 0) if l5_value is None else l5_value, 4)

        def entry(index_pfn: int, index: int, value: int) -> None:
            put_va(self.va(index_pfn) + index * 8, value)

        # pgd 256 -> (p4d 262 ->) pud 257; the kernel half maps the direct map
        top_shift = 48 if levels == 5 else 39
        entry(256, (self.base >> top_shift) & 511, (258 << 12) | 0x63)
        if levels == 5:
            entry(256, 0, (262 << 12) | 0x67)
            entry(262, 0, (257 << 12) | 0x67)
        else:
            entry(256, 0, (257 << 12) | 0x67)
        entry(257, 0, (259 << 12) | 0x67)  # pud[0] -> pmd 259
        entry(257, 1, (0x40000 << 12) | (1 << 12) | 0xE7)  # pud[1]: 1 GiB leaf, PAT set
        entry(259, 0, (260 << 12) | 0x67)  # pmd[0] -> pte 260
        entry(259, 1, NX | (0x1000 << 12) | 0xE7)  # pmd[1]: 2 MiB leaf (PSE)
        entry(259, 2, (290 << 12) | 0x67)  # pmd[2] -> pte 290 (node 1)
        entry(259, 3, (261 << 12) | 0x67)  # pmd[3] -> 261: not a page table (no PG_table)
        entry(260, 0, NX | PKEY | (0x5000 << 12) | 0x67)
        entry(260, 5, (~(0x6000 << 12) & ((1 << 52) - 1) & ~0xFFF) | 0x100)  # PROT_NONE
        entry(260, 7, 0x3E00)  # swap entry
        entry(290, 511, (0x7000 << 12) | 0x67)
        # frame 261 holds what looks like ptes: followed only if the PG_table check is ignored
        entry(261, 0, (0x6666 << 12) | 0x67)
        # frame 0x1000's content does not matter: the PSE leaf must never be read as a table
        for pfn in (259, 260, 290):
            self.flags[pfn] = PGTABLE
        self.kcore = tmp / "kcore"
        _elf_core(self.kcore, [(IMAGE, bytes(image)), (self.va(FIRST_PFN), bytes(self.ram))])
        self.kallsyms = tmp / "kallsyms"
        self.kallsyms.write_text(
            f"{IMAGE:016x} T _stext\n{init_task:016x} D init_task\n"
            f"{IMAGE + 0x8000:016x} D page_offset_base\n"
            f"{IMAGE + 0x8010:016x} D __pgtable_l5_enabled\n"
            f"{IMAGE + 0x9000:016x} t helper\t[some_module]\n"
        )
        self.kpageflags = tmp / "kpageflags"
        self.kpageflags.write_bytes(self.flags.tobytes())
        self.node_dir, self.memory_dir = _fake_sysfs(tmp, {0: [8], 1: [9]}, 32 * 4096)

    def walk(self, pid: int | None = None) -> kt.KernelTables:
        return kt.walk_process(
            os.getpid() if pid is None else pid,
            kcore_path=str(self.kcore),
            kallsyms_path=str(self.kallsyms),
            btf_path=str(HOST_BTF),
            node_dir=self.node_dir,
            memory_dir=self.memory_dir,
            kpageflags_path=str(self.kpageflags),
        )

    def availability(self) -> tuple[bool, str]:
        return kt.availability(str(self.kcore), str(self.kallsyms), str(HOST_BTF))


@pytest.mark.parametrize("levels", [4, 5])
@needs_btf
@needs_root_x86
def test_walk_synthetic_kernel(tmp_path: Path, host_btf: btf.Btf, levels: int) -> None:
    fake = FakeKernel(tmp_path, host_btf, levels)
    ok, reason = fake.availability()
    assert ok, reason
    assert f"{levels}-level" in reason
    r = fake.walk()
    assert r.paging_levels == levels and r.page_offset_base == fake.base
    assert r.pgd_pfn == 256
    expect = {"pgd": 1, "pud": 1, "pmd": 1, "pte": 2} | ({"p4d": 1} if levels == 5 else {})
    assert r.frames_by_level() == expect
    # the table behind pmd[3] is not PG_table: counted, not followed (so no third pte table)
    assert r.changed_under_walk == 1
    per_node = r.tables_per_node()
    assert per_node[1] == {"pte": 1}  # frame 290 is in memory block 9, node 1
    assert sum(per_node[0].values()) == sum(expect.values()) - 1
    MiB, GiB = 1 << 20, 1 << 30
    assert r.leaf_pfn(0) == 0x5000  # NX and pkey bits masked off
    assert r.leaf_pfn(5 * 4096 + 123) == 0x6000  # PROT_NONE, inverted frame
    assert r.leaf_pfn(7 * 4096) is None  # a swap entry translates nothing
    assert r.leaf_pfn(1 * 4096) is None
    # the 2 MiB leaf: fails if PSE were ignored (the walk would have tried frame 0x1000 as a
    # table, counted it as changed, and found no translation)
    assert r.leaf_pfn(2 * MiB + 3 * 4096) == 0x1000 + 3
    assert r.leaf_pfn(1 * GiB + 5 * 2 * MiB + 4096) == 0x40000 + 5 * 512 + 1  # PAT bit ignored
    assert r.leaf_pfn(4 * MiB + 511 * 4096) == 0x7000
    assert r.leaf_pfn(6 * MiB + 4096) is None  # pmd[3]'s range: its target was not followed
    by_pfn = {t.pfn: t for t in r.tables}
    assert (by_pfn[290].level, by_pfn[290].start, by_pfn[290].end) == ("pte", 4 * MiB, 6 * MiB)
    assert (by_pfn[259].start, by_pfn[259].end) == (0, GiB)
    assert by_pfn[256].start == 0 and by_pfn[256].end == 256 << (48 if levels == 5 else 39)
    assert by_pfn[260].nonpresent == 1 and list(by_pfn[260].leaf_index) == [0, 5]
    assert sorted((va, pfn, size) for va, pfn, size in r.leaves()) == [
        (0, 0x5000, 4096),
        (5 * 4096, 0x6000, 4096),
        (2 * MiB, 0x1000, 2 * MiB),
        (4 * MiB + 511 * 4096, 0x7000, 4096),
        (GiB, 0x40000, GiB),
    ]
    assert r.pgtable_marked["pte"] == (2, 2) and r.pgtable_marked["pmd"] == (1, 1)
    assert r.pgtable_marked["pud"] == (0, 1)
    assert r.accounted_levels() == ("pmd", "pte")


@needs_btf
@needs_root_x86
def test_walk_synthetic_kernel_thread_and_unknown_task(tmp_path: Path, host_btf: btf.Btf) -> None:
    fake = FakeKernel(tmp_path, host_btf, 4, mm_null=True)
    with pytest.raises(kt.KernelThread) as info:
        fake.walk()
    assert info.value.pid == os.getpid()
    # a live pid that the fake task list does not hold: a clean error, after bounded retries
    with pytest.raises(kt.WalkInconsistent, match="not on init_task's task list"):
        fake.walk(os.getppid())


@needs_btf
@needs_root_x86
def test_availability_reasons_synthetic(tmp_path: Path, host_btf: btf.Btf) -> None:
    fake = FakeKernel(tmp_path, host_btf, 4)
    ok, reason = kt.availability(str(tmp_path / "nokcore"), str(fake.kallsyms), str(HOST_BTF))
    assert not ok and "CONFIG_PROC_KCORE" in reason
    ok, reason = kt.availability(str(fake.kcore), str(fake.kallsyms), str(tmp_path / "nobtf"))
    assert not ok and "CONFIG_DEBUG_INFO_BTF" in reason
    hidden = tmp_path / "hidden"
    hidden.write_text("".join(f"{0:016x} D {n}\n" for n in ("init_task", "page_offset_base")))
    ok, reason = kt.availability(str(fake.kcore), str(hidden), str(HOST_BTF))
    assert not ok and "kptr_restrict" in reason
    text_only = tmp_path / "text_only"
    text_only.write_text(f"{IMAGE:016x} T _stext\n")
    ok, reason = kt.availability(str(fake.kcore), str(text_only), str(HOST_BTF))
    assert not ok and "CONFIG_KALLSYMS_ALL" in reason
    (tmp_path / "notelf").write_bytes(b"not an elf core" * 10)
    ok, reason = kt.availability(str(tmp_path / "notelf"), str(fake.kallsyms), str(HOST_BTF))
    assert not ok and "ELF" in reason
    # LA57 says 5-level but the direct map is where a 4-level one lives: refuse, say why
    other = tmp_path / "other"
    other.mkdir()
    odd = FakeKernel(other, host_btf, 4, l5_value=1)
    ok, reason = odd.availability()
    assert not ok and "paging mode unclear" in reason


def test_read_kallsyms_matches_whole_core_names(tmp_path: Path) -> None:
    f = tmp_path / "kallsyms"
    f.write_text(
        "ffffffff81000000 T _stext\n"
        "ffffffff82000010 D my_init_task\n"
        "ffffffff82000020 D init_task\n"
        "ffffffffc0000000 t init_task\t[mod]\n"
    )
    assert kt.read_kallsyms(["init_task", "absent"], str(f)) == {"init_task": 0xFFFFFFFF82000020}
    assert not kt.kallsyms_hidden(str(f))


# ---- the C decoder (csrc/x86pt.c) against the Python reference -------------------------------

_entry = st.one_of(
    st.just(0),
    st.integers(0, 2**64 - 1),
    # present / PROT_NONE / PSE combinations over random frames and high bits
    st.builds(lambda low, frame, high: (high << 52) | (frame << 12) | low,
              st.sampled_from([0x1, 0x67, 0x81, 0xE7, 0x100, 0x180, 0x80, 0x2, 0x1E7]),
              st.integers(0, 2**40 - 1), st.integers(0, 2**12 - 1)),
)


@settings(max_examples=300, deadline=None)
@given(level=st.sampled_from(["pte", "pmd", "pud", "p4d", "pgd"]),
       entries=st.lists(_entry, min_size=512, max_size=512),
       limit=st.sampled_from([512, 256]))
def test_c_decoder_matches_the_python_reference(level, entries, limit):
    data = array("Q", entries).tobytes()
    want = kt.decode_table_py(data, level, limit=limit)
    got = kt.decode_table(data, level, limit=limit)
    assert got.children == want.children
    assert list(got.leaf_index) == list(want.leaf_index)
    assert list(got.leaf_pfn) == list(want.leaf_pfn)
    assert (got.nonpresent, got.bad) == (want.nonpresent, want.bad)


def test_the_walk_decodes_in_c():
    """decode_table takes the C path when the core is built (the speed the bench counts on)."""
    assert kt._c_decoder() is not None


def test_elf_load_segments_agree_with_pyelftools(tmp_path: Path) -> None:
    """Kcore's own reader of the PT_LOAD headers against pyelftools (what it replaced), and
    its refusals."""
    from elftools.elf.elffile import ELFFile

    core = tmp_path / "core"
    _elf_core(core, [(0xFFFF888000000000, b"a" * 4096), (0xFFFFFFFF81000000, b"b" * 100),
                     (0xFFFFC90000000000, b"")])
    with open(core, "rb") as fh:
        want = [(s["p_vaddr"], s["p_filesz"], s["p_offset"])
                for s in ELFFile(fh).iter_segments("PT_LOAD")]
        assert kt._elf_load_segments(fh.fileno()) == want
    with kt.Kcore(str(core)) as kc:
        assert kc.read(0xFFFFFFFF81000000 + 98, 2) == b"bb"
    for bad in (b"", b"\x7fELF" + bytes([1, 1]) + bytes(58), core.read_bytes()[:64]):
        (tmp_path / "bad").write_bytes(bad)
        with pytest.raises(kt.KernelTablesUnavailable, match="not a readable ELF core"):
            kt.Kcore(str(tmp_path / "bad"))


# --------------------------------------------------------------------------------------------
# node PageTables cross-check: the counter's per-cpu lag
# --------------------------------------------------------------------------------------------


def _tables_on(node: int, count: int) -> kt.KernelTables:
    frames = [kt.TableFrame("pte", i << 21, (i + 1) << 21, 0x1000 + i, node, True, 0, 0,
                            array("H"), array("Q")) for i in range(count)]
    return kt.KernelTables(
        pid=1, tgid=1, paging_levels=4, la57_source="test", page_offset_base=0, pgd_pfn=0,
        pti=False, tables=frames, changed_under_walk=0, bad_entries=0, walk_seconds=0.0,
        pgtable_marked={"pte": (count, count)},
        node_map=kt.NodeMap([(0, 1 << 20, node)], 1 << 27))


def _zoneinfo(tmp_path: Path, node: int, threshold: int) -> str:
    path = tmp_path / "zoneinfo"
    path.write_text(f"Node {node}, zone   Normal\n  pages free     100\n"
                    f"  pagesets\n    cpu: 0\n  vm stats threshold: {threshold}\n"
                    f"Node {node + 1}, zone   Normal\n  vm stats threshold: 999\n")
    return str(path)


def test_node_pagetables_check_allows_the_unfolded_per_cpu_deltas(tmp_path: Path) -> None:
    # a guest CI run: 78 tables found on node 1, its PageTables said 300 kB (75) right after
    # they were made; each CPU folds its delta only past the node's vmstat threshold
    (tmp_path / "node1").mkdir()
    (tmp_path / "node1" / "meminfo").write_text("Node 1 PageTables:        300 kB\n")
    r = _tables_on(1, 78)
    cpus = os.cpu_count() or 1
    # node 1's own zone line (999) is the one read, not node 0's (3)
    own = r.check_node_pagetables(str(tmp_path), _zoneinfo(tmp_path, 0, 3))
    assert [(c.node, c.found_bytes, c.lag_bytes, c.ok) for c in own] == [
        (1, 78 * 4096, 999 * cpus * 4096, True)]
    # no lag (threshold 0): the old strict check, which fails
    tight = r.check_node_pagetables(str(tmp_path), _zoneinfo(tmp_path, 1, 0))
    assert not tight[0].ok and tight[0].lag_bytes == 0
    lag = -(-3 // cpus)  # the smallest threshold that covers 3 pages on this many CPUs
    ok = r.check_node_pagetables(str(tmp_path), _zoneinfo(tmp_path, 1, lag))
    assert ok[0].ok and ok[0].lag_bytes == lag * cpus * 4096
    # more tables than the counter and its lag together: still a failure
    over = _tables_on(1, 75 + lag * cpus + 1).check_node_pagetables(
        str(tmp_path), _zoneinfo(tmp_path, 1, lag))
    assert not over[0].ok


def test_vmstat_lag_takes_the_normal_threshold_when_kswapd_lowered_the_zones(
        tmp_path: Path) -> None:
    # under memory pressure kswapd lowers the zones' printed thresholds (here to 2) but not
    # the node's, which stays the largest normal one: 2 x fls(CPUs) x (1 + fls(managed >> 15))
    from ptreloc import numa

    path = tmp_path / "zoneinfo"
    path.write_text("Node 0, zone   Normal\n  pages free     100\n        present  5505024\n"
                    "        managed  2457600\n  pagesets\n    cpu: 0\n"
                    "  vm stats threshold: 2\n"
                    "Node 0, zone  Movable\n        managed  0\n")
    cpus = os.cpu_count() or 1
    normal = min(125, 2 * cpus.bit_length() * (1 + (2457600 >> 15).bit_length()))
    assert numa.vmstat_lag_pages(0, path) == max(2, normal) * cpus
    assert numa.vmstat_lag_pages(1, path) == 0  # no zone of node 1


def test_vmstat_lag_is_read_from_the_real_zoneinfo() -> None:
    from ptreloc import numa

    text = Path("/proc/zoneinfo").read_text()
    assert "vm stats threshold" in text
    assert numa.vmstat_lag_pages(0) >= (os.cpu_count() or 1)
    assert numa.vmstat_lag_pages(0, "/nonexistent") == 0
