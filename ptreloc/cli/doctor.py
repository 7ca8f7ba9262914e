"""``ptreloc doctor``: what works on this machine, and what does not and why.

Exit code 0 when the NUMA calls work through at least one backend, 1 when none does.
"""

from __future__ import annotations

import mmap
import os
import pathlib
import shutil
from dataclasses import dataclass
from typing import Any

import click
from rich.table import Table

from ptreloc import kernel_tables, numa, proc
from ptreloc.bench.machine import numa_vm_script
from ptreloc.cli._common import emit_json, fail, guarded, json_option, stdout_console
from ptreloc.errors import EXIT_OPERATIONAL, PtrelocError

__all__ = ["command", "diagnose"]

_CAP_SYS_ADMIN = 21
_CAP_SYS_NICE = 23
_DEFAULT_VM_CACHE = pathlib.Path("/var/cache/ptreloc/numa-vm")
_NO_VM_SCRIPT = "missing (it comes with a source checkout, not the installed package)"


@dataclass
class _Check:
    name: str
    status: str  # "ok", "warn" or "fail"
    detail: str


def _probe_backend(name: str) -> dict[str, Any]:
    """Load a backend and make real calls through it: a move_pages query of one of our pages
    and get_mempolicy.  A backend that loads but cannot answer is reported as not working."""
    try:
        impl = numa.backend(name)
    except PtrelocError as err:
        return {"loads": False, "works": False, "detail": str(err)}
    page = mmap.mmap(-1, mmap.PAGESIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        page[0] = 1
        status = numa.move_pages(0, [numa.buffer_address(page)], backend=impl)
        policy = numa.get_mempolicy(backend=impl)
    except PtrelocError as err:
        return {"loads": True, "works": False, "detail": str(err)}
    finally:
        page.close()
    if status[0] < 0:
        detail = f"move_pages query of a touched page gave {numa.page_status_name(status[0])}"
        return {"loads": True, "works": False, "detail": detail}
    return {
        "loads": True,
        "works": True,
        "detail": f"move_pages: our page is on node {status[0]}; policy {policy.mode_name}",
        "nodemask_bits": impl.nodemask_bits,
    }


def _read(path: str) -> str | None:
    try:
        return pathlib.Path(path).read_text().strip()
    except OSError:
        return None


def _bracketed(text: str | None) -> str | None:
    """The selected word of a sysfs choice file: 'always [madvise] never' -> 'madvise'."""
    if text is None:
        return None
    for word in text.split():
        if word.startswith("[") and word.endswith("]"):
            return word[1:-1]
    return text


def _kernel_walk() -> dict[str, Any]:
    """Whether the kernel's own page tables of a process can be walked here (``show`` then
    reports measured placement, source ``kernel``) and, if not, exactly why: not root, no
    /proc/kcore, lockdown, hidden kallsyms, no BTF, unsupported paging mode.  A real probe
    (kernel_tables.availability opens kcore and reads the paging mode), never a guess."""
    try:
        ok, reason = kernel_tables.availability()
    except (PtrelocError, OSError, ValueError) as err:  # a probe that breaks is a reason too
        ok, reason = False, f"the probe failed: {err}"
    return {"available": bool(ok), "reason": reason}


def diagnose() -> dict[str, Any]:
    """Everything ``ptreloc doctor`` reports, as a JSON-ready dict (keys documented in --help)."""
    backends = {name: _probe_backend(name) for name in numa.backend_names()}
    try:
        selected: str | None = numa.backend().name
        selected_error = None
    except PtrelocError as err:
        selected, selected_error = None, str(err)
    caps = proc.cap_effective()
    topo = numa.topology()
    with_memory = topo.online & topo.with_memory
    balancing = _read("/proc/sys/kernel/numa_balancing")
    vm_script = numa_vm_script()  # a source checkout's; an installed package has none
    vm_cache = pathlib.Path(os.environ.get("PTRELOC_VM_CACHE") or _DEFAULT_VM_CACHE)
    qemu = shutil.which("qemu-system-x86_64")
    cached = vm_cache.is_dir() and any(vm_cache.iterdir())
    multinode_here = len(with_memory) >= 2
    return {
        "backend": {
            "selected": selected,
            "selected_error": selected_error,
            "env": os.environ.get("PTRELOC_NUMA_BACKEND"),
            **backends,
        },
        "privileges": {
            "euid": os.geteuid(),
            "root": os.geteuid() == 0,
            "cap_sys_nice": bool(caps >> _CAP_SYS_NICE & 1),
            "cap_sys_admin": bool(caps >> _CAP_SYS_ADMIN & 1),
        },
        "nodes": {
            "possible": len(topo.possible),
            "online": len(topo.online),
            "with_memory": len(with_memory),
            "online_list": numa.format_nodes(topo.online),
        },
        "kernel": {
            "release": os.uname().release,
            "numa_sysfs": pathlib.Path("/sys/devices/system/node/online").is_file(),
            "numa_maps": pathlib.Path("/proc/self/numa_maps").is_file(),
            "numa_balancing": int(balancing) if balancing and balancing.isdigit() else None,
            "transparent_hugepage": _bracketed(
                _read("/sys/kernel/mm/transparent_hugepage/enabled")
            ),
        },
        "kernel_walk": _kernel_walk(),
        "test_bed": {
            "in_guest": os.environ.get("PTRELOC_IN_VM") == "1",
            "multinode_here": multinode_here,
            "qemu": qemu,
            "numa_vm_script": vm_script is not None,
            "kernel_cache": str(vm_cache),
            "kernel_cached": cached,
            "can_run": multinode_here or (qemu is not None and vm_script is not None),
        },
    }


def _checks(report: dict[str, Any]) -> list[_Check]:
    out: list[_Check] = []
    for name in numa.backend_names():
        probe = report["backend"][name]
        out.append(_Check(f"backend {name}", "ok" if probe["works"] else "fail", probe["detail"]))
    b = report["backend"]
    out.append(
        _Check(
            "backend in use",
            "ok" if b["selected"] else "fail",
            b["selected"] or b["selected_error"],
        )
    )
    p = report["privileges"]
    out.append(
        _Check(
            "privileges",
            "ok" if p["cap_sys_nice"] else "warn",
            f"euid {p['euid']}, CAP_SYS_NICE {'yes' if p['cap_sys_nice'] else 'no'}, "
            f"CAP_SYS_ADMIN (pagemap frame numbers) {'yes' if p['cap_sys_admin'] else 'no'}"
            + ("" if p["cap_sys_nice"] else "; other users' processes need root"),
        )
    )
    n = report["nodes"]
    out.append(
        _Check(
            "nodes",
            "ok" if n["with_memory"] >= 2 else "warn",
            f"{n['online']} online ({n['online_list']}), {n['with_memory']} with memory, "
            f"{n['possible']} possible"
            + ("" if n["with_memory"] >= 2 else "; cross-node moves need the test bed"),
        )
    )
    k = report["kernel"]
    out.append(
        _Check(
            "kernel",
            "ok" if k["numa_sysfs"] and k["numa_maps"] else "warn",
            f"{k['release']}; numa_balancing={k['numa_balancing']}, "
            f"THP={k['transparent_hugepage']}, numa_maps "
            f"{'present' if k['numa_maps'] else 'missing'}",
        )
    )
    kw = report["kernel_walk"]
    out.append(
        _Check(
            "kernel page-table walk",
            "ok" if kw["available"] else "warn",
            kw["reason"] if kw["available"] else
            f"unavailable: {kw['reason']}; page-table placement is inferred here, not measured",
        )
    )
    t = report["test_bed"]
    if t["multinode_here"]:
        detail = "this machine has several nodes: multi-node tests run directly"
    else:
        detail = (
            f"qemu-system-x86_64: {t['qemu'] or 'missing (make deps)'}; scripts/numa-vm: "
            f"{'present' if t['numa_vm_script'] else _NO_VM_SCRIPT}; kernel cache "
            f"{t['kernel_cache']}: "
            f"{'filled' if t['kernel_cached'] else 'empty (first run fills it)'}"
        )
    out.append(_Check("multi-node test bed", "ok" if t["can_run"] else "warn", detail))
    return out


def _verdict(report: dict[str, Any]) -> str:
    selected = report["backend"]["selected"]
    if not any(report["backend"][name]["works"] for name in numa.backend_names()):
        return "NUMA calls do not work here: see the failing backends above"
    if selected is None or not report["backend"][selected]["works"]:
        return f"the chosen backend does not work here: {report['backend']['selected_error']}"
    nodes = report["nodes"]["with_memory"]
    where = (
        f"{nodes} nodes with memory: real cross-node migration works here"
        if nodes >= 2
        else "one node: real migration is 0 -> 0 here; cross-node runs use scripts/numa-vm"
        + ("" if report["test_bed"]["can_run"] else " (which cannot run here)")
    )
    kw = report["kernel_walk"]
    walk = ("kernel page-table walk works (placement measured)" if kw["available"]
            else f"kernel page-table walk unavailable: {kw['reason']}")
    return f"ready: {selected} backend works; {where}; {walk}"


@click.command("doctor", epilog="""\b
Examples:
  ptreloc doctor
  ptreloc doctor --json | jq .verdict
  PTRELOC_NUMA_BACKEND=syscall ptreloc doctor   # check the raw-syscall fallback""")
@json_option
@guarded
def command(as_json: bool) -> None:
    """Check what works here: NUMA backend (libnuma or raw syscalls), privileges, nodes, kernel
    NUMA features, the kernel page-table walk, and whether the multi-node test bed can run.

    JSON keys: backend (selected, libnuma, syscall: loads/works/detail), privileges, nodes,
    kernel, kernel_walk (available, reason: whether the kernel's own page tables of a process
    can be read through /proc/kcore here, and if not exactly why), test_bed, verdict, ok.
    An unavailable kernel walk is a warning, not a failure: placement is then inferred.
    Exit code 0 when NUMA calls work; 1 when they do not (the report is still printed, and one
    line on stderr says why); 2 for a bad option.
    """
    report = diagnose()
    report["verdict"] = _verdict(report)
    selected = report["backend"]["selected"]
    report["ok"] = bool(selected and report["backend"][selected]["works"])
    if as_json:
        emit_json(report)
    else:
        table = Table(title="ptreloc doctor", title_justify="left")
        table.add_column("check")
        table.add_column("status")
        table.add_column("detail")
        colour = {"ok": "green", "warn": "yellow", "fail": "red"}
        for check in _checks(report):
            # status words are ours; details may hold paths, so they are not parsed as markup
            table.add_row(check.name, f"[{colour[check.status]}]{check.status}[/]", check.detail)
        stdout_console.print(table)
        stdout_console.print(f"verdict: {report['verdict']}", markup=False)
    if not report["ok"]:
        # the report went to stdout (JSON or table); stderr gets the contract's one line
        fail(f"doctor: {report['verdict']}", EXIT_OPERATIONAL)
