"""The tracefs / trace-cmd importer on real captures of this project's host (6.18 kvm_pvm).

Fixtures: the §3.3 excerpts of sources/kvm_recorder.md, and three captures made by
``difftest record kvm`` with every kvm and kvmmmu tracepoint enabled (``ftrace_walks_msrs.txt``:
scenarios emulated-walks-wp1 and msr-classes; ``ftrace_triple_fault.txt``: a guest whose code page
is unmapped; ``tracecmd_walks_wp1.txt``: the same walks through Debian's trace-cmd 3.1.6,
``extract`` + ``report``).  Expected values are read off those lines (the kernel's answers), the
SDM's PFEC bits (P=1, W=2, U=4, RSVD=8, I/D=16, PK=32), and the tracepoint list of the kernel.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from difftest.capture.importers.exit_reasons import SVM_BY_NAME, VMX_BY_NAME
from difftest.capture.importers.ftrace import import_ftrace
from difftest.capture.importers.tracepoints import disposition
from difftest.cli import main
from difftest.errors import InputError
from difftest.trace.io import open_trace
from difftest.verdict.capture_gaps import SETUP_KEY, parse_setup_unknown

FIX = Path(__file__).parent / "fixtures"


def _modelled(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["kind"] != "foreign"]


def _replay(tmp_path: Path, capture: Path, *extra: str) -> tuple[int, str]:
    out = tmp_path / (capture.stem + ".parquet")
    r = CliRunner().invoke(main, ["import", "ftrace", str(capture), "-o", str(out), *extra])
    assert r.exit_code == 0, r.output
    rep = CliRunner().invoke(main, ["replay", str(out)])
    return rep.exit_code, rep.output


def test_every_tracepoint_of_this_kernel_is_compared_context_or_classified() -> None:
    names = [ln.split(":")[1].strip() for ln in (FIX / "kvm_tracepoints_6.18.txt").read_text().splitlines()
             if ln and not ln.startswith("#")]
    assert len(names) == 109  # 91 under events/kvm, 18 under events/kvmmmu on 6.18.44
    unclassified = [n for n in names if disposition(n)[0] == "unclassified"]
    assert unclassified == []
    assert all(disposition(n)[1] for n in names)  # each with its reason
    assert disposition("kvm_no_such_event")[0] == "unclassified"


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
    # the two #GP injections after a faulting kvm_msr are that fault (compared with it); the MOV CR4.PKS
    # #GP has no kvm_cr line on this backend: classified, with what the model would need
    assert res.uses[("kvm_inj_exception", "compared")] == 2
    assert res.uses[("kvm_inj_exception", "classified")] == 1
    assert "operands" in res.reasons[("kvm_inj_exception", "classified")]
    assert res.uses[("kvm_userspace_exit", "classified: IO")] == 14
    assert res.uses[("kvm_userspace_exit", "classified: HLT")] == 1
    assert res.fmt == "tracefs"


def test_longmode_cpuid_answers_are_setup_and_comparisons() -> None:
    res = import_ftrace(str(FIX / "ftrace_longmode_ext.txt"))
    cpuid = [r for r in res.rows if r["kind"] == "cpuid"]
    # kvm_cpuid rcx 5f46 before CR4.PKE, 5f56 (OSPKE) after
    assert [(r["cpuid_leaf"], r["cpuid_subleaf"], r["exp_value"]) for r in cpuid] == [(7, 0, 0x5F46), (7, 0, 0x5F56)]
    # the table is inferred from the first answer, OSPKE (bit 4) cleared: it follows CR4.PKE
    setup = [r for r in res.rows if r["kind"] == "set_cpuid"]
    assert [(r["cpuid_7_ecx"], r.get("exp_result")) for r in setup] == [(0x5F46, None)]
    # the MOV CR4.PKE between the two answers left no kvm_cr line (PVM): OSPKE depends on setup not captured
    assert all("CR4.PKE" in res.setup_unknown[r["seq"]] for r in cpuid)
    assert res.uses[("kvm_emulate_insn", "context")] == 6


def test_failed_rdpkru_then_internal_error_is_an_rdpkru_row(tmp_path: Path) -> None:
    text = (FIX / "ftrace_longmode_ext.txt").read_text()
    text += "         python3-12194   [000] .....   739.193110: kvm_userspace_exit: reason KVM_EXIT_INTERNAL_ERROR (17)\n"
    f = tmp_path / "t.txt"
    f.write_text(text)
    res = import_ftrace(str(f))
    assert [(r["kind"], r["exp_result"]) for r in res.rows if r["kind"] == "rdpkru"] == [("rdpkru", "internal_error")]


def test_filter_denial_is_setup_the_capture_does_not_show() -> None:
    res = import_ftrace(str(FIX / "ftrace_usermsr_filter.txt"))
    wr = [r for r in res.rows if r["kind"] == "wrmsr"]
    # scenario D: KGSBASE denied by the filter -> (#GP) on the kvm_msr line
    denied = [r for r in wr if (r["msr"], r["exp_result"]) == (0xC0000102, "gp")]
    assert len(denied) == 1
    assert "MSR filter" in res.setup_unknown[denied[0]["seq"]]
    # userspace MSR exits carry no index: classified per reason (one in the usermsr part, two in E)
    assert res.uses[("kvm_userspace_exit", "classified: X86_WRMSR")] == 3


def test_emulated_walk_is_one_access_with_the_kernels_pfec() -> None:
    res = import_ftrace(str(FIX / "ftrace_walks_msrs.txt"))
    walks = [r for r in res.rows if r["kind"] == "emu_access"]
    assert len(walks) == 531  # one per kvm_mmu_pagetable_walk line
    faults = [(r["addr"], r["access"], r["exp_pfec"]) for r in walks if r["exp_result"] == "pf"]
    # lines 294-298: write to the read-only leaf -> P|W; 581-585 / 877-881: absent leaf -> 0 / W
    assert faults == [(0x200700, "write", 0x3), (0x400700, "read", 0x0), (0x400700, "write", 0x2)]
    ro = next(r for r in res.rows if r["kind"] == "map" and r["addr"] == 0x200000)
    # leaf pte 28000000000000a1: present, read-only, supervisor, key (bits 62:59) 5, 2 MiB
    assert (ro["present"], ro["writable"], ro["user"], ro["key"], ro["page_size"]) == (True, False, False, 5, "2m")
    absent = next(r for r in res.rows if r["kind"] == "map" and r["addr"] == 0x400000)
    assert absent["present"] is False
    # the walk's #PF injection is that fault: folded into the row, not a row of its own
    ro_write = next(r for r in walks if r["addr"] == 0x200700 and r["access"] == "write")
    assert "#PF (0x3)" in ro_write["note"]
    # a supervisor write to a read-only leaf depends on CR0.WP, which tracefs does not show
    assert "CR0.WP" in res.setup_unknown[ro_write["seq"]]
    # a 4-level walk implies long mode: one inferred set_sregs per vCPU
    sregs = [r for r in res.rows if r["kind"] == "set_sregs"]
    assert [(r["vcpu"], r["cr0"] & 0x80000001, r["cr4"] & 0x20, r["efer"] & 0x500) for r in sregs] == [
        (0, 0x80000001, 0x20, 0x500), (1, 0x80000001, 0x20, 0x500)]


def test_vcpu_comes_from_the_lines_not_thread_order(tmp_path: Path) -> None:
    res = import_ftrace(str(FIX / "ftrace_walks_msrs.txt"))
    # one thread ran both scenarios; the recorder's markers say which vCPU
    assert {r["vcpu"] for r in res.rows if r["kind"] == "emu_access"} == {0, 1}
    assert sorted({r["vcpu"] for r in res.rows if r["kind"] == "rdmsr"}) == [1]
    lines = ["     qemu-7   [003] .....   10.000001: kvm_entry: vcpu 23, rip 0x1000",
             "     qemu-7   [003] .....   10.000002: kvm_msr: msr_write 6e1 = 0x1 (#GP)",
             "     qemu-9   [001] .....   10.000003: kvm_exit: vcpu 5 reason MSR_READ rip 0x1000 info1 0x0 info2 0x0",
             "     qemu-9   [001] .....   10.000004: kvm_msr: msr_read 6e1 = 0x0 (#GP)"]
    f = tmp_path / "v.txt"
    f.write_text("\n".join(lines) + "\n")
    rows = import_ftrace(str(f)).rows
    assert [(r["kind"], r["vcpu"]) for r in rows if r["kind"] in ("wrmsr", "rdmsr")] == [("wrmsr", 23), ("rdmsr", 5)]


def test_msr_classes_are_counted_and_named() -> None:
    res = import_ftrace(str(FIX / "ftrace_walks_msrs.txt"))
    classes = dict(res.msr_classes)
    assert classes["run-dependent value, result compared: 0x10 TSC"] == 1
    assert classes["not modelled, kernel accepted (cannot judge): 0x277"] == 1  # PAT read 0x7040600070406
    assert classes["not modelled, kernel accepted (cannot judge): 0x1a0"] == 1
    assert classes["not modelled, kernel #GP (compared): 0xe8 APERF"] == 1  # this kernel refuses APERF


def test_real_capture_replays_clean_with_its_imported_metadata(tmp_path: Path) -> None:
    code, out = _replay(tmp_path, FIX / "ftrace_walks_msrs.txt")
    assert code == 0, out
    assert "0 divergences" in out
    # the read-only write: the kernel's PFEC and the model's side by side (CR0.WP not captured)
    line = next(ln for ln in out.splitlines() if "addr=0x200700 access=write" in ln)
    assert "expected pf pfec=0x3" in line and "got ok" in line and "setup-not-captured" in line
    line = next(ln for ln in out.splitlines() if "addr=0x400700 access=write" in ln)
    assert "expected pf pfec=0x2" in line and "got #PF pfec=0x2" in line
    assert "masked by run-dependent-msr-value: 1" in out
    assert "masked by msr-not-modelled: 4" in out  # PAT and MISC_ENABLE: result and value each
    tf = open_trace(tmp_path / "ftrace_walks_msrs.parquet")
    rows = list(tf.rows())
    assert sum(1 for r in rows if r.expect is not None) * 2 >= len(rows)
    assert tf.meta["policy"] == "upstream-pvm" or tf.meta.get("host.backend") != "kvm_pvm"
    assert parse_setup_unknown(tf.meta[SETUP_KEY])


def test_triple_fault_capture_replays_clean(tmp_path: Path) -> None:
    code, out = _replay(tmp_path, FIX / "ftrace_triple_fault.txt")
    assert code == 0, out
    # the fetch from the unmapped code page, then the IDT reads of #PF and #DF delivery: all not present
    assert "addr=0x4001 access=fetch  | expected pf pfec=0x0 cr2=0x4001 | got #PF pfec=0x0" in out


def test_trace_cmd_report_output_imports_the_same_walks(tmp_path: Path) -> None:
    res = import_ftrace(str(FIX / "tracecmd_walks_wp1.txt"))
    assert res.fmt == "trace-cmd report"
    faults = [(r["addr"], r["exp_pfec"], r["note"]) for r in res.rows if r.get("exp_result") == "pf"]
    assert [(a, p) for a, p, _n in faults] == [(0x200700, 0x3), (0x400700, 0x0), (0x400700, 0x2)]
    # libtraceevent cannot parse kvm_inj_exception's format: its raw fields are decoded (vector 14 = #PF)
    assert all("exception=14" in n for _a, _p, n in faults)
    code, out = _replay(tmp_path, FIX / "tracecmd_walks_wp1.txt")
    assert code == 0, out


def test_host_and_profile_metadata_and_validated_features(tmp_path: Path) -> None:
    out = tmp_path / "o.parquet"
    args = ["import", "ftrace", str(FIX / "ftrace_realmode_default.txt"), "-o", str(out)]
    r = CliRunner().invoke(main, [*args, "--cpu-features", "pks,bogus"])
    assert r.exit_code == 2 and "bogus" in r.output and not out.exists()
    r = CliRunner().invoke(main, [*args, "--host", "pks,pku,vmx", "--profile", "strict", "--policy", "kvm-v7"])
    assert r.exit_code == 0, r.output
    meta = open_trace(out).meta
    assert (meta["cpu.features"], meta["profile"], meta["policy"]) == ("pks,pku,vmx", "strict", "kvm-v7")
    r = CliRunner().invoke(main, [*args, "--host", "pks", "--cpu-features", "pku"])
    assert r.exit_code == 2


@pytest.mark.skipif(not Path("/sys/module/kvm_pvm").is_dir(), reason="not a kvm_pvm host")
def test_import_on_this_host_gets_its_features_and_the_pvm_policy(tmp_path: Path) -> None:
    out = tmp_path / "o.parquet"
    r = CliRunner().invoke(main, ["import", "ftrace", str(FIX / "ftrace_realmode_default.txt"), "-o", str(out)])
    assert r.exit_code == 0, r.output
    meta = open_trace(out).meta
    assert (meta["policy"], meta["profile"], meta["host.backend"]) == ("upstream-pvm", "pvm", "kvm_pvm")
    assert "pks" not in meta["cpu.features"].split(",")  # an AMD EPYC guest: no PKS


def test_written_import_classified_lines_are_counted_not_rows(tmp_path: Path) -> None:
    out = tmp_path / "rm.parquet"
    r = CliRunner().invoke(main, ["import", "ftrace", str(FIX / "ftrace_realmode_default.txt"), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "kvm_userspace_exit: 14 classified: IO, 1 classified: HLT" in r.output
    tf = open_trace(out)
    assert tf.meta["producer"] == "imported-ftrace"
    assert "kvm_userspace_exit 14 classified: IO" in tf.meta["capture.classified"]
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


def test_unknown_events_are_counted_by_name(tmp_path: Path) -> None:
    text = (FIX / "ftrace_longmode_default.txt").read_text()
    text += "         python3-12141   [001] .....   738.762400: kvm_fpu: unload\n"
    text += "         python3-12141   [001] .....   738.762401: kvm_from_the_future: x\n"
    f = tmp_path / "t.txt"
    f.write_text(text)
    res = import_ftrace(str(f))
    assert res.uses[("kvm_fpu", "classified")] == 1
    assert res.uses[("kvm_from_the_future", "unclassified")] == 1


def test_exit_reason_tables() -> None:
    # VMX basic exit reasons (SDM App. C) and SVM exit codes as the kvm_exit print fmt names them
    assert VMX_BY_NAME["MSR_READ"] == 31 and VMX_BY_NAME["MSR_WRITE"] == 32 and VMX_BY_NAME["CR_ACCESS"] == 28
    assert SVM_BY_NAME["msr"] == 0x7C and SVM_BY_NAME["write_cr4"] == 0x14 and SVM_BY_NAME["npf"] == 0x400
