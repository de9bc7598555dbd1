"""Benchmark inputs: a large mixed trace and a corpus of small traces, written to a temp dir.

The mixed trace is what the issue asks for: about 80% page accesses, 10% MSR, 5% CR and 5%
VMX/nested events on a kvm-v7 guest in long mode with PKS and PKU.  It is a setup prologue and
then one random block of events repeated; every block starts by putting PKRS, PKRU, CR0/CR4,
CR3 and vmcs12 back to fixed values, so the machine reaches a steady state and the block's
expectations (the kvm-v7 model's outcomes, checked to repeat) hold for every repetition.
Accesses come in bursts between the other events, as in a recorded kernel trace.  Repeating a
block lets a 10M-row file be written in seconds with Arrow instead of stepping the model 10M times.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from difftest.trace.io import rows_to_table
from difftest.trace.schema import ARROW_SCHEMA
from reference_model.events import OPTIONAL_EVENT_FIELDS, OUTCOME_FIELDS, Event, Outcome
from reference_model.host import DEFAULT_HOST
from reference_model.policies import get_policy
from reference_model.registers import (
    CPUID1_ECX_VMX,
    CPUID7_ECX_PKS,
    CPUID7_ECX_PKU,
    CR0_ET,
    CR0_PE,
    CR0_PG,
    CR0_WP,
    CR4_PAE,
    CR4_PGE,
    CR4_PKE,
    CR4_PKS,
    EFER_LMA,
    EFER_LME,
    EFER_NXE,
    MSR_IA32_PKRS,
    MSR_LSTAR,
    MSR_STAR,
    VM_ENTRY_LOAD_IA32_PKRS,
    VM_EXIT_LOAD_IA32_PKRS,
    VMCS_GUEST_IA32_PKRS,
    VMCS_HOST_IA32_PKRS,
    VMCS_VM_ENTRY_CONTROLS,
    VMCS_VM_EXIT_CONTROLS,
)

POLICY = "kvm-v7"
PAGES = 48  # 4 KiB pages mapped at L1, keys 0-15, supervisor and user
L2_PAGES = 4
BASE = 0x4000_0000
CR0 = CR0_PE | CR0_ET | CR0_PG | CR0_WP
CR4 = CR4_PAE | CR4_PKE | CR4_PKS
EFER = EFER_LME | EFER_LMA | EFER_NXE


def _event(row: Mapping[str, Any]) -> Event:
    ev = Event(row["kind"], vcpu=row.get("vcpu", 0), level=row.get("level", "l1"), seq=row.get("seq", 0))
    for name in OPTIONAL_EVENT_FIELDS:
        v = row.get(name)
        if v is not None:
            setattr(ev, name, tuple(v) if name in ("msrs", "values") else v)
    return ev


def _expect(row: dict[str, Any], out: Outcome) -> dict[str, Any]:
    """``row`` with ``out`` as its expectation (nothing where the architecture leaves it undefined)."""
    row = {k: v for k, v in row.items() if not k.startswith("exp_")}
    if "result" in out.undefined:
        return row
    row["exp_result"] = out.result
    for name in OUTCOME_FIELDS[1:]:
        v = getattr(out, name)
        if v is not None and name not in out.undefined:
            row[f"exp_{name}"] = v
    return row


def _prologue() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [
        {"kind": "set_cpuid", "level": "host", "cpuid_7_ecx": CPUID7_ECX_PKS | CPUID7_ECX_PKU, "cpuid_1_ecx": CPUID1_ECX_VMX},
        {"kind": "set_sregs", "level": "host", "cr0": CR0, "cr4": CR4, "efer": EFER, "cr3": 0x1000},
        {"kind": "run", "level": "host"},
    ]
    for i in range(PAGES):
        rows.append({"kind": "map", "addr": BASE + i * 0x1000, "page_size": "4k", "present": i % 11 != 10,
                     "user": i % 3 == 2, "writable": i % 7 != 6, "key": i % 16})
    return rows


def _block(rng: random.Random, events: int, others: bool = True) -> list[dict[str, Any]]:
    """One repeatable block: the reset header, then bursts of accesses between other events."""
    rows: list[dict[str, Any]] = [
        {"kind": "wrmsr", "msr": MSR_IA32_PKRS, "value": 0x0C},
        {"kind": "wrpkru", "value": 0x30},
        {"kind": "mov_cr0", "value": CR0},
        {"kind": "mov_cr4", "value": CR4},
        {"kind": "mov_cr3", "value": 0x1000},
        {"kind": "vmwrite", "field": VMCS_VM_ENTRY_CONTROLS, "value": VM_ENTRY_LOAD_IA32_PKRS},
        {"kind": "vmwrite", "field": VMCS_VM_EXIT_CONTROLS, "value": VM_EXIT_LOAD_IA32_PKRS},
        {"kind": "vmwrite", "field": VMCS_HOST_IA32_PKRS, "value": 0x0C},
        {"kind": "vmwrite", "field": VMCS_GUEST_IA32_PKRS, "value": 0x3},
    ]

    def access(level: str = "l1") -> dict[str, Any]:
        n = PAGES if level == "l1" else L2_PAGES
        kind = rng.choice(("read", "read", "write", "write", "rmw", "fetch", "implicit", "implicit_write"))
        return {"kind": "access", "level": level, "addr": BASE + rng.randrange(n) * 0x1000 + rng.randrange(0, 4096, 8),
                "access": kind, "cpl": rng.choice((0, 0, 0, 3))}

    while len(rows) < events:
        for _ in range(rng.randrange(1, 9)):  # bursts of 1-8 accesses: 80% of the events
            rows.append(access())
        if not others:
            continue
        r = rng.random()
        if r < 0.55:  # MSR: 10% of the events
            rows.append(rng.choice((
                {"kind": "wrmsr", "msr": MSR_IA32_PKRS, "value": rng.choice((0x0, 0x4, 0x8, 0xC0, 0x30000))},
                {"kind": "rdmsr", "msr": MSR_IA32_PKRS},
                {"kind": "rdmsr", "msr": MSR_IA32_PKRS},
                {"kind": "wrmsr", "msr": MSR_LSTAR, "value": 0xFFFF_FFFF_8100_0000},
                {"kind": "rdmsr", "msr": MSR_STAR},
            )))
        elif r < 0.8:  # CR: 5%; CR3 (context switches), CR4.PGE (global flushes), CR0.WP, rarely CR4.PKS
            rows.append(rng.choice((
                {"kind": "mov_cr3", "value": 0x1000}, {"kind": "mov_cr3", "value": 0x2000},
                {"kind": "mov_cr3", "value": 0x1000}, {"kind": "mov_cr3", "value": 0x3000},
                {"kind": "mov_cr4", "value": CR4 ^ CR4_PGE}, {"kind": "mov_cr4", "value": CR4},
                {"kind": "mov_cr0", "value": CR0 ^ CR0_WP}, {"kind": "mov_cr0", "value": CR0},
            ) if rng.random() < 0.95 else (
                {"kind": "mov_cr4", "value": CR4 ^ CR4_PKS}, {"kind": "mov_cr4", "value": CR4},
            )))
        elif rng.random() < 0.7:  # VMX / nested: 5%; L1 VMREAD/VMWRITE of vmcs12 ...
            rows.append(rng.choice((
                {"kind": "vmread", "field": VMCS_GUEST_IA32_PKRS},
                {"kind": "vmwrite", "field": VMCS_GUEST_IA32_PKRS, "value": rng.choice((0x3, 0x0, 0xC))},
            )))
        else:  # ... or a trip into L2 and back
            rows.append({"kind": "vmlaunch"})
            rows += [access("l2") for _ in range(rng.randrange(1, 5))]
            rows.append({"kind": "nested_exit", "level": "l2", "reason": 1})
    return rows


def mixed_template(seed: int = 1, block_events: int = 4096, others: bool = True) -> tuple[pa.Table, pa.Table, pa.Table]:
    """(prologue + first block, steady block, meta-bearing empty table) with the model's expectations."""
    rng = random.Random(seed)
    prologue = _prologue()
    prologue.append({"kind": "vmlaunch"})  # L2's pages are mapped from inside L2
    for i in range(L2_PAGES):
        prologue.append({"kind": "map", "level": "l2", "addr": BASE + i * 0x1000, "page_size": "4k", "present": True,
                         "key": i})
    prologue.append({"kind": "nested_exit", "level": "l2", "reason": 1})
    block = _block(rng, block_events, others)
    machine = get_policy(POLICY).build(DEFAULT_HOST)
    reps: list[list[dict[str, Any]]] = []
    for rows in (prologue, block, block, block):
        done = []
        for r in rows:
            r = {"vcpu": 0, "level": "l1", **r}
            done.append(_expect(r, machine.step(_event(r))))
        reps.append(done)
    if reps[2] != reps[3]:
        raise RuntimeError("the benchmark block does not reach a steady state")
    meta = {"producer": "synthetic", "name": "bench-mixed", "policy": POLICY,
            "description": "benchmark: 80% accesses, 10% MSR, 5% CR, 5% VMX/nested (bench/workload.py)"}
    head = rows_to_table([{**r, "seq": i} for i, r in enumerate(reps[0] + reps[1])], meta)
    steady = rows_to_table([{**r, "seq": 0} for r in reps[2]], meta)
    return head, steady, head.schema


def write_mixed_trace(path: Path, events: int, seed: int = 1, others: bool = True) -> Path:
    """Write a mixed trace of about ``events`` rows (streamed: never all rows in memory).

    ``others=False``: after the prologue and each block's reset header, accesses only.
    """
    head, steady, schema = mixed_template(seed, others=others)
    chunk = pa.concat_tables([steady] * max(1, 65_536 // steady.num_rows)).combine_chunks()
    seq_col = schema.get_field_index("seq")
    tmp = path.with_name(f".{path.name}.tmp")
    with pq.ParquetWriter(tmp, schema, compression="zstd") as w:
        w.write_table(head)
        written = head.num_rows
        while written < events:
            part = chunk.slice(0, min(chunk.num_rows, events - written))
            seq = pa.array(range(written, written + part.num_rows), pa.uint64())
            w.write_table(part.set_column(seq_col, ARROW_SCHEMA.field("seq"), seq))
            written += part.num_rows
    tmp.replace(path)
    return path


def write_divergent_trace(path: Path, events: int, seed: int = 2) -> Path:
    """A mixed trace with one wrong expectation near its middle (for shrinking)."""
    write_mixed_trace(path, events, seed)
    table = pq.read_table(path)
    col = table.column("exp_result").to_pylist()
    kinds = table.column("kind").to_pylist()
    i = next(i for i in range(len(kinds) // 2, len(kinds)) if kinds[i] == "rdmsr" and col[i] == "ok")
    values = table.column("exp_value").to_pylist()
    values[i] = (values[i] or 0) ^ 0x4
    table = table.set_column(table.schema.get_field_index("exp_value"), table.schema.field("exp_value"),
                             pa.array(values, pa.uint64()))
    pq.write_table(table, path, compression="zstd")
    return path


def write_corpus(folder: Path, traces: int, repo_traces: Path) -> Path:
    """``traces`` small trace files: the repository's corpus (arch, bugs, real) copied round-robin."""
    sources = sorted(p for sub in ("arch", "bugs", "real") for p in (repo_traces / sub).rglob("*.parquet"))
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(traces):
        src = sources[i % len(sources)]
        shutil.copyfile(src, folder / f"{i:04d}-{src.name}")
    return folder
