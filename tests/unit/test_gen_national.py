"""The synthetic national registry (scripts/gen_national.py): its counts, its shape and its determinism.

The full-scale counts come from the structure alone (no row is made); rows are checked on a
registry of 20,000 TPS, which has the same regions.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from scripts.gen_national import (
    HEADER,
    PROVINSI,
    TOTAL_TPS,
    Counts,
    kecamatan_rows,
    national,
    registry,
    write_csv,
)
from siaga.demo.generate import share_out
from siaga.events import Category

ROOT = Path(__file__).resolve().parents[2]
SMALL = 20_000
PROVINSI_2024 = {
    "Aceh", "Sumatera Utara", "Sumatera Barat", "Riau", "Jambi", "Sumatera Selatan", "Bengkulu", "Lampung",
    "Kepulauan Bangka Belitung", "Kepulauan Riau", "DKI Jakarta", "Jawa Barat", "Jawa Tengah", "DI Yogyakarta",
    "Jawa Timur", "Banten", "Bali", "Nusa Tenggara Barat", "Nusa Tenggara Timur", "Kalimantan Barat",
    "Kalimantan Tengah", "Kalimantan Selatan", "Kalimantan Timur", "Kalimantan Utara", "Sulawesi Utara",
    "Sulawesi Tengah", "Sulawesi Selatan", "Sulawesi Tenggara", "Gorontalo", "Sulawesi Barat", "Maluku",
    "Maluku Utara", "Papua", "Papua Barat", "Papua Selatan", "Papua Tengah", "Papua Pegunungan", "Papua Barat Daya",
}  # fmt: skip
RAWAN_WORDS = {c.value for c in Category} | {"remote"}  # what the TPS import accepts


def test_the_full_registry_has_the_pemilu_2024_counts_without_making_a_row() -> None:
    reg = registry()
    assert reg.counts() == Counts(provinsi=38, kabupaten=514, kecamatan=7272, tps=TOTAL_TPS)
    assert TOTAL_TPS == 823_220
    assert {p.name for p in PROVINSI} == PROVINSI_2024
    by_prov = Counter[str]()
    for kab in reg.kabupaten:
        by_prov[kab.provinsi] += kab.tps
    assert sum(by_prov.values()) == TOTAL_TPS
    ranked = [name for name, _ in by_prov.most_common()]
    assert ranked[:3] == ["Jawa Barat", "Jawa Timur", "Jawa Tengah"]
    assert 130_000 < by_prov["Jawa Barat"] < 150_000
    assert all(k.tps >= 1 for k in reg.kecamatan)
    largest = reg.largest(1)[0]
    assert largest.provinsi.startswith("Jawa") or largest.provinsi == "Banten"
    assert 10_000 < largest.tps < 40_000


def test_region_names_look_real_and_kabupaten_names_are_unique_nationally() -> None:
    reg = registry()
    names = [k.name for k in reg.kabupaten]
    assert len(set(names)) == len(names) == 514
    assert all(n.startswith(("Kabupaten ", "Kota ")) for n in names)
    assert sum(n.startswith("Kota ") for n in names) == sum(p.kota for p in PROVINSI) == 98
    for kab in reg.kabupaten:
        kec = [k.name for k in kab.kecamatan]
        assert len(set(kec)) == len(kec), kab.name  # unique inside a kabupaten
        assert all(k.kabupaten == kab.name and k.provinsi == kab.provinsi for k in kab.kecamatan)
    all_kec = [k.name for k in reg.kecamatan]
    assert len(set(all_kec)) < len(all_kec)  # repeated across kabupaten, as in reality
    for name in [*names, *all_kec]:
        word = name.removeprefix("Kabupaten ").removeprefix("Kota ")
        assert 3 <= len(word) <= 30 and word[0].isupper() and word.replace(" ", "").isalpha(), name


def test_a_smaller_registry_has_the_same_regions_and_exactly_its_tps() -> None:
    small, full = registry(tps=SMALL), registry()
    assert [k.name for k in small.kabupaten] == [k.name for k in full.kabupaten]
    assert small.counts() == Counts(provinsi=38, kabupaten=514, kecamatan=7272, tps=SMALL)
    rows = list(national(tps=SMALL))
    assert len(rows) == SMALL
    assert len({r.tps_id for r in rows}) == SMALL
    assert len({(r.kabupaten, r.kecamatan) for r in rows}) == 7272


def test_rows_are_importable_tps() -> None:
    boxes = {p.name: p for p in PROVINSI}
    rows = list(national(tps=SMALL))
    for r in rows:
        box = boxes[r.provinsi]
        assert box.lat[0] <= r.lat <= box.lat[1] and box.lon[0] <= r.lon <= box.lon[1], r
        assert set(r.rawan) <= RAWAN_WORDS
        assert r.tps_id.startswith(f"{box.code}.") and len(r.tps_id) <= 128
        assert r.name.startswith("TPS ") and r.desa
    share = sum(bool(r.rawan) for r in rows) / len(rows)
    assert 0.04 < share < 0.12
    buf = io.StringIO()
    assert write_csv(iter(rows[:50]), buf, total=50, progress=False) == 50
    parsed = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert (
        tuple(parsed[0])
        == HEADER
        == ("tps_id", "name", "kecamatan", "desa", "lat", "lon", "rawan", "kabupaten", "provinsi")
    )
    assert parsed[0]["tps_id"] == rows[0].tps_id and float(parsed[0]["lat"]) == rows[0].lat


def test_the_same_seed_gives_the_same_rows_and_another_seed_others() -> None:
    fresh = registry.__wrapped__  # past the cache: made again from the seed
    a, b = fresh(7, SMALL), fresh(7, SMALL)
    assert a == b
    assert list(a.rows()) == list(b.rows())
    other = fresh(8, SMALL)
    assert [k.name for k in other.kabupaten] != [k.name for k in a.kabupaten]
    # A kecamatan's rows depend on its own seed only: the slice of the full registry costs only the slice.
    first = next(iter(registry().kecamatan))
    head = list(itertools.islice(national(), first.tps))
    assert head == list(kecamatan_rows(registry().seed, first))


def test_the_csv_is_the_same_bytes_in_another_process_whatever_the_hash_seed() -> None:
    digests = set()
    for hash_seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "scripts/gen_national.py", "--tps", "3000", "--seed", "5", "--csv", "-", "--quiet"],
            cwd=ROOT,
            env=dict(os.environ, PYTHONHASHSEED=hash_seed),
            capture_output=True,
            check=True,
        ).stdout
        digests.add(hashlib.sha256(out).hexdigest())
    buf = io.StringIO()
    write_csv(registry(5, 3000).rows(), buf, total=3000, progress=False)
    digests.add(hashlib.sha256(buf.getvalue().encode()).hexdigest())
    assert len(digests) == 1
    assert buf.getvalue().count("\n") == 3001


@pytest.mark.parametrize(("total", "weights", "minimum"), [(10, [1, 1, 1], 0), (7, [5, 1, 1], 2), (2, [1, 1, 1], 1)])
def test_share_out_adds_up_and_keeps_the_minimum_when_it_can(total: int, weights: list[int], minimum: int) -> None:
    got = share_out(total, weights, minimum)
    assert sum(got) == total
    if total >= minimum * len(weights):
        assert min(got) >= minimum


def test_help_explains_every_option() -> None:
    out = subprocess.run(
        [sys.executable, "scripts/gen_national.py", "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    for option in ("--seed", "--tps", "--csv", "--split-dir", "--counts", "--quiet"):
        assert option in out
