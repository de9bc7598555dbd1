"""Which policies a run uses: names from the command line, and names a trace's metadata asks for.

A trace is data from anywhere (a bug report, a colleague's capture).  Its metadata may therefore
name only *registered* policies and profiles: a path in ``pksdt.policy`` (``/etc/passwd``,
``../x.toml``) is an error naming the trace, never a file we open.  Variant files come only from
the command line (``--policy FILE``).  Lists are de-duplicated and every name is checked, so
``hw,nope`` is an error and 3,000 repetitions of ``hw`` are one run.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from reference_model.policies import POLICIES, Policy, get_policy

from .errors import InputError
from .printable import printable

MAX_META_POLICIES = 32  # distinct policies one trace's metadata may ask for (there are ~16 registered)


def looks_like_file(name: str) -> bool:
    """A command-line policy argument that names a variant file rather than a registered policy."""
    return name.endswith(".toml") or "/" in name


def unique(names: Iterable[str]) -> list[str]:
    """``names`` in first-seen order, each once."""
    return list(dict.fromkeys(names))


def metadata_policies(path: str, text: str | None) -> list[str]:
    """The registered policies ``pksdt.policy`` names, de-duplicated (InputError naming the trace
    for a name that is not registered: a path, a typo, an empty list entry among others)."""
    if not text:
        return []
    names = unique(p.strip() for p in text.split(","))
    names = [n for n in names if n]
    if len(names) > MAX_META_POLICIES:
        raise InputError(path, f"metadata 'pksdt.policy' names {len(names)} distinct policies "
                         f"(at most {MAX_META_POLICIES})")
    for n in names:
        if n not in POLICIES:
            hint = " (a trace may name only registered policies; pass a variant file with --policy)" \
                if looks_like_file(n) else f"; known: {', '.join(POLICIES)}"
            raise InputError(path, f"metadata 'pksdt.policy': {printable(n, 80)!r} is not a registered policy{hint}")
    return names


def metadata_policy(path: str, name: str) -> Policy:
    """A registered policy a trace's metadata names (see :func:`metadata_policies`)."""
    return get_policy(metadata_policies(path, name)[0])


def resolve_cli_policy(name: str) -> Policy:
    """A policy named on the command line: registered, or the variant file at that path."""
    if looks_like_file(name):
        from .variants import load_variant_file

        return load_variant_file(name)
    return get_policy(name)


def check_policy_names(names: Sequence[str]) -> list[Policy]:
    """Every command-line policy resolved once, in order, duplicates dropped; two different
    policies with one name are an error (their results would merge)."""
    out: dict[str, Policy] = {}
    for n in unique(names):
        p = resolve_cli_policy(n)
        if p.name in out:
            raise InputError(n, f"policy name {printable(p.name, 80)!r} is used twice on the command line")
        out[p.name] = p
    return list(out.values())
