"""ptreloc: study, validate and measure NUMA page-table relocation."""

from ptreloc.errors import (
    AccessDenied,
    InvalidNode,
    NoSuchProcess,
    PartialResult,
    PtrelocError,
    UsageError,
)

__version__ = "0.1.0"

__all__ = [
    "AccessDenied",
    "InvalidNode",
    "NoSuchProcess",
    "PartialResult",
    "PtrelocError",
    "UsageError",
    "__version__",
]
