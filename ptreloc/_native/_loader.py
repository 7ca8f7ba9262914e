"""Build check: import a compiled core, refusing a missing or stale one with one clear line."""

from __future__ import annotations

import functools
import hashlib
import importlib
import pathlib
from types import ModuleType

from ptreloc.errors import BuildError

__all__ = ["load_core"]

# ptreloc/_native/_loader.py -> the checkout's csrc/ (absent in an installed wheel)
_SRC = pathlib.Path(__file__).resolve().parent.parent.parent / "csrc"


def _source_hash() -> str | None:
    """Same hash as csrc/build.py computes, when the sources are next to us (a checkout)."""
    if not (_SRC / "build.py").is_file():
        return None
    files = sorted(
        [*_SRC.glob("*.c"), *_SRC.glob("*.cdef"), *_SRC.glob("*.h"), _SRC / "build.py"],
        key=lambda p: p.name,
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

