"""``report`` and ``fuzz`` on a Ray cluster: a local one this test starts (``ray start --head`` on 127.0.0.1,
two worker CPUs), stopped by its own process id at the end.  Skipped, with the reason, where Ray is not
installed or its head cannot start here.

What must hold: the report of a corpus on the cluster is the report made locally (results streamed
back and put in trace order); a fuzz campaign continued by a second run on the cluster tries nothing
the first tried, and keeps each kind of divergence once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'pks-difftest[cluster]')")
    ray_cli = shutil.which("ray")
    if ray_cli is None:
        pytest.skip("the ray command is not on PATH")
    port = _free_port()
    temp = tmp_path_factory.mktemp("ray")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("DIFFTEST_REFERENCE", None)
    head = subprocess.Popen(
        [ray_cli, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
         "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if head.poll() is not None:
                out = head.stdout.read().decode(errors="replace")[-600:] if head.stdout else ""
                pytest.skip(f"ray start --head failed here: {out}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.skip("the Ray head did not listen within 90 s")
        time.sleep(3)  # (the GCS listens before the raylet has registered)
        yield address
    finally:
        if head.poll() is None:
            os.killpg(head.pid, signal.SIGTERM)  # the group of the head we started (ray start --block cleans up)
            try:
                head.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(head.pid, signal.SIGKILL)
                head.wait()


def _difftest(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "difftest.cli", *args], capture_output=True, text=True, env=env,
                          timeout=900, cwd=ROOT)


def test_report_on_the_cluster_is_the_local_report(cluster: str, tmp_path: Path) -> None:
    corpus = [str(ROOT / "traces" / "arch"), str(ROOT / "traces" / "bugs")]
    local = _difftest("report", *corpus, "--jsonl", str(tmp_path / "local.jsonl"))
    remote = _difftest("report", *corpus, "--cluster", cluster, "--jsonl", str(tmp_path / "remote.jsonl"))
    assert remote.returncode == local.returncode, remote.stderr[-2000:]

    def rows(p: Path) -> list[dict[str, object]]:
        out = []
        for line in p.read_text().splitlines():
            row = json.loads(line)
            row.pop("seconds", None)
            out.append(row)
        return out

    assert rows(tmp_path / "remote.jsonl") == rows(tmp_path / "local.jsonl")
    assert remote.stdout.splitlines()[-3:] == local.stdout.splitlines()[-3:]


def test_fuzz_campaign_continues_on_the_cluster_with_nothing_tried_twice(cluster: str, tmp_path: Path) -> None:
    camp = tmp_path / "campaign"
    args = ("fuzz", "--policy", "kvm-v4", "--against", "kvm-v7", "-o", str(camp), "--iterations", "128")
    first = _difftest(*args, "--cluster", cluster)
    assert first.returncode in (0, 1), first.stderr[-2000:]
    done_first = sorted(int(p.name) for p in (camp / "done").iterdir())
    kept_first = sorted(p.name for p in camp.glob("*.parquet"))
    second = _difftest(*args, "--campaign")  # a second run, here locally, continues the same directory
    assert second.returncode in (0, 1), second.stderr[-2000:]
    done = sorted(int(p.name) for p in (camp / "done").iterdir())
    assert done_first == [0, 1] and done == [0, 1, 2, 3]  # the second run took the next chunks, none again
    kept = sorted(p.name for p in camp.glob("*.parquet"))
    assert set(kept_first) <= set(kept) and len(kept) == len(set(kept)) and kept_first
    assert "256 tried by the whole campaign" in second.stdout
    other = _difftest("fuzz", "--policy", "kvm-v5", "--against", "kvm-v7", "-o", str(camp), "--campaign")
    assert other.returncode == 2 and "campaign.json" in other.stderr  # another comparison: refused
