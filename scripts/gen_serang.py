"""Generate the Serang demo data set (Kabupaten Serang, Pilkada Serentak 27 November 2024).

Reads the hand-written facts and assumptions in siaga/demo/data/serang_source.yaml and writes,
deterministically (seeded; the same input gives the same bytes):

- serang_tps.csv        1,408 TPS: `tps_id,name,kecamatan,desa,lat,lon,rawan` (rawan `;`-separated)
- serang_personnel.csv  the roster: `personnel_id,name,unit,role,tps_ids` (tps_ids `;`-separated)
- kecamatan.yaml        the 29 kecamatan: code, centroid, TPS and desa counts, rawan tendencies

Assumptions beyond the source file (see also docs/demo.md):
- TPS are shared out over the kecamatan in proportion to population (largest remainder), numbered
  per kecamatan (`SRG-CKD-001` is `TPS 001` of Cikande) and grouped into generated desa of 3-7 TPS.
- Rawan: `flood` and `remote` drawn per TPS with the kecamatan's share; a few TPS (`conflict_tps`)
  carry a past-conflict category (violence, crowd, intimidation, money_politics), drawn by the
  kecamatan's conflict weight.
- Police: Polres HQ staff have no TPS; every TPS has exactly one TPS officer (Polsek of its
  kecamatan or Polda BKO), who covers one or two neighbouring TPS of one kecamatan, rawan TPS
  alone first. Brimob is the reserve of a kecamatan (bound to all its TPS). Soldiers (Koramil,
  Kodim 0602/Serang) each back 3-5 TPS of one kecamatan, rawan first. Two Linmas per TPS.

Usage: python scripts/gen_serang.py [--out DIR]
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from siaga.demo.generate import share_out

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "siaga" / "demo" / "data"
SOURCE = DATA / "serang_source.yaml"
RAWAN_ORDER = ["flood", "remote", "violence", "crowd", "intimidation", "money_politics"]


@dataclass
class Tps:
    tps_id: str
    name: str
    kecamatan: str
    desa: str
    lat: float
    lon: float
    rawan: list[str] = field(default_factory=list)


@dataclass
class Person:
    personnel_id: str
    name: str
    unit: str
    role: str
    tps_ids: list[str]


def clamp(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


def desa_names(rng: random.Random, count: int, parts: dict[str, list[str]]) -> list[str]:
    """`count` distinct generated village names."""
    names: list[str] = []
    while len(names) < count:
        name = rng.choice(parts["prefixes"]) + rng.choice(parts["roots"])
        if name not in names:
            names.append(name)
    return names


def person_name(rng: random.Random, names: dict[str, list[str]], women_share: float = 0.0) -> str:
    first = names["women_first"] if rng.random() < women_share else names["first"]
    return f"{rng.choice(first)} {rng.choice(names['last'])}"


def make_tps(rng: random.Random, src: dict[str, Any]) -> tuple[list[Tps], dict[str, int]]:
    """All TPS, and the number of desa per kecamatan."""
    kecs = src["kecamatan"]
    b = src["bounds"]
    counts = share_out(src["total_tps"], [k["population"] for k in kecs])
    low, high = src["tps_per_desa"]
    out: list[Tps] = []
    desa_count: dict[str, int] = {}
    for kec, n in zip(kecs, counts, strict=True):
        sizes: list[int] = []
        while sum(sizes) < n:
            sizes.append(min(rng.randint(low, high), n - sum(sizes)))
        desa = desa_names(rng, len(sizes), src["desa_names"])
        desa_count[kec["name"]] = len(desa)
        number = 0
        for desa_name, size in zip(desa, sizes, strict=True):
            d_lat = kec["lat"] + rng.gauss(0, src["scatter_deg"]["desa"])
            d_lon = kec["lon"] + rng.gauss(0, src["scatter_deg"]["desa"])
            for _ in range(size):
                number += 1
                lat = clamp(d_lat + rng.gauss(0, src["scatter_deg"]["tps"]), b["lat_min"], b["lat_max"])
                lon = clamp(d_lon + rng.gauss(0, src["scatter_deg"]["tps"]), b["lon_min"], b["lon_max"])
                rawan = []
                if rng.random() < kec["flood"]:
                    rawan.append("flood")
                if rng.random() < kec["remote"]:
                    rawan.append("remote")
                out.append(
                    Tps(
                        tps_id=f"SRG-{kec['code']}-{number:03d}",
                        name=f"TPS {number:03d}",
                        kecamatan=kec["name"],
                        desa=desa_name,
                        lat=round(lat, 6),
                        lon=round(lon, 6),
                        rawan=rawan,
                    )
                )
    # Past-conflict TPS: drawn by kecamatan weight, one category each (sometimes two).
    weight_of = {k["name"]: k["conflict"] for k in kecs}
    candidates = [t for t in out if weight_of[t.kecamatan] > 0]
    cats = list(src["conflict_categories"])
    cat_weights = list(src["conflict_categories"].values())
    chosen: set[str] = set()
    while len(chosen) < src["conflict_tps"]:
        tps = rng.choices(candidates, weights=[weight_of[t.kecamatan] for t in candidates])[0]
        if tps.tps_id in chosen:
            continue
        chosen.add(tps.tps_id)
        picks = {rng.choices(cats, weights=cat_weights)[0]}
        if rng.random() < 0.3:
            picks.add(rng.choices(cats, weights=cat_weights)[0])
        tps.rawan.extend(sorted(picks - set(tps.rawan)))
    for t in out:
        t.rawan = [r for r in RAWAN_ORDER if r in t.rawan]
    return out, desa_count


def make_roster(rng: random.Random, src: dict[str, Any], tps: list[Tps]) -> list[Person]:
    """Police, soldiers and Linmas, each bound to the TPS they guard."""
    roster_src = src["roster"]
    names = src["person_names"]
    kec_names = [k["name"] for k in src["kecamatan"]]
    by_kec: dict[str, list[Tps]] = {k: [t for t in tps if t.kecamatan == k] for k in kec_names}
    people: list[Person] = []

    police_numbers = itertools.count(1)

    def police_id() -> str:
        return f"POL-{next(police_numbers):04d}"

    def rank_name(ranks: list[str]) -> str:
        return f"{rng.choice(ranks)} {person_name(rng, names, women_share=0.08)}"

    polres = roster_src["polres"]
    for i in range(polres["headquarters"]):
        unit = polres["headquarters_units"][i % len(polres["headquarters_units"])]
        people.append(Person(police_id(), rank_name(roster_src["police_ranks"]), unit, "ops", []))

    # One TPS officer per TPS: Polsek officers and Polda BKO, 1-2 neighbouring TPS each.
    polsek_total = polres["total"] - polres["headquarters"]
    guards = polsek_total + roster_src["polda_bko"]["total"]
    per_kec = share_out(guards, [len(by_kec[k]) for k in kec_names])
    slots: list[tuple[str, list[str]]] = []
    for kec, share in zip(kec_names, per_kec, strict=True):
        stations = by_kec[kec]
        officers = min(max(share, math.ceil(len(stations) / 2)), len(stations))
        pairs = len(stations) - officers
        rawan_first = sorted(stations, key=lambda t: (not t.rawan, t.tps_id))
        singles = rawan_first[: officers - pairs]
        rest = sorted(rawan_first[officers - pairs :], key=lambda t: t.tps_id)
        groups = [[t.tps_id] for t in singles] + [[rest[j].tps_id, rest[j + 1].tps_id] for j in range(0, len(rest), 2)]
        slots.extend((kec, g) for g in sorted(groups))
    # Polda BKO officers are spread over the kecamatan: every k-th slot.
    bko_total = roster_src["polda_bko"]["total"]
    step = len(slots) / bko_total
    bko_slots = {int(i * step) for i in range(bko_total)}
    for i, (kec, group) in enumerate(slots):
        unit = roster_src["polda_bko"]["unit"] if i in bko_slots else f"{polres['polsek_prefix']} {kec}"
        people.append(Person(police_id(), rank_name(roster_src["police_ranks"]), unit, "pam_tps", group))

    # Brimob: the reserve of each kecamatan.
    brimob = roster_src["brimob_bko"]
    for kec, n in zip(kec_names, share_out(brimob["total"], [len(by_kec[k]) for k in kec_names]), strict=True):
        for _ in range(n):
            ids = [t.tps_id for t in by_kec[kec]]
            people.append(Person(police_id(), rank_name(roster_src["police_ranks"]), brimob["unit"], "reserve", ids))

    kodim = roster_src["kodim"]
    soldier = 0
    for kec, n in zip(kec_names, share_out(kodim["total"], [len(by_kec[k]) for k in kec_names]), strict=True):
        rawan_first = sorted(by_kec[kec], key=lambda t: (not t.rawan, t.tps_id))
        cursor = 0
        for _ in range(n):
            soldier += 1
            take = rng.randint(*kodim["tps_each"])
            ids = sorted(t.tps_id for t in rawan_first[cursor : cursor + take])
            cursor = (cursor + take) % max(len(rawan_first), 1)
            unit = f"{kodim['unit_prefix']} {kec} / {kodim['unit_suffix']}"
            people.append(Person(f"TNI-{soldier:03d}", rank_name(roster_src["army_ranks"]), unit, "pam_tps", ids))

    linmas = 0
    for t in tps:
        for _ in range(roster_src["linmas_per_tps"]):
            linmas += 1
            name = person_name(rng, names, women_share=0.1)
            people.append(Person(f"LNM-{linmas:04d}", name, f"Linmas Desa {t.desa}", "linmas", [t.tps_id]))
    return people


def tps_csv(tps: list[Tps]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["tps_id", "name", "kecamatan", "desa", "lat", "lon", "rawan"])
    for t in tps:
        w.writerow([t.tps_id, t.name, t.kecamatan, t.desa, f"{t.lat:.6f}", f"{t.lon:.6f}", ";".join(t.rawan)])
    return buf.getvalue()


def personnel_csv(people: list[Person]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["personnel_id", "name", "unit", "role", "tps_ids"])
    for p in people:
        w.writerow([p.personnel_id, p.name, p.unit, p.role, ";".join(p.tps_ids)])
    return buf.getvalue()


def kecamatan_yaml(src: dict[str, Any], tps: list[Tps], desa_count: dict[str, int]) -> str:
    rows = []
    for k in src["kecamatan"]:
        mine = [t for t in tps if t.kecamatan == k["name"]]
        rawan = {r: sum(r in t.rawan for t in mine) for r in RAWAN_ORDER}
        tendencies = [r for r in ("flood", "remote") if k[r] >= 0.15]
        if k["conflict"] >= 2:
            tendencies.append("conflict")
        rows.append(
            {
                "name": k["name"],
                "code": k["code"],
                "centroid": {"lat": k["lat"], "lon": k["lon"]},
                "coastal": bool(k.get("coastal", False)),
                "tps": len(mine),
                "desa": desa_count[k["name"]],
                "rawan_tendencies": tendencies,
                "rawan_tps": {r: n for r, n in rawan.items() if n},
            }
        )
    header = (
        "# Generated by scripts/gen_serang.py from serang_source.yaml; do not edit by hand.\n"
        "# The 29 kecamatan of Kabupaten Serang in the demo data set.\n"
    )
    body: str = yaml.safe_dump({"kecamatan": rows}, sort_keys=False, allow_unicode=True, width=110)
    return header + body


def generate(source: Path = SOURCE) -> dict[str, str]:
    """The generated files' names and contents."""
    src = yaml.safe_load(source.read_text(encoding="utf-8"))
    rng = random.Random(src["seed"])
    tps, desa_count = make_tps(rng, src)
    people = make_roster(rng, src, tps)
    return {
        "serang_tps.csv": tps_csv(tps),
        "serang_personnel.csv": personnel_csv(people),
        "kecamatan.yaml": kecamatan_yaml(src, tps, desa_count),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DATA, help="directory to write the files to")
    parser.add_argument("--source", type=Path, default=SOURCE, help="the hand-written source YAML")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in generate(args.source).items():
        (args.out / name).write_text(text, encoding="utf-8", newline="\n")
        print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
