"""The roll-up view (SPEC section 10) on a hub alone: region rows, deltas of changed regions, resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from services.dashboard.app import Dashboard
from services.dashboard.hub import ClientQueue, Hub
from siaga import topics
from siaga.auth import Principal, Role, Scope
from siaga.bus import Record
from siaga.bus.memory import MemoryBus
from siaga.runtime import make_context
from siaga.settings import Settings
from tests.unit.test_dashboard_hub import incident, tps

SERANG = {"kecamatan": "Ciruas", "kabupaten": "Kabupaten Serang", "provinsi": "Banten"}
SERANG_K = {"kecamatan": "Kramatwatu", "kabupaten": "Kabupaten Serang", "provinsi": "Banten"}
LEBAK = {"kecamatan": "Ciruas", "kabupaten": "Kabupaten Lebak", "provinsi": "Banten"}
BOGOR = {"kecamatan": "Ciawi", "kabupaten": "Kabupaten Bogor", "provinsi": "Jawa Barat"}


def national() -> Hub:
    hub = Hub(100, first_seq=500)
    hub.apply(tps("T1", **SERANG))
    hub.apply(tps("T2", state="open", **SERANG))
    hub.apply(tps("T3", state="escalated", checked_in=1, **SERANG_K))
    hub.apply(tps("T4", **LEBAK))
    hub.apply(tps("T5", state="silent", checked_in=0, **BOGOR))
    hub.apply(incident("I1", tps_id="T2", severity="medium", **SERANG))
    hub.apply(incident("I2", tps_id="T3", severity="high", level=1, status="escalated", **SERANG_K))
    hub.apply(incident("I3", tps_id="T4", status="resolved", resolved_at="2024-11-27T08:00:00Z", **LEBAK))
    return hub


def rows(frame: Any) -> dict[tuple[str, ...], dict[str, Any]]:
    levels = ("provinsi", "kabupaten", "kecamatan")
    return {tuple(r[k] for k in levels if k in r): r for r in frame.message["regions"]}


def test_a_summary_by_kabupaten_counts_tps_by_state_and_incidents_by_severity() -> None:
    snap = national().summary("kabupaten").snapshot()
    assert snap.message["type"] == "summary" and snap.message["by"] == "kabupaten" and snap.message["full"] is True
    got = rows(snap)
    assert list(got) == [
        ("Banten", "Kabupaten Lebak"),
        ("Banten", "Kabupaten Serang"),
        ("Jawa Barat", "Kabupaten Bogor"),
    ]
    serang = got[("Banten", "Kabupaten Serang")]
    assert serang["tps"] == {"normal": 1, "open": 1, "escalated": 1}  # zero counts are left out
    assert serang["open"] == {"medium": 1, "high": 1}
    assert serang["escalated"] == {"high": 1}
    assert serang["coverage"] == {"assigned": 6, "checked_in": 5}
    lebak = got[("Banten", "Kabupaten Lebak")]
    assert lebak["open"] == {} and lebak["resolved"] == 1
    assert got[("Jawa Barat", "Kabupaten Bogor")]["tps"] == {"silent": 1}


def test_the_levels_keep_homonym_kecamatan_apart_and_roll_up_to_provinsi() -> None:
    hub = national()
    by_kec = rows(hub.summary("kecamatan").snapshot())
    assert by_kec[("Banten", "Kabupaten Serang", "Ciruas")]["tps"] == {"normal": 1, "open": 1}
    assert by_kec[("Banten", "Kabupaten Lebak", "Ciruas")]["tps"] == {"normal": 1}
    by_prov = rows(hub.summary("provinsi").snapshot())
    assert by_prov[("Banten",)]["tps"] == {"normal": 2, "open": 1, "escalated": 1}
    assert by_prov[("Banten",)]["open"] == {"medium": 1, "high": 1}
    assert by_prov[("Jawa Barat",)]["open"] == {}


def test_a_delta_carries_only_the_changed_regions_whole_with_the_next_seq() -> None:
    hub = national()
    stream = hub.summary("kabupaten")
    client = ClientQueue(10)
    stream.attach(client)
    first = client.take(stream)
    assert [f.message["full"] for f in first] == [True]
    assert stream.flush() is None  # nothing changed since the full summary
    hub.apply(incident("I2", version=2, tps_id="T3", severity="high", status="resolved", **SERANG_K))
    hub.apply(tps("T1", version=2, state="escalated", **SERANG))
    delta = stream.flush()
    assert delta is not None and delta.seq == first[0].seq + 1 and delta.message["full"] is False
    changed = rows(delta)
    assert list(changed) == [("Banten", "Kabupaten Serang")]
    serang = changed[("Banten", "Kabupaten Serang")]
    assert serang["open"] == {"medium": 1} and serang["escalated"] == {} and serang["resolved"] == 1
    assert serang["tps"] == {"open": 1, "escalated": 2}
    assert [f.seq for f in client.take(stream)] == [delta.seq]


def test_a_check_in_that_changes_no_count_sends_no_delta() -> None:
    hub = national()
    stream = hub.summary("provinsi")
    hub.apply(tps("T1", version=2, last_checkin_at="2024-11-27T09:00:00Z", **SERANG))
    assert stream.flush() is None
    hub.apply(tps("T1", version=3, checked_in=1, **SERANG))
    delta = stream.flush()
    assert delta is not None and rows(delta)[("Banten",)]["coverage"]["checked_in"] == 6  # 7 before


def test_a_client_resumes_with_nothing_at_the_current_seq_and_with_a_full_summary_otherwise() -> None:
    hub = national()
    stream = hub.summary("kabupaten")
    current = stream.snapshot().seq
    uptodate, behind = ClientQueue(10), ClientQueue(10)
    stream.attach(uptodate, since=current)
    stream.attach(behind, since=current - 1)
    assert uptodate.take(stream) == []
    assert [f.message["full"] for f in behind.take(stream)] == [True]
    assert hub.clients == 2


def test_the_kabupaten_index_follows_a_tps_that_moves() -> None:
    hub = national()
    assert hub.tps_by_kabupaten["Kabupaten Serang"] == {"T1", "T2", "T3"}
    hub.apply(tps("T1", version=2, **LEBAK))
    assert hub.tps_by_kabupaten["Kabupaten Serang"] == {"T2", "T3"}
    assert hub.tps_by_kabupaten["Kabupaten Lebak"] == {"T1", "T4"}
    assert hub.incidents_by_kabupaten["Kabupaten Lebak"] == {"I3"}


async def test_a_region_view_is_made_from_its_kabupaten_fed_live_and_dropped_when_idle(tmp_path: Path) -> None:
    bus = MemoryBus()
    await bus.start()
    ctx = make_context(Settings(database_url=f"sqlite:///{tmp_path / 'siaga.db'}", ws_view_idle_s=60), bus=bus)
    dash = Dashboard(ctx)
    for n, raw in enumerate(
        [tps("T1", **SERANG), tps("T2", **SERANG_K), tps("T4", **LEBAK), incident("I1", tps_id="T1", **SERANG)]
    ):
        await dash.handle([Record(topic=topics.INCIDENT_UPDATES, key="k", value=raw, offset=n)])
    viewer = Principal("wall", Role.VIEWER)
    hub, source = dash.source_for(viewer, {"kabupaten": "Kabupaten Serang"})
    assert source is hub and set(hub.tps) == {"T1", "T2"} and set(hub.incidents) == {"I1"}
    await dash.handle([Record(topic=topics.INCIDENT_UPDATES, key="k", value=tps("T5", **SERANG_K), offset=9)])
    assert set(hub.tps) == {"T1", "T2", "T5"}, "fed what arrives after it was made"
    client = ClientQueue(10)
    hub.attach(client)
    assert dash.evict_idle(now=0.0) == [] and dash.evict_idle(now=1000.0) == [], "read: kept"
    hub.detach(client)
    assert dash.evict_idle(now=1000.0) == []  # idle from now on
    assert dash.evict_idle(now=1059.0) == []
    assert dash.evict_idle(now=1060.0) == [Scope(kabupaten=frozenset({"Kabupaten Serang"}))]
    assert dash.scoped == {} and dash._hubs_of("Banten", "Kabupaten Serang", "Ciruas") == []
    again, _ = dash.source_for(viewer, {"kabupaten": "Kabupaten Serang"})
    assert again is not hub and set(again.tps) == {"T1", "T2", "T5"}, "rebuilt on demand"
    await bus.stop()


async def test_a_region_view_added_up_from_kabupaten_is_the_view_made_item_by_item(tmp_path: Path) -> None:
    """`Hub.adopt` (whole kabupaten from the main hub's per-kabupaten figures) against a hub fed only
    the region's updates: the same documents, statistics and region rows, for a kabupaten, a provinsi
    and a kecamatan scope, and both keep agreeing as updates arrive."""
    bus = MemoryBus()
    await bus.start()
    dash = Dashboard(make_context(Settings(database_url=f"sqlite:///{tmp_path / 'siaga.db'}"), bus=bus))
    updates = [
        tps("T1", **SERANG),
        tps("T2", state="open", checked_in=1, unwell=1, **SERANG),
        tps("T3", state="escalated", duty_days=2, **SERANG_K),
        tps("T4", **LEBAK),
        tps("T5", state="silent", checked_in=0, **BOGOR),
        incident("I1", tps_id="T2", **SERANG),
        incident("I2", tps_id="T3", severity="high", level=1, status="escalated", **SERANG_K),
        incident("I3", tps_id="T1", status="resolved", resolved_at="2024-11-27T07:20:00Z", **SERANG),
        incident("I4", tps_id="T4", status="resolved", resolved_at="2024-11-27T08:00:00Z", **LEBAK),
    ]
    later = [
        incident("I1", version=2, tps_id="T2", status="resolved", resolved_at="2024-11-27T07:45:00Z", **SERANG),
        tps("T4", version=2, state="open", **LEBAK),
        tps("T6", **SERANG_K),
    ]
    offset = 0

    async def feed(raws: list[bytes]) -> None:
        nonlocal offset
        for raw in raws:
            offset += 1
            await dash.handle([Record(topic=topics.INCIDENT_UPDATES, key="k", value=raw, offset=offset)])

    await feed(updates)
    scopes = {
        "kabupaten": Scope(kabupaten=frozenset({"Kabupaten Serang"})),
        "provinsi": Scope(provinsi=frozenset({"Banten"})),
        "kecamatan": Scope(kecamatan=frozenset({("Kabupaten Serang", "Ciruas")})),
    }
    views = {name: dash.hub_for(scope) for name, scope in scopes.items()}

    def by_hand(scope: Scope, raws: list[bytes]) -> Hub:
        hub = Hub(100)
        for raw in raws:
            body = orjson.loads(raw)
            part = body.get("incident") or body["tps"]
            if scope.admits(part["provinsi"], part["kabupaten"], part["kecamatan"]):
                hub.apply(raw)
        return hub

    def same(view: Hub, expected: Hub) -> None:
        assert set(view.tps) == set(expected.tps) and set(view.incidents) == set(expected.incidents)
        assert view.stats() == expected.stats()
        for level in ("provinsi", "kabupaten", "kecamatan"):
            assert view.regions.rows(level) == expected.regions.rows(level), level  # type: ignore[arg-type]

    for name, scope in scopes.items():
        same(views[name], by_hand(scope, updates))
    await feed(later)
    for name, scope in scopes.items():
        same(views[name], by_hand(scope, updates + later))
    assert set(views["kabupaten"].tps) == {"T1", "T2", "T3", "T6"}
    assert views["kabupaten"].stats()["median_resolve_s"] is not None
    await bus.stop()


def test_the_stats_write_a_kecamatan_name_that_two_kabupaten_have_with_its_kabupaten() -> None:
    by_kec = national().stats()["by_kecamatan"]
    assert set(by_kec) == {"Kabupaten Lebak/Ciruas", "Kabupaten Serang/Ciruas", "Kramatwatu", "Ciawi"}
    assert by_kec["Kabupaten Serang/Ciruas"]["tps"] == 2 and by_kec["Kabupaten Lebak/Ciruas"]["tps"] == 1
    serang_only = Hub(10)
    serang_only.apply(tps("T1", **SERANG))
    assert set(serang_only.stats()["by_kecamatan"]) == {"Ciruas"}, "a name alone where it is unique"
