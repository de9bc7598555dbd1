"""Exit code 3: every command that crashes says so in one line and saves the traceback.

Exit 1 means "a divergence", so a crash must never exit 1 (a fuzz test once kept passing while
``fuzz`` crashed on a missing dependency).  Each command is made to crash on purpose (its body
raises), and the run must exit 3 with exactly one line on stderr that names the exception and a
file holding the full traceback.  ``shrink``, ``generate`` and ``fuzz`` exit 0 when they did their job.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from difftest import TraceBuilder
from difftest.cli import main

ROOT = Path(__file__).resolve().parent.parent
B16 = str(ROOT / "traces" / "bugs" / "B16-cpuid-while-l2-active.parquet")
ARCH = str(ROOT / "traces" / "arch" / "ARCH.CPUID-pks-enumerated.parquet")
FTRACE = str(ROOT / "tests" / "fixtures" / "ftrace_longmode_default.txt")
PKVM = str(ROOT / "tests" / "fixtures" / "pkvm_vmexit_pvm.txt")

# Every command with arguments that get past option parsing into its body.
COMMANDS: dict[tuple[str, ...], tuple[str, ...]] = {
    ("replay",): (ARCH,),
    ("report",): (ARCH,),
    ("compare",): (ARCH, "--policy", "hw", "--against", "kvm-v7"),
    ("schema",): (),
    ("policies",): (),
    ("profiles",): (),
    ("rules",): (),
    ("matrix",): (ARCH,),
    ("generate",): ("--seed", "1", "--events", "10", "-o", "OUT/g.parquet"),
    ("shrink",): (B16, "--policy", "kvm-v7", "-o", "OUT/s.parquet"),
    ("fuzz",): ("--policy", "kvm-v7", "--against", "kvm-v7r", "--iterations", "1", "-o", "OUT/fuzz"),
    ("record", "kvm"): ("-o", "OUT/k.parquet"),
    ("record", "qemu"): ("--scenario", "rights", "-o", "OUT/q.parquet"),
    ("import", "ftrace"): (FTRACE, "-o", "OUT/f.parquet"),
    ("import", "pkvm-vmexit-trace"): (PKVM,),
}


def resolve(path: tuple[str, ...]) -> click.Command:
    cmd: click.Command = main
    for name in path:
        assert isinstance(cmd, click.Group)
        found = cmd.get_command(click.Context(cmd), name)
        assert found is not None, name
        cmd = found
    return cmd


def test_every_command_is_covered() -> None:
    ctx = click.Context(main)
    top = set(main.list_commands(ctx))
    groups = {n for n in top if isinstance(main.get_command(ctx, n), click.Group)}
    expected = {(n,) for n in top - groups}
    for g in groups:
        sub = resolve((g,))
        assert isinstance(sub, click.Group)
        expected |= {(g, n) for n in sub.list_commands(click.Context(sub))}
    assert set(COMMANDS) == expected


def check_crash_line(stderr: str, crash_dir: Path) -> Path:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    m = re.fullmatch(r"difftest: internal error: RuntimeError: planted failure \(traceback saved to (\S+); please report it\)",
                     lines[0])
    assert m, lines[0]
    saved = Path(m.group(1))
    assert saved.parent == crash_dir
    text = saved.read_text()
    assert "Traceback (most recent call last)" in text and "planted failure" in text
    return saved


@pytest.mark.parametrize("path", list(COMMANDS), ids=lambda p: " ".join(p))
def test_a_crash_exits_3_with_one_line(path: tuple[str, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    crash_dir = tmp_path / "crashes"
    monkeypatch.setenv("DIFFTEST_CRASH_DIR", str(crash_dir))

    def planted(*args: object, **kwargs: object) -> None:
        raise RuntimeError("planted failure")

    monkeypatch.setattr(resolve(path), "callback", planted)
    args = [a.replace("OUT", str(tmp_path)) for a in COMMANDS[path]]
    res = CliRunner().invoke(main, [*path, *args])
    assert res.exit_code == 3, (res.output, res.stderr)
    check_crash_line(res.stderr, crash_dir)
    assert res.stdout == ""


def test_an_internal_key_error_is_not_bad_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A KeyError deep inside (a bug) used to read as 'bad input' (exit 2); only unknown names are."""
    monkeypatch.setenv("DIFFTEST_CRASH_DIR", str(tmp_path))

    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("vcpu7")

    monkeypatch.setattr("difftest.cli.replay_trace", broken)
    res = CliRunner().invoke(main, ["replay", ARCH])
    assert res.exit_code == 3 and "internal error: KeyError: 'vcpu7'" in res.stderr
    unknown = CliRunner().invoke(main, ["replay", ARCH, "--policy", "kvm-v99"])
    assert unknown.exit_code == 2 and "unknown policy 'kvm-v99'" in unknown.stderr


def small_divergent_trace(path: Path) -> Path:
    """kvm-v7 vs the architecture: nothing here; a wrong expectation gives shrink something to keep."""
    t = TraceBuilder("wd", "WD blocks a supervisor write with WP=1", policy="hw", long_mode=True)
    t.cpuid(pks=True).cr4(pks=True).wrmsr(0x6E1, 0x8)
    t.access(0x4000_0000, key=1, write=True).expect_pf(0x03, rule="ARCH.RIGHTS")  # wrong on purpose: PK missing
    return t.write(path)


def test_jobs_done_exit_0(tmp_path: Path) -> None:
    """generate, shrink and fuzz did their job: exit 0 (shrink and fuzz used to exit 1 when they kept something)."""
    runner = CliRunner()
    gen = runner.invoke(main, ["generate", "--seed", "3", "--events", "40", "-o", str(tmp_path / "g.parquet")])
    assert gen.exit_code == 0, gen.output
    src = small_divergent_trace(tmp_path / "wd.parquet")
    shr = runner.invoke(main, ["shrink", str(src), "--policy", "hw", "-o", str(tmp_path / "min.parquet")])
    assert shr.exit_code == 0, shr.output
    assert (tmp_path / "min.parquet").is_file()
    fz = runner.invoke(main, ["fuzz", "--policy", "kvm-v4", "--against", "kvm-v7", "--iterations", "3", "--seed", "1",
                              "-o", str(tmp_path / "fuzz")])
    assert fz.exit_code == 0, fz.output


@pytest.mark.e2e
def test_crash_as_a_user_sees_it(tmp_path: Path) -> None:
    """The installed entry point, in a subprocess: stderr is one line, the exit status 3."""
    code = ("import sys, difftest.cli as c\n"
            "def planted(*a, **k):\n    raise RuntimeError('planted failure')\n"
            "c.replay_trace = planted\nsys.argv = ['difftest', 'replay', sys.argv[1]]\nc.main()\n")
    env = {**os.environ, "DIFFTEST_CRASH_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code, ARCH], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 3, proc.stderr
    check_crash_line(proc.stderr, tmp_path)
