"""The fast path (difftest.engine.fast.replay / fast_compare) gives exactly the reference path's answers.

The reference path (replay_rows / compare_trace row by row, ``DIFFTEST_REFERENCE=1``) is the
oracle: for generated traces of every domain, with wrong expectations planted, and for the whole
corpus, under several policies and batch sizes (small batches put the first divergence, its
context and TLB fills across batch boundaries), every field of the results must be equal:
outcomes, divergences (index, fields, rule), masked counts, counters and rule coverage.
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from difftest.cli import main
from difftest.engine import can_use, compare_trace
from difftest.engine.fast import replay as fast_replay
from difftest.engine.fast.replay import REFERENCE_ENV, fast_replay_trace
from difftest.engine.reference import replay_rows
from difftest.report.text import render_compare, render_replay
from difftest.trace import io as trace_io
from difftest.trace.io import open_trace
from difftest.verdict.profiles import get_profile
from difftest.verdict.results import ReplayResult
from reference_model.machine import Machine
from reference_model.policies import get_policy

generate = pytest.importorskip("difftest.search.generate", reason="the trace generator (difftest/search/generate.py) is absent")

ROOT = Path(__file__).resolve().parent.parent
CORPUS = sorted(p for sub in ("arch", "bugs", "real", "qemu") for p in (ROOT / "traces" / sub).glob("*.parquet"))
POLICIES = ("kvm-v7", "hw", "kvm-v4", "kvm-rfc-v1", "pkvm-pvm-allow5")


@pytest.fixture(autouse=True, params=["columns", "alternate"])
def stretch_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every stretch on columns (the fast path proper), or stretches of 7 rows alternating between the
    columns and the model stepped row by row (the switch in both directions, inside and across batches)."""
    monkeypatch.setattr(fast_replay, "STRETCH_MODE", request.param)
    if request.param == "alternate":
        monkeypatch.setattr(fast_replay, "STRETCH", 7)
    return str(request.param)


def reference_replay(path: Path, policy: str, profile: str) -> ReplayResult:
    tf = open_trace(path)
    pol, prof = get_policy(policy), get_profile(profile)
    res = ReplayResult(str(tf.path), tf.name, pol.name, prof.name, meta=dict(tf.meta))
    return replay_rows(tf.rows(with_notes=False), pol.build(tf.host()), prof, res)  # as replay_trace streams


def assert_same_replay(path: Path, policy: str, profile: str = "strict") -> ReplayResult:
    ref = reference_replay(path, policy, profile)
    fast = fast_replay_trace(open_trace(path), get_policy(policy), get_profile(profile))
    assert fast.to_json() == ref.to_json(), f"{path.name} under {policy}"
    assert render_replay(fast, verbose=True) == render_replay(ref, verbose=True)
    return ref


def assert_same_compare(path: Path, a: str, b: str, monkeypatch: pytest.MonkeyPatch, profile: str = "strict") -> None:
    pa, pb, prof = get_policy(a), get_policy(b), get_profile(profile)
    with monkeypatch.context() as m:
        m.setenv(REFERENCE_ENV, "1")
        ref = compare_trace(open_trace(path), pa, pb, prof)
    fast = compare_trace(open_trace(path), pa, pb, prof, engine="fast")  # notes attached, as for the reference
    assert fast.to_json() == ref.to_json(), f"{path.name}: {a} vs {b}"
    for side in ("replay_a", "replay_b"):
        assert getattr(fast, side).to_json() == getattr(ref, side).to_json()
    assert render_compare(fast) == render_compare(ref)


def plant_wrong_expectations(rows: list[dict[str, Any]], seed: int, share: float = 0.04) -> list[dict[str, Any]]:
    """Flip PFEC bits, results or values on a few rows (accesses and others) so that replays diverge."""
    rng = random.Random(seed)
    out = []
    for r in rows:
        r = dict(r)
        if rng.random() < share:
            if r.get("exp_pfec") is not None:
                r["exp_pfec"] ^= 0x20
            elif r.get("exp_value") is not None:
                r["exp_value"] ^= 0x4
            elif r.get("exp_result") == "ok":
                r["exp_result"] = "gp"
            elif r.get("exp_result") == "pf":
                r["exp_result"] = "ok"
        out.append(r)
    return out


def drafts(seeds: tuple[int, ...], events: int) -> Iterator[tuple[str, int, Any]]:
    """(domain, seed, generated kvm-v7 draft) for every domain and seed."""
    for domain in generate.DOMAINS:
        for seed in seeds:
            yield domain, seed, generate.generate(seed, events, domain, get_policy("kvm-v7"))


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Generated traces of every domain: as generated, and with planted divergences."""
    folder = tmp_path_factory.mktemp("gen")
    paths = []
    for domain, seed, draft in drafts((1, 2, 3), 300):
        paths.append(draft.write(folder / f"{domain}-{seed}.parquet"))
        bad = draft.with_rows(plant_wrong_expectations(draft.rows, seed))
        paths.append(bad.write(folder / f"{domain}-{seed}-wrong.parquet"))
    return paths


def test_generated_traces_replay_the_same(generated: list[Path]) -> None:
    diverged = 0
    for path in generated:
        for policy in POLICIES:
            diverged += assert_same_replay(path, policy).divergence_count > 0
    assert diverged > len(generated)  # the planted and the other policies' divergences were exercised


def test_generated_traces_in_small_batches(generated: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of 13 rows: ranges, TLB fills, context and divergences cross batch boundaries."""
    monkeypatch.setattr(trace_io, "BATCH_ROWS", 13)
    for path in generated[1::2]:  # the traces with planted divergences
        for policy in ("kvm-v7", "hw"):
            assert_same_replay(path, policy)


def test_forgetting_the_events_of_plain_stretches_changes_nothing(generated: list[Path],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The events of stretches stepped row by row are forgotten past PLAIN_KEYS distinct ones (memory stays
    bounded on traces of ever new addresses); forgotten at every stretch, the answers are the same."""
    monkeypatch.setattr(fast_replay, "PLAIN_KEYS", 0)
    monkeypatch.setattr(trace_io, "BATCH_ROWS", 29)
    for path in generated[1::2]:
        for policy in ("kvm-v7", "pkvm-pvm-allow5"):
            assert_same_replay(path, policy)


def test_generated_traces_compare_the_same(generated: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    for path in generated:
        for a, b in (("kvm-v7", "kvm-v4"), ("hw", "kvm-v7"), ("kvm-v7", "pkvm-pvm-allow5")):
            assert_same_compare(path, a, b, monkeypatch)
    monkeypatch.setattr(trace_io, "BATCH_ROWS", 11)
    for path in generated[::3]:
        assert_same_compare(path, "kvm-v7", "kvm-rfc-v1", monkeypatch)


@pytest.mark.parametrize("batch_rows", [65_536, 6])
def test_corpus_replays_the_same(batch_rows: int, monkeypatch: pytest.MonkeyPatch) -> None:
    assert CORPUS, "the corpus is missing"
    monkeypatch.setattr(trace_io, "BATCH_ROWS", batch_rows)
    for path in CORPUS:
        tf = open_trace(path)
        profile = tf.meta.get("profile", "strict")
        for policy in dict.fromkeys([*tf.policies(), "kvm-v7", "hw"]):
            assert_same_replay(path, policy, profile)


def test_corpus_compares_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    for path in CORPUS[::3]:
        assert_same_compare(path, "kvm-v7", "kvm-v4", monkeypatch)


def test_qemu_profile_masks_are_counted_the_same() -> None:
    qemu = sorted((ROOT / "traces" / "qemu").glob("*.parquet"))
    if not qemu:
        pytest.skip("no traces/qemu recordings")
    masked = sum(assert_same_replay(p, "hw", "qemu").masked_count for p in qemu)
    assert masked > 0  # the qemu masks applied to some accesses handled on columns


def test_stale_tlb_across_batches(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """ARCH.TLB: fills by accesses on columns, a CR4.PKS toggle without flush, INVLPG and CR3 flushes."""
    from difftest.trace.builder import TraceBuilder

    t = TraceBuilder("tlb", "stale entries", policy="hw")
    t.cpuid(pks=True, pku=True).long_mode().cr4(pks=True).wrmsr(0x6E1, 0x4)
    for i in range(6):
        t.map(0x4000_0000 + i * 0x1000, key=1)
    for rnd in range(3):
        for i in range(6):
            t.access(0x4000_0000 + i * 0x1000).expect_ok()
        t.cr4(pks=rnd % 2 == 1)  # no flush: the filled pages become stale
        t.invlpg(0x4000_1000)
        for i in range(6):
            t.access(0x4000_0000 + i * 0x1000, write=True).expect_ok()
        t.cr3(0x2000)
    path = t.write(tmp_path / "tlb.parquet")
    for rows in (65_536, 3, 4):
        monkeypatch.setattr(trace_io, "BATCH_ROWS", rows)
        res = assert_same_replay(path, "hw")
        assert res.rule_hits["ARCH.TLB"] > 0 and res.divergence_count > 0


def test_accesses_do_not_go_through_the_model(generated: list[Path], monkeypatch: pytest.MonkeyPatch,
                                              stretch_mode: str) -> None:
    """The fast path is really taken: most accesses of a trace file never reach Machine.step."""
    if stretch_mode != "columns":
        pytest.skip("in this mode the model steps every other stretch row by row, by design")
    steps = {"n": 0}
    from reference_model.kvm import KvmMachine

    original = KvmMachine.step

    @functools.wraps(original)  # keeps the name, so the fast path still trusts the model (model_is_pristine)
    def counting(self: Machine, ev: Any) -> Any:
        steps["n"] += 1
        return original(self, ev)  # type: ignore[arg-type]

    monkeypatch.setattr(KvmMachine, "step", counting)
    path = next(p for p in generated if p.name == "kvm-1.parquet")
    tf = open_trace(path)
    assert can_use(tf)
    res = fast_replay_trace(tf, get_policy("kvm-v7"), get_profile("strict"))
    accesses = sum(1 for r in open_trace(path).rows() if r.event is not None and r.event.kind == "access")
    assert accesses > 20
    assert steps["n"] <= res.events - accesses // 2


def test_a_patched_model_gets_the_reference_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A rule broken by monkeypatching (tests/test_mutation.py) must reach every access: no fast path then."""
    from reference_model import cpu as cpu_mod

    tf = open_trace(CORPUS[0])
    assert can_use(tf)
    monkeypatch.setattr(cpu_mod, "check_access", lambda *args: None)
    assert not can_use(tf)


def test_cli_reference_flag_gives_the_same_json(monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(ROOT / "traces" / "arch" / "ARCH.TLB-cr4-pks-flush.parquet")
    monkeypatch.delenv(REFERENCE_ENV, raising=False)
    fast = CliRunner().invoke(main, ["replay", path, "--json"])
    monkeypatch.setenv(REFERENCE_ENV, "")  # restored after the test; --reference sets it
    ref = CliRunner().invoke(main, ["--reference", "replay", path, "--json"])
    assert fast_replay.reference_only()
    assert fast.exit_code == ref.exit_code
    assert json.loads(fast.output) == json.loads(ref.output)
