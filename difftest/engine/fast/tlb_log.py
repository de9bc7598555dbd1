"""A CPU's TLB set that logs, by row, the flushes and INVLPGs applied to it.

The fast path evaluates page accesses late, on columns, so their TLB fills are applied after the
rows that follow them have run.  A fill is kept unless a later flush or INVLPG of its page dropped
it; the log says which, by the row clock the replay keeps.
"""

from __future__ import annotations


class TlbLog(set):  # type: ignore[type-arg]
    """A TLB set (page bases) with a log of (row, page base) INVLPGs and (row, None) flushes."""

    def __init__(self, items: set[int], clock: list[int]) -> None:
        super().__init__(items)
        self.clock = clock
        self.log: list[tuple[int, int | None]] = []
        self.path: tuple[int, str] | None = None  # (vCPU, level) once a TransitionCache adopts it
        self.ops: list[tuple[str, int | None]] | None = None  # every change, in order, while a step is recorded

    def clear(self) -> None:
        self.log.append((self.clock[0], None))
        if self.ops is not None:
            self.ops.append(("clear", None))
        super().clear()

    def discard(self, base: int) -> None:  # type: ignore[override]  # page bases only
        self.log.append((self.clock[0], base))
        if self.ops is not None:
            self.ops.append(("discard", base))
        super().discard(base)

    def add(self, base: int) -> None:
        if self.ops is not None:
            self.ops.append(("add", base))
        super().add(base)

    def replay(self, ops: tuple[tuple[str, int | None], ...]) -> None:
        """Apply recorded changes again (at the current clock)."""
        for op, base in ops:
            if op == "clear":
                self.clear()
            elif op == "discard":
                self.discard(base)  # type: ignore[arg-type]
            else:
                self.add(base)  # type: ignore[arg-type]
