"""`siaga admin replay-dead-letter` as an operator runs it, against the real broker.

The first test files dead-letter entries of every kind by hand and checks what each option
chooses; the second lets dispatch dead-letter a real event, fixes the cause, replays, and
replays again: the event is applied once.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest

from siaga import topics
from siaga.bus import Bus, Record, dead_letter_value
from siaga.runtime import make_bus
from siaga.settings import Settings
from tests.plugins.system import SIAGA, SystemProcs, tps_rows

pytestmark = pytest.mark.kafka


def replay(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [SIAGA, "admin", "replay-dead-letter", *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result


async def read_topic(bus: Bus, topic: str) -> list[Record]:
    """Everything on a topic now (a broadcast read up to the ends it has)."""
    source = bus.consumer([topic], None, broadcast=True)
    await source.start()
    try:
        ends = {p: o.end for (_, p), o in (await source.offsets()).items() if o.end > o.position}
        out: list[Record] = []
        deadline = time.monotonic() + 30
        while ends and time.monotonic() < deadline:
            for r in await source.fetch(500, 0.5):
                out.append(r)
                if r.offset + 1 >= ends.get(r.partition, 0):
                    ends.pop(r.partition, None)
        return out
    finally:
        await source.stop()


def entry(topic: str, key: str, value: bytes, *, consumer: str, failed_at: datetime, offset: int) -> bytes:
    doc = orjson.loads(dead_letter_value(Record(topic, key, value, 1, offset), "ValueError: boom", consumer))
    doc["failed_at"] = failed_at.isoformat()
    return orjson.dumps(doc)


def test_the_options_choose_what_goes_back(tmp_path: Path, kafka_bootstrap: str) -> None:
    prefix = f"r{uuid.uuid4().hex[:8]}."
    env = {
        **os.environ,
        "SIAGA_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "SIAGA_TOPIC_PREFIX": prefix,
        "SIAGA_DATABASE_URL": f"sqlite:///{tmp_path / 'unused.db'}",
    }
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=prefix)
    now = datetime.now(UTC)
    old_event, new_event = b'{"event_id": "old"}', b'{"event_id": "new"}'
    filed = [
        entry(topics.FIELD_EVENTS, "T1", old_event, consumer="dispatch", failed_at=now - timedelta(hours=2), offset=10),
        entry(topics.FIELD_EVENTS, "T2", new_event, consumer="dispatch", failed_at=now, offset=11),
        entry(topics.ALERTS, "INC-1", b'{"alert": 1}', consumer="siaga-notifier", failed_at=now, offset=5),
        entry(topics.INCIDENT_UPDATES, "INC-1", b"{}", consumer="dashboard", failed_at=now, offset=3),
        entry(topics.FIELD_EVENTS, "T2", new_event, consumer="dispatch", failed_at=now, offset=11),  # filed twice
        b"\x00 not an entry",
        entry("someone.elses-topic", "k", b"x", consumer="dispatch", failed_at=now, offset=1),
    ]

    async def file_entries() -> None:
        bus = make_bus(settings)
        await bus.start()
        try:
            for value in filed:  # one by one: the dead-letter topic keeps their order
                await bus.publish(topics.DEAD_LETTER, "k", value)
        finally:
            await bus.stop()

    async def on_topics() -> dict[str, Counter[tuple[str | None, bytes]]]:
        bus = make_bus(settings)
        await bus.start()
        try:
            return {
                t: Counter((r.key, r.value) for r in await read_topic(bus, t))
                for t in (topics.FIELD_EVENTS, topics.ALERTS, topics.INCIDENT_UPDATES)
            }
        finally:
            await bus.stop()

    asyncio.run(file_entries())

    dry = replay(env, "--dry-run")
    lines = dry.stdout.splitlines()
    assert sum("-> would replay" in line for line in lines) == 3, dry.stdout
    assert sum("-> duplicate" in line for line in lines) == 1
    assert sum("-> not replayable" in line for line in lines) == 2
    assert sum("unreadable" in line for line in lines[:-1]) == 1
    assert lines[-1].startswith("read 7 dead-letter entries") and "nothing published" in lines[-1]
    assert not any(asyncio.run(on_topics()).values()), "a dry run publishes nothing"

    recent = replay(env, "--topic", topics.FIELD_EVENTS, "--since", "30m")
    assert "1 replayed" in recent.stdout and "published 1/1" in recent.stderr
    assert asyncio.run(on_topics()) == {
        topics.FIELD_EVENTS: Counter({("T2", new_event): 1}),
        topics.ALERTS: Counter(),
        topics.INCIDENT_UPDATES: Counter(),
    }

    oldest = replay(env, "--consumer", "dispatch", "--limit", "1")
    assert "1 replayed" in oldest.stdout
    assert asyncio.run(on_topics())[topics.FIELD_EVENTS] == Counter({("T2", new_event): 1, ("T1", old_event): 1})

    alerts = replay(env, "--topic", topics.ALERTS, "--until", (now + timedelta(minutes=1)).isoformat())
    assert "1 replayed" in alerts.stdout
    assert asyncio.run(on_topics())[topics.ALERTS] == Counter({("INC-1", b'{"alert": 1}'): 1})

    later = replay(env, "--from-offset", str(len(filed)))
    assert "replayed" not in later.stdout.splitlines()[-1]
    assert sum(asyncio.run(on_topics())[topics.FIELD_EVENTS].values()) == 2


def test_a_dead_lettered_event_replayed_after_the_fix_is_applied_once(tmp_path: Path, kafka_bootstrap: str) -> None:
    sysm = SystemProcs(tmp_path, kafka=kafka_bootstrap)
    sysm.start("dispatch", "ingest")
    try:
        sysm.import_tps(tps_rows(1))
        device, viewer = sysm.device(["T0000"]), sysm.token("viewer")
        report_id, note = str(uuid.uuid4()), f"massa bertambah {uuid.uuid4().hex[:6]}"

        def post(event_type: str, event_id: str, payload: dict[str, object]) -> None:
            ev = {
                "event_id": event_id,
                "type": event_type,
                "tps_id": "T0000",
                "occurred_at": datetime.now(UTC).isoformat(),
                "payload": payload,
            }
            r = httpx.post(
                sysm.urls["ingest"] + "/v1/events", json=ev, headers={"Authorization": f"Bearer {device}"}, timeout=30
            )
            assert r.status_code == 202, r.text

        # The update reaches dispatch before its report (say the report went by another device):
        # dispatch knows no incident for it and gives up on it.
        post("incident.update", str(uuid.uuid4()), {"report_id": report_id, "note": note})
        settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=sysm.env["SIAGA_TOPIC_PREFIX"])

        async def dead_letters() -> list[Record]:
            bus = make_bus(settings)
            await bus.start()
            try:
                return await read_topic(bus, topics.DEAD_LETTER)
            finally:
                await bus.stop()

        deadline = time.monotonic() + 30
        while not (dead := asyncio.run(dead_letters())) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert len(dead) == 1 and "UnknownReport" in orjson.loads(dead[0].value)["reason"]

        post("incident.reported", report_id, {"description": "bentrok antar pendukung di depan TPS"})
        [incident] = sysm.wait_for(viewer, lambda i: i["tps_id"] == "T0000")

        def timeline() -> str:
            r = httpx.get(
                f"{sysm.urls['dispatch']}/v1/incidents/{incident['id']}",
                headers={"Authorization": f"Bearer {viewer}"},
                timeout=30,
            )
            r.raise_for_status()
            return json.dumps(r.json(), ensure_ascii=False)

        def wait_until_in_timeline(text: str) -> None:
            deadline = time.monotonic() + 30
            while text not in timeline() and time.monotonic() < deadline:
                time.sleep(0.2)

        assert note not in timeline()
        first = replay(sysm.env, "--consumer", "dispatch")
        assert "1 replayed" in first.stdout, first.stdout
        wait_until_in_timeline(note)
        assert timeline().count(note) == 1, "the replayed update is applied"

        again = replay(sysm.env, "--consumer", "dispatch")
        assert "1 replayed" in again.stdout
        # An update after the second replay, on the same TPS (same partition, so behind the copy):
        # once it is in, the copy was handled.
        marker = f"sesudah replay {uuid.uuid4().hex[:6]}"
        post("incident.update", str(uuid.uuid4()), {"report_id": report_id, "note": marker})
        wait_until_in_timeline(marker)
        assert marker in timeline()
        assert timeline().count(note) == 1, "replaying again changes nothing: dispatch applies an event once"
    finally:
        sysm.stop()
