"""The tracefs / trace-cmd importer on real trace lines (sources/kvm_recorder.md §3.3)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from difftest.capture.importers.exit_reasons import SVM_BY_NAME, VMX_BY_NAME
from difftest.capture.importers.ftrace import import_ftrace
from difftest.cli import main
from difftest.errors import InputError
from difftest.trace.io import open_trace

FIX = Path(__file__).parent / "fixtures"


def _modelled(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["kind"] != "foreign"]


def test_realmode_default_lines_become_guest_msr_events_with_their_outcomes() -> None:
    res = import_ftrace(str(FIX / "ftrace_realmode_default.txt"))
    got = [(r["kind"], r.get("msr"), r.get("value"), r.get("exp_result"), r.get("exp_value")) for r in _modelled(res.rows)]
    # §3.3: WRMSR/RDMSR 0x6E1 fault (#GP), TSC read, KGSBASE write and read-back
    assert got == [
        ("wrmsr", 0x6E1, 0x11223344, "gp", None),
        ("rdmsr", 0x6E1, None, "gp", None),
        ("rdmsr", 0x10, None, "ok", 0x1BE89DA048A),
        ("wrmsr", 0xC0000102, 0x1234, "ok", None),
        ("rdmsr", 0xC0000102, None, "ok", 0x1234),
    ]
    # the #GP injections that follow a faulting kvm_msr are the same fault: folded, not extra rows;
    # the MOV CR4.PKS #GP (no kvm_cr line on this backend) stays as a foreign row
    inj = [r for r in res.rows if "kvm_inj_exception" in (r.get("note") or "")]
    assert len(inj) == 1 and inj[0]["kind"] == "foreign"
    assert res.events["kvm_userspace_exit"] == 15 and res.events["tracing_mark_write"] == 2
    assert res.fmt == "tracefs"


def test_longmode_error_code_and_emulated_instructions() -> None:
    res = import_ftrace(str(FIX / "ftrace_longmode_ext.txt"))
    cpuid = [r for r in res.rows if r["kind"] == "cpuid"]
    # kvm_cpuid rcx 5f46 before CR4.PKE, 5f56 (OSPKE) after
    assert [(r["cpuid_leaf"], r["cpuid_subleaf"], r["exp_value"]) for r in cpuid] == [(7, 0, 0x5F46), (7, 0, 0x5F56)]
    notes = [r["note"] for r in res.rows if r["kind"] == "foreign"]
    assert any("kvm_emulate_insn mov to cr" in n for n in notes)
    assert sum("kvm_emulate_insn rdpkru" in n for n in notes) == 2
    assert any(n.endswith("(prot64) failed") for n in notes)


def test_filter_and_userspace_exit_lines() -> None:
    res = import_ftrace(str(FIX / "ftrace_usermsr_filter.txt"))
    wr = [r for r in res.rows if r["kind"] == "wrmsr"]
    # scenario D: KGSBASE denied by the filter -> (#GP) on the kvm_msr line
    assert (0xC0000102, "gp") in [(r["msr"], r["exp_result"]) for r in wr]
    exits = [r["note"] for r in res.rows if "KVM_EXIT_X86_WRMSR (30)" in (r.get("note") or "")]
    assert len(exits) == 3  # one in the usermsr capture, two in E


def test_written_import_replays_and_foreign_rows_are_not_compared(tmp_path: Path) -> None:
    out = tmp_path / "rm.parquet"
    r = CliRunner().invoke(main, ["import", "ftrace", str(FIX / "ftrace_realmode_default.txt"), "-o", str(out)])
    assert r.exit_code == 0, r.output
    tf = open_trace(out)
    assert tf.meta["producer"] == "imported-ftrace"
    rows = list(tf.rows())
    assert sum(1 for x in rows if x.expect is not None) == 5
    assert all(x.expect is None for x in rows if x.event and x.event.kind == "foreign")


def test_malformed_line_names_its_number(tmp_path: Path) -> None:
    lines = (FIX / "ftrace_longmode_default.txt").read_text().splitlines()
    lines.insert(3, lines[3].replace("msr_read 6e1 = 0x0 (#GP)", "msr_read 6e1 = zero"))
    bad = tmp_path / "bad.txt"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as ei:
        import_ftrace(str(bad))
    assert "line 4" in str(ei.value) and "kvm_msr" in str(ei.value)
    r = CliRunner().invoke(main, ["import", "ftrace", str(bad), "-o", str(tmp_path / "o.parquet")])
    assert r.exit_code == 2 and "line 4" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["import", "ftrace", str(bad), "-o", str(tmp_path / "o.parquet"), "--skip-bad"])
    assert r.exit_code == 0 and "skipped 1 malformed lines" in r.output


def test_garbage_line_is_an_error_not_a_crash(tmp_path: Path) -> None:
    bad = tmp_path / "g.txt"
    bad.write_text((FIX / "ftrace_longmode_default.txt").read_text() + "this is not ftrace\n")
    with pytest.raises(InputError, match="line 12"):
        import_ftrace(str(bad))


def test_unknown_events_are_kept_as_opaque_rows(tmp_path: Path) -> None:
    # kvm_fpu and kvm_mmu_get_page fire on this backend (§3.2) and have no model meaning
    text = (FIX / "ftrace_longmode_default.txt").read_text()
    text += "         python3-12141   [001] .....   738.762400: kvm_fpu: unload\n"
    f = tmp_path / "t.txt"
    f.write_text(text)
    res = import_ftrace(str(f))
    assert res.rows[-1]["kind"] == "foreign" and "kvm_fpu: unload" in res.rows[-1]["note"]


def test_exit_reason_tables() -> None:
    # VMX basic exit reasons (SDM App. C) and SVM exit codes as the kvm_exit print fmt names them
    assert VMX_BY_NAME["MSR_READ"] == 31 and VMX_BY_NAME["MSR_WRITE"] == 32 and VMX_BY_NAME["CR_ACCESS"] == 28
    assert SVM_BY_NAME["msr"] == 0x7C and SVM_BY_NAME["write_cr4"] == 0x14 and SVM_BY_NAME["npf"] == 0x400
