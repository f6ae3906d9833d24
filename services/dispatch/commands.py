"""Operator actions as commands: what the partition owner does with each (SPEC section 3, siaga.commands).

The HTTP API, Telegram's buttons and the notifier send commands; the owner of the incident's
kecamatan applies them, in order with that kecamatan's field events, and records an `Outcome`
that the sender waits for. A command's id makes a redelivered copy a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.dispatch.engine import Engine, NotAllowed, UnknownTps
from services.dispatch.rules.orders import UnknownPerson
from siaga.contracts import (
    Acknowledge,
    AcknowledgeOrder,
    AddNote,
    Assign,
    Classify,
    CommandBase,
    Escalate,
    RecordDelivery,
    RefreshTps,
    ReplyOk,
    ReportFromCommandPost,
    Resolve,
)


@dataclass(frozen=True)
class Outcome:
    """What the owner made of a command: the HTTP status it answers (200, 404, 409), and why.

    For a command-post report, `incident_id` is the incident it opened or joined; for an
    assignment, `detail` is the new order's id.
    """

    status: int
    incident_id: str | None = None
    detail: str = ""


def apply_command(engine: Engine, command: CommandBase) -> Outcome:
    """Apply one command to the engine's state; the engine's refusals become outcomes, not errors."""
    incident_id = getattr(command, "incident_id", None)
    actor = command.actor
    try:
        match command:
            case Acknowledge():
                engine.acknowledge(command.incident_id, actor=actor)
            case Escalate():
                engine.escalate(command.incident_id, actor=actor, note=command.note)
            case Resolve():
                engine.resolve(command.incident_id, actor=actor, resolution=command.resolution)
            case AddNote():
                engine.note(command.incident_id, actor=actor, text=command.text)
            case RecordDelivery():
                engine.record_delivery(
                    command.incident_id,
                    key=command.key,
                    channel=command.channel,
                    recipient=command.recipient,
                    outcome=command.outcome.value,
                    detail=command.detail,
                )
            case Classify():
                engine.classify(
                    command.incident_id,
                    actor=actor,
                    category=command.category,
                    severity=command.severity,
                    reason=command.reason,
                )
            case ReportFromCommandPost():
                incident_id = engine.report_from_command_post(command).id
            case RefreshTps():
                engine.refresh_tps(command.tps_ids)
            case Assign():
                order = engine.assign(
                    command.incident_id,
                    actor=actor,
                    personnel_id=command.personnel_id,
                    note=command.note,
                    eta_minutes=command.eta_minutes,
                )
                return Outcome(200, incident_id, order["order_id"])
            case ReplyOk():
                done = engine.reply_ok(
                    command.incident_id,
                    personnel_id=command.personnel_id,
                    phone=command.reply_to.phone,
                    actor=actor,
                )
                return Outcome(200, incident_id, done)
            case AcknowledgeOrder():
                if engine.store.incident(command.incident_id) is None:
                    raise KeyError(command.incident_id)
                try:
                    engine.acknowledge_order(
                        command.incident_id, order_id=command.order_id, actor=actor, note=command.note
                    )
                except KeyError:
                    return Outcome(404, incident_id, f"no order {command.order_id!r} on incident {incident_id!r}")
            case _:
                kind = getattr(command, "kind", type(command).__name__)
                return Outcome(501, incident_id, f"{kind} is not applied by this version of dispatch")
    except UnknownTps as exc:
        return Outcome(404, None, str(exc))
    except UnknownPerson as exc:
        return Outcome(404, incident_id, str(exc))
    except KeyError:
        return Outcome(404, incident_id, f"no incident {incident_id!r}")
    except NotAllowed as exc:
        return Outcome(409, incident_id, str(exc))
    return Outcome(200, incident_id)


def confirm(engine: Engine, command: CommandBase, outcome: Outcome) -> None:
    """Tell the SMS or WhatsApp sender of a command (`reply_to`) what its outcome was (SPEC section 11)."""
    to = command.reply_to
    if to is None:
        return
    inc = engine.store.incident(outcome.incident_id) if outcome.incident_id else None
    about = command.command_id
    if inc is None:
        engine.reply(to, about, "refused", code="-", text=outcome.detail or f"status {outcome.status}")
        return
    if outcome.status == 200:
        match command:
            case Resolve():
                engine.reply(to, about, "resolved", inc, text=inc.resolution or command.resolution)
            case Escalate():
                engine.reply(to, about, "escalated", inc)
            case ReplyOk():
                engine.reply(to, about, "order_acked" if outcome.detail == "order" else "incident_acked", inc)
            case _:
                engine.reply(to, about, "refused", inc, text=f"{getattr(command, 'kind', '?')} is not answered by SMS")
        return
    if inc.status == "resolved":
        engine.reply(to, about, "already_resolved", inc)
    elif isinstance(command, ReplyOk) and outcome.status == 409:
        engine.reply(to, about, "not_yours_to_ack", inc)
    else:
        engine.reply(to, about, "refused", inc, text=outcome.detail)
