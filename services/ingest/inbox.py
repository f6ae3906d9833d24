"""The device inbox (SPEC section 9): what dispatch wrote for a device's TPS, kecamatan and person.

Dispatch writes one `inboxitem` row per field order (orders, "help on the way" notices, operator
messages) in the transaction that puts it on siaga.field-orders; ingest, which serves every
`/v1/device/*` route, reads them here. A device polls `GET /v1/device/inbox?since=<cursor>` every
15 to 30 s: one indexed read per target it has (its TPS, their kecamatan, its person, `all`), a
body built from the stored JSON without parsing it, and `304 Not Modified` when nothing is new.
An acknowledgement goes to the incident's owner as a command (`order_ack`), which puts it on the
timeline and stops the order's re-send; the device waits, bounded, for the owner's answer.
docs/field-app.md is the guide for field-app makers.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session

from services.ingest.service import IngestDb, _json_list
from siaga import topics
from siaga.contracts import AcknowledgeOrder, KecamatanKey
from siaga.keys import kecamatan_key
from siaga.models import CommandResult, Device, InboxItem
from siaga.runtime import Context

PAGE = 100  # items an answer holds at most; `more` says whether the next poll will find others
DEVICES_KEPT = 50_000  # devices whose targets are kept (then all are forgotten and derived again)
POLL_S = 0.05  # how often an acknowledgement looks for the owner's result


@dataclass(frozen=True)
class InboxDevice:
    """A device as its inbox sees it: the targets whose items it may read."""

    device_id: str
    targets: tuple[str, ...]  # tps:<id>, kecamatan:<key>, person:<id>, all


@dataclass(frozen=True)
class Page:
    cursor: int
    body: bytes  # the JSON answer


@dataclass(frozen=True)
class Item:
    kind: str
    incident_id: str | None
    kecamatan: str | None


class InboxDb:
    """The inbox's statements, on ingest's connections (`IngestDb.reading`)."""

    def __init__(self, db: IngestDb) -> None:
        self.db = db
        p = db.param
        self._device_sql = (
            f"SELECT device_id, personnel_id, CAST(tps_ids AS TEXT), CAST(kecamatan AS TEXT) "
            f"FROM {Device.__tablename__} WHERE token_hash = {p} AND revoked_at IS NULL"
        )
        self._table = InboxItem.__tablename__
        self._p = p
        self._devices: dict[tuple[Any, ...], InboxDevice] = {}  # by the row read and the registry's version
        self._pages: dict[int, str] = {}  # the page query by its number of targets

    def device(self, cur: Any, token_hash: str) -> InboxDevice | None:
        row = cur.execute(self._device_sql, (token_hash,)).fetchone()
        if row is None:
            return None  # unknown or revoked: read on every poll, never kept
        self.db.refresh_registry(cur)
        device = self._devices.get((row, self.db.tps_version))
        if device is None:
            device = self._targets(cur, row)
            if len(self._devices) >= DEVICES_KEPT:
                self._devices.clear()
            self._devices[(row, self.db.tps_version)] = device
        return device

    def _targets(self, cur: Any, row: tuple[Any, ...]) -> InboxDevice:
        device_id, personnel_id, tps_json, kecamatan_json = row
        tps_ids = _json_list(tps_json)
        kecamatan = set(self.db.kecamatan_of(cur, tps_ids).values()) | set(_json_list(kecamatan_json))
        targets = [f"tps:{t}" for t in sorted(tps_ids)] + [f"kecamatan:{kecamatan_key(k)}" for k in sorted(kecamatan)]
        if personnel_id:
            targets.append(f"person:{personnel_id}")
        targets.append("all")
        return InboxDevice(device_id, tuple(targets))

    def page(self, cur: Any, device: InboxDevice, since: int) -> Page:
        """The device's items after `since`, oldest first, at most PAGE of them."""
        n = len(device.targets)
        sql = self._pages.get(n)
        if sql is None:
            marks = ", ".join([self._p] * n)
            sql = self._pages[n] = (
                f"SELECT seq, body FROM {self._table} WHERE target_key IN ({marks}) AND seq > {self._p} "
                f"ORDER BY seq LIMIT {PAGE + 1}"
            )
        cur.execute(sql, (*device.targets, since))
        rows = cur.fetchall()
        more = len(rows) > PAGE
        rows = rows[:PAGE]
        cursor = rows[-1][0] if rows else since
        # Each stored body is a field order's JSON object: the item is it with its `seq` in front.
        items = b",".join(b'{"seq":%d,%s' % (seq, body.encode()[1:]) for seq, body in rows)
        body = b'{"items":[%s],"cursor":"%d","more":%s}' % (items, cursor, b"true" if more else b"false")
        return Page(cursor, body)

    def item(self, cur: Any, device: InboxDevice, item_id: str) -> Item | None:
        """One of the device's items by its id (None: no such item, or not meant for this device)."""
        marks = ", ".join([self._p] * len(device.targets))
        cur.execute(
            f"SELECT kind, incident_id, kecamatan FROM {self._table} "
            f"WHERE item_id = {self._p} AND target_key IN ({marks}) ORDER BY seq LIMIT 1",
            (item_id, *device.targets),
        )
        row = cur.fetchone()
        return None if row is None else Item(*row)


def etag(cursor: int) -> str:
    """The answer to `since` is fixed by the cursor it reaches: nothing new after it, nothing changed."""
    return f'"i{cursor}"'


async def acknowledge(ctx: Context, *, device_id: str, item_id: str, item: Item, note: str, now: datetime) -> int:
    """Send the device's acknowledgement to the incident's owner and wait for its answer (its status).

    The command id is the device's and the item's, so an acknowledgement sent twice is applied once
    (the second finds the first's result). Raises TimeoutError when no owner answered in time.
    """
    assert item.incident_id is not None and item.kecamatan is not None
    command = AcknowledgeOrder(
        command_id=f"ack:{device_id}:{item_id}",
        kecamatan=KecamatanKey(kecamatan=item.kecamatan),
        actor=f"device:{device_id}",
        issued_at=now,
        incident_id=item.incident_id,
        order_id=item_id,
        note=note,
    )
    found = await asyncio.to_thread(_result, ctx, command.command_id)
    if found is not None:
        return found
    await ctx.bus.publish(topics.COMMANDS, command.bus_key(), command.to_bytes())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ctx.settings.command_timeout_s
    while loop.time() < deadline:
        await asyncio.sleep(POLL_S)
        found = await asyncio.to_thread(_result, ctx, command.command_id)
        if found is not None:
            return found
    raise TimeoutError(f"no dispatch applied {command.command_id} in time")


def _result(ctx: Context, command_id: str) -> int | None:
    with Session(ctx.engine) as s:
        r = s.get(CommandResult, command_id)
        return None if r is None else r.status
