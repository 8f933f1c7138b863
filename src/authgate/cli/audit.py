"""``authgate audit``: verify a ledger offline."""

from __future__ import annotations

import contextlib
import fcntl
import hmac
import json
import os
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import click

from authgate.audit import index, proofs, retention
from authgate.audit.event import as_dict, decode
from authgate.audit.segment import ScanEnd, list_segments, scan
from authgate.audit.verify import trusted_keys, verify_log
from authgate.cli.common import Failure, out, print_json, settings_of
from authgate.errors import AuditUnavailable, AuthgateError
from authgate.wiring import load_hmac_key


@contextlib.contextmanager
def failing_cleanly() -> Iterator[None]:
    """Errors as one line with their stable code: an AuthgateError as it is, a file-system
    error as audit_unavailable."""
    try:
        yield
    except AuthgateError as exc:
        raise Failure(exc) from None
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        raise Failure(AuditUnavailable(f"{where}{exc.strerror or exc}")) from None


@click.group()
def audit() -> None:
    """Inspect and verify the audit ledger."""


@audit.command("hash")
@click.argument("value")
@click.pass_context
def audit_hash(ctx: click.Context, value: str) -> None:
    """Print VALUE's digest under the audit HMAC key, to search events by client address."""
    settings = settings_of(ctx)
    with failing_cleanly():
        key = load_hmac_key(settings.path(settings.audit.hmac_key_file), create=False)
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
    with failing_cleanly():
        report = verify_log(directory, trusted_keys(directory, vkeys))
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


def _records(directory: Path) -> list[bytes]:
    """Every record's bytes, in order (a torn tail of a live log is left out)."""
    segments = list_segments(directory / "segments")
    out: list[bytes] = []
    for i, path in enumerate(segments):
        for item in scan(path, last=i == len(segments) - 1):
            if not isinstance(item, ScanEnd):
                out.append(item.payload)
    return out


@audit.command("proof")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("seq", type=click.IntRange(0))
@click.option("--json", "as_json", is_flag=True)
def audit_proof(directory: Path, seq: int, as_json: bool) -> None:
    """The inclusion proof of record SEQ against the log's latest signed checkpoint."""
    with failing_cleanly():
        view = proofs.inclusion(directory, seq)
        first = retention.load_frontier(directory).size  # a pruned log starts later
        view["event"] = as_dict(decode(_records(directory)[seq - first]))
    if as_json:
        print_json(view)
        return
    out.print(f"record {seq} of {view['tree_size']}: leaf {view['leaf_hash']}", markup=False)
    for i, step in enumerate(view["proof"]):
        out.print(f"  proof[{i}] {step}", markup=False)
    out.print("verified against the signed checkpoint:", markup=False)
    out.print(view["checkpoint"], markup=False, end="")


@audit.command("tail")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("-n", "count", type=click.IntRange(1), default=20, show_default=True)
def audit_tail(directory: Path, count: int) -> None:
    """The last events of the log in DIRECTORY, one JSON object a line."""
    with failing_cleanly():
        records = _records(directory)
    first = max(0, len(records) - count)
    for seq, payload in enumerate(records[first:], start=first):
        click.echo(json.dumps({"seq": seq, **as_dict(decode(payload))}, sort_keys=True))


@audit.command("reindex")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
def audit_reindex(directory: Path) -> None:
    """Rebuild the query index of the log in DIRECTORY from its segments."""
    with failing_cleanly():
        count = index.rebuild(directory)
    out.print(f"indexed {count} records")


@audit.command("query")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--principal")
@click.option("--type", "event_type", help="authn, authz, ratelimit, admin, token, handoff, ...")
@click.option("--outcome", help="allow, deny, step_up")
@click.option("--reason", help="a reason code, e.g. revoked_key")
@click.option("--request-id")
@click.option("--correlation", "correlation_id")
@click.option("--client-hash", help="from 'authgate audit hash ADDRESS'")
@click.option("--since", type=click.DateTime(), help="UTC, e.g. 2026-12-04T21:00:00")
@click.option("--until", type=click.DateTime())
@click.option("--limit", type=click.IntRange(1, 100_000), default=100, show_default=True)
def audit_query(
    directory: Path,
    principal: str | None,
    event_type: str | None,
    outcome: str | None,
    reason: str | None,
    request_id: str | None,
    correlation_id: str | None,
    client_hash: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
) -> None:
    """Events of the log in DIRECTORY matching every filter, as JSON lines. DIRECTORY may
    also hold several logs (data/audit: one per worker); their events come merged in time."""

    def ns(moment: datetime | None) -> int | None:
        return None if moment is None else int(moment.replace(tzinfo=UTC).timestamp() * 1e9)

    try:
        digest = None if client_hash is None else bytes.fromhex(client_hash)
    except ValueError:
        raise click.BadParameter("--client-hash must be hex") from None
    q = index.Query(
        principal, event_type, outcome, reason, request_id, correlation_id, digest,
        ns(since), ns(until), limit,
    )  # fmt: skip
    with failing_cleanly():
        rows = index.query_all(directory, q)
    for row in rows:
        click.echo(json.dumps(row, sort_keys=True))


@audit.command("export")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--from", "first", type=click.IntRange(0), default=0, show_default=True)
@click.option("--to", "last", type=click.IntRange(0), help="Last record (default: all).")
def audit_export(directory: Path, out: Path, first: int, last: int | None) -> None:
    """Copy the segments holding records FROM..TO, their checkpoints, the verifier key and
    the frontier at the cut into OUT: a directory 'audit verify' checks on another machine."""
    with failing_cleanly():
        names = retention.export(directory, first, last if last is not None else 2**63, out)
    click.echo(f"exported {len(names)} segments to {out}")


@audit.command("prune")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--before", type=click.IntRange(1), required=True, help="Keep records >= this.")
def audit_prune(directory: Path, before: int) -> None:
    """Delete whole segments whose records all come before --before (export them first).
    Refused while a server holds the log."""
    with failing_cleanly():
        fd = os.open(directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise AuditUnavailable("a running server holds this log; stop it first") from None
            names = retention.prune(directory, before)
        finally:
            os.close(fd)
    click.echo(f"deleted {len(names)} segments")
