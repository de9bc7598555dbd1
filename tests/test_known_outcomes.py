"""Known outcomes as data (issue 19 item 1): the file format, the five statuses and the exit codes.

Expectations come from the issue's definitions (a known divergence at another event or rule is a
FAIL; a declared one that does not show is an XPASS; exit 0 iff no FAIL and no XPASS) and from
SPEC rules for the small traces: PKRS = 0x4 is AD for key 1, so a supervisor read of a key-1 page
faults (ARCH.RIGHTS); a trace expecting ``ok`` there diverges at that row.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from report_corpus import DIVERGING_RULE, PAGE, PKRS_AD1, write_wd_write

from difftest import TraceBuilder
from difftest.cli import main
from difftest.errors import InputError
from difftest.verdict.known_outcomes import KnownOutcome, KnownOutcomes, load_known_outcomes
from difftest.verdict.run_status import Status, exit_code, judge

ROOT = Path(__file__).resolve().parents[1]


def _diverging(path: Path, name: str = "reads-ad") -> int:
    """A read of an AD key expected to succeed; returns the diverging row."""
    t = TraceBuilder(name, "expects ok where AD(1) faults", policy="hw", long_mode=True)
    t.cpuid(pks=True).cr4(pks=True).wrmsr(0x6E1, PKRS_AD1)
    t.access(PAGE, key=1).expect_ok(rule=DIVERGING_RULE)
    t.write(path)
    return len(t.rows()) - 1  # the access is the last row (after the mapping it implies)


KNOWN = KnownOutcome("test", "t", "hw", "diverge", bug="B99", rule="ARCH.RIGHTS", event=4)


@pytest.mark.parametrize(("first", "known", "status"), [
    ((None, None), None, Status.PASS),
    ((3, "ARCH.RIGHTS"), None, Status.FAIL),
    ((4, "ARCH.RIGHTS"), KNOWN, Status.XFAIL),
    ((None, None), KNOWN, Status.XPASS),
    ((5, "ARCH.RIGHTS"), KNOWN, Status.FAIL),  # another event
    ((4, "ARCH.PFEC.PK"), KNOWN, Status.FAIL),  # another rule
    ((4, "ARCH.RIGHTS"), KnownOutcome("test", "t", "hw", "na", why="no"), Status.SKIP),
    ((4, "ARCH.RIGHTS"), KnownOutcome("test", "t", "hw", "pass"), Status.FAIL),
])
def test_judge(first: tuple[int | None, str | None], known: KnownOutcome | None, status: Status) -> None:
    assert judge(first[0], first[1], known).status is status


def test_exit_code_only_fail_and_xpass_are_bad() -> None:
    assert exit_code([Status.PASS, Status.XFAIL, Status.SKIP]) == 0
    assert exit_code([Status.PASS, Status.XPASS]) == 1
    assert exit_code([Status.FAIL]) == 1


@pytest.mark.parametrize(("cell", "needle"), [
    ('"hw" = { verdict = "dverge" }', "verdict must be one of"),
    ('"hw" = { verdict = "diverge", bug = "B1", event = 4, rule = "ARCH.RIGHT" }', "'ARCH.RIGHT' is not a rule id"),
    ('"hw" = { verdict = "diverge", event = 4, rule = "ARCH.RIGHTS" }', "needs its bug id"),
    ('"hw" = { verdict = "diverge", bug = "B1", rule = "ARCH.RIGHTS" }', "event must be a row index"),
    ('"hw" = { verdict = "na" }', "needs a reason"),
    ('"hw" = { verdict = "pass", event = 3 }', "only belong to verdict"),
    ('"hw" = { verdict = "pass", bgu = "x" }', "unknown key(s) bgu"),
    ('"no-such-policy" = { verdict = "pass" }', "unknown policy 'no-such-policy'"),
])
def test_bad_cell_names_file_and_key(tmp_path: Path, cell: str, needle: str) -> None:
    write_wd_write(tmp_path / "wd.parquet")
    f = tmp_path / "known-outcomes.toml"
    f.write_text(f'[cells."wd"]\n{cell}\n')
    with pytest.raises(InputError) as exc:
        load_known_outcomes(f)
    assert needle in str(exc.value)
    assert str(exc.value).startswith(f"{f}: column 'cells.wd.")


def test_misspelt_trace_key_is_an_error(tmp_path: Path) -> None:
    write_wd_write(tmp_path / "wd.parquet")
    (tmp_path / "known-outcomes.toml").write_text('[cells."wdd"]\n"hw" = { verdict = "pass" }\n')
    res = CliRunner().invoke(main, ["report", str(tmp_path), "--policy", "hw"])
    assert res.exit_code == 2
    assert "cells.wdd" in res.stderr and "no trace wdd.parquet" in res.stderr


def test_nearest_file_wins_and_globs(tmp_path: Path) -> None:
    sub = tmp_path / "sub"
    write_wd_write(sub / "wd.parquet")
    (tmp_path / "known-outcomes.toml").write_text('[cells."sub/*"]\n"*" = { verdict = "na", why = "outer" }\n')
    known = KnownOutcomes()
    hit = known.lookup(sub / "wd.parquet", "hw")
    assert hit is not None and hit.why == "outer"
    (sub / "known-outcomes.toml").write_text('[cells."wd"]\n"hw" = { verdict = "pass" }\n')
    hit = KnownOutcomes().lookup(sub / "wd.parquet", "hw")
    assert hit is not None and hit.verdict == "pass"
    hit = KnownOutcomes().lookup(sub / "wd.parquet", "kvm-v7")
    assert hit is not None and hit.why == "outer"  # the nearer file says nothing about kvm-v7


def _report(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, ["report", *args])
    return res.exit_code, res.stdout


def test_declared_divergence_xfail_then_moved_is_fail_and_gone_is_xpass(tmp_path: Path) -> None:
    index = _diverging(tmp_path / "t.parquet")
    f = tmp_path / "known-outcomes.toml"
    f.write_text(f'[cells."t"]\n"hw" = {{ verdict = "diverge", bug = "B99", event = {index}, rule = "{DIVERGING_RULE}" }}\n')
    code, out = _report(str(tmp_path), "--policy", "hw")
    assert code == 0, out
    assert out.splitlines()[0].startswith("1 runs: 1 xfail")
    assert "known divergences confirmed (1): B99" in out
    f.write_text(f'[cells."t"]\n"hw" = {{ verdict = "diverge", bug = "B99", event = {index + 1}, rule = "{DIVERGING_RULE}" }}\n')
    code, out = _report(str(tmp_path), "--policy", "hw")
    assert code == 1 and out.splitlines()[0].startswith("1 runs: 1 failed")
    assert f"declared at event {index + 1}" in out.splitlines()[2]
    write_wd_write(tmp_path / "t.parquet")  # the bug is gone: the trace now passes
    code, out = _report(str(tmp_path), "--policy", "hw")
    assert code == 1 and "1 xpass" in out.splitlines()[0]
    assert out.splitlines()[1].startswith("known divergences that did not show")
    code, out = _report(str(tmp_path), "--policy", "hw", "--no-known")
    assert code == 0


def test_replay_and_compare_read_known_outcomes() -> None:
    b16 = str(ROOT / "traces" / "bugs" / "B16-cpuid-while-l2-active.parquet")
    res = CliRunner().invoke(main, ["replay", b16, "--policy", "kvm-v7"])
    assert res.exit_code == 0, res.stdout
    assert "status: XFAIL (known B16 at event 12 KVM.CTL)" in res.stdout
    assert CliRunner().invoke(main, ["replay", b16, "--policy", "kvm-v7", "--no-known"]).exit_code == 1
    res = CliRunner().invoke(main, ["compare", b16, "--policy", "kvm-v7", "--against", "kvm-v7r"])
    assert "kvm-v7: XFAIL (known B16 at event 12 KVM.CTL)" in res.stdout


def test_bundled_corpus_exits_0_naming_known_bugs_and_a_new_divergence_fails(tmp_path: Path) -> None:
    """The README's main command: exit 0, the confirmed bug ids first; a newly diverging trace: exit 1, named first."""
    code, out = _report(str(ROOT / "traces"))
    assert code == 0, out
    head = out.splitlines()[:2]
    assert "0 failed" not in head[0] and "failed" not in head[0] and "xfail (known)" in head[0]
    for bug in ("B16", "B18", "D1", "D5", "QEMU-D5"):
        assert bug in head[1]
    corpus = tmp_path / "traces"
    shutil.copytree(ROOT / "traces", corpus, ignore=shutil.ignore_patterns("*.py", "*.txt"))
    _diverging(corpus / "arch" / "zz-new-divergence.parquet", "zz-new-divergence")
    code, out = _report(str(corpus))
    assert code == 1
    lines = out.splitlines()
    assert "2 failed" in lines[0]  # under kvm-v7 (the default) and hw (the trace's own)
    assert lines[1].startswith("unexpected divergences (2)")
    assert "zz-new-divergence" in lines[2] and "zz-new-divergence" in lines[3]
