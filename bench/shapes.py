"""Hostile but legal trace shapes (issue 21): each must replay on the default path within 1.5x of the reference.

* ``vcpus``: 4,000 vCPUs, each set up for PKS and making a few supervisor accesses;
* ``pages``: 16,000 distinct pages mapped and accessed on one vCPU;
* ``row_groups``: 20,000 one-row row groups (a streaming recorder that flushes every event);
* ``high``: pages over the whole u64 range, kernel addresses such as 0xffff888000001000 included.
"""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow.parquet as pq

from difftest.search.generate import Draft, refill_expectations
from difftest.trace.builder import TraceBuilder
from difftest.trace.io import rows_to_table
from reference_model.policies import get_policy
from reference_model.registers import MSR_IA32_PKRS

SHAPES = ("vcpus", "pages", "row_groups", "high")


def _setup(t: TraceBuilder, vcpu: int) -> None:
    t.on(vcpu, "l1")
    t.cpuid(pks=True, pku=True)
    t.long_mode()
    t.cr4(pks=True, pke=True)


def build(shape: str, scale: float = 1.0) -> TraceBuilder:
    """The trace of ``shape``, without expectations (``scale`` < 1 makes a smaller one of the same shape, for tests)."""
    rng = random.Random(21)
    t = TraceBuilder(f"shape-{shape}", f"hostile shape: {shape}", policy="kvm-v7")
    if shape == "vcpus":
        n = max(2, int(4000 * scale))
        for v in range(n):
            _setup(t, v)
            t.map(0x7000_0000 + v * 0x1000, key=v % 16)
            t.wrmsr(MSR_IA32_PKRS, rng.choice((0, 0x4, 0xC)))
        for _ in range(3):
            for v in range(n):
                t.on(v, "l1").access(0x7000_0000 + v * 0x1000, write=bool(rng.getrandbits(1)))
    elif shape == "pages":
        n = max(2, int(16000 * scale))
        _setup(t, 0)
        pages = [0x1_0000_0000 + i * 0x1000 for i in range(n)]
        for i, p in enumerate(pages):
            t.map(p, key=i % 16)
        t.wrmsr(MSR_IA32_PKRS, 0x55555554)
        for _ in range(3):
            for p in rng.sample(pages, len(pages)):
                t.access(p, write=bool(rng.getrandbits(1)))
    elif shape == "row_groups":
        n = max(2, int(20000 * scale))
        _setup(t, 0)
        t.map(0xffff888000001000, key=3)
        for i in range(n - len(t.rows()) - 1):
            if i % 7 == 0:
                t.wrmsr(MSR_IA32_PKRS, rng.choice((0, 0xC0, 0x40)))
            else:
                t.access(0xffff888000001000 + (i % 4) * 8, write=bool(i & 1))
    elif shape == "high":
        n = max(2, int(4000 * scale))
        _setup(t, 0)
        pages = [0xffff888000001000, 0xffffffffff600000, 0xfffffffffffff000, 1 << 63, (1 << 63) - 4096]
        pages += [rng.getrandbits(52) << 12 for _ in range(60)]
        for i, p in enumerate(pages):
            t.map(p, key=i % 16)
        for i in range(n):
            if i % 50 == 0:
                t.wrmsr(MSR_IA32_PKRS, rng.getrandbits(32))
            t.access(rng.choice(pages) + rng.randrange(4096), write=bool(rng.getrandbits(1)))
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    return t


def write(shape: str, path: Path, scale: float = 1.0) -> Path:
    """Write the trace of ``shape`` with kvm-v7's outcomes as expectations; ``row_groups`` puts every row in its own row group."""
    t = build(shape, scale)
    draft = refill_expectations(Draft(t.rows(), t.metadata()), get_policy("kvm-v7"))
    if shape != "row_groups":
        return draft.write(path)
    table = rows_to_table(draft.numbered(), draft.meta)
    pq.write_table(table, path, row_group_size=1)
    return path
