"""Scenario tests of the escalation engine (SPEC section 5) on a simulated clock: one per rule."""

from __future__ import annotations

import itertools
import uuid
from datetime import timedelta
from typing import Any

import pytest

from services.dispatch.classify import Classifier
from services.dispatch.domain import Tps
from services.dispatch.engine import Engine, NotAllowed, Received, UnknownReport
from services.dispatch.policy import DEFAULT_FILE, EscalationPolicy, load_file
from services.dispatch.store import MemoryStore
from siaga import topics
from siaga.clock import ManualClock
from siaga.contracts import KecamatanKey, ReportFromCommandPost
from siaga.events import Category, FieldEvent, Severity


class World:
    """An engine on a memory store and a manual clock, with a few TPS."""

    def __init__(self, policy: EscalationPolicy | None = None) -> None:
        self.clock = ManualClock()
        self.store = MemoryStore()
        self.policy = policy or load_file(DEFAULT_FILE)
        self.engine = Engine(self.store, self.policy, Classifier.default(), self.clock)
        for i in range(1, 7):
            self.add_tps(f"T{i}", "Cikande")
        self.add_tps("F1", "Tanara", rawan=["flood"])

    def add_tps(self, tps_id: str, kecamatan: str, rawan: list[str] | None = None) -> None:
        self.store.save_tps(
            Tps(tps_id=tps_id, name=f"TPS {tps_id}", kecamatan=kecamatan, rawan=rawan or [], assigned=2)
        )

    def post(
        self, type_: str, tps_id: str, payload: dict[str, Any], *, ago_min: float = 0.0, event_id: str | None = None
    ) -> str:
        eid = event_id or str(uuid.uuid4())
        ev = FieldEvent(
            event_id=eid,
            type=type_,
            tps_id=tps_id,  # type: ignore[arg-type]
            occurred_at=self.clock.now() - timedelta(minutes=ago_min),
            payload=payload,
        )
        self.engine.apply(Received(ev, "dev_test", self.clock.now()))
        return eid

    def report(self, tps_id: str, text: str, *, ago_min: float = 0.0, **payload: Any) -> str:
        return self.post("incident.reported", tps_id, {"description": text, **payload}, ago_min=ago_min)

    def after(self, **kw: float) -> None:
        """Let time pass, ticking every 10 s of it as dispatch does every second."""
        end = self.clock.now() + timedelta(**kw)
        while self.clock.now() < end:
            self.clock.advance(seconds=10)
            self.engine.tick()

    def only(self, tps_id: str | None = None) -> Any:
        found = [i for i in self.store.incidents.values() if tps_id is None or i.tps_id == tps_id]
        assert len(found) == 1, found
        return found[0]

    def alerts(self, incident_id: str | None = None) -> list[dict[str, Any]]:
        return [a for a in self.store.emitted(topics.ALERTS) if incident_id in (None, a["incident_id"])]

    def actions(self, incident_id: str) -> list[str]:
        return [e.action for e in self.store.entries[incident_id]]


@pytest.fixture
def w() -> World:
    return World()


def test_resolved_on_site_never_leaves_level_0_and_sends_nothing(w: World) -> None:
    rid = w.report("T1", "HT rusak", category="equipment")
    w.after(minutes=10)
    w.post("incident.resolved", "T1", {"report_id": rid, "resolution": "HT cadangan"})
    w.after(minutes=60)
    inc = w.only("T1")
    assert (inc.status, inc.level) == ("resolved", 0)
    assert w.alerts() == []


def test_window_expiry_goes_up_one_level_at_the_deadline(w: World) -> None:
    w.report("T1", "Kotak suara belum tiba", category="logistics")  # medium: 15 minutes
    w.after(minutes=14)
    assert w.only("T1").level == 0
    w.after(minutes=1, seconds=10)
    inc = w.only("T1")
    assert (inc.status, inc.level) == ("escalated", 1)
    police = [a for a in w.alerts() if a["audience"] == "police"]
    assert [(a["level"], a["reason"]) for a in police] == [(1, "window_expired")]
    assert [a["stakeholder"] for a in w.alerts() if a["audience"] == "stakeholder"] == ["kpu"]


def test_windows_follow_severity(w: World) -> None:
    w.report("T1", "genset mati", category="equipment")  # low: 30
    w.report("T2", "warga berkerumun", category="crowd", crowd_size=60)  # high by crowd: 5
    w.after(minutes=6)
    assert w.only("T2").level == 1
    assert w.only("T1").level == 0
    w.after(minutes=25)
    assert w.only("T1").level == 1


def test_backlog_resolved_inside_window_never_escalates_even_when_late(w: World) -> None:
    rid = str(uuid.uuid4())
    w.post(
        "incident.reported",
        "T1",
        {"description": "Tinta belum datang", "category": "logistics"},
        ago_min=20,
        event_id=rid,
    )
    w.post("incident.resolved", "T1", {"report_id": rid, "resolution": "tinta diantar"}, ago_min=10)
    w.after(minutes=5)
    inc = w.only("T1")
    assert (inc.status, inc.level) == ("resolved", 0)
    assert w.alerts() == []


def test_late_report_gets_a_grace_for_its_backlog_then_escalates(w: World) -> None:
    rid = w.report("T1", "Kotak suara belum tiba", ago_min=16, category="logistics")
    w.after(seconds=20)
    assert w.only("T1").level == 0, "still within the 30 s grace"
    w.after(seconds=20)
    assert w.only("T1").level == 1
    assert rid in w.only("T1").report_ids


def test_backup_request_goes_up_at_once(w: World) -> None:
    rid = w.report("T1", "Ada warga ribut soal DPT", category="crowd", crowd_size=10)
    w.post("backup.requested", "T1", {"report_id": rid, "reason": "butuh Polsek"})
    inc = w.only("T1")
    assert (inc.status, inc.level) == ("escalated", 1)
    assert any(a["reason"] == "backup_requested" and a["level"] == 1 for a in w.alerts())


def test_critical_goes_straight_to_level_2_telling_level_1_and_a_second_reporter_adds_no_alert(w: World) -> None:
    w.report("T1", "Bentrok, ada yang bawa golok, 2 orang luka", category="violence", weapons=True, injuries=2)
    inc = w.only("T1")
    assert (inc.severity, inc.level, inc.status) == ("critical", 2, "escalated")
    assert sorted(a["level"] for a in w.alerts()) == [1, 2]
    w.report("T1", "bentrok di TPS, korban luka", category="violence", weapons=True, injuries=2)
    assert w.only("T1").reports == 2
    assert sorted(a["level"] for a in w.alerts()) == [1, 2]


def test_unacknowledged_climbs_to_level_3_then_reminds(w: World) -> None:
    w.report("T1", "Bentrok, bawa celurit, 3 orang luka", category="violence", weapons=True, injuries=3)
    w.after(minutes=5, seconds=10)
    assert w.only("T1").level == 3
    w.after(minutes=11)
    inc = w.only("T1")
    assert inc.level == 3 and inc.reminders == 2
    reminders = [a["reminder"] for a in w.alerts() if a["level"] == 3]
    assert reminders == [0, 1, 2]
    assert len({a["alert_id"] for a in w.alerts()}) == len(w.alerts()), "every alert has its own key"


def test_acknowledgement_stops_the_climb(w: World) -> None:
    w.report("T1", "Bentrok, bawa celurit, 3 orang luka", category="violence", weapons=True, injuries=3)
    inc = w.engine.acknowledge(w.only("T1").id, actor="operator:ops")
    w.after(minutes=30)
    assert (inc.status, inc.level) == ("acknowledged", 2)
    assert "acknowledged" in w.actions(inc.id)


def test_operator_escalate_and_resolve(w: World) -> None:
    w.report("T1", "genset mati", category="equipment")
    iid = w.only("T1").id
    w.engine.escalate(iid, actor="operator:ops")
    assert w.only("T1").level == 1
    w.engine.resolve(iid, actor="operator:ops", resolution="genset diganti")
    assert w.only("T1").status == "resolved"
    with pytest.raises(NotAllowed):
        w.engine.acknowledge(iid, actor="operator:ops")


def test_stakeholders_told_at_once_when_it_opens_high(w: World) -> None:
    w.report("F1", "TPS terendam banjir", category="flood")  # rawan flood: medium -> high
    inc = w.only("F1")
    assert (inc.severity, inc.level) == ("high", 0)
    told = sorted(a["stakeholder"] for a in w.alerts() if a["audience"] == "stakeholder")
    assert told == ["bpbd", "kpu"]
    assert not [a for a in w.alerts() if a["audience"] == "police"]


def test_reports_of_one_category_at_one_tps_within_30_minutes_are_one_incident(w: World) -> None:
    w.report("T1", "Surat suara kurang", category="logistics")
    w.after(minutes=10)
    w.report("T1", "Surat suara tidak cukup", category="logistics")
    assert w.only("T1").reports == 2
    w.report("T1", "genset mati", category="equipment")
    assert len([i for i in w.store.incidents.values() if i.tps_id == "T1"]) == 2


def test_a_report_after_the_grouping_window_opens_a_new_incident(w: World) -> None:
    w.report("T1", "genset mati", category="equipment")
    w.after(minutes=31)
    w.report("T1", "genset mati lagi", category="equipment")
    assert len([i for i in w.store.incidents.values() if i.tps_id == "T1"]) == 2


def test_merged_report_that_raises_severity_acts_at_once(w: World) -> None:
    w.report("T2", "Warga ribut di depan TPS", category="crowd", crowd_size=10)  # medium
    w.after(minutes=6)
    assert w.only("T2").level == 0
    w.report("T2", "Massa makin banyak", category="crowd", crowd_size=80)  # high: its 5 min window has passed
    inc = w.only("T2")
    assert (inc.severity, inc.level) == ("high", 1)
    w.report("T2", "Massa sekitar 300 orang", category="crowd", crowd_size=300)
    inc = w.only("T2")
    assert (inc.severity, inc.level) == ("critical", 2)


def test_spread_makes_an_area_incident_and_holds_back_the_childrens_alerts(w: World) -> None:
    for t in ("T1", "T2", "T3"):
        w.report(t, "Warga diancam agar tidak memilih", category="intimidation")
    area = [i for i in w.store.incidents.values() if i.tps_id is None]
    assert len(area) == 1
    a = area[0]
    assert (a.kecamatan, a.severity, a.level, len(a.children)) == ("Cikande", "high", 2, 3)
    assert all(w.store.incidents[c].parent_id == a.id for c in a.children)
    w.report("T4", "Ada intimidasi ke saksi", category="intimidation")
    assert len(w.store.incidents[a.id].children) == 4
    w.after(minutes=16)  # the children's windows pass: they climb, but their alerts are held back
    child_alerts = [x for x in w.alerts() if x["incident_id"] in a.children]
    assert child_alerts == []
    area_levels = {x["level"] for x in w.alerts(a.id) if x["audience"] == "police"}
    assert area_levels == {1, 2, 3}, "the area incident itself climbs when nobody acknowledges it"


def test_a_critical_report_joining_an_open_area_incident_is_held_back(w: World) -> None:
    for t in ("T1", "T2", "T3"):
        w.report(t, "Bentrok antar pendukung", category="violence")
    [area] = [i for i in w.store.incidents.values() if i.tps_id is None]
    before = len(w.alerts())
    w.report("T4", "Bentrok, bawa golok, 2 orang luka", category="violence", weapons=True, injuries=2)
    child = w.only("T4")
    assert (child.severity, child.level, child.parent_id) == ("critical", 2, area.id)
    assert len(w.alerts()) == before
    assert "alert_held_back" in w.actions(child.id)


def test_spread_needs_three_distinct_tps(w: World) -> None:
    for _ in range(3):
        w.report("T1", "Warga diancam", category="intimidation")
    assert not [i for i in w.store.incidents.values() if i.tps_id is None]


def test_spread_keeps_to_one_kabupaten_when_kecamatan_names_repeat(w: World) -> None:
    """SPEC section 10: a kecamatan is (provinsi, kabupaten, kecamatan); Ciruas in Serang is not Ciruas in Lebak."""
    for tps_id, kabupaten in (("S1", "Kabupaten Serang"), ("S2", "Kabupaten Serang"), ("L1", "Kabupaten Lebak")):
        w.store.save_tps(Tps(tps_id=tps_id, name=tps_id, kecamatan="Ciruas", kabupaten=kabupaten, assigned=2))
        w.report(tps_id, "Warga diancam agar tidak memilih", category="intimidation")
    assert not [i for i in w.store.incidents.values() if i.tps_id is None], "two and one: no spread"
    w.store.save_tps(Tps(tps_id="S3", name="S3", kecamatan="Ciruas", kabupaten="Kabupaten Serang", assigned=2))
    w.report("S3", "Warga diancam agar tidak memilih", category="intimidation")
    [area] = [i for i in w.store.incidents.values() if i.tps_id is None]
    assert area.kabupaten == "Kabupaten Serang"
    assert sorted(w.store.incidents[c].tps_id or "" for c in area.children) == ["S1", "S2", "S3"]
    assert w.only("L1").parent_id is None


def _operate(w: World, tps_id: str) -> None:
    w.post("tps.status", tps_id, {"phase": "voting"})


def test_silent_post_is_raised_and_closed_by_a_backlog_check_in(w: World) -> None:
    _operate(w, "T1")
    w.after(minutes=29)
    assert not w.store.incidents
    w.after(minutes=2)
    inc = w.only("T1")
    assert (inc.category, inc.severity, inc.status) == ("silent_post", "medium", "open")
    assert w.store.tps("T1").silent  # type: ignore[union-attr]
    w.post("checkin", "T1", {"personnel_id": "L1", "status": "on_duty"}, ago_min=10)
    inc = w.only("T1")
    assert inc.status == "resolved" and "inside the silent period" in (inc.resolution or "")
    assert not w.store.tps("T1").silent  # type: ignore[union-attr]


def test_check_ins_keep_a_post_from_falling_silent(w: World) -> None:
    _operate(w, "T1")
    for _ in range(4):
        w.after(minutes=20)
        w.post("checkin", "T1", {"personnel_id": "L1", "status": "on_duty", "battery": 80})
    assert not w.store.incidents


def test_a_closed_tps_does_not_fall_silent(w: World) -> None:
    w.post("tps.status", "T1", {"phase": "closed"})
    w.after(minutes=90)
    assert not w.store.incidents


def test_a_redelivered_event_changes_nothing(w: World) -> None:
    eid = str(uuid.uuid4())
    ev = FieldEvent(
        event_id=eid,
        type="incident.reported",
        tps_id="T1",  # type: ignore[arg-type]
        occurred_at=w.clock.now(),
        payload={"description": "genset mati", "category": "equipment"},
    )
    w.engine.apply(Received(ev, "d", w.clock.now()))
    w.engine.apply(Received(ev, "d", w.clock.now()))
    assert w.only("T1").reports == 1


def test_a_follow_up_for_an_unknown_report_is_refused(w: World) -> None:
    with pytest.raises(UnknownReport):
        w.post("incident.resolved", "T1", {"report_id": "nope", "resolution": "x"})


def test_text_classification_decides_category_and_why(w: World) -> None:
    w.report("T1", "Ada pembagian amplop berisi uang ke warga")
    inc = w.only("T1")
    assert inc.category == "money_politics"
    assert inc.why, "why says which words decided"


def test_policy_windows_are_data() -> None:
    doc = load_file(DEFAULT_FILE).document()
    doc["local_window_minutes"]["low"] = 2
    from services.dispatch.policy import parse_policy

    w = World(parse_policy(doc))
    w.report("T1", "genset mati", category="equipment")
    w.after(minutes=2, seconds=10)
    assert w.only("T1").level == 1


def test_timeline_is_a_hash_chain(w: World) -> None:
    rid = w.report("T1", "genset mati", category="equipment")
    w.post("incident.update", "T1", {"report_id": rid, "note": "teknisi dipanggil"})
    entries = w.store.entries[w.only("T1").id]
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))


# -- operator judgement (SPEC section 5) ------------------------------------------------------------
def test_a_correction_to_a_new_category_re_runs_severity_and_is_kept_as_an_example(w: World) -> None:
    w.report("F1", "HT rusak", category="equipment")
    inc = w.only("F1")
    assert (inc.category, inc.severity) == ("equipment", "low")
    w.engine.classify(inc.id, actor="operator:o", category=Category.FLOOD, severity=None, reason="air masuk")
    assert (inc.category, inc.severity) == ("flood", "high"), "flood's base, one step up on a flood-rawan TPS"
    assert inc.local_deadline == inc.opened_at + timedelta(minutes=5)
    assert w.actions(inc.id)[-2:] == ["classified", "stakeholders_told"], "high: told at once"
    [c] = w.store.corrections
    assert (c.before["category"], c.after, c.override, c.rawan) == (
        "equipment",
        {"category": "flood", "severity": "high"},
        False,
        ["flood"],
    )


def test_a_severity_below_the_facts_is_an_override_and_never_lowers_the_level(w: World) -> None:
    w.report("T1", "bentrok pendukung", category="violence", injuries=2, weapons=True)
    inc = w.only("T1")
    assert (inc.severity, inc.level) == ("critical", 2)
    w.engine.classify(inc.id, actor="operator:o", category=None, severity=Severity.LOW, reason="salah lapor")
    assert (inc.severity, inc.level, inc.status) == ("low", 2, "escalated")
    detail = w.store.entries[inc.id][-1].detail
    assert detail["override"] is True and detail["facts_demand"] == "critical"
    assert w.store.corrections[-1].override is True


def test_a_command_post_report_opens_an_incident_with_the_operator_as_actor(w: World) -> None:
    cmd = ReportFromCommandPost(
        command_id="cmd-1",
        kecamatan=KecamatanKey(kecamatan="Cikande"),
        actor="operator:o",
        issued_at=w.clock.now(),
        tps_id="T2",
        description="lapor via HT",
        category=Category.CROWD,
        crowd_size=300,
    )
    inc = w.engine.report_from_command_post(cmd)
    assert (inc.source, inc.severity, inc.level) == ("command_post", "critical", 2)
    assert w.store.entries[inc.id][0].actor == "operator:o"
    assert w.engine.report_from_command_post(cmd.model_copy(update={"command_id": "cmd-2"})) is inc, "merged"
    assert inc.reports == 2
