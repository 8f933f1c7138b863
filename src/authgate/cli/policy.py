"""``authgate policy`` and ``authgate decide``."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click
from rich.table import Table

from authgate.cli.common import (
    Failure,
    out,
    print_json,
    settings_of,
    with_services,
)
from authgate.decide import Decision
from authgate.errors import AuthgateError
from authgate.policy import build_policy
from authgate.wiring import Services

# -- policy and decisions ----------------------------------------------------------------


@click.group()
def policy() -> None:
    """Inspect the tier policy and route table."""


@policy.command("check")
@click.option("--strict", is_flag=True, help="Fail on warnings (unreachable rules).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def policy_check(ctx: click.Context, strict: bool, as_json: bool) -> None:
    """Validate the config and print the tiers and the route table."""
    settings = settings_of(ctx)
    try:
        compiled = build_policy(settings)
    except AuthgateError as exc:
        raise Failure(exc) from None
    if as_json:
        print_json(
            {
                "tiers": [
                    {
                        "level": t.level,
                        "name": t.name,
                        "requests_per_minute": t.requests_per_minute,
                        "burst": t.burst,
                    }
                    for t in compiled.tiers
                ],
                "routes": [
                    {
                        "name": r.name,
                        "methods": sorted(r.methods) if r.methods else ["*"],
                        "path": r.path,
                        "min_tier": r.min_tier,
                        "scopes": sorted(r.scopes),
                        "cost": r.cost,
                        "upstream": r.upstream,
                        "limit_by": "route" if r.per_route else "principal",
                    }
                    for r in compiled.routes
                ],
                "warnings": compiled.warnings,
            }
        )
    else:
        tiers = Table("level", "name", "requests/min", "burst", title="tiers")
        for t in compiled.tiers:
            tiers.add_row(str(t.level), t.name, str(t.requests_per_minute), str(t.burst))
        out.print(tiers)
        routes = Table(
            "#",
            "name",
            "methods",
            "path",
            "min tier",
            "scopes",
            "cost",
            "upstream",
            "limit by",
            title="routes (first match wins; no match is denied)",
        )
        for r in compiled.routes:
            routes.add_row(
                str(r.position),
                r.name,
                ",".join(sorted(r.methods)) if r.methods else "*",
                r.path,
                str(r.min_tier),
                " ".join(sorted(r.scopes)) or "-",
                str(r.cost),
                r.upstream,
                "route" if r.per_route else "principal",
            )
        out.print(routes)
        for warning in compiled.warnings:
            click.echo(f"warning: {warning}", err=True)
        if not compiled.warnings:
            out.print("config ok")
    if strict and compiled.warnings:
        sys.exit(1)


@click.command()
@click.option("--method", "-X", default="GET", show_default=True)
@click.option("--path", "target", required=True, help="Request target, e.g. /v1/models.")
@click.option("--key", "api_key", help="Send this API key as X-API-Key.")
@click.option("--header", "-H", "headers", multiple=True, help="'Name: value'; repeatable.")
@click.option("--client", default="127.0.0.1", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def decide(
    ctx: click.Context,
    method: str,
    target: str,
    api_key: str | None,
    headers: Sequence[str],
    client: str,
    as_json: bool,
) -> None:
    """Decide one request, as the gateway would, and print the decision."""
    facts: dict[str, str] = {}
    for header in headers:
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            raise click.BadParameter(f"expected 'Name: value', got {header!r}")
        facts[name.strip().lower()] = value.strip()
    if api_key is not None:
        facts["x-api-key"] = api_key

    async def run(s: Services) -> Decision:
        return s.engine.decide(method.upper(), target, facts, client)

    decision = with_services(ctx, run)
    view: dict[str, Any] = {
        "outcome": decision.outcome.value,
        "reason": decision.reason.value,
        "status": decision.status,
        "principal": decision.principal_id,
        "key_id": decision.key_id,
        "tier_held": decision.tier_held,
        "tier_required": decision.tier_required,
        "scopes": sorted(decision.scopes),
        "route": decision.route,
        "upstream": decision.upstream,
    }
    if decision.ratelimit is not None:
        rl = decision.ratelimit
        view["ratelimit"] = {
            "limit": rl.limit.burst,
            "rate_per_minute": rl.limit.rate,
            "remaining": rl.remaining,
            "reset_s": rl.reset_s,
            "retry_after_s": rl.retry_after_s,
        }
    if as_json:
        print_json(view)
    else:
        for name, value in view.items():
            out.print(f"{name:<14}{value if value is not None else '-'}", markup=False)
    if not decision.allowed:
        sys.exit(1)
