"""The relocation torture test behind ``ptreloc stress`` (the loop itself is C: csrc/stress.c).

K emulated CPUs read and write random pages of a demand-faulted address space, a relocator
moves every one of its tables back and forth between two nodes with the chosen protocol, and a
reclaimer consumes accessed/dirty bits the way writeback (test-and-clear dirty), aging
(test-and-clear young + flush) and eviction (unmap) do.  A shadow record of every access decides
whether an A/D bit was lost; see :class:`StressResult` for the verdict fields.  ``scenario``
(:data:`SCENARIOS`) makes the relocator evacuate the pools in turn or fragment pool 0 and compact
it instead, with the same protocol and checks (figures in :attr:`StressResult.pool`).

The defaults are tuned so that ``protocol="naive"`` reliably loses dirty bits within a second
or two on a 2-core machine: a small address space (4 chunks x 64 pages, each chunk with its own
table at every level), so relocations are frequent and CPUs often walk through a table the
relocator has just copied; a reclaimer cleaning continuously, so first writes after a clean -
the ones that set D - keep happening.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ptreloc import _native
from ptreloc._native import stress as _native_stress
from ptreloc.errors import InvalidNode, UsageError

__all__ = [
    "PROTOCOLS", "SCENARIOS", "NODE_MODES", "DEFAULTS", "MAX_SECONDS", "StressResult", "run_stress",
    "stress_nodes",
]

MAX_SECONDS = _native_stress.MAX_SECONDS

PROTOCOLS: tuple[str, ...] = _native.RELOC_STRATEGIES

#: What the relocator does: ``relocate`` moves every table node 0 <-> 1; ``evacuate`` empties
#: pool 0, then pool 1, ... with :meth:`Arena.evacuate`'s engine (every table frame off the
#: node, faults swept up by further passes); ``compact`` spreads the tables over pool 0 (one
#: per 2 MiB run of frames and more), then packs them low with :meth:`Arena.compact`'s engine;
#: ``share`` gives a second address space a link to each chunk's level-1 table (the
#: lowest-level one in 2- and 3-level formats), hugetlb-style, runs the odd CPUs in it, and
#: relocates both address spaces together (a shared table moves once, both parent entries
#: repointed).  All four use the same protocol, locks, merge and checks.
SCENARIOS: tuple[str, ...] = _native_stress.SCENARIOS

#: the result counters that describe the evacuate/compact scenarios (``StressResult.pool``)
_POOL_KEYS = {
    "evacuate": ("pool_ops", "pool_op_failures", "pool_frames_moved", "pool_op_ns", "evac_left"),
    "compact": ("pool_ops", "pool_op_failures", "pool_frames_moved", "pool_op_ns",
                "compact_above", "compact_packed", "pool_runs_2m", "pool_largest_free_before",
                "pool_largest_free_after", "pool_free_2m_before", "pool_free_2m_after"),
}

#: How the arena's two pools are placed: ``auto`` binds each to the real NUMA node of the same
#: id when that node has memory and leaves it virtual otherwise; ``real`` insists on real
#: nodes 0 and 1 (an error where they do not exist, rather than a quietly virtual run);
#: ``virtual`` leaves both unbound (to compare with a real run on the same machine).
NODE_MODES: tuple[str, ...] = ("auto", "real", "virtual")

#: Parameters of the default stress (the tuning the naive-loss test relies on).
DEFAULTS: dict[str, Any] = {
    "geometry": "x86_64_4l",
    "cpus": 2,
    "protocol": "rewalk",
    "batch": 64,
    "seed": 1,
    "chunks": 4,
    "pages_per_chunk": 64,
    "write_pct": 50,
    "unmap_pct": 5,
    "frames_per_node": 4096,
    "nodes": "auto",
    "ipi_delay_us": 20,
    "scenario": "relocate",
}


@dataclass
class StressResult:
    """Counters of one run.  The verdict: ``lost_dirty``, ``lost_accessed``,
    ``freed_frame_accesses``, ``leaked_frames``, ``translation_mismatches`` (and
    ``access_errors``) must all be 0 for :attr:`clean`."""

    seconds: float
    geometry: str
    protocol: str
    cpus: int
    seed: int
    batch: int
    nodes: list[dict[str, Any]]
    relocations: int
    accesses: int
    lost_dirty: int
    lost_accessed: int
    freed_frame_accesses: int
    leaked_frames: int
    translation_mismatches: int
    access_errors: int
    counters: dict[str, int] = field(default_factory=dict)
    cancelled: bool = False
    ipi_delay_us: int = 0
    scenario: str = "relocate"
    #: evacuate/compact: the pool operations' figures - ``operations`` (evacuations or
    #: compactions done), ``failures``, ``frames_moved``, ``ns_per_frame``; evacuate:
    #: ``frames_left`` (frames left on the evacuated pool, summed over evacuations: must be 0);
    #: compact: ``frames_above`` (used slots left above the packed boundary, summed - a fault may
    #: put a table there meanwhile), ``packed_rounds``, and, of the most fragmented round (fewest
    #: free 2 MiB runs before), the pool before/after:
    #: ``largest_free_run``, ``free_2m_runs`` (of ``runs_2m``)
    pool: dict[str, Any] | None = None

    @property
    def clean(self) -> bool:
        return not (self.lost_dirty or self.lost_accessed or self.freed_frame_accesses
                    or self.leaked_frames or self.translation_mismatches or self.access_errors)

    @property
    def virtual_nodes(self) -> list[int]:
        """Arena nodes of this run that were not bound to a real NUMA node."""
        return [n["node"] for n in self.nodes if n["virtual"]]

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["virtual_nodes"] = self.virtual_nodes
        d["clean"] = self.clean
        return d


def stress_nodes(mode: str = "auto") -> tuple[tuple[int, int], list[dict[str, Any]]]:
    """The two arena nodes the relocator moves tables between and the real NUMA node each
    pool is bound to (-1: virtual, unbound), per ``mode`` (see :data:`NODE_MODES`)."""
    if mode not in NODE_MODES:
        raise UsageError(f"unknown node mode {mode!r}: use one of {', '.join(NODE_MODES)}")
    try:
        from ptreloc import numa

        real = numa.topology().with_memory
    except Exception:  # no sysfs (containers): both virtual
        real = frozenset()
    if mode == "virtual":
        real = frozenset()
    elif mode == "real":
        missing = [n for n in (0, 1) if n not in real]
        if missing:
            have = ",".join(str(n) for n in sorted(real)) or "none"
            raise InvalidNode(
                f"real nodes requested, but NUMA node(s) {','.join(map(str, missing))} are "
                f"offline or have no memory here (nodes with memory: {have}): use node mode "
                f"auto (missing nodes become virtual) or run inside scripts/numa-vm --nodes 2"
            )
    binds = tuple(n if n in real else -1 for n in (0, 1))
    nodes = [{"node": n, "virtual": b < 0, "bind_node": None if b < 0 else b}
             for n, b in zip((0, 1), binds, strict=True)]
    return (binds[0], binds[1]), nodes


def run_stress(
    seconds: float,
    cpus: int = DEFAULTS["cpus"],
    protocol: str = DEFAULTS["protocol"],
    geometry: str = DEFAULTS["geometry"],
    batch: int = DEFAULTS["batch"],
    seed: int = DEFAULTS["seed"],
    *,
    chunks: int = DEFAULTS["chunks"],
    pages_per_chunk: int = DEFAULTS["pages_per_chunk"],
    write_pct: int = DEFAULTS["write_pct"],
    unmap_pct: int = DEFAULTS["unmap_pct"],
    frames_per_node: int = DEFAULTS["frames_per_node"],
    nodes: str = DEFAULTS["nodes"],
    ipi_delay_us: int = DEFAULTS["ipi_delay_us"],
    scenario: str = DEFAULTS["scenario"],
    share_flush_one: bool = False,
    progress: Callable[[float], None] | None = None,
) -> StressResult:
    """Run the torture test for ``seconds``.  ``progress`` (optional) is called about ten
    times a second with the elapsed seconds.  ``nodes`` places the two pools (see
    :data:`NODE_MODES`; the result's ``nodes`` says which were virtual).  Ctrl-C stops the
    run early (KeyboardInterrupt propagates after the C threads have stopped).
    ``share_flush_one`` (scenario ``share``) is wrong on purpose: the reclaimer then shoots down
    only the address space it called the consumer on, not the one sharing the tables - the
    stress sees what that loses whatever the protocol (so its sharer shootdown is needed)."""
    # every parameter is checked by the binding (ptreloc._native.stress.StressRun)
    binds, node_info = stress_nodes(nodes)
    run = _native.StressRun(
        _native.core(), geometry=geometry, cpus=cpus, seconds=float(seconds), strategy=protocol,
        batch=batch, seed=seed, bind_nodes=binds, frames_per_node=frames_per_node,
        chunks=chunks, pages_per_chunk=pages_per_chunk, write_pct=write_pct,
        unmap_pct=unmap_pct, ipi_delay_us=ipi_delay_us, scenario=scenario,
        share_flush_one=share_flush_one,
    )
    worker = threading.Thread(target=run.run, name="ptreloc-stress", daemon=True)
    worker.start()
    elapsed = 0.0
    try:
        while worker.is_alive():
            worker.join(timeout=0.1)
            elapsed = min(elapsed + 0.1, float(seconds))
            if progress is not None:
                progress(elapsed)
    except KeyboardInterrupt:
        run.stop()
        worker.join()
        raise
    r = run.result()
    verdict = ("lost_dirty", "lost_accessed", "freed_frame_accesses", "leaked_frames",
               "translation_mismatches", "access_errors", "relocations", "accesses")
    pool_keys = {k for keys in _POOL_KEYS.values() for k in keys}
    return StressResult(
        seconds=round(r["seconds"], 3), geometry=geometry, protocol=protocol, cpus=cpus,
        seed=seed, batch=batch, nodes=node_info,
        **{k: r[k] for k in verdict},
        counters={k: v for k, v in r.items()
                  if k not in verdict and k not in pool_keys and k not in ("seconds", "cancelled")},
        cancelled=r["cancelled"], ipi_delay_us=ipi_delay_us, scenario=scenario,
        pool=_pool_figures(scenario, r),
    )


def _pool_figures(scenario: str, r: dict[str, Any]) -> dict[str, Any] | None:
    if scenario not in _POOL_KEYS:
        return None
    moved = r["pool_frames_moved"]
    d: dict[str, Any] = {
        "operations": r["pool_ops"], "failures": r["pool_op_failures"], "frames_moved": moved,
        "ns_per_frame": round(r["pool_op_ns"] / moved, 1) if moved else None,
    }
    if scenario == "evacuate":
        d["frames_left"] = r["evac_left"]
    else:
        d.update({
            "frames_above": r["compact_above"], "packed_rounds": r["compact_packed"],
            "runs_2m": r["pool_runs_2m"],
            "largest_free_run": {"before": r["pool_largest_free_before"],
                                 "after": r["pool_largest_free_after"]},
            "free_2m_runs": {"before": r["pool_free_2m_before"],
                             "after": r["pool_free_2m_after"]},
        })
    return d
