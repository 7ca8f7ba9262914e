"""Transparent huge pages: blocks Linux maps with one PMD entry are mirrored as huge leaves, found
for real (/proc/PID/smaps, and /proc/kpageflags with pagemap's frame numbers when privileged)."""

from __future__ import annotations

import dataclasses
import json
import os
from array import array

import conftest
import pytest
from conftest import skip_or_fail
from live_workload import live_workload, ptreloc

from ptreloc import proc
from ptreloc.core import geometry
from ptreloc.mirror import host_geometry, mirror, smaps_pmd_mapped, thp_blocks

HUGE = 2 << 20

# without THP these are skipped - under CI=true failed instead (tests/conftest.py), as is every
# skip_or_fail() below: THP is on where CI runs, so a skip there would hide a broken THP path
needs_thp = pytest.mark.thp


def _region_pmd_bytes(pid: int, address: int) -> int:
    """What smaps says is PMD-mapped in the VMA holding the workload's region."""
    for vma in proc.read_maps(pid):
        if vma.start <= address < vma.end:
            return smaps_pmd_mapped(pid).get(vma.start, 0)
    return 0


@needs_thp
def test_a_thp_backed_region_is_mirrored_as_huge_leaves() -> None:
    with live_workload(mib=16, threads=2, extra=["--huge"]) as w:
        snap = proc.snapshot(w.pid)
        pmd = _region_pmd_bytes(w.pid, w.address)
        if not pmd:
            skip_or_fail("the kernel gave this region no huge pages (fragmented memory?)")
        m = mirror(snap)
        flat = mirror(snap, detect_thp=False)
        try:
            huge = [b for b in m.thp.starts if w.address <= b < w.address + w.pages * 4096]
            assert len(huge) == pmd // HUGE  # exactly what the kernel maps with PMD entries
            assert all(b % HUGE == 0 for b in huge)
            assert m.thp.detected_by == ("kpageflags" if snap.frames_visible else "smaps")
            # each huge leaf spares the PTE table the flat mirror invents for it
            pte, flat_pte = m.tables()[0]["pte"], flat.tables()[0]["pte"]
            assert flat_pte - pte == len(m.thp.starts)
            assert m.check_translations() == 0
            t = m.mm.translate(huge[0] + 5 * 4096)
            assert t is not None and t.level_name == "pmd" and t.page_size == HUGE
            assert m.walk_levels(huge[0])[0][0] == 1  # the walk ends at the PMD level
        finally:
            m.close()
            flat.close()


@needs_thp
def test_only_frames_of_one_compound_thp_count_when_privileged() -> None:
    with live_workload(mib=8, threads=1, extra=["--huge"]) as w:
        snap = proc.snapshot(w.pid)
        if not snap.frames_visible or not os.access("/proc/kpageflags", os.R_OK):
            skip_or_fail("needs frame numbers and /proc/kpageflags (root)")
        g = geometry(host_geometry(snap))
        real = thp_blocks(snap, g)
        if not real.starts:
            skip_or_fail("the kernel gave this region no huge pages")
        assert real.detected_by == "kpageflags"
        # the same blocks with a tail frame for a head (as 4 KiB pages that happen to be
        # contiguous could have): smaps alone would still count the blocks, the compound-page
        # check refuses them
        tails = array("Q", (pfn + 1 for pfn in snap.huge_pfn))
        assert thp_blocks(dataclasses.replace(snap, huge_pfn=tails), g).starts == ()
        hidden = dataclasses.replace(snap, frames_visible=False,
                                     huge_pfn=array("Q", bytes(8 * len(snap.huge_pfn))))
        assert thp_blocks(hidden, g).detected_by == "smaps"


def test_fully_resident_4k_blocks_are_not_huge() -> None:
    # the workload's default is MADV_NOHUGEPAGE: aligned, fully resident blocks, no THP
    with live_workload(mib=8, threads=1) as w:
        snap = proc.snapshot(w.pid)
        m = mirror(snap)
        try:
            inside = [b for b in m.thp.starts if w.address <= b < w.address + w.pages * 4096]
            assert inside == []
            blocks = {(w.address + i * 4096) // HUGE for i in range(w.pages)}
            assert m.tables()[0]["pte"] >= len(blocks)
        finally:
            m.close()


@needs_thp
def test_show_and_migrate_report_huge_leaves_and_verify() -> None:
    with live_workload(mib=8, threads=2, extra=["--huge"]) as w:
        if not _region_pmd_bytes(w.pid, w.address):
            skip_or_fail("the kernel gave this region no huge pages")
        shown = json.loads(ptreloc("show", "--pid", str(w.pid), "--json", check=0).stdout)
        args = ("--from-node", "0", "--to-node", "0", "--in-place", "--json")
        moved = json.loads(ptreloc("migrate", "--pid", str(w.pid), *args, check=0).stdout)
        human = ptreloc("show", "--pid", str(w.pid), check=0).stdout
    assert shown["thp"]["huge_leaves"] >= 4
    assert moved["thp"]["huge_leaves"] >= 4
    assert moved["verified"] is True, moved["checks"]
    assert "huge leaves" in human


def test_without_thp_a_thp_test_skips_but_fails_under_ci(monkeypatch, tmp_path, request) -> None:
    """The guard itself: THP "never" skips a ``thp`` test with the reason, and under CI=true
    fails it instead (CI would otherwise pass without ever running the THP paths)."""
    off = tmp_path / "enabled"
    off.write_text("always madvise [never]\n")
    monkeypatch.setattr(conftest, "THP_ENABLED", off)
    assert conftest.thp_mode() == "never"
    request.node.add_marker(pytest.mark.thp)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"huge pages are off.*CI is set"):
        conftest.pytest_runtest_setup(request.node)
    monkeypatch.setenv("CI", "0")
    with pytest.raises(pytest.skip.Exception, match="transparent huge pages are off here"):
        conftest.pytest_runtest_setup(request.node)
    monkeypatch.undo()
    # and here, as in CI and the guest, THP is on: the THP tests above really ran
    assert conftest.thp_mode() in ("always", "madvise")
