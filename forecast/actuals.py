"""The actuals store: what was really sold, per (date, store, item), in a real database.

SQLite by default (a file beside the registry: nothing to run), PostgreSQL for a fleet of pods
sharing one store (``FORECAST_ACTUALS_URL=postgresql://...``, through psycopg).  One class for both:
they differ in how a connection is made and how a parameter is written, nothing else.

The schema is the project's: versioned migrations (``forecast/migrations/NNNN_name.sql``), applied
in order, each in its own transaction, recorded in ``schema_migrations``; :meth:`ActualsStore.migrate`
runs the ones a database lacks (every open does).  A load is one transaction: it stores every row or
none (a killed load leaves the store as before it), concurrent loads serialise on the database's
write lock (SQLite's, or an exclusive lock on the table in PostgreSQL, which readers pass) so none is
lost and each one's counts are exact, and loading the same rows twice changes nothing.  No Flask, no
LightGBM.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from forecast.errors import ForecastError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
SQLITE_FILE = "actuals.sqlite3"  # beside the registry directory
LOAD_PIECE_ROWS = 20_000  # rows handed to the driver at a time
BUSY_TIMEOUT_S = 30  # how long a load waits for another load's write lock before it fails
CACHE_KEPT_S = 7 * 86_400  # an accuracy result nobody computed again for a week is dropped


@dataclass(frozen=True)
class Actuals:
    """Actual sales as columns: ``days`` since 1970-01-01, ``stores``, ``items``, ``sales`` (int64 each)."""

    days: np.ndarray
    stores: np.ndarray
    items: np.ndarray
    sales: np.ndarray

    def __len__(self) -> int:
        return len(self.days)


class StoreUnavailable(ForecastError):
    """The store's database cannot be reached, or stayed locked past :data:`BUSY_TIMEOUT_S` (retry later)."""

    code = "actuals_store_unavailable"


@dataclass(frozen=True)
class Loaded:
    """What a load did: rows new to the store, rows whose sales it changed, rows it already held as they were."""

    added: int
    replaced: int
    unchanged: int


class Connection(Protocol):
    """The DB-API connection both drivers give (sqlite3, psycopg)."""

    def cursor(self) -> Any: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...

    def close(self) -> None: ...


def migrations() -> list[tuple[int, str, str]]:
    """Every migration of the project, in order: (number, file name, SQL)."""
    found = []
    for path in sorted(MIGRATIONS.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if match is None:
            raise ValueError(f"{path.name}: a migration is named NNNN_what.sql")
        found.append((int(match.group(1)), path.name, path.read_text()))
    numbers = [number for number, _, _ in found]
    if numbers != list(range(1, len(found) + 1)):
        raise ValueError(f"migrations are numbered 1, 2, 3... without gaps (found {numbers})")
    return found


class ActualsStore:
    """Actual sales in SQLite or PostgreSQL; one per process, used from one thread at a time per connection."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.postgres = url.startswith(("postgresql://", "postgres://"))
        self.mark = "%s" if self.postgres else "?"
        self.migrate()

    @classmethod
    def beside(cls, registry_dir: Path, url: str | None = None) -> ActualsStore:
        """The store ``url`` names, else the SQLite file beside ``registry_dir``."""
        return cls(url or f"sqlite:///{registry_dir.resolve().parent / SQLITE_FILE}")

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A new connection (closed after); :class:`StoreUnavailable` when the database cannot be reached or
        stays locked, whatever the statement."""
        unreachable: tuple[type[Exception], ...] = (sqlite3.OperationalError,)
        try:
            if self.postgres:
                import psycopg  # deferred: only a PostgreSQL store needs the driver

                unreachable += (psycopg.OperationalError,)
                connection: Connection = psycopg.connect(self.url, connect_timeout=BUSY_TIMEOUT_S)
            else:
                path = self.url.removeprefix("sqlite:///")
                connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
                connection.execute("PRAGMA journal_mode=WAL")  # readers never wait for a load
        except unreachable as exc:
            raise StoreUnavailable(f"the actuals store cannot be reached: {exc}") from exc
        try:
            yield connection
        except unreachable as exc:
            raise StoreUnavailable(f"the actuals store failed: {exc}") from exc
        finally:
            connection.close()

    def migrate(self) -> list[str]:
        """Apply the migrations the database lacks, each in its own transaction; their names."""
        applied = []
        with self.connection() as connection:
            cursor = connection.cursor()
            self._begin(cursor)
            cursor.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                           "name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)")  # fmt: skip
            self._end(connection, cursor, "COMMIT")
            for number, name, sql in migrations():
                self._begin(cursor, write=True)
                cursor.execute(f"SELECT 1 FROM schema_migrations WHERE version = {self.mark}", (number,))
                if cursor.fetchone() is None:
                    for statement in filter(str.strip, sql.split(";")):
                        cursor.execute(statement)
                    cursor.execute(f"INSERT INTO schema_migrations VALUES ({self.mark}, {self.mark}, {self.mark})",
                                   (number, name, time.time()))  # fmt: skip
                    applied.append(name)
                self._end(connection, cursor, "COMMIT")
        return applied

    def schema_version(self) -> int:
        with self.connection() as connection:
            cursor = connection.cursor()
            cursor.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            return int(cursor.fetchone()[0])

    def load(self, actuals: Actuals) -> Loaded:
        """Store ``actuals`` (keys unique within them), replacing the sales of keys already held, in one
        transaction: every row or none."""
        with self.connection() as connection:
            cursor = connection.cursor()
            try:
                self._begin(cursor, write=True)
                if self.postgres:  # loads one at a time, as SQLite's write lock makes them: exact counts
                    cursor.execute("LOCK TABLE actuals IN EXCLUSIVE MODE")  # readers go on
                cursor.execute("CREATE TEMP TABLE staging (day INTEGER, store INTEGER, item INTEGER, sales INTEGER)")
                values = ", ".join([self.mark] * 4)
                for start in range(0, len(actuals), LOAD_PIECE_ROWS):  # a piece's Python rows at a time
                    part = slice(start, start + LOAD_PIECE_ROWS)
                    columns = (actuals.days, actuals.stores, actuals.items, actuals.sales)
                    cursor.executemany(f"INSERT INTO staging VALUES ({values})",
                                       zip(*(column[part].tolist() for column in columns), strict=True))  # fmt: skip
                cursor.execute("SELECT COUNT(*), COALESCE(SUM(CASE WHEN a.sales = s.sales THEN 1 ELSE 0 END), 0) "
                               "FROM staging s JOIN actuals a ON a.day = s.day AND a.store = s.store AND "
                               "a.item = s.item")  # fmt: skip
                held, unchanged = (int(value) for value in cursor.fetchone())
                cursor.execute("INSERT INTO actuals_days SELECT DISTINCT s.day, 1 FROM staging s LEFT JOIN actuals a "
                               "ON a.day = s.day AND a.store = s.store AND a.item = s.item "
                               "WHERE a.sales IS NULL OR a.sales <> s.sales "
                               "ON CONFLICT (day) DO UPDATE SET changes = actuals_days.changes + 1")  # fmt: skip
                cursor.execute("INSERT INTO actuals SELECT day, store, item, sales FROM staging WHERE true "
                               "ON CONFLICT (day, store, item) DO UPDATE SET sales = excluded.sales "
                               "WHERE actuals.sales <> excluded.sales")  # fmt: skip
                cursor.execute("DROP TABLE staging")
                self._end(connection, cursor, "COMMIT")
            except BaseException:
                self._end(connection, cursor, "ROLLBACK")
                raise
        return Loaded(len(actuals) - held, held - unchanged, unchanged)

    def read(self, first_day: int, last_day: int, lag_days: int = 0) -> Actuals:
        """The actuals of days ``first_day``..``last_day`` (days since 1970-01-01), and with ``lag_days`` those of
        the same days that many days earlier, ordered by store, item, day."""
        with self.connection() as connection:
            cursor = connection.cursor()
            cursor.execute(f"SELECT day, store, item, sales FROM actuals WHERE {self._days()} ORDER BY store, item, "
                           "day", (first_day, last_day, first_day - lag_days, last_day - lag_days))  # fmt: skip
            table = np.array(cursor.fetchall(), dtype=np.int64).reshape(-1, 4)
        return Actuals(table[:, 0], table[:, 1], table[:, 2], table[:, 3])

    def stamp(self, first_day: int, last_day: int, lag_days: int = 0) -> int:
        """How many times loads changed the actuals :meth:`read` gives for the same days: it grows with every load
        that adds or changes one of them, so a result computed from those days holds while it stays the same."""
        with self.connection() as connection:
            cursor = connection.cursor()
            cursor.execute(f"SELECT COALESCE(SUM(changes), 0) FROM actuals_days WHERE {self._days()}",
                           (first_day, last_day, first_day - lag_days, last_day - lag_days))  # fmt: skip
            return int(cursor.fetchone()[0])

    def _days(self) -> str:
        """The condition on ``day`` of :meth:`read` and :meth:`stamp`: in a range, or in the same range lagged."""
        return f"(day BETWEEN {self.mark} AND {self.mark} OR day BETWEEN {self.mark} AND {self.mark})"

    def cached(self, key: str, stamp: int) -> str | None:
        """The result kept under ``key`` if it was computed at ``stamp`` (:meth:`stamp` of its days), else None."""
        with self.connection() as connection:
            cursor = connection.cursor()
            cursor.execute(f"SELECT entry FROM accuracy_cache WHERE key = {self.mark} AND stamp = {self.mark}",
                           (key, stamp))  # fmt: skip
            found = cursor.fetchone()
            return None if found is None else str(found[0])

    def keep(self, key: str, stamp: int, entry: str) -> None:
        """Keep ``entry`` under ``key`` for ``stamp``; entries not computed for :data:`CACHE_KEPT_S` are dropped."""
        now = time.time()
        with self.connection() as connection:
            cursor = connection.cursor()
            self._begin(cursor, write=True)
            marks = ", ".join([self.mark] * 4)
            cursor.execute(f"INSERT INTO accuracy_cache VALUES ({marks}) ON CONFLICT (key) DO UPDATE SET "
                           "stamp = excluded.stamp, entry = excluded.entry, computed_at = excluded.computed_at",
                           (key, stamp, entry, now))  # fmt: skip
            cursor.execute(f"DELETE FROM accuracy_cache WHERE computed_at < {self.mark}", (now - CACHE_KEPT_S,))
            self._end(connection, cursor, "COMMIT")

    def last_day(self) -> int | None:
        """The latest day with an actual (days since 1970-01-01), or None when the store is empty."""
        with self.connection() as connection:
            cursor = connection.cursor()
            cursor.execute("SELECT MAX(day) FROM actuals_days")
            found = cursor.fetchone()[0]
            return None if found is None else int(found)

    def count(self) -> int:
        with self.connection() as connection:
            cursor = connection.cursor()
            cursor.execute("SELECT COUNT(*) FROM actuals")
            return int(cursor.fetchone()[0])

    def _end(self, connection: Connection, cursor: Any, how: str) -> None:
        """End the transaction: ``COMMIT`` or ``ROLLBACK`` (SQLite in autocommit mode is told so; psycopg asked)."""
        if self.postgres:
            connection.commit() if how == "COMMIT" else connection.rollback()
        else:
            cursor.execute(how)

    def _begin(self, cursor: Any, write: bool = False) -> None:
        """Begin a transaction: SQLite's ``BEGIN IMMEDIATE`` takes the write lock at once, so two loads queue
        instead of one failing on upgrade; psycopg begins one by itself."""
        if not self.postgres:
            cursor.execute("BEGIN IMMEDIATE" if write else "BEGIN")
