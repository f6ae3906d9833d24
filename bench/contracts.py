"""What the bus contracts cost per message (siaga/contracts.py), against plain orjson on the same data.

Produce: an incident row to the bytes of `IncidentChanged` (build `IncidentPublic`, validate,
`model_dump_json`), against the code before the contracts (a dict of the same fields from the row,
through `orjson.dumps`; the bytes are the same). Consume: the hub's
`apply` on those bytes (validate by the contract, then `orjson.loads` the JSON it holds), against
`orjson.loads` alone. Best of several repeats, in microseconds a message.

    .venv/bin/python -m bench.contracts
"""

from __future__ import annotations

import timeit
from collections.abc import Callable
from datetime import UTC, datetime

import orjson

from bench.common import loadavg, table, write
from services.dashboard.hub import Hub
from services.dispatch.domain import Incident, Tps
from services.dispatch.engine import incident_public, public_incident
from siaga.clock import iso
from siaga.contracts import INCIDENT_UPDATE, IncidentChanged

NOW = datetime(2024, 11, 27, 7, 0, 0, 123456, tzinfo=UTC)


def best_us(fn: Callable[[], object], number: int, repeat: int = 7) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def legacy_bytes(inc: Incident, tps: Tps) -> bytes:
    """The incident update as dispatch built it before the contracts."""
    return orjson.dumps(
        {
            "type": "incident",
            "incident": {
                "id": inc.id,
                "tps_id": inc.tps_id,
                "tps_name": tps.name,
                "kecamatan": inc.kecamatan,
                "category": inc.category,
                "severity": inc.severity,
                "level": inc.level,
                "status": inc.status,
                "reports": inc.reports,
                "opened_at": iso(inc.opened_at),
                "received_at": iso(inc.received_at),
                "local_deadline": iso(inc.local_deadline),
                "ack_deadline": iso(inc.ack_deadline),
                "why": list(inc.why or []),
                "facts": dict(inc.facts or {}),
                "description": inc.description,
                "parent_id": inc.parent_id,
                "children": list(inc.children or []),
                "policy_version": inc.policy_version,
                "updated_at": iso(inc.updated_at),
                "resolved_at": iso(inc.resolved_at),
                "resolution": inc.resolution,
                "last_alert_failure": inc.last_alert_failure,
                "version": inc.version,
            },
        }
    )


def main() -> None:
    tps = Tps(tps_id="SRG-CKD-001", name="TPS 001 Cikande", kecamatan="Cikande", lat=-6.2, lon=106.1, version=3)
    inc = Incident(
        id="INC-ABC123",
        tps_id=tps.tps_id,
        kecamatan="Cikande",
        category="violence",
        severity="high",
        level=1,
        status="escalated",
        reports=2,
        opened_at=NOW,
        received_at=NOW,
        local_deadline=NOW,
        facts={"injuries": 2, "deaths": 0, "weapons": True, "crowd_size": 0, "deliberate_fire": False},
        why=["category from device: violence", "injuries: at least high"],
        description="Keributan antar pendukung, dua orang luka ringan",
        updated_at=NOW,
        version=4,
    )
    plain = {"type": "incident", "incident": public_incident(inc, tps)}
    assert legacy_bytes(inc, tps) == IncidentChanged(incident=incident_public(inc, tps)).to_bytes()
    raws = [
        orjson.dumps({"type": "incident", "incident": {**plain["incident"], "id": f"INC-{i}"}}) for i in range(2000)
    ]

    def hub_apply() -> None:
        hub = Hub(100)
        for raw in raws:
            hub.apply(raw)

    rows = [
        {"step": "produce: before (dict from the row, orjson)", "us": best_us(lambda: legacy_bytes(inc, tps), 5000)},
        {
            "step": "produce: IncidentChanged(...).to_bytes()",
            "us": best_us(lambda: IncidentChanged(incident=incident_public(inc, tps)).to_bytes(), 5000),
        },
        {"step": "consume: orjson.loads", "us": best_us(lambda: orjson.loads(raws[0]), 20000)},
        {
            "step": "consume: INCIDENT_UPDATE.validate_json",
            "us": best_us(lambda: INCIDENT_UPDATE.validate_json(raws[0]), 5000),
        },
        {"step": "consume: Hub.apply (new incident)", "us": best_us(hub_apply, 3) / len(raws)},
    ]
    for r in rows:
        r["us"] = round(r["us"], 1)
    print(table(rows, ["step", "us"]))
    print(f"load average {loadavg()}")
    write("contracts", {"rows": rows})


if __name__ == "__main__":
    main()
