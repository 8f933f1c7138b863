"""The ``authgate`` command: parse, call, print — the logic lives in the modules it calls."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from authgate.bootstrap import ensure_system_principal, prepare_directory
from authgate.clock import NS_PER_S
from authgate.config import DEFAULT_DIR, Settings, load_settings
from authgate.decide import Decision
from authgate.errors import AuthgateError
from authgate.identity.ids import Kind
from authgate.policy import build_policy
from authgate.wiring import Services, build_services

T = TypeVar("T")
# Piped output is not cut to 80 columns: ids and keys must stay whole for scripts and people.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``2h``, ``7d`` → seconds. ValueError otherwise."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"invalid duration {text!r}: use e.g. 90s, 15m, 2h, 7d")
    return float(match[1]) * _UNITS[match[2]]


class Duration(click.ParamType[float, Any]):
    """A click parameter holding seconds."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        """Parse the option's text."""
        if isinstance(value, float):
            return value
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class Failure(click.ClickException):
    """An AuthgateError shown as ``error [code]: message`` with exit status 2."""

    exit_code = 2

    def __init__(self, error: AuthgateError) -> None:
        super().__init__(f"[{error.code}] {error.message}")

    def show(self, file: Any = None) -> None:
        """Print to stderr."""
        click.echo(f"error {self.message}", err=True)


def _settings(ctx: click.Context) -> Settings:
    try:
        return load_settings(ctx.obj["config"], os.environ)
    except AuthgateError as exc:
        raise Failure(exc) from None


def _with_services(ctx: click.Context, action: Callable[[Services], Awaitable[T]]) -> T:
    settings = _settings(ctx)

    async def run() -> T:
        services = await build_services(settings)
        try:
            return await action(services)
        finally:
            await services.close()

    try:
        return asyncio.run(run())
    except AuthgateError as exc:
        raise Failure(exc) from None


def _when(ns: int | None) -> str:
    if ns is None:
        return "-"
    return datetime.fromtimestamp(ns / NS_PER_S, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


def _now() -> int:
    from time import time_ns

    return time_ns()


@click.group()
@click.option(
    "--config",
    "-c",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Config file (default: $AUTHGATE_CONFIG, ./authgate.toml, ./.authgate/authgate.toml).",
)
@click.version_option(package_name="authgate")
@click.pass_context
def main(ctx: click.Context, config: Path | None) -> None:
    """authgate: identity and API gateway for AI services."""
    ctx.ensure_object(dict)
    ctx.obj["config"] = config


@main.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_DIR)
def init(directory: Path) -> None:
    """Create a config, a data directory, a pepper and a system principal in DIRECTORY."""
    try:
        report, settings = prepare_directory(directory, os.environ)
        asyncio.run(ensure_system_principal(settings, report))
    except AuthgateError as exc:
        raise Failure(exc) from None
    for line in report.created:
        out.print(f"created   {line}")
    for line in report.existing:
        out.print(f"exists    {line}")
    if report.key:
        out.print()
        out.print("System API key (tier 5). It is shown once and stored only as a hash:")
        out.print(f"  {report.key}", markup=False)


# -- principals ------------------------------------------------------------------------


@main.group()
def principal() -> None:
    """Manage principals: users, agents, services, system."""


@principal.command("add")
@click.argument("name")
@click.option(
    "--kind",
    type=click.Choice([k.value for k in Kind]),
    default=Kind.USER.value,
    show_default=True,
)
@click.option("--tier", type=click.IntRange(0, 5), default=1, show_default=True)
@click.option("--scope", "scopes", multiple=True, help="Repeat for several scopes.")
@click.option("--password", is_flag=True, help="Prompt for a password (usr_ only).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def principal_add(
    ctx: click.Context,
    name: str,
    kind: str,
    tier: int,
    scopes: Sequence[str],
    password: bool,
    as_json: bool,
) -> None:
    """Create a principal."""
    secret = (
        click.prompt("Password", hide_input=True, confirmation_prompt=True) if password else None
    )
    created = _with_services(
        ctx,
        lambda s: s.identity.create_principal(Kind(kind), name, tier, scopes, secret),
    )
    _show_principals([created.public(_now())], as_json, single=True)


@principal.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def principal_list(ctx: click.Context, as_json: bool) -> None:
    """List principals."""

    async def list_all(s: Services) -> list[dict[str, Any]]:
        now = s.clock.now_ns()
        return [p.public(now) for p in s.identity.principals()]

    _show_principals(_with_services(ctx, list_all), as_json)


@principal.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def principal_show(ctx: click.Context, ref: str, as_json: bool) -> None:
    """Show one principal (by id or name) and its keys."""

    async def show(s: Services) -> dict[str, Any]:
        now = s.clock.now_ns()
        found = s.identity.principal(ref)
        view = found.public(now)
        view["keys"] = [k.public(now) for k in s.identity.keys(found.id)]
        return view

    view = _with_services(ctx, show)
    if as_json:
        _print_json(view)
        return
    _show_principals([view], False, single=True)
    if view["keys"]:
        _show_keys(view["keys"], False)


@principal.command("disable")
@click.argument("ref")
@click.pass_context
def principal_disable(ctx: click.Context, ref: str) -> None:
    """Disable a principal: all its keys stop working."""
    done = _with_services(ctx, lambda s: s.identity.set_disabled(ref, True))
    out.print(f"disabled {done.id} ({done.name})")


@principal.command("enable")
@click.argument("ref")
@click.pass_context
def principal_enable(ctx: click.Context, ref: str) -> None:
    """Re-enable a disabled principal."""
    done = _with_services(ctx, lambda s: s.identity.set_disabled(ref, False))
    out.print(f"enabled {done.id} ({done.name})")


@principal.command("elevate")
@click.argument("ref")
@click.option("--tier", type=click.IntRange(0, 5), required=True)
@click.option("--for", "duration", type=Duration(), required=True, help="e.g. 30m, 2h; 0 ends it.")
@click.pass_context
def principal_elevate(ctx: click.Context, ref: str, tier: int, duration: float) -> None:
    """Raise a principal's tier for a while; it ends by itself."""
    done = _with_services(ctx, lambda s: s.identity.elevate(ref, tier, duration))
    if done.elevated_until_ns is None:
        out.print(f"{done.id} is back at tier {done.tier}")
    else:
        out.print(
            f"{done.id} is at tier {done.elevated_tier} until {_when(done.elevated_until_ns)}"
        )


def _show_principals(rows: list[dict[str, Any]], as_json: bool, single: bool = False) -> None:
    if as_json:
        _print_json(rows[0] if single else rows)
        return
    table = Table("id", "name", "tier", "scopes", "state", "created")
    for p in rows:
        tier = str(p["tier"])
        if p["effective_tier"] != p["tier"]:
            tier += f" → {p['effective_tier']} until {_when(p['elevated_until_ns'])}"
        table.add_row(
            p["id"],
            p["name"],
            tier,
            " ".join(p["scopes"]) or "-",
            "disabled" if p["disabled"] else "active",
            _when(p["created_ns"]),
        )
    out.print(table)


# -- keys ------------------------------------------------------------------------------


@main.group()
def key() -> None:
    """Manage API keys."""


@key.command("issue")
@click.argument("principal_ref")
@click.option("--name", default="", help="A label for the key.")
@click.option("--tier", type=click.IntRange(0, 5), help="Cap the key below the principal's tier.")
@click.option("--scope", "scopes", multiple=True, help="Narrow the key to these scopes.")
@click.option("--ttl", type=Duration(), help="Expire after this long, e.g. 30d.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def key_issue(
    ctx: click.Context,
    principal_ref: str,
    name: str,
    tier: int | None,
    scopes: Sequence[str],
    ttl: float | None,
    as_json: bool,
) -> None:
    """Issue a key; it is printed once."""
    issued = _with_services(
        ctx,
        lambda s: s.identity.issue_key(principal_ref, name, tier, scopes or None, ttl),
    )
    _show_issued(issued.record.public(_now()), issued.key, as_json)


@key.command("list")
@click.option("--principal", "principal_ref", help="Only this principal's keys.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def key_list(ctx: click.Context, principal_ref: str | None, as_json: bool) -> None:
    """List keys (never their secrets)."""

    async def list_keys(s: Services) -> list[dict[str, Any]]:
        now = s.clock.now_ns()
        return [k.public(now) for k in s.identity.keys(principal_ref)]

    _show_keys(_with_services(ctx, list_keys), as_json)


@key.command("revoke")
@click.argument("key_id")
@click.pass_context
def key_revoke(ctx: click.Context, key_id: str) -> None:
    """Revoke a key at once."""
    done = _with_services(ctx, lambda s: s.identity.revoke_key(key_id))
    out.print(f"revoked {done.key_id} at {_when(done.revoked_ns)}")


@key.command("rotate")
@click.argument("key_id")
@click.option(
    "--overlap",
    type=Duration(),
    default="1h",
    show_default=True,
    help="How long the old key keeps working.",
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def key_rotate(ctx: click.Context, key_id: str, overlap: float, as_json: bool) -> None:
    """Issue a successor; the old key works until the overlap ends."""
    issued = _with_services(ctx, lambda s: s.identity.rotate_key(key_id, overlap))
    _show_issued(issued.record.public(_now()), issued.key, as_json)
    if not as_json:
        out.print(f"{key_id} keeps working for {overlap:g}s, then expires")


def _show_issued(record: dict[str, Any], raw: str, as_json: bool) -> None:
    if as_json:
        _print_json({**record, "key": raw})
        return
    out.print(f"key id   {record['key_id']}  (principal {record['principal_id']})")
    if record["expires_ns"]:
        out.print(f"expires  {_when(record['expires_ns'])}")
    out.print("API key, shown once:")
    out.print(f"  {raw}", markup=False)


def _show_keys(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        _print_json(rows)
        return
    table = Table("key id", "principal", "name", "tier", "scopes", "status", "expires")
    for k in rows:
        table.add_row(
            k["key_id"],
            k["principal_id"],
            k["name"] or "-",
            "-" if k["tier"] is None else str(k["tier"]),
            "-" if k["scopes"] is None else " ".join(k["scopes"]),
            k["status"],
            _when(k["expires_ns"]),
        )
    out.print(table)


# -- policy and decisions ----------------------------------------------------------------


@main.group()
def policy() -> None:
    """Inspect the tier policy and route table."""


@policy.command("check")
@click.option("--strict", is_flag=True, help="Fail on warnings (unreachable rules).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def policy_check(ctx: click.Context, strict: bool, as_json: bool) -> None:
    """Validate the config and print the tiers and the route table."""
    settings = _settings(ctx)
    try:
        compiled = build_policy(settings)
    except AuthgateError as exc:
        raise Failure(exc) from None
    if as_json:
        _print_json(
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


@main.command()
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

    decision = _with_services(ctx, run)
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
            "limit": rl.limit,
            "remaining": rl.remaining,
            "reset_s": rl.reset_s,
            "retry_after_s": rl.retry_after_s,
        }
    if as_json:
        _print_json(view)
    else:
        for name, value in view.items():
            out.print(f"{name:<14}{value if value is not None else '-'}", markup=False)
    if not decision.allowed:
        sys.exit(1)
