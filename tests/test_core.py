"""The emulated page-table core, case by case: A/D semantics, stale paging-structure caches,
exhaustion, big address spaces, sharing, demand faults, threads, both builds, bad input."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from ptreloc import core
from ptreloc.core import AddressSpace, Arena, Cpu, geometries, geometry, run_cpus
from ptreloc.errors import (
    AddressError,
    AlreadyMapped,
    InvalidNode,
    NotMapped,
    PoolExhausted,
    ProtectionFault,
    RelocationUnsupported,
    UnknownGeometry,
    UsageError,
)

GEOMETRIES = sorted(geometries())
VA = 0x40_0000 * 16  # 64 MiB: inside every format's range, 4 MiB/512 MiB aligned below


@pytest.fixture(params=GEOMETRIES)
def setup(request):
    arena = Arena(request.param, nodes=2, frames_per_node=2048)
    mm = AddressSpace(arena, node=0)
    cpu = Cpu(arena)
    cpu.switch_to(mm)
    yield arena, mm, cpu
    cpu.close()
    mm.close()
    assert arena.frames_in_use == 0, "tables leaked"
    arena.close()


# ---- geometry ------------------------------------------------------------------------------


def test_geometry_tables_are_real_formats():
    g = geometries()
    assert set(g) == {"x86_64_4l", "x86_64_5l", "x86_pae", "x86_32", "arm64_4k_39", "arm64_64k_48"}
    assert [lv.name for lv in g["x86_64_5l"].levels] == ["pte", "pmd", "pud", "p4d", "pgd"]
    assert g["x86_pae"].levels[-1].table_bytes == 32 and g["x86_pae"].levels[-1].entries == 4
    assert g["x86_32"].levels[0].entry_size == 4 and g["x86_32"].levels[1].leaf_ok
    assert g["x86_32"].levels[1].entry_span == 4 << 20  # PSE 4 MiB leaves
    a64 = g["arm64_64k_48"]
    assert [lv.bits for lv in a64.levels] == [13, 13, 6]
    assert a64.levels[0].table_bytes == 64 << 10 and a64.levels[-1].table_bytes == 512
    assert a64.frame_bytes == 64 << 10 and a64.page_size == 64 << 10
    assert [lv.name for lv in g["arm64_4k_39"].levels] == ["L3", "L2", "L1"]


def test_entry_bits_are_the_hardware_layout():
    arena = Arena("x86_64_4l")
    mm = AddressSpace(arena)
    mm.map(VA, 4096, phys=0x1234_5000)
    e = mm.translate(VA).entry
    assert e & 1 and e & 2 and e & 4 and not e & (1 << 5) and not e & (1 << 6)
    assert e & 0x000F_FFFF_FFFF_F000 == 0x1234_5000
    mm.close()
    arena.close()
    arena = Arena("arm64_4k_39")
    mm = AddressSpace(arena)
    mm.map(VA, 4096, phys=0x1234_5000)
    e = mm.translate(VA).entry
    # valid, page descriptor, AP[2] read-only + DBM = writable-clean, AF clear
    assert e & 3 == 3 and e & (1 << 7) and e & (1 << 51) and not e & (1 << 10)
    cpu = Cpu(arena)
    cpu.switch_to(mm)
    cpu.access(VA, write=True)
    e = mm.translate(VA).entry
    assert not e & (1 << 7) and e & (1 << 10)  # the write cleared AP[2] (dirty), set AF
    cpu.close()
    mm.close()
    arena.close()


def test_address_checks_per_format():
    arena = Arena("x86_64_4l")
    mm = AddressSpace(arena)
    with pytest.raises(AddressError, match="canonical"):
        mm.map(1 << 50, 4096)
    mm.map(0xFFFF_8000_0000_0000, 4096, phys=0x1000)  # canonical upper half is fine
    assert mm.translate(0xFFFF_8000_0000_0000).phys == 0x1000
    with pytest.raises(AddressError, match="aligned"):
        mm.map(0x1001, 4096)
    with pytest.raises(AddressError):
        mm.map(0x1000, 4096, phys=1 << 53)
    mm.close()
    arena.close()
    arena = Arena("arm64_4k_39")
    mm = AddressSpace(arena)
    with pytest.raises(AddressError, match="range"):
        mm.map(1 << 39, 4096)
    mm.close()
    arena.close()


# ---- A/D semantics ---------------------------------------------------------------------------


def test_read_sets_accessed_only(setup):
    arena, mm, cpu = setup
    page = arena.geometry.page_size
    mm.map(VA, page)
    assert cpu.access(VA + 8).phys == VA + 8
    t = mm.translate(VA)
    assert t.young and not t.dirty


def test_write_sets_accessed_and_dirty(setup):
    arena, mm, cpu = setup
    mm.map(VA, arena.geometry.page_size)
    assert cpu.access(VA, write=True).ok
    t = mm.translate(VA)
    assert t.young and t.dirty


def test_write_through_clean_tlb_entry_walks_and_sets_dirty(setup):
    arena, mm, cpu = setup
    mm.map(VA, arena.geometry.page_size)
    cpu.access(VA)  # TLB now holds a clean entry
    walks = cpu.stats["walks"]
    cpu.access(VA, write=True)
    assert cpu.stats["walks"] == walks + 1
    assert mm.translate(VA).dirty
    cpu.access(VA, write=True)  # now dirty-known: a TLB hit, no walk
    assert cpu.stats["walks"] == walks + 1


def test_test_and_clear_semantics(setup):
    arena, mm, cpu = setup
    mm.map(VA, arena.geometry.page_size)
    assert not mm.test_and_clear_young(VA)
    assert not mm.test_and_clear_dirty(VA)
    cpu.access(VA, write=True)
    assert mm.test_and_clear_young(VA) and not mm.test_and_clear_young(VA)
    assert mm.translate(VA).dirty  # clearing A leaves D alone
    assert mm.test_and_clear_dirty(VA) and not mm.test_and_clear_dirty(VA)
    # the dirty clear shot the TLB down: the next write walks and sets D again
    cpu.access(VA, write=True)
    assert mm.translate(VA).dirty
    with pytest.raises(NotMapped):
        mm.test_and_clear_young(VA + (1 << 30))


def test_read_only_mapping_faults_on_write(setup):
    arena, mm, cpu = setup
    mm.map(VA, arena.geometry.page_size, writable=False)
    assert cpu.access(VA, write=True, handle_faults=False).fault == "protection"
    assert not mm.translate(VA).dirty
    assert cpu.access(VA).ok


def test_protect_downgrade_shoots_down_and_keeps_dirty(setup):
    arena, mm, cpu = setup
    mm.map(VA, arena.geometry.page_size)
    cpu.access(VA, write=True)
    assert mm.protect(VA, arena.geometry.page_size, writable=False) == 1
    assert cpu.access(VA, write=True, handle_faults=False).fault == "protection"
    t = mm.translate(VA)
    assert t.dirty and not t.writable
    mm.protect(VA, arena.geometry.page_size, writable=True)
    assert cpu.access(VA, write=True).ok  # stale read-only TLB entry: spurious fault, retried


def test_huge_leaves(setup):
    arena, mm, cpu = setup
    g = arena.geometry
    hl = g.huge_levels[0]
    size = g.levels[hl].entry_span
    start = size * 2
    assert start + size <= 1 << g.va_bits  # every built-in format has room for two huge leaves
    mm.map(start, size, huge=True)
    t = mm.translate(start + size - 1)
    assert t.level == hl and t.page_size == size and t.phys == start + size - 1
    assert cpu.access(start + 12345, write=True).ok
    assert mm.translate(start).dirty
    with pytest.raises(AddressError, match="huge page"):
        mm.unmap(start, g.page_size)
    assert mm.unmap(start, size) == (1, 1)


# ---- stale paging-structure caches -------------------------------------------------------------


def _entry_dirty(geo, e: int) -> bool:
    """Dirty by the real bit layout: x86 D(6); arm64 DBM(51) with AP[2](7) clear, or SW(55)."""
    if geo.arch == "x86":
        return bool(e & (1 << 6))
    return bool(e & (1 << 55)) or (bool(e & (1 << 51)) and not e & (1 << 7))



def test_stale_pwc_sets_dirty_in_the_old_copy(setup):
    """After a table is copied and its parent repointed, a CPU whose paging-structure cache
    still points at the old copy sets A/D there - the window relocation must close."""
    arena, mm, cpu = setup
    page = arena.geometry.page_size
    mm.map(VA, 2 * page)
    cpu.access(VA)  # caches the PTE table's address and a clean TLB entry
    old, new = mm.repoint_table(VA, 0, node=1)
    assert old != new and arena.frame(new)["node"] == 1 and arena.frame(old)["state"] == "limbo"
    assert mm.translate(VA).table_frame == new
    cpu.access(VA, write=True)  # walks from the stale cached pointer
    idx = (VA >> arena.geometry.levels[0].shift) & ((1 << arena.geometry.levels[0].bits) - 1)
    old_entry = arena.table_entry(old, 0, idx)
    assert mm.translate(VA).dirty is False, "new copy must not have seen the write"
    assert _entry_dirty(arena.geometry, old_entry), "the stale walk set D in the old copy"
    # after a shootdown the CPU walks the new copy
    mm.shootdown()
    cpu.access(VA + page, write=True)
    assert mm.translate(VA + page).dirty
    arena.free_frame_unsafely(old)


def test_walk_through_freed_frame_is_counted_not_fatal(setup):
    arena, mm, cpu = setup
    mm.map(VA, arena.geometry.page_size)
    cpu.access(VA)
    old, _ = mm.repoint_table(VA, 0, node=1)
    arena.free_frame_unsafely(old)  # the protocol bug: free without a flush and grace period
    cpu.access(VA + 0, write=False)  # TLB hit: no walk, nothing read
    r = cpu.access(VA, write=True)  # walk from the stale PWC pointer into a freed frame
    assert r.fault == "freed_frame"
    assert arena.freed_frame_accesses == 1 and cpu.stats["freed_reads"] == 1
    mm.shootdown()
    assert cpu.access(VA, write=True).ok


def test_root_reload_needed_after_root_change(setup):
    arena, mm, cpu = setup
    page = arena.geometry.page_size
    mm.map(VA, page)
    top = arena.geometry.nlevels - 1
    # PAE: the walk never reads the top table, it uses the PDPTE registers loaded with CR3;
    # what needs the reload there is a changed PDPTE, i.e. a moved PMD table.
    level = top - 1 if arena.geometry.top_preloaded else top
    old, new = mm.repoint_table(VA, level, node=1)
    assert level != top or mm.root_frame == new
    mm.shootdown()  # a flush alone keeps the cached root (CR3) and PDPTEs: stale walk
    arena.free_frame_unsafely(old)
    assert cpu.access(VA, write=True).fault == "freed_frame"
    old2, new2 = mm.repoint_table(VA, level, node=0)
    reloads = cpu.stats["reloads"]
    mm.shootdown(reload_root=True)  # flush + root reload: the walk starts at the new root
    assert cpu.stats["reloads"] == reloads + 1
    arena.free_frame_unsafely(old2)
    assert cpu.access(VA, write=True).ok
    assert mm.translate(VA).dirty and arena.freed_frame_accesses == 1


# ---- pools ------------------------------------------------------------------------------------


def test_pool_exhaustion_is_clean_and_leaks_nothing(setup):
    arena, mm, cpu = setup
    g = arena.geometry
    page = g.page_size
    mm.map(VA, page)
    before = arena.tables()
    span0 = g.levels[0].entry_span * g.levels[0].entries  # one PTE table's reach
    arena.set_capacity(0, arena.frames_in_use)  # nothing more fits on node 0
    with pytest.raises(PoolExhausted, match="capacity"):
        mm.map(VA + span0, page)
    assert arena.tables() == before
    assert mm.translate(VA + span0) is None
    arena.set_capacity(0, 2048)
    arena.fail_nth_allocation(1)
    with pytest.raises(PoolExhausted, match="injected"):
        mm.map(VA + span0, page)
    mm.map(VA + span0, page)  # the knob disarmed itself
    assert mm.translate(VA + span0).phys == VA + span0


def test_tables_on_another_node(setup):
    arena, mm, cpu = setup
    g = arena.geometry
    mm.map(VA, g.page_size, table_node=1)
    t = mm.translate(VA)
    assert t.table_node == 1
    assert arena.tables()[1][g.levels[0].name] == 1
    assert mm.tables()[1][g.levels[0].name] == 1


def test_virtual_nodes_are_reported():
    # the kernel's own answer, read here rather than through ptreloc.numa: a node is real
    # (its pool mbind-bound to it) exactly when it is online with memory
    sysfs = Path("/sys/devices/system/node")

    def node_list(name: str) -> set[int]:  # "0-1,3" -> {0, 1, 3}
        out: set[int] = set()
        for part in filter(None, (sysfs / name).read_text().strip().split(",")):
            lo, _, hi = part.partition("-")
            out.update(range(int(lo), int(hi or lo) + 1))
        return out

    with_memory = node_list("has_memory") & node_list("online")
    arena = Arena("x86_64_4l", nodes=3)
    try:
        assert [n.node for n in arena.nodes] == [0, 1, 2]
        real = {n.node for n in arena.nodes if n.real}
        assert real == with_memory & {0, 1, 2}
        for n in arena.nodes:  # a real pool is bound to its own node; a virtual one to none
            assert n.bind_node == (n.node if n.real else None)
        assert arena.virtual_nodes == tuple(sorted({0, 1, 2} - real))
    finally:
        arena.close()


def test_64_gib_of_4k_pages():
    """64 GiB at 4 KiB pages: 16 M leaves in 32,768 PTE tables, built and walked from C."""
    arena = Arena("x86_64_4l", frames_per_node=40000)
    mm = AddressSpace(arena)
    size = 64 << 30
    mm.map(1 << 39, size)
    counts = mm.table_counts()
    assert counts == {"pte": 32768, "pmd": 64, "pud": 1, "pgd": 1}
    assert arena.tables()[0] == counts
    assert mm.translate((1 << 39) + size - 1).phys == (1 << 39) + size - 1
    stats = run_cpus(mm, 2, 20000, 1 << 39, size, write_pct=50, seed=7)
    assert stats["accesses"] == 40000 and stats["walks"] > 0 and stats["fault_path_runs"] == 0
    assert mm.unmap(1 << 39, size)[0] == size >> 12
    mm.close()
    assert arena.frames_in_use == 0
    arena.close()


# ---- sharing and demand faults --------------------------------------------------------------


@pytest.mark.parametrize("level", [0, 1])
def test_shared_tables(level):
    arena = Arena("x86_64_4l")
    a, b = AddressSpace(arena), AddressSpace(arena)
    a.map(VA, 4096)
    b.share_table_from(a, VA, level)
    shared = a.translate(VA).table_frame if level == 0 else None
    assert b.translate(VA).phys == VA
    if shared is not None:
        assert arena.frame(shared)["sharers"] == 2
    cpu = Cpu(arena)
    cpu.switch_to(b)
    cpu.access(VA, write=True)
    assert a.translate(VA).dirty  # one table, two address spaces
    with pytest.raises(AlreadyMapped):
        b.share_table_from(a, VA, level)
    cpu.close()
    a.close()
    assert b.translate(VA).phys == VA  # survives its first sharer
    b.close()
    assert arena.frames_in_use == 0
    arena.close()


def test_demand_faults(setup):
    arena, mm, cpu = setup
    page = arena.geometry.page_size
    mm.add_region(VA, 16 * page, phys=0x10_0000_0000 if arena.geometry.phys_limit > 1 << 40 else 0)
    assert mm.translate(VA + 3 * page) is None
    assert cpu.access(VA + 3 * page, handle_faults=False).fault == "not_present"
    r = cpu.access(VA + 3 * page + 5, write=True)
    assert r.ok and mm.translate(VA + 3 * page).dirty
    assert cpu.stats["fault_path_runs"] == 1
    mm.fault(VA + 4 * page)
    assert mm.translate(VA + 4 * page) is not None
    with pytest.raises(NotMapped, match="region"):
        mm.fault(VA + 64 * page)
    with pytest.raises(NotMapped):
        cpu.access(VA + 64 * page)
    mm.add_region(VA + 64 * page, page, writable=False)
    with pytest.raises(ProtectionFault):
        cpu.access(VA + 64 * page, write=True)


# ---- threads ------------------------------------------------------------------------------------


@pytest.mark.tsan
@pytest.mark.parametrize("name", GEOMETRIES)
def test_many_cpu_threads_fault_the_same_tables(name):
    """C threads race through the fault path on a demand region; every table is built once."""
    arena = Arena(name, frames_per_node=4096)
    g = arena.geometry
    mm = AddressSpace(arena)
    length = 256 * g.page_size
    mm.add_region(VA, length)
    stats = run_cpus(mm, 4, 3000, VA, length, write_pct=40, seed=3)
    assert stats["accesses"] >= 12000 and stats["freed_reads"] == 0
    mapped = [mm.translate(VA + i * g.page_size) for i in range(256)]
    # 12000 seeded accesses over 256 pages touch every page (a page missed: p ~ e^-47), so a
    # page left unmapped is a lost fault, not chance
    assert [t.phys if t else None for t in mapped] == [VA + i * g.page_size for i in range(256)]
    ref = AddressSpace(arena)
    ref.add_region(VA, length)
    for i in range(256):
        ref.fault(VA + i * g.page_size)
    assert mm.table_counts() == ref.table_counts()  # no duplicate tables from the races
    ref.close()
    mm.close()
    assert arena.frames_in_use == 0
    arena.close()


@pytest.mark.tsan
def test_python_threads_drive_cpus_while_main_thread_shoots_down():
    arena = Arena("x86_64_4l")
    mm = AddressSpace(arena)
    mm.map(VA, 64 * 4096)
    errors: list[BaseException] = []
    stop = threading.Event()

    def worker(seed: int) -> None:
        cpu = Cpu(arena)
        cpu.switch_to(mm)
        try:
            i = seed
            while not stop.is_set():
                i = (i * 1103515245 + 12345) % (1 << 31)
                assert cpu.access(VA + (i % 64) * 4096, write=bool(i & 1)).ok
        except BaseException as err:  # surfaced below
            errors.append(err)
        finally:
            cpu.switch_to(None)
            cpu.close()

    threads = [threading.Thread(target=worker, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    dirty_seen = 0
    for _ in range(300):
        for p in range(64):
            dirty_seen += mm.test_and_clear_dirty(VA + p * 4096)
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert dirty_seen > 0
    mm.close()
    arena.close()


# ---- builds and bad input ----------------------------------------------------------------------


def test_both_builds_import_and_norelo_reports_it():
    relo = Arena("x86_64_4l")
    norelo = Arena("x86_64_4l", build="norelo")
    assert relo.relocation_supported and not norelo.relocation_supported
    relo.require_relocation()
    with pytest.raises(RelocationUnsupported, match="norelo"):
        norelo.require_relocation()
    mm = AddressSpace(norelo)
    mm.map(VA, 4096)
    cpu = Cpu(norelo)
    cpu.switch_to(mm)
    assert cpu.access(VA, write=True).ok and mm.translate(VA).dirty
    cpu.close()
    mm.close()
    relo.close()
    norelo.close()


def test_bad_input_raises_specific_errors():
    with pytest.raises(UnknownGeometry, match="x86_64_4l"):
        Arena("sparc")
    with pytest.raises(UsageError, match="build"):
        Arena("x86_64_4l", build="fast")
    with pytest.raises(InvalidNode):
        Arena("x86_64_4l", nodes=0)
    arena = Arena("x86_64_4l", nodes=2)
    with pytest.raises(InvalidNode, match="no pool"):
        AddressSpace(arena, node=2)
    mm = AddressSpace(arena)
    with pytest.raises(InvalidNode, match="no pool"):
        mm.map(VA, 4096, table_node=5)
    mm.map(VA, 4096)
    with pytest.raises(AlreadyMapped, match="already mapped"):
        mm.map(VA, 8192)
    with pytest.raises(AddressError):
        mm.map(-4096, 4096)
    with pytest.raises(UsageError, match="level"):
        mm.map(VA, 4096, huge="pgd")
    assert mm.translate(VA + 4096) is None  # the refused map changed nothing
    mm.close()
    arena.close()


def test_geometry_lookup():
    assert geometry("x86_pae").top_preloaded
    assert core.DEFAULT_FRAMES_PER_NODE > 32768


def _atomic_rmws(so_path: str, funcs: tuple[str, ...]) -> int:
    """Atomic read-modify-write instructions (x86 ``lock`` prefix, ``xchg``) in the functions
    whose names start with one of ``funcs`` (so compiler clones like ``.isra.0`` count)."""
    import re
    import subprocess

    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", so_path], check=True,
                         capture_output=True, text=True).stdout
    total = found = 0
    for block in out.split("\n\n"):
        m = re.search(r"^[0-9a-f]+ <([^>]+)>:$", block, re.M)
        if m and m.group(1).split(".")[0] in funcs:
            found += 1
            # xchg is an atomic RMW only with a memory operand: `xchg %ax,%ax` is the 2-byte
            # NOP the assembler pads alignment with, and moves whenever code elsewhere changes
            total += sum(1 for ln in block.splitlines()
                         if "lock " in ln or ("\txchg" in ln and "(" in ln))
    assert found >= 2, f"{funcs} not found in {so_path}"
    return total


def test_relocation_support_adds_no_atomics_to_the_access_path():
    """The bench goal (relocation support <= 1% on the hot path) needs the relocation build's
    access to cost what the norelo one does, plus plain stores: its read-side section is the
    busy lock both builds take, not an extra pair of locked increments per access."""
    import importlib
    import platform
    import shutil

    if platform.machine() != "x86_64" or not shutil.which("objdump"):
        pytest.skip("needs objdump on x86-64")
    hot = ("ptr_cpu_access", "ptr_cpu_access_fault", "access_inner", "hw_update_leaf",
           "service_locked", "enter_access", "leave_access")
    relo = importlib.import_module("ptreloc._core").__file__
    norelo = importlib.import_module("ptreloc._core_norelo").__file__
    assert _atomic_rmws(relo, hot) == _atomic_rmws(norelo, hot)


def test_shootdown_reaches_cpus_in_every_slot():
    """The shootdown visits the CPUs that exist (the arena's CPU mask), not all 64 slots: CPUs
    left in high slots after the lower ones were destroyed, and one reusing a freed slot, are
    each shot down - a CPU it missed would keep walking the old copy, which is freed here."""
    arena = Arena("x86_64_4l", nodes=2, frames_per_node=256)
    mm = AddressSpace(arena, node=0)
    page = arena.geometry.page_size
    mm.map(VA, page)
    every = [Cpu(arena) for _ in range(64)]
    with pytest.raises(UsageError, match="at most 64 CPUs"):
        Cpu(arena)
    kept = {5, 40, 63}
    for slot, c in enumerate(every):
        if slot not in kept:
            c.close()
    cpus = [every[s] for s in sorted(kept)] + [Cpu(arena)]  # the new one takes slot 0
    try:
        for c in cpus:
            c.switch_to(mm)
            assert c.access(VA).ok  # caches the path to the PTE table
        old, _ = mm.repoint_table(VA, 0, node=1)
        before = [c.stats["shootdowns"] for c in cpus]
        mm.shootdown()
        assert [c.stats["shootdowns"] for c in cpus] == [n + 1 for n in before]
        arena.free_frame_unsafely(old)  # safe only if every CPU dropped its cached path
        for c in cpus:
            assert c.access(VA, write=True).ok
        assert arena.freed_frame_accesses == 0
    finally:
        for c in cpus:
            c.close()
        mm.close()
    arena.close()


@pytest.mark.tsan
def test_flush_races_a_remote_shootdown_safely():
    """A shooter services an idle CPU remotely (it flushes the TLB for it) while the CPU's own
    thread flushes: both must hold the CPU's busy lock.  (Fails under ThreadSanitizer, `make
    test-sanitize`, when ptr_cpu_flush() does not take it.)"""
    arena = Arena("x86_64_4l")
    mm = AddressSpace(arena)
    mm.map(VA, 4096)
    cpu = Cpu(arena)
    cpu.switch_to(mm)
    stop = threading.Event()

    def shooter() -> None:
        while not stop.is_set():
            mm.shootdown()

    t = threading.Thread(target=shooter)
    t.start()
    try:
        for _ in range(3000):
            cpu.flush()
            assert cpu.access(VA, write=True).ok
    finally:
        stop.set()
        t.join()
    assert cpu.stats["shootdowns"] > 0
    cpu.close()
    mm.close()
    arena.close()


def _resident(address: int) -> bool:
    """Is our own page at ``address`` present (its /proc/self/pagemap entry)?"""
    import os

    fd = os.open("/proc/self/pagemap", os.O_RDONLY)
    try:
        entry = int.from_bytes(os.pread(fd, 8, address // 4096 * 8), "little")
    finally:
        os.close(fd)
    return bool(entry >> 63)


def test_prefault_makes_the_pools_next_frames_resident_and_only_those():
    """What the mirror's build asks before it creates its tables: the next frames of a pool
    are present after one call, the ones after them still are not (a build that did not
    prefault would fault each in at its first store); a pool that is not there is refused."""
    arena = Arena("x86_64_4l", 2, frames_per_node=64, bind=False)
    try:
        first = 64  # pool n holds frames n * frames_per_node ..
        assert not any(_resident(arena.frame_address(first + k)) for k in range(64))
        if not arena.prefault(1, 8):
            pytest.fail("madvise(MADV_POPULATE_WRITE) failed: this kernel is older than 5.14?",
                        pytrace=False)
        assert all(_resident(arena.frame_address(first + k)) for k in range(8))
        assert not any(_resident(arena.frame_address(first + k)) for k in range(8, 64))
        assert arena.prefault(0, 1000)  # more than the pool has: all of it
        assert all(_resident(arena.frame_address(k)) for k in range(64))
        with pytest.raises(InvalidNode):
            arena.prefault(2, 1)
    finally:
        arena.close()
