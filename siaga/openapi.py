"""What the OpenAPI documents share: the error format, its responses, the token schemes, and
helpers to document hand-parsed request bodies."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException
from pydantic import BaseModel, Field


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its $defs inlined, fit to embed anywhere in an OpenAPI document."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(defs[ref.split("/")[-1]])
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    result: dict[str, Any] = walk(schema)
    return result


def json_body(schema: dict[str, Any], examples: dict[str, Any] | None = None) -> dict[str, Any]:
    content: dict[str, Any] = {"schema": schema}
    if examples:
        content["examples"] = {k: {"value": v} for k, v in examples.items()}
    return {"requestBody": {"required": True, "content": {"application/json": content}}}


class FieldProblem(BaseModel):
    """One reason a request was refused as invalid."""

    field: str = Field(description="Dotted path of the offending field (`payload.injuries`, `query.since`), or `body`.")
    message: str = Field(description="What is wrong with it, for a person to read.")


class Problem(BaseModel):
    """The body of every refusal but 422: what was wrong and what to do, for a person to read."""

    detail: str


class Invalid(BaseModel):
    """The body of every 422: each field that is wrong, and why."""

    detail: list[FieldProblem]


def invalid(field: str, message: str) -> HTTPException:
    """The 422 to raise for a request that is readable but wrong, in the shape of `Invalid`."""
    return HTTPException(422, [{"field": field, "message": message}])


RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
}
WWW_AUTHENTICATE = {
    "WWW-Authenticate": {"description": "The scheme to authenticate with: `Bearer`.", "schema": {"type": "string"}}
}
ERROR_DESCRIPTIONS = {
    400: "The body cannot be read: not JSON, or not UTF-8 text.",
    401: "No token, or an unknown or revoked one.",
    403: "The token may not do this.",
    404: "No such resource.",
    409: "The resource's state does not allow this.",
    413: "The body is too large.",
    422: "Readable but invalid: `detail` names each wrong field and why.",
    429: "Too many requests; retry after `Retry-After` seconds.",
    503: "A service this needs is unavailable; retry after `Retry-After` seconds.",
}
ERROR_HEADERS: dict[int, dict[str, Any]] = {401: WWW_AUTHENTICATE, 429: RETRY_AFTER, 503: RETRY_AFTER}


def error_responses(*statuses: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route for the refusals it can answer, in Siaga's error format.

    `descriptions` override the generic text by status, as `_404="No incident with that id."`.
    """
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {
            "model": Invalid if status == 422 else Problem,
            "description": descriptions.get(f"_{status}", ERROR_DESCRIPTIONS[status]),
        }
        if status in ERROR_HEADERS:
            entry["headers"] = ERROR_HEADERS[status]
        out[status] = entry
    return out


def answer(model: Any, description: str, status: int = 200) -> dict[int | str, dict[str, Any]]:
    """The `responses=` entry documenting a route's success by `model` (a pydantic model, or a list of one).

    For routes that return plain data: pass `response_model=None` too, so that FastAPI neither
    documents the return annotation nor validates the answer again (tests/contract/test_openapi.py
    checks every answer against the document instead).
    """
    return {status: {"model": model, "description": description}}


API_TOKEN = "apiToken"  # viewer, operator or admin: `Authorization: Bearer <token>`
DEVICE_TOKEN = "deviceToken"  # a field device's token: `Authorization: Bearer <token>`
SECURITY_SCHEMES = {
    API_TOKEN: {
        "type": "http",
        "scheme": "bearer",
        "description": "A viewer, operator or admin token (`POST /v1/admin/tokens`), or SIAGA_ADMIN_TOKEN.",
    },
    DEVICE_TOKEN: {
        "type": "http",
        "scheme": "bearer",
        "description": "A field device's token (`POST /v1/admin/devices`).",
    },
}


def secured(scheme: str) -> dict[str, Any]:
    """`openapi_extra` that marks a route as needing a token of this scheme (see SECURITY_SCHEMES)."""
    return {"security": [{scheme: []}]}
