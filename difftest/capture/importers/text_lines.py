"""Lines of a captured text file, streamed, bounded and numbered the way ``grep -n`` numbers them.

Captures are split on ``\\n`` only: a form feed, a NEL (U+0085), a line separator or a lone
carriage return inside a line is part of that line (``str.splitlines`` and universal-newline
mode would start a new line there and every later error would name the wrong line).  A
``\\r\\n`` ending is accepted as ``\\n``.  A line longer than the limit is cut (the rest is
read and dropped, so memory stays bounded) and flagged.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TextIO


def numbered_lines(fh: TextIO, limit: int) -> Iterator[tuple[int, str, bool]]:
    """``(line number, text without its line ending, cut)`` for every line of ``fh``, which must be
    opened with ``newline=""`` (no translation); ``cut`` says the line was longer than ``limit``."""
    n = 0
    pending = ""  # a line split at a lone CR by the reader: glued back together
    while True:
        part = fh.readline(limit + 1)
        if not part:
            if pending:
                n += 1
                yield n, pending, False
            return
        # readline with newline="" ends a line at \r, \n or \r\n; only \n ends a line here
        if part.endswith("\r") and not part.endswith("\n"):
            if len(pending) + len(part) > limit:
                text, n, pending = (pending + part)[:limit], n + 1, ""
                _drop_rest(fh, limit)
                yield n, text, True
                continue
            pending += part
            continue
        line = pending + part
        pending = ""
        if not line.endswith("\n") and len(line) > limit:
            n += 1
            _drop_rest(fh, limit)
            yield n, line[:limit], True
            continue
        n += 1
        text = line[:-1] if line.endswith("\n") else line
        if text.endswith("\r"):
            text = text[:-1]
        if len(text) > limit:
            yield n, text[:limit], True
            continue
        yield n, text, False


def _drop_rest(fh: TextIO, limit: int) -> None:
    """Read and drop the rest of an over-long line, up to and including its ``\\n``."""
    while True:
        rest = fh.readline(limit)
        if not rest or rest.endswith("\n"):
            return
