"""A real multi-threaded workload for ptreloc to look at and migrate.

usage: python -m ptreloc.workload [--mib N | --pages P] [--every K] [--threads T]
                                  [--touch-interval S] [--huge] [--grow-mib M] [--ignore-stdin]

Maps N MiB (or P pages) of private anonymous memory, has T threads touch (write) their share of
it so every page (with --every K: every K-th page) is resident, prints ONE JSON line on stdout
once it is:

    {"ready": true, "pid": 1234, "address": 140..., "pages": 16384, "touched": 16384,
     "threads": 4, ...}

--threads 0 makes a single-threaded process: the main thread touches the pages and waits itself
(for tests that count a process's threads).

With --grow-mib M, each SIGUSR1 maps and touches M MiB more (same page kind) and prints
{"grown": true, "address": ..., "pages": ...} for the new region: memory that becomes resident
after a tool started looking.

then waits: until stdin reaches end of file (unless --ignore-stdin), or SIGTERM/SIGINT.  With
--touch-interval S the threads keep re-writing their pages every S seconds meanwhile (so the
data stays hot, as a real workload's would, and NUMA balancing has accesses to sample).
4 KiB pages unless --huge (MADV_NOHUGEPAGE by default: a THP-backed region has no
lowest-level tables to mirror).  With --huge the region starts on a 2 MiB boundary and is
madvise(MADV_HUGEPAGE)d, so the kernel backs it with transparent huge pages when THP is
"always" or "madvise" (/sys/kernel/mm/transparent_hugepage/enabled); "address" is that start.

It is part of the installed package (``ptreloc bench`` runs it; so do the tests, through
:func:`command`), and uses only the standard library: the process under study holds no more
than an interpreter, this module and ``ptreloc.errors``.  Bind it to a node with numactl:
``numactl --membind=0 --cpunodebind=0 python3 -m ptreloc.workload --mib 64``.
(scripts/workload.py in a source checkout is the same program for the system python3.)
"""

from __future__ import annotations

import argparse
import ctypes
import json
import mmap
import os
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["MODULE", "command", "environment", "main", "spawn", "stop"]

#: what ``python -m`` runs
MODULE = "ptreloc.workload"


def command(*args: str, python: str | None = None) -> list[str]:
    """The argv that runs this workload with ``args`` (its options, e.g. ``--mib 4``) in this
    interpreter (or ``python``).  ``-P``: the child's working directory does not come first on
    its path, so the ptreloc it imports is the one :func:`environment` names - this one."""
    return [python or sys.executable, "-P", "-m", MODULE, *args]


def environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: ours) with the directory this package was imported from first on
    PYTHONPATH: the workload runs the same ptreloc as its parent - an installed one, a source
    checkout, or a sanitized copy alike."""
    env = dict(os.environ if base is None else base)
    here = str(Path(__file__).resolve().parent.parent)
    rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != here]
    env["PYTHONPATH"] = os.pathsep.join([here, *rest])
    return env


def spawn(mib: int, prefix: Sequence[str] = (), extra: Sequence[str] = (), *, threads: int = 2,
          env: Mapping[str, str] | None = None) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Start the workload (``mib`` MiB resident, ``threads`` touching threads) and return it with
    its ready line, parsed.  ``prefix``: e.g. a numactl binding; ``extra``: more options
    (``--every 512``).  It ends when :func:`stop` closes its stdin.  A child that exits or
    says anything but its ready line is stopped and raises PtrelocError."""
    from ptreloc.errors import PtrelocError

    proc = subprocess.Popen(
        [*prefix, *command("--mib", str(mib), "--threads", str(threads), *extra)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=environment(env))
    assert proc.stdout is not None
    line = proc.stdout.readline()
    try:
        info = json.loads(line) if line else {}
    except ValueError:
        info = {}
    if not isinstance(info, dict) or not info.get("ready"):
        stop(proc)
        raise PtrelocError(f"the workload (python -m {MODULE}) did not report ready (exit "
                           f"status {proc.returncode}, said {line.strip()[:80]!r})")
    return proc, info


def stop(proc: subprocess.Popen[str]) -> None:
    """End a workload: end of file on its stdin, a kill if it does not exit within 30 s."""
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}",
                                     description=(__doc__ or "").split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--mib", type=int, default=64, help="MiB to map and touch (default 64)")
    size.add_argument("--pages", type=int, help="pages to map and touch (instead of --mib)")
    parser.add_argument(
        "--every", type=int, default=1, help="touch every K-th page only (default 1: all)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=4,
        help="touching threads (default 4; 0: the main thread touches, no other thread)",
    )
    parser.add_argument(
        "--touch-interval",
        type=float,
        default=0.0,
        help="re-touch every page every S seconds while waiting (0: just wait)",
    )
    parser.add_argument(
        "--huge",
        action="store_true",
        help="2 MiB-aligned region with MADV_HUGEPAGE (transparent huge pages)",
    )
    parser.add_argument(
        "--grow-mib", type=int, default=0, help="on SIGUSR1, map and touch this many MiB more"
    )
    parser.add_argument(
        "--ignore-stdin", action="store_true", help="wait for SIGTERM/SIGINT only, not stdin EOF"
    )
    args = parser.parse_args(argv)
    if args.mib < 1 or (args.pages is not None and args.pages < 1) or args.every < 1:
        parser.error("--mib, --pages and --every must be at least 1")
    if args.threads < 0 or args.touch_interval < 0:
        parser.error("--threads and --touch-interval must be at least 0")

    page = mmap.PAGESIZE
    pages = args.pages if args.pages is not None else args.mib * (1 << 20) // page
    # private anonymous (Python's default for fd -1 is MAP_SHARED, i.e. shmem, which
    # migrate_pages treats differently)
    huge = 2 << 20
    # --huge: map one huge page more, so a huge-page-aligned start exists inside the mapping
    span = pages * page + (huge if args.huge else 0)
    region = mmap.mmap(-1, span, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    base = ctypes.addressof(ctypes.c_char.from_buffer(region))
    offset = (-base) % huge if args.huge else 0
    if args.huge:
        region.madvise(mmap.MADV_HUGEPAGE, offset, pages * page)
    elif hasattr(mmap, "MADV_NOHUGEPAGE"):
        region.madvise(mmap.MADV_NOHUGEPAGE)
    address = base + offset
    indices = range(0, pages, args.every)  # the pages made resident
    stop = threading.Event()

    def touch(share: range, value: int) -> None:
        for i in share:
            region[offset + i * page] = value

    if args.threads:
        touched = threading.Barrier(args.threads + 1)

        def worker(share: range) -> None:
            value = 1
            touch(share, value)
            touched.wait()
            # the threads stay alive until the end either way: a migration moves a live,
            # multi-threaded process, not one whose workers have already finished
            while not stop.wait(args.touch_interval or None):
                value = value % 255 + 1
                touch(share, value)

        threads = [
            threading.Thread(
                target=worker, args=(indices[i :: args.threads],), name=f"touch-{i}", daemon=True
            )
            for i in range(args.threads)
        ]
        for t in threads:
            t.start()
        touched.wait()
    else:
        touch(indices, 1)
    # the touching threads, the main thread and the stdin reader (--threads 0: main alone)
    running = args.threads + 1 + (0 if args.ignore_stdin else 1) if args.threads else 1
    print(
        json.dumps(
            {
                "ready": True,
                "pid": os.getpid(),
                "address": address,
                "pages": pages,
                "touched": len(indices),
                "page_size": page,
                "threads": running,
            }
        ),
        flush=True,
    )

    def finish(_signo: int, _frame: object) -> None:
        stop.set()

    grown: list[mmap.mmap] = []  # kept referenced: unmapping them would undo the growth

    def grow(_signo: int, _frame: object) -> None:
        extra = args.grow_mib * (1 << 20) // page
        more = mmap.mmap(-1, extra * page, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        if not args.huge and hasattr(mmap, "MADV_NOHUGEPAGE"):
            more.madvise(mmap.MADV_NOHUGEPAGE)
        for i in range(extra):
            more[i * page] = 1
        grown.append(more)
        start = ctypes.addressof(ctypes.c_char.from_buffer(more))
        print(json.dumps({"grown": True, "address": start, "pages": extra}), flush=True)

    if args.grow_mib > 0:
        signal.signal(signal.SIGUSR1, grow)
    signal.signal(signal.SIGTERM, finish)
    signal.signal(signal.SIGINT, finish)
    if not args.threads:
        _wait_alone(stop, args.touch_interval, not args.ignore_stdin, lambda v: touch(indices, v))
        return 0
    # wait for end of file on stdin in a thread, so a signal can end the wait too
    if not args.ignore_stdin:
        def read_to_eof() -> None:
            sys.stdin.read()
            stop.set()

        reader = threading.Thread(target=read_to_eof, daemon=True)
        reader.start()
    stop.wait()
    return 0


def _wait_alone(
    stop: threading.Event, interval: float, watch_stdin: bool, retouch: Callable[[int], None]
) -> None:
    """The single-threaded (--threads 0) wait: until stdin's end of file or a signal's handler
    sets ``stop``, re-touching every ``interval`` seconds.  select() on stdin and on a signal
    wakeup pipe: Python retries an interrupted select() after running the handler (PEP 475), so
    the byte the wakeup pipe gets is what makes it return."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    fds = [wake_r, 0] if watch_stdin else [wake_r]
    value = 1
    while not stop.is_set():
        readable, _, _ = select.select(fds, [], [], interval or None)
        if not readable:
            value = value % 255 + 1
            retouch(value)
        if wake_r in readable:
            os.read(wake_r, 512)
        if 0 in readable and not os.read(0, 1 << 16):
            stop.set()


if __name__ == "__main__":
    sys.exit(main())
