"""Fuzz campaign claims (issue 21): a dead run's chunk is taken over, a live run's never, nothing twice."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from difftest.search.campaign import LEASE_SECONDS, Campaign, CampaignSpec

SPEC = CampaignSpec("kvm-v4", "kvm-v7")


def _claim_file(camp: Path, c: int, host: str, pid: int, age: float = 0.0) -> Path:
    path = camp / "claims" / str(c)
    path.write_text(f"{host} {pid}\n")
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid  # (reaped: no process has it now, short of reuse within this test)


def test_a_fresh_claim_is_taken_and_a_done_chunk_never(tmp_path: Path) -> None:
    camp = Campaign(tmp_path, SPEC)
    (tmp_path / "done" / "0").write_text("[]\n")
    claims = camp.claims()
    assert next(claims) == 1
    assert (tmp_path / "claims" / "1").read_text().split() == [socket.gethostname(), str(os.getpid())]
    assert next(claims) == 2


def test_a_claim_whose_process_died_on_this_host_is_taken_over(tmp_path: Path) -> None:
    camp = Campaign(tmp_path, SPEC)
    _claim_file(tmp_path, 0, socket.gethostname(), _dead_pid())
    _claim_file(tmp_path, 1, socket.gethostname(), os.getppid())  # alive: our parent
    claims = camp.claims()
    assert next(claims) == 0
    assert next(claims) == 2
    assert (tmp_path / "claims" / "1").read_text().split()[1] == str(os.getppid())


def test_another_nodes_claim_is_taken_over_only_when_its_lease_ran_out(tmp_path: Path) -> None:
    camp = Campaign(tmp_path, SPEC)
    _claim_file(tmp_path, 0, "some-other-node", 12345, age=LEASE_SECONDS + 60)  # its node died long ago
    _claim_file(tmp_path, 1, "some-other-node", 12345, age=5)  # a node at work
    claims = camp.claims()
    assert next(claims) == 0
    assert next(claims) == 2


def test_a_live_process_on_this_host_loses_a_claim_it_stopped_renewing(tmp_path: Path) -> None:
    """A pid that lives on may be another process by now (pid reuse): the lease settles it."""
    camp = Campaign(tmp_path, SPEC)
    _claim_file(tmp_path, 0, socket.gethostname(), os.getppid(), age=LEASE_SECONDS + 60)
    assert next(camp.claims()) == 0


def test_renewing_keeps_a_claim(tmp_path: Path) -> None:
    camp = Campaign(tmp_path, SPEC)
    path = _claim_file(tmp_path, 0, "some-other-node", 12345, age=LEASE_SECONDS + 60)
    Campaign(tmp_path, SPEC).renew([0])  # (what the holder does while its chunk is being compared)
    assert time.time() - path.stat().st_mtime < LEASE_SECONDS
    assert next(camp.claims()) == 1
