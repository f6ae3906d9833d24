"""Two dispatch processes on the real broker share the partitions; one dies with kill -9 under load.

Reports go to TPS in many kecamatan (one TPS each, so that no spread groups them and every incident
speaks for itself; both processes own some), each opening an incident with a local window of
seconds. Midway one dispatch is killed. Its partitions go to the other, which loads their kecamatan
from the database and goes on. Afterwards: every accepted report is one incident with one report
(lost 0, doubled 0), every window fired once (one escalation on each timeline), by whichever
process owned the kecamatan when it expired, and every escalation's alert was delivered.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
import yaml

from services.dispatch.policy import DEFAULT_FILE
from tests.fakes.providers import FakeWebhook
from tests.faults.test_crashes import Poster, lost_and_doubled, settle
from tests.plugins.system import SystemProcs, tps_rows

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

N = 240  # reports, one per TPS, one TPS per kecamatan
WINDOW_S = 20


def test_kill_9_of_one_of_two_dispatchers_loses_nothing_doubles_nothing_and_fires_each_deadline_once(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    policy = yaml.safe_load(DEFAULT_FILE.read_text())
    policy["local_window_minutes"] = {k: WINDOW_S / 60 for k in ("low", "medium", "high")}
    policy["ack_timeout_minutes"] = {1: 60, 2: 60, 3: 60}  # nothing climbs past level 1 in this test
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    with FakeWebhook(dedupe=False) as hook:
        env = {"SIAGA_POLICY_FILE": str(path), "SIAGA_WEBHOOK_URL": hook.hook_url}
        sysm = SystemProcs(tmp_path, kafka=kafka_bootstrap, env=env)
        try:
            sysm.start("dispatch", "dispatch2", "ingest", "dashboard")
            rows = tps_rows(N)
            for i, row in enumerate(rows):
                row["kecamatan"] = f"Kec{i:03d}"
            sysm.import_tps(rows)
            device, op = sysm.device([r["tps_id"] for r in rows]), sysm.token("operator")
            # The group's rebalance that gives the second process its share may still be under way
            # when both are ready (the broker waits for the members to rejoin): wait for it.
            deadline = time.monotonic() + 60
            while not all("partitions assigned" in sysm.log(n) for n in ("dispatch", "dispatch2")):
                assert time.monotonic() < deadline, "both processes own partitions"
                time.sleep(0.5)
            poster = Poster(
                sysm,
                device,
                [r["tps_id"] for r in rows],
                rate=60,
                payload={"description": "Kotak suara belum tiba", "category": "logistics"},
            )
            poster.start()
            time.sleep(2.0)  # under load
            sysm.kill("dispatch2")
            poster.join(240)
            assert not poster.is_alive(), "the poster could not get every report accepted"
            incidents = settle(sysm, op, len(poster.accepted), timeout=120)
            lost, doubled = lost_and_doubled(poster, incidents)
            # Every window expires (the last report's within WINDOW_S of its posting), at the survivor.
            end = time.monotonic() + WINDOW_S + 60
            while time.monotonic() < end:
                if all(i["level"] >= 1 for i in sysm.incidents(op)):
                    break
                time.sleep(1.0)
            time.sleep(3.0)  # a second firing, if there were one, has had its ticks
            final = sysm.incidents(op)
            escalated = sum(i["level"] >= 1 for i in final)
            # Fired once: one window_expired escalation on each incident's timeline (a redelivered
            # alert may reach the webhook twice under its idempotency key; that is the notifier's
            # at-least-once, so the webhook is asked only whether each incident's alert arrived).
            fired: dict[str, int] = {}
            for inc in final:
                r = httpx.get(
                    f"{sysm.urls['dispatch']}/v1/incidents/{inc['id']}",
                    headers={"Authorization": f"Bearer {op}"},
                    timeout=30,
                )
                r.raise_for_status()
                fired[inc["id"]] = sum(
                    e["action"] == "escalated" and e["detail"].get("reason") == "window_expired"
                    for e in r.json()["timeline"]
                )
            twice = sum(n > 1 for n in fired.values())

            def alerted() -> set[str]:
                return {
                    r.json()["incident"]["id"]
                    for r in hook.requests
                    if r.accepted and ":1:police/" in r.json()["idempotency_key"]
                }

            # The killed process's notifier held some alert partitions: the survivor's takes them over
            # after the group's session timeout, and delivers within the channel's rate limit.
            end = time.monotonic() + 60
            while time.monotonic() < end and len(alerted()) < len(final):
                time.sleep(0.5)
            print(
                f"two dispatchers, one killed: {len(poster.accepted)} accepted, statuses={poster.statuses}, "
                f"lost={lost} doubled={doubled}, escalated {escalated}/{len(final)}, window escalations "
                f"{sum(fired.values())}, {twice} fired twice, level-1 alerts for {len(alerted())} incidents"
            )
            assert len(poster.accepted) == N
            assert (lost, doubled) == (0, 0)
            assert escalated == len(final) == N, "every pending window fired, the dead one's too"
            assert twice == 0 and all(n == 1 for n in fired.values()), "each window fired once"
            assert alerted() == {i["id"] for i in final}, "every escalation's alert was delivered"
            assert "partitions assigned" in sysm.log("dispatch").split("partitions revoked")[-1], "taken over"
        finally:
            sysm.stop()
