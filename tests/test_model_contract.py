"""The fast engine's assumptions about the model, checked directly on random machine states (issue 22 §3).

The fast engine (difftest/engine/fast) never restates the model: it asks it
(``Machine.access_cpu``, ``Machine.cpus``, ``Cpu.access_inputs``, ``classify_access``, the event-kind
table's ``reads_tlb``).  What it still *assumes* is stated here as invariants, checked after every step
of a Hypothesis state machine whose rules are events of every kind, on every engine-supported machine:

* ``access_cpu`` agrees with ``step(access)``: the outcome is ``classify_access`` on that CPU's
  inputs, and the step changes nothing but that CPU's TLB, by that fill;
* ``cpus()`` lists exactly the vCPUs that exist, each with its L1 and L2 CPU;
* a kind whose table entry says it does not read the TLB has the same outcome and effects with the
  TLBs emptied or filled;
* a machine's pickle (the transition cache's state) continues exactly as the machine does.
"""

from __future__ import annotations

import copy
import pickle
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from reference_model.cpu import classify_access
from reference_model.events import EVENT_KINDS, Event, kinds_where
from reference_model.host import DEFAULT_HOST
from reference_model.policies import get_policy
from reference_model.registers import (
    CR0_ET,
    CR0_PE,
    CR0_PG,
    CR0_WP,
    CR4_PAE,
    CR4_PKE,
    CR4_PKS,
    CR4_VMXE,
    EFER_LME,
    MSR_EFER,
    MSR_IA32_PKRS,
)

POLICIES = ("kvm-v7", "kvm-v4", "hw", "pkvm-pvm-allow5", "kvm-v7r")
VCPUS = st.integers(0, 2)
LEVELS = st.sampled_from(["l1", "l2", "host"])
PAGES = st.sampled_from([0x1000, 0x7000_0000, 0xffff_8880_0000_1000, 0xffff_ffff_ffff_f000, 1 << 63])
U32 = st.integers(0, (1 << 32) - 1)
ACCESSES = st.sampled_from(["read", "write", "rmw", "fetch", "implicit", "implicit_write"])
TLB_READERS = kinds_where("reads_tlb")


def state(m: Any) -> bytes:
    return pickle.dumps(m)


class ModelContract(RuleBasedStateMachine):
    """Random events on one machine; after each, the contract's invariants on copies of it."""

    @initialize(policy=st.sampled_from(POLICIES))
    def build(self, policy: str) -> None:
        self.m = get_policy(policy).build(DEFAULT_HOST)
        self.seq = 0

    def step(self, kind: str, **fields: Any) -> None:
        self.seq += 1
        self.m.step(Event(kind, seq=self.seq, **fields))

    # -- rules: the generator's kinds of moves, with values over their whole ranges --------------
    @rule(vcpu=VCPUS, pks=st.booleans(), vmx=st.booleans())
    def set_cpuid(self, vcpu: int, pks: bool, vmx: bool) -> None:
        self.step("set_cpuid", vcpu=vcpu, level="host", cpuid_7_ecx=(1 << 31 if pks else 0) | (1 << 3),
                  cpuid_1_ecx=32 if vmx else 0)

    @rule(vcpu=VCPUS, level=LEVELS, wp=st.booleans())
    def long_mode(self, vcpu: int, level: str, wp: bool) -> None:
        self.step("mov_cr4", vcpu=vcpu, level=level, value=CR4_PAE)
        self.step("wrmsr", vcpu=vcpu, level=level, msr=MSR_EFER, value=EFER_LME)
        self.step("mov_cr0", vcpu=vcpu, level=level, value=CR0_ET | CR0_PE | CR0_PG | (CR0_WP if wp else 0))

    @rule(vcpu=VCPUS, level=LEVELS, pks=st.booleans(), pke=st.booleans(), vmxe=st.booleans())
    def cr4(self, vcpu: int, level: str, pks: bool, pke: bool, vmxe: bool) -> None:
        self.step("mov_cr4", vcpu=vcpu, level=level,
                  value=CR4_PAE | (CR4_PKS if pks else 0) | (CR4_PKE if pke else 0) | (CR4_VMXE if vmxe else 0))

    @rule(vcpu=VCPUS, level=LEVELS, value=U32 | st.integers(0, (1 << 64) - 1))
    def wrmsr_pkrs(self, vcpu: int, level: str, value: int) -> None:
        self.step("wrmsr", vcpu=vcpu, level=level, msr=MSR_IA32_PKRS, value=value)

    @rule(vcpu=VCPUS, level=LEVELS, page=PAGES, key=st.integers(0, 15), user=st.booleans(), writable=st.booleans())
    def map(self, vcpu: int, level: str, page: int, key: int, user: bool, writable: bool) -> None:
        self.step("map", vcpu=vcpu, level=level, addr=page, key=key, user=user, writable=writable, present=True)

    @rule(vcpu=VCPUS, level=LEVELS, page=PAGES, access=ACCESSES, cpl=st.sampled_from([0, 3]))
    def access(self, vcpu: int, level: str, page: int, access: str, cpl: int) -> None:
        self.step("access", vcpu=vcpu, level=level, addr=page + 8, access=access, cpl=cpl or None)

    @rule(vcpu=VCPUS, level=LEVELS, page=PAGES)
    def invlpg(self, vcpu: int, level: str, page: int) -> None:
        self.step("invlpg", vcpu=vcpu, level=level, addr=page)

    @rule(vcpu=VCPUS, kind=st.sampled_from(["vmlaunch", "vmresume", "nested_exit", "vm_exit", "smi", "rsm",
                                             "get_nested_state", "reset", "init"]), level=LEVELS)
    def lifecycle(self, vcpu: int, kind: str, level: str) -> None:
        self.step(kind, vcpu=vcpu, level="host" if EVENT_KINDS[kind].level == "host" else level)

    @rule(vcpu=VCPUS, value=U32)
    def host_pkrs(self, vcpu: int, value: int) -> None:
        self.step("host_pkrs", vcpu=vcpu, level="host", value=value)

    @rule(vcpu=VCPUS, level=LEVELS, value=U32)
    def wrpkru(self, vcpu: int, level: str, value: int) -> None:
        self.step("wrpkru", vcpu=vcpu, level=level, value=value)

    # -- invariants --------------------------------------------------------------------------
    @invariant()
    def cpus_are_the_vcpus(self) -> None:
        paths = [p for p, _ in self.m.cpus()]
        assert {v for v, _ in paths} == set(self.m.vcpu_ids())
        assert sorted(paths) == sorted((v, lv) for v in self.m.vcpu_ids() for lv in ("l1", "l2"))
        for (v, lv), cpu in self.m.cpus():
            assert self.m.cpu_at(v, lv) is cpu
        assert self.m.cpu_at(99, "l1") is None and 99 not in self.m.vcpu_ids()  # (asking creates nothing)

    @invariant()
    def access_cpu_agrees_with_step(self) -> None:
        for vcpu in [*self.m.vcpu_ids(), 7]:
            for level in ("l1", "l2"):
                cpu = self.m.access_cpu(vcpu, level)
                if cpu is None:
                    continue
                path = next(p for p, c in self.m.cpus() if c is cpu)
                for page, access, cpl in ((0x7000_0000, "write", 0), (0xffff_ffff_ffff_f000, "read", 0),
                                          (0x1000, "read", 3)):
                    addr = page + 0x10
                    want, fill = classify_access(cpu.pages.lookup(addr), addr, access, cpl, cpu.access_inputs())
                    twin = copy.deepcopy(self.m)
                    got = twin.step(Event("access", vcpu=vcpu, level=level, addr=addr, access=access, cpl=cpl or None))
                    assert got == want, (vcpu, level, access)
                    expected = copy.deepcopy(self.m)
                    if fill is not None:
                        dict(expected.cpus())[path].tlb.add(fill)
                    assert state(twin) == state(expected), "an access changed more than its CPU's TLB fill"

    @invariant()
    def non_tlb_readers_ignore_the_tlb(self) -> None:
        events = [Event("wrmsr", vcpu=0, level="l1", msr=MSR_IA32_PKRS, value=0x55), Event("rdpkru", vcpu=0),
                  Event("mov_cr0", vcpu=0, level="l1", value=CR0_ET | CR0_PE), Event("nested_exit", vcpu=0, level="l2"),
                  Event("vm_exit", vcpu=0, level="host")]
        for ev in events:
            assert ev.kind not in TLB_READERS
            empty, full = copy.deepcopy(self.m), copy.deepcopy(self.m)
            for _, cpu in empty.cpus():
                cpu.tlb.clear()
            for _, cpu in full.cpus():
                cpu.tlb.update({0x1000, 0x7000_0000, 0xffff_ffff_ffff_f000})
            assert empty.step(ev) == full.step(ev), ev.kind

    @invariant()
    def pickle_continues_identically(self) -> None:
        twin = pickle.loads(pickle.dumps(self.m))
        original = copy.deepcopy(self.m)
        for ev in (Event("access", vcpu=0, level="l1", addr=0x7000_0010, access="write"),
                   Event("wrmsr", vcpu=1, level="l1", msr=MSR_IA32_PKRS, value=4),
                   Event("vmlaunch", vcpu=0, level="l1")):
            assert twin.step(ev) == original.step(ev)
            # (equal states may pickle to different bytes, set order: compare what the engines read)
            assert [twin.observe(v) for v in twin.vcpu_ids()] == [original.observe(v) for v in original.vcpu_ids()]
            assert [(p, c.access_inputs(), c.tlb) for p, c in twin.cpus()] == [
                (p, c.access_inputs(), c.tlb) for p, c in original.cpus()]


TestModelContract = ModelContract.TestCase
TestModelContract.settings = settings(max_examples=25, stateful_step_count=20, deadline=None,
                                      suppress_health_check=[HealthCheck.too_slow])
