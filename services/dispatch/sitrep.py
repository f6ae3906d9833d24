"""Situation reports (SPEC section 10): `GET /v1/reports/sitrep?at=&by=&format=json|csv|pdf`.

The regional picture at a moment, scoped by the token: per region (kecamatan, kabupaten or
provinsi) the TPS by state, the incidents by category, severity and status, those resolved on site,
the median time to acknowledge and to resolve (overall and per category), personnel coverage and
escorts in transit; and the open escalations with their age.

Incidents are as of `at`: those received by then, with the status their timeline gave them then.
The TPS's live state (phase, silence, check-ins, escorts) is kept only as it is now, so TPS states
other than open/escalated, coverage and escorts are as of now (the report says so).

The PDF is drawn with fpdf2: pure Python, maintained, no system libraries or fonts to install
(docs/spec-notes.md#situation-reports-spec-10).
"""

from __future__ import annotations

import asyncio
import csv
import io
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Response
from sqlmodel import Session, col, select

from services.dispatch import domain
from services.dispatch.rules.base import CHECKIN_FRESH
from services.dispatch.service import Dispatch
from services.dispatch.store import coverage
from services.dispatch.views import Since, Viewer, in_scope
from siaga.auth import Scope
from siaga.clock import as_utc, iso
from siaga.events import Severity
from siaga.models import Incident, TimelineEntry, Tps
from siaga.openapi import error_responses
from siaga.runtime import Context

LEVELS = ("provinsi", "kabupaten", "kecamatan")
STATUSES = ("open", "escalated", "acknowledged", "resolved")
TPS_STATES = ("normal", "open", "escalated", "silent", "closed")
WIB = timedelta(hours=7)


@dataclass
class _Region:
    key: tuple[str, ...]
    tps: Counter[str] = field(default_factory=Counter)
    assigned: int = 0
    checked_in: int = 0
    escorts: int = 0
    category: Counter[str] = field(default_factory=Counter)
    severity: Counter[str] = field(default_factory=Counter)
    status: Counter[str] = field(default_factory=Counter)
    on_site: int = 0
    ack_s: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    resolve_s: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def document(self, by: str) -> dict[str, Any]:
        names = dict(zip(LEVELS[: LEVELS.index(by) + 1], self.key, strict=True))
        everyone_ack = [s for v in self.ack_s.values() for s in v]
        everyone_res = [s for v in self.resolve_s.values() for s in v]
        total_tps = sum(self.tps.values())
        return {
            **names,
            "tps": {"total": total_tps, "by_state": {s: self.tps[s] for s in TPS_STATES}},
            "incidents": {
                "total": sum(self.status.values()),
                "by_category": {c: n for c, n in sorted(self.category.items())},
                "by_severity": {s.value: self.severity[s.value] for s in Severity},
                "by_status": {s: self.status[s] for s in STATUSES},
            },
            "resolved_on_site": self.on_site,
            "median_ack_s": _median(everyone_ack),
            "median_resolve_s": _median(everyone_res),
            "categories": {
                c: {
                    "incidents": self.category[c],
                    "median_ack_s": _median(self.ack_s.get(c, [])),
                    "median_resolve_s": _median(self.resolve_s.get(c, [])),
                }
                for c in sorted(self.category)
            },
            "coverage": {
                "assigned": self.assigned,
                "checked_in": self.checked_in,
                "share": round(min(self.checked_in, self.assigned) / self.assigned, 3) if self.assigned else None,
            },
            "escorts_in_transit": self.escorts,
        }


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


@dataclass
class _Then:
    """An incident as its timeline had it at the report's moment."""

    status: str
    level: int
    acknowledged_at: datetime | None


def _as_of(entries: list[tuple[datetime, str, dict[str, Any]]]) -> _Then:
    status, level, acked = "open", 0, None
    for at, action, detail in entries:  # in timeline order, up to the moment
        if action == "escalated":
            level = max(level, int(detail.get("to", level)))
            status = "escalated" if status != "resolved" else status
        elif action == "acknowledged":
            status = "acknowledged" if status != "resolved" else status
            acked = acked or at
        elif action == "resolved":
            status = "resolved"
    return _Then(status, level, acked)


def build_sitrep(ctx: Context, *, at: datetime | None, by: str, scope: Scope | None) -> dict[str, Any]:
    """The sitrep as JSON-ready data (the API's, and the notifier's scheduled ones)."""
    now = ctx.clock.now()
    moment = min(at or now, now)
    depth = LEVELS.index(by) + 1
    regions: dict[tuple[str, ...], _Region] = {}

    def region(p: str, k: str, c: str) -> _Region:
        key = (p, k, c)[:depth]
        found = regions.get(key)
        if found is None:
            found = regions[key] = _Region(key)
        return found

    with Session(ctx.engine) as s:
        tq = select(Tps)
        iq = select(Incident).where(col(Incident.received_at) <= moment)
        if scope is not None:
            tq, iq = tq.where(in_scope(Tps, scope)), iq.where(in_scope(Incident, scope))
        tps_rows = [domain.Tps.from_row(t) for t in s.exec(tq).all()]
        incidents = [domain.Incident.from_row(i) for i in s.exec(iq).all()]
        history: dict[str, list[tuple[datetime, str, dict[str, Any]]]] = defaultdict(list)
        ids = [i.id for i in incidents]
        for n in range(0, len(ids), 5000):
            rows = s.exec(
                select(TimelineEntry.incident_id, TimelineEntry.at, TimelineEntry.action, TimelineEntry.detail)
                .where(col(TimelineEntry.incident_id).in_(ids[n : n + 5000]))
                .where(col(TimelineEntry.action).in_(("escalated", "acknowledged", "resolved")))
                .where(col(TimelineEntry.at) <= moment)
                .order_by(col(TimelineEntry.incident_id), col(TimelineEntry.seq))
            ).all()
            for iid, when, action, detail in rows:
                history[iid].append((as_utc(when), action, dict(detail or {})))

    open_at: dict[str, list[tuple[int, str]]] = defaultdict(list)  # tps id -> (level, status) still open
    escalations: list[dict[str, Any]] = []
    for inc in incidents:
        then = _as_of(history.get(inc.id, []))
        r = region(inc.provinsi, inc.kabupaten, inc.kecamatan)
        r.category[inc.category] += 1
        r.severity[inc.severity] += 1
        r.status[then.status] += 1
        received = as_utc(inc.received_at)
        if then.acknowledged_at is not None:
            r.ack_s[inc.category].append((then.acknowledged_at - received).total_seconds())
        if then.status == "resolved":
            if inc.resolved_at is not None:
                r.resolve_s[inc.category].append((as_utc(inc.resolved_at) - received).total_seconds())
            if then.level == 0:
                r.on_site += 1
        elif inc.tps_id is not None:
            open_at[inc.tps_id].append((then.level, then.status))
        if then.status in ("escalated", "acknowledged") and then.level > 0:
            escalations.append(
                {
                    "id": inc.id,
                    "code": inc.code,
                    "tps_id": inc.tps_id,
                    "provinsi": inc.provinsi,
                    "kabupaten": inc.kabupaten,
                    "kecamatan": inc.kecamatan,
                    "category": inc.category,
                    "severity": inc.severity,
                    "level": then.level,
                    "status": then.status,
                    "opened_at": iso(as_utc(inc.opened_at)),
                    "age_s": round((moment - received).total_seconds()),
                }
            )
    for t in tps_rows:
        r = region(t.provinsi, t.kabupaten, t.kecamatan)
        here = open_at.get(t.tps_id, [])
        if t.phase == "closed" and not here:
            state = "closed"
        elif t.silent:
            state = "silent"
        elif any(level > 0 and status != "acknowledged" for level, status in here):
            state = "escalated"
        else:
            state = "open" if here else "normal"
        r.tps[state] += 1
        r.assigned += t.assigned
        r.checked_in += coverage(t, now, CHECKIN_FRESH)
        r.escorts += sum(1 for e in t.escorts or () if e.get("state") == "in_transit")

    docs = [regions[k].document(by) for k in sorted(regions)]
    total = _Region(("",) * depth)
    for reg in regions.values():
        for name in ("tps", "category", "severity", "status"):
            getattr(total, name).update(getattr(reg, name))
        total.assigned += reg.assigned
        total.checked_in += reg.checked_in
        total.escorts += reg.escorts
        total.on_site += reg.on_site
        for c, v in reg.ack_s.items():
            total.ack_s[c].extend(v)
        for c, v in reg.resolve_s.items():
            total.resolve_s[c].extend(v)
    totals = {k: v for k, v in total.document(by).items() if k not in LEVELS}
    return {
        "at": iso(moment),
        "generated_at": iso(now),
        "by": by,
        "scope": scope.document() if scope else None,
        "live_state_as_of": iso(now),
        "totals": totals,
        "regions": docs,
        "open_escalations": sorted(escalations, key=lambda e: -e["age_s"]),
    }


CSV_COLUMNS = (
    "category",
    "tps_total",
    *(f"tps_{s}" for s in TPS_STATES),
    "incidents",
    *(f"severity_{s.value}" for s in Severity),
    *(f"status_{s}" for s in STATUSES),
    "resolved_on_site",
    "median_ack_s",
    "median_resolve_s",
    "assigned",
    "checked_in",
    "coverage_share",
    "escorts_in_transit",
)


def sitrep_csv(doc: dict[str, Any]) -> str:
    """One row a region (category `(all)`), then one a region and category with its counts and times."""
    by = doc["by"]
    names = list(LEVELS[: LEVELS.index(by) + 1])
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*names, *CSV_COLUMNS])
    for r in doc["regions"]:
        where = [r[n] for n in names]
        inc, tps, cov = r["incidents"], r["tps"], r["coverage"]
        w.writerow(
            [
                *where,
                "(all)",
                tps["total"],
                *(tps["by_state"][s] for s in TPS_STATES),
                inc["total"],
                *(inc["by_severity"][s.value] for s in Severity),
                *(inc["by_status"][s] for s in STATUSES),
                r["resolved_on_site"],
                _cell(r["median_ack_s"]),
                _cell(r["median_resolve_s"]),
                cov["assigned"],
                cov["checked_in"],
                _cell(cov["share"]),
                r["escorts_in_transit"],
            ]
        )
        for c, figures in r["categories"].items():
            row = [*where, c] + [""] * (len(CSV_COLUMNS) - 1)
            row[len(names) + CSV_COLUMNS.index("incidents")] = figures["incidents"]
            row[len(names) + CSV_COLUMNS.index("median_ack_s")] = _cell(figures["median_ack_s"])
            row[len(names) + CSV_COLUMNS.index("median_resolve_s")] = _cell(figures["median_resolve_s"])
            w.writerow(row)
    return buf.getvalue()


def _cell(v: float | None) -> str:
    return "" if v is None else f"{v:g}"


def _latin1(text: str) -> str:
    """fpdf2's core fonts are Latin-1: anything else becomes '?' rather than an error."""
    return text.encode("latin-1", "replace").decode("latin-1")


def _minutes(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 60:.0f} min"


def sitrep_pdf(doc: dict[str, Any]) -> bytes:
    """The sitrep on A4 landscape: the totals, a table of regions, and the open escalations."""
    from fpdf import FPDF

    by = doc["by"]
    pdf = FPDF(orientation="L", format="A4")
    pdf.set_auto_page_break(auto=True, margin=12)
    pdf.set_title("Siaga sitrep")
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 15)
    at_wib = datetime.fromisoformat(doc["at"]) + WIB
    pdf.cell(0, 9, _latin1(f"Laporan situasi (sitrep) - {at_wib:%d-%m-%Y %H:%M} WIB"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 9)
    scope = doc["scope"]
    where = "semua wilayah" if not scope else "; ".join(f"{k}: {', '.join(v)}" for k, v in scope.items() if v)
    t = doc["totals"]
    lines = [
        f"Wilayah: {where}. Per {by}. Insiden per {doc['at']}; status TPS, personel dan pengawalan per "
        f"{doc['live_state_as_of']}.",
        f"TPS {t['tps']['total']} ({', '.join(f'{k} {v}' for k, v in t['tps']['by_state'].items())}). "
        f"Insiden {t['incidents']['total']} ({', '.join(f'{k} {v}' for k, v in t['incidents']['by_status'].items())}); "
        f"selesai di lokasi {t['resolved_on_site']}; median diterima {_minutes(t['median_ack_s'])}, "
        f"selesai {_minutes(t['median_resolve_s'])}. Personel hadir {t['coverage']['checked_in']} dari "
        f"{t['coverage']['assigned']}; pengawalan di jalan {t['escorts_in_transit']}.",
    ]
    for line in lines:
        pdf.multi_cell(0, 5, _latin1(line), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    head = [by.capitalize(), "TPS", "eskalasi", "senyap", "insiden", "kritis", "tinggi", "terbuka", "selesai"]
    head += ["di lokasi", "median terima", "median selesai", "hadir/tugas", "kawal"]
    widths = [52, 14, 17, 15, 16, 14, 14, 17, 16, 17, 24, 24, 22, 13]
    pdf.set_font("Helvetica", "B", 8)
    for h, wd in zip(head, widths, strict=True):
        pdf.cell(wd, 6, _latin1(h), border=1)
    pdf.ln()
    pdf.set_font("Helvetica", "", 8)
    for r in doc["regions"]:
        inc, tps = r["incidents"], r["tps"]
        unresolved = sum(v for k, v in inc["by_status"].items() if k != "resolved")
        cells = [
            r[by] or "(tanpa wilayah)",
            tps["total"],
            tps["by_state"]["escalated"],
            tps["by_state"]["silent"],
            inc["total"],
            inc["by_severity"]["critical"],
            inc["by_severity"]["high"],
            unresolved,
            inc["by_status"]["resolved"],
            r["resolved_on_site"],
            _minutes(r["median_ack_s"]),
            _minutes(r["median_resolve_s"]),
            f"{r['coverage']['checked_in']}/{r['coverage']['assigned']}",
            r["escorts_in_transit"],
        ]
        for v, wd in zip(cells, widths, strict=True):
            pdf.cell(wd, 5, _latin1(str(v))[:34], border=1)
        pdf.ln()
    pdf.ln(3)
    pdf.set_font("Helvetica", "B", 11)
    pdf.cell(0, 7, _latin1(f"Eskalasi terbuka ({len(doc['open_escalations'])})"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 8)
    for e in doc["open_escalations"][:200]:
        line = (
            f"{e['code'] or e['id']}  {e['kecamatan']} ({e['kabupaten']})  {e['tps_id'] or 'area'}  {e['category']}/"
            f"{e['severity']}  level {e['level']}  {e['status']}  umur {_minutes(e['age_s'])}"
        )
        pdf.cell(0, 5, _latin1(line), new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def build_router(dispatch: Dispatch) -> APIRouter:
    router = APIRouter(tags=["reports"], responses=error_responses(401, 403, 422))

    @router.get(
        "/v1/reports/sitrep",
        summary="A situation report: the regional picture at a moment, scoped by the token",
        description="JSON (default), CSV (a row per region, then per region and category) or PDF. Incidents are "
        "as of `at` (default now); the TPS's live state (phase, silence, check-ins, escorts) as of now.",
        response_model=None,
        responses={
            200: {
                "description": "The sitrep.",
                "content": {
                    "application/json": {"schema": {"type": "object"}},
                    "text/csv": {"schema": {"type": "string"}},
                    "application/pdf": {"schema": {"type": "string", "format": "binary"}},
                },
            }
        },
    )
    async def sitrep(
        who: Viewer,
        at: Annotated[Since | None, Query(description="The moment (RFC 3339); default now, and never later")] = None,
        by: Annotated[str, Query(pattern="^(provinsi|kabupaten|kecamatan)$", description="Region level")] = "kecamatan",
        format: Annotated[str, Query(pattern="^(json|csv|pdf)$", description="json, csv or pdf")] = "json",
    ) -> Response:
        doc = await asyncio.to_thread(build_sitrep, dispatch.ctx, at=at, by=by, scope=who.scope)
        stamp = doc["at"].replace(":", "").replace("-", "")[:13]
        if format == "csv":
            body = await asyncio.to_thread(sitrep_csv, doc)
            headers = {"Content-Disposition": f'attachment; filename="sitrep-{stamp}.csv"'}
            return Response(body, media_type="text/csv; charset=utf-8", headers=headers)
        if format == "pdf":
            pdf = await asyncio.to_thread(sitrep_pdf, doc)
            headers = {"Content-Disposition": f'attachment; filename="sitrep-{stamp}.pdf"'}
            return Response(pdf, media_type="application/pdf", headers=headers)
        return Response(content=orjson.dumps(doc), media_type="application/json")

    return router
