"""Regions and scoped tokens (SPEC section 10), on the composed dev app on a real server.

The registry has a kecamatan name that repeats in two kabupaten (Ciruas in Serang and in Lebak), a
second kecamatan in Serang, and one in another provinsi. An operator scoped to Serang's Ciruas and a
viewer scoped to Jawa Barat then see and act only inside their regions, everywhere: the incident list
and routes, command-post reports, messages, silences and the WebSocket (snapshot and deltas). Outside
the scope a thing is answered as if it did not exist.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import pytest_asyncio
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.security import Rig, served_rig

SERANG, LEBAK, BOGOR = "Kabupaten Serang", "Kabupaten Lebak", "Kabupaten Bogor"
REGISTRY = [
    # tps_id, kecamatan, kabupaten, provinsi
    ("RG-SC1", "Ciruas", SERANG, "Banten"),
    ("RG-SC2", "Ciruas", SERANG, "Banten"),
    ("RG-SK1", "Kramatwatu", SERANG, "Banten"),
    ("RG-LC1", "Ciruas", LEBAK, "Banten"),
    ("RG-BC1", "Ciawi", BOGOR, "Jawa Barat"),
]
HEADER = ["tps_id", "name", "kecamatan", "desa", "lat", "lon", "rawan", "kabupaten", "provinsi"]


def registry_csv() -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(HEADER)
    for tps_id, kec, kab, prov in REGISTRY:
        w.writerow([tps_id, f"TPS {tps_id}", kec, "Desa", "-6.1", "106.2", "", kab, prov])
    return buf.getvalue().encode()


@dataclass
class World:
    rig: Rig
    hostport: str
    device: str
    operator: str  # scoped to Kabupaten Serang/Ciruas
    viewer: str  # scoped to Jawa Barat
    incidents: dict[str, str]  # tps id -> incident id

    def as_operator(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.operator}"}

    async def report(self, tps_id: str, text: str = "HT rusak, tidak bisa lapor") -> str:
        ev = self.rig.event(tps_id, payload={"category": "equipment", "description": text})
        r = await self.rig.client.post("/v1/events", json=ev, headers={"Authorization": f"Bearer {self.device}"})
        assert r.status_code == 202, r.text
        return await self.rig.wait_for_incident(tps_id)


async def token(rig: Rig, role: str, scope: dict[str, list[str]] | None) -> Any:
    return await rig.client.post(
        "/v1/admin/tokens", json={"name": f"{role}-scoped", "role": role, "scope": scope}, headers=rig.headers("admin")
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    async with served_rig(tmp_path_factory.mktemp("scopes")) as (rig, hostport):
        await rig.admin("POST", "/v1/admin/tps/import", content=registry_csv(), headers={"Content-Type": "text/csv"})
        _, device = await rig.issue_device([t[0] for t in REGISTRY])
        op = await token(rig, "operator", {"kecamatan": [f"{SERANG}/Ciruas"]})
        viewer = await token(rig, "viewer", {"provinsi": ["Jawa Barat"]})
        assert op.status_code == 201 and viewer.status_code == 201, (op.text, viewer.text)
        assert op.json()["scope"] == {"provinsi": [], "kabupaten": [], "kecamatan": [f"{SERANG}/Ciruas"]}
        w = World(rig, hostport, device, op.json()["token"], viewer.json()["token"], {})
        for tps_id, *_ in REGISTRY:
            w.incidents[tps_id] = await w.report(tps_id)
        yield w


pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_regions_come_from_the_import_and_the_defaults(world: World) -> None:
    r = world.rig
    doc = (await r.client.get(f"/v1/incidents/{world.incidents['RG-LC1']}", headers=r.headers("viewer"))).json()
    assert (doc["provinsi"], doc["kabupaten"], doc["kecamatan"]) == ("Banten", LEBAK, "Ciruas")
    # The rig's own TPS were imported without the columns: the settings' defaults.
    t1 = (await r.client.get(f"/v1/incidents/{r.incident_id}", headers=r.headers("viewer"))).json()
    assert (t1["provinsi"], t1["kabupaten"]) == ("Banten", SERANG)


@pytest.mark.parametrize(
    ("role", "scope", "field", "words"),
    [
        ("operator", {"kecamatan": ["Ciruas"]}, "scope.kecamatan", f"ambiguous: Ciruas (in {LEBAK}, {SERANG}"),
        ("operator", {"kecamatan": ["Atlantis", f"{LEBAK}/Kramatwatu"]}, "scope.kecamatan", "not in the registry"),
        ("viewer", {"provinsi": ["Narnia"], "kabupaten": ["Kota Gotham"]}, "scope.provinsi", "Narnia"),
        ("viewer", {"provinsi": ["Narnia"], "kabupaten": ["Kota Gotham"]}, "scope.kabupaten", "Kota Gotham"),
        ("admin", {"provinsi": ["Banten"]}, "scope", "an admin token sees everything"),
        ("viewer", {}, "scope", "name at least one"),
    ],
)
async def test_a_scope_naming_regions_that_do_not_exist_is_refused_with_their_names(
    world: World, role: str, scope: dict[str, list[str]], field: str, words: str
) -> None:
    before = (await world.rig.admin("GET", "/v1/admin/tokens")).json()
    got = await token(world.rig, role, scope)
    assert got.status_code == 422, got.text
    problems = got.json()["detail"]
    assert any(p["field"] == field and words in p["message"] for p in problems), problems
    if "not in the registry" in words:
        assert any("Atlantis" in p["message"] and f"{LEBAK}/Kramatwatu" in p["message"] for p in problems)
    assert (await world.rig.admin("GET", "/v1/admin/tokens")).json() == before, "no token issued"


async def test_the_scoped_operator_lists_and_reads_only_its_kecamatan(world: World) -> None:
    r, mine = world.rig, {world.incidents["RG-SC1"], world.incidents["RG-SC2"]}
    listed = (await r.client.get("/v1/incidents", headers=world.as_operator())).json()
    assert {i["id"] for i in listed["items"]} == mine, "Serang's Ciruas only: not Lebak's, not Kramatwatu"
    filtered = (await r.client.get("/v1/incidents?kecamatan=Ciruas", headers=world.as_operator())).json()
    assert {i["id"] for i in filtered["items"]} == mine
    viewer = (await r.client.get("/v1/incidents", headers={"Authorization": f"Bearer {world.viewer}"})).json()
    assert [i["id"] for i in viewer["items"]] == [world.incidents["RG-BC1"]]
    everyone = (await r.client.get("/v1/incidents?limit=10000", headers=r.headers("operator"))).json()
    assert set(world.incidents.values()) <= {i["id"] for i in everyone["items"]}, "an unscoped token sees all"

    mine_doc = await r.client.get(f"/v1/incidents/{world.incidents['RG-SC1']}", headers=world.as_operator())
    assert mine_doc.status_code == 200
    other = world.incidents["RG-LC1"]
    for method, path, body in (
        ("GET", f"/v1/incidents/{other}", None),
        ("GET", f"/v1/incidents/{other}/candidates", None),
        ("POST", f"/v1/incidents/{other}/ack", None),
        ("POST", f"/v1/incidents/{other}/escalate", {"note": "naik"}),
        ("POST", f"/v1/incidents/{other}/notes", {"text": "cek"}),
        ("POST", f"/v1/incidents/{other}/resolve", {"resolution": "beres"}),
        ("POST", f"/v1/incidents/{other}/classify", {"category": "logistics", "reason": "salah"}),
        ("POST", f"/v1/incidents/{other}/assign", {"personnel_id": "nearest"}),
    ):
        got = await r.client.request(method, path, json=body, headers=world.as_operator())
        assert got.status_code == 404, f"{method} {path}: {got.status_code} {got.text}"
        assert got.json()["detail"] == f"no incident {other!r}", "as if it did not exist"
    untouched = (await r.client.get(f"/v1/incidents/{other}", headers=r.headers("viewer"))).json()
    assert [e["action"] for e in untouched["timeline"]] == ["opened"], "nothing happened to it"

    acked = await r.client.post(f"/v1/incidents/{world.incidents['RG-SC2']}/ack", headers=world.as_operator())
    assert acked.status_code == 200 and acked.json()["status"] == "acknowledged"


async def test_the_scoped_operator_reports_and_sends_only_inside_its_scope(world: World) -> None:
    r, headers = world.rig, world.as_operator()
    outside = await r.client.post(
        "/v1/incidents", json={"tps_id": "RG-LC1", "description": "lapor HT: listrik padam"}, headers=headers
    )
    assert outside.status_code == 422 and "not in the registry" in outside.text
    inside = await r.client.post(
        "/v1/incidents", json={"tps_id": "RG-SC1", "description": "lapor HT: listrik padam"}, headers=headers
    )
    assert inside.status_code == 201, inside.text

    for to, field in (
        ({"tps_ids": ["RG-LC1"]}, "to.tps_ids"),
        ({"kecamatan": ["Kramatwatu"]}, "to.kecamatan"),
        ({"all": True}, "to.all"),
    ):
        got = await r.client.post("/v1/messages", json={"to": to, "text": "siaga"}, headers=headers)
        assert got.status_code == 422, got.text
        assert [p["field"] for p in got.json()["detail"]] == [field]
    sent = await r.client.post("/v1/messages", json={"to": {"tps_ids": ["RG-SC1"]}, "text": "siaga"}, headers=headers)
    assert sent.status_code == 201 and sent.json()["count"] == 1


async def test_the_scoped_operator_silences_only_inside_its_scope(world: World) -> None:
    r, headers = world.rig, world.as_operator()
    ends = (datetime.now(UTC) + timedelta(hours=1)).isoformat()

    async def silence(match: dict[str, str]) -> Any:
        body = {"match": match, "ends_at": ends, "reason": "pemadaman PLN"}
        return await r.client.post("/v1/admin/silences", json=body, headers=headers)

    homonym = await silence({"kecamatan": "Ciruas"})
    assert homonym.status_code == 422 and f"outside your regions: {LEBAK}/Ciruas" in homonym.text
    only_category = await silence({"category": "equipment"})
    assert only_category.status_code == 422 and "names one of them" in only_category.text
    other_tps = await silence({"tps_id": "RG-LC1"})
    assert other_tps.status_code == 422 and "not in the registry: RG-LC1" in other_tps.text
    made = await silence({"kabupaten": SERANG, "kecamatan": "Ciruas"})
    assert made.status_code == 201, made.text
    assert made.json()["match"]["kabupaten"] == SERANG

    # Another region's silence (made by an admin) is neither listed nor ended by the scoped operator.
    theirs = await r.admin(
        "POST", "/v1/admin/silences", json={"match": {"kabupaten": LEBAK}, "ends_at": ends, "reason": "PLN Lebak"}
    )
    listed = (await r.client.get("/v1/admin/silences", headers=headers)).json()
    assert [x["id"] for x in listed] == [made.json()["id"]]
    refused = await r.client.delete(f"/v1/admin/silences/{theirs.json()['id']}", headers=headers)
    assert refused.status_code == 404
    everyone = (await r.client.get("/v1/admin/silences", headers=r.headers("admin"))).json()
    assert {x["id"] for x in everyone} == {made.json()["id"], theirs.json()["id"]}
    assert next(x for x in everyone if x["id"] == theirs.json()["id"])["state"] == "active", "not ended"


async def test_me_names_the_scope(world: World) -> None:
    got = await world.rig.client.get("/me", headers={"Authorization": f"Bearer {world.viewer}"})
    assert got.json() == {
        "name": "viewer-scoped",
        "role": "viewer",
        "scope": {"provinsi": ["Jawa Barat"], "kabupaten": [], "kecamatan": []},
    }


async def next_of(ws: Any, kind: str, timeout_s: float = 10.0) -> dict[str, Any]:
    """The next frame of a kind (stats and heartbeats pass by), flattening batches."""
    async with asyncio.timeout(timeout_s):
        while True:
            msg = orjson.loads(await ws.recv())
            for m in msg["messages"] if msg["type"] == "batch" else [msg]:
                if m["type"] == kind:
                    return dict(m)


async def test_the_websocket_shows_a_scoped_token_only_its_regions(world: World) -> None:
    url = f"ws://{world.hostport}/ws?token={world.operator}"
    async with connect(url) as ws:
        snap = await next_of(ws, "snapshot")
        assert {t["tps_id"] for t in snap["tps"]} == {"RG-SC1", "RG-SC2"}
        assert {i["tps_id"] for i in snap["incidents"]} == {"RG-SC1", "RG-SC2"}
        assert set(snap["stats"]["by_kecamatan"]) == {"Ciruas"}
        seq = snap["seq"]

        await world.report("RG-LC1", "genset mati")  # Lebak's Ciruas: an update, but not for this client
        new_here = await world.report("RG-SC2", "kotak suara rusak sedikit")
        seen: list[dict[str, Any]] = []
        async with asyncio.timeout(10):
            while not any(m.get("incident", {}).get("id") == new_here for m in seen):
                msg = orjson.loads(await ws.recv())
                seen.extend(msg["messages"] if msg["type"] == "batch" else [msg])
        regions = {(m[k]["kabupaten"], m[k]["kecamatan"]) for m in seen for k in ("incident", "tps") if k in m}
        assert regions == {(SERANG, "Ciruas")}, "no delta of another region"
        numbered = [m["seq"] for m in seen if "seq" in m]
        assert numbered == list(range(seq + 1, seq + 1 + len(numbered))), "its own seq, without gaps"

    async with connect(f"ws://{world.hostport}/ws?token={world.viewer}") as ws:
        snap = await next_of(ws, "snapshot")
        assert [t["tps_id"] for t in snap["tps"]] == ["RG-BC1"]
        assert snap["stats"]["incidents"]["total"] == 1

    async with connect(f"ws://{world.hostport}/ws?token={world.rig.tokens['viewer']}") as ws:
        snap = await next_of(ws, "snapshot")
        assert {t[0] for t in REGISTRY} <= {t["tps_id"] for t in snap["tps"]}, "unscoped: everything"


def region_rows(frame: dict[str, Any]) -> dict[tuple[str, ...], dict[str, Any]]:
    levels = ("provinsi", "kabupaten", "kecamatan")
    return {tuple(r[k] for k in levels if k in r): r for r in frame["regions"]}


async def closed_with(url: str) -> tuple[int, str]:
    async with connect(url) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def test_the_summary_view_streams_regions_not_tps_and_then_the_changed_ones(world: World) -> None:
    base = f"ws://{world.hostport}/ws?token={world.rig.tokens['viewer']}&view=summary"
    async with connect(base + "&by=kabupaten") as ws:
        full = await next_of(ws, "summary")
        assert full["full"] is True and full["by"] == "kabupaten" and "tps" not in full.get("stats", {})
        rows = region_rows(full)
        assert {("Banten", SERANG), ("Banten", LEBAK), ("Jawa Barat", BOGOR)} <= set(rows)
        lebak = rows[("Banten", LEBAK)]
        assert sum(lebak["open"].values()) == 1 and lebak["tps"] == {"open": 1}
        r = await world.rig.client.post(
            f"/v1/incidents/{world.incidents['RG-LC1']}/resolve",
            json={"resolution": "HT diganti"},
            headers=world.rig.headers("operator"),
        )
        assert r.status_code == 200, r.text
        async with asyncio.timeout(15):
            while True:
                delta = await next_of(ws, "summary")
                assert delta["full"] is False and delta["seq"] > full["seq"]
                changed = region_rows(delta)
                assert ("Jawa Barat", BOGOR) not in changed, "only the regions that changed"
                if ("Banten", LEBAK) in changed and changed[("Banten", LEBAK)]["open"] == {}:
                    assert changed[("Banten", LEBAK)]["resolved"] == lebak["resolved"] + 1
                    break
    async with connect(base.replace(world.rig.tokens["viewer"], world.operator) + "&by=kecamatan") as ws:
        scoped = region_rows(await next_of(ws, "summary"))
        assert list(scoped) == [("Banten", SERANG, "Ciruas")], "a scoped summary: its regions only"


async def test_drilling_down_opens_the_detail_of_one_region_inside_the_scope(world: World) -> None:
    viewer = f"ws://{world.hostport}/ws?token={world.rig.tokens['viewer']}"
    async with connect(viewer + "&kabupaten=" + LEBAK.replace(" ", "%20")) as ws:
        snap = await next_of(ws, "snapshot")
        assert [t["tps_id"] for t in snap["tps"]] == ["RG-LC1"]
        assert {i["kabupaten"] for i in snap["incidents"]} <= {LEBAK}
    operator = f"ws://{world.hostport}/ws?token={world.operator}"
    async with connect(operator + "&kecamatan=" + f"{SERANG}/Ciruas".replace(" ", "%20")) as ws:
        snap = await next_of(ws, "snapshot")
        assert {t["tps_id"] for t in snap["tps"]} == {"RG-SC1", "RG-SC2"}
    # A whole kabupaten is more than the operator's one kecamatan: as if it did not exist.
    code, reason = await closed_with(operator + "&kabupaten=" + SERANG.replace(" ", "%20"))
    assert code == 4404 and SERANG in reason
    code, reason = await closed_with(viewer + "&kabupaten=Kabupaten%20Atlantis")
    assert code == 4404 and "Atlantis" in reason
    code, reason = await closed_with(viewer + "&view=map")
    assert code == 4400 and "view" in reason
    code, reason = await closed_with(viewer + "&view=summary&by=desa")
    assert code == 4400 and "desa" in reason
    code, reason = await closed_with(viewer + "&provinsi=Banten&kabupaten=" + LEBAK.replace(" ", "%20"))
    assert code == 4400 and "one region" in reason
