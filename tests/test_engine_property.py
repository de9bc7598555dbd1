"""Both engines give identical results on traces drawn over the schema's full value ranges (issue 21).

Hypothesis draws the rows (any u64 address, including kernel addresses at and above 2^63; any vCPU id
the schema's uint16 column holds; any PKRS/CR value), the row-group layout (one-row groups up to one
group), wrong expectations on some rows, and how the fast engine cuts the trace into stretches (all on
columns, alternating with the model row by row, or judged as by default).  The reference engine is the
oracle: every field of the results must be equal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from difftest.engine import compare_trace, replay_trace
from difftest.engine.fast import replay as fast_replay
from difftest.search.generate import Draft, refill_expectations
from difftest.trace.io import open_trace, rows_to_table
from difftest.verdict.profiles import get_profile
from reference_model.policies import get_policy
from reference_model.registers import CR0_ET, CR0_PE, CR0_PG, CR0_WP, CR4_PAE, CR4_PKE, CR4_PKS, EFER_LME, MSR_EFER

U64 = st.integers(0, (1 << 64) - 1)
VCPU = st.sampled_from([0, 1, 2, 4095, 65535])
HIGH_PAGES = [0xffff_8880_0000_1000, 0xffff_ffff_ffff_f000, 1 << 63, 0x1000]


def setup(vcpu: int) -> list[dict[str, Any]]:
    return [
        {"kind": "set_cpuid", "vcpu": vcpu, "level": "host", "cpuid_7_ecx": (1 << 31) | (1 << 3), "cpuid_1_ecx": 32},
        {"kind": "mov_cr4", "vcpu": vcpu, "level": "l1", "value": CR4_PAE},
        {"kind": "wrmsr", "vcpu": vcpu, "level": "l1", "msr": MSR_EFER, "value": EFER_LME},
        {"kind": "mov_cr0", "vcpu": vcpu, "level": "l1", "value": CR0_ET | CR0_PE | CR0_PG | CR0_WP},
        {"kind": "mov_cr4", "vcpu": vcpu, "level": "l1", "value": CR4_PAE | CR4_PKS | CR4_PKE},
    ]


@st.composite
def rows(draw: st.DrawFn) -> list[dict[str, Any]]:
    vcpus = draw(st.lists(VCPU, min_size=1, max_size=3, unique=True))
    pages = draw(st.lists(U64.map(lambda a: a & ~0xFFF) | st.sampled_from(HIGH_PAGES), min_size=1, max_size=6))
    out = [r for v in vcpus for r in setup(v)]
    for _ in range(draw(st.integers(1, 120))):
        v = draw(st.sampled_from(vcpus))
        what = draw(st.sampled_from(["access"] * 6 + ["map", "pkrs", "cr4", "invlpg", "snapshot", "flush"]))
        page = draw(st.sampled_from(pages))
        if what == "access":
            out.append({"kind": "access", "vcpu": v, "level": "l1", "addr": page | draw(st.integers(0, 0xFFF)),
                        "access": draw(st.sampled_from(["read", "write", "rmw", "fetch"])),
                        "cpl": draw(st.sampled_from([None, 3]))})
        elif what == "map":
            out.append({"kind": "map", "vcpu": v, "level": "l1", "addr": page, "key": draw(st.integers(0, 15)),
                        "present": True, "writable": draw(st.booleans()), "user": draw(st.booleans()),
                        "user_upper": True, "rsvd": False, "nx": False, "page_size": "4k"})
        elif what == "pkrs":
            out.append({"kind": "wrmsr", "vcpu": v, "level": "l1", "msr": 0x6E1, "value": draw(U64)})
        elif what == "cr4":
            out.append({"kind": "mov_cr4", "vcpu": v, "level": "l1",
                        "value": CR4_PAE | draw(st.sampled_from([0, CR4_PKS, CR4_PKE, CR4_PKS | CR4_PKE]))})
        elif what == "invlpg":
            out.append({"kind": "invlpg", "vcpu": v, "level": "l1", "addr": page})
        elif what == "flush":
            out.append({"kind": "mov_cr3", "vcpu": v, "level": "l1", "value": 0})
        else:
            out.append({"kind": "snapshot", "vcpu": v, "level": "host", "path": f"vcpu{v}.pkrs", "exp_value": 0})
    return out


def write(tmp: Path, body: list[dict[str, Any]], wrong: list[int], group: int) -> Path:
    draft = refill_expectations(Draft(body, {"name": "prop", "description": "", "producer": "synthetic"}),
                                get_policy("kvm-v7"))
    rows_ = draft.numbered()
    for i in wrong:  # plant a wrong expectation (a divergence the engines must both report)
        r = rows_[i % len(rows_)]
        if r.get("exp_result") == "ok":
            r["exp_result"] = "gp"
    path = tmp / "prop.parquet"
    pq.write_table(rows_to_table(rows_, draft.meta), path, row_group_size=group)
    return path


@pytest.mark.parametrize("mode", ["columns", "alternate", "judge"])
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(body=rows(), wrong=st.lists(st.integers(0, 10_000), max_size=4), group=st.sampled_from([1, 3, 50, 1 << 20]),
       stretch=st.sampled_from([2, 5, 64]))
def test_engines_agree_over_the_full_value_ranges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str,
                                                  body: list[dict[str, Any]], wrong: list[int], group: int,
                                                  stretch: int) -> None:
    monkeypatch.setattr(fast_replay, "STRETCH_MODE", mode)
    monkeypatch.setattr(fast_replay, "STRETCH", stretch)
    monkeypatch.setattr(fast_replay, "MIN_FAST_ROWS", 1)
    path = write(tmp_path, body, wrong, group)
    prof = get_profile("strict")
    for policy in ("kvm-v7", "hw"):
        pol = get_policy(policy)
        fast = replay_trace(open_trace(path), pol, prof, engine="fast")
        ref = replay_trace(open_trace(path), pol, prof, engine="reference")
        fast.seconds = ref.seconds = 0.0
        assert fast.to_json() == ref.to_json(), policy
    a, b = get_policy("kvm-v7"), get_policy("kvm-v4")
    fc = compare_trace(open_trace(path), a, b, prof, engine="fast")
    rc = compare_trace(open_trace(path), a, b, prof, engine="reference")
    fc.seconds = rc.seconds = 0.0
    assert fc.to_json() == rc.to_json()
