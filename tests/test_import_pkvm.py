"""pKVM vmexit_trace import and cost comparison on seed 004's npVM and pVM samples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from difftest.capture.importers.pkvm_vmexit import compare, parse_vmexit_trace
from difftest.cli import main
from difftest.errors import InputError

FIX = Path(__file__).parent / "fixtures"
NPVM, PVM = str(FIX / "pkvm_vmexit_npvm.txt"), str(FIX / "pkvm_vmexit_pvm.txt")


def test_npvm_sample() -> None:
    t = parse_vmexit_trace(NPVM)
    assert len(t.handlers) == 10 and t.ignored_lines == 1  # the shell prompt line
    assert t.handlers["VMCALL"].count == 38361 and t.handlers["VMCALL"].avg == 51792
    assert t.handlers["get_rflags"].cycles == 173956690
    assert t.inconsistent == []  # every AVG in the seed is TOTAL // COUNT


def test_pvm_sample_lacks_the_state_reading_calls() -> None:
    t = parse_vmexit_trace(PVM)
    assert "get_rflags" not in t.handlers and "set_interrupt_shadow" not in t.handlers
    assert t.handlers["interrupt_allowed"].count == 81371


def test_comparison() -> None:
    text, data = compare(parse_vmexit_trace(NPVM), parse_vmexit_trace(PVM))
    rows = {r["name"]: r for r in data["handlers"]}  # type: ignore[index]
    assert rows["cancel_injection"]["only_in"] == "b" and rows["get_rflags"]["only_in"] == "a"
    assert rows["interrupt_allowed"]["count_a"] == 6600 and rows["interrupt_allowed"]["count_b"] == 81371
    assert "only in A: get_rflags, set_interrupt_shadow" in text
    assert "12.33x" in text  # interrupt_allowed 81371 / 6600


def test_malformed_host_line(tmp_path: Path) -> None:
    f = tmp_path / "bad.txt"
    f.write_text("Host: CPUID 142 cycles 1481282 each-handler-cycle 10431\nHost: VMCALL many cycles 1\n")
    with pytest.raises(InputError, match="line 2"):
        parse_vmexit_trace(str(f))


def test_cli(tmp_path: Path) -> None:
    out = tmp_path / "cmp.json"
    r = CliRunner().invoke(main, ["import", "pkvm-vmexit-trace", NPVM, "--against", PVM, "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["b"]["total_count"] == 285956
    r = CliRunner().invoke(main, ["import", "pkvm-vmexit-trace", str(tmp_path / "missing.txt")])
    assert r.exit_code == 2 and "no such file" in r.output
