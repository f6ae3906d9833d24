"""Answerable alerts: the Acknowledge/Resolve buttons of a Telegram alert act on the incident.

Telegram posts each button press to `POST /v1/telegram/webhook` (register it with setWebhook and
`secret_token` = SIAGA_TELEGRAM_WEBHOOK_SECRET). Only chats the routing marks `can_act` may act.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

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


class TelegramUpdate(BaseModel):
    """The part of a Telegram Update this endpoint reads."""

    model_config = ConfigDict(extra="ignore", strict=True)
    update_id: int
    callback_query: CallbackQuery | None = None


def telegram_router(ctx: Context, *, routing: Callable[[], AlertRouting], actions: IncidentActions) -> APIRouter:
    """`POST /v1/telegram/webhook`: button presses from alerts, turned into acknowledge/resolve."""
    router = APIRouter(tags=["alerts"])
    settings = ctx.settings

    async def answer(callback_id: str, text: str) -> None:
        """Stop the button's spinner and show the text; best effort (the action already happened)."""
        if not settings.telegram_bot_token:
            return
        url = f"{settings.telegram_api_base.rstrip('/')}/bot{settings.telegram_bot_token}/answerCallbackQuery"
        try:
            async with httpx.AsyncClient(timeout=ANSWER_TIMEOUT_S, headers={"User-Agent": USER_AGENT}) as client:
                response = await client.post(url, json={"callback_query_id": callback_id, "text": text})
            if response.status_code >= 300:
                log.warning("answerCallbackQuery answered HTTP %d", response.status_code)
        except httpx.HTTPError as exc:
            log.warning("answerCallbackQuery failed: %s", type(exc).__name__)

    @router.post(
        "/v1/telegram/webhook",
        summary="Telegram button presses (Acknowledge/Resolve) from alert messages",
        responses=error_responses(
            403,
            404,
            409,
            422,
            _403="Wrong secret token, or a chat that may not act.",
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
            return {"ok": True, "ignored": "not a button press"}
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
