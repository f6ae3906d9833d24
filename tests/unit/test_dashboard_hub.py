"""The dashboard hub on its own: seq, resume, version order, statistics, back-pressure."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from services.dashboard.hub import ClientQueue, Frame, Hub, InvalidUpdate, batch_text


def incident(ident: str, version: int = 1, **fields: Any) -> bytes:
    body: dict[str, Any] = {
        "id": ident,
        "tps_id": "TPS-1",
        "kecamatan": "Cikande",
        "category": "crowd",
        "severity": "medium",
        "level": 0,
        "status": "open",
        "opened_at": "2024-11-27T07:00:00Z",
        "resolved_at": None,
        "last_alert_failure": None,
        "version": version,
    }
    body.update(fields)
    return orjson.dumps({"type": "incident", "incident": body})


def tps(ident: str, version: int = 1, **fields: Any) -> bytes:
    body: dict[str, Any] = {
        "tps_id": ident,
        "name": ident,
        "kecamatan": "Cikande",
        "lat": -6.1,
        "lon": 106.1,
        "state": "normal",
        "assigned": 2,
        "checked_in": 2,
        "version": version,
    }
    body.update(fields)
    return orjson.dumps({"type": "tps", "tps": body})


def seqs(frames: list[Frame]) -> list[int]:
    return [f.seq for f in frames]


def test_every_delta_gets_the_next_seq_from_the_first() -> None:
    hub = Hub(100, first_seq=1000)
    assert hub.snapshot().seq == 1000
    frames = [hub.apply(incident(f"INC-{i}")) for i in range(5)]
    assert [f.seq for f in frames if f] == [1001, 1002, 1003, 1004, 1005]
    stats = hub.flush_stats()
    assert stats is not None and stats.seq == 1006 and stats.type == "stats"
    assert hub.flush_stats() is None  # nothing changed since
    snap = hub.snapshot().message
    assert snap["type"] == "snapshot" and snap["seq"] == 1006
    assert sorted(i["id"] for i in snap["incidents"]) == [f"INC-{i}" for i in range(5)]


def test_only_newer_versions_are_kept() -> None:
    hub = Hub(100)
    assert hub.apply(incident("INC-1", 2, status="escalated", level=1)) is not None
    assert hub.apply(incident("INC-1", 2, status="open")) is None  # redelivered copy
    assert hub.apply(incident("INC-1", 1, status="open")) is None  # older copy, late
    assert hub.incidents["INC-1"]["status"] == "escalated"
    assert hub.stats()["incidents"]["escalated"] == 1
    newer = hub.apply(incident("INC-1", 3, status="acknowledged", level=1))
    assert newer is not None and newer.message["incident"]["status"] == "acknowledged"
    assert hub.ignored == 2
    assert hub.apply(tps("T1", 5, state="silent")) is not None
    assert hub.apply(tps("T1", 4, state="normal")) is None
    assert hub.tps["T1"]["state"] == "silent"


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (b"\x00 not json at all", "Invalid JSON"),
        (b"[1, 2]", "message"),
        (orjson.dumps({"type": "nonsense"}), "type"),
        (orjson.dumps({"type": "incident"}), "incident.incident: Field required"),
        (incident("X", status="lost"), "incident.incident.status"),
        (incident("X", severity="apocalyptic"), "incident.incident.severity"),
        (incident("X", version="3"), "incident.incident.version"),
        (incident("X", opened_at="27 November"), "incident.incident.opened_at"),
        (incident("X", opened_at="2024-11-27T07:00:00"), "timezone"),  # no offset: not comparable
        (incident("X", level=7), "incident.incident.level"),
        (orjson.dumps({"type": "tps", "tps": {"version": 1}}), "tps.tps.tps_id: Field required"),
        (tps("T1", state="purple"), "tps.tps.state"),
        (tps("T1", assigned=-1), "tps.tps.assigned"),
    ],
)
def test_malformed_updates_are_refused_with_the_reason(message: bytes, reason: str) -> None:
    hub = Hub(10)
    with pytest.raises(InvalidUpdate, match=reason):
        hub.apply(message)
    assert hub.seq == 0 and not hub.incidents and not hub.tps


def test_the_hub_holds_and_forwards_the_message_as_sent() -> None:
    hub = Hub(10)
    frame = hub.apply(incident("INC-1", source="command_post"))  # a field this dashboard does not know yet
    assert frame is not None and frame.message["incident"]["source"] == "command_post"
    assert frame.message["incident"]["opened_at"] == "2024-11-27T07:00:00Z"


def test_resume_replays_what_is_held_and_snapshots_otherwise() -> None:
    hub = Hub(5, first_seq=100)
    for i in range(8):
        hub.apply(incident(f"INC-{i}"))
    assert hub.seq == 108
    replay = hub.replay_since(105)
    assert replay is not None and seqs(replay) == [106, 107, 108]
    assert seqs(hub.replay_since(103) or []) == [104, 105, 106, 107, 108]
    assert hub.replay_since(102) is None  # 103 fell out of the ring
    assert hub.replay_since(108) == []  # up to date
    assert hub.replay_since(109) is None  # never issued here
    assert hub.replay_since(50) is None  # before this hub's first seq


def test_attach_with_since_replays_then_goes_live_without_gap_or_duplicate() -> None:
    hub = Hub(50)
    for i in range(4):
        hub.apply(incident(f"INC-{i}"))
    client = ClientQueue(100)
    hub.attach(client, since=2)
    hub.apply(incident("INC-9"))
    assert seqs(client.take(hub)) == [3, 4, 5]
    hub.apply(tps("T1"))
    assert seqs(client.take(hub)) == [6]
    assert client.take(hub) == []


def test_attach_without_a_usable_since_gets_a_snapshot_covering_later_deltas() -> None:
    hub = Hub(50)
    hub.apply(incident("INC-1"))
    client = ClientQueue(100)
    hub.attach(client, since=77)  # unknown here
    hub.apply(incident("INC-2"))  # before the client's sender ran
    frames = client.take(hub)
    assert [f.type for f in frames] == ["snapshot"]
    assert frames[0].seq == 2 and len(frames[0].message["incidents"]) == 2
    hub.apply(incident("INC-3"))
    assert seqs(client.take(hub)) == [3]


def test_a_replay_longer_than_the_client_queue_becomes_a_snapshot() -> None:
    hub = Hub(100)
    for i in range(10):
        hub.apply(incident(f"INC-{i}"))
    client = ClientQueue(3)
    hub.attach(client, since=1)
    assert [f.type for f in client.take(hub)] == ["snapshot"]


def test_a_lagging_client_is_dropped_to_a_snapshot_and_others_get_everything() -> None:
    hub = Hub(1000)
    woken: list[int] = []
    slow, fast = ClientQueue(3, lambda: woken.append(1)), ClientQueue(1000)
    hub.attach(slow)
    hub.attach(fast)
    assert [f.type for f in slow.take(hub)] == ["snapshot"]
    assert [f.type for f in fast.take(hub)] == ["snapshot"]
    for i in range(10):
        hub.apply(incident(f"INC-{i}"))
    assert slow.resync and slow.resyncs == 1 and len(slow) == 0
    assert seqs(fast.take(hub)) == list(range(1, 11))
    again = slow.take(hub)
    assert [f.type for f in again] == ["snapshot"] and again[0].seq == 10
    assert len(again[0].message["incidents"]) == 10
    hub.apply(incident("INC-10"))
    assert seqs(slow.take(hub)) == [11]
    assert woken  # the sender was told there is work


def test_detached_clients_get_nothing() -> None:
    hub = Hub(10)
    client = ClientQueue(10)
    hub.attach(client)
    client.take(hub)
    hub.detach(client)
    hub.apply(incident("INC-1"))
    assert client.take(hub) == [] and hub.clients == 0


def test_replay_buffer_of_zero_always_snapshots() -> None:
    hub = Hub(0)
    hub.apply(incident("INC-1"))
    hub.apply(incident("INC-2"))
    assert hub.replay_since(1) is None
    assert hub.replay_since(2) == []


def test_stats_math() -> None:
    hub = Hub(100)
    hub.apply(tps("T1", kecamatan="Cikande", assigned=2, checked_in=2, fatigued=1, duty_days=3))
    hub.apply(tps("T2", kecamatan="Cikande", assigned=2, checked_in=0, state="silent", lapsed=2, duty_days=2))
    hub.apply(tps("T3", kecamatan="Kragilan", assigned=4, checked_in=3, state="escalated", unwell=1, off_duty=1))
    # resolved on site in 10 minutes
    hub.apply(incident("A", status="resolved", level=0, resolved_at="2024-11-27T07:10:00Z"))
    # resolved after going up, in 30 minutes
    hub.apply(incident("B", status="resolved", level=2, kecamatan="Kragilan", resolved_at="2024-11-27T07:30:00+00:00"))
    # resolved on site in 20 minutes
    hub.apply(incident("C", status="resolved", level=0, resolved_at="2024-11-27T07:20:00Z"))
    hub.apply(incident("D", status="escalated", level=1, kecamatan="Kragilan", last_alert_failure="telegram: 403"))
    hub.apply(incident("E", status="open", level=0))
    hub.apply(incident("F", status="acknowledged", level=2, kecamatan="Kragilan"))

    s = hub.stats()
    assert s["incidents"] == {"total": 6, "open": 3, "escalated": 2, "acknowledged": 1, "resolved": 3}
    assert s["by_kecamatan"] == {
        "Cikande": {"tps": 2, "open": 1, "escalated": 0, "resolved": 2}
        | {"on_duty": 2, "unwell": 0, "off_duty": 0, "fatigued": 1, "lapsed": 2, "duty_days": 3},
        "Kragilan": {"tps": 1, "open": 2, "escalated": 2, "resolved": 1}
        | {"on_duty": 3, "unwell": 1, "off_duty": 1, "fatigued": 0, "lapsed": 0, "duty_days": 0},
    }
    assert s["resolved_on_site"] == {"resolved": 3, "on_site": 2, "share": round(2 / 3, 4)}
    assert s["median_resolve_s"] == 1200.0
    assert s["coverage"] == {
        "assigned": 8,
        "checked_in": 5,
        "share": 0.625,
        **{"unwell": 1, "off_duty": 1, "fatigued": 1, "lapsed": 2},
    }
    assert s["silent_posts"] == 1
    assert s["alert_failures"] == 1
    assert s["tps"]["by_state"] == {"normal": 1, "open": 0, "escalated": 1, "silent": 1, "closed": 0}

    # A newer copy replaces the old contribution instead of adding to it.
    hub.apply(incident("A", 2, status="resolved", level=0, resolved_at="2024-11-27T07:40:00Z"))
    hub.apply(incident("D", 2, status="resolved", level=1, kecamatan="Kragilan", resolved_at="2024-11-27T08:00:00Z"))
    hub.apply(tps("T2", 2, kecamatan="Cikande", assigned=2, checked_in=2, state="normal"))
    hub.apply(tps("T1", 2, kecamatan="Cikande", assigned=2, checked_in=2, duty_days=1))
    s = hub.stats()
    assert s["incidents"]["resolved"] == 4 and s["incidents"]["open"] == 2
    assert s["alert_failures"] == 0
    # durations now 20, 30, 40, 60 minutes
    assert s["median_resolve_s"] == 2100.0
    assert s["resolved_on_site"]["share"] == 0.5
    assert s["coverage"]["checked_in"] == 7 and s["silent_posts"] == 0
    cikande = s["by_kecamatan"]["Cikande"]
    assert (cikande["lapsed"], cikande["fatigued"], cikande["on_duty"]) == (0, 0, 4)
    assert cikande["duty_days"] == 1, "the most days on duty follows the newer copies down"


def test_empty_stats_have_no_shares() -> None:
    s = Hub(1).stats()
    assert s["resolved_on_site"]["share"] is None
    assert s["median_resolve_s"] is None
    assert s["coverage"]["share"] is None


def test_a_device_clock_ahead_never_gives_a_negative_duration() -> None:
    hub = Hub(10)
    hub.apply(incident("A", status="resolved", opened_at="2024-11-27T08:00:00Z", resolved_at="2024-11-27T07:59:00Z"))
    assert hub.stats()["median_resolve_s"] == 0.0


def test_frames_encode_once_and_batch_reuses_them() -> None:
    hub = Hub(10)
    a = hub.apply(incident("A"))
    b = hub.apply(tps("T1"))
    assert a is not None and b is not None
    assert orjson.loads(a.text) == a.message and a.text is a.text
    batch = orjson.loads(batch_text([a, b]))
    assert batch == {"type": "batch", "messages": [a.message, b.message]}
