"""User policy variants: a TOML file naming a base policy and the knobs it changes.

    # my-variant.toml
    base = "kvm-v7"
    name = "v7-init-clears"                      # optional; default: the file name
    description = "v7, but INIT clears PKRS"     # optional
    source = "what-if for review of ..."         # optional
    [knobs]
    init_clears_pkrs = true

Wherever a policy name is accepted, the path of such a file is accepted too.
"""

from __future__ import annotations

from pathlib import Path

import tomllib

from reference_model.host import DEFAULT_HOST
from reference_model.policies import Policy, get_policy

from .errors import InputError

MAX_BYTES = 1 << 20
U64_MAX = (1 << 64) - 1


def load_variant_file(path: str) -> Policy:
    """The policy a variant file describes (InputError naming the key on any problem)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(path, "no such policy variant file")
    if p.stat().st_size > MAX_BYTES:
        raise InputError(path, f"larger than {MAX_BYTES} bytes: a variant file is a few lines of TOML")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError(path, "not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(path, f"not valid TOML ({exc})") from None
    except RecursionError:  # tomllib parses nested arrays recursively
        raise InputError(path, "not valid TOML (arrays or tables nested too deeply)") from None
    known = {"base", "name", "description", "source", "knobs"}
    for key in data:
        if key not in known:
            raise InputError(path, f"unknown key {key!r} (known: {', '.join(sorted(known))})")
    base_name = data.get("base")
    if not isinstance(base_name, str):
        raise InputError(path, "'base' must name a registered policy, e.g. base = \"kvm-v7\"")
    try:
        base = get_policy(base_name)
    except KeyError as exc:
        raise InputError(path, f"base: {exc.args[0]}") from None
    knobs = data.get("knobs", {})
    if not isinstance(knobs, dict):
        raise InputError(path, "[knobs] must be a table")
    for k, v in knobs.items():
        if k not in base.knobs:
            raise InputError(path, f"knobs.{k}: unknown knob for {base_name} (known: {', '.join(sorted(base.knobs)) or 'none'})")
        want = type(base.knobs[k])
        if not isinstance(v, want) or (want is int and isinstance(v, bool)):
            raise InputError(path, f"knobs.{k}: expected {want.__name__}, got {type(v).__name__}")
        if want is int and not 0 <= v <= U64_MAX:  # int knobs are register masks
            raise InputError(path, f"knobs.{k}: {v} is not a 64-bit mask (0 .. {U64_MAX:#x})")
    for key in ("name", "description", "source"):
        if key in data and not isinstance(data[key], str):
            raise InputError(path, f"{key}: expected a string")
    policy = base.derive(
        data.get("name", p.stem),
        data.get("description", f"{base_name} with {', '.join(f'{k}={v}' for k, v in knobs.items()) or 'no changes'}"),
        data.get("source", f"user variant {p}"),
        **knobs,
    )
    try:  # the machine checks value domains (e.g. a string knob's allowed values): fail here, not mid-replay
        policy.build(DEFAULT_HOST)
    except (ValueError, TypeError) as exc:
        raise InputError(path, f"knobs: {exc}") from None
    return policy


def resolve_policy(name: str) -> Policy:
    """A registered policy, or the user variant a TOML file describes."""
    if name.endswith(".toml") or "/" in name:
        return load_variant_file(name)
    return get_policy(name)
