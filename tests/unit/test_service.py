"""The process-wide settings a started service applies (siaga/service.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import APIRouter

from siaga.runtime import make_bus, make_context
from siaga.service import GC_YOUNG, ServiceParts, build_app
from siaga.settings import Settings


@pytest.fixture
def gc_restored() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.set_threshold(*threshold)
    gc.unfreeze()


async def test_a_started_service_freezes_its_heap_and_collects_less_often(tmp_path: Path, gc_restored: None) -> None:
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)  # CPython's defaults
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'svc.db'}")
    ctx = make_context(settings, bus=make_bus(settings))
    app = build_app(ctx, [ServiceParts("probe", APIRouter())], title="probe")
    async with app.router.lifespan_context(app):
        assert gc.get_freeze_count() > 0, "what is alive at start is never walked again"
        assert gc.get_threshold() == (GC_YOUNG, 10, 10)
        assert gc.isenabled(), "cycles are still collected"
