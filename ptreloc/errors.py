"""Exception hierarchy and the exit codes the command line maps them to.

Exit codes (the command-line contract, see README):
  0 success, 1 operational error, 2 usage error, 3 partial result under --strict.

Each exception also inherits the builtin a Python caller would expect (psutil/bcrypt style), so
``except ValueError`` keeps working for library users.
"""

from __future__ import annotations

__all__ = [
    "EXIT_OK",
    "EXIT_OPERATIONAL",
    "EXIT_USAGE",
    "EXIT_PARTIAL",
    "PtrelocError",
    "UsageError",
    "InvalidNode",
    "NoSuchProcess",
    "AccessDenied",
    "SyscallError",
    "BuildError",
    "PartialResult",
    "UnknownGeometry",
    "AddressError",
    "AlreadyMapped",
    "NotMapped",
    "ProtectionFault",
    "PoolExhausted",
    "FreedFrameAccess",
    "RelocationUnsupported",
]

EXIT_OK = 0
EXIT_OPERATIONAL = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3


class PtrelocError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with; the message is one actionable line."""

    exit_code = EXIT_OPERATIONAL


class UsageError(PtrelocError, ValueError):
    """Bad input from the user: a malformed option, an impossible combination."""

    exit_code = EXIT_USAGE


class InvalidNode(UsageError):
    """A node string that is malformed, or names a node that does not exist or is offline."""


class NoSuchProcess(PtrelocError, ProcessLookupError):
    """The process does not exist (or exited while we were working on it)."""


class AccessDenied(PtrelocError, PermissionError):
    """The kernel refused: missing privilege (CAP_SYS_NICE, ptrace access) or outside a cpuset."""


class SyscallError(PtrelocError, OSError):
    """A system call failed for a reason not covered by a more specific class."""

    def __init__(self, message: str, errno: int = 0) -> None:
        super().__init__(message)
        self.errno = errno


class BuildError(PtrelocError, ImportError):
    """The compiled C core is missing or stale."""


class PartialResult(PtrelocError):
    """Some of the work could not be done; raised only under --strict."""

    exit_code = EXIT_PARTIAL


# ---- emulated page-table core (ptreloc.core) --------------------------------------------------


class UnknownGeometry(UsageError):
    """A paging-format name the core does not know."""


class AddressError(UsageError):
    """A virtual or physical address outside the format's range, not canonical, or unaligned."""


class AlreadyMapped(UsageError):
    """map() over a range where something is already mapped (nothing was changed)."""


class NotMapped(PtrelocError, LookupError):
    """No translation (or no demand-fault region) for the address."""


class ProtectionFault(PtrelocError, PermissionError):
    """A write to a read-only mapping or region."""


class PoolExhausted(PtrelocError, MemoryError):
    """A node's table-frame pool is at capacity (or an allocation failure was injected)."""


class FreedFrameAccess(PtrelocError):
    """A walk read a table frame that had been freed: a relocation-protocol bug, counted."""


class RelocationUnsupported(PtrelocError, NotImplementedError):
    """The core in use was built without relocation support (the norelo build)."""
