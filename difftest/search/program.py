"""A trace as a runnable TraceBuilder program, in the builder's own words (``t.wrmsr(...)``, ``t.vmlaunch()``).

Each row becomes the builder call that writes exactly that row; where no named method does (a
field the method cannot set, a host-level row of a guest kind), the row is written with the
generic ``t.event(kind, ...)``.  The program is executed before it is returned and the rows it
writes are compared with the trace's: a row that comes out different falls back to the generic
form, so the printed program always rebuilds the trace it stands for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from difftest.trace.builder import TraceBuilder
from difftest.trace.schema import SNAPSHOT_KIND
from reference_model.events import EVENT_KINDS
from reference_model.registers import CPUID1_ECX_VMX

from .generate import Draft

_HOST_KINDS = frozenset(k.name for k in EVENT_KINDS.values() if k.level == "host")

_META_ARGS = ("name", "description")
_BUILDER_KW = (("producer", "producer"), ("policy", "policy"), ("source", "source"), ("notes", "notes"),
               ("cpu.features", "host_features"))
_PLACE = frozenset({"seq", "kind", "vcpu", "level", "note"})  # columns the call's position gives, not its arguments
_MAP_FLAGS = (("key", 0), ("user", False), ("user_upper", True), ("writable", True), ("present", True),
              ("rsvd", False), ("nx", False))


def lit(v: Any) -> str:
    """A Python literal for a trace value (addresses and masks in hex)."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return repr(v)
    if isinstance(v, int):
        return hex(v) if v > 9 else str(v)
    if isinstance(v, tuple):
        return "(" + ", ".join(lit(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    return repr(v)


def _args(pos: list[Any], **kw: Any) -> str:
    return ", ".join([lit(p) for p in pos] + [f"{k}={lit(v)}" for k, v in kw.items()])


def _cpl(f: dict[str, Any]) -> dict[str, Any]:
    return {"cpl": f.pop("cpl")} if f.get("cpl") else {}


def _access(f: dict[str, Any], emulated: bool) -> str | None:
    addr, access = f.pop("addr", None), f.pop("access", None)
    if addr is None or access is None:
        return None
    kw: dict[str, Any] = {}
    if access == "write":
        kw["write"] = True
    elif access != "read":
        kw["kind"] = access
    kw.update(_cpl(f))
    if emulated:
        kw["emulated"] = True
    return f"access({_args([addr], **kw)})"


def _map(f: dict[str, Any]) -> str | None:
    addr = f.pop("addr", None)
    if addr is None:
        return None
    kw = {}
    for name, default in _MAP_FLAGS:
        v = f.pop(name, default)
        if v != default:
            kw[name] = v
    size = f.pop("page_size", "4k")
    if size != "4k":
        kw["size"] = size
    return f"map({_args([addr], **kw)})"


def _cpuid(f: dict[str, Any]) -> str | None:
    ecx1 = f.pop("cpuid_1_ecx", 0) or 0
    if ecx1 not in (0, CPUID1_ECX_VMX):
        return None
    kw: dict[str, Any] = {"ecx7": f.pop("cpuid_7_ecx", 0) or 0}
    if ecx1:
        kw["vmx"] = True
    return f"cpuid({_args([], **kw)})"


def _simple(name: str, pos: tuple[str, ...] = (), kw: tuple[str, ...] = (), rename: dict[str, str] | None = None
            ) -> Callable[[dict[str, Any]], str | None]:
    """A method whose arguments are the row's fields: ``pos`` positional, ``kw`` by keyword (omitted when null)."""
    def call(f: dict[str, Any]) -> str | None:
        if any(f.get(p) is None for p in pos):
            return None
        args = [f.pop(p) for p in pos]
        kws = {(rename or {}).get(k, k): f.pop(k) for k in kw if f.get(k) is not None}
        return f"{name}({_args(args, **kws)})"
    return call


# kind -> the builder call writing such a row from its fields (popping those it uses), or None if it cannot
_CALLS: dict[str, Callable[[dict[str, Any]], str | None]] = {
    "wrmsr": lambda f: None if f.get("msr") is None or f.get("value") is None else
    f"wrmsr({_args([f.pop('msr'), f.pop('value')], **_cpl(f))})",
    "rdmsr": lambda f: None if f.get("msr") is None else f"rdmsr({_args([f.pop('msr')], **_cpl(f))})",
    "mov_cr0": lambda f: None if f.get("value") is None else f"cr0({_args([f.pop('value')], **_cpl(f))})",
    "mov_cr3": lambda f: None if f.get("value") is None else f"cr3({_args([f.pop('value')], **_cpl(f))})",
    "mov_cr4": lambda f: None if f.get("value") is None else
    f"cr4({_args([f.pop('value')], flush=False, **_cpl(f))})",
    "wrpkru": _simple("wrpkru", ("value",)),
    "rdpkru": _simple("rdpkru"),
    "invlpg": _simple("invlpg", ("addr",)),
    "map": _map,
    "access": lambda f: _access(f, False),
    "emu_access": lambda f: _access(f, True),
    "cpuid": lambda f: f"guest_cpuid({_args([f.pop('cpuid_leaf', 7) or 0, f.pop('cpuid_subleaf', 0) or 0])})",
    "set_cpuid": _cpuid,
    "get_msrs": lambda f: None if f.get("msrs") is None else f"get_msrs({_args(list(f.pop('msrs')))})",
    "set_msrs": lambda f: None if f.get("msrs") is None or f.get("values") is None
    or len(f["msrs"]) != len(f["values"]) or len(set(f["msrs"])) != len(f["msrs"]) else
    "set_msrs({" + ", ".join(f"{lit(m)}: {lit(v)}" for m, v in zip(f.pop("msrs"), f.pop("values"), strict=True)) + "})",
    "set_sregs": _simple("set_sregs", kw=("cr0", "cr3", "cr4", "efer")),
    "get_sregs": _simple("get_sregs", ("reg",)),
    "set_msr_filter": lambda f: "msr_filter(" + _args([f.pop("filter_default", "allow") or "allow",
                                                       tuple(f.pop("msrs", ()) or ()), f.pop("filter_allow", 0) or 0]) + ")",
    "enable_user_msr": _simple("user_msr_exits", ("value",)),
    "reset": _simple("reset"),
    "init": _simple("init"),
    "vm_exit": _simple("vm_exit", kw=("reason",)),
    "host_pkrs": _simple("host_pkrs", ("value",)),
    "vmwrite": _simple("vmwrite", ("field", "value")),
    "vmread": _simple("vmread", ("field",)),
    "vmlaunch": _simple("vmlaunch"),
    "vmresume": _simple("vmresume"),
    "nested_exit": _simple("nested_exit", kw=("reason",)),
    "get_nested_state": _simple("get_nested_state"),
    "set_nested_state": lambda f: None if f.get("src_vcpu") is None else
    f"set_nested_state({_args([f.pop('src_vcpu')], **({'run_pending': True} if f.pop('run_pending', False) else {}))})",
}


def _expect(r: dict[str, Any]) -> str:
    exp = {k[4:]: v for k, v in r.items() if k.startswith("exp_") and v is not None}
    if not exp:
        return ""
    result = exp.pop("result", None)
    rule = exp.pop("rule", None)
    kw = dict(exp)
    if rule is not None:
        kw["rule"] = rule
    return f".expect({_args([result] if result is not None else [], **kw)})"


def _generic(r: dict[str, Any], level: str | None) -> str:
    fields = {k: v for k, v in r.items() if k not in _PLACE and not k.startswith("exp_") and v is not None}
    if level is not None:
        fields["level"] = level
    return f"event({_args([r['kind']], **fields)})"


def _lines(draft: Draft, generic: set[int]) -> list[str]:
    meta = draft.meta
    args = [lit(meta.get("name", "shrunk")), lit(meta.get("description", ""))]
    args += [f"{kw}={meta[key]!r}" for key, kw in _BUILDER_KW if key in meta]
    lines = ["from difftest import TraceBuilder", "", f"t = TraceBuilder({', '.join(args)})"]
    vcpu, level = 0, "l1"
    for i, r in enumerate(draft.rows):
        if i == draft.setup_rows and i:
            lines.append("t.end_setup()")
        on: dict[str, Any] = {}
        rv = r.get("vcpu", 0)
        if rv != vcpu:
            on["vcpu"] = vcpu = rv
        kind = r["kind"]
        if kind == SNAPSHOT_KIND:
            extra = f", rule={r['exp_rule']!r}" if r.get("exp_rule") else ""
            prefix = f"t.on({_args([], **on)})." if on else "t."
            lines.append(f"{prefix}snapshot({r['path']!r}, {lit(r['exp_value'])}{extra})")
            continue
        rl = r.get("level") or "l1"
        auto = "host" if kind in _HOST_KINDS else level
        explicit_level = None
        if rl != auto:
            if rl in ("l1", "l2"):
                on["level"] = level = rl
            else:
                explicit_level = rl
        call = None
        if i not in generic and explicit_level is None and kind in _CALLS:
            f = {k: v for k, v in r.items() if k not in _PLACE and not k.startswith("exp_") and v is not None}
            call = _CALLS[kind](f)
            if f:  # a field the method does not write
                call = None
        if call is None:
            call = _generic(r, explicit_level)
        prefix = f"t.on({_args([], **on)})." if on else "t."
        note = f".note({r['note']!r})" if r.get("note") else ""
        lines.append(prefix + call + _expect(r) + note)
    if draft.setup_rows == len(draft.rows) and draft.rows:
        lines.append("t.end_setup()")
    return lines


def _rows_written(code: str) -> list[dict[str, Any]] | None:
    """The rows the program's builder holds after running it (without its final write), or None if it fails."""
    ns: dict[str, Any] = {}
    try:
        exec(compile(code, "<program>", "exec"), ns)
    except Exception:
        return None
    t = ns.get("t")
    return t.rows() if isinstance(t, TraceBuilder) else None


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    def norm(r: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in r.items() if k != "seq" and v is not None}
    return norm(a) == norm(b)


def to_python(draft: Draft, out_path: str = "min.parquet") -> str:
    """The trace as a runnable TraceBuilder program that writes ``out_path`` (checked by running it)."""
    want = draft.rows
    generic: set[int] = set()
    for _ in range(3):
        lines = _lines(draft, generic)
        got = _rows_written("\n".join(lines) + "\n")
        if got is not None and len(got) == len(want):
            bad = {i for i, (a, b) in enumerate(zip(got, want, strict=True)) if not _same(a, b)}
            if not bad:
                break
            generic |= bad
        else:
            generic = set(range(len(want)))
    lines.append(f"t.write({out_path!r})")
    return "\n".join(lines) + "\n"
