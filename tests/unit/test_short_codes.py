"""Short incident codes (siaga.short_codes, SPEC section 11)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.dispatch.domain import Incident
from services.dispatch.store import MemoryStore
from siaga import short_codes as sc

AMBIGUOUS = set("01OIL")


def test_the_alphabet_has_no_look_alikes_and_codes_round_trip() -> None:
    assert not AMBIGUOUS & set(sc.ALPHABET)
    assert len(set(sc.ALPHABET)) == len(sc.ALPHABET) == 31
    for n in (0, 1, 30, 31, 12345, sc.SPACE - 1):
        code = sc.encode(n)
        assert len(code) == sc.LENGTH and not AMBIGUOUS & set(code)
        assert sc.decode(code) == n
        assert sc.decode(code.lower()) == n, "a code typed in lower case is the same code"
    with pytest.raises(ValueError):
        sc.encode(sc.SPACE)
    for bad in ("K7Q", "K7Q2O", "ABCDEF", "AB 12", "SUDAH", "23456"):
        assert not sc.is_code(bad), "not of the alphabet, or a word or a number rather than a code"
    assert sc.is_code("k7q2m")


def test_each_partition_draws_from_its_own_block() -> None:
    codes = {p: {sc.new_code(p, f"INC-{i}", lambda _: False) for i in range(200)} for p in (0, 1, 7, 63)}
    for p, mine in codes.items():
        assert {sc.partition_of_code(c) for c in mine} == {p}
        assert all(sc.is_code(c) for c in mine)
    assert not codes[0] & codes[1], "two owners never hand out the same code"


def test_a_code_is_stable_for_an_incident_and_skips_those_held() -> None:
    first = sc.new_code(3, "INC-A", lambda _: False)
    assert sc.new_code(3, "INC-A", lambda _: False) == first, "a replay gets the same code"
    held = {first}
    second = sc.new_code(3, "INC-A", held.__contains__)
    assert second != first and sc.partition_of_code(second) == 3
    with pytest.raises(ValueError):
        sc.new_code(sc.MAX_PARTITIONS, "INC-A", lambda _: False)


def _incident(iid: str) -> Incident:
    now = datetime(2024, 11, 27, 8, 0, tzinfo=UTC)
    return Incident(
        id=iid, kecamatan="K", category="flood", severity="low", opened_at=now, received_at=now, updated_at=now
    )


def test_the_store_gives_open_incidents_distinct_codes() -> None:
    store = MemoryStore()
    incidents = [_incident(f"INC-{i}") for i in range(300)]
    for inc in incidents:
        store.add_incident(inc)
    codes = [inc.code for inc in incidents]
    assert all(c and sc.is_code(c) for c in codes)
    assert len(set(codes)) == len(codes)


def test_the_owners_state_frees_a_resolved_incidents_code() -> None:
    """OwnedState: a code an open incident holds is skipped; once it is resolved it may be drawn again."""
    from services.dispatch.state import OwnedState

    state = OwnedState(lambda: None)  # type: ignore[arg-type,return-value]  # nothing here reads the database
    inc = _incident("INC-A")
    state.add_incident(inc)
    assert inc.code and sc.partition_of_code(inc.code) == 0, "no partitioner yet: block 0"
    same_seed = _incident("INC-A")  # starts at the same point of the block
    assert state._new_code(same_seed) != inc.code, "an open incident's code is skipped"
    inc.status = "resolved"
    state.save_incident(inc)
    assert state._new_code(same_seed) == inc.code, "a resolved incident's code is free again"
    state.partition_of = lambda key: 5
    assert sc.partition_of_code(state._new_code(_incident("INC-B"))) == 5
