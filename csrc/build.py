"""cffi build script for the ptreloc C core (API mode, out of line).

Run, never imported by the runtime package.  Two extension modules come out of the same sources:

* ``ptreloc._core``        -- relocation support compiled in (the default build);
* ``ptreloc._core_norelo`` -- built with ``-DPTRELOC_NO_RELOCATION``, so the cost of supporting
  relocation on the fault path can be measured the way the 2008 RFC measured it.

Every ``csrc/*.c`` file is compiled; every ``csrc/*.cdef`` file is concatenated, in name order,
into the cffi declarations.  A hash of all C sources and declarations and of this script
(its compiler flags) is compiled into the extension (``ptr_build_id()``) so ``ptreloc._native``
can refuse a stale build with a clear message.
"""

from __future__ import annotations

import hashlib
import os
import pathlib

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent
SOURCES = sorted(HERE.glob("*.c"))
CDEFS = sorted(HERE.glob("*.cdef"))
HEADERS = sorted(HERE.glob("*.h"))

def source_hash() -> str:
    """Hash of everything that goes into the extension - the C, the declarations and this
    script, whose compiler flags are part of the build (a core built before a flag changed is
    stale too); must match ptreloc._native's copy."""
    h = hashlib.sha256()
    for path in sorted([*SOURCES, *CDEFS, *HEADERS, HERE / "build.py"], key=lambda p: p.name):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _builder(module: str, extra_defines: list[tuple[str, str | None]]) -> FFI:
    ffi = FFI()
    ffi.cdef("const char *ptr_build_id(void);\nint ptr_relocation_supported(void);\n")
    for cdef in CDEFS:
        ffi.cdef(cdef.read_text())
    build_id = source_hash()
    cflags = ["-std=gnu11", "-O2", "-g", "-pthread", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    # Functions and loops aligned.  `bench fault` times this build against the norelo one, and
    # with GCC's default packing a change elsewhere in a file moves the fault path's code: two
    # commits with the same fault path (a4aaf41, 3e4c06c; ptr_map_pages() rewritten in the same
    # pgtable.c between them) gave fault.bare -3.7 % and +5.3 % packed, -0.8 % and +0.7 % aligned
    # (two runs each, same host, same hour).
    cflags += ["-falign-functions=64", "-falign-loops=32"]
    cflags += os.environ.get("PTRELOC_CFLAGS", "").split()
    ldflags = ["-pthread"] + os.environ.get("PTRELOC_LDFLAGS", "").split()
    ffi.set_source(
        module,
        '#include "ptreloc.h"\n'
        f'const char *ptr_build_id(void) {{ return "{build_id}"; }}\n'
        "int ptr_relocation_supported(void) { return PTR_RELOCATION; }\n",
        sources=[str(p.relative_to(HERE.parent)) for p in SOURCES],
        include_dirs=[str(HERE.relative_to(HERE.parent))],
        define_macros=[("_GNU_SOURCE", None), *extra_defines],
        extra_compile_args=cflags,
        extra_link_args=ldflags,
    )
    return ffi


ffibuilder = _builder("ptreloc._core", [])
ffibuilder_norelo = _builder("ptreloc._core_norelo", [("PTRELOC_NO_RELOCATION", "1")])

if __name__ == "__main__":
    os.chdir(HERE.parent)
    for b in (ffibuilder, ffibuilder_norelo):
        b.compile(verbose=False)
