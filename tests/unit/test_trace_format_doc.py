"""docs/trace-format.md stays true: generated tables equal the code, and its examples run as shown."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest
from click.testing import CliRunner

from difftest.cli import main
from difftest.trace.schema import PRODUCERS, render_markdown
from reference_model.host import HOST_FEATURES

DOCS = Path(__file__).resolve().parents[2] / "docs"
DOC = DOCS / "trace-format.md"


def regen_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("regen_trace_format", DOCS / "regen_trace_format.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def prose() -> str:
    text = DOC.read_text(encoding="utf-8")
    return text.split("<!-- BEGIN GENERATED -->", 1)[0]


def code_blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", prose(), flags=re.S)


def test_generated_section_equals_render_markdown() -> None:
    mod = regen_module()
    assert mod.generated_part(DOC.read_text(encoding="utf-8")) == render_markdown(), (
        "docs/trace-format.md is stale: run python docs/regen_trace_format.py")
    assert mod.main(["--check"]) == 0


def test_splice_replaces_only_the_generated_part() -> None:
    mod = regen_module()
    text = "intro\n<!-- BEGIN GENERATED -->\nold\n<!-- END GENERATED -->\noutro\n"
    assert mod.splice(text, "new\n") == "intro\n<!-- BEGIN GENERATED -->\nnew\n<!-- END GENERATED -->\noutro\n"
    with pytest.raises(ValueError):
        mod.splice("no markers", "x")


def test_prose_names_every_producer_and_host_feature() -> None:
    text = prose()
    for name in (*PRODUCERS, *HOST_FEATURES):
        assert f"`{name}`" in text, name


def _run_builder_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    example = next(b for b in code_blocks("python") if "TraceBuilder" in b)
    monkeypatch.chdir(tmp_path)
    exec(compile(example, str(DOC), "exec"), {})
    files = list(tmp_path.glob("*.parquet"))
    assert len(files) == 1
    return files[0]


def test_builder_example_runs_and_replays_clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _run_builder_example(tmp_path, monkeypatch)
    res = CliRunner().invoke(main, ["replay", str(path), "--json"])
    assert res.exit_code == 0, res.output
    assert '"policy": "hw"' in res.stdout  # taken from the trace's pksdt.policy, as the doc says


def test_builder_example_rows_are_as_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    duckdb = pytest.importorskip("duckdb", reason="duckdb comes with the test extra")
    path = _run_builder_example(tmp_path, monkeypatch)
    table = re.search(r"\| seq \| kind .*?\n\n", prose(), flags=re.S)
    assert table is not None
    lines = table.group(0).strip().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    shown = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    got = duckdb.connect().sql(f"SELECT {', '.join(header)} FROM '{path}' WHERE seq >= 6 ORDER BY seq").fetchall()
    assert [["" if v is None else str(v) for v in row] for row in got] == shown


def test_loading_snippets_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    duckdb = pytest.importorskip("duckdb", reason="duckdb comes with the test extra")
    path = _run_builder_example(tmp_path, monkeypatch)
    path.rename(tmp_path / "trace.parquet")
    pandas_snippet = next(b for b in code_blocks("python") if "read_parquet" in b)
    scope: dict[str, object] = {}
    exec(compile(pandas_snippet, str(DOC), "exec"), scope)
    faults = scope["faults"]
    assert list(faults["exp_pfec"]) == [0x23]  # type: ignore[index]
    assert list(faults["exp_rule"].astype(str)) == ["ARCH.RIGHTS"]  # type: ignore[index]
    sql = code_blocks("sql")[0]
    first, second = [q.strip() for q in sql.split(";") if q.strip()]
    con = duckdb.connect()
    assert con.sql(first).fetchall() == [(8, "access", "0x40000000", "0x23", "ARCH.RIGHTS")]
    meta = dict(con.sql(second).fetchall())
    assert meta["pksdt.name"] == "wd-blocks-supervisor-write"
    assert meta["pksdt.setup_rows"] == "3"
