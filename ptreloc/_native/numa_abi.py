"""libnuma (``libnuma.so.1``, loaded at run time in cffi ABI mode) and the raw NUMA system calls
(migrate_pages, move_pages, mbind, get_mempolicy through libc's syscall(2)): the two ways
ptreloc.numa reaches the kernel.  Neither needs the compiled core.

Which backend to use, the syscall numbers per architecture and the kernel's nodemask size are
policy and live in ptreloc.numa; these classes only build the C arguments, call, and turn a
failure into ``SyscallError`` (with ``errno`` and ``call``).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import cffi

from ptreloc.errors import SyscallError, UsageError

__all__ = ["BITS_PER_LONG", "SyscallBackend", "LibnumaBackend", "buffer_address"]

# One ABI-mode FFI for both shared objects: libnuma's declarations (numa.h / numaif.h, libnuma
# 2.0) and libc's variadic syscall(2).  A symbol is only looked up in the library it is used on.
_abi = cffi.FFI()
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

BITS_PER_LONG = _abi.sizeof("unsigned long") * 8


def _syscall_error(call: str, backend: str, err: int) -> SyscallError:
    name = errno.errorcode.get(err, str(err))
    return SyscallError(f"{call}() failed via {backend}: {name} ({os.strerror(err)})", err,
                        call=call)


def _check_nodes(call: str, backend: str, nodes: Iterable[int], bits: int) -> list[int]:
    out = []
    for node in nodes:
        if not 0 <= int(node) < bits:
            # the kernel would say EINVAL too; say it before building a mask that cannot hold it
            raise _syscall_error(call, backend, errno.EINVAL)
        out.append(int(node))
    return out


class _MaskMixin:
    name: str
    nodemask_bits: int

    def _mask(self, call: str, nodes: Iterable[int]) -> Any:
        arr = _abi.new("unsigned long[]", self.nodemask_bits // BITS_PER_LONG)
        for node in _check_nodes(call, self.name, nodes, self.nodemask_bits):
            arr[node // BITS_PER_LONG] |= 1 << (node % BITS_PER_LONG)
        return arr

    def _unmask(self, arr: Any) -> frozenset[int]:
        out = set()
        for word_index in range(self.nodemask_bits // BITS_PER_LONG):
            word = arr[word_index]
            while word:
                low = word & -word
                out.add(word_index * BITS_PER_LONG + low.bit_length() - 1)
                word ^= low
        return frozenset(out)


def _move_pages_arrays(
    addresses: Sequence[int], nodes: Sequence[int] | None
) -> tuple[object, object, object]:
    count = len(addresses)
    if nodes is not None and len(nodes) != count:
        raise UsageError(f"move_pages: {count} addresses but {len(nodes)} target nodes")
    # uintptr_t[] filled from a list is one C loop; cast to void ** for the call
    pages = _abi.new("uintptr_t[]", list(addresses))
    node_arr = _abi.NULL if nodes is None else _abi.new("int[]", list(nodes))
    status = _abi.new("int[]", count)
    return pages, node_arr, status


def _dlopen(name: str | None) -> Any:
    """Open a shared object for ``_abi`` (None: libc).  A plain function, so a test can make a
    library "missing" by replacing it without touching the FFI object."""
    return _abi.dlopen(name)


class SyscallBackend(_MaskMixin):
    """The four calls through libc's syscall(2) with the kernel's own numbers (``numbers``:
    call name -> number) and argument rules.

    Note the kernel's off-by-one: it reads ``maxnode - 1`` bits, so maxnode is bits + 1.
    """

    name = "syscall"

    def __init__(self, numbers: Mapping[str, int], nodemask_bits: int) -> None:
        self._nr = dict(numbers)
        self._libc: Any = _dlopen(None)
        self.nodemask_bits = nodemask_bits

    def _call(self, call: str, *args: object) -> int:
        rc = self._libc.syscall(self._nr[call], *args)
        if rc < 0:
            raise _syscall_error(call, self.name, _abi.errno)
        return int(rc)

    def migrate_pages(self, pid: int, from_nodes: Iterable[int], to_nodes: Iterable[int]) -> int:
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
        self, pid: int, addresses: Sequence[int], nodes: Sequence[int] | None, flags: int
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

    def mbind(self, addr: int, length: int, mode: int, nodes: Iterable[int], flags: int) -> None:
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
            self._lib: Any = _dlopen("libnuma.so.1")
        except OSError as err:
            raise SyscallError(
                f"libnuma.so.1 cannot be loaded: install it (apt-get install libnuma1) ({err})",
                call="dlopen",
            ) from err
        if self._lib.numa_available() < 0:
            raise SyscallError(
                "libnuma reports NUMA unavailable on this kernel (numa_available() < 0)",
                call="numa_available",
            )
        probe = self._lib.numa_allocate_nodemask()
        # libnuma sizes its masks from the kernel's (Mems_allowed); numa_migrate_pages passes
        # that size as maxnode, so our masks must be allocated by libnuma too.
        self.nodemask_bits = int(probe.size)
        self._lib.numa_bitmask_free(probe)

    def max_node(self) -> int:
        return int(self._lib.numa_max_node())

    def _bitmask(self, call: str, nodes: Iterable[int]) -> Any:
        checked = _check_nodes(call, self.name, nodes, self.nodemask_bits)
        bmp = _abi.gc(self._lib.numa_allocate_nodemask(), self._lib.numa_bitmask_free)
        for node in checked:
            self._lib.numa_bitmask_setbit(bmp, node)
        return bmp

    def _fail(self, call: str) -> SyscallError:
        return _syscall_error(call, self.name, _abi.errno)

    def migrate_pages(self, pid: int, from_nodes: Iterable[int], to_nodes: Iterable[int]) -> int:
        old = self._bitmask("migrate_pages", from_nodes)
        new = self._bitmask("migrate_pages", to_nodes)
        rc = self._lib.numa_migrate_pages(pid, old, new)
        if rc < 0:
            raise self._fail("migrate_pages")
        return int(rc)

    def move_pages(
        self, pid: int, addresses: Sequence[int], nodes: Sequence[int] | None, flags: int
    ) -> tuple[int, list[int]]:
        pages, node_arr, status = _move_pages_arrays(addresses, nodes)
        count = len(addresses)
        rc = self._lib.numa_move_pages(
            pid, count, _abi.cast("void **", pages), node_arr, status, flags
        )
        if rc < 0:
            raise self._fail("move_pages")
        return int(rc), _abi.unpack(status, count)  # type: ignore[arg-type]

    def mbind(self, addr: int, length: int, mode: int, nodes: Iterable[int], flags: int) -> None:
        bmp = self._bitmask("mbind", nodes)
        rc = self._lib.mbind(
            _abi.cast("void *", addr), length, mode, bmp.maskp, bmp.size + 1, flags
        )
        if rc < 0:
            raise self._fail("mbind")

    def get_mempolicy(self, addr: int | None, flags: int) -> tuple[int, frozenset[int]]:
        mode = _abi.new("int *")
        bmp = self._bitmask("get_mempolicy", ())
        rc = self._lib.get_mempolicy(
            mode, bmp.maskp, bmp.size + 1, _abi.cast("void *", addr or 0), flags
        )
        if rc < 0:
            raise self._fail("get_mempolicy")
        nodes = frozenset(
            n for n in range(self.nodemask_bits) if self._lib.numa_bitmask_isbitset(bmp, n)
        )
        return int(mode[0]), nodes


def buffer_address(buf: object) -> int:
    """Address of a writable buffer (an ``mmap.mmap``, a bytearray): for mbind/move_pages on it.

    The address stays valid only as long as the caller keeps ``buf`` alive and unresized.
    """
    with _abi.from_buffer(buf, require_writable=True) as ptr:  # type: ignore[call-overload]
        return int(_abi.cast("uintptr_t", ptr))
