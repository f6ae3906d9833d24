"""Answerable alerts: the Acknowledge/Resolve buttons of a Telegram alert act on the incident, and
the `/silence <kecamatan> <minutes> <reason>` command silences a kecamatan's alerts (SPEC section 5).

Telegram posts each button press and chat message to `POST /v1/telegram/webhook` (register it with
setWebhook and `secret_token` = SIAGA_TELEGRAM_WEBHOOK_SECRET). Only chats the routing marks
`can_act` may act.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import httpx
from fastapi import APIRouter, Header, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.dispatch.notifier.channels import USER_AGENT, parse_callback_data
from services.dispatch.notifier.messages import LANGUAGES, load_templates
from services.dispatch.notifier.routing import AlertRouting
from siaga.openapi import error_responses, inline_schema, invalid, json_body
from siaga.runtime import Context

if TYPE_CHECKING:
    from services.dispatch.notifier import IncidentActions

log = logging.getLogger("siaga.notifier")
ANSWER_TIMEOUT_S = 5.0


class TelegramUser(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    id: int
    username: str | None = None


class TelegramChat(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    id: int | str


class TelegramMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    message_id: int | None = None
    chat: TelegramChat


class CallbackQuery(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, strict=True)
    id: str
    from_: TelegramUser = Field(alias="from")
    message: TelegramMessage | None = None
    data: str | None = None


class ChatMessage(BaseModel):
    """A message in a chat: only a `/silence` command is read."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, strict=True)
    message_id: int | None = None
    chat: TelegramChat | None = None
    from_: TelegramUser | None = Field(default=None, alias="from")
    text: str | None = None


class TelegramUpdate(BaseModel):
    """The part of a Telegram Update this endpoint reads."""

    model_config = ConfigDict(extra="ignore", strict=True)
    update_id: int
    callback_query: CallbackQuery | None = None
    message: ChatMessage | None = None


class Silencer(Protocol):
    """What `/silence` does: create a silence of a kecamatan's alerts (raises HTTPException 422 when refused)."""

    async def __call__(self, *, kecamatan: str, minutes: int, reason: str, actor: str) -> dict[str, Any]: ...


SILENCE_COMMAND = re.compile(r"/silence(?:@\w+)?(?:\s+(.*))?", re.IGNORECASE | re.DOTALL)
SILENCE_ARGS = re.compile(r"(?P<kecamatan>.+?)\s+(?P<minutes>\d{1,5})(?:\s+(?P<reason>.+))?", re.DOTALL)


def parse_silence(text: str) -> tuple[str, int, str] | str | None:
    """(kecamatan, minutes, reason) of a `/silence` command; the usage when it is malformed; None when the
    text is no `/silence` command. The kecamatan is everything before the minutes ("Pulo Ampel 90 ...")."""
    m = SILENCE_COMMAND.fullmatch(text.strip())
    if m is None:
        return None
    args = SILENCE_ARGS.fullmatch((m.group(1) or "").strip())
    if args is None or not args.group("reason"):
        return "usage: /silence <kecamatan> <minutes> <reason>, e.g. /silence Cikande 120 pemadaman listrik PLN"
    return args.group("kecamatan").strip(), int(args.group("minutes")), args.group("reason").strip()


def telegram_router(
    ctx: Context,
    *,
    routing: Callable[[], AlertRouting],
    actions: IncidentActions,
    silence: Silencer | None = None,
) -> APIRouter:
    """`POST /v1/telegram/webhook`: button presses from alerts, turned into acknowledge/resolve; and,
    with `silence`, the `/silence` command of a chat that may act."""
    router = APIRouter(tags=["alerts"])
    settings = ctx.settings

    async def bot(method: str, body: dict[str, Any]) -> None:
        """Call a Bot API method; best effort (what it reports has already happened), never logs the token."""
        if not settings.telegram_bot_token:
            return
        url = f"{settings.telegram_api_base.rstrip('/')}/bot{settings.telegram_bot_token}/{method}"
        try:
            async with httpx.AsyncClient(timeout=ANSWER_TIMEOUT_S, headers={"User-Agent": USER_AGENT}) as client:
                response = await client.post(url, json=body)
            if response.status_code >= 300:
                log.warning("%s answered HTTP %d", method, response.status_code)
        except httpx.HTTPError as exc:
            log.warning("%s failed: %s", method, type(exc).__name__)

    async def answer(callback_id: str, text: str) -> None:
        """Stop the button's spinner and show the text."""
        await bot("answerCallbackQuery", {"callback_query_id": callback_id, "text": text})

    async def say(chat_id: str, text: str) -> None:
        """Reply in the chat (a /silence command's answer)."""
        await bot("sendMessage", {"chat_id": chat_id, "text": text})

    async def command(message: ChatMessage) -> dict[str, Any]:
        """A chat message: `/silence` from a chat that may act; anything else is ignored."""
        parsed = parse_silence(message.text or "") if silence is not None else None
        if parsed is None or message.chat is None:
            return {"ok": True, "ignored": "not a button press or a /silence command"}
        chat_id = str(message.chat.id)
        recipient = routing().telegram_chat(chat_id)
        if recipient is None or not recipient.can_act:
            await say(chat_id, "Chat ini tidak berwenang membuat silence.")
            raise HTTPException(
                403,
                f"chat {chat_id} may not silence alerts: list it in the alerts routing as a telegram "
                "recipient with can_act: true",
            )
        if isinstance(parsed, str):
            await say(chat_id, parsed)
            return {"ok": False, "refused": parsed}
        kecamatan, minutes, reason = parsed
        user = message.from_
        actor = f"telegram:{(user.username or user.id) if user else chat_id}"
        assert silence is not None
        try:
            made = await silence(kecamatan=kecamatan, minutes=minutes, reason=reason, actor=actor)
        except HTTPException as exc:
            problems = exc.detail if isinstance(exc.detail, list) else [{"message": str(exc.detail)}]
            why = "; ".join(f"{p.get('field', '')}: {p['message']}".lstrip(": ") for p in problems)
            await say(chat_id, f"Silence ditolak: {why}")
            return {"ok": False, "refused": why}
        await say(
            chat_id,
            f"🔇 {made['id']}: alert Kec. {kecamatan} ditahan sampai {made['ends_at']} ({reason}). "
            "Insiden kritis tetap dikirim.",
        )
        log.info("telegram /silence %s of %s by %s", made["id"], kecamatan, actor)
        return {"ok": True, "silence": made}

    @router.post(
        "/v1/telegram/webhook",
        summary="Telegram button presses (Acknowledge/Resolve) from alert messages",
        responses=error_responses(
            403,
            404,
            409,
            422,
            _403="Wrong secret token, or a chat that may not act (buttons, `/silence`).",
            _404="The button's incident does not exist.",
            _409="The incident's status does not allow the button's action.",
            _422="Not a Telegram Update.",
        ),
        openapi_extra=json_body(inline_schema(TelegramUpdate)),
    )
    async def telegram_webhook(
        request: Request,
        secret_token: str | None = Header(default=None, alias="X-Telegram-Bot-Api-Secret-Token"),
    ) -> dict[str, Any]:
        expected: str | None = getattr(settings, "telegram_webhook_secret", None)
        if not expected:
            raise HTTPException(
                403,
                "Telegram buttons are off: set SIAGA_TELEGRAM_WEBHOOK_SECRET and pass "
                "the same value as secret_token to setWebhook",
            )
        if not secret_token or not hmac.compare_digest(secret_token.encode(), expected.encode()):
            raise HTTPException(403, "wrong or missing X-Telegram-Bot-Api-Secret-Token header")
        try:
            update = TelegramUpdate.model_validate_json(await request.body())
        except (ValueError, ValidationError, RecursionError) as exc:
            raise invalid("body", "not a Telegram Update (JSON with update_id)") from exc
        query = update.callback_query
        if query is None:
            return (
                await command(update.message)
                if update.message is not None
                else {"ok": True, "ignored": "not a button press"}
            )
        parsed = parse_callback_data(query.data or "")
        if parsed is None:
            return {"ok": True, "ignored": "not a Siaga button"}
        action, incident_id = parsed
        chat_id = str(query.message.chat.id) if query.message else ""
        recipient = routing().telegram_chat(chat_id) if chat_id else None
        language = (recipient.language if recipient else None) or settings.language
        texts = load_templates(language if language in LANGUAGES else "id").actions
        if recipient is None or not recipient.can_act:
            await answer(query.id, texts.refused)
            raise HTTPException(
                403,
                f"chat {chat_id or '(none)'} may not act on incidents: list it in the "
                "alerts routing as a telegram recipient with can_act: true",
            )
        actor = f"telegram:{query.from_.username or query.from_.id}"
        try:
            if action == "acknowledge":
                await actions.acknowledge(incident_id, actor=actor)
                done = texts.acknowledged.format(actor=actor)
            else:
                await actions.resolve(incident_id, actor=actor, resolution=texts.resolution.format(actor=actor))
                done = texts.resolved.format(actor=actor)
        except LookupError as exc:
            await answer(query.id, texts.not_found)
            raise HTTPException(404, f"incident {incident_id} not found") from exc
        except ValueError as exc:  # the incident does not allow it (already resolved, ...)
            await answer(query.id, str(exc))
            raise HTTPException(409, f"cannot {action} incident {incident_id}: {exc}") from exc
        await answer(query.id, done)
        log.info("telegram %s of %s by %s", action, incident_id, actor)
        return {"ok": True, "action": action, "incident_id": incident_id, "actor": actor}

    return router
