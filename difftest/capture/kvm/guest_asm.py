"""Assemble guest code at run time with GNU as/ld (binutils), cached by a hash of the source.

A flat binary linked at the address the guest runs it from; the cache key covers the source,
the mode and the base address, so a changed program is never served stale.  The cache lives in
``$XDG_CACHE_HOME/pks-difftest/guest`` (or ``~/.cache``), written atomically.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

MODES = {"real": ".code16", "long": ".code64"}


class AssemblerMissing(RuntimeError):
    """GNU as/ld are not installed (Debian package binutils)."""


def assembler_missing() -> str | None:
    """None if `as` and `ld` are on PATH, else why not."""
    missing = [t for t in ("as", "ld") if shutil.which(t) is None]
    return f"{' and '.join(missing)} not found (install binutils)" if missing else None


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pks-difftest" / "guest"


def source_text(source: str, mode: str) -> str:
    return f".intel_syntax noprefix\n{MODES[mode]}\n.globl _start\n_start:\n{source}\n"


def cache_key(source: str, mode: str, base: int) -> str:
    return hashlib.sha256(f"{mode}\0{base:#x}\0{source_text(source, mode)}".encode()).hexdigest()[:32]


def assemble(source: str, mode: str, base: int, *, cache: Path | None = None) -> bytes:
    """The flat binary of ``source`` (Intel syntax) for ``mode`` ("real" or "long") linked at ``base``."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}")
    where = cache or cache_dir()
    cached = where / f"{cache_key(source, mode, base)}.bin"
    if cached.is_file():
        return cached.read_bytes()
    why = assembler_missing()
    if why:
        raise AssemblerMissing(why)
    with tempfile.TemporaryDirectory(prefix="pksdt-as-") as tmp:
        src, obj, out = Path(tmp, "g.s"), Path(tmp, "g.o"), Path(tmp, "g.bin")
        src.write_text(source_text(source, mode))
        _run(["as", "--64", "-o", str(obj), str(src)])
        _run(["ld", "-m", "elf_x86_64", f"-Ttext={base:#x}", "-e", "_start", "--oformat", "binary",
              "-o", str(out), str(obj)])
        code = out.read_bytes()
    where.mkdir(parents=True, exist_ok=True)
    fd, tmpname = tempfile.mkstemp(dir=where, prefix=".", suffix=".tmp")
    with os.fdopen(fd, "wb") as fh:
        fh.write(code)
    os.replace(tmpname, cached)
    return code


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {proc.stderr.strip()[:500]}")
