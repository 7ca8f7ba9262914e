"""A process whose regions were first touched under different node bindings (issue 9).

An ordinary two-phase program: it touches one region under set_mempolicy(MPOL_BIND, node 0)
and a second under MPOL_BIND node 1, one page every 2 MiB, MADV_NOHUGEPAGE.  Its mirrored
tables end up mixed, so the mirror's settle step relocates with a chooser that leaves most
frames where they are - the case that overflowed run_batch's lock set (`show` died with
"double free or corruption", `migrate --from-node 0,1` with "corrupted double-linked list").
Run several times: the heap corruption struck in one run of four.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from live_workload import ptreloc, stop_workload, workload_env

pytestmark = pytest.mark.multinode

REGION = 512 << 20
STEP = 2 << 20

TWO_PHASE = textwrap.dedent(f"""
    import ctypes, json, mmap, sys
    libc = ctypes.CDLL(None, use_errno=True)
    MPOL_DEFAULT, MPOL_BIND, SYS_set_mempolicy = 0, 2, 238  # x86-64
    out = []
    for node in (0, 1):
        mask = ctypes.c_ulong(1 << node)
        if libc.syscall(SYS_set_mempolicy, MPOL_BIND, ctypes.byref(mask), 65) != 0:
            sys.exit("set_mempolicy: errno %d" % ctypes.get_errno())
        m = mmap.mmap(-1, {REGION}, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | 0x4000)
        m.madvise(mmap.MADV_NOHUGEPAGE)
        for off in range(0, {REGION}, {STEP}):
            m[off] = 1
        addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
        out.append((m, addr))
    libc.syscall(SYS_set_mempolicy, MPOL_DEFAULT, None, 0)
    print(json.dumps({{"ready": True, "regions": [a for _, a in out]}}), flush=True)
    sys.stdin.read()
""")


@contextmanager
def two_phase_process() -> Iterator[tuple[int, list[int]]]:
    proc = subprocess.Popen([sys.executable, "-c", TWO_PHASE], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=workload_env())
    try:
        line = proc.stdout.readline()
        assert line, f"the two-phase workload died (exit {proc.wait()})"
        yield proc.pid, json.loads(line)["regions"]
    finally:
        stop_workload(proc)


def _tables(doc: dict) -> dict[int, int]:
    """node -> PTE tables, from show's or migrate's tables object."""
    return {int(n): lv.get("pte", 0) for n, lv in doc.items()}


@pytest.mark.parametrize("run", range(3))
def test_show_a_process_with_mixed_table_placement(run: int) -> None:
    with two_phase_process() as (pid, _):
        r = ptreloc("show", "--pid", str(pid), "--json")
        assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
        doc = json.loads(r.stdout)
        ptes = _tables(doc["tables"])
        # 256 PTE tables per region, each region's on the node it was touched under
        assert ptes.get(0, 0) >= 256 and ptes.get(1, 0) >= 256, ptes


@pytest.mark.parametrize("run", range(2))
def test_migrate_a_process_with_mixed_table_placement(run: int) -> None:
    with two_phase_process() as (pid, _):
        r = ptreloc("migrate", "--pid", str(pid), "--from-node", "0,1", "--to-node", "1",
                    "--json")
        assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
        doc = json.loads(r.stdout)
        assert doc["verified"] is True, doc["checks"]
        assert _tables(doc["tables"]["after"]).get(0, 0) == 0
        assert _tables(doc["tables"]["after"])[1] >= 512
