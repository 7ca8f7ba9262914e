"""Wrappers over csrc/relocate.cdef: the relocation engine and its test hook.

This is the one place a relocation's arguments are checked (strategy, batch, address spaces)
and the one place its report is built: :func:`relocate` reads ``struct ptr_reloc_report`` once
into a :class:`RelocationReport`, which ptreloc.relocate returns and ptreloc.migrate/watch nest
as they are.  Where a relocation copies a frame: csrc/relocate.c, ``run_batch()`` ->
``copy_table()``.
"""

from __future__ import annotations

import errno as _errno
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ptreloc._native._base import Handle
from ptreloc._native.core import Core
from ptreloc.errors import CoreError, InvalidNode, RelocationUnsupported, UsageError

#: Relocation strategies by name; each one's number is the core's PTR_RELOC_<NAME>.
RELOC_STRATEGIES: tuple[str, ...] = ("rewalk", "stop", "naive")
#: Table frames per batch (one lock/shootdown round each): 1..MAX_BATCH, for every caller -
#: the library, ``migrate``/``watch``/``stress`` and their command-line options.
MAX_BATCH = 1 << 20
DEFAULT_BATCH = 64
#: at most this many address spaces in one relocation (the C side's bound)
MAX_MMS = 32


def check_strategy(strategy: object, what: str = "relocation strategy",
                   allowed: Sequence[str] = RELOC_STRATEGIES) -> str:
    if not isinstance(strategy, str) or strategy not in allowed:
        raise UsageError(f"unknown {what} {strategy!r}: use one of {', '.join(allowed)}")
    return strategy


def check_batch(batch: object) -> int:
    """``batch`` as frames per batch, or UsageError: 1..MAX_BATCH (bool refused)."""
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= MAX_BATCH:
        raise UsageError(f"batch must be 1..{MAX_BATCH} table frames, not {batch!r}")
    return batch


def strategy_code(c: Core, strategy: str) -> int:
    """The core's number for ``strategy`` (PTR_RELOC_REWALK, ...)."""
    return int(getattr(c.lib, f"PTR_RELOC_{check_strategy(strategy).upper()}"))


# ---- the report -------------------------------------------------------------------------------


@dataclass
class LevelReport:
    name: str
    found: int  # frames of this level on a source node
    relocated: int
    not_relocated: int
    reasons: dict[str, int]
    bytes_copied: int  # the tables' own bytes (PAE top: 32 per table, not a page)


@dataclass
class RelocationReport:
    """One relocation, read once from ``struct ptr_reloc_report``."""

    strategy: str
    batch: int
    complete: bool
    error: str | None
    from_nodes: list[int]
    to_node: int | None  # None when a chooser decided
    frames_found: int
    relocated: int
    not_relocated: int
    reasons: dict[str, int]
    bytes_copied: int
    batches: int
    shootdowns: int
    root_reloads: int
    root_switches: int
    merges_skipped: int  # batches with no CPU in the arena: nothing could write the old copies
    ad_merged: int  # rewalk: leaf entries whose A/D bits had to come from the old copy
    ad_lost: int  # naive: leaf entries whose A/D bits stale CPUs wrote into a dropped copy
    timings_s: dict[str, float]
    levels: dict[str, LevelReport] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    # A table a chooser left where it is ("kept") is already where its data is: for a caller
    # that moves tables to follow data, that is not a failure to relocate.
    def relocated_by_level(self) -> dict[str, int]:
        return {name: lv.relocated for name, lv in self.levels.items()}

    def left_by_level(self) -> dict[str, int]:
        """Frames not relocated per level, those the chooser kept where they are excepted."""
        return {name: lv.not_relocated - lv.reasons.get("kept", 0)
                for name, lv in self.levels.items()}

    def failure_reasons(self) -> dict[str, int]:
        """Why frames were not relocated ("kept" excepted)."""
        return {k: v for k, v in self.reasons.items() if v and k != "kept"}


def _error_text(rc: int) -> str | None:
    if rc == 0:
        return None
    if rc == -_errno.ENOSPC:
        return "target_full: a target node's table pool is at capacity (raise its capacity)"
    if rc == -_errno.ENOMEM:
        return "alloc_failed: a table allocation on the target failed"
    if rc == -_errno.ECANCELED:
        return "cancelled by the chooser"
    return f"relocation stopped: {_errno.errorcode.get(-rc, rc)}"


def _timing_names(c: Core) -> list[str]:
    """The report's ``ns_*`` fields, in declaration order (collect, alloc, ..., total)."""
    return [name[3:] for name, _ in c.ffi.typeof("struct ptr_reloc_report").fields
            if name.startswith("ns_")]


def _report(c: Core, rep: Any, rc: int, strategy: str, batch: int, from_nodes: list[int],
            to_node: int | None, level_names: Sequence[str]) -> RelocationReport:
    names = reloc_reason_names(c)

    def reasons(counts: Any) -> dict[str, int]:
        return {names[i]: int(counts[i]) for i in range(len(names)) if counts[i]}

    levels = {}
    for lv, name in enumerate(level_names):
        lr = rep.level[lv]
        levels[name] = LevelReport(
            name=name, found=int(lr.found), relocated=int(lr.relocated),
            not_relocated=int(lr.not_relocated), reasons=reasons(lr.reason),
            bytes_copied=int(lr.bytes_copied),
        )
    return RelocationReport(
        strategy=strategy, batch=batch, complete=rc == 0, error=_error_text(rc),
        from_nodes=from_nodes, to_node=to_node, frames_found=int(rep.frames_found),
        relocated=int(rep.relocated), not_relocated=int(rep.not_relocated),
        reasons=reasons(rep.reason), bytes_copied=int(rep.bytes_copied),
        batches=int(rep.batches), shootdowns=int(rep.shootdowns),
        root_reloads=int(rep.root_reloads), root_switches=int(rep.root_switches),
        merges_skipped=int(rep.merges_skipped), ad_merged=int(rep.ad_merged),
        ad_lost=int(rep.ad_lost),
        timings_s={k: getattr(rep, f"ns_{k}") / 1e9 for k in _timing_names(c)},
        levels=levels,
    )


# ---- the call ---------------------------------------------------------------------------------


class _ChooserBox:
    """What the C trampoline's priv handle points at: the Python callable and its first error."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.error: BaseException | None = None


_registered: set[str] = set()


def _register_trampoline(c: Core) -> None:
    """Define the extern "Python" chooser trampoline for this compiled module, once."""
    if c.build in _registered:
        return
    ffi = c.ffi

    @ffi.def_extern(name="_ptr_py_choose")
    def _choose(priv: Handle, level: int, frame: int, base_va: int, node: int) -> int:
        box: _ChooserBox = ffi.from_handle(priv)
        if box.error is not None:
            return -2
        try:
            t = box.fn(int(level), int(frame), int(base_va), int(node))
            return -1 if t is None else int(t)
        except BaseException as err:  # noqa: BLE001 - re-raised by the caller after C returns
            box.error = err
            return -2  # cancels the relocation before anything moves

    _registered.add(c.build)


def reloc_reason_names(c: Core) -> list[str]:
    return [c.ffi.string(c.lib.ptr_reloc_reason_name(i)).decode()
            for i in range(int(c.lib.PTR_RELOC_NREASONS))]


def relocate(c: Core, mms: Sequence[Handle], from_nodes: Sequence[int], to_node: int | None,
             chooser: Callable[[int, int, int, int], int | None] | None, strategy: str,
             batch: int, level_names: Sequence[str]) -> RelocationReport:
    """Run ptr_relocate_mms over ``mms`` (handles of one arena); ``to_node`` None: ``chooser``
    decides per frame.  Raises for bad arguments and a chooser's exception; an allocation
    failure is a report with ``complete`` False and its ``error``."""
    if not c.relocation_supported:
        raise RelocationUnsupported(
            "relocation is compiled out of the norelo core: use an arena with build='relo'"
        )
    code = strategy_code(c, strategy)
    check_batch(batch)
    if not 1 <= len(mms) <= MAX_MMS:
        raise UsageError(f"relocate 1..{MAX_MMS} address spaces at a time")
    if (to_node is None) == (chooser is None):
        raise UsageError("relocate: give a target node or a chooser, not both")
    sources = sorted(set(from_nodes))
    ffi, lib = c.ffi, c.lib
    rep = ffi.new("struct ptr_reloc_report *")
    arr = ffi.new("struct ptr_mm *[]", list(mms))
    mask = sum(1 << n for n in sources)
    box = None
    if chooser is not None:
        _register_trampoline(c)
        box = _ChooserBox(chooser)
        handle = ffi.new_handle(box)
        rc = lib.ptr_relocate_mms(arr, len(mms), mask, -1, lib._ptr_py_choose, handle, code,
                                  batch, rep)
    else:
        rc = lib.ptr_relocate_mms(arr, len(mms), mask, to_node, ffi.NULL, ffi.NULL, code,
                                  batch, rep)
    if box is not None and box.error is not None:
        raise box.error
    if rc == -_errno.EINVAL:
        raise UsageError("relocate: address spaces must be distinct and of one arena")
    if rc == -_errno.ENODEV:
        raise InvalidNode(f"relocate: target node {to_node} has no pool in this arena",
                          node=to_node)
    if rc == -_errno.EOPNOTSUPP:
        raise RelocationUnsupported("relocation is compiled out of this core")
    return _report(c, rep, int(rc), strategy, batch, sources, to_node, level_names)


# ---- test hook --------------------------------------------------------------------------------

_hooks: dict[str, tuple[_ChooserBox, Any]] = {}


def _install_hook(c: Core, store: dict[str, tuple[_ChooserBox, Any]], setter: str,
                  extern: str, fn: Callable[..., None] | None) -> None:
    """Install (or with ``fn`` None remove) ``fn`` as the C test hook ``lib.<setter>`` calls
    through the extern ``extern``; an exception inside ``fn`` is kept for take_hook_error."""
    ffi, lib = c.ffi, c.lib
    if fn is None:
        getattr(lib, setter)(ffi.NULL, ffi.NULL)
        store.pop(c.build, None)
        return
    if f"{extern}:{c.build}" not in _registered:

        @ffi.def_extern(name=extern)
        def _hook(priv: Handle, *args: int) -> None:
            box: _ChooserBox = ffi.from_handle(priv)
            if box.error is None:
                try:
                    box.fn(*(int(a) for a in args))
                except BaseException as err:  # noqa: BLE001 - surfaced by take_hook_error
                    box.error = err

        _registered.add(f"{extern}:{c.build}")
    box = _ChooserBox(fn)
    handle = ffi.new_handle(box)
    store[c.build] = (box, handle)
    getattr(lib, setter)(getattr(lib, extern), handle)


def set_relocation_test_hook(c: Core, fn: Callable[[int], None] | None) -> None:
    """TEST HOOK: call ``fn(batch)`` in every rewalk/naive batch between the repoints and the
    shootdown (table locks held: drive CPU accesses that hit present entries, nothing else).
    An exception inside ``fn`` is kept and re-raised by the next ``take_hook_error``."""
    _install_hook(c, _hooks, "ptr_reloc_set_test_hook", "_ptr_py_hook", fn)


_copy_hooks: dict[str, tuple[_ChooserBox, Any]] = {}


def set_relocation_copy_hook(c: Core, fn: Callable[[int, int], None] | None) -> None:
    """TEST HOOK: call ``fn(level, index)`` in the middle of every rewalk/naive table copy, the
    entries below ``index`` copied and the rest not yet (table locks held: drive CPU accesses
    that hit present entries, nothing else).  An exception inside ``fn`` is kept and re-raised
    by the next ``take_hook_error``."""
    _install_hook(c, _copy_hooks, "ptr_reloc_set_copy_hook", "_ptr_py_copy_hook", fn)


def take_hook_error(c: Core) -> None:
    """Raise the exception a test hook (batch or copy) raised, if any."""
    for hooks in (_hooks, _copy_hooks):
        entry = hooks.get(c.build)
        if entry is not None and entry[0].error is not None:
            err = entry[0].error
            entry[0].error = None
            raise err


# ---- the vector kernels ------------------------------------------------------------------------

#: widths (bytes) the core builds its copy, re-check and line-scan kernels for
VECTOR_WIDTHS: tuple[int, ...] = (16, 32, 64)
_VEC_COPY, _VEC_DIGEST, _VEC_LINE = 0, 1, 2


def vector_width(c: Core) -> int:
    """The vector width, bytes, of the kernels the loader picked for this CPU (64 with
    AVX-512, 32 with AVX2, 16 otherwise) - what every relocation's copy runs with."""
    return int(c.lib.ptr_reloc_vec_width())


def _vec_run(c: Core, width: int, op: int, words: Sequence[int], to: Any, i: int, n: int,
             flip: int, any_: Any) -> int | None:
    ffi = c.ffi
    src = ffi.new("uint64_t[]", list(words) or [0])
    out = ffi.new("uint64_t *")
    rc = int(c.lib.ptr_reloc_vec_run(width, op, src, to, i, n, flip & (2**64 - 1), any_, out))
    if rc == -_errno.EOPNOTSUPP:
        return None
    if rc:
        raise CoreError(f"ptr_reloc_vec_run: {_errno.errorcode.get(-rc, rc)}", errno=-rc)
    return int(out[0])


def vector_copy(c: Core, width: int, words: Sequence[int], dest: Sequence[int], start: int,
                flip: int) -> tuple[list[int], int, int] | None:
    """TEST ENTRY: the copy kernel of ``width`` (0: the loader's pick) copying ``words[start:]``
    over a copy of ``dest``: (the destination after it, the digest, the OR of what it copied);
    None when this CPU has no kernels of that width."""
    ffi = c.ffi
    to = ffi.new("uint64_t[]", list(dest) or [0])
    any_ = ffi.new("uint64_t *")
    digest = _vec_run(c, width, _VEC_COPY, words, to, start, len(words), flip, any_)
    if digest is None:
        return None
    return [int(x) for x in ffi.unpack(to, len(dest))], digest, int(any_[0])


def vector_digest(c: Core, width: int, words: Sequence[int], flip: int) -> int | None:
    """TEST ENTRY: the re-check's digest kernel of ``width`` (0: the loader's pick) over
    ``words``; None when this CPU has no kernels of that width."""
    return _vec_run(c, width, _VEC_DIGEST, words, c.ffi.NULL, 0, len(words), flip, c.ffi.NULL)


def vector_next_used_line(c: Core, width: int, words: Sequence[int], line: int) -> int | None:
    """TEST ENTRY: the collection's line-scan kernel of ``width`` (0: the loader's pick): the
    first 64-byte line at or after ``line`` of ``words`` (a whole number of lines) holding a
    non-zero word, or the number of lines; None when this CPU has no kernels of that width."""
    return _vec_run(c, width, _VEC_LINE, words, c.ffi.NULL, line, len(words) // 8, 0,
                    c.ffi.NULL)
