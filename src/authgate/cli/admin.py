"""Admin operations for the CLI, on the store directly or through the admin API (``--url``).

Both return the same JSON views (``Principal.public`` / ``ApiKey.public``), so the commands
print the same whichever way they went.
"""

from __future__ import annotations

import getpass
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import click

from authgate.audit.event import AuditEvent, EventType, new_event_id
from authgate.cli.common import Failure, with_services
from authgate.errors import RemoteError
from authgate.identity.ids import Kind
from authgate.wiring import Services

View = dict[str, Any]


class Admin(Protocol):
    """What the principal and key commands need."""

    def principals(self) -> list[View]: ...
    def add_principal(
        self, kind: str, name: str, tier: int, scopes: Sequence[str], password: str | None
    ) -> View: ...
    def principal(self, ref: str) -> View: ...
    def set_disabled(self, ref: str, disabled: bool) -> View: ...
    def elevate(self, ref: str, tier: int, duration_s: float) -> View: ...
    def second_factor(self, ref: str, enable: bool) -> View: ...
    def issue_key(
        self,
        ref: str,
        name: str,
        tier: int | None,
        scopes: Sequence[str] | None,
        ttl_s: float | None,
    ) -> View: ...
    def keys(self, principal_ref: str | None) -> list[View]: ...
    def revoke(self, key_id: str) -> View: ...
    def rotate(self, key_id: str, overlap_s: float) -> View: ...


CLI_LOG = "cli"


class LocalAdmin:
    """Admin operations on the configured store (no server needed). Each change is audited
    durably in the CLI's own log (``<audit dir>/cli``) before the command returns."""

    def __init__(self, ctx: click.Context) -> None:
        self.ctx = ctx

    def _change(self, action: str, target: str, run: Callable[[Services], Awaitable[View]]) -> View:
        async def audited(s: Services) -> View:
            view = await run(s)
            operator = f"cli:{getpass.getuser()}"
            await s.sink.emit_durable(
                AuditEvent(
                    new_event_id(), s.clock.now_ns(), EventType.ADMIN, action, "allow", "ok",
                    operator, details={"target": target, "via": "cli"},
                )
            )  # fmt: skip
            return view

        return with_services(self.ctx, audited, ledger_name=CLI_LOG)

    def principals(self) -> list[View]:
        async def run(s: Services) -> list[View]:
            now = s.clock.now_ns()
            return [p.public(now) for p in s.identity.principals()]

        return with_services(self.ctx, run)

    def add_principal(
        self, kind: str, name: str, tier: int, scopes: Sequence[str], password: str | None
    ) -> View:
        async def run(s: Services) -> View:
            made = await s.identity.create_principal(Kind(kind), name, tier, scopes, password)
            return made.public(s.clock.now_ns())

        return self._change("principal.add", name, run)

    def principal(self, ref: str) -> View:
        async def run(s: Services) -> View:
            now = s.clock.now_ns()
            found = s.identity.principal(ref)
            view = found.public(now)
            view["keys"] = [k.public(now) for k in s.identity.keys(found.id)]
            return view

        return with_services(self.ctx, run)

    def set_disabled(self, ref: str, disabled: bool) -> View:
        async def run(s: Services) -> View:
            return (await s.identity.set_disabled(ref, disabled)).public(s.clock.now_ns())

        return self._change("principal.disable" if disabled else "principal.enable", ref, run)

    def elevate(self, ref: str, tier: int, duration_s: float) -> View:
        async def run(s: Services) -> View:
            return (await s.identity.elevate(ref, tier, duration_s)).public(s.clock.now_ns())

        return self._change("principal.elevate", ref, run)

    def second_factor(self, ref: str, enable: bool) -> View:
        async def run(s: Services) -> View:
            return await s.identity.second_factor(ref, enable)

        return self._change("principal.totp" if enable else "principal.totp_remove", ref, run)

    def issue_key(
        self,
        ref: str,
        name: str,
        tier: int | None,
        scopes: Sequence[str] | None,
        ttl_s: float | None,
    ) -> View:
        async def run(s: Services) -> View:
            issued = await s.identity.issue_key(ref, name, tier, scopes, ttl_s)
            return {**issued.record.public(s.clock.now_ns()), "key": issued.key}

        return self._change("key.issue", ref, run)

    def keys(self, principal_ref: str | None) -> list[View]:
        async def run(s: Services) -> list[View]:
            now = s.clock.now_ns()
            return [k.public(now) for k in s.identity.keys(principal_ref)]

        return with_services(self.ctx, run)

    def revoke(self, key_id: str) -> View:
        async def run(s: Services) -> View:
            return (await s.identity.revoke_key(key_id)).public(s.clock.now_ns())

        return self._change("key.revoke", key_id, run)

    def rotate(self, key_id: str, overlap_s: float) -> View:
        async def run(s: Services) -> View:
            issued = await s.identity.rotate_key(key_id, overlap_s)
            return {**issued.record.public(s.clock.now_ns()), "key": issued.key}

        return self._change("key.rotate", key_id, run)


class RemoteAdmin:
    """Admin operations through a running authgate's admin API."""

    def __init__(self, url: str, key: str) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise click.BadParameter(f"--url must be an http(s) URL, got {url!r}")
        self.base = url.rstrip("/")
        self.key = key

    def _call(self, method: str, path: str, body: View | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 (scheme checked in __init__)
            self.base + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
                return json.loads(answer.read())
        except urllib.error.HTTPError as error:
            try:
                payload = json.loads(error.read())
                failure = RemoteError(str(payload["error"]), str(payload.get("message", "")))
            except (ValueError, KeyError, TypeError):
                failure = RemoteError("http_error", f"HTTP {error.code} from {path}")
            raise Failure(failure) from None
        except (urllib.error.URLError, OSError) as error:
            raise Failure(
                RemoteError("unreachable", f"cannot reach {self.base}: {error}")
            ) from None

    @staticmethod
    def _q(value: str) -> str:
        return urllib.parse.quote(value, safe="")

    def principals(self) -> list[View]:
        return list(self._call("GET", "/admin/principals"))

    def add_principal(
        self, kind: str, name: str, tier: int, scopes: Sequence[str], password: str | None
    ) -> View:
        body = {"kind": kind, "name": name, "tier": tier, "scopes": list(scopes)}
        if password is not None:
            body["password"] = password
        return dict(self._call("POST", "/admin/principals", body))

    def principal(self, ref: str) -> View:
        return dict(self._call("GET", f"/admin/principals/{self._q(ref)}"))

    def set_disabled(self, ref: str, disabled: bool) -> View:
        action = "disable" if disabled else "enable"
        return dict(self._call("POST", f"/admin/principals/{self._q(ref)}/{action}"))

    def elevate(self, ref: str, tier: int, duration_s: float) -> View:
        body = {"tier": tier, "duration_s": duration_s}
        return dict(self._call("POST", f"/admin/principals/{self._q(ref)}/elevate", body))

    def second_factor(self, ref: str, enable: bool) -> View:
        method = "POST" if enable else "DELETE"
        return dict(self._call(method, f"/admin/principals/{self._q(ref)}/totp"))

    def issue_key(
        self,
        ref: str,
        name: str,
        tier: int | None,
        scopes: Sequence[str] | None,
        ttl_s: float | None,
    ) -> View:
        body: View = {
            "name": name,
            "tier": tier,
            "scopes": None if scopes is None else list(scopes),
            "ttl_s": ttl_s,
        }
        return dict(self._call("POST", f"/admin/principals/{self._q(ref)}/keys", body))

    def keys(self, principal_ref: str | None) -> list[View]:
        query = "" if principal_ref is None else f"?principal={self._q(principal_ref)}"
        return list(self._call("GET", f"/admin/keys{query}"))

    def revoke(self, key_id: str) -> View:
        return dict(self._call("POST", f"/admin/keys/{self._q(key_id)}/revoke"))

    def rotate(self, key_id: str, overlap_s: float) -> View:
        body = {"overlap_s": overlap_s}
        return dict(self._call("POST", f"/admin/keys/{self._q(key_id)}/rotate", body))


def admin_for(ctx: click.Context) -> Admin:
    """The store, or the admin API when ``--url`` was given."""
    url = ctx.obj.get("url")
    if url is None:
        return LocalAdmin(ctx)
    key = ctx.obj.get("admin_key")
    if not key:
        raise click.UsageError("--url needs an admin key: --admin-key or AUTHGATE_ADMIN_KEY")
    return RemoteAdmin(url, key)
