"""The WebSocket's messages are those of their JSON Schemas (docs/schemas/ws).

Real frames from a running dashboard: `siaga dev`'s composed app on a real uvicorn server (the
populated rig of tests.security), incidents opened through ingest and dispatch, TPS from the
registry import. Every frame a client gets (snapshot, incident, tps and stats deltas, a batch,
heartbeats, a replay on resume, a fresh snapshot for a `since` it cannot replay) must match
frame.json and the schema of its own type, and each type must have been seen.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import jsonschema_rs
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from scripts import ws_schemas
from services.dashboard.app import Dashboard
from tests.security import Rig, served_rig

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas" / "ws"
TYPES = ("snapshot", "incident", "tps", "stats", "heartbeat", "batch", "summary")
TIMEOUT_S = 10.0


def _retrieve(uri: str) -> Any:
    """A `$ref` to a sibling file (`objects/incident.json`), resolved against the schemas' folder."""
    path = Path(unquote(urlparse(uri).path))
    assert path.is_relative_to(SCHEMAS), uri
    return json.loads(path.read_text(encoding="utf-8"))


def validator(name: str) -> Any:
    path = SCHEMAS / name
    return jsonschema_rs.validator_for(
        json.loads(path.read_text(encoding="utf-8")),
        base_uri=path.as_uri(),
        retriever=_retrieve,
        validate_formats=True,
    )


def problems(name: str, frame: dict[str, Any]) -> list[str]:
    return [f"{'/'.join(map(str, e.instance_path))}: {e.message}" for e in validator(name).iter_errors(frame)]


async def frames_until(ws: ClientConnection, done: Any, seen: list[dict[str, Any]]) -> None:
    """Receive into `seen` until `done(seen)`."""
    while not done(seen):
        seen.append(orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT_S)))


def has(kind: str, frames: list[dict[str, Any]]) -> bool:
    return any(f["type"] == kind for f in frames)


async def post_events(rig: Rig, *tps_ids: str) -> None:
    token = {"Authorization": f"Bearer {rig.seeder_token}"}
    r = await rig.client.post("/v1/events/batch", json={"events": [rig.event(t) for t in tps_ids]}, headers=token)
    assert r.status_code == 202 and len(r.json()["accepted"]) == len(tps_ids), r.text


def test_the_generated_object_schemas_are_up_to_date() -> None:
    for name in ws_schemas.MODELS:
        written = (SCHEMAS / "objects" / name).read_text(encoding="utf-8")
        assert written == ws_schemas.text(name), f"objects/{name} is stale: run python -m scripts.ws_schemas"


def test_every_schema_is_a_valid_json_schema() -> None:
    for path in sorted(SCHEMAS.rglob("*.json")):
        jsonschema_rs.meta.validate(json.loads(path.read_text(encoding="utf-8")))
        validator(str(path.relative_to(SCHEMAS)))  # and its $refs resolve


@pytest.mark.parametrize(
    ("frame", "name"),
    [
        ({"type": "incident", "seq": 1}, "incident.json"),
        ({"type": "heartbeat", "at": "2024-11-27T08:00:00Z", "seq": 3}, "heartbeat.json"),
        ({"type": "stats", "seq": 2, "stats": {"incidents": {}}}, "stats.json"),
        ({"type": "batch", "messages": [{"type": "heartbeat", "at": "2024-11-27T08:00:00Z"}] * 2}, "batch.json"),
        ({"type": "hello"}, "frame.json"),
        ({"type": "summary", "seq": 4, "by": "desa", "full": True, "regions": []}, "summary.json"),
        (
            {"type": "summary", "seq": 4, "by": "provinsi", "full": False, "regions": [{"provinsi": "Banten"}]},
            "summary.json",
        ),
    ],
)
def test_the_schemas_refuse_what_the_protocol_never_sends(frame: dict[str, Any], name: str) -> None:
    assert problems(name, frame)


async def test_real_frames_match_their_schemas(tmp_path: Path) -> None:
    async with served_rig(tmp_path) as (rig, hostport):
        dash = rig.ctx.extras["dashboard"]
        assert isinstance(dash, Dashboard)
        dash.heartbeat_s = 0.5  # a heartbeat within the test, not after 20 s of quiet
        base = f"ws://{hostport}/ws?token={rig.tokens['viewer']}"
        frames: list[dict[str, Any]] = []

        async with connect(base, max_size=None) as ws:
            await frames_until(ws, lambda f: has("snapshot", f), frames)
            await post_events(rig, "S070")
            await frames_until(ws, lambda f: has("incident", f) and has("tps", f) and has("stats", f), frames)
            await frames_until(ws, lambda f: has("heartbeat", f), frames)
        last = max(f["seq"] for f in frames if "seq" in f)

        async with connect(f"{base}&batch=1", max_size=None) as ws:
            got: list[dict[str, Any]] = []
            await frames_until(ws, lambda f: has("snapshot", f), got)
            await post_events(rig, *(f"S{n:03d}" for n in range(71, 81)))
            await frames_until(ws, lambda f: has("batch", f), got)
            frames += got

        async with connect(f"{base}&since={last - 1}", max_size=None) as ws:
            replayed: list[dict[str, Any]] = []
            await frames_until(ws, lambda f: len(f) >= 2, replayed)
            assert replayed[0]["type"] != "snapshot" and replayed[0]["seq"] == last, "a resume replays"
            frames += replayed

        async with connect(f"{base}&since=12", max_size=None) as ws:  # never issued: a fresh snapshot
            await frames_until(ws, lambda f: has("snapshot", f), frames)

        async with connect(f"{base}&view=summary&by=kecamatan") as ws:  # a full summary, then a delta
            summaries: list[dict[str, Any]] = []
            await frames_until(ws, lambda f: has("summary", f), summaries)
            await post_events(rig, "S060")
            await frames_until(ws, lambda f: sum(x["type"] == "summary" for x in f) >= 2, summaries)
            assert [f["full"] for f in summaries if f["type"] == "summary"] == [True, False]
            frames += summaries

        snapshot = next(f for f in frames if f["type"] == "snapshot")
        assert snapshot["incidents"] and snapshot["tps"], "the snapshot holds the rig's incident and registry"
        assert {f["type"] for f in frames} == set(TYPES)
        wrong = {}
        for i, frame in enumerate(frames):
            found = problems("frame.json", frame) + problems(f"{frame['type']}.json", frame)
            if found:
                wrong[f"frame {i} ({frame['type']})"] = found[:5]
        assert not wrong, wrong
