"""The write-back's hot statements in the database's own SQL, run by the driver's `executemany`.

A batch of the morning peak writes about three rows an event (the applied event id, the outbox
message, the TPS and the person checked in). Through SQLAlchemy's compiled statements, binding
those parameters (a type processor a value, a dict a row) cost more than SQLite writing them
(docs/benchmarks.md, the profile of bench.dispatch). Here each statement is built once per table
and shape, and its rows go to the driver as tuples, converted as SQLAlchemy would store them:

- JSON columns through orjson, as `siaga.db` configures the engine;
- datetimes (SQLModel's `UTCDateTime`) in UTC: on SQLite as SQLAlchemy's text format, on
  PostgreSQL as the aware datetime itself (`timestamptz`); a naive one is refused, as there.

`INSERT … ON CONFLICT … DO UPDATE SET c = excluded.c` and `ON CONFLICT DO NOTHING` are the same
SQL in SQLite and PostgreSQL; only the placeholder (`?` or `%s`) and PostgreSQL's `::json` casts
differ. Anything rare (a new incident's first write, a correction) can stay with SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson
from sqlalchemy import JSON, Table
from sqlalchemy.engine import Connection
from sqlalchemy.types import DateTime, TypeDecorator

Convert = Callable[[Any], Any]
CHUNK = 500  # rows in one multi-row INSERT … RETURNING (SQLite allows 32,766 parameters)


def _json(value: Any) -> Any:
    return None if value is None else orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def _utc(value: datetime) -> datetime:
    if value.tzinfo is UTC:
        return value
    if value.utcoffset() is None:
        raise ValueError("datetime values must have timezone information")
    return value.astimezone(UTC)


def _sqlite_datetime(value: datetime | None) -> str | None:
    """SQLAlchemy's SQLite text of a datetime: "YYYY-MM-DD HH:MM:SS.ffffff", always six digits."""
    if value is None:
        return None
    v = _utc(value)
    text = v.isoformat(" ")[:-6]  # without "+00:00"
    return text if v.microsecond else f"{text}.000000"


def _pg_datetime(value: datetime | None) -> datetime | None:
    return None if value is None else _utc(value)


def _is(column_type: Any, kind: type[Any]) -> bool:
    impl = column_type.impl if isinstance(column_type, TypeDecorator) else column_type
    return isinstance(column_type, kind) or isinstance(impl, kind)


class Bulk:
    """The hot statements for one connection's dialect (SQLite or PostgreSQL)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.dialect = conn.dialect.name
        self.quote: Callable[[str], str] = conn.dialect.identifier_preparer.quote
        if self.dialect not in ("sqlite", "postgresql"):
            raise RuntimeError(f"no bulk write for the {self.dialect} database; use SQLite or PostgreSQL")

    # ------------------------------------------------------------------ statements
    def update(self, table: Table, key: str, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
        """UPDATE table SET columns WHERE key = …, one parameter row a row."""
        if not rows:
            return
        mark, q = self._marks(table), self.quote
        sets = ", ".join(f"{q(c)} = {mark[c]}" for c in columns)
        sql = f"UPDATE {q(table.name)} SET {sets} WHERE {q(key)} = {mark[key]}"
        self._many(sql, self._tuples(table, [*columns, key], rows))

    def upsert(
        self,
        table: Table,
        keys: Sequence[str],
        columns: Sequence[str],
        rows: Sequence[Mapping[str, Any]],
        *,
        keep: Sequence[str] = (),
    ) -> None:
        """INSERT the rows' `columns`; a row whose `keys` exist gets its other columns updated, but `keep`."""
        if not rows:
            return
        q = self.quote
        others = [c for c in columns if c not in keys and c not in keep]
        action = f"DO UPDATE SET {', '.join(f'{q(c)} = excluded.{q(c)}' for c in others)}" if others else "DO NOTHING"
        sql = f"{self._insert(table, columns)} ON CONFLICT ({', '.join(map(q, keys))}) {action}"
        self._many(sql, self._tuples(table, columns, rows))

    def insert(self, table: Table, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
        """A plain INSERT (a duplicate key is an error)."""
        if rows:
            self._many(self._insert(table, columns), self._tuples(table, columns, rows))

    def insert_new(self, table: Table, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
        """INSERT … ON CONFLICT DO NOTHING: a row already there stays as it was."""
        if rows:
            self._many(f"{self._insert(table, columns)} ON CONFLICT DO NOTHING", self._tuples(table, columns, rows))

    def insert_returning(
        self, table: Table, columns: Sequence[str], rows: Sequence[Mapping[str, Any]], returning: str
    ) -> list[Any]:
        """A multi-row INSERT … RETURNING in chunks; the returned values in any order."""
        if not rows:
            return []
        mark = self._marks(table)
        one = f"({', '.join(mark[c] for c in columns)})"
        out: list[Any] = []
        for chunk in chunks(self._tuples(table, columns, rows)):
            values = ", ".join([one] * len(chunk))
            sql = f"{self._into(table, columns)} VALUES {values} RETURNING {self.quote(returning)}"
            out.extend(r[0] for r in self.conn.exec_driver_sql(sql, tuple(v for row in chunk for v in row)))
        return out

    def select_in(self, table: Table, column: str, values: Sequence[Any]) -> list[Any]:
        """The values of `column` that are among `values` (an IN list a chunk)."""
        mark = self._marks(table)[column]
        out: list[Any] = []
        for chunk in chunks(list(values)):
            q = self.quote
            sql = f"SELECT {q(column)} FROM {q(table.name)} WHERE {q(column)} IN ({', '.join([mark] * len(chunk))})"
            out.extend(r[0] for r in self.conn.exec_driver_sql(sql, tuple(chunk)))
        return out

    # ------------------------------------------------------------------ the parts
    def _into(self, table: Table, columns: Sequence[str]) -> str:
        return f"INSERT INTO {self.quote(table.name)} ({', '.join(map(self.quote, columns))})"

    def _insert(self, table: Table, columns: Sequence[str]) -> str:
        mark = self._marks(table)
        return f"{self._into(table, columns)} VALUES ({', '.join(mark[c] for c in columns)})"

    def _many(self, sql: str, params: list[tuple[Any, ...]]) -> None:
        for chunk in chunks(params):
            self.conn.exec_driver_sql(sql, chunk)

    def _marks(self, table: Table) -> dict[str, str]:
        return _marks(table, self.dialect)

    def _tuples(self, table: Table, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
        conv = _converters(table, self.dialect)
        plan = [(c, conv.get(c)) for c in columns]
        return [tuple(f(row[c]) if f else row[c] for c, f in plan) for row in rows]


@lru_cache(maxsize=64)
def _converters(table: Table, dialect: str) -> dict[str, Convert]:
    out: dict[str, Convert] = {}
    for c in table.columns:
        if _is(c.type, JSON):
            out[c.name] = _json
        elif _is(c.type, DateTime):
            out[c.name] = _sqlite_datetime if dialect == "sqlite" else _pg_datetime
    return out


@lru_cache(maxsize=64)
def _marks(table: Table, dialect: str) -> dict[str, str]:
    if dialect == "sqlite":
        return {c.name: "?" for c in table.columns}
    return {c.name: "%s::json" if _is(c.type, JSON) else "%s" for c in table.columns}


def chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    """`items` in slices of CHUNK (an IN list, a multi-row INSERT)."""
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]
