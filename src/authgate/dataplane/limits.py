"""The data plane's size and time limits."""

from __future__ import annotations


class Limits:
    """Size and time limits of the server."""

    def __init__(
        self,
        max_header_bytes: int = 16384,
        max_body_bytes: int = 1 << 20,
        idle_timeout: float = 60.0,
        header_timeout: float = 10.0,
        body_timeout: float = 30.0,
        max_connections: int = 10000,
        tick: float = 0.5,
        max_stream_bytes: int = 1 << 30,
        buffer_body_bytes: int = 64 * 1024,
    ) -> None:
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self.idle_timeout = idle_timeout
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.max_connections = max_connections
        self.tick = tick
        # Bodies the server streams to a handler (proxied uploads) may be this large; a
        # streamable body with a Content-Length up to buffer_body_bytes is still read whole
        # first, which is cheaper for the small JSON bodies most API calls carry.
        self.max_stream_bytes = max_stream_bytes
        self.buffer_body_bytes = buffer_body_bytes
