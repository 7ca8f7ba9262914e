"""The lock order of csrc/lock.h ("LOCK ORDER"), exercised where it is least obvious.

The stop strategy nests cpus_lock -> every CPU's busy lock -> page_table_lock, while the rewalk
strategy shoots down - taking cpus_lock - with the batch's page_table_lock held: the opposite
nesting.  lock.h argues that this cannot deadlock because both nestings only ever run inside a
relocation, and relocations serialize on reloc_mutex.  This test runs the two strategies
against each other, from two threads, on one address space that CPU threads keep faulting in
and a third thread keeps unmapping and cleaning (the other shootdown callers), so that a
change that lets the two nestings overlap (dropping reloc_mutex, or a shootdown under a table
lock outside a relocation) hangs here instead of somewhere in production.
"""

from __future__ import annotations

import threading
import time

import pytest

from ptreloc.core import AddressSpace, Arena, run_cpus
from ptreloc.relocate import relocate

VA = 0x40_0000 * 16
LENGTH = 2 << 20  # one PTE table per 2 MiB: several tables at the lowest level
DEADLINE_S = 120  # a deadlock never finishes; a slow sanitizer build takes a few seconds


@pytest.mark.tsan
def test_stop_and_rewalk_relocations_race_without_deadlock():
    arena = Arena("x86_64_4l", nodes=2, frames_per_node=512, bind=False)
    mm = AddressSpace(arena, node=0)
    mm.add_region(VA, 2 * LENGTH)
    mm.map(VA + LENGTH, LENGTH)  # mapped leaves for the unmapper to clean and unmap
    stop = threading.Event()
    errors: list[BaseException] = []
    counts = {"stop": 0, "rewalk": 0, "cleaner": 0, "cpus": 0}

    def guarded(name, body):
        def run():
            try:
                while not stop.is_set():
                    body()
                    counts[name] += 1
            except BaseException as e:  # reported by the main thread
                errors.append(e)
                stop.set()
        return threading.Thread(target=run, name=name, daemon=True)

    def stop_strategy():
        relocate(mm, 0, 1, strategy="stop", batch=2)
        relocate(mm, 1, 0, strategy="stop", batch=2)

    def rewalk_strategy():
        relocate(mm, 1, 0, strategy="rewalk", batch=2)
        relocate(mm, 0, 1, strategy="rewalk", batch=2)

    def cleaner():
        page = VA + LENGTH
        mm.test_and_clear_dirty(page)  # shoots down when dirty, after dropping its lock
        mm.unmap(VA, 4096)  # a demand page: the CPUs fault it back
        mm.protect(page, 4096, writable=True)

    def cpus():
        run_cpus(mm, 2, 2000, VA, LENGTH, write_pct=50, seed=counts["cpus"] + 1)

    threads = [guarded("stop", stop_strategy), guarded("rewalk", rewalk_strategy),
               guarded("cleaner", cleaner), guarded("cpus", cpus)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    stop.set()
    for t in threads:
        t.join(DEADLINE_S)
    stuck = [t.name for t in threads if t.is_alive()]
    assert not stuck, f"deadlock: {stuck} still running {DEADLINE_S} s after the stop"
    assert not errors, errors
    assert counts["stop"] and counts["rewalk"] and counts["cpus"], counts
    assert arena.freed_frame_accesses == 0
    mm.close()
    assert arena.frames_in_use == 0
    arena.close()
