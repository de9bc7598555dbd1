"""Known outcomes: what a corpus declares it expects of each trace under each policy.

A corpus directory may hold a ``known-outcomes.toml`` (format: ``docs/known-outcomes.md``).  For a
trace and a policy it declares one of

* ``pass``    -- the replay must show no divergence;
* ``diverge`` -- a known divergence: its ``bug`` id, the ``rule`` and the ``event`` (0-based row,
  snapshots counted) where the FIRST divergence must happen;
* ``na``      -- not applicable, with the reason (``why``).

:mod:`difftest.verdict.run_status` turns a replay and its declaration into PASS, FAIL, XFAIL, XPASS or
SKIP.  A trace is governed by the known-outcomes files of its own directory and of every ancestor
directory (the nearest declaration wins), so a corpus copied elsewhere keeps its declarations.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import tomllib

from difftest.errors import InputError
from reference_model.rules import RULES

FILE_NAME = "known-outcomes.toml"
FORMAT_VERSION = 1
VERDICTS = ("pass", "diverge", "na")
_CELL_KEYS = {"verdict", "bug", "rule", "event", "why"}
_TOP_KEYS = {"format", "policies", "cells", "extra"}


@dataclass(frozen=True)
class KnownOutcome:
    """One declaration: what ``policy`` must do with the traces ``pattern`` names (see module doc)."""

    source: str  # the file and key that declared it, for messages: "traces/bugs/known-outcomes.toml: B16@kvm-v7"
    pattern: str
    policy: str
    verdict: str  # pass | diverge | na
    bug: str | None = None
    rule: str | None = None
    event: int | None = None
    why: str = ""

    def describe(self) -> str:
        """A short phrase for reports: 'known B16 at event 12 KVM.CTL' / 'not applicable: ...'."""
        if self.verdict == "diverge":
            return f"known {self.bug} at event {self.event} {self.rule}"
        if self.verdict == "na":
            return f"not applicable: {self.why}"
        return "declared pass"


@dataclass
class KnownOutcomesFile:
    """The declarations of one file; trace keys are paths relative to its directory, without ``.parquet``."""

    path: Path
    base: Path  # the folder trace keys are relative to (resolved)
    exact: dict[tuple[str, str], KnownOutcome] = field(default_factory=dict)
    globs: list[KnownOutcome] = field(default_factory=list)

    def lookup(self, key: str, policy: str) -> KnownOutcome | None:
        hit = self.exact.get((key, policy)) or self.exact.get((key, "*"))
        if hit is not None:
            return hit
        for k in self.globs:  # file order: the first matching glob wins
            if fnmatch.fnmatchcase(key, k.pattern) and (k.policy == "*" or fnmatch.fnmatchcase(policy, k.policy)):
                return k
        return None


def _is_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def _cell(src: str, key: str, policy: str, raw: Any, known_policy: Any) -> KnownOutcome:
    where = f"cells.{key}.{policy}"
    if not isinstance(raw, dict):
        raise InputError(src, "expected a table {verdict = ...}", column=where)
    extra = set(raw) - _CELL_KEYS
    if extra:
        raise InputError(src, f"unknown key(s) {', '.join(sorted(extra))} (known: {', '.join(sorted(_CELL_KEYS))})",
                         column=where)
    verdict = raw.get("verdict")
    if verdict not in VERDICTS:
        raise InputError(src, f"verdict must be one of {', '.join(VERDICTS)}, got {verdict!r}", column=where)
    why = raw.get("why", "")
    if not isinstance(why, str):
        raise InputError(src, "why must be a string", column=where)
    if not _is_glob(policy) and not known_policy(policy):
        raise InputError(src, f"unknown policy {policy!r} (see `difftest policies`)", column=where)
    bug = rule = event = None
    if verdict == "diverge":
        bug, rule, event = raw.get("bug"), raw.get("rule"), raw.get("event")
        if not isinstance(bug, str) or not bug:
            raise InputError(src, "a known divergence needs its bug id (bug = \"B16\")", column=where)
        if not isinstance(rule, str) or rule not in RULES:
            raise InputError(src, f"rule {rule!r} is not a rule id (see `difftest rules`)", column=where)
        if not isinstance(event, int) or isinstance(event, bool) or event < 0:
            raise InputError(src, f"event must be a row index >= 0, got {event!r}", column=where)
    else:
        stray = {"bug", "rule", "event"} & set(raw)
        if stray:
            raise InputError(src, f"{', '.join(sorted(stray))} only belong to verdict = \"diverge\"", column=where)
        if verdict == "na" and not why:
            raise InputError(src, "not applicable needs a reason (why = \"...\")", column=where)
    return KnownOutcome(f"{src}: {key}@{policy}", key, policy, verdict, bug, rule, event, why)


def _registered_policy(name: str) -> bool:
    from reference_model.policies import POLICIES

    return name in POLICIES or name.endswith(".toml")


def load_known_outcomes(path: str | os.PathLike[str], *, check_traces: bool = True) -> KnownOutcomesFile:
    """Read and check one file; any mistake is an :class:`InputError` naming the file and the key.

    ``check_traces``: an exact trace key must name a ``.parquet`` file next to the declarations
    (a misspelt key would otherwise declare nothing, silently).
    """
    p = Path(path)
    src = str(p)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(src, f"cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise InputError(src, "not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(src, f"not TOML ({exc})") from None
    except RecursionError:  # tomllib parses nested arrays recursively
        raise InputError(src, "not TOML (nested too deeply)") from None
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise InputError(src, f"unknown top-level key(s) {', '.join(sorted(unknown))}", column=sorted(unknown)[0])
    version = data.get("format", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise InputError(src, f"format {version!r} is not supported (this difftest reads {FORMAT_VERSION})",
                         column="format")
    cells = data.get("cells", {})
    if not isinstance(cells, dict):
        raise InputError(src, "expected a table [cells.\"trace\"]", column="cells")
    out = KnownOutcomesFile(p, p.resolve().parent)
    for key, row in cells.items():
        if not isinstance(row, dict):
            raise InputError(src, "expected a table of policy = {verdict = ...}", column=f"cells.{key}")
        if check_traces and not _is_glob(key) and not (p.parent / f"{key}.parquet").is_file():
            raise InputError(src, f"no trace {key}.parquet next to this file (a typo?)", column=f"cells.{key}")
        for policy, raw in row.items():
            k = _cell(src, key, policy, raw, _registered_policy)
            if _is_glob(key) or _is_glob(policy):
                out.globs.append(k)
            else:
                out.exact[(key, policy)] = k
    return out


def _file_in(directory: str) -> KnownOutcomesFile | None:
    """The file of ``directory``, read once per version (its path, size and mtime key the cache)."""
    candidate = Path(directory) / FILE_NAME
    try:
        st = candidate.stat()
    except OSError:
        return None
    return _load_cached(str(candidate), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=256)
def _load_cached(path: str, size: int, mtime_ns: int) -> KnownOutcomesFile:
    return load_known_outcomes(path)


class KnownOutcomes:
    """The declarations that govern a set of traces: every trace's own directory and its ancestors,
    plus files given explicitly (``--known FILE``, which outrank the discovered ones)."""

    def __init__(self, explicit: Sequence[str | os.PathLike[str]] = (), discover: bool = True) -> None:
        self.explicit = [load_known_outcomes(f) for f in explicit]
        self.discover = discover
        self._dirs: dict[str, tuple[Path, list[KnownOutcomesFile]]] = {}  # per trace folder, as given

    def _folder(self, directory: str) -> tuple[Path, list[KnownOutcomesFile]]:
        """A trace folder resolved, and the files that govern its traces (looked up once per folder)."""
        hit = self._dirs.get(directory)
        if hit is None:
            d = Path(directory).resolve()
            files = list(self.explicit)
            if self.discover:
                for parent in (d, *d.parents):
                    f = _file_in(str(parent))
                    if f is not None:
                        files.append(f)
            hit = self._dirs[directory] = (d, files)
        return hit

    def files_for(self, trace: Path) -> list[KnownOutcomesFile]:
        return self._folder(str(Path(trace).parent))[1]

    def lookup(self, trace: str | os.PathLike[str], policy: str) -> KnownOutcome | None:
        """The declaration for ``trace`` under ``policy``, or None when nothing is declared."""
        p = Path(trace)
        folder, files = self._folder(str(p.parent))
        t = folder / p.name
        for f in files:
            try:
                rel = t.relative_to(f.base)
            except ValueError:
                continue
            hit = f.lookup(rel.as_posix().removesuffix(".parquet"), policy)
            if hit is not None:
                return hit
        return None

    def used_files(self, traces: Iterable[Path]) -> list[Path]:
        """The files that govern ``traces``, for 'known outcomes from ...' lines."""
        seen: dict[Path, None] = {}
        for t in traces:
            for f in self.files_for(Path(t)):
                seen.setdefault(f.path, None)
        return list(seen)


NO_KNOWN_OUTCOMES = KnownOutcomes(discover=False)
