"""Spawn the workload (``python -m ptreloc.workload``: a real process with a known memory layout)
and run the ptreloc CLI for real.  ``live_workload`` is the tests' one way to start a workload;
``as_nobody`` and ``ptreloc_as_nobody`` run code as an unprivileged user."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ptreloc import workload
from ptreloc.workload import stop as stop_workload

__all__ = [
    "ROOT",
    "Live",
    "live_workload",
    "ptreloc",
    "as_nobody",
    "ptreloc_as_nobody",
    "numa_maps_pages",
]

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Live:
    pid: int
    address: int  # start of the workload's region
    pages: int  # pages in the region
    touched: int  # pages made resident (every ``every``-th page)
    every: int
    threads: int  # threads in the process
    page_size: int
    proc: subprocess.Popen[str]

    def page_addresses(self, page_size: int | None = None) -> list[int]:
        """Every page of the region (resident or not)."""
        step = page_size or self.page_size
        return [self.address + i * step for i in range(self.pages)]


def workload_env() -> dict[str, str]:
    """The environment for a process under study: ours without LD_PRELOAD.  Under
    scripts/test-sanitize the sanitizer runtime is preloaded for ptreloc's own processes; in a
    workload it would only add ASan's shadow mappings (terabytes of reserved address space) for
    ptreloc to read pagemap over.  PYTHONPATH names the ptreloc under test first (see
    ptreloc.workload.environment)."""
    return workload.environment({k: v for k, v in os.environ.items() if k != "LD_PRELOAD"})


@contextmanager
def live_workload(
    mib: int = 4,
    threads: int = 3,
    prefix: Sequence[str] = (),
    extra: Sequence[str] = (),
    *,
    pages: int | None = None,
    every: int = 1,
    **popen: object,
) -> Iterator[Live]:
    """Run the workload (optionally under ``prefix``, e.g. numactl) until the block ends.

    ``pages`` sizes the region in pages instead of ``mib``; ``every`` touches only every
    ``every``-th page; ``threads=0`` is a single-threaded process.  ``extra``: more
    workload options (--huge, --grow-mib M, ...; ptreloc/workload.py)."""
    size = ["--pages", str(pages)] if pages is not None else ["--mib", str(mib)]
    popen.setdefault("env", workload_env())
    proc = subprocess.Popen(
        [*prefix, *workload.command(*size, "--every", str(every), "--threads", str(threads),
                                    *extra)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        **popen,  # type: ignore[arg-type]
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"workload exited early with status {proc.wait()}")
        info = json.loads(line)
        yield Live(
            info["pid"],
            info["address"],
            info["pages"],
            info["touched"],
            every,
            info["threads"],
            info["page_size"],
            proc,
        )
    finally:
        stop_workload(proc)


def ptreloc(
    *args: str, user: str | None = None, timeout: float = 300, check: int | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``ptreloc`` command line as a real subprocess."""
    exe = Path(sys.executable).with_name("ptreloc")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "ptreloc"]
    env = dict(os.environ, COLUMNS="200")
    result = subprocess.run(
        [*cmd, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        user=user,
        cwd="/" if user else None,
    )
    if check is not None:
        assert result.returncode == check, (result.returncode, result.stdout, result.stderr)
    return result


def numa_maps_pages(pid: int) -> dict[int, int]:
    from ptreloc import numa

    return numa.numa_maps_node_pages(pid)


def _become_nobody() -> None:
    """In a forked child: drop to the nobody user for real (groups, gid, uid)."""
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
    # a uid change makes the process non-dumpable, hiding its own /proc files from it; a
    # process started as nobody would be dumpable (prctl(PR_SET_DUMPABLE, 1); ctypes, as this
    # is test scaffolding, not ptreloc)
    ctypes.CDLL(None, use_errno=True).prctl(4, 1, 0, 0, 0)


def as_nobody(action: Callable[[], object]) -> str:
    """Call ``action`` in a fork of this interpreter that dropped to the nobody user; return
    ``str()`` of its result, or ``"<ExceptionName>: <message>"`` when it raised."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        message = "no result"
        try:
            _become_nobody()
            message = str(action())
        except BaseException as err:  # noqa: BLE001 - everything goes back to the parent
            message = f"{type(err).__name__}: {err}"
        os.write(write_end, message.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode()
    os.waitpid(pid, 0)
    return message


def ptreloc_as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the command line in a fork of this interpreter that dropped to the nobody user.

    A real privilege drop (setgid/setuid), done by forking because nobody cannot exec this
    interpreter (it lives under /root).  stdout/stderr go to files read back afterwards.
    """
    import importlib
    import traceback

    from ptreloc.cli import COMMANDS, main

    # import everything now: nobody cannot read this interpreter's standard library under /root
    for module in COMMANDS.values():
        importlib.import_module(module)
    import ptreloc.mirror  # noqa: F401 - loaded now, while this user can still read it

    out = tempfile.TemporaryFile("w+")  # noqa: SIM115 - read back after the fork, then closed
    err = tempfile.TemporaryFile("w+")  # noqa: SIM115 - as above
    pid = os.fork()
    if pid == 0:
        code = 125
        try:
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            # pytest replaces sys.stdout/sys.stderr with its capture: write to the real fds
            sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - lives until _exit
            sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115 - lives until _exit
            _become_nobody()
            try:
                main.main(list(args), prog_name="ptreloc", standalone_mode=True)
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # noqa: BLE001 - report anything to the parent, then exit
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    out.seek(0)
    err.seek(0)
    with out, err:
        return subprocess.CompletedProcess(
            ["ptreloc", *args], os.waitstatus_to_exitcode(status), out.read(), err.read()
        )
