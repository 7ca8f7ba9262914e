"""`ptreloc migrate --kernel-tables / --tables-only` on the host (one node): the real move, end to
end through the CLI, on a real process - 0 -> 0 re-homes its tables in fresh frames on node 0.

The kernel walk is not possible here (no /proc/kcore), so the checks that need it say so (null)
and the ones that do not - frames unchanged (pagemap), maps unchanged, the process alive - must
hold.  Placement on another node is tested in the guest (test_migrate_kernel_tables_multinode).
"""

from __future__ import annotations

import json
import os

import pytest
from live_workload import live_workload, ptreloc

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="ptrace of another process: root")


def test_tables_only_in_place_moves_and_verifies() -> None:
    with live_workload(mib=8, threads=3) as w:
        r = ptreloc("migrate", "--pid", str(w.pid), "--from-node", "0", "--to-node", "0",
                    "--tables-only", "--json")
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        k = doc["kernel_tables"]
        assert k["moved"], k
        assert k["pause_ms"] > 0
        names = {s["reason"] for s in k["skipped"]} if k["skipped"] else set()
        assert all(isinstance(n, str) and n for n in names)
        checks = doc["checks"]
        assert checks["kernel_frames_unchanged"] is True, checks
        assert checks["kernel_maps_unchanged"] is True, checks
        assert checks["kernel_alive"] is True, checks
        assert doc["verified"] is True
        # the data did not move (no migrate_pages), nor did the mirror relocate
        assert doc["data"]["before"] == doc["data"]["after"]
        assert sum(doc["tables"]["relocated"].values()) == 0
        # the workload is alive and well: it still answers (stop_workload checks its exit)
        assert w.proc.poll() is None


def test_kernel_tables_with_in_place_is_a_usage_error() -> None:
    with live_workload(mib=1, threads=0) as w:
        r = ptreloc("migrate", "--pid", str(w.pid), "--from-node", "0", "--to-node", "0",
                    "--kernel-tables", "--in-place", "--json")
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stdout == "" and r.stderr.count("\n") == 1
    assert "--in-place" in r.stderr
