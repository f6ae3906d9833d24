"""The five-day duty of the simulator (SPEC section 9): each day its hours, phases, posts and illness.

Planned over the whole Serang demo (1,408 TPS, 3,916 people, the devices of `plan_devices`), so the
shares are measured on the regency, not on a handful of TPS. Pure: no server is involved; the
runner's mapping onto the clock is tested in test_simulator.py.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from functools import cache
from typing import Any

import pytest

from siaga.demo import demo_personnel, demo_tps
from siaga.simulator.fleet import build_fleet
from siaga.simulator.plan import DayPlan, DayPlanner
from siaga.simulator.texts import load_texts
from tests.unit.test_simulator import subset_tokens


@cache
def _fleet() -> Any:
    """The demo's devices as load_demo issues them, with made-up tokens, for every TPS."""
    tokens, _ = subset_tokens([t.tps_id for t in demo_tps()])
    return build_fleet(tokens)


@cache
def _plan(day: int, seed: int = 7) -> DayPlan:
    fleet = _fleet()
    return DayPlanner(
        seed=seed, tps=fleet.tps, devices=fleet.devices, personnel=fleet.personnel, texts=load_texts(), day=day
    ).build()


def _events(plan: DayPlan, kind: str | None = None) -> list[tuple[float, dict[str, Any]]]:
    return [(e.at, e.event) for s in plan.sends for e in s.events if kind is None or e.event["type"] == kind]


def _phases(plan: DayPlan) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for _, e in sorted(_events(plan, "tps.status"), key=lambda p: p[0]):
        out[e["tps_id"]].append(e["payload"]["phase"])
    return out


@pytest.mark.parametrize(
    ("day", "phases", "share"),
    [
        (1, ["preparation"], 1.0),
        (2, ["preparation", "opening", "voting", "counting", "transport", "closed"], 1.0),
        (3, ["counting", "transport", "closed"], 0.2),
        (4, ["transport", "closed"], 0.5),
        (5, ["closed"], 0.15),
    ],
)
def test_each_day_has_its_phases_hours_and_posts(day: int, phases: list[str], share: float) -> None:
    plan, spec = _plan(day), load_texts().days[day]
    silent = set(plan.scenario.get("silent_posts", ()))  # the vote's silent posts stop sending
    by_tps = {t: p for t, p in _phases(plan).items() if t not in silent}
    assert {tuple(p) for p in by_tps.values()} == {tuple(phases)}, "every working post goes through the day's phases"
    assert len(by_tps) + len(silent) == pytest.approx(1408 * share, abs=1)
    assert plan.start == (330 if day == 2 else spec.duty[0])
    first, last = spec.duty
    times = [at for at, _ in _events(plan)]
    assert first <= min(times) and max(times) <= (24 * 60 + 120 if day == 2 else last), "inside the duty hours"
    working = set(by_tps) | silent
    assert {e["tps_id"] for _, e in _events(plan)} <= working, "the posts that stand down send nothing"
    reports = _events(plan, "incident.reported")
    assert len(reports) > 5


def test_escorts_run_on_the_days_with_transport_only() -> None:
    for day in (1, 5):
        assert not _events(_plan(day), "escort.departed")
    for day in (2, 3, 4):
        plan = _plan(day)
        departed = {e["tps_id"] for _, e in _events(plan, "escort.departed")}
        posts = set(_phases(plan)) - set(plan.scenario.get("silent_posts", ()))
        assert departed == posts, f"day {day}: every post in transport sends its boxes"


def test_the_scripted_situations_belong_to_the_vote() -> None:
    vote = _plan(2).scenario
    assert vote["serangan_fajar"]["incidents"] and vote["critical"] and vote["silent_posts"]
    for day in (1, 3, 4, 5):
        story = _plan(day).scenario
        assert "serangan_fajar" not in story and "critical" not in story and "silent_posts" not in story
    assert _plan(1).scenario["floods"], "rain on the day the TPS are built"


def test_two_days_with_one_seed_share_no_event_id() -> None:
    ids = [{e["event_id"] for _, e in _events(_plan(day))} for day in range(1, 6)]
    assert sum(map(len, ids)) == len(set().union(*ids))


def _ill(plan: DayPlan) -> tuple[int, int]:
    """(people checked in at all, people who reported unwell at least once)."""
    statuses: dict[str, set[str]] = defaultdict(set)
    for _, e in _events(plan, "checkin"):
        statuses[e["payload"]["personnel_id"]].add(e["payload"]["status"])
    return len(statuses), sum("unwell" in s for s in statuses.values())


def test_illness_grows_over_the_five_days_and_the_sick_go_home() -> None:
    shares = []
    for day in range(1, 6):
        people, ill = _ill(_plan(day))
        shares.append(ill / people)
    assert shares[0] < shares[1] < shares[3] < shares[4], shares
    assert shares[4] > 3 * shares[0]
    plan = _plan(5)
    sick = plan.scenario["sick"]
    assert sick, "someone falls sick on the last day"
    checkins = sorted(_events(plan, "checkin"), key=lambda p: p[0])
    for person in sick:
        mine = [e["payload"]["status"] for _, e in checkins if e["payload"]["personnel_id"] == person]
        assert mine == ["unwell", "off_duty"], (person, mine)
    roles = {p.personnel_id: p.role for p in demo_personnel()}
    assert Counter(roles[p] for p in sick)["linmas"] == 0, "the Linmas of the desa are replaced locally"


def test_a_bad_day_is_refused() -> None:
    fleet = _fleet()
    with pytest.raises(ValueError, match="day must be one of"):
        DayPlanner(seed=1, tps=fleet.tps, devices=fleet.devices, personnel=fleet.personnel, texts=load_texts(), day=6)
