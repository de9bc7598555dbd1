"""JSON Lines output of a corpus run: one row per trace x policy, byte-for-byte reproducible.

A row is :meth:`ReplayResult.to_json` (no timings), serialised with sorted keys, in run order
(traces sorted by path, policies in the order they were asked for).  Two runs of the same
corpus and code give the same file, so the file can be diffed and used as a ``--baseline``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from difftest.trace.io import write_text_atomic
from difftest.verdict.results import ReplayResult


def jsonl_rows(results: Iterable[ReplayResult]) -> str:
    """The JSONL text of ``results`` (one line per run, keys sorted)."""
    return "".join(json.dumps(r.to_json(), sort_keys=True, ensure_ascii=False) + "\n" for r in results)


def write_jsonl(path: str | os.PathLike[str], results: Iterable[ReplayResult]) -> Path:
    """Write the JSONL file atomically."""
    return write_text_atomic(path, jsonl_rows(results))
