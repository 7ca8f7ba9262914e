"""What every wrapper over the compiled core shares: the loaded module, its limits (read from
``lib``, never copied) and the translation of ``-errno`` returns into ``ptreloc.errors``."""

from __future__ import annotations

import errno as _errno
from array import array as _array
from typing import Any

from ptreloc._native._loader import load_core
from ptreloc.errors import (
    AddressError,
    CoreError,
    FreedFrameAccess,
    InvalidNode,
    PoolExhausted,
    UsageError,
)

__all__ = ["CORE_BUILDS", "CoreBase", "Handle", "Buffer", "U64", "hex_addr", "check_int"]

CORE_BUILDS = {"relo": "_core", "norelo": "_core_norelo"}
#: a handle from the core (struct ptr_arena / ptr_mm / ptr_cpu pointers, a stats struct): a
#: cffi cdata object
Handle = Any
#: what the mirror wrappers hand C by pointer: an array of the right item size (or a view of one)
Buffer = _array | memoryview
U64 = (1 << 64) - 1


def hex_addr(v: int) -> str:
    return f"{v:#x}"


def check_int(name: str, v: object, lo: int, hi: int, unit: str = "") -> int:
    """``v`` as an int in [lo, hi] (bool refused), else UsageError naming ``name`` and the range."""
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise UsageError(f"{name} must be {lo}..{hi}{unit}, not {v!r}")
    return v


class CoreBase:
    """One compiled core (``relo`` or ``norelo``): the module, its limits, error translation.

    The per-cdef wrapper classes (core, mirror, x86pt) derive from this; ``Core`` joins them.
    """

    def __init__(self, build: str = "relo") -> None:
        if build not in CORE_BUILDS:
            raise UsageError(f"unknown core build {build!r}: use one of {sorted(CORE_BUILDS)}")
        mod = load_core(CORE_BUILDS[build])
        self.build = build
        self.ffi: Any = mod.ffi
        self.lib: Any = mod.lib
        self.max_levels = int(self.lib.PTR_MAX_LEVELS)
        self.max_nodes = int(self.lib.PTR_MAX_NODES)
        self.max_cpus = int(self.lib.PTR_MAX_CPUS)
        self.no_frame = int(self.lib.PTR_NO_FRAME)

    @property
    def relocation_supported(self) -> bool:
        return bool(self.lib.ptr_relocation_supported())

    # ---- error translation -------------------------------------------------------------------
    @staticmethod
    def _raise(rc: int, what: str, extra: dict[int, Exception] | None = None,
               node: int | None = None) -> None:
        """Raise for ``rc`` (-errno): ``extra``'s exception for it, else the common one;
        ``node`` (the node the call was about, when one) goes into the exception."""
        err = -rc
        if node is not None and node < 0:
            node = None
        if extra and err in extra:
            raise extra[err]
        common: dict[int, Exception] = {
            _errno.ERANGE: AddressError(f"{what}: address outside the format's range"),
            _errno.EDOM: AddressError(
                f"{what}: address is not canonical (bits above the top VA bit must copy it)"
            ),
            _errno.ENOSPC: PoolExhausted(
                f"{what}: the node's table pool is at capacity; raise it with set_capacity() "
                f"or use another node", node=node
            ),
            _errno.ENOMEM: PoolExhausted(
                f"{what}: table allocation failed (injected or out of memory)", node=node
            ),
            _errno.ENODEV: InvalidNode(f"{what}: no such node in this arena", node=node),
            _errno.ESTALE: FreedFrameAccess(f"{what}: the walk read a freed table frame"),
        }
        if err in common:
            raise common[err]
        raise CoreError(f"{what}: core returned {_errno.errorcode.get(err, err)}", errno=err)

    def _check(self, rc: int, what: str, extra: dict[int, Exception] | None = None,
               node: int | None = None) -> int:
        if rc < 0:
            self._raise(rc, what, extra, node)
        return rc

    @staticmethod
    def _u64(name: str, v: int) -> int:
        if not isinstance(v, int) or isinstance(v, bool) or v < 0 or v > U64:
            raise AddressError(f"{name} must be an integer in [0, 2**64), got {v!r}")
        return v

