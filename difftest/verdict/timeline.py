"""Per-trace timelines: what PKRS/PKRU allowed per key, per vCPU, over the events of one replay.

A :class:`TimelineRecorder` is a replay observer (see :func:`difftest.engine.reference.replay_rows`): it
samples the model's ``vcpuN.pkrs`` / ``vcpuN.pkru`` after the events that can change them and
notes faults, exits, host ioctls and divergences.  It keeps *change points*, not samples, and
folds everything that happens inside one horizontal pixel bucket together, so a trace of
millions of events costs a few kilobytes.  :func:`difftest.report.timeline.layout` draws it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from difftest.trace.io import TraceRow
from difftest.verdict.results import RowResult
from reference_model.events import EVENT_KINDS, kinds_where
from reference_model.machine import Machine

MAX_BUCKETS = 600  # horizontal resolution of a timeline; more detail is not visible anyway

# Events that never change PKRS or PKRU in any policy: the recorder skips sampling after them.
_READ_ONLY_KINDS = frozenset(EVENT_KINDS) - kinds_where("changes_pkrs")
_FAULTS = frozenset({"pf", "gp", "ud"})
_EXIT_RESULTS = frozenset({"vmexit", "user_exit", "entry_fail", "vmfail", "internal_error"})
_EXIT_KINDS = frozenset({"vm_exit", "nested_exit"})
MARKER_KINDS = ("diverge", "fault", "exit", "ioctl")


@dataclass
class Marker:
    """Events of one kind inside one bucket: the first one's index and label, and how many."""

    index: int
    label: str
    count: int = 1


@dataclass
class VcpuTrack:
    """Change points ``(row index, value)`` of one vCPU's registers and guest level, and its markers."""

    pkrs: list[tuple[int, int | None]] = field(default_factory=list)
    pkru: list[tuple[int, int | None]] = field(default_factory=list)
    level: list[tuple[int, str]] = field(default_factory=list)
    markers: dict[str, list[Marker]] = field(default_factory=dict)


@dataclass
class Timeline:
    """What one replay looked like over time (bounded size whatever the trace length)."""

    rows: int
    bucket: int
    vcpus: dict[int, VcpuTrack] = field(default_factory=dict)
    first_divergence: int | None = None


class TimelineRecorder:
    """Replay observer that fills a :class:`Timeline` (pass it as ``observer=``)."""

    def __init__(self, total_rows: int, max_buckets: int = MAX_BUCKETS) -> None:
        self.timeline = Timeline(max(total_rows, 1), max(1, math.ceil(max(total_rows, 1) / max_buckets)))
        self._paths: dict[int, tuple[str, str]] = {}

    def _track(self, vcpu: int) -> VcpuTrack:
        track = self.timeline.vcpus.get(vcpu)
        if track is None:
            track = self.timeline.vcpus[vcpu] = VcpuTrack()
        return track

    def _change(self, series: list, index: int, value: object) -> None:
        """Append a change point, replacing the last one if it lies in the same bucket."""
        if series and series[-1][1] == value:
            return
        if series and series[-1][0] // self.timeline.bucket == index // self.timeline.bucket and len(series) > 1:
            series[-1] = (series[-1][0], value)
            if series[-2][1] == value:
                series.pop()
            return
        series.append((index, value))

    def _mark(self, track: VcpuTrack, kind: str, index: int, label: str) -> None:
        ms = track.markers.setdefault(kind, [])
        if ms and ms[-1].index // self.timeline.bucket == index // self.timeline.bucket:
            ms[-1].count += 1
            return
        ms.append(Marker(index, label))

    def _sample(self, machine: Machine, vcpu: int, track: VcpuTrack, index: int) -> None:
        paths = self._paths.get(vcpu)
        if paths is None:
            paths = self._paths[vcpu] = (f"vcpu{vcpu}.pkrs", f"vcpu{vcpu}.pkru")
        for path, series in zip(paths, (track.pkrs, track.pkru), strict=True):
            try:
                value: int | None = machine.snapshot(path)
            except KeyError:
                value = None
            self._change(series, index, value)

    def __call__(self, row: TraceRow, rr: RowResult, machine: Machine) -> None:
        ev = row.event
        index = row.index
        if ev is None:  # a snapshot check: only a divergence is worth a mark
            if rr.status == "diverge" and rr.snapshot is not None:
                vcpu = _vcpu_of_path(rr.snapshot.path)
                self._divergence(self._track(vcpu), index, rr)
            return
        track = self._track(ev.vcpu)
        out = rr.outcome
        result = out.result if out is not None else None
        # Only the vCPU the event just ran on is sampled, so looking never creates a vCPU.
        if not track.pkrs or ev.kind not in _READ_ONLY_KINDS:
            self._sample(machine, ev.vcpu, track, index)
        level = _guest_level(ev.kind, ev.level, result, track.level[-1][1] if track.level else "l1")
        self._change(track.level, index, level)
        if rr.status == "diverge":
            self._divergence(track, index, rr)
        if result in _FAULTS:
            self._mark(track, "fault", index, f"event {index}: {rr.describe_event()} -> {rr.describe_actual()}")
        elif result in _EXIT_RESULTS or ev.kind in _EXIT_KINDS:
            self._mark(track, "exit", index, f"event {index}: {rr.describe_event()} -> {rr.describe_actual()}")
        if ev.level == "host":
            self._mark(track, "ioctl", index, f"event {index}: {rr.describe_event()} -> {rr.describe_actual()}")

    def _divergence(self, track: VcpuTrack, index: int, rr: RowResult) -> None:
        if self.timeline.first_divergence is None:
            self.timeline.first_divergence = index
        rule = rr.primary_rule
        diffs = "; ".join(d.render() for d in rr.diffs)
        self._mark(track, "diverge", index, f"event {index}: {rr.describe_event()}: {diffs}" + (f" [{rule}]" if rule else ""))


def _vcpu_of_path(path: str) -> int:
    head = path.split(".", 1)[0]
    return int(head[4:]) if head.startswith("vcpu") and head[4:].isdigit() else 0


def _guest_level(kind: str, level: str, result: str | None, current: str) -> str:
    """The guest level a vCPU is at after an event: a successful VMLAUNCH/VMRESUME enters L2."""
    if kind in ("vmlaunch", "vmresume") and result == "ok":
        return "l2"
    if kind == "nested_exit" or result == "vmexit":
        return "l1"
    if level in ("l1", "l2"):
        return level
    return current
