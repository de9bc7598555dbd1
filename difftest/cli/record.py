"""``difftest record kvm`` and ``record qemu``: perform events on /dev/kvm or under QEMU TCG and keep what happened."""

from __future__ import annotations

import sys

import click

from difftest.capture.kvm.cleanup import signals_deferred
from difftest.capture.kvm.recorder import (
    LAST_FAILURES,
    record_scenarios,
    record_trace,
    select,
    write_recording,
)
from difftest.capture.kvm.recorder import SCENARIOS as KVM_SCENARIOS
from difftest.capture.kvm.tracefs import signals_raise
from difftest.capture.qemu.boot import DEFAULT_TIMEOUT, qemu_path
from difftest.capture.qemu.build import BuildError, missing_tools
from difftest.capture.qemu.recorder import TraceInput, record_one
from difftest.capture.qemu.scenarios import SCENARIOS, scenario_rows
from difftest.cli.output_options import writable_file
from difftest.cli.vocabulary import echo_json, info
from difftest.errors import InputError
from difftest.progress import task
from difftest.trace.io import open_trace
from difftest.trace.output_paths import check_writable
from difftest.trace.outputs import to_stdout, write_trace_output


def _scenario_input(name: str) -> TraceInput:
    builder = SCENARIOS[name]()
    return TraceInput(builder.meta["name"], scenario_rows(builder), builder.metadata())


@click.command("qemu")
@click.option("--trace", "trace_path", type=click.Path(dir_okay=False), help="trace whose events to record")
@click.option("--scenario", type=click.Choice(sorted(SCENARIOS)), help="a built-in scenario instead")
@click.option("-o", "--output", required=True, callback=writable_file, type=click.Path(dir_okay=False),
              help="recorded trace to write ('-' = stdout)")
@click.option("--timeout", default=DEFAULT_TIMEOUT, show_default=True, help="seconds before QEMU is killed")
@click.option("--json", "as_json", is_flag=True, help="print what was recorded (and what was not) as JSON")
def record_qemu(trace_path: str | None, scenario: str | None, output: str, timeout: float, as_json: bool) -> None:
    """Run the events under qemu-system-x86_64 -accel tcg; QEMU's outcomes become the expectations.

    Events the guest cannot express or must not send are kept without expectations and listed
    as "not recorded".
    """
    if (trace_path is None) == (scenario is None):
        raise click.UsageError("give exactly one of --trace FILE or --scenario NAME")
    try:
        with signals_raise():  # SIGTERM unwinds like Ctrl-C: QEMU is killed, temporary directories removed
            _record(trace_path, scenario, output, timeout, as_json)
    except InputError as exc:
        click.echo(f"difftest: error: {exc}", err=True)
        sys.exit(2)
    except BuildError as exc:  # e.g. a trace too long for the guest image
        click.echo(f"difftest: error: {InputError(trace_path or f'scenario {scenario}', f'cannot build the guest: {exc}')}",
                   err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("difftest: interrupted; QEMU stopped and temporary files removed", err=True)
        sys.exit(130)


def _record(trace_path: str | None, scenario: str | None, output: str, timeout: float, as_json: bool = False) -> None:
    missing = ([] if qemu_path() else ["qemu-system-x86_64"]) + missing_tools()
    if missing:
        raise InputError("record qemu", f"missing tool(s): {', '.join(missing)} (Debian: qemu-system-x86, binutils)")
    if trace_path is not None:
        tf = open_trace(trace_path)
        trace = TraceInput(tf.name, list(tf.rows()), dict(tf.meta))
    else:
        trace = _scenario_input(scenario or "")
    with task("recording under QEMU TCG", unit="boots"):
        rec, boot = record_one(trace, timeout=timeout)
    dest = write_trace_output(output, rec.rows, rec.meta)
    where, err = (str(dest) if dest else "stdout"), to_stdout(output)
    if as_json and not err:
        echo_json({"output": where, "recorded": rec.recorded, "qemu_version": rec.meta["host.qemu_version"],
                   "qemu_cpu": rec.meta["host.qemu_cpu"], "boot_seconds": round(boot.seconds, 3),
                   "not_recorded": [{"seq": seq, "what": what, "reason": reason} for seq, what, reason in rec.not_recorded]})
        return
    info(f"{where}: {rec.recorded} rows recorded, {len(rec.not_recorded)} not recorded; QEMU "
         f"{rec.meta['host.qemu_version']} -cpu {rec.meta['host.qemu_cpu']}, boot {boot.seconds:.2f} s", err=err)
    for seq, what, reason in rec.not_recorded:  # what a recording lacks is a result: shown even under -q
        click.echo(f"  not recorded: seq {seq} {what}: {reason}", err=err)
    sys.stdout.flush()


@click.command("kvm")
@click.option("--scenario", "scenarios", multiple=True, help="scenario name (repeatable), or `all`")
@click.option("--trace", "trace_file", type=click.Path(dir_okay=False), default=None,
              help="perform this trace's events instead and record what really happened")
@click.option("-o", "--output", "out", default=None,
              help="output trace (.parquet; '-' = stdout); required unless --list (checked before anything is recorded)")
@click.option("--no-trace", is_flag=True, help="do not capture kvm tracepoints")
@click.option("--list", "list_only", is_flag=True, help="list the scenarios and exit")
@click.option("--json", "as_json", is_flag=True, help="print the scenario list, or what was recorded, as JSON")
def record_kvm(scenarios: tuple[str, ...], trace_file: str | None, out: str | None, no_trace: bool, list_only: bool,
               as_json: bool) -> None:
    """Perform scenarios (or a trace) on /dev/kvm; each step's real outcome becomes its expectation.

    Exit 0: recorded; 1: the guest died mid-trace (the rows after it are marked not recorded); 2: bad
    input; 3: something could not be released; 130: interrupted (everything released).
    """
    if list_only:
        if as_json:
            echo_json([{"name": sc.name, "description": sc.description} for sc in KVM_SCENARIOS.values()])
            return
        for sc in KVM_SCENARIOS.values():
            click.echo(f"{sc.name}: {sc.description}")
        return
    if out is None:
        raise click.UsageError("missing option '-o' / '--output' (the trace to write)")
    try:
        try:
            if not to_stdout(out):
                check_writable(out)  # first: an unwritable output is refused whatever else is wrong
            if bool(scenarios) == bool(trace_file):
                raise InputError("difftest record kvm", "give exactly one of --scenario NAME or --trace FILE")
            with task("recording on /dev/kvm", unit="steps"):
                if trace_file:
                    rec, meta = record_trace(trace_file)
                else:
                    chosen = list(dict.fromkeys(select(scenarios)))
                    rec, meta = record_scenarios(chosen, trace=not no_trace)
        except InputError as exc:
            click.echo(f"difftest: error: {exc}", err=True)
            sys.exit(2)
    except KeyboardInterrupt:
        if LAST_FAILURES:
            click.echo("difftest: interrupted; NOT released: " + "; ".join(LAST_FAILURES), err=True)
            sys.exit(3)
        click.echo("difftest: interrupted; VM, fds and tracefs instance released", err=True)
        sys.exit(130)
    # Everything is recorded and released: writing the file and saying so is one step a Ctrl-C does not split
    # (interrupted: the file is not written; written: the run reports it whole and ends as it would have).
    code, late = 2, False
    err = to_stdout(out)
    try:
        with signals_deferred():
            try:
                dest = write_recording(rec, meta, out)
            except InputError as exc:
                click.echo(f"difftest: error: {exc}", err=True)
            else:
                code = 0 if rec.died_at is None else 1
                where = str(dest) if dest else "stdout"
                if rec.died_at is not None:
                    click.echo(f"difftest: the guest died at row {rec.died_at} ({rec.died_why}); wrote {where} with "
                               f"{len(rec.rows) - rec.died_at - 1} later rows marked not recorded", err=True)
                elif as_json and not err:
                    echo_json({"output": where, "rows": len(rec.rows), "timing": rec.timing()})
                else:
                    info(f"wrote {where} ({len(rec.rows)} rows; {rec.timing()})", err=err)
    except KeyboardInterrupt:
        late = code != 2
    if late:
        click.echo("difftest: the interrupt came after the recording was written; it is complete", err=True)
    sys.exit(code)
