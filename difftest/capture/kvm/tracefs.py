"""A private tracefs instance that captures the kvm tracepoints of this process's threads only.

Recipe: sources/kvm_recorder.md §3.1.  The instance has its own ring buffer, event enables and
``set_event_pid`` (thread ids, so ``options/event-fork`` adds threads and children started
later); it is drained non-blocking through ``trace_pipe`` between scenarios, because clearing
the buffer costs ~21 ms.  :class:`TraceInstance` is a context manager: the instance (and a
private tracefs mount, if one had to be made) is removed on exit, on exceptions, and on
SIGINT/SIGTERM once they are turned into exceptions by :func:`signals_raise`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

INSTANCE_PREFIX = "pksdt-"
DEFAULT_EVENTS = ("kvm_msr", "kvm_cr", "kvm_exit", "kvm_entry", "kvm_inj_exception", "kvm_userspace_exit",
                  "kvm_nested_vmenter", "kvm_nested_vmexit", "kvm_nested_vmexit_inject", "kvm_cpuid")


def tracefs_mount() -> Path | None:
    """An existing tracefs mount point, if any."""
    try:
        with open("/proc/mounts", encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) > 2 and parts[2] == "tracefs":
                    return Path(parts[1])
    except OSError:
        pass
    return None


def tracefs_unusable() -> str | None:
    """None if a tracefs instance can be made here (root, tracefs present), else why not."""
    if os.geteuid() != 0:
        return "tracefs needs root"
    if tracefs_mount() is None and not Path("/sys/kernel/tracing").is_dir():
        return "no tracefs in this kernel"
    return None


class TraceInstance:
    """``<tracefs>/instances/pksdt-<pid>-<n>``, pid-filtered on this process with event-fork."""

    def __init__(self, events: tuple[str, ...] = DEFAULT_EVENTS, buffer_kb: int = 2048) -> None:
        self.events = events
        self.buffer_kb = buffer_kb
        self.root: Path | None = None
        self.private_mount: Path | None = None
        self.path: Path | None = None
        self.enabled: list[str] = []
        self._pipe: int | None = None

    def __enter__(self) -> TraceInstance:
        try:
            self.open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        root = tracefs_mount()
        if root is None:
            # Mount privately rather than at /sys/kernel/tracing: nothing global changes.
            self.private_mount = Path(tempfile.mkdtemp(prefix="pksdt-tracefs-"))
            subprocess.run(["mount", "-t", "tracefs", "nodev", str(self.private_mount)], check=True,
                           capture_output=True)
            root = self.private_mount
        self.root = root
        remove_stale_instances(root)
        pid = os.getpid()
        for n in range(100):
            cand = root / "instances" / f"{INSTANCE_PREFIX}{pid}-{n}"
            try:
                cand.mkdir()
            except FileExistsError:
                continue
            self.path = cand
            break
        else:
            raise OSError(errno.EEXIST, "no free tracefs instance name")
        self._write("tracing_on", "0")
        self._write("trace_clock", "mono")
        self._write("buffer_size_kb", str(self.buffer_kb))
        self._write("options/event-fork", "1")
        self._write("set_event_pid", str(pid))
        for ev in self.events:
            enable = self.path / "events" / "kvm" / ev / "enable"
            if enable.exists():
                enable.write_text("1")
                self.enabled.append(ev)
        self._write("tracing_on", "1")
        self._pipe = os.open(self.path / "trace_pipe", os.O_RDONLY | os.O_NONBLOCK)

    def _write(self, name: str, text: str) -> None:
        assert self.path is not None
        (self.path / name).write_text(text + "\n")

    def marker(self, text: str) -> None:
        if self.path is not None:
            self._write("trace_marker", text)

    def drain(self) -> list[str]:
        """Everything buffered so far (consumed), as lines."""
        if self._pipe is None:
            return []
        chunks = []
        while True:
            try:
                data = os.read(self._pipe, 1 << 16)
            except BlockingIOError:
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks).decode("utf-8", "replace").splitlines()

    def close(self) -> None:
        if self._pipe is not None:
            os.close(self._pipe)
            self._pipe = None
        if self.path is not None:
            with contextlib.suppress(OSError):
                self._write("tracing_on", "0")
            with contextlib.suppress(OSError):
                self._write("set_event", "")
            with contextlib.suppress(OSError):
                self._write("set_event_pid", "")
            _rmdir_retry(self.path)
            self.path = None
        if self.private_mount is not None:
            subprocess.run(["umount", str(self.private_mount)], check=False, capture_output=True)
            with contextlib.suppress(OSError):
                self.private_mount.rmdir()
            self.private_mount = None


def _rmdir_retry(path: Path) -> None:
    for _ in range(50):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:  # EBUSY while a reader is still closing
            if exc.errno != errno.EBUSY:
                raise
            os.sched_yield()


_STALE = re.compile(rf"^{re.escape(INSTANCE_PREFIX)}(\d+)-\d+$")


def remove_stale_instances(root: Path) -> list[str]:
    """Remove our instances whose recorder process no longer exists (e.g. killed with SIGKILL)."""
    removed = []
    inst = root / "instances"
    if not inst.is_dir():
        return removed
    for d in inst.iterdir():
        m = _STALE.match(d.name)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            with contextlib.suppress(OSError):
                _rmdir_retry(d)
                removed.append(d.name)
    return removed


def our_instances() -> list[str]:
    """Names of pks-difftest instances in tracefs (mounting it privately for a moment if needed)."""
    root = tracefs_mount()
    tmp: Path | None = None
    if root is None:
        tmp = Path(tempfile.mkdtemp(prefix="pksdt-tracefs-"))
        if subprocess.run(["mount", "-t", "tracefs", "nodev", str(tmp)], check=False, capture_output=True).returncode:
            tmp.rmdir()
            return []
        root = tmp
    try:
        inst = root / "instances"
        return sorted(d.name for d in inst.iterdir() if d.name.startswith(INSTANCE_PREFIX)) if inst.is_dir() else []
    finally:
        if tmp is not None:
            subprocess.run(["umount", str(tmp)], check=False, capture_output=True)
            tmp.rmdir()


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt like SIGINT does, so cleanup runs."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
