"""The live /dev/kvm recorder: real outcomes, cleanup on Ctrl-C, replay of what it recorded.

Expectations are the facts of sources/kvm_recorder.md (§1.2, §2.2) for a kernel without PKS;
they hold on any such host, whatever the backend.  Skipped where /dev/kvm, root or binutils
are missing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from difftest.capture.kvm import executor as executor_mod
from difftest.capture.kvm.guest_asm import assembler_missing
from difftest.capture.kvm.recorder import record_scenarios, write_recording
from difftest.capture.kvm.scenarios import SCENARIOS
from difftest.capture.kvm.tracefs import our_instances, tracefs_unusable
from difftest.capture.kvm.vm import OPEN_VMS, kvm_fds_of_this_process, kvm_usable
from difftest.trace.io import open_trace

WHY = kvm_usable() or assembler_missing() or (None if os.geteuid() == 0 else "needs root")
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(WHY is not None, reason=f"cannot record here: {WHY}")]


def _host_has_pks() -> bool:
    from difftest.capture.kvm import host_facts
    from difftest.capture.kvm.vm import Kvm
    with Kvm() as kvm:
        return "pks" in host_facts.collect(kvm).features


def _rows(names: list[str]) -> list[dict]:
    rec, _meta = record_scenarios([SCENARIOS[n] for n in names], trace=False)
    return rec.rows


def _exp(rows: list[dict], kind: str, **match: object) -> list[tuple]:
    out = []
    for r in rows:
        if r["kind"] == kind and all(r.get(k) == v for k, v in match.items()):
            out.append((r.get("exp_result"), r.get("exp_count"), r.get("exp_exit_reason")))
    return out


@pytest.fixture(scope="module")
def no_pks() -> None:
    if _host_has_pks():
        pytest.skip("this host supports PKS: the 'PKS unsupported' facts do not apply")


def test_host_and_guest_pkrs_without_pks(no_pks: None) -> None:
    rows = _rows(["host-pkrs-pks", "guest-pkrs-long-pks"])
    # §1.2: host SET_MSRS of 0x6E1 processes 0 MSRs; a batch stops at it (KGSBASE written, STAR not)
    assert _exp(rows, "set_msrs", msrs=(0x6E1,), values=(0x12345678,)) == [("ok", 0, None)]
    assert _exp(rows, "set_msrs", msrs=(0xC0000102, 0x6E1, 0xC0000081)) == [("ok", 1, None)]
    batch_read = [r for r in rows if r["kind"] == "get_msrs" and r["msrs"] == (0xC0000102, 0xC0000081)]
    assert batch_read[0]["exp_values"] == (0x1234, 0)
    # §2.2: the guest gets #GP(0) on WRMSR and RDMSR 0x6E1 even with PKS in the CPUID set
    assert _exp(rows, "wrmsr", msr=0x6E1, value=0x11223344) == [("gp", None, None)]
    assert _exp(rows, "rdmsr", msr=0x6E1) == [("gp", None, None)]
    assert [r.get("exp_value") for r in rows if r["kind"] == "rdmsr" and r["msr"] == 0xC0000102] == [0x1234]


def test_cr4_pks_is_reserved_via_sregs_and_mov(no_pks: None) -> None:
    rows = _rows(["cr4-pks-real-pks", "cr4-pks-long-nopks"])
    # §1.2 / §2.2: KVM_SET_SREGS with CR4.PKS -> EINVAL, MOV CR4 |= PKS -> #GP
    sregs_pks = [r["exp_result"] for r in rows if r["kind"] == "set_sregs" and (r.get("cr4") or 0) & (1 << 24)]
    assert sregs_pks == ["einval", "einval"]
    movs = [r["exp_result"] for r in rows if r["kind"] == "mov_cr4" and r["value"] & (1 << 24)]
    assert movs == ["gp"] * 4


def test_userspace_msr_exit_reasons(no_pks: None) -> None:
    rows = _rows(["msr-filter-allow-user-unknown", "msr-filter-deny-user-filter", "msr-filter-deny-user-off"])
    by_vcpu = {v: [r for r in rows if r["vcpu"] == v] for v in (0, 1, 2)}
    # §2.2 B: unknown MSR, cap UNKNOWN -> exit reason 2; E: denied by the filter, cap FILTER -> 4; D: #GP
    assert _exp(by_vcpu[0], "wrmsr", msr=0x6E1) == [("user_exit", None, 2)]
    assert _exp(by_vcpu[1], "wrmsr", msr=0x6E1) == [("user_exit", None, 4)]
    assert _exp(by_vcpu[1], "wrmsr", msr=0xC0000102, value=0x1234) == [("user_exit", None, 4)]
    assert _exp(by_vcpu[2], "wrmsr", msr=0xC0000102, value=0x1234) == [("gp", None, None)]
    # host-initiated accesses ignore the filter (§1.2): KGSBASE written while denied to the guest
    assert _exp(by_vcpu[2], "set_msrs", msrs=(0xC0000102,)) == [("ok", 1, None)]


def test_metadata_describes_the_real_host(tmp_path: Path) -> None:
    rec, meta = record_scenarios([SCENARIOS["guest-pkrs-real-nopks"]], trace=tracefs_unusable() is None)
    dest = write_recording(rec, meta, tmp_path / "r.parquet")
    tf = open_trace(dest)
    assert tf.meta["producer"] == "recorded-kvm"
    assert tf.meta["host.kernel"] == os.uname().release
    assert tf.meta["host.backend"] in ("kvm_intel", "kvm_amd", "kvm_pvm")
    assert Path("/sys/module", tf.meta["host.backend"]).is_dir()
    assert tf.meta["host.module_params"].startswith("kvm.ignore_msrs=")
    assert "ecx=" in tf.meta["host.supported_cpuid_7_0"]
    tf.host()  # cpu.features parses with the model's vocabulary
    if tracefs_unusable() is None:
        lines = Path(str(dest) + ".ftrace.txt").read_text()
        assert "msr_write 6e1 = 0x11223344 (#GP)" in lines or "kvm_msr" not in lines


def test_exception_mid_recording_releases_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real_step = executor_mod.RealVcpuExecutor.step

    def step(self, ev):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return real_step(self, ev)

    monkeypatch.setattr(executor_mod.RealVcpuExecutor, "step", step)
    with pytest.raises(KeyboardInterrupt):
        record_scenarios([SCENARIOS["guest-pkrs-long-nopks"]], trace=tracefs_unusable() is None)
    assert kvm_fds_of_this_process() == [] and not OPEN_VMS
    assert not [n for n in our_instances() if n.startswith(f"pksdt-{os.getpid()}-")]


@pytest.mark.skipif(tracefs_unusable() is not None, reason=f"{tracefs_unusable()}")
def test_sigint_leaves_no_tracefs_instance_vm_or_fd(tmp_path: Path) -> None:
    out = tmp_path / "o.parquet"
    env = {**os.environ, "PKSDT_RECORD_HOLD": "30"}
    proc = subprocess.Popen([sys.executable, "-m", "difftest.cli", "record", "kvm", "--scenario", "all", "-o", str(out)],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "recorder holding" in line, line
        mine = [n for n in our_instances() if n.startswith(f"pksdt-{proc.pid}-")]
        assert len(mine) == 1  # the instance exists while recording
        fds = [os.readlink(f"/proc/{proc.pid}/fd/{f}") for f in os.listdir(f"/proc/{proc.pid}/fd")]
        assert any("kvm-vm" in t for t in fds)  # the VM exists (vCPUs come with the first scenario)
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=30)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, rest
    assert "released" in rest and "Traceback" not in rest
    assert not [n for n in our_instances() if n.startswith(f"pksdt-{proc.pid}-")]
    assert not out.exists() and not list(tmp_path.iterdir())


def test_replay_explains_the_recording(tmp_path: Path, no_pks: None) -> None:
    names = [n for n in SCENARIOS if n.startswith(("host-pkrs", "guest-pkrs", "cr4-pks", "reserved-bits"))]
    rec, meta = record_scenarios([SCENARIOS[n] for n in names], trace=False)
    dest = write_recording(rec, meta, tmp_path / "r.parquet")
    cli = [sys.executable, "-m", "difftest.cli", "replay", str(dest)]
    backend = meta["host.backend"]
    if backend == "kvm_pvm":
        r = subprocess.run([*cli, "--policy", "upstream-pvm", "--profile", "pvm"], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "masked by pvm-cpuid-rewrite" in r.stdout
    # a PKS-enabled KVM (v7) would differ: it cannot explain a kernel without PKS
    r = subprocess.run([*cli, "--policy", "kvm-v7"], capture_output=True, text=True)
    assert r.returncode == 1, r.stdout + r.stderr
