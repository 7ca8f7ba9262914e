"""Wrapper over csrc/stress.cdef: one run of the relocation torture test (ptreloc.stress)."""

from __future__ import annotations

import errno as _errno
from typing import Any

from ptreloc._native._base import U64, check_int
from ptreloc._native.core import Core
from ptreloc._native.relocate import check_batch, check_strategy, strategy_code
from ptreloc.errors import RelocationUnsupported, UsageError

__all__ = ["StressRun", "MAX_SECONDS", "MAX_STRESS_CPUS", "SCENARIOS"]

#: What the relocator thread does (csrc/harness.h, PTR_STRESS_<NAME>): move every table between
#: the nodes, evacuate one pool after the other, fragment pool 0 and compact it, or move the
#: tables of two address spaces that share each chunk's level-1 table (hugetlb-style).
SCENARIOS: tuple[str, ...] = ("relocate", "evacuate", "compact", "share")

#: the C core keeps the deadline in nanoseconds of a uint64: bound runs far below that
MAX_SECONDS = 7 * 24 * 3600.0
#: emulated CPUs of a stress run: two more threads relocate and reclaim (PTR_MAX_CPUS - 2)
MAX_STRESS_CPUS = 62


class StressRun:
    """One ptr_stress_run() call, startable on a worker thread and cancellable from another
    (cffi releases the GIL for the call, so Python can show progress meanwhile).  Every
    parameter is checked here, before anything is allocated."""

    def __init__(self, c: Core, *, geometry: str, cpus: int, seconds: float, strategy: str,
                 batch: int, seed: int, bind_nodes: tuple[int, int], frames_per_node: int,
                 chunks: int, pages_per_chunk: int, write_pct: int, unmap_pct: int,
                 ipi_delay_us: int = 0, scenario: str = "relocate",
                 share_flush_one: bool = False) -> None:
        if not c.relocation_supported:
            raise RelocationUnsupported("the stress needs the relocation core (build='relo')")
        if (isinstance(seconds, bool) or not isinstance(seconds, int | float)
                or not 0 < seconds <= MAX_SECONDS):
            raise UsageError(f"seconds must be > 0 and at most {MAX_SECONDS:.0f} (a week), "
                             f"got {seconds!r}")
        if isinstance(cpus, bool) or not isinstance(cpus, int) or not 1 <= cpus <= MAX_STRESS_CPUS:
            raise UsageError(
                f"cpus must be 1..{MAX_STRESS_CPUS} (two more threads relocate and reclaim), "
                f"got {cpus!r}"
            )
        check_batch(batch)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise UsageError(f"seed must be a non-negative integer, got {seed!r}")
        for name, v in (("write_pct", write_pct), ("unmap_pct", unmap_pct)):
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 100:
                raise UsageError(f"{name} must be 0..100, got {v!r}")
        check_int("ipi_delay_us", ipi_delay_us, 0, 1_000_000)
        check_strategy(scenario, "stress scenario", SCENARIOS)
        c.geometry(geometry)
        check_strategy(strategy, "protocol")
        ffi = c.ffi
        self._c = c
        self._keep = [ffi.new("char[]", geometry.encode()), ffi.new("int[]", list(bind_nodes))]
        self.cancel = ffi.new("int *")
        cfg = ffi.new("struct ptr_stress_config *")
        cfg.geometry = self._keep[0]
        cfg.cpus = cpus
        cfg.seconds = float(seconds)
        cfg.strategy = strategy_code(c, strategy)
        cfg.batch = batch
        cfg.seed = seed & U64
        cfg.bind_nodes = self._keep[1]
        cfg.frames_per_node = frames_per_node
        cfg.chunks = chunks
        cfg.pages_per_chunk = pages_per_chunk
        cfg.write_pct = write_pct
        cfg.unmap_pct = unmap_pct
        cfg.reclaim_pause_us = 0
        cfg.cancel = self.cancel
        cfg.ipi_delay_us = ipi_delay_us
        cfg.scenario = int(getattr(c.lib, f"PTR_STRESS_{scenario.upper()}"))
        # scenario "share", wrong on purpose: the reclaimer flushes only the mm it called the
        # consumer on (csrc/harness.h) - for the test that shows the sharer shootdown is needed
        cfg.share_flush_one = int(bool(share_flush_one))
        self._cfg = cfg
        self._out = ffi.new("struct ptr_stress_result *")
        self.rc: int | None = None

    def run(self) -> None:
        self.rc = int(self._c.lib.ptr_stress_run(self._cfg, self._out))

    def stop(self) -> None:
        self.cancel[0] = 1

    def result(self) -> dict[str, Any]:
        """The counters of ``struct ptr_stress_result`` in declaration order, then ``seconds``
        and ``cancelled``."""
        rc = self.rc
        if rc == -_errno.EINVAL:
            raise UsageError(
                "stress: bad parameters (cpus 1..62, seconds > 0, batch >= 1, chunks that fit "
                "the geometry's top table, pages per chunk <= one table)"
            )
        if rc is None or rc < 0:
            self._c._check(rc if rc is not None else -_errno.EIO, "stress run")
        out: dict[str, Any] = {
            name: int(getattr(self._out, name))
            for name, _ in self._c.ffi.typeof("struct ptr_stress_result").fields
            if name not in ("seconds", "error", "cancelled")
        }
        out["seconds"] = float(self._out.seconds)
        out["cancelled"] = bool(self._out.cancelled)
        return out
