"""The service commands of ``ember``: serve, worker, db upgrade, token.

``ember.cli`` calls :func:`add_subcommands` to add them to its parser; each
command's handler takes the parsed arguments and returns an exit status.
``python -m service.cli COMMAND`` runs them without the rest of the CLI (the
embedded server starts its worker that way).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _settings(args: argparse.Namespace) -> Any:
    """Return the settings from the environment, with the command-line options on top."""
    from pydantic import ValidationError

    from service.config import Settings

    overrides = {
        name: getattr(args, name)
        for name in ("host", "port", "data_dir", "database_url", "broker_url")
        if getattr(args, name, None) is not None
    }
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise SystemExit(f"error: invalid settings:\n{error}") from None


def _log_info() -> None:
    """Log INFO messages of long-running services to stderr."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    root.setLevel(logging.INFO)


def command_serve(args: argparse.Namespace) -> int:
    """Run ``ember serve``."""
    from service.embedded import serve

    _log_info()
    return serve(_settings(args), with_worker=not args.no_worker)


def command_worker(args: argparse.Namespace) -> int:
    """Run a Celery worker on the given queues until it is stopped."""
    from service.config import QUEUES
    from service.db.session import upgrade_database
    from worker.celery_app import make_celery

    _log_info()
    queues = [name.strip() for name in args.queues.split(",") if name.strip()]
    unknown = [name for name in queues if name not in QUEUES]
    if not queues or unknown:
        print(f"error: --queues must list queues among {', '.join(QUEUES)}, got {args.queues!r}", file=sys.stderr)
        return EXIT_USAGE
    if args.concurrency < 1:
        print(f"error: --concurrency must be at least 1, got {args.concurrency}", file=sys.stderr)
        return EXIT_USAGE
    settings = _settings(args)
    if args.migrate:
        upgrade_database(settings.database_url)
    app = make_celery(settings)
    argv = [
        "worker",
        f"--queues={','.join(queues)}",
        f"--concurrency={args.concurrency}",
        f"--pool={args.pool}",
        f"--loglevel={args.loglevel}",
        "--without-gossip",
        "--without-mingle",
    ]
    if args.hostname:
        argv.append(f"--hostname={args.hostname}")
    logger.info("starting a worker on queues %s (pool %s, concurrency %d)", ",".join(queues), args.pool, args.concurrency)
    app.worker_main(argv)
    return EXIT_OK


def command_db_upgrade(args: argparse.Namespace) -> int:
    """Apply the database migrations."""
    from service.db.session import upgrade_database

    settings = _settings(args)
    upgrade_database(settings.database_url, args.revision)
    print(f"database at revision {args.revision}")
    return EXIT_OK


def command_token_create(args: argparse.Namespace) -> int:
    """Create an API token and print it once."""
    from service.auth import create_token
    from service.db.session import make_engine, make_session_factory, transaction, upgrade_database

    settings = _settings(args)
    upgrade_database(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        with transaction(make_session_factory(engine)) as session:
            created = create_token(session, user_name=args.user, is_admin=args.admin)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        engine.dispose()
    print(created.token)
    role = "admin" if created.is_admin else "user"
    print(f"token for {role} {created.user!r} created; it is shown only now, so store it safely", file=sys.stderr)
    if not settings.auth_enabled:
        print("note: EMBER_AUTH_ENABLED is false, so the server ignores tokens until it is set to true", file=sys.stderr)
    return EXIT_OK


def command_token_list(args: argparse.Namespace) -> int:
    """List tokens: prefix, user, role, created, last used, revoked."""
    from service.auth import list_tokens
    from service.db.session import make_engine, make_session_factory, upgrade_database

    settings = _settings(args)
    upgrade_database(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine)() as session:
            rows = [
                (
                    token.prefix + "...",
                    token.user.name,
                    "admin" if token.user.is_admin else "user",
                    token.created_at.strftime("%Y-%m-%d %H:%M"),
                    token.revoked_at.strftime("%Y-%m-%d %H:%M") if token.revoked_at else "-",
                )
                for token in list_tokens(session)
            ]
    finally:
        engine.dispose()
    print(f"{'TOKEN':<18} {'USER':<20} {'ROLE':<6} {'CREATED':<17} REVOKED")
    for row in rows:
        print(f"{row[0]:<18} {row[1]:<20} {row[2]:<6} {row[3]:<17} {row[4]}")
    return EXIT_OK


def command_token_revoke(args: argparse.Namespace) -> int:
    """Revoke the token with the given prefix (as shown by ``token list``) or the whole token."""
    from service.auth import revoke_token
    from service.db.session import make_engine, make_session_factory, transaction, upgrade_database

    settings = _settings(args)
    upgrade_database(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        with transaction(make_session_factory(engine)) as session:
            count = revoke_token(session, args.token)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        engine.dispose()
    if count == 0:
        print(f"error: no active token starts with {args.token!r}; see `ember token list`", file=sys.stderr)
        return EXIT_FAILED
    print(f"revoked {count} token(s)")
    return EXIT_OK


def _add_settings_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", dest="data_dir", help="folder of the embedded database and broker (EMBER_DATA_DIR, default ./ember-data)")
    parser.add_argument("--database-url", dest="database_url", help="SQLAlchemy URL of the job database (EMBER_DATABASE_URL)")


def add_subcommands(subparsers: Any) -> None:
    """Add ``serve``, ``worker``, ``db upgrade`` and ``token create|list|revoke`` to an argparse subparser set."""
    serve = subparsers.add_parser("serve", help="run the job service: the REST API plus one worker")
    serve.add_argument("--host", help="address to bind (EMBER_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="TCP port (EMBER_PORT, default 8000)")
    serve.add_argument("--broker-url", dest="broker_url", help="Celery broker URL (EMBER_BROKER_URL)")
    serve.add_argument("--no-worker", action="store_true", help="run the API only; workers run separately (`ember worker`)")
    _add_settings_options(serve)
    serve.set_defaults(handler=command_serve)

    worker = subparsers.add_parser("worker", help="run a Celery worker that executes jobs")
    worker.add_argument("--queues", default="cpu", help="comma-separated queues to consume: cpu, gpu (default cpu)")
    worker.add_argument("--concurrency", type=int, default=1, help="jobs run at once (default 1)")
    worker.add_argument(
        "--pool",
        choices=["solo", "prefork", "threads"],
        default="solo",
        help="Celery pool (default solo: the job runs in the worker process, which stops it cleanly on shutdown)",
    )
    worker.add_argument("--hostname", help="Celery node name, for example gpu0@%%h")
    worker.add_argument("--loglevel", default="INFO", help="log level (default INFO)")
    worker.add_argument("--migrate", action="store_true", help="apply database migrations before starting")
    worker.add_argument("--broker-url", dest="broker_url", help="Celery broker URL (EMBER_BROKER_URL)")
    _add_settings_options(worker)
    worker.set_defaults(handler=command_worker)

    database = subparsers.add_parser("db", help="database administration")
    database_commands = database.add_subparsers(dest="db_command", metavar="COMMAND")
    upgrade = database_commands.add_parser("upgrade", help="apply the schema migrations")
    upgrade.add_argument("--revision", default="head", help="target revision (default head)")
    _add_settings_options(upgrade)
    upgrade.set_defaults(handler=command_db_upgrade)

    token = subparsers.add_parser("token", help="manage API tokens")
    token_commands = token.add_subparsers(dest="token_command", metavar="COMMAND")
    create = token_commands.add_parser("create", help="create a token and print it once")
    create.add_argument("--user", required=True, help="the user the token acts as (created if missing)")
    create.add_argument("--admin", action="store_true", help="make the user an admin (sees and cancels every job)")
    _add_settings_options(create)
    create.set_defaults(handler=command_token_create)
    listing = token_commands.add_parser("list", help="list tokens (prefixes only)")
    _add_settings_options(listing)
    listing.set_defaults(handler=command_token_list)
    revoke = token_commands.add_parser("revoke", help="revoke a token by its listed prefix or the whole token")
    revoke.add_argument("token", help="the prefix shown by `ember token list`, or the token")
    _add_settings_options(revoke)
    revoke.set_defaults(handler=command_token_revoke)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a service command without the rest of the ``ember`` CLI."""
    parser = argparse.ArgumentParser(prog="python -m service.cli")
    add_subcommands(parser.add_subparsers(dest="command", metavar="COMMAND"))
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return int(args.handler(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
