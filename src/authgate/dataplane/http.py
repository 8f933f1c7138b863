"""Requests, responses and their wire format: the data plane's vocabulary, no I/O."""

from __future__ import annotations

import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from email.utils import formatdate

import msgspec

from authgate.dataplane.body import BodyStream

REASONS = {
    100: "Continue",
    200: "OK",
    204: "No Content",
    304: "Not Modified",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    413: "Content Too Large",
    417: "Expectation Failed",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Headers that belong to one connection, not to the message (RFC 9110 §7.6.1).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    }
)
NONE: frozenset[str] = frozenset()
# Header names repeat: each raw name is decoded and lower-cased once (bounded).
HEADER_NAMES: dict[bytes, str] = {}
_token_cache: dict[str, frozenset[str]] = {}


def header_name(raw: bytes) -> str:
    """A header name, lower-cased (memoised). The parsers inline the lookup; this is the
    miss path."""
    name = raw.decode("latin-1").lower()
    if len(HEADER_NAMES) < 4096:
        HEADER_NAMES[raw] = name
    return name


def tokens(value: str) -> frozenset[str]:
    """The lower-case names in a ``Connection`` header, memoised (they repeat)."""
    found = _token_cache.get(value)
    if found is None:
        if len(_token_cache) > 1024:
            _token_cache.clear()
        found = _token_cache[value] = frozenset(
            t.strip().lower() for t in value.split(",") if t.strip()
        )
    return found


class Reject(Exception):
    """Raised inside a parser callback to stop parsing with an error answer."""

    def __init__(self, status: int, code: str) -> None:
        super().__init__(code)
        self.status = status
        self.code = code


class Request:
    """One parsed request. ``headers`` maps lower-case names to values (repeats joined by
    ``, ``); ``trusted`` says whether the peer is a configured trusted proxy. A proxied
    request with a large or chunked body is dispatched before its body arrives: then
    ``body`` is empty and ``stream`` delivers the body."""

    __slots__ = (
        "body",
        "headers",
        "keep_alive",
        "method",
        "peer",
        "request_id",
        "stream",
        "target",
        "trusted",
        "version",
    )

    def __init__(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes,
        version: str,
        keep_alive: bool,
        peer: str,
        trusted: bool,
        request_id: str,
        stream: BodyStream | None = None,
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
        self.version = version
        self.keep_alive = keep_alive
        self.peer = peer
        self.trusted = trusted
        self.request_id = request_id
        self.stream = stream


class Response:
    """A complete response. ``headers`` is the rendered header block, each line ending in
    CRLF (``"content-type: application/json\\r\\n"``): handlers on the hot path format
    it in one f-string, which costs a fraction of a list of pairs joined per request.
    Content-Length, Date, Connection and X-Request-Id are added by the server.
    """

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: str = "", body: bytes = b"") -> None:
        self.status = status
        self.headers = headers
        self.body = body


class StreamingResponse(Response):
    """A response whose body arrives in pieces (SSE, proxied streams), sent as each piece is
    produced, pausing while the client reads slowly. With ``length`` (a proxied
    Content-Length) the pieces go out as they are; without, in chunked transfer encoding.
    If the pieces stop early (the iterator raises), the connection is closed without the
    body's end, so the client can tell the response is incomplete."""

    __slots__ = ("chunks", "length")

    def __init__(
        self,
        status: int,
        headers: str,
        chunks: AsyncIterator[bytes],
        length: int | None = None,
    ) -> None:
        super().__init__(status, headers)
        self.chunks = chunks
        self.length = length


def serialize_stream_head(
    response: StreamingResponse, request_id: str, date: str, keep_alive: bool, chunked: bool
) -> bytes:
    """The head of a streamed response: its Content-Length when known, else chunked (or,
    for an HTTP/1.0 client, neither: the body ends when the connection closes)."""
    status = response.status
    line = _STATUS_LINES.get(status) or f"HTTP/1.1 {status} Unknown\r\n"
    close = "" if keep_alive else "connection: close\r\n"
    if status < 200 or status == 204 or status == 304:
        framing = ""
    elif response.length is not None:
        framing = f"content-length: {response.length}\r\n"
    else:
        framing = "transfer-encoding: chunked\r\n" if chunked else ""
    return (
        f"{line}{response.headers}{framing}"
        f"x-request-id: {request_id}\r\ndate: {date}\r\n{close}\r\n"
    ).encode("latin-1")


def header_block(pairs: list[tuple[str, str]]) -> str:
    """Render name/value pairs as a header block. Values must not contain CR or LF."""
    return "".join(f"{name}: {value}\r\n" for name, value in pairs)


Handler = Callable[[Request], "Response | Awaitable[Response]"]

_json = msgspec.json.Encoder()


def json_response(status: int, payload: object, headers: str = "") -> Response:
    """A JSON response; ``headers`` is an extra rendered header block."""
    return Response(status, f"content-type: application/json\r\n{headers}", _json.encode(payload))


def error_response(status: int, code: str, request_id: str) -> Response:
    """The small JSON body every error carries: a stable code and the request id."""
    return json_response(status, {"error": code, "request_id": request_id})


class RequestIds:
    """Request ids: a random per-process prefix and a counter, 0.1 µs each."""

    def __init__(self) -> None:
        self.reseed()

    def reseed(self) -> None:
        """Draw a new prefix (after fork)."""
        self.prefix = os.urandom(6).hex() + "-"
        self.count = 0

    def new(self) -> str:
        """A fresh id."""
        self.count += 1
        return f"{self.prefix}{self.count:x}"

    @staticmethod
    def acceptable(value: str) -> bool:
        """Whether a client-supplied id is well-formed enough to reuse."""
        return _REQUEST_ID.fullmatch(value) is not None


class DateHeader:
    """The ``Date`` value, formatted once a second instead of once a request."""

    def __init__(self) -> None:
        self.second = 0
        self.value = ""

    def get(self) -> str:
        """The current HTTP date."""
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.value = formatdate(now, usegmt=True)
        return self.value


_STATUS_LINES = {code: f"HTTP/1.1 {code} {reason}\r\n" for code, reason in REASONS.items()}


def serialize(
    response: Response, request_id: str, date: str, keep_alive: bool, head: bool
) -> bytes:
    """The bytes of a response. Bodies of HEAD answers and of 1xx/204/304 are not sent."""
    status = response.status
    line = _STATUS_LINES.get(status) or f"HTTP/1.1 {status} Unknown\r\n"
    close = "" if keep_alive else "connection: close\r\n"
    if status < 200 or status == 204 or status == 304:
        return (
            f"{line}{response.headers}x-request-id: {request_id}\r\ndate: {date}\r\n{close}\r\n"
        ).encode("latin-1")
    body = response.body
    head_bytes = (
        f"{line}{response.headers}content-length: {len(body)}\r\n"
        f"x-request-id: {request_id}\r\ndate: {date}\r\n{close}\r\n"
    ).encode("latin-1")
    return head_bytes if head or not body else head_bytes + body
