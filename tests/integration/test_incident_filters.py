"""The list filters of `GET /v1/incidents` (SPEC section 5: status, severity, kecamatan, since; and
the paging the code adds: limit, offset) return exactly the right incidents, newest change first.

Seven incidents are seeded, each differing from the others in status, severity or kecamatan, on a
ManualClock that moves ten seconds between changes, so every incident's last change has its own
instant and the order is known in advance. Every assertion compares exact id lists.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from siaga.clock import ManualClock
from tests.integration.operator_helpers import NO_ALERT_CHANNEL, act, get_incident, report, z
from tests.security import Rig, running_rig, tps_csv

NOW = datetime(2024, 11, 27, 9, 0, tzinfo=UTC)
STEP = timedelta(seconds=10)  # far inside every window and acknowledgement timeout: no deadline acts
WIB = timezone(timedelta(hours=7))


@dataclass(frozen=True)
class Seed:
    name: str
    tps_id: str
    kecamatan: str
    payload: dict[str, Any]
    action: str | None  # what the operator does to it after all are open
    status: str
    severity: str


def seed(
    name: str, kecamatan: str, category: str, text: str, action: str | None, status: str, severity: str, **facts: Any
) -> Seed:
    return Seed(
        name, f"F{name}", kecamatan, {"category": category, "description": text, **facts}, action, status, severity
    )


SEEDS = [
    seed("A", "Anyar", "equipment", "genset mati", None, "open", "low"),
    seed("B", "Anyar", "flood", "air masuk ke TPS", None, "open", "medium"),
    seed("C", "Baros", "violence", "saling dorong di antrean", None, "open", "high"),
    seed("D", "Baros", "violence", "bentrok", None, "escalated", "critical", weapons=True, injuries=2),
    seed("E", "Cinangka", "equipment", "HT rusak", "escalate", "escalated", "low"),
    seed("F", "Cinangka", "logistics", "surat suara kurang", "ack", "acknowledged", "medium"),
    seed("G", "Anyar", "money_politics", "amplop dibagikan", "resolve", "resolved", "low"),
]  # fmt: skip
ORDER = ["G", "F", "E", "D", "C", "B", "A"]  # newest change first: the acted-on ones last changed, in that order


@dataclass
class Seeded:
    rig: Rig
    ids: dict[str, str]  # seed name -> incident id
    changed: dict[str, datetime]  # seed name -> the instant of its last change

    def names(self, items: list[dict[str, Any]]) -> list[str]:
        by_id = {v: k for k, v in self.ids.items()}
        return [by_id.get(i["id"], f"unexpected {i['id']}") for i in items]

    async def listed(self, **params: Any) -> list[str]:
        r = await self.rig.client.get("/v1/incidents", params=params, headers=self.rig.headers("viewer"))
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["count"] == len(doc["items"])
        return self.names(doc["items"])


@pytest.fixture(scope="module")
async def seeded(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Seeded]:
    clock = ManualClock(NOW)
    async with running_rig(
        tmp_path_factory.mktemp("filters"), clock=clock, with_incident=False, **NO_ALERT_CHANNEL
    ) as rig:
        rows = [
            {"tps_id": s.tps_id, "name": f"TPS {s.name}", "kecamatan": s.kecamatan, "desa": "Desa", "lat": "-6.1",
             "lon": "106.1", "rawan": ""}
            for s in SEEDS
        ]  # fmt: skip
        await rig.admin("POST", "/v1/admin/tps/import", content=tps_csv(rows), headers={"Content-Type": "text/csv"})
        _, token = await rig.issue_device([s.tps_id for s in SEEDS])
        out = Seeded(rig, {}, {})
        for s in SEEDS:
            clock.advance(seconds=STEP.total_seconds())
            out.ids[s.name] = await report(rig, token, s.tps_id, **s.payload)
            out.changed[s.name] = clock.now()
        for s in SEEDS:
            if s.action:
                clock.advance(seconds=STEP.total_seconds())
                await act(rig, out.ids[s.name], s.action)
                out.changed[s.name] = clock.now()
        for s in SEEDS:  # the seeds are what they claim to be, or every filter test below is void
            doc = await get_incident(rig, out.ids[s.name])
            assert (doc["status"], doc["severity"], doc["kecamatan"]) == (s.status, s.severity, s.kecamatan), s.name
            assert doc["updated_at"] == z(out.changed[s.name]), s.name
        yield out


async def test_no_filter_lists_every_incident_newest_change_first(seeded: Seeded) -> None:
    assert await seeded.listed() == ORDER


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("open", ["C", "B", "A"]),
        ("escalated", ["E", "D"]),
        ("acknowledged", ["F"]),
        ("resolved", ["G"]),
        ("open,acknowledged", ["F", "C", "B", "A"]),
        ("escalated,resolved", ["G", "E", "D"]),
    ],
)
async def test_status_filter(seeded: Seeded, status: str, expected: list[str]) -> None:
    assert await seeded.listed(status=status) == expected


@pytest.mark.parametrize(
    ("severity", "expected"),
    [
        ("low", ["G", "E", "A"]),
        ("medium", ["F", "B"]),
        ("high", ["C"]),
        ("critical", ["D"]),
        ("high,critical", ["D", "C"]),
    ],
)
async def test_severity_filter(seeded: Seeded, severity: str, expected: list[str]) -> None:
    assert await seeded.listed(severity=severity) == expected


@pytest.mark.parametrize(
    ("kecamatan", "expected"),
    [("Anyar", ["G", "B", "A"]), ("Baros", ["D", "C"]), ("Cinangka", ["F", "E"]), ("Nowhere", [])],
)
async def test_kecamatan_filter(seeded: Seeded, kecamatan: str, expected: list[str]) -> None:
    assert await seeded.listed(kecamatan=kecamatan) == expected


async def test_since_keeps_incidents_changed_at_or_after_the_instant(seeded: Seeded) -> None:
    changed = seeded.changed
    assert await seeded.listed(since=z(NOW)) == ORDER
    # At or after: the incident changed exactly at `since` is in.
    assert await seeded.listed(since=z(changed["E"])) == ["G", "F", "E"]
    assert await seeded.listed(since=z(changed["E"] + timedelta(seconds=1))) == ["G", "F"]
    assert await seeded.listed(since=z(changed["D"])) == ["G", "F", "E", "D"]
    assert await seeded.listed(since=z(changed["G"] + timedelta(seconds=1))) == []
    # The same instant written in WIB (+07:00) means the same thing.
    assert await seeded.listed(since=changed["E"].astimezone(WIB).isoformat()) == ["G", "F", "E"]


async def test_filters_combine(seeded: Seeded) -> None:
    assert await seeded.listed(status="open", kecamatan="Anyar") == ["B", "A"]
    assert await seeded.listed(severity="low", status="escalated,resolved") == ["G", "E"]
    assert await seeded.listed(kecamatan="Baros", severity="critical", status="escalated") == ["D"]
    assert await seeded.listed(kecamatan="Cinangka", since=z(seeded.changed["F"])) == ["F"]
    assert await seeded.listed(kecamatan="Baros", status="resolved") == []


async def test_pages_split_the_list_without_gap_or_overlap(seeded: Seeded) -> None:
    pages = [await seeded.listed(limit=3, offset=offset) for offset in (0, 3, 6, 9)]
    assert pages == [["G", "F", "E"], ["D", "C", "B"], ["A"], []]
    assert await seeded.listed(status="open", limit=2) == ["C", "B"]
    assert await seeded.listed(status="open", limit=2, offset=2) == ["A"]


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 10001}, {"offset": -1}, {"since": "kemarin"}])
async def test_unreadable_paging_or_time_is_refused(seeded: Seeded, params: dict[str, Any]) -> None:
    r = await seeded.rig.client.get("/v1/incidents", params=params, headers=seeded.rig.headers("viewer"))
    assert r.status_code == 422, r.text
    assert next(iter(params)) in r.text, "the answer names the parameter"
