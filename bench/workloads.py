"""The workloads users have (issue 21), each measured as a ratio inside one run of bench/run.py.

* generated traces (``difftest generate``) of the kvm, nested and arch domains: default (fast) engine
  against the reference engine, and against a plain pyarrow scan of the same file;
* the hostile shapes of bench/shapes.py (4,000 vCPUs, 16,000 pages, 20,000 one-row row groups, u64
  addresses): the default engine's time over the reference's (the target is at most 1.5);
* a corpus of short scenario traces (the regression-report case): ``difftest report`` on the default
  engine against ``--reference``;
* fuzz throughput: candidate traces generated and compared per second, kvm-v4 against kvm-v7 and
  kvm-v7 against kvm-rebase (kvm-v7r where that policy is not registered);
* ``generate`` throughput in events per second.

Engine times are CPU seconds of this process (``time.process_time``), the two engines alternating,
the median of ``repeat`` runs each: on a shared, noisy 2-core machine that is what a ratio can rest on.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import shapes

from difftest.engine import compare_trace, replay_trace
from difftest.search.fuzz import fuzz
from difftest.search.generate import generate
from difftest.trace.io import open_trace
from difftest.verdict.profiles import get_profile
from reference_model.policies import POLICIES, get_policy

DOMAINS = ("kvm", "nested", "arch")
POLICY = "kvm-v7"


def cpu_seconds(fn: Callable[[], Any]) -> float:
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def engines_median(path: Path, repeat: int, policy: str = POLICY) -> tuple[float, float]:
    """(fast, reference) CPU seconds to replay ``path``, alternating, median of ``repeat`` each."""
    pol, prof = get_policy(policy), get_profile("strict")
    fast, ref = [], []
    for _ in range(repeat):
        fast.append(cpu_seconds(lambda: replay_trace(open_trace(path), pol, prof, engine="fast")))
        ref.append(cpu_seconds(lambda: replay_trace(open_trace(path), pol, prof, engine="reference")))
    return statistics.median(fast), statistics.median(ref)


def scan_seconds(path: Path) -> float:
    """CPU seconds to read every record batch of ``path`` with pyarrow (no Python per row)."""
    return cpu_seconds(lambda: sum(b.num_rows for b in pq.ParquetFile(path).iter_batches(batch_size=65_536)))


def generated(tmp: Path, events: int, repeat: int) -> tuple[list[tuple[str, str]], dict[str, float]]:
    """Generate one trace per domain (timed) and replay it on both engines."""
    lines: list[tuple[str, str]] = []
    nums: dict[str, float] = {}
    gen_events, gen_s = 0, 0.0
    for i, domain in enumerate(DOMAINS):
        path = tmp / f"gen-{domain}.parquet"
        t0 = time.process_time()
        draft = generate(1 + i, events, domain, get_policy(POLICY))
        draft.write(path)
        gen_s += time.process_time() - t0
        gen_events += draft.events
        fast, ref = engines_median(path, repeat)
        scan = scan_seconds(path)
        nums[f"gen_{domain}_speedup"] = ref / fast
        lines.append((f"generated {domain} trace, {draft.events:,} events",
                      f"default {draft.events / fast:,.0f} ev/s, reference {draft.events / ref:,.0f} ev/s: "
                      f"{ref / fast:.2f}x; pyarrow scan {scan:.2f} s = {fast / scan:.1f}x faster than the default"))
        path.unlink()
    nums["generate_eps"] = gen_events / gen_s
    lines.append(("difftest generate (in process)", f"{gen_events / gen_s:,.0f} events/s (generate + write, 3 domains)"))
    return lines, nums


def hostile(tmp: Path, scale: float, repeat: int) -> tuple[list[tuple[str, str]], dict[str, float]]:
    """Each hostile shape on both engines: default over reference time (target <= 1.5)."""
    lines: list[tuple[str, str]] = []
    nums: dict[str, float] = {}
    for shape in shapes.SHAPES:
        path = shapes.write(shape, tmp / f"shape-{shape}.parquet", scale)
        fast, ref = engines_median(path, repeat)
        nums[f"shape_{shape}_ratio"] = fast / ref
        lines.append((f"shape {shape} (scale {scale:g})", f"default {fast:.2f} s, reference {ref:.2f} s: "
                      f"default/reference = {fast / ref:.2f} (target <= 1.5)"))
        path.unlink()
    return lines, nums


def scenario_corpus(folder: Path, size: int) -> Path:
    """``size`` short generated scenario traces (4 to 40 events, every domain), one file each."""
    folder.mkdir(parents=True, exist_ok=True)
    domains = ("kvm", "nested", "arch", "pkvm")
    for i in range(size):
        generate(10_000 + i, 4 + (i * 7919) % 37, domains[i % 4], get_policy(POLICY)).write(folder / f"s{i:06}.parquet")
    return folder


def corpus_engines(folder: Path, limit: int) -> tuple[float, float]:
    """(default, reference) CPU seconds to replay the first ``limit`` traces of ``folder`` in process."""
    pol, prof = get_policy(POLICY), get_profile("strict")
    paths = sorted(folder.glob("*.parquet"))[:limit]
    fast = cpu_seconds(lambda: [replay_trace(open_trace(p), pol, prof, engine="fast") for p in paths])
    ref = cpu_seconds(lambda: [replay_trace(open_trace(p), pol, prof, engine="reference") for p in paths])
    return fast, ref


def fuzz_throughput(tmp: Path, iterations: int) -> tuple[list[tuple[str, str]], dict[str, float]]:
    """Candidates compared per second, and per candidate the share of a plain compare's time."""
    lines: list[tuple[str, str]] = []
    nums: dict[str, float] = {}
    rebase = "kvm-rebase" if "kvm-rebase" in POLICIES else "kvm-v7r"
    for a, b, key in (("kvm-v4", "kvm-v7", "fuzz_v4_v7_cps"), ("kvm-v7", rebase, "fuzz_v7_rebase_cps")):
        run = fuzz(get_policy(a), get_policy(b), tmp / f"fuzz-{a}-{b}", iterations=iterations, max_events=30)
        nums[key] = run.iterations / run.seconds
        lines.append((f"fuzz {a} vs {b}", f"{run.iterations / run.seconds:,.0f} candidates/s ({run.iterations} in "
                      f"{run.seconds:.1f} s, {run.differing} differing, {len(run.findings)} kept and shrunk)"))
    return lines, nums


def compare_engines(path: Path, repeat: int) -> float:
    """Reference over default CPU time of ``compare`` kvm-v7 vs kvm-v4 on ``path``."""
    a, b, prof = get_policy("kvm-v7"), get_policy("kvm-v4"), get_profile("strict")
    fast, ref = [], []
    for _ in range(repeat):
        fast.append(cpu_seconds(lambda: compare_trace(open_trace(path), a, b, prof, engine="fast")))
        ref.append(cpu_seconds(lambda: compare_trace(open_trace(path), a, b, prof, engine="reference")))
    return statistics.median(ref) / statistics.median(fast)


def ray_speedup(folder: Path, limit: int) -> tuple[str, float]:
    """``report --cluster`` on the first ``limit`` traces of ``folder``, on a local Ray head of 1 CPU, then of 2:
    (what happened, the 1-CPU time over the 2-CPU time).  Each head is started and stopped here."""
    import os
    import shutil
    import signal
    import socket
    import subprocess
    import sys

    ray_cli = shutil.which("ray")
    try:
        import ray  # noqa: F401
    except ImportError:
        return "not measured: Ray is not installed (pip install 'pks-difftest[cluster]')", float("nan")
    if ray_cli is None:
        return "not measured: no ray command", float("nan")
    part = folder.parent / f"{folder.name}-slice"
    part.mkdir(exist_ok=True)
    for p in sorted(folder.glob("*.parquet"))[:limit]:
        (part / p.name).symlink_to(p)
    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(repo) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    times = []
    for cpus in (1, 2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        head = subprocess.Popen([ray_cli, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
                                 f"--num-cpus={cpus}", "--include-dashboard=false", "--disable-usage-stats"],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            for _ in range(180):
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        break
                except OSError:
                    time.sleep(0.5)
            time.sleep(3)
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "difftest.cli", "report", str(part), "--cluster", f"127.0.0.1:{port}"],
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=7200, check=False)
            times.append(time.perf_counter() - t0)
        finally:
            os.killpg(head.pid, signal.SIGTERM)
            head.wait(timeout=120)
    return (f"{limit:,} traces: 1 worker {times[0]:.1f} s, 2 workers {times[1]:.1f} s "
            f"({times[0] / times[1]:.2f}x; start-up and connection included)"), times[0] / times[1]
