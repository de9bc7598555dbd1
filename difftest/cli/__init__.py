"""The ``difftest`` command line: thin wrappers over replay, corpus runs and the schema.

Exit codes: 0 no divergence, 1 divergence found, 2 bad input or usage, 3 internal error.  Bad
input is reported as one line on stderr (file, event, column), never as a traceback; an internal
error as one line naming the failure and the file holding the traceback (:mod:`difftest.cli.vocabulary`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

import difftest.progress as progress
from difftest.cli.options import LazyGroup, input_errors, known_options, known_outcomes, parse_host_option
from difftest.cli.output_options import writable_dir, writable_file
from difftest.cli.vocabulary import EXIT_CODES_HELP, echo_json
from difftest.engine import replay_trace
from difftest.report.text import render_replay
from difftest.trace.io import find_traces, open_trace
from difftest.trace.schema import render_markdown
from difftest.variants import resolve_policy
from difftest.verdict.profiles import PROFILES
from reference_model.host import HostCpu
from reference_model.policies import POLICIES


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES_HELP,
             lazy={"generate": "difftest.cli.search:generate_cmd", "shrink": "difftest.cli.search:shrink_cmd",
                   "fuzz": "difftest.cli.search:fuzz_cmd", "matrix": "difftest.cli.matrix:matrix_cmd",
                   "rules": "difftest.cli.rules:rules_cmd"})
@click.version_option(package_name="pks-difftest")
@click.option("--reference", is_flag=True,
              help="replay row by row through the reference path only (slow; for debugging the fast path)")
def main(reference: bool) -> None:
    """Trace-driven differential tester for Intel PKS virtualization."""
    if reference:  # an environment variable, so `report --jobs N` workers inherit it
        import os

        os.environ["DIFFTEST_REFERENCE"] = "1"


@main.command()
@click.argument("trace", type=click.Path(dir_okay=False))
@click.option("--policy", "policy_name", default=None, help="policy name or variant file (default: the trace's, else kvm-v7)")
@click.option("--profile", "profile_name", default=None,
              help="comparison profile (default: the trace's metadata 'profile', else strict)")
@click.option("--host", "host_features", default=None, callback=lambda c, p, v: parse_host_option(v),
              help="replay on this host instead of the trace's: 'pks-host' (all features) or a feature list")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.option("--tap", "tap_file", type=click.Path(dir_okay=False), default=None,
              help="also write the result as TAP13 (kvm-unit-tests' run_tests.sh -t dialect) here; '-' = stdout")
@click.option("--verbose", "-v", is_flag=True, help="list every later divergence")
@known_options
@input_errors
def replay(trace: str, policy_name: str | None, profile_name: str | None, host_features: HostCpu | None,
           as_json: bool, tap_file: str | None, verbose: bool, known_files: tuple[str, ...], no_known: bool) -> None:
    """Replay TRACE under a policy and diff every expectation and snapshot.

    Exit 0 when the run PASSes, is a declared known divergence (XFAIL) or is declared not
    applicable (SKIP); 1 on an undeclared divergence (FAIL) or a declared one that did not show (XPASS).
    """
    from difftest.verdict.run_settings import settings_for

    tf = open_trace(trace)
    known = known_outcomes(known_files, no_known)
    run = settings_for(tf, policy_name, profile_name, host_features)
    with progress.task(f"replaying {tf.name}", total=tf.num_rows, unit="events"):
        res = replay_trace(tf, run.policy, run.profile)
    verdict = res.judge(known.lookup(tf.path, run.policy.name))
    if tap_file:
        from difftest.report.tap import tap_document
        from difftest.trace.outputs import write_text_output

        write_text_output(tap_file, tap_document([res]))
    if tap_file == "-":
        pass  # stdout carries the TAP stream
    elif as_json:  # the JSON names its policy and profile
        echo_json(res.to_json())
    elif progress.is_quiet():
        click.echo(res.summary())
    else:
        click.echo(run.describe())
        click.echo(render_replay(res, verbose=verbose or progress.verbosity() > 0))
    sys.exit(1 if verdict.status.bad else 0)


@main.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False), default=None, callback=writable_dir,
              help="a directory: write index.html (the report page), report.txt and results.jsonl there")
@click.option("--policy", "policy_names", multiple=True,
              help="policy to run every trace under (repeatable; default kvm-v7, plus each trace's own)")
@click.option("--profile", "profile_name", default=None,
              help="comparison profile for every trace (default: each trace's metadata 'profile', else strict)")
@click.option("--junit", "junit", type=click.Path(dir_okay=False), default=None, callback=writable_file,
              help="write JUnit XML to this file ('-' = stdout)")
@click.option("--jsonl", "jsonl", type=click.Path(dir_okay=False), default=None, callback=writable_file,
              help="write one JSON line per trace x policy to this file ('-' = stdout)")
@click.option("--tap", "tap", type=click.Path(dir_okay=False), default=None, callback=writable_file,
              help="write TAP13 (kvm-unit-tests' run_tests.sh -t dialect) to this file ('-' = stdout)")
@click.option("--json", "as_json", is_flag=True, help="print every run's result as JSON (a list) instead of the text summary")
@click.option("--baseline", "baseline", default=None, help="a previous run's JSONL or -o folder: report what changed")
@click.option("--jobs", "-j", "jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="worker processes")
@click.option("--cluster", "cluster", default=None, metavar="ADDRESS",
              help="run the traces on a Ray cluster: ray://HOST:PORT, or auto for the one started here "
                   "(pip install 'pks-difftest[cluster]')")
@known_options
@input_errors
def report(paths: tuple[str, ...], out_dir: str | None, policy_names: tuple[str, ...], profile_name: str | None,
           junit: str | None, jsonl: str | None, tap: str | None, as_json: bool, baseline: str | None, jobs: int,
           known_files: tuple[str, ...], no_known: bool, cluster: str | None) -> None:
    """Replay every trace under PATHS and summarise.

    Each run is judged against the known outcomes (docs/known-outcomes.md): PASS, FAIL, XFAIL
    (declared known divergence), XPASS (declared, did not show) or SKIP (not applicable).  Exit 1
    on any FAIL or XPASS; with --baseline, only on new failures (a moved first divergence counts)
    or XPASS.
    """
    if out_dir == "-":
        raise click.BadParameter("-o is the report's directory; for stdout use --jsonl -, --junit - or --tap -",
                                 param_hint="'-o'")
    from difftest.report.corpus import ReportRequest, run_report
    from difftest.trace.outputs import to_stdout

    req = ReportRequest(paths, policy_names, profile_name, out_dir, junit, jsonl, baseline, jobs, tap=tap,
                        known_files=known_files, known=not no_known, cluster=cluster)
    outcome = run_report(req)
    if to_stdout(junit, jsonl, tap):  # stdout carries that stream; the summary goes to stderr
        click.echo(outcome.text.splitlines()[-1], err=True)
    elif as_json:
        echo_json([r.to_json() for r in outcome.run.results])
    else:
        lines = outcome.text.splitlines()
        click.echo("\n".join(lines[-1:] if progress.is_quiet() and outcome.baseline is None else lines))
        if progress.verbosity() and outcome.detail:
            click.echo("\n" + outcome.detail)
        if out_dir and not progress.is_quiet():
            click.echo(f"report: {Path(out_dir) / 'index.html'}")
    sys.exit(outcome.exit_code)


@main.command()
@click.argument("traces", nargs=-1, required=True)
@click.option("--policy", "policy_a", default=None, help="policy A (name or variant file; default: each trace's, else kvm-v7)")
@click.option("--against", "policy_b", required=True, help="policy B (name or variant file)")
@click.option("--profile", "profile_name", default=None,
              help="comparison profile (default: each trace's metadata 'profile', else strict)")
@click.option("--host", "host_features", default=None, callback=lambda c, p, v: parse_host_option(v),
              help="replay on this host instead of the traces': 'pks-host' (all features) or a feature list")
@click.option("--json", "as_json", is_flag=True, help="print the results as JSON (a list, one per trace)")
@click.option("-o", "--output", "html_file", type=click.Path(dir_okay=False), default=None, callback=writable_file,
              help="a file: also write the two policies side by side as a self-contained HTML page ('-' = stdout)")
@click.option("--html", "html_alias", type=click.Path(dir_okay=False), default=None, hidden=True, callback=writable_file,
              help="old name of -o")
@known_options
@input_errors
def compare(traces: tuple[str, ...], policy_a: str | None, policy_b: str, profile_name: str | None,
            host_features: HostCpu | None, as_json: bool, html_file: str | None, html_alias: str | None,
            known_files: tuple[str, ...], no_known: bool) -> None:
    """Replay each trace under two policies and show where they part (exit 1 if they differ).

    Each side is also judged against the trace's expectations and its known outcomes
    (docs/known-outcomes.md), so a difference that is a declared known bug says so.
    """
    from difftest.engine import compare_trace
    from difftest.report.text import render_compare
    from difftest.verdict.run_settings import settings_for

    b = resolve_policy(policy_b)
    paths = find_traces(traces)
    tfs = [open_trace(p) for p in paths]  # every file is checked before any output
    settings = [settings_for(tf, policy_a, profile_name, host_features) for tf in tfs]
    known = known_outcomes(known_files, no_known)
    html_file = html_file or html_alias
    results = []
    with progress.task("comparing", total=sum(tf.num_rows for tf in tfs), unit="events"):
        for tf, run in zip(tfs, settings, strict=True):
            res = compare_trace(tf, run.policy, b, run.profile)
            res.replay_a.judge(known.lookup(tf.path, res.policy_a))
            res.replay_b.judge(known.lookup(tf.path, res.policy_b))
            results.append(res)
    if html_file == "-":
        from difftest.report.html import render_compare_page

        click.echo(render_compare_page(results), nl=False)
    elif as_json:  # the JSON names its policies
        echo_json([r.to_json() for r in results])
    elif progress.is_quiet():
        differ = sum(1 for r in results if r.differ)
        click.echo(f"{len(results)} trace(s), {differ} where {results[0].policy_a if results else policy_a} "
                   f"and {b.name} differ")
    else:
        for line in sorted({run.describe() for run in settings}):
            click.echo(line + f"; against {b.name}")
        click.echo("\n\n".join(render_compare(r) for r in results))
        differ = sum(1 for r in results if r.differ)
        click.echo(f"\n{len(results)} trace(s): {differ} differ, {len(results) - differ} agree")
    if html_file and html_file != "-":
        from difftest.report.html import compare_timelines, write_compare_page

        pol_a = settings[0].policy if len({r.policy_a for r in results}) == 1 and settings else None
        timelines = compare_timelines(results, pol_a, b) if pol_a is not None else {}
        write_compare_page(html_file, results, timelines)
    sys.exit(1 if any(r.differ for r in results) else 0)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="print the format as JSON")
def schema(as_json: bool) -> None:
    """Print the trace format (columns, event kinds, results, metadata)."""
    if as_json:
        from difftest.trace.schema import schema_json

        echo_json(schema_json())
        return
    click.echo("# pks-difftest trace format v1\n")
    click.echo(render_markdown())


@main.command()
@click.option("--json", "as_json", is_flag=True, help="print the list as JSON")
def policies(as_json: bool) -> None:
    """List the registered policies with a one-line description and source."""
    if as_json:
        echo_json([{"name": n, "description": p.description, "source": p.source} for n, p in POLICIES.items()])
        return
    width = max(len(n) for n in POLICIES)
    for name, p in POLICIES.items():
        click.echo(f"{name:<{width}}  {p.description}  [{p.source}]")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="print the list as JSON")
def profiles(as_json: bool) -> None:
    """List the comparison profiles and what each masks, with reasons."""
    if as_json:
        echo_json([{"name": n, "description": p.description,
                    "masks": [{"name": m.name, "rule": m.rule, "reason": m.reason} for m in p.masks]}
                   for n, p in PROFILES.items()])
        return
    for name, prof in PROFILES.items():
        click.echo(f"{name}: {prof.description}")
        for m in prof.masks:
            click.echo(f"  - {m.name} ({m.rule}): {m.reason}")


# Subcommands defined in their own modules (each feature module defines its click command; registering
# it is one line in a ``lazy`` table).
@main.group(cls=LazyGroup, lazy={"kvm": "difftest.cli.record:record_kvm", "qemu": "difftest.cli.record:record_qemu"})
def record() -> None:
    """Record real behaviour (a KVM host, QEMU TCG) as a trace whose expectations are what happened."""


@main.group(name="import", cls=LazyGroup, lazy={"ftrace": "difftest.cli.imports:import_ftrace_cmd",
                                                "pkvm-vmexit-trace": "difftest.cli.imports:import_pkvm_cmd"})
def import_() -> None:
    """Convert a foreign capture (tracefs text, pKVM vmexit_trace) into a trace."""

if __name__ == "__main__":  # pragma: no cover
    main()
