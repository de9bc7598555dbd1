"""Trace generation: determinism, preconditions, expectations from the chosen policy, the CLI.

The preconditions checked are the ones the issue names (CPUID before CR4.PKS, paging before
key-checked accesses, mappings before accesses, vmcs12 prepared before VMLAUNCH, L2 events only
while L2 runs), read off the generated rows, not off the generator's own bookkeeping.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from difftest.cli import main
from difftest.engine import replay_trace
from difftest.search.generate import DOMAINS, generate, load_draft
from difftest.trace.io import open_trace
from difftest.verdict.profiles import get_profile
from reference_model.policies import get_policy
from reference_model.registers import (
    CPUID7_ECX_PKS,
    CR0_PG,
    CR4_PKS,
    VMCS_GUEST_IA32_PKRS,
    VMCS_HOST_IA32_PKRS,
    VMCS_VM_ENTRY_CONTROLS,
    VMCS_VM_EXIT_CONTROLS,
)

SEEDS = range(12)


def test_same_seed_same_trace_different_seed_different_trace(tmp_path: Path) -> None:
    for domain in DOMAINS:
        a, b = generate(7, 30, domain), generate(7, 30, domain)
        assert a.rows == b.rows and a.meta == b.meta
        pa, pb = a.write(tmp_path / f"{domain}-a.parquet"), b.write(tmp_path / f"{domain}-b.parquet")
        assert hashlib.sha256(pa.read_bytes()).digest() == hashlib.sha256(pb.read_bytes()).digest()
        assert generate(8, 30, domain).rows != a.rows


@pytest.mark.parametrize("domain", DOMAINS)
def test_event_count_and_valid_file(domain: str, tmp_path: Path) -> None:
    d = generate(3, 25, domain)
    assert d.events == 25
    assert d.setup_rows >= 1
    tf = open_trace(d.write(tmp_path / "t.parquet"))  # schema and every row validated on read
    assert sum(1 for _ in tf.rows()) == len(d.rows)
    assert load_draft(tf.path).rows == d.numbered()


@pytest.mark.parametrize(("domain", "policy"), [("arch", "hw"), ("arch", "kvm-v7"), ("kvm", "kvm-v7"),
                                                ("nested", "kvm-v5"), ("pkvm", "pkvm-pvm-allow5")])
def test_expectations_are_the_policys_outcomes(domain: str, policy: str) -> None:
    """Replaying a generated trace under the policy that generated it finds nothing to report."""
    p = get_policy(policy)
    for seed in SEEDS:
        d = generate(seed, 30, domain, p)
        res = replay_trace(d.as_trace(), p, get_profile("strict"))
        assert res.passed, (seed, [r.describe_event() for r in res.divergences])
        assert res.compared >= d.events // 2  # most events carry an expectation (undefined ARCH.TLB ones do not)


@pytest.mark.parametrize("domain", DOMAINS)
def test_preconditions_hold(domain: str) -> None:
    for seed in SEEDS:
        rows = generate(seed, 40, domain).rows
        cpuid: dict[int, int] = {}
        paging: dict[int, bool] = {}
        mapped: set[tuple[str, int]] = set()
        vmcs12: dict[int, set[object]] = {}
        for r in rows:
            v, kind = r["vcpu"], r["kind"]
            assert kind in ("snapshot", "create_vcpu", "set_cpuid") or r is rows[0] or v in cpuid, f"vCPU {v} used before CPUID"
            if kind == "set_cpuid":
                cpuid[v] = r["cpuid_7_ecx"]
            elif kind == "mov_cr4" and r["value"] & CR4_PKS:
                assert cpuid.get(v, 0) & CPUID7_ECX_PKS, f"seed {seed}: CR4.PKS before CPUID.PKS"
            elif kind in ("reset", "init"):
                paging[v] = False
            elif kind in ("mov_cr0", "set_sregs") and r.get("level") != "l2":
                cr0 = r.get("value", r.get("cr0"))
                if cr0 is not None:
                    paging[v] = bool(cr0 & CR0_PG)
            elif kind == "map":
                mapped.add((r["level"], r["addr"]))
            elif kind in ("access", "emu_access"):
                assert (r["level"], r["addr"]) in mapped, f"seed {seed}: access before mapping"
                assert paging.get(v), f"seed {seed}: key-checked access without paging"
            elif kind in ("vmwrite", "set_msr_bitmap"):
                vmcs12.setdefault(v, set()).add(r.get("field", "bitmap"))
            elif kind == "set_nested_state":
                vmcs12[v] = {"restored"}
            elif kind in ("vmlaunch", "vmresume"):
                have = vmcs12.get(v, set())
                assert "restored" in have or {VMCS_VM_ENTRY_CONTROLS, VMCS_VM_EXIT_CONTROLS, VMCS_GUEST_IA32_PKRS,
                                              VMCS_HOST_IA32_PKRS, "bitmap"} <= have, f"seed {seed}: vmcs12 unprepared"


@pytest.mark.parametrize("domain", DOMAINS)
def test_no_event_is_meaningless_for_the_policy(domain: str) -> None:
    """L2 events only while L2 runs, L1 events only while it does: nothing replays as X86.NA."""
    p = get_policy("hw" if domain == "arch" else "kvm-v7")
    for seed in SEEDS:
        d = generate(seed, 40, domain, p)
        results = [r.get("exp_result") for r in d.rows]
        assert "unsupported" not in results, seed
        if domain == "nested":
            assert any(r["level"] == "l2" for r in generate(seed, 60, domain).rows) or seed % 3, seed


def test_nested_domain_reaches_l2_and_migration() -> None:
    kinds = [r["kind"] for seed in SEEDS for r in generate(seed, 40, "nested").rows]
    for k in ("vmlaunch", "nested_exit", "get_nested_state", "set_nested_state", "smi"):
        assert k in kinds, k


def test_cli_generate(tmp_path: Path) -> None:
    out = tmp_path / "g.parquet"
    res = CliRunner().invoke(main, ["generate", "--seed", "5", "--events", "12", "--domain", "nested",
                                    "--policy", "kvm-v6", "-o", str(out)])
    assert res.exit_code == 0, res.output
    tf = open_trace(out)
    assert tf.meta["policy"] == "kvm-v6" and tf.meta["setup_rows"] == "2"  # KVM_CREATE_VCPU, KVM_SET_CPUID2
    assert load_draft(out).events == 12
    bad = CliRunner().invoke(main, ["generate", "--seed", "5", "--events", "12", "--policy", "no-such", "-o",
                                    str(tmp_path / "x.parquet")])
    assert bad.exit_code == 2 and "no-such" in bad.output
    assert not (tmp_path / "x.parquet").exists()
    usage = CliRunner().invoke(main, ["generate", "--seed", "5", "--events", "0", "-o", str(out)])
    assert usage.exit_code == 2
