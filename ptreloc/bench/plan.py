"""What one run measures: the suites, the sizes and round counts of a full or a ``--quick``
run (:class:`Plan`), and the checks made BEFORE measuring (suite names, ``--ktables-mib``, output
paths), so that a mistake costs nothing."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ptreloc.errors import UsageError

__all__ = [
    "DEFAULT_BATCH",
    "GEOMETRY",
    "GIB",
    "KTABLES_MIB",
    "KTABLES_MIB_QUICK",
    "MIRROR_MIB",
    "MIRROR_MIB_QUICK",
    "check_mib_list",
    "MIB",
    "PAGE",
    "SUITES",
    "Plan",
    "Progress",
    "check_ktables_mib",
    "check_suites",
    "check_writable",
    "plan",
]

#: every suite, in the order a run measures them (one module each in this package)
SUITES: tuple[str, ...] = ("fault", "walk", "relocate", "pool", "concurrent", "mirror",
                           "migrate", "ktables")

GEOMETRY = "x86_64_4l"
#: the ktables suite's resident sizes (MiB): the issue's goal is stated at 1 GiB and 8 GiB
KTABLES_MIB: tuple[int, ...] = (1024, 8192)
KTABLES_MIB_QUICK: tuple[int, ...] = (16,)
#: resident MiB of the mirror suite's workloads (``--mirror-mib``): issue 13's two sizes
MIRROR_MIB: tuple[int, ...] = (1024, 8192)
MIRROR_MIB_QUICK: tuple[int, ...] = (32,)
PAGE = 4096
MIB = 1 << 20
GIB = 1 << 30

#: a suite's progress callback: one short line of what it is doing now
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Plan:
    """Sizes and round counts of one run (``quick``: a CI smoke run of a few seconds a suite)."""

    quick: bool
    fault_pages: int
    fault_rounds: int
    walk_pages: int
    walk_accesses: int
    walk_rounds: int
    reloc_sizes: tuple[int, ...]
    reloc_rounds: int
    conc_cpus: int
    conc_pages: int
    conc_sparse_pages: int
    conc_batches: tuple[int, ...]
    conc_phase_s: float
    conc_rounds: int
    #: resident MiB of each dense workload the mirror suite looks at (``--mirror-mib``)
    mirror_mib: tuple[int, ...]
    mirror_rounds: int
    migrate_mib: int
    migrate_rounds: int
    #: resident MiB of each dense workload the ktables suite walks (``--ktables-mib``)
    ktables_mib: tuple[int, ...] = KTABLES_MIB
    ktables_rounds: int = 5
    #: the pool suite: MiB each of its two address spaces maps, and rounds
    pool_mib: int = 1024
    pool_rounds: int = 7


def plan(quick: bool, ktables_mib: Sequence[int] | None = None,
         mirror_mib: Sequence[int] | None = None) -> Plan:
    """The sizes and rounds of a full run, or of a ``--quick`` one; ``ktables_mib`` and
    ``mirror_mib`` override those suites' sizes (checked by :func:`check_mib_list`)."""
    cpus = max(1, min(4, (os.cpu_count() or 2) - 1))  # + the relocator: no oversubscription
    if ktables_mib is not None:
        ktables_mib = check_ktables_mib(ktables_mib)
    if mirror_mib is not None:
        mirror_mib = check_mib_list(mirror_mib, "--mirror-mib")
    if quick:
        return Plan(True, 4096, 8, 2048, 50_000, 4, (1 * MIB, 4 * MIB, 16 * MIB), 3, cpus,
                    16384, 4096, (8, 64), 0.1, 2, tuple(mirror_mib or MIRROR_MIB_QUICK), 1, 16, 1,
                    tuple(ktables_mib or KTABLES_MIB_QUICK), 2, 64, 2)
    return Plan(False, 32768, 60, 32768, 400_000, 12,
                (1 * MIB, 16 * MIB, 256 * MIB, 4 * GIB, 64 * GIB), 7, cpus, 65536, 32768,
                (1, 8, 64, 512), 0.2, 16, tuple(mirror_mib or MIRROR_MIB), 9, 256, 7,
                tuple(ktables_mib or KTABLES_MIB), 5)


def check_mib_list(sizes: Sequence[int], option: str) -> tuple[int, ...]:
    """A suite's resident sizes in MiB, sorted, duplicates dropped; UsageError naming
    ``option`` for an empty list or a size that is not a positive number of MiB."""
    bad = [x for x in sizes if isinstance(x, bool) or not isinstance(x, int) or x < 1]
    if bad:
        raise UsageError(f"{option}: {bad[0]!r} is not a size in MiB (a whole number >= 1)")
    out = sorted(set(sizes))
    if not out:
        raise UsageError(f"{option} needs at least one size (MiB), e.g. 1024,8192")
    return tuple(out)


def check_ktables_mib(sizes: Sequence[int]) -> tuple[int, ...]:
    """The ktables suite's resident sizes (:func:`check_mib_list` for ``--ktables-mib``)."""
    return check_mib_list(sizes, "--ktables-mib")


DEFAULT_BATCH = 64  # ptreloc migrate's default: the batch the headline p99_ratio uses


def check_suites(names: Sequence[str]) -> list[str]:
    """The suites to run (all when none are named), in canonical order; UsageError otherwise."""
    bad = [n for n in names if n not in SUITES]
    if bad:
        raise UsageError(f"unknown bench suite {bad[0]!r}: use one or more of {', '.join(SUITES)}")
    chosen = set(names) if names else set(SUITES)
    return [s for s in SUITES if s in chosen]

def check_writable(path: str | os.PathLike[str], option: str) -> None:
    """Raise UsageError (exit 2) unless ``path`` can be written as a file - checked for real,
    BEFORE minutes of measuring: a missing directory, a path naming a directory, a read-only
    file system or a permission problem shows here, not after the run.  Changes nothing: an
    existing file is opened for appending and left as it was; a probe file is removed."""
    p = Path(path)
    where = f"{option} {os.fspath(path)}"
    if p.is_dir():
        raise UsageError(f"{where}: is a directory; name a file in it")
    parent = p.parent if os.fspath(p.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"{where}: directory {os.fspath(parent)} does not exist; create it "
                         "first or write somewhere else")
    try:
        if p.exists():
            with open(p, "a", encoding="utf-8"):
                pass
        else:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.close(fd)
            os.unlink(p)
    except OSError as err:
        raise UsageError(f"{where}: cannot write there ({err.strerror}); pick a writable "
                         "path") from err

