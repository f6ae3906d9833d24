"""Schema migrations on SQLite and PostgreSQL: from empty, between revisions with data, down again,
at every start (idempotent, concurrent), and databases made by `create_all` before migrations existed."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, select

from siaga import db
from siaga.clock import as_utc
from siaga.migrations import make_config
from siaga.migrations.__main__ import main as migrations_cli
from siaga.migrations.__main__ import next_revision_id
from siaga.models import AlertDelivery, Incident, TimelineEntry, Tps

T0 = datetime(2026, 2, 14, 8, 0, tzinfo=UTC)
NEW_COLUMNS = {("alertdelivery", "sent_at"), ("incident", "last_alert_failure")}  # 0002
# Columns later revisions add to the tables 0001 had (0006: source; 0007: field orders and check-in
# locations; 0008: short codes and phones; 0009: ballot-box escorts; 0010: duty hours;
# 0011: days on duty).
LATER_COLUMNS = {
    ("incident", "source"),
    ("incident", "orders"),
    ("personnel", "lat"),
    ("personnel", "lon"),
    ("incident", "code"),
    ("personnel", "phone"),
    ("tps", "escorts"),
    ("personnel", "duty"),
    ("personnel", "duty_days"),
    ("incident", "held_alerts"),
    ("tps", "kabupaten"),
    ("tps", "provinsi"),
    ("incident", "kabupaten"),
    ("incident", "provinsi"),
    ("apitoken", "scope"),
}

# The 0001 schema, spelled out: the models now have columns that 0001 lacks, so rows go in through these.
tps_0001 = sa.table(
    "tps",
    *(sa.column(c) for c in ("tps_id", "name", "kecamatan", "desa", "silent", "assigned", "version")),
    sa.column("rawan", sa.JSON),
)
incident_0001 = sa.table(
    "incident",
    *(
        sa.column(c)
        for c in (
            "id",
            "tps_id",
            "kecamatan",
            "category",
            "severity",
            "level",
            "status",
            "reports",
            "reminders",
            "description",
            "policy_version",
            "version",
        )
    ),
    *(sa.column(c, sa.JSON) for c in ("report_ids", "levels_alerted", "stakeholders_told", "facts", "why", "children")),
    *(sa.column(c, sa.DateTime(timezone=True)) for c in ("opened_at", "received_at", "updated_at")),
)
delivery_0001 = sa.table(
    "alertdelivery",
    *(
        sa.column(c)
        for c in (
            "key",
            "incident_id",
            "level",
            "audience",
            "reminder",
            "channel",
            "recipient",
            "status",
            "attempts",
            "last_error",
        )
    ),
    *(sa.column(c, sa.DateTime(timezone=True)) for c in ("created_at", "updated_at")),
)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = db.make_engine(db_url)
    yield eng
    eng.dispose()


def insert_0001_rows(engine: Engine) -> None:
    """A registry entry, an incident and two deliveries (one sent, one pending), written at revision 0001."""
    with engine.begin() as c:
        c.execute(
            tps_0001.insert().values(
                tps_id="TPS-1",
                name="TPS 1",
                kecamatan="Kopo",
                desa="",
                silent=False,
                assigned=2,
                version=1,
                rawan=["banjir"],
            )
        )
        c.execute(
            incident_0001.insert().values(
                id="inc-1",
                tps_id="TPS-1",
                kecamatan="Kopo",
                category="kericuhan",
                severity="high",
                level=1,
                status="open",
                reports=2,
                reminders=0,
                description="massa berkumpul",
                policy_version=1,
                version=3,
                report_ids=["e1", "e2"],
                levels_alerted=[1],
                stakeholders_told=[],
                facts={"crowd": 40},
                why=["x"],
                children=[],
                opened_at=T0,
                received_at=T0,
                updated_at=T0 + timedelta(minutes=5),
            )
        )
        common = {
            "incident_id": "inc-1",
            "level": 1,
            "audience": "police",
            "reminder": 0,
            "channel": "telegram",
            "attempts": 1,
            "last_error": None,
            "created_at": T0,
        }
        c.execute(
            delivery_0001.insert().values(
                key="k-sent", recipient="polsek", status="sent", updated_at=T0 + timedelta(seconds=3), **common
            )
        )
        c.execute(
            delivery_0001.insert().values(
                key="k-pending", recipient="kapolsek", status="pending", updated_at=T0 + timedelta(seconds=4), **common
            )
        )


def columns(engine: Engine) -> set[tuple[str, str]]:
    inspector = sa.inspect(engine)
    return {(t, c["name"]) for t in inspector.get_table_names() for c in inspector.get_columns(t)}


def upgrade_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "siaga.db" and "upgraded" in r.getMessage()]


# -- from empty -----------------------------------------------------------------------------------
def test_empty_database_reaches_head_and_matches_the_models(engine: Engine) -> None:
    assert db.current_revision(engine) is None
    db.create_schema(engine)
    assert db.current_revision(engine) == db.head_revision() == "0013"
    assert set(sa.inspect(engine).get_table_names()) == set(SQLModel.metadata.tables) | {"alembic_version"}
    # Alembic's autogenerate compares tables, columns, types, nullability, indexes and unique constraints.
    assert db.schema_differences(engine) == []


def test_schema_differences_sees_a_missing_column(engine: Engine) -> None:
    """The comparison the test above relies on does find a difference when there is one."""
    db.upgrade(engine, "0001")
    found = {(d[2], d[3].name) for d in db.schema_differences(engine) if d[0] == "add_column"}
    assert found == NEW_COLUMNS | LATER_COLUMNS


# -- between revisions ----------------------------------------------------------------------------
def test_upgrade_0001_to_0002_keeps_the_data(engine: Engine) -> None:
    db.upgrade(engine, "0001")
    assert db.current_revision(engine) == "0001"
    assert not NEW_COLUMNS & columns(engine)
    insert_0001_rows(engine)

    db.upgrade(engine, "0002")

    assert db.current_revision(engine) == "0002"
    assert columns(engine) >= NEW_COLUMNS
    # On to head, with the data (the models hold the columns of later revisions too: read them there).
    db.upgrade(engine)
    assert db.schema_differences(engine) == []
    with Session(engine) as s:
        tps = s.get(Tps, "TPS-1")
        assert tps is not None and tps.rawan == ["banjir"] and tps.assigned == 2
        # The columns of 0002, and 0006's source (the model has others, read here by name only).
        c = Incident.__table__.c  # type: ignore[attr-defined]
        inc = s.execute(
            sa.select(
                c.report_ids, c.facts, c.version, c.description, c.opened_at, c.last_alert_failure, c.source
            ).where(c.id == "inc-1")
        ).one()
        assert (inc.report_ids, inc.facts, inc.version, inc.description) == (
            ["e1", "e2"],
            {"crowd": 40},
            3,
            "massa berkumpul",
        )
        assert as_utc(inc.opened_at) == T0 and inc.last_alert_failure is None
        assert inc.source == "field", "0006: every incident before it came from a field device"
        sent, pending = s.get(AlertDelivery, "k-sent"), s.get(AlertDelivery, "k-pending")
        assert sent is not None and pending is not None
        # 0002 backfills sent_at of deliveries already sent from the write that made them final.
        assert sent.sent_at == T0 + timedelta(seconds=3)
        assert pending.sent_at is None and pending.status == "pending"


def test_downgrade_0002_to_0001_drops_the_new_columns_and_keeps_the_rest(engine: Engine) -> None:
    db.create_schema(engine)
    with Session(engine) as s:
        s.add(Tps(tps_id="TPS-9", name="TPS 9", kecamatan="Cibeber", rawan=["jauh"]))
        s.add(
            AlertDelivery(
                key="k1",
                incident_id="inc-9",
                channel="slack",
                recipient="posko",
                status="sent",
                created_at=T0,
                sent_at=T0,
                updated_at=T0,
            )
        )
        s.add(TimelineEntry(incident_id="inc-9", seq=1, at=T0, actor="system", action="opened", detail={"a": 1}))
        s.commit()

    db.downgrade(engine, "0001")

    assert db.current_revision(engine) == "0001"
    assert not NEW_COLUMNS & columns(engine)
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT recipient, status FROM alertdelivery")).all() == [("posko", "sent")]
        assert c.execute(sa.text("SELECT tps_id, kecamatan FROM tps")).all() == [("TPS-9", "Cibeber")]
        assert c.execute(sa.text("SELECT incident_id, seq FROM timelineentry")).all() == [("inc-9", 1)]
    # SQLite rebuilt the tables to drop the columns: up again must give exactly the models' schema back.
    db.upgrade(engine)
    assert db.schema_differences(engine) == []
    with Session(engine) as s:
        assert [(e.incident_id, e.detail) for e in s.exec(select(TimelineEntry))] == [("inc-9", {"a": 1})]


def test_downgrade_to_base_drops_everything(engine: Engine) -> None:
    db.create_schema(engine)
    db.downgrade(engine, "base")
    assert db.current_revision(engine) is None
    assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}


# -- at every start -------------------------------------------------------------------------------
def test_create_schema_twice_is_a_no_op(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="siaga.db")
    db.create_schema(engine)
    with Session(engine) as s:
        s.add(Tps(tps_id="TPS-2", name="TPS 2", kecamatan="Kopo"))
        s.commit()
    before = columns(engine)
    assert len(upgrade_logs(caplog)) == 1

    db.create_schema(engine)

    assert upgrade_logs(caplog) == [upgrade_logs(caplog)[0]]  # nothing ran the second time
    assert columns(engine) == before
    assert db.current_revision(engine) == db.head_revision()
    with Session(engine) as s:
        assert [t.tps_id for t in s.exec(select(Tps))] == ["TPS-2"]


def test_concurrent_create_schema_calls_both_succeed(db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Two services starting together on one empty database: one migrates, the other waits and finds it done."""
    caplog.set_level(logging.INFO, logger="siaga.db")
    engines = [db.make_engine(db_url) for _ in range(2)]  # one pool each, like two processes
    start = threading.Barrier(len(engines))
    errors: list[BaseException] = []

    def run(engine: Engine) -> None:
        try:
            start.wait(timeout=10)
            db.create_schema(engine)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(e,)) for e in engines]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert errors == []
        assert len(upgrade_logs(caplog)) == 1  # the lock let exactly one of them migrate
        for e in engines:
            assert db.current_revision(e) == db.head_revision()
        assert db.schema_differences(engines[0]) == []
    finally:
        for e in engines:
            e.dispose()


# A service starting in its own process: it says when it is about to migrate, so the test knows
# that a pause afterwards is the lock and not the imports.
STARTING_SERVICE = """
import sys
from siaga import db
engine = db.make_engine(sys.argv[1])
print("ready", flush=True)
db.create_schema(engine)
print(db.current_revision(engine), flush=True)
"""


def test_another_process_waits_for_the_migration_lock(db_url: str) -> None:
    """While one process holds the migration lock, another's create_schema does not touch the database."""
    holder = db.make_engine(db_url)
    try:
        with db.migration_lock(holder):
            proc = subprocess.Popen([sys.executable, "-c", STARTING_SERVICE, db_url], stdout=subprocess.PIPE, text=True)
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
            with pytest.raises(subprocess.TimeoutExpired):
                proc.wait(timeout=0.5)
            assert db.current_revision(holder) is None
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        assert out.strip() == db.head_revision()
    finally:
        holder.dispose()


def test_a_database_newer_than_this_code_is_left_alone(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    db.create_schema(engine)
    with engine.begin() as c:
        c.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    caplog.set_level(logging.WARNING, logger="siaga.db")

    db.create_schema(engine)

    assert db.current_revision(engine) == "9999"
    assert any("newer than this version" in r.getMessage() for r in caplog.records)


# -- databases made before migrations -------------------------------------------------------------
def test_a_create_all_database_is_stamped_head(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    SQLModel.metadata.create_all(engine)
    with Session(engine) as s:
        s.add(Tps(tps_id="TPS-3", name="TPS 3", kecamatan="Kopo"))
        s.commit()
    assert db.current_revision(engine) is None
    caplog.set_level(logging.INFO, logger="siaga.db")

    db.create_schema(engine)

    assert db.current_revision(engine) == db.head_revision()
    assert any("stamped" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert upgrade_logs(caplog) == []  # stamped, nothing run
    assert db.schema_differences(engine) == []
    with Session(engine) as s:
        assert [t.tps_id for t in s.exec(select(Tps))] == ["TPS-3"]


def test_an_older_create_all_database_is_stamped_where_it_matches_and_upgraded(engine: Engine) -> None:
    """Made by create_all of a version without 0002's columns: stamped 0001, then 0002 runs (with its backfill)."""
    db.upgrade(engine, "0001")
    insert_0001_rows(engine)
    with engine.begin() as c:
        c.execute(sa.text("DROP TABLE alembic_version"))
    assert db.current_revision(engine) is None

    db.create_schema(engine)

    assert db.current_revision(engine) == db.head_revision()
    assert db.schema_differences(engine) == []
    with Session(engine) as s:
        sent = s.get(AlertDelivery, "k-sent")
        assert sent is not None and sent.sent_at == T0 + timedelta(seconds=3)


def test_an_unrecognisable_database_is_refused(engine: Engine) -> None:
    with engine.begin() as c:
        c.execute(sa.text("CREATE TABLE tps (tps_id VARCHAR(128) PRIMARY KEY)"))
    with pytest.raises(
        RuntimeError,
        match=r"no migration history.*missing tables alertdelivery.*missing columns tps\.assigned, tps\.checkins",
    ):
        db.create_schema(engine)
    assert db.current_revision(engine) is None


# -- the developer command line -------------------------------------------------------------------
def test_the_command_line_runs_alembic_commands_with_the_packaged_config(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    assert migrations_cli(["--url", url, "upgrade", "0001"]) == 0
    engine = db.make_engine(url)
    try:
        assert db.current_revision(engine) == "0001"
    finally:
        engine.dispose()
    assert next_revision_id(make_config()) == f"{int(db.head_revision()) + 1:04d}"
