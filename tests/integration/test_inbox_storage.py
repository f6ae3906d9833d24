"""The device inbox's rows on SQLite and PostgreSQL: written with the outbox, in seq order.

Two writers of inbox rows: the partition owner's batch transaction (the field orders its engine
emits) and dispatch's broadcast of an operator message. Both take the inbox writers' lock on
PostgreSQL; the rows of each come out in order, and each is on siaga.field-orders too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import orjson
from sqlmodel import Session, col, select

from services.dispatch.engine import Engine
from siaga import topics
from siaga.contracts import Broadcast, OrderTarget, Priority, TargetKind
from siaga.models import InboxItem
from tests.integration.test_owned_state import Rig  # db_url (both databases) is tests/plugins/postgres.py's

ALL = OrderTarget(kind=TargetKind.ALL)


async def test_owner_and_broadcast_write_inbox_rows_in_order_with_their_bus_messages(db_url: str) -> None:
    rig = Rig(db_url)
    dispatch = rig.dispatch()

    def emit(n: int) -> Callable[[Engine], None]:
        def apply(engine: Engine) -> None:
            for i in range(n):
                engine.store.emit(
                    Broadcast(order_id=f"OWN-{i}", target=ALL, actor="siaga", issued_at=rig.clock.now(), text=f"o{i}")
                )

        return apply

    await dispatch.transact(emit(3))
    await asyncio.gather(
        dispatch.broadcast([ALL], text="pesan", priority=Priority.URGENT, actor="operator:t"),
        dispatch.transact(emit(2)),
    )
    with Session(rig.ctx.engine) as s:
        rows = s.exec(select(InboxItem).order_by(col(InboxItem.seq))).all()
    assert len(rows) == 6
    assert [r.item_id for r in rows][:3] == ["OWN-0", "OWN-1", "OWN-2"]
    seqs = [r.seq for r in rows]
    assert seqs == sorted(seqs) and len(set(seqs)) == 6
    assert all(r.target_key == "all" and orjson.loads(r.body)["kind"] == "message" for r in rows)
    await dispatch.relay.flush()
    published = {m["order_id"] for m in rig.published(topics.FIELD_ORDERS)}
    assert published == {r.item_id for r in rows}, "every inbox item is on the bus too"
