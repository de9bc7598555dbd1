"""``difftest import``: foreign captures (tracefs text, pKVM vmexit_trace) turned into traces or tables."""

from __future__ import annotations

import json
import sys

import click

from difftest.capture.importers.ftrace import (
    classification,
    import_ftrace,
    metadata,
    resolve_host,
    short_classification,
    summary,
)
from difftest.capture.importers.pkvm_vmexit import compare, parse_vmexit_trace, render
from difftest.errors import InputError
from difftest.trace.io import write_text_atomic, write_trace


@click.command("ftrace")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False), help="output trace (.parquet)")
@click.option("--skip-bad", is_flag=True, help="skip malformed lines (and report how many) instead of failing")
@click.option("--host", "host_opt", default=None,
              help="features of the host the capture was made on: 'pks-host', 'none' or a list (default: this host's)")
@click.option("--cpu-features", default=None, help="the same as --host (older name), validated on import")
@click.option("--profile", "profile_opt", default=None,
              help="comparison profile for the metadata (default: pvm on a PVM host, else strict)")
@click.option("--policy", "policy_opt", default=None,
              help="policy for the metadata (default: upstream-pvm on a PVM host, else upstream)")
@click.option("-v", "--verbose", is_flag=True, help="print the classification of every tracepoint with its reason")
def import_ftrace_cmd(file: str, out: str, skip_bad: bool, host_opt: str | None, cpu_features: str | None,
                      profile_opt: str | None, policy_opt: str | None, verbose: bool) -> None:
    """Import tracefs trace/trace_pipe text or `trace-cmd report` output as a trace."""
    try:
        host = resolve_host(host_opt, cpu_features, profile_opt, policy_opt)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        res = import_ftrace(file, skip_bad=skip_bad, host_features=frozenset(filter(None, host.features.split(","))))
        dest = write_trace(out, res.rows, metadata(file, res, host))
    except InputError as exc:
        click.echo(f"difftest: error: {exc}", err=True)
        sys.exit(2)
    foreign = sum(1 for r in res.rows if r["kind"] == "foreign")
    click.echo(f"wrote {dest}: {len(res.rows)} rows ({res.compared()} with expectations, {foreign} foreign), "
               f"format {res.fmt}" + (f"; skipped {len(res.skipped)} malformed lines" if res.skipped else ""))
    click.echo(f"  {summary(res)}")
    click.echo(f"  metadata: policy {host.policy}, profile {host.profile}, host features "
               f"'{host.features or 'none'}' ({host.origin})")
    for line in (classification(res) if verbose else short_classification(res)):
        click.echo(f"  {line}")
    for k, n in sorted(res.msr_classes.items()):
        click.echo(f"  MSR {k}: {n}")


@click.command("pkvm-vmexit-trace")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False), default=None, help="write the cost table as JSON")
@click.option("--against", "against", type=click.Path(dir_okay=False), default=None,
              help="a second vmexit_trace capture to compare with (B relative to A = FILE)")
def import_pkvm_cmd(file: str, out: str | None, against: str | None) -> None:
    """Import a pKVM vmexit_trace capture (and compare it with another)."""
    try:
        a = parse_vmexit_trace(file)
        if against:
            text, data = compare(a, parse_vmexit_trace(against))
        else:
            text, data = render(a), a.to_json()
        if out:
            write_text_atomic(out, json.dumps(data, indent=2) + "\n")
    except InputError as exc:
        click.echo(f"difftest: error: {exc}", err=True)
        sys.exit(2)
    click.echo(text)
