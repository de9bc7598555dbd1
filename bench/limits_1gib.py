"""A 1 GiB trace streams within the memory target (peak RSS <= 1 GiB, issue 8) — not a test.

    python bench/limits_1gib.py              # build ~1 GiB of trace in a temp dir, replay it, report
    python bench/limits_1gib.py --gib 0.25   # smaller

The trace is MSR traffic with random 64-bit values and, by default, a random 160-character note
per row (so zstd cannot shrink it and 1 GiB is ~6 M rows: minutes of replay on this machine;
``--note-bytes 0`` gives the row-heavy variant, ~75 M rows).  It is written in row groups of
1 Mi rows with pyarrow directly (numpy columns; the builder would take far longer).
``difftest replay`` runs in a subprocess; its peak RSS is its own ``VmHWM`` (bench/measure.py: wait4's
figure would include this process, which built the file).  Prints one
line: ``RESULT file_mib=... rows=... replay_s=... events_per_s=... peak_rss_mib=... exit=...``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from difftest.trace.io import rows_to_table

sys.path.insert(0, str(Path(__file__).resolve().parent))
import measure

GROUP = 1 << 20
TARGET_RSS_MIB = 1024


def build(path: Path, gib: float, note_bytes: int) -> tuple[int, int]:
    """Write row groups until the file holds ``gib`` GiB; return (rows, bytes)."""
    schema = rows_to_table([], {"producer": "synthetic", "name": "limits-1gib", "policy": "hw"}).schema
    rng = np.random.default_rng(1)
    kinds = pa.array(["wrmsr", "rdmsr"]).dictionary_encode()
    rows = 0
    with pq.ParquetWriter(path, schema, compression="zstd") as w:
        while path.stat().st_size < gib * (1 << 30):
            n = GROUP
            cols = {}
            for f in schema:
                cols[f.name] = pa.nulls(n, f.type)
            cols["seq"] = pa.array(np.arange(rows, rows + n, dtype=np.uint64))
            pick = rng.integers(0, 2, n).astype(np.int32)
            cols["kind"] = pa.DictionaryArray.from_arrays(pa.array(pick), kinds.dictionary)
            cols["vcpu"] = pa.array(np.zeros(n, dtype=np.uint16))
            cols["level"] = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)), pa.array(["l1"]))
            cols["msr"] = pa.array(np.full(n, 0xC0000102, dtype=np.uint32))  # KERNEL_GS_BASE: any value, no #GP
            cols["value"] = pa.array(rng.integers(0, 1 << 63, n, dtype=np.uint64))
            cols["exp_result"] = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)), pa.array(["ok"]))
            cols["exp_value"] = pa.array(rng.integers(0, 1 << 63, n, dtype=np.uint64),
                                         mask=pick == 0)  # rdmsr rows expect a (random) value
            if note_bytes:
                raw = rng.integers(0, 256, (n, note_bytes // 2), dtype=np.uint8)
                cols["note"] = pa.array([r.tobytes().hex() for r in raw]).dictionary_encode()
            w.write_table(pa.Table.from_pydict(cols, schema=schema), row_group_size=GROUP)
            rows += n
    return rows, path.stat().st_size


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--note-bytes", type=int, default=160, help="random note characters per row (0: none)")
    ap.add_argument("--keep", type=Path, default=None, help="build the trace here and keep it")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pksdt-1gib-") as tmp:
        path = (args.keep or Path(tmp)) / "big.parquet"
        t0 = time.perf_counter()
        rows, size = build(path, args.gib, args.note_bytes)
        print(f"built {path}: {size / 2**20:.0f} MiB, {rows:,} rows in {time.perf_counter() - t0:.0f} s", flush=True)
        t0 = time.perf_counter()
        secs, rss, code, output, wait4_rss = measure.run(
            [sys.executable, "-m", "difftest.cli", "replay", str(path), "--policy", "hw"], timeout=7200)
        err = output.decode(errors="replace") if code not in (0, 1) else ""
        print(f"replay: exit {code} in {secs:.1f} s, peak RSS {rss:.0f} MiB (target {TARGET_RSS_MIB} MiB; wait4 says "
              f"{wait4_rss:.0f} MiB, which includes this process's own size: see bench/measure.py)"
              + (f"; stderr: {err.strip()[:300]}" if err.strip() else ""))
        print(f"RESULT file_mib={size / 2**20:.0f} rows={rows} replay_s={secs:.1f} events_per_s={rows / secs:.0f} "
              f"peak_rss_mib={rss:.0f} exit={code}")
        return 0 if rss <= TARGET_RSS_MIB and code in (0, 1) else 1


if __name__ == "__main__":
    sys.exit(main())
