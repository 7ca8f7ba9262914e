"""Wrappers over csrc/bench.cdef: the timed loops of ``ptreloc bench`` (ptreloc.bench).

The loops and their clocks are in C; these wrappers only create contexts and run one round each.
"""

from __future__ import annotations

import errno as _errno
from typing import Any

from ptreloc._native._base import U64, Handle
from ptreloc._native.core import Core
from ptreloc._native.relocate import _timing_names, check_batch, strategy_code
from ptreloc.errors import CoreError, FreedFrameAccess, RelocationUnsupported, UsageError


def _bench_check(c: Core, rc: int, what: str) -> None:
    if rc == -_errno.EOPNOTSUPP:
        raise RelocationUnsupported(f"{what}: relocation is compiled out of the {c.build} core")
    if rc == int(c.lib.PTR_FAULT_FREED):
        raise FreedFrameAccess(f"{what}: an emulated CPU read a freed table frame")
    if rc > 0:
        raise CoreError(f"{what}: an emulated CPU took an unhandled fault ({rc})")
    c._check(rc, what, {_errno.EINVAL: UsageError(f"{what}: bad parameters")})


class BenchContext:
    """A C bench context (arena, address space, CPU) that lives across rounds."""

    _kind = ""

    def __init__(self, c: Core) -> None:
        self.c = c
        self._h: Handle = None

    def close(self) -> None:
        if self._h is not None:
            getattr(self.c.lib, f"ptr_bench_{self._kind}_destroy")(self._h)
            self._h = None

    def __enter__(self) -> BenchContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


class BenchFault(BenchContext):
    _kind = "fault"

    def __init__(self, c: Core, geometry: str, pages: int, with_data: bool, bind_node: int) -> None:
        super().__init__(c)
        c.geometry(geometry)
        out = c.ffi.new("struct ptr_bench_fault **")
        _bench_check(c, c.lib.ptr_bench_fault_create(geometry.encode(), pages, int(with_data),
                                                     bind_node, out), "fault bench set-up")
        self._h = out[0]

    def round(self, seed: int) -> int:
        """Fault every page once in the order ``seed`` gives; nanoseconds of the loop."""
        ns = self.c.ffi.new("uint64_t *")
        _bench_check(self.c, self.c.lib.ptr_bench_fault_round(self._h, seed & U64, ns),
                     "fault bench")
        return int(ns[0])


class BenchWalk(BenchContext):
    _kind = "walk"

    def __init__(self, c: Core, geometry: str, pages: int, bind_nodes: tuple[int, int],
                 table_node: int) -> None:
        super().__init__(c)
        c.geometry(geometry)
        out = c.ffi.new("struct ptr_bench_walk **")
        binds = c.ffi.new("int[]", list(bind_nodes))
        _bench_check(c, c.lib.ptr_bench_walk_create(geometry.encode(), pages, binds, table_node,
                                                    out), "walk bench set-up")
        self._h = out[0]

    def round(self, accesses: int, seed: int, chase_first: bool) -> tuple[int, int]:
        """(emulated CPU ns, bare chase ns) for ``accesses`` walks each."""
        a, b = self.c.ffi.new("uint64_t *"), self.c.ffi.new("uint64_t *")
        _bench_check(self.c, self.c.lib.ptr_bench_walk_round(self._h, accesses, seed & U64,
                                                             int(chase_first), a, b),
                     "walk bench")
        return int(a[0]), int(b[0])

    def stats(self) -> dict[str, int]:
        st = self.c.ffi.new("struct ptr_cpu_stats *")
        self.c.lib.ptr_bench_walk_stats(self._h, st)
        return self.c._stats(st)


class BenchReloc(BenchContext):
    _kind = "reloc"

    def __init__(self, c: Core, geometry: str, mapped: int, bind_nodes: tuple[int, int],
                 strategy: str, batch: int) -> None:
        super().__init__(c)
        c.geometry(geometry)
        out = c.ffi.new("struct ptr_bench_reloc **")
        binds = c.ffi.new("int[]", list(bind_nodes))
        _bench_check(c, c.lib.ptr_bench_reloc_create(geometry.encode(), mapped, binds,
                                                     strategy_code(c, strategy), batch, out),
                     "relocate bench set-up")
        self._h = out[0]

    def round(self, memcpy_first: bool) -> dict[str, Any]:
        r = self.c.ffi.new("struct ptr_bench_reloc_result *")
        _bench_check(self.c, self.c.lib.ptr_bench_reloc_round(self._h, int(memcpy_first), r),
                     "relocate bench")
        rep = r.report
        return {"reloc_ns": int(r.reloc_ns), "memcpy_ns": int(r.memcpy_ns),
                "frames": int(r.frames), "bytes": int(r.bytes), "batches": int(rep.batches),
                "timings_ns": {k: int(getattr(rep, f"ns_{k}")) for k in _timing_names(self.c)}}

    def set_poison(self, on: bool) -> None:
        """Poison freed table frames (the default) or not - to measure what poisoning costs."""
        self.c.lib.ptr_bench_reloc_set_poison(self._h, int(on))

    def set_timed(self, on: bool) -> None:
        """Let each relocation read the clock at its phase boundaries (the default: the
        report's ``timings_ns``) or not (``PTR_RELOC_F_UNTIMED``: every phase time is 0)."""
        self.c.lib.ptr_bench_reloc_set_timed(self._h, int(on))


def bench_concurrent(c: Core, *, geometry: str, cpus: int, pages: int, strategy: str, batch: int,
                     phase_s: float, rounds: int, write_pct: int, bind_nodes: tuple[int, int],
                     seed: int, sparse: bool = False) -> dict[str, Any]:
    """One ptr_bench_concurrent() run (GIL released); histograms come back as lists, the
    per-round ones as ``rounds`` = [(idle_hist, busy_hist), ...].  ``sparse``: one page per
    level-0 table (every access walks to a table of its own) instead of consecutive pages."""
    c.geometry(geometry)
    ffi = c.ffi
    keep = [ffi.new("char[]", geometry.encode()), ffi.new("int[]", list(bind_nodes))]
    cfg = ffi.new("struct ptr_bench_conc_config *")
    cfg.geometry, cfg.bind_nodes = keep
    cfg.cpus, cfg.pages, cfg.strategy, cfg.batch = cpus, pages, strategy_code(c, strategy), batch
    cfg.phase_s, cfg.rounds, cfg.write_pct, cfg.seed = phase_s, rounds, write_pct, seed & U64
    cfg.sparse = int(sparse)
    nb = int(c.lib.PTR_BENCH_HIST_BUCKETS)
    per_round = ffi.new("uint64_t[]", 2 * nb * rounds)
    cfg.round_hists = per_round
    out = ffi.new("struct ptr_bench_conc_result *")
    _bench_check(c, c.lib.ptr_bench_concurrent(cfg, out), "concurrent bench")
    _bench_check(c, out.error, f"concurrent bench ({strategy})")
    res: dict[str, Any] = {k: int(getattr(out, k)) for k in (
        "idle_n", "busy_n", "idle_max", "busy_max", "discarded", "relocations", "frames",
        "shootdowns", "stopped_max_ns", "stopped_sum_ns", "reloc_ns")}
    res["idle_hist"] = ffi.unpack(out.idle_hist, nb)
    res["busy_hist"] = ffi.unpack(out.busy_hist, nb)
    flat = ffi.unpack(per_round, 2 * nb * rounds)
    res["rounds"] = [(flat[2 * r * nb:(2 * r + 1) * nb], flat[(2 * r + 1) * nb:(2 * r + 2) * nb])
                     for r in range(rounds)]
    return res


def bench_hist_lower(c: Core, bucket: int) -> int:
    """Smallest latency (ns) of histogram bucket ``bucket`` (the C encoding, for tests)."""
    return int(c.lib.ptr_bench_hist_lower(bucket))


def bench_hist_index(c: Core, value: int) -> int:
    return int(c.lib.ptr_bench_hist_index(value & U64))



def bench_pool_round(c: Core, *, geometry: str, mapped: int, bind_nodes: tuple[int, int],
                     strategy: str, batch: int, memcpy_first: bool) -> dict[str, int]:
    """One ptr_bench_pool_round(): a fragmented pool 0 compacted, then evacuated to node 1,
    against memcpy of the same tables' bytes (``struct ptr_bench_pool_result`` as a dict)."""
    c.geometry(geometry)
    check_batch(batch)
    if isinstance(mapped, bool) or not isinstance(mapped, int) or mapped < 2 << 20:
        raise UsageError(f"pool bench: mapped must be at least 2 MiB, not {mapped!r}")
    ffi = c.ffi
    keep = [ffi.new("char[]", geometry.encode()), ffi.new("int[]", list(bind_nodes))]
    out = ffi.new("struct ptr_bench_pool_result *")
    _bench_check(c, c.lib.ptr_bench_pool_round(keep[0], mapped, keep[1],
                                               strategy_code(c, strategy), batch,
                                               int(memcpy_first), out), "pool bench")
    return {name: int(getattr(out, name))
            for name, _ in ffi.typeof("struct ptr_bench_pool_result").fields}
