"""Tests for collab.config: defaults, COLLAB_* parsing, production rules, the JWT secret, redaction."""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path

import pytest

from collab.config import MIN_SECRET_BYTES, ConfigError, Settings, env_var, load_settings, redact_url

GOOD_SECRET = "p" * MIN_SECRET_BYTES
DB_PASSWORD = "hunter2-db-pw"
DB_URL = f"postgresql://collab:{DB_PASSWORD}@db.internal:5432/collab"


def load(tmp_path: Path, overrides: dict[str, object] | None = None, **env: str) -> Settings:
    environ = {"COLLAB_DATA_DIR": str(tmp_path), **{env_var(k): v for k, v in env.items()}}
    return load_settings(environ=environ, overrides=overrides)


def production(**extra: str) -> dict[str, str]:
    return {"env": "production", "database_url": DB_URL, "jwt_secret": GOOD_SECRET, **extra}


# --- defaults ------------------------------------------------------------------------

def test_defaults(tmp_path: Path) -> None:
    settings = load(tmp_path)
    assert settings.env == "development"
    assert settings.production is False
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.database_url is None
    assert settings.redis_url is None
    assert settings.data_dir == tmp_path
    assert settings.migrate_on_start is True
    assert (settings.db_pool_min, settings.db_pool_max) == (2, 10)
    assert settings.log_level == "INFO"
    assert settings.log_format == "text"
    assert settings.password_hashing == "argon2id"
    assert settings.access_token_ttl_s == 15 * 60
    assert settings.refresh_token_ttl_s == 30 * 24 * 3600
    assert settings.max_body_bytes == 1024 * 1024
    assert len(settings.jwt_secret) >= MIN_SECRET_BYTES
    assert settings.database_label == f"embedded PostgreSQL in {tmp_path / 'postgres'}"


def test_environment_values_are_parsed_and_typed(tmp_path: Path) -> None:
    settings = load(
        tmp_path, port=" 9001 ", migrate_on_start="off", log_level="debug", env="TEST",
        shutdown_grace_s="2.5", database_url=DB_URL, redis_url="redis://localhost:6379/0",
    )
    assert settings.port == 9001
    assert settings.migrate_on_start is False
    assert settings.log_level == "DEBUG"
    assert settings.env == "test"
    assert settings.shutdown_grace_s == 2.5
    assert settings.database_url == DB_URL
    assert settings.redis_url == "redis://localhost:6379/0"


def test_empty_database_url_means_embedded(tmp_path: Path) -> None:
    assert load(tmp_path, database_url="").database_url is None


@pytest.mark.parametrize("raw, expected", [
    ("1", True), ("true", True), ("YES", True), ("On", True),
    ("0", False), ("false", False), ("no", False), ("OFF", False),
])
def test_booleans(tmp_path: Path, raw: str, expected: bool) -> None:
    assert load(tmp_path, migrate_on_start=raw).migrate_on_start is expected


# --- parse errors name the variable ----------------------------------------------------

#: One invalid value for every setting that COLLAB_* variables can set.
INVALID = {
    "env": "staging",
    "host": "",
    "port": "eighty",
    "database_url": "mysql://u:pw@host/db",
    "redis_url": "http://localhost:6379",
    "data_dir": "",
    "jwt_issuer": "",
    "jwt_audience": "",
    "access_token_ttl_s": "10",
    "refresh_token_ttl_s": "1.5",
    "max_body_bytes": "10",
    "body_timeout_s": "soon",
    "response_timeout_s": "0",
    "keep_alive_timeout_s": "-1",
    "shutdown_grace_s": "601",
    "db_pool_min": "0",
    "db_pool_max": "many",
    "db_connect_timeout_s": "0.1",
    "db_statement_timeout_s": "x",
    "migrate_on_start": "maybe",
    "log_level": "verbose",
    "log_format": "xml",
    "access_log": "some",
    "password_hashing": "md5",
    "password_hash_concurrency": "0",
    "registration_role": "superuser",
    "auth_cache_ttl_s": "-5",
    "auth_cache_entries": "-1",
    "actor_inbox_size": "0",
    "actor_max_batch": "none",
    "committers": "0",
    "gc_sweep_interval_s": "-1",
    "actor_ask_timeout_s": "0",
    "actor_idle_timeout_s": "-1",
    "node_lease_ttl_s": "0.5",
    "workers": "-1",
    "login_per_ip_per_minute": "0",
    "login_per_account_per_minute": "-1",
    "register_per_ip_per_hour": "many",
    "ws_allowed_origins": "ftp://x",
    "ws_max_message_bytes": "1",
    "ws_messages_per_s": "0",
    "ws_message_burst": "0",
    "ws_max_sockets_per_user": "0",
    "ws_auth_timeout_s": "0",
    "ws_idle_timeout_s": "0",
    "ws_max_queued_events": "1",
    "ws_max_catchup_events": "0",
    "ws_max_inflight_ops": "0",
    "rest_per_user_per_minute": "0",
    "rest_user_burst": "lots",
    "rest_per_ip_per_minute": "-3",
    "rest_ip_burst": "0",
    "trusted_proxies": "10.0.0.0/8, not-a-network",
    "cors_origins": "app.example.com",
    "gzip_min_bytes": "-1",
    "request_timeout_s": "0",
    "shutdown_drain_s": "-1",
    "metrics_port": "70000",
    "metrics_host": "",
    "metrics_token": "short",
    "max_upload_bytes": "0",
    "attachment_transfer_timeout_s": "0",
    "attachment_gc_grace_s": "-1",
    "attachment_sweep_interval_s": "soon",
}


def test_invalid_table_covers_every_setting() -> None:
    settable = {f.name for f in dataclasses.fields(Settings)} - {"jwt_secret"}
    assert set(INVALID) == settable


@pytest.mark.parametrize("name", sorted(INVALID))
def test_every_parse_error_names_the_variable(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, **{name: INVALID[name]})
    assert env_var(name) in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("name, raw", [
    ("port", "70000"), ("port", "-1"), ("port", "80.5"), ("migrate_on_start", "2"),
    ("log_level", "TRACE"), ("database_url", "not a url"), ("database_url", "postgresql+asyncpg://h/db"),
])
def test_more_parse_errors(tmp_path: Path, name: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=env_var(name)):
        load(tmp_path, **{name: raw})


def test_bad_url_error_does_not_echo_the_password(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="COLLAB_DATABASE_URL") as caught:
        load(tmp_path, database_url=f"mysql://collab:{DB_PASSWORD}@h/db")
    assert DB_PASSWORD not in str(caught.value)


def test_pool_min_above_max_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, db_pool_min="5", db_pool_max="2")
    assert "COLLAB_DB_POOL_MIN" in str(caught.value)
    assert "COLLAB_DB_POOL_MAX" in str(caught.value)
    settings = load(tmp_path, db_pool_min="5", db_pool_max="5")
    assert (settings.db_pool_min, settings.db_pool_max) == (5, 5)


def test_bad_cli_override_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--port"):
        load(tmp_path, overrides={"port": "http"})
    with pytest.raises(ConfigError, match="--db-pool-max"):
        load(tmp_path, overrides={"db_pool_max": 0})


def test_unknown_cli_override_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no_such_setting"):
        load(tmp_path, overrides={"no_such_setting": "1"})


# --- CLI overrides win -------------------------------------------------------------------

def test_cli_overrides_win_over_environment(tmp_path: Path) -> None:
    other = tmp_path / "other"
    settings = load(
        tmp_path,
        overrides={"port": "9100", "migrate_on_start": False, "log_level": "warning", "data_dir": other, "host": None},
        port="9000", migrate_on_start="true", log_level="error", host="0.0.0.0",
    )
    assert settings.port == 9100
    assert settings.migrate_on_start is False
    assert settings.log_level == "WARNING"
    assert settings.data_dir == other
    assert settings.host == "0.0.0.0", "a None override leaves the environment's value"
    assert (other / "jwt_secret").exists(), "the secret is kept in the overriding data dir"
    assert not (tmp_path / "jwt_secret").exists()


# --- production --------------------------------------------------------------------------

def test_production_with_everything_given(tmp_path: Path) -> None:
    settings = load(tmp_path, **production())
    assert settings.production is True
    assert settings.jwt_secret == GOOD_SECRET.encode()
    assert settings.log_format == "json"
    assert not (tmp_path / "jwt_secret").exists(), "production never invents a secret"


def test_production_log_format_can_still_be_chosen(tmp_path: Path) -> None:
    assert load(tmp_path, **production(log_format="text")).log_format == "text"


def test_production_requires_a_jwt_secret(tmp_path: Path) -> None:
    env = production()
    del env["jwt_secret"]
    with pytest.raises(ConfigError, match="COLLAB_JWT_SECRET"):
        load(tmp_path, **env)
    with pytest.raises(ConfigError, match="COLLAB_JWT_SECRET"):
        load(tmp_path, **env, jwt_secret="")
    assert not (tmp_path / "jwt_secret").exists()


def test_production_refuses_a_secret_shorter_than_32_bytes(tmp_path: Path) -> None:
    short = "s" * (MIN_SECRET_BYTES - 1)
    with pytest.raises(ConfigError, match="COLLAB_JWT_SECRET") as caught:
        load(tmp_path, **production(jwt_secret=short))
    assert short not in str(caught.value)


def test_secret_length_is_counted_in_bytes(tmp_path: Path) -> None:
    secret = "é" * (MIN_SECRET_BYTES // 2)  # 16 characters, 32 bytes in UTF-8
    assert load(tmp_path, **production(jwt_secret=secret)).jwt_secret == secret.encode("utf-8")


def test_production_requires_a_database_url(tmp_path: Path) -> None:
    env = production()
    del env["database_url"]
    with pytest.raises(ConfigError, match="COLLAB_DATABASE_URL"):
        load(tmp_path, **env)


def test_production_refuses_fast_hashing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="COLLAB_PASSWORD_HASHING"):
        load(tmp_path, **production(password_hashing="argon2id-fast-insecure"))
    assert load(tmp_path, password_hashing="argon2id-fast-insecure").password_hashing == "argon2id-fast-insecure"


# --- the development secret -------------------------------------------------------------

def test_development_secret_is_created_private_and_kept(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = load(data_dir)
    path = data_dir / "jwt_secret"
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first.jwt_secret) >= MIN_SECRET_BYTES
    assert path.read_bytes().strip() == first.jwt_secret
    second = load(data_dir)
    assert second.jwt_secret == first.jwt_secret


def test_development_secrets_differ_between_data_dirs(tmp_path: Path) -> None:
    assert load(tmp_path / "a").jwt_secret != load(tmp_path / "b").jwt_secret


def test_given_secret_wins_over_the_file(tmp_path: Path) -> None:
    load(tmp_path)
    assert load(tmp_path, jwt_secret=GOOD_SECRET).jwt_secret == GOOD_SECRET.encode()


def test_development_refuses_a_short_given_secret(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="COLLAB_JWT_SECRET"):
        load(tmp_path, jwt_secret="short")
    assert not (tmp_path / "jwt_secret").exists()


def test_development_refuses_a_short_secret_file(tmp_path: Path) -> None:
    path = tmp_path / "jwt_secret"
    path.write_text("too-short")
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError, match="jwt_secret") as caught:
        load(tmp_path)
    assert "too-short" not in str(caught.value)


def test_unusable_data_dir_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="jwt secret|JWT secret"):
        load(blocker / "data")


# --- secrets stay out of repr and logs -----------------------------------------------------

def test_repr_hides_the_secret_and_the_database_password(tmp_path: Path) -> None:
    settings = load(tmp_path, database_url=DB_URL, redis_url="redis://:redis-pw-123@cache:6379/0",
                    jwt_secret=GOOD_SECRET)
    for text in (repr(settings), str(settings)):
        assert GOOD_SECRET not in text
        assert DB_PASSWORD not in text
        assert "redis-pw-123" not in text
    assert DB_PASSWORD not in settings.database_label
    assert settings.database_label == "postgresql://collab:***@db.internal:5432/collab"


def test_development_secret_stays_out_of_repr(tmp_path: Path) -> None:
    settings = load(tmp_path)
    assert settings.jwt_secret.decode() not in repr(settings)


@pytest.mark.parametrize("url, expected", [
    ("postgresql://alice:hunter2@db:5432/collab", "postgresql://alice:***@db:5432/collab"),
    ("postgresql://alice:p%40ss@db/collab", "postgresql://alice:***@db/collab"),
    ("postgresql://alice:p@ss@db/collab", "postgresql://alice:***@db/collab"),
    ("postgresql://:hunter2@db/collab", "postgresql://:***@db/collab"),
    ("redis://:hunter2@cache:6379/0", "redis://:***@cache:6379/0"),
    ("postgresql://alice@db/collab", "postgresql://alice@db/collab"),
    ("postgresql://db/collab", "postgresql://db/collab"),
])
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_url_hides_a_password_given_as_query_parameter() -> None:
    # libpq and asyncpg both accept the password as a URI query parameter.
    redacted = redact_url("postgresql://alice@db/collab?password=hunter2&sslmode=require")
    assert "hunter2" not in redacted
    assert "sslmode=require" in redacted
