"""A resumable fuzz campaign: a directory that any number of runs, on any number of nodes, continue.

Iteration ``i`` of seed ``S`` is a pure function of (S, i) (:func:`~difftest.search.fuzz.iteration_plan`),
so "what was tried" is a set of iteration numbers.  They are handed out in chunks of ``CHUNK``; a run
takes a chunk by creating ``claims/<chunk>`` exclusively (``O_EXCL``: on a shared filesystem two
runs or two nodes never take the same one), and marks it ``done/<chunk>`` with what it found when
every iteration in it has been compared.  Each new kind of divergence is shrunk and kept as
``<rule>-<kind>.parquet`` (written atomically; a kind already in the directory is never kept again).
``campaign.json`` fixes the policies, seed and trace size: a second run with other ones is refused.
A claim whose run died is taken over, so a crash loses no chunk: on the same host when its process
is gone; from any host when it is older than ``LEASE_SECONDS`` (a run renews the claims it holds while
it waits for them, and a chunk takes seconds), since a node that died cannot say so.

With ``cluster`` (a Ray address, :mod:`difftest.cluster`) the chunks a run claims are compared as Ray
tasks and their results stream back into the same directory; shrinking stays on the driver, which
also holds the claims.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from difftest.errors import InputError
from difftest.trace.io import process_exists, write_text_atomic
from difftest.variants import resolve_policy
from difftest.verdict.profiles import get_profile

from .fuzz import iteration_plan
from .generate import generate
from .shrink import DivergenceKind, Goal, shrink

CHUNK = 64  # iterations per claim
LEASE_SECONDS = 600.0  # a claim not renewed for this long is its dead run's, whichever host it names


@dataclass(frozen=True)
class CampaignSpec:
    """What a campaign compares: fixed for its directory's lifetime."""

    policy_a: str
    policy_b: str
    seed: int = 0
    max_events: int = 30
    profile: str = "strict"


@dataclass
class CampaignRun:
    """What one run of a campaign did (the directory holds what all runs did)."""

    spec: CampaignSpec
    chunks: list[int] = field(default_factory=list)  # chunks this run compared
    iterations: int = 0
    differing: int = 0
    kept: list[Path] = field(default_factory=list)  # divergences this run shrunk and kept
    seconds: float = 0.0


def _compare_chunk(job: tuple[CampaignSpec, int]) -> tuple[int, list[tuple[int, str, str]]]:
    """Every iteration of chunk ``c``: (c, [(iteration, rule, event kind) of each that differs]).  Runs anywhere."""
    spec, c = job
    a, b = resolve_policy(spec.policy_a), resolve_policy(spec.policy_b)
    goal = Goal(a, b, get_profile(spec.profile))
    found = []
    for i in range(c * CHUNK, (c + 1) * CHUNK):
        trace_seed, domain, events = iteration_plan(spec.seed, i, spec.max_events)
        hit = goal.first(generate(trace_seed, events, domain, b))
        if hit is not None:
            found.append((i, hit[0].rule, hit[0].kind))
    return c, found


class Campaign:
    """One campaign directory (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike[str], spec: CampaignSpec) -> None:
        self.dir = Path(directory)
        self.spec = spec
        (self.dir / "claims").mkdir(parents=True, exist_ok=True)
        (self.dir / "done").mkdir(exist_ok=True)
        meta = self.dir / "campaign.json"
        want = json.dumps(spec.__dict__, sort_keys=True)
        if meta.exists():
            have = meta.read_text()
            if json.loads(have) != spec.__dict__:
                raise InputError(str(meta), f"this campaign compares {have.strip()}, not {want}")
        else:
            write_text_atomic(meta, want + "\n")

    # -- claims --------------------------------------------------------------------------------
    def _claim(self, c: int) -> bool:
        path = self.dir / "claims" / str(c)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return self._take_over(c, path)
        with os.fdopen(fd, "w") as f:
            f.write(f"{socket.gethostname()} {os.getpid()}\n")
        return True

    def _take_over(self, c: int, path: Path) -> bool:
        """A claim of a run that died (see the module docstring) and never finished the chunk."""
        if (self.dir / "done" / str(c)).exists():
            return False
        me = socket.gethostname()
        try:
            host, pid = path.read_text().split()
            age = time.time() - path.stat().st_mtime
            holder = int(pid)
        except (OSError, ValueError):
            return False
        if host == me and holder == os.getpid():
            return False
        if age < LEASE_SECONDS and (host != me or process_exists(holder)):
            return False  # (a live run's, or another node's that may be alive)
        tmp = path.with_name(f".{c}.{os.getpid()}")
        tmp.write_text(f"{me} {os.getpid()}\n")
        os.replace(tmp, path)  # (the last of two racing take-overs wins; re-read to see who)
        return path.read_text().split() == [me, str(os.getpid())]

    def renew(self, chunks: list[int]) -> None:
        """Renew this run's claims on ``chunks`` (still being compared), so that no other run takes them over."""
        for c in chunks:
            with contextlib.suppress(OSError):  # (gone: someone cleaned the directory; recorded as done anyway)
                os.utime(self.dir / "claims" / str(c))

    def claims(self) -> Iterator[int]:
        """Chunks this run takes, lowest first, skipping those claimed or done."""
        c = 0
        while True:
            if not (self.dir / "done" / str(c)).exists() and self._claim(c):
                yield c
            c += 1

    def tried(self) -> int:
        """Iterations compared so far, by every run."""
        return CHUNK * sum(1 for _ in (self.dir / "done").iterdir())

    def kept_kinds(self) -> set[str]:
        return {p.stem for p in self.dir.glob("*.parquet")}

    # -- results -------------------------------------------------------------------------------
    def record(self, run: CampaignRun, c: int, found: list[tuple[int, str, str]]) -> None:
        """Keep (shrunk) each new kind among a compared chunk's differences, then mark the chunk done."""
        spec = self.spec
        a, b = resolve_policy(spec.policy_a), resolve_policy(spec.policy_b)
        goal = Goal(a, b, get_profile(spec.profile))
        kept = self.kept_kinds()
        for i, rule, kind in found:
            slug = DivergenceKind(rule, kind).slug()
            if slug in kept:
                continue
            trace_seed, domain, events = iteration_plan(spec.seed, i, spec.max_events)
            res = shrink(generate(trace_seed, events, domain, b), goal)
            small = res.draft
            small.meta.update({
                "name": res.kind.slug(),
                "description": f"{a.name} and {b.name} differ first on {res.kind}",
                "source": f"difftest fuzz --campaign --policy {a.name} --against {b.name} --seed {spec.seed} "
                          f"(iteration {i}, {domain} domain, {res.original_events} events shrunk to {small.events})",
                "policy": b.name,
                "notes": f"expectations are {b.name}'s outcomes; {a.name} diverges from them",
            })
            run.kept.append(small.write(self.dir / f"{res.kind.slug()}.parquet"))
            kept.add(slug)
        write_text_atomic(self.dir / "done" / str(c), json.dumps([list(f) for f in found]) + "\n")
        run.chunks.append(c)
        run.iterations += CHUNK
        run.differing += len(found)


def run_campaign(directory: str | os.PathLike[str], spec: CampaignSpec, *, budget_seconds: float = 60.0,
                 chunks: int | None = None, cluster: str | None = None) -> CampaignRun:
    """Continue the campaign in ``directory`` for ``budget_seconds`` (or exactly ``chunks`` chunks)."""
    campaign = Campaign(directory, spec)
    run = CampaignRun(spec)
    t0 = time.monotonic()

    def more() -> bool:
        if chunks is not None:
            return len(run.chunks) < chunks
        return time.monotonic() - t0 < budget_seconds

    claims = campaign.claims()
    if cluster is None:
        while more():
            c = next(claims)
            campaign.record(run, *_compare_chunk((spec, c)))
    else:
        from difftest import cluster as ray_cluster

        width = 2 * ray_cluster.workers(cluster)  # chunks in flight: two per cluster CPU
        while more():
            batch = [next(claims) for _ in range(width if chunks is None else min(width, chunks - len(run.chunks)))]
            waiting = list(batch)
            for c, found in ray_cluster.map_unordered(_compare_chunk, [(spec, c) for c in batch], cluster):
                campaign.record(run, c, found)
                waiting.remove(c)
                campaign.renew(waiting)
    run.seconds = time.monotonic() - t0
    return run
