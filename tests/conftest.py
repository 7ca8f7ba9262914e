"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# --- multi-node plumbing (scripts/numa-vm) --------------------------------------------------
# Tests marked `multinode` need two or more online NUMA nodes. On a one-node machine they are
# skipped with a reason (the one scripts/numa-vm gave, when `make test-vm` could not boot the
# guest, arrives in PTRELOC_VM_UNAVAILABLE); with CI set they fail instead, so that a CI run
# that silently lost its multi-node suite cannot pass.

NODE_ONLINE = Path("/sys/devices/system/node/online")


def parse_node_list(text: str) -> list[int]:
    """Node numbers of a kernel list such as "0-1,3" (the format of .../node/online)."""
    nodes: list[int] = []
    for part in filter(None, text.strip().split(",")):
        lo, _, hi = part.partition("-")
        nodes.extend(range(int(lo), int(hi or lo) + 1))
    return nodes


def online_nodes() -> list[int]:
    try:
        return parse_node_list(NODE_ONLINE.read_text())
    except OSError:
        return [0]  # a kernel without CONFIG_NUMA behaves as one node


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def skip_or_fail(reason: str) -> None:
    """Skip the running test with ``reason`` - or, with CI set, fail it: what CI is meant to run
    must not pass by vanishing (THP is on where CI runs, on the host and in the guest)."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set, so this test must run)", pytrace=False)
    pytest.skip(reason)


# --- transparent huge pages ------------------------------------------------------------------
# Tests marked `thp` need THP to be "always" or "madvise"; without it they are skipped, or
# failed when CI is set (as the multi-node ones are).

THP_ENABLED = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def thp_mode() -> str | None:
    """The selected THP mode ("always", "madvise", "never"), None without THP support."""
    try:
        text = THP_ENABLED.read_text()
    except OSError:
        return None
    return next((w[1:-1] for w in text.split() if w.startswith("[") and w.endswith("]")), None)


# tryfirst: ahead of the tests' own skipif marks, so that the test bed's reason is the one
# reported and CI fails rather than skips.
@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("thp") is not None and thp_mode() not in ("always", "madvise"):
        skip_or_fail(f"transparent huge pages are off here ({THP_ENABLED}: {thp_mode()})")
    if item.get_closest_marker("multinode") is None:
        return
    n = len(online_nodes())
    if n >= 2:
        return
    if os.environ.get("PTRELOC_IN_VM") == "1":
        reason = f"the scripts/numa-vm guest has {n} online NUMA node(s); run it with --nodes 2"
    elif why := os.environ.get("PTRELOC_VM_UNAVAILABLE"):
        reason = f"NUMA test bed unavailable: {why}"
    else:
        reason = (
            f"this machine has {n} online NUMA node(s); multi-node tests run inside the "
            "test bed: make test-vm"
        )
    if in_ci():
        pytest.fail(f"{reason} (CI is set, so the multi-node suite must run)", pytrace=False)
    pytest.skip(reason)
