"""The write-back's own SQL (services/dispatch/bulk.py) stores what SQLAlchemy would, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Table, insert, select, text
from sqlmodel import Session

from services.dispatch.bulk import Bulk
from siaga import models
from siaga.db import create_schema, make_engine

TPS: Table = models.Tps.__table__  # type: ignore[attr-defined]
OUTBOX: Table = models.Outbox.__table__  # type: ignore[attr-defined]
WIB = timezone(timedelta(hours=7))


def tps_row(tps_id: str, **live: Any) -> dict[str, Any]:
    row: dict[str, Any] = {c.name: None for c in TPS.columns}
    row.update(tps_id=tps_id, name=f"TPS {tps_id}", kecamatan="Kopo", kabupaten="", provinsi="", desa="")
    row.update(rawan=["konflik"], silent=False)
    row.update(assigned=2, checkins={}, version=1)
    row.update(live)
    return row


def test_rows_written_by_bulk_read_back_as_sqlalchemy_writes_them(db_url: str) -> None:
    engine = make_engine(db_url)
    create_schema(engine)
    at = datetime(2026, 2, 14, 7, 30, 0, tzinfo=WIB)  # not UTC: stored in UTC
    checkins = {"P1": {"status": "ok", "at": "2026-02-14T00:30:00+00:00", "battery": 80}}
    with Session(engine) as s:
        s.execute(text("DELETE FROM tps WHERE tps_id IN ('B-1', 'B-2')"))
        bulk = Bulk(s.connection())
        columns = [c.name for c in TPS.columns]
        bulk.upsert(TPS, ["tps_id"], columns, [tps_row("B-1", last_seen_at=at, checkins=checkins, phase="voting")])
        s.execute(insert(TPS), [tps_row("B-2", last_seen_at=at, checkins=checkins, phase="voting")])  # SQLAlchemy's
        s.commit()
    with Session(engine) as s:
        got = {r["tps_id"]: dict(r) for r in s.execute(select(TPS).order_by(TPS.c.tps_id)).mappings()}
        assert got["B-1"]["last_seen_at"] == at and got["B-1"]["last_seen_at"].tzinfo is not None
        assert got["B-1"]["checkins"] == checkins and got["B-1"]["rawan"] == ["konflik"]
        assert {k: v for k, v in got["B-1"].items() if k not in ("tps_id", "name")} == {
            k: v for k, v in got["B-2"].items() if k not in ("tps_id", "name")
        }
        if engine.dialect.name == "sqlite":  # the same text, so comparisons in SQL order them alike
            raw = dict(s.execute(text("SELECT tps_id, last_seen_at FROM tps WHERE tps_id IN ('B-1', 'B-2')")).all())
            assert raw["B-1"] == raw["B-2"] == "2026-02-14 00:30:00.000000"


def test_update_writes_only_the_named_columns_and_upsert_keeps_what_it_is_told_to(db_url: str) -> None:
    engine = make_engine(db_url)
    create_schema(engine)
    with Session(engine) as s:
        s.execute(text("DELETE FROM tps WHERE tps_id = 'B-3'"))
        s.execute(insert(TPS), [tps_row("B-3", phase="setup")])
        bulk = Bulk(s.connection())
        bulk.update(TPS, "tps_id", ["phase", "version"], [{"tps_id": "B-3", "phase": "voting", "version": 5}])
        renamed = tps_row("B-3", name="renamed by the owner", phase="counting", version=6)
        bulk.upsert(TPS, ["tps_id"], [c.name for c in TPS.columns], [renamed], keep=["name"])
        s.commit()
        row = s.execute(select(TPS).where(TPS.c.tps_id == "B-3")).mappings().one()
    assert (row["name"], row["phase"], row["version"]) == ("TPS B-3", "counting", 6)


def test_insert_new_ignores_what_is_there_and_insert_returning_gives_every_id(db_url: str) -> None:
    engine = make_engine(db_url)
    create_schema(engine)
    now = datetime.now(UTC)
    processed: Table = models.ProcessedEvent.__table__  # type: ignore[attr-defined]
    with Session(engine) as s:
        bulk = Bulk(s.connection())
        first = [{"event_id": f"bulk-{i}", "processed_at": now} for i in range(3)]
        bulk.insert_new(processed, ["event_id", "processed_at"], first)
        bulk.insert_new(processed, ["event_id", "processed_at"], [*first, {"event_id": "bulk-9", "processed_at": now}])
        assert sorted(bulk.select_in(processed, "event_id", ["bulk-0", "bulk-9", "bulk-nope"])) == ["bulk-0", "bulk-9"]
        rows = [{"topic": "t", "key": str(i), "value": b"v%d" % i, "created_at": now} for i in range(1200)]
        ids = bulk.insert_returning(OUTBOX, ["topic", "key", "value", "created_at"], rows, "id")
        s.commit()
        assert len(set(ids)) == 1200  # three chunks of multi-row INSERT … RETURNING
        stored = s.execute(select(OUTBOX.c.key, OUTBOX.c.value).where(OUTBOX.c.id.in_(ids))).all()
    assert sorted(stored, key=lambda r: int(r[0]))[1199] == ("1199", b"v1199")


def test_a_naive_datetime_is_refused_as_sqlalchemy_refuses_it(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'naive.db'}")
    create_schema(engine)
    with Session(engine) as s, pytest.raises(ValueError, match="timezone"):
        Bulk(s.connection()).update(
            TPS, "tps_id", ["last_seen_at"], [{"tps_id": "x", "last_seen_at": datetime(2026, 1, 1)}]
        )
