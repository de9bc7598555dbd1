"""The HTML page (static checks, no browser) and rule coverage."""

from __future__ import annotations

import html
import re
from collections import Counter
from pathlib import Path

import pytest
from report_corpus import DIVERGING_RULE, HOSTILE_STRINGS, PAGE, build_corpus

from difftest import TraceBuilder
from difftest.report.corpus import find_traces, run_corpus
from difftest.report.coverage import rule_coverage
from difftest.report.html import render_report
from difftest.verdict.results import ReplayResult
from reference_model.rules import RULES, describe, is_spec_rule


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, object]]:
    folder = tmp_path_factory.mktemp("corpus")
    facts = build_corpus(folder)
    # PKRS snapshot that disagrees: expected WD(1) = 0x8, the model has AD(1) = 0x4 after WRMSR 0x4.
    t = TraceBuilder("snap-rights", "snapshot of PKRS disagrees", long_mode=True)
    t.cpuid(pks=True).wrmsr(0x6E1, 0x4).snapshot("vcpu0.pkrs", 0x8)
    t.map(PAGE, key=1).access(PAGE).expect_pf(0x21)
    t.write(folder / "snap.parquet")
    run = run_corpus(find_traces([str(folder)]), ["hw"], "strict", timelines=True, progress=False)
    return render_report(run, rule_coverage(run.results)), facts


def test_page_is_self_contained(page: tuple[str, dict[str, object]]) -> None:
    text, _ = page
    assert "<script" not in text.lower()
    urls = set(re.findall(r"(?:https?:)?//[\w.-]+", text))
    assert urls <= {"http://www.w3.org"}, urls  # only the SVG namespace name, never fetched
    assert "@import" not in text and "url(" not in text
    assert re.search(r"<link[^>]+rel=\"stylesheet\"", text) is None
    assert "default-src 'none'" in text  # CSP: even an escaping bug could not run or load anything


def test_hostile_strings_are_escaped(page: tuple[str, dict[str, object]]) -> None:
    text, _ = page
    for s in HOSTILE_STRINGS:
        escaped = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&#34;").replace("'", "&#39;")
        assert escaped in text  # markupsafe's escaping, as Jinja applies it
        assert s not in text


def test_first_divergence_rule_and_state_table(page: tuple[str, dict[str, object]]) -> None:
    text, facts = page
    assert f"at event {facts['diverging_event']} " in text
    assert html.escape(describe(DIVERGING_RULE)) in text
    # the PKRS snapshot difference is decoded per key (AD(k) = bit 2k, WD(k) = bit 2k+1)
    m = re.search(r"vcpu0\.pkrs</td><td class=\"ev\">0x8</td><td class=\"ev\">0x4</td>.*?</table>", text, re.S)
    assert m is not None
    keys = re.findall(r"<tr><td class=\"num\">(\d+)</td><td>([^<]*)</td><td>([^<]*)</td></tr>", m.group(0))
    assert keys == [("1", "write disabled (WD)", "access disabled (AD)")]


def test_summary_and_matrix(page: tuple[str, dict[str, object]]) -> None:
    text, _ = page
    assert "FAIL &middot; 2 of 3 runs diverge" in text
    assert text.count('class="cell-fail"') == 2 and text.count('class="cell-pass"') == 1


def test_rule_coverage_counts() -> None:
    a = ReplayResult("a.parquet", "a", "hw", "strict", rule_hits=Counter({"ARCH.RIGHTS": 3, "X86.MODE": 2}))
    b = ReplayResult("b.parquet", "b", "hw", "strict", rule_hits=Counter({"ARCH.RIGHTS": 1, "VMX.CTL": 4}))
    c = ReplayResult("a.parquet", "a", "other", "strict", rule_hits=Counter({"ARCH.RIGHTS": 5}))
    cov = rule_coverage([a, b, c])
    by = {r.rule: r for r in cov.rules}
    assert {r.rule for r in cov.rules} == {rid for rid in RULES if is_spec_rule(rid)}
    assert by["ARCH.RIGHTS"].events == 9 and by["ARCH.RIGHTS"].traces == 2
    assert by["ARCH.RIGHTS"].by_policy == Counter({"hw": 4, "other": 5})
    assert by["VMX.CTL"].events == 4 and by["VMX.CTL"].traces == 1
    assert cov.other == Counter({"X86.MODE": 2})  # not a SPEC rule: listed apart, not measured
    assert "PKVM.COST" in {r.rule for r in cov.untouched}
    assert cov.touched_count == 2


def test_coverage_section_lists_untouched(page: tuple[str, dict[str, object]]) -> None:
    text, _ = page
    section = text[text.index('id="coverage"'):]
    assert "not touched by any trace" in section
    assert re.search(r'<tr class="untouched"><td class="mono">PKVM\.COST</td>', section)
    assert re.search(r'<tr class=""><td class="mono">ARCH\.RIGHTS</td>', section)


def test_report_without_timelines_still_renders(tmp_path: Path) -> None:
    build_corpus(tmp_path)
    run = run_corpus(find_traces([str(tmp_path)]), ["hw"], "strict", timelines=False, progress=False)
    text = render_report(run, rule_coverage(run.results))
    assert "timeline not recorded" in text and "<svg" not in text
