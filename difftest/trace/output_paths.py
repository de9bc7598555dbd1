"""Outputs checked before work starts, and report folders replaced as a whole.

A run that replays for ten minutes and then cannot write its report has wasted ten minutes and
ends in a traceback; so every command checks, before any work, that each output it was given
can be written (:func:`check_writable`: exit 2 naming the path).  A report folder holds files
that belong together (``index.html`` links ``results.jsonl``), so :class:`ReplacedDir` builds the
new folder beside the old one and swaps the two in one step: a kill at any moment leaves either
the old report or the new one, never a mixture.  Leftover build folders of killed runs are
removed by the next run.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re
import shutil
import tempfile
from pathlib import Path
from types import TracebackType

from difftest.errors import InputError
from difftest.trace.io import process_exists


def check_writable(path: str | os.PathLike[str]) -> None:
    """InputError unless a file can be created or replaced at ``path`` (its folder may not exist yet:
    then the nearest existing ancestor must be a writable folder)."""
    p = Path(path)
    if p.is_dir():
        raise InputError(str(p), "is a folder; expected a file to write")
    _check_folder(p.parent, str(p))


def check_writable_dir(path: str | os.PathLike[str]) -> None:
    """InputError unless ``path`` is or can become a folder we replace (see :class:`ReplacedDir`)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InputError(str(p), "exists and is not a folder")
    _check_folder(p.absolute().parent, str(p))


def _check_folder(folder: Path, what: str) -> None:
    d = folder if str(folder) else Path(".")
    while not d.exists():
        if d.parent == d:
            break
        d = d.parent
    if not d.is_dir():
        raise InputError(what, f"cannot write here: {d} is not a folder")
    if not os.access(d, os.W_OK | os.X_OK):
        raise InputError(what, f"cannot write here: no write permission in {d}")


_BUILD = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]{8}\.(?:new|old)")


def remove_stale_builds(dest: Path) -> list[Path]:
    """Remove build and retired folders of ``dest`` left by runs that were killed (their pid is gone)."""
    removed: list[Path] = []
    try:
        siblings = list(dest.parent.iterdir()) if dest.parent.is_dir() else []
    except OSError:
        return removed
    for p in siblings:
        m = _BUILD.fullmatch(p.name)
        if m and m.group("name") == dest.name and int(m.group("pid")) != os.getpid() \
                and not process_exists(int(m.group("pid"))) and p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP if hasattr(errno, "ENOTSUP") else errno.EINVAL):
        return False
    raise OSError(err, os.strerror(err), str(b))


class ReplacedDir:
    """``with ReplacedDir(dest) as tmp:`` write the folder's files into ``tmp``; on success ``tmp``
    becomes ``dest`` in one atomic exchange (the old folder is then deleted); on any exception
    ``tmp`` is removed and ``dest`` is untouched."""

    def __init__(self, dest: str | os.PathLike[str]) -> None:
        self.dest = Path(dest)
        self.tmp: Path | None = None

    def __enter__(self) -> Path:
        parent = self.dest.absolute().parent
        parent.mkdir(parents=True, exist_ok=True)
        remove_stale_builds(self.dest)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.dest.name}.{os.getpid()}.", suffix=".new", dir=parent))
        os.chmod(self.tmp, 0o777 & ~_umask())
        return self.tmp

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        assert self.tmp is not None
        if et is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        try:
            if not self.dest.exists():
                os.rename(self.tmp, self.dest)
                return
            if _exchange(self.tmp, self.dest):  # tmp now holds the old report
                shutil.rmtree(self.tmp, ignore_errors=True)
                return
            # no atomic exchange here: the old folder moves aside first (a kill between the two renames
            # leaves no folder at dest; the old report is then in .NAME.PID.*.old until the next run)
            old = self.tmp.with_name(self.tmp.name[: -len(".new")] + ".old")
            os.rename(self.dest, old)
            os.rename(self.tmp, self.dest)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
