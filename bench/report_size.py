"""Benchmark (not a test): the HTML report's size and render time at 1,000 and 10,000 traces (issue 19).

    python bench/report_size.py              # 1,000 and 10,000 traces
    python bench/report_size.py --sizes 1000 # one size

The corpus is bench/workload.write_corpus: the repository's traces copied round-robin (about one
run in eight diverges, in a dozen distinct ways, like the real corpus under kvm-v7).  For each size:

* in-process, the corpus is replayed (``run_corpus``, 2 workers), judged, grouped, the runs shown
  in detail get their timelines and the page is rendered: the render time (everything after the
  replay) is compared with the replay time (issue budget: under 20%), and the page's bytes with
  the budget (1,000 traces: 1.5 MB; 10,000: 8 MB);
* at 1,000 traces, ``difftest report`` and ``difftest report -o DIR`` run as subprocesses (start-up
  included, same ``--jobs``): ``report -o`` time relative to ``report``.

bench/run.py calls :func:`measure` and adds its numbers to the RESULT line.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import measure
import workload

REPO = Path(__file__).resolve().parent.parent
BUDGET_BYTES = {1_000: 1_500_000, 10_000: 8_000_000}
JOBS = 2


def page_in_process(corpus: Path) -> dict[str, float]:
    """Replay, judge and render ``corpus`` in this process: replay seconds, render seconds, page bytes."""
    sys.path.insert(0, str(REPO))
    from difftest.report.corpus import record_timelines, run_corpus
    from difftest.report.coverage import rule_coverage
    from difftest.report.failure_groups import group_runs
    from difftest.report.html import render_report, timeline_runs
    from difftest.trace.io import find_traces
    from difftest.verdict.known_outcomes import KnownOutcomes

    traces = find_traces([str(corpus)])
    t0 = time.perf_counter()
    run = run_corpus(traces, [], None, jobs=JOBS, progress=False)
    t1 = time.perf_counter()
    known = KnownOutcomes()
    for r in run.results:
        r.judge(known.lookup(r.trace, r.policy))
    notes = record_timelines(run, timeline_runs(group_runs(run.results)))
    html = render_report(run, rule_coverage(run.results), timeline_notes=notes)
    t2 = time.perf_counter()
    return {"runs": len(run.results), "replay_s": t1 - t0, "render_s": t2 - t1, "bytes": len(html.encode())}


def cli_seconds(args: list[str]) -> float:
    wall, _, code, output, _ = measure.run([sys.executable, "-m", "difftest.cli", *args], 3600, None)
    if code not in (0, 1):
        raise RuntimeError(f"difftest {' '.join(args)} failed ({code}): {output[-2000:].decode()}")
    return wall


def measure_sizes(tmp: Path, sizes: tuple[int, ...] = (1_000, 10_000)) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    """Lines for the benchmark table and numbers for the RESULT line."""
    lines: list[tuple[str, str]] = []
    numbers: dict[str, Any] = {}
    for n in sizes:
        corpus = workload.write_corpus(tmp / f"report-corpus-{n}", n, REPO / "traces")
        m = page_in_process(corpus)
        budget = BUDGET_BYTES.get(n)
        pct = 100 * m["render_s"] / m["replay_s"]
        lines.append((f"report page, {n:,} traces",
                      f"{m['bytes'] / 1e6:.2f} MB" + (f" (budget {budget / 1e6:.1f} MB)" if budget else "")
                      + f"; {m['runs']:,} runs replayed in {m['replay_s']:.1f} s (--jobs {JOBS}), rendered in "
                      f"{m['render_s']:.2f} s = {pct:.1f}% of the replay (budget 20%)"))
        key = f"{n // 1000}k"
        numbers[f"page_mb_{key}"] = m["bytes"] / 1e6
        numbers[f"render_pct_{key}"] = pct
        if n == sizes[0]:
            out = tmp / f"report-out-{n}"
            t_plain = cli_seconds(["report", str(corpus), "--jobs", str(JOBS)])
            t_html = cli_seconds(["report", str(corpus), "--jobs", str(JOBS), "-o", str(out)])
            lines.append((f"report -o vs report, {n:,} traces",
                          f"{t_html:.1f} s vs {t_plain:.1f} s = {t_html / t_plain:.2f}x (subprocesses, start-up included)"))
            numbers["report_o_ratio"] = t_html / t_plain
    return lines, numbers


def result_fields(numbers: dict[str, Any]) -> str:
    """The RESULT-line fields (``nan`` for a size not measured)."""
    def f(key: str, fmt: str) -> str:
        v = numbers.get(key)
        return "nan" if v is None else format(v, fmt)

    return (f"page_mb_1k={f('page_mb_1k', '.2f')} page_mb_10k={f('page_mb_10k', '.2f')} "
            f"render_pct_1k={f('render_pct_1k', '.1f')} render_pct_10k={f('render_pct_10k', '.1f')} "
            f"report_o_ratio={f('report_o_ratio', '.2f')}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pksdt-report-bench-") as tmp:
        lines, numbers = measure_sizes(Path(tmp), tuple(args.sizes))
    width = max(len(k) for k, _ in lines)
    for k, v in lines:
        print(f"  {k:<{width}}  {v}")
    print("RESULT " + result_fields(numbers))


if __name__ == "__main__":
    main()
