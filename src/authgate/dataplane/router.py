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

    def add(self, path: str, handler: Handler) -> None:
        """Serve exactly ``path``."""
        self.exact[path] = handler

    def add_prefix(self, prefix: str, handler: Handler) -> None:
        """Serve every path under ``prefix`` (which should end in '/')."""
        self.prefixes.append((prefix, handler))
        self.prefixes.sort(key=lambda item: -len(item[0]))

    def __call__(self, request: Request) -> Response | Awaitable[Response]:
        """Dispatch one request."""
        target = request.target
        cut = target.find("?")
        path = target if cut < 0 else target[:cut]
        handler = self.exact.get(path)
        if handler is None:
            for prefix, candidate in self.prefixes:
                if path.startswith(prefix):
                    handler = candidate
                    break
            else:
                handler = self.fallback
        return handler(request)


def _not_found(request: Request) -> Response:
    return error_response(404, "not_found", request.request_id)
