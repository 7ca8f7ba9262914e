"""Wrappers over csrc/mirror.cdef: read-only walks of an address space, bulk ones over
array('Q') virtual addresses (what ptreloc.mirror measures a process's mirror with)."""

from __future__ import annotations

import errno as _errno

from ptreloc._native._base import Buffer, CoreBase, Handle, hex_addr
from ptreloc.errors import UsageError

__all__ = ["MirrorBindings"]


class MirrorBindings(CoreBase):
    """csrc/mirror.cdef."""

    def walk_path(self, mm: Handle, va: int) -> tuple[int, list[int]]:
        """(leaf level or -ENOENT, frames per level with PTR_NO_FRAME below the stop)."""
        frames = self.ffi.new("uint32_t[]", self.max_levels)
        rc = self.lib.ptr_mirror_walk(mm, self._u64("va", va), frames)
        if rc != -_errno.ENOENT:
            self._check(rc, f"walking {hex_addr(va)}")
        return rc, list(frames)

    def _vas(self, vas: Buffer) -> tuple[object, int]:
        view = memoryview(vas)
        if view.itemsize != 8 or view.format not in ("Q", "L"):
            raise UsageError("addresses must be an array('Q')")
        return self.ffi.from_buffer("uint64_t[]", vas), len(view)

    def walk_many(
        self, mm: Handle, vas: Buffer, frames: Buffer | None, nodes: Buffer | None
    ) -> int:
        """Fill ``frames`` (array('I')) / ``nodes`` (array('h')), each len(vas) * max_levels or
        None; returns how many VAs nothing maps."""
        v, n = self._vas(vas)
        outs = []
        for arr, ctype in ((frames, "uint32_t[]"), (nodes, "int16_t[]")):
            if arr is not None and len(arr) != n * self.max_levels:
                raise UsageError(f"output array needs {n * self.max_levels} items")
            outs.append(self.ffi.NULL if arr is None else self.ffi.from_buffer(ctype, arr))
        return self._check(self.lib.ptr_mirror_walk_many(mm, v, n, *outs), "walking addresses")

    def remote_count(self, mm: Handle, vas: Buffer, data_nodes: Buffer) -> dict:
        """ptr_mirror_remote(): data_nodes is an array('i') parallel to vas."""
        v, n = self._vas(vas)
        if len(data_nodes) != n or memoryview(data_nodes).itemsize != 4:
            raise UsageError("data_nodes must be an array('i') as long as the addresses")
        out = self.ffi.new("struct ptr_mirror_remote *")
        self._check(self.lib.ptr_mirror_remote(mm, v, self.ffi.from_buffer("int32_t[]", data_nodes),
                                               n, out), "counting remote tables")
        return {"pages": out.pages, "remote_pages": out.remote_pages,
                "by_level": list(out.by_level), "unmapped": out.unmapped}

    def check_translations(self, mm: Handle, vas: Buffer, phys: Buffer) -> tuple[int, int]:
        """ptr_mirror_check(): (translations missing or wrong, index of the first such)."""
        v, n = self._vas(vas)
        p, pn = self._vas(phys)
        if pn != n:
            raise UsageError("phys must be as long as the addresses")
        first = self.ffi.new("uint64_t *")
        bad = self._check(self.lib.ptr_mirror_check(mm, v, p, n, first), "checking translations")
        return bad, int(first[0])

