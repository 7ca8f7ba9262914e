"""Shared pieces of the command modules: the ``--json`` option, output, error handling."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, NoReturn, ParamSpec, TypeVar

import click
from rich.console import Console

from ptreloc.errors import PtrelocError

__all__ = [
    "EXIT_INTERRUPTED",
    "json_option",
    "guarded",
    "emit_json",
    "stderr_console",
    "stdout_console",
    "fail",
    "one_line",
]

# Ctrl-C: the shell convention (128 + SIGINT), so a script can tell "stopped" from "failed".
EXIT_INTERRUPTED = 130

P = ParamSpec("P")
R = TypeVar("R")

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Write only JSON to stdout (for scripts and CI)."
)

# Human output: rich, no markup surprises (user-controlled strings are never parsed as markup).
stdout_console = Console(highlight=False)
stderr_console = Console(stderr=True, highlight=False)


def emit_json(data: Any) -> None:
    """Write one JSON document (or JSON line) to stdout and flush."""
    sys.stdout.write(json.dumps(data, sort_keys=False, default=_json_default) + "\n")
    sys.stdout.flush()


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "to_json"):
        return obj.to_json()
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def one_line(message: str) -> str:
    """``message`` with every run of whitespace (newlines included) folded to one space: the
    contract promises ONE line on stderr, and library messages (or OSError texts) may wrap."""
    return " ".join(str(message).split()) or "unknown error"


def fail(message: str, exit_code: int) -> NoReturn:
    """Print one error line on stderr and exit (never a traceback)."""
    click.echo(f"ptreloc: error: {one_line(message)}", err=True)
    sys.exit(exit_code)


def guarded(func: Callable[P, R]) -> Callable[P, R]:
    """Turn PtrelocError (and Ctrl-C) into one line on stderr and the documented exit code."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except PtrelocError as err:
            fail(str(err), err.exit_code)
        except KeyboardInterrupt:
            fail("interrupted (Ctrl-C) before the command finished", EXIT_INTERRUPTED)

    return wrapper
