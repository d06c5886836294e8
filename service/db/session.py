"""Engines, sessions and schema migrations.

SQLite connections are switched to WAL mode (readers do not block the writer)
with a busy timeout, so the API and a worker process can share one file.
PostgreSQL uses the same code with its defaults.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

logger = logging.getLogger(__name__)

#: How long a SQLite connection waits for another writer, in ms.
SQLITE_BUSY_TIMEOUT_MS = 30_000

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_engine(database_url: str) -> Engine:
    """Create an engine for ``database_url``, with WAL mode and a busy timeout on SQLite.

    Args:
        database_url: a SQLAlchemy URL such as ``sqlite:///ember-data/ember.sqlite``
            or ``postgresql+psycopg://user@host/ember``.

    Returns:
        The engine. For a SQLite file the parent folder is created.
    """
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        )
        event.listen(engine, "connect", _set_sqlite_pragmas)
        return engine
    if url.get_backend_name() == "postgresql" and url.get_driver_name() in ("", "psycopg2"):
        # psycopg 3 is the driver the service depends on.
        url = url.set(drivername="postgresql+psycopg")
    return create_engine(url, pool_pre_ping=True)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Return a session factory whose objects stay readable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """Open a session, commit it when the block ends, roll back on an error."""
    with factory() as session, session.begin():
        yield session


def upgrade_database(database_url: str, revision: str = "head") -> None:
    """Apply the Alembic migrations to ``database_url`` up to ``revision``.

    Args:
        database_url: the database to migrate.
        revision: the target revision, ``head`` by default.
    """
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Alembic's config interpolates %-signs, which may occur in passwords.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    logger.info("migrating database %s to %s", make_url(database_url).render_as_string(hide_password=True), revision)
    command.upgrade(config, revision)
