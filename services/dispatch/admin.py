"""The admin API: TPS registry and roster imports, devices, tokens, the escalation policy, the
operators' corrections as labelled examples, and the audit export."""

from __future__ import annotations

import asyncio
import csv
import io
import secrets
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, TypeVar

import orjson
import yaml
from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import and_, or_
from sqlmodel import Session, col, select

from services.dispatch.policy import EscalationPolicy, PolicyError
from services.dispatch.service import Dispatch
from services.dispatch.views import Since, requires
from siaga.audit import export_line
from siaga.auth import Principal, Role, Scope, hash_token, new_token
from siaga.clock import iso
from siaga.events import Category
from siaga.models import ApiToken, Correction, Device, Personnel, TimelineEntry, Tps
from siaga.openapi import answer, error_responses, inline_schema, invalid
from siaga.phones import normalise_phone

Admin = Annotated[Principal, requires(Role.ADMIN)]
NDJSON = "application/x-ndjson"
AUDIT_PAGE = 2000  # timeline entries a database read of the audit export


class AuditLine(BaseModel):
    """One timeline entry of the audit export: `hash` = sha256(prev_hash + the sorted JSON of the first six
    fields); `prev_hash` is the previous entry's `hash` ("" for entry 1). See siaga/audit.py."""

    incident_id: str
    seq: int = Field(description="The entry's number in its incident's timeline, from 1.")
    at: str = Field(description="When it was recorded (RFC 3339, UTC), exactly as hashed.")
    actor: str
    action: str
    detail: dict[str, Any]
    prev_hash: str
    hash: str


class Said(BaseModel):
    category: str
    severity: str
    why: list[str] = Field(default_factory=list, description="The classifier's reasons (its proposal only).")


class CorrectionLine(BaseModel):
    """One operator correction, a labelled example: the text and what each side said of it."""

    incident_id: str
    at: datetime
    text: str = Field(description="The incident's description (its first report).")
    payload: dict[str, Any] = Field(description="The facts as dispatch read them from payload and text.")
    rawan: list[str] = Field(description="The TPS's rawan categories then.")
    source: str = Field(description="field | sms | whatsapp | command_post")
    classifier: Said = Field(description="What the classifier said: before the incident's first correction.")
    before: Said = Field(description="What the incident said just before this correction.")
    operator: Said = Field(description="What the operator said.")
    reason: str
    override: bool = Field(description="A severity below what the facts demand.")
    who: str


def correction_lines(rows: list[Correction]) -> list[dict[str, Any]]:
    """The export, oldest first; `classifier` is the first correction's `before` of each incident."""
    first: dict[str, dict[str, Any]] = {}
    out = []
    for c in sorted(rows, key=lambda c: (c.at, c.id or 0)):
        classifier = first.setdefault(c.incident_id, c.before)
        out.append(
            {
                "incident_id": c.incident_id,
                "at": iso(c.at),
                "text": c.text,
                "payload": c.facts,
                "rawan": c.rawan,
                "source": c.source,
                "classifier": classifier,
                "before": c.before,
                "operator": c.after,
                "reason": c.reason,
                "override": c.override,
                "who": c.actor,
            }
        )
    return out


TPS_HEADER = ["tps_id", "name", "kecamatan", "desa", "lat", "lon", "rawan"]
PERSONNEL_HEADER = ["personnel_id", "name", "unit", "role", "tps_ids"]
RAWAN_WORDS = {c.value for c in Category} | {"remote"}
MAX_CSV_BYTES = 16 * 1024 * 1024


Revocable = TypeVar("Revocable", Device, ApiToken)


class ImportResult(BaseModel):
    imported: int
    refused: list[dict[str, Any]] = Field(description="Rows not imported: {line, reason}.")


class DeviceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    personnel_id: str | None = Field(default=None, max_length=128)
    tps_ids: list[str] = Field(default_factory=list, max_length=5000)
    kecamatan: list[str] = Field(default_factory=list, max_length=100, description="For a gateway device.")

    @model_validator(mode="after")
    def _bound(self) -> DeviceCreate:
        if not self.tps_ids and not self.kecamatan:
            raise ValueError("a device needs tps_ids, or kecamatan for a gateway")
        return self


RegionNames = Annotated[list[Annotated[str, Field(min_length=1, max_length=201)]], Field(max_length=1000)]


class ScopeBody(BaseModel):
    """The regions a viewer or operator token is limited to (SPEC section 10): any of them admits."""

    model_config = ConfigDict(extra="forbid")

    provinsi: RegionNames = Field(default_factory=list)
    kabupaten: RegionNames = Field(default_factory=list)
    kecamatan: RegionNames = Field(
        default_factory=list,
        description="Kecamatan names; one that exists in several kabupaten is written `Kabupaten/Kecamatan`.",
    )


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    role: Role
    scope: ScopeBody | None = Field(
        default=None, description="Limit a viewer or operator token to these regions; without it, it sees all."
    )


def resolve_scope(s: Session, body: ScopeBody) -> Scope:
    """The scope of a token request, every name checked against the registry: 422 naming the unknown
    or ambiguous ones."""
    problems: list[dict[str, str]] = []
    provinsi = set(s.exec(select(Tps.provinsi).where(col(Tps.provinsi).in_(body.provinsi)).distinct()).all())
    kabupaten = set(s.exec(select(Tps.kabupaten).where(col(Tps.kabupaten).in_(body.kabupaten)).distinct()).all())
    for name, asked, known in (("provinsi", body.provinsi, provinsi), ("kabupaten", body.kabupaten, kabupaten)):
        unknown = sorted(set(asked) - known)
        if unknown:
            problems.append({"field": f"scope.{name}", "message": f"not in the registry: {', '.join(unknown[:20])}"})
    names = {n.split("/", 1)[-1] for n in body.kecamatan}
    where: dict[str, set[str]] = {}
    for kab, kec in s.exec(select(Tps.kabupaten, Tps.kecamatan).where(col(Tps.kecamatan).in_(names)).distinct()):
        where.setdefault(kec, set()).add(kab)
    pairs: set[tuple[str, str]] = set()
    unknown, ambiguous = [], []
    for name in body.kecamatan:
        kab, _, kec = name.rpartition("/")
        found = where.get(kec, set())
        if (kab and kab not in found) or not found:
            unknown.append(name)
        elif not kab and len(found) > 1:
            ambiguous.append(f"{kec} (in {', '.join(sorted(found))}: write it as {sorted(found)[0]}/{kec})")
        else:
            pairs.add((kab or next(iter(found)), kec))
    if unknown:
        problems.append(
            {"field": "scope.kecamatan", "message": f"not in the registry: {', '.join(sorted(unknown)[:20])}"}
        )
    if ambiguous:
        problems.append({"field": "scope.kecamatan", "message": f"ambiguous: {'; '.join(ambiguous[:5])}"})
    if problems:
        raise HTTPException(422, problems)
    return Scope(frozenset(provinsi), frozenset(kabupaten), frozenset(pairs))


class DeviceIssued(BaseModel):
    device_id: str
    token: str = Field(description="The device's token: shown this once, stored only as a hash.")
    personnel_id: str | None
    tps_ids: list[str]
    kecamatan: list[str]


class DeviceInfo(BaseModel):
    device_id: str
    personnel_id: str | None
    tps_ids: list[str]
    kecamatan: list[str]
    created_at: datetime | None
    revoked_at: datetime | None


class DeviceRevoked(BaseModel):
    device_id: str
    revoked_at: datetime


class TokenIssued(BaseModel):
    id: int
    name: str
    role: Role
    scope: dict[str, list[str]] | None = Field(description="Its regions (kecamatan as `Kabupaten/Kecamatan`), or null.")
    token: str = Field(description="The token: shown this once, stored only as a hash.")


class TokenInfo(BaseModel):
    id: int
    name: str
    role: Role
    scope: dict[str, list[str]] | None = None
    created_at: datetime | None
    revoked_at: datetime | None


class TokenRevoked(BaseModel):
    id: int
    revoked_at: datetime


class PolicyInForce(BaseModel):
    version: int = Field(description="The stored version now in force.")
    policy: dict[str, Any] = Field(description="The policy document, as PUT takes it.")


POLICY = inline_schema(EscalationPolicy)
# The stored version is assigned on save: one sent is ignored, whatever it is.
POLICY["properties"]["version"] = {"description": "Ignored: saving assigns the next version."}
POLICY_BODY = {
    "anyOf": [
        POLICY,
        {
            "type": "object",
            "description": "What GET /v1/admin/policy answers: the version is ignored.",
            "required": ["policy"],
            "properties": {"version": {"description": "Ignored: saving assigns the next version."}, "policy": POLICY},
            "additionalProperties": False,
        },
    ]
}


def _read_csv(text: str, header: list[str]) -> tuple[list[tuple[int, dict[str, str]]], list[dict[str, Any]]]:
    """The rows (with their line numbers) and the rows refused for their shape; 422 for an unreadable file."""
    reader = csv.DictReader(io.StringIO(text))
    rows: list[tuple[int, dict[str, str]]] = []
    refused: list[dict[str, Any]] = []
    try:
        fields = [f.strip() for f in (reader.fieldnames or [])]
        missing = [h for h in header if h not in fields]
        if missing:
            raise invalid("body", f"the CSV header must be {','.join(header)}; missing {','.join(missing)}")
        reader.fieldnames = fields
        for row in reader:
            if None in row or any(v is None for v in row.values()):
                refused.append({"line": reader.line_num, "reason": f"expected {len(header)} columns"})
            else:
                rows.append((reader.line_num, {k: (v or "").strip() for k, v in row.items()}))
    except csv.Error as exc:
        raise invalid("body", f"the CSV cannot be read at line {reader.line_num}: {exc}") from None
    return rows, refused


@dataclass
class _RosterPhones:
    of_line: dict[int, str]  # line -> the E.164 number it gives its person
    refused: set[int]  # lines refused for their number


def _phones_of(s: Session, rows: list[tuple[int, dict[str, str]]], refused: list[dict[str, Any]]) -> _RosterPhones:
    """The roster's phone numbers in E.164 (how an SMS sender is known, SPEC section 11).

    A number two people share could not tell them apart, so the later line is refused, naming the
    earlier one (or the person in the registry who has it already).
    """
    out = _RosterPhones({}, set())
    first: dict[str, tuple[int, str]] = {}  # number -> (line, personnel id) in this file
    in_file = {row["personnel_id"] for _, row in rows}
    for line, row in rows:
        raw = row.get("phone", "")
        if not raw:
            continue
        phone = normalise_phone(raw)
        pid = row["personnel_id"]
        held = first.get(phone) if phone else None
        if phone is None:
            reason = f"phone {raw!r} is not a phone number (write 08..., +62 8... or 628...)"
        elif held is not None and held[1] != pid:
            reason = f"phone {phone} is also on line {held[0]} ({held[1]}): one number a person"
        else:
            holder = s.exec(select(Personnel.personnel_id).where(Personnel.phone == phone)).first()
            if holder is not None and holder != pid and holder not in in_file:
                reason = f"phone {phone} already belongs to {holder}: one number a person"
            else:
                first.setdefault(phone, (line, pid))
                out.of_line[line] = phone
                continue
        refused.append({"line": line, "reason": reason})
        out.refused.add(line)
    return out


def _tps_row(row: dict[str, str], regions: tuple[str, str]) -> Tps | str:
    """A TPS of an import row; `regions` are the (kabupaten, provinsi) for rows without those columns."""
    if not row["tps_id"]:
        return "tps_id is empty"
    if len(row["tps_id"]) > 128:
        return "tps_id is longer than 128 characters"
    if not row["name"] or not row["kecamatan"]:
        return "name and kecamatan are required"
    coords: list[float | None] = []
    for key, bound in (("lat", 90.0), ("lon", 180.0)):
        raw = row[key]
        if raw == "":
            coords.append(None)
            continue
        try:
            v = float(raw)
        except ValueError:
            return f"{key} {raw!r} is not a number"
        if not -bound <= v <= bound or v != v:
            return f"{key} {raw!r} is out of range"
        coords.append(v)
    rawan = [w.strip() for w in row["rawan"].split(";") if w.strip()]
    unknown = [w for w in rawan if w not in RAWAN_WORDS]
    if unknown:
        return f"rawan {unknown} unknown; use categories or 'remote', separated by ';'"
    kabupaten = (row.get("kabupaten") or "").strip() or regions[0]
    provinsi = (row.get("provinsi") or "").strip() or regions[1]
    if len(kabupaten) > 100 or len(provinsi) > 100:
        return "kabupaten and provinsi are at most 100 characters"
    return Tps(
        tps_id=row["tps_id"],
        name=row["name"],
        kecamatan=row["kecamatan"],
        kabupaten=kabupaten,
        provinsi=provinsi,
        desa=row["desa"],
        lat=coords[0],
        lon=coords[1],
        rawan=rawan,
    )


def build_router(dispatch: Dispatch) -> APIRouter:
    ctx = dispatch.ctx
    router = APIRouter(prefix="/v1/admin", tags=["admin"], responses=error_responses(401, 403, 422))
    csv_refusals = error_responses(413, _413=f"The CSV is over {MAX_CSV_BYTES} bytes.")
    json_refusals = error_responses(400)

    async def csv_body(request: Request) -> str:
        body = await request.body()
        if len(body) > MAX_CSV_BYTES:
            raise HTTPException(413, f"CSV over {MAX_CSV_BYTES} bytes; split it")
        try:
            return body.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise invalid("body", "the CSV must be UTF-8 text") from None

    @router.post(
        "/tps/import",
        response_model=ImportResult,
        summary="Import or update the TPS registry (CSV)",
        description="Columns tps_id, name, kecamatan, desa, lat, lon, rawan; optional kabupaten and provinsi "
        "(SPEC section 10), which default to SIAGA_DEFAULT_KABUPATEN and SIAGA_DEFAULT_PROVINSI when absent or empty.",
        responses=csv_refusals,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "text/csv": {
                        "schema": {"type": "string"},
                        "example": "tps_id,name,kecamatan,desa,lat,lon,rawan,kabupaten,provinsi\n"
                        "SRG-CKD-001,TPS 001,Cikande,Cikande,-6.18,106.34,flood;remote,Kabupaten Serang,Banten\n",
                    }
                },
            }
        },
    )
    async def import_tps(request: Request, _: Admin) -> ImportResult:
        rows, refused = _read_csv(await csv_body(request), TPS_HEADER)
        good: list[Tps] = []
        seen: set[str] = set()
        for line, row in rows:
            tps = _tps_row(row, (ctx.settings.default_kabupaten, ctx.settings.default_provinsi))
            if isinstance(tps, str):
                refused.append({"line": line, "reason": tps})
            elif tps.tps_id in seen:
                refused.append({"line": line, "reason": f"tps_id {tps.tps_id} repeats an earlier row"})
            else:
                seen.add(tps.tps_id)
                good.append(tps)

        def upsert() -> list[Tps]:
            # The registry's columns only: a TPS's live state belongs to its partition owner, which
            # hears of the change by a command and announces the TPS to the dashboards.
            with Session(ctx.engine, expire_on_commit=False) as s:
                for new in good:
                    tps = s.get(Tps, new.tps_id)
                    if tps is None:
                        s.add(new)
                    else:
                        for k in ("name", "kecamatan", "kabupaten", "provinsi", "desa", "lat", "lon", "rawan"):
                            setattr(tps, k, getattr(new, k))
                s.commit()
            return good

        await dispatch.refresh_tps(await asyncio.to_thread(upsert), actor="admin")
        return ImportResult(imported=len(good), refused=sorted(refused, key=lambda r: r["line"]))

    @router.post(
        "/personnel/import",
        response_model=ImportResult,
        summary="Import or update the roster (CSV)",
        responses=csv_refusals,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "text/csv": {
                        "schema": {"type": "string"},
                        "example": "personnel_id,name,unit,role,tps_ids,phone\n"
                        "POL-0001,Bripka Ahmad,Polsek Cikande,pam_tps,SRG-CKD-001;SRG-CKD-002,0812-3456-7890\n",
                    }
                },
            }
        },
    )
    async def import_personnel(request: Request, _: Admin) -> ImportResult:
        rows, refused = _read_csv(await csv_body(request), PERSONNEL_HEADER)

        def apply() -> tuple[int, list[Tps]]:
            with Session(ctx.engine, expire_on_commit=False) as s:
                known = set(s.exec(select(Tps.tps_id)).all())
                phones = _phones_of(s, rows, refused)
                n = 0
                for line, row in rows:
                    tps_ids = [t.strip() for t in row["tps_ids"].split(";") if t.strip()]
                    unknown = [t for t in tps_ids if t not in known]
                    if line in phones.refused:
                        continue
                    if not row["personnel_id"] or not row["name"]:
                        refused.append({"line": line, "reason": "personnel_id and name are required"})
                    elif unknown:
                        refused.append({"line": line, "reason": f"unknown TPS {unknown[:5]}"})
                    else:
                        person = s.get(Personnel, row["personnel_id"]) or Personnel(
                            personnel_id=row["personnel_id"], name=row["name"]
                        )
                        person.name, person.unit, person.role = row["name"], row["unit"], row["role"]
                        person.tps_ids = tps_ids
                        if "phone" in row:  # an optional column: left out, the numbers stay as they are
                            person.phone = phones.of_line.get(line)
                        s.add(person)
                        n += 1
                s.flush()
                counts: Counter[str] = Counter()
                for ids in s.exec(select(Personnel.tps_ids)).all():
                    counts.update(set(ids or []))
                changed: list[Tps] = []
                for tps in s.exec(select(Tps)).all():
                    if tps.assigned != counts.get(tps.tps_id, 0):
                        tps.assigned = counts.get(tps.tps_id, 0)
                        changed.append(tps)
                s.commit()
                return n, changed

        n, changed = await asyncio.to_thread(apply)
        await dispatch.refresh_tps(changed, actor="admin")  # their owners take the new counts
        return ImportResult(imported=n, refused=sorted(refused, key=lambda r: r["line"]))

    @router.post(
        "/devices",
        status_code=201,
        summary="Issue a device token (shown once)",
        response_model=None,
        responses=answer(DeviceIssued, "The new device and its token.", 201) | json_refusals,
    )
    async def create_device(body: DeviceCreate, _: Admin) -> dict[str, Any]:
        def issue() -> dict[str, Any]:
            with Session(ctx.engine) as s:
                if body.tps_ids:
                    found = set(s.exec(select(Tps.tps_id).where(col(Tps.tps_id).in_(body.tps_ids))).all())
                    unknown = [t for t in body.tps_ids if t not in found]
                    if unknown:
                        raise invalid("tps_ids", f"unknown TPS {unknown[:10]}")
                if body.kecamatan:
                    found = set(s.exec(select(Tps.kecamatan).where(col(Tps.kecamatan).in_(body.kecamatan))).all())
                    unknown = [k for k in body.kecamatan if k not in found]
                    if unknown:
                        raise invalid("kecamatan", f"no TPS in {unknown[:10]}")
                token = new_token("dev")
                device = Device(
                    device_id="dev_" + secrets.token_hex(8),
                    personnel_id=body.personnel_id,
                    token_hash=hash_token(token),
                    tps_ids=body.tps_ids,
                    kecamatan=body.kecamatan,
                    created_at=ctx.clock.now(),
                )
                s.add(device)
                s.commit()
                return {
                    "device_id": device.device_id,
                    "token": token,
                    "personnel_id": body.personnel_id,
                    "tps_ids": body.tps_ids,
                    "kecamatan": body.kecamatan,
                }

        return await asyncio.to_thread(issue)

    @router.get(
        "/devices",
        summary="List devices (never their tokens)",
        response_model=None,
        responses=answer(list[DeviceInfo], "Every device, revoked ones too."),
    )
    async def list_devices(_: Admin) -> list[dict[str, Any]]:
        def rows() -> list[dict[str, Any]]:
            with Session(ctx.engine) as s:
                return [
                    {
                        "device_id": d.device_id,
                        "personnel_id": d.personnel_id,
                        "tps_ids": d.tps_ids,
                        "kecamatan": d.kecamatan,
                        "created_at": iso(d.created_at),
                        "revoked_at": iso(d.revoked_at),
                    }
                    for d in s.exec(select(Device)).all()
                ]

        return await asyncio.to_thread(rows)

    def revoke(model: type[Revocable], key: str | int, what: str) -> dict[str, Any]:
        """Mark a device or token revoked now (again: keep the first time); the next request is refused."""
        with Session(ctx.engine) as s:
            row = s.get(model, key)
            if row is None:
                raise HTTPException(404, f"no {what} {key!r}")
            row.revoked_at = row.revoked_at or ctx.clock.now()
            s.add(row)
            s.commit()
            return {"revoked_at": iso(row.revoked_at)}

    @router.delete(
        "/devices/{device_id}",
        summary="Revoke a device at once",
        response_model=None,
        responses=answer(DeviceRevoked, "Revoked (again: the first time stays).")
        | error_responses(404, _404="No such device."),
    )
    async def revoke_device(device_id: str, _: Admin) -> dict[str, Any]:
        return {"device_id": device_id, **await asyncio.to_thread(revoke, Device, device_id, "device")}

    @router.post(
        "/tokens",
        status_code=201,
        summary="Issue a viewer, operator or admin token (shown once)",
        response_model=None,
        responses=answer(TokenIssued, "The new token.", 201) | json_refusals,
    )
    async def create_token(body: TokenCreate, _: Admin) -> dict[str, Any]:
        if body.scope is not None and body.role is Role.ADMIN:
            raise invalid("scope", "an admin token sees everything: scope is for viewer and operator tokens")
        if body.scope is not None and not (body.scope.provinsi or body.scope.kabupaten or body.scope.kecamatan):
            raise invalid("scope", "name at least one provinsi, kabupaten or kecamatan (or leave scope out)")

        def issue() -> dict[str, Any]:
            token = new_token(body.role.value[:3])
            with Session(ctx.engine) as s:
                scope = resolve_scope(s, body.scope).document() if body.scope is not None else None
                row = ApiToken(
                    name=body.name,
                    role=body.role.value,
                    token_hash=hash_token(token),
                    created_at=ctx.clock.now(),
                    scope=scope,
                )
                s.add(row)
                s.commit()
                s.refresh(row)
                return {"id": row.id, "name": row.name, "role": row.role, "scope": row.scope, "token": token}

        return await asyncio.to_thread(issue)

    @router.get(
        "/tokens",
        summary="List tokens (never the tokens themselves)",
        response_model=None,
        responses=answer(list[TokenInfo], "Every issued token, revoked ones too."),
    )
    async def list_tokens(_: Admin) -> list[dict[str, Any]]:
        def rows() -> list[dict[str, Any]]:
            with Session(ctx.engine) as s:
                return [
                    {
                        "id": t.id,
                        "name": t.name,
                        "role": t.role,
                        "scope": t.scope,
                        "created_at": iso(t.created_at),
                        "revoked_at": iso(t.revoked_at),
                    }
                    for t in s.exec(select(ApiToken)).all()
                ]

        return await asyncio.to_thread(rows)

    @router.delete(
        "/tokens/{token_id}",
        summary="Revoke a token at once",
        response_model=None,
        responses=answer(TokenRevoked, "Revoked (again: the first time stays).")
        | error_responses(404, _404="No such token."),
    )
    async def revoke_token(token_id: Annotated[int, PathParam(ge=1, le=2**63 - 1)], _: Admin) -> dict[str, Any]:
        return {"id": token_id, **await asyncio.to_thread(revoke, ApiToken, token_id, "token")}

    @router.get(
        "/policy",
        summary="The escalation policy in force",
        response_model=None,
        responses=answer(PolicyInForce, "The policy in force."),
    )
    async def get_policy(_: Admin) -> dict[str, Any]:
        policy = await asyncio.to_thread(dispatch.policies.current)
        return {"version": policy.version, "policy": policy.document()}

    @router.put(
        "/policy",
        summary="Replace the escalation policy (validated; no restart needed)",
        response_model=None,
        description="The policy as JSON or YAML (the same document either way), or what GET answered "
        "(`{version, policy}`). Refused with 422, the previous policy staying in force, when it is not "
        "consistent.",
        responses=answer(PolicyInForce, "The new policy, now in force.")
        | error_responses(400, _400="The body is neither JSON nor YAML."),
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": POLICY_BODY}, "application/yaml": {"schema": POLICY_BODY}},
            }
        },
    )
    async def put_policy(request: Request, who: Admin) -> dict[str, Any]:
        raw = await request.body()
        try:
            doc = yaml.safe_load(raw.decode("utf-8"))  # JSON is YAML too
        except (UnicodeDecodeError, yaml.YAMLError, RecursionError) as exc:
            raise HTTPException(400, f"the policy is neither JSON nor YAML: {str(exc)[:300]}") from None
        if isinstance(doc, dict) and isinstance(doc.get("policy"), dict):
            extra = sorted(str(k) for k in doc if k not in ("version", "policy"))
            if extra:
                raise invalid(extra[0], "beside `policy`, only `version` may be sent (as GET answers it)")
            doc = doc["policy"]  # accept what GET returned
        try:
            policy = await asyncio.to_thread(dispatch.policies.put, doc, by=who.name)
        except PolicyError as exc:
            raise invalid("policy", f"policy refused, the previous one stays in force: {exc}") from None
        return {"version": policy.version, "policy": policy.document()}

    @router.get(
        "/corrections",
        summary="Operators' corrections as labelled examples (JSON lines)",
        description="One JSON object a line, oldest first: the text, the facts, what the classifier said, "
        "what the operator said, who and when. `scripts/corrections_to_tests.py` turns it into test cases.",
        response_model=None,
        responses={
            200: {
                "description": "Every correction, one a line.",
                "content": {NDJSON: {"schema": inline_schema(CorrectionLine)}},
            }
        },
    )
    async def corrections(_: Admin) -> Response:
        def read() -> list[Correction]:
            with Session(ctx.engine) as s:
                return list(s.exec(select(Correction)).all())

        lines = correction_lines(await asyncio.to_thread(read))
        return Response(b"".join(orjson.dumps(line) + b"\n" for line in lines), media_type=NDJSON)

    @router.get(
        "/audit/export",
        summary="The hash-chained timelines (JSON lines), for checking without the database",
        description="Every timeline entry at or after `since` (all of them without it), one JSON object a "
        "line, by incident and entry number: its content as hashed, the previous entry's hash and its own. "
        "`siaga audit verify --file export.jsonl` checks it anywhere (add `--partial` for an export with "
        "`since`: its older chains start past entry 1). Streamed a page at a time.",
        response_model=None,
        responses={
            200: {
                "description": "The entries, one a line.",
                "content": {NDJSON: {"schema": inline_schema(AuditLine)}},
            }
        },
    )
    async def audit_export(
        _: Admin,
        since: Annotated[Since | None, Query(description="Only entries recorded at or after this time")] = None,
    ) -> StreamingResponse:
        def page(after: tuple[str, int]) -> list[TimelineEntry]:
            with Session(ctx.engine) as s:
                q = select(TimelineEntry).where(
                    or_(
                        col(TimelineEntry.incident_id) > after[0],
                        and_(col(TimelineEntry.incident_id) == after[0], col(TimelineEntry.seq) > after[1]),
                    )
                )
                if since is not None:
                    q = q.where(col(TimelineEntry.at) >= since)
                q = q.order_by(col(TimelineEntry.incident_id), col(TimelineEntry.seq)).limit(AUDIT_PAGE)
                return list(s.exec(q).all())

        async def lines() -> AsyncIterator[bytes]:
            after = ("", 0)
            while rows := await asyncio.to_thread(page, after):
                yield b"".join(orjson.dumps(export_line(e)) + b"\n" for e in rows)
                after = (rows[-1].incident_id, rows[-1].seq)

        return StreamingResponse(lines(), media_type=NDJSON)

    return router
