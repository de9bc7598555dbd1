"""The README stays true: its command table names every command, and its Python examples run."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from difftest.cli import main

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def leaf_names() -> set[str]:
    names: set[str] = set()
    ctx = click.Context(main)
    for name in main.list_commands(ctx):
        cmd = main.get_command(ctx, name)
        if isinstance(cmd, click.Group):
            names |= {f"{name} {sub}" for sub in cmd.list_commands(click.Context(cmd))}
        else:
            names.add(name)
    return names


def test_command_table_names_every_command() -> None:
    table = README[README.index("## Commands"):README.index("**Exit codes**")]
    documented = set(re.findall(r"`difftest ((?:record |import )?[a-z-]+)", table))
    assert documented == leaf_names()


def test_exit_codes_documented() -> None:
    for code in ("| 0 |", "| 1 |", "| 2 |", "| 3 |"):
        assert code in README


def test_python_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert len(blocks) >= 2
    ns: dict[str, object] = {}
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks[0], "README-1", "exec"), ns)
    assert (tmp_path / "wd.parquet").is_file()
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)
    exec(compile(blocks[1], "README-2", "exec"), ns)
