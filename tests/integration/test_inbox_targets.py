"""The inbox's targets of a device (services/ingest/inbox.py): kept by the row read, never stale.

A poll reads the device row by its token every time; what the row and the TPS registry imply (the
device's TPS, their kecamatan, its person) is derived once and kept. It must follow a TPS moved to
another kecamatan and a device given another TPS, and a revoked token must never be answered.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text
from sqlmodel import Session

from services.ingest.inbox import InboxDb
from services.ingest.service import IngestDb
from siaga.auth import hash_token
from siaga.db import create_schema, make_engine
from siaga.models import Device, Tps


def test_targets_follow_the_registry_and_the_device_row(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'inbox.db'}")
    create_schema(engine)
    with Session(engine) as s:
        s.add(Tps(tps_id="T1", name="TPS 1", kecamatan="Ciruas", lat=-6.1, lon=106.2))
        s.add(Tps(tps_id="T2", name="TPS 2", kecamatan="Kramatwatu", lat=-6.0, lon=106.1))
        s.add(
            Device(
                device_id="d1",
                personnel_id="P1",
                token_hash=hash_token("tok"),
                tps_ids=["T1"],
                created_at=datetime.now(UTC),
            )
        )
        s.commit()
    db = IngestDb(engine, tps_ttl_s=0.0)  # the registry is read again on every poll
    inbox = InboxDb(db)

    def targets() -> tuple[str, ...] | None:
        with db.reading() as cur:
            device = inbox.device(cur, hash_token("tok"))
            return None if device is None else device.targets

    assert targets() == ("tps:T1", "kecamatan:Ciruas", "person:P1", "all")
    assert targets() == ("tps:T1", "kecamatan:Ciruas", "person:P1", "all")  # kept: the same answer
    with engine.begin() as conn:
        conn.execute(text("UPDATE tps SET kecamatan = 'Kibin' WHERE tps_id = 'T1'"))
    assert targets() == ("tps:T1", "kecamatan:Kibin", "person:P1", "all")
    with engine.begin() as conn:
        conn.execute(text("""UPDATE device SET tps_ids = '["T2"]' WHERE device_id = 'd1'"""))
    assert targets() == ("tps:T2", "kecamatan:Kramatwatu", "person:P1", "all")
    with engine.begin() as conn:
        conn.execute(text("UPDATE device SET revoked_at = CURRENT_TIMESTAMP WHERE device_id = 'd1'"))
    assert targets() is None
    engine.dispose()
