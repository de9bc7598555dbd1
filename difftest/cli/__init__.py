"""The ``difftest`` command line: thin wrappers over replay, corpus runs and the schema.

Exit codes: 0 no divergence, 1 divergence found, 2 bad input or usage.  Bad input is reported
as one line on stderr (file, event, column), never as a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from difftest.cli.options import LazyGroup, default_policy_for, from_metadata, input_errors, parse_host_option
from difftest.engine import replay_trace
from difftest.report.text import render_replay
from difftest.trace.io import find_traces, open_trace
from difftest.trace.schema import render_markdown
from difftest.variants import resolve_policy
from difftest.verdict.profiles import PROFILES, get_profile
from reference_model.host import HostCpu
from reference_model.policies import POLICIES


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]},
             lazy={"generate": "difftest.cli.search:generate_cmd", "shrink": "difftest.cli.search:shrink_cmd",
                   "fuzz": "difftest.cli.search:fuzz_cmd"})
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
@click.option("--verbose", "-v", is_flag=True, help="list every later divergence")
@input_errors
def replay(trace: str, policy_name: str | None, profile_name: str | None, host_features: HostCpu | None,
           as_json: bool, verbose: bool) -> None:
    """Replay TRACE under a policy and diff every expectation and snapshot."""
    tf = open_trace(trace)
    tf.host_override = host_features
    policy = resolve_policy(policy_name) if policy_name else from_metadata(tf, "policy", resolve_policy,
                                                                            default_policy_for(tf.policies()))
    profile = get_profile(profile_name) if profile_name else from_metadata(tf, "profile", get_profile,
                                                                           tf.meta.get("profile", "strict"))
    res = replay_trace(tf, policy, profile)
    if as_json:
        click.echo(json.dumps(res.to_json(), indent=2, sort_keys=True))
    else:
        click.echo(render_replay(res, verbose=verbose))
    sys.exit(0 if res.passed else 1)


@main.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False), default=None,
              help="write index.html (the report page), report.txt and results.jsonl here")
@click.option("--policy", "policy_names", multiple=True,
              help="policy to run every trace under (repeatable; default kvm-v7, plus each trace's own)")
@click.option("--profile", "profile_name", default=None,
              help="comparison profile for every trace (default: each trace's metadata 'profile', else strict)")
@click.option("--junit", "junit", type=click.Path(dir_okay=False), default=None, help="write JUnit XML here")
@click.option("--jsonl", "jsonl", type=click.Path(dir_okay=False), default=None,
              help="write one JSON line per trace x policy here")
@click.option("--baseline", "baseline", default=None, help="a previous run's JSONL or -o folder: report what changed")
@click.option("--jobs", "-j", "jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="worker processes")
@click.option("--cluster", "cluster", default=None, metavar="ADDRESS",
              help="run the traces on a Ray cluster: ray://HOST:PORT, or auto for the one started here "
                   "(pip install 'pks-difftest[cluster]')")
@input_errors
def report(paths: tuple[str, ...], out_dir: str | None, policy_names: tuple[str, ...], profile_name: str | None,
           junit: str | None, jsonl: str | None, baseline: str | None, jobs: int, cluster: str | None) -> None:
    """Replay every trace under PATHS and summarise (exit 1 if anything diverges)."""
    from difftest.report.corpus import ReportRequest, run_report

    outcome = run_report(ReportRequest(paths, policy_names, profile_name, out_dir, junit, jsonl, baseline, jobs,
                                       cluster=cluster))
    click.echo(outcome.text)
    if out_dir:
        click.echo(f"report: {Path(out_dir) / 'index.html'}")
    sys.exit(outcome.exit_code)


@main.command()
@click.argument("traces", nargs=-1, required=True)
@click.option("--policy", "policy_a", required=True, help="policy A (name or variant file)")
@click.option("--against", "policy_b", required=True, help="policy B (name or variant file)")
@click.option("--profile", "profile_name", default="strict", show_default=True)
@click.option("--host", "host_features", default=None, callback=lambda c, p, v: parse_host_option(v),
              help="replay on this host instead of the traces': 'pks-host' (all features) or a feature list")
@click.option("--json", "as_json", is_flag=True, help="print the results as JSON (a list, one per trace)")
@click.option("--html", "html_file", type=click.Path(dir_okay=False), default=None,
              help="also write the two policies side by side as a self-contained HTML page")
@input_errors
def compare(traces: tuple[str, ...], policy_a: str, policy_b: str, profile_name: str, host_features: HostCpu | None,
            as_json: bool, html_file: str | None) -> None:
    """Replay each trace under two policies and show where they part (exit 1 if they differ)."""
    from difftest.engine import compare_trace
    from difftest.report.text import render_compare

    a, b = resolve_policy(policy_a), resolve_policy(policy_b)
    profile = get_profile(profile_name)
    paths = find_traces(traces)
    tfs = [open_trace(p) for p in paths]  # every file is checked before any output
    for tf in tfs:
        tf.host_override = host_features
    results = [compare_trace(tf, a, b, profile) for tf in tfs]
    if as_json:
        click.echo(json.dumps([r.to_json() for r in results], indent=2, sort_keys=True))
    else:
        click.echo("\n\n".join(render_compare(r) for r in results))
    if html_file:
        from difftest.report.html import write_compare_page

        write_compare_page(html_file, results)
    sys.exit(1 if any(r.differ for r in results) else 0)


@main.command()
def schema() -> None:
    """Print the trace format (columns, event kinds, results, metadata)."""
    click.echo("# pks-difftest trace format v1\n")
    click.echo(render_markdown())


@main.command()
def policies() -> None:
    """List the registered policies with a one-line description and source."""
    width = max(len(n) for n in POLICIES)
    for name, p in POLICIES.items():
        click.echo(f"{name:<{width}}  {p.description}  [{p.source}]")


@main.command()
def profiles() -> None:
    """List the comparison profiles and what each masks, with reasons."""
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
