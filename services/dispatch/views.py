"""The operator API (SPEC section 5): thin routes over Dispatch and the incident tables."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field
from sqlmodel import Session, col, select

from services.dispatch.engine import NotAllowed, public_incident
from services.dispatch.service import Dispatch
from siaga.auth import Principal, Role, bearer, principal_for
from siaga.clock import as_utc, iso
from siaga.models import Incident, TimelineEntry, Tps
from siaga.runtime import Context


def requires(role: Role) -> Any:
    """A dependency that admits a viewer/operator/admin token of at least `role`."""

    async def check(request: Request) -> Principal:
        ctx: Context = request.app.state.ctx
        token = bearer(request.headers.get("authorization"))
        if token is None:
            raise HTTPException(
                401, "missing token: send Authorization: Bearer <token>", headers={"WWW-Authenticate": "Bearer"}
            )
        who = await asyncio.to_thread(principal_for, ctx.engine, token, ctx.settings.admin_token)
        if who is None:
            raise HTTPException(401, "unknown or revoked token", headers={"WWW-Authenticate": "Bearer"})
        if not who.can(role):
            raise HTTPException(403, f"this needs the {role.value} role; your token is {who.role.value}")
        return who

    return Depends(check)


Viewer = Annotated[Principal, requires(Role.VIEWER)]
Operator = Annotated[Principal, requires(Role.OPERATOR)]


class ResolveBody(BaseModel):
    resolution: str = Field(default="", max_length=4000, description="What was done.")


class NoteBody(BaseModel):
    text: str = Field(min_length=1, max_length=4000)


class EscalateBody(BaseModel):
    note: str = Field(default="", max_length=4000)


def _list(
    ctx: Context,
    *,
    status: str | None,
    severity: str | None,
    kecamatan: str | None,
    since: datetime | None,
    limit: int,
    offset: int,
) -> list[dict[str, Any]]:
    with Session(ctx.engine) as s:
        q = select(Incident)
        if status:
            q = q.where(col(Incident.status).in_(status.split(",")))
        if severity:
            q = q.where(col(Incident.severity).in_(severity.split(",")))
        if kecamatan:
            q = q.where(Incident.kecamatan == kecamatan)
        if since:
            q = q.where(Incident.updated_at >= as_utc(since))  # no offset: taken as UTC
        rows = s.exec(q.order_by(col(Incident.updated_at).desc()).offset(offset).limit(limit)).all()
        names = dict(
            s.exec(select(Tps.tps_id, Tps.name).where(col(Tps.tps_id).in_({r.tps_id for r in rows if r.tps_id}))).all()
        )
    return [public_incident(r) | {"tps_name": names.get(r.tps_id or "")} for r in rows]


def _one(ctx: Context, incident_id: str) -> dict[str, Any] | None:
    with Session(ctx.engine) as s:
        inc = s.get(Incident, incident_id)
        if inc is None:
            return None
        tps = s.get(Tps, inc.tps_id) if inc.tps_id else None
        entries = s.exec(
            select(TimelineEntry).where(TimelineEntry.incident_id == incident_id).order_by(col(TimelineEntry.seq))
        ).all()
    doc = public_incident(inc, tps)
    doc["timeline"] = [
        {"seq": e.seq, "at": iso(e.at), "actor": e.actor, "action": e.action, "detail": e.detail, "hash": e.hash}
        for e in entries
    ]
    return doc


def build_router(dispatch: Dispatch) -> APIRouter:
    ctx = dispatch.ctx
    router = APIRouter(prefix="/v1/incidents", tags=["incidents"])

    @router.get("", summary="List incidents (newest change first)")
    async def list_incidents(
        _: Viewer,
        status: Annotated[str | None, Query(description="open, escalated, acknowledged, resolved (comma list)")] = None,
        severity: Annotated[str | None, Query(description="low, medium, high, critical (comma list)")] = None,
        kecamatan: str | None = None,
        since: Annotated[datetime | None, Query(description="Only incidents changed at or after this time")] = None,
        limit: Annotated[int, Query(ge=1, le=10000)] = 500,
        offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    ) -> dict[str, Any]:
        items = await asyncio.to_thread(
            _list, ctx, status=status, severity=severity, kecamatan=kecamatan, since=since, limit=limit, offset=offset
        )
        return {"items": items, "count": len(items)}

    @router.get("/{incident_id}", summary="One incident with its timeline")
    async def get_incident(incident_id: str, _: Viewer) -> dict[str, Any]:
        doc = await asyncio.to_thread(_one, ctx, incident_id)
        if doc is None:
            raise HTTPException(404, f"no incident {incident_id!r}")
        return doc

    async def act(incident_id: str, action: Any) -> dict[str, Any]:
        try:
            await dispatch.transact(action)
        except KeyError:
            raise HTTPException(404, f"no incident {incident_id!r}") from None
        except NotAllowed as exc:
            raise HTTPException(409, f"cannot do that: {exc}") from None
        doc = await asyncio.to_thread(_one, ctx, incident_id)
        assert doc is not None
        return doc

    @router.post("/{incident_id}/ack", summary="Acknowledge: stops the climb up the ladder")
    async def ack(incident_id: str, who: Operator) -> dict[str, Any]:
        return await act(incident_id, lambda e: e.acknowledge(incident_id, actor=f"operator:{who.name}"))

    @router.post("/{incident_id}/escalate", summary="Send one level up (a reminder at level 3)")
    async def escalate(incident_id: str, who: Operator, body: EscalateBody | None = None) -> dict[str, Any]:
        note = body.note if body else ""
        return await act(incident_id, lambda e: e.escalate(incident_id, actor=f"operator:{who.name}", note=note))

    @router.post("/{incident_id}/resolve", summary="Resolve")
    async def resolve(incident_id: str, who: Operator, body: ResolveBody | None = None) -> dict[str, Any]:
        text = body.resolution if body else ""
        return await act(incident_id, lambda e: e.resolve(incident_id, actor=f"operator:{who.name}", resolution=text))

    @router.post("/{incident_id}/notes", summary="Add a note to the timeline")
    async def note(incident_id: str, who: Operator, body: NoteBody) -> dict[str, Any]:
        return await act(incident_id, lambda e: e.note(incident_id, actor=f"operator:{who.name}", text=body.text))

    return router
