"""Silences (SPEC section 5): `POST/GET /v1/admin/silences`, `DELETE /v1/admin/silences/{id}`.

A silence is a row of `silence`; the partition owners read the silences again every second
(services/dispatch/service.py) and the engine holds the alerts of the incidents one matches
(services/dispatch/rules/ladder.py). An admin or an operator may create and end them.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlmodel import Session, col, select

from services.dispatch.notifier.telegram import Silencer
from services.dispatch.service import Dispatch
from services.dispatch.views import Operator, Since
from siaga.auth import Principal, Scope
from siaga.clock import as_utc, iso
from siaga.events import Category, Text
from siaga.models import Silence, Tps
from siaga.openapi import answer, error_responses, invalid

MAX_LIST = 500


class SilenceMatch(BaseModel):
    """What the silence holds: every field given must equal the incident's (at least one)."""

    model_config = ConfigDict(extra="forbid")

    provinsi: str | None = Field(default=None, min_length=1, max_length=100)
    kabupaten: str | None = Field(default=None, min_length=1, max_length=100)
    kecamatan: str | None = Field(default=None, min_length=1, max_length=100)
    tps_id: str | None = Field(default=None, min_length=1, max_length=64)
    category: Category | None = None


class SilenceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    match: SilenceMatch
    starts_at: Since | None = Field(default=None, description="When it starts holding (default: now).")
    ends_at: Since = Field(description="When it stops; the held alerts of incidents still open go out then.")
    reason: Text = Field(min_length=1, description="Why, for the timeline: a planned power cut, say.")


class SilencePublic(BaseModel):
    id: str
    match: SilenceMatch
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_by: str
    created_at: datetime
    ended_by: str | None = Field(description="Who ended it early, if anyone.")
    state: str = Field(description="`planned`, `active` or `ended`.")


def silence_public(row: Silence, now: datetime) -> dict[str, Any]:
    starts, ends = as_utc(row.starts_at), as_utc(row.ends_at)
    return {
        "id": row.id,
        "match": {
            "provinsi": row.provinsi,
            "kabupaten": row.kabupaten,
            "kecamatan": row.kecamatan,
            "tps_id": row.tps_id,
            "category": row.category,
        },
        "starts_at": iso(starts),
        "ends_at": iso(ends),
        "reason": row.reason,
        "created_by": row.created_by,
        "created_at": iso(as_utc(row.created_at)),
        "ended_by": row.ended_by,
        "state": "planned" if now < starts else "active" if now < ends else "ended",
    }


def _actor(who: Principal) -> str:
    return f"{who.role.value}:{who.name}"


def _checked(dispatch: Dispatch, body: SilenceCreate, now: datetime, scope: Scope | None) -> Silence:
    """The silence to store, or a 422 naming what is wrong with it. A scoped operator's silence must hold
    nothing outside its scope: every TPS it matches is inside, and it names a region or a TPS."""
    m = body.match
    if not (m.provinsi or m.kabupaten or m.kecamatan or m.tps_id or m.category):
        raise invalid(
            "match",
            "name one of provinsi, kabupaten, kecamatan, tps_id, category (a silence of everything is refused)",
        )
    starts = body.starts_at or now
    if body.ends_at <= starts:
        raise invalid("ends_at", f"must be after starts_at ({iso(starts)})")
    if body.ends_at <= now:
        raise invalid("ends_at", "is already past: a silence must end in the future")
    longest = timedelta(hours=dispatch.policies.current().silence_max_hours)
    if body.ends_at - starts > longest:
        raise invalid(
            "ends_at",
            f"a silence lasts at most {longest.total_seconds() / 3600:g} hours (policy silence_max_hours)",
        )
    with Session(dispatch.ctx.engine) as s:
        if m.tps_id is not None:
            tps = s.get(Tps, m.tps_id)
            if tps is None or (scope is not None and not scope.admits(tps.provinsi, tps.kabupaten, tps.kecamatan)):
                raise invalid("match.tps_id", f"not in the registry: {m.tps_id}")
            for name in ("provinsi", "kabupaten", "kecamatan"):
                if getattr(m, name) is not None and getattr(tps, name) != getattr(m, name):
                    raise invalid(
                        "match.tps_id", f"{m.tps_id} is in {name} {getattr(tps, name)}, not {getattr(m, name)}"
                    )
        held = _held(s, m.provinsi, m.kabupaten, m.kecamatan)
        for name in ("provinsi", "kabupaten", "kecamatan"):
            value = getattr(m, name)
            if value is not None and not held:
                raise invalid(f"match.{name}", f"not in the registry: {value}" + _together(m, name))
        if scope is not None:
            if not (m.provinsi or m.kabupaten or m.kecamatan or m.tps_id):
                raise invalid("match", "a token limited to regions names one of them (or a TPS) in its silences")
            outside = sorted({f"{kab}/{kec}" for prov, kab, kec in held if not scope.admits(prov, kab, kec)})
            if outside:
                raise invalid("match", f"it would also hold kecamatan outside your regions: {', '.join(outside[:10])}")
    return Silence(
        id=f"SIL-{uuid.uuid4().hex[:10].upper()}",
        provinsi=m.provinsi,
        kabupaten=m.kabupaten,
        kecamatan=m.kecamatan,
        tps_id=m.tps_id,
        category=m.category.value if m.category else None,
        starts_at=starts,
        ends_at=body.ends_at,
        reason=body.reason,
        created_by="",
        created_at=now,
    )


def _held(s: Session, provinsi: str | None, kabupaten: str | None, kecamatan: str | None) -> list[tuple[str, str, str]]:
    """The (provinsi, kabupaten, kecamatan) of the registry a silence's region holds (none named: [])."""
    if not (provinsi or kabupaten or kecamatan):
        return []
    q = select(Tps.provinsi, Tps.kabupaten, Tps.kecamatan)
    for column, value in ((Tps.provinsi, provinsi), (Tps.kabupaten, kabupaten), (Tps.kecamatan, kecamatan)):
        if value is not None:
            q = q.where(column == value)
    return [tuple(row) for row in s.exec(q.distinct()).all()]  # type: ignore[misc]


def _inside(s: Session, row: Silence, scope: Scope) -> bool:
    """Whether a scoped token may see and end this silence: its TPS, or every kecamatan its region holds
    (as for creating one), is in the scope. An admin's silence of `Cikande` is then the Cikande
    operator's to see and end, as long as no other kabupaten has a Cikande."""
    if row.tps_id is not None:
        tps = s.get(Tps, row.tps_id)
        return tps is not None and scope.admits(tps.provinsi, tps.kabupaten, tps.kecamatan)
    if scope.admits(row.provinsi or "", row.kabupaten or "", row.kecamatan or ""):
        return True
    held = _held(s, row.provinsi, row.kabupaten, row.kecamatan)
    return bool(held) and all(scope.admits(*where) for where in held)


def _together(m: SilenceMatch, name: str) -> str:
    others = [f"{n} {getattr(m, n)}" for n in ("provinsi", "kabupaten", "kecamatan") if n != name and getattr(m, n)]
    return f" (with {', '.join(others)})" if others else ""


async def create_silence(
    dispatch: Dispatch, body: SilenceCreate, *, actor: str, scope: Scope | None = None
) -> dict[str, Any]:
    """Store a new silence (or refuse it with a 422 naming the problem); the owners hold by it at once."""
    now = dispatch.ctx.clock.now()

    def write() -> dict[str, Any]:
        row = _checked(dispatch, body, now, scope)
        row.created_by = actor
        with Session(dispatch.ctx.engine, expire_on_commit=False) as s:
            s.add(row)
            s.commit()
        return silence_public(row, now)

    doc = await asyncio.to_thread(write)
    dispatch.silences_changed()
    return doc


def chat_silencer(dispatch: Dispatch) -> Silencer:
    """The Telegram `/silence <kecamatan> <minutes> <reason>` command's action: a silence from now."""

    async def silence(*, kecamatan: str, minutes: int, reason: str, actor: str) -> dict[str, Any]:
        now = dispatch.ctx.clock.now()
        try:
            body = SilenceCreate(
                match=SilenceMatch(kecamatan=kecamatan), ends_at=now + timedelta(minutes=minutes), reason=reason
            )
        except ValidationError as exc:
            raise invalid(".".join(map(str, exc.errors()[0]["loc"])), exc.errors()[0]["msg"]) from None
        return await create_silence(dispatch, body, actor=actor)

    return silence


def build_router(dispatch: Dispatch) -> APIRouter:
    ctx = dispatch.ctx
    router = APIRouter(prefix="/v1/admin/silences", tags=["silences"], responses=error_responses(401, 403, 422))

    @router.post(
        "",
        status_code=201,
        summary="Create a silence: hold the alerts of what it matches until it ends (never critical ones)",
        response_model=None,
        responses=answer(SilencePublic, "The silence, as stored.", 201) | error_responses(400),
    )
    async def post_silence(who: Operator, body: SilenceCreate) -> dict[str, Any]:
        return await create_silence(dispatch, body, actor=_actor(who), scope=who.scope)

    @router.get(
        "",
        summary="The silences, newest first",
        response_model=None,
        responses=answer(list[SilencePublic], "The silences."),
    )
    async def list_silences(
        who: Operator,
        state: Annotated[
            str | None, Query(pattern="^(planned|active|ended)$", description="Only those in this state now.")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 100,
    ) -> list[dict[str, Any]]:
        now = ctx.clock.now()

        def rows() -> list[dict[str, Any]]:
            with Session(ctx.engine) as s:
                q = select(Silence)
                if state == "planned":
                    q = q.where(col(Silence.starts_at) > now)
                elif state == "active":
                    q = q.where(col(Silence.starts_at) <= now, col(Silence.ends_at) > now)
                elif state == "ended":
                    q = q.where(col(Silence.ends_at) <= now)
                q = q.order_by(col(Silence.created_at).desc(), col(Silence.id))
                if who.scope is None:
                    found = list(s.exec(q.limit(limit)).all())
                else:  # silences are few: filtered here, then cut to the limit
                    found = [r for r in s.exec(q).all() if _inside(s, r, who.scope)][:limit]
            return [silence_public(r, now) for r in found]

        return await asyncio.to_thread(rows)

    @router.delete(
        "/{silence_id}",
        summary="End a silence now; the held alerts of incidents still open go out within a second",
        response_model=None,
        responses=answer(SilencePublic, "The silence, ended.")
        | error_responses(404, 409, _404="No silence with that id.", _409="The silence has ended already."),
    )
    async def end_silence(who: Operator, silence_id: Annotated[str, PathParam(max_length=40)]) -> dict[str, Any]:
        now = ctx.clock.now()

        def end() -> dict[str, Any]:
            with Session(ctx.engine, expire_on_commit=False) as s:
                row = s.get(Silence, silence_id)
                if row is None or (who.scope is not None and not _inside(s, row, who.scope)):
                    raise HTTPException(404, f"silence {silence_id} not found")
                if as_utc(row.ends_at) <= now:
                    raise HTTPException(409, f"silence {silence_id} ended at {iso(as_utc(row.ends_at))}")
                row.ends_at = max(now, as_utc(row.starts_at))
                row.ended_by = _actor(who)
                s.add(row)
                s.commit()
                return silence_public(row, now)

        doc = await asyncio.to_thread(end)
        dispatch.silences_changed()
        return doc

    return router
