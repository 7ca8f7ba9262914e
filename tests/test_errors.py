"""The exception contract: honest bases, fields callers check by value, documented exit codes;
and the single checks (pid, batch) every layer shares."""

from __future__ import annotations

import os
import pathlib

import pytest

from ptreloc import _native, migrate, numa, proc, relocate, stress
from ptreloc.cli._common import guarded
from ptreloc.core import AddressSpace, Arena, Cpu
from ptreloc.errors import (
    EXIT_OPERATIONAL,
    EXIT_USAGE,
    CoreError,
    EmulatedFault,
    InvalidNode,
    NoSuchProcess,
    NotMapped,
    PoolExhausted,
    ProtectionFault,
    PtrelocError,
    SyscallError,
    UsageError,
)

VA = 0x4000_0000
PAGE = 4096


def test_pool_exhausted_and_protection_fault_do_not_pose_as_builtins() -> None:
    # a full emulated pool is not the interpreter out of memory; a write to an emulated
    # read-only mapping is not an OS permission refusal
    assert not issubclass(PoolExhausted, MemoryError)
    assert not issubclass(ProtectionFault, PermissionError | OSError)
    assert issubclass(ProtectionFault, EmulatedFault) and issubclass(NotMapped, EmulatedFault)
    assert issubclass(NotMapped, LookupError)  # a lookup that found nothing: honest
    for cls in (PoolExhausted, ProtectionFault, NotMapped, CoreError):
        assert issubclass(cls, PtrelocError) and cls.exit_code == EXIT_OPERATIONAL


@pytest.mark.parametrize("cls", [PoolExhausted, ProtectionFault])
def test_the_cli_maps_them_to_exit_1_with_one_line(
    cls: type[PtrelocError], capsys: pytest.CaptureFixture[str]
) -> None:
    @guarded
    def command() -> None:
        raise cls("it failed\nover two lines")

    with pytest.raises(SystemExit) as info:
        command()
    assert info.value.code == EXIT_OPERATIONAL
    err = capsys.readouterr().err
    assert err == "ptreloc: error: it failed over two lines\n"


def test_fields_are_attributes_and_a_typo_is_refused() -> None:
    err = NoSuchProcess("gone", pid=42)
    assert (err.pid, err.node, err.path) == (42, None, None)
    assert InvalidNode("bad", node=3).node == 3
    s = SyscallError("no", 13, call="mbind")
    assert (s.errno, s.call, s.pid) == (13, "mbind", None)
    with pytest.raises(TypeError, match="no field 'nod'"):
        InvalidNode("bad", nod=3)


def test_emulated_faults_carry_the_address() -> None:
    arena = Arena("x86_64_4l", nodes=1)
    mm = AddressSpace(arena, node=0)
    cpu = Cpu(arena)
    try:
        mm.add_region(VA, PAGE, writable=False)
        cpu.switch_to(mm)
        with pytest.raises(ProtectionFault) as info:
            cpu.access(VA, write=True)
        assert info.value.address == VA
        with pytest.raises(NotMapped) as missing:
            cpu.access(VA + 64 * PAGE)
        assert missing.value.address == VA + 64 * PAGE
        cpu.switch_to(None)
    finally:
        cpu.close()
        mm.close()
        arena.close()


def test_a_bad_node_carries_the_node() -> None:
    with pytest.raises(InvalidNode) as info:
        numa.parse_nodes("999", numa.topology())
    assert info.value.node == 999


# ---- one pid check -------------------------------------------------------------------------


def test_pid_0_is_not_a_process_except_for_the_numa_syscalls() -> None:
    with pytest.raises(UsageError, match="pid 0 is not a process id") as info:
        numa.check_pid(0)
    assert info.value.pid == 0 and info.value.exit_code == EXIT_USAGE
    assert proc.check_pid is numa.check_pid  # one function, one answer
    for call in (proc.snapshot, numa.process_mems_allowed, numa.numa_maps_node_pages):
        with pytest.raises(UsageError, match="pid 0 is not a process id"):
            call(0)
    with pytest.raises(UsageError, match="pid 0 is not a process id"):
        migrate.validate(0, "0", "0", in_place=True)
    # the kernel defines pid 0 as the caller for migrate_pages/move_pages
    assert numa.check_pid(0, allow_self=True) == 0
    assert numa.migrate_pages(0, "0", "0") == 0
    assert numa.check_pid(os.getpid()) == os.getpid()


@pytest.mark.parametrize("pid", [-1, True, "1", 1.0])
def test_a_pid_that_is_not_a_positive_number_is_a_usage_error(pid: object) -> None:
    with pytest.raises(UsageError):
        numa.check_pid(pid)


def test_a_pid_beyond_pid_max_is_no_such_process_with_the_pid() -> None:
    with pytest.raises(NoSuchProcess) as info:
        proc.snapshot(2**22 + 1)
    assert info.value.pid == 2**22 + 1


# ---- one batch check -----------------------------------------------------------------------


@pytest.mark.parametrize("batch", [0, -1, True, relocate.MAX_BATCH + 1, 2**31, 1.5])
def test_one_batch_cap_for_every_caller(batch: object) -> None:
    assert relocate.MAX_BATCH == _native.MAX_BATCH
    with pytest.raises(UsageError, match=f"batch must be 1..{relocate.MAX_BATCH}"):
        relocate.check_batch(batch)
    arena = Arena("x86_64_4l", nodes=2)
    mm = AddressSpace(arena, node=0)
    try:
        with pytest.raises(UsageError, match="batch must be"):
            relocate.relocate(mm, 0, 1, batch=batch)  # type: ignore[arg-type]
    finally:
        mm.close()
        arena.close()
    with pytest.raises(UsageError, match="batch must be"):
        migrate.migrate(os.getpid(), "0", "0", in_place=True, batch=batch)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="batch must be"):
        stress.run_stress(0.1, batch=batch)  # type: ignore[arg-type]


def test_the_largest_batch_is_accepted_everywhere() -> None:
    arena = Arena("x86_64_4l", nodes=2)
    mm = AddressSpace(arena, node=0)
    try:
        mm.map(VA, 16 * PAGE)
        report = relocate.relocate(mm, 0, 1, batch=relocate.MAX_BATCH)
        assert report.complete and report.batch == relocate.MAX_BATCH and report.batches == 1
    finally:
        mm.close()
        arena.close()


def test_the_report_is_the_one_the_core_built() -> None:
    # relocate(), migrate's adapter and the bindings hand out one type, built once
    assert relocate.RelocationReport is _native.RelocationReport
    arena = Arena("x86_64_4l", nodes=2)
    mm = AddressSpace(arena, node=0)
    try:
        mm.map(VA, 16 * PAGE)
        report = relocate.relocate(mm, 0, 1)
        assert report.relocated == sum(report.relocated_by_level().values())
        assert report.left_by_level() == dict.fromkeys(report.levels, 0)
        assert list(report.timings_s)[-1] == "total"
    finally:
        mm.close()
        arena.close()


def test_migrate_names_the_node_it_refuses() -> None:
    missing = max(numa.topology().possible) + 1
    with pytest.raises(InvalidNode) as info:
        migrate.validate(os.getpid(), "0", str(missing))
    assert info.value.node == missing and info.value.exit_code == EXIT_USAGE


def test_a_failed_kernel_call_carries_errno_and_call() -> None:
    # a node that does not exist is refused before the call, naming it; the backend's own
    # failure names the call and the kernel's errno
    missing = max(numa.topology().possible) + 1
    with pytest.raises(InvalidNode) as info:
        numa.move_pages(0, [numa.buffer_address(bytearray(4096))], [missing])
    assert info.value.node == missing
    with pytest.raises(SyscallError) as raw:
        numa.backend("syscall").migrate_pages(0, [missing + 4096], [0])
    assert raw.value.call == "migrate_pages" and raw.value.errno


def test_a_core_built_with_other_compiler_flags_is_stale(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The build id covers csrc/build.py (its compiler flags) as well as the C: a core built
    before a flag changed is refused as stale, like one built before a source changed."""
    import importlib.util
    import shutil

    from ptreloc._native import _loader

    src = _loader._SRC
    spec = importlib.util.spec_from_file_location("ptreloc_build_script", src / "build.py")
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    here = _loader._source_hash()
    assert here == build.source_hash()  # the two copies agree
    # the core in use was built from exactly this (it would not have loaded otherwise)
    core = _loader.load_core("_core")
    assert core.ffi.string(core.lib.ptr_build_id()).decode() == here
    copy = tmp_path / "csrc"
    shutil.copytree(src, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "build.py").write_text((copy / "build.py").read_text().replace(
        '"-falign-loops=32"', '"-falign-loops=16"'))
    monkeypatch.setattr(_loader, "_SRC", copy)
    assert _loader._source_hash() != here
