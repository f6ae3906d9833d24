"""Property: whatever a holder of a valid token sends, the services never answer 5xx.

Hypothesis generates bodies that are mostly the right shape with wrong or odd values (the inputs
most likely to slip past a first check), plus arbitrary JSON. The extremes (ids and offsets beyond
64 bits, naive `since`, non-finite policy numbers, deep nesting) have explicit cases in
test_hostile_input.py; the strategies here stay within them so that the examples go to the rest.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import orjson
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from siaga.clock import ManualClock
from siaga.events import DEVICE_CATEGORIES, EventType, Phase
from tests.security import Rig, running_rig

# A fixed instant, not the time of import: the rig's clock is frozen here, and every event the rig
# seeds is stamped by that clock, so nothing depends on how long the suite ran before this module.
NOW = datetime(2024, 11, 27, 8, 0, tzinfo=UTC)
FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ALLOWED_INGEST = {202, 400, 403, 404, 409, 413, 422}
BIG = 2**62  # SQLite integers are 64-bit; beyond that has explicit cases in test_hostile_input.py

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-BIG, BIG)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


def maybe(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a valid value, sometimes anything."""
    return st.one_of(valid, valid, valid, json_values)


times = st.datetimes(
    min_value=(NOW - timedelta(hours=50)).replace(tzinfo=None),
    max_value=(NOW + timedelta(minutes=20)).replace(tzinfo=None),
    timezones=st.sampled_from([UTC]) | st.timezones(),
).map(lambda d: d.isoformat())
locations = st.fixed_dictionaries({"lat": maybe(st.floats(-100, 100)), "lon": maybe(st.floats(-200, 200))})
payloads = st.fixed_dictionaries(
    {},
    optional={
        "category": maybe(st.sampled_from([*DEVICE_CATEGORIES, "silent_post"])),
        "description": maybe(st.text(max_size=300)),
        "injuries": maybe(st.integers(-5, 1000)),
        "weapons": maybe(st.booleans()),
        "crowd_size": maybe(st.integers(-5, 100_000)),
        "needs_backup": maybe(st.booleans()),
        "location": maybe(locations),
        "report_id": maybe(st.text(max_size=20)),
        "note": maybe(st.text(max_size=50)),
        "resolution": maybe(st.text(max_size=50)),
        "reason": maybe(st.text(max_size=50)),
        "personnel_id": maybe(st.text(max_size=20)),
        "status": maybe(st.sampled_from(["on_duty", "off_duty", "unwell"])),
        "battery": maybe(st.integers(-10, 110)),
        "phase": maybe(st.sampled_from([p.value for p in Phase])),
    },
)
events = st.fixed_dictionaries(
    {
        "event_id": maybe(st.uuids().map(str)),
        "type": maybe(st.sampled_from([t.value for t in EventType])),
        "tps_id": maybe(st.sampled_from(["T1", "T2", "K1", "NOPE", "t1", " T1 "])),
        "occurred_at": maybe(times),
        "payload": maybe(payloads),
    },
    optional={"extra": json_values},
)
# Any text, percent-encoded into the path (the app sees it decoded); "." and ".." would be resolved away.
ids = st.text(min_size=1, max_size=40).filter(lambda s: s not in (".", "..")).map(lambda s: quote(s, safe=""))


@pytest_asyncio.fixture(scope="module")
async def rig(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Rig]:
    async with running_rig(
        tmp_path_factory.mktemp("fuzz"), clock=ManualClock(NOW), device_rate_per_s=1e6, device_burst=1_000_000
    ) as r:
        yield r
        assert (await r.client.get("/healthz")).status_code == 200


def no_5xx(r: Any) -> None:
    assert r.status_code < 500, f"{r.request.method} {r.request.url}: {r.status_code} {r.text[:300]}"


@FUZZ
@given(body=events | json_values)
async def test_post_event(rig: Rig, body: Any) -> None:
    r = await rig.client.post("/v1/events", content=orjson.dumps(body), headers=rig.headers("device"))
    no_5xx(r)
    assert r.status_code in ALLOWED_INGEST, r.text[:300]


@FUZZ
@given(body=st.fixed_dictionaries({"events": st.lists(events | json_values, max_size=12)}) | json_values)
async def test_post_batch(rig: Rig, body: Any) -> None:
    r = await rig.client.post("/v1/events/batch", content=orjson.dumps(body), headers=rig.headers("device"))
    no_5xx(r)
    assert r.status_code in ALLOWED_INGEST, r.text[:300]
    if r.status_code == 202:
        n = len(body["events"])
        answer = r.json()
        assert len(answer["accepted"]) + len(answer["duplicates"]) + len(answer["rejected"]) == n


@FUZZ
@given(
    action=st.sampled_from(["ack", "escalate", "resolve", "notes"]),
    seed=st.booleans(),
    ident=ids,
    body=st.fixed_dictionaries(
        {},
        optional={
            "text": maybe(st.text(max_size=100)),
            "note": maybe(st.text(max_size=100)),
            "resolution": maybe(st.text(max_size=100)),
        },
    )
    | json_values,
)
async def test_operator_actions(rig: Rig, action: str, seed: bool, ident: str, body: Any) -> None:
    incident = rig.incident_id if seed else ident
    r = await rig.client.post(
        f"/v1/incidents/{incident}/{action}",
        content=orjson.dumps(body),
        headers=rig.headers("operator", **{"Content-Type": "application/json"}),
    )
    no_5xx(r)


@FUZZ
@given(
    params=st.fixed_dictionaries(
        {},
        optional={
            "status": st.text(max_size=40),
            "severity": st.text(max_size=40),
            "kecamatan": st.text(max_size=40),
            "since": st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat())
            | st.text(max_size=20).filter(lambda s: not s[:1].isdigit()),
            "limit": st.integers(-BIG, BIG).map(str) | st.text(max_size=5),
            "offset": st.integers(-10, BIG).map(str) | st.text(max_size=5),
        },
    )
)
async def test_incident_list(rig: Rig, params: dict[str, str]) -> None:
    r = await rig.client.get("/v1/incidents", params=params, headers=rig.headers("viewer"))
    no_5xx(r)


@FUZZ
@given(
    body=st.fixed_dictionaries(
        {},
        optional={
            "personnel_id": maybe(st.text(max_size=30)),
            "tps_ids": maybe(st.lists(st.sampled_from(["T1", "T2", "K1", "NOPE"]) | st.text(max_size=10), max_size=5)),
            "kecamatan": maybe(
                st.lists(st.sampled_from(["Cikande", "Kopo", "Atlantis"]) | st.text(max_size=10), max_size=3)
            ),
        },
    )
    | json_values
)
async def test_admin_devices(rig: Rig, body: Any) -> None:
    r = await rig.client.post(
        "/v1/admin/devices",
        content=orjson.dumps(body),
        headers=rig.headers("admin", **{"Content-Type": "application/json"}),
    )
    no_5xx(r)
    assert r.status_code in (201, 400, 422), r.text[:300]


@FUZZ
@given(
    body=st.fixed_dictionaries(
        {},
        optional={"name": maybe(st.text(max_size=60)), "role": maybe(st.sampled_from(["viewer", "operator", "admin"]))},
    )
    | json_values
)
async def test_admin_tokens(rig: Rig, body: Any) -> None:
    r = await rig.client.post(
        "/v1/admin/tokens",
        content=orjson.dumps(body),
        headers=rig.headers("admin", **{"Content-Type": "application/json"}),
    )
    no_5xx(r)
    assert r.status_code in (201, 400, 422), r.text[:300]


@FUZZ
@given(kind=st.sampled_from(["devices", "tokens"]), ident=ids | st.integers(-BIG, BIG).map(str))
async def test_admin_revoke_odd_ids(rig: Rig, kind: str, ident: str) -> None:
    r = await rig.client.delete(f"/v1/admin/{kind}/{ident}", headers=rig.headers("admin"))
    no_5xx(r)
    assert r.status_code in (404, 422), r.text[:300]


finite = st.floats(
    -1e6, 1e6, allow_nan=False, allow_infinity=False
)  # 1e300 and inf: explicit cases in test_hostile_input.py
policy_values = (
    st.none()
    | st.booleans()
    | st.integers(-1000, 1000)
    | finite
    | st.text(max_size=20)
    | st.lists(st.text(max_size=10), max_size=3)
    | st.dictionaries(st.text(max_size=10), finite | st.text(max_size=10), max_size=3)
)


@FUZZ
@given(data=st.data())
async def test_admin_policy(rig: Rig, data: st.DataObject) -> None:
    current = (await rig.admin("GET", "/v1/admin/policy")).json()["policy"]
    doc = dict(current)
    for key in data.draw(st.lists(st.sampled_from(sorted(current)), max_size=3)):
        doc[key] = data.draw(policy_values)
    if data.draw(st.booleans()):
        doc[data.draw(st.text(max_size=10))] = data.draw(policy_values)
    r = await rig.client.put("/v1/admin/policy", content=orjson.dumps(doc), headers=rig.headers("admin"))
    no_5xx(r)
    if r.status_code == 200:
        # Keep the default in force for the other examples (a fuzzed policy may be legal but odd).
        await rig.admin("PUT", "/v1/admin/policy", content=orjson.dumps(current))
