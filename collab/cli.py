"""The `collab` command: serve, migrate, user create, --version.

Exit status: 0 on success (also after a graceful SIGINT/SIGTERM stop), 1 when
something outside Collab failed (database unreachable, schema too new), 2 for
invalid configuration or usage. Failures print one line, never a traceback.
The JWT secret is read only from the environment (``COLLAB_JWT_SECRET``),
never from a flag, so it does not show up in process listings.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import sys
from functools import partial
from typing import Any, Awaitable, Callable, Sequence

import trio
import trio_asyncio

from collab import __version__
from collab.config import ConfigError, Settings, env_var, load_settings
from collab.errors import CollabError, ValidationFailed
from collab.logs import configure_logging
from collab.storage.embedded import EmbeddedDatabaseError
from collab.storage.migrations import SchemaError

log = logging.getLogger("collab.cli")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
#: Failures that get one line instead of a traceback (OSError: e.g. the port is taken).
_EXPECTED = (ConfigError, CollabError, SchemaError, EmbeddedDatabaseError, OSError)


def _add_common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("configuration (flags override COLLAB_* environment variables)")
    group.add_argument("--env", help=f"development, production or test [{env_var('env')}]")
    group.add_argument("--database-url",
                       help=f"postgresql://... ; embedded PostgreSQL when unset [{env_var('database_url')}]")
    group.add_argument("--redis-url", help=f"redis://... ; in-process when unset [{env_var('redis_url')}]")
    group.add_argument("--data-dir",
                       help=f"embedded database, dev JWT secret, uploads (default ./.collab) [{env_var('data_dir')}]")
    group.add_argument("--log-level", help=f"DEBUG, INFO, WARNING, ERROR [{env_var('log_level')}]")
    group.add_argument("--log-format", help=f"text or json (json in production) [{env_var('log_format')}]")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="collab",
        description="Collab: a realtime collaboration server for task management.",
        epilog="Every setting is also a COLLAB_* environment variable; see docs/operations.md.",
    )
    parser.add_argument("--version", action="version", version=f"collab {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the server (REST + WebSocket)",
                                description="Run the server until SIGINT/SIGTERM; migrates the database first.")
    serve.add_argument("--host", help=f"interface to listen on (default 127.0.0.1) [{env_var('host')}]")
    serve.add_argument("--port", help=f"port to listen on (default 8000; 0 = any free port) [{env_var('port')}]")
    serve.add_argument("--no-migrate", dest="migrate_on_start", action="store_const", const=False,
                       help="do not apply migrations at start; refuse to start on a pending schema "
                            f"[{env_var('migrate_on_start')}]")
    serve.add_argument("--shutdown-grace-s",
                       help=f"seconds in-flight requests get at shutdown (default 10) [{env_var('shutdown_grace_s')}]")
    serve.add_argument("--max-body-bytes",
                       help=f"largest JSON body accepted (default 1 MiB) [{env_var('max_body_bytes')}]")
    serve.add_argument("--workers", type=int, default=None,
                       help="worker processes (nodes) on one port; default: every core when COLLAB_REDIS_URL and "
                            "COLLAB_DATABASE_URL are set, else 1")
    serve.add_argument("--listen-fd", type=int, default=None, help=argparse.SUPPRESS)
    serve.add_argument("--demo", action="store_true",
                       help="first seed a demo workspace (users alice and bob, a project, tasks; idempotent) "
                            "and print how to sign in to the board; refused in production")
    _add_common(serve)

    migrate = commands.add_parser("migrate", help="apply pending database migrations and exit",
                                  description="Apply pending migrations "
                                              "(serialized across processes by an advisory lock).")
    _add_common(migrate)

    user = commands.add_parser("user", help="manage users", description="Manage users.")
    user_commands = user.add_subparsers(dest="user_command", metavar="SUBCOMMAND")
    create = user_commands.add_parser(
        "create", help="create a user (the way to make the first admin)",
        description="Create a user. The password is read from a prompt, "
                    "or from the first line of stdin when it is not a terminal.",
    )
    create.add_argument("--email", required=True)
    create.add_argument("--username", required=True)
    create.add_argument("--first-name")
    create.add_argument("--last-name")
    create.add_argument("--admin", action="store_true", help="give the user the global admin role")
    _add_common(create)
    return parser


_SETTING_FLAGS = (
    "env", "host", "port", "database_url", "redis_url", "data_dir", "log_level", "log_format",
    "migrate_on_start", "shutdown_grace_s", "max_body_bytes",
)


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {name: getattr(args, name, None) for name in _SETTING_FLAGS}
    return load_settings(overrides=overrides)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if args.command == "user" and args.user_command is None:
        try:
            parser.parse_args(["user", "--help"])
        except SystemExit:
            pass
        return EXIT_USAGE
    try:
        settings = _settings(args)
    except ConfigError as exc:
        print(f"collab: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE

    if args.command == "user":
        try:
            password = _read_password()
        except (EOFError, KeyboardInterrupt):
            print("collab: no password given", file=sys.stderr)
            return EXIT_USAGE
        action: Callable[[], Awaitable[Any]] = partial(_create_user, settings, args, password)
    elif args.command == "migrate":
        action = partial(_migrate, settings)
    else:
        from collab.server import serve_until_signalled
        from collab.workers import check_workers, default_workers, run_workers

        workers = args.workers if args.workers is not None else default_workers(settings)
        try:
            check_workers(settings, workers)
        except ConfigError as exc:
            print(f"collab: configuration error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if workers > 1 and args.listen_fd is None and not args.demo:
            with configure_logging(settings.log_level, settings.log_format):
                status = _run(lambda: _migrate(settings)) if settings.migrate_on_start else EXIT_OK
                if status != EXIT_OK:
                    return status
                overrides = {name: getattr(args, name, None) for name in _SETTING_FLAGS}
                return run_workers(settings, workers, overrides)
        action = partial(serve_until_signalled, settings, args.listen_fd)
        if args.demo:
            from collab.demo import serve_demo

            action = partial(serve_demo, settings)

    with configure_logging(settings.log_level, settings.log_format):
        return _run(action)


def _run(action: Callable[[], Awaitable[Any]]) -> int:
    try:
        trio.run(action)
    except KeyboardInterrupt:
        return EXIT_OK
    except BaseException as exc:  # noqa: BLE001 - the one place that turns failures into exit codes
        expected = _find_expected(exc)
        if expected is None:
            log.critical("collab stopped on an unexpected error", exc_info=exc)
            return EXIT_FAILURE
        message = _describe(expected)
        log.error("%s", message)
        print(f"collab: {message}", file=sys.stderr)
        return EXIT_USAGE if isinstance(expected, ConfigError) else EXIT_FAILURE
    return EXIT_OK


def _describe(error: BaseException) -> str:
    """One line; for invalid input, each field's reason (never the value)."""
    if isinstance(error, ValidationFailed):
        return "; ".join(f"{'.'.join(map(str, e.loc)) or 'input'}: {e.message}" for e in error.errors)
    return str(error)


def _find_expected(exc: BaseException) -> BaseException | None:
    if isinstance(exc, _EXPECTED):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find_expected(inner)
            if found is not None:
                return found
    return None


def _read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Repeat password: ") != first:
            raise ConfigError("the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


async def _migrate(settings: Settings) -> None:
    from collab.server import open_storage
    from collab.storage.migrations import migrate

    async with trio_asyncio.open_loop():
        async with open_storage(settings.replace(migrate_on_start=False), check=False) as db:
            report = await migrate(db)
    if report.applied:
        print(f"applied migrations {', '.join(f'{v:04d}' for v in report.applied)}; schema at version {report.current}")
    else:
        print(f"schema is up to date at version {report.current}")


async def _create_user(settings: Settings, args: argparse.Namespace, password: str) -> None:
    from collab.server import open_services

    async with trio_asyncio.open_loop():
        async with open_services(settings) as services:
            user = await services.auth.register(
                email=args.email, username=args.username, password=password,
                first_name=args.first_name, last_name=args.last_name,
                roles=("admin",) if args.admin else None,
            )
    print(f"created user {user.username} <{user.email}> id={user.id} roles={','.join(user.roles)}")
