"""The pytest plugin (issue 20 item 7, statuses of issue 19): ``pytest --difftest DIR``.

One item per trace and policy; the known outcomes decide xfail (strict: only the declared
divergence satisfies it) and skip.  Expectations: the issue's status definitions, and SPEC
ARCH.RIGHTS for the small traces (AD(1), PKRS = 0x4, denies a supervisor read of a key-1 page).
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest
from report_corpus import PAGE, PKRS_AD1, write_wd_write

from difftest import TraceBuilder

ROOT = Path(__file__).resolve().parents[1]


def _plugin_args() -> list[str]:
    """``-p difftest.pytest_plugin`` unless the installed distribution already registers it (pytest11)."""
    eps = importlib.metadata.entry_points(group="pytest11")
    installed = any(ep.value == "difftest.pytest_plugin" for ep in eps)
    return [] if installed else ["-p", "difftest.pytest_plugin"]


def run_pytest(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "pytest", *_plugin_args(), "-p", "no:cacheprovider", "-q", "-rfxXs",
                           *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _diverging(path: Path, name: str) -> int:
    t = TraceBuilder(name, "expects ok where AD(1) faults", policy="hw", long_mode=True)
    t.cpuid(pks=True).cr4(pks=True).wrmsr(0x6E1, PKRS_AD1)
    t.access(PAGE, key=1).expect_ok(rule="ARCH.RIGHTS")
    t.write(path)
    return len(t.rows()) - 1


def test_items_per_trace_and_policy_with_known_outcomes(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    write_wd_write(corpus / "ok.parquet")
    event = _diverging(corpus / "known.parquet", "known")
    _diverging(corpus / "moved.parquet", "moved")
    _diverging(corpus / "na.parquet", "na")
    write_wd_write(corpus / "gone.parquet")
    _diverging(corpus / "new.parquet", "new")
    (corpus / "known-outcomes.toml").write_text(
        f'[cells.known]\nhw = {{ verdict = "diverge", bug = "K1", event = {event}, rule = "ARCH.RIGHTS" }}\n'
        f'[cells.moved]\nhw = {{ verdict = "diverge", bug = "K2", event = {event - 1}, rule = "ARCH.RIGHTS" }}\n'
        '[cells.na]\nhw = { verdict = "na", why = "not for the bare CPU" }\n'
        f'[cells.gone]\nhw = {{ verdict = "diverge", bug = "K3", event = {event}, rule = "ARCH.RIGHTS" }}\n')
    res = run_pytest(tmp_path, "--difftest", str(corpus), "--difftest-policy", "hw")
    out = res.stdout
    assert res.returncode == 1, out
    assert "3 failed, 1 passed, 1 skipped, 1 xfailed" in out
    assert "XFAIL corpus/known.parquet::hw - known K1" in out
    assert "FAILED corpus/moved.parquet::hw" in out  # the known divergence at another event
    assert "FAILED corpus/new.parquet::hw" in out
    assert "[XPASS(strict)] known K3" in out  # the declared bug did not show
    assert "not applicable: not for the bare CPU" in out
    assert "ARCH.RIGHTS" in out and "first divergence at event" in out  # the failure shows the replay


def test_without_the_option_nothing_is_collected(tmp_path: Path) -> None:
    write_wd_write(tmp_path / "ok.parquet")
    (tmp_path / "test_x.py").write_text("def test_x():\n    pass\n")
    res = run_pytest(tmp_path)
    assert res.returncode == 0 and "1 passed" in res.stdout


@pytest.mark.e2e
def test_bundled_corpus_passes_with_known_divergences_as_xfail() -> None:
    res = run_pytest(ROOT, "--difftest", "traces/")
    assert res.returncode == 0, res.stdout[-3000:]
    for bug in ("B16", "B18", "D1", "D5", "QEMU-D5"):
        assert f"known {bug} at event" in res.stdout
    assert " failed" not in res.stdout.splitlines()[-1]
