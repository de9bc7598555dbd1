"""The rebase corpus traces/rebase/ (issue 16): what each 2026 policy should give on each trace.

``PREDICTED`` was written from the sources before running anything: the rule each variant
changes (rules.py KVM26.*) and Paolo Bonzini's premise.  ``pass`` means no divergence; otherwise
the rule id the first divergence must cite.  A failing cell is a disagreement between the model
and the sources, to be settled by reading the source again.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from difftest.cli import main
from difftest.engine import compare_trace, replay_trace
from difftest.trace.io import open_trace
from difftest.verdict.profiles import get_profile
from reference_model.policies import get_policy

ROOT = Path(__file__).resolve().parents[1]
REBASE_DIR = ROOT / "traces" / "rebase"
BUILD_SCRIPT = ROOT / "traces" / "build_rebase.py"
POLICIES = ("kvm-rebase", "kvm-rebase-ones", "kvm-rebase-keep", "kvm-rebase-gated")
PASS = "pass"
# trace -> policy -> "pass" | rule of the first divergence
PREDICTED: dict[str, dict[str, str]] = {
    # a host that uses PKS: keep leaves the guest's PKRS in the host at the first exit
    "R1-two-vms-one-pcpu-host-uses-pks": {"kvm-rebase": PASS, "kvm-rebase-ones": PASS,
                                          "kvm-rebase-keep": "KVM26.HOST.OWN", "kvm-rebase-gated": PASS},
    # one control alone: nobody advertises PKS, nothing reaches the host
    "R2-two-vms-one-pcpu-no-entry-ctl": dict.fromkeys(POLICIES, PASS),
    "R3-l1-l2-share-pcpu-host-uses-pks": {"kvm-rebase": PASS, "kvm-rebase-ones": PASS,
                                          "kvm-rebase-keep": "KVM26.HOST.OWN", "kvm-rebase-gated": PASS},
    # a host that never sets CR4.PKS: the host value does not matter; F(PKS) offers nothing
    "R4a-two-vms-one-pcpu-host-cr4-pks-off": {"kvm-rebase": PASS, "kvm-rebase-ones": PASS, "kvm-rebase-keep": PASS,
                                              "kvm-rebase-gated": "KVM26.CAP.SOURCE"},
    "R4b-l1-l2-share-pcpu-host-cr4-pks-off": {"kvm-rebase": PASS, "kvm-rebase-ones": PASS, "kvm-rebase-keep": PASS,
                                              "kvm-rebase-gated": "KVM.CR4.RSVD"},
    "R5-set-cpuid-after-run-l2-active": {"kvm-rebase": PASS, "kvm-rebase-ones": PASS, "kvm-rebase-keep": PASS,
                                         "kvm-rebase-gated": "KVM.CR4.RSVD"},
    "R6-vmx-cap-msrs-hide-pkrs": {"kvm-rebase": PASS, "kvm-rebase-ones": PASS, "kvm-rebase-keep": PASS,
                                  "kvm-rebase-gated": "KVM26.NESTED.CAPS"},
}


def load_build_rebase() -> ModuleType:
    """traces/build_rebase.py as a module (traces/ is not a package)."""
    name = "pksdt_build_rebase"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BUILD_SCRIPT)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


def trace_path(name: str) -> Path:
    return REBASE_DIR / f"{name}.parquet"


@pytest.mark.parametrize(("name", "policy"), [(n, p) for n in PREDICTED for p in POLICIES])
def test_cell(name: str, policy: str) -> None:
    res = replay_trace(open_trace(trace_path(name)), get_policy(policy), get_profile("strict"))
    want = PREDICTED[name][policy]
    if want == PASS:
        assert res.passed, f"{name} under {policy}: {res.first.describe_event() if res.first else ''}"
    else:
        assert res.first is not None, f"{name} under {policy} should diverge at {want}"
        assert res.first.primary_rule == want


def test_every_trace_is_predicted() -> None:
    assert sorted(p.stem for p in REBASE_DIR.glob("*.parquet")) == sorted(PREDICTED)


def test_keep_is_unsafe_only_where_the_host_uses_pks() -> None:
    """compare names KVM26.HOST.OWN on the hosts with CR4.PKS=1 and finds nothing on the others."""
    keep, rebase, strict = get_policy("kvm-rebase-keep"), get_policy("kvm-rebase"), get_profile("strict")
    for name in PREDICTED:
        res = compare_trace(open_trace(trace_path(name)), rebase, keep, strict)
        uses_pks = "host-uses-pks" in name
        assert res.differ is uses_pks, name
        if uses_pks:
            assert res.first is not None and res.first.rule == "KVM26.HOST.OWN", name


def test_compare_command_line_names_the_rule() -> None:
    """The issue's command: exit 1, the rule named in the text output."""
    result = CliRunner().invoke(main, ["compare", "--policy", "kvm-rebase", "--against", "kvm-rebase-keep",
                                       str(REBASE_DIR) + "/"])
    assert result.exit_code == 1, result.output
    assert "KVM26.HOST.OWN" in result.output


def test_zero_and_all_ones_cannot_be_told_apart() -> None:
    ones, rebase, strict = get_policy("kvm-rebase-ones"), get_policy("kvm-rebase"), get_profile("strict")
    for name in PREDICTED:
        assert not compare_trace(open_trace(trace_path(name)), rebase, ones, strict).differ, name


def test_corpus_is_up_to_date(tmp_path: Path) -> None:
    """The committed traces are what traces/build_rebase.py writes."""
    written = load_build_rebase().write_corpus(tmp_path)
    assert sorted(p.stem for p in written) == sorted(PREDICTED)
    for p in written:
        fresh, committed = pq.read_table(p), pq.read_table(REBASE_DIR / p.name)
        assert fresh.equals(committed), f"{p.name} is stale: run python traces/build_rebase.py"
        assert fresh.schema.metadata == committed.schema.metadata, p.name
