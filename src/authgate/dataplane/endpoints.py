"""What the data plane's own JSON endpoints (tokens, login, handoffs) share: their refusal
shape, their audit event, and reading a form or JSON body."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import msgspec

from authgate.audit.event import AuditEvent, EventType, new_event_id
from authgate.dataplane.forward_auth import client_address
from authgate.dataplane.http import Request, Response, error_response, json_response
from authgate.decide import DecisionEngine
from authgate.errors import AuditUnavailable

NO_STORE = "cache-control: no-store\r\npragma: no-cache\r\n"


def post_only(request: Request) -> Response:
    """405 with ``Allow: POST``."""
    response = error_response(405, "method_not_allowed", request.request_id)
    response.headers += "allow: POST\r\n"
    return response


def refusal(
    request: Request, status: int, error: str, extra: str = "", message: str | None = None
) -> Response:
    """An error the caller may act on: the code and our request id, never the reason (that
    goes to the audit log); ``message`` only for the caller's own input mistakes."""
    body = {"error": error, "request_id": request.request_id}
    if message is not None:
        body["message"] = message
    return json_response(status, body, NO_STORE + extra)


def audit(
    engine: DecisionEngine,
    request: Request,
    action: str,
    outcome: str,
    reason: str,
    status: int,
    principal: str | None = None,
    key_id: str | None = None,
    tier: int | None = None,
    details: dict[str, str] | None = None,
    correlation: str | None = None,
    *,
    kind: EventType,
) -> bool:
    """Emit one endpoint event of type ``kind``; False when the ledger refused it (the
    caller fails closed)."""
    event = AuditEvent(
        new_event_id(),
        engine.clock.now_ns(),
        kind,
        action,
        outcome,
        reason,
        principal,
        key_id,
        tier,
        None,
        None,
        request.method[:16],
        request.target.split("?", 1)[0][:512],
        status,
        request.request_id,
        correlation,
        None,
        details or None,
        engine.personal(client_address(request)),
        engine.personal(request.headers.get("user-agent")),
    )
    try:
        engine.sink.emit(event)
    except AuditUnavailable:
        return False  # the ledger has raised its alarm
    return True


def params(request: Request) -> dict[str, Any] | None:
    """A JSON object or form body as a dict; None when it is neither."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    try:
        if kind == "application/json":
            data = msgspec.json.decode(request.body)
            return data if isinstance(data, dict) else None
        text = request.body.decode("utf-8")
        return dict(parse_qsl(text, keep_blank_values=True, max_num_fields=32))
    except (msgspec.DecodeError, UnicodeDecodeError, ValueError):
        return None
