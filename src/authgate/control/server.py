"""Run a Starlette app on uvicorn inside an event loop someone else owns."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import uvicorn
from starlette.applications import Starlette


class _Embedded(uvicorn.Server):
    """uvicorn without its own signal handling: the process's runner owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ControlServer:
    """The admin API server, started and stopped with the data plane."""

    def __init__(self, app: Starlette, host: str, port: int) -> None:
        config = uvicorn.Config(
            app, host=host, port=port, lifespan="off", log_level="warning", access_log=False
        )
        self._server = _Embedded(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start serving; returns once the socket is bound (or raises if it cannot be)."""
        self._task = asyncio.get_running_loop().create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise OSError("the control plane stopped during start-up")
            await asyncio.sleep(0.01)

    @property
    def port(self) -> int:
        """The bound port."""
        servers = self._server.servers
        return int(servers[0].sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Finish in-flight admin requests and stop."""
        self._server.should_exit = True
        if self._task is not None:
            await self._task
