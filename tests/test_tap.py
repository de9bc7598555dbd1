"""TAP13 output (``--tap``) read back by an independent TAP consumer, tap.py from PyPI.

The dialect is kvm-unit-tests' ``run_tests.sh -t``: ``TAP version 13``, ``ok N - name`` /
``not ok N - name``, directives after ``#``, the plan ``1..N`` last.  What each run should be comes
from ``traces/bugs/matrix.toml`` (B16 diverges under kvm-v7 at event 12, rule KVM.CTL; kvm-v7r
passes), not from the code under test.
"""

from __future__ import annotations

import unittest
from pathlib import Path

import tap.loader as tap_loader  # tap.py, from the test extra
import tap.parser as tap_parser
from click.testing import CliRunner

from difftest.cli import main
from difftest.engine import replay_trace
from difftest.report.tap import PointStatus, tap_document
from difftest.trace.io import open_trace
from difftest.verdict.profiles import get_profile
from reference_model.policies import get_policy

ROOT = Path(__file__).resolve().parent.parent
B16 = ROOT / "traces" / "bugs" / "B16-cpuid-while-l2-active.parquet"
ARCH = ROOT / "traces" / "arch" / "ARCH.CPUID-pks-enumerated.parquet"


def parse(text: str) -> list:
    return list(tap_parser.Parser().parse_text(text))


def points_of(lines: list) -> list:
    return [ln for ln in lines if ln.category == "test"]


def check_stream(path: Path, runs: int) -> unittest.TestResult:
    """tap.py's own checks (version, plan, numbering) raise no error; every test point is there."""
    suite = tap_loader.Loader().load_suite_from_file(str(path))
    result = unittest.TestResult()
    suite.run(result)
    assert result.errors == []
    assert result.testsRun == runs
    return result


def test_report_tap_validates(tmp_path: Path) -> None:
    out = tmp_path / "run.tap"
    res = CliRunner().invoke(main, ["report", str(B16), str(ARCH), "--policy", "kvm-v7", "--tap", str(out), "--no-known"])
    assert res.exit_code == 1, res.output  # B16 diverges under kvm-v7 (its known-outcome declaration ignored)
    text = out.read_text()
    lines = parse(text)
    assert lines[0].category == "version" and lines[0].version == 13
    assert lines[-1].category == "plan"  # last, as run_tests.sh writes it
    points = points_of(lines)
    assert [p.number for p in points] == list(range(1, len(points) + 1))
    assert lines[-1].expected_tests == len(points)
    b16 = [p for p in points if "B16" in p.description and "[kvm-v7]" in p.description]
    assert len(b16) == 1 and not b16[0].ok and not b16[0].todo
    block = b16[0].yaml_block
    assert block["rule"] == "KVM.CTL" and block["event"] == 12
    assert block["rule_text"].startswith("Controls off by default")
    assert block["diffs"][0]["field"] == "vcpu1.vmcs01.exit_ctls.load_pkrs"
    passing = [p for p in points if "B16" not in p.description]
    assert passing and all(p.ok for p in passing)
    result = check_stream(out, len(points))
    assert len(result.failures) == 1


def test_report_tap_marks_the_corpus_known_divergence_todo(tmp_path: Path) -> None:
    """traces/bugs/known-outcomes.toml declares B16 under kvm-v7: the report's TAP says `not ok ... # TODO`."""
    out = tmp_path / "known.tap"
    res = CliRunner().invoke(main, ["report", str(B16), "--policy", "kvm-v7", "--tap", str(out)])
    assert res.exit_code == 0, res.output  # XFAIL only
    b16 = [p for p in points_of(parse(out.read_text())) if "[kvm-v7]" in p.description]
    assert len(b16) == 1 and not b16[0].ok and b16[0].todo


def test_known_outcomes_become_todo_and_skip(tmp_path: Path) -> None:
    """XFAIL -> not ok # TODO (expected), SKIP -> ok # SKIP, XPASS -> not ok (someone must look)."""
    strict = get_profile("strict")
    v7 = replay_trace(open_trace(B16), get_policy("kvm-v7"), strict)
    v7r = replay_trace(open_trace(B16), get_policy("kvm-v7r"), strict)
    hw = replay_trace(open_trace(ARCH), get_policy("hw"), strict)
    statuses = {(v7.trace, "kvm-v7"): PointStatus("XFAIL", "B16"),
                (v7r.trace, "kvm-v7r"): PointStatus("XPASS", "B16"),
                (hw.trace, "hw"): PointStatus("SKIP", "not applicable: bare CPU")}
    path = tmp_path / "known.tap"
    path.write_text(tap_document([v7, v7r, hw], statuses))
    xfail, xpass, skip = points_of(parse(path.read_text()))
    assert not xfail.ok and xfail.todo and "B16" in xfail.directive.text
    assert xfail.yaml_block["known"] == "B16" and xfail.yaml_block["rule"] == "KVM.CTL"
    assert not xpass.ok and not xpass.todo and xpass.yaml_block["status"] == "XPASS"
    assert skip.ok and skip.skip and "bare CPU" in skip.directive.text
    result = check_stream(path, 3)
    assert len(result.expectedFailures) == 1 and len(result.skipped) == 1 and len(result.failures) == 1


def test_status_attribute_on_the_result_is_used() -> None:
    """A result judged against its known outcome (issue 19) carries its status; the writer reads it."""
    from difftest.verdict.run_status import Status, Verdict

    v7 = replay_trace(open_trace(B16), get_policy("kvm-v7"), get_profile("strict"))
    v7.verdict = Verdict(Status.XFAIL, "known B16")
    (point,) = points_of(parse(tap_document([v7])))
    assert point.todo and not point.ok


def test_replay_tap_to_stdout() -> None:
    res = CliRunner().invoke(main, ["replay", str(B16), "--policy", "kvm-v7r", "--tap", "-"])
    assert res.exit_code == 0
    lines = parse(res.stdout)
    (point,) = points_of(lines)
    assert point.ok and lines[-1].expected_tests == 1


def test_report_tap_to_stdout_keeps_stdout_clean(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["report", str(ARCH), "--policy", "hw", "--tap", "-"])
    assert res.exit_code == 0
    assert res.stdout.startswith("TAP version 13\n")
    assert "runs," in res.stderr  # the summary line goes to stderr
    assert all(ln.category != "unknown" for ln in parse(res.stdout))


def test_a_hash_in_a_trace_name_is_no_directive() -> None:
    v7r = replay_trace(open_trace(B16), get_policy("kvm-v7r"), get_profile("strict"))
    v7r.trace_name = "evil # SKIP not really"
    (point,) = points_of(parse(tap_document([v7r])))
    assert point.ok and not point.skip and not point.todo
    assert "evil %23 SKIP not really" in point.description
