"""Boot one guest image under ``qemu-system-x86_64 -accel tcg`` and return its debugcon text.

One QEMU process per image, with a wall-clock timeout: a guest that hangs (or a QEMU livelock)
costs the timeout, and whatever it printed so far is still returned, so the events it reported
are kept and the rest are reported as not recorded.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

QEMU = "qemu-system-x86_64"
DEFAULT_TIMEOUT = 60.0


@dataclass(frozen=True)
class BootResult:
    """What one boot produced."""

    output: str
    exit_code: int | None  # None: killed by the timeout
    seconds: float
    command: tuple[str, ...]

    @property
    def timed_out(self) -> bool:
        return self.exit_code is None


def qemu_path() -> str | None:
    return shutil.which(QEMU)


def qemu_version() -> str:
    """``QEMU emulator version ...`` first line, or "" when QEMU is absent."""
    exe = qemu_path()
    if exe is None:
        return ""
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    first = proc.stdout.splitlines()[0] if proc.stdout else ""
    m = re.search(r"version\s+(.*)", first)
    return m.group(1).strip() if m else first.strip()


def qemu_command(image: Path, debugcon: Path, cpu: str, memory_mib: int) -> list[str]:
    return [
        QEMU, "-accel", "tcg", "-machine", "pc", "-cpu", cpu, "-smp", "2", "-m", str(memory_mib),
        "-display", "none", "-nodefaults", "-no-user-config", "-monitor", "none", "-serial", "none",
        "-kernel", str(image), "-debugcon", f"file:{debugcon}",
        "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
    ]


def boot(image: Path, cpu: str, *, memory_mib: int = 64, timeout: float = DEFAULT_TIMEOUT) -> BootResult:
    """Run ``image`` until it exits through isa-debug-exit or ``timeout`` seconds pass."""
    with tempfile.TemporaryDirectory(prefix="pksdt-qemu-") as tmp:
        out = Path(tmp) / "debugcon.txt"
        cmd = qemu_command(image, out, cpu, memory_mib)
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        try:
            proc.communicate(timeout=timeout)
            code: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            code = None
        except BaseException:  # Ctrl-C, SIGTERM (raised by `record qemu`), any error: leave no QEMU behind
            proc.kill()
            proc.wait()
            raise
        seconds = time.perf_counter() - t0
        text = out.read_text(errors="replace") if out.exists() else ""
    return BootResult(text, code, seconds, tuple(cmd))
