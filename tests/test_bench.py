"""``ptreloc bench``: every suite's keys from a real --quick run, the CLI's errors, the plot
option, the C loops in both builds, the histogram encoding, and the statistics on known inputs."""

from __future__ import annotations

import json
import math
import os
import pathlib
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ptreloc import _native, bench
from ptreloc.bench import mirror as bench_mirror
from ptreloc.bench import relocate as bench_relocate
from ptreloc.cli import main
from ptreloc.errors import AddressError, RelocationUnsupported, UsageError

SCRIPT = Path(sys.executable).parent / "ptreloc"
reloc_rounds_for = bench_relocate.rounds_for
ONE_NODE = len(bench.machine.real_nodes()) < 2

# What docs/BENCHMARKS.md documents and scripts/ci-gate checks, per suite.
KEYS = {
    "fault": ["bare.overhead_pct", "bare.ci95_pct", "bare.mean_pct", "bare.t_ci95_pct",
              "bare.rounds", "bare.ns_per_fault.relo", "bare.ns_per_fault.norelo",
              "with_data.overhead_pct",
              "with_data.ci95_pct", "with_data.ns_per_fault.relo", "goals.bare.overhead_pct.met",
              "goals.with_data.overhead_pct.met"],
    "walk": ["ratio_vs_chase", "ci95", "local.ns_per_walk.cpu", "local.ns_per_walk.chase",
             "local.pwc_hit_rate", "remote", "goals.ratio_vs_chase.met"],
    "relocate": ["ratio_vs_memcpy", "ci95", "ratio_vs_memcpy_poisoned", "growth_exponent", "sizes",
                 "at_1mib.ci95", "at_1mib.rounds",
                 "at_1mib.ratio_vs_memcpy", "at_1mib.ratio_vs_memcpy_poisoned",
                 "goals.ratio_vs_memcpy.met", "goals.at_1mib.ratio_vs_memcpy.met",
                 "goals.at_64gib.ratio_vs_memcpy.met",
                 "goals.growth_exponent.met"],
    "pool": ["evacuate.ratio_vs_memcpy", "evacuate.ns_per_frame", "evacuate.memcpy_ns_per_frame",
             "evacuate.frames", "evacuate.frames_left", "compact.ratio_vs_memcpy",
             "compact.ns_per_frame", "compact.memcpy_ns_per_frame", "compact.frames",
             "compact.runs_2m", "compact.packed", "compact.largest_free_run.before",
             "compact.largest_free_run.after", "compact.free_2m_runs.before",
             "compact.free_2m_runs.after", "tables", "mapped_bytes"],
    "concurrent": ["rewalk.p99_ratio", "rewalk.p999_ratio", "rewalk.by_batch", "stop.p99_ratio",
                   "stop.p999_ratio", "stop.p99_ratio_range", "stop.p99_ratio_pooled",
                   "stop.idle.p999_ns", "stop.pause_max_ms",
                   "stop.pause_mean_ms", "stop.idle.p50_ns", "stop.idle.p99_ns",
                   "stop.relocating.max_ns", "goals.rewalk.p99_ratio.met"],
    "mirror": ["gib_per_s", "resident_gib", "seconds", "ratio_vs_pagemap_read"],
}


def _get(d, dotted):
    for part in dotted.split("."):
        assert isinstance(d, dict) and part in d, f"missing {dotted}"
        d = d[part]
    return d


@pytest.fixture(scope="module")
def quick() -> dict:
    """One real `ptreloc bench --quick --json` of the installed script (every host suite)."""
    proc = subprocess.run([str(SCRIPT), "bench", "--quick", "--json"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no progress when stderr is not a terminal
    return json.loads(proc.stdout)


@pytest.mark.parametrize("suite", list(KEYS))
def test_quick_json_has_every_key(quick, suite):
    for key in KEYS[suite]:
        _get(quick[suite], key)


def test_quick_seconds_add_up(quick):
    """Each suite's ``seconds`` is its own wall time: none took more than the whole run, the
    concurrent suite at least its timed phases, and together they are the run (meta.seconds)
    up to the rounding to 1/100 s of each figure."""
    ran = [s for s in bench.SUITES if s in quick]
    assert ran == list(bench.SUITES)
    secs = {s: quick[s]["seconds"] for s in ran}
    total = quick["meta"]["seconds"]
    assert all(isinstance(v, float) and math.isfinite(v) for v in [*secs.values(), total])
    for s in ran:
        assert 0 <= secs[s] <= total, (s, secs[s], total)
    p = bench.plan(True)
    # two layouts x (each rewalk batch + stop) x rounds x (idle + relocating) phases
    phases = 2 * (len(p.conc_batches) + 1) * p.conc_rounds * 2
    assert secs["concurrent"] >= phases * p.conc_phase_s * 0.95
    assert total - 0.05 * len(ran) <= sum(secs.values()) <= total + 0.01 * len(ran)


def test_quick_fault_figures_are_numbers_with_an_interval(quick):
    for v in ("bare", "with_data"):
        r = quick["fault"][v]
        lo, hi = r["ci95_pct"]
        assert lo <= r["overhead_pct"] <= hi
        assert r["ns_per_fault"]["relo"] > 0 and r["ns_per_fault"]["norelo"] > 0


def test_relocate_rounds_grow_as_the_size_shrinks():
    mib, full = 1 << 20, bench.plan(False).reloc_rounds
    assert [reloc_rounds_for(s * mib, full) for s in (1, 16, 256, 4096, 65536)] == [
        30 * full, 16 * full, full, full, full]
    assert reloc_rounds_for(1 * mib, 3) == 90


def test_quick_relocate_sizes_and_exponent(quick):
    sizes = quick["relocate"]["sizes"]
    assert [s["mapped_bytes"] for s in sizes] == list(bench.plan(True).reloc_sizes)
    # 1 MiB of x86-64 4-level: one table per level
    assert sizes[0]["frames"] == 4 and sizes[0]["table_bytes"] == 4 * 4096
    assert all(s["ratio_vs_memcpy"] > 0 and s["poisoned"]["ratio_vs_memcpy"] > 0 for s in sizes)
    # more mapped, more tables: the sizes are distinct points of the fit
    assert [s["frames"] for s in sizes] == sorted({s["frames"] for s in sizes})
    for s in sizes:  # the per-frame figure is the median time over the frames moved
        assert s["ns_per_frame"] == pytest.approx(s["reloc_ns"] / s["frames"], abs=0.051)
        # the median's interval holds it; small sizes get more rounds (rounds_for)
        lo, hi = s["ci95"]
        assert lo <= s["ratio_vs_memcpy"] <= hi
        assert s["rounds"] == reloc_rounds_for(s["mapped_bytes"], bench.plan(True).reloc_rounds)
    # the exponent is the log-log slope of exactly the points reported, and the headline the
    # largest size's ratio
    slope = bench.loglog_slope([s["frames"] for s in sizes], [s["reloc_ns"] for s in sizes])
    assert quick["relocate"]["growth_exponent"] == pytest.approx(slope, abs=0.0005)
    assert quick["relocate"]["ratio_vs_memcpy"] == sizes[-1]["ratio_vs_memcpy"]
    # every size under its stable key (what the per-size goals read)
    for s in sizes:
        at = quick["relocate"][bench_relocate.size_key(s["mapped_bytes"])]
        assert at["ratio_vs_memcpy"] == s["ratio_vs_memcpy"] and at["frames"] == s["frames"]
    assert quick["relocate"]["at_1mib"]["frames"] == 4
    assert bench_relocate.size_key(64 << 30) == "at_64gib"
    # the phase breakdown comes from the interleaved phase-timed rounds: real times, and
    # their own ratio beside the headline's
    for s in sizes:
        assert s["phase_ns"]["total"] > 0 and s["phase_ns"]["copy"] > 0
        assert s["ratio_vs_memcpy_phase_timed"] > 0
        at = quick["relocate"][bench_relocate.size_key(s["mapped_bytes"])]
        assert at["ratio_vs_memcpy_phase_timed"] == s["ratio_vs_memcpy_phase_timed"]


@pytest.mark.parametrize("timed", [True, False])
def test_relocate_bench_rounds_with_and_without_phase_clocks(timed):
    """An untimed round (PTR_RELOC_F_UNTIMED) moves every table as a timed one and reads no
    clock inside the relocation (every phase time 0); a timed one has its phases."""
    c = _native.core("relo")
    r = _native.BenchReloc(c, "x86_64_4l", 16 << 20, (-1, -1), "rewalk", 64)
    try:
        r.set_timed(timed)
        for memcpy_first in (True, False):  # there and back: both pools
            row = r.round(memcpy_first)
            assert row["frames"] == 11 and row["reloc_ns"] > 0 and row["memcpy_ns"] > 0
            if timed:
                assert row["timings_ns"]["total"] > 0 and row["timings_ns"]["copy"] > 0
            else:
                assert set(row["timings_ns"].values()) == {0}
    finally:
        r.close()


def test_quick_mirror_measured_the_live_workload(quick):
    m = quick["mirror"]
    p = bench.plan(True)
    assert m["sizes_mib"] == list(p.mirror_mib) and m["rounds"] == p.mirror_rounds
    assert m["workload_mib"] == p.mirror_mib[0] == m["largest"]["workload_mib"]
    # every page of the workload's region is resident (and the interpreter's own pages too)
    assert m["resident_gib"] * 1024 >= p.mirror_mib[0]
    assert m["resident_gib"] * 1024 < p.mirror_mib[0] + 512
    assert m["gib_per_s"] > 0 and m["ratio_vs_pagemap_read"] > 0
    assert 0 < m["snapshot_share"] <= 1
    lo, hi = m["ci95"]
    assert lo <= m["ratio_vs_pagemap_read"] <= hi
    # root on the host: the nodes come from the frames, not from move_pages
    assert m["node_source"] == ("frames" if os.geteuid() == 0 else "move_pages")
    assert set(m["by_size"]) == {str(x) for x in p.mirror_mib}
    mem = m["memory"]
    assert mem["resident_pages"] >= p.mirror_mib[-1] * 256
    assert mem["baseline_peak_rss_mb"] > 0 and mem["runs"] == bench_mirror.MEMORY_RUNS
    # 32 MiB is within the peak's noise (a CI run saw -1.4 B/page from single runs): the figure
    # may be below zero only by the measured spread, and far below the old 50 B/page
    assert -mem["noise_bytes_per_resident_page"] - 0.2 <= mem["bytes_per_resident_page"] < 200
    keys = {g["key"] for g in quick["goals"]}
    assert {"mirror.ratio_vs_pagemap_read", "mirror.largest.ratio_vs_pagemap_read",
            "mirror.memory.bytes_per_resident_page"} <= keys


def test_mirror_mib_is_checked_before_measuring(monkeypatch):
    """--mirror-mib takes the ktables option's rules: a bad size is refused (exit 2) before
    anything is measured."""
    _refuse_to_measure(monkeypatch)
    for value in ("0", "abc", "1024,x", ""):
        result = CliRunner().invoke(main, ["bench", "mirror", "--mirror-mib", value])
        assert result.exit_code == 2, (value, result.output)
        assert "--mirror-mib" in result.output
    assert bench.plan(False).mirror_mib == bench.MIRROR_MIB == (1024, 8192)
    assert bench.plan(True, mirror_mib=[64, 32, 32]).mirror_mib == (32, 64)


def test_quick_concurrent_measured_both_phases(quick):
    c = quick["concurrent"]
    for r in [*c["rewalk"]["by_batch"].values(), c["stop"]]:
        assert r["idle"]["accesses"] > 0 and r["relocating"]["accesses"] > 0
        assert r["relocations"] > 0
        assert r["idle"]["p50_ns"] <= r["idle"]["p99_ns"] <= r["idle"]["max_ns"] * 1.04
        assert r["idle"]["p99_ns"] <= r["idle"]["p999_ns"] <= r["idle"]["max_ns"] * 1.04
        # one per-round ratio per round: idle and relocating phases both measured every round
        assert r["rounds"] + r["rounds_excluded"] == bench.plan(True).conc_rounds
        assert r["rounds"] >= 1
        lo, hi = r["p99_ratio_range"]
        assert lo <= r["p99_ratio"] <= hi


def test_quick_goals_report_verdicts_consistently(quick):
    keys = [g["key"] for g in quick["goals"]]
    # a suite skipped here (with its reason) has no verdict; every other goal has one
    assert keys == [k for suite, k, _ in bench.GOALS if not quick[suite].get("skipped")]
    for g in quick["goals"]:
        assert g["verdict"] == bench.verdict(g["value"], g["target"], g["interval"])
        assert g["met"] is {"met": True, "missed": False, "undecided": None}[g["verdict"]]
        if g["key"] in bench.GOAL_INTERVALS:  # the interval the verdict used is the figure's
            if g["value"] is None:  # a size the quick plan does not run (relocate at 64 GiB)
                assert g["interval"] is None and g["verdict"] == "missed"
            else:
                assert g["interval"] == _get(quick, bench.GOAL_INTERVALS[g["key"]])


def test_quick_run_says_it_is_not_a_measurement(quick):
    assert quick["meta"]["quick"] is True and quick["meta"]["shape_only"] is True
    assert "not a measurement" in quick["meta"]["note"]


@pytest.mark.skipif(not ONE_NODE, reason="a multi-node host runs the migrate suite for real")
def test_quick_migrate_is_skipped_with_a_reason_on_one_node(quick):
    assert quick["migrate"]["skipped"] is True
    assert "--in-vm" in quick["migrate"]["reason"]


KTABLES_UNAVAILABLE = not bench.kernel_walk_available()[0]


@pytest.mark.skipif(not KTABLES_UNAVAILABLE, reason="the kernel walk works here: the suite runs "
                    "(tests/test_bench_ktables_multinode.py checks its figures)")
def test_quick_ktables_is_skipped_with_the_reason(quick):
    """On the host (no /proc/kcore in its 6.18 kernel, or not root) the suite is skipped, not an
    error: the reason is kernel_tables.availability()'s, the sizes it would have measured are
    said, and it has no goal verdict (a 'missed' for a suite that could not run would lie)."""
    from ptreloc import kernel_tables

    k = quick["ktables"]
    ok, reason = kernel_tables.availability()
    assert ok is False
    assert k["skipped"] is True and reason in k["reason"]
    assert k["reason"].startswith("the kernel walk is unavailable here: ")
    if os.geteuid() == 0 and not Path("/proc/kcore").exists():
        assert "no /proc/kcore" in k["reason"]
    assert k["sizes_mib"] == list(bench.KTABLES_MIB_QUICK)
    assert "goals" not in k and "ratio_vs_pagemap_read" not in k
    assert not [g for g in quick["goals"] if g["key"].startswith("ktables.")]
    assert k["seconds"] < 10  # decided at once, nothing spawned


def test_ktables_skipped_renders_its_reason_and_exits_0(monkeypatch):
    from ptreloc import kernel_tables

    monkeypatch.setattr(kernel_tables, "availability",
                        lambda *a, **k: (False, "not root: reading /proc/kcore needs root"))
    result = CliRunner().invoke(main, ["bench", "ktables", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["ktables"]["skipped"] is True
    assert data["ktables"]["sizes_mib"] == list(bench.KTABLES_MIB)  # full run: 1 and 8 GiB
    assert data["goals"] == []
    human = CliRunner().invoke(main, ["bench", "ktables", "--ktables-mib", "64"],
                               env={"COLUMNS": "200"})
    assert human.exit_code == 0
    assert "skipped" in human.output and "not root: reading /proc/kcore" in human.output


@pytest.mark.parametrize(("value", "message"), [
    ("1024,x", "'x' is not a size in MiB"),
    ("0", "0 is not a size in MiB"),
    ("", "'' is not a size in MiB"),
    ("-5", "'-5' is not a size in MiB"),
])
def test_ktables_mib_is_checked_before_measuring(monkeypatch, value, message):
    _refuse_to_measure(monkeypatch)
    result = CliRunner().invoke(main, ["bench", "ktables", "--ktables-mib", value])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


def test_ktables_sizes_come_from_the_option():
    assert bench.plan(False).ktables_mib == (1024, 8192)
    assert bench.plan(True).ktables_mib == bench.KTABLES_MIB_QUICK
    assert bench.plan(True, [8192, 1024, 1024]).ktables_mib == (1024, 8192)
    with pytest.raises(UsageError):
        bench.plan(False, [])


def test_memory_model_separates_tables_from_pages():
    """The fit the ktables suite reports: exact through three walks of known cost."""
    def walk(tables, leaves):
        return {"tables": tables, "leaves": leaves, "b": 4_000_000 + 600 * tables + 10 * leaves}

    fit = bench.ktables.memory_model
    got = fit([walk(536, 265_000), walk(536, 3_500), walk(30, 3_400)], "b")
    assert got == {"fixed_bytes": 4_000_000, "bytes_per_table": 600.0, "bytes_per_leaf": 10.0}
    assert fit([walk(1, 2), walk(2, 4), walk(3, 6)], "b") is None  # collinear


def test_bad_suite_name_exits_2_with_one_line():
    proc = subprocess.run([str(SCRIPT), "bench", "fault", "speed", "--quick"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "'speed'" in lines[0] and "fault, walk" in lines[0]


def test_plot_without_matplotlib_is_a_clear_usage_error(tmp_path):
    """The installed script, in a real process where `import matplotlib` fails (a shadowing
    package that raises ImportError comes first on the path): exit 2, one line naming the fix,
    nothing measured, no file."""
    blocker = tmp_path / "shadow" / "matplotlib"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('blocked by the test')\n")
    png = tmp_path / "b.png"
    env = {**os.environ, "PYTHONPATH": str(blocker.parent)}
    # every suite, full size: minutes if it measured before refusing
    proc = subprocess.run([str(SCRIPT), "bench", "--plot", str(png)], capture_output=True,
                          text=True, timeout=60, env=env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "matplotlib" in lines[0]
    assert "pip install 'ptreloc[plot]'" in lines[0]
    assert not png.exists()


def test_plot_writes_a_readable_png(tmp_path):
    """A real plot (matplotlib is installed by `make build`): a PNG with one panel per charted
    suite, not a blank canvas."""
    import matplotlib.image

    png = tmp_path / "b.png"
    result = CliRunner().invoke(main, ["bench", "fault", "walk", "--quick", "--plot", str(png),
                                       "--json"])
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = matplotlib.image.imread(png)
    height, width = img.shape[:2]
    assert width > height  # two panels side by side
    assert img[..., :3].std() > 0.05  # something was drawn


def _refuse_to_measure(monkeypatch):
    def measured(*args, **kwargs):
        raise AssertionError("measured before checking the output paths")

    monkeypatch.setattr(bench, "run", measured)


@pytest.mark.parametrize("option", ["-o", "--plot"])
def test_unwritable_output_is_refused_before_measuring(tmp_path, monkeypatch, option):
    _refuse_to_measure(monkeypatch)
    target = tmp_path / "missing" / ("out.png" if option == "--plot" else "out.json")
    result = CliRunner().invoke(main, ["bench", option, str(target)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and str(target) in lines[0] and "does not exist" in lines[0]
    assert not target.parent.exists()


@pytest.mark.parametrize("name", ["x.txt", "x", "x.png.bak"])
def test_plot_format_is_refused_before_measuring(tmp_path, monkeypatch, name):
    """A --plot name matplotlib cannot draw (it picks the format from the extension) was a
    ValueError - 'internal error', exit 1 - after the whole run; now exit 2 at once, one line
    naming the accepted extensions, and no file left behind."""
    _refuse_to_measure(monkeypatch)
    target = tmp_path / name
    result = CliRunner().invoke(main, ["bench", "--quick", "--plot", str(target)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and str(target) in lines[0] and ".png, .svg or .pdf" in lines[0]
    assert not target.exists()


@pytest.mark.parametrize("ext", bench.PLOT_FORMATS)
def test_every_accepted_plot_format_draws(tmp_path, ext):
    import matplotlib.backend_bases

    assert ext in matplotlib.backend_bases.FigureCanvasBase.get_supported_filetypes()
    out = tmp_path / f"b.{ext.upper()}"  # the extension's case does not matter
    bench.plot({"meta": {"quick": True}}, out)
    assert out.stat().st_size > 0


def test_output_under_a_file_is_refused_before_measuring(tmp_path, monkeypatch):
    _refuse_to_measure(monkeypatch)
    a_file = tmp_path / "f"
    a_file.write_text("x")
    result = CliRunner().invoke(main, ["bench", "-o", str(a_file / "out.json")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_check_writable_changes_nothing(tmp_path):
    existing = tmp_path / "keep.json"
    existing.write_text("previous results\n")
    bench.check_writable(existing, "-o")
    assert existing.read_text() == "previous results\n"
    bench.check_writable(tmp_path / "new.json", "-o")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.json"]  # probe removed
    with pytest.raises(UsageError, match="is a directory"):
        bench.check_writable(tmp_path, "--plot")


def test_check_writable_refuses_a_read_only_directory(tmp_path):
    # sysfs refuses new files even to root (a chmod 0500 directory would not stop root)
    ro = pathlib.Path("/sys") if os.geteuid() == 0 else tmp_path / "ro"
    if ro != pathlib.Path("/sys"):
        ro.mkdir()
        ro.chmod(0o500)
    with pytest.raises(UsageError, match="cannot write there"):
        bench.check_writable(ro / "out.json", "-o")


def test_output_file_holds_the_same_json(tmp_path):
    out = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["bench", "mirror", "--quick", "--json", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["mirror"] == json.loads(result.output)["mirror"]


def test_terminal_output_has_a_table_per_suite():
    result = CliRunner().invoke(main, ["bench", "relocate", "--quick"])
    assert result.exit_code == 0, result.output
    assert "ratio_vs_memcpy" in result.output and "growth exponent" in result.output


@pytest.mark.parametrize("args", [["--help"]])
def test_help(args):
    result = CliRunner().invoke(main, ["bench", *args])
    assert result.exit_code == 0
    for word in ("--quick", "--plot", "--seed", "--in-vm", "--json", "migrate", "Examples:",
                 "ptreloc bench fault", "Exit codes: 0", "2 usage error"):
        assert word in result.output


def test_check_suites():
    assert bench.check_suites([]) == list(bench.SUITES)
    assert bench.check_suites(["walk", "fault"]) == ["fault", "walk"]
    with pytest.raises(UsageError, match="unknown bench suite 'x'"):
        bench.check_suites(["fault", "x"])


# ---- the C loops -------------------------------------------------------------------------------


@pytest.mark.parametrize("build", ["relo", "norelo"])
def test_fault_loop_runs_in_both_builds(build):
    c = _native.core(build)
    assert c.relocation_supported is (build == "relo")
    with _native.BenchFault(c, "x86_64_4l", 1024, True, -1) as f:
        assert f.round(1) > 0
        assert f.round(2) > 0  # a fresh address space each round: faults again


def test_quick_concurrent_reports_both_layouts(quick):
    c = quick["concurrent"]
    # the headline is the table-per-page layout; the earlier consecutive layout is kept beside
    # it with the same figures, so switching the headline hides nothing
    assert c["layout"] == "table_per_page" and c["pages"] == bench.plan(True).conc_sparse_pages
    old = c["cache_resident"]
    assert old["pages"] == bench.plan(True).conc_pages
    assert set(old["rewalk"]["by_batch"]) == set(c["rewalk"]["by_batch"])
    for r in [*old["rewalk"]["by_batch"].values(), old["stop"]]:
        assert r["idle"]["accesses"] > 0 and r["relocating"]["accesses"] > 0
        assert r["relocations"] > 0


def test_concurrent_sparse_layout_checks_its_address_range():
    c = _native.core("relo")
    # 0.2 s phases: with 10 ms ones a loaded host (load 8 on 2 cores) could leave the CPU
    # thread unscheduled for a whole phase, and busy_n came out 0 (seen 2 runs in 4)
    kw = dict(geometry="x86_32", cpus=1, strategy="rewalk", batch=8, phase_s=0.2, rounds=1,
              write_pct=0, bind_nodes=(-1, -1), seed=1)
    # x86_32: one page per 4 MiB PTE table; 1024 of them pass the 2 GiB lower half
    with pytest.raises(AddressError, match="outside the format's range"):
        _native.bench_concurrent(c, pages=1024, sparse=True, **kw)
    # the same page count laid out consecutively (4 MiB in all) fits
    r = _native.bench_concurrent(c, pages=1024, sparse=False, **kw)
    assert r["idle_n"] > 0
    # and a sparse region that fits runs: 64 pages, 64 PTE tables
    r = _native.bench_concurrent(c, pages=64, sparse=True, **kw)
    assert r["idle_n"] > 0 and r["busy_n"] > 0


def test_concurrent_refuses_the_norelo_build():
    with pytest.raises(RelocationUnsupported):
        _native.bench_concurrent(
            _native.core("norelo"), geometry="x86_64_4l", cpus=1, pages=512, strategy="rewalk",
            batch=8, phase_s=0.01, rounds=1, write_pct=0, bind_nodes=(-1, -1), seed=1)


def test_relocate_round_moves_every_table_back_and_forth():
    c = _native.core("relo")
    with _native.BenchReloc(c, "x86_64_4l", 4 << 20, (-1, -1), "rewalk", 64) as r:
        a, b = r.round(False), r.round(True)
    # 4 MiB: 2 PTE tables + PMD + PUD + PGD, all moved each time
    assert a["frames"] == b["frames"] == 5
    assert a["reloc_ns"] > 0 and a["memcpy_ns"] > 0


def test_walk_defeats_the_tlb():
    c = _native.core("relo")
    with _native.BenchWalk(c, "x86_64_4l", 2048, (-1, -1), 0) as w:
        w.round(20_000, 1, False)
        st = w.stats()
    assert st["accesses"] == 20_000 and st["faults"] == 0
    assert st["tlb_hits"] < 0.05 * st["accesses"]


def test_bad_parameters_are_usage_errors():
    c = _native.core("relo")
    with pytest.raises(UsageError):
        _native.BenchFault(c, "x86_64_4l", 0, False, -1)
    with pytest.raises(UsageError):
        _native.BenchReloc(c, "x86_64_4l", 1000, (-1, -1), "rewalk", 64)  # not page-aligned


def test_histogram_buckets_cover_values_within_3_percent():
    c = _native.core("relo")
    values = [*range(0, 300), 1000, 4095, 4096, 10**6, 123_456_789, 2**40 + 12345]
    for v in values:
        i = _native.bench_hist_index(c, v)
        lo, hi = _native.bench_hist_lower(c, i), _native.bench_hist_lower(c, i + 1)
        assert lo <= v < hi, (v, i, lo, hi)
        assert hi - lo <= max(1, lo / 32)
    idx = [_native.bench_hist_index(c, v) for v in sorted(values)]
    assert idx == sorted(idx)  # monotonic: percentiles can be read off in bucket order


# ---- statistics on known inputs ----------------------------------------------------------------


def test_paired_ratios():
    assert bench.paired_ratios([2, 3, 10], [1, 3, 4]) == [2.0, 1.0, 2.5]
    with pytest.raises(ValueError):
        bench.paired_ratios([1], [1, 2])
    with pytest.raises(ValueError):
        bench.paired_ratios([1], [0])


def test_mean_ci_t_interval():
    m, lo, hi = bench.mean_ci([1, 2, 3, 4, 5])
    # sd = sqrt(2.5), t(4) = 2.776
    half = 2.776 * math.sqrt(2.5) / math.sqrt(5)
    assert m == 3 and lo == pytest.approx(3 - half) and hi == pytest.approx(3 + half)
    assert bench.mean_ci([7.0]) == (7.0, 7.0, 7.0)


def test_t_quantiles():
    assert bench.t_quantile_975(1) == 12.706
    assert bench.t_quantile_975(30) == 2.042
    assert bench.t_quantile_975(120) == pytest.approx(1.980, abs=0.002)
    assert bench.t_quantile_975(10**6) == pytest.approx(1.96, abs=0.001)


def test_bootstrap_ci():
    assert bench.bootstrap_ci([2.0] * 10) == (2.0, 2.0)
    vals = [1.0, 1.1, 0.9, 1.05, 0.95, 1.02, 0.98, 1.0]
    lo, hi = bench.bootstrap_ci(vals, seed=3)
    assert lo < sum(vals) / len(vals) < hi and hi - lo < 0.15
    assert bench.bootstrap_ci(vals, seed=3) == (lo, hi)  # seeded: reproducible


def test_overhead_pct_of_known_rounds():
    r = bench.overhead_pct([101, 202, 303.0], [100, 200, 300])
    assert r["overhead_pct"] == pytest.approx(1.0) and r["mean_pct"] == pytest.approx(1.0)
    assert r["ci95_pct"] == [pytest.approx(1.0), pytest.approx(1.0)]
    assert r["rounds"] == 3


def test_overhead_pct_median_ignores_a_disturbed_round():
    # rounds at +2 %, one round where the relo pass was preempted (+50 %)
    r = bench.overhead_pct([102, 102, 102, 102, 150.0], [100] * 5)
    assert r["overhead_pct"] == pytest.approx(2.0)
    assert r["mean_pct"] == pytest.approx(11.6)
    lo, hi = r["t_ci95_pct"]
    assert lo < 2.0 < 11.6 < hi


def test_bootstrap_ci_of_the_median():
    vals = [1.0] * 9 + [9.0]
    assert bench.bootstrap_ci(vals, seed=1, stat=statistics.median) == (1.0, 1.0)
    assert bench.bootstrap_ci(vals, seed=1)[1] > 1.0  # the mean's interval feels the outlier


def test_hist_percentile():
    hist = [0, 10, 0, 80, 9, 1]  # identity buckets: bucket i holds the value i
    lower = lambda i: i  # noqa: E731
    assert bench.hist_percentile(hist, 0.05, lower) == 1.5
    assert bench.hist_percentile(hist, 0.5, lower) == 3.5
    assert bench.hist_percentile(hist, 0.99, lower) == 4.5
    assert bench.hist_percentile(hist, 1.0, lower) == 5.5
    assert math.isnan(bench.hist_percentile([0, 0], 0.5, lower))


def test_pair_ratios_exclude_a_starved_phase():
    """A phase in which the CPU thread barely ran (preempted on a loaded host) has a "p99" that
    is the max of a few samples: 5 accesses, one of them preempted for 300 us, gave that round
    a ratio of 170/300000 - a ~0 at the low end of the per-round range.  Such a round (or one
    with an empty phase) is excluded and counted, not reported."""
    lower = lambda i: i  # noqa: E731 - identity buckets: bucket i holds the value i
    fast = [0] * 400
    fast[50], fast[170] = 5000, 60  # p99 in the 170 bucket
    starved = [0] * 300_001
    starved[50], starved[300_000] = 4, 1
    ratios, excluded = bench.pair_ratios([(fast, fast), (starved, fast), (fast, [0] * 400)],
                                         0.99, lower)
    assert ratios == [1.0] and excluded == 2
    assert sum(starved) < bench.MIN_PHASE_ACCESSES <= sum(fast)


def test_loglog_slope():
    xs = [1, 10, 100, 1000]
    assert bench.loglog_slope(xs, [3 * x for x in xs]) == pytest.approx(1.0)
    assert bench.loglog_slope(xs, [3 * x * x for x in xs]) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        bench.loglog_slope([5, 5], [1, 2])


def test_goals_met_flags_without_an_interval():
    res = {"fault": {"bare": {"overhead_pct": 0.5}, "with_data": {"overhead_pct": 0.31}}}
    got = {g["key"]: g["met"] for g in bench.goals(res)}
    assert got == {"fault.bare.overhead_pct": True, "fault.with_data.overhead_pct": False}
    res = {"walk": {"ratio_vs_chase": float("nan")}}
    assert bench.goals(res)[0]["met"] is False


def test_goal_verdict_follows_the_interval_not_the_point():
    """The reviewer's case: with_data -0.249 % with a 95 % interval [-7.2, 7.1] was 'met
    (<= 0.3)'.  The interval straddles the goal: undecided, met None."""
    res = {"fault": {"bare": {"overhead_pct": 0.5, "ci95_pct": [0.2, 0.9]},
                     "with_data": {"overhead_pct": -0.249, "ci95_pct": [-7.2, 7.1]}},
           "walk": {"ratio_vs_chase": 2.28, "ci95": [2.09, 2.46]}}
    got = {g["key"]: (g["verdict"], g["met"]) for g in bench.goals(res)}
    assert got == {"fault.bare.overhead_pct": ("met", True),
                   "fault.with_data.overhead_pct": ("undecided", None),
                   "walk.ratio_vs_chase": ("missed", False)}
    # a point beyond the goal with an interval that reaches inside it is not 'missed' either
    assert bench.verdict(1.6, 1.5, [1.4, 1.8]) == "undecided"
    assert bench.verdict(1.5, 1.5, [1.4, 1.5]) == "met"  # the bound itself is within the goal


def test_terminal_output_says_undecided_and_quick(monkeypatch):
    res = {"meta": {"quick": True, "shape_only": True, "note": bench.QUICK_NOTE},
           "fault": {"seconds": 0.1,
                     **{v: {"overhead_pct": -0.249, "ci95_pct": [-7.2, 7.1], "rounds": 8,
                            "ns_per_fault": {"relo": 1.0, "norelo": 1.0}}
                        for v in ("bare", "with_data")}}}
    res["goals"] = bench.goals(res)
    res["fault"]["goals"] = {v: {"overhead_pct": g} for v, g in
                             zip(("bare", "with_data"), res["goals"], strict=True)}
    monkeypatch.setattr(bench, "run", lambda *a, **k: res)
    result = CliRunner().invoke(main, ["bench", "fault", "--quick"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "undecided (<= 0.3): interval too wide" in result.output
    assert "met (<=" not in result.output
    assert "goals undecided" in result.output
    assert result.output.rstrip().endswith(bench.QUICK_NOTE)


def test_ci_gate_script_is_executable_and_called_by_ci():
    root = Path(__file__).resolve().parent.parent
    assert os.access(root / "scripts" / "ci-gate", os.X_OK)
    run = (root / ".ci" / "run").read_text().splitlines()
    assert run.index("scripts/ci-gate") > run.index("make test")


def test_ci_checks_the_installed_wheel():
    """The check that would have caught an installed bench reaching into scripts/: .ci/run
    runs make check-wheel, which runs scripts/check-wheel, and that runs the three commands."""
    root = Path(__file__).resolve().parent.parent
    script = root / "scripts" / "check-wheel"
    assert os.access(script, os.X_OK)
    assert "make check-wheel" in (root / ".ci" / "run").read_text().splitlines()
    make = subprocess.run(["make", "-n", "check-wheel"], cwd=root, capture_output=True,
                          text=True, timeout=60)
    assert make.returncode == 0 and "scripts/check-wheel" in make.stdout
    text = script.read_text()
    for cmd in ('"$bin/ptreloc" doctor', '"$bin/ptreloc" bench --quick',
                '"$bin/ptreloc" stress --seconds 1', 'cd "$tmp/run"'):
        assert cmd in text, cmd


def test_the_installed_package_does_not_reach_into_the_checkout():
    """Nothing under ptreloc/ names a path of the checkout to run or import: scripts/ and csrc/
    are not installed.  The test bed (scripts/numa-vm) is looked up in one place, which
    answers None for an installed package."""
    import re

    pkg = Path(bench.__file__).resolve().parent.parent
    allowed = {pkg / "bench" / "machine.py", pkg / "_native" / "_loader.py"}  # with fallbacks
    offenders = []
    for path in pkg.rglob("*.py"):
        if path in allowed:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(r'(["\'])(scripts|csrc)\1|parents?\[?\d?\]?\s*/\s*["\']scripts', code):
                offenders.append(f"{path.relative_to(pkg)}:{n}: {line.strip()}")
    assert offenders == []


def test_the_test_bed_is_found_in_a_checkout_only(monkeypatch, tmp_path):
    """bench migrate --in-vm and doctor find scripts/numa-vm next to the package of a source
    checkout (this editable install); an installed package - no checkout around it - has none,
    and --in-vm says so instead of failing to start it."""
    from ptreloc.bench import machine

    root = Path(__file__).resolve().parent.parent
    assert machine.numa_vm_script() == root / "scripts" / "numa-vm"
    fake = tmp_path / "site-packages" / "ptreloc" / "bench" / "machine.py"
    fake.parent.mkdir(parents=True)
    monkeypatch.setattr(machine, "__file__", str(fake))
    assert machine.numa_vm_script() is None
    if ONE_NODE:  # on two real nodes the suite migrates for real instead
        res = bench.migrate.measure(bench.plan(True), 1, lambda _msg: None, True)
        assert res["skipped"] is True and "source checkout" in res["reason"]


def test_freed_frames_are_poisoned_by_default():
    # the relocate bench turns poisoning off in its own arena to measure it; every other arena
    # (stress, tests) must keep it: it is what makes a freed-frame access detectable
    from ptreloc.core import AddressSpace, Arena

    va = 0x40_0000 * 16
    arena = Arena("x86_64_4l", nodes=2, frames_per_node=64)
    mm = AddressSpace(arena, node=0)
    try:
        mm.map(va, 4096)
        old, _new = mm.repoint_table(va, 0, node=1)
        arena.free_frame_unsafely(old)
        assert arena.table_entry(old, 0, 0) == 0x6B6B6B6B6B6B6B6B
        assert arena.table_entry(old, 0, 511) == 0x6B6B6B6B6B6B6B6B
    finally:
        mm.close()
        arena.close()


def test_relocation_into_unzeroed_poisoned_frames_keeps_every_entry():
    # targets are allocated without zeroing (the copy overwrites them): with poisoning on,
    # recycled targets are full of 0x6b - a relocated table must still equal its source
    c = _native.core("relo")
    with _native.BenchReloc(c, "x86_64_4l", 8 << 20, (-1, -1), "rewalk", 2) as r:
        for i in range(4):  # back and forth: pools 0 and 1 recycle each other's freed frames
            # 8 MiB: 4 PTE tables + PMD + PUD + PGD found by the walk, all moved (-EIO if not)
            assert r.round(i % 2 == 0)["frames"] == 7


def _calls_in(so_path: str, func: str) -> list[str]:
    """Names of the functions called from ``func`` (and its compiler clones) in ``so_path``."""
    import re

    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", so_path], check=True,
                         capture_output=True, text=True).stdout
    calls: list[str] = []
    found = False
    for block in out.split("\n\n"):
        m = re.search(r"^[0-9a-f]+ <([^>]+)>:$", block, re.M)
        if m and m.group(1).split(".")[0] == func:
            found = True
            calls += re.findall(r"\tcall\s+[0-9a-f]+ <([^>@+]+)", block)
    assert found, f"{func} not found in {so_path}"
    return [c.split(".")[0] for c in calls]


def test_cpu_fault_path_enters_no_nested_read_side_section():
    """fault.bare's goal (<= 1 %) needs the fault a CPU takes to pay for relocation support only
    with the `relocating` branch.  A CPU's fault runs inside its access, which already is a
    read-side section (the busy lock): ptr_cpu_access_fault() must call the in-section fault
    path, and that must not enter a section of its own - e.g. through ptr_translate() for the
    final permission check, which cost two locked RMWs per write fault and kept fault.bare at
    +2.35 %.  The cpu == NULL entry point (Python-driven faults) must keep its one section:
    exactly one ptr_read_lock call, in the relocation build only."""
    import importlib
    import platform
    import shutil

    if platform.machine() != "x86_64" or not shutil.which("objdump"):
        pytest.skip("needs objdump on x86-64")
    relo = importlib.import_module("ptreloc._core").__file__
    norelo = importlib.import_module("ptreloc._core_norelo").__file__
    for so in (relo, norelo):
        cpu_path = _calls_in(so, "ptr_cpu_access_fault")
        assert "ptr_fault_in_section" in cpu_path and "ptr_fault" not in cpu_path
        inner = _calls_in(so, "ptr_fault_in_section")
        assert not {"ptr_translate", "ptr_read_lock", "ptr_read_unlock"} & set(inner)
    assert _calls_in(relo, "ptr_fault").count("ptr_read_lock") == 1
    assert _calls_in(relo, "ptr_fault").count("ptr_read_unlock") == 1
    assert "ptr_read_lock" not in _calls_in(norelo, "ptr_fault")


def test_bench_workload_is_the_package_module_and_refuses_a_failed_start(tmp_path):
    """bench's mirror/migrate/ktables suites run ``python -m ptreloc.workload`` (the tests' live
    workload; part of the package, so an installed ptreloc has it), read its ready line, and
    end it; a child that dies before it is ready is one clear error, no zombie."""
    from ptreloc import workload
    from ptreloc.errors import PtrelocError

    proc, info = workload.spawn(2)
    try:
        assert info["ready"] is True and info["pid"] == proc.pid
        assert proc.args[1:4] == ["-P", "-m", "ptreloc.workload"]
        assert info["pages"] == 2 * 256 and info["touched"] == 2 * 256
        assert info["threads"] == 2 + 2  # two touching threads, main, the stdin reader
        # the child runs this very ptreloc (the directory it was imported from comes first)
        here = str(Path(workload.__file__).resolve().parent.parent)
        assert workload.environment()["PYTHONPATH"].split(os.pathsep)[0] == here
    finally:
        bench.stop_workload(proc)
    assert proc.returncode == 0
    with pytest.raises(PtrelocError, match="did not report ready"):
        workload.spawn(2, prefix=["false"])  # exits at once, prints nothing
    # scripts/workload.py of a checkout is the same program, for the system python3
    script = Path(__file__).resolve().parent.parent / "scripts" / "workload.py"
    done = subprocess.run([sys.executable, str(script), "--pages", "3", "--threads", "0"],
                          input="", capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["touched"] == 3


def test_quick_pool_suite_evacuates_and_packs(quick):
    """The pool suite's figures: evacuation leaves nothing behind, compaction packs the pool,
    both cost something per frame, the memcpy baseline ran in the same round."""
    pool = quick["pool"]
    assert pool["evacuate"]["frames_left"] == 0 and pool["evacuate"]["frames"] == pool["tables"]
    assert pool["compact"]["packed"] is True and pool["compact"]["frames"] > 0
    for op in ("evacuate", "compact"):
        assert pool[op]["ns_per_frame"] > 0 and pool[op]["memcpy_ns_per_frame"] > 0
        assert pool[op]["ratio_vs_memcpy"] > 0
    lfr = pool["compact"]["largest_free_run"]
    assert lfr["after"] >= lfr["before"]
