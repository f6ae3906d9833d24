"""Silences in the engine (SPEC section 5): while one is in force, the alerts of the incidents it
matches are held and the incident still escalates; when it ends, the held alerts of those still open
go out once; `critical` is never held. On the unit tests' world (memory store, manual clock)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from services.dispatch.domain import SilenceRule
from siaga.clock import as_utc
from tests.unit.test_engine import World

POWER_CUT = "pemadaman listrik terencana PLN"


def silence(w: World, *, minutes: float = 60, start_in: float = 0, **match: str) -> SilenceRule:
    now = w.clock.now()
    rule = SilenceRule(
        id=f"SIL-{len(w.store.silence_rules) + 1}",
        starts_at=now + timedelta(minutes=start_in),
        ends_at=now + timedelta(minutes=start_in + minutes),
        reason=POWER_CUT,
        **match,
    )
    w.store.silence_rules.append(rule)
    return rule


def end_now(w: World, rule: SilenceRule) -> None:
    """An operator ends it early: its end moves to now (as the API stores it)."""
    i = w.store.silence_rules.index(rule)
    w.store.silence_rules[i] = replace(rule, ends_at=w.clock.now())


def keys(alerts: list[dict[str, object]]) -> list[str]:
    return sorted(str(a["alert_id"]) for a in alerts)


def test_a_silence_holds_a_medium_incidents_alerts_and_releases_them_once_when_it_ends() -> None:
    w = World()
    silence(w, minutes=60, kecamatan="Cikande", category="equipment")
    w.report("T1", "listrik padam, genset mati", category="equipment")  # low: 30 min on site
    w.after(minutes=31)
    inc = w.only("T1")
    assert (inc.status, inc.level) == ("escalated", 1), "a silenced incident still escalates"
    assert w.alerts() == [], "nothing paged while the silence is in force"
    assert [h["level"] for h in inc.held_alerts] == [1]
    assert "alert_silenced" in w.actions(inc.id)

    w.after(minutes=30)  # the silence ends at minute 60; the ack timeout of level 1 raised level 2 meanwhile
    alerts = w.alerts(inc.id)
    assert alerts, "the held alerts went out when the silence ended"
    assert len(keys(alerts)) == len(alerts), "each alert once"
    assert {a["level"] for a in alerts if a["audience"] == "police"} >= {1}
    assert inc.held_alerts == []
    assert "alerts_released" in w.actions(inc.id)
    before = len(w.alerts())
    w.after(minutes=1)
    assert len(w.alerts()) == before, "released once, not on every tick"


def test_critical_is_never_held() -> None:
    w = World()
    silence(w, minutes=120, kecamatan="Cikande")
    w.report("T2", "bentrok massa, dua orang dibacok celurit", category="violence")
    inc = w.only("T2")
    assert inc.severity == "critical"
    assert [a["level"] for a in w.alerts(inc.id) if a["audience"] == "police"] == [1, 2]
    assert inc.held_alerts == []


def test_held_alerts_go_out_at_once_when_the_incident_turns_critical() -> None:
    w = World()
    silence(w, minutes=120, kecamatan="Cikande")
    w.report("T3", "warga berkerumun di depan TPS", category="crowd", crowd_size=60)  # high: 5 min
    inc = w.only("T3")
    w.after(minutes=6)
    assert w.alerts(inc.id) == [] and inc.held_alerts
    inc.severity = "critical"  # as an operator's classify would set it
    w.store.save_incident(inc)
    w.after(seconds=10)
    assert w.alerts(inc.id), "critical releases what was held"
    assert inc.held_alerts == []


def test_a_silence_matches_only_what_it_names() -> None:
    w = World()
    silence(w, minutes=120, tps_id="T1")
    silence(w, minutes=120, kecamatan="Tanara", category="flood")
    w.report("T1", "HT rusak", category="equipment")
    w.report("T4", "HT rusak", category="equipment")  # same kecamatan, another TPS: not silenced
    w.report("F1", "genset mati", category="equipment")  # Tanara, but not a flood: not silenced
    w.after(minutes=31)
    told = {a["incident"]["tps_id"] for a in w.alerts()}
    assert told == {"T4", "F1"}
    assert w.only("T1").held_alerts


def test_a_silence_ended_early_releases_at_the_next_tick_and_a_future_one_holds_nothing_yet() -> None:
    w = World()
    later = silence(w, minutes=60, start_in=120, kecamatan="Cikande")
    now_on = silence(w, minutes=240, tps_id="T5")
    w.report("T5", "HT rusak", category="equipment")
    w.report("T6", "HT rusak", category="equipment")
    w.after(minutes=31)
    assert {a["incident"]["tps_id"] for a in w.alerts()} == {"T6"}, "the planned silence has not started"
    end_now(w, now_on)
    w.after(seconds=10)
    assert {a["incident"]["tps_id"] for a in w.alerts()} == {"T5", "T6"}
    assert later.in_force(w.clock.now() + timedelta(minutes=100))


def test_resolved_while_silenced_drops_the_held_alerts() -> None:
    w = World()
    silence(w, minutes=60, kecamatan="Cikande")
    rid = w.report("T1", "kotak suara belum tiba", category="logistics")  # medium: 15
    w.after(minutes=16)
    assert w.only("T1").held_alerts
    w.post("incident.resolved", "T1", {"report_id": rid, "resolution": "kotak sudah tiba"})
    w.after(minutes=60)
    inc = w.only("T1")
    assert inc.status == "resolved" and inc.held_alerts == []
    assert w.alerts() == [], "a resolved incident's held alerts never go out"
    assert "held_alerts_dropped" in w.actions(inc.id)


def test_reminders_while_silenced_are_kept_as_the_newest_one() -> None:
    w = World()
    silence(w, minutes=24 * 60, kecamatan="Cikande")
    w.report("T1", "warga berkerumun", category="crowd", crowd_size=60)
    w.after(hours=3)  # up to level 3, then a reminder every few minutes
    inc = w.only("T1")
    assert inc.level == 3 and inc.reminders >= 2
    reminders = [h for h in inc.held_alerts if h["reminder"]]
    assert [h["reminder"] for h in reminders] == [inc.reminders], "one held reminder: the newest"
    assert as_utc(w.clock.now()) < w.store.silence_rules[0].ends_at
