"""``ptreloc show`` and ``ptreloc watch`` on real processes; --help of the live-process commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from conftest import skip_or_fail
from live_workload import live_workload, ptreloc

from ptreloc.cli import main


@pytest.mark.parametrize("name", ["show", "migrate", "watch"])
def test_help(name: str) -> None:
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0
    assert "--pid" in result.output and "--json" in result.output
    assert "Exit codes" in result.output


def test_show_json_on_a_multithreaded_workload() -> None:
    with live_workload(mib=8, threads=4) as w:
        data = json.loads(ptreloc("show", "--pid", str(w.pid), "--json", check=0).stdout)
    assert data["pid"] == w.pid and data["threads"] == w.threads
    assert data["data"]["pages"]["0"] >= w.pages
    assert data["data"]["mb"]["0"] >= 8.0
    assert data["tables"]["0"]["pte"] >= 4  # 8 MiB spans at least 4 PTE tables
    assert data["tables"]["0"]["pgd"] == 1
    assert data["remote_table_fraction"] == 0.0
    assert data["geometry"] in ("x86_64_4l", "x86_64_5l")
    # as root the nodes come from the frames; move_pages only for [vdso] and the like
    if os.geteuid() == 0:
        assert data["data"]["node_source"] == "frames"
        assert 0 <= data["data"]["asked_move_pages"] < 64
    else:
        assert data["data"]["node_source"] == "move_pages"


def test_show_human() -> None:
    with live_workload(mib=2) as w, live_workload(pages=64, threads=0) as single:
        out = ptreloc("show", "--pid", str(w.pid), check=0).stdout
        one = ptreloc("show", "--pid", str(single.pid), check=0).stdout
    assert f"pid {w.pid}" in out and "remote_table_fraction: 0.000" in out
    assert "mirrored page tables" in out and "numa_maps" in out
    assert f"root, {w.threads} threads)" in out
    assert "root, 1 thread)" in one  # was "1 threads"
    # the data table says where the nodes came from (it said "move_pages query" also when
    # the frames gave them); the terminal width may wrap the title, so compare without spaces
    flat = "".join(out.split())
    if os.geteuid() == 0:
        assert "eachpage'snodefromitsframe" in flat and "move_pagesqueryofevery" not in flat
    else:
        assert "(move_pagesqueryofeverypage;" in flat


@pytest.mark.parametrize(("pid", "code"), [("2", 2), ("-3", 2), ("99999999", 1)])
def test_show_bad_pid(pid: str, code: int) -> None:
    r = ptreloc("show", "--pid", pid)
    assert r.returncode == code and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and r.stdout == ""


def _watch(pid: int, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "ptreloc", "watch", "--pid", str(pid), "--json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_watch_timeout_gives_start_and_stop() -> None:
    with live_workload(mib=2) as w:
        r = ptreloc(
            "watch", "--pid", str(w.pid), "--interval", "0.1", "--timeout", "0.5", "--json", check=0
        )
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert [e["event"] for e in events] == ["start", "stop"]
    assert events[-1]["reason"] == "timeout"
    assert events[0]["data"]["0"] >= w.pages
    # the start event says where the placement it starts from came from
    assert events[0]["placement"]["source"] in ("kernel", "cgroup", "inferred")
    assert events[0]["placement"]["source"] == "kernel" or events[0]["placement"]["reason"]


def test_watch_stops_cleanly_when_the_process_exits() -> None:
    with live_workload(mib=2) as w:
        watcher = _watch(w.pid, "--interval", "0.1")
        assert watcher.stdout is not None
        start = json.loads(watcher.stdout.readline())
        assert start["event"] == "start"
        w.proc.send_signal(signal.SIGTERM)
        w.proc.wait()
        out, err = watcher.communicate(timeout=60)
    last = json.loads(out.splitlines()[-1])
    assert last["event"] == "exit" and watcher.returncode == 0, err


def test_watch_ctrl_c_exits_zero() -> None:
    with live_workload(mib=2) as w:
        watcher = _watch(w.pid, "--interval", "0.1")
        assert watcher.stdout is not None
        assert json.loads(watcher.stdout.readline())["event"] == "start"
        watcher.send_signal(signal.SIGINT)
        out, err = watcher.communicate(timeout=60)
    assert watcher.returncode == 0, err
    assert json.loads(out.splitlines()[-1])["reason"] == "interrupted"
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--pid", "2"], 2),
        (["--pid", "99999999"], 1),
        (["--pid", "1", "--interval", "0"], 2),
        (["--pid", "1", "--count", "0"], 2),
        (["--pid", "1", "--timeout", "-1"], 2),
    ],
)
def test_watch_bad_input(args: list[str], code: int) -> None:
    r = ptreloc("watch", *args)
    assert r.returncode == code, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


def _grow(w: object) -> dict:
    """SIGUSR1 the workload (started with --grow-mib) and read what it mapped."""
    w.proc.send_signal(signal.SIGUSR1)  # type: ignore[attr-defined]
    return json.loads(w.proc.stdout.readline())  # type: ignore[attr-defined]


def test_mirror_refresh_follows_pages_faulted_in_later() -> None:
    from ptreloc import proc
    from ptreloc.mirror import mirror

    with (
        live_workload(mib=2, threads=1, extra=["--grow-mib", "4"]) as w,
        mirror(proc.snapshot(w.pid)) as m,
    ):
        pte_before = m.tables()[0]["pte"]
        for _ in range(100):  # the workload's runtime may still fault a few pages in
            if m.refresh() == (0, 0):  # nothing changed: nothing done
                break
            time.sleep(0.05)
        else:
            pytest.fail("the workload never stopped changing its resident pages")
        grown = _grow(w)
        added, _removed = m.refresh()
        assert added >= grown["pages"]
        new = grown["address"]
        t = m.mm.translate(new + (grown["pages"] - 1) * 4096)
        assert t is not None and t.phys == new + (grown["pages"] - 1) * 4096
        assert m.check_translations() == 0
        assert len(m.data_nodes) == len(m.snapshot.resident)
        assert m.tables()[0]["pte"] >= pte_before + 2  # 4 MiB more needs 2+ PTE tables
        assert m.remote_fraction().fraction == 0.0


def test_a_refresh_tells_where_the_pages_are_from_the_frames_it_read(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """As root the refresh's pagemap scan shows frame numbers, so a watch's look needs no
    move_pages query of every page: current_nodes() answers from the frames (move_pages only
    for [vdso] and the like), the same answer as the query, whether the pages changed or not."""
    from ptreloc import numa, proc
    from ptreloc.mirror import mirror

    if os.geteuid() != 0:
        skip_or_fail("frame numbers are shown to root only (CI runs as root)")
    asked: list[int] = []
    query = numa.move_pages

    def counting(pid: int, addresses: object, *args: object, **kw: object) -> list[int]:
        asked.append(len(addresses))  # type: ignore[arg-type]
        return query(pid, addresses, *args, **kw)  # type: ignore[arg-type]

    with (
        live_workload(mib=2, threads=1, extra=["--grow-mib", "4"]) as w,
        mirror(proc.snapshot(w.pid)) as m,
    ):
        for grow in (False, True):
            if grow:
                _grow(w)
            monkeypatch.setattr(numa, "move_pages", counting)
            m.refresh()
            asked.clear()
            now = m.current_nodes()
            monkeypatch.setattr(numa, "move_pages", query)
            pages = len(m.snapshot.resident)
            assert len(now) == pages and sum(asked) < 64, (grow, asked)
            want = query(w.pid, m.snapshot.resident)
            assert sum(1 for a, b in zip(now, want, strict=True) if a != b) <= 2


def test_watch_mirrors_pages_that_became_resident_after_it_started() -> None:
    with live_workload(mib=2, threads=1, extra=["--grow-mib", "4"]) as w:
        watcher = _watch(w.pid, "--interval", "0.1", "--timeout", "60")
        assert watcher.stdout is not None
        first = watcher.stdout.readline()
        assert first, watcher.communicate(timeout=60)[1]  # the watch failed: say why
        start = json.loads(first)
        grown = _grow(w)
        while True:
            event = json.loads(watcher.stdout.readline())
            if event["event"] == "pages_changed":
                break
            assert event["event"] not in ("stop", "exit"), event
        watcher.send_signal(signal.SIGINT)
        watcher.communicate(timeout=60)
    assert event["pages_added"] >= grown["pages"]
    assert event["resident_pages"] >= start["resident_pages"] + grown["pages"]
    assert event["data"]["0"] >= start["data"]["0"] + grown["pages"]
    assert event["tables"]["0"]["pte"] >= start["tables"]["0"]["pte"] + 2


def test_show_names_where_the_placement_came_from(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a kernel walk (this host has no /proc/kcore, or PTRELOC_PLACEMENT=inferred) the
    placement is "inferred" with its reason, in the JSON and next to the fraction."""
    with live_workload(mib=2) as w:
        data = json.loads(ptreloc("show", "--pid", str(w.pid), "--json", check=0).stdout)
        human = ptreloc("show", "--pid", str(w.pid), check=0).stdout
        monkeypatch.setenv("PTRELOC_PLACEMENT", "inferred")
        forced = json.loads(ptreloc("show", "--pid", str(w.pid), "--json", check=0).stdout)
    where = data["placement"]
    assert where["source"] in ("kernel", "inferred", "cgroup")
    if where["source"] != "kernel":
        assert where["reason"] and "inferred (" in human.replace("\n", " ")
    else:
        assert "measured" in human
    assert where["contradictions"] == []
    assert forced["placement"] == {
        "source": "inferred", "reason": "PTRELOC_PLACEMENT=inferred is set", "contradictions": []}


def test_watcher_steps_one_look_at_a_time() -> None:
    """The watch driver without its pacing: start, a look at a quiet process (no events; a
    look may at most report pages the runtime faulted in), then the exit."""
    from ptreloc.errors import UsageError
    from ptreloc.watch import Watcher

    with live_workload(mib=2, threads=0) as w, Watcher(w.pid) as watcher:
        with pytest.raises(UsageError, match="call start"):
            watcher.step()
        start = watcher.start()
        assert start.event == "start" and start.data["0"] >= w.pages
        assert {e.event for e in watcher.step()} <= {"pages_changed"}
        assert not watcher.exited
        w.proc.send_signal(signal.SIGTERM)
        w.proc.wait()
        events = watcher.step()
        assert [e.event for e in events] == ["exit"] and watcher.exited
    assert watcher.m is None  # the mirror was freed with the block


def test_watcher_refuses_pid_0() -> None:
    from ptreloc.errors import UsageError
    from ptreloc.watch import Watcher

    with pytest.raises(UsageError, match="pid 0 is not a process id"):
        Watcher(0)
