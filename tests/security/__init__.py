"""Security tests: who may call what, and what hostile input does to the services.

`running_rig` composes the whole system the way `siaga dev --no-demo` does (`build_dev_app`:
ingest, dispatch and dashboard in one app, the in-process bus, a SQLite file in the test's
directory), runs its lifespan and sets up, through the admin API, one principal of every kind:

| name | what it is |
|---|---|
| `none` | no Authorization header at all |
| `bad` | a well-formed token nobody issued |
| `revoked` | an admin API token, issued and then revoked through the admin API |
| `revoked_device` | a device token, issued and then revoked through the admin API |
| `device` | a device token bound to TPS `T1` |
| `viewer`, `operator`, `admin` | API tokens of those roles, issued through the admin API |
| `admin_env` | the first admin token, from `SIAGA_ADMIN_TOKEN` (never stored) |

The modules of this package share it; each builds its own rig (a fresh database) so no test
depends on what another did.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import func
from sqlmodel import Session, select

from siaga.cli import build_dev_app
from siaga.clock import Clock
from siaga.models import ApiToken, Device, Incident, Personnel, PolicyVersion, SeenEvent, TimelineEntry, Tps
from siaga.runtime import Context
from siaga.settings import Settings
from tests.plugins.browser import serve

PRINCIPALS = ("none", "bad", "revoked", "revoked_device", "device", "viewer", "operator", "admin", "admin_env")
TELEGRAM_SECRET = "tg-webhook-secret-" + "x" * 16
TELEGRAM_CHAT = "-100123"
WHATSAPP_APP_SECRET = "wa-app-secret-" + "y" * 16
WHATSAPP_VERIFY_TOKEN = "wa-verify-" + "z" * 12
TPS_ROWS = [
    {
        "tps_id": "T1",
        "name": "TPS 001",
        "kecamatan": "Cikande",
        "desa": "Cikande",
        "lat": "-6.18",
        "lon": "106.34",
        "rawan": "",
    },
    {
        "tps_id": "T2",
        "name": "TPS 002",
        "kecamatan": "Cikande",
        "desa": "Cikande",
        "lat": "-6.19",
        "lon": "106.35",
        "rawan": "flood",
    },
    {
        "tps_id": "K1",
        "name": "TPS K01",
        "kecamatan": "Kopo",
        "desa": "Kopo",
        "lat": "-6.25",
        "lon": "106.20",
        "rawan": "remote",
    },
]
TPS_HEADER = ["tps_id", "name", "kecamatan", "desa", "lat", "lon", "rawan"]
SEED_KECAMATAN = "Seeding"
SEED_TPS = 80  # TPS a gateway device opens fresh incidents at, one per TPS


def tps_csv(rows: list[dict[str, str]]) -> bytes:
    """The TPS registry CSV of SPEC section 5 for these rows."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, TPS_HEADER, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode()


def field_event(tps_id: str = "T1", *, occurred_at: datetime | None = None, **fields: Any) -> dict[str, Any]:
    """A valid `incident.reported` event (fresh event_id) with `fields` replacing its top-level fields.

    Without `occurred_at` it is stamped with the wall clock: right for a rig on the system clock only.
    A rig on a manual clock stamps its own events with `Rig.event` (its clock, not the wall's)."""
    when = occurred_at or datetime.now(UTC)
    ev: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "type": "incident.reported",
        "tps_id": tps_id,
        "occurred_at": when.isoformat().replace("+00:00", "Z"),
        "payload": {"category": "equipment", "description": "HT rusak, tidak bisa menghubungi Polsek"},
    }
    ev.update(fields)
    return ev


def security_settings(db: Path, **overrides: Any) -> Settings:
    """Settings of a rig: everything explicit so no SIAGA_* variable of the machine leaks in."""
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{db}",
        "kafka_bootstrap": None,
        "admin_token": "adm_env_" + uuid.uuid4().hex,
        "telegram_webhook_secret": TELEGRAM_SECRET,
        "whatsapp_app_secret": WHATSAPP_APP_SECRET,
        "whatsapp_verify_token": WHATSAPP_VERIFY_TOKEN,
        "telegram_bot_token": "123456789:AAH" + uuid.uuid4().hex,
        "telegram_chat_id": TELEGRAM_CHAT,
        # Port 9 (discard) on loopback: refused at once, so no test ever reaches the internet.
        "telegram_api_base": "http://127.0.0.1:9",
        "webhook_url": None,
        "slack_webhook_url": None,
        "whatsapp_token": None,
        "policy_file": None,
        "tick_interval_s": 0.2,
        "cors_origins": "",
        "topic_prefix": "",
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class Rig:
    """A composed dev app with every kind of principal, and a client that reaches it."""

    app: FastAPI
    client: httpx.AsyncClient
    db_path: Path
    tokens: dict[str, str | None] = field(default_factory=dict)
    device_id: str = ""
    revoked_device_id: str = ""
    token_ids: dict[str, int] = field(default_factory=dict)
    incident_id: str = ""
    seeder_token: str = ""
    seeded: int = 0

    @property
    def ctx(self) -> Context:
        ctx: Context = self.app.state.ctx
        return ctx

    @property
    def secrets(self) -> list[str]:
        """Every secret this rig knows: the tokens, the env admin token, the Telegram bot token."""
        found = [t for t in self.tokens.values() if t and t != self.tokens.get("bad")]
        s = self.ctx.settings
        return (
            found
            + [self.seeder_token]
            + [x for x in (s.admin_token, s.telegram_bot_token, s.telegram_webhook_secret) if x]
        )

    def headers(self, principal: str, **extra: str) -> dict[str, str]:
        """Headers that present `principal`'s token as a bearer token (none: no header)."""
        token = self.tokens[principal]
        out = dict(extra)
        if token:
            out["Authorization"] = f"Bearer {token}"
        return out

    def event(self, tps_id: str = "T1", **fields: Any) -> dict[str, Any]:
        """`field_event` stamped by the rig's own clock, so a frozen clock never sees it "ahead"."""
        return field_event(tps_id, occurred_at=self.ctx.clock.now(), **fields)

    async def admin(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """A call with the admin token that must succeed."""
        r = await self.client.request(method, path, headers=self.headers("admin", **kw.pop("headers", {})), **kw)
        assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text[:500]}"
        return r

    async def issue_device(self, tps_ids: list[str]) -> tuple[str, str]:
        """(device_id, token) of a new device bound to these TPS."""
        r = await self.admin("POST", "/v1/admin/devices", json={"personnel_id": "POL-1", "tps_ids": tps_ids})
        return str(r.json()["device_id"]), str(r.json()["token"])

    async def issue_token(self, role: str, name: str | None = None) -> tuple[int, str]:
        """(id, token) of a new API token of this role."""
        r = await self.admin("POST", "/v1/admin/tokens", json={"name": name or f"sec-{role}", "role": role})
        return int(r.json()["id"]), str(r.json()["token"])

    async def new_incident(self) -> str:
        """A fresh open incident (at a TPS no other incident is at), opened through ingest and dispatch."""
        assert self.seeded < SEED_TPS, "the rig ran out of seeding TPS"
        self.seeded += 1
        tps_id = f"S{self.seeded:03d}"
        r = await self.client.post(
            "/v1/events", json=self.event(tps_id), headers={"Authorization": f"Bearer {self.seeder_token}"}
        )
        assert r.status_code == 202, r.text
        return await self.wait_for_incident(tps_id)

    def fingerprint(self, incident_id: str | None = None) -> dict[str, Any]:
        """What a refused request must leave as it was: registry, roster, devices, tokens, policy, seen
        events, and the named incident with its timeline (other incidents move on their own: alerts)."""
        with Session(self.ctx.engine) as s:
            counts = {
                m.__name__: s.exec(select(func.count()).select_from(m)).one()
                for m in (Tps, Personnel, Device, ApiToken, PolicyVersion, SeenEvent)
            }
            revoked = sorted(d.device_id for d in s.exec(select(Device)).all() if d.revoked_at) + sorted(
                str(t.id) for t in s.exec(select(ApiToken)).all() if t.revoked_at
            )
            names = sorted((t.tps_id, t.name, t.kecamatan) for t in s.exec(select(Tps)).all())
            incident: tuple[Any, ...] = ()
            if incident_id:
                inc = s.get(Incident, incident_id)
                entries = s.exec(
                    select(func.count()).select_from(TimelineEntry).where(TimelineEntry.incident_id == incident_id)
                ).one()
                incident = (inc.status, inc.level, inc.version, entries) if inc else ("missing",)
        return {"counts": counts, "revoked": revoked, "tps": names, "incident": incident}

    async def wait_for_incident(self, tps_id: str = "T1", timeout_s: float = 10.0) -> str:
        """The id of the first incident dispatch opened at this TPS (polls the operator API)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        while loop.time() < end:
            r = await self.admin("GET", "/v1/incidents")
            found = [i["id"] for i in r.json()["items"] if i["tps_id"] == tps_id]
            if found:
                return str(found[0])
            await asyncio.sleep(0.05)
        raise AssertionError(f"dispatch opened no incident at {tps_id} within {timeout_s}s")


async def populate(rig: Rig, *, with_incident: bool = True) -> None:
    """Registry, devices and tokens through the admin API; one incident at T1 through ingest."""
    assert rig.ctx.settings.admin_token
    # The admin token from the environment bootstraps; "admin" then becomes an issued admin token.
    rig.tokens = {
        "none": None,
        "bad": "opr_" + uuid.uuid4().hex,
        "admin_env": rig.ctx.settings.admin_token,
        "admin": rig.ctx.settings.admin_token,
    }
    seeding = [
        {
            "tps_id": f"S{i:03d}",
            "name": f"TPS S{i:03d}",
            "kecamatan": SEED_KECAMATAN,
            "desa": "Seeding",
            "lat": "-6.3",
            "lon": "106.1",
            "rawan": "",
        }
        for i in range(1, SEED_TPS + 1)
    ]
    await rig.admin(
        "POST", "/v1/admin/tps/import", content=tps_csv(TPS_ROWS + seeding), headers={"Content-Type": "text/csv"}
    )
    for role in ("viewer", "operator", "admin"):
        rig.token_ids[role], rig.tokens[role] = await rig.issue_token(role)
    rig.device_id, rig.tokens["device"] = await rig.issue_device(["T1"])
    rig.revoked_device_id, rig.tokens["revoked_device"] = await rig.issue_device(["T1"])
    r = await rig.admin("POST", "/v1/admin/devices", json={"personnel_id": "GW-1", "kecamatan": [SEED_KECAMATAN]})
    rig.seeder_token = str(r.json()["token"])
    await rig.admin("DELETE", f"/v1/admin/devices/{rig.revoked_device_id}")
    rig.token_ids["revoked"], rig.tokens["revoked"] = await rig.issue_token("admin", "sec-revoked-admin")
    await rig.admin("DELETE", f"/v1/admin/tokens/{rig.token_ids['revoked']}")
    if with_incident:
        r = await rig.client.post(
            "/v1/events", json=rig.event("T1", event_id="seed-" + uuid.uuid4().hex), headers=rig.headers("device")
        )
        assert r.status_code == 202, r.text
        rig.incident_id = await rig.wait_for_incident("T1")


@contextlib.asynccontextmanager
async def running_rig(
    tmp_path: Path, *, clock: Clock | None = None, with_incident: bool = True, **settings: Any
) -> AsyncIterator[Rig]:
    """The composed dev app, started in-process (its lifespan), reached through httpx's ASGI transport."""
    db = tmp_path / f"siaga-{uuid.uuid4().hex[:6]}.db"
    app = build_dev_app(security_settings(db, **settings), demo=False, port=0)
    if clock is not None:
        # build_dev_app takes no clock: every service reads ctx.clock when it needs the time.
        app.state.ctx.clock = clock
    async with app.router.lifespan_context(app):
        # A crash must show as the 500 a real server would send, not as an exception in the test.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://siaga.test", timeout=30) as client:
            rig = Rig(app=app, client=client, db_path=db)
            await populate(rig, with_incident=with_incident)
            yield rig


def served(app: FastAPI, *, access_log: bool = False) -> contextlib.AbstractAsyncContextManager[str]:
    """`app` on a real uvicorn server, configured as `siaga` runs it (log_config=None). Yields "host:port"."""
    return serve(app, access_log=access_log, keep_logging=True)


@contextlib.asynccontextmanager
async def served_rig(tmp_path: Path, *, access_log: bool = False, **settings: Any) -> AsyncIterator[tuple[Rig, str]]:
    """The composed dev app on a real uvicorn server, populated; yields (rig, "host:port")."""
    db = tmp_path / f"siaga-{uuid.uuid4().hex[:6]}.db"
    app = build_dev_app(security_settings(db, **settings), demo=False, port=0)
    async with (
        served(app, access_log=access_log) as hostport,
        httpx.AsyncClient(base_url=f"http://{hostport}", timeout=30) as client,
    ):
        rig = Rig(app=app, client=client, db_path=db)
        await populate(rig)
        yield rig, hostport
