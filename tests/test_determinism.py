"""One input, one answer: the corpus replayed, compared and reported twice gives byte-identical
JSON/JSONL, and generate/fuzz with one seed give identical files.

The two runs are separate processes with different ``PYTHONHASHSEED``: a result that depends on
set or dict-of-str iteration order, on timing or on the process would differ between them.
(JUnit carries run times by design, and the text summaries print seconds, so they are not compared.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "traces"
pytestmark = pytest.mark.e2e


def _difftest(args: list[str], cwd: Path, hash_seed: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONHASHSEED": str(hash_seed)}
    return subprocess.run([sys.executable, "-m", "difftest.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Report, compare, replay, generate and fuzz, each done once in run0/ and once in run1/."""
    runs = []
    for n, hash_seed in enumerate((0, 4242)):
        d = tmp_path_factory.mktemp(f"run{n}")
        r = _difftest(["report", str(CORPUS), "-o", "report", "--jsonl", "corpus.jsonl"], d, hash_seed)
        assert r.returncode in (0, 1) and "error" not in r.stderr, r.stderr
        r = _difftest(["compare", str(CORPUS), "--policy", "hw", "--against", "kvm-v7", "--json"], d, hash_seed)
        assert r.returncode in (0, 1), r.stderr
        (d / "compare.json").write_text(r.stdout)
        for trace in ("bugs/B14-nested-restore-stale-l1-pkrs.parquet", "real/kvm-pvm-pks-baseline.parquet",
                      "arch/V1-ad-wp1-sup-write.parquet"):
            r = _difftest(["replay", str(CORPUS / trace), "--json"], d, hash_seed)
            assert r.returncode in (0, 1), r.stderr
            (d / f"replay-{Path(trace).stem}.json").write_text(r.stdout)
        for domain in ("arch", "kvm", "nested", "pkvm"):
            r = _difftest(["generate", "--seed", "11", "--events", "400", "--domain", domain,
                           "-o", f"gen-{domain}.parquet"], d, hash_seed)
            assert r.returncode == 0, r.stderr
        r = _difftest(["fuzz", "--policy", "kvm-rfc-v1", "--against", "kvm-v7", "--seed", "3", "--iterations", "40",
                       "-o", "fuzz"], d, hash_seed)
        assert r.returncode in (0, 1), r.stderr
        runs.append(d)
    return runs[0], runs[1]


def test_report_jsonl_is_byte_identical(two_runs: tuple[Path, Path]) -> None:
    a, b = two_runs
    assert (a / "corpus.jsonl").read_bytes() == (b / "corpus.jsonl").read_bytes()
    assert (a / "report" / "results.jsonl").read_bytes() == (b / "report" / "results.jsonl").read_bytes()
    lines = (a / "corpus.jsonl").read_text().splitlines()
    assert len(lines) >= len(list(CORPUS.rglob("*.parquet")))  # every trace is in it (once per policy)


def test_compare_and_replay_json_are_byte_identical(two_runs: tuple[Path, Path]) -> None:
    a, b = two_runs
    names = sorted(p.name for p in a.glob("*.json"))
    assert len(names) == 4
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
        assert (a / name).stat().st_size > 100


def test_generate_with_one_seed_gives_identical_files(two_runs: tuple[Path, Path]) -> None:
    a, b = two_runs
    gen_a = {k: v for k, v in _files(a).items() if k.startswith("gen-")}
    assert len(gen_a) == 4
    assert gen_a == {k: v for k, v in _files(b).items() if k.startswith("gen-")}


def test_fuzz_with_one_seed_gives_identical_files(two_runs: tuple[Path, Path]) -> None:
    a, b = two_runs
    fuzz_a, fuzz_b = _files(a / "fuzz"), _files(b / "fuzz")
    assert fuzz_a, "the fuzz run kept no divergence, so there is nothing to compare"
    assert fuzz_a == fuzz_b
