"""Situation reports (SPEC section 10): the regional picture at a moment, in JSON, CSV and PDF, scoped by
the token. On the composed dev app on a ManualClock, so every time in the report is known exactly."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from siaga.clock import ManualClock
from tests.integration.operator_helpers import act, clocked_rig, own_tps, report, z
from tests.security import Rig

T0 = datetime(2024, 11, 27, 2, 0, tzinfo=UTC)  # 09:00 WIB
OWN_TPS = own_tps("LP", "Laporan", 3)  # kecamatan Laporan1..Laporan3, Kabupaten Serang (the default)


@pytest.fixture
async def day(tmp_path: Path) -> AsyncIterator[tuple[Rig, ManualClock, dict[str, str]]]:
    """LP1: escalated at +1 min, acknowledged at +4; LP2: resolved on site at +10; LP3: escalated at +1.
    The clock then stands at +20 minutes."""
    async with clocked_rig(tmp_path, T0, OWN_TPS) as (r, clock, token):
        ids = {
            "LP1": await report(r, token, "LP1", category="equipment", description="HT rusak"),
            "LP2": await report(r, token, "LP2", category="logistics", description="tinta kurang"),
            "LP3": await report(r, token, "LP3", category="crowd", description="warga berkerumun"),
        }
        clock.advance(minutes=1)
        await act(r, ids["LP1"], "escalate")
        await act(r, ids["LP3"], "escalate")
        clock.advance(minutes=3)
        await act(r, ids["LP1"], "ack")
        clock.advance(minutes=6)
        await act(r, ids["LP2"], "resolve", {"resolution": "tinta cadangan datang"})
        clock.advance(minutes=10)
        yield r, clock, ids


async def sitrep(r: Rig, principal: str = "viewer", **params: str) -> Any:
    return await r.client.get("/v1/reports/sitrep", params=params, headers=r.headers(principal))


def mine(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {g["kecamatan"]: g for g in doc["regions"] if g["kecamatan"].startswith("Laporan")}


async def test_the_sitrep_now_counts_times_and_open_escalations(day: tuple[Rig, ManualClock, dict[str, str]]) -> None:
    r, clock, ids = day
    got = await sitrep(r)
    assert got.status_code == 200, got.text
    doc = got.json()
    assert (doc["at"], doc["by"], doc["scope"]) == (z(clock.now()), "kecamatan", None)
    g = mine(doc)
    assert set(g) == {"Laporan1", "Laporan2", "Laporan3"}
    one, two, three = g["Laporan1"], g["Laporan2"], g["Laporan3"]
    assert (one["provinsi"], one["kabupaten"]) == ("Banten", "Kabupaten Serang")
    assert one["incidents"]["by_status"] == {"open": 0, "escalated": 0, "acknowledged": 1, "resolved": 0}
    assert one["median_ack_s"] == 240.0 and one["categories"]["equipment"]["median_ack_s"] == 240.0
    assert one["tps"]["by_state"]["open"] == 1, "acknowledged: no longer escalated on the map"
    assert two["incidents"]["by_status"]["resolved"] == 1 and two["resolved_on_site"] == 1
    assert two["median_resolve_s"] == 600.0 and two["tps"]["by_state"]["normal"] == 1
    assert three["tps"]["by_state"]["escalated"] == 1 and three["incidents"]["by_severity"]["low"] == 0
    ages = {e["id"]: e["age_s"] for e in doc["open_escalations"]}
    assert ages[ids["LP3"]] == 20 * 60 and ages[ids["LP1"]] == 20 * 60
    assert ids["LP2"] not in ages
    assert doc["totals"]["incidents"]["total"] >= 3


async def test_the_sitrep_at_an_earlier_moment_tells_the_picture_then(
    day: tuple[Rig, ManualClock, dict[str, str]],
) -> None:
    r, _, ids = day
    doc = (await sitrep(r, at=z(T0 + timedelta(minutes=2)))).json()
    g = mine(doc)
    assert g["Laporan1"]["incidents"]["by_status"]["escalated"] == 1, "not acknowledged yet at +2"
    assert g["Laporan1"]["median_ack_s"] is None
    assert g["Laporan2"]["incidents"]["by_status"]["open"] == 1 and g["Laporan2"]["resolved_on_site"] == 0
    assert {e["id"]: e["age_s"] for e in doc["open_escalations"]}[ids["LP3"]] == 120
    before = (await sitrep(r, at=z(T0 - timedelta(minutes=5)))).json()
    assert mine(before) and all(x["incidents"]["total"] == 0 for x in mine(before).values()), "nothing yet"


async def test_a_scoped_token_gets_only_its_regions(day: tuple[Rig, ManualClock, dict[str, str]]) -> None:
    r, _, ids = day
    issued = await r.admin(
        "POST",
        "/v1/admin/tokens",
        json={"name": "polsek laporan1", "role": "viewer", "scope": {"kecamatan": ["Laporan1"]}},
    )
    headers = {"Authorization": f"Bearer {issued.json()['token']}"}
    doc = (await r.client.get("/v1/reports/sitrep", headers=headers)).json()
    assert [g["kecamatan"] for g in doc["regions"]] == ["Laporan1"]
    assert [e["id"] for e in doc["open_escalations"]] == [ids["LP1"]]
    assert doc["scope"] == {"provinsi": [], "kabupaten": [], "kecamatan": ["Kabupaten Serang/Laporan1"]}
    by_kab = (await r.client.get("/v1/reports/sitrep?by=kabupaten", headers=headers)).json()
    assert [(g["kabupaten"], g["incidents"]["total"]) for g in by_kab["regions"]] == [("Kabupaten Serang", 1)]


async def test_the_sitrep_as_csv_and_pdf(day: tuple[Rig, ManualClock, dict[str, str]]) -> None:
    r, _, ids = day
    got = await sitrep(r, format="csv")
    assert got.status_code == 200 and got.headers["content-type"].startswith("text/csv")
    assert got.headers["content-disposition"].startswith('attachment; filename="sitrep-')
    rows = list(csv.DictReader(io.StringIO(got.text)))
    everything = {row["kecamatan"]: row for row in rows if row["category"] == "(all)"}
    assert everything["Laporan2"]["status_resolved"] == "1" and everything["Laporan2"]["median_resolve_s"] == "600"
    [equipment] = [row for row in rows if row["kecamatan"] == "Laporan1" and row["category"] == "equipment"]
    assert (equipment["incidents"], equipment["median_ack_s"]) == ("1", "240")

    pdf = await sitrep(r, format="pdf")
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.content)).pages)
    assert "Laporan situasi (sitrep) - 27-11-2024 09:20 WIB" in text
    assert "Laporan1" in text and "Laporan3" in text
    code = (await r.client.get(f"/v1/incidents/{ids['LP3']}", headers=r.headers("viewer"))).json()["code"]
    assert code in text, "the open escalation is listed by its code"


@pytest.mark.parametrize(
    ("params", "field"),
    [({"format": "xml"}, "format"), ({"by": "desa"}, "by"), ({"at": "kemarin"}, "at")],
)
async def test_bad_sitrep_parameters_are_refused_naming_them(
    day: tuple[Rig, ManualClock, dict[str, str]], params: dict[str, str], field: str
) -> None:
    got = await sitrep(day[0], **params)
    assert got.status_code == 422, got.text
    assert field in got.text
