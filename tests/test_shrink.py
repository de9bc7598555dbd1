"""Shrinking: keeps the first divergence's rule and event kind, respects the prologue, terminates.

The scenarios are the sources' (sources/kvm_pks_series.md §11): B5 (v4 does not sync the host
field on a VMCS switch, so the host runs with vmcs02's stale HOST_IA32_PKRS after the nested
exit: KVM.HOST) and B12 (v5 clears PKRS on INIT, v7 preserves it), padded with events that have
nothing to do with them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from difftest import TraceBuilder
from difftest.cli import main
from difftest.search.generate import Draft, generate, load_draft, refill_expectations
from difftest.search.shrink import Goal, drop_vcpus, shrink, simplify_values, to_python
from reference_model.policies import get_policy
from reference_model.registers import MSR_IA32_PKRS, VM_EXIT_LOAD_IA32_PKRS, VMCS_VM_EXIT_CONTROLS

V4, V5, V7 = get_policy("kvm-v4"), get_policy("kvm-v5"), get_policy("kvm-v7")
ROOT = Path(__file__).resolve().parent.parent


def padded_b5() -> Draft:
    """B5 with noise: host PKRS A, VMLAUNCH, an L2 exit; plus unrelated MSR, map and access events."""
    t = TraceBuilder("b5-padded", "B5 with padding", policy="kvm-v7")
    t.cpuid(pks=True, vmx=True).end_setup()
    t.set_msrs({0xC0000081: 0x1234})
    t.map(0x40000000, key=3)
    t.wrmsr(0xC0000082, 0xFFFF)
    t.host_pkrs(0x0000_0C0C)
    t.vmwrite(VMCS_VM_EXIT_CONTROLS, VM_EXIT_LOAD_IA32_PKRS)
    t.rdmsr(0xC0000082)
    t.get_msrs(MSR_IA32_PKRS)
    t.vmlaunch()
    t.on(level="l2").nested_exit(reason=1)
    t.snapshot("vcpu0.exit_pkrs", 0)  # the value is refilled from v7 below
    t.on(level="l1").rdmsr(0xC0000081)
    t.get_msrs(0xC0000081)
    d = Draft([{k: v for k, v in r.items() if v is not None} for r in t.rows()], t.metadata())
    return refill_expectations(d, V7)


def test_b5_shrinks_to_its_core_and_keeps_the_kind() -> None:
    d = padded_b5()
    goal = Goal(V4, V7)
    before = goal.first(d)
    assert before is not None and before[0].rule == "KVM.HOST"  # SPEC KVM.HOST, the rule B5 breaks
    res = shrink(d, goal)
    assert res.kind == before[0]
    assert goal.first(res.draft) is not None and goal.first(res.draft)[0] == before[0]  # type: ignore[index]
    kinds = [r["kind"] for r in res.draft.rows]
    # the sources' sequence: host_pkrs=A, VMLAUNCH, an exit from L2; CPUID is the kept prologue
    assert kinds[0] == "set_cpuid"
    assert "host_pkrs" in kinds and "vmlaunch" in kinds
    assert res.draft.events <= 5 < d.events
    assert res.draft.rows[0] == d.rows[0]
    # the minimal trace states B's (v7's) outcomes: it replays clean under v7
    assert Goal(V7).first(res.draft) is None


def test_prologue_is_never_touched() -> None:
    t = TraceBuilder("p", "prologue kept")
    t.cpuid(pks=True, pku=True).wrmsr(0xC0000081, 0x77).host_pkrs(0x30).end_setup()  # noise inside the prologue
    t.wrmsr(MSR_IA32_PKRS, 0x8).wrmsr(0xC0000082, 1).event("init", level="host").rdmsr(MSR_IA32_PKRS)
    d = refill_expectations(Draft([{k: v for k, v in r.items() if v is not None} for r in t.rows()], t.metadata()), V7)
    res = shrink(d, Goal(V5, V7))
    assert res.draft.rows[:3] == d.rows[:3]
    assert res.draft.setup_rows == 3
    kinds = [r["kind"] for r in res.draft.rows[3:]]
    assert "init" in kinds and "wrmsr" in kinds  # B12: a PKRS write, then INIT
    assert all(r.get("msr") != 0xC0000082 for r in res.draft.rows)


def test_single_policy_mode_keeps_the_divergence_from_the_expectations() -> None:
    d = padded_b5()  # expectations are v7's
    goal = Goal(V4)
    first = goal.first(d)
    assert first is not None
    res = shrink(d, goal)
    assert goal.first(res.draft) is not None
    assert goal.first(res.draft)[0] == first[0]  # type: ignore[index]
    assert res.draft.events < d.events


def test_history_and_cap_terminate_with_a_checked_result() -> None:
    d = padded_b5()
    goal = Goal(V4, V7)
    res = shrink(d, goal, max_candidates=3)
    assert res.capped and res.tried == 3
    again = goal.first(res.draft)
    assert again is not None and again[0] == res.kind
    full = shrink(d, goal)
    assert not full.capped and full.tried < 4000  # the history stops retrying candidates


def test_value_and_vcpu_passes() -> None:
    d = Draft([{"kind": "set_cpuid", "vcpu": 0, "level": "host", "cpuid_7_ecx": 0x8000_0008},
               {"kind": "wrmsr", "vcpu": 2, "level": "l1", "msr": MSR_IA32_PKRS, "value": 0x14}], {"setup_rows": "1"})
    simpler = [c.rows[1]["value"] for c in simplify_values(d)]
    assert simpler == [0, 0x4, 0x10]  # 0, then each single set bit; the prologue's CPUID is not simplified
    assert all(c.rows[0] == d.rows[0] for c in simplify_values(d))
    cands = list(drop_vcpus(d))
    assert [r["vcpu"] for r in cands[0].rows] == [0]  # vCPU 2 dropped
    assert [r["vcpu"] for r in cands[-1].rows] == [0, 1]  # or renumbered densely


def test_python_snippet_rebuilds_the_trace(tmp_path: Path) -> None:
    d = generate(11, 30, "nested", V7)  # every kind of column: lists, flags, snapshots, several vCPUs
    out = tmp_path / "again.parquet"
    code = to_python(d, str(out))
    assert code.startswith("from difftest import TraceBuilder")
    exec(compile(code, "<snippet>", "exec"), {})
    assert load_draft(out).rows == d.numbered()
    assert load_draft(out).meta.get("setup_rows") == d.meta.get("setup_rows")


def test_cli_shrink_exit_codes(tmp_path: Path) -> None:
    src = padded_b5().write(tmp_path / "b5.parquet")
    out = tmp_path / "min.parquet"
    r = CliRunner().invoke(main, ["shrink", str(src), "--policy", "kvm-v4", "--against", "kvm-v7", "-o", str(out)])
    assert r.exit_code == 0, r.output  # the job was done (issue 20: exit 1 is for divergences)
    assert "KVM.HOST" in r.output and "t = TraceBuilder(" in r.output
    assert load_draft(out).events <= 5
    same = CliRunner().invoke(main, ["shrink", str(src), "--policy", "kvm-v7", "--against", "kvm-v7",
                                     "-o", str(tmp_path / "none.parquet")])
    assert same.exit_code == 0 and not (tmp_path / "none.parquet").exists()
    missing = CliRunner().invoke(main, ["shrink", str(tmp_path / "nope.parquet"), "--policy", "kvm-v4", "-o", str(out)])
    assert missing.exit_code == 2 and "nope.parquet" in missing.output
    bad = CliRunner().invoke(main, ["shrink", str(src), "--policy", "kvm-v99", "-o", str(out)])
    assert bad.exit_code == 2


def test_checkpoints_do_not_change_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """Resuming candidates from pickled machines (every 3 rows) shrinks to exactly what replaying from scratch does."""
    from difftest.search import shrink as shrink_mod

    for domain, seed in (("kvm", 1), ("nested", 2), ("arch", 3), ("pkvm", 4)):
        d = generate(seed, 120, domain, V7)
        goal = Goal(V4)
        if goal.first(d) is None:
            rows = [dict(r) for r in d.rows]
            i = next(i for i in range(len(rows) // 2, len(rows)) if rows[i].get("exp_result") == "ok")
            rows[i]["exp_result"] = "gp"  # a wrong expectation in the middle
            d = d.with_rows(rows)
        monkeypatch.setattr(shrink_mod, "CHECKPOINT_ROWS", 3)
        resumed = shrink(d, goal)
        monkeypatch.setattr(shrink_mod, "CHECKPOINT_ROWS", 10**9)
        scratch = shrink(d, goal)
        assert resumed.draft.rows == scratch.draft.rows, domain
        assert (resumed.kind, resumed.index, resumed.tried) == (scratch.kind, scratch.index, scratch.tried)


def test_program_uses_the_builders_named_methods(tmp_path: Path) -> None:
    """The printed program says t.wrmsr(...), t.vmlaunch() ... as a person would, and still rebuilds the trace."""
    d = generate(12, 60, "nested", V7)
    out = tmp_path / "named.parquet"
    code = to_python(d, str(out))
    calls = [line for line in code.splitlines() if line.startswith("t.")]
    generic = [c for c in calls if ".event(" in c]
    assert len(generic) * 4 < len(calls), generic  # most rows are written with a named method
    assert any(".wrmsr(" in c for c in calls) and any(".vmlaunch(" in c or ".vmresume(" in c for c in calls)
    exec(compile(code, "<snippet>", "exec"), {})
    assert load_draft(out).rows == d.numbered()


def test_b16_keeps_its_nested_entry_and_diverges_under_kvm_ctl() -> None:
    """B16 (sources/kvm_pks_series.md §11: CPUID change while vmcs02 is loaded) must not drift to a trace
    without nesting, nor end on a snapshot of a vCPU no event creates (issue 21)."""
    from difftest.search.shrink import passing_policies, snapshots_live

    d = load_draft(ROOT / "traces" / "bugs" / "B16-cpuid-while-l2-active.parquet")
    goal = Goal(V7)
    goal = Goal(V7, None, None, passing_policies(d, goal))
    assert [p.name for p in goal.keep_passing] == ["kvm-v7r"]  # the trace's metadata names the policy that passes
    res = shrink(d, goal)
    body = res.draft.rows[res.draft.setup_rows:]
    assert res.kind.rule == "KVM.CTL" and res.kind.kind == "snapshot"
    assert any(r["kind"] in ("vmlaunch", "vmresume", "set_nested_state") for r in body), body
    assert snapshots_live(res.draft)
    assert res.trigger["path"] == "vcpu1.vmcs01.exit_ctls.load_pkrs"
    assert goal.first(res.draft) is not None and goal.passes(get_policy("kvm-v7r"), res.draft)
    assert [p.name for p in res.passes][:4] == ["delete blocks", "delete vCPUs", "delete nesting levels",
                                                 "delete single events"]
    assert res.passes[-1].name == "simplify values"
    assert sum(p.shrinks for p in res.passes) >= 1 and all(p.calls >= p.shrinks for p in res.passes)


def test_cli_shrink_verbose_prints_pass_statistics_and_a_named_program(tmp_path: Path) -> None:
    out = tmp_path / "b16.parquet"
    r = CliRunner().invoke(main, ["shrink", str(ROOT / "traces" / "bugs" / "B16-cpuid-while-l2-active.parquet"),
                                  "--policy", "kvm-v7", "-o", str(out), "-v"])
    assert r.exit_code == 0, r.output  # shrink did its job (issue 20: exit 0, not 1)
    assert "kept passing: kvm-v7r" in r.output
    assert [line.split(":")[0].strip() for line in r.output.splitlines() if line.strip().startswith("pass ")] == [
        "pass delete blocks", "pass delete vCPUs", "pass delete nesting levels", "pass delete single events",
        "pass delete redundant writes", "pass simplify values"]
    program = r.output[r.output.index("from difftest import TraceBuilder"):]
    assert ".set_nested_state(" in program and "t.event(" not in program
    exec(compile(program, "<shrunk>", "exec"), {})  # runnable as printed: it rewrites the shrunk trace
    assert load_draft(out).rows
