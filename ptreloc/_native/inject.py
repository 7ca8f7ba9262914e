"""Wrappers over the ptrace injector (csrc/inject.c; its cdef: csrc/inject.cdef, formerly the
marked block of csrc/inject.h), owned by ptreloc.kernel_move.

One ``Injector`` is one stopped process; every call on it must come from the thread that
attached (ptrace tracers are threads).  -errno comes back as NoSuchProcess (ESRCH),
AccessDenied (EPERM/EACCES) or SyscallError, each naming the step that failed and carrying
``pid``, ``step``, ``tid`` and (for a failed remote call) ``remote_errno``.
"""

from __future__ import annotations

import errno as _errno
import os
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from ptreloc._native._base import U64
from ptreloc._native.core import Core, core
from ptreloc.errors import AccessDenied, InvalidNode, NoSuchProcess, SyscallError, UsageError

__all__ = ["INJECT_NR", "INJECT_MASK_WORDS", "Injector", "kcmp_same_vm", "test_kill_tracer_at"]

#: x86-64 system call numbers the injector's callers use (arch/x86/entry/syscalls/syscall_64.tbl;
#: the kernel's numbers, which no header of ours defines)
INJECT_NR: dict[str, int] = {
    "mmap": 9, "mprotect": 10, "munmap": 11, "mremap": 25, "getpid": 39, "madvise": 28,
    "set_mempolicy": 238, "get_mempolicy": 239,
}
#: 64-bit words of the node mask ptr_inject_bind_policy() takes (csrc/inject.c); read from the
#: core where its cdef declares PTR_INJ_MASK_WORDS
INJECT_MASK_WORDS = 16


def _mask_words(c: Core) -> int:
    return int(getattr(c.lib, "PTR_INJ_MASK_WORDS", INJECT_MASK_WORDS))


def _inject_raise(c: Core, rc: int, err: Any, what: str, pid: int) -> None:
    step = int(err.step)
    step_name = c.ffi.string(c.lib.ptr_inject_step_name(step)).decode()
    code = -rc
    where = f"{step_name} (thread {int(err.tid)})" if int(err.tid) else step_name
    text = f"{what} for process {pid}: {where} failed: {os.strerror(code)}"
    tid = int(err.tid)
    exc: SyscallError | NoSuchProcess | AccessDenied
    if step == int(c.lib.PTR_INJ_STEP_REMOTE):
        text = (f"{what} for process {pid}: the injected system call {int(err.nr)} returned "
                f"{os.strerror(code)}")
        exc = SyscallError(text, code, pid=pid, call=f"syscall {int(err.nr)}", step=step_name,
                           tid=tid, remote_errno=code)
    elif code == _errno.ESRCH:
        exc = NoSuchProcess(f"process {pid} exited ({where}: {os.strerror(code)})",
                            pid=pid, step=step_name, tid=tid)
    elif code in (_errno.EPERM, _errno.EACCES):
        exc = AccessDenied(text + " (another tracer, Yama ptrace_scope, or no CAP_SYS_PTRACE)",
                           pid=pid, step=step_name, tid=tid)
    else:
        exc = SyscallError(text, code, pid=pid, call=step_name, step=step_name, tid=tid,
                           remote_errno=0)
    raise exc


class Injector:
    """A process whose threads are all ptrace-stopped, one of them ready to run system calls.

    Use as a context manager, or call ``detach()``; a session left open is detached when
    garbage-collected (from whatever thread that happens in: prefer ``detach()``)."""

    def __init__(self, pid: int, tid: int = 0, *, build: str = "relo") -> None:
        if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
            raise UsageError(f"pid must be a positive number, not {pid!r}")
        if not isinstance(tid, int) or tid < 0:
            raise UsageError(f"tid must be 0 or a thread id, not {tid!r}")
        c = core(build)
        if not c.lib.ptr_inject_supported():
            raise SyscallError("the ptrace injector supports x86-64 only", _errno.ENOSYS)
        self._c = c
        self.pid = pid
        self._owner = threading.get_ident()
        out = c.ffi.new("struct ptr_inject **")
        err = c.ffi.new("struct ptr_inj_err *")
        rc = c.lib.ptr_inject_attach(pid, tid, out, err)
        if rc:
            _inject_raise(c, rc, err, "stopping the process", pid)
        self._h: Any = out[0]
        self._err = err

    # ---- helpers -------------------------------------------------------------------------
    def _handle(self) -> Any:
        if self._h is None:
            raise UsageError("the injector was already detached")
        if threading.get_ident() != self._owner:
            raise UsageError("an Injector must be used from the thread that attached it")
        return self._h

    def _check(self, rc: int, what: str) -> None:
        if rc:
            _inject_raise(self._c, rc, self._err, what, self.pid)

    # ---- queries -------------------------------------------------------------------------
    def info(self) -> dict[str, int]:
        """tid, nthreads, in_syscall, orig_rax, rax, rip, site, scratch, user_area, ..."""
        out = self._c.ffi.new("struct ptr_inj_info *")
        self._c.lib.ptr_inject_info(self._handle(), out)
        return {k: int(getattr(out, k)) for k in (
            "pid", "tid", "nthreads", "in_syscall", "orig_rax", "rax", "rip", "site", "scratch",
            "scratch_len", "user_area", "user_area_len", "batch_max", "rseq_registered",
            "held_signals", "dropped_signals", "parked")}

    # ---- calls ---------------------------------------------------------------------------
    def syscall(self, nr: int, *args: int) -> int:
        """Execute system call ``nr`` in the injected thread; its raw return value (-errno
        included: a remote failure is the caller's to judge)."""
        if len(args) > 6:
            raise UsageError("a system call takes at most six arguments")
        a = self._c.ffi.new("int64_t[6]", [_u64_to_i64(v) for v in (*args, *[0] * (6 - len(args)))])
        ret = self._c.ffi.new("int64_t *")
        self._check(self._c.lib.ptr_inject_syscall(self._handle(), nr, a, ret, self._err),
                    f"system call {nr}")
        return int(ret[0])

    def read(self, addr: int, size: int) -> bytes:
        buf = self._c.ffi.new("char[]", max(size, 1))
        self._check(self._c.lib.ptr_inject_read(self._handle(), addr & U64, buf, size,
                                                self._err), f"reading {size} bytes at {addr:#x}")
        return bytes(self._c.ffi.buffer(buf, size))

    def write(self, addr: int, data: bytes) -> None:
        self._check(self._c.lib.ptr_inject_write(self._handle(), addr & U64, data, len(data),
                                                 self._err), f"writing at {addr:#x}")

    def bind_policy(self, mode: int, nodes: Iterable[int]) -> None:
        """Save the thread's memory policy (first call), then set ``mode`` over ``nodes``."""
        words = _mask_words(self._c)
        mask = [0] * words
        for n in nodes:
            if not 0 <= n < 64 * words:
                raise InvalidNode(f"node {n} is out of range", node=n)
            mask[n // 64] |= 1 << (n % 64)
        m = self._c.ffi.new("uint64_t[]", mask)
        self._check(self._c.lib.ptr_inject_bind_policy(self._handle(), mode, m, self._err),
                    "setting the memory policy")

    def saved_policy(self) -> tuple[int, list[int]] | None:
        """(mode, nodes) saved by the first ``bind_policy()``, or None."""
        mode = self._c.ffi.new("int *")
        words = _mask_words(self._c)
        m = self._c.ffi.new("uint64_t[]", words)
        if self._c.lib.ptr_inject_saved_policy(self._handle(), mode, m):
            return None
        nodes = [w * 64 + b for w in range(words) for b in range(64)
                 if (int(m[w]) >> b) & 1]
        return int(mode[0]), nodes

    def restore_policy(self) -> None:
        self._check(self._c.lib.ptr_inject_restore_policy(self._handle(), self._err),
                    "restoring the memory policy")

    def move_batch(self, moves: Sequence[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
        """mremap each (old, length, dest) away and back (all away, then all back); per
        entry (away, back, back_retry) results, 1 meaning "not attempted"."""
        n = len(moves)
        arr = self._c.ffi.new("struct ptr_inj_move[]", max(n, 1))
        for i, (old, length, dest) in enumerate(moves):
            arr[i].old, arr[i].len, arr[i].dest = old, length, dest
        self._check(self._c.lib.ptr_inject_move_batch(self._handle(), arr, n, self._err),
                    "moving the VMAs")
        return [(int(arr[i].away), int(arr[i].back), int(arr[i].back_retry)) for i in range(n)]

    def park(self) -> None:
        """Park every other thread in the trampoline (``move_batch()`` does it by itself):
        each blocks its signals, gives up rseq and waits on a futex there, so a ptreloc killed
        from here on leaves no thread running into a VMA that is away."""
        self._check(self._c.lib.ptr_inject_park(self._handle(), self._err),
                    "parking the other threads")

    def unpark(self) -> None:
        """Bring the parked threads back to their stops, exactly as they were."""
        self._check(self._c.lib.ptr_inject_unpark(self._handle(), self._err),
                    "bringing the other threads back")

    def detach(self, *, leave_stopped: bool = False) -> None:
        """Restore the thread exactly and let every thread go (``leave_stopped``: SIGSTOP the
        process first, so it stays stopped)."""
        h = self._handle()
        self._h = None
        self._check(self._c.lib.ptr_inject_detach(h, int(leave_stopped), self._err),
                    "resuming the process")

    def __enter__(self) -> Injector:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._h is not None:
            self.detach()

    def __del__(self) -> None:
        h = getattr(self, "_h", None)
        if h is not None:
            self._h = None
            self._c.lib.ptr_inject_detach(h, 0, self._c.ffi.NULL)


def _u64_to_i64(v: int) -> int:
    v &= U64
    return v - (1 << 64) if v >> 63 else v


def kcmp_same_vm(pid1: int, pid2: int) -> bool:
    """Whether two processes share one mm (kcmp(2) KCMP_VM); NoSuchProcess/AccessDenied."""
    c = core()
    err = c.ffi.new("struct ptr_inj_err *")
    rc = c.lib.ptr_kcmp_same_vm(pid1, pid2, err)
    if rc < 0:
        _inject_raise(c, rc, err, f"comparing with process {pid2}", pid1)
    return bool(rc)


#: where ``test_kill_tracer_at()`` makes this process SIGKILL itself (csrc/inject.h)
_KILL_POINTS = {"none": "PTR_INJ_KILL_NONE", "all-away": "PTR_INJ_KILL_ALL_AWAY",
                "parking": "PTR_INJ_KILL_PARKING", "unparking": "PTR_INJ_KILL_UNPARKING"}


def test_kill_tracer_at(where: str, *, build: str = "relo") -> None:
    """Tests only: from now on, SIGKILL this process at ``where`` of an injection session
    ("all-away": in a batch once every VMA is away; "parking"/"unparking": one other thread
    parked / sent back; "none": never) - a real kill of the tracer at a chosen point."""
    if where not in _KILL_POINTS:
        raise UsageError(f"unknown kill point {where!r}; one of {', '.join(_KILL_POINTS)}")
    c = core(build)
    rc = c.lib.ptr_inject_test_kill_tracer_at(int(getattr(c.lib, _KILL_POINTS[where])))
    if rc:
        raise UsageError(f"the core refused kill point {where!r}")
