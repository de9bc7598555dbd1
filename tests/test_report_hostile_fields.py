"""HTML safety: every text a trace provides (each metadata key and value, notes, exp_rule, snapshot
paths) is shown escaped in the report and compare pages.

Each hostile string carries a unique marker in a tag name and an event-handler attribute; the
pages are parsed with :mod:`html.parser` and must contain no element or attribute bearing a
marker, while the markers must appear as visible text (so the field really was shown, escaped).
The browser rendering of hostile strings is tests/test_report_browser.py (reports engineer).
"""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from difftest.cli import main
from difftest.engine.reference import replay_rows
from difftest.report.coverage import rule_coverage
from difftest.report.html import render_report
from difftest.trace.io import Expect, Snapshot, TraceRow, write_trace
from difftest.trace.schema import META_KEYS
from difftest.verdict.corpus import CorpusRun
from difftest.verdict.profiles import get_profile
from difftest.verdict.results import ReplayResult
from reference_model.events import Event
from reference_model.policies import get_policy


def hostile(name: str) -> str:
    """Markup that would run or inject something if it reached the page unescaped."""
    marker = _unique(name)
    return (f'<x-{marker} onpwn{marker}="1">"\'><img src=x onerror{marker}=1></td></table></script>'
            f"<script>pwn{marker}()</script><!-- {marker} -->&amp;{{{{7*7}}}}")


def _unique(name: str) -> str:
    return f"zqx{name}"  # no element or attribute of the templates contains "zqx"


class PageScan(HTMLParser):
    """Collects element names, attribute names and the visible text of a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[str] = []
        self.text: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += [a for a, _ in attrs]
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        (self.scripts if self._in_script else self.text).append(data)

    def handle_comment(self, data: str) -> None:
        self.attrs.append(f"comment:{data}")


def assert_escaped(page: str, markers: list[str], must_show: list[str]) -> None:
    scan = PageScan()
    scan.feed(page)
    scan.close()
    for m in map(_unique, markers):
        assert not [t for t in scan.tags if m in t], f"element injected by {m}"
        assert not [a for a in scan.attrs if m in a], f"attribute or comment injected by {m}"
        assert not [s for s in scan.scripts if m in s], f"script text injected by {m}"
    text = "".join(scan.text)
    for m in must_show:
        assert hostile(m) in text, f"{m} is not shown (as text) on the page"


# The metadata keys a trace may carry (every documented key, plus an undocumented one), each with
# its own marker; producer/schema_version must stay valid for the trace to be read at all.
META_MARKERS = {k: f"m{i}" for i, k in enumerate(k for k in [*META_KEYS, "x-undocumented"]
                                                 if k not in ("producer", "schema_version", "cpu.features",
                                                              "policy", "profile", "setup_rows"))}


def _hostile_trace(path: Path) -> Path:
    meta = {k: hostile(m) for k, m in META_MARKERS.items()}
    meta["producer"] = "synthetic"
    meta["policy"] = "hw"
    # a key whose *name* is hostile (the report lists metadata keys too)
    meta[hostile("mkey")] = "value"
    rows = [
        {"seq": 0, "kind": "set_cpuid", "vcpu": 0, "level": "host", "cpuid_7_ecx": 1 << 31, "note": hostile("n0")},
        {"seq": 1, "kind": "wrmsr", "vcpu": 0, "level": "l1", "msr": 0x6E1, "value": 0x4,
         "exp_result": "gp", "exp_rule": hostile("r1"), "note": hostile("n1")},  # diverges: hw accepts the write
        {"seq": 2, "kind": "rdmsr", "vcpu": 0, "level": "l1", "msr": 0x6E1, "exp_result": "ok", "exp_value": 0x8,
         "exp_rule": hostile("r2"), "note": hostile("n2")},
        {"seq": 3, "kind": "snapshot", "vcpu": 0, "level": "host", "path": "vcpu0.pkrs", "exp_value": 0x99,
         "exp_rule": hostile("r3"), "note": hostile("n3")},
    ]
    return write_trace(path, rows, meta)


def test_report_page_escapes_every_trace_field(tmp_path: Path) -> None:
    trace = _hostile_trace(tmp_path / "traces" / "hostile.parquet")
    res = CliRunner().invoke(main, ["report", str(trace.parent), "-o", str(tmp_path / "out"), "--policy", "hw"])
    assert res.exit_code == 1, res.output  # the trace diverges, so its details are on the page
    page = (tmp_path / "out" / "index.html").read_text()
    markers = [*META_MARKERS.values(), "mkey", "n0", "n1", "n2", "n3", "r1", "r2", "r3"]
    # shown: the description and every other metadata value, the key, the notes and rules of the divergence
    assert_escaped(page, markers, must_show=[*META_MARKERS.values(), "mkey", "n1", "r1"])


def test_compare_page_escapes_every_trace_field(tmp_path: Path) -> None:
    trace = _hostile_trace(tmp_path / "hostile.parquet")
    html = tmp_path / "compare.html"
    res = CliRunner().invoke(main, ["compare", str(trace), "--policy", "hw", "--against", "kvm-rfc-v1",
                                    "--html", str(html)])
    assert res.exit_code in (0, 1), res.output
    markers = [*META_MARKERS.values(), "mkey", "n0", "n1", "n2", "n3", "r1", "r2", "r3"]
    assert_escaped(html.read_text(), markers, must_show=[])


@pytest.mark.parametrize("marker", ["p0"])
def test_report_page_escapes_snapshot_paths(marker: str) -> None:
    """Trace validation only admits ``vcpuN.name`` paths, so render a result holding a hostile one
    directly: the page must not trust validation to have run."""
    rows = [TraceRow(0, 0, Event("set_cpuid", seq=0, level="host", cpuid_7_ecx=1 << 31), None, None),
            TraceRow(1, 1, None, Snapshot(hostile(marker), 5, hostile("r9")), None, hostile("n9")),
            TraceRow(2, 2, Event("rdmsr", seq=2, level="l1", msr=0x6E1), None, Expect(result="gp", rule=hostile("r8")))]
    result = ReplayResult("hostile.parquet", hostile("name"), "hw", "strict", meta={"name": hostile("name")})
    replay_rows(rows, get_policy("hw").build(), get_profile("strict"), result)
    assert not result.passed
    page = render_report(CorpusRun([result]), rule_coverage([result]))
    assert_escaped(page, [marker, "r9", "n9", "r8", "name"], must_show=[marker])
