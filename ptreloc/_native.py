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

import hashlib
import importlib
import pathlib
import functools
from types import ModuleType

from ptreloc.errors import BuildError

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

import errno as _errno  # noqa: E402  (section-local imports keep the sections independent)
import os as _os  # noqa: E402
import platform as _platform  # noqa: E402
import threading as _threading  # noqa: E402
from collections.abc import Iterable as _Iterable  # noqa: E402
from collections.abc import Sequence as _Sequence  # noqa: E402
from typing import Protocol as _Protocol  # noqa: E402

import cffi as _cffi  # noqa: E402

from ptreloc.errors import SyscallError as _SyscallError  # noqa: E402
from ptreloc.errors import UsageError as _UsageError  # noqa: E402

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
        self._libc = _abi.dlopen(None)
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
            self._lib = _abi.dlopen("libnuma.so.1")
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
