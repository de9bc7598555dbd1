"""Validation on ingest: every class of bad trace is one InputError naming file, event and column.

Each case starts from a valid trace written with the builder, breaks one thing with pyarrow (or
writes garbage), and checks both the API (``open_trace(...).rows()`` raises :class:`InputError`
with the right row and column) and the CLI (``difftest replay`` exits 2 with exactly one line on
stderr and no traceback).  The rules come from the house brief and docs/trace-format.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from difftest import TraceBuilder
from difftest.cli import main
from difftest.errors import InputError
from difftest.trace.io import open_trace, write_trace

PKRS = 0x6E1


def build_base(path: Path) -> Path:
    """A small valid trace; row indices are fixed so each case can name the row it breaks."""
    t = TraceBuilder("base", "valid baseline for the validation tests", policy="hw")
    t.cpuid(pks=True)  # row 0 set_cpuid
    t.wrmsr(PKRS, 0x4).expect_ok(rule="ARCH.MSR.INDEP")  # row 1 wrmsr
    t.rdmsr(PKRS).expect_value(0x4, rule="ARCH.MSR.INDEP")  # row 2 rdmsr
    t.snapshot("vcpu0.pkrs", 0x4)  # row 3 snapshot
    t.event("set_msrs", msrs=(PKRS, 0xC0000082), values=(0x4, 0x1000))  # row 4 (no meaning on hw: uncompared)
    t.map(0x4000_0000, key=1)  # row 5 map
    t.access(0x4000_0000, write=True).expect_ok(rule="ARCH.CR4.EFFECT")  # row 6 access (paging off)
    return t.write(path)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_base(tmp_path_factory.mktemp("base") / "base.parquet")


def replace_column(tb: pa.Table, name: str, arr: pa.Array) -> pa.Table:
    """``tb`` with column ``name`` replaced by ``arr`` (added at the end if absent); metadata kept."""
    if name in tb.column_names:
        return tb.set_column(tb.schema.get_field_index(name), pa.field(name, arr.type), arr)
    return tb.append_column(pa.field(name, arr.type), arr)


def set_cell(tb: pa.Table, name: str, row: int, value: object, typ: pa.DataType | None = None) -> pa.Table:
    """``tb`` with one cell changed (the column is rebuilt as ``typ``, default its own non-dictionary type)."""
    values = tb.column(name).to_pylist()
    values[row] = value
    t = typ or tb.schema.field(name).type
    if pa.types.is_dictionary(t):
        t = pa.string()
    return replace_column(tb, name, pa.array(values, type=t))


Mutation = Callable[[Path, Path], None]


def via_table(fn: Callable[[pa.Table], pa.Table]) -> Mutation:
    def mutate(src: Path, dst: Path) -> None:
        pq.write_table(fn(pq.read_table(src)), dst)
    return mutate


def raw_bytes(fn: Callable[[bytes], bytes]) -> Mutation:
    def mutate(src: Path, dst: Path) -> None:
        dst.write_bytes(fn(src.read_bytes()))
    return mutate


def with_meta(**changes: str | None) -> Mutation:
    def fn(tb: pa.Table) -> pa.Table:
        md = {k.decode(): v.decode() for k, v in (tb.schema.metadata or {}).items()}
        for k, v in changes.items():
            key = "pksdt." + k.replace("__", ".")
            if v is None:
                md.pop(key, None)
            else:
                md[key] = v
        return tb.replace_schema_metadata(md)
    return via_table(fn)


def pandas_other_columns(with_trace_meta: bool) -> Mutation:
    def mutate(src: Path, dst: Path) -> None:
        df = pd.DataFrame({"timestamp": [1, 2], "event": ["wrmsr", "rdmsr"]})
        if not with_trace_meta:
            df.to_parquet(dst)
            return
        tb = pa.Table.from_pandas(df, preserve_index=False)
        meta = dict(tb.schema.metadata or {})
        meta.update({b"pksdt.schema_version": b"1", b"pksdt.producer": b"synthetic"})
        pq.write_table(tb.replace_schema_metadata(meta), dst)
    return mutate


def no_comparable_rows(src: Path, dst: Path) -> None:
    write_trace(dst, [{"seq": 0, "kind": "set_cpuid", "vcpu": 0, "level": "host", "cpuid_7_ecx": 1 << 31},
                      {"seq": 1, "kind": "wrmsr", "vcpu": 0, "level": "l1", "msr": PKRS, "value": 4}],
                {"producer": "synthetic"})


def no_rows(src: Path, dst: Path) -> None:
    write_trace(dst, [], {"producer": "synthetic"})


@dataclass(frozen=True)
class Bad:
    """One bad-input class: how to make it, and what the one-line error must name."""

    id: str
    mutate: Mutation
    message: str  # a fragment of the message
    row: int | None = None  # the event index the error must name (None: a file-level error)
    column: str | None = None


def _seq_swap(tb: pa.Table) -> pa.Table:
    seqs = tb.column("seq").to_pylist()
    seqs[4], seqs[5] = seqs[5], seqs[4]
    return replace_column(tb, "seq", pa.array(seqs, pa.uint64()))


def _seq_dup(tb: pa.Table) -> pa.Table:
    seqs = tb.column("seq").to_pylist()
    seqs[3] = seqs[2]
    return replace_column(tb, "seq", pa.array(seqs, pa.uint64()))


CASES = [
    # --- not a trace at all ----------------------------------------------------------------
    Bad("garbage-bytes", raw_bytes(lambda b: b"\x00garbage\xff" * 50), "not a readable Parquet file"),
    Bad("empty-file", raw_bytes(lambda b: b""), "not a readable Parquet file"),
    Bad("truncated", raw_bytes(lambda b: b[: len(b) // 2]), "not a readable Parquet file"),
    Bad("pandas-other-schema", pandas_other_columns(False), "not a pks-difftest trace"),
    Bad("pandas-other-columns-with-meta", pandas_other_columns(True), "unknown column", column="timestamp"),
    # --- file metadata ---------------------------------------------------------------------
    Bad("schema-version-unsupported", with_meta(schema_version="2"), "version '2' is not supported"),
    Bad("producer-missing", with_meta(producer=None), "lacks 'pksdt.producer'"),
    Bad("producer-unknown", with_meta(producer="my-script"), "unknown producer 'my-script'"),
    Bad("host-feature-unknown", with_meta(cpu__features="pks,avx9000"), "unknown host feature(s) avx9000"),
    # --- columns ---------------------------------------------------------------------------
    Bad("required-column-missing", via_table(lambda tb: tb.drop(["level"])), "required column is missing",
        column="level"),
    Bad("unknown-column", via_table(lambda tb: replace_column(tb, "colour", pa.array(["red"] * tb.num_rows))),
        "unknown column", column="colour"),
    Bad("duplicate-column", via_table(lambda tb: tb.append_column("msr", tb.column("msr"))),
        "column appears more than once", column="msr"),
    Bad("string-in-int-column", via_table(lambda tb: replace_column(tb, "cpl", pa.array(["0"] * tb.num_rows))),
        "wrong type string (expected int)", column="cpl"),
    Bad("float-column", via_table(lambda tb: replace_column(tb, "value", pa.array([1.0] * tb.num_rows))),
        "wrong type double (expected int)", column="value"),
    Bad("int-in-bool-column", via_table(lambda tb: replace_column(tb, "present", pa.array([1] * tb.num_rows))),
        "wrong type int64 (expected bool)", column="present"),
    Bad("int-in-string-column", via_table(lambda tb: replace_column(tb, "access", pa.array([1] * tb.num_rows))),
        "wrong type int64 (expected str)", column="access"),
    Bad("scalar-in-list-column", via_table(lambda tb: replace_column(tb, "msrs", pa.array([1] * tb.num_rows))),
        "wrong type int64 (expected list of int)", column="msrs"),
    # --- values ----------------------------------------------------------------------------
    Bad("required-value-null", via_table(lambda tb: set_cell(tb, "vcpu", 2, None)), "required value is missing",
        row=2, column="vcpu"),
    Bad("negative-value", via_table(lambda tb: set_cell(tb, "value", 1, -1, pa.int64())), "negative value",
        row=1, column="value"),
    Bad("key-16", via_table(lambda tb: set_cell(tb, "key", 5, 16)), "out of range (at most 15)", row=5, column="key"),
    Bad("cpl-4", via_table(lambda tb: set_cell(tb, "cpl", 6, 4)), "out of range (at most 3)", row=6, column="cpl"),
    Bad("uint64-too-big-for-uint16", via_table(lambda tb: set_cell(tb, "vcpu", 2, 2**64 - 1, pa.uint64())),
        "out of range (at most 65535)", row=2, column="vcpu"),
    Bad("negative-in-list", via_table(lambda tb: set_cell(tb, "values", 4, [4, -7], pa.list_(pa.int64()))),
        "negative value", row=4, column="values"),
    Bad("null-in-list", via_table(lambda tb: set_cell(tb, "msrs", 4, [PKRS, None])), "null element in a list",
        row=4, column="msrs"),
    Bad("seq-unordered", via_table(_seq_swap), "does not follow", row=5, column="seq"),
    Bad("seq-duplicate", via_table(_seq_dup), "sequence number 2 does not follow 2", row=3, column="seq"),
    Bad("kind-unknown", via_table(lambda tb: set_cell(tb, "kind", 2, "rdmsrr")), "unknown value 'rdmsrr'",
        row=2, column="kind"),
    Bad("access-unknown", via_table(lambda tb: set_cell(tb, "access", 6, "execute")), "unknown value 'execute'",
        row=6, column="access"),
    Bad("level-unknown", via_table(lambda tb: set_cell(tb, "level", 1, "l3")), "unknown value 'l3'",
        row=1, column="level"),
    Bad("page-size-unknown", via_table(lambda tb: set_cell(tb, "page_size", 5, "4m")), "unknown value '4m'",
        row=5, column="page_size"),
    Bad("exp-result-unknown", via_table(lambda tb: set_cell(tb, "exp_result", 1, "crash")),
        "unknown value 'crash'", row=1, column="exp_result"),
    Bad("kind-field-null", via_table(lambda tb: set_cell(tb, "msr", 2, None)), "a 'rdmsr' event needs a value here",
        row=2, column="msr"),
    Bad("kind-field-column-absent", via_table(lambda tb: tb.drop(["path"])), "a 'snapshot' event needs this column",
        row=3, column="path"),
    Bad("snapshot-value-null", via_table(lambda tb: set_cell(tb, "exp_value", 3, None)),
        "a 'snapshot' event needs a value here", row=3, column="exp_value"),
    Bad("snapshot-path-malformed", via_table(lambda tb: set_cell(tb, "path", 3, "PKRS of cpu 0")),
        "malformed state path 'PKRS of cpu 0'", row=3, column="path"),
    Bad("set-msrs-length-mismatch", via_table(lambda tb: set_cell(tb, "values", 4, [4])),
        "set_msrs needs one value per MSR", row=4, column="values"),
    Bad("no-comparable-events", no_comparable_rows, "no comparable events"),
    Bad("no-events", no_rows, "the trace has no events"),
]


def make(tmp_path: Path, base: Path, case: Bad) -> Path:
    dst = tmp_path / f"{case.id}.parquet"
    case.mutate(base, dst)
    return dst


def test_base_trace_is_valid_and_passes(base: Path) -> None:
    """The baseline every case breaks is itself valid, so each error below is caused by its one change."""
    rows = list(open_trace(base).rows())
    assert [r.event.kind if r.event else "snapshot" for r in rows] == [
        "set_cpuid", "wrmsr", "rdmsr", "snapshot", "set_msrs", "map", "access"]
    res = CliRunner().invoke(main, ["replay", str(base), "--policy", "hw"])
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_raises_one_input_error(tmp_path: Path, base: Path, case: Bad) -> None:
    path = make(tmp_path, base, case)
    with pytest.raises(InputError) as info:
        list(open_trace(path).rows())
    err = info.value
    text = str(err)
    assert "\n" not in text
    assert text.startswith(str(path) + ": ")
    assert case.message in err.message
    assert err.row == case.row
    assert err.column == case.column
    if case.row is not None:
        assert f"event {case.row}" in text
    if case.column is not None:
        assert f"column '{case.column}'" in text


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_cli_exit_2_one_line(tmp_path: Path, base: Path, case: Bad) -> None:
    path = make(tmp_path, base, case)
    res = CliRunner().invoke(main, ["replay", str(path), "--policy", "hw"])
    assert res.exit_code == 2, res.output
    assert isinstance(res.exception, SystemExit)  # not an uncaught exception
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"difftest: error: {path}: ")
    assert case.message in lines[0]
    assert "Traceback" not in res.output
    if case.row is not None:
        assert f"event {case.row}" in lines[0]
    if case.column is not None:
        assert f"column '{case.column}'" in lines[0]
    assert res.stdout == ""  # nothing half-reported before the error


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        open_trace(tmp_path / "nope.parquet")
    with pytest.raises(InputError, match="not a regular file"):
        open_trace(tmp_path)


def test_error_in_a_later_batch_names_the_absolute_event(tmp_path: Path) -> None:
    """Row numbers are counted across record batches, not per batch."""
    from difftest.trace import io as trace_io

    rows = [{"seq": i, "kind": "wrmsr", "vcpu": 0, "level": "l1", "msr": PKRS, "value": 0, "exp_result": "ok"}
            for i in range(10)]
    rows[7]["seq"] = 3
    path = write_trace(tmp_path / "batches.parquet", rows, {"producer": "synthetic"})
    old = trace_io.BATCH_ROWS
    trace_io.BATCH_ROWS = 4
    try:
        with pytest.raises(InputError) as info:
            list(open_trace(path).rows())
    finally:
        trace_io.BATCH_ROWS = old
    assert info.value.row == 7 and info.value.column == "seq"
    assert "sequence number 3 does not follow 6" in str(info.value)


def test_pandas_written_trace_with_int64_columns_is_accepted(tmp_path: Path) -> None:
    """Integer columns of another integer type (pandas writes int64) are accepted when every value fits."""
    df = pd.DataFrame({
        "seq": [0, 1, 2], "kind": ["set_cpuid", "wrmsr", "rdmsr"], "vcpu": [0, 0, 0], "level": ["host", "l1", "l1"],
        "cpuid_7_ecx": pd.array([1 << 31, None, None], dtype="Int64"),
        "msr": pd.array([None, PKRS, PKRS], dtype="Int64"),
        "value": pd.array([None, 8, None], dtype="Int64"),
        "exp_value": pd.array([None, None, 8], dtype="Int64"),
    })
    tb = pa.Table.from_pandas(df, preserve_index=False)
    tb = tb.replace_schema_metadata({**(tb.schema.metadata or {}), b"pksdt.schema_version": b"1",
                                     b"pksdt.producer": b"synthetic"})
    path = tmp_path / "pandas.parquet"
    pq.write_table(tb, path)
    rows = list(open_trace(path).rows())
    assert rows[1].event is not None and rows[1].event.msr == PKRS and rows[1].event.value == 8
    assert rows[2].expect is not None and rows[2].expect.value == 8
    res = CliRunner().invoke(main, ["replay", str(path), "--policy", "hw"])
    assert res.exit_code == 0, res.output
