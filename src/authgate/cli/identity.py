"""``authgate principal`` and ``authgate key``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click
from rich.table import Table

from authgate.cli.admin import admin_for
from authgate.cli.common import Duration, out, print_json, when
from authgate.identity.ids import Kind

# -- principals ------------------------------------------------------------------------


@click.group()
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
    created = admin_for(ctx).add_principal(kind, name, tier, scopes, secret)
    _show_principals([created], as_json, single=True)


@principal.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def principal_list(ctx: click.Context, as_json: bool) -> None:
    """List principals."""

    _show_principals(admin_for(ctx).principals(), as_json)


@principal.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def principal_show(ctx: click.Context, ref: str, as_json: bool) -> None:
    """Show one principal (by id or name) and its keys."""

    view = admin_for(ctx).principal(ref)
    if as_json:
        print_json(view)
        return
    _show_principals([view], False, single=True)
    if view["keys"]:
        _show_keys(view["keys"], False)


@principal.command("disable")
@click.argument("ref")
@click.pass_context
def principal_disable(ctx: click.Context, ref: str) -> None:
    """Disable a principal: all its keys stop working."""
    done = admin_for(ctx).set_disabled(ref, True)
    out.print(f"disabled {done['id']} ({done['name']})")


@principal.command("enable")
@click.argument("ref")
@click.pass_context
def principal_enable(ctx: click.Context, ref: str) -> None:
    """Re-enable a disabled principal."""
    done = admin_for(ctx).set_disabled(ref, False)
    out.print(f"enabled {done['id']} ({done['name']})")


@principal.command("elevate")
@click.argument("ref")
@click.option("--tier", type=click.IntRange(0, 5), required=True)
@click.option("--for", "duration", type=Duration(), required=True, help="e.g. 30m, 2h; 0 ends it.")
@click.pass_context
def principal_elevate(ctx: click.Context, ref: str, tier: int, duration: float) -> None:
    """Raise a principal's tier for a while; it ends by itself."""
    done = admin_for(ctx).elevate(ref, tier, duration)
    if done["elevated_until_ns"] is None:
        out.print(f"{done['id']} is back at tier {done['tier']}")
    else:
        until = when(done["elevated_until_ns"])
        out.print(f"{done['id']} is at tier {done['elevated_tier']} until {until}")


@principal.command("totp")
@click.argument("ref")
@click.option("--remove", is_flag=True, help="Take the second factor away.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def principal_totp(ctx: click.Context, ref: str, remove: bool, as_json: bool) -> None:
    """Give a user a TOTP second factor (a new seed, shown once), or remove it."""
    done = admin_for(ctx).second_factor(ref, not remove)
    if as_json:
        print_json(done)
    elif remove:
        out.print(f"{done['id']} has no second factor now")
    else:
        out.print(f"TOTP seed for {done['id']} (shown once; add it to an authenticator app):")
        out.print(f"  {done['totp_secret']}")
        out.print(f"  {done['otpauth_uri']}", soft_wrap=True)


def _show_principals(rows: list[dict[str, Any]], as_json: bool, single: bool = False) -> None:
    if as_json:
        print_json(rows[0] if single else rows)
        return
    table = Table("id", "name", "tier", "scopes", "state", "created")
    for p in rows:
        tier = str(p["tier"])
        if p["effective_tier"] != p["tier"]:
            tier += f" → {p['effective_tier']} until {when(p['elevated_until_ns'])}"
        table.add_row(
            p["id"],
            p["name"],
            tier,
            " ".join(p["scopes"]) or "-",
            "disabled" if p["disabled"] else "active",
            when(p["created_ns"]),
        )
    out.print(table)


# -- keys ------------------------------------------------------------------------------


@click.group()
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
    issued = admin_for(ctx).issue_key(principal_ref, name, tier, scopes or None, ttl)
    _show_issued(issued, as_json)


@key.command("list")
@click.option("--principal", "principal_ref", help="Only this principal's keys.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def key_list(ctx: click.Context, principal_ref: str | None, as_json: bool) -> None:
    """List keys (never their secrets)."""

    _show_keys(admin_for(ctx).keys(principal_ref), as_json)


@key.command("revoke")
@click.argument("key_id")
@click.pass_context
def key_revoke(ctx: click.Context, key_id: str) -> None:
    """Revoke a key at once."""
    done = admin_for(ctx).revoke(key_id)
    out.print(f"revoked {done['key_id']} at {when(done['revoked_ns'])}")


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
    issued = admin_for(ctx).rotate(key_id, overlap)
    _show_issued(issued, as_json)
    if not as_json:
        out.print(f"{key_id} keeps working for {overlap:g}s, then expires")


def _show_issued(record: dict[str, Any], as_json: bool) -> None:
    raw = record["key"]
    if as_json:
        print_json(record)
        return
    out.print(f"key id   {record['key_id']}  (principal {record['principal_id']})")
    if record["expires_ns"]:
        out.print(f"expires  {when(record['expires_ns'])}")
    out.print("API key, shown once:")
    out.print(f"  {raw}", markup=False)


def _show_keys(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print_json(rows)
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
            when(k["expires_ns"]),
        )
    out.print(table)
