"""``difftest rules``: the rule catalogue that ships with the tool, every id with its text and source."""

from __future__ import annotations

import click

from difftest.cli.vocabulary import echo_json
from reference_model.rules import RULES, describe, is_spec_rule, source_of


def _entry(rule_id: str) -> dict[str, object]:
    return {"id": rule_id, "text": describe(rule_id), "source": source_of(rule_id), "spec": is_spec_rule(rule_id)}


@click.command(name="rules")
@click.argument("rule_ids", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="print the rules as JSON")
def rules_cmd(rule_ids: tuple[str, ...], as_json: bool) -> None:
    """List every rule id with its text and source, or show the rules RULE_IDS (a prefix such as KVM.MSR selects a family)."""
    if rule_ids:
        chosen: list[str] = []
        for rid in rule_ids:
            hits = [r for r in RULES if r == rid or r.startswith(rid.rstrip(".") + ".")]
            if not hits:
                raise click.BadParameter(f"unknown rule id {rid!r} (difftest rules lists them)", param_hint="RULE_IDS")
            chosen += [h for h in hits if h not in chosen]
    else:
        chosen = list(RULES)
    if as_json:
        echo_json([_entry(r) for r in chosen])
        return
    if len(chosen) == 1:
        rid = chosen[0]
        click.echo(f"{rid}\n  {describe(rid)}\n  source: {source_of(rid)}")
        return
    width = max(len(r) for r in chosen)
    for rid in chosen:
        click.echo(f"{rid:<{width}}  {describe(rid)}")
        click.echo(f"{'':<{width}}  source: {source_of(rid)}")
