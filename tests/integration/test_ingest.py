"""Ingest's contract (SPEC section 4): every answer, on the in-process bus and on the real broker."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import text
from sqlmodel import Session

from services.ingest.app import create_app
from siaga import topics
from siaga.auth import hash_token, new_token
from siaga.bus import Bus, Record
from siaga.models import Device, SeenEvent, Tps
from siaga.runtime import make_bus, make_context
from siaga.service import App
from siaga.settings import Settings


@dataclass
class Rig:
    client: httpx.AsyncClient
    bus: Bus
    token: str
    gateway: str
    engine: Any
    prefix: str

    async def post(
        self, body: Any, *, token: str | None = "default", batch: bool = False, raw: bytes | None = None
    ) -> httpx.Response:
        headers = {"Content-Type": "application/json"}
        tok = self.token if token == "default" else token
        if tok:
            headers["Authorization"] = f"Bearer {tok}"
        path = "/v1/events/batch" if batch else "/v1/events"
        content = raw if raw is not None else orjson.dumps({"events": body} if batch else body)
        return await self.client.post(path, content=content, headers=headers)

    async def on_bus(self, n_expected: int) -> list[Record]:
        """Everything on the field-events topic (reads until n_expected or a quiet second)."""
        source = self.bus.consumer([topics.FIELD_EVENTS], f"reader-{uuid.uuid4().hex[:6]}", broadcast=True)
        await source.start()
        got: list[Record] = []
        try:
            for _ in range(50):
                batch = await source.fetch(1000, 0.2)
                got.extend(batch)
                if len(got) >= n_expected and not batch:
                    break
        finally:
            await source.stop()
        return got


def event(tps_id: str = "T1", **kw: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "type": "incident.reported",
        "tps_id": tps_id,
        "occurred_at": datetime.now(UTC).isoformat(),
        "payload": {"description": "HT rusak", "category": "equipment"},
    }
    ev.update(kw)
    return ev


async def _rig(
    tmp_path: Path,
    kafka: str | None,
    database_url: str | None = None,
    *,
    fastapi_routes: bool = False,
    **settings_kw: Any,
) -> AsyncIterator[Rig]:
    prefix = f"ing{uuid.uuid4().hex[:6]}."
    settings = Settings(
        database_url=database_url or f"sqlite:///{tmp_path / 'ingest.db'}",
        kafka_bootstrap=kafka,
        topic_prefix=prefix,
        kafka_publish_timeout_s=3,
        **settings_kw,
    )
    ctx = make_context(settings, bus=make_bus(settings))
    token, gateway = new_token("dev"), new_token("dev")
    with Session(ctx.engine) as s:
        s.add(Tps(tps_id="T1", name="TPS 1", kecamatan="Cikande"))
        s.add(Tps(tps_id="T2", name="TPS 2", kecamatan="Cikande"))
        s.add(Tps(tps_id="K1", name="TPS K1", kecamatan="Kopo"))
        s.add(Device(device_id="d1", token_hash=hash_token(token), tps_ids=["T1"], created_at=datetime.now(UTC)))
        s.add(Device(device_id="gw", token_hash=hash_token(gateway), kecamatan=["Kopo"], created_at=datetime.now(UTC)))
        s.commit()
    app = create_app(ctx)
    if fastapi_routes:
        assert isinstance(app, App) and app.front is not None, "the device routes are served in front"
        app.front = None  # what FastAPI's own routes answer
    await ctx.bus.start()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
        yield Rig(client, ctx.bus, token, gateway, ctx.engine, prefix)
    await ctx.bus.stop()


@pytest.fixture(
    params=[
        "memory",
        pytest.param("kafka", marks=pytest.mark.kafka),
        pytest.param("postgres", marks=pytest.mark.postgres),
        "fastapi-routes",
        "behind-cors",
    ]
)
async def rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    """Ingest on SQLite with the in-process bus, on SQLite with Kafka, and on PostgreSQL (its reads
    take a pooled connection in a worker thread instead of SQLite's inline one). The device POSTs
    are served by a bare ASGI handler in front of FastAPI: "fastapi-routes" takes it away so that
    FastAPI's documented routes answer, "behind-cors" puts it inside the CORS middleware."""
    kafka = request.getfixturevalue("kafka_bootstrap") if request.param == "kafka" else None
    database_url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    kw: dict[str, Any] = {"fastapi_routes": request.param == "fastapi-routes"}
    if request.param == "behind-cors":
        kw["cors_origins"] = "https://console.example"
    async for r in _rig(tmp_path, kafka, database_url, **kw):
        yield r


async def test_accepted_event_is_on_the_bus_keyed_by_kecamatan(rig: Rig) -> None:
    ev = event()
    r = await rig.post(ev)
    assert r.status_code == 202
    assert r.json() == {"accepted": [ev["event_id"]], "duplicates": [], "rejected": []}
    records = await rig.on_bus(1)
    assert [rec.key for rec in records] == ["Cikande"]  # T1's kecamatan: one owner decides all of it
    doc = orjson.loads(records[0].value)
    assert doc["event"]["event_id"] == ev["event_id"] and doc["device_id"] == "d1"


async def test_a_batch_is_keyed_by_each_events_kecamatan_so_one_kecamatan_shares_a_partition(rig: Rig) -> None:
    """A gateway of Kopo and a device of T1 (Cikande), and T2 of Cikande through the same device."""
    with Session(rig.engine) as s:
        device = s.get(Device, "d1")
        assert device is not None
        device.tps_ids = ["T1", "T2"]
        s.add(device)
        s.commit()
    evs = [event("T1"), event("T2"), event("T1")]
    assert (await rig.post(evs, batch=True)).status_code == 202
    assert (await rig.post(event("K1"), token=rig.gateway)).status_code == 202
    records = await rig.on_bus(4)
    by_event = {orjson.loads(rec.value)["event"]["event_id"]: rec for rec in records}
    assert [by_event[e["event_id"]].key for e in evs] == ["Cikande"] * 3
    assert {rec.key for rec in records} == {"Cikande", "Kopo"}
    # The same key, so the same partition: T1 and T2 are decided in order by one owner.
    assert len({by_event[e["event_id"]].partition for e in evs}) == 1


async def test_repeat_is_a_duplicate_and_not_published_twice(rig: Rig) -> None:
    ev = event()
    assert (await rig.post(ev)).status_code == 202
    r = await rig.post(ev)
    assert r.status_code == 202
    assert r.json()["duplicates"] == [ev["event_id"]] and r.json()["accepted"] == []
    assert len(await rig.on_bus(1)) == 1


async def test_same_id_other_content_is_409(rig: Rig) -> None:
    ev = event()
    await rig.post(ev)
    changed = dict(ev, payload={"description": "lain", "category": "equipment"})
    r = await rig.post(changed)
    assert r.status_code == 409
    assert "different content" in r.text


@pytest.mark.parametrize("token,status", [(None, 401), ("nope", 401)])
async def test_tokens(rig: Rig, token: str | None, status: int) -> None:
    r = await rig.post(event(), token=token)
    assert r.status_code == status
    assert "token" in r.json()["detail"]


async def test_unassigned_tps_403_and_unknown_tps_404(rig: Rig) -> None:
    assert (await rig.post(event("T2"))).status_code == 403
    r = await rig.post(event("NOPE"))
    assert r.status_code == 404 and "NOPE" in r.text


async def test_gateway_posts_for_its_kecamatan_only(rig: Rig) -> None:
    assert (await rig.post(event("K1"), token=rig.gateway)).status_code == 202
    assert (await rig.post(event("T1"), token=rig.gateway)).status_code == 403


@pytest.mark.parametrize(
    "mutate,field",
    [
        (lambda e: e["payload"].update(injuries="many"), "payload.injuries"),
        (lambda e: e["payload"].update(injuries=-1), "payload.injuries"),
        (lambda e: e["payload"].update(weapons="yes"), "payload.weapons"),
        (lambda e: e["payload"].update(category="alien"), "payload.category"),
        (lambda e: e.update(type="incident.exploded"), "type"),
        (lambda e: e.pop("event_id"), "event_id"),
        (lambda e: e.update(occurred_at="yesterday"), "occurred_at"),
        (lambda e: e.update(occurred_at="2024-11-27T08:00:00"), "occurred_at"),
        (lambda e: e.update(occurred_at=(datetime.now(UTC) + timedelta(minutes=11)).isoformat()), "occurred_at"),
        (lambda e: e.update(occurred_at=(datetime.now(UTC) - timedelta(hours=49)).isoformat()), "occurred_at"),
        (lambda e: e.update(type="incident.resolved", payload={}), "payload.report_id"),
        (lambda e: e.update(type="checkin", payload={"personnel_id": "p", "status": "sleeping"}), "payload.status"),
        (
            lambda e: e.update(type="checkin", payload={"personnel_id": "p", "status": "on_duty", "battery": 101}),
            "payload.battery",
        ),
        (lambda e: e.update(type="tps.status", payload={"phase": "party"}), "payload.phase"),
        (lambda e: e.update(extra=1), "extra"),
    ],
)
async def test_invalid_event_422_names_the_field(rig: Rig, mutate: Any, field: str) -> None:
    ev = event()
    mutate(ev)
    r = await rig.post(ev)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["field"] == field


async def test_unreadable_bodies(rig: Rig) -> None:
    assert (await rig.post(None, raw=b"{not json")).status_code == 400
    assert (await rig.post(None, raw=b"[1,2]")).status_code == 422
    big = await rig.post(None, raw=b'{"pad":"' + b"x" * (2 * 1024 * 1024) + b'"}')
    assert big.status_code == 413


async def test_batch_judges_each_event_on_its_own(rig: Rig) -> None:
    good, dup = event(), event()
    await rig.post(dup)
    bad = event()
    bad["payload"]["injuries"] = "many"
    r = await rig.post([good, dup, bad, event("T2"), event("NOPE")], batch=True)
    assert r.status_code == 202
    body = r.json()
    assert body["accepted"] == [good["event_id"]]
    assert body["duplicates"] == [dup["event_id"]]
    assert [(x["index"], x["field"]) for x in body["rejected"]] == [
        (2, "payload.injuries"),
        (3, "tps_id"),
        (4, "tps_id"),
    ]
    assert len(await rig.on_bus(2)) == 2


async def test_batch_limits(rig: Rig) -> None:
    r = await rig.post([event() for _ in range(501)], batch=True)
    assert r.status_code == 413
    assert (await rig.post({"events": "x"}, raw=b'{"events": "x"}', batch=True)).status_code == 422
    r = await rig.post([], batch=True)
    assert r.status_code == 202 and r.json()["accepted"] == []


async def test_same_id_twice_in_one_batch_is_one_event(rig: Rig) -> None:
    ev = event()
    r = await rig.post([ev, ev], batch=True)
    assert r.json()["accepted"] == [ev["event_id"]] and r.json()["duplicates"] == [ev["event_id"]]


async def test_rate_limit_429_with_retry_after(tmp_path: Path) -> None:
    async for rig in _rig(tmp_path, None, device_rate_per_s=1, device_burst=3):
        codes = [(await rig.post(event())).status_code for _ in range(5)]
        assert codes[:3] == [202, 202, 202] and codes[3] == 429
        r = await rig.post(event())
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1


async def test_bus_unavailable_is_503_never_202(tmp_path: Path) -> None:
    async for rig in _rig(tmp_path, None):
        inner = getattr(rig.bus, "inner", rig.bus)
        inner.available = False
        ev = event()
        r = await rig.post(ev)
        assert r.status_code == 503 and r.headers["Retry-After"]
        inner.available = True
        r = await rig.post(ev)
        assert r.status_code == 202 and r.json()["accepted"] == [ev["event_id"]], "not remembered as seen"


async def test_revoked_device_is_refused_at_once(rig: Rig) -> None:
    assert (await rig.post(event())).status_code == 202
    with Session(rig.engine) as s:
        d = s.get(Device, "d1")
        assert d is not None
        d.revoked_at = datetime.now(UTC)
        s.add(d)
        s.commit()
    assert (await rig.post(event())).status_code == 401


async def test_metrics_count_outcomes(rig: Rig) -> None:
    await rig.post(event())
    text = (await rig.client.get("/metrics")).text
    assert "siaga_ingest_events_total" in text and 'outcome="accepted"' in text


async def test_openapi_documents_the_contract(rig: Rig) -> None:
    doc = (await rig.client.get("/openapi.json")).json()
    op = doc["paths"]["/v1/events"]["post"]
    assert set(op["responses"]) >= {"202", "401", "403", "404", "409", "413", "422", "429", "503"}
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["required"]) >= {"event_id", "type", "tps_id", "occurred_at"}


async def test_a_browser_on_an_allowed_origin_can_read_the_answer(tmp_path: Path) -> None:
    async for rig in _rig(tmp_path, None, cors_origins="https://console.example"):
        headers = {"Authorization": f"Bearer {rig.token}", "Origin": "https://console.example"}
        r = await rig.client.post("/v1/events", content=orjson.dumps(event()), headers=headers)
        assert r.status_code == 202
        assert r.headers["access-control-allow-origin"] == "https://console.example"
        r = await rig.client.post(
            "/v1/events", content=orjson.dumps(event()), headers={**headers, "Origin": "https://evil.example"}
        )
        assert "access-control-allow-origin" not in r.headers


async def test_a_kecamatan_lands_on_one_partition_whether_posted_alone_or_in_a_batch(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async for rig in _rig(tmp_path, kafka_bootstrap):
        assert (await rig.post(event("T1"))).status_code == 202
        assert (await rig.post(event("K1"), token=rig.gateway)).status_code == 202
        assert len((await rig.post([event("T1") for _ in range(3)], batch=True)).json()["accepted"]) == 3
        r = await rig.post([event("K1"), event("K1")], token=rig.gateway, batch=True)
        assert len(r.json()["accepted"]) == 2
        by_key: dict[str | None, set[int]] = {}
        for rec in await rig.on_bus(7):
            by_key.setdefault(rec.key, set()).add(rec.partition)
        assert set(by_key) == {"Cikande", "Kopo"}  # T1's and K1's kecamatan
        assert all(len(partitions) == 1 for partitions in by_key.values()), by_key


async def test_seen_ids_are_stored_as_the_orm_stores_them(rig: Rig) -> None:
    ev = event()
    before = datetime.now(UTC)
    assert (await rig.post(ev)).status_code == 202
    with Session(rig.engine) as s:
        seen = s.get(SeenEvent, ev["event_id"])
        assert seen is not None and seen.device_id == "d1"
        assert before - timedelta(seconds=1) <= seen.received_at <= datetime.now(UTC) + timedelta(seconds=1)
        s.add(SeenEvent(event_id="orm", content_hash="h", device_id="d1", received_at=before))
        s.commit()
        stored = dict(s.execute(text("SELECT event_id, CAST(received_at AS TEXT) FROM seenevent")).all())
    # Both rows written the same way (SQLite keeps text: same format, no offset on either).
    assert ("+" in stored[ev["event_id"]]) == ("+" in stored["orm"]), stored


def test_bus_value_is_the_bus_event_pydantic_would_write() -> None:
    """ingest serializes with orjson for speed; the bytes must be what the BusEvent model writes."""
    from services.ingest.service import bus_value
    from siaga.events import BusEvent, FieldEvent, ReplyTo

    for occurred_at in ("2024-11-27T08:15:00+07:00", "2024-11-27T01:15:00.250Z", "2024-11-27T01:15:00.000001-03:30"):
        ev = FieldEvent.model_validate(
            event(
                occurred_at=occurred_at,
                payload={"description": "Banjir  ", "injuries": 2, "location": {"lat": -6.1, "lon": 106.2}},
            )
        )
        now = datetime.now(UTC)
        mine = bus_value(ev, device_id="d1", received_at=now)
        theirs = BusEvent(event=ev, device_id="d1", received_at=now).model_dump_json().encode()
        assert mine == theirs
        by_sms = bus_value(ev, device_id="d1", received_at=now, channel="sms")
        assert by_sms == BusEvent(event=ev, device_id="d1", received_at=now, channel="sms").model_dump_json().encode()
        assert BusEvent.model_validate_json(by_sms).channel == "sms"
        sender = ReplyTo(channel="whatsapp", phone="+6281211112222", number_id="1098765432")
        by_wa = bus_value(ev, device_id="d1", received_at=now, channel="whatsapp", reply_to=sender)
        model = BusEvent(event=ev, device_id="d1", received_at=now, channel="whatsapp", reply_to=sender)
        assert by_wa == model.model_dump_json().encode()
        assert BusEvent.model_validate_json(by_wa).reply_to == sender
