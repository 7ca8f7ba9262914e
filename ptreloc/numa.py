"""The real NUMA layer: topology, numactl-style node lists, and the kernel's placement calls.

Nothing here needs the compiled C core.  The calls go through a *backend*
(ptreloc._native.numa_abi): libnuma loaded at run time (cffi ABI mode) or raw syscalls through
libc's syscall(2).  Choosing one is this module's policy: automatic (libnuma when it loads and
reports NUMA available), or forced with the ``backend=`` parameter of every call or the
environment variable PTRELOC_NUMA_BACKEND=libnuma|syscall|auto.

Kernel errors become ``ptreloc.errors`` exceptions whose message says what to do:
ESRCH -> NoSuchProcess, EPERM -> AccessDenied (privilege), EACCES -> AccessDenied (cpuset, with the
process's Mems_allowed), EINVAL/ENODEV -> InvalidNode, anything else -> SyscallError.
"""

from __future__ import annotations

import errno
import mmap
import os
import pathlib
import platform
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ptreloc._native import numa_abi
from ptreloc.errors import (
    AccessDenied,
    InvalidNode,
    NoSuchProcess,
    SyscallError,
    UsageError,
)

__all__ = [
    # policy modes and flags (linux/mempolicy.h)
    "MPOL_DEFAULT",
    "MPOL_PREFERRED",
    "MPOL_BIND",
    "MPOL_INTERLEAVE",
    "MPOL_LOCAL",
    "MPOL_PREFERRED_MANY",
    "MPOL_F_STATIC_NODES",
    "MPOL_F_RELATIVE_NODES",
    "MPOL_F_NUMA_BALANCING",
    "MPOL_F_NODE",
    "MPOL_F_ADDR",
    "MPOL_F_MEMS_ALLOWED",
    "MPOL_MF_STRICT",
    "MPOL_MF_MOVE",
    "MPOL_MF_MOVE_ALL",
    "PAGE_SIZE",
    "MOVE_PAGES_BATCH",
    "NodeSpec",
    "NodeInfo",
    "Topology",
    "MemPolicy",
    "NumaBackend",
    "BACKEND_ENV",
    "SYSCALL_NUMBERS",
    "kernel_nodemask_bits",
    "check_pid",
    "topology",
    "parse_nodes",
    "format_nodes",
    "parse_list",
    "backend",
    "backend_names",
    "migrate_pages",
    "move_pages",
    "page_status_name",
    "mbind",
    "get_mempolicy",
    "page_node",
    "process_mems_allowed",
    "numa_maps_node_pages",
    "read_numa_maps",
    "node_meminfo_kb",
    "node_page_tables_kb",
    "vmstat_lag_pages",
    "buffer_address",
]

MPOL_DEFAULT = 0
MPOL_PREFERRED = 1
MPOL_BIND = 2
MPOL_INTERLEAVE = 3
MPOL_LOCAL = 4
MPOL_PREFERRED_MANY = 5
_MODE_NAMES = {
    MPOL_DEFAULT: "default",
    MPOL_PREFERRED: "preferred",
    MPOL_BIND: "bind",
    MPOL_INTERLEAVE: "interleave",
    MPOL_LOCAL: "local",
    MPOL_PREFERRED_MANY: "preferred_many",
    6: "weighted_interleave",
}
# mode flags, OR'd into the mode argument of mbind/set_mempolicy and returned by get_mempolicy
MPOL_F_STATIC_NODES = 1 << 15
MPOL_F_RELATIVE_NODES = 1 << 14
MPOL_F_NUMA_BALANCING = 1 << 13
_MODE_FLAGS = MPOL_F_STATIC_NODES | MPOL_F_RELATIVE_NODES | MPOL_F_NUMA_BALANCING
# get_mempolicy flags
MPOL_F_NODE = 1 << 0
MPOL_F_ADDR = 1 << 1
MPOL_F_MEMS_ALLOWED = 1 << 2
# mbind / move_pages flags
MPOL_MF_STRICT = 1 << 0
MPOL_MF_MOVE = 1 << 1
MPOL_MF_MOVE_ALL = 1 << 2

PAGE_SIZE = mmap.PAGESIZE
#: move_pages(2) is called with at most this many pages at a time, so a GiB-sized query never
#: needs more than a few hundred KiB of C arrays at once.
MOVE_PAGES_BATCH = 16384

_PID_MAX = 2**22  # PID_MAX_LIMIT on 64-bit: no pid can be larger
_SYSFS_NODE = pathlib.Path("/sys/devices/system/node")

#: What a user may pass where nodes are expected: a numactl node string or node numbers.
NodeSpec = str | Iterable[int]

_SYNTAX_HINT = "node lists look like 0, 1,3, 0-3,5, all or !1"


# --------------------------------------------------------------------------------------------
# Lists in the kernel's and numactl's syntax
# --------------------------------------------------------------------------------------------

_RANGE = re.compile(r"([0-9]+)(?:-([0-9]+))?")


def parse_list(text: str) -> frozenset[int]:
    """Parse a kernel list such as /sys's ``0-3,8`` (empty text is the empty set)."""
    out: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        match = _RANGE.fullmatch(part)
        if match is None:
            raise ValueError(f"not a kernel list: {text!r}")
        low = int(match.group(1))
        high = int(match.group(2) or low)
        out.update(range(low, high + 1))
    return frozenset(out)


def format_nodes(nodes: Iterable[int]) -> str:
    """The shortest numactl-style string for ``nodes``: {0,1,2,3,5} -> ``0-3,5``."""
    ordered = sorted(set(nodes))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


# --------------------------------------------------------------------------------------------
# Topology
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeInfo:
    """One online node as /sys/devices/system/node/nodeN describes it."""

    node: int
    cpus: frozenset[int]
    memory_total: int  # bytes (MemTotal of nodeN/meminfo)
    memory_free: int  # bytes (MemFree)
    distances: dict[int, int] = field(default_factory=dict)  # node -> SLIT distance

    @property
    def has_memory(self) -> bool:
        return self.memory_total > 0

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "cpus": sorted(self.cpus),
            "memory_total_bytes": self.memory_total,
            "memory_free_bytes": self.memory_free,
            "memory_total_mb": self.memory_total >> 20,
            "memory_free_mb": self.memory_free >> 20,
            "distances": {str(k): v for k, v in sorted(self.distances.items())},
        }


@dataclass(frozen=True)
class Topology:
    """The machine's NUMA layout.  ``nodes`` holds the online nodes only."""

    possible: frozenset[int]
    online: frozenset[int]
    with_memory: frozenset[int]
    with_cpus: frozenset[int]
    nodes: dict[int, NodeInfo]

    def distance(self, a: int, b: int) -> int:
        return self.nodes[a].distances[b]

    def node_of_cpu(self, cpu: int) -> int | None:
        for info in self.nodes.values():
            if cpu in info.cpus:
                return info.node
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "possible": sorted(self.possible),
            "online": sorted(self.online),
            "with_memory": sorted(self.with_memory),
            "with_cpus": sorted(self.with_cpus),
            "nodes": [self.nodes[n].to_json() for n in sorted(self.nodes)],
        }


def _read(path: pathlib.Path) -> str:
    return path.read_text(encoding="ascii").strip()


def _meminfo_bytes(path: pathlib.Path, node: int | None) -> tuple[int, int]:
    """(MemTotal, MemFree) in bytes from a node's meminfo (``Node 0 MemTotal: N kB``) or
    /proc/meminfo (``MemTotal: N kB``)."""
    values: dict[str, int] = {}
    prefix = f"Node {node} " if node is not None else ""
    for line in path.read_text(encoding="ascii").splitlines():
        if not line.startswith(prefix):
            continue
        key, _, rest = line[len(prefix) :].partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            values[key.strip()] = int(fields[0]) * 1024
    return values.get("MemTotal", 0), values.get("MemFree", 0)


def topology(sysfs_node_dir: str | os.PathLike[str] = _SYSFS_NODE) -> Topology:
    """Read the topology from /sys/devices/system/node (or a copy of that tree).

    A kernel without CONFIG_NUMA has no such directory: that is reported as one node 0 holding
    every CPU and all of /proc/meminfo, which is how the kernel itself treats it.
    """
    root = pathlib.Path(sysfs_node_dir)
    if not (root / "online").is_file():
        cpus = frozenset(os.sched_getaffinity(0)) | parse_list(
            _read(pathlib.Path("/sys/devices/system/cpu/online"))
        )
        total, free = _meminfo_bytes(pathlib.Path("/proc/meminfo"), None)
        one = frozenset({0})
        return Topology(one, one, one, one, {0: NodeInfo(0, cpus, total, free, {0: 10})})

    def state(name: str) -> frozenset[int]:
        path = root / name
        return parse_list(_read(path)) if path.is_file() else frozenset()

    online = state("online")
    nodes: dict[int, NodeInfo] = {}
    ordered = sorted(online)
    for node in ordered:
        node_dir = root / f"node{node}"
        total, free = _meminfo_bytes(node_dir / "meminfo", node)
        # nodeN/distance lists the distance to every online node, in node order
        row = [int(x) for x in _read(node_dir / "distance").split()]
        nodes[node] = NodeInfo(
            node=node,
            cpus=parse_list(_read(node_dir / "cpulist")),
            memory_total=total,
            memory_free=free,
            distances=dict(zip(ordered, row, strict=False)),
        )
    with_memory = (
        state("has_memory")
        if (root / "has_memory").is_file()
        else frozenset(n for n, info in nodes.items() if info.has_memory)
    )
    return Topology(
        possible=state("possible") or online,
        online=online,
        with_memory=with_memory,
        with_cpus=state("has_cpu") or frozenset(n for n, i in nodes.items() if i.cpus),
        nodes=nodes,
    )


def node_states(sysfs_node_dir: str | os.PathLike[str] = _SYSFS_NODE
                ) -> tuple[frozenset[int], frozenset[int]]:
    """(online nodes, nodes with memory): what :func:`topology` says of them, from two small
    sysfs files and without reading every node's meminfo (~1 ms) - for the per-snapshot path."""
    root = pathlib.Path(sysfs_node_dir)
    if not (root / "online").is_file() or not (root / "has_memory").is_file():
        topo = topology(sysfs_node_dir)
        return topo.online, topo.with_memory
    return parse_list(_read(root / "online")), parse_list(_read(root / "has_memory"))


def cpu_node(cpu: int) -> int | None:
    """The node of CPU ``cpu`` (its /sys/devices/system/cpu/cpuN/nodeM link), None when
    unknown; what ``topology().node_of_cpu(cpu)`` says, without reading the whole topology."""
    try:
        names = os.listdir(f"/sys/devices/system/cpu/cpu{int(cpu)}")
    except (OSError, ValueError):
        return topology().node_of_cpu(cpu) if cpu >= 0 else None
    for name in names:
        if name.startswith("node") and name[4:].isdigit():
            return int(name[4:])
    return topology().node_of_cpu(cpu)


# --------------------------------------------------------------------------------------------
# numactl node strings
# --------------------------------------------------------------------------------------------


def _check_node(node: int, topo: Topology, need_memory: bool, shown: str) -> None:
    here = format_nodes(topo.online) or "none"
    if node not in topo.possible:
        more = (
            "; for more nodes use the multi-node guest, scripts/numa-vm --nodes 2"
            if len(topo.possible) == 1
            else ""
        )
        raise InvalidNode(f"node {node} does not exist here (nodes: {here}){more}", node=node)
    if node not in topo.online:
        raise InvalidNode(f"node {node} is offline (online nodes: {here})", node=node)
    if need_memory and node not in topo.with_memory:
        with_mem = format_nodes(topo.with_memory) or "none"
        raise InvalidNode(
            f"node {node} has no memory, so pages cannot be placed there "
            f"(nodes with memory: {with_mem})", node=node
        )


def parse_nodes(
    text: str, topology: Topology | None = None, *, need_memory: bool = False
) -> frozenset[int]:
    """Parse a node list exactly as numactl takes it: ``0``, ``1,3``, ``0-3,5``, ``all``, ``!1``,
    ``!0-1``.

    ``all`` means every online node (with memory, when ``need_memory``); ``!list`` means all
    of those except the list.  Every named node must exist, be online, and, with
    ``need_memory``, have memory.  Raises InvalidNode (exit code 2) with one line naming the
    problem; a result that would be empty is an error too.
    """
    topo = topology if topology is not None else _read_topology()
    shown = text
    body = text.strip()
    if not body:
        raise InvalidNode(f"empty node list: {_SYNTAX_HINT}")
    invert = body.startswith("!")
    if invert:
        body = body[1:]
    everything = topo.online & topo.with_memory if need_memory else topo.online
    named: set[int] = set()
    if body == "all":
        named = set(everything)
    else:
        if not body:
            raise InvalidNode(f"node list {shown!r} has nothing after '!': {_SYNTAX_HINT}")
        for part in body.split(","):
            match = _RANGE.fullmatch(part)
            if match is None:
                if not part:
                    problem = f"node list {shown!r} has an empty item"
                elif part == body:
                    problem = f"{shown!r} is not a node list"
                else:
                    problem = f"node list {shown!r}: {part!r} is not a node number or a range"
                raise InvalidNode(f"{problem}: {_SYNTAX_HINT}")
            low = int(match.group(1))
            high = int(match.group(2)) if match.group(2) is not None else low
            if high < low:
                raise InvalidNode(
                    f"node list {shown!r} has a reversed range {part} (write {high}-{low})"
                )
            for node in (low, high):
                _check_node(node, topo, need_memory, shown)
            for node in range(low, high + 1):
                _check_node(node, topo, need_memory, shown)
                named.add(node)
    result = frozenset(everything - named) if invert else frozenset(named)
    if not result:
        raise InvalidNode(
            f"node list {shown!r} selects no node (online nodes: "
            f"{format_nodes(everything) or 'none'})"
        )
    return result


def _resolve(spec: NodeSpec, topo: Topology | None, need_memory: bool) -> frozenset[int]:
    """Node string or node numbers -> validated node set (topology read lazily, once)."""
    if isinstance(spec, str):
        return parse_nodes(spec, topo, need_memory=need_memory)
    nodes = frozenset(spec)
    for node in nodes:
        if isinstance(node, bool) or not isinstance(node, int):
            raise InvalidNode(f"node {node!r} is not a node number")
    if not nodes:
        raise InvalidNode(f"empty node list: {_SYNTAX_HINT}")
    topo = topo if topo is not None else topology()
    for node in sorted(nodes):
        _check_node(node, topo, need_memory, format_nodes(nodes))
    return nodes


# --------------------------------------------------------------------------------------------
# Backends and kernel errors
# --------------------------------------------------------------------------------------------


#: Syscall numbers per architecture, from the kernel's tables
#: (arch/x86/entry/syscalls/syscall_64.tbl; include/uapi/asm-generic/unistd.h for arm64).
SYSCALL_NUMBERS: dict[str, dict[str, int]] = {
    "x86_64": {"mbind": 237, "get_mempolicy": 239, "migrate_pages": 256, "move_pages": 279},
    "aarch64": {"mbind": 235, "get_mempolicy": 236, "migrate_pages": 238, "move_pages": 239},
}

#: Environment variable that forces a backend: "libnuma", "syscall" or "auto".
BACKEND_ENV = "PTRELOC_NUMA_BACKEND"
BACKEND_NAMES = ("libnuma", "syscall")

def kernel_nodemask_bits() -> int:
    """Bits in the kernel's nodemask_t (MAX_NUMNODES), read from our own Mems_allowed line.

    The kernel prints the whole nodemask there as comma-separated 32-bit words; passing a mask of
    exactly that size is what get_mempolicy(2) needs (maxnode must cover nr_node_ids).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Mems_allowed:"):
                    words = line.split(":", 1)[1].strip().split(",")
                    bits = 32 * len(words)
                    # round up to whole longs: the kernel copies longs
                    return -(-bits // numa_abi.BITS_PER_LONG) * numa_abi.BITS_PER_LONG
    except OSError:
        pass
    return 1024  # x86-64 distribution kernels: CONFIG_NODES_SHIFT=10


class NumaBackend(Protocol):
    """What ptreloc.numa needs from a way of reaching the kernel's NUMA calls.

    Every method raises ``ptreloc.errors.SyscallError`` (with ``.errno``) when the kernel says
    no; ptreloc.numa turns that into the specific exception with the context a user needs.
    """

    name: str
    nodemask_bits: int

    def migrate_pages(self, pid: int, from_nodes: Iterable[int], to_nodes: Iterable[int]) -> int:
        """migrate_pages(2): returns the number of pages that could not be moved."""
        ...

    def move_pages(
        self, pid: int, addresses: Sequence[int], nodes: Sequence[int] | None, flags: int
    ) -> tuple[int, list[int]]:
        """move_pages(2) for one batch: (return value, per-page status)."""
        ...

    def mbind(self, addr: int, length: int, mode: int, nodes: Iterable[int], flags: int) -> None:
        """mbind(2)."""
        ...

    def get_mempolicy(self, addr: int | None, flags: int) -> tuple[int, frozenset[int]]:
        """get_mempolicy(2): (mode -- or node with MPOL_F_NODE, node mask)."""
        ...


_backends: dict[str, NumaBackend] = {}
_backends_lock = threading.Lock()


def _make_backend(name: str) -> NumaBackend:
    if name == "libnuma":
        try:
            return numa_abi.LibnumaBackend()
        except SyscallError as err:
            raise SyscallError(f"{err}; or set {BACKEND_ENV}=syscall", err.errno or 0,
                               call=err.call) from err
    machine = platform.machine()
    if machine not in SYSCALL_NUMBERS:
        raise SyscallError(
            f"raw NUMA syscalls: no syscall numbers for architecture {machine}; "
            f"install libnuma1 and use the libnuma backend"
        )
    return numa_abi.SyscallBackend(SYSCALL_NUMBERS[machine], kernel_nodemask_bits())


def _get_backend(name: str) -> NumaBackend:
    if name not in _backends:
        _backends[name] = _make_backend(name)
    return _backends[name]


def _backend(name: str | NumaBackend | None) -> NumaBackend:
    """``name``, else $PTRELOC_NUMA_BACKEND, else automatic (libnuma when it loads and
    numa_available() >= 0, raw syscalls otherwise).  Instances are cached."""
    if name is not None and not isinstance(name, str):
        return name
    choice = (name or os.environ.get(BACKEND_ENV) or "auto").strip().lower()
    if choice not in (*BACKEND_NAMES, "auto"):
        where = "backend" if name else BACKEND_ENV
        raise UsageError(f"unknown NUMA {where} {choice!r}: use libnuma, syscall or auto")
    with _backends_lock:
        if choice == "auto":
            try:
                return _get_backend("libnuma")
            except SyscallError:
                return _get_backend("syscall")
        return _get_backend(choice)


def backend(name: str | NumaBackend | None = None) -> NumaBackend:
    """The backend a call uses: a backend object, ``"libnuma"``, ``"syscall"``, ``"auto"``, or
    None for $PTRELOC_NUMA_BACKEND / automatic."""
    return _backend(name)


def backend_names() -> tuple[str, ...]:
    return BACKEND_NAMES


def process_mems_allowed(pid: int) -> frozenset[int]:
    """Nodes the process may allocate on (its cpuset), from /proc/PID/status Mems_allowed_list."""
    check_pid(pid)
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Mems_allowed_list:"):
                    return parse_list(line.split(":", 1)[1])
    except FileNotFoundError as err:
        raise NoSuchProcess(f"no process with pid {pid}", pid=pid) from err
    except PermissionError as err:
        raise AccessDenied(f"cannot read /proc/{pid}/status: needs the same user or root",
                           pid=pid, path=f"/proc/{pid}/status") from err
    raise SyscallError(
        f"/proc/{pid}/status has no Mems_allowed_list line (kernel without cpusets?)"
    )


def check_pid(pid: object, *, allow_self: bool = False) -> int:
    """``pid`` if it can name a process, else the exception to give the user.

    Pid 0 is not a process: for a target given by a user (snapshot, migrate, watch, /proc reads)
    it is a UsageError.  Only the NUMA system calls accept it (``allow_self=True``), because
    there the kernel defines pid 0 as the calling process.  UsageError for a non-number or a
    negative number, NoSuchProcess above PID_MAX_LIMIT (no process can have such a pid)."""
    if isinstance(pid, bool) or not isinstance(pid, int):
        raise UsageError(f"pid must be a number, not {pid!r}")
    if pid < 0 or (pid == 0 and not allow_self):
        raise UsageError(f"pid {pid} is not a process id: give a positive number", pid=pid)
    if pid > _PID_MAX:
        raise NoSuchProcess(f"no process with pid {pid} (pids on Linux are at most {_PID_MAX})",
                            pid=pid)
    return pid


def _translate(err: SyscallError, call: str, pid: int, nodes: Iterable[int] = ()) -> Exception:
    """A backend's SyscallError -> the exception (and message) a user can act on."""
    who = "this process" if pid == 0 else f"pid {pid}"
    shown = format_nodes(nodes) or "(none)"
    code = err.errno or 0
    node_list = sorted(nodes)
    # the node a caller can act on, when the call was about one
    one = node_list[0] if len(node_list) == 1 else None
    if code == errno.ESRCH:
        return NoSuchProcess(f"no process with pid {pid} (it does not exist or has exited)",
                             pid=pid)
    if code == errno.EPERM:
        return AccessDenied(
            f"{call} on {who} refused (EPERM): moving another user's pages needs CAP_SYS_NICE "
            f"or the same user; run as root", pid=pid
        )
    if code == errno.EACCES:
        try:
            allowed = format_nodes(process_mems_allowed(pid or os.getpid())) or "none"
        except (NoSuchProcess, AccessDenied, SyscallError, UsageError):
            allowed = "unknown"
        return AccessDenied(
            f"{call}: node {shown} is outside {who}'s cpuset (Mems_allowed: {allowed}); "
            f"choose nodes from Mems_allowed or widen the cpuset", pid=pid, node=one
        )
    if code in (errno.EINVAL, errno.ENODEV):
        try:
            topo = topology()
            here = f"online nodes with memory: {format_nodes(topo.with_memory & topo.online)}"
        except OSError:
            here = "see 'ptreloc nodes'"
        return InvalidNode(f"{call}: node {shown} is not online or has no memory ({here})",
                           pid=pid, node=one)
    if code == errno.ENOMEM:
        return SyscallError(f"{call}: out of memory on node {shown}", code, pid=pid, node=one,
                            call=call)
    if code == errno.EFAULT:
        return SyscallError(f"{call}: an address is not mapped in {who}", code, pid=pid, call=call)
    if code == errno.ENOSYS:
        return SyscallError(
            f"{call}: this kernel has no NUMA support (built without CONFIG_NUMA)", code,
            call=call,
        )
    return SyscallError(str(err), code, pid=pid, call=call)


# --------------------------------------------------------------------------------------------
# The calls
# --------------------------------------------------------------------------------------------


def migrate_pages(
    pid: int,
    from_nodes: NodeSpec,
    to_nodes: NodeSpec,
    *,
    backend: str | NumaBackend | None = None,
    check_nodes: bool = True,
) -> int:
    """Move all of process ``pid``'s pages on ``from_nodes`` to ``to_nodes`` (migrate_pages(2)).

    ``pid`` 0 is the calling process.  Node lists may be numactl strings.  Returns the number of
    pages the kernel could not move.  ``check_nodes=False`` skips ptreloc's own validation and
    lets the kernel judge (its EINVAL still becomes InvalidNode).
    """
    check_pid(pid, allow_self=True)
    topo = None if not check_nodes else topology()
    if check_nodes:
        old = _resolve(from_nodes, topo, need_memory=False)
        new = _resolve(to_nodes, topo, need_memory=True)
    else:
        old = _syntax_only(from_nodes)
        new = _syntax_only(to_nodes)
    impl = _backend(backend)
    try:
        return impl.migrate_pages(pid, old, new)
    except SyscallError as err:
        raise _translate(err, "migrate_pages", pid, new) from err


def _syntax_only(spec: NodeSpec) -> frozenset[int]:
    """Syntax only, no topology check (for ``check_nodes=False``)."""
    return parse_list(spec) if isinstance(spec, str) else frozenset(spec)


_PAGE_ERRORS = {
    errno.ENOENT: "not present (never touched, or swapped out)",
    errno.EFAULT: "not mapped, the shared zero page, or (older kernels, e.g. 6.1) never touched",
    errno.EACCES: "mapped by several processes (needs MPOL_MF_MOVE_ALL)",
    errno.EBUSY: "busy (under I/O or pinned), cannot move now",
    errno.ENOMEM: "no memory on the target node",
    errno.EIO: "could not be written back",
    errno.EINVAL: "dirty page its filesystem cannot migrate",
    errno.E2BIG: "part of a huge page that was split or already handled",
}


def page_status_name(status: int) -> str:
    """Decode one move_pages(2) status: ``node 1`` or ``-ENOENT: not present ...``."""
    if status >= 0:
        return f"node {status}"
    code = -status
    name = errno.errorcode.get(code, str(code))
    return f"-{name}: {_PAGE_ERRORS.get(code, os.strerror(code))}"


def move_pages(
    pid: int,
    addresses: Sequence[int],
    nodes: int | Sequence[int] | None = None,
    *,
    flags: int = MPOL_MF_MOVE,
    backend: str | NumaBackend | None = None,
    batch: int = MOVE_PAGES_BATCH,
    check_nodes: bool = True,
) -> list[int]:
    """move_pages(2) on process ``pid`` (0: this process), in batches of ``batch`` pages.

    ``nodes`` None is query mode: each status is the node the page is on now, or a negative
    errno (-ENOENT not present, -EFAULT not mapped ...; see page_status_name).  ``nodes`` an int
    moves every page there; a sequence gives one target per address.  In move mode the status
    is the page's new node or the reason it did not move.  ``check_nodes=False`` leaves judging
    the target nodes to the kernel.
    """
    check_pid(pid, allow_self=True)
    if batch < 1:
        raise UsageError(f"move_pages batch must be at least 1, not {batch}")
    targets: Sequence[int] | None
    if nodes is None:
        targets = None
    else:
        wanted = [nodes] if isinstance(nodes, int) else list(nodes)
        if wanted and check_nodes:
            _resolve(wanted, None, need_memory=True)
        targets = [nodes] * len(addresses) if isinstance(nodes, int) else list(nodes)
        if len(targets) != len(addresses):
            raise UsageError(
                f"move_pages: {len(addresses)} addresses but {len(targets)} target nodes"
            )
    impl = _backend(backend)
    out: list[int] = []
    for start in range(0, len(addresses), batch):
        chunk = addresses[start : start + batch]
        chunk_nodes = None if targets is None else targets[start : start + batch]
        try:
            _rc, status = impl.move_pages(pid, chunk, chunk_nodes, flags if targets else 0)
        except SyscallError as err:
            raise _translate(err, "move_pages", pid, set(chunk_nodes or ())) from err
        out.extend(status)
    return out


def _mode_number(mode: int | str) -> int:
    if isinstance(mode, str):
        for number, name in _MODE_NAMES.items():
            if name == mode.lower():
                return number
        raise UsageError(f"unknown memory policy {mode!r}: use {', '.join(_MODE_NAMES.values())}")
    return mode


def mbind(
    addr: int,
    length: int,
    mode: int | str,
    nodes: NodeSpec = (),
    flags: int = 0,
    *,
    backend: str | NumaBackend | None = None,
) -> None:
    """Set the memory policy of ``[addr, addr + length)`` in this process (mbind(2)).

    ``mode`` is an MPOL_* number (mode flags may be OR'd in) or a name (``"bind"``,
    ``"preferred"``, ``"interleave"``, ``"default"``, ``"local"``); ``flags`` MPOL_MF_*.
    """
    if addr % PAGE_SIZE:
        raise UsageError(f"mbind: address {addr:#x} is not page aligned ({PAGE_SIZE} bytes)")
    if length <= 0:
        raise UsageError(f"mbind: length must be positive, not {length}")
    number = _mode_number(mode)
    base = number & ~_MODE_FLAGS
    if base in (MPOL_DEFAULT, MPOL_LOCAL):
        chosen: frozenset[int] = frozenset(nodes) if not isinstance(nodes, str) else frozenset()
    else:
        chosen = _resolve(nodes, None, need_memory=True)
    impl = _backend(backend)
    try:
        impl.mbind(addr, length, number, chosen, flags)
    except SyscallError as err:
        if err.errno == errno.EIO:
            raise SyscallError(
                f"mbind: pages in {addr:#x}+{length:#x} are not on node {format_nodes(chosen)} "
                f"and MPOL_MF_STRICT was given (add MPOL_MF_MOVE to move them)",
                err.errno,
            ) from err
        raise _translate(err, "mbind", 0, chosen) from err


@dataclass(frozen=True)
class MemPolicy:
    """A memory policy as get_mempolicy(2) reports it."""

    mode: int  # MPOL_* without the mode flags
    flags: int  # MPOL_F_STATIC_NODES / MPOL_F_RELATIVE_NODES / MPOL_F_NUMA_BALANCING
    nodes: frozenset[int]

    @property
    def mode_name(self) -> str:
        return _MODE_NAMES.get(self.mode, str(self.mode))

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode_name, "flags": self.flags, "nodes": sorted(self.nodes)}


def get_mempolicy(
    addr: int | None = None, *, backend: str | NumaBackend | None = None
) -> MemPolicy:
    """This thread's policy, or with ``addr`` the policy of the mapping holding it."""
    impl = _backend(backend)
    try:
        mode, nodes = impl.get_mempolicy(addr, MPOL_F_ADDR if addr is not None else 0)
    except SyscallError as err:
        raise _translate(err, "get_mempolicy", 0) from err
    return MemPolicy(mode & ~_MODE_FLAGS, mode & _MODE_FLAGS, nodes)


def page_node(addr: int, *, backend: str | NumaBackend | None = None) -> int:
    """The node of the page at ``addr`` in this process (get_mempolicy MPOL_F_NODE|MPOL_F_ADDR).

    Unlike a move_pages query this faults the page in if it is not present.
    """
    impl = _backend(backend)
    try:
        node, _nodes = impl.get_mempolicy(addr, MPOL_F_NODE | MPOL_F_ADDR)
    except SyscallError as err:
        raise _translate(err, "get_mempolicy", 0) from err
    return node


def read_numa_maps(pid: int) -> str:
    """The text of /proc/PID/numa_maps (one read: the kernel walks every page of the process to
    print it, so a caller that needs it twice - the policies and the per-node counts - reads it
    once).  Raises NoSuchProcess, AccessDenied."""
    check_pid(pid)
    try:
        with open(f"/proc/{pid}/numa_maps", encoding="ascii", errors="replace") as fh:
            return fh.read()
    except FileNotFoundError as err:
        raise NoSuchProcess(f"no process with pid {pid}", pid=pid) from err
    except PermissionError as err:
        raise AccessDenied(
            f"cannot read /proc/{pid}/numa_maps: needs the same user or root (ptrace access)"
        ) from err


def numa_maps_node_pages(pid: int, text: str | None = None) -> dict[int, int]:
    """Per-node resident pages (in PAGE_SIZE units) summed over /proc/PID/numa_maps (``text``:
    that file as :func:`read_numa_maps` just read it; read here when None)."""
    if text is None:
        text = read_numa_maps(pid)
    per_node: dict[int, int] = {}
    for line in text.splitlines():
        page_kb = 4
        counts: list[tuple[int, int]] = []
        for item in line.split()[2:]:
            key, _, value = item.partition("=")
            if key == "kernelpagesize_kB":
                page_kb = int(value)
            elif len(key) > 1 and key[0] == "N" and key[1:].isdigit():
                counts.append((int(key[1:]), int(value)))
        scale = page_kb * 1024 // PAGE_SIZE
        for node, count in counts:
            per_node[node] = per_node.get(node, 0) + count * scale
    return per_node


def node_meminfo_kb(
    node: int, sysfs_node_dir: str | os.PathLike[str] = _SYSFS_NODE
) -> dict[str, int]:
    """Every counter of /sys/devices/system/node/nodeN/meminfo, in kB as the kernel prints it
    (``Node 0 PageTables:  10064 kB`` -> ``{"PageTables": 10064}``; the HugePages_* counts,
    which have no unit, as they are).  Raises ``InvalidNode`` when the node has no meminfo.
    Read-only; the same file ``numastat -m`` reads."""
    path = pathlib.Path(sysfs_node_dir) / f"node{node}" / "meminfo"
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError as err:
        raise InvalidNode(f"cannot read {path}: {err.strerror or err}") from err
    prefix = f"Node {node} "
    values: dict[str, int] = {}
    for line in text.splitlines():
        if not line.startswith(prefix):
            continue
        key, _, rest = line[len(prefix) :].partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            values[key.strip()] = int(fields[0])
    return values


_ZONEINFO = pathlib.Path("/proc/zoneinfo")


def vmstat_lag_pages(node: int, zoneinfo: str | os.PathLike[str] = _ZONEINFO) -> int:
    """How many pages a node counter of ``/sys/devices/system/node/nodeN/meminfo`` (e.g.
    ``PageTables:``) may differ from the truth, either way.  Each CPU keeps a signed delta per
    node counter and folds it into the node's total only when it passes the node's vmstat
    threshold (mm/vmstat.c ``__mod_node_page_state``) or when vmstat_update (about once a
    second) or the idle tick's quiet_vmstat() next folds that CPU's deltas, so up to that
    threshold per online CPU is unfolded.  The node's threshold is the largest *normal*
    threshold of its zones (``refresh_zone_stat_thresholds``: 2 x fls(CPUs) x (1 + fls(managed
    pages >> (27 - PAGE_SHIFT))), at most 125); /proc/zoneinfo prints the zones' current "vm
    stats threshold", which kswapd lowers under memory pressure (set_pgdat_percpu_threshold)
    while the node's stays, so the larger of the two is taken.  0 when zoneinfo cannot be
    read.  (Root can fold every delta at once by writing to /proc/sys/vm/stat_refresh; this
    reads only.)"""
    try:
        text = pathlib.Path(zoneinfo).read_text(encoding="ascii", errors="replace")
    except OSError:
        return 0
    cpus = os.cpu_count() or 1
    shift = 27 - (PAGE_SIZE.bit_length() - 1)
    threshold = 0
    current: int | None = None
    for line in text.splitlines():
        head = re.match(r"^Node (\d+), zone", line)
        if head:
            current = int(head.group(1))
            continue
        if current != node:
            continue
        m = re.match(r"^\s+vm stats threshold:\s*(\d+)", line)
        if m:
            threshold = max(threshold, int(m.group(1)))
            continue
        m = re.match(r"^\s+managed\s+(\d+)", line)
        if m and int(m.group(1)):
            mem = int(m.group(1)) >> shift
            threshold = max(threshold,
                            min(125, 2 * cpus.bit_length() * (1 + mem.bit_length())))
    return threshold * cpus


def node_page_tables_kb(
    node: int, sysfs_node_dir: str | os.PathLike[str] = _SYSFS_NODE
) -> tuple[int | None, int | None]:
    """(PageTables, SecPageTables) of ``node`` in kB, as ``numastat -m`` shows them: the
    kernel's NR_PAGETABLE (every process's page tables allocated from that node's memory) and
    NR_SECONDARY_PAGETABLE (KVM/IOMMU secondary tables, Linux 6.0+).  A counter the kernel does
    not print (SecPageTables before 6.0) is None, never 0."""
    info = node_meminfo_kb(node, sysfs_node_dir)
    return info.get("PageTables"), info.get("SecPageTables")


def buffer_address(buf: Any) -> int:
    """Address of a writable buffer such as an ``mmap.mmap`` (keep ``buf`` alive while used)."""
    return numa_abi.buffer_address(buf)


# parse_nodes() has a parameter called ``topology``; it reads the machine through this alias.
_read_topology = topology
