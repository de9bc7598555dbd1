"""``difftest matrix``: cells, departures from hw, their explanation by each hypervisor's own rules.

The expectations are the definitions in the issue (a departure is explained when its first
divergent rule is one of that hypervisor's documented rules, anything else is a finding; exit 0
only when every departure is explained) applied to traces whose expectations come from the sources.
"""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from difftest.cli import main
from difftest.report.matrix import Cell, Departure, build_matrix, judge
from difftest.trace.io import find_traces, open_trace
from reference_model.policies import Policy, get_policy
from reference_model.xen import XenMachine

ROOT = Path(__file__).resolve().parent.parent
HYP = [str(ROOT / "traces" / d) for d in ("pkvm", "pvm", "xen")]


def traces(*names: str) -> list:
    return [open_trace(p) for p in find_traces(HYP) if p.stem in names] if names else [open_trace(p) for p in find_traces(HYP)]


def test_departure_explained_by_own_family() -> None:
    m = build_matrix(traces("XEN-WALK-pk-beside-us-fault"), [get_policy("hw"), get_policy("xen-hvm")])
    cell = m.rows[0].cells["xen-hvm"]
    assert m.rows[0].cells["hw"].verdict == "agrees"
    assert cell.departure and cell.explained and cell.rule == "XEN.WALK"
    assert m.exit_code == 0


def test_departure_without_a_family_is_a_finding() -> None:
    anonymous = Policy("xen-undocumented", "Xen without its rule family", "test", lambda k, h: XenMachine(h))
    m = build_matrix(traces("XEN-WALK-pk-beside-us-fault"), [get_policy("hw"), anonymous])
    assert [f.policy for f in m.findings] == ["xen-undocumented"]
    assert m.exit_code == 1


def test_na_is_no_departure() -> None:
    # a KVM-ioctl trace: the bare CPU has no verdict, so nothing departs from it
    m = build_matrix(traces("PKVM-PV.DENY-unlisted-calls"), [get_policy("hw"), get_policy("xen-hvm"), get_policy("pkvm-pvm")])
    cells = m.rows[0].cells
    assert cells["hw"].verdict == "n/a" and cells["xen-hvm"].verdict == "n/a"
    assert cells["pkvm-pvm"].verdict == "agrees" and not cells["pkvm-pvm"].departure


def test_departure_is_a_behavioural_difference() -> None:
    ref = Cell("diverges", rule="ARCH.CPUID", row=4, actual="ok value=0x20")
    cell = Cell("agrees")
    judge(cell, ref, None, "PVM")  # no row where the outcomes differ: only a profile mask told them apart
    assert not cell.departure
    judge(cell, ref, Departure(4, "ARCH.CPUID", "ok value=0x0"), "PVM")
    assert cell.departure and not cell.explained and cell.rule == "ARCH.CPUID"  # not PVM's own rule: a finding
    other = Cell("agrees")
    judge(other, ref, Departure(4, "PVM.CPUID", "ok value=0x0"), "PVM")
    assert other.departure and other.explained


def test_host_invisible_outcomes_counted() -> None:
    m = build_matrix(traces("PKVM-GUEST.MSR-hidden-gp"), [get_policy("hw"), get_policy("pkvm-pvm")])
    assert m.rows[0].cells["pkvm-pvm"].hidden == 3  # the three #GP pKVM delivers without an exit
    assert m.rows[0].cells["hw"].hidden == 0


def test_hypervisor_corpus_fully_explained() -> None:
    m = build_matrix(traces(), [get_policy(n) for n in ("hw", "pkvm-pvm", "pvm", "xen-hvm")])
    assert m.findings == []
    for row in m.rows:  # every trace passes under the policy it was written for
        own = row.trace.split("-", 1)[0]
        policy = {"PKVM": "pkvm-pvm", "PVM": "pvm", "XEN": "hw"}[own]
        assert row.cells[policy].verdict == "agrees", row.trace


def test_cli_matrix_writes_html_and_markdown(tmp_path: Path) -> None:
    html, md = tmp_path / "m.html", tmp_path / "m.md"
    res = CliRunner().invoke(main, ["matrix", *HYP, "-o", str(html), "--markdown", str(md)])
    assert res.exit_code == 0, res.output
    assert "0 findings" in res.output
    page = html.read_text()
    assert "<table class=\"matrix\">" in page and "XEN-WALK-pk-beside-us-fault" in page
    assert md.read_text().startswith("| trace | `hw` |")


def test_cli_matrix_bad_input(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["matrix", str(tmp_path / "missing.parquet")])
    assert res.exit_code == 2
    res = CliRunner().invoke(main, ["matrix", HYP[2], "--policy", "no-such-policy"])
    assert res.exit_code == 2 and "no-such-policy" in res.output


def test_policies_lists_new_hypervisors_with_sources() -> None:
    res = CliRunner().invoke(main, ["policies"])
    for name, where in (("pkvm-pvm", "arch/x86/kvm/pkvm/pkvm.c"), ("pkvm-npvm", "is_guest_vcpu_accessible"),
                        ("pvm", "pvm-spec.rst"), ("xen-hvm", "guest_walk_tables")):
        line = next(ln for ln in res.output.splitlines() if ln.startswith(name + " "))
        assert where in line
