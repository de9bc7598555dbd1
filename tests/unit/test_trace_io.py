"""Trace I/O: builder -> Parquet -> open_trace -> rows, for every event kind and every column.

The values are the edges of each column's type as docs/trace-format.md declares it (uint64 near
2**64-1, the largest uint32/uint16/int32, both booleans, dictionary strings, lists), so a lossy
conversion anywhere on the way (float, int64, null-for-false) shows.  The same files are then
read as they are by pandas and duckdb, the two tools the format document promises.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from difftest import TraceBuilder
from difftest.trace import io as trace_io
from difftest.trace.io import Expect, Snapshot, open_trace, write_trace
from difftest.trace.schema import ARROW_SCHEMA, COLUMNS, META_KEYS, META_PREFIX, SNAPSHOT_KIND, Column
from reference_model.events import KINDS, Event

U64_TOP = 2**64 - 1
_EVENT_FIELDS = set(Event.__slots__) - {"kind", "seq"}  # type: ignore[attr-defined]
_EXPECT_FIELDS = [f for f in Expect.__slots__]  # type: ignore[attr-defined]


def edge_value(col: Column, variant: int = 0) -> Any:
    """A value at the edge of ``col``'s declared type (variant 1 gives a second, different one)."""
    if col.choices:
        return col.choices[-1 - variant % len(col.choices)]
    t = col.type
    if pa.types.is_dictionary(t) or pa.types.is_string(t):
        return f"{col.name} text é ✓ {variant}"
    if pa.types.is_boolean(t):
        return variant == 0  # True, then False: a False must not come back as null
    if pa.types.is_list(t):
        top = (1 << t.value_type.bit_width) - 1
        return (0, top, top - 1 - variant)
    if col.max_value is not None:
        return col.max_value - variant
    if pa.types.is_unsigned_integer(t):
        return (1 << t.bit_width) - 1 - variant
    return (1 << (t.bit_width - 1)) - 1 - variant  # signed (exp_count)


def test_edge_values_cover_the_declared_types() -> None:
    """Self-check of the fixture: uint64 columns really get values above the int64 range."""
    by_name = {c.name: c for c in COLUMNS}
    assert edge_value(by_name["value"]) == U64_TOP
    assert edge_value(by_name["exp_cr2"], 1) == U64_TOP - 1
    assert edge_value(by_name["key"]) == 15
    assert edge_value(by_name["cpl"]) == 3
    assert edge_value(by_name["msrs"]) == (0, 2**32 - 1, 2**32 - 2)
    assert edge_value(by_name["exp_count"]) == 2**31 - 1
    assert edge_value(by_name["present"], 1) is False


def every_column_row(variant: int) -> dict[str, Any]:
    """One event row with every non-identity column set (kind access: validation allows extra fields)."""
    row: dict[str, Any] = {"kind": "access"}
    for col in COLUMNS:
        if col.name in ("seq", "kind", "path"):
            continue
        row[col.name] = edge_value(col, variant)
    row["exp_result"] = "pf"
    return row


def kind_row(kind: str) -> dict[str, Any]:
    """A row of ``kind`` with exactly the fields KINDS says it reads, at edge values, and an expectation."""
    by_name = {c.name: c for c in COLUMNS}
    row: dict[str, Any] = {"kind": kind}
    reads = [f.rstrip("!") for f in KINDS[kind][0]]
    for name in reads:
        row[name] = edge_value(by_name[name])
    if "msrs" in row and "values" in row:
        row["values"] = row["values"][: len(row["msrs"])]
    row["exp_result"] = "ok"
    return row


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]], TraceBuilder]:
    """A builder trace with one row per event kind, two every-column rows and snapshots."""
    t = TraceBuilder("round-trip", "every kind, every column", policy="hw,other", source="tests",
                     notes="line one\nline two é", host_features="pks,ept")
    rows: list[dict[str, Any]] = []
    for kind in KINDS:
        r = kind_row(kind)
        rows.append(r)
        t.event(r["kind"], **{k: v for k, v in r.items() if k != "kind" and not k.startswith("exp_")})
        t.expect(r["exp_result"])
    t.end_setup()
    for variant in (0, 1):
        r = every_column_row(variant)
        rows.append(r)
        fields = {k: v for k, v in r.items() if k != "kind" and not k.startswith("exp_") and k != "note"}
        t.event("access", **fields)
        t.expect(r["exp_result"], rule=r["exp_rule"],
                 **{k[4:]: v for k, v in r.items() if k.startswith("exp_") and k not in ("exp_result", "exp_rule")})
        t.note(r["note"])
    rows.append({"kind": SNAPSHOT_KIND, "path": "vcpu65535.vmcs12.host_ia32_pkrs", "exp_value": U64_TOP,
                 "note": "snap note"})
    t.on(vcpu=65535)
    t.snapshot("vcpu65535.vmcs12.host_ia32_pkrs", U64_TOP, note="snap note")
    rows.append({"kind": SNAPSHOT_KIND, "path": "host.pkrs", "exp_value": 0})
    t.snapshot("host.pkrs", 0)
    path = t.write(tmp_path_factory.mktemp("rt") / "rt.parquet")
    return path, rows, t


def test_file_has_the_declared_arrow_schema(built: tuple[Path, list[dict[str, Any]], TraceBuilder]) -> None:
    path, rows, _ = built
    pf = pq.ParquetFile(path)
    schema = pf.schema_arrow
    assert schema.names == ARROW_SCHEMA.names
    for f in ARROW_SCHEMA:
        assert schema.field(f.name).type == f.type, f.name
    assert pf.metadata.num_rows == len(rows)


def test_every_kind_round_trips(built: tuple[Path, list[dict[str, Any]], TraceBuilder]) -> None:
    path, rows, _ = built
    got = list(open_trace(path).rows())
    assert len(got) == len(rows)
    assert [g.index for g in got] == list(range(len(rows)))
    assert [g.seq for g in got] == list(range(len(rows)))
    assert {g.event.kind for g in got if g.event} == set(KINDS)
    for want, row in zip(rows, got, strict=True):
        if want["kind"] == SNAPSHOT_KIND:
            continue
        ev = row.event
        assert ev is not None and row.snapshot is None
        assert ev.kind == want["kind"]
        for name in _EVENT_FIELDS:
            expected = want.get(name)
            if name == "vcpu":
                expected = want.get("vcpu", 0)
            elif name == "level":
                expected = want.get("level") or ("host" if want["kind"] in _host_kinds() else "l1")
            actual = getattr(ev, name)
            assert actual == expected, (want["kind"], name, actual, expected)
            if isinstance(expected, bool):
                assert actual is expected
        assert row.expect is not None and row.expect.result == want["exp_result"]


def _host_kinds() -> frozenset[str]:
    from difftest.trace.builder import _HOST_KINDS

    return _HOST_KINDS


def test_every_column_round_trips_exactly(built: tuple[Path, list[dict[str, Any]], TraceBuilder]) -> None:
    path, _, _ = built
    got = list(open_trace(path).rows())
    n = len(KINDS)
    for variant, row in ((0, got[n]), (1, got[n + 1])):
        want = every_column_row(variant)
        ev = row.event
        assert ev is not None
        for name in _EVENT_FIELDS:
            assert getattr(ev, name) == want[name], name
            assert type(getattr(ev, name)) is type(want[name]), name  # bool stays bool, tuple stays tuple
        exp = row.expect
        assert exp is not None
        for name in _EXPECT_FIELDS:
            assert getattr(exp, name) == want[f"exp_{name}"], name
        assert row.note == want["note"]
    assert got[n].event.value == U64_TOP and got[n + 1].event.value == U64_TOP - 1  # type: ignore[union-attr]
    assert got[n].expect.values == (0, U64_TOP, U64_TOP - 1)  # type: ignore[union-attr]
    assert got[n + 1].event.present is False  # type: ignore[union-attr]


def test_snapshot_rows_round_trip(built: tuple[Path, list[dict[str, Any]], TraceBuilder]) -> None:
    path, rows, _ = built
    got = list(open_trace(path).rows())
    snaps = [g for g in got if g.snapshot is not None]
    assert [(s.index, s.snapshot, s.note, s.event, s.expect) for s in snaps] == [
        (len(rows) - 2, Snapshot("vcpu65535.vmcs12.host_ia32_pkrs", U64_TOP), "snap note", None, None),
        (len(rows) - 1, Snapshot("host.pkrs", 0), None, None, None),
    ]


def test_metadata_round_trips_through_the_builder(built: tuple[Path, list[dict[str, Any]], TraceBuilder]) -> None:
    path, _, _ = built
    tf = open_trace(path)
    assert tf.meta == {
        "name": "round-trip", "description": "every kind, every column", "producer": "synthetic",
        "policy": "hw,other", "source": "tests", "notes": "line one\nline two é", "cpu.features": "pks,ept",
        "setup_rows": str(len(KINDS)), "schema_version": "1",
    }
    assert tf.name == "round-trip"
    assert tf.policies() == ["hw", "other"]
    assert tf.host().features == frozenset({"pks", "ept"})
    assert tf.num_rows == len(KINDS) + 4


def test_every_metadata_key_round_trips(tmp_path: Path) -> None:
    meta = {k: f"{k} = value, with commas; é" for k in META_KEYS}
    meta.update({"schema_version": "1", "producer": "recorded-kvm", "cpu.features": "pks,pku,vmx", "policy": "hw"})
    rows = [{"seq": 0, "kind": "rdmsr", "vcpu": 0, "level": "l1", "msr": 0x6E1, "exp_result": "gp"}]
    path = write_trace(tmp_path / "meta.parquet", rows, meta)
    raw = pq.ParquetFile(path).schema_arrow.metadata
    assert {k.decode() for k in raw if k.startswith(META_PREFIX.encode())} == {META_PREFIX + k for k in meta}
    assert open_trace(path).meta == meta


def test_trace_without_host_features_assumes_every_feature(tmp_path: Path) -> None:
    from reference_model.host import HOST_FEATURES

    rows = [{"seq": 0, "kind": "rdmsr", "vcpu": 0, "level": "l1", "msr": 0x6E1, "exp_result": "gp"}]
    tf = open_trace(write_trace(tmp_path / "t.parquet", rows, {"producer": "synthetic"}))
    assert tf.host().features == frozenset(HOST_FEATURES)
    assert tf.name == "t"  # no name in the metadata: the file stem


def test_rows_stream_across_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Row indices and seqs are continuous when the file is read in several record batches."""
    rows = [{"seq": 10 * i, "kind": "wrmsr", "vcpu": i % 3, "level": "l1", "msr": 0x6E1, "value": i,
             "exp_result": "ok"} for i in range(11)]
    path = write_trace(tmp_path / "b.parquet", rows, {"producer": "synthetic"})
    monkeypatch.setattr(trace_io, "BATCH_ROWS", 3)
    got = list(open_trace(path).rows())
    assert [g.index for g in got] == list(range(11))
    assert [g.seq for g in got] == [10 * i for i in range(11)]
    assert [(g.event.vcpu, g.event.value) for g in got] == [(i % 3, i) for i in range(11)]  # type: ignore[union-attr]


def test_write_is_atomic(tmp_path: Path) -> None:
    """A write leaves only the final file; a failed write leaves the old file as it was and no temp file."""
    dest = tmp_path / "t.parquet"
    good = [{"seq": 0, "kind": "rdmsr", "vcpu": 0, "level": "l1", "msr": 0x6E1, "exp_result": "gp"}]
    write_trace(dest, good, {"producer": "synthetic"})
    before = dest.read_bytes()
    bad = [{"seq": 0, "kind": "rdmsr", "vcpu": 0, "level": "l1", "msr": 0x6E1, "value": "not a number"}]
    with pytest.raises((pa.ArrowException, TypeError, ValueError)):
        write_trace(dest, bad, {"producer": "synthetic"})
    assert dest.read_bytes() == before
    assert os.listdir(tmp_path) == ["t.parquet"]


# --- pandas and duckdb ----------------------------------------------------------------------

def test_pandas_reads_the_file_as_it_is(built: tuple[Path, list[dict[str, Any]], TraceBuilder]) -> None:
    pd = pytest.importorskip("pandas")
    path, rows, _ = built
    n = len(KINDS)
    df = pd.read_parquet(path)
    assert list(df.columns) == ARROW_SCHEMA.names
    assert len(df) == len(rows)
    assert str(df["seq"].dtype) == "uint64"
    assert isinstance(df["kind"].dtype, pd.CategoricalDtype)  # dictionary strings -> categorical
    assert list(df["kind"].astype(str)[:n]) == list(KINDS)
    assert df["msrs"].iloc[n].tolist() == [0, 2**32 - 1, 2**32 - 2]
    assert df["note"].iloc[n] == every_column_row(0)["note"]
    # The default backend turns a nullable uint64 column into float64, losing the low bits ...
    assert str(df["value"].dtype) == "float64"
    # ... which is why the document recommends the pyarrow backend: exact uint64 and real nulls.
    dfa = pd.read_parquet(path, dtype_backend="pyarrow")
    assert str(dfa["value"].dtype) == "uint64[pyarrow]"
    assert dfa["value"].iloc[n] == U64_TOP
    assert dfa["exp_cr2"].iloc[n + 1] == U64_TOP - 1
    assert pd.isna(dfa["value"].iloc[0])
    present = dfa["present"].iloc[n + 1]
    assert not pd.isna(present) and bool(present) is False


def test_duckdb_reads_the_file_as_it_is(built: tuple[Path, list[dict[str, Any]], TraceBuilder]) -> None:
    duckdb = pytest.importorskip("duckdb", reason="duckdb comes with the test extra: pip install -e '.[test]'")
    path, rows, _ = built
    n = len(KINDS)
    con = duckdb.connect()
    types = dict(con.sql(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM '{path}')").fetchall())
    assert types["seq"] == "UBIGINT" and types["value"] == "UBIGINT" and types["msrs"] == "UINTEGER[]"
    assert types["present"] == "BOOLEAN" and types["kind"] == "VARCHAR"
    got = con.sql(f"SELECT seq, kind, value, msrs, present, exp_values, note FROM '{path}' "
                  f"WHERE value IS NOT NULL AND kind = 'access' ORDER BY seq").fetchall()
    assert got == [
        (n, "access", U64_TOP, [0, 2**32 - 1, 2**32 - 2], True, [0, U64_TOP, U64_TOP - 1], every_column_row(0)["note"]),
        (n + 1, "access", U64_TOP - 1, [0, 2**32 - 1, 2**32 - 3], False, [0, U64_TOP, U64_TOP - 2],
         every_column_row(1)["note"]),
    ]
    counts = dict(con.sql(f"SELECT kind, count(*) FROM '{path}' GROUP BY kind").fetchall())
    assert counts[SNAPSHOT_KIND] == 2 and counts["access"] == 3 and sum(counts.values()) == len(rows)
    meta = dict(con.sql(f"SELECT decode(key), decode(value) FROM parquet_kv_metadata('{path}')").fetchall())
    assert meta["pksdt.name"] == "round-trip" and meta["pksdt.schema_version"] == "1"


def test_notes_come_back_for_the_rows_a_replay_reports(tmp_path: Path) -> None:
    """The streaming pass leaves notes out; the rows a report shows get theirs afterwards."""
    from difftest.engine import replay_trace
    from difftest.trace.builder import TraceBuilder
    from difftest.verdict.profiles import get_profile
    from reference_model.policies import get_policy

    t = TraceBuilder("notes", policy="hw", long_mode=True)
    t.cpuid(pks=True).cr4(pks=True).wrmsr(0x6E1, 0x4).note("AD for key 1")
    t.access(0x40000000, key=1).expect("ok").note("this one diverges")  # AD denies: a #PF, not ok
    path = t.write(tmp_path / "notes.parquet")
    tf = open_trace(path)
    assert all(r.note is None for r in tf.rows(with_notes=False))
    assert tf.notes_for([5, 6, 8]) == {6: "AD for key 1", 8: "this one diverges"}  # row 5: the CR3 flush
    res = replay_trace(open_trace(path), get_policy("hw"), get_profile("strict"))
    assert res.first is not None and res.first.note == "this one diverges"
    assert any(r.note == "AD for key 1" for r in res.context)


def _grouped_trace(path: Path, group_rows: int, write_statistics: bool = True) -> Path:
    """300 rows in row groups of ``group_rows``: accesses, then MSR writes, then accesses again."""
    rows: list[dict[str, Any]] = []
    for i in range(300):
        if 100 <= i < 200:
            rows.append({"seq": i, "kind": "wrmsr", "level": "l1", "vcpu": 0, "msr": 0x6E1, "value": i, "exp_result": "ok"})
        else:
            rows.append({"seq": i, "kind": "access", "level": "l1", "vcpu": 0, "addr": 0x4000_0000 + 8 * i,
                         "access": "read", "cpl": 0, "exp_result": "ok", "note": f"row {i}"})
    table = trace_io.rows_to_table(rows, {"name": "grouped", "producer": "synthetic"})
    pq.write_table(table, path, row_group_size=group_rows, write_statistics=write_statistics)
    return path


def _full_read(path: Path, with_notes: bool) -> list[dict[str, Any]]:
    names = [n for n in pq.ParquetFile(path).schema_arrow.names if with_notes or n != "note"]
    return pq.read_table(path, columns=names).to_pylist()  # type: ignore[no-any-return]


@pytest.mark.parametrize("with_notes", [False, True])
def test_batches_skip_all_null_column_chunks_but_read_the_same(tmp_path: Path, with_notes: bool) -> None:
    """A column chunk whose statistics say every value is null is not decoded; the rows are pyarrow's."""
    path = _grouped_trace(tmp_path / "g.parquet", 100)
    tf = open_trace(path)
    names = [n for n in tf._pf.schema_arrow.names if with_notes or n != "note"]
    plan = tf._read_plan(names)
    assert [groups for groups, _ in plan] == [[0], [1], [2]]
    access_cols, msr_cols = set(plan[0][1]), set(plan[1][1])
    assert {"addr", "access", "cpl"} <= access_cols and not {"msr", "value"} & access_cols
    assert {"msr", "value"} <= msr_cols and not {"addr", "access", "cpl"} & msr_cols
    assert {"seq", "kind", "vcpu", "level"} <= access_cols & msr_cols  # required columns are always read
    batches = list(tf.batches(with_notes=with_notes))
    assert [b.num_rows for b in batches] == [100, 100, 100]  # one batch per row group
    assert all(b.schema.names == names for b in batches)
    assert [r for b in batches for r in b.to_pylist()] == _full_read(path, with_notes)


def test_batches_without_statistics_decode_every_column(tmp_path: Path) -> None:
    path = _grouped_trace(tmp_path / "nostats.parquet", 100, write_statistics=False)
    tf = open_trace(path)
    names = [n for n in tf._pf.schema_arrow.names if n != "note"]
    assert all(read == names for _, read in tf._read_plan(names))
    assert [r for b in tf.batches() for r in b.to_pylist()] == _full_read(path, False)


def test_many_small_row_groups_are_read_together(tmp_path: Path) -> None:
    path = _grouped_trace(tmp_path / "small.parquet", 10)
    tf = open_trace(path)
    plan = tf._read_plan([n for n in tf._pf.schema_arrow.names if n != "note"])
    assert [groups for groups, _ in plan] == [list(range(10)), list(range(10, 20)), list(range(20, 30))]
    assert [r for b in tf.batches() for r in b.to_pylist()] == _full_read(path, False)
