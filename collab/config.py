"""Configuration: one frozen :class:`Settings`, built once at start-up.

Sources, later ones winning: built-in defaults, ``COLLAB_*`` environment
variables, command-line flags (passed in as ``overrides``). Nothing else in
Collab reads ``os.environ``; the settings object is passed down explicitly.

Invalid configuration raises :class:`ConfigError` with one line that names the
variable and what is wrong; the CLI prints it and exits with status 2.

The JWT signing key: ``COLLAB_JWT_SECRET``. Outside production, when it is
not set, a random key is generated once and kept in ``<data dir>/jwt_secret``
(mode 0600) so tokens survive restarts. With ``COLLAB_ENV=production`` a
secret of at least 32 bytes must be given.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

SECONDS = 1.0
MINUTES = 60 * SECONDS
DAYS = 24 * 60 * MINUTES
KIB = 1024
MIB = 1024 * KIB

MIN_SECRET_BYTES = 32
ENVIRONMENTS = ("development", "production", "test")
LOG_FORMATS = ("text", "json")
ACCESS_LOG = ("all", "errors", "off")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
PASSWORD_HASHING = ("argon2id", "argon2id-fast-insecure")
GLOBAL_ROLES = ("admin", "manager", "developer", "viewer")


class ConfigError(Exception):
    """Configuration is missing or invalid; the message is one line for an operator."""


@dataclass(frozen=True)
class Settings:
    """Everything Collab can be configured with. Units are in the names."""

    env: str = "development"
    host: str = "127.0.0.1"
    port: int = 8000
    database_url: str | None = field(default=None, repr=False)
    redis_url: str | None = field(default=None, repr=False)
    data_dir: Path = Path(".collab")
    jwt_secret: bytes = field(default=b"", repr=False)
    jwt_issuer: str = "collab"
    jwt_audience: str = "collab-api"
    access_token_ttl_s: int = int(15 * MINUTES)
    refresh_token_ttl_s: int = int(30 * DAYS)
    max_body_bytes: int = 1 * MIB
    body_timeout_s: float = 30 * SECONDS
    response_timeout_s: float = 60 * SECONDS
    keep_alive_timeout_s: float = 5 * SECONDS
    shutdown_grace_s: float = 10 * SECONDS
    db_pool_min: int = 2
    db_pool_max: int = 10
    db_connect_timeout_s: float = 10 * SECONDS
    db_statement_timeout_s: float = 15 * SECONDS
    migrate_on_start: bool = True
    log_level: str = "INFO"
    log_format: str = "text"
    access_log: str = "all"  # which requests get an access-log line: all, errors (status >= 400), off
    password_hashing: str = "argon2id"  # noqa: S105 - an algorithm name, not a secret
    password_hash_concurrency: int = 2
    registration_role: str = "manager"
    auth_cache_ttl_s: float = 60 * SECONDS
    auth_cache_entries: int = 10_000
    actor_inbox_size: int = 256
    actor_max_batch: int = 64
    committers: int = 2  # shared committer tasks writing many projects' task batches per statement
    actor_ask_timeout_s: float = 10 * SECONDS
    actor_idle_timeout_s: float = 5 * MINUTES
    node_lease_ttl_s: float = 5 * SECONDS
    gc_sweep_interval_s: float = 30 * SECONDS  # collect GC generations 0 and 1 this often (0: never); gc_policy.py
    workers: int = 0  # worker processes for `collab serve`; 0 = every core with Redis and a database URL, else 1
    login_per_ip_per_minute: int = 30
    login_per_account_per_minute: int = 10
    register_per_ip_per_hour: int = 30
    ws_allowed_origins: tuple[str, ...] = ()
    ws_max_message_bytes: int = 64 * KIB
    ws_messages_per_s: float = 50.0
    ws_message_burst: int = 200
    ws_max_sockets_per_user: int = 20
    ws_auth_timeout_s: float = 5 * SECONDS
    ws_idle_timeout_s: float = 75 * SECONDS
    ws_max_queued_events: int = 1024
    ws_max_catchup_events: int = 1000
    ws_max_inflight_ops: int = 256
    # Production edges: general rate limits, client addresses, CORS, compression, deadlines, metrics.
    rest_per_user_per_minute: int = 1200
    rest_user_burst: int = 200
    rest_per_ip_per_minute: int = 600
    rest_ip_burst: int = 100
    trusted_proxies: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    gzip_min_bytes: int = 1 * KIB
    request_timeout_s: float = 30 * SECONDS
    shutdown_drain_s: float = 0 * SECONDS
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    metrics_token: str = field(default="", repr=False)
    # Attachments: files streamed to <data dir>/attachments (collab/storage/local_blobs.py).
    max_upload_bytes: int = 25 * MIB
    attachment_transfer_timeout_s: float = 10 * MINUTES
    attachment_gc_grace_s: float = 60 * MINUTES
    attachment_sweep_interval_s: float = 60 * MINUTES

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def database_label(self) -> str:
        """The database URL with any password removed, safe to log."""
        if self.database_url:
            return redact_url(self.database_url)
        return f"embedded PostgreSQL in {self.data_dir / 'postgres'}"

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)


def redact_url(url: str) -> str:
    """Hide passwords: ``user:secret@`` and ``?password=secret`` become ``***``."""
    parts = urlsplit(url)
    if parts.password is not None:
        host = parts.netloc.rsplit("@", 1)[-1]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
    if parts.query:
        query = [
            (k, "***" if k.lower() in ("password", "passwd", "pass", "sslpassword") else v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
        ]
        parts = parts._replace(query=urlencode(query, safe="*"))
    return urlunsplit(parts)


# --- parsing ---------------------------------------------------------------

def _int(lo: int, hi: int) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
        if not lo <= value <= hi:
            raise ConfigError(f"{name} must be between {lo} and {hi}, got {value}")
        return value
    return parse


def _float(lo: float, hi: float) -> Callable[[str, str], float]:
    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a number, got {raw!r}") from None
        if not lo <= value <= hi:
            raise ConfigError(f"{name} must be between {lo} and {hi}, got {value}")
        return value
    return parse


def _choice(options: tuple[str, ...], *, upper: bool = False) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.upper() if upper else raw.lower()
        if value not in options:
            raise ConfigError(f"{name} must be one of {', '.join(options)}, got {raw!r}")
        return value
    return parse


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _url(schemes: tuple[str, ...]) -> Callable[[str, str], str | None]:
    def parse(name: str, raw: str) -> str | None:
        if raw == "":
            return None
        parts = urlsplit(raw)
        if parts.scheme not in schemes:
            raise ConfigError(f"{name} must be a URL starting with {' or '.join(s + '://' for s in schemes)}")
        return raw
    return parse


def _origins(name: str, raw: str) -> tuple[str, ...]:
    origins = tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    for origin in origins:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
            raise ConfigError(
                f"{name} must be a comma-separated list of origins like https://app.example.com, got {origin!r}"
            )
    return origins


def _networks(name: str, raw: str) -> tuple[str, ...]:
    """Comma-separated CIDRs (a bare address is a /32 or /128), normalized."""
    networks = []
    for item in (i.strip() for i in raw.split(",")):
        if not item:
            continue
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ConfigError(f"{name} must be a comma-separated list of CIDRs like 10.0.0.0/8, got {item!r}") from None
    return tuple(networks)


def _optional_port(name: str, raw: str) -> int | None:
    return None if raw == "" else _int(0, 65535)(name, raw)


def _token(name: str, raw: str) -> str:
    if raw and (len(raw) < 16 or not raw.isprintable() or " " in raw):
        raise ConfigError(f"{name} must be at least 16 printable characters without spaces")
    return raw


def _text(name: str, raw: str) -> str:
    if not raw:
        raise ConfigError(f"{name} must not be empty")
    return raw


def _path(name: str, raw: str) -> Path:
    return Path(_text(name, raw)).expanduser()


_PARSERS: dict[str, Callable[[str, str], Any]] = {
    "env": _choice(ENVIRONMENTS),
    "host": _text,
    "port": _int(0, 65535),
    "database_url": _url(("postgresql", "postgres")),
    "redis_url": _url(("redis", "rediss", "unix")),
    "data_dir": _path,
    "jwt_issuer": _text,
    "jwt_audience": _text,
    "access_token_ttl_s": _int(30, 24 * 3600),
    "refresh_token_ttl_s": _int(300, 365 * 24 * 3600),
    "max_body_bytes": _int(1 * KIB, 64 * MIB),
    "body_timeout_s": _float(1, 3600),
    "response_timeout_s": _float(1, 3600),
    "keep_alive_timeout_s": _float(1, 3600),
    "shutdown_grace_s": _float(0, 600),
    "db_pool_min": _int(1, 100),
    "db_pool_max": _int(1, 500),
    "db_connect_timeout_s": _float(0.5, 300),
    "db_statement_timeout_s": _float(0.1, 3600),
    "migrate_on_start": _bool,
    "log_level": _choice(LOG_LEVELS, upper=True),
    "log_format": _choice(LOG_FORMATS),
    "access_log": _choice(ACCESS_LOG),
    "password_hashing": _choice(PASSWORD_HASHING),
    "password_hash_concurrency": _int(1, 64),
    "registration_role": _choice(GLOBAL_ROLES),
    "auth_cache_ttl_s": _float(0, 3600),
    "auth_cache_entries": _int(0, 10_000_000),
    "actor_inbox_size": _int(1, 100_000),
    "actor_max_batch": _int(1, 10_000),
    "committers": _int(1, 32),
    "actor_ask_timeout_s": _float(0.1, 600),
    "actor_idle_timeout_s": _float(0.1, 24 * 3600),
    "node_lease_ttl_s": _float(1, 600),
    "gc_sweep_interval_s": _float(0, 3600),
    "workers": _int(0, 256),
    "login_per_ip_per_minute": _int(1, 1_000_000),
    "login_per_account_per_minute": _int(1, 1_000_000),
    "register_per_ip_per_hour": _int(1, 1_000_000),
    "ws_allowed_origins": _origins,
    "ws_max_message_bytes": _int(1 * KIB, 16 * MIB),
    "ws_messages_per_s": _float(0.1, 100_000),
    "ws_message_burst": _int(1, 1_000_000),
    "ws_max_sockets_per_user": _int(1, 10_000),
    "ws_auth_timeout_s": _float(0.1, 600),
    "ws_idle_timeout_s": _float(1, 24 * 3600),
    "ws_max_queued_events": _int(8, 1_000_000),
    "ws_max_catchup_events": _int(1, 1_000_000),
    "ws_max_inflight_ops": _int(1, 100_000),
    "rest_per_user_per_minute": _int(1, 100_000_000),
    "rest_user_burst": _int(1, 100_000_000),
    "rest_per_ip_per_minute": _int(1, 100_000_000),
    "rest_ip_burst": _int(1, 100_000_000),
    "trusted_proxies": _networks,
    "cors_origins": _origins,
    "gzip_min_bytes": _int(0, 64 * MIB),
    "request_timeout_s": _float(1, 3600),
    "shutdown_drain_s": _float(0, 600),
    "metrics_port": _optional_port,
    "metrics_host": _text,
    "metrics_token": _token,
    "max_upload_bytes": _int(1, 16 * 1024 * MIB),
    "attachment_transfer_timeout_s": _float(1, 24 * 3600),
    "attachment_gc_grace_s": _float(0, 30 * 24 * 3600),
    "attachment_sweep_interval_s": _float(1, 30 * 24 * 3600),
}

ENV_PREFIX = "COLLAB_"


def env_var(name: str) -> str:
    """The environment variable that sets the Settings field ``name``."""
    return ENV_PREFIX + name.upper()


def load_settings(environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None) -> Settings:
    """Build the Settings from the environment and CLI overrides.

    ``overrides`` maps field names to raw strings (or already typed values) from
    command-line flags; ``None`` values are ignored. May create the data dir and
    the development JWT secret file in it.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name, parse in _PARSERS.items():
        raw = environ.get(env_var(name))
        if raw is not None:
            values[name] = parse(env_var(name), raw.strip())
    for name, raw in (overrides or {}).items():
        if raw is None:
            continue
        if name not in _PARSERS:
            raise ConfigError(f"unknown setting {name!r}")
        flag = "--" + name.replace("_", "-")
        values[name] = _PARSERS[name](flag, str(raw)) if not isinstance(raw, (bool, Path, tuple)) else raw

    env = values.get("env", Settings.env)
    if "log_format" not in values:
        values["log_format"] = "json" if env == "production" else "text"
    settings = Settings(**values)
    _check_consistency(settings)
    secret = _resolve_jwt_secret(settings, environ.get(env_var("jwt_secret")))
    return settings.replace(jwt_secret=secret)


def _check_consistency(settings: Settings) -> None:
    if settings.db_pool_min > settings.db_pool_max:
        raise ConfigError("COLLAB_DB_POOL_MIN must not exceed COLLAB_DB_POOL_MAX")
    if settings.production and settings.password_hashing != "argon2id":  # noqa: S105 - an algorithm name
        raise ConfigError("COLLAB_PASSWORD_HASHING=argon2id-fast-insecure is refused with COLLAB_ENV=production")
    if settings.metrics_port and settings.metrics_port == settings.port:
        raise ConfigError(
            "COLLAB_METRICS_PORT must differ from COLLAB_PORT (unset it to serve /metrics on the main port)"
        )
    if settings.production and settings.database_url is None:
        raise ConfigError(
            "COLLAB_DATABASE_URL is required with COLLAB_ENV=production (the embedded database is for development)"
        )


def _resolve_jwt_secret(settings: Settings, raw: str | None) -> bytes:
    if raw:
        secret = raw.encode("utf-8")
        if len(secret) < MIN_SECRET_BYTES:
            raise ConfigError(f"COLLAB_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes, got {len(secret)}")
        return secret
    if settings.production:
        raise ConfigError(
            f"COLLAB_JWT_SECRET is required with COLLAB_ENV=production (at least {MIN_SECRET_BYTES} bytes)"
        )
    return _development_secret(settings.data_dir)


def _development_secret(data_dir: Path) -> bytes:
    """Read, or create once, the development signing key kept in the data dir."""
    path = data_dir / "jwt_secret"
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(48))
        secret = path.read_text().strip().encode("utf-8")
    except FileExistsError:
        secret = path.read_text().strip().encode("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot keep the development JWT secret in {path}: {exc.strerror}") from None
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"{path} holds a JWT secret shorter than {MIN_SECRET_BYTES} bytes; delete it to make a new one"
        )
    return secret
