"""One vocabulary across commands: -q/-v everywhere, --json where results print, '-' = stdout,
-o as the output path, NO_COLOR, progress on stderr only where someone watches, completion.

Each check runs every command it concerns, so a new command that drifts fails here.
"""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from difftest.cli import main
from difftest.trace.io import open_trace

ROOT = Path(__file__).resolve().parent.parent
B16 = str(ROOT / "traces" / "bugs" / "B16-cpuid-while-l2-active.parquet")
ARCH = str(ROOT / "traces" / "arch" / "ARCH.CPUID-pks-enumerated.parquet")
FTRACE = str(ROOT / "tests" / "fixtures" / "ftrace_longmode_default.txt")
PKVM = str(ROOT / "tests" / "fixtures" / "pkvm_vmexit_pvm.txt")


def leaf_commands() -> list[tuple[tuple[str, ...], click.Command]]:
    out: list[tuple[tuple[str, ...], click.Command]] = []

    def walk(path: tuple[str, ...], cmd: click.Command) -> None:
        if isinstance(cmd, click.Group):
            ctx = click.Context(cmd)
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                assert sub is not None
                walk((*path, name), sub)
        else:
            out.append((path, cmd))

    walk((), main)
    return out


def run(*args: str, env: dict[str, str] | None = None) -> object:
    return CliRunner().invoke(main, list(args), env=env)


@pytest.mark.parametrize("path", [p for p, _ in leaf_commands()], ids=lambda p: " ".join(p))
def test_quiet_verbose_and_exit_codes_in_every_help(path: tuple[str, ...]) -> None:
    res = run(*path, "--help")
    assert res.exit_code == 0
    assert "-q, --quiet" in res.output and "-v, --verbose" in res.output
    assert "Exit codes:" in res.output and "3 internal error" in " ".join(res.output.split())


# Every command that prints results, with arguments, and what its JSON must hold.
JSON_RUNS: dict[str, tuple[list[str], int, str]] = {
    # --no-known: B16 under kvm-v7 is a declared known divergence (exit 0 otherwise); here it must diverge
    "replay": (["replay", B16, "--policy", "kvm-v7", "--no-known"], 1, "first_rule"),
    "report": (["report", B16, "--policy", "kvm-v7", "--no-known"], 1, "passed"),
    "matrix": (["matrix", B16], 0, ""),
    "compare": (["compare", B16, "--policy", "kvm-v7", "--against", "kvm-v7r"], 1, "differ"),
    "schema": (["schema"], 0, "columns"),
    "policies": (["policies"], 0, "source"),
    "profiles": (["profiles"], 0, "masks"),
    "rules": (["rules"], 0, "source"),
    "generate": (["generate", "--seed", "1", "--events", "30", "-o", "OUT/g.parquet"], 0, "events"),
    "shrink": (["shrink", B16, "--policy", "kvm-v7", "-o", "OUT/s.parquet"], 0, "original_events"),
    "fuzz": (["fuzz", "--policy", "kvm-v4", "--against", "kvm-v7", "--iterations", "2", "-o", "OUT/f"], 0, "findings"),
    "import ftrace": (["import", "ftrace", FTRACE, "-o", "OUT/ft.parquet"], 0, "with_expectations"),
    "import pkvm-vmexit-trace": (["import", "pkvm-vmexit-trace", PKVM], 0, ""),
    "record kvm --list": (["record", "kvm", "--list"], 0, "description"),
}


def keys_of(doc: object) -> set[str]:
    if isinstance(doc, list):
        return set().union(*(keys_of(x) for x in doc)) if doc else set()
    return set(doc) if isinstance(doc, dict) else set()


@pytest.mark.parametrize("name", list(JSON_RUNS))
def test_json_everywhere(name: str, tmp_path: Path) -> None:
    args, code, key = JSON_RUNS[name]
    res = run(*[a.replace("OUT", str(tmp_path)) for a in args], "--json")
    assert res.exit_code == code, res.output
    doc = json.loads(res.stdout)
    assert doc
    if key:
        assert key in keys_of(doc)


def test_dash_is_stdout_for_text_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    jl = run("report", B16, ARCH, "--policy", "kvm-v7", "--jsonl", "-")
    rows = [json.loads(line) for line in jl.stdout.splitlines()]
    # each trace runs under kvm-v7 and its own policy: B16 kvm-v7r, the ARCH trace hw
    assert sorted((Path(r["trace"]).name[:4], r["policy"]) for r in rows) == [
        ("ARCH", "hw"), ("ARCH", "kvm-v7"), ("B16-", "kvm-v7"), ("B16-", "kvm-v7r")]
    ju = run("report", ARCH, "--policy", "hw", "--junit", "-")
    assert ET.fromstring(ju.stdout).tag == "testsuites"
    html = run("compare", B16, "--policy", "kvm-v7", "--against", "kvm-v7r", "-o", "-")
    assert html.stdout.lstrip().startswith("<!DOCTYPE html>")
    assert not (tmp_path / "-").exists()  # no file literally named '-'


def test_dash_is_stdout_for_traces(tmp_path: Path) -> None:
    code = "import sys; from difftest.cli import main; sys.argv = ['difftest', *sys.argv[1:]]; main()"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code, "generate", "--seed", "2", "--events", "25", "-o", "-"],
                          capture_output=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout[:4] == b"PAR1"
    assert b"25 events" in proc.stderr  # the message moved to stderr
    (tmp_path / "g.parquet").write_bytes(proc.stdout)
    assert open_trace(tmp_path / "g.parquet").num_rows >= 25


def test_quiet_prints_results_only(tmp_path: Path) -> None:
    rep = run("report", B16, ARCH, "--policy", "kvm-v7", "-q", "--no-known")
    assert rep.exit_code == 1
    assert rep.stdout.strip().splitlines() == [rep.stdout.strip()]  # one line: the totals
    assert "runs," in rep.stdout and "1 failed" in rep.stdout
    gen = run("generate", "--seed", "1", "--events", "10", "-o", str(tmp_path / "g.parquet"), "-q")
    assert gen.exit_code == 0 and gen.stdout == ""
    rep_v = run("report", B16, "--policy", "kvm-v7", "-v")
    assert "first divergence at event 12" in rep_v.stdout and "KVM.CTL" in rep_v.stdout


def test_shell_completion_as_documented() -> None:
    res = CliRunner().invoke(main, [], prog_name="difftest", env={"_DIFFTEST_COMPLETE": "bash_source"})
    assert res.exit_code == 0
    assert "_DIFFTEST_COMPLETE=bash_complete" in res.output


def read_pty(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def run_with_tty_stderr(args: list[str], extra_env: dict[str, str]) -> tuple[int, bytes]:
    """Run difftest with stderr on a pseudo-terminal (stdout a pipe): what a user at a terminal sees."""
    master, slave = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DIFFTEST_PROGRESS_DELAY": "0", "COLUMNS": "100", **extra_env}
    env.pop("NO_COLOR", None) if "NO_COLOR" not in extra_env else None
    code = "import sys; from difftest.cli import main; sys.argv = ['difftest', *sys.argv[1:]]; main()"
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    err = read_pty(master)
    proc.communicate(timeout=300)
    os.close(master)
    return proc.returncode, err


@pytest.mark.e2e
def test_progress_on_a_terminal_only(tmp_path: Path) -> None:
    args = ["generate", "--seed", "5", "--events", "3000", "-o", str(tmp_path / "g.parquet")]
    rc, err = run_with_tty_stderr(args, {})
    assert rc == 0 and b"generating" in err
    rc, err = run_with_tty_stderr([*args, "-q"], {})
    assert rc == 0 and b"generating" not in err
    proc = subprocess.run([sys.executable, "-m", "difftest.cli", *args], capture_output=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "DIFFTEST_PROGRESS_DELAY": "0"})
    assert proc.returncode == 0 and proc.stderr == b""  # stderr not a terminal: no bar


@pytest.mark.e2e
def test_no_color_honoured(tmp_path: Path) -> None:
    args = ["generate", "--seed", "5", "--events", "3000", "-o", str(tmp_path / "g.parquet")]
    colour = re.compile(rb"\x1b\[[0-9;]*(3[0-9]|9[0-7]|38;)[0-9;]*m")
    rc, err = run_with_tty_stderr(args, {"NO_COLOR": "1"})
    assert rc == 0 and b"generating" in err and not colour.search(err)
    rc, err = run_with_tty_stderr(args, {"TERM": "xterm-256color"})
    assert rc == 0 and colour.search(err)  # the same run in colour: the check above can fail
