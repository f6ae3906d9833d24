"""`siaga admin ...` and `siaga audit verify` as an administrator runs them (SPEC section 8, 10):
real subprocesses of the installed `siaga` command on a temporary SQLite database, checked by
what they print, their exit status, and what they did (rows in the database, and a running
`siaga dev` on the same database that honours the tokens and devices they issued).

`audit verify` proves intact timelines intact and names the row when one was changed, removed,
or forged with a recomputed hash: in the database, and in an audit export (`--file`) with no
database at all.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session, col, create_engine, select

from siaga.audit import chain_hash, entry_content
from siaga.auth import Role, hash_token, principal_for
from siaga.models import ApiToken, Device, Personnel, TimelineEntry, Tps
from tests.plugins.system import SIAGA, SystemProcs, tps_rows

TPS_HEADER = ["tps_id", "name", "kecamatan", "desa", "lat", "lon", "rawan"]


def siaga(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """One run of the `siaga` command (its logs go to stderr, its answer to stdout)."""
    return subprocess.run([SIAGA, *args], env=env, capture_output=True, text=True, timeout=120, check=False)


def cli_env(database_url: str) -> dict[str, str]:
    """The environment of an administrator's shell: no SIAGA_* of this machine, this database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIAGA_")}
    env["SIAGA_DATABASE_URL"] = database_url
    return env


def db_url(sysm: SystemProcs) -> str:
    return sysm.env["SIAGA_DATABASE_URL"]


def db_file(sysm: SystemProcs) -> str:
    return db_url(sysm).removeprefix("sqlite:///")


def rows_of(sysm: SystemProcs, model: Any) -> list[Any]:
    engine = create_engine(db_url(sysm))
    try:
        with Session(engine) as s:
            return list(s.exec(select(model)).all())
    finally:
        engine.dispose()


def write_csv(path: Path, header: list[str], rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, header, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8")
    return str(path)


def post_event(
    sysm: SystemProcs, token: str, tps_id: str, description: str = "genset mati", category: str = "equipment"
) -> httpx.Response:
    ev = {
        "event_id": str(uuid.uuid4()),
        "type": "incident.reported",
        "tps_id": tps_id,
        "occurred_at": datetime.now(UTC).isoformat(),
        "payload": {"category": category, "description": description},
    }
    return httpx.post(
        sysm.urls["ingest"] + "/v1/events", json=ev, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SystemProcs]:
    """`siaga dev --no-demo` on a SQLite file the commands below share; TPS T0000..T0002 (Cikande),
    K0000 (Kopo)."""
    sysm = SystemProcs(tmp_path_factory.mktemp("cli"), kafka=None)
    sysm.start()
    try:
        sysm.import_tps(tps_rows(3) + tps_rows(1, kecamatan="Kopo", prefix="K"))
        yield sysm
    finally:
        sysm.stop()


# -- admin token ----------------------------------------------------------------------------------
def test_admin_token_prints_a_token_that_is_stored_hashed_and_works_at_once(system: SystemProcs) -> None:
    name = f"Kabagops {uuid.uuid4().hex[:6]}"
    out = siaga(system.env, "admin", "token", "--name", name, "--role", "operator")
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    assert re.fullmatch(r"ope_[A-Za-z0-9_\-]{40,}", token), out.stdout
    assert token not in out.stderr, "the token is printed once, never logged"

    stored = [t for t in rows_of(system, ApiToken) if t.name == name]
    assert [(t.role, t.token_hash, t.revoked_at) for t in stored] == [("operator", hash_token(token), None)]
    engine = create_engine(db_url(system))
    try:
        who = principal_for(engine, token, None)
    finally:
        engine.dispose()
    assert who is not None and (who.name, who.role) == (name, Role.OPERATOR)

    # The running system honours it: an operator may list and act, not administer.
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(system.urls["dispatch"] + "/v1/incidents", headers=headers).status_code == 200
    assert httpx.get(system.urls["dispatch"] + "/v1/admin/policy", headers=headers).status_code == 403

    again = siaga(system.env, "admin", "token", "--name", name, "--role", "operator")
    assert again.returncode == 0 and again.stdout.strip() != token, "every run issues a new token"
    assert len([t for t in rows_of(system, ApiToken) if t.name == name]) == 2


@pytest.mark.parametrize("role", ["viewer", "admin"])
def test_admin_token_role(system: SystemProcs, role: str) -> None:
    name = f"{role}-{uuid.uuid4().hex[:6]}"
    out = siaga(system.env, "admin", "token", "--name", name, "--role", role)
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    assert token.startswith(role[:3] + "_")
    headers = {"Authorization": f"Bearer {token}"}
    policy = httpx.get(system.urls["dispatch"] + "/v1/admin/policy", headers=headers)
    assert policy.status_code == (200 if role == "admin" else 403)


def test_admin_token_with_an_unknown_role_is_refused_and_stores_nothing(system: SystemProcs) -> None:
    before = len(rows_of(system, ApiToken))
    out = siaga(system.env, "admin", "token", "--name", "x", "--role", "superuser")
    assert out.returncode == 2
    assert "superuser" in out.stderr and "viewer" in out.stderr, "argparse names the choices"
    assert out.stdout == ""
    assert len(rows_of(system, ApiToken)) == before


def test_admin_token_with_a_scope_sees_only_its_kecamatan(system: SystemProcs) -> None:
    """SPEC section 10 from the command line: the registry's TPS took the default regions on import."""
    out = siaga(system.env, "admin", "token", "--name", "polsek kopo", "--role", "viewer", "--kecamatan", "Kopo")
    assert out.returncode == 0, out.stderr
    stored = [t for t in rows_of(system, ApiToken) if t.name == "polsek kopo"]
    assert [t.scope for t in stored] == [{"provinsi": [], "kabupaten": [], "kecamatan": ["Kabupaten Serang/Kopo"]}]
    got = httpx.get(
        system.urls["dispatch"] + "/v1/incidents", headers={"Authorization": f"Bearer {out.stdout.strip()}"}
    )
    assert got.status_code == 200 and all(i["kecamatan"] == "Kopo" for i in got.json()["items"])

    refused = siaga(system.env, "admin", "token", "--name", "x", "--role", "operator", "--kecamatan", "Atlantis")
    assert refused.returncode == 2 and "scope.kecamatan: not in the registry: Atlantis" in refused.stderr
    admin = siaga(system.env, "admin", "token", "--name", "x", "--role", "admin", "--provinsi", "Banten")
    assert admin.returncode == 2 and "admin token sees everything" in admin.stderr
    assert not [t for t in rows_of(system, ApiToken) if t.name == "x"], "nothing issued"


# -- admin device ---------------------------------------------------------------------------------
def test_admin_device_issues_a_device_bound_to_its_tps(system: SystemProcs) -> None:
    out = siaga(system.env, "admin", "device", "--personnel-id", "POL-0007", "--tps", "T0000", "T0001")
    assert out.returncode == 0, out.stderr
    device_id, token = out.stdout.split()
    assert device_id.startswith("dev_") and token.startswith("dev_") and device_id != token

    stored = [d for d in rows_of(system, Device) if d.device_id == device_id]
    assert [(d.personnel_id, d.tps_ids, d.kecamatan, d.token_hash) for d in stored] == [
        ("POL-0007", ["T0000", "T0001"], [], hash_token(token))
    ]
    assert post_event(system, token, "T0001").status_code == 202
    assert post_event(system, token, "T0002").status_code == 403, "not assigned to that TPS"


def test_admin_device_for_a_kecamatan_is_a_gateway_for_all_its_tps(system: SystemProcs) -> None:
    out = siaga(system.env, "admin", "device", "--personnel-id", "GW-SMS-1", "--kecamatan", "Kopo")
    assert out.returncode == 0, out.stderr
    device_id, token = out.stdout.split()
    stored = [d for d in rows_of(system, Device) if d.device_id == device_id]
    assert [(d.tps_ids, d.kecamatan) for d in stored] == [([], ["Kopo"])]
    assert post_event(system, token, "K0000").status_code == 202
    assert post_event(system, token, "T0000").status_code == 403, "Cikande is not its kecamatan"


def test_admin_device_is_refused_what_the_admin_api_refuses(system: SystemProcs) -> None:
    before = len(rows_of(system, Device))
    unbound = siaga(system.env, "admin", "device", "--personnel-id", "POL-0008")
    assert unbound.returncode == 2 and "--tps" in unbound.stderr, unbound.stderr
    unknown = siaga(system.env, "admin", "device", "--tps", "T0000", "NOPE-9")
    assert unknown.returncode == 1 and "NOPE-9" in unknown.stderr, unknown.stderr
    nowhere = siaga(system.env, "admin", "device", "--kecamatan", "Atlantis")
    assert nowhere.returncode == 1 and "Atlantis" in nowhere.stderr, nowhere.stderr
    assert unbound.stdout == unknown.stdout == nowhere.stdout == "", "no token printed"
    assert len(rows_of(system, Device)) == before, "no device stored"


# -- admin import-tps / import-personnel ----------------------------------------------------------
def test_admin_import_tps_prints_the_count_and_the_refused_rows_and_updates(
    system: SystemProcs, tmp_path: Path
) -> None:
    rows = [
        {"tps_id": "IMP-1", "name": "TPS 001", "kecamatan": "Anyar", "desa": "Anyar", "lat": "-6.1", "lon": "105.9",
         "rawan": "flood;remote"},
        {"tps_id": "IMP-2", "name": "TPS 002", "kecamatan": "Anyar", "desa": "Anyar", "lat": "95", "lon": "105.9",
         "rawan": ""},
        {"tps_id": "IMP-3", "name": "TPS 003", "kecamatan": "Anyar", "desa": "Anyar", "lat": "", "lon": "",
         "rawan": "tsunami"},
        {"tps_id": "IMP-4", "name": "TPS 004", "kecamatan": "Anyar", "desa": "Anyar", "lat": "-6.2", "lon": "105.8",
         "rawan": ""},
    ]  # fmt: skip
    path = write_csv(tmp_path / "tps.csv", TPS_HEADER, rows)
    out = siaga(system.env, "admin", "import-tps", path, "--dispatch-url", system.urls["dispatch"])
    assert out.returncode == 0, out.stdout + out.stderr
    doc = json.loads(out.stdout)
    assert doc["imported"] == 2
    assert [(r["line"], r["reason"].split()[0]) for r in doc["refused"]] == [(3, "lat"), (4, "rawan")]
    assert "tsunami" in doc["refused"][1]["reason"]
    stored = {t.tps_id: t for t in rows_of(system, Tps) if t.tps_id.startswith("IMP-")}
    assert sorted(stored) == ["IMP-1", "IMP-4"]
    first = stored["IMP-1"]
    assert (first.kecamatan, first.rawan, first.lat) == ("Anyar", ["flood", "remote"], -6.1)

    # Importing again updates.
    rows[0]["name"], rows[0]["rawan"] = "TPS 001 (pindah)", ""
    path = write_csv(tmp_path / "tps2.csv", TPS_HEADER, rows[:1])
    out = siaga(system.env, "admin", "import-tps", path, "--dispatch-url", system.urls["dispatch"])
    assert out.returncode == 0 and json.loads(out.stdout) == {"imported": 1, "refused": []}, out.stdout
    again = {t.tps_id: t for t in rows_of(system, Tps) if t.tps_id == "IMP-1"}
    assert (again["IMP-1"].name, again["IMP-1"].rawan) == ("TPS 001 (pindah)", [])


def test_admin_import_needs_a_valid_admin_token(system: SystemProcs, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "tps.csv", TPS_HEADER, tps_rows(1, kecamatan="Ditolak", prefix="NO"))
    env = {k: v for k, v in system.env.items() if k != "SIAGA_ADMIN_TOKEN"}
    missing = siaga(env, "admin", "import-tps", path, "--dispatch-url", system.urls["dispatch"])
    assert missing.returncode == 2 and "--admin-token" in missing.stderr
    wrong = siaga(
        env, "admin", "import-tps", path, "--dispatch-url", system.urls["dispatch"], "--admin-token", "adm_wrong"
    )
    assert wrong.returncode == 1, wrong.stdout
    assert "token" in wrong.stdout.lower(), "it prints dispatch's refusal"
    assert not [t for t in rows_of(system, Tps) if t.tps_id.startswith("NO")]
    viewer = system.token("viewer")
    as_viewer = siaga(
        env, "admin", "import-tps", path, "--dispatch-url", system.urls["dispatch"], "--admin-token", viewer
    )
    assert as_viewer.returncode == 1 and "admin" in as_viewer.stdout
    assert not [t for t in rows_of(system, Tps) if t.tps_id.startswith("NO")]


def test_admin_import_personnel_assigns_people_to_tps(system: SystemProcs, tmp_path: Path) -> None:
    header = ["personnel_id", "name", "unit", "role", "tps_ids"]
    people = [
        {"personnel_id": "CLI-P1", "name": "Bripka Ahmad", "unit": "Polsek Cikande", "role": "pam_tps",
         "tps_ids": "T0002"},
        {"personnel_id": "CLI-P2", "name": "Linmas Siti", "unit": "Linmas", "role": "linmas", "tps_ids": "T0002"},
        {"personnel_id": "CLI-P3", "name": "Briptu Budi", "unit": "Polsek Kopo", "role": "pam_tps",
         "tps_ids": "NOPE-1"},
    ]  # fmt: skip
    path = write_csv(tmp_path / "personnel.csv", header, people)
    out = siaga(system.env, "admin", "import-personnel", path, "--dispatch-url", system.urls["dispatch"])
    assert out.returncode == 0, out.stdout + out.stderr
    doc = json.loads(out.stdout)
    assert doc["imported"] == 2
    assert [r["line"] for r in doc["refused"]] == [4] and "NOPE-1" in doc["refused"][0]["reason"]
    stored = {p.personnel_id: p for p in rows_of(system, Personnel) if p.personnel_id.startswith("CLI-")}
    assert sorted(stored) == ["CLI-P1", "CLI-P2"]
    assert (stored["CLI-P1"].name, stored["CLI-P1"].unit, stored["CLI-P1"].tps_ids) == (
        "Bripka Ahmad",
        "Polsek Cikande",
        ["T0002"],
    )
    assert {t.tps_id: t.assigned for t in rows_of(system, Tps) if t.tps_id == "T0002"} == {"T0002": 2}


# -- audit verify ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def recorded_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database from a system that ran for a while, then stopped: three incidents (in three
    categories, so no area incident joins them), each noted, escalated and resolved by an operator."""
    sysm = SystemProcs(tmp_path_factory.mktemp("audit"), kafka=None)
    sysm.start()
    try:
        sysm.import_tps(tps_rows(3))
        device, op = sysm.device(["T0000", "T0001", "T0002"]), sysm.token("operator")
        for tps_id, category in (("T0000", "equipment"), ("T0001", "logistics"), ("T0002", "traffic")):
            assert post_event(sysm, device, tps_id, f"laporan {category}", category=category).status_code == 202
        end = time.monotonic() + 20
        while len(sysm.incidents(op)) < 3:
            assert time.monotonic() < end, "dispatch did not open the three incidents"
            time.sleep(0.1)
        headers = {"Authorization": f"Bearer {op}"}
        bases = [sysm.urls["dispatch"] + f"/v1/incidents/{inc['id']}" for inc in sysm.incidents(op)]
        for base in bases:
            assert httpx.post(base + "/notes", json={"text": "dicek"}, headers=headers).status_code == 200
        time.sleep(0.01)
        mid = datetime.now(UTC)  # the export since here holds the second half of every chain
        for base in bases:
            assert httpx.post(base + "/escalate", json={"note": "naik"}, headers=headers).status_code == 200
            assert httpx.post(base + "/resolve", json={"resolution": "beres"}, headers=headers).status_code == 200
        export = sysm.urls["dispatch"] + "/v1/admin/audit/export"
        assert httpx.get(export, headers=headers).status_code == 403, "the export is the admin's"
        for name, params in (("export.jsonl", {}), ("since.jsonl", {"since": mid.isoformat()})):
            r = httpx.get(export, params=params, headers=sysm.admin_headers(), timeout=30)
            assert r.status_code == 200, r.text
            assert r.headers["content-type"].startswith("application/x-ndjson")
            (Path(db_file(sysm)).parent / name).write_bytes(r.content)
    finally:
        sysm.stop()
    return Path(db_file(sysm))


@dataclass
class Recorded:
    env: dict[str, str]
    path: Path


@pytest.fixture
def recorded(recorded_db: Path, tmp_path: Path) -> Recorded:
    """A private copy of the recorded database, for one test to verify or tamper with."""
    copy = tmp_path / "copy.db"
    with closing(sqlite3.connect(recorded_db)) as src, closing(sqlite3.connect(copy)) as dst:
        src.backup(dst)
    return Recorded(cli_env(f"sqlite:///{copy}"), copy)


def timeline(db: Recorded) -> list[TimelineEntry]:
    engine = create_engine(f"sqlite:///{db.path}")
    try:
        with Session(engine) as s:
            entries = list(s.exec(select(TimelineEntry)).all())
    finally:
        engine.dispose()
    return sorted(entries, key=lambda e: (e.incident_id, e.seq))


def test_audit_verify_proves_intact_timelines_intact(recorded: Recorded) -> None:
    entries = timeline(recorded)
    incidents = {e.incident_id for e in entries}
    assert len(incidents) == 3 and len(entries) >= 12
    out = siaga(recorded.env, "audit", "verify")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == f"intact: {len(entries)} timeline entries of {len(incidents)} incidents verified"


def test_audit_verify_names_a_changed_row(recorded: Recorded) -> None:
    victim = next(e for e in timeline(recorded) if e.action == "resolved")
    with closing(sqlite3.connect(recorded.path)) as conn, conn:
        conn.execute(
            "UPDATE timelineentry SET detail = ? WHERE id = ?",
            (json.dumps({**victim.detail, "resolution": "tidak ada kejadian"}), victim.id),
        )
    out = siaga(recorded.env, "audit", "verify")
    assert out.returncode == 1, out.stdout
    assert out.stdout.startswith("BROKEN"), out.stdout
    assert f"incident {victim.incident_id}, timeline entry {victim.seq} (resolved" in out.stdout
    assert "changed" in out.stdout


def test_audit_verify_names_a_removed_row(recorded: Recorded) -> None:
    victim = next(e for e in timeline(recorded) if e.action == "note")
    with closing(sqlite3.connect(recorded.path)) as conn, conn:
        conn.execute("DELETE FROM timelineentry WHERE id = ?", (victim.id,))
    out = siaga(recorded.env, "audit", "verify")
    assert out.returncode == 1, out.stdout
    assert f"incident {victim.incident_id}" in out.stdout
    assert f"entry {victim.seq} is missing" in out.stdout


def test_audit_verify_catches_a_forged_row_with_a_recomputed_hash(recorded: Recorded) -> None:
    """Rewriting an entry and its own hash still breaks the link of the entry after it."""
    entries = timeline(recorded)
    victim = next(e for e in entries if e.action == "escalated")
    after = next(e for e in entries if e.incident_id == victim.incident_id and e.seq == victim.seq + 1)
    victim.detail = {**victim.detail, "note": "tidak pernah naik"}
    forged = chain_hash(victim.prev_hash, entry_content(victim))
    with closing(sqlite3.connect(recorded.path)) as conn, conn:
        conn.execute(
            "UPDATE timelineentry SET detail = ?, hash = ? WHERE id = ?", (json.dumps(victim.detail), forged, victim.id)
        )
    out = siaga(recorded.env, "audit", "verify")
    assert out.returncode == 1, out.stdout
    assert f"incident {after.incident_id}, timeline entry {after.seq} ({after.action}" in out.stdout
    assert "link to the previous entry" in out.stdout


# -- audit export, checked without the database ------------------------------------------------------
def export_of(recorded_db: Path, name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (recorded_db.parent / name).read_text().splitlines()]


def write_lines(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def no_database(tmp_path: Path) -> dict[str, str]:
    """An environment whose database does not exist: `verify --file` must not need it."""
    return cli_env(f"sqlite:///{tmp_path / 'absent' / 'none.db'}")


def test_the_export_is_the_database_timeline_and_verifies_without_it(recorded_db: Path, tmp_path: Path) -> None:
    entries = timeline(Recorded({}, recorded_db))
    lines = export_of(recorded_db, "export.jsonl")
    assert [(d["incident_id"], d["seq"], d["hash"]) for d in lines] == [(e.incident_id, e.seq, e.hash) for e in entries]
    out = siaga(no_database(tmp_path), "audit", "verify", "--file", str(recorded_db.parent / "export.jsonl"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith(f"intact: {len(entries)} timeline entries of 3 incidents verified"), out.stdout
    assert not (tmp_path / "absent").exists(), "verify --file touched a database"


def test_an_export_since_a_time_holds_the_later_entries_and_verifies_as_partial(
    recorded_db: Path, tmp_path: Path
) -> None:
    full, since = export_of(recorded_db, "export.jsonl"), export_of(recorded_db, "since.jsonl")
    later = [d for d in full if d["action"] in ("escalated", "resolved")]
    assert later and all(d in since for d in later), "every escalation and resolution is in the later export"
    assert not any(d["action"] in ("opened", "note") for d in since), "nothing from before `since`"
    path = str(recorded_db.parent / "since.jsonl")
    strict = siaga(no_database(tmp_path), "audit", "verify", "--file", path)
    assert strict.returncode == 1 and "is missing" in strict.stdout, "a chain without entry 1 is not whole"
    out = siaga(no_database(tmp_path), "audit", "verify", "--file", path, "--partial")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3 of them continue an earlier export" in out.stdout
    both = siaga(
        no_database(tmp_path), "audit", "verify", "--file", str(recorded_db.parent / "export.jsonl"), "--file", path
    )
    assert both.returncode == 0 and "continue" not in both.stdout, both.stdout


def test_verify_file_names_a_tampered_entry(recorded_db: Path, tmp_path: Path) -> None:
    lines = export_of(recorded_db, "export.jsonl")
    victim = next(d for d in lines if d["action"] == "resolved")
    victim["detail"]["resolution"] = "tidak ada kejadian"
    out = siaga(no_database(tmp_path), "audit", "verify", "--file", str(write_lines(tmp_path / "t.jsonl", lines)))
    assert out.returncode == 1, out.stdout
    assert f"BROKEN: incident {victim['incident_id']}, timeline entry {victim['seq']} (resolved" in out.stdout
    assert "changed" in out.stdout


def test_verify_file_catches_a_forged_entry_with_a_recomputed_hash_and_a_removed_one(
    recorded_db: Path, tmp_path: Path
) -> None:
    lines = export_of(recorded_db, "export.jsonl")
    i = next(n for n, d in enumerate(lines) if d["action"] == "escalated")
    victim, after = lines[i], lines[i + 1]
    victim["detail"]["note"] = "tidak pernah naik"
    victim["hash"] = chain_hash(victim["prev_hash"], {k: victim[k] for k in list(victim)[:6]})
    out = siaga(no_database(tmp_path), "audit", "verify", "--file", str(write_lines(tmp_path / "f.jsonl", lines)))
    assert out.returncode == 1, out.stdout
    assert f"incident {after['incident_id']}, timeline entry {after['seq']}" in out.stdout
    assert "link to the previous entry" in out.stdout

    removed = [d for d in export_of(recorded_db, "export.jsonl") if d["action"] != "note"]
    out = siaga(no_database(tmp_path), "audit", "verify", "--file", str(write_lines(tmp_path / "r.jsonl", removed)))
    assert out.returncode == 1 and "is missing" in out.stdout, out.stdout


def test_verify_file_refuses_what_is_not_an_export_and_exports_that_disagree(recorded_db: Path, tmp_path: Path) -> None:
    env = no_database(tmp_path)
    garbage = tmp_path / "g.jsonl"
    garbage.write_text('{"incident_id": "X"}\nnot json\n')
    out = siaga(env, "audit", "verify", "--file", str(garbage))
    assert out.returncode == 2 and "line 1: not an audit entry (missing seq, at" in out.stderr, out.stderr
    garbage.write_text("[1, 2]\n{")
    out = siaga(env, "audit", "verify", "--file", str(garbage))
    assert out.returncode == 2 and "line 1: not an audit entry" in out.stderr, out.stderr
    out = siaga(env, "audit", "verify", "--file", str(tmp_path / "nothing.jsonl"))
    assert out.returncode == 2 and "cannot read it" in out.stderr, out.stderr

    lines = export_of(recorded_db, "export.jsonl")
    lines[0]["actor"] = "someone else"
    changed = write_lines(tmp_path / "c.jsonl", lines)
    out = siaga(env, "audit", "verify", "--file", str(recorded_db.parent / "export.jsonl"), "--file", str(changed))
    assert out.returncode == 2 and "differs from the same entry" in out.stderr, out.stderr
    assert siaga(env, "audit", "verify", "--partial").returncode == 2, "--partial needs --file"


def test_migrate_show_then_upgrade(tmp_path: Path) -> None:
    env = cli_env(f"sqlite:///{tmp_path / 'fresh.db'}")
    shown = siaga(env, "migrate", "--show")
    assert shown.returncode == 0, shown.stderr
    m = re.fullmatch(r"current: none  head: (\w+)", shown.stdout.strip())
    assert m, shown.stdout
    assert siaga(env, "migrate").returncode == 0
    assert siaga(env, "migrate", "--show").stdout.strip() == f"current: {m.group(1)}  head: {m.group(1)}"
    engine = create_engine(env["SIAGA_DATABASE_URL"])
    try:
        with Session(engine) as s:
            assert s.exec(select(col(Tps.tps_id))).all() == [], "the schema is there, empty"
    finally:
        engine.dispose()
