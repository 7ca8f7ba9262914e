"""Retry, with move_pages(2), the pages migrate_pages(2) could not move for now.

migrate_pages(2) returns only a count of the pages it could not move; numactl's migratepages
exits 0 and leaves them.  Many such failures are transient: the kernel isolated the page but
found references it did not expect (a pin - vmsplice(2) into a pipe, O_DIRECT or other
get_user_pages I/O in flight - or a lock held a moment), retried it ten times and gave up; or
the page was off the LRU for a moment (isolated by compaction or reclaim: -EBUSY).

:func:`retry_pages` moves the pages that are still on a source node to their target with
move_pages(2), up to ``retries`` rounds, waiting ``delay_s`` before the first and twice as long
before each next one; after each round a move_pages query says where every page is.

Reasons (per page, the last seen):

* a negative per-page status the kernel wrote in the round (``EFAULT``, ``ENOENT``,
  ``EACCES`` ...): **permanent** ones are not retried (the page is gone, not mapped, shared
  without MPOL_MF_MOVE_ALL, its file system cannot migrate it ...);
* ``EBUSY`` (the page was not on the LRU) and ``EAGAIN`` are **transient**: retried.
  ``EAGAIN`` is the kernel's internal reason for a page it isolated but could not migrate
  (extra references); move_pages only *counts* such pages in its return value (6.1 writes no
  status for them), so it is inferred here: the page is still on a source node after a round
  that returned a positive count or wrote nothing negative for it;
* ``unknown``: with ``retries=0`` nothing was asked beyond migrate_pages' count.

Flags as migrate_pages(2) uses them: MPOL_MF_MOVE_ALL with CAP_SYS_NICE (pages shared with
other processes move too), MPOL_MF_MOVE otherwise.
"""

from __future__ import annotations

import errno
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ptreloc import numa, proc
from ptreloc.errors import SyscallError, UsageError

__all__ = [
    "DEFAULT_RETRIES",
    "DEFAULT_RETRY_DELAY_S",
    "MAX_RETRIES",
    "TRANSIENT",
    "RetryReport",
    "check_retries",
    "page_class",
    "retry_pages",
]

DEFAULT_RETRIES = 5
DEFAULT_RETRY_DELAY_S = 0.02
MAX_RETRIES = 100
#: per-page failures worth another try: the page is busy now, not gone or forbidden
TRANSIENT = frozenset({"EBUSY", "EAGAIN"})
_CAP_SYS_NICE = 23


def check_retries(retries: object, delay_s: object) -> None:
    """UsageError unless 0 <= retries <= MAX_RETRIES and 0 <= delay_s <= 60."""
    if isinstance(retries, bool) or not isinstance(retries, int) or not (
        0 <= retries <= MAX_RETRIES
    ):
        raise UsageError(f"retries must be 0..{MAX_RETRIES}, not {retries!r}")
    if isinstance(delay_s, bool) or not isinstance(delay_s, int | float) or not (
        0 <= delay_s <= 60
    ):
        raise UsageError(f"retry delay must be 0..60 seconds, not {delay_s!r}")


def page_class(vma: proc.Vma | None) -> str:
    """The class of a page by its VMA: anon (incl. [heap], [stack]), shmem, file, other."""
    if vma is None:
        return "other"
    path = vma.path
    if not path or path in ("[heap]", "[stack]") or path.startswith("[anon"):
        return "anon"
    if path.startswith(("/dev/shm/", "/memfd:", "/SYSV", "/dev/zero")):
        return "shmem"
    if path.startswith("/"):
        return "file"
    return "other"


@dataclass
class RetryReport:
    """``data.retry``: what the retries did."""

    retries: int  # the bound (rounds allowed)
    delay_s: float  # wait before the first round (doubled each round)
    rounds: int = 0  # move_pages rounds run
    pages_retried: int = 0  # distinct pages given to move_pages at least once
    recovered: int = 0  # of those, on a target node at the end
    not_retried: dict[str, int] = field(default_factory=dict)  # permanent reason -> pages
    rounds_detail: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "retries": self.retries,
            "delay_s": self.delay_s,
            "rounds": self.rounds,
            "pages_retried": self.pages_retried,
            "recovered": self.recovered,
            "transient_reasons": sorted(TRANSIENT),
            "not_retried": dict(sorted(self.not_retried.items())),
            "rounds_detail": self.rounds_detail,
        }


def _status_name(status: int) -> str:
    return errno.errorcode.get(-status, str(-status))


def _move_flags() -> int:
    privileged = proc.cap_effective() >> _CAP_SYS_NICE & 1
    return numa.MPOL_MF_MOVE_ALL if privileged else numa.MPOL_MF_MOVE


def retry_pages(
    pid: int,
    addresses: Sequence[int],
    targets: Sequence[int],
    sources: frozenset[int],
    *,
    retries: int = DEFAULT_RETRIES,
    delay_s: float = DEFAULT_RETRY_DELAY_S,
    backend: str | numa.NumaBackend | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[list[int], list[str], RetryReport]:
    """Move ``addresses`` (pages still on a node of ``sources``) to ``targets`` (one node per
    page) with move_pages, up to ``retries`` rounds (module doc).

    Returns (where each page is at the end - a node or a negative errno, as a move_pages
    query says; the reason each page that is still on a source node failed, "" for the others;
    the report)."""
    check_retries(retries, delay_s)
    n = len(addresses)
    report = RetryReport(retries, float(delay_s))
    where = [-errno.ENOENT] * n  # every entry is replaced by a query below
    reasons = ["unknown"] * n
    if not n or not retries:
        if n:
            where = list(numa.move_pages(pid, list(addresses), backend=backend))
            reasons = ["unknown" if w in sources else "" for w in where]
        return where, reasons, report
    impl = numa.backend(backend)
    flags = _move_flags()
    todo = list(range(n))
    retried: set[int] = set()
    wait = float(delay_s)
    for _ in range(retries):
        if not todo:
            break
        sleep(wait)
        wait *= 2
        report.rounds += 1
        retried.update(todo)
        addrs = [addresses[i] for i in todo]
        nodes = [targets[i] for i in todo]
        status: list[int] = []
        counted = 0
        for start in range(0, len(addrs), numa.MOVE_PAGES_BATCH):
            chunk = addrs[start:start + numa.MOVE_PAGES_BATCH]
            try:
                rc, st = impl.move_pages(pid, chunk, nodes[start:start + len(chunk)], flags)
            except SyscallError as err:
                raise numa._translate(err, "move_pages", pid, set(nodes)) from err
            counted += max(rc, 0)
            status.extend(st)
        now = numa.move_pages(pid, addrs, backend=impl)
        left: list[int] = []
        seen: Counter[str] = Counter()
        for k, i in enumerate(todo):
            where[i] = now[k]
            if now[k] not in sources:
                reasons[i] = "" if now[k] >= 0 else _status_name(now[k])
                if now[k] < 0:
                    seen[reasons[i]] += 1
                continue
            # still on a source node: the kernel's per-page status when it wrote an error,
            # else a page it isolated and counted as not migrated (module doc: EAGAIN)
            reasons[i] = _status_name(status[k]) if status[k] < 0 else "EAGAIN"
            seen[reasons[i]] += 1
            if reasons[i] in TRANSIENT:
                left.append(i)
        report.rounds_detail.append({"pages": len(todo), "still_failed": len(left),
                                     "move_pages_counted": counted, "reasons": dict(seen)})
        todo = left
    report.pages_retried = len(retried)
    report.recovered = sum(1 for i in retried if where[i] >= 0 and where[i] not in sources)
    report.not_retried = dict(Counter(r for r in reasons if r and r not in TRANSIENT))
    return where, reasons, report
