"""The only module that touches cffi's ``ffi``/``lib`` objects.

Sections, each owned by the layer above it:

* build check  -- refuses a missing or stale compiled core with one clear line;
* libnuma      -- ``libnuma.so.1`` loaded at run time in cffi ABI mode (for ptreloc.numa);
* raw syscalls -- migrate_pages/move_pages/mbind/get_mempolicy through libc's syscall(2), ABI mode;
* core         -- typed wrappers over the emulated page-table core (for ptreloc.core).

Everything here checks its arguments before calling C and turns ``-errno`` returns into
exceptions from ``ptreloc.errors``.
"""

from __future__ import annotations

# One import block for every section below.  What the sections use comes in under private
# aliases: this module's public names are its API to the rest of ptreloc, nothing else.
import errno as _errno
import functools
import hashlib
import importlib
import os as _os
import pathlib
import platform as _platform
import threading as _threading
from array import array as _array
from collections.abc import Callable as _Callable
from collections.abc import Iterable as _Iterable
from collections.abc import Sequence as _Sequence
from types import ModuleType
from typing import Any as _Any
from typing import Protocol as _Protocol

import cffi as _cffi

from ptreloc.errors import AddressError as _AddressError
from ptreloc.errors import AlreadyMapped as _AlreadyMapped
from ptreloc.errors import BuildError
from ptreloc.errors import FreedFrameAccess as _FreedFrameAccess
from ptreloc.errors import InvalidNode as _InvalidNode
from ptreloc.errors import NotMapped as _NotMapped
from ptreloc.errors import PoolExhausted as _PoolExhausted
from ptreloc.errors import ProtectionFault as _ProtectionFault
from ptreloc.errors import PtrelocError as _PtrelocError
from ptreloc.errors import RelocationUnsupported as _RelocationUnsupported
from ptreloc.errors import SyscallError as _SyscallError
from ptreloc.errors import UnknownGeometry as _UnknownGeometry
from ptreloc.errors import UsageError as _UsageError

_SRC = pathlib.Path(__file__).resolve().parent.parent / "csrc"


def _source_hash() -> str | None:
    """Same hash as csrc/build.py computes, when the sources are next to us (a checkout)."""
    if not (_SRC / "build.py").is_file():
        return None
    files = sorted(
        [*_SRC.glob("*.c"), *_SRC.glob("*.cdef"), *_SRC.glob("*.h")], key=lambda p: p.name
    )
    h = hashlib.sha256()
    for path in files:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


@functools.cache
def load_core(name: str = "_core") -> ModuleType:
    """Import a compiled core (``_core`` or ``_core_norelo``), refusing a missing or stale one.

    Loaded lazily, so the NUMA layer (which needs no compiled code) works without a build.
    """
    try:
        mod = importlib.import_module(f"ptreloc.{name}")
    except ImportError as err:
        raise BuildError(
            f"the ptreloc C core ({name}) is not built: run 'make build' "
            f"(or 'pip install .') first"
        ) from err
    want = _source_hash()
    have = mod.ffi.string(mod.lib.ptr_build_id()).decode()
    if want is not None and have != want:
        raise BuildError(
            f"the ptreloc C core ({name}) is stale: csrc/ changed since it was built; "
            f"run 'make build'"
        )
    return mod



# ---------------------------------------------------------------------------------------------
# libnuma (ABI mode) and raw syscalls -- owned by ptreloc.numa.  Neither needs the compiled core:
# the NUMA layer must work on a machine where the C core was never built.
# ---------------------------------------------------------------------------------------------

# One ABI-mode FFI for both shared objects: libnuma's declarations (numa.h / numaif.h, libnuma
# 2.0) and libc's variadic syscall(2).  A symbol is only looked up in the library it is used on.
_abi = _cffi.FFI()
_abi.cdef(
    """
    struct bitmask { unsigned long size; unsigned long *maskp; };
    int numa_available(void);
    int numa_max_node(void);
    int numa_max_possible_node(void);
    struct bitmask *numa_allocate_nodemask(void);
    void numa_bitmask_free(struct bitmask *bmp);
    struct bitmask *numa_bitmask_setbit(struct bitmask *bmp, unsigned int n);
    int numa_bitmask_isbitset(const struct bitmask *bmp, unsigned int n);
    int numa_migrate_pages(int pid, struct bitmask *from, struct bitmask *to);
    int numa_move_pages(int pid, unsigned long count, void **pages, const int *nodes,
                        int *status, int flags);
    long mbind(void *start, unsigned long len, int mode, const unsigned long *nmask,
               unsigned long maxnode, unsigned flags);
    long get_mempolicy(int *mode, unsigned long *nmask, unsigned long maxnode, void *addr,
                       unsigned flags);

    long syscall(long number, ...);
    """
)

#: Syscall numbers per architecture, from the kernel's tables
#: (arch/x86/entry/syscalls/syscall_64.tbl; include/uapi/asm-generic/unistd.h for arm64).
SYSCALL_NUMBERS: dict[str, dict[str, int]] = {
    "x86_64": {"mbind": 237, "get_mempolicy": 239, "migrate_pages": 256, "move_pages": 279},
    "aarch64": {"mbind": 235, "get_mempolicy": 236, "migrate_pages": 238, "move_pages": 239},
}

#: Environment variable that forces a backend: "libnuma", "syscall" or "auto".
BACKEND_ENV = "PTRELOC_NUMA_BACKEND"
BACKEND_NAMES = ("libnuma", "syscall")

_BITS_PER_LONG = _abi.sizeof("unsigned long") * 8


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
                    return -(-bits // _BITS_PER_LONG) * _BITS_PER_LONG
    except OSError:
        pass
    return 1024  # x86-64 distribution kernels: CONFIG_NODES_SHIFT=10


def _syscall_error(call: str, backend: str, err: int) -> _SyscallError:
    name = _errno.errorcode.get(err, str(err))
    return _SyscallError(f"{call}() failed via {backend}: {name} ({_os.strerror(err)})", err)


def _check_nodes(call: str, backend: str, nodes: _Iterable[int], bits: int) -> list[int]:
    out = []
    for node in nodes:
        if not 0 <= int(node) < bits:
            # the kernel would say EINVAL too; say it before building a mask that cannot hold it
            raise _syscall_error(call, backend, _errno.EINVAL)
        out.append(int(node))
    return out


class NumaBackend(_Protocol):
    """What ptreloc.numa needs from a way of reaching the kernel's NUMA calls.

    Every method raises ``ptreloc.errors.SyscallError`` (with ``.errno``) when the kernel says
    no; ptreloc.numa turns that into the specific exception with the context a user needs.
    """

    name: str
    nodemask_bits: int

    def migrate_pages(self, pid: int, from_nodes: _Iterable[int], to_nodes: _Iterable[int]) -> int:
        """migrate_pages(2): returns the number of pages that could not be moved."""
        ...

    def move_pages(
        self, pid: int, addresses: _Sequence[int], nodes: _Sequence[int] | None, flags: int
    ) -> tuple[int, list[int]]:
        """move_pages(2) for one batch: (return value, per-page status)."""
        ...

    def mbind(self, addr: int, length: int, mode: int, nodes: _Iterable[int], flags: int) -> None:
        """mbind(2)."""
        ...

    def get_mempolicy(self, addr: int | None, flags: int) -> tuple[int, frozenset[int]]:
        """get_mempolicy(2): (mode -- or node with MPOL_F_NODE, node mask)."""
        ...


class _MaskMixin:
    name: str
    nodemask_bits: int

    def _mask(self, call: str, nodes: _Iterable[int]) -> object:
        arr = _abi.new("unsigned long[]", self.nodemask_bits // _BITS_PER_LONG)
        for node in _check_nodes(call, self.name, nodes, self.nodemask_bits):
            arr[node // _BITS_PER_LONG] |= 1 << (node % _BITS_PER_LONG)
        return arr

    def _unmask(self, arr: object) -> frozenset[int]:
        out = set()
        for word_index in range(self.nodemask_bits // _BITS_PER_LONG):
            word = arr[word_index]  # type: ignore[index]
            while word:
                low = word & -word
                out.add(word_index * _BITS_PER_LONG + low.bit_length() - 1)
                word ^= low
        return frozenset(out)


def _move_pages_arrays(
    addresses: _Sequence[int], nodes: _Sequence[int] | None
) -> tuple[object, object, object]:
    count = len(addresses)
    if nodes is not None and len(nodes) != count:
        raise _UsageError(f"move_pages: {count} addresses but {len(nodes)} target nodes")
    # uintptr_t[] filled from a list is one C loop; cast to void ** for the call
    pages = _abi.new("uintptr_t[]", list(addresses))
    node_arr = _abi.NULL if nodes is None else _abi.new("int[]", list(nodes))
    status = _abi.new("int[]", count)
    return pages, node_arr, status


def _dlopen(name: str | None) -> object:
    """Open a shared object for ``_abi`` (None: libc).  A plain function, so a test can make a
    library "missing" by replacing it without touching the FFI object."""
    return _abi.dlopen(name)


class SyscallBackend(_MaskMixin):
    """The four calls through libc's syscall(2) with the kernel's own numbers and argument rules.

    Note the kernel's off-by-one: it reads ``maxnode - 1`` bits, so maxnode is bits + 1.
    """

    name = "syscall"

    def __init__(self) -> None:
        machine = _platform.machine()
        if machine not in SYSCALL_NUMBERS:
            raise _SyscallError(
                f"raw NUMA syscalls: no syscall numbers for architecture {machine}; "
                f"install libnuma1 and use the libnuma backend"
            )
        self._nr = SYSCALL_NUMBERS[machine]
        self._libc = _dlopen(None)
        self.nodemask_bits = kernel_nodemask_bits()

    def _call(self, call: str, *args: object) -> int:
        rc = self._libc.syscall(self._nr[call], *args)
        if rc < 0:
            raise _syscall_error(call, self.name, _abi.errno)
        return int(rc)

    def migrate_pages(self, pid: int, from_nodes: _Iterable[int], to_nodes: _Iterable[int]) -> int:
        old = self._mask("migrate_pages", from_nodes)
        new = self._mask("migrate_pages", to_nodes)
        return self._call(
            "migrate_pages",
            _abi.cast("long", pid),
            _abi.cast("unsigned long", self.nodemask_bits + 1),
            _abi.cast("unsigned long *", old),
            _abi.cast("unsigned long *", new),
        )

    def move_pages(
        self, pid: int, addresses: _Sequence[int], nodes: _Sequence[int] | None, flags: int
    ) -> tuple[int, list[int]]:
        pages, node_arr, status = _move_pages_arrays(addresses, nodes)
        count = len(addresses)
        rc = self._call(
            "move_pages",
            _abi.cast("long", pid),
            _abi.cast("unsigned long", count),
            _abi.cast("void **", pages),
            _abi.cast("int *", node_arr),
            _abi.cast("int *", status),
            _abi.cast("long", flags),
        )
        return rc, _abi.unpack(status, count)  # type: ignore[arg-type]

    def mbind(self, addr: int, length: int, mode: int, nodes: _Iterable[int], flags: int) -> None:
        mask = self._mask("mbind", nodes)
        self._call(
            "mbind",
            _abi.cast("unsigned long", addr),
            _abi.cast("unsigned long", length),
            _abi.cast("long", mode),
            _abi.cast("unsigned long *", mask),
            _abi.cast("unsigned long", self.nodemask_bits + 1),
            _abi.cast("unsigned long", flags),
        )

    def get_mempolicy(self, addr: int | None, flags: int) -> tuple[int, frozenset[int]]:
        mode = _abi.new("int *")
        mask = self._mask("get_mempolicy", ())
        self._call(
            "get_mempolicy",
            _abi.cast("int *", mode),
            _abi.cast("unsigned long *", mask),
            _abi.cast("unsigned long", self.nodemask_bits + 1),
            _abi.cast("unsigned long", addr or 0),
            _abi.cast("unsigned long", flags),
        )
        return int(mode[0]), self._unmask(mask)


class LibnumaBackend(_MaskMixin):
    """libnuma.so.1 loaded at run time: numa_migrate_pages/numa_move_pages and libnuma's
    mbind/get_mempolicy wrappers (which, like the raw calls, take maxnode = bits + 1)."""

    name = "libnuma"

    def __init__(self) -> None:
        try:
            self._lib = _dlopen("libnuma.so.1")
        except OSError as err:
            raise _SyscallError(
                "libnuma.so.1 cannot be loaded: install it (apt-get install libnuma1) "
                f"or set {BACKEND_ENV}=syscall ({err})"
            ) from err
        if self._lib.numa_available() < 0:
            raise _SyscallError(
                "libnuma reports NUMA unavailable on this kernel (numa_available() < 0); "
                f"set {BACKEND_ENV}=syscall"
            )
        probe = self._lib.numa_allocate_nodemask()
        # libnuma sizes its masks from the kernel's (Mems_allowed); numa_migrate_pages passes
        # that size as maxnode, so our masks must be allocated by libnuma too.
        self.nodemask_bits = int(probe.size)
        self._lib.numa_bitmask_free(probe)

    def max_node(self) -> int:
        return int(self._lib.numa_max_node())

    def _bitmask(self, call: str, nodes: _Iterable[int]) -> object:
        checked = _check_nodes(call, self.name, nodes, self.nodemask_bits)
        bmp = _abi.gc(self._lib.numa_allocate_nodemask(), self._lib.numa_bitmask_free)
        for node in checked:
            self._lib.numa_bitmask_setbit(bmp, node)
        return bmp

    def _fail(self, call: str) -> _SyscallError:
        return _syscall_error(call, self.name, _abi.errno)

    def migrate_pages(self, pid: int, from_nodes: _Iterable[int], to_nodes: _Iterable[int]) -> int:
        old = self._bitmask("migrate_pages", from_nodes)
        new = self._bitmask("migrate_pages", to_nodes)
        rc = self._lib.numa_migrate_pages(pid, old, new)
        if rc < 0:
            raise self._fail("migrate_pages")
        return int(rc)

    def move_pages(
        self, pid: int, addresses: _Sequence[int], nodes: _Sequence[int] | None, flags: int
    ) -> tuple[int, list[int]]:
        pages, node_arr, status = _move_pages_arrays(addresses, nodes)
        count = len(addresses)
        rc = self._lib.numa_move_pages(
            pid, count, _abi.cast("void **", pages), node_arr, status, flags
        )
        if rc < 0:
            raise self._fail("move_pages")
        return int(rc), _abi.unpack(status, count)  # type: ignore[arg-type]

    def mbind(self, addr: int, length: int, mode: int, nodes: _Iterable[int], flags: int) -> None:
        bmp = self._bitmask("mbind", nodes)
        rc = self._lib.mbind(
            _abi.cast("void *", addr), length, mode, bmp.maskp, bmp.size + 1, flags  # type: ignore[attr-defined]
        )
        if rc < 0:
            raise self._fail("mbind")

    def get_mempolicy(self, addr: int | None, flags: int) -> tuple[int, frozenset[int]]:
        mode = _abi.new("int *")
        bmp = self._bitmask("get_mempolicy", ())
        rc = self._lib.get_mempolicy(
            mode, bmp.maskp, bmp.size + 1, _abi.cast("void *", addr or 0), flags  # type: ignore[attr-defined]
        )
        if rc < 0:
            raise self._fail("get_mempolicy")
        nodes = frozenset(
            n for n in range(self.nodemask_bits) if self._lib.numa_bitmask_isbitset(bmp, n)
        )
        return int(mode[0]), nodes


_backends: dict[str, NumaBackend] = {}
_backends_lock = _threading.Lock()


def numa_backend(name: str | None = None) -> NumaBackend:
    """The backend to use: ``name``, else $PTRELOC_NUMA_BACKEND, else automatic (libnuma when it
    loads and numa_available() >= 0, raw syscalls otherwise).  Instances are cached."""
    choice = (name or _os.environ.get(BACKEND_ENV) or "auto").strip().lower()
    if choice not in (*BACKEND_NAMES, "auto"):
        where = "backend" if name else BACKEND_ENV
        raise _UsageError(f"unknown NUMA {where} {choice!r}: use libnuma, syscall or auto")
    with _backends_lock:
        if choice == "auto":
            try:
                return _get_backend("libnuma")
            except _SyscallError:
                return _get_backend("syscall")
        return _get_backend(choice)


def _get_backend(name: str) -> NumaBackend:
    if name not in _backends:
        _backends[name] = LibnumaBackend() if name == "libnuma" else SyscallBackend()
    return _backends[name]


def buffer_address(buf: object) -> int:
    """Address of a writable buffer (an ``mmap.mmap``, a bytearray): for mbind/move_pages on it.

    The address stays valid only as long as the caller keeps ``buf`` alive and unresized.
    """
    with _abi.from_buffer(buf, require_writable=True) as ptr:  # type: ignore[call-overload]
        return int(_abi.cast("uintptr_t", ptr))


# ---------------------------------------------------------------------------------------------
# core -- typed wrappers over the emulated page-table core (csrc/core.cdef), owned by ptreloc.core.
# Handles are cffi pointers; ptreloc.core owns their lifetimes.  Every wrapper validates what
# Python can validate, calls C (cffi releases the GIL for the call) and turns -errno into an
# exception from ptreloc.errors whose message names the problem and the fix.
# ---------------------------------------------------------------------------------------------

CORE_BUILDS = {"relo": "_core", "norelo": "_core_norelo"}
# a handle from the core (struct ptr_arena / ptr_mm / ptr_cpu pointers, a stats struct): a
# cffi cdata object, one class for every FFI instance
_Handle = _abi.CData
# what the mirror wrappers hand C by pointer: an array of the right item size (or a view of one)
_Buffer = _array | memoryview
_U64 = (1 << 64) - 1


def _hex(v: int) -> str:
    return f"{v:#x}"


class CoreError(_PtrelocError):
    """An unexpected -errno from the core (a bug or a resource failure)."""


class Core:
    """One compiled core (``relo`` or ``norelo``) with typed, checked wrappers."""

    def __init__(self, build: str = "relo") -> None:
        if build not in CORE_BUILDS:
            raise _UsageError(f"unknown core build {build!r}: use one of {sorted(CORE_BUILDS)}")
        mod = load_core(CORE_BUILDS[build])
        self.build = build
        self.ffi = mod.ffi
        self.lib = mod.lib
        self.max_levels = int(self.lib.PTR_MAX_LEVELS)
        self.max_nodes = int(self.lib.PTR_MAX_NODES)
        self.max_cpus = int(self.lib.PTR_MAX_CPUS)
        self._geos = self._describe()

    @property
    def relocation_supported(self) -> bool:
        return bool(self.lib.ptr_relocation_supported())

    # ---- geometry ----------------------------------------------------------------------------
    def _describe(self) -> dict[str, dict]:
        out: dict[str, dict] = {}
        info = self.ffi.new("struct ptr_geometry_info *")
        for i in range(self.lib.ptr_geometry_count()):
            self.lib.ptr_describe_geometry(i, info)
            levels = []
            for lv in range(info.nlevels):
                li = info.level[lv]
                levels.append(
                    {
                        "name": self.ffi.string(li.name).decode(),
                        "shift": li.shift,
                        "bits": li.bits,
                        "entry_size": li.entry_size,
                        "table_bytes": li.table_bytes,
                        "leaf_ok": bool(li.leaf_ok),
                    }
                )
            name = self.ffi.string(info.name).decode()
            out[name] = {
                "name": name,
                "arch": "x86" if info.arch == 0 else "arm64",
                "nlevels": info.nlevels,
                "va_bits": info.va_bits,
                "canonical": bool(info.canonical),
                "top_preloaded": bool(info.top_preloaded),
                "frame_bytes": info.frame_bytes,
                "phys_limit": info.phys_limit,
                "levels": levels,
            }
        return out

    def geometries(self) -> dict[str, dict]:
        return {k: dict(v) for k, v in self._geos.items()}

    def geometry(self, name: str) -> dict:
        if not isinstance(name, str) or name not in self._geos:
            raise _UnknownGeometry(
                f"unknown geometry {name!r}: use one of {', '.join(sorted(self._geos))}"
            )
        return self._geos[name]

    # ---- error translation -------------------------------------------------------------------
    @staticmethod
    def _raise(rc: int, what: str, extra: dict[int, Exception] | None = None) -> None:
        err = -rc
        if extra and err in extra:
            raise extra[err]
        common: dict[int, Exception] = {
            _errno.ERANGE: _AddressError(f"{what}: address outside the format's range"),
            _errno.EDOM: _AddressError(
                f"{what}: address is not canonical (bits above the top VA bit must copy it)"
            ),
            _errno.ENOSPC: _PoolExhausted(
                f"{what}: the node's table pool is at capacity; raise it with set_capacity() "
                f"or use another node"
            ),
            _errno.ENOMEM: _PoolExhausted(
                f"{what}: table allocation failed (injected or out of memory)"
            ),
            _errno.ENODEV: _InvalidNode(f"{what}: no such node in this arena"),
            _errno.ESTALE: _FreedFrameAccess(f"{what}: the walk read a freed table frame"),
        }
        if err in common:
            raise common[err]
        raise CoreError(f"{what}: core returned {_errno.errorcode.get(err, err)}")

    def _check(self, rc: int, what: str, extra: dict[int, Exception] | None = None) -> int:
        if rc < 0:
            self._raise(rc, what, extra)
        return rc

    @staticmethod
    def _u64(name: str, v: int) -> int:
        if not isinstance(v, int) or isinstance(v, bool) or v < 0 or v > _U64:
            raise _AddressError(f"{name} must be an integer in [0, 2**64), got {v!r}")
        return v

    # ---- arena --------------------------------------------------------------------------------
    def arena_create(self, geometry: str, bind_nodes: list[int], frames_per_node: int) -> _Handle:
        self.geometry(geometry)
        if not 1 <= len(bind_nodes) <= self.max_nodes:
            raise _InvalidNode(f"an arena has 1..{self.max_nodes} nodes, not {len(bind_nodes)}")
        if not isinstance(frames_per_node, int) or not 1 <= frames_per_node < 2**32:
            raise _UsageError(
                f"frames per node must be a positive integer, got {frames_per_node!r}"
            )
        out = self.ffi.new("struct ptr_arena **")
        rc = self.lib.ptr_arena_create(
            geometry.encode(), len(bind_nodes), self.ffi.new("int[]", bind_nodes),
            frames_per_node, out,
        )
        self._check(rc, f"creating a {geometry} arena", {
            _errno.E2BIG: _UsageError(
                f"{geometry} entries cannot address {len(bind_nodes)} x {frames_per_node} "
                f"frames: use fewer frames per node"
            ),
            _errno.EINVAL: _UsageError(f"bad arena parameters for {geometry}"),
            _errno.EPERM: _InvalidNode("mbind refused to bind a pool: not permitted here"),
        })
        return out[0]

    def arena_destroy(self, arena: _Handle) -> None:
        self._check(self.lib.ptr_arena_destroy(arena), "destroying the arena", {
            _errno.EBUSY: CoreError("arena still has address spaces or CPUs: close them first"),
        })

    def mm_set_node(self, mm: _Handle, node: int) -> None:
        self._check(self.lib.ptr_mm_set_node(mm, node), f"setting the table node to {node}")

    def set_capacity(self, arena: _Handle, node: int, frames: int) -> None:
        if not isinstance(frames, int) or frames < 0:
            raise _UsageError(f"capacity must be a non-negative integer, got {frames!r}")
        self._check(self.lib.ptr_arena_set_capacity(arena, node, min(frames, 2**32 - 1)),
                    f"setting node {node}'s capacity", {
            _errno.E2BIG: _UsageError(
                f"capacity {frames} exceeds the frames reserved for node {node}: create the "
                f"arena with more frames_per_node"
            ),
        })

    def fail_nth_alloc(self, arena: _Handle, k: int) -> None:
        if not isinstance(k, int) or k < 0:
            raise _UsageError(f"k must be a non-negative integer, got {k!r}")
        self.lib.ptr_arena_fail_nth_alloc(arena, k)

    def pool_info(self, arena: _Handle, node: int) -> dict:
        info = self.ffi.new("struct ptr_pool_info *")
        self._check(self.lib.ptr_arena_pool_info(arena, node, info), f"node {node}")
        return {
            "bind_node": info.bind_node,
            "nframes": info.nframes,
            "capacity": info.capacity,
            "in_use": info.in_use,
            "limbo": info.limbo,
            "live": [info.live[i] for i in range(self.max_levels)],
        }

    def freed_frame_accesses(self, arena: _Handle) -> int:
        return int(self.lib.ptr_arena_freed_frame_accesses(arena))

    def frame_info(self, arena: _Handle, frame: int) -> dict:
        st, lv, nd, sh = (self.ffi.new("int *") for _ in range(4))
        self._check(self.lib.ptr_frame_info(arena, frame, st, lv, nd, sh), f"frame {frame}", {
            _errno.EINVAL: _UsageError(f"frame {frame} is outside the arena"),
        })
        return {"state": ("free", "live", "limbo")[st[0]], "level": lv[0], "node": nd[0],
                "sharers": sh[0]}

    def frame_address(self, arena: _Handle, frame: int) -> int:
        return int(self.lib.ptr_frame_address(arena, frame))

    def table_entry(self, arena: _Handle, frame: int, level: int, index: int) -> int:
        return int(self.lib.ptr_table_entry(arena, frame, level, index))

    def free_frame(self, arena: _Handle, frame: int) -> None:
        """Test helper: free (and poison) a frame regardless of who still points to it."""
        self.lib.ptr_frame_free(arena, frame)

    # ---- address spaces ---------------------------------------------------------------------
    def mm_create(self, arena: _Handle, node: int) -> _Handle:
        out = self.ffi.new("struct ptr_mm **")
        self._check(
            self.lib.ptr_mm_create(arena, node, out), f"creating an address space on node {node}"
        )
        return out[0]

    def mm_destroy(self, mm: _Handle) -> None:
        self._check(self.lib.ptr_mm_destroy(mm), "destroying the address space", {
            _errno.EBUSY: CoreError("a CPU still runs this address space: switch it away first"),
        })

    def mm_root(self, mm: _Handle) -> int:
        return int(self.lib.ptr_mm_root(mm))

    def map(self, mm: _Handle, start: int, end: int, phys: int, leaf_level: int, writable: bool,
            table_node: int) -> None:
        what = f"mapping [{_hex(start)}, {_hex(end)})"
        self._check(self.lib.ptr_map(mm, self._u64("start", start), self._u64("end", end),
                                     self._u64("phys", phys), leaf_level, bool(writable),
                                     table_node), what, {
            _errno.EEXIST: _AlreadyMapped(
                f"{what}: part of the range is already mapped; unmap it first"
            ),
            _errno.EINVAL: _AddressError(
                f"{what}: start, end and phys must be aligned to the page size of the leaf "
                f"level and end > start"
            ),
            _errno.ERANGE: _AddressError(
                f"{what}: virtual or physical address outside the format's range"
            ),
        })

    def unmap(self, mm: _Handle, start: int, end: int) -> tuple[int, int]:
        dirty = self.ffi.new("uint64_t *")
        what = f"unmapping [{_hex(start)}, {_hex(end)})"
        n = self._check(self.lib.ptr_unmap(mm, self._u64("start", start), self._u64("end", end),
                                           dirty), what, {
            _errno.EINVAL: _AddressError(f"{what}: the range cuts a huge page; cover it whole"),
        })
        return n, int(dirty[0])

    def protect(self, mm: _Handle, start: int, end: int, writable: bool) -> int:
        what = f"protecting [{_hex(start)}, {_hex(end)})"
        return self._check(self.lib.ptr_protect(mm, self._u64("start", start),
                                                self._u64("end", end), bool(writable)), what, {
            _errno.EINVAL: _AddressError(f"{what}: the range cuts a huge page; cover it whole"),
        })

    def add_region(
        self, mm: _Handle, start: int, end: int, phys: int, writable: bool, leaf_level: int
    ) -> None:
        what = f"adding region [{_hex(start)}, {_hex(end)})"
        self._check(self.lib.ptr_add_region(mm, self._u64("start", start), self._u64("end", end),
                                            self._u64("phys", phys), bool(writable), leaf_level),
                    what, {
            _errno.EEXIST: _AlreadyMapped(f"{what}: it overlaps an existing region"),
            _errno.EINVAL: _AddressError(
                f"{what}: start, end and phys must be page-aligned, end > start"
            ),
            _errno.ENOSPC: _UsageError(f"{what}: too many regions in this address space"),
        })

    def translate(self, mm: _Handle, va: int) -> dict | None:
        tr = self.ffi.new("struct ptr_translation *")
        rc = self.lib.ptr_translate(mm, self._u64("va", va), tr)
        if rc == -_errno.ENOENT:
            return None
        self._check(rc, f"translating {_hex(va)}")
        return {"phys": tr.phys, "page_size": tr.page_size, "entry": tr.entry, "table": tr.table,
                "level": tr.level, "writable": bool(tr.writable), "young": bool(tr.young),
                "dirty": bool(tr.dirty)}

    def fault(self, mm: _Handle, va: int, write: bool) -> None:
        # never on behalf of a CPU: Python is not inside a CPU's access (its busy lock), so
        # ptr_fault() must enter its own read-side section (cpu == NULL); see ptreloc.h
        what = f"fault at {_hex(va)}"
        self._check(self.lib.ptr_fault(mm, self.ffi.NULL, self._u64("va", va), bool(write)),
                    what, {
            _errno.EFAULT: _NotMapped(
                f"{what}: no region covers it (a segmentation fault); add_region() first"
            ),
            _errno.EACCES: _ProtectionFault(f"{what}: write to a read-only mapping"),
        })

    def test_and_clear(self, mm: _Handle, va: int, dirty: bool) -> bool:
        fn = self.lib.ptr_test_and_clear_dirty if dirty else self.lib.ptr_test_and_clear_young
        what = f"test-and-clear-{'dirty' if dirty else 'young'} at {_hex(va)}"
        rc = self._check(fn(mm, self._u64("va", va)), what, {
            _errno.ENOENT: _NotMapped(f"{what}: nothing is mapped there"),
        })
        return rc == 1

    def share_table(self, dst: _Handle, src: _Handle, va: int, level: int) -> None:
        what = f"sharing the level-{level} table at {_hex(va)}"
        self._check(self.lib.ptr_share_table(dst, src, self._u64("va", va), level), what, {
            _errno.ENOENT: _NotMapped(f"{what}: the source has no such table"),
            _errno.EEXIST: _AlreadyMapped(
                f"{what}: the destination already has a table or leaf there"
            ),
            _errno.EINVAL: _UsageError(
                f"{what}: only level-0/1 tables below the root of another address space of the "
                f"same arena can be shared (not PAE's fixed top entries)"
            ),
        })

    def repoint(self, mm: _Handle, va: int, level: int, node: int) -> tuple[int, int]:
        old, new = self.ffi.new("uint32_t *"), self.ffi.new("uint32_t *")
        what = f"repointing the level-{level} table at {_hex(va)}"
        self._check(self.lib.ptr_repoint(mm, self._u64("va", va), level, node, old, new), what, {
            _errno.ENOENT: _NotMapped(f"{what}: no such table"),
            _errno.EBUSY: _UsageError(f"{what}: the table is shared"),
            _errno.EINVAL: _UsageError(f"{what}: bad level or node"),
        })
        return int(old[0]), int(new[0])

    def count_tables(self, mm: _Handle) -> tuple[list[int], list[list[int]]]:
        counts = self.ffi.new("uint32_t[]", self.max_levels)
        per_node = self.ffi.new(f"uint32_t[{self.max_nodes}][{self.max_levels}]")
        self.lib.ptr_mm_count_tables(mm, counts, per_node)
        return list(counts), [list(per_node[n]) for n in range(self.max_nodes)]

    # ---- mirror queries (csrc/mirror.c): read-only walks, bulk ones over array('Q') VAs -------
    def walk_path(self, mm: _Handle, va: int) -> tuple[int, list[int]]:
        """(leaf level or -ENOENT, frames per level with PTR_NO_FRAME below the stop)."""
        frames = self.ffi.new("uint32_t[]", self.max_levels)
        rc = self.lib.ptr_mirror_walk(mm, self._u64("va", va), frames)
        if rc != -_errno.ENOENT:
            self._check(rc, f"walking {_hex(va)}")
        return rc, list(frames)

    def _vas(self, vas: _Buffer) -> tuple[object, int]:
        view = memoryview(vas)
        if view.itemsize != 8 or view.format not in ("Q", "L"):
            raise _UsageError("addresses must be an array('Q')")
        return self.ffi.from_buffer("uint64_t[]", vas), len(view)

    def walk_many(
        self, mm: _Handle, vas: _Buffer, frames: _Buffer | None, nodes: _Buffer | None
    ) -> int:
        """Fill ``frames`` (array('I')) / ``nodes`` (array('h')), each len(vas) * max_levels or
        None; returns how many VAs nothing maps."""
        v, n = self._vas(vas)
        outs = []
        for arr, ctype in ((frames, "uint32_t[]"), (nodes, "int16_t[]")):
            if arr is not None and len(arr) != n * self.max_levels:
                raise _UsageError(f"output array needs {n * self.max_levels} items")
            outs.append(self.ffi.NULL if arr is None else self.ffi.from_buffer(ctype, arr))
        return self._check(self.lib.ptr_mirror_walk_many(mm, v, n, *outs), "walking addresses")

    def remote_count(self, mm: _Handle, vas: _Buffer, data_nodes: _Buffer) -> dict:
        """ptr_mirror_remote(): data_nodes is an array('i') parallel to vas."""
        v, n = self._vas(vas)
        if len(data_nodes) != n or memoryview(data_nodes).itemsize != 4:
            raise _UsageError("data_nodes must be an array('i') as long as the addresses")
        out = self.ffi.new("struct ptr_mirror_remote *")
        self._check(self.lib.ptr_mirror_remote(mm, v, self.ffi.from_buffer("int32_t[]", data_nodes),
                                               n, out), "counting remote tables")
        return {"pages": out.pages, "remote_pages": out.remote_pages,
                "by_level": list(out.by_level), "unmapped": out.unmapped}

    def check_translations(self, mm: _Handle, vas: _Buffer, phys: _Buffer) -> tuple[int, int]:
        """ptr_mirror_check(): (translations missing or wrong, index of the first such)."""
        v, n = self._vas(vas)
        p, pn = self._vas(phys)
        if pn != n:
            raise _UsageError("phys must be as long as the addresses")
        first = self.ffi.new("uint64_t *")
        bad = self._check(self.lib.ptr_mirror_check(mm, v, p, n, first), "checking translations")
        return bad, int(first[0])

    # ---- real x86-64 tables (csrc/x86pt.c; ptreloc.kernel_tables) --------------------------
    def x86_decode_table(
        self, data: bytes, level: int, limit: int = 512
    ) -> tuple[_array, _array, _array, _array, int, int]:
        """ptr_x86_decode_table() over the first ``limit`` entries of one 4 KiB table page:
        (leaf entry numbers 'H', leaf frames 'Q', child entry numbers 'H', child frames 'Q',
        non-present entries, bad entries)."""
        if len(data) < 8 * limit or not 0 < limit <= 512:
            raise _UsageError(f"a table page holds 512 entries; got {len(data)} bytes, {limit}")
        if not 0 <= level <= 4:
            raise _UsageError(f"x86-64 table level must be 0 (pte)..4 (pgd), not {level}")
        li, lp = _array("H", bytes(2 * limit)), _array("Q", bytes(8 * limit))
        ci, cp = _array("H", bytes(2 * limit)), _array("Q", bytes(8 * limit))
        out = self.ffi.new("struct ptr_x86_table *")
        f = self.ffi.from_buffer
        self._check(self.lib.ptr_x86_decode_table(
            f("uint64_t[]", data), limit, level, f("uint16_t[]", li), f("uint64_t[]", lp),
            f("uint16_t[]", ci), f("uint64_t[]", cp), out), "decoding a page table")
        nl, nc = out.nleaves, out.nchildren
        return li[:nl], lp[:nl], ci[:nc], cp[:nc], int(out.nonpresent), int(out.bad)

    # ---- CPUs ---------------------------------------------------------------------------------
    def cpu_create(self, arena: _Handle) -> _Handle:
        out = self.ffi.new("struct ptr_cpu **")
        self._check(self.lib.ptr_cpu_create(arena, out), "creating a CPU", {
            _errno.EMFILE: _UsageError(f"an arena has at most {self.max_cpus} CPUs"),
        })
        return out[0]

    def cpu_destroy(self, cpu: _Handle) -> None:
        self.lib.ptr_cpu_destroy(cpu)

    def cpu_switch_to(self, cpu: _Handle, mm: _Handle) -> None:
        self._check(self.lib.ptr_cpu_switch_to(cpu, mm if mm is not None else self.ffi.NULL),
                    "switching CPU", {
            _errno.EINVAL: _UsageError("the address space belongs to another arena"),
        })

    def cpu_access(
        self, cpu: _Handle, va: int, write: bool, handle_faults: bool
    ) -> tuple[int, int]:
        """Return (code, phys): code 0 ok, or PTR_FAULT_* (>0)."""
        phys = self.ffi.new("uint64_t *")
        fn = self.lib.ptr_cpu_access_fault if handle_faults else self.lib.ptr_cpu_access
        what = f"access at {_hex(va)}"
        rc = self._check(fn(cpu, self._u64("va", va), bool(write), phys), what, {
            _errno.EINVAL: _UsageError(
                f"{what}: the CPU is idle; switch_to() an address space first"
            ),
            _errno.EFAULT: _NotMapped(
                f"{what}: no mapping and no region covers it (a segmentation fault)"
            ),
            _errno.EACCES: _ProtectionFault(f"{what}: write to a read-only mapping"),
        })
        return rc, int(phys[0])

    def cpu_flush(self, cpu: _Handle) -> None:
        self.lib.ptr_cpu_flush(cpu)

    def _stats(self, st: _Handle) -> dict[str, int]:
        return {k: int(getattr(st, k)) for k in (
            "accesses", "tlb_hits", "walks", "faults", "freed_reads", "shootdowns", "reloads",
            "pwc_hits", "fault_path_runs")}

    def cpu_stats(self, cpu: _Handle) -> dict[str, int]:
        st = self.ffi.new("struct ptr_cpu_stats *")
        self.lib.ptr_cpu_get_stats(cpu, st)
        return self._stats(st)

    def shootdown(self, mm: _Handle, reload_root: bool) -> None:
        self.lib.ptr_shootdown(mm, bool(reload_root))

    def run_cpus(self, mm: _Handle, ncpus: int, naccesses: int, start: int, end: int,
                 write_pct: int, seed: int) -> dict[str, int]:
        if not 1 <= ncpus <= self.max_cpus:
            raise _UsageError(f"ncpus must be 1..{self.max_cpus}")
        if not 0 <= write_pct <= 100:
            raise _UsageError("write_pct must be 0..100")
        st = self.ffi.new("struct ptr_cpu_stats *")
        rc = self.lib.ptr_run_cpus(mm, ncpus, naccesses, self._u64("start", start),
                                   self._u64("end", end), write_pct, seed & _U64, st)
        if rc == int(self.lib.PTR_FAULT_FREED):
            raise _FreedFrameAccess("an emulated CPU read a freed table frame")
        if rc > 0:
            raise CoreError(f"an emulated CPU took an unhandled fault ({rc})")
        self._check(rc, "running CPUs", {
            _errno.EINVAL: _UsageError("run_cpus: empty range"),
            _errno.EFAULT: _NotMapped(
                "an emulated CPU accessed an address with no mapping or region"
            ),
        })
        return self._stats(st)


_cores: dict[str, Core] = {}


def core(build: str = "relo") -> Core:
    """The (cached) Core for ``build`` ("relo" or "norelo")."""
    if build not in _cores:
        _cores[build] = Core(build)
    return _cores[build]


# ---------------------------------------------------------------------------------------------
# relocation -- the relocation engine and the stress harness (csrc/relocate.cdef, stress.cdef),
# owned by ptreloc.relocate and ptreloc.stress.  Reports come back as plain dicts.
# ---------------------------------------------------------------------------------------------

RELOC_STRATEGIES: dict[str, int] = {"rewalk": 0, "stop": 1, "naive": 2}
_RELOC_TIMINGS = ("collect", "alloc", "copy", "shootdown", "merge", "grace", "free", "stopped",
                  "total")


class _ChooserBox:
    """What the C trampoline's priv handle points at: the Python chooser and its first error."""

    def __init__(self, fn: _Callable[[int, int, int, int], int | None]) -> None:
        self.fn = fn
        self.error: BaseException | None = None


_registered: set[str] = set()


def _register_trampoline(c: Core) -> None:
    """Define the extern "Python" chooser trampoline for this compiled module, once."""
    if c.build in _registered:
        return
    ffi = c.ffi

    @ffi.def_extern(name="_ptr_py_choose")
    def _choose(priv, level, frame, base_va, node):  # noqa: ANN001, ANN202 (cffi callback)
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


def relocate(c: Core, mms: list, from_mask: int, to_node: int,
             chooser: _Callable[[int, int, int, int], int | None] | None, strategy: str,
             batch: int) -> dict:
    """Run ptr_relocate_mms; returns the report as a dict (``rc`` = 0 or -errno).  Raises for
    bad arguments and a chooser's exception; an allocation failure is a partial report."""
    if not c.relocation_supported:
        raise _RelocationUnsupported(
            "relocation is compiled out of the norelo core: use an arena with build='relo'"
        )
    if strategy not in RELOC_STRATEGIES:
        raise _UsageError(
            f"unknown relocation strategy {strategy!r}: use one of {', '.join(RELOC_STRATEGIES)}"
        )
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch < 2**31:
        raise _UsageError(f"batch must be a positive integer (frames per batch), got {batch!r}")
    if not 1 <= len(mms) <= 32:
        raise _UsageError("relocate 1..32 address spaces at a time")
    ffi, lib = c.ffi, c.lib
    rep = ffi.new("struct ptr_reloc_report *")
    arr = ffi.new("struct ptr_mm *[]", mms)
    box = None
    if chooser is not None:
        _register_trampoline(c)
        box = _ChooserBox(chooser)
        handle = ffi.new_handle(box)
        rc = lib.ptr_relocate_mms(arr, len(mms), from_mask, -1, lib._ptr_py_choose, handle,
                                  RELOC_STRATEGIES[strategy], batch, rep)
    else:
        rc = lib.ptr_relocate_mms(arr, len(mms), from_mask, to_node, ffi.NULL, ffi.NULL,
                                  RELOC_STRATEGIES[strategy], batch, rep)
    if box is not None and box.error is not None:
        raise box.error
    if rc == -_errno.EINVAL:
        raise _UsageError("relocate: address spaces must be distinct and of one arena")
    if rc == -_errno.ENODEV:
        raise _InvalidNode(f"relocate: target node {to_node} has no pool in this arena")
    if rc == -_errno.EOPNOTSUPP:
        raise _RelocationUnsupported("relocation is compiled out of this core")
    names = reloc_reason_names(c)
    levels = []
    for lv in range(c.max_levels):
        lr = rep.level[lv]
        levels.append({
            "found": lr.found, "relocated": lr.relocated, "not_relocated": lr.not_relocated,
            "reasons": {names[i]: lr.reason[i] for i in range(len(names)) if lr.reason[i]},
            "bytes_copied": lr.bytes_copied,
        })
    return {
        "rc": rc,
        "strategy": strategy,
        "batch": batch,
        "frames_found": rep.frames_found,
        "relocated": rep.relocated,
        "not_relocated": rep.not_relocated,
        "reasons": {names[i]: rep.reason[i] for i in range(len(names)) if rep.reason[i]},
        "bytes_copied": rep.bytes_copied,
        "batches": rep.batches,
        "shootdowns": rep.shootdowns,
        "root_reloads": rep.root_reloads,
        "root_switches": rep.root_switches,
        "ad_merged": rep.ad_merged,
        "ad_lost": rep.ad_lost,
        "timings_s": {k: getattr(rep, f"ns_{k}") / 1e9 for k in _RELOC_TIMINGS},
        "levels": levels,
    }


_STRESS_FIELDS = (
    "pages", "tables", "relocations", "relocation_failures", "frames_relocated", "bytes_copied",
    "batches", "reloc_shootdowns", "ad_merged", "ad_lost", "relocation_ns", "accesses", "writes",
    "tlb_hits", "walks", "pwc_hits", "cpu_shootdowns", "fault_path_runs", "access_errors",
    "dirty_cleans", "young_cleans", "unmaps", "found_dirty", "found_young", "checked_dirty",
    "checked_accessed", "audits", "audit_checked", "lost_dirty", "lost_accessed",
    "freed_frame_accesses", "leaked_frames", "translation_mismatches",
)


class StressRun:
    """One ptr_stress_run() call, startable on a worker thread and cancellable from another
    (cffi releases the GIL for the call, so Python can show progress meanwhile)."""

    def __init__(self, c: Core, *, geometry: str, cpus: int, seconds: float, strategy: str,
                 batch: int, seed: int, bind_nodes: tuple[int, int], frames_per_node: int,
                 chunks: int, pages_per_chunk: int, write_pct: int, unmap_pct: int,
                 ipi_delay_us: int = 0) -> None:
        if not c.relocation_supported:
            raise _RelocationUnsupported("the stress needs the relocation core (build='relo')")
        c.geometry(geometry)
        if strategy not in RELOC_STRATEGIES:
            raise _UsageError(
                f"unknown protocol {strategy!r}: use one of {', '.join(RELOC_STRATEGIES)}"
            )
        ffi = c.ffi
        self._c = c
        self._keep = [ffi.new("char[]", geometry.encode()), ffi.new("int[]", list(bind_nodes))]
        self.cancel = ffi.new("int *")
        cfg = ffi.new("struct ptr_stress_config *")
        cfg.geometry = self._keep[0]
        cfg.cpus = cpus
        cfg.seconds = seconds
        cfg.strategy = RELOC_STRATEGIES[strategy]
        cfg.batch = batch
        cfg.seed = seed & _U64
        cfg.bind_nodes = self._keep[1]
        cfg.frames_per_node = frames_per_node
        cfg.chunks = chunks
        cfg.pages_per_chunk = pages_per_chunk
        cfg.write_pct = write_pct
        cfg.unmap_pct = unmap_pct
        cfg.reclaim_pause_us = 0
        cfg.cancel = self.cancel
        cfg.ipi_delay_us = ipi_delay_us
        self._cfg = cfg
        self._out = ffi.new("struct ptr_stress_result *")
        self.rc: int | None = None

    def run(self) -> None:
        self.rc = int(self._c.lib.ptr_stress_run(self._cfg, self._out))

    def stop(self) -> None:
        self.cancel[0] = 1

    def result(self) -> dict:
        rc = self.rc
        if rc == -_errno.EINVAL:
            raise _UsageError(
                "stress: bad parameters (cpus 1..62, seconds > 0, batch >= 1, chunks that fit "
                "the geometry's top table, pages per chunk <= one table)"
            )
        if rc is None or rc < 0:
            self._c._check(rc if rc is not None else -_errno.EIO, "stress run")
        out = {k: int(getattr(self._out, k)) for k in _STRESS_FIELDS}
        out["seconds"] = float(self._out.seconds)
        out["cancelled"] = bool(self._out.cancelled)
        return out


_hooks: dict[str, object] = {}


def set_relocation_test_hook(c: Core, fn: _Callable[[int], None] | None) -> None:
    """TEST HOOK: call ``fn(batch)`` in every rewalk/naive batch between the repoints and the
    shootdown (table locks held: drive CPU accesses that hit present entries, nothing else).
    An exception inside ``fn`` is kept and re-raised by the next ``take_hook_error``."""
    ffi, lib = c.ffi, c.lib
    if fn is None:
        lib.ptr_reloc_set_test_hook(ffi.NULL, ffi.NULL)
        _hooks.pop(c.build, None)
        return
    if f"hook:{c.build}" not in _registered:

        @ffi.def_extern(name="_ptr_py_hook")
        def _hook(priv, batch):  # noqa: ANN001, ANN202 (cffi callback)
            box: _ChooserBox = ffi.from_handle(priv)
            if box.error is None:
                try:
                    box.fn(int(batch))
                except BaseException as err:  # noqa: BLE001 - surfaced by take_hook_error
                    box.error = err

        _registered.add(f"hook:{c.build}")
    box = _ChooserBox(fn)  # type: ignore[arg-type]
    handle = ffi.new_handle(box)
    _hooks[c.build] = (box, handle)
    lib.ptr_reloc_set_test_hook(lib._ptr_py_hook, handle)


def take_hook_error(c: Core) -> None:
    """Raise the exception the test hook raised, if any."""
    entry = _hooks.get(c.build)
    if entry is not None and entry[0].error is not None:  # type: ignore[index]
        err = entry[0].error  # type: ignore[index]
        entry[0].error = None  # type: ignore[index]
        raise err


# ---------------------------------------------------------------------------------------------
# bench -- the timed loops of `ptreloc bench` (csrc/bench.cdef), owned by ptreloc.bench.  The
# loops and their clocks are in C; these wrappers only create contexts and run one round each.
# ---------------------------------------------------------------------------------------------


def _bench_check(c: Core, rc: int, what: str) -> None:
    if rc == -_errno.EOPNOTSUPP:
        raise _RelocationUnsupported(f"{what}: relocation is compiled out of the {c.build} core")
    if rc == int(c.lib.PTR_FAULT_FREED):
        raise _FreedFrameAccess(f"{what}: an emulated CPU read a freed table frame")
    if rc > 0:
        raise CoreError(f"{what}: an emulated CPU took an unhandled fault ({rc})")
    c._check(rc, what, {_errno.EINVAL: _UsageError(f"{what}: bad parameters")})


class BenchContext:
    """A C bench context (arena, address space, CPU) that lives across rounds."""

    _kind = ""

    def __init__(self, c: Core) -> None:
        self.c = c
        self._h = None

    def close(self) -> None:
        if self._h is not None:
            getattr(self.c.lib, f"ptr_bench_{self._kind}_destroy")(self._h)
            self._h = None

    def __enter__(self) -> BenchContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


class BenchFault(BenchContext):
    _kind = "fault"

    def __init__(self, c: Core, geometry: str, pages: int, with_data: bool, bind_node: int) -> None:
        super().__init__(c)
        c.geometry(geometry)
        out = c.ffi.new("struct ptr_bench_fault **")
        _bench_check(c, c.lib.ptr_bench_fault_create(geometry.encode(), pages, int(with_data),
                                                     bind_node, out), "fault bench set-up")
        self._h = out[0]

    def round(self, seed: int) -> int:
        """Fault every page once in the order ``seed`` gives; nanoseconds of the loop."""
        ns = self.c.ffi.new("uint64_t *")
        _bench_check(self.c, self.c.lib.ptr_bench_fault_round(self._h, seed & _U64, ns),
                     "fault bench")
        return int(ns[0])


class BenchWalk(BenchContext):
    _kind = "walk"

    def __init__(self, c: Core, geometry: str, pages: int, bind_nodes: tuple[int, int],
                 table_node: int) -> None:
        super().__init__(c)
        c.geometry(geometry)
        out = c.ffi.new("struct ptr_bench_walk **")
        binds = c.ffi.new("int[]", list(bind_nodes))
        _bench_check(c, c.lib.ptr_bench_walk_create(geometry.encode(), pages, binds, table_node,
                                                    out), "walk bench set-up")
        self._h = out[0]

    def round(self, accesses: int, seed: int, chase_first: bool) -> tuple[int, int]:
        """(emulated CPU ns, bare chase ns) for ``accesses`` walks each."""
        a, b = self.c.ffi.new("uint64_t *"), self.c.ffi.new("uint64_t *")
        _bench_check(self.c, self.c.lib.ptr_bench_walk_round(self._h, accesses, seed & _U64,
                                                             int(chase_first), a, b),
                     "walk bench")
        return int(a[0]), int(b[0])

    def stats(self) -> dict[str, int]:
        st = self.c.ffi.new("struct ptr_cpu_stats *")
        self.c.lib.ptr_bench_walk_stats(self._h, st)
        return self.c._stats(st)


class BenchReloc(BenchContext):
    _kind = "reloc"

    def __init__(self, c: Core, geometry: str, mapped: int, bind_nodes: tuple[int, int],
                 strategy: str, batch: int) -> None:
        super().__init__(c)
        c.geometry(geometry)
        out = c.ffi.new("struct ptr_bench_reloc **")
        binds = c.ffi.new("int[]", list(bind_nodes))
        _bench_check(c, c.lib.ptr_bench_reloc_create(geometry.encode(), mapped, binds,
                                                     RELOC_STRATEGIES[strategy], batch, out),
                     "relocate bench set-up")
        self._h = out[0]

    def round(self, memcpy_first: bool) -> dict[str, _Any]:
        r = self.c.ffi.new("struct ptr_bench_reloc_result *")
        _bench_check(self.c, self.c.lib.ptr_bench_reloc_round(self._h, int(memcpy_first), r),
                     "relocate bench")
        rep = r.report
        return {"reloc_ns": int(r.reloc_ns), "memcpy_ns": int(r.memcpy_ns),
                "frames": int(r.frames), "bytes": int(r.bytes), "batches": int(rep.batches),
                "timings_ns": {k: int(getattr(rep, f"ns_{k}")) for k in _RELOC_TIMINGS}}

    def set_poison(self, on: bool) -> None:
        """Poison freed table frames (the default) or not - to measure what poisoning costs."""
        self.c.lib.ptr_bench_reloc_set_poison(self._h, int(on))


def bench_concurrent(c: Core, *, geometry: str, cpus: int, pages: int, strategy: str, batch: int,
                     phase_s: float, rounds: int, write_pct: int, bind_nodes: tuple[int, int],
                     seed: int, sparse: bool = False) -> dict[str, _Any]:
    """One ptr_bench_concurrent() run (GIL released); histograms come back as lists, the
    per-round ones as ``rounds`` = [(idle_hist, busy_hist), ...].  ``sparse``: one page per
    level-0 table (every access walks to a table of its own) instead of consecutive pages."""
    c.geometry(geometry)
    ffi = c.ffi
    keep = [ffi.new("char[]", geometry.encode()), ffi.new("int[]", list(bind_nodes))]
    cfg = ffi.new("struct ptr_bench_conc_config *")
    cfg.geometry, cfg.bind_nodes = keep
    cfg.cpus, cfg.pages, cfg.strategy, cfg.batch = cpus, pages, RELOC_STRATEGIES[strategy], batch
    cfg.phase_s, cfg.rounds, cfg.write_pct, cfg.seed = phase_s, rounds, write_pct, seed & _U64
    cfg.sparse = int(sparse)
    nb = int(c.lib.PTR_BENCH_HIST_BUCKETS)
    per_round = ffi.new("uint64_t[]", 2 * nb * rounds)
    cfg.round_hists = per_round
    out = ffi.new("struct ptr_bench_conc_result *")
    _bench_check(c, c.lib.ptr_bench_concurrent(cfg, out), "concurrent bench")
    _bench_check(c, out.error, f"concurrent bench ({strategy})")
    res: dict[str, _Any] = {k: int(getattr(out, k)) for k in (
        "idle_n", "busy_n", "idle_max", "busy_max", "discarded", "relocations", "frames",
        "shootdowns", "stopped_max_ns", "stopped_sum_ns", "reloc_ns")}
    res["idle_hist"] = ffi.unpack(out.idle_hist, nb)
    res["busy_hist"] = ffi.unpack(out.busy_hist, nb)
    flat = ffi.unpack(per_round, 2 * nb * rounds)
    res["rounds"] = [(flat[2 * r * nb:(2 * r + 1) * nb], flat[(2 * r + 1) * nb:(2 * r + 2) * nb])
                     for r in range(rounds)]
    return res


def bench_hist_lower(c: Core, bucket: int) -> int:
    """Smallest latency (ns) of histogram bucket ``bucket`` (the C encoding, for tests)."""
    return int(c.lib.ptr_bench_hist_lower(bucket))


def bench_hist_index(c: Core, value: int) -> int:
    return int(c.lib.ptr_bench_hist_index(value & _U64))


# ---------------------------------------------------------------------------------------------
# injector -- typed wrappers over the ptrace injector (csrc/inject.c, csrc/inject.h), owned by
# ptreloc.kernel_move.  One ``Injector`` is one stopped process; every call on it must come from
# the thread that attached (ptrace tracers are threads).  -errno comes back as NoSuchProcess
# (ESRCH), AccessDenied (EPERM/EACCES) or SyscallError, each naming the step that failed and
# carrying ``step``, ``tid`` and (for a failed remote call) ``remote_errno``.
# ---------------------------------------------------------------------------------------------

#: x86-64 system call numbers the injector's callers use (arch/x86/entry/syscalls/syscall_64.tbl)
INJECT_NR: dict[str, int] = {
    "mmap": 9, "mprotect": 10, "munmap": 11, "mremap": 25, "getpid": 39, "madvise": 28,
    "set_mempolicy": 238, "get_mempolicy": 239,
}
INJECT_MASK_WORDS = 16

# this section's own imports (kept here so the section stays one appended block)
from ptreloc.errors import AccessDenied as _AccessDenied  # noqa: E402
from ptreloc.errors import NoSuchProcess as _NoSuchProcess  # noqa: E402


def _inject_raise(c: Core, rc: int, err: _Any, what: str, pid: int) -> None:
    step = int(err.step)
    step_name = c.ffi.string(c.lib.ptr_inject_step_name(step)).decode()
    code = -rc
    where = f"{step_name} (thread {int(err.tid)})" if int(err.tid) else step_name
    text = f"{what} for process {pid}: {where} failed: {_os.strerror(code)}"
    exc: _PtrelocError
    if step == int(c.lib.PTR_INJ_STEP_REMOTE):
        text = (f"{what} for process {pid}: the injected system call {int(err.nr)} returned "
                f"{_os.strerror(code)}")
        exc = _SyscallError(text, code)
    elif code == _errno.ESRCH:
        exc = _NoSuchProcess(f"process {pid} exited ({where}: {_os.strerror(code)})")
    elif code in (_errno.EPERM, _errno.EACCES):
        exc = _AccessDenied(text + " (another tracer, Yama ptrace_scope, or no CAP_SYS_PTRACE)")
    else:
        exc = _SyscallError(text, code)
    exc.step = step_name  # type: ignore[attr-defined]
    exc.tid = int(err.tid)  # type: ignore[attr-defined]
    exc.remote_errno = code if step == int(c.lib.PTR_INJ_STEP_REMOTE) else 0  # type: ignore
    raise exc


class Injector:
    """A process whose threads are all ptrace-stopped, one of them ready to run system calls.

    Use as a context manager, or call ``detach()``; a session left open is detached when
    garbage-collected (from whatever thread that happens in: prefer ``detach()``)."""

    def __init__(self, pid: int, tid: int = 0, *, build: str = "relo") -> None:
        if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
            raise _UsageError(f"pid must be a positive number, not {pid!r}")
        if not isinstance(tid, int) or tid < 0:
            raise _UsageError(f"tid must be 0 or a thread id, not {tid!r}")
        c = core(build)
        if not c.lib.ptr_inject_supported():
            raise _SyscallError("the ptrace injector supports x86-64 only", _errno.ENOSYS)
        self._c = c
        self.pid = pid
        self._owner = _threading.get_ident()
        out = c.ffi.new("struct ptr_inject **")
        err = c.ffi.new("struct ptr_inj_err *")
        rc = c.lib.ptr_inject_attach(pid, tid, out, err)
        if rc:
            _inject_raise(c, rc, err, "stopping the process", pid)
        self._h: _Any = out[0]
        self._err = err

    # ---- helpers -------------------------------------------------------------------------
    def _handle(self) -> _Any:
        if self._h is None:
            raise _UsageError("the injector was already detached")
        if _threading.get_ident() != self._owner:
            raise _UsageError("an Injector must be used from the thread that attached it")
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
            "held_signals", "dropped_signals")}

    # ---- calls ---------------------------------------------------------------------------
    def syscall(self, nr: int, *args: int) -> int:
        """Execute system call ``nr`` in the injected thread; its raw return value (-errno
        included: a remote failure is the caller's to judge)."""
        if len(args) > 6:
            raise _UsageError("a system call takes at most six arguments")
        a = self._c.ffi.new("int64_t[6]", [_u64_to_i64(v) for v in (*args, *[0] * (6 - len(args)))])
        ret = self._c.ffi.new("int64_t *")
        self._check(self._c.lib.ptr_inject_syscall(self._handle(), nr, a, ret, self._err),
                    f"system call {nr}")
        return int(ret[0])

    def read(self, addr: int, size: int) -> bytes:
        buf = self._c.ffi.new("char[]", max(size, 1))
        self._check(self._c.lib.ptr_inject_read(self._handle(), addr & _U64, buf, size,
                                                self._err), f"reading {size} bytes at {addr:#x}")
        return bytes(self._c.ffi.buffer(buf, size))

    def write(self, addr: int, data: bytes) -> None:
        self._check(self._c.lib.ptr_inject_write(self._handle(), addr & _U64, data, len(data),
                                                 self._err), f"writing at {addr:#x}")

    def bind_policy(self, mode: int, nodes: _Iterable[int]) -> None:
        """Save the thread's memory policy (first call), then set ``mode`` over ``nodes``."""
        mask = [0] * INJECT_MASK_WORDS
        for n in nodes:
            if not 0 <= n < 64 * INJECT_MASK_WORDS:
                raise _InvalidNode(f"node {n} is out of range")
            mask[n // 64] |= 1 << (n % 64)
        m = self._c.ffi.new("uint64_t[]", mask)
        self._check(self._c.lib.ptr_inject_bind_policy(self._handle(), mode, m, self._err),
                    "setting the memory policy")

    def saved_policy(self) -> tuple[int, list[int]] | None:
        """(mode, nodes) saved by the first ``bind_policy()``, or None."""
        mode = self._c.ffi.new("int *")
        m = self._c.ffi.new("uint64_t[]", INJECT_MASK_WORDS)
        if self._c.lib.ptr_inject_saved_policy(self._handle(), mode, m):
            return None
        nodes = [w * 64 + b for w in range(INJECT_MASK_WORDS) for b in range(64)
                 if (int(m[w]) >> b) & 1]
        return int(mode[0]), nodes

    def restore_policy(self) -> None:
        self._check(self._c.lib.ptr_inject_restore_policy(self._handle(), self._err),
                    "restoring the memory policy")

    def move_batch(self, moves: _Sequence[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
        """mremap each (old, length, dest) away and back (all away, then all back); per
        entry (away, back, back_retry) results, 1 meaning "not attempted"."""
        n = len(moves)
        arr = self._c.ffi.new("struct ptr_inj_move[]", max(n, 1))
        for i, (old, length, dest) in enumerate(moves):
            arr[i].old, arr[i].len, arr[i].dest = old, length, dest
        self._check(self._c.lib.ptr_inject_move_batch(self._handle(), arr, n, self._err),
                    "moving the VMAs")
        return [(int(arr[i].away), int(arr[i].back), int(arr[i].back_retry)) for i in range(n)]

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
    v &= _U64
    return v - (1 << 64) if v >> 63 else v


def kcmp_same_vm(pid1: int, pid2: int) -> bool:
    """Whether two processes share one mm (kcmp(2) KCMP_VM); NoSuchProcess/AccessDenied."""
    c = core()
    err = c.ffi.new("struct ptr_inj_err *")
    rc = c.lib.ptr_kcmp_same_vm(pid1, pid2, err)
    if rc < 0:
        _inject_raise(c, rc, err, f"comparing with process {pid2}", pid1)
    return bool(rc)
