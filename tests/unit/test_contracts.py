"""The bus contracts (siaga/contracts.py): a round trip per model, the wire format kept, and what
each consumer refuses (to dead-letter, with the reason)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import TypeAdapter, ValidationError

from services.dashboard.app import Dashboard
from services.dispatch.domain import Incident, Tps
from services.dispatch.engine import incident_public, public_incident, tps_public
from services.dispatch.notifier import AlertRouting, Notifier
from siaga import topics
from siaga.bus import Record
from siaga.bus.memory import MemoryBus
from siaga.clock import iso
from siaga.contracts import (
    COMMAND,
    FIELD_ORDER,
    INCIDENT_UPDATE,
    Acknowledge,
    AcknowledgeOrder,
    AddNote,
    AlertIntent,
    Assign,
    Assignment,
    Audience,
    Broadcast,
    Classify,
    Escalate,
    HelpOnTheWay,
    IncidentChanged,
    IncidentPublic,
    KecamatanKey,
    Message,
    OrderTarget,
    RecordDelivery,
    ReportFromCommandPost,
    Resolve,
    TargetKind,
    TpsChanged,
)
from siaga.events import Category, Severity
from siaga.keys import kecamatan_key
from siaga.runtime import Context, make_context
from siaga.settings import Settings
from tests.fakes import RecordingRecorder, alert_intent

NOW = datetime(2024, 11, 27, 7, 0, 0, 123456, tzinfo=UTC)
NAIVE = datetime(2024, 11, 27, 6, 45, 0, 500000)  # as SQLite hands a UTC time back
KEC = KecamatanKey(provinsi="Banten", kabupaten="Serang", kecamatan="Cikande")
BASE: dict[str, Any] = {"kecamatan": KEC, "actor": "operator:ops-1", "issued_at": NOW}


def incident_row(**kw: Any) -> Incident:
    fields: dict[str, Any] = {
        "id": "INC-ABC123",
        "tps_id": "SRG-CKD-001",
        "kecamatan": "Cikande",
        "category": "violence",
        "severity": "high",
        "level": 1,
        "status": "escalated",
        "reports": 2,
        "opened_at": NAIVE,
        "received_at": NOW,
        "local_deadline": NAIVE,
        "facts": {"injuries": 2, "weapons": True},
        "why": ["category from device: violence"],
        "description": "Keributan antar pendukung, dua orang luka — ringan",
        "updated_at": NOW,
        "version": 4,
    }
    fields.update(kw)
    return Incident(**fields)


def tps_row(**kw: Any) -> Tps:
    fields: dict[str, Any] = {
        "tps_id": "SRG-CKD-001",
        "name": "TPS 001 Cikande",
        "kecamatan": "Cikande",
        "desa": "Cikande Permai",
        "lat": -6.2,
        "lon": 106.0,
        "rawan": ["flood", "remote"],
        "phase": "voting",
        "assigned": 2,
        "last_checkin_at": NAIVE,
        "version": 3,
    }
    fields.update(kw)
    return Tps(**fields)


# -- the wire format is the one the dashboard page, the API and the webhooks already read --------
def test_incident_update_bytes_are_the_established_format() -> None:
    inc, tps = incident_row(), tps_row()
    legacy = {
        "type": "incident",
        "incident": {
            "id": inc.id,
            "tps_id": inc.tps_id,
            "tps_name": tps.name,
            "kecamatan": inc.kecamatan,
            "kabupaten": "",  # added with the regions (migration 0013)
            "provinsi": "",
            "category": inc.category,
            "severity": inc.severity,
            "level": inc.level,
            "status": inc.status,
            "reports": inc.reports,
            "opened_at": iso(inc.opened_at),
            "received_at": iso(inc.received_at),
            "local_deadline": iso(inc.local_deadline),
            "ack_deadline": None,
            "why": inc.why,
            "facts": inc.facts,
            "description": inc.description,
            "parent_id": None,
            "children": [],
            "policy_version": 0,
            "updated_at": iso(inc.updated_at),
            "resolved_at": None,
            "resolution": None,
            "last_alert_failure": None,
            "source": "field",  # added with operator judgement (migration 0006); readers ignore what they do not know
            "orders": [],  # added with the field orders (SPEC section 9): readers ignore fields they do not know
            "code": None,  # added with the SMS gateway (migration 0008): a row opened before it has none
            "held_alerts": 0,  # added with silences (migration 0012): nothing held
            "silenced_by": [],
            "version": 4,
        },
    }
    assert IncidentChanged(incident=incident_public(inc, tps)).to_bytes() == orjson.dumps(legacy)
    assert public_incident(inc, tps) == legacy["incident"]  # the API's answer too


def test_tps_update_bytes_are_the_established_format() -> None:
    tps = tps_row()
    legacy = {
        "type": "tps",
        "tps": {
            "tps_id": tps.tps_id,
            "name": tps.name,
            "kecamatan": tps.kecamatan,
            "desa": tps.desa,
            "lat": -6.2,
            "lon": 106.0,
            "rawan": ["flood", "remote"],
            "phase": "voting",
            "state": "normal",
            "assigned": 2,
            "checked_in": 0,
            "last_checkin_at": iso(NAIVE),
            "open_incidents": 0,
            "version": 3,
        },
    }
    message = TpsChanged(tps=tps_public(tps, [], NOW))
    assert message.to_bytes() == orjson.dumps(legacy)
    assert message.bus_key() == "tps:SRG-CKD-001" and message.TOPIC == topics.INCIDENT_UPDATES


# -- a round trip per model ------------------------------------------------------------------------
def _incident() -> IncidentPublic:
    return incident_public(incident_row(), tps_row())


MESSAGES: list[tuple[Message, TypeAdapter[Any] | None, str, str]] = [
    (IncidentChanged(incident=_incident()), INCIDENT_UPDATE, topics.INCIDENT_UPDATES, "INC-ABC123"),
    (TpsChanged(tps=tps_public(tps_row(), [], NOW)), INCIDENT_UPDATE, topics.INCIDENT_UPDATES, "tps:SRG-CKD-001"),
    (
        AlertIntent(
            alert_id="INC-ABC123:1:police:0",
            incident_id="INC-ABC123",
            level=1,
            audience=Audience.POLICE,
            reason="window_expired",
            created_at=NOW,
            incident=_incident(),
        ),
        None,
        topics.ALERTS,
        "INC-ABC123",
    ),
    (
        AlertIntent(
            alert_id="INC-ABC123:1:bpbd:0",
            incident_id="INC-ABC123",
            level=1,
            audience=Audience.STAKEHOLDER,
            stakeholder="bpbd",
            incident=_incident(),
        ),
        None,
        topics.ALERTS,
        "INC-ABC123",
    ),
    *[
        (command, COMMAND, topics.COMMANDS, "Banten/Serang/Cikande")
        for command in [
            Acknowledge(command_id="c1", incident_id="INC-1", **BASE),
            Escalate(command_id="c2", incident_id="INC-1", note="massa bertambah", **BASE),
            Resolve(command_id="c3", incident_id="INC-1", resolution="dibubarkan", **BASE),
            AddNote(command_id="c4", incident_id="INC-1", text="Polsek di lokasi", **BASE),
            Classify(command_id="c5", incident_id="INC-1", category=Category.CROWD, reason="bukan banjir", **BASE),
            Classify(command_id="c6", incident_id="INC-1", severity=Severity.LOW, reason="sudah reda", **BASE),
            ReportFromCommandPost(
                command_id="c7", tps_id="SRG-CKD-001", description="lapor via HT", injuries=1, **BASE
            ),
            Assign(command_id="c8", incident_id="INC-1", personnel_id="P-7", eta_minutes=12, **BASE),
            Assign(command_id="c9", incident_id="INC-1", nearest=True, **BASE),
            AcknowledgeOrder(command_id="c10", incident_id="INC-1", order_id="ORD-1", note="OTW", **BASE),
            RecordDelivery(
                command_id="c11",
                incident_id="INC-1",
                key="INC-1:2:police/ops:0",
                channel="telegram",
                recipient="ops",
                outcome="failed",
                detail="HTTP 403",
                **BASE,
            ),
        ]
    ],
    (
        Assignment(
            order_id="ORD-1",
            target=OrderTarget(kind=TargetKind.PERSON, id="P-7"),
            actor="operator:ops-1",
            issued_at=NOW,
            incident_id="INC-1",
            personnel_id="P-7",
            eta_minutes=12,
        ),
        FIELD_ORDER,
        topics.FIELD_ORDERS,
        "person:P-7",
    ),
    (
        HelpOnTheWay(
            order_id="ORD-2",
            target=OrderTarget(kind=TargetKind.TPS, id="SRG-CKD-001"),
            actor="siaga",
            issued_at=NOW,
            incident_id="INC-1",
            assignment_id="ORD-1",
            eta_minutes=12,
        ),
        FIELD_ORDER,
        topics.FIELD_ORDERS,
        "tps:SRG-CKD-001",
    ),
    (
        Broadcast(
            order_id="MSG-1",
            target=OrderTarget(kind=TargetKind.KECAMATAN, id=KEC.key),
            actor="operator:ops-1",
            issued_at=NOW,
            text="hujan deras malam ini, amankan logistik di tempat tinggi",
            priority="urgent",
        ),
        FIELD_ORDER,
        topics.FIELD_ORDERS,
        "kecamatan:Banten/Serang/Cikande",
    ),
    (
        Broadcast(
            order_id="MSG-2", target=OrderTarget(kind=TargetKind.ALL), actor="operator:ops-1", issued_at=NOW, text="x"
        ),
        FIELD_ORDER,
        topics.FIELD_ORDERS,
        "all",
    ),
]


@pytest.mark.parametrize(("message", "adapter", "topic", "key"), MESSAGES, ids=lambda v: type(v).__name__)
def test_round_trip(message: Message, adapter: TypeAdapter[Any] | None, topic: str, key: str) -> None:
    raw = message.to_bytes()
    assert type(message).model_validate_json(raw) == message
    if adapter is not None:  # a topic that carries several kinds: the discriminator picks the model
        assert adapter.validate_json(raw) == message
    assert topic == message.TOPIC and message.bus_key() == key
    assert orjson.loads(raw) == message.model_dump(mode="json")


def test_a_kecamatan_key_is_the_field_events_key() -> None:
    assert KEC.key == kecamatan_key("Cikande", kabupaten="Serang", provinsi="Banten") == "Banten/Serang/Cikande"
    assert KecamatanKey(kecamatan="Cikande").key == "Cikande"  # a registry without regions yet


def test_the_shared_fake_intent_is_a_valid_contract() -> None:
    intent = AlertIntent.model_validate_json(orjson.dumps(alert_intent()))
    assert intent.incident.severity is Severity.HIGH and intent.message_level == 2


# -- what the models refuse ------------------------------------------------------------------------
def _command(**kw: Any) -> bytes:
    body = {
        "kind": "acknowledge",
        "command_id": "c1",
        "incident_id": "INC-1",
        "kecamatan": KEC.model_dump(),
        "actor": "operator:ops-1",
        "issued_at": "2024-11-27T07:00:00Z",
    }
    body.update(kw)
    return orjson.dumps(body)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (_command(kind="explode"), "does not match any of the expected tags"),
        (_command(incident_id=None), "incident_id"),
        (_command(kecamatan={"provinsi": "Banten", "kabupaten": "Serang"}), "kecamatan.kecamatan\n  Field required"),
        (_command(issued_at="2024-11-27T07:00:00"), "timezone"),
        (_command(kind="classify", reason="why"), "a category, a severity or both"),
        (_command(kind="classify", severity="apocalyptic", reason="why"), "severity"),
        (_command(kind="assign", personnel_id="P-1", nearest=True), "not both or neither"),
        (_command(kind="assign"), "not both or neither"),
        (_command(kind="note", text=""), "text"),
        (_command(kind="delivery_outcome", key="k", channel="c", recipient="r", outcome="lost"), "outcome"),
    ],
)
def test_malformed_commands_are_refused(raw: bytes, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        COMMAND.validate_json(raw)


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ({"kind": "all", "id": "x"}, "except `all`"),
        ({"kind": "tps"}, "names its id"),
        ({"kind": "moon", "id": "1"}, "target.kind"),
    ],
)
def test_malformed_order_targets_are_refused(target: dict[str, Any], reason: str) -> None:
    body = {"kind": "message", "order_id": "M", "target": target, "actor": "a", "issued_at": iso(NOW), "text": "x"}
    with pytest.raises(ValidationError, match=reason):
        FIELD_ORDER.validate_json(orjson.dumps(body))


def test_an_intent_for_another_incident_than_it_carries_is_refused() -> None:
    body = alert_intent()
    body["incident_id"] = "INC-OTHER"
    with pytest.raises(ValidationError, match="is not the incident's id"):
        AlertIntent.model_validate_json(orjson.dumps(body))


# -- consumers send what does not validate to dead-letter, with the reason -------------------------
async def _dead_letters(bus: MemoryBus) -> list[dict[str, Any]]:
    source = bus.consumer([topics.DEAD_LETTER], None, broadcast=True)
    await source.start()
    try:
        return [orjson.loads(r.value) for r in await source.fetch(100, 0.1)]
    finally:
        await source.stop()


def _ctx(tmp_path: Path, bus: MemoryBus) -> Context:
    return make_context(Settings(database_url=f"sqlite:///{tmp_path / 'siaga.db'}"), bus=bus)


def _record(topic: str, value: bytes, offset: int) -> Record:
    return Record(topic=topic, key="INC-1", value=value, offset=offset)


async def test_the_notifier_dead_letters_an_intent_that_does_not_validate(tmp_path: Path) -> None:
    bus = MemoryBus()
    await bus.start()
    notifier = Notifier(_ctx(tmp_path, bus), routing=AlertRouting, recorder=RecordingRecorder())
    wrong_severity = orjson.dumps(alert_intent(severity="apocalyptic"))
    await notifier.handle([_record(topics.ALERTS, b"\x00 not json", 1), _record(topics.ALERTS, wrong_severity, 2)])
    letters = await _dead_letters(bus)
    assert [(d["topic"], d["offset"], d["consumer"]) for d in letters] == [
        (topics.ALERTS, 1, "siaga-notifier"),
        (topics.ALERTS, 2, "siaga-notifier"),
    ]
    assert "Invalid JSON" in letters[0]["reason"]
    assert "incident.severity" in letters[1]["reason"] and letters[1]["value"] == wrong_severity.decode()


async def test_the_dashboard_dead_letters_an_update_that_does_not_validate(tmp_path: Path) -> None:
    bus = MemoryBus()
    await bus.start()
    dashboard = Dashboard(_ctx(tmp_path, bus))
    good = IncidentChanged(incident=_incident()).to_bytes()
    bad = orjson.dumps({"type": "incident", "incident": {**orjson.loads(good)["incident"], "status": "lost"}})
    await dashboard.handle([_record(topics.INCIDENT_UPDATES, bad, 1), _record(topics.INCIDENT_UPDATES, good, 2)])
    letters = await _dead_letters(bus)
    assert [(d["offset"], d["consumer"]) for d in letters] == [(1, "dashboard")]
    assert "incident.incident.status" in letters[0]["reason"]
    assert list(dashboard.hub.incidents) == ["INC-ABC123"]  # and it went on
