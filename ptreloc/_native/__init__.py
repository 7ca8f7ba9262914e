"""The bindings: the only package that touches cffi's ``ffi``/``lib`` objects.

One module per set of C declarations (as pynacl's ``nacl.bindings``), each a thin typed layer
that checks its arguments before calling C and turns ``-errno`` returns into exceptions from
``ptreloc.errors``:

==================  ===========================  =========================================
module              declarations                 used by
==================  ===========================  =========================================
``_loader``         (build id)                   every core module: refuses a stale build
``_base``           core.cdef limits, errno map  the classes below
``core``            csrc/core.cdef               ptreloc.core (``Core``, ``core()``)
``mirror``          csrc/mirror.cdef             ptreloc.mirror (methods of ``Core``)
``pagescan``        csrc/pagescan.cdef, the      ptreloc.proc, ptreloc.mirror (methods of
                    bulk builders of core.cdef   ``Core``)
``x86pt``           csrc/x86pt.cdef              ptreloc.kernel_tables (a method of ``Core``)
``relocate``        csrc/relocate.cdef           ptreloc.relocate (the one relocation report)
``relocate_pool``   csrc/relocate_pool.cdef      ptreloc.core (``Arena.evacuate``/``compact``)
``stress``          csrc/stress.cdef             ptreloc.stress
``bench``           csrc/bench.cdef              ptreloc.bench
``inject``          csrc/inject.cdef             ptreloc.kernel_move (the ptrace injector)
``numa_abi``        libnuma.so.1, syscall(2)     ptreloc.numa (ABI mode; no build needed)
==================  ===========================  =========================================

Nothing here loads the compiled core at import time: the NUMA layer works without a build.
The names below are what the rest of ptreloc imports as ``ptreloc._native.X``; ``__all__`` is
kept here only (the modules are private to this package).
"""

from __future__ import annotations

from ptreloc._native._base import CORE_BUILDS
from ptreloc._native._loader import load_core
from ptreloc._native.bench import (
    BenchContext,
    BenchFault,
    BenchReloc,
    BenchWalk,
    bench_concurrent,
    bench_hist_index,
    bench_hist_lower,
    bench_pool_round,
)
from ptreloc._native.core import (
    Core,
    FrameInfo,
    GeometryInfo,
    LevelInfo,
    PoolInfo,
    TranslationInfo,
    core,
)
from ptreloc._native.inject import (
    INJECT_MASK_WORDS,
    INJECT_NR,
    Injector,
    kcmp_same_vm,
    test_kill_tracer_at,
)
from ptreloc._native.mirror import RemoteCount
from ptreloc._native.numa_abi import (
    BITS_PER_LONG,
    LibnumaBackend,
    SyscallBackend,
    buffer_address,
)
from ptreloc._native.relocate import (
    DEFAULT_BATCH,
    MAX_BATCH,
    RELOC_STRATEGIES,
    VECTOR_WIDTHS,
    LevelReport,
    RelocationReport,
    check_batch,
    check_strategy,
    reloc_reason_names,
    relocate,
    set_relocation_copy_hook,
    set_relocation_test_hook,
    strategy_code,
    take_hook_error,
    vector_copy,
    vector_digest,
    vector_next_used_line,
    vector_width,
)
from ptreloc._native.relocate_pool import PoolReport, PoolRuns, compact, evacuate, pool_runs
from ptreloc._native.stress import MAX_SECONDS, MAX_STRESS_CPUS, StressRun
from ptreloc.errors import BuildError, CoreError

__all__ = [
    "BuildError",
    "CoreError",
    "load_core",
    "CORE_BUILDS",
    "Core",
    "core",
    "GeometryInfo",
    "LevelInfo",
    "PoolInfo",
    "FrameInfo",
    "TranslationInfo",
    "RemoteCount",
    "RELOC_STRATEGIES",
    "MAX_BATCH",
    "DEFAULT_BATCH",
    "check_batch",
    "check_strategy",
    "strategy_code",
    "LevelReport",
    "RelocationReport",
    "relocate",
    "reloc_reason_names",
    "set_relocation_copy_hook",
    "set_relocation_test_hook",
    "take_hook_error",
    "VECTOR_WIDTHS",
    "vector_width",
    "vector_copy",
    "vector_digest",
    "vector_next_used_line",
    "PoolRuns",
    "PoolReport",
    "pool_runs",
    "evacuate",
    "compact",
    "StressRun",
    "MAX_SECONDS",
    "MAX_STRESS_CPUS",
    "BenchContext",
    "BenchFault",
    "BenchWalk",
    "BenchReloc",
    "bench_concurrent",
    "bench_pool_round",
    "bench_hist_lower",
    "bench_hist_index",
    "INJECT_NR",
    "INJECT_MASK_WORDS",
    "Injector",
    "kcmp_same_vm",
    "test_kill_tracer_at",
    "BITS_PER_LONG",
    "SyscallBackend",
    "LibnumaBackend",
    "buffer_address",
]


def __getattr__(name: str) -> object:
    # names that moved up to ptreloc.numa (backend policy); kept reachable for code written
    # against the single-module _native
    if name in ("NumaBackend", "numa_backend", "BACKEND_ENV", "BACKEND_NAMES",
                "SYSCALL_NUMBERS", "kernel_nodemask_bits"):
        from ptreloc import numa

        return getattr(numa, "backend" if name == "numa_backend" else name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
