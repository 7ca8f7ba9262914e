"""A process some of whose pages the kernel cannot migrate for now: test scaffolding (run as a
script).

It maps ``--pages`` anonymous pages (no THP), writes each, then vmsplice(2)s ``--pin`` of them
into a pipe it does not read: the pipe holds a reference to each such page (get_user_pages),
so migration finds a reference it did not expect and fails with -EAGAIN - for real, as it
does for a page under O_DIRECT I/O - until the pipe is drained.  It prints one JSON line
(pid, address, pages, pinned addresses) and runs until end of file on stdin.

``--release-when-moved S``: once an unpinned page of the region has left the node it was on
(someone migrated the process), wait S seconds and drain the pipe: the pins go away, the pages
become movable again - a transient failure.
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import json
import mmap
import os
import sys
import threading
import time

PAGE = mmap.PAGESIZE
F_SETPIPE_SZ = 1031


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pages", type=int, default=256)
    parser.add_argument("--pin", type=int, default=4)
    parser.add_argument("--release-when-moved", type=float, default=None)
    args = parser.parse_args()
    libc = ctypes.CDLL(None, use_errno=True)
    region = mmap.mmap(-1, args.pages * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    region.madvise(mmap.MADV_NOHUGEPAGE)
    address = ctypes.addressof(ctypes.c_char.from_buffer(region))
    for i in range(args.pages):
        region[i * PAGE] = 1 + i % 250
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, F_SETPIPE_SZ, max(args.pin, 16) * PAGE)
    # every 8th page from the middle on: pinned pages among movable ones
    pinned = [address + (args.pages // 2 + 8 * k) * PAGE for k in range(args.pin)]
    for page in pinned:
        iov = _Iovec(page, PAGE)
        done = libc.vmsplice(write_end, ctypes.byref(iov), 1, 0)
        if done != PAGE:
            print(f"vmsplice: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
            return 1
    print(json.dumps({"pid": os.getpid(), "address": address, "pages": args.pages,
                      "pinned": pinned}), flush=True)
    if args.release_when_moved is not None:
        delay = args.release_when_moved

        def release() -> None:
            from ptreloc import numa

            probe = address  # page 0: never pinned
            first = numa.move_pages(0, [probe])[0]
            while numa.move_pages(0, [probe])[0] == first:
                time.sleep(0.02)
            time.sleep(delay)
            while os.read(read_end, 1 << 20):
                if not select_readable(read_end):
                    break

        threading.Thread(target=release, daemon=True).start()
    sys.stdin.read()
    return 0


def select_readable(fd: int) -> bool:
    import select

    return bool(select.select([fd], [], [], 0)[0])


if __name__ == "__main__":
    sys.exit(main())
