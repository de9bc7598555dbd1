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
from difftest.capture.kvm.tracefs import our_instances, our_mounts, tracefs_unusable
from difftest.capture.kvm.vm import OPEN_VMS, kvm_fds_of_this_process, kvm_usable
from difftest.trace.io import open_trace

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


# --- issue 18: signal-safe acquire/release, private mounts, stale cleanup, early checks ----------------

RECORD = [sys.executable, "-m", "difftest.cli", "record", "kvm"]
TRACEFS_WHY = KVM_WHY or tracefs_unusable()
needs_tracefs = pytest.mark.skipif(TRACEFS_WHY is not None, reason=f"cannot record with tracefs here: {TRACEFS_WHY}")


def _tagged(tag: str) -> list[int]:
    """Pids of live processes whose environment carries ``tag`` (the recorder and anything it started)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            env = (d / "environ").read_bytes()
        except OSError:
            continue
        if f"PKSDT_TEST_TAG={tag}".encode() in env.split(b"\0") and _running(int(d.name)):
            out.append(int(d.name))
    return out


def _mounts_of(pid: int) -> list[Path]:
    return [m for m in our_mounts() if m.name.startswith(f"pksdt-tracefs-{pid}-")]


def _loading(pid: int) -> float:
    """When the child maps pyarrow (difftest is importing; our Ctrl-C hook is in place): monotonic time."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if "arrow" in Path(f"/proc/{pid}/maps").read_text():
                return time.monotonic()
        except OSError:
            return time.monotonic()  # already gone
        time.sleep(0.002)
    raise AssertionError("the recorder never loaded pyarrow")


def _sigint_default() -> None:
    """In the child: SIGINT as a terminal delivers it (a background shell job would inherit SIG_IGN)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _run_env(tag: str, **extra: str) -> dict[str, str]:
    return {**os.environ, "PKSDT_TEST_TAG": tag, **extra}


@needs_tracefs
def test_sigint_at_50_moments_leaves_no_instance_mount_fd_or_process(tmp_path: Path) -> None:
    """SIGINT at 50 evenly spaced moments of `record kvm --scenario all`, from the moment our package is
    loading (pyarrow mapped: Python's own start-up, whose site import reports a SIGINT itself, is over; none
    of our code has run before it) to the end of the recording: VM and tracefs set-up included."""
    scen = ["--scenario", "all"]
    spans = []
    for n in range(3):  # the shortest of three undisturbed runs: the moments fall inside a recording
        ref = subprocess.Popen([*RECORD, *scen, "-o", str(tmp_path / f"ref{n}.parquet")], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, env=_run_env("ref"), preexec_fn=_sigint_default)
        ready = _loading(ref.pid)
        _, err = ref.communicate(timeout=120)
        assert ref.returncode == 0, err
        spans.append(time.monotonic() - ready)
    span = min(spans)
    outcomes: dict[int, int] = {}
    for i in range(50):
        tag = f"sigint-{os.getpid()}-{i}"
        out = tmp_path / f"o{i}.parquet"
        proc = subprocess.Popen([*RECORD, *scen, "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True, env=_run_env(tag), preexec_fn=_sigint_default)
        try:
            _loading(proc.pid)
            at = span * (i + 0.5) / 50
            time.sleep(at)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        outcomes[proc.returncode] = outcomes.get(proc.returncode, 0) + 1
        moment = f"moment {i} ({at:.3f} s of {span:.3f} after loading): rc {proc.returncode}, stderr {err!r}"
        assert proc.returncode in (0, 130, -signal.SIGINT), moment
        assert "Traceback" not in err and len(err.strip().splitlines()) <= 1, moment
        assert _mine(proc.pid) == [], moment
        assert _mounts_of(proc.pid) == [], moment
        deadline = time.monotonic() + 5  # a `mount`/`umount` child may still be finishing
        while _tagged(tag) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _tagged(tag) == [], moment
        if proc.returncode == 130:  # interrupted: nothing half-written
            assert not out.exists(), moment
        elif out.exists():  # finished before the signal (rc 0), or the signal came during interpreter exit
            assert len(list(open_trace(out).rows())) > 300, moment
    # no timing is asserted (the machine is shared); the interrupt path itself must have been taken
    assert outcomes.get(130, 0) >= 1, outcomes


@needs_tracefs
def test_two_recorders_at_once_each_with_its_own_mount(tmp_path: Path) -> None:
    procs = []
    for n in range(2):
        procs.append(subprocess.Popen([*RECORD, "--scenario", "all", "-o", str(tmp_path / f"r{n}.parquet")],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      env=_run_env(f"two-{n}", PKSDT_RECORD_HOLD="1")))
    try:
        for p in procs:
            assert p.stderr is not None
            assert "recorder holding" in p.stderr.readline()
        mounts = [_mounts_of(p.pid) for p in procs]
        assert [len(m) for m in mounts] == [1, 1] and mounts[0] != mounts[1]
        results = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_out, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
        assert _mine(p.pid) == [] and _mounts_of(p.pid) == []
    for n in range(2):
        assert len(list(open_trace(tmp_path / f"r{n}.parquet").rows())) > 300


@needs_tracefs
def test_stale_instance_and_mount_of_a_killed_recorder_are_removed_and_reported(tmp_path: Path) -> None:
    proc = subprocess.Popen([*RECORD, "--scenario", "guest-pkrs-long-nopks", "-o", str(tmp_path / "k.parquet")],
                            stderr=subprocess.PIPE, text=True, env=_run_env("killed", PKSDT_RECORD_HOLD="30"))
    try:
        assert proc.stderr is not None
        assert "recorder holding" in proc.stderr.readline()
        proc.kill()  # SIGKILL: no cleanup can run
        proc.wait()
        assert _mine(proc.pid) != [] and _mounts_of(proc.pid) != []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    nxt = subprocess.run([*RECORD, "--scenario", "guest-pkrs-long-nopks", "-o", str(tmp_path / "n.parquet")],
                         capture_output=True, text=True, env=_run_env("next"), timeout=120)
    assert nxt.returncode == 0, nxt.stderr
    assert f"removed stale tracefs instance pksdt-{proc.pid}-0 left by recorder pid {proc.pid}" in nxt.stderr
    assert "removed stale tracefs mount" in nxt.stderr and f"pid {proc.pid} (not running)" in nxt.stderr
    assert _mine(proc.pid) == [] and _mounts_of(proc.pid) == []


@needs_kvm
# (a folder that does not exist yet is created, as every command that writes does: under a regular file it cannot be)
@pytest.mark.parametrize("where", ["a-file/o.parquet", "ro/o.parquet", "adir"])
def test_unwritable_output_fails_before_recording(tmp_path: Path, where: str) -> None:
    if where.startswith("ro") and os.geteuid() == 0:
        pytest.skip("root may write into a read-only folder: only the file-as-folder and the directory cases apply")
    (tmp_path / "ro").mkdir()
    (tmp_path / "adir").mkdir()
    (tmp_path / "a-file").write_text("")
    os.chmod(tmp_path / "ro", 0o555)
    try:
        r = subprocess.run([*RECORD, "--scenario", "all", "-o", str(tmp_path / where)], capture_output=True,
                           text=True, env=_run_env("out", PKSDT_RECORD_HOLD="30"), timeout=60)
    finally:
        os.chmod(tmp_path / "ro", 0o755)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert "recorder holding" not in r.stderr  # refused before any VM or tracefs instance existed


@needs_kvm
def test_guest_dying_mid_trace_says_where_and_exits_nonzero(tmp_path: Path) -> None:
    from difftest.capture.kvm.guest_program import LONG_CR0, LONG_CR4, LONG_EFER, PML4
    from difftest.trace.io import write_trace

    rows: list[dict] = [
        {"kind": "create_vcpu", "level": "host"},
        {"kind": "set_sregs", "level": "host", "cr0": LONG_CR0, "cr3": PML4, "cr4": LONG_CR4, "efer": LONG_EFER},
        {"kind": "run", "level": "host"},
        {"kind": "rdmsr", "msr": 0xC0000102, "exp_result": "ok", "exp_value": 0},
        # the 2 MiB page holding the guest's code, IDT and stack becomes not present: the next
        # instruction fetch faults, the #PF cannot be delivered (#DF neither): triple fault (SDM 6.15)
        {"kind": "map", "addr": 0, "page_size": "2m", "present": False},
        {"kind": "wrmsr", "msr": 0xC0000102, "value": 5},
        {"kind": "rdmsr", "msr": 0xC0000102},
        {"kind": "set_msrs", "level": "host", "msrs": [0xC0000102], "values": [7]},
    ]
    for i, r in enumerate(rows):
        r.update(seq=i, vcpu=0)
        r.setdefault("level", "l1")
    trace = write_trace(tmp_path / "dies.parquet", rows, {"producer": "synthetic", "name": "dies",
                                                           "description": "code page unmapped"})
    out = tmp_path / "rec.parquet"
    r = subprocess.run([*RECORD, "--trace", str(trace), "-o", str(out)], capture_output=True, text=True,
                       env=_run_env("dies"), timeout=120)
    assert r.returncode == 1, r.stderr
    assert "died at row 5" in r.stderr and "KVM_EXIT_SHUTDOWN" in r.stderr and "Traceback" not in r.stderr
    got = list(open_trace(out).rows())
    assert [x.expect is None for x in got[5:]] == [True, True, True]
    assert all("not recorded: the guest died at row 5" in (x.note or "") for x in open_trace(out).rows(with_notes=True)
               if x.index > 5)


def test_record_kvm_list_needs_no_output() -> None:
    r = subprocess.run([*RECORD, "--list"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "emulated-walks-wp1:" in r.stdout
