"""Recorders clean up after SIGINT, SIGTERM or an exception: no tracefs instance, VM, /dev/kvm fd,
QEMU process or temporary directory survives (issue 9; the SIGINT case of `record kvm` is in
tests/test_kvm_recorder.py).

Skipped with the reason where /dev/kvm, root, binutils, tracefs or QEMU are missing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from difftest.capture.kvm import executor as executor_mod
from difftest.capture.kvm.guest_asm import assembler_missing
from difftest.capture.kvm.recorder import record_scenarios
from difftest.capture.kvm.scenarios import SCENARIOS
from difftest.capture.kvm.tracefs import our_instances, tracefs_unusable
from difftest.capture.kvm.vm import OPEN_VMS, kvm_fds_of_this_process, kvm_usable

KVM_WHY = kvm_usable() or assembler_missing() or (None if os.geteuid() == 0 else "needs root")
needs_kvm = pytest.mark.skipif(KVM_WHY is not None, reason=f"cannot record on /dev/kvm here: {KVM_WHY}")
pytestmark = pytest.mark.e2e


def _mine(pid: int) -> list[str]:
    return [n for n in our_instances() if n.startswith(f"pksdt-{pid}-")]


@needs_kvm
@pytest.mark.parametrize("exc_type", [RuntimeError, OSError, MemoryError])
def test_exception_mid_recording_releases_everything(monkeypatch: pytest.MonkeyPatch, exc_type: type) -> None:
    """An ordinary exception (not Ctrl-C) from inside a step: the VM, its fds and the instance go."""
    calls = {"n": 0}
    real_step = executor_mod.RealVcpuExecutor.step

    def step(self, ev):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 4:
            raise exc_type("injected failure")
        return real_step(self, ev)

    monkeypatch.setattr(executor_mod.RealVcpuExecutor, "step", step)
    assert kvm_fds_of_this_process() == []
    with pytest.raises(exc_type, match="injected failure"):
        record_scenarios([SCENARIOS["guest-pkrs-long-nopks"]], trace=tracefs_unusable() is None)
    assert calls["n"] == 4  # the failure came mid-recording, with a VM and vCPU open
    assert kvm_fds_of_this_process() == [] and not OPEN_VMS
    assert _mine(os.getpid()) == []


@needs_kvm
@pytest.mark.skipif(tracefs_unusable() is not None, reason=f"tracefs: {tracefs_unusable()}")
def test_sigterm_leaves_no_tracefs_instance_vm_or_fd(tmp_path: Path) -> None:
    out = tmp_path / "o.parquet"
    env = {**os.environ, "PKSDT_RECORD_HOLD": "30"}
    proc = subprocess.Popen([sys.executable, "-m", "difftest.cli", "record", "kvm", "--scenario", "all", "-o", str(out)],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "recorder holding" in line, line
        assert len(_mine(proc.pid)) == 1  # the instance exists while recording
        fds = [os.readlink(f"/proc/{proc.pid}/fd/{f}") for f in os.listdir(f"/proc/{proc.pid}/fd")]
        assert any("kvm-vm" in t for t in fds)
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=30)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode in (130, 143), rest  # interrupted, not killed by the signal's default action
    assert "Traceback" not in rest and len(rest.strip().splitlines()) == 1
    assert _mine(proc.pid) == []
    assert not out.exists() and list(tmp_path.iterdir()) == []


def _qemu_children(parent: int) -> list[int]:
    """Pids of qemu-system-x86_64 processes whose parent is ``parent``."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1: stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if ppid == parent and comm.startswith("qemu-system-x86"):
            out.append(int(d.name))
    return out


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _qemu_why() -> str | None:
    from difftest.capture.qemu.boot import qemu_path
    from difftest.capture.qemu.build import missing_tools

    missing = ([] if qemu_path() else ["qemu-system-x86_64"]) + missing_tools()
    return f"missing {', '.join(missing)} (Debian: qemu-system-x86, binutils)" if missing else None


@pytest.mark.skipif(_qemu_why() is not None, reason=f"cannot record under QEMU here: {_qemu_why()}")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_record_qemu_leaves_no_qemu_or_temp_dir(tmp_path: Path, sig: signal.Signals) -> None:
    from difftest import TraceBuilder

    # 8,000 PKRS writes: a guest that keeps QEMU busy for about two seconds on this machine
    t = TraceBuilder("long-qemu", "many PKRS writes", policy="hw", long_mode=True)
    t.cpuid(pks=True).cr4(pks=True)
    for i in range(8000):
        t.wrmsr(0x6E1, i & 0xFFFF)
    t.snapshot("vcpu0.pkrs", 7999 & 0xFFFF)
    trace = t.write(tmp_path / "long.parquet")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "rec.parquet"
    env = {**os.environ, "TMPDIR": str(tmp), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "difftest.cli", "record", "qemu", "--trace", str(trace), "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    qemu: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while not qemu and proc.poll() is None and time.monotonic() < deadline:
            qemu = _qemu_children(proc.pid)
            time.sleep(0.02)
        assert qemu, f"QEMU never started or the recording ended first: {proc.poll()} {proc.stderr.read() if proc.stderr else ''}"
        assert list(tmp.iterdir()), "no temporary directory while QEMU runs"
        time.sleep(0.2)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in qemu:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    time.sleep(0.1)
    assert [pid for pid in qemu if _running(pid)] == [], "a QEMU process survived the recorder"
    assert list(tmp.iterdir()) == [], "temporary files survived the recorder"
    assert not out.exists()
