"""bench/census.py, the soak's diagnostic census: it must see what a process holds."""

from __future__ import annotations

import json
import time

from bench import census


def test_a_census_counts_the_strings_a_container_holds_and_the_largest_containers() -> None:
    before = census.take()
    held = [f"check-in {i:06d} " * 4 for i in range(20_000)]  # 20,000 new strings in one big list
    after = census.take()
    strings_before, strings_after = before["untracked"]["str"], after["untracked"]["str"]
    assert strings_after[0] - strings_before[0] >= 20_000
    assert strings_after[1] - strings_before[1] >= 20_000 * len(held[0])
    assert [after["largest"][0][1], after["largest"][0][2]] == ["list", 20_000]
    assert after["tracked"]["list"][0] >= before["tracked"]["list"][0]


def test_start_takes_a_census_at_each_minute_into_the_file(tmp_path, monkeypatch) -> None:
    out = tmp_path / "census.jsonl"
    monkeypatch.setenv("SIAGA_CENSUS_AT", "0,0.001")
    monkeypatch.setenv("SIAGA_CENSUS_OUT", str(out))
    census.start()
    for _ in range(200):
        if out.exists() and len(out.read_text().splitlines()) == 2:
            break
        time.sleep(0.05)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["minute"] for line in lines] == [0.0, 0.0]
    assert all(line["tracked"]["dict"][0] > 0 for line in lines)
