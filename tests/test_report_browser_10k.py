"""A 10,000-trace report page in headless Chromium: the grouped view and the filters (issue 19 item 5).

The page is rendered from real replay results: the bundled corpus is replayed once and judged
against its known outcomes, and its runs are cloned under 10,000 trace names (copy N of each
trace), so the page has the shape of a 10,000-trace report without replaying 20,000 runs in a
test.  The expectations are counts taken from those results, never from the page's code: the
groups (status + first divergence) and how many runs each status, policy and rule filter keeps.
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from test_report_browser import DevToolsPipe, _chromium, _problems

from difftest.report.corpus import run_corpus
from difftest.report.coverage import rule_coverage
from difftest.report.html import render_report
from difftest.trace.io import find_traces
from difftest.verdict.corpus import CorpusRun
from difftest.verdict.known_outcomes import KnownOutcomes
from difftest.verdict.results import ReplayResult

REPO = Path(__file__).resolve().parent.parent
TRACES = 10_000


def _ten_thousand_traces() -> list[ReplayResult]:
    run = run_corpus(find_traces([str(REPO / "traces")]), [], None, progress=False)
    known = KnownOutcomes()
    for r in run.results:
        r.judge(known.lookup(r.trace, r.policy))
    by_trace: dict[str, list[ReplayResult]] = {}
    for r in run.results:
        by_trace.setdefault(r.trace, []).append(r)
    originals = list(by_trace.values())
    out = []
    for i in range(TRACES):
        for r in originals[i % len(originals)]:
            c = copy.copy(r)
            c.trace = f"copy{i // len(originals):03d}/{Path(r.trace).name}"
            c.trace_name = f"{r.trace_name}#{i // len(originals)}"
            out.append(c)
    return out


@pytest.mark.e2e
def test_ten_thousand_trace_report_groups_and_filters(tmp_path: Path) -> None:
    binary = _chromium()
    if binary is None:
        pytest.skip("Chromium is not installed (Debian package 'chromium'; .ci/run installs it)")
    results = _ten_thousand_traces()
    page = tmp_path / "index.html"
    html = render_report(CorpusRun(results), rule_coverage(results))
    page.write_text(html, encoding="utf-8")
    assert len(html.encode()) < 8_000_000  # the budget for 10,000 traces
    status = Counter(r.status.value for r in results)
    by_policy = Counter(r.policy for r in results)
    rule = "KVM.CTL"  # B16's first divergence under kvm-v7
    by_rule = sum(1 for r in results if r.first and r.first.primary_rule == rule)
    assert status["XFAIL"] and status["SKIP"] and status["PASS"] and by_rule

    cdp = DevToolsPipe(binary, tmp_path / "chromium-profile")
    try:
        target = next(t for t in cdp.send("Target.getTargets")["targetInfos"] if t["type"] == "page")
        session = cdp.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Network", "Page"):
            cdp.send(f"{domain}.enable", session=session)
        cdp.send("Emulation.setDeviceMetricsOverride",
                 {"width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": False}, session=session)

        def load(scripts: bool) -> None:
            cdp.send("Emulation.setScriptExecutionDisabled", {"value": not scripts}, session=session)
            cdp.events.clear()
            cdp.send("Page.navigate", {"url": page.as_uri()}, session=session, timeout=120)
            cdp.wait_for("Page.loadEventFired", timeout=120)
            time.sleep(0.3)

        def js(expr: str) -> Any:
            res = cdp.send("Runtime.evaluate", {"expression": expr, "returnByValue": True}, session=session, timeout=60)
            assert "exceptionDetails" not in res, res
            return res["result"].get("value")

        visible = "Array.from(document.querySelectorAll('tr[data-s]')).filter(r => !r.hidden).length"

        def choose(name: str, value: str) -> int:
            js(f"(() => {{ const s = document.querySelector('#filters [name={name}]'); s.value = {value!r};"
               " s.dispatchEvent(new Event('change', {bubbles: true})); })()")
            return int(js(visible))

        load(scripts=False)  # without JavaScript the page still reads: every run is a row, no filter form
        no_js = {"rows": js("document.querySelectorAll('tr[data-s]').length"), "hidden_rows": js(
            "Array.from(document.querySelectorAll('tr[data-s]')).filter(r => r.hidden).length"),
            "form_hidden": js("document.getElementById('filters').hidden")}

        load(scripts=True)
        problems = _problems(cdp.events)
        groups = js("Array.from(document.querySelectorAll('#groups ~ table.groups tr[id^=g]'))"
                    ".map(tr => [tr.querySelector('.badge').textContent, +tr.children[2].textContent.replace(/,/g, ''),"
                    " tr.children[1].textContent.trim()])")
        groups_on_first_screen = js("document.querySelector('table.groups').getBoundingClientRect().top < innerHeight")
        form_shown = js("!document.getElementById('filters').hidden")
        default_rows = int(js(visible))
        only = {s: choose("s", s) for s in ("PASS", "XFAIL", "SKIP")}
        choose("s", "")
        kvm = choose("p", "kvm-v7")
        with_rule = choose("r", rule)
        shown_text = js("document.getElementById('shown').textContent")
    finally:
        stderr = cdp.close()
    assert not problems, "\n".join(problems) + "\n" + stderr[-2000:]
    assert no_js == {"rows": len(results), "hidden_rows": 0, "form_hidden": True}
    # the grouped view: one row per signature, worst first, counts adding up to every run that is not a PASS
    assert groups_on_first_screen
    assert sum(n for _, n, _ in groups) == len(results) - status["PASS"]
    order = ["FAIL", "XPASS", "XFAIL", "SKIP"]
    assert [order.index(s) for s, _, _ in groups] == sorted(order.index(s) for s, _, _ in groups)
    b16 = [n for s, n, sig in groups if s == "XFAIL" and sig.startswith("B16 ")]
    assert b16 == [sum(1 for r in results if r.verdict and r.verdict.known and r.verdict.known.bug == "B16"
                       and r.status.value == "XFAIL")]
    # the filters: by default what is not a PASS, then each status, policy and rule
    assert form_shown and default_rows == len(results) - status["PASS"]
    assert only == {"PASS": status["PASS"], "XFAIL": status["XFAIL"], "SKIP": status["SKIP"]}
    assert kvm == by_policy["kvm-v7"]
    assert with_rule == by_rule  # (every KVM.CTL first divergence is under kvm-v7)
    assert shown_text == f"{by_rule} run(s) shown"
