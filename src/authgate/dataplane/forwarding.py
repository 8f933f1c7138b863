"""Header hygiene between the client and the upstream (see :mod:`authgate.dataplane.proxy`)."""

from __future__ import annotations

from authgate.dataplane.forward_auth import identity_headers
from authgate.dataplane.http import HOP_BY_HOP, NONE, Request, tokens
from authgate.decide import Decision

# Request headers never passed on as the client sent them.
_DROP_REQUEST = HOP_BY_HOP | {
    "host",
    "content-length",
    "expect",
    "authorization",
    "x-api-key",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
}


def upstream_headers(request: Request, d: Decision, scheme: str) -> str:
    """The request's header block for the upstream, without Host and framing."""
    h = request.headers
    connection = h.get("connection")
    named = tokens(connection) if connection else NONE
    passed = "".join(
        [
            f"{name}: {value}\r\n"
            for name, value in h.items()
            if name not in _DROP_REQUEST and not name.startswith("x-auth-") and name not in named
        ]
    )
    peer = request.peer
    trusted = request.trusted
    xff = h.get("x-forwarded-for") if trusted else None
    proto = (h.get("x-forwarded-proto") if trusted else None) or scheme
    host = (h.get("x-forwarded-host") if trusted else None) or h.get("host", "")
    node = f'"[{peer}]"' if ":" in peer else (peer or "unknown")
    element = f"for={node};proto={proto}"
    if host and '"' not in host and "\\" not in host:
        element += f';host="{host}"'
    forwarded = h.get("forwarded") if trusted else None
    return (
        f"{passed}{identity_headers(d)}"
        f"x-forwarded-for: {f'{xff}, {peer}' if xff else peer}\r\n"
        f"x-forwarded-proto: {proto}\r\nx-forwarded-host: {host}\r\n"
        f"forwarded: {f'{forwarded}, {element}' if forwarded else element}\r\n"
        f"x-request-id: {request.request_id}\r\n"
    )


def pairs(headers: str) -> list[tuple[str, str]]:
    """Name/value pairs of a rendered header block."""
    out = []
    for line in headers.split("\r\n"):
        name, _, value = line.partition(": ")
        if name:
            out.append((name, value))
    return out
