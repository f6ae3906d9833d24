"""Alert messages from the template files in templates/ (id.yaml, en.yaml).

A message is built once per recipient as labelled fields, then shaped for its channel: plain
text (webhook), Telegram HTML, Slack blocks, WhatsApp template parameters.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict

from siaga.clock import as_utc
from siaga.contracts import AlertIntent, Audience

TEMPLATES = Path(__file__).with_name("templates")
LANGUAGES = ("id", "en")
SMS_MAX = 160  # one SMS, so it arrives whole on any phone
DESCRIPTION_MAX = 500  # a message is read on a phone; the dashboard link has the rest
WhatsAppField = Literal[
    "place",
    "tps",
    "kecamatan",
    "category",
    "severity",
    "level",
    "happened",
    "description",
    "facts",
    "open_for",
    "reminder",
    "link",
    "title",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Titles(_Section):
    police: str
    stakeholder: str
    reminder: str


class Places(_Section):
    tps: str
    area: str


class FieldLabels(_Section):
    reminder: str
    tps: str
    kecamatan: str
    category: str
    severity: str
    level: str
    status: str
    code: str
    reports: str
    description: str
    facts: str
    open_for: str
    link: str


class Labels(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    category: dict[str, str]
    severity: dict[str, str]
    level: dict[int, str]
    stakeholder: dict[str, str]
    status: dict[str, str]
    fact: dict[str, str]


class Durations(_Section):
    just_now: str
    minutes: str
    hours: str
    days: str


class ActionTexts(_Section):
    acknowledge: str
    resolve: str
    acknowledged: str
    resolved: str
    resolution: str
    refused: str
    not_found: str


class MessageTemplates(_Section):
    """One language's template file, validated when loaded."""

    language: str
    whatsapp_language: str
    title: Titles
    place: Places
    fields: FieldLabels
    code: str  # the short code line: "{code}" and how to answer with it by SMS
    reminder: str
    whatsapp_parameters: list[WhatsAppField]
    labels: Labels
    duration: Durations
    actions: ActionTexts


@cache
def load_templates(language: str) -> MessageTemplates:
    """The validated templates of a language (`id` or `en`); raises ValueError for anything else."""
    if language not in LANGUAGES:
        raise ValueError(f"no alert templates for language {language!r}; use one of {', '.join(LANGUAGES)}")
    doc = yaml.safe_load((TEMPLATES / f"{language}.yaml").read_text(encoding="utf-8"))
    return MessageTemplates.model_validate(doc)


@dataclass(frozen=True)
class MessageField:
    name: str
    label: str
    value: str


@dataclass(frozen=True)
class Message:
    """One alert, rendered for one recipient's language."""

    title: str
    fields: tuple[MessageField, ...]
    link: str
    language: str
    whatsapp_values: tuple[str, ...]
    sms: str = ""  # a message's own SMS text (a sitrep's); empty: the title and the short code

    def plain(self) -> str:
        """Plain text: the title, then one `label: value` line per field."""
        return "\n".join([self.title, *(f"{f.label}: {f.value}" for f in self.fields)])

    def sms_text(self, limit: int = SMS_MAX) -> str:
        """One SMS: the title and the short code's line (what a reply names), cut to `limit`."""
        if self.sms:
            return self.sms
        code = next((f"{f.label}: {f.value}" for f in self.fields if f.name == "code"), "")
        text = f"{self.title}. {code}" if code else self.title
        return text if len(text) <= limit else text[: limit - 1] + "…"

    def telegram_html(self) -> str:
        """Telegram's HTML parse mode: a bold title; values escaped, as they come from the field."""
        lines = [f"<b>{html.escape(self.title)}</b>"]
        lines += [f"<b>{html.escape(f.label)}:</b> {html.escape(f.value)}" for f in self.fields]
        return "\n".join(lines)

    def slack_blocks(self) -> list[dict[str, Any]]:
        """Block Kit: a header, the fields as mrkdwn, and the link."""
        body = "\n".join(
            f"*{_slack_escape(f.label)}:* {_slack_escape(f.value)}" for f in self.fields if f.name != "link"
        )
        blocks: list[dict[str, Any]] = [
            {"type": "header", "text": {"type": "plain_text", "text": self.title[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": body[:3000]}},
        ]
        if self.link:
            link = {"type": "mrkdwn", "text": f"<{self.link}|{_slack_escape(self.link)}>"}
            blocks.append({"type": "section", "text": link})
        return blocks


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def whatsapp_safe(text: str) -> str:
    # The Cloud API refuses parameters with new lines, tabs or more than four spaces in a row.
    return " ".join(text.split()) or "-"


def open_for(t: MessageTemplates, opened_at: datetime | None, now: datetime) -> str:
    """How long the incident has been open, in words."""
    if opened_at is None:
        return ""
    minutes = max(0, int((as_utc(now) - as_utc(opened_at)).total_seconds() // 60))
    if minutes < 1:
        return t.duration.just_now
    if minutes < 60:
        return t.duration.minutes.format(minutes=minutes)
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return t.duration.hours.format(hours=hours, minutes=minutes)
    days, hours = divmod(hours, 24)
    return t.duration.days.format(days=days, hours=hours)


def facts_text(t: MessageTemplates, facts: dict[str, Any]) -> str:
    """`label: value; ...` for the facts that say something (no None, false or zero)."""
    parts = []
    for key, value in facts.items():
        if value is None or value is False or value == 0 or value in ("", [], {}):
            continue
        label = t.labels.fact.get(key, key.replace("_", " "))
        if value is True:
            parts.append(label)
        elif isinstance(value, list):
            parts.append(f"{label}: {', '.join(str(v) for v in value)}")
        else:
            parts.append(f"{label}: {value}")
    return "; ".join(parts)


def incident_link(public_url: str, incident_id: str) -> str:
    return f"{public_url.rstrip('/')}/#incident/{incident_id}"


def render(intent: AlertIntent, *, language: str, public_url: str, now: datetime) -> Message:
    """The message for one alert intent in one language."""
    t = load_templates(language)
    inc = intent.incident
    labels = t.labels
    category = inc.category.value
    severity = inc.severity.value
    kecamatan = inc.kecamatan
    tps_id = inc.tps_id
    level = intent.message_level
    values: dict[str, str] = {
        "category": labels.category.get(category, category),
        "severity": labels.severity.get(severity, severity),
        "level": labels.level.get(level, str(level)),
        "kecamatan": kecamatan,
        "stakeholder": labels.stakeholder.get(intent.audience_key, intent.audience_key),
    }
    if tps_id:
        tps = t.place.tps.format(tps_name=inc.tps_name or tps_id, tps_id=tps_id)
        values["place"] = tps
    else:
        tps = ""
        values["place"] = t.place.area.format(kecamatan=kecamatan)
    title = (t.title.stakeholder if intent.audience is Audience.STAKEHOLDER else t.title.police).format(**values)
    if intent.reminder:
        title = t.title.reminder.format(reminder=intent.reminder) + title
    description = " ".join(inc.description.split())
    if len(description) > DESCRIPTION_MAX:
        description = description[: DESCRIPTION_MAX - 1] + "…"
    facts = facts_text(t, inc.facts)
    status = inc.status.value
    link = incident_link(public_url, intent.incident_id)
    reports = inc.reports
    line_values = {
        "reminder": t.reminder.format(reminder=intent.reminder) if intent.reminder else "",
        "tps": tps,
        "kecamatan": kecamatan,
        "category": values["category"],
        "severity": values["severity"],
        "level": values["level"],
        "status": labels.status.get(status, status),
        "code": t.code.format(code=inc.code) if inc.code else "",  # what an SMS reply names
        "reports": str(reports) if reports > 1 else "",
        "description": description,
        "facts": facts,
        "open_for": open_for(t, inc.opened_at, now),
        "link": link,
    }
    fields = tuple(
        MessageField(name, label, line_values[name])
        for name, label in t.fields.model_dump().items()
        if line_values.get(name)
    )
    happened = description + (f" ({facts})" if facts and description else facts)
    if intent.reminder:
        happened = f"{t.fields.reminder} {line_values['reminder']}. {happened}"
    wa = {**line_values, "place": values["place"], "happened": happened, "title": title}
    whatsapp_values = tuple(whatsapp_safe(wa[name]) for name in t.whatsapp_parameters)
    return Message(title=title, fields=fields, link=link, language=t.language, whatsapp_values=whatsapp_values)
