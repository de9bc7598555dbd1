"""What every ``difftest`` command shares: exit codes, the crash line, -q/-v, --json and ``-``.

Exit codes, the same for every command:

- 0: no divergence, or only known ones; for generate, shrink, fuzz, record and import: the job was done;
- 1: a divergence (for compare: the policies differ);
- 2: bad input or usage (one line naming the file, row and column);
- 3: an internal error: one line naming the failure and the file that holds the full traceback.

``-q/--quiet`` and ``-v/--verbose`` are added to every command that does not define its own (see
:func:`with_common_options`), so the vocabulary cannot drift from command to command.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click

import difftest.progress as progress
from difftest.cli.crash import EXIT_INTERNAL_ERROR, report_crash

EXIT_OK, EXIT_DIVERGENCE, EXIT_BAD_INPUT = 0, 1, 2

EXIT_CODES_HELP = (
    "Exit codes: 0 no divergence (or only known ones; for generate, shrink, fuzz, record and import: done), "
    "1 a divergence, 2 bad input or usage, 3 internal error (one line; the traceback is saved to a file). "
    "Every command takes -q/--quiet and -v/--verbose; a file output given as '-' goes to stdout; "
    "progress is drawn on stderr when it is a terminal.  Shell completion: "
    'eval "$(_DIFFTEST_COMPLETE=bash_source difftest)" (zsh_source, fish_source for the other shells).'
)

COMMAND_EXIT_CODES = ("Exit codes: 0 no divergence, or the job was done; 1 a divergence; 2 bad input or usage; "
                      "3 internal error (traceback saved to a file).  '-' as an output file means stdout.")


def _set_quiet(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    progress.set_quiet(bool(value))  # every run sets it: a previous in-process run must not leak


def _set_verbose(ctx: click.Context, param: click.Parameter, value: int) -> None:
    progress.set_verbose(value or 0)


def quiet_option() -> click.Option:
    return click.Option(["-q", "--quiet"], is_flag=True, expose_value=False, callback=_set_quiet,
                        help="no progress and no informational lines: results and errors only")


def verbose_option() -> click.Option:
    return click.Option(["-v", "--verbose"], count=True, expose_value=False, callback=_set_verbose,
                        help="more detail (repeatable): every later divergence, per-item lines")


def with_common_options(cmd: click.Command) -> click.Command:
    """Give ``cmd`` ``-q/--quiet`` and ``-v/--verbose`` unless it defines them itself (idempotent)."""
    if cmd.epilog is None and not isinstance(cmd, click.Group):
        cmd.epilog = COMMAND_EXIT_CODES
    taken = {opt for p in cmd.params for opt in getattr(p, "opts", ())}
    if "-q" not in taken and "--quiet" not in taken:
        cmd.params.append(quiet_option())
    if "-v" not in taken and "--verbose" not in taken:
        cmd.params.append(verbose_option())
    return cmd


def run_guarded(invoke: Callable[[], Any]) -> Any:
    """Run a command; any exception that is not click's own exits 3 with one line (traceback to a file)."""
    try:
        return invoke()
    except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
        raise
    except BrokenPipeError:  # `difftest report | head`: the reader left; not a crash
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at interpreter exit
        raise click.exceptions.Exit(EXIT_OK) from None
    except Exception as exc:
        raise click.exceptions.Exit(report_crash(exc)) from None


def echo_json(obj: Any) -> None:
    """``--json``: one JSON document on stdout (sorted keys, so outputs diff well)."""
    click.echo(json.dumps(obj, indent=2, sort_keys=True))


def info(message: str, *, err: bool = False) -> None:
    """An informational line (``wrote ...``): hidden by ``--quiet``."""
    if not progress.is_quiet():
        click.echo(message, err=err)


__all__ = ["EXIT_BAD_INPUT", "EXIT_CODES_HELP", "EXIT_DIVERGENCE", "EXIT_INTERNAL_ERROR", "EXIT_OK", "echo_json", "info",
           "run_guarded", "with_common_options"]
