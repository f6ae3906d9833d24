"""The simulator's inbox responder against a fake inbox: cursor, ETag, and acknowledging orders."""

from __future__ import annotations

import asyncio
import json

import httpx

from siaga.simulator.inbox import InboxResponder

ORDER = {"seq": 3, "order_id": "ORD-1", "kind": "assignment", "incident_id": "INC-1", "attempt": 1}
RESENT = {**ORDER, "seq": 5, "attempt": 2}
NOTICE = {"seq": 4, "order_id": "ORD-1-H", "kind": "help_on_the_way", "incident_id": "INC-1"}


def fake_inbox() -> tuple[httpx.MockTransport, list[tuple[str, str, str | None]]]:
    """An inbox with an order, a notice and the order's re-send; records (method, path+since, If-None-Match)."""
    calls: list[tuple[str, str, str | None]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        since = request.url.params.get("since", "")
        calls.append((request.method, f"{request.url.path}?{since}", request.headers.get("if-none-match")))
        if request.method == "POST":
            return httpx.Response(200, json={"acknowledged": True})
        items = {"0": [ORDER, NOTICE], "4": [RESENT]}.get(since, [])
        cursor = str(items[-1]["seq"]) if items else since
        if request.headers.get("if-none-match") == f'"i{cursor}"':
            return httpx.Response(304, headers={"etag": f'"i{cursor}"'})
        body = {"items": items, "cursor": cursor, "more": False}
        return httpx.Response(200, content=json.dumps(body), headers={"etag": f'"i{cursor}"'})

    return httpx.MockTransport(handle), calls


async def test_polls_with_cursor_and_etag_and_acknowledges_each_order_once() -> None:
    transport, calls = fake_inbox()
    async with httpx.AsyncClient(transport=transport) as http:
        responder = InboxResponder(http, "http://ingest", ["tok"], ack_share=1.0, ack_delay_s=(0.0, 0.0))
        device = responder.devices[0]
        for _ in range(3):
            await responder.poll(device)
        for task in list(responder._acks):
            await task
    assert [c for c in calls if c[0] == "GET"] == [
        ("GET", "/v1/device/inbox?0", None),
        ("GET", "/v1/device/inbox?4", '"i4"'),
        ("GET", "/v1/device/inbox?5", '"i5"'),
    ]
    assert [c[1] for c in calls if c[0] == "POST"] == ["/v1/device/inbox/ORD-1/ack?"], "the re-send is not acked again"
    assert (responder.stats.acknowledged, responder.stats.not_modified, responder.stats.items) == (1, 1, 3)


async def test_a_share_of_orders_goes_unanswered() -> None:
    transport, calls = fake_inbox()
    async with httpx.AsyncClient(transport=transport) as http:
        responder = InboxResponder(http, "http://ingest", ["tok"], ack_share=0.0)
        await responder.poll(responder.devices[0])
    assert responder.stats.ignored == 1 and not [c for c in calls if c[0] == "POST"]


async def test_run_polls_every_device_round_after_round_until_stopped() -> None:
    transport, _ = fake_inbox()
    stop = asyncio.Event()
    async with httpx.AsyncClient(transport=transport) as http:
        responder = InboxResponder(http, "http://ingest", ["a", "b"], poll_s=0.05, ack_delay_s=(0.0, 0.0))
        task = asyncio.create_task(responder.run(stop))
        await asyncio.sleep(0.3)
        stop.set()
        await task
    assert responder.stats.polls >= 6, responder.stats  # both devices, several rounds
    assert {d.cursor for d in responder.devices} == {"5"}, "each device followed its own cursor"
