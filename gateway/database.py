"""The database under the store: SQLite (a file in the data folder, the default) or PostgreSQL
(HEYGEM_DATABASE_URL), one schema kept by Alembic's migrations (gateway/migrations).

Writes are serialized, one transaction at a time: SQLite's BEGIN IMMEDIATE, and on PostgreSQL a
transaction-scoped advisory lock taken first. Every state change then reads a settled state and
no two can deadlock, on either database; the writes are a few rows each (benchmarks/scale.py
measures how many a second this allows)."""
from __future__ import annotations

import contextlib
import fcntl
import os
import threading

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

# PostgreSQL advisory-lock keys (any constants): the store's writer, migrations, the dispatcher.
WRITE_LOCK, MIGRATION_LOCK, DISPATCH_LOCK = 0x4865_7947, 0x4865_7948, 0x4865_7949


def url_from(settings) -> str:
    """HEYGEM_DATABASE_URL, or the SQLite file in the data folder."""
    if not settings.database_url:
        return "sqlite:///" + settings.database
    url = sa.engine.make_url(settings.database_url)
    if url.drivername in ("postgresql", "postgres"):  # psycopg 3 is the driver that ships
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


class Transaction:
    """Statements of one write transaction, with named parameters (`:name`)."""

    def __init__(self, connection: sa.Connection):
        self.connection = connection
        self.queued_delivery = False  # a callback was put in the outbox: the deliverer is woken after commit

    def run(self, sql: str, **params) -> sa.CursorResult:
        return self.connection.execute(sa.text(sql), params)

    def run_many(self, sql: str, rows: list[dict]) -> None:
        self.connection.execute(sa.text(sql), rows)

    def rows(self, sql: str, **params) -> list[sa.RowMapping]:
        return list(self.run(sql, **params).mappings())

    def one(self, sql: str, **params) -> sa.RowMapping | None:
        return self.run(sql, **params).mappings().first()

    def value(self, sql: str, **params):
        return self.run(sql, **params).scalar()


class Database:
    def __init__(self, url: str):
        self.url = sa.engine.make_url(url)
        self.sqlite = self.url.get_backend_name() == "sqlite"
        if self.sqlite:
            # As many pooled connections as threads that use them (HTTP threads, workers, loops):
            # no connection opened and closed per use.
            base = sa.create_engine(self.url, connect_args={"timeout": 30, "check_same_thread": False},
                                    poolclass=sa.pool.QueuePool, pool_size=32, max_overflow=-1)
            sa.event.listen(base, "connect", _sqlite_pragmas)
        else:
            base = sa.create_engine(self.url, pool_size=5, max_overflow=20, pool_pre_ping=True, pool_recycle=1800)
        self.base = base
        # Transactions are begun and ended by the statements below, not by the driver.
        self.engine = base.execution_options(isolation_level="AUTOCOMMIT")
        self.write_lock = threading.Lock()  # this process's writers queue here, not in busy retries
        # The database's clock in epoch seconds: heartbeats written by one machine are judged by
        # another, so both read the same clock.
        self.now = ("(julianday('now') - 2440587.5) * 86400.0" if self.sqlite
                    else "extract(epoch from clock_timestamp())")

    # reads --------------------------------------------------------------------------------------

    def rows(self, sql: str, **params) -> list[sa.RowMapping]:
        with self.engine.connect() as connection:
            return Transaction(connection).rows(sql, **params)

    def one(self, sql: str, **params) -> sa.RowMapping | None:
        with self.engine.connect() as connection:
            return Transaction(connection).one(sql, **params)

    def value(self, sql: str, **params):
        with self.engine.connect() as connection:
            return Transaction(connection).value(sql, **params)

    # writes -------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self):
        with self.write_lock, self.engine.connect() as connection:
            try:
                if self.sqlite:
                    connection.exec_driver_sql("BEGIN IMMEDIATE")
                else:
                    connection.exec_driver_sql("BEGIN")
                    connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({WRITE_LOCK})")
                yield Transaction(connection)
                connection.exec_driver_sql("COMMIT")
            except BaseException:
                with contextlib.suppress(sa.exc.DBAPIError):  # a lost connection: the original error tells
                    connection.exec_driver_sql("ROLLBACK")
                raise

    # schema -------------------------------------------------------------------------------------

    def migrate(self) -> None:
        """Bring the schema to the newest revision (processes starting together apply it once)."""
        config = Config()
        config.set_main_option("script_location", "gateway:migrations")
        with self._migration_lock(), self.base.connect() as connection:
            config.attributes["connection"] = connection
            legacy = self._legacy_revision(connection)
            if legacy:
                command.stamp(config, legacy)
            command.upgrade(config, "head")
            connection.commit()

    @contextlib.contextmanager
    def _migration_lock(self):
        if self.sqlite:
            with open(self.url.database + ".migrating", "a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                yield
            return
        with self.base.connect() as connection:
            connection.exec_driver_sql(f"SELECT pg_advisory_lock({MIGRATION_LOCK})")
            connection.commit()
            try:
                yield
            finally:
                connection.exec_driver_sql(f"SELECT pg_advisory_unlock({MIGRATION_LOCK})")
                connection.commit()

    def _legacy_revision(self, connection: sa.Connection) -> str | None:
        """A SQLite file from before Alembic counted its migrations in PRAGMA user_version; the
        first three revisions are those same steps."""
        if not self.sqlite or not os.path.exists(self.url.database):
            return None
        tables = sa.inspect(connection).get_table_names()
        if "alembic_version" in tables or "jobs" not in tables:
            return None
        version = connection.exec_driver_sql("PRAGMA user_version").scalar()
        return f"{version:04d}" if version else None

    def leader(self, key: int) -> "Leadership":
        return Leadership(self, key)

    def close(self) -> None:
        self.base.dispose()


class Leadership:
    """One process of many does a duty (on PostgreSQL: whoever holds a session advisory lock, on
    a connection kept for it; it passes on when that process or its connection dies). On SQLite
    there is one process: it leads."""

    def __init__(self, database: Database, key: int):
        self.database, self.key = database, key
        self.connection: sa.Connection | None = None

    def held(self) -> bool:
        if self.database.sqlite:
            return True
        try:
            if self.connection is None:
                connection = self.database.engine.connect()
                if not connection.exec_driver_sql(f"SELECT pg_try_advisory_lock({self.key})").scalar():
                    connection.close()
                    return False
                self.connection = connection
            else:
                self.connection.exec_driver_sql("SELECT 1")  # the session, and so the lock, is alive
            return True
        except sa.exc.DBAPIError:
            self.release()
            return False

    def release(self) -> None:
        """Give the duty up. The connection is closed, not pooled: a pooled session would keep
        the lock."""
        if self.connection is not None:
            with contextlib.suppress(sa.exc.DBAPIError):
                self.connection.invalidate()
                self.connection.close()
            self.connection = None


def _sqlite_pragmas(connection, _record) -> None:
    cursor = connection.cursor()
    for pragma in ("journal_mode=WAL", "foreign_keys=ON", "synchronous=NORMAL"):
        cursor.execute("PRAGMA " + pragma)
    cursor.close()
