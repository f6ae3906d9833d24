"""The operator API (SPEC section 5): thin routes over Dispatch and the incident tables."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from sqlalchemy import and_, or_
from sqlmodel import Session, col, select

from services.dispatch import domain
from services.dispatch.engine import NotAllowed, public_incident
from services.dispatch.policy import EscalationPolicy
from services.dispatch.rules.orders import busy_people, rank_candidates
from services.dispatch.service import Dispatch, NoOwner
from siaga.auth import Principal, Role, Scope, bearer, principal_for
from siaga.bus import BusUnavailable
from siaga.clock import as_utc, iso
from siaga.contracts import IncidentPublic, OrderTarget, Priority, TargetKind
from siaga.events import SYSTEM_CATEGORIES, Category, Id, Severity, Text
from siaga.keys import kecamatan_key
from siaga.models import Incident, Personnel, PolicyVersion, TimelineEntry, Tps
from siaga.openapi import API_TOKEN, SECURITY_SCHEMES, answer, error_responses, invalid
from siaga.runtime import Context

log = logging.getLogger("siaga.dispatch.api")
COMMAND_RETRY_AFTER_S = "2"  # an owner is back within seconds of a restart or a rebalance

# Declares the token scheme of every route that `requires` a role; the check reads the header itself.
API_BEARER = HTTPBearer(
    scheme_name=API_TOKEN, description=str(SECURITY_SCHEMES[API_TOKEN]["description"]), auto_error=False
)


def requires(role: Role) -> Any:
    """A dependency that admits a viewer/operator/admin token of at least `role`."""

    async def check(
        request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Security(API_BEARER)]
    ) -> Principal:
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


RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def _rfc3339(value: object) -> object:
    """Admit only what `format: date-time` means (RFC 3339, with an offset): pydantic alone would
    also take `0.5` as a Unix time and `2024-11-27` as midnight."""
    if isinstance(value, str) and not RFC3339.fullmatch(value):
        raise ValueError("must be an RFC 3339 date-time with an offset, as 2024-11-27T08:00:00+07:00")
    return value


Since = Annotated[datetime, BeforeValidator(_rfc3339), AfterValidator(as_utc)]


class ResolveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resolution: Text = Field(default="", description="What was done.")


class NoteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: Text = Field(min_length=1)


class EscalateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: Text = ""


OPERATOR_CATEGORIES = [c.value for c in Category if c not in SYSTEM_CATEGORIES]  # Siaga's own are not chosen
# Optional, but never null: an absent field means "keep it", and a null one would be ambiguous.
OptionalCategory = Annotated[
    Category | None,
    WithJsonSchema({"type": "string", "enum": OPERATOR_CATEGORIES, "description": "The corrected category."}),
]
OptionalSeverity = Annotated[
    Severity | None,
    WithJsonSchema({"type": "string", "enum": [s.value for s in Severity], "description": "The corrected severity."}),
]


def _not_blank(v: str) -> str:
    v = v.strip()
    if not v:
        raise ValueError("must not be empty: say what it is or why")
    return v


NON_BLANK_SCHEMA = {"type": "string", "minLength": 1, "maxLength": 4000, "pattern": "\\S"}
NonBlank = Annotated[Text, AfterValidator(_not_blank), WithJsonSchema(NON_BLANK_SCHEMA)]


def _not_null_or_internal(v: object) -> object:
    if v is None:
        raise ValueError("leave the field out rather than sending null")
    if isinstance(v, str) and v in {c.value for c in SYSTEM_CATEGORIES}:
        raise ValueError(f"{v} is raised by Siaga itself, not chosen by an operator")
    return v


class ClassifyBody(BaseModel):
    """An operator's correction: category, severity or both, and why (SPEC section 5)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"anyOf": [{"required": ["category"]}, {"required": ["severity"]}]},
    )

    category: OptionalCategory = None
    severity: OptionalSeverity = None
    reason: NonBlank = Field(description="Why: it goes on the timeline and into the labelled example.")

    _checked = field_validator("category", "severity", mode="before")(_not_null_or_internal)

    def problem(self) -> str | None:
        return None if self.category or self.severity else "give category or severity (or both)"


class ReportBody(BaseModel):
    """A report that reached the command post by radio or phone, on behalf of a TPS."""

    model_config = ConfigDict(extra="forbid")

    tps_id: Id = Field(description="The TPS it is about.")
    description: NonBlank
    category: OptionalCategory = None
    injuries: Annotated[int | None, WithJsonSchema({"type": "integer", "minimum": 0, "maximum": 100_000})] = Field(
        default=None, ge=0, le=100_000
    )
    weapons: Annotated[bool | None, WithJsonSchema({"type": "boolean"})] = None
    crowd_size: Annotated[int | None, WithJsonSchema({"type": "integer", "minimum": 0, "maximum": 10_000_000})] = Field(
        default=None, ge=0, le=10_000_000
    )
    occurred_at: Annotated[
        Since | None,
        WithJsonSchema({"type": "string", "format": "date-time", "description": "When it happened; default now."}),
    ] = None

    _checked = field_validator("category", "injuries", "weapons", "crowd_size", "occurred_at", mode="before")(
        _not_null_or_internal
    )


class AssignBody(BaseModel):
    """Whom to send: a named person, or the nearest available one."""

    model_config = ConfigDict(extra="forbid")

    personnel_id: Id | None = Field(default=None, description="The person to send (from the roster).")
    nearest: bool = Field(default=False, description="Send the nearest available person instead.")
    note: Text = Field(default="", description="What to do there, for the responder.")
    eta_minutes: int | None = Field(default=None, ge=0, le=24 * 60, description="Told to the TPS with the notice.")

    @model_validator(mode="after")
    def _one_way(self) -> AssignBody:
        if (self.personnel_id is not None) == self.nearest:
            raise ValueError('name "personnel_id" or send "nearest": true (one of them)')
        return self


class CandidatePublic(BaseModel):
    """A person who could be sent to the incident."""

    personnel_id: str
    name: str
    unit: str
    role: str
    tps_ids: list[str]
    status: str | None
    battery: int | None
    last_checkin_at: datetime | None
    checkin_age_minutes: float | None
    distance_km: float | None = Field(description="From their last check-in location, else from their TPS.")
    located_by: str | None = Field(description="`checkin` or `tps`: where the distance is counted from.")
    available: bool = Field(description="False: already sent to another open incident (`assignment`).")
    assignment: dict[str, str] | None
    hours_on_duty_24h: float = Field(ge=0, le=24, description="Hours on duty in the last 24 h, from check-ins.")
    fatigued: bool = Field(description="Over the policy's max_duty_hours: sent only when no one rested is free.")


class CandidateList(BaseModel):
    incident_id: str
    items: list[CandidatePublic] = Field(description="Available people nearest first, then those sent elsewhere.")
    count: int


class Recipients(BaseModel):
    """Whose devices get a message: any of the lists, or everyone."""

    model_config = ConfigDict(extra="forbid")

    tps_ids: list[Id] | None = Field(default=None, max_length=2000)
    kecamatan: list[Id] | None = Field(default=None, max_length=500)
    personnel_ids: list[Id] | None = Field(default=None, max_length=2000)
    all: bool = False

    @model_validator(mode="after")
    def _someone(self) -> Recipients:
        lists = [x for x in (self.tps_ids, self.kecamatan, self.personnel_ids) if x]
        if self.all and lists:
            raise ValueError('"all": true goes alone')
        if not self.all and not lists:
            raise ValueError('name at least one recipient: "tps_ids", "kecamatan", "personnel_ids" or "all": true')
        return self


class MessageBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: Recipients
    text: Text = Field(min_length=1)
    priority: Priority = Priority.NORMAL


class MessageItem(BaseModel):
    item_id: str
    target: str = Field(description="`tps:<id>`, `kecamatan:<key>`, `person:<id>` or `all`.")


class MessageSent(BaseModel):
    items: list[MessageItem] = Field(description="One inbox item per target.")
    count: int


class TimelineItem(BaseModel):
    """One change of an incident: who or what did it, when, and why (hash-chained per incident)."""

    seq: int
    at: datetime
    actor: str
    action: str
    detail: dict[str, Any]
    hash: str


class IncidentDetail(IncidentPublic):
    """An incident with its whole timeline."""

    timeline: list[TimelineItem]


class IncidentPage(BaseModel):
    items: list[IncidentPublic]
    count: int = Field(description="How many items this page holds.")


def in_scope(model: type[Incident] | type[Tps], scope: Scope) -> Any:
    """The SQL condition of rows (incidents or TPS) inside a token's scope."""
    pairs = [and_(col(model.kabupaten) == kab, col(model.kecamatan) == kec) for kab, kec in sorted(scope.kecamatan)]
    return or_(
        col(model.provinsi).in_(sorted(scope.provinsi)), col(model.kabupaten).in_(sorted(scope.kabupaten)), *pairs
    )


def visible(ctx: Context, who: Principal, incident_id: str) -> None:
    """404, as for an unknown incident, when the incident is outside the caller's scope (SPEC section 10)."""
    if who.scope is None:
        return
    with Session(ctx.engine) as s:
        row = s.exec(
            select(Incident.provinsi, Incident.kabupaten, Incident.kecamatan).where(Incident.id == incident_id)
        ).first()
    if row is None or not who.sees(*row):
        raise HTTPException(404, f"no incident {incident_id!r}")


def _list(
    ctx: Context,
    *,
    scope: Scope | None,
    status: str | None,
    severity: str | None,
    kecamatan: str | None,
    since: datetime | None,
    limit: int,
    offset: int,
) -> list[dict[str, Any]]:
    with Session(ctx.engine) as s:
        q = select(Incident)
        if scope is not None:
            q = q.where(in_scope(Incident, scope))
        if status:
            q = q.where(col(Incident.status).in_(status.split(",")))
        if severity:
            q = q.where(col(Incident.severity).in_(severity.split(",")))
        if kecamatan:
            q = q.where(Incident.kecamatan == kecamatan)
        if since:
            q = q.where(Incident.updated_at >= since)
        rows = s.exec(q.order_by(col(Incident.updated_at).desc()).offset(offset).limit(limit)).all()
        names = dict(
            s.exec(select(Tps.tps_id, Tps.name).where(col(Tps.tps_id).in_({r.tps_id for r in rows if r.tps_id}))).all()
        )
    return [public_incident(domain.Incident.from_row(r)) | {"tps_name": names.get(r.tps_id or "")} for r in rows]


def _tps_visible(ctx: Context, who: Principal, tps_id: str) -> bool:
    with Session(ctx.engine) as s:
        row = s.exec(select(Tps.provinsi, Tps.kabupaten, Tps.kecamatan).where(Tps.tps_id == tps_id)).first()
    return row is not None and who.sees(*row)


def not_applied(what: str) -> HTTPException:
    """503 with Retry-After: no partition owner applied the command in time (restarting, rebalancing)."""
    return HTTPException(
        503,
        f"dispatch did not apply the {what} in time (restarting or rebalancing); try again",
        headers={"Retry-After": COMMAND_RETRY_AFTER_S},
    )


def _one(ctx: Context, incident_id: str) -> dict[str, Any] | None:
    with Session(ctx.engine) as s:
        inc = s.get(Incident, incident_id)
        if inc is None:
            return None
        tps = s.get(Tps, inc.tps_id) if inc.tps_id else None
        entries = s.exec(
            select(TimelineEntry).where(TimelineEntry.incident_id == incident_id).order_by(col(TimelineEntry.seq))
        ).all()
    doc = public_incident(domain.Incident.from_row(inc), domain.Tps.from_row(tps) if tps else None)
    doc["timeline"] = [
        {"seq": e.seq, "at": iso(e.at), "actor": e.actor, "action": e.action, "detail": e.detail, "hash": e.hash}
        for e in entries
    ]
    return doc


def _candidates(ctx: Context, incident_id: str) -> dict[str, Any] | None:
    """The people who could be sent, from the database (the owner writes it back every batch)."""
    with Session(ctx.engine) as s:
        row = s.get(Incident, incident_id)
        if row is None:
            return None
        inc = domain.Incident.from_row(row)
        tps_of = {
            t.tps_id: domain.Tps.from_row(t)
            for t in s.exec(select(Tps).where(Tps.kecamatan == inc.kecamatan, Tps.kabupaten == inc.kabupaten)).all()
        }
        people = [
            domain.Personnel.from_row(p)
            for p in s.exec(select(Personnel)).all()
            if set(p.tps_ids or ()).intersection(tps_of)
        ]
        opened = s.exec(
            select(Incident).where(
                Incident.kecamatan == inc.kecamatan, col(Incident.status).in_(("open", "escalated", "acknowledged"))
            )
        ).all()
        busy = busy_people(domain.Incident.from_row(i) for i in opened)
        newest = s.exec(select(PolicyVersion).order_by(col(PolicyVersion.version).desc())).first()
    most = float((newest.body if newest else {}).get("max_duty_hours", EscalationPolicy().max_duty_hours))
    now = ctx.clock.now()
    ranked = rank_candidates(inc, people=people, tps_of=tps_of, busy=busy, now=now, max_duty_hours=most)
    return {"incident_id": incident_id, "items": [c.public(now) for c in ranked], "count": len(ranked)}


def _targets(ctx: Context, to: Recipients, scope: Scope | None = None) -> list[OrderTarget]:
    """The recipients as inbox targets; raises HTTPException 422 naming ids the registry does not know.

    For a scoped token, what lies outside its scope is as unknown (SPEC section 10): a TPS or a
    kecamatan outside it, a person none of whose TPS is inside it, and "all".
    """
    if to.all:
        if scope is not None:
            raise invalid(
                "to.all", "a token limited to some regions sends only inside them: name TPS, kecamatan or people"
            )
        return [OrderTarget(kind=TargetKind.ALL)]
    tps_ids = sorted(set(to.tps_ids or ()))
    kecamatan = sorted(set(to.kecamatan or ()))
    people = sorted(set(to.personnel_ids or ()))
    with Session(ctx.engine) as s:

        def tps_where(*conditions: Any) -> Any:
            q = select(Tps.tps_id).where(*conditions)
            return q.where(in_scope(Tps, scope)) if scope is not None else q

        known_tps = set(s.exec(tps_where(col(Tps.tps_id).in_(tps_ids))).all()) if tps_ids else set()
        known_kec = set()
        if kecamatan:
            q = select(Tps.kecamatan).where(col(Tps.kecamatan).in_(kecamatan))
            q = q.where(in_scope(Tps, scope)) if scope is not None else q
            known_kec = set(s.exec(q.distinct()).all())
        known_people = set()
        if people:
            rows = s.exec(
                select(Personnel.personnel_id, Personnel.tps_ids).where(col(Personnel.personnel_id).in_(people))
            )
            covers = {pid: set(ids or ()) for pid, ids in rows.all()}
            if scope is not None:
                inside = set(s.exec(tps_where(col(Tps.tps_id).in_(set().union(*covers.values())))).all())
                covers = {pid: ids for pid, ids in covers.items() if ids & inside}
            known_people = set(covers)
    problems = [
        {"field": f"to.{name}", "message": f"not in the registry: {', '.join(sorted(set(ids) - known)[:10])}"}
        for name, ids, known in (
            ("tps_ids", tps_ids, known_tps),
            ("kecamatan", kecamatan, known_kec),
            ("personnel_ids", people, known_people),
        )
        if set(ids) - known
    ]
    if problems:
        raise HTTPException(422, problems)
    return (
        [OrderTarget(kind=TargetKind.TPS, id=t) for t in tps_ids]
        + [OrderTarget(kind=TargetKind.KECAMATAN, id=kecamatan_key(k)) for k in kecamatan]
        + [OrderTarget(kind=TargetKind.PERSON, id=p) for p in people]
    )


def build_messages_router(dispatch: Dispatch) -> APIRouter:
    """POST /v1/messages: an operator's broadcast to field devices (SPEC section 9)."""
    ctx = dispatch.ctx
    router = APIRouter(tags=["field orders"], responses=error_responses(401, 403, 422))

    @router.post(
        "/v1/messages",
        status_code=201,
        summary="Send a message to field devices' inboxes",
        response_model=None,
        responses=answer(MessageSent, "In the inboxes: one item per target.", 201)
        | error_responses(503, _503="The database cannot take the message now; retry after `Retry-After`."),
    )
    async def send_message(who: Operator, body: MessageBody) -> dict[str, Any]:
        targets = await asyncio.to_thread(_targets, ctx, body.to, who.scope)
        try:
            items = await dispatch.broadcast(
                targets, text=body.text, priority=body.priority, actor=f"operator:{who.name}"
            )
        except BusUnavailable:
            items = []  # in the inbox already; the outbox publishes when the bus is back
        return {"items": [{"item_id": m.order_id, "target": m.target.key} for m in items], "count": len(items)}

    return router


def build_router(dispatch: Dispatch) -> APIRouter:
    ctx = dispatch.ctx
    router = APIRouter(prefix="/v1/incidents", tags=["incidents"], responses=error_responses(401, 403, 422))
    no_incident = error_responses(404, _404="No incident with that id.")
    acts = no_incident | error_responses(
        409,
        503,
        _409="The incident's status does not allow this.",
        _503="Dispatch could not apply the action in time (restarting or rebalancing); retry after `Retry-After`.",
    )
    with_body = acts | error_responses(400)
    detail = answer(IncidentDetail, "The incident with its timeline.")

    @router.get(
        "",
        summary="List incidents (newest change first)",
        response_model=None,
        responses=answer(IncidentPage, "A page of incidents."),
    )
    async def list_incidents(
        who: Viewer,
        status: Annotated[str | None, Query(description="open, escalated, acknowledged, resolved (comma list)")] = None,
        severity: Annotated[str | None, Query(description="low, medium, high, critical (comma list)")] = None,
        kecamatan: str | None = None,
        since: Annotated[Since | None, Query(description="Only incidents changed at or after this time")] = None,
        limit: Annotated[int, Query(ge=1, le=10000)] = 500,
        offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    ) -> dict[str, Any]:
        items = await asyncio.to_thread(
            _list,
            ctx,
            scope=who.scope,
            status=status,
            severity=severity,
            kecamatan=kecamatan,
            since=since,
            limit=limit,
            offset=offset,
        )
        return {"items": items, "count": len(items)}

    @router.get(
        "/{incident_id}", summary="One incident with its timeline", response_model=None, responses=detail | no_incident
    )
    async def get_incident(incident_id: str, who: Viewer) -> dict[str, Any]:
        await asyncio.to_thread(visible, ctx, who, incident_id)
        doc = await asyncio.to_thread(_one, ctx, incident_id)
        if doc is None:
            raise HTTPException(404, f"no incident {incident_id!r}")
        return doc

    @router.post(
        "",
        status_code=201,
        summary="Record a report taken by radio or phone at the command post",
        description="Classified, grouped and escalated like a field report, with the operator as the "
        "actor; answered with the incident it opened or joined (`source` tells how its first report came).",
        response_model=None,
        responses=answer(IncidentDetail, "The incident the report opened or was merged into.", 201)
        | error_responses(
            400,
            503,
            _503="Dispatch could not apply the report in time (restarting or rebalancing); retry after `Retry-After`.",
        ),
    )
    async def create_incident(body: ReportBody, who: Operator) -> dict[str, Any]:
        now = ctx.clock.now()
        occurred = body.occurred_at or now
        if (occurred - now).total_seconds() > ctx.settings.future_skew_s:
            raise invalid("occurred_at", f"more than {ctx.settings.future_skew_s} s ahead of the server clock")
        if (now - occurred).total_seconds() > ctx.settings.max_age_s:
            raise invalid("occurred_at", f"more than {ctx.settings.max_age_s // 3600} hours old")
        fields = body.model_dump(exclude={"tps_id"}, exclude_none=True) | {"occurred_at": occurred}
        if who.scope is not None and not await asyncio.to_thread(_tps_visible, ctx, who, body.tps_id):
            raise invalid("tps_id", f"unknown TPS {body.tps_id!r}: not in the registry")
        try:
            incident_id = await dispatch.report(actor=f"operator:{who.name}", tps_id=body.tps_id, **fields)
        except KeyError:
            raise invalid("tps_id", f"unknown TPS {body.tps_id!r}: not in the registry") from None
        except (NoOwner, BusUnavailable) as exc:
            log.warning("command-post report for %s not applied: %s", body.tps_id, exc)
            raise not_applied("report") from None
        doc = await asyncio.to_thread(_one, ctx, incident_id)
        assert doc is not None
        return doc

    async def act(incident_id: str, who: Principal, action: Callable[[], Awaitable[object]]) -> dict[str, Any]:
        """Send the action to the incident's partition owner as a command; answer with the incident."""
        await asyncio.to_thread(visible, ctx, who, incident_id)
        try:
            await action()
        except KeyError as exc:
            # The owner's refusal says what it did not find (an incident, a person); a bare id is the incident.
            found = exc.args[0] if exc.args else incident_id
            message = f"no incident {incident_id!r}" if found == incident_id else str(found)
            raise HTTPException(404, message) from None
        except NotAllowed as exc:
            raise HTTPException(409, f"cannot do that: {exc}") from None
        except (NoOwner, BusUnavailable) as exc:
            log.warning("operator action on %s not applied: %s", incident_id, exc)
            raise not_applied("action") from None
        doc = await asyncio.to_thread(_one, ctx, incident_id)
        assert doc is not None
        return doc

    @router.post(
        "/{incident_id}/ack",
        summary="Acknowledge: stops the climb up the ladder",
        response_model=None,
        responses=detail | acts,
    )
    async def ack(incident_id: str, who: Operator) -> dict[str, Any]:
        return await act(incident_id, who, lambda: dispatch.acknowledge(incident_id, actor=f"operator:{who.name}"))

    @router.post(
        "/{incident_id}/escalate",
        summary="Send one level up (a reminder at level 3)",
        response_model=None,
        responses=detail | with_body,
    )
    async def escalate(incident_id: str, who: Operator, body: EscalateBody | None = None) -> dict[str, Any]:
        note = body.note if body else ""
        return await act(
            incident_id, who, lambda: dispatch.escalate(incident_id, actor=f"operator:{who.name}", note=note)
        )

    @router.post("/{incident_id}/resolve", summary="Resolve", response_model=None, responses=detail | with_body)
    async def resolve(incident_id: str, who: Operator, body: ResolveBody | None = None) -> dict[str, Any]:
        text = body.resolution if body else ""
        return await act(
            incident_id, who, lambda: dispatch.resolve(incident_id, actor=f"operator:{who.name}", resolution=text)
        )

    @router.post(
        "/{incident_id}/notes", summary="Add a note to the timeline", response_model=None, responses=detail | with_body
    )
    async def note(incident_id: str, who: Operator, body: NoteBody) -> dict[str, Any]:
        return await act(
            incident_id, who, lambda: dispatch.note(incident_id, actor=f"operator:{who.name}", text=body.text)
        )

    @router.post(
        "/{incident_id}/classify",
        summary="Correct category and/or severity (the policy re-runs on them)",
        description="The old and new values, who and why go on the timeline. A higher severity acts at "
        "once; a lower one never lowers the level but sets a pending on-site window again; stakeholders "
        "of a new category are told. A severity below what the facts demand is accepted and recorded as "
        "an override. Every correction is kept as a labelled example (`GET /v1/admin/corrections`).",
        response_model=None,
        responses=detail | with_body,
    )
    async def classify(incident_id: str, who: Operator, body: ClassifyBody) -> dict[str, Any]:
        problem = body.problem()
        if problem:
            raise invalid("category", problem)
        return await act(
            incident_id,
            who,
            lambda: dispatch.classify(
                incident_id,
                actor=f"operator:{who.name}",
                category=body.category,
                severity=body.severity,
                reason=body.reason,
            ),
        )

    @router.get(
        "/{incident_id}/candidates",
        summary="Who could be sent: checked-in, on-duty people of the kecamatan, nearest first",
        response_model=None,
        responses=answer(CandidateList, "The candidates.") | no_incident,
    )
    async def candidates(incident_id: str, who: Viewer) -> dict[str, Any]:
        await asyncio.to_thread(visible, ctx, who, incident_id)
        doc = await asyncio.to_thread(_candidates, ctx, incident_id)
        if doc is None:
            raise HTTPException(404, f"no incident {incident_id!r}")
        return doc

    @router.post(
        "/{incident_id}/assign",
        summary="Send a responder (a person, or the nearest available one)",
        response_model=None,
        responses=detail
        | with_body
        | error_responses(
            404,
            409,
            _404="No incident with that id, or no person with that personnel_id.",
            _409="Nobody available, the person is not on duty or already sent elsewhere, or the incident is resolved.",
        ),
    )
    async def assign(incident_id: str, who: Operator, body: AssignBody) -> dict[str, Any]:
        return await act(
            incident_id,
            who,
            lambda: dispatch.assign(
                incident_id,
                actor=f"operator:{who.name}",
                personnel_id=body.personnel_id,
                note=body.note,
                eta_minutes=body.eta_minutes,
            ),
        )

    return router
