"""Click callbacks that check an output path when the command line is parsed, before any work."""

from __future__ import annotations

import sys
from typing import Any

import click

from difftest.errors import InputError
from difftest.trace.output_paths import check_writable, check_writable_dir


def _fail(exc: InputError) -> None:
    click.echo(f"difftest: error: {exc}", err=True)
    sys.exit(2)


def writable_file(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """``callback=`` for an option naming a file to write: exit 2 now if it cannot be written ('-': stdout)."""
    if value is not None and value != "-":
        try:
            check_writable(value)
        except InputError as exc:
            _fail(exc)
    return value


def writable_dir(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """``callback=`` for an option naming a folder to write into ('-' is left to the command to refuse)."""
    if value is not None and value != "-":
        try:
            check_writable_dir(value)
        except InputError as exc:
            _fail(exc)
    return value
