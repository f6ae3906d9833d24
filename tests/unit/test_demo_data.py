"""The Serang demo data set: counts, shape, plausibility, determinism, and load_demo's calls."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from siaga.demo import (
    DemoLoadError,
    DeviceToken,
    demo_personnel,
    demo_tps,
    kecamatan_yaml_path,
    load_demo,
    personnel_csv_path,
    plan_devices,
    read_kecamatan,
    tps_csv_path,
)
from siaga.events import DEVICE_CATEGORIES

ROOT = Path(__file__).resolve().parents[2]
KECAMATAN = {
    "Anyar", "Bandung", "Baros", "Binuang", "Bojonegara", "Carenang", "Cikande", "Cikeusal", "Cinangka",
    "Ciomas", "Ciruas", "Gunungsari", "Jawilan", "Kibin", "Kopo", "Kragilan", "Kramatwatu", "Lebak Wangi",
    "Mancak", "Pabuaran", "Padarincang", "Pamarayan", "Petir", "Pontang", "Pulo Ampel", "Tanara",
    "Tirtayasa", "Tunjung Teja", "Waringinkurung",
}  # fmt: skip
LAT = (-6.35, -5.95)
LON = (105.85, 106.45)


def test_tps_csv_has_the_contract_header_and_1408_unique_tps() -> None:
    with tps_csv_path().open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = list(reader)
    assert header == ["tps_id", "name", "kecamatan", "desa", "lat", "lon", "rawan"]
    assert len(rows) == 1408
    assert all(len(r) == 7 for r in rows)
    ids = [r[0] for r in rows]
    assert len(set(ids)) == 1408


def test_tps_ids_names_kecamatan_and_coordinates() -> None:
    tps = demo_tps()
    assert {t.kecamatan for t in tps} == KECAMATAN
    codes = {k.name: k.code for k in read_kecamatan()}
    for t in tps:
        m = re.fullmatch(r"SRG-([A-Z]{3})-(\d{3})", t.tps_id)
        assert m, t.tps_id
        assert m.group(1) == codes[t.kecamatan]
        assert t.name == f"TPS {m.group(2)}"
        assert t.desa
        assert LAT[0] <= t.lat <= LAT[1], t
        assert LON[0] <= t.lon <= LON[1], t


def test_rawan_values_and_plausible_mapping() -> None:
    allowed = set(DEVICE_CATEGORIES) | {"remote"}
    tps = demo_tps()
    by_kec: dict[str, list[Any]] = defaultdict(list)
    for t in tps:
        assert set(t.rawan) <= allowed, t
        by_kec[t.kecamatan].append(t)

    def share(kec: str, rawan: str) -> float:
        return sum(rawan in t.rawan for t in by_kec[kec]) / len(by_kec[kec])

    # Coast and river plains flood, the western hills are hard to reach, not the other way round.
    for wet in ("Tanara", "Tirtayasa", "Pontang"):
        assert share(wet, "flood") > 0.2
        assert share(wet, "remote") == 0
    for hills in ("Mancak", "Gunungsari", "Padarincang", "Ciomas"):
        assert share(hills, "remote") > 0.15
        assert share(hills, "flood") < 0.1
    conflict = [t for t in tps if {"violence", "crowd", "intimidation", "money_politics"} & set(t.rawan)]
    assert 10 <= len(conflict) <= 60


def test_tps_are_shared_out_by_population_and_match_the_kecamatan_file() -> None:
    counts = Counter(t.kecamatan for t in demo_tps())
    kecs = read_kecamatan()
    assert len(kecs) == 29
    assert {k.name for k in kecs} == KECAMATAN
    assert len({k.code for k in kecs}) == 29
    for k in kecs:
        assert k.tps == counts[k.name]
        assert LAT[0] <= k.lat <= LAT[1] and LON[0] <= k.lon <= LON[1]
    assert sum(k.tps for k in kecs) == 1408
    assert counts.most_common(1)[0][0] == "Cikande"
    for east in ("Cikande", "Kragilan", "Kramatwatu", "Ciruas"):
        assert counts[east] > 1408 / 29
    # Coastal kecamatan lie north of the hill ones.
    north = {k.name: k.lat for k in kecs}
    assert min(north[c] for c in ("Tanara", "Tirtayasa", "Pontang", "Pulo Ampel")) > north["Padarincang"]


def test_roster_numbers() -> None:
    people = demo_personnel()
    with personnel_csv_path().open(encoding="utf-8", newline="") as fh:
        assert next(csv.reader(fh)) == ["personnel_id", "name", "unit", "role", "tps_ids"]
    assert len({p.personnel_id for p in people}) == len(people)
    police = [p for p in people if p.personnel_id.startswith("POL-")]
    soldiers = [p for p in people if p.personnel_id.startswith("TNI-")]
    linmas = [p for p in people if p.role == "linmas"]
    assert len(police) == 1000
    assert len(soldiers) == 100
    assert len(linmas) == 2816
    assert len(people) == 1000 + 100 + 2816
    polres = [p for p in police if p.unit.startswith(("Polres Serang", "Polsek "))]
    bko = [p for p in police if p.unit.startswith("BKO ")]
    assert len(polres) == 700
    assert len(bko) == 300
    assert sum("Brimob" in p.unit for p in bko) == 100
    assert all("Kodim 0602/Serang" in p.unit for p in soldiers)
    assert {p.unit.split(" ", 1)[1] for p in police if p.unit.startswith("Polsek ")} <= KECAMATAN


def test_every_tps_has_two_linmas_and_one_tps_officer() -> None:
    tps = {t.tps_id: t for t in demo_tps()}
    linmas: Counter[str] = Counter()
    officers: Counter[str] = Counter()
    for p in demo_personnel():
        assert set(p.tps_ids) <= set(tps), p
        if p.role == "linmas":
            assert len(p.tps_ids) == 1
            linmas[p.tps_ids[0]] += 1
        elif p.role == "pam_tps" and p.personnel_id.startswith("POL-"):
            assert 1 <= len(p.tps_ids) <= 2
            assert len({tps[t].kecamatan for t in p.tps_ids}) == 1
            officers.update(p.tps_ids)
    assert set(linmas.values()) == {2} and len(linmas) == 1408
    assert set(officers.values()) == {1} and len(officers) == 1408


def test_brimob_is_the_reserve_of_each_kecamatan() -> None:
    tps_by_kec: dict[str, set[str]] = defaultdict(set)
    for t in demo_tps():
        tps_by_kec[t.kecamatan].add(t.tps_id)
    covered = set()
    for p in demo_personnel():
        if p.role == "reserve":
            assert "Brimob" in p.unit
            kec = next(k for k, ids in tps_by_kec.items() if p.tps_ids[0] in ids)
            assert set(p.tps_ids) == tps_by_kec[kec]
            covered.add(kec)
    assert covered == KECAMATAN


def test_generator_is_deterministic(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_serang.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    for shipped in (tps_csv_path(), personnel_csv_path(), kecamatan_yaml_path()):
        assert (tmp_path / shipped.name).read_bytes() == shipped.read_bytes(), shipped.name


def test_plan_devices_one_per_linmas_pair_and_officer_plus_gateways() -> None:
    devices, gateways = plan_devices(demo_tps(), demo_personnel(), read_kecamatan())
    pairs = [d for d in devices if d.personnel_id.startswith("LNM-")]
    assert len(pairs) == 1408
    assert all(len(d.personnel_ids) == 2 and len(d.tps_ids) == 1 for d in pairs)
    officers = [d for d in devices if d.personnel_id.startswith(("POL-", "TNI-"))]
    assert len(officers) == 840 + 100 + 100  # TPS officers, Brimob reserve, soldiers
    assert 1 <= len(gateways) <= 5
    assert all(g.kecamatan and not g.tps_ids for g in gateways)
    assert set(gateways[-1].kecamatan) == KECAMATAN
    assert gateways[0].body() == {"personnel_id": gateways[0].personnel_id, "kecamatan": list(gateways[0].kecamatan)}


def _fake_dispatch(admin_token: str) -> tuple[FastAPI, dict[str, Any]]:
    """A stand-in for dispatch's admin API, to the contract of SPEC section 5."""
    app = FastAPI()
    seen: dict[str, Any] = {"devices": [], "content_types": []}

    def allowed(request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {admin_token}"

    @app.post("/v1/admin/tps/import")
    async def tps_import(request: Request) -> JSONResponse:
        if not allowed(request):
            return JSONResponse({"detail": "bad admin token"}, status_code=401)
        seen["content_types"].append(request.headers["content-type"])
        rows = list(csv.DictReader((await request.body()).decode().splitlines()))
        seen["tps"] = rows
        return JSONResponse({"imported": len(rows), "refused": []})

    @app.post("/v1/admin/personnel/import")
    async def personnel_import(request: Request) -> JSONResponse:
        if not allowed(request):
            return JSONResponse({"detail": "bad admin token"}, status_code=401)
        seen["content_types"].append(request.headers["content-type"])
        rows = list(csv.DictReader((await request.body()).decode().splitlines()))
        seen["personnel"] = rows
        return JSONResponse({"imported": len(rows), "refused": []})

    @app.post("/v1/admin/devices")
    async def devices(request: Request) -> JSONResponse:
        if not allowed(request):
            return JSONResponse({"detail": "bad admin token"}, status_code=401)
        body = await request.json()
        n = len(seen["devices"])
        seen["devices"].append(body)
        return JSONResponse({"device_id": f"dev_{n}", "token": f"secret-token-{n}"}, status_code=201)

    return app, seen


async def test_load_demo_imports_and_issues_devices() -> None:
    app, seen = _fake_dispatch("adm")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as client:
        setup = await load_demo(client, dispatch_url="http://dispatch/", admin_token="adm")
    assert len(seen["tps"]) == 1408
    assert set(seen["tps"][0]) == {"tps_id", "name", "kecamatan", "desa", "lat", "lon", "rawan"}
    assert len(seen["personnel"]) == 3916
    assert all(ct.startswith("text/csv") for ct in seen["content_types"])
    bodies = seen["devices"]
    assert len(bodies) == len(setup.devices) + len(setup.gateways)
    assert all(set(b) in ({"personnel_id", "tps_ids"}, {"personnel_id", "kecamatan"}) for b in bodies)
    assert setup.tps_import == {"imported": 1408, "refused": []}
    assert setup.tps_csv == tps_csv_path() and setup.personnel_csv == personnel_csv_path()
    # Every TPS can post: its Linmas pair's phone comes first, then the officers'.
    assert set(setup.tokens_by_tps) == {t.tps_id for t in demo_tps()}
    for tps_id, tokens in setup.tokens_by_tps.items():
        assert tokens[0].personnel_ids[0].startswith("LNM-") and len(tokens[0].personnel_ids) == 2
        assert all(tps_id in t.tps_ids for t in tokens)
        assert any(t.personnel_id.startswith("POL-") for t in tokens[1:])
    secrets = {t.token for t in setup.devices}
    assert len(secrets) == len(setup.devices)


async def test_load_demo_reports_a_refusal_without_the_token() -> None:
    app, _ = _fake_dispatch("right-token")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as client:
        with pytest.raises(DemoLoadError) as err:
            await load_demo(client, dispatch_url="http://dispatch", admin_token="wrong-token")
    assert "TPS import" in str(err.value) and "401" in str(err.value)
    assert "wrong-token" not in str(err.value)


def test_device_token_repr_hides_the_token() -> None:
    token = DeviceToken(device_id="dev_1", token="s3cret", personnel_id="LNM-0001", personnel_ids=("LNM-0001",))
    assert "s3cret" not in repr(token)
