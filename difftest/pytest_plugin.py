"""pytest plugin: ``pytest --difftest DIR`` runs a trace corpus as tests, one item per trace and policy.

Registered through the ``pytest11`` entry point, so an installed difftest makes the option
available everywhere; without ``--difftest`` the plugin does nothing.

* Items are ``path/to/trace.parquet::POLICY``; the policies are those of ``difftest report``
  (``--difftest-policy``, repeatable, default kvm-v7, plus each trace's own), the profile and host
  those of the trace's metadata unless ``--difftest-profile`` says otherwise.
* The known outcomes (``known-outcomes.toml``, docs/known-outcomes.md) decide: a declared known
  divergence is an ``xfail(strict=True)`` that only the declared divergence satisfies (the same
  divergence at another event or rule fails; none at all is a strict XPASS, i.e. a failure); a
  declared ``na`` is a skip, not replayed; everything else must replay without divergence.
* A failure shows the text report of the replay (first divergence, context, rule).
* Given ``--difftest`` and no test paths, only the corpus is collected (not the project's tests).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from difftest.errors import InputError


class DivergenceFailure(Exception):
    """A run FAILed: an undeclared divergence, or a declared one in the wrong place."""


class KnownDivergence(DivergenceFailure):
    """The declared known divergence happened as declared (the xfail the declaration expects)."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("difftest", "PKS trace corpus (difftest)")
    group.addoption("--difftest", action="append", default=[], metavar="DIR",
                    help="run every *.parquet trace under DIR (a folder or a file) as tests, one per trace and policy")
    group.addoption("--difftest-policy", action="append", default=[], metavar="NAME",
                    help="policy to run every trace under (repeatable; default kvm-v7, plus each trace's own)")
    group.addoption("--difftest-profile", default=None, metavar="NAME",
                    help="comparison profile (default: each trace's metadata 'profile', else strict)")
    group.addoption("--difftest-known", action="append", default=[], metavar="FILE",
                    help="a known-outcomes file besides those found next to the traces (repeatable)")
    group.addoption("--difftest-no-known", action="store_true", default=False,
                    help="ignore known-outcomes files: every divergence fails")


def _corpus_roots(config: pytest.Config) -> list[Path]:
    return [Path(d).resolve() for d in config.getoption("difftest")]


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    roots = config.getoption("difftest")
    if not roots:
        return
    for d in roots:
        if not Path(d).exists():
            raise pytest.UsageError(f"--difftest {d}: no such file or folder")
    if config.args_source is not pytest.Config.ArgsSource.ARGS:  # no test paths given: only the corpus
        config.args = [str(Path(d)) for d in roots]
    from difftest.verdict.known_outcomes import NO_KNOWN_OUTCOMES, KnownOutcomes

    try:
        config._difftest_known = (  # type: ignore[attr-defined]
            NO_KNOWN_OUTCOMES if config.getoption("difftest_no_known")
            else KnownOutcomes(config.getoption("difftest_known")))
    except InputError as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    roots = _corpus_roots(parent.config)
    if not roots or file_path.suffix != ".parquet":
        return None
    p = file_path.resolve()
    if any(p == r or r in p.parents for r in roots):
        return TraceCollector.from_parent(parent, path=file_path)
    return None


class TraceCollector(pytest.File):
    """One trace file: an item per policy it runs under."""

    def collect(self) -> Iterator[pytest.Item]:
        from difftest.report.corpus import policies_for
        from difftest.trace.io import open_trace
        from difftest.variants import resolve_policy

        try:
            tf = open_trace(self.path)
        except InputError as exc:
            raise self.CollectError(str(exc)) from None
        known = self.config._difftest_known  # type: ignore[attr-defined]
        for name in policies_for(self.config.getoption("difftest_policy"), tf.policies()):
            try:
                policy = resolve_policy(name)
            except (KeyError, InputError) as exc:
                raise self.CollectError(f"{self.path}: policy {name!r}: {exc}") from None
            item = TraceItem.from_parent(self, name=name, policy=name)
            decl = known.lookup(self.path, policy.name)
            if decl is not None and decl.verdict == "na":
                item.add_marker(pytest.mark.skip(reason=f"not applicable: {decl.why}"))
            elif decl is not None and decl.verdict == "diverge":
                item.add_marker(pytest.mark.xfail(reason=decl.describe(), strict=True, raises=KnownDivergence))
            item.known = decl
            yield item


class TraceItem(pytest.Item):
    """One trace under one policy."""

    def __init__(self, *, policy: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.policy = policy
        self.known: Any = None
        self.text = ""

    def runtest(self) -> None:
        from difftest.engine import replay_trace
        from difftest.report.text import render_replay
        from difftest.trace.io import open_trace
        from difftest.verdict.run_settings import settings_for
        from difftest.verdict.run_status import Status

        tf = open_trace(self.path)
        run = settings_for(tf, self.policy, self.config.getoption("difftest_profile"))
        res = replay_trace(tf, run.policy, run.profile)
        verdict = res.judge(self.known)
        self.text = f"{run.describe()}\n{render_replay(res)}"
        self.user_properties.append(("status", verdict.status.value))
        if verdict.status is Status.XFAIL:
            raise KnownDivergence(verdict.reason)
        if verdict.status is Status.FAIL:
            raise DivergenceFailure(verdict.reason)
        # PASS; XPASS is pytest's own strict-xfail failure (the item carries the xfail mark)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, DivergenceFailure):
            return f"{excinfo.value}\n{self.text}"
        if isinstance(excinfo.value, InputError):
            return f"bad input: {excinfo.value}"
        return super().repr_failure(excinfo, style)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"{self.path.name} under {self.policy}"
