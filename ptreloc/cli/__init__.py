"""The ``ptreloc`` command line: one module per command, registered here.

Contract (README "Command line"): every command takes ``--json`` (then stdout carries only JSON);
human output goes through rich; errors are one line on stderr; exit codes come from
``ptreloc.errors``.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any, NoReturn

import click

from ptreloc import __version__
from ptreloc.cli._common import EXIT_INTERRUPTED, fail
from ptreloc.errors import EXIT_OPERATIONAL, EXIT_USAGE

__all__ = ["main"]

# command name -> module defining a click command called ``command``.  Keep in help order.
COMMANDS: dict[str, str] = {
    "nodes": "ptreloc.cli.nodes",
    "doctor": "ptreloc.cli.doctor",
    "show": "ptreloc.cli.show",
    "migrate": "ptreloc.cli.migrate",
    "watch": "ptreloc.cli.watch",
    "bench": "ptreloc.cli.bench",
    "stress": "ptreloc.cli.stress",
    "census": "ptreloc.cli.census",
    "drain": "ptreloc.cli.drain",
}


# Examples shown under --help for commands whose module does not set its own ``epilog`` (the
# contract wants every --help to carry one; a command module may replace these with its own).
# "\b" keeps click from re-wrapping the lines.
_EXAMPLES: dict[str, str] = {
    "show": """\b
Examples:
  ptreloc show --pid 1234
  ptreloc show --pid 1234 --json | jq .remote_table_fraction""",
    "migrate": """\b
Examples:
  ptreloc migrate --pid 1234 --from-node 0 --to-node 1
  ptreloc migrate --pid 1234 --from-node 0 --to-node 1 --dry-run --json
  ptreloc migrate --pid 1234 --from-node 0 --to-node 0 --in-place   # one-node machine""",
    "watch": """\b
Examples:
  ptreloc watch --pid 1234
  ptreloc watch --pid 1234 --json --timeout 60 --interval 0.5""",
}


class _Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        module = COMMANDS.get(name)
        if module is None:
            return None
        cmd: click.Command = importlib.import_module(module).command
        if cmd.epilog is None and name in _EXAMPLES:
            cmd.epilog = _EXAMPLES[name]
        return cmd

    def main(
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """click's main, but every failure that escapes a command ends as ONE stderr line and a
        contract exit code.  click's own report of a usage error is four lines (usage, hint,
        blank, error) and an unexpected exception would be a traceback; scripts parse stderr."""
        if not standalone_mode:  # callers that want click's exceptions (tests) get them
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(
                args, prog_name or "ptreloc", complete_var, standalone_mode=False, **extra
            )
        except click.exceptions.NoArgsIsHelpError as err:
            # bare `ptreloc` (or a group without a command): the help is the useful answer
            err.show()
            sys.exit(err.exit_code)
        except click.UsageError as err:
            _usage_failure(err)
        except click.ClickException as err:
            fail(err.format_message(), err.exit_code)
        except click.Abort:  # Ctrl-C / EOF outside a command's own handler
            fail("interrupted (Ctrl-C) before the command finished", EXIT_INTERRUPTED)
        except BrokenPipeError:
            # the reader went away (`ptreloc ... | head`): silence the flush at exit
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives until exit
            fail("stdout was closed before the output was written (broken pipe)",
                 EXIT_OPERATIONAL)
        except Exception as err:  # noqa: BLE001 - the contract: never a traceback
            if os.environ.get("PTRELOC_DEBUG"):
                raise
            if isinstance(err, OSError):  # a file or device the command was pointed at
                where = f" ({err.filename})" if err.filename else ""
                fail(f"{err.strerror or err}{where}: check the path and its permissions",
                     EXIT_OPERATIONAL)
            fail(
                f"internal error ({type(err).__name__}: {err}); this is a bug - rerun with "
                "PTRELOC_DEBUG=1 for the traceback and report it",
                EXIT_OPERATIONAL,
            )
        # non-standalone click returns the code of an explicit exit (--help, --version: 0)
        sys.exit(rv if isinstance(rv, int) else 0)


def _usage_failure(err: click.UsageError) -> NoReturn:
    """One line: click's message, and where the fix is documented."""
    message = err.format_message().rstrip(".")
    message = message[:1].lower() + message[1:]
    path = err.ctx.command_path if err.ctx is not None else "ptreloc"
    fail(f"{message}; see '{path} --help'", EXIT_USAGE)


@click.group(
    cls=_Group,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="ptreloc")
def main() -> None:
    """Study, validate and measure NUMA page-table relocation.

    `migratepages` moves a process's data between NUMA nodes but leaves its page tables
    behind, so every TLB miss afterwards walks remote memory.  ptreloc mirrors a process's
    address space into emulated page tables that live in real NUMA memory, moves the real
    data with migrate_pages(2), relocates the tables, and measures what that costs.

    Exit codes: 0 success, 1 operational error, 2 usage error, 3 partial result (--strict),
    130 interrupted (Ctrl-C).  Every command takes --json (then stdout carries only JSON).

    \b
    Examples:
      ptreloc doctor
      ptreloc nodes --json
      ptreloc migrate --pid 1234 --from-node 0 --to-node 1
    """
