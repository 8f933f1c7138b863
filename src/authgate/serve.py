"""``authgate serve``: the data plane and the control plane in one process, N workers.

Each worker is a process with its own event loop, store connection and in-memory directory;
the data plane's port is shared with SO_REUSEPORT. Worker 0 also serves the control plane.
Every worker polls the store about once a second and reloads when another process (another
worker, or the CLI) has changed it, so admin changes reach all workers within ~1 s.
SIGTERM and SIGINT shut down gracefully.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import os
import signal
import ssl
from collections.abc import Callable

from authgate.config import Settings
from authgate.control.app import build_admin_app
from authgate.control.server import ControlServer
from authgate.dataplane.app import build_router
from authgate.dataplane.cache import ResponseCache
from authgate.dataplane.compress import Compressor
from authgate.dataplane.loop import run as run_loop
from authgate.dataplane.proxy import Proxy
from authgate.dataplane.server import Limits, Server
from authgate.dataplane.upstream import Upstream
from authgate.wiring import Services, build_services

log = logging.getLogger(__name__)
RELOAD_INTERVAL_S = 1.0


def limits_of(settings: Settings) -> Limits:
    """The data plane's limits from settings."""
    s = settings.server
    return Limits(
        max_header_bytes=s.max_header_bytes,
        max_body_bytes=s.max_body_bytes,
        max_stream_bytes=s.max_proxied_body_bytes,
        idle_timeout=s.idle_timeout_s,
        header_timeout=s.header_timeout_s,
        body_timeout=s.body_timeout_s,
        max_connections=s.max_connections,
    )


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """A server TLS context when a certificate is configured."""
    s = settings.server
    if s.tls_cert is None or s.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.path(s.tls_cert), settings.path(s.tls_key))
    return context


class Running:
    """A started worker: its services, servers, and how to stop them."""

    def __init__(
        self,
        services: Services,
        data: Server,
        control: ControlServer | None,
        proxy: Proxy | None = None,
    ) -> None:
        self.services = services
        self.proxy = proxy
        self.data = data
        self.control = control
        self.stopped = asyncio.Event()
        self._reloader: asyncio.Task[None] | None = None

    @property
    def data_port(self) -> int:
        """The data plane's bound port."""
        return self.data.ports[0]

    async def _reload_loop(self) -> None:
        while True:
            await asyncio.sleep(RELOAD_INTERVAL_S)
            try:
                await self.services.identity.reload_if_changed()
            except Exception:  # keep serving from memory if the store hiccups
                log.exception("identity reload failed")
            try:
                self.services.reload_token_keys()
            except Exception:  # keep the keys in memory if the file is mid-write or broken
                log.exception("token key reload failed")

    async def stop(self, grace: float) -> None:
        """Graceful shutdown."""
        if self._reloader is not None:
            self._reloader.cancel()
        await self.data.shutdown(grace)
        if self.proxy is not None:
            self.proxy.close()
        if self.control is not None:
            await self.control.stop()
        await self.services.close()
        self.stopped.set()


async def start(settings: Settings, *, worker: int = 0, reuse_port: bool = False) -> Running:
    """Start one worker's servers and return once both listen."""
    services = await build_services(settings, ledger_name=f"w{worker}", handoffs=True)
    durable = settings.audit.enabled and settings.audit.mode == "durable"
    proxy = None

    def any_route(option: str) -> bool:
        return any(getattr(route, option) not in ("off", False) for route in settings.routes)

    if settings.upstreams:
        tls = settings.server.tls_cert is not None
        proxy = Proxy(
            services.engine,
            {name: Upstream(name, u) for name, u in settings.upstreams.items()},
            {route.name: route for route in settings.routes},
            services.sink,
            services.clock,
            durable=durable,
            scheme="https" if tls else "http",
            cache=ResponseCache(settings.cache) if any_route("cache") else None,
            compressor=Compressor(settings.compression) if any_route("compress") else None,
        )
    router = build_router(
        services.engine,
        services.readiness,
        durable=durable,
        proxy=proxy,
        identity=services.identity,
        handoffs=services.handoffs,
    )
    data = Server(
        router, limits_of(settings), settings.server.trusted_proxies, streams_body=router.streams
    )
    await data.start(
        settings.server.host,
        settings.server.port,
        reuse_port=reuse_port,
        ssl=tls_context(settings),
    )
    control = None
    if settings.control.enabled and worker == 0:
        control = ControlServer(
            build_admin_app(
                services.identity,
                services.sink,
                services.clock,
                services.ledger.directory if services.ledger is not None else None,
            ),
            settings.control.host,
            settings.control.port,
        )
        await control.start()
    # Everything loaded so far (identities, policy, modules) lives as long as the process:
    # keep it out of the collector's full passes, which otherwise walk it over and over.
    gc.freeze()
    # Request handling frees its objects by reference counting (it makes no cycles), so
    # young-generation passes find nothing; run them 50x less often than the default.
    gc.set_threshold(35_000, 20, 20)
    running = Running(services, data, control, proxy)
    running._reloader = asyncio.get_running_loop().create_task(running._reload_loop())
    return running


async def serve_until_signalled(
    settings: Settings,
    *,
    worker: int = 0,
    reuse_port: bool = False,
    on_ready: Callable[[Running], None] | None = None,
) -> None:
    """Run one worker until SIGTERM or SIGINT, then shut down gracefully."""
    running = await start(settings, worker=worker, reuse_port=reuse_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if on_ready is not None:
        on_ready(running)
    await stop.wait()
    await running.stop(settings.server.shutdown_grace_s)


def _worker_main(settings: Settings, worker: int) -> None:
    def announce(running: Running) -> None:
        print(f"worker {worker} (pid {os.getpid()}) ready", flush=True)

    run_loop(serve_until_signalled(settings, worker=worker, reuse_port=True, on_ready=announce))


def run(settings: Settings, on_ready: Callable[[Running], None] | None = None) -> None:
    """Serve with ``settings.server.workers`` processes until signalled."""
    workers = settings.server.workers
    if workers == 1:
        run_loop(serve_until_signalled(settings, on_ready=on_ready))
        return
    context = multiprocessing.get_context("spawn")
    procs = [
        context.Process(target=_worker_main, args=(settings, i), name=f"authgate-worker-{i}")
        for i in range(workers)
    ]
    for proc in procs:
        proc.start()
    if on_ready is not None:
        print(
            f"authgate serving on http://{settings.server.host}:{settings.server.port} "
            f"with {workers} workers",
            flush=True,
        )

    def forward(signum: int, _frame: object) -> None:
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for proc in procs:
        proc.join()
    failed = [p.name for p in procs if p.exitcode not in (0, -signal.SIGTERM, -signal.SIGINT)]
    if failed:
        raise SystemExit(f"workers failed: {', '.join(failed)}")
