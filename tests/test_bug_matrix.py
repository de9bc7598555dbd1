"""The known-bug corpus traces/bugs/ and its scenario x policy matrix (issue 3, items 6 and 7).

traces/bugs/matrix.toml says, for every trace and every policy, what the sources predict
(sources/kvm_pks_series.md §10-§12, seeds 001 and 004): ``pass``, ``diverge`` at a given row with a
given rule id, or ``na`` with the reason.  The cells were written from the sources, not from the
model; a failing cell here is a disagreement between the model and the sources to be resolved by
reading the source again, never by editing the matrix to match.
"""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pyarrow.parquet as pq
import pytest
import tomllib

from difftest.engine import replay_trace
from difftest.trace.io import TraceRow, open_trace
from difftest.verdict.profiles import get_profile
from difftest.verdict.results import ReplayResult
from reference_model.machine import Machine
from reference_model.policies import get_policy
from reference_model.rules import RULES

ROOT = Path(__file__).resolve().parents[1]
BUGS_DIR = ROOT / "traces" / "bugs"
BUILD_SCRIPT = ROOT / "traces" / "build_bugs.py"
MATRIX = tomllib.loads((BUGS_DIR / "matrix.toml").read_text(encoding="utf-8"))
POLICY_NAMES: list[str] = MATRIX["policies"]
CELLS: dict[str, dict[str, dict[str, Any]]] = MATRIX["cells"]
EXTRA: dict[str, dict[str, dict[str, Any]]] = MATRIX.get("extra", {})

# Every scenario issue 3 item 6 (and the task brief) names, as the id its trace's file name starts with.
REQUIRED_IDS = (
    "B1", "B2", "B3", "B4a", "B4b", "B5", "B6", "B7", "B8", "B9", "B10", "B11a", "B11b", "B11c", "B12",
    "B13", "B14", "B15", "B16", "B17", "B18", "D1", "D3", "D5", "P1", "P2", "P3",
)
# Sub-cases the sources distinguish, by a word of the trace name.
REQUIRED_VARIANTS = {
    "B5": ("host-pkrs-nested-exit", "host-pkrs-change"),
    "B10": ("merged-role-set-pks", "mirror"),
    "B12": ("init", "reset"),
}
# The pKVM MSR-policy cases (seed 004): a word each trace name must contain.
REQUIRED_PKVM = ("write-only", "side-effect", "pkrs-before-start", "pkrs-after-start", "cpuid-after-start",
                 "xss-reset")


def load_build_bugs() -> ModuleType:
    """traces/build_bugs.py as a module (traces/ is not a package)."""
    name = "pksdt_build_bugs"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BUILD_SCRIPT)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def trace_path(name: str) -> Path:
    return BUGS_DIR / f"{name}.parquet"


def replay(name: str, policy_name: str, observer: Any = None) -> ReplayResult:
    try:
        policy = get_policy(policy_name)
    except KeyError:
        pytest.fail(f"policy {policy_name!r} of the bug matrix is not registered")
    return replay_trace(open_trace(trace_path(name)), policy, get_profile("strict"), observer)


def describe(result: ReplayResult) -> str:
    first = result.first
    if first is None:
        return "no divergence"
    diffs = "; ".join(d.render() for d in first.diffs)
    return f"first divergence at row {first.index} ({first.describe_event()}), rule {first.primary_rule}: {diffs}"


# Cells where the model disagrees with the sources, reported to the lead (strict xfail: a fix turns
# them into failures until the entry is removed).  The matrix itself stays as the sources say.
KNOWN_MODEL_DISAGREEMENTS: dict[tuple[str, str], str] = {}

LIVE_CELLS = [
    pytest.param(name, policy, id=f"{name}@{policy}",
                 marks=[pytest.mark.xfail(reason=KNOWN_MODEL_DISAGREEMENTS[(name, policy)], strict=True)]
                 if (name, policy) in KNOWN_MODEL_DISAGREEMENTS else [])
    for name, row in CELLS.items() for policy, cell in row.items() if cell["verdict"] != "na"
]


@pytest.mark.parametrize(("name", "policy"), LIVE_CELLS)
def test_cell(name: str, policy: str) -> None:
    cell = CELLS[name][policy]
    result = replay(name, policy)
    if cell["verdict"] == "pass":
        assert result.passed, f"{name} under {policy}: expected pass, got {describe(result)}"
        return
    first = result.first
    assert first is not None, f"{name} under {policy}: expected a divergence at row {cell['event']} ({cell['why']}), got none"
    assert (first.index, first.primary_rule) == (cell["event"], cell["rule"]), (
        f"{name} under {policy}: expected the first divergence at row {cell['event']} naming {cell['rule']} "
        f"({cell['why']}), got {describe(result)}")


PKRS_VMREADS = [(name, policy, count) for name, extra in EXTRA.items()
                for policy, count in extra.get("pkrs_vmreads", {}).items() if policy != "why"]


@pytest.mark.parametrize(("name", "policy", "expected"), PKRS_VMREADS, ids=[f"{n}@{p}" for n, p, _ in PKRS_VMREADS])
def test_pkrs_vmread_pattern(name: str, policy: str, expected: int) -> None:
    """P3: VMREADs of the guest PKRS field over the three host reads (rows 7-9)."""
    after: dict[int, int] = {}

    def observe(row: TraceRow, _rr: object, machine: Machine) -> None:
        after[row.index] = Counter(machine.counters)["vmread.GUEST_IA32_PKRS"]

    replay(name, policy, observe)
    assert after[9] - after[6] == expected, (
        f"{name} under {policy}: {after[9] - after[6]} VMREADs of GUEST_IA32_PKRS over rows 7-9, expected "
        f"{expected} ({EXTRA[name]['pkrs_vmreads']['why']})")


# --- the matrix and the corpus are complete and consistent -------------------------------------

def trace_names() -> list[str]:
    return sorted(p.stem for p in BUGS_DIR.glob("*.parquet"))


def test_every_issue_scenario_has_a_trace() -> None:
    names = trace_names()
    ids = {n.split("-", 1)[0] for n in names}
    missing = [i for i in REQUIRED_IDS if i not in ids]
    assert not missing, f"scenarios without a trace in traces/bugs/: {missing}"
    for sid, words in REQUIRED_VARIANTS.items():
        own = [n for n in names if n.split("-", 1)[0] == sid or n.startswith(f"{sid}-")]
        for word in words:
            assert any(word in n for n in own), f"{sid}: no trace for the sub-case {word!r} (have {own})"
    pkvm = [n for n in names if n.startswith("PKVM")]
    for word in REQUIRED_PKVM:
        assert any(word in n for n in pkvm), f"no pKVM MSR-policy trace for {word!r} (have {pkvm})"


def test_matrix_covers_every_trace_and_policy() -> None:
    assert sorted(CELLS) == trace_names()
    for key in KNOWN_MODEL_DISAGREEMENTS:
        assert CELLS[key[0]][key[1]]["verdict"] != "na", key
    assert len(set(POLICY_NAMES)) == len(POLICY_NAMES) == 14
    for name, row in CELLS.items():
        assert list(row) == POLICY_NAMES, f"{name}: cells {list(row)} != policies {POLICY_NAMES}"


def test_matrix_cells_are_well_formed() -> None:
    """Each diverge cell names a row of its trace that carries that rule; every non-pass cell says why."""
    for name, row in CELLS.items():
        table = pq.read_table(trace_path(name), columns=["exp_rule"]).column("exp_rule").to_pylist()
        for policy, cell in row.items():
            where = f"{name} / {policy}"
            verdict = cell["verdict"]
            assert verdict in ("pass", "diverge", "na"), where
            if verdict == "pass":
                assert set(cell) == {"verdict"}, where
                continue
            assert cell.get("why"), f"{where}: no why"
            if verdict == "diverge":
                event, rule = cell["event"], cell["rule"]
                assert 0 <= event < len(table), where
                assert table[event] == rule, f"{where}: row {event} cites {table[event]}, the cell says {rule}"
                assert rule in RULES, where


def test_traces_cite_spec_rules_and_sources() -> None:
    for name in trace_names():
        tf = open_trace(trace_path(name))
        assert tf.meta.get("policy") in POLICY_NAMES, name
        assert tf.meta.get("source"), name
        ref = tf.meta["policy"]
        cell = CELLS[name][ref]
        assert cell["verdict"] == "pass", f"{name}: its reference policy {ref} must pass in the matrix"
        rules = pq.read_table(trace_path(name), columns=["exp_rule"]).column("exp_rule").to_pylist()
        cited = [r for r in rules if r is not None]
        assert cited and all(r in RULES for r in cited), name
        assert len(rules) <= 20, f"{name}: {len(rules)} rows; keep bug traces short"


def test_v7_failures_are_documented() -> None:
    """Where kvm-v7 itself diverges, the trace's notes say so and its policy is not kvm-v7."""
    for name, row in CELLS.items():
        if row["kvm-v7"]["verdict"] == "diverge":
            meta = open_trace(trace_path(name)).meta
            assert meta["policy"] != "kvm-v7", name
            assert "v7" in meta.get("notes", ""), name


def test_corpus_is_up_to_date(tmp_path: Path) -> None:
    """The committed traces are what traces/build_bugs.py writes."""
    written = load_build_bugs().write_corpus(tmp_path)
    assert sorted(p.stem for p in written) == trace_names()
    for p in written:
        fresh, committed = pq.read_table(p), pq.read_table(BUGS_DIR / p.name)
        assert fresh.equals(committed), f"{p.name} is stale: run python traces/build_bugs.py"
        assert fresh.schema.metadata == committed.schema.metadata, p.name
