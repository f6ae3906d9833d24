"""The notifier: consumes alert intents from siaga.alerts and delivers one message per recipient.

At least once, never a storm: an intent is committed only when every one of its recipients was
sent or dead-lettered; a delivery already recorded as sent is never sent again by us, and a
receiver that dedupes by the Idempotency-Key sees each alert once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random as random_module
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import sqlmodel
from prometheus_client import Counter, Gauge
from pydantic import ValidationError

from services.dispatch.notifier import redact
from services.dispatch.notifier.channels import (
    REPLY_RECIPIENT,
    USER_AGENT,
    Delivery,
    make_channels,
    reply_delivery,
)
from services.dispatch.notifier.delivery import Deliverer, Outcome, Random, Sleep
from services.dispatch.notifier.intent import delivery_key
from services.dispatch.notifier.messages import LANGUAGES, load_templates, render
from services.dispatch.notifier.routing import AlertRouting, Recipient, select
from services.dispatch.notifier.sitreps import GRACE, due_moments, sitrep_id, sitrep_message
from services.dispatch.notifier.store import FINAL, DeliveryStore
from siaga import topics
from siaga.auth import Scope
from siaga.bus import ConsumerLoop, Record, dead_letter_value, publish_dead_letter
from siaga.clock import iso
from siaga.contracts import AlertIntent, FieldReply, SitrepDue, validation_problems
from siaga.models import AlertDelivery, Tps
from siaga.runtime import Context

if TYPE_CHECKING:
    from services.dispatch.notifier import DeliveryRecorder

log = logging.getLogger("siaga.notifier")

GROUP = "siaga-notifier"
MAX_RECORDS = 100

DELIVERIES = Counter(
    "siaga_alert_deliveries_total", "Alert deliveries that reached a final state.", ["channel", "outcome"]
)
ATTEMPTS = Counter("siaga_alert_attempts_total", "HTTP requests made to alert channels.", ["channel", "result"])
REPLIES = Counter(
    "siaga_field_replies_total",
    "Confirmations to SMS and WhatsApp senders that reached a final state.",
    ["channel", "outcome"],
)
SITREPS = Counter("siaga_sitrep_deliveries_total", "Scheduled sitreps that reached a final state.", ["outcome"])
SITREP_CHECK_S = 5.0  # how often the scheduler looks at the clock
BREAKERS_OPEN = Gauge("siaga_alert_breakers_open", "Alert destinations whose circuit breaker is not closed.")


class Notifier:
    """Delivers the alert intents of siaga.alerts to the recipients the routing selects.

    `routing` is called for every intent, so a policy reload takes effect without a restart.
    `sleep` and `random` are injected so the tests wait for nothing and jitter is reproducible.
    """

    def __init__(
        self,
        ctx: Context,
        *,
        routing: Callable[[], AlertRouting],
        recorder: DeliveryRecorder,
        sleep: Sleep = asyncio.sleep,
        random: Random = random_module.random,
        group: str = GROUP,
    ) -> None:
        self.ctx, self.routing, self.recorder, self.group = ctx, routing, recorder, group
        self.sleep, self.random = sleep, random
        self.store = DeliveryStore(ctx.engine)
        self._client: httpx.AsyncClient | None = None
        self._deliverer: Deliverer | None = None
        self._loop: ConsumerLoop | None = None
        self._scheduler: asyncio.Task[None] | None = None
        self._sitreps_checked: datetime | None = None  # the scheduler has published what was due until then

    @property
    def deliverer(self) -> Deliverer:
        if self._deliverer is None:
            raise RuntimeError("the notifier is not started")
        return self._deliverer

    @property
    def handled(self) -> int:
        """Alert intents handled (and committed) since start."""
        return self._loop.handled if self._loop is not None else 0

    async def start(self) -> None:
        """Check the templates and settings, then consume siaga.alerts in the group siaga-notifier."""
        language = self.ctx.settings.language
        if language not in LANGUAGES:
            raise ValueError(f"SIAGA_LANGUAGE={language!r} has no alert templates; use one of {LANGUAGES}")
        for lang in LANGUAGES:
            load_templates(lang)
        self._client = httpx.AsyncClient(follow_redirects=False, headers={"User-Agent": USER_AGENT})
        channels = make_channels(self._client, self.ctx.settings)
        redact.install(s for c in channels.values() for s in c.secrets())
        self._deliverer = Deliverer(channels, clock=self.ctx.clock, sleep=self.sleep, random=self.random)
        source = self.ctx.bus.consumer([topics.ALERTS, topics.REPLIES], self.group)
        self._loop = ConsumerLoop(self.ctx.bus, source, self.handle, name=self.group, max_records=MAX_RECORDS)
        await self._loop.start()
        self._scheduler = asyncio.create_task(self._schedule_sitreps(), name="notifier:sitreps")
        log.info("notifier started (group %s)", self.group)

    async def stop(self) -> None:
        """Stop consuming; an intent being delivered is left uncommitted and comes again to the next one."""
        if self._scheduler is not None:
            self._scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scheduler
            self._scheduler = None
        if self._loop is not None:
            await self._loop.stop()
            self._loop = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def handle(self, records: list[Record]) -> None:
        """The consumer's batch handler: intents of one incident in order, incidents side by side;
        confirmations (siaga.replies) of one number in order, numbers side by side."""
        by_incident: dict[str | None, list[tuple[Record, AlertIntent]]] = {}
        by_phone: dict[str | None, list[tuple[Record, FieldReply]]] = {}
        sitreps: list[tuple[Record, SitrepDue]] = []
        for record in records:
            if record.topic == topics.ALERTS and record.key == "sitrep":
                try:
                    sitreps.append((record, SitrepDue.model_validate_json(record.value)))
                except ValidationError as exc:
                    await self._dead_letter_record(record, f"invalid sitrep: {validation_problems(exc)}")
                continue
            if record.topic == topics.REPLIES:
                try:
                    reply = FieldReply.model_validate_json(record.value)
                except ValidationError as exc:
                    await self._dead_letter_record(record, f"invalid reply: {validation_problems(exc)}")
                    continue
                by_phone.setdefault(record.key, []).append((record, reply))
                continue
            try:
                intent = AlertIntent.model_validate_json(record.value)
            except ValidationError as exc:
                await self._dead_letter_record(record, f"invalid alert intent: {validation_problems(exc)}")
                continue
            by_incident.setdefault(record.key, []).append((record, intent))

        async def in_order(items: list[tuple[Record, AlertIntent]]) -> None:
            for record, intent in items:
                await self.notify(intent, record=record)

        async def replies_in_order(items: list[tuple[Record, FieldReply]]) -> None:
            for record, reply in items:
                await self.send_reply(reply, record=record)

        async def sitreps_in_order() -> None:
            for record, due in sitreps:
                await self.send_sitrep(due, record=record)

        async with asyncio.TaskGroup() as group:
            if sitreps:
                group.create_task(sitreps_in_order())
            for items in by_incident.values():
                group.create_task(in_order(items))
            for replies in by_phone.values():
                group.create_task(replies_in_order(replies))

    async def send_reply(self, reply: FieldReply, *, record: Record | None = None) -> Outcome | None:
        """Send one confirmation to the sender of an SMS or WhatsApp message, once (None: sent before).

        Retries, rate limits and the breaker are the alerts' own; one that fails for good goes to
        the dead-letter. The sender's number is never logged."""
        delivery = reply_delivery(reply)
        now = self.ctx.clock.now()
        row = await self.store.claim(
            AlertDelivery(
                key=delivery.key,
                incident_id=reply.incident_id or "",
                audience="reply",
                channel=reply.to.channel,
                recipient=REPLY_RECIPIENT,
                status="pending",
                created_at=now,
                updated_at=now,
            )
        )
        if row.status in FINAL:
            log.info("reply %s: already %s, not sent again", delivery.key, row.status)
            return None

        async def attempted(attempt: int, error: str | None) -> None:
            ATTEMPTS.labels(reply.to.channel, "ok" if error is None else "error").inc()
            await self.store.attempted(delivery.key, error=error, now=self.ctx.clock.now())

        outcome = await self.deliverer.deliver(delivery, self.routing(), on_attempt=attempted)
        REPLIES.labels(reply.to.channel, "sent" if outcome.sent else "failed").inc()
        if outcome.sent:
            log.info("reply %s sent by %s (attempt %d)", delivery.key, reply.to.channel, outcome.attempts)
            return outcome
        log.warning("reply %s by %s failed for good: %s", delivery.key, reply.to.channel, outcome.reason)
        value = orjson.dumps(
            {
                "topic": topics.REPLIES,
                "partition": record.partition if record else None,
                "offset": record.offset if record else None,
                "key": delivery.key,
                "consumer": self.group,
                "reason": outcome.reason,
                "failed_at": iso(self.ctx.clock.now()),
                "value": reply.model_dump(mode="json"),
                "idempotency_key": delivery.key,
                "incident_id": reply.incident_id,
                "channel": reply.to.channel,
                "attempts": outcome.attempts,
            }
        )
        # Keyed by the reply, not the number: the dead-letter is read by operators.
        await publish_dead_letter(self.ctx.bus, delivery.key, value, consumer=self.group, topic=topics.REPLIES)
        await self.store.finish(delivery.key, status="failed", error=outcome.reason, now=self.ctx.clock.now())
        return outcome

    # -- scheduled sitreps (SPEC section 10) ------------------------------------------------------
    async def _schedule_sitreps(self) -> None:
        while True:
            try:
                await self.sitrep_tick()
            except Exception:  # the next check tries again; an alert must never wait for this
                log.exception("sitrep scheduler: check failed")
            await asyncio.sleep(SITREP_CHECK_S)

    async def sitrep_tick(self) -> list[SitrepDue]:
        """Publish the sitreps that fell due since the last check (the first check looks back GRACE)."""
        now = self.ctx.clock.now()
        after = self._sitreps_checked or now - GRACE
        self._sitreps_checked = now
        routing = self.routing()
        if not routing.sitrep_recipients():
            return []
        out = []
        for moment in due_moments(routing.sitrep_times, after, now):
            due = SitrepDue(sitrep_id=sitrep_id(moment), at=moment, created_at=now)
            await self.ctx.bus.publish(due.TOPIC, due.bus_key(), due.to_bytes())
            log.info("sitrep %s due: published", due.sitrep_id)
            out.append(due)
        return out

    async def send_sitrep(self, due: SitrepDue, *, record: Record | None = None) -> list[Outcome | None]:
        """Send one scheduled sitrep to every sitrep recipient, once each (None: sent before)."""
        routing = self.routing()
        recipients = routing.sitrep_recipients()
        if not recipients:
            log.info("sitrep %s: no recipient gets sitreps", due.sitrep_id)
            return []
        if self.ctx.clock.now() - due.at > GRACE:
            log.warning("sitrep %s: more than %s late, not sent", due.sitrep_id, GRACE)
            return []
        docs: dict[tuple[str, ...], dict[str, Any]] = {}
        wanted = {r.name: tuple(sorted({k.casefold() for k in r.kecamatan})) for r in recipients}
        for names in dict.fromkeys(wanted.values()):  # one report per kecamatan filter, off the event loop
            docs[names] = await asyncio.to_thread(self._sitrep_doc, due, names)
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(self._deliver_sitrep(due, r, docs[wanted[r.name]], routing, record))
                for r in recipients
            ]
        return [t.result() for t in tasks]

    def _sitrep_doc(self, due: SitrepDue, kecamatan: tuple[str, ...]) -> dict[str, Any]:
        from services.dispatch.sitrep import build_sitrep  # the API's report; imported late (it imports dispatch)

        scope = None
        if kecamatan:  # a recipient for some kecamatan gets theirs, in whichever kabupaten they lie
            with sqlmodel.Session(self.ctx.engine) as s:
                pairs = s.exec(sqlmodel.select(Tps.kabupaten, Tps.kecamatan).distinct()).all()
            scope = Scope(kecamatan=frozenset((kab, kec) for kab, kec in pairs if kec.casefold() in kecamatan))
        return build_sitrep(self.ctx, at=due.at, by="kabupaten", scope=scope)

    async def _deliver_sitrep(
        self, due: SitrepDue, recipient: Recipient, doc: dict[str, Any], routing: AlertRouting, record: Record | None
    ) -> Outcome | None:
        key = f"sitrep:{due.sitrep_id}/{recipient.name}"
        if not await self._claim(key, recipient, incident_id="", audience="sitrep"):
            return None
        where = ", ".join(recipient.kecamatan) or None
        message = sitrep_message(
            doc,
            language=recipient.language or self.ctx.settings.language,
            public_url=self.ctx.settings.public_url,
            where=where,
        )
        delivery = Delivery(key=key, intent=None, recipient=recipient, message=message, sitrep=doc)

        async def attempted(attempt: int, error: str | None) -> None:
            ATTEMPTS.labels(recipient.channel, "ok" if error is None else "error").inc()
            await self.store.attempted(key, error=error, now=self.ctx.clock.now())

        outcome = await self.deliverer.deliver(delivery, routing, on_attempt=attempted)
        SITREPS.labels("sent" if outcome.sent else "failed").inc()
        if outcome.sent:
            log.info("sitrep %s sent by %s", key, recipient.channel)
            return outcome
        log.warning("sitrep %s to %s failed for good: %s", key, recipient.name, outcome.reason)
        value = orjson.dumps(
            {
                "topic": topics.ALERTS,
                "partition": record.partition if record else None,
                "offset": record.offset if record else None,
                "key": "sitrep",
                "consumer": self.group,
                "reason": outcome.reason,
                "failed_at": iso(self.ctx.clock.now()),
                "value": due.model_dump(mode="json"),
                "idempotency_key": key,
                "channel": recipient.channel,
                "recipient": recipient.name,
                "attempts": outcome.attempts,
            }
        )
        await publish_dead_letter(self.ctx.bus, key, value, consumer=self.group, topic=topics.ALERTS)
        await self.store.finish(key, status="failed", error=outcome.reason, now=self.ctx.clock.now())
        return outcome

    async def notify(self, intent: AlertIntent, *, record: Record | None = None) -> list[Outcome | None]:
        """Deliver one intent to all its recipients at once; per recipient the outcome (None: sent before)."""
        routing = self.routing()
        recipients = select(routing, intent)
        if not recipients:
            log.info("alert %s: no recipient is routed for it", intent.alert_id)
            return []
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(self._deliver(intent, r, routing, record)) for r in recipients]
        return [t.result() for t in tasks]

    async def _deliver(
        self, intent: AlertIntent, recipient: Recipient, routing: AlertRouting, record: Record | None
    ) -> Outcome | None:
        key = delivery_key(intent, recipient.name)
        claim = {"level": intent.level, "audience": intent.audience_key, "reminder": intent.reminder}
        if not await self._claim(key, recipient, incident_id=intent.incident_id, **claim):
            return None
        now = self.ctx.clock.now()
        message = render(
            intent,
            language=recipient.language or self.ctx.settings.language,
            public_url=self.ctx.settings.public_url,
            now=now,
        )
        delivery = Delivery(key=key, intent=intent, recipient=recipient, message=message)

        async def attempted(attempt: int, error: str | None) -> None:
            ATTEMPTS.labels(recipient.channel, "ok" if error is None else "error").inc()
            await self.store.attempted(key, error=error, now=self.ctx.clock.now())

        try:
            outcome = await self.deliverer.deliver(delivery, routing, on_attempt=attempted)
        finally:
            BREAKERS_OPEN.set(self.deliverer.breakers.open_count())
        if outcome.sent:
            DELIVERIES.labels(recipient.channel, "sent").inc()
            log.info("alert %s sent to %s by %s", key, recipient.name, recipient.channel)
            await self._record(
                intent,
                key,
                recipient,
                "sent",
                f"sent by {recipient.channel} to {recipient.name} (attempt {outcome.attempts})",
            )
            return outcome
        DELIVERIES.labels(recipient.channel, "failed").inc()
        log.warning("alert %s to %s failed for good: %s", key, recipient.name, outcome.reason)
        await self._dead_letter_delivery(intent, key, recipient, outcome, record)
        await self._record(intent, key, recipient, "failed", outcome.reason)
        await self.store.finish(key, status="failed", error=outcome.reason, now=self.ctx.clock.now())
        return outcome

    async def _claim(self, key: str, recipient: Recipient, **row: Any) -> bool:
        """Claim a delivery key for a recipient (an alert's or a sitrep's); False when it already reached
        a final state, so it is not sent again. The recipient's secrets join the log redaction."""
        now = self.ctx.clock.now()
        claimed = await self.store.claim(
            AlertDelivery(
                key=key,
                channel=recipient.channel,
                recipient=recipient.name,
                status="pending",
                created_at=now,
                updated_at=now,
                **row,
            )
        )
        if claimed.status in FINAL:
            log.info("delivery %s: already %s, not sent again", key, claimed.status)
            return False
        if recipient.channel == "slack":
            redact.REDACTOR.add([recipient.target])
        redact.REDACTOR.add([recipient.secret])
        return True

    async def _record(self, intent: AlertIntent, key: str, recipient: Recipient, outcome: str, detail: str) -> None:
        # The delivery itself is already recorded (AlertDelivery); a recorder outage must not
        # make us send the alert a second time, so its failure is logged, not raised.
        try:
            await self.recorder.delivery(
                intent.incident_id,
                key=key,
                channel=recipient.channel,
                recipient=recipient.name,
                outcome=outcome,
                detail=detail,
            )
        except Exception:
            log.exception("alert %s: reporting the %s delivery to dispatch failed", key, outcome)

    async def _dead_letter_delivery(
        self, intent: AlertIntent, key: str, recipient: Recipient, outcome: Outcome, record: Record | None
    ) -> None:
        value = orjson.dumps(
            {
                "topic": record.topic if record else topics.ALERTS,
                "partition": record.partition if record else None,
                "offset": record.offset if record else None,
                "key": record.key if record else intent.incident_id,
                "consumer": self.group,
                "reason": outcome.reason,
                "failed_at": iso(self.ctx.clock.now()),
                "value": record.value.decode("utf-8", errors="replace") if record else intent.model_dump_json(),
                "idempotency_key": key,
                "incident_id": intent.incident_id,
                "channel": recipient.channel,
                "recipient": recipient.name,
                "attempts": outcome.attempts,
            }
        )
        topic = record.topic if record else topics.ALERTS
        await publish_dead_letter(self.ctx.bus, intent.incident_id, value, consumer=self.group, topic=topic)

    async def _dead_letter_record(self, record: Record, reason: str) -> None:
        log.error("alert intent %s[%d]@%d to dead-letter: %s", record.topic, record.partition, record.offset, reason)
        value = dead_letter_value(record, reason, self.group)
        await publish_dead_letter(self.ctx.bus, record.key, value, consumer=self.group, topic=record.topic)
