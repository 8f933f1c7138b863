"""``authgate demo-upstream``: a small OpenAI-compatible mock to put behind the gateway.

It runs on the data plane's own server and answers:

- ``GET /v1/models``: one model, ``demo-echo``;
- ``POST /v1/chat/completions``: a reply built from the last user message; with
  ``"stream": true`` as server-sent events, one word per chunk, ``interval_ms`` apart, then
  ``data: [DONE]``;
- ``* /v1/echo``: what arrived — method, target, headers, body size and SHA-256 (bodies of any
  size are hashed as they stream in); ``?delay_ms=N`` waits first, ``?status=N`` answers N;
- ``GET /v1/blob?bytes=N``: N bytes of a repeating pattern, streamed in 64 KiB pieces with
  a Content-Length; ``&chunked=1`` without one.

The tests and benchmarks use it as a real upstream; it is not meant to be exposed.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
import time
from collections.abc import AsyncIterator
from urllib.parse import parse_qs

import msgspec

from authgate.dataplane.http import (
    Request,
    Response,
    StreamingResponse,
    error_response,
    json_response,
)
from authgate.dataplane.loop import run
from authgate.dataplane.router import Router
from authgate.dataplane.server import Limits, Server

MODEL = "demo-echo"
DEFAULT_REPLY = "Hello from the authgate demo upstream: every word of this reply is a chunk."
PATTERN = bytes(range(256)) * 256  # 64 KiB


class DemoUpstream:
    """The mock's handlers; ``interval_s`` paces streamed chat replies."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
        self.router = Router()
        self.router.add("/v1/models", self.models)
        self.router.add("/v1/chat/completions", self.chat)
        self.router.add("/v1/blob", self.blob)
        self.router.set_fallback(self.echo, streams=True)
        self._models = msgspec.json.encode(
            {
                "object": "list",
                "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "authgate"}],
            }
        )

    def models(self, request: Request) -> Response:
        """The model list."""
        return Response(200, "content-type: application/json\r\n", self._models)

    def chat(self, request: Request) -> Response:
        """A chat completion, whole or streamed."""
        if request.method != "POST":
            return error_response(405, "method_not_allowed", request.request_id)
        try:
            payload = msgspec.json.decode(request.body) if request.body else {}
        except msgspec.DecodeError:
            return error_response(400, "invalid_json", request.request_id)
        if not isinstance(payload, dict):
            return error_response(400, "invalid_json", request.request_id)
        words = _reply(payload).split()
        created = int(time.time())
        ident = f"chatcmpl-{request.request_id}"
        model = str(payload.get("model") or MODEL)
        if payload.get("stream") is True:
            return StreamingResponse(
                200,
                "content-type: text/event-stream\r\ncache-control: no-cache\r\n",
                self._events(words, ident, model, created),
            )
        return json_response(
            200,
            {
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": " ".join(words)},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 0, "completion_tokens": len(words)},
            },
        )

    async def _events(
        self, words: list[str], ident: str, model: str, created: int
    ) -> AsyncIterator[bytes]:
        def event(delta: dict[str, str], finish: str | None) -> bytes:
            chunk = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return b"data: " + msgspec.json.encode(chunk) + b"\n\n"

        yield event({"role": "assistant", "content": ""}, None)
        for i, word in enumerate(words):
            await asyncio.sleep(self.interval_s)
            yield event({"content": word if i == 0 else " " + word}, None)
        yield event({}, "stop")
        yield b"data: [DONE]\n\n"

    def blob(self, request: Request) -> Response:
        """N bytes, streamed."""
        query = _query(request.target)
        try:
            size = int(query.get("bytes", "0"))
        except ValueError:
            return error_response(400, "invalid_size", request.request_id)
        chunked = query.get("chunked") == "1"
        return StreamingResponse(
            200,
            "content-type: application/octet-stream\r\n",
            _pattern(size),
            None if chunked else size,
        )

    async def echo(self, request: Request) -> Response:
        """What arrived."""
        query = _query(request.target)
        try:
            delay = int(query.get("delay_ms", "0") or 0)
            status = int(query.get("status", "200") or 200)
        except ValueError:
            return error_response(400, "invalid_query", request.request_id)
        if not 200 <= status <= 599:
            return error_response(400, "invalid_query", request.request_id)
        digest = hashlib.sha256(request.body)
        size = len(request.body)
        if request.stream is not None:
            async for chunk in request.stream:
                digest.update(chunk)
                size += len(chunk)
        if delay:
            await asyncio.sleep(delay / 1000)
        return json_response(
            status,
            {
                "method": request.method,
                "target": request.target,
                "headers": request.headers,
                "body_bytes": size,
                "body_sha256": digest.hexdigest(),
            },
        )


def _reply(payload: dict[str, object]) -> str:
    messages = payload.get("messages")
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                content = message.get("content")
                if isinstance(content, str) and content.strip():
                    return f"You said: {content}"
    return DEFAULT_REPLY


def _query(target: str) -> dict[str, str]:
    cut = target.find("?")
    if cut < 0:
        return {}
    return {k: v[-1] for k, v in parse_qs(target[cut + 1 :]).items()}


async def _pattern(size: int) -> AsyncIterator[bytes]:
    while size > 0:
        piece = PATTERN[: min(size, len(PATTERN))]
        size -= len(piece)
        yield piece


async def start(host: str, port: int, interval_s: float = 0.05) -> Server:
    """Start the mock on ``host:port`` (0: any free port) and return its server."""
    demo = DemoUpstream(interval_s)
    server = Server(
        demo.router,
        Limits(max_body_bytes=1 << 20, max_stream_bytes=1 << 40),
        streams_body=demo.router.streams,
    )
    await server.start(host, port)
    return server


def serve_forever(host: str, port: int, interval_s: float) -> None:
    """Run the mock until SIGTERM or Ctrl-C."""

    async def main() -> None:
        server = await start(host, port, interval_s)
        print(f"demo upstream on http://{host}:{server.ports[0]}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.shutdown(1.0)

    run(main())
