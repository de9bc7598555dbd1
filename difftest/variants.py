"""User policy variants: a TOML file naming a base policy and the knobs it changes.

    # my-variant.toml
    base = "kvm-v7"
    name = "v7-init-clears"                      # optional; default: the file name
    description = "v7, but INIT clears PKRS"     # optional
    source = "what-if for review of ..."         # optional
    [knobs]
    init_clears_pkrs = true

Wherever a policy name is accepted on the command line, the path of such a file is accepted too;
a trace's metadata never names one (see :func:`metadata_policies` below).  The file is checked
against a small schema before it is used: at most :data:`MAX_BYTES` bytes, keys nested at most
:data:`MAX_DEPTH` deep, at most :data:`MAX_KNOBS` knobs, strings of at most :data:`MAX_TEXT`
characters, a name of letters, digits and ``.-_+`` that is not a registered policy's, and knob
values of the base knob's type and range.  Each problem is one line naming the file and key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import tomllib

from reference_model.host import DEFAULT_HOST
from reference_model.policies import POLICIES, Policy, get_policy

from .errors import InputError
from .printable import printable

MAX_BYTES = 16 << 10  # a variant file is a few lines of TOML
MAX_DEPTH = 4  # levels of tables/arrays/dotted keys (the schema needs 2: [knobs] and a key)
MAX_KNOBS = 64
MAX_TEXT = 1000  # characters of name/description/source
U64_MAX = (1 << 64) - 1
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
_KNOWN = ("base", "name", "description", "source", "knobs")
_LOADED: dict[int, tuple[Policy, str, dict[str, Any]]] = {}  # id(policy) -> (policy, base, knobs)


def _nesting(text: str) -> int:
    """An upper bound of how deep ``text`` nests keys, tables and arrays, found without parsing
    (tomllib spends quadratic time and memory on a dotted key 50,000 levels deep).  Quoted strings
    are skipped; a dot in a key counts one level, an opening bracket or brace one more."""
    deepest = 0
    for line in text.splitlines():
        depth = 0
        dots = 0
        quote = ""
        for c in line:
            if quote:
                if c == quote:
                    quote = ""
            elif c in "\"'":
                quote = c
            elif c == "#":
                break
            elif c in "[{":
                depth += 1
                deepest = max(deepest, depth + dots)
            elif c in "]}":
                depth -= 1
            elif c == ".":
                dots += 1
                deepest = max(deepest, depth + dots)
            elif c == "=":
                dots = 0  # (a float's dot is not a key's)
                quote = ""
                rest = line[line.index("=") + 1:]
                deepest = max(deepest, _value_depth(rest))
                break
    return deepest


def _value_depth(value: str) -> int:
    depth = deepest = 0
    quote = ""
    for c in value:
        if quote:
            if c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
        elif c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    return deepest


def load_variant_file(path: str) -> Policy:
    """The policy a variant file describes (InputError naming the key on any problem)."""
    p = Path(path)
    try:
        if not p.is_file():
            raise InputError(path, "no such policy variant file")
        if p.stat().st_size > MAX_BYTES:
            raise InputError(path, f"larger than {MAX_BYTES} bytes: a variant file is a few lines of TOML")
        raw = p.read_bytes()[: MAX_BYTES + 1]
    except OSError as exc:
        raise InputError(path, f"cannot read the variant file ({exc.strerror or exc})") from None
    if len(raw) > MAX_BYTES:
        raise InputError(path, f"larger than {MAX_BYTES} bytes: a variant file is a few lines of TOML")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(path, "not UTF-8 text") from None
    if _nesting(text) > MAX_DEPTH:
        raise InputError(path, f"keys, tables or arrays nested more than {MAX_DEPTH} levels deep")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(path, f"not valid TOML ({exc})") from None
    except (RecursionError, MemoryError):  # tomllib parses nested arrays recursively
        raise InputError(path, "not valid TOML (arrays or tables nested too deeply)") from None
    except ValueError as exc:  # an integer of more than 4,300 digits
        raise InputError(path, f"not a usable TOML value ({exc})") from None
    return _policy_of(path, p, data)


def _policy_of(path: str, p: Path, data: dict[str, Any]) -> Policy:
    for key in data:
        if key not in _KNOWN:
            raise InputError(path, f"unknown key {printable(key, 80)!r} (known: {', '.join(sorted(_KNOWN))})")
    if not isinstance(data.get("base"), str):
        raise InputError(path, "'base' must name a registered policy, e.g. base = \"kvm-v7\"")
    for key in ("name", "description", "source"):
        if key in data and not isinstance(data[key], str):
            raise InputError(path, f"{key}: expected a string")
        if key in data and len(data[key]) > MAX_TEXT:
            raise InputError(path, f"{key}: longer than {MAX_TEXT} characters")
    base_name = data["base"]
    try:
        base = get_policy(base_name)
    except KeyError as exc:
        raise InputError(path, f"base: {exc.args[0]}") from None
    knobs = data.get("knobs", {})
    if not isinstance(knobs, dict):
        raise InputError(path, "[knobs] must be a table")
    if len(knobs) > MAX_KNOBS:
        raise InputError(path, f"knobs: {len(knobs)} keys (at most {MAX_KNOBS})")
    for k, v in knobs.items():
        if k not in base.knobs:
            raise InputError(path, f"knobs.{printable(k, 80)}: unknown knob for {base_name} "
                             f"(known: {', '.join(sorted(base.knobs)) or 'none'})")
        want = type(base.knobs[k])
        if not isinstance(v, want) or (want is int and isinstance(v, bool)):
            raise InputError(path, f"knobs.{k}: expected {want.__name__}, got {type(v).__name__}")
        if want is int and not 0 <= v <= U64_MAX:  # int knobs are register masks
            raise InputError(path, f"knobs.{k}: {v if abs(v) < 1 << 80 else 'a huge integer'} is not a 64-bit mask "
                             f"(0 .. {U64_MAX:#x})")
        if want is str and len(v) > MAX_TEXT:
            raise InputError(path, f"knobs.{k}: longer than {MAX_TEXT} characters")
    name = data.get("name", p.stem)
    if not NAME_RE.fullmatch(name):
        raise InputError(path, f"name: {printable(name, 80)!r} is not a policy name (letters, digits, '.-_+'; "
                         f"at most 64 characters)" + ("; set name = \"...\" in the file" if "name" not in data else ""))
    if name in POLICIES:  # its results would merge with the registered policy's, under one name
        raise InputError(path, f"name: {name!r} is a registered policy's name; a variant needs its own "
                         "(set name = \"...\")")
    policy = base.derive(
        name,
        data.get("description", f"{base_name} with {', '.join(f'{k}={v}' for k, v in knobs.items()) or 'no changes'}"),
        data.get("source", f"user variant of {base_name}"),
        **knobs,
    )
    try:  # the machine checks value domains (e.g. a string knob's allowed values): fail here, not mid-replay
        policy.build(DEFAULT_HOST)
    except (ValueError, TypeError) as exc:
        raise InputError(path, f"knobs: {exc}") from None
    _LOADED[id(policy)] = (policy, base_name, dict(knobs))
    return policy


def variant_provenance(policy: Policy) -> tuple[str, dict[str, Any]] | None:
    """For a policy loaded from a variant file: its base policy's name and the knobs it sets."""
    hit = _LOADED.get(id(policy))
    return (hit[1], hit[2]) if hit is not None and hit[0] is policy else None


# --------------------------------------------------------------------------- which policies a run uses
# A trace is data from anywhere (a bug report, a colleague's capture).  Its metadata may therefore name
# only *registered* policies and profiles: a path in ``pksdt.policy`` (``/etc/passwd``, ``../x.toml``) is
# an error naming the trace, never a file we open.  Variant files come only from the command line
# (``--policy FILE``).  Lists are de-duplicated and every name is checked, so ``hw,nope`` is an error and
# 3,000 repetitions of ``hw`` are one run.

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


def resolve_policy(name: str) -> Policy:
    """A policy named on the command line: registered, or the variant file at that path (never a name
    from a trace's metadata: see :func:`metadata_policies`)."""
    if looks_like_file(name):
        return load_variant_file(name)
    return get_policy(name)


def check_policy_names(names: Sequence[str]) -> list[Policy]:
    """Every command-line policy resolved once, in order, duplicates dropped; two different
    policies with one name are an error (their results would merge)."""
    out: dict[str, Policy] = {}
    for n in unique(names):
        p = resolve_policy(n)
        if p.name in out:
            raise InputError(n, f"policy name {printable(p.name, 80)!r} is used twice on the command line")
        out[p.name] = p
    return list(out.values())
