"""Baselines: what changed since a previous run (new failures, fixes, unchanged ones).

A baseline is a previous run's JSONL (``--jsonl FILE``) or its output folder (``-o DIR``, whose
``results.jsonl`` is read).  Runs are matched by trace path and policy; when the path is not
found (the corpus moved), by trace name and policy if that name is unique in the baseline.

A run *fails* when its status is FAIL or XPASS (:mod:`difftest.verdict.run_status`; a baseline written
before statuses existed is read by its ``passed`` flag).  A run that failed before and fails now
with its first divergence at another event or under another rule is a NEW failure, not an old one:
the gate (:func:`baseline_exit_code`) exits 1 on new failures and on any XPASS, never on failures
the baseline already had.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from difftest.errors import InputError
from difftest.printable import printable
from difftest.verdict.results import ReplayResult
from difftest.verdict.run_status import Status

BASELINE_FILE = "results.jsonl"
MAX_LINE = 16 << 20  # bytes of one results row (a row holds one run's context: kilobytes)
MAX_COUNT = (1 << 64) - 1  # divergence counts and event indexes are u64 at most


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
    status: str = ""  # PASS/FAIL/XFAIL/XPASS/SKIP; "" in a baseline older than statuses

    @property
    def failing(self) -> bool:
        return self.status in ("FAIL", "XPASS") if self.status else not self.passed


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
        """Both diverging, but the first divergence is at another event or rule."""
        if self.before is None or self.now is None or self.now.first is None or self.before.first_index is None:
            return False
        return (self.before.first_index, self.before.first_rule) != (self.now.first.index, self.now.first.primary_rule)

    def where(self) -> str:
        first = self.now.first if self.now else None
        return f"event {first.index} {first.primary_rule or ''}".rstrip() if first else "no divergence"

    def was(self) -> str:
        b = self.before
        if b is None:
            return "not in baseline"
        if b.first_index is None:
            return f"was {b.status or 'PASS'}"
        return f"was {b.status or 'FAIL'} at event {b.first_index} {b.first_rule or ''}".rstrip()


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
    runs = []
    try:
        with p.open("rb") as fh:  # streamed, line by line: a baseline may be large, a line must not be
            for n, raw in enumerate(iter(lambda: fh.readline(MAX_LINE + 1), b""), 1):
                if len(raw) > MAX_LINE:
                    raise InputError(src, f"line longer than {MAX_LINE} bytes (not a difftest results.jsonl?)", line=n)
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise InputError(src, "not UTF-8 text", line=n) from None
                if line.strip():
                    runs.append(_run_of(src, n, line))
    except OSError as exc:
        raise InputError(src, f"cannot read the baseline ({exc.strerror or exc})") from None
    return runs


def _run_of(src: str, n: int, line: str) -> BaselineRun:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(src, f"not JSON ({exc.msg}, column {exc.colno})", line=n) from None
    except RecursionError:
        raise InputError(src, "not a results row (JSON nested too deeply)", line=n) from None
    except ValueError as exc:  # an integer of more than 4,300 digits
        raise InputError(src, f"not a usable JSON value ({exc})", line=n) from None
    if not isinstance(row, dict):
        raise InputError(src, "expected a JSON object per line", line=n)
    first = _field(src, n, row, "first_divergence", (dict,), optional=True)
    first_index = first.get("index") if isinstance(first, dict) else None
    if first_index is not None and (not isinstance(first_index, int) or isinstance(first_index, bool)
                                    or not 0 <= first_index <= MAX_COUNT):
        raise InputError(src, f"expected an int in 0..{MAX_COUNT}", line=n, column="first_divergence.index")
    divergences = _field(src, n, row, "divergences", (int,))
    if not 0 <= divergences <= MAX_COUNT:  # type: ignore[operator]
        raise InputError(src, f"expected an int in 0..{MAX_COUNT}", line=n, column="divergences")
    rule = _field(src, n, row, "first_rule", (str,), optional=True)
    return BaselineRun(
        trace=printable(str(_field(src, n, row, "trace", (str,))), 1000),
        name=printable(str(_field(src, n, row, "name", (str,)))),
        policy=printable(str(_field(src, n, row, "policy", (str,)))),
        passed=bool(_field(src, n, row, "passed", (bool,))),
        divergences=int(divergences),  # type: ignore[call-overload]
        first_index=first_index,
        first_rule=None if rule is None else printable(str(rule)),
        status=_status(src, n, row),
    )


def _status(src: str, line: int, row: dict[str, object]) -> str:
    v = row.get("status", "")
    if v and v not in {s.value for s in Status}:
        raise InputError(src, f"unknown status {v!r}", line=line, column="status")
    return str(v or "")


def _failing(r: ReplayResult) -> bool:
    return r.status.bad


def compare_with_baseline(source: str, before: Sequence[BaselineRun], now: Sequence[ReplayResult]) -> BaselineDiff:
    """Sort every run into new failure / fixed / still failing / still passing / new / gone."""
    by_path = {(b.trace, b.policy): b for b in before}
    name_count: dict[tuple[str, str], int] = {}
    for run in before:
        name_count[(run.name, run.policy)] = name_count.get((run.name, run.policy), 0) + 1
    by_name = {(run.name, run.policy): run for run in before if name_count[(run.name, run.policy)] == 1}
    diff = BaselineDiff(source)
    used: set[int] = set()
    for r in now:
        b: BaselineRun | None = by_path.get((r.trace, r.policy)) or by_name.get((r.trace_name, r.policy))
        if b is not None and id(b) in used:
            b = None
        ch = Change(r.trace, r.trace_name, r.policy, b, r)
        if b is None:
            (diff.new_failures if _failing(r) else diff.new_passing).append(ch)
            continue
        used.add(id(b))
        if not _failing(r):
            (diff.fixed if b.failing else diff.still_passing).append(ch)
        elif not b.failing or ch.moved:
            diff.new_failures.append(ch)
        else:
            diff.still_failing.append(ch)
    for b in before:
        if id(b) not in used:
            diff.gone.append(Change(b.trace, b.name, b.policy, b, None))
    return diff


def baseline_exit_code(diff: BaselineDiff, results: Sequence[ReplayResult]) -> int:
    """1 on a new failure (a moved first divergence counts) or any XPASS, else 0."""
    return 1 if diff.new_failures or any(r.status is Status.XPASS for r in results) else 0


def render_baseline_text(diff: BaselineDiff) -> str:
    """The changes first (new failures, fixed, still failing), then the counts."""
    lines = [f"against baseline {diff.source}: {len(diff.new_failures)} new failure(s), {len(diff.fixed)} fixed, "
             f"{len(diff.still_failing)} still failing, {len(diff.still_passing)} still passing"
             + (f", {len(diff.new_passing)} new passing" if diff.new_passing else "")
             + (f", {len(diff.gone)} gone" if diff.gone else "")]
    width = max((len(ch.name) for ch in [*diff.new_failures, *diff.fixed, *diff.still_failing]), default=10)
    for title, changes in (("new failures", diff.new_failures), ("fixed", diff.fixed),
                           ("still failing", diff.still_failing)):
        if not changes:
            continue
        lines.append(f"{title} ({len(changes)}):")
        for ch in changes:
            status = ch.now.status.value if ch.now else "-"
            if title == "fixed":
                lines.append(f"  {status:<5} {ch.name:<{width}}  {ch.policy:<12} {ch.was()}")
            else:
                moved = "  (first divergence moved)" if ch.moved else ""
                lines.append(f"  {status:<5} {ch.name:<{width}}  {ch.policy:<12} {ch.where()}; {ch.was()}{moved}")
    return "\n".join(lines)
