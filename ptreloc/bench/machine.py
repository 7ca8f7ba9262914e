"""The machine a run measures on: its real NUMA nodes, the two pools of a benchmark arena, CPU
pinning, and where the multi-node test bed is (a source checkout's, when there is one)."""

from __future__ import annotations

import os
from pathlib import Path

from ptreloc import numa

__all__ = ["binds", "cpu_model", "numa_vm_script", "pin_to_node", "real_nodes"]


def real_nodes() -> list[int]:
    """Online nodes with memory (sorted): where arena pools can be really bound."""
    return sorted(numa.topology().with_memory)


def binds() -> tuple[tuple[int, int], bool]:
    """Bindings of a 2-pool arena and whether both pools are on distinct real nodes."""
    real = real_nodes()
    if len(real) >= 2:
        return (real[0], real[1]), True
    return (real[0] if real else -1, -1), False


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("" where it has none): the relocate figures
    depend on it (the copy's vector width, the cost of locked operations)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return ""


def pin_to_node(node: int) -> set[int] | None:
    """Pin this thread to ``node``'s CPUs (so local/remote means something); old mask back."""
    cpus = numa.topology().nodes.get(node)
    if cpus is None or not cpus.cpus:
        return None
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(cpus.cpus) & old or old)
    return old


def numa_vm_script() -> Path | None:
    """scripts/numa-vm (the 2-node QEMU test bed) of the source checkout this package runs
    from - an editable install or the tree itself - when it has one; None for an installed
    package, which does not ship the test bed (it mounts the checkout into the guest)."""
    root = Path(__file__).resolve().parents[2]
    script = root / "scripts" / "numa-vm"
    if (root / "pyproject.toml").is_file() and script.is_file() and os.access(script, os.X_OK):
        return script
    return None
