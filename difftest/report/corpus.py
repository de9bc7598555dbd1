"""The corpus runner behind ``difftest report``: every trace under each policy, in parallel.

Traces are independent, so ``--jobs N`` spreads them over N worker processes (one task per trace,
all its policies in the worker, results put back in trace order so the output does not depend on
N).  A progress bar is drawn only when stdout is a terminal.  Bad input anywhere (a trace, a
policy name, the baseline) stops the run with :class:`InputError` before any output is written.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from difftest.engine import replay_trace
from difftest.errors import InputError
from difftest.report.text import render_replay, render_summary
from difftest.trace.io import find_traces, open_trace, write_text_atomic
from difftest.variants import resolve_policy
from difftest.verdict.corpus import CorpusRun
from difftest.verdict.profiles import get_profile
from difftest.verdict.results import ReplayResult
from difftest.verdict.timeline import Timeline, TimelineRecorder
from reference_model.policies import POLICIES

from .baseline import BaselineDiff, compare_with_baseline, load_baseline, render_baseline_text
from .coverage import rule_coverage
from .jsonl import jsonl_rows
from .junit import junit_xml

DEFAULT_POLICY = "kvm-v7"
CLUSTER_CHUNK = 32  # traces per Ray task


def default_policies() -> list[str]:
    """kvm-v7 where it is registered, else the bare CPU."""
    return [DEFAULT_POLICY if DEFAULT_POLICY in POLICIES else "hw"]


def policies_for(asked: Sequence[str], meta_policies: Sequence[str]) -> list[str]:
    """The policies one trace runs under: those asked for (or the default), plus its metadata's."""
    names = list(asked) or default_policies()
    names += [p for p in meta_policies if p not in names]
    return names


@dataclass(frozen=True)
class _Task:
    index: int
    path: str
    policies: tuple[str, ...]
    profile: str | None  # None: each trace's metadata 'profile', else strict
    timelines: bool


def _run_task(task: _Task) -> tuple[int, list[tuple[ReplayResult, Timeline | None]] | tuple[Any, ...]]:
    """Replay one trace under its policies (in a worker).  Errors come back as data, not exceptions."""
    try:
        tf = open_trace(task.path)
        out = []
        for name in policies_for(task.policies, tf.policies()):
            try:
                policy = resolve_policy(name)
            except KeyError as exc:
                raise InputError(task.path, f"metadata 'pksdt.policy': {exc.args[0]}") from None
            rec = TimelineRecorder(tf.num_rows) if task.timelines else None
            prof_name = task.profile or tf.meta.get("profile") or "strict"
            try:
                prof = get_profile(prof_name)
            except KeyError as exc:
                raise InputError(task.path, f"metadata 'pksdt.profile': {exc.args[0]}") from None
            res = replay_trace(tf, policy, prof, rec)  # each replay streams the file afresh
            out.append((res, rec.timeline if rec else None))
        return task.index, out
    except InputError as exc:  # InputError does not survive pickling with its fields: send them
        return task.index, ("error", exc.path, exc.message, exc.row, exc.seq, exc.column, exc.line)


def _progress(total: int, enabled: bool | None) -> Any:
    show = sys.stdout.isatty() if enabled is None else enabled
    if not show:
        return nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True)


def run_corpus(traces: Sequence[Path], policies: Sequence[str], profile: str | None, *, jobs: int = 1,
               timelines: bool = False, progress: bool | None = None, cluster: str | None = None) -> CorpusRun:
    """Replay every trace; ``progress`` None = a bar only when stdout is a terminal; ``cluster``: on the Ray
    cluster at that address (:mod:`difftest.cluster`) instead of ``jobs`` local processes."""
    t0 = time.perf_counter()
    for name in policies:  # unknown names fail here, once, before any work
        resolve_policy(name)
    if profile:
        get_profile(profile)
    tasks = [_Task(i, str(p), tuple(policies), profile, timelines) for i, p in enumerate(traces)]
    jobs = max(1, min(jobs, len(tasks)))
    done: dict[int, list[tuple[ReplayResult, Timeline | None]]] = {}
    with _progress(len(tasks), progress) as bar:
        task_id = bar.add_task("replay", total=len(tasks)) if bar is not None else None
        for index, out in _results(tasks, jobs, cluster):
            if isinstance(out, tuple):
                _, path, message, row, seq, column, line = out
                raise InputError(path, message, row=row, seq=seq, column=column, line=line)
            done[index] = out
            if bar is not None:
                bar.advance(task_id)
    run = CorpusRun([], {}, 0.0, jobs)
    for index in sorted(done):
        for res, tl in done[index]:
            run.results.append(res)
            if tl is not None:
                run.timelines[(res.trace, res.policy)] = tl
    run.seconds = time.perf_counter() - t0
    return run


def _run_chunk(tasks: list[_Task]) -> list[tuple[int, Any]]:
    """Several traces in one cluster task (a task's overhead is worth more than one short trace)."""
    return [_run_task(t) for t in tasks]


def _results(tasks: list[_Task], jobs: int, cluster: str | None = None) -> Iterator[tuple[int, Any]]:
    if cluster is not None:  # Ray tasks of CLUSTER_CHUNK traces, streamed back as they finish
        from difftest import cluster as ray_cluster

        chunks = [tasks[i:i + CLUSTER_CHUNK] for i in range(0, len(tasks), CLUSTER_CHUNK)]
        for part in ray_cluster.map_unordered(_run_chunk, chunks, cluster):
            yield from part
        return
    if jobs == 1:
        yield from map(_run_task, tasks)
        return
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    chunk = max(1, len(tasks) // (jobs * 8))
    with ctx.Pool(jobs) as pool:
        yield from pool.imap_unordered(_run_task, tasks, chunksize=chunk)


@dataclass
class ReportRequest:
    """What ``difftest report`` was asked for."""

    paths: Sequence[str]
    policies: Sequence[str] = ()
    profile: str | None = None  # None: each trace's own (metadata), else strict
    out_dir: str | None = None
    junit: str | None = None
    jsonl: str | None = None
    baseline: str | None = None
    jobs: int = 1
    progress: bool | None = None
    cluster: str | None = None  # a Ray cluster's address (difftest.cluster)


@dataclass
class ReportOutcome:
    text: str  # what goes to stdout
    exit_code: int
    run: CorpusRun
    baseline: BaselineDiff | None = None
    written: list[Path] = field(default_factory=list)


def run_report(req: ReportRequest) -> ReportOutcome:
    """Run the corpus, write every output asked for, and say what to print and the exit code."""
    traces = find_traces(req.paths)
    if not traces:
        raise InputError(", ".join(req.paths), "no *.parquet traces found")
    if req.jobs < 1:
        raise InputError("--jobs", f"must be at least 1, got {req.jobs}")
    before = load_baseline(req.baseline) if req.baseline else None  # read before -o may overwrite it
    run = run_corpus(traces, req.policies, req.profile, jobs=req.jobs, timelines=req.out_dir is not None,
                     progress=req.progress, cluster=req.cluster)
    results = run.results
    diff = compare_with_baseline(req.baseline or "", before, results) if before is not None else None
    summary = render_summary(results)
    text = (render_baseline_text(diff) + "\n\n" if diff is not None else "") + summary
    outcome = ReportOutcome(text, 0 if all(r.passed for r in results) else 1, run, diff)
    rows = jsonl_rows(results)
    if req.out_dir:
        from difftest.report.html import render_report  # Jinja only when a page is asked for

        out = Path(req.out_dir)
        detail = "\n\n".join(render_replay(r) for r in results if not r.passed)
        html = render_report(run, rule_coverage(results), diff, profile=req.profile or "each trace's own (else strict)")
        outcome.written += [
            write_text_atomic(out / "report.txt", text + ("\n\n" + detail if detail else "") + "\n"),
            write_text_atomic(out / "results.jsonl", rows),
            write_text_atomic(out / "index.html", html),
        ]
    if req.junit:
        outcome.written.append(write_text_atomic(req.junit, junit_xml(results)))
    if req.jsonl:
        outcome.written.append(write_text_atomic(req.jsonl, rows))
    return outcome
