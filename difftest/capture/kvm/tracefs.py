"""A private tracefs instance that captures the kvm tracepoints of this process's threads only.

Recipe: sources/kvm_recorder.md §3.1.  The instance has its own ring buffer, event enables and
``set_event_pid`` (thread ids, so ``options/event-fork`` adds threads and children started
later); it is drained non-blocking through ``trace_pipe`` between scenarios, because clearing
the buffer costs ~21 ms.  :class:`TraceInstance` is a context manager.  Each recorder mounts
tracefs privately under a name carrying its pid (``pksdt-tracefs-<pid>-*``) and never adopts
another's mount; its instance is ``pksdt-<pid>-<n>``.  Every acquire and release is safe from
SIGINT/SIGTERM (:mod:`.cleanup`), and the next run removes, and reports, the instances and
mounts of recorders that died (SIGKILL) without cleaning up.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from .cleanup import Resources

INSTANCE_PREFIX = "pksdt-"
MOUNT_PREFIX = "pksdt-tracefs-"
# Whole event systems: every kvm tracepoint and KVM's MMU ones (the emulated page walks live in kvmmmu).
DEFAULT_SYSTEMS = ("kvm", "kvmmmu")
DEFAULT_EVENTS = DEFAULT_SYSTEMS  # older name
_STALE_INSTANCE = re.compile(rf"^{re.escape(INSTANCE_PREFIX)}(\d+)-\d+$")
_STALE_MOUNT = re.compile(rf"^{re.escape(MOUNT_PREFIX)}(\d+)-")


def tracefs_mounts() -> list[Path]:
    """Every tracefs mount point (from /proc/mounts)."""
    out = []
    try:
        with open("/proc/mounts", encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) > 2 and parts[2] == "tracefs":
                    out.append(Path(parts[1].replace("\\040", " ")))
    except OSError:
        pass
    return out


def tracefs_mount() -> Path | None:
    """A tracefs mount that is nobody's private one (e.g. /sys/kernel/tracing), if any."""
    return next((m for m in tracefs_mounts() if not m.name.startswith(MOUNT_PREFIX)), None)


def tracefs_unusable() -> str | None:
    """None if a tracefs instance can be made here (root, tracefs present), else why not."""
    if os.geteuid() != 0:
        return "tracefs needs root"
    if not Path("/sys/kernel/tracing").is_dir() and not Path("/sys/kernel/debug").is_dir():
        return "no tracefs in this kernel"
    return None


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def _mount_private(resources: Resources) -> Path:
    """A tracefs mount of our own, named by our pid (so a later run can tell whether we are alive)."""
    def make() -> Path:
        where = Path(tempfile.mkdtemp(prefix=f"{MOUNT_PREFIX}{os.getpid()}-"))
        try:
            subprocess.run(["mount", "-t", "tracefs", "nodev", str(where)], check=True, capture_output=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            where.rmdir()
            detail = exc.stderr.decode(errors="replace").strip() if isinstance(exc, subprocess.CalledProcessError) else exc
            raise OSError(errno.EPERM, f"cannot mount tracefs at {where}: {detail}") from None
        return where

    return resources.acquire("private tracefs mount", make, _unmount)


def _unmount(where: Path) -> None:
    """Unmount our private tracefs.  Another program that scans /proc/mounts for "a" tracefs (libtracefs,
    an older recorder) may hold it for a moment: retry, then detach it lazily (it leaves the mount tree at
    once and the kernel frees it when that holder lets go); fail only if even that is refused."""
    for attempt in range(21):
        args = ["umount", str(where)] if attempt < 20 else ["umount", "-l", str(where)]
        res = subprocess.run(args, check=False, capture_output=True)
        if res.returncode == 0 or where not in tracefs_mounts():
            break
        time.sleep(0.01)
    else:
        raise OSError(errno.EBUSY, f"umount {where}: {res.stderr.decode(errors='replace').strip()}")
    with contextlib.suppress(FileNotFoundError):
        where.rmdir()


def remove_stale(root: Path) -> list[str]:
    """Remove instances and private mounts of recorders that are no longer running; say what went."""
    said = []
    for m in tracefs_mounts():
        hit = _STALE_MOUNT.match(m.name)
        if hit and not _alive(int(hit.group(1))):
            try:
                _unmount(m)
                said.append(f"removed stale tracefs mount {m} left by recorder pid {hit.group(1)} (not running)")
            except OSError as exc:
                said.append(f"could not remove stale tracefs mount {m} of pid {hit.group(1)}: {exc}")
    inst = root / "instances"
    if inst.is_dir():
        for d in sorted(inst.iterdir()):
            hit = _STALE_INSTANCE.match(d.name)
            if hit and not _alive(int(hit.group(1))):
                try:
                    _rmdir_retry(d)
                    said.append(f"removed stale tracefs instance {d.name} left by recorder pid {hit.group(1)} "
                                "(not running)")
                except OSError as exc:
                    said.append(f"could not remove stale tracefs instance {d.name}: {exc}")
    return said


def remove_stale_instances(root: Path) -> list[str]:  # older name
    return remove_stale(root)


class TraceInstance:
    """``<private tracefs>/instances/pksdt-<pid>-<n>``, pid-filtered on this process with event-fork.

    Every recorder mounts tracefs privately (``pksdt-tracefs-<pid>-*``) and never uses another's
    mount; what it creates is released in reverse order, each step safe from SIGINT/SIGTERM.
    """

    def __init__(self, events: tuple[str, ...] = DEFAULT_SYSTEMS, buffer_kb: int = 8192) -> None:
        self.events = events  # event systems ("kvm") or single kvm events ("kvm_msr")
        self.buffer_kb = buffer_kb
        self.root: Path | None = None
        self.private_mount: Path | None = None
        self.path: Path | None = None
        self.enabled: list[str] = []
        self.stale: list[str] = []  # what remove_stale said
        self._pipe: int | None = None
        self._res = Resources()

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
        self.private_mount = self.root = root = _mount_private(self._res)
        self.stale = remove_stale(root)
        pid = os.getpid()

        def make() -> Path:
            for n in range(100):
                cand = root / "instances" / f"{INSTANCE_PREFIX}{pid}-{n}"
                try:
                    cand.mkdir()
                except FileExistsError:
                    continue
                return cand
            raise OSError(errno.EEXIST, "no free tracefs instance name")

        self.path = self._res.acquire("tracefs instance", make, self._remove_instance)
        self._write("tracing_on", "0")
        self._write("trace_clock", "mono")
        self._write("buffer_size_kb", str(self.buffer_kb))
        self._write("options/event-fork", "1")
        self._write("set_event_pid", str(pid))
        for ev in self.events:
            enable = (self.path / "events" / ev / "enable") if "_" not in ev else (
                self.path / "events" / "kvm" / ev / "enable")
            if enable.exists():
                _control(enable, "1")
                self.enabled.append(ev)
        self._write("tracing_on", "1")
        pipe = self.path / "trace_pipe"
        self._pipe = self._res.acquire("trace_pipe fd", lambda: os.open(pipe, os.O_RDONLY | os.O_NONBLOCK),
                                       self._close_pipe)

    def _close_pipe(self, fd: int) -> None:
        self._pipe = None
        os.close(fd)

    def _remove_instance(self, path: Path) -> None:
        for name, text in (("tracing_on", "0"), ("set_event", ""), ("set_event_pid", "")):
            with contextlib.suppress(OSError):
                _control(path / name, text)
        _rmdir_retry(path)
        self.path = None

    def _write(self, name: str, text: str) -> None:
        assert self.path is not None
        _control(self.path / name, text)

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

    def close(self) -> list[str]:
        """Release the pipe, the instance and the mount; returns what could not be released."""
        failures = self._res.release_all()
        self.private_mount = None
        return failures


def _control(path: Path, text: str) -> None:
    """Write a tracefs control file (not an output: nothing to make atomic)."""
    path.write_text(text + "\n")


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
    path.rmdir()


def our_instances() -> list[str]:
    """Names of pks-difftest instances in tracefs (through a private mount made for the moment)."""
    if os.geteuid() != 0:
        return []
    res = Resources()
    try:
        root = _mount_private(res)
        inst = root / "instances"
        return sorted(d.name for d in inst.iterdir() if d.name.startswith(INSTANCE_PREFIX)) if inst.is_dir() else []
    except OSError:
        return []
    finally:
        res.release_all()


def our_mounts() -> list[Path]:
    """Private tracefs mounts of pks-difftest recorders (any pid)."""
    return [m for m in tracefs_mounts() if m.name.startswith(MOUNT_PREFIX)]


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
