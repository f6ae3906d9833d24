"""Scheduled situation reports (SPEC section 10): when they are due, and the short message they send.

The policy's `alerts.sitrep_times` (local time, WIB; default 10:00, 13:00, 17:00 and 21:00) name the
moments. At each, the notifier publishes a `SitrepDue` on siaga.alerts, and the recipients marked
`sitrep: true` get a short report of that moment: TPS by state, open and escalated incidents, the
resolved and those resolved on site, the median times to acknowledge and resolve, coverage, and the
oldest open escalations, with a link to the full PDF. The full report is services/dispatch/sitrep.py.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

from services.dispatch.notifier.messages import Message, MessageField, load_templates, whatsapp_safe

WIB = timezone(timedelta(hours=7), "WIB")
# A notifier that was down at the due moment still sends it when it is back within this long; an
# older one is skipped (a 10:00 report at 11:30 would only mislead).
GRACE = timedelta(minutes=30)
SMS_LIMIT = 320  # two SMS segments

WORDS: dict[str, dict[str, str]] = {
    "id": {
        "title": "SITREP {time} WIB {date} · {where}",
        "everywhere": "semua wilayah",
        "tps": "TPS",
        "incidents": "Insiden terbuka",
        "incidents_value": "{open} (eskalasi {escalated}) dari {total}",
        "resolved": "Selesai",
        "resolved_value": "{resolved} (di tempat {on_site})",
        "times": "Median tanggap / selesai",
        "coverage": "Cakupan personel",
        "escorts": "Kotak suara dalam perjalanan",
        "oldest": "Eskalasi terlama",
        "link": "Laporan lengkap",
        "none": "tidak ada",
        "minutes": "{n} mnt",
        "normal": "normal",
        "open": "terbuka",
        "escalated": "eskalasi",
        "silent": "senyap",
        "closed": "tutup",
    },
    "en": {
        "title": "SITREP {time} WIB {date} · {where}",
        "everywhere": "all regions",
        "tps": "TPS",
        "incidents": "Open incidents",
        "incidents_value": "{open} (escalated {escalated}) of {total}",
        "resolved": "Resolved",
        "resolved_value": "{resolved} (on site {on_site})",
        "times": "Median to acknowledge / resolve",
        "coverage": "Personnel coverage",
        "escorts": "Ballot boxes in transit",
        "oldest": "Oldest escalations",
        "link": "Full report",
        "none": "none",
        "minutes": "{n} min",
        "normal": "normal",
        "open": "open",
        "escalated": "escalated",
        "silent": "silent",
        "closed": "closed",
    },
}


def due_moments(times: list[str], after: datetime, until: datetime) -> list[datetime]:
    """The sitrep moments in (after, until], oldest first, for times of day in WIB."""
    out: list[datetime] = []
    day = after.astimezone(WIB).date()
    last = until.astimezone(WIB).date()
    while day <= last:
        for t in times:
            hour, minute = (int(x) for x in t.split(":"))
            moment = datetime(day.year, day.month, day.day, hour, minute, tzinfo=WIB)
            if after < moment <= until:
                out.append(moment)
        day += timedelta(days=1)
    return sorted(out)


def sitrep_id(moment: datetime) -> str:
    """`2024-11-27T10:00+07:00`: the moment in WIB, to the minute (part of every delivery key)."""
    return moment.astimezone(WIB).isoformat(timespec="minutes")


def _minutes(w: dict[str, str], seconds: float | None) -> str:
    return "–" if seconds is None else w["minutes"].format(n=round(seconds / 60))


def sitrep_message(doc: dict[str, Any], *, language: str, public_url: str, where: str | None) -> Message:
    """The short sitrep of a `build_sitrep` document, in one language, for every channel."""
    w = WORDS.get(language, WORDS["id"])
    labels = load_templates(language if language in WORDS else "id").labels
    totals = doc["totals"]
    at = datetime.fromisoformat(doc["at"]).astimezone(WIB)
    title = w["title"].format(time=f"{at:%H:%M}", date=f"{at:%d-%m-%Y}", where=where or w["everywhere"])
    states = totals["tps"]["by_state"]
    shown = [f"{states[s]} {w[s]}" for s in ("normal", "open", "escalated", "silent", "closed") if states.get(s)]
    tps = f"{totals['tps']['total']}" + (f" ({', '.join(shown)})" if shown else "")
    status = totals["incidents"]["by_status"]
    unresolved = status["open"] + status["escalated"] + status["acknowledged"]
    escalations = doc["open_escalations"]
    incidents = w["incidents_value"].format(
        open=unresolved, escalated=len(escalations), total=totals["incidents"]["total"]
    )
    resolved = w["resolved_value"].format(resolved=status["resolved"], on_site=totals["resolved_on_site"])
    times = f"{_minutes(w, totals['median_ack_s'])} / {_minutes(w, totals['median_resolve_s'])}"
    cov = totals["coverage"]
    coverage = "–" if cov["share"] is None else f"{round(100 * cov['share'])}% ({cov['checked_in']}/{cov['assigned']})"
    oldest = "; ".join(
        f"{e['code'] or e['id']} {labels.category.get(e['category'], e['category'])} {e['kecamatan']} "
        + _minutes(w, e["age_s"])
        for e in escalations[:3]
    )
    link = ""
    if public_url:
        link = f"{public_url.rstrip('/')}/v1/reports/sitrep?at={quote(doc['at'])}&by=kabupaten&format=pdf"
    values = [
        ("tps", w["tps"], tps),
        ("incidents", w["incidents"], incidents),
        ("resolved", w["resolved"], resolved),
        ("times", w["times"], times),
        ("coverage", w["coverage"], coverage),
        ("escorts", w["escorts"], str(totals["escorts_in_transit"]) if totals["escorts_in_transit"] else ""),
        ("oldest", w["oldest"], oldest or w["none"]),
        ("link", w["link"], link),
    ]
    fields = tuple(MessageField(name, label, value) for name, label, value in values if value)
    sms = f"{title}. {w['tps']} {tps}. {w['incidents']} {incidents}. {w['oldest']}: {oldest or w['none']}"
    if len(sms) > SMS_LIMIT:
        sms = sms[: SMS_LIMIT - 1] + "…"
    whatsapp = tuple(whatsapp_safe(v) for v in (title, tps, incidents, oldest or w["none"], link or "-"))
    return Message(title=title, fields=fields, link=link, language=language, whatsapp_values=whatsapp, sms=sms)
