"""Bad input: one error type that always renders as one line naming file, row and column."""

from __future__ import annotations

from .printable import printable

MAX_MESSAGE = 400  # characters of message after the location
MAX_PATH = 400  # characters of the file's path (a name may be hostile too: escaped, capped)


class InputError(Exception):
    """A trace, variant or capture that cannot be used as given (CLI exit code 2)."""

    def __init__(self, path: str, message: str, *, row: int | None = None, seq: int | None = None,
                 column: str | None = None, line: int | None = None) -> None:
        self.path = str(path)
        self.message = message
        self.row = row
        self.seq = seq
        self.column = column
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = [printable(self.path, MAX_PATH)]
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.row is not None:
            where.append(f"event {self.row}" + (f" (seq {self.seq})" if self.seq is not None else ""))
        if self.column is not None:
            where.append(f"column '{_one_line(self.column, 80)}'")
        text = _one_line(self.message, MAX_MESSAGE)  # a hostile value quoted in it must not flood the terminal
        return f"{': '.join(where)}: {text}"


def _one_line(text: str, limit: int) -> str:
    """``text`` on one line (whitespace runs become one space, other control characters escaped),
    at most ``limit`` characters."""
    return printable(" ".join(text[: limit * 4].split()), limit)
