"""The Serang demo: load the data set into a running dispatch and issue the field devices.

`load_demo()` imports the TPS registry and the roster through dispatch's admin API, issues one
device per Linmas pair and per officer's phone (plus a few SMS/radio gateways bound to whole
kecamatan) and hands back the device tokens per TPS, in memory only, for the field simulator.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from siaga.demo.registry import (
    Kecamatan,
    PersonnelRow,
    TpsRow,
    demo_personnel,
    demo_tps,
    kecamatan_yaml_path,
    personnel_csv_path,
    read_kecamatan,
    tps_csv_path,
)

__all__ = [
    "DemoLoadError",
    "DemoSetup",
    "DeviceToken",
    "Kecamatan",
    "PersonnelRow",
    "TpsRow",
    "demo_personnel",
    "demo_tps",
    "kecamatan_yaml_path",
    "load_demo",
    "personnel_csv_path",
    "plan_devices",
    "read_kecamatan",
    "tps_csv_path",
]

# Who carries a phone that posts events: Linmas share one per TPS, every field officer has one.
_DEVICE_ROLES = ("pam_tps", "reserve")


class DemoLoadError(RuntimeError):
    """Dispatch refused a step of the demo setup; the message says which and why."""


@dataclass(frozen=True)
class DeviceToken:
    """A device issued for the demo. The token is a secret: it is left out of repr()."""

    device_id: str
    token: str = field(repr=False)
    personnel_id: str
    # Everyone who checks in through this device (both Linmas of a TPS share one phone).
    personnel_ids: tuple[str, ...]
    tps_ids: tuple[str, ...] = ()
    kecamatan: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeviceRequest:
    """A device to issue: what `POST /v1/admin/devices` is asked for."""

    personnel_id: str
    personnel_ids: tuple[str, ...]
    tps_ids: tuple[str, ...] = ()
    kecamatan: tuple[str, ...] = ()

    def body(self) -> dict[str, Any]:
        if self.kecamatan:
            return {"personnel_id": self.personnel_id, "kecamatan": list(self.kecamatan)}
        return {"personnel_id": self.personnel_id, "tps_ids": list(self.tps_ids)}


@dataclass
class DemoSetup:
    """What the demo setup did, and the device tokens per TPS (in memory only, never written)."""

    tps_csv: Path
    personnel_csv: Path
    tps_import: dict[str, Any]
    personnel_import: dict[str, Any]
    devices: list[DeviceToken]
    gateways: list[DeviceToken]
    tokens_by_tps: dict[str, list[DeviceToken]]


def plan_devices(
    tps: list[TpsRow] | tuple[TpsRow, ...],
    personnel: list[PersonnelRow] | tuple[PersonnelRow, ...],
    kecamatan: list[Kecamatan],
) -> tuple[list[DeviceRequest], list[DeviceRequest]]:
    """The field devices and the gateway devices the demo issues (pure: no I/O)."""
    linmas: dict[str, list[str]] = defaultdict(list)
    devices: list[DeviceRequest] = []
    for p in personnel:
        if p.role == "linmas":
            for tps_id in p.tps_ids:
                linmas[tps_id].append(p.personnel_id)
        elif p.role in _DEVICE_ROLES and p.tps_ids:
            devices.append(DeviceRequest(p.personnel_id, (p.personnel_id,), tps_ids=p.tps_ids))
    pairs = [
        DeviceRequest(linmas[t.tps_id][0], tuple(linmas[t.tps_id]), tps_ids=(t.tps_id,))
        for t in tps
        if linmas.get(t.tps_id)
    ]
    # Gateways (SMS / HT radio relays) run by the Polres ops room, for the hill and coastal areas
    # where phones lose signal, and one for the whole regency.
    ops = [p.personnel_id for p in personnel if p.role == "ops"] or ["ops"]
    groups = [
        tuple(k.name for k in kecamatan if "remote" in k.rawan_tendencies),
        tuple(k.name for k in kecamatan if k.coastal),
        tuple(k.name for k in kecamatan),
    ]
    gateways = [DeviceRequest(ops[i % len(ops)], (), kecamatan=group) for i, group in enumerate(groups) if group]
    return pairs + devices, gateways


async def load_demo(
    client: httpx.AsyncClient,
    *,
    dispatch_url: str,
    admin_token: str,
    concurrency: int = 8,
) -> DemoSetup:
    """Import the Serang TPS and roster into dispatch and issue the demo's devices.

    `concurrency` bounds the device requests in flight. Raises DemoLoadError when dispatch
    refuses a step (the error names the step and dispatch's answer, never the token).
    """
    base = dispatch_url.rstrip("/")
    auth = {"Authorization": f"Bearer {admin_token}"}
    tps_import = await _post_csv(client, f"{base}/v1/admin/tps/import", tps_csv_path(), auth, "TPS import")
    personnel_import = await _post_csv(
        client, f"{base}/v1/admin/personnel/import", personnel_csv_path(), auth, "roster import"
    )
    field_requests, gateway_requests = plan_devices(demo_tps(), demo_personnel(), read_kecamatan())
    limit = asyncio.Semaphore(concurrency)

    async def issue(req: DeviceRequest) -> DeviceToken:
        async with limit:
            resp = await client.post(f"{base}/v1/admin/devices", json=req.body(), headers=auth)
        if resp.status_code not in (200, 201):
            raise DemoLoadError(f"issuing a device for {req.personnel_id}: HTTP {resp.status_code}: {resp.text[:300]}")
        answer = resp.json()
        return DeviceToken(
            device_id=str(answer["device_id"]),
            token=str(answer["token"]),
            personnel_id=req.personnel_id,
            personnel_ids=req.personnel_ids,
            tps_ids=req.tps_ids,
            kecamatan=req.kecamatan,
        )

    devices = list(await asyncio.gather(*(issue(r) for r in field_requests)))
    gateways = list(await asyncio.gather(*(issue(r) for r in gateway_requests)))
    tokens_by_tps: dict[str, list[DeviceToken]] = defaultdict(list)
    for device in devices:
        for tps_id in device.tps_ids:
            tokens_by_tps[tps_id].append(device)
    return DemoSetup(
        tps_csv=tps_csv_path(),
        personnel_csv=personnel_csv_path(),
        tps_import=tps_import,
        personnel_import=personnel_import,
        devices=devices,
        gateways=gateways,
        tokens_by_tps=dict(tokens_by_tps),
    )


async def _post_csv(client: httpx.AsyncClient, url: str, path: Path, auth: dict[str, str], step: str) -> dict[str, Any]:
    body = await asyncio.to_thread(path.read_bytes)
    resp = await client.post(
        url,
        content=body,
        headers={**auth, "Content-Type": "text/csv; charset=utf-8"},
    )
    if resp.status_code not in (200, 201, 202):
        raise DemoLoadError(f"{step}: HTTP {resp.status_code}: {resp.text[:300]}")
    answer: dict[str, Any] = resp.json()
    return answer


# Durations of the escalation policy (paths into the policy document), in minutes, seconds or hours.
POLICY_DURATIONS: list[tuple[str, ...]] = [
    ("local_window_minutes",),
    ("late_grace_seconds",),
    ("ack_timeout_minutes",),
    ("reminder_minutes",),
    ("grouping_minutes",),
    ("spread", "window_minutes"),
    ("silent_post_minutes",),
    ("escort_grace_minutes",),
    ("max_duty_hours",),
]
ORDER_ACK_FLOOR_MINUTES = 1.5  # real minutes: a poll a minute plus a few seconds to acknowledge


def scaled_policy(doc: dict[str, Any], speed: float) -> dict[str, Any]:
    """The policy document with every duration divided by `speed`.

    A sped-up day needs a sped-up policy: at speed 30 a simulated 15-minute window lasts 30 real
    seconds, so escalations and silent posts show when they would on the day. Except the time to
    acknowledge a field order: at least ORDER_ACK_FLOOR_MINUTES of real time.
    """
    out = {**doc, "spread": dict(doc.get("spread") or {})}
    # Phones poll their inbox in real time (siaga.simulator.inbox: once a minute each in the demo),
    # so the time they have to acknowledge an order cannot shrink below that with the speed.
    out["order_ack_minutes"] = max(float(doc.get("order_ack_minutes", 5)) / speed, ORDER_ACK_FLOOR_MINUTES)
    for path in POLICY_DURATIONS:
        holder: dict[str, Any] = out
        for key in path[:-1]:
            holder = holder[key]
        value = holder.get(path[-1])
        if isinstance(value, dict):
            holder[path[-1]] = {k: v / speed for k, v in value.items()}
        elif isinstance(value, int | float):
            holder[path[-1]] = value / speed
    return out
