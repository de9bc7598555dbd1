"""The long fuzz run of every reader (not a test; the bounded one is tests/test_robust_fuzz.py).

    python bench/fuzz_readers.py                    # 10,000 inputs per reader
    python bench/fuzz_readers.py -n 500 -r toml     # fewer, one reader
    python bench/fuzz_readers.py --seed 7           # another random stream (default: derandomized)

Every input is a hostile file from tests/hostile_inputs.py; the run does not stop at the first
crash but counts, per reader, the inputs tried, how many the reader accepted or rejected with an
InputError, and every distinct crash (exception type and message head, with one reproducer saved
under --keep).  Exit code 1 if anything crashed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from hostile_inputs import READERS, Crash, check_reader


def fuzz(reader_name: str, examples: int, seed: int | None, keep: Path) -> tuple[Counter[str], dict[str, str], float]:
    reader = READERS[reader_name]
    counts: Counter[str] = Counter()
    crashes: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix=f"pksdt-fuzz-{reader_name}-") as tmp:
        work = Path(tmp)

        @settings(max_examples=examples, deadline=None, database=None, derandomize=seed is None,
                  suppress_health_check=list(HealthCheck))
        @given(data=reader.strategy())
        def run(data: bytes) -> None:
            counts["tried"] += 1
            try:
                counts[check_reader(reader, data, work)] += 1
            except Crash as exc:
                counts["crashed"] += 1
                key = str(exc).splitlines()[0][:160]
                if key not in crashes:
                    keep.mkdir(parents=True, exist_ok=True)
                    repro = keep / f"{reader_name}-{len(crashes)}{reader.suffix}"
                    repro.write_bytes(data)
                    crashes[key] = str(repro)

        if seed is not None:
            run = settings(derandomize=False)(run)  # type: ignore[assignment]
            from hypothesis import seed as hseed
            run = hseed(seed)(run)  # type: ignore[assignment]
        t0 = time.perf_counter()
        run()
        return counts, crashes, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--examples", type=int, default=10_000, help="inputs per reader (default 10000)")
    ap.add_argument("-r", "--reader", action="append", choices=sorted(READERS), help="only these readers")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: derandomized, reproducible)")
    ap.add_argument("--keep", type=Path, default=Path(tempfile.gettempdir()) / "pksdt-fuzz-crashes",
                    help="where to save one reproducer per distinct crash")
    args = ap.parse_args()
    bad = False
    print(f"{'reader':<8} {'tried':>7} {'accepted':>9} {'rejected':>9} {'crashed':>8} {'seconds':>8}")
    for name in args.reader or list(READERS):
        counts, crashes, secs = fuzz(name, args.examples, args.seed, args.keep)
        print(f"{name:<8} {counts['tried']:>7} {counts['accepted']:>9} {counts['rejected']:>9} {counts['crashed']:>8} "
              f"{secs:>8.1f}", flush=True)
        for key, repro in crashes.items():
            print(f"  CRASH {key}\n        reproducer: {repro}")
        bad |= bool(crashes)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
