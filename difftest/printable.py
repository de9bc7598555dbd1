"""One way to show text that came from an input: control characters escaped, length capped.

A trace's name, path, metadata and notes, a policy name from a variant file, a line of a capture:
any of these may hold terminal escapes (``\\x1b]0;title\\x07`` retitles a terminal), newlines that
break a one-line error, or a megabyte that floods the screen.  Every sink that is not HTML (the
terminal, the text report, JUnit, JSONL) shows such text through :func:`printable`; the HTML page
escapes markup itself and gets the same control-character treatment from the result objects.
"""

from __future__ import annotations

import re

MAX_FIELD = 240  # characters of one input-derived field in any output (names, paths, notes)
ELLIPSIS = "\u2026"

# C0 controls, DEL, C1 controls (0x9b is a one-byte CSI), line and paragraph separators, bidi
# overrides and isolates (they reorder what the user sees), and lone surrogates (file names that
# are not UTF-8 arrive as surrogate escapes and cannot be encoded for output).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _escape(m: re.Match[str]) -> str:
    c = ord(m.group())
    if 0xDC80 <= c <= 0xDCFF:  # a byte of a non-UTF-8 file name (surrogateescape)
        return f"\\x{c - 0xDC00:02x}"
    return f"\\x{c:02x}" if c <= 0xFF else f"\\u{c:04x}"


def printable(text: object, limit: int = MAX_FIELD) -> str:
    """``text`` with every control character shown as ``\\xNN`` and at most ``limit`` characters
    (cut with an ellipsis).  Idempotent on its own output except for the cut."""
    s = text if isinstance(text, str) else str(text)
    if len(s) > limit * 4:  # do not escape a megabyte to show 240 characters of it
        s = s[: limit * 4]
        cut = True
    else:
        cut = False
    if _UNSAFE.search(s):
        s = _UNSAFE.sub(_escape, s)
    if cut or len(s) > limit:
        return s[: limit - 1] + ELLIPSIS
    return s


def is_printable(text: str) -> bool:
    """True when ``text`` holds no character :func:`printable` would escape."""
    return _UNSAFE.search(text) is None
