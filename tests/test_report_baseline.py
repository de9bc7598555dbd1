"""`--baseline`: new failures, fixes and unchanged ones against a previous run."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from report_corpus import HOSTILE_NAME, PAGE, PKRS_AD1, write_hostile

from difftest import TraceBuilder
from difftest.cli import main


def _fixed_hostile(path: Path) -> None:
    """The hostile scenario with the right expectation: AD(1) denies a read, PFEC = P|PK = 0x21 (ARCH.PFEC.PK)."""
    t = TraceBuilder(HOSTILE_NAME, "fixed", policy="hw", long_mode=True)
    t.cpuid(pks=True).cr4(pks=True).wrmsr(0x6E1, PKRS_AD1)
    t.access(PAGE, key=1).expect_pf(0x21, rule="ARCH.PFEC.PK")
    t.write(path)


def _broken_wd(path: Path) -> None:
    """wd-write with a wrong expectation (WD(1) with CR0.WP=1 does deny the write: ARCH.RIGHTS)."""
    t = TraceBuilder("wd-write", "now wrong", policy="hw", long_mode=True)
    t.cpuid(pks=True).cr4(pks=True).wrmsr(0x6E1, 0x8)
    t.access(PAGE, key=1, write=True).expect_ok(rule="ARCH.RIGHTS")
    t.write(path)


def _stale(path: Path) -> None:
    t = TraceBuilder("stale-fail", "fails before and after", policy="hw", long_mode=True)
    t.cpuid(pks=True).cr4(pks=True).wrmsr(0x6E1, PKRS_AD1)
    t.access(PAGE, key=1).expect_ok(rule="ARCH.RIGHTS")
    t.write(path)


def test_baseline_folder_reports_new_failures_fixes_and_unchanged(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    write_hostile(corpus / "hostile.parquet")  # fails
    t = TraceBuilder("wd-write", "passes", policy="hw", long_mode=True)
    t.cpuid(pks=True).cr4(pks=True).wrmsr(0x6E1, 0x8)
    t.access(PAGE, key=1, write=True).expect_pf(0x23, rule="ARCH.PFEC.PK")
    t.write(corpus / "wd.parquet")
    _stale(corpus / "stale.parquet")
    runner = CliRunner()
    first = runner.invoke(main, ["report", str(corpus), "--policy", "hw", "-o", str(tmp_path / "before")])
    assert first.exit_code == 1

    _fixed_hostile(corpus / "hostile.parquet")
    _broken_wd(corpus / "wd.parquet")
    res = runner.invoke(main, ["report", str(corpus), "--policy", "hw", "-o", str(tmp_path / "after"),
                               "--baseline", str(tmp_path / "before")])
    assert res.exit_code == 1
    head = res.stdout.split("\n\n")[0]
    assert "1 new failure(s), 1 fixed, 1 still failing, 0 still passing" in head
    lines = head.splitlines()
    # first the new failures, then the fixed, then the still failing ones, each under its title
    new, fixed, still = lines.index("new failures (1):"), lines.index("fixed (1):"), lines.index("still failing (1):")
    assert new < fixed < still
    assert lines[new + 1].split()[:3] == ["FAIL", "wd-write", "hw"] and "was PASS" in lines[new + 1]
    assert lines[fixed + 1].split()[0] == "PASS" and HOSTILE_NAME in lines[fixed + 1]
    assert lines[still + 1].split()[:3] == ["FAIL", "stale-fail", "hw"]
    page = (tmp_path / "after" / "index.html").read_text()
    assert page.index("Since the baseline") < page.index('id="summary"')  # at the top
    assert "NEW FAILURE" in page and "FIXED" in page


def test_baseline_same_folder_as_output(tmp_path: Path) -> None:
    """-o DIR --baseline DIR reads the previous results before overwriting them."""
    corpus = tmp_path / "c"
    _stale(corpus / "s.parquet")
    runner = CliRunner()
    runner.invoke(main, ["report", str(corpus), "--policy", "hw", "-o", str(tmp_path / "o")])
    res = runner.invoke(main, ["report", str(corpus), "--policy", "hw", "-o", str(tmp_path / "o"),
                               "--baseline", str(tmp_path / "o")])
    assert "0 new failure(s), 0 fixed, 1 still failing" in res.stdout
    assert res.exit_code == 0  # a failure the baseline already had does not fail the gate


def test_baseline_moved_first_divergence_is_a_new_failure(tmp_path: Path) -> None:
    """Failing before and after, but the first divergence moved to another event and rule: new, exit 1."""
    corpus = tmp_path / "c"
    _stale(corpus / "s.parquet")
    runner = CliRunner()
    runner.invoke(main, ["report", str(corpus), "--policy", "hw", "-o", str(tmp_path / "before")])
    t = TraceBuilder("stale-fail", "now fails earlier", policy="hw", long_mode=True)
    t.cpuid(pks=True).cr4(pks=True).wrmsr(0x6E1, PKRS_AD1).expect_gp(rule="ARCH.MSR.RSVD")  # WRMSR of a valid value succeeds
    t.access(PAGE, key=1).expect_ok(rule="ARCH.RIGHTS")
    t.write(corpus / "s.parquet")
    res = runner.invoke(main, ["report", str(corpus), "--policy", "hw", "--baseline", str(tmp_path / "before")])
    assert res.exit_code == 1, res.stdout
    head = res.stdout.split("\n\n")[0]
    assert "1 new failure(s), 0 fixed, 0 still failing" in head
    assert "ARCH.MSR.RSVD" in head and "(first divergence moved)" in head


def test_bad_baseline_names_file_line_and_key(tmp_path: Path) -> None:
    corpus = tmp_path / "c"
    _stale(corpus / "s.parquet")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"trace": "x", "name": "x", "policy": "hw", "passed": true, "divergences": 0, '
                   '"first_divergence": null, "first_rule": null}\n{not json\n')
    res = CliRunner().invoke(main, ["report", str(corpus), "--baseline", str(bad)])
    assert res.exit_code == 2
    assert res.stderr.strip() == (f"difftest: error: {bad}: line 2: not JSON "
                                  "(Expecting property name enclosed in double quotes, column 2)")
    bad.write_text('{"trace": "x", "name": "x", "policy": "hw", "divergences": 0}\n')
    res = CliRunner().invoke(main, ["report", str(corpus), "--baseline", str(bad)])
    assert res.exit_code == 2
    assert res.stderr.strip().startswith(f"difftest: error: {bad}: line 1: column 'first_divergence': missing key")
