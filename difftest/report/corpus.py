"""The corpus runner behind ``difftest report``: every trace under each policy, in parallel.

Traces are independent, so ``--jobs N`` spreads them over N worker processes (one task per trace,
all its policies in the worker, results put back in trace order so the output does not depend on
N).  Progress (traces done) is drawn on stderr when it is a terminal, unless --quiet.  Bad input anywhere (a trace, a
policy name, the baseline) stops the run with :class:`InputError` before any output is written.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from difftest.engine import replay_trace
from difftest.errors import InputError
from difftest.printable import printable
from difftest.progress import task as progress_task
from difftest.report.text import render_headline, render_replay, render_summary
from difftest.trace.io import find_traces, open_trace, write_text_atomic
from difftest.trace.output_paths import ReplacedDir, check_writable, check_writable_dir
from difftest.trace.outputs import write_text_output
from difftest.variants import check_policy_names, resolve_policy, unique
from difftest.verdict.corpus import CorpusRun
from difftest.verdict.known_outcomes import NO_KNOWN_OUTCOMES, KnownOutcomes
from difftest.verdict.profiles import get_profile
from difftest.verdict.results import ReplayResult
from difftest.verdict.run_status import Status, exit_code
from difftest.verdict.timeline import Timeline, TimelineRecorder
from reference_model.policies import POLICIES, Policy, get_policy

from .baseline import BaselineDiff, baseline_exit_code, compare_with_baseline, load_baseline, render_baseline_text
from .coverage import rule_coverage
from .jsonl import jsonl_rows
from .junit import junit_xml

DEFAULT_POLICY = "kvm-v7"
CLUSTER_CHUNK = 32  # traces per Ray task


def default_policies() -> list[str]:
    """kvm-v7 where it is registered, else the bare CPU."""
    return [DEFAULT_POLICY if DEFAULT_POLICY in POLICIES else "hw"]


def policies_for(asked: Sequence[str], meta_policies: Sequence[str]) -> list[str]:
    """The policies one trace runs under: those asked for (or the default), plus its metadata's, each once."""
    return unique([*(asked or default_policies()), *meta_policies])


@dataclass(frozen=True)
class _Task:
    index: int
    path: str
    policies: tuple[str, ...]
    profile: str | None  # None: each trace's metadata 'profile', else strict
    timelines: bool
    events_progress: bool = False  # one process: also count events (a long trace moves its own bar)


def _run_task(task: _Task) -> tuple[int, list[tuple[ReplayResult, Timeline | None]] | tuple[Any, ...]]:
    """Replay one trace under its policies (in a worker).  Errors come back as data, not exceptions."""
    try:
        tf = open_trace(task.path)
        out = []
        for name in policies_for(task.policies, tf.policies()):
            # (asked names may be variant files; the metadata's are registered, checked by open_trace)
            policy = resolve_policy(name) if name in task.policies else get_policy(name)
            rec = TimelineRecorder(tf.num_rows) if task.timelines else None
            prof_name = task.profile or tf.meta.get("profile") or "strict"
            try:
                prof = get_profile(prof_name)
            except KeyError as exc:
                raise InputError(task.path, f"metadata 'pksdt.profile': {exc.args[0]}") from None
            with progress_task(f"{tf.name} [{policy.name}]", total=tf.num_rows, unit="events") if task.events_progress \
                    else nullcontext():
                res = replay_trace(tf, policy, prof, rec)  # each replay streams the file afresh
            out.append((res, rec.timeline if rec else None))
        return task.index, out
    except InputError as exc:  # InputError does not survive pickling with its fields: send them
        return task.index, ("error", exc.path, exc.message, exc.row, exc.seq, exc.column, exc.line)


def run_corpus(traces: Sequence[Path], policies: Sequence[str], profile: str | None, *, jobs: int = 1,
               timelines: bool = False, progress: bool | None = None, cluster: str | None = None) -> CorpusRun:
    """Replay every trace; ``progress`` False = never a bar (None: on stderr when it is a terminal); ``cluster``:
    on the Ray cluster at that address (:mod:`difftest.cluster`) instead of ``jobs`` local processes."""
    t0 = time.perf_counter()
    check_policy_names(policies)  # unknown names and clashing variant names fail here, once, before any work
    policies = unique(policies)
    if profile:
        get_profile(profile)
    jobs = max(1, min(jobs, len(traces)))
    tasks = [_Task(i, str(p), tuple(policies), profile, timelines, jobs == 1 and progress is not False)
             for i, p in enumerate(traces)]
    done: dict[int, list[tuple[ReplayResult, Timeline | None]]] = {}
    errors: dict[int, tuple[Any, ...]] = {}
    with progress_task("replaying", total=len(tasks), unit="traces") if progress is not False else nullcontext() as bar:
        for index, out in _results(tasks, jobs, cluster):
            if isinstance(out, tuple):  # (the other traces finish; the first bad one in trace order is reported)
                errors[index] = out
            else:
                done[index] = out
            if bar is not None:
                bar.advance()
    if errors:
        _, path, message, row, seq, column, line = errors[min(errors)]
        raise InputError(path, message, row=row, seq=seq, column=column, line=line)
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
    """``(index, outcome)`` of every task, in completion order, each exactly once.

    On a Ray cluster, tasks of CLUSTER_CHUNK traces are streamed back as they finish.  Locally, a
    worker that dies (killed, out of memory, the Parquet library aborting on a data page) takes
    down the pool it belongs to, and with it every task still running there.  Those tasks are then
    run again, each alone in a process of its own: the one whose process dies again is that trace's
    error, naming the trace and the signal; the others finish normally.  Nothing waits forever on a
    result that a dead process will never send.
    """
    if cluster is not None:
        from difftest import cluster as ray_cluster

        chunks = [tasks[i:i + CLUSTER_CHUNK] for i in range(0, len(tasks), CLUSTER_CHUNK)]
        for part in ray_cluster.map_unordered(_run_chunk, chunks, cluster):
            yield from part
        return
    if jobs == 1:
        yield from map(_run_task, tasks)
        return
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    suspects: list[_Task] = []
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        futures = {pool.submit(_run_task, t): t for t in tasks}
        for fut in as_completed(futures):
            try:
                yield fut.result()
            except BrokenProcessPool:
                suspects.append(futures[fut])
    for task in sorted(suspects, key=lambda t: t.index):
        yield _run_isolated(ctx, task)


def _run_isolated(ctx: Any, task: _Task) -> tuple[int, Any]:
    """Run one task in a process of its own; its death is that trace's error."""
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_send_result, args=(task, send), daemon=True)
    proc.start()
    send.close()
    try:
        result = recv.recv()
    except EOFError:  # the process died before it could answer
        result = None
    proc.join()
    recv.close()
    if result is not None:
        return result  # type: ignore[no-any-return]
    code = proc.exitcode
    how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
    if code is not None and code < 0:
        import signal

        with suppress(ValueError):
            how = signal.Signals(-code).name
    return task.index, ("error", task.path, f"the process replaying this trace died ({how}); the other traces "
                        "finished", None, None, None, None)


def _send_result(task: _Task, send: Any) -> None:
    send.send(_run_task(task))
    send.close()




def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is under it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


TIMELINE_MAX_ROWS = 200_000  # a run shown in detail gets a timeline if its trace is at most this long


def record_timelines(run: CorpusRun, shown: Sequence[ReplayResult], policies: dict[str, Policy] | None = None,
                     max_rows: int = TIMELINE_MAX_ROWS) -> dict[tuple[str, str], str]:
    """Timelines for the runs a page shows in detail only, so the corpus itself replays on the fast path.

    Each is one more replay of that trace with a :class:`TimelineRecorder` (the row-by-row path);
    longer traces get a note instead.  ``policies``: the Policy objects by name (variant files given
    on the command line are known by their own name only there).  Returns the notes, keyed like
    ``run.timelines``.
    """
    policies = policies or {}
    notes: dict[tuple[str, str], str] = {}
    for res in shown:
        key = (res.trace, res.policy)
        if key in run.timelines:
            continue
        tf = open_trace(res.trace)
        if tf.num_rows > max_rows:
            notes[key] = (f"timeline not drawn: {tf.num_rows:,} rows (the page draws traces of up to {max_rows:,}; "
                          "`difftest report TRACE --policy NAME -o DIR` on a shorter cut of it)")
            continue
        rec = TimelineRecorder(tf.num_rows)
        policy = policies.get(res.policy) or resolve_policy(res.policy)
        replay_trace(tf, policy, get_profile(res.profile), rec)
        run.timelines[key] = rec.timeline
    return notes


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
    known_files: Sequence[str] = ()  # --known FILE: declarations beyond the discovered known-outcomes.toml
    known: bool = True  # False: --no-known, judge every run by its divergences alone
    tap: str | None = None  # TAP13 file ('-' = stdout)
    statuses: Any = None  # verdicts for TAP beyond each result's own status (see difftest.report.tap)
    cluster: str | None = None  # a Ray cluster's address (difftest.cluster)


@dataclass
class ReportOutcome:
    text: str  # what goes to stdout
    exit_code: int
    run: CorpusRun
    baseline: BaselineDiff | None = None
    written: list[Path] = field(default_factory=list)
    detail: str = ""  # the text report of every failing run (report.txt's second part; `report -v`)


REPORT_FILES = ("index.html", "report.txt", "results.jsonl")


def check_report_outputs(req: ReportRequest) -> None:
    """Every output of ``req`` writable, checked before any work (InputError naming the path)."""
    if req.out_dir:
        check_writable_dir(req.out_dir)
        out = Path(req.out_dir)
        if out.is_dir():  # the folder is replaced as a whole: it must hold a report and nothing else
            try:
                others = sorted(p.name for p in out.iterdir() if p.name not in REPORT_FILES)
            except OSError as exc:
                raise InputError(req.out_dir, f"cannot list the report folder ({exc.strerror or exc})") from None
            if others:
                raise InputError(req.out_dir, f"holds files that are not a report ({printable(others[0], 80)}"
                                 f"{', ...' if len(others) > 1 else ''}); -o replaces the whole folder: "
                                 "give a new or report-only folder")
    for f in (req.junit, req.jsonl):
        if f:
            check_writable(f)


def run_report(req: ReportRequest) -> ReportOutcome:
    """Run the corpus, write every output asked for, and say what to print and the exit code."""
    check_report_outputs(req)
    traces = find_traces(req.paths)
    if not traces:
        raise InputError(", ".join(req.paths), "no *.parquet traces found")
    if req.jobs < 1:
        raise InputError("--jobs", f"must be at least 1, got {req.jobs}")
    before = load_baseline(req.baseline) if req.baseline else None  # read before -o may overwrite it
    known = KnownOutcomes(req.known_files) if req.known else NO_KNOWN_OUTCOMES  # bad files fail before the run
    for t in traces:
        known.files_for(t)
    run = run_corpus(traces, req.policies, req.profile, jobs=req.jobs, progress=req.progress,
                     cluster=req.cluster)  # the fast path
    results = run.results
    for r in results:
        r.judge(known.lookup(r.trace, r.policy))
    diff = compare_with_baseline(req.baseline or "", before, results) if before is not None else None
    head = render_headline(results)
    used = ", ".join(_shown(p) for p in known.used_files(traces)) or "none"
    setup = (f"policies: {', '.join(req.policies) if req.policies else default_policies()[0] + ' (default)'}, "
             f"plus each trace's own; profile: {req.profile or 'each trace metadata (else strict)'}; "
             f"host: each trace's; known outcomes: {used}")
    top = (render_baseline_text(diff) + "\n\n" if diff is not None else "") + head + "\n" + setup
    code = baseline_exit_code(diff, results) if diff is not None else exit_code(r.status for r in results)
    text = top + "\n\n" + render_summary(results, lines=False)
    outcome = ReportOutcome(text, code, run, diff)
    rows = jsonl_rows(results) if req.out_dir or req.jsonl else ""  # only for the files that hold it
    shown = [r for r in results if r.status is not Status.PASS and r.first]
    outcome.detail = "\n\n".join(render_replay(r, verbose=True) for r in shown)  # -v
    if req.out_dir:
        from difftest.report.failure_groups import group_runs
        from difftest.report.html import render_report, timeline_runs  # Jinja only when a page is asked for

        out = Path(req.out_dir)
        detail = "\n\n".join(render_replay(r) for r in shown)
        by_name = {pol.name: pol for pol in map(resolve_policy, req.policies)}
        notes = record_timelines(run, timeline_runs(group_runs(results)), by_name)
        html = render_report(run, rule_coverage(results), diff, profile=req.profile or "each trace's own (else strict)",
                             timeline_notes=notes)
        full = top + "\n\n" + render_summary(results)
        with ReplacedDir(out) as build:  # built beside the old report, then swapped with it in one step
            write_text_atomic(build / "report.txt", full + ("\n\n" + detail if detail else "") + "\n")
            write_text_atomic(build / "results.jsonl", rows)
            write_text_atomic(build / "index.html", html)
        outcome.written += [out / "report.txt", out / "results.jsonl", out / "index.html"]
    extra = []
    if req.junit:
        extra.append(write_text_output(req.junit, junit_xml(results)))
    if req.jsonl:
        extra.append(write_text_output(req.jsonl, rows))
    if req.tap:
        from difftest.report.tap import tap_document

        extra.append(write_text_output(req.tap, tap_document(results, req.statuses)))
    outcome.written += [p for p in extra if p is not None]
    return outcome
