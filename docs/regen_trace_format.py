"""Refresh the generated tables of docs/trace-format.md from difftest.trace.schema.render_markdown().

    python docs/regen_trace_format.py          # rewrite the generated part in place
    python docs/regen_trace_format.py --check  # exit 1 if the document has drifted from the code

Only the text between the BEGIN/END GENERATED markers is replaced; the prose around it is kept,
so the schema tables can never disagree with difftest/trace/schema.py (tests/unit/test_trace_format_doc.py
fails when they do).
"""

from __future__ import annotations

import sys
from pathlib import Path

from difftest.trace.io import write_text_atomic
from difftest.trace.schema import render_markdown

DOC = Path(__file__).resolve().parent / "trace-format.md"
BEGIN = "<!-- BEGIN GENERATED -->"
END = "<!-- END GENERATED -->"


def generated_part(text: str) -> str:
    """The text between the markers (ValueError if they are missing or out of order)."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{DOC.name}: markers {BEGIN} ... {END} not found in order")
    return text[start + len(BEGIN):end].strip("\n") + "\n"


def splice(text: str, generated: str) -> str:
    """``text`` with the part between the markers replaced by ``generated``."""
    generated_part(text)  # validates the markers
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{generated.rstrip()}\n{END}{tail}"


def main(argv: list[str]) -> int:
    text = DOC.read_text(encoding="utf-8")
    fresh = render_markdown()
    if "--check" in argv:
        if generated_part(text) != fresh:
            print(f"{DOC}: generated tables are stale; run python docs/regen_trace_format.py", file=sys.stderr)
            return 1
        return 0
    new = splice(text, fresh)
    if new != text:
        write_text_atomic(DOC, new)
        print(f"updated {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
