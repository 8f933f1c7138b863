"""The ``authgate`` command: parse, call, print — the logic lives in the modules it calls."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import click
import msgspec

from authgate.bootstrap import ensure_system_principal, prepare_directory
from authgate.cli.audit import audit
from authgate.cli.common import Failure, out, settings_of
from authgate.cli.identity import key, principal
from authgate.cli.policy import decide, policy
from authgate.cli.signing import keys
from authgate.config import DEFAULT_DIR
from authgate.errors import AuthgateError
from authgate.serve import Running
from authgate.serve import run as run_server

__all__ = ["main"]


@click.group()
@click.option(
    "--config",
    "-c",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Config file (default: $AUTHGATE_CONFIG, ./authgate.toml, ./.authgate/authgate.toml).",
)
@click.option(
    "--url",
    help="Run principal/key commands through this admin API (e.g. http://127.0.0.1:8081) "
    "instead of the store.",
)
@click.option(
    "--admin-key",
    envvar="AUTHGATE_ADMIN_KEY",  # read by click for this option only; keeps it out of argv
    help="A tier-5 key for --url (or AUTHGATE_ADMIN_KEY).",
)
@click.version_option(package_name="authgate")
@click.pass_context
def main(ctx: click.Context, config: Path | None, url: str | None, admin_key: str | None) -> None:
    """authgate: identity and API gateway for AI services."""
    ctx.ensure_object(dict)
    ctx.obj["config"] = config
    ctx.obj["url"] = url
    ctx.obj["admin_key"] = admin_key


@main.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_DIR)
def init(directory: Path) -> None:
    """Create a config, a data directory, a pepper and a system principal in DIRECTORY."""
    try:
        report, settings = prepare_directory(directory, os.environ)
        asyncio.run(ensure_system_principal(settings, report))
    except AuthgateError as exc:
        raise Failure(exc) from None
    for line in report.created:
        out.print(f"created   {line}")
    for line in report.existing:
        out.print(f"exists    {line}")
    if report.key:
        out.print()
        out.print("System API key (tier 5). It is shown once and stored only as a hash:")
        out.print(f"  {report.key}", markup=False)


@main.command()
@click.option("--host", help="Data-plane address (default: server.host).")
@click.option("--port", type=click.IntRange(0, 65535), help="Data-plane port (server.port).")
@click.option("--workers", type=click.IntRange(1, 256), help="Processes (server.workers).")
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None, workers: int | None) -> None:
    """Run the gateway: data plane and control plane, until SIGTERM or Ctrl-C."""
    settings = settings_of(ctx)
    changes = {k: v for k, v in (("host", host), ("port", port), ("workers", workers)) if v}
    if changes:
        settings = msgspec.structs.replace(
            settings, server=msgspec.structs.replace(settings.server, **changes)
        )

    def ready(running: Running) -> None:
        control = running.control
        where = f"; admin API on http://{settings.control.host}:{control.port}" if control else ""
        out.print(
            f"authgate serving on http://{settings.server.host}:{running.data_port}{where}",
            markup=False,
        )

    try:
        run_server(settings, on_ready=ready)
    except AuthgateError as exc:
        raise Failure(exc) from None
    except OSError as exc:
        raise click.ClickException(f"cannot start: {exc}") from None


@main.command("demo-upstream")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=9000, show_default=True)
@click.option(
    "--interval-ms",
    type=click.IntRange(0, 60_000),
    default=50,
    show_default=True,
    help="Pause between streamed chat chunks.",
)
def demo_upstream(host: str, port: int, interval_ms: int) -> None:
    """Run an OpenAI-compatible mock upstream (models, chat completions with SSE, echo)."""
    from authgate.demo_upstream import serve_forever

    try:
        serve_forever(host, port, interval_ms / 1000)
    except OSError as exc:
        raise click.ClickException(f"cannot start: {exc}") from None


main.add_command(principal)
main.add_command(key)
main.add_command(policy)
main.add_command(decide)
main.add_command(audit)
main.add_command(keys)
