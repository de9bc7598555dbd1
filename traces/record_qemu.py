"""Record every trace of traces/arch/ under QEMU TCG into traces/qemu/ (needs qemu-system-x86_64).

    python traces/record_qemu.py

Each recording keeps the arch trace's events; its expectations are what QEMU did.  Replay with
``difftest replay traces/qemu/X.parquet --policy hw --profile qemu``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from difftest.capture.qemu.recorder import TraceInput, record
from difftest.trace.io import open_trace, write_trace

HERE = Path(__file__).resolve().parent


def main() -> int:
    sources = sorted((HERE / "arch").glob("*.parquet"))
    inputs = []
    for p in sources:
        tf = open_trace(p)
        inputs.append(TraceInput(tf.name, list(tf.rows()), dict(tf.meta)))
    t0 = time.perf_counter()
    boots: list = []
    recordings = record(inputs, log=boots)
    wall = time.perf_counter() - t0
    out_dir = HERE / "qemu"
    for p, rec in zip(sources, recordings, strict=True):
        write_trace(out_dir / p.name, rec.rows, rec.meta)
    events = sum(r.recorded for r in recordings)
    skipped = sum(len(r.not_recorded) for r in recordings)
    per_boot = sum(b.seconds for b in boots) / max(1, len(boots))
    print(f"{len(recordings)} traces, {len(boots)} boots, {events} rows recorded, {skipped} not recorded; "
          f"wall {wall:.1f} s, {per_boot:.2f} s per boot, {1000 * wall / max(1, events):.1f} ms per recorded row")
    return 0


if __name__ == "__main__":
    sys.exit(main())
