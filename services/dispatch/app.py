"""The dispatch service: registry and admin API, operator API, escalation engine, notifier."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from services.dispatch import admin, silences, sitrep, views
from services.dispatch.service import Dispatch
from siaga.runtime import Context
from siaga.service import ServiceParts, build_app


def build(ctx: Context, *, with_notifier: bool | None = None) -> ServiceParts:
    """Dispatch's routes and workers; the notifier runs inside unless told otherwise."""
    dispatch = Dispatch(ctx)
    ctx.extras["dispatch"] = dispatch
    router = APIRouter()
    router.include_router(views.build_router(dispatch))
    router.include_router(views.build_messages_router(dispatch))
    router.include_router(admin.build_router(dispatch))
    router.include_router(silences.build_router(dispatch))
    router.include_router(sitrep.build_router(dispatch))
    notifier = None
    run_notifier = ctx.settings.notifier_in_dispatch if with_notifier is None else with_notifier
    if run_notifier:
        from services.dispatch.notifier import Notifier, routing_from_settings, telegram_router

        def routing():  # type: ignore[no-untyped-def]
            return routing_from_settings(ctx.settings, dispatch.policies.current().alerts)

        notifier = Notifier(ctx, routing=routing, recorder=dispatch)
        ctx.extras["notifier"] = notifier
        router.include_router(
            telegram_router(ctx, routing=routing, actions=dispatch, silence=silences.chat_silencer(dispatch))
        )

    async def start() -> None:
        await dispatch.start()
        if notifier:
            await notifier.start()

    async def stop() -> None:
        if notifier:
            await notifier.stop()
        await dispatch.stop()

    return ServiceParts(
        "dispatch",
        router,
        start,
        stop,
        openapi_tags=[
            {"name": "incidents", "description": "The operator API: watch, acknowledge, escalate, resolve, annotate."},
            {"name": "field orders", "description": "Messages to field devices' inboxes (SPEC section 9)."},
            {"name": "admin", "description": "Registry, roster, devices, tokens and the escalation policy."},
            {"name": "reports", "description": "Situation reports by region: JSON, CSV and PDF (SPEC section 10)."},
            {
                "name": "silences",
                "description": "Hold the alerts of a kecamatan, TPS or category for a while (SPEC section 5).",
            },
        ],
    )


def create_app(ctx: Context, *, with_notifier: bool | None = None) -> FastAPI:
    return build_app(ctx, [build(ctx, with_notifier=with_notifier)], title="Siaga dispatch")
