"""Issue 13 on the host: the retry loop's classification (with a named fake backend), the
policy warnings (numa_maps as the kernel prints it), and the options' bad input.

The real transient failure (pages pinned by vmsplice) and the real membind policy are
exercised in the 2-node guest: tests/test_migrate_multinode.py."""

from __future__ import annotations

import errno
import json
import mmap
from collections import Counter
from collections.abc import Iterable, Sequence

import pytest
from live_workload import live_workload, ptreloc

from ptreloc import migrate_retry, numa, policy
from ptreloc.errors import UsageError


class FakeBusyBackend:
    """A FAKE backend: the host has one node, so no page can fail to move between nodes here.
    Pages live on fake node 0 and move to fake node 1; ``busy[a]`` rounds of EAGAIN (counted
    only in the return value, no status written - as 6.1 does) or EBUSY (a status) before
    page ``a`` moves (-1: never); ``permanent[a]`` an errno written as its status every time.
    Every move request per page is counted."""

    name = "fake-busy"
    nodemask_bits = 64

    def __init__(self, busy: dict[int, int], permanent: dict[int, int],
                 ebusy: Iterable[int] = ()) -> None:
        self.busy = dict(busy)
        self.permanent = permanent
        self.ebusy = set(ebusy)
        self.node: dict[int, int] = {}
        self.asked: Counter[int] = Counter()

    def migrate_pages(self, pid: int, from_nodes: Iterable[int], to_nodes: Iterable[int]) -> int:
        raise AssertionError("not used")

    def move_pages(self, pid: int, addresses: Sequence[int], nodes: Sequence[int] | None,
                   flags: int) -> tuple[int, list[int]]:
        if nodes is None:  # query
            return 0, [self.node.get(a, 0) for a in addresses]
        status = [0] * len(addresses)  # what the kernel did not write stays 0
        failed = 0
        for k, (a, n) in enumerate(zip(addresses, nodes, strict=True)):
            self.asked[a] += 1
            if a in self.permanent:
                status[k] = -self.permanent[a]
            elif self.busy.get(a, 0) != 0:
                self.busy[a] -= 1
                if a in self.ebusy:
                    status[k] = -errno.EBUSY
                else:
                    failed += 1
            else:
                self.node[a] = n
                status[k] = n
        return failed, status

    def mbind(self, addr: int, length: int, mode: int, nodes: Iterable[int], flags: int) -> None:
        raise AssertionError("not used")

    def get_mempolicy(self, addr: int | None, flags: int) -> tuple[int, frozenset[int]]:
        raise AssertionError("not used")


def test_transient_failures_are_retried_and_permanent_ones_are_not() -> None:
    page = mmap.PAGESIZE
    a, b, c, d, e = (0x10000 + i * page for i in range(5))
    fake = FakeBusyBackend(busy={b: 2, c: -1, e: 1}, permanent={d: errno.EFAULT}, ebusy={e})
    slept: list[float] = []
    where, reasons, report = migrate_retry.retry_pages(
        0, [a, b, c, d, e], [1] * 5, frozenset({0}), retries=4, delay_s=0.01,
        backend=fake, sleep=slept.append)
    assert where == [1, 1, 0, 0, 1]
    assert reasons == ["", "", "EAGAIN", "EFAULT", ""]
    assert fake.asked[d] == 1  # permanent: asked once, never again
    assert fake.asked[a] == 1 and fake.asked[b] == 3 and fake.asked[e] == 2
    assert fake.asked[c] == 4  # transient forever: exactly the bound
    assert report.rounds == 4 and slept == [0.01, 0.02, 0.04, 0.08]
    assert report.pages_retried == 5 and report.recovered == 3
    assert report.not_retried == {"EFAULT": 1}
    assert report.rounds_detail[0]["reasons"] == {"EAGAIN": 2, "EBUSY": 1, "EFAULT": 1}


def test_no_retries_leaves_the_pages_with_an_unknown_reason() -> None:
    fake = FakeBusyBackend(busy={}, permanent={})
    where, reasons, report = migrate_retry.retry_pages(
        0, [0x10000], [1], frozenset({0}), retries=0, backend=fake,
        sleep=lambda _s: None)
    assert where == [0] and reasons == ["unknown"] and report.rounds == 0
    assert not fake.asked


@pytest.mark.parametrize("retries,delay", [(-1, 0.1), (101, 0.1), (True, 0.1), (1, -0.5),
                                           (1, 61)])
def test_bad_retry_settings_are_usage_errors(retries: object, delay: object) -> None:
    with pytest.raises(UsageError):
        migrate_retry.check_retries(retries, delay)


NUMA_MAPS = """\
55d0c0a00000 bind:0 file=/usr/bin/python3.11 mapped=100 N0=100 kernelpagesize_kB=4
55d0c1a00000 bind:0 heap anon=20 dirty=20 N0=20 kernelpagesize_kB=4
7f0000000000 prefer:1 anon=3 dirty=3 N1=3 kernelpagesize_kB=4
7f0000100000 prefer (many):0-1 anon=1 dirty=1 N0=1 kernelpagesize_kB=4
7f0000200000 interleave:0-1 anon=4 dirty=4 N0=2 N1=2 kernelpagesize_kB=4
7f0000300000 interleave=static:0 anon=4 dirty=4 N0=4 kernelpagesize_kB=4
7f0000400000 default anon=1 dirty=1 N0=1 kernelpagesize_kB=4
7f0000500000 local anon=1 dirty=1 N0=1 kernelpagesize_kB=4
7f0000600000 prefer (many):0 anon=1 N0=1 kernelpagesize_kB=4
7ffd00000000 bind=relative:0 stack anon=3 dirty=3 N0=3 kernelpagesize_kB=4
"""


def test_policies_parsed_as_numa_maps_prints_them() -> None:
    ps = policy.parse_numa_maps(NUMA_MAPS, {0x7f0000000000: 0x7f0000001000})
    assert [(p.kind, p.flags, sorted(p.nodes)) for p in ps] == [
        ("bind", "", [0]), ("bind", "", [0]), ("prefer", "", [1]), ("prefer_many", "", [0, 1]),
        ("interleave", "", [0, 1]), ("interleave", "static", [0]), ("default", "", []),
        ("local", "", []), ("prefer_many", "", [0]), ("bind", "relative", [0]),
    ]
    assert ps[0].path == "/usr/bin/python3.11" and ps[1].path == "[heap]"
    assert ps[9].path == "[stack]" and ps[2].end == 0x7f0000001000


def test_only_policies_that_exclude_every_target_warn() -> None:
    ps = policy.parse_numa_maps(NUMA_MAPS)
    to1 = {w.policy for w in policy.policy_warnings(ps, [1])}
    assert to1 == {"bind:0", "interleave=static:0", "prefer (many):0", "bind=relative:0"}
    to0 = [w.policy for w in policy.policy_warnings(ps, [0])]
    assert to0 == ["prefer:1"]  # preferred to another node than the target
    # several targets: only a policy that allows none of them
    assert not policy.policy_warnings(ps, [0, 1])
    warnings = policy.policy_warnings(ps, [1])
    static = next(w for w in warnings if w.policy == "interleave=static:0")
    assert "cpuset" not in static.fix  # a static policy is not rebound by a cpuset
    bind = next(w for w in warnings if w.policy == "bind:0")
    assert "numactl --membind=1" in bind.fix and "cpuset.mems is 1" in bind.fix
    line = policy.warning_line(warnings)
    assert line is not None and "\n" not in line and "5 VMAs" in line and "and 2 more" in line
    assert bind.to_json()["nodes"] == [0] and bind.to_json()["vma"].startswith("0x55d0c0a00000")


def test_migrate_json_has_the_retry_and_policy_keys_and_no_warning_by_default() -> None:
    node = min(numa.topology().online)
    with live_workload(mib=1, threads=0) as w:
        r = ptreloc("migrate", "--pid", str(w.pid), "--from-node", str(node), "--to-node",
                    str(node), "--in-place", "--json", "--retries", "3", check=0)
    data = json.loads(r.stdout)
    assert data["policy_warnings"] == [] and "policy" not in r.stderr
    assert data["data"]["not_migrated"] == 0 and data["data"]["not_migrated_reasons"] == {}
    assert data["data"]["not_migrated_by_class"] == {}
    assert data["data"]["retry"]["retries"] == 3 and data["data"]["retry"]["rounds"] == 0


@pytest.mark.parametrize("args", [["--retries", "-1"], ["--retries", "x"],
                                  ["--retry-delay", "-1"], ["--retries", "101"]])
def test_bad_retry_options_are_one_line_exit_2(args: list[str]) -> None:
    r = ptreloc("migrate", "--pid", "1", "--from-node", "0", "--to-node", "0", "--in-place",
                *args)
    assert r.returncode == 2 and r.stdout == ""
    assert "Traceback" not in r.stderr
