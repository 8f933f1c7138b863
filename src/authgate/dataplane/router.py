"""Routes registered at start: exact paths in a dict, prefixes in a short list."""

from __future__ import annotations

from collections.abc import Awaitable

from authgate.dataplane.http import Handler, Request, Response, error_response


class Router:
    """Dispatch by exact path first, then by the longest registered prefix."""

    def __init__(self) -> None:
        self.exact: dict[str, Handler] = {}
        self.prefixes: list[tuple[str, Handler]] = []
        self.fallback: Handler = _not_found
        self.fallback_streams = False  # whether the fallback takes streamed bodies (proxy)

    def add(self, path: str, handler: Handler) -> None:
        """Serve exactly ``path``."""
        self.exact[path] = handler

    def add_prefix(self, prefix: str, handler: Handler) -> None:
        """Serve every path under ``prefix`` (which should end in '/')."""
        self.prefixes.append((prefix, handler))
        self.prefixes.sort(key=lambda item: -len(item[0]))

    def set_fallback(self, handler: Handler, *, streams: bool = False) -> None:
        """Serve every other path with ``handler``; with ``streams``, their large bodies
        are handed over as they arrive (see :class:`~authgate.dataplane.http.Request`)."""
        self.fallback = handler
        self.fallback_streams = streams

    def streams(self, url: bytes) -> bool:
        """Whether the handler for ``url`` takes its body as a stream."""
        if not self.fallback_streams:
            return False
        target = url.decode("latin-1")
        cut = target.find("?")
        return self._handler_for(target if cut < 0 else target[:cut]) is self.fallback

    def __call__(self, request: Request) -> Response | Awaitable[Response]:
        """Dispatch one request."""
        target = request.target
        cut = target.find("?")
        return self._handler_for(target if cut < 0 else target[:cut])(request)

    def _handler_for(self, path: str) -> Handler:
        handler = self.exact.get(path)
        if handler is not None:
            return handler
        for prefix, candidate in self.prefixes:
            if path.startswith(prefix):
                return candidate
        return self.fallback


def _not_found(request: Request) -> Response:
    return error_response(404, "not_found", request.request_id)
