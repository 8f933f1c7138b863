"""``authgate init``: a config file, a data directory, a pepper and a system principal.

Running it again never overwrites a secret or a file; it reports what already exists.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from authgate.config import CONFIG_FILE, Settings, load_settings
from authgate.identity.ids import Kind
from authgate.wiring import (
    PEPPER_BYTES,
    build_services,
    instance_name,
    load_hmac_key,
    load_signer,
    write_new_file,
)

SYSTEM_NAME = "system"


@dataclass
class InitReport:
    """What init did and what it found."""

    config: Path
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    principal_id: str | None = None
    key: str | None = None


def default_config_text() -> str:
    """The commented default configuration."""
    return resources.files("authgate").joinpath("default_config.toml").read_text("utf-8")


def prepare_directory(directory: Path, environ: Mapping[str, str]) -> tuple[InitReport, Settings]:
    """Create ``directory`` with a default config, a data directory and a pepper, keeping
    whatever already exists."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / CONFIG_FILE
    report = InitReport(config)
    if write_new_file(config, default_config_text().encode(), 0o644):
        report.created.append(f"config {config}")
    else:
        report.existing.append(f"config {config} (kept as it is)")
    settings = load_settings(config, environ)
    pepper = settings.path(settings.identity.pepper_file)
    pepper.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if write_new_file(pepper, secrets.token_bytes(PEPPER_BYTES).hex().encode() + b"\n", 0o600):
        report.created.append(f"pepper {pepper} (mode 600)")
    else:
        report.existing.append(f"pepper {pepper} (never overwritten)")
    signing_key = settings.path(settings.audit.signing_key_file)
    if signing_key.exists():
        report.existing.append(f"audit signing key {signing_key} (never overwritten)")
    else:
        signer = load_signer(signing_key, instance_name(settings), create=True)
        report.created.append(f"audit signing key {signing_key} (mode 600)")
        report.created.append(f"audit verifier key {signer.vkey}")
    hmac_key = settings.path(settings.audit.hmac_key_file)
    if hmac_key.exists():
        report.existing.append(f"audit HMAC key {hmac_key} (never overwritten)")
    else:
        load_hmac_key(hmac_key, create=True)
        report.created.append(f"audit HMAC key {hmac_key} (mode 600)")
    store_path = settings.path(settings.identity.sqlite_path)
    if not store_path.exists():
        report.created.append(f"identity store {store_path}")
    return report, settings


async def ensure_system_principal(settings: Settings, report: InitReport) -> None:
    """Create a tier-5 ``sys_`` principal and its first key unless one exists."""
    services = await build_services(settings)
    try:
        systems = [p for p in services.identity.principals() if p.kind is Kind.SYSTEM]
        if systems:
            names = ", ".join(f"{p.name} ({p.id})" for p in systems)
            report.existing.append(
                f"system principal {names}; its key was shown when it was created "
                "(issue another with 'authgate key issue')"
            )
            return
        principal = await services.identity.create_principal(Kind.SYSTEM, SYSTEM_NAME, 5)
        issued = await services.identity.issue_key(principal.id, name="init")
        report.created.append(f"system principal {principal.name} ({principal.id})")
        report.principal_id = principal.id
        report.key = issued.key
    finally:
        await services.close()
