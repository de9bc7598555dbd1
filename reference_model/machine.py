"""A machine: the vCPUs, the address spaces and the counters one replay drives.

:class:`Machine` is what a policy builds and what ``difftest`` talks to: ``step(event)`` returns
an :class:`~reference_model.events.Outcome`, ``snapshot(path)`` reads named state, and
``counters`` holds the cost counters.  It knows nothing of files.  The policies' machines
(``hw.HwMachine``, ``kvm.KvmMachine``) subclass it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from functools import lru_cache

from .cpu import Cpu
from .events import Event, Outcome, unsupported
from .host import DEFAULT_HOST, HostCpu
from .paging import PageTables
from .restore import Restorable

# What ``observe`` returns, in order, and the rule a difference in it concerns.
OBSERVED_STATE = (("pkrs", "VMX.ENTRY.LOAD"), ("exit_pkrs", "KVM.HOST"))

SNAPSHOT_PATH = re.compile(r"^(?:vcpu(\d+)|host)\.([a-z0-9_][a-z0-9_.]*)\Z")  # \Z: no trailing newline


@lru_cache(maxsize=4096)  # (a trace asks for the same few paths over and over)
def snapshot_target(path: str) -> tuple[int | None, str] | None:
    """A snapshot path as (vCPU, name), (None, name) for ``host.NAME``, or None if it is malformed."""
    m = SNAPSHOT_PATH.match(path)
    if m is None:
        return None
    return None if m.group(1) is None else int(m.group(1)), m.group(2)


class Machine(Restorable):
    """Base class: dispatches events to vCPUs and answers snapshots."""

    name = "machine"

    def __init__(self, host: HostCpu = DEFAULT_HOST) -> None:
        self.host = host
        self.counters: Counter[str] = Counter()
        self.pages: dict[str, PageTables] = {}
        self.vcpus: dict[int, Cpu] = {}

    def address_space(self, level: str) -> PageTables:
        """The page tables of ``level`` ("l1" or "l2"); host-level events use L1's."""
        key = "l2" if level == "l2" else "l1"
        pt = self.pages.get(key)
        if pt is None:
            pt = self.pages[key] = PageTables()
        return pt

    def new_vcpu(self, index: int) -> Cpu:
        return Cpu(self.address_space("l1"))

    def vcpu(self, index: int) -> Cpu:
        cpu = self.vcpus.get(index)
        if cpu is None:
            cpu = self.vcpus[index] = self.new_vcpu(index)
        return cpu

    # -- the engine contract: what a faster engine may ask instead of restating the model ------------
    def vcpu_ids(self) -> list[int]:
        """The vCPUs created so far (an event of a vCPU, or a snapshot of one, creates it)."""
        return list(self.vcpus)

    def cpus(self) -> Iterator[tuple[tuple[int, str], Cpu]]:
        """Every CPU by (vCPU, "l1" or "l2"): the objects whose registers, page tables and TLB steps use."""
        for i, cpu in self.vcpus.items():
            yield (i, "l1"), cpu

    def cpu_at(self, vcpu: int, level: str) -> Cpu | None:
        """The CPU of ``vcpu`` at ``level`` ("l1" or "l2") if the vCPU exists (creating nothing)."""
        return self.vcpus.get(vcpu) if level != "l2" else None

    def access_cpu(self, vcpu: int, level: str) -> Cpu | None:
        """The CPU on which ``step`` would run an ``access`` of ``vcpu`` at ``level`` ("l1" or "l2") as
        ``Cpu.access`` alone, with no other effect (no vCPU creation, VM entry, exit or refusal); None
        when the access must be stepped.  The base machine answers None: step everything."""
        return None

    def step(self, ev: Event) -> Outcome:
        handler = self.vcpu(ev.vcpu).handlers.get(ev.kind)
        if handler is None:
            return unsupported(ev.kind)
        return handler(ev)

    def observe(self, vcpu: int) -> tuple[int | None, ...]:
        """Observable state compared after every event by ``difftest compare`` (see OBSERVED_STATE)."""
        return (self.vcpu(vcpu).pkrs, None)

    def snapshot(self, path: str) -> int:
        """Named state after the last event (KeyError where this policy has no such state)."""
        target = snapshot_target(path)
        if target is None:
            raise KeyError(path)
        vcpu, name = target
        if vcpu is None:
            return self.host_snapshot(name)
        return self.vcpu(vcpu).snapshot(name)

    def host_snapshot(self, name: str) -> int:
        raise KeyError(f"host.{name}")
