"""Spawn scripts/workload.py (a real multi-threaded process) and run the ptreloc CLI for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ROOT", "Live", "live_workload", "ptreloc", "numa_maps_pages"]

ROOT = Path(__file__).resolve().parent.parent
WORKLOAD = ROOT / "scripts" / "workload.py"


@dataclass
class Live:
    pid: int
    address: int
    pages: int
    threads: int
    proc: subprocess.Popen[str]


@contextmanager
def live_workload(
    mib: int = 4, threads: int = 3, prefix: Sequence[str] = (), extra: Sequence[str] = (),
    **popen: object,
) -> Iterator[Live]:
    """Run the workload (optionally under ``prefix``, e.g. numactl) until the block ends."""
    proc = subprocess.Popen(
        [*prefix, sys.executable, str(WORKLOAD), "--mib", str(mib), "--threads", str(threads),
         *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        **popen,  # type: ignore[arg-type]
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"workload exited early with status {proc.wait()}")
        info = json.loads(line)
        yield Live(info["pid"], info["address"], info["pages"], info["threads"], proc)
    finally:
        if proc.poll() is None:
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def ptreloc(*args: str, user: str | None = None, timeout: float = 300,
            check: int | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed ``ptreloc`` command line as a real subprocess."""
    exe = Path(sys.executable).with_name("ptreloc")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "ptreloc"]
    env = dict(os.environ, COLUMNS="200")
    result = subprocess.run(
        [*cmd, *args], capture_output=True, text=True, timeout=timeout, env=env,
        user=user, cwd="/" if user else None,
    )
    if check is not None:
        assert result.returncode == check, (result.returncode, result.stdout, result.stderr)
    return result


def numa_maps_pages(pid: int) -> dict[int, int]:
    from ptreloc import numa

    return numa.numa_maps_node_pages(pid)
