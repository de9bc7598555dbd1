"""The package layout keeps its shape (issue 22): no import cycles, click only in the CLI, one kind table.

Import-linter (run in CI, contracts in pyproject.toml) checks the layers; this test checks what a
layers contract cannot see: cycles between modules of one package, including imports made inside
functions (the old layout closed six cycles that way).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from difftest.search.generate import DOMAINS, generate
from reference_model.events import EVENT_KINDS, KINDS

ROOT = Path(__file__).resolve().parents[2]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Every project module ``path`` imports, at any depth (functions included)."""
    name = _module_name(path)
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                base = ".".join([*up, *([base] if base else [])])
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for t in targets:
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def _graph() -> dict[str, set[str]]:
    files = [p for top in ("difftest", "reference_model") for p in (ROOT / top).rglob("*.py")]
    modules = {_module_name(p) for p in files}
    return {_module_name(p): _imports(p, modules) for p in files}


def test_no_import_cycles() -> None:
    """Tarjan's strongly connected components of the module graph: every one has a single module."""
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_only_the_cli_imports_click() -> None:
    for path in (ROOT / "difftest").rglob("*.py"):
        if "cli" in path.relative_to(ROOT / "difftest").parts:
            continue
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not any(n == "click" or n.startswith("click.") for n in names), path


def test_every_kind_is_declared_once_with_its_fields() -> None:
    """KINDS, the older view, is derived from the one table; every required field is a real Event field."""
    from reference_model.events import Event

    assert set(KINDS) == set(EVENT_KINDS)
    event_fields = set(Event.__dataclass_fields__)
    for kind in EVENT_KINDS.values():
        assert set(kind.required) | {f for f in kind.optional} <= event_fields, kind.name
        assert kind.level in ("host", "l1"), kind.name


@pytest.mark.parametrize("seeds", [range(4)])
def test_the_generator_emits_every_modelled_kind(seeds: range) -> None:
    """Every event kind the model gives an outcome is produced by some domain of `difftest generate`.

    A kind the generator never emits is never fuzzed, shrunk or checked across engines by the
    generated-trace tests.
    """
    seen: set[str] = set()
    for domain in DOMAINS:
        for seed in seeds:
            seen.update(str(r["kind"]) for r in generate(seed, 2500, domain).rows)
    missing = sorted(k.name for k in EVENT_KINDS.values() if k.modelled and k.name not in seen)
    assert not missing, f"generate never emits: {missing}"
