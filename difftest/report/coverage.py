"""Rule coverage of a corpus run: which SPEC rules the replayed events exercised, and which none did.

"Exercised" means the model cited the rule in the outcome of an event (``ReplayResult.rule_hits``).
Counts are summed over every run (trace x policy); ``traces`` counts distinct trace files, so a
rule that only one policy reaches still shows which traces reach it.  The catalogue is
``reference_model.rules``; only ids SPEC.md defines (``is_spec_rule``) are measured.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from difftest.verdict.results import ReplayResult
from reference_model.rules import RULES, describe, is_spec_rule


@dataclass
class RuleCoverage:
    """One rule: its text, events that cited it (all runs), per policy, and distinct traces."""

    rule: str
    text: str
    events: int = 0
    by_policy: Counter[str] = field(default_factory=Counter)
    traces: int = 0

    @property
    def touched(self) -> bool:
        return self.events > 0


@dataclass
class Coverage:
    rules: list[RuleCoverage]
    policies: list[str]
    other: Counter[str]  # non-SPEC ids (X86.*, HOST.*, ids only a trace knows) with their event counts

    @property
    def untouched(self) -> list[RuleCoverage]:
        return [r for r in self.rules if not r.touched]

    @property
    def touched_count(self) -> int:
        return sum(1 for r in self.rules if r.touched)


def rule_coverage(results: Sequence[ReplayResult]) -> Coverage:
    """Coverage of every SPEC rule id over ``results``."""
    rows = {rid: RuleCoverage(rid, text) for rid, text in RULES.items() if is_spec_rule(rid)}
    traces: dict[str, set[str]] = {rid: set() for rid in rows}
    other: Counter[str] = Counter()
    policies: list[str] = []
    for res in results:
        if res.policy not in policies:
            policies.append(res.policy)
        for rid, n in res.rule_hits.items():
            cov = rows.get(rid)
            if cov is None:
                if is_spec_rule(rid):  # a SPEC-family id the catalogue lacks: still a SPEC rule
                    cov = rows[rid] = RuleCoverage(rid, describe(rid))
                    traces[rid] = set()
                else:
                    other[rid] += n
                    continue
            cov.events += n
            cov.by_policy[res.policy] += n
            traces[rid].add(res.trace)
    for rid, cov in rows.items():
        cov.traces = len(traces[rid])
    return Coverage(list(rows.values()), policies, other)
