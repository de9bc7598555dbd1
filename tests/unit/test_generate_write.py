"""The generator's faster paths give what the plain ones gave.

A generated draft shares its row dicts (one per distinct event and outcome) and is written by
converting each distinct row once and gathering the columns; a menu is drawn from by bisecting its
running sums.  The expectations here come from the plain paths: the table is built row by row and
column by column from the definition (a missing key is null; ``seq`` is the position), and the
action drawn is the one the walk subtracting weights one by one picks.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from difftest.search.generate import DOMAINS, Generator, _Menu, generate
from difftest.trace.io import rows_to_table, write_table_atomic
from difftest.trace.schema import ARROW_SCHEMA, META_PREFIX, SCHEMA_VERSION
from reference_model.policies import get_policy


def table_row_by_row(rows: list[dict[str, Any]], meta: dict[str, str]) -> pa.Table:
    """The trace table by the definition: each column asks every row (numbered 0, 1, ...) for its value."""
    numbered = [{**r, "seq": i} for i, r in enumerate(rows)]
    arrays = []
    for f in ARROW_SCHEMA:
        values = [r.get(f.name) for r in numbered]
        if pa.types.is_dictionary(f.type):
            arrays.append(pa.array(values, type=pa.string()).dictionary_encode())
        else:
            arrays.append(pa.array(values, type=f.type))
    md = {f"{META_PREFIX}{k}": str(v) for k, v in meta.items()}
    md.setdefault(f"{META_PREFIX}schema_version", SCHEMA_VERSION)
    return pa.Table.from_arrays(arrays, schema=ARROW_SCHEMA.with_metadata(md))


@pytest.mark.parametrize("domain", DOMAINS)
def test_draft_write_gives_the_row_by_row_table(domain: str, tmp_path: Path) -> None:
    for seed in (1, 2):
        d = generate(seed, 400, domain)
        assert len({id(r) for r in d.rows}) < len(d.rows)  # rows repeat as shared dicts: the gather is exercised
        want = table_row_by_row(d.rows, d.meta)
        for got in (rows_to_table(d.rows, d.meta, renumber=True, shared=True),
                    rows_to_table(d.numbered(), d.meta), rows_to_table(d.rows, d.meta, renumber=True)):
            assert got.schema.equals(want.schema, check_metadata=True)
            assert got.equals(want)
            for g, w in zip(got.columns, want.columns, strict=True):  # dictionaries in the same order too
                assert g.combine_chunks().to_pylist() == w.combine_chunks().to_pylist()
                if pa.types.is_dictionary(w.type):
                    assert g.combine_chunks().dictionary.equals(w.combine_chunks().dictionary)
        written = d.write(tmp_path / f"{domain}-{seed}.parquet")
        reference = write_table_atomic(want, tmp_path / f"{domain}-{seed}-ref.parquet")
        a, b = pq.read_table(written), pq.read_table(reference)
        assert a.equals(b) and a.schema.equals(b.schema, check_metadata=True)
        assert written.read_bytes() == reference.read_bytes()


def test_shared_rows_table_edge_cases() -> None:
    meta = {"producer": "synthetic", "name": "t"}
    assert rows_to_table([], meta, renumber=True, shared=True).equals(table_row_by_row([], meta))
    a = {"kind": "rdmsr", "vcpu": 0, "level": "l1", "msr": 0x6E1, "exp_result": "gp"}
    b = {"kind": "snapshot", "vcpu": 1, "level": "host", "path": "vcpu1.pkrs", "exp_value": 4}
    rows = [b, a, a, b, a]  # the first distinct row is not the first kind seen in the dictionary of 'level'
    got = rows_to_table(rows, meta, renumber=True, shared=True)
    assert got.equals(table_row_by_row(rows, meta))
    assert got.column("kind").combine_chunks().dictionary.to_pylist() == ["snapshot", "rdmsr"]
    assert got.column("seq").to_pylist() == [0, 1, 2, 3, 4]


def _walk(weights: list[float], x: float) -> int:
    """The index Generator.pick's walk chooses for the draw ``x`` (weights subtracted one by one)."""
    for i, w in enumerate(weights):
        x -= w
        if x < 0:
            return i
    return len(weights) - 1


class _FixedDraw(random.Random):
    def __init__(self, u: float) -> None:
        super().__init__(0)
        self.u = u

    def random(self) -> float:
        return self.u


@pytest.mark.parametrize("domain", ["kvm", "nested", "arch", "pkvm", "pcpu"])
def test_choose_draws_what_pick_draws(domain: str) -> None:
    g = Generator(3, 100, domain, get_policy("kvm-v7"))
    g.add_vcpu(0)
    build = {"arch": g.arch_menu, "kvm": g.kvm_menu, "nested": g.nested_menu, "pkvm": g.pkvm_menu,
             "pcpu": g.pcpu_menu}[domain]
    items = build()
    menu = _Menu.of(items)
    weights = [w for w, _ in items]
    total = sum(weights)
    # draws on, just below and just above every running sum (where rounding could split the two), and random ones
    draws = [0.0, math.nextafter(1.0, 0.0)] + [random.Random(i).random() for i in range(2000)]
    running = 0.0
    for w in weights:
        running += w
        for x in (running, math.nextafter(running, 0.0), math.nextafter(running, math.inf), running * (1 - 1e-12)):
            draws.append(min(x / total, math.nextafter(1.0, 0.0)))
    for u in draws:
        g.rng = _FixedDraw(u)
        assert g.choose(menu) is items[_walk(weights, u * total)][1], u
