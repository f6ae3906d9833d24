"""The simulated field: which TPS, which devices (tokens) and which people the simulator plays."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from siaga.demo.registry import PersonnelRow, TpsRow, demo_personnel, demo_tps
from siaga.simulator.plan import SimDevice

# Where an unknown TPS is placed: the middle of Kabupaten Serang.
_FALLBACK_LAT, _FALLBACK_LON = -6.12, 106.15


class Credential(Protocol):
    """A device token with the people who check in through it (siaga.demo.DeviceToken is one)."""

    @property
    def token(self) -> str: ...

    @property
    def personnel_ids(self) -> tuple[str, ...]: ...


TokensByTps = Mapping[str, "str | Sequence[str | Credential]"]


@dataclass
class Fleet:
    """The TPS to simulate (registry order), their devices and their personnel."""

    tps: list[TpsRow]
    devices: list[SimDevice]
    personnel: list[PersonnelRow]


def build_fleet(
    tokens_by_tps: TokensByTps,
    *,
    tps: Sequence[TpsRow] | None = None,
    personnel: Sequence[PersonnelRow] | None = None,
) -> Fleet:
    """Devices from the tokens per TPS (a token listed for several TPS is one device bound to all).

    TPS details and people come from the given registry and roster, the Serang demo by default;
    a TPS neither knows gets a placeholder entry and two placeholder Linmas, so any deployment's
    tokens can be driven.
    """
    registry = {t.tps_id: t for t in (demo_tps() if tps is None else tps)}
    roster = list(demo_personnel() if personnel is None else personnel)
    bound: dict[str, tuple[list[str], tuple[str, ...]]] = {}
    for tps_id, creds in tokens_by_tps.items():
        for cred in [creds] if isinstance(creds, str) else list(creds):
            token = cred if isinstance(cred, str) else cred.token
            people = () if isinstance(cred, str) else tuple(cred.personnel_ids)
            bound.setdefault(token, ([], people))[0].append(tps_id)
    devices = [
        SimDevice(index=i, token=token, tps_ids=tuple(ids), personnel_ids=people)
        for i, (token, (ids, people)) in enumerate(bound.items())
    ]
    wanted = set(tokens_by_tps)
    rows = [t for t in registry.values() if t.tps_id in wanted]
    known = {t.tps_id for t in rows}
    rows += [
        TpsRow(tps_id=t, name=t, kecamatan="-", desa="", lat=_FALLBACK_LAT, lon=_FALLBACK_LON, rawan=())
        for t in tokens_by_tps
        if t not in known
    ]
    people_rows = [p for p in roster if wanted & set(p.tps_ids)]
    staffed = {t for p in people_rows for t in p.tps_ids}
    people_rows += [
        PersonnelRow(f"SIM-{t.tps_id}-{n}", f"Linmas {n}", "Linmas", "linmas", (t.tps_id,))
        for t in rows
        if t.tps_id not in staffed
        for n in (1, 2)
    ]
    return Fleet(tps=rows, devices=devices, personnel=people_rows)
