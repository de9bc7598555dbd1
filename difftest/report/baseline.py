"""Baselines: what changed since a previous run (new failures, fixes, unchanged ones).

A baseline is a previous run's JSONL (``--jsonl FILE``) or its output folder (``-o DIR``, whose
``results.jsonl`` is read).  Runs are matched by trace path and policy; when the path is not
found (the corpus moved), by trace name and policy if that name is unique in the baseline.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from difftest.errors import InputError
from difftest.verdict.results import ReplayResult

BASELINE_FILE = "results.jsonl"


@dataclass(frozen=True)
class BaselineRun:
    """What the baseline says about one trace x policy."""

    trace: str
    name: str
    policy: str
    passed: bool
    divergences: int
    first_index: int | None
    first_rule: str | None


@dataclass
class Change:
    """One run compared with the baseline (``before`` is None for a run the baseline lacks)."""

    trace: str
    name: str
    policy: str
    before: BaselineRun | None
    now: ReplayResult | None

    @property
    def moved(self) -> bool:
        """Both failing, but the first divergence is at another event or rule."""
        if self.before is None or self.now is None or self.now.first is None:
            return False
        return (self.before.first_index, self.before.first_rule) != (self.now.first.index, self.now.first.primary_rule)


@dataclass
class BaselineDiff:
    source: str
    new_failures: list[Change] = field(default_factory=list)
    fixed: list[Change] = field(default_factory=list)
    still_failing: list[Change] = field(default_factory=list)
    still_passing: list[Change] = field(default_factory=list)
    new_passing: list[Change] = field(default_factory=list)  # runs the baseline did not have, passing
    gone: list[Change] = field(default_factory=list)  # baseline runs this run did not repeat


def _field(path: str, line: int, row: dict[str, object], key: str, kinds: tuple[type, ...], optional: bool = False) -> object:
    if key not in row:
        raise InputError(path, "missing key (not a difftest results.jsonl?)", line=line, column=key)
    v = row[key]
    if v is None and optional:
        return None
    if not isinstance(v, kinds) or (bool not in kinds and isinstance(v, bool)):
        raise InputError(path, f"expected {' or '.join(k.__name__ for k in kinds)}, got {type(v).__name__}",
                         line=line, column=key)
    return v


def load_baseline(path: str) -> list[BaselineRun]:
    """The runs of a previous JSONL file, or of ``DIR/results.jsonl``."""
    p = Path(path)
    if p.is_dir():
        p = p / BASELINE_FILE
    if not p.is_file():
        raise InputError(str(p), "no such baseline (give a results JSONL file or a report folder holding "
                                 f"{BASELINE_FILE})")
    src = str(p)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(src, "not UTF-8 text") from None
    runs = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(src, f"not JSON ({exc.msg}, column {exc.colno})", line=n) from None
        if not isinstance(row, dict):
            raise InputError(src, "expected a JSON object per line", line=n)
        first = _field(src, n, row, "first_divergence", (dict,), optional=True)
        first_index = first.get("index") if isinstance(first, dict) else None
        if first_index is not None and (not isinstance(first_index, int) or isinstance(first_index, bool)):
            raise InputError(src, "expected an int", line=n, column="first_divergence.index")
        runs.append(BaselineRun(
            trace=str(_field(src, n, row, "trace", (str,))),
            name=str(_field(src, n, row, "name", (str,))),
            policy=str(_field(src, n, row, "policy", (str,))),
            passed=bool(_field(src, n, row, "passed", (bool,))),
            divergences=int(_field(src, n, row, "divergences", (int,))),  # type: ignore[arg-type]
            first_index=first_index,
            first_rule=_field(src, n, row, "first_rule", (str,), optional=True),  # type: ignore[arg-type]
        ))
    return runs


def compare_with_baseline(source: str, before: Sequence[BaselineRun], now: Sequence[ReplayResult]) -> BaselineDiff:
    """Sort every run into new failure / fixed / still failing / still passing / new / gone."""
    by_path = {(b.trace, b.policy): b for b in before}
    name_count: dict[tuple[str, str], int] = {}
    for b in before:
        name_count[(b.name, b.policy)] = name_count.get((b.name, b.policy), 0) + 1
    by_name = {(b.name, b.policy): b for b in before if name_count[(b.name, b.policy)] == 1}
    diff = BaselineDiff(source)
    used: set[int] = set()
    for r in now:
        b = by_path.get((r.trace, r.policy)) or by_name.get((r.trace_name, r.policy))
        if b is not None and id(b) in used:
            b = None
        ch = Change(r.trace, r.trace_name, r.policy, b, r)
        if b is None:
            (diff.new_passing if r.passed else diff.new_failures).append(ch)
            continue
        used.add(id(b))
        if r.passed:
            (diff.still_passing if b.passed else diff.fixed).append(ch)
        else:
            (diff.new_failures if b.passed else diff.still_failing).append(ch)
    for b in before:
        if id(b) not in used:
            diff.gone.append(Change(b.trace, b.name, b.policy, b, None))
    return diff


def render_baseline_text(diff: BaselineDiff) -> str:
    """A few lines for stdout: the changes first, then the counts."""
    lines = [f"against baseline {diff.source}: {len(diff.new_failures)} new failure(s), {len(diff.fixed)} fixed, "
             f"{len(diff.still_failing)} still failing, {len(diff.still_passing)} still passing"
             + (f", {len(diff.new_passing)} new passing" if diff.new_passing else "")
             + (f", {len(diff.gone)} gone" if diff.gone else "")]
    for ch in diff.new_failures:
        first = ch.now.first if ch.now else None
        where = f" at event {first.index} {first.primary_rule or ''}".rstrip() if first else ""
        lines.append(f"  NEW FAILURE  {ch.name}  {ch.policy}{where}" + ("" if ch.before else "  (not in baseline)"))
    for ch in diff.fixed:
        lines.append(f"  FIXED        {ch.name}  {ch.policy}")
    for ch in diff.still_failing:
        if ch.moved:
            was = ch.before.first_index if ch.before else "?"
            lines.append(f"  MOVED        {ch.name}  {ch.policy}  first divergence was event {was}")
    return "\n".join(lines)
