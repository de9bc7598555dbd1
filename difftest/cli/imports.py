"""``difftest import``: foreign captures (tracefs text, pKVM vmexit_trace) turned into traces or tables."""

from __future__ import annotations

import json
import sys

import click

from difftest.capture.importers.ftrace import import_ftrace, metadata
from difftest.capture.importers.pkvm_vmexit import compare, parse_vmexit_trace, render
from difftest.errors import InputError
from difftest.trace.io import write_text_atomic, write_trace


@click.command("ftrace")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False), help="output trace (.parquet)")
@click.option("--skip-bad", is_flag=True, help="skip malformed lines (and report how many) instead of failing")
@click.option("--cpu-features", default=None, help="host features of the captured host, e.g. `pku` (metadata cpu.features)")
def import_ftrace_cmd(file: str, out: str, skip_bad: bool, cpu_features: str | None) -> None:
    """Import tracefs trace/trace_pipe text or `trace-cmd report` output as a trace."""
    try:
        res = import_ftrace(file, skip_bad=skip_bad)
        dest = write_trace(out, res.rows, metadata(file, res, cpu_features))
    except InputError as exc:
        click.echo(f"difftest: error: {exc}", err=True)
        sys.exit(2)
    compared = sum(1 for r in res.rows if r.get("exp_result"))
    click.echo(f"wrote {dest}: {len(res.rows)} events ({compared} with expectations, "
               f"{sum(1 for r in res.rows if r['kind'] == 'foreign')} foreign), format {res.fmt}"
               + (f"; skipped {len(res.skipped)} malformed lines" if res.skipped else ""))


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
