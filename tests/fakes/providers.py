"""Fake alert providers: real HTTP servers on 127.0.0.1 that speak each provider's API.

Each runs uvicorn in a thread on a free port, records every request, and answers from a
programmable script (then success once the script is used up):

    with FakeWebhook(dedupe=True) as hook:
        hook.script(500, Reply(429, retry_after="2"), "timeout", 200)
        ...  # point the notifier at hook.url
        assert len(hook.delivered) == 1

A script item is a `Reply`, an HTTP status (`429` comes with `Retry-After: 1`), `"ok"`, or
`"timeout"` (the answer is held back `HOLD_S` seconds, longer than any test's client timeout;
the request still counts as received, as a slow real receiver would have processed it).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import orjson
import uvicorn

HOLD_S = 3.0


@dataclass(frozen=True)
class Reply:
    """One scripted answer. `body` None: the provider's own success or error body for the status."""

    status: int = 200
    body: Any = None
    retry_after: str | None = None
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


def as_reply(item: Reply | int | str) -> Reply:
    if isinstance(item, Reply):
        return item
    if item == "ok":
        return Reply(200)
    if item == "timeout":
        return Reply(200, delay_s=HOLD_S)
    if isinstance(item, int):
        return Reply(item, retry_after="1" if item == 429 else None)
    raise ValueError(f"not a script item: {item!r} (use a Reply, a status, 'ok' or 'timeout')")


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it, and the status it answered."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    at: datetime
    status: int
    duplicate: bool = False

    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("idempotency-key")

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300


class FakeProvider:
    """The shared machinery: a server thread, the script, the record of requests."""

    def __init__(self, *, clock: Callable[[], datetime] | None = None, dedupe: bool = False) -> None:
        self.clock = clock or (lambda: datetime.now(UTC))
        self.dedupe = dedupe
        self._lock = threading.Lock()
        self._script: deque[Reply] = deque()
        self._requests: list[RecordedRequest] = []
        self._closing = False
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- lifecycle
    def start(self) -> FakeProvider:
        self._closing = False
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._asgi,
            interface="asgi3",
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name=f"fake-{type(self).__name__}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"{type(self).__name__} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._closing = True
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # -- what the tests use
    @property
    def url(self) -> str:
        """The base URL (for Telegram and WhatsApp, the API base; for hooks, see `hook_url`)."""
        return f"http://127.0.0.1:{self.port}"

    def script(self, *items: Reply | int | str) -> None:
        """Queue answers for the next requests, in order; afterwards every request succeeds."""
        with self._lock:
            self._script.extend(as_reply(i) for i in items)

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self._requests.clear()

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, in order."""
        with self._lock:
            return list(self._requests)

    @property
    def delivered(self) -> list[RecordedRequest]:
        """What the receiving side took in: requests answered 2xx, one per idempotency key when deduping."""
        return [r for r in self.requests if r.accepted and not r.duplicate]

    # -- provider specifics, overridden
    def check(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply | None:
        """A provider's own refusal (bad token, bad body) before the script is consulted."""
        return None

    def success_body(self, path: str, body: bytes, n: int) -> Any:
        return {"ok": True}

    def error_body(self, reply: Reply) -> Any:
        return {"error": f"HTTP {reply.status}"}

    def reply_headers(self, reply: Reply) -> dict[str, str]:
        return {}

    # -- the server
    def _answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[Reply, Any, bool]:
        with self._lock:
            refusal = self.check(method, path, headers, body)
            key = headers.get("idempotency-key")
            seen = any(r.accepted and r.idempotency_key == key for r in self._requests)
            duplicate = bool(self.dedupe and key and refusal is None and seen)
            if refusal is not None:
                reply = refusal
            elif duplicate:
                reply = Reply(200)
            else:
                reply = self._script.popleft() if self._script else Reply(200)
            if reply.body is not None:
                payload = reply.body
            elif 200 <= reply.status < 300:
                payload = self.success_body(path, body, len(self._requests) + 1)
            else:
                payload = self.error_body(reply)
            self._requests.append(RecordedRequest(method, path, headers, body, self.clock(), reply.status, duplicate))
            return reply, payload, duplicate

    async def _asgi(self, scope: dict[str, Any], receive: Callable[[], Any], send: Callable[[Any], Any]) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        reply, payload, _ = self._answer(scope["method"], scope["path"], headers, b"".join(chunks))
        held = 0.0
        while held < reply.delay_s and not self._closing:
            await asyncio.sleep(0.02)
            held += 0.02
        raw = payload.encode() if isinstance(payload, str) else orjson.dumps(payload)
        content_type = "text/plain" if isinstance(payload, str) else "application/json"
        out = {"content-type": content_type, **self.reply_headers(reply), **reply.headers}
        if reply.retry_after is not None:
            out["retry-after"] = reply.retry_after
        await send(
            {
                "type": "http.response.start",
                "status": reply.status,
                "headers": [(k.encode(), v.encode()) for k, v in out.items()],
            }
        )
        await send({"type": "http.response.body", "body": raw})


class FakeTelegram(FakeProvider):
    """Bot API: `POST /bot<token>/sendMessage` and `/answerCallbackQuery`; checks the token."""

    def __init__(self, token: str = "123456:test-token-ABC", **kw: Any) -> None:
        super().__init__(**kw)
        self.token = token

    def check(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply | None:
        m = re.fullmatch(r"/bot([^/]+)/(\w+)", path)
        if not m or m.group(1) != self.token:
            return Reply(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
        if m.group(2) not in ("sendMessage", "answerCallbackQuery"):
            return Reply(404, {"ok": False, "error_code": 404, "description": "Not Found"})
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return Reply(400, {"ok": False, "error_code": 400, "description": "Bad Request: invalid JSON"})
        if m.group(2) == "sendMessage" and (not doc.get("chat_id") or not doc.get("text")):
            return Reply(400, {"ok": False, "error_code": 400, "description": "Bad Request: message text is empty"})
        return None

    def success_body(self, path: str, body: bytes, n: int) -> Any:
        if path.endswith("/answerCallbackQuery"):
            return {"ok": True, "result": True}
        doc = orjson.loads(body)
        return {"ok": True, "result": {"message_id": n, "chat": {"id": doc["chat_id"]}, "text": doc["text"]}}

    def error_body(self, reply: Reply) -> Any:
        body: dict[str, Any] = {"ok": False, "error_code": reply.status}
        if reply.status == 429:
            seconds = int(float(reply.retry_after or 1))
            body["description"] = f"Too Many Requests: retry after {seconds}"
            body["parameters"] = {"retry_after": seconds}
        elif reply.status == 400:
            body["description"] = "Bad Request: chat not found"
        else:
            body["description"] = "Internal Server Error"
        return body

    def sent_messages(self) -> list[dict[str, Any]]:
        """The bodies of accepted sendMessage calls."""
        return [r.json() for r in self.delivered if r.path.endswith("/sendMessage")]

    def answered_callbacks(self) -> list[dict[str, Any]]:
        return [r.json() for r in self.delivered if r.path.endswith("/answerCallbackQuery")]


class FakeWhatsApp(FakeProvider):
    """Cloud API: `POST /<phone_number_id>/messages` with a Bearer token and a template message, or a
    free-text one (`type: text`, a non-empty `text.body` of at most 4,096 characters): a reply inside
    the 24-hour window the sender's own message opened (the fake does not keep the window)."""

    def __init__(self, token: str = "wa-test-token-XYZ", phone_number_id: str = "1098765432", **kw: Any) -> None:
        super().__init__(**kw)
        self.token, self.phone_number_id = token, phone_number_id

    @staticmethod
    def _error(status: int, code: int, message: str) -> Reply:
        return Reply(
            status, {"error": {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "AbCdEf"}}
        )

    def check(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply | None:
        if headers.get("authorization") != f"Bearer {self.token}":
            return self._error(401, 190, "Invalid OAuth access token")
        if path != f"/{self.phone_number_id}/messages":
            return self._error(400, 100, "Unsupported post request")
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return self._error(400, 100, "Invalid JSON")
        if doc.get("type") == "text":
            body_text = (doc.get("text") or {}).get("body")
            if doc.get("messaging_product") != "whatsapp" or not doc.get("to") or not body_text:
                return self._error(400, 100, "Invalid parameter")
            if len(body_text) > 4096:
                return self._error(400, 100, "Param text['body'] must be at most 4096 characters long")
            return None
        template = doc.get("template") or {}
        if (
            doc.get("messaging_product") != "whatsapp"
            or not doc.get("to")
            or doc.get("type") != "template"
            or not template.get("name")
            or not (template.get("language") or {}).get("code")
        ):
            return self._error(400, 100, "Invalid parameter")
        for component in template.get("components", []):
            for p in component.get("parameters", []):
                text = p.get("text", "")
                if not text or "\n" in text or "\t" in text or "     " in text:
                    return self._error(400, 132018, "There was an issue with the parameters in your template")
        return None

    def success_body(self, path: str, body: bytes, n: int) -> Any:
        to = orjson.loads(body)["to"]
        return {
            "messaging_product": "whatsapp",
            "contacts": [{"input": to, "wa_id": to}],
            "messages": [{"id": f"wamid.TEST{n}"}],
        }

    def error_body(self, reply: Reply) -> Any:
        code = {429: 130429, 400: 131009}.get(reply.status, 131000)
        return {"error": {"message": f"HTTP {reply.status}", "type": "OAuthException", "code": code}}


class FakeSlack(FakeProvider):
    """Incoming webhooks: `POST /services/T000/B000/<secret>` answering `ok` as plain text."""

    HOOK_PATH = "/services/T0SIAGA/B0SIAGA/hooksecret0123456789"

    @property
    def hook_url(self) -> str:
        return self.url + self.HOOK_PATH

    def check(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply | None:
        if path != self.HOOK_PATH:
            return Reply(404, "no_service")
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return Reply(400, "invalid_payload")
        if not doc.get("text") and not doc.get("blocks"):
            return Reply(400, "no_text")
        return None

    def success_body(self, path: str, body: bytes, n: int) -> Any:
        return "ok"

    def error_body(self, reply: Reply) -> Any:
        return {400: "invalid_payload", 404: "no_service", 429: "rate_limited"}.get(reply.status, "internal_error")


class FakeWebhook(FakeProvider):
    """A generic receiver at `/hook`; with `secret`, checks X-Siaga-Signature (401 when wrong)."""

    def __init__(self, *, secret: str | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.secret = secret

    @property
    def hook_url(self) -> str:
        return self.url + "/hook"

    def check(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply | None:
        if path != "/hook":
            return Reply(404, {"error": "not found"})
        if self.secret is not None and not self.signature_ok(body, headers.get("x-siaga-signature")):
            return Reply(401, {"error": "bad signature"})
        return None

    def signature_ok(self, body: bytes, header: str | None) -> bool:
        """What a receiver does (written here independently of the notifier's own code)."""
        assert self.secret is not None
        expected = "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, header or "")

    def success_body(self, path: str, body: bytes, n: int) -> Any:
        return {"received": True}


class FakeSmsGateway(FakeProvider):
    """An HTTP SMS gateway (SPEC section 11): `POST /messages` with a bearer token (401 when wrong)."""

    def __init__(self, *, token: str = "sms-token", **kw: Any) -> None:
        super().__init__(**kw)
        self.token = token

    def check(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply | None:
        if (method, path) != ("POST", "/messages"):
            return Reply(404, {"error": "not found"})
        if headers.get("authorization") != f"Bearer {self.token}":
            return Reply(401, {"error": "bad token"})
        doc = orjson.loads(body)
        if not isinstance(doc, dict) or not {"to", "text", "idempotency_key"} <= set(doc):
            return Reply(422, {"error": "to, text and idempotency_key are required"})
        return None

    def success_body(self, path: str, body: bytes, n: int) -> Any:
        return {"id": f"sms-{n}", "status": "queued"}
