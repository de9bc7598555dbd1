"""Typos are errors (issue 19 item 4): exit 2 with one line naming the file, the row and the column.

* a snapshot path no registered policy models (``vcpu0.pkr``) -- while a path that only some
  policies model (``vcpu0.vmcs01.exit_ctls.load_pkrs``: the bare CPU has no VMCS) stays
  "not modelled" under the others;
* an ``exp_rule`` that is not a rule id of the catalogue;
* a snapshot of a vCPU no earlier event ran on.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from difftest import TraceBuilder
from difftest.cli import main
from difftest.trace.snapshot_paths import known_snapshot_path

PAGE = 0x40000000


def _base(name: str) -> TraceBuilder:
    t = TraceBuilder(name, "typo case", policy="hw", long_mode=True)
    t.cpuid(pks=True).cr4(pks=True).wrmsr(0x6E1, 0x8)
    return t


def _replay(path: Path, *args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, ["replay", str(path), *args])
    return res.exit_code, res.stdout, res.stderr


def test_unknown_snapshot_path_is_exit_2_naming_the_row(tmp_path: Path) -> None:
    t = _base("typo-path")
    t.snapshot("vcpu0.pkr", 0xDEAD)
    row = len(t.rows()) - 1
    path = t.write(tmp_path / "t.parquet")
    code, out, err = _replay(path)
    assert code == 2, out
    assert err.startswith(f"difftest: error: {path}: event {row} ")
    assert "column 'path'" in err and "'vcpu0.pkr'" in err


def test_path_another_policy_models_stays_not_modelled(tmp_path: Path) -> None:
    t = _base("vmcs-under-hw")
    t.snapshot("vcpu0.vmcs01.exit_ctls.load_pkrs", 0)
    path = t.write(tmp_path / "t.parquet")
    code, out, _ = _replay(path, "--policy", "hw")
    assert code == 0, out
    assert "1 not modelled by hw" in out


@pytest.mark.parametrize("path", ["vcpu0.pkrs", "vcpu3.pkrs", "vcpu0.vmcs12.host_ia32_pkrs", "host.pkrs",
                                  "vcpu0.msr_bitmap.0x6e1.write"])
def test_model_paths_are_known(path: str) -> None:
    assert known_snapshot_path(path)


@pytest.mark.parametrize("path", ["vcpu0.pkr", "vcpu0.vmcs01.guest_pkrs", "host.pkru"])
def test_typo_paths_are_unknown(path: str) -> None:
    assert not known_snapshot_path(path)


def test_unknown_rule_id_is_exit_2(tmp_path: Path) -> None:
    t = _base("typo-rule")
    t.access(PAGE, key=1, write=True).expect_pf(0x23, rule="ARCH.RIGHT")
    row = len(t.rows()) - 1
    path = t.write(tmp_path / "t.parquet")
    code, out, err = _replay(path)
    assert code == 2, out
    assert f"event {row} " in err and "column 'exp_rule'" in err and "'ARCH.RIGHT' is not a rule id" in err


def test_snapshot_of_a_vcpu_that_never_ran_is_exit_2(tmp_path: Path) -> None:
    t = _base("ghost-vcpu")
    t.snapshot("vcpu7.pkrs", 0xBEEF)
    row = len(t.rows()) - 1
    path = t.write(tmp_path / "t.parquet")
    code, out, err = _replay(path)
    assert code == 2, out
    assert f"event {row} " in err and "snapshot of vcpu7, which no earlier event ran on" in err
    res = CliRunner().invoke(main, ["report", str(tmp_path), "--policy", "hw"])
    assert res.exit_code == 2 and "vcpu7" in res.stderr
