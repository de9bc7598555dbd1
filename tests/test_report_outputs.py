"""`difftest report` outputs for CI: JUnit XML and JSONL, through the CLI (in process)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner
from report_corpus import DIVERGING_RULE, HOSTILE_NAME, build_corpus, write_wd_write

from difftest.cli import main
from difftest.report.corpus import DEFAULT_POLICY, policies_for
from difftest.report.junit import junit_xml
from difftest.verdict.results import ReplayResult


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    folder = tmp_path_factory.mktemp("corpus")
    facts = build_corpus(folder)
    # A second policy: a user variant of hw that changes nothing (so both policies agree).
    (folder.parent / "hw-twin.toml").write_text('base = "hw"\nname = "hw-twin"\n')
    return folder, facts


def _report(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, ["report", *args])
    return res.exit_code, res.stdout, res.stderr


def test_junit_has_one_testcase_per_trace_and_policy(corpus: tuple[Path, dict[str, object]], tmp_path: Path) -> None:
    folder, facts = corpus
    twin = str(folder.parent / "hw-twin.toml")
    code, _, _ = _report(str(folder), "--policy", "hw", "--policy", twin, "--junit", str(tmp_path / "j.xml"))
    assert code == 1
    root = ET.parse(tmp_path / "j.xml").getroot()
    assert root.tag == "testsuites" and root.get("tests") == "4" and root.get("failures") == "2"
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["difftest.hw", "difftest.hw-twin"]
    for suite in suites:
        cases = suite.findall("testcase")
        assert suite.get("tests") == "2" and suite.get("failures") == "1" and len(cases) == 2
        by_name = {c.get("name"): c for c in cases}
        assert set(by_name) == {HOSTILE_NAME, "wd-write"}  # hostile name survives XML escaping intact
        assert by_name["wd-write"].find("failure") is None
        failure = by_name[HOSTILE_NAME].find("failure")
        assert failure is not None
        msg = failure.get("message") or ""
        assert msg.startswith(f"{DIVERGING_RULE}: event {facts['diverging_event']} ")
        assert failure.get("type") == DIVERGING_RULE
        assert "first divergence at event" in (failure.text or "")


def test_junit_survives_control_characters() -> None:
    res = ReplayResult("t.parquet", "bell\x07name\x00", "hw", "strict")
    root = ET.fromstring(junit_xml([res]).encode())
    assert root.find("testsuite/testcase").get("name") == "bell\ufffdname\ufffd"


def test_jsonl_one_row_per_run_deterministic_across_jobs(corpus: tuple[Path, dict[str, object]], tmp_path: Path) -> None:
    folder, facts = corpus
    twin = str(folder.parent / "hw-twin.toml")
    _report(str(folder), "--policy", "hw", "--policy", twin, "--jsonl", str(tmp_path / "a.jsonl"))
    _report(str(folder), "--policy", "hw", "--policy", twin, "--jsonl", str(tmp_path / "b.jsonl"), "--jobs", "2")
    a = (tmp_path / "a.jsonl").read_bytes()
    assert a == (tmp_path / "b.jsonl").read_bytes()
    rows = [json.loads(line) for line in a.decode().splitlines()]
    assert sorted((r["name"], r["policy"]) for r in rows) == sorted(
        (n, p) for n in (HOSTILE_NAME, "wd-write") for p in ("hw", "hw-twin"))
    for line, row in zip(a.decode().splitlines(), rows, strict=True):
        assert line == json.dumps(row, sort_keys=True, ensure_ascii=False)  # sorted keys
        assert "seconds" not in row and "time" not in row
    bad = [r for r in rows if not r["passed"]]
    assert {r["first_rule"] for r in bad} == {DIVERGING_RULE}
    assert {r["first_divergence"]["index"] for r in bad} == {facts["diverging_event"]}


def test_report_folder_and_exit_codes(corpus: tuple[Path, dict[str, object]], tmp_path: Path) -> None:
    folder, _ = corpus
    code, out, _ = _report(str(folder), "--policy", "hw", "-o", str(tmp_path / "r"))
    assert code == 1
    assert {p.name for p in (tmp_path / "r").iterdir()} == {"index.html", "report.txt", "results.jsonl"}
    assert "2 runs, 1 failed, 1 passed" in out
    assert "replaying" not in out  # no progress bar when stdout is not a terminal
    ok = tmp_path / "ok"
    write_wd_write(ok / "wd.parquet")
    code, out, _ = _report(str(ok), "--policy", "hw")
    assert code == 0 and "1 runs, 0 failed" in out


@pytest.mark.parametrize("args, needle", [
    (["--jobs", "0"], "--jobs"),
    (["--policy", "no-such-policy"], "no-such-policy"),
    (["--profile", "no-such-profile"], "no-such-profile"),
    (["--baseline", "/nonexistent/base.jsonl"], "/nonexistent/base.jsonl"),
])
def test_bad_options_exit_2_with_one_line(corpus: tuple[Path, dict[str, object]], args: list[str], needle: str) -> None:
    folder, _ = corpus
    code, out, err = _report(str(folder), *args)
    assert code == 2
    assert needle in err and "Traceback" not in err
    assert out == ""


def test_bad_trace_exits_2_naming_the_file(tmp_path: Path) -> None:
    write_wd_write(tmp_path / "a-good.parquet")
    (tmp_path / "b-garbage.parquet").write_bytes(b"not parquet at all")
    code, _, err = _report(str(tmp_path), "--policy", "hw", "-o", str(tmp_path / "out"), "--jobs", "2")
    assert code == 2
    assert "b-garbage.parquet" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # nothing written on bad input


def test_default_policies_add_the_traces_own() -> None:
    from reference_model.policies import POLICIES

    default = DEFAULT_POLICY if DEFAULT_POLICY in POLICIES else "hw"
    assert policies_for([], []) == [default]
    assert policies_for([], ["hw", "x"]) == list(dict.fromkeys([default, "hw", "x"]))
    assert policies_for(["a"], ["b", "a"]) == ["a", "b"]
