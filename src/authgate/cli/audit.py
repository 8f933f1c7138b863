"""``authgate audit``: verify a ledger offline."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from pathlib import Path

import click

from authgate.audit.verify import trusted_keys, verify_log
from authgate.cli.common import Failure, out, print_json, settings_of
from authgate.errors import AuthgateError
from authgate.wiring import load_hmac_key


@click.group()
def audit() -> None:
    """Inspect and verify the audit ledger."""


@audit.command("hash")
@click.argument("value")
@click.pass_context
def audit_hash(ctx: click.Context, value: str) -> None:
    """Print VALUE's digest under the audit HMAC key, to search events by client address."""
    settings = settings_of(ctx)
    try:
        key = load_hmac_key(settings.path(settings.audit.hmac_key_file), create=False)
    except AuthgateError as exc:
        raise Failure(exc) from None
    click.echo(hmac.digest(key, value.encode(), "sha256").hex())


@audit.command("verify")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option(
    "--key",
    "vkeys",
    multiple=True,
    help="A trusted verifier key (repeatable). Default: the log's own log.vkey, which "
    "proves only that the log is consistent with itself.",
)
@click.option("--json", "as_json", is_flag=True)
def audit_verify(directory: Path, vkeys: Sequence[str], as_json: bool) -> None:
    """Recompute every leaf and root of the log in DIRECTORY and check every checkpoint."""
    try:
        report = verify_log(directory, trusted_keys(directory, vkeys))
    except (AuthgateError, OSError) as exc:
        message = exc.message if isinstance(exc, AuthgateError) else str(exc)
        raise Failure(AuthgateError(message)) from None
    if as_json:
        print_json(
            {
                "ok": report.ok,
                "records": report.records,
                "checkpoints": report.checkpoints,
                "root": report.root.hex(),
                "problems": report.problems,
            }
        )
    else:
        for problem in report.problems:
            out.print(f"BAD   {problem}", markup=False)
        if report.ok:
            out.print(
                f"OK    {report.records} records, {report.checkpoints} checkpoints, "
                f"root {report.root.hex()}"
            )
        elif not report.problems:
            out.print("BAD   no signed checkpoint vouches for these records")
    if not report.ok:
        raise SystemExit(1)
