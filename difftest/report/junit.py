"""JUnit XML for CI servers: one testsuite per policy, one testcase per trace x policy.

The shape is the one Jenkins, GitLab and GitHub test reporters read: ``<testsuites>`` holding
``<testsuite name tests failures errors skipped time>`` holding ``<testcase classname name time>``;
a diverging run gets ``<failure message type>`` whose message is the first divergence with its
rule id and whose body is the text report.  Characters XML 1.0 cannot carry (control characters
from a trace's metadata) are replaced, so the file always parses.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from difftest.report.text import render_replay
from difftest.trace.io import write_text_atomic
from difftest.verdict.results import ReplayResult
from reference_model.rules import describe

_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def _clean(text: str) -> str:
    return _XML_ILLEGAL.sub("\ufffd", text)


def failure_message(res: ReplayResult) -> str:
    """One line: where the run first diverged, the rule and what differed."""
    first = res.first
    if first is None:
        return ""
    rule = first.primary_rule
    diffs = "; ".join(d.render() for d in first.diffs)
    head = f"event {first.index} (seq {first.seq}) {first.describe_event()}: {diffs}"
    if rule:
        head = f"{rule}: {head} ({describe(rule)})"
    if res.divergence_count > 1:
        head += f" [+{res.divergence_count - 1} later divergence(s)]"
    return head


def junit_xml(results: Sequence[ReplayResult], suite_name: str = "difftest") -> str:
    """The JUnit document for ``results``."""
    policies: list[str] = []
    for r in results:
        if r.policy not in policies:
            policies.append(r.policy)
    root = ET.Element("testsuites", name=suite_name, tests=str(len(results)),
                      failures=str(sum(1 for r in results if not r.passed)), errors="0",
                      time=f"{sum(r.seconds for r in results):.3f}")
    for pol in policies:
        runs = [r for r in results if r.policy == pol]
        suite = ET.SubElement(root, "testsuite", name=_clean(f"{suite_name}.{pol}"), tests=str(len(runs)),
                              failures=str(sum(1 for r in runs if not r.passed)), errors="0", skipped="0",
                              time=f"{sum(r.seconds for r in runs):.3f}")
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", name="policy", value=_clean(pol))
        ET.SubElement(props, "property", name="profile", value=_clean(runs[0].profile))
        for r in runs:
            case = ET.SubElement(suite, "testcase", classname=_clean(f"{suite_name}.{pol}"), name=_clean(r.trace_name),
                                 file=_clean(r.trace), time=f"{r.seconds:.3f}")
            if not r.passed:
                fail = ET.SubElement(case, "failure", message=_clean(failure_message(r)),
                                     type=_clean(r.first.primary_rule or "divergence") if r.first else "divergence")
                fail.text = _clean(render_replay(r))
            else:
                out = ET.SubElement(case, "system-out")
                out.text = _clean(f"{r.events} events, {r.compared} compared, {r.masked_count} masked")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(path: str | os.PathLike[str], results: Sequence[ReplayResult]) -> Path:
    """Write the JUnit file atomically."""
    return write_text_atomic(path, junit_xml(results))
