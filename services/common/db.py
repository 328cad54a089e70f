"""PostgreSQL plumbing shared by identity, goals and ledger.

- `Database`: one async engine per process (created in `build`, disposed on
  shutdown) and `transaction()`, a session scope that commits on success and
  rolls back on any exception (SQLAlchemy's own `sessionmaker.begin()`).
- Migrations: each SQL service has an Alembic folder `services/<svc>/migrations`
  whose env.py calls `run_alembic_env`; `upgrade` applies them, and
  `Database.check_ready` refuses to serve on a database that is unreachable or
  not at the code's migration head.
- `for_update`: the one way an ORM query locks rows (the ledger's posting
  locks with plain SQL, which has no identity map). It also refreshes rows the
  session already holds, since a lock protects only what is read after it.
- `ensure_database` creates a service's database on the embedded server (a
  production server gets its databases from its deployment).
"""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from psycopg import sql
from sqlalchemy import MetaData, Select, engine_from_config, make_url, pool
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from services.common.config import StartupError

SelectT = TypeVar("SelectT", bound=Select[Any])

SERVICES_DIR = Path(__file__).resolve().parents[1]
CONNECT_TIMEOUT_S = 5


def psycopg_dsn(url: str) -> str:
    """A SQLAlchemy URL as a plain libpq DSN, for psycopg connections outside the pool."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def describe(url: str) -> str:
    """The URL without its password, for messages."""
    return make_url(url).render_as_string(hide_password=True)


class Database:
    def __init__(self, service: str, url: str, *, pool_size: int = 10) -> None:
        self.service = service
        self.url = url
        self.engine: AsyncEngine = create_async_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size,
            # No pre-ping: it costs a round trip on every checkout. A connection
            # the server dropped fails its call (UNAVAILABLE, retried by
            # clients) and the pool replaces it.
            connect_args={"connect_timeout": CONNECT_TIMEOUT_S},
        )
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    def transaction(self) -> AbstractAsyncContextManager[AsyncSession]:
        """A session in one transaction: committed on success, rolled back on error."""
        return self.sessions.begin()

    async def check_ready(self) -> None:
        """Raise StartupError unless the database answers and is migrated to head."""
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S * 2), self.engine.connect() as connection:
                current = await connection.run_sync(
                    lambda sync: MigrationContext.configure(sync).get_current_revision()
                )
        except (OSError, TimeoutError, DBAPIError) as exc:
            reason = " ".join(str(exc.orig if isinstance(exc, DBAPIError) else exc).split())
            raise StartupError(f"{self.service}: cannot reach the database at {describe(self.url)}: {reason}") from None
        head = ScriptDirectory.from_config(alembic_config(self.service, self.url)).get_current_head()
        if current != head:
            raise StartupError(
                f"{self.service}: database {describe(self.url)} is at migration {current}, "
                f"the code needs {head}: run `gofund migrate`"
            )

    async def dispose(self) -> None:
        await self.engine.dispose()


def for_update(query: SelectT, *, skip_locked: bool = False) -> SelectT:
    """`query` as `SELECT ... FOR UPDATE`, returning the rows as the lock found them.

    SQLAlchemy's identity map hands back the object a session already loaded
    without refreshing it from the locked row, so a row read, then locked, in
    one session would be the stale copy from before the lock (two voters each
    saw the other's tally missing). `populate_existing` overwrites it with the
    row as read under the lock. Every lock in the SQL services goes through
    here; a unit test keeps it that way.
    """
    return query.with_for_update(skip_locked=skip_locked).execution_options(populate_existing=True)


def alembic_config(service: str, url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(SERVICES_DIR / service / "migrations"))
    config.attributes["url"] = url
    return config


def upgrade(service: str, url: str) -> None:
    """Apply the service's migrations up to head (blocking; run before serving)."""
    command.upgrade(alembic_config(service, url), "head")


def run_alembic_env(target_metadata: MetaData) -> None:
    """The body of every service's migrations/env.py (online mode only)."""
    from alembic import context

    url = context.config.attributes["url"]
    connectable = engine_from_config({"sqlalchemy.url": url}, prefix="sqlalchemy.", poolclass=pool.NullPool)
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()


def ensure_database(url: str) -> None:
    """Create the URL's database if it does not exist (embedded server only)."""
    parsed = make_url(url)
    admin = psycopg_dsn(parsed.set(database="postgres").render_as_string(hide_password=False))
    with psycopg.connect(admin, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as connection:
        exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (parsed.database,)).fetchone()
        if not exists:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(str(parsed.database))))
