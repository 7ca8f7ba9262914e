"""Exception hierarchy and the exit codes the command line maps them to.

Exit codes (the command-line contract, see README):
  0 success, 1 operational error, 2 usage error, 3 partial result under --strict.

Each exception also inherits the builtin a Python caller would expect (psutil/bcrypt style), so
``except ValueError`` keeps working for library users - where one honestly fits: a pool at
capacity is not the interpreter running out of memory (MemoryError) and a write to an emulated
read-only mapping is not a refused OS permission (PermissionError), so those two do not pose as
either.

Exceptions carry what they are about as attributes (psutil style), so callers and tests check
values, not prose: ``pid``, ``node``, ``path`` on every exception (None when not applicable),
plus ``errno``/``call``/``step``/``tid``/``remote_errno`` on SyscallError (and its kin raised by
the injector) and ``address`` on the emulated-core errors.
"""

from __future__ import annotations

__all__ = [
    "EXIT_OK",
    "EXIT_OPERATIONAL",
    "EXIT_USAGE",
    "EXIT_PARTIAL",
    "PtrelocError",
    "CoreError",
    "EmulatedFault",
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
    """Base class. ``exit_code`` is what the CLI exits with; the message is one actionable line.

    Keyword arguments become attributes: ``pid``, ``node``, ``path`` for every class, and the
    names a subclass adds to ``fields``; an unknown one is a TypeError (a typo in a raise)."""

    exit_code = EXIT_OPERATIONAL
    fields: tuple[str, ...] = ("pid", "node", "path")
    pid: int | None = None
    node: int | None = None
    path: str | None = None

    def __init__(self, message: str = "", **fields: object) -> None:
        super().__init__(message)
        for name, value in fields.items():
            if name not in self.fields:
                raise TypeError(f"{type(self).__name__} has no field {name!r}")
            setattr(self, name, value)


class UsageError(PtrelocError, ValueError):
    """Bad input from the user: a malformed option, an impossible combination."""

    exit_code = EXIT_USAGE


class InvalidNode(UsageError):
    """A node string that is malformed, or names a node that does not exist or is offline."""


class NoSuchProcess(PtrelocError, ProcessLookupError):
    """The process does not exist (or exited while we were working on it)."""

    fields = (*PtrelocError.fields, "step", "tid")
    step: str | None = None
    tid: int | None = None


class AccessDenied(PtrelocError, PermissionError):
    """The kernel refused: missing privilege (CAP_SYS_NICE, ptrace access) or outside a cpuset."""

    fields = (*PtrelocError.fields, "step", "tid")
    step: str | None = None
    tid: int | None = None


_SYSCALL_FIELDS = ("call", "step", "tid", "remote_errno")


class SyscallError(PtrelocError, OSError):
    """A system call failed for a reason not covered by a more specific class.

    ``errno``: the kernel's answer; ``call``: the system call (or injector step) that failed;
    for the ptrace injector also ``step``, ``tid`` and ``remote_errno``."""

    fields = (*PtrelocError.fields, *_SYSCALL_FIELDS)
    call: str | None = None
    step: str | None = None
    tid: int | None = None
    remote_errno: int | None = None

    def __init__(self, message: str, errno: int = 0, **fields: object) -> None:
        super().__init__(message, **fields)
        self.errno = errno


class BuildError(PtrelocError, ImportError):
    """The compiled C core is missing or stale."""


class PartialResult(PtrelocError):
    """Some of the work could not be done; raised only under --strict."""

    exit_code = EXIT_PARTIAL


# ---- emulated page-table core (ptreloc.core) --------------------------------------------------


class CoreError(PtrelocError):
    """An unexpected -errno from the core (a bug or a resource failure); ``errno`` says which."""

    fields = (*PtrelocError.fields, "errno")
    errno: int | None = None


class UnknownGeometry(UsageError):
    """A paging-format name the core does not know."""


class AddressError(UsageError):
    """A virtual or physical address outside the format's range, not canonical, or unaligned."""

    fields = (*PtrelocError.fields, "address")
    address: int | None = None


class AlreadyMapped(UsageError):
    """map() over a range where something is already mapped (nothing was changed)."""


class EmulatedFault(PtrelocError):
    """An emulated access the core refused (the page fault a real CPU would take); ``address``
    is the virtual address.  Exit code 1: the operation failed, the input was well formed."""

    fields = (*PtrelocError.fields, "address")
    address: int | None = None


class NotMapped(EmulatedFault, LookupError):
    """No translation (or no demand-fault region) for the address."""


class ProtectionFault(EmulatedFault):
    """A write to a read-only mapping or region (not an OS PermissionError: nothing refused
    the caller; the emulated mapping is read-only)."""


class PoolExhausted(PtrelocError):
    """A node's table-frame pool is at capacity (or an allocation failure was injected).

    Not a MemoryError: the interpreter has memory; the arena's pool is full (``node``, when
    known).  Exit code 1, like every resource failure."""


class FreedFrameAccess(PtrelocError):
    """A walk read a table frame that had been freed: a relocation-protocol bug, counted."""


class RelocationUnsupported(PtrelocError, NotImplementedError):
    """The core in use was built without relocation support (the norelo build)."""
