"""Helpers shared by the CLI commands: settings, services, errors, output."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
from rich.console import Console

from authgate.clock import NS_PER_S
from authgate.config import Settings, load_settings
from authgate.errors import AuthgateError
from authgate.wiring import Services, build_services

T = TypeVar("T")
# Piped output is not cut to 80 columns: ids and keys must stay whole for scripts and people.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``2h``, ``7d`` → seconds. ValueError otherwise."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"invalid duration {text!r}: use e.g. 90s, 15m, 2h, 7d")
    return float(match[1]) * _UNITS[match[2]]


class Duration(click.ParamType[float, Any]):
    """A click parameter holding seconds."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        """Parse the option's text."""
        if isinstance(value, float):
            return value
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class Failure(click.ClickException):
    """An AuthgateError shown as ``error [code]: message`` with exit status 2."""

    exit_code = 2

    def __init__(self, error: AuthgateError) -> None:
        super().__init__(f"[{error.code}] {error.message}")

    def show(self, file: Any = None) -> None:
        """Print to stderr."""
        click.echo(f"error {self.message}", err=True)


def settings_of(ctx: click.Context) -> Settings:
    try:
        return load_settings(ctx.obj["config"], os.environ)
    except AuthgateError as exc:
        raise Failure(exc) from None


def with_services(
    ctx: click.Context,
    action: Callable[[Services], Awaitable[T]],
    ledger_name: str | None = None,
) -> T:
    """Run ``action`` over freshly built services; errors become one-line failures.
    ``ledger_name`` opens that audit log (the CLI's own, for admin changes)."""
    settings = settings_of(ctx)

    async def run() -> T:
        services = await build_services(settings, ledger_name=ledger_name)
        try:
            return await action(services)
        finally:
            await services.close()

    try:
        return asyncio.run(run())
    except AuthgateError as exc:
        raise Failure(exc) from None


def when(ns: int | None) -> str:
    if ns is None:
        return "-"
    return datetime.fromtimestamp(ns / NS_PER_S, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


def now_ns() -> int:
    """Wall-clock time for views computed outside a service."""
    return time.time_ns()
