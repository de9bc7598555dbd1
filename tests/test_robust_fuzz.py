"""Bounded fuzz of every reader (the long run is bench/fuzz_readers.py): hostile files end in one
InputError line naming the file, exit code 2, no traceback (README house rules, issue 9).

Volume runs at the API level (tests/hostile_inputs.py: InputError or success, nothing else);
the CLI is checked in-process with click's CliRunner on fewer inputs (exit code and the single
stderr line), and once per reader in a real subprocess.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from hostile_inputs import GOOD_TRACE, READERS, Reader, check_reader
from hypothesis import HealthCheck, given, settings

from difftest.cli import main

# examples per reader, sized so the whole file stays well under two minutes on the CI machine
API_EXAMPLES = {"parquet": 400, "toml": 1500, "ftrace": 700, "pkvm": 1500}
CLI_EXAMPLES = 40
SETTINGS = {"deadline": None, "derandomize": True, "database": None,
            "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
                                      HealthCheck.function_scoped_fixture]}


def _api_test(reader: Reader):  # type: ignore[no-untyped-def]
    @settings(max_examples=API_EXAMPLES[reader.name], **SETTINGS)
    @given(data=reader.strategy())
    def run(tmp_path: Path, data: bytes) -> None:
        work = tmp_path / "work"
        work.mkdir(exist_ok=True)
        check_reader(reader, data, work)  # raises Crash on anything but InputError / success

    return run


test_parquet_reader_survives_hostile_files = _api_test(READERS["parquet"])
test_toml_variant_reader_survives_hostile_files = _api_test(READERS["toml"])
test_ftrace_importer_survives_hostile_files = _api_test(READERS["ftrace"])
test_pkvm_importer_survives_hostile_files = _api_test(READERS["pkvm"])


def assert_cli_contract(exit_code: int, stdout: str, stderr: str, path: Path, exception: BaseException | None) -> None:
    """Exit 0/1 for accepted input; exit 2 with exactly one stderr line naming the file for bad input."""
    assert exception is None or isinstance(exception, SystemExit), f"crash: {exception!r}"
    assert "Traceback" not in stderr + stdout
    if exit_code == 2:
        lines = stderr.splitlines()
        assert len(lines) == 1, stderr[:1000]
        assert lines[0].startswith(f"difftest: error: {path}"), lines[0][:300]
    else:
        assert exit_code in (0, 1), (exit_code, stderr[:500])


@pytest.mark.parametrize("name", sorted(READERS))
def test_cli_gives_one_line_and_exit_2(name: str, tmp_path: Path) -> None:
    reader = READERS[name]
    runner = CliRunner()
    seen = {"exit2": 0}

    @settings(max_examples=CLI_EXAMPLES, **SETTINGS)
    @given(data=reader.strategy())
    def run(data: bytes) -> None:
        for old in tmp_path.iterdir():
            old.unlink()
        path = tmp_path / f"input{reader.suffix}"
        path.write_bytes(data)
        res = runner.invoke(main, reader.cli_args(path, tmp_path))
        assert_cli_contract(res.exit_code, res.stdout, res.stderr, path, res.exception)
        seen["exit2"] += res.exit_code == 2

    run()
    assert seen["exit2"] >= CLI_EXAMPLES // 2  # the inputs are mostly bad: the error path was exercised


# one hand-picked bad file per reader, through a real process (no CliRunner in between)
BAD_FILES = {
    "parquet": b"PAR1" + bytes(range(256)) * 4 + b"PAR1",
    "toml": b'base = "kvm-v7"\n[knobs]\nmmu_role = "bogus"\n',
    "ftrace": b"python3-1 [000] ..... 1.0: kvm_msr: msr_write 6e1 = 0x" + b"f" * 40 + b"\n",
    "pkvm": b"Host: CPUID 1 cycles " + b"9" * 5000 + b" each-handler-cycle 1\n",
}


@pytest.mark.e2e
@pytest.mark.parametrize("name", sorted(READERS))
def test_subprocess_gives_one_line_and_exit_2(name: str, tmp_path: Path) -> None:
    reader = READERS[name]
    path = tmp_path / f"bad{reader.suffix}"
    path.write_bytes(BAD_FILES[name])
    proc = subprocess.run([sys.executable, "-m", "difftest.cli", *reader.cli_args(path, tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert_cli_contract(proc.returncode, proc.stdout, proc.stderr, path, None)


def test_good_inputs_still_pass(tmp_path: Path) -> None:
    """The hardened readers still accept the real inputs the strategies start from."""
    for name, sample in (("parquet", GOOD_TRACE), ("ftrace", Path(__file__).parent / "fixtures" / "ftrace_longmode_ext.txt"),
                         ("pkvm", Path(__file__).parent / "fixtures" / "pkvm_vmexit_pvm.txt"),
                         ("toml", Path(__file__).parents[1] / "examples" / "v7-init-clears-pkrs.toml")):
        work = tmp_path / name
        work.mkdir()
        assert check_reader(READERS[name], sample.read_bytes(), work) == "accepted", name


HOSTILE = Path(__file__).parent / "fixtures" / "hostile"


@pytest.mark.parametrize("path", sorted(HOSTILE.iterdir()), ids=lambda p: p.name)
def test_past_crashes_stay_fixed(path: Path, tmp_path: Path) -> None:
    """Reproducers the fuzzers found (each crashed a reader before its fix): now an InputError."""
    reader = READERS[path.name.split("-")[0]]
    assert check_reader(reader, path.read_bytes(), tmp_path) == "rejected"
