"""Schemathesis hooks for tests/contract/test_openapi.py (loaded through SCHEMATHESIS_HOOKS).

Generated field events name random TPS at random times, so nearly all are refused (404 unknown
TPS, 422 more than 48 hours old) and the 202 answer would never be checked against the document.
This hook points the events of the single-event route at the device's own TPS
(SIAGA_CONTRACT_TPS) at the current time. It replaces only values that are already valid (a
1-128 character tps_id, an RFC 3339 occurred_at) with other valid ones, so a case generated to
break the schema still breaks it.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from typing import Any

import schemathesis

RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


@schemathesis.hook
def map_body(context: Any, body: Any) -> Any:
    """A valid event of the single-event route, moved to the device's TPS and to now."""
    tps_id = os.environ.get("SIAGA_CONTRACT_TPS")
    operation = getattr(context, "operation", None)
    if not tps_id or operation is None or operation.path != "/v1/events" or not isinstance(body, dict):
        return body
    out = dict(body)
    if isinstance(out.get("tps_id"), str) and 1 <= len(out["tps_id"]) <= 128:
        out["tps_id"] = tps_id
    if is_rfc3339(out.get("occurred_at")):
        out["occurred_at"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return out


def is_rfc3339(value: Any) -> bool:
    if not isinstance(value, str) or not RFC3339.fullmatch(value):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True
