"""Settings: frozen msgspec Structs loaded from ``authgate.toml`` and ``AUTHGATE_*`` variables.

:func:`load_settings` is the only code in authgate that reads the environment. Unknown keys,
wrong types and out-of-range values raise :class:`~authgate.errors.ConfigError` naming the
key (``routes[2].min_tier``) and, for overrides, the variable that set it.

Environment overrides name a key path with ``__`` between levels and list indexes as numbers:
``AUTHGATE_PASSWORDS__MAX_FAILURES=3``, ``AUTHGATE_TIERS__5__BURST=2000``. Values are read as
TOML literals (``3``, ``true``, ``["a", "b"]``) and fall back to a plain string.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from authgate.errors import ConfigError

ENV_PREFIX = "AUTHGATE_"
CONFIG_ENV = "AUTHGATE_CONFIG"
CONFIG_FILE = "authgate.toml"
DEFAULT_DIR = ".authgate"

Level = Annotated[int, msgspec.Meta(ge=0, le=5)]
Name = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
Scope = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$")]
Method = Annotated[str, msgspec.Meta(pattern=r"^(\*|[A-Z]{1,20})$")]
PositiveSeconds = Annotated[float, msgspec.Meta(gt=0, le=365 * 86400)]


class Tier(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One tier: a level 0-5, a name and its default rate limit."""

    level: Level
    name: Name
    requests_per_minute: Annotated[int, msgspec.Meta(ge=1, le=100_000_000)]
    burst: Annotated[int, msgspec.Meta(ge=1, le=100_000_000)]


DEFAULT_TIERS: tuple[Tier, ...] = (
    Tier(level=0, name="guest", requests_per_minute=10, burst=5),
    Tier(level=1, name="user", requests_per_minute=20, burst=10),
    Tier(level=2, name="advanced", requests_per_minute=50, burst=25),
    Tier(level=3, name="trusted", requests_per_minute=100, burst=50),
    Tier(level=4, name="privileged", requests_per_minute=200, burst=100),
    Tier(level=5, name="system", requests_per_minute=1000, burst=500),
)


class Route(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A route rule: which requests it matches and what it demands of them.

    ``path`` is exact (``/v1/models``), has ``{param}`` segments (``/v1/agents/{id}``), or
    ends in ``/*`` for a prefix (``/v1/files/*`` matches ``/v1/files/`` and everything under
    it). ``methods`` is a list of HTTP methods or ``["*"]`` for any.
    """

    name: Name
    path: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
    methods: tuple[Method, ...] = ("*",)
    min_tier: Level = 1
    scopes: tuple[Scope, ...] = ()
    cost: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 1
    upstream: Name = "default"
    limit_by: Literal["principal", "route"] = "principal"
    cache: Literal["off", "principal", "tier"] = "off"
    compress: bool = False


DEFAULT_ROUTES: tuple[Route, ...] = (
    Route(name="models", path="/v1/models", methods=("GET", "HEAD"), min_tier=0),
    Route(name="chat", path="/v1/chat/completions", methods=("POST",), min_tier=1),
    Route(name="embeddings", path="/v1/embeddings", methods=("POST",), min_tier=1),
    Route(name="fine-tuning", path="/v1/fine_tuning/*", min_tier=3, scopes=("fine-tune",)),
    Route(name="v1", path="/v1/*", min_tier=2),
)


Url = Annotated[str, msgspec.Meta(pattern=r"^https?://[^/?#\s@]+(/[^?#\s]*)?$")]
Count = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]


class Upstream(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Where a route's requests go: base URLs taken in turn, and how long to wait for them.

    An URL that fails ``max_fails`` times in a row is skipped for ``fail_timeout_s`` (unless
    every URL is, then all are tried). ``max_connections`` bounds the connections open to the
    upstream, ``keepalive`` the idle ones kept per URL for reuse.
    """

    urls: Annotated[tuple[Url, ...], msgspec.Meta(min_length=1, max_length=64)]
    connect_timeout_s: PositiveSeconds = 5.0
    first_byte_timeout_s: PositiveSeconds = 60.0
    total_timeout_s: PositiveSeconds = 600.0
    max_connections: Count = 512
    keepalive: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 64
    keepalive_timeout_s: PositiveSeconds = 30.0
    max_fails: Count = 3
    fail_timeout_s: PositiveSeconds = 10.0
    preserve_host: bool = False


class Cache(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The response cache of routes with ``cache`` set: an LRU bounded in bytes."""

    max_bytes: Annotated[int, msgspec.Meta(ge=0, le=1 << 40)] = 64 << 20
    max_entry_bytes: Annotated[int, msgspec.Meta(ge=0, le=1 << 32)] = 4 << 20
    compress_above_bytes: Annotated[int, msgspec.Meta(ge=0, le=1 << 32)] = 16384


class Compression(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Response compression for routes with ``compress`` set."""

    min_bytes: Annotated[int, msgspec.Meta(ge=0, le=1 << 30)] = 1024
    gzip_level: Annotated[int, msgspec.Meta(ge=1, le=9)] = 5
    brotli_quality: Annotated[int, msgspec.Meta(ge=0, le=11)] = 4
    types: tuple[str, ...] = (
        "application/json",
        "application/javascript",
        "application/xml",
        "image/svg+xml",
        "text/",
    )


class Identity(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Where principals and keys live, and the pepper that keys are hashed with."""

    store: Literal["sqlite"] = "sqlite"
    sqlite_path: str = "data/identity.db"
    pepper_file: str = "data/pepper"


class Passwords(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """argon2id parameters and the lockout policy for password logins."""

    argon2_time_cost: Annotated[int, msgspec.Meta(ge=1, le=100)] = 3
    argon2_memory_kib: Annotated[int, msgspec.Meta(ge=8, le=4 * 1024 * 1024)] = 65536
    argon2_parallelism: Annotated[int, msgspec.Meta(ge=1, le=64)] = 4
    max_failures: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 5
    failure_window_s: PositiveSeconds = 900.0
    lockout_s: PositiveSeconds = 900.0
    threads: Annotated[int, msgspec.Meta(ge=1, le=64)] = 2
    # Routes of these tiers need a login with a second factor (TOTP): a password-only
    # login token gets a step_up answer there. API keys are machine credentials: not asked.
    second_factor_tiers: tuple[Level, ...] = ()


class RateLimit(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Bounds of the local rate limiter's memory."""

    max_keys: Annotated[int, msgspec.Meta(ge=16, le=100_000_000)] = 1_000_000
    sweep_interval_s: PositiveSeconds = 10.0


class Server(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The data plane: where it listens and what it tolerates."""

    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8080
    workers: Annotated[int, msgspec.Meta(ge=1, le=256)] = 1
    max_header_bytes: Annotated[int, msgspec.Meta(ge=256, le=1 << 20)] = 16384
    max_body_bytes: Annotated[int, msgspec.Meta(ge=0, le=1 << 34)] = 1 << 20
    max_proxied_body_bytes: Annotated[int, msgspec.Meta(ge=0, le=1 << 50)] = 1 << 30
    idle_timeout_s: PositiveSeconds = 60.0
    header_timeout_s: PositiveSeconds = 10.0
    body_timeout_s: PositiveSeconds = 30.0
    max_connections: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 10000
    shutdown_grace_s: PositiveSeconds = 10.0
    trusted_proxies: tuple[str, ...] = ()
    tls_cert: str | None = None
    tls_key: str | None = None


class Control(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The control plane (admin API): loopback unless told otherwise."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8081


class Audit(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The audit ledger: one RFC 6962 log per worker under ``directory``."""

    enabled: bool = True
    directory: str = "data/audit"
    mode: Literal["async", "durable"] = "async"
    instance: str = ""
    signing_key_file: str = "data/audit/signing.key"
    hmac_key_file: str = "data/audit/hmac.key"
    checkpoint_interval_s: PositiveSeconds = 1.0
    commit_interval_ms: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 10
    segment_mib: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 64
    queue_max: Annotated[int, msgspec.Meta(ge=16, le=10_000_000)] = 100_000


class Tokens(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Access tokens: EdDSA JWTs that the data plane accepts beside API keys."""

    enabled: bool = True
    issuer: Annotated[str, msgspec.Meta(min_length=1, max_length=256)] = "authgate"
    audience: Annotated[str, msgspec.Meta(min_length=1, max_length=256)] = "authgate"
    lifetime_minutes: Annotated[int, msgspec.Meta(ge=1, le=24 * 60)] = 15
    leeway_s: Annotated[int, msgspec.Meta(ge=0, le=300)] = 30
    keys_file: str = "data/token-keys.json"


class Handoffs(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Context handoffs between agents: single-use tickets."""

    enabled: bool = True
    store: Literal["sqlite", "memory"] = "sqlite"
    sqlite_path: str = "data/handoffs.db"
    fsync: bool = False  # True: each create/redeem fsynced before it is answered
    max_context_bytes: Annotated[int, msgspec.Meta(ge=0, le=16 << 20)] = 64 * 1024
    default_ttl_s: PositiveSeconds = 300.0
    max_ttl_s: PositiveSeconds = 3600.0
    keep_expired_s: PositiveSeconds = 3600.0


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """All of authgate's settings. Relative paths are resolved against ``base_dir``."""

    base_dir: str = "."
    allow_anonymous: bool = False
    server: Server = msgspec.field(default_factory=Server)
    control: Control = msgspec.field(default_factory=Control)
    audit: Audit = msgspec.field(default_factory=Audit)
    identity: Identity = msgspec.field(default_factory=Identity)
    passwords: Passwords = msgspec.field(default_factory=Passwords)
    ratelimit: RateLimit = msgspec.field(default_factory=RateLimit)
    tiers: tuple[Tier, ...] = DEFAULT_TIERS
    routes: tuple[Route, ...] = DEFAULT_ROUTES
    upstreams: dict[Name, Upstream] = msgspec.field(default_factory=dict)
    cache: Cache = msgspec.field(default_factory=Cache)
    compression: Compression = msgspec.field(default_factory=Compression)
    tokens: Tokens = msgspec.field(default_factory=Tokens)
    handoffs: Handoffs = msgspec.field(default_factory=Handoffs)

    def path(self, value: str) -> Path:
        """Resolve a path setting against the directory of the config file."""
        p = Path(value)
        return p if p.is_absolute() else Path(self.base_dir) / p


def find_config(path: str | Path | None, environ: Mapping[str, str]) -> Path | None:
    """Return the config file to load: ``path``, ``$AUTHGATE_CONFIG``, ``./authgate.toml`` or
    ``./.authgate/authgate.toml``, in that order; None when none exists (defaults apply)."""
    if path is not None:
        return Path(path)
    if CONFIG_ENV in environ:
        return Path(environ[CONFIG_ENV])
    for candidate in (Path(CONFIG_FILE), Path(DEFAULT_DIR) / CONFIG_FILE):
        if candidate.is_file():
            return candidate
    return None


def load_settings(path: str | Path | None, environ: Mapping[str, str]) -> Settings:
    """Load settings from ``path`` (see :func:`find_config`) and ``AUTHGATE_*`` variables."""
    found = find_config(path, environ)
    raw: dict[str, Any] = {}
    if found is not None:
        try:
            text = found.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {found}: {exc.strerror}") from None
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{found}: invalid TOML: {exc}") from None
        if "base_dir" in raw:
            raise ConfigError(f"{found}: base_dir is derived from the file's location")
        raw["base_dir"] = str(found.resolve().parent)
    settings = _convert(raw, {})
    overrides = _env_overrides(environ)
    if overrides:
        tree = _lists(msgspec.to_builtins(settings))
        origins: dict[str, str] = {}
        for var, keys, value in overrides:
            _assign(tree, keys, value, var)
            origins[_dotted(keys)] = var
        settings = _convert(tree, origins)
    _check_consistency(settings)
    return settings


def _convert(tree: dict[str, Any], origins: Mapping[str, str]) -> Settings:
    try:
        return msgspec.convert(tree, Settings, strict=True)
    except msgspec.ValidationError as exc:
        raise ConfigError(_explain(str(exc), origins)) from None


_AT = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<field>[^`]+)`")


def _explain(message: str, origins: Mapping[str, str]) -> str:
    """Turn msgspec's ``Expected int, got str - at `$.a.b[2]``` into a message naming the key."""
    where = ""
    match = _AT.search(message)
    if match:
        where = match["path"]
        message = message[: match.start()]
    unknown = _UNKNOWN.search(message)
    if unknown:
        key = f"{where}.{unknown['field']}" if where else unknown["field"]
        return f"unknown setting '{key}'"
    key = where or "<root>"
    origin = next(
        (var for k, var in origins.items() if key == k or key.startswith((f"{k}.", f"{k}["))),
        None,
    )
    suffix = f" (set by {origin})" if origin else ""
    return f"invalid setting '{key}'{suffix}: {message}"


def _env_overrides(environ: Mapping[str, str]) -> list[tuple[str, list[str], Any]]:
    out: list[tuple[str, list[str], Any]] = []
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX) or var == CONFIG_ENV:
            continue
        keys = var[len(ENV_PREFIX) :].lower().split("__")
        if not all(keys):
            raise ConfigError(f"{var}: empty key segment")
        out.append((var, keys, _parse_env_value(environ[var])))
    return out


def _lists(node: Any) -> Any:
    """Make every tuple a list so that overrides can assign into it."""
    if isinstance(node, dict):
        return {k: _lists(v) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [_lists(v) for v in node]
    return node


def _parse_env_value(value: str) -> Any:
    try:
        return tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return value


def _assign(tree: Any, keys: list[str], value: Any, var: str) -> None:
    node = tree
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(node, dict):
            if key not in node and keys[0] == "upstreams" and i in (1, 2):
                # A new upstream may be defined entirely by variables; msgspec then
                # checks its fields like any other.
                node[key] = value if last else {}
            if key not in node:
                raise ConfigError(f"{var}: unknown setting '{_dotted(keys[: i + 1])}'")
            if last:
                node[key] = value
            else:
                node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            if last:
                node[int(key)] = value
            else:
                node = node[int(key)]
        else:
            raise ConfigError(f"{var}: unknown setting '{_dotted(keys[: i + 1])}'")


def _dotted(keys: list[str]) -> str:
    out = ""
    for key in keys:
        out += f"[{key}]" if key.isdigit() else (f".{key}" if out else key)
    return out


def _check_consistency(settings: Settings) -> None:
    levels = sorted(t.level for t in settings.tiers)
    if levels != [0, 1, 2, 3, 4, 5]:
        raise ConfigError(f"invalid setting 'tiers': need levels 0-5 exactly once, got {levels}")
    names = [t.name for t in settings.tiers]
    if len(set(names)) != len(names):
        raise ConfigError("invalid setting 'tiers': tier names must be unique")
    for i, network in enumerate(settings.server.trusted_proxies):
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ConfigError(
                f"invalid setting 'server.trusted_proxies[{i}]': {network!r} is not an "
                "address or CIDR network"
            ) from None
    if (settings.server.tls_cert is None) != (settings.server.tls_key is None):
        raise ConfigError("invalid setting 'server.tls_cert': tls_cert and tls_key go together")
    seen: set[str] = set()
    for i, route in enumerate(settings.routes):
        if route.name in seen:
            raise ConfigError(f"invalid setting 'routes[{i}].name': duplicate '{route.name}'")
        seen.add(route.name)
        if "*" in route.methods and len(route.methods) > 1:
            raise ConfigError(f"invalid setting 'routes[{i}].methods': '*' must stand alone")
        if not route.methods:
            raise ConfigError(f"invalid setting 'routes[{i}].methods': empty")
        if settings.upstreams and route.upstream not in settings.upstreams:
            raise ConfigError(
                f"invalid setting 'routes[{i}].upstream': no upstream named '{route.upstream}' "
                f"(configured: {', '.join(sorted(settings.upstreams))})"
            )
