"""The result of a corpus run: every trace's replay under each policy, in trace order."""

from __future__ import annotations

from dataclasses import dataclass, field

from difftest.verdict.results import ReplayResult
from difftest.verdict.timeline import Timeline


@dataclass
class CorpusRun:
    """Results in trace order (policies in order within a trace) and, if asked, their timelines."""

    results: list[ReplayResult]
    timelines: dict[tuple[str, str], Timeline] = field(default_factory=dict)
    seconds: float = 0.0
    jobs: int = 1
