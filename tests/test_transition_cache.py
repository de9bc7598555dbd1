"""Memoised model steps (difftest.engine.fast.transitions) give exactly the reference path's answers.

Traces that repeat themselves are where transitions are reused: generated traces of every domain
played four times over, and the benchmark's steady-state workload (PKS toggles whose outcome depends
on the TLB, nested entries and exits, CR3 flushes).  Each is replayed and compared with the memo
always on, and with it switched off and on again every few steps, against the reference path
(``replay_rows`` / ``compare_trace`` row by row).  The machine's pickle, which is the memo's
state, must restore a machine that continues exactly as the original.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path
from typing import Any

import pytest
from test_fast_replay import assert_same_compare, assert_same_replay, drafts, plant_wrong_expectations

from difftest.engine.fast import replay as fast_replay
from difftest.engine.fast import transitions as tc
from difftest.engine.fast.replay import FastReplay, fast_replay_trace
from difftest.trace import io as trace_io
from difftest.trace.io import open_trace
from difftest.verdict.profiles import get_profile
from reference_model.host import DEFAULT_HOST
from reference_model.policies import get_policy

ROOT = Path(__file__).resolve().parent.parent


MEMO_INTERNALS = frozenset({
    "test_steady_state_is_served_by_transitions", "test_memoising_stops_on_a_trace_that_never_repeats",
    "test_tlb_peeks_agree_with_settling", "test_memoising_starts_early_on_a_trace_whose_events_repeat",
    "test_memoising_does_not_start_early_on_distinct_events"})


@pytest.fixture(autouse=True, params=["columns", "judge"])
def stretch_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every stretch on columns (where the memo works), or judged stretch by stretch as by default.

    The tests of the memo's own behaviour run on columns only: judged, most of their traces (short, or
    never repeating by design) are stepped by the model and never reach the memo.
    """
    if request.param == "judge" and request.node.originalname in MEMO_INTERNALS:
        pytest.skip("judged stretch by stretch, this trace is stepped by the model: the memo is not used")
    monkeypatch.setattr(fast_replay, "STRETCH_MODE", request.param)
    return str(request.param)


def repeated(draft: Any, times: int) -> list[dict[str, Any]]:
    """The draft's rows ``times`` over, with fresh sequence numbers."""
    rows = [dict(r) for _ in range(times) for r in draft.rows]
    for i, r in enumerate(rows):
        r["seq"] = i
    return rows


@pytest.fixture(scope="module")
def repeating(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("repeat")
    paths = []
    for domain, seed, draft in drafts((1, 2), 200):
        rows = plant_wrong_expectations(repeated(draft, 4), seed, share=0.01)
        paths.append(draft.with_rows(rows).write(folder / f"{domain}-{seed}-x4.parquet"))
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import workload
    finally:
        sys.path.pop(0)
    paths.append(workload.write_mixed_trace(folder / "steady.parquet", 30_000))
    return paths


def capture_memos(monkeypatch: pytest.MonkeyPatch) -> list[tc.TransitionCache]:
    """The transition cache of every fast replay run from now on, in order."""
    memos: list[tc.TransitionCache] = []
    original = FastReplay.run

    def run(self: FastReplay, batches: Any) -> Any:
        memos.append(self.lane.memo)
        return original(self, batches)

    monkeypatch.setattr(FastReplay, "run", run)
    return memos


@pytest.fixture(params=["always", "toggling"])
def memo_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """``always``: never switched off; ``toggling``: off after every 16-step window, on again one window later."""
    monkeypatch.setattr(tc, "WINDOW", 16)  # memoising starts after the first window
    if request.param == "always":
        monkeypatch.setattr(tc, "MAX_MISS_RATE", 2.0)
    else:
        monkeypatch.setattr(tc, "MAX_MISS_RATE", -1.0)
        monkeypatch.setattr(tc, "RETRY_AFTER", 1)
        monkeypatch.setattr(tc, "MAX_RETRY_AFTER", 1)
    return str(request.param)


def test_repeating_traces_replay_the_same(repeating: list[Path], memo_mode: str) -> None:
    for path in repeating:
        for policy in ("kvm-v7", "hw", "kvm-v4", "pkvm-pvm-allow5"):
            assert_same_replay(path, policy)


def test_repeating_traces_compare_the_same(repeating: list[Path], memo_mode: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    for path in repeating:
        assert_same_compare(path, "kvm-v7", "kvm-v4", monkeypatch)
    monkeypatch.setattr(trace_io, "BATCH_ROWS", 97)
    assert_same_compare(repeating[-1], "kvm-v7", "kvm-rfc-v1", monkeypatch)


def test_small_batches_replay_the_same(repeating: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tc, "MAX_MISS_RATE", 2.0)
    monkeypatch.setattr(tc, "WINDOW", 16)
    monkeypatch.setattr(trace_io, "BATCH_ROWS", 29)
    for path in repeating[::3]:
        assert_same_replay(path, "kvm-v7")


def test_steady_state_is_served_by_transitions(repeating: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """On the steady workload almost every stepped row is a remembered transition, PKS toggles included."""
    monkeypatch.setattr(tc, "WINDOW", 256)
    monkeypatch.setattr(tc, "MAX_MISS_RATE", 2.0)  # the warm-up (two blocks of misses) spans several small windows
    memos = capture_memos(monkeypatch)
    res = fast_replay_trace(open_trace(repeating[-1]), get_policy("kvm-v7"), get_profile("strict"))
    memo = memos[0]
    memo.window_done()
    assert memo.enabled and res.divergence_count == 0
    assert memo.hits > 4 * memo.misses > 0  # 30k rows: the first blocks of the workload are all misses
    plain = len(tc.event_key(_mov_cr4()))
    kids = {k & ((1 << tc.KEY_BITS) - 1) for k in memo.trans}
    assert any(len(memo.keys.keys[kid]) > plain for kid in kids)  # TLB-keyed (PKS toggle) transitions


def _mov_cr4() -> Any:
    from reference_model.events import Event
    return Event("mov_cr4", value=0)


def test_a_pickled_machine_continues_like_the_original(repeating: list[Path]) -> None:
    """The memo's state is the machine's pickle: restored mid-trace, it gives the same outcomes and state."""
    rows = [r for r in open_trace(repeating[0]).rows() if r.event is not None]
    for policy in ("kvm-v7", "hw", "pkvm-pvm-allow5", "kvm-rfc-v1"):
        m = get_policy(policy).build(DEFAULT_HOST)
        half = len(rows) // 2
        for r in rows[:half]:
            assert r.event is not None
            m.step(r.event)
        twin = pickle.loads(pickle.dumps(m))
        for r in rows[half:]:
            assert r.event is not None
            assert m.step(r.event) == twin.step(r.event), f"{policy}: {r.event}"
        assert state_of(m) == state_of(twin)
        assert m.counters == twin.counters


def state_of(obj: Any, seen: dict[int, Any] | None = None) -> Any:
    """Every attribute of every object reachable from ``obj`` as plain values (sets sorted, tables of callables left out)."""
    seen = {} if seen is None else seen  # id -> object: kept alive, so an id is never reused during the walk
    if isinstance(obj, (int, str, bytes, float, type(None))):
        return obj
    if callable(obj) and not hasattr(obj, "__dict__"):
        return None
    if id(obj) in seen:
        return ("<seen>", type(obj).__name__)
    seen[id(obj)] = obj
    if isinstance(obj, (set, frozenset)):
        return ("set", sorted(obj, key=repr))
    if isinstance(obj, dict):
        return ("dict", sorted(((repr(k), state_of(v, seen)) for k, v in obj.items()
                                if not callable(v) or hasattr(v, "__dict__")), key=lambda kv: kv[0]))
    if isinstance(obj, (list, tuple)):
        return [state_of(v, seen) for v in obj]
    if isinstance(obj, type):
        return obj.__qualname__
    fields = getattr(obj, "__dict__", None)
    if fields is None:
        fields = {k: getattr(obj, k) for k in getattr(type(obj), "__slots__", ()) if hasattr(obj, k)}
    return (type(obj).__name__, sorted((k, state_of(v, seen)) for k, v in fields.items() if "handlers" not in k))


def test_memoising_stops_on_a_trace_that_never_repeats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Random MSR values: every state is new, so the memo switches itself off, and retries less and less often."""
    from difftest.trace.builder import TraceBuilder

    monkeypatch.setattr(tc, "WINDOW", 32)
    monkeypatch.setattr(tc, "RETRY_AFTER", 2)
    t = TraceBuilder("random-msrs", "no state recurs", policy="kvm-v7")
    t.cpuid(pks=True).long_mode()
    rng = __import__("random").Random(5)
    for _ in range(1500):
        t.wrmsr(0xC0000102, rng.getrandbits(63)).expect_ok()
    path = t.write(tmp_path / "random.parquet")
    memos = capture_memos(monkeypatch)
    assert_same_replay(path, "kvm-v7")
    memo = memos[-1]
    assert not memo.enabled and memo.hits == 0
    assert memo.retry_after > 2 * tc.RETRY_AFTER  # at least two failed retries, each waiting twice as long
    assert memo.misses < 1500 // 2  # most of the trace was stepped without pickling


def test_tlb_peeks_agree_with_settling(repeating: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A TLB reader's peek at pending fills (no settle) gives the TLBs that settling every access gives.

    The peek follows the fill rule of ``Lane.apply_fills`` (last flush, last INVLPG of the page) one
    access at a time; here every peek is followed by a real settle and the two are compared.
    """
    monkeypatch.setattr(tc, "WINDOW", 64)
    monkeypatch.setattr(tc, "MAX_MISS_RATE", 2.0)
    monkeypatch.setattr(FastReplay, "check_peeks", True)
    replays: list[FastReplay] = []
    original = FastReplay.run

    def run(self: FastReplay, batches: Any) -> Any:
        replays.append(self)
        return original(self, batches)

    monkeypatch.setattr(FastReplay, "run", run)
    for path in repeating:
        fast_replay_trace(open_trace(path), get_policy("kvm-v7"), get_profile("strict"))
    checked = [ok for r in replays for ok in r.peeks_checked]
    assert len(checked) > 100  # the workload's PKS toggles and the generated traces' maps and CR4 writes
    assert all(checked)


def test_memoising_starts_early_on_a_trace_whose_events_repeat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A repeating trace shorter than the first window is memoised anyway, and replays the same.

    12k rows of the steady workload have about 2,400 stepped events, fewer than ``WINDOW``; under the
    plain window rule no transition would ever be remembered.  Their events repeat (a few dozen
    distinct ones), so memoising starts after ``EARLY_STEPS``.
    """
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import workload
    finally:
        sys.path.pop(0)
    path = workload.write_mixed_trace(tmp_path / "short-steady.parquet", 12_000)
    memos = capture_memos(monkeypatch)
    assert_same_replay(path, "kvm-v7")
    memo = memos[-1]
    assert memo.enabled and memo.hits == 0 and memo.window_hits > 0  # transitions served, inside its first window


def test_memoising_does_not_start_early_on_distinct_events(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Distinct events (random MSR values) cannot repeat a state: the first window runs to its end unmemoised."""
    from difftest.trace.builder import TraceBuilder

    t = TraceBuilder("random-msrs", "no event recurs", policy="kvm-v7")
    t.cpuid(pks=True).long_mode()
    rng = __import__("random").Random(7)
    for _ in range(tc.WINDOW // 2):
        t.wrmsr(0xC0000102, rng.getrandbits(63)).expect_ok()
    path = t.write(tmp_path / "distinct.parquet")
    memos = capture_memos(monkeypatch)
    assert_same_replay(path, "kvm-v7")
    memo = memos[-1]
    assert not memo.enabled and memo.misses == 0 and memo.window_misses == 0  # nothing was pickled
