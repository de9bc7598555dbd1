"""The Python API a test suite uses: ``difftest.engine.reference`` on a path, an opened trace or a builder.

Expectations come from the architecture (SPEC ARCH.RIGHTS: WD blocks a supervisor write when
CR0.WP=1, PFEC 0x23 = P|W|PK) and from the bundled B16 trace (a documented kvm-v7 bug that
kvm-v7r fixes), never from the code under test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import difftest
from difftest import InputError, TraceBuilder, open_trace
from reference_model.policies import get_policy

ROOT = Path(__file__).resolve().parent.parent
B16 = ROOT / "traces" / "bugs" / "B16-cpuid-while-l2-active.parquet"
SUP = 0x4000_0000


def wd_builder(expected_pfec: int = 0x23) -> TraceBuilder:
    t = TraceBuilder("wd-write", "WD blocks a supervisor write with WP=1", policy="hw", long_mode=True)
    t.cpuid(pks=True).cr4(pks=True).wrmsr(0x6E1, 0x8)  # WD for key 1
    t.access(SUP, key=1, write=True).expect_pf(expected_pfec, rule="ARCH.RIGHTS")
    return t


def test_builder_replays_in_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    res = difftest.replay(wd_builder(), policy="hw")
    assert res.passed and res.compared == 1
    res.check()  # no divergence: nothing raised
    assert list(tmp_path.iterdir()) == []  # in memory: nothing written


def test_check_raises_with_the_text_report() -> None:
    res = difftest.replay(wd_builder(expected_pfec=0x03), policy="hw")  # a wrong expectation: PK is missing
    with pytest.raises(AssertionError) as info:
        res.check()
    text = str(info.value)
    assert "first divergence at event" in text
    assert "ARCH.RIGHTS" in text
    assert "pfec: expected 0x3, got 0x23" in text


def test_path_and_opened_trace_and_names() -> None:
    by_path = difftest.replay(str(B16), policy="kvm-v7")
    by_file = difftest.replay(open_trace(B16), policy=get_policy("kvm-v7"), profile="strict")
    assert not by_path.passed and by_path.first is not None
    assert (by_path.first.index, by_path.first.primary_rule) == (by_file.first.index, by_file.first.primary_rule)
    assert by_path.first.primary_rule == "KVM.CTL"  # B16: the controls change on vmcs02 only
    assert difftest.replay(B16, policy="kvm-v7r").passed  # the v7 review's fix
    assert difftest.replay(B16).policy == "kvm-v7r"  # no policy given: the trace's own


def test_bad_names_and_inputs_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown policy 'kvm-v99'"):
        difftest.replay(B16, policy="kvm-v99")
    with pytest.raises(ValueError, match="unknown profile"):
        difftest.replay(B16, policy="hw", profile="nope")
    with pytest.raises(InputError, match="no such file"):
        difftest.replay(tmp_path / "missing.parquet")
    with pytest.raises(TypeError, match="TraceBuilder"):
        difftest.replay(42)  # type: ignore[arg-type]
