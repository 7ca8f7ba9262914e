"""Memory policies that will undo a migration: read them from /proc/PID/numa_maps and say so.

migrate_pages(2) moves a process's pages; it does not change the process's memory policy.  A
process started under ``numactl --membind=0`` still has MPOL_BIND to node 0 after its data was
moved to node 1: every page it faults in afterwards - and every page table those faults
allocate, since tables come from the faulting task's policy - comes from node 0 again.

/proc/PID/numa_maps prints, per VMA, the policy that applies to it: the VMA's own (mbind(2)) or,
when it has none, the task's (set_mempolicy(2), numactl).  The kernel's mpol_to_str() forms:
``default``, ``local``, ``prefer:N``, ``prefer (many):NODES``, ``bind:NODES``,
``interleave:NODES``, each mode optionally followed by ``=static`` or ``=relative`` (the
MPOL_F_* flag) before the colon.  The nodes shown are the policy's effective nodes.

What each kind does to pages faulted after the move, and when :func:`policy_warnings` warns
(it warns only when the policy keeps new pages off every target node):

* ``default``, ``local``: the faulting CPU's node - no policy stands in the way (where the
  process runs is a CPU placement question: no warning);
* ``bind:S``: only nodes in S - warns when no target is in S;
* ``prefer:N``: node N while it has free memory - warns when N is not a target;
* ``prefer (many):S``: the nodes of S first - warns when no target is in S;
* ``interleave:S``: round-robin over S - warns when no target is in S (with a target and other
  nodes in S, the spread over S is what the policy asks for: no warning).

Another process cannot change a task's or a VMA's policy: the process must be restarted under
a policy that allows the target, or change its own (set_mempolicy(2), mbind(2)); a cpuset whose
``mems`` are changed rebinds non-static policies to the new nodes (cpuset(7)).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ptreloc import numa
from ptreloc.errors import AccessDenied, NoSuchProcess

__all__ = [
    "VmaPolicy",
    "PolicyWarning",
    "parse_policy",
    "read_policies",
    "policy_warnings",
    "warning_line",
]

#: numa_maps mode names -> the short kind this module reasons about
_KINDS = {
    "default": "default",
    "local": "local",
    "prefer": "prefer",
    "prefer (many)": "prefer_many",
    "bind": "bind",
    "interleave": "interleave",
    "weighted interleave": "interleave",  # newer kernels (6.9+)
}


@dataclass(frozen=True)
class VmaPolicy:
    """One numa_maps line's policy: ``[start, end)`` (end from /proc/PID/maps when known)."""

    start: int
    end: int | None
    path: str  # file=..., or "[heap]", "[stack]", "" (anonymous)
    text: str  # the policy as numa_maps prints it, e.g. "bind:0"
    kind: str  # default, local, prefer, prefer_many, bind, interleave, or unknown
    flags: str  # "", "static" or "relative"
    nodes: frozenset[int]


@dataclass(frozen=True)
class PolicyWarning:
    """A VMA whose policy keeps the pages it faults after the move off every target node."""

    start: int
    end: int | None
    path: str
    policy: str
    nodes: frozenset[int]
    why: str
    fix: str

    def to_json(self) -> dict[str, Any]:
        end = hex(self.end) if self.end is not None else None
        return {
            "vma": f"{hex(self.start)}-{end}" if end else hex(self.start),
            "start": hex(self.start),
            "end": end,
            "path": self.path,
            "policy": self.policy,
            "nodes": sorted(self.nodes),
            "why": self.why,
            "fix": self.fix,
        }


@functools.lru_cache(maxsize=256)  # a process's VMAs mostly share a few policies
def parse_policy(text: str) -> tuple[str, str, frozenset[int]]:
    """``bind=static:0-1`` -> ("bind", "static", {0, 1}); unknown forms -> ("unknown", ...)."""
    mode, colon, nodes_text = text.partition(":")
    mode, _, flags = mode.partition("=")
    kind = _KINDS.get(mode, "unknown")
    try:
        nodes = numa.parse_list(nodes_text) if colon and nodes_text else frozenset()
    except ValueError:  # an unparseable node list: say unknown, never raise
        return "unknown", flags, frozenset()
    return kind, flags, nodes


def _path_of(fields: list[str]) -> str:
    for item in fields:
        if item.startswith("file="):
            return item[5:]
        if item in ("heap", "stack"):
            return f"[{item}]"
    return ""


def parse_numa_maps(text: str, ends: dict[int, int] | None = None) -> list[VmaPolicy]:
    """Each numa_maps line -> its VMA's policy (``ends``: start -> end from /proc/PID/maps).

    A line is ``START POLICY [fields...]``; the policy ``prefer (many):S`` holds a space, so
    the policy is everything up to the first field that has ``=`` outside the mode or is
    ``heap``/``stack``."""
    out: list[VmaPolicy] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        try:
            start = int(parts[0], 16)
        except ValueError:
            continue
        two_words = len(parts) > 2 and (
            (parts[1] == "prefer" and parts[2].startswith("(many)"))
            or (parts[1] == "weighted" and parts[2].startswith("interleave")))
        if two_words:
            policy, rest = f"{parts[1]} {parts[2]}", parts[3:]
        else:
            policy, rest = parts[1], parts[2:]
        kind, flags, nodes = parse_policy(policy)
        end = ends.get(start) if ends else None
        out.append(VmaPolicy(start, end, _path_of(rest), policy, kind, flags, nodes))
    return out


def read_policies(pid: int, text: str | None = None,
                  ends: dict[int, int] | None = None) -> list[VmaPolicy]:
    """The policy of every VMA of ``pid`` (/proc/PID/numa_maps, ends from /proc/PID/maps).

    ``text``: that numa_maps as the caller just read it (``ptreloc.numa.read_numa_maps``: the
    kernel walks every page of the process to print it, so migrate reads it once for the
    policies and the snapshot's counts); ``ends``: VMA start -> end from a maps read the caller
    has (a snapshot's VMAs).  Each is read here when None."""
    from ptreloc import proc

    if text is None:
        try:
            with open(f"/proc/{pid}/numa_maps", encoding="ascii", errors="replace") as fh:
                text = fh.read()
        except OSError as err:
            raise proc.proc_error(pid, "numa_maps", err) from err
    if ends is None:
        try:
            ends = {v.start: v.end for v in proc.read_maps(pid)}
        except (NoSuchProcess, AccessDenied):
            ends = {}
    return parse_numa_maps(text, ends)


def _excludes(p: VmaPolicy, targets: frozenset[int]) -> str | None:
    """Why ``p`` keeps new pages off every target node, or None when it does not."""
    if p.nodes & targets or p.kind not in ("bind", "prefer", "prefer_many", "interleave"):
        return None
    nodes = numa.format_nodes(p.nodes)
    if p.kind == "bind" and not p.nodes & targets:
        return f"new pages may come only from node {nodes}"
    if p.kind == "prefer" and p.nodes and not p.nodes & targets:
        return f"new pages come from node {nodes} first (while it has free memory)"
    if p.kind == "prefer_many" and not p.nodes & targets:
        return f"new pages come from node {nodes} first (while they have free memory)"
    if p.kind == "interleave" and not p.nodes & targets:
        return f"new pages are spread over node {nodes} only"
    return None


def _fix(p: VmaPolicy, targets: frozenset[int]) -> str:
    to = numa.format_nodes(targets)
    opt = {"bind": "--membind", "prefer": "--preferred", "prefer_many": "--preferred-many",
           "interleave": "--interleave"}.get(p.kind, "--membind")
    text = (
        f"restart the process under a policy that allows node {to} (e.g. numactl {opt}={to}), "
        f"or have it call set_mempolicy(2)/mbind(2) itself - no other process can change it"
    )
    if p.flags != "static":
        text += f"; or move it to a cpuset whose cpuset.mems is {to} (the kernel rebinds it)"
    return text


def policy_warnings(policies: Iterable[VmaPolicy], targets: Iterable[int]) -> list[PolicyWarning]:
    """A warning for each VMA whose policy keeps the pages it faults after the move (and the
    page tables those faults allocate) off every node of ``targets`` (module doc)."""
    to = frozenset(targets)
    to_text = numa.format_nodes(to)
    out: list[PolicyWarning] = []
    # a process under numactl has the same policy on every VMA: word each one once
    said: dict[tuple[str, str, frozenset[int]], tuple[str | None, str]] = {}
    for p in policies:
        key = (p.kind, p.flags, p.nodes)
        if key not in said:
            why = _excludes(p, to)
            said[key] = (why, _fix(p, to) if why is not None else "")
        why, fix = said[key]
        if why is None:
            continue
        out.append(PolicyWarning(
            p.start, p.end, p.path, p.text, p.nodes,
            f"policy {p.text} excludes node {to_text}: {why} (and, when it is "
            f"the task's policy - numactl sets that one - so do the page tables its faults "
            f"allocate): the move is undone as the process runs",
            fix,
        ))
    return out


def warning_line(warnings: list[PolicyWarning], *, shown: int = 3) -> str | None:
    """One stderr line for all warnings: the policies, the first few VMAs, the fix."""
    if not warnings:
        return None

    def name(w: PolicyWarning) -> str:
        rng = f"{w.start:#x}-{w.end:#x}" if w.end is not None else f"{w.start:#x}"
        return f"{rng} {w.path or '(anon)'}"

    vmas = ", ".join(name(w) for w in warnings[:shown])
    more = f" and {len(warnings) - shown} more" if len(warnings) > shown else ""
    first = warnings[0]
    other = sorted({w.policy for w in warnings} - {first.policy})
    also = f" (also: {', '.join(other)})" if other else ""
    return (
        f"{len(warnings)} VMA{'s' if len(warnings) != 1 else ''} ({vmas}{more}): {first.why}"
        f"{also}; fix: {first.fix} (JSON: policy_warnings)"
    )
