"""The database: one SQLModel engine per process, SQLite by default, PostgreSQL in production.

The schema is managed by the Alembic revisions in `siaga.migrations`: every service start runs
`create_schema`, which upgrades the database to the newest revision under a lock, so several
processes starting at once migrate it exactly once.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import orjson
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, inspect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, SQLModel, create_engine, text

from siaga.migrations import context_options, make_config

log = logging.getLogger("siaga.db")

# Key of the PostgreSQL advisory lock held while migrating: any constant shared by all Siaga processes
# (here the bytes of "siaga-mg" as a big-endian int64).
MIGRATION_LOCK_KEY = 0x73696167612D6D67

# One process migrating SQLite from several threads: the file lock below serializes processes,
# this serializes the threads (and in-memory databases, which have no file to lock).
_sqlite_migration_lock = threading.Lock()


def make_engine(url: str) -> Engine:
    """An engine for the URL; SQLite gets WAL and a busy timeout so several processes can share it."""
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    else:
        kwargs.update(pool_size=10, max_overflow=20, pool_pre_ping=True)
    engine = create_engine(url, json_serializer=_json_dumps, json_deserializer=orjson.loads, **kwargs)
    if url.startswith("sqlite"):

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout=30000")
            _wal(cur)
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

    return engine


def _json_dumps(value: Any) -> str:
    """JSON columns through orjson: a TPS's check-ins are written with every batch, and the standard
    library's encoder was a tenth of dispatch's write-back. Non-string keys become strings, as there."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


# -- schema migrations ----------------------------------------------------------------------------
def _wal(cur: Any) -> None:
    """Switch a SQLite database to WAL once (the mode is kept in the file).

    The switch needs the database to itself and SQLite does not wait for that with the busy
    timeout, so a process that connects while another is migrating retries for a while.
    """
    import sqlite3

    for attempt in range(200):
        if str(cur.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
            return
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError:
            if attempt == 199:
                raise
            time.sleep(0.05)


def create_schema(engine: Engine) -> None:
    """Bring the database to the newest schema; run at every service start, a no-op when it is there.

    A database that `SQLModel.metadata.create_all` made before migrations existed is recognised and
    stamped with the revision it matches (see `upgrade`). On SQLite a start that meets another
    process's migration mid-way ("database is locked") tries again.
    """
    for attempt in range(5):
        try:
            upgrade(engine, "head")
            return
        except OperationalError as exc:
            if engine.dialect.name != "sqlite" or "locked" not in str(exc) or attempt == 4:
                raise
            log.info("database busy with another start; trying again")
            time.sleep(0.2 * (attempt + 1))


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Run the migrations up to `revision` (default: the newest), holding the migration lock.

    A database with Siaga's tables but no migration history (made by `create_all`) is first stamped
    with the newest revision whose tables and columns it has; the upgrade then adds what is missing.
    """
    if revision == "head":
        current = current_revision(engine)
        if current == head_revision():
            return  # the common start: nothing to do, and no lock to wait for
        if current is not None and current not in _known_revisions():
            # A newer version already migrated the database (a rolling upgrade, or a rollback of the code):
            # its revisions are not here to run, and refusing to start would turn a deploy into an outage.
            log.warning(
                "database is at revision %s, newer than this version of Siaga knows (%s); not migrating",
                current,
                head_revision(),
            )
            return
    with migration_lock(engine) as conn:
        _adopt_unversioned(conn)
        before = _revision_of(conn)
        command.upgrade(make_config(connection=conn), revision)
        conn.commit()
        after = _revision_of(conn)
        if after != before:
            log.info("database schema upgraded from %s to %s", before or "empty", after)


def downgrade(engine: Engine, revision: str) -> None:
    """Run the migrations down to `revision` ("base": drop everything), holding the migration lock."""
    with migration_lock(engine) as conn:
        before = _revision_of(conn)
        command.downgrade(make_config(connection=conn), revision)
        conn.commit()
        log.info("database schema downgraded from %s to %s", before, _revision_of(conn) or "empty")


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at; None for a database never migrated (empty, or made by `create_all`)."""
    with engine.connect() as conn:
        return _revision_of(conn)


@lru_cache(maxsize=1)
def head_revision() -> str:
    """The newest revision shipped with this version of Siaga."""
    head = ScriptDirectory.from_config(make_config()).get_current_head()
    if head is None:
        raise RuntimeError("siaga.migrations has no revisions: the package is incomplete")
    return head


@lru_cache(maxsize=1)
def _known_revisions() -> frozenset[str]:
    return frozenset(s.revision for s in ScriptDirectory.from_config(make_config()).walk_revisions())


def schema_differences(engine: Engine) -> list[Any]:
    """What Alembic's autogenerate finds between the database and the models (empty: they agree)."""
    import siaga.models  # noqa: F401  (registers the tables)

    with engine.connect() as conn:
        mc = MigrationContext.configure(conn, opts=context_options(conn.dialect.name))
        return list(compare_metadata(mc, SQLModel.metadata))


@contextmanager
def migration_lock(engine: Engine) -> Iterator[Connection]:
    """A connection held under the database's migration lock, for one process at a time.

    PostgreSQL: a session advisory lock, released with the connection even if the process dies.
    SQLite: an exclusive `flock` on `<database file>.migrate.lock` beside the database.
    """
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            locked = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY}).scalar()
            if not locked:
                log.info("another process is migrating the database; waiting for it")
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
            conn.commit()  # a session lock outlives the transaction; the migration starts its own
            try:
                yield conn
            finally:
                _pg_unlock(conn)
        return
    with _sqlite_migration_lock, _file_lock(engine.url.database), engine.connect() as conn:
        yield conn


def _pg_unlock(conn: Connection) -> None:
    try:
        conn.rollback()  # a failed migration leaves an aborted transaction that would refuse the unlock
        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
        conn.commit()
    except Exception:
        # Closing the server session is the one sure way to free the lock; a pooled connection still holding
        # it would block every later migration.
        log.exception("could not release the migration lock; discarding the connection")
        conn.invalidate()


@contextmanager
def _file_lock(database: str | None) -> Iterator[None]:
    if not database or database == ":memory:" or database.startswith("file:"):
        yield  # nothing other processes can open
        return
    fd = os.open(f"{database}.migrate.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _revision_of(conn: Connection) -> str | None:
    # Read directly rather than through MigrationContext, which logs two INFO lines each time: this runs at
    # every start of every process.
    if not inspect(conn).has_table("alembic_version"):
        return None
    rows = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    if len(rows) > 1:
        raise RuntimeError(f"The database is at several revisions at once ({', '.join(rows)}): merge the branches")
    return rows[0] if rows else None


def _adopt_unversioned(conn: Connection) -> None:
    """Stamp a database made by `create_all` (Siaga's tables, no alembic_version) with the revision it matches.

    The match is by table and column names: the newest revision all of whose columns the database has.
    Types and indexes are not guessed at; any difference left after the upgrade is logged.
    """
    import siaga.models  # noqa: F401  (registers the tables)

    if _revision_of(conn) is not None:
        return
    ours = set(SQLModel.metadata.tables)
    existing = set(inspect(conn).get_table_names()) & ours
    if not existing:
        return  # an empty database: the upgrade creates everything
    have = _columns(conn, existing)
    matched = None
    for rev, needed in _columns_by_revision():
        if needed <= have:
            matched = rev
    if matched is None:
        first = _columns_by_revision()[0][1]
        tables = sorted({t for t, _ in first} - existing)
        cols = sorted(f"{t}.{c}" for t, c in first - have if t in existing)
        raise RuntimeError(
            "The database has Siaga tables but no migration history (alembic_version), and not even the first "
            f"revision's schema: missing tables {', '.join(tables) or 'none'}; missing columns "
            f"{', '.join(cols) or 'none'}. Back it up, then drop those tables or migrate them by hand and run "
            "`siaga migrate`."
        )
    command.stamp(make_config(connection=conn), matched)
    conn.commit()
    log.warning("database made without migrations (create_all): its tables match revision %s; stamped it", matched)
    if matched == head_revision():
        differences = [
            d
            for d in compare_metadata(
                MigrationContext.configure(conn, opts=context_options(conn.dialect.name)), SQLModel.metadata
            )
        ]
        if differences:
            log.warning("the unversioned database differs from the models: %s", differences)


def _columns(conn: Connection, tables: set[str]) -> set[tuple[str, str]]:
    inspector = inspect(conn)
    return {(t, c["name"]) for t in tables for c in inspector.get_columns(t)}


@lru_cache(maxsize=1)
def _columns_by_revision() -> list[tuple[str, frozenset[tuple[str, str]]]]:
    """Each revision, oldest first, with the (table, column) pairs of the schema it makes.

    Found by running the revisions on an in-memory SQLite database: the revisions are the only record
    of what each schema held.
    """
    scratch = create_engine("sqlite://")
    result: list[tuple[str, frozenset[tuple[str, str]]]] = []
    # Alembic's "Running upgrade" lines would read as if the real database were being migrated.
    alembic_log = logging.getLogger("alembic")
    level = alembic_log.level
    alembic_log.setLevel(logging.WARNING)
    try:
        with scratch.connect() as conn:
            cfg = make_config(connection=conn)
            for script in reversed(list(ScriptDirectory.from_config(cfg).walk_revisions())):
                command.upgrade(cfg, script.revision)
                tables = set(inspect(conn).get_table_names()) - {"alembic_version"}
                result.append((script.revision, frozenset(_columns(conn, tables))))
    finally:
        alembic_log.setLevel(level)
        scratch.dispose()
    return result


# -- sessions -------------------------------------------------------------------------------------
@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def ping(engine: Engine) -> bool:
    """Whether the database answers a trivial query."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False
