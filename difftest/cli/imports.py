"""``difftest import``: foreign captures (tracefs text, pKVM vmexit_trace) turned into traces or tables."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

import difftest.progress as progress
from difftest.capture.importers.ftrace import (
    classification,
    import_ftrace,
    metadata,
    resolve_host,
    short_classification,
    summary,
)
from difftest.capture.importers.pkvm_vmexit import compare, parse_vmexit_trace, render
from difftest.cli.output_options import writable_file
from difftest.cli.vocabulary import echo_json, info
from difftest.errors import InputError
from difftest.printable import printable
from difftest.progress import task
from difftest.trace.outputs import to_stdout, write_text_output, write_trace_output


@click.command("ftrace")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False), callback=writable_file,
              help="output trace (.parquet; '-' = stdout)")
@click.option("--skip-bad", is_flag=True, help="skip malformed lines (and report how many) instead of failing")
@click.option("--host", "host_opt", default=None,
              help="features of the host the capture was made on: 'pks-host', 'none' or a list (default: this host's)")
@click.option("--cpu-features", default=None, help="the same as --host (older name), validated on import")
@click.option("--profile", "profile_opt", default=None,
              help="comparison profile for the metadata (default: pvm on a PVM host, else strict)")
@click.option("--policy", "policy_opt", default=None,
              help="policy for the metadata (default: upstream-pvm on a PVM host, else upstream)")
@click.option("--json", "as_json", is_flag=True, help="print what was written as JSON")
def import_ftrace_cmd(file: str, out: str, skip_bad: bool, host_opt: str | None, cpu_features: str | None,
                      profile_opt: str | None, policy_opt: str | None, as_json: bool) -> None:
    """Import tracefs trace/trace_pipe text or `trace-cmd report` output as a trace (exit 0: written).

    With -v, every tracepoint's classification is printed with its reason.
    """
    try:
        host = resolve_host(host_opt, cpu_features, profile_opt, policy_opt)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        size = Path(file).stat().st_size if Path(file).is_file() else None
        with task(f"importing {Path(file).name}", total=size, unit="bytes"):
            res = import_ftrace(file, skip_bad=skip_bad, host_features=frozenset(filter(None, host.features.split(","))))
        dest = write_trace_output(out, res.rows, metadata(file, res, host))
    except InputError as exc:
        click.echo(f"difftest: error: {exc}", err=True)
        sys.exit(2)
    if res.skipped:  # on stderr, named: a skip is something the user should see, not a quiet success
        more = len(res.skipped) - len(res.skip_reasons)
        click.echo(f"difftest: skipped {len(res.skipped)} malformed line(s) of {printable(file)}: "
                   + "; ".join(printable(r, 160) for r in res.skip_reasons) + (f"; and {more} more" if more else ""),
                   err=True)
    foreign = sum(1 for r in res.rows if r["kind"] == "foreign")
    where = str(dest) if dest else "stdout"
    if as_json and not to_stdout(out):
        echo_json({"output": where, "events": len(res.rows), "with_expectations": res.compared(), "foreign": foreign,
                   "format": res.fmt, "skipped_lines": list(res.skipped), "policy": host.policy, "profile": host.profile,
                   "host_features": host.features, "classification": classification(res),
                   "msr_classes": dict(sorted(res.msr_classes.items()))})
        return
    err = to_stdout(out)
    info(f"wrote {where}: {len(res.rows)} rows ({res.compared()} with expectations, {foreign} foreign), "
         f"format {res.fmt}" + (f"; skipped {len(res.skipped)} malformed lines" if res.skipped else ""), err=err)
    info(f"  {summary(res)}", err=err)
    info(f"  metadata: policy {host.policy}, profile {host.profile}, host features "
         f"'{host.features or 'none'}' ({host.origin})", err=err)
    for line in (classification(res) if progress.verbosity() > 0 else short_classification(res)):
        info(f"  {line}", err=err)
    for k, n in sorted(res.msr_classes.items()):
        info(f"  MSR {k}: {n}", err=err)


@click.command("pkvm-vmexit-trace")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False), default=None, callback=writable_file,
              help="a file: write the cost table as JSON ('-' = stdout)")
@click.option("--against", "against", type=click.Path(dir_okay=False), default=None,
              help="a second vmexit_trace capture to compare with (B relative to A = FILE)")
@click.option("--json", "as_json", is_flag=True, help="print the cost table as JSON instead of text")
def import_pkvm_cmd(file: str, out: str | None, against: str | None, as_json: bool) -> None:
    """Read a pKVM vmexit_trace capture as a cost table per host operation (and compare it with another).

    This importer writes no trace: the capture holds PV-call counts and cycles, not events.
    """
    try:
        a = parse_vmexit_trace(file)
        if against:
            text, data = compare(a, parse_vmexit_trace(against))
        else:
            text, data = render(a), a.to_json()
        if out:
            write_text_output(out, json.dumps(data, indent=2) + "\n")
    except InputError as exc:
        click.echo(f"difftest: error: {exc}", err=True)
        sys.exit(2)
    if out == "-":
        return
    if as_json:
        echo_json(data)
    else:
        click.echo(text)
