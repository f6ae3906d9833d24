"""A synthetic national TPS registry at the scale of Pemilu 2024, generated at run time (never committed).

Deterministic: the same `--seed` and `--tps` give the same rows, byte for byte, on any machine.

- **823,220 TPS** (`--tps` for a smaller registry) in the **38 provinsi** of Indonesia (their real
  names and codes), **514 kabupaten/kota** (their real number per provinsi; the names are made up
  from Indonesian-sounding syllables, `Kabupaten Tanjung Sari`, `Kota Rantaubaru`, unique
  nationally) and **7,272 kecamatan** (about the real number per provinsi; names unique inside a
  kabupaten and repeating across kabupaten, as in reality).
- TPS are shared over the provinsi by their approximate 2024 TPS counts (Jawa Barat ~140,000,
  Jawa Timur and Jawa Tengah ~120,000, Papua Barat Daya ~2,400), over the kabupaten of a provinsi
  by a random (log-normal) size, and over the kecamatan of a kabupaten likewise; every kecamatan
  has at least one TPS when `--tps` allows it. The shares are integers that add up exactly
  (largest remainder).
- Coordinates: inside a rough bounding box per provinsi (kabupaten centres drawn in it, kecamatan
  scattered around them, TPS around those); rough, not a map.
- TPS ids are `<provinsi code>.<kabupaten code>.<kecamatan code>.<number>` (`32.07.010.0042`; kota
  codes start at 71, as in the real codes), names `TPS 001`.. numbered per desa (generated, 4-16 TPS
  each); about 8 % of TPS have rawan categories.

The structure (regions, their names and TPS counts) is cheap and known without making a row
(`registry().counts()`); rows are made lazily, kecamatan by kecamatan (each from its own seed, so
a slice of the registry costs only that slice).

Usage:

    .venv/bin/python scripts/gen_national.py --counts            # the counts and the largest kabupaten
    .venv/bin/python scripts/gen_national.py --csv /tmp/national.csv
    .venv/bin/python scripts/gen_national.py --split-dir /tmp/national/    # one CSV per provinsi
    .venv/bin/python scripts/gen_national.py --tps 20000 --seed 7 --csv -  # to stdout

The CSV is the TPS import format (`POST /v1/admin/tps/import`, docs/demo.md):
`tps_id,name,kecamatan,desa,lat,lon,rawan,kabupaten,provinsi`, rawan `;`-separated. One import is
at most 16 MB, the national file ~76 MB: import `--split-dir`'s files one by one (the largest,
Jawa Barat, is ~13 MB). Writing all of it takes ~15 s.

From Python (bench/national.py):

    from scripts.gen_national import national, registry
    reg = registry(seed=2024)             # the structure; reg.counts(), reg.kabupaten
    for row in national(seed=2024):       # TpsRow, in kecamatan order
        ...
"""

from __future__ import annotations

import argparse
import csv
import io
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple, TextIO

from siaga.demo.generate import share_out

TOTAL_TPS = 823_220  # Pemilu 2024
DEFAULT_SEED = 2024
HEADER = ("tps_id", "name", "kecamatan", "desa", "lat", "lon", "rawan", "kabupaten", "provinsi")


class Provinsi(NamedTuple):
    """One provinsi: its code, name, approximate 2024 TPS count (a weight), kabupaten and kota, kecamatan, box."""

    code: int
    name: str
    tps_weight: int
    kabupaten: int
    kota: int
    kecamatan: int
    lon: tuple[float, float]
    lat: tuple[float, float]


# Kabupaten and kota: the real numbers (514 in all). TPS and kecamatan: approximately the real ones.
PROVINSI: tuple[Provinsi, ...] = (
    Provinsi(11, "Aceh", 16_046, 18, 5, 290, (95.2, 98.2), (2.2, 5.8)),
    Provinsi(12, "Sumatera Utara", 45_875, 25, 8, 455, (97.6, 100.4), (0.6, 4.2)),
    Provinsi(13, "Sumatera Barat", 17_569, 12, 7, 179, (99.6, 101.8), (-2.8, 0.8)),
    Provinsi(14, "Riau", 19_366, 10, 2, 172, (100.1, 103.7), (-1.1, 2.2)),
    Provinsi(15, "Jambi", 11_160, 9, 2, 144, (101.2, 104.4), (-2.7, -0.8)),
    Provinsi(16, "Sumatera Selatan", 26_229, 13, 4, 241, (102.2, 106.1), (-4.8, -1.7)),
    Provinsi(17, "Bengkulu", 6_064, 9, 1, 129, (101.1, 103.7), (-5.3, -2.4)),
    Provinsi(18, "Lampung", 25_845, 13, 2, 229, (103.7, 105.8), (-5.9, -3.8)),
    Provinsi(19, "Kepulauan Bangka Belitung", 4_300, 6, 1, 47, (105.2, 108.2), (-3.3, -1.6)),
    Provinsi(21, "Kepulauan Riau", 7_642, 5, 2, 80, (103.5, 108.4), (-0.8, 4.4)),
    Provinsi(31, "DKI Jakarta", 30_766, 1, 5, 44, (106.69, 106.96), (-6.36, -6.09)),
    Provinsi(32, "Jawa Barat", 140_457, 18, 9, 627, (106.4, 108.8), (-7.7, -6.0)),
    Provinsi(33, "Jawa Tengah", 117_299, 29, 6, 576, (108.6, 111.6), (-8.1, -6.5)),
    Provinsi(34, "DI Yogyakarta", 11_951, 4, 1, 78, (110.0, 110.8), (-8.15, -7.55)),
    Provinsi(35, "Jawa Timur", 120_666, 29, 9, 666, (111.0, 114.5), (-8.7, -6.9)),
    Provinsi(36, "Banten", 33_324, 4, 4, 155, (105.2, 106.7), (-6.95, -5.9)),
    Provinsi(51, "Bali", 12_239, 8, 1, 57, (114.45, 115.65), (-8.8, -8.1)),
    Provinsi(52, "Nusa Tenggara Barat", 16_241, 8, 2, 117, (115.85, 119.2), (-9.0, -8.15)),
    Provinsi(53, "Nusa Tenggara Timur", 16_693, 21, 1, 315, (119.0, 125.1), (-10.9, -8.2)),
    Provinsi(61, "Kalimantan Barat", 16_676, 12, 2, 174, (108.9, 114.1), (-3.0, 2.0)),
    Provinsi(62, "Kalimantan Tengah", 8_181, 13, 1, 136, (110.8, 115.7), (-3.4, 0.7)),
    Provinsi(63, "Kalimantan Selatan", 13_711, 11, 2, 156, (114.4, 116.5), (-4.1, -1.4)),
    Provinsi(64, "Kalimantan Timur", 12_330, 7, 3, 105, (113.9, 118.9), (-2.3, 2.5)),
    Provinsi(65, "Kalimantan Utara", 2_476, 4, 1, 55, (114.7, 117.9), (1.2, 4.3)),
    Provinsi(71, "Sulawesi Utara", 7_806, 11, 4, 171, (123.2, 125.7), (0.4, 3.9)),
    Provinsi(72, "Sulawesi Tengah", 9_967, 12, 1, 175, (119.5, 124.1), (-3.5, 1.3)),
    Provinsi(73, "Sulawesi Selatan", 26_356, 21, 3, 313, (119.1, 121.1), (-5.7, -2.0)),
    Provinsi(74, "Sulawesi Tenggara", 8_880, 15, 2, 222, (121.0, 124.5), (-6.1, -2.9)),
    Provinsi(75, "Gorontalo", 3_487, 5, 1, 77, (121.3, 123.5), (0.35, 1.0)),
    Provinsi(76, "Sulawesi Barat", 4_408, 6, 0, 69, (118.8, 119.8), (-3.5, -0.9)),
    Provinsi(81, "Maluku", 5_837, 9, 2, 118, (125.8, 134.8), (-8.3, -2.9)),
    Provinsi(82, "Maluku Utara", 4_218, 8, 2, 116, (124.4, 129.6), (-2.4, 2.6)),
    Provinsi(91, "Papua", 4_600, 8, 1, 105, (134.9, 140.9), (-3.4, -0.9)),
    Provinsi(92, "Papua Barat", 2_496, 7, 0, 86, (132.1, 134.9), (-4.1, -0.6)),
    Provinsi(93, "Papua Selatan", 2_485, 4, 0, 78, (138.0, 140.9), (-9.0, -5.1)),
    Provinsi(94, "Papua Tengah", 6_046, 8, 0, 131, (134.5, 138.7), (-4.7, -2.7)),
    Provinsi(95, "Papua Pegunungan", 8_097, 8, 0, 252, (138.1, 140.8), (-5.1, -3.5)),
    Provinsi(96, "Papua Barat Daya", 2_357, 5, 1, 132, (130.0, 132.4), (-2.2, -0.4)),
)

# Syllables for generated names: onsets, vowels (a weighted up, as in Indonesian), codas.
_ONSETS = ("b", "c", "d", "g", "j", "k", "l", "m", "n", "p", "r", "s", "t", "w", "b", "k", "s", "t", "ng", "")
_VOWELS = ("a", "a", "a", "i", "i", "u", "u", "e", "o")
_CODAS = ("", "", "", "", "n", "n", "ng", "ng", "r", "k", "h", "t", "s")
_PREFIX_WORDS = ("Tanjung", "Sungai", "Bukit", "Muara", "Kuala", "Teluk", "Padang", "Batu", "Rantau", "Lubuk", "Pulau")
_PREFIX_JOINED = ("Suka", "Karang", "Ci", "Pasir", "Sido", "Mekar", "Sumber", "Banyu", "Wono", "Tegal")
_SUFFIXES = ("Jaya", "Sari", "Baru", "Raya", "Makmur", "Indah", "Mulya", "Asri", "Lama", "Hilir", "Hulu")
_QUARTERS = ("Timur", "Barat", "Selatan", "Utara", "Tengah")
RAWAN = ("flood", "remote", "violence", "crowd", "intimidation", "money_politics")
_RAWAN_WEIGHTS = (30, 25, 12, 12, 8, 13)


def _word(rng: random.Random, syllables: int) -> str:
    parts = []
    for i in range(syllables):
        onset = rng.choice(_ONSETS)
        while i and not onset:  # no vowel clusters inside a word
            onset = rng.choice(_ONSETS)
        # Inside a word only a nasal or r closes a syllable (Bandung, Purwakarta), and seldom.
        inner = rng.choice(("n", "m", "r")) if rng.random() < 0.15 else ""
        coda = rng.choice(_CODAS) if i == syllables - 1 else inner
        parts.append(onset + rng.choice(_VOWELS) + coda)
    word = "".join(parts)
    return word[0].upper() + word[1:]


def place_name(rng: random.Random) -> str:
    """An Indonesian-sounding place name: `Karangsari`, `Tanjung Rumbak`, `Lemara Jaya`, `Pakuten`."""
    r = rng.random()
    if r < 0.12:
        return f"{rng.choice(_PREFIX_WORDS)} {_word(rng, rng.choice((2, 2, 3)))}"
    if r < 0.27:
        return rng.choice(_PREFIX_JOINED) + _word(rng, 2).lower()
    if r < 0.37:
        return f"{_word(rng, rng.choice((2, 3)))} {rng.choice(_SUFFIXES)}"
    return _word(rng, rng.choice((2, 2, 3, 3, 3)))


class TpsRow(NamedTuple):
    """One TPS of the registry, its fields in the CSV's order."""

    tps_id: str
    name: str
    kecamatan: str
    desa: str
    lat: float
    lon: float
    rawan: tuple[str, ...]
    kabupaten: str
    provinsi: str


@dataclass(frozen=True, slots=True)
class Kecamatan:
    name: str
    code: str  # "32.07.010"
    kabupaten: str
    provinsi: str
    lat: float
    lon: float
    tps: int


@dataclass(frozen=True, slots=True)
class Kabupaten:
    name: str  # "Kabupaten Tanjung Sari" or "Kota Pakuten"
    code: str  # "32.07"
    provinsi: str
    kecamatan: tuple[Kecamatan, ...]

    @property
    def tps(self) -> int:
        return sum(k.tps for k in self.kecamatan)


class Counts(NamedTuple):
    provinsi: int
    kabupaten: int
    kecamatan: int
    tps: int


@dataclass(frozen=True)
class Registry:
    """The regions of a generated registry and their TPS counts; `rows()` makes the TPS themselves."""

    seed: int
    kabupaten: tuple[Kabupaten, ...]

    @property
    def kecamatan(self) -> Iterator[Kecamatan]:
        for kab in self.kabupaten:
            yield from kab.kecamatan

    def counts(self) -> Counts:
        """The numbers of provinsi, kabupaten/kota, kecamatan (with a TPS) and TPS, without making a row."""
        kecs = [k for k in self.kecamatan if k.tps]
        return Counts(
            provinsi=len({k.provinsi for k in kecs}),
            kabupaten=len({k.kabupaten for k in kecs}),
            kecamatan=len(kecs),
            tps=sum(k.tps for k in kecs),
        )

    def largest(self, n: int) -> list[Kabupaten]:
        """The n kabupaten/kota with the most TPS (ties by name)."""
        return sorted(self.kabupaten, key=lambda k: (-k.tps, k.name))[:n]

    def rows(self) -> Iterator[TpsRow]:
        """Every TPS, kecamatan by kecamatan in registry order."""
        for kec in self.kecamatan:
            yield from kecamatan_rows(self.seed, kec)


def _clamp(v: float, box: tuple[float, float]) -> float:
    return min(max(v, box[0]), box[1])


@lru_cache(maxsize=4)
def registry(seed: int = DEFAULT_SEED, tps: int = TOTAL_TPS) -> Registry:
    """The regions for `seed`: the same names and places for any `tps`; only the TPS counts scale."""
    rng = random.Random(f"siaga-national:{seed}")
    used_kabupaten: set[str] = set()
    # A TPS for every kecamatan first (when there are enough), the rest by the provinsi's weight.
    prov_tps = share_out(tps, [p.tps_weight for p in PROVINSI], minimum=[p.kecamatan for p in PROVINSI])
    out: list[Kabupaten] = []
    for prov, p_tps in zip(PROVINSI, prov_tps, strict=True):
        n = prov.kabupaten + prov.kota
        # Kota are smaller: fewer kecamatan, fewer TPS. DKI Jakarta's one kabupaten is Kepulauan Seribu.
        sizes = [rng.lognormvariate(0, 0.7) * (1.0 if i < prov.kabupaten else 0.45) for i in range(n)]
        if prov.name == "DKI Jakarta":
            sizes[0] = 0.02
        kec_counts = share_out(prov.kecamatan, [s**0.8 for s in sizes], minimum=2)
        units: list[tuple[str, str, int, float, float]] = []  # name, code, kecamatan, lat, lon
        for i, n_kec in enumerate(kec_counts):
            kota = i >= prov.kabupaten
            while True:
                name = ("Kota " if kota else "Kabupaten ") + place_name(rng)
                if rng.random() < 0.08 and not kota:
                    name += " " + rng.choice(_QUARTERS)
                if name not in used_kabupaten:
                    used_kabupaten.add(name)
                    break
            code = f"{prov.code}.{(71 + i - prov.kabupaten) if kota else (i + 1):02d}"
            units.append((name, code, n_kec, rng.uniform(*prov.lat), rng.uniform(*prov.lon)))
        all_kec: list[tuple[int, str, str, float, float, float]] = []  # unit, name, code, lat, lon, weight
        for u, (_name, code, n_kec, k_lat, k_lon) in enumerate(units):
            names: set[str] = set()
            spread = 0.03 if prov.name == "DKI Jakarta" else 0.18
            for j in range(n_kec):
                while (name := place_name(rng)) in names:
                    pass
                names.add(name)
                lat = _clamp(k_lat + rng.gauss(0, spread), prov.lat)
                lon = _clamp(k_lon + rng.gauss(0, spread), prov.lon)
                weight = sizes[u] / n_kec * rng.lognormvariate(0, 0.4)
                all_kec.append((u, name, f"{code}.{(j + 1) * 10:03d}", round(lat, 5), round(lon, 5), weight))
        tps_counts = share_out(p_tps, [k[5] for k in all_kec], minimum=1)
        by_unit: list[list[Kecamatan]] = [[] for _ in units]
        for (u, name, code, lat, lon, _w), n_tps in zip(all_kec, tps_counts, strict=True):
            by_unit[u].append(Kecamatan(name, code, units[u][0], prov.name, lat, lon, n_tps))
        out.extend(
            Kabupaten(name, code, prov.name, tuple(kecs)) for (name, code, *_), kecs in zip(units, by_unit, strict=True)
        )
    return Registry(seed, tuple(out))


def kecamatan_rows(seed: int, kec: Kecamatan) -> Iterator[TpsRow]:
    """The TPS of one kecamatan (from a seed of its own: the same rows whatever else is generated)."""
    rng = random.Random(f"siaga-national:{seed}:{kec.code}")
    number = 0
    box = next(p for p in PROVINSI if p.name == kec.provinsi)
    spread = 0.01 if kec.provinsi == "DKI Jakarta" else 0.04
    while number < kec.tps:
        desa = place_name(rng)
        d_lat, d_lon = kec.lat + rng.gauss(0, spread), kec.lon + rng.gauss(0, spread)
        for n in range(1, min(rng.randint(4, 16), kec.tps - number) + 1):
            number += 1
            rawan: tuple[str, ...] = ()
            if rng.random() < 0.08:
                picks = {rng.choices(RAWAN, _RAWAN_WEIGHTS)[0] for _ in range(rng.choice((1, 1, 1, 2)))}
                rawan = tuple(r for r in RAWAN if r in picks)
            yield TpsRow(
                tps_id=f"{kec.code}.{number:04d}",
                name=f"TPS {n:03d}",
                kecamatan=kec.name,
                desa=desa,
                lat=round(_clamp(d_lat + rng.gauss(0, 0.004), box.lat), 5),
                lon=round(_clamp(d_lon + rng.gauss(0, 0.004), box.lon), 5),
                rawan=rawan,
                kabupaten=kec.kabupaten,
                provinsi=kec.provinsi,
            )


def national(seed: int = DEFAULT_SEED, tps: int = TOTAL_TPS) -> Iterator[TpsRow]:
    """Every TPS of the national registry for `seed` (823,220 by default), made lazily."""
    return registry(seed, tps).rows()


def write_csv(rows: Iterator[TpsRow], out: TextIO, *, total: int, progress: bool) -> int:
    """The rows as the TPS import CSV (with header); how many were written. Progress on stderr."""
    w = csv.writer(out, lineterminator="\n")
    w.writerow(HEADER)
    start = time.monotonic()
    n = 0
    for row in rows:
        w.writerow((*row[:6], ";".join(row.rawan), row.kabupaten, row.provinsi))
        n += 1
        if progress and n % 100_000 == 0:
            print(f"{n:,}/{total:,} TPS ({time.monotonic() - start:.1f}s)", file=sys.stderr, flush=True)
    return n


def _slug(name: str) -> str:
    return name.lower().replace(" ", "-")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="gen_national.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"the generator's seed (default {DEFAULT_SEED})")
    ap.add_argument(
        "--tps",
        type=int,
        default=TOTAL_TPS,
        help=f"TPS in all (default {TOTAL_TPS:,}, Pemilu 2024); the regions stay the same, only their TPS counts scale",
    )
    ap.add_argument("--csv", metavar="PATH", help="write the whole registry as one import CSV ('-': stdout)")
    ap.add_argument(
        "--split-dir",
        metavar="DIR",
        help="write one import CSV per provinsi into DIR (<code>-<name>.csv), each under the 16 MB import limit",
    )
    ap.add_argument(
        "--counts", action="store_true", help="print the counts and the ten largest kabupaten (no rows made)"
    )
    ap.add_argument("--quiet", action="store_true", help="no progress on stderr")
    a = ap.parse_args(argv)
    if a.tps < 1:
        ap.error("--tps must be at least 1")
    if not (a.csv or a.split_dir or a.counts):
        ap.error("say what to write: --csv PATH, --split-dir DIR or --counts")
    reg = registry(a.seed, a.tps)
    counts = reg.counts()
    progress = not a.quiet
    if a.counts:
        print(
            f"{counts.tps:,} TPS, {counts.provinsi} provinsi, {counts.kabupaten} kabupaten/kota, "
            f"{counts.kecamatan:,} kecamatan (seed {a.seed})"
        )
        for kab in reg.largest(10):
            print(f"  {kab.tps:>7,} TPS  {len(kab.kecamatan):>3} kecamatan  {kab.name}, {kab.provinsi}")
    if a.csv:
        if a.csv == "-":
            write_csv(reg.rows(), sys.stdout, total=counts.tps, progress=progress)
        else:
            with open(a.csv, "w", newline="", encoding="utf-8") as f:
                n = write_csv(reg.rows(), f, total=counts.tps, progress=progress)
            if progress:
                print(f"wrote {n:,} TPS to {a.csv}", file=sys.stderr)
    if a.split_dir:
        out_dir = Path(a.split_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for prov in PROVINSI:
            kecs = [k for k in reg.kecamatan if k.provinsi == prov.name]
            rows = (row for k in kecs for row in kecamatan_rows(a.seed, k))
            buf = io.StringIO()
            n = write_csv(rows, buf, total=sum(k.tps for k in kecs), progress=False)
            path = out_dir / f"{prov.code}-{_slug(prov.name)}.csv"
            path.write_text(buf.getvalue(), encoding="utf-8")
            if progress:
                print(f"{path}: {n:,} TPS, {len(buf.getvalue()) / 1e6:.1f} MB", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
