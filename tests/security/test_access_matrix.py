"""Who may call what: every route of the composed dev app against every kind of principal.

The expectations table names, for every (method, path) of `siaga dev`, the least principal it
admits. `test_every_route_has_an_entry` enumerates `app.routes`, so a route added without an entry
here fails until someone decides who may call it. Token kinds are separate realms: a device token
is no credential for the viewer/operator/admin API, and an API token none for ingest, so either
presented to the other realm is answered 401 (as an unknown token); 403 is for a token of the right
realm whose role is too low. Refused requests must change nothing (`Rig.fingerprint`).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
import pytest_asyncio
from fastapi.routing import iter_route_contexts
from sqlmodel import Session
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from siaga.auth import hash_token
from siaga.logs import setup_logging
from siaga.models import Incident, Personnel
from tests.fakes.providers import FakeTelegram
from tests.security import (
    PRINCIPALS,
    TELEGRAM_CHAT,
    TELEGRAM_SECRET,
    WHATSAPP_VERIFY_TOKEN,
    Rig,
    field_event,
    running_rig,
    served_rig,
    tps_csv,
)

WS_TIMEOUT_S = 10.0
CLOSE_UNAUTHORIZED = 4401


class Access(Enum):
    """The least principal a route admits."""

    PUBLIC = "anyone, with or without a token"
    DEVICE = "a device token"
    VIEWER = "viewer, operator or admin"
    OPERATOR = "operator or admin"
    ADMIN = "admin"
    TELEGRAM = "the Telegram webhook secret header, no bearer token"
    WHATSAPP = "the Meta app's signature of the body (X-Hub-Signature-256), no bearer token"


ADMITS: dict[Access, set[str]] = {
    Access.PUBLIC: set(PRINCIPALS),
    Access.DEVICE: {"device"},
    Access.VIEWER: {"viewer", "operator", "admin", "admin_env"},
    Access.OPERATOR: {"operator", "admin", "admin_env"},
    Access.ADMIN: {"admin", "admin_env"},
    Access.TELEGRAM: set(),
    Access.WHATSAPP: set(),  # the calls below are unsigned: a bearer token never stands in for the signature
}
API_REALM = {"viewer", "operator", "admin", "admin_env"}


def expected_refusal(access: Access, principal: str) -> int:
    """401 when the token means nothing to the route, 403 when it is known but not enough."""
    if access is Access.TELEGRAM:
        return 403  # Telegram's secret is missing: the webhook answers 403 whatever the bearer token
    if access in (Access.VIEWER, Access.OPERATOR, Access.ADMIN) and principal in API_REALM:
        return 403
    return 401


@dataclass
class Call:
    """One request to make: the concrete path and what to send."""

    path: str
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


Prepare = Callable[[Rig], Awaitable[Call]]


def fixed(path: str, **kw: Any) -> Prepare:
    async def prepare(_: Rig) -> Call:
        return Call(path, **kw)

    return prepare


async def _seed_incident(rig: Rig) -> Call:
    return Call(f"/v1/incidents/{rig.incident_id}")


def fixed_incident_path(action: str) -> Prepare:
    async def prepare(rig: Rig) -> Call:
        return Call(f"/v1/incidents/{rig.incident_id}/{action}")

    return prepare


def _on_fresh_incident(action: str, body: Any = None) -> Prepare:
    async def prepare(rig: Rig) -> Call:
        return Call(f"/v1/incidents/{await rig.new_incident()}/{action}", json=body)

    return prepare


async def _assign_checked_in(rig: Rig) -> Call:
    """A fresh incident, and a fresh person checked in on duty at its TPS (applied before the call)."""
    incident_id = await rig.new_incident()
    with Session(rig.ctx.engine) as s:
        tps_id = s.get(Incident, incident_id).tps_id  # type: ignore[union-attr]
    person = f"RES-{uuid.uuid4().hex[:8]}"
    ev = rig.event(str(tps_id), type="checkin", payload={"personnel_id": person, "status": "on_duty"})
    r = await rig.client.post("/v1/events", json=ev, headers={"Authorization": f"Bearer {rig.seeder_token}"})
    assert r.status_code == 202, r.text
    for _ in range(200):
        with Session(rig.ctx.engine) as s:
            if s.get(Personnel, person) is not None:
                break
        await asyncio.sleep(0.05)
    return Call(f"/v1/incidents/{incident_id}/assign", json={"personnel_id": person, "eta_minutes": 5})


async def _message_for(rig: Rig, tps_id: str) -> str:
    """The inbox item id of a new operator message to one TPS."""
    r = await rig.admin("POST", "/v1/messages", json={"to": {"tps_ids": [tps_id]}, "text": "cek HT"})
    return str(r.json()["items"][0]["item_id"])


async def _inbox_ack(rig: Rig) -> Call:
    return Call(f"/v1/device/inbox/{await _message_for(rig, 'T1')}/ack", json={"note": "diterima"})


async def _tps_import(_: Rig) -> Call:
    row = {
        "tps_id": "T9",
        "name": "TPS 009",
        "kecamatan": "Kopo",
        "desa": "Kopo",
        "lat": "-6.2",
        "lon": "106.2",
        "rawan": "crowd;remote",
    }
    return Call("/v1/admin/tps/import", content=tps_csv([row]), headers={"Content-Type": "text/csv"})


async def _personnel_import(_: Rig) -> Call:
    csv_text = b"personnel_id,name,unit,role,tps_ids\nPOL-9,Bripka Test,Polsek Cikande,pam_tps,T1\n"
    return Call("/v1/admin/personnel/import", content=csv_text, headers={"Content-Type": "text/csv"})


async def _fresh_device(rig: Rig) -> Call:
    device_id, _ = await rig.issue_device(["T2"])
    return Call(f"/v1/admin/devices/{device_id}")


async def _fresh_token(rig: Rig) -> Call:
    token_id, _ = await rig.issue_token("viewer", "to-revoke")
    return Call(f"/v1/admin/tokens/{token_id}")


def _silence_body() -> dict[str, Any]:
    ends = datetime.now(UTC) + timedelta(hours=1)
    return {"match": {"kecamatan": "Cikande"}, "ends_at": ends.isoformat(), "reason": "pemadaman PLN"}


async def _silence(_: Rig) -> Call:
    return Call("/v1/admin/silences", json=_silence_body())


async def _fresh_silence(rig: Rig) -> Call:
    r = await rig.admin("POST", "/v1/admin/silences", json=_silence_body())
    return Call(f"/v1/admin/silences/{r.json()['id']}")


async def _policy(rig: Rig) -> Call:
    current = (await rig.admin("GET", "/v1/admin/policy")).json()
    return Call("/v1/admin/policy", content=orjson.dumps(current), headers={"Content-Type": "application/json"})


async def _event(_: Rig) -> Call:
    return Call("/v1/events", json=field_event("T1"))


async def _sms(_: Rig) -> Call:
    """An SMS from a number not on the roster: a gateway is answered 200 with a refusal, and nothing stored."""
    body = {"gateway_message_id": uuid.uuid4().hex, "from": "+6289900000000", "text": "LAPOR ada keributan"}
    return Call("/v1/gateway/sms", json=body | {"received_at": datetime.now(UTC).isoformat()})


async def _batch(_: Rig) -> Call:
    return Call("/v1/events/batch", json={"events": [field_event("T1"), field_event("T1")]})


TELEGRAM_UPDATE = {"update_id": 1}


@dataclass(frozen=True)
class Expect:
    access: Access
    ok: int  # the status an admitted principal gets
    prepare: Prepare


# Every (method, path) of `siaga dev`. HEAD is left out: Starlette answers it for the GET routes.
EXPECTATIONS: dict[tuple[str, str], Expect] = {
    ("GET", "/healthz"): Expect(Access.PUBLIC, 200, fixed("/healthz")),
    ("GET", "/readyz"): Expect(Access.PUBLIC, 200, fixed("/readyz")),
    ("GET", "/metrics"): Expect(Access.PUBLIC, 200, fixed("/metrics")),
    ("GET", "/openapi.json"): Expect(Access.PUBLIC, 200, fixed("/openapi.json")),
    ("GET", "/docs"): Expect(Access.PUBLIC, 200, fixed("/docs")),
    ("GET", "/docs/oauth2-redirect"): Expect(Access.PUBLIC, 200, fixed("/docs/oauth2-redirect")),
    ("GET", "/redoc"): Expect(Access.PUBLIC, 200, fixed("/redoc")),
    ("GET", "/"): Expect(Access.PUBLIC, 200, fixed("/")),
    ("GET", "/static/{name}"): Expect(Access.PUBLIC, 200, fixed("/static/app.js")),
    ("GET", "/me"): Expect(Access.VIEWER, 200, fixed("/me")),
    ("POST", "/v1/events"): Expect(Access.DEVICE, 202, _event),
    ("POST", "/v1/events/batch"): Expect(Access.DEVICE, 202, _batch),
    ("POST", "/v1/gateway/sms"): Expect(Access.DEVICE, 200, _sms),
    ("GET", "/v1/incidents"): Expect(Access.VIEWER, 200, fixed("/v1/incidents")),
    ("GET", "/v1/incidents/{incident_id}"): Expect(Access.VIEWER, 200, _seed_incident),
    ("POST", "/v1/incidents/{incident_id}/ack"): Expect(Access.OPERATOR, 200, _on_fresh_incident("ack")),
    ("POST", "/v1/incidents/{incident_id}/escalate"): Expect(
        Access.OPERATOR, 200, _on_fresh_incident("escalate", {"note": "perlu Polsek"})
    ),
    ("POST", "/v1/incidents/{incident_id}/resolve"): Expect(
        Access.OPERATOR, 200, _on_fresh_incident("resolve", {"resolution": "HT diganti"})
    ),
    ("POST", "/v1/incidents/{incident_id}/notes"): Expect(
        Access.OPERATOR, 200, _on_fresh_incident("notes", {"text": "Polsek sudah dihubungi"})
    ),
    ("POST", "/v1/incidents/{incident_id}/classify"): Expect(
        Access.OPERATOR, 200, _on_fresh_incident("classify", {"severity": "high", "reason": "genset terbakar"})
    ),
    ("POST", "/v1/incidents"): Expect(
        Access.OPERATOR,
        201,
        fixed("/v1/incidents", json={"tps_id": "T1", "description": "lapor via HT: HT rusak", "category": "equipment"}),
    ),
    ("GET", "/v1/admin/corrections"): Expect(Access.ADMIN, 200, fixed("/v1/admin/corrections")),
    ("GET", "/v1/admin/audit/export"): Expect(Access.ADMIN, 200, fixed("/v1/admin/audit/export")),
    ("GET", "/v1/reports/sitrep"): Expect(Access.VIEWER, 200, fixed("/v1/reports/sitrep?format=csv")),
    ("GET", "/v1/incidents/{incident_id}/candidates"): Expect(Access.VIEWER, 200, fixed_incident_path("candidates")),
    ("POST", "/v1/incidents/{incident_id}/assign"): Expect(Access.OPERATOR, 200, _assign_checked_in),
    ("POST", "/v1/messages"): Expect(
        Access.OPERATOR, 201, fixed("/v1/messages", json={"to": {"kecamatan": ["Cikande"]}, "text": "hujan deras"})
    ),
    ("GET", "/v1/device/inbox"): Expect(Access.DEVICE, 200, fixed("/v1/device/inbox?since=0")),
    ("POST", "/v1/device/inbox/{item_id}/ack"): Expect(Access.DEVICE, 200, _inbox_ack),
    ("POST", "/v1/admin/tps/import"): Expect(Access.ADMIN, 200, _tps_import),
    ("POST", "/v1/admin/personnel/import"): Expect(Access.ADMIN, 200, _personnel_import),
    ("POST", "/v1/admin/devices"): Expect(
        Access.ADMIN, 201, fixed("/v1/admin/devices", json={"personnel_id": "POL-2", "tps_ids": ["T2"]})
    ),
    ("GET", "/v1/admin/devices"): Expect(Access.ADMIN, 200, fixed("/v1/admin/devices")),
    ("DELETE", "/v1/admin/devices/{device_id}"): Expect(Access.ADMIN, 200, _fresh_device),
    ("POST", "/v1/admin/tokens"): Expect(
        Access.ADMIN, 201, fixed("/v1/admin/tokens", json={"name": "new viewer", "role": "viewer"})
    ),
    ("GET", "/v1/admin/tokens"): Expect(Access.ADMIN, 200, fixed("/v1/admin/tokens")),
    ("DELETE", "/v1/admin/tokens/{token_id}"): Expect(Access.ADMIN, 200, _fresh_token),
    ("GET", "/v1/admin/policy"): Expect(Access.ADMIN, 200, fixed("/v1/admin/policy")),
    ("POST", "/v1/admin/silences"): Expect(Access.OPERATOR, 201, _silence),
    ("GET", "/v1/admin/silences"): Expect(Access.OPERATOR, 200, fixed("/v1/admin/silences")),
    ("DELETE", "/v1/admin/silences/{silence_id}"): Expect(Access.OPERATOR, 200, _fresh_silence),
    ("PUT", "/v1/admin/policy"): Expect(Access.ADMIN, 200, _policy),
    ("POST", "/v1/telegram/webhook"): Expect(Access.TELEGRAM, 200, fixed("/v1/telegram/webhook", json=TELEGRAM_UPDATE)),
    # The handshake's proof is the verify token in the query, whoever asks (Meta sends no bearer token).
    ("GET", "/v1/gateway/whatsapp"): Expect(
        Access.PUBLIC,
        200,
        fixed(f"/v1/gateway/whatsapp?hub.mode=subscribe&hub.verify_token={WHATSAPP_VERIFY_TOKEN}&hub.challenge=7"),
    ),
    ("POST", "/v1/gateway/whatsapp"): Expect(
        Access.WHATSAPP, 200, fixed("/v1/gateway/whatsapp", json={"object": "whatsapp_business_account", "entry": []})
    ),
}
WEBSOCKETS = {"/ws": Access.VIEWER}


def composed_routes(rig: Rig) -> tuple[set[tuple[str, str]], set[str]]:
    """((method, path) of every HTTP route, paths of every WebSocket route) of the running app."""
    http: set[tuple[str, str]] = set()
    ws: set[str] = set()
    for route in iter_route_contexts(rig.app.routes):
        path = str(route.path)
        methods = route.methods
        if methods is None:
            ws.add(path)
        else:
            http.update((m, path) for m in methods if m != "HEAD")
    return http, ws


# The scope axis (SPEC section 10): an operator scoped to the kecamatan every prepared call touches
# (Cikande: T1 and its incident, messages and silences; Seeding: the fresh incidents) is admitted like
# an unscoped one; an operator scoped to Kopo gets what the route gives for something that is not there.
SCOPES = {"operator_in": ["Cikande", "Seeding"], "operator_out": ["Kopo"]}


@pytest_asyncio.fixture(scope="module")
async def rig(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Rig]:
    async with running_rig(tmp_path_factory.mktemp("matrix")) as r:
        for name, kecamatan in SCOPES.items():
            body = {"name": name, "role": "operator", "scope": {"kecamatan": kecamatan}}
            r.tokens[name] = (await r.admin("POST", "/v1/admin/tokens", json=body)).json()["token"]
        yield r


async def test_every_route_has_an_entry(rig: Rig) -> None:
    http, ws = composed_routes(rig)
    assert len(http) > 20, "the route enumeration found too little to be trusted"
    missing = sorted(http - set(EXPECTATIONS))
    stale = sorted(set(EXPECTATIONS) - http)
    assert not missing, f"routes with no access expectation (add them to EXPECTATIONS): {missing}"
    assert not stale, f"expectations for routes that no longer exist: {stale}"
    assert ws == set(WEBSOCKETS), f"WebSocket routes {sorted(ws)} vs expectations {sorted(WEBSOCKETS)}"


async def _call(rig: Rig, route: tuple[str, str], principal: str) -> tuple[httpx.Response, str | None, Any]:
    """Prepare and make one route's call as `principal`: (answer, the incident it names, the rig's
    fingerprint before it)."""
    call = await EXPECTATIONS[route].prepare(rig)
    incident = call.path.split("/")[3] if call.path.startswith("/v1/incidents/") else None
    before = rig.fingerprint(incident)
    r = await rig.client.request(
        route[0], call.path, json=call.json, content=call.content, headers=rig.headers(principal, **call.headers)
    )
    return r, incident, before


CASES = [pytest.param(route, who, id=f"{route[0]} {route[1]} as {who}") for route in EXPECTATIONS for who in PRINCIPALS]


@pytest.mark.parametrize(("route", "principal"), CASES)
async def test_access(rig: Rig, route: tuple[str, str], principal: str) -> None:
    expect = EXPECTATIONS[route]
    r, incident, before = await _call(rig, route, principal)
    if principal in ADMITS[expect.access]:
        assert r.status_code == expect.ok, f"{principal} refused: {r.status_code} {r.text[:300]}"
        return
    want = expected_refusal(expect.access, principal)
    assert r.status_code == want, f"{principal}: want {want}, got {r.status_code} {r.text[:300]}"
    assert r.json()["detail"], "a refusal says why"
    assert rig.fingerprint(incident) == before, "a refused request changed state"
    for secret in rig.secrets:
        assert secret not in r.text, "a refusal echoed a token"


def _lists_not(fragment: Callable[[Rig], str]) -> Callable[[Rig, httpx.Response], None]:
    def check(rig: Rig, r: httpx.Response) -> None:
        assert fragment(rig) not in r.text, f"an out-of-scope answer shows {fragment(rig)!r}"

    return check


# What an operator scoped elsewhere (Kopo) gets from each route a viewer or operator may call: 404 for
# a thing outside the scope, 422 naming a TPS or kecamatan outside it, and lists without what is outside.
SCOPED_OUT: dict[tuple[str, str], tuple[int, Callable[[Rig, httpx.Response], None] | None]] = {
    ("GET", "/me"): (200, lambda _, r: r.json()["scope"]["kecamatan"] == ["Kabupaten Serang/Kopo"] or None),
    ("GET", "/v1/incidents"): (200, _lists_not(lambda rig: str(rig.incident_id))),
    ("GET", "/v1/incidents/{incident_id}"): (404, None),
    ("POST", "/v1/incidents/{incident_id}/ack"): (404, None),
    ("POST", "/v1/incidents/{incident_id}/escalate"): (404, None),
    ("POST", "/v1/incidents/{incident_id}/resolve"): (404, None),
    ("POST", "/v1/incidents/{incident_id}/notes"): (404, None),
    ("POST", "/v1/incidents/{incident_id}/classify"): (404, None),
    ("POST", "/v1/incidents"): (422, None),
    ("GET", "/v1/reports/sitrep"): (200, _lists_not(lambda _: "Cikande")),
    ("GET", "/v1/incidents/{incident_id}/candidates"): (404, None),
    ("POST", "/v1/incidents/{incident_id}/assign"): (404, None),
    ("POST", "/v1/messages"): (422, None),
    ("POST", "/v1/admin/silences"): (422, None),
    ("GET", "/v1/admin/silences"): (200, _lists_not(lambda _: "Cikande")),
    ("DELETE", "/v1/admin/silences/{silence_id}"): (404, None),
}
SCOPED_ROUTES = [route for route, e in EXPECTATIONS.items() if e.access in (Access.VIEWER, Access.OPERATOR)]


def test_every_scoped_route_has_an_out_of_scope_expectation() -> None:
    assert sorted(SCOPED_ROUTES) == sorted(SCOPED_OUT), "add the route's out-of-scope answer to SCOPED_OUT"


SCOPE_CASES = [
    pytest.param(route, who, id=f"{route[0]} {route[1]} as {who}") for route in SCOPED_ROUTES for who in SCOPES
]


@pytest.mark.parametrize(("route", "principal"), SCOPE_CASES)
async def test_scoped_access(rig: Rig, route: tuple[str, str], principal: str) -> None:
    expect = EXPECTATIONS[route]
    r, incident, before = await _call(rig, route, principal)
    if principal == "operator_in":
        assert r.status_code == expect.ok, f"in scope, refused: {r.status_code} {r.text[:300]}"
        return
    want, check = SCOPED_OUT[route]
    assert r.status_code == want, f"out of scope: want {want}, got {r.status_code} {r.text[:300]}"
    if want >= 400:
        assert r.json()["detail"], "a refusal says why"
        assert rig.fingerprint(incident) == before, "a refused request changed state"
    if check is not None:
        check(rig, r)


async def test_refused_ingest_posts_change_nothing(rig: Rig) -> None:
    for who in ("none", "bad", "revoked", "revoked_device", "viewer", "operator", "admin"):
        before = rig.fingerprint()
        for path, body in (("/v1/events", field_event("T1")), ("/v1/events/batch", {"events": [field_event("T1")]})):
            r = await rig.client.post(path, json=body, headers=rig.headers(who))
            assert r.status_code == 401
            assert r.headers["WWW-Authenticate"] == "Bearer"
        assert rig.fingerprint() == before, f"{who}'s refused events were stored"


async def test_a_device_sees_and_acknowledges_nothing_meant_for_another_tps(rig: Rig) -> None:
    """The rig's device is bound to T1: a message to K1 (another kecamatan) and one to T2 (same
    kecamatan) are not in its inbox, and acknowledging them is a 404 that changes nothing."""
    headers = rig.headers("device")
    mine = await _message_for(rig, "T1")
    others = [await _message_for(rig, "K1"), await _message_for(rig, "T2")]
    r = await rig.client.get("/v1/device/inbox", headers=headers)
    assert r.status_code == 200, r.text
    ids = [i["order_id"] for i in r.json()["items"]]
    assert mine in ids and not set(others) & set(ids), ids
    before = rig.fingerprint()
    for item_id in others:
        r = await rig.client.post(f"/v1/device/inbox/{item_id}/ack", headers=headers)
        assert r.status_code == 404 and r.json()["detail"], r.text
    assert rig.fingerprint() == before


async def test_telegram_webhook_opens_only_with_its_secret(rig: Rig) -> None:
    url = "/v1/telegram/webhook"
    press = {
        "update_id": 7,
        "callback_query": {
            "id": "cb1",
            "from": {"id": 42, "username": "kapolsek"},
            "message": {"message_id": 1, "chat": {"id": int(TELEGRAM_CHAT)}},
            "data": f"ack:{rig.incident_id}",
        },
    }
    for secret in (None, "", "wrong", TELEGRAM_SECRET + "x", TELEGRAM_SECRET[:-1], rig.tokens["admin"]):
        headers = rig.headers("admin")
        if secret is not None:
            headers["X-Telegram-Bot-Api-Secret-Token"] = secret
        r = await rig.client.post(url, json=press, headers=headers)
        assert r.status_code == 403, (secret, r.text)
    detail = (await rig.client.get(f"/v1/incidents/{rig.incident_id}", headers=rig.headers("admin"))).json()
    assert detail["status"] != "acknowledged", "a button press without the secret acted"
    r = await rig.client.post(url, json=press, headers={"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET})
    assert r.status_code == 200, r.text
    assert r.json()["action"] == "acknowledge"
    other_chat = orjson.loads(orjson.dumps(press))
    other_chat["callback_query"]["message"] = {"chat": {"id": 999}}
    r = await rig.client.post(url, json=other_chat, headers={"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET})
    assert r.status_code == 403, "a chat the routing does not allow to act acted"


async def test_telegram_webhook_is_closed_when_no_secret_is_configured(tmp_path: Path) -> None:
    async with running_rig(tmp_path, with_incident=False, telegram_webhook_secret=None) as r:
        for secret in ("", "None", "null", TELEGRAM_SECRET):
            resp = await r.client.post(
                "/v1/telegram/webhook", json=TELEGRAM_UPDATE, headers={"X-Telegram-Bot-Api-Secret-Token": secret}
            )
            assert resp.status_code == 403


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer ",
        "Basic YWRtaW46YWRtaW4=",
        "Token {admin}",
        "{admin}",
        "Bearer {admin}x",
        "Bearer x{admin}",
        "Bearer {admin_prefix}",
        "Bearer {admin} {admin}",
        "Bearer " + "A" * 8192,
        "Bearer \x00",
        "Bearer ' OR '1'='1",
    ],
)
async def test_malformed_credentials_are_401(rig: Rig, header: str) -> None:
    admin = rig.tokens["admin"]
    assert admin
    value = header.format(admin=admin, admin_prefix=admin[:-1])
    for method, path in (("GET", "/v1/incidents"), ("GET", "/me"), ("GET", "/v1/admin/tokens"), ("POST", "/v1/events")):
        r = await rig.client.request(method, path, headers={"Authorization": value})
        assert r.status_code == 401, f"{method} {path} with {header!r}: {r.status_code}"


async def test_scheme_is_case_insensitive_and_tokens_only_travel_in_the_header(rig: Rig) -> None:
    admin = rig.tokens["admin"]
    assert (await rig.client.get("/me", headers={"Authorization": f"bEaReR {admin}"})).status_code == 200
    # The query string ends up in access logs and browser history: HTTP routes ignore ?token=.
    for path in ("/v1/incidents", "/me", "/v1/admin/tokens"):
        r = await rig.client.get(path, params={"token": admin, "access_token": admin})
        assert r.status_code == 401, path


async def test_the_page_never_echoes_a_token(rig: Rig) -> None:
    token = rig.tokens["operator"]
    assert token
    r = await rig.client.get("/", params={"token": token})
    assert r.status_code == 200
    assert token not in r.text
    assert r.headers["Referrer-Policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]


@pytest.mark.parametrize(
    "name", ["../../siaga.db", "..%2F..%2Fpyproject.toml", "index.html", "app.js%00.css", "%2e%2e%2fapp.py", "APP.JS"]
)
async def test_static_serves_only_its_own_files(rig: Rig, name: str) -> None:
    r = await rig.client.get(f"/static/{name}")
    assert r.status_code == 404, r.text[:200]


async def test_revoking_a_device_takes_effect_on_the_next_request(rig: Rig) -> None:
    device_id, token = await rig.issue_device(["T1"])
    headers = {"Authorization": f"Bearer {token}"}
    assert (await rig.client.post("/v1/events", json=field_event("T1"), headers=headers)).status_code == 202
    await rig.admin("DELETE", f"/v1/admin/devices/{device_id}")
    r = await rig.client.post("/v1/events", json=field_event("T1"), headers=headers)
    assert r.status_code == 401
    r = await rig.client.post("/v1/events/batch", json={"events": [field_event("T1")]}, headers=headers)
    assert r.status_code == 401
    listed = {d["device_id"]: d for d in (await rig.admin("GET", "/v1/admin/devices")).json()}
    assert listed[device_id]["revoked_at"]
    assert all("token" not in d and "token_hash" not in d for d in listed.values())


async def test_revoking_an_operator_token_takes_effect_on_the_next_request(rig: Rig) -> None:
    token_id, token = await rig.issue_token("operator", "shift-1")
    headers = {"Authorization": f"Bearer {token}"}
    incident = await rig.new_incident()
    assert (await rig.client.post(f"/v1/incidents/{incident}/ack", headers=headers)).status_code == 200
    await rig.admin("DELETE", f"/v1/admin/tokens/{token_id}")
    assert (
        await rig.client.post(f"/v1/incidents/{incident}/notes", json={"text": "masih?"}, headers=headers)
    ).status_code == 401
    assert (await rig.client.get("/v1/incidents", headers=headers)).status_code == 401
    assert (await rig.client.get("/me", headers=headers)).status_code == 401
    listed = (await rig.admin("GET", "/v1/admin/tokens")).json()
    assert all("token" not in t and "token_hash" not in t for t in listed)
    assert next(t for t in listed if t["id"] == token_id)["revoked_at"]


async def test_an_admin_cannot_be_locked_out_by_revoking_the_env_token(rig: Rig) -> None:
    # The env admin token is not a row: there is nothing to revoke, and it keeps working.
    r = await rig.client.get("/v1/admin/tokens", headers=rig.headers("admin_env"))
    assert r.status_code == 200
    assert all(t["name"] != "admin(env)" for t in r.json())


# -- the WebSocket -------------------------------------------------------------------------------


async def _ws_outcome(hostport: str, *, token: str | None, header: bool = False) -> tuple[str, Any]:
    """("closed", code) or ("refused", http status) or ("message", first frame) of one connection."""
    url = f"ws://{hostport}/ws"
    headers = {}
    if token is not None and header:
        headers["Authorization"] = f"Bearer {token}"
    elif token is not None:
        url += f"?token={token}"
    try:
        async with asyncio.timeout(WS_TIMEOUT_S), connect(url, additional_headers=headers) as ws:
            try:
                first = await ws.recv()
            except ConnectionClosed as exc:
                return "closed", exc.rcvd.code if exc.rcvd else None
            return "message", orjson.loads(first)
    except InvalidStatus as exc:
        return "refused", exc.response.status_code


@pytest_asyncio.fixture(scope="module")
async def live(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Rig, str]]:
    async with served_rig(tmp_path_factory.mktemp("ws")) as pair:
        yield pair


@pytest.mark.parametrize("principal", PRINCIPALS)
@pytest.mark.parametrize("via", ["query", "header"])
async def test_websocket_access(live: tuple[Rig, str], principal: str, via: str) -> None:
    rig, hostport = live
    kind, value = await _ws_outcome(hostport, token=rig.tokens[principal], header=via == "header")
    if principal in ADMITS[WEBSOCKETS["/ws"]]:
        assert kind == "message" and value["type"] == "snapshot", (kind, value)
        assert any(i["id"] == rig.incident_id for i in value["incidents"])
    else:
        assert (kind, value) in (("closed", CLOSE_UNAUTHORIZED), ("refused", 401), ("refused", 403)), (kind, value)


async def test_websocket_closes_when_its_token_is_revoked(live: tuple[Rig, str]) -> None:
    rig, hostport = live
    dash = rig.ctx.extras["dashboard"]
    # Shortened so the re-check happens within the test (defaults: heartbeat 20 s, re-auth 60 s).
    dash.heartbeat_s, dash.reauth_s = 0.1, 0.1
    token_id, token = await rig.issue_token("viewer", "wall screen")
    async with asyncio.timeout(WS_TIMEOUT_S), connect(f"ws://{hostport}/ws?token={token}") as ws:
        assert orjson.loads(await ws.recv())["type"] == "snapshot"
        await rig.admin("DELETE", f"/v1/admin/tokens/{token_id}")
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == CLOSE_UNAUTHORIZED


# -- tokens at rest and in logs -----------------------------------------------------------------


def _database_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))


async def test_tokens_are_stored_only_hashed(rig: Rig) -> None:
    data = _database_bytes(rig.db_path)
    issued = [t for k, t in rig.tokens.items() if t and k not in ("none", "bad", "admin_env")] + [rig.seeder_token]
    assert len(issued) >= 6
    for token in issued:
        assert token.encode() not in data, "a token is stored in plain text"
        assert hash_token(token).encode() in data, "the scan cannot see the hash: it proves nothing"
    env_admin = rig.ctx.settings.admin_token
    assert env_admin and env_admin.encode() not in data
    assert hash_token(env_admin).encode() not in data, "the env admin token is never stored, not even hashed"


@contextlib.contextmanager
def production_logging(caplog: pytest.LogCaptureFixture) -> Iterator[io.StringIO]:
    """siaga.logs.setup_logging as `siaga` installs it, its output in a buffer; caplog still attached.

    Restores the logging configuration afterwards: setup_logging changes process-wide state.
    """
    root = logging.getLogger()
    saved_root = (root.handlers[:], root.level)
    saved = {
        n: (lg.handlers[:], lg.filters[:], lg.propagate, lg.level)
        for n in ("uvicorn", "uvicorn.error", "uvicorn.access", "aiokafka")
        for lg in [logging.getLogger(n)]
    }
    buf = io.StringIO()
    try:
        # As in a fresh process: an earlier uvicorn.Config (a fake provider's) may have set levels.
        for name in saved:
            logging.getLogger(name).setLevel(logging.NOTSET)
        setup_logging("text", "INFO")
        handler = root.handlers[0]
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(buf)
        root.addHandler(caplog.handler)
        yield buf
    finally:
        root.handlers[:], level = saved_root
        root.setLevel(level)
        for name, (handlers, filters, propagate, lvl) in saved.items():
            lg = logging.getLogger(name)
            lg.handlers[:], lg.filters[:] = handlers, filters
            lg.propagate = propagate
            lg.setLevel(lvl)


async def test_tokens_never_reach_the_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    bot_token = "123456789:AAH" + "b" * 32
    with FakeTelegram(token=bot_token) as telegram, production_logging(caplog) as output:
        async with served_rig(
            tmp_path, access_log=True, telegram_api_base=telegram.url, telegram_bot_token=bot_token
        ) as (rig, hostport):
            for principal in PRINCIPALS:
                await _ws_outcome(hostport, token=rig.tokens[principal])
                await _ws_outcome(hostport, token=rig.tokens[principal], header=True)
                for method, path in (("GET", "/v1/incidents"), ("GET", "/me"), ("GET", "/v1/admin/tokens")):
                    await rig.client.request(method, path, headers=rig.headers(principal))
                await rig.client.get("/", params={"token": rig.tokens[principal] or ""})
                await rig.client.get("/v1/incidents", params={"token": rig.tokens[principal] or ""})
                await rig.client.post("/v1/events", json=field_event("T1"), headers=rig.headers(principal))
            await rig.client.post("/v1/events", content=b"{broken", headers=rig.headers("device"))
            # An escalation sends a Telegram alert, a button press answers a callback: both URLs hold the bot token.
            await rig.client.post(f"/v1/incidents/{rig.incident_id}/escalate", headers=rig.headers("operator"))
            press = {
                "update_id": 9,
                "callback_query": {
                    "id": "cb9",
                    "from": {"id": 42},
                    "message": {"chat": {"id": int(TELEGRAM_CHAT)}},
                    "data": f"ack:{rig.incident_id}",
                },
            }
            await rig.client.post(
                "/v1/telegram/webhook", json=press, headers={"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET}
            )
            for _ in range(100):
                if len(telegram.requests) >= 2:
                    break
                await asyncio.sleep(0.05)
            assert len(telegram.requests) >= 2, "the notifier never called Telegram: the test proves nothing"
            secrets = [*rig.secrets, rig.tokens["bad"] or ""]
    lines = [line for line in output.getvalue().splitlines() if not _test_side(line, hostport)]
    records = [f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records]
    records = [line for line in records if not _test_side(line, hostport)]
    text = "\n".join(lines)
    assert '"GET /v1/incidents' in text and "/ws" in text, "the access log was not captured: the test proves nothing"
    assert "[redacted]" in text
    for secret in secrets:
        forms = {secret, quote(secret, safe=""), secret.split(":")[-1]}
        leaked = [line for line in lines + records if any(f in line for f in forms)]
        assert not leaked, f"a token is in the logs: {[redact_all(line, secrets) for line in leaked][:3]}"


def _test_side(line: str, hostport: str) -> bool:
    """A line the test's own machinery logged: its HTTP client's requests to the app (httpx logs
    them), and the fake Telegram's access log (uvicorn.access is one logger per process; Siaga
    serves no /bot path)."""
    return f"http://{hostport}/" in line or '"POST /bot' in line


def redact_all(line: str, secrets: list[str]) -> str:
    """The line with every known secret masked, fit for an assertion message."""
    for secret in secrets:
        line = line.replace(secret, secret[:4] + "…")
    return line


def test_redaction_covers_arguments_that_are_not_strings(caplog: pytest.LogCaptureFixture) -> None:
    secret = "opr_" + "s" * 40
    with production_logging(caplog) as output:
        logging.getLogger("httpx").warning(  # httpx logs at INFO, which production silences
            'HTTP Request: %s %s "%s"', "GET", httpx.URL(f"http://127.0.0.1:8000/?token={secret}"), "HTTP/1.1 200 OK"
        )
    assert "token=[redacted]" in output.getvalue()
    assert secret not in output.getvalue()
