"""The command-line contract (DESIGN.md "Command-line contract", README "Exit codes"), command
by command: --help that teaches, bad input -> exit 2 (or 1 where it is operational) with exactly
one stderr line and no traceback, --json -> only JSON on stdout, a bounded fuzz of argument lists,
progress only on a terminal, and Ctrl-C.

Real runs of the installed ``ptreloc`` script where the process boundary matters (exit status,
stdout vs stderr, terminals, signals); click's CliRunner in-process where it is the same code path
and much cheaper (the group's ``main`` - which turns every escaping failure into one line - runs
in both).
"""

from __future__ import annotations

import json
import os
import pathlib
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ptreloc.cli import COMMANDS, main

SCRIPT = pathlib.Path(sys.executable).parent / "ptreloc"
CONTRACT_CODES = {0, 1, 2, 3}
EXIT_INTERRUPTED = 130


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The installed script as a CI job runs it: no terminal, no stdin."""
    return subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        env={**os.environ, "PTRELOC_DEBUG": ""},
    )


def invoke(*args: str) -> tuple[int, str, str]:
    """In-process through the same group ``main`` as the script; (exit code, stdout, stderr)."""
    result = CliRunner().invoke(main, list(args))
    # an exception the group let escape would show up here rather than as a traceback
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{args}: escaped {result.exception!r}") from result.exception
    return result.exit_code, result.stdout, result.stderr


def assert_one_error_line(args: object, code: int, out: str, err: str, as_json: bool) -> None:
    lines = err.splitlines()
    assert "Traceback" not in err + out, (args, err)
    assert len(lines) == 1 and lines[0].strip(), (args, code, err)
    assert lines[0].startswith("ptreloc: error: "), (args, err)
    if as_json:
        assert out == "", (args, out)


@pytest.fixture(scope="module")
def sleeper() -> Iterator[int]:
    """A small live process of ours (show/migrate/watch need a real pid)."""
    child = subprocess.Popen(["sleep", "600"])
    try:
        yield child.pid
    finally:
        child.kill()
        child.wait()


# ---- --help teaches: what it does, an example, the exit codes ---------------------------------


@pytest.mark.parametrize("command", list(COMMANDS))
def test_help_teaches(command: str) -> None:
    done = run(command, "--help")
    assert done.returncode == 0 and done.stderr == ""
    text = done.stdout
    assert "--json" in text
    assert "Examples:" in text and f"ptreloc {command}" in text.split("Examples:")[1]
    assert "Exit code" in text or "Exit status" in text
    # the first help line says what the command does (not just its name)
    summary = text.split("\n\n")[1].strip()
    assert len(summary.split()) >= 5, summary


def test_group_help_lists_every_command_and_the_exit_codes() -> None:
    done = run("--help")
    assert done.returncode == 0
    for command in COMMANDS:
        assert f"  {command} " in done.stdout
    for code in ("0 success", "1 operational", "2 usage", "3 partial", "130 interrupted"):
        assert code in " ".join(done.stdout.split())


# ---- bad input: exit 2 (usage) or 1 (operational), ONE stderr line, nothing on stdout -----------

BAD_NODES = ["x", "3-1", "99", "!", ""]
BAD_PIDS = [("-1", 2), ("0", 2), ("99999999", 1), ("abc", 2), ("", 2)]


def _bad_cases() -> list[tuple[list[str], int]]:
    cases: list[tuple[list[str], int]] = []
    for command in COMMANDS:
        cases.append(([command, "--bogus"], 2))
    cases += [(["doctor", "extra"], 2), (["nosuchcommand"], 2)]
    for node in BAD_NODES:
        cases.append((["nodes", "--nodes", node], 2))
        cases.append((["migrate", "--pid", "PID", "--from-node", node, "--to-node", "0"], 2))
        cases.append((["migrate", "--pid", "PID", "--from-node", "0", "--to-node", node], 2))
    for pid, code in BAD_PIDS:
        cases.append((["nodes", "--pid", pid], code))
        cases.append((["show", "--pid", pid], code))
        cases.append((["migrate", "--pid", pid, "--from-node", "0", "--to-node", "0",
                       "--in-place"], code))
        cases.append((["watch", "--pid", pid, "--timeout", "1"], code))
    for cmd in (["show"], ["migrate"], ["watch"], ["migrate", "--pid", "PID"]):
        cases.append((cmd, 2))  # a required option missing
    for value in ("0", "-1", "abc", "inf", "nan", "", "1e300"):
        cases.append((["stress", "--seconds", value], 2))
    for value in ("0", "63", "-1", "abc", "1.5", ""):
        cases.append((["stress", "--seconds", "0.1", "--cpus", value], 2))
    for value in ("0", "-1", "abc", "4294967296", ""):
        cases.append((["stress", "--seconds", "0.1", "--batch", value], 2))
        cases.append((["migrate", "--pid", "PID", "--from-node", "0", "--to-node", "0",
                       "--in-place", "--batch", value], 2))
        cases.append((["watch", "--pid", "PID", "--timeout", "1", "--batch", value], 2))
    for option, value in (("--seed", "-1"), ("--seed", str(1 << 64)), ("--protocol", "fast"),
                          ("--geometry", "vax"), ("--nodes", "x"), ("--nodes", "real")):
        # --nodes real: node 1 missing on a one-node machine is a usage error (multi-node: 0)
        if option == "--nodes" and value == "real" and _two_real_nodes():
            continue
        cases.append((["stress", "--seconds", "0.1", option, value], 2))
    for value in ("0", "-1", "abc", "nan", "inf", ""):
        cases.append((["watch", "--pid", "PID", "--timeout", "1", "--interval", value], 2))
    for option, value in (("--timeout", "0"), ("--timeout", "nan"), ("--timeout", "inf"),
                          ("--count", "0"), ("--follow", "x"), ("--strategy", "naive")):
        cases.append((["watch", "--pid", "PID", "--timeout", "1", option, value], 2))
    cases += [
        (["migrate", "--pid", "PID", "--from-node", "0", "--to-node", "0"], 2),  # nothing to do
        (["migrate", "--pid", "PID", "--from-node", "0", "--to-node", "0", "--in-place",
          "--strategy", "naive"], 2),
        (["show", "--pid", "PID", "extra"], 2),
        (["bench", "nosuchsuite"], 2),
        (["bench", ""], 2),
        (["bench", "--seed", "abc"], 2),
    ]
    return cases


def _two_real_nodes() -> bool:
    from ptreloc import numa

    topo = numa.topology()
    return {0, 1} <= (topo.online & topo.with_memory)


def _fill(args: list[str], pid: int) -> list[str]:
    return [str(pid) if a == "PID" else a for a in args]


@pytest.mark.parametrize(("args", "code"), _bad_cases(), ids=lambda v: repr(v))
def test_bad_input_in_process(args: list[str], code: int, sleeper: int) -> None:
    argv = _fill(args, sleeper)
    for as_json in (True, False):
        # --json last: where the bad input is an unexpected argument it stays the first error
        full = [*argv, "--json"] if as_json and argv[0] in COMMANDS else argv
        got, out, err = invoke(*full)
        assert got == code, (full, got, err)
        assert_one_error_line(full, got, out, err, as_json)


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["nodes", "--bogus"], 2),
        (["nodes", "--nodes", "3-1", "--json"], 2),
        (["show", "--pid", "abc", "--json"], 2),
        (["show", "--pid", "99999999", "--json"], 1),
        (["migrate", "--pid", "-1", "--from-node", "0", "--to-node", "1", "--json"], 2),
        (["migrate", "--pid", "PID", "--from-node", "!", "--to-node", "0", "--json"], 2),
        (["watch", "--pid", "PID", "--interval", "0", "--json"], 2),
        (["stress", "--cpus", "0", "--json"], 2),
        (["stress", "--seconds", "inf", "--json"], 2),
        (["bench", "nosuchsuite", "--json"], 2),
        (["doctor", "--json", "extra"], 2),
    ],
    ids=lambda v: repr(v),
)
def test_bad_input_installed_script(args: list[str], code: int, sleeper: int) -> None:
    done = run(*_fill(args, sleeper))
    assert done.returncode == code, (args, done.stderr)
    assert_one_error_line(args, done.returncode, done.stdout, done.stderr, "--json" in args)


def test_an_unwritable_output_file_is_one_line(tmp_path: pathlib.Path) -> None:
    """A path in a missing directory: one line naming it, exit 2 - checked before any work."""
    target = tmp_path / "missing" / "out.json"
    done = run("bench", "--quick", "walk", "-o", str(target), "--json")
    assert done.returncode == 2, done.stderr
    assert_one_error_line("bench -o", done.returncode, done.stdout, done.stderr, as_json=True)
    assert str(target) in done.stderr and not target.exists()


@pytest.mark.parametrize(
    ("exc", "needle"),
    [
        (RuntimeError("boom\nsecond line"), "internal error (RuntimeError: boom second line)"),
        (FileNotFoundError(2, "No such file or directory", "/sys/x"),
         "No such file or directory (/sys/x)"),
    ],
)
def test_the_group_turns_an_unanticipated_exception_into_one_line(
    exc: Exception, needle: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The safety net for bugs no input can be chosen to reach: a fault is injected where the
    nodes command reads the topology.  Without the group's handler this is a traceback."""
    from ptreloc import numa

    def broken() -> None:
        raise exc

    monkeypatch.setattr(numa, "topology", broken)
    monkeypatch.delenv("PTRELOC_DEBUG", raising=False)
    code, out, err = invoke("nodes", "--json")
    assert code == 1
    assert_one_error_line("nodes", code, out, err, as_json=True)
    assert needle in err
    # a developer gets the traceback back
    monkeypatch.setenv("PTRELOC_DEBUG", "1")
    result = CliRunner().invoke(main, ["nodes", "--json"])
    assert result.exception is exc


def test_a_failed_command_writes_nothing(tmp_path: pathlib.Path) -> None:
    """Validation comes before work: a bad suite leaves no results file behind."""
    target = tmp_path / "results.json"
    done = run("bench", "walk", "nosuchsuite", "-o", str(target), "--json")
    assert done.returncode == 2 and done.stdout == ""
    assert not target.exists()


# ---- --json: stdout is JSON and only JSON --------------------------------------------------------


def _only_json(stdout: str, lines: bool = False) -> list[object]:
    assert "\x1b" not in stdout  # no colour, no cursor control
    if lines:
        return [json.loads(line) for line in stdout.splitlines()]
    return [json.loads(stdout)]


@pytest.mark.parametrize(
    "args",
    [
        ["nodes", "--json"],
        ["nodes", "--json", "--nodes", "all", "--pid", "PID"],
        ["doctor", "--json"],
        ["show", "--pid", "PID", "--json"],
        ["migrate", "--pid", "PID", "--from-node", "0", "--to-node", "0", "--in-place",
         "--dry-run", "--json"],
        ["migrate", "--pid", "PID", "--from-node", "0", "--to-node", "0", "--in-place",
         "--strict", "--json"],
        ["stress", "--seconds", "0.3", "--json"],
        ["bench", "--quick", "walk", "--json"],
    ],
    ids=lambda v: " ".join(v),
)
def test_json_output_is_one_document(args: list[str], sleeper: int) -> None:
    done = run(*_fill(args, sleeper))
    assert done.returncode == 0, done.stderr
    (doc,) = _only_json(done.stdout)
    assert isinstance(doc, dict) and doc
    # nothing else was said: no progress, no warning (stderr is not a terminal here)
    assert done.stderr == ""


def test_watch_json_is_json_lines(sleeper: int) -> None:
    done = run("watch", "--pid", str(sleeper), "--json", "--interval", "0.1", "--timeout", "0.5")
    assert done.returncode == 0, done.stderr
    events = _only_json(done.stdout, lines=True)
    assert [e["event"] for e in events][0] == "start"  # type: ignore[index]
    assert events[-1]["event"] == "stop"  # type: ignore[index]
    assert done.stderr == ""


# ---- fuzz: any argument list ends in a contract exit code, never a traceback -------------------

_JUNK = st.sampled_from(["x", "-", "--", "--json=1", "-x", "--help=no", "\u00e9", "0"])


def _opt(name: str, *values: str) -> st.SearchStrategy[list[str]]:
    return st.sampled_from(values).map(lambda v: [name, v])


def _flag(name: str) -> st.SearchStrategy[list[str]]:
    return st.just([name])


_NODE_VALUES = ("0", "all", "x", "3-1", "99", "!", "", "!0", "0,0", "1-99999999999999999999")
_PID_BAD = ("-1", "0", "99999999", "abc", "", str(1 << 70))


def _pid(live: bool) -> st.SearchStrategy[list[str]]:
    # "PID" is replaced by the sleeper's pid; bad ones never reach a process
    return _opt("--pid", *(_PID_BAD + (("PID",) if live else ())))


def _fuzz_options(command: str) -> list[st.SearchStrategy[list[str]]]:
    common = [_flag("--json"), _JUNK.map(lambda j: [j])]
    per = {
        "nodes": [_opt("--nodes", *_NODE_VALUES), _pid(live=True)],
        "doctor": [],
        "show": [_pid(live=True)],
        "migrate": [
            _pid(live=True),
            _opt("--from-node", *_NODE_VALUES),
            _opt("--to-node", *_NODE_VALUES),
            _flag("--dry-run"),
            _flag("--strict"),
            _flag("--in-place"),
            _opt("--strategy", "rewalk", "stop", "naive", ""),
            _opt("--batch", "1", "64", "0", "-1", "abc", str(1 << 40)),
        ],
        # every valid duration is short, and the prefix bounds the run
        "watch": [
            _pid(live=True),
            _opt("--interval", "0.05", "0.1", "0", "-1", "abc", "nan", "inf"),
            _opt("--timeout", "0.2", "0", "-1", "nan", "inf", "abc"),
            _opt("--count", "1", "0", "-1", "abc"),
            _opt("--follow", "auto", "data", "cpu", "x"),
            _opt("--strategy", "rewalk", "stop", "naive"),
            _opt("--batch", "1", "0", "abc", str(1 << 40)),
        ],
        "stress": [
            _opt("--seconds", "0.05", "0.1", "0", "-1", "abc", "nan", "inf", "1e300"),
            _opt("--cpus", "1", "2", "0", "63", "abc"),
            _opt("--protocol", "rewalk", "stop", "naive", "fast"),
            _opt("--geometry", "x86_pae", "x86_32", "arm64_64k_48", "vax"),
            _opt("--batch", "1", "64", "0", "abc", str(1 << 32)),
            _opt("--seed", "0", "7", "-1", str(1 << 64)),
            _opt("--nodes", "auto", "virtual", "real", "x"),
        ],
        "bench": [
            st.sampled_from(["walk", "relocate", "nosuch", ""]).map(lambda s: [s]),
            _opt("--seed", "1", "-5", "abc"),
            _opt("--plot", "PLOT"),
            _opt("-o", "OUT", "/nonexistent-dir/out.json"),
        ],
        "census": [
            _opt("--node", *_NODE_VALUES),
            _flag("--by-process"),
            _opt("--plot", "PLOT", "/nonexistent-dir/p.png", "x.txt"),
        ],
        "drain": [
            _opt("--node", "0", "1", "99", "-1", "x", ""),
            _flag("--offline"),
            _flag("--strict"),
            _opt("--offline-timeout", "1", "0", "abc"),
        ],
    }
    return per[command] + common


# a prefix that keeps every valid combination short (later options override it)
_PREFIX = {
    "watch": ["--pid", "PID", "--timeout", "0.2", "--interval", "0.05"],
    "stress": ["--seconds", "0.05"],
    "bench": ["--quick", "walk"],
    "migrate": ["--pid", "PID", "--from-node", "0", "--to-node", "0", "--in-place"],
    # never a real drain, whatever the machine: only its validation is fuzzed
    "drain": ["--dry-run"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_fuzz_argument_lists(command: str, sleeper: int, tmp_path: pathlib.Path) -> None:
    @settings(max_examples=25, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(st.one_of(*_fuzz_options(command)), max_size=4))
    def check(groups: list[list[str]]) -> None:
        argv = [command, *_PREFIX.get(command, []), *(t for g in groups for t in g)]
        argv = [
            str(sleeper) if a == "PID"
            else str(tmp_path / "plot.png") if a == "PLOT"
            else str(tmp_path / "out.json") if a == "OUT"
            else a
            for a in argv
        ]
        code, out, err = invoke(*argv)
        assert code in CONTRACT_CODES, (argv, code, err)
        assert "Traceback" not in out + err, argv
        if code == 2:
            assert_one_error_line(argv, code, out, err, "--json" in argv)
        if code == 0 and "--json" in argv and "--help" not in argv:
            _only_json(out, lines=command == "watch")

    check()


# ---- progress only on a terminal -----------------------------------------------------------------


def _run_in_pty(args: list[str], timeout: float = 60) -> tuple[int, str]:
    """Run the script with stdout and stderr on a pseudo-terminal; (status, what it showed)."""
    master, slave = pty.openpty()
    child = subprocess.Popen(
        [str(SCRIPT), *args], stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
        env={**os.environ, "TERM": "xterm", "COLUMNS": "100"},
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if child.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        status = child.wait(timeout=10)
    return status, b"".join(chunks).decode(errors="replace")


def test_progress_on_a_terminal_and_not_on_a_pipe() -> None:
    args = ["stress", "--seconds", "1.5", "--cpus", "1"]
    status, screen = _run_in_pty(args)
    assert status == 0, screen
    # rich's bar: the task description and a percentage, redrawn while the run goes on
    assert "stress rewalk x86_64_4l" in screen and "%" in screen, screen
    assert "verdict: clean" in screen
    piped = run(*args)
    assert piped.returncode == 0
    assert "stress rewalk x86_64_4l" not in piped.stdout + piped.stderr
    assert piped.stderr == "" and "\x1b" not in piped.stdout
    assert "verdict: clean" in piped.stdout


# ---- Ctrl-C --------------------------------------------------------------------------------------


def _started(pid: int) -> bool:
    """The stress run has its C threads (CPUs + relocator + reclaimer) up."""
    try:
        return len(os.listdir(f"/proc/{pid}/task")) >= 4
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "human"])
def test_ctrl_c_stops_stress_with_one_line_and_130(as_json: bool) -> None:
    args = [str(SCRIPT), "stress", "--seconds", "30", "--cpus", "1"]
    child = subprocess.Popen(
        args + (["--json"] if as_json else []),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        for _ in range(300):
            if _started(child.pid) or child.poll() is not None:
                break
            time.sleep(0.05)
        assert child.poll() is None, child.communicate()
        child.send_signal(signal.SIGINT)
        # "promptly": far inside the 30 s the run would otherwise take
        out, err = child.communicate(timeout=15)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == EXIT_INTERRUPTED, err
    assert err.splitlines() == ["ptreloc: error: interrupted (Ctrl-C) before the command finished"]
    assert out == ""
