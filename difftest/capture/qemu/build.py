"""Assemble and link a guest with GNU as/ld, cached by the hash of its source.

QEMU's multiboot loader takes only ELF32 images, so the ELF64 that ld links is converted with
objcopy (pks_semantics §4.2).  The cache (``$XDG_CACHE_HOME/pks-difftest/qemu``) makes a second
recording of the same trace skip the toolchain entirely.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from difftest.capture.qemu.runtime import LINKER_SCRIPT

TOOLS = ("as", "ld", "objcopy")


class BuildError(RuntimeError):
    """The toolchain rejected a generated guest (a compiler bug, never bad input)."""


def missing_tools() -> list[str]:
    """The toolchain commands that are not on PATH."""
    return [t for t in TOOLS if shutil.which(t) is None]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pks-difftest" / "qemu"


def build_image(source: str, cache: Path | None = None) -> Path:
    """The ELF32 multiboot image for ``source`` (built, or taken from the cache)."""
    digest = hashlib.sha256((source + LINKER_SCRIPT).encode()).hexdigest()[:24]
    root = cache or cache_dir()
    image = root / f"guest-{digest}.elf"
    if image.is_file():
        return image
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pksdt-guest-") as tmp:
        t = Path(tmp)
        (t / "guest.S").write_text(source)
        (t / "link.ld").write_text(LINKER_SCRIPT)
        steps = (
            ["as", "--64", "-o", "guest.o", "guest.S"],
            ["ld", "-m", "elf_x86_64", "-z", "max-page-size=0x1000", "-T", "link.ld", "-o", "guest64.elf", "guest.o"],
            ["objcopy", "-O", "elf32-i386", "guest64.elf", "guest.elf"],
        )
        for cmd in steps:
            proc = subprocess.run(cmd, cwd=t, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                keep = root / f"failed-{digest}.S"
                keep.write_text(source)
                raise BuildError(f"{cmd[0]} failed ({proc.stderr.strip()[:400]}); source kept in {keep}")
        fd, tmp_image = tempfile.mkstemp(prefix=".guest-", dir=root)
        os.close(fd)
        shutil.copyfile(t / "guest.elf", tmp_image)
        os.replace(tmp_image, image)
    return image
